// `surelock bench sem`: the async FIFO mutex (and the semaphore it is built on) against a
// pthread normal mutex, a FIFO ticket lock made of a pthread mutex and condition variable
// (the FIFO lock a C programmer would write) and a POSIX sem_t used as a binary semaphore.
//
// Scenarios (issue 5, item 5):
//   amutex uncontended lock+unlock         ns per pair             target <= 1.5x pthread normal
//   lock_async on a free amutex + unlock   ns per pair             target <= 2.0x pthread normal
//                                          (peer: plain lock+unlock)
//   sem acquire(1)+release(1), uncontended ns per pair             context: vs sem_t
//   amutex / sem(1) contended, 2 and 8     Mops/s; lock; counter++; unlock; local work.
//   threads                                surelock blocks (amutex_lock, sem_acquire). Target
//                                          >= 10x the ticket lock (the FIFO peer); pthread
//                                          normal and sem_t are not FIFO (for context)
//   hand-off: release -> blocked waiter    ns from the holder's unlock call to the return of
//     returns                              the lock call of a thread asleep in it
//   hand-off: release -> callback runs     ns from the unlock call to the start of the
//                                          lock_async callback it grants (which runs on the
//                                          releasing thread); surelock only
// The hand-off rows have no target.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "bench.h"
#include "peers.h"
#include "surelock.h"

namespace surelock::bench {

namespace {

std::atomic<uint64_t> failures{0};

void complain(const char *what)
{
    fprintf(stderr, "surelock bench sem: %s\n", what);
    failures++;
}

// ---- The contenders: lock() / unlock() return 0 or an errno ---------------------------------




struct alignas(64) PosixSem {
    sem_t s;
    bool ready;
    PosixSem() { ready = sem_init(&s, 0, 1) == 0; }
    ~PosixSem()
    {
        if (ready) sem_destroy(&s);
    }
    bool ok() const { return ready; }
    int lock()
    {
        int r;
        while ((r = sem_wait(&s)) != 0 && errno == EINTR) {
        }
        return r == 0 ? 0 : errno;
    }
    int unlock() { return sem_post(&s) == 0 ? 0 : errno; }
};

enum Column { c_surelock, c_pthread, c_ticket, c_sem, columns };

// ---- Uncontended ------------------------------------------------------------------------------

template <class L> Sampler uncontended(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto lock = std::make_unique<L>();
            if (!lock->ok()) {
                complain("cannot create a lock");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                L *p = lock.get();
                do_not_optimize(p); // reloaded every iteration: nothing hoisted
                if (__builtin_expect(p->lock() != 0, 0)) bad++;
                if (__builtin_expect(p->unlock() != 0, 0)) bad++;
            }
            if (bad) complain("uncontended lock/unlock failed");
        },
        o.loop_seconds());
}

void never_called(void *, int)
{
    complain("a lock_async callback ran for a lock that was free");
}

Sampler async_uncontended(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto lock = std::make_unique<SurelockAmutex>();
            auto waiter = std::make_unique<surelock_waiter>();
            if (!lock->ok()) {
                complain("cannot create an amutex");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                surelock_amutex *m = lock->m;
                do_not_optimize(m);
                if (__builtin_expect(
                        surelock_amutex_lock_async(m, waiter.get(), never_called, nullptr) != 0, 0))
                    bad++;
                if (__builtin_expect(surelock_amutex_unlock(m) != 0, 0)) bad++;
            }
            if (bad) complain("lock_async on a free amutex did not take it at once");
        },
        o.loop_seconds());
}

Sampler sem_uncontended(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            surelock_sem *s = nullptr;
            if (surelock_sem_new(1, &s) != 0) {
                complain("cannot create a semaphore");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                surelock_sem *p = s;
                do_not_optimize(p);
                if (__builtin_expect(surelock_sem_acquire(p, 1) != 0, 0)) bad++;
                if (__builtin_expect(surelock_sem_release(p, 1) != 0, 0)) bad++;
            }
            surelock_sem_free(s);
            if (bad) complain("semaphore acquire/release failed");
        },
        o.loop_seconds());
}

// ---- Contended --------------------------------------------------------------------------------

