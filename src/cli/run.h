// `surelock run`, shared between its two files: run_options.cc reads the command line into a
// RunRequest; run.cc takes the lock and runs CMD under it (the decisions are at its top).
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "surelock.h"

namespace surelock::cli {

enum : int { exit_failure = 1, exit_usage = 2, exit_tempfail = 75, exit_not_executable = 126,
             exit_not_found = 127 };

struct RunOptions {
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

// What the command line asks for. `command` points into argv, or into shell_argv for -c
// ($SHELL -c STRING), so a RunRequest is filled in place and never copied.
struct RunRequest {
    RunOptions options;
    const char *path = nullptr;
    char **command = nullptr;
    char *shell_argv[4] = {};
};

// Returned by parse_run_command_line when CMD is to run under the lock.
constexpr int run_go_on = -1;

// Reads `surelock run`'s argv (argv[0] "run") into *req. Returns run_go_on, or the exit
// status when there is nothing to run: 0 after --help, exit_usage after a usage error (both
// already printed).
int parse_run_command_line(int argc, char **argv, RunRequest *req);

} // namespace surelock::cli
