/*
 * test_sem.c — the async FIFO semaphore and mutex (API.md section 5) through the public header
 * only, against the real shared libsurelock.so.1.
 *
 * Rules every test here follows:
 *  - CMocka assertions run on the test's own thread only. Helper threads and callbacks record
 *    what they saw (return codes, order, the thread they ran on, stack addresses) and the test
 *    asserts on it afterwards.
 *  - Threads start behind a gate and every one is joined. Every wait for another thread is
 *    bounded (WAIT_LIMIT_MS, on CLOCK_MONOTONIC), and a watchdog bounds each whole test: a
 *    broken library fails the test, it never hangs it. State shared with helper threads and
 *    callbacks is static, so a thread left stuck by a failed test can never scribble on a later
 *    test's stack.
 *  - "Blocking waiter k is queued" is established before waiter k+1 queues: the thread announces
 *    the call and is then seen asleep in the kernel (/proc/self/task/TID/stat), which for these
 *    calls only happens on the waiter's futex after it joined the queue.
 *  - Nothing measures speed. Timeouts are checked from below only (a timed wait lasts at least
 *    its timeout), with a generous ceiling that only catches "never returns".
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"

#define RACE_ROUNDS 100000
#define CHAIN_LENGTH 100000
/* The chain runs on a thread with this small a stack: recursion per waiter would overflow it. */
#define CHAIN_STACK_SIZE (256u * 1024u)
/* How far apart (bytes) the callbacks of one dispatch may sit on the stack. */
#define CHAIN_STACK_SPREAD_MAX (16u * 1024u)

