// Async FIFO semaphore and mutex (API.md section 5): the permit word and the C entry points.
//
// While nobody is queued, acquire and release are one compare-and-swap on the word (sem.h).
// Once anyone queues, they go through the queue lock: release adds its permits and the
// settling pass (sem_queue.cc) hands them to the head of the queue, in order, as long as the
// head's request fits. Blocking waiters wait on the stack, async ones in the caller's
// surelock_waiter; an async waiter's callback node is allocated as it queues (ENOMEM is
// reported there), so a release, cancel or shutdown never needs memory.

#include <errno.h>
#include <limits.h>
#include <stddef.h>

#include <atomic>
#include <new>

#include "sem.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"

using namespace surelock::sys;
using namespace surelock::sem;

namespace {

// ---- Acquire -------------------------------------------------------------------------------

int check_request(const surelock_sem *s, uint64_t n, const char *fn)
{
    if (s == nullptr) return fail(EINVAL, "%s: the semaphore is NULL", fn);
    if (n == 0 || n > SURELOCK_SEM_MAX)
        return fail(EINVAL, "%s: asked for %llu permits; valid is 1..%llu", fn,
                    (unsigned long long)n, (unsigned long long)SURELOCK_SEM_MAX);
    return 0;
}

// Lock-free attempt: succeeds only while nobody is queued.
bool try_take(surelock_sem *s, uint64_t n)
{
    SURELOCK_STEP(&s->word);
    uint64_t w = s->word.load(std::memory_order_relaxed);
    while ((w & (QUEUED | SHUT_DOWN)) == 0 && permits_of(w) >= n)
        if (s->word.compare_exchange_weak(w, w - as_permits(n), std::memory_order_acquire,
                                          std::memory_order_relaxed))
            return true;
    return false;
}

int shut_down_error(const char *fn)
{
    return fail(ECANCELED, "%s: the semaphore has been shut down", fn);
}

// With the queue lock held: takes n permits if nobody is queued and they are there, else
// queues w (setting QUEUED in the same step as observing "not enough", so a lock-free release
// cannot slip in between). Returns 0 (taken), EINPROGRESS (queued) or ECANCELED; with w
// nullptr (an async waiter without its delivery node), ENOMEM instead of queuing.
int take_or_enqueue_locked(surelock_sem *s, uint64_t n, Waiter *w)
{
    SURELOCK_STEP(&s->word);
    uint64_t word = s->word.load(std::memory_order_relaxed);
    for (;;) {
        if (word & SHUT_DOWN) return ECANCELED;
        if (!(word & QUEUED) && permits_of(word) >= n) {
            if (s->word.compare_exchange_weak(word, word - as_permits(n),
                                              std::memory_order_acquire,
                                              std::memory_order_relaxed))
                return 0;
            continue;
        }
        if (w == nullptr) return ENOMEM;
        if (word & QUEUED) break;
        if (s->word.compare_exchange_weak(word, word | QUEUED, std::memory_order_relaxed)) break;
    }
    enqueue(s, w);
    return EINPROGRESS;
}

// A queued blocking waiter first watches its own state word for a short while: a FIFO
// hand-off then costs a cache-line transfer instead of a futex sleep and wake (~14 us here,
// for the sleeper and the releaser alike). The budget is time, not a pause count, so it means
// the same on every CPU; it is short against a sleep, and it touches only the waiter's own
// word, never the semaphore (budget_ns 0: no watching). Then the waiter announces its sleep
// (SLEEPING), so a settle wakes only waiters that sleep. Returns GRANTED or CANCELED if
// settled meanwhile, else SLEEPING.
constexpr uint64_t spin_budget_ns = 20000;

uint32_t wait_for_settle_or_sleep(Waiter *w, uint64_t budget_ns)
{
    uint64_t end = budget_ns == 0 ? 0 : monotonic_ns() + budget_ns;
    while (budget_ns != 0) {
        for (int i = 0; i < 32; i++) {
            uint32_t state = w->state.load(std::memory_order_acquire);
            if (state != WAITING) return state;
            cpu_relax();
        }
        if (monotonic_ns() >= end) break;
    }
    uint32_t expected = WAITING;
    SURELOCK_STEP(&w->state); // not inside the spin: it is bounded by time, not by steps
    if (w->state.compare_exchange_strong(expected, SLEEPING, std::memory_order_acquire))
        return SLEEPING;
    return expected; // settled just now
}

int acquire_blocking(surelock_sem *s, uint64_t n, uint64_t timeout_ns, const char *fn)
{
    int rc = check_request(s, n, fn);
    if (rc != 0) return rc;
    if (__builtin_expect(try_take(s, n), 1)) return 0;
    SURELOCK_STEP(&s->word);
    if (s->word.load(std::memory_order_relaxed) & SHUT_DOWN) return shut_down_error(fn);
    if (timeout_ns == 0) return fail(ETIMEDOUT, "%s: not available now (timeout 0)", fn);

    Deadline deadline = Deadline::after(timeout_ns);
    Waiter w{};
    w.sem = s;
    w.n = n;
    s->queue_lock.lock();
    rc = take_or_enqueue_locked(s, n, &w);
    // Only a waiter with at most one ahead of it can expect its turn within the spin budget;
    // one further back would burn a CPU that the waiters ahead of it (with more threads than
    // CPUs) need, so it sleeps at once, as before.
    bool next_in_line = rc == EINPROGRESS && s->queued <= 2;
    s->queue_lock.unlock();
    if (rc == 0) return 0;
    if (rc == ECANCELED) return shut_down_error(fn);
    uint32_t state = wait_for_settle_or_sleep(&w, next_in_line ? spin_budget_ns : 0);
    for (;;) {
        if (state == GRANTED) return 0;
        if (state == CANCELED) return shut_down_error(fn);
        if (futex_wait(&w.state, SLEEPING, deadline) != ETIMEDOUT) {
            SURELOCK_STEP(&w.state);
            state = w.state.load(std::memory_order_acquire);
            continue;
        }
        s->queue_lock.lock();
        SURELOCK_STEP(&w.state);
        state = w.state.load(std::memory_order_acquire);
        if (state != SLEEPING) { // settled meanwhile
            s->queue_lock.unlock();
            continue;
        }
        // Leave the queue; if we were holding back the waiters behind us, serve them.
        unlink_waiter(s, &w);
        grant_and_unlock(s);
        return fail(ETIMEDOUT, "%s: %llu permit(s) not granted within %llu ns", fn,
                    (unsigned long long)n, (unsigned long long)timeout_ns);
    }
}

// The async acquire's way into the queue, kept out of line so that the acquire served at
// once stays as short as it was before this path allocated.
__attribute__((noinline)) int queue_async(surelock_sem *s, Waiter *w, surelock_wake_fn cb,
                                          void *ctx, const char *fn)
{
    SURELOCK_STEP(&s->word);
    if (s->word.load(std::memory_order_relaxed) & SHUT_DOWN) return shut_down_error(fn);
    // Allocated before the queue lock is taken, and only by a waiter that may queue: every
    // grant, however many one release makes, then delivers without allocating.
    w->delivery = Delivery::make(cb, ctx);
    s->queue_lock.lock();
    int rc = take_or_enqueue_locked(s, w->n, w->delivery != nullptr ? w : nullptr);
    s->queue_lock.unlock();
    if (rc == EINPROGRESS) return rc;
    Delivery::discard(w->delivery);
    w->delivery = nullptr;
    if (rc == ECANCELED) return shut_down_error(fn);
    if (rc == ENOMEM)
        return fail(ENOMEM, "%s: out of memory for the waiter's callback; not queued, fn will "
                            "not be called", fn);
    return 0;
}

int acquire_async(surelock_sem *s, uint64_t n, surelock_waiter *sw, surelock_wake_fn cb, void *ctx,
                  const char *fn)
{
    int rc = check_request(s, n, fn);
    if (rc != 0) return rc;
    if (sw == nullptr || cb == nullptr)
        return fail(EINVAL, "%s: the %s is NULL", fn, sw == nullptr ? "waiter" : "callback");
    auto *w = new (sw->opaque) Waiter{}; // "every *_async call initialises *w"
    w->sem = s;
    w->n = n;
    if (try_take(s, n)) return 0;
    return queue_async(s, w, cb, ctx, fn);
}

int cancel(surelock_sem *s, surelock_waiter *sw, const char *fn)
{
    if (s == nullptr || sw == nullptr)
        return fail(EINVAL, "%s: the %s is NULL", fn, s == nullptr ? "semaphore" : "waiter");
    auto *w = reinterpret_cast<Waiter *>(sw->opaque);
    s->queue_lock.lock();
    SURELOCK_STEP(&w->state);
    uint32_t state = w->state.load(std::memory_order_acquire);
    if (w->sem != s || w->delivery == nullptr || state == IDLE) {
        s->queue_lock.unlock();
        return fail(EINVAL, "%s: the waiter is not queued on this semaphore", fn);
    }
    if (state == GRANTED) {
        s->queue_lock.unlock();
        return fail(EALREADY, "%s: already granted; the caller holds the permits", fn);
    }
    if (state == CANCELED) {
        s->queue_lock.unlock();
        return fail(ECANCELED, "%s: the semaphore was shut down; no permits held", fn);
    }
    unlink_waiter(s, w);
    w->state.store(IDLE, std::memory_order_relaxed);
    Delivery *never = w->delivery;
    grant_and_unlock(s); // the head may have been holding back smaller requests
    Delivery::discard(never);
    return 0;
}

int release(surelock_sem *s, uint64_t n, const char *fn)
{
    if (s == nullptr) return fail(EINVAL, "%s: the semaphore is NULL", fn);
    if (n == 0 || n > SURELOCK_SEM_MAX)
        return fail(EINVAL, "%s: releasing %llu permits; valid is 1..%llu", fn,
                    (unsigned long long)n, (unsigned long long)SURELOCK_SEM_MAX);
    bool locked = false;
    SURELOCK_STEP(&s->word);
    uint64_t word = s->word.load(std::memory_order_relaxed);
    for (;;) {
        if (permits_of(word) > SURELOCK_SEM_MAX - n) {
            if (locked) s->queue_lock.unlock();
            return fail(EAGAIN, "%s: %llu + %llu permits would exceed SURELOCK_SEM_MAX", fn,
                        (unsigned long long)permits_of(word), (unsigned long long)n);
        }
        SURELOCK_STEP(&s->word);
        if (!(word & QUEUED)) {
            if (s->word.compare_exchange_weak(word, word + as_permits(n),
                                              std::memory_order_release,
                                              std::memory_order_relaxed)) {
                if (locked) s->queue_lock.unlock();
                return 0;
            }
            continue;
        }
        if (!locked) { // waiters: hand over under the queue lock
            s->queue_lock.lock();
            locked = true;
            word = s->word.load(std::memory_order_relaxed);
            continue;
        }
        SURELOCK_STEP(&s->word);
        s->word.fetch_add(as_permits(n), std::memory_order_release);
        grant_and_unlock(s);
        return 0;
    }
}

void init(surelock_sem *s, uint64_t permits)
{
    s->word.store(as_permits(permits), std::memory_order_relaxed);
}

} // namespace

