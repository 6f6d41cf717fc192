/*
 * test_deadlock.c — deadlock detection and the wait dump (issue 14) through the public header
 * only, against the real shared libsurelock.so.1. Helpers and rules: support/bounded.h.
 *
 * A wait that would close a cycle of waits returns EDEADLK at once, naming the cycle; exactly
 * one thread of a cycle is refused; legal programs (holders about to release, holders that
 * exit, locks freed after their last unlock, fork children, lock groups) never see EDEADLK.
 * The binary re-runs itself (execv of /proc/self/exe) for what depends on the environment
 * at the library's first use: SURELOCK_DEADLOCK_DETECTION=0 and SURELOCK_DUMP_ON=SIGQUIT.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <surelock.h>

#include "support/bounded.h"

/* ---- helpers ----------------------------------------------------------------------------------- */

static int do_rlock(void *l) { return surelock_rlock_lock(l); }
static int do_runlock(void *l) { return surelock_rlock_unlock(l); }
static int do_mlock(void *m) { return surelock_mutex_lock(m); }
static int do_munlock(void *m) { return surelock_mutex_unlock(m); }
static int do_rdlock(void *l) { return surelock_rwlock_rdlock(l); }
static int do_wrlock(void *l) { return surelock_rwlock_wrlock(l); }
static int do_rwunlock(void *l) { return surelock_rwlock_unlock(l); }
static int do_glock(void *g) { return surelock_group_lock(g); }
static int do_gunlock(void *g) { return surelock_group_unlock(g); }

/* Posts fn(arg) to an agent and returns once the agent sleeps inside it (a blocking call on
 * a lock another thread holds). The agent announces itself first, so a sleep seen afterwards
 * is the call's own. */
typedef struct blocking_call {
    agent_fn fn;
    void *arg;
    flag entering;
} blocking_call;
static blocking_call calls[8];

static int announce_then_call(void *p)
{
    blocking_call *c = p;
    flag_raise(&c->entering);
    return c->fn(c->arg);
}

static void post_and_wait_asleep(agent *a, blocking_call *c, agent_fn fn, void *arg)
{
    c->fn = fn;
    c->arg = arg;
    flag_init(&c->entering);
    agent_post(a, announce_then_call, c);
    assert_true(flag_wait(&c->entering, 1, WAIT_LIMIT_MS));
    assert_int_equal(wait_until_asleep(a->tid, ASLEEP_LIMIT_MS), 1);
}

static surelock_rlock *global(const char *name)
{
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_global(name, &l), 0);
    return l;
}

/* Whether `text` matches `format` exactly, where every %llu in the format is a number that is
 * stored in nums[] (up to 8). A literal % is not supported (no format has one). */
static bool matches(const char *text, const char *format, unsigned long long nums[8])
{
    int k = 0;
    const char *t = text;
    for (const char *f = format; *f != '\0';) {
        if (strncmp(f, "%llu", 4) == 0) {
            char *end;
            if (*t < '0' || *t > '9' || k == 8) return false;
            nums[k++] = strtoull(t, &end, 10);
            t = end;
            f += 4;
        } else if (*f++ != *t++) {
            return false;
        }
    }
    return *t == '\0';
}

#define EXPECT_MATCH(text, format, nums)                                                       \
    do {                                                                                       \
        if (!matches((text), (format), (nums)))                                                \
            fail_msg("line %d: \"%s\"\n does not match \"%s\"", __LINE__, (text), (format));    \
    } while (0)

static agent a1, a2, a3;

/* ================================================================================================
 * Cycles are refused, naming the cycle
 * ============================================================================================== */

static void two_threads_taking_two_global_rlocks_in_opposite_orders_get_one_edeadlk(void **state)
{
    (void)state;
    surelock_rlock *a = global("deadlock-test:libA"), *b = global("deadlock-test:libB");
    agent_start(&a1);
    agent_start(&a2);
    EXPECT_RC(agent_call(&a1, do_rlock, a), 0);
    EXPECT_RC(agent_call(&a2, do_rlock, b), 0);
    post_and_wait_asleep(&a1, &calls[0], do_rlock, b); /* a1 waits for b, held by a2 */
    /* a2 asking for a closes the cycle: refused at once, naming it. */
    EXPECT_RC(agent_call(&a2, do_rlock, a), EDEADLK);
    unsigned long long n[8];
    EXPECT_MATCH(a2.errmsg,
                 "surelock_rlock_lock: deadlock: thread %llu waits for rlock "
                 "'deadlock-test:libA' held by thread %llu, which waits for rlock "
                 "'deadlock-test:libB' held by thread %llu",
                 n);
    assert_true(n[0] == n[2] && n[0] != n[1]);
    assert_false(agent_done(&a1)); /* the other thread still waits: it was not refused */
    EXPECT_RC(agent_call(&a2, do_runlock, b), 0); /* the refused one backs off */
    EXPECT_RC(agent_wait(&a1), 0);                /* and the other gets its lock */
    EXPECT_RC(agent_call(&a1, do_runlock, b), 0);
    EXPECT_RC(agent_call(&a1, do_runlock, a), 0);
    agent_stop(&a1);
    agent_stop(&a2);
}

static int timed_mlock_long(void *m) { return surelock_mutex_timedlock(m, 60ull * 1000 * MS); }

static void a_cycle_of_three_mutexes_is_refused_to_the_last_waiter_also_when_timed(void **state)
{
    (void)state;
    surelock_mutex *m[3] = {new_mutex(), new_mutex(), new_mutex()};
    agent *ag[3] = {&a1, &a2, &a3};
    for (int i = 0; i < 3; i++) {
        agent_start(ag[i]);
        EXPECT_RC(agent_call(ag[i], do_mlock, m[i]), 0);
    }
    post_and_wait_asleep(&a1, &calls[0], do_mlock, m[1]);
    post_and_wait_asleep(&a2, &calls[1], timed_mlock_long, m[2]);
    uint64_t t0 = now_ns();
    EXPECT_RC(agent_call(&a3, timed_mlock_long, m[0]), EDEADLK); /* at once, not in 60 s */
    assert_true(now_ns() - t0 < 10000 * MS);
    unsigned long long n[8];
    EXPECT_MATCH(a3.errmsg,
                 "surelock_mutex_timedlock: deadlock: thread %llu waits for mutex #%llu held by "
                 "thread %llu, which waits for mutex #%llu held by thread %llu, which waits for "
                 "mutex #%llu held by thread %llu",
                 n);
    assert_true(n[0] == n[6] && n[0] != n[2] && n[2] != n[4] && n[4] != n[0]);
    assert_true(n[1] != n[3] && n[3] != n[5] && n[5] != n[1]);
    assert_false(agent_done(&a1));
    assert_false(agent_done(&a2));
    EXPECT_RC(agent_call(&a3, do_munlock, m[2]), 0);
    EXPECT_RC(agent_wait(&a2), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, m[2]), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, m[1]), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m[1]), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m[0]), 0);
    for (int i = 0; i < 3; i++) {
        agent_stop(ag[i]);
        EXPECT_RC(surelock_mutex_free(m[i]), 0);
    }
}

