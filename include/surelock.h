/*
 * surelock.h — the whole public API of libsurelock (soname libsurelock.so.1).
 *
 * C99; compiles as C and as C++. Only <stddef.h> and <stdint.h> are needed.
 *
 * Conventions (every function):
 *  - Functions that can fail return int: 0 on success, otherwise a positive errno value from
 *    <errno.h>, pthreads style. Out-pointers are written only on success. A NULL handle or a
 *    NULL out-pointer is EINVAL. Nothing aborts, throws or prints.
 *  - EOWNERDEAD means the caller now holds the lock: the previous holder died while holding
 *    it. For in-process locks it is information only and the lock is fully usable; treat it
 *    as success-with-warning, never as failure.
 *  - surelock_errmsg() describes the last failing call in the calling thread.
 *  - Timeouts are relative nanoseconds on CLOCK_MONOTONIC. SURELOCK_FOREVER waits without
 *    limit; a deadline that would overflow is forever; a timeout of 0 never blocks and
 *    returns ETIMEDOUT when the lock is busy.
 *  - Thread identity for in-process locks is a process-unique 64-bit serial that is never
 *    reused (not a TID, not a TLS address).
 *  - A thread that exits holding in-process locks has them declared dead (the next acquirer
 *    gets EOWNERDEAD) by surelock's pthread key destructor, the first time it runs. Never
 *    later: a thread whose first lock is taken by another key's destructor is still reported,
 *    unless that happens in the last round (PTHREAD_DESTRUCTOR_ITERATIONS) after surelock's
 *    turn, when glibc calls no destructor again. glibc runs key destructors in key order, and
 *    surelock creates its key at the process's first in-process lock. So C++ thread_local
 *    destructors, and the destructors of keys created before that first lock, run first and
 *    may unlock normally; a destructor of a key created later runs after surelock's: its
 *    unlock gets EPERM, the next acquirer EOWNERDEAD.
 *  - Every *_new has a matching *_free. Freeing an object that is held returns EBUSY and frees
 *    nothing; calling *_free concurrently with any other call on the same object is
 *    undefined. An object may be freed as soon as its last unlock has returned.
 *  - Process-wide state (named guards) is shared by everyone who loads the same shared
 *    libsurelock.so.1, not by a static or bundled copy.
 */
#ifndef SURELOCK_H
#define SURELOCK_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define SURELOCK_API
#elif defined(__GNUC__)
#  define SURELOCK_API __attribute__((visibility("default")))
#else
#  define SURELOCK_API
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#  define SURELOCK_ALIGNED(n) alignas(n)
#elif defined(__GNUC__)
#  define SURELOCK_ALIGNED(n) __attribute__((aligned(n)))
#else
#  define SURELOCK_ALIGNED(n)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ----------------------------------------------------------------------------- */

#define SURELOCK_VERSION_MAJOR 1
#define SURELOCK_VERSION_MINOR 1
#define SURELOCK_VERSION_PATCH 0

/* The version of the loaded library as "MAJOR.MINOR.PATCH" ("1.1.0"); never NULL. */
SURELOCK_API const char *surelock_version(void);

/* ---- Errors and timeouts ----------------------------------------------------------------- */

/*
 * Detail of the last failing surelock call in the calling thread (like dlerror). Set only when
 * a call returns an error (not for EOWNERDEAD or EINPROGRESS). Never NULL: "" before any
 * failure. The text lives in a fixed thread-local buffer (no allocation, nothing to free) and
 * stays valid until the thread's next surelock call.
 */
SURELOCK_API const char *surelock_errmsg(void);

/* Timeout meaning "wait without limit". */
#define SURELOCK_FOREVER UINT64_MAX

/* ---- 1. Reentrant lock ------------------------------------------------------------------- */

/*
 * A reentrant (recursive) lock for guarding a thread-unsafe C library: take it around every
 * call into the library; the same thread may take it again (callbacks that re-enter the
 * library), other threads wait. It is owned by the OS thread that took it. If that thread
 * exits while holding it, the next acquirer gets it at depth 1 and the return value
 * EOWNERDEAD. Waiters are not served in any particular order.
 */
typedef struct surelock_rlock surelock_rlock;

/*
 * Creates an unheld lock and stores it in *out.
 * Returns 0; EINVAL (out is NULL); ENOMEM.
 */
SURELOCK_API int surelock_rlock_new(surelock_rlock **out);

