#!/usr/bin/env bash
# The README's CMake recipe (between the cmake-recipe markers), built against the INSTALLED
# surelock (whose LICENSE and man pages must be installed too): meson install --destdir from
# BUILDDIR, then cmake + pkg-config (IMPORTED_TARGET) with PKG_CONFIG_SYSROOT_DIR pointing
# into the staging tree, consumer.c as app.c, and the program run against the staged library.
#
#   bash tests/consumer/check_cmake.sh BUILDDIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILDDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
builddir=$(cd "$1" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/surelock-cmake.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "check_cmake: $*" >&2; exit 1; }

meson install -C "$builddir" --destdir "$work/destdir" --quiet
pcfile=$(find "$work/destdir" -path '*/pkgconfig/surelock.pc' | head -n 1)
[ -n "$pcfile" ] || fail "no surelock.pc under $work/destdir"
# The package also installs its licence and man pages.
for f in share/doc/surelock/LICENSE share/man/man1/surelock.1 share/man/man3/surelock.3; do
    [ -n "$(find "$work/destdir" -path "*/$f")" ] || fail "meson install did not install $f"
done

mkdir "$work/app"
awk '/<!-- cmake-recipe -->/{f=1;next} /<!-- \/cmake-recipe -->/{f=0} f && !/^```/' \
    "$root/README.md" > "$work/app/CMakeLists.txt"
grep -q IMPORTED_TARGET "$work/app/CMakeLists.txt" || fail "no CMake recipe in README.md"
cp "$here/consumer.c" "$work/app/app.c"
echo "+ CMakeLists.txt from README.md:"; cat "$work/app/CMakeLists.txt"

export PKG_CONFIG_PATH=$(dirname "$pcfile") PKG_CONFIG_SYSROOT_DIR=$work/destdir
cmake -S "$work/app" -B "$work/app/build" >/dev/null
cmake --build "$work/app/build" >/dev/null
libdir=$(dirname "$(find "$work/destdir" -name libsurelock.so.1 | head -n 1)")
resolved=$(LD_LIBRARY_PATH=$libdir ldd "$work/app/build/app" | awk '/libsurelock\.so\.1/ {print $3}')
[ "$resolved" = "$libdir/libsurelock.so.1" ] || fail "app resolves libsurelock.so.1 to '$resolved'"
LD_LIBRARY_PATH=$libdir "$work/app/build/app" || fail "the CMake-built app failed"
echo "check_cmake: the README's CMake recipe builds and runs against the installed package"
