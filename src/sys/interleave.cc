// The deterministic scheduler behind interleaving exploration (sys/testing.h describes what a
// scenario is and what counts as a violation). Test build only: without SURELOCK_TESTING this
// file is empty and SURELOCK_STEP expands to nothing, so libsurelock.so is unchanged.
//
// Scenario threads are real pthreads, but exactly one holds the baton at a time; it runs
// until its next scheduling point (a SURELOCK_STEP, a futex wait or wake, an await), where it
// records the step, lets decide() choose who goes next, and parks until the baton comes back.
// All scheduler state is under one mutex, which also orders the threads' memory accesses.
// Exploration is stateless depth-first search over decide()'s choices: every schedule is run
// from scratch, replaying a prefix of choices and taking the first option after it; the next
// prefix comes from the last decision that still has an untried option within the preemption
// bound (as CHESS: a switch away from a thread that could have continued costs one).
//
// This file is the scheduler and the search only; what a scheduled thread's futex calls
// become is in interleave_futex.cc, and the model of a thread as a process (its descriptors,
// mappings, file locks, freed memory and death) in interleave_process.cc. They share the
// state in interleave_explorer.h.

#ifdef SURELOCK_TESTING

#include "sys/interleave_explorer.h"
#include "sys/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

namespace surelock::sys::interleave {

Explorer ex;
__thread int my_index = -1;

constexpr int DEFAULT_MAX_STEPS = 2000;
constexpr int STUCK_SECONDS = 60; // one schedule blocked outside the scheduler this long fails
pthread_once_t ex_once = PTHREAD_ONCE_INIT;
pthread_key_t exit_key; // its destructor ends a scenario thread after surelock's exit handlers
__thread unsigned my_generation;

void thread_exit_step(void *);

void init_explorer()
{
    pthread_key_create(&exit_key, thread_exit_step);
    pthread_mutex_init(&ex.mu, nullptr);
    for (auto &cv : ex.cv) pthread_cond_init(&cv, nullptr);
    pthread_cond_init(&ex.controller, nullptr);
}

const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char *fmt, ...)
{
    if (ex.report_len >= sizeof ex.report - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ex.report + ex.report_len, sizeof ex.report - ex.report_len, fmt, ap);
    va_end(ap);
    if (n > 0) ex.report_len += (size_t)n;
    if (ex.report_len > sizeof ex.report - 1) ex.report_len = sizeof ex.report - 1;
}

void record(int thread, const void *addr, const char *where, const char *what)
{
    if (ex.n_steps < MAX_TRACE) ex.trace[ex.n_steps++] = Step{thread, addr, where, what};
}

// With mu held: writes the violation and the schedule that led to it into the report.
void write_violation(const char *reason)
{
    ex.violated = true;
    ex.report_len = 0;
    say("interleave: scenario \"%s\": VIOLATION after %ld good schedule(s): %s\n",
        ex.scenario->name, ex.schedules, reason);
    int last = ex.n_decisions;
    while (last > 0 && ex.decisions[last - 1].chosen == 0) last--;
    say("  replay: SURELOCK_INTERLEAVE_REPLAY='%s:", ex.scenario->name);
    for (int k = 0; k < last; k++) say("%c", '0' + ex.decisions[k].chosen);
    say("' (preemption bound %d, %d used)\n  schedule (thread, step):\n", ex.bound,
        ex.preemptions);
    for (int i = 0; i < ex.n_steps; i++) {
        const Step &s = ex.trace[i];
        bool switched = i > 0 && ex.trace[i - 1].thread != s.thread;
        say("  %4d %sT%d %-28s %s", i, switched ? "> " : "  ", s.thread + 1, base_name(s.where),
            s.what);
        if (s.addr != nullptr) say(" @ %p", s.addr);
        say("\n");
    }
    if (ex.n_steps == MAX_TRACE) say("  (trace cut at %d steps)\n", MAX_TRACE);
    pthread_cond_broadcast(&ex.controller);
}

// With mu held, by the baton holder: the schedule violates the scenario. The thread stays
// parked for the life of the process (its generation never runs again).
[[noreturn]] void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void violation(const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (!ex.violated) write_violation(reason);
    for (;;) pthread_cond_wait(&ex.cv[my_index], &ex.mu);
}

