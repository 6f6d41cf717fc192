// `surelock bench group`: the error-checking mutex, the writer-preferring rwlock and lock-all
// groups against pthreads and the C++ standard library.
//
// Two tables (issue 4, item 7).
// Mutex and rwlock: surelock vs pthread (normal mutex, default pthread_rwlock) and std
// (std::mutex, std::shared_mutex):
//   mutex uncontended lock+unlock            ns per pair        target <= 1.0x pthread
//   mutex contended, 2 / 4 threads           Mops/s             target >= 1.0x pthread
//   rwlock uncontended read lock+unlock      ns per pair        (context)
//   rwlock read-mostly, 4 threads            Mops/s             target >= 1.0x pthread
//     (every 20th operation of each thread writes, the rest read: 95 % reads)
// Groups: a surelock_group of N surelock_mutex vs std::scoped_lock and std::lock over N
// std::mutex, and N pthread mutexes locked in a fixed order by hand (no deadlock avoidance
// beyond the order: the floor of what any all-or-nothing lock can cost):
//   group of 2 / 4 / 8, uncontended           ns per group lock+unlock; target at 8:
//                                             <= 0.6x std::scoped_lock
//   dining philosophers, 5 threads            meals per second (Mops/s); each meal takes
//                                             its two forks as one acquisition; target
//                                             >= 1.0x std::lock
//   dining philosophers, 4 / 5 threads, no    the same without local work between meals (pure
//   thinking between meals                    contention); target >= 1.0x std::lock
// Held-lock bookkeeping: one lock+unlock with 0 or 1024 other locks held by the thread.
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "bench.h"
#include "peers.h"
#include "surelock.h"

namespace surelock::bench {

namespace {

std::atomic<uint64_t> failures{0};

void complain(const char *what)
{
    fprintf(stderr, "surelock bench group: %s\n", what);
    failures++;
}

// ---- Mutexes: lock() / unlock() return 0 or an errno ---------------------------------------



struct alignas(64) StdMutex {
    std::mutex m;
    bool ok() const { return true; }
    int lock()
    {
        m.lock();
        return 0;
    }
    int unlock()
    {
        m.unlock();
        return 0;
    }
};

// ---- Reader-writer locks ----------------------------------------------------------------------



struct alignas(64) StdSharedMutex {
    std::shared_mutex m;
    bool ok() const { return true; }
    int rdlock()
    {
        m.lock_shared();
        return 0;
    }
    int wrlock()
    {
        m.lock();
        return 0;
    }
    // std::shared_mutex has two unlocks; callers of this wrapper use the matching one.
    int unlock_shared()
    {
        m.unlock_shared();
        return 0;
    }
    int unlock_exclusive()
    {
        m.unlock();
        return 0;
    }
};

template <class L> int read_unlock(L &l)
{
    if constexpr (std::is_same_v<L, StdSharedMutex>) return l.unlock_shared();
    else return l.unlock();
}
template <class L> int write_unlock(L &l)
{
    if constexpr (std::is_same_v<L, StdSharedMutex>) return l.unlock_exclusive();
    else return l.unlock();
}

enum LockColumn { l_surelock, l_pthread, l_std, lock_columns };

// ---- Mutex and rwlock scenarios -------------------------------------------------------------

template <class L> Sampler mutex_uncontended(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto lock = std::make_unique<L>();
            if (!lock->ok()) {
                complain("cannot create a mutex");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                L *p = lock.get();
                do_not_optimize(p);
                if (__builtin_expect(p->lock() != 0, 0)) bad++;
                if (__builtin_expect(p->unlock() != 0, 0)) bad++;
            }
            if (bad) complain("uncontended mutex lock/unlock failed");
        },
        o.loop_seconds());
}

template <class L> Sampler read_uncontended(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto lock = std::make_unique<L>();
            if (!lock->ok()) {
                complain("cannot create an rwlock");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                L *p = lock.get();
                do_not_optimize(p);
                if (__builtin_expect(p->rdlock() != 0, 0)) bad++;
                if (__builtin_expect(read_unlock(*p) != 0, 0)) bad++;
            }
            if (bad) complain("uncontended read lock/unlock failed");
        },
        o.loop_seconds());
}

