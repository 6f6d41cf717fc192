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
 * Same rules as test_ipc.c: a fresh mkdtemp directory per test, children _exit with a status
 * the parent checks and die of SIGALRM if stuck, every wait bounded, a watchdog per test.
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

#define CHILD_ALARM_S 60    /* every child dies of SIGALRM after this, whatever it does */
/* How long an opener must stay blocked behind a creator stalled mid-initialisation before
 * the test believes it waits for it (a slow machine can only make the test pass wrongly,
 * never fail wrongly). */
#define STILL_BLOCKED_MS 300

/* From the file layout documented in surelock.h (format version 1). */
#define OFF_FORMAT_VERSION 8
#define OFF_INIT_STATE 12
#define OFF_PAYLOAD_SIZE 112
#define HEADER_SIZE 4096
#define STATE_READY 0x52454459u

/* ---- helpers -------------------------------------------------------------------------------- */

static char sentinel_storage;
#define SENTINEL ((surelock_ipc *)(void *)&sentinel_storage)

static surelock_ipc_options options(uint32_t flags, size_t payload_size)
{
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = flags;
    o.payload_size = payload_size;
    return o;
}

static char tmpdir[64];
/* A path in the test's directory; valid until the test ends (its teardown frees it). */
static const char *P(const char *name)
{
    return temp_path(tmpdir, name);
}

static int entries_in_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (d == NULL) fail_msg("opendir: %s", strerror(errno));
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void touch(const char *path)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) fail_msg("cannot create %s: %s", path, strerror(errno));
    close(fd);
}

/* The whole file, or fails the test. */
static unsigned char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    fstat(fd, &st);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    if (b == NULL) fail_msg("out of memory");
    ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
    close(fd);
    if (n != st.st_size) fail_msg("short read of %s", path);
    *len = (size_t)st.st_size;
    return b;
}

static uint32_t get32(const unsigned char *b, size_t off)
{
    uint32_t v;
    memcpy(&v, b + off, sizeof v);
    return v;
}

/* ---- child processes ------------------------------------------------------------------------ */

/* A child that dies of SIGALRM after CHILD_ALARM_S whatever it does, tracked until it is
 * reaped (the teardown and the watchdog kill those left). */
static pid_t spawn(int (*fn)(void *), void *arg)
{
    return child_spawn_tracked(fn, arg, CHILD_ALARM_S);
}

#define EXPECT_CHILD_OK(pid) child_expect_ok_at(__LINE__, (pid), WAIT_LIMIT_MS)

#define EXPECT_CHILD_KILLED(pid) expect_child_killed_at(__LINE__, (pid))
static void expect_child_killed_at(int line, pid_t pid)
{
    int status = child_reap_at(line, pid, WAIT_LIMIT_MS);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("line %d: child %d was expected to die of SIGKILL; wait status 0x%x", line,
                 (int)pid, status);
}

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
    surelock_ipc_options o = options(0, c->payload_size);
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
    surelock_ipc_options o = options(0, a->payload_size);
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
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, payload_size);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), 0);
    size_t len;
    unsigned char *b = slurp(path, &len);
    assert_memory_equal(b, "SURELOCK", 8);
    assert_int_equal(get32(b, OFF_INIT_STATE), STATE_READY);
    uint64_t payload;
    memcpy(&payload, b + OFF_PAYLOAD_SIZE, 8);
    assert_int_equal(payload, payload_size);
    free(b);
    EXPECT_RC(surelock_ipc_lock(m), 0); /* free, and not "owner died": nobody ever held it */
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void ipc_hooks_off(void);

/* ---- watchdog and fixtures ------------------------------------------------------------------ */

/* When the watchdog ends the run no teardown will run: it kills the children and removes the
 * test's directory itself. */
static void bail_cleanup(void)
{
    children_kill_tracked(false);
    temp_dir_remove(tmpdir);
}

static int group_setup(void **state)
{
    watchdog_on_bail(bail_cleanup);
    return watchdog_start(state);
}

static int test_setup(void **state)
{
    watchdog_arm(state);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/surelock-test-ipc-internal-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) return -1;
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    surelock_testing_fail_allocation_after(-1);
    ipc_hooks_off();
    children_kill_tracked(true);
    temp_dir_remove(tmpdir);
    temp_paths_free();
    return watchdog_disarm(state);
}

