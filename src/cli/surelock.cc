// `surelock`: the command-line tool.
//
//   surelock --help | --version
//   surelock bench [PRIMITIVE] [--runs N] [--quick] [--verbose] [--list]
//   surelock run [OPTIONS] LOCKFILE [--] CMD [ARGS...]   (run.cc)
//   surelock status [--json] LOCKFILE                    (status.cc)
//   surelock help [COMMAND]
//
// Exit status: 0 success, 1 failure, 2 usage error. Subcommands are rows of `commands` below;
// a new one is a function `int cmd_<name>(int argc, char **argv)` (argv[0] is the command
// name) plus its row. The tool links the shared libsurelock.so.1 like any user program.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include "commands.h"
#include "surelock.h"
#if SURELOCK_HAVE_BENCH
#include "bench.h"
#endif

namespace {

enum : int { exit_ok = 0, exit_failure = 1, exit_usage = 2 };

constexpr const char *program = "surelock";

struct Command {
    const char *name;
    const char *synopsis; // arguments, after "surelock NAME"
    const char *summary;
    int (*main)(int argc, char **argv); // nullptr: not in this version
    const char *coming;                 // when main is nullptr: what brings it
};

int cmd_bench(int argc, char **argv);

const Command commands[] = {
    {"bench", "[PRIMITIVE] [--runs N] [--quick] [--targets] [--plot FILE.svg] [--list]",
     "measure surelock's locks against their peers (pthreads, C++ std)", cmd_bench, nullptr},
    {"run", "[-n | -w SECONDS] [-E N] [-o] [--verbose] [--on-owner-dead=warn|fail] LOCKFILE "
            "[--] CMD [ARGS...] | -c 'SHELL COMMAND'",
     "run CMD while holding a robust cross-process lock, like flock(1), and be told when the "
     "previous holder died",
     cmd_run, nullptr},
    {"status", "[--json] LOCKFILE",
     "describe a lock file: held or free, by whom, owner deaths, recovery state", cmd_status,
     nullptr},
};

std::string bench_primitives()
{
#if SURELOCK_HAVE_BENCH
    std::string names;
    for (const auto &s : surelock::bench::suites()) {
        if (!names.empty()) names += ", ";
        names += s.name;
    }
    return names;
#else
    return "none: built with -Dbench=false";
#endif
}

void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: %s COMMAND [ARGS...]\n"
            "       %s --help | --version\n"
            "\n"
            "Locks for when a plain mutex is not enough (libsurelock %s).\n"
            "\n"
            "Commands:\n",
            program, program, surelock_version());
    for (const Command &c : commands) {
        fprintf(out, "  %s %s\n", c.name, c.synopsis);
        fprintf(out, "      %s%s%s%s\n", c.summary, c.main ? "" : " (", c.main ? "" : c.coming,
                c.main ? "" : ")");
    }
    fprintf(out,
            "\n"
            "Options:\n"
            "  -h, --help      show this help and exit\n"
            "  -V, --version   print the library's version and exit\n"
            "\n"
            "Benchmarked primitives: %s.\n"
            "'%s COMMAND --help' describes a command.\n"
            "Exit status: 0 success, 1 failure, 2 usage error.\n",
            bench_primitives().c_str(), program);
}

// Prints "surelock: [COMMAND: ]message" and where to find help; returns the usage exit code.
int usage_error(const char *command, const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", program);
    if (command) fprintf(stderr, "%s: ", command);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s%s%s --help'.\n", program, command ? " " : "",
            command ? command : "");
    return exit_usage;
}

// ---- surelock bench --------------------------------------------------------------------------

void print_bench_usage(FILE *out)
{
    fprintf(out,
            "Usage: %s bench [PRIMITIVE] [--runs N] [--quick] [--verbose] [--targets]\n"
            "                [--settle SECONDS] [--plot FILE.svg] [--list]\n"
            "\n"
            "Measures a surelock primitive against its peers and prints a table of absolute\n"
            "numbers, ratios (surelock / peer), the spread of the runs and, for contended\n"
            "rows, how many CPUs the threads really kept busy.\n"
            "Without PRIMITIVE, runs every benchmark. Primitives: %s.\n"
            "\n"
            "Options:\n"
            "  --runs N          samples per cell, the cell shows their median (default 5)\n"
            "  --quick           10x shorter samples: a smoke run with rough numbers\n"
            "  --verbose         also print every sample\n"
            "  --targets         also print the project's targets, marked met or missed\n"
            "  --settle SECONDS  first wait up to SECONDS for other processes to leave the\n"
            "                    CPUs, and say whether they did (default 10; 1 with --quick;\n"
            "                    0: do not wait)\n"
            "  --plot FILE.svg   draw the scaling rows (threads 1..16) as an SVG line plot\n"
            "                    (runs the scaling benchmark: no PRIMITIVE, or 'scaling')\n"
            "  --list            list the primitives and exit\n"
            "  -h, --help        show this help and exit\n"
            "\n"
            "Exit status: 0 measured (whatever the numbers and targets), 1 a lock misbehaved\n"
            "or a result could not be written (or this build has no benchmarks), 2 usage\n"
            "error.\n",
            program, bench_primitives().c_str());
}

bool parse_seconds(const char *text, double *seconds)
{
    if (text == nullptr || *text == '\0') return false;
    char *end = nullptr;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !(v >= 0 && v <= 3600)) return false;
    *seconds = v;
    return true;
}

bool parse_runs(const char *text, int *runs)
{
    if (text == nullptr || *text == '\0') return false;
    char *end = nullptr;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 1000) return false;
    *runs = int(v);
    return true;
}

