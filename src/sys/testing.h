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

/* Thread records are recycled (a new thread takes a finished one's, allocating nothing):
 * forget the finished ones, so the next new thread allocates its record again (ENOMEM tests). */
void surelock_testing_forget_finished_thread_records(void);

/* Called by the ipc initialiser after the magic is written and before the header is marked
 * ready: a test sets the hook to kill the process there (a creator dying half-way). */
extern void (*surelock_testing_ipc_init_hook)(void);
void surelock_testing_ipc_init_point(void);

#ifdef __cplusplus
}
#endif

#endif
