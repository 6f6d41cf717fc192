/*
 * test_rwlock.c — the writer-preferring reader-writer lock (API.md section 2) through the
 * public header, against the internal build (the same sources with the test hooks of
 * src/sys/testing.h, used by the "last unlocker frees" tests only). Helpers and rules:
 * support/bounded.h.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surelock.h>

#include "sys/testing.h" /* the release hook: this test links the internal build */
#include "support/bounded.h"

/* ---- calls an agent makes ------------------------------------------------------------------ */

static int do_rdlock(void *l) { return surelock_rwlock_rdlock(l); }
static int do_tryrdlock(void *l) { return surelock_rwlock_tryrdlock(l); }
static int do_wrlock(void *l) { return surelock_rwlock_wrlock(l); }
static int do_unlock(void *l) { return surelock_rwlock_unlock(l); }

/* trywrlock and, when that worked, unlock again: "is it entirely free?" */
static int do_probe_free(void *l)
{
    int rc = surelock_rwlock_trywrlock(l);
    if (rc == 0 || rc == EOWNERDEAD) {
        int u = surelock_rwlock_unlock(l);
        if (u != 0) return 1000 + u;
    }
    return rc;
}

/* Raises `entering`, then blocks in wrlock or rdlock: once the raise is seen and the thread
 * sleeps, it sleeps inside the lock call. */
static flag entering_w, entering_r;
static int announce_then_wrlock(void *l)
{
    flag_raise(&entering_w);
    return surelock_rwlock_wrlock(l);
}
static int announce_then_rdlock(void *l)
{
    flag_raise(&entering_r);
    return surelock_rwlock_rdlock(l);
}

static agent agent_a, agent_b, agent_c;

/* Starts agent `a` and has it block in wrlock (or rdlock) on l; returns once it sleeps there. */
static void start_blocked(agent *a, surelock_rwlock *l, bool writer)
{
    flag *f = writer ? &entering_w : &entering_r;
    flag_init(f);
    agent_start(a);
    agent_post(a, writer ? announce_then_wrlock : announce_then_rdlock, l);
    if (!flag_wait(f, 1, WAIT_LIMIT_MS)) fail_msg("the agent did not start its lock call");
    wait_until_asleep(a->tid, ASLEEP_LIMIT_MS);
    if (agent_done(a))
        fail_msg("the %s did not wait: it returned %s", writer ? "writer" : "reader",
                 errname(a->rc));
}

/* ================================================================================================
 * Arguments and basics
 * ============================================================================================== */