extern "C" {

SURELOCK_API int surelock_sem_new(uint64_t permits, surelock_sem **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_sem_new: out is NULL");
    if (permits > SURELOCK_SEM_MAX)
        return fail(EINVAL, "surelock_sem_new: %llu permits is above SURELOCK_SEM_MAX",
                    (unsigned long long)permits);
    auto *s = create<surelock_sem>();
    if (s == nullptr) return fail(ENOMEM, "surelock_sem_new: out of memory");
    init(s, permits);
    *out = s;
    return 0;
}

SURELOCK_API int surelock_sem_free(surelock_sem *s)
{
    if (s == nullptr) return fail(EINVAL, "surelock_sem_free: the semaphore is NULL");
    s->queue_lock.lock();
    uint64_t queued = s->queued;
    s->queue_lock.unlock();
    if (queued != 0)
        return fail(EBUSY, "surelock_sem_free: %llu waiter(s) queued; nothing freed",
                    (unsigned long long)queued);
    destroy(s);
    return 0;
}

SURELOCK_API int surelock_sem_acquire(surelock_sem *s, uint64_t n)
{
    return acquire_blocking(s, n, SURELOCK_FOREVER, "surelock_sem_acquire");
}

SURELOCK_API int surelock_sem_tryacquire(surelock_sem *s, uint64_t n)
{
    const char *fn = "surelock_sem_tryacquire";
    int rc = check_request(s, n, fn);
    if (rc != 0) return rc;
    if (try_take(s, n)) return 0;
    uint64_t word = s->word.load(std::memory_order_relaxed);
    if (word & SHUT_DOWN) return shut_down_error(fn);
    if (word & QUEUED) return fail(EBUSY, "%s: waiters are queued ahead (strict FIFO)", fn);
    return fail(EBUSY, "%s: %llu permit(s) available, %llu asked for", fn,
                (unsigned long long)permits_of(word), (unsigned long long)n);
}

SURELOCK_API int surelock_sem_timedacquire(surelock_sem *s, uint64_t n, uint64_t timeout_ns)
{
    return acquire_blocking(s, n, timeout_ns, "surelock_sem_timedacquire");
}

SURELOCK_API int surelock_sem_acquire_async(surelock_sem *s, uint64_t n, surelock_waiter *w,
                                            surelock_wake_fn fn, void *ctx)
{
    return acquire_async(s, n, w, fn, ctx, "surelock_sem_acquire_async");
}

SURELOCK_API int surelock_sem_cancel(surelock_sem *s, surelock_waiter *w)
{
    return cancel(s, w, "surelock_sem_cancel");
}

SURELOCK_API int surelock_sem_release(surelock_sem *s, uint64_t n)
{
    return release(s, n, "surelock_sem_release");
}

SURELOCK_API int surelock_sem_shutdown(surelock_sem *s)
{
    if (s == nullptr) return fail(EINVAL, "surelock_sem_shutdown: the semaphore is NULL");
    s->queue_lock.lock();
    SURELOCK_STEP(&s->word);
    s->word.fetch_or(SHUT_DOWN, std::memory_order_relaxed);
    cancel_all_and_unlock(s);
    return 0;
}

SURELOCK_API uint64_t surelock_sem_available(const surelock_sem *s)
{
    return s == nullptr ? 0 : permits_of(s->word.load(std::memory_order_relaxed));
}

SURELOCK_API int surelock_amutex_new(surelock_amutex **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_amutex_new: out is NULL");
    auto *m = create<surelock_amutex>();
    if (m == nullptr) return fail(ENOMEM, "surelock_amutex_new: out of memory");
    init(&m->sem, 1);
    *out = m;
    return 0;
}

SURELOCK_API int surelock_amutex_free(surelock_amutex *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_free: the mutex is NULL");
    // Under the queue lock, like sem_free: an unlock that handed the mutex over may still be
    // finishing its hold of that lock when the new holder unlocks and frees.
    m->sem.queue_lock.lock();
    SURELOCK_STEP(&m->sem.word);
    bool locked = permits_of(m->sem.word.load(std::memory_order_acquire)) == 0 || m->sem.queued;
    m->sem.queue_lock.unlock();
    if (locked) return fail(EBUSY, "surelock_amutex_free: the mutex is locked; nothing freed");
    destroy(m);
    return 0;
}

SURELOCK_API int surelock_amutex_lock(surelock_amutex *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_lock: the mutex is NULL");
    return acquire_blocking(&m->sem, 1, SURELOCK_FOREVER, "surelock_amutex_lock");
}

SURELOCK_API int surelock_amutex_trylock(surelock_amutex *m)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_trylock: the mutex is NULL");
    if (try_take(&m->sem, 1)) return 0;
    return fail(EBUSY, "surelock_amutex_trylock: the mutex is locked");
}

