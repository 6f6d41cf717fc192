// Deadlock detection: the wait-for graph of in-process locks (issue 14).
//
// A thread about to block on an in-process lock it does not hold registers "I wait for L" and
// walks the graph: L's holder(s), what each holder waits for, their holders, and so on. If
// the walk comes back to the caller, the wait would close a cycle: the acquire returns
// EDEADLK instead of blocking, and errmsg names the cycle. Only the slow path does this: the
// hooks sit on the contended paths (OwnedLock::acquire_contended, once one more look at the
// word found it still held; rwlock_acquire before read_contended/write_contended), so an
// uncontended acquire or release gains nothing.
//
// The registration protocol, and why it is race-free:
//  - Registering, walking and unregistering all happen under one graph lock, a spinlock
//    taken only by threads that are about to sleep or have just woken (and never by a
//    holder's release). So while a walker holds it, every registered thread stays
//    registered: it is inside its acquire call, cannot release anything, and the lock it
//    waits for cannot be freed (freeing a lock someone waits on is undefined by the
//    contract). The walker reads only registered threads' records, the locks they wait for,
//    and those locks' holder words, all of which are therefore alive.
//  - A holder's release is not synchronised with the walk, and need not be: the walk follows
//    a holder only if that holder is registered, and a registered thread releases nothing.
//    A thread's lock-state stores made before it registered are visible to every later
//    walker (the graph lock orders them), so the last thread of a cycle to register sees
//    every edge of it: no cycle is missed, and each cycle is refused exactly once (the
//    refused thread unregisters before releasing the graph lock, so nobody else sees it).
//  - An edge read while its holder is between taking a lock word and recording itself as
//    owner reads as "no holder": that thread is running, not stuck, so the walk stops there
//    (no false positive), and if it later waits on a cycle its own walk finds it.
// Semaphores and amutexes are not owned by a thread and never enter the graph; ipc locks are
// cross-process and stay out of it too.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sys/lock_kind.h"
#include "sys/thread.h"

namespace surelock::sys {

// Formats "<kind name> #<serial>" (the description of an unnamed lock), and
// "<kind name> '<name>'" with bytes outside printable ASCII (and ' and \\) as \\xNN, at most
// 48 bytes of the name then "...".
size_t describe_numbered(const char *kind_name, uint64_t serial, char *out, size_t cap);
size_t describe_plain(const char *text, char *out, size_t cap);
size_t describe_named(const char *kind_name, const char *name, size_t length, char *out,
                      size_t cap);

// Called by a thread about to block on `lock`, which it does not hold. Returns 0 (registered,
// or detection is off) or EDEADLK with errmsg naming the cycle (fn is the public function);
// on EDEADLK nothing is registered. After 0 the caller waits and then calls end_wait, before
// it records itself as the new holder.
int begin_wait(ThreadRecord *me, const LockKind &kind, const void *lock, const char *fn);
void end_wait(ThreadRecord *me);

// A fork child: no thread of the parent but the forking one exists, and none of them waits.
void waits_reset_in_child();

// SURELOCK_DUMP_ON=SIGQUIT (or SIGUSR1, SIGUSR2): installs the dump as that signal's handler
// unless the program already handles or ignores it. Read once, when the first thread record
// is made (the library has no static constructors).
void install_dump_signal_from_environment();

} // namespace surelock::sys
