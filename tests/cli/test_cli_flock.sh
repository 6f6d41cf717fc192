#!/usr/bin/env bash
# `surelock run` side by side with util-linux flock(1) where they mean the same thing (-n, -w,
# -E, -c, no `--`, exit statuses), the help forms, `status --json`, bad input (usage errors,
# files left untouched) and a lock left not recoverable by a library user. Every wait is
# bounded. Usage: test_cli_flock.sh PATH/TO/surelock PATH/TO/ipc_user
set -u
surelock=$(readlink -f "$1")
ipc_user=$(readlink -f "$2") # a program using the library directly (ipc_user.c)
dir=$(mktemp -d)
cleanup() {
    kill -9 $(jobs -p) 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
lock=$dir/job.lock
flockfile=$dir/flock.file
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh" # check, contains

wait_for_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; return 1; }
have_flock=yes
command -v flock >/dev/null || have_flock=no

# ---- side by side with flock (each tool on its own file, same arguments otherwise) ---------
if [ "$have_flock" = yes ]; then
    cmp_both() { # DESCRIPTION ARGS...: the same options and CMD for both tools
        local what=$1; shift
        local opts=() cmd=()
        while [ $# -gt 0 ] && [ "$1" != CMD ]; do opts+=("$1"); shift; done
        shift; cmd=("$@")
        timeout 20 flock "${opts[@]}" "$flockfile" "${cmd[@]}" 2>/dev/null; local f=$?
        timeout 20 "$surelock" run "${opts[@]}" "$lock" "${cmd[@]}" 2>/dev/null; local s=$?
        check "$what: flock and surelock run both exit $f" "$f" "$s"
    }
    cmp_both "CMD's status passes through" CMD sh -c 'exit 3'
    cmp_both "no '--' needed before CMD" CMD sh -c 'exit 5'
    cmp_both "-c runs a shell command" CMD -c 'exit 7'
    cmp_both "CMD killed by a signal is 128+N" CMD sh -c 'kill -TERM $$'
    cmp_both "-n on a free lock runs CMD" -n CMD true
    cmp_both "-x is accepted" -x CMD true

    # Both held by their own tool for the next checks.
    flock "$flockfile" sleep 30 & fholder=$!
    "$surelock" run "$lock" sleep 30 & sholder=$!
    for _ in $(seq 100); do
        flock -n "$flockfile" true 2>/dev/null || { "$surelock" run -n "$lock" true 2>/dev/null || break; }
        sleep 0.05
    done
    cmp_both "-n on a busy lock" -n CMD true
    cmp_both "--nonblock on a busy lock" --nonblock CMD true
    cmp_both "-n -E 9 on a busy lock" -n -E 9 CMD true
    cmp_both "--conflict-exit-code=9 on a busy lock" -n --conflict-exit-code=9 CMD true
    cmp_both "-w 0.2 on a busy lock" -w 0.2 CMD true
    cmp_both "--timeout 0 on a busy lock" --timeout 0 CMD true
    cmp_both "-w 0.2 -E 0 on a busy lock" -w 0.2 -E 0 CMD touch "$dir/ran"
    check "neither ran CMD while busy" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
    start=$(date +%s%N)
    "$surelock" run -w 0.3 "$lock" true 2>/dev/null
    elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    check "-w waits at least its timeout" yes "$([ "$elapsed_ms" -ge 300 ] && echo yes || echo no)"
    "$surelock" run -w 0.1 --verbose "$lock" true 2>"$dir/err"
    contains "--verbose names the holder while waiting" "$dir/err" "held by PID $sholder"
    # flock(1) does not pass SIGTERM on: end its sleep by its pid (surelock forwards it).
    kill $(cat "/proc/$fholder/task/$fholder/children") "$sholder"
    wait "$fholder" "$sholder" 2>/dev/null
    "$surelock" run -w 5 --verbose "$lock" true 2>"$dir/err"
    contains "--verbose says how long getting the lock took (as flock)" "$dir/err" "getting the lock took [0-9.]* seconds"
    contains "--verbose says what it executes (as flock)" "$dir/err" "executing true"
else
    echo "# flock(1) not installed: side-by-side checks skipped"
fi

# flock takes "--" after FILE as the command's name; surelock run takes it as a separator.
"$surelock" run "$lock" -- sh -c 'exit 6'; check "'--' between LOCKFILE and CMD is a separator" 6 $?

# ---- help forms -----------------------------------------------------------------------------
"$surelock" run --help > "$dir/out"; check "run --help exits 0" 0 $?
contains "run --help shows the usage" "$dir/out" "Usage: surelock run"
contains "run --help documents -o" "$dir/out" "\-o, --close"
"$surelock" run -h > /dev/null; check "run -h exits 0" 0 $?
"$surelock" status --help > "$dir/out"; check "status --help exits 0" 0 $?
contains "status --help shows the usage" "$dir/out" "Usage: surelock status"
"$surelock" help run > "$dir/out"; check "help run exits 0" 0 $?
contains "help run is run --help" "$dir/out" "Usage: surelock run"
"$surelock" help status > "$dir/out"; check "help status exits 0" 0 $?
"$surelock" help no-such > /dev/null 2>&1; check "help of an unknown command is a usage error" 2 $?

# ---- usage errors: exit 2, nothing created or changed ---------------------------------------
mkdir "$dir/cwd"
cd "$dir/cwd" || exit 1
usage_error() { # DESCRIPTION ARGS...
    local what=$1; shift
    "$surelock" run "$@" 2>"$dir/err" >/dev/null; local rc=$?
    check "$what is a usage error" 2 "$rc"
    check "$what creates nothing" "" "$(ls -A "$dir/cwd")"
}
usage_error "a missing CMD" job.lock
usage_error "a missing CMD after --" job.lock --
usage_error "nothing at all" ""
usage_error "'--' as the lock path" -- -- true
usage_error "'--' alone" --
for t in 0x10 -1 nan inf 1e99 1e3 " 1" "1 " "" 1. .5 +1 99999999999; do
    usage_error "timeout '$t'" -w "$t" job.lock true
done
contains "a bad timeout names the value" "$dir/err" "not '99999999999'"
usage_error "-E 256" -E 256 job.lock true
usage_error "-E -1" -E -1 job.lock true
usage_error "-s (no shared mode)" -s job.lock true
contains "-s explains there is no shared mode" "$dir/err" "always exclusive"
usage_error "-u" -u job.lock true
usage_error "-F" -F job.lock true
usage_error "an unknown option" --frobnicate job.lock true
usage_error "--on-owner-dead=maybe" --on-owner-dead=maybe job.lock true
usage_error "--mode 0888" --mode 0888 job.lock true
usage_error "--mode 01777" --mode 01777 job.lock true
usage_error "--group of no group" --group no-such-group-here job.lock true
usage_error "--trust-owner of no user" --trust-owner no-such-user-here job.lock true
usage_error "-c with CMD too" -c 'true' job.lock true
usage_error "-c without its string" job.lock -c
usage_error "-w without a value" -w
cd "$dir" || exit 1

# ---- files that are not lock files: the library's message, exit 1, untouched -------------
printf 'not a lock file\n' > "$dir/text"
cp "$dir/text" "$dir/text.orig"
"$surelock" run "$dir/text" -- true 2>"$dir/err"; check "run on a file of another format exits 1" 1 $?
contains "... with the library's reason" "$dir/err" "too short for a lock file"
cmp -s "$dir/text" "$dir/text.orig"; check "... and leaves it untouched" 0 $?
head -c 8192 /dev/zero > "$dir/zeros"
"$surelock" run "$dir/zeros" -- true 2>/dev/null; check "run on an all-zero file exits 1" 1 $?
check "... and leaves it all zero" 8192 "$(tr -d '\0' < "$dir/zeros" | wc -c | awk '{print 8192 - $1}')"
mkdir "$dir/adir"
"$surelock" run "$dir/adir" -- true 2>"$dir/err"; check "run on a directory exits 1" 1 $?
contains "... saying it is a directory" "$dir/err" "directory"
mkdir -m 0700 "$dir/closed"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    chmod 0711 "$dir"
    setpriv --reuid=65534 --regid=65534 --clear-groups "$surelock" run "$dir/closed/job.lock" -- true 2>"$dir/err"
    rc=$?
else
    chmod 0000 "$dir/closed"
    "$surelock" run "$dir/closed/job.lock" -- true 2>"$dir/err"; rc=$?
fi
check "run in a directory it cannot enter exits 1" 1 "$rc"
contains "... saying why" "$dir/err" "Permission denied"
chmod 0700 "$dir/closed" "$dir"

# ---- status --json --------------------------------------------------------------------------
"$surelock" run "$lock" -- true
"$surelock" status --json "$lock" > "$dir/json"; check "status --json exits 0" 0 $?
/usr/bin/python3 -m json.tool "$dir/json" > /dev/null; check "status --json is valid JSON" 0 $?
field() { /usr/bin/python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
check "status --json: a free lock" free "$(field "$dir/json" 'v["state"]')"
check "status --json: consistent" consistent "$(field "$dir/json" 'v["recovery"]')"
"$surelock" run "$lock" -- sh -c "echo \$\$ > $dir/quoted.pid; sleep 30 & echo \$! > $dir/quoted_child.pid; wait; : 'tab	and \"quotes\" and \\'" 2>/dev/null &
holder=$!
wait_for_file "$dir/quoted.pid"
sleep 0.2
"$surelock" status --json "$lock" > "$dir/json"
/usr/bin/python3 -m json.tool "$dir/json" > /dev/null; check "status --json with quotes and tabs in the holder's command line is valid JSON" 0 $?
check "status --json names the holder's PID" "$holder" "$(field "$dir/json" 'v["holder"]["pid"]')"
check "status --json names the command it runs" yes "$(field "$dir/json" '"yes" if '"$(cat "$dir/quoted.pid")"' in [c["pid"] for c in v["commands"]] else "no"')"
check "status --json gives the holder thread's age" yes "$(field "$dir/json" '"yes" if v["holder"]["thread_age_seconds"] >= 0 else "no"')"
wait_for_file "$dir/quoted_child.pid"
kill -9 "$holder" "$(cat "$dir/quoted.pid")" "$(cat "$dir/quoted_child.pid")"; wait "$holder" 2>/dev/null
for _ in $(seq 100); do "$surelock" status "$lock" | grep -q "last holder died" && break; sleep 0.05; done
"$surelock" status --json "$lock" > "$dir/json"
check "status --json: the last holder died" True "$(field "$dir/json" 'v["last_holder_died"]')"
check "status --json: owner deaths counted" 1 "$(field "$dir/json" 'v["owner_deaths"]')"
"$surelock" status "$lock" > "$dir/out"
contains "status explains the recovery state in words" "$dir/out" "the next holder gets EOWNERDEAD"
: > "$dir/empty.lock"
"$surelock" status --json "$dir/empty.lock" | /usr/bin/python3 -m json.tool > /dev/null
check "status --json of an empty placeholder is valid JSON" 0 $?
"$surelock" status --json "$dir/text" > /dev/null 2>&1; check "status --json of another file exits 1" 1 $?

# ---- not recoverable: left so by a library user ---------------------------------------------
# The lock above needs recovery; a library user takes it (EOWNERDEAD) and unlocks without
# surelock_ipc_consistent: not recoverable for everyone.
# Another process keeps a handle open from before, so nothing can re-initialise it meanwhile.
"$ipc_user" hold-open "$lock" "$dir/opened" "$dir/release" &
opener=$!
wait_for_file "$dir/opened"
"$ipc_user" unrepaired "$lock"; check "a library user leaves the lock not recoverable" 0 $?
"$surelock" status "$lock" | grep -q "recovery: *not recoverable"; check "status says it is not recoverable" 0 $?
cp "$lock" "$dir/lock.orig"
"$surelock" run --on-owner-dead=fail "$lock" -- touch "$dir/ran" 2>"$dir/err"
check "not recoverable with --on-owner-dead=fail exits 75" 75 $?
contains "... saying so" "$dir/err" "not recoverable"
check "... without running CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
cmp -s "$lock" "$dir/lock.orig"; check "... and leaves the file untouched" 0 $?
"$surelock" run "$lock" -- touch "$dir/ran" 2>"$dir/err"
check "not recoverable while another process has it open exits 1" 1 $?
contains "... saying why it cannot start over" "$dir/err" "another process has it open"
check "... without running CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
touch "$dir/release"; wait "$opener"
"$surelock" run "$lock" -- touch "$dir/ran" 2>"$dir/err"
check "not recoverable, nobody else has it open: run starts over and runs CMD" 0 $?
contains "... and says it was not recoverable and is re-initialised" "$dir/err" "not recoverable.*re-initialises"
check "... CMD ran" yes "$([ -e "$dir/ran" ] && echo yes || echo no)"
"$surelock" status "$lock" | grep -q "recovery: *consistent"; check "after that the lock is consistent" 0 $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
