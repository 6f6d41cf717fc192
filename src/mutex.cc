// Error-checking mutex (API.md section 2): an OwnedLock (src/sys/owned_lock.h) whose holder
// gets EDEADLK instead of re-entering.

#include <errno.h>

#include "locks.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/waits.h"

using namespace surelock::sys;

namespace {

[[gnu::always_inline]] inline int acquire_as(ThreadRecord *me, surelock_mutex *m, Wait wait,
                                             const char *fn)
{
    if (__builtin_expect(m->lock.held_by(me), 0))
        return fail(EDEADLK, "%s: the calling thread already holds this mutex", fn);
    return m->acquire(me, wait, fn, /*by_lock_call=*/true);
}

// A NULL mutex, or the calling thread's first lock (begin_acquire_fast, lock_kind.h).
[[gnu::noinline]] int acquire_slow(surelock_mutex *m, Wait wait, const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(m, "mutex", fn, &me)) return rc;
    return acquire_as(me, m, wait, fn);
}

[[gnu::always_inline]] inline int acquire(surelock_mutex *m, Wait wait, const char *fn)
{
    ThreadRecord *me = begin_acquire_fast(m);
    if (__builtin_expect(me == nullptr, 0)) return acquire_slow(m, wait, fn);
    return acquire_as(me, m, wait, fn);
}

// Deadlock detector (waits.h): "mutex #12".
size_t describe_mutex(const void *lock, char *out, size_t cap, CopyFn copy)
{
    uint64_t serial = 0;
    SURELOCK_READ_FIELD(copy, &serial, surelock_mutex, lock, member.serial);
    return describe_numbered("mutex", serial, out, cap);
}

using Entries = surelock::locks::OwnedLockKind<surelock_mutex>; // its lock-kind table entries

} // namespace

namespace surelock::sys {
const LockKind mutex_kind = {
    .name = "mutex",
    .held_by = Entries::held_by,
    .acquire = Entries::acquire,
    .release = Entries::release,
    .membership = Entries::membership,
    .group_reenters = false,
    .word = Entries::word,
    .took_word = Entries::took_word,
    .releasing_word = Entries::releasing_word,
    .owner_exited = OwnedLock::owner_exited,
    .held_link_offset = offsetof(surelock_mutex, lock) + offsetof(OwnedLock, held),
    .hold_mode = "",
    .exclusive_holder = OwnedLock::holder,
    .held_shared_by = nullptr,
    .describe = describe_mutex,
};
} // namespace surelock::sys

extern "C" {

SURELOCK_API int surelock_mutex_new(surelock_mutex **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_mutex_new: out is NULL");
    auto *m = create<surelock_mutex>();
    if (m == nullptr) return fail(ENOMEM, "surelock_mutex_new: out of memory");
    m->member.serial = next_object_serial();
    *out = m;
    return 0;
}

SURELOCK_API int surelock_mutex_free(surelock_mutex *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_mutex_free: the mutex is NULL");
    if (!m->lock.is_free()) return fail(EBUSY, "surelock_mutex_free: the mutex is held; nothing freed");
    if (m->member.groups.load() != 0)
        return fail(EBUSY, "surelock_mutex_free: the mutex is a member of %u lock group(s); "
                           "nothing freed",
                    m->member.groups.load());
    destroy(m);
    return 0;
}

SURELOCK_API int surelock_mutex_lock(surelock_mutex *m)
{
    return acquire(m, Wait::forever(), "surelock_mutex_lock");
}

SURELOCK_API int surelock_mutex_trylock(surelock_mutex *m)
{
    return acquire(m, Wait::try_once(), "surelock_mutex_trylock");
}

SURELOCK_API int surelock_mutex_timedlock(surelock_mutex *m, uint64_t timeout_ns)
{
    return acquire(m, Wait::within(timeout_ns), "surelock_mutex_timedlock");
}

SURELOCK_API int surelock_mutex_unlock(surelock_mutex *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_mutex_unlock: the mutex is NULL");
    if (!m->lock.held_by_caller())
        return fail(EPERM, "surelock_mutex_unlock: the calling thread does not hold the mutex");
    m->lock.release(current_record); // it has one: its serial matched
    return 0;
}

} // extern "C"
