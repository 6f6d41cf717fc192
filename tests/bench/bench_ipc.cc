// `surelock bench ipc`: the robust cross-process mutex against what a user would otherwise
// write: a robust, process-shared pthread mutex initialised in a MAP_SHARED file mapping
// (default type; EOWNERDEAD -> pthread_mutex_consistent), flock(2), fcntl OFD locks
// (F_OFD_SETLKW on the whole file) and a process-shared sem_t (initial value 1).
//
// Scenarios (issue 3, item 8):
//   uncontended lock+unlock    one thread                                  ns per pair
//   contended, 2 threads       each thread has its own handle / fd         Mops/s
//   contended, 2 processes     two forked children, each opens the lock    Mops/s
//   recovery after SIGKILL     a child holds the lock, a second child      us from kill() to
//                              blocks in lock; the parent SIGKILLs the     the waiter's return
//                              holder (the waiter has a CPU of its own,    (EOWNERDEAD / 0)
//                              see RecoveryCpus)
// Targets: uncontended <= 1.1x raw robust pthread; recovery <= 1.2x raw robust pthread.
//
// Contended rows: lock; counter++ (in shared memory, checked at the end); unlock; local work.
// flock and OFD locks belong to an open file description, so every thread and process opens
// its own; surelock handles are likewise one per thread/process, as separate processes have.
// The kernel releases flock and OFD locks when the dying holder's files are closed, so they
// "recover" too (with return 0: they cannot tell the waiter); a sem_t is never given back
// (n/a). Every child arms alarm() so a lock that never comes back cannot hang the run.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bench.h"
#include "surelock.h"

namespace surelock::bench {

namespace {

// Failures seen anywhere (a lock call failed, a child misbehaved); reported once at the end.
std::atomic<uint64_t> failures{0};

void report(const char *what, int rc)
{
    fprintf(stderr, "surelock bench ipc: %s: %s\n", what, rc ? strerror(rc) : "failed");
    failures++;
}

int errno_of(int r)
{
    return r == 0 ? 0 : errno;
}

constexpr size_t map_size = 4096;

// A file in the run's directory, sized and mapped shared (raw pthread mutex, sem_t).
void *map_file(const std::string &path)
{
    int fd = open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return nullptr;
    void *map = MAP_FAILED;
    if (ftruncate(fd, map_size) == 0)
        map = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return map == MAP_FAILED ? nullptr : map;
}

// ---- The contenders ---------------------------------------------------------------------------
//
// Each kind: create(path) once in the parent; open(Handle&) per thread or process (after
// fork, in the child); lock/unlock return 0 or an errno (lock may return EOWNERDEAD);
// repair() after EOWNERDEAD; close(Handle&).

struct SurelockIpc {
    static constexpr bool owner_dead_reported = true; // lock returns EOWNERDEAD
    std::string path;
    surelock_ipc *keep = nullptr; // the parent's own handle, open for the whole run
    struct Handle {
        surelock_ipc *m = nullptr;
    };

    bool create(const std::string &p)
    {
        path = p;
        int rc = surelock_ipc_open(path.c_str(), nullptr, &keep);
        if (rc != 0) fprintf(stderr, "surelock bench ipc: %s\n", surelock_errmsg());
        return rc == 0;
    }
    ~SurelockIpc()
    {
        if (keep) surelock_ipc_close(keep);
        if (!path.empty()) surelock_ipc_unlink(path.c_str());
    }
    bool open(Handle &h) { return surelock_ipc_open(path.c_str(), nullptr, &h.m) == 0; }
    void close(Handle &h)
    {
        if (h.m && surelock_ipc_close(h.m) != 0) report("surelock_ipc_close", EBUSY);
        h.m = nullptr;
    }
    int lock(Handle &h) { return surelock_ipc_lock(h.m); }
    int unlock(Handle &h) { return surelock_ipc_unlock(h.m); }
    int repair(Handle &h) { return surelock_ipc_consistent(h.m); }
};

struct RawRobust {
    static constexpr bool owner_dead_reported = true;
    std::string path;
    void *map = nullptr;
    pthread_mutex_t *mutex = nullptr;
    struct Handle {
        pthread_mutex_t *m = nullptr;
    };

