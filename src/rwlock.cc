// Writer-preferring reader-writer lock (API.md section 2).
//
// The lock itself is an RwFutexLock (sys/rw_futex_lock.h: one 64-bit state word, readers
// may enter only while no writer holds or waits, and an unlock hands the lock on in the same
// compare-and-swap that releases it, its last access to the lock). This file adds the holders.
//
// Holds are tracked per thread for error checking and owner death, in O(1) whatever the
// thread holds: the writer as its thread serial plus a link in its held list; a reader as the
// lock's address in its read-hold set (sys/hold_set.h), drained at thread exit. A thread holds
// the lock at most once, so the reader count is bounded by the number of threads.

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <time.h>

#include <atomic>

#include "locks.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/lock_kind.h"
#include "sys/rw_futex_lock.h"
#include "sys/thread.h"
#include "sys/waits.h"

using namespace surelock::sys;
using surelock::sys::Wait;

struct alignas(64) surelock_rwlock {
    RwFutexLock futex; // the lock itself; no owners of its own
    std::atomic<uint64_t> writer{0}; // write holder's thread serial; 0 when not write-held
    // Set by a writer that exits holding; taken (exchanged) by the next acquirer of any mode.
    std::atomic<bool> writer_died{false};
    HeldLink write_held{};
    Membership member{};
};

