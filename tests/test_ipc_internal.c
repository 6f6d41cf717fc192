/*
 * test_ipc_internal.c — the robust cross-process mutex's paths that the public API cannot
 * reach on demand: a creator that dies (or stalls) half-way through writing a lock file's
 * header, and allocation failure. Links the internal static build (SURELOCK_TESTING), whose
 * hooks are declared in src/sys/testing.h:
 *  - surelock_testing_ipc_init_hook is called by the initialiser after the magic and version
 *    are written and before the header is marked ready; a child process sets it to SIGKILL
 *    itself there (a creator dying mid-initialisation) or to stop there until killed;
 *  - surelock_testing_fail_allocation_after(n) makes the library's n+1-th allocation fail.
 *
 * Same rules and fixtures as every ipc test (support/ipc_file.h, support/ipc_holder.h); its
 * children die of SIGALRM after 60 s (CHILD_ALARM_S, set in tests/meson.build).
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sys/testing.h"
#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

/* How long an opener must stay blocked behind a creator stalled mid-initialisation before
 * the test believes it waits for it (a slow machine can only make the test pass wrongly,
 * never fail wrongly). */
#define STILL_BLOCKED_MS 300

/* ---- the creators that never finish --------------------------------------------------------- */

/* The hook of a creator that dies mid-initialisation. */
static void die_mid_initialisation(void)
{
    raise(SIGKILL);
}

/* The hook of a creator that stops mid-initialisation (until the test kills it), after
 * telling the test it got there. */
static int stalled_fd = -1;
static void stall_mid_initialisation(void)
{
    send_byte(stalled_fd);
    for (;;) pause();
}

static struct creator {
    const char *path;
    size_t payload_size;
    bool stall;   /* stall instead of dying */
    int stalled_w; /* where a stalling creator reports */
} creator;

/* Opens the lock with the hook set: it must never return. */
static int creator_main(void *p)
{
    struct creator *c = p;
    stalled_fd = c->stalled_w;
    surelock_testing_ipc_init_hook = c->stall ? stall_mid_initialisation : die_mid_initialisation;
    surelock_ipc_options o = options(0, 0600, c->payload_size);
    surelock_ipc *m = NULL;
    int rc = surelock_ipc_open(c->path, &o, &m);
    fprintf(stderr, "child %d: surelock_ipc_open returned %s without reaching the init hook\n",
            (int)getpid(), errname(rc));
    return 1;
}

/* An ordinary opener in another process: announces it is about to open, then opens, locks
 * and checks it got a complete, free lock with the payload it asked for. */
static struct opener {
    const char *path;
    size_t payload_size;
    int opening_w;
} opener;

static int opener_main(void *p)
{
    struct opener *a = p;
    CHILD_CHECK(send_byte(a->opening_w));
    surelock_ipc_options o = options(0, 0600, a->payload_size);
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, &o, &m), 0);
    size_t size = 0;
    void *payload = surelock_ipc_payload(m, &size);
    CHILD_CHECK(size == a->payload_size);
    CHILD_CHECK((payload != NULL) == (a->payload_size != 0));
    CHILD_EXPECT_RC(surelock_ipc_lock(m), 0);
    CHILD_CHECK(surelock_ipc_needs_recovery(m) == 0);
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

/* Opens path in this process and checks it is a complete, working lock. */
static void expect_usable(const char *path, size_t payload_size)
{
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, payload_size);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), 0);
    bytes b = slurp(path);
    assert_memory_equal(b.data, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    assert_int_equal(get64(&b, OFF_PAYLOAD_SIZE), payload_size);
    free(b.data);
    EXPECT_RC(surelock_ipc_lock(m), 0); /* free, and not "owner died": nobody ever held it */
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void ipc_hooks_off(void);

/* ---- fixtures: support/ipc_file.h's, and every hook of sys/testing.h off after each test -- */

static int test_teardown(void **state)
{
    surelock_testing_fail_allocation_after(-1);
    ipc_hooks_off();
    return ipc_test_teardown(state);
}

#undef TEST
#define TEST(f) {#f, f, ipc_test_setup, test_teardown, (void *)#f}

/* ---- a creator killed mid-initialisation ---------------------------------------------------- */

static void creator_killed_mid_initialisation_of_a_placeholder_leaves_it_to_be_redone(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path, 0600);
    creator = (struct creator){path, 100, false, -1};
    EXPECT_CHILD_KILLED(spawn(creator_main, &creator));

    /* It really died half-way: the magic is there, the header is not marked ready. */
    bytes b = slurp(path);
    assert_true(b.len >= HEADER_SIZE);
    assert_memory_equal(b.data, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_FORMAT_VERSION), 1);
    assert_int_not_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    free(b.data);

    /* The next opener redoes it, with its own options, and the lock works. */
    expect_usable(path, 0);
    opener = (struct opener){path, 0, -1};
    int opening[2];
    make_pipe(opening);
    opener.opening_w = opening[1];
    EXPECT_CHILD_OK(spawn(opener_main, &opener));
    close(opening[0]);
    close(opening[1]);

    /* Again, redone with a payload this time. */
    const char *other = P("other");
    touch(other, 0600);
    creator = (struct creator){other, 0, false, -1};
    EXPECT_CHILD_KILLED(spawn(creator_main, &creator));
    surelock_ipc_options o = options(0, 0600, 64);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(other, &o, &m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    expect_usable(other, 64);
}

