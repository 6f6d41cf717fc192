/*
 * test_internal.c — paths that the public API cannot reach on demand: the reentrant lock's
 * depth overflow and allocation failure, the condition variable's last access (a hook right
 * after the waking step) and the semaphore while allocation fails (shutdown and release settle
 * everyone, a chain of relocking callbacks keeps the stack flat, an async acquire that must
 * queue is ENOMEM). Links the internal static build (SURELOCK_TESTING), whose hooks are
 * declared in src/sys/testing.h.
 *
 * After every failure checked here: the return code is the documented one, errmsg says what
 * went wrong, out-pointers are untouched, and nothing is lost or left held.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sys/testing.h"
#include "support/bounded.h"

/* Per-test teardown: disarms the watchdog, and turns allocation failure injection off
 * whatever happened in the test. */
static int test_teardown(void **state)
{
    surelock_testing_fail_allocation_after(-1);
    return watchdog_disarm(state);
}

#undef TEST
#define TEST(f) TEST_WITH_TEARDOWN(f, test_teardown)

/* A call that must fail with `want` and set an errmsg of its own mentioning `word`: errmsg is
 * first primed with an unrelated failure, so a call that leaves an older text is caught. */
static char primer[512];
static void prime_errmsg(void)
{
    (void)surelock_rlock_unlock(NULL);
    snprintf(primer, sizeof primer, "%s", surelock_errmsg());
}

#define EXPECT_FAIL(call, want, word)                                                          \
    do {                                                                                       \
        prime_errmsg();                                                                        \
        EXPECT_RC((call), (want));                                                             \
        EXPECT_ERRMSG(word);                                                                   \
        if (strcmp(surelock_errmsg(), primer) == 0)                                            \
            fail_msg("line %d: the failing call left errmsg as it was", __LINE__);            \
    } while (0)

static char sentinel_storage;
#define SENTINEL ((surelock_rlock *)(void *)&sentinel_storage)

/* ================================================================================================
 * Depth overflow
 * ============================================================================================== */

static struct other_thread_try {
    surelock_rlock *l;
    int trylock_rc, unlock_rc;
} other_try;

static void other_thread_trylock_body(void *arg)
{
    (void)arg;
    other_try.trylock_rc = surelock_rlock_trylock(other_try.l);
    other_try.unlock_rc = other_try.trylock_rc == 0 ? surelock_rlock_unlock(other_try.l) : -1;
}

/* Asserts from another thread that l is free: that thread can take and release it. */
static void assert_free_for_other_threads(surelock_rlock *l)
{
    static helper t;
    memset(&other_try, 0, sizeof other_try);
    other_try.l = l;
    RUN_IN_NEW_THREAD(&t, other_thread_trylock_body, NULL);
    EXPECT_RC(other_try.trylock_rc, 0);
    EXPECT_RC(other_try.unlock_rc, 0);
}

static void check_depth_overflow(surelock_rlock *l)
{
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_testing_rlock_set_depth(l, UINT_MAX), 0);
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);

    EXPECT_FAIL(surelock_rlock_lock(l), EAGAIN, "overflow");
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);
    EXPECT_FAIL(surelock_rlock_trylock(l), EAGAIN, "overflow");
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);
    EXPECT_FAIL(surelock_rlock_timedlock(l, 0), EAGAIN, "overflow");
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);
    EXPECT_FAIL(surelock_rlock_timedlock(l, SURELOCK_FOREVER), EAGAIN, "overflow");
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);

    /* the hold is intact: unlock counts down, and one level can be taken again */
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX - 1);
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), UINT_MAX);
    EXPECT_RC(surelock_rlock_lock(l), EAGAIN);

    /* back to depth 1 and released: it is a normal, free lock again */
    EXPECT_RC(surelock_testing_rlock_set_depth(l, 1), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), EPERM);
    assert_free_for_other_threads(l);
}

static void depth_overflow_is_eagain_and_leaves_the_depth_unchanged(void **state)
{
    (void)state;
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_new(&l), 0);
    check_depth_overflow(l);
    EXPECT_RC(surelock_rlock_free(l), 0);

    surelock_rlock *g = NULL;
    EXPECT_RC(surelock_rlock_global("test_internal:overflow", &g), 0);
    check_depth_overflow(g);
}