    bool create(const std::string &p)
    {
        path = p;
        if ((map = map_file(path)) == nullptr) return false;
        mutex = static_cast<pthread_mutex_t *>(map);
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        int rc = pthread_mutex_init(mutex, &a); // in place, in the shared mapping
        pthread_mutexattr_destroy(&a);
        return rc == 0;
    }
    ~RawRobust()
    {
        if (map) munmap(map, map_size);
        if (!path.empty()) unlink(path.c_str());
    }
    // Threads share the parent's mapping, forked children inherit it: the same file pages.
    bool open(Handle &h)
    {
        h.m = mutex;
        return true;
    }
    void close(Handle &) {}
    int lock(Handle &h) { return pthread_mutex_lock(h.m); }
    int unlock(Handle &h) { return pthread_mutex_unlock(h.m); }
    int repair(Handle &h) { return pthread_mutex_consistent(h.m); }
};

struct FileLockBase {
    // Released by the kernel when the dying holder's files are closed; the waiter just gets
    // the lock, with no word that its holder died.
    static constexpr bool owner_dead_reported = false;
    std::string path;
    struct Handle {
        int fd = -1;
    };
    bool create(const std::string &p)
    {
        path = p;
        int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) return false;
        ::close(fd);
        return true;
    }
    ~FileLockBase()
    {
        if (!path.empty()) unlink(path.c_str());
    }
    bool open(Handle &h) { return (h.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC)) >= 0; }
    void close(Handle &h)
    {
        if (h.fd >= 0) ::close(h.fd);
        h.fd = -1;
    }
    int repair(Handle &) { return 0; }
};

struct Flock : FileLockBase {
    int lock(Handle &h)
    {
        int r;
        while ((r = flock(h.fd, LOCK_EX)) != 0 && errno == EINTR) {
        }
        return errno_of(r);
    }
    int unlock(Handle &h) { return errno_of(flock(h.fd, LOCK_UN)); }
};

struct OfdLock : FileLockBase {
    static int set(int fd, short type, int cmd)
    {
        struct flock fl{};
        fl.l_type = type;
        fl.l_whence = SEEK_SET; // l_start = l_len = 0: the whole file
        int r;
        while ((r = fcntl(fd, cmd, &fl)) != 0 && errno == EINTR) {
        }
        return errno_of(r);
    }
    int lock(Handle &h) { return set(h.fd, F_WRLCK, F_OFD_SETLKW); }
    int unlock(Handle &h) { return set(h.fd, F_UNLCK, F_OFD_SETLK); }
};

// Never recovers: a dead holder's sem_post never comes (no recovery row for it).
struct PosixSem {
    std::string path;
    void *map = nullptr;
    sem_t *sem = nullptr;
    struct Handle {
        sem_t *s = nullptr;
    };
    bool create(const std::string &p)
    {
        path = p;
        if ((map = map_file(path)) == nullptr) return false;
        sem = static_cast<sem_t *>(map);
        return sem_init(sem, 1, 1) == 0;
    }
    ~PosixSem()
    {
        if (sem) sem_destroy(sem);
        if (map) munmap(map, map_size);
        if (!path.empty()) unlink(path.c_str());
    }
    bool open(Handle &h)
    {
        h.s = sem;
        return true;
    }
    void close(Handle &) {}
    int lock(Handle &h)
    {
        int r;
        while ((r = sem_wait(h.s)) != 0 && errno == EINTR) {
        }
        return errno_of(r);
    }
    int unlock(Handle &h) { return errno_of(sem_post(h.s)); }
    int repair(Handle &) { return 0; }
};

enum Column { c_surelock, c_raw, c_flock, c_ofd, c_sem, columns };

// ---- Shared memory for the multi-process scenarios ------------------------------------------

template <class T> T *map_shared()
{
    void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : new (p) T();
}

template <class T> void unmap_shared(T *p)
{
    if (p == nullptr) return;
    p->~T();
    munmap(p, sizeof(T));
}

// Forks a child that runs body() (its return value is the exit status) under an alarm: a
// child stuck in a lock that never comes back is killed by SIGALRM, never hangs the run.
template <class Body> pid_t fork_child(unsigned alarm_seconds, Body body)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(alarm_seconds);
        _exit(body());
    }
    if (pid < 0) report("fork", errno);
    return pid;
}

