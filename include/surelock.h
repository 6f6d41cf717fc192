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
#define SURELOCK_VERSION_MINOR 0
#define SURELOCK_VERSION_PATCH 0

/* The version of the loaded library as "MAJOR.MINOR.PATCH" ("1.0.0"); never NULL. */
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

#ifdef __cplusplus
}
#endif

#endif /* SURELOCK_H */