/* ================================================================================================
 * Allocation failure
 * ============================================================================================== */

static void rlock_new_out_of_memory_is_enomem_and_writes_nothing(void **state)
{
    (void)state;
    surelock_rlock *out = SENTINEL;
    surelock_testing_fail_allocation_after(0);
    EXPECT_FAIL(surelock_rlock_new(&out), ENOMEM, "memory");
    assert_ptr_equal(out, SENTINEL);

    /* the injected failure was one-off: the next allocation works */
    EXPECT_RC(surelock_rlock_new(&out), 0);
    assert_ptr_not_equal(out, SENTINEL);
    assert_non_null(out);

    /* one success, then the failure: the lock made before it is unaffected */
    surelock_rlock *first = SENTINEL, *second = SENTINEL;
    surelock_testing_fail_allocation_after(1);
    EXPECT_RC(surelock_rlock_new(&first), 0);
    EXPECT_FAIL(surelock_rlock_new(&second), ENOMEM, "memory");
    assert_ptr_equal(second, SENTINEL);
    EXPECT_RC(surelock_rlock_lock(first), 0);
    assert_int_equal(surelock_rlock_depth(first), 1);
    EXPECT_RC(surelock_rlock_unlock(first), 0);

    EXPECT_RC(surelock_rlock_free(first), 0);
    EXPECT_RC(surelock_rlock_free(out), 0);
}

static struct global_view {
    int rc;
    surelock_rlock *got;
} global_view;

static void global_view_body(void *arg)
{
    global_view.got = NULL;
    global_view.rc = surelock_rlock_global((const char *)arg, &global_view.got);
}

static void rlock_global_out_of_memory_is_enomem_and_a_retry_gets_one_lock(void **state)
{
    (void)state;
    static helper t;
    static const char name[] = "test_internal:enomem global";
    surelock_rlock *out = SENTINEL;
    surelock_testing_fail_allocation_after(0);
    EXPECT_FAIL(surelock_rlock_global(name, &out), ENOMEM, "memory");
    assert_ptr_equal(out, SENTINEL);

    /* nothing half-registered: the retry creates it, and everyone gets that one lock */
    surelock_rlock *g = SENTINEL;
    EXPECT_RC(surelock_rlock_global(name, &g), 0);
    assert_non_null(g);
    assert_ptr_not_equal(g, SENTINEL);
    surelock_rlock *again = NULL;
    EXPECT_RC(surelock_rlock_global(name, &again), 0);
    assert_ptr_equal(again, g);
    memset(&global_view, 0, sizeof global_view);
    RUN_IN_NEW_THREAD(&t, global_view_body, (void *)name);
    EXPECT_RC(global_view.rc, 0);
    assert_ptr_equal(global_view.got, g);

    /* and it is free: not held by the failed call, usable here and by others */
    assert_int_equal(surelock_rlock_depth(g), 0);
    assert_free_for_other_threads(g);
    EXPECT_RC(surelock_rlock_trylock(g), 0);
    assert_int_equal(surelock_rlock_depth(g), 1);
    EXPECT_RC(surelock_rlock_unlock(g), 0);
    EXPECT_RC(surelock_rlock_free(g), EPERM);
}

/* The first acquire in a brand-new thread allocates that thread's record; make it fail. */
enum first_form { FIRST_LOCK, FIRST_TRYLOCK, FIRST_TIMEDLOCK_0, FIRST_TIMEDLOCK_FOREVER };

static int acquire_first(surelock_rlock *l, enum first_form form)
{
    switch (form) {
    case FIRST_LOCK: return surelock_rlock_lock(l);
    case FIRST_TRYLOCK: return surelock_rlock_trylock(l);
    case FIRST_TIMEDLOCK_0: return surelock_rlock_timedlock(l, 0);
    case FIRST_TIMEDLOCK_FOREVER: return surelock_rlock_timedlock(l, SURELOCK_FOREVER);
    }
    return -1;
}

static struct record_enomem {
    surelock_rlock *l;
    enum first_form form;
    int failed_rc;
    char errmsg[512];
    unsigned depth_after_failure;
    int unlock_after_failure_rc;
    int retry_rc;
    unsigned depth_after_retry;
    int unlock_rc;
} record_enomem;

