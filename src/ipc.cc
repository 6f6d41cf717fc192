// Robust cross-process mutex (API.md section 4): locking.
//
// A robust, process-shared pthread mutex initialised in place in a MAP_SHARED file mapping,
// behind a versioned header (layout in surelock.h). This file holds what a process does with
// an open lock: acquiring and releasing (the fast path), what lock groups ask of a member, and
// the C entry points. The rest is elsewhere, each part in its own file for its own reason: the
// handle and the bookkeeping of holds off the fast path (ipc_hold.cc), the format and its
// validation (ipc_file.cc, shared with `surelock status` and the fuzzer), the opening protocol
// between processes (ipc_open.cc), and the checks of glibc's robust mutex from outside it
// (ipc_robust.cc).
//  - Recovery state lives in the file, not in the pthread mutex: on EOWNERDEAD the mutex is
//    made consistent at once and the file records "needs recovery". That lets a lock group back
//    out of a member it took with EOWNERDEAD and leave it needing recovery for the next
//    acquirer, and it makes "unlocked without consistent" a file state (not recoverable)
//    that every process sees.
//  - The handle remembers which thread holds the lock through it (a thread serial, the kernel
//    TID in the file, and the per-thread held list), so a holder thread's exit and a fork
//    child's inherited copy are told apart; the kernel's robust list releases the mutex as
//    owner-dead. close() refuses while a thread of this process holds the mutex through the
//    handle, whose mapping its robust-list entry points into. At fork() the child drops its
//    copies of the forking thread's holds (robust ownership is not inherited).

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

#include "ipc.h"
#include "ipc_format.h"
#include "ipc_hold.h"
#include "ipc_open.h"
#include "ipc_robust.h" // pthread_depth, clocklock
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h" // also SURELOCK_MUNMAP, SURELOCK_CLOSE (sys/interleave.h)
#include "sys/owned_lock.h" // sys::Wait
#include "sys/thread.h"
#include "sys/waits.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;
using namespace surelock::ipc_format;
using namespace surelock::ipc_robust;
using namespace surelock::ipc_hold;
using surelock::ipc_open::NoCancel;

namespace {

// Takes the lock for the calling thread `me`: the lock-kind table's acquire, and inline in the
// public calls' (below). The fast path is the thread's first hold of a consistent lock through
// a handle no thread holds or anchors (not linked); everything else, rare, is finish_acquire's
// (ipc_hold.cc), so the fast path keeps only what it needs in registers.
[[gnu::always_inline]] inline int ipc_acquire(surelock_ipc *m, ThreadRecord *me, Wait wait,
                                              const char *fn)
{
    FileHeader *h = m->header;
    int rc;
    bool no_sleep = !wait.is_forever() && (wait.is_try_once() || wait.is_spent());
    if (wait.is_forever()) { // no clock read for a wait without end
        rc = pthread_mutex_lock(&h->mutex);
    } else if (no_sleep) {
        rc = pthread_mutex_trylock(&h->mutex);
        if (rc == EBUSY && !wait.is_try_once()) rc = ETIMEDOUT;
    } else {
        Deadline d = wait.deadline();
        rc = d.never_ends ? pthread_mutex_lock(&h->mutex) : clocklock(&h->mutex, &d.at);
    }
    bool owner_died = false;
    if (__builtin_expect(rc != 0, 0)) {
        if (rc != EOWNERDEAD) return lock_failure(rc, no_sleep, wait.timeout_ns(), fn);
        note_owner_death(h);
        owner_died = true;
    }
    // A recursive mutex this thread already held (through this or another handle of the file)
    // was only re-entered: recovery was reported to the outer acquisition.
    bool thread_reentry = m->recursive && pthread_depth(h) > 1;
#ifdef SURELOCK_TESTING
    if (!thread_reentry) surelock_testing_ipc_acquired_point();
#endif
    if (__builtin_expect(!thread_reentry && !owner_died && !m->linked, 1) &&
        h->recovery_state.load(std::memory_order_relaxed) == CONSISTENT) {
        begin_hold(m, me);
        // Fields under the mutex: its acquire/release orders them, so no fenced stores (x86
        // would turn a sequentially consistent store into a locked exchange on the fast path).
        h->holder_tid.store((int32_t)me->tid, std::memory_order_relaxed);
        return 0;
    }
    return finish_acquire(m, me, thread_reentry, owner_died, fn);
}

// The public calls' acquire: the shared prologue, then ipc_acquire (inline in each, so that
// surelock_ipc_lock's has no trace of a timeout).
[[gnu::always_inline]] inline int acquire(surelock_ipc *m, Wait wait, const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(m, "handle", fn, &me)) return rc;
    return ipc_acquire(m, me, wait, fn);
}

