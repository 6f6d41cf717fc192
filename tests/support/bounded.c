/* bounded.c — see bounded.h. */
#define _GNU_SOURCE

#include "bounded.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <surelock.h>

/* ---- clock and small utilities ------------------------------------------------------------- */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sleep_ms(unsigned ms)
{
    sleep_ns((uint64_t)ms * MS);
}

void sleep_us(unsigned us)
{
    sleep_ns((uint64_t)us * 1000u);
}

pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

const char *errname(int rc)
{
    switch (rc) {
    case 0: return "0";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EDEADLK: return "EDEADLK";
    case EPERM: return "EPERM";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    case EAGAIN: return "EAGAIN";
    case EEXIST: return "EEXIST";
    case EPROTO: return "EPROTO";
    case ENOENT: return "ENOENT";
    case EINPROGRESS: return "EINPROGRESS";
    case EALREADY: return "EALREADY";
    case ECANCELED: return "ECANCELED";
    case ELOOP: return "ELOOP";
    case ENOTDIR: return "ENOTDIR";
    case EACCES: return "EACCES";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return "an unexpected code";
    }
}

/* ---- assertions ----------------------------------------------------------------------------- */

void expect_rc_at(int got, int want, const char *call, const char *want_name, int line)
{
    if (got != want)
        fail_msg("line %d: %s returned %s (%d), expected %s; errmsg: \"%s\"", line, call,
                 errname(got), got, want_name, surelock_errmsg());
}

void expect_saved_rc_at(int got, int want, const char *call, const char *want_name,
                        const char *msg, int line)
{
    if (got != want)
        fail_msg("line %d: %s was %s (%d), expected %s; that thread's errmsg: \"%s\"", line, call,
                 errname(got), got, want_name, msg);
}

void expect_text_at(int line, const char *msg, ...)
{
    if (msg == NULL) fail_msg("line %d: surelock_errmsg() returned NULL", line);
    if (msg[0] == '\0') fail_msg("line %d: errmsg is empty after a failure", line);
    va_list ap;
    va_start(ap, msg);
    const char *word;
    bool found = false;
    char wanted[256] = "";
    while ((word = va_arg(ap, const char *)) != NULL) {
        if (strcasestr(msg, word) != NULL) found = true;
        strncat(wanted, wanted[0] ? "\" or \"" : "\"", sizeof wanted - strlen(wanted) - 1);
        strncat(wanted, word, sizeof wanted - strlen(wanted) - 1);
    }
    va_end(ap);
    if (!found) fail_msg("line %d: errmsg \"%s\" does not mention %s\"", line, msg, wanted);
}

void save_errmsg(char out[ERRMSG_SIZE])
{
    const char *msg = surelock_errmsg();
    snprintf(out, ERRMSG_SIZE, "%s", msg ? msg : "(NULL)");
}

void expect_waited_at(int line, uint64_t elapsed_ns, uint64_t timeout_ns)
{
    if (elapsed_ns < timeout_ns)
        fail_msg("line %d: the timed wait returned after %llu ns, before its timeout of %llu ns",
                 line, (unsigned long long)elapsed_ns, (unsigned long long)timeout_ns);
    if (elapsed_ns > TIMED_WAIT_CEILING_NS)
        fail_msg("line %d: the timed wait of %llu ns took %llu ns", line,
                 (unsigned long long)timeout_ns, (unsigned long long)elapsed_ns);
}

/* ---- flags ------------------------------------------------------------------------------- */

static struct timespec timespec_at(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return ts;
}

void flag_init(flag *f)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&f->mu, NULL);
    f->value = 0;
}