// A surelock semaphore of one permit, used as a FIFO lock.
struct alignas(64) SurelockSem1 {
    surelock_sem *s = nullptr;
    SurelockSem1()
    {
        if (surelock_sem_new(1, &s) != 0) s = nullptr;
    }
    ~SurelockSem1()
    {
        if (s) surelock_sem_free(s);
    }
    bool ok() const { return s != nullptr; }
    int lock() { return surelock_sem_acquire(s, 1); }
    int unlock() { return surelock_sem_release(s, 1); }
};

constexpr int work_steps = 32; // local work between acquisitions, see local_work()

template <class L> Sampler contended(const Options &o, int threads)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds]() -> Sample {
        return exclusive_throughput<L>(threads, seconds, work_steps, complain);
    };
}

// ---- Hand-off latency -------------------------------------------------------------------------

int64_t now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

double median_of(std::vector<double> &v)
{
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// What two back-to-back clock reads differ by: subtracted from the callback latency, whose
// two ends are clock reads a few dozen ns apart.
double clock_read_ns()
{
    std::vector<double> d;
    for (int i = 0; i < 2001; i++) {
        int64_t a = now_ns();
        int64_t b = now_ns();
        d.push_back(double(b - a));
    }
    return median_of(d);
}

// The main thread holds the lock; a second thread calls lock and falls asleep in it (checked
// in /proc); the main thread notes the time and unlocks; the waiter notes when its lock call
// returns. A sample is the median of `rounds` hand-offs.
template <class L> Sampler handoff_blocked(const Options &o)
{
    int rounds = o.quick ? 20 : 100;
    return [rounds]() -> Sample {
        auto lock = std::make_unique<L>();
        if (!lock->ok()) {
            complain("cannot create a lock");
            return 0;
        }
        L *p = lock.get();
        std::atomic<int> round{0}, locking{0}, done{0}, tid{0};
        std::atomic<int64_t> returned_at{0};
        std::atomic<uint64_t> bad{0};
        std::thread waiter([&] {
            tid.store(gettid());
            for (int r = 1; r <= rounds; r++) {
                while (round.load(std::memory_order_acquire) != r) std::this_thread::yield();
                locking.store(r, std::memory_order_release);
                if (p->lock() != 0) bad++;
                returned_at.store(now_ns(), std::memory_order_relaxed);
                if (p->unlock() != 0) bad++;
                done.store(r, std::memory_order_release);
            }
        });
        std::vector<double> ns;
        for (int r = 1; r <= rounds; r++) {
            if (p->lock() != 0) bad++;
            round.store(r, std::memory_order_release);
            while (locking.load(std::memory_order_acquire) != r) std::this_thread::yield();
            bool asleep = wait_until_blocked(tid.load(), 10);
            int64_t released_at = now_ns();
            if (p->unlock() != 0) bad++;
            while (done.load(std::memory_order_acquire) != r) std::this_thread::yield();
            if (!asleep) {
                complain("the waiter never fell asleep in lock");
                continue;
            }
            ns.push_back(double(returned_at.load(std::memory_order_relaxed) - released_at));
        }
        waiter.join();
        if (bad) complain("hand-off lock/unlock failed");
        return Sample(median_of(ns));
    };
}

struct CallbackProbe {
    int64_t ran_at = 0;
    int status = -1;
};

void note_time(void *ctx, int status)
{
    auto *probe = static_cast<CallbackProbe *>(ctx);
    probe->ran_at = now_ns();
    probe->status = status;
}

// One thread: lock the amutex, queue a lock_async behind itself, then unlock: the unlock
// grants the queued waiter and runs its callback before returning. Measured from just before
// the unlock call to the callback's first line (minus one clock read). The callback's grant
// is then released. A sample is the median of many hand-offs.
Sampler handoff_callback(const Options &o)
{
    int iterations = o.quick ? 2000 : 20000;
    return [iterations]() -> Sample {
        auto lock = std::make_unique<SurelockAmutex>();
        auto waiter = std::make_unique<surelock_waiter>();
        if (!lock->ok()) {
            complain("cannot create an amutex");
            return 0;
        }
        surelock_amutex *m = lock->m;
        double clock_cost = clock_read_ns();
        std::vector<double> ns;
        ns.reserve(iterations);
        uint64_t bad = 0;
        CallbackProbe probe;
        for (int i = 0; i < iterations; i++) {
            probe.status = -1;
            if (surelock_amutex_lock(m) != 0) bad++;
            if (surelock_amutex_lock_async(m, waiter.get(), note_time, &probe) != EINPROGRESS)
                bad++;
            int64_t released_at = now_ns();
            if (surelock_amutex_unlock(m) != 0) bad++;
            if (probe.status != 0) bad++; // the callback must have run, granted, by now
            ns.push_back(double(probe.ran_at - released_at) - clock_cost);
            if (surelock_amutex_unlock(m) != 0) bad++; // the grant the callback received
        }
        if (bad) complain("async hand-off misbehaved");
        return Sample(median_of(ns));
    };
}

} // namespace

