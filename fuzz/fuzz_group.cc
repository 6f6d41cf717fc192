// State-machine fuzzer for lock groups (API.md section 3) over mutexes, rwlocks and an rlock
// (sections 1-2).
//
// The input bytes decode into a sequence of calls made by three worker threads, which the
// fuzzer's own thread (the driver) runs in lockstep (fuzz/lockstep.h): one call at a time, on
// a known thread. Each input creates 4 mutexes (slots 0-3), 2 rwlocks (4-5) and 1 rlock (6) in
// an order chosen by its first byte, so the global group order (object serial = creation
// order) differs from the slot order; up to 3 groups are built from the input. A reference
// model predicts every return code (including EBUSY, EEXIST, EDEADLK with the rlock prefix
// rule computed in serial order, EPERM, EINVAL, ENOMEM, EAGAIN, EOWNERDEAD), every group size,
// the rlock depth after every group lock and unlock, which calls allocate (so allocation
// failures injected through the SURELOCK_TESTING hook land exactly where the model says
// ENOMEM), and that errmsg is set by every failing call and left alone by every successful
// one. Any disagreement prints the call trace and the model's state and aborts.
//
// Blocking acquires (group_lock, mutex/rlock lock, rwlock rd/wrlock): one that the model says
// can proceed is made as is (a wrong model then shows up as a hang, reported after 10 s). One
// that would wait is, by the input's choice (policy), either
//  - made as a timed acquire of kShortNs instead, which must return ETIMEDOUT holding nothing
//    (spinning, futex waits with a deadline, group back-out), or
//  - really made, and ended by a hand-off: every other worker whose hold is in its way lets
//    go of it, by unlocking (its held groups that list the lock, then its own holds) or by
//    exiting; then the waiter must finish with the model's result (0, EOWNERDEAD, or its own
//    ENOMEM/EAGAIN). Only the holders act meanwhile and nothing they do allocates, so the
//    result does not depend on when the waiter wakes.
//
// Where the contract does not rank two errors that both apply (adding to a held group a
// duplicate, a NULL lock, or an rwlock with a bad mode: EBUSY vs EEXIST/EINVAL), either is
// accepted. A member taken with EOWNERDEAD by a lock that then backs out (busy, ENOMEM or
// EAGAIN further on) passes the notice on to its next acquirer: the contract says so for IPC
// members, and the library does it for every kind.
//
// Groups are used by one thread at a time, as the contract requires: lock/trylock/timedlock
// of a group held by another worker is skipped; unlock (EPERM), size, add/clear/free (EBUSY)
// of it are made, since they only read its holder. A direct unlock of a mutex or rwlock that
// the worker holds through a held group, or of the rlock below the levels its held groups
// took, would pull a member out from under the group; it is skipped. So is set_depth then.
//
// Input encoding (a missing trailing byte reads as 0):
//   byte 0: seed for the creation order of the 7 locks.
//   then ops: op byte: bits 0-1 the worker (0..2; 3 = the previous op's worker),
//             (byte >> 2) % 20 the operation; most take one argument byte `a`.
//    0 GNEW      a: group slot a%3 (skipped when occupied)      surelock_group_new
//    1 GFREE     a: group a%3                                    surelock_group_free
//    2 GADD      a: group a%3, b: lock slot b%7; for an rwlock (b>>3)%4 is the mode:
//                   0 EXCLUSIVE, 1 SHARED, 2 mode 2, 3 mode -1   surelock_group_add_*
//    3 GCLEAR    a: group                                        surelock_group_clear
//    4 GSIZE     a: group                                        surelock_group_size
//    5 GLOCK     a: group a%3, policy (a/3)%4 (*)                surelock_group_lock
//    6 GTRYLOCK  a: group                                        surelock_group_trylock
//    7 GTIMED0   a: group                                        surelock_group_timedlock(g, 0)
//    8 GUNLOCK   a: group                                        surelock_group_unlock
//    9 NEW       a: lock slot a%7 (skipped unless freed)         surelock_{mutex,rwlock,rlock}_new
//   10 FREE      a: lock slot a%7                                *_free
//   11 LOCK      a: slot a%7; rwlock: bit 3 of a = shared;        *_lock / rdlock / wrlock
//                   policy (a>>4)&3 (*)
//   12 TRYLOCK   a: as LOCK                                      *_trylock / tryrdlock / trywrlock
//   13 TIMED0    a: as LOCK                                      *_timed*lock(l, 0)
//   14 UNLOCK    a: slot a%7                                     *_unlock
//   15 DEPTH     (no argument)                                   surelock_rlock_depth
//   16 SETDEPTH  a: a < 128: a, else UINT_MAX - (a - 128)        surelock_testing_rlock_set_depth
//   17 EXIT      (no argument) the worker's thread exits holding what it holds (its locks
//                   then report EOWNERDEAD, its groups become free); a fresh thread replaces it
//   18 FAILALLOC a: the next a%4 library allocations succeed, the one after fails
//   19 NULLCALL  a%16: NULL group/lock/out variants              expects EINVAL (size 0)
//   (*) when it would wait, policy 0-1: a short timed acquire instead; 2: a real wait ended
//       by the holders unlocking; 3: a real wait ended by the holders exiting (see above).
// An op on an empty slot is skipped. At most 256 ops are decoded per input. At the end of every
// input all holds are released, all groups and locks freed, checking each step.
//
// Set SURELOCK_FUZZ_TRACE=1 to print every operation and its result.

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "lockstep.h"
#include "surelock.h"
#include "sys/testing.h"

