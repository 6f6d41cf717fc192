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
// sigwaitinfo() once CMD runs (no handler), so none is lost in between. `kill -- -PGID` from a process is indistinguishable from `kill PID` (both SI_USER)
// and is forwarded too: CMD then sees it twice (documented in surelock.1).
//
// Exit status: CMD's (128+N when killed by signal N, 127 not found, 126 not executable);
// 1 when the lock is busy with -n or not acquired within -w (flock's; -E changes it) or the
// library refuses the file; 75 when the previous holder died (or the lock is not recoverable)
// and --on-owner-dead=fail; 2 usage error.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "commands.h"
#include "ipc_format.h"
#include "lockfile.h"
#include "surelock.h"

using namespace surelock::cli;

namespace {

enum : int { exit_failure = 1, exit_usage = 2, exit_tempfail = 75, exit_not_executable = 126,
             exit_not_found = 127 };

constexpr int forwarded_signals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
constexpr uint64_t max_timeout_s = 1000000000; // ~31 years; longer: leave -w out

const char run_synopsis[] =
    "Usage: surelock run [OPTIONS] LOCKFILE [--] CMD [ARGS...]\n"
    "       surelock run [OPTIONS] LOCKFILE -c 'SHELL COMMAND'\n";

void print_run_help(FILE *out)
{
    fprintf(out,
            "%s"
            "\n"
            "Runs CMD while holding the robust cross-process lock in LOCKFILE (created if\n"
            "missing) and exits with CMD's status. Spelled like flock(1). If the previous holder\n"
            "died holding the lock, you are told. The lock stays held until CMD and whatever\n"
            "inherited it from CMD are gone, even if surelock itself is killed.\n"
            "\n"
            "Options:\n"
            "  -n, --nonblock, --nb       fail (exit 1, or -E) if the lock is busy\n"
            "  -w, --wait, --timeout S    fail (exit 1, or -E) if not acquired within S seconds\n"
            "                             (decimal, e.g. 2.5; 0 is the same as -n)\n"
            "  -E, --conflict-exit-code N exit status for -n and -w failures (0-255)\n"
            "  -c, --command STRING       run STRING with $SHELL -c (/bin/sh if unset)\n"
            "  -o, --close                CMD does not pass the lock on to what it starts: its\n"
            "                             background children do not keep it held (CMD itself\n"
            "                             is killed if surelock dies)\n"
            "  -x, -e, --exclusive        accepted: the lock is always exclusive\n"
            "  -s, --shared               refused (exit 2): there is no shared mode\n"
            "      --verbose              say who holds the lock and how long getting it took\n"
            "      --on-owner-dead=warn|fail\n"
            "                             the previous holder died holding the lock: warn\n"
            "                             (default) runs CMD and marks the lock repaired only if\n"
            "                             CMD exits 0; fail exits 75 without running CMD\n"
            "      --mode OCTAL           permissions when creating LOCKFILE (default 0600; 0660\n"
            "                             with --group); write bits the file has beyond these\n"
            "                             make it refused\n"
            "      --group GROUP          share with GROUP: create the file group GROUP, group\n"
            "                             writable, and accept such a file made by a member\n"
            "      --trust-owner USER     accept a LOCKFILE owned by USER (name or uid)\n"
            "  -h, --help                 show this help and exit\n"
            "\n"
            "Exit status: CMD's (128+N if a signal N killed it; 126/127 it could not run);\n"
            "1 lock busy or timed out (see -E), or LOCKFILE refused; 2 usage error; 75 the\n"
            "previous holder died (or left the lock not recoverable) and --on-owner-dead=fail.\n"
            "See surelock(1).\n",
            run_synopsis);
}

int usage(const std::string &message)
{
    fprintf(stderr, "surelock run: %s\n%sTry 'surelock run --help'.\n", message.c_str(),
            run_synopsis);
    return exit_usage;
}

// Seconds as plain decimal: digits with an optional fraction. No sign, exponent, hex, inf or
// nan (strtod takes all of those: "0x10" would be 16 s, "1e99" forever).
bool parse_seconds(const char *text, uint64_t *ns)
{
    const char *s = text;
    uint64_t whole = 0;
    if (*s < '0' || *s > '9') return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        whole = whole * 10 + (uint64_t)(*s - '0');
        if (whole > max_timeout_s) return false;
    }
    uint64_t frac_ns = 0;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9') return false;
        uint64_t scale = 100000000;
        for (; *s >= '0' && *s <= '9'; s++, scale /= 10) frac_ns += (uint64_t)(*s - '0') * scale;
    }
    if (*s != '\0') return false;
    *ns = whole * 1000000000ull + frac_ns;
    return true;
}

bool parse_small_int(const char *text, long lo, long hi, long *out)
{
    char *end = nullptr;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool parse_mode(const char *text, uint32_t *mode)
{
    if (*text == '\0' || strspn(text, "01234567") != strlen(text)) return false;
    unsigned long v = strtoul(text, nullptr, 8);
    if (v > 0777) return false;
    *mode = (uint32_t)v;
    return true;
}

uint64_t now_ns()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct Options {
    bool nonblock = false;
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int conflict_exit = 1;
    bool close_for_cmd = false; // -o
    bool verbose = false;
    bool fail_on_owner_dead = false;
    bool mode_given = false;
    uint32_t mode = 0600;
    bool group_given = false;
    gid_t group = 0;
    bool trust_given = false;
    uid_t trusted = 0;
};

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
bool owner_accepted(const struct stat &st, const Options &o)
{
    if (st.st_uid == geteuid()) return true;
    if (o.trust_given && st.st_uid == o.trusted) return true;
    return o.group_given && st.st_gid == o.group;
}

} // namespace

