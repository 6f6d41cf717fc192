// `surelock run` and `surelock status`: the robust cross-process lock from the shell.
//
//   surelock run [--timeout SECONDS] [--on-owner-dead=warn|fail] LOCKFILE -- CMD [ARGS...]
//   surelock status LOCKFILE
//
// run holds the lock while CMD runs and exits with CMD's status (128+N when CMD is killed by
// signal N, 127 when it cannot be started). When the previous holder died holding the lock,
// `warn` (the default) says so on stderr and runs CMD, marking the lock consistent only if CMD
// succeeds: a CMD that fails leaves it in need of recovery for the next holder. `fail` exits 75
// (EX_TEMPFAIL) without running CMD, leaving it in need of recovery too. A timeout exits 75.
//
// status reads the file without opening it as a lock (nothing is initialised, reset or
// locked), so it is safe on a lock in use and on files that are not lock files.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string_view>

#include "commands.h"
#include "ipc_format.h"
#include "surelock.h"

namespace {

constexpr int exit_tempfail = 75; // sysexits.h EX_TEMPFAIL: timed out, or refused to run
constexpr int exit_cannot_run = 127;

void run_usage()
{
    fprintf(stderr, "Usage: surelock run [--timeout SECONDS] [--on-owner-dead=warn|fail] "
                    "LOCKFILE -- CMD [ARGS...]\n");
}

// Parses a non-negative decimal number of seconds into nanoseconds.
bool parse_seconds(const char *text, uint64_t *ns)
{
    char *end = nullptr;
    errno = 0;
    double seconds = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(seconds >= 0) || isinf(seconds))
        return false;
    *ns = seconds >= 1.8e10 ? SURELOCK_FOREVER : (uint64_t)(seconds * 1e9);
    return true;
}

pid_t running_child = -1;

// The lock of `surelock run`. A file-scope root on purpose: when the tool exits still holding
// it (to leave it in need of recovery), the handle cannot be closed and stays reachable.
surelock_ipc *run_lock = nullptr;

void forward_signal(int sig)
{
    if (running_child > 0) kill(running_child, sig);
}

// Runs argv as a child process and returns its exit status as a shell would report it.
int run_child(char **argv)
{
    struct sigaction forward{}, saved[4];
    const int forwarded[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    forward.sa_handler = forward_signal;
    sigemptyset(&forward.sa_mask);
    for (int i = 0; i < 4; i++) sigaction(forwarded[i], &forward, &saved[i]);

    fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "surelock run: fork: %s\n", strerror(errno));
        return exit_cannot_run;
    }
    if (pid == 0) {
        for (int i = 0; i < 4; i++) sigaction(forwarded[i], &saved[i], nullptr);
        execvp(argv[0], argv);
        fprintf(stderr, "surelock run: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(exit_cannot_run);
    }
    running_child = pid;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    running_child = -1;
    for (int i = 0; i < 4; i++) sigaction(forwarded[i], &saved[i], nullptr);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return exit_cannot_run;
}

} // namespace