/*
 * Frees a lock made by surelock_rlock_new.
 * Returns 0; EINVAL (l is NULL); EBUSY (held by any thread, nothing freed);
 * EPERM (l came from surelock_rlock_global: process-wide locks are never freed).
 */
SURELOCK_API int surelock_rlock_free(surelock_rlock *l);

/*
 * The process-wide lock named by `name` (1..255 bytes, any bytes but NUL), created on first
 * use. Every caller in the process that names the same string gets the same lock, whichever
 * binding, plugin or language it comes from, as long as they load the same shared
 * libsurelock.so.1. It is never freed. Recommended names: "<library soname>" or
 * "<soname>:<purpose>", e.g. "libfoo.so.3".
 * Returns 0; EINVAL (name or out is NULL, name empty or longer than 255 bytes); ENOMEM.
 */
SURELOCK_API int surelock_rlock_global(const char *name, surelock_rlock **out);

/*
 * Takes the lock, waiting as long as needed; re-entry by the holder only deepens it.
 * Returns 0; EOWNERDEAD (taken at depth 1; the previous owner thread exited holding it);
 * EINVAL (l is NULL); EAGAIN (the holder's depth would overflow; depth unchanged);
 * ENOMEM (the calling thread's record could not be allocated).
 */
SURELOCK_API int surelock_rlock_lock(surelock_rlock *l);

/*
 * Takes the lock only if that needs no waiting (re-entry by the holder always succeeds).
 * Returns 0; EOWNERDEAD; EBUSY (held by another thread); EINVAL; EAGAIN; ENOMEM.
 */
SURELOCK_API int surelock_rlock_trylock(surelock_rlock *l);

/*
 * Takes the lock, waiting at most timeout_ns nanoseconds (CLOCK_MONOTONIC); 0 never blocks;
 * SURELOCK_FOREVER waits without limit.
 * Returns 0; EOWNERDEAD; ETIMEDOUT (held by another thread until the deadline); EINVAL;
 * EAGAIN; ENOMEM.
 */
SURELOCK_API int surelock_rlock_timedlock(surelock_rlock *l, uint64_t timeout_ns);

/*
 * Undoes one level of the caller's hold; the lock is released when the depth reaches 0.
 * Returns 0; EINVAL (l is NULL); EPERM (the calling thread does not hold it).
 */
SURELOCK_API int surelock_rlock_unlock(surelock_rlock *l);

/* The calling thread's depth on l: 0 when it does not hold it (or l is NULL). */
SURELOCK_API unsigned surelock_rlock_depth(const surelock_rlock *l);

/* ---- 2. Mutex, reader-writer lock, condition variable ---------------------------------- */

/*
 * Plain in-process locks, error-checking: any acquire by the holder is EDEADLK, never a hang;
 * release by a thread that does not hold it is EPERM. Owned by the OS thread that took them.
 * If the owner exits while holding, the next acquirer gets the lock and EOWNERDEAD (the lock
 * is fully usable). Timed forms wait on CLOCK_MONOTONIC.
 */
typedef struct surelock_mutex surelock_mutex;
typedef struct surelock_rwlock surelock_rwlock;
typedef struct surelock_cond surelock_cond;
typedef struct surelock_ipc surelock_ipc; /* section 4 */

/* Returns 0; EINVAL (out is NULL); ENOMEM. */
SURELOCK_API int surelock_mutex_new(surelock_mutex **out);
/* Returns 0; EINVAL; EBUSY (held, or a member of a lock group: nothing freed). */
SURELOCK_API int surelock_mutex_free(surelock_mutex *m);
/* Returns 0; EOWNERDEAD (held; the previous owner thread exited holding it); EDEADLK (the
 * caller holds it); EINVAL; ENOMEM (the calling thread's record). */
SURELOCK_API int surelock_mutex_lock(surelock_mutex *m);
/* As lock, without waiting: EBUSY when held by another thread. */
SURELOCK_API int surelock_mutex_trylock(surelock_mutex *m);
/* As lock, waiting at most timeout_ns: ETIMEDOUT; 0 never blocks. */
SURELOCK_API int surelock_mutex_timedlock(surelock_mutex *m, uint64_t timeout_ns);
/* Returns 0; EINVAL; EPERM (the caller does not hold it). */
SURELOCK_API int surelock_mutex_unlock(surelock_mutex *m);

