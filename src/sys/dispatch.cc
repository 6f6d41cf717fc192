// The thread's queue of callbacks (see dispatch.h).
#include "sys/dispatch.h"

#include "sys/alloc.h"
#include "sys/errmsg.h"

namespace surelock::sys {

namespace {
// The queue the outermost pass on this thread is running, or nullptr outside any callback.
__thread DispatchQueue *running_queue;
} // namespace

Delivery *Delivery::make(DeliveryFn fn, void *ctx)
{
    auto *d = create<Delivery>();
    if (d != nullptr) {
        d->fn = fn;
        d->ctx = ctx;
    }
    return d;
}

void Delivery::discard(Delivery *d)
{
    if (d != nullptr) destroy(d);
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
        destroy(node);
        ErrmsgSnapshot keep_errmsg; // the releasing thread's errmsg survives the callback
        d.fn(d.ctx, d.status);
    }
    running_queue = nullptr;
}

} // namespace surelock::sys
