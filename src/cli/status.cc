// `surelock status [--json] LOCKFILE`: describes a lock file as lslocks would, without opening
// it as a lock (nothing is initialised, reset or locked), so it is safe on a lock in use and on
// files that are not lock files.
//
// How long the holder has held the lock cannot be known: the file records no acquisition time
// (reading a clock on every acquire would slow the fast path). What is shown instead is the
// holder thread's age from /proc, labelled as such: the lock was taken at or after that.
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "commands.h"
#include "ipc_format.h"
#include "lockfile.h"

using namespace surelock::cli;

namespace {

void print_status_help(FILE *out)
{
    fprintf(out,
            "Usage: surelock status [--json] LOCKFILE\n"
            "\n"
            "Describes a lock file without opening it as a lock: held or free, by which\n"
            "process (PID, thread, command line, the holder thread's age), commands started by\n"
            "`surelock run` that still keep it, owner deaths since the file was made, and the\n"
            "recovery state in words. The file records no acquisition time: the thread's age is\n"
            "an upper bound of how long it has held the lock.\n"
            "\n"
            "Options:\n"
            "  --json       one JSON object on stdout, for scripts\n"
            "  -h, --help   show this help and exit\n"
            "\n"
            "Exit status: 0 described (a lock file or an empty placeholder), 1 missing,\n"
            "unreadable or not a surelock lock file (one the library would refuse, with its\n"
            "reason), or this boot's id cannot be read; 2 usage error.\n");
}

std::string json_string(const std::string &s)
{
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        } else {
            out += (char)c; // UTF-8 passes through; invalid bytes are the caller's command line
        }
    }
    return out + "\"";
}

std::string json_process(const Process &p)
{
    char age[48] = "null";
    if (p.thread_age_s >= 0) snprintf(age, sizeof age, "%.3f", p.thread_age_s);
    return "{\"pid\": " + std::to_string(p.pid) + ", \"tid\": " + std::to_string(p.tid) +
           ", \"alive\": " + (p.alive ? "true" : "false") +
           ", \"cmdline\": " + json_string(p.cmdline) + ", \"thread_age_seconds\": " + age + "}";
}

const char *state_word(const LockView &v)
{
    if (!v.this_boot) return "stale";
    if (v.held) return v.holder.alive ? "held" : "held_by_dead_thread";
    return "free";
}

int print_json(const char *path, const LockView &v, const std::vector<Process> &cmds)
{
    std::string out = "{\"path\": " + json_string(path);
    if (v.kind == FileKind::empty) {
        printf("%s, \"kind\": \"empty\", \"state\": \"free\"}\n", out.c_str());
        return 0;
    }
    out += ", \"kind\": " + std::string(v.kind == FileKind::lock ? "\"lock\"" : "\"unfinished\"");
    out += ", \"format_version\": " + std::to_string(v.format_version);
    if (v.kind == FileKind::lock) {
        out += ", \"state\": \"" + std::string(state_word(v)) + "\"";
        out += ", \"holder\": " + (v.held ? json_process(v.holder) : std::string("null"));
        out += ", \"commands\": [";
        for (size_t i = 0; i < cmds.size(); i++)
            out += (i ? ", " : "") + json_process(cmds[i]);
        out += "], \"last_holder_died\": " + std::string(v.last_holder_died ? "true" : "false");
        out += ", \"recovery\": " + json_string(recovery_name(v.recovery));
        out += ", \"recovery_meaning\": " + json_string(recovery_meaning(v.recovery));
        out += ", \"owner_deaths\": " + std::to_string(v.owner_deaths);
        out += ", \"this_boot\": " + std::string(v.this_boot ? "true" : "false");
        out += ", \"this_pid_namespace\": " + std::string(v.this_pid_namespace ? "true" : "false");
        out += ", \"payload_bytes\": " + std::to_string(v.payload_size);
        out += ", \"recursive\": " + std::string(v.recursive ? "true" : "false");
        out += ", \"lock_id\": \"";
        for (uint8_t b : v.lock_id) {
            char hex[3];
            snprintf(hex, sizeof hex, "%02x", b);
            out += hex;
        }
        out += "\"";
    } else {
        out += ", \"state\": \"unfinished\"";
    }
    char mode[8];
    snprintf(mode, sizeof mode, "0%o", (unsigned)v.st.st_mode & 0777u);
    out += ", \"file\": {\"uid\": " + std::to_string(v.st.st_uid) +
           ", \"gid\": " + std::to_string(v.st.st_gid) + ", \"mode\": \"" + mode +
           "\", \"bytes\": " + std::to_string((long long)v.st.st_size) + "}}";
    printf("%s\n", out.c_str());
    return 0;
}

} // namespace

