/*
 * test_interleave.c — every ordering of the futex protocols' atomic steps, up to a preemption
 * bound (FAULTS.md "Interleavings"; the explorer and what it checks: src/sys/testing.h).
 * Links the internal test build, where SURELOCK_STEP marks each atomic step of FutexLock,
 * OwnedLock, rwlock, cond and sem/amutex, futex waits and wakes are simulated, and freed
 * memory is poisoned and quarantined while a schedule runs. The ipc open protocol's scenarios,
 * between threads standing for processes, are in test_interleave_ipc.c (group "ipc").
 *
 * Each scenario is 2-3 thread bodies written against the public API. Its promises:
 *  - one holder at a time (a counter checked across a step inside the critical section);
 *  - no lost wake-up (the explorer fails a schedule in which every live thread is blocked);
 *  - no access after the releasing step (the "last unlocker frees" pattern: the thread that
 *    leaves last frees the object at once, and any later step of the library on it fails);
 *  - what check() asserts about the outcome (return codes, callbacks run exactly once, and
 *    the object freeable at the end, i.e. no stale waiting state left behind).
 *
 * Run one group by naming it: test_interleave mutex|rwlock|cond|sem|ipc|explorer (all without
 * an argument; the ipc open protocol's scenarios are in test_interleave_ipc.c). A violation prints the schedule and the SURELOCK_INTERLEAVE_REPLAY string that
 * runs just that schedule again; SURELOCK_INTERLEAVE_PREEMPTIONS=<n> explores deeper.
 *
 * Bodies never call CMocka (they run on scenario threads): they report a broken promise with
 * surelock_testing_violation, which ends the exploration; the test asserts on the result.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/interleave.h"

/* Reports go to stdout as TAP comments (meson parses stdout as TAP), a violation's schedule to
 * stderr. */
static void print_report(const char *report, FILE *to)
{
    for (const char *line = report; *line != '\0';) {
        size_t len = strcspn(line, "\n");
        fprintf(to, "# %.*s\n", (int)len, line);
        line += len + (line[len] == '\n');
    }
}

void expect_clean(const surelock_testing_scenario *s, long at_least)
{
    long schedules = surelock_testing_explore(s);
    const char *report = surelock_testing_explore_report();
    print_report(report, schedules < 0 ? stderr : stdout);
    if (schedules < 0) fail_msg("scenario \"%s\" violated (the schedule is above)", s->name);
    if (schedules < at_least)
        fail_msg("scenario \"%s\": only %ld schedules explored (expected >= %ld): the steps are "
                 "not reached",
                 s->name, schedules, at_least);
}

void expect_violation(const surelock_testing_scenario *s, const char *why)
{
    long schedules = surelock_testing_explore(s);
    const char *report = surelock_testing_explore_report();
    if (schedules >= 0) fail_msg("broken scenario \"%s\" passed %ld schedules", s->name, schedules);
    if (strstr(report, why) == NULL)
        fail_msg("scenario \"%s\" failed, but not for \"%s\":\n%s", s->name, why, report);
    if (strstr(report, "SURELOCK_INTERLEAVE_REPLAY") == NULL)
        fail_msg("violation report without a replayable schedule:\n%s", report);
    printf("# as expected: %.*s\n", (int)strcspn(report, "\n"), report);
}

/* ---- shared scenario state (reset by each setup; bodies are serialized by the explorer) --- */

static struct {
    surelock_mutex *m;
    surelock_rwlock *rw;
    surelock_cond *c;
    surelock_sem *s;
    surelock_amutex *am;
    surelock_waiter w[2];
    volatile int held;     /* set by the first holder: the others start contending */
    volatile int in_cs;    /* holders inside the critical section right now */
    volatile int left;     /* threads done with the object; the last one frees it */
    volatile int ready, waiting, all_waiting, granted, canceled;
    int users; /* how many leave before the last one frees */
    surelock_mutex *m2;
    surelock_group *grp[2];
    volatile int tokens, consumed, queued1, queued2;
    int rc[3], rc2[3];
    bool freed;
} g;

static const char *wrong; /* check()'s reason, built in a static buffer */
static char wrong_buf[256];
#define WRONG(...) (snprintf(wrong_buf, sizeof wrong_buf, __VA_ARGS__), wrong = wrong_buf)

static void reset(void)
{
    memset(&g, 0, sizeof g);
    wrong = NULL;
}

/* Inside a critical section: nobody else may be in, even if the explorer switches here. */
static void critical_section(const char *what)
{
    if (++g.in_cs != 1) surelock_testing_violation("two holders of %s at once", what);
    SURELOCK_TESTING_STEP(&g.in_cs);
    if (g.in_cs != 1) surelock_testing_violation("two holders of %s at once", what);
    g.in_cs--;
}

/* ---- mutex (OwnedLock over FutexLock) ------------------------------------------------------ */

static void mutex_setup(void *ctx)
{
    (void)ctx;
    reset();
    surelock_mutex_new(&g.m);
}

