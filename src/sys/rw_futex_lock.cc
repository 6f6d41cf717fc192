#include "sys/rw_futex_lock.h"

#include <errno.h>
#include <limits.h>
#include <time.h>

#ifdef SURELOCK_TESTING
void (*surelock_testing_rwlock_released_hook)(void);
#endif

namespace surelock::sys {

// Before sleeping, a waiter watches the state for a few microseconds: critical sections of a
// reader-writer lock are short, and a futex sleep and wake costs ~10 us here, during which
// writer preference keeps every reader out of a lock that may already be free. The budget is
// time (clock-checked every 16 pauses), so it means the same on every CPU.
constexpr uint64_t spin_budget_ns = 4000;

// Loads the state until `busy` says no or the budget is spent; returns the last state seen.
template <class Busy> RwFutexLock::State RwFutexLock::spin_while(Busy busy)
{
    State s = state.load(std::memory_order_relaxed);
    if (!busy(s)) return s;
    uint64_t end = monotonic_ns() + spin_budget_ns;
    for (;;) {
        for (int i = 0; i < 16; i++) {
            cpu_relax();
            s = state.load(std::memory_order_relaxed);
            if (!busy(s)) return s;
        }
        if (monotonic_ns() >= end) return s;
    }
}

// The blocking reader: flags itself and sleeps until readers may enter.
int RwFutexLock::read_until(const Deadline &deadline)
{
    SURELOCK_STEP(&state); // before the spin, not in it: the spin is bounded by time
    State s = spin_while([](State x) { return !readers_may_enter(x); });
    for (;;) {
        if (readers_may_enter(s)) {
            SURELOCK_STEP(&state);
            if (state.compare_exchange_weak(s, s + READER, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (!(s & READERS_WAITING)) {
            SURELOCK_STEP(&state);
            if (!state.compare_exchange_weak(s, s | READERS_WAITING, std::memory_order_relaxed))
                continue;
            s |= READERS_WAITING;
        }
        // A reader that times out leaves the bit: the next hand-off clears it.
        if (futex_wait(futex_word(), futex_half(s), deadline, false, READER_SLEEPER) ==
            ETIMEDOUT)
            return ETIMEDOUT;
        SURELOCK_STEP(&state);
        s = state.load(std::memory_order_relaxed);
    }
}

// A counted writer timed out. Uncount it; if that leaves no writer waiting, readers may enter
// (wake those waiting unless a writer holds it: its unlock will); if the lock is free and
// other writers still wait, this one may have swallowed their wake: pass it on.
void RwFutexLock::writer_gave_up()
{
    SURELOCK_STEP(&state);
    State s = state.load(std::memory_order_relaxed);
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
        SURELOCK_STEP(&state);
    } while (!state.compare_exchange_weak(s, next, std::memory_order_relaxed));
    wake_by_address(futex_word(), wake);
}

// More writers wait than the count can hold (32767): this one waits uncounted, polling.
bool RwFutexLock::poll_for_write(const Deadline &deadline)
{
    for (;;) {
        if (try_write()) return true;
        if (deadline.remaining_ns() == 0) return false;
        struct timespec pause = {0, 100000};
        nanosleep(&pause, nullptr);
    }
}

// The blocking writer: counts itself among the writers waiting (which keeps new readers out)
// and sleeps until the lock has no holders.
int RwFutexLock::write_until(const Deadline &deadline)
{
    SURELOCK_STEP(&state);
    State s = state.load(std::memory_order_relaxed);
    bool counted = false;
    for (;;) {
        if (!has_holders(s)) {
            State taken = (s | WRITE_HELD) - (counted ? WRITER_WAITING : 0);
            SURELOCK_STEP(&state);
            if (state.compare_exchange_weak(s, taken, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (!counted) {
            if (writers_waiting(s) == MAX_WRITERS_WAITING)
                return poll_for_write(deadline) ? 0 : ETIMEDOUT;
            SURELOCK_STEP(&state);
            if (!state.compare_exchange_weak(s, s + WRITER_WAITING, std::memory_order_relaxed))
                continue;
            s += WRITER_WAITING;
            counted = true;
            // Counted, so no new reader enters: the readers inside are about to leave.
            s = spin_while([](State x) { return has_holders(x); });
            continue;
        }
        if (futex_wait(futex_word(), futex_half(s), deadline, false, WRITER_SLEEPER) ==
            ETIMEDOUT) {
            writer_gave_up();
            return ETIMEDOUT;
        }
        SURELOCK_STEP(&state);
        s = state.load(std::memory_order_relaxed);
    }
}

} // namespace surelock::sys