static void null_handles_and_out_pointers_are_einval(void **state)
{
    (void)state;
    EXPECT_RC(surelock_rwlock_new(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_free(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_rdlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_tryrdlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_timedrdlock(NULL, 0), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_wrlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_trywrlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_timedwrlock(NULL, SURELOCK_FOREVER), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_rwlock_unlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
}

static void new_rwlock_is_usable_in_both_modes_by_every_acquire_form_and_freeable(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    EXPECT_RC(surelock_rwlock_rdlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_timedrdlock(l, 0), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_timedrdlock(l, SURELOCK_FOREVER), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_wrlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_trywrlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 0), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 50 * MS), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/* ================================================================================================
 * Error checking
 * ============================================================================================== */

typedef int (*acquire_form)(surelock_rwlock *l);
static int form_rdlock(surelock_rwlock *l)
{
    return surelock_rwlock_rdlock(l);
}
static int form_tryrdlock(surelock_rwlock *l)
{
    return surelock_rwlock_tryrdlock(l);
}
static int form_timedrdlock_0(surelock_rwlock *l)
{
    return surelock_rwlock_timedrdlock(l, 0);
}
static int form_timedrdlock_long(surelock_rwlock *l)
{
    return surelock_rwlock_timedrdlock(l, 5000 * MS);
}
static int form_timedrdlock_forever(surelock_rwlock *l)
{
    return surelock_rwlock_timedrdlock(l, SURELOCK_FOREVER);
}
static int form_wrlock(surelock_rwlock *l)
{
    return surelock_rwlock_wrlock(l);
}
static int form_trywrlock(surelock_rwlock *l)
{
    return surelock_rwlock_trywrlock(l);
}
static int form_timedwrlock_0(surelock_rwlock *l)
{
    return surelock_rwlock_timedwrlock(l, 0);
}
static int form_timedwrlock_long(surelock_rwlock *l)
{
    return surelock_rwlock_timedwrlock(l, 5000 * MS);
}
static int form_timedwrlock_forever(surelock_rwlock *l)
{
    return surelock_rwlock_timedwrlock(l, SURELOCK_FOREVER);
}

static const struct {
    const char *name;
    acquire_form fn;
} forms[] = {
    {"rdlock", form_rdlock},
    {"tryrdlock", form_tryrdlock},
    {"timedrdlock(0)", form_timedrdlock_0},
    {"timedrdlock(5 s)", form_timedrdlock_long},
    {"timedrdlock(FOREVER)", form_timedrdlock_forever},
    {"wrlock", form_wrlock},
    {"trywrlock", form_trywrlock},
    {"timedwrlock(0)", form_timedwrlock_0},
    {"timedwrlock(5 s)", form_timedwrlock_long},
    {"timedwrlock(FOREVER)", form_timedwrlock_forever},
};
#define N_FORMS (sizeof forms / sizeof forms[0])

static void reacquire_by_a_holder_in_either_mode_is_edeadlk_for_every_acquire_form(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    for (int held_mode = 0; held_mode < 2; held_mode++) { /* 0: read, 1: write */
        for (size_t i = 0; i < N_FORMS; i++) {
            /* another reader holding too must not change the answer */
            if (held_mode == 0) EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
            EXPECT_RC(held_mode ? surelock_rwlock_wrlock(l) : surelock_rwlock_rdlock(l), 0);
            uint64_t t0 = now_ns();
            int rc = forms[i].fn(l);
            uint64_t elapsed = now_ns() - t0;
            if (rc != EDEADLK)
                fail_msg("holding it for %s, %s returned %s, expected EDEADLK; errmsg \"%s\"",
                         held_mode ? "writing" : "reading", forms[i].name, errname(rc),
                         surelock_errmsg());
            EXPECT_ERRMSG("already holds");
            EXPECT_ERRMSG(held_mode ? "writing" : "reading");
            assert_true(elapsed < 4000 * MS); /* at once, not after a timeout */
            /* the hold is unchanged: one unlock releases it, a second is EPERM */
            EXPECT_RC(surelock_rwlock_unlock(l), 0);
            EXPECT_RC(surelock_rwlock_unlock(l), EPERM);
            if (held_mode == 0) EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
            EXPECT_RC(agent_call(&agent_a, do_probe_free, l), 0);
        }
    }
    agent_stop(&agent_a);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

static void unlock_without_a_hold_is_eperm_and_changes_nobody_elses_hold(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    /* a thread that has never locked anything */
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), EPERM);
    EXPECT_TEXT(agent_a.errmsg, "holds no lock", "does not hold");
    EXPECT_RC(surelock_rwlock_unlock(l), EPERM);
    EXPECT_ERRMSG("holds no lock", "does not hold");

    /* write-held by this thread: the agent's unlock is EPERM, the hold stays */
    EXPECT_RC(surelock_rwlock_wrlock(l), 0);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), EPERM);
    EXPECT_TEXT(agent_a.errmsg, "holds no lock", "does not hold");
    EXPECT_RC(agent_call(&agent_a, do_tryrdlock, l), EBUSY);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);

    /* read-held by the agent: this thread's unlock is EPERM and does not drop the agent's
     * reader count (a writer still cannot get in) */
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), EPERM);
    EXPECT_ERRMSG("holds no lock", "does not hold");
    EXPECT_RC(surelock_rwlock_trywrlock(l), EBUSY);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), EPERM);
    EXPECT_RC(surelock_rwlock_trywrlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

static void tryrdlock_is_ebusy_while_a_writer_holds_it(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_wrlock, l), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), EBUSY);
    EXPECT_ERRMSG("writer");
    EXPECT_RC(surelock_rwlock_trywrlock(l), EBUSY);
    EXPECT_ERRMSG("held by another thread");
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

static void trywrlock_is_ebusy_while_readers_hold_it(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    agent_start(&agent_b);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(agent_call(&agent_b, do_tryrdlock, l), 0); /* readers share */
    EXPECT_RC(surelock_rwlock_trywrlock(l), EBUSY);
    EXPECT_ERRMSG("held");
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_trywrlock(l), EBUSY); /* one reader is still in */
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_trywrlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/* Writer preference: once a writer waits, new readers are turned away (try) or queue behind
 * it, even though only readers hold the lock. */
static void tryrdlock_is_ebusy_while_a_writer_waits_even_though_only_readers_hold_it(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), 0); /* no writer yet: readers share */
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    start_blocked(&agent_b, l, true); /* a writer waits behind agent_a's read hold */
    EXPECT_RC(surelock_rwlock_tryrdlock(l), EBUSY);
    EXPECT_ERRMSG("writer");
    EXPECT_RC(surelock_rwlock_timedrdlock(l, 0), ETIMEDOUT);
    EXPECT_ERRMSG("busy", "timeout", "within");
    uint64_t t0 = now_ns();
    EXPECT_RC(surelock_rwlock_timedrdlock(l, 30 * MS), ETIMEDOUT);
    EXPECT_WAITED_AT_LEAST(now_ns() - t0, 30 * MS);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0); /* the writer gets in */
    EXPECT_RC(agent_wait(&agent_b), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), EBUSY);
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_tryrdlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    flag_destroy(&entering_w);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

