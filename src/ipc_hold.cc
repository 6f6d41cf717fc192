// Which thread holds an ipc lock through which handle, off the fast path (ipc_hold.h): the
// holder's exit, fork, close()'s check, re-entry of a recursive file through a second handle,
// and acquisitions that find the lock in need of recovery or not recoverable. ipc.cc's fast
// path covers only the first hold of a consistent lock through a handle no thread holds or
// anchors, and hands everything else to finish_acquire here.

#include "ipc_hold.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "sys/errmsg.h"
#include "sys/lock_kind.h" // SURELOCK_CONTAINER_OF

using namespace surelock::sys;
using namespace surelock::ipc_format;

namespace surelock::ipc_hold {

namespace {

surelock_ipc *from_link(HeldLink *link)
{
    return SURELOCK_CONTAINER_OF(link, surelock_ipc, held);
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
        if (l->owner_exited == owner_exited) forget_hold(from_link(l));
    }
}

pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
void register_atfork()
{
    pthread_atfork(nullptr, nullptr, drop_inherited_holds);
}

} // namespace

// The holder thread is exiting while holding: forget the hold here. The pthread mutex stays
// held until the kernel walks the thread's robust list and marks it owner-dead for the next
// acquirer; tid and anchor stay, so close() meanwhile sees the lock word still naming that
// thread of this process and keeps the mapping the kernel is about to walk.
void owner_exited(HeldLink *link)
{
    surelock_ipc *m = from_link(link);
    m->linked = false; // the thread's record (and list) is about to be freed
    m->depth = 0;
    m->holder.store(0, std::memory_order_relaxed);
}

// A thread of this process holds the lock through this handle when it holds a depth through
// it, or its robust list points into this mapping (see `anchor`), and the kernel-maintained
// lock word still names that thread, which is alive in this process (after fork() the word
// names the parent's thread: the child holds nothing). Such a mapping must not be unmapped:
// the kernel walks the robust list when the thread dies.
bool held_through(const surelock_ipc *m)
{
    int tid = m->tid.load(std::memory_order_relaxed);
    if (tid == 0 || (m->holder.load(std::memory_order_relaxed) == 0 &&
                     !m->anchor.load(std::memory_order_relaxed)))
        return false;
    auto word = __atomic_load_n(&m->header->mutex.__data.__lock, __ATOMIC_ACQUIRE);
    return (pid_t)((unsigned)word & FUTEX_TID_MASK) == tid && tgkill(getpid(), tid, 0) == 0;
}

void drop_holds_at_fork()
{
    pthread_once(&atfork_once, register_atfork);
}

surelock_ipc *anchor_of(ThreadRecord *me, const surelock_ipc *m)
{
    for (HeldLink *l = me->held.next; l != &me->held; l = l->next) {
        if (l->owner_exited != owner_exited) continue;
        surelock_ipc *other = from_link(l);
        if (other != m && other->anchor.load(std::memory_order_relaxed) && other->dev == m->dev &&
            other->ino == m->ino)
            return other;
    }
    return nullptr;
}

void note_owner_death(FileHeader *h)
{
    // Consistent at once: the file, not the mutex, tracks recovery (see ipc.cc). A thread
    // that died in the window below, refused a not-recoverable lock, never held it: its
    // death is not counted (owner_deaths counts holders' deaths only, once each).
    pthread_mutex_consistent(&h->mutex);
    if (h->recovery_state.load(std::memory_order_relaxed) != NOT_RECOVERABLE) {
        h->owner_deaths.fetch_add(1);
        uint32_t expected = CONSISTENT;
        h->recovery_state.compare_exchange_strong(expected, NEEDS_RECOVERY);
    }
}

// Off the fast path: a re-entry of a recursive file (thread_reentry: this thread already held
// the mutex, through this or another handle), a lock that needs recovery or is not
// recoverable, or a handle still linked (this thread's anchor at depth 0, or a fork child's
// copy of a link of a thread that does not exist here).
int finish_acquire(surelock_ipc *m, ThreadRecord *me, bool thread_reentry, bool owner_died,
                   const char *fn)
{
    FileHeader *h = m->header;
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
    if (!thread_reentry) {
        // A link of this thread's is taken over by the new hold; a fork child's copy of
        // another thread's link is simply overwritten (its list is not this thread's).
        if (m->linked && m->tid.load(std::memory_order_relaxed) == me->tid) m->held.unlink();
        begin_hold(m, me);
        h->holder_tid.store((int32_t)me->tid, std::memory_order_relaxed);
        return owner_died || h->recovery_state.load(std::memory_order_relaxed) == NEEDS_RECOVERY
                   ? EOWNERDEAD
                   : 0;
    }
    // Still linked when this thread's robust list points into this handle (see `anchor`).
    if (!(m->linked && m->tid.load(std::memory_order_relaxed) == me->tid)) {
        me->link_held(&m->held);
        m->linked = true;
        m->tid.store(me->tid, std::memory_order_relaxed);
        m->anchor.store(false, std::memory_order_relaxed);
    }
    m->holder.store(me->serial, std::memory_order_relaxed);
    m->depth = 1;
    return 0;
}

} // namespace surelock::ipc_hold
