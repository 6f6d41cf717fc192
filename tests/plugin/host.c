/*
 * A plugin host that shares one guard with its plugins through libsurelock.
 *
 * The host does not link libsurelock: it dlopen()s libsurelock.so.1 by path, like a program
 * that loads it optionally, and dlopen()s two plugins (plugin.c built as plugin_a and
 * plugin_b) that link it normally. Host and plugins each take surelock_rlock_global("libfoo")
 * around their use of the (imaginary) thread-unsafe libfoo, so all three must get the same
 * lock: the loader resolves the plugins' DT_NEEDED libsurelock.so.1 to the copy the host
 * already loaded.
 *
 *   host shared LIB PLUGIN_A PLUGIN_B
 *       the host's hold is re-entered by plugin A on the same thread (depth 2, and 3 through
 *       plugin B), while other threads, through either plugin, are kept out (trylock EBUSY,
 *       timed wait ETIMEDOUT) until the host releases; a waiter then gets in.
 *   host cycles LIB PLUGIN_A PLUGIN_B [N]
 *       N (default 1000) cycles of dlopen (library and both plugins, in varying order),
 *       2-4 threads using the guard through the plugins and the host's handle, dlclose (in
 *       varying order); the guard is the same lock in every cycle and excludes every time.
 *   host unload LIB PLUGIN_A PLUGIN_B
 *       plugin A and the host's library handle are dlclose()d while threads that used the
 *       guard are alive, one of them holding the guard and a mutex; those threads then exit
 *       (the library's thread-exit handler runs) without crashing, and the next locker is told
 *       the owner died.
 *
 * Every wait is bounded (timed locks, timed condition waits), so a failure exits 1 with a
 * message; it never hangs. Runs clean under `meson test --setup=valgrind`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plugin_api.h"
#include "surelock.h" /* types and constants only: the functions come from dlsym */

#define SEC 1000000000ull
#define LONG_NS (10 * SEC)          /* "should succeed": a ceiling, never forever */
#define SHORT_NS (50ull * 1000 * 1000) /* "should stay busy" */
#define WORK_ITERATIONS 10

static atomic_int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            atomic_fetch_add(&failures, 1);                                                \
        }                                                                                  \
    } while (0)

#define CHECK_RC(rc, want)                                                                 \
    do {                                                                                   \
        int rc_ = (rc), want_ = (want);                                                    \
        CHECK(rc_ == want_, "%s returned %d (%s), expected %d (%s)", #rc, rc_,             \
              strerror(rc_), want_, strerror(want_));                                      \
    } while (0)

/* ---- Loading ------------------------------------------------------------------------------ */

struct lib {
    void *handle;
    const char *(*errmsg)(void);
    int (*rlock_global)(const char *, surelock_rlock **);
    int (*rlock_trylock)(surelock_rlock *);
    int (*rlock_timedlock)(surelock_rlock *, uint64_t);
    int (*rlock_unlock)(surelock_rlock *);
    unsigned (*rlock_depth)(const surelock_rlock *);
    int (*mutex_new)(surelock_mutex **);
    int (*mutex_free)(surelock_mutex *);
    int (*mutex_trylock)(surelock_mutex *);
    int (*mutex_timedlock)(surelock_mutex *, uint64_t);
    int (*mutex_unlock)(surelock_mutex *);
};

struct plugin {
    void *handle;
    plugin_name_fn name;
    plugin_guard_fn guard;
    plugin_call_fn call;
    plugin_try_fn try_;
    plugin_timed_fn timed;
    plugin_take_fn take;
    plugin_release_fn release;
    plugin_work_fn work;
};

static const char *lib_path, *plugin_paths[2];

/* dlsym returns a data pointer; POSIX guarantees it converts to the function pointer. */
static int sym(void *handle, const char *name, void *dst, size_t size)
{
    void *p = dlsym(handle, name);
    if (p == NULL) {
        fprintf(stderr, "dlsym(%s): %s\n", name, dlerror());
        atomic_fetch_add(&failures, 1);
        return -1;
    }
    memcpy(dst, &p, size);
    return 0;
}
#define SYM(h, dst, name) sym((h), (name), &(dst), sizeof(dst))

