/*
 * test_internal.c — the reentrant lock's paths that the public API cannot reach on demand:
 * depth overflow and allocation failure. Links the internal static build (SURELOCK_TESTING),
 * whose hooks are declared in src/sys/testing.h.
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
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sys/testing.h"

#define WAIT_LIMIT_MS 20000 /* bound on waiting for a helper thread */
#define WATCHDOG_MS 60000   /* bound on a whole test (see watchdog_main) */
#define MS 1000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec timespec_at(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return ts;
}

static const char *errname(int rc)
{
    switch (rc) {
    case 0: return "0";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EPERM: return "EPERM";
    case EOWNERDEAD: return "EOWNERDEAD";
    case EAGAIN: return "EAGAIN";
    default: return "an unexpected code";
    }
}

#define EXPECT_RC(call, want) expect_rc_at((call), (want), #call, #want, __LINE__)
static void expect_rc_at(int got, int want, const char *call, const char *want_name, int line)
{
    if (got != want)
        fail_msg("line %d: %s returned %s (%d), expected %s; errmsg: \"%s\"", line, call,
                 errname(got), got, want_name, surelock_errmsg());
}

/* errmsg (of the calling thread, or a saved copy) is non-empty and mentions `word`. */
#define EXPECT_TEXT_MENTIONS(text, word) expect_mentions_at((text), (word), __LINE__)
#define EXPECT_ERRMSG(word) EXPECT_TEXT_MENTIONS(surelock_errmsg(), (word))
static void expect_mentions_at(const char *text, const char *word, int line)
{
    if (text == NULL) fail_msg("line %d: errmsg is NULL", line);
    if (strcasestr(text, word) == NULL)
        fail_msg("line %d: errmsg \"%s\" does not mention \"%s\"", line, text, word);
}

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

/* ---- bounded thread runs ------------------------------------------------------------------ */

typedef struct helper {
    pthread_t thread;
    void (*body)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} helper;

static void *helper_main(void *p)
{
    helper *h = p;
    h->body(h->arg);
    pthread_mutex_lock(&h->mu);
    h->done = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Runs body(arg) on a brand-new thread and joins it; fails the test (never hangs) if it does
 * not finish within WAIT_LIMIT_MS on CLOCK_MONOTONIC. `h` is static in the caller, so a
 * stuck thread never writes into a later test's stack. */
#define RUN_IN_NEW_THREAD(h, body, arg) run_in_new_thread((h), (body), (arg), __LINE__)
static void run_in_new_thread(helper *h, void (*body)(void *), void *arg, int line)
{
    memset(h, 0, sizeof *h);
    h->body = body;
    h->arg = arg;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&h->mu, NULL);
    int rc = pthread_create(&h->thread, NULL, helper_main, h);
    if (rc != 0) fail_msg("line %d: pthread_create: %s", line, strerror(rc));

    /* wait for the body to return, then for the thread to exit: thread-exit work (the
     * library's per-thread cleanup) runs after the body, so the join is bounded too (by
     * polling pthread_tryjoin_np, which ThreadSanitizer understands) */
    uint64_t deadline_ns = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    struct timespec deadline = timespec_at(deadline_ns);
    pthread_mutex_lock(&h->mu);
    int wrc = 0;
    while (!h->done && wrc != ETIMEDOUT) wrc = pthread_cond_timedwait(&h->cv, &h->mu, &deadline);
    bool done = h->done;
    pthread_mutex_unlock(&h->mu);
    if (!done) fail_msg("line %d: thread did not finish within %d ms", line, WAIT_LIMIT_MS);
    struct timespec pause = {0, 1000000L};
    while ((rc = pthread_tryjoin_np(h->thread, NULL)) == EBUSY && now_ns() < deadline_ns)
        nanosleep(&pause, NULL);
    if (rc == EBUSY)
        fail_msg("line %d: thread did not exit within %d ms: thread-exit cleanup hangs", line,
                 WAIT_LIMIT_MS);
    if (rc != 0) fail_msg("line %d: pthread_join: %s", line, strerror(rc));
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
}