static void a_reader_arriving_while_a_writer_waits_gets_in_only_after_that_writer(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    start_blocked(&agent_b, l, true);  /* writer, behind the reader */
    start_blocked(&agent_c, l, false); /* a new reader, behind the writer */
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    EXPECT_RC(agent_wait(&agent_b), 0); /* the writer first */
    sleep_ms(20);
    assert_false(agent_done(&agent_c)); /* the reader still waits while the writer holds */
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(agent_wait(&agent_c), 0);
    EXPECT_RC(agent_call(&agent_c, do_unlock, l), 0);
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    agent_stop(&agent_c);
    flag_destroy(&entering_w);
    flag_destroy(&entering_r);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

static void timed_forms_time_out_after_at_least_their_timeout(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    /* a writer holds: both timed forms time out */
    EXPECT_RC(agent_call(&agent_a, do_wrlock, l), 0);
    EXPECT_RC(surelock_rwlock_timedrdlock(l, 0), ETIMEDOUT);
    EXPECT_ERRMSG("busy", "timeout");
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 0), ETIMEDOUT);
    EXPECT_ERRMSG("busy", "timeout");
    uint64_t t0 = now_ns();
    EXPECT_RC(surelock_rwlock_timedrdlock(l, 50 * MS), ETIMEDOUT);
    EXPECT_WAITED_AT_LEAST(now_ns() - t0, 50 * MS);
    EXPECT_ERRMSG("not acquired within", "ns");
    t0 = now_ns();
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 50 * MS), ETIMEDOUT);
    EXPECT_WAITED_AT_LEAST(now_ns() - t0, 50 * MS);
    EXPECT_ERRMSG("not acquired within", "ns");
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    /* a reader holds: the write forms time out */
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 0), ETIMEDOUT);
    t0 = now_ns();
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 50 * MS), ETIMEDOUT);
    EXPECT_WAITED_AT_LEAST(now_ns() - t0, 50 * MS);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    /* after all those timeouts, the lock is free and clean */
    EXPECT_RC(surelock_rwlock_trywrlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/*
 * Regression test for a fixed bug: a writer whose timedwrlock timed out left WRITERS_WAITING
 * set in the state word, so while the readers who held the lock kept it, new readers were
 * refused or blocked though no writer held or waited any more (a reader waiting for another
 * reader then deadlocked). The last waiting writer to give up now clears the bit.
 */
static void a_new_reader_gets_in_once_a_timed_out_writer_has_left(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    agent_start(&agent_b);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(surelock_rwlock_timedwrlock(l, 30 * MS), ETIMEDOUT); /* the writer gives up */
    int try_rc = agent_call(&agent_b, do_tryrdlock, l);
    if (try_rc == 0) EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    EXPECT_RC(try_rc, 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/* ================================================================================================
 * Owner death
 * ============================================================================================== */

static void a_dead_readers_hold_is_dropped_silently(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    agent_start(&agent_b);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(agent_call(&agent_b, do_rdlock, l), 0);
    agent_stop(&agent_a); /* dies reading */
    EXPECT_RC(surelock_rwlock_trywrlock(l), EBUSY); /* agent_b still reads */
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_trywrlock(l), 0); /* not EOWNERDEAD */
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    agent_stop(&agent_b);

    /* a writer already waiting gets it, with 0 too */
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    start_blocked(&agent_b, l, true);
    agent_stop(&agent_a); /* dies reading */
    EXPECT_RC(agent_wait(&agent_b), 0);
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    agent_stop(&agent_b);
    flag_destroy(&entering_w);

    /* and the lock is clean */
    EXPECT_RC(surelock_rwlock_rdlock(l), 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/* A lock whose writer thread exited holding it. */
static surelock_rwlock *rwlock_with_dead_writer(void)
{
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_wrlock, l), 0);
    agent_stop(&agent_a);
    return l;
}

static void a_dead_writer_makes_the_next_acquirer_of_either_mode_get_eownerdead(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_FORMS; i++) {
        surelock_rwlock *l = rwlock_with_dead_writer();
        EXPECT_RC(surelock_rwlock_unlock(NULL), EINVAL); /* errmsg: not touched by EOWNERDEAD */
        char before[ERRMSG_SIZE];
        save_errmsg(before);
        int rc = forms[i].fn(l);
        if (rc != EOWNERDEAD)
            fail_msg("after a writer died holding it, %s returned %s, expected EOWNERDEAD",
                     forms[i].name, errname(rc));
        assert_string_equal(surelock_errmsg(), before);
        EXPECT_RC(surelock_rwlock_unlock(l), 0); /* the caller held it */
        /* reported once: fully usable afterwards */
        EXPECT_RC(forms[i].fn(l), 0);
        EXPECT_RC(surelock_rwlock_unlock(l), 0);
        EXPECT_RC(surelock_rwlock_trywrlock(l), 0);
        EXPECT_RC(surelock_rwlock_unlock(l), 0);
        EXPECT_RC(surelock_rwlock_free(l), 0);
    }
}

static void a_dead_writer_is_reported_to_a_waiter_already_blocked(void **state)
{
    (void)state;
    for (int reader = 0; reader < 2; reader++) {
        surelock_rwlock *l = new_rwlock();
        agent_start(&agent_a);
        EXPECT_RC(agent_call(&agent_a, do_wrlock, l), 0);
        start_blocked(&agent_b, l, !reader);
        agent_stop(&agent_a); /* dies writing */
        EXPECT_RC(agent_wait(&agent_b), EOWNERDEAD);
        EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
        agent_stop(&agent_b);
        flag_destroy(reader ? &entering_r : &entering_w);
        EXPECT_RC(surelock_rwlock_wrlock(l), 0);
        EXPECT_RC(surelock_rwlock_unlock(l), 0);
        EXPECT_RC(surelock_rwlock_free(l), 0);
    }
}

/* ================================================================================================
 * Lifetime
 * ============================================================================================== */

static void free_is_ebusy_while_held_in_either_mode_or_waited_on(void **state)
{
    (void)state;
    surelock_rwlock *l = new_rwlock();
    EXPECT_RC(surelock_rwlock_rdlock(l), 0);
    EXPECT_RC(surelock_rwlock_free(l), EBUSY);
    EXPECT_ERRMSG("held");
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(surelock_rwlock_wrlock(l), 0);
    EXPECT_RC(surelock_rwlock_free(l), EBUSY);
    EXPECT_ERRMSG("held");
    EXPECT_RC(surelock_rwlock_unlock(l), 0);

    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, do_rdlock, l), 0);
    EXPECT_RC(surelock_rwlock_free(l), EBUSY);
    EXPECT_ERRMSG("held");
    /* held by a reader and waited on by a writer */
    start_blocked(&agent_b, l, true);
    EXPECT_RC(surelock_rwlock_free(l), EBUSY);
    EXPECT_ERRMSG("held", "waited");
    EXPECT_RC(agent_call(&agent_a, do_unlock, l), 0);
    EXPECT_RC(agent_wait(&agent_b), 0);
    EXPECT_RC(surelock_rwlock_free(l), EBUSY); /* now write-held */
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    flag_destroy(&entering_w);
    EXPECT_RC(surelock_rwlock_free(l), 0);
}

