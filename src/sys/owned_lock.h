// The exclusive, thread-owned lock shared by the reentrant lock and the mutex: a FutexLock
// word plus the owner, the holder's never-reused thread serial. While held, the lock is in
// its owner's held slot or list (thread.h), so the owner's thread-exit destructor releases it
// and flags "owner died" for the next acquirer.
#pragma once

#include <atomic>
#include <errno.h>
#include <stdint.h>

#include "sys/errmsg.h"
#include "sys/futex_lock.h"
#include "sys/thread.h"
#include "sys/waits.h"

namespace surelock::sys {

struct OwnedLock {
    // Kinds embed this at the start of a 64-byte aligned object, so the lock word and the
    // holder-only fields after it share one cache line.
    FutexLock futex; // the lock itself (free, held, held with sleepers); no owner of its own
    std::atomic<uint64_t> owner{0}; // holder's thread serial; 0 when free
    // Written by an exiting owner before its releasing store, read and cleared by the next
    // acquirer after its acquiring one, so the word's ordering covers it.
    bool previous_owner_died = false;
    HeldLink held{nullptr, nullptr, owner_exited};

    // Only the holder ever stores its own serial here, so a thread that reads its own serial
    // holds the lock (relaxed is enough: a thread always sees its own latest store).
    bool held_by(const ThreadRecord *me) const
    {
        return owner.load(std::memory_order_relaxed) == me->serial;
    }

    // The same for the calling thread, without its record (thread.h's current_serial).
    bool held_by_caller() const
    {
        return owner.load(std::memory_order_relaxed) == current_serial;
    }

    bool is_free() const { return futex.is_free(); }

private:
    // The owner goes before the word, in every release (see release below).
    void clear_owner()
    {
        SURELOCK_STEP(&owner);
        owner.store(0, std::memory_order_relaxed);
    }
    // release's first half: the owner cleared, then the releasing exchange (futex_lock.h);
    // true when a sleeper must then be woken.
    bool release_word_clearing_owner()
    {
        clear_owner();
        return futex.release_word();
    }

    // release's second half for a listed hold: joins the neighbours read before the release.
    static void unlink_between(HeldLink *prev, HeldLink *next)
    {
        SURELOCK_STEP(prev); // the lock may be freed by now; its list neighbours may not be
        prev->next = next;
        next->prev = prev;
    }

public:

    // The caller has just taken the word: record it as owner. Returns 0, or EOWNERDEAD when
    // the previous owner thread exited holding the lock. by_lock_call: taken by the kind's own
    // lock call, which may record the hold in the held slot (thread.h); a group's member goes
    // into the held list, as the group's own link does.
    int become_owner(ThreadRecord *me, bool by_lock_call = false)
    {
        SURELOCK_STEP(&owner);
        owner.store(me->serial, std::memory_order_relaxed);
        if (by_lock_call) me->hold_in_slot_if_alone(&held);
        else me->link_held(&held);
        if (__builtin_expect(previous_owner_died, 0)) {
            previous_owner_died = false;
            return EOWNERDEAD;
        }
        return 0;
    }

    // Uncontended attempt inline, the rest out of line. Returns 0, EOWNERDEAD, or
    // EBUSY/ETIMEDOUT with errmsg set (fn names the public function).
    int acquire(ThreadRecord *me, Wait wait, const char *fn, bool by_lock_call = false)
    {
        if (__builtin_expect(futex.try_lock(), 1)) return become_owner(me, by_lock_call);
        return acquire_contended(me, wait, fn, by_lock_call);
    }

    // By the holder `me`, through the kind's own unlock call: let the next one in, then
    // forget the hold, in the held slot or list (become_owner). The owner is cleared before
    // the releasing store: the deadlock detector (waits.h) must never see a released lock
    // still naming its old owner (tests/model/ shows that reversing the two makes it miss
    // cycles). Nothing of *this is touched after the releasing store (the futex wake only
    // hands the address to the kernel), so another thread may free the lock as soon as it can
    // take it: a listed link's neighbours are read before it, and the slot or the neighbours
    // written after it. Those are this thread's own record or links of locks it still holds,
    // which no other thread writes and nothing can free; no other thread's correctness
    // depends on them (the detector follows owner words, never held lists; the wait dump
    // reads them as a snapshot that may be stale). Written after the exchange, they no longer
    // wait in the store buffer for the locked instruction to drain it.
    void release(ThreadRecord *me)
    {
        bool in_slot = me->held_slot == &held;
        HeldLink *prev = in_slot ? nullptr : held.prev, *next = in_slot ? nullptr : held.next;
        bool wake = release_word_clearing_owner();
        if (in_slot) {
            SURELOCK_STEP(&me->held_slot); // the explorer: the lock may be freed by now
            me->held_slot = nullptr;
        } else {
            unlink_between(prev, next);
        }
        if (wake) futex.wake_one(); // one call site: no stack frame on the paths without it
    }

    // The same for a hold in the held list: every hold a group takes (become_owner).
    void release_listed()
    {
        HeldLink *prev = held.prev, *next = held.next;
        bool wake = release_word_clearing_owner();
        unlink_between(prev, next);
        if (wake) futex.wake_one();
    }

    // release_listed() up to its releasing store, for a lock group that then releases the
    // words of several locks in one hardware transaction (sys/transaction.h), or, when that
    // fails, with futex.unlock() each: the owner is still cleared before the word.
    void release_before_store()
    {
        held.unlink();
        clear_owner();
    }

    // Releases a lock a group took with EOWNERDEAD and is giving back unused (backing out):
    // the next acquirer is told instead, so the notice is never lost.
    void release_owner_dead()
    {
        previous_owner_died = true;
        release_listed();
    }

    // A group re-entering an rlock the caller took by its own call: the hold moves from the
    // held slot (if there) to the list, where the group's release expects it.
    void keep_listed(ThreadRecord *me)
    {
        if (me->held_slot == &held) me->move_slot_to_list();
    }

    // Thread-exit handlers; the reentrant lock installs the second one when it is made, so
    // a held link tells an rlock from a mutex (the lock-kind table, lock_kind.h).
    static void owner_exited(HeldLink *link);
    static void reentrant_owner_exited(HeldLink *link);
    // For the kind table (lock_kind.h): the holder's serial.
    static uint64_t holder(const void *lock, CopyFn copy);

private:
    int acquire_contended(ThreadRecord *me, Wait wait, const char *fn, bool by_lock_call);
    const LockKind &kind() const
    {
        return held.owner_exited == reentrant_owner_exited ? rlock_kind : mutex_kind;
    }
};

} // namespace surelock::sys
