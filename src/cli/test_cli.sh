#!/usr/bin/env bash
# `surelock run` and `surelock status`, end to end: exit statuses, timeouts, a holder killed
# with SIGKILL (warn / fail), status output, usage errors. Every wait is bounded.
# Usage: test_cli.sh PATH/TO/surelock
set -u
surelock=$1
dir=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
lock=$dir/job.lock
passed=0 failed=0

check() { # DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1";
    else failed=$((failed + 1)); echo "not ok - $1 (expected $2, got $3)"; fi
}
contains() { # DESCRIPTION FILE TEXT
    if grep -q -- "$3" "$2"; then passed=$((passed + 1)); echo "ok - $1";
    else failed=$((failed + 1)); echo "not ok - $1 (no \"$3\" in: $(cat "$2"))"; fi
}
wait_for_status() { # TEXT: polls `surelock status` for up to 10 s
    for _ in $(seq 100); do "$surelock" status "$lock" 2>/dev/null | grep -q -- "$1" && return 0; sleep 0.1; done
    return 1
}

"$surelock" run "$lock" -- true; check "run exits 0 when CMD succeeds" 0 $?
"$surelock" run "$lock" -- sh -c 'exit 3'; check "run exits with CMD's status" 3 $?
"$surelock" run "$lock" -- sh -c 'kill -TERM $$'; check "run reports CMD killed by a signal as 128+N" 143 $?
"$surelock" run "$lock" -- /nonexistent/cmd 2>/dev/null; check "run exits 127 when CMD cannot start" 127 $?
"$surelock" status "$lock" > "$dir/out"; check "status exits 0 on a lock file" 0 $?
contains "status names the format version" "$dir/out" "format version 1"
contains "status shows a free lock" "$dir/out" "state: *free$"
contains "status shows the boot id matches" "$dir/out" "matches this boot"
contains "status shows the payload size" "$dir/out" "payload: *0 bytes"

# A holder that keeps the lock: a second run times out with 75 without running its CMD.
"$surelock" run "$lock" -- sleep 30 & holder=$!
wait_for_status "held by PID $holder"; check "status names the holding process while CMD runs" 0 $?
start=$(date +%s%N)
"$surelock" run --timeout 0.3 "$lock" -- touch "$dir/ran" 2>"$dir/err"; rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "run --timeout exits 1 (as flock -w) while another process holds the lock" 1 "$rc"
check "run --timeout does not run CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
check "run --timeout waits at least the timeout" yes "$([ "$elapsed_ms" -ge 300 ] && echo yes || echo no)"
contains "the timeout is explained on stderr" "$dir/err" "not acquired within the timeout"

# Kill the holding surelock process with SIGKILL: the next run is told.
sleeper=$(pgrep -P "$holder")
kill -9 "$holder"; wait "$holder" 2>/dev/null
[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
wait_for_status "last holder died"; check "status shows the previous holder died" 0 $?
"$surelock" status "$lock" | grep -q "owner deaths: 1"; check "status counts the owner death" 0 $?
"$surelock" run --on-owner-dead=fail "$lock" -- touch "$dir/ran" 2>"$dir/err"; rc=$?
check "--on-owner-dead=fail exits 75" 75 "$rc"
check "--on-owner-dead=fail does not run CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
contains "--on-owner-dead=fail says why" "$dir/err" "died while holding"
"$surelock" run "$lock" -- sh -c 'exit 4' 2>"$dir/err"; rc=$?
check "a recovering CMD that fails passes its status through" 4 "$rc"
contains "warn mode warns on stderr" "$dir/err" "warning: .*died while holding"
contains "a failed recovery leaves the lock needing recovery" "$dir/err" "still needs recovery"
"$surelock" run "$lock" -- touch "$dir/ran" 2>"$dir/err"; rc=$?
check "warn mode runs CMD and succeeds" 0 "$rc"
contains "warn mode warns again until a CMD recovers" "$dir/err" "warning"
"$surelock" run "$lock" -- true 2>"$dir/err"; rc=$?
check "after a successful recovery the lock is consistent" 0 "$rc"
check "no warning once recovered" 0 "$(wc -c < "$dir/err")"
"$surelock" status "$lock" | grep -q "recovery: *consistent"; check "status shows it consistent" 0 $?

# Usage and input errors.
"$surelock" run "$lock" sh -c 'exit 5' 2>/dev/null; check "run without -- runs CMD, as flock does" 5 $?
"$surelock" run "$lock" -- 2>/dev/null; check "run without CMD is a usage error" 2 $?
"$surelock" run --timeout abc "$lock" -- true 2>/dev/null; check "a bad --timeout is a usage error" 2 $?
"$surelock" run --on-owner-dead=maybe "$lock" -- true 2>/dev/null; check "a bad --on-owner-dead is a usage error" 2 $?
"$surelock" status 2>/dev/null; check "status without a file is a usage error" 2 $?
"$surelock" status "$dir/missing" 2>/dev/null; check "status of a missing file exits 1" 1 $?
echo "not a lock" > "$dir/text"
"$surelock" status "$dir/text" 2>"$dir/err"; check "status of another file exits 1" 1 $?
contains "status says it is not a lock file" "$dir/err" "not a surelock lock file"
cp "$lock" "$dir/corrupt"; printf '\007' | dd of="$dir/corrupt" bs=1 seek=128 conv=notrunc 2>/dev/null
"$surelock" status "$dir/corrupt" 2>"$dir/err"; check "status of a file the library refuses exits 1" 1 $?
contains "... with the library's reason" "$dir/err" "corrupt recovery state 7"
printf 'SURELOCK\001\0\0\0\0\0\0\0' > "$dir/stamped"
"$surelock" status "$dir/stamped" | grep -q "unfinished"; check "status shows a stamped file as unfinished, as open sees it" 0 $?
ln -s "$lock" "$dir/link"
"$surelock" run "$dir/link" -- true 2>"$dir/err"; check "run refuses a symlinked lock file" 1 $?
contains "run says why it refused" "$dir/err" "symlink"
"$surelock" status "$dir/link" 2>/dev/null; check "status refuses a symlink" 1 $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