/* ================================================================================================
 * Concurrency
 * ============================================================================================== */

#define OVERLAP_READERS 4

static struct overlap_run {
    surelock_rwlock *l;
    gate start;
    helper threads[OVERLAP_READERS];
    atomic_int inside;
    atomic_int all_in; /* raised when a reader saw every reader inside at once */
    int lock_rc[OVERLAP_READERS], unlock_rc[OVERLAP_READERS];
    int id[OVERLAP_READERS];
    flag everyone_inside_seen_by_test;
} overlap_run;

static void overlap_body(void *arg)
{
    int id = *(int *)arg;
    struct overlap_run *r = &overlap_run;
    if (!gate_pass(&r->start)) return;
    /* every acquire form of read, one per reader */
    switch (id % 3) {
    case 0: r->lock_rc[id] = surelock_rwlock_rdlock(r->l); break;
    case 1: r->lock_rc[id] = surelock_rwlock_timedrdlock(r->l, (uint64_t)WAIT_LIMIT_MS * MS); break;
    default:
        while ((r->lock_rc[id] = surelock_rwlock_tryrdlock(r->l)) == EBUSY) sched_yield();
        break;
    }
    if (r->lock_rc[id] != 0) return;
    atomic_fetch_add(&r->inside, 1);
    /* stay until every reader is inside at the same time (bounded: an exclusive lock would
     * never let that happen) */
    uint64_t end = now_ns() + 5000 * MS;
    while (atomic_load(&r->inside) < OVERLAP_READERS && now_ns() < end) sched_yield();
    if (atomic_load(&r->inside) == OVERLAP_READERS) atomic_fetch_add(&r->all_in, 1);
    /* hold on until the test has checked that a writer is kept out */
    flag_wait(&r->everyone_inside_seen_by_test, 1, WAIT_LIMIT_MS);
    atomic_fetch_sub(&r->inside, 1);
    r->unlock_rc[id] = surelock_rwlock_unlock(r->l);
}

static void many_readers_hold_the_lock_at_the_same_time(void **state)
{
    (void)state;
    struct overlap_run *r = &overlap_run;
    memset(r, 0, sizeof *r);
    r->l = new_rwlock();
    gate_init(&r->start);
    flag_init(&r->everyone_inside_seen_by_test);
    for (int i = 0; i < OVERLAP_READERS; i++) {
        r->id[i] = i;
        helper_start(&r->threads[i], overlap_body, &r->id[i]);
    }
    gate_open(&r->start, OVERLAP_READERS);
    uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    while (atomic_load(&r->all_in) < OVERLAP_READERS && now_ns() < end) sleep_ms(1);
    int all_in = atomic_load(&r->all_in);
    int wr_rc = surelock_rwlock_trywrlock(r->l); /* every reader inside: no writer */
    flag_raise(&r->everyone_inside_seen_by_test);
    for (int i = 0; i < OVERLAP_READERS; i++) JOIN(&r->threads[i]);
    if (wr_rc == 0) surelock_rwlock_unlock(r->l);
    for (int i = 0; i < OVERLAP_READERS; i++) {
        EXPECT_RC(r->lock_rc[i], 0);
        EXPECT_RC(r->unlock_rc[i], 0);
    }
    assert_int_equal(all_in, OVERLAP_READERS);
    EXPECT_RC(wr_rc, EBUSY);
    gate_destroy(&r->start);
    flag_destroy(&r->everyone_inside_seen_by_test);
    EXPECT_RC(surelock_rwlock_free(r->l), 0);
}

#define EXCL_WRITERS 3
#define EXCL_READERS 2
#define EXCL_ROUNDS 5000

