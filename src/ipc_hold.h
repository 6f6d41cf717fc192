// The ipc handle, and the bookkeeping of which thread holds the lock through which handle
// (ipc_hold.cc): the inline part the fast path needs, and the rest, which it never calls.
#pragma once

#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc_format.h"
#include "surelock.h"
#include "sys/thread.h"

struct surelock_ipc {
    int fd;
    surelock::ipc_format::FileHeader *header; // start of the mapping
    size_t map_size;
    // Which thread holds the lock through this handle (0 = none) and how deep (depth means
    // nothing while holder is 0); only the holder writes them. A holder's exit is seen through
    // its held list.
    std::atomic<uint64_t> holder{0};
    unsigned depth = 0;
    // The kernel TID of the thread that locks through this handle, and whether glibc's robust
    // list of that thread points into this handle's mapping: true from the acquisition that
    // took the pthread mutex through this handle until the thread's last release of it
    // (through any handle of the file: a recursive file re-entered through a second handle
    // keeps the first one's list entry). While anchored, the handle stays in the thread's
    // held list even at depth 0, and close() is EBUSY. tid means nothing (and is left as it
    // was, to save the fast path a store) while the handle is neither held, anchored nor linked.
    std::atomic<int> tid{0};
    std::atomic<bool> anchor{false};
    surelock::sys::HeldLink held{};
    bool linked = false; // `held` is in the list of thread `tid` (which is alive)
    bool recursive;      // the file's SURELOCK_IPC_RECURSIVE, fixed at creation (kept here:
                         // the fast path then reads no header line but the mutex's and state's)
    // For lock groups (API.md section 3): the order key and the identity of the file.
    uint8_t lock_id[16];
    dev_t dev;
    ino_t ino;
    surelock::sys::Membership member{};
};

namespace surelock::ipc_hold {

using sys::ThreadRecord;

// Whether the calling thread holds the lock through this handle. A fork child's copy of the
// holding thread keeps its serial, but the child's holds were dropped at fork (robust futexes
// go by TID: it does not own its parent's lock).
inline bool handle_held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = sys::current_record;
    return me != nullptr && m->holder.load(std::memory_order_relaxed) == me->serial;
}

// The caller's hold through `m` from its acquisition of the mutex, when it did not hold it
// before (not a re-entry): linked into its held list, anchored (its robust list now points into
// this handle's mapping).
[[gnu::always_inline]] inline void begin_hold(surelock_ipc *m, ThreadRecord *me)
{
    me->link_held(&m->held);
    m->linked = true;
    m->tid.store(me->tid, std::memory_order_relaxed);
    m->holder.store(me->serial, std::memory_order_relaxed);
    m->depth = 1;
    m->anchor.store(true, std::memory_order_relaxed);
}

// Drops a hold's bookkeeping once the thread holds nothing through the handle and its robust
// list no longer points into it.
[[gnu::always_inline]] inline void forget_hold(surelock_ipc *m)
{
    if (__builtin_expect(m->linked, 1)) m->held.unlink();
    m->linked = false;
    m->holder.store(0, std::memory_order_relaxed);
    m->anchor.store(false, std::memory_order_relaxed);
}

// The rest: in ipc_hold.cc.

// The lock-kind table's owner_exited: the holder thread is exiting while holding.
void owner_exited(sys::HeldLink *link);

// Whether a thread of this process holds the lock through the handle (close() is then EBUSY).
bool held_through(const surelock_ipc *m);

// Arranges, once per process, that a fork child drops its copies of its parent's holds.
void drop_holds_at_fork();

// The handle of the same file whose mapping the calling thread's robust list points into
// (anchored, held at depth 0 through it), or nullptr.
surelock_ipc *anchor_of(ThreadRecord *me, const surelock_ipc *m);

// Counts a holder's death once the mutex came back EOWNERDEAD (taken by the caller).
void note_owner_death(ipc_format::FileHeader *h) __attribute__((cold));

// The rest of an acquisition of the mutex (taken by `me`, rc 0 or EOWNERDEAD) off the fast
// path: returns 0, EOWNERDEAD, or ENOTRECOVERABLE (released again, errmsg set).
int finish_acquire(surelock_ipc *m, ThreadRecord *me, bool thread_reentry, bool owner_died,
                   const char *fn) __attribute__((cold));

} // namespace surelock::ipc_hold
