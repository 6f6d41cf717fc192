// Internal view of the async FIFO semaphore (and the amutex, a semaphore of one permit),
// shared by sem.cc (the permit word: acquire, release, cancel, shutdown and the C entry
// points) and sem_queue.cc (the FIFO of waiters and the settling pass that serves it).
//
// The permit count and two flags share one atomic word: QUEUED (the waiter queue is not
// empty) and SHUT_DOWN. While QUEUED is clear, acquire and release are a single
// compare-and-swap on that word. Once anyone queues, every acquire and release goes through
// the queue lock, so nobody overtakes a queued waiter.
#pragma once

#include <atomic>
#include <stdint.h>

#include "surelock.h"
#include "sys/dispatch.h"
#include "sys/futex_lock.h"

namespace surelock::sem {

constexpr uint64_t QUEUED = 1;
constexpr uint64_t SHUT_DOWN = 2;
constexpr int permit_shift = 2;

inline uint64_t permits_of(uint64_t word) { return word >> permit_shift; }
inline uint64_t as_permits(uint64_t n) { return n << permit_shift; }

// A waiter's state. SLEEPING: a blocking waiter that stopped spinning and sleeps (or is about
// to) on its state; only those get a futex wake when settled.
enum : uint32_t { IDLE = 0, WAITING = 1, GRANTED = 2, CANCELED = 3, SLEEPING = 4 };

// A queued request, in caller storage: surelock_waiter for the async forms, the stack for
// blocking ones. So queuing allocates nothing but an async waiter's delivery node.
struct Waiter {
    Waiter *next;
    Waiter *prev;
    surelock_sem *sem; // what it waits on: cancel's "not queued here" check
    // An async waiter's callback, allocated when it queued, so that granting it never needs
    // memory; nullptr for a blocking waiter (which sleeps on `state`).
    sys::Delivery *delivery;
    uint64_t n;
    std::atomic<uint32_t> state;
};

static_assert(sizeof(Waiter) <= SURELOCK_WAITER_SIZE, "a waiter must fit surelock_waiter");
static_assert(alignof(Waiter) <= 16, "surelock_waiter is 16-byte aligned");

// ---- The queue (sem_queue.cc); every function here runs with queue_lock held ----

// Joins the tail of the queue as WAITING (the caller has set QUEUED).
void enqueue(surelock_sem *s, Waiter *w);
// Leaves the queue (a timed-out or cancelled waiter); clears QUEUED when it empties.
void unlink_waiter(surelock_sem *s, Waiter *w);
// Hands available permits to the head of the queue, in order, while its request fits (after
// shutdown, none: the waiters are cancelled); drops the lock, then wakes and calls back the
// waiters it served. After the last callback the semaphore is not touched again.
void grant_and_unlock(surelock_sem *s);
// Cancels every queued waiter (shutdown), then as grant_and_unlock.
void cancel_all_and_unlock(surelock_sem *s);

} // namespace surelock::sem

struct surelock_sem {
    alignas(64) std::atomic<uint64_t> word{0};
    surelock::sys::FutexLock queue_lock;
    surelock::sem::Waiter *head = nullptr;
    surelock::sem::Waiter *tail = nullptr;
    uint64_t queued = 0; // number of waiters, for free's EBUSY
};

struct surelock_amutex {
    surelock_sem sem;
};
