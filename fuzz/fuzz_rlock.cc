// State-machine fuzzer for the reentrant lock (API.md section 1).
//
// The input bytes decode into a sequence of surelock_rlock_* calls made by up to three worker
// threads, which the fuzzer's own thread (the driver) runs in lockstep (fuzz/lockstep.h): it
// posts one call to a worker and waits for its result, except for an acquire that the model says must wait for
// another worker, which leaves that worker "blocked" until the holder lets go. A small
// reference model predicts every return code, every depth, the pointer surelock_rlock_global
// returns for a name, and which calls allocate (so allocation failures injected through the
// SURELOCK_TESTING hook land exactly where the model says ENOMEM). Any disagreement prints the
// call trace and the model's state and aborts, which libFuzzer records as a crash.
//
// Besides return codes and depths the model checks: out-pointers are written only on success;
// a new handle differs from every live one; errmsg is never NULL, non-empty after an error and
// unchanged by a call that succeeds (or returns EOWNERDEAD); a blocked thread does not return
// while another thread holds its lock; when the holder lets go (last unlock, or thread exit,
// which makes it EOWNERDEAD) one waiter gets the lock and the others keep waiting. A result
// or wake-up that takes more than 10 s aborts as a HANG.
//
// Every input leaves nothing behind: at its end all holds are released, the locks from
// surelock_rlock_new are freed, and an "owner died" still pending on a global lock is consumed,
// so the next input starts from a clean model. Worker threads persist across inputs (thread
// creation is slow) and are replaced only by the "thread exit" operation.
//
// Input encoding (a missing trailing byte reads as 0):
//   op byte:  bits 0-1 select the thread (0..2; 3 = the previous op's thread),
//             (byte >> 2) % 14 the operation below; most take one argument byte `a`.
//    0 NEW        a: new-lock slot a%4 (skipped when occupied)        surelock_rlock_new
//    1 FREE       a: slot a%8                                         surelock_rlock_free
//    2 LOCK       a: slot                                             surelock_rlock_lock
//    3 TRYLOCK    a: slot                                             surelock_rlock_trylock
//    4 TIMED0     a: slot                                             surelock_rlock_timedlock(l, 0)
//    5 TIMED      a: slot, b: timeout (b%4: 0 = 2..128 us, 1 = 30 s, 2 = SURELOCK_FOREVER,
//                    3 = UINT64_MAX - 1 - b/4); all but the first wait for a busy lock
//    6 UNLOCK     a: slot                                             surelock_rlock_unlock
//    7 DEPTH      a: slot                                             surelock_rlock_depth
//    8 GLOBAL     a: name a%6 into global slot 4+min(a%6,3): 0 "surelock-fuzz", 1 "\xff",
//                    2 a 255-byte name, 3 the same 255 bytes but the last, 4 a fresh name,
//                    5 a name in the same registry bucket as 0 (for the current hash)
//    9 BADGLOBAL  a%6: NULL name, "", 256 bytes, 1000 bytes, NULL out (existing name),
//                    NULL out (never-created name)                    expects EINVAL
//   10 NULLCALL   a%9: new/free/lock/trylock/timedlock(0)/timedlock(forever)/unlock/depth/
//                    set_depth with a NULL handle                     expects EINVAL (depth 0)
//   11 EXIT       (no argument) the thread exits holding what it holds; a fresh thread
//                    takes its place
//   12 FAILALLOC  a: the next a%4 library allocations succeed, the one after fails
//   13 SETDEPTH   a: slot, b: depth (b < 128: b, else UINT_MAX - (b - 128))
//                    surelock_testing_rlock_set_depth, to reach EAGAIN at UINT_MAX
// Slots 0-3 hold locks from NEW, 4-7 handles from GLOBAL; an op on an empty slot, by a blocked
// thread, or a blocking acquire that would close a wait cycle is skipped. So is a blocking
// acquire by a thread that has never taken a lock: its per-thread record would be allocated
// asynchronously, racing with the driver's next allocation-failure injection. At most 256 ops
// are decoded per input.
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
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "lockstep.h"
#include "surelock.h"
#include "sys/testing.h"

