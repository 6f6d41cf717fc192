#!/usr/bin/env bash
# `surelock` where this boot's id cannot be read (an empty file bind-mounted over
# /proc/sys/kernel/random/boot_id in a private mount namespace, as a broken container's /proc
# would show it): status and run fail, naming what they could not read, and leave the file
# untouched. An unknown boot id is never taken for "another boot", which status would show as
# a stale file and open would reset under a live holder. Needs root (unshare --mount, mount);
# exits 77 (skipped) otherwise. Usage: test_cli_boot_id.sh PATH/TO/surelock
set -u
surelock=$(readlink -f "$1")
if [ "$(id -u)" != 0 ] || ! timeout 10 unshare --mount true 2>/dev/null; then
    echo "# skipped: needs root and unshare --mount"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0 failed=0
check() { if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1";
          else failed=$((failed + 1)); echo "not ok - $1 (expected $2, got $3)"; fi; }
contains() { if grep -q -- "$3" "$2"; then passed=$((passed + 1)); echo "ok - $1";
             else failed=$((failed + 1)); echo "not ok - $1 (no \"$3\" in: $(cat "$2"))"; fi; }
: > "$dir/empty_boot_id"
# Runs a command in a mount namespace where this boot's id reads as empty.
blind() {
    timeout 20 unshare --mount --propagation private sh -c \
        'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"' "$dir/empty_boot_id" "$@"
}
lock=$dir/job.lock

"$surelock" run "$lock" -- true
cp "$lock" "$dir/orig"
check "the blinded namespace reads an empty boot id" 0 "$(blind cat /proc/sys/kernel/random/boot_id | wc -c)"

blind "$surelock" status "$lock" > "$dir/out" 2> "$dir/err"
check "status exits 1 when this boot's id cannot be read" 1 $?
contains "... naming the file it could not read" "$dir/err" "/proc/sys/kernel/random/boot_id"
contains "... and why it needs it" "$dir/err" "earlier boot"
check "... describing no state (never \"left from an earlier boot\")" "" "$(cat "$dir/out")"
blind "$surelock" status --json "$lock" > "$dir/out" 2> /dev/null
check "status --json exits 1 too" 1 $?
check "... printing no JSON" "" "$(cat "$dir/out")"
: > "$dir/empty.lock"
blind "$surelock" status "$dir/empty.lock" > /dev/null
check "status of an empty placeholder needs no boot id" 0 $?

blind "$surelock" run "$lock" -- touch "$dir/ran" 2> "$dir/err"
check "run exits 1 when this boot's id cannot be read" 1 $?
contains "... with the library's reason" "$dir/err" "cannot read this boot's id"
check "... without running CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
cmp -s "$lock" "$dir/orig"; check "... and the file is untouched" 0 $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
