/* Attack 3b (internal build): the out-of-memory settling pass. 200 async waiters of 1 permit
 * each queue on an empty semaphore; a fresh thread (no record, no dispatch queue) releases
 * 200 permits with the next allocation failing (its record or its dispatch queue). Every
 * callback must run exactly once, in FIFO order; callbacks release and re-acquire (nested
 * passes); the last one frees the semaphore. Repeated with the failure at each of the first
 * few allocations. */
#include "common.h"
#include "sys/testing.h"

#define N 200
static surelock_sem *S;
static surelock_waiter w[N];
static int order[N], fired[N];
static _Atomic int next_slot;
static int ctxs[N];
static long fail_at;

static void cb(void *ctx, int status)
{
    int i = *(int *)ctx;
    CHECK(status == 0, "status %d", status);
    CHECK(fired[i] == 0, "callback %d ran twice", i);
    fired[i] = 1;
    order[next_slot++] = i;
    if (i == N - 1) {
        /* the last: everything granted; give all back, then free */
        CHECK(surelock_sem_release(S, N) == 0, "release all");
        int rc = surelock_sem_free(S);
        CHECK(rc == 0, "free in last callback: %d", rc);
        S = NULL;
    }
}

static void *releaser(void *arg)
{
    (void)arg;
    surelock_testing_fail_allocation_after(fail_at);
    CHECK(surelock_sem_release(S, N) == 0, "release");
    surelock_testing_fail_allocation_after(-1);
    return NULL;
}

int main(void)
{
    alarm(60);
    for (fail_at = 0; fail_at < 6; fail_at++) {
        surelock_testing_forget_finished_thread_records();
        CHECK(surelock_sem_new(0, &S) == 0, "new");
        memset(fired, 0, sizeof fired);
        next_slot = 0;
        for (int i = 0; i < N; i++) {
            ctxs[i] = i;
            CHECK(surelock_sem_acquire_async(S, 1, &w[i], cb, &ctxs[i]) == EINPROGRESS, "async");
        }
        pthread_t t;
        pthread_create(&t, NULL, releaser, NULL);
        pthread_join(t, NULL);
        CHECK(next_slot == N, "fail_at %ld: %d of %d callbacks ran", fail_at, next_slot, N);
        for (int i = 0; i < N; i++)
            CHECK(order[i] == i, "fail_at %ld: callback %d ran at position %d", fail_at, order[i], i);
        CHECK(S == NULL, "not freed");
        printf("fail_at %ld ok\n", fail_at);
    }
    return 0;
}
