/*
 * test_group.c — the lock-all group (API.md section 3) through the public header only, against
 * the real shared libsurelock.so.1, with mutex, rwlock (both modes), rlock and ipc members.
 * Helpers and rules: support/bounded.h.
 *
 * The global order the tests rely on (API.md section 3, surelock.h): IPC members first (by the
 * random id in the lock file), then in-process members by their never-reused object serial,
 * i.e. in creation order. So tests create in-process locks in the order they need.
 *
 * Multi-process tests fork; a child never uses CMocka, arms alarm() so it dies rather than
 * hang, reports through its exit code (and pipes or MAP_SHARED memory), and is reaped with a
 * bound (SIGKILL after it). A process is never forked while the forking thread holds a lock.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <surelock.h>

#include "support/bounded.h"

/* Bound for children: their alarm, and the parent's waitpid loop (two of them in a row stay
 * below the 90 s watchdog). */
#define CHILD_LIMIT_S 30

static agent agent_a, agent_b;

/* ---- members: one description for every kind --------------------------------------------- */

enum kind { K_MUTEX, K_RW_EXCLUSIVE, K_RW_SHARED, K_RLOCK, K_IPC };

typedef struct member {
    enum kind kind;
    void *lock;
} member;

static const char *kind_name(enum kind k)
{
    switch (k) {
    case K_MUTEX: return "mutex";
    case K_RW_EXCLUSIVE: return "rwlock (exclusive)";
    case K_RW_SHARED: return "rwlock (shared)";
    case K_RLOCK: return "rlock";
    case K_IPC: return "ipc";
    }
    return "?";
}

static int add_member(surelock_group *g, const member *m)
{
    switch (m->kind) {
    case K_MUTEX: return surelock_group_add_mutex(g, m->lock);
    case K_RW_EXCLUSIVE: return surelock_group_add_rwlock(g, m->lock, SURELOCK_EXCLUSIVE);
    case K_RW_SHARED: return surelock_group_add_rwlock(g, m->lock, SURELOCK_SHARED);
    case K_RLOCK: return surelock_group_add_rlock(g, m->lock);
    case K_IPC: return surelock_group_add_ipc(g, m->lock);
    }
    return -1;
}

/* Takes the member exclusively (a writer for both rwlock modes: that is what keeps a shared
 * member busy too). */
static int take_member(void *arg)
{
    const member *m = arg;
    switch (m->kind) {
    case K_MUTEX: return surelock_mutex_lock(m->lock);
    case K_RW_EXCLUSIVE:
    case K_RW_SHARED: return surelock_rwlock_wrlock(m->lock);
    case K_RLOCK: return surelock_rlock_lock(m->lock);
    case K_IPC: return surelock_ipc_lock(m->lock);
    }
    return -1;
}

static int release_member(void *arg)
{
    const member *m = arg;
    switch (m->kind) {
    case K_MUTEX: return surelock_mutex_unlock(m->lock);
    case K_RW_EXCLUSIVE:
    case K_RW_SHARED: return surelock_rwlock_unlock(m->lock);
    case K_RLOCK: return surelock_rlock_unlock(m->lock);
    case K_IPC: return surelock_ipc_unlock(m->lock);
    }
    return -1;
}

/* Tries to take the member exclusively without waiting and gives it back: 0 = it was entirely
 * free, EBUSY = somebody holds it. */
static int probe_member(void *arg)
{
    const member *m = arg;
    int rc;
    switch (m->kind) {
    case K_MUTEX: rc = surelock_mutex_trylock(m->lock); break;
    case K_RW_EXCLUSIVE:
    case K_RW_SHARED: rc = surelock_rwlock_trywrlock(m->lock); break;
    case K_RLOCK: rc = surelock_rlock_trylock(m->lock); break;
    case K_IPC: rc = surelock_ipc_trylock(m->lock); break;
    default: return -1;
    }
    if (rc == 0 || rc == EOWNERDEAD) {
        int u = release_member(arg);
        if (u != 0) return 1000 + u;
    }
    return rc;
}

/*
 * Agents reach the ipc member of `all` through a second handle to the same lock file, as
 * another process would. (Through the test's own handle, ThreadSanitizer would see two threads
 * write the handle's holder fields under a robust mutex taken with pthread_mutex_clocklock,
 * which it does not intercept: a false data race.)
 */
static surelock_ipc *all_ipc, *all_ipc_for_agents;

static member agent_view(const member *m)
{
    member v = *m;
    if (v.kind == K_IPC && v.lock == all_ipc && all_ipc_for_agents != NULL)
        v.lock = all_ipc_for_agents;
    return v;
}

/* From another thread (agent_b): every member but `except` (-1: none) is entirely free. */
#define EXPECT_ALL_FREE(members, n, except) expect_all_free_at(__LINE__, (members), (n), (except))
static void expect_all_free_at(int line, member *members, int n, int except)
{
    for (int i = 0; i < n; i++) {
        if (i == except) continue;
        member v = agent_view(&members[i]);
        int rc = agent_call(&agent_b, probe_member, &v);
        if (rc != 0)
            fail_msg("line %d: member %d (%s) is not free: another thread's try returned %s "
                     "(\"%s\")",
                     line, i, kind_name(members[i].kind), errname(rc), agent_b.errmsg);
    }
}

/* From another thread (agent_b): every member is held (shared members: a writer is kept out). */
#define EXPECT_ALL_HELD(members, n) expect_all_held_at(__LINE__, (members), (n))
static void expect_all_held_at(int line, member *members, int n)
{
    for (int i = 0; i < n; i++) {
        member v = agent_view(&members[i]);
        int rc = agent_call(&agent_b, probe_member, &v);
        if (rc != EBUSY)
            fail_msg("line %d: member %d (%s) is not held: another thread's try returned %s",
                     line, i, kind_name(members[i].kind), errname(rc));
    }
}

/* ---- constructors ---------------------------------------------------------------------------- */

static surelock_group *new_group(void)
{
    surelock_group *g = NULL;
    EXPECT_RC(surelock_group_new(&g), 0);
    assert_non_null(g);
    return g;
}

static char dir[256];

