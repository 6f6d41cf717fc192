/*
 * test_rlock.c — the reentrant lock (API.md section 1) through the public header only, against
 * the real shared libsurelock.so.1.
 *
 * Rules every test here follows:
 *  - CMocka assertions run on the test's own thread only. Helper threads record what they saw
 *    (return codes, depths) and the test asserts on it after joining them.
 *  - Threads start behind a gate (or a handshake that orders them) and every one is joined.
 *    Every wait for another thread, joins included, is bounded (WAIT_LIMIT_MS, on
 *    CLOCK_MONOTONIC): a broken library fails the test, it never hangs it. Lock calls the
 *    test's own thread makes are bounded by a per-test watchdog (WATCHDOG_MS) that names the
 *    test and ends the run. State shared with helper threads is static, so a thread left stuck
 *    by a failed test can never scribble on a later test's stack.
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
#include "support/unsafe_lib.h"

/*
 * A call that must fail with `want` and leave an errmsg of its own that mentions one of the
 * words. errmsg is first primed with an unrelated failure, so a call that fails without
 * setting errmsg (leaving an older text that happens to match) is caught too.
 */
static char primer[512];
static void prime_errmsg(bool alternative)
{
    surelock_rlock *unused = NULL;
    if (alternative)
        (void)surelock_rlock_new(NULL);
    else
        (void)surelock_rlock_global("", &unused);
    save_errmsg(primer);
}

static void expect_errmsg_replaced_at(int line)
{
    if (strcmp(surelock_errmsg(), primer) == 0)
        fail_msg("line %d: the failing call left errmsg as it was (\"%s\")", line, primer);
}

#define EXPECT_FAIL_PRIMED(alternative, call, want, ...)                                       \
    do {                                                                                       \
        prime_errmsg(alternative);                                                             \
        EXPECT_RC((call), (want));                                                             \
        EXPECT_ERRMSG(__VA_ARGS__);                                                            \
        expect_errmsg_replaced_at(__LINE__);                                                   \
    } while (0)
#define EXPECT_FAIL(call, want, ...) EXPECT_FAIL_PRIMED(false, call, want, __VA_ARGS__)

/* A distinct non-NULL address to pre-load out-pointers with: they must stay untouched on error. */
static char sentinel_storage;
#define SENTINEL ((surelock_rlock *)(void *)&sentinel_storage)

/* ---- holder: a thread that takes a lock and keeps it until told to let go ---------------- */

typedef struct holder {
    helper thread;
    surelock_rlock *lock;
    unsigned depth;     /* how many times it takes the lock */
    bool exit_holding;  /* end the thread still holding it: owner death */
    pid_t sleeper;      /* if set (before holder_release): unlock once that thread sleeps */
    flag holding;
    flag release;
    /* what the holder saw */
    int lock_rc;   /* first non-zero return while taking it */
    int unlock_rc; /* first non-zero return while unlocking */
    unsigned depth_held, depth_at_release, depth_after;
    bool release_came;
} holder;

static void holder_body(void *arg)
{
    holder *h = arg;
    for (unsigned i = 0; i < h->depth; i++) {
        int rc = surelock_rlock_lock(h->lock);
        if (rc != 0 && h->lock_rc == 0) h->lock_rc = rc;
    }
    h->depth_held = surelock_rlock_depth(h->lock);
    flag_raise(&h->holding);
    h->release_came = flag_wait(&h->release, 1, WAIT_LIMIT_MS);
    h->depth_at_release = surelock_rlock_depth(h->lock);
    if (h->sleeper != 0) wait_until_asleep(h->sleeper, ASLEEP_LIMIT_MS);
    if (h->exit_holding) return; /* the thread ends holding the lock */
    for (unsigned i = 0; i < h->depth; i++) {
        int rc = surelock_rlock_unlock(h->lock);
        if (rc != 0 && h->unlock_rc == 0) h->unlock_rc = rc;
    }
    h->depth_after = surelock_rlock_depth(h->lock);
}

/* Starts a thread that takes l `depth` times, and returns once it holds it. */
static void holder_start(holder *h, surelock_rlock *l, unsigned depth, bool exit_holding)
{
    memset(h, 0, sizeof *h);
    h->lock = l;
    h->depth = depth;
    h->exit_holding = exit_holding;
    flag_init(&h->holding);
    flag_init(&h->release);
    helper_start(&h->thread, holder_body, h);
    if (!flag_wait(&h->holding, 1, WAIT_LIMIT_MS))
        fail_msg("the holder thread did not get the lock within %d ms", WAIT_LIMIT_MS);
    EXPECT_RC(h->lock_rc, 0);
    assert_int_equal(h->depth_held, depth);
}

static void holder_release(holder *h)
{
    flag_raise(&h->release);
}

/* Joins the holder and checks that its hold was intact until it let go (or exited). */
static void holder_join(holder *h)
{
    JOIN(&h->thread);
    assert_true(h->release_came);
    assert_int_equal(h->depth_at_release, h->depth); /* no other thread changed its depth */
    if (!h->exit_holding) {
        EXPECT_RC(h->unlock_rc, 0);
        assert_int_equal(h->depth_after, 0);
    }
    flag_destroy(&h->holding);
    flag_destroy(&h->release);
}

static void holder_finish(holder *h)
{
    holder_release(h);
    holder_join(h);
}

/* A new lock, asserted. */
static surelock_rlock *new_lock(void)
{
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_new(&l), 0);
    assert_non_null(l);
    return l;
}

static surelock_rlock *global_lock(const char *name)
{
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_global(name, &l), 0);
    assert_non_null(l);
    return l;
}

/* ================================================================================================
 * Version and errmsg
 * ============================================================================================== */

static void version_is_1_1_0(void **state)
{
    (void)state;
    const char *v = surelock_version();
    assert_non_null(v);
    assert_string_equal(v, "1.1.0");
    char from_macros[32];
    snprintf(from_macros, sizeof from_macros, "%d.%d.%d", SURELOCK_VERSION_MAJOR,
             SURELOCK_VERSION_MINOR, SURELOCK_VERSION_PATCH);
    assert_string_equal(v, from_macros);
}

static struct fresh_errmsg {
    bool was_null;
    char at_start[512];
    char after_successes[512];
    char after_failure[512];
    int first_bad_rc;
} fresh;

static void fresh_errmsg_body(void *arg)
{
    (void)arg;
    const char *msg = surelock_errmsg();
    fresh.was_null = msg == NULL;
    save_errmsg(fresh.at_start);

    /* successful calls only: they must leave "" alone */
    surelock_rlock *l = NULL, *g = NULL;
    int rc = surelock_rlock_new(&l);
    if (rc == 0) rc = surelock_rlock_lock(l);
    if (rc == 0) rc = surelock_rlock_trylock(l);
    if (rc == 0) rc = surelock_rlock_timedlock(l, 0);
    if (rc == 0) (void)surelock_rlock_depth(l);
    for (int i = 0; i < 3 && rc == 0; i++) rc = surelock_rlock_unlock(l);
    if (rc == 0) rc = surelock_rlock_free(l);
    if (rc == 0) rc = surelock_rlock_global("test_rlock:fresh errmsg", &g);
    if (rc == 0) rc = surelock_rlock_lock(g);
    if (rc == 0) rc = surelock_rlock_unlock(g);
    (void)surelock_version();
    fresh.first_bad_rc = rc;
    save_errmsg(fresh.after_successes);

    (void)surelock_rlock_unlock(NULL);
    save_errmsg(fresh.after_failure);
}

