// Subcommands of the `surelock` tool implemented outside surelock.cc. Each takes argv with
// argv[0] the command name and returns the process exit status.
#pragma once

int cmd_run(int argc, char **argv);    // run.cc
int cmd_status(int argc, char **argv); // status.cc
