/*
 * ipc_file.h — lock files for the ipc tests (test_ipc_open.c, test_ipc_lock.c,
 * test_ipc_group.c, test_ipc_fork.c, test_ipc_internal.c, test_ipc_stress.c): the per-test
 * directory and fixtures, the file layout documented in surelock.h (section 4), files crafted
 * or corrupted byte by byte, "left exactly as it was" snapshots, and the refusal check every
 * bad file gets. Built on support/bounded.h. Forked holders: ipc_holder.h.
 *
 * Rules every ipc test follows:
 *  - Each test gets a fresh mkdtemp directory under /tmp (removed afterwards, whatever the
 *    outcome) and restores the umask it found. /tmp, not $TMPDIR: a lock file on NFS or SMB is
 *    refused (EOPNOTSUPP), and the tests must not depend on where $TMPDIR points.
 *  - CMocka assertions run on the test's own thread and process only. Helper threads record
 *    what they saw and the test asserts after joining them; child processes check what they
 *    see themselves, print the mismatch on stderr and _exit with a non-zero status, which the
 *    parent checks. Every child also arms alarm(CHILD_ALARM_S), so a child stuck in a lock
 *    call dies of SIGALRM instead of living on.
 *  - Every wait is bounded on CLOCK_MONOTONIC: pipe reads by poll(), child exits by a waitpid
 *    WNOHANG loop that SIGKILLs and fails after the limit, thread joins by a bounded
 *    pthread_tryjoin_np loop, and a watchdog ends the run if a call on the test's own thread
 *    never returns. A broken library fails a test; it never hangs CI.
 *  - Refusals are checked three ways: the exact errno, an errmsg naming the path and the
 *    reason, and the file (type, mode, owner, size, inode and every byte) left exactly as it
 *    was.
 *  - Files are crafted byte by byte from the layout documented in surelock.h (section 4).
 *  - Nothing measures speed: timeouts are checked from below (a timed wait lasts at least its
 *    timeout) with a generous ceiling that only catches "never returns".
 */
#ifndef SURELOCK_TESTS_IPC_FILE_H
#define SURELOCK_TESTS_IPC_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <surelock.h>

#include "bounded.h"

/* ---- the file layout documented in surelock.h (format version 1) --------------------------- */

#define OFF_MAGIC 0
#define OFF_FORMAT_VERSION 8
#define OFF_INIT_STATE 12
#define OFF_POINTER_SIZE 16
#define OFF_MUTEX_SIZE 18
#define OFF_MUTEX_ALIGN 20
#define OFF_HEADER_SIZE 22
#define OFF_LIBC 24
#define OFF_BOOT_ID 40
#define OFF_PID_NAMESPACE 80
#define OFF_LOCK_ID 88
#define OFF_CREATOR_UID 104
#define OFF_FLAGS 108
#define OFF_PAYLOAD_SIZE 112
#define OFF_OWNER_DEATHS 120
#define OFF_RECOVERY_STATE 128
#define OFF_HOLDER_TID 132
#define OFF_MUTEX 192
#define HEADER_SIZE 4096
#define STATE_READY 0x52454459u
#define RECOVERY_CONSISTENT 0u
#define RECOVERY_NEEDED 1u
#define RECOVERY_NOT_RECOVERABLE 2u

size_t page_size(void);
/* The size of a lock file with this payload: the header plus the payload rounded up to pages. */
size_t file_size_for(size_t payload);

/* ---- the per-test directory ---------------------------------------------------------------- */

/* The running test's directory ("" between tests). */
extern char test_dir[64];
/* A path in it; valid until the test ends (its teardown frees it). */
const char *P(const char *name);
/* How many entries it holds (besides . and ..). */
int entries_in_test_dir(void);

/* Fixtures: the group setup makes the watchdog's bail-out kill tracked children and remove the
 * directory; each test gets a fresh directory (and keeps the umask it found); the teardown, also
 * after a failure, kills any child the test left, restores the umask and removes the directory.
 * A file with more to reset calls ipc_test_teardown at the end of its own teardown. */