/*
 * Reader-writer lock, writer-preferring: once a writer waits, new readers wait behind it, so
 * a stream of readers cannot starve writers. (A waiter of either mode that finds the lock busy
 * first stays away from it for a few microseconds, bounded by its timeout, so the holders'
 * CPU keeps the lock's cache line; only then does it wait. Mutexes and rlocks do the same.) A thread holds it at most once, in one mode:
 * asking again in either mode is EDEADLK. A reader thread that exits holding has its hold
 * dropped silently; a writer that exits holding makes the next acquirer (of either mode) get
 * EOWNERDEAD.
 */
/* Returns 0; EINVAL; ENOMEM. */
SURELOCK_API int surelock_rwlock_new(surelock_rwlock **out);
/* Returns 0; EINVAL; EBUSY (held in either mode, waited on, or a member of a lock group). */
SURELOCK_API int surelock_rwlock_free(surelock_rwlock *l);
/* Shared acquire. Returns 0; EOWNERDEAD; EDEADLK (the caller holds it in either mode);
 * EINVAL; ENOMEM (the calling thread's hold record). */
SURELOCK_API int surelock_rwlock_rdlock(surelock_rwlock *l);
/* As rdlock without waiting: EBUSY while a writer holds it or waits for it. */
SURELOCK_API int surelock_rwlock_tryrdlock(surelock_rwlock *l);
/* As rdlock, waiting at most timeout_ns: ETIMEDOUT. */
SURELOCK_API int surelock_rwlock_timedrdlock(surelock_rwlock *l, uint64_t timeout_ns);
/* Exclusive acquire. Returns 0; EOWNERDEAD; EDEADLK; EINVAL; ENOMEM. */
SURELOCK_API int surelock_rwlock_wrlock(surelock_rwlock *l);
/* As wrlock without waiting: EBUSY. */
SURELOCK_API int surelock_rwlock_trywrlock(surelock_rwlock *l);
/* As wrlock, waiting at most timeout_ns: ETIMEDOUT. */
SURELOCK_API int surelock_rwlock_timedwrlock(surelock_rwlock *l, uint64_t timeout_ns);
/* Releases the caller's hold, either mode. Returns 0; EINVAL; EPERM (the caller holds none). */
SURELOCK_API int surelock_rwlock_unlock(surelock_rwlock *l);

/*
 * Condition variable over surelock_mutex. Wait releases the mutex, sleeps, and re-acquires
 * the mutex before returning, also on ETIMEDOUT; spurious wake-ups are allowed, as with
 * pthreads, so wait in a loop that re-checks the predicate. A cond may be used with
 * different mutexes over its life, one at a time.
 */
/* Returns 0; EINVAL; ENOMEM. */
SURELOCK_API int surelock_cond_new(surelock_cond **out);
/* Returns 0; EINVAL; EBUSY (threads are waiting on it: nothing freed). */
SURELOCK_API int surelock_cond_free(surelock_cond *c);
/* Returns 0; EOWNERDEAD (woken, and the mutex's previous owner died while this thread
 * waited; the mutex is held); EPERM (the caller does not hold m); EINVAL; EDEADLK (since 1.1:
 * re-acquiring m would close a cycle of waits, see "Deadlock detection" below; then, and
 * only then, the mutex is NOT held on return). */
SURELOCK_API int surelock_cond_wait(surelock_cond *c, surelock_mutex *m);
/* As wait, for at most timeout_ns: ETIMEDOUT (the mutex is held again all the same). */
SURELOCK_API int surelock_cond_timedwait(surelock_cond *c, surelock_mutex *m, uint64_t timeout_ns);
/* Wakes at least one waiter, if any. Returns 0; EINVAL. */
SURELOCK_API int surelock_cond_signal(surelock_cond *c);
/* Wakes every waiter. Returns 0; EINVAL. */
SURELOCK_API int surelock_cond_broadcast(surelock_cond *c);

/* ---- 3. Lock-all group -------------------------------------------------------------------- */

/*
 * Acquires several locks as one step: either all are held, or none. Members are taken in one
 * global order that every thread and every process agrees on (IPC members first, by the
 * random 128-bit id in the lock file; then in-process members by a never-reused object
 * serial), blocking member by member with no retry loop, so groups never deadlock or livelock
 * against each other whatever order members were added in. That guarantee holds when the
 * caller holds no other surelock lock. A group is used by one thread at a time.
 */
typedef struct surelock_group surelock_group;

#define SURELOCK_EXCLUSIVE 0
#define SURELOCK_SHARED    1

