// Lock-all group (API.md section 3).
//
// Members are kept sorted by one global key: IPC members first, by the random 128-bit id in
// their lock file (every process sees the same id, where addresses and inode numbers differ),
// then in-process members by their never-reused object serial. lock() takes them in that order,
// blocking on each in turn with no retry loop: two groups can never each hold what the other
// waits for, so they neither deadlock nor livelock. trylock/timedlock back out in reverse
// order on the first failure. The sorted array also gives O(log n) duplicate checks at add.
//
// A group of 3..16 members whose kinds all have a plain lock word (mutex, rlock) first tries
// to take every word at once in one hardware transaction (sys/transaction.h: Intel RTM, where
// the CPU has it), and gives them back the same way: two transactions instead of one locked
// read-modify-write per member each way. That is only a faster way to make the same stores:
// the transaction either sees every member free and takes them all, or changes nothing, and
// then the group takes the per-member path below exactly as if it had never tried (a member
// held, by anyone, the caller's rlock re-entry included; a member with sleepers at release;
// any abort). Around the words, each member's own steps run as in its acquire and release, in
// the same order: owner and held link after the take (EOWNERDEAD from a dead owner's flag as
// ever), held link and owner cleared before the release. So every code and errmsg a group
// returns is the per-member path's (test_group_transaction.c runs both and compares).

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "ipc.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/lock_kind.h"
#include "sys/thread.h"
#include "sys/transaction.h"
#include "sys/waits.h"

using namespace surelock::sys;

namespace {

// Big-endian sort key, compared with memcmp: class (0 = IPC, 1 = in-process), then the lock
// id (IPC) or the object serial, then for IPC the file's device and inode, which only tell
// apart copies of one lock file (same id): a handle to the same file is a duplicate.
constexpr size_t key_size = 1 + 16 + 8 + 8;

// A member is reached only through its kind's table entry (sys/lock_kind.h); an rwlock's mode
// is its kind (rwlock_kind or rwlock_read_kind).
struct Member {
    uint8_t key[key_size];
    bool owner_died;   // during an acquisition: this member was taken with EOWNERDEAD
    bool release_word; // during a transactional release: its word is to be released
    const LockKind *kind;
    void *lock;
    FutexLock *word; // the kind's word(lock), or nullptr: never taken in a transaction
};
static_assert(sizeof(Member) == 64, "one cache line per member, indexed by a shift");

void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

} // namespace

struct surelock_group {
    Member *members = nullptr;
    size_t count = 0;
    size_t capacity = 0;
    // Thread serial of the holder (0 = not held); only the group's one user thread writes it.
    uint64_t holder = 0;
    // In the holder's held list while held, so a holder that exits frees the group for reuse
    // (its members are released by their own links).
    HeldLink held{};
    // Members whose kind has no transactional word (kind->word is nullptr), and whether the
    // group may try a transaction: min_words..max_words members, none of them wordless, and
    // this process has transactions (transaction::available(), asked here, at add).
    size_t wordless = 0;
    bool all_at_once = false;
};

