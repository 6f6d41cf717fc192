// Robust cross-process mutex (API.md section 4).
//
// A robust, process-shared pthread mutex initialised in place in a MAP_SHARED file mapping,
// behind a versioned header (layout in surelock.h). The pieces:
//  - Opening serialises on flock(LOCK_EX) of the file only while it validates or initialises
//    the header, so concurrent openers never see a half-made file and nobody polls. A new file
//    is built complete as an O_TMPFILE and published with linkat, so it appears with its exact
//    mode and contents; an empty placeholder is initialised in place under the flock, stamped
//    first (magic, version, not ready), so a header left unfinished by an initialiser that
//    died is recognised and redone, while any other incomplete file is refused untouched.
//  - Every open handle holds an OFD read lock on byte 0 for its whole life. An opener that can
//    take a write lock there knows no other handle is open: only then is a not-recoverable
//    lock re-initialised.
//  - Recovery state lives in the file, not in the pthread mutex: on EOWNERDEAD the mutex is
//    made consistent at once and the file records "needs recovery". That lets a lock group back
//    out of a member it took with EOWNERDEAD and leave it needing recovery for the next
//    acquirer, and it makes "unlocked without consistent" a file state (not recoverable)
//    that every process sees.
//  - The handle remembers which thread holds the lock through it (a thread serial, the kernel
//    TID in the file, and the per-thread held list), so a holder thread's exit and a fork
//    child's inherited copy are told apart; the kernel's robust list releases the mutex as
//    owner-dead. close() refuses while any thread of this process holds the mutex, whose
//    robust-list entry points into the mapping it was locked through.

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
#include <unistd.h>
#include <linux/futex.h>

#include <atomic>

#include "ipc.h"
#include "ipc_format.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
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

Identity this_system()
{
    Identity id{};
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f != nullptr) {
        if (fgets(id.boot_id, sizeof id.boot_id, f) == nullptr) id.boot_id[0] = '\0';
        id.boot_id[strcspn(id.boot_id, "\n")] = '\0';
        fclose(f);
    }
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) == 0) id.pid_namespace = (uint64_t)st.st_ino;
    return id;
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
        return fail(errno ? errno : EIO, "%s: cannot draw a random lock id: %s", path,
                    strerror(errno));
    h->creator_uid = geteuid();
    h->flags = opt.flags & file_flags;
    h->payload_size = opt.payload_size;
    int rc = reset_runtime_state(h, id);
    if (rc != 0) return fail(rc, "%s: pthread_mutex_init failed: %s", path, strerror(rc));
    h->init_state.store(state_ready, std::memory_order_release);
    return 0;
}

// Checks a complete (ready) header read from the file against this build. Returns 0, or
// EPROTO with errmsg naming the first mismatch.
int check_header(const char *path, const FileHeader *h, off_t file_size, const Identity &id)
{
    if (memcmp(h->magic, file_magic, sizeof file_magic) != 0)
        return fail(EPROTO, "%s: not a surelock lock file (no \"SURELOCK\" magic)", path);
    if (h->format_version != format_version)
        return fail(EPROTO, "%s: lock file format version %u; this build reads version %u", path,
                    h->format_version, format_version);
    if (h->init_state.load(std::memory_order_acquire) != state_ready)
        return fail(EPROTO, "%s: corrupt init state 0x%x", path, h->init_state.load());
    if (h->pointer_size != sizeof(void *))
        return fail(EPROTO, "%s: made by a process with %u-bit pointers; this one has %zu-bit",
                    path, h->pointer_size * 8u, sizeof(void *) * 8);
    if (h->mutex_size != sizeof(pthread_mutex_t) || h->mutex_align != alignof(pthread_mutex_t))
        return fail(EPROTO, "%s: pthread_mutex_t there is %u bytes, %u-aligned; here %zu, %zu",
                    path, h->mutex_size, h->mutex_align, sizeof(pthread_mutex_t),
                    alignof(pthread_mutex_t));
    if (h->header_size != header_size)
        return fail(EPROTO, "%s: header size %u; this build uses %zu", path, h->header_size,
                    header_size);
    if (strncmp(h->libc, "glibc", sizeof h->libc) != 0)
        return fail(EPROTO, "%s: made with libc \"%.16s\"; this process uses glibc", path,
                    h->libc);
    if (h->pid_namespace != id.pid_namespace)
        return fail(EPROTO, "%s: made in another PID namespace (%llu, this is %llu); robust "
                            "mutex owner ids would not match",
                    path, (unsigned long long)h->pid_namespace,
                    (unsigned long long)id.pid_namespace);
    if (h->flags & ~file_flags)
        return fail(EPROTO, "%s: unknown flags 0x%x in the header", path, h->flags);
    if (h->recovery_state.load() > NOT_RECOVERABLE)
        return fail(EPROTO, "%s: corrupt recovery state %u", path, h->recovery_state.load());
    if (h->payload_size > (uint64_t)PTRDIFF_MAX - header_size - page_size() ||
        (off_t)file_size_for(h->payload_size) != file_size)
        return fail(EPROTO, "%s: file is %lld bytes but its header (payload %llu) needs %lld", path,
                    (long long)file_size, (unsigned long long)h->payload_size,
                    (long long)file_size_for(h->payload_size));
    return 0;
}

