#include "sys/errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace surelock::sys {

namespace {
// Fixed-size, zero-initialised, thread-local: nothing to allocate or destroy, "" before the
// first failure. 256 bytes holds a full path-bearing message; longer ones are truncated.
__thread char errmsg_buffer[256];
// The innermost ErrmsgSnapshot scope of this thread, nullptr outside any.
__thread ErrmsgSnapshot *innermost_snapshot;
} // namespace

// Called before anything writes the buffer: the innermost scope keeps the text it must put
// back (an outer scope needs nothing: the inner one restores what it saw, which is what the
// outer one saw unless something failed in between, and that failure saved it already).
void save_before_overwrite()
{
    ErrmsgSnapshot *scope = innermost_snapshot;
    if (scope == nullptr || scope->saved_) return;
    memcpy(scope->text_, errmsg_buffer, strlen(errmsg_buffer) + 1);
    scope->saved_ = true;
}

int fail(int code, const char *fmt, ...)
{
    save_before_overwrite();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg_buffer, sizeof errmsg_buffer, fmt, ap);
    va_end(ap);
    return code;
}

int fail_path(int code, const char *path, const char *fmt, ...)
{
    // The reason first, into its own buffer, so that it is never what gets cut.
    char reason[sizeof errmsg_buffer];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    static const char ellipsis[] = "...";
    const size_t dots = sizeof ellipsis - 1;
    size_t used = strlen(reason) + 2; // and ": "
    size_t room = used < sizeof errmsg_buffer - 1 ? sizeof errmsg_buffer - 1 - used : 0;
    size_t len = strlen(path);
    save_before_overwrite();
    char *out = errmsg_buffer;
    if (len <= room) {
        memcpy(out, path, len);
        out += len;
    } else if (room > dots) {
        memcpy(out, ellipsis, dots);
        memcpy(out + dots, path + len - (room - dots), room - dots);
        out += room;
    }
    if (out != errmsg_buffer) {
        memcpy(out, ": ", 2);
        out += 2;
    }
    memcpy(out, reason, strlen(reason) + 1);
    return code;
}

const char *errmsg()
{
    return errmsg_buffer;
}

ErrmsgSnapshot::ErrmsgSnapshot() : outer_(innermost_snapshot)
{
    innermost_snapshot = this;
}

void ErrmsgSnapshot::forget_unwound_scopes()
{
    innermost_snapshot = nullptr;
}

ErrmsgSnapshot::~ErrmsgSnapshot()
{
    if (saved_) memcpy(errmsg_buffer, text_, strlen(text_) + 1);
    innermost_snapshot = outer_;
}

} // namespace surelock::sys
