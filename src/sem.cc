// Async FIFO semaphore and mutex (API.md section 5).
//
// The permit count and two flags share one atomic word: QUEUED (the waiter queue is not
// empty) and SHUT_DOWN. While QUEUED is clear, acquire and release are a single
// compare-and-swap on that word. Once anyone queues, every acquire and release goes through
// the queue lock, so nobody overtakes a queued waiter: release adds its permits and hands
// them to the head of the queue, in order, as long as the head's request fits.
//
// The queue is intrusive: waiters live in caller storage (surelock_waiter for the async
// forms, the stack for blocking ones), so queuing allocates nothing. One hold of the queue
// lock makes every grant a release allows: each copies the callback and its context out of the
// waiter, marks the waiter granted, and appends the delivery to the releasing thread's
// dispatch queue. After the lock is dropped, the outermost dispatch on that thread runs the
// queue in order: callbacks, and wake-ups of blocking waiters (each sleeps on its own futex
// word). Callbacks that release again (a chain of waiters each unlocking at once) therefore do
// not recurse, and no callback ever sees a release half done. Only when the dispatch queue
// cannot grow (out of memory) is a delivery made directly, one at a time, the pass carrying
// on after it (free is EBUSY meanwhile).

#include <errno.h>
#include <limits.h>
#include <stddef.h>

#include <atomic>
#include <new>

#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/futex_lock.h"
#include "sys/thread.h"

using namespace surelock::sys;

namespace {

constexpr uint64_t QUEUED = 1;
constexpr uint64_t SHUT_DOWN = 2;
constexpr int permit_shift = 2;

uint64_t permits_of(uint64_t word) { return word >> permit_shift; }
uint64_t as_permits(uint64_t n) { return n << permit_shift; }

// SLEEPING: a blocking waiter that stopped spinning and sleeps (or is about to) on its state;
// only those get a futex wake when settled.
enum : uint32_t { IDLE = 0, WAITING = 1, GRANTED = 2, CANCELED = 3, SLEEPING = 4 };

struct Waiter {
    Waiter *next;
    Waiter *prev;
    surelock_sem *sem;   // what it waits on: cancel's "not queued here" check
    surelock_wake_fn fn; // nullptr for a blocking waiter (which sleeps on `state`)
    void *ctx;
    uint64_t n;
    std::atomic<uint32_t> state;
};

static_assert(sizeof(Waiter) <= SURELOCK_WAITER_SIZE, "a waiter must fit surelock_waiter");
static_assert(alignof(Waiter) <= 16, "surelock_waiter is 16-byte aligned");

// An async waiter's grant or cancellation, to deliver once the queue lock is dropped.
struct Delivery {
    surelock_wake_fn fn;
    void *ctx;
    int status; // 0 or ECANCELED
};

} // namespace

struct surelock_sem {
    alignas(64) std::atomic<uint64_t> word{0};
    FutexLock queue_lock;
    Waiter *head = nullptr;
    Waiter *tail = nullptr;
    uint64_t queued = 0; // number of waiters, for free's EBUSY
    // Settling passes that had to run a callback before finishing (out of memory for the
    // dispatch queue) and will lock the queue again afterwards: free is EBUSY meanwhile.
    uint32_t settling_after_callback = 0;
};

struct surelock_amutex {
    surelock_sem sem;
};

namespace {

// ---- The queue (queue_lock held) -------------------------------------------------------------

void enqueue(surelock_sem *s, Waiter *w)
{
    w->next = nullptr;
    w->prev = s->tail;
    if (s->tail != nullptr) s->tail->next = w;
    else s->head = w;
    s->tail = w;
    s->queued++;
}

void unlink_waiter(surelock_sem *s, Waiter *w)
{
    if (w->prev != nullptr) w->prev->next = w->next;
    else s->head = w->next;
    if (w->next != nullptr) w->next->prev = w->prev;
    else s->tail = w->prev;
    s->queued--;
    SURELOCK_STEP(&s->word);
    if (s->head == nullptr) s->word.fetch_and(~QUEUED, std::memory_order_relaxed);
}

// Blocking waiters settled in one pass, to wake once the queue lock is dropped (by address
// only: a waiter that sees its state may return and end its stack frame first; then the wake
// is a stray one). Past its capacity the rest are woken at once, under the lock.
struct Wakes {
    static constexpr int capacity = 16;
    std::atomic<uint32_t> *words[capacity];
    int count = 0;

