#include "sys/transaction.h"

#if SURELOCK_TRANSACTIONS
#include <cpuid.h>
#endif

#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

namespace surelock::sys::transaction {

std::atomic<uint8_t> availability{not_known}; // zero-initialised: no constructor runs

#ifdef SURELOCK_TESTING
namespace {
std::atomic<bool> forbidden{false}, always_abort{false};
std::atomic<unsigned long> counts[3]; // by Outcome
void count(Outcome o) { counts[(int)o].fetch_add(1, std::memory_order_relaxed); }
} // namespace

void count_commit() { count(Outcome::committed); }

bool testing_aborts() { return always_abort.load(std::memory_order_relaxed); }

bool testing_allows()
{
    return !forbidden.load(std::memory_order_relaxed) && !surelock_testing_scheduled();
}
#else
namespace {
inline void count(Outcome) {}
} // namespace
#endif

std::atomic<uint32_t> failures_in_a_row{0};

#if SURELOCK_TRANSACTIONS

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

uint8_t detect()
{
    unsigned a, b, c, d;
    uint8_t found = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_RTM) ? in_use : unavailable;
    uint8_t expected = not_known; // a give-up that raced ahead of us stands
    availability.compare_exchange_strong(expected, found, std::memory_order_relaxed);
    return availability.load(std::memory_order_relaxed);
}

#else // no transactions in this build: available() and usable() are false

uint8_t detect() { return unavailable; }
Outcome aborted(unsigned) { return Outcome::failed; }

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

extern "C" void surelock_testing_abort_transactions(int abort)
{
    always_abort.store(abort != 0, std::memory_order_relaxed);
}

extern "C" void surelock_testing_forbid_transactions(int forbid)
{
    forbidden.store(forbid != 0, std::memory_order_relaxed);
}
#endif
