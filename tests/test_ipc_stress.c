/*
 * test_ipc_stress.c — the robust cross-process mutex under many processes at once, and under
 * openers SIGKILLed at random points (issue 9, "the method"). Registered in the `slow` suite,
 * which CI runs in every build (plain, ASan+UBSan, TSan):
 *  - 8 processes open one fresh path at the same moment, lock it, count, close: 1000 rounds,
 *    0 failures (a false EPROTO, a second file, a lost count or a wait past open's bound all
 *    fail the round);
 *  - an opener is SIGKILLed 0-500 us after it starts (mid-open, mid-creation, mid-lock): the
 *    next opener must succeed within open's bound, and the lock must still be one lock.
 * Same rules and fixtures as every ipc test (support/ipc_file.h, support/ipc_holder.h); its
 * children die of SIGALRM only after 600 s (CHILD_ALARM_S, set in tests/meson.build): a whole
 * run of rounds, under sanitizers, on a loaded machine.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

#define OPENERS 8
#ifndef ROUNDS
#define ROUNDS 1000
#endif
#define KILL_ROUNDS 300 /* a multiple of 3 */
/* open's own bound is 5 s; this is "it returned at all" for one round. */
#define ROUND_LIMIT_MS 20000

/* ---- 8 openers of one fresh path, many rounds --------------------------------------------- */

/* Shared (MAP_SHARED | MAP_ANONYMOUS) between the test and its long-lived opener processes. */
struct board {
    atomic_int round;           /* the test raises it: everybody opens "round-N" at once */
    atomic_int ready;           /* openers waiting at the current round's start */
    atomic_int done[OPENERS];   /* the last round each opener finished */
    int rc[OPENERS];            /* its result (written before done) */
    char errmsg[OPENERS][256];
    char dir[64];
};
static struct board *board;

static void round_path(char *out, size_t size, int round)
{
    snprintf(out, size, "%s/round-%d", board->dir, round);
}

/* One round of one opener: open the round's fresh path, count under the lock, close. */
static int one_round(int round)
{
    char path[128];
    round_path(path, sizeof path, round);
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.payload_size = sizeof(uint64_t);
    surelock_ipc *m;
    int rc = surelock_ipc_open(path, &o, &m);
    if (rc != 0) return rc;
    volatile uint64_t *counter = surelock_ipc_payload(m, NULL);
    rc = surelock_ipc_lock(m);
    if (rc != 0) {
        surelock_ipc_close(m);
        return rc == EOWNERDEAD ? EPROTO : rc; /* nobody died: a death would be a bug */
    }
    uint64_t v = *counter;
    sched_yield();
    *counter = v + 1;
    rc = surelock_ipc_unlock(m);
    int closed = surelock_ipc_close(m);
    return rc != 0 ? rc : closed;
}

static int opener_main(void *p)
{
    int me = (int)(intptr_t)p;
    for (int round = 1; round <= ROUNDS; round++) {
        atomic_fetch_add(&board->ready, 1);
        uint64_t t0 = now_ns();
        while (atomic_load(&board->round) < round) { /* the start: all at once */
            if (now_ns() - t0 > (uint64_t)ROUND_LIMIT_MS * MS) return 2;
            sched_yield();
        }
        /* Each round in a process of its own that then exits and is reaped: a holder's TID
         * vanishes right after its release (the race behind a false "corrupt" EPROTO). A
         * process, not a thread: ThreadSanitizer allows no new thread in a fork child. */
        pid_t worker = fork();
        if (worker == 0) {
            int rc = one_round(round);
            if (rc != 0)
                snprintf(board->errmsg[me], sizeof board->errmsg[me], "%s", surelock_errmsg());
            _exit(rc);
        }
        int status = 0;
        if (worker < 0 || waitpid(worker, &status, 0) != worker) return 3;
        board->rc[me] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        atomic_store(&board->done[me], round);
    }
    return 0;
}

