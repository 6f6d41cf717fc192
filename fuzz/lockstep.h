// Lockstep worker threads for the state-machine fuzzers (fuzz_rlock.cc, fuzz_group.cc,
// fuzz_sem.cc).
//
// The fuzzer's own thread (the driver) owns the model; it hands one job at a time to one of
// a few persistent worker threads and waits for it to finish, so every call the model
// predicts runs on a known thread, in a known order, with nothing else running meanwhile
// (the driver's wait and the workers' mailboxes go through one mutex, which is also what
// orders the model's memory for TSan). A job that does not finish within kHangSeconds is a
// hang: the driver calls the harness's hang handler, which prints its trace and aborts.
//
// Workers persist across inputs (thread creation is slow) and are replaced only by
// exit_worker(), which lets the thread return while it holds whatever it holds, so the
// library's thread-exit destructor runs ("owner died").
//
// LeakSanitizer (clang 14 on glibc 2.36) does not scan other threads' static TLS, where the
// library keeps the only pointer to a thread's record; each worker therefore copies its
// record pointer into its mailbox after every job (dropped when the thread exits, so a record
// that outlives its thread is still reported).
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "sys/testing.h" // surelock_testing_never_reuse_thread_records
#include "sys/thread.h"  // current_record, only to keep LeakSanitizer from a false report

namespace lockstep {

constexpr int kMaxWorkers = 4;
constexpr int kHangSeconds = 10;

// The index of the worker the calling thread is (-1: not a worker, e.g. the driver).
inline thread_local int current_worker = -1;

class Pool {
public:
    // `on_hang(what)` must not return (it prints the harness's diagnostics and aborts).
    Pool(int workers, void (*on_hang)(const char *what)) : n_(workers), on_hang_(on_hang)
    {
        for (int w = 0; w < n_; w++) start(w);
    }
    Pool(const Pool &) = delete;
    Pool &operator=(const Pool &) = delete;

    int size() const { return n_; }
    int incarnation(int w) const { return slots_[w].incarnation; }

    // Runs job on worker w and waits for it to finish.
    void run(int w, std::function<void()> job, const char *what)
    {
        post(w, std::move(job));
        wait(w, what);
    }

    // Starts job on worker w without waiting (a call that blocks until other workers act);
    // wait(w) collects it. Only one job per worker at a time.
    void post(int w, std::function<void()> job)
    {
        Slot &S = slots_[w];
        {
            std::lock_guard<std::mutex> lk(mu_);
            S.job = std::move(job);
            S.exit = false;
            S.done = false;
            S.has_job = true;
        }
        S.cv.notify_one();
    }

    // Has worker w's posted job finished?
    bool done(int w)
    {
        std::lock_guard<std::mutex> lk(mu_);
        return slots_[w].done;
    }

    // Waits for worker w's posted job; a hang after kHangSeconds.
    void wait(int w, const char *what)
    {
        Slot &S = slots_[w];
        std::unique_lock<std::mutex> lk(mu_);
        if (!driver_cv_.wait_for(lk, std::chrono::seconds(kHangSeconds), [&] { return S.done; })) {
            lk.unlock();
            char buf[256];
            snprintf(buf, sizeof buf, "worker T%d did not finish %s within %d s", w, what,
                     kHangSeconds);
            on_hang_(buf);
        }
        S.job = nullptr;
    }

    // Waits until one of the workers in ws (each with a posted job) has finished and returns
    // it, the first in ws order if several have; a hang after kHangSeconds. The others keep
    // their jobs running, to be collected later by wait() or wait_any().
    int wait_any(const std::vector<int> &ws, const char *what)
    {
        std::unique_lock<std::mutex> lk(mu_);
        int found = -1;
        auto pred = [&] {
            for (int w : ws)
                if (slots_[w].done) {
                    found = w;
                    return true;
                }
            return false;
        };
        if (!driver_cv_.wait_for(lk, std::chrono::seconds(kHangSeconds), pred)) {
            lk.unlock();
            char list[64] = "";
            size_t len = 0;
            for (int w : ws)
                if (len < sizeof list)
                    len += snprintf(list + len, sizeof list - len, "%sT%d", len ? " " : "", w);
            char buf[320];
            snprintf(buf, sizeof buf, "none of workers %s finished %s within %d s", list, what,
                     kHangSeconds);
            on_hang_(buf);
        }
        slots_[found].job = nullptr;
        return found;
    }

