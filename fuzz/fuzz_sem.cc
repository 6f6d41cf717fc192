// State-machine fuzzer for the async FIFO semaphore and mutex (API.md section 5).
//
// The input bytes decode into calls on two semaphores (objects 0 and 1) and an amutex (object
// 2), made one at a time by three worker threads that the fuzzer's own thread (the driver)
// runs in lockstep (fuzz/lockstep.h). Async waiters live in an array of surelock_waiter owned
// by the harness; each queued waiter carries a small script of actions its callback performs
// (release, release what it was granted, tryacquire, timedacquire(0), queue another waiter,
// cancel a waiter, available, shutdown) — so callbacks re-enter the library, release the same
// semaphore, and queue more grants from inside a dispatch.
//
// A reference model of the contract predicts, before every call, its return code and the
// exact trace it produces: which callbacks run, in which order, with which status (0 or
// ECANCELED), on which worker (the releasing thread), at which nesting depth (always 1: grants
// made inside a callback run one after another in the outermost dispatch), and what every
// action inside them returns. The real callbacks consume that predicted trace as they run
// and perform the model's decided actions, so the first divergence aborts with the call
// trace and the model's state. After every call the model also predicts available() of both
// semaphores and checks errmsg: set by every failing call, unchanged by successful ones
// (EINPROGRESS included) even when callbacks failed in between.
//
// The model predicts every return code: 0, EINPROGRESS, EBUSY, EALREADY, ECANCELED, EINVAL
// (NULL arguments, n of 0 or above SURELOCK_SEM_MAX, a waiter not queued on this object),
// EAGAIN (release overflow), EPERM (amutex unlock when free), ETIMEDOUT, ENOMEM (creation, and
// an async acquire that must queue: its callback's node is allocated then; with allocation
// failures injected through the SURELOCK_TESTING hook). Settling never allocates, so the
// callbacks' order is the contract's whatever allocation does. Where the contract leaves
// a choice open, both answers are accepted: a second cancel of a waiter that was granted or
// shut down (EALREADY/ECANCELED again, or EINVAL since "w is free once cancel returns"), and
// cancel after an *_async that failed with EINVAL on such a waiter (the library validates
// before it initialises *w).
//
// Blocking: nothing ever really blocks. A blocking acquire/lock the model says is served at
// once is made as is (a wrong model shows up as a hang, reported after 10 s); one that would
// wait is made as a timed acquire of kShortNs instead and must return ETIMEDOUT and leave the
// queue as it was.
//
// Strict mode (SURELOCK_FUZZ_STRICT=1) has 96 waiter slots and an op that queues many.
//
// Input encoding (a missing trailing byte reads as 0):
//   bytes 0, 1: initial permits of semaphores 0 and 1 (code c%8: 0, 1, 2, 3, 5, MAX, MAX-1,
//               MAX+1 = EINVAL, no semaphore until a NEW op).
//   then ops: op byte: bits 0-1 the worker (0..2; 3 = the previous op's worker),
//             (byte >> 2) % 14 the operation. `a` is an argument byte: object a%3, count
//             kN[(a/3)%16] (1..5, 0, SURELOCK_SEM_MAX, MAX+1, UINT64_MAX, MAX-1, 2^32).
//    0 NEW       a: object a%3 (skipped unless freed), b: permits code (as above)
//    1 FREE      a: object                                   sem_free / amutex_free
//    2 TRY       a                                           sem_tryacquire / amutex_trylock
//    3 TIMED0    a                                           sem_timedacquire(s, n, 0) / amutex_timedlock(m, 0)
//    4 ACQUIRE   a                                           sem_acquire / amutex_lock (see Blocking)
//    5 ASYNC     a, b: waiter slot, c, d: the callback's script (two action bytes, below)
//                                                            sem_acquire_async / amutex_lock_async
//    6 CANCEL    a: object, b: waiter slot                   sem_cancel / amutex_cancel
//    7 RELEASE   a                                           sem_release / amutex_unlock
//    8 SHUTDOWN  a: object (semaphores only)                 sem_shutdown
//    9 AVAILABLE a: object (semaphores only)                 sem_available
//   10 FAILALLOC a: the next a%4 library allocations succeed, the one after fails
//   11 NULLCALL  a%25: NULL object/waiter/callback/out variants, expects EINVAL (available 0)
//   12 EXIT      (no argument) the worker's thread exits; a fresh one (no record) replaces it
//   13 MANY      a: object, b: count b%24+1 waiters of 1 permit each, c: their script's action
//                (strict mode only; skipped otherwise)
//   Action byte x (callback scripts): kind x%9, object (x/9)%3, p = x/27:
//    0 none; 1 release p%4+1 permits (amutex: unlock); 2 release what this waiter was granted
//    (if status 0); 3 tryacquire p%4+1; 4 timedacquire(p%4+1, 0); 5 queue the lowest free slot for
//    p%3+1 permits, whose own script is p%3: 0 empty, 1 "release what it was granted",
//    2 this script; 6 cancel p%4: this waiter, the object's queue head, its tail, or the
//    lowest slot last initialised on it; 7 available; 8 shutdown.
//   At most 24 waiters are queued and 256 actions run from callbacks per top-level call.
// Waiter slots are skipped while queued or while their callback is pending. An op on a freed
// object is skipped. At most 256 ops are decoded per input. At the end of every input every
// queued waiter is cancelled and all three objects are freed, checking each step.
//
// Set SURELOCK_FUZZ_TRACE=1 to print every operation, callback and result.

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "lockstep.h"
#include "surelock.h"
#include "sys/testing.h"

