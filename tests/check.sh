#!/bin/sh
# make check: the Check unit suites, then the CLI tests, then one closing
# "N passed, N failed" line over both.
set -u
runner=$1
top=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp "${TMPDIR:-/tmp}/zm-check.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
(cd "$top/tests/unit" && "$runner") 2>&1 | tee "$log" || status=1
grep -q '^unit: [0-9]* passed, 0 failed$' "$log" || status=1
LC_ALL=C sh "$top/tests/cli/run.sh" 2>&1 | tee -a "$log" || status=1
grep -q '^cli: [0-9]* passed, 0 failed$' "$log" || status=1
passed=$(sed -n 's/^\(unit\|cli\): \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^\(unit\|cli\): \([0-9]*\) passed, \([0-9]*\) failed$/\3/p' "$log" | awk '{s+=$1} END {print s+0}')
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "check: $passed passed, $failed failed"
exit $status