int cmd_status(int argc, char **argv)
{
    bool json = false;
    const char *path = nullptr;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            print_status_help(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && path == nullptr) {
            path = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "surelock status: unknown option '%s'\n", argv[i]);
            print_status_help(stderr);
            return 2;
        } else if (path == nullptr) {
            path = argv[i];
        } else {
            fprintf(stderr, "surelock status: one LOCKFILE at a time (extra '%s')\n", argv[i]);
            return 2;
        }
    }
    if (path == nullptr) {
        print_status_help(stderr);
        return 2;
    }
    LockView v = read_lock_view(path);
    switch (v.kind) {
    case FileKind::missing:
    case FileKind::unreadable:
    case FileKind::foreign:
        fprintf(stderr, "surelock status: %s: %s\n", path, v.error.c_str());
        return 1;
    case FileKind::empty:
        if (json) return print_json(path, v, {});
        printf("%s: empty placeholder (initialised by the first open)\n", path);
        return 0;
    case FileKind::unfinished:
        if (json) return print_json(path, v, {});
        printf("%s: surelock lock file, format version %u\n", path, v.format_version);
        printf("  state:        unfinished (its creator died; redone by the next open)\n");
        return 0;
    case FileKind::lock:
        break;
    }
    std::vector<Process> cmds = v.this_boot ? marker_holders(v.st.st_dev, v.st.st_ino, v.held ? v.holder.pid : 0)
                                            : std::vector<Process>{};
    if (json) return print_json(path, v, cmds);

    printf("%s: surelock lock file, format version %u\n", path, v.format_version);
    if (!v.this_boot)
        printf("  state:        free (left from an earlier boot; reset by the next open)\n");
    else if (v.held && v.holder.alive)
        printf("  state:        held by %s\n", describe(v.holder).c_str());
    else if (v.held)
        printf("  state:        held by thread %d (which no longer exists)\n", (int)v.holder.tid);
    else if (v.last_holder_died)
        printf("  state:        free; its last holder died (the next holder gets EOWNERDEAD)\n");
    else
        printf("  state:        free\n");
    if (v.held && v.holder.alive)
        printf("  held for:     unknown (the file records no acquisition time); at most the "
               "thread's age\n");
    for (const Process &p : cmds)
        printf("  kept by:      %s (a command started by `surelock run`)\n",
               describe(p).c_str());
    printf("  recovery:     %s: %s\n", recovery_name(v.recovery), recovery_meaning(v.recovery));
    printf("  owner deaths: %llu (since the file was made)\n",
           (unsigned long long)v.owner_deaths);
    printf("  boot id:      %s\n", v.this_boot ? "matches this boot" : "from another boot");
    printf("  namespace:    %s\n",
           v.this_pid_namespace ? "made in this PID namespace"
                                : "made in another PID namespace: unusable here (see surelock(1))");
    printf("  payload:      %llu bytes\n", (unsigned long long)v.payload_size);
    printf("  flags:        %s\n", v.recursive ? "recursive" : "none");
    printf("  lock id:      ");
    for (uint8_t b : v.lock_id) printf("%02x", b);
    printf("\n  file:         owner uid %u, group %u, mode 0%o, %lld bytes\n",
           (unsigned)v.st.st_uid, (unsigned)v.st.st_gid, (unsigned)v.st.st_mode & 0777u,
           (long long)v.st.st_size);
    return 0;
}
