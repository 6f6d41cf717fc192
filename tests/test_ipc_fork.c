/*
 * test_ipc_fork.c — the robust cross-process mutex (API.md section 4) across fork() and among
 * many processes: what a fork child may do with the handles and holds it inherits, a payload
 * shared between processes, and 8 processes racing to create one lock file and count in it.
 * Through the public header only, against the real shared libsurelock.so.1.
 * Fixtures and rules: support/ipc_file.h, support/ipc_holder.h.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

/* Bound on the 8-process races (16000 contended cross-process lock round trips). */
#define RACE_LIMIT_MS 90000

/* =========================================================================================
 * What a fork child inherits: handles, never holds
 * ========================================================================================= */

/* After fork(), the child's copy of the holding thread is not the owner (robust futexes go by
 * TID): it can neither release nor repair the parent's hold, and its attempts change nothing. */
static surelock_ipc *forked_handle;
static int child_tries_to_release_the_parents_hold(void *arg)
{
    (void)arg;
    CHILD_EXPECT_RC(surelock_ipc_needs_recovery(forked_handle), 0);
    CHILD_EXPECT_RC(surelock_ipc_consistent(forked_handle), EINVAL);
    CHILD_EXPECT_RC(surelock_ipc_unlock(forked_handle), EPERM);
    CHILD_EXPECT_RC(surelock_ipc_trylock(forked_handle), EBUSY);
    return 0;
}

