#include "sys/waits.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>

#include "surelock.h"
#include "sys/errmsg.h"

namespace surelock::sys {

namespace {

// ---- On or off -------------------------------------------------------------------------------

// -1 until decided: SURELOCK_DEADLOCK_DETECTION is read at the first contended wait, unless
// surelock_set_deadlock_detection decided first (no static constructor reads it earlier).
std::atomic<int> detection{-1};

bool detection_on()
{
    int on = detection.load(std::memory_order_relaxed);
    if (__builtin_expect(on >= 0, 1)) return on != 0;
    const char *env = getenv("SURELOCK_DEADLOCK_DETECTION");
    int from_env = env != nullptr && strcmp(env, "0") == 0 ? 0 : 1;
    detection.compare_exchange_strong(on, from_env, std::memory_order_relaxed);
    return detection.load(std::memory_order_relaxed) != 0;
}

// ---- The graph lock and the registered waiters ---------------------------------------------

// A spinlock: held only for a registration plus a walk (no system call, no allocation), by
// threads that are about to sleep anyway. Yielding keeps a preempted holder from being
// starved by spinners on a loaded machine.
std::atomic<bool> graph_locked{false};

void cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

void lock_graph()
{
    for (int spins = 0; graph_locked.exchange(true, std::memory_order_acquire); spins++) {
        while (graph_locked.load(std::memory_order_relaxed)) {
            if (spins++ < 64) cpu_relax();
            else sched_yield();
        }
    }
}

void unlock_graph()
{
    graph_locked.store(false, std::memory_order_release);
}

// Registered waiters by serial; only under the graph lock.
constexpr size_t waiter_buckets = 1024;
ThreadRecord *waiters[waiter_buckets];
uint64_t walk_epoch; // a fresh mark per walk

ThreadRecord **bucket_of(uint64_t serial)
{
    return &waiters[(serial ^ (serial >> 10)) % waiter_buckets];
}

ThreadRecord *registered_waiter(uint64_t serial)
{
    for (ThreadRecord *r = *bucket_of(serial); r != nullptr; r = r->wait_hash_next)
        if (r->serial == serial) return r;
    return nullptr;
}

void add_waiter(ThreadRecord *me, const LockKind &kind, const void *lock)
{
    me->wait_lock.store(lock, std::memory_order_relaxed);
    me->wait_kind.store(&kind, std::memory_order_relaxed);
    ThreadRecord **b = bucket_of(me->serial);
    me->wait_hash_next = *b;
    *b = me;
    me->registered = true;
}

void remove_waiter(ThreadRecord *me)
{
    ThreadRecord **p = bucket_of(me->serial);
    while (*p != me) p = &(*p)->wait_hash_next;
    *p = me->wait_hash_next;
    me->registered = false;
    me->wait_lock.store(nullptr, std::memory_order_relaxed);
    me->wait_kind.store(nullptr, std::memory_order_relaxed);
}

// ---- The walk ---------------------------------------------------------------------------------

// Breadth-first from `me` over registered waiters: a waiter's successors are the registered
// holders of the lock it waits for. Each record is queued at most once per walk (epoch
// mark), so the walk takes at most one step per registered waiter and allocates nothing;
// breadth-first finds a shortest cycle, which makes the shortest message. Returns the last
// waiter before `me` on a cycle (me itself for none: a thread never waits for its own lock).
struct Walk {
    ThreadRecord *me;
    ThreadRecord *head = nullptr, *tail = nullptr;
    ThreadRecord *closing = nullptr; // a waiter whose lock `me` holds

    // `from` waits for a lock that `to` holds.
    void follow(ThreadRecord *from, ThreadRecord *to)
    {
        if (closing != nullptr) return;
        if (to == me) {
            closing = from;
            return;
        }
        if (to->walk_epoch == walk_epoch) return;
        to->walk_epoch = walk_epoch;
        to->walk_parent = from;
        to->walk_queue_next = nullptr;
        if (tail != nullptr) tail->walk_queue_next = to;
        else head = to;
        tail = to;
    }

    ThreadRecord *run()
    {
        walk_epoch++;
        me->walk_epoch = walk_epoch;
        me->walk_parent = nullptr;
        for (ThreadRecord *r = me; r != nullptr && closing == nullptr;) {
            const void *lock = r->wait_lock.load(std::memory_order_relaxed);
            const LockKind *kind = r->wait_kind.load(std::memory_order_relaxed);
            uint64_t holder = kind->exclusive_holder(lock, nullptr);
            if (holder == me->serial) follow(r, me);
            else if (holder != 0)
                if (ThreadRecord *h = registered_waiter(holder)) follow(r, h);
            if (kind->held_shared_by != nullptr)
                for (size_t b = 0; b < waiter_buckets && closing == nullptr; b++)
                    for (ThreadRecord *w = waiters[b]; w != nullptr; w = w->wait_hash_next)
                        if (kind->held_shared_by(lock, w)) follow(r, w);
            // Next from the queue.
            r = head;
            if (head != nullptr && (head = head->walk_queue_next) == nullptr) tail = nullptr;
        }
        return closing;
    }
};

// ---- Text ------------------------------------------------------------------------------------

// Appends to a fixed buffer, dropping what does not fit; signal-safe (no stdio).
struct Text {
    char *buf;
    size_t cap, len = 0;
    Text(char *b, size_t c) : buf(b), cap(c) { buf[0] = '\0'; }

