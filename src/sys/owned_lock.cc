#include "sys/owned_lock.h"

#include <stddef.h>

namespace surelock::sys {

namespace {
// Spins this many rounds before sleeping: a holder on another core usually releases within a
// few hundred nanoseconds, and a futex sleep/wake round trip costs microseconds.
constexpr int spin_rounds = 100;
} // namespace

int OwnedLock::acquire_contended(ThreadRecord *me, Wait wait, uint64_t timeout_ns, const char *fn)
{
    if (wait == Wait::never) return fail(EBUSY, "%s: held by another thread", fn);
    if (timeout_ns == 0) return fail(ETIMEDOUT, "%s: held by another thread (timeout 0)", fn);
    for (int i = 0; i < spin_rounds; i++) {
        if (word.load(std::memory_order_relaxed) == FREE && try_take()) return become_owner(me);
        cpu_relax();
    }
    // Classic three-state futex mutex: announce a sleeper by storing 2, and take the lock
    // whenever the exchange shows it was free. A lock taken this way stays marked 2, which
    // costs at most one unneeded wake at release.
    Deadline deadline = Deadline::after(timeout_ns);
    while (word.exchange(HELD_WITH_SLEEPERS, std::memory_order_acquire) != FREE) {
        if (futex_wait(&word, HELD_WITH_SLEEPERS, deadline) == ETIMEDOUT)
            return fail(ETIMEDOUT, "%s: still held by another thread after %llu ns", fn,
                        (unsigned long long)timeout_ns);
    }
    return become_owner(me);
}

// Thread-exit handler: the owner ended while holding the lock.
void OwnedLock::owner_exited(HeldLink *link)
{
    auto *l = reinterpret_cast<OwnedLock *>(reinterpret_cast<char *>(link) -
                                            offsetof(OwnedLock, held));
    l->previous_owner_died = true;
    l->owner.store(0, std::memory_order_relaxed);
    l->release_word();
}

} // namespace surelock::sys
