/*
 * test_ipc_lock.c — the robust cross-process mutex (API.md section 4): locking within one
 * process and against holders in others, timeouts, owner death and recovery, and close,
 * through the public header only, against the real shared libsurelock.so.1.
 * Fixtures and rules: support/ipc_file.h, support/ipc_holder.h.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

/* Ceiling for "a call that must not block returned" (never a speed check). */
#define NONBLOCKING_CEILING_NS (1ull * 1000000000ull)

/* =========================================================================================
 * Recovery while a recursive file is re-entered through a second handle
 * ========================================================================================= */

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

static int ipc_lock_call(void *m)
{
    return surelock_ipc_lock(m);
}

static int ipc_unlock_call(void *m)
{
    return surelock_ipc_unlock(m);
}

/* A handle shared by threads: each hold is the locking thread's alone, and a thread that held
 * and released through the handle takes nothing with it when it exits later, while another
 * thread holds through the same handle (its held list must no longer link the handle). */
static void a_handle_shared_by_threads_outlives_a_former_holders_exit(void **state)
{
    (void)state;
    const char *path = P("shared");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    agent former;
    agent_start(&former);
    EXPECT_RC(agent_call(&former, ipc_lock_call, m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), EPERM); /* the agent holds it, not this thread */
    EXPECT_RC(agent_call(&former, ipc_unlock_call, m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());
    EXPECT_RC(agent_call(&former, ipc_unlock_call, m), EPERM);
    agent_stop(&former); /* its thread-exit cleanup runs while this thread holds */
    EXPECT_RC(surelock_ipc_close(m), EBUSY);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), 0);
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
 * Close, from the adversarial review (issue 9)
 * ========================================================================================= */

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(a_recursive_reentry_through_a_second_handle_does_not_disturb_recovery),
        TEST(relock_by_the_holder_is_edeadlk_for_every_acquire_form),
        TEST(recursive_file_reenters_and_needs_matching_unlocks),
        TEST(recursion_count_overflow_is_eagain_and_leaves_the_hold_intact),
        TEST(unlock_by_a_thread_or_process_that_does_not_hold_it_is_eperm),
        TEST(close_while_held_is_ebusy_and_works_after_unlock),
        TEST(a_handle_shared_by_threads_outlives_a_former_holders_exit),
        TEST(close_of_any_handle_is_ebusy_while_this_process_holds_the_lock),
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
        TEST(closing_another_handle_while_held_through_one_returns_0_and_keeps_the_hold),
        TEST(close_is_not_a_cancellation_point_and_leaves_nothing_behind),
        TEST(a_reentry_handle_closes_at_depth_0_and_the_first_handle_outlives_its_holder),
    };
    return cmocka_run_group_tests_name("ipc_lock", tests, ipc_group_setup, watchdog_stop);
}