    void add(std::atomic<uint32_t> *word)
    {
        if (count < capacity) words[count++] = word;
        else futex_wake(word, 1);
    }
    void run()
    {
        for (int i = 0; i < count; i++) futex_wake(words[i], 1);
        count = 0;
    }
};

// Moves w out of the queue with `state` (GRANTED or CANCELED). A blocking waiter's wake goes
// to *wakes (it needs nothing else, and must not wait behind callbacks that may block); for an
// async one, *d gets what to deliver and the result is true. After this the library never
// touches w again: fn and ctx are copied first, and a blocking waiter is woken by address
// only.
bool settle(surelock_sem *s, Waiter *w, uint32_t state, Delivery *d, Wakes *wakes)
{
    unlink_waiter(s, w);
    SURELOCK_STEP(&w->state);
    if (w->fn == nullptr) {
        // The exchange is the last touch of w; a waiter still spinning sees it without a
        // system call, one that announced its sleep gets a wake (after the lock is dropped).
        if (w->state.exchange(state, std::memory_order_release) == SLEEPING)
            wakes->add(&w->state);
        return false;
    }
    *d = Delivery{w->fn, w->ctx, state == GRANTED ? 0 : ECANCELED};
    w->state.store(state, std::memory_order_release);
    return true;
}

// ---- Delivering outside the lock -----------------------------------------------------------

// A thread's deliveries waiting for its outermost dispatch loop: a ring that grows as needed
// (one allocation, header and entries together, so thread exit frees it with one call).
struct DispatchQueue {
    size_t capacity;
    size_t first;
    size_t count;
    bool running;
    Delivery ring[];

