// Reentrant lock (API.md section 1).
//
// An OwnedLock (src/sys/owned_lock.h: futex word, owner serial, owner-death detection) plus a
// depth that only the holder touches, so re-entry is a compare and an increment with no
// atomic read-modify-write (the struct is in locks.h, shared with lock groups).
//
// Process-wide named locks live in a registry that is never pruned: a name, once used, names
// the same lock for the life of the process.

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "surelock.h"
#include "sys/alloc.h"
#include "locks.h"
#include "sys/errmsg.h"
#include "sys/owned_lock.h"
#include "sys/thread.h"
#include "sys/waits.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;

namespace {

// A NULL lock, or the calling thread's first lock (begin_acquire_fast, lock_kind.h).
[[gnu::noinline]] int acquire_slow(surelock_rlock *l, Wait wait, const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(l, "lock", fn, &me)) return rc;
    return l->acquire(me, wait, fn, /*by_lock_call=*/true);
}

// Re-entry first, by the caller's serial alone (thread.h): no record, no NULL record check.
[[gnu::always_inline]] inline int acquire(surelock_rlock *l, Wait wait, const char *fn)
{
    if (__builtin_expect(l != nullptr && l->lock.held_by_caller(), 1)) return l->reenter(fn);
    ThreadRecord *me = begin_acquire_fast(l);
    if (__builtin_expect(me == nullptr, 0)) return acquire_slow(l, wait, fn);
    return l->lock.acquire(me, wait, fn, /*by_lock_call=*/true); // not held: a first acquire
}

// ---- Process-wide registry ----------------------------------------------------------------

constexpr size_t max_name_length = 255;
constexpr size_t registry_buckets = 256;

struct GlobalEntry {
    surelock_rlock lock; // first member: the handle callers get points here
    GlobalEntry *next;
    size_t name_length;
    char name[max_name_length];
};

// Entries are only ever added, under the mutex; a statically initialised pthread mutex needs
// no constructor and is ready even before any other code of the library has run.
pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
GlobalEntry *registry[registry_buckets];

// fork() while another thread is inside surelock_rlock_global would leave the child's copy of
// the registry mutex locked for ever: hold it across fork, as glibc does for its own locks.
pthread_once_t registry_atfork_once = PTHREAD_ONCE_INIT;
void registry_lock() { pthread_mutex_lock(&registry_mutex); }
void registry_unlock() { pthread_mutex_unlock(&registry_mutex); }
void registry_register_atfork() { pthread_atfork(registry_lock, registry_unlock, registry_unlock); }

size_t hash_name(const char *name, size_t length)
{
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < length; i++) h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32)) % registry_buckets;
}

// Deadlock detector (waits.h): "rlock 'libA'" for a process-wide lock, "rlock #12" otherwise.
size_t describe_rlock(const void *lock, char *out, size_t cap, CopyFn copy)
{
    bool is_global = false;
    uint64_t serial = 0;
    if (!SURELOCK_READ_FIELD(copy, &is_global, surelock_rlock, lock, is_global) ||
        !SURELOCK_READ_FIELD(copy, &serial, surelock_rlock, lock, member.serial))
        return describe_numbered("rlock", 0, out, cap);
    if (is_global) { // a GlobalEntry, whose first member is the rlock
        size_t length = 0;
        char name[max_name_length];
        if (SURELOCK_READ_FIELD(copy, &length, GlobalEntry, lock, name_length) &&
            length <= max_name_length &&
            read_via(copy, name, field_address(lock, offsetof(GlobalEntry, name)), length))
            return describe_named("rlock", name, length, out, cap);
    }
    return describe_numbered("rlock", serial, out, cap);
}

using Entries = surelock::locks::OwnedLockKind<surelock_rlock>; // its lock-kind table entries

} // namespace

namespace surelock::sys {
// Thread-exit handler (owned_lock.h): the owner ended holding the lock at any depth; the
// depth goes back to 1, the free lock's value (locks.h), before the lock is let go.
void OwnedLock::reentrant_owner_exited(HeldLink *link)
{
    SURELOCK_CONTAINER_OF(link, surelock_rlock, lock.held)->depth = 1;
    owner_exited(link);
}

const LockKind rlock_kind = {
    .name = "rlock",
    .held_by = Entries::held_by,
    .acquire = Entries::acquire,
    .release = Entries::release,
    .membership = Entries::membership,
    .group_reenters = true,
    .word = Entries::word,
    .took_word = Entries::took_word,
    .releasing_word = Entries::releasing_word,
    .owner_exited = OwnedLock::reentrant_owner_exited,
    .held_link_offset = offsetof(surelock_rlock, lock) + offsetof(OwnedLock, held),
    .hold_mode = "",
    .exclusive_holder = OwnedLock::holder,
    .held_shared_by = nullptr,
    .describe = describe_rlock,
};
} // namespace surelock::sys

