// Opening a lock file (API.md section 4): everything between a path and a validated mapping.
//
// Kept apart from the handle and locking (ipc.cc) because it is a protocol between processes
// of its own, made of file system calls, and the slow path of every open:
//  - Openers serialise on flock(LOCK_EX) of the file only while they validate or initialise
//    the header, so concurrent openers never see a half-made file. flock has no timed form, so
//    an opener retries it with a growing pause for at most 5 s: a flock held by another
//    program, or by an opener stopped mid-open, ends in ETIMEDOUT naming the holder.
//  - A new file is built complete as an O_TMPFILE and published with linkat, so it appears
//    with its exact mode and contents; an empty placeholder is initialised in place under the
//    flock, stamped first (magic, version, not ready), so a header left unfinished by an
//    initialiser that died is recognised and redone, while any other incomplete file is
//    refused untouched (the format's rules: ipc_file.cc).
//  - Every open handle holds an OFD read lock on byte 0 for its whole life. An opener that can
//    take a write lock there knows no other handle is open: only then is anything reset (a
//    file from another boot id, a not-recoverable lock, an empty or unfinished file). A boot
//    id that cannot be read is an error, never "another boot".
//  - The owner in the mutex's lock word is checked live (ipc_robust.cc): a corrupt word naming
//    an unrelated live process would otherwise make every lock wait forever.

#include "ipc_open.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "ipc_robust.h"
#include "surelock.h"
#include "sys/errmsg.h"
#include "sys/futex.h" // sys::Deadline
#include "sys/interleave.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;
using namespace surelock::ipc_format;
using namespace surelock::ipc_file;
using surelock::ipc_robust::pause_us;

