// Reading a lock file and naming its holder from /proc: see lockfile.h.
#include "lockfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ipc_file.h"
#include "sys/errmsg.h"

namespace surelock::cli {
namespace {

using namespace surelock::ipc_format;
using namespace surelock::ipc_file;

// The whole (small) file at path, or "" when it cannot be read.
std::string read_small_file(const std::string &path)
{
    std::string out;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || out.size() > (1u << 20)) break;
        out.append(buf, (size_t)n);
    }
    close(fd);
    return out;
}

// The library's reason for the last failure of an ipc_file call made with path "", so that
// it reads "REASON" and not "PATH: REASON" (status prints the path itself).
std::string reason()
{
    return surelock::sys::errmsg();
}

// A file the library would refuse, in its words, led by what it means for status.
std::string refused()
{
    std::string why = reason();
    const char *lead = "not a surelock lock file";
    return why.rfind(lead, 0) == 0 ? why : std::string(lead) + " that this build can use: " + why;
}

} // namespace

// The header is read and judged by the library's own code (ipc_file.cc), so status calls a
// file valid, unfinished or refused exactly when surelock_ipc_open would, and in its words.
// Status is more forgiving in one way only: a file made in another PID namespace is described
// (as such), since telling so is what status is for there.
LockView read_lock_view(const char *path)
{
    LockView v;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        v.kind = e == ENOENT ? FileKind::missing : FileKind::unreadable;
        v.error = e == ELOOP ? "is a symlink; not following it" : strerror(e);
        return v;
    }
    FileHeader h;
    memset(static_cast<void *>(&h), 0, sizeof h);
    Contents contents = Contents::empty;
    bool read = false;
    if (fstat(fd, &v.st) != 0) {
        v.kind = FileKind::unreadable;
        v.error = strerror(errno);
    } else if (!S_ISREG(v.st.st_mode)) {
        v.kind = FileKind::foreign;
        v.error = "not a regular file";
    } else if (int rc = read_header("", fd, v.st.st_size, &h, &contents); rc != 0) {
        v.kind = rc == EPROTO ? FileKind::foreign : FileKind::unreadable;
        v.error = rc == EPROTO ? refused() : reason();
    } else {
        read = true;
    }
    close(fd);
    if (!read) return v;
    if (contents == Contents::empty) {
        v.kind = FileKind::empty;
        return v;
    }
    v.format_version = h.format_version;
    if (contents == Contents::unfinished) {
        v.kind = FileKind::unfinished;
        return v;
    }
    if (check_format("", &h, v.st.st_size) != 0) {
        v.kind = FileKind::foreign;
        v.error = refused();
        return v;
    }
    // Which boot and namespace this is, or an error: an unknown boot id is no "other boot".
    Identity id;
    if (this_system("", &id) != 0) {
        v.kind = FileKind::unreadable;
        v.error = reason();
        return v;
    }
    v.kind = FileKind::lock;
    v.this_boot = strncmp(h.boot_id, id.boot_id, sizeof h.boot_id) == 0;
    v.this_pid_namespace = h.pid_namespace == id.pid_namespace;
    unsigned word = (unsigned)h.mutex.__data.__lock;
    pid_t tid = (pid_t)(word & FUTEX_TID_MASK);
    v.recovery = h.recovery_state.load();
    v.held = v.this_boot && tid != 0;
    if (v.held) v.holder = describe_thread(tid);
    v.last_holder_died =
        v.this_boot && ((word & FUTEX_OWNER_DIED) || v.recovery == NEEDS_RECOVERY);
    // A death the kernel has marked in the word is counted by the next acquirer.
    v.owner_deaths = h.owner_deaths.load() + (v.this_boot && (word & FUTEX_OWNER_DIED) ? 1 : 0);
    v.payload_size = h.payload_size;
    v.recursive = (h.flags & SURELOCK_IPC_RECURSIVE) != 0;
    memcpy(v.lock_id, h.lock_id, sizeof v.lock_id);
    return v;
}