static void eight_processes_opening_one_fresh_path_at_once_never_fail_in_1000_rounds(void **state)
{
    (void)state;
    board = mmap(NULL, sizeof *board, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(board != MAP_FAILED);
    memset(board, 0, sizeof *board);
    snprintf(board->dir, sizeof board->dir, "%s", test_dir);
    pid_t pids[OPENERS];
    for (int i = 0; i < OPENERS; i++)
        pids[i] = spawn(opener_main, (void *)(intptr_t)i);
    int failures = 0;
    char first_failure[512] = "";
    for (int round = 1; round <= ROUNDS; round++) {
        uint64_t t0 = now_ns();
        while (atomic_load(&board->ready) < OPENERS * round) {
            if (now_ns() - t0 > (uint64_t)ROUND_LIMIT_MS * MS)
                fail_msg("round %d: only %d openers reached the start", round,
                         atomic_load(&board->ready) - OPENERS * (round - 1));
            sched_yield();
        }
        atomic_store(&board->round, round); /* go */
        for (int i = 0; i < OPENERS; i++) {
            while (atomic_load(&board->done[i]) < round) {
                if (now_ns() - t0 > (uint64_t)ROUND_LIMIT_MS * MS)
                    fail_msg("round %d: opener %d did not finish within %d ms", round, i,
                             ROUND_LIMIT_MS);
                sched_yield();
            }
            if (board->rc[i] != 0 && failures++ == 0)
                snprintf(first_failure, sizeof first_failure, "round %d, opener %d: %s: %s",
                         round, i, errname(board->rc[i]), board->errmsg[i]);
        }
        if (failures != 0)
            fail_msg("%d of the %d opens failed in %d rounds; the first: %s", failures,
                     OPENERS * round, round, first_failure);
        char path[128];
        round_path(path, sizeof path, round);
        surelock_ipc_options o;
        surelock_ipc_options_init(&o);
        o.flags = SURELOCK_IPC_NOCREATE;
        surelock_ipc *m;
        EXPECT_RC(surelock_ipc_open(path, &o, &m), 0);
        uint64_t *counter = surelock_ipc_payload(m, NULL);
        assert_non_null(counter);
        if (*counter != OPENERS)
            fail_msg("round %d: the count is %llu, expected %d: two files, or two holders",
                     round, (unsigned long long)*counter, OPENERS);
        EXPECT_RC(surelock_ipc_close(m), 0);
        EXPECT_RC(surelock_ipc_unlink(path), 0);
    }
    for (int i = 0; i < OPENERS; i++) child_expect_ok_at(__LINE__, pids[i], WAIT_LIMIT_MS);
    assert_int_equal(entries_in_test_dir(), 0); /* no file left under any other name */
    munmap(board, sizeof *board);
}

/* ---- openers killed at random points ------------------------------------------------------- */

static const char *victim_path;

/* Opens, locks, unlocks, closes, again and again, until it is killed. */
static int victim_main(void *p)
{
    (void)p;
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.payload_size = 64;
    for (;;) {
        surelock_ipc *m;
        int rc = surelock_ipc_open(victim_path, &o, &m);
        CHILD_EXPECT_RC(rc, 0);
        rc = surelock_ipc_lock(m);
        if (rc == EOWNERDEAD) rc = surelock_ipc_consistent(m);
        CHILD_EXPECT_RC(rc, 0);
        CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
        CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    }
}

static unsigned xorshift(unsigned *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void openers_killed_at_random_points_never_block_or_break_the_next_opener(void **state)
{
    (void)state;
    unsigned seed = (unsigned)now_ns() | 1u;
    print_message("seed %u\n", seed);
    int deaths_seen = 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        /* A fresh path every 3 rounds (killed mid-creation), an empty placeholder every 3
         * (killed mid-initialisation in place), else an existing file (mid-open, mid-lock). */
        char name[32];
        snprintf(name, sizeof name, "lock-%d", round % 3 == 2 ? round - 1 : round);
        victim_path = P(name);
        if (round % 3 == 1) {
            int fd = open(victim_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
            assert_true(fd >= 0);
            close(fd);
        }
        pid_t victim = spawn(victim_main, NULL);
        sleep_us(xorshift(&seed) % 501);
        kill(victim, SIGKILL);
        int status = child_reap_at(__LINE__, victim, WAIT_LIMIT_MS);
        if (!WIFSIGNALED(status))
            fail_msg("round %d: the victim ended by itself (status 0x%x)", round, status);

        surelock_ipc_options o;
        surelock_ipc_options_init(&o);
        o.payload_size = 64;
        surelock_ipc *m = NULL;
        uint64_t t0 = now_ns();
        int rc = surelock_ipc_open(victim_path, &o, &m);
        uint64_t took = now_ns() - t0;
        if (rc != 0)
            fail_msg("round %d (seed %u): the next open returned %s: %s", round, seed,
                     errname(rc), surelock_errmsg());
        if (took > 5000 * MS + TIMED_WAIT_CEILING_NS)
            fail_msg("round %d: the next open took %llu ms", round,
                     (unsigned long long)(took / MS));
        rc = surelock_ipc_timedlock(m, 5000 * MS);
        if (rc == EOWNERDEAD) {
            deaths_seen++;
            EXPECT_RC(surelock_ipc_consistent(m), 0);
            rc = 0;
        }
        if (rc != 0)
            fail_msg("round %d (seed %u): lock after the kill returned %s: %s", round, seed,
                     errname(rc), surelock_errmsg());
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        EXPECT_RC(surelock_ipc_trylock(m), 0); /* one lock, free, and not "dead" again */
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        EXPECT_RC(surelock_ipc_close(m), 0);
    }
    /* Only the lock files: no half-made file under another name. */
    assert_int_equal(entries_in_test_dir(), KILL_ROUNDS / 3 * 2);
    print_message("%d rounds, %d deaths of a holder reported\n", KILL_ROUNDS, deaths_seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(eight_processes_opening_one_fresh_path_at_once_never_fail_in_1000_rounds),
        TEST(openers_killed_at_random_points_never_block_or_break_the_next_opener),
    };
    return cmocka_run_group_tests_name("ipc_stress", tests, ipc_group_setup, watchdog_stop);
}
