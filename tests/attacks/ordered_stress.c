/* Attack 1b/2: a workload that can never deadlock (every thread takes shared locks in one
 * global order), so ANY EDEADLK is a false positive. Threads hold many private read locks
 * (hold sets grow and shrink through reserve_one/grow), exit and are replaced (records
 * recycled), while a dumper thread runs surelock_dump_waits and the main thread forks
 * children that use the library (fresh locks, a deliberate reader cycle that must be refused,
 * a dump) and must exit 0 within a bound. Usage: ordered_stress SECONDS [FORKS(0/1)] */
#include "common.h"

#define SHARED 10   /* 0..5 rwlocks, 6..9 mutexes: the global order is the index */
#define WORKERS 5
#define PRIVATE 24
static surelock_rwlock *rw[6];
static surelock_mutex *mx[4];
static _Atomic int stop;
static _Atomic long false_deadlocks, acquisitions;
static int devnull;

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + (unsigned)gettid();
    surelock_rwlock *priv[PRIVATE];
    for (int i = 0; i < PRIVATE; i++) CHECK(surelock_rwlock_new(&priv[i]) == 0, "new");
    int rounds = 200 + rnd(&seed) % 400;
    for (int r = 0; r < rounds && !stop; r++) {
        int np = rnd(&seed) % PRIVATE;
        for (int i = 0; i < np; i++) CHECK(surelock_rwlock_rdlock(priv[i]) == 0, "priv");
        int held[SHARED], nh = 0;
        for (int k = 0; k < SHARED; k++) {
            if (rnd(&seed) % 3 != 0) continue;
            int rc;
            if (k < 6) {
                int wr = rnd(&seed) % 4 == 0;
                rc = wr ? surelock_rwlock_wrlock(rw[k]) : surelock_rwlock_rdlock(rw[k]);
            } else {
                rc = surelock_mutex_lock(mx[k - 6]);
            }
            if (rc == EDEADLK) {
                false_deadlocks++;
                fprintf(stderr, "FALSE EDEADLK: %s\n", surelock_errmsg());
                continue;
            }
            CHECK(rc == 0, "acquire %d: %d", k, rc);
            held[nh++] = k;
            acquisitions++;
        }
        for (int i = nh - 1; i >= 0; i--) {
            int k = held[i];
            int rc = k < 6 ? surelock_rwlock_unlock(rw[k]) : surelock_mutex_unlock(mx[k - 6]);
            CHECK(rc == 0, "release %d: %d", k, rc);
        }
        for (int i = np - 1; i >= 0; i--) CHECK(surelock_rwlock_unlock(priv[i]) == 0, "unlock priv");
    }
    /* Exit holding a few private read locks: the drain must release them. */
    for (int i = 0; i < 3; i++) CHECK(surelock_rwlock_rdlock(priv[i]) == 0, "priv");
    return NULL;
}

static void *dumper(void *arg)
{
    (void)arg;
    while (!stop) {
        CHECK(surelock_dump_waits(devnull) == 0, "dump");
        sleep_ms(1);
    }
    return NULL;
}

static void *forever_worker(void *arg)
{
    long slot = (long)arg;
    while (!stop) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)slot);
        pthread_join(t, NULL);
    }
    return NULL;
}

/* In a fork child: the detector must still work (T1 reads R, blocks on M held by main; main's
 * wrlock(R) is EDEADLK), fresh threads reuse recycled records, the dump works. */
static surelock_rwlock *cR;
static surelock_mutex *cM;
static _Atomic pid_t c_tid;
static _Atomic int c_phase;
static void *child_t1(void *arg)
{
    (void)arg;
    surelock_rwlock *p[12];
    for (int i = 0; i < 12; i++) {
        CHECK(surelock_rwlock_new(&p[i]) == 0, "new");
        CHECK(surelock_rwlock_rdlock(p[i]) == 0, "rd");
    }
    CHECK(surelock_rwlock_rdlock(cR) == 0, "rd cR");
    c_tid = gettid();
    c_phase = 1;
    CHECK(surelock_mutex_lock(cM) == 0, "child T1 lock cM");
    surelock_mutex_unlock(cM);
    surelock_rwlock_unlock(cR);
    return NULL; /* exits holding p[]: drained */
}

static int child_main(void)
{
    alarm(20);
    CHECK(surelock_rwlock_new(&cR) == 0, "new");
    CHECK(surelock_mutex_new(&cM) == 0, "new");
    CHECK(surelock_mutex_lock(cM) == 0, "lock");
    pthread_t t;
    pthread_create(&t, NULL, child_t1, NULL);
    while (!c_phase) sleep_ms(1);
    wait_sleeping(c_tid);
    CHECK(surelock_dump_waits(devnull) == 0, "dump");
    int rc = surelock_rwlock_wrlock(cR);
    CHECK(rc == EDEADLK, "child: wrlock gave %d, expected EDEADLK", rc);
    surelock_mutex_unlock(cM);
    pthread_join(t, NULL);
    CHECK(surelock_rwlock_wrlock(cR) == 0, "child: wrlock after");
    surelock_rwlock_unlock(cR);
    return 0;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    int forks = argc > 2 ? atoi(argv[2]) : 1;
    alarm(seconds + 60);
    devnull = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 6; i++) CHECK(surelock_rwlock_new(&rw[i]) == 0, "new");
    for (int i = 0; i < 4; i++) CHECK(surelock_mutex_new(&mx[i]) == 0, "new");
    pthread_t w[WORKERS], d;
    for (long i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, forever_worker, (void *)i);
    pthread_create(&d, NULL, dumper, NULL);
    double end = now_s() + seconds;
    int children = 0, bad = 0;
    while (now_s() < end) {
        if (!forks) {
            sleep_ms(50);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) _exit(child_main());
        int st;
        CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
        children++;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad++;
            fprintf(stderr, "child %d: %s %d\n", pid, WIFSIGNALED(st) ? "signal" : "exit",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
        sleep_ms(20);
    }
    stop = 1;
    for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
    pthread_join(d, NULL);
    printf("acquisitions %ld, false EDEADLK %ld, children %d, bad children %d\n",
           (long)acquisitions, (long)false_deadlocks, children, bad);
    return false_deadlocks || bad ? 1 : 0;
}