static void an_rwlock_read_by_several_threads_is_a_wait_on_each_reader(void **state)
{
    (void)state;
    surelock_rwlock *r = new_rwlock();
    surelock_mutex *m = new_mutex();
    agent_start(&a1);
    agent_start(&a2);
    agent_start(&a3);
    EXPECT_RC(agent_call(&a1, do_rdlock, r), 0);
    EXPECT_RC(agent_call(&a2, do_rdlock, r), 0);
    EXPECT_RC(agent_call(&a3, do_mlock, m), 0);
    post_and_wait_asleep(&a2, &calls[0], do_mlock, m); /* reader a2 waits for a3's mutex */
    /* a3 wanting to write waits for both readers; a2 waits for a3: a cycle through a2. */
    EXPECT_RC(agent_call(&a3, do_wrlock, r), EDEADLK);
    unsigned long long n[8];
    EXPECT_MATCH(a3.errmsg,
                 "surelock_rwlock_wrlock: deadlock: thread %llu waits for rwlock #%llu held by "
                 "thread %llu, which waits for mutex #%llu held by thread %llu",
                 n);
    assert_true(n[0] == n[4] && n[2] != n[0]);
    EXPECT_RC(agent_call(&a3, do_munlock, m), 0);
    EXPECT_RC(agent_wait(&a2), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, m), 0);
    EXPECT_RC(agent_call(&a2, do_rwunlock, r), 0);
    /* Now only a1 reads, and it does not wait: a3's write waits and is not refused. */
    EXPECT_RC(agent_call(&a3, do_mlock, m), 0);
    blocking_call *c = &calls[1];
    post_and_wait_asleep(&a3, c, do_wrlock, r);
    EXPECT_RC(agent_call(&a1, do_rwunlock, r), 0);
    EXPECT_RC(agent_wait(&a3), 0);
    EXPECT_RC(agent_call(&a3, do_rwunlock, r), 0);
    EXPECT_RC(agent_call(&a3, do_munlock, m), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    agent_stop(&a3);
    EXPECT_RC(surelock_rwlock_free(r), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

static void a_reader_waiting_behind_a_writer_closes_a_cycle_through_the_writer(void **state)
{
    (void)state;
    surelock_rwlock *r = new_rwlock();
    surelock_mutex *m = new_mutex();
    agent_start(&a1);
    agent_start(&a2);
    EXPECT_RC(agent_call(&a1, do_wrlock, r), 0);
    EXPECT_RC(agent_call(&a2, do_mlock, m), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, m);
    EXPECT_RC(agent_call(&a2, do_rdlock, r), EDEADLK);
    unsigned long long n[8];
    EXPECT_MATCH(a2.errmsg,
                 "surelock_rwlock_rdlock: deadlock: thread %llu waits for rwlock #%llu held by "
                 "thread %llu, which waits for mutex #%llu held by thread %llu",
                 n);
    EXPECT_RC(agent_call(&a2, do_munlock, m), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m), 0);
    EXPECT_RC(agent_call(&a1, do_rwunlock, r), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    EXPECT_RC(surelock_rwlock_free(r), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

/* A reader waits only for a writer: the one holding the rwlock or those waiting for it (writer
 * preference), never for other readers. Here a1 reads r and sleeps on a2's mutex; a3 waits to
 * write r (timed), so a2's read try fails; a3 then times out and returns before a2's walk
 * (a2 is held in the clock read between its try and the walk, see clock_gettime below). At
 * the walk r is only read, by a1: no cycle, and a2 reads at once. Refused before the fix. */
static _Atomic pid_t hold_clock_of; /* the thread whose next clock read waits for... */
static flag hold_clock_until;        /* ...this flag */

/* Interposes the library's clock reads (its PLT resolves to the executable's symbol): the
 * armed thread's next one, which is Wait::deadline() in the rwlock's blocking path (after its
 * try failed, before the deadlock walk), waits for hold_clock_until. Every other read passes
 * straight to the kernel. */
int clock_gettime(clockid_t clock, struct timespec *ts)
{
    if (hold_clock_of != 0 && hold_clock_of == (pid_t)syscall(SYS_gettid)) {
        hold_clock_of = 0;
        flag_wait(&hold_clock_until, 1, WAIT_LIMIT_MS);
    }
    return (int)syscall(SYS_clock_gettime, clock, ts);
}

static int do_timedwrlock_then_raise(void *l)
{
    int rc = surelock_rwlock_timedwrlock(l, 300 * MS);
    flag_raise(&hold_clock_until);
    return rc;
}

static int do_timedrdlock(void *l) { return surelock_rwlock_timedrdlock(l, 20000 * MS); }

static void a_reader_is_not_refused_when_the_writer_it_queued_behind_left_before_the_walk(void **state)
{
    (void)state;
    surelock_rwlock *r = new_rwlock();
    surelock_mutex *m = new_mutex();
    agent_start(&a1);
    agent_start(&a2);
    agent_start(&a3);
    flag_init(&hold_clock_until);
    EXPECT_RC(agent_call(&a1, do_rdlock, r), 0);
    EXPECT_RC(agent_call(&a2, do_mlock, m), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, m);                    /* a1 waits for a2 */
    post_and_wait_asleep(&a3, &calls[1], do_timedwrlock_then_raise, r); /* a3 keeps readers out */
    hold_clock_of = a2.tid;
    EXPECT_RC(agent_call(&a2, do_timedrdlock, r), 0);
    EXPECT_RC(agent_wait(&a3), ETIMEDOUT);
    EXPECT_RC(agent_call(&a2, do_rwunlock, r), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, m), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m), 0);
    EXPECT_RC(agent_call(&a1, do_rwunlock, r), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    agent_stop(&a3);
    EXPECT_RC(surelock_rwlock_free(r), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

/* The cycle a reader closes behind a waiting writer goes through that writer, and says so:
 * a1 reads r and waits for a2's mutex; a3 waits to write r (for a1); a2's read queues behind
 * a3. */
static void a_reader_queued_behind_a_waiting_writer_closes_the_cycle_through_it(void **state)
{
    (void)state;
    surelock_rwlock *r = new_rwlock();
    surelock_mutex *m = new_mutex();
    agent_start(&a1);
    agent_start(&a2);
    agent_start(&a3);
    EXPECT_RC(agent_call(&a1, do_rdlock, r), 0);
    EXPECT_RC(agent_call(&a2, do_mlock, m), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, m);
    post_and_wait_asleep(&a3, &calls[1], do_wrlock, r);
    EXPECT_RC(agent_call(&a2, do_rdlock, r), EDEADLK);
    unsigned long long n[8];
    EXPECT_MATCH(a2.errmsg,
                 "surelock_rwlock_rdlock: deadlock: thread %llu waits for rwlock #%llu behind a "
                 "write waited for by thread %llu, which waits for rwlock #%llu held by thread "
                 "%llu, which waits for mutex #%llu held by thread %llu",
                 n);
    assert_true(n[0] == n[6] && n[1] == n[3] && n[2] != n[4] && n[2] != n[0]);
    EXPECT_RC(agent_call(&a2, do_munlock, m), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m), 0);
    EXPECT_RC(agent_call(&a1, do_rwunlock, r), 0);
    EXPECT_RC(agent_wait(&a3), 0);
    EXPECT_RC(agent_call(&a3, do_rwunlock, r), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    agent_stop(&a3);
    EXPECT_RC(surelock_rwlock_free(r), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
}

/* The dump copies other threads' read-hold tables while they grow (the old table freed) and
 * while threads exit (freed), so a stale copy reads reused memory as lock addresses. Those
 * must only ever go through the fault-proof copy: forming a member address from a misaligned
 * one was undefined behaviour, and the ASan+UBSan build (halt_on_error) aborted here within
 * seconds before the fix. The dump must return 0 throughout. */
#define CHURN_LOCKS 64
static surelock_rwlock *churn_locks[CHURN_LOCKS];
static atomic_bool churn_stop;

static void *hold_table_churner(void *arg)
{
    (void)arg;
    for (int n = 5; n <= CHURN_LOCKS; n *= 2) { /* 8 -> 16 -> ... -> 128 slots */
        for (int i = 0; i < n; i++)
            if (surelock_rwlock_rdlock(churn_locks[i]) != 0) return (void *)1;
        for (int k = 0; k < 8; k++) { /* refill what was just freed with odd bytes */
            char *p = malloc((size_t)64 << (k % 4));
            if (p != NULL) memset(p, 0x5b + k, (size_t)64 << (k % 4));
            free(p);
        }
        for (int i = 0; i < n; i++)
            if (surelock_rwlock_unlock(churn_locks[i]) != 0) return (void *)1;
    }
    return NULL;
}

static void hold_table_spawner(void *arg)
{
    (void)arg;
    while (!atomic_load(&churn_stop)) {
        pthread_t t;
        void *bad = NULL;
        if (pthread_create(&t, NULL, hold_table_churner, NULL) != 0) return;
        pthread_join(t, &bad);
        if (bad != NULL) atomic_store(&churn_stop, true);
    }
}

static void the_dump_copes_with_hold_tables_freed_and_reused_while_it_reads_them(void **state)
{
    (void)state;
    for (int i = 0; i < CHURN_LOCKS; i++) churn_locks[i] = new_rwlock();
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(devnull >= 0);
    atomic_store(&churn_stop, false);
    static helper spawners[3];
    for (int i = 0; i < 3; i++) helper_start(&spawners[i], hold_table_spawner, NULL);
    uint64_t end = now_ns() + 3000 * MS;
    while (now_ns() < end && !atomic_load(&churn_stop)) EXPECT_RC(surelock_dump_waits(devnull), 0);
    assert_false(atomic_load(&churn_stop)); /* the churners' own calls all succeeded */
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 3; i++) JOIN(&spawners[i]);
    close(devnull);
    for (int i = 0; i < CHURN_LOCKS; i++) EXPECT_RC(surelock_rwlock_free(churn_locks[i]), 0);
}

static void a_group_waiting_for_a_member_is_refused_and_holds_nothing(void **state)
{
    (void)state;
    surelock_mutex *m1 = new_mutex(), *m2 = new_mutex(), *other = new_mutex();
    surelock_group *g = NULL;
    EXPECT_RC(surelock_group_new(&g), 0);
    EXPECT_RC(surelock_group_add_mutex(g, m1), 0);
    EXPECT_RC(surelock_group_add_mutex(g, m2), 0);
    agent_start(&a1);
    agent_start(&a2);
    EXPECT_RC(agent_call(&a1, do_mlock, m2), 0);    /* the group's second member */
    EXPECT_RC(agent_call(&a2, do_mlock, other), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, other);
    EXPECT_RC(agent_call(&a2, do_glock, g), EDEADLK); /* took m1, waits for m2: refused */
    EXPECT_TEXT(a2.errmsg, "surelock_group_lock: deadlock: thread");
    EXPECT_RC(surelock_mutex_trylock(m1), 0); /* the group gave m1 back */
    EXPECT_RC(surelock_mutex_unlock(m1), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, other), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, other), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m2), 0);
    EXPECT_RC(agent_call(&a2, do_glock, g), 0);
    EXPECT_RC(agent_call(&a2, do_gunlock, g), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_mutex_free(m1), 0);
    EXPECT_RC(surelock_mutex_free(m2), 0);
    EXPECT_RC(surelock_mutex_free(other), 0);
}

static surelock_cond *cv;
static surelock_mutex *cv_mutex;
static int cond_wait_on_cv(void *unused)
{
    (void)unused;
    return surelock_cond_wait(cv, cv_mutex);
}

static void a_cond_wait_whose_reacquire_would_close_a_cycle_returns_edeadlk_without_the_mutex(
    void **state)
{
    (void)state;
    surelock_mutex *x = new_mutex();
    cv_mutex = new_mutex();
    EXPECT_RC(surelock_cond_new(&cv), 0);
    agent_start(&a1);
    agent_start(&a2);
    EXPECT_RC(agent_call(&a1, do_mlock, x), 0);
    EXPECT_RC(agent_call(&a1, do_mlock, cv_mutex), 0);
    post_and_wait_asleep(&a1, &calls[0], cond_wait_on_cv, NULL); /* releases cv_mutex */
    EXPECT_RC(agent_call(&a2, do_mlock, cv_mutex), 0);
    post_and_wait_asleep(&a2, &calls[1], do_mlock, x); /* waits for a1, which is not waiting */
    EXPECT_RC(surelock_cond_signal(cv), 0);
    /* a1 wakes and must re-acquire cv_mutex, held by a2, which waits for x, held by a1. */
    EXPECT_RC(agent_wait(&a1), EDEADLK);
    EXPECT_TEXT(a1.errmsg, "surelock_cond_wait: deadlock: thread");
    EXPECT_RC(agent_call(&a1, do_munlock, cv_mutex), EPERM); /* not held */
    EXPECT_RC(agent_call(&a1, do_munlock, x), 0);
    EXPECT_RC(agent_wait(&a2), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, x), 0);
    EXPECT_RC(agent_call(&a2, do_munlock, cv_mutex), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    EXPECT_RC(surelock_cond_free(cv), 0);
    EXPECT_RC(surelock_mutex_free(cv_mutex), 0);
    EXPECT_RC(surelock_mutex_free(x), 0);
}

/* ================================================================================================
 * Legal programs never get EDEADLK
 * ============================================================================================== */

static void a_holder_that_exited_makes_no_cycle_and_its_recycled_record_is_a_new_thread(void **state)
{
    (void)state;
    surelock_mutex *a = new_mutex(), *b = new_mutex(), *c = new_mutex();
    agent_start(&a1);
    agent_start(&a2);
    EXPECT_RC(agent_call(&a1, do_mlock, a), 0);
    EXPECT_RC(agent_call(&a2, do_mlock, b), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, b);
    agent_stop(&a2); /* exits holding b: a1 gets it, owner died */
    EXPECT_RC(agent_wait(&a1), EOWNERDEAD);
    /* a3 (possibly on a2's recycled record) holds c and waits for a, which a1 holds. */
    agent_start(&a3);
    EXPECT_RC(agent_call(&a3, do_mlock, c), 0);
    post_and_wait_asleep(&a3, &calls[1], do_mlock, a);
    EXPECT_RC(agent_call(&a1, do_mlock, c), EDEADLK);
    EXPECT_RC(agent_call(&a1, do_munlock, a), 0);
    EXPECT_RC(agent_wait(&a3), 0);
    EXPECT_RC(agent_call(&a3, do_munlock, a), 0);
    EXPECT_RC(agent_call(&a3, do_munlock, c), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, b), 0);
    agent_stop(&a1);
    agent_stop(&a3);
    EXPECT_RC(surelock_mutex_free(a), 0);
    EXPECT_RC(surelock_mutex_free(b), 0);
    EXPECT_RC(surelock_mutex_free(c), 0);
}

/* Groups take members one at a time in one global order: whatever groups several threads
 * lock at once, none ever waits in a cycle, so none is ever refused. (A group is used by one
 * thread at a time: each thread has its own groups, over the same shared locks.) */
enum { GROUP_THREADS = 4, GROUP_LOCKS = 6, GROUPS = 4, GROUP_ROUNDS = 3000 };
static surelock_group *groups[GROUP_THREADS][GROUPS];
static atomic_int group_failures;
static char group_failure_text[ERRMSG_SIZE];
static gate group_gate;

static void group_worker(void *arg)
{
    int t = (int)(uintptr_t)arg;
    unsigned seed = (unsigned)t * 2654435761u + 1;
    if (!gate_pass(&group_gate)) return;
    for (int i = 0; i < GROUP_ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        surelock_group *g = groups[t][(seed >> 16) % GROUPS];
        int rc = surelock_group_lock(g);
        if (rc != 0) {
            if (atomic_fetch_add(&group_failures, 1) == 0)
                snprintf(group_failure_text, sizeof group_failure_text, "group_lock: %s: %s",
                         errname(rc), surelock_errmsg());
            continue;
        }
        surelock_group_unlock(g);
    }
}

static void lock_groups_never_report_a_deadlock_between_each_other(void **state)
{
    (void)state;
    surelock_mutex *m[GROUP_LOCKS / 2];
    surelock_rwlock *r[GROUP_LOCKS / 2];
    for (int i = 0; i < GROUP_LOCKS / 2; i++) {
        m[i] = new_mutex();
        r[i] = new_rwlock();
    }
    unsigned seed = 7;
    for (int t = 0; t < GROUP_THREADS; t++)
        for (int g = 0; g < GROUPS; g++) {
            surelock_group *gr = NULL;
            EXPECT_RC(surelock_group_new(&gr), 0);
            groups[t][g] = gr;
            for (int k = 0; k < GROUP_LOCKS; k++) { /* random members, added in random order */
                seed = seed * 1103515245u + 12345u;
                int i = (int)((seed >> 16) % GROUP_LOCKS);
                if ((seed >> 8) & 1) continue;
                int rc = i % 2 ? surelock_group_add_mutex(gr, m[i / 2])
                               : surelock_group_add_rwlock(gr, r[i / 2],
                                                           (seed >> 9) & 1 ? SURELOCK_SHARED
                                                                           : SURELOCK_EXCLUSIVE);
                assert_true(rc == 0 || rc == EEXIST);
            }
            int rc = surelock_group_add_mutex(gr, m[g % (GROUP_LOCKS / 2)]); /* non-empty */
            assert_true(rc == 0 || rc == EEXIST);
        }
    atomic_store(&group_failures, 0);
    gate_init(&group_gate);
    static helper t[GROUP_THREADS];
    for (int i = 0; i < GROUP_THREADS; i++) helper_start(&t[i], group_worker, (void *)(uintptr_t)i);
    gate_open(&group_gate, GROUP_THREADS);
    for (int i = 0; i < GROUP_THREADS; i++) JOIN(&t[i]);
    gate_destroy(&group_gate);
    if (atomic_load(&group_failures) != 0)
        fail_msg("%d group locks failed; first: %s", atomic_load(&group_failures),
                 group_failure_text);
    for (int t = 0; t < GROUP_THREADS; t++)
        for (int g = 0; g < GROUPS; g++) EXPECT_RC(surelock_group_free(groups[t][g]), 0);
    for (int i = 0; i < GROUP_LOCKS / 2; i++) {
        EXPECT_RC(surelock_mutex_free(m[i]), 0);
        EXPECT_RC(surelock_rwlock_free(r[i]), 0);
    }
}

/* The refcount pattern: the last of several contending threads frees the mutex right after
 * its unlock, round after round, while the others' waits are registered and walked. Under
 * AddressSanitizer, a walk or dump that read a freed lock fails the run. */
enum { FREE_THREADS = 4, FREE_ROUNDS = 3000 };
static surelock_mutex *_Atomic round_mutex[FREE_ROUNDS];
static atomic_int round_users[FREE_ROUNDS];
static atomic_int free_failures;
static gate free_gate;

static void free_worker(void *arg)
{
    (void)arg;
    if (!gate_pass(&free_gate)) return;
    for (int r = 0; r < FREE_ROUNDS; r++) {
        surelock_mutex *m;
        while ((m = atomic_load(&round_mutex[r])) == NULL) sched_yield();
        if (surelock_mutex_lock(m) != 0) atomic_fetch_add(&free_failures, 1);
        if (surelock_mutex_unlock(m) != 0) atomic_fetch_add(&free_failures, 1);
        if (atomic_fetch_sub(&round_users[r], 1) == 1 && surelock_mutex_free(m) != 0)
            atomic_fetch_add(&free_failures, 1);
    }
}

static int dev_null = -1;
static void dump_worker(void *arg)
{
    (void)arg;
    if (!gate_pass(&free_gate)) return;
    for (int i = 0; i < 2000; i++) surelock_dump_waits(dev_null);
}

static void locks_freed_right_after_their_last_unlock_are_never_read_by_a_walk_or_dump(
    void **state)
{
    (void)state;
    dev_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(dev_null >= 0);
    for (int r = 0; r < FREE_ROUNDS; r++) {
        atomic_store(&round_users[r], FREE_THREADS);
        surelock_mutex *m = NULL;
        EXPECT_RC(surelock_mutex_new(&m), 0);
        atomic_store(&round_mutex[r], m);
    }
    atomic_store(&free_failures, 0);
    gate_init(&free_gate);
    static helper t[FREE_THREADS + 1];
    for (int i = 0; i < FREE_THREADS; i++) helper_start(&t[i], free_worker, NULL);
    helper_start(&t[FREE_THREADS], dump_worker, NULL);
    gate_open(&free_gate, FREE_THREADS + 1);
    for (int i = 0; i <= FREE_THREADS; i++) JOIN(&t[i]);
    gate_destroy(&free_gate);
    close(dev_null);
    assert_int_equal(atomic_load(&free_failures), 0);
}

/* A fork child's copies of its parent's other threads do not exist: nothing they "hold" or
 * "wait for" makes a cycle there. */
static surelock_mutex *fork_a, *fork_b;
static int child_locks_a_timed(void *unused)
{
    (void)unused;
    CHILD_EXPECT_RC(surelock_mutex_timedlock(fork_a, 100 * MS), ETIMEDOUT);
    return 0;
}

static void a_fork_child_never_gets_edeadlk_from_its_parents_waiting_threads(void **state)
{
    (void)state;
    fork_a = new_mutex();
    fork_b = new_mutex();
    agent_start(&a1);
    EXPECT_RC(surelock_mutex_lock(fork_b), 0);
    EXPECT_RC(agent_call(&a1, do_mlock, fork_a), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, fork_b); /* a1 waits for us */
    pid_t pid = child_spawn_tracked(child_locks_a_timed, NULL, 30);
    child_expect_ok_at(__LINE__, pid, WAIT_LIMIT_MS);
    /* Here, in the parent, the same wait closes a real cycle. */
    EXPECT_RC(surelock_mutex_timedlock(fork_a, 100 * MS), EDEADLK);
    EXPECT_RC(surelock_mutex_unlock(fork_b), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, fork_b), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, fork_a), 0);
    agent_stop(&a1);
    EXPECT_RC(surelock_mutex_free(fork_a), 0);
    EXPECT_RC(surelock_mutex_free(fork_b), 0);
}