/* Returns 0; EINVAL; ENOMEM. */
SURELOCK_API int surelock_group_new(surelock_group **out);
/* Frees the group (its members stay). Returns 0; EINVAL; EBUSY (held). */
SURELOCK_API int surelock_group_free(surelock_group *g);
/* Adding: returns 0; EINVAL (NULL, or a mode other than SURELOCK_EXCLUSIVE/SHARED); EEXIST
 * (already a member; for ipc any handle to the same lock file); EBUSY (the group is held);
 * ENOMEM. A member cannot be freed while it is in a group (its *_free returns EBUSY). */
SURELOCK_API int surelock_group_add_mutex(surelock_group *g, surelock_mutex *m);
SURELOCK_API int surelock_group_add_rwlock(surelock_group *g, surelock_rwlock *l, int mode);
SURELOCK_API int surelock_group_add_rlock(surelock_group *g, surelock_rlock *l);
SURELOCK_API int surelock_group_add_ipc(surelock_group *g, surelock_ipc *m);
/* Drops all members. Returns 0; EINVAL; EBUSY (held). */
SURELOCK_API int surelock_group_clear(surelock_group *g);
/* Number of members (0 for NULL). */
SURELOCK_API size_t surelock_group_size(const surelock_group *g);
/*
 * Takes every member. Returns 0; EOWNERDEAD (all held; some member's previous owner died:
 * for IPC members call surelock_ipc_consistent on each for which surelock_ipc_needs_recovery
 * is 1); EDEADLK (the caller already holds a member mutex, rwlock or ipc, or an rlock member
 * out of prefix order, or the group itself: nothing acquired); EINVAL; and a member's own
 * error (ENOTRECOVERABLE, EAGAIN, ENOMEM), with everything taken so far released.
 * An rlock member the caller already holds is re-entered, and released back to its previous
 * depth by unlock, only if every member the caller holds comes before every member it does
 * not hold in the group's order.
 */
SURELOCK_API int surelock_group_lock(surelock_group *g);
/* As lock, without waiting: EBUSY, holding nothing. Backing out of a member taken with
 * EOWNERDEAD passes the notice on: its next acquirer gets EOWNERDEAD (an IPC member stays in
 * need of recovery; it never becomes ENOTRECOVERABLE through a back-out). */
SURELOCK_API int surelock_group_trylock(surelock_group *g);
/* As lock, within timeout_ns in all: ETIMEDOUT, holding nothing. */
SURELOCK_API int surelock_group_timedlock(surelock_group *g, uint64_t timeout_ns);
/* Releases every member (rlocks back to their previous depth). Returns 0; EINVAL; EPERM (not
 * held by the caller; or a member's own unlock call released what the group held: that member
 * is left to whoever holds it now, the others are released and the group is free). */
SURELOCK_API int surelock_group_unlock(surelock_group *g);

/* ---- 4. Robust cross-process mutex --------------------------------------------------- */

/*
 * A mutex shared by every process that opens the same file; if a holder dies (even by
 * SIGKILL), the next acquirer gets EOWNERDEAD instead of waiting forever. Ownership is per
 * thread (the kernel TID, as robust futexes require). Any acquire by the holder is EDEADLK
 * unless the file was created with SURELOCK_IPC_RECURSIVE. Ownership is never inherited: at
 * fork() the child's copies of its parent's holds are dropped (it may close those handles).
 * The file must be on a local file system: on NFS and SMB, whose file locks are emulated,
 * open is EOPNOTSUPP.
 *
 * File layout, format version 1 (native byte order; all offsets in bytes):
 *    0  char     magic[8]            "SURELOCK"
 *    8  uint32   format_version      1
 *   12  uint32   init_state          0 = being initialised (or never), 0x52454459 = ready
 *   16  uint16   pointer_size        sizeof(void *) of the creator
 *   18  uint16   mutex_size          sizeof(pthread_mutex_t)
 *   20  uint16   mutex_align         alignof(pthread_mutex_t)
 *   22  uint16   header_size         4096: the payload starts here
 *   24  char     libc[16]            "glibc", NUL-padded
 *   40  char     boot_id[40]         /proc/sys/kernel/random/boot_id when initialised
 *   80  uint64   pid_namespace       inode of /proc/self/ns/pid (0 where unknown)
 *   88  uint8    lock_id[16]         random 128-bit id (the global order of lock groups)
 *  104  uint32   creator_uid
 *  108  uint32   flags               SURELOCK_IPC_RECURSIVE
 *  112  uint64   payload_size        bytes of payload (the mapping is rounded up to pages)
 *  120  uint64   owner_deaths        times a holder died holding the lock (each counted once,
 *                                    by the next acquirer; never a refused acquirer)
 *  128  uint32   recovery_state      0 = consistent, 1 = needs recovery, 2 = not recoverable
 *  132  int32    holder_tid          TID of the current holder, stored just after it acquires
 *                                    (diagnostics only: ownership goes by the lock word)
 *  192  pthread_mutex_t mutex        robust, process-shared, initialised in place
 * 4096  payload                      payload_size bytes, page-aligned
 * The file size is exactly 4096 + payload_size rounded up to the page size. A file is either
 * empty (initialised on open) or all of this; anything else is refused with EPROTO.
 */
