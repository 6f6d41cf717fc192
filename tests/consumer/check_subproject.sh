#!/usr/bin/env bash
# surelock as a meson subproject of a throwaway superproject: dependency('surelock') with a
# subproject fallback finds it (meson.override_dependency), the program links and runs, and
# none of surelock's tests is built or registered unless the superproject asks for them
# (-Dsurelock:tests=true, which must then register them: the default is what turns them off).
#
#   bash tests/consumer/check_subproject.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/surelock-super.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "check_subproject: $*" >&2; exit 1; }

mkdir -p "$work/super/subprojects/surelock"
# The source tree as it is (tracked and untracked files, not build directories).
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/super/subprojects/surelock")
cp "$here/consumer.c" "$work/super/app.c"
cat > "$work/super/meson.build" <<'MESON'
project('super', 'c', default_options: ['c_std=c99'])
surelock_dep = dependency('surelock', fallback: 'surelock')
app = executable('app', 'app.c', dependencies: surelock_dep)
test('super_app_runs', app)
MESON

cd "$work/super"
meson setup build --force-fallback-for=surelock -Dsurelock:bench=false >/dev/null
meson compile -C build >/dev/null
list_tests() { meson introspect build --tests | /usr/bin/python3 -c '
import json, sys
print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))'; }
tests=$(list_tests)
echo "+ tests registered in the superproject: $tests"
[ "$tests" = "super_app_runs" ] || fail "surelock's tests are registered by default: $tests"
built=$(meson introspect build --targets | /usr/bin/python3 -c '
import json, sys
print(" ".join(sorted(t["name"] for t in json.load(sys.stdin) if t["subproject"] == "surelock" and t["build_by_default"])))')
echo "+ surelock targets built by default: $built"
[ "$built" = "surelock surelock" ] || fail "test code is built in the subproject: $built"
meson test -C build --print-errorlogs >/dev/null || fail "the superproject's app failed"

meson setup --reconfigure build -Dsurelock:tests=true >/dev/null
list_tests | grep -q "cli_run_and_status" ||
    fail "-Dsurelock:tests=true does not register surelock's tests"
echo "check_subproject: dependency('surelock') works as a subproject, with its tests off by default"