/* ================================================================================================
 * Opt-out
 * ============================================================================================== */

/* Sets up a1 waiting for b while the caller holds b, a1 holds a; the caller then times out
 * asking for a (detection off) or is refused (on). Returns the caller's result. */
static int closing_wait_result(void)
{
    surelock_mutex *a = new_mutex(), *b = new_mutex();
    agent_start(&a1);
    EXPECT_RC(surelock_mutex_lock(b), 0);
    EXPECT_RC(agent_call(&a1, do_mlock, a), 0);
    post_and_wait_asleep(&a1, &calls[0], do_mlock, b);
    int rc = surelock_mutex_timedlock(a, 100 * MS);
    EXPECT_RC(surelock_mutex_unlock(b), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, b), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, a), 0);
    agent_stop(&a1);
    EXPECT_RC(surelock_mutex_free(a), 0);
    EXPECT_RC(surelock_mutex_free(b), 0);
    return rc;
}

static void set_deadlock_detection_turns_it_off_and_on_and_rejects_other_values(void **state)
{
    (void)state;
    EXPECT_RC(surelock_set_deadlock_detection(2), EINVAL);
    EXPECT_ERRMSG("neither 0");
    EXPECT_RC(surelock_set_deadlock_detection(-1), EINVAL);
    EXPECT_RC(surelock_set_deadlock_detection(0), 0);
    EXPECT_RC(closing_wait_result(), ETIMEDOUT);
    EXPECT_RC(surelock_set_deadlock_detection(1), 0);
    EXPECT_RC(closing_wait_result(), EDEADLK);
}

