/*
 * Hooks that exist only in the internal test build (libsurelock_internal, compiled with
 * SURELOCK_TESTING from the same sources, never installed). They let tests and fuzzers reach
 * states that are impractical to provoke through the public API: allocation failure and
 * counters near their limits. C-compatible so the C tests can use them.
 */
#ifndef SURELOCK_SYS_TESTING_H
#define SURELOCK_SYS_TESTING_H

#include "surelock.h"
#include "sys/interleave.h"

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
/* From now on in this process, no finished thread's record is reused: every new thread
 * allocates its own (the fuzzers' models, whose workers start and end concurrently with
 * other workers' first calls, predict that allocation). */
void surelock_testing_never_reuse_thread_records(void);

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
 *  - boot_id: non-NULL replaces this boot's id (an opener in another mount namespace); per
 *    thread, so that threads standing for processes (the explorer's openers) differ;
 *  - proc_errno: non-zero makes /proc/TID/maps unreadable with it (another user's process);
 *  - fs_magic: non-zero replaces the file system type of the lock file (NFS_SUPER_MAGIC...).
 * All 0 / NULL by default; per process (boot_id: per thread), set them before opening. */
extern int surelock_testing_ipc_boot_id_errno;
extern __thread const char *surelock_testing_ipc_boot_id;
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

/* Lock groups' hardware transactions (src/sys/transaction.h), per process:
 *  - in_use: 1 when groups use them (the CPU has RTM, the build allows them, not given up
 *    after repeated aborts), 0 when not (every group takes the per-member path), -1 when not
 *    known yet (no group has asked);
 *  - counts: transactions committed, refused (a member word was not in the expected state:
 *    taken, or with sleepers) and failed (the hardware aborted), takes and releases together;
 *  - forbid: nonzero makes every group take the per-member path (the fallback); 0 undoes it;
 *  - abort: nonzero makes every transaction abort inside, as on a CPU that lists RTM but whose
 *    TSX is disabled: after give_up_after failures in a row the process stops trying (for
 *    good: use it in a child process). */
int surelock_testing_transactions_in_use(void);
void surelock_testing_transaction_counts(unsigned long *committed, unsigned long *refused,
                                         unsigned long *failed);
void surelock_testing_forbid_transactions(int forbid);
void surelock_testing_abort_transactions(int abort);

/* ---- Interleaving exploration (src/sys/interleave.cc) ------------------------------------
 *
 * A scenario is 1-3 thread bodies run against the library. The explorer runs them on real
 * threads, but only one at a time: at every SURELOCK_STEP in the library (and every step a
 * body marks itself), and at every futex wait and wake, the running thread parks and the
 * explorer chooses who performs the next step. It runs the scenario once per schedule,
 * from scratch, depth-first over those choices (stateless, as CHESS), until every schedule
 * with at most `preemption_bound` switches away from a thread that could have continued has
 * been run. Futex waits and wakes are simulated (a wait re-checks the word and blocks the
 * thread; a wake unblocks up to N; a timed wait may also be ended as "timed out", a choice
 * the explorer enumerates like any other), so no schedule depends on real time.
 *
 * A schedule violates the scenario when: every thread still running is blocked (a lost
 * wake-up or a deadlock); a step touches memory the library freed earlier in the schedule
 * (freed memory is poisoned and kept out of reuse until the schedule ends); a body reports
 * surelock_testing_violation (e.g. two holders at once); check() returns a reason; or a
 * schedule exceeds max_steps. The first violation ends the exploration: its report names the
 * violation and lists the schedule step by step (thread, file:line, function), and the
 * choice string that replays it (SURELOCK_INTERLEAVE_REPLAY='<scenario name>:<choices>').
 * The threads of a violating schedule are left parked for the life of the process.
 *
 * SURELOCK_INTERLEAVE_PREEMPTIONS=<n> raises every scenario's preemption bound to n (a deeper
 * run than CI's).
 *
 * What is not explored: spurious futex wake-ups (a wake picks the longest sleepers, as the
 * kernel does), reorderings of relaxed atomics (steps are sequentially consistent), and the
 * expiry of ipc open's bounded flock wait (a busy flock blocks until a release: see
 * sys/interleave.h; the expiry is tested with real time in test_ipc.c). A
 * thread's exit is scheduled too: surelock's thread-exit handler (owner death) runs as part
 * of the schedule before the thread counts as finished. Place SURELOCK_STEP before each access to shared lock memory, never
 * inside a time-bounded spin (the step count would vary between runs of one schedule), and
 * never before an access that a branch may skip (a step counts as touching addr). */
#define SURELOCK_INTERLEAVE_MAX_THREADS 3

typedef struct surelock_testing_scenario {
    const char *name;
    int threads;
    void (*setup)(void *ctx);             /* before each schedule, on the exploring thread */
    void (*body[SURELOCK_INTERLEAVE_MAX_THREADS])(void *ctx);
    const char *(*check)(void *ctx);      /* after each schedule (threads joined): NULL = ok */
    void *ctx;
    int preemption_bound;
    int max_steps;
} surelock_testing_scenario;

/* Number of schedules run, all without violation; -1 after a violation (see the report). */
long surelock_testing_explore(const surelock_testing_scenario *scenario);
/* The last exploration's report: the violation and its schedule, or a one-line summary. */
const char *surelock_testing_explore_report(void);
/* From a body: a step of the body's own (e.g. inside a critical section), so the explorer
 * may switch threads there too. */
#define SURELOCK_TESTING_STEP(addr) SURELOCK_STEP(addr)
/* From a body: blocks the thread until *flag != 0 (another body sets it). */
void surelock_testing_await(const volatile int *flag);
/* From a body: from now on (nonzero) or no longer (0), each step of the calling thread may be
 * its death, as a SIGKILL of a process: the explorer also tries, at each step, releasing the
 * descriptors and mappings the thread opened through the SURELOCK_FS hooks (and with them its
 * file locks) and the memory the library allocated for it meanwhile, and ending the thread
 * there (its body does not go on). For the ipc open protocol (sys/interleave.h). */
void surelock_testing_mortal(int mortal);
/* From a body: the scenario's own promise broke; ends the exploration with this reason. */
void surelock_testing_violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#ifdef __cplusplus
}
#endif

#endif