int cmd_bench(int argc, char **argv)
{
    const char *primitive = nullptr;
    int runs = 5;
    bool quick = false, verbose = false, list = false, targets = false;
    double settle = -1; // -1: the default for the mode
    const char *plot = nullptr;
    for (int i = 1; i < argc; i++) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            print_bench_usage(stdout);
            return exit_ok;
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--verbose" || a == "-v") {
            verbose = true;
        } else if (a == "--list") {
            list = true;
        } else if (a == "--targets") {
            targets = true;
        } else if (a == "--plot" || a.starts_with("--plot=")) {
            plot = a == "--plot" ? (i + 1 < argc ? argv[++i] : nullptr) : argv[i] + strlen("--plot=");
            if (plot == nullptr || *plot == '\0')
                return usage_error("bench", "--plot needs a file name%s", "");
        } else if (a == "--settle" || a.starts_with("--settle=")) {
            const char *value = a == "--settle" ? (i + 1 < argc ? argv[++i] : nullptr)
                                                : argv[i] + strlen("--settle=");
            if (!parse_seconds(value, &settle))
                return usage_error("bench", "--settle needs seconds from 0 to 3600, not '%s'",
                                   value ? value : "");
        } else if (a == "--runs" || a.starts_with("--runs=")) {
            const char *value = a == "--runs" ? (i + 1 < argc ? argv[++i] : nullptr)
                                              : argv[i] + strlen("--runs=");
            if (!parse_runs(value, &runs))
                return usage_error("bench", "--runs needs a whole number from 1 to 1000, not '%s'",
                                   value ? value : "");
        } else if (a.starts_with("-")) {
            return usage_error("bench", "unknown option '%s'", argv[i]);
        } else if (primitive != nullptr) {
            return usage_error("bench", "one primitive at a time (extra argument '%s')", argv[i]);
        } else {
            primitive = argv[i];
        }
    }

#if SURELOCK_HAVE_BENCH
    namespace b = surelock::bench;
    if (list) {
        for (const b::Suite &s : b::suites()) printf("%-8s %s\n", s.name, s.summary);
        return exit_ok;
    }
    std::vector<const b::Suite *> chosen;
    if (primitive != nullptr) {
        const b::Suite *s = b::find_suite(primitive);
        if (s == nullptr) {
            fprintf(stderr, "%s: bench: unknown primitive '%s' (available: %s)\n", program,
                    primitive, bench_primitives().c_str());
            return exit_usage;
        }
        chosen.push_back(s);
    } else {
        for (const b::Suite &s : b::suites()) chosen.push_back(&s);
    }

    if (plot != nullptr && primitive != nullptr && std::string_view(primitive) != "scaling")
        return usage_error("bench",
                           "--plot draws the scaling rows: use it with 'scaling' or without a "
                           "primitive, not with '%s'",
                           primitive);

    if (plot != nullptr) { // find out before measuring for minutes, not after
        FILE *f = fopen(plot, "we");
        if (f == nullptr) {
            fprintf(stderr, "%s: bench: cannot write the plot to %s: %s\n", program, plot,
                    strerror(errno));
            return exit_failure;
        }
        fclose(f);
    }

    b::Options options;
    options.runs = runs;
    options.quick = quick;
    options.verbose = verbose;
    options.targets = targets;
    if (plot != nullptr) options.plot = plot;
    // Line-buffered, so `surelock bench | tee` shows each table as soon as it is done.
    setvbuf(stdout, nullptr, _IOLBF, 0);
    b::wait_for_quiet_machine(stdout, settle >= 0 ? settle : quick ? 1 : 10);
    printf("\n");
    int rc = exit_ok;
    bool first = true;
    for (const b::Suite *s : chosen) {
        if (!first) printf("\n");
        first = false;
        if (isatty(STDERR_FILENO))
            fprintf(stderr, "%s: measuring %s (%d run%s per cell)...\n", program, s->name, runs,
                    runs == 1 ? "" : "s");
        if (b::run_suite(*s, options) != b::bench_ok) rc = exit_failure;
    }
    return rc;
#else
    (void)primitive;
    (void)runs;
    (void)quick;
    (void)verbose;
    (void)list;
    (void)targets;
    (void)settle;
    (void)plot;
    fprintf(stderr,
            "%s: bench: this surelock was built without benchmarks "
            "(reconfigure with -Dbench=true)\n",
            program);
    return exit_failure;
#endif
}

} // namespace

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return exit_usage;
    }
    std::string_view first = argv[1];
    if (first == "help" && argc == 3) { // `surelock help COMMAND` is `surelock COMMAND --help`
        char help_flag[] = "--help";
        char *help_argv[] = {argv[2], help_flag, nullptr};
        for (const Command &c : commands)
            if (c.main != nullptr && argv[2] == std::string_view(c.name))
                return c.main(2, help_argv);
        return usage_error(nullptr, "help: unknown command '%s'", argv[2]);
    }
    if (first == "-h" || first == "--help" || first == "help") {
        print_usage(stdout);
        return exit_ok;
    }
    if (first == "-V" || first == "--version") {
        printf("%s %s\n", program, surelock_version());
        return exit_ok;
    }
    for (const Command &c : commands) {
        if (first != c.name) continue;
        if (c.main == nullptr) {
            fprintf(stderr, "%s: '%s' is not in this version (%s)\n", program, c.name, c.coming);
            return exit_usage;
        }
        return c.main(argc - 1, argv + 1);
    }
    if (first.starts_with("-")) return usage_error(nullptr, "unknown option '%s'", argv[1]);
    return usage_error(nullptr, "unknown command '%s'", argv[1]);
}
