#include "sys/hold_set.h"

#include "sys/alloc.h"

namespace surelock::sys {

bool HoldSet::grow()
{
    uint32_t capacity = slots == nullptr ? 8 : 2 * (mask + 1);
    if (capacity == 0) return false; // 2^32 holds: cannot happen (one per lock per thread)
    auto *fresh =
        static_cast<const void **>(allocate(capacity * sizeof(void *), alignof(void *)));
    if (fresh == nullptr) return false;
    const void **old = slots;
    uint32_t old_capacity = old == nullptr ? 0 : mask + 1;
    slots = fresh;
    mask = capacity - 1;
    for (uint32_t i = 0; i < old_capacity; i++) {
        if (old[i] == nullptr) continue;
        uint32_t j = home(old[i]);
        while (slots[j] != nullptr) j = (j + 1) & mask;
        slots[j] = old[i];
    }
    deallocate(old);
    return true;
}

// Both empty the set before freeing its table: a fork landing in between must not leave the
// child's copy pointing at a table that is already freed (it would be freed again).
void HoldSet::drain()
{
    const void **table = slots;
    uint32_t last = mask;
    if (table != nullptr)
        for (uint32_t i = 0; i <= last; i++)
            if (table[i] != nullptr) owner_exited(table[i]);
    slots = nullptr;
    mask = count = 0;
    deallocate(table);
}

void HoldSet::forget()
{
    const void **table = slots;
    slots = nullptr;
    mask = count = 0;
    deallocate(table);
}

} // namespace surelock::sys
