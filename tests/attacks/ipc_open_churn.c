/* Attack 4 (internal build): ipc open's live lock-word validation while the lock changes hands
 * constantly, with /proc/TID/maps unreadable for the openers (surelock_testing_ipc_proc_errno,
 * as under hidepid or for another user's process), and holders SIGKILLed while holding.
 * HOLDERS processes lock/unlock in a loop (some die holding); OPENERS processes open, lock,
 * check the payload counter, unlock, close, repeatedly. Any open error but EOWNERDEAD paths
 * is a failure: EPROTO (corrupt file) or ETIMEDOUT on a live, healthy lock is a false refusal.
 * Usage: ipc_open_churn SECONDS [proc_errno] */
#include "common.h"
#include "sys/testing.h"

#define HOLDERS 3
#define OPENERS 3
static char path[256];

static int open_it(surelock_ipc **m)
{
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.payload_size = 4096;
    return surelock_ipc_open(path, &o, m);
}

static int lock_it(surelock_ipc *m)
{
    int rc = surelock_ipc_lock(m);
    if (rc == EOWNERDEAD) {
        CHECK(surelock_ipc_consistent(m) == 0, "consistent");
        rc = 0;
    }
    return rc;
}

static void holder(int id, double end)
{
    alarm(60);
    surelock_ipc *m;
    int rc = open_it(&m);
    CHECK(rc == 0, "holder %d open: %d", id, rc);
    volatile long *counter = surelock_ipc_payload(m, NULL);
    while (now_s() < end) {
        CHECK(lock_it(m) == 0, "holder lock");
        long c = *counter;
        for (volatile int i = 0; i < 200; i++) {
        }
        *counter = c + 1;
        CHECK(surelock_ipc_unlock(m) == 0, "holder unlock");
    }
    _exit(0);
}

static void opener(int id, double end, int proc_errno)
{
    alarm(60);
    surelock_testing_ipc_proc_errno = proc_errno;
    long opens = 0;
    while (now_s() < end) {
        surelock_ipc *m;
        int rc = open_it(&m);
        CHECK(rc == 0, "opener %d open #%ld: %d", id, opens, rc);
        opens++;
        CHECK(lock_it(m) == 0, "opener lock");
        volatile long *counter = surelock_ipc_payload(m, NULL);
        (*counter)++;
        CHECK(surelock_ipc_unlock(m) == 0, "opener unlock");
        CHECK(surelock_ipc_close(m) == 0, "close");
    }
    printf("opener %d: %ld opens\n", id, opens);
    _exit(0);
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    int proc_errno = argc > 2 ? atoi(argv[2]) : EACCES;
    alarm(seconds + 90);
    snprintf(path, sizeof path, "/tmp/review2_ipc_%d.lock", getpid());
    double end = now_s() + seconds;
    pid_t pids[HOLDERS + OPENERS];
    for (int i = 0; i < HOLDERS; i++)
        if ((pids[i] = fork()) == 0) holder(i, end);
    for (int i = 0; i < OPENERS; i++)
        if ((pids[HOLDERS + i] = fork()) == 0) opener(i, end, proc_errno);
    /* Kill and restart holders at random while they hold or not. */
    unsigned seed = 1;
    int kills = 0, bad = 0;
    while (now_s() < end - 0.5) {
        sleep_ms(50 + rand_r(&seed) % 100);
        int i = rand_r(&seed) % HOLDERS;
        kill(pids[i], SIGKILL);
        int st;
        waitpid(pids[i], &st, 0);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) bad++;
        kills++;
        if ((pids[i] = fork()) == 0) holder(i, end);
    }
    for (int i = 0; i < HOLDERS + OPENERS; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad++;
            fprintf(stderr, "process %d: %s %d\n", i, WIFSIGNALED(st) ? "signal" : "exit",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
    }
    surelock_ipc_unlink(path);
    printf("kills %d, bad %d\n", kills, bad);
    return bad ? 1 : 0;
}
