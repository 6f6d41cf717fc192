// Writer-preferring reader-writer lock (API.md section 2).
//
// One 32-bit state word holds the reader count (or "write locked") and two waiting bits.
// Readers may enter only while no writer holds or waits, so writers are not starved; an
// unlock that leaves the lock free wakes one writer if any wait, otherwise all readers.
// Everyone sleeps on the state word itself (tagged reader or writer, so a wake can pick one
// class), which keeps the wake-ups race-free and means an unlock touches nothing after the
// store that frees the lock but futex wakes by address.
//
// Holds are tracked per thread for error checking and owner death: the writer is recorded as
// its thread serial plus a link in its held list; each reader has a small hold record in its
// held list (cached per thread, so a read lock/unlock pair normally allocates nothing).
// A thread holds the lock at most once, so the reader count is bounded by the number of
// threads and cannot reach the 2^30 limit of the word. Waiters do not spin (as FutexLock:
// on two CPUs spinning only steals the holder's cache line; measured, it cost throughput).

#include <errno.h>
#include <limits.h>
#include <stddef.h>

#include <atomic>

#include "locks.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/owned_lock.h"
#include "sys/thread.h"

using namespace surelock::sys;
using surelock::sys::Wait;

namespace {

constexpr uint32_t READERS_MASK = (1u << 30) - 1;
constexpr uint32_t WRITE_LOCKED = READERS_MASK;
constexpr uint32_t READERS_WAITING = 1u << 30;
constexpr uint32_t WRITERS_WAITING = 1u << 31;
constexpr uint32_t READER_SLEEPER = 1; // futex tags
constexpr uint32_t WRITER_SLEEPER = 2;

bool is_unlocked(uint32_t s) { return (s & READERS_MASK) == 0; }
bool is_write_locked(uint32_t s) { return (s & READERS_MASK) == WRITE_LOCKED; }
bool is_read_lockable(uint32_t s)
{
    return (s & READERS_MASK) < WRITE_LOCKED - 1 && (s & (READERS_WAITING | WRITERS_WAITING)) == 0;
}

} // namespace

struct alignas(64) surelock_rwlock {
    std::atomic<uint32_t> state{0};
    // Writers inside write_contended's waiting protocol. WRITERS_WAITING is one bit; the count
    // tells whether it still stands for anyone (a writer that took the lock or timed out may
    // leave it set).
    std::atomic<uint32_t> writers_waiting{0};
    std::atomic<uint64_t> writer{0}; // write holder's thread serial; 0 when not write-held
    // Set by a writer that exits holding; taken (exchanged) by the next acquirer of any mode.
    std::atomic<bool> writer_died{false};
    HeldLink write_held{};
    Membership member{};
};

