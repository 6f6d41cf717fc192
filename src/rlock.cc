// Reentrant lock (API.md section 1).
//
// The lock word is a three-state futex word (free / held / held with possible sleepers), so an
// uncontended acquire is one compare-and-swap and an uncontended release one exchange with no
// system call. Ownership is the holder's never-reused thread serial; re-entry compares it with
// the caller's and bumps a depth only the holder touches (no atomic read-modify-write). While
// held, the lock is linked into its owner's per-thread held list, so the owner's thread-exit
// destructor can release it and flag "owner died" for the next acquirer.
//
// Process-wide named locks live in a registry that is never pruned: a name, once used, names
// the same lock for the life of the process.

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include <atomic>

#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/thread.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

using namespace surelock::sys;

namespace {

enum : uint32_t { FREE = 0, HELD = 1, HELD_WITH_SLEEPERS = 2 };

// Spins this many rounds before sleeping: a holder on another core usually releases within a
// few hundred nanoseconds, and a futex sleep/wake round trip costs microseconds.
constexpr int spin_rounds = 100;

} // namespace

struct surelock_rlock {
    // Hot word on its own cache line: waiters hammer it, the rest is holder-only.
    alignas(64) std::atomic<uint32_t> word{FREE};
    std::atomic<uint64_t> owner{0}; // holder's thread serial; 0 when free
    unsigned depth = 0;             // holder's depth; touched only by the holder
    // Written by an exiting owner before its releasing store, read and cleared by the next
    // acquirer after its acquiring one, so the word's ordering covers it.
    bool previous_owner_died = false;
    bool is_global = false;
    HeldLink held{};
};

namespace {

surelock_rlock *from_link(HeldLink *link)
{
    return reinterpret_cast<surelock_rlock *>(reinterpret_cast<char *>(link) -
                                              offsetof(surelock_rlock, held));
}

void release_word(surelock_rlock *l)
{
    // Nothing of *l is touched after this store (the futex wake only passes its address to
    // the kernel), so another thread may free the lock as soon as it can take it.
    if (l->word.exchange(FREE, std::memory_order_release) == HELD_WITH_SLEEPERS)
        futex_wake(&l->word, 1);
}

// Thread-exit handler: the owner ended while holding l.
void owner_exited(HeldLink *link)
{
    surelock_rlock *l = from_link(link);
    l->depth = 0;
    l->previous_owner_died = true;
    l->owner.store(0, std::memory_order_relaxed);
    release_word(l);
}

// The caller has just taken the word: make it the owner at depth 1.
inline int become_owner(surelock_rlock *l, ThreadRecord *me)
{
    l->owner.store(me->serial, std::memory_order_relaxed);
    l->depth = 1;
    l->held.owner_exited = owner_exited;
    me->link_held(&l->held);
    if (__builtin_expect(l->previous_owner_died, 0)) {
        l->previous_owner_died = false;
        return EOWNERDEAD;
    }
    return 0;
}

bool try_take_word(surelock_rlock *l)
{
    uint32_t expected = FREE;
    return l->word.compare_exchange_strong(expected, HELD, std::memory_order_acquire,
                                           std::memory_order_relaxed);
}

// Waits for the word until the deadline. Returns 0 once taken, or ETIMEDOUT.
int take_word_slow(surelock_rlock *l, const Deadline &deadline)
{
    for (int i = 0; i < spin_rounds; i++) {
        if (l->word.load(std::memory_order_relaxed) == FREE && try_take_word(l)) return 0;
        cpu_relax();
    }
    // Classic three-state futex mutex: announce a sleeper by storing 2, and take the lock
    // whenever the exchange shows it was free. A lock taken this way stays marked 2, which
    // costs at most one unneeded wake at release.
    while (l->word.exchange(HELD_WITH_SLEEPERS, std::memory_order_acquire) != FREE) {
        if (futex_wait(&l->word, HELD_WITH_SLEEPERS, deadline) == ETIMEDOUT) return ETIMEDOUT;
    }
    return 0;
}

enum class Wait { never, until_deadline };

// Everything past the uncontended attempt; kept out of line so the fast path stays a leaf
// with no register spills.
[[gnu::noinline]] int acquire_contended(surelock_rlock *l, ThreadRecord *me, Wait wait,
                                        uint64_t timeout_ns, const char *fn)
{
    if (wait == Wait::never) return fail(EBUSY, "%s: held by another thread", fn);
    if (timeout_ns == 0) return fail(ETIMEDOUT, "%s: held by another thread (timeout 0)", fn);
    if (take_word_slow(l, Deadline::after(timeout_ns)) != 0)
        return fail(ETIMEDOUT, "%s: still held by another thread after %llu ns", fn,
                    (unsigned long long)timeout_ns);
    return become_owner(l, me);
}

[[gnu::always_inline]] inline int acquire(surelock_rlock *l, Wait wait, uint64_t timeout_ns,
                                          const char *fn)
{
    if (__builtin_expect(l == nullptr, 0)) return fail(EINVAL, "%s: the lock is NULL", fn);
    ThreadRecord *me = current_thread();
    if (__builtin_expect(me == nullptr, 0)) return ENOMEM;
    if (l->owner.load(std::memory_order_relaxed) == me->serial) {
        // Only this thread ever stores its own serial here, so reading it means we hold it.
        if (__builtin_expect(l->depth == UINT_MAX, 0))
            return fail(EAGAIN, "%s: re-entry depth would overflow (already %u)", fn, l->depth);
        l->depth++;
        return 0;
    }
    if (__builtin_expect(try_take_word(l), 1)) return become_owner(l, me);
    return acquire_contended(l, me, wait, timeout_ns, fn);
}

// ---- Process-wide registry ----------------------------------------------------------------

constexpr size_t max_name_length = 255;
constexpr size_t registry_buckets = 256;

struct GlobalEntry {
    surelock_rlock lock; // first member: the handle callers get points here
    GlobalEntry *next;
    size_t name_length;
    char name[max_name_length];
};

// Entries are only ever added, under the mutex; a statically initialised pthread mutex needs
// no constructor and is ready even before any other code of the library has run.
pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
GlobalEntry *registry[registry_buckets];

size_t hash_name(const char *name, size_t length)
{
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < length; i++) h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32)) % registry_buckets;
}

} // namespace