namespace surelock::ipc_open {

namespace {

// How long open waits for another opener's flock (API.md: open never waits without bound;
// the default is at most 5 s). Fixed until the options can carry a bound.
constexpr uint64_t open_wait_ns = 5000000000ull;

// Describes who holds a flock on inode `ino` from /proc/locks ("process 123 (flock)"), or ""
// when it cannot be told.
void describe_flock_holder(ino_t ino, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/locks", "re");
    if (f == nullptr) return;
    char line[256];
    while (fgets(line, sizeof line, f) != nullptr) {
        char kind[16], mode[16];
        int pid;
        unsigned long long inode;
        if (sscanf(line, "%*[^:]: %15s %*s %15s %d %*x:%*x:%llu", kind, mode, &pid, &inode) == 4 &&
            strcmp(kind, "FLOCK") == 0 && strcmp(mode, "WRITE") == 0 &&
            inode == (unsigned long long)ino && pid > 0) {
            char comm_path[40], comm[32] = "";
            snprintf(comm_path, sizeof comm_path, "/proc/%d/comm", pid);
            if (FILE *c = fopen(comm_path, "re")) {
                if (fgets(comm, sizeof comm, c) == nullptr) comm[0] = '\0';
                comm[strcspn(comm, "\n")] = '\0';
                fclose(c);
            }
            snprintf(out, size, " by process %d%s%s%s", pid, comm[0] ? " (" : "", comm,
                     comm[0] ? ")" : "");
            break;
        }
    }
    fclose(f);
}

// Takes the exclusive flock that serialises openers, waiting at most open_wait_ns: a flock
// held by another program (`flock FILE cmd`), or by an opener stopped or stuck mid-open, must
// not block this one for ever. Polls with a growing pause (from 20 us to 10 ms): flock has no
// timed form, and openers hold it only for a few system calls.
int flock_bounded(const char *path, int fd, ino_t ino)
{
    Deadline give_up = Deadline::after(open_wait_ns);
    for (unsigned wait_us = 20;; wait_us = wait_us < 10000 ? wait_us * 2 : wait_us) {
        if (SURELOCK_FLOCK(fd, LOCK_EX | LOCK_NB) == 0) return 0;
        int e = errno;
        if (e == EINTR) continue;
        if (e != EWOULDBLOCK) return fail_path(e, path, "flock: %s", strerror(e));
        if (give_up.remaining_ns() == 0) {
            char who[80];
            describe_flock_holder(ino, who, sizeof who);
            return fail_path(ETIMEDOUT, path,
                             "an exclusive flock on the file has been held%s for %llu s: "
                             "another program holding it (such as flock(1)), or an opener "
                             "stopped or stuck mid-open; giving up",
                             who, (unsigned long long)(open_wait_ns / 1000000000ull));
        }
        pause_us(wait_us);
    }
}

// Whether the lock file's file system can carry this lock. On NFS and SMB, flock is emulated
// with byte-range locks that conflict with the OFD "open" markers (a second opener would
// wait for the first to close), and processes on different machines share no futexes.
// `where` is the file's descriptor, or -1 with `dir` its directory (before creating it).
int check_file_system(const char *path, int where, const char *dir)
{
    struct statfs fs;
    if ((where >= 0 ? fstatfs(where, &fs) : statfs(dir, &fs)) != 0)
        return fail_path(errno, path, "statfs: %s", strerror(errno));
    long magic = (long)fs.f_type;
#ifdef SURELOCK_TESTING
    if (surelock_testing_ipc_fs_magic != 0) magic = surelock_testing_ipc_fs_magic;
#endif
    const char *name = magic == NFS_SUPER_MAGIC    ? "NFS"
                       : magic == SMB_SUPER_MAGIC  ? "SMB"
                       : magic == (long)0xFF534D42 ? "CIFS"
                       : magic == (long)0xFE534D42 ? "SMB2"
                                                   : nullptr;
    if (name != nullptr)
        return fail_path(EOPNOTSUPP, path,
                         "is on %s, a network file system, whose emulated file locks cannot "
                         "serve a cross-process robust mutex; use a local file system "
                         "(/run, /tmp, $XDG_RUNTIME_DIR)",
                         name);
    return 0;
}

// OFD lock on byte 0: a read lock marks "a handle is open"; a write lock that succeeds at once
// proves no other handle is.
bool set_open_marker(int fd, short type)
{
    struct flock fl{};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return SURELOCK_OFD_SETLK(fd, &fl) == 0;
}

// 1 when no other handle of the file is open in any process (an OFD write lock on byte 0
// taken at once: every handle holds a read lock there), 0 when one is, or -errno.
int no_other_handle(int fd)
{
    if (set_open_marker(fd, F_WRLCK)) return 1;
    return errno == EAGAIN || errno == EACCES ? 0 : -errno;
}

// Opens path as a lock file is opened (never through a symlink, never waiting on a FIFO), to
// use it or, when `unlinking`, to check it before removing it. A missing file is a bare
// ENOENT to open (not final: it may create the file).
int open_no_follow(const char *path, int flags, bool unlinking, int *fd_out)
{
    int fd = SURELOCK_FD_OPEN(open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            return fail_path(ELOOP, path, "is a symlink; %s",
                             unlinking ? "not removing it" : "refusing to follow it");
        if (e == EISDIR) return fail_path(EPROTO, path, "is a directory, not a lock file");
        if (e == ENXIO)
            return fail_path(EPROTO, path, "is not a regular file%s",
                             unlinking ? "; not removing it" : "");
        if (e == ENOENT && !unlinking) return ENOENT;
        return fail_path(e, path, "cannot open: %s", strerror(e));
    }
    *fd_out = fd;
    return 0;
}

// Creates and fully initialises an unnamed file in path's directory, then links it at path.
// Returns 0 (published), EEXIST (someone else published first: open theirs), or an error.
// Falls back to EOPNOTSUPP where the filesystem has no O_TMPFILE.
int create_published(const char *path, const char *dir, const Options &opt, const Identity &id)
{
    int fd = SURELOCK_FD_OPEN(open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (fd < 0) {
        int e = errno;
        if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) return EOPNOTSUPP;
        return fail_path(e, path, "cannot create a file in %s: %s", dir, strerror(e));
    }
    int rc = 0;
    size_t size = file_size_for(opt.payload_size);
    void *map = MAP_FAILED;
    if (fchmod(fd, opt.mode) != 0 || ftruncate(fd, (off_t)size) != 0) {
        rc = fail_path(errno, path, "cannot size the new lock file: %s", strerror(errno));
    } else if ((map = SURELOCK_MMAP(header_size, fd)) == MAP_FAILED) {
        rc = fail_path(errno, path, "cannot map the new lock file: %s", strerror(errno));
    } else {
        rc = init_header(path, static_cast<FileHeader *>(map), opt, id);
        SURELOCK_MUNMAP(map, header_size);
    }
    if (rc == 0) {
        char proc_path[64];
        snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", fd);
        if (SURELOCK_FS(linkat(AT_FDCWD, proc_path, AT_FDCWD, path, AT_SYMLINK_FOLLOW)) != 0) {
            int e = errno;
            if (e == EEXIST) rc = EEXIST;
            else if (e == ENOENT && access("/proc/self/fd", F_OK) != 0) rc = EOPNOTSUPP;
            else rc = fail_path(e, path, "cannot publish the new lock file: %s", strerror(e));
        }
    }
    SURELOCK_CLOSE(fd);
    return rc;
}

// Creates an empty file at path with exactly opt.mode (for filesystems without O_TMPFILE);
// it is then initialised in place under the flock like a placeholder.
int create_empty(const char *path, const Options &opt)
{
    int fd = SURELOCK_FD_OPEN(
        open(path, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, opt.mode & 0700));
    if (fd < 0) {
        if (errno == EEXIST) return EEXIST;
        return fail_path(errno, path, "cannot create: %s", strerror(errno));
    }
    int rc = fchmod(fd, opt.mode) == 0 ? 0 : fail_path(errno, path, "chmod: %s", strerror(errno));
    SURELOCK_CLOSE(fd);
    return rc;
}

// The directory part of path.
int parent_dir(const char *path, char (&dir)[PATH_MAX])
{
    const char *slash = strrchr(path, '/');
    if (slash == nullptr) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return fail_path(ENAMETOOLONG, path, "path too long");
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return 0;
}

// Opens path, creating it when missing and allowed. Never follows a symlink. Nothing is
// created on a file system that cannot carry the lock.
int open_or_create(const char *path, const Options &opt, const Identity &id, int *fd_out)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        int rc = open_no_follow(path, O_RDWR, false, fd_out);
        if (rc == 0 && (rc = check_file_system(path, *fd_out, nullptr)) != 0) {
            SURELOCK_CLOSE(*fd_out);
            *fd_out = -1;
        }
        if (rc != ENOENT) return rc;
        if (opt.flags & SURELOCK_IPC_NOCREATE)
            return fail_path(ENOENT, path, "no such lock file (SURELOCK_IPC_NOCREATE)");
        char dir[PATH_MAX];
        if ((rc = parent_dir(path, dir)) != 0 || (rc = check_file_system(path, -1, dir)) != 0)
            return rc;
        rc = create_published(path, dir, opt, id);
        if (rc == EOPNOTSUPP) rc = create_empty(path, opt);
        if (rc != 0 && rc != EEXIST) return rc;
        // Published by us or by a racing creator: open it (again, if it was unlinked).
    }
    return fail_path(ENOENT, path, "keeps disappearing while being opened");
}

