// Writer-preferring reader-writer lock (API.md section 2).
//
// One 64-bit state word. Its low half counts the holders: readers, or one writer
// (WRITE_HELD). Its high half is the futex word every waiter sleeps on: a phase sequence that
// each hand-off bumps, a "readers wait" bit and the number of writers waiting. Readers coming
// and going change only the low half, so sleepers are never bounced awake by them (sleeping on
// the whole state made every reader unlock turn the sleepers' futex_wait into EAGAIN: ~30x the
// system calls of glibc's rwlock); the high half changes only when a waiter arrives or when
// the lock is handed on.
//
// Readers may enter only while no writer holds or waits, so writers are not starved. An
// unlock that leaves the lock without holders hands it on in the same compare-and-swap that
// releases it: to one writer if any waits, otherwise to all waiting readers. That one
// read-modify-write is the last access to the lock; the wake that follows goes by address only
// (the kernel looks the address up; a stray wake is a spurious one), so another thread may
// take, release and free the lock the moment it is released.
//
// Holds are tracked per thread for error checking and owner death, in O(1) whatever the
// thread holds: the writer as its thread serial plus a link in its held list; a reader as the
// lock's address in its read-hold set (sys/hold_set.h), drained at thread exit. A thread holds
// the lock at most once, so the reader count is bounded by the number of threads.
// Waiters watch the state for a few microseconds before they sleep (spin_while, below).
// Up to 32767 writers wait counted (the count's 15 bits); beyond that one more polls, so the
// count never overflows. A new writer may take a lock that nobody holds even while others wait
// to write (as glibc's); readers never overtake a waiting writer.

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
#include "sys/owned_lock.h"
#include "sys/thread.h"
#include "sys/waits.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
void (*surelock_testing_rwlock_released_hook)(void);
#define RELEASED_HOOK()                                                                        \
    do {                                                                                       \
        if (surelock_testing_rwlock_released_hook) surelock_testing_rwlock_released_hook();    \
    } while (0)
#else
#define RELEASED_HOOK() ((void)0)
#endif

using namespace surelock::sys;
using surelock::sys::Wait;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the futex word is the high half of the 64-bit state: little-endian layout");

namespace {

using State = uint64_t;

// Low half: holders.
constexpr State READER = 1;
constexpr State WRITE_HELD = 1ull << 31;
constexpr State HOLDERS = 0xFFFFFFFFull;
// High half: the futex word.
constexpr State PHASE_ONE = 1ull << 32; // sequence, 16 bits, bumped by every hand-off
constexpr State PHASE_MASK = 0xFFFFull << 32;
constexpr State READERS_WAITING = 1ull << 48;
constexpr State WRITER_WAITING = 1ull << 49; // count of waiting writers, 15 bits
constexpr uint32_t MAX_WRITERS_WAITING = 0x7FFF;

constexpr uint32_t READER_SLEEPER = 1; // futex tags: a hand-off wakes one class
constexpr uint32_t WRITER_SLEEPER = 2;

bool has_holders(State s) { return (s & HOLDERS) != 0; }
bool is_write_held(State s) { return (s & WRITE_HELD) != 0; }
uint32_t writers_waiting(State s) { return (uint32_t)(s >> 49); }
uint32_t futex_half(State s) { return (uint32_t)(s >> 32); }
bool readers_may_enter(State s) { return !is_write_held(s) && writers_waiting(s) == 0; }
State next_phase(State s) { return ((s + PHASE_ONE) & PHASE_MASK) | (s & ~PHASE_MASK); }

enum class Wake { nobody, one_writer, all_readers };

} // namespace

struct alignas(64) surelock_rwlock {
    std::atomic<State> state{0};
    std::atomic<uint64_t> writer{0}; // write holder's thread serial; 0 when not write-held
    // Set by a writer that exits holding; taken (exchanged) by the next acquirer of any mode.
    std::atomic<bool> writer_died{false};
    HeldLink write_held{};
    Membership member{};
};

