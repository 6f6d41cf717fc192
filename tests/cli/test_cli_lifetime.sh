#!/usr/bin/env bash
# `surelock run`: CMD and the lock live and die together, and signals reach CMD exactly once.
#  - SIGKILL of the wrapper: CMD keeps the lock; a second run waits until CMD is gone, then is
#    told the previous holder died. SIGKILL of CMD: the wrapper reports 137 and releases the
#    lock. SIGKILL of both: a child CMD left running keeps the lock until it exits.
#  - -o: CMD's background children do not keep the lock, and CMD dies with its wrapper.
#  - Ctrl-C on a terminal reaches CMD once (not forwarded again); SIGTERM/SIGINT/SIGHUP sent to
#    surelock alone are forwarded once; a SIGTERM sent right after start is never lost.
# Every wait is bounded. Usage: test_cli_lifetime.sh PATH/TO/surelock
set -u
# This checks what CMD gets with the signals' default dispositions. A suite started under
# nohup (which ignores SIGHUP and SIGQUIT) passes them on ignored, and bash cannot undo that
# for its children, so start over with the defaults.
if [ -z "${SURELOCK_TEST_DEFAULT_SIGNALS:-}" ]; then
    SURELOCK_TEST_DEFAULT_SIGNALS=1 exec env --default-signal=HUP,INT,QUIT,TERM "$BASH" "$0" "$@"
