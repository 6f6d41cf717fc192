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
    {"deadlock", "the cost of deadlock detection: contended and uncontended, on vs off",
     run_deadlock},
    {"scaling", "every primitive vs its peer at 1, 2, 4, 8 and 16 threads (--plot FILE.svg)",
     run_scaling},
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
    header.push_back("spread");
    if (options.targets) header.push_back("target (ratio = surelock / peer)");
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
        // The row's stability: the widest (max-min)/median of its cells.
        double row_spread = 0;
        for (const Cell &cell : row.cells) row_spread = std::max(row_spread, cell.spread());
        char spread_text[32];
        snprintf(spread_text, sizeof spread_text, "%.0f%%", row_spread * 100);
        line.push_back(options.runs > 1 ? spread_text : "-");
        if (!options.targets) {
            // no target column
        } else if (has_target(row)) {
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
            bool right = l > 0 && c > 0 && (c + 1 < grid[l].size() || !options.targets);
            fprintf(out, right ? " %*s |" : " %-*s |", int(width[c]), grid[l][c].c_str());
        }
        fputc('\n', out);
        if (l == 0) {
            fputc('|', out);
            for (size_t c = 0; c < width.size(); c++) {
                bool right = c > 0 && (c + 1 < width.size() || !options.targets);
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
            "(0.80x) = surelock / that peer, so below 1 is better for ns, above 1 for Mops/s;\n"
            "spread = the widest (max-min)/median of the row's cells.\n",
            options.runs, options.runs == 1 ? "" : "s",
            options.quick ? " (--quick: short runs, rough numbers)" : "");
    if (options.runs > 1)
        fprintf(out, "Worst spread (max-min)/median of a cell: %.1f%% (%s).\n", worst * 100,
                worst_where.c_str());
    if (options.targets) fprintf(out, "Targets: %d met, %d missed.\n", met, missed);

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

namespace {

// CPU jiffies since boot from /proc/stat's first line: busy (all but idle and iowait) and all.
bool read_cpu_jiffies(unsigned long long *busy, unsigned long long *total)
{
    FILE *f = fopen("/proc/stat", "re");
    if (f == nullptr) return false;
    unsigned long long v[8] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 4) return false;
    *total = 0;
    for (unsigned long long x : v) *total += x;
    *busy = *total - v[3] - v[4];
    return true;
}

} // namespace

void wait_for_quiet_machine(FILE *out, double max_seconds)
{
    constexpr double window = 0.5, quiet_cpus = 0.3;
    long hz = sysconf(_SC_CLK_TCK);
    auto start = Clock::now();
    double busy_cpus = -1;
    for (;;) {
        unsigned long long b0, t0, b1, t1;
        if (hz <= 0 || !read_cpu_jiffies(&b0, &t0)) break;
        auto w0 = Clock::now();
        std::this_thread::sleep_for(std::chrono::duration<double>(window));
        if (!read_cpu_jiffies(&b1, &t1)) break;
        busy_cpus = double(b1 - b0) / double(hz) / seconds_between(w0, Clock::now());
        double waited = seconds_between(start, Clock::now());
        if (busy_cpus <= quiet_cpus) {
            fprintf(out, "machine settled after %.1f s: other processes kept %.2f CPUs busy.\n",
                    waited, busy_cpus);
            return;
        }
        if (waited >= max_seconds) break;
    }
    if (busy_cpus < 0)
        fprintf(out, "machine load unknown (no /proc/stat): numbers may be disturbed.\n");
    else
        fprintf(out,
                "machine did NOT settle within %.1f s: other processes kept %.2f of %ld CPUs "
                "busy; the rows below were measured under that load (contended rows most of "
                "all).\n",
                max_seconds, busy_cpus, sysconf(_SC_NPROCESSORS_ONLN));
}

bool write_scaling_svg(const std::string &path, const std::vector<ScalingSeries> &series)
{
    FILE *f = fopen(path.c_str(), "we");
    if (f == nullptr) return false;
    constexpr int W = 860, H = 520, left = 70, right = 250, top = 40, bottom = 60;
    const int pw = W - left - right, ph = H - top - bottom;
    double ymax = 0;
    int tmax = 1;
    for (const ScalingSeries &s : series) {
        for (double v : s.subject) ymax = std::max(ymax, v);
        for (double v : s.peer_values) ymax = std::max(ymax, v);
        for (int t : s.threads) tmax = std::max(tmax, t);
    }
    if (!(ymax > 0)) ymax = 1;
    double decade = std::pow(10.0, std::floor(std::log10(ymax)));
    double ystep = ymax / decade > 5 ? 2 * decade : ymax / decade > 2 ? decade : decade / 2;
    ymax = std::ceil(ymax / ystep) * ystep;
    double xmax = std::log2(double(tmax));
    if (xmax <= 0) xmax = 1;
    auto X = [&](int t) { return left + pw * std::log2(double(t)) / xmax; };
    auto Y = [&](double v) { return top + ph * (1 - v / ymax); };
    static const char *colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                    "#8c564b", "#e377c2", "#17becf"};
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"24\" font-size=\"15\">surelock bench scaling: throughput "
            "by thread count (solid: surelock, dashed: its peer)</text>\n",
            W, H, left);
    for (double v = 0; v <= ymax + ystep / 2; v += ystep) {
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                left, Y(v), left + pw, Y(v), left - 6, Y(v) + 4, v);
    }
    for (int t = 1; t <= tmax; t *= 2)
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                X(t), top, X(t), top + ph, X(t), top + ph + 18, t);
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">threads (log scale; %ld CPUs "
            "online)</text>\n"
            "<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">Mops/s"
            "</text>\n"
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
            "stroke=\"black\"/>\n",
            left + pw / 2, H - 16, sysconf(_SC_NPROCESSORS_ONLN), top + ph / 2, left, top, pw,
            ph);
    for (size_t i = 0; i < series.size(); i++) {
        const ScalingSeries &s = series[i];
        const char *colour = colours[i % (sizeof colours / sizeof *colours)];
        for (int which = 0; which < 2; which++) {
            const std::vector<double> &v = which == 0 ? s.subject : s.peer_values;
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                    colour, which ? " stroke-dasharray=\"6,4\"" : "");
            for (size_t k = 0; k < v.size() && k < s.threads.size(); k++)
                if (std::isfinite(v[k])) fprintf(f, "%.1f,%.1f ", X(s.threads[k]), Y(v[k]));
            fprintf(f, "\"/>\n");
        }
        int ly = top + 14 + int(i) * 36;
        fprintf(f,
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                "stroke-width=\"2\"/><text x=\"%d\" y=\"%d\">%s</text>\n"
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                "stroke-width=\"2\" stroke-dasharray=\"6,4\"/><text x=\"%d\" y=\"%d\">%s"
                "</text>\n",
                W - right + 12, ly, W - right + 40, ly, colour, W - right + 46, ly + 4,
                s.name.c_str(), W - right + 12, ly + 16, W - right + 40, ly + 16, colour,
                W - right + 46, ly + 20, s.peer.c_str());
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
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
