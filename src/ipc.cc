// Robust cross-process mutex (API.md section 4): the handle and locking.
//
// A robust, process-shared pthread mutex initialised in place in a MAP_SHARED file mapping,
// behind a versioned header (layout in surelock.h). This file holds what a process does with
// an open lock: the handle, acquiring and releasing, what lock groups ask of a member, and
// the C entry points. The file itself is elsewhere, each part in its own file for its own
// reason: the format and its validation (ipc_file.cc, shared with `surelock status` and the
// fuzzer), the opening protocol between processes (ipc_open.cc), and the checks of glibc's
// robust mutex from outside it (ipc_robust.cc).
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
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

#include "ipc.h"
#include "ipc_format.h"
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
using surelock::ipc_open::NoCancel;

// ---- The handle --------------------------------------------------------------------------------

struct surelock_ipc {
    int fd;
    FileHeader *header; // start of the mapping
    size_t map_size;
    // Which thread holds the lock through this handle (0 = none) and how deep; only the
    // holder writes them. A holder's exit is seen through its held list.
    std::atomic<uint64_t> holder{0};
    unsigned depth = 0;
    // The kernel TID of the thread that locks through this handle, and whether glibc's robust
    // list of that thread points into this handle's mapping: true from the acquisition that
    // took the pthread mutex through this handle until the thread's last release of it
    // (through any handle of the file: a recursive file re-entered through a second handle
    // keeps the first one's list entry). While anchored, the handle stays in the thread's
    // held list even at depth 0, and close() is EBUSY.
    std::atomic<int> tid{0};
    std::atomic<bool> anchor{false};
    HeldLink held{};
    bool linked = false; // `held` is in the list of thread `tid` (which is alive)
    bool recursive;      // the file's SURELOCK_IPC_RECURSIVE, fixed at creation (kept here:
                         // the fast path then reads no header line but the mutex's and state's)
    // For lock groups (API.md section 3): the order key and the identity of the file.
    uint8_t lock_id[16];
    dev_t dev;
    ino_t ino;
    Membership member{};
};

namespace {

surelock_ipc *from_link(HeldLink *link)
{
    return SURELOCK_CONTAINER_OF(link, surelock_ipc, held);
}

// The holder thread is exiting while holding: forget the hold here. The pthread mutex stays
// held until the kernel walks the thread's robust list and marks it owner-dead for the next
// acquirer; tid and anchor stay, so close() meanwhile sees the lock word still naming that
// thread of this process and keeps the mapping the kernel is about to walk.
void ipc_owner_exited(HeldLink *link)
{
    surelock_ipc *m = from_link(link);
    m->linked = false; // the thread's record (and list) is about to be freed
    m->depth = 0;
    m->holder.store(0, std::memory_order_relaxed);
}

// Whether a thread of this process holds the lock through this handle: it holds a depth
// through it, or its robust list points into this mapping (see `anchor`), and the
// kernel-maintained lock word still names that thread, which is alive in this process (after
// fork() the word names the parent's thread: the child holds nothing). Such a mapping must not
// be unmapped: the kernel walks the robust list when the thread dies.
bool held_through(const surelock_ipc *m)
{
    int tid = m->tid.load(std::memory_order_relaxed);
    if (tid == 0 || (m->holder.load(std::memory_order_relaxed) == 0 &&
                     !m->anchor.load(std::memory_order_relaxed)))
        return false;
    auto word = __atomic_load_n(&m->header->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)((unsigned)word & FUTEX_TID_MASK) == tid && tgkill(getpid(), tid, 0) == 0;
}

// Drops a hold's bookkeeping once the thread holds nothing through the handle and its robust
// list no longer points into it.
void forget_hold(surelock_ipc *m)
{
    if (m->linked) m->held.unlink();
    m->linked = false;
    m->holder.store(0, std::memory_order_relaxed);
    m->depth = 0;
    m->anchor.store(false, std::memory_order_relaxed);
    m->tid.store(0, std::memory_order_relaxed);
}

// Robust ownership is never inherited: in a fork child, the forking thread's copy of its held
// list still links the ipc handles its parent thread held through, and the child's copy of the
// mutex is the parent's lock. Unlinking them here means a child that closes such a handle
// frees nothing still linked, and never releases or repairs its parent's lock.
void drop_inherited_holds()
{
    ThreadRecord *me = current_record;
    if (me == nullptr) return;
    for (HeldLink *l = me->held.next, *next; l != &me->held; l = next) {
        next = l->next;
        if (l->owner_exited == ipc_owner_exited) forget_hold(from_link(l));
    }
}

pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
void register_atfork()
{
    pthread_atfork(nullptr, nullptr, drop_inherited_holds);
}

// ---- Locking -------------------------------------------------------------------------------------

// Whether the calling thread holds the lock through this handle. A fork child's copy of the
// holding thread keeps its serial, but the child's holds were dropped at fork (robust futexes
// go by TID: it does not own its parent's lock).
bool handle_held_by_caller(const surelock_ipc *m)
{
    ThreadRecord *me = current_record;
    return me != nullptr && m->holder.load(std::memory_order_relaxed) == me->serial;
}

// The handle of the same file whose mapping the calling thread's robust list points into
// (anchored, held at depth 0 through it), or nullptr.
surelock_ipc *anchor_of(ThreadRecord *me, const surelock_ipc *m)
{
    for (HeldLink *l = me->held.next; l != &me->held; l = l->next) {
        if (l->owner_exited != ipc_owner_exited) continue;
        surelock_ipc *other = from_link(l);
        if (other != m && other->anchor.load(std::memory_order_relaxed) && other->dev == m->dev &&
            other->ino == m->ino)
            return other;
    }
    return nullptr;
}

// Takes the lock for the calling thread `me`: the lock-kind table's acquire, and inline in the
// public calls' (below), as it was before the table.
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
    if (rc == EOWNERDEAD) {
        // Consistent at once: the file, not the mutex, tracks recovery (see the top). A thread
        // that died in the window below, refused a not-recoverable lock, never held it: its
        // death is not counted (owner_deaths counts holders' deaths only, once each).
        pthread_mutex_consistent(&h->mutex);
        if (h->recovery_state.load(std::memory_order_relaxed) != NOT_RECOVERABLE) {
            h->owner_deaths.fetch_add(1);
            uint32_t expected = CONSISTENT;
            h->recovery_state.compare_exchange_strong(expected, NEEDS_RECOVERY);
        }
        owner_died = true;
        rc = 0;
    }
    if (__builtin_expect(rc != 0, 0)) return lock_failure(rc, no_sleep, wait.timeout_ns(), fn);
    // A recursive mutex this thread already held (through this or another handle of the file)
    // was only re-entered: recovery was reported to the outer acquisition.
    bool thread_reentry = m->recursive && pthread_depth(h) > 1;
#ifdef SURELOCK_TESTING
    if (!thread_reentry) surelock_testing_ipc_acquired_point();
#endif
    if (!thread_reentry && h->recovery_state.load(std::memory_order_relaxed) == NOT_RECOVERABLE) {
        pthread_mutex_unlock(&h->mutex);
        return fail(ENOTRECOVERABLE, "%s: a holder released the lock after EOWNERDEAD without "
                                     "surelock_ipc_consistent; it stays unusable until no "
                                     "process has it open, or a reboot",
                    fn);
    }
    if (handle_held_by_caller(m)) { // re-entry of a recursive file through this handle
        m->depth++;          // glibc's own count (checked above) overflows first
        return 0;
    }
    // Still linked when this thread's robust list points into this handle (see `anchor`).
    if (!(m->linked && m->tid.load(std::memory_order_relaxed) == me->tid)) {
        m->held.owner_exited = ipc_owner_exited;
        me->link_held(&m->held);
        m->linked = true;
        m->tid.store(me->tid, std::memory_order_relaxed);
        m->anchor.store(false, std::memory_order_relaxed);
    }
    m->holder.store(me->serial, std::memory_order_relaxed);
    m->depth = 1;
    if (thread_reentry) return 0;
    m->anchor.store(true, std::memory_order_relaxed);
    // Fields under the mutex: its acquire/release orders them, so no fenced stores (x86 would
    // turn a sequentially consistent store into a locked exchange on the fast path).
    h->holder_tid.store((int32_t)me->tid, std::memory_order_relaxed);
    return owner_died || h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY
               ? EOWNERDEAD
               : 0;
}