/* An error return: the code, and a non-empty errmsg right after it. */
#define EXPECT_ERR(call, want)                                                                 \
    do {                                                                                       \
        EXPECT_RC(call, want);                                                                 \
        expect_errmsg_set_at(__LINE__, #call);                                                 \
    } while (0)
static void expect_errmsg_set_at(int line, const char *call)
{
    const char *msg = surelock_errmsg();
    if (msg == NULL) fail_msg("line %d: surelock_errmsg() returned NULL after %s", line, call);
    if (msg[0] == '\0') fail_msg("line %d: surelock_errmsg() is empty after %s failed", line, call);
}

/* Asserts an unsigned 64-bit value with a readable message. */
#define EXPECT_U64(got, want) expect_u64_at((uint64_t)(got), (uint64_t)(want), #got, __LINE__)
static void expect_u64_at(uint64_t got, uint64_t want, const char *what, int line)
{
    if (got != want)
        fail_msg("line %d: %s is %llu, expected %llu", line, what, (unsigned long long)got,
                 (unsigned long long)want);
}

/* Leaves a known failure in the calling thread's errmsg and returns a copy of it. */
static void plant_errmsg(char out[512])
{
    int rc = surelock_sem_release(NULL, 1);
    if (rc != EINVAL) fail_msg("surelock_sem_release(NULL, 1) returned %s", errname(rc));
    save_errmsg(out);
    if (out[0] == '\0') fail_msg("surelock_sem_release(NULL, 1) left errmsg empty");
}

#define EXPECT_ERRMSG_IS(saved)                                                                \
    do {                                                                                       \
        const char *now_ = surelock_errmsg();                                                  \
        if (now_ == NULL || strcmp(now_, (saved)) != 0)                                        \
            fail_msg("line %d: errmsg changed from \"%s\" to \"%s\"", __LINE__, (saved),       \
                     now_ ? now_ : "(NULL)");                                                  \
    } while (0)

/* A distinct non-NULL address to pre-load out-pointers with: they must stay untouched on error. */
static char sentinel_storage;
#define SENTINEL_SEM ((surelock_sem *)(void *)&sentinel_storage)
#define SENTINEL_AMUTEX ((surelock_amutex *)(void *)&sentinel_storage)

static surelock_sem *new_sem(uint64_t permits)
{
    surelock_sem *s = NULL;
    EXPECT_RC(surelock_sem_new(permits, &s), 0);
    assert_non_null(s);
    return s;
}

static surelock_amutex *new_amutex(void)
{
    surelock_amutex *m = NULL;
    EXPECT_RC(surelock_amutex_new(&m), 0);
    assert_non_null(m);
    return m;
}

/* ---- the grant log: the order in which waiters were served -------------------------------- */

#define LOG_MAX 256

static struct grant_log {
    pthread_mutex_t mu;
    int len;
    int ids[LOG_MAX];
} glog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_reset(void)
{
    pthread_mutex_lock(&glog.mu);
    glog.len = 0;
    pthread_mutex_unlock(&glog.mu);
}

static void log_push(int id)
{
    pthread_mutex_lock(&glog.mu);
    if (glog.len < LOG_MAX) glog.ids[glog.len] = id;
    glog.len++;
    pthread_mutex_unlock(&glog.mu);
}

static int log_len(void)
{
    pthread_mutex_lock(&glog.mu);
    int n = glog.len;
    pthread_mutex_unlock(&glog.mu);
    return n;
}

static int log_at(int i)
{
    pthread_mutex_lock(&glog.mu);
    int id = i < glog.len && i < LOG_MAX ? glog.ids[i] : -1;
    pthread_mutex_unlock(&glog.mu);
    return id;
}

/* Waits (bounded) until the log holds at least n entries. */
static bool log_wait_len(int n, unsigned limit_ms)
{
    uint64_t end = now_ns() + (uint64_t)limit_ms * MS;
    while (log_len() < n) {
        if (now_ns() >= end) return false;
        sleep_ms(1);
    }
    return true;
}

static bool log_contains(int id)
{
    bool found = false;
    pthread_mutex_lock(&glog.mu);
    for (int i = 0; i < glog.len && i < LOG_MAX; i++) found |= glog.ids[i] == id;
    pthread_mutex_unlock(&glog.mu);
    return found;
}

/* Asserts that the log is exactly the given ids, in order. */
#define EXPECT_LOG(...)                                                                        \
    do {                                                                                       \
        const int want_[] = {__VA_ARGS__};                                                     \
        expect_log_at(want_, (int)(sizeof want_ / sizeof want_[0]), __LINE__);                \
    } while (0)
static void expect_log_at(const int *want, int n, int line)
{
    char got_text[512] = "", want_text[512] = "";
    int len = log_len();
    for (int i = 0; i < len && i < 32; i++)
        snprintf(got_text + strlen(got_text), sizeof got_text - strlen(got_text), " %d",
                 log_at(i));
    for (int i = 0; i < n; i++)
        snprintf(want_text + strlen(want_text), sizeof want_text - strlen(want_text), " %d",
                 want[i]);
    bool same = len == n;
    for (int i = 0; same && i < n; i++) same = log_at(i) == want[i];
    if (!same) fail_msg("line %d: served in order [%s ], expected [%s ]", line, got_text, want_text);
}

/* ---- probes: the ctx of an async waiter, recording how its callback ran ------------------- */

typedef struct probe {
    int id;
    atomic_int calls;      /* how many times fn ran */
    atomic_int status;     /* the status of the last call */
    pthread_t thread;      /* the thread it last ran on (written before `calls`) */
    surelock_waiter w;     /* the waiter storage, next to its ctx */
} probe;

static void probe_init(probe *p, int id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    atomic_init(&p->calls, 0);
    atomic_init(&p->status, -1);
}

static void probe_fn(void *ctx, int status)
{
    probe *p = ctx;
    p->thread = pthread_self();
    atomic_store(&p->status, status);
    log_push(status == 0 ? p->id : -p->id);
    atomic_fetch_add(&p->calls, 1);
}

static int probe_calls(probe *p)
{
    return atomic_load(&p->calls);
}

/* Queues p on s for n permits and expects EINPROGRESS. */
static void sem_queue(surelock_sem *s, uint64_t n, probe *p)
{
    EXPECT_RC(surelock_sem_acquire_async(s, n, &p->w, probe_fn, p), EINPROGRESS);
}

static void amutex_queue(surelock_amutex *m, probe *p)
{
    EXPECT_RC(surelock_amutex_lock_async(m, &p->w, probe_fn, p), EINPROGRESS);
}

/* Asserts that p's fn ran exactly `calls` times, the last time with `status`, on `thread`. */
#define EXPECT_PROBE(p, want_calls, want_status, on_thread)                                    \
    expect_probe_at((p), (want_calls), (want_status), (on_thread), __LINE__)
static void expect_probe_at(probe *p, int want_calls, int want_status, const pthread_t *on_thread,
                            int line)
{
    int calls = probe_calls(p);
    if (calls != want_calls)
        fail_msg("line %d: fn of waiter %d ran %d times, expected %d", line, p->id, calls,
                 want_calls);
    if (want_calls == 0) return;
    int status = atomic_load(&p->status);
    if (status != want_status)
        fail_msg("line %d: fn of waiter %d got status %s, expected %s", line, p->id,
                 errname(status), errname(want_status));
    if (on_thread != NULL && !pthread_equal(p->thread, *on_thread))
        fail_msg("line %d: fn of waiter %d ran on another thread than the releasing one", line,
                 p->id);
}

/* ---- blocking waiters: threads that acquire and record when they were served -------------- */

enum block_op { SEM_ACQUIRE, SEM_TIMEDACQUIRE, AMUTEX_LOCK, AMUTEX_TIMEDLOCK };

typedef struct blocker {
    helper thread;
    gate start;
    flag calling;          /* raised right before the blocking call */
    enum block_op op;
    surelock_sem *s;
    surelock_amutex *m;
    uint64_t n;
    uint64_t timeout_ns;
    int id;                /* pushed to the grant log when served */
    /* what the thread saw */
    pid_t tid;
    pthread_t self;
    int rc;
    uint64_t elapsed_ns;
} blocker;

static void blocker_body(void *arg)
{
    blocker *b = arg;
    b->tid = current_tid();
    b->self = pthread_self();
    b->rc = -1;
    if (!gate_pass(&b->start)) return;
    flag_raise(&b->calling);
    uint64_t t0 = now_ns();
    switch (b->op) {
    case SEM_ACQUIRE: b->rc = surelock_sem_acquire(b->s, b->n); break;
    case SEM_TIMEDACQUIRE: b->rc = surelock_sem_timedacquire(b->s, b->n, b->timeout_ns); break;
    case AMUTEX_LOCK: b->rc = surelock_amutex_lock(b->m); break;
    case AMUTEX_TIMEDLOCK: b->rc = surelock_amutex_timedlock(b->m, b->timeout_ns); break;
    }
    b->elapsed_ns = now_ns() - t0;
    log_push(b->rc == 0 ? b->id : -b->id);
}

/* Starts the thread; it waits at its gate until blocker_enter. */
static void blocker_start(blocker *b, enum block_op op, surelock_sem *s, surelock_amutex *m,
                          uint64_t n, uint64_t timeout_ns, int id)
{
    memset(b, 0, sizeof *b);
    b->op = op;
    b->s = s;
    b->m = m;
    b->n = n;
    b->timeout_ns = timeout_ns;
    b->id = id;
    gate_init(&b->start);
    flag_init(&b->calling);
    helper_start(&b->thread, blocker_body, b);
}

/* Lets the thread make its call and waits (bounded) until it is asleep in it: queued. */
#define BLOCKER_ENTER(b) blocker_enter_at((b), __LINE__)
static void blocker_enter_at(blocker *b, int line)
{
    gate_open(&b->start, 1);
    if (!flag_wait(&b->calling, 1, WAIT_LIMIT_MS))
        fail_msg("line %d: blocking waiter %d never reached its call", line, b->id);
    if (wait_until_asleep(b->tid, ASLEEP_LIMIT_MS) == 0)
        fail_msg("line %d: blocking waiter %d never went to sleep in its call", line, b->id);
}

#define BLOCKER_JOIN(b) blocker_join_at((b), __LINE__)
static void blocker_join_at(blocker *b, int line)
{
    (void)line;
    JOIN(&b->thread);
    gate_destroy(&b->start);
    flag_destroy(&b->calling);
}

/* Runs a call that must return at once (never block) on a blocker thread, so that a broken
 * library which blocks it fails the test within WAIT_LIMIT_MS instead of hanging the test's
 * own thread until the watchdog. */
static void blocker_run(blocker *b, enum block_op op, surelock_sem *s, surelock_amutex *m,
                        uint64_t n, uint64_t timeout_ns, int id)
{
    blocker_start(b, op, s, m, n, timeout_ns, id);
    gate_open(&b->start, 1);
    BLOCKER_JOIN(b);
}

/* ==== argument checking: every EINVAL ====================================================== */

static void noop_fn(void *ctx, int status)
{
    (void)status;
    if (ctx != NULL) atomic_fetch_add((atomic_int *)ctx, 1);
}

static void sem_new_rejects_a_null_out_and_counts_above_sem_max(void **state)
{
    (void)state;
    surelock_sem *s = SENTINEL_SEM;
    EXPECT_ERR(surelock_sem_new(SURELOCK_SEM_MAX + 1, &s), EINVAL);
    assert_ptr_equal(s, SENTINEL_SEM); /* out-pointers are written only on success */
    EXPECT_ERR(surelock_sem_new(UINT64_MAX, &s), EINVAL);
    assert_ptr_equal(s, SENTINEL_SEM);
    EXPECT_ERR(surelock_sem_new(1, NULL), EINVAL);
    EXPECT_ERR(surelock_amutex_new(NULL), EINVAL);

    /* The limits themselves are fine. */
    assert_true(SURELOCK_SEM_MAX >= 0xFFFFFFFFull);
    s = new_sem(SURELOCK_SEM_MAX);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX);
    EXPECT_RC(surelock_sem_tryacquire(s, SURELOCK_SEM_MAX), 0);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
    s = new_sem(0);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void every_sem_call_rejects_null_handles_and_requests_of_zero_or_above_sem_max(void **state)
{
    (void)state;
    static atomic_int calls;
    atomic_store(&calls, 0);
    surelock_waiter w;
    const uint64_t bad_n[] = {0, SURELOCK_SEM_MAX + 1, UINT64_MAX};

    EXPECT_ERR(surelock_sem_free(NULL), EINVAL);
    EXPECT_ERR(surelock_sem_acquire(NULL, 1), EINVAL);
    EXPECT_ERR(surelock_sem_tryacquire(NULL, 1), EINVAL);
    EXPECT_ERR(surelock_sem_timedacquire(NULL, 1, 0), EINVAL);
    EXPECT_ERR(surelock_sem_timedacquire(NULL, 1, 10 * MS), EINVAL);
    EXPECT_ERR(surelock_sem_acquire_async(NULL, 1, &w, noop_fn, &calls), EINVAL);
    EXPECT_ERR(surelock_sem_cancel(NULL, &w), EINVAL);
    EXPECT_ERR(surelock_sem_release(NULL, 1), EINVAL);
    EXPECT_ERR(surelock_sem_shutdown(NULL), EINVAL);
    EXPECT_U64(surelock_sem_available(NULL), 0);

    surelock_sem *s = new_sem(3);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        uint64_t n = bad_n[i];
        EXPECT_ERR(surelock_sem_acquire(s, n), EINVAL);
        EXPECT_ERR(surelock_sem_tryacquire(s, n), EINVAL);
        EXPECT_ERR(surelock_sem_timedacquire(s, n, 0), EINVAL);
        EXPECT_ERR(surelock_sem_timedacquire(s, n, 10 * MS), EINVAL);
        EXPECT_ERR(surelock_sem_timedacquire(s, n, SURELOCK_FOREVER), EINVAL);
        EXPECT_ERR(surelock_sem_acquire_async(s, n, &w, noop_fn, &calls), EINVAL);
        EXPECT_ERR(surelock_sem_release(s, n), EINVAL);
    }
    EXPECT_ERR(surelock_sem_acquire_async(s, 1, NULL, noop_fn, &calls), EINVAL);
    EXPECT_ERR(surelock_sem_acquire_async(s, 1, &w, NULL, &calls), EINVAL);
    EXPECT_ERR(surelock_sem_cancel(s, NULL), EINVAL);
    /* Nothing was taken or added by any of them, and no callback ran. */
    EXPECT_U64(surelock_sem_available(s), 3);
    assert_int_equal(atomic_load(&calls), 0);

    /* A request above the count (but valid) is not EINVAL: it queues. */
    EXPECT_ERR(surelock_sem_tryacquire(s, SURELOCK_SEM_MAX), EBUSY);
    EXPECT_RC(surelock_sem_acquire_async(s, SURELOCK_SEM_MAX, &w, noop_fn, &calls), EINPROGRESS);
    EXPECT_RC(surelock_sem_cancel(s, &w), 0);
    assert_int_equal(atomic_load(&calls), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void every_amutex_call_rejects_null_handles_and_arguments(void **state)
{
    (void)state;
    static atomic_int calls;
    atomic_store(&calls, 0);
    surelock_waiter w;
    EXPECT_ERR(surelock_amutex_free(NULL), EINVAL);
    EXPECT_ERR(surelock_amutex_lock(NULL), EINVAL);
    EXPECT_ERR(surelock_amutex_trylock(NULL), EINVAL);
    EXPECT_ERR(surelock_amutex_timedlock(NULL, 0), EINVAL);
    EXPECT_ERR(surelock_amutex_timedlock(NULL, 10 * MS), EINVAL);
    EXPECT_ERR(surelock_amutex_lock_async(NULL, &w, noop_fn, &calls), EINVAL);
    EXPECT_ERR(surelock_amutex_cancel(NULL, &w), EINVAL);
    EXPECT_ERR(surelock_amutex_unlock(NULL), EINVAL);

    surelock_amutex *m = new_amutex();
    EXPECT_ERR(surelock_amutex_lock_async(m, NULL, noop_fn, &calls), EINVAL);
    EXPECT_ERR(surelock_amutex_lock_async(m, &w, NULL, &calls), EINVAL);
    EXPECT_ERR(surelock_amutex_cancel(m, NULL), EINVAL);
    /* None of them took the mutex. */
    EXPECT_RC(surelock_amutex_trylock(m), 0);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    assert_int_equal(atomic_load(&calls), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void cancel_rejects_a_waiter_that_is_not_queued_on_this_object(void **state)
{
    (void)state;
    static probe p, q;
    probe_init(&p, 1);
    probe_init(&q, 2);
    log_reset();
    surelock_sem *s = new_sem(1);
    surelock_sem *other = new_sem(0);

    /* Storage that never went through *_async (zeroed, then garbage). */
    surelock_waiter never;
    memset(&never, 0, sizeof never);
    EXPECT_ERR(surelock_sem_cancel(s, &never), EINVAL);

    /* A waiter that got its permit at once was never queued. */
    EXPECT_RC(surelock_sem_acquire_async(s, 1, &p.w, probe_fn, &p), 0);
    EXPECT_ERR(surelock_sem_cancel(s, &p.w), EINVAL);
    EXPECT_RC(surelock_sem_release(s, 1), 0);

    /* A waiter queued on another semaphore: EINVAL here, and it stays queued there. */
    sem_queue(other, 1, &q);
    EXPECT_ERR(surelock_sem_cancel(s, &q.w), EINVAL);
    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_RC(surelock_sem_release(other, 1), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&q, 1, 0, &me);
    EXPECT_RC(surelock_sem_release(other, 1), 0);

    /* Cancelled once: a second cancel finds it no longer queued. */
    EXPECT_RC(surelock_sem_acquire(s, 1), 0);
    sem_queue(s, 1, &p);
    EXPECT_RC(surelock_sem_cancel(s, &p.w), 0);
    EXPECT_ERR(surelock_sem_cancel(s, &p.w), EINVAL);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_RC(surelock_sem_release(s, 1), 0);

    /* The same for amutexes, across two of them. */
    surelock_amutex *m1 = new_amutex(), *m2 = new_amutex();
    probe_init(&p, 3);
    EXPECT_ERR(surelock_amutex_cancel(m1, &never), EINVAL);
    EXPECT_RC(surelock_amutex_lock(m2), 0);
    amutex_queue(m2, &p);
    EXPECT_ERR(surelock_amutex_cancel(m1, &p.w), EINVAL);
    EXPECT_RC(surelock_amutex_cancel(m2, &p.w), 0);
    EXPECT_ERR(surelock_amutex_cancel(m2, &p.w), EINVAL);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_RC(surelock_amutex_unlock(m2), 0);
    EXPECT_RC(surelock_amutex_free(m1), 0);
    EXPECT_RC(surelock_amutex_free(m2), 0);

    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_RC(surelock_sem_free(s), 0);
    EXPECT_RC(surelock_sem_free(other), 0);
}

/* ==== EAGAIN, EBUSY, EPERM ================================================================ */

static void a_release_that_would_exceed_sem_max_is_eagain_and_changes_nothing(void **state)
{
    (void)state;
    surelock_sem *s = new_sem(SURELOCK_SEM_MAX - 1);
    EXPECT_ERR(surelock_sem_release(s, 2), EAGAIN);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX - 1);
    EXPECT_ERR(surelock_sem_release(s, SURELOCK_SEM_MAX), EAGAIN);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX - 1);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX);
    EXPECT_ERR(surelock_sem_release(s, 1), EAGAIN);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX);
    EXPECT_RC(surelock_sem_free(s), 0);

    /* The same with a waiter queued (the release goes through the queue): the waiter is not
     * served by the refused release, and is by the one that fits. */
    static probe p;
    probe_init(&p, 1);
    log_reset();
    s = new_sem(SURELOCK_SEM_MAX - 1);
    sem_queue(s, SURELOCK_SEM_MAX, &p);
    EXPECT_ERR(surelock_sem_release(s, 2), EAGAIN);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX - 1);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_RC(surelock_sem_release(s, SURELOCK_SEM_MAX), 0);
    EXPECT_U64(surelock_sem_available(s), SURELOCK_SEM_MAX);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void free_with_queued_waiters_is_ebusy_and_frees_nothing(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    surelock_sem *s = new_sem(0);
    sem_queue(s, 2, &p);
    EXPECT_ERR(surelock_sem_free(s), EBUSY);
    /* Still a working semaphore with its waiter. */
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_free(s), 0);

    /* Cancelled waiters no longer count. */
    probe_init(&p, 2);
    s = new_sem(0);
    sem_queue(s, 1, &p);
    EXPECT_ERR(surelock_sem_free(s), EBUSY);
    EXPECT_RC(surelock_sem_cancel(s, &p.w), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void amutex_free_is_ebusy_while_locked_or_waited_on(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(m), 0);
    EXPECT_ERR(surelock_amutex_free(m), EBUSY);
    amutex_queue(m, &p);
    EXPECT_ERR(surelock_amutex_free(m), EBUSY);
    EXPECT_RC(surelock_amutex_unlock(m), 0); /* hands it to p */
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_ERR(surelock_amutex_free(m), EBUSY); /* p holds it now */
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void amutex_unlock_when_not_locked_is_eperm(void **state)
{
    (void)state;
    surelock_amutex *m = new_amutex();
    EXPECT_ERR(surelock_amutex_unlock(m), EPERM);
    EXPECT_RC(surelock_amutex_lock(m), 0);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_ERR(surelock_amutex_unlock(m), EPERM); /* a double unlock */
    /* The failed unlocks did not add a permit: it is still a mutex of one. */
    EXPECT_RC(surelock_amutex_trylock(m), 0);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

/* ==== EBUSY / ETIMEDOUT from the non-blocking and timed forms ============================== */

static void tryacquire_and_a_zero_timeout_fail_at_once_when_not_enough_permits(void **state)
{
    (void)state;
    surelock_sem *s = new_sem(2);
    EXPECT_ERR(surelock_sem_tryacquire(s, 3), EBUSY);
    uint64_t t0 = now_ns();
    EXPECT_ERR(surelock_sem_timedacquire(s, 3, 0), ETIMEDOUT);
    assert_true(now_ns() - t0 < TIMED_WAIT_CEILING_NS);
    EXPECT_U64(surelock_sem_available(s), 2);
    /* Available: the zero timeout takes them without blocking. */
    EXPECT_RC(surelock_sem_timedacquire(s, 2, 0), 0);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_ERR(surelock_sem_tryacquire(s, 1), EBUSY);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 0), ETIMEDOUT);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_tryacquire(s, 1), 0);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_RC(surelock_sem_free(s), 0);

    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_timedlock(m, 0), 0);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY);
    EXPECT_ERR(surelock_amutex_timedlock(m, 0), ETIMEDOUT);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void a_positive_timeout_expires_with_etimedout_after_at_least_that_long(void **state)
{
    (void)state;
    const uint64_t timeout = 50 * MS;
    surelock_sem *s = new_sem(1);
    uint64_t t0 = now_ns();
    EXPECT_ERR(surelock_sem_timedacquire(s, 2, timeout), ETIMEDOUT);
    uint64_t elapsed = now_ns() - t0;
    if (elapsed < timeout || elapsed > TIMED_WAIT_CEILING_NS)
        fail_msg("timedacquire(50 ms) returned after %llu ns", (unsigned long long)elapsed);
    /* It left the queue: the semaphore is as before, tryacquire works again. */
    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_RC(surelock_sem_tryacquire(s, 1), 0);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_RC(surelock_sem_free(s), 0);

    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(m), 0);
    t0 = now_ns();
    EXPECT_ERR(surelock_amutex_timedlock(m, timeout), ETIMEDOUT);
    elapsed = now_ns() - t0;
    if (elapsed < timeout || elapsed > TIMED_WAIT_CEILING_NS)
        fail_msg("amutex_timedlock(50 ms) returned after %llu ns", (unsigned long long)elapsed);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void a_timed_acquire_that_is_served_in_time_returns_zero(void **state)
{
    (void)state;
    static blocker b;
    log_reset();
    surelock_sem *s = new_sem(0);
    blocker_start(&b, SEM_TIMEDACQUIRE, s, NULL, 2, 10000 * MS, 1);
    BLOCKER_ENTER(&b);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    BLOCKER_JOIN(&b);
    EXPECT_RC(b.rc, 0);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
}

