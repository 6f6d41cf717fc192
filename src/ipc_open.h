// Opening a lock file (ipc_open.cc): everything between a path and a validated mapping of the
// file, which ipc.cc's handle then locks through.
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <sys/stat.h>

#include "ipc_file.h"
#include "surelock.h"

namespace surelock::ipc_open {

// A lock file opened, validated (or initialised) and mapped, with this process's "a handle is
// open" marker set on it.
struct OpenedFile {
    int fd;
    ipc_file::FileHeader *header; // the start of the mapping
    size_t map_size;
    struct stat st;
};

// Opens path as a lock file with the given options, creating it when missing and allowed.
// Returns 0, or an errno with errmsg set and nothing left open or mapped.
int open_file(const char *path, const ipc_file::Options &opt, OpenedFile *out);

// Opening, unlinking and closing run with thread cancellation disabled: a cancellation acted
// on at a read or write while the flock is held would leak it and wedge the file for every
// process.
struct NoCancel {
    int old;
    NoCancel() { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old); }
    ~NoCancel() { pthread_setcancelstate(old, nullptr); }
};

} // namespace surelock::ipc_open