namespace {

constexpr int kWorkers = 3;
constexpr int kObjects = 3; // 0, 1: semaphores; 2: the amutex
constexpr int kAmutex = 2;
constexpr int kMaxSlots = 96;
constexpr int kDefaultSlots = 16;
constexpr size_t kMaxOps = 256;
constexpr int kCallbackAsyncBudget = 24;
constexpr int kCallbackActionBudget = 256;
constexpr uint64_t kShortNs = 50 * 1000;
constexpr uint64_t MAX = SURELOCK_SEM_MAX;

const uint64_t kN[16] = {1, 1, 1, 2, 2, 3, 4, 5, 1, 2, 0, MAX, MAX + 1, UINT64_MAX, MAX - 1,
                         uint64_t{1} << 32};
const uint64_t kPermits[8] = {0, 1, 2, 3, 5, MAX, MAX - 1, MAX + 1};

bool valid_n(uint64_t n) { return n != 0 && n <= MAX; }

enum Op {
    OP_NEW, OP_FREE, OP_TRY, OP_TIMED0, OP_ACQUIRE, OP_ASYNC, OP_CANCEL, OP_RELEASE,
    OP_SHUTDOWN, OP_AVAILABLE, OP_FAILALLOC, OP_NULLCALL, OP_EXIT, OP_MANY, OP_COUNT
};
const char *const op_names[OP_COUNT] = {
    "new", "free", "try", "timed0", "acquire", "async", "cancel", "release", "shutdown",
    "available", "failalloc", "nullcall", "exit", "many"};

// What a call does; the same for top-level calls and actions inside callbacks.
enum Kind {
    K_NONE, K_RELEASE, K_RELEASE_OWN, K_TRY, K_TIMED0, K_ASYNC, K_CANCEL, K_AVAILABLE,
    K_SHUTDOWN, K_ACTION_KINDS,
    // top level only
    K_ACQUIRE, K_TIMED_SHORT
};

struct Call {
    Kind kind = K_NONE;
    int obj = 0;
    uint64_t n = 1;
    int slot = -1; // waiter (async, cancel)
};

// One step of a predicted trace.
struct Event {
    bool cb = false;
    int inv = 0; // the callback invocation it is, or belongs to (actions)
    // callback
    int slot = -1, status = 0, worker = 0, nest = 0;
    // action
    Call call;
    int rc = 0, rc2 = -1;
    uint64_t value = 0;
};

// ---- model -------------------------------------------------------------------------------

enum WState { W_IDLE, W_QUEUED, W_GRANTED, W_CANCELED };

struct MWaiter {
    int obj = -1; // the object its last *_async initialised it for (-1: zeroed)
    int gen = 0;  // that object's generation
    WState st = W_IDLE;
    uint64_t n = 0;
    std::vector<uint8_t> script;
    bool pending = false;     // granted or cancelled, callback not yet run
    bool maybe_einval = false; // cancel may also say EINVAL (see the top)
};

struct MObj {
    bool alive = false;
    void *h = nullptr;
    int gen = 0;
    uint64_t permits = 0;
    bool shut = false;
    std::deque<int> queue;
};

struct Delivery {
    int slot;
    int status;
};

struct MThread {
    bool running = false;    // an outermost dispatch is running on it
    std::deque<Delivery> q;  // its pending callbacks
    int nest = 0;
};

struct State {
    bool initialised = false;
    bool trace = false;
    bool strict = false;
    int slots = kDefaultSlots;
    lockstep::Pool *pool = nullptr;
    MObj objs[kObjects];
    MWaiter waiters[kMaxSlots];
    MThread threads[kWorkers];
    long alloc_countdown = -1;
    int prev_worker = 0;
    std::vector<std::string> log;
    // per top-level call
    std::vector<Event> events;
    int inv = 0;
    int async_budget = 0, action_budget = 0;
    // the real side
    size_t pos = 0;              // next event the real callbacks expect
    bool in_call = false;
    std::string current;         // the call being made, for the diagnostics
    bool real_busy[kMaxSlots] = {}; // queued in the library, as far as the real side saw
};

State &S = *new State; // never destroyed (see lockstep.h)

alignas(16) surelock_waiter g_waiters[kMaxSlots];
alignas(16) surelock_waiter g_scratch;
thread_local int t_nest = 0;

// ---- diagnostics -------------------------------------------------------------------------

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
    case EINPROGRESS: return "EINPROGRESS";
    case EALREADY: return "EALREADY";
    case ECANCELED: return "ECANCELED";
    default: {
        static thread_local char buf[32];
        snprintf(buf, sizeof buf, "errno %d", rc);
        return buf;
    }
    }
}

std::string num(uint64_t n)
{
    if (n == MAX) return "MAX";
    if (n == MAX + 1) return "MAX+1";
    if (n == MAX - 1) return "MAX-1";
    if (n == UINT64_MAX) return "UINT64_MAX";
    if (n > MAX - 100) return "MAX-" + std::to_string(MAX - n);
    return std::to_string(n);
}

std::string describe(const Call &c)
{
    static const char *const obj_names[kObjects] = {"S0", "S1", "A"};
    const char *o = obj_names[c.obj];
    bool am = c.obj == kAmutex;
    char buf[128];
    switch (c.kind) {
    case K_RELEASE:
        if (am) snprintf(buf, sizeof buf, "amutex_unlock(A)");
        else snprintf(buf, sizeof buf, "release(%s, %s)", o, num(c.n).c_str());
        break;
    case K_TRY:
        if (am) snprintf(buf, sizeof buf, "amutex_trylock(A)");
        else snprintf(buf, sizeof buf, "tryacquire(%s, %s)", o, num(c.n).c_str());
        break;
    case K_TIMED0:
        if (am) snprintf(buf, sizeof buf, "amutex_timedlock(A, 0)");
        else snprintf(buf, sizeof buf, "timedacquire(%s, %s, 0)", o, num(c.n).c_str());
        break;
    case K_ACQUIRE:
        if (am) snprintf(buf, sizeof buf, "amutex_lock(A)");
        else snprintf(buf, sizeof buf, "acquire(%s, %s)", o, num(c.n).c_str());
        break;
    case K_TIMED_SHORT:
        if (am) snprintf(buf, sizeof buf, "amutex_timedlock(A, short)");
        else snprintf(buf, sizeof buf, "timedacquire(%s, %s, short)", o, num(c.n).c_str());
        break;
    case K_ASYNC:
        if (am) snprintf(buf, sizeof buf, "amutex_lock_async(A, w%d)", c.slot);
        else snprintf(buf, sizeof buf, "acquire_async(%s, %s, w%d)", o, num(c.n).c_str(), c.slot);
        break;
    case K_CANCEL: snprintf(buf, sizeof buf, "%scancel(%s, w%d)", am ? "amutex_" : "", o, c.slot); break;
    case K_AVAILABLE: snprintf(buf, sizeof buf, "available(%s)", o); break;
    case K_SHUTDOWN: snprintf(buf, sizeof buf, "shutdown(%s)", o); break;
    default: snprintf(buf, sizeof buf, "(kind %d)", c.kind); break;
    }
    return buf;
}