static void record_enomem_body(void *arg)
{
    (void)arg;
    struct record_enomem *r = &record_enomem;
    surelock_testing_fail_allocation_after(0);
    r->failed_rc = acquire_first(r->l, r->form);
    snprintf(r->errmsg, sizeof r->errmsg, "%s", surelock_errmsg());
    surelock_testing_fail_allocation_after(-1);
    r->depth_after_failure = surelock_rlock_depth(r->l);
    r->unlock_after_failure_rc = surelock_rlock_unlock(r->l); /* holds nothing */
    r->retry_rc = acquire_first(r->l, r->form);
    r->depth_after_retry = surelock_rlock_depth(r->l);
    r->unlock_rc = surelock_rlock_unlock(r->l);
}

static void first_lock_in_a_new_thread_out_of_memory_is_enomem_and_holds_nothing(void **state)
{
    (void)state;
    static helper t;
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_new(&l), 0);
    const enum first_form forms[] = {FIRST_LOCK, FIRST_TRYLOCK, FIRST_TIMEDLOCK_0,
                                     FIRST_TIMEDLOCK_FOREVER};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        memset(&record_enomem, 0, sizeof record_enomem);
        record_enomem.l = l;
        record_enomem.form = forms[i];
        surelock_testing_forget_finished_thread_records(); /* the new thread makes its own */
        RUN_IN_NEW_THREAD(&t, record_enomem_body, NULL);
        if (record_enomem.failed_rc != ENOMEM)
            fail_msg("form %zu: first acquire in a new thread returned %s (%d), expected ENOMEM",
                     i, errname(record_enomem.failed_rc), record_enomem.failed_rc);
        EXPECT_TEXT(record_enomem.errmsg, "memory");
        assert_int_equal(record_enomem.depth_after_failure, 0);
        EXPECT_RC(record_enomem.unlock_after_failure_rc, EPERM);
        EXPECT_RC(record_enomem.retry_rc, 0); /* plain success, no "owner died" */
        assert_int_equal(record_enomem.depth_after_retry, 1);
        EXPECT_RC(record_enomem.unlock_rc, 0);

        /* after that thread's exit the lock is free and nobody is reported dead */
        EXPECT_RC(surelock_rlock_trylock(l), 0);
        assert_int_equal(surelock_rlock_depth(l), 1);
        EXPECT_RC(surelock_rlock_unlock(l), 0);
    }
    EXPECT_RC(surelock_rlock_free(l), 0);
}

/* ---- cond: nothing of the cond is touched after the step that wakes ----------------------- */

/* A waiter woken by a signal made outside the mutex may return at once and free the cond
 * (pthreads allows destroying a cond nobody waits on). The hook right after signal's waking
 * step lets exactly that happen before signal goes on: under ASan or valgrind any later read
 * of the cond by signal is a use-after-free. */
static surelock_cond *woken_cond;
static surelock_mutex *woken_mutex;
static _Atomic int woken_go, woken_free_rc;
static flag woken_freed, woken_waiting;

/* The waiter leaves only when signalled: it waits without a timeout (the watchdog bounds the
 * test), so it cannot free the cond while signal still looks at the waiter count (a polling
 * waiter could, a race of the test itself that TSan reported). */
static void wait_then_free_the_cond(void *arg)
{
    (void)arg;
    surelock_mutex_lock(woken_mutex);
    flag_raise(&woken_waiting);
    while (!atomic_load(&woken_go)) surelock_cond_wait(woken_cond, woken_mutex);
    surelock_mutex_unlock(woken_mutex);
    atomic_store(&woken_free_rc, surelock_cond_free(woken_cond));
    flag_raise(&woken_freed);
}

static void let_the_woken_waiter_free_the_cond(void)
{
    flag_wait(&woken_freed, 1, WAIT_LIMIT_MS);
}

