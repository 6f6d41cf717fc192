/*
 * test_ipc.c — the robust cross-process mutex (API.md section 4) through the public header
 * only, against the real shared libsurelock.so.1.
 *
 * Rules every test here follows:
 *  - Each test gets a fresh mkdtemp directory under /tmp (removed afterwards, whatever the
 *    outcome) and restores the umask it found.
 *  - CMocka assertions run on the test's own thread and process only. Helper threads record
 *    what they saw and the test asserts after joining them; child processes check what they
 *    see themselves, print the mismatch on stderr and _exit with a non-zero status, which the
 *    parent checks. Every child also arms alarm(CHILD_ALARM_S), so a child stuck in a lock
 *    call dies of SIGALRM instead of living on.
 *  - Every wait is bounded on CLOCK_MONOTONIC: pipe reads by poll(), child exits by a waitpid
 *    WNOHANG loop that SIGKILLs and fails after the limit, thread joins by a bounded
 *    pthread_tryjoin_np loop, and a watchdog ends the run if a call on the test's own thread
 *    never returns. A broken library fails a test; it never hangs CI.
 *  - Refusals are checked three ways: the exact errno, an errmsg naming the path and the
 *    reason, and the file (type, mode, owner, size, inode and every byte) left exactly as it
 *    was.
 *  - Files are crafted byte by byte from the layout documented in surelock.h (section 4).
 *  - Nothing measures speed: timeouts are checked from below (a timed wait lasts at least its
 *    timeout) with a generous ceiling that only catches "never returns".
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"

/* ---- limits ------------------------------------------------------------------------------ */

/* WAIT_LIMIT_MS, the watchdog (150 s per test here) and TIMED_WAIT_CEILING_NS (5 s here) come
 * from support/bounded.h; tests/meson.build sets the two bounds this file tightens. */
/* Bound on the 8-process races (16000 contended cross-process lock round trips). */
#define RACE_LIMIT_MS 90000
/* Every child process dies of SIGALRM after this many seconds, whatever it is doing. */
#define CHILD_ALARM_S 100
/* Ceiling for "a call that must not block returned" (never a speed check). */
#define NONBLOCKING_CEILING_NS (1ull * 1000000000ull)

/* ---- the file layout documented in surelock.h (format version 1) --------------------------- */

#define OFF_MAGIC 0
#define OFF_FORMAT_VERSION 8
#define OFF_INIT_STATE 12
#define OFF_POINTER_SIZE 16
#define OFF_MUTEX_SIZE 18
#define OFF_MUTEX_ALIGN 20
#define OFF_HEADER_SIZE 22
#define OFF_LIBC 24
#define OFF_BOOT_ID 40
#define OFF_PID_NAMESPACE 80
#define OFF_LOCK_ID 88
#define OFF_CREATOR_UID 104
#define OFF_FLAGS 108
#define OFF_PAYLOAD_SIZE 112
#define OFF_OWNER_DEATHS 120
#define OFF_RECOVERY_STATE 128
#define OFF_HOLDER_TID 132
#define OFF_MUTEX 192
#define HEADER_SIZE 4096
#define STATE_READY 0x52454459u
#define RECOVERY_CONSISTENT 0u
#define RECOVERY_NEEDED 1u
#define RECOVERY_NOT_RECOVERABLE 2u

/* A uid that is not ours (the tests run as root in CI; see file_owned_by_another_uid_...). */
#define OTHER_UID 12345

/* ---- small helpers ----------------------------------------------------------------------- */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t file_size_for(size_t payload)
{
    size_t page = page_size();
    return HEADER_SIZE + (payload + page - 1) / page * page;
}

/* Asserts that errmsg mentions every one of the given words (any case): stricter than the
 * "at least one of them" of support/bounded.h, which this file replaces. */
#undef EXPECT_ERRMSG
#define EXPECT_ERRMSG(...) expect_errmsg_at(__LINE__, __VA_ARGS__, (const char *)NULL)
static void expect_errmsg_va(int line, va_list ap)
{
    const char *msg = surelock_errmsg();
    if (msg == NULL) fail_msg("line %d: surelock_errmsg() returned NULL", line);
    if (msg[0] == '\0') fail_msg("line %d: surelock_errmsg() is empty after a failure", line);
    const char *word;
    while ((word = va_arg(ap, const char *)) != NULL)
        if (strcasestr(msg, word) == NULL)
            fail_msg("line %d: errmsg \"%s\" does not mention \"%s\"", line, msg, word);
}

static void expect_errmsg_at(int line, ...)
{
    va_list ap;
    va_start(ap, line);
    expect_errmsg_va(line, ap);
    va_end(ap);
}

/* A distinct non-NULL address to pre-load out-pointers with: they must stay untouched on error. */
static char sentinel_storage;
#define SENTINEL ((surelock_ipc *)(void *)&sentinel_storage)

static surelock_ipc_options options(uint32_t flags, uint32_t mode, size_t payload_size)
{
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = flags;
    o.mode = mode;
    o.payload_size = payload_size;
    return o;
}

/* Opens path with the given options and asserts success. */
#define OPEN(path, flags, mode, payload) open_at(__LINE__, (path), (flags), (mode), (payload))
static surelock_ipc *open_at(int line, const char *path, uint32_t flags, uint32_t mode,
                             size_t payload)
{
    surelock_ipc_options o = options(flags, mode, payload);
    surelock_ipc *m = NULL;
    int rc = surelock_ipc_open(path, &o, &m);
    if (rc != 0)
        fail_msg("line %d: surelock_ipc_open(%s) returned %s (%d); errmsg: \"%s\"", line, path,
                 errname(rc), rc, surelock_errmsg());
    if (m == NULL) fail_msg("line %d: surelock_ipc_open returned 0 and a NULL handle", line);
    return m;
}

/* ---- the per-test directory ---------------------------------------------------------------- */

static char tmpdir[64];
static mode_t saved_umask;

/* A path in the test's directory; valid until the test ends (its teardown frees it). */
static const char *P(const char *name)
{
    return temp_path(tmpdir, name);
}

/* ---- file bytes ---------------------------------------------------------------------------- */

typedef struct bytes {
    unsigned char *data;
    size_t len;
} bytes;

static bytes slurp(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fail_msg("fstat %s: %s", path, strerror(errno));
    bytes b = {malloc((size_t)st.st_size + 1), 0};
    if (b.data == NULL) fail_msg("out of memory");
    ssize_t n;
    while (b.len < (size_t)st.st_size &&
           (n = pread(fd, b.data + b.len, (size_t)st.st_size - b.len, (off_t)b.len)) > 0)
        b.len += (size_t)n;
    close(fd);
    if (b.len != (size_t)st.st_size) fail_msg("short read of %s", path);
    return b;
}

/* Writes a file with exactly these bytes and this mode (replacing any regular file there). */
static void spit(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) fail_msg("cannot create %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);
        if (n <= 0) fail_msg("cannot write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    if (fchmod(fd, mode) != 0) fail_msg("chmod %s: %s", path, strerror(errno));
    close(fd);
}

static void touch(const char *path, mode_t mode)
{
    spit(path, "", 0, mode);
}

static uint32_t get32(const bytes *b, size_t off)
{
    uint32_t v;
    memcpy(&v, b->data + off, sizeof v);
    return v;
}

static uint64_t get64(const bytes *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b->data + off, sizeof v);
    return v;
}

