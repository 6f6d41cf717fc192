/*
 * test_interleave_ipc.c — every ordering of the ipc open protocol's steps, up to a preemption
 * bound (issue 9's method; the explorer: src/sys/testing.h; the protocol: the top of
 * src/ipc_open.cc). Part of test_interleave (group "ipc").
 *
 * Each scenario thread stands for a process: it opens the lock file itself, so it has its own
 * open file descriptions, and flock and OFD locks conflict between threads exactly as between
 * processes. In the internal test build each system call of the open path is a step (the
 * SURELOCK_FS hooks of src/sys/interleave.h): file creation and publication, the flock, the
 * OFD probes and marker, the header's reads and writes, the robust mutex's initialisation and
 * the check of its lock word. An exclusive flock found busy blocks the thread in the explorer
 * until a file lock is released. A mortal thread may also die at any of its steps: its
 * descriptors and mappings are released (and with them its file locks), as the kernel does for
 * a killed process, and it goes no further.
 *
 * The promises checked in every schedule:
 *  - every opener that did not die opens (0): none takes a half-written header for corrupt;
 *  - exactly one initialisation serves all: each opener's view of the header right after its
 *    open (lock id, boot id, ready state) is the file's at the end, so nobody initialised or
 *    reset the file after another had it open, and nobody took a half-written header for
 *    valid;
 *  - every opener then takes the lock and releases it, one holder at a time (a step inside),
 *    none waiting forever (the explorer fails a schedule where every live thread is blocked);
 *  - at the end the file opens again, unheld.
 * Handles stay open until check(): a reset is only right when no other handle is open, and
 * with every handle kept open there is exactly one moment that can be so. Apart from those
 * scenarios: a file emptied while open elsewhere is refused, never initialised again; and the
 * file-lock model itself is tested (a dying holder releases its flock; a flock nobody releases
 * is reported).
 *
 * Bodies never call CMocka (they run on scenario threads): they record what they saw, and a
 * broken promise ends the exploration with surelock_testing_violation.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/interleave.h"

/* The header's layout (surelock.h documents it). */
#define OFF_INIT_STATE 12
#define OFF_BOOT_ID 40
#define OFF_LOCK_ID 88
#define OFF_LOCK_WORD 192 /* the robust mutex's lock word (glibc: its first int) */
#define VIEW_SIZE (OFF_LOCK_ID + 16)
#define HEADER_SIZE 4096
#define STATE_READY 0x52454459u

#define OPENERS SURELOCK_INTERLEAVE_MAX_THREADS
#define NOT_RUN (-1) /* an opener's open result before it returns: stays so if it died */

/* Boot ids as openers in different mount namespaces read them. */
#define BOOT_OLD "00000000-0000-4000-8000-00000000aaaa"
#define BOOT_A "00000000-0000-4000-8000-00000000000a"
#define BOOT_B "00000000-0000-4000-8000-00000000000b"

static char dir[] = "/tmp/surelock-interleave-ipc-XXXXXX";
static char path[PATH_MAX];

static struct {
    int openers;
    const char *boot[OPENERS]; /* the boot id each opener reads (NULL: this boot's) */
    bool mortal[OPENERS];      /* may die at any step of its open */
    surelock_ipc *h[OPENERS];
    int rc[OPENERS];
    char msg[OPENERS][256];
    unsigned char view[OPENERS][VIEW_SIZE]; /* the header as the opener saw it after open */
    int lock_rc[OPENERS];
    volatile int released[OPENERS]; /* someone unlocked: an opener that found it busy retries */
    volatile int in_cs;
} o;

static surelock_ipc_options options(void)
{
    surelock_ipc_options opt;
    surelock_ipc_options_init(&opt);
    opt.payload_size = 1; /* the payload's address locates the mapped header */
    return opt;
}

static const unsigned char *header_of(surelock_ipc *h)
{
    return (const unsigned char *)surelock_ipc_payload(h, NULL) - HEADER_SIZE;
}

