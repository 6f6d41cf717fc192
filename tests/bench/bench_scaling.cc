// `surelock bench scaling`: throughput of each primitive against its plainest peer at 1, 2, 4,
// 8 and 16 threads (issue 13, item 6). With more threads than CPUs the point is that nothing
// collapses: a lock whose waiters spin or whose hand-offs need the preempted thread shows it
// here. Every thread loops: lock; shared counter++; unlock; a few dozen cycles of local work
// (rwlock: every 20th operation writes, the rest read). Printed as a table, and with
// `surelock bench --plot FILE.svg` drawn as a line plot.
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "bench.h"
#include "peers.h"
#include "surelock.h"

namespace surelock::bench {

namespace {

std::atomic<uint64_t> failures{0};

void complain(const char *what)
{
    fprintf(stderr, "surelock bench scaling: %s\n", what);
    failures++;
}

constexpr int thread_counts[] = {1, 2, 4, 8, 16};
constexpr int work_steps = 32;
constexpr int write_every = 20;

struct alignas(64) Shared {
    uint64_t counter = 0;
    uint64_t a = 0, b = 0; // rwlock: the writer keeps them equal
};

// An exclusive lock (lock/unlock) under contention: the counter must come out exact.
template <class L> Sampler exclusive(const Options &o, int threads)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds]() -> Sample {
        return exclusive_throughput<L>(threads, seconds, work_steps, complain);
    };
}

// A reader-writer lock, 95 % reads.
template <class L> Sampler read_mostly(const Options &o, int threads)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds]() -> Sample {
        auto lock = std::make_unique<L>();
        auto data = std::make_unique<Shared>();
        if (!lock->ok()) {
            complain("cannot create an rwlock");
            return 0;
        }
        L *p = lock.get();
        Shared *d = data.get();
        std::vector<std::array<uint64_t, 8>> ops(threads); // one cache line per thread
        std::atomic<uint64_t> bad{0}, torn{0}, writes{0};
        double elapsed = 0, cpus = 0;
        uint64_t total = run_threads(
            threads, seconds,
            [p, d, &ops, &bad, &torn, &writes](int t) {
                if ((ops[t][0]++ + uint64_t(t) * 5) % write_every == 0) {
                    if (__builtin_expect(p->wrlock() != 0, 0)) bad++;
                    d->a++;
                    clobber_memory();
                    d->b++;
                    if (__builtin_expect(p->unlock() != 0, 0)) bad++;
                    writes.fetch_add(1, std::memory_order_relaxed);
                } else {
                    if (__builtin_expect(p->rdlock() != 0, 0)) bad++;
                    uint64_t a = d->a;
                    clobber_memory();
                    uint64_t b = d->b;
                    if (__builtin_expect(p->unlock() != 0, 0)) bad++;
                    if (__builtin_expect(a != b, 0)) torn++;
                }
                uint64_t x = local_work(uint64_t(t) + 1, work_steps);
                do_not_optimize(x);
            },
            &elapsed, &cpus);
        if (bad) complain("rwlock lock/unlock failed");
        if (torn || d->a != writes.load() || d->b != writes.load())
            complain("rwlock: a reader saw a half-done write, or writes were lost");
        return Sample(double(total) / elapsed / 1e6, cpus);
    };
}

// Two adjacent forks out of max(threads, 2) per meal, as one acquisition: a surelock group
// of two surelock mutexes, or std::lock over two std::mutex.
struct SurelockForks {
    std::vector<surelock_mutex *> forks;
    std::vector<surelock_group *> pairs;
    bool ok = true;
    explicit SurelockForks(int n) : forks(n, nullptr), pairs(n, nullptr)
    {
        for (int i = 0; i < n; i++) ok &= surelock_mutex_new(&forks[i]) == 0;
        for (int i = 0; ok && i < n; i++)
            ok &= surelock_group_new(&pairs[i]) == 0 &&
                  surelock_group_add_mutex(pairs[i], forks[i]) == 0 &&
                  surelock_group_add_mutex(pairs[i], forks[(i + 1) % n]) == 0;
    }
    ~SurelockForks()
    {
        for (surelock_group *g : pairs)
            if (g) surelock_group_free(g);
        for (surelock_mutex *m : forks)
            if (m) surelock_mutex_free(m);
    }
    int lock(int p) { return surelock_group_lock(pairs[p]); }
    int unlock(int p) { return surelock_group_unlock(pairs[p]); }
};