void flag_destroy(flag *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

void flag_raise(flag *f)
{
    pthread_mutex_lock(&f->mu);
    f->value++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

int flag_value(flag *f)
{
    pthread_mutex_lock(&f->mu);
    int v = f->value;
    pthread_mutex_unlock(&f->mu);
    return v;
}

bool flag_wait(flag *f, int at_least, unsigned limit_ms)
{
    struct timespec deadline = timespec_at(now_ns() + (uint64_t)limit_ms * MS);
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    while (f->value < at_least && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&f->cv, &f->mu, &deadline);
    bool ok = f->value >= at_least;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

/* ---- helper threads ------------------------------------------------------------------------ */

static void *helper_main(void *p)
{
    helper *h = p;
    h->body(h->arg);
    flag_raise(&h->done);
    return NULL;
}

void helper_start_stack(helper *h, void (*body)(void *), void *arg, size_t stack_size)
{
    h->body = body;
    h->arg = arg;
    h->started = false;
    flag_init(&h->done);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack_size != 0) {
        int rc = pthread_attr_setstacksize(&attr, stack_size);
        if (rc != 0) fail_msg("pthread_attr_setstacksize(%zu): %s", stack_size, strerror(rc));
    }
    int rc = pthread_create(&h->thread, &attr, helper_main, h);
    pthread_attr_destroy(&attr);
    if (rc != 0) fail_msg("pthread_create: %s", strerror(rc));
    h->started = true;
}

void helper_start(helper *h, void (*body)(void *), void *arg)
{
    helper_start_stack(h, body, arg, 0);
}

void helper_join(helper *h, const char *name, int line)
{
    if (!h->started) fail_msg("line %d: thread %s was never started", line, name);
    uint64_t deadline_ns = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    if (!flag_wait(&h->done, 1, WAIT_LIMIT_MS))
        fail_msg("line %d: thread %s did not finish within %d ms: a lock call hangs", line, name,
                 WAIT_LIMIT_MS);
    /* The exit tail gets what is left of the same bound, on the realtime clock
     * (pthread_timedjoin_np knows no other that ThreadSanitizer intercepts). */
    uint64_t now = now_ns();
    uint64_t left_ns = deadline_ns > now ? deadline_ns - now : 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t until_ns = (uint64_t)until.tv_nsec + left_ns % 1000000000ull;
    until.tv_sec += (time_t)(left_ns / 1000000000ull + until_ns / 1000000000ull);
    until.tv_nsec = (long)(until_ns % 1000000000ull);
    int rc = pthread_timedjoin_np(h->thread, NULL, &until);
    if (rc == ETIMEDOUT)
        fail_msg("line %d: thread %s did not exit within %d ms: its thread-exit cleanup hangs",
                 line, name, WAIT_LIMIT_MS);
    if (rc != 0) fail_msg("line %d: pthread_join(%s): %s", line, name, strerror(rc));
    h->started = false;
    flag_destroy(&h->done);
}

/* ---- agents ------------------------------------------------------------------------------- */

static void agent_body(void *arg)
{
    agent *a = arg;
    pthread_mutex_lock(&a->mu);
    a->tid = current_tid();
    pthread_cond_broadcast(&a->cv);
    for (;;) {
        while (!a->has_job && !a->quit) pthread_cond_wait(&a->cv, &a->mu);
        if (a->has_job) {
            agent_fn fn = a->fn;
            void *fn_arg = a->arg;
            pthread_mutex_unlock(&a->mu);
            int rc = fn(fn_arg);
            char msg[ERRMSG_SIZE];
            save_errmsg(msg);
            pthread_mutex_lock(&a->mu);
            a->rc = rc;
            memcpy(a->errmsg, msg, sizeof msg);
            a->has_job = false;
            a->job_done = true;
            pthread_cond_broadcast(&a->cv);
            continue;
        }
        break; /* quit, with no job pending */
    }
    pthread_mutex_unlock(&a->mu);
}

void agent_start(agent *a)
{
    memset(a, 0, sizeof *a);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&a->mu, NULL);
    helper_start(&a->thread, agent_body, a);
    struct timespec until = timespec_at(now_ns() + (uint64_t)WAIT_LIMIT_MS * MS);
    pthread_mutex_lock(&a->mu);
    while (a->tid == 0 && pthread_cond_timedwait(&a->cv, &a->mu, &until) != ETIMEDOUT) {
    }
    bool up = a->tid != 0;
    pthread_mutex_unlock(&a->mu);
    if (!up) fail_msg("an agent thread did not start within %d ms", WAIT_LIMIT_MS);
}

void agent_post(agent *a, agent_fn fn, void *arg)
{
    pthread_mutex_lock(&a->mu);
    bool busy = a->has_job;
    if (!busy) {
        a->fn = fn;
        a->arg = arg;
        a->rc = -1;
        a->errmsg[0] = '\0';
        a->job_done = false;
        a->has_job = true;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    if (busy) fail_msg("agent_post: the agent is still busy with an earlier call");
}

int agent_wait(agent *a)
{
    struct timespec until = timespec_at(now_ns() + (uint64_t)WAIT_LIMIT_MS * MS);
    pthread_mutex_lock(&a->mu);
    while (!a->job_done && pthread_cond_timedwait(&a->cv, &a->mu, &until) != ETIMEDOUT) {
    }
    bool done = a->job_done;
    int rc = a->rc;
    pthread_mutex_unlock(&a->mu);
    if (!done) fail_msg("an agent's call did not return within %d ms: a lock call hangs",
                        WAIT_LIMIT_MS);
    return rc;
}

bool agent_done(agent *a)
{
    pthread_mutex_lock(&a->mu);
    bool done = a->job_done;
    pthread_mutex_unlock(&a->mu);
    return done;
}

int agent_call(agent *a, agent_fn fn, void *arg)
{
    agent_post(a, fn, arg);
    return agent_wait(a);
}

void agent_stop(agent *a)
{
    pthread_mutex_lock(&a->mu);
    a->quit = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    helper_join(&a->thread, "agent", __LINE__);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
}

/* ---- start gate ---------------------------------------------------------------------------- */

void gate_init(gate *g)
{
    flag_init(&g->ready);
    flag_init(&g->go);
}

void gate_destroy(gate *g)
{
    flag_destroy(&g->ready);
    flag_destroy(&g->go);
}

bool gate_pass(gate *g)
{
    flag_raise(&g->ready);
    return flag_wait(&g->go, 1, WAIT_LIMIT_MS);
}

void gate_open(gate *g, int n)
{
    bool all_ready = flag_wait(&g->ready, n, WAIT_LIMIT_MS);
    flag_raise(&g->go); /* also when not all came: nobody is left waiting */
    if (!all_ready) fail_msg("workers did not reach the start gate within %d ms", WAIT_LIMIT_MS);
}

/* ---- watchdog ------------------------------------------------------------------------------ */

/*
 * Helper threads are joined with a bound, but the test's own thread also calls lock functions
 * that a broken library could block forever. CMocka cannot abandon one test from another
 * thread, so the watchdog ends the whole run, naming the test, when one runs past WATCHDOG_MS.
 */
static struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    const char *test; /* the running test, NULL between tests */
    uint64_t deadline_ns;
    bool stop;
} watchdog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void (*watchdog_bail_cleanup)(void);

void watchdog_on_bail(void (*cleanup)(void))
{
    watchdog_bail_cleanup = cleanup;
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&watchdog.mu);
    while (!watchdog.stop) {
        uint64_t now = now_ns();
        if (watchdog.test != NULL && now >= watchdog.deadline_ns) {
            fprintf(stderr, "watchdog: %s did not finish within %d ms: a lock call hangs\n",
                    watchdog.test, WATCHDOG_MS);
            printf("Bail out! %s did not finish within %d ms\n", watchdog.test, WATCHDOG_MS);
            fflush(stdout);
            if (watchdog_bail_cleanup != NULL) watchdog_bail_cleanup();
            _exit(1);
        }
        struct timespec until =
            timespec_at(watchdog.test != NULL ? watchdog.deadline_ns : now + 1000 * MS);
        pthread_cond_timedwait(&watchdog.cv, &watchdog.mu, &until);
    }
    pthread_mutex_unlock(&watchdog.mu);
    return NULL;
}