#define SURELOCK_IPC_NOCREATE   0x1u /* fail with ENOENT instead of creating the file */
#define SURELOCK_IPC_RECURSIVE  0x2u /* the holder may re-acquire; fixed when created */
#define SURELOCK_IPC_ANY_OWNER  0x4u /* accept a file owned by another user */

typedef struct surelock_ipc_options {
    size_t   size;         /* sizeof(surelock_ipc_options): lets the struct grow */
    uint32_t flags;        /* SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_ANY_OWNER */
    uint32_t mode;         /* permission bits when created (exactly these: umask is not applied) */
    size_t   payload_size; /* bytes of shared memory mapped with the lock; 0 = none / as existing */
} surelock_ipc_options;

/* Sets size = sizeof *o and the defaults: no flags, mode 0600, no payload. */
static inline void surelock_ipc_options_init(surelock_ipc_options *o)
{
    o->size = sizeof *o;
    o->flags = 0;
    o->mode = 0600;
    o->payload_size = 0;
}

/*
 * Opens (creating it unless SURELOCK_IPC_NOCREATE) the lock file at path and maps it.
 * o may be NULL for the defaults; the library reads min(o->size, its own sizeof) bytes.
 * Safe against concurrent creators and a creator killed half-way (an unfinished file is
 * redone); an empty file is initialised. A file with another boot id (from before a reboot)
 * is re-initialised, and so is a not-recoverable one, only when no other handle of the file is
 * open in any process; a file with another boot id that is open elsewhere is in use in this
 * boot (seen from a mount namespace with another view of /proc) and is used as it is. The
 * owner in the mutex's lock word must be free, dead, or a thread whose process maps the file.
 * Open never waits without bound: at most 5 s for another opener, or for a lock word owner it
 * cannot yet confirm (1 s). Refused files are not modified. Returns 0;
 *   EINVAL  path or out is NULL, o->size too small, unknown flag bits, mode beyond 0777,
 *           SURELOCK_IPC_RECURSIVE for an existing file that was not created recursive
 *           (recursion is fixed at creation; without the flag either kind opens), or a
 *           non-zero payload_size that differs from the existing file's;
 *   ELOOP   path is a symlink;
 *   EPERM   the file belongs to another user (without SURELOCK_IPC_ANY_OWNER), or has group
 *           or world write permission that o->mode does not grant;
 *   EPROTO  not a regular file, a short or truncated file, or a header of another format,
 *           version, architecture, pthread layout, libc or PID namespace; a mutex that is not
 *           the robust kind, or whose lock word names a thread that cannot be a holder (gone
 *           without the kernel marking it dead, or its process does not map the file); an
 *           empty or unfinished file that another handle has open (emptied while in use);
 *   ETIMEDOUT the openers' exclusive flock stayed held for 5 s (another program, such as
 *           `flock FILE cmd`, or an opener stopped mid-open: errmsg names the process), or
 *           the lock word names a live thread that is not the recorded holder and whose
 *           /proc/TID/maps cannot be read, for 1 s;
 *   EOPNOTSUPP the file (or its directory) is on NFS or SMB;
 *   ENOENT  missing file with SURELOCK_IPC_NOCREATE;
 *   ENOMEM, EMFILE, EACCES, ENOENT... when /proc/sys/kernel/random/boot_id or
 *           /proc/self/ns/pid cannot be read (an error, never "another boot");
 *   or the system's own errors from open/mmap (EACCES, ENOSPC, ...).
 */
SURELOCK_API int surelock_ipc_open(const char *path, const surelock_ipc_options *o,
                                   surelock_ipc **out);

