#include "sys/futex_lock.h"

#include <errno.h>

namespace surelock::sys {

// No spinning: with two CPUs a spinning waiter keeps pulling the lock's cache line away from
// the holder, which then pays a transfer for every store and for its release; measured, 100
// rounds of pause cut 2-thread throughput to a fifth of glibc's. Like glibc's lll_lock, a
// waiter announces itself (2) and sleeps; the holder re-acquires from its own cache meanwhile.
bool FutexLock::lock_until(const Deadline &deadline)
{
    // Already marked as slept on: join the sleepers without an exchange (a read-modify-write
    // would only bounce the holder's cache line). Then take the lock whenever the exchange
    // shows it was free; a lock taken this way stays marked 2, which costs at most one
    // unneeded wake at release.
    SURELOCK_STEP(&word);
    if (word.load(std::memory_order_relaxed) == HELD_WITH_SLEEPERS &&
        futex_wait(&word, HELD_WITH_SLEEPERS, deadline) == ETIMEDOUT)
        return false;
    for (;;) {
        SURELOCK_STEP(&word);
        if (word.exchange(HELD_WITH_SLEEPERS, std::memory_order_acquire) == FREE) return true;
        if (futex_wait(&word, HELD_WITH_SLEEPERS, deadline) == ETIMEDOUT) return false;
    }
}

bool FutexLock::watch_until_free(uint64_t budget_ns) const
{
    if (word.load(std::memory_order_relaxed) == FREE) return true;
    uint64_t end = monotonic_ns() + budget_ns;
    do {
        for (int i = 0; i < 16; i++) {
            cpu_relax();
            if (word.load(std::memory_order_relaxed) == FREE) return true;
        }
    } while (monotonic_ns() < end);
    return false;
}

} // namespace surelock::sys
