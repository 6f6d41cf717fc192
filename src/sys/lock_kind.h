// The lock-kind table: what every kind of lock tells the code that handles locks of any kind
// (lock groups in group.cc, the deadlock detector in waits.cc, the wait dump in
// waits_dump.cc). In parking_lot_core's spirit, one mechanism sits under every lock: the
// holder is a thread record (thread.h) with a held list, waiting is a Wait (futex.h), and each
// kind fills in one LockKind next to its own code (rlock.cc, mutex.cc, rwlock.cc, group.cc,
// ipc.cc). A new kind plugs in by defining its LockKind and adding it to all_kinds in
// waits_dump.cc (which tells held links apart by kind).
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/thread.h"

namespace surelock::sys {

struct FutexLock;

// Reads n bytes at src into dst; false when it cannot (the memory may be gone). The
// deadlock walk passes nullptr and reads directly (everything it reads is alive, waits.h);
// the dump, which runs without the graph lock, passes a copier that cannot fault.
using CopyFn = bool (*)(void *dst, const void *src, size_t n);

// Reads through copy, or directly when copy is nullptr (for fields fixed at creation).
inline bool read_via(CopyFn copy, void *dst, const void *src, size_t n)
{
    if (copy == nullptr) {
        memcpy(dst, src, n);
        return true;
    }
    return copy(dst, src, n);
}

// The address `offset` bytes into the object at `object`, by integer arithmetic. The dump
// passes addresses it read from other threads' memory, which may be stale (a hold table
// freed and reused meanwhile) and so any value, misaligned or near 0: a member access or
// pointer arithmetic on those is undefined behaviour (UBSan aborts), while copy() merely
// reads garbage or fails. So every address the kinds hand to copy is formed here.
inline const void *field_address(const void *object, ptrdiff_t offset)
{
    return reinterpret_cast<const void *>(reinterpret_cast<uintptr_t>(object) + (uintptr_t)offset);
}

// Reads member `member` of the T at `object` (see field_address) into *dst.
#define SURELOCK_READ_FIELD(copy, dst, T, object, member)                                      \
    ::surelock::sys::read_via((copy), (dst),                                                   \
                              ::surelock::sys::field_address((object), offsetof(T, member)),   \
                              sizeof *(dst))

// A group's transactional release, member by member (LockKind::releasing_word).
enum class WordRelease { word_goes, word_stays, not_held };

struct LockKind {
    const char *name; // "rlock", "mutex", "rwlock", "group", "ipc lock"

    // ---- Holding: what lock groups do with a member of any kind (nullptr for the group) ----
    // Whether thread `me` holds the lock, in any mode. Only `me` itself asks.
    bool (*held_by)(const void *lock, const ThreadRecord *me);
    // Takes the lock for `me` (the caller). Returns 0, EOWNERDEAD (taken; the previous owner
    // died holding it), EBUSY (a try found it taken), ETIMEDOUT, EDEADLK (a wait that would
    // close a cycle), or the kind's own errors, with errmsg set (fn: the public function).
    int (*acquire)(void *lock, ThreadRecord *me, Wait wait, const char *fn);
    // By the holder `me`: gives one hold back. pass_owner_death: the hold was taken with
    // EOWNERDEAD and is given back unused (a group backing out), so the next acquirer is told.
    // Returns false, giving nothing back, when `me` does not hold it (a group's member that
    // its own unlock call released meanwhile: releasing it again would release another
    // thread's hold).
    bool (*release)(void *lock, ThreadRecord *me, bool pass_owner_death);
    // The lock's object serial (the group order of in-process locks) and group count.
    Membership *(*membership)(void *lock);
    // Whether a group whose caller already holds this lock takes it once more (rlock) rather
    // than failing with EDEADLK (every other kind).
    bool group_reenters;

    // ---- A group's hardware transaction (group.cc, transaction.h); nullptr for a kind whose
    // members always take the per-member path (rwlock: a different word; ipc: glibc's robust
    // mutex, whose robust list must see every acquisition) ----
    // The lock's word, fixed for the lock's life, when taking the lock for a caller that does
    // not hold it is exactly "word FREE -> HELD" followed by took_word.
    FutexLock *(*word)(void *lock);
    // After a committed transaction stored HELD into the free word: what acquire does after
    // its compare-and-swap (owner, held link). Returns 0, or EOWNERDEAD when the previous owner
    // died holding the lock.
    int (*took_word)(void *lock, ThreadRecord *me);
    // By the holder `me`, giving one hold back: what release does before its releasing store
    // (held link unlinked, owner cleared, in that order). Returns word_goes, or word_stays
    // when the lock stays held (an rlock entered more than once), or not_held when `me` does
    // not hold it (as release's false), changing nothing: in both the word must not be
    // released.
    WordRelease (*releasing_word)(void *lock, ThreadRecord *me);

    // ---- Owner death, the deadlock detector and the dump ----
    // Called for a link of this kind still in an exiting thread's held list; also tells this
    // kind's links apart in a held list (nullptr: a kind without links).
    void (*owner_exited)(HeldLink *link);
    // Where that link sits in the lock object.
    size_t held_link_offset;
    const char *hold_mode; // how a link of this kind holds the lock: "" or " (write)"
    // The serial of the thread holding `lock` exclusively, 0 if none. nullptr: not a lock
    // the graph follows (group, ipc).
    uint64_t (*exclusive_holder)(const void *lock, CopyFn copy);
    // Besides the exclusive holder, whether registered thread r is one the waiter waits for:
    // for a write wait on an rwlock, r reads it; for a read wait, r waits to write it (writer
    // preference); nullptr when the kind has no such threads. Called only under the graph
    // lock.
    bool (*held_shared_by)(const void *lock, const ThreadRecord *r);
    // "rlock 'libA'" or "mutex #12" into out (always terminated); returns the length.
    size_t (*describe)(const void *lock, char *out, size_t cap, CopyFn copy);
};

extern const LockKind rlock_kind, mutex_kind, rwlock_kind, rwlock_read_kind, group_kind,
    ipc_kind;

// The object of type T whose member `member` is at `ptr` (the kernel's container_of): from a
// held link back to the lock it belongs to.
#define SURELOCK_CONTAINER_OF(ptr, T, member)                                                  \
    reinterpret_cast<T *>(reinterpret_cast<char *>(ptr) - offsetof(T, member))

// The start every public acquire shares: a NULL handle is EINVAL ("<fn>: the <what> is NULL"),
// and the calling thread needs its record (ENOMEM, errmsg set, when it cannot have one).
// Returns 0 with *me set, or that error.
[[gnu::always_inline]] inline int begin_acquire(const void *handle, const char *what,
                                                const char *fn, ThreadRecord **me)
{
    if (__builtin_expect(handle == nullptr, 0)) {
        fail(EINVAL, "%s: the %s is NULL", fn, what);
        return EINVAL; // spelled out: the compiler then knows *me is set whenever 0 is returned
    }
    *me = current_thread();
    return __builtin_expect(*me != nullptr, 1) ? 0 : ENOMEM;
}

// begin_acquire's fast half, for kinds whose acquire is small enough to have twice: the
// record of a thread that already has one, when the handle is not NULL; nullptr otherwise,
// and the caller then runs an out-of-line copy of itself that starts with begin_acquire. The
// fast path then makes no call it could return from, so it needs no stack frame.
[[gnu::always_inline]] inline ThreadRecord *begin_acquire_fast(const void *handle)
{
    return __builtin_expect(handle != nullptr, 1) ? current_record : nullptr;
}

} // namespace surelock::sys
