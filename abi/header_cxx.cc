// The public header compiles as C++ (-pedantic -Werror), with C linkage for every function.
#include <surelock.h>

#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(std::is_same<decltype(&surelock_rlock_lock), int (*)(surelock_rlock *)>::value,
              "C++ sees the C signature");

int main()
{
    surelock_rlock *l = nullptr;
    if (surelock_rlock_global("surelock:header_cxx", &l) != 0 || surelock_rlock_lock(l) != 0 ||
        surelock_rlock_depth(l) != 1 || surelock_rlock_unlock(l) != 0) {
        std::fprintf(stderr, "basic rlock use from C++ failed: %s\n", surelock_errmsg());
        return 1;
    }
    return std::strcmp(surelock_version(), "1.1.0") == 0 ? 0 : 1;
}