constexpr int work_steps = 32; // local work between acquisitions, see local_work()

template <class L> Sampler mutex_contended(const Options &o, int threads)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds]() -> Sample {
        return exclusive_throughput<L>(threads, seconds, work_steps, complain);
    };
}

// Read-mostly: data whose two halves a writer keeps equal; readers check them.
struct alignas(64) RwData {
    uint64_t a = 0, b = 0;
};
struct alignas(64) PerThread {
    uint64_t ops = 0, writes = 0;
};

// write_every 20: 1 operation in 20 writes (95 % reads); 2: half of them (50/50).
template <class L> Sampler read_mostly(const Options &o, int threads, int write_every = 20)
{
    double seconds = o.threaded_seconds();
    return [threads, seconds, write_every]() -> Sample {
        auto lock = std::make_unique<L>();
        auto data = std::make_unique<RwData>();
        std::vector<PerThread> per(threads);
        if (!lock->ok()) {
            complain("cannot create an rwlock");
            return 0;
        }
        L *p = lock.get();
        RwData *d = data.get();
        PerThread *pt = per.data();
        std::atomic<uint64_t> bad{0}, torn{0};
        double elapsed = 0, cpus = 0;
        uint64_t total = run_threads(
            threads, seconds,
            [p, d, pt, &bad, &torn, write_every](int t) {
                PerThread &me = pt[t];
                // Threads start their write phase at different points, so writes spread out.
                if ((me.ops++ + uint64_t(t) * 5) % uint64_t(write_every) == 0) {
                    if (__builtin_expect(p->wrlock() != 0, 0)) bad++;
                    d->a++;
                    clobber_memory();
                    d->b++;
                    if (__builtin_expect(write_unlock(*p) != 0, 0)) bad++;
                    me.writes++;
                } else {
                    if (__builtin_expect(p->rdlock() != 0, 0)) bad++;
                    uint64_t a = d->a;
                    clobber_memory();
                    uint64_t b = d->b;
                    if (__builtin_expect(read_unlock(*p) != 0, 0)) bad++;
                    if (__builtin_expect(a != b, 0)) torn++;
                }
                uint64_t x = local_work(uint64_t(t) + 1, work_steps);
                do_not_optimize(x);
            },
            &elapsed, &cpus);
        uint64_t writes = 0;
        for (const PerThread &q : per) writes += q.writes;
        if (bad) complain("rwlock lock/unlock failed");
        if (torn) complain("rwlock: a reader saw a half-done write: exclusion failed");
        if (d->a != writes || d->b != writes) complain("rwlock: lost writes: exclusion failed");
        return Sample(double(total) / elapsed / 1e6, cpus);
    };
}


// ---- Held-lock bookkeeping: the same pair with many other locks held ---------------------------

constexpr int others_per_kind = 256; // x 4 kinds = 1024 other locks held

// Other locks the measuring thread holds while it times a pair: 256 each of a mutex, a
// recursive lock, an rwlock held for reading and one held for writing (surelock's, or the
// pthread equivalents for the peer column). Created and taken in the constructor, released
// and freed in the destructor, on the measuring thread.
struct SurelockOthersHeld {
    std::vector<surelock_mutex *> m;
    std::vector<surelock_rlock *> r;
    std::vector<surelock_rwlock *> rd, wr;
    explicit SurelockOthersHeld(int per_kind)
    {
        for (int i = 0; i < per_kind; i++) {
            surelock_mutex *a = nullptr;
            surelock_rlock *b = nullptr;
            surelock_rwlock *c = nullptr, *d = nullptr;
            if (surelock_mutex_new(&a) != 0 || surelock_rlock_new(&b) != 0 ||
                surelock_rwlock_new(&c) != 0 || surelock_rwlock_new(&d) != 0 ||
                surelock_mutex_lock(a) != 0 || surelock_rlock_lock(b) != 0 ||
                surelock_rwlock_rdlock(c) != 0 || surelock_rwlock_wrlock(d) != 0)
                complain("cannot create and take the other held locks");
            m.push_back(a);
            r.push_back(b);
            rd.push_back(c);
            wr.push_back(d);
        }
    }
    ~SurelockOthersHeld()
    {
        for (size_t i = 0; i < m.size(); i++) {
            surelock_mutex_unlock(m[i]);
            surelock_rlock_unlock(r[i]);
            surelock_rwlock_unlock(rd[i]);
            surelock_rwlock_unlock(wr[i]);
            surelock_mutex_free(m[i]);
            surelock_rlock_free(r[i]);
            surelock_rwlock_free(rd[i]);
            surelock_rwlock_free(wr[i]);
        }
    }
};

