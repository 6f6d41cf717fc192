#!/bin/sh
# Builds one attack program against the plain shared library (or the internal static build
# with INTERNAL=1). Usage: ./build.sh NAME [extra cc flags]
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../..
b=${BUILD:-$root/build}
name=$1; shift
if [ -n "$INTERNAL" ]; then
  g++ -x none -o "$here/$name" -DSURELOCK_TESTING -I"$root/include" -I"$root/src" "$here/$name.c" "$b/libsurelock_internal.a" -lpthread "$@" 2>/dev/null || \
  { gcc -c -O1 -g -DSURELOCK_TESTING -I"$root/include" -I"$root/src" "$here/$name.c" -o "$here/$name.o" "$@" && g++ -o "$here/$name" "$here/$name.o" "$b/libsurelock_internal.a" -lpthread "$@"; }
else
  gcc -O1 -g -I"$root/include" "$here/$name.c" -o "$here/$name" -L"$b" -lsurelock -Wl,-rpath,"$b" -lpthread "$@"
fi
