/*
 * ipc_holder.h — other processes for the ipc tests: forked children bounded by alarm() and
 * tracked until reaped, a holder process that takes a lock and keeps it until it is told to
 * release it or is SIGKILLed, and a one-shot process that checks what another process sees
 * (EXPECT_IN_ANOTHER_PROCESS). Built on support/bounded.h (child_spawn_tracked, pipes with
 * bounded reads) and ipc_file.h; children never use CMocka: they print a mismatch and exit
 * non-zero, and the test fails when it reaps them.
 */
#ifndef SURELOCK_TESTS_IPC_HOLDER_H
#define SURELOCK_TESTS_IPC_HOLDER_H

#include <stdint.h>
#include <sys/types.h>

#include "ipc_file.h"

/* Every child process dies of SIGALRM after this many seconds, whatever it is doing. A test
 * binary may set its own with -DCHILD_ALARM_S=... (tests/meson.build passes it to both the
 * test and its support/ sources, like WATCHDOG_MS). */
#ifndef CHILD_ALARM_S
#define CHILD_ALARM_S 100
#endif

/* Forks a child that runs fn(arg) and _exits with its return value; bounded by alarm(). It is
 * tracked until reaped (the teardown and the watchdog kill those left). */
pid_t spawn(int (*fn)(void *), void *arg);

#define EXPECT_CHILD_OK(pid) child_expect_ok_at(__LINE__, (pid), WAIT_LIMIT_MS)
/* Reaps a child (bounded) that must have died of SIGKILL. */
#define EXPECT_CHILD_KILLED(pid) expect_child_killed_at(__LINE__, (pid))
void expect_child_killed_at(int line, pid_t pid);
/* SIGKILLs a child and reaps it; it must not have ended before. */
#define KILL_CHILD(pid) kill_child_at(__LINE__, (pid))
void kill_child_at(int line, pid_t pid);

/* A child body that only sleeps: a live process that has nothing to do with any lock file. */
int sleeper_main(void *unused);

/* ---- a holder process: takes the lock, reports, and keeps it until released or killed ---- */

/* It opens path with flags (mode 0600, the payload as existing), locks (making the lock
 * consistent if it finds its owner died), and says so. */
typedef struct holder_proc {
    pid_t pid;
    int ready_r;
    int release_w; /* a byte here makes it unlock (after its linger), close and exit 0 */
} holder_proc;

/* Starts a process that holds the lock at path; returns once it holds it. */
#define HOLDER_START(h, path, flags, linger)                                                    \
    holder_start_at(__LINE__, (h), (path), (flags), (linger))
void holder_start_at(int line, holder_proc *h, const char *path, uint32_t flags,
                     unsigned linger_ms);
/* Lets the holder unlock (after its linger) and exit; checks it did so cleanly. */
#define HOLDER_RELEASE(h) holder_release_at(__LINE__, (h))
void holder_release_at(int line, holder_proc *h);
/* SIGKILLs the holder while it holds the lock. */
#define HOLDER_KILL(h) holder_kill_at(__LINE__, (h))
void holder_kill_at(int line, holder_proc *h);
/* Closes the test's ends of the holder's pipes (after it was released or reaped by hand). */
void holder_close_fds(holder_proc *h);

/* ---- what another process sees --------------------------------------------------------- */

/* A new process opens path and its lock returns `first`; it recovers (EOWNERDEAD) and
 * releases what it got, or else checks unlock is EPERM and trylock/timedlock say `first`
 * too. */
#define EXPECT_IN_ANOTHER_PROCESS(path, first)                                                 \
    expect_in_another_process_at(__LINE__, (path), (first), false)
/* A new process opens path and its trylock returns `want` (it releases what it got). */
#define EXPECT_IN_ANOTHER_PROCESS_TRY(path, want)                                              \
    expect_in_another_process_at(__LINE__, (path), (want), true)
void expect_in_another_process_at(int line, const char *path, int first, bool trylock_only);

#endif