SURELOCK_API int surelock_amutex_timedlock(surelock_amutex *m, uint64_t timeout_ns)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_timedlock: the mutex is NULL");
    return acquire_blocking(&m->sem, 1, timeout_ns, "surelock_amutex_timedlock");
}

SURELOCK_API int surelock_amutex_lock_async(surelock_amutex *m, surelock_waiter *w,
                                            surelock_wake_fn fn, void *ctx)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_lock_async: the mutex is NULL");
    return acquire_async(&m->sem, 1, w, fn, ctx, "surelock_amutex_lock_async");
}

SURELOCK_API int surelock_amutex_cancel(surelock_amutex *m, surelock_waiter *w)
{
    if (m == nullptr) return fail(EINVAL, "surelock_amutex_cancel: the mutex is NULL");
    return cancel(&m->sem, w, "surelock_amutex_cancel");
}

SURELOCK_API int surelock_amutex_unlock(surelock_amutex *m)
{
    const char *fn = "surelock_amutex_unlock";
    if (m == nullptr) return fail(EINVAL, "%s: the mutex is NULL", fn);
    surelock_sem *s = &m->sem;
    SURELOCK_STEP(&s->word);
    uint64_t word = s->word.load(std::memory_order_relaxed);
    // Fast path: free it with one CAS while nobody queues; 1 permit means it was not locked.
    while (!(word & QUEUED)) {
        if (permits_of(word) != 0) return fail(EPERM, "%s: the mutex is not locked", fn);
        SURELOCK_STEP(&s->word);
        if (s->word.compare_exchange_weak(word, word + as_permits(1), std::memory_order_release,
                                          std::memory_order_relaxed))
            return 0;
    }
    // Waiters are queued, so the permit is 0 (every grant keeps it so): hand it over.
    return release(s, 1, fn);
}

} // extern "C"