namespace {

constexpr int kWorkers = 3;
constexpr int kLocks = 7;
constexpr int kGroups = 3;
constexpr size_t kMaxOps = 256;
constexpr uint64_t kShortNs = 50 * 1000; // the timed stand-in for a wait that would block

enum Op {
    OP_GNEW, OP_GFREE, OP_GADD, OP_GCLEAR, OP_GSIZE, OP_GLOCK, OP_GTRYLOCK, OP_GTIMED0,
    OP_GUNLOCK, OP_NEW, OP_FREE, OP_LOCK, OP_TRYLOCK, OP_TIMED0, OP_UNLOCK, OP_DEPTH,
    OP_SETDEPTH, OP_EXIT, OP_FAILALLOC, OP_NULLCALL, OP_COUNT
};
const char *const op_names[OP_COUNT] = {
    "gnew", "gfree", "gadd", "gclear", "gsize", "glock", "gtrylock", "gtimed0", "gunlock",
    "new", "free", "lock", "trylock", "timed0", "unlock", "depth", "setdepth", "exit",
    "failalloc", "nullcall"};

enum Kind { MUTEX, RWLOCK, RLOCK };

Kind kind_of_slot(int slot) { return slot < 4 ? MUTEX : slot < 6 ? RWLOCK : RLOCK; }

// ---- model -------------------------------------------------------------------------------

struct MLock {
    Kind kind = MUTEX;
    bool alive = false;
    void *h = nullptr;
    uint64_t serial = 0;  // the model's creation counter: the group order
    int id = 0;           // for diagnostics
    int owner = -1;       // mutex/rlock holder; rwlock writer
    unsigned readers = 0; // rwlock: bit w = worker w holds a read hold
    unsigned depth = 0;   // rlock
    bool died = false;    // the next acquirer gets EOWNERDEAD
    int groups = 0;       // groups listing it
};

struct Member {
    int slot;
    bool shared;
};

struct MGroup {
    bool alive = false;
    surelock_group *h = nullptr;
    int id = 0;
    std::vector<Member> members; // sorted by their locks' serials
    size_t capacity = 0;
    int holder = -1;
};

struct MWorker {
    bool has_record = false; // the thread's library record exists
    // Its rwlock read-hold table (src/sys/hold_set.h): capacity 0 = not made yet; it grows
    // (8, 16, ...: an allocation) when one more hold would make it more than half full.
    uint32_t table_capacity = 0;
    uint32_t read_holds = 0;
};

struct State {
    bool initialised = false;
    bool trace = false;
    lockstep::Pool *pool = nullptr;
    MWorker workers[kWorkers];
    MLock locks[kLocks];
    MGroup groups[kGroups];
    uint64_t next_serial = 1;
    int next_id = 0;
    long alloc_countdown = -1;
    int prev_worker = 0;
    std::vector<std::string> log;
};

State &S = *new State; // never destroyed (see lockstep.h)

// ---- diagnostics -------------------------------------------------------------------------

std::string describe_lock(int slot)
{
    const MLock &L = S.locks[slot];
    char buf[64];
    const char *k = L.kind == MUTEX ? "mutex" : L.kind == RWLOCK ? "rwlock" : "rlock";
    if (!L.alive)
        snprintf(buf, sizeof buf, "%s%d(freed)", k, slot);
    else
        snprintf(buf, sizeof buf, "%s%d#%llu", k, slot, (unsigned long long)L.serial);
    return buf;
}

std::string describe_group(int g)
{
    const MGroup &G = S.groups[g];
    std::string s = "G" + std::to_string(g) + "{";
    for (size_t i = 0; i < G.members.size(); i++) {
        if (i) s += ",";
        s += describe_lock(G.members[i].slot);
        if (S.locks[G.members[i].slot].kind == RWLOCK) s += G.members[i].shared ? ":sh" : ":ex";
    }
    return s + "}";
}

void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lockstep::log_line(S.log, S.trace, "fuzz_group", fmt, ap);
    va_end(ap);
}

void dump_state()
{
    lockstep::print_log(S.log);
    fprintf(stderr, "---- model ----\n");
    for (int w = 0; w < kWorkers; w++)
        fprintf(stderr, "  T%d: %s, read-hold table of %u holding %u\n", w,
                S.workers[w].has_record ? "has record" : "no record",
                S.workers[w].table_capacity, S.workers[w].read_holds);
    for (int i = 0; i < kLocks; i++) {
        const MLock &L = S.locks[i];
        if (!L.alive) continue;
        fprintf(stderr, "  %s owner=%d readers=0x%x depth=%u died=%d groups=%d\n",
                describe_lock(i).c_str(), L.owner, L.readers, L.depth, L.died, L.groups);
    }
    for (int g = 0; g < kGroups; g++)
        if (S.groups[g].alive)
            fprintf(stderr, "  %s holder=%d capacity=%zu\n", describe_group(g).c_str(),
                    S.groups[g].holder, S.groups[g].capacity);
    fprintf(stderr, "  allocation countdown %ld\n", S.alloc_countdown);
}

[[noreturn]] void die(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
[[noreturn]] void die(const char *what, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nfuzz_group: %s: %s\n", what, buf);
    dump_state();
    fflush(stderr);
    abort();
}

void on_hang(const char *what) { die("HANG", "%s", what); }

const char *errname(int rc)
{
    switch (rc) {
    case 0: return "0";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EPERM: return "EPERM";
    case EAGAIN: return "EAGAIN";
    case EOWNERDEAD: return "EOWNERDEAD";
    case EDEADLK: return "EDEADLK";
    case EEXIST: return "EEXIST";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno %d", rc);
        return buf;
    }
    }
}

// ---- calls -------------------------------------------------------------------------------

struct Outcome {
    int rc = 0;
    lockstep::ErrmsgCopy before, after;
};

// Runs fn on worker w, with the worker's errmsg before and after.
Outcome exec(int w, const char *what, const std::function<int()> &fn)
{
    Outcome o;
    S.pool->run(w, [&] {
        o.before.take(surelock_errmsg());
        o.rc = fn();
        o.after.take(surelock_errmsg());
    }, what);
    return o;
}