/* Unmaps and frees the handle, leaving nothing behind (descriptor, "open" marker, mapping);
 * not a cancellation point. Returns 0; EINVAL; EBUSY while a thread of this process holds the
 * lock through this handle (a held robust mutex is never unmapped: the thread's robust list
 * points into the mapping of the handle its outermost acquisition went through, until its
 * last release, even when a recursive file was re-entered through another handle), or while
 * the handle is a member of a lock group. Closing another handle of a file held through this
 * one returns 0 and leaves the hold intact. After fork(), the child holds none of its parent's
 * locks and may close every handle. */
SURELOCK_API int surelock_ipc_close(surelock_ipc *m);

/*
 * Takes the lock. Returns 0; EOWNERDEAD (held; the previous holder died: repair the shared
 * state and call surelock_ipc_consistent); ENOTRECOVERABLE (not held: a holder unlocked
 * after EOWNERDEAD without consistent); EDEADLK (the caller already holds it and the file is
 * not recursive); EAGAIN (recursion depth overflow); EINVAL; ENOMEM (the calling thread's
 * record).
 */
SURELOCK_API int surelock_ipc_lock(surelock_ipc *m);

/* As lock, without waiting: EBUSY when held by another thread. */
SURELOCK_API int surelock_ipc_trylock(surelock_ipc *m);

/* As lock, waiting at most timeout_ns on CLOCK_MONOTONIC: ETIMEDOUT; 0 never blocks. */
SURELOCK_API int surelock_ipc_timedlock(surelock_ipc *m, uint64_t timeout_ns);

/* Marks the state repaired after EOWNERDEAD. Returns 0; EINVAL (NULL, or the caller is not
 * a holder that needs recovery). */
SURELOCK_API int surelock_ipc_consistent(surelock_ipc *m);

/* 1 for the holder between EOWNERDEAD and surelock_ipc_consistent, else 0 (also for NULL). */
SURELOCK_API int surelock_ipc_needs_recovery(const surelock_ipc *m);

/* Releases one level of the caller's hold. Unlocking while recovery is needed makes the lock
 * ENOTRECOVERABLE for every process. Returns 0; EINVAL; EPERM (the caller does not hold it). */
SURELOCK_API int surelock_ipc_unlock(surelock_ipc *m);

/* The shared payload mapped with the lock (NULL when there is none or m is NULL); its size
 * is stored in *size when size is not NULL. */
SURELOCK_API void *surelock_ipc_payload(surelock_ipc *m, size_t *size);

/* Removes the lock file (never done implicitly: others may still use it). Returns 0;
 * EINVAL; ELOOP (a symlink: not removed); EPROTO (not a surelock lock file: not removed);
 * or unlink's errors. */
SURELOCK_API int surelock_ipc_unlink(const char *path);

/* ---- 5. Async FIFO semaphore and mutex ---------------------------------------------- */

/*
 * Strictly first-in-first-out: release hands permits directly to the head of the queue, and
 * nobody (blocking, async or try) overtakes a queued waiter; a large request at the head
 * holds back smaller ones behind it. Not owned by a thread: a holder may release from any
 * thread (a task may move between threads). No poisoning.
 *
 * Async acquisition: the caller provides a surelock_waiter (16-byte aligned, valid and
 * unmoved while queued) and a callback. Every *_async call initialises *w. It returns 0 when
 * acquired at once, EINPROGRESS when queued, or an error; for any return but EINPROGRESS,
 * fn is never called. When queued, fn(ctx, 0) is called exactly once when the permits are
 * handed to this waiter, on the thread that released them, with no internal lock held; or
 * fn(ctx, ECANCELED) once if the semaphore is shut down first. fn may call any surelock
 * function, including releasing the same semaphore; grants triggered from inside fn run one
 * after another in the outermost dispatch on that thread (the stack does not grow with the
 * queue). fn must not unwind. The releasing thread's errmsg is preserved across fn.
 * If fn breaks that rule anyway, nothing is corrupted. Ending the thread (pthread_exit,
 * cancellation) delivers the remaining grants at that thread's exit. Leaving by longjmp or an
 * exception defers every later grant made on that thread until the thread exits.
 * Out of memory: what a callback needs is allocated when its waiter queues (an async call
 * that must queue and cannot get it returns ENOMEM, queues nothing and never calls fn), so
 * releasing, cancelling and shutting down never need memory and never nest callbacks.
 */
typedef void (*surelock_wake_fn)(void *ctx, int status); /* status 0 = granted, ECANCELED */