int ipc_group_setup(void **state);
int ipc_test_setup(void **state);
int ipc_test_teardown(void **state);
#undef TEST
#define TEST(f) {#f, f, ipc_test_setup, ipc_test_teardown, (void *)#f}

/* ---- errmsg: every word, not just one ------------------------------------------------------ */

/* Asserts that errmsg is non-empty and mentions every one of the given words (any case):
 * stricter than the "at least one of them" of support/bounded.h, which it replaces here. */
#undef EXPECT_ERRMSG
#define EXPECT_ERRMSG(...) expect_errmsg_all_at(__LINE__, __VA_ARGS__, (const char *)NULL)
void expect_errmsg_all_at(int line, ...);

/* ---- opening ------------------------------------------------------------------------------- */

/* A distinct non-NULL address to pre-load out-pointers with: they must stay untouched on error. */
extern char sentinel_storage;
#define SENTINEL ((surelock_ipc *)(void *)&sentinel_storage)

surelock_ipc_options options(uint32_t flags, uint32_t mode, size_t payload_size);

/* Opens path with the given options and asserts success. */
#define OPEN(path, flags, mode, payload) open_at(__LINE__, (path), (flags), (mode), (payload))
surelock_ipc *open_at(int line, const char *path, uint32_t flags, uint32_t mode, size_t payload);

/*
 * Opening `path` with `o` must fail with exactly `want`, leave the out-pointer alone, say in
 * errmsg the path and every word given, and leave whatever is at path exactly as it was.
 */
#define EXPECT_REFUSED(path, o, want, ...)                                                      \
    expect_refused_at(__LINE__, true, (path), (o), (want), #want, __VA_ARGS__,                  \
                      (const char *)NULL)
/* The same for options refused before the path is looked at: errmsg names the option. */
#define EXPECT_OPTIONS_REFUSED(path, o, want, ...)                                              \
    expect_refused_at(__LINE__, false, (path), (o), (want), #want, __VA_ARGS__,                 \
                      (const char *)NULL)
void expect_refused_at(int line, bool names_path, const char *path,
                       const surelock_ipc_options *o, int want, const char *want_name, ...);

/* ---- file bytes ---------------------------------------------------------------------------- */

typedef struct bytes {
    unsigned char *data;
    size_t len;
} bytes;

/* The whole file (the caller frees .data), or the test fails. */
bytes slurp(const char *path);
/* Writes a file with exactly these bytes and this mode (replacing any regular file there). */
void spit(const char *path, const void *data, size_t len, mode_t mode);
/* An empty file: a placeholder, as `touch` or an installer would leave it. */
void touch(const char *path, mode_t mode);
/* Writes len bytes at off into the file at path (what another program, or another boot's view
 * of the file, can do). */
void poke(const char *path, size_t off, const void *data, size_t len);
void poke32(const char *path, size_t off, uint32_t v);

uint32_t get32(const bytes *b, size_t off);
uint64_t get64(const bytes *b, size_t off);
void put16(bytes *b, size_t off, uint16_t v);
void put32(bytes *b, size_t off, uint32_t v);
void put64(bytes *b, size_t off, uint64_t v);
/* One field of the file at path, read now. */
uint32_t file32(const char *path, size_t off);
uint64_t file64(const char *path, size_t off);

/* Creates a valid lock file through the library and returns its bytes. */
bytes make_lock_file(const char *path, uint32_t flags, size_t payload);
/* This boot's id, as /proc/sys/kernel/random/boot_id says (no newline). */
void this_boot_id(char out[40]);

/* ---- "left exactly as it was" -------------------------------------------------------------- */

/* What lstat says about a path, and a regular file's bytes. */
typedef struct snapshot {
    bool exists;
    struct stat st;
    bytes content; /* regular files only */
} snapshot;

snapshot take_snapshot(const char *path);
/* Type, mode, owner, inode, device, size and every byte as in `before` (whose bytes it frees). */
#define EXPECT_UNCHANGED(path, before) expect_unchanged_at(__LINE__, (path), (before))
void expect_unchanged_at(int line, const char *path, snapshot *before);

#endif
