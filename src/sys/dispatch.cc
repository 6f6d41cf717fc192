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

namespace {
// The queue the outermost pass on this thread is running, or nullptr outside any callback.
__thread DispatchQueue *running_queue;

// Nodes this thread freed, kept for its next waiters: every contended async acquire needs one,
// and a list pop is a fraction of malloc and free (an event loop's thread both queues and
// grants, so the list stays short and warm). Capped, because a thread that only grants
// collects other threads' nodes; freed at thread exit by a key destructor.
constexpr unsigned spare_cap = 32;
__thread Delivery *spare_nodes;
__thread unsigned spare_count;
// 0: this thread has not kept a node yet; 1: its exit will free the list; 2: it keeps none
// (no key or no slot for it, or its list was freed at exit and other exit handlers still
// run: they would leave nodes nobody frees).
__thread uint8_t spare_state;
pthread_key_t spare_key;
pthread_once_t spare_key_once = PTHREAD_ONCE_INIT;
bool spare_key_made;

void free_spare_nodes(void *)
{
    while (Delivery *d = spare_nodes) {
        spare_nodes = d->next;
        destroy(d);
    }
    spare_count = 0;
    spare_state = 2;
}

void make_spare_key()
{
    spare_key_made = pthread_key_create(&spare_key, free_spare_nodes) == 0;
}

// Keeps d for this thread's next make(), or frees it.
void recycle(Delivery *d)
{
#ifdef SURELOCK_TESTING
    if (surelock_testing_scheduled()) { // the explorer's quarantine must see every free
        destroy(d);
        return;
    }
#endif
    if (__builtin_expect(spare_state == 0, 0)) {
        pthread_once(&spare_key_once, make_spare_key);
        // Any non-null value: the key's destructor runs only for those.
        bool armed = spare_key_made && pthread_setspecific(spare_key, &spare_nodes) == 0;
        spare_state = armed ? 1 : 2;
    }
    if (spare_state != 1 || spare_count == spare_cap) {
        destroy(d);
        return;
    }
    d->next = spare_nodes;
    spare_nodes = d;
    spare_count++;
}
} // namespace

Delivery *Delivery::make(DeliveryFn fn, void *ctx)
{
    Delivery *d = spare_nodes;
#ifdef SURELOCK_TESTING
    if (allocation_failure_armed()) d = nullptr; // a test asks for the allocation's failure
#endif
    if (d != nullptr) {
        spare_nodes = d->next;
        spare_count--;
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
    if (d != nullptr) recycle(d);
}

DispatchQueue::DispatchQueue() : target_(running_queue != nullptr ? running_queue : this) {}

void DispatchQueue::add(Delivery *d, int status)
{
    d->status = status;
    d->next = nullptr;
    *target_->tail_ = d;
    target_->tail_ = &d->next;
}

void DispatchQueue::run()
{
    if (target_ != this) return;
    running_queue = this;
    while (Delivery *node = head_) {
        head_ = node->next;
        if (head_ == nullptr) tail_ = &head_;
        Delivery d = *node;
        recycle(node);
        ErrmsgSnapshot keep_errmsg; // the releasing thread's errmsg survives the callback
        d.fn(d.ctx, d.status);
    }
    running_queue = nullptr;
}

} // namespace surelock::sys
