#!/bin/sh
# Compares the built library's ABI with the committed baseline (abi/surelock.abi, made by
# abi/update-baseline.sh). Any difference fails: an intended addition updates the baseline in
# the same commit. Exit 77 (skipped) where abigail-tools is not installed.
# Usage: check_abidiff.sh BASELINE LIBRARY HEADERS_DIR
baseline=$1 library=$2 headers=$3
if ! command -v abidiff >/dev/null 2>&1; then
    echo "abidiff not found (install abigail-tools); skipping"
    exit 77
fi
abidiff --drop-private-types --headers-dir2 "$headers" "$baseline" "$library"
status=$?
if [ "$status" -ne 0 ]; then
    echo "abidiff exit status $status: the ABI differs from $baseline"
    echo "(intended? regenerate with: abi/update-baseline.sh BUILDDIR)"
fi
exit "$status"
