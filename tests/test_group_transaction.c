/*
 * test_group_transaction.c — lock groups that take and release their members' words in one
 * hardware transaction (src/sys/transaction.h; group.cc), on the internal build: its testing
 * hooks (src/sys/testing.h) count committed, refused and failed transactions and can forbid
 * them, so each test knows which path ran and can run the same calls on both.
 *
 * On a CPU without working RTM, or in a sanitizer build, only the per-member path runs: the
 * tests still check every result and say (as a TAP comment) that the transactional path was
 * not exercised here, instead of failing. Helpers and rules: support/bounded.h.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <surelock.h>

#include "support/bounded.h"
#include "sys/testing.h"

#define N 8 /* members of the groups below (the bench's row) */

static agent agent_a;

typedef struct counts {
    unsigned long committed, refused, failed;
} counts;

static counts now_counts(void)
{
    counts c;
    surelock_testing_transaction_counts(&c.committed, &c.refused, &c.failed);
    return c;
}

/* Whether groups use transactions in this process (after at least one group has asked). */
static bool transactions_in_use(void)
{
    if (surelock_testing_transactions_in_use() == 1) return true;
    static bool said;
    if (!said) printf("# transactions are not in use here (no working RTM, or a sanitizer "
                      "build): only the per-member path was exercised\n");
    said = true;
    return false;
}

static surelock_group *group_of_mutexes(surelock_mutex **m, int first, int n)
{
    surelock_group *g = NULL;
    EXPECT_RC(surelock_group_new(&g), 0);
    for (int i = first; i < first + n; i++) EXPECT_RC(surelock_group_add_mutex(g, m[i]), 0);
    return g;
}

static int do_lock(void *m) { return surelock_mutex_lock(m); }
static int do_trylock(void *m) { return surelock_mutex_trylock(m); }
static int do_unlock(void *m) { return surelock_mutex_unlock(m); }
static int do_group_unlock(void *g) { return surelock_group_unlock(g); }
static int do_rlock_lock(void *l) { return surelock_rlock_lock(l); }
static int do_rlock_trylock(void *l) { return surelock_rlock_trylock(l); }
static int do_rlock_unlock(void *l) { return surelock_rlock_unlock(l); }

/* Every mutex is free: another thread can take it. */
static void expect_free(surelock_mutex **m, int n)
{
    for (int i = 0; i < n; i++) {
        EXPECT_RC(agent_call(&agent_a, do_trylock, m[i]), 0);
        EXPECT_RC(agent_call(&agent_a, do_unlock, m[i]), 0);
    }
}

static int test_setup(void **state)
{
    agent_start(&agent_a);
    surelock_testing_forbid_transactions(0);
    return watchdog_arm(state);
}

static int test_teardown(void **state)
{
    agent_stop(&agent_a);
    surelock_testing_forbid_transactions(0);
    return watchdog_disarm(state);
}

/* ---- exclusion under stress ---------------------------------------------------------------- */

#define POOL 12          /* mutexes 0..7 are group A's, 4..11 group B's: 4..7 in both */
#define ROUNDS 100000    /* per thread */
static surelock_mutex *pool[POOL];
static long counter[POOL];    /* plain: only the member's holder touches it */
static int holder_of[POOL];   /* plain: which worker holds it, 0 none */
static atomic_int violations; /* a second holder seen, or a torn count */
static long holds[5][POOL];   /* per worker: how often it held each member */
static int worker_rc[5];
static gate start;

static void hold_members(int me, int first, int n)
{
    for (int i = first; i < first + n; i++) {
        if (holder_of[i] != 0) atomic_fetch_add(&violations, 1);
        holder_of[i] = me;
        long v = counter[i];
        if ((holds[me][i] & 63) == 0) sched_yield(); /* a longer hold, now and then */
        counter[i] = v + 1;
        holds[me][i]++;
    }
    for (int i = first; i < first + n; i++) {
        if (holder_of[i] != me) atomic_fetch_add(&violations, 1);
        holder_of[i] = 0;
    }
}

