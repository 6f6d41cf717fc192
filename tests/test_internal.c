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
