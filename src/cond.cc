// Condition variable over surelock_mutex (API.md section 2).
//
// A sequence word on a futex: a waiter reads it while holding the mutex, releases the mutex
// and sleeps only if no signal has bumped the word since; signal and broadcast bump it and
// wake. A waiter count lets signal skip the bump and the system call when nobody waits and
// lets free refuse while threads wait. The bump is a signal's last access to the cond.

#include <errno.h>
#include <limits.h>

#include <atomic>

#include "locks.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;

struct surelock_cond {
    alignas(64) std::atomic<uint32_t> sequence{0};
    std::atomic<uint32_t> waiters{0};
};

namespace {

int wait(surelock_cond *c, surelock_mutex *m, uint64_t timeout_ns, const char *fn)
{
    if (c == nullptr || m == nullptr)
        return fail(EINVAL, "%s: the %s is NULL", fn, c == nullptr ? "condition" : "mutex");
    ThreadRecord *me = current_record;
    if (me == nullptr || !m->lock.held_by(me))
        return fail(EPERM, "%s: the calling thread does not hold the mutex", fn);
    Deadline deadline = Deadline::after(timeout_ns);
    // Sequentially consistent with signal's bump-then-check, so a signaller either sees this
    // waiter or this waiter sees the bumped sequence (and does not sleep).
    SURELOCK_STEP(&c->waiters);
    c->waiters.fetch_add(1);
    SURELOCK_STEP(&c->sequence);
    uint32_t seen = c->sequence.load();
    m->lock.release(me);
    bool timed_out = false;
    if (timeout_ns == 0) {
        timed_out = true;
    } else {
        bool expired = futex_wait(&c->sequence, seen, deadline) == ETIMEDOUT;
        // Read after every wake-up, not only a timeout: the acquire pairs with the bump of the
        // signal that woke this waiter, so what the signaller did before it (reading the
        // waiter count) happens before this waiter's return, and before a free of the cond
        // that follows (the futex orders them too, but the memory model and ThreadSanitizer
        // know nothing of the futex).
        SURELOCK_STEP(&c->sequence);
        timed_out = c->sequence.load(std::memory_order_acquire) == seen && expired;
    }
    SURELOCK_STEP(&c->waiters);
    c->waiters.fetch_sub(1, std::memory_order_relaxed);
    // Re-acquire before returning, whatever happened: the caller's invariant is "I hold m".
    int rc = m->lock.acquire(me, Wait::forever(), fn);
    if (rc == EOWNERDEAD) return EOWNERDEAD;
    if (rc == EDEADLK) return rc; // deadlock detection refused the re-acquire: m is not held
    if (timed_out)
        return fail(ETIMEDOUT, "%s: not signalled within %llu ns", fn,
                    (unsigned long long)timeout_ns);
    return 0;
}

// The bump is the last access to *c: a waiter it lets go may return and free the cond at once
// (allowed once nobody waits), so the wake goes by address only. Waiters are checked before
// the bump, not after: a waiter counted after that check started waiting after this signal.
void wake(surelock_cond *c, int count)
{
    std::atomic<uint32_t> *sequence = &c->sequence;
    SURELOCK_STEP(sequence);
    sequence->fetch_add(1);
#ifdef SURELOCK_TESTING
    surelock_testing_cond_woken_point();
#endif
    futex_wake(sequence, count);
}

} // namespace

extern "C" {

SURELOCK_API int surelock_cond_new(surelock_cond **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_cond_new: out is NULL");
    auto *c = create<surelock_cond>();
    if (c == nullptr) return fail(ENOMEM, "surelock_cond_new: out of memory");
    *out = c;
    return 0;
}

SURELOCK_API int surelock_cond_free(surelock_cond *c)
{
    if (c == nullptr) return fail(EINVAL, "surelock_cond_free: the condition is NULL");
    SURELOCK_STEP(&c->waiters);
    uint32_t waiting = c->waiters.load(std::memory_order_acquire);
    if (waiting != 0)
        return fail(EBUSY, "surelock_cond_free: %u thread(s) wait on it; nothing freed", waiting);
    destroy(c);
    return 0;
}

SURELOCK_API int surelock_cond_wait(surelock_cond *c, surelock_mutex *m)
{
    return wait(c, m, SURELOCK_FOREVER, "surelock_cond_wait");
}

SURELOCK_API int surelock_cond_timedwait(surelock_cond *c, surelock_mutex *m, uint64_t timeout_ns)
{
    return wait(c, m, timeout_ns, "surelock_cond_timedwait");
}

SURELOCK_API int surelock_cond_signal(surelock_cond *c)
{
    if (c == nullptr) return fail(EINVAL, "surelock_cond_signal: the condition is NULL");
    SURELOCK_STEP(&c->waiters);
    if (c->waiters.load() == 0) return 0;
    wake(c, 1);
    return 0;
}

SURELOCK_API int surelock_cond_broadcast(surelock_cond *c)
{
    if (c == nullptr) return fail(EINVAL, "surelock_cond_broadcast: the condition is NULL");
    SURELOCK_STEP(&c->waiters);
    if (c->waiters.load() == 0) return 0;
    wake(c, INT_MAX);
    return 0;
}

#ifdef SURELOCK_TESTING
// Overridable in tests: called right after signal/broadcast's waking step.
void (*surelock_testing_cond_woken_hook)(void);
void surelock_testing_cond_woken_point(void)
{
    if (surelock_testing_cond_woken_hook != nullptr) surelock_testing_cond_woken_hook();
}
#endif

} // extern "C"