/* ==== EINPROGRESS / 0 from the async forms ================================================= */

static void async_acquire_of_free_permits_returns_zero_and_never_calls_fn(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    char planted[512];
    surelock_sem *s = new_sem(3);
    /* "Every *_async call initialises *w": garbage in the storage does not matter. */
    memset(&p.w, 0xA5, sizeof p.w);
    plant_errmsg(planted);
    EXPECT_RC(surelock_sem_acquire_async(s, 2, &p.w, probe_fn, &p), 0);
    EXPECT_ERRMSG_IS(planted); /* a success leaves errmsg alone */
    EXPECT_U64(surelock_sem_available(s), 1);
    /* Nothing that happens later calls fn. */
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_acquire(s, 3), 0);
    EXPECT_RC(surelock_sem_release(s, 3), 0);
    EXPECT_RC(surelock_sem_shutdown(s), 0);
    EXPECT_PROBE(&p, 0, 0, NULL);
    assert_int_equal(log_len(), 0);
    EXPECT_RC(surelock_sem_free(s), 0);

    probe_init(&p, 2);
    memset(&p.w, 0x5A, sizeof p.w);
    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock_async(m, &p.w, probe_fn, &p), 0);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY); /* it is locked */
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_lock(m), 0);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void async_acquire_when_busy_returns_einprogress_and_fn_runs_once_on_the_releaser(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    char planted[512];
    surelock_sem *s = new_sem(1);
    memset(&p.w, 0xA5, sizeof p.w);
    plant_errmsg(planted);
    EXPECT_RC(surelock_sem_acquire_async(s, 2, &p.w, probe_fn, &p), EINPROGRESS);
    EXPECT_ERRMSG_IS(planted); /* EINPROGRESS is not a failure: errmsg untouched */
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me); /* called during the release, on this thread */
    EXPECT_U64(surelock_sem_available(s), 0);
    /* Exactly once: later traffic does not call it again. */
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_acquire(s, 2), 0);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_RC(surelock_sem_shutdown(s), 0);
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_RC(surelock_sem_free(s), 0);

    /* The amutex: lock_async while locked. */
    probe_init(&p, 2);
    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(m), 0);
    plant_errmsg(planted);
    EXPECT_RC(surelock_amutex_lock_async(m, &p.w, probe_fn, &p), EINPROGRESS);
    EXPECT_ERRMSG_IS(planted);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY); /* handed to p, not freed */
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void cancel_of_a_queued_waiter_returns_zero_and_fn_never_runs(void **state)
{
    (void)state;
    static probe p, q;
    probe_init(&p, 1);
    probe_init(&q, 2);
    log_reset();
    surelock_sem *s = new_sem(0);
    sem_queue(s, 1, &p);
    sem_queue(s, 1, &q);
    EXPECT_RC(surelock_sem_cancel(s, &p.w), 0);
    /* The storage is free: scribbling on it must not disturb the queue. */
    memset(&p.w, 0xEE, sizeof p.w);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&q, 1, 0, &me);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_RC(surelock_sem_shutdown(s), 0);
    EXPECT_PROBE(&p, 0, 0, NULL);
    EXPECT_LOG(2);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void cancel_after_the_grant_is_ealready_and_the_caller_holds_the_permits(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    surelock_sem *s = new_sem(0);
    sem_queue(s, 2, &p);
    EXPECT_RC(surelock_sem_release(s, 3), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_ERR(surelock_sem_cancel(s, &p.w), EALREADY);
    EXPECT_U64(surelock_sem_available(s), 1); /* the 2 are the caller's */
    EXPECT_PROBE(&p, 1, 0, &me);               /* and fn does not run again */
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_U64(surelock_sem_available(s), 3);
    EXPECT_RC(surelock_sem_free(s), 0);

    surelock_amutex *m = new_amutex();
    probe_init(&p, 2);
    EXPECT_RC(surelock_amutex_lock(m), 0);
    amutex_queue(m, &p);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_ERR(surelock_amutex_cancel(m, &p.w), EALREADY);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

/* ==== FIFO ================================================================================== */

/*
 * Queues a mix of blocking threads and async waiters in a known order (each blocking waiter
 * is seen asleep in its call before the next entry queues), then hands out one permit at a
 * time and checks that they are served in exactly that order: nobody overtakes anybody.
 */
#define MIX 10

static void fifo_mix(bool use_amutex)
{
    /* B = blocking thread, A = async waiter */
    static const char kinds[MIX + 1] = "BABAABABBA";
    static blocker b[MIX];
    static probe p[MIX];
    log_reset();
    surelock_sem *s = use_amutex ? NULL : new_sem(0);
    surelock_amutex *m = use_amutex ? new_amutex() : NULL;
    if (m != NULL) EXPECT_RC(surelock_amutex_lock(m), 0); /* the test holds it */

    for (int i = 0; i < MIX; i++)
        if (kinds[i] == 'B')
            blocker_start(&b[i], use_amutex ? AMUTEX_LOCK : SEM_ACQUIRE, s, m, 1,
                          SURELOCK_FOREVER, i + 1);
    for (int i = 0; i < MIX; i++) {
        if (kinds[i] == 'B') {
            BLOCKER_ENTER(&b[i]);
        } else {
            probe_init(&p[i], i + 1);
            if (m != NULL) amutex_queue(m, &p[i]);
            else sem_queue(s, 1, &p[i]);
        }
        /* Queued entries stop everyone else, whatever the form. */
        if (m != NULL) {
            EXPECT_ERR(surelock_amutex_trylock(m), EBUSY);
            EXPECT_ERR(surelock_amutex_timedlock(m, 0), ETIMEDOUT);
        } else {
            EXPECT_ERR(surelock_sem_tryacquire(s, 1), EBUSY);
            EXPECT_ERR(surelock_sem_timedacquire(s, 1, 0), ETIMEDOUT);
        }
    }
    assert_int_equal(log_len(), 0);

    pthread_t me = pthread_self();
    for (int i = 0; i < MIX; i++) {
        /* One permit: exactly the next in line is served. */
        if (m != NULL) EXPECT_RC(surelock_amutex_unlock(m), 0);
        else EXPECT_RC(surelock_sem_release(s, 1), 0);
        if (!log_wait_len(i + 1, WAIT_LIMIT_MS))
            fail_msg("after handing out permit %d nobody was served", i + 1);
        if (log_at(i) != i + 1)
            fail_msg("permit %d went to waiter %d; FIFO order says %d", i + 1, log_at(i), i + 1);
        if (kinds[i] == 'A') EXPECT_PROBE(&p[i], 1, 0, &me);
        else {
            BLOCKER_JOIN(&b[i]);
            EXPECT_RC(b[i].rc, 0);
        }
        if (s != NULL) EXPECT_U64(surelock_sem_available(s), 0);
    }
    /* Nobody was served twice or out of turn in the meantime. */
    assert_int_equal(log_len(), MIX);
    if (m != NULL) {
        EXPECT_RC(surelock_amutex_unlock(m), 0); /* the last one's turn ends */
        EXPECT_RC(surelock_amutex_free(m), 0);
    } else {
        EXPECT_RC(surelock_sem_release(s, MIX), 0);
        EXPECT_U64(surelock_sem_available(s), MIX);
        EXPECT_RC(surelock_sem_free(s), 0);
    }
}

static void blocking_and_async_waiters_on_a_semaphore_are_served_in_fifo_order(void **state)
{
    (void)state;
    fifo_mix(false);
}

static void blocking_and_async_waiters_on_an_amutex_are_served_in_fifo_order(void **state)
{
    (void)state;
    fifo_mix(true);
}

static void a_large_request_at_the_head_holds_back_smaller_ones_behind_it(void **state)
{
    (void)state;
    static probe head, s1, s2, s3, late;
    static blocker b;
    probe_init(&head, 1);
    probe_init(&s1, 3);
    probe_init(&s2, 4);
    probe_init(&s3, 5);
    probe_init(&late, 6);
    log_reset();
    pthread_t me = pthread_self();
    surelock_sem *s = new_sem(0);

    sem_queue(s, 5, &head);
    blocker_start(&b, SEM_ACQUIRE, s, NULL, 1, SURELOCK_FOREVER, 2);
    BLOCKER_ENTER(&b);
    sem_queue(s, 1, &s1);
    sem_queue(s, 2, &s2);
    sem_queue(s, 1, &s3);

    /* Four permits, one at a time: the head wants 5, so nobody is served. */
    for (int i = 1; i <= 4; i++) {
        EXPECT_RC(surelock_sem_release(s, 1), 0);
        EXPECT_U64(surelock_sem_available(s), (uint64_t)i);
    }
    sleep_ms(20); /* a blocking waiter wrongly woken would show up in the log by now */
    assert_int_equal(log_len(), 0);
    /* Permits are there, but try and timed(0) do not jump the queue either. */
    EXPECT_ERR(surelock_sem_tryacquire(s, 1), EBUSY);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 0), ETIMEDOUT);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 10 * MS), ETIMEDOUT);
    EXPECT_RC(surelock_sem_acquire_async(s, 1, &late.w, probe_fn, &late), EINPROGRESS);
    EXPECT_U64(surelock_sem_available(s), 4);

    /* The fifth permit: the head gets all five, nobody else anything. */
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_PROBE(&head, 1, 0, &me);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_LOG(1);

    /* One: the blocking waiter. */
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    BLOCKER_JOIN(&b);
    EXPECT_RC(b.rc, 0);
    EXPECT_LOG(1, 2);

    /* Three in one release: s1 (1) and s2 (2), in order; s3 is left waiting. */
    EXPECT_RC(surelock_sem_release(s, 3), 0);
    EXPECT_LOG(1, 2, 3, 4);
    EXPECT_PROBE(&s3, 0, 0, NULL);
    EXPECT_U64(surelock_sem_available(s), 0);

    /* Two: s3 and then the late one (queued last). */
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_LOG(1, 2, 3, 4, 5, 6);
    EXPECT_PROBE(&s1, 1, 0, &me);
    EXPECT_PROBE(&s2, 1, 0, &me);
    EXPECT_PROBE(&s3, 1, 0, &me);
    EXPECT_PROBE(&late, 1, 0, &me);

    /* Every permit handed out comes back: 5 + 1 + 1 + 2 + 1 + 1. */
    EXPECT_RC(surelock_sem_release(s, 11), 0);
    EXPECT_U64(surelock_sem_available(s), 11);
    EXPECT_RC(surelock_sem_tryacquire(s, 11), 0); /* nobody queued: try works again */
    EXPECT_RC(surelock_sem_release(s, 11), 0);
    EXPECT_RC(surelock_sem_free(s), 0);
}