static void put16(bytes *b, size_t off, uint16_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

static void put32(bytes *b, size_t off, uint32_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

static void put64(bytes *b, size_t off, uint64_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

/* One field of the file at path, read now. */
static uint32_t file32(const char *path, size_t off)
{
    bytes b = slurp(path);
    if (b.len < off + 4) fail_msg("%s is only %zu bytes", path, b.len);
    uint32_t v = get32(&b, off);
    free(b.data);
    return v;
}

static uint64_t file64(const char *path, size_t off)
{
    bytes b = slurp(path);
    if (b.len < off + 8) fail_msg("%s is only %zu bytes", path, b.len);
    uint64_t v = get64(&b, off);
    free(b.data);
    return v;
}

/* Creates a valid lock file through the library and returns its bytes. */
static bytes make_lock_file(const char *path, uint32_t flags, size_t payload)
{
    surelock_ipc *m = OPEN(path, flags, 0600, payload);
    EXPECT_RC(surelock_ipc_close(m), 0);
    return slurp(path);
}

static void this_boot_id(char out[40])
{
    memset(out, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f == NULL) fail_msg("cannot read the boot id: %s", strerror(errno));
    if (fgets(out, 40, f) == NULL) out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

/* What lstat says about a path, for "left exactly as it was". */
typedef struct snapshot {
    bool exists;
    struct stat st;
    bytes content; /* regular files only */
} snapshot;

static snapshot take_snapshot(const char *path)
{
    snapshot s;
    memset(&s, 0, sizeof s);
    s.exists = lstat(path, &s.st) == 0;
    if (s.exists && S_ISREG(s.st.st_mode)) s.content = slurp(path);
    return s;
}

#define EXPECT_UNCHANGED(path, before) expect_unchanged_at(__LINE__, (path), (before))
static void expect_unchanged_at(int line, const char *path, snapshot *before)
{
    snapshot after = take_snapshot(path);
    if (after.exists != before->exists)
        fail_msg("line %d: %s %s", line, path,
                 before->exists ? "was removed" : "was created");
    if (!before->exists) return;
    if ((after.st.st_mode & S_IFMT) != (before->st.st_mode & S_IFMT))
        fail_msg("line %d: %s changed its file type", line, path);
    if ((after.st.st_mode & 07777) != (before->st.st_mode & 07777))
        fail_msg("line %d: %s changed mode from 0%o to 0%o", line, path,
                 (unsigned)before->st.st_mode & 07777, (unsigned)after.st.st_mode & 07777);
    if (after.st.st_uid != before->st.st_uid || after.st.st_gid != before->st.st_gid)
        fail_msg("line %d: %s changed owner", line, path);
    if (after.st.st_ino != before->st.st_ino || after.st.st_dev != before->st.st_dev)
        fail_msg("line %d: %s was replaced by another file", line, path);
    if (after.st.st_rdev != before->st.st_rdev)
        fail_msg("line %d: %s changed its device number", line, path);
    if (S_ISREG(before->st.st_mode)) {
        if (after.content.len != before->content.len)
            fail_msg("line %d: %s changed size from %zu to %zu bytes", line, path,
                     before->content.len, after.content.len);
        for (size_t i = 0; i < before->content.len; i++)
            if (after.content.data[i] != before->content.data[i])
                fail_msg("line %d: %s changed at byte %zu (0x%02x -> 0x%02x)", line, path, i,
                         before->content.data[i], after.content.data[i]);
    }
    free(after.content.data);
    free(before->content.data);
    before->content.data = NULL;
}

/*
 * Opening `path` with `o` must fail with exactly `want`, leave the out-pointer alone, say in
 * errmsg the path and every word given, and leave whatever is at path exactly as it was.
 */
#define EXPECT_REFUSED(path, o, want, ...)                                                      \
    expect_refused_at(__LINE__, true, (path), (o), (want), #want, __VA_ARGS__,                  \
                      (const char *)NULL)
/* The same for options refused before the path is looked at: errmsg names the option. */
#define EXPECT_OPTIONS_REFUSED(path, o, want, ...)                                              \
    expect_refused_at(__LINE__, false, (path), (o), (want), #want, __VA_ARGS__,                 \
                      (const char *)NULL)
static void expect_refused_at(int line, bool names_path, const char *path,
                              const surelock_ipc_options *o, int want, const char *want_name, ...)
{
    snapshot before = take_snapshot(path);
    surelock_ipc *m = SENTINEL;
    uint64_t t0 = now_ns();
    int rc = surelock_ipc_open(path, o, &m);
    uint64_t took = now_ns() - t0;
    if (rc == 0 && m != SENTINEL && m != NULL) surelock_ipc_close(m);
    if (rc != want)
        fail_msg("line %d: opening %s returned %s (%d), expected %s; errmsg: \"%s\"", line, path,
                 errname(rc), rc, want_name, surelock_errmsg());
    if (m != SENTINEL) fail_msg("line %d: a refused open wrote its out-pointer", line);
    if (took > TIMED_WAIT_CEILING_NS)
        fail_msg("line %d: the refusal took %llu ms", line, (unsigned long long)(took / MS));
    if (names_path && strstr(surelock_errmsg(), path) == NULL)
        fail_msg("line %d: errmsg \"%s\" does not name the path %s", line, surelock_errmsg(),
                 path);
    va_list ap;
    va_start(ap, want_name);
    expect_errmsg_va(line, ap);
    va_end(ap);
    expect_unchanged_at(line, path, &before);
}

/* ---- child processes ------------------------------------------------------------------------ */

/* Forks a child that runs fn(arg) and _exits with its return value; bounded by alarm(). It is
 * tracked until reaped (the teardown and the watchdog kill those left). */
static pid_t spawn(int (*fn)(void *), void *arg)
{
    return child_spawn_tracked(fn, arg, CHILD_ALARM_S);
}

#define EXPECT_CHILD_OK(pid) child_expect_ok_at(__LINE__, (pid), WAIT_LIMIT_MS)

#define KILL_CHILD(pid) kill_child_at(__LINE__, (pid))
static void kill_child_at(int line, pid_t pid)
{
    if (kill(pid, SIGKILL) != 0) fail_msg("line %d: kill: %s", line, strerror(errno));
    int status = child_reap_at(line, pid, WAIT_LIMIT_MS);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("line %d: child %d ended with status 0x%x before it was killed", line,
                 (int)pid, status);
}

/* ---- a holder process: takes the lock, reports, and keeps it until released or killed ---- */

static struct holder_args {
    const char *path;
    uint32_t flags;
    int ready_w;   /* it writes a byte here once it holds the lock */
    int release_r; /* it unlocks once a byte arrives here */
    unsigned linger_ms;
} holder_args;

static int holder_main(void *p)
{
    struct holder_args *a = p;
    surelock_ipc_options o = options(a->flags, 0600, 0);
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, &o, &m), 0);
    int rc = surelock_ipc_lock(m);
    if (rc == EOWNERDEAD) rc = surelock_ipc_consistent(m);
    CHILD_EXPECT_RC(rc, 0);
    CHILD_CHECK(send_byte(a->ready_w));
    CHILD_CHECK(recv_byte(a->release_r, (CHILD_ALARM_S - 5) * 1000u));
    if (a->linger_ms) sleep_ms(a->linger_ms);
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

typedef struct holder_proc {
    pid_t pid;
    int ready_r;
    int release_w;
} holder_proc;

/* Starts a process that holds the lock at path; returns once it holds it. */
#define HOLDER_START(h, path, flags, linger) holder_start_at(__LINE__, (h), (path), (flags), (linger))
static void holder_start_at(int line, holder_proc *h, const char *path, uint32_t flags,
                            unsigned linger_ms)
{
    int ready[2], release[2];
    make_pipe(ready);
    make_pipe(release);
    holder_args = (struct holder_args){path, flags, ready[1], release[0], linger_ms};
    h->pid = spawn(holder_main, &holder_args);
    close(ready[1]);
    close(release[0]);
    h->ready_r = ready[0];
    h->release_w = release[1];
    if (!recv_byte(h->ready_r, WAIT_LIMIT_MS)) {
        int status = child_reap_at(line, h->pid, WAIT_LIMIT_MS);
        fail_msg("line %d: the holder process did not take the lock (status 0x%x)", line,
                 status);
    }
}

static void holder_close_fds(holder_proc *h)
{
    close(h->ready_r);
    close(h->release_w);
}

/* Lets the holder unlock (after its linger) and exit; checks it did so cleanly. */
#define HOLDER_RELEASE(h) holder_release_at(__LINE__, (h))
static void holder_release_at(int line, holder_proc *h)
{
    if (!send_byte(h->release_w)) fail_msg("line %d: cannot signal the holder", line);
    child_expect_ok_at(line, h->pid, WAIT_LIMIT_MS);
    holder_close_fds(h);
}

/* SIGKILLs the holder while it holds the lock. */
#define HOLDER_KILL(h) holder_kill_at(__LINE__, (h))
static void holder_kill_at(int line, holder_proc *h)
{
    kill_child_at(line, h->pid);
    holder_close_fds(h);
}

/* ---- watchdog and fixtures ----------------------------------------------------------------- */

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

/* Per test: arm the watchdog (*state is the test's name), make the directory, keep the umask. */
static int test_setup(void **state)
{
    watchdog_arm(state);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/surelock-test-ipc-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) return -1;
    saved_umask = umask(022);
    umask(saved_umask);
    return 0;
}

/* Per test, also after a failure: no child outlives its test, the directory goes away. */
static int test_teardown(void **state)
{
    (void)state;
    children_kill_tracked(true);
    umask(saved_umask);
    temp_dir_remove(tmpdir);
    temp_paths_free();
    return watchdog_disarm(state);
}

#undef TEST
#define TEST(f) {#f, f, test_setup, test_teardown, (void *)#f}

/* =========================================================================================
 * Creating and opening
 * ========================================================================================= */

static void open_creates_a_lock_file_with_the_documented_header(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    assert_true(m != NULL && m != SENTINEL);

    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600); /* the default mode */
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_size, HEADER_SIZE);

    char boot_id[40];
    this_boot_id(boot_id);
    struct stat ns;
    uint64_t pid_ns = stat("/proc/self/ns/pid", &ns) == 0 ? (uint64_t)ns.st_ino : 0;

    bytes b = slurp(path);
    assert_memory_equal(b.data + OFF_MAGIC, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_FORMAT_VERSION), 1);
    assert_int_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    uint16_t u16;
    memcpy(&u16, b.data + OFF_POINTER_SIZE, 2);
    assert_int_equal(u16, sizeof(void *));
    memcpy(&u16, b.data + OFF_MUTEX_SIZE, 2);
    assert_int_equal(u16, sizeof(pthread_mutex_t));
    memcpy(&u16, b.data + OFF_MUTEX_ALIGN, 2);
    assert_int_equal(u16, _Alignof(pthread_mutex_t));
    memcpy(&u16, b.data + OFF_HEADER_SIZE, 2);
    assert_int_equal(u16, HEADER_SIZE);
    assert_string_equal((const char *)b.data + OFF_LIBC, "glibc");
    assert_memory_equal(b.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
    assert_int_equal(get64(&b, OFF_PID_NAMESPACE), pid_ns);
    static const unsigned char zero16[16];
    assert_memory_not_equal(b.data + OFF_LOCK_ID, zero16, 16); /* random: zero is 2^-128 */
    assert_int_equal(get32(&b, OFF_CREATOR_UID), geteuid());
    assert_int_equal(get32(&b, OFF_FLAGS), 0);
    assert_int_equal(get64(&b, OFF_PAYLOAD_SIZE), 0);
    assert_int_equal(get64(&b, OFF_OWNER_DEATHS), 0);
    assert_int_equal(get32(&b, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    assert_int_equal(get32(&b, OFF_HOLDER_TID), 0);
    free(b.data);

    /* A second lock file gets another random id. */
    bytes other = make_lock_file(P("other"), 0, 0);
    bytes again = slurp(path);
    assert_memory_not_equal(other.data + OFF_LOCK_ID, again.data + OFF_LOCK_ID, 16);
    free(other.data);
    free(again.data);

    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(file32(path, OFF_HOLDER_TID), 0);
    size_t size = 123;
    assert_null(surelock_ipc_payload(m, &size));
    assert_int_equal(size, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Closing never removes the file; opening it again finds the same lock. */
    assert_int_equal(lstat(path, &st), 0);
    m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void null_handles_paths_and_out_pointers_are_einval(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(NULL, NULL, &m), EINVAL);
    EXPECT_ERRMSG("path");
    assert_ptr_equal(m, SENTINEL);
    EXPECT_RC(surelock_ipc_open(path, NULL, NULL), EINVAL);
    EXPECT_ERRMSG("out");
    struct stat st;
    assert_int_equal(lstat(path, &st), -1); /* nothing created */

    EXPECT_RC(surelock_ipc_close(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_ipc_lock(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_trylock(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_timedlock(NULL, 0), EINVAL);
    EXPECT_RC(surelock_ipc_timedlock(NULL, SURELOCK_FOREVER), EINVAL);
    EXPECT_RC(surelock_ipc_consistent(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_unlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_ipc_unlink(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");

    /* The functions without an errno answer 0 / NULL. */
    assert_int_equal(surelock_ipc_needs_recovery(NULL), 0);
    size_t size = 123;
    assert_null(surelock_ipc_payload(NULL, &size));
    assert_int_equal(size, 0);
    assert_null(surelock_ipc_payload(NULL, NULL));
}

static void options_too_small_unknown_flags_and_mode_beyond_0777_are_einval(void **state)
{
    (void)state;
    const char *fresh = P("fresh");
    const char *existing = P("existing");
    free(make_lock_file(existing, 0, 0).data);

    surelock_ipc_options o;
    const char *paths[] = {fresh, existing};
    for (int i = 0; i < 2; i++) {
        o = options(0, 0600, 0);
        o.size = sizeof o - 1;
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");
        o.size = 0;
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");
        o.size = offsetof(surelock_ipc_options, payload_size);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");

        const uint32_t unknown[] = {0x8u, 0x100u, 0x80000000u,
                                    SURELOCK_IPC_NOCREATE | 0x10u};
        for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
            o = options(unknown[k], 0600, 0);
            EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "flag");
        }
        o = options(0, 01600, 0);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "mode");
        o = options(0, 04700, 0);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "mode");
    }

    /* A larger struct (a later version's) is read up to this version's size: the rest is
     * ignored, whatever it holds. */
    struct {
        surelock_ipc_options o;
        unsigned char later[64];
    } bigger;
    memset(&bigger, 0xff, sizeof bigger);
    bigger.o = options(0, 0640, 0);
    bigger.o.size = sizeof bigger;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(fresh, &bigger.o, &m), 0);
    struct stat st;
    assert_int_equal(stat(fresh, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void missing_file_with_nocreate_is_enoent_and_creates_nothing(void **state)
{
    (void)state;
    const char *path = P("missing");
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_REFUSED(path, &o, ENOENT, "NOCREATE");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_ANY_OWNER, 0666, 64);
    EXPECT_REFUSED(path, &o, ENOENT, NULL);
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
    closedir(d);
    assert_int_equal(entries, 0);

    /* NOCREATE opens a file that exists. */
    free(make_lock_file(path, 0, 0).data);
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void created_file_has_exactly_the_requested_mode_whatever_the_umask(void **state)
{
    (void)state;
    const mode_t umasks[] = {077, 000, 022, 0777};
    const uint32_t modes[] = {0600, 0640, 0660, 0604, 0666, 0700, 0644};
    for (size_t u = 0; u < sizeof umasks / sizeof umasks[0]; u++) {
        umask(umasks[u]);
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
            char name[32];
            snprintf(name, sizeof name, "lock-%03o-%03o", (unsigned)umasks[u], modes[k]);
            const char *path = P(name);
            surelock_ipc *m = OPEN(path, 0, modes[k], 0);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            if ((st.st_mode & 07777) != modes[k])
                fail_msg("umask 0%03o, mode 0%03o: the file has mode 0%03o", (unsigned)umasks[u],
                         modes[k], (unsigned)st.st_mode & 07777);
            EXPECT_RC(surelock_ipc_lock(m), 0);
            EXPECT_RC(surelock_ipc_unlock(m), 0);
            EXPECT_RC(surelock_ipc_close(m), 0);
        }
    }
    /* NULL options: the default 0600, also under umask 0. */
    umask(0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("default"), NULL, &m), 0);
    struct stat st;
    assert_int_equal(stat(P("default"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void empty_placeholder_file_is_initialised_in_place(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path, 0640); /* as `touch` or an installer would leave it; group-readable is fine */
    struct stat before;
    assert_int_equal(lstat(path, &before), 0);

    surelock_ipc *m = OPEN(path, 0, 0600, 100);
    struct stat after;
    assert_int_equal(lstat(path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino); /* in place, not replaced */
    assert_int_equal(after.st_mode & 07777, 0640); /* an existing file's mode is left alone */
    assert_int_equal(after.st_size, file_size_for(100));
    bytes b = slurp(path);
    assert_memory_equal(b.data, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    assert_int_equal(get64(&b, OFF_PAYLOAD_SIZE), 100);
    free(b.data);

    size_t size = 0;
    unsigned char *payload = surelock_ipc_payload(m, &size);
    assert_non_null(payload);
    assert_int_equal(size, 100);
    for (size_t i = 0; i < size; i++) assert_int_equal(payload[i], 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A placeholder opened without options gets the defaults (no payload). */
    touch(P("bare"), 0600);
    m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("bare"), NULL, &m), 0);
    assert_int_equal(lstat(P("bare"), &after), 0);
    assert_int_equal(after.st_size, HEADER_SIZE);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void unfinished_header_is_redone_and_an_all_zero_one_refused(void **state)
{
    (void)state;
    /* A header whose init_state never reached "ready" (its creator died while writing it):
     * whatever else it holds, it is initialised again. */
    bytes b = make_lock_file(P("model"), 0, 0);
    put32(&b, OFF_INIT_STATE, 0);
    put16(&b, OFF_POINTER_SIZE, 4);
    memcpy(b.data + OFF_LIBC, "musl\0\0\0\0", 8);
    memset(b.data + OFF_BOOT_ID, 'z', 36);
    put32(&b, OFF_RECOVERY_STATE, RECOVERY_NOT_RECOVERABLE);
    memset(b.data + OFF_MUTEX, 0xa5, 40); /* garbage where the mutex goes */
    const char *path = P("unfinished");
    spit(path, b.data, b.len, 0600);
    free(b.data);

    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    bytes after = slurp(path);
    assert_int_equal(get32(&after, OFF_INIT_STATE), STATE_READY);
    uint16_t ptr;
    memcpy(&ptr, after.data + OFF_POINTER_SIZE, 2);
    assert_int_equal(ptr, sizeof(void *));
    assert_string_equal((const char *)after.data + OFF_LIBC, "glibc");
    assert_int_equal(get32(&after, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    free(after.data);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A stamp alone (the creator died right after its first write, before sizing the file). */
    bytes st = make_lock_file(P("model2"), 0, 0);
    put32(&st, OFF_INIT_STATE, 0);
    spit(P("stamp"), st.data, 16, 0600);
    free(st.data);
    m = OPEN(P("stamp"), 0, 0600, 0);
    assert_int_equal(file32(P("stamp"), OFF_INIT_STATE), STATE_READY);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A header of zeros is not an unfinished lock file: initialisers write the stamp (magic,
     * version, not-ready state) before anything else, so zeros are someone else's data (a
     * disk image, a sparse file) and are refused untouched. */
    unsigned char *zeros = calloc(1, 2 * HEADER_SIZE);
    assert_non_null(zeros);
    spit(P("zeros"), zeros, 2 * HEADER_SIZE, 0600);
    free(zeros);
    snapshot z = take_snapshot(P("zeros"));
    surelock_ipc *none = SENTINEL;
    surelock_ipc_options zo = options(0, 0600, 0);
    EXPECT_RC(surelock_ipc_open(P("zeros"), &zo, &none), EPROTO);
    EXPECT_ERRMSG("magic");
    assert_ptr_equal(none, SENTINEL);
    EXPECT_UNCHANGED(P("zeros"), &z);
}

/* The mutex bytes of a file from this boot are checked: a mutex of another kind (not robust,
 * not process-shared, priority-protected: glibc would hang or abort on it) or one held by a
 * thread that does not exist and was never marked dead is refused untouched. */
static void a_file_whose_mutex_is_corrupt_is_eproto_and_untouched(void **state)
{
    (void)state;
    surelock_ipc_options o = options(0, 0600, 0);
    const size_t off_kind = OFF_MUTEX + 16, off_lock = OFF_MUTEX; /* glibc __kind, __lock */

    bytes b = make_lock_file(P("zeroed"), 0, 0);
    memset(b.data + OFF_MUTEX, 0, 40); /* a plain private mutex */
    spit(P("zeroed"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("zeroed"), &o, EPROTO, "mutex");

    put32(&b, off_kind, 0xc0);          /* priority-protect: glibc asserts on it */
    put32(&b, off_lock, 0xfff80000u);
    spit(P("pp"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("pp"), &o, EPROTO, "mutex");
    free(b.data);

    b = make_lock_file(P("ghost"), 0, 0);
    put32(&b, off_lock, 0x3ffffff0u);   /* a TID above any pid_max: no such thread */
    spit(P("ghost"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("ghost"), &o, EPROTO, "does not exist");
    put32(&b, off_lock, 0x3ffffff0u | 0x40000000u); /* the same, marked dead: usable */
    spit(P("ghost"), b.data, b.len, 0600);
    free(b.data);
    surelock_ipc *m = OPEN(P("ghost"), 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* After fork(), the child's copy of the holding thread is not the owner (robust futexes go by
 * TID): it can neither release nor repair the parent's hold, and its attempts change nothing. */
static surelock_ipc *forked_handle;
static int child_tries_to_release_the_parents_hold(void *arg)
{
    (void)arg;
    CHILD_EXPECT_RC(surelock_ipc_needs_recovery(forked_handle), 0);
    CHILD_EXPECT_RC(surelock_ipc_consistent(forked_handle), EINVAL);
    CHILD_EXPECT_RC(surelock_ipc_unlock(forked_handle), EPERM);
    CHILD_EXPECT_RC(surelock_ipc_trylock(forked_handle), EBUSY);
    return 0;
}

static void a_forked_child_cannot_release_or_repair_its_parents_hold(void **state)
{
    (void)state;
    const char *path = P("forked");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    HOLDER_KILL(&h);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD); /* we hold it, needing recovery */
    forked_handle = m;
    EXPECT_CHILD_OK(spawn(child_tries_to_release_the_parents_hold, NULL));
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_NEEDED);
    assert_int_equal(file32(path, OFF_HOLDER_TID), (uint32_t)current_tid());
    EXPECT_RC(surelock_ipc_needs_recovery(m), 1);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* A recursive file re-entered through a second handle while the outer hold is recovering:
 * the inner acquisition is a plain re-entry (0), and releasing it neither ends nor spoils the
 * recovery; only the outermost release counts, as with a recursive pthread mutex. */
static void a_recursive_reentry_through_a_second_handle_does_not_disturb_recovery(void **state)
{
    (void)state;
    const char *path = P("recursive");
    surelock_ipc *outer = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    surelock_ipc *inner = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, SURELOCK_IPC_RECURSIVE, 0);
    HOLDER_KILL(&h);
    EXPECT_RC(surelock_ipc_lock(outer), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_lock(inner), 0);
    EXPECT_RC(surelock_ipc_needs_recovery(inner), 1); /* the thread holds it, recovering */
    EXPECT_RC(surelock_ipc_unlock(inner), 0);
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_NEEDED);
    EXPECT_RC(surelock_ipc_needs_recovery(outer), 1);
    EXPECT_RC(surelock_ipc_consistent(outer), 0);
    EXPECT_RC(surelock_ipc_unlock(outer), 0);
    EXPECT_RC(surelock_ipc_lock(inner), 0);
    EXPECT_RC(surelock_ipc_unlock(inner), 0);
    EXPECT_RC(surelock_ipc_close(inner), 0);
    EXPECT_RC(surelock_ipc_close(outer), 0);
}

/* =========================================================================================
 * Refusals: exact errno, precise errmsg, nothing modified
 * ========================================================================================= */

static void symlink_is_refused_with_eloop_and_nothing_is_followed_or_changed(void **state)
{
    (void)state;
    const char *target = P("target");
    const char *link = P("link");
    free(make_lock_file(target, 0, 0).data);
    assert_int_equal(symlink(target, link), 0);

    snapshot t = take_snapshot(target);
    surelock_ipc_options o = options(0, 0600, 0);
    EXPECT_REFUSED(link, &o, ELOOP, "symlink");
    EXPECT_REFUSED(link, NULL, ELOOP, "symlink");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_ANY_OWNER, 0666, 0);
    EXPECT_REFUSED(link, &o, ELOOP, "symlink");
    EXPECT_UNCHANGED(target, &t);

    /* A dangling symlink is not followed to create its target. */
    const char *nowhere = P("nowhere");
    const char *dangling = P("dangling");
    assert_int_equal(symlink(nowhere, dangling), 0);
    EXPECT_REFUSED(dangling, NULL, ELOOP, "symlink");
    struct stat st;
    assert_int_equal(lstat(nowhere, &st), -1);

    /* A symlink to a placeholder does not get it initialised. */
    touch(P("empty"), 0600);
    assert_int_equal(symlink(P("empty"), P("to-empty")), 0);
    EXPECT_REFUSED(P("to-empty"), NULL, ELOOP, "symlink");
    assert_int_equal(lstat(P("empty"), &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void file_owned_by_another_uid_is_eperm_unless_any_owner(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "not root: cannot give a file to another uid\n");
        skip();
    }
    const char *path = P("theirs");
    free(make_lock_file(path, 0, 0).data);
    if (chown(path, OTHER_UID, (gid_t)-1) != 0) {
        /* e.g. a user namespace where that uid is not mapped */
        fprintf(stderr, "cannot give a file to uid %d: %s\n", OTHER_UID, strerror(errno));
        skip();
    }

    surelock_ipc_options o = options(0, 0600, 0);
    char our_uid[16];
    snprintf(our_uid, sizeof our_uid, "%u", (unsigned)geteuid());
    EXPECT_REFUSED(path, &o, EPERM, "uid", "12345", our_uid);
    EXPECT_REFUSED(path, NULL, EPERM, "uid");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_REFUSED(path, &o, EPERM, "uid"); /* ownership is checked before anything else */

    /* An empty placeholder owned by someone else is not initialised either. */
    touch(P("their-placeholder"), 0600);
    assert_int_equal(chown(P("their-placeholder"), OTHER_UID, (gid_t)-1), 0);
    EXPECT_REFUSED(P("their-placeholder"), NULL, EPERM, "uid");

    /* SURELOCK_IPC_ANY_OWNER accepts it, and the lock works. */
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_ANY_OWNER, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_uid, OTHER_UID);

    /* ANY_OWNER does not lift the write-permission check. */
    assert_int_equal(chmod(path, 0660), 0);
    o = options(SURELOCK_IPC_ANY_OWNER, 0600, 0);
    EXPECT_REFUSED(path, &o, EPERM, "group");
    m = OPEN(path, SURELOCK_IPC_ANY_OWNER, 0660, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void group_or_world_writable_file_is_eperm_unless_mode_grants_it(void **state)
{
    (void)state;
    static const struct {
        mode_t file_mode;
        uint32_t asked;
        int want;
        const char *who;
    } cases[] = {
        {0620, 0600, EPERM, "group"},    {0602, 0600, EPERM, "everyone"},
        {0622, 0600, EPERM, NULL},       {0666, 0660, EPERM, "everyone"},
        {0666, 0606, EPERM, "group"},    {0620, 0640, EPERM, "group"},
        {0660, 0660, 0, NULL},           {0666, 0666, 0, NULL},
        {0620, 0620, 0, NULL},           {0602, 0606, 0, NULL},
        {0644, 0600, 0, NULL},           {0640, 0600, 0, NULL},
        {0600, 0666, 0, NULL}, /* mode only permits: a stricter file is fine */
    };
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(chmod(path, cases[i].file_mode), 0);
        surelock_ipc_options o = options(0, cases[i].asked, 0);
        if (cases[i].want == EPERM) {
            char mode_text[8];
            snprintf(mode_text, sizeof mode_text, "%o", (unsigned)cases[i].file_mode);
            EXPECT_REFUSED(path, &o, EPERM, mode_text, cases[i].who ? cases[i].who : "write");
        } else {
            surelock_ipc *m = SENTINEL;
            int rc = surelock_ipc_open(path, &o, &m);
            if (rc != 0)
                fail_msg("file 0%o, mode 0%o: open returned %s; errmsg \"%s\"",
                         (unsigned)cases[i].file_mode, cases[i].asked, errname(rc),
                         surelock_errmsg());
            EXPECT_RC(surelock_ipc_lock(m), 0);
            EXPECT_RC(surelock_ipc_unlock(m), 0);
            EXPECT_RC(surelock_ipc_close(m), 0);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(st.st_mode & 07777, cases[i].file_mode); /* never chmod'ed */
        }
    }
    /* An empty placeholder that others may write is not initialised. */
    touch(P("open-placeholder"), 0666);
    EXPECT_REFUSED(P("open-placeholder"), NULL, EPERM, "everyone");
}

static void directories_fifos_sockets_and_devices_are_eproto(void **state)
{
    (void)state;
    surelock_ipc_options plain = options(0, 0600, 0);
    surelock_ipc_options nocreate = options(SURELOCK_IPC_NOCREATE, 0600, 0);

    const char *dir = P("dir");
    assert_int_equal(mkdir(dir, 0700), 0);
    EXPECT_REFUSED(dir, &plain, EPROTO, "directory");
    EXPECT_REFUSED(dir, &nocreate, EPROTO, "directory");

    /* A FIFO with no writer: opening must neither block nor succeed. */
    const char *fifo = P("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    EXPECT_REFUSED(fifo, &plain, EPROTO, "regular");
    EXPECT_REFUSED(fifo, &nocreate, EPROTO, "regular");

    const char *sock = P("sock");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock);
    assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof addr), 0);
    EXPECT_REFUSED(sock, &plain, EPROTO, "regular");
    close(s);

    /* A /dev/null-like character device: made here when we may, else the real one. */
    const char *dev = P("null");
    if (mknod(dev, S_IFCHR | 0600, makedev(1, 3)) != 0) dev = "/dev/null";
    EXPECT_REFUSED(dev, &plain, EPROTO, "regular");
    EXPECT_REFUSED(dev, &nocreate, EPROTO, "regular");
}

static void short_truncated_or_padded_files_are_eproto(void **state)
{
    (void)state;
    bytes valid = make_lock_file(P("model"), 0, 100); /* 4096 + one page */
    assert_int_equal(valid.len, file_size_for(100));
    const size_t cuts[] = {1, 8, 100, HEADER_SIZE / 2, HEADER_SIZE - 1, HEADER_SIZE,
                           valid.len - 1};
    const char *path = P("cut");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(path, valid.data, cuts[i], 0600);
        EXPECT_REFUSED(path, NULL, EPROTO, NULL);
        surelock_ipc_options o = options(0, 0600, 100);
        EXPECT_REFUSED(path, &o, EPROTO, NULL);
    }
    /* Too long by one byte. */
    unsigned char *longer = calloc(1, valid.len + 1);
    assert_non_null(longer);
    memcpy(longer, valid.data, valid.len);
    spit(path, longer, valid.len + 1, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "bytes");
    free(longer);

    /* Short files of zeros are not placeholders: only an empty file is. */
    unsigned char zeros[HEADER_SIZE] = {0};
    spit(path, zeros, 100, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "short");
    spit(path, zeros, 1, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "short");

    /* A header that says "no payload" in a file with a payload page. */
    bytes b = make_lock_file(P("model0"), 0, 0);
    unsigned char *padded = calloc(1, b.len + page_size());
    assert_non_null(padded);
    memcpy(padded, b.data, b.len);
    spit(path, padded, b.len + page_size(), 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "payload");
    free(padded);
    free(b.data);
    free(valid.data);
}

static void headers_of_another_format_abi_libc_or_pid_namespace_are_eproto(void **state)
{
    (void)state;
    bytes valid = make_lock_file(P("model"), 0, 0);
    const char *path = P("foreign");
    enum { MAGIC, VERSION, VERSION0, POINTER, MUTEX_SIZE, MUTEX_ALIGN, HEADER, LIBC, LIBC_EMPTY,
           PID_NS, FLAGS, RECOVERY, PAYLOAD, N_CASES };
    static const char *const words[N_CASES] = {
        "magic", "version", "version", "pointer", "pthread_mutex_t", "pthread_mutex_t",
        "header size", "libc", "libc", "namespace", "flags", "recovery", "payload"};
    for (int c = 0; c < N_CASES; c++) {
        bytes b = {malloc(valid.len), valid.len};
        assert_non_null(b.data);
        memcpy(b.data, valid.data, valid.len);
        switch (c) {
        case MAGIC: b.data[OFF_MAGIC] = 's'; break;
        case VERSION: put32(&b, OFF_FORMAT_VERSION, 2); break;
        case VERSION0: put32(&b, OFF_FORMAT_VERSION, 0); break;
        case POINTER: put16(&b, OFF_POINTER_SIZE, 4); break; /* a 32-bit process */
        case MUTEX_SIZE: put16(&b, OFF_MUTEX_SIZE, 24); break; /* i386's pthread_mutex_t */
        case MUTEX_ALIGN: put16(&b, OFF_MUTEX_ALIGN, 4); break;
        case HEADER: put16(&b, OFF_HEADER_SIZE, 8192); break;
        case LIBC: memcpy(b.data + OFF_LIBC, "musl\0\0\0\0\0\0\0\0\0\0\0\0", 16); break;
        case LIBC_EMPTY: memset(b.data + OFF_LIBC, 0, 16); break;
        case PID_NS: put64(&b, OFF_PID_NAMESPACE, get64(&b, OFF_PID_NAMESPACE) + 1); break;
        case FLAGS: put32(&b, OFF_FLAGS, 0x100); break;
        case RECOVERY: put32(&b, OFF_RECOVERY_STATE, 7); break;
        case PAYLOAD: put64(&b, OFF_PAYLOAD_SIZE, page_size()); break;
        }
        spit(path, b.data, b.len, 0600);
        free(b.data);
        surelock_ipc_options plain = options(0, 0600, 0);
        surelock_ipc_options any = options(SURELOCK_IPC_ANY_OWNER | SURELOCK_IPC_NOCREATE, 0666, 0);
        EXPECT_REFUSED(path, &plain, EPROTO, words[c]);
        EXPECT_REFUSED(path, &any, EPROTO, words[c]);
    }
    free(valid.data);
}

static void payload_size_differing_from_the_files_is_einval(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 64).data);
    surelock_ipc_options o = options(0, 0600, 128);
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size", "128", "64");
    o = options(0, 0600, 1);
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size");
    o = options(0, 0600, page_size()); /* same file size, other payload size */
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size");

    /* 0 = as existing, and the exact size, both open it. */
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    size_t size = 0;
    assert_non_null(surelock_ipc_payload(m, &size));
    assert_int_equal(size, 64);
    EXPECT_RC(surelock_ipc_close(m), 0);
    m = OPEN(path, 0, 0600, 64);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void recursive_is_fixed_at_creation(void **state)
{
    (void)state;
    const char *plain = P("plain");
    free(make_lock_file(plain, 0, 0).data);
    surelock_ipc_options o = options(SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_REFUSED(plain, &o, EINVAL, "RECURSIVE");
    o = options(SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_REFUSED(plain, &o, EINVAL, "RECURSIVE");

    /* A recursive file records the flag, and opening it without the flag keeps it recursive. */
    const char *rec = P("recursive");
    bytes b = make_lock_file(rec, SURELOCK_IPC_RECURSIVE, 0);
    assert_int_equal(get32(&b, OFF_FLAGS), SURELOCK_IPC_RECURSIVE);
    free(b.data);
    surelock_ipc *m = OPEN(rec, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    m = OPEN(rec, SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* A process that cannot reach the file gets the system's own error from open. */
static struct access_child {
    const char *path;
} access_child;

static int access_child_main(void *p)
{
    struct access_child *a = p;
    if (setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0) return 77; /* cannot drop to it */
    surelock_ipc *m = SENTINEL;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), EACCES);
    CHILD_CHECK(m == SENTINEL);
    CHILD_CHECK(strstr(surelock_errmsg(), a->path) != NULL);
    return 0;
}

static void system_errors_from_open_are_passed_through(void **state)
{
    (void)state;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("no-such-dir/lock"), NULL, &m), ENOENT);
    assert_ptr_equal(m, SENTINEL);
    EXPECT_ERRMSG("no-such-dir");

    touch(P("file"), 0600);
    EXPECT_RC(surelock_ipc_open(P("file/lock"), NULL, &m), ENOTDIR);
    assert_ptr_equal(m, SENTINEL);

    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    EXPECT_RC(surelock_ipc_open(P(longname), NULL, &m), ENAMETOOLONG);

    if (geteuid() == 0) {
        /* A file in a directory only root may enter, opened by another uid: EACCES. */
        const char *locked_dir = P("private");
        assert_int_equal(mkdir(locked_dir, 0700), 0);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/lock", locked_dir);
        free(make_lock_file(path, 0, 0).data);
        access_child.path = path;
        pid_t pid = spawn(access_child_main, &access_child);
        int status = child_reap_at(__LINE__, pid, WAIT_LIMIT_MS);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
            fprintf(stderr, "cannot switch to uid %d: EACCES not checked\n", OTHER_UID);
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("the child under uid %d failed (wait status 0x%x)", OTHER_UID, status);
    }
}

/* =========================================================================================
 * Locking semantics within one process
 * ========================================================================================= */

static struct probe {
    surelock_ipc *m;
    int trylock_rc;
    int unlock_rc;
    int close_rc;
    int consistent_rc;
    int needs_recovery;
    pid_t tid;
} probe;

static void probe_trylock_body(void *arg)
{
    (void)arg;
    probe.trylock_rc = surelock_ipc_trylock(probe.m);
    if (probe.trylock_rc == 0) surelock_ipc_unlock(probe.m);
}

static void relock_by_the_holder_is_edeadlk_for_every_acquire_form(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    surelock_ipc *second = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    surelock_ipc *handles[] = {m, second};
    for (int i = 0; i < 2; i++) {
        EXPECT_RC(surelock_ipc_lock(handles[i]), EDEADLK);
        EXPECT_ERRMSG("already holds");
        EXPECT_RC(surelock_ipc_trylock(handles[i]), EDEADLK);
        EXPECT_RC(surelock_ipc_timedlock(handles[i], 0), EDEADLK);
        EXPECT_RC(surelock_ipc_timedlock(handles[i], 10 * MS), EDEADLK);
        EXPECT_RC(surelock_ipc_timedlock(handles[i], SURELOCK_FOREVER), EDEADLK);
    }
    /* Still held, once: another thread, through either handle, cannot take it. */
    helper t;
    probe.m = second;
    RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
    EXPECT_RC(probe.trylock_rc, EBUSY);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM);
    RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
    EXPECT_RC(probe.trylock_rc, 0);
    EXPECT_RC(surelock_ipc_close(second), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void recursive_file_reenters_and_needs_matching_unlocks(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_timedlock(m, 0), 0);
    EXPECT_RC(surelock_ipc_timedlock(m, 100 * MS), 0);
    EXPECT_RC(surelock_ipc_timedlock(m, SURELOCK_FOREVER), 0); /* depth 5 */
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_close(m), EBUSY);
    helper t;
    probe.m = m;
    for (int i = 0; i < 4; i++) {
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
        EXPECT_RC(probe.trylock_rc, EBUSY); /* still held: one level remains */
    }
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(file32(path, OFF_HOLDER_TID), 0);
    RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
    EXPECT_RC(probe.trylock_rc, 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM); /* one unlock too many */
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* Provoking EAGAIN needs a recursion count at its limit. Counting to UINT_MAX takes too
 * long, so the test sets glibc's own counter in the mutex inside the file (at offset 192, as
 * documented) while the lock is held once, and puts it back before unlocking. */
static void recursion_count_overflow_is_eagain_and_leaves_the_hold_intact(void **state)
{
    (void)state;
#if defined(__GLIBC__)
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char *map = mmap(NULL, HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(map != MAP_FAILED);
    pthread_mutex_t *mutex = (pthread_mutex_t *)(void *)(map + OFF_MUTEX);

    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal(mutex->__data.__count, 1);
    mutex->__data.__count = UINT_MAX;
    EXPECT_RC(surelock_ipc_lock(m), EAGAIN);
    EXPECT_ERRMSG("overflow");
    EXPECT_RC(surelock_ipc_trylock(m), EAGAIN);
    EXPECT_RC(surelock_ipc_timedlock(m, 10 * MS), EAGAIN);
    assert_int_equal(mutex->__data.__count, UINT_MAX);
    mutex->__data.__count = 1;
    helper t;
    probe.m = m;
    RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
    EXPECT_RC(probe.trylock_rc, EBUSY); /* still held */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    RUN_IN_NEW_THREAD(&t, probe_trylock_body, NULL);
    EXPECT_RC(probe.trylock_rc, 0);
    munmap(map, HEADER_SIZE);
    EXPECT_RC(surelock_ipc_close(m), 0);
#else
    skip();
#endif
}

static void non_holder_unlock_body(void *arg)
{
    (void)arg;
    probe.unlock_rc = surelock_ipc_unlock(probe.m);
    probe.trylock_rc = surelock_ipc_trylock(probe.m);
    probe.close_rc = surelock_ipc_close(probe.m);
}

static struct unlock_child {
    const char *path;
} unlock_child;

static int unlock_child_main(void *p)
{
    struct unlock_child *a = p;
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), 0);
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), EPERM);
    CHILD_EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void unlock_by_a_thread_or_process_that_does_not_hold_it_is_eperm(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM); /* nobody holds it */
    EXPECT_ERRMSG("does not hold");

    EXPECT_RC(surelock_ipc_lock(m), 0);
    helper t;
    probe.m = m;
    RUN_IN_NEW_THREAD(&t, non_holder_unlock_body, NULL);
    EXPECT_RC(probe.unlock_rc, EPERM);
    EXPECT_RC(probe.trylock_rc, EBUSY);
    EXPECT_RC(probe.close_rc, EBUSY); /* a thread holds it through this handle */
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());

    unlock_child.path = path;
    EXPECT_CHILD_OK(spawn(unlock_child_main, &unlock_child));
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());

    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void close_body(void *arg)
{
    (void)arg;
    probe.close_rc = surelock_ipc_close(probe.m);
}

static void close_while_held_is_ebusy_and_works_after_unlock(void **state)
{
    (void)state;
    surelock_ipc *m = OPEN(P("lock"), 0, 0600, 16);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), EBUSY);
    EXPECT_ERRMSG("holds");
    helper t;
    probe.m = m;
    RUN_IN_NEW_THREAD(&t, close_body, NULL);
    EXPECT_RC(probe.close_rc, EBUSY);
    /* The handle is intact: its payload is still mapped and the lock still works. */
    unsigned char *payload = surelock_ipc_payload(m, NULL);
    assert_non_null(payload);
    payload[15] = 7;
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* glibc's robust list points into the mapping a mutex was locked through, so no handle of a
 * file may be unmapped while a thread of this process holds it: closing another handle is
 * EBUSY too (for a recursive file re-entered through a second handle, unmapping the first
 * would leave the robust list pointing at nothing). */
static void close_of_any_handle_is_ebusy_while_this_process_holds_the_lock(void **state)
{
    (void)state;
    surelock_ipc *a = OPEN(P("lock"), SURELOCK_IPC_RECURSIVE, 0600, 0);
    surelock_ipc *b = OPEN(P("lock"), SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(a), 0);
    EXPECT_RC(surelock_ipc_lock(b), 0);
    EXPECT_RC(surelock_ipc_unlock(a), 0); /* still held, through b */
    EXPECT_RC(surelock_ipc_close(a), EBUSY);
    EXPECT_ERRMSG("holds");
    EXPECT_RC(surelock_ipc_unlock(b), 0);
    EXPECT_RC(surelock_ipc_close(a), 0);
    surelock_ipc *c = OPEN(P("lock"), SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(c), 0); /* the robust list is intact */
    EXPECT_RC(surelock_ipc_unlock(c), 0);
    EXPECT_RC(surelock_ipc_close(c), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
}

/* A fork child inherits a handle its parent held; once the parent lets go, the child takes
 * the lock as a fresh acquisition (not a re-entry of the parent's hold) and can release it. */
static surelock_ipc *inherited_handle;
static int child_waits_then_locks(void *arg)
{
    int go = (int)(intptr_t)arg;
    CHILD_CHECK(recv_byte(go, (CHILD_ALARM_S - 5) * 1000u)); /* the parent has unlocked */
    surelock_ipc *m = inherited_handle;
    CHILD_EXPECT_RC(surelock_ipc_lock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void a_fork_child_takes_an_inherited_handle_afresh_once_the_parent_releases(void **state)
{
    (void)state;
    surelock_ipc *m = OPEN(P("lock"), 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    int go[2];
    make_pipe(go);
    inherited_handle = m;
    pid_t child = spawn(child_waits_then_locks, (void *)(intptr_t)go[0]);
    close(go[0]);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_true(send_byte(go[1]));
    close(go[1]);
    EXPECT_CHILD_OK(child);
    EXPECT_RC(surelock_ipc_timedlock(m, 5000 * MS), 0); /* the child let it go */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* Creating the file is a success like any other: errmsg is not touched. */
static void a_successful_open_that_creates_the_file_leaves_errmsg_alone(void **state)
{
    (void)state;
    EXPECT_RC(surelock_ipc_close(NULL), EINVAL);
    char before[256];
    snprintf(before, sizeof before, "%s", surelock_errmsg());
    surelock_ipc *m = OPEN(P("fresh"), 0, 0600, 0);
    assert_string_equal(surelock_errmsg(), before);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void consistent_when_no_recovery_is_needed_is_einval(void **state)
{
    (void)state;
    surelock_ipc *m = OPEN(P("lock"), 0, 0600, 0);
    EXPECT_RC(surelock_ipc_consistent(m), EINVAL); /* not held */
    EXPECT_ERRMSG("consistent");
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_consistent(m), EINVAL); /* held, nothing to recover */
    EXPECT_ERRMSG("recovery");
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void lock_file_unlinked_while_open_keeps_working_for_its_handles(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 8);
    EXPECT_RC(surelock_ipc_unlink(path), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), -1);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    *(volatile unsigned char *)surelock_ipc_payload(m, NULL) = 1;
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * Timeouts, against a holder in another process
 * ========================================================================================= */

static void trylock_and_timedlock_zero_never_block_while_another_process_holds_it(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), h.pid); /* its only thread */

    uint64_t t0 = now_ns();
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    EXPECT_ERRMSG("held");
    uint64_t t1 = now_ns();
    EXPECT_RC(surelock_ipc_timedlock(m, 0), ETIMEDOUT);
    uint64_t t2 = now_ns();
    EXPECT_RC(surelock_ipc_timedlock(m, 1), ETIMEDOUT); /* 1 ns */
    assert_true(t1 - t0 < NONBLOCKING_CEILING_NS);
    assert_true(t2 - t1 < NONBLOCKING_CEILING_NS);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM);

    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_timedlock(m, 0), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void timedlock_waits_at_least_its_timeout_on_the_monotonic_clock(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    const uint64_t timeouts[] = {100 * MS, 20 * MS, 250 * MS};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        uint64_t t0 = now_ns();
        EXPECT_RC(surelock_ipc_timedlock(m, timeouts[i]), ETIMEDOUT);
        uint64_t took = now_ns() - t0;
        if (took < timeouts[i])
            fail_msg("timedlock(%llu ms) returned after only %llu us",
                     (unsigned long long)(timeouts[i] / MS), (unsigned long long)(took / 1000));
        if (took > TIMED_WAIT_CEILING_NS)
            fail_msg("timedlock(%llu ms) returned after %llu ms",
                     (unsigned long long)(timeouts[i] / MS), (unsigned long long)(took / MS));
        EXPECT_ERRMSG("held");
    }
    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_timedlock(m, 100 * MS), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void timedlock_gets_the_lock_when_the_holder_process_releases_it_in_time(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    /* A timeout long enough that only a release can end the wait, one whose deadline would
     * overflow (forever), and forever itself. */
    const uint64_t timeouts[] = {30000 * MS, UINT64_MAX - 1, SURELOCK_FOREVER};
    for (size_t i = 0; i < 3; i++) {
        holder_proc h;
        HOLDER_START(&h, path, 0, 50); /* unlocks 50 ms after being told to */
        if (!send_byte(h.release_w)) fail_msg("cannot signal the holder");
        uint64_t t0 = now_ns();
        EXPECT_RC(surelock_ipc_timedlock(m, timeouts[i]), 0);
        assert_true(now_ns() - t0 < TIMED_WAIT_CEILING_NS);
        assert_int_equal(surelock_ipc_needs_recovery(m), 0);
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        child_expect_ok_at(__LINE__, h.pid, WAIT_LIMIT_MS);
        holder_close_fds(&h);
    }
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * Owner death and recovery
 * ========================================================================================= */

static void needs_recovery_probe_body(void *arg)
{
    (void)arg;
    probe.needs_recovery = surelock_ipc_needs_recovery(probe.m);
    probe.consistent_rc = surelock_ipc_consistent(probe.m);
    probe.unlock_rc = surelock_ipc_unlock(probe.m);
}

static struct after_child {
    const char *path;
    int expect_first; /* what its first lock must return */
} after_child;

/* Opens the lock in a new process, takes it (recovering if told it must), releases it. */
static int after_child_main(void *p)
{
    struct after_child *a = p;
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), 0);
    CHILD_EXPECT_RC(surelock_ipc_lock(m), a->expect_first);
    if (a->expect_first == EOWNERDEAD) {
        CHILD_CHECK(surelock_ipc_needs_recovery(m) == 1);
        CHILD_EXPECT_RC(surelock_ipc_consistent(m), 0);
    }
    if (a->expect_first == 0 || a->expect_first == EOWNERDEAD) {
        CHILD_CHECK(surelock_ipc_needs_recovery(m) == 0);
        CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    } else {
        CHILD_EXPECT_RC(surelock_ipc_unlock(m), EPERM);
        CHILD_EXPECT_RC(surelock_ipc_trylock(m), a->expect_first);
        CHILD_EXPECT_RC(surelock_ipc_timedlock(m, 10 * MS), a->expect_first);
    }
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

/* A process that opens path and finds trylock returns `want` (and releases if it got it). */
static int try_child_main(void *p)
{
    struct after_child *a = p;
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), 0);
    CHILD_EXPECT_RC(surelock_ipc_trylock(m), a->expect_first);
    if (a->expect_first == 0) CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}
#define EXPECT_IN_ANOTHER_PROCESS_TRY(path_, want)                                             \
    do {                                                                                       \
        after_child = (struct after_child){(path_), (want)};                                   \
        EXPECT_CHILD_OK(spawn(try_child_main, &after_child));                                  \
    } while (0)

#define EXPECT_IN_ANOTHER_PROCESS(path_, first)                                                \
    do {                                                                                       \
        after_child = (struct after_child){(path_), (first)};                                  \
        EXPECT_CHILD_OK(spawn(after_child_main, &after_child));                                \
    } while (0)

static void holder_process_killed_is_eownerdead_then_consistent_recovers_it(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY); /* leaves an errmsg to compare with below */
    char before[256];
    snprintf(before, sizeof before, "%s", surelock_errmsg());
    HOLDER_KILL(&h);

    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    assert_string_equal(surelock_errmsg(), before); /* EOWNERDEAD is not a failure */
    assert_int_equal(surelock_ipc_needs_recovery(m), 1);
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_NEEDED);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 1);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());

    /* Only the holder needs recovery, and only it may declare the state consistent. */
    helper t;
    probe.m = m;
    RUN_IN_NEW_THREAD(&t, needs_recovery_probe_body, NULL);
    assert_int_equal(probe.needs_recovery, 0);
    EXPECT_RC(probe.consistent_rc, EINVAL);
    EXPECT_RC(probe.unlock_rc, EPERM);
    assert_int_equal(surelock_ipc_needs_recovery(m), 1);

    EXPECT_RC(surelock_ipc_consistent(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    EXPECT_RC(surelock_ipc_consistent(m), EINVAL); /* once is enough */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);

    /* Normal use from here on, here and in other processes. */
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_IN_ANOTHER_PROCESS(path, 0);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 1);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void eownerdead_is_reported_by_trylock_and_timedlock_too(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    for (int form = 0; form < 3; form++) {
        holder_proc h;
        HOLDER_START(&h, path, 0, 0);
        HOLDER_KILL(&h);
        int rc = form == 0   ? surelock_ipc_trylock(m)
                 : form == 1 ? surelock_ipc_timedlock(m, 0)
                             : surelock_ipc_timedlock(m, 1000 * MS);
        EXPECT_RC(rc, EOWNERDEAD);
        assert_int_equal(surelock_ipc_needs_recovery(m), 1);
        EXPECT_RC(surelock_ipc_consistent(m), 0);
        EXPECT_RC(surelock_ipc_unlock(m), 0);
    }
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 3);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static struct blocked {
    surelock_ipc *m;
    pid_t tid;
    int ready_w;
    int lock_rc;
    int needs_recovery;
    int consistent_rc;
    int unlock_rc;
} blocked;

static void blocked_waiter_body(void *arg)
{
    (void)arg;
    blocked.tid = current_tid();
    send_byte(blocked.ready_w);
    blocked.lock_rc = surelock_ipc_lock(blocked.m);
    blocked.needs_recovery = surelock_ipc_needs_recovery(blocked.m);
    if (blocked.lock_rc == EOWNERDEAD) blocked.consistent_rc = surelock_ipc_consistent(blocked.m);
    if (blocked.lock_rc == 0 || blocked.lock_rc == EOWNERDEAD)
        blocked.unlock_rc = surelock_ipc_unlock(blocked.m);
}

static void waiter_blocked_in_lock_gets_eownerdead_when_the_holder_process_is_killed(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    int ready[2];
    make_pipe(ready);
    blocked = (struct blocked){.m = m, .ready_w = ready[1], .lock_rc = -1};
    helper t;
    helper_start(&t, blocked_waiter_body, NULL);
    if (!recv_byte(ready[0], WAIT_LIMIT_MS)) fail_msg("the waiter thread did not start");
    wait_until_asleep(blocked.tid, 5000);
    HOLDER_KILL(&h);
    JOIN(&t);
    close(ready[0]);
    close(ready[1]);
    EXPECT_RC(blocked.lock_rc, EOWNERDEAD);
    assert_int_equal(blocked.needs_recovery, 1);
    EXPECT_RC(blocked.consistent_rc, 0);
    EXPECT_RC(blocked.unlock_rc, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void lock_and_exit_body(void *arg)
{
    probe.tid = current_tid();
    probe.trylock_rc = surelock_ipc_lock((surelock_ipc *)arg);
}

static void owner_thread_exit_while_holding_is_eownerdead_for_the_next_acquirer(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    helper t;
    RUN_IN_NEW_THREAD(&t, lock_and_exit_body, m); /* the thread ends holding the lock */
    EXPECT_RC(probe.trylock_rc, 0);

    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    assert_int_equal(surelock_ipc_needs_recovery(m), 1);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);

    /* The same through a second handle, and with trylock. */
    surelock_ipc *second = OPEN(path, 0, 0600, 0);
    RUN_IN_NEW_THREAD(&t, lock_and_exit_body, m);
    EXPECT_RC(probe.trylock_rc, 0);
    EXPECT_RC(surelock_ipc_trylock(second), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(second), 0);
    EXPECT_RC(surelock_ipc_unlock(second), 0);
    assert_int_equal(file64(path, OFF_OWNER_DEATHS), 2);
    EXPECT_RC(surelock_ipc_close(second), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void handle_whose_holder_thread_exited_can_be_closed_and_others_see_the_death(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    helper t;
    RUN_IN_NEW_THREAD(&t, lock_and_exit_body, m);
    EXPECT_RC(probe.trylock_rc, 0);
    EXPECT_RC(surelock_ipc_close(m), 0); /* its holder is gone: nothing holds it any more */
    EXPECT_IN_ANOTHER_PROCESS(path, EOWNERDEAD);
    EXPECT_IN_ANOTHER_PROCESS(path, 0);
}

/* A process that opens its own handle to the lock when told to, and keeps it open until told
 * to close it. It is forked before the parent opens anything, so it inherits no descriptor of
 * the parent's handles: only its own open counts as "another process has it open". */
static struct keeper_args {
    const char *path;
    int go_r;
    int ready_w;
    int release_r;
} keeper_args;

static int keeper_main(void *p)
{
    struct keeper_args *a = p;
    CHILD_CHECK(recv_byte(a->go_r, (CHILD_ALARM_S - 5) * 1000u));
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), 0);
    CHILD_EXPECT_RC(surelock_ipc_trylock(m), ENOTRECOVERABLE);
    CHILD_CHECK(send_byte(a->ready_w));
    CHILD_CHECK(recv_byte(a->release_r, (CHILD_ALARM_S - 5) * 1000u));
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void unlock_without_consistent_makes_it_not_recoverable_for_every_process(void **state)
{
    (void)state;
    const char *path = P("lock");
    int go[2], ready[2], release[2];
    make_pipe(go);
    make_pipe(ready);
    make_pipe(release);
    keeper_args = (struct keeper_args){path, go[0], ready[1], release[0]};
    pid_t keeper = spawn(keeper_main, &keeper_args);
    close(go[0]);
    close(ready[1]);
    close(release[0]);
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    HOLDER_KILL(&h);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_unlock(m), 0); /* no consistent */
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_NOT_RECOVERABLE);

    EXPECT_RC(surelock_ipc_lock(m), ENOTRECOVERABLE);
    EXPECT_ERRMSG("consistent");
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM); /* ENOTRECOVERABLE holds nothing */
    EXPECT_RC(surelock_ipc_consistent(m), EINVAL);
    EXPECT_RC(surelock_ipc_trylock(m), ENOTRECOVERABLE);
    EXPECT_RC(surelock_ipc_timedlock(m, 0), ENOTRECOVERABLE);
    EXPECT_RC(surelock_ipc_timedlock(m, 50 * MS), ENOTRECOVERABLE);

    /* Another handle opened while this one is open: still not recoverable. */
    surelock_ipc *second = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(second), ENOTRECOVERABLE);
    /* Another process, too. */
    EXPECT_IN_ANOTHER_PROCESS(path, ENOTRECOVERABLE);

    /* While another process has it open, closing ours and reopening does not reset it. */
    if (!send_byte(go[1])) fail_msg("cannot signal the keeper");
    if (!recv_byte(ready[0], WAIT_LIMIT_MS)) {
        child_expect_ok_at(__LINE__, keeper, WAIT_LIMIT_MS);
        fail_msg("the keeper process did not open the lock");
    }
    EXPECT_RC(surelock_ipc_close(second), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), ENOTRECOVERABLE);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Once no handle anywhere has it open, the next open starts it over. */
    if (!send_byte(release[1])) fail_msg("cannot signal the keeper");
    EXPECT_CHILD_OK(keeper);
    close(go[1]);
    close(ready[0]);
    close(release[1]);
    m = OPEN(path, 0, 0600, 0);
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_IN_ANOTHER_PROCESS(path, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * Payload and processes
 * ========================================================================================= */

static struct payload_child {
    const char *path;
    size_t open_with;
    size_t expect_size;
    char expect[64];
    char write[64];
} payload_child;

static int payload_child_main(void *p)
{
    struct payload_child *a = p;
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, a->open_with);
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, &o, &m), 0);
    size_t size = 0;
    char *payload = surelock_ipc_payload(m, &size);
    CHILD_CHECK(payload != NULL);
    CHILD_CHECK(size == a->expect_size);
    CHILD_EXPECT_RC(surelock_ipc_lock(m), 0);
    CHILD_CHECK(memcmp(payload, a->expect, sizeof a->expect) == 0);
    memcpy(payload, a->write, sizeof a->write);
    payload[size - 1] = 'E'; /* the last byte is writable too */
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void payload_is_shared_between_processes(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 100);
    size_t size = 0;
    char *payload = surelock_ipc_payload(m, &size);
    assert_non_null(payload);
    assert_int_equal(size, 100);
    assert_ptr_equal(surelock_ipc_payload(m, NULL), payload);

    /* The child writes; the parent reads. */
    memset(&payload_child, 0, sizeof payload_child);
    payload_child.path = path;
    payload_child.open_with = 0; /* as existing */
    payload_child.expect_size = 100;
    snprintf(payload_child.write, sizeof payload_child.write, "written by the child");
    EXPECT_CHILD_OK(spawn(payload_child_main, &payload_child));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_string_equal(payload, "written by the child");
    assert_int_equal(payload[99], 'E');
    /* The parent writes; a child that names the exact size reads it. */
    memset(payload, 0, 64);
    snprintf(payload, 64, "written by the parent");
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    memset(&payload_child, 0, sizeof payload_child);
    payload_child.path = path;
    payload_child.open_with = 100;
    payload_child.expect_size = 100;
    snprintf(payload_child.expect, sizeof payload_child.expect, "written by the parent");
    snprintf(payload_child.write, sizeof payload_child.write, "second child");
    EXPECT_CHILD_OK(spawn(payload_child_main, &payload_child));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_string_equal(payload, "second child");
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* The file size is the header plus the payload rounded up to pages. */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, file_size_for(100));
    m = OPEN(P("big"), 0, 0600, page_size() + 1);
    assert_int_equal(stat(P("big"), &st), 0);
    assert_int_equal(st.st_size, HEADER_SIZE + 2 * page_size());
    payload = surelock_ipc_payload(m, &size);
    assert_int_equal(size, page_size() + 1);
    payload[page_size()] = 1;
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* 8 processes race to open one fresh path and count in its payload to an exact total. */
#define RACERS 8
#define INCREMENTS 2000