// The mutex bytes of a header from this boot: they must be the robust, process-shared mutex
// the format promises (anything else could hang its users or make glibc abort), and a holder
// recorded in the lock word must be a thread that exists or one the kernel marked dead.
int check_mutex(const char *path, const FileHeader *h)
{
    pthread_mutex_t reference;
    int rc = init_mutex(&reference, (h->flags & SURELOCK_IPC_RECURSIVE) != 0);
    if (rc != 0) return fail(rc, "%s: pthread_mutex_init failed: %s", path, strerror(rc));
    if (h->mutex.__data.__kind != reference.__data.__kind)
        return fail(EPROTO, "%s: the mutex in the file is not the robust process-shared kind "
                            "(kind 0x%x, expected 0x%x); corrupt file",
                    path, (unsigned)h->mutex.__data.__kind, (unsigned)reference.__data.__kind);
    unsigned word = (unsigned)h->mutex.__data.__lock;
    pid_t tid = (pid_t)(word & FUTEX_TID_MASK);
    if (tid != 0 && !(word & FUTEX_OWNER_DIED) && kill(tid, 0) != 0 && errno == ESRCH)
        return fail(EPROTO, "%s: the mutex is held by thread %d, which does not exist and was "
                            "not marked dead by the kernel; corrupt file",
                    path, (int)tid);
    return 0;
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
    HeldLink held{};
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

// The holder thread is exiting while holding: forget it here. The pthread mutex stays held
// until the kernel walks the thread's robust list and marks it owner-dead for the next
// acquirer; close() meanwhile sees the lock word still naming a thread of this process.
void ipc_owner_exited(HeldLink *link)
{
    surelock_ipc *m = from_link(link);
    m->depth = 0;
    m->holder.store(0, std::memory_order_relaxed);
}

// Whether a thread of this process holds the file's mutex, through any handle: the kernel TID
// in the robust lock word. glibc's robust list of that thread points into the mapping it
// locked through, so no mapping of the file may go while this is true.
bool held_in_this_process(const FileHeader *h)
{
    auto word = __atomic_load_n(&h->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    pid_t tid = (pid_t)((unsigned)word & FUTEX_TID_MASK);
    return tid != 0 && tgkill(getpid(), tid, 0) == 0;
}

// Takes an exclusive flock, retrying after signals.
int flock_exclusive(int fd)
{
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) return errno;
    return 0;
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
    return fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

int open_existing(const char *path, int *fd_out)
{
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) return fail(ELOOP, "%s: is a symlink; refusing to follow it", path);
        if (e == EISDIR) return fail(EPROTO, "%s: is a directory, not a lock file", path);
        if (e == ENXIO) return fail(EPROTO, "%s: is not a regular file", path);
        if (e == ENOENT) return ENOENT; // not final: the caller may create it
        return fail(e, "%s: cannot open: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

// Creates and fully initialises an unnamed file in path's directory, then links it at path.
// Returns 0 (published), EEXIST (someone else published first: open theirs), or an error.
// Falls back to EOPNOTSUPP where the filesystem has no O_TMPFILE.
int create_published(const char *path, const Options &opt, const Identity &id)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == nullptr) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return fail(ENAMETOOLONG, "%s: path too long", path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) return EOPNOTSUPP;
        return fail(e, "%s: cannot create a file in %s: %s", path, dir, strerror(e));
    }
    int rc = 0;
    size_t size = file_size_for(opt.payload_size);
    void *map = MAP_FAILED;
    if (fchmod(fd, opt.mode) != 0 || ftruncate(fd, (off_t)size) != 0) {
        rc = fail(errno, "%s: cannot size the new lock file: %s", path, strerror(errno));
    } else if ((map = mmap(nullptr, header_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
               MAP_FAILED) {
        rc = fail(errno, "%s: cannot map the new lock file: %s", path, strerror(errno));
    } else {
        rc = init_header(path, static_cast<FileHeader *>(map), opt, id);
        munmap(map, header_size);
    }
    if (rc == 0) {
        char proc_path[64];
        snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc_path, AT_FDCWD, path, AT_SYMLINK_FOLLOW) != 0) {
            int e = errno;
            if (e == EEXIST) rc = EEXIST;
            else if (e == ENOENT && access("/proc/self/fd", F_OK) != 0) rc = EOPNOTSUPP;
            else rc = fail(e, "%s: cannot publish the new lock file: %s", path, strerror(e));
        }
    }
    close(fd);
    return rc;
}