#define SURELOCK_WAITER_SIZE 64
typedef struct surelock_waiter {
    SURELOCK_ALIGNED(16) unsigned char opaque[SURELOCK_WAITER_SIZE];
} surelock_waiter;

/* The largest permit count and request: 2^61 - 1. */
#define SURELOCK_SEM_MAX ((uint64_t)0x1FFFFFFFFFFFFFFF)

typedef struct surelock_sem surelock_sem;
typedef struct surelock_amutex surelock_amutex;

/* Creates a semaphore with `permits` available. Returns 0; EINVAL (out NULL, permits above
 * SURELOCK_SEM_MAX); ENOMEM. */
SURELOCK_API int surelock_sem_new(uint64_t permits, surelock_sem **out);
/* Returns 0; EINVAL; EBUSY (waiters are queued: nothing freed). */
SURELOCK_API int surelock_sem_free(surelock_sem *s);
/* Takes n permits, joining the FIFO and blocking the thread until served. Returns 0; EINVAL
 * (NULL, n of 0 or above SURELOCK_SEM_MAX); ECANCELED (shut down, before or while waiting). */
SURELOCK_API int surelock_sem_acquire(surelock_sem *s, uint64_t n);
/* Takes n permits only if they are available and nobody is queued. Returns 0; EBUSY;
 * EINVAL; ECANCELED. */
SURELOCK_API int surelock_sem_tryacquire(surelock_sem *s, uint64_t n);
/* As acquire, waiting at most timeout_ns on CLOCK_MONOTONIC: ETIMEDOUT (removed from the
 * queue; waiters behind it are served if they now can be). 0 never blocks. */
SURELOCK_API int surelock_sem_timedacquire(surelock_sem *s, uint64_t n, uint64_t timeout_ns);
/* Async acquire (see above). Returns 0 (acquired, fn not called); EINPROGRESS (queued);
 * EINVAL (NULL s, w or fn; n of 0 or above SURELOCK_SEM_MAX); ECANCELED (shut down); ENOMEM
 * (it had to queue and out of memory: not queued, fn not called). */
SURELOCK_API int surelock_sem_acquire_async(surelock_sem *s, uint64_t n, surelock_waiter *w,
                                            surelock_wake_fn fn, void *ctx);
/*
 * Withdraws a queued async waiter. Returns 0 (removed before being granted: fn will never
 * run, w is free); EALREADY (already granted: fn has run, is running or will run exactly
 * once with 0; the caller holds the permits and must release them; ctx must stay valid until
 * fn returns; w is free once cancel returns); ECANCELED (the semaphore was shut down: no
 * permits held); EINVAL (w is not queued on this semaphore).
 */
SURELOCK_API int surelock_sem_cancel(surelock_sem *s, surelock_waiter *w);
/* Returns n permits, handing them to queued waiters in order. Returns 0; EINVAL (NULL, n of
 * 0 or above SURELOCK_SEM_MAX); EAGAIN (the count would exceed SURELOCK_SEM_MAX: nothing
 * changed). */
SURELOCK_API int surelock_sem_release(surelock_sem *s, uint64_t n);
/* Every queued waiter gets ECANCELED (async: fn(ctx, ECANCELED)); later acquires return
 * ECANCELED. Permits already held can still be released. Returns 0; EINVAL. */
SURELOCK_API int surelock_sem_shutdown(surelock_sem *s);
/* Permits available now (0 for NULL). */
SURELOCK_API uint64_t surelock_sem_available(const surelock_sem *s);

/* A FIFO mutex: a semaphore of one permit, not tied to a thread. Same return codes as the
 * semaphore functions; lock by the holder simply queues behind itself (no EDEADLK). */
SURELOCK_API int surelock_amutex_new(surelock_amutex **out);
SURELOCK_API int surelock_amutex_free(surelock_amutex *m);
SURELOCK_API int surelock_amutex_lock(surelock_amutex *m);
SURELOCK_API int surelock_amutex_trylock(surelock_amutex *m);
SURELOCK_API int surelock_amutex_timedlock(surelock_amutex *m, uint64_t timeout_ns);
SURELOCK_API int surelock_amutex_lock_async(surelock_amutex *m, surelock_waiter *w,
                                            surelock_wake_fn fn, void *ctx);
SURELOCK_API int surelock_amutex_cancel(surelock_amutex *m, surelock_waiter *w);
/* Returns 0; EINVAL; EPERM (not locked). */
SURELOCK_API int surelock_amutex_unlock(surelock_amutex *m);