int cmd_run(int argc, char **argv)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    bool fail_on_owner_dead = false;
    int i = 1;
    for (; i < argc; i++) {
        std::string_view a = argv[i];
        if (a == "--") break;
        if (a == "--timeout" || a.rfind("--timeout=", 0) == 0) {
            const char *value = a == "--timeout" ? (i + 1 < argc ? argv[++i] : nullptr)
                                                 : argv[i] + strlen("--timeout=");
            if (value == nullptr || !parse_seconds(value, &timeout_ns)) {
                fprintf(stderr, "surelock run: --timeout needs a number of seconds >= 0\n");
                run_usage();
                return 2;
            }
        } else if (a == "--on-owner-dead" || a.rfind("--on-owner-dead=", 0) == 0) {
            const char *value = a == "--on-owner-dead"
                                    ? (i + 1 < argc ? argv[++i] : nullptr)
                                    : argv[i] + strlen("--on-owner-dead=");
            std::string_view v = value ? value : "";
            if (v != "warn" && v != "fail") {
                fprintf(stderr, "surelock run: --on-owner-dead is warn or fail\n");
                run_usage();
                return 2;
            }
            fail_on_owner_dead = v == "fail";
        } else if (a.size() > 1 && a[0] == '-') {
            fprintf(stderr, "surelock run: unknown option %s\n", argv[i]);
            run_usage();
            return 2;
        } else {
            break; // LOCKFILE
        }
    }
    if (i + 2 >= argc || std::string_view(argv[i + 1]) != "--") {
        fprintf(stderr, "surelock run: expected LOCKFILE -- CMD [ARGS...]\n");
        run_usage();
        return 2;
    }
    const char *path = argv[i];
    char **command = argv + i + 2;

    int rc = surelock_ipc_open(path, nullptr, &run_lock);
    if (rc != 0) {
        fprintf(stderr, "surelock run: %s\n", surelock_errmsg());
        return 1;
    }
    surelock_ipc *lock = run_lock;
    rc = surelock_ipc_timedlock(lock, timeout_ns);
    if (rc == ETIMEDOUT) {
        fprintf(stderr, "surelock run: %s: not acquired within the timeout; not running %s\n",
                path, command[0]);
        surelock_ipc_close(lock);
        return exit_tempfail;
    }
    bool recovering = rc == EOWNERDEAD;
    if (rc != 0 && !recovering) {
        fprintf(stderr, "surelock run: %s\n", surelock_errmsg());
        surelock_ipc_close(lock);
        return 1;
    }
    if (recovering) {
        if (fail_on_owner_dead) {
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
    int status = run_child(command);
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
    return status;
}

int cmd_status(int argc, char **argv)
{
    using namespace surelock::ipc_format;
    if (argc != 2) {
        fprintf(stderr, "Usage: surelock status LOCKFILE\n");
        return 2;
    }
    const char *path = argv[1];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        fprintf(stderr, "surelock status: %s: %s\n", path,
                errno == ELOOP ? "is a symlink; not following it" : strerror(errno));
        return 1;
    }
    struct stat st;
    FileHeader h;
    ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? pread(fd, &h, sizeof h, 0) : -1;
    close(fd);
    if (got < 0) {
        fprintf(stderr, "surelock status: %s: not a regular file\n", path);
        return 1;
    }
    if (st.st_size == 0) {
        printf("%s: empty placeholder (initialised by the first open)\n", path);
        return 0;
    }
    if (got < (ssize_t)sizeof h || memcmp(h.magic, file_magic, sizeof file_magic) != 0) {
        fprintf(stderr, "surelock status: %s: not a surelock lock file\n", path);
        return 1;
    }
    printf("%s: surelock lock file, format version %u\n", path, h.format_version);
    if (h.format_version != format_version) return 0;
    if (h.init_state.load() != state_ready) {
        printf("  state:        unfinished (its creator died; redone by the next open)\n");
        return 0;
    }
    char boot_id[sizeof h.boot_id] = "";
    if (FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re")) {
        if (fgets(boot_id, sizeof boot_id, f) == nullptr) boot_id[0] = '\0';
        boot_id[strcspn(boot_id, "\n")] = '\0';
        fclose(f);
    }
    bool this_boot = strncmp(h.boot_id, boot_id, sizeof h.boot_id) == 0;
    unsigned word = (unsigned)h.mutex.__data.__lock;
    pid_t holder = (pid_t)(word & FUTEX_TID_MASK);
    uint32_t recovery = h.recovery_state.load();
    if (!this_boot)
        printf("  state:        free (left from an earlier boot; reset by the next open)\n");
    else if (holder != 0)
        printf("  state:        held by thread %d%s\n", (int)holder,
               kill(holder, 0) != 0 && errno == ESRCH ? " (which no longer exists)" : "");
    else if ((word & FUTEX_OWNER_DIED) || recovery == NEEDS_RECOVERY)
        printf("  state:        free; its last holder died (the next holder gets EOWNERDEAD)\n");
    else
        printf("  state:        free\n");
    printf("  recovery:     %s\n", recovery == CONSISTENT        ? "consistent"
                                   : recovery == NEEDS_RECOVERY  ? "needs recovery"
                                   : recovery == NOT_RECOVERABLE ? "not recoverable"
                                                                 : "corrupt");
    // A death the kernel has marked in the lock word is counted by its next acquirer.
    uint64_t deaths = h.owner_deaths.load() + (this_boot && (word & FUTEX_OWNER_DIED) ? 1 : 0);
    printf("  owner deaths: %llu\n", (unsigned long long)deaths);
    printf("  boot id:      %s\n", this_boot ? "matches this boot" : "from another boot");
    printf("  payload:      %llu bytes\n", (unsigned long long)h.payload_size);
    printf("  flags:        %s\n", (h.flags & SURELOCK_IPC_RECURSIVE) ? "recursive" : "none");
    printf("  lock id:      ");
    for (uint8_t b : h.lock_id) printf("%02x", b);
    printf("\n  file:         owner uid %u, mode 0%o, %lld bytes\n", (unsigned)st.st_uid,
           (unsigned)st.st_mode & 0777u, (long long)st.st_size);
    return 0;
}