namespace {

constexpr int kWorkers = 3;
constexpr int kNewSlots = 4;
constexpr int kSlots = 8;
constexpr size_t kMaxOps = 256;
constexpr long kMaxFreshNames = 1000; // globals are never freed: bound what the fuzzer leaks
constexpr uint64_t kLongTimeout = 30ull * 1000 * 1000 * 1000;

enum Op {
    OP_NEW, OP_FREE, OP_LOCK, OP_TRYLOCK, OP_TIMED0, OP_TIMED, OP_UNLOCK, OP_DEPTH, OP_GLOBAL,
    OP_BADGLOBAL, OP_NULLCALL, OP_EXIT, OP_FAILALLOC, OP_SETDEPTH, OP_COUNT
};
const char *const op_names[OP_COUNT] = {
    "new", "free", "lock", "trylock", "timedlock0", "timedlock", "unlock", "depth", "global",
    "badglobal", "nullcall", "exit", "failalloc", "setdepth"};

enum CallKind { C_NEW, C_FREE, C_GLOBAL, C_LOCK, C_TRYLOCK, C_TIMED, C_UNLOCK, C_DEPTH,
                C_SETDEPTH };

struct Call {
    CallKind kind;
    surelock_rlock *l;
    uint64_t ns;
    unsigned value;
    const char *name;
    bool null_out;
};

struct Result {
    int rc;
    unsigned depth;
    surelock_rlock *out;
    bool errmsg_null;
    bool errmsg_changed;
    char errmsg[256];
};

surelock_rlock *const kSentinel = reinterpret_cast<surelock_rlock *>(uintptr_t{0x5e1f00});

// ---- model -------------------------------------------------------------------------------

struct MLock {
    surelock_rlock *h = nullptr;
    bool global = false;
    std::string name;     // globals only
    int owner = -1;       // worker index
    unsigned depth = 0;
    bool died = false;    // the next acquirer gets EOWNERDEAD
    std::vector<int> waiters;
    bool in_play = false; // in this input's list
    int id = 0;           // for diagnostics
};

struct Worker {
    Result res{}; // a blocked call's result, written by the worker before it reports done
    bool has_record = false; // the thread has made its first acquire (its record exists)
    MLock *blocked_on = nullptr;
    const char *blocked_op = nullptr;
};

struct State {
    bool initialised = false;
    bool trace = false;
    lockstep::Pool *pool = nullptr;
    Worker workers[kWorkers];
    std::map<std::string, MLock *> globals;
    std::unordered_map<surelock_rlock *, MLock *> live; // every handle the model knows
    long fresh_names = 0;
    int next_id = 0;
    std::string long_name, long_name2, name_256, name_1000, same_bucket_name;
    // per input
    MLock *slots[kSlots] = {};
    std::vector<MLock *> in_play;
    long alloc_countdown = -1;
    int prev_worker = 0;
    std::vector<std::string> log;
};

State &S = *new State; // never destroyed (see lockstep.h)

// ---- diagnostics -------------------------------------------------------------------------

std::string describe(const MLock *L)
{
    if (L == nullptr) return "(none)";
    char buf[96];
    if (L->global)
        snprintf(buf, sizeof buf, "L%d[global \"%.16s%s\" (%zu bytes)]", L->id, L->name.c_str(),
                 L->name.size() > 16 ? "..." : "", L->name.size());
    else
        snprintf(buf, sizeof buf, "L%d[new]", L->id);
    return buf;
}

void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lockstep::log_line(S.log, S.trace, "fuzz_rlock", fmt, ap);
    va_end(ap);
}

