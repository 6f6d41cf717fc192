// Lock-all group (API.md section 3).
//
// Members are kept sorted by one global key: IPC members first, by the random 128-bit id in
// their lock file (every process sees the same id, where addresses and inode numbers differ),
// then in-process members by their never-reused object serial. lock() takes them in that order,
// blocking on each in turn with no retry loop: two groups can never each hold what the other
// waits for, so they neither deadlock nor livelock. trylock/timedlock back out in reverse
// order on the first failure. The sorted array also gives O(log n) duplicate checks at add.

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "ipc.h"
#include "locks.h"
#include "surelock.h"
#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/futex.h"
#include "sys/thread.h"
#include "sys/waits.h"

using namespace surelock::sys;
using namespace surelock::locks;

namespace {

enum class Kind : uint8_t { ipc, rlock, mutex, rwlock };

const char *kind_name(Kind k)
{
    switch (k) {
    case Kind::ipc: return "ipc lock";
    case Kind::rlock: return "rlock";
    case Kind::mutex: return "mutex";
    case Kind::rwlock: return "rwlock";
    }
    return "lock";
}

// Big-endian sort key, compared with memcmp: class (0 = IPC, 1 = in-process), then the lock
// id (IPC) or the object serial, then for IPC the file's device and inode, which only tell
// apart copies of one lock file (same id): a handle to the same file is a duplicate.
constexpr size_t key_size = 1 + 16 + 8 + 8;

struct Member {
    uint8_t key[key_size];
    Kind kind;
    bool shared;     // rwlock mode
    bool owner_died; // during an acquisition: this member was taken with EOWNERDEAD
    void *lock;
};

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
};

namespace {

void group_holder_exited(HeldLink *link)
{
    auto *g = reinterpret_cast<surelock_group *>(reinterpret_cast<char *>(link) -
                                                 offsetof(surelock_group, held));
    g->holder = 0;
}

// Deadlock detector's kind table (waits.h): a group is listed among what its holder holds in
// surelock_dump_waits; the walk follows its members, which a group takes one at a time.
const void *group_of_link(const HeldLink *link, CopyFn)
{
    return field_address(link, -(ptrdiff_t)offsetof(surelock_group, held));
}

size_t describe_group(const void *, char *out, size_t cap, CopyFn)
{
    return describe_plain("lock group", out, cap);
}

Membership *membership_of(const Member &m)
{
    switch (m.kind) {
    case Kind::rlock: return &static_cast<surelock_rlock *>(m.lock)->member;
    case Kind::mutex: return &static_cast<surelock_mutex *>(m.lock)->member;
    case Kind::rwlock: return membership(static_cast<surelock_rwlock *>(m.lock));
    case Kind::ipc: return surelock::ipc::membership(static_cast<surelock_ipc *>(m.lock));
    }
    return nullptr;
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
                        kind_name(member.kind));
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
    if (Membership *ms = membership_of(member)) ms->groups.fetch_add(1);
    return 0;
}

Member in_process_member(Kind kind, void *lock, uint64_t serial, bool shared)
{
    Member m{};
    m.key[0] = 1;
    put_u64(m.key + 1, serial);
    m.kind = kind;
    m.shared = shared;
    m.lock = lock;
    return m;
}

void drop_members(surelock_group *g)
{
    for (size_t i = 0; i < g->count; i++)
        if (Membership *ms = membership_of(g->members[i])) ms->groups.fetch_sub(1);
    g->count = 0;
}

// ---- Holding ----------------------------------------------------------------------------------

bool member_held_by(const Member &m, ThreadRecord *me)
{
    switch (m.kind) {
    case Kind::rlock: return static_cast<surelock_rlock *>(m.lock)->lock.held_by(me);
    case Kind::mutex: return static_cast<surelock_mutex *>(m.lock)->lock.held_by(me);
    case Kind::rwlock: return rwlock_held_by(static_cast<surelock_rwlock *>(m.lock), me);
    case Kind::ipc: return surelock::ipc::file_held_by_caller(static_cast<surelock_ipc *>(m.lock));
    }
    return false;
}

// A group that already holds earlier members and finds the next one held watches it for a
// few microseconds before sleeping: asleep, it would keep its earlier members (a
// philosopher's left fork) from everyone for a whole futex wake-up, and the holder's critical
// section is usually over long before that. Order and all-or-nothing are unchanged: this only
// delays the blocking acquire of the same member.
constexpr uint64_t watch_next_member_ns = 3000;

void watch_if_held_elsewhere(const Member &m, ThreadRecord *me)
{
    switch (m.kind) {
    case Kind::rlock: {
        auto *l = static_cast<surelock_rlock *>(m.lock);
        if (!l->lock.is_free() && !l->lock.held_by(me))
            l->lock.futex.watch_until_free(watch_next_member_ns);
        break;
    }
    case Kind::mutex: {
        auto *l = static_cast<surelock_mutex *>(m.lock);
        if (!l->lock.is_free()) l->lock.futex.watch_until_free(watch_next_member_ns);
        break;
    }
    case Kind::rwlock:
    case Kind::ipc: break; // the rwlock watches on its own; ipc sleeps in the kernel's mutex
    }
}

