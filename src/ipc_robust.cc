// What the ipc lock checks of glibc's robust mutex from outside it, at open.
//
// A lock file's mutex is glibc's pthread_mutex_t, whose bytes another process (or a corrupt
// file) wrote. Before anyone locks it, open checks two things pthreads offers no call for,
// reading glibc's internal fields (__kind, __lock) and the kernel's view of the owner
// (/proc/TID/maps): that it is the kind of mutex the format promises, and that the owner its
// lock word names really holds it. Kept apart because it depends on glibc's layout and on
// /proc, where the rest of open depends only on the file's format and POSIX file locks.

#include "ipc_robust.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipc_file.h"
#include "sys/errmsg.h"
#include "sys/futex.h" // sys::Deadline
#include "sys/interleave.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;
using namespace surelock::ipc_format;

namespace surelock::ipc_robust {

void pause_us(unsigned us)
{
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, nullptr);
}

namespace {

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

} // namespace

// The owner in the lock word (kernel-maintained) must be free, marked dead by the kernel, or
// a thread whose process has this file mapped (where /proc/TID/maps cannot be read: the
// thread the header records as its holder). Anything else (a corrupt word naming thread 1,
// say) would make every lock wait forever, and a mutex of another kind could hang its users or
// make glibc abort. The word is decided on live, never on a copy: a holder may release, exit
// and be reaped between two reads, and a new holder is briefly unrecorded (between its
// acquire and its holder_tid store), so the check re-reads until the evidence agrees, within
// holder_check_ns.
int check_mutex(const char *path, const FileHeader *h, ino_t ino)
{
    SURELOCK_STEP(&h->mutex); // before the loop, not in it: the loop is bounded by time
    pthread_mutex_t reference;
    int rc = ipc_file::init_mutex(&reference, (h->flags & SURELOCK_IPC_RECURSIVE) != 0);
    if (rc != 0) return fail_path(rc, path, "pthread_mutex_init failed: %s", strerror(rc));
    if (h->mutex.__data.__kind != reference.__data.__kind)
        return fail_path(EPROTO, path,
                         "the mutex in the file is not the robust process-shared kind (kind "
                         "0x%x, expected 0x%x); corrupt file",
                         (unsigned)h->mutex.__data.__kind, (unsigned)reference.__data.__kind);
    Deadline give_up = Deadline::after(holder_check_ns);
    int unreadable = 0;
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

int lock_failure(int rc, bool no_sleep, uint64_t timeout_ns, const char *fn)
{
    switch (rc) {
    case EBUSY:
        return fail(EBUSY, "%s: held by another thread or process", fn);
    case ETIMEDOUT:
        if (no_sleep)
            return fail(ETIMEDOUT,
                        "%s: held by another thread or process (timeout %llu ns, no time left)",
                        fn, (unsigned long long)timeout_ns);
        return fail(ETIMEDOUT, "%s: still held after %llu ns", fn, (unsigned long long)timeout_ns);
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
}

int unlock_failure(int rc, const char *fn)
{
    return fail(rc, "%s: pthread_mutex_unlock: %s", fn, strerror(rc));
}

} // namespace surelock::ipc_robust

#ifdef SURELOCK_TESTING
int surelock_testing_ipc_proc_errno; // sys/testing.h
#endif
