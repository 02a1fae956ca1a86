#!/bin/sh
# predict --granularity auto (issue 22) against the fixed levels.  Builds
# two zoos of four label-group specialists (tops, bottoms, shoes, bags) of
# an MLP 784-256-128-10, as tests/bench/adaptive.sh's finetuned and seeded
# zoos do (a base trained BASE_EPOCHS epochs on all rows, or none; the
# specialists EPOCHS epochs on their group), on a 20% subset of the
# Fashion-MNIST training set, and measures on the 10,000 test images:
#
#   per zoo and weighting (the defaults, and similarity per row, cosine,
#   T 0.01), accuracy and time of full, group, layer and auto;
#   under a latency budget that the full level meets (1.25 x its 95th
#   percentile batch time, similarity weighting): the share of auto's
#   batches within it (its trace), its accuracy against the full level's
#   under the same budget, and whether the layer level exceeds it;
#   a stream whose batches alternate between one label group and the mix
#   of all: the levels auto's trace gives the two kinds of batch.
#
# Usage: sh tests/bench/granularity_auto.sh [DIR]  (DIR keeps the work)
# Environment: ZM_BIN, ZM_FASHION_MNIST, ZM_BENCH_TRAIN (the 60k training
# stream, already imported), ZM_GAUTO_EPOCHS [2], ZM_GAUTO_BATCH [256],
# ZM_GAUTO_REUSE [0] (1: the data and zoos DIR holds, not built again).
# Lines "bench: gauto-...: VALUE UNIT (REF: VALUE UNIT, ratio R)" and the
# issue's targets as "bench:   target ...: PASS|FAIL" (informational).
# shellcheck disable=SC2086 # option lists split on purpose
set -u
LC_ALL=C
export LC_ALL
prog=gauto
here=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${ZM_BIN:-$here/build/bin}
BIN=$(cd "$BIN" && pwd)
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
EPOCHS=${ZM_GAUTO_EPOCHS:-2}
BATCH=${ZM_GAUTO_BATCH:-256}
TRAIN="--lr 0.05 --batch-size 64 --quiet"
SIM="--per row --metric cosine --temperature 0.01"

if [ ! -r "$FM/t10k-images-idx3-ubyte.gz" ]; then
	echo "bench: $prog: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