std::string describe(const Event &e)
{
    char buf[256];
    if (e.cb)
        snprintf(buf, sizeof buf, "#%d callback w%d status %s on T%d nest %d", e.inv, e.slot,
                 errname(e.status), e.worker, e.nest);
    else if (e.call.kind == K_AVAILABLE)
        snprintf(buf, sizeof buf, "#%d  action %s -> %s", e.inv, describe(e.call).c_str(),
                 num(e.value).c_str());
    else
        snprintf(buf, sizeof buf, "#%d  action %s -> %s%s%s", e.inv, describe(e.call).c_str(),
                 errname(e.rc), e.rc2 >= 0 ? " or " : "", e.rc2 >= 0 ? errname(e.rc2) : "");
    return buf;
}

void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lockstep::log_line(S.log, S.trace, "fuzz_sem", fmt, ap);
    va_end(ap);
}

void dump_state()
{
    lockstep::print_log(S.log);
    if (S.in_call) {
        fprintf(stderr, "---- predicted trace of the current call, %s (> = next expected) ----\n",
                S.current.c_str());
        for (size_t i = 0; i < S.events.size(); i++)
            fprintf(stderr, " %c %s\n", i == S.pos ? '>' : ' ', describe(S.events[i]).c_str());
        if (S.pos >= S.events.size()) fprintf(stderr, " > (end)\n");
    }
    fprintf(stderr, "---- model (after the current call's prediction) ----\n");
    for (int i = 0; i < kObjects; i++) {
        const MObj &O = S.objs[i];
        if (!O.alive) {
            fprintf(stderr, "  object %d: freed\n", i);
            continue;
        }
        fprintf(stderr, "  object %d gen %d: permits %s%s, queue:", i, O.gen,
                num(O.permits).c_str(), O.shut ? ", shut down" : "");
        for (int s : O.queue) fprintf(stderr, " w%d(%s)", s, num(S.waiters[s].n).c_str());
        fprintf(stderr, "\n");
    }
    for (int i = 0; i < S.slots; i++) {
        const MWaiter &W = S.waiters[i];
        if (W.obj < 0) continue;
        static const char *const st[] = {"idle", "queued", "granted", "cancelled"};
        fprintf(stderr, "  w%d: object %d gen %d %s n=%s%s%s script", i, W.obj, W.gen, st[W.st],
                num(W.n).c_str(), W.pending ? " pending" : "", W.maybe_einval ? " maybe-einval" : "");
        for (uint8_t x : W.script) fprintf(stderr, " %u", x);
        fprintf(stderr, "\n");
    }
    for (int w = 0; w < kWorkers; w++)
        fprintf(stderr, "  T%d: %zu callback(s) pending%s\n", w, S.threads[w].q.size(),
                S.threads[w].running ? ", dispatching" : "");
    fprintf(stderr, "  allocation countdown %ld, strict %d, %d waiter slots\n", S.alloc_countdown,
            S.strict, S.slots);
}

