/* Shared helpers for the review attack programs (not built by meson; see README in report). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "surelock.h"

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                  \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fprintf(stderr, " [errmsg: %s]\n", surelock_errmsg());                                \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

static inline void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static inline double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Whether thread tid is asleep (state S) per /proc. */
static inline int thread_sleeping(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == 'S';
}

static inline void wait_sleeping(pid_t tid)
{
    double end = now_s() + 20;
    while (!thread_sleeping(tid)) {
        CHECK(now_s() < end, "thread %d never went to sleep", (int)tid);
        sleep_ms(1);
    }
    sleep_ms(20); /* and stays asleep (past any spin) */
    while (!thread_sleeping(tid)) {
        CHECK(now_s() < end, "thread %d never went to sleep", (int)tid);
        sleep_ms(1);
    }
}