static void take_and_release(int i)
{
    for (;;) {
        o.released[i] = 0;
        int rc = surelock_ipc_trylock(o.h[i]);
        if (rc == 0) break;
        if (rc != EBUSY) {
            o.lock_rc[i] = rc;
            return;
        }
        surelock_testing_await(&o.released[i]);
    }
    if (++o.in_cs != 1) surelock_testing_violation("two holders of the ipc lock at once");
    SURELOCK_TESTING_STEP(&o.in_cs);
    if (o.in_cs != 1) surelock_testing_violation("two holders of the ipc lock at once");
    o.in_cs--;
    o.lock_rc[i] = surelock_ipc_unlock(o.h[i]);
    for (int j = 0; j < o.openers; j++) o.released[j] = 1;
}

static void opener(int i)
{
    surelock_testing_ipc_boot_id = o.boot[i];
    surelock_ipc_options opt = options();
    if (o.mortal[i]) surelock_testing_mortal(1);
    int rc = surelock_ipc_open(path, &opt, &o.h[i]);
    surelock_testing_mortal(0);
    o.rc[i] = rc;
    if (rc != 0) {
        snprintf(o.msg[i], sizeof o.msg[i], "%s", surelock_errmsg());
        return;
    }
    memcpy(o.view[i], header_of(o.h[i]), VIEW_SIZE);
    take_and_release(i);
}

static void opener1(void *ctx)
{
    (void)ctx;
    opener(0);
}
static void opener2(void *ctx)
{
    (void)ctx;
    opener(1);
}
static void opener3(void *ctx)
{
    (void)ctx;
    opener(2);
}

/* ---- setups: the state of the path before the openers come -------------------------------- */

static void reset(int openers)
{
    memset(&o, 0, sizeof o);
    o.openers = openers;
    for (int i = 0; i < OPENERS; i++) o.rc[i] = NOT_RUN;
    if (path[0] == '\0') {
        if (mkdtemp(dir) == NULL) abort();
        snprintf(path, sizeof path, "%s/lock", dir);
    }
    unlink(path);
}

/* A complete file made by this process with `boot` as the boot id it read (NULL: this boot). */
static void make_file(const char *boot)
{
    surelock_testing_ipc_boot_id = boot;
    surelock_ipc_options opt = options();
    surelock_ipc *h;
    if (surelock_ipc_open(path, &opt, &h) != 0 || surelock_ipc_close(h) != 0) {
        fprintf(stderr, "cannot make %s: %s\n", path, surelock_errmsg());
        abort();
    }
    surelock_testing_ipc_boot_id = NULL;
}

static void fresh_path(void *ctx)
{
    reset(ctx ? *(int *)ctx : 2);
}

static void empty_placeholder(void *ctx)
{
    fresh_path(ctx);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    close(fd);
}

static void file_of_this_boot(void *ctx)
{
    fresh_path(ctx);
    make_file(NULL);
}

/* A file from an earlier boot, opened by two openers whose boot ids differ (mount namespaces
 * with other views of /proc): whoever opens it first, alone, resets it; the other finds it
 * open elsewhere and must use it as it is. Its lock word names the thread that held it before
 * the reboot, a TID that now belongs to init: only the reset may clear it. */
static void file_of_an_earlier_boot(void *ctx)
{
    fresh_path(ctx);
    make_file(BOOT_OLD);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int tid_of_init = 1;
    if (fd < 0 || pwrite(fd, &tid_of_init, sizeof tid_of_init, OFF_LOCK_WORD) != sizeof tid_of_init)
        abort();
    close(fd);
    o.boot[0] = BOOT_A;
    o.boot[1] = BOOT_B;
}

/* The same openers, the first of them mortal. */
static void fresh_path_first_mortal(void *ctx)
{
    fresh_path(ctx);
    o.mortal[0] = true;
}

static void empty_placeholder_first_mortal(void *ctx)
{
    empty_placeholder(ctx);
    o.mortal[0] = true;
}

