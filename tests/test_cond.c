/*
 * test_cond.c — the condition variable over surelock_mutex (API.md section 2) through the
 * public header only, against the real shared libsurelock.so.1. Helpers and rules:
 * support/bounded.h.
 *
 * "A waiter is inside wait": a waiter takes the mutex, counts itself in `registered` and calls
 * wait, which releases the mutex only once it is a waiter. So when the test holds the mutex and
 * sees `registered == n`, all n are inside wait: a signal now is theirs.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <surelock.h>

#include "support/bounded.h"

static agent agent_a, agent_b;

static int do_lock(void *m) { return surelock_mutex_lock(m); }
static int do_trylock(void *m) { return surelock_mutex_trylock(m); }
static int do_unlock(void *m) { return surelock_mutex_unlock(m); }

static surelock_cond *new_cond(void)
{
    surelock_cond *c = NULL;
    EXPECT_RC(surelock_cond_new(&c), 0);
    assert_non_null(c);
    return c;
}

/* ---- waiters: threads that wait on a cond until a predicate holds -------------------------- */

#define MAX_WAITERS 4

static struct waiters {
    surelock_cond *c;
    surelock_mutex *m;
    helper threads[MAX_WAITERS];
    int n;
    /* under m */
    int registered;
    int tokens;   /* each waiter leaves with one token */
    bool go;      /* or all leave once go is set */
    int woken;
    /* what each saw */
    int bad_rc[MAX_WAITERS];
    char bad_msg[MAX_WAITERS][ERRMSG_SIZE];
    int lock_rc[MAX_WAITERS], unlock_rc[MAX_WAITERS];
    int id[MAX_WAITERS];
    bool timed; /* wait with timedwait(FOREVER) instead of wait */
} waiters;

static void waiter_body(void *arg)
{
    int id = *(int *)arg;
    struct waiters *w = &waiters;
    w->lock_rc[id] = surelock_mutex_lock(w->m);
    if (w->lock_rc[id] != 0) return;
    w->registered++;
    while (!w->go && w->tokens == 0) {
        int rc = w->timed ? surelock_cond_timedwait(w->c, w->m, SURELOCK_FOREVER)
                          : surelock_cond_wait(w->c, w->m);
        if (rc != 0) {
            w->bad_rc[id] = rc;
            save_errmsg(w->bad_msg[id]);
            if (rc != EOWNERDEAD) return; /* the mutex is not held on other errors */
        }
    }
    if (!w->go) w->tokens--;
    w->woken++;
    w->unlock_rc[id] = surelock_mutex_unlock(w->m);
}

static void waiters_start(int n, bool timed)
{
    struct waiters *w = &waiters;
    memset(w, 0, sizeof *w);
    w->c = new_cond();
    w->m = new_mutex();
    w->n = n;
    w->timed = timed;
    for (int i = 0; i < n; i++) {
        w->id[i] = i;
        helper_start(&w->threads[i], waiter_body, &w->id[i]);
    }
}

/* Returns with the mutex held once `n` waiters are inside wait (fails after WAIT_LIMIT_MS). */
static void lock_when_waiting(int n)
{
    struct waiters *w = &waiters;
    uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    for (;;) {
        EXPECT_RC(surelock_mutex_lock(w->m), 0);
        if (w->registered >= n) return;
        EXPECT_RC(surelock_mutex_unlock(w->m), 0);
        if (now_ns() > end)
            fail_msg("%d waiters did not start waiting within %d ms", n, WAIT_LIMIT_MS);
        sleep_ms(1);
    }
}

static void waiters_join(void)
{
    struct waiters *w = &waiters;
    for (int i = 0; i < w->n; i++) JOIN(&w->threads[i]);
    for (int i = 0; i < w->n; i++) {
        EXPECT_RC(w->lock_rc[i], 0);
        EXPECT_SAVED_RC(w->bad_rc[i], 0, w->bad_msg[i]);
        EXPECT_RC(w->unlock_rc[i], 0);
    }
    assert_int_equal(w->woken, w->n);
    EXPECT_RC(surelock_cond_free(w->c), 0);
    EXPECT_RC(surelock_mutex_free(w->m), 0);
}

/* ================================================================================================
 * Arguments
 * ============================================================================================== */

