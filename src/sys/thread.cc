#include "sys/thread.h"

#include <atomic>
#include <errno.h>
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
// At the first call, never later: glibc runs thread-specific-data destructors in at most
// PTHREAD_DESTRUCTOR_ITERATIONS rounds, and a record created during that teardown (by another
// key's destructor, possibly in a late round) cannot know which round it is in. Re-arming the
// key to wait for later rounds would then lose the last call: the record leaks and its locks
// stay held by a dead thread forever (and the sanitizers' per-thread state is gone by the last
// round). So an application key destructor that runs after this one finds the locks already
// declared dead (surelock.h says which ones run before).
void thread_exit_destructor(void *arg)
{
    ErrmsgSnapshot keep_errmsg; // a handler's failure must not leak into a dying thread's text
    auto *record = static_cast<ThreadRecord *>(arg);
    while (record->held.next != &record->held) {
        HeldLink *link = record->held.next;
        link->unlink();
        link->owner_exited(link);
    }
    record->read_holds.drain();
    current_record = nullptr;
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