[[noreturn]] void die(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
[[noreturn]] void die(const char *what, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nfuzz_sem: %s: %s\n", what, buf);
    dump_state();
    fflush(stderr);
    abort();
}

void on_hang(const char *what) { die("HANG", "%s", what); }

// ---- the model ---------------------------------------------------------------------------

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

int lowest_free_slot()
{
    for (int i = 0; i < S.slots; i++)
        if (S.waiters[i].st != W_QUEUED && !S.waiters[i].pending) return i;
    return -1;
}

int model_call(int w, const Call &c, uint64_t *value, int *rc2);

void run_callback(int w, const Delivery &d);

// One settling pass of the library (settle_and_unlock in src/sem_queue.cc) on worker w's
// thread: waiters are settled from the head of O's queue while `take` says so, each callback
// joining the thread's dispatch queue in settling order (no allocation: the node came with the
// waiter); only the outermost dispatch on the thread runs that queue.
template <class Take> void settle(int w, int obj, int status, Take take)
{
    MObj &O = S.objs[obj];
    MThread &T = S.threads[w];
    while (!O.queue.empty() && take(S.waiters[O.queue.front()])) {
        int slot = O.queue.front();
        O.queue.pop_front();
        MWaiter &W = S.waiters[slot];
        W.st = status == 0 ? W_GRANTED : W_CANCELED;
        W.pending = true;
        T.q.push_back(Delivery{slot, status});
    }
    if (T.running) return;
    T.running = true;
    while (!T.q.empty()) {
        Delivery d = T.q.front();
        T.q.pop_front();
        run_callback(w, d);
    }
    T.running = false;
}

// Hands permits to the head of O's queue while its request fits (never after shutdown).
void grant(int w, int obj)
{
    MObj &O = S.objs[obj];
    settle(w, obj, 0, [&O](MWaiter &W) {
        if (O.shut || O.permits < W.n) return false;
        O.permits -= W.n;
        return true;
    });
}

// What a callback knows about its own waiter (its slot may be reused by its own actions).
struct Own {
    int slot, status, obj;
    uint64_t n;
};

// The concrete action of script byte x for a callback (K_NONE: skipped).
Call decide(uint8_t x, const Own &own, const std::vector<uint8_t> &script)
{
    Call c;
    Kind k = (Kind)(x % 9);
    c.obj = (x / 9) % 3;
    int p = x / 27;
    if (S.action_budget <= 0) return Call{};
    if (k == K_RELEASE_OWN) {
        if (own.status != 0 || own.obj < 0) return Call{};
        c.obj = own.obj;
        c.n = own.n;
        k = K_RELEASE;
    }
    if (!S.objs[c.obj].alive) return Call{};
    c.kind = k;
    switch (k) {
    case K_RELEASE: case K_TRY: case K_TIMED0:
        if (x % 9 != K_RELEASE_OWN) c.n = (uint64_t)(p % 4 + 1);
        break;
    case K_ASYNC: {
        if (S.async_budget <= 0) return Call{};
        c.slot = lowest_free_slot();
        if (c.slot < 0) return Call{};
        c.n = (uint64_t)(p % 3 + 1);
        MWaiter &N = S.waiters[c.slot];
        // Set here, used when it is queued: its own script.
        N.script.clear();
        if (p % 3 == 1) N.script.push_back(K_RELEASE_OWN);
        else if (p % 3 == 2) N.script = script;
        S.async_budget--;
        break;
    }
    case K_CANCEL: {
        const MObj &O = S.objs[c.obj];
        switch (p % 4) {
        case 0: c.slot = own.slot; break;
        case 1: c.slot = O.queue.empty() ? -1 : O.queue.front(); break;
        case 2: c.slot = O.queue.empty() ? -1 : O.queue.back(); break;
        default:
            for (int i = 0; i < S.slots && c.slot < 0; i++)
                if (S.waiters[i].obj == c.obj) c.slot = i;
            break;
        }
        if (c.slot < 0) return Call{};
        break;
    }
    case K_AVAILABLE: case K_SHUTDOWN:
        if (c.obj == kAmutex) return Call{};
        break;
    default: return Call{};
    }
    S.action_budget--;
    return c;
}

void run_callback(int w, const Delivery &d)
{
    MThread &T = S.threads[w];
    MWaiter &W = S.waiters[d.slot];
    int inv = ++S.inv;
    T.nest++;
    Event e;
    e.cb = true;
    e.inv = inv;
    e.slot = d.slot;
    e.status = d.status;
    e.worker = w;
    e.nest = T.nest;
    S.events.push_back(e);
    W.pending = false;
    std::vector<uint8_t> script = W.script; // the waiter may be reused by its own actions
    Own own{d.slot, d.status, W.obj, W.n};
    for (uint8_t x : script) {
        Call c = decide(x, own, script);
        if (c.kind == K_NONE) continue;
        size_t at = S.events.size();
        Event a;
        a.inv = inv;
        a.call = c;
        S.events.push_back(a);
        uint64_t value = 0;
        int rc2 = -1;
        int rc = model_call(w, c, &value, &rc2);
        S.events[at].rc = rc;
        S.events[at].rc2 = rc2;
        S.events[at].value = value;
    }
    T.nest--;
}

// Waiter `slot` is initialised for object obj by a successful argument check.
void init_waiter(int slot, int obj, uint64_t n)
{
    MWaiter &W = S.waiters[slot];
    W.obj = obj;
    W.gen = S.objs[obj].gen;
    W.st = W_IDLE;
    W.n = n;
    W.pending = false;
    W.maybe_einval = false;
}

// Predicts c made by worker w: its return code (value for available), and, through deliver,
// the callbacks it runs. rc2: a second acceptable code, or -1.
int model_call(int w, const Call &c, uint64_t *value, int *rc2)
{
    MObj &O = S.objs[c.obj];
    bool am = c.obj == kAmutex;
    uint64_t n = am ? 1 : c.n;
    *rc2 = -1;
    switch (c.kind) {
    case K_TRY: case K_TIMED0: case K_ACQUIRE: case K_TIMED_SHORT:
        if (!valid_n(n)) return EINVAL;
        if (O.queue.empty() && O.permits >= n && !O.shut) {
            O.permits -= n;
            return 0;
        }
        if (O.shut) return ECANCELED;
        if (c.kind == K_TRY) return EBUSY;
        // K_ACQUIRE is only predicted when it does not wait. A timed acquire that waited and
        // expired leaves the queue and serves whoever it may have held back (nobody here: it
        // was queued last, and every pass settles all it can).
        if (c.kind == K_TIMED_SHORT) grant(w, c.obj);
        return ETIMEDOUT;
    case K_ASYNC: {
        MWaiter &W = S.waiters[c.slot];
        if (!valid_n(n)) {
            if (W.st == W_GRANTED || W.st == W_CANCELED) W.maybe_einval = true;
            return EINVAL;
        }
        std::vector<uint8_t> script = W.script;
        init_waiter(c.slot, c.obj, n);
        W.script = script;
        if (O.shut) return ECANCELED;
        if (O.queue.empty() && O.permits >= n) {
            O.permits -= n;
            return 0;
        }
        if (model_allocation_fails()) return ENOMEM; // its callback's node: nothing queued
        W.st = W_QUEUED;
        O.queue.push_back(c.slot);
        return EINPROGRESS;
    }
    case K_CANCEL: {
        MWaiter &W = S.waiters[c.slot];
        if (W.obj != c.obj || W.gen != O.gen) return EINVAL;
        switch (W.st) {
        case W_IDLE: return EINVAL;
        case W_GRANTED: case W_CANCELED: {
            int rc = W.st == W_GRANTED ? EALREADY : ECANCELED;
            if (W.maybe_einval) *rc2 = EINVAL;
            W.maybe_einval = true;
            return rc;
        }
        case W_QUEUED:
            for (auto it = O.queue.begin(); it != O.queue.end(); ++it)
                if (*it == c.slot) {
                    O.queue.erase(it);
                    break;
                }
            // The waiter is free only once cancel returns: callbacks run by the grant below
            // (inside cancel) must not reuse its storage.
            W.st = W_IDLE;
            W.pending = true;
            grant(w, c.obj); // the head may have been holding back smaller requests
            S.waiters[c.slot].pending = false;
            return 0;
        }
        return EINVAL;
    }
    case K_RELEASE:
        if (am) {
            if (O.queue.empty() && O.permits != 0) return EPERM;
            O.permits = 1;
            grant(w, c.obj);
            return 0;
        }
        if (!valid_n(n)) return EINVAL;
        if (O.permits > MAX - n) return EAGAIN;
        O.permits += n;
        grant(w, c.obj);
        return 0;
    case K_SHUTDOWN:
        O.shut = true;
        settle(w, c.obj, ECANCELED, [](MWaiter &) { return true; });
        return 0;
    case K_AVAILABLE:
        *value = O.permits;
        return 0;
    default: break;
    }
    return 0;
}

// ---- the real side -----------------------------------------------------------------------

void wake(void *ctx, int status);

void *ctx_of(int slot) { return reinterpret_cast<void *>(static_cast<intptr_t>(slot) + 1); }

// Makes c on the calling thread. Returns its rc; *value for available.
int real_call(const Call &c, uint64_t *value)
{
    void *h = S.objs[c.obj].h;
    auto *s = static_cast<surelock_sem *>(h);
    auto *m = static_cast<surelock_amutex *>(h);
    bool am = c.obj == kAmutex;
    switch (c.kind) {
    case K_RELEASE: return am ? surelock_amutex_unlock(m) : surelock_sem_release(s, c.n);
    case K_TRY: return am ? surelock_amutex_trylock(m) : surelock_sem_tryacquire(s, c.n);
    case K_TIMED0: return am ? surelock_amutex_timedlock(m, 0) : surelock_sem_timedacquire(s, c.n, 0);
    case K_ACQUIRE: return am ? surelock_amutex_lock(m) : surelock_sem_acquire(s, c.n);
    case K_TIMED_SHORT:
        return am ? surelock_amutex_timedlock(m, kShortNs) : surelock_sem_timedacquire(s, c.n, kShortNs);
    case K_ASYNC: {
        if (S.real_busy[c.slot])
            die("MODEL MISMATCH", "the model reuses waiter w%d, but the library never ran its "
                                  "callback nor cancelled it", c.slot);
        surelock_waiter *wt = &g_waiters[c.slot];
        int rc = am ? surelock_amutex_lock_async(m, wt, wake, ctx_of(c.slot))
                    : surelock_sem_acquire_async(s, c.n, wt, wake, ctx_of(c.slot));
        if (rc == EINPROGRESS) S.real_busy[c.slot] = true;
        return rc;
    }
    case K_CANCEL: {
        int rc = am ? surelock_amutex_cancel(m, &g_waiters[c.slot])
                    : surelock_sem_cancel(s, &g_waiters[c.slot]);
        if (rc == 0) S.real_busy[c.slot] = false;
        return rc;
    }
    case K_AVAILABLE: *value = surelock_sem_available(s); return 0;
    case K_SHUTDOWN: return surelock_sem_shutdown(s);
    default: return 0;
    }
}

bool is_error(int rc) { return rc != 0 && rc != EINPROGRESS; }

void wake(void *ctx, int status)
{
    intptr_t slot = reinterpret_cast<intptr_t>(ctx) - 1;
    int w = lockstep::current_worker;
    if (!S.in_call)
        die("MODEL MISMATCH", "callback for w%ld (status %s) on T%d outside any call", (long)slot,
            errname(status), w);
    t_nest++;
    if (S.pos >= S.events.size() || !S.events[S.pos].cb)
        die("MODEL MISMATCH", "unexpected callback w%ld status %s on T%d nest %d", (long)slot,
            errname(status), w, t_nest);
    const Event &e = S.events[S.pos];
    if (e.slot != slot || e.status != status || e.worker != w || e.nest != t_nest)
        die("MODEL MISMATCH", "callback w%ld status %s on T%d nest %d, the model expects %s",
            (long)slot, errname(status), w, t_nest, describe(e).c_str());
    if (S.trace) fprintf(stderr, "fuzz_sem:     %s\n", describe(e).c_str());
    S.pos++;
    S.real_busy[slot] = false;
    int inv = e.inv;
    while (S.pos < S.events.size() && !S.events[S.pos].cb && S.events[S.pos].inv == inv) {
        const Event &a = S.events[S.pos++];
        uint64_t value = 0;
        int rc = real_call(a.call, &value);
        if (S.trace) fprintf(stderr, "fuzz_sem:     %s: got %s\n", describe(a).c_str(),
                             a.call.kind == K_AVAILABLE ? num(value).c_str() : errname(rc));
        if (rc != a.rc && rc != a.rc2)
            die("MODEL MISMATCH", "in the callback of w%ld, %s returned %s; the model expects %s",
                (long)slot, describe(a.call).c_str(), errname(rc), describe(a).c_str());
        if (a.call.kind == K_AVAILABLE && value != a.value)
            die("MODEL MISMATCH", "in the callback of w%ld, %s returned %s; the model expects %s",
                (long)slot, describe(a.call).c_str(), num(value).c_str(), num(a.value).c_str());
        if (is_error(rc) && surelock_errmsg()[0] == '\0')
            die("MODEL MISMATCH", "in the callback of w%ld, %s returned %s with an empty errmsg",
                (long)slot, describe(a.call).c_str(), errname(rc));
    }
    t_nest--;
}

// ---- top-level calls ---------------------------------------------------------------------

struct Outcome {
    int rc = 0;
    uint64_t value = 0;
    uint64_t available[2] = {};
    lockstep::ErrmsgCopy before, after;
};

// Runs fn on worker w inside a predicted trace, then reads both semaphores' available()
// (but not skip's: it is being freed).
Outcome exec(int w, const char *what, const std::function<int(uint64_t *)> &fn, int skip = -1)
{
    Outcome o;
    S.pos = 0;
    S.current = "T" + std::to_string(w) + " " + what;
    S.in_call = true;
    S.pool->run(w, [&] {
        o.before.take(surelock_errmsg());
        o.rc = fn(&o.value);
        o.after.take(surelock_errmsg());
        for (int i = 0; i < 2; i++)
            if (S.objs[i].alive && i != skip)
                o.available[i] = surelock_sem_available(static_cast<surelock_sem *>(S.objs[i].h));
    }, what);
    if (S.pos != S.events.size())
        die("MODEL MISMATCH", "T%d %s returned %s but the library ran %zu of the %zu predicted "
                              "trace steps (missing: %s)", w, what, errname(o.rc), S.pos,
            S.events.size(), describe(S.events[S.pos]).c_str());
    S.in_call = false;
    return o;
}

void begin_prediction()
{
    S.events.clear();
    S.inv = 0;
    S.async_budget = kCallbackAsyncBudget;
    S.action_budget = kCallbackActionBudget;
}

void check(const char *call, int w, const Outcome &o, int expected, int expected2 = -1,
           bool errno_fn = true, int skip = -1)
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
            die("MODEL MISMATCH", "T%d %s returned %s but errmsg is empty", w, call, errname(o.rc));
    } else if (changed) {
        die("MODEL MISMATCH", "T%d %s returned %s but changed errmsg from \"%s\" to \"%s\"", w,
            call, errname(o.rc), o.before.text, o.after.text);
    }
    for (int i = 0; i < 2; i++)
        if (S.objs[i].alive && i != skip && o.available[i] != S.objs[i].permits)
            die("MODEL MISMATCH", "after T%d %s, available(S%d) is %s, the model expects %s", w,
                call, i, num(o.available[i]).c_str(), num(S.objs[i].permits).c_str());
}

