// The thread's queue of callbacks (see dispatch.h).
#include "sys/dispatch.h"

#include "sys/alloc.h"
#include "sys/errmsg.h"
#ifdef SURELOCK_TESTING
#include "sys/interleave.h"
#endif

#include <pthread.h>
#include <stdint.h>

namespace surelock::sys {

// One thread-local block, so a function reaches all of it through one TLS address lookup
// (a __tls_get_addr call each in a shared library).
struct DispatchThread {
    // The thread's queue of callbacks to run, kept here rather than on a pass's stack: a
    // callback that ends its thread (pthread_exit, cancellation: forbidden by the contract,
    // but possible) then leaves no pointer into a dead stack frame behind, only a pass marked
    // running that never finishes. The spare key's destructor (below) runs what was left.
    Delivery *queue_head;
    Delivery **queue_tail; // &the last node's next, while queue_head is not nullptr
    bool dispatching;      // an outermost pass runs the queue on this thread

    // Nodes this thread freed, kept for its next waiters: every contended async acquire needs
    // one, and a list pop is a fraction of malloc and free (an event loop's thread both queues
    // and grants, so the list stays short and warm). Capped, because a thread that only
    // grants collects other threads' nodes; freed at thread exit by a key destructor.
    Delivery *spare_nodes;
    unsigned spare_count;
    // 0: this thread has not kept a node yet; 1: its exit will free the list; 2: it keeps
    // none (no key or no slot for it, or its list was freed at exit and other exit handlers
    // still run: they would leave nodes nobody frees).
    uint8_t spare_state;
};
namespace {
__thread DispatchThread per_thread;
constexpr unsigned spare_cap = 32;
pthread_key_t spare_key;
pthread_once_t spare_key_once = PTHREAD_ONCE_INIT;
bool spare_key_made;

void run_queue(DispatchThread &t);

void free_spare_nodes(void *)
{
    DispatchThread &t = per_thread;
    // A pass cut short by a callback that ended the thread: deliver what it left (grants that
    // other waiters are owed) before the thread is gone.
    if (t.dispatching) {
        // Armed again first: should one of these callbacks end the thread too, glibc restarts
        // the destructors and this one comes back for the rest.
        pthread_setspecific(spare_key, &t.spare_nodes);
        t.dispatching = false;
        run_queue(t);
        pthread_setspecific(spare_key, nullptr);
    }
    while (Delivery *d = t.spare_nodes) {
        t.spare_nodes = d->next;
        destroy(d);
    }
    t.spare_count = 0;
    t.spare_state = 2;
}

void make_spare_key()
{
    spare_key_made = pthread_key_create(&spare_key, free_spare_nodes) == 0;
}

// Keeps d for this thread's next make(), or frees it.
void recycle(DispatchThread &t, Delivery *d)
{
#ifdef SURELOCK_TESTING
    if (surelock_testing_scheduled()) { // the explorer's quarantine must see every free
        destroy(d);
        return;
    }
#endif
    if (__builtin_expect(t.spare_state == 0, 0)) {
        pthread_once(&spare_key_once, make_spare_key);
        // Any non-null value: the key's destructor runs only for those.
        bool armed = spare_key_made && pthread_setspecific(spare_key, &t.spare_nodes) == 0;
        t.spare_state = armed ? 1 : 2;
    }
    if (t.spare_state != 1 || t.spare_count == spare_cap) {
        destroy(d);
        return;
    }
    d->next = t.spare_nodes;
    t.spare_nodes = d;
    t.spare_count++;
}
} // namespace

Delivery *Delivery::make(DeliveryFn fn, void *ctx)
{
    DispatchThread &t = per_thread;
    Delivery *d = t.spare_nodes;
#ifdef SURELOCK_TESTING
    if (allocation_failure_armed()) d = nullptr; // a test asks for the allocation's failure
#endif
    if (d != nullptr) {
        t.spare_nodes = d->next;
        t.spare_count--;
    } else {
        d = create<Delivery>();
        if (d == nullptr) return nullptr;
    }
    d->fn = fn;
    d->ctx = ctx;
    return d;
}

void Delivery::discard(Delivery *d)
{
    if (d != nullptr) recycle(per_thread, d);
}

namespace {
// Calls every queued delivery in order, including those callbacks add meanwhile.
void run_queue(DispatchThread &t)
{
    t.dispatching = true;
    while (Delivery *node = t.queue_head) {
        t.queue_head = node->next;
        Delivery d = *node;
        recycle(t, node);
        ErrmsgSnapshot keep_errmsg; // the releasing thread's errmsg survives the callback
        d.fn(d.ctx, d.status);
    }
    t.dispatching = false;
}
} // namespace

DispatchQueue::DispatchQueue() : thread_(&per_thread), outermost_(!thread_->dispatching) {}

void DispatchQueue::add(Delivery *d, int status)
{
    DispatchThread &t = *thread_;
    d->status = status;
    d->next = nullptr;
    if (t.queue_head == nullptr) t.queue_head = d;
    else *t.queue_tail = d;
    t.queue_tail = &d->next;
}

void DispatchQueue::run()
{
    if (outermost_ && thread_->queue_head != nullptr) run_queue(*thread_);
}

} // namespace surelock::sys
