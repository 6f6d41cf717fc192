// The semaphore's FIFO of waiters and the settling pass that serves it (see sem.h).
//
// The queue is intrusive: waiters live in caller storage. One hold of the queue lock makes
// every grant a release allows: each marks the waiter granted (the library never touches it
// again) and queues its callback on the releasing thread (sys/dispatch.h), or notes the
// blocking waiter to wake. After the lock is dropped, the blocking waiters are woken (each
// sleeps on its own futex word) and the outermost dispatch on the thread runs the callbacks in
// order. Callbacks that release again (a chain of waiters each unlocking at once) therefore do
// not recurse, and no callback ever sees a release half done. Nothing here allocates: an async
// waiter brought its delivery node when it queued, so a grant cannot fail.
#include <errno.h>

#include "sem.h"
#include "sys/futex.h"

using namespace surelock::sys;

namespace surelock::sem {

void enqueue(surelock_sem *s, Waiter *w)
{
    w->state.store(WAITING, std::memory_order_relaxed);
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

namespace {

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
// to *wakes (it needs nothing else, and must not wait behind callbacks that may block); an
// async one's callback to *deliveries. After this the library never touches w again: its
// delivery is read first, and a blocking waiter is woken by address only.
void settle(surelock_sem *s, Waiter *w, uint32_t state, DispatchQueue *deliveries, Wakes *wakes)
{
    unlink_waiter(s, w);
    SURELOCK_STEP(&w->state);
    Delivery *d = w->delivery;
    if (d == nullptr) {
        // The exchange is the last touch of w; a waiter still spinning sees it without a
        // system call, one that announced its sleep gets a wake (after the lock is dropped).
        if (w->state.exchange(state, std::memory_order_release) == SLEEPING)
            wakes->add(&w->state);
        return;
    }
    w->state.store(state, std::memory_order_release);
    deliveries->add(d, state == GRANTED ? 0 : ECANCELED);
}

// Settles waiters from the head while `take` says so, drops the lock, wakes the blocking
// waiters settled and runs the callbacks (or leaves them to the outermost dispatch on this
// thread, when called from a callback).
template <class Take> void settle_and_unlock(surelock_sem *s, uint32_t state, Take take)
{
    Wakes wakes;
    DispatchQueue deliveries;
    while (s->head != nullptr && take(s->head)) settle(s, s->head, state, &deliveries, &wakes);
    s->queue_lock.unlock();
    wakes.run();
    deliveries.run();
}

} // namespace

// QUEUED is set while anyone waits, so no lock-free path touches the word meanwhile.
void grant_and_unlock(surelock_sem *s)
{
    settle_and_unlock(s, GRANTED, [s](Waiter *head) {
        SURELOCK_STEP(&s->word);
        uint64_t word = s->word.load(std::memory_order_relaxed);
        if ((word & SHUT_DOWN) || permits_of(word) < head->n) return false;
        s->word.fetch_sub(as_permits(head->n), std::memory_order_acquire);
        return true;
    });
}

void cancel_all_and_unlock(surelock_sem *s)
{
    settle_and_unlock(s, CANCELED, [](Waiter *) { return true; });
}

} // namespace surelock::sem