static void cancelling_a_large_head_lets_the_smaller_requests_behind_it_through(void **state)
{
    (void)state;
    static probe head, a, b, c;
    probe_init(&head, 1);
    probe_init(&a, 2);
    probe_init(&b, 3);
    probe_init(&c, 4);
    log_reset();
    pthread_t me = pthread_self();
    surelock_sem *s = new_sem(2);
    sem_queue(s, 3, &head);
    sem_queue(s, 1, &a);
    sem_queue(s, 1, &b);
    sem_queue(s, 1, &c);
    assert_int_equal(log_len(), 0);
    /* Removing the head serves what now fits, in order, on the cancelling thread. */
    EXPECT_RC(surelock_sem_cancel(s, &head.w), 0);
    EXPECT_LOG(2, 3);
    EXPECT_PROBE(&a, 1, 0, &me);
    EXPECT_PROBE(&b, 1, 0, &me);
    EXPECT_PROBE(&c, 0, 0, NULL);
    EXPECT_PROBE(&head, 0, 0, NULL);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_LOG(2, 3, 4);
    EXPECT_RC(surelock_sem_release(s, 3), 0);
    EXPECT_U64(surelock_sem_available(s), 3);
    EXPECT_RC(surelock_sem_free(s), 0);
}

/* ==== timed acquires that expire ============================================================ */

