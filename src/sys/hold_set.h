// The set of locks a thread holds in a shared mode (rwlock read holds), keyed by the lock's
// address: "does this thread already hold it?" and "drop this hold" in O(1) whatever else the
// thread holds (a walk of the held list made a read lock cost microseconds with a thousand
// locks held). Open addressing with linear probing and backward-shift deletion, at most half
// full; one 64-byte table until the thread holds more than four at once. Only the owning
// thread touches it (and its thread-exit destructor, which drains it).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace surelock::sys {

struct HoldSet {
    const void **slots = nullptr; // nullptr until the first hold
    uint32_t mask = 0;            // capacity - 1
    uint32_t count = 0;
    // Called for every hold still in the set when the thread exits (set by the first insert).
    void (*owner_exited)(const void *key) = nullptr;

    bool contains(const void *key) const
    {
        uint32_t slot;
        return slots != nullptr && find(key, &slot);
    }

    // Whether one more key fits without growing (then find() and fill() are the whole insert).
    bool has_room_for_one() const { return slots != nullptr && 2 * (count + 1) <= mask + 1; }

    // With a table: true if key is in the set; otherwise *slot is where it would go.
    bool find(const void *key, uint32_t *slot) const
    {
        for (uint32_t i = home(key);; i = (i + 1) & mask) {
            if (slots[i] == key) return true;
            if (slots[i] == nullptr) {
                *slot = i;
                return false;
            }
        }
    }

    // Puts key where find() said it would go (no growth, nothing in between).
    void fill(uint32_t slot, const void *key, void (*on_exit)(const void *))
    {
        owner_exited = on_exit;
        slots[slot] = key;
        count++;
    }

    // Makes room for one more key first, so the insert that follows a successful reserve
    // cannot fail. False when out of memory (the set is unchanged).
    bool reserve_one()
    {
        if (__builtin_expect(has_room_for_one(), 1)) return true;
        return grow();
    }

    // After reserve_one(); the key is not in the set.
    void insert(const void *key, void (*on_exit)(const void *))
    {
        uint32_t slot = 0;
        find(key, &slot);
        fill(slot, key, on_exit);
    }

    // Removes key; false if it was not in the set.
    bool erase(const void *key)
    {
        if (slots == nullptr) return false;
        uint32_t i = home(key);
        for (;; i = (i + 1) & mask) {
            if (slots[i] == key) break;
            if (slots[i] == nullptr) return false;
        }
        // Backward shift: pull later keys of the same probe run into the hole, so lookups
        // never need tombstones.
        for (uint32_t j = (i + 1) & mask; slots[j] != nullptr; j = (j + 1) & mask) {
            uint32_t k = home(slots[j]);
            bool k_in_hole_to_j = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (k_in_hole_to_j) continue;
            slots[i] = slots[j];
            i = j;
        }
        slots[i] = nullptr;
        count--;
        return true;
    }

    // Thread exit: hands every key to owner_exited, then frees the table.
    void drain();
    // Empties the set without releasing anything (a fork child's copy of another thread's).
    void forget();

private:
    uint32_t home(const void *key) const
    {
        // Locks are 64-byte aligned objects: mix the address so neighbours spread out.
        uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
        return (uint32_t)(h >> 40) & mask;
    }
    bool grow();
};

} // namespace surelock::sys