static void null_handles_and_out_pointers_are_einval(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    surelock_mutex *m = new_mutex();
    EXPECT_RC(surelock_mutex_lock(m), 0);
    EXPECT_RC(surelock_cond_new(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_cond_free(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_cond_wait(NULL, m), EINVAL);
    EXPECT_ERRMSG("condition is NULL");
    EXPECT_RC(surelock_cond_wait(c, NULL), EINVAL);
    EXPECT_ERRMSG("mutex is NULL");
    EXPECT_RC(surelock_cond_timedwait(NULL, m, 0), EINVAL);
    EXPECT_ERRMSG("condition is NULL");
    EXPECT_RC(surelock_cond_timedwait(c, NULL, SURELOCK_FOREVER), EINVAL);
    EXPECT_ERRMSG("mutex is NULL");
    EXPECT_RC(surelock_cond_signal(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_cond_broadcast(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    /* the mutex is still held by this thread, untouched by the failed waits */
    EXPECT_RC(surelock_mutex_lock(m), EDEADLK);
    EXPECT_RC(surelock_mutex_unlock(m), 0);
    EXPECT_RC(surelock_cond_free(c), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

static void signal_and_broadcast_without_waiters_are_fine_and_not_remembered(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    surelock_mutex *m = new_mutex();
    for (int i = 0; i < 3; i++) {
        EXPECT_RC(surelock_cond_signal(c), 0);
        EXPECT_RC(surelock_cond_broadcast(c), 0);
    }
    /* a later wait does not consume them: it times out (a spurious 0 is allowed, so retry) */
    EXPECT_RC(surelock_mutex_lock(m), 0);
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) rc = surelock_cond_timedwait(c, m, 20 * MS);
    EXPECT_RC(rc, ETIMEDOUT);
    EXPECT_RC(surelock_mutex_unlock(m), 0);
    EXPECT_RC(surelock_cond_free(c), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

/* ================================================================================================
 * Errors
 * ============================================================================================== */

static void wait_without_holding_the_mutex_is_eperm(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    surelock_mutex *m = new_mutex();
    /* nobody holds it */
    EXPECT_RC(surelock_cond_wait(c, m), EPERM);
    EXPECT_ERRMSG("does not hold");
    EXPECT_RC(surelock_cond_timedwait(c, m, 10 * MS), EPERM);
    EXPECT_ERRMSG("does not hold");
    EXPECT_RC(surelock_cond_timedwait(c, m, 0), EPERM);
    EXPECT_ERRMSG("does not hold");
    /* another thread holds it: EPERM, and its hold is untouched */
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_lock, m), 0);
    uint64_t t0 = now_ns();
    EXPECT_RC(surelock_cond_wait(c, m), EPERM);
    EXPECT_ERRMSG("does not hold");
    EXPECT_RC(surelock_cond_timedwait(c, m, 5000 * MS), EPERM);
    EXPECT_ERRMSG("does not hold");
    assert_true(now_ns() - t0 < 4000 * MS); /* at once */
    EXPECT_RC(surelock_mutex_trylock(m), EBUSY);
    EXPECT_RC(agent_call(&agent_a, do_unlock, m), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_cond_free(c), 0); /* the failed waits left no waiter behind */
    EXPECT_RC(surelock_mutex_free(m), 0);
}

static void timedwait_times_out_with_the_mutex_held_again(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    surelock_mutex *m = new_mutex();
    agent_start(&agent_a);
    EXPECT_RC(surelock_mutex_lock(m), 0);
    const uint64_t timeouts[] = {0, 1 * MS, 50 * MS};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        uint64_t t0 = now_ns();
        int rc;
        do rc = surelock_cond_timedwait(c, m, timeouts[i]); /* 0 would be a spurious wake-up */
        while (rc == 0 && now_ns() - t0 < timeouts[i]);
        uint64_t elapsed = now_ns() - t0;
        EXPECT_RC(rc, ETIMEDOUT);
        EXPECT_ERRMSG("not signalled", "timed out");
        EXPECT_WAITED_AT_LEAST(elapsed, timeouts[i]);
        /* held again: by this thread, not by another */
        EXPECT_RC(agent_call(&agent_a, do_trylock, m), EBUSY);
        EXPECT_RC(surelock_mutex_trylock(m), EDEADLK);
    }
    EXPECT_RC(surelock_mutex_unlock(m), 0);
    EXPECT_RC(agent_call(&agent_a, do_trylock, m), 0);
    EXPECT_RC(agent_call(&agent_a, do_unlock, m), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_cond_free(c), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

/* While the test's timedwait has released the mutex, another thread takes it and keeps it
 * well past the timeout: the timedwait returns ETIMEDOUT only once it holds the mutex again. */
static atomic_int releasing;
static surelock_mutex *hog_mutex;
static int hog_mutex_for_150ms(void *arg)
{
    (void)arg;
    int rc = surelock_mutex_lock(hog_mutex);
    if (rc != 0) return rc;
    sleep_ms(150);
    atomic_store(&releasing, 1);
    return surelock_mutex_unlock(hog_mutex);
}

static void timedwait_returns_only_after_retaking_a_mutex_another_thread_held_past_the_timeout(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    hog_mutex = new_mutex();
    atomic_store(&releasing, 0);
    agent_start(&agent_a);
    EXPECT_RC(surelock_mutex_lock(hog_mutex), 0);
    agent_post(&agent_a, hog_mutex_for_150ms, NULL); /* blocks until our wait releases it */
    uint64_t t0 = now_ns();
    int rc;
    do rc = surelock_cond_timedwait(c, hog_mutex, 20 * MS);
    while (rc == 0 && !atomic_load(&releasing)); /* spurious wake-ups */
    uint64_t elapsed = now_ns() - t0;
    bool agent_had_released = atomic_load(&releasing);
    int agent_rc = agent_wait(&agent_a);
    EXPECT_RC(rc, ETIMEDOUT);
    EXPECT_RC(agent_rc, 0);
    assert_true(agent_had_released);   /* we got it back only after the agent let go */
    EXPECT_WAITED_AT_LEAST(elapsed, 150 * MS);
    EXPECT_RC(agent_call(&agent_a, do_trylock, hog_mutex), EBUSY); /* ours now */
    EXPECT_RC(surelock_mutex_unlock(hog_mutex), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_cond_free(c), 0);
    EXPECT_RC(surelock_mutex_free(hog_mutex), 0);
}

/* ================================================================================================
 * Waking
 * ============================================================================================== */

static void signal_wakes_a_waiter_and_each_further_signal_another(void **state)
{
    (void)state;
    for (int timed = 0; timed < 2; timed++) {
        waiters_start(2, timed);
        lock_when_waiting(2);
        waiters.tokens = 1;
        EXPECT_RC(surelock_cond_signal(waiters.c), 0);
        EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
        /* one of them takes the token and leaves */
        uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
        int woken = 0;
        while (woken < 1 && now_ns() < end) {
            EXPECT_RC(surelock_mutex_lock(waiters.m), 0);
            woken = waiters.woken;
            EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
            if (woken < 1) sleep_ms(1);
        }
        assert_int_equal(woken, 1);
        EXPECT_RC(surelock_mutex_lock(waiters.m), 0);
        waiters.tokens = 1;
        EXPECT_RC(surelock_cond_signal(waiters.c), 0);
        EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
        waiters_join();
    }
}

static void broadcast_wakes_every_waiter(void **state)
{
    (void)state;
    for (int timed = 0; timed < 2; timed++) {
        waiters_start(MAX_WAITERS, timed);
        lock_when_waiting(MAX_WAITERS);
        waiters.go = true;
        EXPECT_RC(surelock_cond_broadcast(waiters.c), 0); /* once: nothing else wakes them */
        EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
        waiters_join();
    }
}

static void free_with_waiters_is_ebusy_and_frees_nothing(void **state)
{
    (void)state;
    waiters_start(2, false);
    lock_when_waiting(2);
    EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
    EXPECT_RC(surelock_cond_free(waiters.c), EBUSY);
    EXPECT_ERRMSG("wait");
    /* still a working condition variable */
    EXPECT_RC(surelock_mutex_lock(waiters.m), 0);
    waiters.go = true;
    EXPECT_RC(surelock_cond_broadcast(waiters.c), 0);
    EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
    waiters_join(); /* frees it, now with no waiters */
}

static void wait_reports_eownerdead_when_the_mutex_owner_died_while_it_waited(void **state)
{
    (void)state;
    waiters_start(1, false);
    lock_when_waiting(1);
    EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
    /* another thread takes the mutex, signals, and exits holding it */
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_lock, waiters.m), 0);
    waiters.go = true;
    EXPECT_RC(surelock_cond_signal(waiters.c), 0);
    agent_stop(&agent_a);
    JOIN(&waiters.threads[0]);
    EXPECT_RC(waiters.lock_rc[0], 0);
    EXPECT_SAVED_RC(waiters.bad_rc[0], EOWNERDEAD, waiters.bad_msg[0]); /* and it held the mutex: */
    EXPECT_RC(waiters.unlock_rc[0], 0);
    assert_int_equal(waiters.woken, 1);
    EXPECT_RC(surelock_mutex_lock(waiters.m), 0); /* reported once */
    EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
    EXPECT_RC(surelock_cond_free(waiters.c), 0);
    EXPECT_RC(surelock_mutex_free(waiters.m), 0);
}

static int lock_signal_unlock(void *arg)
{
    struct waiters *w = arg;
    int rc = surelock_mutex_lock(w->m);
    if (rc != 0) return rc;
    w->tokens = 1;
    rc = surelock_cond_signal(w->c);
    int u = surelock_mutex_unlock(w->m);
    return rc != 0 ? rc : u;
}

static void a_cond_may_be_used_with_different_mutexes_one_at_a_time(void **state)
{
    (void)state;
    surelock_cond *c = new_cond();
    surelock_mutex *m1 = new_mutex(), *m2 = new_mutex();
    surelock_mutex *ms[2] = {m1, m2};
    for (int i = 0; i < 2; i++) {
        EXPECT_RC(surelock_mutex_lock(ms[i]), 0);
        int rc, tries = 0;
        do rc = surelock_cond_timedwait(c, ms[i], 1 * MS); /* 0: a spurious wake-up */
        while (rc == 0 && ++tries < 100);
        EXPECT_RC(rc, ETIMEDOUT);
        EXPECT_RC(surelock_mutex_unlock(ms[i]), 0);
    }
    EXPECT_RC(surelock_cond_free(c), 0);
    EXPECT_RC(surelock_mutex_free(m1), 0);
    EXPECT_RC(surelock_mutex_free(m2), 0);

    /* and a signalled wait works with the second one */
    waiters_start(1, true);
    lock_when_waiting(1);
    EXPECT_RC(surelock_mutex_unlock(waiters.m), 0);
    agent_start(&agent_b);
    EXPECT_RC(agent_call(&agent_b, lock_signal_unlock, &waiters), 0);
    agent_stop(&agent_b);
    waiters_join();
}

/* ================================================================================================
 * Producer / consumer
 * ============================================================================================== */

#define PC_PRODUCERS 2
#define PC_CONSUMERS 2
#define PC_ITEMS_EACH 20000
#define PC_TOTAL (PC_PRODUCERS * PC_ITEMS_EACH)
#define PC_SLOTS 8

static struct pc_run {
    surelock_mutex *m;
    surelock_cond *not_empty, *not_full;
    gate start;
    helper threads[PC_PRODUCERS + PC_CONSUMERS];
    int id[PC_PRODUCERS + PC_CONSUMERS];
    /* under m */
    int buf[PC_SLOTS];
    int head, count;
    int produced, consumed;
    /* written by the consumer that took the item, under m */
    unsigned char seen[PC_TOTAL];
    long per_consumer[PC_CONSUMERS];
    int bad_rc[PC_PRODUCERS + PC_CONSUMERS];
    char bad_msg[PC_PRODUCERS + PC_CONSUMERS][ERRMSG_SIZE];
} pc;

static void pc_producer(int id)
{
    for (int i = 0; i < PC_ITEMS_EACH; i++) {
        int rc = surelock_mutex_lock(pc.m);
        if (rc != 0) {
            pc.bad_rc[id] = rc;
            save_errmsg(pc.bad_msg[id]);
            return;
        }
        while (pc.count == PC_SLOTS) {
            /* both wait forms: timedwait with a bound that only a broken library reaches */
            rc = (i & 1) ? surelock_cond_wait(pc.not_full, pc.m)
                         : surelock_cond_timedwait(pc.not_full, pc.m, (uint64_t)WAIT_LIMIT_MS * MS);
            if (rc != 0) {
                pc.bad_rc[id] = rc;
                save_errmsg(pc.bad_msg[id]);
                surelock_mutex_unlock(pc.m);
                return;
            }
        }
        pc.buf[(pc.head + pc.count) % PC_SLOTS] = id * PC_ITEMS_EACH + i;
        pc.count++;
        pc.produced++;
        rc = surelock_cond_signal(pc.not_empty);
        int u = surelock_mutex_unlock(pc.m);
        if (rc != 0 || u != 0) {
            pc.bad_rc[id] = rc != 0 ? rc : 1000 + u;
            save_errmsg(pc.bad_msg[id]);
            return;
        }
    }
}

static void pc_consumer(int id)
{
    int me = id - PC_PRODUCERS;
    for (;;) {
        int rc = surelock_mutex_lock(pc.m);
        if (rc != 0) {
            pc.bad_rc[id] = rc;
            save_errmsg(pc.bad_msg[id]);
            return;
        }
        while (pc.count == 0 && pc.consumed < PC_TOTAL) {
            rc = (pc.consumed & 1) ? surelock_cond_wait(pc.not_empty, pc.m)
                                   : surelock_cond_timedwait(pc.not_empty, pc.m,
                                                             (uint64_t)WAIT_LIMIT_MS * MS);
            if (rc != 0) {
                pc.bad_rc[id] = rc;
                save_errmsg(pc.bad_msg[id]);
                surelock_mutex_unlock(pc.m);
                return;
            }
        }
        if (pc.count == 0) { /* everything consumed: wake the other consumer and leave */
            surelock_cond_broadcast(pc.not_empty);
            surelock_mutex_unlock(pc.m);
            return;
        }
        int item = pc.buf[pc.head];
        pc.head = (pc.head + 1) % PC_SLOTS;
        pc.count--;
        pc.consumed++;
        if (item >= 0 && item < PC_TOTAL && pc.seen[item] < 255) pc.seen[item]++;
        pc.per_consumer[me]++;
        if (pc.consumed == PC_TOTAL) surelock_cond_broadcast(pc.not_empty);
        rc = surelock_cond_signal(pc.not_full);
        int u = surelock_mutex_unlock(pc.m);
        if (rc != 0 || u != 0) {
            pc.bad_rc[id] = rc != 0 ? rc : 1000 + u;
            save_errmsg(pc.bad_msg[id]);
            return;
        }
    }
}

static void pc_body(void *arg)
{
    int id = *(int *)arg;
    if (!gate_pass(&pc.start)) return;
    if (id < PC_PRODUCERS) pc_producer(id);
    else pc_consumer(id);
}

static void two_producers_and_two_consumers_pass_every_item_exactly_once(void **state)
{
    (void)state;
    memset(&pc, 0, sizeof pc);
    pc.m = new_mutex();
    pc.not_empty = new_cond();
    pc.not_full = new_cond();
    gate_init(&pc.start);
    for (int i = 0; i < PC_PRODUCERS + PC_CONSUMERS; i++) {
        pc.id[i] = i;
        helper_start(&pc.threads[i], pc_body, &pc.id[i]);
    }
    gate_open(&pc.start, PC_PRODUCERS + PC_CONSUMERS);
    for (int i = 0; i < PC_PRODUCERS + PC_CONSUMERS; i++) JOIN(&pc.threads[i]);
    gate_destroy(&pc.start);
    for (int i = 0; i < PC_PRODUCERS + PC_CONSUMERS; i++)
        EXPECT_SAVED_RC(pc.bad_rc[i], 0, pc.bad_msg[i]);
    assert_int_equal(pc.produced, PC_TOTAL);
    assert_int_equal(pc.consumed, PC_TOTAL);
    assert_int_equal(pc.count, 0);
    assert_int_equal(pc.per_consumer[0] + pc.per_consumer[1], PC_TOTAL);
    for (int i = 0; i < PC_TOTAL; i++)
        if (pc.seen[i] != 1) fail_msg("item %d was consumed %d times", i, pc.seen[i]);
    EXPECT_RC(surelock_cond_free(pc.not_empty), 0);
    EXPECT_RC(surelock_cond_free(pc.not_full), 0);
    EXPECT_RC(surelock_mutex_free(pc.m), 0);
}

/* ============================================================================================== */

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(null_handles_and_out_pointers_are_einval),
        TEST(signal_and_broadcast_without_waiters_are_fine_and_not_remembered),
        TEST(wait_without_holding_the_mutex_is_eperm),
        TEST(timedwait_times_out_with_the_mutex_held_again),
        TEST(timedwait_returns_only_after_retaking_a_mutex_another_thread_held_past_the_timeout),
        TEST(signal_wakes_a_waiter_and_each_further_signal_another),
        TEST(broadcast_wakes_every_waiter),
        TEST(free_with_waiters_is_ebusy_and_frees_nothing),
        TEST(wait_reports_eownerdead_when_the_mutex_owner_died_while_it_waited),
        TEST(a_cond_may_be_used_with_different_mutexes_one_at_a_time),
        TEST(two_producers_and_two_consumers_pass_every_item_exactly_once),
    };
    return cmocka_run_group_tests_name("cond", tests, watchdog_start, watchdog_stop);
}