int run_sem(const Options &o)
{
    Table table;
    table.title = std::string("surelock bench sem: async FIFO mutex and semaphore (libsurelock ") +
                  surelock_version() + ") vs peers\nmachine: " + machine_summary() +
                  "\nticket lock = FIFO lock from a pthread mutex + condition variable (take a "
                  "ticket, wait until served); sem_t = POSIX, value 1.\n"
                  "Contended: lock; shared counter++; unlock; local work (surelock: blocking "
                  "amutex_lock). pthread normal and sem_t are not FIFO: context only.\n"
                  "Hand-off rows: median of " +
                  std::to_string(o.quick ? 20 : 100) +
                  " hand-offs to a thread asleep in lock, or of " +
                  std::to_string(o.quick ? 2000 : 20000) +
                  " unlocks granting a queued lock_async (its callback runs on the releasing "
                  "thread)";
    table.columns.resize(columns);
    table.columns[c_surelock] = "surelock";
    table.columns[c_pthread] = "pthread normal";
    table.columns[c_ticket] = "ticket lock (mutex+cond)";
    table.columns[c_sem] = "sem_t";

    Row &un = table.add_row("amutex uncontended lock+unlock", ns_per_op, {c_pthread, 1.5});
    Table::measure(un,
                   {uncontended<SurelockAmutex>(o), uncontended<PthreadNormal>(o),
                    uncontended<TicketLock>(o), uncontended<PosixSem>(o)},
                   o.runs);

    Row &as = table.add_row("amutex lock_async (free) + unlock", ns_per_op, {c_pthread, 2.0});
    as.cells[c_ticket].applicable = false;
    as.cells[c_sem].applicable = false;
    Table::measure(as, {async_uncontended(o), uncontended<PthreadNormal>(o), nullptr, nullptr},
                   o.runs);

    Row &se = table.add_row("sem acquire(1)+release(1), uncontended", ns_per_op);
    se.cells[c_pthread].applicable = false;
    se.cells[c_ticket].applicable = false;
    Table::measure(se, {sem_uncontended(o), nullptr, nullptr, uncontended<PosixSem>(o)}, o.runs);

    for (int threads : {2, 8}) {
        Row &co = table.add_row("amutex contended, " + std::to_string(threads) + " threads",
                                mops_per_s, {c_ticket, 10.0});
        co.threads = threads;
        Table::measure(co,
                       {contended<SurelockAmutex>(o, threads), contended<PthreadNormal>(o, threads),
                        contended<TicketLock>(o, threads), contended<PosixSem>(o, threads)},
                       o.runs);
        Row &cs = table.add_row("sem(1) acquire+release contended, " + std::to_string(threads) +
                                    " threads",
                                mops_per_s, {c_ticket, 10.0});
        cs.threads = threads;
        Table::measure(cs,
                       {contended<SurelockSem1>(o, threads), contended<PthreadNormal>(o, threads),
                        contended<TicketLock>(o, threads), contended<PosixSem>(o, threads)},
                       o.runs);
    }

    Row &hb = table.add_row("hand-off: release -> blocked waiter returns", ns_per_op);
    Table::measure(hb,
                   {handoff_blocked<SurelockAmutex>(o), handoff_blocked<PthreadNormal>(o),
                    handoff_blocked<TicketLock>(o), handoff_blocked<PosixSem>(o)},
                   o.runs);

    Row &hc = table.add_row("hand-off: release -> async callback runs", ns_per_op);
    hc.cells[c_pthread].applicable = false;
    hc.cells[c_ticket].applicable = false;
    hc.cells[c_sem].applicable = false;
    Table::measure(hc, {handoff_callback(o), nullptr, nullptr, nullptr}, o.runs);

    table.print(stdout, o);
    fflush(stdout);

    if (failures.load() != 0) {
        fprintf(stderr, "surelock bench sem: %llu failure(s) (see above)\n",
                (unsigned long long)failures.load());
        return bench_failed;
    }
    return bench_ok;
}

} // namespace surelock::bench
