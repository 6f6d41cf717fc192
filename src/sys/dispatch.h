// Callbacks run one after another on the calling thread, once no internal lock is held.
//
// One release may grant many async waiters (sem.cc), and each grant's callback may release
// again: an event loop's task that hands its lock on, or takes it again at once. Callbacks
// must run with no internal lock held and must not nest, or a chain of callbacks that each
// release would grow the stack one level per link. So a settling pass only queues each
// callback here, under its lock; after dropping the lock, the outermost pass on the thread runs
// the thread's queue in order, and a pass made from inside a callback adds to that same queue
// and returns.
//
// A grant must never fail, so queuing a callback needs no memory: its node is allocated when
// the waiter joins the semaphore's queue (the one point that may still say ENOMEM), and given
// back just before the callback runs (to a short per-thread list of spare nodes, so the next
// waiter this thread queues needs no allocation). The thread's queue is a list through those
// nodes, headed in thread-local storage, so not even a thread record (which could fail to be
// allocated) is needed.
#pragma once

namespace surelock::sys {

using DeliveryFn = void (*)(void *ctx, int status);

// One call to come of fn(ctx, status).
struct Delivery {
    Delivery *next;
    DeliveryFn fn;
    void *ctx;
    int status;

    // A node for a later call of fn(ctx, ...), or nullptr when out of memory.
    static Delivery *make(DeliveryFn fn, void *ctx);
    // Frees a node that will never be delivered (its waiter never queued, or left the queue);
    // nullptr is ignored.
    static void discard(Delivery *d);
};

// A settling pass's handle on the thread's queue: make one before settling, add() the
// deliveries (under any lock: it only links nodes), drop the locks, then run().
class DispatchQueue {
public:
    DispatchQueue();
    DispatchQueue(const DispatchQueue &) = delete;
    DispatchQueue &operator=(const DispatchQueue &) = delete;

    // Queues d to be called with `status` after everything queued before it on this thread.
    void add(Delivery *d, int status);
    // In the outermost pass on this thread: calls every queued delivery in order, including
    // those that callbacks add meanwhile, each node given back before its call and the thread's
    // errmsg kept across it. Inside a callback: returns at once (the outermost pass runs
    // them once the current callback returns).
    void run();

private:
    struct DispatchThread *thread_; // the calling thread's queue (dispatch.cc)
    bool outermost_;                // no pass was running it when this one began
};

} // namespace surelock::sys
