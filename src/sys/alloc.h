// Allocation for library objects: failure is ENOMEM for the caller, never an abort or a throw
// (the library does not link libstdc++, so no operator new). Test builds can make allocations
// fail on demand, so every ENOMEM path can be provoked.
#pragma once

#include <new>
#include <stddef.h>

namespace surelock::sys {

// Zeroed memory aligned to `align` (a power of two), or nullptr.
void *allocate(size_t size, size_t align);
void deallocate(void *p);

#ifdef SURELOCK_TESTING
// Whether a test has armed allocation failure: caches of freed objects (dispatch.cc) then
// allocate afresh, so the failure a test asks for still comes.
bool allocation_failure_armed();
#endif

// Constructs a T in fresh memory; nullptr when out of memory.
template <class T, class... Args> T *create(Args &&...args)
{
    void *p = allocate(sizeof(T), alignof(T));
    return p ? new (p) T(static_cast<Args &&>(args)...) : nullptr;
}

template <class T> void destroy(T *obj)
{
    obj->~T();
    deallocate(obj);
}

} // namespace surelock::sys