// The same, for a call that waits for other workers: post_exec starts it, wait_exec
// collects it into o (which must outlive the call).
void post_exec(int w, Outcome &o, std::function<int()> fn)
{
    S.pool->post(w, [&o, fn] {
        o.before.take(surelock_errmsg());
        o.rc = fn();
        o.after.take(surelock_errmsg());
    });
}

void wait_exec(int w, const char *what) { S.pool->wait(w, what); }

bool is_error(int rc) { return rc != 0 && rc != EOWNERDEAD; }

// expected2: a second acceptable code where the contract leaves the precedence open.
void check(const char *call, int w, const Outcome &o, int expected, int expected2 = -1,
           bool errno_fn = true)
{
    if (o.rc != expected && o.rc != expected2) {
        if (expected2 >= 0)
            die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s or %s (errmsg \"%s\")",
                w, call, errname(o.rc), errname(expected), errname(expected2), o.after.text);
        die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s (errmsg \"%s\")", w, call,
            errname(o.rc), errname(expected), o.after.text);
    }
    if (o.after.null) die("MODEL MISMATCH", "T%d %s: surelock_errmsg() returned NULL", w, call);
    bool changed = strcmp(o.before.text, o.after.text) != 0;
    if (errno_fn && is_error(o.rc)) {
        if (o.after.text[0] == '\0')
            die("MODEL MISMATCH", "T%d %s returned %s but errmsg is empty", w, call,
                errname(o.rc));
    } else if (changed) {
        die("MODEL MISMATCH", "T%d %s returned %s but changed errmsg from \"%s\" to \"%s\"", w,
            call, errname(o.rc), o.before.text, o.after.text);
    }
}

// ---- model helpers -----------------------------------------------------------------------

bool model_allocation_fails()
{
    if (S.alloc_countdown < 0) return false;
    if (S.alloc_countdown == 0) {
        S.alloc_countdown = -1;
        return true;
    }
    S.alloc_countdown--;
    return false;
}

void set_allocation_countdown(long n)
{
    S.alloc_countdown = n;
    surelock_testing_fail_allocation_after(n);
}

bool held_by(const MLock &L, int w)
{
    if (L.kind == RWLOCK) return L.owner == w || (L.readers >> w & 1);
    return L.owner == w;
}

// Would an acquire of L by w (who does not hold it; rlock: other than by re-entry) wait?
bool busy_for(const MLock &L, int w, bool shared)
{
    if (L.kind != RWLOCK) return L.owner >= 0 && L.owner != w;
    if (shared) return L.owner >= 0;
    return L.owner >= 0 || (L.readers & ~(1u << w)) != 0;
}

// How many held groups of worker w list lock slot `slot`.
int via_groups(int slot, int w)
{
    int n = 0;
    for (const MGroup &G : S.groups)
        if (G.alive && G.holder == w)
            for (const Member &m : G.members)
                if (m.slot == slot) n++;
    return n;
}

// The calling thread's record: false when the model says creating it fails (ENOMEM).
bool model_record(int w)
{
    MWorker &W = S.workers[w];
    if (W.has_record) return true;
    if (model_allocation_fails()) return false;
    W.has_record = true;
    return true;
}

// Room for one more read hold of worker w: false when the table must grow and cannot.
bool model_take_hold(int w)
{
    MWorker &W = S.workers[w];
    if (W.table_capacity == 0 || 2 * (W.read_holds + 1) > W.table_capacity) {
        if (model_allocation_fails()) return false;
        W.table_capacity = W.table_capacity == 0 ? 8 : 2 * W.table_capacity;
    }
    W.read_holds++;
    return true;
}

// A read hold given back (or not taken after all); the table keeps its size.
void model_return_hold(int w) { S.workers[w].read_holds--; }

// Takes L for w (free for w in the wanted mode). Returns 0 or EOWNERDEAD.
int model_take(MLock &L, int w, bool shared)
{
    if (L.kind == RWLOCK && shared) L.readers |= 1u << w;
    else L.owner = w;
    if (L.kind == RLOCK) L.depth = 1;
    if (L.died) {
        L.died = false;
        return EOWNERDEAD;
    }
    return 0;
}

// w releases one level of its hold on L.
void model_release(MLock &L, int w)
{
    switch (L.kind) {
    case MUTEX: L.owner = -1; break;
    case RLOCK:
        if (--L.depth == 0) L.owner = -1;
        break;
    case RWLOCK:
        if (L.owner == w) {
            L.owner = -1;
        } else {
            L.readers &= ~(1u << w);
            model_return_hold(w);
        }
        break;
    }
}

void check_depth_after(int w, const char *after)
{
    const MLock &R = S.locks[6];
    if (!R.alive) return;
    unsigned expected = R.owner == w ? R.depth : 0;
    unsigned got = 0;
    S.pool->run(w, [&] { got = surelock_rlock_depth(static_cast<surelock_rlock *>(R.h)); },
                "surelock_rlock_depth");
    note("T%d   depth(%s) -> %u", w, describe_lock(6).c_str(), got);
    if (got != expected)
        die("MODEL MISMATCH", "T%d surelock_rlock_depth(%s) after %s returned %u, the model "
                              "expects %u", w, describe_lock(6).c_str(), after, got, expected);
}

// ---- lock objects ------------------------------------------------------------------------