static struct excl_run {
    surelock_rwlock *l;
    gate start;
    helper threads[EXCL_WRITERS + EXCL_READERS];
    int id[EXCL_WRITERS + EXCL_READERS];
    /* plain: only the lock protects them; a writer keeps a == b outside its critical section */
    long a, b;
    atomic_int writers_inside, readers_inside;
    atomic_int violations;
    atomic_int writers_left;
    atomic_long reads;
    int bad_rc[EXCL_WRITERS + EXCL_READERS];
    char bad_msg[EXCL_WRITERS + EXCL_READERS][ERRMSG_SIZE];
} excl_run;

static void excl_writer(int id)
{
    struct excl_run *r = &excl_run;
    for (int i = 0; i < EXCL_ROUNDS; i++) {
        int rc;
        switch ((i + id) % 3) {
        case 0: rc = surelock_rwlock_wrlock(r->l); break;
        case 1: rc = surelock_rwlock_timedwrlock(r->l, (uint64_t)WAIT_LIMIT_MS * MS); break;
        default:
            while ((rc = surelock_rwlock_trywrlock(r->l)) == EBUSY) sched_yield();
            break;
        }
        if (rc != 0) {
            r->bad_rc[id] = rc;
            save_errmsg(r->bad_msg[id]);
            break;
        }
        if (atomic_fetch_add(&r->writers_inside, 1) != 0 || atomic_load(&r->readers_inside) != 0)
            atomic_fetch_add(&r->violations, 1);
        long a = r->a;
        r->a = a + 1;
        if ((i & 31) == 0) sched_yield();
        r->b = r->b + 1;
        atomic_fetch_sub(&r->writers_inside, 1);
        rc = surelock_rwlock_unlock(r->l);
        if (rc != 0) {
            r->bad_rc[id] = 1000 + rc;
            save_errmsg(r->bad_msg[id]);
            break;
        }
    }
    atomic_fetch_sub(&r->writers_left, 1);
}

static void excl_reader(int id)
{
    struct excl_run *r = &excl_run;
    for (int i = 0; atomic_load(&r->writers_left) > 0; i++) {
        int rc = (i & 1) ? surelock_rwlock_rdlock(r->l)
                         : surelock_rwlock_timedrdlock(r->l, (uint64_t)WAIT_LIMIT_MS * MS);
        if (rc != 0) {
            r->bad_rc[id] = rc;
            save_errmsg(r->bad_msg[id]);
            break;
        }
        atomic_fetch_add(&r->readers_inside, 1);
        if (atomic_load(&r->writers_inside) != 0 || r->a != r->b)
            atomic_fetch_add(&r->violations, 1);
        atomic_fetch_sub(&r->readers_inside, 1);
        atomic_fetch_add(&r->reads, 1);
        rc = surelock_rwlock_unlock(r->l);
        if (rc != 0) {
            r->bad_rc[id] = 1000 + rc;
            save_errmsg(r->bad_msg[id]);
            break;
        }
        /* readers that never pause would keep trywrlock (which does not queue) out */
        if ((i & 7) == 0) sleep_us(50);
    }
}

static void excl_body(void *arg)
{
    int id = *(int *)arg;
    if (!gate_pass(&excl_run.start)) return;
    if (id < EXCL_WRITERS) excl_writer(id);
    else excl_reader(id);
}

static void writers_are_exclusive_against_writers_and_readers_and_keep_a_plain_counter_exact(void **state)
{
    (void)state;
    struct excl_run *r = &excl_run;
    memset(r, 0, sizeof *r);
    r->l = new_rwlock();
    atomic_store(&r->writers_left, EXCL_WRITERS);
    gate_init(&r->start);
    for (int i = 0; i < EXCL_WRITERS + EXCL_READERS; i++) {
        r->id[i] = i;
        helper_start(&r->threads[i], excl_body, &r->id[i]);
    }
    gate_open(&r->start, EXCL_WRITERS + EXCL_READERS);
    for (int i = 0; i < EXCL_WRITERS + EXCL_READERS; i++) JOIN(&r->threads[i]);
    gate_destroy(&r->start);
    for (int i = 0; i < EXCL_WRITERS + EXCL_READERS; i++)
        EXPECT_SAVED_RC(r->bad_rc[i], 0, r->bad_msg[i]);
    assert_int_equal(atomic_load(&r->violations), 0);
    assert_true(atomic_load(&r->reads) > 0);
    assert_int_equal(r->a, (long)EXCL_WRITERS * EXCL_ROUNDS);
    assert_int_equal(r->b, (long)EXCL_WRITERS * EXCL_ROUNDS);
    EXPECT_RC(surelock_rwlock_free(r->l), 0);
}

/*
 * Writer preference under load: three readers keep re-taking overlapping read holds (each
 * stays until another reader has come in, so the lock is practically never free); a writer
 * must still get in, each time within 2 s (timedwrlock: a starved writer fails, never hangs).
 */
#define STREAM_READERS 3
#define STREAM_WRITES 5
#define STREAM_WRITER_BOUND_NS (2000 * MS)

static struct stream_run {
    surelock_rwlock *l;
    gate start;
    helper threads[STREAM_READERS];
    int id[STREAM_READERS];
    atomic_bool stop;
    atomic_int inside;
    atomic_long iterations;
    atomic_long overlapped; /* holds that saw another reader inside */
    atomic_int writer_inside;
    atomic_int violations;
    int bad_rc[STREAM_READERS];
    char bad_msg[STREAM_READERS][ERRMSG_SIZE];
} stream_run;