    void add(const char *s, size_t n)
    {
        if (cap == 0) return;
        size_t room = cap - 1 - len;
        if (n > room) n = room;
        memcpy(buf + len, s, n);
        len += n;
        buf[len] = '\0';
    }
    void add(const char *s) { add(s, strlen(s)); }
    void number(uint64_t v)
    {
        char digits[24];
        size_t n = 0;
        do digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        add(digits + sizeof digits - n, n);
    }
    bool full() const { return len + 1 >= cap; }
};

void describe_wait(Text &t, const ThreadRecord *r)
{
    char what[160];
    const LockKind *kind = r->wait_kind.load(std::memory_order_relaxed);
    kind->describe(r->wait_lock.load(std::memory_order_relaxed), what, sizeof what, nullptr);
    t.add(what);
}

// "thread 7 waits for rlock 'libB' held by thread 9, which waits for rlock 'libA' held by
// thread 7", from the cycle me -> ... -> closing -> me (walk_parent links, reversed here).
// A cycle too long for the text ends after the last whole step with
// ", ... (N threads in the cycle)".
void describe_cycle(Text &t, ThreadRecord *me, ThreadRecord *closing)
{
    // Reverse the parent chain closing -> ... -> me into me -> ... -> closing (scratch links).
    ThreadRecord *next = nullptr;
    uint64_t threads = 0;
    for (ThreadRecord *r = closing; r != nullptr; threads++) {
        ThreadRecord *parent = r->walk_parent;
        r->walk_parent = next;
        next = r;
        r = parent;
    }
    constexpr size_t reserve = 40; // for the ", ... (N threads in the cycle)" ending
    t.add("thread ");
    t.number(me->serial);
    for (ThreadRecord *r = me; r != nullptr; r = r->walk_parent) {
        char step_text[256];
        Text step(step_text, sizeof step_text);
        step.add(r == me ? " waits for " : ", which waits for ");
        describe_wait(step, r);
        uint64_t next = r->walk_parent != nullptr ? r->walk_parent->serial : me->serial;
        // A reader waits for a write holder, or queues behind a waiting writer.
        const LockKind *kind = r->wait_kind.load(std::memory_order_relaxed);
        bool behind = kind == &rwlock_read_kind &&
                      kind->exclusive_holder(r->wait_lock.load(std::memory_order_relaxed),
                                             nullptr) != next;
        step.add(behind ? " behind a write waited for by thread " : " held by thread ");
        step.number(next);
        bool last = r->walk_parent == nullptr;
        if (t.len + step.len + (last ? 0 : reserve) + 1 > t.cap) {
            t.add(", ... (");
            t.number(threads);
            t.add(" threads in the cycle)");
            return;
        }
        t.add(step_text, step.len);
    }
}

} // namespace

size_t describe_numbered(const char *kind_name, uint64_t serial, char *out, size_t cap)
{
    Text t(out, cap);
    t.add(kind_name);
    t.add(" #");
    t.number(serial);
    return t.len;
}

size_t describe_plain(const char *text, char *out, size_t cap)
{
    Text t(out, cap);
    t.add(text);
    return t.len;
}

size_t describe_named(const char *kind_name, const char *name, size_t length, char *out,
                      size_t cap)
{
    constexpr size_t shown = 48;
    Text t(out, cap);
    t.add(kind_name);
    t.add(" '");
    for (size_t i = 0; i < length && i < shown; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            t.add((const char *)&c, 1);
        } else {
            const char *hex = "0123456789abcdef";
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            t.add(esc, 4);
        }
    }
    t.add(length > shown ? "...'" : "'");
    return t.len;
}

int begin_wait(ThreadRecord *me, const LockKind &kind, const void *lock, const char *fn)
{
    if (!detection_on()) return 0;
    lock_graph();
    add_waiter(me, kind, lock);
    ThreadRecord *closing = Walk{me}.run();
    if (closing == nullptr) {
        unlock_graph();
        return 0;
    }
    // errmsg holds 256 bytes: "<fn>: deadlock: " and the cycle.
    char cycle[256];
    size_t room = sizeof cycle - strlen(fn) - strlen(": deadlock: ");
    Text t(cycle, room < sizeof cycle ? room : sizeof cycle);
    describe_cycle(t, me, closing);
    remove_waiter(me);
    unlock_graph();
    return fail(EDEADLK, "%s: deadlock: %s", fn, cycle);
}

void end_wait(ThreadRecord *me)
{
    if (!me->registered) return; // detection was off when the wait began
    lock_graph();
    remove_waiter(me);
    unlock_graph();
}

void waits_reset_in_child()
{
    graph_locked.store(false, std::memory_order_relaxed);
    memset(waiters, 0, sizeof waiters);
}

// ---- The dump -----------------------------------------------------------------------------------

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
    if (!safe_copy(&serial, &r->serial, sizeof serial) || !safe_copy(&tid, &r->tid, sizeof tid) ||
        !safe_copy(&sentinel, &r->held, sizeof sentinel)) {
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
    for (const HeldLink *p = sentinel.next; p != end && p != nullptr; shown++) {
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
        p = link.next;
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

SURELOCK_API int surelock_set_deadlock_detection(int enabled)
{
    if (enabled != 0 && enabled != 1)
        return fail(EINVAL, "surelock_set_deadlock_detection: %d is neither 0 (off) nor 1 (on)",
                    enabled);
    detection.store(enabled, std::memory_order_relaxed);
    return 0;
}

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