namespace {

void group_holder_exited(HeldLink *link)
{
    SURELOCK_CONTAINER_OF(link, surelock_group, held)->holder = 0;
}

// For the kind table: a group is listed among what its holder holds in surelock_dump_waits;
// the deadlock walk follows its members, which a group takes one at a time.
size_t describe_group(const void *, char *out, size_t cap, CopyFn)
{
    return describe_plain("lock group", out, cap);
}

int check_addable(surelock_group *g, const void *lock, const char *fn)
{
    if (g == nullptr || lock == nullptr)
        return fail(EINVAL, "%s: the %s is NULL", fn, g == nullptr ? "group" : "lock");
    if (g->holder != 0) return fail(EBUSY, "%s: the group is held; unlock it before adding", fn);
    return 0;
}

int add(surelock_group *g, Member member, const char *fn)
{
    // Binary search for the insertion point; an equal key is the same lock.
    size_t lo = 0, hi = g->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(g->members[mid].key, member.key, key_size);
        if (c == 0)
            return fail(EEXIST, "%s: this %s is already a member of the group", fn,
                        member.kind->name);
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (g->count == g->capacity) {
        size_t capacity = g->capacity ? g->capacity * 2 : 4;
        auto *grown = static_cast<Member *>(allocate(capacity * sizeof(Member), alignof(Member)));
        if (grown == nullptr) return fail(ENOMEM, "%s: out of memory growing the group", fn);
        if (g->count != 0) memcpy(grown, g->members, g->count * sizeof(Member));
        deallocate(g->members);
        g->members = grown;
        g->capacity = capacity;
    }
    memmove(&g->members[lo + 1], &g->members[lo], (g->count - lo) * sizeof(Member));
    g->members[lo] = member;
    g->count++;
    if (member.word == nullptr) g->wordless++;
    g->all_at_once = g->wordless == 0 && g->count >= transaction::min_words &&
                     g->count <= transaction::max_words && transaction::available();
    member.kind->membership(member.lock)->groups.fetch_add(1);
    return 0;
}

Member in_process_member(const LockKind &kind, void *lock)
{
    Member m{};
    m.key[0] = 1;
    put_u64(m.key + 1, kind.membership(lock)->serial);
    m.kind = &kind;
    m.lock = lock;
    m.word = kind.word != nullptr ? kind.word(lock) : nullptr;
    return m;
}

void drop_members(surelock_group *g)
{
    for (size_t i = 0; i < g->count; i++) {
        const Member &m = g->members[i];
        m.kind->membership(m.lock)->groups.fetch_sub(1);
    }
    g->count = 0;
    g->wordless = 0;
    g->all_at_once = false;
}

// ---- Holding ----------------------------------------------------------------------------------

// Releases one member the caller holds. backing_out: a member taken with EOWNERDEAD passes
// the notice on to its next acquirer (an IPC member stays in need of recovery instead of
// becoming unrecoverable), so giving a lock back unused never hides an owner's death.
// Returns false, releasing nothing, for a member the caller no longer holds (LockKind::release).
bool member_release(const Member &m, ThreadRecord *me, bool backing_out)
{
    return m.kind->release(m.lock, me, backing_out && m.owner_died);
}

// No member was found no longer held (release_all's result otherwise: the index of one).
constexpr size_t all_were_held = SIZE_MAX;

// The no-deadlock rule (API.md section 3): a held mutex, rwlock or ipc member is EDEADLK; held
// rlock members are re-entered only if they all come before every member not held.
int check_nothing_held(surelock_group *g, ThreadRecord *me, const char *fn)
{
    if (me->holds_nothing()) return 0; // no member to ask (the common case)
    if (g->holder == me->serial)
        return fail(EDEADLK, "%s: the calling thread already holds this group", fn);
    size_t first_unheld = g->count;
    for (size_t i = 0; i < g->count; i++) {
        const Member &m = g->members[i];
        if (!m.kind->held_by(m.lock, me)) {
            if (first_unheld == g->count) first_unheld = i;
            continue;
        }
        if (!m.kind->group_reenters)
            return fail(EDEADLK, "%s: the calling thread already holds member %zu (a %s)", fn,
                        i, m.kind->name);
        if (i > first_unheld)
            return fail(EDEADLK, "%s: the calling thread holds rlock member %zu but not member "
                                 "%zu, which comes before it in the group's order",
                        fn, i, first_unheld);
    }
    return 0;
}

// Whether to try the group's words in one transaction: the group may (all_at_once) and
// transactions are still usable (transaction.h: not given up, the test hooks). Where the
// CPU or the build has none, this is the per-member path's whole extra cost: one flag test.
[[gnu::always_inline]] inline bool transactional(const surelock_group *g)
{
    return g->all_at_once && transaction::usable();
}

// Takes every member in one transaction if every word is free; false (nothing taken, nothing
// changed) otherwise. Then each member's after-the-word steps, in the group's order. (Out of
// line, as release_all_at_once: the per-member paths compile as they did without them.)
[[gnu::noinline]] bool take_all_at_once(surelock_group *g, ThreadRecord *me, bool *owner_died)
{
    Member *members = g->members;
    auto word_at = [members](size_t i) { return members[i].word; };
    if (transaction::take_free(g->count, word_at) != transaction::Outcome::committed) return false;
    bool died = false;
    for (size_t i = 0; i < g->count; i++) {
        Member &m = members[i];
        m.owner_died = m.kind->took_word(m.lock, me) == EOWNERDEAD;
        died |= m.owner_died;
    }
    *owner_died = died;
    return true;
}

// Gives every member back, newest first: each member's held link and owner are cleared first
// (OwnedLock::release's order: the deadlock detector never sees a free lock naming its old
// owner), then every word goes to FREE in one transaction, or, when one has sleepers or the
// transaction fails, each word with its own releasing exchange (which wakes its sleepers).
// A member the caller no longer holds is left alone; returns the index of one, or
// all_were_held.
[[gnu::noinline]] size_t release_all_at_once(surelock_group *g, ThreadRecord *me)
{
    Member *members = g->members;
    size_t lost = all_were_held;
    for (size_t i = g->count; i-- > 0;) {
        Member &m = members[i];
        WordRelease step = m.kind->releasing_word(m.lock, me);
        m.release_word = step == WordRelease::word_goes;
        if (step == WordRelease::not_held) lost = i;
    }
    auto word_at = [members](size_t i) {
        return members[i].release_word ? members[i].word : nullptr;
    };
    if (transaction::release_held(g->count, word_at) != transaction::Outcome::committed)
        for (size_t i = g->count; i-- > 0;)
            if (members[i].release_word) members[i].word->unlock();
    return lost;
}

void become_holder(surelock_group *g, ThreadRecord *me)
{
    g->holder = me->serial;
    g->held.owner_exited = group_holder_exited;
    me->link_held(&g->held);
}

int acquire_all(surelock_group *g, Wait wait, const char *fn)
{
    ThreadRecord *me;
    if (int rc = begin_acquire(g, "group", fn, &me)) return rc;
    int rc = check_nothing_held(g, me, fn);
    if (rc != 0) return rc;
    // Every member waits against the one deadline, fixed now (FOREVER and 0 read no clock).
    wait.start_clock();
    // A group that already holds earlier members and finds the next one held watches it for a
    // few microseconds before sleeping: asleep, it would keep its earlier members (a
    // philosopher's left fork) from everyone for a whole futex wake-up, and the holder's
    // critical section is usually over long before that. Order and all-or-nothing are
    // unchanged: this only delays the blocking acquire of the same member.
    Wait after_first = wait.watching_first();
    bool owner_died = false;
    if (transactional(g) && take_all_at_once(g, me, &owner_died)) {
        become_holder(g, me);
        return owner_died ? EOWNERDEAD : 0;
    }
    for (size_t i = 0; i < g->count; i++) {
        Member &m = g->members[i];
        rc = m.kind->acquire(m.lock, me, i == 0 ? wait : after_first, fn);
        m.owner_died = rc == EOWNERDEAD;
        if (rc == EOWNERDEAD) {
            owner_died = true;
            continue;
        }
        if (rc == 0) continue;
        // All or nothing: give back what we took, newest first.
        {
            ErrmsgSnapshot keep; // the member's failure is the one to report
            while (i-- > 0) member_release(g->members[i], me, true);
        }
        if (rc == EBUSY && !wait.is_try_once()) rc = ETIMEDOUT;
        return rc;
    }
    become_holder(g, me);
    return owner_died ? EOWNERDEAD : 0;
}

} // namespace