static void stream_reader(void *arg)
{
    int id = *(int *)arg;
    struct stream_run *r = &stream_run;
    if (!gate_pass(&r->start)) return;
    while (!atomic_load(&r->stop)) {
        int rc = surelock_rwlock_timedrdlock(r->l, (uint64_t)WAIT_LIMIT_MS * MS);
        if (rc != 0) {
            r->bad_rc[id] = rc;
            save_errmsg(r->bad_msg[id]);
            return;
        }
        if (atomic_load(&r->writer_inside)) atomic_fetch_add(&r->violations, 1);
        int others = atomic_fetch_add(&r->inside, 1);
        /* keep the hold until another reader is in too (at most 2 ms), then a little more */
        uint64_t end = now_ns() + 2 * MS;
        while (others == 0 && atomic_load(&r->inside) < 2 && now_ns() < end) sched_yield();
        if (others > 0 || atomic_load(&r->inside) >= 2) atomic_fetch_add(&r->overlapped, 1);
        sleep_us(100);
        atomic_fetch_sub(&r->inside, 1);
        atomic_fetch_add(&r->iterations, 1);
        rc = surelock_rwlock_unlock(r->l);
        if (rc != 0) {
            r->bad_rc[id] = 1000 + rc;
            save_errmsg(r->bad_msg[id]);
            return;
        }
    }
}

static void a_writer_is_not_starved_by_readers_that_keep_overlapping_holds(void **state)
{
    (void)state;
    struct stream_run *r = &stream_run;
    memset(r, 0, sizeof *r);
    r->l = new_rwlock();
    gate_init(&r->start);
    for (int i = 0; i < STREAM_READERS; i++) {
        r->id[i] = i;
        helper_start(&r->threads[i], stream_reader, &r->id[i]);
    }
    gate_open(&r->start, STREAM_READERS);
    /* let the stream get going: overlapping holds seen */
    uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    while (atomic_load(&r->overlapped) < 50 && now_ns() < end) sleep_ms(1);
    long overlapped_before = atomic_load(&r->overlapped);
    int write_rc[STREAM_WRITES];
    uint64_t waited[STREAM_WRITES];
    int unlock_rc = 0;
    for (int w = 0; w < STREAM_WRITES; w++) {
        long before = atomic_load(&r->iterations);
        end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
        while (atomic_load(&r->iterations) < before + 20 && now_ns() < end) sleep_ms(1);
        uint64_t t0 = now_ns();
        write_rc[w] = surelock_rwlock_timedwrlock(r->l, STREAM_WRITER_BOUND_NS);
        waited[w] = now_ns() - t0;
        if (write_rc[w] != 0) break;
        atomic_store(&r->writer_inside, 1);
        if (atomic_load(&r->inside) != 0) atomic_fetch_add(&r->violations, 1);
        sleep_us(200);
        atomic_store(&r->writer_inside, 0);
        int u = surelock_rwlock_unlock(r->l);
        if (u != 0 && unlock_rc == 0) unlock_rc = u;
    }
    /* the readers carry on after the writer */
    long after_writes = atomic_load(&r->iterations);
    end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    while (atomic_load(&r->iterations) < after_writes + 20 && now_ns() < end) sleep_ms(1);
    long final_iterations = atomic_load(&r->iterations);
    atomic_store(&r->stop, true);
    for (int i = 0; i < STREAM_READERS; i++) JOIN(&r->threads[i]);
    gate_destroy(&r->start);
    for (int i = 0; i < STREAM_READERS; i++) EXPECT_SAVED_RC(r->bad_rc[i], 0, r->bad_msg[i]);
    assert_true(overlapped_before >= 50); /* the readers did overlap */
    for (int w = 0; w < STREAM_WRITES; w++) {
        if (write_rc[w] != 0)
            fail_msg("write %d: timedwrlock returned %s after %llu ms while readers streamed: "
                     "the writer is starved",
                     w, errname(write_rc[w]), (unsigned long long)(waited[w] / MS));
    }
    EXPECT_RC(unlock_rc, 0);
    assert_int_equal(atomic_load(&r->violations), 0);
    assert_true(final_iterations >= after_writes + 20);
    EXPECT_RC(surelock_rwlock_free(r->l), 0);
}

/* ================================================================================================
 * Nothing of the lock is touched after the releasing step (issue 9 item 4)
 * ============================================================================================== */

/*
 * The "last unlocker frees" pattern: once an unlock has released the lock, another thread may
 * take it, release it and free it, and the first unlocker must not touch that memory any more
 * (its futex wake goes by address only). The release hook pauses one unlocker right after its
 * releasing step until the lock has been freed by the others; under ASan (CI's sanitizer build)
 * any later access is a heap-use-after-free report. The old unlock re-read the waiting-writer
 * count and compare-and-swapped the state after releasing: this caught it. (The futex wake that
 * follows passes the freed address to the kernel, which only looks it up; valgrind's memcheck
 * reports that syscall argument, so this test is not one for memcheck.)
 */
static _Thread_local bool pause_in_release_hook;
static flag paused_after_release, lock_was_freed;

