/* Attack 1c: a FALSE EDEADLK for a reader. The detector treats a thread waiting to READ an
 * rwlock as waiting for the rwlock's current readers. A reader only ever waits for a writer
 * (holding, or waiting: writer preference); readers never block readers. So:
 *   T1 reads R, then blocks on mutex M held by main.
 *   W  waits to write R with a timeout (counted as a waiting writer: new readers stay out).
 *   main (holding M) calls timedrdlock(R): its try fails because W waits; between that try
 *   and the detector's walk, W times out and returns (here made certain by holding main in
 *   the clock read that Deadline::after does right between the two).
 * When the walk runs, R is read-held by T1 only and no writer waits or holds: main's read
 * would be admitted at once, and no cycle exists. Expected 0 (and main reads R). The bug
 * gives EDEADLK naming "main waits for rwlock held by T1, which waits for mutex held by main". */
#include "common.h"
#include <sys/syscall.h>

static surelock_rwlock *R;
static surelock_mutex *M;
static _Atomic pid_t t1_tid, w_tid, armed_tid;
static _Atomic int phase, w_done, t1_rc = -1;

/* Interposes libc's clock_gettime for libsurelock (PLT): the armed thread's first call,
 * which is Deadline::after in the rwlock's wait_to_acquire (after its try failed, before
 * begin_wait), waits until the writer's timed call has returned. */
int clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (armed_tid != 0 && gettid() == armed_tid) {
        armed_tid = 0;
        while (!w_done) {
            struct timespec p = {0, 1000000};
            syscall(SYS_nanosleep, &p, NULL);
        }
    }
    return (int)syscall(SYS_clock_gettime, clk, ts);
}

static void *t1_body(void *arg)
{
    (void)arg;
    t1_tid = gettid();
    CHECK(surelock_rwlock_rdlock(R) == 0, "T1 rdlock");
    phase = 1;
    t1_rc = surelock_mutex_lock(M);
    if (t1_rc == 0) surelock_mutex_unlock(M);
    surelock_rwlock_unlock(R);
    return NULL;
}

static void *w_body(void *arg)
{
    (void)arg;
    w_tid = gettid();
    int rc = surelock_rwlock_timedwrlock(R, 300ull * 1000 * 1000); /* 300 ms */
    CHECK(rc == ETIMEDOUT, "writer: %d", rc);
    w_done = 1;
    return NULL;
}

int main(void)
{
    alarm(30);
    CHECK(surelock_rwlock_new(&R) == 0, "new");
    CHECK(surelock_mutex_new(&M) == 0, "new");
    CHECK(surelock_mutex_lock(M) == 0, "lock M");
    pthread_t t1, w;
    pthread_create(&t1, NULL, t1_body, NULL);
    while (!phase) sleep_ms(1);
    wait_sleeping(t1_tid);
    pthread_create(&w, NULL, w_body, NULL);
    while (!w_tid) sleep_ms(1);
    wait_sleeping(w_tid); /* counted as a waiting writer, asleep */
    armed_tid = gettid();
    int rc = surelock_rwlock_timedrdlock(R, 5ull * 1000 * 1000 * 1000);
    printf("timedrdlock: %d (%s)%s\n", rc, rc ? surelock_errmsg() : "ok",
           rc == EDEADLK ? "  <-- FALSE EDEADLK: no writer waits, R is only read-held" : "");
    if (rc == 0) surelock_rwlock_unlock(R);
    surelock_mutex_unlock(M);
    pthread_join(t1, NULL);
    pthread_join(w, NULL);
    CHECK(t1_rc == 0, "T1 lock M: %d", t1_rc);
    return rc == 0 ? 0 : 1;
}
