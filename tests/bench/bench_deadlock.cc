// `surelock bench deadlock`: what deadlock detection (issue 14) costs.
//
// Detection runs only on the contended path: a thread about to sleep registers its wait
// under the graph lock and walks the wait-for graph, and unregisters after waking. So:
//   mutex / rlock contended, 2 and 4 threads   Mops/s, detection on vs off (the cost)
//   mutex / rlock uncontended lock+unlock      ns per pair, on vs off: target ratio <= 1.01
//                                              (the fast path never reaches the detector)
// The switch is surelock_set_deadlock_detection, set before each sample. Uncontended numbers
// against the library before detection existed are best compared with callgrind instruction
// counts (timings on a shared machine are noisier than 1 %).
#include <surelock.h>

#include <memory>
#include <string>

#include "bench.h"

namespace surelock::bench {

namespace {

std::atomic<uint64_t> failures{0};

void complain(const char *what)
{
    if (failures.fetch_add(1) < 5) fprintf(stderr, "surelock bench deadlock: %s: %s\n", what,
                                           surelock_errmsg());
}

struct Mutex {
    surelock_mutex *m = nullptr;
    Mutex() { surelock_mutex_new(&m); }
    ~Mutex() { surelock_mutex_free(m); }
    bool ok() const { return m != nullptr; }
    int lock() { return surelock_mutex_lock(m); }
    int unlock() { return surelock_mutex_unlock(m); }
};

struct Rlock {
    surelock_rlock *l = nullptr;
    Rlock() { surelock_rlock_new(&l); }
    ~Rlock() { surelock_rlock_free(l); }
    bool ok() const { return l != nullptr; }
    int lock() { return surelock_rlock_lock(l); }
    int unlock() { return surelock_rlock_unlock(l); }
};

enum Column { detection_on, detection_off, columns };

void set_detection(Column c)
{
    if (surelock_set_deadlock_detection(c == detection_on ? 1 : 0) != 0)
        complain("surelock_set_deadlock_detection failed");
}

template <class L> Sampler uncontended(const Options &o, Column c)
{
    LoopSampler loop(
        [](uint64_t n) {
            auto lock = std::make_unique<L>();
            if (!lock->ok()) {
                complain("cannot create a lock");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                L *p = lock.get();
                do_not_optimize(p);
                if (__builtin_expect(p->lock() != 0, 0)) bad++;
                if (__builtin_expect(p->unlock() != 0, 0)) bad++;
            }
            if (bad) complain("uncontended lock/unlock failed");
        },
        o.loop_seconds());
    return [loop, c]() mutable {
        set_detection(c);
        return loop();
    };
}

constexpr int work_steps = 32; // local work between acquisitions, as bench_group's

template <class L> Sampler contended(const Options &o, int threads, Column c)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds, c]() -> Sample {
        set_detection(c);
        return exclusive_throughput<L>(threads, seconds, work_steps, complain);
    };
}

template <class L> void rows_for(Table &t, const Options &o, const char *name)
{
    Row &u = t.add_row(std::string(name) + " uncontended lock+unlock", ns_per_op,
                       {detection_off, 1.01});
    Table::measure(u, {uncontended<L>(o, detection_on), uncontended<L>(o, detection_off)},
                   o.runs);
    for (int threads : {2, 4}) {
        Row &row = t.add_row(std::string(name) + " contended, " + std::to_string(threads) +
                                 " threads",
                             mops_per_s);
        row.threads = threads;
        Table::measure(row,
                       {contended<L>(o, threads, detection_on),
                        contended<L>(o, threads, detection_off)},
                       o.runs);
    }
}

} // namespace

int run_deadlock(const Options &o)
{
    Table t;
    t.title = std::string("surelock bench deadlock: the cost of deadlock detection (libsurelock ") +
              surelock_version() + ")\nmachine: " + machine_summary() +
              "\non / off = surelock_set_deadlock_detection(1 / 0). Contended: lock; shared "
              "counter++; unlock; local work.";
    t.columns = {"detection on", "detection off"};
    rows_for<Mutex>(t, o, "mutex");
    rows_for<Rlock>(t, o, "rlock");
    surelock_set_deadlock_detection(1); // the default again
    t.print(stdout, o);
    fflush(stdout);
    if (failures.load() != 0) {
        fprintf(stderr, "surelock bench deadlock: %llu failure(s) (see above)\n",
                (unsigned long long)failures.load());
        return bench_failed;
    }
    return bench_ok;
}

} // namespace surelock::bench