void do_new(int w, int slot)
{
    MLock &L = S.locks[slot];
    bool fails = model_allocation_fails();
    void *out = nullptr;
    const char *fn = L.kind == MUTEX ? "surelock_mutex_new"
                     : L.kind == RWLOCK ? "surelock_rwlock_new"
                                        : "surelock_rlock_new";
    Outcome o = exec(w, fn, [&] {
        switch (L.kind) {
        case MUTEX: return surelock_mutex_new(reinterpret_cast<surelock_mutex **>(&out));
        case RWLOCK: return surelock_rwlock_new(reinterpret_cast<surelock_rwlock **>(&out));
        default: return surelock_rlock_new(reinterpret_cast<surelock_rlock **>(&out));
        }
    });
    note("T%d %s -> slot %d: %s", w, fn, slot, errname(o.rc));
    check(fn, w, o, fails ? ENOMEM : 0);
    if (fails) {
        if (out != nullptr) die("MODEL MISMATCH", "failed %s wrote *out", fn);
        return;
    }
    if (out == nullptr) die("MODEL MISMATCH", "%s returned 0 but *out is NULL", fn);
    Kind k = L.kind;
    L = MLock{};
    L.kind = k;
    L.alive = true;
    L.h = out;
    L.serial = S.next_serial++;
    L.id = ++S.next_id;
}

void do_free(int w, int slot)
{
    MLock &L = S.locks[slot];
    bool held = L.kind == RWLOCK ? (L.owner >= 0 || L.readers != 0) : L.owner >= 0;
    int expected = held || L.groups > 0 ? EBUSY : 0;
    std::string call = "free(" + describe_lock(slot) + ")";
    Outcome o = exec(w, call.c_str(), [&] {
        switch (L.kind) {
        case MUTEX: return surelock_mutex_free(static_cast<surelock_mutex *>(L.h));
        case RWLOCK: return surelock_rwlock_free(static_cast<surelock_rwlock *>(L.h));
        default: return surelock_rlock_free(static_cast<surelock_rlock *>(L.h));
        }
    });
    note("T%d %s -> %s", w, call.c_str(), errname(o.rc));
    check(call.c_str(), w, o, expected);
    if (o.rc == 0) {
        L.alive = false;
        L.h = nullptr;
    }
}

enum class Acq { block, trylock, timed0 };

int call_acquire(const MLock &L, bool shared, Acq kind, uint64_t ns)
{
    switch (L.kind) {
    case MUTEX: {
        auto *m = static_cast<surelock_mutex *>(L.h);
        return kind == Acq::block     ? surelock_mutex_lock(m)
               : kind == Acq::trylock ? surelock_mutex_trylock(m)
                                      : surelock_mutex_timedlock(m, ns);
    }
    case RLOCK: {
        auto *r = static_cast<surelock_rlock *>(L.h);
        return kind == Acq::block     ? surelock_rlock_lock(r)
               : kind == Acq::trylock ? surelock_rlock_trylock(r)
                                      : surelock_rlock_timedlock(r, ns);
    }
    default: {
        auto *l = static_cast<surelock_rwlock *>(L.h);
        if (shared)
            return kind == Acq::block     ? surelock_rwlock_rdlock(l)
                   : kind == Acq::trylock ? surelock_rwlock_tryrdlock(l)
                                          : surelock_rwlock_timedrdlock(l, ns);
        return kind == Acq::block     ? surelock_rwlock_wrlock(l)
               : kind == Acq::trylock ? surelock_rwlock_trywrlock(l)
                                      : surelock_rwlock_timedwrlock(l, ns);
    }
    }
}

// The model of an acquire of L by w, in the library's order of checks (mutates the model).
int predict_acquire(int w, MLock &L, bool shared, Acq kind)
{
    if (!model_record(w)) return ENOMEM;
    if (L.kind == RLOCK && L.owner == w) {
        if (L.depth == UINT_MAX) return EAGAIN;
        L.depth++;
        return 0;
    }
    if (held_by(L, w)) return EDEADLK;
    if (L.kind == RWLOCK && shared && !model_take_hold(w)) return ENOMEM;
    if (busy_for(L, w, shared)) {
        if (L.kind == RWLOCK && shared) model_return_hold(w);
        return kind == Acq::trylock ? EBUSY : ETIMEDOUT;
    }
    return model_take(L, w, shared);
}

void release_blockers(int w, const std::vector<Member> &needed, bool by_exit);
void do_exit(int w);
void do_gunlock(int w, int g);

// policy (blocking forms that would wait): 0-1 a short timed wait instead, 2 a real wait that
// the holders end by unlocking, 3 a real wait that they end by exiting.
void do_acquire(int w, int slot, bool shared, Acq kind, int policy)
{
    MLock &L = S.locks[slot];
    if (L.kind != RWLOCK) shared = false;
    uint64_t ns = 0;
    bool handoff = false;
    if (kind == Acq::block && !held_by(L, w) && busy_for(L, w, shared)) {
        if (policy >= 2) {
            handoff = true;
        } else { // a short timed acquire instead (see the top)
            kind = Acq::timed0;
            ns = kShortNs;
        }
    }
    const char *fn = kind == Acq::block ? "lock" : kind == Acq::trylock ? "trylock" : "timedlock";
    char call[128];
    snprintf(call, sizeof call, "%s%s(%s%s)", L.kind == RWLOCK ? (shared ? "rd" : "wr") : "", fn,
             describe_lock(slot).c_str(),
             kind == Acq::timed0 ? (ns ? ", short" : ", 0") : "");
    MLock handle = L; // the worker reads only kind and h; the driver changes L meanwhile
    auto real = [handle, shared, kind, ns] { return call_acquire(handle, shared, kind, ns); };
    if (!handoff) {
        int expected = predict_acquire(w, L, shared, kind);
        Outcome o = exec(w, call, real);
        note("T%d %s -> %s", w, call, errname(o.rc));
        check(call, w, o, expected);
        return;
    }
    static Outcome o;
    post_exec(w, o, real);
    note("T%d %s waits; its holders %s", w, call, policy == 3 ? "exit" : "let go");
    release_blockers(w, {Member{slot, shared}}, policy == 3);
    int expected = predict_acquire(w, L, shared, kind); // nothing is in its way now
    wait_exec(w, call);
    note("T%d %s (woken) -> %s", w, call, errname(o.rc));
    check(call, w, o, expected);
}

