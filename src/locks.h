// Internal view of the in-process lock kinds, shared by their own files, the condition
// variable and lock groups. The exclusive kinds are defined here so groups inline their fast
// paths; the rwlock keeps its state machine in rwlock.cc behind two functions.
#pragma once

#include <errno.h>
#include <limits.h>

#include "surelock.h"
#include "sys/errmsg.h"
#include "sys/owned_lock.h"
#include "sys/thread.h"

struct alignas(64) surelock_rlock {
    surelock::sys::OwnedLock lock;
    unsigned depth = 0; // holder's depth; touched only by the holder
    bool is_global = false;
    surelock::sys::Membership member{};

    // Takes or re-enters the lock. Returns 0, EOWNERDEAD, EAGAIN (depth overflow), or
    // EBUSY/ETIMEDOUT.
    int acquire(surelock::sys::ThreadRecord *me, surelock::sys::Wait wait, const char *fn)
    {
        if (lock.held_by(me)) {
            if (__builtin_expect(depth == UINT_MAX, 0))
                return surelock::sys::fail(EAGAIN, "%s: re-entry depth would overflow (already %u)",
                                           fn, depth);
            depth++;
            return 0;
        }
        int rc = lock.acquire(me, wait, fn);
        if (rc == 0 || rc == EOWNERDEAD) depth = 1;
        return rc;
    }

    // By the holder: one level down, released at depth 0.
    void release()
    {
        if (--depth == 0) lock.release();
    }

    // Gives back a hold just taken with EOWNERDEAD (depth 1), passing the notice on.
    void release_owner_dead()
    {
        depth = 0;
        lock.release_owner_dead();
    }
};

struct alignas(64) surelock_mutex {
    surelock::sys::OwnedLock lock;
    surelock::sys::Membership member{};
};

namespace surelock::locks {

// rwlock.cc: acquire in either mode without the already-held check (the caller made it),
// with the public functions' return codes; release the caller's hold (false: it has none).
// pass_owner_death: the hold was taken with EOWNERDEAD and is given back unused (a lock group
// backing out), so the next acquirer gets EOWNERDEAD instead.
int rwlock_acquire(surelock_rwlock *l, sys::ThreadRecord *me, bool exclusive, sys::Wait wait,
                   const char *fn);
bool rwlock_release(surelock_rwlock *l, sys::ThreadRecord *me, bool pass_owner_death = false);
bool rwlock_held_by(const surelock_rwlock *l, sys::ThreadRecord *me);
sys::Membership *membership(surelock_rwlock *l);

} // namespace surelock::locks