// Creates an empty file at path with exactly opt.mode (for filesystems without O_TMPFILE);
// it is then initialised in place under the flock like a placeholder.
int create_empty(const char *path, const Options &opt)
{
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, opt.mode & 0700);
    if (fd < 0) {
        if (errno == EEXIST) return EEXIST;
        return fail(errno, "%s: cannot create: %s", path, strerror(errno));
    }
    int rc = fchmod(fd, opt.mode) == 0 ? 0 : fail(errno, "%s: chmod: %s", path, strerror(errno));
    close(fd);
    return rc;
}

// Opens path, creating it when missing and allowed. Never follows a symlink.
int open_or_create(const char *path, const Options &opt, const Identity &id, int *fd_out)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        int rc = open_existing(path, fd_out);
        if (rc != ENOENT) return rc;
        if (opt.flags & SURELOCK_IPC_NOCREATE)
            return fail(ENOENT, "%s: no such lock file (SURELOCK_IPC_NOCREATE)", path);
        rc = create_published(path, opt, id);
        if (rc == EOPNOTSUPP) rc = create_empty(path, opt);
        if (rc != 0 && rc != EEXIST) return rc;
        // Published by us or by a racing creator: open it (again, if it was unlinked).
    }
    return fail(ENOENT, "%s: keeps disappearing while being opened", path);
}

int check_ownership(const char *path, const struct stat &st, const Options &opt)
{
    if (!S_ISREG(st.st_mode)) return fail(EPROTO, "%s: is not a regular file", path);
    if (st.st_uid != geteuid() && !(opt.flags & SURELOCK_IPC_ANY_OWNER))
        return fail(EPERM, "%s: owned by uid %u, not by uid %u; refusing to use it", path,
                    (unsigned)st.st_uid, (unsigned)geteuid());
    unsigned unwanted = (unsigned)st.st_mode & 022u & ~opt.mode;
    if (unwanted != 0)
        return fail(EPERM, "%s: mode 0%o lets %s write it, which mode 0%o does not ask for; "
                           "refusing to use it",
                    path, (unsigned)st.st_mode & 0777u,
                    (unwanted & 002u) ? "everyone" : "the group", opt.mode);
    return 0;
}