/* Runs this binary again with `mode` as its argument and the environment variable set, its
 * stderr into a pipe; returns the exit status and what it wrote to stderr. */
static int rerun_self(const char *mode, const char *env, char *out, size_t cap)
{
    int fds[2];
    make_pipe(fds);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        if (env != NULL) putenv((char *)env);
        /* The modes test what the library does with a signal's default disposition; one
         * ignored by whoever started the suite (nohup ignores SIGHUP and SIGQUIT) would
         * rightly keep the library's dump out. */
        signal(SIGQUIT, SIG_DFL);
        char *argv[] = {"test_deadlock", (char *)mode, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    uint64_t deadline = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t n = read(fds[0], out + got, cap - 1 - got);
        if (n > 0) {
            got += (size_t)n;
            if (got == cap - 1) break;
            continue;
        }
        if (n == 0 || now_ns() > deadline) break;
        sleep_ms(5);
    }
    out[got] = '\0';
    close(fds[0]);
    int status = 0;
    if (!child_wait(pid, WAIT_LIMIT_MS, &status)) fail_msg("%s did not end", mode);
    return child_exit_code(status);
}

/* Child modes (argv[1]); exit 0 = as expected. */
static int mode_detection_off_by_environment(void)
{
    return closing_wait_result() == ETIMEDOUT ? 0 : 1;
}

