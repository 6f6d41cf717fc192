#include "sys/futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace surelock::sys {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word must be 32 bits");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex word must be lock-free");

Deadline Deadline::after(uint64_t timeout_ns)
{
    constexpr uint64_t ns_per_s = 1000000000u;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t secs = timeout_ns / ns_per_s;
    long nsec = now.tv_nsec + (long)(timeout_ns % ns_per_s);
    if (nsec >= (long)ns_per_s) {
        nsec -= (long)ns_per_s;
        secs++;
    }
    // time_t is signed 64-bit on every platform we build for; anything past its range (about
    // 292 years) is forever.
    constexpr uint64_t max_secs = (uint64_t)INT64_MAX;
    if (secs > max_secs - (uint64_t)now.tv_sec) return never();
    return Deadline{false, {(time_t)((uint64_t)now.tv_sec + secs), nsec}};
}

uint64_t Deadline::remaining_ns() const
{
    if (forever) return UINT64_MAX;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)(at.tv_sec - now.tv_sec) * 1000000000 + (at.tv_nsec - now.tv_nsec);
    return ns > 0 ? (uint64_t)ns : 0;
}

int futex_wait(std::atomic<uint32_t> *word, uint32_t expected, const Deadline &deadline,
               bool shared)
{
    // FUTEX_WAIT_BITSET takes an absolute timeout, on CLOCK_MONOTONIC unless
    // FUTEX_CLOCK_REALTIME is given: retries after EINTR keep the original deadline.
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long r = syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, expected,
                     deadline.forever ? nullptr : &deadline.at, nullptr, FUTEX_BITSET_MATCH_ANY);
    if (r == 0) return 0;
    return errno == EAGAIN || errno == EINTR || errno == ETIMEDOUT ? errno : 0;
}

int futex_wake(std::atomic<uint32_t> *word, int count, bool shared)
{
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long woken = syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, count, nullptr,
                         nullptr, 0);
    return woken > 0 ? (int)woken : 0;
}

} // namespace surelock::sys