static struct race {
    const char *path;
    int gate_r;  /* read end: EOF when the parent closes the write end = start */
    int gate_w;  /* closed by every child */
    int ready_w; /* each child writes one byte when it is at the gate */
} race;

static int racer_main(void *p)
{
    struct race *r = p;
    close(r->gate_w);
    CHILD_CHECK(send_byte(r->ready_w));
    char c;
    ssize_t n;
    while ((n = read(r->gate_r, &c, 1)) < 0 && errno == EINTR) {
    }
    CHILD_CHECK(n == 0); /* the gate opened (EOF) */
    surelock_ipc_options o = options(0, 0600, sizeof(uint64_t));
    surelock_ipc *m = NULL;
    CHILD_EXPECT_RC(surelock_ipc_open(r->path, &o, &m), 0);
    size_t size = 0;
    volatile uint64_t *counter = surelock_ipc_payload(m, &size);
    CHILD_CHECK(counter != NULL);
    CHILD_CHECK(size == sizeof(uint64_t));
    for (int i = 0; i < INCREMENTS; i++) {
        int rc;
        switch (i % 3) {
        case 0: rc = surelock_ipc_lock(m); break;
        case 1: rc = surelock_ipc_timedlock(m, 30000 * MS); break;
        default:
            rc = surelock_ipc_trylock(m);
            if (rc == EBUSY) rc = surelock_ipc_lock(m);
            break;
        }
        CHILD_EXPECT_RC(rc, 0);
        uint64_t v = *counter; /* a plain read-modify-write: only the lock keeps it exact */
        if (i % 64 == 0) sched_yield();
        *counter = v + 1;
        CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    }
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void run_race(const char *path)
{
    int gate[2], ready[2];
    make_pipe(gate);
    make_pipe(ready);
    race = (struct race){path, gate[0], gate[1], ready[1]};
    pid_t pids[RACERS];
    for (int i = 0; i < RACERS; i++) pids[i] = spawn(racer_main, &race);
    close(ready[1]);
    close(gate[0]);
    int at_gate = 0;
    while (at_gate < RACERS && recv_byte(ready[0], WAIT_LIMIT_MS)) at_gate++;
    close(gate[1]); /* everyone goes at once */
    close(ready[0]);
    if (at_gate < RACERS) fail_msg("only %d of %d racers reached the gate", at_gate, RACERS);
    for (int i = 0; i < RACERS; i++) child_expect_ok_at(__LINE__, pids[i], RACE_LIMIT_MS);

    surelock_ipc *m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    size_t size = 0;
    uint64_t *counter = surelock_ipc_payload(m, &size);
    assert_non_null(counter);
    assert_int_equal(size, sizeof(uint64_t));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    if (*counter != (uint64_t)RACERS * INCREMENTS)
        fail_msg("the shared counter is %llu, expected %d: some processes used another file or "
                 "the lock let two in",
                 (unsigned long long)*counter, RACERS * INCREMENTS);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    /* Exactly one file, nothing left behind in the directory. */
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
    closedir(d);
    assert_int_equal(entries, 1);
}

static void eight_processes_racing_to_create_a_fresh_path_count_to_an_exact_total(void **state)
{
    (void)state;
    run_race(P("fresh"));
}

static void eight_processes_racing_on_an_empty_placeholder_count_to_an_exact_total(void **state)
{
    (void)state;
    touch(P("placeholder"), 0600);
    run_race(P("placeholder"));
}

/* =========================================================================================
 * A file from before a reboot
 * ========================================================================================= */

static void stale_boot_id_is_reinitialised_and_the_lock_is_usable(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    char boot_id[40];
    this_boot_id(boot_id);

    /* A snapshot of the file while another process holds it: its mutex names a live holder.
     * Written back under another boot id, that holder "belongs to the previous boot". */
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    bytes held = slurp(path);
    assert_int_equal((int32_t)get32(&held, OFF_HOLDER_TID), h.pid);
    const uint32_t states[] = {RECOVERY_CONSISTENT, RECOVERY_NEEDED, RECOVERY_NOT_RECOVERABLE};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "stale-%d", i);
        const char *stale = P(name);
        bytes b = {malloc(held.len), held.len};
        assert_non_null(b.data);
        memcpy(b.data, held.data, held.len);
        memset(b.data + OFF_BOOT_ID, 0, 40);
        memcpy(b.data + OFF_BOOT_ID, "00000000-0000-4000-8000-000000000000", 36);
        put32(&b, OFF_RECOVERY_STATE, states[i]);
        put64(&b, OFF_OWNER_DEATHS, 5);
        spit(stale, b.data, b.len, 0600);
        free(b.data);

        surelock_ipc *m = OPEN(stale, 0, 0600, 0);
        bytes now = slurp(stale);
        assert_memory_equal(now.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
        assert_int_equal(get32(&now, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
        assert_int_equal(get32(&now, OFF_HOLDER_TID), 0);
        free(now.data);
        /* Not EBUSY (the old holder is gone with its boot), not EOWNERDEAD, not
         * ENOTRECOVERABLE: a fresh, free lock. */
        EXPECT_RC(surelock_ipc_trylock(m), 0);
        assert_int_equal(surelock_ipc_needs_recovery(m), 0);
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        EXPECT_IN_ANOTHER_PROCESS(stale, 0);
        EXPECT_RC(surelock_ipc_close(m), 0);
    }
    free(held.data);
    HOLDER_RELEASE(&h);
}

/* =========================================================================================
 * surelock_ipc_unlink
 * ========================================================================================= */

#define EXPECT_UNLINK_REFUSED(path, want, word)                                                \
    do {                                                                                       \
        snapshot s_ = take_snapshot(path);                                                     \
        EXPECT_RC(surelock_ipc_unlink(path), want);                                            \
        EXPECT_ERRMSG(word);                                                                   \
        if (strstr(surelock_errmsg(), path) == NULL)                                           \
            fail_msg("errmsg \"%s\" does not name %s", surelock_errmsg(), path);               \
        EXPECT_UNCHANGED(path, &s_);                                                           \
    } while (0)

static void unlink_removes_a_lock_file_and_refuses_symlinks_and_other_files(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    EXPECT_RC(surelock_ipc_unlink(path), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    EXPECT_RC(surelock_ipc_unlink(path), ENOENT);
    EXPECT_ERRMSG("lock");

    free(make_lock_file(path, 0, 0).data);
    assert_int_equal(symlink(path, P("link")), 0);
    EXPECT_UNLINK_REFUSED(P("link"), ELOOP, "symlink");
    assert_int_equal(lstat(path, &st), 0); /* the target stays too */

    spit(P("text"), "hello, world\n", 13, 0600);
    EXPECT_UNLINK_REFUSED(P("text"), EPROTO, "not a surelock");
    unsigned char almost[HEADER_SIZE] = "SURELOC"; /* 7 of 8 magic bytes */
    spit(P("almost"), almost, sizeof almost, 0600);
    EXPECT_UNLINK_REFUSED(P("almost"), EPROTO, "not a surelock");
    assert_int_equal(mkdir(P("dir"), 0700), 0);
    EXPECT_UNLINK_REFUSED(P("dir"), EPROTO, "not a surelock");
    assert_int_equal(mkfifo(P("fifo"), 0600), 0);
    EXPECT_UNLINK_REFUSED(P("fifo"), EPROTO, "not a surelock");

    /* Removing it while a handle is open is allowed (never done implicitly). */
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_unlink(path), 0);
    assert_int_equal(lstat(path, &st), -1);
    EXPECT_RC(surelock_ipc_close(m), 0);
    assert_int_equal(lstat(path, &st), -1); /* and close does not bring it back */
}

/* ========================================================================================= */

/* =========================================================================================
 * Faults from the adversarial review (issue 9): two holders, freed memory, unbounded waits
 * ========================================================================================= */

/* Writes len bytes at off into the file at path (what another program, or another boot's view
 * of the file, can do). */
static void poke(const char *path, size_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
    if (pwrite(fd, data, len, (off_t)off) != (ssize_t)len)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    close(fd);
}

static void poke32(const char *path, size_t off, uint32_t v)
{
    poke(path, off, &v, sizeof v);
}

/* An opener whose boot id differs from the file's (another mount namespace's view of /proc)
 * must not reset a lock another process holds: a file open elsewhere is in use in this boot,
 * so it is used as it is. */
static void an_opener_seeing_another_boot_id_never_resets_a_lock_held_elsewhere(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    static const char other_boot[40] = "00000000-0000-4000-8000-000000000000";
    poke(path, OFF_BOOT_ID, other_boot, sizeof other_boot);

    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY); /* one holder, still */
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY);
    bytes b = slurp(path);
    assert_memory_equal(b.data + OFF_BOOT_ID, other_boot, sizeof other_boot); /* as it is */
    assert_int_equal((int32_t)get32(&b, OFF_HOLDER_TID), h.pid);
    free(b.data);
    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_trylock(m), 0); /* a plain release: no death, nothing to recover */
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Open nowhere, the same file is from another boot and is reset. */
    surelock_ipc *n = OPEN(path, 0, 0600, 0);
    char boot_id[40];
    this_boot_id(boot_id);
    b = slurp(path);
    assert_memory_equal(b.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
    free(b.data);
    EXPECT_RC(surelock_ipc_close(n), 0);
}