namespace {

// ---- Holds ------------------------------------------------------------------------------------

// Thread-exit handlers.
void reader_exited(const void *key)
{
    // A dead reader's hold is dropped silently.
    static_cast<surelock_rwlock *>(const_cast<void *>(key))->futex.release(RwFutexLock::READER);
}

void writer_exited(HeldLink *link)
{
    surelock_rwlock *l = SURELOCK_CONTAINER_OF(link, surelock_rwlock, write_held);
    l->writer_died.store(true, std::memory_order_relaxed);
    l->writer.store(0, std::memory_order_relaxed);
    l->futex.release(RwFutexLock::WRITE_HELD);
}

bool held_by(const surelock_rwlock *l, const ThreadRecord *me)
{
    return l->writer.load(std::memory_order_relaxed) == me->serial ||
           me->read_holds.contains(l);
}

// After taking the lock in either mode: EOWNERDEAD for the first acquirer after a writer died
// holding it (the notice is taken, so it is reported once), otherwise 0.
int writer_death_notice(surelock_rwlock *l)
{
    if (__builtin_expect(l->writer_died.load(std::memory_order_relaxed), 0) &&
        l->writer_died.exchange(false, std::memory_order_relaxed))
        return EOWNERDEAD;
    return 0;
}

// The uncontended read lock, inline in the public entry points: one probe of the read-hold
// set (which also finds where the hold goes) and one compare-and-swap, the first touch of the
// lock's line. False when the caller holds the lock already (for writing: a writer holds it,
// so try_read fails), the set must grow, or the lock is not free for readers: the general
// path then sorts it out (EDEADLK, ENOMEM, waiting).
[[gnu::always_inline]] inline bool read_fast(surelock_rwlock *l, ThreadRecord *me)
{
    HoldSet &holds = me->read_holds;
    uint32_t slot;
    if (!holds.has_room_for_one() || holds.find(l, &slot) || !l->futex.try_read())
        return false;
    holds.fill(slot, l, reader_exited);
    return true;
}

[[gnu::always_inline]] inline bool release_inline(surelock_rwlock *l, ThreadRecord *me,
                                                  bool pass_owner_death)
{
    RwFutexLock::State hold;
    if (l->writer.load(std::memory_order_relaxed) == me->serial) {
        l->write_held.unlink();
        l->writer.store(0, std::memory_order_relaxed);
        hold = RwFutexLock::WRITE_HELD;
    } else if (me->read_holds.erase(l)) {
        hold = RwFutexLock::READER;
    } else {
        return false;
    }
    if (pass_owner_death) l->writer_died.store(true, std::memory_order_relaxed);
    l->futex.release(hold);
    return true;
}

// One attempt in either mode, without waiting.
bool try_once(surelock_rwlock *l, bool exclusive)
{
    return exclusive ? l->futex.try_write() : l->futex.try_read();
}

// How long a waiter stays away from a busy lock before it queues (futex.cc, back_off).
constexpr uint64_t contention_back_off_ns = 4000;

// The blocking part of rwlock_acquire, out of line (the uncontended path stays as it was).
// Returns 0, ETIMEDOUT or EDEADLK with errmsg set.
[[gnu::noinline, gnu::cold]] int wait_to_acquire(surelock_rwlock *l, ThreadRecord *me,
                                                       bool exclusive, Wait wait,
                                                       const char *fn)
{
    Deadline deadline = wait.deadline(); // the clock is read before the walk, not after
    // Stay off the lock's cache line for a while first (futex.cc, back_off): a reader and a
    // writer alike, since either one's CAS or watch slows the holders' CPU. A lock free by
    // then is taken without a wait, so without entering the wait graph.
    back_off(contention_back_off_ns, deadline);
    if (try_once(l, exclusive)) return 0;
    // ---- Deadlock detection (waits.h): refuse a wait that would close a cycle.
    // A write waits for the holders (the writer, or every reader); a read waits for the writer
    // holding it or the writers waiting for it (which keep new readers out), never for
    // readers: its own kind tells the walk so (rwlock_read_kind).
    if (int rc = begin_wait(me, exclusive ? rwlock_kind : rwlock_read_kind, l, fn)) return rc;
    int waited = exclusive ? l->futex.write_until(deadline) : l->futex.read_until(deadline);
    end_wait(me); // before recording the hold
    // ----
    if (waited != 0)
        return fail(ETIMEDOUT, "%s: not acquired within %llu ns", fn,
                    (unsigned long long)wait.timeout_ns());
    return 0;
}

// Acquires in either mode without the already-held check (the caller made it), with the
// public functions' return codes.
int rwlock_acquire(surelock_rwlock *l, ThreadRecord *me, bool exclusive, Wait wait,
                   const char *fn)
{
    if (!exclusive && __builtin_expect(!me->read_holds.reserve_one(), 0))
        return fail(ENOMEM, "%s: out of memory for the calling thread's read-hold table", fn);
    if (!try_once(l, exclusive)) {
        if (wait.is_try_once())
            return fail(EBUSY, "%s: %s", fn,
                        exclusive ? "held by another thread" : "a writer holds it or waits for it");
        if (wait.is_spent())
            return fail(ETIMEDOUT, "%s: busy (timeout %llu ns, no time left)", fn,
                        (unsigned long long)wait.timeout_ns());
        if (int rc = wait_to_acquire(l, me, exclusive, wait, fn)) return rc;
    }
    if (exclusive) {
        l->writer.store(me->serial, std::memory_order_relaxed);
        l->write_held.owner_exited = writer_exited;
        me->link_held(&l->write_held);
    } else {
        me->read_holds.insert(l, reader_exited);
    }
    return writer_death_notice(l);
}

// ---- The lock-kind table (sys/lock_kind.h) -------------------------------------------------------

bool rwlock_held_by(const void *lock, const ThreadRecord *me)
{
    return held_by(static_cast<const surelock_rwlock *>(lock), me);
}

int acquire_write(void *lock, ThreadRecord *me, Wait wait, const char *fn)
{
    return rwlock_acquire(static_cast<surelock_rwlock *>(lock), me, true, wait, fn);
}

int acquire_read(void *lock, ThreadRecord *me, Wait wait, const char *fn)
{
    return rwlock_acquire(static_cast<surelock_rwlock *>(lock), me, false, wait, fn);
}

bool rwlock_release(void *lock, ThreadRecord *me, bool pass_owner_death)
{
    return release_inline(static_cast<surelock_rwlock *>(lock), me, pass_owner_death);
}

Membership *rwlock_membership(void *lock)
{
    return &static_cast<surelock_rwlock *>(lock)->member;
}

uint64_t rwlock_writer(const void *lock, CopyFn copy)
{
    if (copy == nullptr)
        return static_cast<const surelock_rwlock *>(lock)->writer.load(std::memory_order_relaxed);
    uint64_t writer = 0;
    return SURELOCK_READ_FIELD(copy, &writer, surelock_rwlock, lock, writer) ? writer : 0;
}

// r is a registered waiter, so its read-hold set stays as it is while the graph lock is held.
bool rwlock_read_by(const void *lock, const ThreadRecord *r)
{
    return r->read_holds.contains(lock);
}

// What a waiting reader waits for besides a write holder: the writers waiting for the lock
// (writer preference keeps it out while one waits). Not the readers: a reader is admitted
// alongside readers, so edges to them would refuse a reader whose try failed behind a writer
// that then gave up before the walk (no writer left, no cycle, yet EDEADLK). Registration
// comes before a writer counts itself and ends after it uncounts, so every writer that keeps
// readers out is found here. Under the graph lock, where r's wait is stable.
bool rwlock_write_waited_by(const void *lock, const ThreadRecord *r)
{
    return r->wait_lock.load(std::memory_order_relaxed) == lock &&
           r->wait_kind.load(std::memory_order_relaxed) == &rwlock_kind;
}

size_t describe_rwlock(const void *lock, char *out, size_t cap, CopyFn copy)
{
    uint64_t serial = 0;
    if (lock != nullptr) SURELOCK_READ_FIELD(copy, &serial, surelock_rwlock, lock, member.serial);
    return describe_numbered("rwlock", serial, out, cap);
}

} // namespace

