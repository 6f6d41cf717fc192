/* unsafe_lib — see unsafe_lib.h. */
#include "unsafe_lib.h"

#include <sched.h>
#include <stdatomic.h>

/* Detector: how many threads are inside right now (at most 1 when callers are guarded). */
static atomic_int threads_inside;
static atomic_long violations;
static atomic_long reentries;
/* How deep the calling thread is inside the library (0 = outside). */
static _Thread_local int depth_here;

/* The library's own state: plain memory, as in a real thread-unsafe library. */
static long counter;

static void enter(void)
{
    if (depth_here++ > 0) {
        atomic_fetch_add(&reentries, 1); /* a callback on this thread came back in: legal */
        return;
    }
    if (atomic_fetch_add(&threads_inside, 1) != 0) atomic_fetch_add(&violations, 1);
}

static void leave(void)
{
    if (--depth_here == 0) atomic_fetch_sub(&threads_inside, 1);
}

/* counter += 1 as a read-modify-write with a window in the middle, so that overlapping
 * callers would lose updates (and the final count would come out short). */
static void bump(void)
{
    long value = counter;
    if ((value & 31) == 0) sched_yield();
    counter = value + 1;
}

void unsafe_reset(void)
{
    counter = 0;
    atomic_store(&threads_inside, 0);
    atomic_store(&violations, 0);
    atomic_store(&reentries, 0);
}

void unsafe_increment(void)
{
    enter();
    bump();
    leave();
}

void unsafe_visit(unsafe_callback cb, void *ctx)
{
    enter();
    bump();
    cb(ctx);
    leave();
}

long unsafe_count(void)
{
    return counter;
}

long unsafe_violations(void)
{
    return atomic_load(&violations);
}

long unsafe_reentries(void)
{
    return atomic_load(&reentries);
}
