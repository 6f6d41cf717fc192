// What the ipc lock reads and checks of glibc's robust mutex from outside it (ipc_robust.cc),
// and what ThreadSanitizer must be told about it.
#pragma once

#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include "ipc_format.h"

#if defined(__SANITIZE_THREAD__)
#define SURELOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SURELOCK_TSAN 1
#endif
#endif
#ifdef SURELOCK_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace surelock::ipc_robust {

// Checks the live mutex of a mapped header from this boot (or one in use in this boot): the
// robust, process-shared kind the format promises, and a lock word naming a surelock holder
// of the file with inode `ino` (or nobody). Returns 0, EPROTO (corrupt), or ETIMEDOUT when the
// holder cannot be confirmed in time; errmsg says which.
int check_mutex(const char *path, const ipc_format::FileHeader *h, ino_t ino);

// The error a failed pthread_mutex_*lock of the file's mutex (rc, not 0 or EOWNERDEAD) is to
// the caller, with errmsg set: no_sleep for a try or a spent timeout (fn: the public call).
int lock_failure(int rc, bool no_sleep, uint64_t timeout_ns, const char *fn)
    __attribute__((cold));
// The same for a failed pthread_mutex_unlock of it.
int unlock_failure(int rc, const char *fn) __attribute__((cold));

// Sleeps `us` microseconds between re-reads of state another process is changing (bounded
// polling loops: this check, open's flock).
void pause_us(unsigned us);

// How many times the calling holder has locked a recursive mutex (glibc's count; only the
// holder may read it).
inline unsigned pthread_depth(const ipc_format::FileHeader *h)
{
    return h->mutex.__data.__count;
}

// pthread_mutex_clocklock, announced to ThreadSanitizer, whose runtime does not intercept it
// (without this it would see unlocks of a mutex it never saw locked).
inline int clocklock(pthread_mutex_t *mutex, const struct timespec *at)
{
#ifdef SURELOCK_TSAN
    __tsan_mutex_pre_lock(mutex, __tsan_mutex_try_lock);
#endif
    int rc = pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, at);
#ifdef SURELOCK_TSAN
    bool taken = rc == 0 || rc == EOWNERDEAD;
    __tsan_mutex_post_lock(mutex, __tsan_mutex_try_lock | (taken ? 0 : __tsan_mutex_try_lock_failed),
                           0);
#endif
    return rc;
}

} // namespace surelock::ipc_robust
