#include "sys/transaction.h"

#if SURELOCK_TRANSACTIONS
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

namespace surelock::sys::transaction {

std::atomic<uint8_t> availability{not_known}; // zero-initialised: no constructor runs

#ifdef SURELOCK_TESTING
namespace {
std::atomic<bool> forbidden{false};
std::atomic<unsigned long> counts[3]; // by Outcome
void count(Outcome o) { counts[(int)o].fetch_add(1, std::memory_order_relaxed); }
} // namespace

bool testing_allows()
{
    return !forbidden.load(std::memory_order_relaxed) && !surelock_testing_scheduled();
}
#else
namespace {
inline void count(Outcome) {}
} // namespace
#endif

#if SURELOCK_TRANSACTIONS

namespace {

constexpr unsigned refusal = 0x5e; // our _xabort code: a word in the wrong state

// Failed transactions since the last commit, process-wide. Written only on failure (and
// once by the first commit after one), so the commit path only reads its cache line.
std::atomic<uint32_t> failures_in_a_row{0};

Outcome committed()
{
    if (__builtin_expect(failures_in_a_row.load(std::memory_order_relaxed) != 0, 0))
        failures_in_a_row.store(0, std::memory_order_relaxed);
    count(Outcome::committed);
    return Outcome::committed;
}

Outcome aborted(unsigned status)
{
    if ((status & _XABORT_EXPLICIT) && _XABORT_CODE(status) == refusal) {
        count(Outcome::refused);
        return Outcome::refused;
    }
    // A conflict is another CPU touching a word: contention, not broken TSX. Anything else
    // (status 0 from disabled TSX or valgrind, capacity, an interrupt) counts toward giving up.
    if (!(status & _XABORT_CONFLICT) &&
        failures_in_a_row.fetch_add(1, std::memory_order_relaxed) + 1 >= give_up_after)
        availability.store(unavailable, std::memory_order_relaxed);
    count(Outcome::failed);
    return Outcome::failed;
}

} // namespace

uint8_t detect()
{
    unsigned a, b, c, d;
    uint8_t found = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_RTM) ? in_use : unavailable;
    uint8_t expected = not_known; // a give-up that raced ahead of us stands
    availability.compare_exchange_strong(expected, found, std::memory_order_relaxed);
    return availability.load(std::memory_order_relaxed);
}

// Memory ordering. Inside the transaction the words are read and written with relaxed atomic
// loads and stores (plain movs); atomicity comes from the hardware, which commits all of
// them at once or none. Ordering: on x86 a committed RTM region has the ordering semantics of
// a LOCK-prefixed instruction (Intel SDM vol. 1, "RTM memory ordering"), i.e. a full fence,
// the same as the lock cmpxchg / xchg each word was taken or released with. For the compiler,
// the signal fences pin every access to the words inside the region, and the C++ fences
// (no instruction on x86) state the acquire after a take and the release before a release
// that the per-word compare-and-swap and exchange stated: nothing the holder does after
// taking moves before the take, nothing it did while holding (the owner cleared, the held
// link unlinked: OwnedLock::release's order) moves after the release.

__attribute__((target("rtm"))) Outcome take_free(FutexLock *const *locks, size_t n)
{
    unsigned status = _xbegin();
    if (status != _XBEGIN_STARTED) return aborted(status);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    for (size_t i = 0; i < n; i++) {
        if (locks[i]->word.load(std::memory_order_relaxed) != FutexLock::FREE) _xabort(refusal);
        locks[i]->word.store(FutexLock::HELD, std::memory_order_relaxed);
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    _xend();
    std::atomic_thread_fence(std::memory_order_acquire);
    return committed();
}

__attribute__((target("rtm"))) Outcome release_held(FutexLock *const *locks, size_t n)
{
    std::atomic_thread_fence(std::memory_order_release);
    unsigned status = _xbegin();
    if (status != _XBEGIN_STARTED) return aborted(status);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    for (size_t i = 0; i < n; i++) {
        if (locks[i]->word.load(std::memory_order_relaxed) != FutexLock::HELD) _xabort(refusal);
        locks[i]->word.store(FutexLock::FREE, std::memory_order_relaxed);
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    _xend();
    return committed();
}

#else // no transactions in this build: usable() is false, so these are never called

uint8_t detect() { return unavailable; }
Outcome take_free(FutexLock *const *, size_t) { return Outcome::failed; }
Outcome release_held(FutexLock *const *, size_t) { return Outcome::failed; }

#endif

} // namespace surelock::sys::transaction

#ifdef SURELOCK_TESTING
using namespace surelock::sys::transaction;

extern "C" int surelock_testing_transactions_in_use(void)
{
    uint8_t a = availability.load(std::memory_order_relaxed);
    return a == not_known ? -1 : a == in_use;
}

extern "C" void surelock_testing_transaction_counts(unsigned long *committed,
                                                    unsigned long *refused,
                                                    unsigned long *failed)
{
    *committed = counts[(int)Outcome::committed].load(std::memory_order_relaxed);
    *refused = counts[(int)Outcome::refused].load(std::memory_order_relaxed);
    *failed = counts[(int)Outcome::failed].load(std::memory_order_relaxed);
}

extern "C" void surelock_testing_forbid_transactions(int forbid)
{
    forbidden.store(forbid != 0, std::memory_order_relaxed);
}
#endif
