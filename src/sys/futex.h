// Futex wait/wake and CLOCK_MONOTONIC deadlines: the only way surelock blocks a thread.
#pragma once

#include <atomic>
#include <stdint.h>
#include <time.h>

#include "sys/interleave.h" // SURELOCK_STEP, for every protocol built on these calls

namespace surelock::sys {

// An absolute point on CLOCK_MONOTONIC, or "never". Wall-clock jumps change nothing.
struct Deadline {
    bool forever;
    struct timespec at;

    // now + timeout_ns; a timeout of UINT64_MAX (SURELOCK_FOREVER) or one whose deadline
    // would overflow means forever.
    static Deadline after(uint64_t timeout_ns);
    static Deadline never() { return Deadline{true, {0, 0}}; }
    // Nanoseconds left (0 once passed; UINT64_MAX for forever): for handing what remains of
    // one deadline to a sequence of waits.
    uint64_t remaining_ns() const;
};

// Now on CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call): the clock of the
// time-bounded spins that come before some sleeps.
uint64_t monotonic_ns();

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