void do_unlock(int w, int slot)
{
    MLock &L = S.locks[slot];
    int levels = via_groups(slot, w);
    if (levels > 0 && (L.kind != RLOCK || L.depth <= (unsigned)levels)) {
        note("T%d unlock(%s) skipped: it would release a hold of a held group", w,
             describe_lock(slot).c_str());
        return;
    }
    int expected = held_by(L, w) ? 0 : EPERM;
    std::string call = "unlock(" + describe_lock(slot) + ")";
    Outcome o = exec(w, call.c_str(), [&] {
        switch (L.kind) {
        case MUTEX: return surelock_mutex_unlock(static_cast<surelock_mutex *>(L.h));
        case RWLOCK: return surelock_rwlock_unlock(static_cast<surelock_rwlock *>(L.h));
        default: return surelock_rlock_unlock(static_cast<surelock_rlock *>(L.h));
        }
    });
    note("T%d %s -> %s", w, call.c_str(), errname(o.rc));
    check(call.c_str(), w, o, expected);
    if (expected == 0) model_release(L, w);
}

void do_depth(int w) { check_depth_after(w, "nothing"); }

void do_setdepth(int w, unsigned value)
{
    MLock &R = S.locks[6];
    if (via_groups(6, w) > 0) {
        note("T%d set_depth skipped: a held group holds the rlock", w);
        return;
    }
    bool ok = value != 0 && S.workers[w].has_record && R.owner == w;
    char call[96];
    snprintf(call, sizeof call, "set_depth(%s, %u)", describe_lock(6).c_str(), value);
    Outcome o = exec(w, call, [&] {
        return surelock_testing_rlock_set_depth(static_cast<surelock_rlock *>(R.h), value);
    });
    note("T%d %s -> %s", w, call, errname(o.rc));
    if (o.rc != (ok ? 0 : EINVAL))
        die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s", w, call,
            errname(o.rc), ok ? "0" : "EINVAL");
    if (ok) R.depth = value;
}

// ---- groups ------------------------------------------------------------------------------

void do_gnew(int w, int g)
{
    MGroup &G = S.groups[g];
    bool fails = model_allocation_fails();
    surelock_group *out = nullptr;
    Outcome o = exec(w, "surelock_group_new", [&] { return surelock_group_new(&out); });
    note("T%d group_new -> G%d: %s", w, g, errname(o.rc));
    check("surelock_group_new", w, o, fails ? ENOMEM : 0);
    if (fails) {
        if (out != nullptr) die("MODEL MISMATCH", "failed surelock_group_new wrote *out");
        return;
    }
    if (out == nullptr) die("MODEL MISMATCH", "surelock_group_new returned 0 but *out is NULL");
    G = MGroup{};
    G.alive = true;
    G.h = out;
    G.id = ++S.next_id;
}

void drop_members(MGroup &G)
{
    for (const Member &m : G.members) S.locks[m.slot].groups--;
    G.members.clear();
}

void do_gfree(int w, int g)
{
    MGroup &G = S.groups[g];
    int expected = G.holder >= 0 ? EBUSY : 0;
    std::string call = "group_free(" + describe_group(g) + ")";
    Outcome o = exec(w, call.c_str(), [&] { return surelock_group_free(G.h); });
    note("T%d %s -> %s", w, call.c_str(), errname(o.rc));
    check(call.c_str(), w, o, expected);
    if (expected == 0) {
        drop_members(G);
        G.alive = false;
        G.h = nullptr;
    }
}

void do_gclear(int w, int g)
{
    MGroup &G = S.groups[g];
    int expected = G.holder >= 0 ? EBUSY : 0;
    std::string call = "group_clear(" + describe_group(g) + ")";
    Outcome o = exec(w, call.c_str(), [&] { return surelock_group_clear(G.h); });
    note("T%d %s -> %s", w, call.c_str(), errname(o.rc));
    check(call.c_str(), w, o, expected);
    if (expected == 0) drop_members(G); // the member array (capacity) is kept
}

void do_gsize(int w, int g)
{
    MGroup &G = S.groups[g];
    size_t got = 0;
    std::string call = "group_size(" + describe_group(g) + ")";
    Outcome o = exec(w, call.c_str(), [&] {
        got = surelock_group_size(G.h);
        return 0;
    });
    note("T%d %s -> %zu", w, call.c_str(), got);
    check(call.c_str(), w, o, 0, -1, false);
    if (got != G.members.size())
        die("MODEL MISMATCH", "T%d %s returned %zu, the model expects %zu", w, call.c_str(), got,
            G.members.size());
}

void do_gadd(int w, int g, int slot, int mode_code)
{
    MGroup &G = S.groups[g];
    MLock &L = S.locks[slot];
    int mode = L.kind != RWLOCK ? 0
               : mode_code == 0 ? SURELOCK_EXCLUSIVE
               : mode_code == 1 ? SURELOCK_SHARED
               : mode_code == 2 ? 2
                                : -1;
    bool bad_mode = L.kind == RWLOCK && mode != SURELOCK_EXCLUSIVE && mode != SURELOCK_SHARED;
    bool dup = false;
    for (const Member &m : G.members)
        if (m.slot == slot) dup = true;
    // Several errors at once: the contract does not rank them, so either is accepted; none of
    // them allocates.
    int expected, expected2 = -1;
    bool grows = false;
    if (G.holder >= 0) {
        expected = EBUSY;
        if (bad_mode) expected2 = EINVAL;
        else if (dup) expected2 = EEXIST;
    } else if (bad_mode) {
        expected = EINVAL;
        if (dup) expected2 = EEXIST;
    } else if (dup) {
        expected = EEXIST;
    } else {
        grows = G.members.size() == G.capacity;
        expected = grows && model_allocation_fails() ? ENOMEM : 0;
    }
    char call[160];
    snprintf(call, sizeof call, "group_add_%s(%s, %s%s)",
             L.kind == MUTEX ? "mutex" : L.kind == RWLOCK ? "rwlock" : "rlock",
             describe_group(g).c_str(), describe_lock(slot).c_str(),
             L.kind != RWLOCK ? ""
             : mode == SURELOCK_EXCLUSIVE ? ", EXCLUSIVE"
             : mode == SURELOCK_SHARED    ? ", SHARED"
             : mode == 2                  ? ", mode 2"
                                          : ", mode -1");
    Outcome o = exec(w, call, [&] {
        switch (L.kind) {
        case MUTEX: return surelock_group_add_mutex(G.h, static_cast<surelock_mutex *>(L.h));
        case RWLOCK:
            return surelock_group_add_rwlock(G.h, static_cast<surelock_rwlock *>(L.h), mode);
        default: return surelock_group_add_rlock(G.h, static_cast<surelock_rlock *>(L.h));
        }
    });
    note("T%d %s -> %s", w, call, errname(o.rc));
    check(call, w, o, expected, expected2);
    if (o.rc != 0) return;
    if (grows) G.capacity = G.capacity ? G.capacity * 2 : 4;
    Member m{slot, mode == SURELOCK_SHARED};
    auto at = std::find_if(G.members.begin(), G.members.end(), [&](const Member &x) {
        return S.locks[x.slot].serial > L.serial;
    });
    G.members.insert(at, m);
    L.groups++;
}

