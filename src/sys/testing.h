/*
 * Hooks that exist only in the internal test build (libsurelock_internal, compiled with
 * SURELOCK_TESTING from the same sources, never installed). They let tests and fuzzers reach
 * states that are impractical to provoke through the public API: allocation failure and
 * counters near their limits. C-compatible so the C tests can use them.
 */
#ifndef SURELOCK_SYS_TESTING_H
#define SURELOCK_SYS_TESTING_H

#include "surelock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The next `successes` allocations succeed and the one after fails once; -1 = never fail. */
void surelock_testing_fail_allocation_after(long successes);

/* Sets the calling thread's depth on an rlock it holds (to reach the overflow limit). */
int surelock_testing_rlock_set_depth(surelock_rlock *l, unsigned depth);

/* Called by the ipc initialiser after the magic is written and before the header is marked
 * ready: a test sets the hook to kill the process there (a creator dying half-way). */
extern void (*surelock_testing_ipc_init_hook)(void);
void surelock_testing_ipc_init_point(void);

/* Called by every rwlock unlock right after its releasing read-modify-write, on the unlocking
 * thread: a test pauses one unlocker there while other threads take, release and free the
 * lock (nothing of the lock may be touched after that step). NULL: no call. */
extern void (*surelock_testing_rwlock_released_hook)(void);

/* Called by surelock_cond_signal/broadcast right after the step that lets waiters go: a test
 * sets the hook to let a woken waiter return and free the cond there (pthreads allows
 * destroying a cond nobody waits on), proving nothing of the cond is touched afterwards. */
extern void (*surelock_testing_cond_woken_hook)(void);
void surelock_testing_cond_woken_point(void);

#ifdef __cplusplus
}
#endif

#endif