// Says whether a child's wait status is a clean exit, complaining about any other.
bool exited_cleanly(int status, const char *what)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    if (WIFSIGNALED(status))
        fprintf(stderr, "surelock bench ipc: %s child killed by signal %d%s\n", what,
                WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (timed out)" : "");
    else
        fprintf(stderr, "surelock bench ipc: %s child exited with status %d\n", what,
                WEXITSTATUS(status));
    failures++;
    return false;
}

// Reaps a child; true if it exited with status 0.
bool reap(pid_t pid, const char *what)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            report("waitpid", errno);
            return false;
        }
    return exited_cleanly(status, what);
}

int64_t now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

// ---- Scenarios ----------------------------------------------------------------------------------

template <class L> Sampler uncontended(std::shared_ptr<L> lock, const Options &o)
{
    return LoopSampler(
        [lock](uint64_t n) {
            typename L::Handle h;
            if (!lock->open(h)) {
                report("open a handle", errno);
                return;
            }
            struct Pair {
                L *l;
                typename L::Handle *h;
            } pair{lock.get(), &h};
            uint64_t bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                Pair *p = &pair;
                do_not_optimize(p); // reloaded every iteration: nothing hoisted
                if (__builtin_expect(p->l->lock(*p->h) != 0, 0)) bad++;
                if (__builtin_expect(p->l->unlock(*p->h) != 0, 0)) bad++;
            }
            lock->close(h);
            if (bad) report("uncontended lock/unlock", 0);
        },
        o.loop_seconds());
}

constexpr int work_steps = 32; // local work between acquisitions, see local_work()

struct alignas(64) Protected {
    uint64_t counter = 0;
};

template <class L> Sampler contended_threads(std::shared_ptr<L> lock, const Options &o)
{
    double seconds = o.threaded_seconds();
    return [lock, seconds]() -> Sample {
        constexpr int threads = 2;
        typename L::Handle handles[threads];
        for (auto &h : handles)
            if (!lock->open(h)) {
                report("open a handle", errno);
                return 0;
            }
        auto data = std::make_unique<Protected>();
        Protected *d = data.get();
        L *l = lock.get();
        std::atomic<uint64_t> bad{0};
        double elapsed = 0, cpus = 0;
        uint64_t total = run_threads(
            threads, seconds,
            [l, d, &handles, &bad](int t) {
                if (__builtin_expect(l->lock(handles[t]) != 0, 0)) bad++;
                d->counter++;
                if (__builtin_expect(l->unlock(handles[t]) != 0, 0)) bad++;
                uint64_t x = local_work(uint64_t(t) + 1, work_steps);
                do_not_optimize(x);
            },
            &elapsed, &cpus);
        for (auto &h : handles) lock->close(h);
        if (bad) report("contended lock/unlock (threads)", 0);
        if (d->counter != total) {
            fprintf(stderr,
                    "surelock bench ipc: protected counter is %llu after %llu acquisitions by "
                    "2 threads: mutual exclusion failed\n",
                    (unsigned long long)d->counter, (unsigned long long)total);
            failures++;
        }
        return Sample(double(total) / elapsed / 1e6, cpus);
    };
}

struct ProcessRun {
    std::atomic<int> ready{0};
    std::atomic<int> go{0};
    alignas(64) std::atomic<int> stop{0};
    alignas(64) uint64_t counter = 0; // protected by the lock under test
    struct alignas(64) Child {
        uint64_t acquisitions = 0;
        double cpu_seconds = 0;
        int failed_calls = 0;
    } child[2];
};

