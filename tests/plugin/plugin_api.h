/*
 * The interface the plugin host (host.c) finds in each plugin (plugin.c) with dlsym.
 *
 * A plugin stands for a module that wraps the thread-unsafe "libfoo": it takes the
 * process-wide guard surelock_rlock_global("libfoo") around every call into libfoo, exactly as
 * its host does, so host and plugins are serialised by one lock (API.md section 1).
 */
#ifndef SURELOCK_TEST_PLUGIN_API_H
#define SURELOCK_TEST_PLUGIN_API_H

#include <stdint.h>

#define PLUGIN_GUARD_NAME "libfoo"

/* Called by plugin_call with the guard held; its return value is plugin_call's. */
typedef int (*plugin_callback)(void *arg);

/* The plugin's name ("a" or "b"). */
typedef const char *(*plugin_name_fn)(void);
/* The guard as the plugin sees it (NULL if surelock_rlock_global failed). */
typedef void *(*plugin_guard_fn)(void);
/* Takes the guard (waiting at most timeout_ns), stores the calling thread's depth while held
 * in *depth_inside, runs cb(arg) if cb is not NULL, releases. Returns the lock's error, else
 * cb's result (EOWNERDEAD from the lock counts as taken). */
typedef int (*plugin_call_fn)(uint64_t timeout_ns, plugin_callback cb, void *arg,
                              unsigned *depth_inside);
/* surelock_rlock_trylock / _timedlock on the guard, released at once on success. */
typedef int (*plugin_try_fn)(void);
typedef int (*plugin_timed_fn)(uint64_t timeout_ns);
/* Takes the guard and keeps it (plugin_take) / releases one level (plugin_release). */
typedef int (*plugin_take_fn)(uint64_t timeout_ns);
typedef int (*plugin_release_fn)(void);
/* `iterations` times: take the guard, increment *counter non-atomically (read, yield, write:
 * a lost update shows a failure of mutual exclusion), release. Returns 0 or the error. */
typedef int (*plugin_work_fn)(unsigned long *counter, int iterations);

#endif