struct PthreadOthersHeld {
    std::unique_ptr<pthread_mutex_t[]> m, r;
    std::unique_ptr<pthread_rwlock_t[]> rd, wr;
    int n;
    explicit PthreadOthersHeld(int per_kind)
        : m(new pthread_mutex_t[per_kind]), r(new pthread_mutex_t[per_kind]),
          rd(new pthread_rwlock_t[per_kind]), wr(new pthread_rwlock_t[per_kind]), n(per_kind)
    {
        pthread_mutexattr_t recursive;
        pthread_mutexattr_init(&recursive);
        pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
        for (int i = 0; i < n; i++) {
            pthread_mutex_init(&m[i], nullptr);
            pthread_mutex_init(&r[i], &recursive);
            pthread_rwlock_init(&rd[i], nullptr);
            pthread_rwlock_init(&wr[i], nullptr);
            pthread_mutex_lock(&m[i]);
            pthread_mutex_lock(&r[i]);
            pthread_rwlock_rdlock(&rd[i]);
            pthread_rwlock_wrlock(&wr[i]);
        }
        pthread_mutexattr_destroy(&recursive);
    }
    ~PthreadOthersHeld()
    {
        for (int i = 0; i < n; i++) {
            pthread_mutex_unlock(&m[i]);
            pthread_mutex_unlock(&r[i]);
            pthread_rwlock_unlock(&rd[i]);
            pthread_rwlock_unlock(&wr[i]);
            pthread_mutex_destroy(&m[i]);
            pthread_mutex_destroy(&r[i]);
            pthread_rwlock_destroy(&rd[i]);
            pthread_rwlock_destroy(&wr[i]);
        }
    }
};

enum class Pair { mutex, rlock, read, write };
const char *pair_name(Pair p)
{
    switch (p) {
    case Pair::mutex: return "mutex lock+unlock";
    case Pair::rlock: return "rlock lock+unlock";
    case Pair::read: return "rwlock read lock+unlock";
    case Pair::write: return "rwlock write lock+unlock";
    }
    return "?";
}

// The timed lock (created fresh) and the pair's operations, for surelock and for pthreads.
template <bool Surelock> struct PairLock;
template <> struct PairLock<true> {
    surelock_mutex *m = nullptr;
    surelock_rlock *r = nullptr;
    surelock_rwlock *l = nullptr;
    PairLock()
    {
        if (surelock_mutex_new(&m) != 0 || surelock_rlock_new(&r) != 0 ||
            surelock_rwlock_new(&l) != 0)
            complain("cannot create the timed locks");
    }
    ~PairLock()
    {
        surelock_mutex_free(m);
        surelock_rlock_free(r);
        surelock_rwlock_free(l);
    }
    int pair(Pair p)
    {
        switch (p) {
        case Pair::mutex: return surelock_mutex_lock(m) | surelock_mutex_unlock(m);
        case Pair::rlock: return surelock_rlock_lock(r) | surelock_rlock_unlock(r);
        case Pair::read: return surelock_rwlock_rdlock(l) | surelock_rwlock_unlock(l);
        case Pair::write: return surelock_rwlock_wrlock(l) | surelock_rwlock_unlock(l);
        }
        return -1;
    }
};
template <> struct PairLock<false> {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_t r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    int pair(Pair p)
    {
        switch (p) {
        case Pair::mutex: return pthread_mutex_lock(&m) | pthread_mutex_unlock(&m);
        case Pair::rlock: return pthread_mutex_lock(&r) | pthread_mutex_unlock(&r);
        case Pair::read: return pthread_rwlock_rdlock(&l) | pthread_rwlock_unlock(&l);
        case Pair::write: return pthread_rwlock_wrlock(&l) | pthread_rwlock_unlock(&l);
        }
        return -1;
    }
};