void dump_state()
{
    lockstep::print_log(S.log);
    fprintf(stderr, "---- model ----\n");
    for (int w = 0; w < kWorkers; w++) {
        const Worker &W = S.workers[w];
        fprintf(stderr, "  T%d (incarnation %d): %s, %s%s%s\n", w,
                S.pool ? S.pool->incarnation(w) : 0,
                W.has_record ? "has record" : "no record",
                W.blocked_on ? "blocked in " : "not blocked", W.blocked_on ? W.blocked_op : "",
                W.blocked_on ? (" on " + describe(W.blocked_on)).c_str() : "");
    }
    for (const MLock *L : S.in_play) {
        fprintf(stderr, "  %s owner=%s depth=%u died=%d waiters=", describe(L).c_str(),
                L->owner < 0 ? "none" : ("T" + std::to_string(L->owner)).c_str(), L->depth,
                L->died);
        for (int w : L->waiters) fprintf(stderr, "T%d ", w);
        fprintf(stderr, "\n");
    }
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
    fprintf(stderr, "\nfuzz_rlock: %s: %s\n", what, buf);
    dump_state();
    fflush(stderr);
    abort();
}

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
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno %d", rc);
        return buf;
    }
    }
}

// ---- worker threads ----------------------------------------------------------------------

Result execute(const Call &c)
{
    Result r{};
    const char *before_p = surelock_errmsg();
    char before[256] = "";
    if (before_p == nullptr)
        r.errmsg_null = true;
    else
        snprintf(before, sizeof before, "%s", before_p);
    surelock_rlock *out = kSentinel;
    switch (c.kind) {
    case C_NEW: r.rc = surelock_rlock_new(c.null_out ? nullptr : &out); break;
    case C_FREE: r.rc = surelock_rlock_free(c.l); break;
    case C_GLOBAL: r.rc = surelock_rlock_global(c.name, c.null_out ? nullptr : &out); break;
    case C_LOCK: r.rc = surelock_rlock_lock(c.l); break;
    case C_TRYLOCK: r.rc = surelock_rlock_trylock(c.l); break;
    case C_TIMED: r.rc = surelock_rlock_timedlock(c.l, c.ns); break;
    case C_UNLOCK: r.rc = surelock_rlock_unlock(c.l); break;
    case C_DEPTH: r.depth = surelock_rlock_depth(c.l); break;
    case C_SETDEPTH: r.rc = surelock_testing_rlock_set_depth(c.l, c.value); break;
    }
    r.out = out;
    const char *after = surelock_errmsg();
    if (after == nullptr) {
        r.errmsg_null = true;
    } else {
        snprintf(r.errmsg, sizeof r.errmsg, "%s", after);
        r.errmsg_changed = strcmp(before, r.errmsg) != 0;
    }
    return r;
}

void on_hang(const char *what) { die("HANG", "%s", what); }

Result run(int w, const Call &c, const char *what)
{
    Result r;
    S.pool->run(w, [&r, &c] { r = execute(c); }, what);
    return r;
}

// Starts c on worker w without waiting (an acquire that blocks); its result lands in
// S.workers[w].res once S.pool->done(w).
void post(int w, const Call &c)
{
    Worker *W = &S.workers[w];
    S.pool->post(w, [W, c] { W->res = execute(c); });
}

// Blocked workers must stay blocked while the model says their lock is held by another.
void check_blocked_still_blocked()
{
    for (int w = 0; w < kWorkers; w++) {
        const Worker &W = S.workers[w];
        // A lock without owner is being handed to one of its waiters (on_released).
        if (W.blocked_on != nullptr && W.blocked_on->owner >= 0 && S.pool->done(w))
            die("MODEL MISMATCH",
                "T%d's %s on %s returned %s while T%d holds the lock at depth %u", w,
                W.blocked_op, describe(W.blocked_on).c_str(), errname(W.res.rc),
                W.blocked_on->owner, W.blocked_on->depth);
    }
}

// ---- checks ------------------------------------------------------------------------------

bool is_error(int rc) { return rc != 0 && rc != EOWNERDEAD; }

