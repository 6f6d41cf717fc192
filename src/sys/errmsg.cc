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

const char *errmsg()
{
    return errmsg_buffer;
}

ErrmsgSnapshot::ErrmsgSnapshot()
{
    memcpy(text, errmsg_buffer, sizeof text);
}

ErrmsgSnapshot::~ErrmsgSnapshot()
{
    memcpy(errmsg_buffer, text, sizeof text);
}

} // namespace surelock::sys