/* A file from an earlier boot, openers of this boot, the first mortal: if it dies half-way
 * through the reset, the other must still see a file to reset. */
static void earlier_boot_first_mortal(void *ctx)
{
    file_of_an_earlier_boot(ctx);
    o.boot[0] = o.boot[1] = NULL;
    o.mortal[0] = true;
}

/* ---- the check after each schedule (threads joined; nothing scheduled any more) ------------ */

static char wrong[512];
#define WRONG(...) (snprintf(wrong, sizeof wrong, __VA_ARGS__), wrong)

static const char *view_mismatch(int i, const unsigned char *now)
{
    const unsigned char *v = o.view[i];
    unsigned state;
    memcpy(&state, v + OFF_INIT_STATE, sizeof state);
    if (state != STATE_READY)
        return WRONG("T%d's open returned with the header not ready (state 0x%x)", i + 1, state);
    if (memcmp(v + OFF_LOCK_ID, now + OFF_LOCK_ID, 16) != 0)
        return WRONG("the lock id T%d saw after its open is not the file's at the end: the file "
                     "was initialised again while T%d had it open",
                     i + 1, i + 1);
    if (memcmp(v + OFF_BOOT_ID, now + OFF_BOOT_ID, 36) != 0)
        return WRONG("the boot id T%d saw after its open (%.36s) is not the file's at the end "
                     "(%.36s): the file was reset while T%d had it open",
                     i + 1, (const char *)v + OFF_BOOT_ID, (const char *)now + OFF_BOOT_ID, i + 1);
    return NULL;
}

static const char *check_openers(void)
{
    unsigned char now[VIEW_SIZE];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || pread(fd, now, sizeof now, 0) != (ssize_t)sizeof now) {
        if (fd >= 0) close(fd);
        return WRONG("no complete lock file at the end: %s", strerror(errno));
    }
    close(fd);
    for (int i = 0; i < o.openers; i++) {
        if (o.rc[i] == NOT_RUN) {
            if (!o.mortal[i]) return WRONG("T%d's open never returned", i + 1);
            continue; /* it died */
        }
        if (o.rc[i] != 0) return WRONG("T%d's open returned %d: %s", i + 1, o.rc[i], o.msg[i]);
        const char *bad = view_mismatch(i, now);
        if (bad != NULL) return bad;
        if (o.lock_rc[i] != 0)
            return WRONG("T%d: lock or unlock returned %d", i + 1, o.lock_rc[i]);
    }
    return NULL;
}

static const char *ipc_check(void *ctx)
{
    (void)ctx;
    const char *bad = check_openers();
    for (int i = 0; i < o.openers; i++)
        if (o.h[i] != NULL && surelock_ipc_close(o.h[i]) != 0 && bad == NULL)
            bad = WRONG("T%d's handle does not close: %s", i + 1, surelock_errmsg());
    if (bad != NULL) return bad;
    surelock_ipc_options opt = options();
    surelock_ipc *h;
    if (surelock_ipc_open(path, &opt, &h) != 0)
        return WRONG("the file does not open at the end: %s", surelock_errmsg());
    int rc = surelock_ipc_trylock(h);
    if (rc == 0) surelock_ipc_unlock(h);
    surelock_ipc_close(h);
    return rc == 0 ? NULL : WRONG("the lock is not free at the end: trylock returned %d", rc);
}

/* ---- scenarios ----------------------------------------------------------------------------- */

static int two = 2, three = 3;

static surelock_testing_scenario scenario(const char *name, int *openers, void (*setup)(void *))
{
    surelock_testing_scenario s =
        SCENARIO(name, *openers, setup, ipc_check, opener1, opener2, opener3);
    s.ctx = openers;
    return s;
}

static void two_openers_of_a_fresh_path_share_one_initialisation(void **state)
{
    (void)state;
    surelock_testing_scenario s = scenario("ipc: two openers, fresh path", &two, fresh_path);
    expect_clean(&s, 100);
}