static void cond_signal_and_broadcast_touch_nothing_after_waking(void **state)
{
    (void)state;
    for (int form = 0; form < 2; form++) {
        EXPECT_RC(surelock_cond_new(&woken_cond), 0);
        EXPECT_RC(surelock_mutex_new(&woken_mutex), 0);
        atomic_store(&woken_go, 0);
        atomic_store(&woken_free_rc, -1);
        flag_init(&woken_freed);
        flag_init(&woken_waiting);
        helper waiter;
        helper_start(&waiter, wait_then_free_the_cond, NULL);
        flag_wait(&woken_waiting, 1, WAIT_LIMIT_MS);
        /* Taking the mutex proves the waiter is inside cond_wait (it let the mutex go there). */
        EXPECT_RC(surelock_mutex_lock(woken_mutex), 0);
        atomic_store(&woken_go, 1);
        EXPECT_RC(surelock_mutex_unlock(woken_mutex), 0);
        surelock_testing_cond_woken_hook = let_the_woken_waiter_free_the_cond;
        if (form == 0) EXPECT_RC(surelock_cond_signal(woken_cond), 0);
        else EXPECT_RC(surelock_cond_broadcast(woken_cond), 0);
        surelock_testing_cond_woken_hook = NULL;
        JOIN(&waiter);
        assert_true(flag_value(&woken_freed) > 0);
        EXPECT_SAVED_RC(atomic_load(&woken_free_rc), 0, "cond_free by the woken waiter");
        EXPECT_RC(surelock_mutex_free(woken_mutex), 0);
        flag_destroy(&woken_freed);
        flag_destroy(&woken_waiting);
    }
}

/* ---- sem: shutdown and release settle every waiter whatever allocation does ---------------- */

static _Atomic int async_status[2];
static void record_status(void *ctx, int status)
{
    atomic_store(&async_status[(intptr_t)ctx], status + 1000); /* +1000: "called" */
}

static surelock_sem *degraded_sem;
static _Atomic int blocking_rc;
static void blocking_acquire_one(void *arg)
{
    (void)arg;
    atomic_store(&blocking_rc, surelock_sem_acquire(degraded_sem, 1));
}

/* Runs op(degraded_sem) on a brand-new thread (no thread record yet) whose every allocation
 * fails: the settling pass can queue no delivery at all. */
static int (*degraded_op)(surelock_sem *);
static _Atomic int degraded_op_rc;
static void run_degraded_op(void *arg)
{
    (void)arg;
    surelock_testing_fail_allocation_after(0);
    atomic_store(&degraded_op_rc, degraded_op(degraded_sem));
    surelock_testing_fail_allocation_after(-1);
}
static int shutdown_op(surelock_sem *s) { return surelock_sem_shutdown(s); }
static int release_three_op(surelock_sem *s) { return surelock_sem_release(s, 3); }

/* Queues, in order: async waiter 0, a blocking waiter on its own thread, async waiter 1 (one
 * permit each, none available). */
static void queue_async_blocking_async(surelock_waiter w[2], helper *blocker)
{
    EXPECT_RC(surelock_sem_new(0, &degraded_sem), 0);
    atomic_store(&async_status[0], 0);
    atomic_store(&async_status[1], 0);
    atomic_store(&blocking_rc, -1);
    EXPECT_RC(surelock_sem_acquire_async(degraded_sem, 1, &w[0], record_status, (void *)0),
              EINPROGRESS);
    helper_start(blocker, blocking_acquire_one, NULL);
    /* queued once the blocking waiter no longer runs; a fixed pause is enough to order it
     * before waiter 1 here, and the outcome checked does not depend on that order */
    sleep_ms(50);
    EXPECT_RC(surelock_sem_acquire_async(degraded_sem, 1, &w[1], record_status, (void *)1),
              EINPROGRESS);
}

static void shutdown_cancels_every_waiter_even_when_no_delivery_can_be_queued(void **state)
{
    (void)state;
    surelock_waiter w[2];
    helper blocker, shutter;
    queue_async_blocking_async(w, &blocker);
    degraded_op = shutdown_op;
    helper_start(&shutter, run_degraded_op, NULL);
    JOIN(&shutter);
    EXPECT_SAVED_RC(atomic_load(&degraded_op_rc), 0, "sem_shutdown");
    JOIN(&blocker); /* the FOREVER waiter is woken, not left queued */
    EXPECT_SAVED_RC(atomic_load(&blocking_rc), ECANCELED, "blocking acquire");
    EXPECT_SAVED_RC(atomic_load(&async_status[0]), 1000 + ECANCELED, "async waiter 0");
    EXPECT_SAVED_RC(atomic_load(&async_status[1]), 1000 + ECANCELED, "async waiter 1");
    EXPECT_RC(surelock_sem_cancel(degraded_sem, &w[1]), ECANCELED);
    EXPECT_RC(surelock_sem_free(degraded_sem), 0);
}