template <bool Surelock> Sampler pair_with_others_held(const Options &o, Pair p, int per_kind)
{
    return LoopSampler(
        LoopSampler::SelfTimed{},
        [p, per_kind](uint64_t n) {
            using Others = std::conditional_t<Surelock, SurelockOthersHeld, PthreadOthersHeld>;
            Others others(per_kind); // taken before the clock starts, released after it stops
            auto lock = std::make_unique<PairLock<Surelock>>();
            uint64_t bad = 0;
            auto t0 = Clock::now();
            switch (p) { // one loop per pair kind: no switch inside the timed loop
            case Pair::mutex:
                for (uint64_t i = 0; i < n; i++) bad += lock->pair(Pair::mutex) != 0;
                break;
            case Pair::rlock:
                for (uint64_t i = 0; i < n; i++) bad += lock->pair(Pair::rlock) != 0;
                break;
            case Pair::read:
                for (uint64_t i = 0; i < n; i++) bad += lock->pair(Pair::read) != 0;
                break;
            case Pair::write:
                for (uint64_t i = 0; i < n; i++) bad += lock->pair(Pair::write) != 0;
                break;
            }
            double seconds = seconds_between(t0, Clock::now());
            if (bad) complain("lock/unlock with other locks held failed");
            return seconds;
        },
        o.loop_seconds());
}

// ---- Groups -------------------------------------------------------------------------------------

enum GroupColumn { g_surelock, g_scoped, g_std_lock, g_ordered, group_columns };

// A group of n surelock mutexes, added in reverse creation order (the group sorts them).
struct SurelockGroup {
    std::vector<surelock_mutex *> mutexes;
    surelock_group *g = nullptr;
    explicit SurelockGroup(size_t n) : mutexes(n, nullptr)
    {
        for (auto &m : mutexes)
            if (surelock_mutex_new(&m) != 0) m = nullptr;
        if (surelock_group_new(&g) != 0) g = nullptr;
        for (size_t i = n; g && i-- > 0;)
            if (!mutexes[i] || surelock_group_add_mutex(g, mutexes[i]) != 0) {
                surelock_group_free(g);
                g = nullptr;
            }
    }
    ~SurelockGroup()
    {
        if (g) surelock_group_free(g);
        for (auto m : mutexes)
            if (m) surelock_mutex_free(m);
    }
    bool ok() const { return g != nullptr; }
};

template <size_t N> struct alignas(64) StdMutexes {
    std::array<std::mutex, N> m;
};

template <size_t N> struct alignas(64) PthreadMutexes {
    std::array<pthread_mutex_t, N> m;
    PthreadMutexes()
    {
        for (auto &x : m) pthread_mutex_init(&x, nullptr);
    }
    ~PthreadMutexes()
    {
        for (auto &x : m) pthread_mutex_destroy(&x);
    }
};

template <size_t N> Sampler group_surelock(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            SurelockGroup group(N);
            if (!group.ok()) {
                complain("cannot build a group");
                return;
            }
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                surelock_group *g = group.g;
                do_not_optimize(g);
                if (__builtin_expect(surelock_group_lock(g) != 0, 0)) bad++;
                if (__builtin_expect(surelock_group_unlock(g) != 0, 0)) bad++;
            }
            if (bad) complain("group lock/unlock failed");
        },
        o.loop_seconds());
}

template <size_t N, size_t... I>
void scoped_loop(StdMutexes<N> *s, uint64_t n, std::index_sequence<I...>)
{
    for (uint64_t i = 0; i < n; i++) {
        StdMutexes<N> *p = s;
        do_not_optimize(p);
        std::scoped_lock lock(p->m[I]...);
        clobber_memory();
    }
}

template <size_t N, size_t... I>
void std_lock_loop(StdMutexes<N> *s, uint64_t n, std::index_sequence<I...>)
{
    for (uint64_t i = 0; i < n; i++) {
        StdMutexes<N> *p = s;
        do_not_optimize(p);
        if constexpr (N == 1) p->m[0].lock();
        else std::lock(p->m[I]...);
        clobber_memory();
        (p->m[I].unlock(), ...);
    }
}