static void ipc_path(char out[300], const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

static surelock_ipc *open_ipc(const char *name, size_t payload)
{
    char path[300];
    ipc_path(path, name);
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.payload_size = payload;
    surelock_ipc *h = NULL;
    EXPECT_RC(surelock_ipc_open(path, &o, &h), 0);
    assert_non_null(h);
    return h;
}

/* A set of members of every kind, created in this order (the in-process order). */
#define N_ALL 6
static member all[N_ALL];

static void make_all(void)
{
    all_ipc = open_ipc("all.lock", 0);
    all_ipc_for_agents = open_ipc("all.lock", 0);
    all[0] = (member){K_MUTEX, new_mutex()};
    all[1] = (member){K_RW_EXCLUSIVE, new_rwlock()};
    all[2] = (member){K_RLOCK, new_rlock()};
    all[3] = (member){K_RW_SHARED, new_rwlock()};
    all[4] = (member){K_MUTEX, new_mutex()};
    all[5] = (member){K_IPC, all_ipc};
}

static void free_all(void)
{
    EXPECT_RC(surelock_ipc_close(all_ipc_for_agents), 0);
    all_ipc_for_agents = NULL;
    for (int i = 0; i < N_ALL; i++) {
        int rc = -1;
        switch (all[i].kind) {
        case K_MUTEX: rc = surelock_mutex_free(all[i].lock); break;
        case K_RW_EXCLUSIVE:
        case K_RW_SHARED: rc = surelock_rwlock_free(all[i].lock); break;
        case K_RLOCK: rc = surelock_rlock_free(all[i].lock); break;
        case K_IPC: rc = surelock_ipc_close(all[i].lock); break;
        }
        if (rc != 0) fail_msg("freeing member %d (%s): %s", i, kind_name(all[i].kind), errname(rc));
    }
}

static surelock_group *group_of(member *members, int n)
{
    surelock_group *g = new_group();
    for (int i = 0; i < n; i++) EXPECT_RC(add_member(g, &members[i]), 0);
    assert_int_equal(surelock_group_size(g), (size_t)n);
    return g;
}

/* Per-test: a private directory for lock files, and the two agents. */
static int test_setup(void **state)
{
    watchdog_arm(state);
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') base = "/tmp";
    snprintf(dir, sizeof dir, "%s/surelock-group-XXXXXX", base);
    if (mkdtemp(dir) == NULL) return -1;
    agent_start(&agent_a);
    agent_start(&agent_b);
    return 0;
}

static int test_teardown(void **state)
{
    agent_stop(&agent_a);
    agent_stop(&agent_b);
    temp_dir_remove(dir);
    return watchdog_disarm(state);
}

#undef TEST
#define TEST(f) {#f, f, test_setup, test_teardown, (void *)#f}

/* ---- group calls an agent makes ------------------------------------------------------------- */

static int do_group_lock(void *g) { return surelock_group_lock(g); }
static int do_group_unlock(void *g) { return surelock_group_unlock(g); }
static int do_rdlock(void *l) { return surelock_rwlock_rdlock(l); }
static int do_tryrdlock(void *l) { return surelock_rwlock_tryrdlock(l); }
static int do_rw_unlock(void *l) { return surelock_rwlock_unlock(l); }
static int do_rlock_trylock(void *l) { return surelock_rlock_trylock(l); }
static int do_rlock_unlock(void *l) { return surelock_rlock_unlock(l); }

/* ---- acquire forms ------------------------------------------------------------------------- */

enum form { FORM_LOCK, FORM_TRYLOCK, FORM_TIMEDLOCK, FORM_TIMEDLOCK_0, N_GROUP_FORMS };
static const char *const form_names[N_GROUP_FORMS] = {"lock", "trylock", "timedlock(1 s)",
                                                       "timedlock(0)"};

static int group_acquire(surelock_group *g, enum form f)
{
    switch (f) {
    case FORM_LOCK: return surelock_group_lock(g);
    case FORM_TRYLOCK: return surelock_group_trylock(g);
    case FORM_TIMEDLOCK: return surelock_group_timedlock(g, 1000 * MS);
    case FORM_TIMEDLOCK_0: return surelock_group_timedlock(g, 0);
    default: return -1;
    }
}

/* ================================================================================================
 * Arguments, membership, size
 * ============================================================================================== */

static void null_arguments_and_bad_modes_are_einval(void **state)
{
    (void)state;
    surelock_group *g = new_group();
    surelock_rwlock *l = new_rwlock();
    EXPECT_RC(surelock_group_new(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_free(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    surelock_mutex *m = new_mutex();
    surelock_rlock *r = new_rlock();
    EXPECT_RC(surelock_group_add_mutex(NULL, m), EINVAL);
    EXPECT_ERRMSG("group is NULL");
    EXPECT_RC(surelock_group_add_mutex(g, NULL), EINVAL);
    EXPECT_ERRMSG("lock is NULL");
    EXPECT_RC(surelock_group_add_rwlock(NULL, l, SURELOCK_SHARED), EINVAL);
    EXPECT_ERRMSG("group is NULL");
    EXPECT_RC(surelock_group_add_rwlock(g, NULL, SURELOCK_EXCLUSIVE), EINVAL);
    EXPECT_ERRMSG("lock is NULL");
    EXPECT_RC(surelock_group_add_rlock(NULL, r), EINVAL);
    EXPECT_ERRMSG("group is NULL");
    EXPECT_RC(surelock_group_add_rlock(g, NULL), EINVAL);
    EXPECT_ERRMSG("lock is NULL");
    EXPECT_RC(surelock_group_add_ipc(g, NULL), EINVAL);
    EXPECT_ERRMSG("lock is NULL");
    surelock_ipc *h = open_ipc("einval.lock", 0);
    EXPECT_RC(surelock_group_add_ipc(NULL, h), EINVAL);
    EXPECT_ERRMSG("group is NULL");
    const int bad_modes[] = {2, -1, 0x100, SURELOCK_SHARED | 2};
    for (size_t i = 0; i < sizeof bad_modes / sizeof bad_modes[0]; i++) {
        EXPECT_RC(surelock_group_add_rwlock(g, l, bad_modes[i]), EINVAL);
        EXPECT_ERRMSG("mode");
    }
    EXPECT_RC(surelock_group_clear(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_lock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_trylock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_timedlock(NULL, 0), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_timedlock(NULL, SURELOCK_FOREVER), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_group_unlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    assert_int_equal(surelock_group_size(NULL), 0);
    /* nothing was added by the failed calls: l and h are free to go */
    assert_int_equal(surelock_group_size(g), 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);
    EXPECT_RC(surelock_mutex_free(m), 0);
    EXPECT_RC(surelock_rlock_free(r), 0);
    EXPECT_RC(surelock_ipc_close(h), 0);
    EXPECT_RC(surelock_group_free(g), 0);
}

static void size_counts_members_and_clear_drops_them_all(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = new_group();
    assert_int_equal(surelock_group_size(g), 0);
    for (int i = 0; i < N_ALL; i++) {
        EXPECT_RC(add_member(g, &all[i]), 0);
        assert_int_equal(surelock_group_size(g), (size_t)i + 1);
    }
    EXPECT_RC(add_member(g, &all[0]), EEXIST); /* a refused add changes nothing */
    assert_int_equal(surelock_group_size(g), N_ALL);
    EXPECT_RC(surelock_group_clear(g), 0);
    assert_int_equal(surelock_group_size(g), 0);
    EXPECT_RC(surelock_group_clear(g), 0); /* clearing an empty group is fine */
    /* cleared members can be added again */
    for (int i = 0; i < N_ALL; i++) EXPECT_RC(add_member(g, &all[i]), 0);
    assert_int_equal(surelock_group_size(g), N_ALL);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all(); /* freeing the group let go of its members */
}

/* A group fixes one deadline for all its members, so a member reached after it has passed
 * fails at once: the message gives the group's timeout, not a "timeout 0" nobody asked for. */
static void a_member_reached_after_the_groups_deadline_names_the_groups_timeout(void **state)
{
    (void)state;
    make_all();
    for (int i = 0; i < N_ALL; i++) {
        member held = agent_view(&all[i]);
        surelock_group *g = group_of(&all[i], 1);
        EXPECT_RC(agent_call(&agent_a, take_member, &held), 0);
        int rc = surelock_group_timedlock(g, 1); /* 1 ns: spent before the member is asked */
        if (rc != ETIMEDOUT)
            fail_msg("%s member: timedlock(1 ns) gave %s", kind_name(all[i].kind), errname(rc));
        if (strstr(surelock_errmsg(), "timeout 1 ns") == NULL)
            fail_msg("%s member: errmsg \"%s\" does not give the group's timeout",
                     kind_name(all[i].kind), surelock_errmsg());
        EXPECT_RC(agent_call(&agent_a, release_member, &held), 0);
        EXPECT_RC(surelock_group_free(g), 0);
    }
    free_all();
}

static int lock_group(void *arg)
{
    return surelock_group_lock(arg);
}

static int unlock_group(void *arg)
{
    return surelock_group_unlock(arg);
}

/* Member i of a group agent_a holds is released by its own unlock call, and agent_b takes it:
 * the group's unlock must not release it a second time (that released agent_b's hold, and
 * corrupted agent_a's list of holds so that its exit never finished). */
static void unlock_member_behind_the_groups_back(member *members, int n, int i)
{
    surelock_group *g = group_of(members, n);
    member mine = members[i], theirs = agent_view(&members[i]);
    EXPECT_RC(agent_call(&agent_a, lock_group, g), 0);
    EXPECT_RC(agent_call(&agent_a, release_member, &mine), 0);
    EXPECT_RC(agent_call(&agent_b, take_member, &theirs), 0);
    int rc = agent_call(&agent_a, unlock_group, g);
    if (rc != EPERM || strstr(agent_a.errmsg, "released by its own unlock") == NULL)
        fail_msg("%s member %d of %d: group_unlock gave %s \"%s\", want EPERM naming the "
                 "member's own unlock", kind_name(members[i].kind), i, n, errname(rc),
                 agent_a.errmsg);
    /* agent_b still holds it; the group's other members are free */
    for (int j = 0; j < n; j++) {
        member v = members[j];
        int probe = probe_member(&v);
        if (probe != (j == i ? EBUSY : 0))
            fail_msg("%s member %d of %d: member %d probes %s after the group's unlock",
                     kind_name(members[i].kind), i, n, j, errname(probe));
    }
    agent_stop(&agent_a); /* its exit must finish (bounded) */
    agent_start(&agent_a);
    EXPECT_RC(agent_call(&agent_b, release_member, &theirs), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
}

static void a_member_unlocked_by_its_own_call_is_not_released_again_by_the_group(void **state)
{
    (void)state;
    make_all();
    for (int i = 0; i < N_ALL; i++) unlock_member_behind_the_groups_back(all, N_ALL, i);
    free_all();
    /* groups of one kind, which take and release their words together where they can */
    member mutexes[3], rlocks[3];
    for (int j = 0; j < 3; j++) {
        mutexes[j] = (member){K_MUTEX, new_mutex()};
        rlocks[j] = (member){K_RLOCK, new_rlock()};
    }
    for (int i = 0; i < 3; i++) {
        unlock_member_behind_the_groups_back(mutexes, 3, i);
        unlock_member_behind_the_groups_back(rlocks, 3, i);
    }
    for (int j = 0; j < 3; j++) {
        EXPECT_RC(surelock_mutex_free(mutexes[j].lock), 0);
        EXPECT_RC(surelock_rlock_free(rlocks[j].lock), 0);
    }
}

static void adding_the_same_lock_twice_is_eexist_for_every_kind(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int i = 0; i < N_ALL; i++) {
        int rc = add_member(g, &all[i]);
        if (rc != EEXIST)
            fail_msg("adding member %d (%s) again returned %s", i, kind_name(all[i].kind),
                     errname(rc));
        EXPECT_ERRMSG("already a member");
    }
    /* an rwlock is one member whatever the mode asked for */
    EXPECT_RC(surelock_group_add_rwlock(g, all[1].lock, SURELOCK_SHARED), EEXIST);
    EXPECT_ERRMSG("already a member");
    EXPECT_RC(surelock_group_add_rwlock(g, all[3].lock, SURELOCK_EXCLUSIVE), EEXIST);
    EXPECT_ERRMSG("already a member");
    /* ipc: a second handle to the same lock file is the same lock */
    surelock_ipc *again = open_ipc("all.lock", 0);
    EXPECT_RC(surelock_group_add_ipc(g, again), EEXIST);
    EXPECT_ERRMSG("already a member");
    /* ... and a different lock file is not */
    surelock_ipc *other = open_ipc("other.lock", 0);
    EXPECT_RC(surelock_group_add_ipc(g, other), 0);
    assert_int_equal(surelock_group_size(g), N_ALL + 1);
    /* the same lock in another group is fine */
    surelock_group *g2 = new_group();
    EXPECT_RC(surelock_group_add_ipc(g2, again), 0);
    EXPECT_RC(surelock_group_add_mutex(g2, all[0].lock), 0);
    EXPECT_RC(surelock_group_free(g2), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_ipc_close(again), 0);
    EXPECT_RC(surelock_ipc_close(other), 0);
    free_all();
}

static void adding_clearing_or_freeing_while_the_group_is_held_is_ebusy(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, 2);
    surelock_ipc *other = open_ipc("other.lock", 0);
    surelock_mutex *m = new_mutex();
    surelock_rwlock *l = new_rwlock();
    surelock_rlock *r = new_rlock();
    for (int holder = 0; holder < 2; holder++) { /* held by this thread, then by another */
        if (holder == 0) EXPECT_RC(surelock_group_lock(g), 0);
        else EXPECT_RC(agent_call(&agent_a, do_group_lock, g), 0);
        EXPECT_RC(surelock_group_add_mutex(g, m), EBUSY);
        EXPECT_ERRMSG("held");
        EXPECT_RC(surelock_group_add_rwlock(g, l, SURELOCK_SHARED), EBUSY);
        EXPECT_ERRMSG("held");
        EXPECT_RC(surelock_group_add_rlock(g, r), EBUSY);
        EXPECT_ERRMSG("held");
        EXPECT_RC(surelock_group_add_ipc(g, other), EBUSY);
        EXPECT_ERRMSG("held");
        EXPECT_RC(surelock_group_clear(g), EBUSY);
        EXPECT_ERRMSG("held");
        EXPECT_RC(surelock_group_free(g), EBUSY);
        EXPECT_ERRMSG("held");
        assert_int_equal(surelock_group_size(g), 2);
        EXPECT_ALL_HELD(all, 2); /* still held, by its holder */
        if (holder == 0) EXPECT_RC(surelock_group_unlock(g), 0);
        else EXPECT_RC(agent_call(&agent_a, do_group_unlock, g), 0);
    }
    /* unheld: all of that works, and the refused locks were never members */
    EXPECT_RC(surelock_mutex_free(m), 0);
    EXPECT_RC(surelock_rwlock_free(l), 0);
    EXPECT_RC(surelock_rlock_free(r), 0);
    EXPECT_RC(surelock_ipc_close(other), 0);
    EXPECT_RC(surelock_group_clear(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

static int free_member(const member *m)
{
    switch (m->kind) {
    case K_MUTEX: return surelock_mutex_free(m->lock);
    case K_RW_EXCLUSIVE:
    case K_RW_SHARED: return surelock_rwlock_free(m->lock);
    case K_RLOCK: return surelock_rlock_free(m->lock);
    case K_IPC: return surelock_ipc_close(m->lock);
    }
    return -1;
}

static void a_lock_cannot_be_freed_or_closed_while_it_is_a_member_of_a_group(void **state)
{
    (void)state;
    make_all();
    surelock_group *g1 = group_of(all, N_ALL);
    surelock_group *g2 = group_of(all, N_ALL);
    for (int i = 0; i < N_ALL; i++) {
        int rc = free_member(&all[i]);
        if (rc != EBUSY)
            fail_msg("freeing member %d (%s) of two groups returned %s", i,
                     kind_name(all[i].kind), errname(rc));
        EXPECT_ERRMSG("member");
    }
    /* still in g2 after g1 is cleared */
    EXPECT_RC(surelock_group_clear(g1), 0);
    for (int i = 0; i < N_ALL; i++) {
        EXPECT_RC(free_member(&all[i]), EBUSY);
        EXPECT_ERRMSG("member");
    }
    /* nothing was freed: both groups still work */
    EXPECT_RC(surelock_group_lock(g2), 0);
    EXPECT_RC(surelock_group_unlock(g2), 0);
    EXPECT_RC(surelock_group_free(g2), 0);
    /* in no group now */
    surelock_group *g3 = group_of(all, N_ALL);
    EXPECT_RC(surelock_group_free(g3), 0);
    EXPECT_RC(surelock_group_free(g1), 0);
    free_all();
}

/* ================================================================================================
 * Taking and releasing
 * ============================================================================================== */

static void every_acquire_form_takes_every_member_and_unlock_releases_them(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        int rc = group_acquire(g, (enum form)f);
        if (rc != 0) fail_msg("group %s returned %s", form_names[f], errname(rc));
        assert_int_equal(surelock_rlock_depth(all[2].lock), 1);
        assert_int_equal(surelock_ipc_needs_recovery(all_ipc), 0);
        EXPECT_ALL_HELD(all, N_ALL);
        /* a shared member still admits other readers */
        EXPECT_RC(surelock_rwlock_tryrdlock(all[3].lock), EDEADLK); /* ...not the holder */
        EXPECT_RC(agent_call(&agent_b, do_tryrdlock, all[3].lock), 0);
        EXPECT_RC(agent_call(&agent_b, do_rw_unlock, all[3].lock), 0);
        EXPECT_RC(surelock_group_unlock(g), 0);
        assert_int_equal(surelock_rlock_depth(all[2].lock), 0);
        EXPECT_ALL_FREE(all, N_ALL, -1);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

static void unlock_is_eperm_unless_the_caller_holds_the_group(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    EXPECT_RC(surelock_group_unlock(g), EPERM); /* never taken */
    EXPECT_ERRMSG("does not hold");
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), EPERM); /* already released */
    EXPECT_ERRMSG("does not hold");
    /* held by another thread: EPERM here, and the hold is intact */
    EXPECT_RC(agent_call(&agent_a, do_group_lock, g), 0);
    EXPECT_RC(surelock_group_unlock(g), EPERM);
    EXPECT_ERRMSG("does not hold");
    EXPECT_ALL_HELD(all, N_ALL);
    EXPECT_RC(agent_call(&agent_a, do_group_unlock, g), 0);
    EXPECT_ALL_FREE(all, N_ALL, -1);
    /* holding every member one by one is not holding the group */
    for (int i = 0; i < N_ALL; i++) EXPECT_RC(take_member(&all[i]), 0);
    EXPECT_RC(surelock_group_unlock(g), EPERM);
    for (int i = N_ALL; i-- > 0;) EXPECT_RC(release_member(&all[i]), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

static void taking_a_group_the_caller_already_holds_is_edeadlk(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    EXPECT_RC(surelock_group_lock(g), 0);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        int rc = group_acquire(g, (enum form)f);
        if (rc != EDEADLK) fail_msg("group %s again returned %s", form_names[f], errname(rc));
        EXPECT_ERRMSG("already holds");
    }
    assert_int_equal(surelock_rlock_depth(all[2].lock), 1); /* nothing taken twice */
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_ALL_FREE(all, N_ALL, -1);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* The caller holds one member (a mutex, an rwlock in either mode, an ipc lock): every acquire
 * form is EDEADLK, and the group takes nothing. */
static void a_member_mutex_rwlock_or_ipc_the_caller_holds_makes_the_group_edeadlk_taking_nothing(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int i = 0; i < N_ALL; i++) {
        if (all[i].kind == K_RLOCK) continue; /* the prefix rule, tested below */
        for (int read_mode = 0; read_mode < 2; read_mode++) {
            bool is_rw = all[i].kind == K_RW_EXCLUSIVE || all[i].kind == K_RW_SHARED;
            if (read_mode && !is_rw) continue;
            for (int f = 0; f < N_GROUP_FORMS; f++) {
                if (read_mode) EXPECT_RC(surelock_rwlock_rdlock(all[i].lock), 0);
                else EXPECT_RC(take_member(&all[i]), 0);
                int rc = group_acquire(g, (enum form)f);
                if (rc != EDEADLK)
                    fail_msg("holding member %d (%s%s), group %s returned %s, expected EDEADLK",
                             i, kind_name(all[i].kind), read_mode ? ", read" : "",
                             form_names[f], errname(rc));
                EXPECT_ERRMSG("already holds");
                EXPECT_RC(surelock_group_unlock(g), EPERM); /* the group is not held */
                assert_int_equal(surelock_rlock_depth(all[2].lock), 0);
                EXPECT_ALL_FREE(all, N_ALL, i); /* nothing else was taken */
                EXPECT_RC(release_member(&all[i]), 0);
            }
        }
    }
    EXPECT_ALL_FREE(all, N_ALL, -1);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* Holding the ipc lock through another handle to the same file is holding it. */
static void an_ipc_member_held_through_another_handle_makes_the_group_edeadlk_taking_nothing(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    surelock_ipc *again = open_ipc("all.lock", 0);
    EXPECT_RC(surelock_ipc_lock(again), 0);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        int rc = group_acquire(g, (enum form)f);
        if (rc != EDEADLK)
            fail_msg("holding the ipc lock through another handle, group %s returned %s",
                     form_names[f], errname(rc));
        EXPECT_ERRMSG("already holds");
        EXPECT_RC(surelock_group_unlock(g), EPERM);
        EXPECT_ALL_FREE(all, N_ALL, 5);
    }
    EXPECT_RC(surelock_ipc_unlock(again), 0);
    EXPECT_RC(surelock_ipc_close(again), 0);
    EXPECT_ALL_FREE(all, N_ALL, -1);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* ================================================================================================
 * The rlock prefix rule
 * ============================================================================================== */

/* The same for a recursive file, where re-entering through the member handle would succeed:
 * every handle to one lock file is the same lock, so the group is still EDEADLK. */
static void a_recursive_ipc_file_held_through_another_handle_makes_the_group_edeadlk(void **state)
{
    (void)state;
    char path[300];
    ipc_path(path, "recursive.lock");
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = SURELOCK_IPC_RECURSIVE;
    surelock_ipc *a = NULL, *b = NULL;
    EXPECT_RC(surelock_ipc_open(path, &o, &a), 0);
    EXPECT_RC(surelock_ipc_open(path, &o, &b), 0);
    surelock_group *g = new_group();
    EXPECT_RC(surelock_group_add_ipc(g, b), 0);
    EXPECT_RC(surelock_ipc_lock(a), 0);
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_ERRMSG("holds");
    EXPECT_RC(surelock_ipc_unlock(a), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
    EXPECT_RC(surelock_ipc_close(a), 0);
}

static void a_held_rlock_that_comes_first_is_reentered_and_unlock_restores_its_depth(void **state)
{
    (void)state;
    /* created first: r1, r2 come before m1, rw in the group's order */
    surelock_rlock *r1 = new_rlock();
    surelock_rlock *r2 = new_rlock();
    member rest[2] = {{K_MUTEX, new_mutex()}, {K_RW_EXCLUSIVE, new_rwlock()}};
    surelock_group *g = new_group();
    /* inserted in the opposite order: the order is the global one, not insertion */
    EXPECT_RC(add_member(g, &rest[1]), 0);
    EXPECT_RC(add_member(g, &rest[0]), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r2), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r1), 0);
    EXPECT_RC(surelock_rlock_lock(r1), 0);
    EXPECT_RC(surelock_rlock_lock(r1), 0);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        /* r1 held (depth 2), r2 not: r1 alone is the held prefix */
        int rc = group_acquire(g, (enum form)f);
        if (rc != 0) fail_msg("group %s returned %s", form_names[f], errname(rc));
        assert_int_equal(surelock_rlock_depth(r1), 3);
        assert_int_equal(surelock_rlock_depth(r2), 1);
        EXPECT_ALL_HELD(rest, 2);
        EXPECT_RC(agent_call(&agent_b, do_rlock_trylock, r1), EBUSY);
        EXPECT_RC(surelock_group_unlock(g), 0);
        assert_int_equal(surelock_rlock_depth(r1), 2); /* back to its previous depth */
        assert_int_equal(surelock_rlock_depth(r2), 0);
        EXPECT_ALL_FREE(rest, 2, -1);
        EXPECT_RC(agent_call(&agent_b, do_rlock_trylock, r1), EBUSY);
    }
    /* both rlocks held: still a prefix */
    EXPECT_RC(surelock_rlock_lock(r2), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    assert_int_equal(surelock_rlock_depth(r1), 3);
    assert_int_equal(surelock_rlock_depth(r2), 2);
    EXPECT_RC(surelock_group_unlock(g), 0);
    assert_int_equal(surelock_rlock_depth(r1), 2);
    assert_int_equal(surelock_rlock_depth(r2), 1);
    EXPECT_RC(surelock_rlock_unlock(r2), 0);
    /* a failed try backs out of the re-entered rlock too: depth unchanged */
    EXPECT_RC(agent_call(&agent_a, take_member, &rest[1]), 0);
    EXPECT_RC(surelock_group_trylock(g), EBUSY);
    assert_int_equal(surelock_rlock_depth(r1), 2);
    assert_int_equal(surelock_rlock_depth(r2), 0);
    uint64_t t0 = now_ns();
    EXPECT_RC(surelock_group_timedlock(g, 20 * MS), ETIMEDOUT);
    EXPECT_WAITED_AT_LEAST(now_ns() - t0, 20 * MS);
    assert_int_equal(surelock_rlock_depth(r1), 2);
    assert_int_equal(surelock_rlock_depth(r2), 0);
    EXPECT_ALL_FREE(rest, 1, -1);
    EXPECT_RC(agent_call(&agent_a, release_member, &rest[1]), 0);
    EXPECT_RC(surelock_rlock_unlock(r1), 0);
    EXPECT_RC(surelock_rlock_unlock(r1), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_rlock_free(r1), 0);
    EXPECT_RC(surelock_rlock_free(r2), 0);
    EXPECT_RC(surelock_mutex_free(rest[0].lock), 0);
    EXPECT_RC(surelock_rwlock_free(rest[1].lock), 0);
}

static void a_held_rlock_after_an_unheld_member_is_edeadlk_and_nothing_is_taken(void **state)
{
    (void)state;
    /* m comes first (created first), then r1, then r2 */
    member m = {K_MUTEX, new_mutex()};
    surelock_rlock *r1 = new_rlock();
    surelock_rlock *r2 = new_rlock();
    surelock_group *g = new_group();
    EXPECT_RC(surelock_group_add_rlock(g, r1), 0);
    EXPECT_RC(add_member(g, &m), 0);
    EXPECT_RC(surelock_rlock_lock(r1), 0);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        int rc = group_acquire(g, (enum form)f);
        if (rc != EDEADLK)
            fail_msg("group %s returned %s, expected EDEADLK", form_names[f], errname(rc));
        EXPECT_ERRMSG("before", "order");
        assert_int_equal(surelock_rlock_depth(r1), 1);
        EXPECT_ALL_FREE(&m, 1, -1);
        EXPECT_RC(surelock_group_unlock(g), EPERM);
    }
    EXPECT_RC(surelock_rlock_unlock(r1), 0);

    /* among rlocks alone: r2 held, r1 (earlier) not */
    EXPECT_RC(surelock_group_clear(g), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r2), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r1), 0);
    EXPECT_RC(surelock_rlock_lock(r2), 0);
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_ERRMSG("before", "order");
    assert_int_equal(surelock_rlock_depth(r1), 0);
    assert_int_equal(surelock_rlock_depth(r2), 1);
    EXPECT_RC(agent_call(&agent_b, do_rlock_trylock, r1), 0);
    EXPECT_RC(agent_call(&agent_b, do_rlock_unlock, r1), 0);
    EXPECT_RC(surelock_rlock_unlock(r2), 0);

    /* IPC members come before every in-process one: a held rlock after an unheld ipc */
    surelock_ipc *h = open_ipc("first.lock", 0);
    member hm = {K_IPC, h};
    EXPECT_RC(surelock_group_clear(g), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r1), 0);
    EXPECT_RC(surelock_group_add_ipc(g, h), 0);
    EXPECT_RC(surelock_rlock_lock(r1), 0);
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_ERRMSG("before", "order");
    EXPECT_ALL_FREE(&hm, 1, -1);
    assert_int_equal(surelock_rlock_depth(r1), 1);
    EXPECT_RC(surelock_rlock_unlock(r1), 0);
    EXPECT_RC(surelock_group_lock(g), 0); /* with nothing held, fine */
    EXPECT_RC(surelock_group_unlock(g), 0);

    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_ipc_close(h), 0);
    EXPECT_RC(surelock_rlock_free(r1), 0);
    EXPECT_RC(surelock_rlock_free(r2), 0);
    EXPECT_RC(surelock_mutex_free(m.lock), 0);
}

static void a_held_rlock_prefix_with_a_held_mutex_later_is_still_edeadlk(void **state)
{
    (void)state;
    surelock_rlock *r = new_rlock(); /* first */
    member m1 = {K_MUTEX, new_mutex()};
    member m2 = {K_MUTEX, new_mutex()};
    surelock_group *g = new_group();
    EXPECT_RC(add_member(g, &m2), 0);
    EXPECT_RC(add_member(g, &m1), 0);
    EXPECT_RC(surelock_group_add_rlock(g, r), 0);
    EXPECT_RC(surelock_rlock_lock(r), 0);
    EXPECT_RC(take_member(&m2), 0);
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_ERRMSG("already holds");
    assert_int_equal(surelock_rlock_depth(r), 1);
    EXPECT_ALL_FREE(&m1, 1, -1);
    EXPECT_RC(release_member(&m2), 0);
    EXPECT_RC(surelock_rlock_unlock(r), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_rlock_free(r), 0);
    EXPECT_RC(surelock_mutex_free(m1.lock), 0);
    EXPECT_RC(surelock_mutex_free(m2.lock), 0);
}

/* ================================================================================================
 * All or nothing
 * ============================================================================================== */

/* Whichever member another thread holds (first, middle or last in the order), trylock and
 * timedlock fail and leave every other member free. */
static void a_failed_trylock_or_timedlock_leaves_every_member_free(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int busy = 0; busy < N_ALL; busy++) {
        member blocker = agent_view(&all[busy]);
        EXPECT_RC(agent_call(&agent_a, take_member, &blocker), 0);
        for (int f = FORM_TRYLOCK; f < N_GROUP_FORMS; f++) {
            uint64_t timeout = f == FORM_TIMEDLOCK ? 40 * MS : 0;
            uint64_t t0 = now_ns();
            int rc = f == FORM_TRYLOCK ? surelock_group_trylock(g)
                                       : surelock_group_timedlock(g, timeout);
            uint64_t elapsed = now_ns() - t0;
            int want = f == FORM_TRYLOCK ? EBUSY : ETIMEDOUT;
            if (rc != want)
                fail_msg("member %d (%s) busy: group %s returned %s, expected %s", busy,
                         kind_name(all[busy].kind), form_names[f], errname(rc), errname(want));
            EXPECT_ERRMSG("held", "holds", "busy", "within");
            if (f != FORM_TRYLOCK) EXPECT_WAITED_AT_LEAST(elapsed, timeout);
            EXPECT_RC(surelock_group_unlock(g), EPERM); /* holds nothing */
            assert_int_equal(surelock_rlock_depth(all[2].lock), 0);
            EXPECT_ALL_FREE(all, N_ALL, busy);
        }
        EXPECT_RC(agent_call(&agent_a, release_member, &blocker), 0);
    }
    /* a shared member busy only because a writer holds it; readers do not make it busy */
    EXPECT_RC(agent_call(&agent_a, do_rdlock, all[3].lock), 0);
    EXPECT_RC(surelock_group_trylock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(agent_call(&agent_a, do_rw_unlock, all[3].lock), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

static int unlock_member_after_30ms(void *arg)
{
    sleep_ms(30);
    return release_member(arg);
}

static void a_blocked_lock_and_timedlock_get_the_group_once_the_busy_member_is_released(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int busy = 0; busy < N_ALL; busy++) {
        /* lock, and timedlock with a bound, with FOREVER and with timeouts whose deadline
         * would overflow (which wait like FOREVER) */
        const uint64_t timeouts[] = {0, (uint64_t)WAIT_LIMIT_MS * MS, SURELOCK_FOREVER,
                                     SURELOCK_FOREVER - 1, UINT64_MAX / 2};
        for (size_t t = 0; t < sizeof timeouts / sizeof timeouts[0]; t++) {
            member blocker = agent_view(&all[busy]);
            EXPECT_RC(agent_call(&agent_a, take_member, &blocker), 0);
            agent_post(&agent_a, unlock_member_after_30ms, &blocker);
            int rc = t == 0 ? surelock_group_lock(g) : surelock_group_timedlock(g, timeouts[t]);
            if (rc != 0 && t == 0)
                fail_msg("member %d (%s) busy for 30 ms: group lock returned %s; errmsg \"%s\"",
                         busy, kind_name(all[busy].kind), errname(rc), surelock_errmsg());
            if (rc != 0)
                fail_msg("member %d (%s) busy for 30 ms: group timedlock(%llu) returned %s; "
                         "errmsg \"%s\"",
                         busy, kind_name(all[busy].kind), (unsigned long long)timeouts[t],
                         errname(rc), surelock_errmsg());
            EXPECT_RC(agent_wait(&agent_a), 0);
            EXPECT_ALL_HELD(all, N_ALL);
            EXPECT_RC(surelock_group_unlock(g), 0);
        }
    }
    EXPECT_ALL_FREE(all, N_ALL, -1);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* ================================================================================================
 * Owner death
 * ============================================================================================== */

static void a_dead_owner_of_an_in_process_member_makes_every_form_return_eownerdead_holding_all(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL);
    for (int dead = 0; dead < N_ALL; dead++) {
        if (all[dead].kind == K_IPC) continue; /* a dead process: below */
        for (int f = 0; f < N_GROUP_FORMS; f++) {
            EXPECT_RC(agent_call(&agent_a, take_member, &all[dead]), 0);
            agent_stop(&agent_a); /* exits holding it */
            EXPECT_RC(surelock_group_unlock(NULL), EINVAL);
            char before[ERRMSG_SIZE];
            save_errmsg(before);
            int rc = group_acquire(g, (enum form)f);
            if (rc != EOWNERDEAD)
                fail_msg("owner of member %d (%s) died: group %s returned %s, expected EOWNERDEAD",
                         dead, kind_name(all[dead].kind), form_names[f], errname(rc));
            assert_string_equal(surelock_errmsg(), before); /* EOWNERDEAD sets no errmsg */
            EXPECT_ALL_HELD(all, N_ALL);
            assert_int_equal(surelock_rlock_depth(all[2].lock), 1);
            EXPECT_RC(surelock_group_unlock(g), 0);
            EXPECT_ALL_FREE(all, N_ALL, -1);
            EXPECT_RC(surelock_group_lock(g), 0); /* reported once */
            EXPECT_RC(surelock_group_unlock(g), 0);
            agent_start(&agent_a); /* replaces the one that died */
        }
    }
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* A trylock/timedlock that takes an in-process member with EOWNERDEAD and then backs out (a
 * later member is busy) passes the notice on: the member's next acquirer still gets
 * EOWNERDEAD, so giving a lock back unused never hides that its owner died. */
static void a_backed_out_in_process_member_taken_with_eownerdead_passes_the_notice_on(void **state)
{
    (void)state;
    const enum kind kinds[] = {K_MUTEX, K_RW_EXCLUSIVE, K_RW_SHARED, K_RLOCK};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (int timed = 0; timed < 2; timed++) {
            member dead = {kinds[k], NULL};
            dead.lock = kinds[k] == K_MUTEX   ? (void *)new_mutex()
                        : kinds[k] == K_RLOCK ? (void *)new_rlock()
                                              : (void *)new_rwlock();
            member busy = {K_MUTEX, new_mutex()}; /* created later: after `dead` in the order */
            EXPECT_RC(agent_call(&agent_a, take_member, &dead), 0);
            agent_stop(&agent_a); /* exits holding it */
            agent_start(&agent_a);
            EXPECT_RC(agent_call(&agent_b, take_member, &busy), 0);
            member both[2] = {dead, busy};
            surelock_group *g = group_of(both, 2);
            if (timed)
                EXPECT_RC(surelock_group_timedlock(g, 20 * MS), ETIMEDOUT);
            else
                EXPECT_RC(surelock_group_trylock(g), EBUSY);
            EXPECT_RC(surelock_group_free(g), 0);
            int rc = take_member(&dead); /* the next acquirer, by hand */
            if (rc != EOWNERDEAD)
                fail_msg("%s taken with EOWNERDEAD by a %s that backed out: the next acquirer got "
                         "%s, expected EOWNERDEAD",
                         kind_name(dead.kind), timed ? "timedlock" : "trylock", errname(rc));
            EXPECT_RC(release_member(&dead), 0);
            EXPECT_RC(take_member(&dead), 0); /* reported once */
            EXPECT_RC(release_member(&dead), 0);
            EXPECT_RC(agent_call(&agent_b, release_member, &busy), 0);
            EXPECT_RC(surelock_mutex_free(busy.lock), 0);
            EXPECT_RC(kinds[k] == K_MUTEX   ? surelock_mutex_free(dead.lock)
                      : kinds[k] == K_RLOCK ? surelock_rlock_free(dead.lock)
                                            : surelock_rwlock_free(dead.lock),
                      0);
        }
    }
}

/* A thread that exits holding a group: its members are released as owner-dead, and the group
 * can be taken again by another thread. */
static void a_thread_that_exits_holding_a_group_leaves_it_to_the_next_taker_with_eownerdead(void **state)
{
    (void)state;
    make_all();
    surelock_group *g = group_of(all, N_ALL - 1); /* in-process members */
    EXPECT_RC(agent_call(&agent_a, do_group_lock, g), 0);
    agent_stop(&agent_a);
    EXPECT_RC(surelock_group_lock(g), EOWNERDEAD);
    EXPECT_ALL_HELD(all, N_ALL - 1);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    agent_start(&agent_a);
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* ---- child processes for the IPC owner-death tests ------------------------------------------ */

static struct ipc_child {
    char path[300];
    int ready_fd; /* the child writes one byte once it holds the lock */
    bool consistent_after; /* for probe children: make it consistent before unlocking */
} ipc_child;

/* Opens the lock, takes it, says so, and waits to be killed. */
static int child_hold_until_killed(void *arg)
{
    struct ipc_child *c = arg;
    surelock_ipc *h = NULL;
    if (surelock_ipc_open(c->path, NULL, &h) != 0) return 200;
    int rc = surelock_ipc_lock(h);
    if (rc != 0 && rc != EOWNERDEAD) return 201;
    char byte = 1;
    if (write(c->ready_fd, &byte, 1) != 1) return 202;
    for (;;) pause();
}

/* Opens the lock and tries it: exits with the trylock's return code (after repairing and
 * unlocking when asked). */
static int child_probe(void *arg)
{
    struct ipc_child *c = arg;
    surelock_ipc *h = NULL;
    if (surelock_ipc_open(c->path, NULL, &h) != 0) return 200;
    int rc = surelock_ipc_trylock(h);
    if (rc == EOWNERDEAD) {
        if (surelock_ipc_needs_recovery(h) != 1) return 203;
        if (c->consistent_after && surelock_ipc_consistent(h) != 0) return 204;
    }
    if ((rc == 0 || rc == EOWNERDEAD) && surelock_ipc_unlock(h) != 0) return 205;
    if (surelock_ipc_close(h) != 0) return 206;
    return rc;
}

/* Makes a process take the lock at path and die holding it (SIGKILL). */
static void kill_a_process_holding(const char *path)
{
    int fds[2];
    if (pipe(fds) != 0) fail_msg("pipe: %s", strerror(errno));
    snprintf(ipc_child.path, sizeof ipc_child.path, "%s", path);
    ipc_child.ready_fd = fds[1];
    pid_t pid = child_spawn(child_hold_until_killed, &ipc_child, CHILD_LIMIT_S);
    close(fds[1]);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    char byte = 0;
    bool holding = poll(&p, 1, WAIT_LIMIT_MS) == 1 && read(fds[0], &byte, 1) == 1;
    close(fds[0]);
    child_kill(pid);
    if (!holding) fail_msg("the child process did not take %s", path);
}

/* Another process tries the lock; returns its trylock's return code (or a 2xx setup code). */
static int probe_from_another_process(const char *path, bool consistent_after)
{
    snprintf(ipc_child.path, sizeof ipc_child.path, "%s", path);
    ipc_child.consistent_after = consistent_after;
    pid_t pid = child_spawn(child_probe, &ipc_child, CHILD_LIMIT_S);
    int status = 0;
    if (!child_wait(pid, CHILD_LIMIT_S * 1000, &status)) fail_msg("the probe process hung");
    return child_exit_code(status);
}

static void a_dead_ipc_holder_makes_lock_return_eownerdead_with_the_whole_group_held(void **state)
{
    (void)state;
    make_all();
    char path[300];
    ipc_path(path, "all.lock");
    surelock_group *g = group_of(all, N_ALL);
    for (int f = 0; f < N_GROUP_FORMS; f++) {
        kill_a_process_holding(path);
        int rc = group_acquire(g, (enum form)f);
        if (rc != EOWNERDEAD)
            fail_msg("ipc holder died: group %s returned %s, expected EOWNERDEAD", form_names[f],
                     errname(rc));
        EXPECT_ALL_HELD(all, N_ALL);
        assert_int_equal(surelock_ipc_needs_recovery(all_ipc), 1);
        EXPECT_RC(surelock_ipc_consistent(all_ipc), 0);
        assert_int_equal(surelock_ipc_needs_recovery(all_ipc), 0);
        EXPECT_RC(surelock_group_unlock(g), 0);
        /* repaired: another process takes it cleanly */
        EXPECT_RC(probe_from_another_process(path, false), 0);
        EXPECT_RC(surelock_group_lock(g), 0);
        EXPECT_RC(surelock_group_unlock(g), 0);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* A trylock/timedlock that takes an ipc member with EOWNERDEAD and then backs out (a later
 * in-process member is busy) leaves it needing recovery: the next acquirer in another process
 * gets EOWNERDEAD, not ENOTRECOVERABLE. */
static void a_backed_out_ipc_member_taken_with_eownerdead_still_needs_recovery_for_the_next_process(void **state)
{
    (void)state;
    make_all();
    char path[300];
    ipc_path(path, "all.lock");
    surelock_group *g = group_of(all, N_ALL);
    for (int f = FORM_TRYLOCK; f < N_GROUP_FORMS; f++) {
        kill_a_process_holding(path);
        EXPECT_RC(agent_call(&agent_a, take_member, &all[4]), 0); /* the last in-process member */
        /* ipc members come first: the group takes the ipc lock (EOWNERDEAD), then fails */
        for (int again = 0; again < 2; again++) {
            uint64_t timeout = f == FORM_TIMEDLOCK ? 20 * MS : 0;
            int rc = f == FORM_TRYLOCK ? surelock_group_trylock(g)
                                       : surelock_group_timedlock(g, timeout);
            int want = f == FORM_TRYLOCK ? EBUSY : ETIMEDOUT;
            if (rc != want)
                fail_msg("group %s returned %s, expected %s", form_names[f], errname(rc),
                         errname(want));
            assert_int_equal(surelock_ipc_needs_recovery(all_ipc), 0); /* not held */
        }
        EXPECT_RC(agent_call(&agent_a, release_member, &all[4]), 0);
        /* the next acquirer, in another process, is told: and repairs it */
        int child_rc = probe_from_another_process(path, true);
        if (child_rc != EOWNERDEAD)
            fail_msg("after the back-out (%s), another process's trylock returned %s (%d), "
                     "expected EOWNERDEAD",
                     form_names[f], errname(child_rc), child_rc);
        /* repaired by that process: clean for everyone */
        EXPECT_RC(surelock_group_lock(g), 0);
        assert_int_equal(surelock_ipc_needs_recovery(all_ipc), 0);
        EXPECT_RC(surelock_group_unlock(g), 0);
    }
    EXPECT_RC(surelock_group_free(g), 0);
    free_all();
}

/* ================================================================================================
 * Never deadlock
 * ============================================================================================== */

#define PHILOSOPHERS 5
#define MEALS 2000
#define DINNER_LIMIT_MS 20000

static struct dinner {
    surelock_mutex *forks[PHILOSOPHERS];
    int fork_user[PHILOSOPHERS]; /* plain: -1 or the philosopher eating with it */
    surelock_group *groups[PHILOSOPHERS];
    helper threads[PHILOSOPHERS];
    int id[PHILOSOPHERS];
    gate start;
    flag finished;
    atomic_int clashes;
    int meals[PHILOSOPHERS];
    int bad_rc[PHILOSOPHERS];
    char bad_msg[PHILOSOPHERS][ERRMSG_SIZE];
} dinner;

static void philosopher(void *arg)
{
    int me = *(int *)arg;
    int left = me, right = (me + 1) % PHILOSOPHERS;
    surelock_group *g = dinner.groups[me];
    if (gate_pass(&dinner.start)) {
        for (int i = 0; i < MEALS; i++) {
            int rc = (i % 4 == 3) ? surelock_group_timedlock(g, SURELOCK_FOREVER)
                                  : surelock_group_lock(g);
            if (rc != 0) {
                dinner.bad_rc[me] = rc;
                save_errmsg(dinner.bad_msg[me]);
                break;
            }
            if (dinner.fork_user[left] != -1 || dinner.fork_user[right] != -1)
                atomic_fetch_add(&dinner.clashes, 1);
            dinner.fork_user[left] = dinner.fork_user[right] = me;
            if ((i & 15) == 0) sched_yield();
            if (dinner.fork_user[left] != me || dinner.fork_user[right] != me)
                atomic_fetch_add(&dinner.clashes, 1);
            dinner.fork_user[left] = dinner.fork_user[right] = -1;
            dinner.meals[me]++;
            rc = surelock_group_unlock(g);
            if (rc != 0) {
                dinner.bad_rc[me] = 1000 + rc;
                save_errmsg(dinner.bad_msg[me]);
                break;
            }
        }
    }
    flag_raise(&dinner.finished);
}

static void dining_philosophers_with_mixed_insertion_orders_all_finish(void **state)
{
    (void)state;
    memset(&dinner, 0, sizeof dinner);
    for (int i = 0; i < PHILOSOPHERS; i++) {
        dinner.forks[i] = new_mutex();
        dinner.fork_user[i] = -1;
    }
    for (int i = 0; i < PHILOSOPHERS; i++) {
        surelock_mutex *left = dinner.forks[i], *right = dinner.forks[(i + 1) % PHILOSOPHERS];
        dinner.groups[i] = new_group();
        /* even philosophers add left then right, odd ones right then left (taking forks by
         * hand in those orders can deadlock: 4 takes fork 4 then 0, 0 takes 0 then 1, ...) */
        surelock_mutex *first = i % 2 == 0 ? left : right, *second = i % 2 == 0 ? right : left;
        EXPECT_RC(surelock_group_add_mutex(dinner.groups[i], first), 0);
        EXPECT_RC(surelock_group_add_mutex(dinner.groups[i], second), 0);
    }
    gate_init(&dinner.start);
    flag_init(&dinner.finished);
    for (int i = 0; i < PHILOSOPHERS; i++) {
        dinner.id[i] = i;
        helper_start(&dinner.threads[i], philosopher, &dinner.id[i]);
    }
    gate_open(&dinner.start, PHILOSOPHERS);
    if (!flag_wait(&dinner.finished, PHILOSOPHERS, DINNER_LIMIT_MS))
        fail_msg("only %d of %d philosophers finished %d meals within %d ms: deadlock",
                 flag_value(&dinner.finished), PHILOSOPHERS, MEALS, DINNER_LIMIT_MS);
    for (int i = 0; i < PHILOSOPHERS; i++) JOIN(&dinner.threads[i]);
    gate_destroy(&dinner.start);
    flag_destroy(&dinner.finished);
    for (int i = 0; i < PHILOSOPHERS; i++) {
        EXPECT_SAVED_RC(dinner.bad_rc[i], 0, dinner.bad_msg[i]);
        assert_int_equal(dinner.meals[i], MEALS);
    }
    assert_int_equal(atomic_load(&dinner.clashes), 0);
    for (int i = 0; i < PHILOSOPHERS; i++) EXPECT_RC(surelock_group_free(dinner.groups[i]), 0);
    for (int i = 0; i < PHILOSOPHERS; i++) EXPECT_RC(surelock_mutex_free(dinner.forks[i]), 0);
}

/* Two threads, groups of every in-process kind built in opposite orders, many rounds. */
#define OPPOSITE_ROUNDS 5000

static struct opposite_run {
    member members[4];
    surelock_group *groups[2];
    helper threads[2];
    int id[2];
    gate start;
    flag finished;
    long counter; /* plain */
    int bad_rc[2];
    char bad_msg[2][ERRMSG_SIZE];
} opposite;

static void opposite_body(void *arg)
{
    int me = *(int *)arg;
    if (gate_pass(&opposite.start)) {
        for (int i = 0; i < OPPOSITE_ROUNDS; i++) {
            int rc = surelock_group_lock(opposite.groups[me]);
            if (rc != 0) {
                opposite.bad_rc[me] = rc;
                save_errmsg(opposite.bad_msg[me]);
                break;
            }
            opposite.counter++;
            rc = surelock_group_unlock(opposite.groups[me]);
            if (rc != 0) {
                opposite.bad_rc[me] = 1000 + rc;
                save_errmsg(opposite.bad_msg[me]);
                break;
            }
        }
    }
    flag_raise(&opposite.finished);
}

static void two_threads_with_groups_in_opposite_insertion_orders_never_deadlock(void **state)
{
    (void)state;
    memset(&opposite, 0, sizeof opposite);
    opposite.members[0] = (member){K_MUTEX, new_mutex()};
    opposite.members[1] = (member){K_RW_EXCLUSIVE, new_rwlock()};
    opposite.members[2] = (member){K_RLOCK, new_rlock()};
    opposite.members[3] = (member){K_MUTEX, new_mutex()};
    for (int t = 0; t < 2; t++) {
        opposite.groups[t] = new_group();
        for (int i = 0; i < 4; i++)
            EXPECT_RC(add_member(opposite.groups[t], &opposite.members[t == 0 ? i : 3 - i]), 0);
    }
    gate_init(&opposite.start);
    flag_init(&opposite.finished);
    for (int t = 0; t < 2; t++) {
        opposite.id[t] = t;
        helper_start(&opposite.threads[t], opposite_body, &opposite.id[t]);
    }
    gate_open(&opposite.start, 2);
    if (!flag_wait(&opposite.finished, 2, WAIT_LIMIT_MS))
        fail_msg("the two threads did not finish within %d ms: deadlock", WAIT_LIMIT_MS);
    for (int t = 0; t < 2; t++) JOIN(&opposite.threads[t]);
    gate_destroy(&opposite.start);
    flag_destroy(&opposite.finished);
    EXPECT_SAVED_RC(opposite.bad_rc[0], 0, opposite.bad_msg[0]);
    EXPECT_SAVED_RC(opposite.bad_rc[1], 0, opposite.bad_msg[1]);
    assert_int_equal(opposite.counter, 2L * OPPOSITE_ROUNDS);
    for (int t = 0; t < 2; t++) EXPECT_RC(surelock_group_free(opposite.groups[t]), 0);
    EXPECT_RC(surelock_mutex_free(opposite.members[0].lock), 0);
    EXPECT_RC(surelock_rwlock_free(opposite.members[1].lock), 0);
    EXPECT_RC(surelock_rlock_free(opposite.members[2].lock), 0);
    EXPECT_RC(surelock_mutex_free(opposite.members[3].lock), 0);
}

/* The same rwlock, in shared mode, in two groups held at once by two threads. */
static struct shared_run {
    surelock_rwlock *l;
    surelock_group *groups[2];
    helper threads[2];
    int id[2];
    gate start;
    atomic_int inside;
    atomic_int saw_both;
    flag release;
    int lock_rc[2], unlock_rc[2];
} shared;

static void shared_body(void *arg)
{
    int me = *(int *)arg;
    if (!gate_pass(&shared.start)) return;
    shared.lock_rc[me] = me == 0 ? surelock_group_lock(shared.groups[me])
                                 : surelock_group_timedlock(shared.groups[me],
                                                            (uint64_t)WAIT_LIMIT_MS * MS);
    if (shared.lock_rc[me] != 0) return;
    atomic_fetch_add(&shared.inside, 1);
    uint64_t end = now_ns() + 5000 * MS; /* an exclusive take would never let both in */
    while (atomic_load(&shared.inside) < 2 && now_ns() < end) sched_yield();
    if (atomic_load(&shared.inside) == 2) atomic_fetch_add(&shared.saw_both, 1);
    flag_wait(&shared.release, 1, WAIT_LIMIT_MS);
    atomic_fetch_sub(&shared.inside, 1);
    shared.unlock_rc[me] = surelock_group_unlock(shared.groups[me]);
}

static void the_same_rwlock_in_shared_mode_is_held_by_two_groups_at_once(void **state)
{
    (void)state;
    memset(&shared, 0, sizeof shared);
    member own[2] = {{K_MUTEX, new_mutex()}, {K_MUTEX, NULL}};
    shared.l = new_rwlock(); /* between the two mutexes in the order */
    own[1].lock = new_mutex();
    for (int t = 0; t < 2; t++) {
        shared.groups[t] = new_group();
        EXPECT_RC(add_member(shared.groups[t], &own[t]), 0);
        EXPECT_RC(surelock_group_add_rwlock(shared.groups[t], shared.l, SURELOCK_SHARED), 0);
    }
    gate_init(&shared.start);
    flag_init(&shared.release);
    for (int t = 0; t < 2; t++) {
        shared.id[t] = t;
        helper_start(&shared.threads[t], shared_body, &shared.id[t]);
    }
    gate_open(&shared.start, 2);
    uint64_t end = now_ns() + (uint64_t)WAIT_LIMIT_MS * MS;
    while (atomic_load(&shared.saw_both) < 2 && now_ns() < end) sleep_ms(1);
    int saw_both = atomic_load(&shared.saw_both);
    /* while both hold it: a writer is kept out, a third reader is let in */
    int wr_rc = surelock_rwlock_trywrlock(shared.l);
    if (wr_rc == 0) surelock_rwlock_unlock(shared.l);
    int rd_rc = surelock_rwlock_tryrdlock(shared.l);
    if (rd_rc == 0) surelock_rwlock_unlock(shared.l);
    surelock_group *excl = new_group();
    EXPECT_RC(surelock_group_add_rwlock(excl, shared.l, SURELOCK_EXCLUSIVE), 0);
    int excl_rc = surelock_group_trylock(excl);
    if (excl_rc == 0) surelock_group_unlock(excl);
    flag_raise(&shared.release);
    for (int t = 0; t < 2; t++) JOIN(&shared.threads[t]);
    gate_destroy(&shared.start);
    flag_destroy(&shared.release);
    for (int t = 0; t < 2; t++) {
        EXPECT_RC(shared.lock_rc[t], 0);
        EXPECT_RC(shared.unlock_rc[t], 0);
    }
    assert_int_equal(saw_both, 2);
    EXPECT_RC(wr_rc, EBUSY);
    EXPECT_RC(rd_rc, 0);
    EXPECT_RC(excl_rc, EBUSY);
    EXPECT_RC(surelock_group_trylock(excl), 0); /* all released */
    EXPECT_RC(surelock_group_unlock(excl), 0);
    EXPECT_RC(surelock_group_free(excl), 0);
    for (int t = 0; t < 2; t++) EXPECT_RC(surelock_group_free(shared.groups[t]), 0);
    EXPECT_RC(surelock_rwlock_free(shared.l), 0);
    EXPECT_RC(surelock_mutex_free(own[0].lock), 0);
    EXPECT_RC(surelock_mutex_free(own[1].lock), 0);
}

/* Two processes, each with a group of the same two IPC locks added in opposite orders, many
 * rounds each; the count they keep in the first lock's payload comes out exact. */
#define PROCESS_ROUNDS 2000

typedef struct payload {
    uint64_t count_a; /* in A's payload */
    uint64_t inside;  /* in A's payload: > 1 would be both processes in at once */
    uint64_t clashes;
} payload;

/* What a child saw when it failed: in memory shared with the parent (MAP_SHARED, made before
 * the fork), so the parent can print the call, the round, the code and the child's errmsg. */
typedef struct child_report {
    int rc;
    int round;
    char call[64];
    char errmsg[ERRMSG_SIZE];
} child_report;

static struct process_run {
    char path_a[300], path_b[300];
    int go_fd; /* the children wait for one byte each */
    int ready_fd;
    int index; /* which child: 1 adds the locks in the opposite order */
    child_report *reports;
} process_run;

static int child_failed(child_report *rep, const char *call, int rc, int round)
{
    rep->rc = rc;
    rep->round = round;
    snprintf(rep->call, sizeof rep->call, "%s", call);
    save_errmsg(rep->errmsg);
    return 1;
}

static int opposite_order_child(void *arg)
{
    struct process_run *r = arg;
    child_report *rep = &r->reports[r->index];
    surelock_ipc *a = NULL, *b = NULL;
    int rc;
    if ((rc = surelock_ipc_open(r->path_a, NULL, &a)) != 0)
        return child_failed(rep, "open a", rc, -1);
    if ((rc = surelock_ipc_open(r->path_b, NULL, &b)) != 0)
        return child_failed(rep, "open b", rc, -1);
    surelock_group *g = NULL;
    if ((rc = surelock_group_new(&g)) != 0) return child_failed(rep, "group_new", rc, -1);
    surelock_ipc *first = r->index == 1 ? b : a, *second = r->index == 1 ? a : b;
    if ((rc = surelock_group_add_ipc(g, first)) != 0)
        return child_failed(rep, "add first", rc, -1);
    if ((rc = surelock_group_add_ipc(g, second)) != 0)
        return child_failed(rep, "add second", rc, -1);
    volatile payload *pa = surelock_ipc_payload(a, NULL);
    volatile uint64_t *pb = surelock_ipc_payload(b, NULL);
    if (pa == NULL || pb == NULL) return child_failed(rep, "payload", 0, -1);
    char byte = 1;
    if (write(r->ready_fd, &byte, 1) != 1) return child_failed(rep, "write ready", errno, -1);
    if (read(r->go_fd, &byte, 1) != 1) return child_failed(rep, "read go", errno, -1);
    for (int i = 0; i < PROCESS_ROUNDS; i++) {
        if ((rc = surelock_group_lock(g)) != 0)
            return child_failed(rep, "surelock_group_lock", rc, i);
        if (pa->inside++ != 0) pa->clashes++;
        uint64_t c = pa->count_a;
        if ((i & 31) == 0) sched_yield();
        pa->count_a = c + 1;
        *pb = *pb + 1;
        pa->inside--;
        if ((rc = surelock_group_unlock(g)) != 0)
            return child_failed(rep, "surelock_group_unlock", rc, i);
    }
    if ((rc = surelock_group_free(g)) != 0) return child_failed(rep, "group_free", rc, -1);
    if ((rc = surelock_ipc_close(a)) != 0) return child_failed(rep, "close a", rc, -1);
    if ((rc = surelock_ipc_close(b)) != 0) return child_failed(rep, "close b", rc, -1);
    return 0;
}

static void two_processes_with_groups_of_two_ipc_locks_in_opposite_orders_never_deadlock(void **state)
{
    (void)state;
    struct process_run *r = &process_run;
    ipc_path(r->path_a, "a.lock");
    ipc_path(r->path_b, "b.lock");
    surelock_ipc *a = open_ipc("a.lock", sizeof(payload));
    surelock_ipc *b = open_ipc("b.lock", sizeof(uint64_t));
    size_t size_a = 0, size_b = 0;
    payload *pa = surelock_ipc_payload(a, &size_a);
    uint64_t *pb = surelock_ipc_payload(b, &size_b);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_true(size_a >= sizeof(payload) && size_b >= sizeof(uint64_t));
    memset(pa, 0, sizeof *pa);
    *pb = 0;
    int go[2], ready[2];
    if (pipe(go) != 0 || pipe(ready) != 0) fail_msg("pipe: %s", strerror(errno));
    r->go_fd = go[0];
    r->ready_fd = ready[1];
    pid_t pids[2];
    r->reports = mmap(NULL, 2 * sizeof(child_report), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r->reports == MAP_FAILED) fail_msg("mmap: %s", strerror(errno));
    memset(r->reports, 0, 2 * sizeof(child_report));
    for (int i = 0; i < 2; i++) {
        r->index = i; /* copied into each child at fork */
        pids[i] = child_spawn(opposite_order_child, r, CHILD_LIMIT_S);
    }
    close(go[0]);
    close(ready[1]);
    /* start gate: both ready, then both go */
    int n_ready = 0;
    char byte;
    struct pollfd p = {.fd = ready[0], .events = POLLIN};
    while (n_ready < 2 && poll(&p, 1, WAIT_LIMIT_MS) == 1 && read(ready[0], &byte, 1) == 1)
        n_ready++;
    ssize_t wrote = write(go[1], "\1\1", 2);
    close(go[1]);
    close(ready[0]);
    int status[2] = {0, 0};
    bool ended[2];
    for (int i = 0; i < 2; i++) ended[i] = child_wait(pids[i], CHILD_LIMIT_S * 1000, &status[i]);
    assert_int_equal(n_ready, 2);
    assert_int_equal(wrote, 2);
    for (int i = 0; i < 2; i++) {
        if (!ended[i])
            fail_msg("process %d did not finish its %d rounds: deadlock", i, PROCESS_ROUNDS);
        int code = child_exit_code(status[i]);
        if (code == -1) fail_msg("process %d was killed, by its alarm: deadlock", i);
        if (code != 0)
            fail_msg("process %d: %s returned %s (%d) in round %d; its errmsg: \"%s\"", i,
                     r->reports[i].call, errname(r->reports[i].rc), r->reports[i].rc,
                     r->reports[i].round, r->reports[i].errmsg);
    }
    munmap(r->reports, 2 * sizeof(child_report));
    assert_int_equal(pa->clashes, 0);
    assert_int_equal(pa->count_a, 2 * PROCESS_ROUNDS);
    assert_int_equal(*pb, 2 * PROCESS_ROUNDS);
    EXPECT_RC(surelock_ipc_close(a), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
}

/* ============================================================================================== */

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(null_arguments_and_bad_modes_are_einval),
        TEST(size_counts_members_and_clear_drops_them_all),
        TEST(adding_the_same_lock_twice_is_eexist_for_every_kind),
        TEST(adding_clearing_or_freeing_while_the_group_is_held_is_ebusy),
        TEST(a_lock_cannot_be_freed_or_closed_while_it_is_a_member_of_a_group),
        TEST(every_acquire_form_takes_every_member_and_unlock_releases_them),
        TEST(unlock_is_eperm_unless_the_caller_holds_the_group),
        TEST(taking_a_group_the_caller_already_holds_is_edeadlk),
        TEST(a_member_mutex_rwlock_or_ipc_the_caller_holds_makes_the_group_edeadlk_taking_nothing),
        TEST(an_ipc_member_held_through_another_handle_makes_the_group_edeadlk_taking_nothing),
        TEST(a_recursive_ipc_file_held_through_another_handle_makes_the_group_edeadlk),
        TEST(a_held_rlock_that_comes_first_is_reentered_and_unlock_restores_its_depth),
        TEST(a_held_rlock_after_an_unheld_member_is_edeadlk_and_nothing_is_taken),
        TEST(a_held_rlock_prefix_with_a_held_mutex_later_is_still_edeadlk),
        TEST(a_failed_trylock_or_timedlock_leaves_every_member_free),
        TEST(a_blocked_lock_and_timedlock_get_the_group_once_the_busy_member_is_released),
        TEST(a_dead_owner_of_an_in_process_member_makes_every_form_return_eownerdead_holding_all),
        TEST(a_backed_out_in_process_member_taken_with_eownerdead_passes_the_notice_on),
        TEST(a_thread_that_exits_holding_a_group_leaves_it_to_the_next_taker_with_eownerdead),
        TEST(a_dead_ipc_holder_makes_lock_return_eownerdead_with_the_whole_group_held),
        TEST(a_backed_out_ipc_member_taken_with_eownerdead_still_needs_recovery_for_the_next_process),
        TEST(dining_philosophers_with_mixed_insertion_orders_all_finish),
        TEST(a_member_reached_after_the_groups_deadline_names_the_groups_timeout),
        TEST(a_member_unlocked_by_its_own_call_is_not_released_again_by_the_group),
        TEST(two_threads_with_groups_in_opposite_insertion_orders_never_deadlock),
        TEST(the_same_rwlock_in_shared_mode_is_held_by_two_groups_at_once),
        TEST(two_processes_with_groups_of_two_ipc_locks_in_opposite_orders_never_deadlock),
    };
    return cmocka_run_group_tests_name("group", tests, watchdog_start, watchdog_stop);
}
