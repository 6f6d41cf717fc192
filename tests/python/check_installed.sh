#!/usr/bin/env bash
# The installed Python package: `meson install --destdir` must put it where the interpreter
# meson built it for imports packages from (its platlib for our prefix: on Debian with the
# default /usr/local prefix, /usr/local/lib/python3.11/dist-packages), and it must import
# from there and find the installed libsurelock.so.1.
#   tests/python/check_installed.sh BUILDDIR
set -euo pipefail
build=${1:?usage: check_installed.sh BUILDDIR}
python=/usr/bin/python3
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
prefix=$(meson introspect "$build" --buildoptions |
         "$python" -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
libdir=$(meson introspect "$build" --buildoptions |
         "$python" -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
meson install -C "$build" --destdir "$dest" >/dev/null
site=$("$python" -c 'import sys; p=sys.argv[1].rstrip("/")+"/"; print(next(x for x in sys.path if x.startswith(p) and x.endswith("-packages")))' "$prefix")
echo "interpreter's package directory for prefix $prefix: $site"
test -f "$dest$site/surelock/__init__.py" || { echo "FAIL: surelock is not installed under $site"; find "$dest" -name __init__.py; exit 1; }
test -f "$dest$site/surelock/py.typed"
ls "$dest$site"/surelock/_surelock*.so >/dev/null
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
# What a real install gives with no PYTHONPATH: the directory is on sys.path; here the
# destdir stands in for / (and LD_LIBRARY_PATH for ldconfig's cache).
cd /
PYTHONPATH="$dest$site" LD_LIBRARY_PATH="$dest$libdir" "$python" -c '
import surelock, sys
assert surelock.__file__.startswith(sys.argv[1]), surelock.__file__
with surelock.RLock("check_installed"):
    pass
print("installed surelock", surelock.__version__, "imports from", surelock.__file__,
      "with libsurelock", surelock.library_version())
' "$dest$site"
