// Peer benchmarks behind `surelock bench`: a small framework and the registry of suites.
//
// One suite per primitive (bench_<primitive>.cc). A suite measures surelock and its peers in a
// few scenarios, each cell being the median of Options::runs samples, and prints one Table of
// absolute numbers, ratios against every peer and the targets, marked met or missed.
//
// Adding a suite: write bench_<primitive>.cc with `int run_<primitive>(const Options &)`,
// declare it below, add a line to the suite list in bench.cc and the file to meson.build.
//
// The benchmarks call surelock through the shared libsurelock.so.1, as users do. They are
// test code: unlike the library they may use libstdc++, threads and exceptions.
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

namespace surelock::bench {

struct Options {
    int runs = 5;         // samples per cell; the cell shows their median
    bool quick = false;   // samples 10x shorter: a smoke run, numbers are rough
    bool verbose = false; // print every sample, not only the medians
    bool targets = false; // print the project's target column (met / missed) too
    std::string plot;     // write the scaling rows as an SVG plot to this path ("" = none)

    // How long one sample of a single-threaded loop / a multi-threaded run should last.
    double loop_seconds() const { return quick ? 0.005 : 0.05; }
    double threaded_seconds() const { return quick ? 0.02 : 0.2; }
};

// Exit codes of a suite: 0 = measured (whether or not targets were met; no benchmark fails on
// speed), 1 = something misbehaved (a lock call failed, a protected counter came out wrong).
enum : int { bench_ok = 0, bench_failed = 1 };

struct Suite {
    const char *name;    // the PRIMITIVE of `surelock bench PRIMITIVE`
    const char *summary; // one line for the help text
    int (*run)(const Options &);
};

// Every suite this build has, in the order `surelock bench` runs them.
std::span<const Suite> suites();
const Suite *find_suite(std::string_view name);

// Runs a suite the way every suite must run: in a process that has already started a thread.
// (glibc >= 2.35 replaces the atomic instructions of pthread mutexes with plain stores while a
// process has only ever had one thread, which no real user of a lock is; measuring peers in
// that state would compare surelock against a mutex that is not thread-safe yet.)
int run_suite(const Suite &suite, const Options &options);

// ---- Measuring -------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock; // CLOCK_MONOTONIC on Linux

inline double seconds_between(Clock::time_point a, Clock::time_point b)
{
    return std::chrono::duration<double>(b - a).count();
}

// Makes `value` look used and possibly modified to the optimiser, so a loop computing it is
// neither removed nor hoisted (Google Benchmark's DoNotOptimize).
template <class T> inline void do_not_optimize(T &value)
{
    if constexpr (std::is_integral_v<T> || std::is_pointer_v<T>)
        asm volatile("" : "+r"(value) : : "memory"); // stays in a register: no stack round trip
    else
        asm volatile("" : "+m"(value) : : "memory");
}

// CPU time the calling process has used so far, all its threads together, in seconds.
double process_cpu_seconds();

// Waits until thread or process `tid` sleeps in the kernel (state S or D in /proc/TID/stat),
// for at most timeout_seconds. Latency scenarios use it to know a waiter is really blocked
// before they release the lock it waits for. False on timeout, or when the task is gone.
bool wait_until_blocked(int tid, double timeout_seconds);

// Forces memory to be written and re-read: nothing is cached in registers across it.
inline void clobber_memory()
{
    asm volatile("" : : : "memory");
}

// A few dozen cycles of register-only work the optimiser cannot remove: the "non-critical"
// part of a contended loop, so threads do something between acquisitions, as real ones do.
inline uint64_t local_work(uint64_t x, int steps)
{
    for (int i = 0; i < steps; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        asm volatile("" : "+r"(x));
    }
    return x;
}

// One measurement of a cell: the value in the row's metric and, for threaded runs, how many
// CPUs the process used meanwhile (process CPU time / wall time; negative when not measured).
// Fewer CPUs than threads means they were waiting in the kernel, or other processes competed.
struct Sample {
    double value;
    double cpus = -1;
    Sample(double v, double c = -1) : value(v), cpus(c) {}
};
using Sampler = std::function<Sample()>;

// Times `body(n)`, which performs n operations, and returns nanoseconds per operation. The
// first call calibrates n so that one sample lasts about `seconds`; later calls reuse it, so
// every sample of a cell does the same work. The calibration runs double as warm-up.
class LoopSampler {
public:
    LoopSampler(std::function<void(uint64_t)> body, double seconds)
        : timed_body_([body = std::move(body)](uint64_t n) {
              auto t0 = Clock::now();
              body(n);
              return seconds_between(t0, Clock::now());
          }),
          seconds_(seconds)
    {
    }
    // For a body with untimed set-up and tear-down around its n operations: it times the
    // operations itself and returns their seconds.
    struct SelfTimed {};
    LoopSampler(SelfTimed, std::function<double(uint64_t)> timed_body, double seconds)
        : timed_body_(std::move(timed_body)), seconds_(seconds)
    {
    }
    Sample operator()();

private:
    std::function<double(uint64_t)> timed_body_;
    double seconds_;
    uint64_t n_ = 0;
};

// The start gate of a threaded run: every thread arrives and waits, the driver opens the gate
// once all are there, lets them run for a while, then raises `stop`.
struct StartGate {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    alignas(64) std::atomic<bool> stop{false}; // read by every thread every iteration

