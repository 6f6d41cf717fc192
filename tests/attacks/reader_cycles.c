/* Attack 1a: deadlock cycles through rwlock READ holds that live in a grown per-thread hold
 * set. T1 reads many rwlocks (its set grows past the inline table), reads R, then blocks on
 * mutex M held by main; main then wants R for writing: EDEADLK expected, exactly there.
 * Reverse order: main waits to write R first, then T1's lock(M) must be refused.
 * Also: a reader blocked behind a waiting writer (writer preference) closing a cycle. */
#include "common.h"

#define FILLERS 40
static surelock_rwlock *R, *fill[FILLERS];
static surelock_mutex *M;
static _Atomic pid_t t1_tid;
static _Atomic int t1_rc = -1, phase;

static void *t1_body(void *arg)
{
    (void)arg;
    t1_tid = gettid();
    for (int i = 0; i < FILLERS; i++) CHECK(surelock_rwlock_rdlock(fill[i]) == 0, "filler");
    CHECK(surelock_rwlock_rdlock(R) == 0, "rdlock R");
    phase = 1;
    int rc = surelock_mutex_lock(M);
    t1_rc = rc;
    if (rc == 0) surelock_mutex_unlock(M);
    else fprintf(stderr, "T1 lock(M): %d %s\n", rc, surelock_errmsg());
    surelock_rwlock_unlock(R);
    for (int i = 0; i < FILLERS; i++) surelock_rwlock_unlock(fill[i]);
    return NULL;
}

static _Atomic int w_rc = -1;
static _Atomic pid_t w_tid;
static void *writer_body(void *arg)
{
    (void)arg;
    w_tid = gettid();
    int rc = surelock_rwlock_wrlock(R);
    w_rc = rc;
    if (rc == 0) surelock_rwlock_unlock(R);
    return NULL;
}

static void *writer_holding_m(void *arg)
{
    (void)arg;
    CHECK(surelock_mutex_lock(M) == 0, "W lock M");
    w_tid = gettid();
    int rc = surelock_rwlock_wrlock(R);
    w_rc = rc;
    if (rc == 0) surelock_rwlock_unlock(R);
    surelock_mutex_unlock(M);
    return NULL;
}

int main(void)
{
    alarm(60);
    CHECK(surelock_rwlock_new(&R) == 0, "new");
    for (int i = 0; i < FILLERS; i++) CHECK(surelock_rwlock_new(&fill[i]) == 0, "new");
    CHECK(surelock_mutex_new(&M) == 0, "new");

    /* 1: T1 registered first, main closes the cycle with a write. */
    CHECK(surelock_mutex_lock(M) == 0, "lock M");
    pthread_t t;
    t1_rc = -1, phase = 0;
    pthread_create(&t, NULL, t1_body, NULL);
    while (phase == 0) sleep_ms(1);
    wait_sleeping(t1_tid);
    int rc = surelock_rwlock_wrlock(R);
    CHECK(rc == EDEADLK, "case 1: wrlock R gave %d, expected EDEADLK", rc);
    printf("case 1 ok: %s\n", surelock_errmsg());
    surelock_mutex_unlock(M);
    pthread_join(t, NULL);
    CHECK(t1_rc == 0, "case 1: T1 lock gave %d", t1_rc);

    /* 2: reverse order. Main reads R (set grown); helper W takes M and waits to write R;
     * main then locks M: its wait closes the cycle, EDEADLK. */
    for (int i = 0; i < FILLERS; i++) CHECK(surelock_rwlock_rdlock(fill[i]) == 0, "filler");
    CHECK(surelock_rwlock_rdlock(R) == 0, "rdlock R");
    pthread_t w, w2;
    w_tid = 0;
    w_rc = -1;
    pthread_create(&w2, NULL, writer_holding_m, NULL);
    while (w_tid == 0) sleep_ms(1);
    wait_sleeping(w_tid);
    rc = surelock_mutex_lock(M);
    CHECK(rc == EDEADLK, "case 2: lock M gave %d, expected EDEADLK", rc);
    printf("case 2 ok: %s\n", surelock_errmsg());
    CHECK(surelock_rwlock_unlock(R) == 0, "unlock R");
    pthread_join(w2, NULL);
    CHECK(w_rc == 0, "case 2: writer %d", w_rc);
    for (int i = 0; i < FILLERS; i++) surelock_rwlock_unlock(fill[i]);
    w_tid = 0;

    /* 3: writer preference. T1 reads R and blocks on M (held by main); a writer W waits for R
     * (forever); main then wants to READ R: blocked behind W, which waits for T1, which waits
     * for main. A real deadlock: EDEADLK expected. */
    CHECK(surelock_mutex_lock(M) == 0, "lock M");
    t1_rc = -1, phase = 0;
    pthread_create(&t, NULL, t1_body, NULL);
    while (phase == 0) sleep_ms(1);
    wait_sleeping(t1_tid);
    w_rc = -1;
    pthread_create(&w, NULL, writer_body, NULL);
    while (w_tid == 0) sleep_ms(1);
    wait_sleeping(w_tid);
    rc = surelock_rwlock_rdlock(R);
    CHECK(rc == EDEADLK, "case 3: rdlock R gave %d, expected EDEADLK", rc);
    printf("case 3 ok: %s\n", surelock_errmsg());
    surelock_mutex_unlock(M);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    CHECK(t1_rc == 0 && w_rc == 0, "case 3: T1 %d W %d", t1_rc, w_rc);
    puts("reader_cycles: all ok");
    return 0;
}
