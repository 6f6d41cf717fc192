#include "sys/errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace surelock::sys {

namespace {
// Fixed-size, zero-initialised, thread-local: nothing to allocate or destroy, "" before the
// first failure. 256 bytes holds a full path-bearing message; longer ones are truncated.
__thread char errmsg_buffer[256];
} // namespace

int fail(int code, const char *fmt, ...)
{
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

ErrmsgSnapshot::ErrmsgSnapshot()
{
    memcpy(text, errmsg_buffer, strlen(errmsg_buffer) + 1);
}

ErrmsgSnapshot::~ErrmsgSnapshot()
{
    memcpy(errmsg_buffer, text, strlen(text) + 1);
}

} // namespace surelock::sys