    void arrive_and_wait();
    // Waits for `threads` arrivals, opens the gate, sleeps `seconds`, raises stop. Returns the
    // seconds from opening to stop, and in *cpus the CPUs the process used meanwhile.
    double open_and_run(int threads, double seconds, double *cpus);
};

// Runs `threads` threads behind a start gate for about `seconds`; thread t calls
// `iteration(t)` until stopped. Returns the total number of calls and stores the elapsed
// seconds (gate opened -> stop raised) in *elapsed and the CPUs used meanwhile in *cpus.
template <class Iteration>
uint64_t run_threads(int threads, double seconds, Iteration iteration, double *elapsed,
                     double *cpus)
{
    StartGate gate;
    std::vector<uint64_t> counts(threads, 0); // written once per thread, at its end
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; t++) {
        pool.emplace_back([&gate, &counts, &iteration, t] {
            gate.arrive_and_wait();
            uint64_t n = 0;
            while (!gate.stop.load(std::memory_order_relaxed)) {
                iteration(t);
                n++;
            }
            counts[t] = n;
        });
    }
    *elapsed = gate.open_and_run(threads, seconds, cpus);
    for (std::thread &th : pool) th.join();
    uint64_t total = 0;
    for (uint64_t c : counts) total += c;
    return total;
}

// The contended row every exclusive lock shares: `threads` threads take one L (lock() and
// unlock() return 0 or an errno), bump a counter under it and do `work_steps` of local work
// between acquisitions, for about `seconds`. Returns Mops/s. The counter must come out exact
// (otherwise exclusion failed); every failure goes to `complain`, the benchmark's own report.
template <class L>
Sample exclusive_throughput(int threads, double seconds, int work_steps,
                            void (*complain)(const char *what))
{
    struct alignas(64) Protected {
        uint64_t counter = 0;
    };
    auto lock = std::make_unique<L>();
    auto data = std::make_unique<Protected>();
    if (!lock->ok()) {
        complain("cannot create a lock");
        return 0;
    }
    L *p = lock.get();
    Protected *d = data.get();
    std::atomic<uint64_t> bad{0};
    double elapsed = 0, cpus = 0;
    uint64_t total = run_threads(
        threads, seconds,
        [p, d, &bad, work_steps](int t) {
            if (__builtin_expect(p->lock() != 0, 0)) bad++;
            d->counter++;
            if (__builtin_expect(p->unlock() != 0, 0)) bad++;
            uint64_t x = local_work(uint64_t(t) + 1, work_steps);
            do_not_optimize(x);
        },
        &elapsed, &cpus);
    if (bad) complain("contended lock/unlock failed");
    if (d->counter != total) complain("protected counter is wrong: mutual exclusion failed");
    return Sample(double(total) / elapsed / 1e6, cpus);
}

// ---- Reporting -------------------------------------------------------------------------------

struct Metric {
    const char *unit;   // "ns", "Mops/s", "us"
    bool lower_is_better;
};
inline constexpr Metric ns_per_op{"ns", true};
inline constexpr Metric mops_per_s{"Mops/s", false};
inline constexpr Metric microseconds{"us", true};

// The target for a row: ratio = subject / column `peer` (in the row's metric) must be
// <= bound when lower is better, >= bound when higher is better.
struct Target {
    int peer = -1; // column index; -1 = no target for this row
    double bound = 1.0;
};

struct Cell {
    bool applicable = true; // false: "n/a" (e.g. a non-recursive mutex cannot nest)
    std::vector<double> samples;
    std::vector<double> cpus; // per sample, threaded runs only
    double median() const;
    double median_cpus() const; // negative when not measured
    double spread() const; // (max - min) / median; 0 with fewer than 2 samples
};

struct Row {
    std::string scenario;
    Metric metric;
    Target target;
    std::vector<Cell> cells; // one per column
    int threads = 1;         // > 1: a contended row, checked for parallelism when printed
};

struct Table {
    std::string title;
    std::vector<std::string> columns; // columns[0] is the subject (surelock)
    std::vector<Row> rows;

    // Adds a row with one cell per column; mark inapplicable cells afterwards.
    Row &add_row(std::string scenario, Metric metric, Target target = {});

    // Runs every applicable cell's sampler `runs` times, interleaving the columns (run 1 of
    // every column, then run 2, ...) so drift (frequency, noisy neighbours) hits all alike.
    // samplers[i] may be empty for an inapplicable column.
    static void measure(Row &row, const std::vector<Sampler> &samplers, int runs);

    // Prints the table: medians, each peer's ratio, and the target marked met or missed.
    void print(FILE *out, const Options &options) const;
    int targets_missed() const;
};

// Before measuring: waits up to max_seconds for the other processes to leave the CPUs (at
// most ~0.3 CPU busy outside this process over half a second), then prints one line saying
// whether the machine settled, and how busy it was if not.
void wait_for_quiet_machine(FILE *out, double max_seconds);

// The scaling rows (threads 1..16, one per primitive) as an SVG line plot at `path`.
// False (with errno set) when the file cannot be written.
struct ScalingSeries {
    std::string name;          // "mutex", "rwlock 95% reads", ...
    std::string peer;          // "pthread normal", ...
    std::vector<int> threads;  // x
    std::vector<double> subject, peer_values; // Mops/s medians
};
bool write_scaling_svg(const std::string &path, const std::vector<ScalingSeries> &series);

// One line describing the machine (CPU model, online CPUs, load average) for the report
// header, with a warning when other processes are busy: contended numbers need idle CPUs.
std::string machine_summary();

// ---- Suites ----------------------------------------------------------------------------------

int run_rlock(const Options &options);
int run_ipc(const Options &options);
int run_group(const Options &options);
int run_sem(const Options &options);
int run_deadlock(const Options &options); // bench_deadlock.cc (issue 14)
int run_scaling(const Options &options);

} // namespace surelock::bench