template <size_t N> Sampler group_scoped(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto s = std::make_unique<StdMutexes<N>>();
            scoped_loop(s.get(), n, std::make_index_sequence<N>());
        },
        o.loop_seconds());
}

template <size_t N> Sampler group_std_lock(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto s = std::make_unique<StdMutexes<N>>();
            std_lock_loop(s.get(), n, std::make_index_sequence<N>());
        },
        o.loop_seconds());
}

template <size_t N> Sampler group_ordered(const Options &o)
{
    return LoopSampler(
        [](uint64_t n) {
            auto s = std::make_unique<PthreadMutexes<N>>();
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                PthreadMutexes<N> *p = s.get();
                do_not_optimize(p);
                for (size_t k = 0; k < N; k++)
                    if (__builtin_expect(pthread_mutex_lock(&p->m[k]) != 0, 0)) bad++;
                clobber_memory();
                for (size_t k = N; k-- > 0;)
                    if (__builtin_expect(pthread_mutex_unlock(&p->m[k]) != 0, 0)) bad++;
            }
            if (bad) complain("pthread lock/unlock failed");
        },
        o.loop_seconds());
}

// Dining philosophers: philosopher t eats with forks t and t+1 (mod 5), both taken as one
// acquisition; each meal counts on both forks (checked: every fork's count is the meals of
// its two neighbours), then the philosopher thinks (local work).
constexpr int philosophers = 5;

struct alignas(64) Fork {
    uint64_t meals = 0;
};

struct Table5 {
    std::array<Fork, philosophers> forks;
    std::array<PerThread, philosophers> meals;
    bool check() const
    {
        for (int f = 0; f < philosophers; f++) {
            uint64_t expected = meals[f].ops + meals[(f + philosophers - 1) % philosophers].ops;
            if (forks[f].meals != expected) return false;
        }
        return true;
    }
};

inline void eat(Table5 *t, int p)
{
    t->forks[p].meals++;
    t->forks[(p + 1) % philosophers].meals++;
    t->meals[p].ops++;
}

// `diners` of the five philosophers eat (4: one seat stays empty); `thinking` is the local
// work between meals (0: pure contention, every meal right after the last).
struct Dinner {
    int diners = philosophers;
    int thinking = work_steps;
};

template <class Dine> Sample dine(double seconds, Dinner dinner, Dine &&meal)
{
    auto table = std::make_unique<Table5>();
    Table5 *tp = table.get();
    double elapsed = 0, cpus = 0;
    int thinking = dinner.thinking;
    uint64_t total = run_threads(
        dinner.diners, seconds,
        [tp, &meal, thinking](int p) {
            meal(tp, p);
            if (thinking > 0) {
                uint64_t x = local_work(uint64_t(p) + 1, thinking);
                do_not_optimize(x);
            }
        },
        &elapsed, &cpus);
    if (!table->check()) complain("dining philosophers: a fork's count is wrong: exclusion failed");
    return Sample(double(total) / elapsed / 1e6, cpus);
}

Sampler philosophers_surelock(const Options &o, Dinner dinner = {})
{
    double seconds = o.threaded_seconds();
    return [seconds, dinner]() -> Sample {
        std::array<surelock_mutex *, philosophers> forks{};
        std::array<surelock_group *, philosophers> groups{};
        bool ok = true;
        for (auto &f : forks) ok &= surelock_mutex_new(&f) == 0;
        for (int p = 0; ok && p < philosophers; p++) {
            ok &= surelock_group_new(&groups[p]) == 0;
            // Mixed insertion orders: odd philosophers add the right fork first.
            int first = p % 2 ? (p + 1) % philosophers : p;
            int second = p % 2 ? p : (p + 1) % philosophers;
            ok = ok && surelock_group_add_mutex(groups[p], forks[first]) == 0 &&
                 surelock_group_add_mutex(groups[p], forks[second]) == 0;
        }
        Sample s(0);
        if (!ok) {
            complain("cannot build the philosophers' groups");
        } else {
            std::atomic<uint64_t> bad{0};
            s = dine(seconds, dinner, [&groups, &bad](Table5 *t, int p) {
                if (__builtin_expect(surelock_group_lock(groups[p]) != 0, 0)) bad++;
                eat(t, p);
                if (__builtin_expect(surelock_group_unlock(groups[p]) != 0, 0)) bad++;
            });
            if (bad) complain("philosophers: group lock/unlock failed");
        }
        for (auto g : groups)
            if (g) surelock_group_free(g);
        for (auto f : forks)
            if (f) surelock_mutex_free(f);
        return s;
    };
}