/* API.md: "an object may be freed as soon as its last unlock has returned" -- also when that
 * unlock is made from the callback of a grant delivered without memory for the dispatch
 * queue. (Issue 9 review: the out-of-memory pass kept the semaphore pinned while it ran the
 * callback, so free said EBUSY with nothing queued and nothing held; it now pins only when
 * waiters behind could still be served.) */
static _Atomic int free_in_callback_rc;
static void release_then_free(void *ctx, int status)
{
    (void)status;
    surelock_sem_release(ctx, 1);
    atomic_store(&free_in_callback_rc, surelock_sem_free(ctx));
}
static surelock_amutex *degraded_amutex;
static void unlock_then_free(void *ctx, int status)
{
    (void)status;
    surelock_amutex_unlock(ctx);
    atomic_store(&free_in_callback_rc, surelock_amutex_free(ctx));
}
static int release_one_op(surelock_sem *s) { return surelock_sem_release(s, 1); }
static int amutex_unlock_op(surelock_sem *s)
{
    (void)s;
    return surelock_amutex_unlock(degraded_amutex);
}

static void the_last_waiter_s_callback_may_free_when_no_delivery_can_be_queued(void **state)
{
    (void)state;
    surelock_waiter w;
    helper releaser;
    EXPECT_RC(surelock_sem_new(0, &degraded_sem), 0);
    atomic_store(&free_in_callback_rc, -1);
    EXPECT_RC(surelock_sem_acquire_async(degraded_sem, 1, &w, release_then_free, degraded_sem),
              EINPROGRESS);
    degraded_op = release_one_op;
    helper_start(&releaser, run_degraded_op, NULL);
    JOIN(&releaser);
    EXPECT_SAVED_RC(atomic_load(&degraded_op_rc), 0, "sem_release");
    EXPECT_SAVED_RC(atomic_load(&free_in_callback_rc), 0, "sem_free in the callback");

    EXPECT_RC(surelock_amutex_new(&degraded_amutex), 0);
    EXPECT_RC(surelock_amutex_lock(degraded_amutex), 0);
    atomic_store(&free_in_callback_rc, -1);
    EXPECT_RC(surelock_amutex_lock_async(degraded_amutex, &w, unlock_then_free, degraded_amutex),
              EINPROGRESS);
    degraded_op = amutex_unlock_op;
    helper_start(&releaser, run_degraded_op, NULL);
    JOIN(&releaser);
    EXPECT_SAVED_RC(atomic_load(&degraded_op_rc), 0, "amutex_unlock");
    EXPECT_SAVED_RC(atomic_load(&free_in_callback_rc), 0, "amutex_free in the callback");
}

static void release_hands_every_permit_out_even_when_no_delivery_can_be_queued(void **state)
{
    (void)state;
    surelock_waiter w[2];
    helper blocker, releaser;
    queue_async_blocking_async(w, &blocker);
    degraded_op = release_three_op;
    helper_start(&releaser, run_degraded_op, NULL);
    JOIN(&releaser);
    EXPECT_SAVED_RC(atomic_load(&degraded_op_rc), 0, "sem_release(3)");
    JOIN(&blocker); /* granted, not stranded behind the first delivery */
    EXPECT_SAVED_RC(atomic_load(&blocking_rc), 0, "blocking acquire");
    EXPECT_SAVED_RC(atomic_load(&async_status[0]), 1000, "async waiter 0");
    EXPECT_SAVED_RC(atomic_load(&async_status[1]), 1000, "async waiter 1");
    assert_int_equal(surelock_sem_available(degraded_sem), 0);
    EXPECT_RC(surelock_sem_release(degraded_sem, 3), 0);
    EXPECT_RC(surelock_sem_free(degraded_sem), 0);
}


/* ---- sem: a grant never needs memory ------------------------------------------------------ */

