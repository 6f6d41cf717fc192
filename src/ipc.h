// What lock groups need of an ipc handle besides its lock-kind table entry (ipc_kind): its
// place in a group's order.
#pragma once

#include <stdint.h>

#include "surelock.h"

namespace surelock::ipc {

// The random 128-bit id in the file's header: the order of IPC members in lock groups.
const uint8_t *lock_id(const surelock_ipc *m);

// The lock file's device and inode: tells apart copies of one file (which share a lock id).
void file_identity(const surelock_ipc *m, uint64_t *dev, uint64_t *ino);

} // namespace surelock::ipc