struct worker_arg {
    int me, first; /* group of N mutexes from pool[first]; first < 0: single members */
};

static void worker(void *arg)
{
    const struct worker_arg *w = arg;
    if (!gate_pass(&start)) return;
    surelock_group *g = NULL;
    if (w->first >= 0) {
        if ((worker_rc[w->me] = surelock_group_new(&g)) != 0) return;
        for (int i = w->first; i < w->first + N; i++)
            if ((worker_rc[w->me] = surelock_group_add_mutex(g, pool[i])) != 0) return;
    }
    int rc = 0;
    for (int r = 0; r < ROUNDS; r++) {
        if (g == NULL) { /* one member at a time, directly */
            int i = (r * 7) % POOL;
            rc = r % 3 == 0 ? surelock_mutex_trylock(pool[i]) : surelock_mutex_lock(pool[i]);
            if (rc == EBUSY) continue;
            if (rc != 0) break;
            hold_members(w->me, i, 1);
            if ((rc = surelock_mutex_unlock(pool[i])) != 0) break;
            continue;
        }
        rc = r % 4 == 0   ? surelock_group_trylock(g)
             : r % 4 == 1 ? surelock_group_timedlock(g, 1000 * MS)
                          : surelock_group_lock(g);
        if (rc == EBUSY || rc == ETIMEDOUT) continue; /* (a slow run: valgrind, TSan) */
        if (rc != 0) break;
        hold_members(w->me, w->first, N);
        if ((rc = surelock_group_unlock(g)) != 0) break;
    }
    if (rc == EBUSY || rc == ETIMEDOUT) rc = 0; /* in the last round */
    if (g != NULL && surelock_group_free(g) != 0 && rc == 0) rc = EBUSY; /* still held */
    worker_rc[w->me] = rc;
}

