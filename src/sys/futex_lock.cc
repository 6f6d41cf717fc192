#include "sys/futex_lock.h"

#include <errno.h>

namespace surelock::sys {

namespace {
// Spins this many rounds before sleeping: a holder on another core usually releases within a
// few hundred nanoseconds, and a futex sleep/wake round trip costs microseconds.
constexpr int spin_rounds = 100;
} // namespace

bool FutexLock::lock_until(const Deadline &deadline)
{
    for (int i = 0; i < spin_rounds; i++) {
        if (word.load(std::memory_order_relaxed) == FREE && try_lock()) return true;
        cpu_relax();
    }
    // Announce a sleeper by storing 2, and take the lock whenever the exchange shows it was
    // free. A lock taken this way stays marked 2, which costs at most one unneeded wake.
    while (word.exchange(HELD_WITH_SLEEPERS, std::memory_order_acquire) != FREE) {
        if (futex_wait(&word, HELD_WITH_SLEEPERS, deadline) == ETIMEDOUT) return false;
    }
    return true;
}

} // namespace surelock::sys