static int load_lib(struct lib *l)
{
    memset(l, 0, sizeof *l);
    l->handle = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (l->handle == NULL) {
        fprintf(stderr, "dlopen(%s): %s\n", lib_path, dlerror());
        atomic_fetch_add(&failures, 1);
        return -1;
    }
    int bad = 0;
    bad |= SYM(l->handle, l->errmsg, "surelock_errmsg");
    bad |= SYM(l->handle, l->rlock_global, "surelock_rlock_global");
    bad |= SYM(l->handle, l->rlock_trylock, "surelock_rlock_trylock");
    bad |= SYM(l->handle, l->rlock_timedlock, "surelock_rlock_timedlock");
    bad |= SYM(l->handle, l->rlock_unlock, "surelock_rlock_unlock");
    bad |= SYM(l->handle, l->rlock_depth, "surelock_rlock_depth");
    bad |= SYM(l->handle, l->mutex_new, "surelock_mutex_new");
    bad |= SYM(l->handle, l->mutex_free, "surelock_mutex_free");
    bad |= SYM(l->handle, l->mutex_trylock, "surelock_mutex_trylock");
    bad |= SYM(l->handle, l->mutex_timedlock, "surelock_mutex_timedlock");
    bad |= SYM(l->handle, l->mutex_unlock, "surelock_mutex_unlock");
    return bad;
}

static int load_plugin(struct plugin *p, int which)
{
    memset(p, 0, sizeof *p);
    p->handle = dlopen(plugin_paths[which], RTLD_NOW | RTLD_LOCAL);
    if (p->handle == NULL) {
        fprintf(stderr, "dlopen(%s): %s\n", plugin_paths[which], dlerror());
        atomic_fetch_add(&failures, 1);
        return -1;
    }
    int bad = 0;
    bad |= SYM(p->handle, p->name, "plugin_name");
    bad |= SYM(p->handle, p->guard, "plugin_guard");
    bad |= SYM(p->handle, p->call, "plugin_call");
    bad |= SYM(p->handle, p->try_, "plugin_try");
    bad |= SYM(p->handle, p->timed, "plugin_timed");
    bad |= SYM(p->handle, p->take, "plugin_take");
    bad |= SYM(p->handle, p->release, "plugin_release");
    bad |= SYM(p->handle, p->work, "plugin_work");
    return bad;
}

static void unload(void **handle)
{
    if (*handle != NULL && dlclose(*handle) != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        atomic_fetch_add(&failures, 1);
    }
    *handle = NULL;
}

static surelock_rlock *host_guard(const struct lib *l)
{
    surelock_rlock *g = NULL;
    CHECK_RC(l->rlock_global(PLUGIN_GUARD_NAME, &g), 0);
    return g;
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        fprintf(stderr, "pthread_create: %s\n", strerror(rc));
        exit(1);
    }
}

/* ---- host shared -------------------------------------------------------------------------- */

static struct lib L;
static struct plugin A, B;

struct probe {
    struct plugin *p;
    int try_rc, timed_rc;
};

static void *probe_thread(void *arg)
{
    struct probe *pr = arg;
    pr->try_rc = pr->p->try_();
    pr->timed_rc = pr->p->timed(SHORT_NS);
    return NULL;
}

/* trylock and a short timed lock through plugin p, from a new thread (joined: bounded). */
static struct probe probe_from_another_thread(struct plugin *p)
{
    struct probe pr = {p, -1, -1};
    pthread_t t;
    start(&t, probe_thread, &pr);
    pthread_join(t, NULL);
    return pr;
}

struct inside {
    struct probe other_b, other_a;
    unsigned depth_b;
    int call_b_rc;
};

