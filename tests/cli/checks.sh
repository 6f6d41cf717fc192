# The CLI scripts' checks, sourced by each: TAP-like "ok - ..." / "not ok - ..." lines and the
# counts the script ends on (`[ "$failed" -eq 0 ]`).
passed=0 failed=0

check() { # DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1";
    else failed=$((failed + 1)); echo "not ok - $1 (expected $2, got $3)"; fi
}
contains() { # DESCRIPTION FILE TEXT
    if grep -q -- "$3" "$2"; then passed=$((passed + 1)); echo "ok - $1";
    else failed=$((failed + 1)); echo "not ok - $1 (no \"$3\" in: $(cat "$2"))"; fi
}
