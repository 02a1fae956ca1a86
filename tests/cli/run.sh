#!/bin/sh
# Runs every tests/cli/NNN-*.sh and closes with the total
# "N passed, N failed" line.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
passed=0
failed=0
for t in "$dir"/[0-9][0-9][0-9]-*.sh; do
	[ -e "$t" ] || continue
	out=$(sh "$t" 2>&1)
	status=$?
	printf '%s\n' "$out" | grep -v '^ok - '
	line=$(printf '%s\n' "$out" | grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed$' | tail -1)
	p=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')
	f=$(printf '%s\n' "$line" | sed -n 's/.* \([0-9]*\) failed$/\1/p')
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	if [ "$status" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
		echo "not ok - $(basename "$t") exited $status without a failed check"
		failed=$((failed + 1))
	fi
done
echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