/* Runs inside plugin A's call, on the host's thread, with the guard at depth 2. */
static int inside_plugin_a(void *arg)
{
    struct inside *in = arg;
    in->other_b = probe_from_another_thread(&B);
    in->other_a = probe_from_another_thread(&A);
    in->call_b_rc = B.call(LONG_NS, NULL, NULL, &in->depth_b); /* depth 3, through plugin B */
    return 0;
}

static atomic_int host_released;

struct waiter {
    int rc;
    unsigned depth;
};

static int check_host_released(void *arg)
{
    (void)arg;
    return atomic_load(&host_released) ? 0 : EPROTO;
}

static void *waiter_thread(void *arg)
{
    struct waiter *w = arg;
    w->rc = B.call(LONG_NS, check_host_released, NULL, &w->depth);
    return NULL;
}

static void mode_shared(void)
{
    if (load_lib(&L) || load_plugin(&A, 0) || load_plugin(&B, 1)) return;
    CHECK(strcmp(A.name(), "a") == 0 && strcmp(B.name(), "b") == 0, "plugin names %s, %s",
          A.name(), B.name());

    surelock_rlock *g = host_guard(&L);
    CHECK(g != NULL && A.guard() == (void *)g && B.guard() == (void *)g,
          "one guard for all: host %p, plugin a %p, plugin b %p", (void *)g, A.guard(),
          B.guard());

    CHECK_RC(L.rlock_timedlock(g, LONG_NS), 0);
    CHECK(L.rlock_depth(g) == 1, "host depth %u", L.rlock_depth(g));

    struct probe pb = probe_from_another_thread(&B), pa = probe_from_another_thread(&A);
    CHECK_RC(pb.try_rc, EBUSY);
    CHECK_RC(pb.timed_rc, ETIMEDOUT);
    CHECK_RC(pa.try_rc, EBUSY);
    CHECK_RC(pa.timed_rc, ETIMEDOUT);

    struct waiter w = {-1, 0};
    pthread_t wt;
    start(&wt, waiter_thread, &w);

    struct inside in;
    memset(&in, 0, sizeof in);
    unsigned depth_a = 0;
    CHECK_RC(A.call(LONG_NS, inside_plugin_a, &in, &depth_a), 0);
    CHECK(depth_a == 2, "plugin A re-entered the host's hold at depth %u, expected 2", depth_a);
    CHECK_RC(in.other_b.try_rc, EBUSY);
    CHECK_RC(in.other_b.timed_rc, ETIMEDOUT);
    CHECK_RC(in.other_a.try_rc, EBUSY);
    CHECK_RC(in.other_a.timed_rc, ETIMEDOUT);
    CHECK_RC(in.call_b_rc, 0);
    CHECK(in.depth_b == 3, "plugin B inside plugin A: depth %u, expected 3", in.depth_b);
    CHECK(L.rlock_depth(g) == 1, "host depth after the plugins returned: %u", L.rlock_depth(g));

    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL); /* give the waiter time to block (correct either way) */
    atomic_store(&host_released, 1);
    CHECK_RC(L.rlock_unlock(g), 0);
    CHECK(L.rlock_depth(g) == 0, "host depth after unlock: %u", L.rlock_depth(g));
    pthread_join(wt, NULL);
    CHECK_RC(w.rc, 0); /* EPROTO: it got in before the host released */
    CHECK(w.depth == 1, "waiter depth %u", w.depth);

    pb = probe_from_another_thread(&B);
    CHECK_RC(pb.try_rc, 0);
    CHECK_RC(pb.timed_rc, 0);

    unload(&B.handle);
    unload(&A.handle);
    unload(&L.handle);
}

/* ---- host cycles -------------------------------------------------------------------------- */