namespace {

struct ReadHold {
    HeldLink link;
    surelock_rwlock *lock;
};

void read_unlock_state(surelock_rwlock *l);
void write_unlock_state(surelock_rwlock *l);

// Thread-exit handlers.
void reader_exited(HeldLink *link)
{
    auto *hold = reinterpret_cast<ReadHold *>(link);
    read_unlock_state(hold->lock); // a dead reader's hold is dropped silently
    deallocate(hold);
}

void writer_exited(HeldLink *link)
{
    auto *l = reinterpret_cast<surelock_rwlock *>(reinterpret_cast<char *>(link) -
                                                  offsetof(surelock_rwlock, write_held));
    l->writer_died.store(true, std::memory_order_relaxed);
    l->writer.store(0, std::memory_order_relaxed);
    write_unlock_state(l);
}

ReadHold *find_read_hold(ThreadRecord *me, const surelock_rwlock *l)
{
    for (HeldLink *p = me->held.next; p != &me->held; p = p->next)
        if (p->owner_exited == reader_exited && reinterpret_cast<ReadHold *>(p)->lock == l)
            return reinterpret_cast<ReadHold *>(p);
    return nullptr;
}

bool held_by(const surelock_rwlock *l, ThreadRecord *me)
{
    return l->writer.load(std::memory_order_relaxed) == me->serial ||
           find_read_hold(me, l) != nullptr;
}

// ---- The state word -------------------------------------------------------------------------

bool try_read(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.load(std::memory_order_relaxed);
    while (is_read_lockable(s))
        if (l->state.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

bool try_write(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.load(std::memory_order_relaxed);
    while (is_unlocked(s))
        if (l->state.compare_exchange_weak(s, s + WRITE_LOCKED, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

int read_contended(surelock_rwlock *l, const Deadline &deadline)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.load(std::memory_order_relaxed);
    for (;;) {
        SURELOCK_STEP(&l->state);
        if (is_read_lockable(s)) {
            if (l->state.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (!(s & READERS_WAITING) &&
            !l->state.compare_exchange_weak(s, s | READERS_WAITING, std::memory_order_relaxed))
            continue;
        if (futex_wait(&l->state, s | READERS_WAITING, deadline, false, READER_SLEEPER) ==
            ETIMEDOUT)
            return ETIMEDOUT;
        SURELOCK_STEP(&l->state);
        s = l->state.load(std::memory_order_relaxed);
    }
}

// A waiting writer timed out. If it was the last writer waiting, WRITERS_WAITING is now a lie
// that keeps new readers out while readers still hold the lock: clear it, let in the readers
// that queued behind it, and nudge any writer just starting to wait (it sets the bit again).
void writer_gave_up(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->writers_waiting);
    if (l->writers_waiting.fetch_sub(1) != 1) return;
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.load(std::memory_order_relaxed);
    uint32_t cleared;
    do {
        cleared = s & ~WRITERS_WAITING;
        if (!is_write_locked(s)) cleared &= ~READERS_WAITING; // a writer's unlock would wake them
        if (cleared == s) return;
    } while (!l->state.compare_exchange_weak(s, cleared, std::memory_order_relaxed));
    futex_wake(&l->state, INT_MAX, false, WRITER_SLEEPER);
    if ((s & READERS_WAITING) && !(cleared & READERS_WAITING))
        futex_wake(&l->state, INT_MAX, false, READER_SLEEPER);
}

int write_contended(surelock_rwlock *l, const Deadline &deadline)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.load(std::memory_order_relaxed);
    bool counted = false; // in writers_waiting; then we also keep WRITERS_WAITING when we win
    for (;;) {
        SURELOCK_STEP(&l->state);
        if (is_unlocked(s)) {
            uint32_t taken = s | WRITE_LOCKED | (counted ? WRITERS_WAITING : 0);
            if (l->state.compare_exchange_weak(s, taken, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
                SURELOCK_STEP(&l->writers_waiting);
                if (counted) l->writers_waiting.fetch_sub(1);
                return 0;
            }
            continue;
        }
        if (!counted) {
            SURELOCK_STEP(&l->writers_waiting);
            l->writers_waiting.fetch_add(1);
            counted = true;
        }
        if (!(s & WRITERS_WAITING)) {
            if (!l->state.compare_exchange_weak(s, s | WRITERS_WAITING, std::memory_order_relaxed))
                continue;
            s |= WRITERS_WAITING;
        }
        if (futex_wait(&l->state, s, deadline, false, WRITER_SLEEPER) == ETIMEDOUT) {
            writer_gave_up(l);
            return ETIMEDOUT;
        }
        SURELOCK_STEP(&l->state);
        s = l->state.load(std::memory_order_relaxed);
    }
}

// The lock just became free (s, as left by the unlock) with waiters flagged: hand it to one
// writer if any waits, otherwise to all readers. Each step is one compare-and-swap followed
// only by futex wakes by address: once the state can read 0, another thread may take the lock
// and free it. If someone locks it meanwhile, their unlock takes over this duty.
void wake_writer_or_readers(surelock_rwlock *l, uint32_t s)
{
    for (;;) {
        if (!is_unlocked(s)) return;
        if (s & WRITERS_WAITING) SURELOCK_STEP(&l->writers_waiting);
        if ((s & WRITERS_WAITING) && l->writers_waiting.load() != 0) {
            // Readers stay flagged: the writer's unlock (or its giving up) lets them in.
            SURELOCK_STEP(&l->state);
            if (!l->state.compare_exchange_weak(s, s & ~WRITERS_WAITING,
                                                std::memory_order_relaxed))
                continue;
            futex_wake(&l->state, 1, false, WRITER_SLEEPER); // one not yet asleep will see 0
            return;
        }
        // No writer waits (the bit, if set, was left by a writer that took the lock or gave
        // up): let the readers in, and wake one writer in case it raced in behind that bit.
        uint32_t cleared = s & ~(WRITERS_WAITING | READERS_WAITING);
        if (cleared == s) return;
        SURELOCK_STEP(&l->state);
        if (!l->state.compare_exchange_weak(s, cleared, std::memory_order_relaxed)) continue;
        if (s & WRITERS_WAITING) futex_wake(&l->state, 1, false, WRITER_SLEEPER);
        if (s & READERS_WAITING) futex_wake(&l->state, INT_MAX, false, READER_SLEEPER);
        return;
    }
}

void read_unlock_state(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.fetch_sub(1, std::memory_order_release) - 1;
    if (is_unlocked(s) && (s & (READERS_WAITING | WRITERS_WAITING))) wake_writer_or_readers(l, s);
}

void write_unlock_state(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    uint32_t s = l->state.fetch_sub(WRITE_LOCKED, std::memory_order_release) - WRITE_LOCKED;
    if (s & (READERS_WAITING | WRITERS_WAITING)) wake_writer_or_readers(l, s);
}

// ---- Acquire and release ----------------------------------------------------------------------

int took(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->writer_died);
    if (__builtin_expect(l->writer_died.load(std::memory_order_relaxed), 0) &&
        l->writer_died.exchange(false, std::memory_order_relaxed))
        return EOWNERDEAD;
    return 0;
}

} // namespace

namespace surelock::locks {

int rwlock_acquire(surelock_rwlock *l, ThreadRecord *me, bool exclusive, Wait wait,
                   uint64_t timeout_ns, const char *fn)
{
    ReadHold *hold = nullptr;
    if (!exclusive) {
        hold = static_cast<ReadHold *>(me->spare_hold);
        me->spare_hold = nullptr;
        if (hold == nullptr &&
            (hold = static_cast<ReadHold *>(allocate(sizeof(ReadHold), alignof(ReadHold)))) ==
                nullptr)
            return fail(ENOMEM, "%s: out of memory for the read hold record", fn);
    }
    bool taken = exclusive ? try_write(l) : try_read(l);
    int rc = 0;
    if (!taken) {
        if (wait == Wait::never)
            rc = fail(EBUSY, "%s: %s", fn,
                      exclusive ? "held by another thread" : "a writer holds it or waits for it");
        else if (timeout_ns == 0)
            rc = fail(ETIMEDOUT, "%s: busy (timeout 0)", fn);
        else if ((exclusive ? write_contended : read_contended)(l, Deadline::after(timeout_ns)) !=
                 0)
            rc = fail(ETIMEDOUT, "%s: not acquired within %llu ns", fn,
                      (unsigned long long)timeout_ns);
    }
    if (rc != 0) {
        if (hold != nullptr) me->spare_hold = hold;
        return rc;
    }
    if (exclusive) {
        l->writer.store(me->serial, std::memory_order_relaxed);
        l->write_held.owner_exited = writer_exited;
        me->link_held(&l->write_held);
    } else {
        hold->lock = l;
        hold->link.owner_exited = reader_exited;
        me->link_held(&hold->link);
    }
    return took(l);
}

bool rwlock_release(surelock_rwlock *l, ThreadRecord *me, bool pass_owner_death)
{
    SURELOCK_STEP(&l->writer);
    if (pass_owner_death) l->writer_died.store(true, std::memory_order_relaxed);
    if (l->writer.load(std::memory_order_relaxed) == me->serial) {
        l->write_held.unlink();
        l->writer.store(0, std::memory_order_relaxed);
        write_unlock_state(l);
        return true;
    }
    ReadHold *hold = find_read_hold(me, l);
    if (hold == nullptr) return false;
    hold->link.unlink();
    if (me->spare_hold == nullptr) me->spare_hold = hold;
    else deallocate(hold);
    read_unlock_state(l);
    return true;
}

bool rwlock_held_by(const surelock_rwlock *l, ThreadRecord *me)
{
    return held_by(l, me);
}

Membership *membership(surelock_rwlock *l)
{
    return &l->member;
}

} // namespace surelock::locks

namespace {

int acquire(surelock_rwlock *l, bool exclusive, Wait wait, uint64_t timeout_ns, const char *fn)
{
    if (l == nullptr) return fail(EINVAL, "%s: the rwlock is NULL", fn);
    ThreadRecord *me = current_thread();
    if (me == nullptr) return ENOMEM;
    if (held_by(l, me))
        return fail(EDEADLK, "%s: the calling thread already holds this rwlock (%s)", fn,
                    l->writer.load(std::memory_order_relaxed) == me->serial ? "writing"
                                                                            : "reading");
    return surelock::locks::rwlock_acquire(l, me, exclusive, wait, timeout_ns, fn);
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
    SURELOCK_STEP(&l->state);
    if (l->state.load(std::memory_order_acquire) != 0)
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
    return acquire(l, false, Wait::until_deadline, SURELOCK_FOREVER, "surelock_rwlock_rdlock");
}

SURELOCK_API int surelock_rwlock_tryrdlock(surelock_rwlock *l)
{
    return acquire(l, false, Wait::never, 0, "surelock_rwlock_tryrdlock");
}

SURELOCK_API int surelock_rwlock_timedrdlock(surelock_rwlock *l, uint64_t timeout_ns)
{
    return acquire(l, false, Wait::until_deadline, timeout_ns, "surelock_rwlock_timedrdlock");
}

SURELOCK_API int surelock_rwlock_wrlock(surelock_rwlock *l)
{
    return acquire(l, true, Wait::until_deadline, SURELOCK_FOREVER, "surelock_rwlock_wrlock");
}

SURELOCK_API int surelock_rwlock_trywrlock(surelock_rwlock *l)
{
    return acquire(l, true, Wait::never, 0, "surelock_rwlock_trywrlock");
}

SURELOCK_API int surelock_rwlock_timedwrlock(surelock_rwlock *l, uint64_t timeout_ns)
{
    return acquire(l, true, Wait::until_deadline, timeout_ns, "surelock_rwlock_timedwrlock");
}

SURELOCK_API int surelock_rwlock_unlock(surelock_rwlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rwlock_unlock: the rwlock is NULL");
    ThreadRecord *me = current_record;
    if (me == nullptr || !surelock::locks::rwlock_release(l, me))
        return fail(EPERM, "surelock_rwlock_unlock: the calling thread holds no lock on it");
    return 0;
}

} // extern "C"
