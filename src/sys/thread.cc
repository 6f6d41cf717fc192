#include "sys/thread.h"

#include <atomic>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "sys/alloc.h"
#include "sys/errmsg.h"
#include "sys/waits.h"
#ifdef SURELOCK_TESTING
#include "sys/testing.h"
#endif

namespace surelock::sys {

__thread ThreadRecord *current_record __attribute__((tls_model("initial-exec")));
__thread uint64_t current_serial __attribute__((tls_model("initial-exec"))) = no_serial;

namespace {

std::atomic<uint64_t> next_thread_serial{1};
std::atomic<uint64_t> object_serials{1};

// Records are recycled, never freed: a finished thread's record goes on free_records for the
// next new thread, and every record stays on all_records. The detector's walk and the wait
// dump can then read any record without ever touching freed memory. A spinlock guards the
// free list (thread creation and exit only), so a fork child can simply reset it.
std::atomic<ThreadRecord *> all_records{nullptr};
ThreadRecord *free_records;
std::atomic<bool> free_records_locked{false};

void lock_free_records()
{
    while (free_records_locked.exchange(true, std::memory_order_acquire)) sched_yield();
}

void unlock_free_records()
{
    free_records_locked.store(false, std::memory_order_release);
}

#ifdef SURELOCK_TESTING
// The fuzzers' models expect every new thread to allocate its record (their workers start and
// end in an order the library cannot see): surelock_testing_never_reuse_thread_records().
std::atomic<bool> reuse_disabled{false};
#endif

void recycle(ThreadRecord *record)
{
    record->in_use.store(false, std::memory_order_release);
#ifdef SURELOCK_TESTING
    if (reuse_disabled.load(std::memory_order_relaxed)) return; // stays on all_records, unused
#endif
    lock_free_records();
    record->free_next = free_records;
    free_records = record;
    unlock_free_records();
}

ThreadRecord *reuse_or_make_record()
{
    lock_free_records();
    ThreadRecord *record = free_records;
    if (record != nullptr) free_records = record->free_next;
    unlock_free_records();
    if (record != nullptr) {
        // A record recycled in a fork child still lists its parent thread's read holds:
        // dropped unreleased (those locks stay read-held in the child, as with pthreads).
        record->read_holds.forget();
        record->registered = false;
        record->wait_lock.store(nullptr, std::memory_order_relaxed);
        record->wait_kind.store(nullptr, std::memory_order_relaxed);
        return record;
    }
    record = create<ThreadRecord>();
    if (record == nullptr) return nullptr;
    ThreadRecord *head = all_records.load(std::memory_order_relaxed);
    do record->all_next = head;
    while (!all_records.compare_exchange_weak(head, record, std::memory_order_release,
                                              std::memory_order_relaxed));
    return record;
}

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
    while (record->held.next != &record->held) { // newest first: the list, then the slot
        HeldLink *link = record->held.next;
        link->unlink();
        link->owner_exited(link);
    }
    if (HeldLink *link = record->held_slot) {
        record->held_slot = nullptr;
        link->owner_exited(link);
    }
    record->read_holds.drain();
    current_serial = no_serial;
    current_record = nullptr;
    recycle(record);
}

// In a child after fork(), the forking thread's record is a copy: it keeps its serial (a
// thread may release in-process locks it held, as with pthreads), but gets the child's TID.
// Every other thread's record is a copy of a thread that does not exist here: recycled, and
// no longer counted as waiting by the deadlock detector (a child never gets EDEADLK from
// its parent's threads).
void renew_tid_in_child()
{
    if (current_record != nullptr) current_record->tid = gettid();
    free_records_locked.store(false, std::memory_order_relaxed);
    waits_reset_in_child();
    for (ThreadRecord *r = all_records.load(std::memory_order_relaxed); r != nullptr;
         r = r->all_next)
        if (r != current_record && r->in_use.load(std::memory_order_relaxed)) recycle(r);
}

void make_key()
{
    key_error = pthread_key_create(&record_key, thread_exit_destructor);
    if (key_error == 0) pthread_atfork(nullptr, nullptr, renew_tid_in_child);
    install_dump_signal_from_environment();
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
    ThreadRecord *record = reuse_or_make_record();
    if (record == nullptr) {
        fail(ENOMEM, "out of memory allocating the calling thread's record");
        return nullptr;
    }
    record->serial = next_thread_serial.fetch_add(1, std::memory_order_relaxed);
    record->tid = gettid();
    record->held.prev = record->held.next = &record->held;
    record->held_slot = nullptr;
    int rc = pthread_setspecific(record_key, record);
    if (rc != 0) {
        recycle(record);
        fail(ENOMEM, "cannot register the calling thread's record: %s", strerror(rc));
        return nullptr;
    }
    current_record = record;
    current_serial = record->serial;
    record->in_use.store(true, std::memory_order_release);
    return record;
}

ThreadRecord *all_thread_records()
{
    return all_records.load(std::memory_order_acquire);
}

} // namespace surelock::sys

#ifdef SURELOCK_TESTING
// The forgotten records stay on all_records (never freed), marked not in use.
extern "C" void surelock_testing_never_reuse_thread_records(void)
{
    surelock::sys::reuse_disabled.store(true, std::memory_order_relaxed);
    surelock_testing_forget_finished_thread_records();
}

extern "C" void surelock_testing_forget_finished_thread_records(void)
{
    surelock::sys::lock_free_records();
    surelock::sys::free_records = nullptr;
    surelock::sys::unlock_free_records();
}
#endif
