// `surelock run`: run a command while holding a robust cross-process lock, with flock(1)'s
// spelling. The full description is the man page (surelock.1); the decisions, in short:
//
// The lock and CMD live and die together. The robust mutex belongs to this process's thread,
// so the kernel releases it the moment this process dies, even by SIGKILL, while CMD may still
// run. So, like flock(1), `run` also holds an OFD write lock on byte 1 of the file (the
// "marker") through a descriptor that CMD inherits; the marker is released only when CMD and
// everything that inherited it from CMD are gone. Every `run` takes the marker first, then the
// mutex: a second `run` never starts while the first CMD (or a child it left running) is alive,
// and when the first wrapper died it is told afterwards (EOWNERDEAD: the wrapper never saw how
// CMD ended). We keep CMD running rather than killing it with its wrapper: an OOM kill or a
// `kill -9` of the wrapper should not cut a deploy step in half. With -o (flock's --close) CMD
// does not inherit the marker, so that what it starts in the background does not keep the lock;
// CMD itself is then tied to the wrapper with PR_SET_PDEATHSIG=SIGKILL instead.
//
// Signals. CMD stays in our process group (as with flock), so a signal that the terminal sends
// to the foreground group (Ctrl-C, Ctrl-\, hangup: si_code SI_KERNEL) already reached CMD and is
// not forwarded. SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 sent by a process to
// `surelock` are forwarded to CMD once. They are blocked from before fork() and taken with
// sigwaitinfo() once CMD runs (no handler), so none is lost in between. `kill -- -PGID` from a
// process is indistinguishable from `kill PID` (both SI_USER) and is forwarded too: CMD then
// sees it twice (documented in surelock.1).
//
// Exit status: CMD's (128+N when killed by signal N, 127 not found, 126 not executable);
// 1 when the lock is busy with -n or not acquired within -w (flock's; -E changes it) or the
// library refuses the file; 75 when the previous holder died (or the lock is not recoverable)
// and --on-owner-dead=fail; 2 usage error.
//
// The command line is read by run_options.cc (run.h); this file takes the marker and the lock
// and runs CMD under them.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vector>

#include "commands.h"
#include "ipc_format.h"
#include "lockfile.h"
#include "run.h"
#include "surelock.h"

using namespace surelock::cli;

namespace {

constexpr int forwarded_signals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

uint64_t now_ns()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// ---- the marker: "CMD (or what it started) is still running" ------------------------------

bool marker_lock(int fd, bool wait)
{
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = run_marker_offset;
    fl.l_len = 1;
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
        if (errno != EINTR) return false;
    }
}