static int mode_detection_on_without_environment(void)
{
    return closing_wait_result() == EDEADLK ? 0 : 1;
}

static void surelock_deadlock_detection_0_in_the_environment_turns_it_off(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(rerun_self("--closing-wait-times-out", "SURELOCK_DEADLOCK_DETECTION=0", out,
                                sizeof out),
                     0);
    assert_int_equal(rerun_self("--closing-wait-is-refused", "SURELOCK_DEADLOCK_DETECTION=1", out,
                                sizeof out),
                     0);
    assert_int_equal(rerun_self("--closing-wait-is-refused", NULL, out, sizeof out), 0);
}

/* ================================================================================================
 * The wait dump
 * ============================================================================================== */

/* Reads the dump through a pipe. */
static void dump_to_text(char *out, size_t cap)
{
    int fds[2];
    make_pipe(fds);
    EXPECT_RC(surelock_dump_waits(fds[1]), 0);
    close(fds[1]);
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[0], out + got, cap - 1 - got)) > 0) got += (size_t)n;
    out[got] = '\0';
    close(fds[0]);
}

/* The line of thread `tid` (without its newline), or NULL. */
static const char *line_of_tid(const char *text, pid_t tid, char *line, size_t cap)
{
    char key[48];
    snprintf(key, sizeof key, " (tid %d): ", (int)tid);
    for (const char *p = text; *p != '\0';) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len < cap && memmem(p, len, key, strlen(key)) != NULL) {
            memcpy(line, p, len);
            line[len] = '\0';
            return line;
        }
        p += len + (end ? 1 : 0);
    }
    return NULL;
}