static void pause_after_release(void)
{
    if (!pause_in_release_hook) return;
    pause_in_release_hook = false;
    flag_raise(&paused_after_release);
    flag_wait(&lock_was_freed, 1, WAIT_LIMIT_MS);
}

static int unlock_pausing_after_release(void *l)
{
    pause_in_release_hook = true;
    return surelock_rwlock_unlock(l);
}

static void last_unlocker_frees_while_first_unlocker_is_paused(bool first_holds_for_writing)
{
    flag_init(&paused_after_release);
    flag_init(&lock_was_freed);
    surelock_testing_rwlock_released_hook = pause_after_release;
    surelock_rwlock *l = new_rwlock();
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, first_holds_for_writing ? do_wrlock : do_rdlock, l), 0);
    start_blocked(&agent_b, l, true); /* a writer waits: the unlock has someone to wake */

    agent_post(&agent_a, unlock_pausing_after_release, l);
    if (!flag_wait(&paused_after_release, 1, WAIT_LIMIT_MS))
        fail_msg("the unlock never reached its releasing step");

    /* Meanwhile: this thread takes the released lock, gives it to the waiting writer, which
     * releases it, and frees it: the last unlocker frees. */
    int rc = EBUSY;
    uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    while ((rc = surelock_rwlock_trywrlock(l)) == EBUSY && now_ns() < end) sched_yield();
    EXPECT_RC(rc, 0);
    EXPECT_RC(surelock_rwlock_unlock(l), 0);
    EXPECT_RC(agent_wait(&agent_b), 0);
    EXPECT_RC(agent_call(&agent_b, do_unlock, l), 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);

    flag_raise(&lock_was_freed); /* the paused unlocker goes on: it must not touch l */
    EXPECT_SAVED_RC(agent_wait(&agent_a), 0, agent_a.errmsg);
    surelock_testing_rwlock_released_hook = NULL;
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    flag_destroy(&entering_w);
    flag_destroy(&paused_after_release);
    flag_destroy(&lock_was_freed);
}

static void a_read_unlock_touches_nothing_after_releasing_so_the_last_unlocker_may_free(void **state)
{
    (void)state;
    last_unlocker_frees_while_first_unlocker_is_paused(false);
}

static void a_write_unlock_touches_nothing_after_releasing_so_the_last_unlocker_may_free(void **state)
{
    (void)state;
    last_unlocker_frees_while_first_unlocker_is_paused(true);
}

/* ================================================================================================
 * Read holds: exact and O(1) whatever else the thread holds
 * ============================================================================================== */

#define MANY_LOCKS 1000
static surelock_rwlock *many[MANY_LOCKS];
static int many_bad_rc, many_bad_index, many_bad_step;

static void many_note(int step, int i, int rc, int want)
{
    if (rc != want && many_bad_step == 0) {
        many_bad_step = step;
        many_bad_index = i;
        many_bad_rc = rc;
    }
}

/* Holds every lock for reading, drops the odd ones in a scrambled order, checks that exactly
 * the even ones are still held, then exits holding them. */
static void hold_many_then_exit_holding_half(void *arg)
{
    (void)arg;
    for (int i = 0; i < MANY_LOCKS; i++) many_note(1, i, surelock_rwlock_rdlock(many[i]), 0);
    for (int i = 0; i < MANY_LOCKS; i++) many_note(2, i, surelock_rwlock_tryrdlock(many[i]), EDEADLK);
    unsigned x = 12345;
    int odd = MANY_LOCKS / 2, order[MANY_LOCKS / 2];
    for (int k = 0; k < odd; k++) order[k] = 2 * k + 1;
    for (int k = odd - 1; k > 0; k--) { /* Fisher-Yates with a fixed LCG: the same every run */
        x = x * 1103515245u + 12345u;
        int j = (int)((x >> 8) % (unsigned)(k + 1)), t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < odd; k++) many_note(3, order[k], surelock_rwlock_unlock(many[order[k]]), 0);
    for (int i = 0; i < MANY_LOCKS; i++) {
        if (i % 2 == 0) {
            many_note(4, i, surelock_rwlock_timedwrlock(many[i], 0), EDEADLK);
        } else {
            many_note(5, i, surelock_rwlock_unlock(many[i]), EPERM);
            many_note(6, i, surelock_rwlock_wrlock(many[i]), 0); /* free: nobody else reads */
            many_note(7, i, surelock_rwlock_unlock(many[i]), 0);
        }
    }
}

static void a_thread_holding_a_thousand_rwlocks_for_reading_keeps_each_hold_exact(void **state)
{
    (void)state;
    for (int i = 0; i < MANY_LOCKS; i++) many[i] = new_rwlock();
    many_bad_step = 0;
    helper h;
    RUN_IN_NEW_THREAD(&h, hold_many_then_exit_holding_half, NULL);
    if (many_bad_step != 0)
        fail_msg("step %d, lock %d: got %s", many_bad_step, many_bad_index, errname(many_bad_rc));
    /* the thread died holding the even ones for reading: dropped silently */
    for (int i = 0; i < MANY_LOCKS; i++) {
        EXPECT_RC(surelock_rwlock_trywrlock(many[i]), 0);
        EXPECT_RC(surelock_rwlock_unlock(many[i]), 0);
        EXPECT_RC(surelock_rwlock_free(many[i]), 0);
    }
}

