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
//    library has no static constructors) into a relaxed atomic;
//  - they have not been given up: a CPU that lists RTM but always aborts (TSX disabled by
//    microcode or the kernel, or valgrind, which fails every xbegin) stops being asked after
//    give_up_after consecutive failed transactions with no commit in between, process-wide.
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
#else
#define SURELOCK_TRANSACTIONS 0
#endif

namespace surelock::sys::transaction {

// A transaction touches one line per word: small groups only (a large group is not the
// latency-bound case, and more lines make an abort likelier).
constexpr size_t max_words = 16;
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
#endif

// Whether to try a transaction now (see the top of this file). One relaxed load once known.
inline bool usable()
{
#if SURELOCK_TRANSACTIONS
    uint8_t a = availability.load(std::memory_order_relaxed);
    if (__builtin_expect(a == not_known, 0)) a = detect();
#ifdef SURELOCK_TESTING
    if (a == in_use && !testing_allows()) return false;
#endif
    return a == in_use;
#else
    return false;
#endif
}

// All n words FREE -> HELD, with acquire ordering, or nothing changed (refused: one was not
// FREE). Call only when usable().
Outcome take_free(FutexLock *const *locks, size_t n);
// All n words HELD -> FREE, with release ordering, or nothing changed (refused: one had
// sleepers, which only the usual releasing exchange and its futex wake serve). Call only when
// usable().
Outcome release_held(FutexLock *const *locks, size_t n);

} // namespace surelock::sys::transaction