static void three_openers_of_a_fresh_path_share_one_initialisation(void **state)
{
    (void)state;
    surelock_testing_scenario s = scenario("ipc: three openers, fresh path", &three, fresh_path);
    s.preemption_bound = 1; /* three threads: each preemption multiplies the schedules ~20x */
    expect_clean(&s, 100);
}

static void openers_of_an_empty_placeholder_initialise_it_once_under_the_flock(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        scenario("ipc: two openers, empty placeholder", &two, empty_placeholder);
    expect_clean(&s, 100);
}

static void three_openers_of_an_initialised_file_use_it_as_it_is(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        scenario("ipc: three openers, initialised file", &three, file_of_this_boot);
    s.preemption_bound = 2;
    expect_clean(&s, 100);
}

static void a_file_of_an_earlier_boot_is_reset_once_and_never_while_open_elsewhere(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        scenario("ipc: two boot ids, file of an earlier boot", &two, file_of_an_earlier_boot);
    expect_clean(&s, 100);
}

static void an_opener_dying_at_any_step_of_creating_strands_nobody(void **state)
{
    (void)state;
    surelock_testing_scenario s =
        scenario("ipc: fresh path, first opener mortal", &two, fresh_path_first_mortal);
    s.preemption_bound = 2; /* a death is a preemption too */
    expect_clean(&s, 100);
}

static void an_opener_dying_half_way_through_initialising_a_placeholder_strands_nobody(
    void **state)
{
    (void)state;
    surelock_testing_scenario s = scenario("ipc: empty placeholder, first opener mortal", &two,
                                           empty_placeholder_first_mortal);
    expect_clean(&s, 100);
}

static void an_opener_dying_half_way_through_a_reset_strands_nobody(void **state)
{
    (void)state;
    surelock_testing_scenario s = scenario("ipc: earlier boot, first opener mortal", &two,
                                           earlier_boot_first_mortal);
    expect_clean(&s, 100);
}

/* A file emptied while a handle has it open (by a program that is not surelock) must never be
 * initialised again under that handle: the next opener refuses it, untouched. */
static volatile int opened, emptied;

static void opens_and_keeps_it(void *ctx)
{
    (void)ctx;
    surelock_ipc_options opt = options();
    o.rc[0] = surelock_ipc_open(path, &opt, &o.h[0]);
    opened = 1;
}

static void empties_it_then_opens(void *ctx)
{
    (void)ctx;
    surelock_testing_await(&opened);
    if (truncate(path, 0) != 0) surelock_testing_violation("truncate: %s", strerror(errno));
    emptied = 1;
    surelock_ipc_options opt = options();
    o.rc[1] = surelock_ipc_open(path, &opt, &o.h[1]);
    snprintf(o.msg[1], sizeof o.msg[1], "%s", surelock_errmsg());
}

static void emptied_file(void *ctx)
{
    file_of_this_boot(ctx);
    opened = emptied = 0;
}

static const char *emptied_check(void *ctx)
{
    (void)ctx;
    struct stat st;
    const char *bad = NULL;
    if (o.rc[0] != 0) bad = WRONG("T1's open returned %d", o.rc[0]);
    else if (o.rc[1] != EPROTO || strstr(o.msg[1], "another handle") == NULL)
        bad = WRONG("the opener of a file emptied in use got %d (%s), not EPROTO", o.rc[1],
                    o.msg[1]);
    else if (stat(path, &st) != 0 || st.st_size != 0)
        bad = WRONG("the file emptied in use was written (%lld bytes)", (long long)st.st_size);
    for (int i = 0; i < 2; i++)
        if (o.h[i] != NULL) surelock_ipc_close(o.h[i]);
    return bad;
}

static void a_file_emptied_while_open_elsewhere_is_refused_never_initialised(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("ipc: file emptied while open", 2, emptied_file,
                                           emptied_check, opens_and_keeps_it,
                                           empties_it_then_opens);
    s.ctx = &two;
    expect_clean(&s, 50);
}