// A top-level call of kind k: predicts, makes it on worker w, checks.
void top_call(int w, Call c)
{
    MObj &O = S.objs[c.obj];
    uint64_t n = c.obj == kAmutex ? 1 : c.n;
    if (c.kind == K_ACQUIRE && valid_n(n) && !O.shut && !(O.queue.empty() && O.permits >= n))
        c.kind = K_TIMED_SHORT; // it would wait: see "Blocking" at the top
    begin_prediction();
    uint64_t value = 0;
    int rc2 = -1;
    int expected = model_call(w, c, &value, &rc2);
    std::string what = describe(c);
    Outcome o = exec(w, what.c_str(), [&](uint64_t *v) { return real_call(c, v); });
    if (c.kind == K_AVAILABLE)
        note("T%d %s -> %s (%zu trace steps)", w, what.c_str(), num(o.value).c_str(), S.events.size());
    else
        note("T%d %s -> %s (%zu trace steps)", w, what.c_str(), errname(o.rc), S.events.size());
    for (const Event &e : S.events) S.log.push_back("    " + describe(e)); // wake() traces them
    check(what.c_str(), w, o, expected, rc2, c.kind != K_AVAILABLE);
    if (c.kind == K_AVAILABLE && o.value != value)
        die("MODEL MISMATCH", "T%d %s returned %s, the model expects %s", w, what.c_str(),
            num(o.value).c_str(), num(value).c_str());
}