Sampler philosophers_scoped(const Options &o, Dinner dinner = {})
{
    double seconds = o.threaded_seconds();
    return [seconds, dinner]() -> Sample {
        auto forks = std::make_unique<StdMutexes<philosophers>>();
        auto *m = &forks->m;
        return dine(seconds, dinner, [m](Table5 *t, int p) {
            std::scoped_lock lock((*m)[p], (*m)[(p + 1) % philosophers]);
            eat(t, p);
        });
    };
}

Sampler philosophers_std_lock(const Options &o, Dinner dinner = {})
{
    double seconds = o.threaded_seconds();
    return [seconds, dinner]() -> Sample {
        auto forks = std::make_unique<StdMutexes<philosophers>>();
        auto *m = &forks->m;
        return dine(seconds, dinner, [m](Table5 *t, int p) {
            std::mutex &a = (*m)[p], &b = (*m)[(p + 1) % philosophers];
            std::lock(a, b);
            eat(t, p);
            a.unlock();
            b.unlock();
        });
    };
}

Sampler philosophers_ordered(const Options &o, Dinner dinner = {})
{
    double seconds = o.threaded_seconds();
    return [seconds, dinner]() -> Sample {
        auto forks = std::make_unique<PthreadMutexes<philosophers>>();
        auto *m = &forks->m;
        std::atomic<uint64_t> bad{0};
        Sample s = dine(seconds, dinner, [m, &bad](Table5 *t, int p) {
            int lo = std::min(p, (p + 1) % philosophers), hi = std::max(p, (p + 1) % philosophers);
            if (pthread_mutex_lock(&(*m)[lo]) != 0 || pthread_mutex_lock(&(*m)[hi]) != 0) bad++;
            eat(t, p);
            if (pthread_mutex_unlock(&(*m)[hi]) != 0 || pthread_mutex_unlock(&(*m)[lo]) != 0) bad++;
        });
        if (bad) complain("philosophers: pthread lock/unlock failed");
        return s;
    };
}

} // namespace

