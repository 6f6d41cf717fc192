// A scenario thread as a process (test build only; the scheduler is interleave.cc). The ipc
// open protocol is between processes: each has its own open file descriptions, and flock and
// OFD locks belong to those, so two threads that opened the file each for themselves conflict
// exactly as two processes do. What a process owns and the kernel releases when it dies is
// tracked here per scheduled thread: its descriptors and shared mappings (the file locks
// live until the last of them is gone), and the memory it allocated while mortal. A body
// makes its thread mortal around the calls whose every step may be its death; the explorer
// then also chooses "dies here" at each step (the option is listed in decide()), and the
// thread releases all of that, is cut off where it stood and ends (thread_main resumes it).
// Memory a scheduled thread frees is poisoned and quarantined here too, until the schedule
// ends, so any later step on it is caught.
//
// The dead thread leaves its stack by longjmp, skipping the library's frames: they run no
// cleanup (with -fno-exceptions a cancellation or pthread_exit would not either), which is
// what a SIGKILL does to a process. Kept apart from the scheduler: this is the model of the
// kernel's files and processes, as interleave_futex.cc is of the futex.

#ifdef SURELOCK_TESTING

#include "sys/interleave_explorer.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

namespace surelock::sys::interleave {

namespace {

constexpr unsigned char POISON = 0xdb;

// With mu held: p is freed (the memory stays allocated and poisoned until the schedule ends).
void quarantine(int me, void *p)
{
    if (ex.n_freed == MAX_FREED) violation("more than %d frees in one schedule", MAX_FREED);
    size_t size = malloc_usable_size(p);
    memset(p, POISON, size);
    ex.freed[ex.n_freed++] = Freed{static_cast<const char *>(p), size, ex.n_steps};
    record(me, p, "deallocate", "frees (poisoned, quarantined)");
}

// With mu held: a file lock was (or may have been) released; every thread waiting for one
// tries again (a spurious retry only finds it busy and waits again).
void file_lock_released()
{
    for (int i = 0; i < ex.threads; i++)
        if (ex.state[i] == BLOCKED_FILE_LOCK) ex.state[i] = RUNNABLE;
}

// Removes v from the first n entries of list (order does not matter). False if absent.
template <typename T, typename Same> bool drop(T *list, int *n, Same same)
{
    for (int i = 0; i < *n; i++)
        if (same(list[i])) {
            list[i] = list[--*n];
            return true;
        }
    return false;
}

// The common opening of every wrapped call: -1 for a thread the explorer does not run (the
// call is then made as it is), else the thread, which now holds mu and has taken its step.
int step_in(const char *where, const char *what)
{
    if (my_index < 0) return -1;
    pthread_mutex_lock(&ex.mu);
    step_locked(nullptr, where, what, false);
    return my_index;
}

// Ends a wrapped call: unlocks mu, keeping the call's errno.
template <typename R> R step_out(R result)
{
    int e = errno;
    pthread_mutex_unlock(&ex.mu);
    errno = e;
    return result;
}

} // namespace

void release_quarantine()
{
    for (int i = 0; i < ex.n_freed; i++) free(const_cast<char *>(ex.freed[i].p));
    ex.n_freed = 0;
}

[[noreturn]] void die_locked(int me)
{
    Owned &o = ex.owned[me];
    record(me, nullptr, "(death)", "its descriptors and mappings are released");
    for (int i = 0; i < o.n_maps; i++) munmap(o.maps[i].addr, o.maps[i].size);
    for (int i = 0; i < o.n_fds; i++) close(o.fds[i]);
    for (int i = 0; i < o.n_allocations; i++) quarantine(me, o.allocations[i]);
    o.n_maps = o.n_fds = o.n_allocations = 0;
    o.mortal = o.dying = false;
    file_lock_released();
    jmp_buf *resume = o.death;
    pthread_mutex_unlock(&ex.mu);
    longjmp(*resume, 1);
}

} // namespace surelock::sys::interleave

using namespace surelock::sys::interleave;

