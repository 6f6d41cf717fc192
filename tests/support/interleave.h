/*
 * interleave.h — what the interleaving scenarios share (test_interleave.c, which runs every
 * group, and test_interleave_ipc.c, the ipc open protocol's scenarios): CI's bounds, the
 * scenario initialiser, and the two ways an exploration is judged. The explorer and what it
 * checks: src/sys/testing.h.
 */
#ifndef SURELOCK_TESTS_INTERLEAVE_H
#define SURELOCK_TESTS_INTERLEAVE_H

#include "sys/testing.h"

/* CI's bounds: 3 preemptions (the rwlock use-after-free needs 3 in its 2-thread form) keep
 * the whole binary to seconds plain; SURELOCK_INTERLEAVE_PREEMPTIONS raises it. */
#define BOUND 3
#define MAX_STEPS 1500

#define SCENARIO(nm, n, setup_fn, check_fn, ...)                                               \
    {.name = (nm), .threads = (n), .setup = (setup_fn), .body = {__VA_ARGS__},                  \
     .check = (check_fn), .ctx = NULL, .preemption_bound = BOUND, .max_steps = MAX_STEPS}

/* Explores s; fails the test on a violation (its schedule printed) or when fewer than
 * at_least schedules ran (the steps were not reached). */
void expect_clean(const surelock_testing_scenario *s, long at_least);
/* The explorer's own test: s is broken and must be caught, with `why` in the report and a
 * replayable schedule. */
void expect_violation(const surelock_testing_scenario *s, const char *why);

/* The ipc open group (test_interleave_ipc.c): the number of its failed tests. */
int run_interleave_ipc_group(void);

#endif
