#!/usr/bin/env bash
# The README's second quick-start command (between the quickstart-run markers), verbatim, as
# root: it installs to /usr/local, runs ldconfig and runs two jobs under one lock. So that it
# changes nothing on this machine, it runs in a private mount namespace where /usr/local is an
# empty tmpfs and /etc is an overlay (ldconfig writes /etc/ld.so.cache). Checks that job 2 ran
# after job 1 and that status named the holder. Exits 77 (skipped) without root or unshare.
#
#   bash tests/consumer/check_quickstart_run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ] || ! unshare --mount true 2>/dev/null; then
    echo "check_quickstart_run: skipped (needs root and unshare --mount)"; exit 77
fi
cmd=$(awk '/<!-- quickstart-run -->/{f=1;next} /<!-- \/quickstart-run -->/{f=0} f && /^[a-z]/' "$root/README.md")
[ -n "$cmd" ] || { echo "check_quickstart_run: no quickstart-run command in README.md" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/surelock-quickstart.XXXXXX")
trap 'rm -rf "$work" "$root/build-tool"' EXIT
mkdir -p "$work/upper" "$work/work"
echo "+ $cmd"
cd "$root"
rm -rf build-tool /tmp/demo.lock
unshare --mount --propagation private bash -euo pipefail -c '
    mount -t tmpfs tmpfs /usr/local
    mkdir -p /usr/local/bin /usr/local/lib
    mount -t overlay overlay -o lowerdir=/etc,upperdir="$1/upper",workdir="$1/work" /etc
    export PATH=/usr/local/bin:$PATH
    bash -euo pipefail -c "$2"
' _ "$work" "$cmd" > "$work/out" 2>&1 || { cat "$work/out"; echo "check_quickstart_run: the command failed" >&2; exit 1; }
cat "$work/out"
grep -q "held by PID" "$work/out" || { echo "check_quickstart_run: status did not name the holder" >&2; exit 1; }
[ "$(grep -x 'job 1 holds the lock\|job 2 ran after job 1' "$work/out" | tr '\n' '|')" = "job 1 holds the lock|job 2 ran after job 1|" ] ||
    { echo "check_quickstart_run: the two jobs did not run one after the other" >&2; exit 1; }
rm -f /tmp/demo.lock
echo "check_quickstart_run: the README's run demo works after install + ldconfig"
