// Robust cross-process mutex (API.md section 4).
//
// A robust, process-shared pthread mutex initialised in place in a MAP_SHARED file mapping,
// behind a versioned header (layout in surelock.h). The pieces:
//  - Opening serialises on flock(LOCK_EX) of the file only while it validates or initialises
//    the header, so concurrent openers never see a half-made file. flock has no timed form, so
//    an opener retries it with a growing pause for at most 5 s: a flock held by another
//    program, or by an opener stopped mid-open, ends in ETIMEDOUT naming the holder. A new file
//    is built complete as an O_TMPFILE and published with linkat, so it appears with its exact
//    mode and contents; an empty placeholder is initialised in place under the flock, stamped
//    first (magic, version, not ready), so a header left unfinished by an initialiser that
//    died is recognised and redone, while any other incomplete file is refused untouched.
//  - Every open handle holds an OFD read lock on byte 0 for its whole life. An opener that can
//    take a write lock there knows no other handle is open: only then is anything reset (a
//    file from another boot id, a not-recoverable lock, an empty or unfinished file). A boot
//    id that cannot be read is an error, never "another boot".
//  - The owner in the mutex's lock word (kernel-maintained) is checked live at open: free,
//    marked dead, or a thread whose process maps the file. A corrupt word naming an unrelated
//    live process would otherwise make every lock wait forever.
//  - Recovery state lives in the file, not in the pthread mutex: on EOWNERDEAD the mutex is
//    made consistent at once and the file records "needs recovery". That lets a lock group back
//    out of a member it took with EOWNERDEAD and leave it needing recovery for the next
//    acquirer, and it makes "unlocked without consistent" a file state (not recoverable)
//    that every process sees.
//  - The handle remembers which thread holds the lock through it (a thread serial, the kernel
//    TID in the file, and the per-thread held list), so a holder thread's exit and a fork
//    child's inherited copy are told apart; the kernel's robust list releases the mutex as
//    owner-dead. close() refuses while a thread of this process holds the mutex through the
//    handle, whose mapping its robust-list entry points into. At fork() the child drops its
//    copies of the forking thread's holds (robust ownership is not inherited).

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>
#include <linux/futex.h>

#include <atomic>

#include "ipc.h"
#include "ipc_format.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/interleave.h"
#include "sys/owned_lock.h" // sys::Wait
#include "sys/thread.h"
#include "sys/waits.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;
using namespace surelock::ipc_format;

#if defined(__SANITIZE_THREAD__)
#define SURELOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SURELOCK_TSAN 1
#endif
#endif
#ifdef SURELOCK_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace {

// What this process would write: the ABI tags a file must match to be usable here.
struct Identity {
    char boot_id[40];
    uint64_t pid_namespace;
};

// Reads this boot's id, with no allocation. Returns 0 or an errno.
int read_boot_id(char (&out)[40])
{
#ifdef SURELOCK_TESTING
    if (surelock_testing_ipc_boot_id_errno != 0) return surelock_testing_ipc_boot_id_errno;
    if (surelock_testing_ipc_boot_id != nullptr) {
        strncpy(out, surelock_testing_ipc_boot_id, sizeof out - 1);
        return 0;
    }
#endif
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return errno;
    ssize_t n;
    do n = read(fd, out, sizeof out - 1);
    while (n < 0 && errno == EINTR);
    int e = n < 0 ? errno : 0;
    close(fd);
    if (n <= 0) return n < 0 ? e : EIO;
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return out[0] != '\0' ? 0 : EIO;
}

// A boot id or namespace that cannot be read is an error, never a value that differs: a
// wrong "other boot" would reset a live lock, a wrong namespace would refuse a good file.
int this_system(const char *path, Identity *id)
{
    *id = Identity{};
    int e = read_boot_id(id->boot_id);
    if (e != 0)
        return fail_path(e, path,
                         "cannot read this boot's id from "
                         "/proc/sys/kernel/random/boot_id (%s), needed to tell a lock "
                         "file from an earlier boot",
                         strerror(e));
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0) {
        e = errno;
        return fail_path(e, path,
                         "cannot read this process's PID namespace from "
                         "/proc/self/ns/pid (%s), needed to check the lock file",
                         strerror(e));
    }
    id->pid_namespace = (uint64_t)st.st_ino;
    return 0;
}

size_t page_size()
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

size_t file_size_for(uint64_t payload_size)
{
    size_t page = page_size();
    return header_size + (size_t)((payload_size + page - 1) / page * page);
}

// ---- Options ---------------------------------------------------------------------------------

struct Options {
    uint32_t flags;
    uint32_t mode;
    size_t payload_size;
};

constexpr size_t options_v1_size = sizeof(surelock_ipc_options);

int read_options(const surelock_ipc_options *o, Options *out)
{
    surelock_ipc_options copy;
    surelock_ipc_options_init(&copy);
    if (o != nullptr) {
        if (o->size < options_v1_size)
            return fail(EINVAL, "surelock_ipc_open: options size %zu is smaller than version "
                                "1.0's %zu (call surelock_ipc_options_init)",
                        o->size, options_v1_size);
        memcpy(&copy, o, options_v1_size < o->size ? options_v1_size : o->size);
    }
    if (copy.flags & ~known_flags)
        return fail(EINVAL, "surelock_ipc_open: unknown flag bits 0x%x", copy.flags & ~known_flags);
    if (copy.mode & ~0777u)
        return fail(EINVAL, "surelock_ipc_open: mode 0%o has bits beyond 0777", copy.mode);
    if (copy.payload_size > (size_t)PTRDIFF_MAX - header_size - page_size())
        return fail(EINVAL, "surelock_ipc_open: payload_size %zu is too large", copy.payload_size);
    *out = Options{copy.flags, copy.mode, copy.payload_size};
    return 0;
}

// ---- Initialising and validating a file -----------------------------------------------------

int init_mutex(pthread_mutex_t *mutex, bool recursive)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&attr, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    int rc = pthread_mutex_init(mutex, &attr); // in place, in the shared mapping
    pthread_mutexattr_destroy(&attr);
    return rc;
}

// Resets what belongs to one boot and one lifetime of the mutex, keeping the lock's identity
// and payload: used for a file from before a reboot and for a not-recoverable one.
// The boot id goes last: an opener killed half-way leaves the old one, so the next opener
// resets again instead of trusting a half-reset mutex.
int reset_runtime_state(FileHeader *h, const Identity &id)
{
    SURELOCK_STEP(&h->mutex);
    int rc = init_mutex(&h->mutex, (h->flags & SURELOCK_IPC_RECURSIVE) != 0);
    if (rc != 0) return rc;
    h->recovery_state.store(CONSISTENT);
    h->holder_tid.store(0);
    memcpy(h->boot_id, id.boot_id, sizeof h->boot_id);
    return 0;
}

