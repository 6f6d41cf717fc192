/*
 * Interleaving exploration hooks (FAULTS.md "Interleavings"). SURELOCK_STEP(addr) marks the
 * point just before one atomic step of a lock protocol on the memory at addr. In the release
 * library it expands to nothing (the arguments are not even evaluated). In the internal test
 * build (SURELOCK_TESTING) it calls surelock_testing_step(), which does nothing unless the
 * calling thread is run by the deterministic scheduler of src/sys/interleave.cc; then the
 * thread parks there and the scheduler picks who performs the next step, so a test can run
 * every ordering of the protocols' steps (tests/test_interleave.c). C-compatible, because
 * the scenarios are C.
 */
#ifndef SURELOCK_SYS_INTERLEAVE_H
#define SURELOCK_SYS_INTERLEAVE_H

#ifdef SURELOCK_TESTING

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
#ifdef __cplusplus
}
#endif

#define SURELOCK_STEP_STR_(x) #x
#define SURELOCK_STEP_STR(x) SURELOCK_STEP_STR_(x)
#define SURELOCK_STEP(addr)                                                                    \
    surelock_testing_step((const void *)(addr), __FILE__ ":" SURELOCK_STEP_STR(__LINE__), __func__)

#else

#define SURELOCK_STEP(addr) ((void)0)

#endif

#endif