// Whether any open file description holds the library's "a handle is open" read lock on
// byte 0, i.e. whether fd is the file that surelock_ipc_open just opened (and not a file put
// in its place since).
bool library_handle_open(int fd)
{
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

void say_who_holds(const char *path, dev_t dev, ino_t ino)
{
    LockView v = read_lock_view(path);
    std::vector<Process> cmds = marker_holders(dev, ino, v.held ? v.holder.pid : 0);
    if (v.kind == FileKind::lock && v.held)
        fprintf(stderr, "surelock run: %s: held by %s%s\n", path, describe(v.holder).c_str(),
                v.holder.alive ? "" : " (no longer exists)");
    for (const Process &p : cmds)
        fprintf(stderr, "surelock run: %s: kept by a running command: %s\n", path,
                describe(p).c_str());
    if (!(v.kind == FileKind::lock && v.held) && cmds.empty())
        fprintf(stderr, "surelock run: %s: busy (the holder is not visible in /proc here)\n",
                path);
}

// ---- running CMD -------------------------------------------------------------------------------

// Runs argv as a child and returns its exit status as a shell reports it. marker_fd is passed
// on to CMD unless -o. Signals are taken synchronously: the forwarded ones and SIGCHLD are
// blocked from before fork() and collected with sigwaitinfo(), which also gives their origin;
// no handler runs, so there is no moment when one arrives and CMD's pid is not yet known.
int run_child(char **argv, int marker_fd, bool close_for_cmd)
{
    // SIGCHLD must not be ignored (children would be reaped for us); CMD gets back whatever
    // disposition we were given. A forwarded signal that we were started with ignored (SIGINT
    // in a background job) stays ignored, as in a shell: it is not waited for, and CMD
    // inherits SIG_IGN.
    struct sigaction default_action{}, saved_chld;
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    sigaction(SIGCHLD, &default_action, &saved_chld);
    sigset_t waited, saved_mask;
    sigemptyset(&waited);
    sigaddset(&waited, SIGCHLD);
    for (int sig : forwarded_signals) {
        struct sigaction current;
        if (sigaction(sig, nullptr, &current) == 0 && current.sa_handler != SIG_IGN)
            sigaddset(&waited, sig);
    }
    sigprocmask(SIG_BLOCK, &waited, &saved_mask);

    if (!close_for_cmd) fcntl(marker_fd, F_SETFD, 0); // CMD inherits the marker
    pid_t parent = getpid();
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        // Still blocked here; a signal sent to CMD since fork() is delivered when the mask is
        // restored, by its default action (or after exec, by CMD's).
        sigaction(SIGCHLD, &saved_chld, nullptr);
        if (close_for_cmd) {
            // CMD does not keep the lock by itself: it dies with its wrapper instead. If the
            // wrapper is already gone, the death signal was never armed: exit here.
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(exit_failure);
        }
        sigprocmask(SIG_SETMASK, &saved_mask, nullptr);
        execvp(argv[0], argv);
        int e = errno;
        fprintf(stderr, "surelock run: cannot run %s: %s\n", argv[0], strerror(e));
        _exit(e == ENOENT ? exit_not_found : exit_not_executable);
    }
    int fork_errno = errno;
    if (!close_for_cmd) fcntl(marker_fd, F_SETFD, FD_CLOEXEC);
    int status = 0;
    if (pid < 0) {
        fprintf(stderr, "surelock run: fork: %s\n", strerror(fork_errno));
        status = exit_not_executable << 8; // reported as exit 126 below
    } else {
        for (;;) {
            pid_t done = waitpid(pid, &status, WNOHANG);
            if (done == pid) break;
            if (done < 0 && errno != EINTR) {
                fprintf(stderr, "surelock run: waitpid: %s\n", strerror(errno));
                status = exit_not_executable << 8;
                break;
            }
            siginfo_t info;
            int sig = sigwaitinfo(&waited, &info);
            if (sig <= 0 || sig == SIGCHLD) continue; // CMD changed state: look again
            // SI_KERNEL: the terminal sent it to the whole foreground process group, CMD
            // included. Anything else was sent to us: pass it on, once.
            if (info.si_code != SI_KERNEL) kill(pid, sig);
        }
    }
    sigprocmask(SIG_SETMASK, &saved_mask, nullptr); // what came after CMD ended: ours again
    sigaction(SIGCHLD, &saved_chld, nullptr);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return exit_not_executable;
}

// The lock file's owner is acceptable: ours, the --trust-owner user, or (with --group) a
// member's file of that group. EPERM from the library otherwise, with its own message.
bool owner_accepted(const struct stat &st, const RunOptions &o)
{
    if (st.st_uid == geteuid()) return true;
    if (o.trust_given && st.st_uid == o.trusted) return true;
    return o.group_given && st.st_gid == o.group;
}

} // namespace

