// The in-process lock kinds built on OwnedLock (the reentrant lock and the mutex), shared by
// their own files and the condition variable, and their lock-kind table entries
// (sys/lock_kind.h), through which lock groups reach them as they reach every kind.
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

    // A lock group's transaction (sys/lock_kind.h): the steps around the word's own step.
    int took_word(surelock::sys::ThreadRecord *me)
    {
        depth = 1;
        return lock.become_owner(me);
    }
    bool releasing_word()
    {
        if (--depth != 0) return false;
        lock.release_before_store();
        return true;
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

    // Takes the lock, which the caller does not hold (the public calls check: EDEADLK).
    int acquire(surelock::sys::ThreadRecord *me, surelock::sys::Wait wait, const char *fn)
    {
        return lock.acquire(me, wait, fn);
    }
    void release() { lock.release(); }
    void release_owner_dead() { lock.release_owner_dead(); }
    int took_word(surelock::sys::ThreadRecord *me) { return lock.become_owner(me); }
    bool releasing_word()
    {
        lock.release_before_store();
        return true;
    }
};

namespace surelock::locks {

// The lock-kind table's holding entries (sys/lock_kind.h) of the kinds built on OwnedLock:
// T is surelock_rlock or surelock_mutex.
template <class T> struct OwnedLockKind {
    static bool held_by(const void *lock, const sys::ThreadRecord *me)
    {
        return static_cast<const T *>(lock)->lock.held_by(me);
    }
    static int acquire(void *lock, sys::ThreadRecord *me, sys::Wait wait, const char *fn)
    {
        return static_cast<T *>(lock)->acquire(me, wait, fn);
    }
    static void release(void *lock, sys::ThreadRecord *, bool pass_owner_death)
    {
        if (pass_owner_death) static_cast<T *>(lock)->release_owner_dead();
        else static_cast<T *>(lock)->release();
    }
    static sys::Membership *membership(void *lock) { return &static_cast<T *>(lock)->member; }
    static sys::FutexLock *word(void *lock) { return &static_cast<T *>(lock)->lock.futex; }
    static int took_word(void *lock, sys::ThreadRecord *me)
    {
        return static_cast<T *>(lock)->took_word(me);
    }
    static bool releasing_word(void *lock) { return static_cast<T *>(lock)->releasing_word(); }
};

} // namespace surelock::locks