static void dump_waits_writes_each_threads_holds_and_wait_in_the_documented_format(void **state)
{
    (void)state;
    surelock_rlock *a = global("dump-test:libA"), *b = global("dump-test:it's\x01");
    surelock_mutex *m = new_mutex();
    surelock_rwlock *r = new_rwlock();
    EXPECT_RC(surelock_mutex_lock(m), 0); /* this thread has a record too, and holds nothing */
    EXPECT_RC(surelock_mutex_unlock(m), 0);
    agent_start(&a1);
    agent_start(&a2);
    agent_start(&a3);
    EXPECT_RC(agent_call(&a1, do_rlock, a), 0);
    EXPECT_RC(agent_call(&a1, do_mlock, m), 0);
    EXPECT_RC(agent_call(&a2, do_rlock, b), 0);
    EXPECT_RC(agent_call(&a2, do_rdlock, r), 0);
    post_and_wait_asleep(&a1, &calls[0], do_rlock, b);
    post_and_wait_asleep(&a3, &calls[1], do_wrlock, r);
    static char text[65536];
    dump_to_text(text, sizeof text);

    char head[64];
    snprintf(head, sizeof head, "surelock: waits in process %d\n", (int)getpid());
    assert_true(strncmp(text, head, strlen(head)) == 0);
    assert_true(text[strlen(text) - 1] == '\n');
    unsigned long long n1[8], n2[8], n3[8];
    char line[1024];
    assert_non_null(line_of_tid(text, a1.tid, line, sizeof line));
    /* Exclusive holds are listed newest first, then read holds (kept apart, in the thread's
     * read-hold set). */
    EXPECT_MATCH(line,
                 "thread %llu (tid %llu): holds mutex #%llu, rlock 'dump-test:libA'; waits for "
                 "rlock 'dump-test:it\\x27s\\x01' held by thread %llu",
                 n1);
    assert_non_null(line_of_tid(text, a2.tid, line, sizeof line));
    EXPECT_MATCH(line,
                 "thread %llu (tid %llu): holds rlock 'dump-test:it\\x27s\\x01', "
                 "rwlock #%llu (read); not waiting",
                 n2);
    assert_non_null(line_of_tid(text, a3.tid, line, sizeof line));
    EXPECT_MATCH(line,
                 "thread %llu (tid %llu): holds nothing; waits for rwlock #%llu held for reading",
                 n3);
    assert_true(n1[3] == n2[0]);       /* a1 waits for a2 */
    assert_true(n3[2] == n2[2]);       /* a3 waits for the rwlock a2 reads */
    assert_true(n1[1] == (unsigned long long)a1.tid);
    /* Every line but the first is a thread's; the test's own thread is there too. */
    assert_non_null(line_of_tid(text, current_tid(), line, sizeof line));
    EXPECT_MATCH(line, "thread %llu (tid %llu): holds nothing; not waiting", n3);

    EXPECT_RC(surelock_dump_waits(-1), EINVAL);
    EXPECT_RC(agent_call(&a2, do_runlock, b), 0);
    EXPECT_RC(agent_wait(&a1), 0);
    EXPECT_RC(agent_call(&a2, do_rwunlock, r), 0);
    EXPECT_RC(agent_wait(&a3), 0);
    EXPECT_RC(agent_call(&a3, do_rwunlock, r), 0);
    EXPECT_RC(agent_call(&a1, do_runlock, b), 0);
    EXPECT_RC(agent_call(&a1, do_munlock, m), 0);
    EXPECT_RC(agent_call(&a1, do_runlock, a), 0);
    agent_stop(&a1);
    agent_stop(&a2);
    agent_stop(&a3);
    EXPECT_RC(surelock_mutex_free(m), 0);
    EXPECT_RC(surelock_rwlock_free(r), 0);
}

static int mode_sigquit_dumps(void)
{
    surelock_rlock *l = NULL;
    if (surelock_rlock_global("dump-on:held", &l) != 0 || surelock_rlock_lock(l) != 0) return 2;
    raise(SIGQUIT); /* the dump goes to stderr; the process goes on */
    return surelock_rlock_unlock(l) == 0 ? 0 : 3;
}

static volatile sig_atomic_t own_handler_ran;
static void own_handler(int sig)
{
    (void)sig;
    own_handler_ran = 1;
}

static int mode_own_handler_is_kept(void)
{
    signal(SIGQUIT, own_handler); /* before the library's first use */
    surelock_rlock *l = NULL;
    if (surelock_rlock_global("dump-on:held", &l) != 0 || surelock_rlock_lock(l) != 0) return 2;
    raise(SIGQUIT);
    return own_handler_ran && surelock_rlock_unlock(l) == 0 ? 0 : 3;
}

static void surelock_dump_on_sigquit_dumps_to_stderr_and_keeps_a_programs_own_handler(void **state)
{
    (void)state;
    static char out[8192];
    assert_int_equal(rerun_self("--sigquit-dumps", "SURELOCK_DUMP_ON=SIGQUIT", out, sizeof out), 0);
    assert_non_null(strstr(out, "surelock: waits in process "));
    assert_non_null(strstr(out, "): holds rlock 'dump-on:held'; not waiting\n"));
    assert_int_equal(rerun_self("--own-handler-is-kept", "SURELOCK_DUMP_ON=QUIT", out, sizeof out),
                     0);
    assert_null(strstr(out, "surelock: waits"));
}

/* ================================================================================================
 * Scale: 10 000 threads each holding a lock, waiting in one long chain
 * ============================================================================================== */

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
enum { CHAIN = 1000 }; /* sanitizer runtimes: fewer threads (TSan's limit is ~8000) */
#else
enum { CHAIN = 10000 };
#endif
static surelock_mutex *chain_lock[CHAIN];
static atomic_int chain_holding, chain_refused, chain_errors;
static pthread_mutex_t chain_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t chain_cv = PTHREAD_COND_INITIALIZER;
static bool chain_go;

static void chain_start(bool go)
{
    pthread_mutex_lock(&chain_mu);
    chain_go = go;
    pthread_cond_broadcast(&chain_cv);
    pthread_mutex_unlock(&chain_mu);
}

