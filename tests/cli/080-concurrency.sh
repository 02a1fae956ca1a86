#!/bin/sh
# Concurrency: 16 processes at once on one zoo — adding models (zoo-add),
# training with --apply (train-step), and reading (zoo-ls, predict) —
# lose no entry, leave an index whose every file exists and loads, and
# readers never fail nor see a half-written index.  Processes are waited
# for by PID; nothing sleeps.
. "$(dirname "$0")/lib.sh"

# Rounds per process, and groups of four workers (adder, trainer, lister,
# predictor); under valgrind, ~50 times slower, 8 workers do one round.
rounds=3
groups="1 2 3 4"
[ -n "${ZM_VALGRIND:-}" ] && rounds=1 && groups="1 2"

separable_csv "$T/data.csv" 200 11
tensor import --from csv --label label -o "$T/data.sgz" "$T/data.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 6, activation: relu}
  - {name: out, units: 4}
YAML
Z=$T/zoo
for m in t1 t2 t3 t4 r1; do
	zoo-add --zoo "$Z" --name "$m" --arch "$T/arch.yaml" --seed 1 2>/dev/null
done
check "the starting zoo has 5 models" test "$(zoo-ls --zoo "$Z" | grep -c '^[tr][0-9] ')" -eq 5

# Each worker runs its rounds and records every failure in $T/fail.N
# (one line per failed command), so the parent needs only the PIDs.
adder() {	# $1: worker number, $2: model to create, then give new versions
	i=1
	while [ "$i" -le "$rounds" ]; do
		if [ "$i" -eq 1 ]; then
			zoo-add --zoo "$Z" --name "$2" --arch "$T/arch.yaml" --seed "$1"
		else
			zoo-add --zoo "$Z" --name "$2" "$Z/models/r1/v1.safetensors.gz"
		fi >/dev/null 2>>"$T/err.$1" || echo "zoo-add $2 round $i" >>"$T/fail.$1"
		i=$((i + 1))
	done
}
trainer() {	# $1: worker number, $2: model
	i=1
	while [ "$i" -le "$rounds" ]; do
		train-step --zoo "$Z" --model "$2" --epochs 1 --seed "$i" --apply \
			--quiet "$T/data.sgz" >/dev/null 2>>"$T/err.$1" ||
			echo "train-step $2 round $i" >>"$T/fail.$1"
		i=$((i + 1))
	done
}
lister() {	# $1: worker number; every listing must be a whole index
	i=1
	while [ "$i" -le $((rounds * 3)) ]; do
		if zoo-ls --zoo "$Z" --format yaml >"$T/ls.$1.$i" 2>>"$T/err.$1"; then
			# Every file named must exist at that moment (no
			# retention runs here, so none is deleted later).
			for f in $(sed -n 's/^ *file: //p' "$T/ls.$1.$i"); do
				[ -f "$Z/$f" ] || echo "zoo-ls named missing $f" >>"$T/fail.$1"
			done
			grep -q '^ *- name: r1$' "$T/ls.$1.$i" ||
				echo "zoo-ls lost r1" >>"$T/fail.$1"
		else
			echo "zoo-ls round $i" >>"$T/fail.$1"
		fi
		i=$((i + 1))
	done
}
predictor() {	# $1: worker number, $2: model being trained meanwhile
	i=1
	while [ "$i" -le $((rounds * 2)) ]; do
		if predict --zoo "$Z" --model "$2" "$T/data.sgz" >"$T/p.$1" 2>>"$T/err.$1"; then
			n=$(wc -l <"$T/p.$1")
			[ "$n" -eq 201 ] || echo "predict $2: $n lines" >>"$T/fail.$1"
		else
			echo "predict $2 round $i" >>"$T/fail.$1"
		fi
		i=$((i + 1))
	done
}

start=$(date +%s)
pids=
w=0
for k in $groups; do
	w=$((w + 1)); adder "$w" "a$k" & pids="$pids $!"
	w=$((w + 1)); trainer "$w" "t$k" & pids="$pids $!"
	w=$((w + 1)); lister "$w" & pids="$pids $!"
	w=$((w + 1)); predictor "$w" "t$k" & pids="$pids $!"
done
for p in $pids; do wait "$p"; done
elapsed=$(($(date +%s) - start))
[ -n "${ZM_VALGRIND:-}" ] || check "16 workers ran at once" test "$w" -eq 16
if cat "$T"/fail.* >"$T/failures" 2>/dev/null && [ -s "$T/failures" ]; then
	fail "no command failed ($(wc -l <"$T/failures") did)"
	sed 's/^/#   /' "$T/failures" | head -10
	cat "$T"/err.* 2>/dev/null | sed 's/^/#   stderr: /' | head -10
else
	pass "no command of any worker failed"
fi
[ -n "${ZM_VALGRIND:-}" ] || check "bounded in time (${elapsed} s < 20 s)" test "$elapsed" -lt 20

# Nothing lost: every added model at its last version, every trained
# model moved once per round.
run zoo-ls --zoo "$Z" --format yaml
expect_rc 0 "the final index reads"
cp "$T/out" "$T/final.yaml"
for k in $groups; do
	check "a$k is at version $rounds" grep -q "file: models/a$k/v$rounds.safetensors.gz" "$T/final.yaml"
	check "t$k moved $rounds times" grep -q "file: models/t$k/v$((rounds + 1)).safetensors.gz" "$T/final.yaml"
done
ng=$(echo $groups | wc -w)
check "$((5 + ng)) models in all" test "$(grep -c '^ *- name: ' "$T/final.yaml")" -eq $((5 + ng))
bad=0
nfiles=0
for f in $(find "$Z/models" -type f); do
	nfiles=$((nfiles + 1))
	tensor info "$f" >/dev/null 2>&1 || { bad=$((bad + 1)); echo "# $f does not load"; }
done
check "every version file loads ($nfiles files)" test "$bad" -eq 0
check "one file per indexed version ($nfiles)" test "$nfiles" -eq $((ng * rounds + 4 + ng * rounds + 1))
for f in $(sed -n 's/^ *file: //p' "$T/final.yaml"); do
	tensor info "$Z/$f" >/dev/null 2>&1 || { bad=$((bad + 1)); echo "# index names $f, which does not load"; }
done
check "every file the index names loads" test "$bad" -eq 0
check "no temporary file is left" test -z "$(find "$Z" -name '.*.tmp.*')"

finish