int cmd_run(int argc, char **argv)
{
    RunRequest req;
    int parsed = parse_run_command_line(argc, argv, &req);
    if (parsed != run_go_on) return parsed;
    const RunOptions &o = req.options;
    const char *path = req.path;
    char **command = req.command;

    // Before opening: what is there. A not-recoverable lock would be re-initialised by the
    // library's open when no other process has it open; say so, or refuse with fail.
    LockView before = read_lock_view(path);
    if (before.kind == FileKind::lock && before.recovery == surelock::ipc_format::NOT_RECOVERABLE) {
        if (o.fail_on_owner_dead) {
            fprintf(stderr,
                    "surelock run: %s: the lock is not recoverable (%s); not running %s "
                    "(--on-owner-dead=fail); the file is left as it is\n",
                    path, recovery_meaning(before.recovery), command[0]);
            return exit_tempfail;
        }
        fprintf(stderr,
                "surelock run: warning: %s: the lock is not recoverable (a program using the "
                "library released it after an owner death without repairing it); opening it "
                "re-initialises it if no other process has it open, then %s runs\n",
                path, command[0]);
    }

    surelock_ipc_options opts;
    surelock_ipc_options_init(&opts);
    opts.mode = o.mode;
    if (before.kind != FileKind::missing && before.st.st_uid != geteuid()) {
        if (owner_accepted(before.st, o))
            opts.flags |= SURELOCK_IPC_ANY_OWNER;
        else // the library refuses it with its own message; say how to accept it
            fprintf(stderr, "surelock run: %s is owned by uid %u: to share it, use "
                            "--trust-owner %u, or --group with the file's group\n",
                    path, (unsigned)before.st.st_uid, (unsigned)before.st.st_uid);
    }

    // Static on purpose: when the tool exits still holding the lock (to leave it in need of
    // recovery), the handle cannot be closed and stays reachable (no leak report).
    static surelock_ipc *lock = nullptr;
    int rc = surelock_ipc_open(path, &opts, &lock);
    if (rc != 0) {
        fprintf(stderr, "surelock run: %s\n", surelock_errmsg());
        if (rc == EPROTO && before.kind == FileKind::lock && !before.this_pid_namespace)
            fprintf(stderr,
                    "surelock run: robust futexes name their holder by thread id, which differs "
                    "between PID namespaces, so a lock file serves one PID namespace: give each "
                    "container its own lock file, or share the PID namespace (docker run "
                    "--pid=host or --pid=container:NAME)\n");
        return exit_failure;
    }
    int marker_fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st{};
    if (marker_fd < 0 || fstat(marker_fd, &st) != 0 || !library_handle_open(marker_fd)) {
        fprintf(stderr, "surelock run: %s: %s\n", path,
                marker_fd < 0 ? strerror(errno) : "replaced while it was being opened");
        if (marker_fd >= 0) close(marker_fd);
        surelock_ipc_close(lock);
        return exit_failure;
    }
    // A library handle has this very file open (library_handle_open): ours, unless the path
    // was swapped for another lock file in use in between. Its owner is checked again here.
    if (st.st_uid != geteuid() && !owner_accepted(st, o)) {
        fprintf(stderr, "surelock run: %s: owned by uid %u; refusing to use it\n", path,
                (unsigned)st.st_uid);
        close(marker_fd);
        surelock_ipc_close(lock);
        return exit_failure;
    }
    if (o.group_given && st.st_gid != o.group) {
        if (before.kind == FileKind::missing && st.st_uid == geteuid()) {
            // Created by this call (or a racing run of ours): hand it to the group.
            if (fchown(marker_fd, (uid_t)-1, o.group) != 0) {
                fprintf(stderr, "surelock run: %s: cannot give it to group %u: %s\n", path,
                        (unsigned)o.group, strerror(errno));
                close(marker_fd);
                surelock_ipc_close(lock);
                return exit_failure;
            }
        } else if (st.st_mode & 0020) {
            fprintf(stderr, "surelock run: %s: writable by group %u, not by --group %u; "
                            "refusing to use it\n",
                    path, (unsigned)st.st_gid, (unsigned)o.group);
            close(marker_fd);
            surelock_ipc_close(lock);
            return exit_failure;
        }
    }

    // Marker first, then the mutex (one order for every `run`, so no deadlock; a library
    // user takes only the mutex).
    uint64_t start = now_ns();
    bool forever = o.timeout_ns == SURELOCK_FOREVER;
    uint64_t deadline = forever ? 0 : start + o.timeout_ns;
    bool told = false;
    bool got_marker = marker_lock(marker_fd, false);
    if (!got_marker && errno != EAGAIN && errno != EACCES) {
        fprintf(stderr, "surelock run: %s: fcntl(F_OFD_SETLK): %s\n", path, strerror(errno));
        close(marker_fd);
        surelock_ipc_close(lock);
        return exit_failure;
    }
    if (!got_marker && o.verbose) {
        say_who_holds(path, st.st_dev, st.st_ino);
        told = true;
    }
    if (!got_marker && forever) {
        got_marker = marker_lock(marker_fd, true);
    } else {
        // Bounded: poll (the marker is contended only while an earlier CMD runs on).
        for (unsigned pause_ms = 1; !got_marker && now_ns() < deadline; pause_ms *= 2) {
            uint64_t left = deadline - now_ns();
            uint64_t pause = (pause_ms > 50 ? 50 : pause_ms) * 1000000ull;
            struct timespec ts = {0, (long)(pause < left ? pause : left)};
            nanosleep(&ts, nullptr);
            got_marker = marker_lock(marker_fd, false);
        }
    }
    if (got_marker) {
        uint64_t left = forever ? SURELOCK_FOREVER
                                : (start + o.timeout_ns > now_ns() ? deadline - now_ns() : 0);
        rc = surelock_ipc_trylock(lock);
        if (rc == EBUSY) {
            if (o.verbose && !told) say_who_holds(path, st.st_dev, st.st_ino);
            rc = left == 0 ? ETIMEDOUT : surelock_ipc_timedlock(lock, left);
        }
    } else {
        rc = ETIMEDOUT;
    }
    if (rc == ETIMEDOUT) {
        fprintf(stderr, "surelock run: %s: %s; not running %s\n", path,
                o.timeout_ns == 0 ? "busy (-n)" : "not acquired within the timeout (-w)",
                command[0]);
        close(marker_fd);
        surelock_ipc_close(lock);
        return o.conflict_exit;
    }
    bool recovering = rc == EOWNERDEAD;
    if (rc != 0 && !recovering) {
        fprintf(stderr, "surelock run: %s\n", surelock_errmsg());
        if (rc == ENOTRECOVERABLE)
            fprintf(stderr, "surelock run: %s: another process has it open, so it cannot be "
                            "re-initialised now; not running %s\n",
                    path, command[0]);
        close(marker_fd);
        surelock_ipc_close(lock);
        return exit_failure;
    }
    if (o.verbose) {
        double waited = (double)(now_ns() - start) / 1e9;
        fprintf(stderr, "surelock run: getting the lock took %.6f seconds\n", waited);
    }
    if (recovering) {
        if (o.fail_on_owner_dead) {
            // Exiting while holding it leaves it in need of recovery for the next holder.
            fprintf(stderr, "surelock run: %s: the previous holder died while holding the lock; "
                            "not running %s (--on-owner-dead=fail)\n",
                    path, command[0]);
            return exit_tempfail;
        }
        fprintf(stderr, "surelock run: warning: %s: the previous holder died while holding the "
                        "lock; running %s to recover\n",
                path, command[0]);
    }
    if (o.verbose) fprintf(stderr, "surelock run: executing %s\n", command[0]);
    int status = run_child(command, marker_fd, o.close_for_cmd);
    if (recovering && status != 0) {
        // CMD did not succeed: leave the lock in need of recovery (exiting while holding it
        // marks it owner-dead for the next holder) rather than declaring it consistent.
        fprintf(stderr, "surelock run: %s: %s failed, so the lock still needs recovery\n", path,
                command[0]);
        return status;
    }
    if (recovering) surelock_ipc_consistent(lock);
    surelock_ipc_unlock(lock);
    surelock_ipc_close(lock);
    close(marker_fd);
    return status;
}
