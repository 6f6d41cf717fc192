#!/bin/sh
# Regenerates abi/surelock.abi from a build of the library (buildtype with debug info).
# Usage: abi/update-baseline.sh BUILDDIR
set -eu
here=$(cd "$(dirname "$0")" && pwd)
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --drop-private-types --drop-undefined-syms \
    --headers-dir "$here/../include" --out-file "$here/surelock.abi" \
    "$1/libsurelock.so.1"
echo "wrote $here/surelock.abi"
