/*
 * ipc_holder.c — other processes for the ipc tests: tracked children, the holder process and
 * the "what another process sees" probes (see ipc_holder.h).
 */
#define _GNU_SOURCE

#include "ipc_holder.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

pid_t spawn(int (*fn)(void *), void *arg)
{
    return child_spawn_tracked(fn, arg, CHILD_ALARM_S);
}

void expect_child_killed_at(int line, pid_t pid)
{
    int status = child_reap_at(line, pid, WAIT_LIMIT_MS);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("line %d: child %d was expected to die of SIGKILL; wait status 0x%x", line,
                 (int)pid, status);
}

void kill_child_at(int line, pid_t pid)
{
    if (kill(pid, SIGKILL) != 0) fail_msg("line %d: kill: %s", line, strerror(errno));
    int status = child_reap_at(line, pid, WAIT_LIMIT_MS);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("line %d: child %d ended with status 0x%x before it was killed", line,
                 (int)pid, status);
}

int sleeper_main(void *unused)
{
    (void)unused;
    for (;;) pause();
    return 0;
}

/* ---- the holder process ------------------------------------------------------------------- */

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

void holder_start_at(int line, holder_proc *h, const char *path, uint32_t flags,
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

void holder_close_fds(holder_proc *h)
{
    close(h->ready_r);
    close(h->release_w);
}

void holder_release_at(int line, holder_proc *h)
{
    if (!send_byte(h->release_w)) fail_msg("line %d: cannot signal the holder", line);
    child_expect_ok_at(line, h->pid, WAIT_LIMIT_MS);
    holder_close_fds(h);
}

void holder_kill_at(int line, holder_proc *h)
{
    kill_child_at(line, h->pid);
    holder_close_fds(h);
}

/* ---- what another process sees ---------------------------------------------------------- */

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

void expect_in_another_process_at(int line, const char *path, int first, bool trylock_only)
{
    after_child = (struct after_child){path, first};
    child_expect_ok_at(line, spawn(trylock_only ? try_child_main : after_child_main, &after_child),
                       WAIT_LIMIT_MS);
}