/* No re-initialisation of any kind while another handle is open: a file emptied under a live
 * handle is refused, not rebuilt into a second, independent mutex. */
static void a_file_emptied_while_open_elsewhere_is_refused_not_reinitialised(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *a = OPEN(path, 0, 0600, 0);
    assert_int_equal(truncate(path, 0), 0);
    surelock_ipc_options o = options(0, 0600, 0);
    EXPECT_REFUSED(path, &o, EPROTO, "open", "empty");
    EXPECT_RC(surelock_ipc_close(a), 0); /* its mapping is gone: only unmapped, never read */
    surelock_ipc *b = OPEN(path, 0, 0600, 0); /* open nowhere now: initialised */
    EXPECT_RC(surelock_ipc_trylock(b), 0);
    EXPECT_RC(surelock_ipc_unlock(b), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
}

/* A child that only sleeps: a live process that has nothing to do with any lock file. */
static int sleeper_main(void *p)
{
    (void)p;
    for (;;) pause();
    return 0;
}

/* A corrupt lock word naming a live process that is no surelock holder would make every lock
 * wait forever: open refuses it, untouched. */
static void a_lock_word_naming_a_live_unrelated_process_is_eproto_and_untouched(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    pid_t sleeper = spawn(sleeper_main, NULL);
    surelock_ipc_options o = options(0, 0600, 0);
    poke32(path, OFF_MUTEX, (uint32_t)sleeper); /* __lock: the owner's TID */
    poke32(path, OFF_HOLDER_TID, 0);
    EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    /* The header's record alone does not make a process a holder either. */
    poke32(path, OFF_HOLDER_TID, (uint32_t)sleeper);
    EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    KILL_CHILD(sleeper);

    /* Thread 1 (init), whose memory map even root may be denied (a container): then the
     * header's record is the evidence, and a record that never agrees within the check's
     * bound is a clear ETIMEDOUT naming the cause, never a wait without end. */
    if (kill(1, 0) != 0 && errno == ESRCH) return;
    poke32(path, OFF_MUTEX, 1);
    poke32(path, OFF_HOLDER_TID, 0);
    int maps = open("/proc/1/maps", O_RDONLY | O_CLOEXEC);
    char byte;
    bool readable = maps >= 0 && read(maps, &byte, 1) == 1;
    if (maps >= 0) close(maps);
    if (readable)
        EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    else
        EXPECT_REFUSED(path, &o, ETIMEDOUT, "/proc/1/maps", "corrupt");
}

/* The lock word is kernel-maintained; holder_tid is stored by the holder just after its
 * acquire. A holder seen in that window (word set, record not yet) is a holder: its process
 * maps the file. */
static void a_holder_not_yet_recorded_in_the_header_is_still_a_holder(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    poke32(path, OFF_HOLDER_TID, 0);
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* ---- a hostile flock holder ---- */

static struct open_probe {
    const char *path;
    int rc;
    uint64_t took_ns;
    char errmsg[ERRMSG_SIZE];
} open_probe;

static void open_probe_body(void *arg)
{
    (void)arg;
    surelock_ipc *m = NULL;
    uint64_t t0 = now_ns();
    open_probe.rc = surelock_ipc_open(open_probe.path, NULL, &m);
    open_probe.took_ns = now_ns() - t0;
    snprintf(open_probe.errmsg, sizeof open_probe.errmsg, "%s", surelock_errmsg());
    if (open_probe.rc == 0) surelock_ipc_close(m);
}

/* Whether some process holds an exclusive flock on path. */
static bool flock_held_elsewhere(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static int flock_holder_main(void *p)
{
    int fd = open((const char *)p, O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(fd >= 0);
    CHILD_CHECK(flock(fd, LOCK_EX) == 0);
    for (;;) pause();
    return 0;
}

static int flock_tool_main(void *p)
{
    /* flock(1) from util-linux, as a shell user would run it: flock FILE sleep 60. Its own
     * process group: the sleep inherits the flock and must be killed with it. */
    setpgid(0, 0);
    execlp("flock", "flock", (const char *)p, "sleep", "60", (char *)NULL);
    fprintf(stderr, "cannot run flock(1): %s\n", strerror(errno));
    return 77;
}

/* Open gives up with ETIMEDOUT after its bound (5 s), naming the cause, while a flock is held
 * on the file; and works again once it is gone. */
static void expect_open_bounded_by_a_flock_holder(const char *path, pid_t holder)
{
    uint64_t t0 = now_ns();
    while (!flock_held_elsewhere(path)) {
        int status;
        if (waitpid(holder, &status, WNOHANG) == holder)
            fail_msg("the flock holder ended (status 0x%x) before it held the file", status);
        if (now_ns() - t0 > WAIT_LIMIT_MS * MS) fail_msg("the flock holder never took it");
        sleep_ms(5);
    }
    snapshot before = take_snapshot(path);
    open_probe = (struct open_probe){.path = path, .rc = -1};
    helper t;
    RUN_IN_NEW_THREAD(&t, open_probe_body, NULL);
    EXPECT_SAVED_RC(open_probe.rc, ETIMEDOUT, open_probe.errmsg);
    if (open_probe.took_ns < 4000 * MS || open_probe.took_ns > 5000 * MS + TIMED_WAIT_CEILING_NS)
        fail_msg("open gave up after %llu ms; its bound is 5 s",
                 (unsigned long long)(open_probe.took_ns / MS));
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)holder);
    EXPECT_TEXT(open_probe.errmsg, "flock");
    EXPECT_TEXT(open_probe.errmsg, pid);
    EXPECT_UNCHANGED(path, &before);
    kill(-holder, SIGKILL); /* flock(1)'s sleep, which holds the flock too */
    KILL_CHILD(holder);
    t0 = now_ns();
    while (flock_held_elsewhere(path))
        if (now_ns() - t0 > WAIT_LIMIT_MS * MS) fail_msg("the flock outlived its holders");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void open_gives_up_within_its_bound_on_a_hostile_flock_holder_and_names_it(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    expect_open_bounded_by_a_flock_holder(path, spawn(flock_holder_main, (void *)path));
    if (access("/usr/bin/flock", X_OK) != 0 && access("/bin/flock", X_OK) != 0) {
        print_message("flock(1) is not installed: only the flock(2) holder was tried\n");
        return;
    }
    expect_open_bounded_by_a_flock_holder(path, spawn(flock_tool_main, (void *)path));
}

/* ---- close ---- */

/* API.md: close is EBUSY only while a thread holds the lock through this handle; another
 * handle of the file closes (0) and the hold stays intact. */
static void closing_another_handle_while_held_through_one_returns_0_and_keeps_the_hold(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *a = OPEN(path, 0, 0600, 16);
    surelock_ipc *b = OPEN(path, 0, 0600, 16);
    EXPECT_RC(surelock_ipc_lock(a), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY); /* still held */
    unsigned char *payload = surelock_ipc_payload(a, NULL);
    payload[3] = 9; /* a's mapping is intact */
    EXPECT_RC(surelock_ipc_lock(a), EDEADLK);
    EXPECT_RC(surelock_ipc_unlock(a), 0);
    EXPECT_IN_ANOTHER_PROCESS(path, 0);
    EXPECT_RC(surelock_ipc_close(a), 0);
}

static struct cancel_probe {
    surelock_ipc *m;
    int rc;
    bool returned;
} cancel_probe;

static void close_with_cancel_pending_body(void *arg)
{
    (void)arg;
    pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, NULL);
    pthread_cancel(pthread_self()); /* pending: acted on at the next cancellation point */
    cancel_probe.rc = surelock_ipc_close(cancel_probe.m);
    cancel_probe.returned = true;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL); /* end normally for the join */
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) fail_msg("opendir /proc/self/fd: %s", strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n++;
    closedir(d);
    return n;
}

/* Close is not a cancellation point: a pending cancel is not acted on inside it, and nothing
 * (descriptor, "open" marker) is left behind: a not-recoverable lock is then reset by the
 * next opener, which it could not be while a leaked marker claimed the file open. */
static void close_is_not_a_cancellation_point_and_leaves_nothing_behind(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    int fds = open_fds();
    cancel_probe = (struct cancel_probe){.m = OPEN(path, 0, 0600, 0), .rc = -1};
    helper t;
    RUN_IN_NEW_THREAD(&t, close_with_cancel_pending_body, NULL);
    if (!cancel_probe.returned) fail_msg("the thread was cancelled inside surelock_ipc_close");
    EXPECT_RC(cancel_probe.rc, 0);
    assert_int_equal(open_fds(), fds);
    poke32(path, OFF_RECOVERY_STATE, RECOVERY_NOT_RECOVERABLE);
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0); /* reset: no handle was left open */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* A recursive file re-entered through a second handle: the thread's robust list keeps pointing
 * into the first handle's mapping until its last release, so that handle is "held through"
 * (EBUSY) even at depth 0, while the second one closes once its own depth is 0. */
static surelock_ipc *anchor_a, *anchor_b;
static int anchor_rc;
static void lock_a_then_b_release_a_and_exit_body(void *arg)
{
    (void)arg;
    anchor_rc = surelock_ipc_lock(anchor_a);
    if (anchor_rc == 0) anchor_rc = surelock_ipc_lock(anchor_b);
    if (anchor_rc == 0) anchor_rc = surelock_ipc_unlock(anchor_a);
    /* exits holding the file through b; its robust list points into a's mapping */
}

static void a_reentry_handle_closes_at_depth_0_and_the_first_handle_outlives_its_holder(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *a = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    surelock_ipc *b = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(a), 0);
    EXPECT_RC(surelock_ipc_lock(b), 0);
    EXPECT_RC(surelock_ipc_close(b), EBUSY); /* held through b */
    EXPECT_RC(surelock_ipc_unlock(b), 0);
    EXPECT_RC(surelock_ipc_close(b), 0); /* nothing through b any more */
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY);
    EXPECT_RC(surelock_ipc_unlock(a), 0);
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, 0);

    /* A thread that exits holding through b, its robust list pointing into a: a is kept
     * until the kernel has marked the death, which the next acquirer then sees. */
    anchor_a = a;
    anchor_b = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    helper t;
    anchor_rc = -1;
    RUN_IN_NEW_THREAD(&t, lock_a_then_b_release_a_and_exit_body, NULL);
    EXPECT_RC(anchor_rc, 0);
    EXPECT_RC(surelock_ipc_close(a), 0);      /* its holder is gone and marked dead */
    EXPECT_RC(surelock_ipc_close(anchor_b), 0);
    EXPECT_IN_ANOTHER_PROCESS(path, EOWNERDEAD);

    /* Again, and this time the handle the dead thread's list pointed into is taken over by
     * another thread: it is linked afresh into that thread's list, not left on the dead one's. */
    anchor_a = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    anchor_b = OPEN(path, SURELOCK_IPC_RECURSIVE, 0600, 0);
    anchor_rc = -1;
    RUN_IN_NEW_THREAD(&t, lock_a_then_b_release_a_and_exit_body, NULL);
    EXPECT_RC(anchor_rc, 0);
    EXPECT_RC(surelock_ipc_lock(anchor_a), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(anchor_a), 0);
    EXPECT_RC(surelock_ipc_close(anchor_a), EBUSY);
    EXPECT_RC(surelock_ipc_close(anchor_b), 0);
    EXPECT_RC(surelock_ipc_unlock(anchor_a), 0);
    EXPECT_RC(surelock_ipc_unlock(anchor_a), EPERM);
    EXPECT_RC(surelock_ipc_close(anchor_a), 0);
    EXPECT_IN_ANOTHER_PROCESS(path, 0);
}

