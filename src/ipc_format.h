// The lock file's on-disk format (documented for users in surelock.h), shared by the library,
// the `surelock status` command and the file-format fuzzer.
#pragma once

#include <atomic>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "surelock.h"

namespace surelock::ipc_format {

constexpr char file_magic[8] = {'S', 'U', 'R', 'E', 'L', 'O', 'C', 'K'};
constexpr uint32_t format_version = 1;
constexpr uint32_t state_ready = 0x52454459; // "REDY"
constexpr size_t header_size = 4096;
constexpr uint32_t known_flags =
    SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_ANY_OWNER;
constexpr uint32_t file_flags = SURELOCK_IPC_RECURSIVE; // the flags a file records

enum : uint32_t { CONSISTENT = 0, NEEDS_RECOVERY = 1, NOT_RECOVERABLE = 2 };

// The on-disk header; offsets are part of the format and documented in surelock.h.
struct FileHeader {
    char magic[8];
    uint32_t format_version;
    std::atomic<uint32_t> init_state;
    uint16_t pointer_size;
    uint16_t mutex_size;
    uint16_t mutex_align;
    uint16_t header_size;
    char libc[16];
    char boot_id[40];
    uint64_t pid_namespace;
    uint8_t lock_id[16];
    uint32_t creator_uid;
    uint32_t flags;
    uint64_t payload_size;
    std::atomic<uint64_t> owner_deaths;
    std::atomic<uint32_t> recovery_state;
    std::atomic<int32_t> holder_tid;
    alignas(64) pthread_mutex_t mutex;
};

static_assert(offsetof(FileHeader, init_state) == 12);
static_assert(offsetof(FileHeader, libc) == 24);
static_assert(offsetof(FileHeader, boot_id) == 40);
static_assert(offsetof(FileHeader, pid_namespace) == 80);
static_assert(offsetof(FileHeader, lock_id) == 88);
static_assert(offsetof(FileHeader, creator_uid) == 104);
static_assert(offsetof(FileHeader, payload_size) == 112);
static_assert(offsetof(FileHeader, owner_deaths) == 120);
static_assert(offsetof(FileHeader, recovery_state) == 128);
static_assert(offsetof(FileHeader, holder_tid) == 132);
static_assert(offsetof(FileHeader, mutex) == 192);
static_assert(sizeof(FileHeader) <= header_size);

} // namespace surelock::ipc_format