void check_rc(const char *call, int w, const Result &r, int expected, bool errno_fn = true)
{
    if (r.rc != expected)
        die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s (errmsg \"%s\")", w,
            call, errname(r.rc), errname(expected), r.errmsg);
    if (r.errmsg_null) die("MODEL MISMATCH", "T%d %s: surelock_errmsg() returned NULL", w, call);
    if (!errno_fn) {
        if (r.errmsg_changed)
            die("MODEL MISMATCH", "T%d %s changed errmsg to \"%s\"", w, call, r.errmsg);
        return;
    }
    if (is_error(r.rc) && r.errmsg[0] == '\0')
        die("MODEL MISMATCH", "T%d %s returned %s but errmsg is empty", w, call, errname(r.rc));
    if (!is_error(r.rc) && r.errmsg_changed)
        die("MODEL MISMATCH", "T%d %s returned %s but changed errmsg to \"%s\"", w, call,
            errname(r.rc), r.errmsg);
}

// The next library allocation: true when the model says it fails.
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

void put_in_play(MLock *L)
{
    if (!L->in_play) {
        L->in_play = true;
        S.in_play.push_back(L);
    }
}

void remove_waiter(MLock *L, int w)
{
    L->waiters.erase(std::find(L->waiters.begin(), L->waiters.end(), w));
}

// L has just become free in the model. If workers wait for it, one of them must now get it.
void on_released(MLock *L)
{
    if (L->waiters.empty()) return;
    std::string what = "one of the waiters of " + describe(L) + " to take it";
    int w = S.pool->wait_any(L->waiters, what.c_str());
    Worker &W = S.workers[w];
    char call[160];
    snprintf(call, sizeof call, "%s on %s (woken)", W.blocked_op, describe(L).c_str());
    int expected = L->died ? EOWNERDEAD : 0;
    check_rc(call, w, W.res, expected);
    note("  T%d's %s -> %s", w, call, errname(W.res.rc));
    remove_waiter(L, w);
    W.blocked_on = nullptr;
    L->owner = w;
    L->depth = 1;
    L->died = false;
    // The others must keep waiting now that the winner holds it.
    check_blocked_still_blocked();
}

// Is `w` (transitively) what L's holder waits for?
bool would_close_cycle(int w, const MLock *L)
{
    for (int h = L->owner, steps = 0; h >= 0 && steps <= kWorkers; steps++) {
        if (h == w) return true;
        const MLock *b = S.workers[h].blocked_on;
        if (b == nullptr) return false;
        h = b->owner;
    }
    return false;
}

// ---- operations --------------------------------------------------------------------------

void do_new(int w, int slot, bool null_out)
{
    Call c{C_NEW, nullptr, 0, 0, nullptr, null_out};
    if (null_out) {
        Result r = run(w, c, "surelock_rlock_new(NULL)");
        note("T%d new(NULL) -> %s", w, errname(r.rc));
        check_rc("surelock_rlock_new(NULL)", w, r, EINVAL);
        return;
    }
    bool fails = model_allocation_fails();
    Result r = run(w, c, "surelock_rlock_new");
    note("T%d new -> slot %d: %s", w, slot, errname(r.rc));
    check_rc("surelock_rlock_new", w, r, fails ? ENOMEM : 0);
    if (fails) {
        if (r.out != kSentinel) die("MODEL MISMATCH", "failed surelock_rlock_new wrote *out");
        return;
    }
    if (r.out == nullptr || r.out == kSentinel)
        die("MODEL MISMATCH", "surelock_rlock_new returned 0 but *out is %p", (void *)r.out);
    if (S.live.count(r.out))
        die("MODEL MISMATCH", "surelock_rlock_new returned %p, which is already %s",
            (void *)r.out, describe(S.live[r.out]).c_str());
    MLock *L = new MLock;
    L->h = r.out;
    L->id = ++S.next_id;
    S.live[r.out] = L;
    S.slots[slot] = L;
    put_in_play(L);
}

void forget(MLock *L)
{
    S.live.erase(L->h);
    S.in_play.erase(std::find(S.in_play.begin(), S.in_play.end(), L));
    for (MLock *&s : S.slots)
        if (s == L) s = nullptr;
    delete L;
}