/* Out of memory for the read-hold table, both when a thread's first read hold creates it and
 * when one more hold makes it grow: ENOMEM, nothing taken, the holds it had are kept. */
static surelock_rwlock *oom_locks[5];
static surelock_mutex *oom_mutex;
static int mutex_lock_unlock(void *arg)
{
    (void)arg;
    int rc = surelock_mutex_lock(oom_mutex);
    return rc != 0 ? rc : surelock_mutex_unlock(oom_mutex);
}
static int rdlock_with_failing_allocation(void *l)
{
    surelock_testing_fail_allocation_after(0);
    int rc = surelock_rwlock_rdlock(l);
    surelock_testing_fail_allocation_after(-1);
    return rc;
}

static void a_read_lock_without_memory_for_its_hold_is_enomem_and_takes_nothing(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) oom_locks[i] = new_rwlock();
    EXPECT_RC(surelock_mutex_new(&oom_mutex), 0);
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_a, mutex_lock_unlock, NULL), 0); /* its thread record exists */

    /* the first read hold of the thread: the table cannot be made */
    EXPECT_SAVED_RC(agent_call(&agent_a, rdlock_with_failing_allocation, oom_locks[0]), ENOMEM,
                    agent_a.errmsg);
    EXPECT_TEXT(agent_a.errmsg, "memory");
    EXPECT_RC(surelock_rwlock_trywrlock(oom_locks[0]), 0); /* nothing was taken */
    EXPECT_RC(surelock_rwlock_unlock(oom_locks[0]), 0);

    /* four holds fill the first table to its limit; the fifth needs a bigger one */
    for (int i = 0; i < 4; i++) EXPECT_RC(agent_call(&agent_a, do_rdlock, oom_locks[i]), 0);
    EXPECT_SAVED_RC(agent_call(&agent_a, rdlock_with_failing_allocation, oom_locks[4]), ENOMEM,
                    agent_a.errmsg);
    EXPECT_RC(surelock_rwlock_trywrlock(oom_locks[4]), 0);
    EXPECT_RC(surelock_rwlock_unlock(oom_locks[4]), 0);
    for (int i = 0; i < 4; i++) {
        EXPECT_RC(agent_call(&agent_a, do_tryrdlock, oom_locks[i]), EDEADLK); /* still held */
        EXPECT_RC(surelock_rwlock_trywrlock(oom_locks[i]), EBUSY);
    }
    /* with memory again, the fifth works and every hold is released exactly */
    EXPECT_RC(agent_call(&agent_a, do_rdlock, oom_locks[4]), 0);
    for (int i = 4; i >= 0; i--) EXPECT_RC(agent_call(&agent_a, do_unlock, oom_locks[i]), 0);
    for (int i = 0; i < 5; i++) EXPECT_RC(agent_call(&agent_a, do_unlock, oom_locks[i]), EPERM);
    agent_stop(&agent_a);
    for (int i = 0; i < 5; i++) EXPECT_RC(surelock_rwlock_free(oom_locks[i]), 0);
    EXPECT_RC(surelock_mutex_free(oom_mutex), 0);
}

/* ============================================================================================== */

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(null_handles_and_out_pointers_are_einval),
        TEST(new_rwlock_is_usable_in_both_modes_by_every_acquire_form_and_freeable),
        TEST(reacquire_by_a_holder_in_either_mode_is_edeadlk_for_every_acquire_form),
        TEST(unlock_without_a_hold_is_eperm_and_changes_nobody_elses_hold),
        TEST(tryrdlock_is_ebusy_while_a_writer_holds_it),
        TEST(trywrlock_is_ebusy_while_readers_hold_it),
        TEST(tryrdlock_is_ebusy_while_a_writer_waits_even_though_only_readers_hold_it),
        TEST(a_reader_arriving_while_a_writer_waits_gets_in_only_after_that_writer),
        TEST(timed_forms_time_out_after_at_least_their_timeout),
        TEST(a_dead_readers_hold_is_dropped_silently),
        TEST(a_dead_writer_makes_the_next_acquirer_of_either_mode_get_eownerdead),
        TEST(a_dead_writer_is_reported_to_a_waiter_already_blocked),
        TEST(free_is_ebusy_while_held_in_either_mode_or_waited_on),
        TEST(many_readers_hold_the_lock_at_the_same_time),
        TEST(writers_are_exclusive_against_writers_and_readers_and_keep_a_plain_counter_exact),
        TEST(a_writer_is_not_starved_by_readers_that_keep_overlapping_holds),
        TEST(a_new_reader_gets_in_once_a_timed_out_writer_has_left),
        TEST(a_read_unlock_touches_nothing_after_releasing_so_the_last_unlocker_may_free),
        TEST(a_write_unlock_touches_nothing_after_releasing_so_the_last_unlocker_may_free),
        TEST(a_thread_holding_a_thousand_rwlocks_for_reading_keeps_each_hold_exact),
        TEST(a_read_lock_without_memory_for_its_hold_is_enomem_and_takes_nothing),
    };
    return cmocka_run_group_tests_name("rwlock", tests, watchdog_start, watchdog_stop);
}
