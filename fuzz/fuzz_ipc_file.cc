// File-format fuzzer for the robust cross-process mutex (API.md section 4): arbitrary bytes as
// an existing lock file.
//
// Each input is two control bytes followed by the file's bytes. The file is written fresh (a
// new inode, owned by us, with the mode the control byte picks) in a directory made once per
// process, then opened with surelock_ipc_open under options the control bytes pick. The
// contract checked, any mismatch printing what happened and aborting:
//  - open agrees with the library's own validator of the format (ipc_file.cc, which
//    `surelock status` uses too), run on the file before the open: a file it refuses is EPROTO
//    with its very words (unless the mode is refused first: EPERM); an empty or unfinished
//    file is initialised; a complete valid file is opened, or refused only for options that
//    do not match it (EINVAL) or for its live mutex (EPROTO/ETIMEDOUT naming the lock word);
//  - open returns 0 or one of the errors it documents for an existing file: EPERM, EPROTO,
//    EINVAL (and ENOMEM when an allocation failure was injected); never a crash or a hang;
//  - a file with group/world write bits the options' mode does not grant is EPERM, whatever
//    its bytes; otherwise never EPERM; an empty file is initialised; a non-empty file shorter
//    than the 4096-byte header is EPROTO; EINVAL only when RECURSIVE or a payload_size was
//    asked for; an injected allocation failure is ENOMEM;
//  - a refused file is left exactly as it was: every byte, the size and the mode;
//  - only an empty file or a file of a lock file's size (4096 + a multiple of the page size)
//    can be opened: any other size is not "a complete, valid surelock file";
//  - an opened file is complete and of this system: magic, version, ready, this boot id and
//    PID namespace, the size its payload_size implies, not left "not recoverable" (this is the
//    only handle, so an unrecoverable lock must have been started over), accepted by the
//    validator, the payload is mapped and writable end to end;
//  - a non-blocking acquire either holds the lock (0, or EOWNERDEAD with needs_recovery 1) or
//    holds nothing (then unlock is EPERM); a holder's re-acquire is EDEADLK, or 0 when the
//    file is recursive; close while held is EBUSY; consistent after EOWNERDEAD is 0; unlock
//    is 0; unlocking after EOWNERDEAD without consistent makes the next acquire
//    ENOTRECOVERABLE; otherwise the next acquire gets the lock; close is 0.
//
// Control bytes (c0 = data[0], c1 = data[1]):
//   c0 bits 0-1  flags: 0 none, 1 SURELOCK_IPC_RECURSIVE, 2 SURELOCK_IPC_ANY_OWNER,
//                3 SURELOCK_IPC_NOCREATE
//   c0 bits 2-3  options.payload_size: 0 (as existing), 1, 100, one page
//   c0 bits 4-5  the file's mode: 0600, 0620, 0606, 0666
//   c0 bit 6     options.mode 0666 (else 0600)
//   c0 bit 7     keep the file's pid_namespace field as given (else this process's is
//                stamped in at offset 80, so that seeds made on one machine still reach the
//                deeper checks on another)
//   c1 bit 0     keep the file's boot_id as given (else this boot's is stamped in at offset
//                40: the mutex bytes are then used as they are, not reset as a previous
//                boot's)
//   c1 bit 1     after EOWNERDEAD, unlock without surelock_ipc_consistent
//   c1 bit 2     open a second handle to the file after the first, and use it too
//   c1 bit 3     inject an allocation failure into a first open (must be ENOMEM, changing
//                nothing), then open again normally
//   c1 bit 4     acquire with timedlock(0) instead of trylock
// Stamping only happens in a file that starts with the magic and is long enough to hold the
// field (so that, say, an all-zero file stays all zero).
//
// The seed corpus (fuzz/corpus/ipc_file) holds, behind the control bytes: a valid file made
// by the library (with and without payload, recursive), truncated copies, wrong magic,
// version, pointer size, mutex size, libc, header size, flags, recovery state; an unfinished
// header (init_state 0) and an all-zero one; a stale boot id over a held mutex; a
// not-recoverable and a needs-recovery state; a mutex left owner-dead by a killed holder; a
// mutex held by PID 1 (always alive, so busy); an empty file; refused modes; an injected
// allocation failure.

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc_file.h"
#include "surelock.h"
#include "sys/testing.h"

using surelock::ipc_format::FileHeader;
namespace ipc_file = surelock::ipc_file;