template <class L> Sampler contended_processes(std::shared_ptr<L> lock, const Options &o)
{
    double seconds = o.threaded_seconds();
    return [lock, seconds]() -> Sample {
        ProcessRun *run = map_shared<ProcessRun>();
        if (run == nullptr) {
            report("mmap", errno);
            return 0;
        }
        L *l = lock.get();
        pid_t pids[2];
        for (int c = 0; c < 2; c++) {
            pids[c] = fork_child(unsigned(seconds) + 30, [l, run, c]() -> int {
                typename L::Handle h;
                if (!l->open(h)) return 2; // its own handle / fd, as a separate program has
                run->ready.fetch_add(1);
                while (!run->go.load(std::memory_order_acquire)) sched_yield();
                double cpu0 = process_cpu_seconds();
                uint64_t n = 0;
                int bad = 0;
                while (!run->stop.load(std::memory_order_relaxed)) {
                    if (__builtin_expect(l->lock(h) != 0, 0)) bad++;
                    run->counter++;
                    if (__builtin_expect(l->unlock(h) != 0, 0)) bad++;
                    uint64_t x = local_work(uint64_t(c) + 1, work_steps);
                    do_not_optimize(x);
                    n++;
                }
                run->child[c].cpu_seconds = process_cpu_seconds() - cpu0;
                run->child[c].acquisitions = n;
                run->child[c].failed_calls = bad;
                l->close(h);
                return bad ? 3 : 0;
            });
        }
        double elapsed = 1;
        bool ok = pids[0] > 0 && pids[1] > 0;
        bool reaped[2] = {false, false};
        if (ok) {
            while (run->ready.load() < 2) {
                // A child that failed to open never arrives: reap it now and carry on.
                bool gone = false;
                for (int c = 0; c < 2; c++) {
                    int st;
                    if (!reaped[c] && waitpid(pids[c], &st, WNOHANG) == pids[c]) {
                        reaped[c] = gone = true;
                        ok &= exited_cleanly(st, "contending");
                    }
                }
                if (gone) break;
                sched_yield();
            }
            auto t0 = Clock::now();
            run->go.store(1, std::memory_order_release);
            std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
            run->stop.store(1, std::memory_order_relaxed);
            elapsed = seconds_between(t0, Clock::now());
        } else {
            run->stop.store(1); // a fork failed: let the other child go at once
            run->go.store(1, std::memory_order_release);
        }
        for (int c = 0; c < 2; c++)
            if (pids[c] > 0 && !reaped[c]) ok &= reap(pids[c], "contending");
        uint64_t total = run->child[0].acquisitions + run->child[1].acquisitions;
        double cpus = (run->child[0].cpu_seconds + run->child[1].cpu_seconds) / elapsed;
        if (ok && run->counter != total) {
            fprintf(stderr,
                    "surelock bench ipc: protected counter is %llu after %llu acquisitions by "
                    "2 processes: mutual exclusion failed\n",
                    (unsigned long long)run->counter, (unsigned long long)total);
            failures++;
        }
        unmap_shared(run);
        return Sample(double(total) / elapsed / 1e6, cpus);
    };
}

// Where the recovery rounds run. The killer (this process) and the holder share one CPU; the
// waiter gets a second CPU of its own, kept awake by a SCHED_IDLE busy loop that yields to any
// other task at once. Without this, a round's latency depends mostly on scheduling: on a
// virtual machine, waking a waiter on an idle (halted) vCPU costs tens of microseconds
// (measured here: rounds fell into ~15, ~45-70 and ~130 us modes for every lock alike), and
// with everything on one CPU the waiter either preempts the dying holder or waits for it to
// finish exiting, depending on how much CPU each child used before. With its own awake CPU,
// the waiter runs as soon as the kernel releases the lock. One CPU only: nothing is pinned.
struct RecoveryCpus {
    cpu_set_t saved;
    bool pinned = false;
    int waiter_cpu = -1;
    pid_t spinner = -1;
    std::atomic<int> *stop = nullptr;