static void groups_exclude_direct_lockers_and_overlapping_groups_while_transactions_commit(void **state)
{
    (void)state;
    for (int i = 0; i < POOL; i++) pool[i] = new_mutex();
    memset(counter, 0, sizeof counter);
    memset(holder_of, 0, sizeof holder_of);
    memset(holds, 0, sizeof holds);
    atomic_store(&violations, 0);
    /* Uncontended first: where transactions are in use, these must commit. */
    counts before = now_counts();
    surelock_group *g = group_of_mutexes(pool, 0, N);
    for (int r = 0; r < 1000; r++) {
        EXPECT_RC(surelock_group_lock(g), 0);
        EXPECT_RC(surelock_group_unlock(g), 0);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    counts after = now_counts();
    if (transactions_in_use() && after.committed - before.committed == 0)
        fail_msg("transactions are in use, yet 1000 uncontended group lock+unlock committed "
                 "none (refused %lu, failed %lu)", after.refused - before.refused,
                 after.failed - before.failed);

    /* Workers 1, 2: group A (0..7), each its own group object; 3: group B (4..11); 4: single
     * members directly. */
    static struct worker_arg args[] = {{1, 0}, {2, 0}, {3, 4}, {4, -1}};
    helper h[4];
    gate_init(&start);
    before = now_counts();
    for (int t = 0; t < 4; t++) {
        worker_rc[args[t].me] = -1;
        helper_start(&h[t], worker, &args[t]);
    }
    gate_open(&start, 4);
    for (int t = 0; t < 4; t++) JOIN(&h[t]);
    after = now_counts();
    gate_destroy(&start);
    for (int t = 1; t <= 4; t++) EXPECT_SAVED_RC(worker_rc[t], 0, "");
    assert_int_equal(atomic_load(&violations), 0);
    for (int i = 0; i < POOL; i++) {
        long total = 0;
        for (int t = 1; t <= 4; t++) total += holds[t][i];
        if (counter[i] != total)
            fail_msg("member %d: %ld holds counted %ld: two holders at once", i, total, counter[i]);
    }
    printf("# under contention: %lu transactions committed, %lu refused, %lu failed\n",
           after.committed - before.committed, after.refused - before.refused,
           after.failed - before.failed);
    for (int i = 0; i < POOL; i++) EXPECT_RC(surelock_mutex_free(pool[i]), 0);
}

/* ---- the fallbacks ----------------------------------------------------------------------- */

/* A member with a sleeping waiter cannot be released in the transaction (its sleeper needs
 * the futex wake): the group unlock must still wake it. */
static void a_group_unlock_wakes_a_thread_asleep_on_one_of_its_members(void **state)
{
    (void)state;
    surelock_mutex *m[N];
    for (int i = 0; i < N; i++) m[i] = new_mutex();
    surelock_group *g = group_of_mutexes(m, 0, N);
    for (int sleeper = 0; sleeper < N; sleeper += 3) {
        EXPECT_RC(surelock_group_lock(g), 0);
        agent_post(&agent_a, do_lock, m[sleeper]);
        assert_int_equal(wait_until_asleep(agent_a.tid, ASLEEP_LIMIT_MS), 1);
        counts before = now_counts();
        EXPECT_RC(surelock_group_unlock(g), 0);
        counts after = now_counts();
        EXPECT_RC(agent_wait(&agent_a), 0); /* woken, and it holds the member */
        if (transactions_in_use()) /* the release transaction saw the sleeper and refused */
            assert_int_equal(after.committed - before.committed, 0);
        EXPECT_RC(surelock_mutex_trylock(m[sleeper]), EBUSY);
        EXPECT_RC(agent_call(&agent_a, do_unlock, m[sleeper]), 0);
        expect_free(m, N);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    for (int i = 0; i < N; i++) EXPECT_RC(surelock_mutex_free(m[i]), 0);
}

/* A dead owner's lock is free, flagged "owner died": the transaction takes it with the rest,
 * and the member's own bookkeeping still reports EOWNERDEAD, once, for mutex and rlock. */
static void a_member_whose_owner_died_makes_the_group_return_eownerdead_once(void **state)
{
    (void)state;
    surelock_mutex *m[N];
    surelock_rlock *r[2];
    for (int i = 0; i < N; i++) m[i] = new_mutex();
    r[0] = new_rlock();
    r[1] = new_rlock();
    surelock_group *g = group_of_mutexes(m, 0, N);
    EXPECT_RC(surelock_group_add_rlock(g, r[0]), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r[1]), 0);
    unsigned long took_at_once = 0; /* rounds whose group lock committed a transaction */
    for (int dead = 0; dead < N + 2; dead += 3) {
        void *lock = dead < N ? (void *)m[dead] : (void *)r[dead - N];
        EXPECT_RC(agent_call(&agent_a, dead < N ? do_lock : do_rlock_lock, lock), 0);
        agent_stop(&agent_a); /* exits holding it */
        agent_start(&agent_a);
        char before_msg[ERRMSG_SIZE];
        save_errmsg(before_msg);
        counts before = now_counts();
        EXPECT_RC(surelock_group_lock(g), EOWNERDEAD);
        counts after = now_counts();
        assert_string_equal(surelock_errmsg(), before_msg); /* EOWNERDEAD sets no errmsg */
        took_at_once += after.committed - before.committed;
        assert_int_equal(surelock_rlock_depth(r[0]), 1);
        assert_int_equal(surelock_rlock_depth(r[1]), 1);
        EXPECT_RC(surelock_group_unlock(g), 0);
        EXPECT_RC(surelock_group_lock(g), 0); /* reported once */
        EXPECT_RC(surelock_group_unlock(g), 0);
        expect_free(m, N);
    }
    /* (an interrupt may abort one transaction: then the per-member path reported it) */
    if (transactions_in_use() && took_at_once == 0)
        fail_msg("no group lock after an owner's death was taken in a transaction");
    EXPECT_RC(surelock_group_free(g), 0);
    for (int i = 0; i < N; i++) EXPECT_RC(surelock_mutex_free(m[i]), 0);
    EXPECT_RC(surelock_rlock_free(r[0]), 0);
    EXPECT_RC(surelock_rlock_free(r[1]), 0);
}

/* An rlock member the caller enters again while holding the group stays held (depth 1) after
 * the group unlock: its word is left out of the release. */
static void an_rlock_member_entered_again_stays_held_after_the_group_unlock(void **state)
{
    (void)state;
    surelock_rlock *r[4];
    for (int i = 0; i < 4; i++) r[i] = new_rlock();
    surelock_group *g = NULL;
    EXPECT_RC(surelock_group_new(&g), 0);
    for (int i = 0; i < 4; i++) EXPECT_RC(surelock_group_add_rlock(g, r[i]), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_rlock_lock(r[2]), 0);
    assert_int_equal(surelock_rlock_depth(r[2]), 2);
    EXPECT_RC(surelock_group_unlock(g), 0);
    assert_int_equal(surelock_rlock_depth(r[2]), 1);
    EXPECT_RC(agent_call(&agent_a, do_rlock_trylock, r[2]), EBUSY);
    for (int i = 0; i < 4; i++) {
        if (i == 2) continue;
        EXPECT_RC(agent_call(&agent_a, do_rlock_trylock, r[i]), 0);
        EXPECT_RC(agent_call(&agent_a, do_rlock_unlock, r[i]), 0);
    }
    EXPECT_RC(surelock_rlock_unlock(r[2]), 0);
    EXPECT_RC(agent_call(&agent_a, do_rlock_trylock, r[2]), 0);
    EXPECT_RC(agent_call(&agent_a, do_rlock_unlock, r[2]), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    for (int i = 0; i < 4; i++) EXPECT_RC(surelock_rlock_free(r[i]), 0);
}

/* ---- the same results on both paths -------------------------------------------------------- */

static char transcript[8192];
static void note(const char *step, int rc, const char *errmsg)
{
    size_t used = strlen(transcript);
    snprintf(transcript + used, sizeof transcript - used, "%s: %s \"%s\"\n", step, errname(rc),
             errmsg);
}
/* A call by this thread, or by agent_a, with the caller's errmsg after it. */
#define STEP(call) note(#call, (call), surelock_errmsg())
#define AGENT(fn, arg)                                                                         \
    note(#fn "(" #arg ") on another thread", agent_call(&agent_a, fn, arg), agent_a.errmsg)

static int cond_timedwait_1ms(void *arg)
{
    void **cm = arg;
    return surelock_cond_timedwait(cm[0], cm[1], MS);
}

/* Every result a group of mutexes and rlocks can give, with its errmsg, in one transcript. */
static void run_script(void)
{
    transcript[0] = 0;
    surelock_mutex *m[N];
    surelock_rlock *r[2];
    surelock_rwlock *rw = new_rwlock();
    surelock_cond *c = NULL;
    EXPECT_RC(surelock_cond_new(&c), 0);
    for (int i = 0; i < 2; i++) r[i] = new_rlock(); /* created first: first in the order */
    for (int i = 0; i < N; i++) m[i] = new_mutex();
    surelock_group *g = group_of_mutexes(m, 0, N);
    STEP(surelock_group_unlock(NULL)); /* an errmsg of its own to start from */
    STEP(surelock_group_lock(g));
    STEP(surelock_group_lock(g));
    AGENT(do_group_unlock, g);
    STEP(surelock_group_unlock(g));
    STEP(surelock_group_unlock(g));
    AGENT(do_lock, m[5]);
    STEP(surelock_group_trylock(g));
    STEP(surelock_group_timedlock(g, MS));
    AGENT(do_unlock, m[5]);
    STEP(surelock_mutex_lock(m[1]));
    STEP(surelock_group_lock(g));
    STEP(surelock_mutex_unlock(m[1]));
    AGENT(do_lock, m[6]);
    agent_stop(&agent_a); /* dies holding m[6] */
    agent_start(&agent_a);
    STEP(surelock_group_trylock(g));
    STEP(surelock_group_unlock(g));
    STEP(surelock_group_timedlock(g, MS));
    void *cm[2] = {c, m[2]}; /* a cond wait on a member gives it back and retakes it */
    STEP(cond_timedwait_1ms(cm));
    STEP(surelock_group_unlock(g));
    STEP(surelock_group_add_rlock(g, r[0]));
    STEP(surelock_group_add_rlock(g, r[1]));
    STEP(surelock_rlock_lock(r[0])); /* a held rlock first in the order is re-entered */
    STEP(surelock_group_lock(g));
    note("depth", (int)surelock_rlock_depth(r[0]), "");
    STEP(surelock_group_unlock(g));
    STEP(surelock_rlock_lock(r[1])); /* a held rlock after an unheld one is EDEADLK */
    STEP(surelock_rlock_unlock(r[0]));
    STEP(surelock_group_lock(g));
    STEP(surelock_rlock_unlock(r[1]));
    STEP(surelock_group_add_rwlock(g, rw, SURELOCK_EXCLUSIVE)); /* a member with no word */
    STEP(surelock_rwlock_rdlock(rw));
    STEP(surelock_group_lock(g));
    STEP(surelock_rwlock_unlock(rw));
    STEP(surelock_group_lock(g));
    STEP(surelock_group_unlock(g));
    for (int i = 0; i < N; i++) {
        AGENT(do_trylock, m[i]);
        AGENT(do_unlock, m[i]);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    for (int i = 0; i < N; i++) EXPECT_RC(surelock_mutex_free(m[i]), 0);
    for (int i = 0; i < 2; i++) EXPECT_RC(surelock_rlock_free(r[i]), 0);
    EXPECT_RC(surelock_rwlock_free(rw), 0);
    EXPECT_RC(surelock_cond_free(c), 0);
}

static void forced_fallback_gives_the_same_codes_and_messages_as_transactions(void **state)
{
    (void)state;
    static char with[sizeof transcript];
    counts before = now_counts();
    run_script();
    counts after = now_counts();
    memcpy(with, transcript, sizeof with);
    if (transactions_in_use() && after.committed == before.committed)
        fail_msg("transactions in use, but the script committed none");

    surelock_testing_forbid_transactions(1);
    before = now_counts();
    run_script();
    after = now_counts();
    assert_int_equal(after.committed + after.refused + after.failed,
                     before.committed + before.refused + before.failed);
    assert_string_equal(transcript, with);
    if (strstr(with, "EOWNERDEAD") == NULL || strstr(with, "EDEADLK") == NULL ||
        strstr(with, "ETIMEDOUT") == NULL || strstr(with, "EPERM") == NULL)
        fail_msg("the script no longer provokes every code:\n%s", with);
}

/* ---- fork ------------------------------------------------------------------------------------ */

static surelock_mutex *fork_m[N];
static surelock_group *fork_g;

static int child_takes_the_group(void *arg)
{
    (void)arg;
    for (int r = 0; r < 100; r++) {
        CHILD_EXPECT_RC(surelock_group_lock(fork_g), 0);
        CHILD_EXPECT_RC(surelock_mutex_trylock(fork_m[r % N]), EDEADLK);
        CHILD_EXPECT_RC(surelock_group_unlock(fork_g), 0);
    }
    for (int i = 0; i < N; i++) {
        CHILD_EXPECT_RC(surelock_mutex_trylock(fork_m[i]), 0);
        CHILD_EXPECT_RC(surelock_mutex_unlock(fork_m[i]), 0);
    }
    return 0;
}

static void a_fork_child_takes_and_releases_the_group_as_its_parent_does(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) fork_m[i] = new_mutex();
    fork_g = group_of_mutexes(fork_m, 0, N);
    EXPECT_RC(surelock_group_lock(fork_g), 0); /* the parent has used transactions (or not) */
    EXPECT_RC(surelock_group_unlock(fork_g), 0);
    child_expect_ok_at(__LINE__, child_spawn_tracked(child_takes_the_group, NULL, 30), 30000);
    EXPECT_RC(surelock_group_lock(fork_g), 0);
    EXPECT_RC(surelock_group_unlock(fork_g), 0);
    expect_free(fork_m, N);
    EXPECT_RC(surelock_group_free(fork_g), 0);
    for (int i = 0; i < N; i++) EXPECT_RC(surelock_mutex_free(fork_m[i]), 0);
}

/* ---- a CPU that lists RTM but aborts every transaction ------------------------------------ */

static surelock_mutex *broken_m[N];
static surelock_group *broken_g;

static int lock_with_broken_tsx(void)
{
    if (surelock_testing_transactions_in_use() != 1) return 77; /* nothing to give up here */
    surelock_testing_abort_transactions(1);
    counts before = now_counts();
    for (int r = 0; r < 1000; r++) {
        CHILD_EXPECT_RC(surelock_group_lock(broken_g), 0);
        CHILD_EXPECT_RC(surelock_mutex_trylock(broken_m[r % N]), EDEADLK);
        CHILD_EXPECT_RC(surelock_group_unlock(broken_g), 0);
    }
    counts after = now_counts();
    CHILD_CHECK(after.committed == before.committed);
    /* It stopped trying after a few dozen failures instead of paying one per call. */
    CHILD_CHECK(after.failed - before.failed >= 16 && after.failed - before.failed <= 128);
    CHILD_CHECK(surelock_testing_transactions_in_use() == 0);
    for (int i = 0; i < N; i++) {
        CHILD_EXPECT_RC(surelock_mutex_trylock(broken_m[i]), 0);
        CHILD_EXPECT_RC(surelock_mutex_unlock(broken_m[i]), 0);
    }
    return 0;
}

static int child_with_broken_tsx(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++) CHILD_EXPECT_RC(surelock_mutex_new(&broken_m[i]), 0);
    CHILD_EXPECT_RC(surelock_group_new(&broken_g), 0);
    for (int i = 0; i < N; i++) CHILD_EXPECT_RC(surelock_group_add_mutex(broken_g, broken_m[i]), 0);
    int rc = lock_with_broken_tsx();
    CHILD_EXPECT_RC(surelock_group_free(broken_g), 0);
    for (int i = 0; i < N; i++) CHILD_EXPECT_RC(surelock_mutex_free(broken_m[i]), 0);
    return rc;
}

static void a_process_whose_transactions_always_abort_soon_stops_trying(void **state)
{
    (void)state;
    int status = child_reap_at(__LINE__, child_spawn_tracked(child_with_broken_tsx, NULL, 30),
                               30000);
    if (child_exit_code(status) == 77) {
        printf("# transactions are not in use here: nothing to give up\n");
        return;
    }
    assert_int_equal(child_exit_code(status), 0);
}

#define T(f) TEST_WITH_SETUP_TEARDOWN(f)
#define TEST_WITH_SETUP_TEARDOWN(f) {#f, f, test_setup, test_teardown, (void *)#f}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(groups_exclude_direct_lockers_and_overlapping_groups_while_transactions_commit),
        T(a_group_unlock_wakes_a_thread_asleep_on_one_of_its_members),
        T(a_member_whose_owner_died_makes_the_group_return_eownerdead_once),
        T(an_rlock_member_entered_again_stays_held_after_the_group_unlock),
        T(forced_fallback_gives_the_same_codes_and_messages_as_transactions),
        T(a_fork_child_takes_and_releases_the_group_as_its_parent_does),
        T(a_process_whose_transactions_always_abort_soon_stops_trying),
    };
    return cmocka_run_group_tests_name("group_transaction", tests, watchdog_start,
                                       watchdog_stop);
}
