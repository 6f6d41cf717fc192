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
    // The holder's depth; touched only by the holder, and 1 whenever the lock is free (the
    // last release leaves it there, the owner-exited handler puts it back): a first acquire
    // has nothing to write and the last release nothing to reset, so the uncontended pair
    // costs what the mutex's does.
    unsigned depth = 1;
    bool is_global = false;
    surelock::sys::Membership member{};

    // Takes or re-enters the lock. Returns 0, EOWNERDEAD, EAGAIN (depth overflow), or
    // EBUSY/ETIMEDOUT. by_lock_call: see OwnedLock::become_owner.
    int acquire(surelock::sys::ThreadRecord *me, surelock::sys::Wait wait, const char *fn,
                bool by_lock_call = false)
    {
        if (lock.held_by(me)) {
            if (!by_lock_call) lock.keep_listed(me); // a group's hold: released from the list
            return reenter(fn);
        }
        return lock.acquire(me, wait, fn, by_lock_call); // depth is 1 already
    }

    // By the holder: one level deeper. Returns 0 or EAGAIN (overflow). A dozen instructions
    // on the re-entry path, where each compare shows: the check is the increment's carry.
    int reenter(const char *fn)
    {
        unsigned deeper;
        if (__builtin_expect(__builtin_add_overflow(depth, 1u, &deeper), 0))
            return surelock::sys::fail(EAGAIN, "%s: re-entry depth would overflow (already %u)",
                                       fn, UINT_MAX);
        depth = deeper;
        return 0;
    }

    // A lock group's transaction (sys/lock_kind.h): the steps around the word's own step.
    // The word was FREE, so the depth is 1 already; the group's hold goes in the held list.
    int took_word(surelock::sys::ThreadRecord *me) { return lock.become_owner(me); }
    bool releasing_word()
    {
        if (!leave_one_level()) return false;
        lock.release_before_store();
        return true;
    }

    // By the holder `me`: one level down, released at the last one (through the unlock call;
    // release_listed for a group's hold, see OwnedLock).
    void release(surelock::sys::ThreadRecord *me)
    {
        if (leave_one_level()) lock.release(me);
    }
    void release_listed()
    {
        if (leave_one_level()) lock.release_listed();
    }

    // By the holder: one level down; true at the last one (the depth stays 1), which the
    // caller then releases. Laid out as the straight path, like reenter: a last release waits
    // for its locked instruction anyway.
    bool leave_one_level()
    {
        if (unsigned rest = depth - 1; __builtin_expect(rest != 0, 1)) {
            depth = rest;
            return false;
        }
        return true;
    }

    // Gives back a group's hold just taken with EOWNERDEAD (depth 1), passing the notice on.
    void release_owner_dead() { lock.release_owner_dead(); }
};

struct alignas(64) surelock_mutex {
    surelock::sys::OwnedLock lock;
    surelock::sys::Membership member{};

    // Takes the lock, which the caller does not hold (the public calls check: EDEADLK).
    // by_lock_call: see OwnedLock::become_owner.
    int acquire(surelock::sys::ThreadRecord *me, surelock::sys::Wait wait, const char *fn,
                bool by_lock_call = false)
    {
        return lock.acquire(me, wait, fn, by_lock_call);
    }
    void release(surelock::sys::ThreadRecord *me) { lock.release(me); }
    void release_listed() { lock.release_listed(); }
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
    // Only groups release through the table, and a group's holds are in the held list.
    static bool release(void *lock, sys::ThreadRecord *me, bool pass_owner_death)
    {
        T *t = static_cast<T *>(lock);
        if (!t->lock.held_by(me)) return false;
        if (pass_owner_death) t->release_owner_dead();
        else t->release_listed();
        return true;
    }
    static sys::Membership *membership(void *lock) { return &static_cast<T *>(lock)->member; }
    static sys::FutexLock *word(void *lock) { return &static_cast<T *>(lock)->lock.futex; }
    static int took_word(void *lock, sys::ThreadRecord *me)
    {
        return static_cast<T *>(lock)->took_word(me);
    }
    static sys::WordRelease releasing_word(void *lock, sys::ThreadRecord *me)
    {
        T *t = static_cast<T *>(lock);
        if (!t->lock.held_by(me)) return sys::WordRelease::not_held;
        return t->releasing_word() ? sys::WordRelease::word_goes : sys::WordRelease::word_stays;
    }
};

} // namespace surelock::locks