    // Worker w's thread returns (its thread-exit destructors run) and a fresh thread takes its
    // place with the same index.
    void exit_worker(int w)
    {
        Slot &S = slots_[w];
        {
            std::lock_guard<std::mutex> lk(mu_);
            S.exit = true;
            S.has_job = true;
        }
        S.cv.notify_one();
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += kHangSeconds;
        int rc = pthread_timedjoin_np(S.thread, nullptr, &deadline);
        if (rc != 0) {
            char buf[256];
            snprintf(buf, sizeof buf, "worker T%d did not exit within %d s (%s)", w,
                     kHangSeconds, strerror(rc));
            on_hang_(buf);
        }
        start(w);
    }

private:
    struct Slot {
        Pool *pool = nullptr;
        int index = 0;
        int incarnation = 0;
        pthread_t thread{};
        std::condition_variable cv;
        bool has_job = false; // guarded by mu_
        bool exit = false;    // guarded by mu_
        bool done = false;    // guarded by mu_
        std::function<void()> job;
        void *record_root = nullptr; // see the comment at the top
    };

    static void *main(void *arg)
    {
        Slot *S = static_cast<Slot *>(arg);
        Pool *P = S->pool;
        current_worker = S->index;
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lk(P->mu_);
                S->cv.wait(lk, [S] { return S->has_job; });
                S->has_job = false;
                if (S->exit) {
                    S->record_root = nullptr;
                    return nullptr; // the library's thread-exit destructor runs now
                }
                job = S->job;
            }
            job();
            // Freed before reporting done: when an input ends, libFuzzer counts mallocs
            // against frees and runs LeakSanitizer, which must not catch this copy in flight.
            job = nullptr;
            {
                std::lock_guard<std::mutex> lk(P->mu_);
                S->record_root = surelock::sys::current_record;
                S->done = true;
            }
            P->driver_cv_.notify_all();
        }
    }

    void start(int w)
    {
        Slot &S = slots_[w];
        S.pool = this;
        S.index = w;
        S.incarnation++;
        S.has_job = S.exit = S.done = false;
        // The library recycles a finished thread's record; the models expect every new
        // thread to allocate its own (its first lock can then fail with ENOMEM), whichever
        // worker ends meanwhile.
        surelock_testing_never_reuse_thread_records();
        // The models predict plain waits (a timed wait that expires, a blocked wait the
        // driver ends by making the holders exit), not the deadlock detector's EDEADLK for a
        // wait that closes a cycle of workers: it is off here. The detector has its own
        // checks (test_deadlock's reference wait-for graph, the spin model in tests/model).
        surelock_set_deadlock_detection(0);
        int rc = pthread_create(&S.thread, nullptr, main, &S);
        if (rc != 0) {
            char buf[128];
            snprintf(buf, sizeof buf, "pthread_create: %s", strerror(rc));
            on_hang_(buf);
        }
    }

    int n_;
    void (*on_hang_)(const char *);
    std::mutex mu_;
    std::condition_variable driver_cv_;
    Slot slots_[kMaxWorkers];
};

// The calling thread's errmsg, copied (the library's buffer changes with the next call).
struct ErrmsgCopy {
    bool null = false;
    char text[256] = "";
    void take(const char *p)
    {
        if (p == nullptr) {
            null = true;
            text[0] = '\0';
        } else {
            null = false;
            snprintf(text, sizeof text, "%s", p);
        }
    }
};

// The operations of the current input, kept for the report when the model and the library
// disagree, and echoed as they happen when tracing (SURELOCK_FUZZ_TRACE).
inline void log_line(std::vector<std::string> &log, bool trace, const char *harness,
                     const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    log.emplace_back(buf);
    if (trace) fprintf(stderr, "%s: %s\n", harness, buf);
}

inline void print_log(const std::vector<std::string> &log)
{
    fprintf(stderr, "---- operations of this input (oldest first) ----\n");
    for (const std::string &line : log) fprintf(stderr, "  %s\n", line.c_str());
}

} // namespace lockstep