// ---- C entry points ------------------------------------------------------------------------

extern "C" {

SURELOCK_API int surelock_rlock_new(surelock_rlock **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_rlock_new: out is NULL");
    surelock_rlock *l = create<surelock_rlock>();
    if (l == nullptr) return fail(ENOMEM, "surelock_rlock_new: out of memory");
    l->member.serial = next_object_serial();
    l->lock.held.owner_exited = OwnedLock::reentrant_owner_exited; // tells it from a mutex
    *out = l;
    return 0;
}

SURELOCK_API int surelock_rlock_free(surelock_rlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rlock_free: the lock is NULL");
    if (l->is_global)
        return fail(EPERM, "surelock_rlock_free: process-wide locks from surelock_rlock_global "
                           "are never freed");
    if (!l->lock.is_free())
        return fail(EBUSY, "surelock_rlock_free: the lock is held; nothing freed");
    if (l->member.groups.load() != 0)
        return fail(EBUSY, "surelock_rlock_free: the lock is a member of %u lock group(s); "
                           "nothing freed",
                    l->member.groups.load());
    destroy(l);
    return 0;
}

SURELOCK_API int surelock_rlock_global(const char *name, surelock_rlock **out)
{
    if (name == nullptr || out == nullptr)
        return fail(EINVAL, "surelock_rlock_global: %s is NULL", name ? "out" : "name");
    size_t length = strnlen(name, max_name_length + 1);
    if (length == 0) return fail(EINVAL, "surelock_rlock_global: the name is empty");
    if (length > max_name_length)
        return fail(EINVAL, "surelock_rlock_global: the name is longer than %zu bytes",
                    max_name_length);

    GlobalEntry **bucket = &registry[hash_name(name, length)];
    int rc = 0;
    pthread_once(&registry_atfork_once, registry_register_atfork);
    pthread_mutex_lock(&registry_mutex);
    GlobalEntry *e = *bucket;
    while (e != nullptr && !(e->name_length == length && memcmp(e->name, name, length) == 0))
        e = e->next;
    if (e == nullptr) {
        e = create<GlobalEntry>();
        if (e == nullptr) {
            rc = fail(ENOMEM, "surelock_rlock_global: out of memory creating \"%.*s\"",
                      (int)length, name);
        } else {
            e->lock.is_global = true;
            e->lock.lock.held.owner_exited = OwnedLock::reentrant_owner_exited;
            e->lock.member.serial = next_object_serial();
            e->name_length = length;
            memcpy(e->name, name, length);
            e->next = *bucket;
            *bucket = e;
        }
    }
    pthread_mutex_unlock(&registry_mutex);
    if (rc == 0) *out = &e->lock;
    return rc;
}

SURELOCK_API int surelock_rlock_lock(surelock_rlock *l)
{
    return acquire(l, Wait::forever(), "surelock_rlock_lock");
}

SURELOCK_API int surelock_rlock_trylock(surelock_rlock *l)
{
    return acquire(l, Wait::try_once(), "surelock_rlock_trylock");
}

SURELOCK_API int surelock_rlock_timedlock(surelock_rlock *l, uint64_t timeout_ns)
{
    return acquire(l, Wait::within(timeout_ns), "surelock_rlock_timedlock");
}

SURELOCK_API int surelock_rlock_unlock(surelock_rlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rlock_unlock: the lock is NULL");
    if (!l->lock.held_by_caller())
        return fail(EPERM, "surelock_rlock_unlock: the calling thread does not hold the lock");
    // The record (the caller has one: its serial matched) is read only for the last level.
    if (l->leave_one_level()) l->lock.release(current_record_now());
    return 0;
}

SURELOCK_API unsigned surelock_rlock_depth(const surelock_rlock *l)
{
    ThreadRecord *me = current_record;
    if (l == nullptr || me == nullptr) return 0;
    return l->lock.held_by(me) ? l->depth : 0;
}

#ifdef SURELOCK_TESTING
int surelock_testing_rlock_set_depth(surelock_rlock *l, unsigned depth)
{
    ThreadRecord *me = current_record;
    if (l == nullptr || depth == 0 || me == nullptr || !l->lock.held_by(me))
        return EINVAL;
    l->depth = depth;
    return 0;
}
#endif

} // extern "C"