Process describe_thread(pid_t tid)
{
    Process p;
    p.tid = tid;
    std::string status = read_small_file("/proc/" + std::to_string(tid) + "/status");
    const char *tgid = strstr(status.c_str(), "\nTgid:");
    if (tgid == nullptr) return p; // gone (or /proc hides it)
    p.alive = true;
    p.pid = (pid_t)atoi(tgid + strlen("\nTgid:"));
    p.cmdline = read_small_file("/proc/" + std::to_string(p.pid) + "/cmdline");
    while (!p.cmdline.empty() && p.cmdline.back() == '\0') p.cmdline.pop_back();
    for (char &c : p.cmdline)
        if (c == '\0') c = ' ';
    // Field 22 of stat is the start time in clock ticks since boot; fields are counted after
    // the last ')' because the command name may contain spaces and parentheses.
    std::string stat = read_small_file("/proc/" + std::to_string(p.pid) + "/task/" +
                                       std::to_string(tid) + "/stat");
    std::string uptime = read_small_file("/proc/uptime");
    size_t close_paren = stat.rfind(')');
    if (close_paren != std::string::npos && !uptime.empty()) {
        const char *s = stat.c_str() + close_paren + 1;
        for (int field = 3; field < 22 && s != nullptr; field++) s = strchr(s + 1, ' ');
        if (s != nullptr) {
            double start_ticks = strtod(s + 1, nullptr);
            double up = strtod(uptime.c_str(), nullptr);
            long hz = sysconf(_SC_CLK_TCK);
            if (hz > 0 && up > 0) p.thread_age_s = up - start_ticks / (double)hz;
        }
    }
    return p;
}

std::vector<Process> marker_holders(dev_t dev, ino_t ino, pid_t except)
{
    // /proc/PID/fdinfo/FD lists the locks held through that open file description, as
    // /proc/locks prints them (OFD locks show pid -1 there, so fdinfo is the only way to see
    // who holds one): "lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:1234 1 1".
    char wanted[96];
    snprintf(wanted, sizeof wanted, " %02x:%02x:%llu %lld %lld", major(dev), minor(dev),
             (unsigned long long)ino, (long long)run_marker_offset,
             (long long)run_marker_offset);
    std::vector<Process> found;
    DIR *proc = opendir("/proc");
    if (proc == nullptr) return found;
    pid_t self = getpid();
    while (struct dirent *e = readdir(proc)) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == self || pid == except) continue;
        std::string dir = std::string("/proc/") + e->d_name + "/fdinfo";
        DIR *fds = opendir(dir.c_str());
        if (fds == nullptr) continue;
        bool holds = false;
        while (struct dirent *f = readdir(fds)) {
            if (f->d_name[0] == '.') continue;
            std::string info = read_small_file(dir + "/" + f->d_name);
            for (size_t at = info.find("OFDLCK"); at != std::string::npos && !holds;
                 at = info.find("OFDLCK", at + 1)) {
                size_t eol = info.find('\n', at);
                std::string line = info.substr(at, eol == std::string::npos ? eol : eol - at);
                holds = line.find("WRITE") != std::string::npos &&
                        line.size() >= strlen(wanted) &&
                        line.compare(line.size() - strlen(wanted), strlen(wanted), wanted) == 0;
            }
            if (holds) break;
        }
        closedir(fds);
        if (holds) {
            Process p = describe_thread((pid_t)pid);
            if (p.alive) found.push_back(p);
        }
    }
    closedir(proc);
    return found;
}

const char *recovery_name(uint32_t recovery)
{
    switch (recovery) {
    case CONSISTENT: return "consistent";
    case NEEDS_RECOVERY: return "needs recovery";
    case NOT_RECOVERABLE: return "not recoverable";
    default: return "corrupt";
    }
}

const char *recovery_meaning(uint32_t recovery)
{
    switch (recovery) {
    case CONSISTENT: return "nothing to repair";
    case NEEDS_RECOVERY:
        return "a holder died holding the lock; the next holder gets EOWNERDEAD and repairs "
               "what it protects (`surelock run` in warn mode: a CMD that exits 0)";
    case NOT_RECOVERABLE:
        return "a holder took the lock after an owner death and released it without repairing "
               "it; lock calls fail with ENOTRECOVERABLE until the file is re-initialised, "
               "which opening it does once no process has it open (or a reboot)";
    default: return "the recovery field holds an unknown value; the library refuses the file";
    }
}

std::string describe(const Process &p)
{
    std::string s = "PID " + std::to_string(p.pid);
    if (p.tid != p.pid) s += " (thread " + std::to_string(p.tid) + ")";
    if (p.thread_age_s >= 0) {
        char age[64];
        snprintf(age, sizeof age, ", its thread started %.1f s ago", p.thread_age_s);
        s += age;
    }
    s += ": " + (p.cmdline.empty() ? std::string("(command line not readable)") : p.cmdline);
    return s;
}

} // namespace surelock::cli
