/* Attack 2d: fork while other threads are inside the deadlock detector's graph spinlock, the
 * record free-list lock and contended waits, as often as possible. Four threads hammer two
 * mutexes with lock/unlock (every contended acquire registers and walks) while holding read
 * locks that grow their hold sets; threads exit and are replaced. Each child must: make a
 * contended wait (graph lock usable), get EDEADLK for a real reader cycle, dump, and exit 0
 * within its alarm. Usage: fork_graph_storm FORKS */
#include "common.h"

static surelock_mutex *hot[2];
static surelock_rwlock *reads[16];
static _Atomic int stop;
static int devnull;

static void *hammer(void *arg)
{
    long id = (long)arg;
    for (int round = 0; !stop && round < 2000; round++) {
        for (int i = 0; i < 16; i++) CHECK(surelock_rwlock_rdlock(reads[i]) == 0, "rd");
        surelock_mutex *m = hot[(id + round) & 1];
        CHECK(surelock_mutex_lock(m) == 0, "lock");
        CHECK(surelock_mutex_unlock(m) == 0, "unlock");
        for (int i = 15; i >= 0; i--) CHECK(surelock_rwlock_unlock(reads[i]) == 0, "unrd");
    }
    return NULL;
}

static void *respawn(void *arg)
{
    while (!stop) {
        pthread_t t;
        pthread_create(&t, NULL, hammer, arg);
        pthread_join(t, NULL);
    }
    return NULL;
}

static surelock_rwlock *cR;
static surelock_mutex *cM;
static _Atomic pid_t c_tid;
static void *child_reader(void *arg)
{
    (void)arg;
    CHECK(surelock_rwlock_rdlock(cR) == 0, "child rd");
    c_tid = gettid();
    CHECK(surelock_mutex_lock(cM) == 0, "child lock");
    surelock_mutex_unlock(cM);
    surelock_rwlock_unlock(cR);
    return NULL;
}

static int child(void)
{
    alarm(60);
    CHECK(surelock_rwlock_new(&cR) == 0, "new");
    CHECK(surelock_mutex_new(&cM) == 0, "new");
    CHECK(surelock_mutex_lock(cM) == 0, "lock");
    pthread_t t;
    pthread_create(&t, NULL, child_reader, NULL);
    while (!c_tid) sleep_ms(1);
    wait_sleeping(c_tid);
    CHECK(surelock_rwlock_wrlock(cR) == EDEADLK, "child: no EDEADLK");
    CHECK(surelock_dump_waits(devnull) == 0, "dump");
    surelock_mutex_unlock(cM);
    pthread_join(t, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    alarm(forks / 2 + 60);
    devnull = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 2; i++) CHECK(surelock_mutex_new(&hot[i]) == 0, "new");
    for (int i = 0; i < 16; i++) CHECK(surelock_rwlock_new(&reads[i]) == 0, "new");
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, respawn, (void *)i);
    int bad = 0;
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) _exit(child());
        int st;
        double give_up = now_s() + 10;
        while (waitpid(pid, &st, WNOHANG) == 0) {
            if (now_s() > give_up) { /* hung: show where, then kill */
                char cmd[128];
                snprintf(cmd, sizeof cmd, "gdb -p %d -batch -ex 'thread apply all bt' 2>&1 | grep -E '^#|^Thread' >&2", pid);
                fprintf(stderr, "fork %d: child %d hung:\n", f, pid);
                if (system(cmd) != 0) fprintf(stderr, "(no gdb)\n");
                kill(pid, SIGKILL);
                give_up = 1e300;
            }
            sleep_ms(5);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad++;
            fprintf(stderr, "fork %d: %s %d\n", f, WIFSIGNALED(st) ? "signal" : "exit",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
    }
    stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("forks %d, bad %d\n", forks, bad);
    return bad != 0;
}