int watchdog_start(void **state)
{
    (void)state;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&watchdog.cv, &attr);
    pthread_condattr_destroy(&attr);
    return pthread_create(&watchdog.thread, NULL, watchdog_main, NULL) == 0 ? 0 : -1;
}

int watchdog_stop(void **state)
{
    (void)state;
    pthread_mutex_lock(&watchdog.mu);
    watchdog.stop = true;
    pthread_cond_broadcast(&watchdog.cv);
    pthread_mutex_unlock(&watchdog.mu);
    pthread_join(watchdog.thread, NULL);
    pthread_cond_destroy(&watchdog.cv);
    return 0;
}

int watchdog_arm(void **state)
{
    pthread_mutex_lock(&watchdog.mu);
    watchdog.test = *state;
    watchdog.deadline_ns = now_ns() + (uint64_t)WATCHDOG_MS * MS;
    pthread_cond_broadcast(&watchdog.cv);
    pthread_mutex_unlock(&watchdog.mu);
    return 0;
}

int watchdog_disarm(void **state)
{
    (void)state;
    pthread_mutex_lock(&watchdog.mu);
    watchdog.test = NULL;
    pthread_mutex_unlock(&watchdog.mu);
    return 0;
}

/* ---- is a thread asleep? ------------------------------------------------------------------- */

static char thread_state(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "re");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *paren = strrchr(buf, ')'); /* "tid (comm) S ..."; comm may contain ')' */
    return paren != NULL && paren[1] == ' ' ? paren[2] : 0;
}

int wait_until_asleep(pid_t tid, unsigned limit_ms)
{
    uint64_t end = now_ns() + (uint64_t)limit_ms * MS;
    int seen = 0;
    while (now_ns() < end) {
        char s = thread_state(tid);
        if (s == 0) {
            sleep_ms(200);
            return -1;
        }
        seen = s == 'S' ? seen + 1 : 0;
        if (seen >= 2) return 1;
        sleep_ms(1);
    }
    return 0;
}