int cmd_run(int argc, char **argv)
{
    enum { opt_verbose = 256, opt_owner_dead, opt_mode, opt_group, opt_trust };
    static const struct option long_options[] = {
        {"nonblock", no_argument, nullptr, 'n'},
        {"nb", no_argument, nullptr, 'n'},
        {"wait", required_argument, nullptr, 'w'},
        {"timeout", required_argument, nullptr, 'w'},
        {"conflict-exit-code", required_argument, nullptr, 'E'},
        {"command", required_argument, nullptr, 'c'},
        {"close", no_argument, nullptr, 'o'},
        {"exclusive", no_argument, nullptr, 'x'},
        {"shared", no_argument, nullptr, 's'},
        {"unlock", no_argument, nullptr, 'u'},
        {"no-fork", no_argument, nullptr, 'F'},
        {"verbose", no_argument, nullptr, opt_verbose},
        {"on-owner-dead", required_argument, nullptr, opt_owner_dead},
        {"mode", required_argument, nullptr, opt_mode},
        {"group", required_argument, nullptr, opt_group},
        {"trust-owner", required_argument, nullptr, opt_trust},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    Options o;
    const char *shell_command = nullptr;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+nw:E:c:oxesuFh", long_options, nullptr)) != -1) {
        switch (c) {
        case 'n': o.nonblock = true; break;
        case 'w':
            if (!parse_seconds(optarg, &o.timeout_ns))
                return usage(std::string("-w/--timeout needs plain decimal seconds from 0 to "
                             "1000000000 (like 2 or 0.5), not '") + optarg + "'");
            break;
        case 'E': {
            long v;
            if (!parse_small_int(optarg, 0, 255, &v))
                return usage(std::string("-E/--conflict-exit-code needs a number from 0 to 255, "
                             "not '") + optarg + "'");
            o.conflict_exit = (int)v;
            break;
        }
        case 'c': shell_command = optarg; break;
        case 'o': o.close_for_cmd = true; break;
        case 'x':
        case 'e': break;
        case 's':
            return usage("-s/--shared: surelock's lock is a robust mutex, always exclusive; for "
                         "a shared lock use flock -s");
        case 'u':
            return usage("-u/--unlock: surelock run holds the lock only while CMD runs; there "
                         "is no descriptor to unlock");
        case 'F':
            return usage("-F/--no-fork: the lock belongs to surelock's own thread, so surelock "
                         "must stay alive while CMD runs");
        case opt_verbose: o.verbose = true; break;
        case opt_owner_dead:
            if (strcmp(optarg, "warn") != 0 && strcmp(optarg, "fail") != 0)
                return usage(std::string("--on-owner-dead is warn or fail, not '") + optarg + "'");
            o.fail_on_owner_dead = strcmp(optarg, "fail") == 0;
            break;
        case opt_mode:
            if (!parse_mode(optarg, &o.mode))
                return usage(std::string("--mode needs octal permission bits from 0 to 0777, "
                             "not '") + optarg + "'");
            o.mode_given = true;
            break;
        case opt_group: {
            long v;
            if (struct group *g = getgrnam(optarg)) o.group = g->gr_gid;
            else if (parse_small_int(optarg, 0, 0x7fffffff, &v)) o.group = (gid_t)v;
            else return usage(std::string("--group: no such group '") + optarg + "'");
            o.group_given = true;
            break;
        }
        case opt_trust: {
            long v;
            if (struct passwd *pw = getpwnam(optarg)) o.trusted = pw->pw_uid;
            else if (parse_small_int(optarg, 0, 0x7fffffff, &v)) o.trusted = (uid_t)v;
            else return usage(std::string("--trust-owner: no such user '") + optarg + "'");
            o.trust_given = true;
            break;
        }
        case 'h': print_run_help(stdout); return 0;
        case ':': // (opterr is 0 and the string has no leading ':', so getopt returns '?')
        case '?':
        default:
            if (optopt != 0 && strchr("wEc", optopt) != nullptr)
                return usage(std::string("option -") + (char)optopt + " needs a value");
            return usage(std::string("unknown option '") + argv[optind - 1] + "'");
        }
    }
    if (o.group_given) o.mode |= o.mode_given ? 0060 : 0660;
    if (o.nonblock) o.timeout_ns = 0;

    if (optind >= argc) return usage("LOCKFILE and CMD are missing");
    const char *path = argv[optind++];
    if (strcmp(path, "--") == 0 || *path == '\0')
        return usage(std::string("LOCKFILE is missing (found '") + path +
                     "' where it should be)");
    char **rest = argv + optind;
    char **command = rest;
    char *shell_argv[4] = {};
    if (shell_command != nullptr) { // -c before LOCKFILE
        if (*rest != nullptr) return usage("give either -c 'SHELL COMMAND' or CMD, not both");
    } else if (*rest != nullptr &&
               (strcmp(*rest, "-c") == 0 || strcmp(*rest, "--command") == 0)) {
        if (rest[1] == nullptr || rest[2] != nullptr)
            return usage("-c takes exactly one shell command string after LOCKFILE");
        shell_command = rest[1];
    } else if (*rest != nullptr && strcmp(*rest, "--") == 0) {
        command = rest + 1;
    }
    if (shell_command != nullptr) {
        const char *shell = getenv("SHELL");
        shell_argv[0] = const_cast<char *>(shell != nullptr && *shell != '\0' ? shell : "/bin/sh");
        shell_argv[1] = const_cast<char *>("-c");
        shell_argv[2] = const_cast<char *>(shell_command);
        command = shell_argv;
    }
    if (*command == nullptr) return usage("CMD is missing after LOCKFILE");

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