namespace surelock::sys {
// Not a group member itself: no holding entries.
const LockKind group_kind = {
    .name = "group",
    .held_by = nullptr,
    .acquire = nullptr,
    .release = nullptr,
    .membership = nullptr,
    .group_reenters = false,
    .owner_exited = group_holder_exited,
    .held_link_offset = offsetof(surelock_group, held),
    .hold_mode = "",
    .exclusive_holder = nullptr,
    .held_shared_by = nullptr,
    .describe = describe_group,
};
} // namespace surelock::sys

extern "C" {

SURELOCK_API int surelock_group_new(surelock_group **out)
{
    if (out == nullptr) return fail(EINVAL, "surelock_group_new: out is NULL");
    auto *g = create<surelock_group>();
    if (g == nullptr) return fail(ENOMEM, "surelock_group_new: out of memory");
    *out = g;
    return 0;
}

SURELOCK_API int surelock_group_free(surelock_group *g)
{
    if (g == nullptr) return fail(EINVAL, "surelock_group_free: the group is NULL");
    if (g->holder != 0) return fail(EBUSY, "surelock_group_free: the group is held; nothing freed");
    drop_members(g);
    deallocate(g->members);
    destroy(g);
    return 0;
}

SURELOCK_API int surelock_group_add_mutex(surelock_group *g, surelock_mutex *m)
{
    const char *fn = "surelock_group_add_mutex";
    int rc = check_addable(g, m, fn);
    return rc != 0 ? rc : add(g, in_process_member(mutex_kind, m), fn);
}

SURELOCK_API int surelock_group_add_rwlock(surelock_group *g, surelock_rwlock *l, int mode)
{
    const char *fn = "surelock_group_add_rwlock";
    int rc = check_addable(g, l, fn);
    if (rc != 0) return rc;
    if (mode != SURELOCK_EXCLUSIVE && mode != SURELOCK_SHARED)
        return fail(EINVAL, "%s: mode %d is neither SURELOCK_EXCLUSIVE nor SURELOCK_SHARED", fn,
                    mode);
    return add(g, in_process_member(mode == SURELOCK_SHARED ? rwlock_read_kind : rwlock_kind, l),
               fn);
}

SURELOCK_API int surelock_group_add_rlock(surelock_group *g, surelock_rlock *l)
{
    const char *fn = "surelock_group_add_rlock";
    int rc = check_addable(g, l, fn);
    return rc != 0 ? rc : add(g, in_process_member(rlock_kind, l), fn);
}

SURELOCK_API int surelock_group_add_ipc(surelock_group *g, surelock_ipc *m)
{
    const char *fn = "surelock_group_add_ipc";
    int rc = check_addable(g, m, fn);
    if (rc != 0) return rc;
    Member member{};
    member.key[0] = 0;
    memcpy(member.key + 1, surelock::ipc::lock_id(m), 16);
    uint64_t dev, ino;
    surelock::ipc::file_identity(m, &dev, &ino);
    put_u64(member.key + 17, dev);
    put_u64(member.key + 25, ino);
    member.kind = &ipc_kind;
    member.lock = m;
    return add(g, member, fn);
}

SURELOCK_API int surelock_group_clear(surelock_group *g)
{
    if (g == nullptr) return fail(EINVAL, "surelock_group_clear: the group is NULL");
    if (g->holder != 0) return fail(EBUSY, "surelock_group_clear: the group is held");
    drop_members(g);
    return 0;
}

SURELOCK_API size_t surelock_group_size(const surelock_group *g)
{
    return g == nullptr ? 0 : g->count;
}

SURELOCK_API int surelock_group_lock(surelock_group *g)
{
    return acquire_all(g, Wait::forever(), "surelock_group_lock");
}

SURELOCK_API int surelock_group_trylock(surelock_group *g)
{
    return acquire_all(g, Wait::try_once(), "surelock_group_trylock");
}

SURELOCK_API int surelock_group_timedlock(surelock_group *g, uint64_t timeout_ns)
{
    return acquire_all(g, Wait::within(timeout_ns), "surelock_group_timedlock");
}

SURELOCK_API int surelock_group_unlock(surelock_group *g)
{
    if (g == nullptr) return fail(EINVAL, "surelock_group_unlock: the group is NULL");
    ThreadRecord *me = current_record;
    if (me == nullptr || g->holder != me->serial)
        return fail(EPERM, "surelock_group_unlock: the calling thread does not hold the group");
    g->held.unlink();
    g->holder = 0;
    size_t lost = all_were_held;
    if (transactional(g)) lost = release_all_at_once(g, me);
    else
        for (size_t i = g->count; i-- > 0;)
            if (!member_release(g->members[i], me, false)) lost = i;
    // A member's own unlock call released what the group held: releasing it again would have
    // released whoever holds it now. The rest is released and the group is free again.
    if (__builtin_expect(lost != all_were_held, 0))
        return fail(EPERM, "surelock_group_unlock: member %zu (a %s) was not held by the calling "
                           "thread any more (released by its own unlock call while the group "
                           "held it); the group's other members are released",
                    lost, g->members[lost].kind->name);
    return 0;
}

} // extern "C"