// The first bytes an initialiser writes, before anything else: magic, version and a
// not-ready state. A file that has them and is not ready is one whose initialiser died; every
// other file that is not empty and not complete is foreign.
struct Stamp {
    char magic[8];
    uint32_t format_version;
    uint32_t init_state;
};
static_assert(sizeof(Stamp) == offsetof(FileHeader, pointer_size));

Stamp unfinished_stamp()
{
    Stamp st;
    memcpy(st.magic, file_magic, sizeof st.magic);
    st.format_version = format_version;
    st.init_state = 0;
    return st;
}

// Writes a complete header into a mapping of a file already sized for it and stamped as
// unfinished (the stamp is never cleared). init_state goes to ready last, so a creator that
// dies earlier leaves a file that is detected as unfinished.
int init_header(const char *path, FileHeader *h, const Options &opt, const Identity &id)
{
    Stamp st = unfinished_stamp();
    memcpy(static_cast<void *>(h), &st, sizeof st);
    memset(reinterpret_cast<char *>(h) + sizeof st, 0, header_size - sizeof st);
#ifdef SURELOCK_TESTING
    surelock_testing_ipc_init_point();
#endif
    h->pointer_size = sizeof(void *);
    h->mutex_size = sizeof(pthread_mutex_t);
    h->mutex_align = alignof(pthread_mutex_t);
    h->header_size = header_size;
    strncpy(h->libc, "glibc", sizeof h->libc);
    h->pid_namespace = id.pid_namespace;
    if (getrandom(h->lock_id, sizeof h->lock_id, 0) != (ssize_t)sizeof h->lock_id)
        return fail_path(errno ? errno : EIO, path, "cannot draw a random lock id: %s",
                         strerror(errno));
    h->creator_uid = geteuid();
    h->flags = opt.flags & file_flags;
    h->payload_size = opt.payload_size;
    int rc = reset_runtime_state(h, id);
    if (rc != 0) return fail_path(rc, path, "pthread_mutex_init failed: %s", strerror(rc));
    SURELOCK_STEP(&h->init_state);
    h->init_state.store(state_ready, std::memory_order_release);
    return 0;
}

// Checks a complete (ready) header read from the file against this build. Returns 0, or
// EPROTO with errmsg naming the first mismatch.
int check_header(const char *path, const FileHeader *h, off_t file_size, const Identity &id)
{
    if (memcmp(h->magic, file_magic, sizeof file_magic) != 0)
        return fail_path(EPROTO, path, "not a surelock lock file (no \"SURELOCK\" magic)");
    if (h->format_version != format_version)
        return fail_path(EPROTO, path, "lock file format version %u; this build reads version %u",
                         h->format_version, format_version);
    if (h->init_state.load(std::memory_order_acquire) != state_ready)
        return fail_path(EPROTO, path, "corrupt init state 0x%x", h->init_state.load());
    if (h->pointer_size != sizeof(void *))
        return fail_path(EPROTO, path,
                         "made by a process with %u-bit pointers; this one has %zu-bit",
                         h->pointer_size * 8u, sizeof(void *) * 8);
    if (h->mutex_size != sizeof(pthread_mutex_t) || h->mutex_align != alignof(pthread_mutex_t))
        return fail_path(
            EPROTO, path, "pthread_mutex_t there is %u bytes, %u-aligned; here %zu, %zu",
            h->mutex_size, h->mutex_align, sizeof(pthread_mutex_t), alignof(pthread_mutex_t));
    if (h->header_size != header_size)
        return fail_path(EPROTO, path, "header size %u; this build uses %zu", h->header_size,
                         header_size);
    if (strncmp(h->libc, "glibc", sizeof h->libc) != 0)
        return fail_path(EPROTO, path, "made with libc \"%.16s\"; this process uses glibc",
                         h->libc);
    if (h->pid_namespace != id.pid_namespace)
        return fail_path(EPROTO, path,
                         "made in another PID namespace (%llu, this is %llu); robust "
                         "mutex owner ids would not match",
                         (unsigned long long)h->pid_namespace,
                         (unsigned long long)id.pid_namespace);
    if (h->flags & ~file_flags)
        return fail_path(EPROTO, path, "unknown flags 0x%x in the header", h->flags);
    if (h->recovery_state.load() > NOT_RECOVERABLE)
        return fail_path(EPROTO, path, "corrupt recovery state %u", h->recovery_state.load());
    if (h->payload_size > (uint64_t)PTRDIFF_MAX - header_size - page_size())
        return fail_path(EPROTO, path, "corrupt payload size %llu in the header (too large)",
                         (unsigned long long)h->payload_size);
    if ((off_t)file_size_for(h->payload_size) != file_size)
        return fail_path(EPROTO, path, "file is %lld bytes but its header (payload %llu) needs %zu",
                         (long long)file_size, (unsigned long long)h->payload_size,
                         file_size_for(h->payload_size));
    return 0;
}

// Sleeps a little between re-reads of state another process is changing (bounded loops).
void pause_us(unsigned us)
{
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, nullptr);
}

// Whether thread tid's process has the file with inode `ino` mapped, from /proc/TID/maps:
// 1 yes, 0 no, or -errno when it cannot be read (another user's process, hidepid, gone).
// Only the inode number is compared: the device in maps is the superblock's, which differs
// from st_dev on btrfs subvolumes and overlayfs.
int maps_file(pid_t tid, ino_t ino)
{
#ifdef SURELOCK_TESTING
    if (surelock_testing_ipc_proc_errno != 0) return -surelock_testing_ipc_proc_errno;
#endif
    char name[40];
    snprintf(name, sizeof name, "/proc/%d/maps", (int)tid);
    int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return -errno;
    // Line by line through a small buffer: "start-end perms offset maj:min inode  path".
    char buf[4096];
    size_t have = 0;
    bool found = false, any = false;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        any = any || n > 0;
        have += (size_t)n;
        buf[have] = '\0';
        char *line = buf;
        char *nl;
        while ((nl = strchr(line, '\n')) != nullptr || (n == 0 && *line != '\0')) {
            if (nl != nullptr) *nl = '\0';
            unsigned long long inode = 0;
            if (sscanf(line, "%*s %*s %*s %*s %llu", &inode) == 1 &&
                inode == (unsigned long long)ino)
                found = true;
            line = nl != nullptr ? nl + 1 : line + strlen(line);
        }
        if (n == 0 || found) break;
        have = strlen(line);
        memmove(buf, line, have);
        if (have == sizeof buf - 1) have = 0; // an absurdly long line: skip it
    }
    close(fd);
    if (!any) return -ESRCH; // a process without memory (exiting): no proof either way
    return found ? 1 : 0;
}

