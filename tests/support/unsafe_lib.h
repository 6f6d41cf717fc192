/*
 * unsafe_lib — a simulated thread-unsafe C library, the kind surelock_rlock exists to guard.
 *
 * Like many real C libraries, it keeps global state with no locking of its own, so callers
 * must never be inside it on two threads at once; and it calls user callbacks from inside
 * itself, which may call back into the library on the same thread (that re-entry is legal).
 *
 * Unlike a real library, it checks that rule: every entry point notes which thread is inside,
 * and an entry while another thread is inside is counted as a violation (the overlap a guard
 * must prevent). A re-entry by the thread already inside is counted separately, as legal.
 * The detector uses atomics and thread-locals, so it works (and stays free of data races)
 * whether or not the callers are guarded; the library's own state is deliberately plain,
 * non-atomic memory updated with a read-modify-write that loses updates under overlap.
 */
#ifndef SURELOCK_TESTS_UNSAFE_LIB_H
#define SURELOCK_TESTS_UNSAFE_LIB_H

/* The name a binding would guard this library with: surelock_rlock_global(UNSAFE_LIB_SONAME). */
#define UNSAFE_LIB_SONAME "libunsafe.so.1"

typedef void (*unsafe_callback)(void *ctx);

/* Resets the state and the detector's counters. Only while no thread is inside the library. */
void unsafe_reset(void);

/* One call into the library: adds 1 to its counter. */
void unsafe_increment(void);

/*
 * One call into the library that adds 1 to its counter and then, still inside the library,
 * calls cb(ctx) on the calling thread. cb may call any unsafe_* entry point (re-entry).
 */
void unsafe_visit(unsafe_callback cb, void *ctx);

/* Test-side inspection, not calls "into" the library: read them once the callers are done. */
long unsafe_count(void);      /* the library's counter */
long unsafe_violations(void); /* entries made while another thread was inside */
long unsafe_reentries(void);  /* entries made by a thread that was already inside (legal) */

#endif
