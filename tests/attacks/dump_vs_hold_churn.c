/* Attack 1d: surelock_dump_waits while other threads' read-hold sets grow (old tables freed)
 * and threads exit (tables freed) and allocate other things into the freed memory. The dump
 * copies a set's {slots, mask} through process_vm_readv and reads the slots: a stale copy
 * reads freed (reused) memory, whose words it takes for rwlock addresses. Under UBSan
 * (halt_on_error, as CI runs it) forming &lock->member.serial on such a misaligned "lock"
 * aborts. Usage: dump_vs_hold_churn SECONDS */
#include "common.h"

#define LOCKS 64
static surelock_rwlock *locks[LOCKS];
static _Atomic int stop;
static int devnull;

static void *churner(void *arg)
{
    (void)arg;
    for (int n = 5; n <= LOCKS; n *= 2) { /* grows 8 -> 16 -> ... -> 128 slots */
        for (int i = 0; i < n; i++) CHECK(surelock_rwlock_rdlock(locks[i]) == 0, "rd");
        /* malloc churn with odd-looking contents into whatever was just freed */
        for (int k = 0; k < 8; k++) {
            char *p = malloc(64 << (k % 4));
            memset(p, 0x5b + k, 64 << (k % 4));
            free(p);
        }
        for (int i = 0; i < n; i++) CHECK(surelock_rwlock_unlock(locks[i]) == 0, "un");
    }
    return NULL;
}

static void *spawner(void *arg)
{
    while (!stop) {
        pthread_t t;
        pthread_create(&t, NULL, churner, arg);
        pthread_join(t, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    alarm(seconds + 30);
    devnull = open("/dev/null", O_WRONLY);
    for (int i = 0; i < LOCKS; i++) CHECK(surelock_rwlock_new(&locks[i]) == 0, "new");
    pthread_t s[3];
    for (int i = 0; i < 3; i++) pthread_create(&s[i], NULL, spawner, NULL);
    double end = now_s() + seconds;
    long dumps = 0;
    while (now_s() < end) {
        CHECK(surelock_dump_waits(devnull) == 0, "dump");
        dumps++;
    }
    stop = 1;
    for (int i = 0; i < 3; i++) pthread_join(s[i], NULL);
    for (int i = 0; i < LOCKS; i++) CHECK(surelock_rwlock_free(locks[i]) == 0, "free");
    printf("dumps %ld: no fault\n", dumps);
    return 0;
}