namespace {

std::atomic<uint32_t> *futex_word(surelock_rwlock *l)
{
    return reinterpret_cast<std::atomic<uint32_t> *>(reinterpret_cast<char *>(&l->state) + 4);
}

// ---- The state machine: each step one atomic operation ---------------------------------------

// The state after a release left s_without_hold: if nobody holds it any more and someone
// waits, hand it on (a new phase, so that a waiter between reading the state and sleeping
// does not sleep through it).
State hand_on(State s, Wake *wake)
{
    *wake = Wake::nobody;
    if (has_holders(s)) return s;
    if (writers_waiting(s) != 0) {
        *wake = Wake::one_writer; // readers stay flagged: that writer's unlock lets them in
        return next_phase(s);
    }
    if (s & READERS_WAITING) {
        *wake = Wake::all_readers;
        return next_phase(s & ~READERS_WAITING);
    }
    return s;
}

// By address only: the lock may already be freed (a stray wake is a spurious one).
void wake_by_address(std::atomic<uint32_t> *word, Wake wake)
{
    if (wake == Wake::one_writer) futex_wake(word, 1, false, WRITER_SLEEPER);
    else if (wake == Wake::all_readers) futex_wake(word, INT_MAX, false, READER_SLEEPER);
}

// Drops `hold` (READER or WRITE_HELD) and hands the lock on, in one compare-and-swap: the
// last access to the lock.
void release_state(surelock_rwlock *l, State hold)
{
    std::atomic<uint32_t> *word = futex_word(l); // computed before: no touch after the release
    SURELOCK_STEP(&l->state);
    State s = l->state.load(std::memory_order_relaxed);
    Wake wake;
    SURELOCK_STEP(&l->state);
    while (!l->state.compare_exchange_weak(s, hand_on(s - hold, &wake), std::memory_order_release,
                                           std::memory_order_relaxed)) {
    }
    RELEASED_HOOK();
    wake_by_address(word, wake);
}

bool try_read(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    State s = l->state.load(std::memory_order_relaxed);
    while (readers_may_enter(s))
        if (l->state.compare_exchange_weak(s, s + READER, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

// A writer may take a lock nobody holds even while others wait to write (as glibc's: the
// woken one goes back to sleep and is woken again by this writer's unlock).
bool try_write(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    State s = l->state.load(std::memory_order_relaxed);
    while (!has_holders(s))
        if (l->state.compare_exchange_weak(s, s | WRITE_HELD, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return true;
    return false;
}

// Before sleeping, a waiter watches the state for a few microseconds: critical sections of a
// reader-writer lock are short, and a futex sleep and wake costs ~10 us here, during which
// writer preference keeps every reader out of a lock that may already be free. The budget is
// time (clock-checked every 16 pauses), so it means the same on every CPU.
constexpr uint64_t spin_budget_ns = 4000;

// Loads the state until `busy` says no or the budget is spent; returns the last state seen.
template <class Busy> State spin_while(surelock_rwlock *l, Busy busy)
{
    State s = l->state.load(std::memory_order_relaxed);
    if (!busy(s)) return s;
    uint64_t end = monotonic_ns() + spin_budget_ns;
    for (;;) {
        for (int i = 0; i < 16; i++) {
            cpu_relax();
            s = l->state.load(std::memory_order_relaxed);
            if (!busy(s)) return s;
        }
        if (monotonic_ns() >= end) return s;
    }
}

// The blocking reader: flags itself and sleeps until readers may enter.
int read_contended(surelock_rwlock *l, const Deadline &deadline)
{
    SURELOCK_STEP(&l->state); // before the spin, not in it: the spin is bounded by time
    State s = spin_while(l, [](State x) { return !readers_may_enter(x); });
    for (;;) {
        if (readers_may_enter(s)) {
            SURELOCK_STEP(&l->state);
            if (l->state.compare_exchange_weak(s, s + READER, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (!(s & READERS_WAITING)) {
            SURELOCK_STEP(&l->state);
            if (!l->state.compare_exchange_weak(s, s | READERS_WAITING, std::memory_order_relaxed))
                continue;
            s |= READERS_WAITING;
        }
        // A reader that times out leaves the bit: the next hand-off clears it.
        if (futex_wait(futex_word(l), futex_half(s), deadline, false, READER_SLEEPER) ==
            ETIMEDOUT)
            return ETIMEDOUT;
        SURELOCK_STEP(&l->state);
        s = l->state.load(std::memory_order_relaxed);
    }
}

// A counted writer timed out. Uncount it; if that leaves no writer waiting, readers may enter
// (wake those waiting unless a writer holds it: its unlock will); if the lock is free and
// other writers still wait, this one may have swallowed their wake: pass it on.
void writer_gave_up(surelock_rwlock *l)
{
    SURELOCK_STEP(&l->state);
    State s = l->state.load(std::memory_order_relaxed);
    State next;
    Wake wake;
    do {
        next = s - WRITER_WAITING;
        wake = Wake::nobody;
        if (writers_waiting(next) != 0) {
            if (!has_holders(next)) {
                wake = Wake::one_writer;
                next = next_phase(next);
            }
        } else if ((next & READERS_WAITING) && !is_write_held(next)) {
            wake = Wake::all_readers;
            next = next_phase(next & ~READERS_WAITING);
        }
        SURELOCK_STEP(&l->state);
    } while (!l->state.compare_exchange_weak(s, next, std::memory_order_relaxed));
    wake_by_address(futex_word(l), wake);
}

// More writers wait than the count can hold (32767): this one waits uncounted, polling.
bool poll_for_write(surelock_rwlock *l, const Deadline &deadline)
{
    for (;;) {
        if (try_write(l)) return true;
        if (deadline.remaining_ns() == 0) return false;
        struct timespec pause = {0, 100000};
        nanosleep(&pause, nullptr);
    }
}

// The blocking writer: counts itself among the writers waiting (which keeps new readers out)
// and sleeps until the lock has no holders.
int write_contended(surelock_rwlock *l, const Deadline &deadline)
{
    SURELOCK_STEP(&l->state);
    State s = l->state.load(std::memory_order_relaxed);
    bool counted = false;
    for (;;) {
        if (!has_holders(s)) {
            State taken = (s | WRITE_HELD) - (counted ? WRITER_WAITING : 0);
            SURELOCK_STEP(&l->state);
            if (l->state.compare_exchange_weak(s, taken, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (!counted) {
            if (writers_waiting(s) == MAX_WRITERS_WAITING)
                return poll_for_write(l, deadline) ? 0 : ETIMEDOUT;
            SURELOCK_STEP(&l->state);
            if (!l->state.compare_exchange_weak(s, s + WRITER_WAITING, std::memory_order_relaxed))
                continue;
            s += WRITER_WAITING;
            counted = true;
            // Counted, so no new reader enters: the readers inside are about to leave.
            s = spin_while(l, [](State x) { return has_holders(x); });
            continue;
        }
        if (futex_wait(futex_word(l), futex_half(s), deadline, false, WRITER_SLEEPER) ==
            ETIMEDOUT) {
            writer_gave_up(l);
            return ETIMEDOUT;
        }
        SURELOCK_STEP(&l->state);
        s = l->state.load(std::memory_order_relaxed);
    }
}

// ---- Holds ------------------------------------------------------------------------------------

// Thread-exit handlers.
void reader_exited(const void *key)
{
    // A dead reader's hold is dropped silently.
    release_state(static_cast<surelock_rwlock *>(const_cast<void *>(key)), READER);
}

void writer_exited(HeldLink *link)
{
    surelock_rwlock *l = SURELOCK_CONTAINER_OF(link, surelock_rwlock, write_held);
    l->writer_died.store(true, std::memory_order_relaxed);
    l->writer.store(0, std::memory_order_relaxed);
    release_state(l, WRITE_HELD);
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
// set (which also finds where the hold goes) and one compare-and-swap. False when the caller
// holds the lock already, the set must grow, or the lock is not free for readers: the general
// path then sorts it out (EDEADLK, ENOMEM, waiting).
[[gnu::always_inline]] inline bool read_fast(surelock_rwlock *l, ThreadRecord *me)
{
    HoldSet &holds = me->read_holds;
    uint32_t slot;
    if (!holds.has_room_for_one() || l->writer.load(std::memory_order_relaxed) == me->serial ||
        holds.find(l, &slot) || !try_read(l))
        return false;
    holds.fill(slot, l, reader_exited);
    return true;
}

[[gnu::always_inline]] inline bool release_inline(surelock_rwlock *l, ThreadRecord *me,
                                                  bool pass_owner_death)
{
    State hold;
    if (l->writer.load(std::memory_order_relaxed) == me->serial) {
        l->write_held.unlink();
        l->writer.store(0, std::memory_order_relaxed);
        hold = WRITE_HELD;
    } else if (me->read_holds.erase(l)) {
        hold = READER;
    } else {
        return false;
    }
    if (pass_owner_death) l->writer_died.store(true, std::memory_order_relaxed);
    release_state(l, hold);
    return true;
}

// The blocking part of rwlock_acquire, out of line (the uncontended path stays as it was).
// Returns 0, ETIMEDOUT or EDEADLK with errmsg set.
[[gnu::noinline, gnu::cold]] int wait_to_acquire(surelock_rwlock *l, ThreadRecord *me,
                                                       bool exclusive, Wait wait,
                                                       const char *fn)
{
    Deadline deadline = wait.deadline(); // the clock is read before the walk, not after
    // ---- Deadlock detection (waits.h): refuse a wait that would close a cycle.
    // A write waits for the holders (the writer, or every reader); a read waits for the writer
    // holding it or the writers waiting for it (which keep new readers out), never for
    // readers: its own kind tells the walk so (rwlock_read_kind).
    if (int rc = begin_wait(me, exclusive ? rwlock_kind : rwlock_read_kind, l, fn)) return rc;
    int waited = (exclusive ? write_contended : read_contended)(l, deadline);
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
    if (!(exclusive ? try_write(l) : try_read(l))) {
        if (wait.is_try_once())
            return fail(EBUSY, "%s: %s", fn,
                        exclusive ? "held by another thread" : "a writer holds it or waits for it");
        if (wait.is_spent()) return fail(ETIMEDOUT, "%s: busy (timeout 0)", fn);
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

void rwlock_release(void *lock, ThreadRecord *me, bool pass_owner_death)
{
    release_inline(static_cast<surelock_rwlock *>(lock), me, pass_owner_death);
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
    SURELOCK_STEP(&l->state);
    if ((l->state.load(std::memory_order_acquire) & ~PHASE_MASK) != 0)
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