static void a_timed_acquire_that_expires_leaves_the_queue_behind_it_intact(void **state)
{
    (void)state;
    static probe a1, a2;
    static blocker timed, b3;
    const uint64_t timeout = 100 * MS;
    probe_init(&a1, 1);
    probe_init(&a2, 3);
    log_reset();
    pthread_t me = pthread_self();
    surelock_sem *s = new_sem(0);

    sem_queue(s, 1, &a1);
    blocker_start(&timed, SEM_TIMEDACQUIRE, s, NULL, 1, timeout, 2);
    BLOCKER_ENTER(&timed);
    sem_queue(s, 1, &a2);
    blocker_start(&b3, SEM_ACQUIRE, s, NULL, 1, SURELOCK_FOREVER, 4);
    BLOCKER_ENTER(&b3);

    /* The timed waiter in the middle gives up. */
    BLOCKER_JOIN(&timed);
    EXPECT_RC(timed.rc, ETIMEDOUT);
    if (timed.elapsed_ns < timeout || timed.elapsed_ns > TIMED_WAIT_CEILING_NS)
        fail_msg("timedacquire(100 ms) returned after %llu ns",
                 (unsigned long long)timed.elapsed_ns);
    EXPECT_LOG(-2);

    /* The others are still queued, in their order. */
    EXPECT_ERR(surelock_sem_tryacquire(s, 1), EBUSY);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_PROBE(&a1, 1, 0, &me);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_PROBE(&a2, 1, 0, &me);
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    BLOCKER_JOIN(&b3);
    EXPECT_RC(b3.rc, 0);
    EXPECT_LOG(-2, 1, 3, 4);
    EXPECT_U64(surelock_sem_available(s), 0);
    EXPECT_RC(surelock_sem_release(s, 3), 0);
    EXPECT_RC(surelock_sem_free(s), 0);

    /* The same for an amutex timedlock between two async waiters. */
    static probe m1, m2;
    probe_init(&m1, 5);
    probe_init(&m2, 7);
    log_reset();
    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(m), 0);
    amutex_queue(m, &m1);
    blocker_start(&timed, AMUTEX_TIMEDLOCK, NULL, m, 1, timeout, 6);
    BLOCKER_ENTER(&timed);
    amutex_queue(m, &m2);
    BLOCKER_JOIN(&timed);
    EXPECT_RC(timed.rc, ETIMEDOUT);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_PROBE(&m1, 1, 0, &me);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_PROBE(&m2, 1, 0, &me);
    EXPECT_LOG(-6, 5, 7);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

static void a_timed_out_large_head_lets_the_smaller_requests_behind_it_through(void **state)
{
    (void)state;
    static probe a1, a2, a3;
    static blocker timed;
    const uint64_t timeout = 100 * MS;
    probe_init(&a1, 2);
    probe_init(&a2, 3);
    probe_init(&a3, 4);
    log_reset();
    surelock_sem *s = new_sem(2);

    blocker_start(&timed, SEM_TIMEDACQUIRE, s, NULL, 5, timeout, 1);
    BLOCKER_ENTER(&timed);
    /* Two permits are available, but the head (5) holds these back. */
    sem_queue(s, 1, &a1);
    sem_queue(s, 1, &a2);
    sem_queue(s, 2, &a3);
    EXPECT_U64(surelock_sem_available(s), 2);

    /* When the head times out, what now fits is served, in order, by the timing-out thread. */
    BLOCKER_JOIN(&timed);
    EXPECT_RC(timed.rc, ETIMEDOUT);
    if (timed.elapsed_ns < timeout || timed.elapsed_ns > TIMED_WAIT_CEILING_NS)
        fail_msg("timedacquire(100 ms) returned after %llu ns",
                 (unsigned long long)timed.elapsed_ns);
    EXPECT_PROBE(&a1, 1, 0, &timed.self);
    EXPECT_PROBE(&a2, 1, 0, &timed.self);
    EXPECT_PROBE(&a3, 0, 0, NULL);
    EXPECT_U64(surelock_sem_available(s), 0);
    pthread_t me = pthread_self();
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_PROBE(&a3, 1, 0, &me);
    /* The timed-out waiter's own failure is in the log before the grants it unblocked. */
    EXPECT_LOG(2, 3, -1, 4);
    EXPECT_RC(surelock_sem_release(s, 4), 0);
    EXPECT_U64(surelock_sem_available(s), 4);
    EXPECT_RC(surelock_sem_free(s), 0);
}

/* ==== cancel racing with release ============================================================ */

/*
 * Each round: the test holds the only permit and queues an async waiter for it; thread A then
 * releases the permit while thread B cancels the waiter. Whoever wins, the permit must be
 * accounted for: cancel 0 => fn never ran and the permit is back in the semaphore; EALREADY =>
 * fn runs once with 0 (on A, inside its release) and the permit is the waiter's, which the test
 * gives back. Both threads spin on a round counter so that they really collide.
 */
static struct race {
    surelock_sem *s;
    surelock_waiter w;
    atomic_uint round;     /* published by the test: the round to play */
    atomic_uint done;      /* each of A and B adds 1 per round */
    atomic_bool stop;
    atomic_int fn_calls;
    atomic_int fn_bad_status;
    atomic_int release_rc; /* this round's */
    atomic_int cancel_rc;  /* this round's */
    bool timed_out;        /* a thread gave up waiting for a round (written by A or B only) */
    helper a, b;
} race;

static void race_fn(void *ctx, int status)
{
    (void)ctx;
    if (status != 0) atomic_fetch_add(&race.fn_bad_status, 1);
    atomic_fetch_add(&race.fn_calls, 1);
}

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Waits for round r to be published; false when told to stop or after WAIT_LIMIT_MS. */
static bool race_wait_round(unsigned r)
{
    uint64_t end = 0;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(&race.round, memory_order_acquire) >= r) return true;
        if (atomic_load_explicit(&race.stop, memory_order_relaxed)) return false;
        if ((spins & 63) == 63) {
            sched_yield(); /* 2 cores, 3 busy threads: let the others run */
            uint64_t now = now_ns();
            if (end == 0) end = now + (uint64_t)WAIT_LIMIT_MS * MS;
            else if (now >= end) return false;
        } else {
            cpu_pause();
        }
    }
}

/* A small per-round, per-side delay so that either side may win. */
static void race_skew(unsigned r, unsigned salt)
{
    uint32_t x = r * 2654435761u ^ salt;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    for (unsigned i = x % 48; i > 0; i--) cpu_pause();
}

static void race_releaser(void *arg)
{
    (void)arg;
    for (unsigned r = 1; r <= RACE_ROUNDS; r++) {
        if (!race_wait_round(r)) {
            if (!atomic_load(&race.stop)) race.timed_out = true;
            return;
        }
        race_skew(r, 0x1234567u);
        atomic_store(&race.release_rc, surelock_sem_release(race.s, 1));
        atomic_fetch_add_explicit(&race.done, 1, memory_order_release);
    }
}

static void race_canceller(void *arg)
{
    (void)arg;
    for (unsigned r = 1; r <= RACE_ROUNDS; r++) {
        if (!race_wait_round(r)) {
            if (!atomic_load(&race.stop)) race.timed_out = true;
            return;
        }
        race_skew(r, 0x89abcdefu);
        atomic_store(&race.cancel_rc, surelock_sem_cancel(race.s, &race.w));
        atomic_fetch_add_explicit(&race.done, 1, memory_order_release);
    }
}

static void cancel_and_release_racing_100000_times_account_for_every_permit(void **state)
{
    (void)state;
    memset(&race, 0, sizeof race);
    race.s = new_sem(1);
    helper_start(&race.a, race_releaser, NULL);
    helper_start(&race.b, race_canceller, NULL);

    unsigned cancelled = 0, granted = 0, rounds = 0;
    char problem[256] = "";
    for (unsigned r = 1; r <= RACE_ROUNDS && problem[0] == '\0'; r++) {
        int rc = surelock_sem_tryacquire(race.s, 1); /* the test holds the permit */
        if (rc != 0) {
            snprintf(problem, sizeof problem, "round %u: tryacquire returned %s (available %llu)",
                     r, errname(rc), (unsigned long long)surelock_sem_available(race.s));
            break;
        }
        rc = surelock_sem_acquire_async(race.s, 1, &race.w, race_fn, NULL);
        if (rc != EINPROGRESS) {
            snprintf(problem, sizeof problem, "round %u: acquire_async returned %s", r,
                     errname(rc));
            break;
        }
        int calls_before = atomic_load(&race.fn_calls);
        atomic_store_explicit(&race.round, r, memory_order_release);

        /* Wait for both sides (bounded). */
        uint64_t end = 0;
        for (unsigned spins = 0;
             atomic_load_explicit(&race.done, memory_order_acquire) < 2 * r; spins++) {
            if ((spins & 15) == 15) {
                sched_yield();
                uint64_t now = now_ns();
                if (end == 0) end = now + (uint64_t)WAIT_LIMIT_MS * MS;
                else if (now >= end) break;
            }
        }
        if (atomic_load(&race.done) < 2 * r) {
            snprintf(problem, sizeof problem, "round %u: release or cancel did not return", r);
            break;
        }
        rounds = r;
        int release_rc = atomic_load(&race.release_rc);
        int cancel_rc = atomic_load(&race.cancel_rc);
        int calls = atomic_load(&race.fn_calls) - calls_before;
        uint64_t avail = surelock_sem_available(race.s);
        if (release_rc != 0) {
            snprintf(problem, sizeof problem, "round %u: release returned %s", r,
                     errname(release_rc));
        } else if (cancel_rc == 0) {
            /* Cancelled first: fn never runs, the released permit stayed in the semaphore. */
            cancelled++;
            if (calls != 0 || avail != 1)
                snprintf(problem, sizeof problem,
                         "round %u: cancel returned 0 but fn ran %d times and %llu permits are "
                         "available (expected 0 runs, 1 permit)",
                         r, calls, (unsigned long long)avail);
        } else if (cancel_rc == EALREADY) {
            /* Granted first: fn ran once (A's release has returned, and fn runs inside it);
             * the permit is the waiter's, and the test gives it back. */
            granted++;
            if (calls != 1 || avail != 0)
                snprintf(problem, sizeof problem,
                         "round %u: cancel returned EALREADY but fn ran %d times and %llu "
                         "permits are available (expected 1 run, 0 permits)",
                         r, calls, (unsigned long long)avail);
            else if ((rc = surelock_sem_release(race.s, 1)) != 0)
                snprintf(problem, sizeof problem, "round %u: giving the permit back: %s", r,
                         errname(rc));
        } else {
            snprintf(problem, sizeof problem, "round %u: cancel returned %s", r,
                     errname(cancel_rc));
        }
    }
    /* Stop and join both threads before asserting anything. */
    atomic_store(&race.stop, true);
    JOIN(&race.a);
    JOIN(&race.b);
    if (problem[0] != '\0') fail_msg("%s", problem);
    assert_false(race.timed_out);
    assert_int_equal(rounds, RACE_ROUNDS);
    assert_int_equal(cancelled + granted, RACE_ROUNDS);
    /* Every permit is back, and fn ran exactly once per EALREADY, always with 0. */
    EXPECT_U64(surelock_sem_available(race.s), 1);
    assert_int_equal(atomic_load(&race.fn_calls), (int)granted);
    assert_int_equal(atomic_load(&race.fn_bad_status), 0);
    EXPECT_RC(surelock_sem_free(race.s), 0);
    print_message("# cancel won %u rounds, release won %u\n", cancelled, granted);
}

