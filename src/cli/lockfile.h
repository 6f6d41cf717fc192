// What the `surelock` tool can tell about a lock file without opening it as a lock: the header
// read with pread (nothing initialised, reset or locked), the holder named from /proc the way
// lslocks would, and the processes that keep a `surelock run` CMD marker.
#pragma once

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace surelock::cli {

// `surelock run` keeps an OFD write lock on this byte of the lock file for as long as CMD, or
// anything that inherited the lock from it, runs. Byte 0 is the library's "a handle is open"
// marker; no other byte is locked by anyone.
constexpr off_t run_marker_offset = 1;

// A live process or thread, as /proc shows it.
struct Process {
    pid_t pid = 0;             // thread group id
    pid_t tid = 0;             // the thread (== pid for a single-threaded process)
    bool alive = false;        // /proc/TID exists
    std::string cmdline;       // NUL-separated argv joined with spaces ("" when unreadable)
    double thread_age_s = -1;  // seconds since the thread started (-1: unknown)
};

enum class FileKind { missing, empty, lock, unfinished, foreign, unreadable };

struct LockView {
    FileKind kind = FileKind::missing;
    std::string error;          // why kind is foreign/unreadable/missing
    struct stat st{};
    uint32_t format_version = 0;
    bool this_boot = false;
    bool this_pid_namespace = true; // made in the PID namespace this process is in
    bool held = false;          // the mutex word names a thread
    Process holder;             // when held
    bool last_holder_died = false; // the kernel marked the word owner-died, or needs recovery
    uint32_t recovery = 0;      // ipc_format CONSISTENT / NEEDS_RECOVERY / NOT_RECOVERABLE
    uint64_t owner_deaths = 0;
    uint64_t payload_size = 0;
    bool recursive = false;
    uint8_t lock_id[16] = {};
};

// Reads the file at path (never follows a symlink, never writes).
LockView read_lock_view(const char *path);

// The thread `tid` as /proc shows it (alive = false when it no longer exists).
Process describe_thread(pid_t tid);

// Processes (other than this one and `except`, the mutex holder) that hold an open file
// description of the file (dev, ino) carrying the `surelock run` marker lock: CMD and what it
// started. Only processes whose /proc/PID/fdinfo we may read are seen.
std::vector<Process> marker_holders(dev_t dev, ino_t ino, pid_t except);

// "consistent", "needs recovery", ... and what that means for the next holder, in words.
const char *recovery_name(uint32_t recovery);
const char *recovery_meaning(uint32_t recovery);

// "PID 12 (thread 13, started 4.2 s ago): sleep 30" for messages.
std::string describe(const Process &p);

} // namespace surelock::cli