void do_free(int w, MLock *L)
{
    int expected = L->global ? EPERM : L->owner >= 0 ? EBUSY : 0;
    Result r = run(w, Call{C_FREE, L->h, 0, 0, nullptr, false}, "surelock_rlock_free");
    note("T%d free %s -> %s", w, describe(L).c_str(), errname(r.rc));
    check_rc(("surelock_rlock_free(" + describe(L) + ")").c_str(), w, r, expected);
    if (r.rc == 0) forget(L);
}

enum class Acq { lock, trylock, timed };

void do_acquire(int w, MLock *L, Acq kind, uint64_t ns)
{
    Worker &W = S.workers[w];
    bool may_wait = kind == Acq::lock || (kind == Acq::timed && ns >= kLongTimeout);
    bool busy = L->owner >= 0 && L->owner != w;
    char call[160];
    const char *fn = kind == Acq::lock      ? "lock"
                     : kind == Acq::trylock ? "trylock"
                                            : "timedlock";
    if (kind == Acq::timed)
        snprintf(call, sizeof call, "%s(%s, %llu)", fn, describe(L).c_str(),
                 (unsigned long long)ns);
    else
        snprintf(call, sizeof call, "%s(%s)", fn, describe(L).c_str());
    if (busy && may_wait) {
        if (!W.has_record) {
            note("T%d %s skipped: a first acquire that waits would allocate asynchronously", w,
                 call);
            return;
        }
        if (would_close_cycle(w, L)) {
            note("T%d %s skipped: it would close a wait cycle", w, call);
            return;
        }
    }
    Call c{kind == Acq::lock ? C_LOCK : kind == Acq::trylock ? C_TRYLOCK : C_TIMED, L->h, ns, 0,
           nullptr, false};
    if (!W.has_record) {
        if (model_allocation_fails()) {
            Result r = run(w, c, call);
            note("T%d %s -> %s (no thread record)", w, call, errname(r.rc));
            check_rc(call, w, r, ENOMEM);
            return;
        }
        W.has_record = true;
    }
    if (busy && may_wait) {
        note("T%d %s -> blocks (held by T%d)", w, call, L->owner);
        post(w, c);
        W.blocked_on = L;
        W.blocked_op = kind == Acq::lock ? "lock" : "timedlock";
        L->waiters.push_back(w);
        return;
    }
    int expected;
    if (L->owner == w) {
        expected = L->depth == UINT_MAX ? EAGAIN : 0;
        if (expected == 0) L->depth++;
    } else if (L->owner < 0) {
        expected = L->died ? EOWNERDEAD : 0;
        L->owner = w;
        L->depth = 1;
        L->died = false;
    } else {
        expected = kind == Acq::trylock ? EBUSY : ETIMEDOUT;
    }
    Result r = run(w, c, call);
    note("T%d %s -> %s", w, call, errname(r.rc));
    check_rc(call, w, r, expected);
}

void do_unlock(int w, MLock *L)
{
    int expected = L->owner == w ? 0 : EPERM;
    std::string call = "unlock(" + describe(L) + ")";
    Result r = run(w, Call{C_UNLOCK, L->h, 0, 0, nullptr, false}, call.c_str());
    note("T%d %s -> %s", w, call.c_str(), errname(r.rc));
    check_rc(call.c_str(), w, r, expected);
    if (expected == 0 && --L->depth == 0) {
        L->owner = -1;
        on_released(L);
    }
}

void do_depth(int w, MLock *L)
{
    unsigned expected = L->owner == w ? L->depth : 0;
    std::string call = "depth(" + describe(L) + ")";
    Result r = run(w, Call{C_DEPTH, L->h, 0, 0, nullptr, false}, call.c_str());
    note("T%d %s -> %u", w, call.c_str(), r.depth);
    check_rc(call.c_str(), w, r, 0, false);
    if (r.depth != expected)
        die("MODEL MISMATCH", "T%d %s returned %u, the model expects %u", w, call.c_str(),
            r.depth, expected);
}