// The no-deadlock rule: EDEADLK if w holds the group, a member mutex/rwlock, or a member rlock
// that comes after a member it does not hold (in serial order).
bool model_group_deadlock(const MGroup &G, int w)
{
    if (G.holder == w) return true;
    bool seen_unheld = false;
    for (const Member &m : G.members) {
        const MLock &L = S.locks[m.slot];
        if (!held_by(L, w)) {
            seen_unheld = true;
            continue;
        }
        if (L.kind != RLOCK || seen_unheld) return true;
    }
    return false;
}

// The first member an acquire of G by w would wait for (-1: none), ignoring errors.
int first_blocker(const MGroup &G, int w)
{
    for (size_t i = 0; i < G.members.size(); i++) {
        const MLock &L = S.locks[G.members[i].slot];
        if (L.kind == RLOCK && L.owner == w) continue;
        if (busy_for(L, w, G.members[i].shared)) return (int)i;
    }
    return -1;
}

// The model of a group acquire by w (mutates the model).
int predict_glock(int w, MGroup &G, Acq kind)
{
    if (!model_record(w)) return ENOMEM;
    if (model_group_deadlock(G, w)) return EDEADLK;
    std::vector<std::pair<int, bool>> taken; // slot, taken with EOWNERDEAD
    bool owner_died = false;
    for (const Member &m : G.members) {
        MLock &L = S.locks[m.slot];
        int rc;
        if (L.kind == RLOCK && L.owner == w) {
            rc = L.depth == UINT_MAX ? EAGAIN : 0;
            if (rc == 0) L.depth++;
        } else if (L.kind == RWLOCK && m.shared && !model_take_hold(w)) {
            rc = ENOMEM;
        } else if (busy_for(L, w, m.shared)) {
            rc = kind == Acq::trylock ? EBUSY : ETIMEDOUT;
            if (L.kind == RWLOCK && m.shared) model_return_hold(w);
        } else {
            rc = model_take(L, w, m.shared);
        }
        bool died = rc == EOWNERDEAD;
        if (died) {
            owner_died = true;
            rc = 0;
        }
        if (rc != 0) {
            // All or nothing: back out, newest first; a member taken with EOWNERDEAD passes
            // the notice on to its next acquirer.
            for (size_t i = taken.size(); i-- > 0;) {
                MLock &T = S.locks[taken[i].first];
                model_release(T, w);
                if (taken[i].second) T.died = true;
            }
            return rc;
        }
        taken.push_back({m.slot, died});
    }
    G.holder = w;
    return owner_died ? EOWNERDEAD : 0;
}

// policy: as for do_acquire.
void do_glock(int w, int g, Acq kind, int policy)
{
    MGroup &G = S.groups[g];
    if (G.holder >= 0 && G.holder != w) {
        note("T%d group lock of G%d skipped: T%d holds it (one thread at a time)", w, g,
             G.holder);
        return;
    }
    uint64_t ns = 0;
    bool handoff = false;
    if (kind == Acq::block && G.holder != w && !model_group_deadlock(G, w)) {
        int b = first_blocker(G, w);
        if (b >= 0 && policy >= 2) {
            handoff = true;
        } else if (b >= 0) {
            kind = Acq::timed0;
            ns = kShortNs;
        }
    }
    const char *fn = kind == Acq::block     ? "group_lock"
                     : kind == Acq::trylock ? "group_trylock"
                                            : "group_timedlock";
    char call[256];
    snprintf(call, sizeof call, "%s(%s%s)", fn, describe_group(g).c_str(),
             kind == Acq::timed0 ? (ns ? ", short" : ", 0") : "");
    surelock_group *h = G.h;
    auto real = [h, kind, ns] {
        return kind == Acq::block     ? surelock_group_lock(h)
               : kind == Acq::trylock ? surelock_group_trylock(h)
                                      : surelock_group_timedlock(h, ns);
    };
    if (!handoff) {
        int expected = predict_glock(w, G, kind);
        Outcome o = exec(w, call, real);
        note("T%d %s -> %s", w, call, errname(o.rc));
        check(call, w, o, expected);
        check_depth_after(w, call);
        return;
    }
    static Outcome o;
    post_exec(w, o, real);
    note("T%d %s waits; its members' holders %s", w, call, policy == 3 ? "exit" : "let go");
    release_blockers(w, G.members, policy == 3);
    int expected = predict_glock(w, G, kind); // nothing is in its way now
    wait_exec(w, call);
    note("T%d %s (woken) -> %s", w, call, errname(o.rc));
    check(call, w, o, expected);
    check_depth_after(w, call);
}

