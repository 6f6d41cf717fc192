// `surelock run`'s command line, spelled like flock(1): the help text, the option values
// (seconds, exit codes, modes, groups, users) and where LOCKFILE and CMD are, read into a
// RunRequest (run.h). A file of its own because reading flock's many spellings is a concern
// apart from taking the lock and running CMD (run.cc): nothing here touches the lock file.
// The user's view is the man page, surelock.1.
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include "run.h"

namespace surelock::cli {
namespace {

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

} // namespace

int parse_run_command_line(int argc, char **argv, RunRequest *req)
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
    RunOptions &o = req->options;
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
    const char *path = req->path = argv[optind++];
    if (strcmp(path, "--") == 0 || *path == '\0')
        return usage(std::string("LOCKFILE is missing (found '") + path +
                     "' where it should be)");
    char **rest = argv + optind;
    char **&command = req->command;
    command = rest;
    char **shell_argv = req->shell_argv;
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
    return run_go_on;
}

} // namespace surelock::cli