struct worker {
    struct plugin *p;       /* NULL: use the host's own library handle */
    struct lib *l;
    unsigned long *counter;
    int rc;
};

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    if (w->p != NULL) {
        w->rc = w->p->work(w->counter, WORK_ITERATIONS);
        return NULL;
    }
    surelock_rlock *g = NULL;
    w->rc = w->l->rlock_global(PLUGIN_GUARD_NAME, &g);
    for (int i = 0; i < WORK_ITERATIONS && w->rc == 0; i++) {
        w->rc = w->l->rlock_timedlock(g, LONG_NS);
        if (w->rc != 0) break;
        ++*w->counter;
        w->rc = w->l->rlock_unlock(g);
    }
    return NULL;
}

static void mode_cycles(int cycles)
{
    void *first_guard = NULL;
    for (int cycle = 0; cycle < cycles && atomic_load(&failures) == 0; cycle++) {
        struct lib l;
        struct plugin p[2];
        /* Odd cycles load the plugins first: their DT_NEEDED brings the library in, and the
         * host's dlopen by path then finds that same copy. */
        int bad = cycle % 2 ? load_plugin(&p[0], 0) | load_plugin(&p[1], 1) | load_lib(&l)
                            : load_lib(&l) | load_plugin(&p[0], 0) | load_plugin(&p[1], 1);
        if (bad) return;

        surelock_rlock *g = host_guard(&l);
        if (first_guard == NULL) first_guard = g;
        CHECK(g == first_guard && p[0].guard() == first_guard && p[1].guard() == first_guard,
              "cycle %d: guard %p / %p / %p, first cycle's %p", cycle, (void *)g, p[0].guard(),
              p[1].guard(), first_guard);

        int nthreads = 2 + cycle % 3;
        unsigned long counter = 0;
        struct worker w[4];
        pthread_t t[4];
        for (int i = 0; i < nthreads; i++) {
            int kind = (cycle + i) % 3; /* plugin a, plugin b, or the host's handle */
            w[i] = (struct worker){kind < 2 ? &p[kind] : NULL, &l, &counter, -1};
            start(&t[i], worker_thread, &w[i]);
        }
        for (int i = 0; i < nthreads; i++) {
            pthread_join(t[i], NULL);
            CHECK_RC(w[i].rc, 0);
        }
        CHECK(counter == (unsigned long)nthreads * WORK_ITERATIONS,
              "cycle %d: %lu increments, expected %d: the guard did not exclude", cycle, counter,
              nthreads * WORK_ITERATIONS);
        CHECK(l.rlock_depth(g) == 0, "cycle %d: host depth %u", cycle, l.rlock_depth(g));

        if (cycle % 2) {
            unload(&l.handle);
            unload(&p[1].handle);
            unload(&p[0].handle);
        } else {
            unload(&p[0].handle);
            unload(&p[1].handle);
            unload(&l.handle);
        }
    }
    printf("%d dlopen/dlclose cycles\n", cycles);
}

/* ---- host unload -------------------------------------------------------------------------- */

struct keeper {
    struct plugin *p;
    struct lib *l;
    surelock_mutex *m;
    int hold;                 /* keep the guard (taken through the plugin) and the mutex */
    int use_rc, take_rc, mutex_rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* CLOCK_MONOTONIC */
    int ready, go;
};

static int wait_flag(struct keeper *k, int *flag)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 30;
    int rc = 0;
    pthread_mutex_lock(&k->mu);
    while (!*flag && rc == 0) rc = pthread_cond_timedwait(&k->cv, &k->mu, &deadline);
    int ok = *flag;
    pthread_mutex_unlock(&k->mu);
    return ok;
}