    RecoveryCpus()
    {
        int here = sched_getcpu();
        if (here < 0 || sched_getaffinity(0, sizeof saved, &saved) != 0) return;
        for (int c = 0; c < CPU_SETSIZE && waiter_cpu < 0; c++)
            if (c != here && CPU_ISSET(c, &saved)) waiter_cpu = c;
        if (waiter_cpu < 0) return;
        pin(here);
        pinned = true;
        stop = map_shared<std::atomic<int>>();
        if (stop == nullptr) return;
        std::atomic<int> *flag = stop;
        int cpu = waiter_cpu;
        spinner = fork_child(60, [flag, cpu]() -> int {
            pin(cpu);
            struct sched_param none{};
            sched_setscheduler(0, SCHED_IDLE, &none);
            while (!flag->load(std::memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            return 0;
        });
    }
    ~RecoveryCpus()
    {
        if (spinner > 0) {
            stop->store(1);
            reap(spinner, "CPU keep-awake");
        }
        if (stop) unmap_shared(stop);
        if (pinned) sched_setaffinity(0, sizeof saved, &saved);
    }
    // In the waiter child.
    void pin_waiter() const
    {
        if (waiter_cpu >= 0) pin(waiter_cpu);
    }
    static void pin(int cpu)
    {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        sched_setaffinity(0, sizeof one, &one);
    }
};

struct RecoveryRound {
    std::atomic<int> holder_holds{0};
    std::atomic<int> waiter_locking{0};
    std::atomic<int64_t> returned_at_ns{0};
    std::atomic<int> waiter_rc{-1};
};

// reap() reports any end but exit 0; for the holder, death by SIGKILL is the plan. This
// wrapper reaps it quietly and complains only about anything else.
bool reap_killed(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return false;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return true;
    fprintf(stderr,
            "surelock bench ipc: the holder child ended otherwise than by SIGKILL (%s %d)\n",
            WIFSIGNALED(status) ? "signal" : "exit status",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    failures++;
    return false;
}

// One round: a child takes the lock and sleeps; a second child blocks in lock; once it is
// asleep in the kernel, the parent notes the time and SIGKILLs the holder. Returns the
// microseconds from kill() to the waiter's return, or a negative value on failure.
template <class L> double recovery_round(L *l, RecoveryRound *r, const RecoveryCpus &cpus)
{
    new (r) RecoveryRound();
    pid_t holder = fork_child(30, [l, r]() -> int {
        typename L::Handle h;
        if (!l->open(h)) return 2;
        int rc = l->lock(h);
        if (rc != 0) return 3;
        r->holder_holds.store(1, std::memory_order_release);
        for (;;) pause(); // until SIGKILL (or the alarm)
    });
    if (holder < 0) return -1;
    auto give_up = Clock::now() + std::chrono::seconds(10);
    while (!r->holder_holds.load(std::memory_order_acquire)) {
        int st;
        if (Clock::now() > give_up || waitpid(holder, &st, WNOHANG) == holder) {
            kill(holder, SIGKILL);
            reap(holder, "holder");
            return -1;
        }
        sched_yield();
    }
    pid_t waiter = fork_child(30, [l, r, &cpus]() -> int {
        cpus.pin_waiter();
        typename L::Handle h;
        if (!l->open(h)) return 2;
        r->waiter_locking.store(1, std::memory_order_release);
        int rc = l->lock(h);
        r->returned_at_ns.store(now_ns(), std::memory_order_relaxed);
        r->waiter_rc.store(rc, std::memory_order_release);
        if (rc == EOWNERDEAD && l->repair(h) != 0) return 4;
        if ((rc == 0 || rc == EOWNERDEAD) && l->unlock(h) != 0) return 5;
        l->close(h);
        return 0;
    });
    bool blocked = false;
    if (waiter > 0) {
        while (!r->waiter_locking.load(std::memory_order_acquire) && Clock::now() < give_up)
            sched_yield();
        blocked = wait_until_blocked(waiter, 10);
    }
    int64_t killed_at = now_ns();
    kill(holder, SIGKILL);
    bool ok = reap_killed(holder);
    if (waiter > 0) ok &= reap(waiter, "waiter");
    else ok = false;
    if (!blocked) {
        fprintf(stderr, "surelock bench ipc: the waiter never blocked in lock\n");
        failures++;
        return -1;
    }
    int expected = L::owner_dead_reported ? EOWNERDEAD : 0;
    if (ok && r->waiter_rc.load() != expected) {
        fprintf(stderr,
                "surelock bench ipc: recovery: the waiter's lock returned %d, expected %d\n",
                r->waiter_rc.load(), expected);
        failures++;
        ok = false;
    }
    if (!ok) return -1;
    return double(r->returned_at_ns.load() - killed_at) / 1e3;
}

int recovery_rounds(const Options &o)
{
    return o.quick ? 3 : 9; // per sample; the cell is the median of the samples
}

template <class L> Sampler recovery(std::shared_ptr<L> lock, const Options &o)
{
    int rounds = recovery_rounds(o);
    return [lock, rounds]() -> Sample {
        RecoveryRound *r = map_shared<RecoveryRound>();
        if (r == nullptr) {
            report("mmap", errno);
            return 0;
        }
        std::vector<double> us;
        {
            RecoveryCpus cpus;
            for (int i = 0; i < rounds; i++) {
                double v = recovery_round(lock.get(), r, cpus);
                if (v < 0) break;
                us.push_back(v);
            }
        }
        unmap_shared(r);
        if (us.empty()) return 0;
        std::sort(us.begin(), us.end());
        size_t m = us.size() / 2;
        return Sample(us.size() % 2 ? us[m] : (us[m - 1] + us[m]) / 2);
    };
}

// A run directory from mkdtemp, removed (with the lock files in it) at the end.
struct TempDir {
    std::string path;
    TempDir()
    {
        const char *base = getenv("TMPDIR");
        std::string tmpl =
            std::string(base && *base ? base : "/tmp") + "/surelock-bench-ipc-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data()) != nullptr) path = buf.data();
    }
    ~TempDir()
    {
        if (!path.empty() && rmdir(path.c_str()) != 0)
            fprintf(stderr, "surelock bench ipc: cannot remove %s: %s\n", path.c_str(),
                    strerror(errno));
    }
};

} // namespace

int run_ipc(const Options &o)
{
    TempDir dir;
    if (dir.path.empty()) {
        fprintf(stderr, "surelock bench ipc: mkdtemp: %s\n", strerror(errno));
        return bench_failed;
    }
    int rc = bench_ok;
    {
        auto surelock = std::make_shared<SurelockIpc>();
        auto raw = std::make_shared<RawRobust>();
        auto flk = std::make_shared<Flock>();
        auto ofd = std::make_shared<OfdLock>();
        auto sem = std::make_shared<PosixSem>();
        if (!surelock->create(dir.path + "/surelock.lock") ||
            !raw->create(dir.path + "/pthread.lock") || !flk->create(dir.path + "/flock.lock") ||
            !ofd->create(dir.path + "/ofd.lock") || !sem->create(dir.path + "/sem.lock")) {
            fprintf(stderr, "surelock bench ipc: cannot create the lock files in %s: %s\n",
                    dir.path.c_str(), strerror(errno));
            return bench_failed;
        }

        Table table;
        table.title = std::string("surelock bench ipc: robust cross-process mutex (libsurelock ") +
                      surelock_version() + ") vs peers\nmachine: " + machine_summary() +
                      "\nraw robust pthread = PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST mutex "
                      "in a MAP_SHARED file mapping; OFD = fcntl F_OFD_SETLKW, whole file;\n"
                      "sem_t = process-shared, value 1. Contended: lock; shared counter++; "
                      "unlock; local work; one handle/fd per thread or process.\n"
                      "Recovery: SIGKILL of the holder -> the blocked waiter returns (median "
                      "of " +
                      std::to_string(recovery_rounds(o)) +
                      " rounds per run; the waiter on a CPU of its own, kept awake);\n"
                      "flock/OFD are released by the kernel (waiter gets 0, no owner-death "
                      "notice); a sem_t is never released (n/a)";
        table.columns.resize(columns);
        table.columns[c_surelock] = "surelock ipc";
        table.columns[c_raw] = "raw robust pthread";
        table.columns[c_flock] = "flock";
        table.columns[c_ofd] = "fcntl OFD";
        table.columns[c_sem] = "sem_t (pshared)";

        Row &un = table.add_row("uncontended lock+unlock", ns_per_op, {c_raw, 1.1});
        Table::measure(un,
                       {uncontended(surelock, o), uncontended(raw, o), uncontended(flk, o),
                        uncontended(ofd, o), uncontended(sem, o)},
                       o.runs);

        Row &th = table.add_row("contended, 2 threads", mops_per_s);
        th.threads = 2;
        Table::measure(th,
                       {contended_threads(surelock, o), contended_threads(raw, o),
                        contended_threads(flk, o), contended_threads(ofd, o),
                        contended_threads(sem, o)},
                       o.runs);

        Row &pr = table.add_row("contended, 2 processes", mops_per_s);
        pr.threads = 2;
        Table::measure(pr,
                       {contended_processes(surelock, o), contended_processes(raw, o),
                        contended_processes(flk, o), contended_processes(ofd, o),
                        contended_processes(sem, o)},
                       o.runs);

        Row &re = table.add_row("recovery: SIGKILL holder -> waiter returns", microseconds,
                                {c_raw, 1.2});
        re.cells[c_sem].applicable = false;
        Table::measure(re,
                       {recovery(surelock, o), recovery(raw, o), recovery(flk, o),
                        recovery(ofd, o), nullptr},
                       o.runs);

        table.print(stdout, o);
        fflush(stdout);
    } // lock files removed here, before the directory

    if (failures.load() != 0) {
        fprintf(stderr, "surelock bench ipc: %llu failure(s) (see above)\n",
                (unsigned long long)failures.load());
        rc = bench_failed;
    }
    return rc;
}

} // namespace surelock::bench