bool can_run(int i)
{
    return ex.state[i] == RUNNABLE || (ex.state[i] == BLOCKED_FLAG && *ex.await_flag[i] != 0);
}

void wait_for_baton(int me)
{
    unsigned generation = my_generation;
    while (!(ex.current == me && ex.generation == generation && !ex.violated))
        pthread_cond_wait(&ex.cv[me], &ex.mu);
}

// With mu held, at a scheduling point of thread `me` (-1: the explorer starting a schedule):
// chooses who performs the next step and hands it the baton; a live `me` then waits for its
// own turn. Options, in order: `me` if it can continue (the choice that costs nothing), every
// other thread that can run, every timed futex wait that could time out now, then the death of
// every mortal thread that is runnable or waits for a file lock (interleave_process.cc).
void decide(int me)
{
    int options[3 * MAX_THREADS];
    int n = 0;
    bool me_runnable = me >= 0 && ex.state[me] == RUNNABLE;
    if (me_runnable) options[n++] = me;
    for (int i = 0; i < ex.threads; i++)
        if (i != me && can_run(i)) options[n++] = i;
    for (int i = 0; i < ex.threads; i++)
        if (ex.state[i] == BLOCKED_FUTEX && ex.wait_timed[i]) options[n++] = TIMEOUT_OPTION + i;
    if (n == 0) { // (a deadlock that only a death could end is a deadlock all the same)
        if (ex.done == ex.threads) {
            ex.current = -1;
            pthread_cond_broadcast(&ex.controller);
            return;
        }
        char who[512];
        size_t len = 0;
        who[0] = '\0';
        for (int i = 0; i < ex.threads && len < sizeof who; i++)
            if (ex.state[i] == BLOCKED_FILE_LOCK)
                len += (size_t)snprintf(who + len, sizeof who - len,
                                        " T%d waits for the file lock of fd %d;", i + 1,
                                        ex.lock_fd[i]);
            else if (ex.state[i] != DONE)
                len += (size_t)snprintf(who + len, sizeof who - len, " T%d %s %p;", i + 1,
                                        ex.state[i] == BLOCKED_FUTEX ? "sleeps on futex"
                                                                     : "awaits flag",
                                        ex.state[i] == BLOCKED_FUTEX
                                            ? ex.wait_word[i]
                                            : (const void *)ex.await_flag[i]);
        violation("every live thread is blocked (lost wake-up or deadlock):%s", who);
    }
    for (int i = 0; i < ex.threads; i++)
        if (ex.owned[i].mortal && (ex.state[i] == RUNNABLE || ex.state[i] == BLOCKED_FILE_LOCK))
            options[n++] = DEATH_OPTION + i;
    if (ex.n_decisions >= ex.max_steps)
        violation("schedule longer than %d steps (livelock, or raise max_steps)", ex.max_steps);
    int k = ex.n_decisions++;
    int chosen = k < ex.prefix_len ? ex.prefix[k] : 0;
    if (me < 0 && chosen >= n) chosen = 0; // the explorer itself cannot park in violation()
    if (chosen >= n)
        violation("schedule diverged at decision %d (%d options, replay says %d): the scenario "
                  "is not deterministic",
                  k, n, chosen);
    ex.decisions[k] = Decision{(unsigned char)chosen, (unsigned char)n, me_runnable,
                               (unsigned short)ex.preemptions};
    if (chosen > 0 && me_runnable) ex.preemptions++;
    int next = options[chosen] % TIMEOUT_OPTION;
    if (options[chosen] >= DEATH_OPTION) {
        ex.owned[next].dying = true;
        record(next, nullptr, "(death)", "dies here");
    } else if (options[chosen] >= TIMEOUT_OPTION) {
        ex.wait_result[next] = ETIMEDOUT;
        record(next, ex.wait_word[next], "(timeout)", "futex_wait times out");
    }
    ex.state[next] = RUNNABLE;
    ex.current = next;
    if (next != me) {
        pthread_cond_broadcast(&ex.cv[next]);
        if (me < 0 || ex.state[me] == DONE) return;
        wait_for_baton(me);
    }
    if (ex.owned[me].dying) die_locked(me);
}