void do_setdepth(int w, MLock *L, unsigned value)
{
    bool ok = value != 0 && S.workers[w].has_record && L->owner == w;
    char call[128];
    snprintf(call, sizeof call, "set_depth(%s, %u)", describe(L).c_str(), value);
    Result r = run(w, Call{C_SETDEPTH, L->h, 0, value, nullptr, false}, call);
    note("T%d %s -> %s", w, call, errname(r.rc));
    if (r.rc != (ok ? 0 : EINVAL))
        die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s", w, call,
            errname(r.rc), ok ? "0" : "EINVAL");
    if (ok) L->depth = value;
}

const std::string &global_name(int kind, std::string &fresh)
{
    static const std::string short_name = "surelock-fuzz", one_byte = "\xff";
    switch (kind) {
    case 0: return short_name;
    case 1: return one_byte;
    case 2: return S.long_name;
    case 3: return S.long_name2;
    case 5: return S.same_bucket_name;
    default:
        // Globals are never freed: after kMaxFreshNames the "fresh" names come round again.
        fresh = "surelock-fuzz-fresh-" + std::to_string(S.fresh_names % kMaxFreshNames);
        S.fresh_names++;
        return fresh;
    }
}

void do_global(int w, int kind)
{
    std::string fresh;
    const std::string &name = global_name(kind, fresh);
    auto it = S.globals.find(name);
    bool exists = it != S.globals.end();
    bool fails = !exists && model_allocation_fails();
    char call[128];
    snprintf(call, sizeof call, "global(\"%.20s%s\" (%zu bytes))", name.c_str(),
             name.size() > 20 ? "..." : "", name.size());
    Result r = run(w, Call{C_GLOBAL, nullptr, 0, 0, name.c_str(), false}, call);
    note("T%d %s -> %s%s", w, call, errname(r.rc), exists ? "" : " (new name)");
    check_rc(call, w, r, fails ? ENOMEM : 0);
    if (fails) {
        if (r.out != kSentinel) die("MODEL MISMATCH", "T%d failed %s wrote *out", w, call);
        return;
    }
    MLock *L;
    if (exists) {
        L = it->second;
        if (r.out != L->h)
            die("MODEL MISMATCH", "T%d %s returned %p, earlier calls returned %p", w, call,
                (void *)r.out, (void *)L->h);
    } else {
        if (r.out == nullptr || r.out == kSentinel)
            die("MODEL MISMATCH", "T%d %s returned 0 but *out is %p", w, call, (void *)r.out);
        if (S.live.count(r.out))
            die("MODEL MISMATCH", "T%d %s returned %p, which is already %s", w, call,
                (void *)r.out, describe(S.live[r.out]).c_str());
        L = new MLock;
        L->h = r.out;
        L->global = true;
        L->name = name;
        L->id = ++S.next_id;
        S.globals[name] = L;
        S.live[r.out] = L;
    }
    S.slots[kNewSlots + std::min(kind, 3)] = L;
    put_in_play(L);
}

void do_badglobal(int w, int variant)
{
    Call c{C_GLOBAL, nullptr, 0, 0, nullptr, false};
    const char *what = "";
    switch (variant) {
    case 0: what = "global(NULL name)"; break;
    case 1: c.name = ""; what = "global(\"\")"; break;
    case 2: c.name = S.name_256.c_str(); what = "global(256-byte name)"; break;
    case 3: c.name = S.name_1000.c_str(); what = "global(1000-byte name)"; break;
    case 4: c.name = "surelock-fuzz"; c.null_out = true; what = "global(existing name, NULL out)"; break;
    default:
        c.name = "surelock-fuzz-never-created";
        c.null_out = true;
        what = "global(new name, NULL out)";
        break;
    }
    Result r = run(w, c, what);
    note("T%d %s -> %s", w, what, errname(r.rc));
    check_rc(what, w, r, EINVAL);
    if (r.out != kSentinel) die("MODEL MISMATCH", "T%d failed %s wrote *out", w, what);
}

