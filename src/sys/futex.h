// Futex wait/wake and CLOCK_MONOTONIC deadlines: the only way surelock blocks a thread.
#pragma once

#include <atomic>
#include <stdint.h>
#include <time.h>

#include "sys/interleave.h" // SURELOCK_STEP, for every protocol built on these calls

namespace surelock::sys {

// An absolute point on CLOCK_MONOTONIC, or none (a wait without end). Wall-clock jumps change
// nothing.
struct Deadline {
    bool never_ends;
    struct timespec at;

    // now + timeout_ns; a timeout of UINT64_MAX (SURELOCK_FOREVER) or one whose deadline
    // would overflow never ends.
    static Deadline after(uint64_t timeout_ns);
    static Deadline forever() { return Deadline{true, {0, 0}}; }
    // The point monotonic_ns() reads as ns (never ending if time_t cannot hold it).
    static Deadline at_monotonic_ns(uint64_t ns);
    // Nanoseconds left (0 once passed; UINT64_MAX when it never ends).
    uint64_t remaining_ns() const;
};

// Now on CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call): the clock of the
// time-bounded spins that come before some sleeps.
uint64_t monotonic_ns();

// How long an acquire may wait: try once (EBUSY if the lock is taken), or until a deadline
// (ETIMEDOUT if it passes first; a timeout of 0 never sleeps and is ETIMEDOUT too, API.md).
// The public entry point decides it once, or a lock group once for all its members. The
// deadline is read off the clock only by a wait that has to sleep (an uncontended acquire
// never reads the clock), or up front by a group, whose members then share it. Two words,
// passed by value in registers: a fast path never builds it in memory.
class Wait {
public:
    static Wait try_once() { return Wait(0, true); }
    // timeout_ns as the public calls take it: SURELOCK_FOREVER (UINT64_MAX) never ends.
    static Wait within(uint64_t timeout_ns) { return Wait(timeout_ns, false); }
    static Wait forever() { return Wait(UINT64_MAX, false); }

    bool is_try_once() const { return try_once_; }
    bool is_forever() const { return !try_once_ && timeout_ns_ == UINT64_MAX; }
    // The timeout asked for (for messages).
    uint64_t timeout_ns() const { return timeout_ns_; }
    // A timed wait with no time left to sleep: timeout 0, or a deadline fixed earlier (by a
    // group, before its first member) that has passed.
    bool is_spent() const
    {
        return timeout_ns_ == 0 || (deadline_fixed_ && monotonic_ns() >= deadline_ns_);
    }
    // Fixes the deadline now (one clock read, none for a wait without end): a lock group
    // counts its timeout from the call, not from the first member that has to wait.
    void start_clock()
    {
        if (try_once_ || timeout_ns_ == 0 || timeout_ns_ == UINT64_MAX || deadline_fixed_) return;
        uint64_t now = monotonic_ns();
        deadline_ns_ = timeout_ns_ < latest - now ? now + timeout_ns_ : latest;
        deadline_fixed_ = true;
    }
    // The deadline to sleep until (fixed first if it was not).
    Deadline deadline()
    {
        if (timeout_ns_ == UINT64_MAX) return Deadline::forever();
        start_clock();
        return Deadline::at_monotonic_ns(deadline_ns_);
    }

private:
    static constexpr uint64_t latest = (1ull << 62) - 1; // 146 years of uptime
    Wait(uint64_t timeout_ns, bool try_once)
        : timeout_ns_(timeout_ns), deadline_ns_(0), deadline_fixed_(false), try_once_(try_once)
    {
    }
    uint64_t timeout_ns_;
    uint64_t deadline_ns_ : 62; // on CLOCK_MONOTONIC, once fixed (saturated at `latest`)
    uint64_t deadline_fixed_ : 1;
    uint64_t try_once_ : 1;
};
static_assert(sizeof(Wait) == 16, "two words: passed in registers");


// One pause of a spin-wait loop (lets the sibling hyper-thread run, saves power).
inline void cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Sleeps while *word == expected, until woken or the deadline passes.
// Returns 0 (woken, or spuriously), EAGAIN (*word != expected), EINTR, or ETIMEDOUT.
// `shared` selects process-shared futexes (memory mapped in several processes).
// `bits` tags the sleeper so futex_wake can pick a class of sleepers on one word (e.g. the
// rwlock's readers and writers); all bits by default.
int futex_wait(std::atomic<uint32_t> *word, uint32_t expected, const Deadline &deadline,
               bool shared = false, uint32_t bits = ~0u);

// Wakes up to `count` threads sleeping on word and returns how many it woke. Safe on memory
// that has since been freed or reused: the kernel only looks the address up, and a stray
// wake-up is a spurious one.
// Only sleepers whose tag shares a bit with `bits` are woken.
int futex_wake(std::atomic<uint32_t> *word, int count, bool shared = false, uint32_t bits = ~0u);

} // namespace surelock::sys