// How long open keeps re-reading a lock word whose owner it cannot yet confirm.
constexpr uint64_t holder_check_ns = 1000000000ull; // 1 s

// The live mutex of a mapped header from this boot (or one in use in this boot). It must be
// the robust, process-shared mutex the format promises: anything else could hang its users or
// make glibc abort. And the owner in its lock word (kernel-maintained) must be a surelock
// holder of this file: free, marked dead by the kernel, or a thread whose process has this
// file mapped (where /proc/TID/maps cannot be read: the thread the header records as its
// holder). Anything else (a corrupt word naming thread
// 1, say) would make every lock wait forever. The word is decided on live, never on a copy: a
// holder may release, exit and be reaped between two reads, and a new holder is briefly
// unrecorded (between its acquire and its holder_tid store), so the check re-reads until the
// evidence agrees, within holder_check_ns.
int check_mutex(const char *path, const FileHeader *h, ino_t ino)
{
    pthread_mutex_t reference;
    int rc = init_mutex(&reference, (h->flags & SURELOCK_IPC_RECURSIVE) != 0);
    if (rc != 0) return fail_path(rc, path, "pthread_mutex_init failed: %s", strerror(rc));
    if (h->mutex.__data.__kind != reference.__data.__kind)
        return fail_path(EPROTO, path,
                         "the mutex in the file is not the robust process-shared kind (kind "
                         "0x%x, expected 0x%x); corrupt file",
                         (unsigned)h->mutex.__data.__kind, (unsigned)reference.__data.__kind);
    Deadline give_up = Deadline::after(holder_check_ns);
    int unreadable = 0;
    SURELOCK_STEP(&h->mutex); // before the loop, not in it: the loop is bounded by time
    for (unsigned wait_us = 10;; wait_us = wait_us < 5000 ? wait_us * 2 : wait_us) {
        unsigned word = (unsigned)__atomic_load_n(&h->mutex.__data.__lock, __ATOMIC_ACQUIRE);
        pid_t tid = (pid_t)(word & FUTEX_TID_MASK);
        if (tid == 0 || (word & FUTEX_OWNER_DIED)) return 0;
        int mapped = maps_file(tid, ino);
        if (mapped == 1) return 0;
        if (mapped < 0 && h->holder_tid.load() == tid) return 0; // the holder's own record
        bool exists = kill(tid, 0) == 0 || errno != ESRCH;
        if ((unsigned)__atomic_load_n(&h->mutex.__data.__lock, __ATOMIC_ACQUIRE) != word)
            continue; // released, died or re-taken meanwhile: decide on the new word
        // The word did not move across the evidence. A thread's exit marks its robust
        // mutexes dead before its TID is freed, so a missing thread cannot be a holder; nor
        // can one whose process does not map the file (a holder's mutex is in its mapping).
        if (!exists)
            return fail_path(EPROTO, path,
                             "the lock word names thread %d, which does not exist and was not "
                             "marked dead by the kernel; corrupt file",
                             (int)tid);
        if (mapped == 0)
            return fail_path(EPROTO, path,
                             "the lock word names thread %d, which is not a holder of this "
                             "lock (its process does not map the file, and the header records "
                             "holder %d); corrupt file",
                             (int)tid, (int)h->holder_tid.load());
        unreadable = -mapped;
        if (give_up.remaining_ns() == 0)
            return fail_path(ETIMEDOUT, path,
                             "the lock word names thread %d, which the header does not record "
                             "as the holder, and /proc/%d/maps cannot be read (%s) to check it "
                             "within %llu ms: a corrupt lock word or a holder stopped while "
                             "acquiring",
                             (int)tid, (int)tid, strerror(unreadable),
                             (unsigned long long)(holder_check_ns / 1000000));
        pause_us(wait_us);
    }
}

} // namespace

// ---- The handle --------------------------------------------------------------------------------

struct surelock_ipc {
    int fd;
    FileHeader *header; // start of the mapping
    size_t map_size;
    // Which thread holds the lock through this handle (0 = none) and how deep; only the
    // holder writes them. A holder's exit is seen through its held list.
    std::atomic<uint64_t> holder{0};
    unsigned depth = 0;
    // The kernel TID of the thread that locks through this handle, and whether glibc's robust
    // list of that thread points into this handle's mapping: true from the acquisition that
    // took the pthread mutex through this handle until the thread's last release of it
    // (through any handle of the file: a recursive file re-entered through a second handle
    // keeps the first one's list entry). While anchored, the handle stays in the thread's
    // held list even at depth 0, and close() is EBUSY.
    std::atomic<int> tid{0};
    std::atomic<bool> anchor{false};
    HeldLink held{};
    bool linked = false; // `held` is in the list of thread `tid` (which is alive)
    bool recursive;      // the file's SURELOCK_IPC_RECURSIVE, fixed at creation (kept here:
                         // the fast path then reads no header line but the mutex's and state's)
    // For lock groups (API.md section 3): the order key and the identity of the file.
    uint8_t lock_id[16];
    dev_t dev;
    ino_t ino;
    Membership member{};
};

