// The one error path: every failing call returns a positive errno and leaves the detail in a
// fixed thread-local buffer that surelock_errmsg() hands out.
#pragma once

namespace surelock::sys {

// Formats the detail of a failure into the calling thread's errmsg buffer and returns `code`,
// so a failing path reads `return fail(EINVAL, "...")`.
int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), cold));

// As fail, for a message about a file: "PATH: REASON". The reason always survives whole; a
// path too long to fit beside it keeps its tail behind a leading "..." (the file name is the
// part that tells files apart). An empty path gives "REASON" alone.
int fail_path(int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), cold));

// The calling thread's buffer: "" until its first failure.
const char *errmsg();

// Keeps the buffer as it is around code that may fail on the caller's behalf but must not
// change what the caller sees (callbacks, thread-exit cleanup, a group backing out). Copies the
// text only, not the whole buffer. Nothing outside the object points at it, so a scope that a
// forced unwind skips (pthread_exit in a callback, which the contract forbids) leaves nothing
// dangling.
struct ErrmsgSnapshot {
    char text[256];
    ErrmsgSnapshot();
    ~ErrmsgSnapshot();
};

} // namespace surelock::sys