static void errmsg_is_empty_in_a_fresh_thread_and_belongs_to_its_thread(void **state)
{
    (void)state;
    static helper t;
    memset(&fresh, 0, sizeof fresh);

    /* This thread fails first, so an errmsg shared between threads would show up. */
    EXPECT_RC(surelock_rlock_lock(NULL), EINVAL);
    char mine[512];
    save_errmsg(mine);
    assert_true(mine[0] != '\0');

    RUN_IN_NEW_THREAD(&t, fresh_errmsg_body, NULL);

    assert_false(fresh.was_null);
    assert_string_equal(fresh.at_start, "");
    EXPECT_RC(fresh.first_bad_rc, 0);
    assert_string_equal(fresh.after_successes, "");
    assert_true(fresh.after_failure[0] != '\0');
    /* the other thread's failure did not touch this thread's text */
    assert_string_equal(surelock_errmsg(), mine);
}

static void errmsg_is_unchanged_by_successful_calls(void **state)
{
    (void)state;
    EXPECT_RC(surelock_rlock_unlock(NULL), EINVAL);
    char before[512];
    save_errmsg(before);
    EXPECT_ERRMSG("NULL");

    surelock_rlock *l = new_lock();
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_rlock_trylock(l), 0);
    EXPECT_RC(surelock_rlock_timedlock(l, 0), 0);
    EXPECT_RC(surelock_rlock_timedlock(l, 10 * MS), 0);
    EXPECT_RC(surelock_rlock_timedlock(l, SURELOCK_FOREVER), 0);
    assert_int_equal(surelock_rlock_depth(l), 5);
    assert_int_equal(surelock_rlock_depth(NULL), 0);
    for (int i = 0; i < 5; i++) EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
    surelock_rlock *g = global_lock("test_rlock:errmsg unchanged");
    EXPECT_RC(surelock_rlock_lock(g), 0);
    EXPECT_RC(surelock_rlock_unlock(g), 0);
    assert_string_equal(surelock_version(), "1.1.0");

    assert_string_equal(surelock_errmsg(), before);
}

/* ================================================================================================
 * EINVAL: NULL handles and out-pointers, bad names
 * ============================================================================================== */