// ---- C entry points ------------------------------------------------------------------------

extern "C" {

SURELOCK_API int surelock_rlock_new(surelock_rlock **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_rlock_new: out is NULL");
    surelock_rlock *l = create<surelock_rlock>();
    if (l == nullptr) return fail(ENOMEM, "surelock_rlock_new: out of memory");
    *out = l;
    return 0;
}

SURELOCK_API int surelock_rlock_free(surelock_rlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rlock_free: the lock is NULL");
    if (l->is_global)
        return fail(EPERM, "surelock_rlock_free: process-wide locks from surelock_rlock_global "
                           "are never freed");
    if (l->word.load(std::memory_order_acquire) != FREE)
        return fail(EBUSY, "surelock_rlock_free: the lock is held; nothing freed");
    destroy(l);
    return 0;
}

SURELOCK_API int surelock_rlock_global(const char *name, surelock_rlock **out)
{
    if (name == nullptr || out == nullptr)
        return fail(EINVAL, "surelock_rlock_global: %s is NULL", name ? "out" : "name");
    size_t length = strnlen(name, max_name_length + 1);
    if (length == 0) return fail(EINVAL, "surelock_rlock_global: the name is empty");
    if (length > max_name_length)
        return fail(EINVAL, "surelock_rlock_global: the name is longer than %zu bytes",
                    max_name_length);

    GlobalEntry **bucket = &registry[hash_name(name, length)];
    int rc = 0;
    pthread_mutex_lock(&registry_mutex);
    GlobalEntry *e = *bucket;
    while (e != nullptr && !(e->name_length == length && memcmp(e->name, name, length) == 0))
        e = e->next;
    if (e == nullptr) {
        e = create<GlobalEntry>();
        if (e == nullptr) {
            rc = fail(ENOMEM, "surelock_rlock_global: out of memory creating \"%.*s\"",
                      (int)length, name);
        } else {
            e->lock.is_global = true;
            e->name_length = length;
            memcpy(e->name, name, length);
            e->next = *bucket;
            *bucket = e;
        }
    }
    pthread_mutex_unlock(&registry_mutex);
    if (rc == 0) *out = &e->lock;
    return rc;
}

SURELOCK_API int surelock_rlock_lock(surelock_rlock *l)
{
    return acquire(l, Wait::until_deadline, SURELOCK_FOREVER, "surelock_rlock_lock");
}

SURELOCK_API int surelock_rlock_trylock(surelock_rlock *l)
{
    return acquire(l, Wait::never, 0, "surelock_rlock_trylock");
}

SURELOCK_API int surelock_rlock_timedlock(surelock_rlock *l, uint64_t timeout_ns)
{
    return acquire(l, Wait::until_deadline, timeout_ns, "surelock_rlock_timedlock");
}

SURELOCK_API int surelock_rlock_unlock(surelock_rlock *l)
{
    if (l == nullptr) return fail(EINVAL, "surelock_rlock_unlock: the lock is NULL");
    ThreadRecord *me = current_record;
    if (me == nullptr || l->owner.load(std::memory_order_relaxed) != me->serial)
        return fail(EPERM, "surelock_rlock_unlock: the calling thread does not hold the lock");
    if (--l->depth > 0) return 0;
    l->held.unlink();
    l->owner.store(0, std::memory_order_relaxed);
    release_word(l);
    return 0;
}

SURELOCK_API unsigned surelock_rlock_depth(const surelock_rlock *l)
{
    ThreadRecord *me = current_record;
    if (l == nullptr || me == nullptr) return 0;
    return l->owner.load(std::memory_order_relaxed) == me->serial ? l->depth : 0;
}

#ifdef SURELOCK_TESTING
int surelock_testing_rlock_set_depth(surelock_rlock *l, unsigned depth)
{
    ThreadRecord *me = current_record;
    if (l == nullptr || depth == 0 || me == nullptr ||
        l->owner.load(std::memory_order_relaxed) != me->serial)
        return EINVAL;
    l->depth = depth;
    return 0;
}
#endif

} // extern "C"
