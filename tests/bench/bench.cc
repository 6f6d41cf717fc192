// The benchmark framework: sampling, medians, the threaded start gate, table printing, and
// the registry of suites.
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <thread>

namespace surelock::bench {

// ---- Registry --------------------------------------------------------------------------------

namespace {

// Every suite of this build, in the order `surelock bench` runs them.
constexpr Suite all_suites[] = {
    {"rlock", "reentrant lock vs pthread recursive/normal mutex and std::recursive_mutex",
     run_rlock},
    {"ipc", "robust cross-process mutex vs raw robust pthread mutex, flock, OFD locks, sem_t",
     run_ipc},
    {"group", "mutex, rwlock and lock groups vs pthread, std::scoped_lock and std::lock",
     run_group},
    {"sem", "async FIFO mutex and semaphore vs pthread mutex, a FIFO ticket lock and sem_t",
     run_sem},
};

} // namespace

std::span<const Suite> suites()
{
    return all_suites;
}

const Suite *find_suite(std::string_view name)
{
    for (const Suite &s : all_suites)
        if (name == s.name) return &s;
    return nullptr;
}

int run_suite(const Suite &suite, const Options &options)
{
    // Once a process has created a thread, glibc treats it as multi-threaded for good.
    std::thread([] {}).join();
    return suite.run(options);
}

// ---- Measuring -------------------------------------------------------------------------------

Sample LoopSampler::operator()()
{
    if (n_ == 0) {
        // Calibrate: grow n until a run lasts long enough to time reliably, then scale it to
        // the requested sample length.
        uint64_t n = 1000;
        for (;;) {
            double s = timed_body_(n);
            if (s >= seconds_ / 5 || n >= (uint64_t(1) << 40)) {
                double scaled = double(n) * seconds_ / std::max(s, 1e-9);
                n_ = std::max<uint64_t>(uint64_t(scaled), 1000);
                break;
            }
            n *= s < seconds_ / 100 ? 10 : 2;
        }
    }
    double s = timed_body_(n_);
    return Sample(s * 1e9 / double(n_));
}

void StartGate::arrive_and_wait()
{
    ready.fetch_add(1, std::memory_order_acq_rel);
    // Yield rather than spin: with more threads than CPUs, spinning waiters would delay the
    // threads that have not arrived yet.
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
}

double process_cpu_seconds()
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

bool wait_until_blocked(int tid, double timeout_seconds)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", tid);
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(timeout_seconds));
    do {
        // "TID (comm) STATE ...": comm may hold spaces and parentheses, the state follows the
        // last ')'.
        char buf[512];
        FILE *f = fopen(path, "re");
        if (f == nullptr) return false;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = '\0';
        const char *close = strrchr(buf, ')');
        if (close != nullptr && close[1] == ' ' && (close[2] == 'S' || close[2] == 'D'))
            return true;
        if (close != nullptr && close[1] == ' ' && (close[2] == 'Z' || close[2] == 'X'))
            return false;
        std::this_thread::yield();
    } while (Clock::now() < deadline);
    return false;
}

double StartGate::open_and_run(int threads, double seconds, double *cpus)
{
    while (ready.load(std::memory_order_acquire) < threads) std::this_thread::yield();
    double cpu0 = process_cpu_seconds();
    auto t0 = Clock::now();
    go.store(true, std::memory_order_release);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop.store(true, std::memory_order_relaxed);
    double elapsed = seconds_between(t0, Clock::now());
    *cpus = (process_cpu_seconds() - cpu0) / elapsed;
    return elapsed;
}

// ---- Reporting -------------------------------------------------------------------------------

