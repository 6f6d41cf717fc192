// What other primitives (lock groups) need of an ipc handle beyond the public API.
#pragma once

#include <stdint.h>

#include "surelock.h"
#include "sys/thread.h"

namespace surelock::ipc {

// Releases one level of the caller's hold. With keep_needs_recovery, a lock taken with
// EOWNERDEAD is released still needing recovery, so the next acquirer in any process gets
// EOWNERDEAD (a group backing out); otherwise it becomes not recoverable (API.md section 4).
int release(surelock_ipc *m, bool keep_needs_recovery, const char *fn);

// The random 128-bit id in the file's header: the order of IPC members in lock groups.
const uint8_t *lock_id(const surelock_ipc *m);

// The lock file's device and inode: tells apart copies of one file (which share a lock id).
void file_identity(const surelock_ipc *m, uint64_t *dev, uint64_t *ino);

// How many lock groups list this handle (close is EBUSY while any do).
sys::Membership *membership(surelock_ipc *m);

// Whether the calling thread holds the lock file's mutex through any handle (lock groups:
// every handle to one file is the same lock).
bool file_held_by_caller(const surelock_ipc *m);

} // namespace surelock::ipc
