/*
 * A program that uses libsurelock the way an outside project does: through the installed
 * <surelock.h> and `pkg-config --cflags --libs surelock`. It must compile cleanly as C99
 * (gcc -std=c99 -pedantic -Werror) and as C++ (g++ -x c++), and run against the installed
 * libsurelock.so.1. tests/consumer/check_installed.sh does all three.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <surelock.h>

static int failures;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "consumer: %s:%d: %s failed (errmsg: \"%s\")\n", __FILE__,     \
                    __LINE__, #cond, surelock_errmsg());                                   \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static void on_granted(void *ctx, int status)
{
    *(int *)ctx = status == 0 ? 1 : -1;
}

static void version(void)
{
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", SURELOCK_VERSION_MAJOR, SURELOCK_VERSION_MINOR,
             SURELOCK_VERSION_PATCH);
    printf("consumer: header %s, library %s\n", header, surelock_version());
    CHECK(strcmp(surelock_version(), header) == 0);
}

static void errmsg(void)
{
    CHECK(surelock_errmsg() != NULL);
    CHECK(surelock_mutex_lock(NULL) == EINVAL);
    CHECK(surelock_errmsg()[0] != '\0');
}

/* The guard every user of the thread-unsafe libfoo shares, re-entered by a callback. */
static void rlock_global(void)
{
    surelock_rlock *g = NULL, *again = NULL;
    CHECK(surelock_rlock_global("libfoo.so.3", &g) == 0);
    CHECK(surelock_rlock_global("libfoo.so.3", &again) == 0 && again == g);
    CHECK(surelock_rlock_lock(g) == 0);
    CHECK(surelock_rlock_timedlock(g, SURELOCK_FOREVER) == 0);
    CHECK(surelock_rlock_depth(g) == 2);
    CHECK(surelock_rlock_unlock(g) == 0);
    CHECK(surelock_rlock_unlock(g) == 0);
    CHECK(surelock_rlock_unlock(g) == EPERM);
    CHECK(surelock_rlock_free(g) == EPERM); /* process-wide guards are never freed */
}

static void mutex(void)
{
    surelock_mutex *m = NULL;
    CHECK(surelock_mutex_new(&m) == 0);
    CHECK(surelock_mutex_lock(m) == 0);
    CHECK(surelock_mutex_lock(m) == EDEADLK); /* error-checking, never a hang */
    CHECK(surelock_mutex_free(m) == EBUSY);
    CHECK(surelock_mutex_unlock(m) == 0);
    CHECK(surelock_mutex_free(m) == 0);
}

/* A robust cross-process lock with a payload, and a group holding it with a mutex. */
static void ipc_and_group(void)
{
    char dir[] = "/tmp/surelock-consumer-XXXXXX";
    char path[sizeof dir + 16];
    if (mkdtemp(dir) == NULL) {
        perror("consumer: mkdtemp");
        failures++;
        return;
    }
    snprintf(path, sizeof path, "%s/demo.lock", dir);

    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.payload_size = 64;
    surelock_ipc *ipc = NULL;
    surelock_mutex *m = NULL;
    surelock_group *g = NULL;
    CHECK(surelock_ipc_open(path, &o, &ipc) == 0);
    CHECK(surelock_mutex_new(&m) == 0);
    CHECK(surelock_group_new(&g) == 0);
    if (ipc != NULL && m != NULL && g != NULL) {
        CHECK(surelock_group_add_mutex(g, m) == 0);
        CHECK(surelock_group_add_ipc(g, ipc) == 0);
        CHECK(surelock_group_add_ipc(g, ipc) == EEXIST);
        CHECK(surelock_group_size(g) == 2);

        int rc = surelock_group_lock(g);
        CHECK(rc == 0 || rc == EOWNERDEAD);
        size_t size = 0;
        char *payload = (char *)surelock_ipc_payload(ipc, &size);
        CHECK(payload != NULL && size >= 64);
        if (payload != NULL) strcpy(payload, "written under the group");
        CHECK(surelock_group_unlock(g) == 0);

        CHECK(surelock_mutex_lock(m) == 0);
        CHECK(surelock_group_lock(g) == EDEADLK); /* a member is held: nothing acquired */
        CHECK(surelock_mutex_unlock(m) == 0);

        CHECK(surelock_ipc_timedlock(ipc, 1000000000u) == 0);
        CHECK(surelock_ipc_needs_recovery(ipc) == 0);
        CHECK(payload != NULL && strcmp(payload, "written under the group") == 0);
        CHECK(surelock_ipc_unlock(ipc) == 0);
    }
    CHECK(surelock_group_free(g) == 0);
    CHECK(surelock_mutex_free(m) == 0);
    CHECK(surelock_ipc_close(ipc) == 0);
    CHECK(surelock_ipc_unlink(path) == 0);
    rmdir(dir);
}

/* The async FIFO mutex: a queued waiter's callback runs when the holder unlocks. */
static void amutex(void)
{
    surelock_amutex *m = NULL;
    surelock_waiter w;
    int granted = 0;
    CHECK(surelock_amutex_new(&m) == 0);
    CHECK(surelock_amutex_lock(m) == 0);
    CHECK(surelock_amutex_lock_async(m, &w, on_granted, &granted) == EINPROGRESS);
    CHECK(granted == 0);
    CHECK(surelock_amutex_trylock(m) == EBUSY); /* nobody overtakes a queued waiter */
    CHECK(surelock_amutex_unlock(m) == 0);      /* hands the lock to the waiter */
    CHECK(granted == 1);
    CHECK(surelock_amutex_unlock(m) == 0);      /* the waiter's unlock */
    CHECK(surelock_amutex_free(m) == 0);
}

int main(void)
{
    version();
    errmsg();
    rlock_global();
    mutex();
    ipc_and_group();
    amutex();
    if (failures != 0) {
        fprintf(stderr, "consumer: %d check(s) failed\n", failures);
        return 1;
    }
    printf("consumer: all checks passed\n");
    return 0;
}
