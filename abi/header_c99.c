/* The public header compiles as strict C99 (-std=c99 -pedantic -Werror) and is usable. */
#include <surelock.h>

#include <stdio.h>
#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)

int main(void)
{
    const char *expected = STR(SURELOCK_VERSION_MAJOR) "." STR(SURELOCK_VERSION_MINOR) "." STR(
        SURELOCK_VERSION_PATCH);
    surelock_rlock *l = NULL;
    if (strcmp(surelock_version(), expected) != 0) {
        fprintf(stderr, "surelock_version() = %s, header says %s\n", surelock_version(), expected);
        return 1;
    }
    if (surelock_rlock_new(&l) != 0 || surelock_rlock_lock(l) != 0 || surelock_rlock_unlock(l) != 0 ||
        surelock_rlock_free(l) != 0) {
        fprintf(stderr, "basic rlock use failed: %s\n", surelock_errmsg());
        return 1;
    }
    return SURELOCK_FOREVER == UINT64_MAX ? 0 : 1;
}