static void *chain_thread(void *arg)
{
    int i = (int)(intptr_t)arg;
    if (surelock_mutex_lock(chain_lock[i]) != 0) atomic_fetch_add(&chain_errors, 1);
    atomic_fetch_add(&chain_holding, 1);
    pthread_mutex_lock(&chain_mu);
    while (!chain_go) pthread_cond_wait(&chain_cv, &chain_mu);
    pthread_mutex_unlock(&chain_mu);
    int next = (i + 1) % CHAIN;
    int rc;
    if (i == CHAIN - 1) {
        /* The closing wait: retried (timed) until every other thread waits in the chain. */
        while ((rc = surelock_mutex_timedlock(chain_lock[next], 20 * MS)) == ETIMEDOUT) {
        }
    } else {
        rc = surelock_mutex_lock(chain_lock[next]);
    }
    if (rc == EDEADLK) atomic_fetch_add(&chain_refused, 1);
    else if (rc == 0) surelock_mutex_unlock(chain_lock[next]);
    else atomic_fetch_add(&chain_errors, 1);
    surelock_mutex_unlock(chain_lock[i]);
    return NULL;
}

static void ten_thousand_threads_in_one_waiting_chain_get_exactly_one_edeadlk_in_bounded_time(
    void **state)
{
    (void)state;
    static pthread_t th[CHAIN];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    for (int i = 0; i < CHAIN; i++) chain_lock[i] = new_mutex();
    chain_start(false);
    int started = 0;
    for (; started < CHAIN; started++)
        if (pthread_create(&th[started], &attr, chain_thread, (void *)(intptr_t)started) != 0)
            break;
    pthread_attr_destroy(&attr);
    if (started < CHAIN) {
        chain_start(true);
        fail_msg("could only start %d threads", started);
    }
    uint64_t deadline = now_ns() + 60000 * MS;
    while (atomic_load(&chain_holding) < CHAIN && now_ns() < deadline) sleep_ms(5);
    assert_int_equal(atomic_load(&chain_holding), CHAIN);
    uint64_t t0 = now_ns();
    chain_start(true);
    for (int i = 0; i < CHAIN; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60;
        if (pthread_timedjoin_np(th[i], NULL, &ts) != 0) {
            surelock_dump_waits(2);
            fail_msg("thread %d of the chain did not finish within 60 s", i);
        }
    }
    print_message("# %d-thread chain resolved in %.1f ms\n", CHAIN, (double)(now_ns() - t0) / 1e6);
    assert_int_equal(atomic_load(&chain_errors), 0);
    assert_int_equal(atomic_load(&chain_refused), 1);
    for (int i = 0; i < CHAIN; i++) EXPECT_RC(surelock_mutex_free(chain_lock[i]), 0);
}

/* ================================================================================================
 * Stress against a reference wait-for graph
 * ============================================================================================== */

/*
 * 8 threads take and release 16 process-wide rlocks in random orders (up to 3 held at once)
 * for 100 000 acquisitions. The test keeps its own wait-for graph under a mutex: "t wants l"
 * before the lock call, "t holds l" after it returns, "l is free" before the unlock call. A
 * thread that records a want and whose graph then has a cycle through it predicts one cycle
 * (cycles are disjoint: each thread waits for one lock, each lock has one holder; and every
 * thread on it truly holds what it is shown holding, since a release is recorded before the
 * unlock call). Each EDEADLK must find such a cycle through the refused thread, with exactly
 * the locks its message names in that order; afterwards predicted == reported (each cycle is
 * refused exactly once), and no run hangs (a missed cycle would: no progress for 20 s fails,
 * after dumping every thread's waits to stderr).
 */
enum { S_THREADS = 8, S_LOCKS = 16, S_ACQUISITIONS = 100000, S_MAX_HELD = 3 };
static surelock_rlock *s_lock[S_LOCKS];
static char s_name[S_LOCKS][32];
static pthread_mutex_t ref_mu = PTHREAD_MUTEX_INITIALIZER;
static int ref_holder[S_LOCKS]; /* thread index, -1 = free */
static int ref_want[S_THREADS]; /* lock index, -1 = none */
static int s_predicted, s_reported;
static atomic_int s_acquisitions, s_failures;
static atomic_bool s_stop;
static char s_failure[2 * ERRMSG_SIZE];
static gate s_gate;

/* Under ref_mu: the number of locks on the cycle through t (their indexes in locks[]), or 0. */
static int ref_cycle(int t, int locks[S_THREADS])
{
    int cur = t, n = 0;
    for (int step = 0; step < S_THREADS; step++) {
        int l = ref_want[cur];
        if (l < 0) return 0;
        int h = ref_holder[l];
        if (h < 0) return 0;
        locks[n++] = l;
        if (h == t) return n;
        cur = h;
    }
    return 0;
}

static void s_fail(const char *what, const char *msg)
{
    if (atomic_fetch_add(&s_failures, 1) == 0)
        snprintf(s_failure, sizeof s_failure, "%s: \"%s\"", what, msg);
    atomic_store(&s_stop, true);
}

/* Under ref_mu: checks an EDEADLK of thread t against the reference graph. */
static void check_refusal(int t, const char *msg)
{
    int locks[S_THREADS];
    int n = ref_cycle(t, locks);
    if (n == 0) {
        s_fail("EDEADLK with no cycle in the reference graph", msg);
        return;
    }
    /* The whole cycle, or (when it does not fit in errmsg) its first k steps and a count. */
    unsigned long long nums[8];
    bool named = false;
    for (int k = n; k >= 1 && !named; k--) {
        char format[1024];
        size_t len = (size_t)snprintf(format, sizeof format, "%s: deadlock: thread %%llu",
                                      strncmp(msg, "surelock_rlock_timedlock", 24) == 0
                                          ? "surelock_rlock_timedlock"
                                          : "surelock_rlock_lock");
        for (int i = 0; i < k; i++)
            len += (size_t)snprintf(format + len, sizeof format - len,
                                    "%s waits for rlock '%s' held by thread %%llu",
                                    i == 0 ? "" : ", which", s_name[locks[i]]);
        if (k < n) snprintf(format + len, sizeof format - len, ", ... (%d threads in the cycle)", n);
        named = matches(msg, format, nums);
    }
    if (!named) s_fail("EDEADLK naming another cycle than the reference", msg);
    s_reported++;
}

static void release_one(int t, int *held, int *n_held, int which)
{
    int l = held[which];
    pthread_mutex_lock(&ref_mu);
    ref_holder[l] = -1;
    pthread_mutex_unlock(&ref_mu);
    if (surelock_rlock_unlock(s_lock[l]) != 0) s_fail("unlock failed", surelock_errmsg());
    held[which] = held[--*n_held];
    (void)t;
}