if [ $# -gt 0 ]; then
	mkdir -p "$1" || exit 1
	OUT=$(cd "$1" && pwd)
else
	OUT=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-gauto.XXXXXX")
	trap 'rm -rf "$OUT"' EXIT
fi
LOG=$OUT/log.txt
: >"$LOG"

run() {
	"$@" 2>>"$LOG" && return 0
	rc=$?
	echo "bench: $prog: failed (exit $rc): $*"
	tail -n 5 "$LOG" | sed 's/^/    /'
	exit 1
}
P() { _p=$1; shift; run "$BIN/$_p" "$@"; }
now() { date +%s.%N; }
metric() { awk -v k="$2:" '$1 == k { print $2; exit }' "$1"; }
mfile() {
	awk -v n="$2" -v z="$1" '
		$1 == "-" && $2 == "name:" { cur = $3 }
		cur == n && $1 == "file:" { f = z "/" $2 }
		END { print f }' "$1/zoo.yaml"
}
pts() { awk -v a="$1" 'BEGIN { printf "%.2f", 100 * a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }

# ---- data ----
C=$OUT/common
mkdir -p "$C"
# ZM_GAUTO_REUSE=1 measures again on the data and zoos DIR already holds.
REUSE=
if [ "${ZM_GAUTO_REUSE:-0}" = 1 ] && [ -r "$C/alt.safetensors.gz" ] &&
	[ -r "$OUT/seeded/zoo/zoo.yaml" ] && [ -r "$OUT/finetuned/zoo/zoo.yaml" ]; then
	REUSE=1
fi
if [ -n "$REUSE" ]; then
	:
elif [ -n "${ZM_BENCH_TRAIN:-}" ] && [ -r "$ZM_BENCH_TRAIN" ]; then
	cp "$ZM_BENCH_TRAIN" "$C/train-all.safetensors.gz"
else
	P tensor import --from idx --images "$FM/train-images-idx3-ubyte.gz" \
		--labels "$FM/train-labels-idx1-ubyte.gz" -o "$C/train-all.safetensors.gz"
fi
if [ -z "$REUSE" ]; then
cat >"$C/subset.yaml" <<'EOF'
slices:
  - {name: train, where: {hash: 0.2, seed: 11}}
EOF
P slice --rules "$C/subset.yaml" --unmatched drop --out-dir "$C" "$C/train-all.safetensors.gz" >>"$LOG"
rm -f "$C/train-all.safetensors.gz"
P tensor import --from idx --images "$FM/t10k-images-idx3-ubyte.gz" \
	--labels "$FM/t10k-labels-idx1-ubyte.gz" -o "$C/test.safetensors.gz"
cat >"$C/mlp.yaml" <<'EOF'
input: [784]
loss: cross-entropy
layers:
  - {name: fc1, type: dense, units: 256, activation: relu, group: features}
  - {name: fc2, type: dense, units: 128, activation: relu, group: features}
  - {name: out, type: dense, units: 10, group: head}
EOF
cat >"$C/groups.yaml" <<'EOF'
mode: partition
slices:
  - {name: tops,    where: {label: [0, 2, 4, 6]}}
  - {name: bottoms, where: {label: [1, 3]}}
  - {name: shoes,   where: {label: [5, 7, 9]}}
  - {name: bags,    where: {label: [8]}}
EOF
P slice --rules "$C/groups.yaml" --out-dir "$C/slices" "$C/train.safetensors.gz" >>"$LOG"

# The alternating stream: BATCH rows of one label group (the groups in
# turn), then BATCH rows of the test set as it comes (all kinds), and so on.
P tensor export --to csv -o "$C/test.csv" "$C/test.safetensors.gz"
awk -F, -v b="$BATCH" '
	{ sub(/^[^,]*,/, "") }
	NR == 1 { print; next }
	{ lab = $NF; g = 0
	  if (lab == 1 || lab == 3) g = 1
	  else if (lab == 5 || lab == 7 || lab == 9) g = 2
	  else if (lab == 8) g = 3
	  grp[g, n[g]++] = $0; all[na++] = $0 }
	END { k = 0; ia = 0; for (i = 0; i < 4; i++) at[i] = 0
	  for (t = 0; t < 20; t++) {
		g = t % 4
		for (r = 0; r < b; r++) print grp[g, (at[g]++) % n[g]]
		for (r = 0; r < b; r++) print all[(ia++) % na]
	  } }' "$C/test.csv" >"$C/alt.csv"
P tensor import --from csv --label y -o "$C/alt.safetensors.gz" "$C/alt.csv"
rm -f "$C/test.csv" "$C/alt.csv"
fi

# ---- zoos ----
build() { # ZD BASE_EPOCHS
	zd=$1
	mkdir -p "$zd"
	P zoo-add --zoo "$zd/init" --name base --arch "$C/mlp.yaml" --seed 1 >>"$LOG"
	if [ "$2" -gt 0 ]; then
		P train-step --zoo "$zd/init" --model base --epochs "$2" $TRAIN --seed 1 --apply \
			"$C/train.safetensors.gz"
	fi
	P zoo-add --zoo "$zd/zoo" --name base --role base "$(mfile "$zd/init" base)" >>"$LOG"
	i=0
	for s in tops bottoms shoes bags; do
		i=$((i + 1))
		P zoo-add --zoo "$zd/zoo" --name "$s" --base base "$(mfile "$zd/init" base)" >>"$LOG"
		P train-step --zoo "$zd/zoo" --model "$s" --epochs "$EPOCHS" $TRAIN --seed "$i" --apply \
			"$C/slices/$s.safetensors.gz"
	done
}
if [ -z "$REUSE" ]; then
	build "$OUT/finetuned" 1
	build "$OUT/seeded" 0
fi

# pred NAME ZD STREAM ARGS...: predict; the accuracy and the seconds into
# $OUT/r/NAME.{acc,s}.
mkdir -p "$OUT/r"
pred() {
	n=$1 zd=$2 in=$3
	shift 3
	t0=$(now)
	P predict --zoo "$zd/zoo" --batch-size "$BATCH" --metrics "$OUT/r/$n.yaml" -o /dev/null "$@" "$in"
	t1=$(now)
	metric "$OUT/r/$n.yaml" accuracy >"$OUT/r/$n.acc"
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >"$OUT/r/$n.s"
}
get() { cat "$OUT/r/$1.$2"; }
# again NAME ARGS...: runs pred twice more and keeps the best time (the
# machine may be shared).
again() {
	_n=$1
	shift
	_b=$(get "$_n" s)
	for _i in 1 2; do
		pred "$_n-again" "$@"
		_b=$(awk -v a="$_b" -v b="$(get "$_n-again" s)" 'BEGIN { print (b < a ? b : a) }')
	done
	echo "$_b" >"$OUT/r/$_n.s"
}

status=0
target() { # DESC COND
	if awk "BEGIN { exit !($2) }"; then r=PASS; else r=FAIL; status=1; fi
	echo "bench:   target $1: $r"
}

for z in finetuned seeded; do
	zd=$OUT/$z
	for wname in defaults similarity; do
		W=
		[ "$wname" = similarity ] && W=$SIM
		for g in full group layer auto; do
			pred "$z-$wname-$g" "$zd" "$C/test.safetensors.gz" $W --granularity $g \
				--trace "$OUT/r/$z-$wname-$g.trace"
		done
		# Without --granularity: the defaults route at the full level.
		pred "$z-$wname-default" "$zd" "$C/test.safetensors.gz" $W
		for g in layer auto; do
			again "$z-$wname-$g" "$zd" "$C/test.safetensors.gz" $W --granularity $g
		done
		best=full
		for g in default group layer; do
			awk -v a="$(get "$z-$wname-$g" acc)" -v b="$(get "$z-$wname-$best" acc)" \
				'BEGIN { exit !(a > b) }' && best=$g
		done
		a=$(get "$z-$wname-auto" acc) sa=$(get "$z-$wname-auto" s)
		echo "bench: gauto-$z-$wname-accuracy: $(pts "$a") % (best fixed, $best: $(pts "$(get "$z-$wname-$best" acc)") %, ratio $(ratio "$a" "$(get "$z-$wname-$best" acc)"))"
		echo "bench: gauto-$z-$wname-time: $sa s (layer: $(get "$z-$wname-layer" s) s, ratio $(ratio "$sa" "$(get "$z-$wname-layer" s)"); best of 3; once: full $(get "$z-$wname-full" s) s, group $(get "$z-$wname-group" s) s)"
		levels=$(awk -F, 'NR > 1 && !seen[$1]++ { n[$8]++ } END { printf "full %d group %d layer %d", n["full"], n["group"], n["layer"] }' "$OUT/r/$z-$wname-auto.trace")
		echo "bench: gauto-$z-$wname-levels: $levels batches"
		target "$z $wname: auto accuracy >= best fixed - 0.2 points" \
			"$a >= $(get "$z-$wname-$best" acc) - 0.002"
		target "$z $wname: auto time <= layer's" "$sa <= $(get "$z-$wname-layer" s)"
	done
done

# ---- a latency budget that the layer level exceeds and the full level meets ----
# Seeded zoo, similarity per row (where auto measures and decides; with the
# defaults every unit gets the same weights and auto is the full level).
# Each level's batch times (the sample included) come from a run that a
# rule holds at that level; the budget is 1.25 times the full level's 95th
# percentile (room for the loaded machine).  Whether the layer level
# exceeds it is printed as a precondition: where the levels cost the same,
# the case the issue asks about does not arise on this zoo.
zd=$OUT/seeded
quant() { awk -F, 'NR > 1 && !seen[$1]++ { print $9 }' "$1" | sort -n |
	awk -v q="$2" '{ v[NR] = $1 } END { i = int(q * NR + 0.999); if (i < 1) i = 1; printf "%.3f", v[i] }'; }
share() { awk -F, -v b="$2" 'NR > 1 && !seen[$1]++ { n++; if ($9 <= b) w++ } END { printf "%.4f", w / n }' "$1"; }
for g in full layer; do
	printf 'default: %s\n' "$g" >"$OUT/r/force-$g.yaml"
	pred "force-$g" "$zd" "$C/test.safetensors.gz" $SIM --granularity auto \
		--granularity-rules "$OUT/r/force-$g.yaml" --trace "$OUT/r/force-$g.trace"
done
B=$(awk -v a="$(quant "$OUT/r/force-full.trace" 0.95)" 'BEGIN { printf "%.3f", 1.25 * a }')
echo "bench: gauto-budget: $B ms per batch (1.25 x the full level's 95th percentile; medians: full $(quant "$OUT/r/force-full.trace" 0.5) ms, layer $(quant "$OUT/r/force-layer.trace" 0.5) ms)"
pred budget-full "$zd" "$C/test.safetensors.gz" $SIM --granularity full --latency-budget-ms "$B" \
	--trace "$OUT/r/budget-full.trace"
pred budget-auto "$zd" "$C/test.safetensors.gz" $SIM --granularity auto --latency-budget-ms "$B" \
	--trace "$OUT/r/budget-auto.trace"
mld=$(share "$OUT/r/force-layer.trace" "$B")
echo "bench: gauto-budget-layer-within: $(pts "$mld") % of batches (the layer level alone; the full level alone: $(pts "$(share "$OUT/r/force-full.trace" "$B")") %)"
within=$(share "$OUT/r/budget-auto.trace" "$B")
levels=$(awk -F, 'NR > 1 && !seen[$1]++ { n[$8]++ } END { printf "full %d group %d layer %d", n["full"], n["group"], n["layer"] }' "$OUT/r/budget-auto.trace")
echo "bench: gauto-budget-within: $(pts "$within") % of batches (target: 99 %, ratio $(ratio "$within" 0.99); levels: $levels)"
echo "bench: gauto-budget-accuracy: $(pts "$(get budget-auto acc)") % (full under the budget: $(pts "$(get budget-full acc)") %, ratio $(ratio "$(get budget-auto acc)" "$(get budget-full acc)"))"
if awk "BEGIN { exit !($mld < 0.5) }"; then r=PASS; else r="FAIL (the levels cost alike here)"; fi
echo "bench:   precondition budget: the layer level exceeds it on most batches: $r"
target "budget: >= 99% of batches within" "$within >= 0.99"
target "budget: auto accuracy >= full's" "$(get budget-auto acc) >= $(get budget-full acc)"

# ---- the alternating stream ----
for z in finetuned seeded; do
	pred "alt-$z" "$OUT/$z" "$C/alt.safetensors.gz" $SIM --granularity auto \
		--trace "$OUT/r/alt-$z.trace"
	awk -F, 'NR > 1 && !seen[$1]++ { k = ($1 % 2) ? "one-kind" : "mixed"; n[k, $8]++; if (NR > 2 && $8 != last) sw++; last = $8 }
		END { printf "bench: gauto-alternating-%s: %d switches (one kind: full %d group %d layer %d; mixed: full %d group %d layer %d)\n",
			z, sw, n["one-kind", "full"], n["one-kind", "group"], n["one-kind", "layer"],
			n["mixed", "full"], n["mixed", "group"], n["mixed", "layer"] }' z="$z" "$OUT/r/alt-$z.trace"
done
exit 0
