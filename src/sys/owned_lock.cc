#include "sys/owned_lock.h"

#include <stddef.h>

namespace surelock::sys {

int OwnedLock::acquire_contended(ThreadRecord *me, Wait wait, uint64_t timeout_ns, const char *fn)
{
    if (wait == Wait::never) return fail(EBUSY, "%s: held by another thread", fn);
    if (timeout_ns == 0) return fail(ETIMEDOUT, "%s: held by another thread (timeout 0)", fn);
    Deadline deadline = Deadline::after(timeout_ns);
    // ---- Deadlock detection (waits.h): refuse a wait that would close a cycle.
    if (int rc = begin_wait(me, kind(), this, fn)) return rc;
    bool taken = word.lock_until(deadline);
    end_wait(me); // deadlock detection: no longer waiting (before becoming the owner)
    // ----
    if (!taken)
        return fail(ETIMEDOUT, "%s: still held by another thread after %llu ns", fn,
                    (unsigned long long)timeout_ns);
    return become_owner(me);
}

// Thread-exit handler: the owner ended while holding the lock.
void OwnedLock::owner_exited(HeldLink *link)
{
    auto *l = reinterpret_cast<OwnedLock *>(reinterpret_cast<char *>(link) -
                                            offsetof(OwnedLock, held));
    l->previous_owner_died = true;
    l->owner.store(0, std::memory_order_relaxed);
    l->word.unlock();
}

void OwnedLock::reentrant_owner_exited(HeldLink *link)
{
    owner_exited(link);
}

const void *OwnedLock::lock_of_link(const HeldLink *link, CopyFn)
{
    return field_address(link, -(ptrdiff_t)offsetof(OwnedLock, held));
}

uint64_t OwnedLock::holder(const void *lock, CopyFn copy)
{
    if (copy == nullptr)
        return static_cast<const OwnedLock *>(lock)->owner.load(std::memory_order_relaxed);
    uint64_t owner = 0;
    return SURELOCK_READ_FIELD(copy, &owner, OwnedLock, lock, owner) ? owner : 0;
}

} // namespace surelock::sys