static void null_handles_and_out_pointers_are_einval(void **state)
{
    (void)state;
    surelock_rlock *out = SENTINEL;

    EXPECT_FAIL(surelock_rlock_new(NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_free(NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_global(NULL, &out), EINVAL, "NULL");
    assert_ptr_equal(out, SENTINEL);
    EXPECT_FAIL(surelock_rlock_global("test_rlock:null out", NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_global(NULL, NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_lock(NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_trylock(NULL), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_timedlock(NULL, 0), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_timedlock(NULL, 10 * MS), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_timedlock(NULL, SURELOCK_FOREVER), EINVAL, "NULL");
    EXPECT_FAIL(surelock_rlock_unlock(NULL), EINVAL, "NULL");
    assert_int_equal(surelock_rlock_depth(NULL), 0);

    /* also while the caller holds some lock */
    surelock_rlock *l = new_lock();
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(NULL), 0);
    EXPECT_RC(surelock_rlock_unlock(NULL), EINVAL);
    assert_int_equal(surelock_rlock_depth(l), 1);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static void empty_global_name_is_einval(void **state)
{
    (void)state;
    surelock_rlock *out = SENTINEL;
    /* primed with the alternative failure: the usual primer is this very call */
    EXPECT_FAIL_PRIMED(true, surelock_rlock_global("", &out), EINVAL, "empty");
    assert_ptr_equal(out, SENTINEL);
}

static void global_name_of_256_bytes_is_einval_and_255_bytes_is_accepted(void **state)
{
    (void)state;
    static char name255[256], name255_copy[256], name255_other[256], name256[257], name1000[1001];
    memset(name255, 'n', 255);
    name255[255] = '\0';
    memcpy(name255_copy, name255, sizeof name255);
    memcpy(name255_other, name255, sizeof name255);
    name255_other[254] = 'm'; /* differs only in the last byte */
    memset(name256, 'n', 256); /* its first 255 bytes are name255: it must not be truncated */
    name256[256] = '\0';
    memset(name1000, 'n', 1000);
    name1000[1000] = '\0';

    surelock_rlock *out = SENTINEL;
    EXPECT_FAIL(surelock_rlock_global(name256, &out), EINVAL, "255");
    assert_ptr_equal(out, SENTINEL);
    EXPECT_FAIL(surelock_rlock_global(name1000, &out), EINVAL, "255");
    assert_ptr_equal(out, SENTINEL);

    surelock_rlock *a = global_lock(name255);
    assert_ptr_equal(global_lock(name255_copy), a);
    surelock_rlock *b = global_lock(name255_other);
    assert_ptr_not_equal(a, b);
    surelock_rlock *one = global_lock("n"); /* the shortest name, 1 byte */
    assert_ptr_not_equal(one, a);
    assert_ptr_equal(global_lock("n"), one);

    /* and the 255-byte lock is a working lock */
    EXPECT_RC(surelock_rlock_lock(a), 0);
    assert_int_equal(surelock_rlock_depth(a), 1);
    assert_int_equal(surelock_rlock_depth(b), 0);
    EXPECT_RC(surelock_rlock_unlock(a), 0);

    /* the rejected names created nothing that a valid call could now run into */
    EXPECT_RC(surelock_rlock_global(name256, &out), EINVAL);
    assert_ptr_equal(out, SENTINEL);
}

static void global_names_may_hold_any_bytes_but_nul(void **state)
{
    (void)state;
    const char ff01[] = {(char)0xff, 0x01, 0};
    surelock_rlock *a = global_lock("\xff\x01");
    assert_ptr_equal(global_lock(ff01), a); /* same bytes from another buffer */
    surelock_rlock *b = global_lock("\xff\x02");
    surelock_rlock *c = global_lock("\x01");
    surelock_rlock *d = global_lock("\xff");
    surelock_rlock *e = global_lock("\t \n\x7f\x80\xfe");
    surelock_rlock *f = global_lock("test_rlock:CASE");
    surelock_rlock *g = global_lock("test_rlock:case");
    surelock_rlock *all[] = {a, b, c, d, e, f, g};
    for (size_t i = 0; i < 7; i++)
        for (size_t j = i + 1; j < 7; j++)
            if (all[i] == all[j]) fail_msg("names %zu and %zu gave the same lock", i, j);
    EXPECT_RC(surelock_rlock_lock(a), 0);
    EXPECT_RC(surelock_rlock_lock(e), 0);
    EXPECT_RC(surelock_rlock_unlock(e), 0);
    EXPECT_RC(surelock_rlock_unlock(a), 0);
}

/*
 * Enough names that any table of buckets must put several in one: names of one length that
 * differ only in their last bytes, each its own lock, found again by a second lookup.
 */
#define MANY_NAMES 1000

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static void many_global_names_sharing_a_long_prefix_are_all_distinct_locks(void **state)
{
    (void)state;
    static surelock_rlock *locks[MANY_NAMES], *sorted[MANY_NAMES];
    char name[256];
    memset(name, 'p', 250);
    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name + 250, sizeof name - 250, "%05d", i); /* 255 bytes */
        locks[i] = global_lock(name);
    }
    for (int i = 0; i < MANY_NAMES; i++) {
        snprintf(name + 250, sizeof name - 250, "%05d", i);
        if (global_lock(name) != locks[i]) fail_msg("name %d: a second lookup gave another lock", i);
    }
    memcpy(sorted, locks, sizeof locks);
    qsort(sorted, MANY_NAMES, sizeof sorted[0], compare_pointers);
    for (int i = 1; i < MANY_NAMES; i++)
        if (sorted[i] == sorted[i - 1]) fail_msg("two different names gave the same lock");
    /* holding one of them leaves its neighbours free */
    EXPECT_RC(surelock_rlock_lock(locks[500]), 0);
    assert_int_equal(surelock_rlock_depth(locks[499]), 0);
    assert_int_equal(surelock_rlock_depth(locks[501]), 0);
    EXPECT_RC(surelock_rlock_unlock(locks[500]), 0);
}

/* ================================================================================================
 * Global names
 * ============================================================================================== */

static struct same_name {
    char name[64];
    int global_rc;
    surelock_rlock *got;
    int trylock_rc;
} same_name;

static void same_name_body(void *arg)
{
    (void)arg;
    same_name.got = NULL;
    same_name.global_rc = surelock_rlock_global(same_name.name, &same_name.got);
    same_name.trylock_rc = same_name.got ? surelock_rlock_trylock(same_name.got) : -1;
    if (same_name.trylock_rc == 0) (void)surelock_rlock_unlock(same_name.got);
}

static void same_global_name_gives_the_same_lock_from_any_thread(void **state)
{
    (void)state;
    static helper t;
    surelock_rlock *p = global_lock("test_rlock:same name");
    assert_ptr_equal(global_lock("test_rlock:same name"), p);

    /* another thread, with the name in its own buffer, gets that very lock: it is busy */
    memset(&same_name, 0, sizeof same_name);
    snprintf(same_name.name, sizeof same_name.name, "%s:%s", "test_rlock", "same name");
    EXPECT_RC(surelock_rlock_lock(p), 0);
    RUN_IN_NEW_THREAD(&t, same_name_body, NULL);
    EXPECT_RC(same_name.global_rc, 0);
    assert_ptr_equal(same_name.got, p);
    EXPECT_RC(same_name.trylock_rc, EBUSY);
    EXPECT_RC(surelock_rlock_unlock(p), 0);
}

static struct independent {
    surelock_rlock *a, *b;
    int trylock_b_rc, trylock_a_rc, unlock_b_rc;
    unsigned depth_b, depth_a;
} independent;

static void independent_body(void *arg)
{
    (void)arg;
    independent.trylock_b_rc = surelock_rlock_trylock(independent.b);
    independent.depth_b = surelock_rlock_depth(independent.b);
    independent.trylock_a_rc = surelock_rlock_trylock(independent.a);
    independent.depth_a = surelock_rlock_depth(independent.a);
    if (independent.trylock_a_rc == 0) (void)surelock_rlock_unlock(independent.a);
    independent.unlock_b_rc = surelock_rlock_unlock(independent.b);
}

static void different_global_names_are_independent_locks(void **state)
{
    (void)state;
    static helper t;
    memset(&independent, 0, sizeof independent);
    independent.a = global_lock("test_rlock:independent a");
    independent.b = global_lock("test_rlock:independent b");
    assert_ptr_not_equal(independent.a, independent.b);

    EXPECT_RC(surelock_rlock_lock(independent.a), 0);
    assert_int_equal(surelock_rlock_depth(independent.b), 0);
    RUN_IN_NEW_THREAD(&t, independent_body, NULL);
    EXPECT_RC(independent.trylock_b_rc, 0); /* holding a does not block b */
    assert_int_equal(independent.depth_b, 1);
    EXPECT_RC(independent.trylock_a_rc, EBUSY); /* but a is held */
    assert_int_equal(independent.depth_a, 0);
    EXPECT_RC(independent.unlock_b_rc, 0);
    assert_int_equal(surelock_rlock_depth(independent.a), 1);
    EXPECT_RC(surelock_rlock_unlock(independent.a), 0);
}

static void global_locks_are_never_freed(void **state)
{
    (void)state;
    surelock_rlock *g = global_lock("test_rlock:never freed");
    EXPECT_FAIL(surelock_rlock_free(g), EPERM, "global", "process-wide", "never");

    /* still the same, working lock */
    assert_ptr_equal(global_lock("test_rlock:never freed"), g);
    EXPECT_RC(surelock_rlock_lock(g), 0);
    /* held by the caller: both EPERM and EBUSY describe it; either way nothing is freed */
    int rc = surelock_rlock_free(g);
    if (rc != EPERM && rc != EBUSY)
        fail_msg("free of a held global returned %s (%d)", errname(rc), rc);
    assert_int_equal(surelock_rlock_depth(g), 1);
    EXPECT_RC(surelock_rlock_unlock(g), 0);
    EXPECT_RC(surelock_rlock_free(g), EPERM);
    EXPECT_RC(surelock_rlock_trylock(g), 0);
    EXPECT_RC(surelock_rlock_unlock(g), 0);
}

/* ================================================================================================
 * New locks, depth, re-entry
 * ============================================================================================== */

static void new_lock_is_unheld_and_can_be_freed(void **state)
{
    (void)state;
    surelock_rlock *l = SENTINEL, *m = SENTINEL;
    EXPECT_RC(surelock_rlock_new(&l), 0);
    EXPECT_RC(surelock_rlock_new(&m), 0);
    assert_non_null(l);
    assert_ptr_not_equal(l, SENTINEL);
    assert_ptr_not_equal(l, m);
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), EPERM);
    EXPECT_RC(surelock_rlock_trylock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 1);
    assert_int_equal(surelock_rlock_depth(m), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
    EXPECT_RC(surelock_rlock_free(m), 0);
}

static void depth_tracks_reentry_by_every_acquire_form(void **state)
{
    (void)state;
    surelock_rlock *l = new_lock();
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 1);
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 2);
    EXPECT_RC(surelock_rlock_trylock(l), 0); /* the holder's trylock re-enters */
    assert_int_equal(surelock_rlock_depth(l), 3);
    EXPECT_RC(surelock_rlock_timedlock(l, 0), 0); /* and so does timedlock(0) */
    assert_int_equal(surelock_rlock_depth(l), 4);
    EXPECT_RC(surelock_rlock_timedlock(l, 10 * MS), 0);
    assert_int_equal(surelock_rlock_depth(l), 5);
    EXPECT_RC(surelock_rlock_timedlock(l, SURELOCK_FOREVER), 0);
    assert_int_equal(surelock_rlock_depth(l), 6);
    for (unsigned d = 6; d > 0; d--) {
        EXPECT_RC(surelock_rlock_unlock(l), 0);
        assert_int_equal(surelock_rlock_depth(l), d - 1);
    }
    EXPECT_RC(surelock_rlock_unlock(l), EPERM); /* one unlock too many */
    assert_int_equal(surelock_rlock_depth(l), 0);

    /* a deep nest, then fully released: another lock round works from depth 0 again */
    for (unsigned d = 1; d <= 1000; d++) EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 1000);
    for (unsigned d = 1; d <= 1000; d++) EXPECT_RC(surelock_rlock_unlock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static struct non_holder {
    surelock_rlock *l, *other;
    unsigned depth_fresh, depth_with_record;
    int unlock_rc, other_lock_rc, other_unlock_rc;
} non_holder;

static void non_holder_body(void *arg)
{
    (void)arg;
    non_holder.depth_fresh = surelock_rlock_depth(non_holder.l); /* no thread record yet */
    non_holder.other_lock_rc = surelock_rlock_lock(non_holder.other);
    non_holder.depth_with_record = surelock_rlock_depth(non_holder.l);
    non_holder.other_unlock_rc = surelock_rlock_unlock(non_holder.other);
}

static void depth_is_zero_for_a_thread_that_does_not_hold_the_lock(void **state)
{
    (void)state;
    static helper t;
    memset(&non_holder, 0, sizeof non_holder);
    non_holder.l = new_lock();
    non_holder.other = new_lock();
    for (int i = 0; i < 3; i++) EXPECT_RC(surelock_rlock_lock(non_holder.l), 0);
    RUN_IN_NEW_THREAD(&t, non_holder_body, NULL);
    assert_int_equal(non_holder.depth_fresh, 0);
    EXPECT_RC(non_holder.other_lock_rc, 0);
    assert_int_equal(non_holder.depth_with_record, 0);
    EXPECT_RC(non_holder.other_unlock_rc, 0);
    assert_int_equal(surelock_rlock_depth(non_holder.l), 3);
    for (int i = 0; i < 3; i++) EXPECT_RC(surelock_rlock_unlock(non_holder.l), 0);
    EXPECT_RC(surelock_rlock_free(non_holder.l), 0);
    EXPECT_RC(surelock_rlock_free(non_holder.other), 0);
}

/* ================================================================================================
 * EBUSY
 * ============================================================================================== */

static void trylock_is_ebusy_while_another_thread_holds_the_lock(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 2, false);
    EXPECT_FAIL(surelock_rlock_trylock(l), EBUSY, "held");
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_trylock(l), EBUSY); /* still, and nothing was taken */
    holder_finish(&h);
    EXPECT_RC(surelock_rlock_trylock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static void free_is_ebusy_while_the_caller_holds_the_lock(void **state)
{
    (void)state;
    surelock_rlock *l = new_lock();
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_FAIL(surelock_rlock_free(l), EBUSY, "held");
    assert_int_equal(surelock_rlock_depth(l), 1); /* nothing freed, still held */
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_FAIL(surelock_rlock_free(l), EBUSY, "held");
    assert_int_equal(surelock_rlock_depth(l), 2);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), EBUSY); /* depth 1 is still held */
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static void free_is_ebusy_while_another_thread_holds_the_lock(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 1, false);
    EXPECT_FAIL(surelock_rlock_free(l), EBUSY, "held");
    EXPECT_RC(surelock_rlock_trylock(l), EBUSY); /* nothing freed: still held by the holder */
    holder_finish(&h);                           /* whose unlock still works */
    EXPECT_RC(surelock_rlock_free(l), 0);
}

