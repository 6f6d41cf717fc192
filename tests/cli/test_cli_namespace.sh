#!/usr/bin/env bash
# A lock file used from another PID namespace (`unshare --pid --fork`, as a container would):
# robust futexes name their holder by thread id, which differs between namespaces, so the
# library refuses the file (EPROTO, "made in another PID namespace"); `run` says what to do and
# the file is left untouched, in both directions. Needs root (unshare); exits 77 (skipped)
# otherwise. Usage: test_cli_namespace.sh PATH/TO/surelock
set -u
surelock=$(readlink -f "$1")
if [ "$(id -u)" != 0 ] || ! timeout 10 unshare --pid --fork --mount-proc true 2>/dev/null; then
    echo "# skipped: needs root and unshare --pid"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh" # check, contains
inside() { timeout 20 unshare --pid --fork --mount-proc "$@"; }

"$surelock" run "$dir/host.lock" -- true
cp "$dir/host.lock" "$dir/host.orig"
inside "$surelock" run "$dir/host.lock" -- touch "$dir/ran" 2>"$dir/err"
check "a lock file made outside is refused inside a new PID namespace" 1 $?
contains "... with the library's reason" "$dir/err" "made in another PID namespace"
contains "... and what to do" "$dir/err" "its own lock file"
check "... without running CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
cmp -s "$dir/host.lock" "$dir/host.orig"; check "... and the file is untouched" 0 $?
inside "$surelock" status "$dir/host.lock" > "$dir/out"
contains "status inside says it was made in another PID namespace" "$dir/out" "made in another PID namespace"

inside "$surelock" run "$dir/inner.lock" -- true
check "a lock file made inside a PID namespace works there" 0 $?
cp "$dir/inner.lock" "$dir/inner.orig"
"$surelock" run "$dir/inner.lock" -- touch "$dir/ran" 2>"$dir/err"
check "... and is refused outside it" 1 $?
contains "... with the library's reason" "$dir/err" "made in another PID namespace"
cmp -s "$dir/inner.lock" "$dir/inner.orig"; check "... and the file is untouched" 0 $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