// With mu held: a step of the baton holder on addr. The choice of who goes first comes
// before the step; the freed-memory check after it, when this thread is about to touch addr.
void step_locked(const void *addr, const char *where, const char *what, bool reads_memory)
{
    decide(my_index);
    record(my_index, addr, where, what);
    if (reads_memory && addr != nullptr) {
        const char *a = static_cast<const char *>(addr);
        for (int i = 0; i < ex.n_freed; i++) {
            const Freed &f = ex.freed[i];
            if (a >= f.p && a < f.p + f.size) {
                const Step &s = ex.trace[f.step];
                violation("T%d touches %p at %s (%s), inside the %zu bytes at %p that T%d freed at "
                          "step %d (%s)",
                          my_index + 1, addr, base_name(where), what, f.size, (const void *)f.p,
                          s.thread + 1, f.step, base_name(s.where));
            }
        }
    }
}

// With mu held: thread `me` is finished; whoever is next runs. What the thread frees after
// this (its own thread record, at the latest) is freed for real.
void finish(int me)
{
    record(me, nullptr, "(end)", "thread ends");
    ex.state[me] = DONE;
    ex.done++;
    decide(me);
    my_index = -1;
}

// Key destructor. glibc runs key destructors in rounds while any value is set: until
// surelock's own thread-exit handler has run (it releases what the thread still holds, marked
// "owner died", with scheduled steps), this re-arms itself for the next round.
void thread_exit_step(void *)
{
    if (my_index < 0) return;
    if (surelock::sys::current_record != nullptr) {
        pthread_setspecific(exit_key, &ex);
        return;
    }
    pthread_mutex_lock(&ex.mu);
    finish(my_index);
    pthread_mutex_unlock(&ex.mu);
}

void *thread_main(void *arg)
{
    int me = (int)(intptr_t)arg;
    pthread_mutex_lock(&ex.mu);
    my_index = me;
    my_generation = ex.generation;
    ex.started++;
    pthread_cond_broadcast(&ex.controller);
    jmp_buf death; // a thread that dies (die_locked) resumes here, its resources released
    ex.owned[me].death = &death;
    wait_for_baton(me);
    const surelock_testing_scenario *s = ex.scenario;
    pthread_mutex_unlock(&ex.mu);

    if (setjmp(death) == 0) s->body[me](s->ctx);

    pthread_mutex_lock(&ex.mu);
    ex.owned[me].mortal = false;
    decide(me); // the thread's exit is a step: others may run before its exit handlers
    record(me, nullptr, "(body returns)", "thread exits");
    if (surelock::sys::current_record != nullptr) {
        // The thread's exit handlers (owner death) are part of the schedule too.
        pthread_setspecific(exit_key, &ex);
    } else {
        finish(me);
    }
    pthread_mutex_unlock(&ex.mu);
    return nullptr;
}

// With mu held, by the explorer: waits for the schedule's end (or a violation), bounded.
bool wait_for_schedule()
{
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += STUCK_SECONDS;
    while (!ex.violated && !(ex.done == ex.threads && ex.current == -1))
        if (pthread_cond_timedwait(&ex.controller, &ex.mu, &limit) == ETIMEDOUT) {
            write_violation("a schedule made no progress for 60 s: a thread blocks outside the "
                            "scheduler (a real system call?)");
            return false;
        }
    return !ex.violated;
}

// Runs the scenario once along ex.prefix. False after a violation.
bool run_once()
{
    const surelock_testing_scenario *s = ex.scenario;
    pthread_mutex_lock(&ex.mu);
    ex.generation++;
    ex.started = ex.done = 0;
    ex.current = -1;
    ex.n_decisions = ex.n_steps = 0;
    ex.preemptions = 0;
    ex.sleeps = 0;
    for (int i = 0; i < ex.threads; i++) {
        ex.state[i] = RUNNABLE;
        ex.owned[i] = Owned{};
    }
    pthread_mutex_unlock(&ex.mu);

    if (s->setup) s->setup(s->ctx);
    pthread_t t[MAX_THREADS];
    for (int i = 0; i < ex.threads; i++) {
        if (pthread_create(&t[i], nullptr, thread_main, (void *)(intptr_t)i) != 0) {
            pthread_mutex_lock(&ex.mu);
            write_violation("pthread_create failed (not a violation of the scenario; rerun)");
            pthread_mutex_unlock(&ex.mu);
            return false;
        }
    }
    pthread_mutex_lock(&ex.mu);
    while (ex.started < ex.threads) pthread_cond_wait(&ex.controller, &ex.mu);
    decide(-1);
    bool ok = wait_for_schedule();
    pthread_mutex_unlock(&ex.mu);
    if (!ok) {
        // The violating schedule's threads never run again: parked ones stay parked, and
        // finished ones are not waited for.
        for (int i = 0; i < ex.threads; i++) pthread_detach(t[i]);
        release_quarantine();
        return false;
    }
    for (int i = 0; i < ex.threads; i++) pthread_join(t[i], nullptr);
    const char *wrong = s->check ? s->check(s->ctx) : nullptr;
    release_quarantine();
    if (wrong != nullptr) {
        pthread_mutex_lock(&ex.mu);
        write_violation(wrong);
        pthread_mutex_unlock(&ex.mu);
        return false;
    }
    return true;
}