int member_acquire(const Member &m, ThreadRecord *me, Wait wait, const char *fn)
{
    switch (m.kind) {
    case Kind::rlock:
        return static_cast<surelock_rlock *>(m.lock)->acquire(me, wait, fn);
    case Kind::mutex:
        return static_cast<surelock_mutex *>(m.lock)->lock.acquire(me, wait, fn);
    case Kind::rwlock:
        return rwlock_acquire(static_cast<surelock_rwlock *>(m.lock), me, !m.shared, wait, fn);
    case Kind::ipc: {
        auto *h = static_cast<surelock_ipc *>(m.lock);
        if (wait.is_try_once()) return surelock_ipc_trylock(h);
        return surelock_ipc_timedlock(h, wait.is_spent() ? 0 : wait.deadline().remaining_ns());
    }
    }
    return EINVAL;
}

// Releases one member the caller holds. backing_out: a member taken with EOWNERDEAD passes
// the notice on to its next acquirer (an IPC member stays in need of recovery instead of
// becoming unrecoverable), so giving a lock back unused never hides an owner's death.
void member_release(const Member &m, ThreadRecord *me, bool backing_out)
{
    bool pass_owner_death = backing_out && m.owner_died;
    switch (m.kind) {
    case Kind::rlock:
        if (pass_owner_death) static_cast<surelock_rlock *>(m.lock)->release_owner_dead();
        else static_cast<surelock_rlock *>(m.lock)->release();
        break;
    case Kind::mutex:
        if (pass_owner_death) static_cast<surelock_mutex *>(m.lock)->lock.release_owner_dead();
        else static_cast<surelock_mutex *>(m.lock)->lock.release();
        break;
    case Kind::rwlock:
        rwlock_release(static_cast<surelock_rwlock *>(m.lock), me, pass_owner_death);
        break;
    case Kind::ipc:
        surelock::ipc::release(static_cast<surelock_ipc *>(m.lock), backing_out,
                               "surelock_group_unlock");
        break;
    }
}

// The no-deadlock rule (API.md section 3): a held mutex, rwlock or ipc member is EDEADLK; held
// rlock members are re-entered only if they all come before every member not held.
int check_nothing_held(surelock_group *g, ThreadRecord *me, const char *fn)
{
    if (g->holder == me->serial)
        return fail(EDEADLK, "%s: the calling thread already holds this group", fn);
    size_t first_unheld = g->count;
    for (size_t i = 0; i < g->count; i++) {
        const Member &m = g->members[i];
        if (!member_held_by(m, me)) {
            if (first_unheld == g->count) first_unheld = i;
            continue;
        }
        if (m.kind != Kind::rlock)
            return fail(EDEADLK, "%s: the calling thread already holds member %zu (a %s)", fn,
                        i, kind_name(m.kind));
        if (i > first_unheld)
            return fail(EDEADLK, "%s: the calling thread holds rlock member %zu but not member "
                                 "%zu, which comes before it in the group's order",
                        fn, i, first_unheld);
    }
    return 0;
}

int acquire_all(surelock_group *g, Wait wait, const char *fn)
{
    if (g == nullptr) return fail(EINVAL, "%s: the group is NULL", fn);
    ThreadRecord *me = current_thread();
    if (me == nullptr) return ENOMEM;
    int rc = check_nothing_held(g, me, fn);
    if (rc != 0) return rc;
    // Every member waits against the one deadline, fixed now (FOREVER and 0 read no clock).
    wait.start_clock();
    bool owner_died = false;
    for (size_t i = 0; i < g->count; i++) {
        if (i > 0 && !wait.is_try_once()) watch_if_held_elsewhere(g->members[i], me);
        rc = member_acquire(g->members[i], me, wait, fn);
        g->members[i].owner_died = rc == EOWNERDEAD;
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
    g->holder = me->serial;
    g->held.owner_exited = group_holder_exited;
    me->link_held(&g->held);
    return owner_died ? EOWNERDEAD : 0;
}

} // namespace

namespace surelock::sys {
const LockKind group_kind = {"group", group_holder_exited, group_of_link, "", nullptr, nullptr,
                             describe_group};
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
    return rc != 0 ? rc : add(g, in_process_member(Kind::mutex, m, m->member.serial, false), fn);
}

SURELOCK_API int surelock_group_add_rwlock(surelock_group *g, surelock_rwlock *l, int mode)
{
    const char *fn = "surelock_group_add_rwlock";
    int rc = check_addable(g, l, fn);
    if (rc != 0) return rc;
    if (mode != SURELOCK_EXCLUSIVE && mode != SURELOCK_SHARED)
        return fail(EINVAL, "%s: mode %d is neither SURELOCK_EXCLUSIVE nor SURELOCK_SHARED", fn,
                    mode);
    return add(g,
               in_process_member(Kind::rwlock, l, membership(l)->serial, mode == SURELOCK_SHARED),
               fn);
}

SURELOCK_API int surelock_group_add_rlock(surelock_group *g, surelock_rlock *l)
{
    const char *fn = "surelock_group_add_rlock";
    int rc = check_addable(g, l, fn);
    return rc != 0 ? rc : add(g, in_process_member(Kind::rlock, l, l->member.serial, false), fn);
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
    member.kind = Kind::ipc;
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
    for (size_t i = g->count; i-- > 0;) member_release(g->members[i], me, false);
    return 0;
}

} // extern "C"