namespace {

surelock_ipc *from_link(HeldLink *link)
{
    return reinterpret_cast<surelock_ipc *>(reinterpret_cast<char *>(link) -
                                            offsetof(surelock_ipc, held));
}

// The holder thread is exiting while holding: forget the hold here. The pthread mutex stays
// held until the kernel walks the thread's robust list and marks it owner-dead for the next
// acquirer; tid and anchor stay, so close() meanwhile sees the lock word still naming that
// thread of this process and keeps the mapping the kernel is about to walk.
void ipc_owner_exited(HeldLink *link)
{
    surelock_ipc *m = from_link(link);
    m->linked = false; // the thread's record (and list) is about to be freed
    m->depth = 0;
    m->holder.store(0, std::memory_order_relaxed);
}

// Whether a thread of this process holds the lock through this handle: it holds a depth
// through it, or its robust list points into this mapping (see `anchor`), and the
// kernel-maintained lock word still names that thread, which is alive in this process (after
// fork() the word names the parent's thread: the child holds nothing). Such a mapping must not
// be unmapped: the kernel walks the robust list when the thread dies.
bool held_through(const surelock_ipc *m)
{
    int tid = m->tid.load(std::memory_order_relaxed);
    if (tid == 0 || (m->holder.load(std::memory_order_relaxed) == 0 &&
                     !m->anchor.load(std::memory_order_relaxed)))
        return false;
    auto word = __atomic_load_n(&m->header->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)((unsigned)word & FUTEX_TID_MASK) == tid && tgkill(getpid(), tid, 0) == 0;
}

// Drops a hold's bookkeeping once the thread holds nothing through the handle and its robust
// list no longer points into it.
void forget_hold(surelock_ipc *m)
{
    if (m->linked) m->held.unlink();
    m->linked = false;
    m->holder.store(0, std::memory_order_relaxed);
    m->depth = 0;
    m->anchor.store(false, std::memory_order_relaxed);
    m->tid.store(0, std::memory_order_relaxed);
}

// Robust ownership is never inherited: in a fork child, the forking thread's copy of its held
// list still links the ipc handles its parent thread held through, and the child's copy of the
// mutex is the parent's lock. Unlinking them here means a child that closes such a handle
// frees nothing still linked, and never releases or repairs its parent's lock.
void drop_inherited_holds()
{
    ThreadRecord *me = current_record;
    if (me == nullptr) return;
    for (HeldLink *l = me->held.next, *next; l != &me->held; l = next) {
        next = l->next;
        if (l->owner_exited == ipc_owner_exited) forget_hold(from_link(l));
    }
}

pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
void register_atfork()
{
    pthread_atfork(nullptr, nullptr, drop_inherited_holds);
}

// How long open waits for another opener's flock (API.md: open never waits without bound;
// the default is at most 5 s). Fixed until the options can carry a bound.
constexpr uint64_t open_wait_ns = 5000000000ull;

// Describes who holds a flock on inode `ino` from /proc/locks ("process 123 (flock)"), or ""
// when it cannot be told.
void describe_flock_holder(ino_t ino, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/locks", "re");
    if (f == nullptr) return;
    char line[256];
    while (fgets(line, sizeof line, f) != nullptr) {
        char kind[16], mode[16];
        int pid;
        unsigned long long inode;
        if (sscanf(line, "%*[^:]: %15s %*s %15s %d %*x:%*x:%llu", kind, mode, &pid, &inode) == 4 &&
            strcmp(kind, "FLOCK") == 0 && strcmp(mode, "WRITE") == 0 &&
            inode == (unsigned long long)ino && pid > 0) {
            char comm_path[40], comm[32] = "";
            snprintf(comm_path, sizeof comm_path, "/proc/%d/comm", pid);
            if (FILE *c = fopen(comm_path, "re")) {
                if (fgets(comm, sizeof comm, c) == nullptr) comm[0] = '\0';
                comm[strcspn(comm, "\n")] = '\0';
                fclose(c);
            }
            snprintf(out, size, " by process %d%s%s%s", pid, comm[0] ? " (" : "", comm,
                     comm[0] ? ")" : "");
            break;
        }
    }
    fclose(f);
}

// Takes the exclusive flock that serialises openers, waiting at most open_wait_ns: a flock
// held by another program (`flock FILE cmd`), or by an opener stopped or stuck mid-open, must
// not block this one for ever. Polls with a growing pause (from 20 us to 10 ms): flock has no
// timed form, and openers hold it only for a few system calls.
int flock_bounded(const char *path, int fd, ino_t ino)
{
    Deadline give_up = Deadline::after(open_wait_ns);
    for (unsigned wait_us = 20;; wait_us = wait_us < 10000 ? wait_us * 2 : wait_us) {
        if (SURELOCK_FLOCK(fd, LOCK_EX | LOCK_NB) == 0) return 0;
        int e = errno;
        if (e == EINTR) continue;
        if (e != EWOULDBLOCK) return fail_path(e, path, "flock: %s", strerror(e));
        if (give_up.remaining_ns() == 0) {
            char who[80];
            describe_flock_holder(ino, who, sizeof who);
            return fail_path(ETIMEDOUT, path,
                             "an exclusive flock on the file has been held%s for %llu s: "
                             "another program holding it (such as flock(1)), or an opener "
                             "stopped or stuck mid-open; giving up",
                             who, (unsigned long long)(open_wait_ns / 1000000000ull));
        }
        pause_us(wait_us);
    }
}

// Whether the lock file's file system can carry this lock. On NFS and SMB, flock is emulated
// with byte-range locks that conflict with the OFD "open" markers (a second opener would
// wait for the first to close), and processes on different machines share no futexes.
// `where` is the file's descriptor, or -1 with `dir` its directory (before creating it).
int check_file_system(const char *path, int where, const char *dir)
{
    struct statfs fs;
    if ((where >= 0 ? fstatfs(where, &fs) : statfs(dir, &fs)) != 0)
        return fail_path(errno, path, "statfs: %s", strerror(errno));
    long magic = (long)fs.f_type;
#ifdef SURELOCK_TESTING
    if (surelock_testing_ipc_fs_magic != 0) magic = surelock_testing_ipc_fs_magic;
#endif
    const char *name = magic == NFS_SUPER_MAGIC    ? "NFS"
                       : magic == SMB_SUPER_MAGIC  ? "SMB"
                       : magic == (long)0xFF534D42 ? "CIFS"
                       : magic == (long)0xFE534D42 ? "SMB2"
                                                   : nullptr;
    if (name != nullptr)
        return fail_path(EOPNOTSUPP, path,
                         "is on %s, a network file system, whose emulated file locks cannot "
                         "serve a cross-process robust mutex; use a local file system "
                         "(/run, /tmp, $XDG_RUNTIME_DIR)",
                         name);
    return 0;
}

// 1 when no other handle of the file is open in any process (an OFD write lock on byte 0
// taken at once: every handle holds a read lock there), 0 when one is, or -errno.
int no_other_handle(int fd)
{
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    if (SURELOCK_OFD_SETLK(fd, &fl) == 0) return 1;
    return errno == EAGAIN || errno == EACCES ? 0 : -errno;
}

// OFD lock on byte 0: a read lock marks "a handle is open"; a write lock that succeeds at once
// proves no other handle is.
bool set_open_marker(int fd, short type)
{
    struct flock fl{};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return SURELOCK_OFD_SETLK(fd, &fl) == 0;
}

int open_existing(const char *path, int *fd_out)
{
    int fd = SURELOCK_FD_OPEN(open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) return fail_path(ELOOP, path, "is a symlink; refusing to follow it");
        if (e == EISDIR) return fail_path(EPROTO, path, "is a directory, not a lock file");
        if (e == ENXIO) return fail_path(EPROTO, path, "is not a regular file");
        if (e == ENOENT) return ENOENT; // not final: the caller may create it
        return fail_path(e, path, "cannot open: %s", strerror(e));
    }
    *fd_out = fd;
    return 0;
}