struct StdForks {
    std::unique_ptr<std::mutex[]> forks;
    int n;
    bool ok = true;
    explicit StdForks(int count) : forks(new std::mutex[count]), n(count) {}
    int lock(int p)
    {
        std::lock(forks[p], forks[(p + 1) % n]);
        return 0;
    }
    int unlock(int p)
    {
        forks[(p + 1) % n].unlock();
        forks[p].unlock();
        return 0;
    }
};

template <class Forks> Sampler forks(const Options &o, int threads)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds]() -> Sample {
        int n = std::max(threads, 2);
        auto table = std::make_unique<Forks>(n);
        std::unique_ptr<Shared[]> uses(new Shared[n]);
        if (!table->ok) {
            complain("cannot build the forks");
            return 0;
        }
        Forks *f = table.get();
        Shared *u = uses.get();
        std::atomic<uint64_t> bad{0};
        double elapsed = 0, cpus = 0;
        uint64_t total = run_threads(
            threads, seconds,
            [f, u, n, &bad](int t) {
                if (__builtin_expect(f->lock(t) != 0, 0)) bad++;
                u[t].counter++;
                u[(t + 1) % n].counter++;
                if (__builtin_expect(f->unlock(t) != 0, 0)) bad++;
                uint64_t x = local_work(uint64_t(t) + 1, work_steps);
                do_not_optimize(x);
            },
            &elapsed, &cpus);
        uint64_t sum = 0;
        for (int i = 0; i < n; i++) sum += u[i].counter;
        if (bad) complain("forks: lock/unlock failed");
        if (sum != 2 * total) complain("forks: a fork's count is wrong: exclusion failed");
        return Sample(double(total) / elapsed / 1e6, cpus);
    };
}

struct Primitive {
    const char *name, *peer;
    Sampler (*subject)(const Options &, int);
    Sampler (*baseline)(const Options &, int);
};

const Primitive primitives[] = {
    {"mutex", "pthread normal", exclusive<SurelockMutex>, exclusive<PthreadNormal>},
    {"rlock", "pthread recursive", exclusive<SurelockRlock>, exclusive<PthreadRecursive>},
    {"rwlock 95% reads", "pthread rwlock", read_mostly<SurelockRwlock>,
     read_mostly<PthreadRwlock>},
    {"group of 2 (forks)", "std::lock of 2", forks<SurelockForks>, forks<StdForks>},
    {"amutex (FIFO)", "ticket lock (FIFO)", exclusive<SurelockAmutex>, exclusive<TicketLock>},
};

} // namespace

int run_scaling(const Options &o)
{
    Table table;
    table.title = std::string("surelock bench scaling: throughput by thread count (libsurelock ") +
                  surelock_version() + ")\nmachine: " + machine_summary() +
                  "\nEach thread: lock; shared counter++; unlock; local work (rwlock: every "
                  "20th operation writes). group: each thread takes two adjacent forks of "
                  "max(threads, 2) as one acquisition. More threads than CPUs: nothing may "
                  "collapse.";
    table.columns = {"surelock", "peer"};
    std::vector<ScalingSeries> series;
    for (const Primitive &p : primitives) {
        ScalingSeries s{p.name, p.peer, {}, {}, {}};
        for (int threads : thread_counts) {
            Row &row = table.add_row(std::string(p.name) + " vs " + p.peer + ", " +
                                         std::to_string(threads) + " thread" +
                                         (threads == 1 ? "" : "s"),
                                     mops_per_s);
            row.threads = threads;
            Table::measure(row, {p.subject(o, threads), p.baseline(o, threads)}, o.runs);
            s.threads.push_back(threads);
            s.subject.push_back(row.cells[0].median());
            s.peer_values.push_back(row.cells[1].median());
        }
        series.push_back(std::move(s));
    }
    table.print(stdout, o);
    fflush(stdout);
    int rc = bench_ok;
    if (!o.plot.empty()) {
        if (write_scaling_svg(o.plot, series)) {
            printf("Plot written to %s.\n", o.plot.c_str());
        } else {
            fprintf(stderr, "surelock bench scaling: cannot write the plot to %s: %s\n",
                    o.plot.c_str(), strerror(errno));
            rc = bench_failed;
        }
    }
    if (failures.load() != 0) {
        fprintf(stderr, "surelock bench scaling: %llu failure(s) (see above)\n",
                (unsigned long long)failures.load());
        return bench_failed;
    }
    return rc;
}

} // namespace surelock::bench
