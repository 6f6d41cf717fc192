// What other primitives (lock groups) need of an ipc handle beyond the public API.
#pragma once

#include <stdint.h>

#include "surelock.h"

namespace surelock::ipc {

// Releases one level of the caller's hold. With keep_needs_recovery, a lock taken with
// EOWNERDEAD is released still needing recovery, so the next acquirer in any process gets
// EOWNERDEAD (a group backing out); otherwise it becomes not recoverable (API.md section 4).
int release(surelock_ipc *m, bool keep_needs_recovery, const char *fn);

// The random 128-bit id in the file's header: the order of IPC members in lock groups.
const uint8_t *lock_id(const surelock_ipc *m);

// Whether two handles map the same lock file.
bool same_file(const surelock_ipc *a, const surelock_ipc *b);

// Whether the calling thread holds the lock through this handle.
bool held_by_caller(const surelock_ipc *m);

} // namespace surelock::ipc