// Creates and fully initialises an unnamed file in path's directory, then links it at path.
// Returns 0 (published), EEXIST (someone else published first: open theirs), or an error.
// Falls back to EOPNOTSUPP where the filesystem has no O_TMPFILE.
int create_published(const char *path, const char *dir, const Options &opt, const Identity &id)
{
    int fd = SURELOCK_FD_OPEN(open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (fd < 0) {
        int e = errno;
        if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) return EOPNOTSUPP;
        return fail_path(e, path, "cannot create a file in %s: %s", dir, strerror(e));
    }
    int rc = 0;
    size_t size = file_size_for(opt.payload_size);
    void *map = MAP_FAILED;
    if (fchmod(fd, opt.mode) != 0 || ftruncate(fd, (off_t)size) != 0) {
        rc = fail_path(errno, path, "cannot size the new lock file: %s", strerror(errno));
    } else if ((map = SURELOCK_MMAP(header_size, fd)) == MAP_FAILED) {
        rc = fail_path(errno, path, "cannot map the new lock file: %s", strerror(errno));
    } else {
        rc = init_header(path, static_cast<FileHeader *>(map), opt, id);
        SURELOCK_MUNMAP(map, header_size);
    }
    if (rc == 0) {
        char proc_path[64];
        snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", fd);
        if (SURELOCK_FS(linkat(AT_FDCWD, proc_path, AT_FDCWD, path, AT_SYMLINK_FOLLOW)) != 0) {
            int e = errno;
            if (e == EEXIST) rc = EEXIST;
            else if (e == ENOENT && access("/proc/self/fd", F_OK) != 0) rc = EOPNOTSUPP;
            else rc = fail_path(e, path, "cannot publish the new lock file: %s", strerror(e));
        }
    }
    SURELOCK_CLOSE(fd);
    return rc;
}

// Creates an empty file at path with exactly opt.mode (for filesystems without O_TMPFILE);
// it is then initialised in place under the flock like a placeholder.
int create_empty(const char *path, const Options &opt)
{
    int fd = SURELOCK_FD_OPEN(open(path, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, opt.mode & 0700));
    if (fd < 0) {
        if (errno == EEXIST) return EEXIST;
        return fail_path(errno, path, "cannot create: %s", strerror(errno));
    }
    int rc = fchmod(fd, opt.mode) == 0 ? 0 : fail_path(errno, path, "chmod: %s", strerror(errno));
    SURELOCK_CLOSE(fd);
    return rc;
}

// The directory part of path.
int parent_dir(const char *path, char (&dir)[PATH_MAX])
{
    const char *slash = strrchr(path, '/');
    if (slash == nullptr) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return fail_path(ENAMETOOLONG, path, "path too long");
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return 0;
}

// Opens path, creating it when missing and allowed. Never follows a symlink. Nothing is
// created on a file system that cannot carry the lock.
int open_or_create(const char *path, const Options &opt, const Identity &id, int *fd_out)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        int rc = open_existing(path, fd_out);
        if (rc == 0 && (rc = check_file_system(path, *fd_out, nullptr)) != 0) {
            SURELOCK_CLOSE(*fd_out);
            *fd_out = -1;
        }
        if (rc != ENOENT) return rc;
        if (opt.flags & SURELOCK_IPC_NOCREATE)
            return fail_path(ENOENT, path, "no such lock file (SURELOCK_IPC_NOCREATE)");
        char dir[PATH_MAX];
        if ((rc = parent_dir(path, dir)) != 0 || (rc = check_file_system(path, -1, dir)) != 0)
            return rc;
        rc = create_published(path, dir, opt, id);
        if (rc == EOPNOTSUPP) rc = create_empty(path, opt);
        if (rc != 0 && rc != EEXIST) return rc;
        // Published by us or by a racing creator: open it (again, if it was unlinked).
    }
    return fail_path(ENOENT, path, "keeps disappearing while being opened");
}

int check_ownership(const char *path, const struct stat &st, const Options &opt)
{
    if (!S_ISREG(st.st_mode)) return fail_path(EPROTO, path, "is not a regular file");
    if (st.st_uid != geteuid() && !(opt.flags & SURELOCK_IPC_ANY_OWNER))
        return fail_path(EPERM, path, "owned by uid %u, not by uid %u; refusing to use it",
                         (unsigned)st.st_uid, (unsigned)geteuid());
    unsigned unwanted = (unsigned)st.st_mode & 022u & ~opt.mode;
    if (unwanted != 0)
        return fail_path(EPERM, path,
                         "mode 0%o lets %s write it, which mode 0%o does not ask for; "
                         "refusing to use it",
                         (unsigned)st.st_mode & 0777u, (unwanted & 002u) ? "everyone" : "the group",
                         opt.mode);
    return 0;
}