static const char *mutex_check(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 3; i++)
        if (g.rc[i] != 0) return WRONG("thread %d: lock returned %d", i + 1, g.rc[i]);
    if (!g.freed && surelock_mutex_free(g.m) != 0)
        return WRONG("the mutex is not freeable once every thread unlocked: %s", surelock_errmsg());
    return wrong;
}

static void mutex_twice(void *ctx)
{
    (void)ctx;
    for (int round = 0; round < 2; round++) {
        int rc = surelock_mutex_lock(g.m);
        if (rc != 0) {
            g.rc[0] = rc;
            return;
        }
        critical_section("the mutex");
        surelock_mutex_unlock(g.m);
    }
}

static void two_threads_never_hold_a_mutex_at_once_and_none_sleeps_forever(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("mutex: 2 threads lock twice", 2, mutex_setup, mutex_check, mutex_twice,
                 mutex_twice);
    expect_clean(&s, 100);
}

static void mutex_timed(void *ctx)
{
    (void)ctx;
    int rc = surelock_mutex_timedlock(g.m, 1000000000ull);
    if (rc == ETIMEDOUT) return; /* the explorer may time any timed wait out */
    g.rc[1] = rc;
    if (rc != 0) return;
    critical_section("the mutex");
    surelock_mutex_unlock(g.m);
}

static void mutex_once(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_mutex_lock(g.m);
    if (g.rc[0] != 0) return;
    critical_section("the mutex");
    surelock_mutex_unlock(g.m);
}