static void creator_killed_mid_creation_of_a_missing_path_leaves_nothing_at_the_path(void **state)
{
    (void)state;
    const char *path = P("lock");
    creator = (struct creator){path, 64, false, -1};
    EXPECT_CHILD_KILLED(spawn(creator_main, &creator));

    struct stat st;
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(entries_in_test_dir(), 0); /* no half-made file under any name */
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, 0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), ENOENT);
    assert_ptr_equal(m, SENTINEL);

    o = options(0, 0600, 64);
    EXPECT_RC(surelock_ipc_open(path, &o, &m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    expect_usable(path, 64);
    assert_int_equal(entries_in_test_dir(), 1);
}

/* ---- a creator stalled mid-initialisation ----------------------------------------------------- */

static void opener_waits_for_a_creator_stalled_mid_initialisation_and_gets_a_whole_file(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path, 0600);
    int stalled[2], opening[2];
    make_pipe(stalled);
    make_pipe(opening);
    creator = (struct creator){path, 32, true, stalled[1]};
    pid_t stuck = spawn(creator_main, &creator);
    if (!recv_byte(stalled[0], WAIT_LIMIT_MS)) {
        EXPECT_CHILD_KILLED(stuck);
        fail_msg("the creator never reached the init hook");
    }

    opener = (struct opener){path, 32, opening[1]};
    pid_t waiter = spawn(opener_main, &opener);
    if (!recv_byte(opening[0], WAIT_LIMIT_MS)) fail_msg("the opener did not start");
    sleep_ms(STILL_BLOCKED_MS);
    int status;
    pid_t r = waitpid(waiter, &status, WNOHANG);
    if (r == waiter)
        fail_msg("an opener finished (wait status 0x%x) while the creator of the file was "
                 "stalled half-way through its header",
                 status);

    kill(stuck, SIGKILL);
    EXPECT_CHILD_KILLED(stuck);
    EXPECT_CHILD_OK(waiter); /* it redid the unfinished header and used the lock */
    expect_usable(path, 32);
    close(stalled[0]);
    close(stalled[1]);
    close(opening[0]);
    close(opening[1]);
}

static void creator_stalled_mid_creation_of_a_missing_path_blocks_no_other_creator(void **state)
{
    (void)state;
    const char *path = P("lock");
    int stalled[2], opening[2];
    make_pipe(stalled);
    make_pipe(opening);
    creator = (struct creator){path, 0, true, stalled[1]};
    pid_t stuck = spawn(creator_main, &creator);
    if (!recv_byte(stalled[0], WAIT_LIMIT_MS)) {
        EXPECT_CHILD_KILLED(stuck);
        fail_msg("the creator never reached the init hook");
    }
    struct stat st;
    assert_int_equal(lstat(path, &st), -1); /* nothing visible while it is half made */

    opener = (struct opener){path, 0, opening[1]};
    EXPECT_CHILD_OK(spawn(opener_main, &opener)); /* creates its own, without waiting */
    expect_usable(path, 0);

    kill(stuck, SIGKILL);
    EXPECT_CHILD_KILLED(stuck);
    expect_usable(path, 0);
    assert_int_equal(entries_in_test_dir(), 1);
    close(stalled[0]);
    close(stalled[1]);
    close(opening[0]);
    close(opening[1]);
}

/* ---- allocation failure ------------------------------------------------------------------------ */