// The public calls' acquire: the shared prologue, then ipc_acquire.
[[gnu::noinline]] int acquire(surelock_ipc *m, Wait wait, const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(m, "handle", fn, &me)) return rc;
    return ipc_acquire(m, me, wait, fn);
}

} // namespace

namespace surelock::ipc {

// Releases one level of the caller's hold. With keep_needs_recovery, a lock taken with
// EOWNERDEAD is released still needing recovery, so the next acquirer in any process gets
// EOWNERDEAD (a group backing out); otherwise it becomes not recoverable (API.md section 4).
int release(surelock_ipc *m, bool keep_needs_recovery, const char *fn)
{
    if (m == nullptr) return fail(EINVAL, "%s: the handle is NULL", fn);
    if (!handle_held_by_caller(m))
        return fail(EPERM, "%s: the calling thread does not hold this lock through this handle",
                    fn);
    FileHeader *h = m->header;
    // Only the release that frees the mutex itself ends recovery (or the holder's record): a
    // recursive file may still be held through another handle.
    bool last = !m->recursive || pthread_depth(h) == 1;
    bool anchor = m->anchor.load(std::memory_order_relaxed);
    if (--m->depth == 0) {
        m->holder.store(0, std::memory_order_relaxed);
        if (last || !anchor) forget_hold(m);
    }
    if (last && !anchor) {
        // Released through a second handle: the one glibc's robust list pointed into is
        // free to go now.
        if (surelock_ipc *anchored = anchor_of(current_record, m)) forget_hold(anchored);
    }
    if (last) {
        if (!keep_needs_recovery &&
            h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY)
            h->recovery_state.store(NOT_RECOVERABLE, std::memory_order_relaxed);
        h->holder_tid.store(0, std::memory_order_relaxed);
    }
    int rc = pthread_mutex_unlock(&h->mutex);
    return rc == 0 ? 0 : fail(rc, "%s: pthread_mutex_unlock: %s", fn, strerror(rc));
}

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
void release_member(void *lock, ThreadRecord *, bool pass_owner_death)
{
    surelock::ipc::release(static_cast<surelock_ipc *>(lock), pass_owner_death,
                           "surelock_group_unlock");
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
    .owner_exited = ipc_owner_exited,
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
    pthread_once(&atfork_once, register_atfork);
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
    return surelock::ipc::release(m, false, "surelock_ipc_unlock");
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