#undef TEST
#define TEST(f) {#f, f, test_setup, test_teardown, (void *)#f}

/* ---- a creator killed mid-initialisation ---------------------------------------------------- */

static void creator_killed_mid_initialisation_of_a_placeholder_leaves_it_to_be_redone(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path);
    creator = (struct creator){path, 100, false, -1};
    EXPECT_CHILD_KILLED(spawn(creator_main, &creator));

    /* It really died half-way: the magic is there, the header is not marked ready. */
    size_t len;
    unsigned char *b = slurp(path, &len);
    assert_true(len >= HEADER_SIZE);
    assert_memory_equal(b, "SURELOCK", 8);
    assert_int_equal(get32(b, OFF_FORMAT_VERSION), 1);
    assert_int_not_equal(get32(b, OFF_INIT_STATE), STATE_READY);
    free(b);

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
    touch(other);
    creator = (struct creator){other, 0, false, -1};
    EXPECT_CHILD_KILLED(spawn(creator_main, &creator));
    surelock_ipc_options o = options(0, 64);
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
    assert_int_equal(entries_in_tmpdir(), 0); /* no half-made file under any name */
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), ENOENT);
    assert_ptr_equal(m, SENTINEL);

    o = options(0, 64);
    EXPECT_RC(surelock_ipc_open(path, &o, &m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    expect_usable(path, 64);
    assert_int_equal(entries_in_tmpdir(), 1);
}

/* ---- a creator stalled mid-initialisation ----------------------------------------------------- */

static void opener_waits_for_a_creator_stalled_mid_initialisation_and_gets_a_whole_file(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path);
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
    assert_int_equal(entries_in_tmpdir(), 1);
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
    touch(placeholder);
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
    assert_int_equal(entries_in_tmpdir(), 1);

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

#define OFF_BOOT_ID 40
#define OFF_OWNER_DEATHS 120
#define OFF_RECOVERY_STATE 128
#define OFF_HOLDER_TID 132
#define OFF_MUTEX 192

static uint64_t get64(const unsigned char *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b + off, sizeof v);
    return v;
}

static void poke32(const char *path, size_t off, uint32_t v)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || pwrite(fd, &v, sizeof v, (off_t)off) != (ssize_t)sizeof v)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    close(fd);
}

/* A process that holds the lock at path until a byte arrives, then unlocks, closes and exits. */
static struct holder {
    const char *path;
    int ready_w, release_r;
} holder;

static int holder_main(void *p)
{
    struct holder *h = p;
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(h->path, NULL, &m), 0);
    int rc = surelock_ipc_lock(m);
    if (rc == EOWNERDEAD) rc = surelock_ipc_consistent(m);
    CHILD_EXPECT_RC(rc, 0);
    CHILD_CHECK(send_byte(h->ready_w));
    CHILD_CHECK(recv_byte(h->release_r, (CHILD_ALARM_S - 5) * 1000u));
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

typedef struct holder_proc {
    pid_t pid;
    int ready_r, release_w;
} holder_proc;

static holder_proc holder_start(const char *path)
{
    int ready[2], release[2];
    make_pipe(ready);
    make_pipe(release);
    holder = (struct holder){path, ready[1], release[0]};
    holder_proc hp = {spawn(holder_main, &holder), ready[0], release[1]};
    close(ready[1]);
    close(release[0]);
    if (!recv_byte(hp.ready_r, WAIT_LIMIT_MS)) fail_msg("the holder process did not lock");
    return hp;
}