fi
surelock=$1
dir=$(mktemp -d)
cleanup() {
    # Kill only what this test started: its jobs and the pids it recorded.
    kill -9 $(jobs -p) 2>/dev/null
    for f in "$dir"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
lock=$dir/job.lock
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh" # check, contains

wait_for_file() { # FILE: up to 10 s
    for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done
    return 1
}
gone_within() { # PID SECONDS: 0 when the process is gone (or a zombie) in time
    local deadline=$(( $(date +%s%N) + $2 * 1000000000 ))
    while :; do
        if ! kill -0 "$1" 2>/dev/null; then return 0; fi
        [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ] && return 0
        [ "$(date +%s%N)" -lt "$deadline" ] || return 1
        sleep 0.02
    done
}
wait_bounded() { # PID SECONDS: waits for our child; sets rc to its status, or "hung" (killed)
    if gone_within "$1" "$2"; then wait "$1"; rc=$?; else kill -9 "$1"; wait "$1" 2>/dev/null; rc=hung; fi
}
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

# ---- SIGKILL of the wrapper alone -------------------------------------------------------------
rm -f "$dir"/*.stamp
"$surelock" run "$lock" -- sh -c "echo \$\$ > $dir/cmd1.pid; sleep 1.5; date +%s%N > $dir/cmd1_end.stamp" &
wrapper=$!
wait_for_file "$dir/cmd1.pid"
kill -9 "$wrapper"; wait "$wrapper" 2>/dev/null
"$surelock" run "$lock" -- sh -c "date +%s%N > $dir/cmd2_start.stamp" 2>"$dir/err" &
second=$!
wait_bounded "$second" 10
check "after SIGKILL of the wrapper, a second run still succeeds" 0 "$rc"
check "the second CMD starts only after the first CMD ended" yes \
    "$([ -s "$dir/cmd1_end.stamp" ] && [ -s "$dir/cmd2_start.stamp" ] &&
       [ "$(cat "$dir/cmd2_start.stamp")" -ge "$(cat "$dir/cmd1_end.stamp")" ] && echo yes || echo no)"
contains "the second run is told the previous holder died" "$dir/err" "previous holder died"

# While the orphaned CMD runs, status names it and run -n is busy.
"$surelock" run "$lock" -- sh -c "echo \$\$ > $dir/cmd3.pid; exec sleep 30" &
wrapper=$!
wait_for_file "$dir/cmd3.pid"
kill -9 "$wrapper"; wait "$wrapper" 2>/dev/null
"$surelock" status "$lock" > "$dir/out"
contains "status names the CMD that outlived its wrapper" "$dir/out" "kept by: *PID $(cat "$dir/cmd3.pid").*sleep 30"
"$surelock" run -n "$lock" -- touch "$dir/ran" 2>/dev/null
check "run -n is busy while that CMD runs" 1 "$?"
check "and does not run its CMD" no "$([ -e "$dir/ran" ] && echo yes || echo no)"
"$surelock" run -w 0.2 --verbose "$lock" -- true 2>"$dir/err"
check "run -w times out while that CMD runs" 1 "$?"
contains "run --verbose names the command keeping the lock" "$dir/err" "kept by a running command: PID $(cat "$dir/cmd3.pid")"
kill -9 "$(cat "$dir/cmd3.pid")"
"$surelock" run -w 5 "$lock" -- true 2>/dev/null
check "once that CMD is gone the lock is free again" 0 "$?"

# ---- SIGKILL of CMD alone ---------------------------------------------------------------------
"$surelock" run "$lock" -- sh -c "echo \$\$ > $dir/cmd4.pid; exec sleep 30" &
wrapper=$!
wait_for_file "$dir/cmd4.pid"
kill -9 "$(cat "$dir/cmd4.pid")"
wait_bounded "$wrapper" 10
check "SIGKILL of CMD: the wrapper exits 128+9" 137 "$rc"
"$surelock" run -n "$lock" -- true 2>"$dir/err"
check "SIGKILL of CMD: the lock is free at once" 0 "$?"
check "SIGKILL of CMD is not an owner death of the lock" 0 "$(wc -c < "$dir/err")"

# ---- SIGKILL of both, with a child of CMD still running ----------------------------------------
"$surelock" run "$lock" -- sh -c "sleep 1.5 & echo \$! > $dir/child5.pid; echo \$\$ > $dir/cmd5.pid; wait" &
wrapper=$!
wait_for_file "$dir/cmd5.pid"; wait_for_file "$dir/child5.pid"
kill -9 "$wrapper" "$(cat "$dir/cmd5.pid")"; wait "$wrapper" 2>/dev/null
"$surelock" run -n "$lock" -- true 2>/dev/null
check "SIGKILL of wrapper and CMD: CMD's child still keeps the lock" 1 "$?"
start=$(ms_now)
"$surelock" run -w 10 "$lock" -- true 2>"$dir/err"
check "SIGKILL of both: the next run gets the lock once the child exits" 0 "$?"
check "... and not before the child exited" yes "$(gone_within "$(cat "$dir/child5.pid")" 0 && echo yes || echo no)"
contains "SIGKILL of both: the next run is told the holder died" "$dir/err" "previous holder died"
rm -f "$dir/child5.pid"

# SIGKILL of both with no child left: the lock is free, and the death is reported.
"$surelock" run "$lock" -- sh -c "echo \$\$ > $dir/cmd6.pid; exec sleep 30" &
wrapper=$!
wait_for_file "$dir/cmd6.pid"
kill -9 "$wrapper" "$(cat "$dir/cmd6.pid")"; wait "$wrapper" 2>/dev/null
gone_within "$(cat "$dir/cmd6.pid")" 5
"$surelock" run -n "$lock" -- true 2>"$dir/err"
check "SIGKILL of both, nothing left running: the lock is free" 0 "$?"
contains "... and the next holder is told" "$dir/err" "previous holder died"

# ---- -o (flock's --close) ---------------------------------------------------------------------
"$surelock" run -o "$lock" -- sh -c "sleep 30 & echo \$! > $dir/bg7.pid" 2>/dev/null
check "-o: run returns when CMD exits" 0 "$?"
"$surelock" run -n "$lock" -- true
check "-o: CMD's background child does not keep the lock" 0 "$?"
kill -9 "$(cat "$dir/bg7.pid")"
"$surelock" run "$lock" -- sh -c "sleep 30 & echo \$! > $dir/bg8.pid"
"$surelock" run -n "$lock" -- true 2>/dev/null
check "without -o: CMD's background child keeps the lock (as flock)" 1 "$?"
kill -9 "$(cat "$dir/bg8.pid")"; gone_within "$(cat "$dir/bg8.pid")" 5
"$surelock" run -o "$lock" -- sh -c "echo \$\$ > $dir/cmd9.pid; exec sleep 30" &
wrapper=$!
wait_for_file "$dir/cmd9.pid"
kill -9 "$wrapper"; wait "$wrapper" 2>/dev/null
gone_within "$(cat "$dir/cmd9.pid")" 5
check "-o: SIGKILL of the wrapper kills CMD too" 0 "$?"

# ---- signals -----------------------------------------------------------------------------------
# CMD counts the signals it gets; it exits on TERM.
counter="trap 'echo INT >> $dir/got' INT; trap 'echo HUP >> $dir/got' HUP; trap 'echo TERM >> $dir/got; exit 0' TERM; echo \$\$ > $dir/counter.pid; while :; do sleep 0.05; done"
count() { local n; n=$(grep -c "^$1\$" "$dir/got" 2>/dev/null); echo "${n:-0}"; }

for sig in INT HUP; do
    rm -f "$dir/got" "$dir/counter.pid"
    # A background job of a script starts with SIGINT ignored: give it back its default.
    env --default-signal=INT,QUIT "$surelock" run "$lock" -- sh -c "$counter" &
    wrapper=$!
    wait_for_file "$dir/counter.pid"
    kill -s "$sig" "$wrapper"
    for _ in $(seq 250); do [ "$(count "$sig")" -ge 1 ] && break; sleep 0.02; done
    sleep 0.3 # room for a duplicate to show up
    check "SIG$sig sent to surelock alone reaches CMD once" 1 "$(count "$sig")"
    kill -TERM "$wrapper"
    wait_bounded "$wrapper" 10
    check "SIGTERM sent to surelock alone is forwarded, and run exits with CMD's status" 0 "$rc"
    check "SIGTERM reached CMD once" 1 "$(count TERM)"
done

# Ctrl-C on a terminal: the terminal signals the whole foreground group, CMD included, so
# surelock must not forward it again. CMD logs the origin (si_code) of every SIGINT it gets;
# five Ctrl-Cs must give exactly five, all from the terminal (SI_KERNEL), none from surelock.
rm -f "$dir/got" "$dir/counter.pid"
/usr/bin/python3 - "$surelock" "$lock" "$dir" <<'PY'
import os, pty, sys, time, signal
surelock, lock, d = sys.argv[1:4]
logger = f"""
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT, signal.SIGTERM}})
open("{d}/counter.pid", "w").write(str(os.getpid()))
while True:
    info = signal.sigwaitinfo({{signal.SIGINT, signal.SIGTERM}})
    if info.si_signo == signal.SIGTERM: break
    with open("{d}/got", "a") as f: f.write(f"INT from si_code {{info.si_code}} pid {{info.si_pid}}\\n")
"""
pid, master = pty.fork()
if pid == 0:
    os.execv(surelock, [surelock, "run", lock, "--", "/usr/bin/python3", "-c", logger])
deadline = time.monotonic() + 10
while not os.path.exists(f"{d}/counter.pid") and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.2)
def lines():
    try: return len(open(f"{d}/got").read().splitlines())
    except FileNotFoundError: return 0
for i in range(5):
    os.write(master, b"\x03")          # Ctrl-C: SIGINT to the foreground process group
    deadline = time.monotonic() + 5     # one at a time, so that none merges with the next
    while lines() <= i and time.monotonic() < deadline:
        time.sleep(0.02)
time.sleep(0.5)                         # room for a forwarded duplicate to show up
os.kill(pid, signal.SIGTERM)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done: break
    try: os.read(master, 4096)
    except OSError: pass
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
PY
check "five Ctrl-Cs on the terminal reach CMD five times" 5 "$(count 'INT from.*')"
check "... all from the terminal, none forwarded by surelock" 5 "$(count 'INT from si_code 128 pid 0')"

# A SIGTERM sent to the wrapper at any moment after it starts is never lost: either surelock
# dies of it before CMD starts, or CMD gets it (and exits at once).
lost=0 doubled=0
surelock_exe=$(readlink -f "$surelock")
for i in $(seq 40); do
    rm -f "$dir/got"
    "$surelock" run "$lock" -- sh -c "trap 'echo TERM >> $dir/got; kill \$! 2>/dev/null; exit 0' TERM; echo started >> $dir/got; sleep 5 & wait" &
    wrapper=$!
    # Only once surelock runs: before its exec, the forked shell would run this script's
    # EXIT trap on SIGTERM.
    for _ in $(seq 500); do [ "$(readlink "/proc/$wrapper/exe")" = "$surelock_exe" ] && break; done
    sleep "0.00$((i % 10))"
    kill -TERM "$wrapper"
    wait_bounded "$wrapper" 4
    if [ "$rc" = hung ]; then lost=$((lost + 1)); fi
    [ "$(count TERM)" -gt 1 ] && doubled=$((doubled + 1))
done
check "no SIGTERM sent to the wrapper around fork/exec is lost (40 tries)" 0 "$lost"
check "none is delivered twice" 0 "$doubled"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
