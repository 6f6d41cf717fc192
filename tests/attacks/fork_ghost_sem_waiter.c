/* Attack 2c: fork while another thread is blocked in surelock_sem_acquire. The child's copy of
 * the queue still holds that thread's waiter (on a stack of a thread that does not exist in
 * the child). A release in the child grants its permit to the ghost: the permit is lost, and
 * the child's own acquire (FIFO behind nobody) times out on a semaphore it just released. */
#include "common.h"

static surelock_sem *S;
static _Atomic pid_t w_tid;

static void *waiter(void *arg)
{
    (void)arg;
    w_tid = gettid();
    CHECK(surelock_sem_acquire(S, 1) == 0, "waiter");
    return NULL;
}

int main(void)
{
    alarm(30);
    CHECK(surelock_sem_new(0, &S) == 0, "new");
    pthread_t w;
    pthread_create(&w, NULL, waiter, NULL);
    while (!w_tid) sleep_ms(1);
    wait_sleeping(w_tid);
    pid_t pid = fork();
    if (pid == 0) {
        CHECK(surelock_sem_release(S, 1) == 0, "child release");
        int rc = surelock_sem_timedacquire(S, 1, 500ull * 1000 * 1000);
        printf("child: released 1 permit, then timedacquire(1, 500 ms) = %d (%s); available %llu\n",
               rc, rc ? surelock_errmsg() : "ok", (unsigned long long)surelock_sem_available(S));
        fflush(stdout);
        _exit(rc == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(surelock_sem_release(S, 1) == 0, "parent release");
    pthread_join(w, NULL);
    printf("child exit %d\n", WEXITSTATUS(st));
    return WEXITSTATUS(st);
}
