// The wait dump (surelock_dump_waits, SURELOCK_DUMP_ON): one line per thread with what it
// holds and what it waits for, read through each lock's kind (sys/lock_kind.h). It runs
// without any lock, possibly in a signal handler, so it reads other threads' records and
// locks only through safe_copy, which cannot fault.

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "surelock.h"
#include "sys/lock_kind.h"
#include "sys/text.h"
#include "sys/thread.h"
#include "sys/waits.h"

namespace surelock::sys {

namespace {

// Copies another thread's data without the risk of faulting: the kernel reads it
// (process_vm_readv on ourselves), so memory freed and unmapped meanwhile gives an error, not
// a crash. Where the system refuses that call, the copy fails and the dump says so.
bool safe_copy(void *dst, const void *src, size_t n)
{
    struct iovec local = {dst, n};
    struct iovec remote = {const_cast<void *>(src), n};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n;
}

const LockKind *const all_kinds[] = {&rlock_kind, &mutex_kind, &rwlock_kind, &rwlock_read_kind,
                                     &group_kind, &ipc_kind};

const LockKind *kind_of_link(void (*owner_exited)(HeldLink *))
{
    for (const LockKind *k : all_kinds)
        if (k->owner_exited != nullptr && k->owner_exited == owner_exited) return k;
    return nullptr;
}

// Returns 0 or the errno of a failed write.
int write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return EIO;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

constexpr size_t max_held_shown = 32;

// One line: "thread 7 (tid 1234): holds rlock 'libA', mutex #3; waits for rlock 'libB' held
// by thread 9".
int dump_thread(int fd, const ThreadRecord *r)
{
    uint64_t serial;
    int tid;
    HeldLink sentinel;
    HeldLink *slot;
    if (!safe_copy(&serial, &r->serial, sizeof serial) || !safe_copy(&tid, &r->tid, sizeof tid) ||
        !safe_copy(&sentinel, &r->held, sizeof sentinel) ||
        !safe_copy(&slot, &r->held_slot, sizeof slot)) {
        static const char unreadable[] = "thread ?: cannot be read (process_vm_readv refused)\n";
        return write_all(fd, unreadable, sizeof unreadable - 1);
    }
    char line[1024];
    Text t(line, sizeof line - 1);
    t.add("thread ");
    t.number(serial);
    t.add(" (tid ");
    t.number((uint64_t)tid);
    t.add("): holds ");
    size_t shown = 0;
    bool cut = false; // the list ended early ("?" or "...")
    const HeldLink *end = &r->held;
    // The list's links, then the held slot's (thread.h): newest first.
    bool slot_left = slot != nullptr;
    for (const HeldLink *p = sentinel.next;; shown++) {
        bool at_slot = false;
        if (p == end || p == nullptr) {
            if (!slot_left) break;
            p = slot;
            slot_left = false;
            at_slot = true;
        }
        HeldLink link;
        if (!safe_copy(&link, p, sizeof link)) {
            t.add(shown ? ", ?" : "?");
            cut = true;
            break;
        }
        if (shown == max_held_shown) {
            t.add(", ...");
            cut = true;
            break;
        }
        if (shown) t.add(", ");
        const LockKind *kind = kind_of_link(link.owner_exited);
        if (kind == nullptr) {
            t.add("?");
            break;
        }
        char what[160];
        const void *lock = field_address(p, -(ptrdiff_t)kind->held_link_offset);
        kind->describe(lock, what, sizeof what, safe_copy);
        t.add(what);
        t.add(kind->hold_mode);
        p = at_slot ? nullptr : link.next;
    }
    // Read holds live in the thread's read-hold set (hold_set.h), not in its held list.
    HoldSet holds;
    if (!cut && safe_copy(&holds, &r->read_holds, sizeof holds) && holds.slots != nullptr) {
        for (uint32_t i = 0; i <= holds.mask; i++) {
            const void *lock = nullptr;
            if (!safe_copy(&lock, &holds.slots[i], sizeof lock)) {
                t.add(shown ? ", ?" : "?");
                shown++;
                break;
            }
            if (lock == nullptr) continue;
            if (shown == max_held_shown) {
                t.add(", ...");
                break;
            }
            if (shown++) t.add(", ");
            char what[160];
            rwlock_read_kind.describe(lock, what, sizeof what, safe_copy);
            t.add(what);
            t.add(rwlock_read_kind.hold_mode);
        }
    }
    if (shown == 0) t.add("nothing");
    const void *lock = r->wait_lock.load(std::memory_order_relaxed);
    const LockKind *kind = r->wait_kind.load(std::memory_order_relaxed);
    if (lock == nullptr || kind == nullptr) {
        t.add("; not waiting");
    } else {
        char what[160];
        kind->describe(lock, what, sizeof what, safe_copy);
        t.add("; waits for ");
        t.add(what);
        uint64_t holder = kind->exclusive_holder(lock, safe_copy);
        if (holder != 0) {
            t.add(" held by thread ");
            t.number(holder);
        } else {
            t.add(kind->held_shared_by != nullptr ? " held for reading" : " held by no thread");
        }
    }
    line[t.len++] = '\n';
    return write_all(fd, line, t.len);
}

void dump_on_signal(int)
{
    int saved = errno;
    surelock_dump_waits(2);
    errno = saved;
}

} // namespace

void install_dump_signal_from_environment()
{
    const char *name = getenv("SURELOCK_DUMP_ON");
    if (name == nullptr) return;
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    int sig = strcmp(name, "QUIT") == 0   ? SIGQUIT
              : strcmp(name, "USR1") == 0 ? SIGUSR1
              : strcmp(name, "USR2") == 0 ? SIGUSR2
                                          : 0;
    if (sig == 0) return; // unknown: never print, never fail a lock call for it
    struct sigaction old;
    if (sigaction(sig, nullptr, &old) != 0) return;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return; // the program's own
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dump_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
}

} // namespace surelock::sys

using namespace surelock::sys;

extern "C" {

SURELOCK_API int surelock_dump_waits(int fd)
{
    if (fd < 0) return EINVAL; // errmsg untouched: this may run in a signal handler
    int saved_errno = errno;
    char head[64];
    Text t(head, sizeof head - 1);
    t.add("surelock: waits in process ");
    t.number((uint64_t)getpid());
    head[t.len++] = '\n';
    int rc = write_all(fd, head, t.len);
    for (const ThreadRecord *r = all_thread_records(); r != nullptr && rc == 0; r = r->all_next)
        if (r->in_use.load(std::memory_order_acquire)) rc = dump_thread(fd, r);
    errno = saved_errno;
    return rc;
}

} // extern "C"