void forget_waiters_of(int obj)
{
    for (int i = 0; i < kMaxSlots; i++)
        if (S.waiters[i].obj == obj) {
            S.waiters[i] = MWaiter{};
            memset(&g_waiters[i], 0, sizeof g_waiters[i]); // the harness's own storage
        }
}

void do_new(int w, int obj, uint8_t code)
{
    MObj &O = S.objs[obj];
    uint64_t permits = obj == kAmutex ? 1 : kPermits[code % 8];
    bool bad = permits > MAX;
    bool fails = !bad && model_allocation_fails();
    void *out = nullptr;
    char what[64];
    if (obj == kAmutex) snprintf(what, sizeof what, "amutex_new(A)");
    else snprintf(what, sizeof what, "sem_new(%s) -> S%d", num(permits).c_str(), obj);
    begin_prediction();
    Outcome o = exec(w, what, [&](uint64_t *) {
        return obj == kAmutex ? surelock_amutex_new(reinterpret_cast<surelock_amutex **>(&out))
                              : surelock_sem_new(permits, reinterpret_cast<surelock_sem **>(&out));
    });
    note("T%d %s: %s", w, what, errname(o.rc));
    check(what, w, o, bad ? EINVAL : fails ? ENOMEM : 0);
    if (o.rc != 0) {
        if (out != nullptr) die("MODEL MISMATCH", "failed %s wrote *out", what);
        return;
    }
    if (out == nullptr) die("MODEL MISMATCH", "%s returned 0 but *out is NULL", what);
    int gen = O.gen + 1;
    O = MObj{};
    O.alive = true;
    O.h = out;
    O.gen = gen;
    O.permits = permits;
}

