// expect_exit: a test helper (not installed) that runs a command and checks how it ended.
//
//   expect_exit STATUS [--stdout-contains TEXT]... [--stdout-lacks TEXT]... -- PROGRAM [ARGS...]
//
// Exits 0 when PROGRAM exited normally with STATUS (and its stdout contains every TEXT of
// --stdout-contains and none of --stdout-lacks),
// 1 otherwise, 2 on bad usage. PROGRAM's stdout is echoed, its stderr passes through, so the
// test log shows what happened. Lets meson tests assert exact exit codes (2 for usage errors,
// and later 75 for `surelock run`) without a shell.
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: expect_exit STATUS [--stdout-contains TEXT]... -- PROGRAM "
                        "[ARGS...]\n");
        return 2;
    }
    char *end = nullptr;
    long expected = strtol(argv[1], &end, 10);
    if (*end != '\0' || expected < 0 || expected > 255) {
        fprintf(stderr, "expect_exit: bad STATUS '%s'\n", argv[1]);
        return 2;
    }
    std::vector<std::string> wanted, unwanted;
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--stdout-contains") == 0 && i + 1 < argc) {
            wanted.push_back(argv[++i]);
        } else if (strcmp(argv[i], "--stdout-lacks") == 0 && i + 1 < argc) {
            unwanted.push_back(argv[++i]);
        } else {
            fprintf(stderr, "expect_exit: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "expect_exit: no PROGRAM after --\n");
        return 2;
    }
    char **child_argv = argv + i + 1;

    int fds[2];
    if (pipe(fds) != 0) {
        perror("expect_exit: pipe");
        return 1;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    pid_t pid;
    int rc = posix_spawn(&pid, child_argv[0], &actions, nullptr, child_argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "expect_exit: cannot run %s: %s\n", child_argv[0], strerror(rc));
        close(fds[0]);
        return 1;
    }

    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, size_t(n));
    }
    close(fds[0]);
    fwrite(out.data(), 1, out.size(), stdout);

    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("expect_exit: waitpid");
            return 1;
        }
    }
    if (!WIFEXITED(status)) {
        fprintf(stderr, "expect_exit: %s was killed by signal %d, expected exit %ld\n",
                child_argv[0], WTERMSIG(status), expected);
        return 1;
    }
    if (WEXITSTATUS(status) != expected) {
        fprintf(stderr, "expect_exit: %s exited %d, expected %ld\n", child_argv[0],
                WEXITSTATUS(status), expected);
        return 1;
    }
    for (const std::string &w : wanted) {
        if (out.find(w) == std::string::npos) {
            fprintf(stderr, "expect_exit: stdout of %s lacks \"%s\"\n", child_argv[0],
                    w.c_str());
            return 1;
        }
    }
    for (const std::string &u : unwanted) {
        if (out.find(u) != std::string::npos) {
            fprintf(stderr, "expect_exit: stdout of %s has \"%s\"\n", child_argv[0],
                    u.c_str());
            return 1;
        }
    }
    return 0;
}