static void set_flag(struct keeper *k, int *flag)
{
    pthread_mutex_lock(&k->mu);
    *flag = 1;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static void *keeper_thread(void *arg)
{
    struct keeper *k = arg;
    k->use_rc = k->p->call(LONG_NS, NULL, NULL, NULL); /* used the guard and let it go */
    if (k->hold) {
        k->take_rc = k->p->take(LONG_NS);
        k->mutex_rc = k->l->mutex_timedlock(k->m, LONG_NS);
    }
    set_flag(k, &k->ready);
    wait_flag(k, &k->go); /* the host unloads plugin and library meanwhile */
    /* Returning ends the thread; with hold set it still holds the guard and the mutex, so
     * the library's thread-exit handler releases them (marked "owner died"), running from a
     * library the host has dlclose()d: -z nodelete keeps it mapped. */
    return NULL;
}

static void keeper_init(struct keeper *k, struct plugin *p, struct lib *l, surelock_mutex *m,
                        int hold)
{
    memset(k, 0, sizeof *k);
    k->p = p;
    k->l = l;
    k->m = m;
    k->hold = hold;
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void keeper_destroy(struct keeper *k)
{
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
}

static void mode_unload(void)
{
    if (load_lib(&L) || load_plugin(&A, 0)) return;
    surelock_rlock *g = host_guard(&L);
    surelock_mutex *m = NULL;
    CHECK_RC(L.mutex_new(&m), 0);

    struct keeper holder, user;
    keeper_init(&holder, &A, &L, m, 1);
    keeper_init(&user, &A, &L, m, 0);
    pthread_t th, tu;
    /* The user first: once the holder keeps the guard, nobody else can use it. */
    start(&tu, keeper_thread, &user);
    CHECK(wait_flag(&user, &user.ready), "the user thread did not get ready");
    start(&th, keeper_thread, &holder);
    CHECK(wait_flag(&holder, &holder.ready), "the holder thread did not get ready");
    CHECK_RC(holder.use_rc, 0);
    CHECK_RC(holder.take_rc, 0);
    CHECK_RC(holder.mutex_rc, 0);
    CHECK_RC(user.use_rc, 0);
    CHECK_RC(L.rlock_trylock(g), EBUSY); /* the holder has it */

    unload(&A.handle);
    unload(&L.handle);
    /* The plugin is really gone; the library stays mapped (-z nodelete). */
    void *still = dlopen(plugin_paths[0], RTLD_NOW | RTLD_NOLOAD);
    CHECK(still == NULL, "plugin a is still loaded after dlclose");
    if (still != NULL) dlclose(still);

    set_flag(&user, &user.go);
    set_flag(&holder, &holder.go);
    pthread_join(tu, NULL);
    pthread_join(th, NULL);
    keeper_destroy(&holder);
    keeper_destroy(&user);

    /* The process is alive; load the library again: it is the same copy, and the dead
     * holder's locks were released by its exit handler, marked "owner died". */
    if (load_lib(&L)) return;
    CHECK(host_guard(&L) == g, "the guard changed across dlclose/dlopen of the library");
    CHECK_RC(L.rlock_timedlock(g, LONG_NS), EOWNERDEAD);
    CHECK(L.rlock_depth(g) == 1, "depth after EOWNERDEAD: %u", L.rlock_depth(g));
    CHECK_RC(L.rlock_unlock(g), 0);
    CHECK_RC(L.mutex_timedlock(m, LONG_NS), EOWNERDEAD);
    CHECK_RC(L.mutex_unlock(m), 0);
    CHECK_RC(L.mutex_free(m), 0);
    unload(&L.handle);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s shared|cycles|unload LIB PLUGIN_A PLUGIN_B [CYCLES]\n",
                argv[0]);
        return 2;
    }
    lib_path = argv[2];
    plugin_paths[0] = argv[3];
    plugin_paths[1] = argv[4];
    setvbuf(stdout, NULL, _IONBF, 0);

    if (strcmp(argv[1], "shared") == 0) {
        mode_shared();
    } else if (strcmp(argv[1], "cycles") == 0) {
        mode_cycles(argc > 5 ? atoi(argv[5]) : 1000);
    } else if (strcmp(argv[1], "unload") == 0) {
        mode_unload();
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    int n = atomic_load(&failures);
    printf("%s: %s (%d failed checks)\n", argv[1], n ? "FAIL" : "ok", n);
    return n ? 1 : 0;
}