/* ================================================================================================
 * ETIMEDOUT, and waiting forms that succeed
 * ============================================================================================== */

static void timedlock_zero_is_etimedout_while_another_thread_holds_the_lock(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 1, false);
    EXPECT_FAIL(surelock_rlock_timedlock(l, 0), ETIMEDOUT, "held", "timeout", "timed out");
    assert_int_equal(surelock_rlock_depth(l), 0);
    holder_finish(&h);
    EXPECT_RC(surelock_rlock_timedlock(l, 0), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static void timedlock_waits_at_least_its_timeout_on_the_monotonic_clock(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 1, false);

    const uint64_t timeouts[] = {50 * MS, 1, 1 * MS};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        prime_errmsg(false);
        uint64_t start = now_ns();
        int rc = surelock_rlock_timedlock(l, timeouts[i]);
        uint64_t elapsed = now_ns() - start;
        EXPECT_RC(rc, ETIMEDOUT);
        EXPECT_ERRMSG("held", "timeout", "timed out");
        expect_errmsg_replaced_at(__LINE__);
        assert_int_equal(surelock_rlock_depth(l), 0);
        if (elapsed < timeouts[i])
            fail_msg("timedlock(%llu ns) gave up after only %llu ns",
                     (unsigned long long)timeouts[i], (unsigned long long)elapsed);
        if (elapsed > TIMED_WAIT_CEILING_NS)
            fail_msg("timedlock(%llu ns) took %llu ns to time out",
                     (unsigned long long)timeouts[i], (unsigned long long)elapsed);
    }
    holder_finish(&h);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

enum acquire_form { BY_LOCK, BY_TIMEDLOCK_FOREVER, BY_TIMEDLOCK_30S, BY_TIMEDLOCK_OVERFLOWING };

static int acquire_by(surelock_rlock *l, enum acquire_form form)
{
    switch (form) {
    case BY_LOCK: return surelock_rlock_lock(l);
    case BY_TIMEDLOCK_FOREVER: return surelock_rlock_timedlock(l, SURELOCK_FOREVER);
    case BY_TIMEDLOCK_30S: return surelock_rlock_timedlock(l, 30000 * MS);
    case BY_TIMEDLOCK_OVERFLOWING: return surelock_rlock_timedlock(l, UINT64_MAX - 1);
    }
    return -1;
}

/*
 * The holder lets go only once this thread is seen asleep inside the acquire call, so every
 * form really waits. UINT64_MAX - 1 ns from now overflows any 64-bit nanosecond clock: the
 * contract makes that "forever", so it must wait too, not time out at once.
 */
static void waiting_acquires_get_the_lock_when_the_holder_releases(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    const enum acquire_form forms[] = {BY_LOCK, BY_TIMEDLOCK_FOREVER, BY_TIMEDLOCK_30S,
                                       BY_TIMEDLOCK_OVERFLOWING};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        holder_start(&h, l, 2, false);
        h.sleeper = current_tid();
        holder_release(&h);
        int rc = acquire_by(l, forms[i]);
        holder_join(&h);
        if (rc != 0) fail_msg("acquire form %zu returned %s (%d)", i, errname(rc), rc);
        assert_int_equal(surelock_rlock_depth(l), 1);
        EXPECT_RC(surelock_rlock_unlock(l), 0);
    }
    EXPECT_RC(surelock_rlock_free(l), 0);
}

/* ================================================================================================
 * EPERM
 * ============================================================================================== */

static struct fresh_unlock {
    surelock_rlock *l;
    int rc;
    char errmsg[512];
} fresh_unlock;

static void fresh_unlock_body(void *arg)
{
    (void)arg;
    fresh_unlock.rc = surelock_rlock_unlock(fresh_unlock.l); /* a thread that never locked */
    save_errmsg(fresh_unlock.errmsg);
}