// Releases one level of the caller's hold. With keep_needs_recovery, a lock taken with
// EOWNERDEAD is released still needing recovery, so the next acquirer in any process gets
// EOWNERDEAD (a group backing out); otherwise it becomes not recoverable (API.md section 4).
[[gnu::always_inline]] inline int release(surelock_ipc *m, bool keep_needs_recovery,
                                          const char *fn)
{
    if (m == nullptr) return fail(EINVAL, "%s: the handle is NULL", fn);
    if (!handle_held_by_caller(m))
        return fail(EPERM, "%s: the calling thread does not hold this lock through this handle",
                    fn);
    FileHeader *h = m->header;
    // Only the release that frees the mutex itself ends recovery (or the holder's record): a
    // recursive file may still be held through another handle, or deeper through this one.
    // A file that is not recursive is held once, through the handle that took the mutex.
    bool last = true;
    if (__builtin_expect(m->recursive, 0)) {
        last = pthread_depth(h) == 1;
        bool anchor = m->anchor.load(std::memory_order_relaxed);
        if (--m->depth == 0) {
            m->holder.store(0, std::memory_order_relaxed);
            if (last || !anchor) forget_hold(m);
        }
        // Released through a second handle: the one glibc's robust list pointed into is
        // free to go now.
        if (last && !anchor)
            if (surelock_ipc *anchored = anchor_of(current_record, m)) forget_hold(anchored);
    } else {
        forget_hold(m);
    }
    if (last) {
        if (!keep_needs_recovery &&
            h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY)
            h->recovery_state.store(NOT_RECOVERABLE, std::memory_order_relaxed);
        h->holder_tid.store(0, std::memory_order_relaxed);
    }
    int rc = pthread_mutex_unlock(&h->mutex);
    return __builtin_expect(rc == 0, 1) ? 0 : unlock_failure(rc, fn);
}

} // namespace

namespace surelock::ipc {

const uint8_t *lock_id(const surelock_ipc *m)
{
    return m->lock_id;
}

void file_identity(const surelock_ipc *m, uint64_t *dev, uint64_t *ino)
{
    *dev = (uint64_t)m->dev;
    *ino = (uint64_t)m->ino;
}

} // namespace surelock::ipc

// ---- The lock-kind table (sys/lock_kind.h) -------------------------------------------------------

namespace {

// Whether thread `me` holds the lock file's mutex through any handle (to a lock group every
// handle to one file is the same lock). The kernel-maintained lock word decides, not the
// header's informational holder_tid: a dead holder's TID may since belong to the caller (the
// kernel clears the TID bits of a dead owner's word).
bool file_held_by(const void *lock, const ThreadRecord *me)
{
    auto *m = static_cast<const surelock_ipc *>(lock);
    auto word = __atomic_load_n(&m->header->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)((unsigned)word & FUTEX_TID_MASK) == me->tid;
}

int acquire_member(void *lock, ThreadRecord *me, Wait wait, const char *fn)
{
    return ipc_acquire(static_cast<surelock_ipc *>(lock), me, wait, fn);
}

// A lock group's release; a member given back after EOWNERDEAD stays in need of recovery.
bool release_member(void *lock, ThreadRecord *, bool pass_owner_death)
{
    return release(static_cast<surelock_ipc *>(lock), pass_owner_death,
                   "surelock_group_unlock") != EPERM; // EPERM: not held through the handle
}

Membership *membership(void *lock)
{
    return &static_cast<surelock_ipc *>(lock)->member;
}

// An ipc lock is listed among what a thread holds in surelock_dump_waits, never followed by
// the deadlock walk (it is shared between processes).
size_t describe_ipc(const void *, char *out, size_t cap, CopyFn)
{
    return describe_plain("ipc lock", out, cap);
}

} // namespace

namespace surelock::sys {
const LockKind ipc_kind = {
    .name = "ipc lock",
    .held_by = file_held_by,
    .acquire = acquire_member,
    .release = release_member,
    .membership = membership,
    .group_reenters = false,
    .owner_exited = owner_exited,
    .held_link_offset = offsetof(surelock_ipc, held),
    .hold_mode = "",
    .exclusive_holder = nullptr,
    .held_shared_by = nullptr,
    .describe = describe_ipc,
};
} // namespace surelock::sys

