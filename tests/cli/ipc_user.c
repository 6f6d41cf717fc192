/*
 * ipc_user: a test helper (not installed) that uses a lock file the way a program linked with
 * libsurelock would, for the CLI tests:
 *
 *   ipc_user unrepaired LOCKFILE
 *       takes the lock, expects EOWNERDEAD, and unlocks without surelock_ipc_consistent:
 *       the lock is then not recoverable for every process.
 *   ipc_user hold-open LOCKFILE READY RELEASE
 *       keeps a handle open (without locking) until the file RELEASE exists, at most 30 s;
 *       creates READY once the handle is open.
 *
 * Exits 0 when everything went as described, 1 otherwise (with surelock_errmsg()), 2 on bad
 * usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <surelock.h>

static int failed(const char *what, int rc)
{
    fprintf(stderr, "ipc_user: %s returned %d (%s): %s\n", what, rc, strerror(rc),
            surelock_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    surelock_ipc *lock;
    int rc;
    if (argc == 3 && strcmp(argv[1], "unrepaired") == 0) {
        if ((rc = surelock_ipc_open(argv[2], NULL, &lock)) != 0) return failed("open", rc);
        if ((rc = surelock_ipc_lock(lock)) != EOWNERDEAD) return failed("lock (want EOWNERDEAD)", rc);
        if ((rc = surelock_ipc_unlock(lock)) != 0) return failed("unlock", rc);
        if ((rc = surelock_ipc_close(lock)) != 0) return failed("close", rc);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "hold-open") == 0) {
        if ((rc = surelock_ipc_open(argv[2], NULL, &lock)) != 0) return failed("open", rc);
        FILE *ready = fopen(argv[3], "w");
        if (ready == NULL || fputs("ready\n", ready) < 0 || fclose(ready) != 0) return 1;
        const struct timespec pause = {0, 20 * 1000 * 1000};
        for (int i = 0; i < 1500 && access(argv[4], F_OK) != 0; i++) nanosleep(&pause, NULL);
        if ((rc = surelock_ipc_close(lock)) != 0) return failed("close", rc);
        return 0;
    }
    fprintf(stderr, "usage: ipc_user unrepaired LOCKFILE | hold-open LOCKFILE READY RELEASE\n");
    return 2;
}