static void unlock_by_a_thread_that_does_not_hold_the_lock_is_eperm(void **state)
{
    (void)state;
    static holder h;
    static helper t;
    surelock_rlock *l = new_lock();

    /* unheld lock */
    EXPECT_FAIL(surelock_rlock_unlock(l), EPERM, "hold", "held", "owner");

    /* held by another thread, unlocked here: refused, and the holder's depth is untouched */
    holder_start(&h, l, 2, false);
    EXPECT_FAIL(surelock_rlock_unlock(l), EPERM, "hold", "held", "owner");
    EXPECT_RC(surelock_rlock_unlock(l), EPERM);

    /* ... also from a brand-new thread that has never taken any lock */
    memset(&fresh_unlock, 0, sizeof fresh_unlock);
    fresh_unlock.l = l;
    RUN_IN_NEW_THREAD(&t, fresh_unlock_body, NULL);
    EXPECT_RC(fresh_unlock.rc, EPERM);
    assert_true(fresh_unlock.errmsg[0] != '\0');

    holder_finish(&h); /* checks its depth was still 2 and both its unlocks succeed */

    /* unbalanced: one unlock more than locks */
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), EPERM);
    EXPECT_RC(surelock_rlock_trylock(l), 0); /* and the refused unlock broke nothing */
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

/* ================================================================================================
 * EOWNERDEAD: the owning thread exits holding the lock
 * ============================================================================================== */

static struct after_death {
    surelock_rlock *l;
    int trylock_rc, lock_rc, unlock_rc;
    unsigned depth;
} after_death;

static void other_thread_takes_and_releases(void *arg)
{
    (void)arg;
    after_death.trylock_rc = surelock_rlock_trylock(after_death.l);
    after_death.depth = surelock_rlock_depth(after_death.l);
    after_death.unlock_rc =
        after_death.trylock_rc == 0 ? surelock_rlock_unlock(after_death.l) : -1;
}

/* Another thread tries l once (after_death has what it saw). */
static void another_thread_tries(helper *t, surelock_rlock *l)
{
    memset(&after_death, 0, sizeof after_death);
    after_death.l = l;
    RUN_IN_NEW_THREAD(t, other_thread_takes_and_releases, NULL);
}

/* Another thread takes l, at depth 1, and releases it: l is free and whole. */
static void expect_free_for_another_thread(helper *t, surelock_rlock *l)
{
    another_thread_tries(t, l);
    EXPECT_RC(after_death.trylock_rc, 0);
    assert_int_equal(after_death.depth, 1);
    EXPECT_RC(after_death.unlock_rc, 0);
}
static void owner_thread_exit_is_reported_to_next_locker(void **state)
{
    (void)state;
    static holder h;
    static helper t;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 3, true);
    holder_finish(&h); /* the thread has exited, holding l at depth 3 */

    EXPECT_RC(surelock_rlock_unlock(NULL), EINVAL); /* an errmsg EOWNERDEAD must not replace */
    char before[512];
    save_errmsg(before);

    EXPECT_RC(surelock_rlock_lock(l), EOWNERDEAD);
    assert_string_equal(surelock_errmsg(), before);
    assert_int_equal(surelock_rlock_depth(l), 1); /* at depth 1, not the dead owner's 3 */

    /* the caller really holds it: re-entry works and other threads are kept out */
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 2);
    another_thread_tries(&t, l);
    EXPECT_RC(after_death.trylock_rc, EBUSY);
    EXPECT_RC(surelock_rlock_free(l), EBUSY);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), EPERM);

    /* reported once: the following lock is plain success, and others can use it again */
    EXPECT_RC(surelock_rlock_lock(l), 0);
    assert_int_equal(surelock_rlock_depth(l), 1);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    expect_free_for_another_thread(&t, l);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

/* A lock taken by its own call is kept apart from others' holds (the thread record's slot);
 * a group that re-enters it takes the hold over. Unlocked by its own call first, then let go
 * by the group: it is free, whole, and usable by everyone. */