int check_ownership(const char *path, const struct stat &st, const Options &opt)
{
    if (!S_ISREG(st.st_mode)) return fail_path(EPROTO, path, "is not a regular file");
    if (st.st_uid != geteuid() && !(opt.flags & SURELOCK_IPC_ANY_OWNER))
        return fail_path(EPERM, path, "owned by uid %u, not by uid %u; refusing to use it",
                         (unsigned)st.st_uid, (unsigned)geteuid());
    unsigned unwanted = (unsigned)st.st_mode & 022u & ~opt.mode;
    if (unwanted != 0)
        return fail_path(EPERM, path,
                         "mode 0%o lets %s write it, which mode 0%o does not ask for; "
                         "refusing to use it",
                         (unsigned)st.st_mode & 0777u, (unwanted & 002u) ? "everyone" : "the group",
                         opt.mode);
    return 0;
}

// With the flock held: validates or (re)initialises the file and maps it.
int prepare_locked(const char *path, int fd, const Options &opt, const Identity &id,
                   FileHeader **header_out, size_t *size_out)
{
    struct stat st;
    if (SURELOCK_FS(fstat(fd, &st)) != 0)
        return fail_path(errno, path, "fstat: %s", strerror(errno));
    int rc = check_ownership(path, st, opt);
    if (rc != 0) return rc;

    // An empty placeholder (touch, an installer) is initialised, and so is a file stamped by
    // an initialiser that died before finishing; anything else must be complete and valid.
    FileHeader h;
    Contents contents;
    rc = read_header(path, fd, st.st_size, &h, &contents);
    if (rc != 0) return rc;
    bool initialise = contents != Contents::complete;
    bool stale_boot = false;
    if (!initialise) {
        rc = check_header(path, &h, st.st_size, id);
        if (rc != 0) return rc;
        stale_boot = strncmp(h.boot_id, id.boot_id, sizeof h.boot_id) != 0;
        if ((opt.flags & SURELOCK_IPC_RECURSIVE) && !(h.flags & SURELOCK_IPC_RECURSIVE))
            return fail_path(EINVAL, path,
                             "SURELOCK_IPC_RECURSIVE asked for, but the lock was "
                             "created non-recursive (fixed at creation)");
        if (opt.payload_size != 0 && opt.payload_size != h.payload_size)
            return fail_path(EINVAL, path, "payload_size %zu asked for, but the file has %llu",
                             opt.payload_size, (unsigned long long)h.payload_size);
    }
    // No (re)initialisation of any kind while another handle of the file is open anywhere:
    // an empty or unfinished file that is open elsewhere was truncated or overwritten in use.
    if (initialise) {
        int alone = no_other_handle(fd);
        if (alone < 0)
            return fail_path(-alone, path, "cannot probe for other handles (OFD lock): %s",
                             strerror(-alone));
        if (alone == 0)
            return fail_path(EPROTO, path,
                             "the file is %s, yet another handle has it open: it was truncated "
                             "or overwritten while in use; refusing to re-initialise it",
                             st.st_size == 0 ? "empty" : "unfinished");
    }
    size_t size = initialise ? file_size_for(opt.payload_size) : (size_t)st.st_size;
    if (initialise) {
        // Stamp first: from here on an initialiser that dies leaves a detectably unfinished
        // file, never an anonymous all-zero one.
        Stamp stamp = unfinished_stamp();
        if (SURELOCK_FS(pwrite(fd, &stamp, sizeof stamp, 0)) != (ssize_t)sizeof stamp ||
            SURELOCK_FS(ftruncate(fd, (off_t)size)) != 0)
            return fail_path(errno ? errno : EIO, path, "cannot size the lock file: %s",
                             strerror(errno));
    }
    void *map = SURELOCK_MMAP(size, fd);
    if (map == MAP_FAILED) return fail_path(errno, path, "mmap: %s", strerror(errno));
    auto *mapped = static_cast<FileHeader *>(map);

    if (initialise) {
        rc = init_header(path, mapped, opt, id);
    } else {
        // A file from another boot id, or not recoverable, is reset only when no other handle
        // has it open (the probe runs under the flock, and every opener sets its marker
        // before it releases the flock). A file with another boot id that is open elsewhere
        // is in use in this boot (no handle survives a reboot): the boot id was read through
        // another mount namespace's view of /proc. It is used as it is.
        int alone = 0;
        if (stale_boot || mapped->recovery_state.load() == NOT_RECOVERABLE) {
            alone = no_other_handle(fd);
            if (alone < 0)
                rc = fail_path(-alone, path, "cannot probe for other handles (OFD lock): %s",
                               strerror(-alone));
        }
        if (rc == 0 && alone == 1) {
            rc = reset_runtime_state(mapped, id);
            if (rc != 0) rc = fail_path(rc, path, "pthread_mutex_init failed: %s", strerror(rc));
        } else if (rc == 0) {
            rc = ipc_robust::check_mutex(path, mapped, st.st_ino);
        }
    }
    if (rc != 0) {
        SURELOCK_MUNMAP(map, size);
        return rc;
    }
    *header_out = mapped;
    *size_out = size;
    return 0;
}

} // namespace

