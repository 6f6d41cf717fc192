#include "sys/owned_lock.h"

#include <stddef.h>

namespace surelock::sys {

int OwnedLock::acquire_contended(ThreadRecord *me, Wait wait, uint64_t timeout_ns, const char *fn)
{
    if (wait == Wait::never) return fail(EBUSY, "%s: held by another thread", fn);
    if (timeout_ns == 0) return fail(ETIMEDOUT, "%s: held by another thread (timeout 0)", fn);
    if (!word.lock_until(Deadline::after(timeout_ns)))
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

} // namespace surelock::sys