namespace {

bool g_trace; // SURELOCK_FUZZ_TRACE=1: print what each input did
char g_dir[PATH_MAX];
char g_path[PATH_MAX + 8];
ipc_file::Identity g_system; // this boot's id and PID namespace, read as the library reads them

void remove_dir()
{
    unlink(g_path);
    rmdir(g_dir);
}

void setup_once()
{
    if (g_dir[0] != '\0') return;
    // Everything this fuzzer writes goes into its own fresh directory (under $TMPDIR), which
    // it removes at exit.
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/surelock-fuzz-ipc-XXXXXX", tmp != nullptr && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(g_dir) == nullptr) {
        perror("mkdtemp");
        abort();
    }
    snprintf(g_path, sizeof g_path, "%s/lock", g_dir);
    atexit(remove_dir);
    const char *trace = getenv("SURELOCK_FUZZ_TRACE");
    g_trace = trace != nullptr && trace[0] == '1';
    if (ipc_file::this_system(g_path, &g_system) != 0) {
        fprintf(stderr, "fuzz_ipc_file: %s\n", surelock_errmsg());
        abort();
    }
}

[[noreturn]] void die(const char *what, int rc)
{
    fprintf(stderr, "fuzz_ipc_file: %s (rc %d: %s; errmsg \"%s\")\n", what, rc, strerror(rc),
            surelock_errmsg());
    remove_dir(); // abort() skips atexit
    abort();
}

#define CHECK(cond, rc)                                                                        \
    do {                                                                                       \
        if (!(cond)) die("check failed: " #cond, (rc));                                        \
    } while (0)

void write_file(const uint8_t *data, size_t size, mode_t mode)
{
    unlink(g_path);
    int fd = open(g_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) die("cannot create the lock file", errno);
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) die("cannot write the lock file", errno);
        done += (size_t)n;
    }
    if (fchmod(fd, mode) != 0) die("fchmod", errno);
    close(fd);
}

struct FileState {
    bool ok;
    mode_t mode;
    uint8_t *bytes;
    size_t size;
};

FileState read_file()
{
    FileState s{};
    int fd = open(g_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return s;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return s;
    }
    s.mode = st.st_mode & 07777;
    s.size = (size_t)st.st_size;
    s.bytes = static_cast<uint8_t *>(malloc(s.size + 1));
    if (s.bytes == nullptr) die("out of memory", ENOMEM);
    s.ok = pread(fd, s.bytes, s.size, 0) == (ssize_t)s.size;
    close(fd);
    return s;
}

void expect_unchanged(const uint8_t *data, size_t size, mode_t mode, int rc)
{
    FileState s = read_file();
    if (!s.ok) die("a refused file can no longer be read", rc);
    if (s.size != size) die("a refused file changed size", rc);
    if (s.mode != mode) die("a refused file changed mode", rc);
    if (size != 0 && memcmp(s.bytes, data, size) != 0) die("a refused file changed bytes", rc);
    free(s.bytes);
}

size_t file_size_for(uint64_t payload)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return surelock::ipc_format::header_size + (size_t)((payload + page - 1) / page * page);
}

enum class Verdict { initialise, valid, refused };

// What the library's validator (ipc_file.cc) says of the file as it is now; `why` gets its
// words when it refuses it.
Verdict validate(char *why, size_t size)
{
    int fd = open(g_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) die("cannot open the lock file to validate it", errno);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat", errno);
    FileHeader h;
    ipc_file::Contents contents;
    int rc = ipc_file::read_header(g_path, fd, st.st_size, &h, &contents);
    if (rc == 0 && contents == ipc_file::Contents::complete)
        rc = ipc_file::check_header(g_path, &h, st.st_size, g_system);
    close(fd);
    CHECK(rc == 0 || rc == EPROTO, rc);
    snprintf(why, size, "%s", rc != 0 ? surelock_errmsg() : "");
    if (rc != 0) return Verdict::refused;
    return contents == ipc_file::Contents::complete ? Verdict::valid : Verdict::initialise;
}

// The header of the file as it is now (after a successful open).
void check_opened_file(size_t asked_payload)
{
    FileState s = read_file();
    CHECK(s.ok, 0);
    CHECK(s.size >= sizeof(FileHeader), 0);
    FileHeader h;
    memcpy(static_cast<void *>(&h), s.bytes, sizeof h);
    CHECK(memcmp(h.magic, "SURELOCK", 8) == 0, 0);
    CHECK(h.format_version == 1, 0);
    CHECK(h.init_state.load() == surelock::ipc_format::state_ready, 0);
    CHECK(h.pointer_size == sizeof(void *), 0);
    CHECK(h.header_size == surelock::ipc_format::header_size, 0);
    CHECK(strncmp(h.boot_id, g_system.boot_id, sizeof h.boot_id) == 0, 0);
    CHECK(h.pid_namespace == g_system.pid_namespace, 0);
    CHECK(s.size == file_size_for(h.payload_size), 0);
    CHECK(asked_payload == 0 || h.payload_size == asked_payload, 0);
    CHECK(h.recovery_state.load() != surelock::ipc_format::NOT_RECOVERABLE, 0);
    free(s.bytes);
    char why[256];
    CHECK(validate(why, sizeof why) == Verdict::valid, 0);
}

