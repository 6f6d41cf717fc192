// Hardware transactions (Intel RTM) for lock groups: take several FutexLock words FREE -> HELD,
// or give them back HELD -> FREE, in one transaction instead of one locked read-modify-write
// per word (each ~6 ns; 8 members taken and released were 16 of them, the whole cost).
//
// This is not lock elision: the words really are written, with plain stores that commit
// together, so every other thread sees exactly the lock states it sees today (each word
// goes FREE -> HELD -> FREE). Any access to one of the words by another CPU while the
// transaction runs aborts it (the hardware tracks every line read or written), so "all were
// FREE and now all are HELD" is as atomic as the compare-and-swap it replaces.
//
// Callers always keep their usual path: a word in the wrong state (refused) or any hardware
// abort (failed) changes nothing, and the caller then takes the words one by one exactly as
// it would have without this file.
//
// When transactions are used at all (usable()):
//  - the CPU says it has RTM (CPUID leaf 7, EBX bit 11), read lazily on the first use (the
//    library has no static constructors) into a relaxed atomic (valgrind's CPUID does not
//    list it: under valgrind only the per-member path runs);
//  - they have not been given up: a CPU that lists RTM but always aborts (TSX disabled by
//    microcode or the kernel) stops being asked after give_up_after consecutive failed
//    transactions with no commit in between, process-wide.
//    Aborts caused by another CPU touching a word (conflicts, i.e. real contention) and our
//    own refusals do not count: they say nothing about whether TSX works;
//  - not in sanitizer builds (TSan cannot model a transaction and would report the plain
//    stores as races; ASan's shadow accesses would only inflate and abort it): compiled out;
//  - in the internal test build, not on a thread the interleaving explorer schedules (its
//    steps are the per-member protocol's) and not while a test forbids them (testing.h).
#pragma once

#include <atomic>
#include <stddef.h>
#include <stdint.h>

#include "sys/futex_lock.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SURELOCK_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SURELOCK_SANITIZED 1
#endif

#if defined(__x86_64__) && !defined(SURELOCK_SANITIZED)
#define SURELOCK_TRANSACTIONS 1
#define SURELOCK_RTM [[gnu::target("rtm"), gnu::noinline]]
#include <immintrin.h>
#else
#define SURELOCK_TRANSACTIONS 0
#define SURELOCK_RTM
#endif