static void a_forked_child_cannot_release_or_repair_its_parents_hold(void **state)
{
    (void)state;
    const char *path = P("forked");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    HOLDER_KILL(&h);
    EXPECT_RC(surelock_ipc_lock(m), EOWNERDEAD); /* we hold it, needing recovery */
    forked_handle = m;
    EXPECT_CHILD_OK(spawn(child_tries_to_release_the_parents_hold, NULL));
    assert_int_equal(file32(path, OFF_RECOVERY_STATE), RECOVERY_NEEDED);
    assert_int_equal(file32(path, OFF_HOLDER_TID), (uint32_t)current_tid());
    EXPECT_RC(surelock_ipc_needs_recovery(m), 1);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* A fork child inherits a handle its parent held; once the parent lets go, the child takes
 * the lock as a fresh acquisition (not a re-entry of the parent's hold) and can release it. */
static surelock_ipc *inherited_handle;
static int child_waits_then_locks(void *arg)
{
    int go = (int)(intptr_t)arg;
    CHILD_CHECK(recv_byte(go, (CHILD_ALARM_S - 5) * 1000u)); /* the parent has unlocked */
    surelock_ipc *m = inherited_handle;
    CHILD_EXPECT_RC(surelock_ipc_lock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void a_fork_child_takes_an_inherited_handle_afresh_once_the_parent_releases(void **state)
{
    (void)state;
    surelock_ipc *m = OPEN(P("lock"), 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    int go[2];
    make_pipe(go);
    inherited_handle = m;
    pid_t child = spawn(child_waits_then_locks, (void *)(intptr_t)go[0]);
    close(go[0]);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_true(send_byte(go[1]));
    close(go[1]);
    EXPECT_CHILD_OK(child);
    EXPECT_RC(surelock_ipc_timedlock(m, 5000 * MS), 0); /* the child let it go */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * Payload and processes
 * ========================================================================================= */

static struct payload_child {
    const char *path;
    size_t open_with;
    size_t expect_size;
    char expect[64];
    char write[64];
} payload_child;

static int payload_child_main(void *p)
{
    struct payload_child *a = p;
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, a->open_with);
    surelock_ipc *m;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, &o, &m), 0);
    size_t size = 0;
    char *payload = surelock_ipc_payload(m, &size);
    CHILD_CHECK(payload != NULL);
    CHILD_CHECK(size == a->expect_size);
    CHILD_EXPECT_RC(surelock_ipc_lock(m), 0);
    CHILD_CHECK(memcmp(payload, a->expect, sizeof a->expect) == 0);
    memcpy(payload, a->write, sizeof a->write);
    payload[size - 1] = 'E'; /* the last byte is writable too */
    CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void payload_is_shared_between_processes(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 100);
    size_t size = 0;
    char *payload = surelock_ipc_payload(m, &size);
    assert_non_null(payload);
    assert_int_equal(size, 100);
    assert_ptr_equal(surelock_ipc_payload(m, NULL), payload);

    /* The child writes; the parent reads. */
    memset(&payload_child, 0, sizeof payload_child);
    payload_child.path = path;
    payload_child.open_with = 0; /* as existing */
    payload_child.expect_size = 100;
    snprintf(payload_child.write, sizeof payload_child.write, "written by the child");
    EXPECT_CHILD_OK(spawn(payload_child_main, &payload_child));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_string_equal(payload, "written by the child");
    assert_int_equal(payload[99], 'E');
    /* The parent writes; a child that names the exact size reads it. */
    memset(payload, 0, 64);
    snprintf(payload, 64, "written by the parent");
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    memset(&payload_child, 0, sizeof payload_child);
    payload_child.path = path;
    payload_child.open_with = 100;
    payload_child.expect_size = 100;
    snprintf(payload_child.expect, sizeof payload_child.expect, "written by the parent");
    snprintf(payload_child.write, sizeof payload_child.write, "second child");
    EXPECT_CHILD_OK(spawn(payload_child_main, &payload_child));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_string_equal(payload, "second child");
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* The file size is the header plus the payload rounded up to pages. */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, file_size_for(100));
    m = OPEN(P("big"), 0, 0600, page_size() + 1);
    assert_int_equal(stat(P("big"), &st), 0);
    assert_int_equal(st.st_size, HEADER_SIZE + 2 * page_size());
    payload = surelock_ipc_payload(m, &size);
    assert_int_equal(size, page_size() + 1);
    payload[page_size()] = 1;
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* 8 processes race to open one fresh path and count in its payload to an exact total. */
#define RACERS 8
#define INCREMENTS 2000

static struct race {
    const char *path;
    int gate_r;  /* read end: EOF when the parent closes the write end = start */
    int gate_w;  /* closed by every child */
    int ready_w; /* each child writes one byte when it is at the gate */
} race;

static int racer_main(void *p)
{
    struct race *r = p;
    close(r->gate_w);
    CHILD_CHECK(send_byte(r->ready_w));
    char c;
    ssize_t n;
    while ((n = read(r->gate_r, &c, 1)) < 0 && errno == EINTR) {
    }
    CHILD_CHECK(n == 0); /* the gate opened (EOF) */
    surelock_ipc_options o = options(0, 0600, sizeof(uint64_t));
    surelock_ipc *m = NULL;
    CHILD_EXPECT_RC(surelock_ipc_open(r->path, &o, &m), 0);
    size_t size = 0;
    volatile uint64_t *counter = surelock_ipc_payload(m, &size);
    CHILD_CHECK(counter != NULL);
    CHILD_CHECK(size == sizeof(uint64_t));
    for (int i = 0; i < INCREMENTS; i++) {
        int rc;
        switch (i % 3) {
        case 0: rc = surelock_ipc_lock(m); break;
        case 1: rc = surelock_ipc_timedlock(m, 30000 * MS); break;
        default:
            rc = surelock_ipc_trylock(m);
            if (rc == EBUSY) rc = surelock_ipc_lock(m);
            break;
        }
        CHILD_EXPECT_RC(rc, 0);
        uint64_t v = *counter; /* a plain read-modify-write: only the lock keeps it exact */
        if (i % 64 == 0) sched_yield();
        *counter = v + 1;
        CHILD_EXPECT_RC(surelock_ipc_unlock(m), 0);
    }
    CHILD_EXPECT_RC(surelock_ipc_close(m), 0);
    return 0;
}

static void run_race(const char *path)
{
    int gate[2], ready[2];
    make_pipe(gate);
    make_pipe(ready);
    race = (struct race){path, gate[0], gate[1], ready[1]};
    pid_t pids[RACERS];
    for (int i = 0; i < RACERS; i++) pids[i] = spawn(racer_main, &race);
    close(ready[1]);
    close(gate[0]);
    int at_gate = 0;
    while (at_gate < RACERS && recv_byte(ready[0], WAIT_LIMIT_MS)) at_gate++;
    close(gate[1]); /* everyone goes at once */
    close(ready[0]);
    if (at_gate < RACERS) fail_msg("only %d of %d racers reached the gate", at_gate, RACERS);
    for (int i = 0; i < RACERS; i++) child_expect_ok_at(__LINE__, pids[i], RACE_LIMIT_MS);

    surelock_ipc *m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    size_t size = 0;
    uint64_t *counter = surelock_ipc_payload(m, &size);
    assert_non_null(counter);
    assert_int_equal(size, sizeof(uint64_t));
    EXPECT_RC(surelock_ipc_lock(m), 0);
    if (*counter != (uint64_t)RACERS * INCREMENTS)
        fail_msg("the shared counter is %llu, expected %d: some processes used another file or "
                 "the lock let two in",
                 (unsigned long long)*counter, RACERS * INCREMENTS);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    /* Exactly one file, nothing left behind in the directory. */
    assert_int_equal(entries_in_test_dir(), 1);
}

static void eight_processes_racing_to_create_a_fresh_path_count_to_an_exact_total(void **state)
{
    (void)state;
    run_race(P("fresh"));
}

static void eight_processes_racing_on_an_empty_placeholder_count_to_an_exact_total(void **state)
{
    (void)state;
    touch(P("placeholder"), 0600);
    run_race(P("placeholder"));
}

/* =========================================================================================
 * A fork child closing its parent's held handle (issue 9's review)
 * ========================================================================================= */

static surelock_ipc *parents_held_handle;
static const char *other_lock_path;
static int child_closes_the_parents_held_handle_then_locks_another(void *arg)
{
    (void)arg;
    /* Robust ownership is not inherited: the child holds nothing, so it may close it. */
    CHILD_EXPECT_RC(surelock_ipc_unlock(parents_held_handle), EPERM);
    CHILD_EXPECT_RC(surelock_ipc_close(parents_held_handle), 0);
    /* Its thread's held list must not still link the freed handle: these link and unlink. */
    for (int i = 0; i < 3; i++) {
        surelock_ipc *n;
        CHILD_EXPECT_RC(surelock_ipc_open(other_lock_path, NULL, &n), 0);
        CHILD_EXPECT_RC(surelock_ipc_lock(n), 0);
        CHILD_EXPECT_RC(surelock_ipc_unlock(n), 0);
        CHILD_EXPECT_RC(surelock_ipc_close(n), 0);
    }
    return 0;
}

/* Seen as a use-after-free by ASan and valgrind on the unfixed library (the plain build cannot
 * see it); the suites run under both. */
static void a_fork_child_closing_its_parents_held_handle_touches_no_freed_memory(void **state)
{
    (void)state;
    const char *path = P("lock");
    other_lock_path = P("other");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    parents_held_handle = m;
    EXPECT_CHILD_OK(spawn(child_closes_the_parents_held_handle_then_locks_another, NULL));
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY); /* the parent's hold is intact */
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(a_forked_child_cannot_release_or_repair_its_parents_hold),
        TEST(a_fork_child_takes_an_inherited_handle_afresh_once_the_parent_releases),
        TEST(payload_is_shared_between_processes),
        TEST(eight_processes_racing_to_create_a_fresh_path_count_to_an_exact_total),
        TEST(eight_processes_racing_on_an_empty_placeholder_count_to_an_exact_total),
        TEST(a_fork_child_closing_its_parents_held_handle_touches_no_freed_memory),
    };
    return cmocka_run_group_tests_name("ipc_fork", tests, ipc_group_setup, watchdog_stop);
}