static void out_of_memory_in_open_is_enomem_and_touches_nothing(void **state)
{
    (void)state;
    const char *missing = P("missing");
    const char *placeholder = P("placeholder");
    touch(placeholder, 0600);
    surelock_ipc *m = SENTINEL;

    surelock_testing_fail_allocation_after(0);
    EXPECT_RC(surelock_ipc_open(missing, NULL, &m), ENOMEM);
    EXPECT_ERRMSG("memory");
    assert_ptr_equal(m, SENTINEL);
    struct stat st;
    assert_int_equal(lstat(missing, &st), -1); /* not created */

    surelock_testing_fail_allocation_after(0);
    EXPECT_RC(surelock_ipc_open(placeholder, NULL, &m), ENOMEM);
    assert_ptr_equal(m, SENTINEL);
    assert_int_equal(lstat(placeholder, &st), 0);
    assert_int_equal(st.st_size, 0); /* not initialised */
    assert_int_equal(entries_in_test_dir(), 1);

    /* Only that one allocation failed: the next open works. */
    EXPECT_RC(surelock_ipc_open(missing, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    expect_usable(missing, 0);
    expect_usable(placeholder, 0);
}

/* The first surelock call of a thread allocates its per-thread record. */
static struct record_failure {
    surelock_ipc *m;
    int form;
    int rc;
    char errmsg[256];
    int unlock_rc;
} record_failure;

static void record_failure_body(void *arg)
{
    (void)arg;
    surelock_testing_fail_allocation_after(0);
    surelock_ipc *m = record_failure.m;
    switch (record_failure.form) {
    case 0: record_failure.rc = surelock_ipc_lock(m); break;
    case 1: record_failure.rc = surelock_ipc_trylock(m); break;
    case 2: record_failure.rc = surelock_ipc_timedlock(m, 0); break;
    default: record_failure.rc = surelock_ipc_timedlock(m, 1000 * MS); break;
    }
    snprintf(record_failure.errmsg, sizeof record_failure.errmsg, "%s", surelock_errmsg());
    surelock_testing_fail_allocation_after(-1);
    record_failure.unlock_rc = surelock_ipc_unlock(m);
}

static void out_of_memory_for_a_new_threads_record_is_enomem_and_holds_nothing(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    static helper t;
    for (int form = 0; form < 4; form++) {
        record_failure = (struct record_failure){.m = m, .form = form, .rc = -1};
        RUN_IN_NEW_THREAD(&t, record_failure_body, NULL);
        if (record_failure.rc != ENOMEM)
            fail_msg("acquire form %d in a new thread with no memory returned %s; errmsg \"%s\"",
                     form, errname(record_failure.rc), record_failure.errmsg);
        if (strcasestr(record_failure.errmsg, "memory") == NULL)
            fail_msg("errmsg \"%s\" does not mention memory", record_failure.errmsg);
        EXPECT_RC(record_failure.unlock_rc, EPERM); /* it holds nothing */
        EXPECT_RC(surelock_ipc_trylock(m), 0);    /* and the lock is free */
        EXPECT_RC(surelock_ipc_unlock(m), 0);
    }
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* ---- faults of the system underneath (issue 9) ------------------------------------------------ */

/* Restores every ipc hook of sys/testing.h (the teardown too). */
static void ipc_hooks_off(void)
{
    surelock_testing_ipc_boot_id_errno = 0;
    surelock_testing_ipc_boot_id = NULL;
    surelock_testing_ipc_proc_errno = 0;
    surelock_testing_ipc_fs_magic = 0;
    surelock_testing_ipc_header_read_hook = NULL;
    surelock_testing_ipc_acquired_hook = NULL;
    surelock_testing_ipc_init_hook = NULL;
}

/* Issue 9, item 1: a boot id that cannot be read (no memory, no descriptor left, /proc
 * unreadable) was taken for "another boot" and the mutex reset under its holder. It is an
 * error now, and nothing is created or changed. */
static void an_unreadable_boot_id_is_an_error_never_a_reset(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp;
    HOLDER_START(&hp, path, 0, 0);
    snapshot before = take_snapshot(path);
    const int errors[] = {ENOMEM, EMFILE, EACCES, ENOENT};
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++) {
        surelock_testing_ipc_boot_id_errno = errors[i];
        surelock_ipc *m = SENTINEL;
        EXPECT_RC(surelock_ipc_open(path, NULL, &m), errors[i]);
        EXPECT_ERRMSG("boot_id");
        assert_ptr_equal(m, SENTINEL);
        EXPECT_RC(surelock_ipc_open(P("new"), NULL, &m), errors[i]);
        assert_int_equal(entries_in_test_dir(), 1); /* nothing created */
    }
    ipc_hooks_off();
    EXPECT_UNCHANGED(path, &before);
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY); /* still one holder */
    HOLDER_RELEASE(&hp);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* The other direction of item 1: this process reads another boot id than the file's (its
 * mount namespace shows another /proc) while another process holds the lock. */
static void an_opener_with_another_boot_id_uses_a_file_open_elsewhere_as_it_is(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp;
    HOLDER_START(&hp, path, 0, 0);
    surelock_testing_ipc_boot_id = "11111111-2222-4333-8444-555555555555";
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    HOLDER_RELEASE(&hp);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    /* Open nowhere: reset, and stamped with the boot id this process reads. */
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    bytes b = slurp(path);
    assert_memory_equal(b.data + OFF_BOOT_ID, surelock_testing_ipc_boot_id, 36);
    free(b.data);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* Issue 9, item 2: the holder the opener read under its flock releases, exits and is reaped
 * before the opener looks at it: a healthy file, not "a holder that does not exist". */
static holder_proc *vanishing_holder;
static void holder_vanishes(void)
{
    surelock_testing_ipc_header_read_hook = NULL;
    HOLDER_RELEASE(vanishing_holder);
}

static void a_holder_that_releases_and_is_reaped_during_open_is_no_corruption(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp;
    HOLDER_START(&hp, path, 0, 0);
    vanishing_holder = &hp;
    surelock_testing_ipc_header_read_hook = holder_vanishes;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* Issue 9, item 11, where /proc/TID/maps cannot be read (another user's process, hidepid):
 * the header's holder record is the evidence; a lock word it never confirms within the
 * check's bound is a clear ETIMEDOUT naming the cause, never a default. */
static void with_proc_maps_unreadable_the_holder_record_decides_within_a_bound(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp;
    HOLDER_START(&hp, path, 0, 0);
    surelock_testing_ipc_proc_errno = EACCES;
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0); /* recorded: a holder */
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    HOLDER_RELEASE(&hp);
    EXPECT_RC(surelock_ipc_close(m), 0);

    pid_t sleeper = spawn(sleeper_main, NULL);
    poke32(path, OFF_MUTEX, (uint32_t)sleeper);
    poke32(path, OFF_HOLDER_TID, 0);
    snapshot before = take_snapshot(path);
    uint64_t t0 = now_ns();
    m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), ETIMEDOUT);
    uint64_t took = now_ns() - t0;
    EXPECT_ERRMSG("/proc");
    if (strstr(surelock_errmsg(), "Permission denied") == NULL)
        fail_msg("errmsg \"%s\" does not say why /proc could not be read", surelock_errmsg());
    assert_ptr_equal(m, SENTINEL);
    if (took < 900 * MS || took > 6000 * MS)
        fail_msg("the holder check gave up after %llu ms; its bound is 1 s",
                 (unsigned long long)(took / MS));
    EXPECT_UNCHANGED(path, &before);
    /* /proc readable again: proven not a holder. */
    ipc_hooks_off();
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), EPROTO);
    EXPECT_ERRMSG("not a holder");
    kill(sleeper, SIGKILL);
    EXPECT_CHILD_KILLED(sleeper);
}