/* A chain of async holders, each of which queues again and unlocks from its own callback
 * (an event loop's task re-taking its lock), while every allocation the unlock could make
 * fails. API.md: grants triggered from inside fn run one after another in the outermost
 * dispatch, so the stack does not grow with the chain. (The last session's known defect:
 * when the delivery could not be queued for want of memory, the settling pass ran the
 * callback directly, nested one level per link, and such a chain overflowed the stack.)
 * Run in a fresh process (this binary again, as a sanitizer allows no threads after a fork
 * of a threaded process), on a thread with a small stack: an overflow is a crash the test
 * sees. */
#define CHAIN_ARG "--relocking-chain"
#define CHAIN_LINKS 100000
#define CHAIN_STACK_SIZE (256 * 1024)
static surelock_amutex *chain_mutex;
static surelock_waiter chain_waiter[2];
static long chain_delivered;
static int chain_bad_status, chain_requeue_rc;
static uintptr_t chain_sp_low = UINTPTR_MAX, chain_sp_high;

static void chain_link(void *ctx, int status)
{
    (void)ctx;
    /* this callback runs inside the unlock that granted it: withdraw a failure armed for that
     * unlock and not used by it, so that only the grants are starved of memory */
    surelock_testing_fail_allocation_after(-1);
    volatile char here = 0;
    uintptr_t sp = (uintptr_t)&here;
    if (sp < chain_sp_low) chain_sp_low = sp;
    if (sp > chain_sp_high) chain_sp_high = sp;
    if (status != 0 && chain_bad_status == 0) chain_bad_status = status;
    long link = ++chain_delivered;
    if (link < CHAIN_LINKS) {
        int rc = surelock_amutex_lock_async(chain_mutex, &chain_waiter[link % 2], chain_link,
                                            NULL);
        if (rc != EINPROGRESS && chain_requeue_rc == 0) chain_requeue_rc = rc ? rc : -1;
    }
    surelock_testing_fail_allocation_after(0); /* whatever this unlock would allocate fails */
    surelock_amutex_unlock(chain_mutex);
    surelock_testing_fail_allocation_after(-1);
}

static void *run_chain(void *arg)
{
    (void)arg;
    if (surelock_amutex_lock(chain_mutex) != 0) return (void *)"amutex_lock";
    if (surelock_amutex_lock_async(chain_mutex, &chain_waiter[0], chain_link, NULL) !=
        EINPROGRESS)
        return (void *)"the first lock_async did not queue";
    surelock_testing_fail_allocation_after(0);
    surelock_amutex_unlock(chain_mutex); /* the chain runs from here, on this thread */
    surelock_testing_fail_allocation_after(-1);
    return NULL;
}

static int chain_in_child(void)
{
    alarm(80);
    CHILD_EXPECT_RC(surelock_amutex_new(&chain_mutex), 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    CHILD_EXPECT_RC(pthread_attr_setstacksize(&attr, CHAIN_STACK_SIZE), 0);
    pthread_t chain;
    CHILD_EXPECT_RC(pthread_create(&chain, &attr, run_chain, NULL), 0);
    void *failed;
    CHILD_EXPECT_RC(pthread_join(chain, &failed), 0);
    if (failed != NULL) {
        fprintf(stderr, "child: %s\n", (const char *)failed);
        return 1;
    }
    if (chain_delivered != CHAIN_LINKS || chain_bad_status != 0 || chain_requeue_rc != 0) {
        fprintf(stderr, "child: %ld of %d callbacks, first bad status %d, requeue rc %d\n",
                chain_delivered, CHAIN_LINKS, chain_bad_status, chain_requeue_rc);
        return 1;
    }
    /* one frame depth for every callback: a few hundred bytes of difference at most */
    if (chain_sp_high - chain_sp_low > 4096) {
        fprintf(stderr, "child: the callbacks' stack spans %zu bytes\n",
                (size_t)(chain_sp_high - chain_sp_low));
        return 1;
    }
    CHILD_EXPECT_RC(surelock_amutex_trylock(chain_mutex), 0); /* the last link unlocked it */
    CHILD_EXPECT_RC(surelock_amutex_unlock(chain_mutex), 0);
    CHILD_EXPECT_RC(surelock_amutex_free(chain_mutex), 0);
    return 0;
}

static void a_chain_of_callbacks_that_relock_does_not_grow_the_stack_when_allocation_fails(
    void **state)
{
    (void)state;
    /* the path, not /proc/self/exe itself: under valgrind that would run valgrind */
    char exe[PATH_MAX], arg[] = CHAIN_ARG;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len < 0) fail_msg("readlink(/proc/self/exe): %s", strerror(errno));
    exe[len] = '\0';
    char *child_argv[] = {exe, arg, NULL};
    pid_t child;
    int rc = posix_spawn(&child, exe, NULL, NULL, child_argv, environ);
    if (rc != 0) fail_msg("posix_spawn(%s %s): %s", exe, arg, strerror(rc));
    int status = 0;
    if (!child_wait(child, 85000, &status))
        fail_msg("the chain of %d callbacks did not end within 85 s", CHAIN_LINKS);
    if (WIFSIGNALED(status))
        fail_msg("the chain of %d callbacks killed its process with signal %d (stack "
                 "overflow: callbacks nested)",
                 CHAIN_LINKS, WTERMSIG(status));
    assert_int_equal(child_exit_code(status), 0);
}