namespace surelock::sys {
// Write holds and write waits; a group's SURELOCK_EXCLUSIVE member.
const LockKind rwlock_kind = {
    .name = "rwlock",
    .held_by = rwlock_held_by,
    .acquire = acquire_write,
    .release = rwlock_release,
    .membership = rwlock_membership,
    .group_reenters = false,
    .owner_exited = writer_exited,
    .held_link_offset = offsetof(surelock_rwlock, write_held),
    .hold_mode = " (write)",
    .exclusive_holder = rwlock_writer,
    .held_shared_by = rwlock_read_by,
    .describe = describe_rwlock,
};
// Read holds and read waits; a group's SURELOCK_SHARED member. Read holds are not in held
// lists but in each thread's read-hold set (the dump reads those through describe); no link
// of a held list is of this kind. A thread waiting to read is registered with this kind: it
// waits for the write holder and the waiting writers, not for other readers.
const LockKind rwlock_read_kind = {
    .name = "rwlock",
    .held_by = rwlock_held_by,
    .acquire = acquire_read,
    .release = rwlock_release,
    .membership = rwlock_membership,
    .group_reenters = false,
    .owner_exited = nullptr,
    .held_link_offset = 0,
    .hold_mode = " (read)",
    .exclusive_holder = rwlock_writer,
    .held_shared_by = rwlock_write_waited_by,
    .describe = describe_rwlock,
};
} // namespace surelock::sys

namespace {

[[gnu::always_inline]] inline int acquire(surelock_rwlock *l, bool exclusive, Wait wait,
                                          const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(l, "rwlock", fn, &me)) return rc;
    if (!exclusive && __builtin_expect(read_fast(l, me), 1)) return writer_death_notice(l);
    if (held_by(l, me))
        return fail(EDEADLK, "%s: the calling thread already holds this rwlock (%s)", fn,
                    l->writer.load(std::memory_order_relaxed) == me->serial ? "writing"
                                                                            : "reading");
    return rwlock_acquire(l, me, exclusive, wait, fn);
}

} // namespace

extern "C" {

SURELOCK_API int surelock_rwlock_new(surelock_rwlock **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_rwlock_new: out is NULL");
    auto *l = create<surelock_rwlock>();
    if (l == nullptr) return fail(ENOMEM, "surelock_rwlock_new: out of memory");
    l->member.serial = next_object_serial();
    *out = l;
    return 0;
}

SURELOCK_API int surelock_rwlock_free(surelock_rwlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rwlock_free: the rwlock is NULL");
    SURELOCK_STEP(&l->futex.state);
    if (!l->futex.is_unused())
        return fail(EBUSY, "surelock_rwlock_free: the rwlock is held or waited on; nothing freed");
    if (l->member.groups.load() != 0)
        return fail(EBUSY, "surelock_rwlock_free: the rwlock is a member of %u lock group(s); "
                           "nothing freed",
                    l->member.groups.load());
    destroy(l);
    return 0;
}

SURELOCK_API int surelock_rwlock_rdlock(surelock_rwlock *l)
{
    return acquire(l, false, Wait::forever(), "surelock_rwlock_rdlock");
}

SURELOCK_API int surelock_rwlock_tryrdlock(surelock_rwlock *l)
{
    return acquire(l, false, Wait::try_once(), "surelock_rwlock_tryrdlock");
}

SURELOCK_API int surelock_rwlock_timedrdlock(surelock_rwlock *l, uint64_t timeout_ns)
{
    return acquire(l, false, Wait::within(timeout_ns), "surelock_rwlock_timedrdlock");
}

SURELOCK_API int surelock_rwlock_wrlock(surelock_rwlock *l)
{
    return acquire(l, true, Wait::forever(), "surelock_rwlock_wrlock");
}

SURELOCK_API int surelock_rwlock_trywrlock(surelock_rwlock *l)
{
    return acquire(l, true, Wait::try_once(), "surelock_rwlock_trywrlock");
}

SURELOCK_API int surelock_rwlock_timedwrlock(surelock_rwlock *l, uint64_t timeout_ns)
{
    return acquire(l, true, Wait::within(timeout_ns), "surelock_rwlock_timedwrlock");
}

SURELOCK_API int surelock_rwlock_unlock(surelock_rwlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rwlock_unlock: the rwlock is NULL");
    ThreadRecord *me = current_record;
    if (me == nullptr || !release_inline(l, me, false))
        return fail(EPERM, "surelock_rwlock_unlock: the calling thread holds no lock on it");
    return 0;
}

} // extern "C"