/* Issue 9, item 3: an opener stopped (SIGSTOP) while it holds the openers' flock blocks the
 * others for at most open's bound; they fail with ETIMEDOUT naming the flock and its holder. */
static void an_opener_stopped_mid_open_blocks_others_only_within_the_bound(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path, 0600);
    int stalled[2];
    make_pipe(stalled);
    creator = (struct creator){path, 0, true, stalled[1]};
    pid_t stuck = spawn(creator_main, &creator);
    if (!recv_byte(stalled[0], WAIT_LIMIT_MS)) {
        EXPECT_CHILD_KILLED(stuck);
        fail_msg("the creator never reached the init hook");
    }
    kill(stuck, SIGSTOP);
    uint64_t t0 = now_ns();
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), ETIMEDOUT);
    uint64_t took = now_ns() - t0;
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)stuck);
    EXPECT_ERRMSG("flock");
    if (strstr(surelock_errmsg(), pid) == NULL || strstr(surelock_errmsg(), "stopped") == NULL)
        fail_msg("errmsg \"%s\" does not name the stopped opener %s", surelock_errmsg(), pid);
    assert_ptr_equal(m, SENTINEL);
    if (took < 4000 * MS || took > 10000 * MS)
        fail_msg("open gave up after %llu ms; its bound is 5 s", (unsigned long long)(took / MS));
    kill(stuck, SIGKILL);
    EXPECT_CHILD_KILLED(stuck);
    expect_usable(path, 0); /* the unfinished header is redone */
    close(stalled[0]);
    close(stalled[1]);
}