void do_free(int w, int obj)
{
    MObj &O = S.objs[obj];
    int expected = obj == kAmutex ? (O.permits == 0 ? EBUSY : 0) : (O.queue.empty() ? 0 : EBUSY);
    const char *what = obj == kAmutex ? "amutex_free(A)" : obj == 0 ? "sem_free(S0)" : "sem_free(S1)";
    begin_prediction();
    Outcome o = exec(w, what, [&](uint64_t *) {
        return obj == kAmutex ? surelock_amutex_free(static_cast<surelock_amutex *>(O.h))
                              : surelock_sem_free(static_cast<surelock_sem *>(O.h));
    }, obj);
    note("T%d %s -> %s", w, what, errname(o.rc));
    check(what, w, o, expected, -1, true, obj);
    if (expected == 0) {
        O.alive = false;
        O.h = nullptr;
        forget_waiters_of(obj);
    }
}

void do_nullcall(int w, int variant)
{
    void *s = S.objs[0].alive ? S.objs[0].h : S.objs[1].alive ? S.objs[1].h : nullptr;
    void *a = S.objs[kAmutex].alive ? S.objs[kAmutex].h : nullptr;
    auto *sem = static_cast<surelock_sem *>(s);
    auto *am = static_cast<surelock_amutex *>(a);
    surelock_waiter *sc = &g_scratch;
    const char *what;
    std::function<int(uint64_t *)> fn;
    bool errno_fn = true;
    switch (variant) {
    case 0: what = "sem_new(0, NULL)"; fn = [](uint64_t *) { return surelock_sem_new(0, nullptr); }; break;
    case 1: {
        what = "sem_new(MAX+1, &out)";
        fn = [](uint64_t *) {
            surelock_sem *out = nullptr;
            int rc = surelock_sem_new(MAX + 1, &out);
            if (out != nullptr) die("MODEL MISMATCH", "failed sem_new wrote *out");
            return rc;
        };
        break;
    }
    case 2: what = "sem_free(NULL)"; fn = [](uint64_t *) { return surelock_sem_free(nullptr); }; break;
    case 3: what = "sem_acquire(NULL, 1)"; fn = [](uint64_t *) { return surelock_sem_acquire(nullptr, 1); }; break;
    case 4: what = "sem_tryacquire(NULL, 1)"; fn = [](uint64_t *) { return surelock_sem_tryacquire(nullptr, 1); }; break;
    case 5: what = "sem_timedacquire(NULL, 1, 0)"; fn = [](uint64_t *) { return surelock_sem_timedacquire(nullptr, 1, 0); }; break;
    case 6: what = "sem_acquire_async(NULL, 1, w, fn)"; fn = [sc](uint64_t *) { return surelock_sem_acquire_async(nullptr, 1, sc, wake, nullptr); }; break;
    case 7: what = "sem_acquire_async(S, 1, NULL, fn)"; fn = [sem](uint64_t *) { return surelock_sem_acquire_async(sem, 1, nullptr, wake, nullptr); }; break;
    case 8: what = "sem_acquire_async(S, 1, w, NULL)"; fn = [sem, sc](uint64_t *) { return surelock_sem_acquire_async(sem, 1, sc, nullptr, nullptr); }; break;
    case 9: what = "sem_cancel(NULL, w)"; fn = [sc](uint64_t *) { return surelock_sem_cancel(nullptr, sc); }; break;
    case 10: what = "sem_cancel(S, NULL)"; fn = [sem](uint64_t *) { return surelock_sem_cancel(sem, nullptr); }; break;
    case 11: what = "sem_release(NULL, 1)"; fn = [](uint64_t *) { return surelock_sem_release(nullptr, 1); }; break;
    case 12: what = "sem_shutdown(NULL)"; fn = [](uint64_t *) { return surelock_sem_shutdown(nullptr); }; break;
    case 13:
        what = "sem_available(NULL)";
        errno_fn = false;
        fn = [](uint64_t *v) {
            *v = surelock_sem_available(nullptr);
            return 0;
        };
        break;
    case 14: what = "amutex_new(NULL)"; fn = [](uint64_t *) { return surelock_amutex_new(nullptr); }; break;
    case 15: what = "amutex_free(NULL)"; fn = [](uint64_t *) { return surelock_amutex_free(nullptr); }; break;
    case 16: what = "amutex_lock(NULL)"; fn = [](uint64_t *) { return surelock_amutex_lock(nullptr); }; break;
    case 17: what = "amutex_trylock(NULL)"; fn = [](uint64_t *) { return surelock_amutex_trylock(nullptr); }; break;
    case 18: what = "amutex_timedlock(NULL, 0)"; fn = [](uint64_t *) { return surelock_amutex_timedlock(nullptr, 0); }; break;
    case 19: what = "amutex_lock_async(NULL, w, fn)"; fn = [sc](uint64_t *) { return surelock_amutex_lock_async(nullptr, sc, wake, nullptr); }; break;
    case 20: what = "amutex_lock_async(A, NULL, fn)"; fn = [am](uint64_t *) { return surelock_amutex_lock_async(am, nullptr, wake, nullptr); }; break;
    case 21: what = "amutex_lock_async(A, w, NULL)"; fn = [am, sc](uint64_t *) { return surelock_amutex_lock_async(am, sc, nullptr, nullptr); }; break;
    case 22: what = "amutex_cancel(NULL, w)"; fn = [sc](uint64_t *) { return surelock_amutex_cancel(nullptr, sc); }; break;
    case 23: what = "amutex_cancel(A, NULL)"; fn = [am](uint64_t *) { return surelock_amutex_cancel(am, nullptr); }; break;
    default: what = "amutex_unlock(NULL)"; fn = [](uint64_t *) { return surelock_amutex_unlock(nullptr); }; break;
    }
    begin_prediction();
    Outcome o = exec(w, what, fn);
    note("T%d %s -> %s", w, what, errno_fn ? errname(o.rc) : num(o.value).c_str());
    if (errno_fn) {
        check(what, w, o, EINVAL);
    } else {
        check(what, w, o, 0, -1, false);
        if (o.value != 0) die("MODEL MISMATCH", "T%d %s returned %s", w, what, num(o.value).c_str());
    }
}