// With the flock held: validates or (re)initialises the file and maps it.
int prepare_locked(const char *path, int fd, const Options &opt, const Identity &id,
                   FileHeader **header_out, size_t *size_out)
{
    struct stat st;
    if (SURELOCK_FS(fstat(fd, &st)) != 0) return fail_path(errno, path, "fstat: %s", strerror(errno));
    int rc = check_ownership(path, st, opt);
    if (rc != 0) return rc;

    // An empty placeholder (touch, an installer) is initialised, and so is a file stamped by
    // an initialiser that died before finishing; anything else must be complete and valid.
    FileHeader h;
    ssize_t got = st.st_size == 0 ? 0 : SURELOCK_FS(pread(fd, &h, sizeof h, 0));
#ifdef SURELOCK_TESTING
    surelock_testing_ipc_header_read_point();
#endif
    Stamp stamp = unfinished_stamp();
    bool initialise = st.st_size == 0 ||
                      (got >= (ssize_t)sizeof stamp &&
                       memcmp(&h, &stamp, offsetof(Stamp, init_state)) == 0 &&
                       h.init_state.load() != state_ready);
    bool stale_boot = false;
    if (!initialise) {
        if (st.st_size < (off_t)header_size || got != (ssize_t)sizeof h)
            return fail_path(EPROTO, path, "%lld bytes is too short for a lock file",
                             (long long)st.st_size);
        rc = check_header(path, &h, st.st_size, id);
        if (rc != 0) return rc;
        stale_boot = strncmp(h.boot_id, id.boot_id, sizeof h.boot_id) != 0;
        if ((opt.flags & SURELOCK_IPC_RECURSIVE) && !(h.flags & SURELOCK_IPC_RECURSIVE))
            return fail_path(EINVAL, path,
                             "SURELOCK_IPC_RECURSIVE asked for, but the lock was "
                             "created non-recursive (fixed at creation)");
        if (opt.payload_size != 0 && opt.payload_size != h.payload_size)
            return fail_path(EINVAL, path, "payload_size %zu asked for, but the file has %llu",
                             opt.payload_size, (unsigned long long)h.payload_size);
    }
    // No (re)initialisation of any kind while another handle of the file is open anywhere:
    // an empty or unfinished file that is open elsewhere was truncated or overwritten in use.
    if (initialise) {
        int alone = no_other_handle(fd);
        if (alone < 0)
            return fail_path(-alone, path, "cannot probe for other handles (OFD lock): %s",
                             strerror(-alone));
        if (alone == 0)
            return fail_path(EPROTO, path,
                             "the file is %s, yet another handle has it open: it was truncated "
                             "or overwritten while in use; refusing to re-initialise it",
                             st.st_size == 0 ? "empty" : "unfinished");
    }
    size_t size = initialise ? file_size_for(opt.payload_size) : (size_t)st.st_size;
    if (initialise) {
        // Stamp first: from here on an initialiser that dies leaves a detectably unfinished
        // file, never an anonymous all-zero one.
        if (SURELOCK_FS(pwrite(fd, &stamp, sizeof stamp, 0)) != (ssize_t)sizeof stamp ||
            SURELOCK_FS(ftruncate(fd, (off_t)size)) != 0)
            return fail_path(errno ? errno : EIO, path, "cannot size the lock file: %s",
                             strerror(errno));
    }
    void *map = SURELOCK_MMAP(size, fd);
    if (map == MAP_FAILED) return fail_path(errno, path, "mmap: %s", strerror(errno));
    auto *mapped = static_cast<FileHeader *>(map);

    if (initialise) {
        rc = init_header(path, mapped, opt, id);
    } else {
        // A file from another boot id, or not recoverable, is reset only when no other handle
        // has it open (the probe runs under the flock, and every opener sets its marker
        // before it releases the flock). A file with another boot id that is open elsewhere
        // is in use in this boot (no handle survives a reboot): the boot id was read through
        // another mount namespace's view of /proc. It is used as it is.
        int alone = 0;
        if (stale_boot || mapped->recovery_state.load() == NOT_RECOVERABLE) {
            alone = no_other_handle(fd);
            if (alone < 0)
                rc = fail_path(-alone, path, "cannot probe for other handles (OFD lock): %s",
                               strerror(-alone));
        }
        if (rc == 0 && alone == 1) {
            rc = reset_runtime_state(mapped, id);
            if (rc != 0) rc = fail_path(rc, path, "pthread_mutex_init failed: %s", strerror(rc));
        } else if (rc == 0) {
            rc = check_mutex(path, mapped, st.st_ino);
        }
    }
    if (rc != 0) {
        SURELOCK_MUNMAP(map, size);
        return rc;
    }
    *header_out = mapped;
    *size_out = size;
    return 0;
}

// ---- Locking -------------------------------------------------------------------------------------

// How many times the calling holder has locked a recursive mutex (glibc's count; only the
// holder may read it).
unsigned pthread_depth(const FileHeader *h)
{
    return h->mutex.__data.__count;
}

// pthread_mutex_clocklock, announced to ThreadSanitizer, whose runtime does not intercept it
// (without this it would see unlocks of a mutex it never saw locked).
int clocklock(pthread_mutex_t *mutex, const struct timespec *at)
{
#ifdef SURELOCK_TSAN
    __tsan_mutex_pre_lock(mutex, __tsan_mutex_try_lock);
#endif
    int rc = pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, at);
#ifdef SURELOCK_TSAN
    bool taken = rc == 0 || rc == EOWNERDEAD;
    __tsan_mutex_post_lock(mutex, __tsan_mutex_try_lock | (taken ? 0 : __tsan_mutex_try_lock_failed),
                           0);
#endif
    return rc;
}

// Whether the calling thread holds the lock through this handle. A fork child's copy of the
// holding thread keeps its serial, but the child's holds were dropped at fork (robust futexes
// go by TID: it does not own its parent's lock).
bool held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = current_record;
    return me != nullptr && m->holder.load(std::memory_order_relaxed) == me->serial;
}

// The handle of the same file whose mapping the calling thread's robust list points into
// (anchored, held at depth 0 through it), or nullptr.
surelock_ipc *anchor_of(ThreadRecord *me, const surelock_ipc *m)
{
    for (HeldLink *l = me->held.next; l != &me->held; l = l->next) {
        if (l->owner_exited != ipc_owner_exited) continue;
        surelock_ipc *other = from_link(l);
        if (other != m && other->anchor.load(std::memory_order_relaxed) && other->dev == m->dev &&
            other->ino == m->ino)
            return other;
    }
    return nullptr;
}

