#!/bin/sh
# Model-checks the deadlock detector's registration protocol (deadlock_registration.pml) with
# spin: every interleaving of 3 threads over every choice of lock order, once with blocking
# waits (no false positive, no missed cycle: an assertion or an invalid end state fails) and
# once with timed waits that may give up at any step (no false positive). Also checks that
# every statement of the model was reached, so the refusal path really ran.
# Usage: check_model.sh MODEL.pml   (exit 77 = skipped: spin or a C compiler is missing)
set -eu
model=$1
command -v spin >/dev/null 2>&1 || { echo "spin not found (apt-get install spin): skipped"; exit 77; }
cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || { echo "no C compiler: skipped"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$model" "$work/model.pml"
cd "$work"
status=0
for variant in blocking timed; do
    define=
    [ "$variant" = timed ] && define=-DTIMED
    spin $define -a model.pml >spin.log 2>&1 || { cat spin.log; exit 1; }
    # pan.c is generated code: its warnings are spin's, not ours.
    "$cc" -O2 -w -DSAFETY -o pan pan.c
    ./pan -m1000000 >pan.log 2>&1 || true
    grep -E "errors:|states, stored" pan.log | sed "s/^/$variant: /"
    if ! grep -q "errors: 0" pan.log; then
        echo "$variant: the model found an error:"; cat pan.log
        spin -t -p model.pml 2>/dev/null | tail -60 || true
        status=1
    fi
    if ! grep -A1 "unreached in proctype thread" pan.log | grep -q "(0 of"; then
        echo "$variant: some statements of the model were never reached:"; cat pan.log; status=1
    fi
done
exit $status
