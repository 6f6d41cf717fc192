// Library-wide entry points: version and the calling thread's error detail.

#include "surelock.h"
#include "sys/errmsg.h"

#define SURELOCK_STRINGIFY2(x) #x
#define SURELOCK_STRINGIFY(x) SURELOCK_STRINGIFY2(x)

extern "C" {

SURELOCK_API const char *surelock_version(void)
{
    return SURELOCK_STRINGIFY(SURELOCK_VERSION_MAJOR) "." SURELOCK_STRINGIFY(
        SURELOCK_VERSION_MINOR) "." SURELOCK_STRINGIFY(SURELOCK_VERSION_PATCH);
}

SURELOCK_API const char *surelock_errmsg(void)
{
    return surelock::sys::errmsg();
}

} // extern "C"