/* ---- fork ---- */

static surelock_ipc *parents_held_handle;
static const char *other_lock_path;
static int child_closes_the_parents_held_handle_then_locks_another(void *arg)
{
    (void)arg;
    /* Robust ownership is not inherited: the child holds nothing, so it may close it. */
    CHILD_EXPECT_RC(surelock_ipc_unlock(parents_held_handle), EPERM);
    CHILD_EXPECT_RC(surelock_ipc_close(parents_held_handle), 0);
    /* Its thread's held list must not still link the freed handle: these link and unlink. */
    for (int i = 0; i < 3; i++) {
        surelock_ipc *n;
        CHILD_EXPECT_RC(surelock_ipc_open(other_lock_path, NULL, &n), 0);
        CHILD_EXPECT_RC(surelock_ipc_lock(n), 0);
        CHILD_EXPECT_RC(surelock_ipc_unlock(n), 0);
        CHILD_EXPECT_RC(surelock_ipc_close(n), 0);
    }
    return 0;
}

/* Seen as a use-after-free by ASan and valgrind on the unfixed library (the plain build cannot
 * see it); the suites run under both. */
static void a_fork_child_closing_its_parents_held_handle_touches_no_freed_memory(void **state)
{
    (void)state;
    const char *path = P("lock");
    other_lock_path = P("other");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    parents_held_handle = m;
    EXPECT_CHILD_OK(spawn(child_closes_the_parents_held_handle_then_locks_another, NULL));
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY); /* the parent's hold is intact */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* ---- groups ---- */