void do_exit(int w)
{
    note("T%d exits", w);
    S.pool->exit_worker(w);
    S.threads[w] = MThread{};
}

// ---- per-input setup and cleanup ---------------------------------------------------------

void initialise()
{
    S.initialised = true;
    const char *t = getenv("SURELOCK_FUZZ_TRACE");
    S.trace = t != nullptr && *t != '\0' && strcmp(t, "0") != 0;
    t = getenv("SURELOCK_FUZZ_STRICT");
    S.strict = t != nullptr && *t != '\0' && strcmp(t, "0") != 0;
    S.slots = S.strict ? kMaxSlots : kDefaultSlots;
    S.pool = new lockstep::Pool(kWorkers, on_hang);
}

void cleanup()
{
    set_allocation_countdown(-1);
    note("-- cleanup --");
    // Cancel every queued waiter (no grants: the queue only shrinks from its tail).
    for (int obj = 0; obj < kObjects; obj++)
        while (S.objs[obj].alive && !S.objs[obj].queue.empty()) {
            Call c;
            c.kind = K_CANCEL;
            c.obj = obj;
            c.slot = S.objs[obj].queue.back();
            top_call(0, c);
        }
    // The amutex is freed only unlocked.
    if (S.objs[kAmutex].alive && S.objs[kAmutex].permits == 0) {
        Call c;
        c.kind = K_RELEASE;
        c.obj = kAmutex;
        top_call(0, c);
    }
    for (int obj = 0; obj < kObjects; obj++)
        if (S.objs[obj].alive) do_free(0, obj);
    for (int i = 0; i < kMaxSlots; i++)
        if (S.waiters[i].st == W_QUEUED || S.waiters[i].pending || S.real_busy[i])
            die("HARNESS", "cleanup left waiter w%d busy", i);
    for (int i = 0; i < kMaxSlots; i++) S.waiters[i] = MWaiter{};
    memset(g_waiters, 0, sizeof g_waiters);
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
    uint8_t p0 = next(), p1 = next();
    do_new(0, 0, p0);
    do_new(0, 1, p1);
    do_new(0, kAmutex, 0);
    for (size_t ops = 0; pos < size && ops < kMaxOps; ops++) {
        uint8_t b = next();
        int w = (b & 3) == 3 ? S.prev_worker : (b & 3);
        S.prev_worker = w;
        int op = (b >> 2) % OP_COUNT;
        uint8_t a = 0, a2 = 0, a3 = 0, a4 = 0;
        switch (op) {
        case OP_EXIT: break;
        case OP_NEW: case OP_CANCEL: a = next(); a2 = next(); break;
        case OP_ASYNC: a = next(); a2 = next(); a3 = next(); a4 = next(); break;
        case OP_MANY: a = next(); a2 = next(); a3 = next(); break;
        default: a = next(); break;
        }
        int obj = a % kObjects;
        Call c;
        c.obj = obj;
        c.n = kN[(a / 3) % 16];
        if (op != OP_NEW && op != OP_FAILALLOC && op != OP_NULLCALL && op != OP_EXIT &&
            !S.objs[obj].alive) {
            note("T%d %s skipped: object %d is freed", w, op_names[op], obj);
            continue;
        }
        switch (op) {
        case OP_NEW:
            if (S.objs[obj].alive) note("T%d new skipped: object %d exists", w, obj);
            else do_new(w, obj, a2);
            break;
        case OP_FREE: do_free(w, obj); break;
        case OP_TRY: c.kind = K_TRY; top_call(w, c); break;
        case OP_TIMED0: c.kind = K_TIMED0; top_call(w, c); break;
        case OP_ACQUIRE: c.kind = K_ACQUIRE; top_call(w, c); break;
        case OP_ASYNC: {
            int slot = a2 % S.slots;
            const MWaiter &W = S.waiters[slot];
            if (W.st == W_QUEUED || W.pending) {
                note("T%d async skipped: w%d is queued", w, slot);
                break;
            }
            S.waiters[slot].script.clear();
            for (uint8_t x : {a3, a4})
                if (x % 9 != K_NONE) S.waiters[slot].script.push_back(x);
            c.kind = K_ASYNC;
            c.slot = slot;
            top_call(w, c);
            break;
        }
        case OP_CANCEL:
            c.kind = K_CANCEL;
            c.slot = a2 % S.slots;
            top_call(w, c);
            break;
        case OP_RELEASE: c.kind = K_RELEASE; top_call(w, c); break;
        case OP_SHUTDOWN:
            if (obj == kAmutex) {
                note("T%d shutdown skipped: the amutex has none", w);
                break;
            }
            c.kind = K_SHUTDOWN;
            top_call(w, c);
            break;
        case OP_AVAILABLE:
            if (obj == kAmutex) {
                note("T%d available skipped: the amutex has none", w);
                break;
            }
            c.kind = K_AVAILABLE;
            top_call(w, c);
            break;
        case OP_FAILALLOC:
            note("fail the allocation after the next %d", a % 4);
            set_allocation_countdown(a % 4);
            break;
        case OP_NULLCALL: do_nullcall(w, a % 25); break;
        case OP_EXIT: do_exit(w); break;
        case OP_MANY: {
            if (!S.strict) {
                note("T%d many skipped (strict mode only)", w);
                break;
            }
            int count = a2 % 24 + 1;
            for (int i = 0; i < count; i++) {
                int slot = lowest_free_slot();
                if (slot < 0) break;
                S.waiters[slot].script.clear();
                if (a3 % 9 != K_NONE) S.waiters[slot].script.push_back(a3);
                Call m;
                m.kind = K_ASYNC;
                m.obj = obj;
                m.n = 1;
                m.slot = slot;
                top_call(w, m);
            }
            break;
        }
        default: break;
        }
    }
    cleanup();
    return 0;
}