    static DispatchQueue *make(size_t capacity)
    {
        auto *q = static_cast<DispatchQueue *>(
            allocate(sizeof(DispatchQueue) + capacity * sizeof(Delivery), alignof(DispatchQueue)));
        if (q != nullptr) q->capacity = capacity;
        return q;
    }
};

// Appends d to the thread's queue, growing it (the thread record keeps the new one). False
// when there is no record or no memory.
bool push(ThreadRecord *me, const Delivery &d)
{
    if (me == nullptr) return false;
    auto *q = static_cast<DispatchQueue *>(me->dispatch_queue);
    if (q == nullptr || q->count == q->capacity) {
        DispatchQueue *grown = DispatchQueue::make(q == nullptr ? 64 : q->capacity * 2);
        if (grown == nullptr) return false;
        if (q != nullptr) {
            for (size_t i = 0; i < q->count; i++)
                grown->ring[i] = q->ring[(q->first + i) % q->capacity];
            grown->count = q->count;
            grown->running = q->running;
            deallocate(q);
        }
        me->dispatch_queue = q = grown;
    }
    q->ring[(q->first + q->count++) % q->capacity] = d;
    return true;
}

void deliver(const Delivery &d)
{
    ErrmsgSnapshot keep_errmsg; // the releasing thread's errmsg survives the callback
    d.fn(d.ctx, d.status);
}

// Runs the thread's queued deliveries in order, unless an outer call on this thread is
// already doing so (then it runs them once the current callback returns).
void drain(ThreadRecord *me)
{
    auto *q = me != nullptr ? static_cast<DispatchQueue *>(me->dispatch_queue) : nullptr;
    if (q == nullptr || q->running) return;
    q->running = true;
    while (q->count != 0) {
        Delivery d = q->ring[q->first];
        q->first = (q->first + 1) % q->capacity;
        q->count--;
        deliver(d);
        q = static_cast<DispatchQueue *>(me->dispatch_queue); // a callback may have grown it
    }
    q->running = false;
}

// With the queue lock held: settles waiters from the head while `take` says so, queueing async
// deliveries on this thread; drops the lock, wakes the blocking waiters settled, and runs the
// deliveries. When the queue cannot take one (no thread record, or no memory to grow it) and
// `fits` says the waiter now at the head would be settled too, the pass goes on without
// memory: it marks the semaphore as still being settled (free is EBUSY meanwhile, so a
// callback cannot free it under us), drops the lock, runs what is queued and then that
// delivery directly, locks the queue again and carries on where it stopped. So every waiter
// `take` accepts is settled, in order, whatever allocation does; only the callbacks' timing
// differs (a callback may then run nested, and before later waiters are settled). When
// nothing more would be settled (the common case: an amutex hand-off, a last waiter), the
// pass ends as usual, before that delivery: later changes are served by the calls that make
// them. After the last callback the semaphore is not touched again: a callback may free it.
template <class Take, class Fits>
void settle_and_unlock(surelock_sem *s, uint32_t state, Take take, Fits fits)
{
    ThreadRecord *me = nullptr;
    bool looked_up = false; // the record is looked up (maybe created) only if something settles
    Wakes wakes;
    Delivery d;
    for (;;) {
        bool spilled = false;
        while (s->head != nullptr && take(s->head)) {
            if (!settle(s, s->head, state, &d, &wakes)) continue;
            if (!looked_up) {
                ErrmsgSnapshot keep_errmsg; // a failed lookup is no failure of this call
                me = current_thread();
                looked_up = true;
            }
            if (!push(me, d)) {
                spilled = true;
                break;
            }
        }
        bool resume = spilled && s->head != nullptr && fits(s->head);
        if (!resume) {
            s->queue_lock.unlock();
            wakes.run();
            drain(me);
            if (spilled) deliver(d);
            return;
        }
        s->settling_after_callback++;
        s->queue_lock.unlock();
        wakes.run();
        drain(me);
        deliver(d);
        s->queue_lock.lock();
        s->settling_after_callback--;
    }
}

// Hands available permits to the head of the queue, in order, while its request fits (never
// after shutdown: then the waiters are cancelled). QUEUED is set while anyone waits, so no
// lock-free path touches the word meanwhile.
void dispatch_and_unlock(surelock_sem *s)
{
    auto fits = [s](Waiter *head) {
        SURELOCK_STEP(&s->word);
        uint64_t word = s->word.load(std::memory_order_relaxed);
        return !(word & SHUT_DOWN) && permits_of(word) >= head->n;
    };
    settle_and_unlock(
        s, GRANTED,
        [s, fits](Waiter *head) {
            if (!fits(head)) return false;
            s->word.fetch_sub(as_permits(head->n), std::memory_order_acquire);
            return true;
        },
        fits);
}

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
// cannot slip in between). Returns 0 (taken), EINPROGRESS (queued) or ECANCELED.
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
        if (word & QUEUED) break;
        if (s->word.compare_exchange_weak(word, word | QUEUED, std::memory_order_relaxed)) break;
    }
    w->state.store(WAITING, std::memory_order_relaxed);
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
        dispatch_and_unlock(s);
        return fail(ETIMEDOUT, "%s: %llu permit(s) not granted within %llu ns", fn,
                    (unsigned long long)n, (unsigned long long)timeout_ns);
    }
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
    w->fn = cb;
    w->ctx = ctx;
    w->n = n;
    if (try_take(s, n)) return 0;
    s->queue_lock.lock();
    rc = take_or_enqueue_locked(s, n, w);
    s->queue_lock.unlock();
    if (rc == ECANCELED) return shut_down_error(fn);
    return rc; // 0 or EINPROGRESS
}

int cancel(surelock_sem *s, surelock_waiter *sw, const char *fn)
{
    if (s == nullptr || sw == nullptr)
        return fail(EINVAL, "%s: the %s is NULL", fn, s == nullptr ? "semaphore" : "waiter");
    auto *w = reinterpret_cast<Waiter *>(sw->opaque);
    s->queue_lock.lock();
    SURELOCK_STEP(&w->state);
    uint32_t state = w->state.load(std::memory_order_acquire);
    if (w->sem != s || w->fn == nullptr || state == IDLE) {
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
    dispatch_and_unlock(s); // the head may have been holding back smaller requests
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
        dispatch_and_unlock(s);
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
    bool settling = s->settling_after_callback != 0;
    s->queue_lock.unlock();
    if (queued != 0)
        return fail(EBUSY, "surelock_sem_free: %llu waiter(s) queued; nothing freed",
                    (unsigned long long)queued);
    if (settling)
        return fail(EBUSY, "surelock_sem_free: a release, cancel or shutdown is still handing "
                           "out permits or cancellations (out of memory); nothing freed");
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
    auto every = [](Waiter *) { return true; };
    settle_and_unlock(s, CANCELED, every, every);
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
    bool settling = m->sem.settling_after_callback != 0;
    m->sem.queue_lock.unlock();
    if (locked) return fail(EBUSY, "surelock_amutex_free: the mutex is locked; nothing freed");
    if (settling)
        return fail(EBUSY, "surelock_amutex_free: an unlock or cancel is still handing the mutex "
                           "over (out of memory); nothing freed");
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