/* ---- child processes ----------------------------------------------------------------------- */

pid_t child_spawn(int (*body)(void *), void *arg, unsigned alarm_s)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(alarm_s);
        _exit(body(arg));
    }
    return pid;
}

bool child_wait(pid_t pid, unsigned limit_ms, int *status)
{
    uint64_t end = now_ns() + (uint64_t)limit_ms * MS;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return true;
        if (r < 0 && errno != EINTR) return false;
        if (now_ns() >= end) {
            child_kill(pid);
            return false;
        }
        sleep_ms(2);
    }
}

void child_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

int child_exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- tracked children ---------------------------------------------------------------------- */

static pid_t tracked_children[TRACKED_CHILDREN_MAX];
static int n_tracked_children;

static void forget_child(pid_t pid)
{
    for (int i = 0; i < n_tracked_children; i++)
        if (tracked_children[i] == pid) tracked_children[i] = tracked_children[--n_tracked_children];
}

pid_t child_spawn_tracked(int (*body)(void *), void *arg, unsigned alarm_s)
{
    pid_t pid = child_spawn(body, arg, alarm_s);
    if (n_tracked_children < TRACKED_CHILDREN_MAX) tracked_children[n_tracked_children++] = pid;
    return pid;
}

int child_reap_at(int line, pid_t pid, unsigned limit_ms)
{
    int status;
    bool ended = child_wait(pid, limit_ms, &status);
    forget_child(pid);
    if (!ended)
        fail_msg("line %d: child %d did not finish within %u ms: a lock call hangs", line,
                 (int)pid, limit_ms);
    return status;
}

void child_expect_ok_at(int line, pid_t pid, unsigned limit_ms)
{
    int status = child_reap_at(line, pid, limit_ms);
    if (WIFSIGNALED(status))
        fail_msg("line %d: child %d died of signal %d (%s)", line, (int)pid, WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("line %d: child %d exited with status %d (see its message above)", line,
                 (int)pid, WEXITSTATUS(status));
}

void children_kill_tracked(bool reap)
{
    for (int i = 0; i < n_tracked_children; i++) {
        kill(tracked_children[i], SIGKILL);
        if (reap) waitpid(tracked_children[i], NULL, 0);
    }
    if (reap) n_tracked_children = 0;
}

/* ---- pipes --------------------------------------------------------------------------------- */

void make_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0) fail_msg("pipe: %s", strerror(errno));
}

bool send_byte(int fd)
{
    char c = 'x';
    ssize_t n;
    while ((n = write(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    return n == 1;
}

bool recv_byte(int fd, unsigned limit_ms)
{
    uint64_t end = now_ns() + (uint64_t)limit_ms * MS;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end) return false;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)((end - now) / MS) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        return n == 1;
    }
}

/* ---- temporary directories ----------------------------------------------------------------- */

void temp_dir_make(char out[256])
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') base = "/tmp";
    snprintf(out, 256, "%s/surelock-test-XXXXXX", base);
    if (mkdtemp(out) == NULL) fail_msg("mkdtemp(%s): %s", out, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

void temp_dir_remove(const char *dir)
{
    if (dir[0] != '\0') nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char **temp_paths;
static size_t n_temp_paths, temp_paths_capacity;

const char *temp_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);
    if (n_temp_paths == temp_paths_capacity) {
        size_t capacity = temp_paths_capacity ? 2 * temp_paths_capacity : 64;
        char **grown = realloc(temp_paths, capacity * sizeof *grown);
        if (grown == NULL) free(path), path = NULL;
        else temp_paths = grown, temp_paths_capacity = capacity;
    }
    if (path == NULL) fail_msg("out of memory for a test path");
    snprintf(path, len, "%s/%s", dir, name);
    temp_paths[n_temp_paths++] = path;
    return path;
}

void temp_paths_free(void)
{
    for (size_t i = 0; i < n_temp_paths; i++) free(temp_paths[i]);
    n_temp_paths = 0;
}

surelock_mutex *new_mutex(void)
{
    surelock_mutex *m = NULL;
    EXPECT_RC(surelock_mutex_new(&m), 0);
    assert_non_null(m);
    return m;
}

surelock_rwlock *new_rwlock(void)
{
    surelock_rwlock *l = NULL;
    EXPECT_RC(surelock_rwlock_new(&l), 0);
    assert_non_null(l);
    return l;
}

surelock_rlock *new_rlock(void)
{
    surelock_rlock *l = NULL;
    EXPECT_RC(surelock_rlock_new(&l), 0);
    assert_non_null(l);
    return l;
}
