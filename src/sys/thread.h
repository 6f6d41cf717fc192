// Thread identity and per-thread records.
//
// Every thread that takes an in-process lock gets a record holding a 64-bit serial that is
// never reused in this process (TIDs and TLS addresses are recycled, so a lock owned by a dead
// thread could look owned by a new one), and the list of locks it holds. The record is freed
// by a pthread key destructor at thread exit, which first hands every lock still held to its
// kind's owner-exited handler: that is how "owner thread died while holding" is detected.
// Records are recycled, never returned to malloc (thread.cc), so the deadlock detector and the
// wait dump (waits.cc) may read any record at any time without touching freed memory.
#pragma once

#include <atomic>
#include <stdint.h>

#include "sys/hold_set.h"

namespace surelock::sys {

struct LockKind;

// An intrusive link a lock (or a hold on a lock) puts into its owner's held list while held.
// The list is circular with a sentinel, so linking and unlinking are branch-free and O(1).
struct HeldLink {
    HeldLink *prev;
    HeldLink *next;
    // Called on the exiting thread for every link still in its list, after unlinking it.
    void (*owner_exited)(HeldLink *link);

    void unlink()
    {
        prev->next = next;
        next->prev = prev;
    }
};

struct ThreadRecord {
    uint64_t serial; // never 0, never reused
    int tid;         // the kernel's thread id (robust futexes go by it); renewed after fork()
    HeldLink held;   // sentinel of the list of what this thread holds
    // A hold kept outside that list, or nullptr: a mutex or rlock (OwnedLock) taken by its own
    // lock call while the thread holds nothing else goes here, one store to take and one to
    // give back instead of the list's four and two (the uncontended pair's bookkeeping);
    // every other hold goes into the list. So the slot's hold is older than any in the list:
    // newest first, the thread's holds are the list's, then the slot's.
    HeldLink *held_slot;
    // The rwlocks it holds for reading (a reader has no link of its own in a lock that many
    // threads hold at once); drained at thread exit after the held list.
    HoldSet read_holds;

    // ---- Deadlock detection (waits.cc) ----
    // The lock this thread waits for and its kind, while registered; written under the graph
    // lock, read under it by walkers and without it by the dump.
    std::atomic<const void *> wait_lock;
    std::atomic<const LockKind *> wait_kind;
    // Under the graph lock: registered waiters are chained in a hash table by serial and in
    // one list of them all, and a walk marks the records it visited (epoch), where it came
    // from and its queue.
    bool registered;
    ThreadRecord *wait_hash_next;
    ThreadRecord *waiting_next, *waiting_prev;
    uint64_t walk_epoch;
    ThreadRecord *walk_parent;
    ThreadRecord *walk_queue_next;
    // Every record ever made, newest first (never unlinked), and the recycling list.
    ThreadRecord *all_next;
    ThreadRecord *free_next;
    // Non-zero while a thread owns this record (its serial is then valid); read by the dump.
    std::atomic<bool> in_use;

    // Whether this thread holds no lock of any kind: every hold is in the held slot, the held
    // list or the read-hold set (thread exit releases them from there), so all three empty
    // means none.
    bool holds_nothing() const
    {
        return held_slot == nullptr && held.next == &held && read_holds.count == 0;
    }

    // Records a new hold: in the slot when the thread holds nothing else, else in the list.
    void hold_in_slot_if_alone(HeldLink *link)
    {
        if (__builtin_expect(held_slot == nullptr && held.next == &held, 1)) held_slot = link;
        else link_held(link);
    }

    // Moves the slot's hold to the tail of the list (the oldest end, where it belongs).
    void move_slot_to_list()
    {
        HeldLink *link = held_slot, *last = held.prev;
        held_slot = nullptr;
        link->prev = last;
        link->next = &held;
        last->next = link;
        held.prev = link;
    }

    // Records a new hold at the head of the list. In this order the compiler keeps the link's
    // two stores apart (paired, they became four vector instructions).
    void link_held(HeldLink *link)
    {
        HeldLink *first = held.next;
        link->next = first;
        first->prev = link;
        link->prev = &held;
        held.next = link;
    }
};

// The calling thread's record, or nullptr before its first lock. initial-exec: one load from
// the thread pointer on the fast path (no __tls_get_addr call); glibc reserves static TLS for
// this in dlopen'ed libraries, and 8 bytes is well within it.
extern __thread ThreadRecord *current_record __attribute__((tls_model("initial-exec")));

// The calling thread's serial while it has a record, else no_serial (the initial value, and
// again from its exit): never 0 (a free lock's owner) nor any thread's serial. So "does the
// caller hold this lock" is one compare of the owner word with one load from the thread
// pointer, with no record and no NULL check (the re-entry and unlock fast paths).
constexpr uint64_t no_serial = UINT64_MAX;
extern __thread uint64_t current_serial __attribute__((tls_model("initial-exec")));

// current_record, read where this is called: the compiler may not move a volatile read
// ahead of the branch it is in (it hoisted the plain one onto the rlock's re-entry path).
inline ThreadRecord *current_record_now()
{
    return *static_cast<ThreadRecord *volatile *>(&current_record);
}

// Creates the calling thread's record on first use. Returns nullptr with errmsg set when it
// cannot (out of memory, or no pthread key left); the caller then returns ENOMEM.
ThreadRecord *create_current_record();

inline ThreadRecord *current_thread()
{
    ThreadRecord *r = current_record;
    if (__builtin_expect(r != nullptr, 1)) return r;
    return create_current_record();
}

// What lock groups need of every in-process lock kind: a never-reused object serial (the
// global acquisition order) and how many groups list it (freeing a member is EBUSY).
struct Membership {
    uint64_t serial;
    std::atomic<uint32_t> groups;
};

// A fresh object serial: never 0, never reused in this process.
uint64_t next_object_serial();

// Every thread record ever made, newest first; records are never freed (a record whose
// in_use is false belongs to no thread). For the wait dump, which must not lock.
ThreadRecord *all_thread_records();

} // namespace surelock::sys