namespace surelock::sys::transaction {

// A transaction costs about as much as 3 locked read-modify-writes (two of them, a take and
// a release, ~25 ns here, plus ~1.5 ns per word each), so it pays from 3 words up. It touches
// one line per word: small groups only (a large group is not the latency-bound case, and
// more lines make an abort likelier).
constexpr size_t min_words = 3, max_words = 16;
// Consecutive failed transactions (no commit between) after which the process stops trying.
constexpr uint32_t give_up_after = 64;

enum class Outcome {
    committed, // every word changed, all at once
    refused,   // a word was not in the expected state: nothing changed
    failed,    // the hardware aborted (conflict, interrupt, no working TSX): nothing changed
};

enum : uint8_t { not_known = 0, in_use = 1, unavailable = 2 };
extern std::atomic<uint8_t> availability;

uint8_t detect(); // the first use: reads CPUID, returns in_use or unavailable
#ifdef SURELOCK_TESTING
bool testing_allows(); // the explorer does not schedule this thread, no test forbids them
bool testing_aborts(); // a test makes every transaction abort, as broken TSX would
#endif

// Whether this process may use transactions at all: detects on the first call. A group asks
// when a member is added, and tries transactions only if this said yes then, so a machine
// without RTM pays one flag test of the group's own per lock and unlock.
inline bool available()
{
#if SURELOCK_TRANSACTIONS
    uint8_t a = availability.load(std::memory_order_relaxed);
    return (__builtin_expect(a == not_known, 0) ? detect() : a) == in_use;
#else
    return false;
#endif
}

// Whether to try a transaction now (see the top of this file): not given up since
// available() said yes, and (test build) allowed on this thread. One relaxed load.
inline bool usable()
{
#if SURELOCK_TRANSACTIONS
#ifdef SURELOCK_TESTING
    if (!testing_allows()) return false;
#endif
    return availability.load(std::memory_order_relaxed) == in_use;
#else
    return false;
#endif
}

Outcome aborted(unsigned status); // an abort's outcome, counted toward giving up
#ifdef SURELOCK_TESTING
void count_commit();
#endif

// Failed transactions since the last commit, process-wide. Written only on failure (and by
// the first commit after one), so the commit path only reads its cache line.
extern std::atomic<uint32_t> failures_in_a_row;

inline Outcome committed()
{
    if (__builtin_expect(failures_in_a_row.load(std::memory_order_relaxed) != 0, 0))
        failures_in_a_row.store(0, std::memory_order_relaxed);
#ifdef SURELOCK_TESTING
    count_commit();
#endif
    return Outcome::committed;
}

constexpr unsigned refusal = 0x5e; // our _xabort code: a word in the wrong state

// Memory ordering. Inside the transaction the words are read and written with relaxed atomic
// loads and stores (plain movs); atomicity comes from the hardware, which commits all of
// them at once or none, and aborts if any other CPU touches one of their lines meanwhile. On
// x86 a committed RTM region has the ordering semantics of a LOCK-prefixed instruction (Intel
// SDM vol. 1, "RTM memory ordering"): a full fence, as the lock cmpxchg / xchg each word was
// taken or released with. For the compiler, the signal fences keep every access to the words
// inside the region, and the C++ fences (no instruction on x86) state the acquire after a
// take and the release before a release that the per-word compare-and-swap and exchange
// stated: nothing the holder does after taking moves before the take, and nothing it did
// before releasing (the owner cleared, the held link unlinked: OwnedLock::release's order)
// moves after the release.
//
// Templates over word_at(i), i in [0, n): the word of the i-th lock, or nullptr to leave it
// out; only swap_all is compiled for RTM (the caller's code is not), so the library runs on
// any x86-64. Call them only when usable().

// Every word word_at(i) (nullptr: left out) from `from` to `to`, all in one transaction, or
// nothing changed (refused: a word held something else).
template <class WordAt>
SURELOCK_RTM Outcome swap_all(size_t n, WordAt word_at, uint32_t from, uint32_t to)
{
#if SURELOCK_TRANSACTIONS
    unsigned status = _xbegin();
    if (status != _XBEGIN_STARTED) return aborted(status);
    std::atomic_signal_fence(std::memory_order_seq_cst);
#ifdef SURELOCK_TESTING
    if (testing_aborts()) _xabort(refusal + 1);
#endif
    for (size_t i = 0; i < n; i++) {
        FutexLock *l = word_at(i);
        if (l == nullptr) continue;
        if (l->word.load(std::memory_order_relaxed) != from) _xabort(refusal);
        l->word.store(to, std::memory_order_relaxed);
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    _xend();
    return committed();
#else
    (void)n, (void)word_at, (void)from, (void)to;
    return Outcome::failed;
#endif
}

// Every word FREE -> HELD, with acquire ordering, or nothing changed (refused: one was not
// FREE).
template <class WordAt> Outcome take_free(size_t n, WordAt word_at)
{
    Outcome outcome = swap_all(n, word_at, FutexLock::FREE, FutexLock::HELD);
    std::atomic_thread_fence(std::memory_order_acquire);
    return outcome;
}

// Every word HELD -> FREE, with release ordering, or nothing changed (refused: one had
// sleepers, which only the usual releasing exchange and its futex wake serve).
template <class WordAt> Outcome release_held(size_t n, WordAt word_at)
{
    std::atomic_thread_fence(std::memory_order_release);
    return swap_all(n, word_at, FutexLock::HELD, FutexLock::FREE);
}

} // namespace surelock::sys::transaction
