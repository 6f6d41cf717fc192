#!/usr/bin/env bash
# The man pages render without a single groff/man warning (`man --warnings -l`), and
# surelock(3) names every function the header declares. Exits 77 (skipped) without man-db.
# Usage: test_man.sh PATH/TO/surelock.h PAGE...
set -u
header=$1; shift
if ! command -v man >/dev/null || ! command -v groff >/dev/null; then
    echo "# skipped: man-db (with groff) is not installed"
    exit 77
fi
failed=0
for page in "$@"; do
    warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
    if [ -n "$warnings" ]; then
        echo "not ok - $(basename "$page") renders without warnings:"; echo "$warnings"
        failed=1
    else
        echo "ok - $(basename "$page") renders without warnings"
    fi
    case $page in
    *.3)
        rendered=$(MANWIDTH=200 man -E UTF-8 -l "$page" 2>/dev/null | sed 's/-$//' | tr -d '\n')
        for fn in $(grep -o 'surelock_[a-z0-9_]*(' "$header" | tr -d '(' | sort -u); do
            if ! grep -q -- "$fn" <<<"$rendered"; then
                echo "not ok - $(basename "$page") does not name $fn"
                failed=1
            fi
        done
        [ "$failed" = 0 ] && echo "ok - $(basename "$page") names every function in $(basename "$header")"
        ;;
    esac
done
exit "$failed"