/* Issue 9, item 12: on NFS and SMB, flock is emulated with locks that conflict with the "open"
 * markers; such file systems are refused up front, creating nothing and changing nothing. */
static void a_lock_file_on_nfs_or_smb_is_refused_before_anything_is_created(void **state)
{
    (void)state;
    const char *existing = P("lock");
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(existing, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    snapshot before = take_snapshot(existing);
    const struct {
        long magic;
        const char *name;
    } fs[] = {{0x6969, "NFS"}, {0x517B, "SMB"}, {(long)0xFF534D42, "CIFS"}};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        surelock_testing_ipc_fs_magic = fs[i].magic;
        m = SENTINEL;
        EXPECT_RC(surelock_ipc_open(P("new"), NULL, &m), EOPNOTSUPP);
        EXPECT_ERRMSG(fs[i].name);
        EXPECT_RC(surelock_ipc_open(existing, NULL, &m), EOPNOTSUPP);
        EXPECT_ERRMSG("local file system");
        assert_ptr_equal(m, SENTINEL);
        assert_int_equal(entries_in_test_dir(), 1);
    }
    ipc_hooks_off();
    EXPECT_UNCHANGED(existing, &before);
}

/* Issue 12: owner_deaths counts holders' deaths, once each: not a process that died while it
 * was being refused a not-recoverable lock (it took the pthread mutex only to give it back). */
static void die_after_taking_the_mutex(void)
{
    raise(SIGKILL);
}

static int refused_acquirer_main(void *p)
{
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open((const char *)p, NULL, &m), 0);
    surelock_testing_ipc_acquired_hook = die_after_taking_the_mutex;
    int rc = surelock_ipc_lock(m);
    fprintf(stderr, "child %d: lock returned %s without reaching the hook\n", (int)getpid(),
            errname(rc));
    return 1;
}

static void owner_deaths_counts_each_holders_death_once_and_nothing_else(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0); /* kept open: no reset below */
    holder_proc hp;
    HOLDER_START(&hp, path, 0, 0);
    HOLDER_KILL(&hp);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 1);
    EXPECT_RC(surelock_ipc_unlock(m), 0); /* without consistent: not recoverable */

    /* Refused acquirers that die between taking and giving back the mutex: no holder died. */
    for (int i = 0; i < 2; i++) EXPECT_CHILD_KILLED(spawn(refused_acquirer_main, (void *)path));
    EXPECT_RC(surelock_ipc_lock(m), ENOTRECOVERABLE);
    EXPECT_RC(surelock_ipc_trylock(m), ENOTRECOVERABLE);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 1);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Reset (open nowhere); the count is history and stays; the next death adds one. */
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    HOLDER_START(&hp, path, 0, 0);
    HOLDER_KILL(&hp);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 2);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(creator_killed_mid_initialisation_of_a_placeholder_leaves_it_to_be_redone),
        TEST(creator_killed_mid_creation_of_a_missing_path_leaves_nothing_at_the_path),
        TEST(opener_waits_for_a_creator_stalled_mid_initialisation_and_gets_a_whole_file),
        TEST(creator_stalled_mid_creation_of_a_missing_path_blocks_no_other_creator),
        TEST(out_of_memory_in_open_is_enomem_and_touches_nothing),
        TEST(out_of_memory_for_a_new_threads_record_is_enomem_and_holds_nothing),
        TEST(an_unreadable_boot_id_is_an_error_never_a_reset),
        TEST(an_opener_with_another_boot_id_uses_a_file_open_elsewhere_as_it_is),
        TEST(a_holder_that_releases_and_is_reaped_during_open_is_no_corruption),
        TEST(with_proc_maps_unreadable_the_holder_record_decides_within_a_bound),
        TEST(an_opener_stopped_mid_open_blocks_others_only_within_the_bound),
        TEST(a_lock_file_on_nfs_or_smb_is_refused_before_anything_is_created),
        TEST(owner_deaths_counts_each_holders_death_once_and_nothing_else),
    };
    return cmocka_run_group_tests_name("ipc_internal", tests, ipc_group_setup, watchdog_stop);
}