// With the flock held: validates or (re)initialises the file and maps it.
int prepare_locked(const char *path, int fd, const Options &opt, const Identity &id,
                   FileHeader **header_out, size_t *size_out)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return fail(errno, "%s: fstat: %s", path, strerror(errno));
    int rc = check_ownership(path, st, opt);
    if (rc != 0) return rc;

    // An empty placeholder (touch, an installer) is initialised, and so is a file stamped by
    // an initialiser that died before finishing; anything else must be complete and valid.
    FileHeader h;
    ssize_t got = st.st_size == 0 ? 0 : pread(fd, &h, sizeof h, 0);
    Stamp stamp = unfinished_stamp();
    bool initialise = st.st_size == 0 ||
                      (got >= (ssize_t)sizeof stamp &&
                       memcmp(&h, &stamp, offsetof(Stamp, init_state)) == 0 &&
                       h.init_state.load() != state_ready);
    bool stale_boot = false;
    if (!initialise) {
        if (st.st_size < (off_t)header_size || got != (ssize_t)sizeof h)
            return fail(EPROTO, "%s: %lld bytes is too short for a lock file", path,
                        (long long)st.st_size);
        rc = check_header(path, &h, st.st_size, id);
        if (rc != 0) return rc;
        stale_boot = strncmp(h.boot_id, id.boot_id, sizeof h.boot_id) != 0;
        if (!stale_boot && (rc = check_mutex(path, &h)) != 0) return rc;
        if ((opt.flags & SURELOCK_IPC_RECURSIVE) && !(h.flags & SURELOCK_IPC_RECURSIVE))
            return fail(EINVAL, "%s: SURELOCK_IPC_RECURSIVE asked for, but the lock was "
                                "created non-recursive (fixed at creation)",
                        path);
        if (opt.payload_size != 0 && opt.payload_size != h.payload_size)
            return fail(EINVAL, "%s: payload_size %zu asked for, but the file has %llu", path,
                        opt.payload_size, (unsigned long long)h.payload_size);
    }
    size_t size = initialise ? file_size_for(opt.payload_size) : (size_t)st.st_size;
    if (initialise) {
        // Stamp first: from here on an initialiser that dies leaves a detectably unfinished
        // file, never an anonymous all-zero one.
        if (pwrite(fd, &stamp, sizeof stamp, 0) != (ssize_t)sizeof stamp ||
            ftruncate(fd, (off_t)size) != 0)
            return fail(errno ? errno : EIO, "%s: cannot size the lock file: %s", path,
                        strerror(errno));
    }
    void *map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return fail(errno, "%s: mmap: %s", path, strerror(errno));
    auto *mapped = static_cast<FileHeader *>(map);

    if (initialise) {
        rc = init_header(path, mapped, opt, id);
    } else if (stale_boot) {
        // Left from before a reboot: no holder of it can still exist.
        rc = reset_runtime_state(mapped, id);
        if (rc != 0) rc = fail(rc, "%s: pthread_mutex_init failed: %s", path, strerror(rc));
    } else if (mapped->recovery_state.load() == NOT_RECOVERABLE && set_open_marker(fd, F_WRLCK)) {
        // Not recoverable and nobody else has it open: safe to start over.
        rc = reset_runtime_state(mapped, id);
        if (rc != 0) rc = fail(rc, "%s: pthread_mutex_init failed: %s", path, strerror(rc));
    }
    if (rc != 0) {
        munmap(map, size);
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

// The holder check also compares the kernel TID recorded in the file: after fork() the child's
// copy of the holding thread keeps its serial but is not the mutex owner (robust futexes go by
// TID), and must not release or repair the parent's lock.
bool held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = current_record;
    return me != nullptr && m->holder.load(std::memory_order_relaxed) == me->serial &&
           m->header->holder_tid.load(std::memory_order_relaxed) == me->tid;
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
    } else {
        Deadline d = Deadline::after(timeout_ns);
        rc = d.forever ? pthread_mutex_lock(&h->mutex) : clocklock(&h->mutex, &d.at);
    }
    bool owner_died = false;
    if (rc == EOWNERDEAD) {
        // Consistent at once: the file, not the mutex, tracks recovery (see the top).
        pthread_mutex_consistent(&h->mutex);
        h->owner_deaths.fetch_add(1);
        uint32_t expected = CONSISTENT;
        h->recovery_state.compare_exchange_strong(expected, NEEDS_RECOVERY);
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
    bool thread_reentry = (h->flags & SURELOCK_IPC_RECURSIVE) && pthread_depth(h) > 1;
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
    if (m->holder.load(std::memory_order_relaxed) == me->serial)
        m->held.unlink(); // a fork child's copy of its parent's hold: take it over afresh
    m->holder.store(me->serial, std::memory_order_relaxed);
    m->depth = 1;
    m->held.owner_exited = ipc_owner_exited;
    me->link_held(&m->held);
    if (thread_reentry) return 0;
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
    return reinterpret_cast<const char *>(link) - offsetof(surelock_ipc, held);
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
    if (--m->depth == 0) {
        m->held.unlink();
        m->holder.store(0, std::memory_order_relaxed);
    }
    // Only the release that frees the mutex itself ends recovery (or the holder's record): a
    // recursive file may still be held through another handle.
    if (!(h->flags & SURELOCK_IPC_RECURSIVE) || pthread_depth(h) == 1) {
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

bool file_held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = current_record;
    return me != nullptr && m->header->holder_tid.load(std::memory_order_relaxed) == me->tid;
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
    Identity id = this_system();
    int fd = -1;
    rc = open_or_create(path, opt, id, &fd);
    if (rc == 0) {
        rc = flock_exclusive(fd);
        if (rc != 0) {
            rc = fail(rc, "%s: flock: %s", path, strerror(rc));
        } else {
            rc = prepare_locked(path, fd, opt, id, &m->header, &m->map_size);
            if (rc == 0 && !set_open_marker(fd, F_RDLCK))
                rc = fail(errno, "%s: cannot mark the file open (OFD lock): %s", path,
                          strerror(errno));
            flock(fd, LOCK_UN);
        }
    }
    if (rc != 0) {
        if (m->header != nullptr) munmap(m->header, m->map_size);
        if (fd >= 0) close(fd);
        destroy(m);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) { // checked under the flock already; keep the group key honest
        int e = errno;
        munmap(m->header, m->map_size);
        close(fd);
        destroy(m);
        return fail(e, "%s: fstat: %s", path, strerror(e));
    }
    m->fd = fd;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    memcpy(m->lock_id, m->header->lock_id, sizeof m->lock_id);
    *out = m;
    return 0;
}

SURELOCK_API int surelock_ipc_close(surelock_ipc *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_ipc_close: the handle is NULL");
    if (held_in_this_process(m->header))
        return fail(EBUSY, "surelock_ipc_close: a thread of this process holds the lock; a held "
                           "robust mutex is never unmapped");
    if (m->member.groups.load() != 0)
        return fail(EBUSY, "surelock_ipc_close: the handle is a member of %u lock group(s)",
                    m->member.groups.load());
    munmap(m->header, m->map_size);
    close(m->fd); // also drops the OFD "open" marker
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
        if (e == ELOOP) return fail(ELOOP, "%s: is a symlink; not removing it", path);
        if (e == EISDIR) return fail(EPROTO, "%s: is a directory, not a lock file", path);
        if (e == ENXIO) return fail(EPROTO, "%s: is not a regular file; not removing it", path);
        return fail(e, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    char magic[sizeof file_magic];
    bool ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                (st.st_size == 0 || (pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
                                     memcmp(magic, file_magic, sizeof magic) == 0));
    close(fd);
    if (!ours) return fail(EPROTO, "%s: not a surelock lock file; not removing it", path);
    if (unlink(path) != 0) return fail(errno, "%s: unlink: %s", path, strerror(errno));
    return 0;
}

#ifdef SURELOCK_TESTING
// Overridable in tests: called while a header is half written.
void (*surelock_testing_ipc_init_hook)(void);
void surelock_testing_ipc_init_point(void)
{
    if (surelock_testing_ipc_init_hook != nullptr) surelock_testing_ipc_init_hook();
}
#endif

} // extern "C"