/* The memory a grant needs is taken when the waiter queues: an async acquire that would queue
 * and cannot get it is ENOMEM with nothing queued (fn is never called); one that is served at
 * once allocates nothing and succeeds. */
static _Atomic int unexpected_calls;
static void must_not_run(void *ctx, int status)
{
    (void)ctx;
    (void)status;
    atomic_fetch_add(&unexpected_calls, 1);
}

static void async_acquire_that_must_queue_out_of_memory_is_enomem_and_queues_nothing(
    void **state)
{
    (void)state;
    surelock_waiter w;
    surelock_sem *s;
    atomic_store(&unexpected_calls, 0);
    EXPECT_RC(surelock_sem_new(1, &s), 0);
    surelock_testing_fail_allocation_after(0);
    EXPECT_RC(surelock_sem_acquire_async(s, 1, &w, must_not_run, NULL), 0); /* at once */
    EXPECT_FAIL(surelock_sem_acquire_async(s, 1, &w, must_not_run, NULL), ENOMEM, "memory");
    surelock_testing_fail_allocation_after(-1);
    EXPECT_RC(surelock_sem_cancel(s, &w), EINVAL); /* not queued */
    EXPECT_RC(surelock_sem_release(s, 1), 0);
    assert_int_equal(surelock_sem_available(s), 1); /* handed to nobody */
    EXPECT_RC(surelock_sem_free(s), 0);

    surelock_amutex *m;
    EXPECT_RC(surelock_amutex_new(&m), 0);
    EXPECT_RC(surelock_amutex_lock(m), 0);
    surelock_testing_fail_allocation_after(0);
    EXPECT_FAIL(surelock_amutex_lock_async(m, &w, must_not_run, NULL), ENOMEM, "memory");
    surelock_testing_fail_allocation_after(-1);
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_trylock(m), 0); /* nobody was queued to take it */
    EXPECT_RC(surelock_amutex_unlock(m), 0);
    EXPECT_RC(surelock_amutex_free(m), 0);
    assert_int_equal(atomic_load(&unexpected_calls), 0);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], CHAIN_ARG) == 0) return chain_in_child();
    const struct CMUnitTest tests[] = {
        TEST(depth_overflow_is_eagain_and_leaves_the_depth_unchanged),
        TEST(rlock_new_out_of_memory_is_enomem_and_writes_nothing),
        TEST(rlock_global_out_of_memory_is_enomem_and_a_retry_gets_one_lock),
        TEST(first_lock_in_a_new_thread_out_of_memory_is_enomem_and_holds_nothing),
        TEST(cond_signal_and_broadcast_touch_nothing_after_waking),
        TEST(shutdown_cancels_every_waiter_even_when_no_delivery_can_be_queued),
        TEST(release_hands_every_permit_out_even_when_no_delivery_can_be_queued),
        TEST(the_last_waiter_s_callback_may_free_when_no_delivery_can_be_queued),
        TEST(a_chain_of_callbacks_that_relock_does_not_grow_the_stack_when_allocation_fails),
        TEST(async_acquire_that_must_queue_out_of_memory_is_enomem_and_queues_nothing),
    };
    return cmocka_run_group_tests_name("internal", tests, watchdog_start, watchdog_stop);
}