bool file_is_recursive()
{
    FileState s = read_file();
    CHECK(s.ok && s.size >= sizeof(FileHeader), 0);
    FileHeader h;
    memcpy(static_cast<void *>(&h), s.bytes, sizeof h);
    free(s.bytes);
    return (h.flags & SURELOCK_IPC_RECURSIVE) != 0;
}

int acquire(surelock_ipc *m, bool timed)
{
    return timed ? surelock_ipc_timedlock(m, 0) : surelock_ipc_trylock(m);
}

// Takes and releases the lock once, following the contract whatever the file's mutex says.
void exercise(surelock_ipc *m, surelock_ipc *second, bool recursive, bool timed,
              bool skip_consistent)
{
    int rc = acquire(m, timed);
    if (g_trace) fprintf(stderr, "  acquire: %d (%s)\n", rc, rc ? strerror(rc) : "held");
    if (rc != 0 && rc != EOWNERDEAD) {
        // Not held: the mutex bytes say busy (or ours: EDEADLK), or the library reports an
        // error. Whatever it was, nothing is held.
        CHECK(surelock_ipc_needs_recovery(m) == 0, rc);
        int u = surelock_ipc_unlock(m);
        CHECK(u == EPERM, u);
        return;
    }
    CHECK(surelock_ipc_needs_recovery(m) == (rc == EOWNERDEAD ? 1 : 0), rc);

    int again = acquire(m, timed); // the holder, through the same handle
    if (recursive) {
        CHECK(again == 0, again);
        CHECK(surelock_ipc_unlock(m) == 0, 0);
    } else {
        CHECK(again == EDEADLK, again);
    }
    int c = surelock_ipc_close(m);
    CHECK(c == EBUSY, c);

    bool unrecoverable = false;
    if (rc == EOWNERDEAD) {
        if (skip_consistent) {
            unrecoverable = true;
        } else {
            int k = surelock_ipc_consistent(m);
            CHECK(k == 0, k);
            CHECK(surelock_ipc_needs_recovery(m) == 0, 0);
        }
    } else {
        int k = surelock_ipc_consistent(m);
        CHECK(k == EINVAL, k);
    }
    if (second != nullptr && !unrecoverable) { // the holder, through another handle
        int other = acquire(second, timed);
        if (recursive) {
            CHECK(other == 0, other);
            CHECK(surelock_ipc_unlock(second) == 0, 0);
        } else {
            CHECK(other == EDEADLK, other);
        }
        CHECK(surelock_ipc_unlock(second) == EPERM, 0);
    }
    int u = surelock_ipc_unlock(m);
    CHECK(u == 0, u);
    CHECK(surelock_ipc_needs_recovery(m) == 0, 0);

    rc = acquire(m, timed);
    if (unrecoverable) {
        CHECK(rc == ENOTRECOVERABLE, rc);
        if (second != nullptr) CHECK(acquire(second, timed) == ENOTRECOVERABLE, 0);
        return;
    }
    CHECK(rc == 0, rc);
    CHECK(surelock_ipc_needs_recovery(m) == 0, rc);
    CHECK(surelock_ipc_unlock(m) == 0, 0);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    setup_once();
    const uint8_t c0 = data[0], c1 = data[1];
    static const uint32_t flag_choices[4] = {0, SURELOCK_IPC_RECURSIVE, SURELOCK_IPC_ANY_OWNER,
                                             SURELOCK_IPC_NOCREATE};
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t payload_choices[4] = {0, 1, 100, page};
    static const mode_t mode_choices[4] = {0600, 0620, 0606, 0666};

    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = flag_choices[c0 & 3];
    o.payload_size = payload_choices[(c0 >> 2) & 3];
    const mode_t file_mode = mode_choices[(c0 >> 4) & 3];
    o.mode = (c0 & 0x40) ? 0666 : 0600;
    const bool keep_pid_namespace = (c0 & 0x80) != 0;
    const bool keep_boot_id = (c1 & 1) != 0;
    const bool skip_consistent = (c1 & 2) != 0;
    const bool open_second = (c1 & 4) != 0;
    const bool inject_enomem = (c1 & 8) != 0;
    const bool timed = (c1 & 16) != 0;

    // The file's bytes, with this system's identity stamped in unless asked not to.
    size_t file_size = size - 2;
    uint8_t *file = static_cast<uint8_t *>(malloc(file_size + 1));
    if (file == nullptr) die("out of memory", ENOMEM);
    memcpy(file, data + 2, file_size);
    const bool has_magic = file_size >= 8 && memcmp(file, "SURELOCK", 8) == 0;
    if (has_magic && !keep_boot_id &&
        file_size >= offsetof(FileHeader, boot_id) + sizeof g_system.boot_id)
        memcpy(file + offsetof(FileHeader, boot_id), g_system.boot_id, sizeof g_system.boot_id);
    if (has_magic && !keep_pid_namespace && file_size >= offsetof(FileHeader, pid_namespace) + 8)
        memcpy(file + offsetof(FileHeader, pid_namespace), &g_system.pid_namespace, 8);
    write_file(file, file_size, file_mode);
    char refusal[256];
    const Verdict verdict = validate(refusal, sizeof refusal);

    const bool unwanted_write = (file_mode & 022u & ~o.mode) != 0;
    surelock_ipc *m = nullptr;
    int rc;
    if (inject_enomem) {
        surelock_testing_fail_allocation_after(0);
        rc = surelock_ipc_open(g_path, &o, &m);
        surelock_testing_fail_allocation_after(-1);
        CHECK(rc == ENOMEM, rc);
        CHECK(surelock_errmsg()[0] != '\0', rc);
        expect_unchanged(file, file_size, file_mode, rc);
    }
    rc = surelock_ipc_open(g_path, &o, &m);
    if (g_trace)
        fprintf(stderr, "open %zu bytes, flags 0x%x, payload %zu, file mode 0%o, mode 0%o: %d %s\n",
                file_size, o.flags, o.payload_size, (unsigned)file_mode, o.mode, rc,
                rc ? surelock_errmsg() : "");
    if (rc != 0) {
        // ETIMEDOUT: the lock word names a live thread that open could not confirm as a
        // holder, because its /proc/TID/maps is unreadable (thread 1 in a container).
        CHECK(rc == EPERM || rc == EPROTO || rc == EINVAL ||
                  (rc == ETIMEDOUT && strstr(surelock_errmsg(), "/proc/") != nullptr),
              rc);
        CHECK(surelock_errmsg()[0] != '\0', rc);
        CHECK((rc == EPERM) == unwanted_write, rc);
        CHECK(file_size != 0 || rc == EPERM, rc); // an empty file is initialised
        CHECK(rc != EINVAL || (o.flags & SURELOCK_IPC_RECURSIVE) || o.payload_size != 0, rc);
        // The validator's verdict, unless the mode was refused before the header was read.
        if (!unwanted_write) {
            CHECK(verdict != Verdict::initialise, rc);
            CHECK((verdict == Verdict::refused) == (rc == EPROTO &&
                                                    strcmp(surelock_errmsg(), refusal) == 0),
                  rc);
            CHECK(verdict == Verdict::refused || rc == EINVAL ||
                      strstr(surelock_errmsg(), "lock word") != nullptr ||
                      strstr(surelock_errmsg(), "mutex") != nullptr,
                  rc);
        }
        expect_unchanged(file, file_size, file_mode, rc);
    } else {
        CHECK(m != nullptr, 0);
        CHECK(!unwanted_write, 0);
        CHECK(verdict != Verdict::refused, 0);
        // Only an empty file, a file of a lock file's size, or one that starts with the stamp
        // an initialiser writes first (magic, format version, a state that is not ready: its
        // initialiser died) may be taken as a lock file; anything else is somebody's data and
        // must have been refused, untouched. In particular zeros are never "unfinished".
        bool stamped = false;
        if (file_size >= 16) {
            uint32_t version, init_state;
            memcpy(&version, file + 8, 4);
            memcpy(&init_state, file + 12, 4);
            stamped = memcmp(file, surelock::ipc_format::file_magic, 8) == 0 &&
                      version == surelock::ipc_format::format_version &&
                      init_state != surelock::ipc_format::state_ready;
        }
        CHECK(file_size == 0 || stamped ||
                  (file_size >= surelock::ipc_format::header_size &&
                   (file_size - surelock::ipc_format::header_size) % page == 0 &&
                   memcmp(file, surelock::ipc_format::file_magic, 8) == 0),
              0);
        check_opened_file(o.payload_size);

        size_t payload_size = 12345;
        auto *payload = static_cast<volatile uint8_t *>(surelock_ipc_payload(m, &payload_size));
        CHECK((payload != nullptr) == (payload_size != 0), 0);
        CHECK(o.payload_size == 0 || payload_size == o.payload_size, 0);
        if (payload_size != 0) {
            payload[0] = (uint8_t)(payload[0] + 1);
            payload[payload_size - 1] = (uint8_t)(payload[payload_size - 1] + 1);
        }

        surelock_ipc *second = nullptr;
        if (open_second) {
            int r2 = surelock_ipc_open(g_path, &o, &second);
            CHECK(r2 == 0, r2);
        }
        exercise(m, second, file_is_recursive(), timed, skip_consistent);
        if (second != nullptr) CHECK(surelock_ipc_close(second) == 0, 0);
        int c = surelock_ipc_close(m);
        CHECK(c == 0, c);
    }
    free(file);
    unlink(g_path);
    return 0;
}
