#!/usr/bin/env bash
# Builds tests/consumer/consumer.c against the INSTALLED surelock, as an outside project would,
# and runs it:
#   1. meson install --destdir <tmp> from the given build directory;
#   2. pkg-config --cflags --libs surelock from the staged surelock.pc (its prefix= still names
#      the real prefix, so it is redirected into the staging tree with --define-variable);
#   3. consumer.c compiled as C (gcc -std=c99 -pedantic -Werror) and as C++ (g++ -x c++),
#      both run with LD_LIBRARY_PATH at the staged library directory.
# Exits non-zero on any failure. CC and CXX override the compilers.
#
#   bash tests/consumer/check_installed.sh BUILDDIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BUILDDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
builddir=$(cd "$1" && pwd)
cc=${CC:-gcc}
cxx=${CXX:-g++}
warn=(-pedantic -Werror -Wall -Wextra)

work=$(mktemp -d "${TMPDIR:-/tmp}/surelock-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT
destdir=$work/destdir

fail() { echo "check_installed: $*" >&2; exit 1; }
run() { echo "+ $*"; "$@"; }

run meson install -C "$builddir" --destdir "$destdir" --quiet

pcfile=$(find "$destdir" -path '*/pkgconfig/surelock.pc' | head -n 1)
[ -n "$pcfile" ] || fail "no pkgconfig/surelock.pc under $destdir"
pcdir=$(dirname "$pcfile")
prefix=$(sed -n 's/^prefix=//p' "$pcfile")
[ -n "$prefix" ] || fail "$pcfile has no prefix= line"
staged=$destdir$prefix

export PKG_CONFIG_PATH=$pcdir
pc() { pkg-config --define-variable=prefix="$staged" "$@" surelock; }
[ "$(pkg-config --variable=pcfiledir surelock)" = "$pcdir" ] ||
    fail "pkg-config finds another surelock.pc: $(pkg-config --variable=pcfiledir surelock)"
cflags=$(pc --cflags)
libs=$(pc --libs)
libdir=$(pc --variable=libdir)
includedir=$(pc --variable=includedir)
echo "pkg-config: cflags: $cflags"
echo "pkg-config: libs:   $libs"
case "$libdir" in "$destdir"/*) ;; *) fail "libdir $libdir is outside the staging tree";; esac
case "$includedir" in "$destdir"/*) ;; *) fail "includedir $includedir is outside the staging tree";; esac
[ -f "$includedir/surelock.h" ] || fail "no surelock.h in $includedir"
[ -e "$libdir/libsurelock.so.1" ] || fail "no libsurelock.so.1 in $libdir"
[ -e "$libdir/libsurelock.so" ] || fail "no libsurelock.so (development link) in $libdir"

# $cflags and $libs are word lists from pkg-config: split them on purpose.
# shellcheck disable=SC2086
run "$cc" -std=c99 "${warn[@]}" -o "$work/consumer_c" "$here/consumer.c" $cflags $libs
# shellcheck disable=SC2086
run "$cxx" -x c++ -std=c++11 "${warn[@]}" -o "$work/consumer_cxx" "$here/consumer.c" -x none \
    $cflags $libs

for exe in consumer_c consumer_cxx; do
    # It must run against the staged library, not a copy in the build tree or the system.
    resolved=$(LD_LIBRARY_PATH=$libdir ldd "$work/$exe" | awk '/libsurelock\.so\.1/ {print $3}')
    [ "$resolved" = "$libdir/libsurelock.so.1" ] ||
        fail "$exe resolves libsurelock.so.1 to '$resolved', not $libdir/libsurelock.so.1"
    echo "+ LD_LIBRARY_PATH=$libdir $work/$exe"
    LD_LIBRARY_PATH=$libdir "$work/$exe" || fail "$exe failed"
done
echo "check_installed: the installed package builds and runs as C and as C++"