extern "C" {

int surelock_testing_scheduled(void)
{
    return my_index >= 0;
}

int surelock_testing_quarantine(void *p)
{
    if (my_index < 0 || p == nullptr) return 0;
    pthread_mutex_lock(&ex.mu);
    Owned &o = ex.owned[my_index];
    drop(o.allocations, &o.n_allocations, [p](void *a) { return a == p; });
    quarantine(my_index, p);
    pthread_mutex_unlock(&ex.mu);
    return 1;
}

void surelock_testing_allocated(void *p)
{
    if (my_index < 0 || p == nullptr) return;
    pthread_mutex_lock(&ex.mu);
    Owned &o = ex.owned[my_index];
    if (o.mortal) {
        if (o.n_allocations == MAX_OWNED)
            violation("a mortal thread holds more than %d allocations", MAX_OWNED);
        o.allocations[o.n_allocations++] = p;
    }
    pthread_mutex_unlock(&ex.mu);
}

void surelock_testing_mortal(int mortal)
{
    if (my_index < 0) return;
    pthread_mutex_lock(&ex.mu);
    ex.owned[my_index].mortal = mortal != 0;
    pthread_mutex_unlock(&ex.mu);
}

int surelock_testing_fd_opened(int fd)
{
    if (my_index < 0 || fd < 0) return fd;
    int e = errno;
    pthread_mutex_lock(&ex.mu);
    Owned &o = ex.owned[my_index];
    if (o.n_fds == MAX_OWNED) violation("a thread holds more than %d descriptors", MAX_OWNED);
    o.fds[o.n_fds++] = fd;
    pthread_mutex_unlock(&ex.mu);
    errno = e;
    return fd;
}

int surelock_testing_close(int fd, const char *where, const char *what)
{
    int me = step_in(where, what);
    if (me < 0) return close(fd);
    Owned &o = ex.owned[me];
    drop(o.fds, &o.n_fds, [fd](int f) { return f == fd; });
    int rc = close(fd);
    file_lock_released();
    return step_out(rc);
}

// An exclusive flock found busy blocks the thread until some file lock is released.
int surelock_testing_flock(int fd, int op, const char *where, const char *what)
{
    int me = step_in(where, what);
    if (me < 0) return flock(fd, op);
    int rc;
    while ((rc = flock(fd, op | LOCK_NB)) != 0 && errno == EWOULDBLOCK && (op & LOCK_UN) == 0) {
        record(me, nullptr, where, "flock busy: waits for a file lock release");
        ex.state[me] = BLOCKED_FILE_LOCK;
        ex.lock_fd[me] = fd;
        decide(me);
        record(me, nullptr, where, "tries the flock again");
    }
    if (op & LOCK_UN) file_lock_released();
    return step_out(rc);
}

// OFD locks here are only ever tried (F_OFD_SETLK); dropping or downgrading one is a release.
int surelock_testing_ofd_setlk(int fd, struct flock *fl, const char *where, const char *what)
{
    int me = step_in(where, what);
    if (me < 0) return fcntl(fd, F_OFD_SETLK, fl);
    int rc = fcntl(fd, F_OFD_SETLK, fl);
    if (fl->l_type != F_WRLCK) file_lock_released();
    return step_out(rc);
}

void *surelock_testing_mmap(size_t size, int fd, const char *where, const char *what)
{
    int me = step_in(where, what);
    void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (me < 0) return p;
    Owned &o = ex.owned[me];
    if (p != MAP_FAILED) {
        if (o.n_maps == MAX_OWNED) violation("a thread holds more than %d mappings", MAX_OWNED);
        o.maps[o.n_maps++] = Mapping{p, size};
    }
    return step_out(p);
}

// A mapping holds its file open: unmapping it may release the file's locks.
int surelock_testing_munmap(void *addr, size_t size, const char *where, const char *what)
{
    int me = step_in(where, what);
    if (me < 0) return munmap(addr, size);
    Owned &o = ex.owned[me];
    drop(o.maps, &o.n_maps, [addr](const Mapping &m) { return m.addr == addr; });
    int rc = munmap(addr, size);
    file_lock_released();
    return step_out(rc);
}

} // extern "C"

#endif // SURELOCK_TESTING
