// A plain futex mutex word: free / held / held with possible sleepers (Drepper's three-state
// mutex). An uncontended acquire is one compare-and-swap, an uncontended release one exchange
// with no system call. No owner, no error checking: OwnedLock adds those for the public
// locks; the semaphore uses it bare for its queue.
#pragma once

#include <atomic>
#include <stdint.h>

#include "sys/futex.h"

namespace surelock::sys {

struct FutexLock {
    enum : uint32_t { FREE = 0, HELD = 1, HELD_WITH_SLEEPERS = 2 };
    std::atomic<uint32_t> word{FREE};

    bool is_free() const { return word.load(std::memory_order_acquire) == FREE; }

    bool try_lock()
    {
        SURELOCK_STEP(&word);
        uint32_t expected = FREE;
        return word.compare_exchange_strong(expected, HELD, std::memory_order_acquire,
                                            std::memory_order_relaxed);
    }

    // Sleeps until taken or the deadline passes (no spinning: see futex_lock.cc). Returns
    // true once taken.
    bool lock_until(const Deadline &deadline);

    // The contended path's first step, before it pays for anything a sleeper needs (the
    // deadlock detector's registration): marks the word slept on and returns true if that
    // found it free (taken, as lock_until would have). A word already marked is left alone,
    // so a second waiter does not bounce the holder's cache line.
    bool take_or_mark_slept_on()
    {
        SURELOCK_STEP(&word);
        if (word.load(std::memory_order_relaxed) == HELD_WITH_SLEEPERS) return false;
        SURELOCK_STEP(&word);
        return word.exchange(HELD_WITH_SLEEPERS, std::memory_order_acquire) == FREE;
    }

    // Watches the word (loads only, no read-modify-write) for up to budget_ns until it is
    // free; true if it was seen free. For callers that would otherwise sleep while holding
    // other locks (a group between members), where a short critical section ending is worth
    // more than the CPU: lock_until itself never spins.
    bool watch_until_free(uint64_t budget_ns) const;

    void lock()
    {
        if (!try_lock()) lock_until(Deadline::forever());
    }

    // Nothing of *this is touched after the releasing store (the futex wake only hands the
    // address to the kernel), so the memory may be freed as soon as another thread takes it.
    void unlock()
    {
        if (release_word()) wake_one();
    }

    // unlock() in two halves, for a holder with bookkeeping of its own to do after the
    // releasing store and before a system call: the releasing exchange, true when a sleeper
    // must then be woken with wake_one() (which only hands the address to the kernel).
    bool release_word()
    {
        SURELOCK_STEP(&word);
        return word.exchange(FREE, std::memory_order_release) == HELD_WITH_SLEEPERS;
    }
    void wake_one() { futex_wake(&word, 1); }
};

} // namespace surelock::sys