void do_nullcall(int w, int variant)
{
    Call c{C_NEW, nullptr, 0, 0, nullptr, false};
    const char *what = "";
    switch (variant) {
    case 0: do_new(w, 0, true); return;
    case 1: c.kind = C_FREE; what = "free(NULL)"; break;
    case 2: c.kind = C_LOCK; what = "lock(NULL)"; break;
    case 3: c.kind = C_TRYLOCK; what = "trylock(NULL)"; break;
    case 4: c.kind = C_TIMED; what = "timedlock(NULL, 0)"; break;
    case 5: c.kind = C_TIMED; c.ns = SURELOCK_FOREVER; what = "timedlock(NULL, FOREVER)"; break;
    case 6: c.kind = C_UNLOCK; what = "unlock(NULL)"; break;
    case 7: c.kind = C_DEPTH; what = "depth(NULL)"; break;
    default: c.kind = C_SETDEPTH; c.value = 1; what = "set_depth(NULL, 1)"; break;
    }
    Result r = run(w, c, what);
    note("T%d %s -> %s", w, what, c.kind == C_DEPTH ? std::to_string(r.depth).c_str() : errname(r.rc));
    if (c.kind == C_DEPTH) {
        check_rc(what, w, r, 0, false);
        if (r.depth != 0) die("MODEL MISMATCH", "T%d depth(NULL) returned %u", w, r.depth);
    } else if (c.kind == C_SETDEPTH) {
        if (r.rc != EINVAL) die("MODEL MISMATCH", "T%d %s returned %s", w, what, errname(r.rc));
    } else {
        check_rc(what, w, r, EINVAL);
    }
}

void do_exit(int w)
{
    Worker &W = S.workers[w];
    note("T%d exits", w);
    S.pool->exit_worker(w); // a fresh thread takes its place
    W.has_record = false;
    W.blocked_on = nullptr;
    std::vector<MLock *> released;
    for (MLock *L : S.in_play)
        if (L->owner == w) {
            L->owner = -1;
            L->depth = 0;
            L->died = true;
            released.push_back(L);
        }
    for (MLock *L : released) on_released(L);
}

// ---- per-input setup and cleanup ---------------------------------------------------------

// The registry bucket of a name, as src/rlock.cc computes it today (FNV-1a, 256 buckets). Only
// used to pick two names that share a bucket, so lookups walk a chain; if the library's hash
// changes they merely stop colliding.
size_t registry_bucket(const std::string &name)
{
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32)) % 256;
}

void initialise()
{
    S.initialised = true;
    const char *t = getenv("SURELOCK_FUZZ_TRACE");
    S.trace = t != nullptr && *t != '\0' && strcmp(t, "0") != 0;
    S.long_name.assign(255, 'n');
    S.long_name2.assign(254, 'n');
    S.long_name2 += 'm';
    S.name_256.assign(256, 'n');
    S.name_1000.assign(1000, 'x');
    size_t bucket = registry_bucket("surelock-fuzz");
    for (int i = 0; i < 100000; i++) {
        S.same_bucket_name = "surelock-fuzz-" + std::to_string(i);
        if (registry_bucket(S.same_bucket_name) == bucket) break;
    }
    S.pool = new lockstep::Pool(kWorkers, on_hang);
}