/* ---- the explorer's model of file locks and deaths, on its own --------------------------- */

static volatile int locked;
static int holder_finished, waiter_got, deaths;

static void flock_setup(void *ctx)
{
    fresh_path(ctx);
    make_file(NULL);
    locked = holder_finished = waiter_got = 0;
}

/* Takes the flock through its own descriptor, as an opener does, and gives it back. */
static void flock_holder(void *ctx)
{
    (void)ctx;
    surelock_testing_mortal(1);
    int fd = SURELOCK_FD_OPEN(open(path, O_RDWR | O_CLOEXEC));
    if (fd < 0 || SURELOCK_FLOCK(fd, LOCK_EX | LOCK_NB) != 0)
        surelock_testing_violation("the first flock failed: %s", strerror(errno));
    locked = 1;
    SURELOCK_TESTING_STEP(&locked);
    SURELOCK_FLOCK(fd, LOCK_UN);
    SURELOCK_CLOSE(fd);
    surelock_testing_mortal(0);
    holder_finished = 1;
}

static void flock_waiter(void *ctx)
{
    (void)ctx;
    int fd = SURELOCK_FD_OPEN(open(path, O_RDWR | O_CLOEXEC));
    if (fd >= 0 && SURELOCK_FLOCK(fd, LOCK_EX | LOCK_NB) == 0) waiter_got = 1;
    SURELOCK_CLOSE(fd);
}

static const char *flock_check(void *ctx)
{
    (void)ctx;
    if (!waiter_got) return WRONG("the second flock was never granted");
    deaths += locked && !holder_finished; /* died holding it */
    return NULL;
}

static void a_flock_holder_that_dies_releases_it_to_the_waiter(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("explorer: flock holder dies", 2, flock_setup,
                                           flock_check, flock_holder, flock_waiter);
    s.ctx = &two;
    deaths = 0;
    expect_clean(&s, 10);
    if (deaths == 0) fail_msg("no schedule let the flock holder die holding it");
}

static void never_unlocks(void *ctx)
{
    (void)ctx;
    int fd = SURELOCK_FD_OPEN(open(path, O_RDWR | O_CLOEXEC));
    SURELOCK_FLOCK(fd, LOCK_EX | LOCK_NB);
    locked = 1; /* and leaves fd open: a live process that keeps the flock */
}

static void the_explorer_reports_openers_that_all_wait_for_file_locks(void **state)
{
    (void)state;
    surelock_testing_scenario s = SCENARIO("explorer: flock never released", 2, flock_setup,
                                           NULL, never_unlocks, flock_waiter);
    s.ctx = &two;
    expect_violation(&s, "waits for the file lock");
}

static int remove_dir(void **state)
{
    (void)state;
    if (path[0] != '\0') {
        unlink(path);
        rmdir(dir);
    }
    return watchdog_stop(state);
}

int run_interleave_ipc_group(void)
{
    const struct CMUnitTest tests[] = {
        TEST(two_openers_of_a_fresh_path_share_one_initialisation),
        TEST(three_openers_of_a_fresh_path_share_one_initialisation),
        TEST(openers_of_an_empty_placeholder_initialise_it_once_under_the_flock),
        TEST(three_openers_of_an_initialised_file_use_it_as_it_is),
        TEST(a_file_of_an_earlier_boot_is_reset_once_and_never_while_open_elsewhere),
        TEST(an_opener_dying_at_any_step_of_creating_strands_nobody),
        TEST(an_opener_dying_half_way_through_initialising_a_placeholder_strands_nobody),
        TEST(an_opener_dying_half_way_through_a_reset_strands_nobody),
        TEST(a_file_emptied_while_open_elsewhere_is_refused_never_initialised),
        TEST(a_flock_holder_that_dies_releases_it_to_the_waiter),
        TEST(the_explorer_reports_openers_that_all_wait_for_file_locks),
    };
    return cmocka_run_group_tests_name("interleave_ipc", tests, watchdog_start, remove_dir);
}
