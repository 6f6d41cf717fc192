#include "sys/owned_lock.h"

#include <stddef.h>

namespace surelock::sys {

// How long a waiter stays away from a held lock before it queues (futex.cc, back_off).
constexpr uint64_t contention_back_off_ns = 2000;

int OwnedLock::acquire_contended(ThreadRecord *me, Wait wait, const char *fn, bool by_lock_call)
{
    if (wait.is_try_once()) return fail(EBUSY, "%s: held by another thread", fn);
    if (wait.watches_first() && futex.watch_until_free(Wait::watch_budget_ns) && futex.try_lock())
        return become_owner(me, by_lock_call);
    if (wait.is_spent())
        return fail(ETIMEDOUT, "%s: held by another thread (timeout %llu ns, no time left)", fn,
                    (unsigned long long)wait.timeout_ns());
    Deadline deadline = wait.deadline(); // the clock is read before the walk, not after
    // Stay off the lock's cache line for a while first (futex.cc, back_off); a group member
    // watched it already. A waiter that finds the lock free by then never sleeps, so it never
    // enters the wait graph: with several threads contending, most contended acquires end
    // here, and the graph lock (one spinlock for the process) would otherwise serialise every
    // one of them.
    if (!wait.watches_first()) back_off(contention_back_off_ns, deadline);
    if (futex.take_or_mark_slept_on()) return become_owner(me, by_lock_call);
    // ---- Deadlock detection (waits.h): refuse a wait that would close a cycle.
    if (int rc = begin_wait(me, kind(), this, fn)) return rc;
    bool taken = futex.lock_until(deadline);
    end_wait(me); // deadlock detection: no longer waiting (before becoming the owner)
    // ----
    if (!taken)
        return fail(ETIMEDOUT, "%s: still held by another thread after %llu ns", fn,
                    (unsigned long long)wait.timeout_ns());
    return become_owner(me, by_lock_call);
}

// Thread-exit handler: the owner ended while holding the lock.
void OwnedLock::owner_exited(HeldLink *link)
{
    OwnedLock *l = SURELOCK_CONTAINER_OF(link, OwnedLock, held);
    l->previous_owner_died = true;
    l->owner.store(0, std::memory_order_relaxed);
    l->futex.unlock();
}

uint64_t OwnedLock::holder(const void *lock, CopyFn copy)
{
    if (copy == nullptr)
        return static_cast<const OwnedLock *>(lock)->owner.load(std::memory_order_relaxed);
    uint64_t owner = 0;
    return SURELOCK_READ_FIELD(copy, &owner, OwnedLock, lock, owner) ? owner : 0;
}

} // namespace surelock::sys