/* ==== shutdown ============================================================================== */

static void shutdown_cancels_queued_waiters_and_every_later_acquire(void **state)
{
    (void)state;
    static probe a1, a2, late;
    static blocker b, bt, after;
    probe_init(&a1, 1);
    probe_init(&a2, 3);
    probe_init(&late, 9);
    log_reset();
    pthread_t me = pthread_self();
    surelock_sem *s = new_sem(1);
    EXPECT_RC(surelock_sem_tryacquire(s, 1), 0); /* the test holds the only permit */

    sem_queue(s, 1, &a1);
    blocker_start(&b, SEM_ACQUIRE, s, NULL, 1, SURELOCK_FOREVER, 2);
    BLOCKER_ENTER(&b);
    sem_queue(s, 3, &a2);
    blocker_start(&bt, SEM_TIMEDACQUIRE, s, NULL, 1, 10000 * MS, 4);
    BLOCKER_ENTER(&bt);

    char planted[512];
    plant_errmsg(planted);
    EXPECT_RC(surelock_sem_shutdown(s), 0);
    EXPECT_ERRMSG_IS(planted);
    /* Async waiters: fn(ctx, ECANCELED) once, on the thread that shut it down. */
    EXPECT_PROBE(&a1, 1, ECANCELED, &me);
    EXPECT_PROBE(&a2, 1, ECANCELED, &me);
    /* Blocking waiters (plain and timed) return ECANCELED, long before their timeout. */
    BLOCKER_JOIN(&b);
    BLOCKER_JOIN(&bt);
    EXPECT_RC(b.rc, ECANCELED);
    EXPECT_RC(bt.rc, ECANCELED);
    assert_true(bt.elapsed_ns < 10000 * MS);

    /* Cancel afterwards: ECANCELED (no permits held). */
    EXPECT_ERR(surelock_sem_cancel(s, &a1.w), ECANCELED);
    EXPECT_ERR(surelock_sem_cancel(s, &a2.w), ECANCELED);
    EXPECT_PROBE(&a1, 1, ECANCELED, &me);

    /* Every later acquire, in every form, is ECANCELED (the blocking forms on a helper
     * thread: if they blocked, the join would fail the test). */
    blocker_run(&after, SEM_ACQUIRE, s, NULL, 1, SURELOCK_FOREVER, 5);
    EXPECT_RC(after.rc, ECANCELED);
    blocker_run(&after, SEM_TIMEDACQUIRE, s, NULL, 1, 10000 * MS, 6);
    EXPECT_RC(after.rc, ECANCELED);
    assert_true(after.elapsed_ns < 10000 * MS);
    EXPECT_ERR(surelock_sem_tryacquire(s, 1), ECANCELED);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 0), ECANCELED);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 10 * MS), ECANCELED);
    EXPECT_ERR(surelock_sem_acquire_async(s, 1, &late.w, probe_fn, &late), ECANCELED);
    EXPECT_PROBE(&late, 0, 0, NULL);

    /* Release still works, and permits being there changes nothing for acquirers. */
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    EXPECT_U64(surelock_sem_available(s), 1);
    EXPECT_ERR(surelock_sem_acquire(s, 1), ECANCELED);
    EXPECT_ERR(surelock_sem_tryacquire(s, 1), ECANCELED);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, 0), ECANCELED);
    EXPECT_ERR(surelock_sem_timedacquire(s, 1, SURELOCK_FOREVER), ECANCELED);
    EXPECT_ERR(surelock_sem_acquire_async(s, 1, &late.w, probe_fn, &late), ECANCELED);
    EXPECT_RC(surelock_sem_release(s, 2), 0);
    EXPECT_U64(surelock_sem_available(s), 3);
    EXPECT_ERR(surelock_sem_release(s, SURELOCK_SEM_MAX), EAGAIN);
    /* A second shutdown is harmless; nothing is called again. */
    EXPECT_RC(surelock_sem_shutdown(s), 0);
    EXPECT_PROBE(&a1, 1, ECANCELED, &me);
    EXPECT_PROBE(&a2, 1, ECANCELED, &me);
    EXPECT_PROBE(&late, 0, 0, NULL);
    /* All four queued waiters were told (blocking waiters log from their own threads: any
     * order), and the two later blocking calls failed. */
    assert_int_equal(log_len(), 6);
    for (int id = 1; id <= 6; id++)
        if (!log_contains(-id)) fail_msg("waiter %d was not cancelled", id);
    EXPECT_RC(surelock_sem_free(s), 0);
}

/* ==== callbacks: iterative dispatch, re-entry, errmsg ======================================= */

/*
 * 100 000 async waiters on an amutex, each of whose callbacks unlocks it at once. One unlock on
 * a thread with a 256 KiB stack runs them all, in order, on that thread: the callbacks never
 * nest (each starts after the previous one returned) and all sit at the same stack depth.
 */
static struct chain {
    surelock_amutex *m;
    surelock_waiter *w; /* CHAIN_LENGTH of them */
    pthread_t thread;
    size_t next;        /* the index the next callback should have */
    size_t ran;
    size_t out_of_order;
    size_t wrong_thread;
    size_t bad_status;
    size_t unlock_failed;
    int depth, max_depth;
    uintptr_t sp_min, sp_max;
    int unlock_rc;      /* the thread's own unlock */
} chain;

static void chain_fn(void *ctx, int status)
{
    size_t i = (size_t)(uintptr_t)ctx;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (++chain.depth > chain.max_depth) chain.max_depth = chain.depth;
    if (sp < chain.sp_min) chain.sp_min = sp;
    if (sp > chain.sp_max) chain.sp_max = sp;
    if (!pthread_equal(pthread_self(), chain.thread)) chain.wrong_thread++;
    if (status != 0) chain.bad_status++;
    if (i != chain.next) chain.out_of_order++;
    chain.next = i + 1;
    chain.ran++;
    if (surelock_amutex_unlock(chain.m) != 0) chain.unlock_failed++;
    chain.depth--;
}

static void chain_body(void *arg)
{
    (void)arg;
    chain.thread = pthread_self();
    chain.unlock_rc = surelock_amutex_unlock(chain.m);
}

static void a_chain_of_100000_async_waiters_that_unlock_at_once_runs_in_order_on_a_small_stack(
    void **state)
{
    (void)state;
    static helper t;
    memset(&chain, 0, sizeof chain);
    chain.sp_min = UINTPTR_MAX;
    chain.w = aligned_alloc(16, CHAIN_LENGTH * sizeof(surelock_waiter));
    assert_non_null(chain.w);
    chain.m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(chain.m), 0);
    for (size_t i = 0; i < CHAIN_LENGTH; i++) {
        int rc = surelock_amutex_lock_async(chain.m, &chain.w[i], chain_fn, (void *)(uintptr_t)i);
        if (rc != EINPROGRESS) fail_msg("queuing waiter %zu: %s", i, errname(rc));
    }
    /* The test's lock is released on the small-stack thread; everything runs there. */
    helper_start_stack(&t, chain_body, NULL, CHAIN_STACK_SIZE);
    JOIN(&t);
    EXPECT_RC(chain.unlock_rc, 0);
    assert_int_equal(chain.ran, CHAIN_LENGTH);
    assert_int_equal(chain.out_of_order, 0);
    assert_int_equal(chain.wrong_thread, 0);
    assert_int_equal(chain.bad_status, 0);
    assert_int_equal(chain.unlock_failed, 0);
    assert_int_equal(chain.max_depth, 1); /* one after another, never one inside another */
    if (chain.sp_max - chain.sp_min > CHAIN_STACK_SPREAD_MAX)
        fail_msg("the callbacks' frames spread over %zu bytes of stack: dispatch recursed",
                 (size_t)(chain.sp_max - chain.sp_min));
    /* The last callback's unlock left it free. */
    EXPECT_RC(surelock_amutex_trylock(chain.m), 0);
    EXPECT_RC(surelock_amutex_unlock(chain.m), 0);
    EXPECT_RC(surelock_amutex_free(chain.m), 0);
    free(chain.w);
}

/*
 * Three waiters whose callbacks unlock the amutex and queue themselves again (reusing their own
 * waiter storage, which is free once fn runs) until each has been served three times: the
 * grants made inside a callback run after it returns, round-robin in FIFO order. A callback
 * may also call cancel on its own (granted) waiter (EALREADY) and tryacquire-style calls.
 */
static struct requeue {
    surelock_amutex *m;
    probe p[3];
    int served[3];
    int depth, max_depth;
    int cancel_rc[3];
    int trylock_rc[3];
    int unlock_rc_bad, lock_async_rc_bad;
} rq;

