// Blocking, as the explorer's scheduled threads do it (test build only; the scheduler is
// interleave.cc). A futex wait or wake in futex.cc, and a body's await, come here instead of
// the kernel when the calling thread is scheduled: a wait re-checks its word and blocks the
// thread in the explorer, a wake unblocks the longest sleepers, so no schedule depends on real
// time or on the kernel's choices. Kept apart from the scheduler because it is the model of
// one kernel object (the futex), as interleave_process.cc is of files and processes.

#ifdef SURELOCK_TESTING

#include "sys/interleave_explorer.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>

using namespace surelock::sys::interleave;

extern "C" {

int surelock_testing_futex_wait(const void *word, unsigned expected, int timed, unsigned bits,
                                int *out)
{
    if (my_index < 0) return 0;
    int me = my_index;
    pthread_mutex_lock(&ex.mu);
    step_locked(word, "futex_wait", "compare and sleep", true);
    if (*static_cast<const volatile unsigned *>(word) != expected) {
        *out = EAGAIN;
    } else {
        record(me, word, "futex_wait", "sleeps");
        ex.state[me] = BLOCKED_FUTEX;
        ex.wait_word[me] = word;
        ex.wait_bits[me] = bits;
        ex.wait_timed[me] = timed != 0;
        ex.wait_order[me] = ++ex.sleeps;
        ex.wait_result[me] = 0;
        decide(me);
        *out = ex.wait_result[me];
    }
    pthread_mutex_unlock(&ex.mu);
    return 1;
}

// Wakes the longest sleepers first (the kernel's order for one priority). A wake never
// counts as touching the memory: by design it may name an address already freed.
int surelock_testing_futex_wake(const void *word, int count, unsigned bits, int *out)
{
    if (my_index < 0) return 0;
    pthread_mutex_lock(&ex.mu);
    step_locked(word, "futex_wake", "wake", false);
    int woken = 0;
    while (woken < count) {
        int pick = -1;
        for (int i = 0; i < ex.threads; i++)
            if (ex.state[i] == BLOCKED_FUTEX && ex.wait_word[i] == word &&
                (ex.wait_bits[i] & bits) != 0 &&
                (pick < 0 || ex.wait_order[i] < ex.wait_order[pick]))
                pick = i;
        if (pick < 0) break;
        ex.state[pick] = RUNNABLE;
        record(pick, word, "(woken)", "futex_wait returns");
        woken++;
    }
    *out = woken;
    pthread_mutex_unlock(&ex.mu);
    return 1;
}

void surelock_testing_await(const volatile int *flag)
{
    if (my_index < 0) {
        while (*flag == 0) sched_yield();
        return;
    }
    pthread_mutex_lock(&ex.mu);
    record(my_index, (const void *)flag, "await", "waits for its flag");
    if (*flag == 0) {
        ex.state[my_index] = BLOCKED_FLAG;
        ex.await_flag[my_index] = flag;
    }
    decide(my_index);
    pthread_mutex_unlock(&ex.mu);
}

} // extern "C"

#endif // SURELOCK_TESTING
