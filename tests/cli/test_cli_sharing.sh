#!/usr/bin/env bash
# Sharing a lock file between users: a lock made by root and used by a service user (nobody),
# through --group, --trust-owner and --mode; world-writable files still refused by default;
# the two users exclude each other. Needs root (setpriv to switch users); exits 77 (skipped)
# otherwise. Usage: test_cli_sharing.sh PATH/TO/surelock
set -u
surelock=$(readlink -f "$1")
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null || ! getent group nogroup >/dev/null; then
    echo "# skipped: needs root, setpriv and the nogroup group"
    exit 77
fi
dir=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
chmod 0755 "$dir"
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh" # check, contains
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
lock=$dir/svc.lock
nogroup=$(getent group nogroup | cut -d: -f3)

"$surelock" run --mode 0640 "$dir/mode.lock" -- true
check "--mode sets the permissions of a new lock file" 640 "$(stat -c %a "$dir/mode.lock")"

"$surelock" run --group nogroup "$lock" -- true
check "--group creates the file group-writable" 660 "$(stat -c %a "$lock")"
check "--group gives it to the group" "$nogroup" "$(stat -c %g "$lock")"
check "the file stays root's" 0 "$(stat -c %u "$lock")"

as_nobody "$surelock" run "$lock" -- true 2>"$dir/err"
check "another user is refused a root-owned lock by default" 1 $?
contains "... and told how to accept it" "$dir/err" "--trust-owner 0"
as_nobody "$surelock" run --trust-owner root "$lock" -- true 2>"$dir/err"
check "--trust-owner alone still refuses a group-writable file it did not ask for" 1 $?
contains "... with the library's reason" "$dir/err" "lets the group write it"
as_nobody "$surelock" run --trust-owner root --mode 0660 "$lock" -- true
check "--trust-owner root --mode 0660 lets the service user use it" 0 $?
as_nobody "$surelock" run --trust-owner 0 --mode 0660 "$lock" -- true
check "--trust-owner takes a uid too" 0 $?
as_nobody "$surelock" run --trust-owner 1 --mode 0660 "$lock" -- true 2>/dev/null
check "--trust-owner of someone else does not accept root's file" 1 $?
as_nobody "$surelock" run --group nogroup "$lock" -- true
check "--group accepts a file of that group made by a member" 0 $?

"$surelock" run --group nogroup "$lock" -- sleep 30 & holder=$!
for _ in $(seq 100); do "$surelock" status "$lock" | grep -q "held by PID $holder" && break; sleep 0.05; done
as_nobody "$surelock" run -n --group nogroup "$lock" -- true 2>/dev/null
check "the service user waits for root's holder (busy with -n)" 1 $?
kill "$holder"; wait "$holder" 2>/dev/null

chmod 0666 "$lock"
cp "$lock" "$dir/orig"
as_nobody "$surelock" run --group nogroup "$lock" -- true 2>"$dir/err"
check "a world-writable lock is refused by default" 1 $?
contains "... saying everyone can write it" "$dir/err" "lets everyone write it"
"$surelock" run "$lock" -- true 2>/dev/null
check "... also to its owner" 1 $?
cmp -s "$lock" "$dir/orig"; check "... and left untouched" 0 $?
"$surelock" run --mode 0666 "$lock" -- true
check "--mode 0666 accepts it when asked for explicitly" 0 $?
chmod 0660 "$lock"

"$surelock" run --mode 0660 "$dir/rootgroup.lock" -- true
"$surelock" run --group nogroup "$dir/rootgroup.lock" -- true 2>"$dir/err"
check "--group refuses a file writable by another group" 1 $?
contains "... naming the group" "$dir/err" "writable by group 0"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