/* ---- Deadlock detection and the wait dump (since 1.1) ------------------------------------- */

/*
 * A thread about to block on an in-process lock it does not hold — rlock, mutex, rwlock in
 * either mode, a lock group's member, a cond_wait re-acquiring its mutex, in the blocking and
 * the timed forms — first follows the chain "that lock's holder waits for a lock held by ...".
 * If the chain comes back to the caller, the wait would never end: the call returns EDEADLK at
 * once, holding nothing it did not hold before, and surelock_errmsg() names the cycle, e.g.
 *   "surelock_rlock_lock: deadlock: thread 7 waits for rlock 'libB' held by thread 9, which
 *    waits for rlock 'libA' held by thread 7"
 * (threads by their never-reused serial; process-wide rlocks by name, other locks by kind and
 * object serial, "mutex #12"). A lock group passes a member's EDEADLK on, holding nothing.
 *  - Exactly one thread of a cycle is refused: the one whose wait closes it. A cycle is
 *    reported only if it exists when that wait begins; a holder about to release, a holder
 *    that exited, a freed lock or a fork child's view of its parent's threads never make one.
 *    A timed waiter counts as waiting until its call returns: if its timeout expires while
 *    another wait closes a cycle through it, either that wait is refused (and the timed one
 *    still returns ETIMEDOUT) or the timed one leaves first and nothing is refused.
 *  - A cycle too long for errmsg is named up to what fits, then ", ... (N threads in the
 *    cycle)".
 *  - An rwlock held for reading by several threads counts as a wait on each reader (for a
 *    writer). A reader waits only for writers: the one holding it, or those waiting for it
 *    (who keep new readers out), named "behind a write waited for by thread N". A group
 *    waits for one member at a time, in its global order, so groups never form a cycle with
 *    each other.
 *  - surelock_sem and surelock_amutex are not owned by a thread and are not part of the
 *    graph, and neither are ipc locks (shared between processes): waits on them are never
 *    refused. Neither are try-acquires, which never wait.
 *  - Cost: only the contended path (a thread about to sleep) registers and walks; the walk
 *    is bounded by the number of waiting threads and allocates nothing. An uncontended
 *    acquire or release does no extra work.
 * On by default. SURELOCK_DEADLOCK_DETECTION=0 in the environment turns it off; it is read
 * once, at the first wait, unless surelock_set_deadlock_detection was called before.
 */

/* Turns deadlock detection on (1) or off (0) for the whole process, from the next wait on
 * (a wait already in progress keeps its registration until it ends; a cycle closed while it
 * is off is not reported, as before 1.1). Returns 0; EINVAL (neither 0 nor 1). */
SURELOCK_API int surelock_set_deadlock_detection(int enabled);

/*
 * Writes to fd what every thread that has used an in-process lock holds and waits for: a
 * first line "surelock: waits in process PID", then one line per thread, in no particular
 * order:
 *   "thread 7 (tid 4242): holds rlock 'libA', rwlock #5 (read); waits for rlock 'libB' held by thread 9"
 *   "thread 9 (tid 4243): holds nothing; not waiting"
 * Held entries, exclusive holds newest first, then read holds:
 * "rlock 'NAME'" / "rlock #N", "mutex #N", "rwlock #N (read)" or "(write)",
 * "lock group", "ipc lock" (at most 32, then "..."). A wait ends with "held by thread N",
 * "held for reading" (an rwlock with readers only) or "held by no thread" (being handed over).
 * Async-signal-safe: no allocation, no stdio, no lock; other threads' data is read through
 * the kernel (process_vm_readv), so a lock freed meanwhile can never make it fault; a thread
 * that runs meanwhile may show a mix of before and after ("?" where its data could not be
 * read). Usable from a signal handler  or a debugger ("call surelock_dump_waits(2)"). errno
 * is preserved and errmsg is not touched. Returns 0; EINVAL (fd < 0); the errno of a write
 * that failed.
 *
 * SURELOCK_DUMP_ON=SIGQUIT (or SIGUSR1, SIGUSR2; "SIG" optional) in the environment installs
 * surelock_dump_waits(2) as that signal's handler (the process then goes on running). It is
 * read once, when the first thread takes its first surelock lock (the library runs no code at
 * load time), and installs nothing if the program already set a handler for, or ignores,
 * that signal; a handler the program sets later replaces it.
 */
SURELOCK_API int surelock_dump_waits(int fd);

#ifdef __cplusplus
}
#endif

#endif /* SURELOCK_H */
