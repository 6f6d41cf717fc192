// The word under the reader-writer lock, as FutexLock is the word under OwnedLock: a
// writer-preferring futex protocol with no owners. rwlock.cc adds the holders (error
// checking, owner death, the lock-kind table entries).
//
// One 64-bit state word. Its low half counts the holders: readers, or one writer
// (WRITE_HELD). Its high half is the futex word every waiter sleeps on: a phase sequence that
// each hand-off bumps, a "readers wait" bit and the number of writers waiting. Readers coming
// and going change only the low half, so sleepers are never bounced awake by them (sleeping on
// the whole state made every reader unlock turn the sleepers' futex_wait into EAGAIN: ~30x the
// system calls of glibc's rwlock); the high half changes only when a waiter arrives or when
// the lock is handed on.
//
// Readers may enter only while no writer holds or waits, so writers are not starved. A
// release that leaves the lock without holders hands it on in the same compare-and-swap that
// releases it: to one writer if any waits, otherwise to all waiting readers. That one
// read-modify-write is the last access to the lock; the wake that follows goes by address only
// (the kernel looks the address up; a stray wake is a spurious one), so another thread may
// take, release and free the lock the moment it is released.
//
// Waiters watch the state for a few microseconds before they sleep (spin_while). Up to 32767
// writers wait counted (the count's 15 bits); beyond that one more polls, so the count never
// overflows. A new writer may take a lock that nobody holds even while others wait to write
// (as glibc's); readers never overtake a waiting writer.
//
// Where the time goes under read-mostly contention (issue 13, 2 vCPUs, 95 % reads): in this
// word's cache line, not in writer preference. Every read lock and unlock moves the line
// between CPUs (~80 ns each on that machine), as glibc's rdlock and unlock do: two CPUs that
// only read reach ~10-13 Mops/s in all with either lock, one CPU alone ~44. Sleeps are rare
// (tens per 100 000 write phases); a hand-off to readers is one FUTEX_WAKE(INT_MAX). glibc's
// higher 4-thread figure comes from its threads sleeping until about one CPU stays busy.
// Measured there and not done: a blind fetch-and-add read lock (no faster reading, slower at
// 95 %) and watching before entering the deadlock detector's graph (slower: the time saved
// went into more traffic on this line). What would remove the per-read transfer: readers counting on lines of
// their own, which writers sum (a bare prototype: ~30 Mops/s at 95 % reads, ~115 reading).
#pragma once

#include <atomic>
#include <limits.h>
#include <stdint.h>

#include "sys/futex.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the futex word is the high half of the 64-bit state: little-endian layout");

namespace surelock::sys {

struct RwFutexLock {
    using State = uint64_t;

    // Low half: holders.
    static constexpr State READER = 1;
    static constexpr State WRITE_HELD = 1ull << 31;
    static constexpr State HOLDERS = 0xFFFFFFFFull;
    // High half: the futex word.
    static constexpr State PHASE_ONE = 1ull << 32; // sequence, 16 bits, bumped by every hand-off
    static constexpr State PHASE_MASK = 0xFFFFull << 32;
    static constexpr State READERS_WAITING = 1ull << 48;
    static constexpr State WRITER_WAITING = 1ull << 49; // count of waiting writers, 15 bits
    static constexpr uint32_t MAX_WRITERS_WAITING = 0x7FFF;

    static constexpr uint32_t READER_SLEEPER = 1; // futex tags: a hand-off wakes one class
    static constexpr uint32_t WRITER_SLEEPER = 2;

    static bool has_holders(State s) { return (s & HOLDERS) != 0; }
    static bool is_write_held(State s) { return (s & WRITE_HELD) != 0; }
    static uint32_t writers_waiting(State s) { return (uint32_t)(s >> 49); }
    static uint32_t futex_half(State s) { return (uint32_t)(s >> 32); }
    static bool readers_may_enter(State s) { return !is_write_held(s) && writers_waiting(s) == 0; }
    static State next_phase(State s) { return ((s + PHASE_ONE) & PHASE_MASK) | (s & ~PHASE_MASK); }

    std::atomic<State> state{0};

    // The uncontended steps, one compare-and-swap each; false when the lock is not free for
    // this mode.
    bool try_read()
    {
        SURELOCK_STEP(&state);
        State s = state.load(std::memory_order_relaxed);
        while (readers_may_enter(s))
            if (state.compare_exchange_weak(s, s + READER, std::memory_order_acquire,
                                            std::memory_order_relaxed))
                return true;
        return false;
    }

    // A writer may take a lock nobody holds even while others wait to write (as glibc's: the
    // woken one goes back to sleep and is woken again by this writer's unlock).
    bool try_write()
    {
        SURELOCK_STEP(&state);
        State s = state.load(std::memory_order_relaxed);
        while (!has_holders(s))
            if (state.compare_exchange_weak(s, s | WRITE_HELD, std::memory_order_acquire,
                                            std::memory_order_relaxed))
                return true;
        return false;
    }

    // Sleep until taken in that mode or the deadline passes: 0 or ETIMEDOUT.
    int read_until(const Deadline &deadline);
    int write_until(const Deadline &deadline);

    // Drops `hold` (READER or WRITE_HELD) and hands the lock on, in one compare-and-swap: the
    // last access to *this.
    void release(State hold);

    // Neither held nor waited for (so it may be freed).
    bool is_unused() const { return (state.load(std::memory_order_acquire) & ~PHASE_MASK) == 0; }

private:
    enum class Wake { nobody, one_writer, all_readers };
    static State hand_on(State s, Wake *wake);
    static void wake_by_address(std::atomic<uint32_t> *word, Wake wake);
    std::atomic<uint32_t> *futex_word()
    {
        return reinterpret_cast<std::atomic<uint32_t> *>(reinterpret_cast<char *>(&state) + 4);
    }
    template <class Busy> State spin_while(Busy busy);
    void writer_gave_up();
    bool poll_for_write(const Deadline &deadline);
};

// Inline: the release is the whole of an uncontended unlock.

// The state after a release left s_without_hold: if nobody holds it any more and someone
// waits, hand it on (a new phase, so that a waiter between reading the state and sleeping
// does not sleep through it).
inline RwFutexLock::State RwFutexLock::hand_on(State s, Wake *wake)
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
inline void RwFutexLock::wake_by_address(std::atomic<uint32_t> *word, Wake wake)
{
    if (wake == Wake::one_writer) futex_wake(word, 1, false, WRITER_SLEEPER);
    else if (wake == Wake::all_readers) futex_wake(word, INT_MAX, false, READER_SLEEPER);
}

// Computes the futex address first: nothing of *this is touched after the release.
inline void RwFutexLock::release(State hold)
{
    std::atomic<uint32_t> *word = futex_word(); // computed before: no touch after the release
    SURELOCK_STEP(&state);
    State s = state.load(std::memory_order_relaxed);
    Wake wake;
    SURELOCK_STEP(&state);
    while (!state.compare_exchange_weak(s, hand_on(s - hold, &wake), std::memory_order_release,
                                        std::memory_order_relaxed)) {
    }
#ifdef SURELOCK_TESTING
    if (surelock_testing_rwlock_released_hook) surelock_testing_rwlock_released_hook();
#endif
    wake_by_address(word, wake);
}

} // namespace surelock::sys