// ---- C entry points -------------------------------------------------------------------------

extern "C" {

SURELOCK_API int surelock_ipc_open(const char *path, const surelock_ipc_options *o,
                                   surelock_ipc **out)
{
    NoCancel no_cancel;
    if (path == nullptr || out == nullptr)
        return fail(EINVAL, "surelock_ipc_open: %s is NULL", path ? "out" : "path");
    surelock::ipc_file::Options opt;
    int rc = surelock::ipc_file::read_options(o, &opt);
    if (rc != 0) return rc;
    auto *m = create<surelock_ipc>();
    if (m == nullptr) return fail(ENOMEM, "surelock_ipc_open: out of memory");
    drop_holds_at_fork();
    surelock::ipc_open::OpenedFile file;
    rc = surelock::ipc_open::open_file(path, opt, &file);
    if (rc != 0) {
        destroy(m);
        return rc;
    }
    m->fd = file.fd;
    m->header = file.header;
    m->map_size = file.map_size;
    m->recursive = (m->header->flags & SURELOCK_IPC_RECURSIVE) != 0;
    m->held.owner_exited = owner_exited; // once: it also tells ipc links apart in held lists
    m->dev = file.st.st_dev;
    m->ino = file.st.st_ino;
    memcpy(m->lock_id, m->header->lock_id, sizeof m->lock_id);
    *out = m;
    return 0;
}

// Not a cancellation point (close(2) is one): a cancel acted on between munmap and close
// would leak the descriptor and its "open" marker, which would block the not-recoverable
// reset for the life of the process.
SURELOCK_API int surelock_ipc_close(surelock_ipc *m)
{
    NoCancel no_cancel;
    if (m == nullptr) return fail(EINVAL, "surelock_ipc_close: the handle is NULL");
    if (held_through(m))
        return fail(EBUSY, "surelock_ipc_close: a thread of this process holds the lock through "
                           "this handle; a held robust mutex is never unmapped");
    if (m->member.groups.load() != 0)
        return fail(EBUSY, "surelock_ipc_close: the handle is a member of %u lock group(s)",
                    m->member.groups.load());
    SURELOCK_MUNMAP(m->header, m->map_size);
    SURELOCK_CLOSE(m->fd); // also drops the OFD "open" marker
    destroy(m);
    return 0;
}

SURELOCK_API int surelock_ipc_lock(surelock_ipc *m)
{
    return acquire(m, Wait::forever(), "surelock_ipc_lock");
}

SURELOCK_API int surelock_ipc_trylock(surelock_ipc *m)
{
    return acquire(m, Wait::try_once(), "surelock_ipc_trylock");
}

SURELOCK_API int surelock_ipc_timedlock(surelock_ipc *m, uint64_t timeout_ns)
{
    return acquire(m, Wait::within(timeout_ns), "surelock_ipc_timedlock");
}

SURELOCK_API int surelock_ipc_consistent(surelock_ipc *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_ipc_consistent: the handle is NULL");
    if (!handle_held_by_caller(m))
        return fail(EINVAL, "surelock_ipc_consistent: the calling thread does not hold the lock");
    uint32_t expected = NEEDS_RECOVERY;
    if (!m->header->recovery_state.compare_exchange_strong(expected, CONSISTENT))
        return fail(EINVAL, "surelock_ipc_consistent: the lock does not need recovery");
    return 0;
}

SURELOCK_API int surelock_ipc_needs_recovery(const surelock_ipc *m)
{
    if (m == nullptr || !handle_held_by_caller(m)) return 0;
    return m->header->recovery_state.load() == NEEDS_RECOVERY;
}

SURELOCK_API int surelock_ipc_unlock(surelock_ipc *m)
{
    return release(m, false, "surelock_ipc_unlock");
}

SURELOCK_API void *surelock_ipc_payload(surelock_ipc *m, size_t *size)
{
    if (m == nullptr || m->header->payload_size == 0) {
        if (size != nullptr) *size = 0;
        return nullptr;
    }
    if (size != nullptr) *size = (size_t)m->header->payload_size;
    return reinterpret_cast<char *>(m->header) + header_size;
}

#ifdef SURELOCK_TESTING
void (*surelock_testing_ipc_acquired_hook)(void); // sys/testing.h
void surelock_testing_ipc_acquired_point(void)
{
    if (surelock_testing_ipc_acquired_hook != nullptr) surelock_testing_ipc_acquired_hook();
}
#endif

} // extern "C"