// Releases every hold, frees every lock from new and consumes pending "owner died" on globals,
// checking each step against the model; afterwards nothing is held, blocked or pending.
void cleanup()
{
    set_allocation_countdown(-1);
    note("-- cleanup --");
    for (;;) {
        int holder = -1;
        for (const MLock *L : S.in_play)
            if (L->owner >= 0 && S.workers[L->owner].blocked_on == nullptr) {
                holder = L->owner;
                break;
            }
        if (holder < 0) break;
        for (size_t i = 0; i < S.in_play.size(); i++) {
            MLock *L = S.in_play[i];
            if (L->owner != holder) continue;
            if (L->depth > 64) do_setdepth(holder, L, 1);
            while (L->owner == holder) do_unlock(holder, L);
        }
    }
    for (const MLock *L : S.in_play)
        if (L->owner >= 0 || !L->waiters.empty())
            die("HARNESS", "cleanup left %s held by T%d", describe(L).c_str(), L->owner);
    for (int w = 0; w < kWorkers; w++)
        if (S.workers[w].blocked_on != nullptr) die("HARNESS", "cleanup left T%d blocked", w);
    for (size_t i = 0; i < S.in_play.size();) {
        MLock *L = S.in_play[i];
        if (L->global) {
            if (L->died) {
                do_acquire(0, L, Acq::lock, 0);
                do_unlock(0, L);
            }
            L->in_play = false;
            i++;
        } else {
            do_free(0, L); // removes it from in_play
        }
    }
    S.in_play.clear();
    for (MLock *&s : S.slots) s = nullptr;
    check_blocked_still_blocked();
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
    for (size_t ops = 0; pos < size && ops < kMaxOps; ops++) {
        uint8_t b = next();
        int w = (b & 3) == 3 ? S.prev_worker : (b & 3);
        S.prev_worker = w;
        int op = (b >> 2) % OP_COUNT;
        uint8_t a = 0, a2 = 0;
        switch (op) {
        case OP_EXIT: break;
        case OP_TIMED: case OP_SETDEPTH: a = next(); a2 = next(); break;
        default: a = next(); break;
        }
        if (S.workers[w].blocked_on != nullptr) {
            note("T%d %s skipped: T%d is blocked", w, op_names[op], w);
            continue;
        }
        MLock *L = S.slots[a % kSlots];
        switch (op) {
        case OP_NEW:
            if (S.slots[a % kNewSlots] != nullptr)
                note("T%d new skipped: slot %d occupied", w, a % kNewSlots);
            else
                do_new(w, a % kNewSlots, false);
            continue;
        case OP_FREE: case OP_LOCK: case OP_TRYLOCK: case OP_TIMED0: case OP_TIMED:
        case OP_UNLOCK: case OP_DEPTH: case OP_SETDEPTH:
            if (L == nullptr) {
                note("T%d %s skipped: slot %d empty", w, op_names[op], a % kSlots);
                continue;
            }
            break;
        default: break;
        }
        switch (op) {
        case OP_FREE: do_free(w, L); break;
        case OP_LOCK: do_acquire(w, L, Acq::lock, 0); break;
        case OP_TRYLOCK: do_acquire(w, L, Acq::trylock, 0); break;
        case OP_TIMED0: do_acquire(w, L, Acq::timed, 0); break;
        case OP_TIMED: {
            uint64_t ns;
            switch (a2 & 3) {
            case 0: ns = (uint64_t)((a2 >> 2) + 1) * 2000; break;
            case 1: ns = kLongTimeout; break;
            case 2: ns = SURELOCK_FOREVER; break;
            default: ns = UINT64_MAX - 1 - (a2 >> 2); break;
            }
            do_acquire(w, L, Acq::timed, ns);
            break;
        }
        case OP_UNLOCK: do_unlock(w, L); break;
        case OP_DEPTH: do_depth(w, L); break;
        case OP_GLOBAL: do_global(w, a % 6); break;
        case OP_BADGLOBAL: do_badglobal(w, a % 6); break;
        case OP_NULLCALL: do_nullcall(w, a % 9); break;
        case OP_EXIT: do_exit(w); break;
        case OP_FAILALLOC:
            note("fail the allocation after the next %d", a % 4);
            set_allocation_countdown(a % 4);
            break;
        case OP_SETDEPTH:
            do_setdepth(w, L, a2 < 128 ? a2 : UINT_MAX - (unsigned)(a2 - 128));
            break;
        default: break;
        }
        check_blocked_still_blocked();
    }
    cleanup();
    return 0;
}
