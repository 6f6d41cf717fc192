/*
 * bounded.h — small helpers shared by the CMocka tests (test_mutex.c, test_rwlock.c,
 * test_cond.c, test_group.c, test_rlock.c, test_sem.c, test_ipc_*.c, test_internal.c and
 * test_ipc_internal.c): return-code and errmsg assertions, a CLOCK_MONOTONIC clock, flags, a
 * start gate, helper threads joined with a bound, a per-test watchdog, forked children waited
 * for with a bound, and pipes read with a bound. Every wait here ends: a broken library fails a test, it never hangs it.
 *
 * Rules for the tests that use them:
 *  - CMocka assertions run on the test's own thread only (they longjmp). Helper threads and
 *    children record what they saw; the test asserts after joining / reaping them.
 *  - State shared with helper threads is static, so a thread left stuck by a failed test can
 *    never scribble on a later test's stack.
 *  - Nothing measures speed: a timed wait is checked from below (it lasted at least its
 *    timeout), with a generous ceiling that only catches "never returns".
 *
 * Each test file defines _GNU_SOURCE before its first include.
 */
#ifndef SURELOCK_TESTS_BOUNDED_H
#define SURELOCK_TESTS_BOUNDED_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include <surelock.h>

/* Bound on any wait for another thread or process: far beyond what a working library needs,
 * even under sanitizers on a loaded 2-core machine; short enough to fail, not hang, CI. */
#define WAIT_LIMIT_MS 20000
/* Bound on one whole test (its own thread's blocking calls included): the watchdog then names
 * the test and ends the run with a TAP "Bail out!". A test binary may set a tighter bound with
 * -DWATCHDOG_MS=... (tests/meson.build passes it to both the test and its bounded.c). */
#ifndef WATCHDOG_MS
#define WATCHDOG_MS 90000
#endif
/* How long to wait for a thread to be seen asleep inside a blocking lock call. */
#define ASLEEP_LIMIT_MS 5000
/* Ceiling for "a timed wait returned at all" (never a speed check); a test binary may set a
 * tighter one with -DTIMED_WAIT_CEILING_NS=... (like WATCHDOG_MS). */
#ifndef TIMED_WAIT_CEILING_NS
#define TIMED_WAIT_CEILING_NS (10ull * 1000000000ull)
#endif

#define MS (1000000ull) /* nanoseconds in a millisecond */

/* ---- clock and small utilities ------------------------------------------------------------- */

uint64_t now_ns(void); /* CLOCK_MONOTONIC */
void sleep_ms(unsigned ms);
void sleep_us(unsigned us);
pid_t current_tid(void);
const char *errname(int rc);

/* ---- assertions (test thread only) ---------------------------------------------------------- */

/* Asserts a return code, printing both codes' names and the thread's errmsg on mismatch. */
#define EXPECT_RC(call, want) expect_rc_at((call), (want), #call, #want, __LINE__)
void expect_rc_at(int got, int want, const char *call, const char *want_name, int line);

