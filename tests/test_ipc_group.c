/*
 * test_ipc_group.c — the robust cross-process mutex (API.md section 4) as a member of a lock-all
 * group (section 3): what the ipc side must tell a group. (test_group.c covers groups of every
 * kind, ipc members included.) Through the public header only, against the real shared
 * libsurelock.so.1. Fixtures and rules: support/ipc_file.h, support/ipc_holder.h.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

/* A dead holder's TID, still in the header's informational holder_tid, may since belong to the
 * caller: "already held by the caller" goes by the kernel-maintained lock word. */
static void a_group_is_not_edeadlk_when_a_dead_holders_recorded_tid_is_now_the_callers(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    poke32(path, OFF_HOLDER_TID, (uint32_t)current_tid());
    surelock_group *g;
    EXPECT_RC(surelock_group_new(&g), 0);
    EXPECT_RC(surelock_group_add_ipc(g, m), 0);
    EXPECT_RC(surelock_group_lock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_group_trylock(g), 0);
    EXPECT_RC(surelock_group_unlock(g), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0); /* and a real hold is still EDEADLK for the group */
    EXPECT_RC(surelock_group_lock(g), EDEADLK);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_group_clear(g), 0);
    EXPECT_RC(surelock_group_free(g), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(a_group_is_not_edeadlk_when_a_dead_holders_recorded_tid_is_now_the_callers),
    };
    return cmocka_run_group_tests_name("ipc_group", tests, ipc_group_setup, watchdog_stop);
}