static void a_timed_out_mutex_waiter_strands_nobody(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("mutex: lock, timedlock, lock", 3, mutex_setup, mutex_check, mutex_once,
                 mutex_timed, mutex_once);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* "Last unlocker frees": the first thread holds the mutex; the others lock and unlock after
 * it; whoever leaves last frees it at once. The first holder's unlock must not touch the
 * mutex after the releasing exchange. */
static void mutex_first_holder(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_mutex_lock(g.m);
    g.held = 1;
    SURELOCK_TESTING_STEP(&g.held);
    surelock_mutex_unlock(g.m);
}

static void mutex_then_last_frees(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    int rc = surelock_mutex_lock(g.m);
    if (rc != 0) surelock_testing_violation("lock returned %d", rc);
    critical_section("the mutex");
    surelock_mutex_unlock(g.m);
    if (++g.left == 2) {
        rc = surelock_mutex_free(g.m);
        if (rc != 0) surelock_testing_violation("free by the last unlocker: %s", surelock_errmsg());
        g.freed = true;
    }
}

static void the_last_unlocker_may_free_the_mutex_at_once(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("mutex: last unlocker frees", 3, mutex_setup, mutex_check, mutex_first_holder,
                 mutex_then_last_frees, mutex_then_last_frees);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* The same, out of order: the first holder also holds m2, taken after m, and lets m go
 * first, so m's hold is in the thread's held list, not its slot (thread.h). An unlock
 * unlinks after its releasing exchange (owned_lock.h), when the other thread may already have
 * taken, released and freed m: the unlink may touch only the list's other links and head,
 * never m itself (a step on freed memory fails the schedule). The held list must come out
 * whole: m2 is then let go, taken and let go again. */
static void mutex_first_holder_of_two(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_mutex_lock(g.m);
    g.rc2[0] = surelock_mutex_lock(g.m2);
    g.held = 1;
    SURELOCK_TESTING_STEP(&g.held);
    surelock_mutex_unlock(g.m);
    if (surelock_mutex_unlock(g.m2) != 0 || surelock_mutex_lock(g.m2) != 0 ||
        surelock_mutex_unlock(g.m2) != 0)
        surelock_testing_violation("m2 after m: %s", surelock_errmsg());
}

static void mutex_then_frees(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    g.rc[1] = surelock_mutex_lock(g.m);
    critical_section("the mutex");
    surelock_mutex_unlock(g.m);
    if (surelock_mutex_free(g.m) != 0)
        surelock_testing_violation("free after the last unlock: %s", surelock_errmsg());
    g.freed = true;
}

static void two_mutexes_setup(void *ctx)
{
    mutex_setup(ctx);
    surelock_mutex_new(&g.m2);
}

static const char *two_mutexes_check(void *ctx)
{
    if (g.rc2[0] != 0) return WRONG("m2: lock returned %d", g.rc2[0]);
    if (surelock_mutex_free(g.m2) != 0)
        return WRONG("m2 is not freeable once unlocked: %s", surelock_errmsg());
    return mutex_check(ctx);
}

static void an_unlock_out_of_order_touches_only_locks_still_held_after_its_release(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("mutex: out-of-order unlock, then the other frees", 2, two_mutexes_setup,
                 two_mutexes_check, mutex_first_holder_of_two, mutex_then_frees);
    expect_clean(&s, 20);
}

/* Owner death: the first holder's thread ends holding the mutex. Its thread-exit handler
 * releases it (scheduled like any step): exactly one of the two waiters is told EOWNERDEAD,
 * and neither sleeps forever. */
static void mutex_dies_holding(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_mutex_lock(g.m);
    g.held = 1;
}

static void mutex_after_death(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    int rc = surelock_mutex_lock(g.m);
    if (rc == EOWNERDEAD) g.granted++; /* counts the notices */
    else if (rc != 0) surelock_testing_violation("lock returned %d", rc);
    critical_section("the mutex");
    surelock_mutex_unlock(g.m);
}

static const char *owner_death_check(void *ctx)
{
    if (g.granted != 1) return WRONG("%d threads were told the owner died (want 1)", g.granted);
    return mutex_check(ctx);
}

static void one_waiter_hears_that_the_mutex_owner_died_and_none_sleeps_forever(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("mutex: owner dies holding, two waiters", 3, mutex_setup, owner_death_check,
                 mutex_dies_holding, mutex_after_death, mutex_after_death);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* ---- rwlock ------------------------------------------------------------------------------- */

static void rw_setup(void *ctx)
{
    reset();
    g.users = (int)(intptr_t)ctx;
    surelock_rwlock_new(&g.rw);
}

static const char *rw_check(void *ctx)
{
    (void)ctx;
    if (!g.freed && surelock_rwlock_free(g.rw) != 0)
        return WRONG("the rwlock is not freeable once every thread unlocked: %s",
                     surelock_errmsg());
    return wrong;
}

static void rw_leave(void)
{
    if (++g.left == g.users) {
        int rc = surelock_rwlock_free(g.rw);
        if (rc != 0)
            surelock_testing_violation("free by the last unlocker: %s", surelock_errmsg());
        g.freed = true;
    }
}

static void rw_first_reader(void *ctx)
{
    (void)ctx;
    if (surelock_rwlock_rdlock(g.rw) != 0) surelock_testing_violation("rdlock failed");
    g.held = 1;
    SURELOCK_TESTING_STEP(&g.held);
    surelock_rwlock_unlock(g.rw);
}

/* With a timed writer, a reader may share the first reader's hold: then the first reader
 * counts among those that leave before the last one frees. */
static void rw_first_reader_leaves(void *ctx)
{
    rw_first_reader(ctx);
    rw_leave();
}

static void rw_first_writer(void *ctx)
{
    (void)ctx;
    if (surelock_rwlock_wrlock(g.rw) != 0) surelock_testing_violation("wrlock failed");
    g.held = 1;
    critical_section("the rwlock (writing)");
    surelock_rwlock_unlock(g.rw);
}

static void rw_then_writer(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    if (surelock_rwlock_wrlock(g.rw) != 0) surelock_testing_violation("wrlock failed");
    critical_section("the rwlock (writing)");
    surelock_rwlock_unlock(g.rw);
    rw_leave();
}

static void rw_then_reader(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    if (surelock_rwlock_rdlock(g.rw) != 0) surelock_testing_violation("rdlock failed");
    if (g.in_cs != 0) surelock_testing_violation("a reader entered while a writer holds");
    SURELOCK_TESTING_STEP(&g.in_cs);
    if (g.in_cs != 0) surelock_testing_violation("a writer entered while a reader holds");
    surelock_rwlock_unlock(g.rw);
    rw_leave();
}

static void a_read_unlock_never_touches_an_rwlock_a_writer_then_freed(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("rwlock: read unlock, writer frees", 2, rw_setup, rw_check, rw_first_reader,
                 rw_then_writer);
    s.ctx = (void *)1;
    expect_clean(&s, 50);
}

static void a_write_unlock_never_touches_an_rwlock_the_last_user_freed(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("rwlock: write unlock, writer and reader wait, last frees", 3, rw_setup, rw_check,
                 rw_first_writer, rw_then_writer, rw_then_reader);
    s.ctx = (void *)2;
    expect_clean(&s, 100);
}

static void a_read_unlock_with_a_writer_and_a_reader_waiting_is_safe_and_wakes_both(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("rwlock: read unlock, writer and reader wait, last frees", 3, rw_setup, rw_check,
                 rw_first_reader, rw_then_writer, rw_then_reader);
    s.ctx = (void *)2;
    expect_clean(&s, 100);
}

static void rw_writer_dies_holding(void *ctx)
{
    (void)ctx;
    if (surelock_rwlock_wrlock(g.rw) != 0) surelock_testing_violation("wrlock failed");
    g.held = 1;
}

static void rw_after_death(bool write)
{
    surelock_testing_await(&g.held);
    int rc = write ? surelock_rwlock_wrlock(g.rw) : surelock_rwlock_rdlock(g.rw);
    if (rc == EOWNERDEAD) g.granted++;
    else if (rc != 0) surelock_testing_violation("%s returned %d", write ? "wrlock" : "rdlock", rc);
    if (write) critical_section("the rwlock (writing)");
    surelock_rwlock_unlock(g.rw);
}

static void rw_writer_after_death(void *ctx) { (void)ctx; rw_after_death(true); }
static void rw_reader_after_death(void *ctx) { (void)ctx; rw_after_death(false); }

static const char *rw_owner_death_check(void *ctx)
{
    if (g.granted != 1) return WRONG("%d threads were told the writer died (want 1)", g.granted);
    return rw_check(ctx);
}

static void one_acquirer_hears_that_the_writer_died_and_none_sleeps_forever(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("rwlock: writer dies holding, a writer and a reader wait", 3, rw_setup,
                 rw_owner_death_check, rw_writer_dies_holding, rw_writer_after_death,
                 rw_reader_after_death);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

static void rw_timed_writer(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    int rc = surelock_rwlock_timedwrlock(g.rw, 1000000000ull);
    if (rc == 0) {
        critical_section("the rwlock (writing)");
        surelock_rwlock_unlock(g.rw);
    } else if (rc != ETIMEDOUT) {
        surelock_testing_violation("timedwrlock returned %d", rc);
    }
    rw_leave();
}

static void a_writer_that_times_out_leaves_no_waiting_bit_to_block_readers(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("rwlock: read hold, timed writer, reader", 3, rw_setup, rw_check,
                 rw_first_reader_leaves, rw_timed_writer, rw_then_reader);
    s.ctx = (void *)3;
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* ---- cond ---------------------------------------------------------------------------------- */

static void cond_setup(void *ctx)
{
    (void)ctx;
    reset();
    surelock_mutex_new(&g.m);
    surelock_cond_new(&g.c);
}

static const char *cond_check(void *ctx)
{
    (void)ctx;
    if (!g.freed && surelock_cond_free(g.c) != 0)
        return WRONG("the cond is not freeable once nobody waits: %s", surelock_errmsg());
    if (surelock_mutex_free(g.m) != 0) return WRONG("the mutex is not free: %s", surelock_errmsg());
    return wrong;
}

/* Waits for `ready`; registers in `waiting` first (under the mutex), so a signaller that
 * takes the mutex and sees it knows the waiter is inside wait. The last waiter to leave frees
 * the cond at once when `frees` (pthreads allows destroying a cond nobody waits on). */
static void cond_waiter(bool timed, bool frees, int waiters)
{
    surelock_mutex_lock(g.m);
    if (++g.waiting == waiters) g.all_waiting = 1;
    bool timed_out = false;
    while (!g.ready && !timed_out) {
        int rc = timed ? surelock_cond_timedwait(g.c, g.m, 1000000000ull)
                       : surelock_cond_wait(g.c, g.m);
        if (rc == ETIMEDOUT) timed_out = true;
        else if (rc != 0) surelock_testing_violation("cond wait returned %d", rc);
    }
    surelock_mutex_unlock(g.m);
    if (frees && ++g.left == waiters) {
        int rc = surelock_cond_free(g.c);
        if (rc != 0) surelock_testing_violation("free by the last woken waiter: %s", surelock_errmsg());
        g.freed = true;
    }
}

static void cond_wait_body(void *ctx) { (void)ctx; cond_waiter(false, false, 1); }
static void cond_timedwait_body(void *ctx) { (void)ctx; cond_waiter(true, false, 1); }
static void cond_wait_then_free(void *ctx) { (void)ctx; cond_waiter(false, true, 1); }
static void cond_wait_then_free_of_two(void *ctx) { (void)ctx; cond_waiter(false, true, 2); }

static void cond_signaller(void *ctx)
{
    (void)ctx;
    surelock_mutex_lock(g.m);
    g.ready = 1;
    surelock_mutex_unlock(g.m);
    surelock_cond_signal(g.c);
}

/* Signals only once the waiters are inside wait (seen under the mutex), outside the mutex. */
static void cond_signal_when_waiting(bool broadcast)
{
    surelock_testing_await(&g.all_waiting); /* the last one registered, then waits */
    surelock_mutex_lock(g.m);              /* which it has released: all are inside wait */
    g.ready = 1;
    surelock_mutex_unlock(g.m);
    if (broadcast) surelock_cond_broadcast(g.c);
    else surelock_cond_signal(g.c);
}

static void cond_signal_late(void *ctx) { (void)ctx; cond_signal_when_waiting(false); }
static void cond_broadcast_late(void *ctx) { (void)ctx; cond_signal_when_waiting(true); }

static void a_signal_is_never_lost(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("cond: wait vs signal", 2, cond_setup, cond_check,
                                           cond_wait_body, cond_signaller);
    expect_clean(&s, 50);
}

static void a_timed_waiter_and_a_signal_leave_the_cond_freeable(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("cond: timedwait vs signal", 2, cond_setup,
                                           cond_check, cond_timedwait_body, cond_signaller);
    expect_clean(&s, 50);
}

static void signal_never_touches_a_cond_its_woken_waiter_freed(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("cond: signal vs woken waiter that frees", 2, cond_setup, cond_check,
                 cond_wait_then_free, cond_signal_late);
    expect_clean(&s, 20);
}

static void broadcast_never_touches_a_cond_its_woken_waiters_freed(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("cond: broadcast vs woken waiters, the last frees", 3, cond_setup, cond_check,
                 cond_wait_then_free_of_two, cond_broadcast_late, cond_wait_then_free_of_two);
    /* bound 3: the use-after-free on the current code needs three preemptions here */
    expect_clean(&s, 50);
}

/* ---- amutex / sem hand-off ----------------------------------------------------------------- */

static void am_setup(void *ctx)
{
    (void)ctx;
    reset();
    surelock_amutex_new(&g.am);
}

static const char *am_check(void *ctx)
{
    (void)ctx;
    if (!g.freed && surelock_amutex_free(g.am) != 0)
        return WRONG("the amutex is not freeable at the end: %s", surelock_errmsg());
    return wrong;
}

static void am_leave(int users)
{
    if (++g.left == users) {
        int rc = surelock_amutex_free(g.am);
        if (rc != 0) surelock_testing_violation("free by the last unlocker: %s", surelock_errmsg());
        g.freed = true;
    }
}

static void am_first_holder(void *ctx)
{
    (void)ctx;
    if (surelock_amutex_lock(g.am) != 0) surelock_testing_violation("amutex_lock failed");
    g.held = 1;
    critical_section("the amutex");
    surelock_amutex_unlock(g.am);
}

static void am_then_blocking_last_frees(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    if (surelock_amutex_lock(g.am) != 0) surelock_testing_violation("amutex_lock failed");
    critical_section("the amutex");
    surelock_amutex_unlock(g.am);
    am_leave(1);
}

static void an_amutex_handed_to_a_blocking_waiter_may_be_freed_by_it_at_once(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("amutex: unlock hands to a blocking waiter that frees", 2, am_setup, am_check,
                 am_first_holder, am_then_blocking_last_frees);
    expect_clean(&s, 50);
}

/* The callback runs on whichever thread grants (the unlocker) or on the caller at once. */
static void am_granted_then_free(void *ctx, int status)
{
    (void)ctx;
    if (status != 0) surelock_testing_violation("callback status %d", status);
    g.granted++;
    critical_section("the amutex");
    surelock_amutex_unlock(g.am);
    am_leave(1);
}

static void am_async_then_last_frees(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    int rc = surelock_amutex_lock_async(g.am, &g.w[0], am_granted_then_free, NULL);
    if (rc == 0) am_granted_then_free(NULL, 0);
    else if (rc != EINPROGRESS) surelock_testing_violation("lock_async returned %d", rc);
}

static const char *am_granted_once_check(void *ctx)
{
    if (g.granted != 1) return WRONG("callback ran %d times", g.granted);
    return am_check(ctx);
}

static void an_amutex_handed_to_a_callback_that_frees_it_is_never_touched_again(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("amutex: unlock hands to an async callback that frees", 2, am_setup,
                 am_granted_once_check, am_first_holder, am_async_then_last_frees);
    expect_clean(&s, 50);
}

static void am_count_grant(void *ctx, int status)
{
    (void)ctx;
    if (status == 0) {
        g.granted++;
        critical_section("the amutex");
        surelock_amutex_unlock(g.am);
    } else {
        g.canceled++;
    }
}

static void am_async_then_cancel(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    g.rc[1] = surelock_amutex_lock_async(g.am, &g.w[0], am_count_grant, NULL);
    if (g.rc[1] == 0) {
        am_count_grant(NULL, 0);
        return;
    }
    g.rc2[1] = surelock_amutex_cancel(g.am, &g.w[0]);
}

static const char *am_cancel_check(void *ctx)
{
    if (g.rc[1] == EINPROGRESS) {
        if (g.rc2[1] == 0 && (g.granted != 0 || g.canceled != 0))
            return WRONG("cancel returned 0, yet the callback ran (granted %d, canceled %d)",
                         g.granted, g.canceled);
        if (g.rc2[1] == EALREADY && g.granted != 1)
            return WRONG("cancel said granted, the callback ran %d times", g.granted);
        if (g.rc2[1] != 0 && g.rc2[1] != EALREADY)
            return WRONG("cancel returned %d", g.rc2[1]);
    } else if (g.rc[1] != 0) {
        return WRONG("lock_async returned %d", g.rc[1]);
    }
    return am_check(ctx);
}

static void cancel_and_grant_of_one_waiter_exclude_each_other(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("amutex: cancel vs grant", 2, am_setup, am_cancel_check, am_first_holder,
                 am_async_then_cancel);
    expect_clean(&s, 50);
}

static void sem_setup(void *ctx)
{
    (void)ctx;
    reset();
    surelock_sem_new(0, &g.s);
}

static void sem_record(void *ctx, int status)
{
    (void)ctx;
    if (status == 0) g.granted++;
    else if (status == ECANCELED) g.canceled++;
    else surelock_testing_violation("callback status %d", status);
}

static void sem_blocking_waiter(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_sem_acquire(g.s, 1);
}

static void sem_async_waiter(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_sem_acquire_async(g.s, 1, &g.w[0], sem_record, NULL);
    if (g.rc[0] == 0) g.granted++;
}

static void sem_releaser(void *ctx)
{
    (void)ctx;
    g.rc[1] = surelock_sem_release(g.s, 1);
}

static void sem_shutter(void *ctx)
{
    (void)ctx;
    g.rc[2] = surelock_sem_shutdown(g.s);
}

static const char *sem_shutdown_check(void *ctx)
{
    (void)ctx;
    if (g.rc[1] != 0 || g.rc[2] != 0) return WRONG("release %d, shutdown %d", g.rc[1], g.rc[2]);
    if (g.rc[0] == EINPROGRESS) { /* async: exactly one delivery */
        if (g.granted + g.canceled != 1)
            return WRONG("callback ran %d times", g.granted + g.canceled);
    } else if (g.rc[0] != 0 && g.rc[0] != ECANCELED) {
        return WRONG("acquire returned %d", g.rc[0]);
    }
    if (surelock_sem_free(g.s) != 0) return WRONG("sem not freeable: %s", surelock_errmsg());
    return wrong;
}

static void shutdown_and_grant_race_to_a_blocking_waiter_without_losing_it(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("sem: shutdown vs grant, blocking waiter", 3, sem_setup, sem_shutdown_check,
                 sem_blocking_waiter, sem_releaser, sem_shutter);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

static void shutdown_and_grant_race_to_an_async_waiter_that_hears_exactly_once(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("sem: shutdown vs grant, async waiter", 3, sem_setup, sem_shutdown_check,
                 sem_async_waiter, sem_releaser, sem_shutter);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* Takes one token, waiting for it (timed: may give up). */
static void cond_consumer(bool timed)
{
    surelock_mutex_lock(g.m);
    while (g.tokens == 0) {
        int rc = timed ? surelock_cond_timedwait(g.c, g.m, 1000000000ull)
                       : surelock_cond_wait(g.c, g.m);
        if (rc == ETIMEDOUT) break;
        if (rc != 0) surelock_testing_violation("cond wait returned %d", rc);
    }
    if (g.tokens > 0) {
        g.tokens--;
        g.consumed++;
    }
    surelock_mutex_unlock(g.m);
}

static void cond_timed_consumer(void *ctx) { (void)ctx; cond_consumer(true); }
static void cond_consumer_forever(void *ctx) { (void)ctx; cond_consumer(false); }

static void cond_two_token_producer(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 2; i++) {
        surelock_mutex_lock(g.m);
        g.tokens++;
        surelock_mutex_unlock(g.m);
        surelock_cond_signal(g.c);
    }
}

static const char *cond_tokens_check(void *ctx)
{
    if (g.tokens + g.consumed != 2) return WRONG("%d tokens left + %d consumed", g.tokens, g.consumed);
    if (g.consumed == 0) return WRONG("the waiting consumer took nothing");
    return cond_check(ctx);
}

/* A timed waiter that times out must not swallow the signal meant for the one that waits on:
 * the forever-consumer always gets a token (else the explorer sees it blocked forever). */
static void a_timed_out_waiter_never_swallows_a_signal_another_waiter_needs(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("cond: timed and untimed consumers, two signals", 3, cond_setup,
                 cond_tokens_check, cond_timed_consumer, cond_two_token_producer,
                 cond_consumer_forever);
    s.preemption_bound = 2; /* two timed waits: bound 3 runs ~450 000 schedules (~1 min) */
    expect_clean(&s, 100);
}

/* ---- lock groups over mutexes -------------------------------------------------------------- */

static void group_setup(void *ctx)
{
    (void)ctx;
    reset();
    surelock_mutex_new(&g.m);
    surelock_mutex_new(&g.m2);
    surelock_group_new(&g.grp[0]);
    surelock_group_new(&g.grp[1]);
    surelock_group_add_mutex(g.grp[0], g.m); /* added in opposite orders */
    surelock_group_add_mutex(g.grp[0], g.m2);
    surelock_group_add_mutex(g.grp[1], g.m2);
    surelock_group_add_mutex(g.grp[1], g.m);
}

static const char *group_check(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 3; i++)
        if (g.rc[i] != 0 && g.rc[i] != ETIMEDOUT) return WRONG("thread %d got %d", i + 1, g.rc[i]);
    if (surelock_group_free(g.grp[0]) != 0 || surelock_group_free(g.grp[1]) != 0)
        return WRONG("a group is not freeable at the end: %s", surelock_errmsg());
    if (surelock_mutex_free(g.m) != 0 || surelock_mutex_free(g.m2) != 0)
        return WRONG("a member is not freeable at the end: %s", surelock_errmsg());
    return wrong;
}

static void group_locker(int i, bool timed)
{
    surelock_group *grp = g.grp[i == 0 ? 0 : 1];
    g.rc[i] = timed ? surelock_group_timedlock(grp, 1000000000ull) : surelock_group_lock(grp);
    if (g.rc[i] != 0) return;
    critical_section("both members");
    surelock_group_unlock(grp);
}

static void group_locker_1(void *ctx) { (void)ctx; group_locker(0, false); }
static void group_locker_2(void *ctx) { (void)ctx; group_locker(1, false); }
static void group_timed_locker_2(void *ctx) { (void)ctx; group_locker(1, true); }

static void member_locker(void *ctx)
{
    (void)ctx;
    g.rc[2] = surelock_mutex_lock(g.m2);
    if (g.rc[2] != 0) return;
    critical_section("both members"); /* a group holder holds m2 too */
    surelock_mutex_unlock(g.m2);
}

static void groups_with_members_in_opposite_orders_never_deadlock(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("group: opposite orders and a member alone", 3, group_setup, group_check,
                 group_locker_1, group_locker_2, member_locker);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

static void a_group_that_times_out_backs_out_and_strands_nobody(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("group: lock vs timedlock vs a member", 3, group_setup, group_check,
                 group_locker_1, group_timed_locker_2, member_locker);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* ---- sem: timeouts and cancellation never strand permits ---------------------------------- */

static void sem_timed_taker(void *ctx)
{
    (void)ctx;
    int rc = surelock_sem_timedacquire(g.s, 1, 1000000000ull);
    if (rc == 0) g.granted++;
    else if (rc != ETIMEDOUT) surelock_testing_violation("timedacquire returned %d", rc);
}

static const char *sem_one_permit_check(void *ctx)
{
    (void)ctx;
    if (g.rc[1] != 0) return WRONG("release returned %d", g.rc[1]);
    uint64_t left = surelock_sem_available(g.s);
    if ((uint64_t)g.granted + left != 1)
        return WRONG("1 permit released, %d granted, %llu available", g.granted,
                     (unsigned long long)left);
    if (surelock_sem_free(g.s) != 0) return WRONG("sem not freeable: %s", surelock_errmsg());
    return wrong;
}

static void a_permit_released_while_timed_waiters_give_up_is_never_stranded(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("sem: two timed waiters and one release", 3, sem_setup, sem_one_permit_check,
                 sem_timed_taker, sem_releaser, sem_timed_taker);
    s.preemption_bound = 2; /* two timed waits: bound 3 runs ~450 000 schedules (~1 min) */
    expect_clean(&s, 100);
}

static void sem_big_then_cancel(void *ctx)
{
    (void)ctx;
    g.rc[0] = surelock_sem_acquire_async(g.s, 2, &g.w[0], sem_record, NULL);
    g.queued1 = 1;
    surelock_testing_await(&g.queued2);
    g.rc2[0] = surelock_sem_cancel(g.s, &g.w[0]);
}

static void sem_small_behind(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.queued1);
    g.rc[1] = surelock_sem_acquire_async(g.s, 1, &g.w[1], sem_record, NULL);
    g.queued2 = 1;
}

static void sem_release_one_when_queued(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.queued2);
    g.rc[2] = surelock_sem_release(g.s, 1);
}

static const char *sem_cancel_head_check(void *ctx)
{
    (void)ctx;
    if (g.rc[0] != EINPROGRESS || g.rc[1] != EINPROGRESS || g.rc[2] != 0)
        return WRONG("acquire_async %d and %d, release %d", g.rc[0], g.rc[1], g.rc[2]);
    if (g.rc2[0] != 0) return WRONG("cancel of the head returned %d", g.rc2[0]);
    if (g.granted != 1 || g.canceled != 0)
        return WRONG("the request behind the cancelled head: granted %d, cancelled %d", g.granted,
                     g.canceled);
    if (surelock_sem_available(g.s) != 0) return WRONG("a permit left over");
    if (surelock_sem_free(g.s) != 0) return WRONG("sem not freeable: %s", surelock_errmsg());
    return wrong;
}

static void cancelling_the_head_lets_the_request_behind_it_in_whatever_the_order(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("sem: cancel the head vs release, a small request behind", 3, sem_setup,
                 sem_cancel_head_check, sem_big_then_cancel, sem_small_behind,
                 sem_release_one_when_queued);
    s.preemption_bound = 2; /* three threads: bound 3 multiplies the schedules by ~8 */
    expect_clean(&s, 100);
}

/* ---- the explorer itself: a broken protocol must fail ------------------------------------- */

/* A "lock" that checks, then sets, in two steps: two threads can both get in. */
static volatile int toy_word;
static void toy_setup(void *ctx)
{
    (void)ctx;
    reset();
    toy_word = 0;
}
static void toy_locker(void *ctx)
{
    (void)ctx;
    SURELOCK_TESTING_STEP(&toy_word);
    if (toy_word != 0) return; /* a try-lock that failed */
    SURELOCK_TESTING_STEP(&toy_word);
    toy_word = 1;
    critical_section("the test-then-set lock");
    toy_word = 0;
}

static void the_explorer_finds_two_holders_of_a_test_then_set_lock(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("explorer: test-then-set", 2, toy_setup, NULL, toy_locker, toy_locker);
    expect_violation(&s, "two holders");
}

static void never_raised(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.ready);
}

static void the_explorer_reports_threads_that_all_block(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("explorer: nobody wakes", 1, toy_setup, NULL, never_raised);
    expect_violation(&s, "every live thread is blocked");
}

static void frees_the_mutex(void *ctx)
{
    (void)ctx;
    surelock_mutex_free(g.m);
    g.held = 1;
}

static void locks_the_freed_mutex(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&g.held);
    surelock_mutex_trylock(g.m); /* on freed memory: the explorer stops it at the first step */
}

static void the_explorer_reports_a_step_on_freed_memory(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("explorer: use after free", 2, mutex_setup, NULL,
                                           frees_the_mutex, locks_the_freed_mutex);
    expect_violation(&s, "that T1 freed");
}

static const char *always_wrong(void *ctx)
{
    (void)ctx;
    surelock_mutex_free(g.m);
    return "check says no";
}

static void the_explorer_reports_what_check_rejects(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        SCENARIO("explorer: check rejects", 2, mutex_setup, always_wrong, mutex_once, mutex_once);
    expect_violation(&s, "check says no");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest mutex_tests[] = {
        TEST(two_threads_never_hold_a_mutex_at_once_and_none_sleeps_forever),
        TEST(a_timed_out_mutex_waiter_strands_nobody),
        TEST(the_last_unlocker_may_free_the_mutex_at_once),
        TEST(an_unlock_out_of_order_touches_only_locks_still_held_after_its_release),
        TEST(one_waiter_hears_that_the_mutex_owner_died_and_none_sleeps_forever),
        TEST(groups_with_members_in_opposite_orders_never_deadlock),
        TEST(a_group_that_times_out_backs_out_and_strands_nobody),
    };
    const struct CMUnitTest rwlock_tests[] = {
        TEST(a_read_unlock_never_touches_an_rwlock_a_writer_then_freed),
        TEST(a_write_unlock_never_touches_an_rwlock_the_last_user_freed),
        TEST(a_read_unlock_with_a_writer_and_a_reader_waiting_is_safe_and_wakes_both),
        TEST(a_writer_that_times_out_leaves_no_waiting_bit_to_block_readers),
        TEST(one_acquirer_hears_that_the_writer_died_and_none_sleeps_forever),
    };
    const struct CMUnitTest cond_tests[] = {
        TEST(a_signal_is_never_lost),
        TEST(a_timed_waiter_and_a_signal_leave_the_cond_freeable),
        TEST(signal_never_touches_a_cond_its_woken_waiter_freed),
        TEST(broadcast_never_touches_a_cond_its_woken_waiters_freed),
        TEST(a_timed_out_waiter_never_swallows_a_signal_another_waiter_needs),
    };
    const struct CMUnitTest sem_tests[] = {
        TEST(an_amutex_handed_to_a_blocking_waiter_may_be_freed_by_it_at_once),
        TEST(an_amutex_handed_to_a_callback_that_frees_it_is_never_touched_again),
        TEST(cancel_and_grant_of_one_waiter_exclude_each_other),
        TEST(shutdown_and_grant_race_to_a_blocking_waiter_without_losing_it),
        TEST(shutdown_and_grant_race_to_an_async_waiter_that_hears_exactly_once),
        TEST(a_permit_released_while_timed_waiters_give_up_is_never_stranded),
        TEST(cancelling_the_head_lets_the_request_behind_it_in_whatever_the_order),
    };
    const struct CMUnitTest explorer_tests[] = {
        TEST(the_explorer_finds_two_holders_of_a_test_then_set_lock),
        TEST(the_explorer_reports_threads_that_all_block),
        TEST(the_explorer_reports_a_step_on_freed_memory),
        TEST(the_explorer_reports_what_check_rejects),
    };
    const char *only = argc > 1 ? argv[1] : NULL;
    int failed = 0;
#define GROUP(name, tests)                                                                     \
    if (only == NULL || strcmp(only, name) == 0)                                               \
        failed += cmocka_run_group_tests_name("interleave_" name, tests, watchdog_start,       \
                                              watchdog_stop);
    GROUP("explorer", explorer_tests)
    GROUP("mutex", mutex_tests)
    GROUP("rwlock", rwlock_tests)
    GROUP("cond", cond_tests)
    GROUP("sem", sem_tests)
    if (only == NULL || strcmp(only, "ipc") == 0) failed += run_interleave_ipc_group();
    return failed;
}