void do_gunlock(int w, int g)
{
    MGroup &G = S.groups[g];
    int expected = G.holder == w ? 0 : EPERM;
    std::string call = "group_unlock(" + describe_group(g) + ")";
    Outcome o = exec(w, call.c_str(), [&] { return surelock_group_unlock(G.h); });
    note("T%d %s -> %s", w, call.c_str(), errname(o.rc));
    check(call.c_str(), w, o, expected);
    if (expected == 0) {
        G.holder = -1;
        for (size_t i = G.members.size(); i-- > 0;) model_release(S.locks[G.members[i].slot], w);
    }
    check_depth_after(w, call.c_str());
}

// ---- hand-off: ending a real wait ---------------------------------------------------------

// Worker w waits (really) for the locks of `needed`. Every other worker whose hold is in its
// way lets go of it: it exits (by_exit), or unlocks its held groups that list the lock and
// then its own holds. Only these workers act meanwhile, and nothing they do allocates, so
// what w ends up with does not depend on when it wakes.
void release_blockers(int w, const std::vector<Member> &needed, bool by_exit)
{
    for (;;) {
        int holder = -1, slot = -1;
        for (const Member &m : needed) {
            const MLock &L = S.locks[m.slot];
            if (L.kind == RLOCK && L.owner == w) continue;
            for (int h = 0; h < kWorkers && holder < 0; h++) {
                if (h == w) continue;
                bool blocks = L.owner == h || (L.kind == RWLOCK && !m.shared && (L.readers >> h & 1));
                if (blocks) {
                    holder = h;
                    slot = m.slot;
                }
            }
            if (holder >= 0) break;
        }
        if (holder < 0) return;
        if (by_exit) {
            do_exit(holder);
            continue;
        }
        for (int g = 0; g < kGroups; g++) {
            const MGroup &G = S.groups[g];
            if (!G.alive || G.holder != holder) continue;
            for (const Member &m : G.members)
                if (m.slot == slot) {
                    do_gunlock(holder, g);
                    break;
                }
        }
        MLock &L = S.locks[slot];
        if (L.kind == RLOCK && L.owner == holder && L.depth > 64) do_setdepth(holder, 1);
        while (held_by(L, holder)) do_unlock(holder, slot);
    }
}

// ---- everything else ---------------------------------------------------------------------

void do_exit(int w)
{
    note("T%d exits", w);
    S.pool->exit_worker(w);
    for (MLock &L : S.locks) {
        if (!L.alive) continue;
        if (L.owner == w) {
            L.owner = -1;
            L.depth = 0;
            L.died = true;
        }
        L.readers &= ~(1u << w); // a dead reader's hold is dropped silently
    }
    for (MGroup &G : S.groups)
        if (G.alive && G.holder == w) G.holder = -1;
    S.workers[w] = MWorker{};
}

void do_nullcall(int w, int variant)
{
    surelock_group *g = nullptr;
    int gi = -1;
    for (int i = 0; i < kGroups && gi < 0; i++)
        if (S.groups[i].alive) gi = i;
    if (gi >= 0) g = S.groups[gi].h;
    // With a held group, NULL-lock adds could also say EBUSY: the contract ranks neither.
    int alt = gi >= 0 && S.groups[gi].holder >= 0 ? EBUSY : -1;
    const char *what;
    std::function<int()> fn;
    bool errno_fn = true;
    size_t size = 1;
    switch (variant) {
    case 0: what = "group_new(NULL)"; fn = [] { return surelock_group_new(nullptr); }; break;
    case 1: what = "group_free(NULL)"; fn = [] { return surelock_group_free(nullptr); }; break;
    case 2:
        what = "group_add_mutex(NULL, NULL)";
        fn = [] { return surelock_group_add_mutex(nullptr, nullptr); };
        alt = -1;
        break;
    case 3: what = "group_add_mutex(G, NULL)"; fn = [g] { return surelock_group_add_mutex(g, nullptr); }; break;
    case 4:
        what = "group_add_rwlock(G, NULL, SHARED)";
        fn = [g] { return surelock_group_add_rwlock(g, nullptr, SURELOCK_SHARED); };
        break;
    case 5: what = "group_add_rlock(G, NULL)"; fn = [g] { return surelock_group_add_rlock(g, nullptr); }; break;
    case 6: what = "group_add_ipc(G, NULL)"; fn = [g] { return surelock_group_add_ipc(g, nullptr); }; break;
    case 7: what = "group_clear(NULL)"; fn = [] { return surelock_group_clear(nullptr); }; break;
    case 8:
        what = "group_size(NULL)";
        errno_fn = false;
        fn = [&size] {
            size = surelock_group_size(nullptr);
            return 0;
        };
        break;
    case 9: what = "group_lock(NULL)"; fn = [] { return surelock_group_lock(nullptr); }; break;
    case 10: what = "group_trylock(NULL)"; fn = [] { return surelock_group_trylock(nullptr); }; break;
    case 11: what = "group_timedlock(NULL, 0)"; fn = [] { return surelock_group_timedlock(nullptr, 0); }; break;
    case 12: what = "group_unlock(NULL)"; fn = [] { return surelock_group_unlock(nullptr); }; break;
    case 13: what = "mutex_new(NULL)"; fn = [] { return surelock_mutex_new(nullptr); }; break;
    case 14: what = "rwlock_new(NULL)"; fn = [] { return surelock_rwlock_new(nullptr); }; break;
    default: what = "rlock_new(NULL)"; fn = [] { return surelock_rlock_new(nullptr); }; break;
    }
    if (variant < 3 || variant > 6) alt = -1;
    Outcome o = exec(w, what, fn);
    note("T%d %s -> %s", w, what, errno_fn ? errname(o.rc) : std::to_string(size).c_str());
    if (!errno_fn) {
        check(what, w, o, 0, -1, false);
        if (size != 0) die("MODEL MISMATCH", "T%d %s returned %zu", w, what, size);
    } else {
        check(what, w, o, EINVAL, alt);
    }
}