int ipc_acquire(surelock_ipc *m, Wait wait, uint64_t timeout_ns, const char *fn)
{
    if (m == nullptr) return fail(EINVAL, "%s: the handle is NULL", fn);
    ThreadRecord *me = current_thread();
    if (me == nullptr) return ENOMEM;
    FileHeader *h = m->header;
    int rc;
    if (wait == Wait::never || timeout_ns == 0) {
        rc = pthread_mutex_trylock(&h->mutex);
        if (rc == EBUSY && wait == Wait::until_deadline) rc = ETIMEDOUT;
    } else if (timeout_ns == SURELOCK_FOREVER) { // no clock read for a wait without end
        rc = pthread_mutex_lock(&h->mutex);
    } else {
        Deadline d = Deadline::after(timeout_ns);
        rc = d.forever ? pthread_mutex_lock(&h->mutex) : clocklock(&h->mutex, &d.at);
    }
    bool owner_died = false;
    if (rc == EOWNERDEAD) {
        // Consistent at once: the file, not the mutex, tracks recovery (see the top). A thread
        // that died in the window below, refused a not-recoverable lock, never held it: its
        // death is not counted (owner_deaths counts holders' deaths only, once each).
        pthread_mutex_consistent(&h->mutex);
        if (h->recovery_state.load(std::memory_order_relaxed) != NOT_RECOVERABLE) {
            h->owner_deaths.fetch_add(1);
            uint32_t expected = CONSISTENT;
            h->recovery_state.compare_exchange_strong(expected, NEEDS_RECOVERY);
        }
        owner_died = true;
        rc = 0;
    }
    switch (rc) {
    case 0:
        break;
    case EBUSY:
        return fail(EBUSY, "%s: held by another thread or process", fn);
    case ETIMEDOUT:
        return timeout_ns == 0
                   ? fail(ETIMEDOUT, "%s: held by another thread or process (timeout 0)", fn)
                   : fail(ETIMEDOUT, "%s: still held after %llu ns", fn,
                          (unsigned long long)timeout_ns);
    case EDEADLK:
        return fail(EDEADLK, "%s: the calling thread already holds this lock (not recursive)",
                    fn);
    case EAGAIN:
        return fail(EAGAIN, "%s: recursion depth would overflow", fn);
    case ENOTRECOVERABLE:
        return fail(ENOTRECOVERABLE, "%s: the lock is not recoverable", fn);
    default:
        return fail(rc, "%s: pthread mutex error: %s", fn, strerror(rc));
    }
    // A recursive mutex this thread already held (through this or another handle of the file)
    // was only re-entered: recovery was reported to the outer acquisition.
    bool thread_reentry = m->recursive && pthread_depth(h) > 1;
#ifdef SURELOCK_TESTING
    if (!thread_reentry) surelock_testing_ipc_acquired_point();
#endif
    if (!thread_reentry && h->recovery_state.load(std::memory_order_relaxed) == NOT_RECOVERABLE) {
        pthread_mutex_unlock(&h->mutex);
        return fail(ENOTRECOVERABLE, "%s: a holder released the lock after EOWNERDEAD without "
                                     "surelock_ipc_consistent; it stays unusable until no "
                                     "process has it open, or a reboot",
                    fn);
    }
    if (held_by_caller(m)) { // re-entry of a recursive file through this handle
        m->depth++;          // glibc's own count (checked above) overflows first
        return 0;
    }
    // Still linked when this thread's robust list points into this handle (see `anchor`).
    if (!(m->linked && m->tid.load(std::memory_order_relaxed) == me->tid)) {
        m->held.owner_exited = ipc_owner_exited;
        me->link_held(&m->held);
        m->linked = true;
        m->tid.store(me->tid, std::memory_order_relaxed);
        m->anchor.store(false, std::memory_order_relaxed);
    }
    m->holder.store(me->serial, std::memory_order_relaxed);
    m->depth = 1;
    if (thread_reentry) return 0;
    m->anchor.store(true, std::memory_order_relaxed);
    // Fields under the mutex: its acquire/release orders them, so no fenced stores (x86 would
    // turn a sequentially consistent store into a locked exchange on the fast path).
    h->holder_tid.store((int32_t)me->tid, std::memory_order_relaxed);
    return owner_died || h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY
               ? EOWNERDEAD
               : 0;
}

} // namespace

// Deadlock detector's kind table (waits.h): an ipc lock is listed among what a thread holds
// in surelock_dump_waits, never followed by the walk (it is shared between processes).
namespace {
const void *ipc_of_link(const HeldLink *link, CopyFn)
{
    return field_address(link, -(ptrdiff_t)offsetof(surelock_ipc, held));
}
size_t describe_ipc(const void *, char *out, size_t cap, CopyFn)
{
    return describe_plain("ipc lock", out, cap);
}
} // namespace

namespace surelock::sys {
const LockKind ipc_kind = {"ipc lock", ipc_owner_exited, ipc_of_link, "", nullptr, nullptr,
                           describe_ipc};
} // namespace surelock::sys

namespace surelock::ipc {

int release(surelock_ipc *m, bool keep_needs_recovery, const char *fn)
{
    if (m == nullptr) return fail(EINVAL, "%s: the handle is NULL", fn);
    if (!held_by_caller(m))
        return fail(EPERM, "%s: the calling thread does not hold this lock through this handle",
                    fn);
    FileHeader *h = m->header;
    // Only the release that frees the mutex itself ends recovery (or the holder's record): a
    // recursive file may still be held through another handle.
    bool last = !m->recursive || pthread_depth(h) == 1;
    bool anchor = m->anchor.load(std::memory_order_relaxed);
    if (--m->depth == 0) {
        m->holder.store(0, std::memory_order_relaxed);
        if (last || !anchor) forget_hold(m);
    }
    if (last && !anchor) {
        // Released through a second handle: the one glibc's robust list pointed into is
        // free to go now.
        if (surelock_ipc *anchored = anchor_of(current_record, m)) forget_hold(anchored);
    }
    if (last) {
        if (!keep_needs_recovery &&
            h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY)
            h->recovery_state.store(NOT_RECOVERABLE, std::memory_order_relaxed);
        h->holder_tid.store(0, std::memory_order_relaxed);
    }
    int rc = pthread_mutex_unlock(&h->mutex);
    return rc == 0 ? 0 : fail(rc, "%s: pthread_mutex_unlock: %s", fn, strerror(rc));
}

const uint8_t *lock_id(const surelock_ipc *m)
{
    return m->lock_id;
}

void file_identity(const surelock_ipc *m, uint64_t *dev, uint64_t *ino)
{
    *dev = (uint64_t)m->dev;
    *ino = (uint64_t)m->ino;
}

Membership *membership(surelock_ipc *m)
{
    return &m->member;
}

bool held_by_caller(const surelock_ipc *m)
{
    return ::held_by_caller(m);
}

// The kernel-maintained lock word, not the header's informational holder_tid: a dead holder's
// TID may since belong to the caller (the kernel clears the TID bits of a dead owner's word).
bool file_held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = current_record;
    if (me == nullptr) return false;
    auto word = __atomic_load_n(&m->header->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)((unsigned)word & FUTEX_TID_MASK) == me->tid;
}

} // namespace surelock::ipc

// ---- C entry points -------------------------------------------------------------------------

extern "C" {

// Opening and unlinking run with thread cancellation disabled: a cancellation acted on at a
// read or write while the flock is held would leak it and wedge the file for every process.
struct NoCancel {
    int old;
    NoCancel() { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old); }
    ~NoCancel() { pthread_setcancelstate(old, nullptr); }
};