double Cell::median() const
{
    if (samples.empty()) return NAN;
    std::vector<double> v = samples;
    std::sort(v.begin(), v.end());
    size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

double Cell::median_cpus() const
{
    if (cpus.empty()) return -1;
    std::vector<double> v = cpus;
    std::sort(v.begin(), v.end());
    size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

double Cell::spread() const
{
    if (samples.size() < 2) return 0;
    auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
    return (*hi - *lo) / median();
}

Row &Table::add_row(std::string scenario, Metric metric, Target target)
{
    Row row{std::move(scenario), metric, target, std::vector<Cell>(columns.size())};
    rows.push_back(std::move(row));
    return rows.back();
}

void Table::measure(Row &row, const std::vector<Sampler> &samplers, int runs)
{
    for (int r = 0; r < runs; r++)
        for (size_t c = 0; c < row.cells.size() && c < samplers.size(); c++)
            if (row.cells[c].applicable && samplers[c]) {
                Sample s = samplers[c]();
                row.cells[c].samples.push_back(s.value);
                if (s.cpus >= 0) row.cells[c].cpus.push_back(s.cpus);
            }
}

namespace {

std::string format_value(double v, const Metric &m)
{
    char buf[64];
    int decimals = v < 10 ? 2 : v < 100 ? 1 : 0;
    snprintf(buf, sizeof buf, "%.*f %s", decimals, v, m.unit);
    return buf;
}

std::string format_ratio(double r)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.2fx", r);
    return buf;
}

bool target_met(const Row &row, double ratio)
{
    return row.metric.lower_is_better ? ratio <= row.target.bound : ratio >= row.target.bound;
}

bool has_target(const Row &row)
{
    return row.target.peer > 0 && size_t(row.target.peer) < row.cells.size() &&
           row.cells[row.target.peer].applicable && row.cells[0].applicable;
}

double ratio_of(const Row &row, size_t peer)
{
    return row.cells[0].median() / row.cells[peer].median();
}

} // namespace

int Table::targets_missed() const
{
    int missed = 0;
    for (const Row &row : rows)
        if (has_target(row) && !target_met(row, ratio_of(row, row.target.peer))) missed++;
    return missed;
}

void Table::print(FILE *out, const Options &options) const
{
    // Build every cell as text first, then pad columns to their widest entry.
    std::vector<std::vector<std::string>> grid;
    std::vector<std::string> header{"scenario"};
    for (const std::string &c : columns) header.push_back(c);
    header.push_back("target (ratio = surelock / peer)");
    grid.push_back(header);

    int met = 0, missed = 0;
    for (const Row &row : rows) {
        std::vector<std::string> line{row.scenario};
        for (size_t c = 0; c < row.cells.size(); c++) {
            const Cell &cell = row.cells[c];
            if (!cell.applicable || cell.samples.empty()) {
                line.push_back("n/a");
                continue;
            }
            std::string text = format_value(cell.median(), row.metric);
            if (c > 0 && row.cells[0].applicable && !row.cells[0].samples.empty())
                text += " (" + format_ratio(ratio_of(row, c)) + ")";
            line.push_back(text);
        }
        if (has_target(row)) {
            double r = ratio_of(row, row.target.peer);
            bool ok = target_met(row, r);
            (ok ? met : missed)++;
            char buf[160];
            snprintf(buf, sizeof buf, "%s %.2fx %s: %s (%.2fx)",
                     row.metric.lower_is_better ? "<=" : ">=", row.target.bound,
                     columns[row.target.peer].c_str(), ok ? "met" : "MISSED", r);
            line.push_back(buf);
        } else {
            line.push_back("-");
        }
        grid.push_back(line);
    }

    std::vector<size_t> width(header.size(), 0);
    for (const auto &line : grid)
        for (size_t c = 0; c < line.size(); c++) width[c] = std::max(width[c], line[c].size());

    fprintf(out, "%s\n\n", title.c_str());
    for (size_t l = 0; l < grid.size(); l++) {
        fputc('|', out);
        for (size_t c = 0; c < grid[l].size(); c++) {
            // Numbers right-aligned, text left-aligned.
            bool right = l > 0 && c > 0 && c + 1 < grid[l].size();
            fprintf(out, right ? " %*s |" : " %-*s |", int(width[c]), grid[l][c].c_str());
        }
        fputc('\n', out);
        if (l == 0) {
            fputc('|', out);
            for (size_t c = 0; c < width.size(); c++) {
                bool right = c > 0 && c + 1 < width.size();
                fprintf(out, "%s%s|", std::string(width[c] + 1, '-').c_str(), right ? ":" : "-");
            }
            fputc('\n', out);
        }
    }

    // Stability: the worst spread of any cell.
    double worst = 0;
    std::string worst_where = "-";
    for (const Row &row : rows)
        for (size_t c = 0; c < row.cells.size(); c++)
            if (row.cells[c].spread() > worst) {
                worst = row.cells[c].spread();
                worst_where = row.scenario + ", " + columns[c];
            }
    fprintf(out,
            "\nEach cell: median of %d run%s%s. ns: lower is better, Mops/s: higher is better;\n"
            "(0.80x) = surelock / that peer, so below 1 is better for ns, above 1 for Mops/s.\n",
            options.runs, options.runs == 1 ? "" : "s",
            options.quick ? " (--quick: short runs, rough numbers)" : "");
    if (options.runs > 1)
        fprintf(out, "Worst spread (max-min)/median of a cell: %.1f%% (%s).\n", worst * 100,
                worst_where.c_str());
    fprintf(out, "Targets: %d met, %d missed.\n", met, missed);

    // Threaded rows: how many CPUs each contender kept busy. A lock whose waiters spin shows
    // one CPU per thread; one whose waiters sleep shows fewer. Fewer than expected for every
    // column means other processes were using the CPUs.
    bool any_cpus = false;
    for (const Row &row : rows)
        for (const Cell &cell : row.cells) any_cpus |= !cell.cpus.empty();
    if (any_cpus) {
        fprintf(out, "CPUs kept busy (median; process CPU time / wall time):\n");
        for (const Row &row : rows) {
            bool first = true;
            double most = 0;
            for (size_t c = 0; c < row.cells.size(); c++) {
                double cpus = row.cells[c].median_cpus();
                if (cpus < 0) continue;
                fprintf(out, "%s%s %.2f", first ? ("  " + row.scenario + ": ").c_str() : ", ",
                        columns[c].c_str(), cpus);
                first = false;
                most = std::max(most, cpus);
            }
            if (first) continue;
            fputc('\n', out);
            // Waiters that sleep still leave one CPU busy more than one; if no contender got
            // past ~1 CPU, its threads hardly ever ran at the same time.
            long online = sysconf(_SC_NPROCESSORS_ONLN);
            if (row.threads > 1 && online > 1 && most < 1.2)
                fprintf(out,
                        "    ^ the threads hardly ran in parallel (other processes held the "
                        "CPUs): this row measured no real contention\n");
        }
    }

    if (options.verbose) {
        fprintf(out, "\nSamples:\n");
        for (const Row &row : rows)
            for (size_t c = 0; c < row.cells.size(); c++) {
                if (row.cells[c].samples.empty()) continue;
                fprintf(out, "  %s, %s:", row.scenario.c_str(), columns[c].c_str());
                const Cell &cell = row.cells[c];
                for (size_t i = 0; i < cell.samples.size(); i++) {
                    fprintf(out, " %s", format_value(cell.samples[i], row.metric).c_str());
                    if (i < cell.cpus.size()) fprintf(out, " (%.2f CPUs)", cell.cpus[i]);
                }
                fputc('\n', out);
            }
    }
}

std::string machine_summary()
{
    std::string model = "unknown CPU";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
        if (line.rfind("model name", 0) == 0) {
            size_t colon = line.find(':');
            if (colon != std::string::npos) model = line.substr(colon + 2);
            break;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    std::string text = model + ", " + std::to_string(cpus) + " CPU" + (cpus == 1 ? "" : "s") +
                       " online";
    double load[1];
    if (getloadavg(load, 1) == 1) {
        char buf[160];
        snprintf(buf, sizeof buf, ", load average %.2f%s", load[0],
                 load[0] >= 0.5 ? " (other processes are busy: contended numbers will be noisy)"
                                : "");
        text += buf;
    }
    return text;
}

} // namespace surelock::bench
