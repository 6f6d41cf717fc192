#include "sys/waits.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "surelock.h"
#include "sys/errmsg.h"
#include "sys/futex.h" // cpu_relax
#include "sys/text.h"

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

// Registered waiters by serial, and all of them in one list (what a walk looks through for
// the readers of an rwlock: as many steps as there are waiters, not buckets); only under the
// graph lock.
constexpr size_t waiter_buckets = 1024;
ThreadRecord *waiters[waiter_buckets];
ThreadRecord *all_waiting;
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
    me->waiting_prev = nullptr;
    me->waiting_next = all_waiting;
    if (all_waiting != nullptr) all_waiting->waiting_prev = me;
    all_waiting = me;
    me->registered = true;
}

void remove_waiter(ThreadRecord *me)
{
    ThreadRecord **p = bucket_of(me->serial);
    while (*p != me) p = &(*p)->wait_hash_next;
    *p = me->wait_hash_next;
    if (me->waiting_prev != nullptr) me->waiting_prev->waiting_next = me->waiting_next;
    else all_waiting = me->waiting_next;
    if (me->waiting_next != nullptr) me->waiting_next->waiting_prev = me->waiting_prev;
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
                for (ThreadRecord *w = all_waiting; w != nullptr && closing == nullptr;
                     w = w->waiting_next)
                    if (kind->held_shared_by(lock, w)) follow(r, w);
            // Next from the queue.
            r = head;
            if (head != nullptr && (head = head->walk_queue_next) == nullptr) tail = nullptr;
        }
        return closing;
    }
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
    all_waiting = nullptr;
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

} // extern "C"
