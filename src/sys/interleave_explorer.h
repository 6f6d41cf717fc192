// The interleaving explorer's shared state (test build only), split over three files by
// concern: interleave.cc is the scheduler and its depth-first search over schedules;
// interleave_futex.cc is what a scheduled thread's futex waits and wakes and a body's awaits
// become; interleave_process.cc models what a scenario thread owns as a stand-in for a
// process (memory it frees, file descriptors, mappings, file locks) and its death. All three
// work on the one Explorer below, under its one mutex. Nothing else includes this header.
#pragma once

#ifdef SURELOCK_TESTING

#include <pthread.h>
#include <setjmp.h>
#include <stddef.h>

#include "sys/interleave.h"
#include "sys/testing.h"

namespace surelock::sys::interleave {

constexpr int MAX_THREADS = SURELOCK_INTERLEAVE_MAX_THREADS;
constexpr int MAX_DECISIONS = 4096; // ceiling for a scenario's max_steps
constexpr int MAX_TRACE = 2 * MAX_DECISIONS;
constexpr int MAX_FREED = 256;
constexpr int MAX_OWNED = 8; // descriptors, mappings, allocations each, per thread
// Decision options: o < 8 "thread o runs", 8 + i "thread i's timed wait times out",
// 16 + i "thread i dies here" (a mortal thread: see interleave_process.cc).
constexpr int TIMEOUT_OPTION = 8;
constexpr int DEATH_OPTION = 16;

enum State : unsigned char { RUNNABLE, BLOCKED_FUTEX, BLOCKED_FLAG, BLOCKED_FILE_LOCK, DONE };

struct Decision {
    unsigned char chosen;
    unsigned char options;
    bool switch_costs; // the deciding thread could have continued: another choice preempts it
    unsigned short preemptions_before;
};

struct Step {
    int thread;
    const void *addr;
    const char *where;
    const char *what;
};

struct Freed {
    const char *p;
    size_t size;
    int step; // index in the trace
};

struct Mapping {
    void *addr;
    size_t size;
};

// What a scenario thread owns as a process would: released by its death, as the kernel
// releases a dead process's descriptors (with their file locks) and mappings.
struct Owned {
    int fds[MAX_OWNED];
    int n_fds;
    Mapping maps[MAX_OWNED];
    int n_maps;
    void *allocations[MAX_OWNED]; // made while mortal, not yet freed
    int n_allocations;
    bool mortal;       // the body allows its death at the steps from here on
    bool dying;        // chosen to die: it does at its next return from decide()
    jmp_buf *death;    // where thread_main resumes a dead thread
};

struct Explorer {
    pthread_mutex_t mu;
    pthread_cond_t cv[MAX_THREADS];
    pthread_cond_t controller;
    const surelock_testing_scenario *scenario;
    unsigned generation; // of the schedule running: threads of an abandoned one never resume
    int threads, started, done;
    int current; // who holds the baton; -1 = nobody
    bool violated;
    State state[MAX_THREADS];
    const void *wait_word[MAX_THREADS];
    unsigned wait_bits[MAX_THREADS];
    bool wait_timed[MAX_THREADS];
    unsigned long wait_order[MAX_THREADS];
    unsigned long sleeps;
    int wait_result[MAX_THREADS];
    const volatile int *await_flag[MAX_THREADS];
    int lock_fd[MAX_THREADS]; // BLOCKED_FILE_LOCK: the descriptor whose lock it waits for
    Owned owned[MAX_THREADS];
    int bound, max_steps, preemptions;
    Decision decisions[MAX_DECISIONS];
    int n_decisions;
    unsigned char prefix[MAX_DECISIONS];
    int prefix_len;
    Step trace[MAX_TRACE];
    int n_steps;
    Freed freed[MAX_FREED];
    int n_freed;
    long schedules;
    char report[65536];
    size_t report_len;
};

extern Explorer ex;
extern __thread int my_index; // scenario thread number, -1 for every other thread

const char *base_name(const char *path);
void record(int thread, const void *addr, const char *where, const char *what);
// With mu held, by the baton holder: ends the exploration with this reason; never returns.
[[noreturn]] void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// With mu held, at a scheduling point of thread `me`: chooses who runs next (see interleave.cc).
void decide(int me);
// With mu held: a step of the baton holder on addr (nullptr: a step on no memory).
void step_locked(const void *addr, const char *where, const char *what, bool reads_memory);

// interleave_process.cc: frees the memory scheduled threads freed (poisoned and kept out of
// reuse while the schedule ran), and, with mu held, ends a thread chosen to die.
void release_quarantine();
[[noreturn]] void die_locked(int me);

} // namespace surelock::sys::interleave

#endif // SURELOCK_TESTING
