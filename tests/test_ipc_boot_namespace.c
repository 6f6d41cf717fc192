/*
 * test_ipc_boot_namespace.c — an opener in a mount namespace whose /proc shows another boot id
 * (issue 9, item 1). Such an opener sees "a file from an earlier boot"; the library must not
 * reset the mutex while another process has the file open (and holds it): two holders at once.
 *
 * Needs root (unshare(CLONE_NEWNS) and a bind mount over /proc/sys/kernel/random/boot_id);
 * elsewhere it exits 77, which meson reports as skipped. Plain C without CMocka: one scenario,
 * in forked children that report through pipes; every wait is bounded (children die of
 * SIGALRM, the parent waits for them with a limit), so a broken library fails, never hangs.
 *
 *   holder:   a process of the normal namespace that opens and locks the file.
 *   stranger: a process in its own mount namespace with a fake boot id, which opens the file
 *             while the holder holds it (must get EBUSY from trylock: one holder), then takes it
 *             once the holder lets go (0, not EOWNERDEAD), and, when nobody else has it open,
 *             resets it as a file of "its" boot.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <surelock.h>

#define SKIP 77
#define LIMIT_MS 20000
#define OFF_BOOT_ID 40
static const char fake_boot_id[] = "5ca1ab1e-0000-4000-8000-00000000b007";

static char dir[256];
static char path[300];

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%d: line %d: check failed: %s (errno %s; errmsg \"%s\")\n",       \
                    (int)getpid(), __LINE__, #cond, strerror(errno), surelock_errmsg());       \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

static bool send_byte(int fd, char c)
{
    return write(fd, &c, 1) == 1;
}

/* One byte within LIMIT_MS, or 0. */
static char recv_byte(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    char c = 0;
    if (poll(&p, 1, LIMIT_MS) == 1 && read(fd, &c, 1) == 1) return c;
    return 0;
}

static void file_boot_id(char out[40])
{
    memset(out, 0, 40);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (pread(fd, out, 39, OFF_BOOT_ID) < 0) out[0] = '\0';
        close(fd);
    }
}

/* holder: locks, says 'H', unlocks when told, says 'U'. */
static int holder(int report, int orders)
{
    surelock_ipc *m;
    CHECK(surelock_ipc_open(path, NULL, &m) == 0);
    CHECK(surelock_ipc_lock(m) == 0);
    CHECK(send_byte(report, 'H'));
    CHECK(recv_byte(orders) == 'u');
    CHECK(surelock_ipc_unlock(m) == 0);
    CHECK(surelock_ipc_close(m) == 0);
    CHECK(send_byte(report, 'U'));
    return 0;
}

/* stranger: its own view of the boot id, then the scenario above. Says 'S' (skip) when the
 * namespace cannot be made, 'B' once it found the lock busy, 'D' when done. */
static int stranger(int report, int orders)
{
    char fake[300];
    snprintf(fake, sizeof fake, "%s/fake_boot_id", dir);
    int fd = open(fake, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, fake_boot_id, strlen(fake_boot_id)) == (ssize_t)strlen(fake_boot_id));
    CHECK(write(fd, "\n", 1) == 1);
    close(fd);
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(fake, "/proc/sys/kernel/random/boot_id", "none", MS_BIND, NULL) != 0) {
        fprintf(stderr, "cannot make a mount namespace with another boot id: %s\n",
                strerror(errno));
        send_byte(report, 'S');
        return SKIP;
    }
    char seen[40] = "";
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && read(fd, seen, 36) == 36);
    close(fd);
    CHECK(memcmp(seen, fake_boot_id, 36) == 0);

    char before[40], after[40];
    file_boot_id(before);
    surelock_ipc *m;
    CHECK(surelock_ipc_open(path, NULL, &m) == 0);
    CHECK(surelock_ipc_trylock(m) == EBUSY); /* the holder still holds it: no reset */
    file_boot_id(after);
    CHECK(memcmp(before, after, 40) == 0); /* used as it is */
    CHECK(send_byte(report, 'B'));
    CHECK(recv_byte(orders) == 'g'); /* the holder has unlocked */
    CHECK(surelock_ipc_timedlock(m, 5000000000ull) == 0); /* a plain release: not EOWNERDEAD */
    CHECK(surelock_ipc_unlock(m) == 0);
    CHECK(surelock_ipc_close(m) == 0);

    /* Open nowhere else: now it is reset, as a file of this namespace's boot. */
    CHECK(surelock_ipc_open(path, NULL, &m) == 0);
    file_boot_id(after);
    CHECK(memcmp(after, fake_boot_id, 36) == 0);
    CHECK(surelock_ipc_trylock(m) == 0);
    CHECK(surelock_ipc_unlock(m) == 0);
    CHECK(surelock_ipc_close(m) == 0);
    CHECK(send_byte(report, 'D'));
    return 0;
}

