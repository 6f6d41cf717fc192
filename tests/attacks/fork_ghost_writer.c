/* Attack 2b: fork while another thread WAITS to write an rwlock that the forking thread
 * reads. In the child, the forking thread unlocks it: nobody holds it, yet the parent's
 * waiting writer is still counted in the child's copy of the state word, and writer
 * preference keeps every reader out for ever (there is no such writer in the child). A
 * timed read in the child shows it (ETIMEDOUT on a lock nobody holds); a blocking one hangs.
 * Same with the detector: the ghost writer is not registered in the child, so no EDEADLK. */
#include "common.h"

static surelock_rwlock *R;
static _Atomic pid_t w_tid;

static void *writer(void *arg)
{
    (void)arg;
    w_tid = gettid();
    CHECK(surelock_rwlock_wrlock(R) == 0, "writer");
    surelock_rwlock_unlock(R);
    return NULL;
}

int main(void)
{
    alarm(30);
    CHECK(surelock_rwlock_new(&R) == 0, "new");
    CHECK(surelock_rwlock_rdlock(R) == 0, "rdlock");
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    while (!w_tid) sleep_ms(1);
    wait_sleeping(w_tid);
    pid_t pid = fork();
    if (pid == 0) {
        CHECK(surelock_rwlock_unlock(R) == 0, "child unlock"); /* the child's own hold */
        int rc = surelock_rwlock_timedrdlock(R, 500ull * 1000 * 1000);
        printf("child: nobody holds R; timedrdlock(500 ms) = %d (%s)\n", rc,
               rc ? surelock_errmsg() : "ok");
        int rc2 = surelock_rwlock_trywrlock(R);
        printf("child: trywrlock = %d%s\n", rc2, rc2 == 0 ? " (so nobody held it)" : "");
        fflush(stdout);
        _exit(rc == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(surelock_rwlock_unlock(R) == 0, "parent unlock");
    pthread_join(w, NULL);
    printf("child exit %d\n", WEXITSTATUS(st));
    return WEXITSTATUS(st);
}
