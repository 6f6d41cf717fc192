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

/* Called by every rwlock unlock right after its releasing read-modify-write, on the unlocking
 * thread: a test pauses one unlocker there while other threads take, release and free the
 * lock (nothing of the lock may be touched after that step). NULL: no call. */
extern void (*surelock_testing_rwlock_released_hook)(void);

/* Called by surelock_cond_signal/broadcast right after the step that lets waiters go: a test
 * sets the hook to let a woken waiter return and free the cond there (pthreads allows
 * destroying a cond nobody waits on), proving nothing of the cond is touched afterwards. */
extern void (*surelock_testing_cond_woken_hook)(void);
void surelock_testing_cond_woken_point(void);

/* ipc open's view of the system, for faults that cannot be provoked on demand:
 *  - boot_id_errno: non-zero makes reading /proc/sys/kernel/random/boot_id fail with it
 *    (ENOMEM, EMFILE, EACCES...);
 *  - boot_id: non-NULL replaces this boot's id (an opener in another mount namespace);
 *  - proc_errno: non-zero makes /proc/TID/maps unreadable with it (another user's process);
 *  - fs_magic: non-zero replaces the file system type of the lock file (NFS_SUPER_MAGIC...).
 * All 0 / NULL by default; per process, set them before opening. */
extern int surelock_testing_ipc_boot_id_errno;
extern const char *surelock_testing_ipc_boot_id;
extern int surelock_testing_ipc_proc_errno;
extern long surelock_testing_ipc_fs_magic;

/* Called by ipc open, under its flock, right after it read the file's header: a test sets the
 * hook to change the lock's state there (a holder releasing and exiting meanwhile). */
extern void (*surelock_testing_ipc_header_read_hook)(void);
void surelock_testing_ipc_header_read_point(void);

/* Called by an ipc acquire right after it took the pthread mutex, before it checks the lock
 * is recoverable: a test sets the hook to kill the process there. */
extern void (*surelock_testing_ipc_acquired_hook)(void);
void surelock_testing_ipc_acquired_point(void);

#ifdef __cplusplus
}
#endif

#endif