/* Asserts a return code a helper thread recorded, printing the errmsg it saved with it. */
#define EXPECT_SAVED_RC(got, want, msg)                                                        \
    expect_saved_rc_at((got), (want), #got, #want, (msg), __LINE__)
void expect_saved_rc_at(int got, int want, const char *call, const char *want_name,
                        const char *msg, int line);

/* Asserts that the calling thread's errmsg is non-empty and mentions at least one of the given
 * words (any case). Use it right after the failing call: errmsg is valid only until the
 * thread's next surelock call. */
#define EXPECT_ERRMSG(...)                                                                     \
    expect_text_at(__LINE__, surelock_errmsg(), __VA_ARGS__, (const char *)NULL)
/* The same for a message a helper thread saved (see save_errmsg). */
#define EXPECT_TEXT(text, ...) expect_text_at(__LINE__, (text), __VA_ARGS__, (const char *)NULL)
void expect_text_at(int line, const char *msg, ...);

#define ERRMSG_SIZE 512
/* Copies the calling thread's errmsg (valid only until its next surelock call). */
void save_errmsg(char out[ERRMSG_SIZE]);

/* Asserts a <= elapsed_ns <= TIMED_WAIT_CEILING_NS. */
#define EXPECT_WAITED_AT_LEAST(elapsed_ns, timeout_ns)                                         \
    expect_waited_at(__LINE__, (elapsed_ns), (timeout_ns))
void expect_waited_at(int line, uint64_t elapsed_ns, uint64_t timeout_ns);

/* ---- flags: a counter other threads can wait on, bounded on CLOCK_MONOTONIC --------------- */

typedef struct flag {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int value;
} flag;

void flag_init(flag *f);
void flag_destroy(flag *f);
void flag_raise(flag *f);
int flag_value(flag *f);
/* Waits until raised at least `at_least` times; false after limit_ms. */
bool flag_wait(flag *f, int at_least, unsigned limit_ms);

/* ---- helper threads: started, and joined within WAIT_LIMIT_MS or the test fails ----------- */

typedef struct helper {
    pthread_t thread;
    void (*body)(void *);
    void *arg;
    flag done;
    bool started;
} helper;

void helper_start(helper *h, void (*body)(void *), void *arg);
/* The same on a thread with a stack of stack_size bytes (0: the default stack). */
void helper_start_stack(helper *h, void (*body)(void *), void *arg, size_t stack_size);
/* Joins within WAIT_LIMIT_MS in all: first the body's end (monotonic), then, in what is left
 * of that bound, the thread's exit (thread-exit work runs after the body: the library's
 * per-thread cleanup, which releases what a dying owner held) with pthread_timedjoin_np. On timeout the test fails and the stuck
 * thread is left alone. */
#define JOIN(h) helper_join((h), #h, __LINE__)
void helper_join(helper *h, const char *name, int line);
/* Runs body(arg) on a brand-new thread and waits for it (bounded). */
#define RUN_IN_NEW_THREAD(t, body, arg)                                                        \
    do {                                                                                       \
        helper_start((t), (body), (arg));                                                      \
        JOIN(t);                                                                               \
    } while (0)

/* ---- agents: a thread that runs calls for the test, one at a time ------------------------ */

/*
 * An agent is a helper thread the test hands calls to: "take this lock on another thread",
 * "try that one from a thread that does not hold it". Whatever it takes it keeps until a later
 * call releases it, or until agent_stop ends the thread (still holding it: owner death).
 * After each call the agent's errmsg is saved in a->errmsg.
 */
typedef int (*agent_fn)(void *arg);
typedef struct agent {
    helper thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    agent_fn fn;
    void *arg;
    int rc;
    bool has_job, job_done, quit;
    pid_t tid;
    char errmsg[ERRMSG_SIZE];
} agent;

void agent_start(agent *a);
/* Runs fn(arg) on the agent and returns its result (within WAIT_LIMIT_MS, or the test fails). */
int agent_call(agent *a, agent_fn fn, void *arg);
/* Starts fn(arg) on the agent without waiting (for calls that block); collect with agent_wait. */
void agent_post(agent *a, agent_fn fn, void *arg);
/* Waits (bounded) for a posted call and returns its result. */
int agent_wait(agent *a);
/* Whether the posted call has returned (without waiting). */
bool agent_done(agent *a);
/* Ends the agent thread (bounded join); anything it still holds, it dies holding. */
void agent_stop(agent *a);

/* ---- start gate -------------------------------------------------------------------------- */

typedef struct gate {
    flag ready;
    flag go;
} gate;

void gate_init(gate *g);
void gate_destroy(gate *g);
/* Worker side: reports ready, waits for the start; false if the start never came. */
bool gate_pass(gate *g);
/* Test side: waits (bounded) for n workers, then lets them all go at once. */
void gate_open(gate *g, int n);

/* ---- watchdog: a whole test is bounded too ------------------------------------------------ */

int watchdog_start(void **state);  /* group setup */
int watchdog_stop(void **state);   /* group teardown */
int watchdog_arm(void **state);    /* per-test setup; *state is the test's name */
int watchdog_disarm(void **state); /* per-test teardown */
/* Optional: a function the watchdog calls just before it ends the run (no teardown will run
 * then), e.g. to kill child processes and remove a test directory. Set it before
 * watchdog_start. */
void watchdog_on_bail(void (*cleanup)(void));
/* A test of a group: watched by the watchdog, named after its function (a sentence). */
#define TEST(f) {#f, f, watchdog_arm, watchdog_disarm, (void *)#f}
/* The same with a teardown of the test file's own, which must end by calling watchdog_disarm. */
#define TEST_WITH_TEARDOWN(f, teardown) {#f, f, watchdog_arm, (teardown), (void *)#f}

/* ---- is a thread asleep (blocked in the kernel)? ---------------------------------------- */

/* Waits until thread `tid`, which announced it is about to make a blocking call and does
 * nothing else before it, is seen asleep (state S twice, 1 ms apart). 1 = seen asleep, 0 = not
 * within limit_ms (it may only spin), -1 = no /proc (after giving it 200 ms). */
int wait_until_asleep(pid_t tid, unsigned limit_ms);

/* ---- child processes -------------------------------------------------------------------- */

/* Forks; the child arms alarm(alarm_s) (so it dies rather than hang), runs body(arg) and
 * _exit()s with its return value. Returns the child's pid (the test fails if fork fails). */
pid_t child_spawn(int (*body)(void *), void *arg, unsigned alarm_s);
/* Waits for the child within limit_ms (a waitpid WNOHANG loop); on timeout SIGKILLs and reaps
 * it and returns false. *status gets the wait status. */
bool child_wait(pid_t pid, unsigned limit_ms, int *status);
/* SIGKILLs the child and reaps it. */
void child_kill(pid_t pid);
/* Exit code of a child that exited normally, or -1 (killed, e.g. by its alarm). */
int child_exit_code(int status);

/* Tracked children: child_spawn, remembered (up to TRACKED_CHILDREN_MAX at a time) until
 * child_reap_at reaps them, so that a test's teardown, or the watchdog's bail-out function
 * (see watchdog_on_bail), can kill whatever a failed test left running. */
#define TRACKED_CHILDREN_MAX 64
pid_t child_spawn_tracked(int (*body)(void *), void *arg, unsigned alarm_s);
/* Waits for the child within limit_ms and returns its wait status; on timeout SIGKILLs and
 * reaps it and fails the test. Either way it is no longer tracked. */
int child_reap_at(int line, pid_t pid, unsigned limit_ms);
/* child_reap_at, then fails the test unless the child exited with status 0. */
void child_expect_ok_at(int line, pid_t pid, unsigned limit_ms);
/* SIGKILLs every tracked child and forgets it; with reap, also waits for each (a teardown;
 * the watchdog, which _exit()s right after, passes false). */
void children_kill_tracked(bool reap);

/* In a child (which must not use CMocka): print what went wrong, with the child's pid and the
 * line, and return 1 from the child's body. The test then fails when it reaps the child. */
#define CHILD_EXPECT_RC(call, want)                                                            \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        if (rc_ != (want)) {                                                                   \
            fprintf(stderr, "child %d, line %d: %s returned %s (%d), expected %s; errmsg "     \
                            "\"%s\"\n",                                                        \
                    (int)getpid(), __LINE__, #call, errname(rc_), rc_, #want,                 \
                    surelock_errmsg());                                                        \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

#define CHILD_CHECK(cond)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "child %d, line %d: check failed: %s\n", (int)getpid(), __LINE__,  \
                    #cond);                                                                    \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

/* ---- pipes with bounded waits (between the test and its children) ------------------------- */

void make_pipe(int fds[2]); /* O_CLOEXEC; the test fails if pipe2 does */
bool send_byte(int fd);
/* Reads one byte within limit_ms; false on timeout, EOF or error. */
bool recv_byte(int fd, unsigned limit_ms);

/* A fresh private directory for lock files (mkdtemp under $TMPDIR or /tmp), and its cleanup. */
void temp_dir_make(char out[256]);
void temp_dir_remove(const char *dir); /* recursive; does nothing for "" */
/* "dir/name", kept until temp_paths_free() (a test's teardown calls it). */
const char *temp_path(const char *dir, const char *name);
void temp_paths_free(void);

/* New locks for a test: a failure to create one fails the test. */
surelock_mutex *new_mutex(void);
surelock_rwlock *new_rwlock(void);
surelock_rlock *new_rlock(void);

#endif