static void stress_worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    unsigned seed = 0x9e3779b9u * (unsigned)(t + 1);
    int held[S_MAX_HELD], n_held = 0;
    if (!gate_pass(&s_gate)) return;
    while (!atomic_load(&s_stop) && atomic_load(&s_acquisitions) < S_ACQUISITIONS) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        if (n_held == S_MAX_HELD || (n_held > 0 && r % 3 == 0)) {
            release_one(t, held, &n_held, (int)((r >> 4) % (unsigned)n_held));
            continue;
        }
        int l;
        for (;;) { /* a lock this thread does not hold (no re-entry) */
            l = (int)((r >> 4) % S_LOCKS);
            bool mine = false;
            for (int i = 0; i < n_held; i++) mine |= held[i] == l;
            if (!mine) break;
            r = r * 2654435761u + 1;
        }
        int cycle[S_THREADS];
        pthread_mutex_lock(&ref_mu);
        ref_want[t] = l;
        if (ref_cycle(t, cycle) != 0) s_predicted++;
        pthread_mutex_unlock(&ref_mu);
        int rc = (r & 4) ? surelock_rlock_timedlock(s_lock[l], 600ull * 1000 * MS)
                         : surelock_rlock_lock(s_lock[l]);
        pthread_mutex_lock(&ref_mu);
        if (rc == 0) {
            ref_holder[l] = t;
            held[n_held++] = l;
        } else if (rc == EDEADLK) {
            check_refusal(t, surelock_errmsg());
        } else {
            s_fail("lock failed", surelock_errmsg());
        }
        ref_want[t] = -1;
        pthread_mutex_unlock(&ref_mu);
        atomic_fetch_add(&s_acquisitions, 1);
        if (rc == EDEADLK) /* back off: give everything up */
            while (n_held > 0) release_one(t, held, &n_held, n_held - 1);
    }
    while (n_held > 0) release_one(t, held, &n_held, n_held - 1);
}

static void random_lock_orders_on_8_threads_report_exactly_the_cycles_a_reference_graph_predicts(
    void **state)
{
    (void)state;
    for (int l = 0; l < S_LOCKS; l++) {
        snprintf(s_name[l], sizeof s_name[l], "stress:L%02d", l);
        s_lock[l] = global(s_name[l]);
        ref_holder[l] = -1;
    }
    for (int t = 0; t < S_THREADS; t++) ref_want[t] = -1;
    s_predicted = s_reported = 0;
    atomic_store(&s_acquisitions, 0);
    atomic_store(&s_failures, 0);
    atomic_store(&s_stop, false);
    gate_init(&s_gate);
    static helper th[S_THREADS];
    for (int t = 0; t < S_THREADS; t++) helper_start(&th[t], stress_worker, (void *)(intptr_t)t);
    gate_open(&s_gate, S_THREADS);
    int last = -1;
    uint64_t last_change = now_ns();
    for (;;) {
        int done = 0;
        for (int t = 0; t < S_THREADS; t++) done += flag_value(&th[t].done) > 0;
        if (done == S_THREADS) break;
        int now = atomic_load(&s_acquisitions);
        if (now != last) {
            last = now;
            last_change = now_ns();
        } else if (now_ns() - last_change > 20000 * MS) {
            surelock_dump_waits(2);
            fail_msg("no progress for 20 s after %d acquisitions: a missed cycle (dump above)",
                     now);
        }
        sleep_ms(10);
    }
    for (int t = 0; t < S_THREADS; t++) JOIN(&th[t]);
    gate_destroy(&s_gate);
    if (atomic_load(&s_failures) != 0)
        fail_msg("%d failures; first: %s", atomic_load(&s_failures), s_failure);
    print_message("# %d acquisitions, %d cycles predicted, %d refused\n",
                  atomic_load(&s_acquisitions), s_predicted, s_reported);
    assert_true(atomic_load(&s_acquisitions) >= S_ACQUISITIONS);
    assert_int_equal(s_reported, s_predicted);
    assert_true(s_predicted > 0); /* the run did form cycles */
}

int main(int argc, char **argv)
{
    if (argc == 2) {
        if (strcmp(argv[1], "--closing-wait-times-out") == 0)
            return mode_detection_off_by_environment();
        if (strcmp(argv[1], "--closing-wait-is-refused") == 0)
            return mode_detection_on_without_environment();
        if (strcmp(argv[1], "--sigquit-dumps") == 0) return mode_sigquit_dumps();
        if (strcmp(argv[1], "--own-handler-is-kept") == 0) return mode_own_handler_is_kept();
        return 126;
    }
    const struct CMUnitTest tests[] = {
        TEST(two_threads_taking_two_global_rlocks_in_opposite_orders_get_one_edeadlk),
        TEST(a_cycle_of_three_mutexes_is_refused_to_the_last_waiter_also_when_timed),
        TEST(an_rwlock_read_by_several_threads_is_a_wait_on_each_reader),
        TEST(a_reader_waiting_behind_a_writer_closes_a_cycle_through_the_writer),
        TEST(a_reader_is_not_refused_when_the_writer_it_queued_behind_left_before_the_walk),
        TEST(a_reader_queued_behind_a_waiting_writer_closes_the_cycle_through_it),
        TEST(the_dump_copes_with_hold_tables_freed_and_reused_while_it_reads_them),
        TEST(a_group_waiting_for_a_member_is_refused_and_holds_nothing),
        TEST(a_cond_wait_whose_reacquire_would_close_a_cycle_returns_edeadlk_without_the_mutex),
        TEST(a_holder_that_exited_makes_no_cycle_and_its_recycled_record_is_a_new_thread),
        TEST(lock_groups_never_report_a_deadlock_between_each_other),
        TEST(locks_freed_right_after_their_last_unlock_are_never_read_by_a_walk_or_dump),
        TEST(a_fork_child_never_gets_edeadlk_from_its_parents_waiting_threads),
        TEST(set_deadlock_detection_turns_it_off_and_on_and_rejects_other_values),
        TEST(surelock_deadlock_detection_0_in_the_environment_turns_it_off),
        TEST(dump_waits_writes_each_threads_holds_and_wait_in_the_documented_format),
        TEST(surelock_dump_on_sigquit_dumps_to_stderr_and_keeps_a_programs_own_handler),
        TEST(random_lock_orders_on_8_threads_report_exactly_the_cycles_a_reference_graph_predicts),
        TEST(ten_thousand_threads_in_one_waiting_chain_get_exactly_one_edeadlk_in_bounded_time),
    };
    return cmocka_run_group_tests_name("deadlock", tests, watchdog_start, watchdog_stop);
}