static void holder_release(holder_proc *hp)
{
    if (!send_byte(hp->release_w)) fail_msg("cannot signal the holder");
    EXPECT_CHILD_OK(hp->pid);
    close(hp->ready_r);
    close(hp->release_w);
}

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
    holder_proc hp = holder_start(path);
    size_t len;
    unsigned char *before = slurp(path, &len);
    const int errors[] = {ENOMEM, EMFILE, EACCES, ENOENT};
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++) {
        surelock_testing_ipc_boot_id_errno = errors[i];
        surelock_ipc *m = SENTINEL;
        EXPECT_RC(surelock_ipc_open(path, NULL, &m), errors[i]);
        EXPECT_ERRMSG("boot_id");
        assert_ptr_equal(m, SENTINEL);
        EXPECT_RC(surelock_ipc_open(P("new"), NULL, &m), errors[i]);
        assert_int_equal(entries_in_tmpdir(), 1); /* nothing created */
    }
    ipc_hooks_off();
    size_t len2;
    unsigned char *after = slurp(path, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(before, after, len);
    free(before);
    free(after);
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY); /* still one holder */
    holder_release(&hp);
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
    holder_proc hp = holder_start(path);
    surelock_testing_ipc_boot_id = "11111111-2222-4333-8444-555555555555";
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    holder_release(&hp);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    /* Open nowhere: reset, and stamped with the boot id this process reads. */
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    size_t len;
    unsigned char *b = slurp(path, &len);
    assert_memory_equal(b + OFF_BOOT_ID, surelock_testing_ipc_boot_id, 36);
    free(b);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* Issue 9, item 2: the holder the opener read under its flock releases, exits and is reaped
 * before the opener looks at it: a healthy file, not "a holder that does not exist". */
static holder_proc *vanishing_holder;
static void holder_vanishes(void)
{
    surelock_testing_ipc_header_read_hook = NULL;
    holder_release(vanishing_holder);
}

static void a_holder_that_releases_and_is_reaped_during_open_is_no_corruption(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp = holder_start(path);
    vanishing_holder = &hp;
    surelock_testing_ipc_header_read_hook = holder_vanishes;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static int sleeper_main(void *p)
{
    (void)p;
    for (;;) pause();
    return 0;
}

/* Issue 9, item 11, where /proc/TID/maps cannot be read (another user's process, hidepid):
 * the header's holder record is the evidence; a lock word it never confirms within the
 * check's bound is a clear ETIMEDOUT naming the cause, never a default. */
static void with_proc_maps_unreadable_the_holder_record_decides_within_a_bound(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc hp = holder_start(path);
    surelock_testing_ipc_proc_errno = EACCES;
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0); /* recorded: a holder */
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    holder_release(&hp);
    EXPECT_RC(surelock_ipc_close(m), 0);

    pid_t sleeper = spawn(sleeper_main, NULL);
    poke32(path, OFF_MUTEX, (uint32_t)sleeper);
    poke32(path, OFF_HOLDER_TID, 0);
    size_t len;
    unsigned char *before = slurp(path, &len);
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
    unsigned char *after = slurp(path, &len);
    assert_memory_equal(before, after, len);
    free(before);
    free(after);
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
    touch(path);
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
    size_t len;
    unsigned char *before = slurp(existing, &len);
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
        assert_int_equal(entries_in_tmpdir(), 1);
    }
    ipc_hooks_off();
    unsigned char *after = slurp(existing, &len);
    assert_memory_equal(before, after, len);
    free(before);
    free(after);
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

static uint64_t owner_deaths(const char *path)
{
    size_t len;
    unsigned char *b = slurp(path, &len);
    uint64_t v = get64(b, OFF_OWNER_DEATHS);
    free(b);
    return v;
}

static void owner_deaths_counts_each_holders_death_once_and_nothing_else(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0); /* kept open: no reset below */
    holder_proc hp = holder_start(path);
    kill(hp.pid, SIGKILL);
    EXPECT_CHILD_KILLED(hp.pid);
    close(hp.ready_r);
    close(hp.release_w);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    assert_int_equal(owner_deaths(path), 1);
    EXPECT_RC(surelock_ipc_unlock(m), 0); /* without consistent: not recoverable */

    /* Refused acquirers that die between taking and giving back the mutex: no holder died. */
    for (int i = 0; i < 2; i++) EXPECT_CHILD_KILLED(spawn(refused_acquirer_main, (void *)path));
    EXPECT_RC(surelock_ipc_lock(m), ENOTRECOVERABLE);
    EXPECT_RC(surelock_ipc_trylock(m), ENOTRECOVERABLE);
    assert_int_equal(owner_deaths(path), 1);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Reset (open nowhere); the count is history and stays; the next death adds one. */
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    hp = holder_start(path);
    kill(hp.pid, SIGKILL);
    EXPECT_CHILD_KILLED(hp.pid);
    close(hp.ready_r);
    close(hp.release_w);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(owner_deaths(path), 2);
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
    return cmocka_run_group_tests_name("ipc_internal", tests, group_setup, watchdog_stop);
}
