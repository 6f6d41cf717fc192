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
// change what the caller sees (callbacks, thread-exit cleanup, a group backing out). The text
// is saved lazily, by the first failure inside the scope, so a scope in which nothing fails
// (every grant's callback, normally) copies nothing. Scopes nest.
class ErrmsgSnapshot {
public:
    ErrmsgSnapshot();
    ~ErrmsgSnapshot();
    // For the thread-exit destructor, which runs outside every scope: forgets scopes a forced
    // unwind (pthread_exit or cancellation inside a callback, which the contract forbids) may
    // have left registered without running their destructors.
    static void forget_unwound_scopes();
    ErrmsgSnapshot(const ErrmsgSnapshot &) = delete;
    ErrmsgSnapshot &operator=(const ErrmsgSnapshot &) = delete;

private:
    friend void save_before_overwrite();
    ErrmsgSnapshot *outer_; // the enclosing scope on this thread
    bool saved_ = false;
    char text_[256];
};

} // namespace surelock::sys
