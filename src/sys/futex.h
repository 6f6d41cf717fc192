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

// Pauses for budget_ns (at most until `deadline`) without touching any shared memory: what a
// thread that found a lock held does before anything that would pull the lock's cache line
// away from the holders' CPU (a compare-and-swap that announces a waiter, watching loads, the
// deadlock detector's registration). See back_off in futex.cc for why and for the figures.
void back_off(uint64_t budget_ns, const Deadline &deadline);

// How long an acquire may wait: try once (EBUSY if the lock is taken), or until a deadline
// (ETIMEDOUT if it passes first; a timeout of 0 never sleeps and is ETIMEDOUT too, API.md).
// The public entry point decides it once, or a lock group once for all its members. The
// deadline is read off the clock only by a wait that has to sleep (an uncontended acquire
// never reads the clock), or up front by a group, whose members then share it. Two words,
// passed by value in registers: a fast path never builds it in memory.
class Wait {
public:
    static Wait try_once() { return Wait(0, trying); }
    // timeout_ns as the public calls take it: SURELOCK_FOREVER (UINT64_MAX) never ends.
    static Wait within(uint64_t timeout_ns) { return Wait(timeout_ns, 0); }
    static Wait forever() { return Wait(UINT64_MAX, 0); }

    // The same wait, but a lock found held is first watched (loads only, no sleep) for up to
    // watch_budget_ns in case it comes free: for a lock group between members (group.cc says
    // why). Kinds that spin before they sleep anyway (rwlock), or sleep in the kernel's lock
    // (ipc), ignore it.
    Wait watching_first() const { return Wait(timeout_ns_, bits_ | watching); }
    static constexpr uint64_t watch_budget_ns = 3000;

    bool is_try_once() const { return (bits_ & trying) != 0; }
    bool watches_first() const { return (bits_ & watching) != 0; }
    bool is_forever() const { return timeout_ns_ == UINT64_MAX; }
    // The timeout asked for (for messages).
    uint64_t timeout_ns() const { return timeout_ns_; }
    // A timed wait with no time left to sleep: timeout 0, or a deadline fixed earlier (by a
    // group, before its first member) that has passed.
    bool is_spent() const
    {
        return timeout_ns_ == 0 || (deadline_ns() != 0 && monotonic_ns() >= deadline_ns());
    }
    // Fixes the deadline now (one clock read, none for a wait without end): a lock group
    // counts its timeout from the call, not from the first member that has to wait.
    void start_clock()
    {
        if (deadline_ns() != 0 || is_try_once() || timeout_ns_ == 0 || is_forever()) return;
        uint64_t now = monotonic_ns();
        bits_ |= timeout_ns_ < latest - now ? now + timeout_ns_ : latest;
    }
    // The deadline to sleep until (fixed first if it was not).
    Deadline deadline()
    {
        if (is_forever()) return Deadline::forever();
        start_clock();
        return Deadline::at_monotonic_ns(deadline_ns());
    }

private:
    // bits_: two flags over the deadline on CLOCK_MONOTONIC, 0 until fixed (a fixed one is at
    // least 1: the clock never reads below 0 and a timeout of 0 fixes none), saturated at
    // `latest` (146 years of uptime).
    static constexpr uint64_t trying = 1ull << 63, watching = 1ull << 62, latest = watching - 1;
    Wait(uint64_t timeout_ns, uint64_t bits) : timeout_ns_(timeout_ns), bits_(bits) {}
    uint64_t deadline_ns() const { return bits_ & latest; }
    uint64_t timeout_ns_; // 0 for a try
    uint64_t bits_;
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
