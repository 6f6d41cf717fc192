// The lock file's format as code (ipc_file.cc): this system's identity, and reading, validating
// and writing a header. The library's open (ipc_open.cc), `surelock status` and the file-format
// fuzzer all go through these functions, so they can never disagree on what a valid file is or
// on which boot this is. Errors are a positive errno with the reason in the calling thread's
// errmsg buffer (sys/errmsg.h): every reader gets the same words.
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc_format.h"
#include "surelock.h"

namespace surelock::ipc_file {

using ipc_format::FileHeader;

// What a complete, valid file must also match to be usable by this process.
struct Identity {
    char boot_id[40];
    uint64_t pid_namespace;
};

// This boot's id, from /proc/sys/kernel/random/boot_id without its newline, with no
// allocation. Returns 0, or an errno when it cannot be read (EIO when it is empty): an
// unknown boot id is never "" (that would be taken for another boot and reset a live lock).
int read_boot_id(char (&out)[40]);

// This boot's id and this process's PID namespace, or an errno with a message about `path`
// saying which of the two cannot be read and why it is needed. Never a value that differs:
// a wrong "other boot" would reset a live lock, a wrong namespace would refuse a good file.
int this_system(const char *path, Identity *id);

// The parsed surelock_ipc_options a file is made and checked with.
struct Options {
    uint32_t flags;
    uint32_t mode;
    size_t payload_size;
};

// Parses surelock_ipc_open's options (NULL: the defaults). Returns 0 or EINVAL.
int read_options(const surelock_ipc_options *o, Options *out);

size_t page_size();

// The size of a lock file whose payload is payload_size bytes: the header and whole pages.
size_t file_size_for(uint64_t payload_size);

// Initialises the robust, process-shared mutex the format holds, in place (also the reference
// a file's mutex is compared with). Returns 0 or pthread_mutex_init's error.
int init_mutex(pthread_mutex_t *mutex, bool recursive);

// The first bytes an initialiser writes, before anything else: magic, version and a
// not-ready state. A file that has them and is not ready is one whose initialiser died; every
// other file that is not empty and not complete is foreign.
struct Stamp {
    char magic[8];
    uint32_t format_version;
    uint32_t init_state;
};
static_assert(sizeof(Stamp) == offsetof(FileHeader, pointer_size));
Stamp unfinished_stamp();

// What a regular file's bytes say it is.
enum class Contents {
    empty,      // a placeholder (touch, an installer): the first open initialises it
    unfinished, // stamped by an initialiser that died: the next open redoes it
    complete,   // a whole header, to be validated by check_format / check_header
};

// Reads the header of the regular file `fd`, `file_size` bytes long, into *h and says what
// the file is. Anything that is neither empty, unfinished nor long enough for a header is
// EPROTO; a failing read is its errno.
int read_header(const char *path, int fd, off_t file_size, FileHeader *h, Contents *what);

// Checks a complete header against this build's format (everything but which system made
// it). Returns 0, or EPROTO with errmsg naming the first mismatch.
int check_format(const char *path, const FileHeader *h, off_t file_size);

// check_format, then that the file was made in this PID namespace (robust mutex owners are
// thread ids of the namespace that made it). The boot id is not checked: a file from an
// earlier boot is reset by open, not refused.
int check_header(const char *path, const FileHeader *h, off_t file_size, const Identity &id);

// Writes a complete header into a mapping of a file already sized for it. init_state goes
// to ready last, so a creator that dies earlier leaves a file detected as unfinished.
int init_header(const char *path, FileHeader *h, const Options &opt, const Identity &id);

// Resets what belongs to one boot and one lifetime of the mutex, keeping the lock's identity
// and payload: for a file from before a reboot and for a not-recoverable one. Returns 0 or
// pthread_mutex_init's error.
int reset_runtime_state(FileHeader *h, const Identity &id);

} // namespace surelock::ipc_file