static void an_rlock_its_group_lets_go_after_its_own_unlock_is_free_for_every_thread(void **state)
{
    (void)state;
    static helper t;
    surelock_rlock *l = new_lock();
    surelock_group *g = NULL;
    EXPECT_RC(surelock_group_new(&g), 0);
    EXPECT_RC(surelock_group_add_rlock(g, l), 0);
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    assert_int_equal(surelock_rlock_depth(l), 2);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    assert_int_equal(surelock_rlock_depth(l), 0);
    expect_free_for_another_thread(&t, l);
    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static struct heir {
    surelock_rlock *l;
    unsigned depth_before, depth_after_lock;
    int unlock_before_rc, lock_rc, unlock_rc;
} heir;

static void heir_body(void *arg)
{
    (void)arg;
    heir.depth_before = surelock_rlock_depth(heir.l);
    heir.unlock_before_rc = surelock_rlock_unlock(heir.l);
    heir.lock_rc = surelock_rlock_lock(heir.l);
    heir.depth_after_lock = surelock_rlock_depth(heir.l);
    heir.unlock_rc = surelock_rlock_unlock(heir.l);
}

/* glibc hands a new thread the cached stack (and so the TLS block) of one that exited: an
 * identity that is a TID or TLS address would make the newcomer look like the dead owner. */
static void new_thread_does_not_inherit_the_hold_of_a_dead_owner(void **state)
{
    (void)state;
    static holder h;
    static helper t;
    surelock_rlock *l = new_lock();
    holder_start(&h, l, 3, true);
    holder_finish(&h);

    memset(&heir, 0, sizeof heir);
    heir.l = l;
    RUN_IN_NEW_THREAD(&t, heir_body, NULL);
    assert_int_equal(heir.depth_before, 0);
    EXPECT_RC(heir.unlock_before_rc, EPERM);
    EXPECT_RC(heir.lock_rc, EOWNERDEAD);
    assert_int_equal(heir.depth_after_lock, 1);
    EXPECT_RC(heir.unlock_rc, 0);

    EXPECT_RC(surelock_rlock_lock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static void owner_death_is_reported_by_trylock_and_timedlock_too(void **state)
{
    (void)state;
    static holder h;
    surelock_rlock *l = new_lock();
    for (int form = 0; form < 4; form++) {
        holder_start(&h, l, 2, true);
        holder_finish(&h);
        int rc = form == 0   ? surelock_rlock_trylock(l)
                 : form == 1 ? surelock_rlock_timedlock(l, 0)
                 : form == 2 ? surelock_rlock_timedlock(l, 1000 * MS)
                             : surelock_rlock_timedlock(l, SURELOCK_FOREVER);
        if (rc != EOWNERDEAD)
            fail_msg("acquire form %d after owner death returned %s (%d)", form, errname(rc), rc);
        assert_int_equal(surelock_rlock_depth(l), 1);
        EXPECT_RC(surelock_rlock_unlock(l), 0);
    }
    EXPECT_RC(surelock_rlock_trylock(l), 0);
    EXPECT_RC(surelock_rlock_unlock(l), 0);
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static struct blocked_waiter {
    surelock_rlock *l;
    bool timed;
    pid_t tid;
    flag about_to_lock;
    int rc, reenter_rc, unlock_rc;
    unsigned depth, depth_reentered, depth_after;
} waiter;

static void blocked_waiter_body(void *arg)
{
    (void)arg;
    waiter.tid = current_tid();
    flag_raise(&waiter.about_to_lock);
    waiter.rc = waiter.timed ? surelock_rlock_timedlock(waiter.l, 30000 * MS)
                             : surelock_rlock_lock(waiter.l);
    waiter.depth = surelock_rlock_depth(waiter.l);
    waiter.reenter_rc = surelock_rlock_lock(waiter.l);
    waiter.depth_reentered = surelock_rlock_depth(waiter.l);
    waiter.unlock_rc = surelock_rlock_unlock(waiter.l);
    if (waiter.unlock_rc == 0) waiter.unlock_rc = surelock_rlock_unlock(waiter.l);
    waiter.depth_after = surelock_rlock_depth(waiter.l);
}

static void owner_thread_exit_is_reported_to_a_waiter_already_blocked(void **state)
{
    (void)state;
    static holder h;
    static helper t;
    surelock_rlock *l = new_lock();
    for (int timed = 0; timed <= 1; timed++) {
        holder_start(&h, l, 2, true);
        memset(&waiter, 0, sizeof waiter);
        waiter.l = l;
        waiter.timed = timed;
        flag_init(&waiter.about_to_lock);
        helper_start(&t, blocked_waiter_body, NULL);
        if (!flag_wait(&waiter.about_to_lock, 1, WAIT_LIMIT_MS))
            fail_msg("the waiter thread did not start within %d ms", WAIT_LIMIT_MS);
        if (wait_until_asleep(waiter.tid, ASLEEP_LIMIT_MS) != 1)
            print_message("note: could not see the waiter asleep; it may not be blocked yet\n");
        EXPECT_RC(surelock_rlock_trylock(l), EBUSY); /* the owner still holds it */

        holder_finish(&h); /* the owner exits, holding l at depth 2 */
        JOIN(&t);
        flag_destroy(&waiter.about_to_lock);
        if (waiter.rc != EOWNERDEAD)
            fail_msg("the blocked %s returned %s (%d), expected EOWNERDEAD",
                     timed ? "timedlock" : "lock", errname(waiter.rc), waiter.rc);
        assert_int_equal(waiter.depth, 1);
        EXPECT_RC(waiter.reenter_rc, 0);
        assert_int_equal(waiter.depth_reentered, 2);
        EXPECT_RC(waiter.unlock_rc, 0);
        assert_int_equal(waiter.depth_after, 0);

        /* the following lock is plain success */
        EXPECT_RC(surelock_rlock_lock(l), 0);
        assert_int_equal(surelock_rlock_depth(l), 1);
        EXPECT_RC(surelock_rlock_unlock(l), 0);
    }
    EXPECT_RC(surelock_rlock_free(l), 0);
}

static struct many_held {
    surelock_rlock *l1, *l2, *g, *released;
    int bad_rc;
} many_held;

static void many_held_check(int rc)
{
    if (rc != 0 && many_held.bad_rc == 0) many_held.bad_rc = rc;
}

static void hold_several_and_exit(void *arg)
{
    (void)arg;
    many_held_check(surelock_rlock_lock(many_held.l1));
    many_held_check(surelock_rlock_lock(many_held.l1));
    many_held_check(surelock_rlock_lock(many_held.g));
    many_held_check(surelock_rlock_lock(many_held.released));
    for (int i = 0; i < 5; i++) many_held_check(surelock_rlock_trylock(many_held.l2));
    many_held_check(surelock_rlock_unlock(many_held.released));
    /* ends holding l1 (depth 2), g (1) and l2 (5); `released` was let go */
}

static void owner_death_releases_every_lock_the_thread_held(void **state)
{
    (void)state;
    static helper t;
    memset(&many_held, 0, sizeof many_held);
    many_held.l1 = new_lock();
    many_held.l2 = new_lock();
    many_held.released = new_lock();
    many_held.g = global_lock("test_rlock:owner death global");
    RUN_IN_NEW_THREAD(&t, hold_several_and_exit, NULL);
    EXPECT_RC(many_held.bad_rc, 0);

    EXPECT_RC(surelock_rlock_trylock(many_held.l1), EOWNERDEAD);
    EXPECT_RC(surelock_rlock_timedlock(many_held.g, 0), EOWNERDEAD);
    EXPECT_RC(surelock_rlock_lock(many_held.l2), EOWNERDEAD);
    EXPECT_RC(surelock_rlock_lock(many_held.released), 0); /* released before exit: no report */
    assert_int_equal(surelock_rlock_depth(many_held.l1), 1);
    assert_int_equal(surelock_rlock_depth(many_held.l2), 1);
    assert_int_equal(surelock_rlock_depth(many_held.g), 1);
    EXPECT_RC(surelock_rlock_unlock(many_held.l1), 0);
    EXPECT_RC(surelock_rlock_unlock(many_held.l2), 0);
    EXPECT_RC(surelock_rlock_unlock(many_held.g), 0);
    EXPECT_RC(surelock_rlock_unlock(many_held.released), 0);
    EXPECT_RC(surelock_rlock_lock(many_held.g), 0);
    EXPECT_RC(surelock_rlock_unlock(many_held.g), 0);
    EXPECT_RC(surelock_rlock_free(many_held.l1), 0);
    EXPECT_RC(surelock_rlock_free(many_held.l2), 0);
    EXPECT_RC(surelock_rlock_free(many_held.released), 0);
}

/* ================================================================================================
 * Mutual exclusion under contention
 * ============================================================================================== */

#define WORKERS 4
#define COUNTER_ITERATIONS 20000

typedef struct counter_worker {
    bool started;
    bool mixed; /* use every acquire form, not only lock */
    long bad;   /* unexpected results */
    int first_bad_rc;
    unsigned first_bad_depth;
    long retries;
} counter_worker;

static struct counter_run {
    surelock_rlock *lock;
    gate gate;
    long counter; /* plain memory: only the lock keeps it exact */
    helper threads[WORKERS];
    counter_worker w[WORKERS];
} counter_run;

static void counter_note(counter_worker *w, int rc, unsigned depth)
{
    if (w->bad++ == 0) {
        w->first_bad_rc = rc;
        w->first_bad_depth = depth;
    }
}

/* Takes the lock from outside: by lock, trylock until it works, timedlock(FOREVER) or
 * timedlock(1 ms) until it works. Returns 0 or the unexpected return code. */
static int counter_outer_acquire(counter_worker *w, surelock_rlock *l, long i)
{
    if (!w->mixed) return surelock_rlock_lock(l);
    int rc;
    switch (i % 4) {
    case 0: return surelock_rlock_lock(l);
    case 1:
        while ((rc = surelock_rlock_trylock(l)) == EBUSY) {
            w->retries++;
            sched_yield();
        }
        return rc;
    case 2: return surelock_rlock_timedlock(l, SURELOCK_FOREVER);
    default:
        while ((rc = surelock_rlock_timedlock(l, 1 * MS)) == ETIMEDOUT) w->retries++;
        return rc;
    }
}

static void counter_body(void *arg)
{
    counter_worker *w = arg;
    surelock_rlock *l = counter_run.lock;
    w->started = gate_pass(&counter_run.gate);
    if (!w->started) return;
    for (long i = 0; i < COUNTER_ITERATIONS; i++) {
        int rc = counter_outer_acquire(w, l, i);
        if (rc != 0) {
            counter_note(w, rc, 0);
            continue;
        }
        /* re-enter, by a form that never waits when the caller holds the lock */
        rc = !w->mixed ? surelock_rlock_lock(l)
             : (i & 1) ? surelock_rlock_trylock(l)
                       : surelock_rlock_timedlock(l, 0);
        unsigned depth = surelock_rlock_depth(l);
        if (rc != 0 || depth != 2) counter_note(w, rc, depth);

        long value = counter_run.counter; /* a read-modify-write with a window in it */
        if ((i & 63) == 0) sched_yield();
        counter_run.counter = value + 1;

        if (rc == 0 && surelock_rlock_unlock(l) != 0) counter_note(w, -1, depth);
        if (surelock_rlock_unlock(l) != 0) counter_note(w, -2, depth);
        if (surelock_rlock_depth(l) != 0) counter_note(w, -3, surelock_rlock_depth(l));
    }
}

static void run_counter(bool mixed)
{
    memset(&counter_run, 0, sizeof counter_run);
    counter_run.lock = new_lock();
    gate_init(&counter_run.gate);
    for (int i = 0; i < WORKERS; i++) {
        counter_run.w[i].mixed = mixed;
        helper_start(&counter_run.threads[i], counter_body, &counter_run.w[i]);
    }
    gate_open(&counter_run.gate, WORKERS);
    for (int i = 0; i < WORKERS; i++) JOIN(&counter_run.threads[i]);
    gate_destroy(&counter_run.gate);

    for (int i = 0; i < WORKERS; i++) {
        counter_worker *w = &counter_run.w[i];
        assert_true(w->started);
        if (w->bad != 0)
            fail_msg("worker %d: %ld unexpected results, first rc %s (%d) at depth %u", i, w->bad,
                     errname(w->first_bad_rc), w->first_bad_rc, w->first_bad_depth);
    }
    assert_int_equal(counter_run.counter, (long)WORKERS * COUNTER_ITERATIONS);
    EXPECT_RC(surelock_rlock_trylock(counter_run.lock), 0); /* left unheld */
    EXPECT_RC(surelock_rlock_unlock(counter_run.lock), 0);
    EXPECT_RC(surelock_rlock_free(counter_run.lock), 0);
}

static void four_threads_reentering_keep_a_plain_counter_exact(void **state)
{
    (void)state;
    run_counter(false);
}

static void four_threads_mixing_every_acquire_form_keep_a_plain_counter_exact(void **state)
{
    (void)state;
    run_counter(true);
}

/* A lock may be freed as soon as its last unlock has returned: the releasing thread must not
 * touch it after its releasing store (AddressSanitizer would see a use after free). */
#define HANDOFFS 300

static struct handoff {
    surelock_rlock *locks[HANDOFFS];
    flag a_holds;
    helper a, b;
    long a_bad, b_bad;
    int b_first_bad_rc;
} handoff;

static void handoff_a(void *arg)
{
    (void)arg;
    for (int i = 0; i < HANDOFFS; i++) {
        if (surelock_rlock_lock(handoff.locks[i]) != 0) handoff.a_bad++;
        flag_raise(&handoff.a_holds);
        if (i % 3 == 0) sleep_ms(1); /* now and then, let b fall asleep in the futex */
        if (surelock_rlock_unlock(handoff.locks[i]) != 0) handoff.a_bad++;
    }
}

static void handoff_b(void *arg)
{
    (void)arg;
    for (int i = 0; i < HANDOFFS; i++) {
        if (!flag_wait(&handoff.a_holds, i + 1, WAIT_LIMIT_MS)) {
            handoff.b_bad++;
            return;
        }
        int rc = surelock_rlock_lock(handoff.locks[i]);
        if (rc == 0) rc = surelock_rlock_unlock(handoff.locks[i]);
        if (rc == 0) rc = surelock_rlock_free(handoff.locks[i]);
        if (rc != 0 && handoff.b_bad++ == 0) handoff.b_first_bad_rc = rc;
    }
}

static void lock_can_be_freed_as_soon_as_its_last_unlock_returns(void **state)
{
    (void)state;
    memset(&handoff, 0, sizeof handoff);
    for (int i = 0; i < HANDOFFS; i++) handoff.locks[i] = new_lock();
    flag_init(&handoff.a_holds);
    helper_start(&handoff.b, handoff_b, NULL);
    helper_start(&handoff.a, handoff_a, NULL);
    JOIN(&handoff.a);
    JOIN(&handoff.b);
    flag_destroy(&handoff.a_holds);
    assert_int_equal(handoff.a_bad, 0);
    if (handoff.b_bad != 0)
        fail_msg("%ld hand-offs failed, first with %s (%d)", handoff.b_bad,
                 errname(handoff.b_first_bad_rc), handoff.b_first_bad_rc);
}

/* ================================================================================================
 * Guarding a thread-unsafe C library (tests/support/unsafe_lib)
 * ============================================================================================== */

#define UNSAFE_ITERATIONS 5000

typedef struct unsafe_worker {
    surelock_rlock *guard; /* looked up by the worker itself, as an independent binding would */
    int global_rc;
    bool started;
    long bad;
    int first_bad_rc;
    unsigned first_bad_depth;
} unsafe_worker;

static struct unsafe_run {
    gate gate;
    helper threads[WORKERS];
    unsafe_worker w[WORKERS];
} unsafe_run;

static void unsafe_note(unsafe_worker *w, int rc, unsigned depth)
{
    if (w->bad++ == 0) {
        w->first_bad_rc = rc;
        w->first_bad_depth = depth;
    }
}

/* Called by the library from inside unsafe_visit: calls back into it, each call wrapped in
 * the guard like every other call (that is re-entry of the guard on this thread). */
static void unsafe_callback_reenters(void *ctx)
{
    unsafe_worker *w = ctx;
    for (int k = 0; k < 2; k++) {
        int rc = surelock_rlock_lock(w->guard);
        unsigned depth = surelock_rlock_depth(w->guard);
        if (rc != 0 || depth != 2) unsafe_note(w, rc, depth);
        unsafe_increment();
        if (rc == 0 && surelock_rlock_unlock(w->guard) != 0) unsafe_note(w, -1, depth);
    }
}

static void unsafe_body(void *arg)
{
    unsafe_worker *w = arg;
    w->global_rc = surelock_rlock_global(UNSAFE_LIB_SONAME, &w->guard);
    w->started = gate_pass(&unsafe_run.gate);
    if (!w->started || w->global_rc != 0) return;
    for (long i = 0; i < UNSAFE_ITERATIONS; i++) {
        int rc = surelock_rlock_lock(w->guard);
        if (rc != 0) {
            unsafe_note(w, rc, 0);
            continue;
        }
        unsafe_increment();
        if (surelock_rlock_unlock(w->guard) != 0) unsafe_note(w, -1, 1);

        rc = surelock_rlock_lock(w->guard);
        if (rc != 0) {
            unsafe_note(w, rc, 0);
            continue;
        }
        unsafe_visit(unsafe_callback_reenters, w);
        if (surelock_rlock_unlock(w->guard) != 0) unsafe_note(w, -2, 1);
    }
}

static void guarded_unsafe_library_sees_no_concurrent_entry_and_an_exact_count(void **state)
{
    (void)state;
    memset(&unsafe_run, 0, sizeof unsafe_run);
    unsafe_reset();
    gate_init(&unsafe_run.gate);
    for (int i = 0; i < WORKERS; i++)
        helper_start(&unsafe_run.threads[i], unsafe_body, &unsafe_run.w[i]);
    gate_open(&unsafe_run.gate, WORKERS);
    for (int i = 0; i < WORKERS; i++) JOIN(&unsafe_run.threads[i]);
    gate_destroy(&unsafe_run.gate);

    surelock_rlock *guard = global_lock(UNSAFE_LIB_SONAME);
    for (int i = 0; i < WORKERS; i++) {
        unsafe_worker *w = &unsafe_run.w[i];
        assert_true(w->started);
        EXPECT_RC(w->global_rc, 0);
        assert_ptr_equal(w->guard, guard); /* every "binding" got the one guard */
        if (w->bad != 0)
            fail_msg("worker %d: %ld unexpected results, first rc %s (%d) at depth %u", i, w->bad,
                     errname(w->first_bad_rc), w->first_bad_rc, w->first_bad_depth);
    }
    assert_int_equal(unsafe_violations(), 0);
    /* per iteration: increment (1) + visit (1) + two increments from its callback (2) */
    assert_int_equal(unsafe_count(), (long)WORKERS * UNSAFE_ITERATIONS * 4);
    /* the callbacks really re-entered the library, on their own thread */
    assert_int_equal(unsafe_reentries(), (long)WORKERS * UNSAFE_ITERATIONS * 2);
    EXPECT_RC(surelock_rlock_trylock(guard), 0); /* left unheld */
    EXPECT_RC(surelock_rlock_unlock(guard), 0);
}

/*
 * Two threads and a handshake that forces them to meet: thread a is inside the library (in a
 * callback, waiting) when thread b calls it. Without the guard, b gets in and the detector
 * must report the overlap; with it, b is kept out until a has left.
 */
static struct overlap {
    bool guarded;
    surelock_rlock *guard;
    flag a_inside, b_done;
    helper a, b;
    bool a_saw_b_done, b_saw_a_inside;
    int a_lock_rc, a_unlock_rc;
    int b_trylock_rc, b_timedlock_rc, b_lock_rc, b_unlock_rc;
    long violations_seen_by_b;
} overlap;

static void overlap_callback(void *ctx)
{
    (void)ctx;
    flag_raise(&overlap.a_inside);
    overlap.a_saw_b_done = flag_wait(&overlap.b_done, 1, WAIT_LIMIT_MS);
}

static void overlap_a(void *arg)
{
    (void)arg;
    if (overlap.guarded) overlap.a_lock_rc = surelock_rlock_lock(overlap.guard);
    unsafe_visit(overlap_callback, NULL);
    if (overlap.guarded) overlap.a_unlock_rc = surelock_rlock_unlock(overlap.guard);
}

static void overlap_b(void *arg)
{
    (void)arg;
    overlap.b_saw_a_inside = flag_wait(&overlap.a_inside, 1, WAIT_LIMIT_MS);
    if (!overlap.guarded) {
        unsafe_increment(); /* a is inside: this entry overlaps */
        overlap.violations_seen_by_b = unsafe_violations();
        flag_raise(&overlap.b_done);
        return;
    }
    overlap.b_trylock_rc = surelock_rlock_trylock(overlap.guard);
    overlap.b_timedlock_rc = surelock_rlock_timedlock(overlap.guard, 20 * MS);
    overlap.violations_seen_by_b = unsafe_violations();
    flag_raise(&overlap.b_done);
    overlap.b_lock_rc = surelock_rlock_lock(overlap.guard); /* waits for a to leave */
    unsafe_increment();
    overlap.b_unlock_rc = surelock_rlock_unlock(overlap.guard);
}

static void run_overlap(bool guarded)
{
    memset(&overlap, 0, sizeof overlap);
    overlap.guarded = guarded;
    overlap.guard = global_lock(UNSAFE_LIB_SONAME);
    flag_init(&overlap.a_inside);
    flag_init(&overlap.b_done);
    unsafe_reset();
    helper_start(&overlap.b, overlap_b, NULL);
    helper_start(&overlap.a, overlap_a, NULL);
    JOIN(&overlap.a);
    JOIN(&overlap.b);
    flag_destroy(&overlap.a_inside);
    flag_destroy(&overlap.b_done);
    assert_true(overlap.b_saw_a_inside);
    assert_true(overlap.a_saw_b_done);
    assert_int_equal(unsafe_count(), 2); /* a's visit, b's increment: one after the other */
}

static void unsafe_library_detector_reports_two_threads_inside_without_a_guard(void **state)
{
    (void)state;
    run_overlap(false);
    assert_int_equal(overlap.violations_seen_by_b, 1);
    assert_int_equal(unsafe_violations(), 1);
}

static void guard_keeps_a_second_thread_out_while_the_first_is_inside_a_callback(void **state)
{
    (void)state;
    run_overlap(true);
    EXPECT_RC(overlap.a_lock_rc, 0);
    EXPECT_RC(overlap.a_unlock_rc, 0);
    EXPECT_RC(overlap.b_trylock_rc, EBUSY);
    EXPECT_RC(overlap.b_timedlock_rc, ETIMEDOUT);
    EXPECT_RC(overlap.b_lock_rc, 0);
    EXPECT_RC(overlap.b_unlock_rc, 0);
    assert_int_equal(overlap.violations_seen_by_b, 0);
    assert_int_equal(unsafe_violations(), 0);
}

/* ================================================================================================ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(version_is_1_1_0),
        TEST(errmsg_is_empty_in_a_fresh_thread_and_belongs_to_its_thread),
        TEST(errmsg_is_unchanged_by_successful_calls),
        TEST(null_handles_and_out_pointers_are_einval),
        TEST(empty_global_name_is_einval),
        TEST(global_name_of_256_bytes_is_einval_and_255_bytes_is_accepted),
        TEST(global_names_may_hold_any_bytes_but_nul),
        TEST(many_global_names_sharing_a_long_prefix_are_all_distinct_locks),
        TEST(same_global_name_gives_the_same_lock_from_any_thread),
        TEST(different_global_names_are_independent_locks),
        TEST(global_locks_are_never_freed),
        TEST(new_lock_is_unheld_and_can_be_freed),
        TEST(depth_tracks_reentry_by_every_acquire_form),
        TEST(depth_is_zero_for_a_thread_that_does_not_hold_the_lock),
        TEST(trylock_is_ebusy_while_another_thread_holds_the_lock),
        TEST(free_is_ebusy_while_the_caller_holds_the_lock),
        TEST(free_is_ebusy_while_another_thread_holds_the_lock),
        TEST(timedlock_zero_is_etimedout_while_another_thread_holds_the_lock),
        TEST(timedlock_waits_at_least_its_timeout_on_the_monotonic_clock),
        TEST(waiting_acquires_get_the_lock_when_the_holder_releases),
        TEST(unlock_by_a_thread_that_does_not_hold_the_lock_is_eperm),
        TEST(owner_thread_exit_is_reported_to_next_locker),
        TEST(new_thread_does_not_inherit_the_hold_of_a_dead_owner),
        TEST(owner_death_is_reported_by_trylock_and_timedlock_too),
        TEST(owner_thread_exit_is_reported_to_a_waiter_already_blocked),
        TEST(an_rlock_its_group_lets_go_after_its_own_unlock_is_free_for_every_thread),
        TEST(owner_death_releases_every_lock_the_thread_held),
        TEST(four_threads_reentering_keep_a_plain_counter_exact),
        TEST(four_threads_mixing_every_acquire_form_keep_a_plain_counter_exact),
        TEST(lock_can_be_freed_as_soon_as_its_last_unlock_returns),
        TEST(guarded_unsafe_library_sees_no_concurrent_entry_and_an_exact_count),
        TEST(unsafe_library_detector_reports_two_threads_inside_without_a_guard),
        TEST(guard_keeps_a_second_thread_out_while_the_first_is_inside_a_callback),
    };
    return cmocka_run_group_tests_name("rlock", tests, watchdog_start, watchdog_stop);
}