static void requeue_fn(void *ctx, int status)
{
    probe *p = ctx;
    int i = p->id - 1;
    if (++rq.depth > rq.max_depth) rq.max_depth = rq.depth;
    log_push(status == 0 ? p->id : -p->id);
    rq.cancel_rc[i] = surelock_amutex_cancel(rq.m, &p->w); /* granted: EALREADY */
    rq.trylock_rc[i] = surelock_amutex_trylock(rq.m);      /* we hold it: EBUSY */
    if (surelock_amutex_unlock(rq.m) != 0) rq.unlock_rc_bad++;
    if (++rq.served[i] < 3) {
        int rc = surelock_amutex_lock_async(rq.m, &p->w, requeue_fn, p);
        if (rc != EINPROGRESS) rq.lock_async_rc_bad++;
    }
    rq.depth--;
}

static void callbacks_may_unlock_and_requeue_on_the_same_amutex_and_run_one_after_another(
    void **state)
{
    (void)state;
    memset(&rq, 0, sizeof rq);
    log_reset();
    rq.m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(rq.m), 0);
    for (int i = 0; i < 3; i++) {
        probe_init(&rq.p[i], i + 1);
        EXPECT_RC(surelock_amutex_lock_async(rq.m, &rq.p[i].w, requeue_fn, &rq.p[i]),
                  EINPROGRESS);
    }
    EXPECT_RC(surelock_amutex_unlock(rq.m), 0); /* runs all nine turns, here */
    EXPECT_LOG(1, 2, 3, 1, 2, 3, 1, 2, 3);
    assert_int_equal(rq.max_depth, 1);
    assert_int_equal(rq.unlock_rc_bad, 0);
    assert_int_equal(rq.lock_async_rc_bad, 0);
    for (int i = 0; i < 3; i++) {
        EXPECT_RC(rq.cancel_rc[i], EALREADY);
        EXPECT_RC(rq.trylock_rc[i], EBUSY);
    }
    EXPECT_RC(surelock_amutex_trylock(rq.m), 0);
    EXPECT_RC(surelock_amutex_unlock(rq.m), 0);
    EXPECT_RC(surelock_amutex_free(rq.m), 0);
}

/*
 * Callbacks that make failing calls (EINVAL, EPERM, EBUSY) on the releasing thread do not
 * change what that thread's surelock_errmsg() says: not after a release, a cancel or a
 * shutdown that ran them, whether the thread's errmsg held a message or was still "".
 */
static struct errcb {
    surelock_sem *s;
    surelock_amutex *unlocked; /* a free amutex: unlocking it fails with EPERM */
    int ran;
    int rc_bad;                /* a call inside fn did not fail as expected */
    int msg_empty;             /* fn saw an empty errmsg right after a failure */
    int msg_same_as_outer;     /* fn's failure left the outer text in place */
    bool fresh_changed;        /* the fresh thread's errmsg was no longer "" afterwards */
    char outer[512];           /* the releasing thread's errmsg before the call */
} ecb;

static void failing_fn(void *ctx, int status)
{
    (void)ctx;
    (void)status;
    ecb.ran++;
    if (surelock_sem_release(ecb.s, 0) != EINVAL) ecb.rc_bad++;
    if (surelock_amutex_unlock(ecb.unlocked) != EPERM) ecb.rc_bad++;
    if (surelock_sem_tryacquire(ecb.s, SURELOCK_SEM_MAX) != (status == 0 ? EBUSY : ECANCELED))
        ecb.rc_bad++;
    const char *msg = surelock_errmsg();
    if (msg[0] == '\0') ecb.msg_empty++;
    if (strcmp(msg, ecb.outer) == 0) ecb.msg_same_as_outer++;
}

static void errcb_round(void)
{
    static surelock_waiter w[4];
    ecb.s = new_sem(0);
    save_errmsg(ecb.outer);
    /* A release that runs two callbacks. */
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 1, &w[0], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 1, &w[1], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_release(ecb.s, 2), 0);
    EXPECT_ERRMSG_IS(ecb.outer);
    /* A cancel of the head that lets the next one through. */
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 5, &w[0], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 1, &w[1], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_release(ecb.s, 1), 0);
    EXPECT_ERRMSG_IS(ecb.outer);
    EXPECT_RC(surelock_sem_cancel(ecb.s, &w[0]), 0);
    EXPECT_ERRMSG_IS(ecb.outer);
    /* A shutdown that cancels two. */
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 1, &w[2], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_acquire_async(ecb.s, 1, &w[3], failing_fn, NULL), EINPROGRESS);
    EXPECT_RC(surelock_sem_shutdown(ecb.s), 0);
    EXPECT_ERRMSG_IS(ecb.outer);
    EXPECT_RC(surelock_sem_free(ecb.s), 0);
    EXPECT_ERRMSG_IS(ecb.outer);
}

static void errcb_on_fresh_thread(void *arg)
{
    (void)arg;
    /* A thread that never failed a call: errmsg is "" and must stay "". CMocka asserts only
     * on the test's thread, so this records what it saw. */
    save_errmsg(ecb.outer);
    ecb.s = NULL;
    surelock_sem *s = NULL;
    if (surelock_sem_new(0, &s) != 0) {
        ecb.rc_bad++;
        return;
    }
    ecb.s = s;
    static surelock_waiter w[2];
    if (surelock_sem_acquire_async(s, 1, &w[0], failing_fn, NULL) != EINPROGRESS) ecb.rc_bad++;
    if (surelock_sem_acquire_async(s, 1, &w[1], failing_fn, NULL) != EINPROGRESS) ecb.rc_bad++;
    if (surelock_sem_release(s, 2) != 0) ecb.rc_bad++;
    if (strcmp(surelock_errmsg(), ecb.outer) != 0) ecb.fresh_changed = true;
    if (surelock_sem_free(s) != 0) ecb.rc_bad++;
}

static void the_releasing_threads_errmsg_survives_callbacks_that_fail_calls(void **state)
{
    (void)state;
    memset(&ecb, 0, sizeof ecb);
    ecb.unlocked = new_amutex();

    /* With a message in place. */
    char planted[512];
    plant_errmsg(planted);
    errcb_round();
    EXPECT_ERRMSG_IS(planted);
    assert_int_equal(ecb.ran, 5); /* 2 granted by release, 1 by cancel, 2 cancelled */
    assert_int_equal(ecb.rc_bad, 0);
    assert_int_equal(ecb.msg_empty, 0);
    assert_int_equal(ecb.msg_same_as_outer, 0); /* fn really saw its own failures */

    /* On a thread whose errmsg is still "". */
    memset(&ecb.outer, 0, sizeof ecb.outer);
    ecb.ran = 0;
    static helper t;
    helper_start(&t, errcb_on_fresh_thread, NULL);
    JOIN(&t);
    assert_string_equal(ecb.outer, "");
    assert_int_equal(ecb.ran, 2);
    assert_int_equal(ecb.rc_bad, 0);
    assert_int_equal(ecb.msg_empty, 0);
    assert_int_equal(ecb.msg_same_as_outer, 0);
    if (ecb.fresh_changed)
        fail_msg("the fresh thread's errmsg was not \"\" after a release ran failing callbacks");

    EXPECT_RC(surelock_amutex_free(ecb.unlocked), 0);
}

/* ==== not owned by a thread ================================================================= */

static surelock_amutex *cross_m;
static int cross_rc;

static void cross_unlock(void *arg)
{
    (void)arg;
    cross_rc = surelock_amutex_unlock(cross_m);
}

static void cross_lock(void *arg)
{
    (void)arg;
    cross_rc = surelock_amutex_lock(cross_m);
}

static void an_amutex_can_be_unlocked_by_another_thread_than_the_one_that_locked_it(void **state)
{
    (void)state;
    static helper t;
    static probe p;
    static blocker b;
    log_reset();
    cross_m = new_amutex();

    /* Locked here, unlocked there. */
    EXPECT_RC(surelock_amutex_lock(cross_m), 0);
    cross_rc = -1;
    helper_start(&t, cross_unlock, NULL);
    JOIN(&t);
    EXPECT_RC(cross_rc, 0);
    EXPECT_RC(surelock_amutex_trylock(cross_m), 0);
    EXPECT_RC(surelock_amutex_unlock(cross_m), 0);

    /* Locked there (thread gone), unlocked here. */
    cross_rc = -1;
    helper_start(&t, cross_lock, NULL);
    JOIN(&t);
    EXPECT_RC(cross_rc, 0);
    EXPECT_ERR(surelock_amutex_trylock(cross_m), EBUSY); /* the exited thread's lock stays */
    EXPECT_RC(surelock_amutex_unlock(cross_m), 0);

    /* An async grant released by a third thread hands it to a blocking waiter. */
    probe_init(&p, 1);
    EXPECT_RC(surelock_amutex_lock(cross_m), 0);
    amutex_queue(cross_m, &p);
    blocker_start(&b, AMUTEX_LOCK, NULL, cross_m, 1, SURELOCK_FOREVER, 2);
    BLOCKER_ENTER(&b);
    cross_rc = -1;
    helper_start(&t, cross_unlock, NULL); /* the test's lock, released there: p gets it */
    JOIN(&t);
    EXPECT_RC(cross_rc, 0);
    EXPECT_PROBE(&p, 1, 0, &t.thread);
    cross_rc = -1;
    helper_start(&t, cross_unlock, NULL); /* p's turn, ended there: b gets it */
    JOIN(&t);
    EXPECT_RC(cross_rc, 0);
    BLOCKER_JOIN(&b);
    EXPECT_RC(b.rc, 0);
    EXPECT_LOG(1, 2);
    EXPECT_RC(surelock_amutex_unlock(cross_m), 0); /* b's turn, ended here */
    EXPECT_RC(surelock_amutex_free(cross_m), 0);
}