int run_group(const Options &o)
{
    Table locks;
    locks.title = std::string("surelock bench group: mutex and rwlock (libsurelock ") +
                  surelock_version() + ") vs peers\nmachine: " + machine_summary() +
                  "\npthread = normal mutex / default pthread_rwlock; std = std::mutex / "
                  "std::shared_mutex. Contended: lock; shared counter++; unlock; local work.\n"
                  "read-mostly: each thread writes every 20th operation (95 % reads), short "
                  "critical sections, then local work";
    locks.columns = {"surelock", "pthread", "std"};

    Row &mu = locks.add_row("mutex uncontended lock+unlock", ns_per_op, {l_pthread, 1.0});
    Table::measure(mu,
                   {mutex_uncontended<SurelockMutex>(o), mutex_uncontended<PthreadNormal>(o),
                    mutex_uncontended<StdMutex>(o)},
                   o.runs);
    for (int threads : {2, 4}) {
        Row &row = locks.add_row("mutex contended, " + std::to_string(threads) + " threads",
                                 mops_per_s, {l_pthread, 1.0});
        row.threads = threads;
        Table::measure(row,
                       {mutex_contended<SurelockMutex>(o, threads),
                        mutex_contended<PthreadNormal>(o, threads),
                        mutex_contended<StdMutex>(o, threads)},
                       o.runs);
    }
    Row &ru = locks.add_row("rwlock uncontended read lock+unlock", ns_per_op);
    Table::measure(ru,
                   {read_uncontended<SurelockRwlock>(o), read_uncontended<PthreadRwlock>(o),
                    read_uncontended<StdSharedMutex>(o)},
                   o.runs);
    Row &rm = locks.add_row("rwlock read-mostly (95% reads), 4 threads", mops_per_s,
                            {l_pthread, 1.0});
    rm.threads = 4;
    Table::measure(rm,
                   {read_mostly<SurelockRwlock>(o, 4), read_mostly<PthreadRwlock>(o, 4),
                    read_mostly<StdSharedMutex>(o, 4)},
                   o.runs);
    Row &mix = locks.add_row("rwlock 50/50 reads and writes, 4 threads", mops_per_s,
                             {l_pthread, 1.0});
    mix.threads = 4;
    Table::measure(mix,
                   {read_mostly<SurelockRwlock>(o, 4, 2), read_mostly<PthreadRwlock>(o, 4, 2),
                    read_mostly<StdSharedMutex>(o, 4, 2)},
                   o.runs);
    locks.print(stdout, o);
    printf("\n");
    fflush(stdout);

    Table held;
    held.title = std::string("surelock bench group: held-lock bookkeeping (libsurelock ") +
                 surelock_version() + ")\nuncontended lock+unlock of one lock while the thread "
                 "holds 0 or 1024 other locks (256 each: mutex, rlock, rwlock read, rwlock "
                 "write; pthread: the same kinds)";
    held.columns = {"surelock", "pthread"};
    for (Pair p : {Pair::mutex, Pair::rlock, Pair::read, Pair::write}) {
        for (int per_kind : {0, others_per_kind}) {
            Row &row = held.add_row(std::string(pair_name(p)) + ", " +
                                        std::to_string(4 * per_kind) + " others held",
                                    ns_per_op);
            Table::measure(row,
                           {pair_with_others_held<true>(o, p, per_kind),
                            pair_with_others_held<false>(o, p, per_kind)},
                           o.runs);
        }
    }
    held.print(stdout, o);
    printf("\n");
    fflush(stdout);

    Table groups;
    groups.title = std::string("surelock bench group: lock-all groups (libsurelock ") +
                   surelock_version() + ") vs peers\n" +
                   "surelock group = surelock_group of N surelock_mutex; std::scoped_lock and "
                   "std::lock over N std::mutex;\npthread ordered = N pthread normal mutexes "
                   "locked in a fixed order by hand (the cost floor: one lock+unlock each).\n"
                   "Dining philosophers: 5 threads, 5 forks, each meal takes its two forks as "
                   "one acquisition, then local work";
    groups.columns = {"surelock group", "std::scoped_lock", "std::lock", "pthread ordered"};

    Row &g2 = groups.add_row("group of 2, uncontended lock+unlock", ns_per_op);
    Table::measure(g2, {group_surelock<2>(o), group_scoped<2>(o), group_std_lock<2>(o),
                        group_ordered<2>(o)},
                   o.runs);
    Row &g4 = groups.add_row("group of 4, uncontended lock+unlock", ns_per_op);
    Table::measure(g4, {group_surelock<4>(o), group_scoped<4>(o), group_std_lock<4>(o),
                        group_ordered<4>(o)},
                   o.runs);
    Row &g8 = groups.add_row("group of 8, uncontended lock+unlock", ns_per_op, {g_scoped, 0.6});
    Table::measure(g8, {group_surelock<8>(o), group_scoped<8>(o), group_std_lock<8>(o),
                        group_ordered<8>(o)},
                   o.runs);
    Row &dp = groups.add_row("dining philosophers, 5 threads", mops_per_s, {g_std_lock, 1.0});
    dp.threads = philosophers;
    Table::measure(dp,
                   {philosophers_surelock(o), philosophers_scoped(o), philosophers_std_lock(o),
                    philosophers_ordered(o)},
                   o.runs);
    for (int diners : {4, 5}) {
        Row &row = groups.add_row("dining philosophers, " + std::to_string(diners) +
                                      " threads, no thinking between meals",
                                  mops_per_s, {g_std_lock, 1.0});
        row.threads = diners;
        Dinner pure{diners, 0};
        Table::measure(row,
                       {philosophers_surelock(o, pure), philosophers_scoped(o, pure),
                        philosophers_std_lock(o, pure), philosophers_ordered(o, pure)},
                       o.runs);
    }
    groups.print(stdout, o);
    fflush(stdout);

    if (failures.load() != 0) {
        fprintf(stderr, "surelock bench group: %llu failure(s) (see above)\n",
                (unsigned long long)failures.load());
        return bench_failed;
    }
    return bench_ok;
}

} // namespace surelock::bench