static pid_t spawn(int (*fn)(int, int), int report, int orders)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        _exit(fn(report, orders));
    }
    return pid;
}

/* Exit status of the child within LIMIT_MS; SIGKILLs it and returns -1 after that. */
static int reap(pid_t pid)
{
    for (int waited = 0; waited < LIMIT_MS; waited += 10) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int run(void)
{
    int h_report[2], h_orders[2], s_report[2], s_orders[2];
    if (pipe2(h_report, O_CLOEXEC) || pipe2(h_orders, O_CLOEXEC) || pipe2(s_report, O_CLOEXEC) ||
        pipe2(s_orders, O_CLOEXEC))
        return 1;
    pid_t h = spawn(holder, h_report[1], h_orders[0]);
    if (recv_byte(h_report[0]) != 'H') {
        fprintf(stderr, "the holder did not take the lock (exit %d)\n", reap(h));
        return 1;
    }
    pid_t s = spawn(stranger, s_report[1], s_orders[0]);
    char c = recv_byte(s_report[0]);
    if (c == 'S') {
        send_byte(h_orders[1], 'u');
        reap(h);
        reap(s);
        return SKIP;
    }
    if (c != 'B') {
        fprintf(stderr, "FAIL: the stranger did not find the lock held (exit %d): it reset a "
                        "lock another process holds\n",
                reap(s));
        send_byte(h_orders[1], 'u');
        reap(h);
        return 1;
    }
    send_byte(h_orders[1], 'u');
    if (recv_byte(h_report[0]) != 'U' || reap(h) != 0) {
        fprintf(stderr, "FAIL: the holder could not release its lock\n");
        reap(s);
        return 1;
    }
    send_byte(s_orders[1], 'g');
    if (recv_byte(s_report[0]) != 'D' || reap(s) != 0) {
        fprintf(stderr, "FAIL: the stranger could not take the released lock\n");
        return 1;
    }
    /* And back in this namespace: open nowhere, a file of "another boot" again, reset. */
    surelock_ipc *m;
    if (surelock_ipc_open(path, NULL, &m) != 0 || surelock_ipc_trylock(m) != 0 ||
        surelock_ipc_unlock(m) != 0 || surelock_ipc_close(m) != 0) {
        fprintf(stderr, "FAIL: reopening here: %s\n", surelock_errmsg());
        return 1;
    }
    char now[40];
    file_boot_id(now);
    if (memcmp(now, fake_boot_id, 36) == 0) {
        fprintf(stderr, "FAIL: the file kept the other namespace's boot id\n");
        return 1;
    }
    return 0;
}

int main(void)
{
    if (geteuid() != 0) {
        printf("not root: cannot make a mount namespace; skipped\n");
        return SKIP;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/surelock-test-ipc-ns-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/lock", dir);
    int rc = run();
    char fake[300];
    snprintf(fake, sizeof fake, "%s/fake_boot_id", dir);
    unlink(path);
    unlink(fake);
    rmdir(dir);
    printf("%s\n", rc == 0 ? "ok: no reset under a holder; one holder at a time"
                           : rc == SKIP ? "skipped" : "FAILED");
    return rc;
}