int open_file(const char *path, const Options &opt, OpenedFile *out)
{
    Identity id;
    int fd = -1;
    FileHeader *header = nullptr;
    size_t map_size = 0;
    int rc = this_system(path, &id);
    if (rc == 0) rc = open_or_create(path, opt, id, &fd);
    if (rc == 0 && fstat(fd, &out->st) != 0)
        rc = fail_path(errno, path, "fstat: %s", strerror(errno));
    if (rc == 0) {
        rc = flock_bounded(path, fd, out->st.st_ino);
        if (rc == 0) {
            rc = prepare_locked(path, fd, opt, id, &header, &map_size);
            if (rc == 0 && !set_open_marker(fd, F_RDLCK))
                rc = fail_path(errno, path, "cannot mark the file open (OFD lock): %s",
                               strerror(errno));
            SURELOCK_FLOCK(fd, LOCK_UN);
        }
    }
    if (rc != 0) {
        if (header != nullptr) SURELOCK_MUNMAP(header, map_size);
        if (fd >= 0) SURELOCK_CLOSE(fd);
        return rc;
    }
    out->fd = fd;
    out->header = header;
    out->map_size = map_size;
    return 0;
}

} // namespace surelock::ipc_open

// ---- C entry points -------------------------------------------------------------------------

extern "C" {

SURELOCK_API int surelock_ipc_unlink(const char *path)
{
    surelock::ipc_open::NoCancel no_cancel;
    if (path == nullptr) return fail(EINVAL, "surelock_ipc_unlink: path is NULL");
    int fd = -1;
    int rc = surelock::ipc_open::open_no_follow(path, O_RDONLY, true, &fd);
    if (rc != 0) return rc;
    struct stat st;
    char magic[sizeof file_magic];
    bool ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                (st.st_size == 0 || (pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
                                     memcmp(magic, file_magic, sizeof magic) == 0));
    SURELOCK_CLOSE(fd);
    if (!ours) return fail_path(EPROTO, path, "not a surelock lock file; not removing it");
    if (unlink(path) != 0) return fail_path(errno, path, "unlink: %s", strerror(errno));
    return 0;
}

#ifdef SURELOCK_TESTING
long surelock_testing_ipc_fs_magic; // sys/testing.h
#endif

} // extern "C"
