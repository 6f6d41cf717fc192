/* Attack 3: sem/amutex spin-then-sleep waiters, timeouts racing grants, async waiters with
 * cancel racing the grant, callbacks that release at once (chains), and a final shutdown
 * while blocking waiters sleep and spin. Invariants: permits are conserved (available ends at
 * P), never more than P held, amutex excludes, every waiter returns (bounded by alarm).
 * Usage: sem_stress SECONDS */
#include "common.h"

#define P 4
#define THREADS 6
static surelock_sem *S;
static surelock_amutex *A;
static _Atomic long held, max_held, in_amutex, grants, timeouts, cancels_won, cancels_lost;
static _Atomic int stop;

static void take(long n)
{
    long h = held += n;
    CHECK(h <= P, "over-granted: %ld held of %d", h, P);
}

static void give(long n)
{
    held -= n;
    CHECK(surelock_sem_release(S, (uint64_t)n) == 0, "release");
}

struct async_ctx {
    _Atomic int fired;
    _Atomic int status;
    long n;
    int release_in_callback;
};

static void on_grant(void *ctx, int status)
{
    struct async_ctx *c = ctx;
    CHECK(c->fired == 0, "callback ran twice");
    c->status = status;
    if (status == 0) {
        take(c->n);
        grants++;
        if (c->release_in_callback) give(c->n);
    }
    c->fired = 1;
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    while (!stop) {
        long n = 1 + rnd(&seed) % 3;
        int kind = rnd(&seed) % 5;
        if (kind == 0) {
            uint64_t t = rnd(&seed) % 40000;
            int rc = surelock_sem_timedacquire(S, (uint64_t)n, t);
            if (rc == ECANCELED) break;
            if (rc == ETIMEDOUT) {
                timeouts++;
                continue;
            }
            CHECK(rc == 0, "timedacquire %d", rc);
            take(n);
            grants++;
            give(n);
        } else if (kind == 1) {
            int rc = surelock_sem_acquire(S, (uint64_t)n);
            if (rc == ECANCELED) break;
            CHECK(rc == 0, "acquire %d", rc);
            take(n);
            grants++;
            give(n);
        } else if (kind == 2) {
            surelock_waiter w;
            struct async_ctx c = {0, -1, n, (int)(rnd(&seed) % 2)};
            int rc = surelock_sem_acquire_async(S, (uint64_t)n, &w, on_grant, &c);
            if (rc == ECANCELED) break;
            if (rc == 0) {
                take(n);
                grants++;
                give(n);
                continue;
            }
            CHECK(rc == EINPROGRESS, "async %d", rc);
            if (rnd(&seed) % 2) {
                for (volatile int i = 0; i < (int)(rnd(&seed) % 2000); i++) {
                }
            }
            rc = surelock_sem_cancel(S, &w);
            if (rc == 0) {
                cancels_won++;
                CHECK(c.fired == 0, "cancel won but callback ran");
                continue;
            }
            cancels_lost++;
            if (rc == ECANCELED) {
                while (!c.fired) sched_yield();
                CHECK(c.status == ECANCELED, "status %d", c.status);
                break;
            }
            CHECK(rc == EALREADY, "cancel %d", rc);
            while (!c.fired) sched_yield();
            CHECK(c.status == 0, "status %d", c.status);
            if (!c.release_in_callback) give(n);
        } else if (kind == 3) {
            int rc = surelock_amutex_timedlock(A, rnd(&seed) % 30000);
            if (rc == ETIMEDOUT) continue;
            CHECK(rc == 0, "amutex timedlock %d", rc);
            CHECK(++in_amutex == 1, "amutex: two holders");
            in_amutex--;
            CHECK(surelock_amutex_unlock(A) == 0, "amutex unlock");
        } else {
            CHECK(surelock_amutex_lock(A) == 0, "amutex lock");
            CHECK(++in_amutex == 1, "amutex: two holders");
            in_amutex--;
            CHECK(surelock_amutex_unlock(A) == 0, "amutex unlock");
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    alarm(seconds + 60);
    CHECK(surelock_sem_new(P, &S) == 0, "new");
    CHECK(surelock_amutex_new(&A) == 0, "new");
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    sleep_ms(seconds * 1000L);
    /* Take every permit so that workers queue up and sleep, then shut down. */
    stop = 1;
    int rc = surelock_sem_acquire(S, P);
    CHECK(rc == 0, "final acquire %d", rc);
    take(P);
    sleep_ms(50);
    CHECK(surelock_sem_shutdown(S) == 0, "shutdown");
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    held -= P;
    CHECK(held == 0, "held %ld after join", (long)held);
    CHECK(surelock_sem_available(S) == 0, "available %llu", (unsigned long long)surelock_sem_available(S));
    CHECK(surelock_sem_release(S, P) == 0, "release after shutdown");
    CHECK(surelock_sem_available(S) == P, "available %llu, expected %d (permits lost)",
          (unsigned long long)surelock_sem_available(S), P);
    CHECK(surelock_sem_free(S) == 0, "free");
    CHECK(surelock_amutex_free(A) == 0, "amutex free");
    printf("grants %ld timeouts %ld cancels won %ld lost %ld\n", (long)grants, (long)timeouts,
           (long)cancels_won, (long)cancels_lost);
    return 0;
}