/* ---- watchdog: a whole test is bounded too -------------------------------------------------
 * The test's own thread makes lock calls a broken library could block forever; CMocka cannot
 * abandon one test from another thread, so when a test runs past WATCHDOG_MS the watchdog
 * names it and ends the run (a TAP "Bail out!"; meson reports the failure). */

static struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    const char *test; /* the running test, NULL between tests */
    uint64_t deadline_ns;
    bool stop;
} watchdog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&watchdog.mu);
    while (!watchdog.stop) {
        uint64_t now = now_ns();
        if (watchdog.test != NULL && now >= watchdog.deadline_ns) {
            fprintf(stderr, "watchdog: %s did not finish within %d ms: a lock call hangs\n",
                    watchdog.test, WATCHDOG_MS);
            printf("Bail out! %s did not finish within %d ms\n", watchdog.test, WATCHDOG_MS);
            fflush(stdout);
            _exit(1);
        }
        struct timespec until =
            timespec_at(watchdog.test != NULL ? watchdog.deadline_ns : now + 1000 * MS);
        pthread_cond_timedwait(&watchdog.cv, &watchdog.mu, &until);
    }
    pthread_mutex_unlock(&watchdog.mu);
    return NULL;
}

static int watchdog_start(void **state)
{
    (void)state;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&watchdog.cv, &attr);
    pthread_condattr_destroy(&attr);
    return pthread_create(&watchdog.thread, NULL, watchdog_main, NULL) == 0 ? 0 : -1;
}

static int watchdog_stop(void **state)
{
    (void)state;
    pthread_mutex_lock(&watchdog.mu);
    watchdog.stop = true;
    pthread_cond_broadcast(&watchdog.cv);
    pthread_mutex_unlock(&watchdog.mu);
    pthread_join(watchdog.thread, NULL);
    pthread_cond_destroy(&watchdog.cv);
    return 0;
}

/* Per-test setup: *state is the test's name (its CMUnitTest initial_state, see TEST). */
static int watchdog_arm(void **state)
{
    pthread_mutex_lock(&watchdog.mu);
    watchdog.test = *state;
    watchdog.deadline_ns = now_ns() + (uint64_t)WATCHDOG_MS * MS;
    pthread_cond_broadcast(&watchdog.cv);
    pthread_mutex_unlock(&watchdog.mu);
    return 0;
}

/* Per-test teardown: disarms the watchdog, and turns allocation failure injection off
 * whatever happened in the test. */
static int test_teardown(void **state)
{
    (void)state;
    surelock_testing_fail_allocation_after(-1);
    pthread_mutex_lock(&watchdog.mu);
    watchdog.test = NULL;
    pthread_mutex_unlock(&watchdog.mu);
    return 0;
}

#define TEST(f) {#f, f, watchdog_arm, test_teardown, (void *)#f}

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
        RUN_IN_NEW_THREAD(&t, record_enomem_body, NULL);
        if (record_enomem.failed_rc != ENOMEM)
            fail_msg("form %zu: first acquire in a new thread returned %s (%d), expected ENOMEM",
                     i, errname(record_enomem.failed_rc), record_enomem.failed_rc);
        EXPECT_TEXT_MENTIONS(record_enomem.errmsg, "memory");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(depth_overflow_is_eagain_and_leaves_the_depth_unchanged),
        TEST(rlock_new_out_of_memory_is_enomem_and_writes_nothing),
        TEST(rlock_global_out_of_memory_is_enomem_and_a_retry_gets_one_lock),
        TEST(first_lock_in_a_new_thread_out_of_memory_is_enomem_and_holds_nothing),
    };
    return cmocka_run_group_tests_name("internal", tests, watchdog_start, watchdog_stop);
}