static void an_amutex_locked_again_by_its_holder_queues_behind_itself_without_edeadlk(void **state)
{
    (void)state;
    static probe p;
    probe_init(&p, 1);
    log_reset();
    surelock_amutex *m = new_amutex();
    EXPECT_RC(surelock_amutex_lock(m), 0);
    EXPECT_ERR(surelock_amutex_timedlock(m, 20 * MS), ETIMEDOUT);
    EXPECT_ERR(surelock_amutex_trylock(m), EBUSY);
    amutex_queue(m, &p); /* the same holder queues behind itself */
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    pthread_t me = pthread_self();
    EXPECT_PROBE(&p, 1, 0, &me);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
}

/* ==== bursts of grants from inside callbacks ================================================ */

/*
 * Regression test for a fixed bug: grants made inside a callback used to go to a fixed ring of
 * 64 entries, and a release that granted more than fit ran the rest nested inside itself and
 * ahead of the earlier grants (stack growth with the queue, out-of-order callbacks). The
 * contract says grants triggered from inside fn run one after another in the outermost
 * dispatch, in grant order.
 */
#define BURST_WAITERS 1000
static struct burst {
    surelock_sem *s;
    surelock_waiter w[BURST_WAITERS];
    size_t next, ran, out_of_order;
    int depth, max_depth;
} burst;

static void burst_fn(void *ctx, int status)
{
    size_t i = (size_t)(uintptr_t)ctx;
    if (++burst.depth > burst.max_depth) burst.max_depth = burst.depth;
    if (i != burst.next) burst.out_of_order++;
    burst.next = i + 1;
    burst.ran++;
    if (status == 0) surelock_sem_release(burst.s, 1); /* its permit, back at once */
    burst.depth--;
}

static void burst_body(void *arg)
{
    (void)arg;
    surelock_sem_release(burst.s, 100); /* 100 permits at once to the long queue */
}

static void grants_made_inside_callbacks_never_nest_even_beyond_64_pending(void **state)
{
    (void)state;
    static helper t;
    memset(&burst, 0, sizeof burst);
    burst.s = new_sem(0);
    for (size_t i = 0; i < BURST_WAITERS; i++)
        EXPECT_RC(surelock_sem_acquire_async(burst.s, 1, &burst.w[i], burst_fn,
                                             (void *)(uintptr_t)i),
                  EINPROGRESS);
    helper_start(&t, burst_body, NULL); /* default (8 MiB) stack: enough to survive the bug */
    JOIN(&t);
    assert_int_equal(burst.ran, BURST_WAITERS);
    EXPECT_U64(surelock_sem_available(burst.s), 100);
    if (burst.out_of_order != 0 || burst.max_depth != 1)
        fail_msg("callbacks nested %d deep and %zu of %d ran out of grant order", burst.max_depth,
                 burst.out_of_order, BURST_WAITERS);
    EXPECT_RC(surelock_sem_free(burst.s), 0);
}

/* ==== a callback that exits its thread ======================================================= */

/* The contract forbids fn to unwind, but pthread_exit from a callback must not leave the
 * thread's dispatch pass or errmsg scope behind on the unwound stack: a key destructor that
 * then fails a call and releases an amutex with a waiter queued (as an event loop's thread-exit
 * cleanup would) must see its call served, not written into dead stack frames. */
static struct {
    surelock_amutex *m, *unlocked;
    surelock_waiter exiting, next;
    flag next_granted;
    int fail_rc, unlock_rc;
    pthread_key_t key;
} xcb;

static void exiting_fn(void *ctx, int status)
{
    (void)ctx;
    (void)status;
    pthread_exit(NULL);
}

static void next_fn(void *ctx, int status)
{
    (void)ctx;
    if (status == 0) flag_raise(&xcb.next_granted);
}

static void exit_key_destructor(void *value)
{
    (void)value;
    xcb.fail_rc = surelock_amutex_unlock(xcb.unlocked);
    xcb.unlock_rc = surelock_amutex_unlock(xcb.m); /* the exiting waiter's grant, handed on */
}

static void *exiting_thread(void *arg)
{
    (void)arg;
    pthread_setspecific(xcb.key, &xcb);
    if (surelock_amutex_trylock(xcb.m) != 0) return NULL;
    if (surelock_amutex_lock_async(xcb.m, &xcb.exiting, exiting_fn, NULL) != EINPROGRESS)
        return NULL;
    if (surelock_amutex_lock_async(xcb.m, &xcb.next, next_fn, NULL) != EINPROGRESS) return NULL;
    surelock_amutex_unlock(xcb.m); /* runs exiting_fn, which ends this thread */
    return NULL;
}

static void a_callback_that_exits_its_thread_leaves_later_releases_on_it_working(void **state)
{
    (void)state;
    memset(&xcb, 0, sizeof xcb);
    xcb.m = new_amutex();
    xcb.unlocked = new_amutex();
    flag_init(&xcb.next_granted);
    assert_int_equal(pthread_key_create(&xcb.key, exit_key_destructor), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exiting_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    EXPECT_RC(xcb.fail_rc, EPERM);
    EXPECT_RC(xcb.unlock_rc, 0);
    if (!flag_wait(&xcb.next_granted, 1, WAIT_LIMIT_MS))
        fail_msg("the waiter behind the exiting callback was never granted");
    EXPECT_RC(surelock_amutex_unlock(xcb.m), 0);
    EXPECT_RC(surelock_amutex_free(xcb.m), 0);
    EXPECT_RC(surelock_amutex_free(xcb.unlocked), 0);
    pthread_key_delete(xcb.key);
    flag_destroy(&xcb.next_granted);
}

/* The queue a cut-short pass left is run by the thread's exit; a callback in it that ends the
 * thread again must not lose the grants behind it (their waiters hold permits and wait for fn). */
static struct {
    surelock_sem *s;
    surelock_waiter exiting[2], last;
    flag last_granted;
} x2;

static void last_fn(void *ctx, int status)
{
    (void)ctx;
    if (status == 0) flag_raise(&x2.last_granted);
}

static void *releasing_three(void *arg)
{
    (void)arg;
    surelock_sem_release(x2.s, 3); /* exiting_fn, exiting_fn, last_fn */
    return NULL;
}

static void a_callback_that_exits_the_thread_during_its_exit_still_leaves_the_rest_delivered(
    void **state)
{
    (void)state;
    memset(&x2, 0, sizeof x2);
    x2.s = new_sem(0);
    flag_init(&x2.last_granted);
    for (int i = 0; i < 2; i++)
        EXPECT_RC(surelock_sem_acquire_async(x2.s, 1, &x2.exiting[i], exiting_fn, NULL),
                  EINPROGRESS);
    EXPECT_RC(surelock_sem_acquire_async(x2.s, 1, &x2.last, last_fn, NULL), EINPROGRESS);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, releasing_three, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (!flag_wait(&x2.last_granted, 1, WAIT_LIMIT_MS))
        fail_msg("the waiter behind the second exiting callback was never granted");
    EXPECT_RC(surelock_sem_release(x2.s, 3), 0);
    EXPECT_RC(surelock_sem_free(x2.s), 0);
    flag_destroy(&x2.last_granted);
}

/* ==== the group ============================================================================== */

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(sem_new_rejects_a_null_out_and_counts_above_sem_max),
        TEST(every_sem_call_rejects_null_handles_and_requests_of_zero_or_above_sem_max),
        TEST(every_amutex_call_rejects_null_handles_and_arguments),
        TEST(cancel_rejects_a_waiter_that_is_not_queued_on_this_object),
        TEST(a_release_that_would_exceed_sem_max_is_eagain_and_changes_nothing),
        TEST(free_with_queued_waiters_is_ebusy_and_frees_nothing),
        TEST(amutex_free_is_ebusy_while_locked_or_waited_on),
        TEST(amutex_unlock_when_not_locked_is_eperm),
        TEST(tryacquire_and_a_zero_timeout_fail_at_once_when_not_enough_permits),
        TEST(a_positive_timeout_expires_with_etimedout_after_at_least_that_long),
        TEST(a_timed_acquire_that_is_served_in_time_returns_zero),
        TEST(async_acquire_of_free_permits_returns_zero_and_never_calls_fn),
        TEST(async_acquire_when_busy_returns_einprogress_and_fn_runs_once_on_the_releaser),
        TEST(cancel_of_a_queued_waiter_returns_zero_and_fn_never_runs),
        TEST(cancel_after_the_grant_is_ealready_and_the_caller_holds_the_permits),
        TEST(blocking_and_async_waiters_on_a_semaphore_are_served_in_fifo_order),
        TEST(blocking_and_async_waiters_on_an_amutex_are_served_in_fifo_order),
        TEST(a_large_request_at_the_head_holds_back_smaller_ones_behind_it),
        TEST(cancelling_a_large_head_lets_the_smaller_requests_behind_it_through),
        TEST(a_timed_acquire_that_expires_leaves_the_queue_behind_it_intact),
        TEST(a_timed_out_large_head_lets_the_smaller_requests_behind_it_through),
        TEST(cancel_and_release_racing_100000_times_account_for_every_permit),
        TEST(shutdown_cancels_queued_waiters_and_every_later_acquire),
        TEST(a_chain_of_100000_async_waiters_that_unlock_at_once_runs_in_order_on_a_small_stack),
        TEST(callbacks_may_unlock_and_requeue_on_the_same_amutex_and_run_one_after_another),
        TEST(the_releasing_threads_errmsg_survives_callbacks_that_fail_calls),
        TEST(an_amutex_can_be_unlocked_by_another_thread_than_the_one_that_locked_it),
        TEST(an_amutex_locked_again_by_its_holder_queues_behind_itself_without_edeadlk),
        TEST(grants_made_inside_callbacks_never_nest_even_beyond_64_pending),
        TEST(a_callback_that_exits_its_thread_leaves_later_releases_on_it_working),
        TEST(a_callback_that_exits_the_thread_during_its_exit_still_leaves_the_rest_delivered),
    };
    return _cmocka_run_group_tests("sem", tests, sizeof tests / sizeof tests[0], watchdog_start,
                                   watchdog_stop);
}
