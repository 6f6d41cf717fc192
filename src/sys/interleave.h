/*
 * Interleaving exploration hooks (FAULTS.md "Interleavings"). SURELOCK_STEP(addr) marks the
 * point just before one atomic step of a lock protocol on the memory at addr. In the release
 * library it expands to nothing (the arguments are not even evaluated). In the internal test
 * build (SURELOCK_TESTING) it calls surelock_testing_step(), which does nothing unless the
 * calling thread is run by the deterministic scheduler of src/sys/interleave.cc; then the
 * thread parks there and the scheduler picks who performs the next step, so a test can run
 * every ordering of the protocols' steps (tests/test_interleave.c). C-compatible, because
 * the scenarios are C.
 *
 * The SURELOCK_FS family wraps the system calls of the ipc open protocol, one macro per call.
 * In the release library each is the call itself. In the test build each is a scheduling
 * point before the call, and feeds the explorer's model of a scenario thread as a process
 * (src/sys/interleave_process.cc): the descriptors and mappings it owns (a thread chosen to
 * die loses them, as a killed process does, and with them its file locks), and file locks
 * that block: an exclusive flock found busy blocks the thread in the explorer until a file
 * lock is released somewhere, then is tried again (open's bounded poll loop around it sleeps
 * on real time, which no schedule may depend on: its wait is modelled as blocking).
 */
#ifndef SURELOCK_SYS_INTERLEAVE_H
#define SURELOCK_SYS_INTERLEAVE_H

#ifdef SURELOCK_TESTING

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* `where` is "file:line", `what` the function: both printed in a violation's schedule. */
void surelock_testing_step(const void *addr, const char *where, const char *what);

/* What futex.cc and alloc.cc hand to the scheduler in the test build. Each returns nonzero
 * when the calling thread is scheduled and the call was handled (result in *out). */
int surelock_testing_futex_wait(const void *word, unsigned expected, int timed, unsigned bits,
                                int *out);
int surelock_testing_futex_wake(const void *word, int count, unsigned bits, int *out);
int surelock_testing_quarantine(void *p);
/* Nonzero on a thread the explorer schedules: caches of freed objects then free them, so the
 * quarantine sees every free (sys/dispatch.cc). */
int surelock_testing_scheduled(void);
void surelock_testing_allocated(void *p);

struct flock;
int surelock_testing_fd_opened(int fd);
int surelock_testing_close(int fd, const char *where, const char *what);
int surelock_testing_flock(int fd, int op, const char *where, const char *what);
int surelock_testing_ofd_setlk(int fd, struct flock *fl, const char *where, const char *what);
void *surelock_testing_mmap(size_t size, int fd, const char *where, const char *what);
int surelock_testing_munmap(void *addr, size_t size, const char *where, const char *what);
#ifdef __cplusplus
}
#endif

#define SURELOCK_STEP_STR_(x) #x
#define SURELOCK_STEP_STR(x) SURELOCK_STEP_STR_(x)
#define SURELOCK_STEP_AT __FILE__ ":" SURELOCK_STEP_STR(__LINE__)
#define SURELOCK_STEP(addr) surelock_testing_step((const void *)(addr), SURELOCK_STEP_AT, __func__)

#define SURELOCK_FS(call) (surelock_testing_step(0, SURELOCK_STEP_AT, #call), (call))
#define SURELOCK_FD_OPEN(call)                                                                 \
    surelock_testing_fd_opened((surelock_testing_step(0, SURELOCK_STEP_AT, #call), (call)))
#define SURELOCK_CLOSE(fd) surelock_testing_close(fd, SURELOCK_STEP_AT, "close(" #fd ")")
#define SURELOCK_FLOCK(fd, op) surelock_testing_flock(fd, op, SURELOCK_STEP_AT, "flock(" #op ")")
#define SURELOCK_OFD_SETLK(fd, fl)                                                             \
    surelock_testing_ofd_setlk(fd, fl, SURELOCK_STEP_AT, "fcntl(F_OFD_SETLK, " #fl ")")
#define SURELOCK_MMAP(size, fd) surelock_testing_mmap(size, fd, SURELOCK_STEP_AT, "mmap(" #size ")")
#define SURELOCK_MUNMAP(addr, size)                                                            \
    surelock_testing_munmap(addr, size, SURELOCK_STEP_AT, "munmap(" #addr ")")

#else

#define SURELOCK_STEP(addr) ((void)0)
#define SURELOCK_FS(call) (call)
#define SURELOCK_FD_OPEN(call) (call)
#define SURELOCK_CLOSE(fd) close(fd)
#define SURELOCK_FLOCK(fd, op) flock(fd, op)
#define SURELOCK_OFD_SETLK(fd, fl) fcntl(fd, F_OFD_SETLK, fl)
#define SURELOCK_MMAP(size, fd) mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
#define SURELOCK_MUNMAP(addr, size) munmap(addr, size)

#endif

#endif
