#include "sys/alloc.h"

#include <stdlib.h>
#include <string.h>

#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#include <atomic>
#endif

namespace surelock::sys {

#ifdef SURELOCK_TESTING
namespace {
// Number of allocations that may still succeed before one fails; negative = no limit.
std::atomic<long> allocations_left{-1};
} // namespace
#endif

void *allocate(size_t size, size_t align)
{
#ifdef SURELOCK_TESTING
    // Counts down to the one allocation that fails; it then lands on -1 (no limit).
    long left = allocations_left.load(std::memory_order_relaxed);
    while (left >= 0 && !allocations_left.compare_exchange_weak(left, left - 1)) {
    }
    if (left == 0) return nullptr;
#endif
    if (align < sizeof(void *)) align = sizeof(void *);
    void *p = nullptr;
    if (posix_memalign(&p, align, size) != 0) return nullptr;
    memset(p, 0, size);
#ifdef SURELOCK_TESTING
    surelock_testing_allocated(p); // a thread that dies under the explorer releases it
#endif
    return p;
}

#ifdef SURELOCK_TESTING
bool allocation_failure_armed()
{
    return allocations_left.load(std::memory_order_relaxed) >= 0;
}
#endif

void deallocate(void *p)
{
#ifdef SURELOCK_TESTING
    // Under the interleaving explorer, freed memory is poisoned and kept out of reuse until
    // the schedule ends, so a later step on it is caught (sys/interleave.cc).
    if (surelock_testing_quarantine(p)) return;
#endif
    free(p);
}

} // namespace surelock::sys

#ifdef SURELOCK_TESTING
extern "C" void surelock_testing_fail_allocation_after(long successes)
{
    surelock::sys::allocations_left.store(successes, std::memory_order_relaxed);
}
#endif