/* A dead holder's TID, still in the header's informational holder_tid, may since belong to the
 * caller: "already held by the caller" goes by the kernel-maintained lock word. */
static void a_group_is_not_edeadlk_when_a_dead_holders_recorded_tid_is_now_the_callers(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    poke32(path, OFF_HOLDER_TID, (uint32_t)current_tid());
    surelock_group *g;
    EXPECT_RC(surelock_group_new(&g), 0);
    EXPECT_RC(surelock_group_add_ipc(g, m), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_trylock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0); /* and a real hold is still EDEADLK for the group */
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_group_clear(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* ---- messages ---- */

/* With a path too long to fit beside it, the reason survives whole; the path keeps its tail
 * (the file name) behind "...". */
static void messages_keep_their_reason_when_the_path_is_too_long_to_fit(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", tmpdir);
    for (int level = 0; level < 3; level++) {
        size_t n = strlen(dir);
        dir[n] = '/';
        memset(dir + n + 1, 'a' + level, 120);
        dir[n + 121] = '\0';
        assert_int_equal(mkdir(dir, 0700), 0);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/the-lock-file", dir);
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, 0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), ENOENT);
    const char *msg = surelock_errmsg();
    if (strstr(msg, "no such lock file (SURELOCK_IPC_NOCREATE)") == NULL ||
        strncmp(msg, "...", 3) != 0 || strstr(msg, "/the-lock-file: ") == NULL)
        fail_msg("errmsg \"%s\" lost its reason or the path's tail", msg);
    assert_true(strlen(msg) < 256);

    assert_int_equal(mkdir(path, 0700), 0);
    o = options(0, 0600, 0);
    EXPECT_RC(surelock_ipc_open(path, &o, &m), EPROTO);
    msg = surelock_errmsg();
    if (strstr(msg, "is a directory, not a lock file") == NULL || strncmp(msg, "...", 3) != 0)
        fail_msg("errmsg \"%s\" lost its reason", msg);
    assert_ptr_equal(m, SENTINEL);
}

/* A payload size too large for any file is reported as the number in the header, never as the
 * negative result of an overflowed size computation. */
static void a_corrupt_payload_size_is_never_printed_as_a_negative_number(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    const uint64_t sizes[] = {UINT64_MAX, UINT64_MAX - 4096, (uint64_t)INT64_MAX,
                              (uint64_t)INT64_MAX - 4096 * 2};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        poke(path, OFF_PAYLOAD_SIZE, &sizes[i], sizeof sizes[i]);
        surelock_ipc_options o = options(0, 0600, 0);
        EXPECT_REFUSED(path, &o, EPROTO, "payload");
        const char *reason = surelock_errmsg() + strlen(path) + 2;
        for (const char *c = reason; *c; c++)
            if (*c == '-' && c[1] >= '0' && c[1] <= '9')
                fail_msg("errmsg \"%s\" prints a negative number", surelock_errmsg());
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(open_creates_a_lock_file_with_the_documented_header),
        TEST(null_handles_paths_and_out_pointers_are_einval),
        TEST(options_too_small_unknown_flags_and_mode_beyond_0777_are_einval),
        TEST(missing_file_with_nocreate_is_enoent_and_creates_nothing),
        TEST(created_file_has_exactly_the_requested_mode_whatever_the_umask),
        TEST(empty_placeholder_file_is_initialised_in_place),
        TEST(unfinished_header_is_redone_and_an_all_zero_one_refused),
        TEST(a_file_whose_mutex_is_corrupt_is_eproto_and_untouched),
        TEST(a_forked_child_cannot_release_or_repair_its_parents_hold),
        TEST(a_recursive_reentry_through_a_second_handle_does_not_disturb_recovery),
        TEST(symlink_is_refused_with_eloop_and_nothing_is_followed_or_changed),
        TEST(file_owned_by_another_uid_is_eperm_unless_any_owner),
        TEST(group_or_world_writable_file_is_eperm_unless_mode_grants_it),
        TEST(directories_fifos_sockets_and_devices_are_eproto),
        TEST(short_truncated_or_padded_files_are_eproto),
        TEST(headers_of_another_format_abi_libc_or_pid_namespace_are_eproto),
        TEST(payload_size_differing_from_the_files_is_einval),
        TEST(recursive_is_fixed_at_creation),
        TEST(system_errors_from_open_are_passed_through),
        TEST(relock_by_the_holder_is_edeadlk_for_every_acquire_form),
        TEST(recursive_file_reenters_and_needs_matching_unlocks),
        TEST(recursion_count_overflow_is_eagain_and_leaves_the_hold_intact),
        TEST(unlock_by_a_thread_or_process_that_does_not_hold_it_is_eperm),
        TEST(close_while_held_is_ebusy_and_works_after_unlock),
        TEST(close_of_any_handle_is_ebusy_while_this_process_holds_the_lock),
        TEST(a_fork_child_takes_an_inherited_handle_afresh_once_the_parent_releases),
        TEST(a_successful_open_that_creates_the_file_leaves_errmsg_alone),
        TEST(consistent_when_no_recovery_is_needed_is_einval),
        TEST(lock_file_unlinked_while_open_keeps_working_for_its_handles),
        TEST(trylock_and_timedlock_zero_never_block_while_another_process_holds_it),
        TEST(timedlock_waits_at_least_its_timeout_on_the_monotonic_clock),
        TEST(timedlock_gets_the_lock_when_the_holder_process_releases_it_in_time),
        TEST(holder_process_killed_is_eownerdead_then_consistent_recovers_it),
        TEST(eownerdead_is_reported_by_trylock_and_timedlock_too),
        TEST(waiter_blocked_in_lock_gets_eownerdead_when_the_holder_process_is_killed),
        TEST(owner_thread_exit_while_holding_is_eownerdead_for_the_next_acquirer),
        TEST(handle_whose_holder_thread_exited_can_be_closed_and_others_see_the_death),
        TEST(unlock_without_consistent_makes_it_not_recoverable_for_every_process),
        TEST(payload_is_shared_between_processes),
        TEST(eight_processes_racing_to_create_a_fresh_path_count_to_an_exact_total),
        TEST(eight_processes_racing_on_an_empty_placeholder_count_to_an_exact_total),
        TEST(stale_boot_id_is_reinitialised_and_the_lock_is_usable),
        TEST(unlink_removes_a_lock_file_and_refuses_symlinks_and_other_files),
        TEST(an_opener_seeing_another_boot_id_never_resets_a_lock_held_elsewhere),
        TEST(a_file_emptied_while_open_elsewhere_is_refused_not_reinitialised),
        TEST(a_lock_word_naming_a_live_unrelated_process_is_eproto_and_untouched),
        TEST(a_holder_not_yet_recorded_in_the_header_is_still_a_holder),
        TEST(open_gives_up_within_its_bound_on_a_hostile_flock_holder_and_names_it),
        TEST(closing_another_handle_while_held_through_one_returns_0_and_keeps_the_hold),
        TEST(close_is_not_a_cancellation_point_and_leaves_nothing_behind),
        TEST(a_reentry_handle_closes_at_depth_0_and_the_first_handle_outlives_its_holder),
        TEST(a_fork_child_closing_its_parents_held_handle_touches_no_freed_memory),
        TEST(a_group_is_not_edeadlk_when_a_dead_holders_recorded_tid_is_now_the_callers),
        TEST(messages_keep_their_reason_when_the_path_is_too_long_to_fit),
        TEST(a_corrupt_payload_size_is_never_printed_as_a_negative_number),
    };
    return cmocka_run_group_tests_name("ipc", tests, group_setup, watchdog_stop);
}
