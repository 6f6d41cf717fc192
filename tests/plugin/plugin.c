/*
 * A plugin that guards its use of the thread-unsafe "libfoo" with the process-wide lock
 * surelock_rlock_global("libfoo"). It links libsurelock.so.1 normally (DT_NEEDED); built twice,
 * as plugin_a and plugin_b (PLUGIN_NAME), and dlopen()ed by host.c, which dlopen()s the
 * library itself as well: all three share one guard because they share one loaded library.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin_api.h"
#include "surelock.h"

#ifndef PLUGIN_NAME
#error "build with -DPLUGIN_NAME=\"a\" (or \"b\")"
#endif

#define EXPORT __attribute__((visibility("default")))

/* Not cached: a fresh lookup each time shows the name, not a stored pointer, is what binds
 * this plugin to the host's lock. */
static surelock_rlock *guard(void)
{
    surelock_rlock *g = NULL;
    return surelock_rlock_global(PLUGIN_GUARD_NAME, &g) == 0 ? g : NULL;
}

EXPORT const char *plugin_name(void) { return PLUGIN_NAME; }

EXPORT void *plugin_guard(void) { return guard(); }

EXPORT int plugin_call(uint64_t timeout_ns, plugin_callback cb, void *arg, unsigned *depth_inside)
{
    surelock_rlock *g = guard();
    if (g == NULL) return EINVAL;
    int rc = surelock_rlock_timedlock(g, timeout_ns);
    if (rc != 0 && rc != EOWNERDEAD) return rc;
    if (depth_inside != NULL) *depth_inside = surelock_rlock_depth(g);
    rc = cb != NULL ? cb(arg) : 0;
    int urc = surelock_rlock_unlock(g);
    return rc != 0 ? rc : urc;
}

EXPORT int plugin_try(void)
{
    surelock_rlock *g = guard();
    int rc = surelock_rlock_trylock(g);
    if (rc == 0 || rc == EOWNERDEAD) surelock_rlock_unlock(g);
    return rc;
}

EXPORT int plugin_timed(uint64_t timeout_ns)
{
    surelock_rlock *g = guard();
    int rc = surelock_rlock_timedlock(g, timeout_ns);
    if (rc == 0 || rc == EOWNERDEAD) surelock_rlock_unlock(g);
    return rc;
}

EXPORT int plugin_take(uint64_t timeout_ns)
{
    int rc = surelock_rlock_timedlock(guard(), timeout_ns);
    return rc == EOWNERDEAD ? 0 : rc;
}

EXPORT int plugin_release(void) { return surelock_rlock_unlock(guard()); }

EXPORT int plugin_work(unsigned long *counter, int iterations)
{
    surelock_rlock *g = guard();
    if (g == NULL) return EINVAL;
    for (int i = 0; i < iterations; i++) {
        int rc = surelock_rlock_timedlock(g, 10ull * 1000 * 1000 * 1000);
        if (rc != 0 && rc != EOWNERDEAD) return rc;
        if (surelock_rlock_depth(g) != 1) {
            surelock_rlock_unlock(g);
            return EPROTO;
        }
        unsigned long seen = *counter;
        if ((i & 3) == 0) sched_yield(); /* widen the window a broken lock would leave open */
        *counter = seen + 1;
        rc = surelock_rlock_unlock(g);
        if (rc != 0) return rc;
    }
    return 0;
}
