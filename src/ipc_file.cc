// The lock file's format (layout in ipc_format.h, documented for users in surelock.h): this
// system's identity (boot id, PID namespace), and reading, validating and writing a header.
//
// It is its own file because three programs read the format: the library's open
// (ipc_open.cc), `surelock status` (src/cli, which compiles this file in: it links only the
// public ABI) and the file-format fuzzer. Nothing here opens, locks, maps or resets a file on
// its own, and nothing needs more of the library than the errmsg buffer.

#include "ipc_file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include "surelock.h"
#include "sys/errmsg.h"
#include "sys/interleave.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;
using namespace surelock::ipc_format;

namespace surelock::ipc_file {

// ---- This system ------------------------------------------------------------------------------

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

// ---- Options ---------------------------------------------------------------------------------

namespace {
constexpr size_t options_v1_size = sizeof(surelock_ipc_options);
} // namespace

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

// ---- Sizes and the mutex -----------------------------------------------------------------------

size_t page_size()
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

size_t file_size_for(uint64_t payload_size)
{
    size_t page = page_size();
    return header_size + (size_t)((payload_size + page - 1) / page * page);
}

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

// ---- Reading and validating --------------------------------------------------------------------

Stamp unfinished_stamp()
{
    Stamp st;
    memcpy(st.magic, file_magic, sizeof st.magic);
    st.format_version = format_version;
    st.init_state = 0;
    return st;
}

int read_header(const char *path, int fd, off_t file_size, FileHeader *h, Contents *what)
{
    ssize_t got = file_size == 0 ? 0 : SURELOCK_FS(pread(fd, h, sizeof *h, 0));
#ifdef SURELOCK_TESTING
    surelock_testing_ipc_header_read_point();
#endif
    if (got < 0) return fail_path(errno, path, "cannot read the header: %s", strerror(errno));
    Stamp stamp = unfinished_stamp();
    if (file_size == 0) {
        *what = Contents::empty;
    } else if (got >= (ssize_t)sizeof stamp &&
               memcmp(h, &stamp, offsetof(Stamp, init_state)) == 0 &&
               h->init_state.load() != state_ready) {
        *what = Contents::unfinished;
    } else if (file_size < (off_t)header_size || got != (ssize_t)sizeof *h) {
        return fail_path(EPROTO, path, "%lld bytes is too short for a lock file",
                         (long long)file_size);
    } else {
        *what = Contents::complete;
    }
    return 0;
}

namespace {

// The checks of check_format, in order, with the PID namespace's among them when `id` is
// given (check_header).
int check(const char *path, const FileHeader *h, off_t file_size, const Identity *id)
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
    if (id != nullptr && h->pid_namespace != id->pid_namespace)
        return fail_path(EPROTO, path,
                         "made in another PID namespace (%llu, this is %llu); robust "
                         "mutex owner ids would not match",
                         (unsigned long long)h->pid_namespace,
                         (unsigned long long)id->pid_namespace);
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

} // namespace

int check_format(const char *path, const FileHeader *h, off_t file_size)
{
    return check(path, h, file_size, nullptr);
}

int check_header(const char *path, const FileHeader *h, off_t file_size, const Identity &id)
{
    return check(path, h, file_size, &id);
}

// ---- Writing ----------------------------------------------------------------------------------

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

// The stamp is written first and never cleared.
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

} // namespace surelock::ipc_file

#ifdef SURELOCK_TESTING
extern "C" {
// The hooks of this file's steps (sys/testing.h).
void (*surelock_testing_ipc_init_hook)(void);
void surelock_testing_ipc_init_point(void)
{
    if (surelock_testing_ipc_init_hook != nullptr) surelock_testing_ipc_init_hook();
}
int surelock_testing_ipc_boot_id_errno;
__thread const char *surelock_testing_ipc_boot_id; // per thread: the explorer's openers
void (*surelock_testing_ipc_header_read_hook)(void);
void surelock_testing_ipc_header_read_point(void)
{
    if (surelock_testing_ipc_header_read_hook != nullptr) surelock_testing_ipc_header_read_hook();
}
} // extern "C"
#endif