// The next prefix: the deepest decision with an untried option within the preemption bound.
bool backtrack()
{
    for (int k = ex.n_decisions - 1; k >= 0; k--) {
        const Decision &d = ex.decisions[k];
        if (d.chosen + 1 < d.options && d.preemptions_before + (d.switch_costs ? 1 : 0) <= ex.bound) {
            for (int j = 0; j < k; j++) ex.prefix[j] = ex.decisions[j].chosen;
            ex.prefix[k] = (unsigned char)(d.chosen + 1);
            ex.prefix_len = k + 1;
            return true;
        }
    }
    return false;
}

// SURELOCK_INTERLEAVE_REPLAY="<scenario>:<choices>": the choices for this scenario, if named.
bool replay_choices(const char *name)
{
    const char *env = getenv("SURELOCK_INTERLEAVE_REPLAY");
    size_t len = strlen(name);
    if (env == nullptr || strncmp(env, name, len) != 0 || env[len] != ':') return false;
    ex.prefix_len = 0;
    for (const char *c = env + len + 1; *c >= '0' && *c <= '9' && ex.prefix_len < MAX_DECISIONS;
         c++)
        ex.prefix[ex.prefix_len++] = (unsigned char)(*c - '0');
    return true;
}

} // namespace surelock::sys::interleave

using namespace surelock::sys::interleave;

extern "C" {

void surelock_testing_step(const void *addr, const char *where, const char *what)
{
    if (my_index < 0) return;
    pthread_mutex_lock(&ex.mu);
    step_locked(addr, where, what, true);
    pthread_mutex_unlock(&ex.mu);
}

void surelock_testing_violation(const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (my_index < 0) { // not a scenario thread: nothing to park, no schedule to show
        fprintf(stderr, "interleave: violation outside a scenario thread: %s\n", reason);
        abort();
    }
    pthread_mutex_lock(&ex.mu);
    violation("T%d: %s", my_index + 1, reason);
}

long surelock_testing_explore(const surelock_testing_scenario *s)
{
    pthread_once(&ex_once, init_explorer);
    ex.scenario = s;
    ex.report_len = 0;
    ex.report[0] = '\0';
    ex.violated = false;
    ex.schedules = 0;
    if (s->threads < 1 || s->threads > MAX_THREADS) {
        say("interleave: scenario \"%s\": %d threads (1..%d)\n", s->name, s->threads, MAX_THREADS);
        return -1;
    }
    ex.threads = s->threads;
    ex.bound = s->preemption_bound;
    const char *deeper = getenv("SURELOCK_INTERLEAVE_PREEMPTIONS");
    if (deeper != nullptr && atoi(deeper) > ex.bound) ex.bound = atoi(deeper);
    ex.max_steps = s->max_steps > 0 && s->max_steps < MAX_DECISIONS ? s->max_steps
                                                                    : DEFAULT_MAX_STEPS;
    ex.prefix_len = 0;
    bool replaying = replay_choices(s->name);
    do {
        if (!run_once()) return -1;
        ex.schedules++;
    } while (!replaying && backtrack());
    say("interleave: scenario \"%s\": %ld schedule(s) with at most %d preemption(s), no "
        "violation\n",
        s->name, ex.schedules, ex.bound);
    return ex.schedules;
}

const char *surelock_testing_explore_report(void)
{
    return ex.report;
}

} // extern "C"

#endif // SURELOCK_TESTING