// ---- per-input setup and cleanup ---------------------------------------------------------

void initialise()
{
    S.initialised = true;
    const char *t = getenv("SURELOCK_FUZZ_TRACE");
    S.trace = t != nullptr && *t != '\0' && strcmp(t, "0") != 0;
    S.pool = new lockstep::Pool(kWorkers, on_hang);
    for (int i = 0; i < kLocks; i++) S.locks[i].kind = kind_of_slot(i);
}

void setup(uint8_t seed)
{
    // Creation order: a permutation of the slots drawn from the seed.
    int order[kLocks];
    for (int i = 0; i < kLocks; i++) order[i] = i;
    uint32_t x = seed * 2654435761u + 12345;
    for (int i = kLocks - 1; i > 0; i--) {
        x = x * 1103515245u + 12345;
        int j = (int)((x >> 16) % (uint32_t)(i + 1));
        std::swap(order[i], order[j]);
    }
    for (int i = 0; i < kLocks; i++) do_new(0, order[i]);
}

void cleanup()
{
    set_allocation_countdown(-1);
    note("-- cleanup --");
    for (int g = 0; g < kGroups; g++)
        if (S.groups[g].alive && S.groups[g].holder >= 0) do_gunlock(S.groups[g].holder, g);
    for (int w = 0; w < kWorkers; w++)
        for (int i = 0; i < kLocks; i++) {
            MLock &L = S.locks[i];
            if (!L.alive) continue;
            if (L.kind == RLOCK && L.owner == w && L.depth > 64) do_setdepth(w, 1);
            while (held_by(L, w)) do_unlock(w, i);
        }
    for (int g = 0; g < kGroups; g++)
        if (S.groups[g].alive) do_gfree(0, g);
    for (int i = 0; i < kLocks; i++)
        if (S.locks[i].alive) do_free(0, i);
    for (int i = 0; i < kLocks; i++)
        if (S.locks[i].alive) die("HARNESS", "cleanup left %s", describe_lock(i).c_str());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!S.initialised) initialise();
    S.log.clear();
    set_allocation_countdown(-1);
    S.prev_worker = 0;
    size_t pos = 0;
    auto next = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
    setup(next());
    for (size_t ops = 0; pos < size && ops < kMaxOps; ops++) {
        uint8_t b = next();
        int w = (b & 3) == 3 ? S.prev_worker : (b & 3);
        S.prev_worker = w;
        int op = (b >> 2) % OP_COUNT;
        uint8_t a = 0, a2 = 0;
        switch (op) {
        case OP_DEPTH: case OP_EXIT: break;
        case OP_GADD: a = next(); a2 = next(); break;
        default: a = next(); break;
        }
        int g = a % kGroups, slot = a % kLocks;
        switch (op) {
        case OP_GFREE: case OP_GADD: case OP_GCLEAR: case OP_GSIZE: case OP_GLOCK:
        case OP_GTRYLOCK: case OP_GTIMED0: case OP_GUNLOCK:
            if (!S.groups[g].alive) {
                note("T%d %s skipped: group slot %d empty", w, op_names[op], g);
                continue;
            }
            break;
        case OP_FREE: case OP_LOCK: case OP_TRYLOCK: case OP_TIMED0: case OP_UNLOCK:
            if (!S.locks[slot].alive) {
                note("T%d %s skipped: lock slot %d empty", w, op_names[op], slot);
                continue;
            }
            break;
        case OP_DEPTH: case OP_SETDEPTH:
            if (!S.locks[6].alive) {
                note("T%d %s skipped: the rlock is freed", w, op_names[op]);
                continue;
            }
            break;
        default: break;
        }
        switch (op) {
        case OP_GNEW:
            if (S.groups[g].alive) note("T%d gnew skipped: group slot %d occupied", w, g);
            else do_gnew(w, g);
            break;
        case OP_GFREE: do_gfree(w, g); break;
        case OP_GADD: {
            int ls = a2 % kLocks;
            if (!S.locks[ls].alive) note("T%d gadd skipped: lock slot %d empty", w, ls);
            else do_gadd(w, g, ls, (a2 >> 3) % 4);
            break;
        }
        case OP_GCLEAR: do_gclear(w, g); break;
        case OP_GSIZE: do_gsize(w, g); break;
        case OP_GLOCK: do_glock(w, g, Acq::block, (a / 3) % 4); break;
        case OP_GTRYLOCK: do_glock(w, g, Acq::trylock, 0); break;
        case OP_GTIMED0: do_glock(w, g, Acq::timed0, 0); break;
        case OP_GUNLOCK: do_gunlock(w, g); break;
        case OP_NEW:
            if (S.locks[slot].alive) note("T%d new skipped: lock slot %d occupied", w, slot);
            else do_new(w, slot);
            break;
        case OP_FREE: do_free(w, slot); break;
        case OP_LOCK: do_acquire(w, slot, a >> 3 & 1, Acq::block, a >> 4 & 3); break;
        case OP_TRYLOCK: do_acquire(w, slot, a >> 3 & 1, Acq::trylock, 0); break;
        case OP_TIMED0: do_acquire(w, slot, a >> 3 & 1, Acq::timed0, 0); break;
        case OP_UNLOCK: do_unlock(w, slot); break;
        case OP_DEPTH: do_depth(w); break;
        case OP_SETDEPTH: do_setdepth(w, a < 128 ? a : UINT_MAX - (unsigned)(a - 128)); break;
        case OP_EXIT: do_exit(w); break;
        case OP_FAILALLOC:
            note("fail the allocation after the next %d", a % 4);
            set_allocation_countdown(a % 4);
            break;
        case OP_NULLCALL: do_nullcall(w, a % 16); break;
        default: break;
        }
    }
    cleanup();
    return 0;
}
