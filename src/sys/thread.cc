#include "sys/thread.h"

#include <atomic>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sys/errmsg.h"

namespace surelock::sys {

__thread ThreadRecord *current_record __attribute__((tls_model("initial-exec")));

namespace {

std::atomic<uint64_t> next_thread_serial{1};
std::atomic<uint64_t> object_serials{1};

pthread_once_t key_once = PTHREAD_ONCE_INIT;
pthread_key_t record_key;
int key_error; // set once by make_key, read after pthread_once

// Runs on the exiting thread. Every lock it still holds is handed to its kind's handler, which
// releases it marked "owner died". The library is linked -z nodelete, so this code is still
// mapped even if a host dlclose()d the library before this thread ended.
//
// As late as possible: glibc calls thread-specific-data destructors in rounds (in key order
// within a round) for as long as a destructor sets a value again, up to
// PTHREAD_DESTRUCTOR_ITERATIONS rounds. A user's key created after ours runs after ours in
// each round, and may still unlock what the thread holds. So the first rounds only re-arm
// the key; the thread's locks are declared dead in the next-to-last round. Not the last:
// the sanitizer runtimes (ASan, TSan) tear their per-thread state down in the last round,
// after which no instrumented code may run on this thread.
constexpr unsigned exit_round_of_cleanup = PTHREAD_DESTRUCTOR_ITERATIONS - 1;
static_assert(PTHREAD_DESTRUCTOR_ITERATIONS >= 2, "at least one round to re-arm in");

void thread_exit_destructor(void *arg)
{
    auto *record = static_cast<ThreadRecord *>(arg);
    if (++record->exit_rounds < exit_round_of_cleanup &&
        pthread_setspecific(record_key, record) == 0)
        return;
    ErrmsgSnapshot keep_errmsg; // a handler's failure must not leak into a dying thread's text
    while (record->held.next != &record->held) {
        HeldLink *link = record->held.next;
        link->unlink();
        link->owner_exited(link);
    }
    current_record = nullptr;
    deallocate(record->spare_hold);
    deallocate(record->dispatch_queue);
    destroy(record);
}

// In a child after fork(), the forking thread's record is a copy: it keeps its serial (a
// thread may release in-process locks it held, as with pthreads), but gets the child's TID.
void renew_tid_in_child()
{
    if (current_record != nullptr) current_record->tid = gettid();
}

void make_key()
{
    key_error = pthread_key_create(&record_key, thread_exit_destructor);
    if (key_error == 0) pthread_atfork(nullptr, nullptr, renew_tid_in_child);
}

} // namespace

uint64_t next_object_serial()
{
    return object_serials.fetch_add(1, std::memory_order_relaxed);
}

ThreadRecord *create_current_record()
{
    pthread_once(&key_once, make_key);
    if (key_error != 0) {
        fail(ENOMEM, "cannot create the per-thread key: %s", strerror(key_error));
        return nullptr;
    }
    auto *record = create<ThreadRecord>();
    if (record == nullptr) {
        fail(ENOMEM, "out of memory allocating the calling thread's record");
        return nullptr;
    }
    record->serial = next_thread_serial.fetch_add(1, std::memory_order_relaxed);
    record->tid = gettid();
    record->held.prev = record->held.next = &record->held;
    int rc = pthread_setspecific(record_key, record);
    if (rc != 0) {
        destroy(record);
        fail(ENOMEM, "cannot register the calling thread's record: %s", strerror(rc));
        return nullptr;
    }
    current_record = record;
    return record;
}

} // namespace surelock::sys