SURELOCK_API int surelock_ipc_open(const char *path, const surelock_ipc_options *o,
                                   surelock_ipc **out)
{
    NoCancel no_cancel;
    if (path == nullptr || out == nullptr)
        return fail(EINVAL, "surelock_ipc_open: %s is NULL", path ? "out" : "path");
    Options opt;
    int rc = read_options(o, &opt);
    if (rc != 0) return rc;
    auto *m = create<surelock_ipc>();
    if (m == nullptr) return fail(ENOMEM, "surelock_ipc_open: out of memory");
    pthread_once(&atfork_once, register_atfork);
    Identity id;
    int fd = -1;
    rc = this_system(path, &id);
    if (rc == 0) rc = open_or_create(path, opt, id, &fd);
    struct stat st;
    if (rc == 0 && fstat(fd, &st) != 0) rc = fail_path(errno, path, "fstat: %s", strerror(errno));
    if (rc == 0) {
        rc = flock_bounded(path, fd, st.st_ino);
        if (rc == 0) {
            rc = prepare_locked(path, fd, opt, id, &m->header, &m->map_size);
            if (rc == 0 && !set_open_marker(fd, F_RDLCK))
                rc = fail_path(errno, path, "cannot mark the file open (OFD lock): %s",
                               strerror(errno));
            SURELOCK_FLOCK(fd, LOCK_UN);
        }
    }
    if (rc != 0) {
        if (m->header != nullptr) SURELOCK_MUNMAP(m->header, m->map_size);
        if (fd >= 0) SURELOCK_CLOSE(fd);
        destroy(m);
        return rc;
    }
    m->fd = fd;
    m->recursive = (m->header->flags & SURELOCK_IPC_RECURSIVE) != 0;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    memcpy(m->lock_id, m->header->lock_id, sizeof m->lock_id);
    *out = m;
    return 0;
}

// Not a cancellation point (close(2) is one): a cancel acted on between munmap and close
// would leak the descriptor and its "open" marker, which would block the not-recoverable
// reset for the life of the process.
SURELOCK_API int surelock_ipc_close(surelock_ipc *m)
{
    NoCancel no_cancel;
    if (m == nullptr) return fail(EINVAL, "surelock_ipc_close: the handle is NULL");
    if (held_through(m))
        return fail(EBUSY, "surelock_ipc_close: a thread of this process holds the lock through "
                           "this handle; a held robust mutex is never unmapped");
    if (m->member.groups.load() != 0)
        return fail(EBUSY, "surelock_ipc_close: the handle is a member of %u lock group(s)",
                    m->member.groups.load());
    SURELOCK_MUNMAP(m->header, m->map_size);
    SURELOCK_CLOSE(m->fd); // also drops the OFD "open" marker
    destroy(m);
    return 0;
}

SURELOCK_API int surelock_ipc_lock(surelock_ipc *m)
{
    return ipc_acquire(m, Wait::until_deadline, SURELOCK_FOREVER, "surelock_ipc_lock");
}

SURELOCK_API int surelock_ipc_trylock(surelock_ipc *m)
{
    return ipc_acquire(m, Wait::never, 0, "surelock_ipc_trylock");
}

SURELOCK_API int surelock_ipc_timedlock(surelock_ipc *m, uint64_t timeout_ns)
{
    return ipc_acquire(m, Wait::until_deadline, timeout_ns, "surelock_ipc_timedlock");
}

SURELOCK_API int surelock_ipc_consistent(surelock_ipc *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_ipc_consistent: the handle is NULL");
    if (!held_by_caller(m))
        return fail(EINVAL, "surelock_ipc_consistent: the calling thread does not hold the lock");
    uint32_t expected = NEEDS_RECOVERY;
    if (!m->header->recovery_state.compare_exchange_strong(expected, CONSISTENT))
        return fail(EINVAL, "surelock_ipc_consistent: the lock does not need recovery");
    return 0;
}

SURELOCK_API int surelock_ipc_needs_recovery(const surelock_ipc *m)
{
    if (m == nullptr || !held_by_caller(m)) return 0;
    return m->header->recovery_state.load() == NEEDS_RECOVERY;
}

SURELOCK_API int surelock_ipc_unlock(surelock_ipc *m)
{
    return surelock::ipc::release(m, false, "surelock_ipc_unlock");
}

SURELOCK_API void *surelock_ipc_payload(surelock_ipc *m, size_t *size)
{
    if (m == nullptr || m->header->payload_size == 0) {
        if (size != nullptr) *size = 0;
        return nullptr;
    }
    if (size != nullptr) *size = (size_t)m->header->payload_size;
    return reinterpret_cast<char *>(m->header) + header_size;
}

SURELOCK_API int surelock_ipc_unlink(const char *path)
{
    NoCancel no_cancel;
    if (path == nullptr) return fail(EINVAL, "surelock_ipc_unlink: path is NULL");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) return fail_path(ELOOP, path, "is a symlink; not removing it");
        if (e == EISDIR) return fail_path(EPROTO, path, "is a directory, not a lock file");
        if (e == ENXIO) return fail_path(EPROTO, path, "is not a regular file; not removing it");
        return fail_path(e, path, "cannot open: %s", strerror(e));
    }
    struct stat st;
    char magic[sizeof file_magic];
    bool ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                (st.st_size == 0 || (pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
                                     memcmp(magic, file_magic, sizeof magic) == 0));
    close(fd);
    if (!ours) return fail_path(EPROTO, path, "not a surelock lock file; not removing it");
    if (unlink(path) != 0) return fail_path(errno, path, "unlink: %s", strerror(errno));
    return 0;
}

#ifdef SURELOCK_TESTING
// Overridable in tests: called while a header is half written.
void (*surelock_testing_ipc_init_hook)(void);
void surelock_testing_ipc_init_point(void)
{
    if (surelock_testing_ipc_init_hook != nullptr) surelock_testing_ipc_init_hook();
}
int surelock_testing_ipc_boot_id_errno;
__thread const char *surelock_testing_ipc_boot_id; // per thread: openers in the explorer
int surelock_testing_ipc_proc_errno;
long surelock_testing_ipc_fs_magic;
void (*surelock_testing_ipc_header_read_hook)(void);
void surelock_testing_ipc_header_read_point(void)
{
    if (surelock_testing_ipc_header_read_hook != nullptr) surelock_testing_ipc_header_read_hook();
}
void (*surelock_testing_ipc_acquired_hook)(void);
void surelock_testing_ipc_acquired_point(void)
{
    if (surelock_testing_ipc_acquired_hook != nullptr) surelock_testing_ipc_acquired_hook();
}
#endif

} // extern "C"
