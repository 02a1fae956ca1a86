#!/bin/sh
# Dynamic inference on Fashion-MNIST: K = 4 slice models from one base
# (scripts/demo's set-up, full size), then on the 10,000 test images the
# per-row similarity weighting against the uniform parameter average (soup)
# and the best slice model, the router weighting against the joint model
# (all data, same epochs, same base), and --feedback on the shifting stream
# against the same run without it.  Each figure is printed next to its
# reference from the same run, with the issue's target and whether it is
# met.  Environment: ZM_BIN, ZM_FASHION_MNIST, ZM_BENCH_TRAIN (the 60k
# training stream, reused instead of importing it again).
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -r "$FM/t10k-images-idx3-ubyte.gz" ]; then
	echo "bench: predict_fmnist: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-fm.XXXXXX")
trap 'rm -rf "$W"' EXIT

t0=$(date +%s)
if ! env DEMO_DIR="$W/demo" ZM_BIN="$BIN" ZM_FASHION_MNIST="$FM" \
	DEMO_TRAIN_STREAM="${ZM_BENCH_TRAIN:-}" sh "$SRC/scripts/demo" >"$W/table" 2>"$W/log"; then
	echo "bench: predict_fmnist: the demo pipeline failed:"
	tail -n 10 "$W/log" | sed 's/^/    /'
	exit 1
fi
t1=$(date +%s)
R=$W/demo/results.tsv

# col NAME FIELD: a field of a row of the results (2 accuracy, 3 loss, 4 rows/s).
col() { awk -F'\t' -v n="$1" -v f="$2" '$1 == n { print $f }' "$R"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
# line NAME VALUE REFNAME REF: one bench line for two accuracies.
line() { echo "bench: $1: $2 accuracy ($3: $4 accuracy, ratio $(ratio "$2" "$4"))"; }
# target DESC CONDITION(awk, a and b): met or not met.
target() {
	if awk -v a="$2" -v b="$3" "BEGIN { exit !($4) }"; then m="met"; else m="NOT met"; fi
	echo "bench:   target $1: $m"
}

soup=$(col "soup (merge --method linear)" 2)
joint=$(col "joint (all data)" 2)
best=0 bestn=
for s in tops bottoms shoes bags; do
	a=$(col "slice model: $s" 2)
	if awk -v a="$a" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$a bestn=$s; fi
done
echo "bench: predict_fmnist: K=4 label-group slice models, 10000 test images, pipeline $((t1 - t0)) s"
for g in full group layer; do
	sim=$(col "similarity, per row, $g" 2)
	line "fmnist-similarity-row-$g-vs-soup" "$sim" "soup" "$soup"
done
sim=$(col "similarity, per row, full" 2)
target "similarity (per row, full) >= soup + 0.10" "$sim" "$soup" "a >= b + 0.10"
line "fmnist-similarity-row-full-vs-best-slice" "$sim" "slice model $bestn" "$best"
target "similarity (per row, full) > every slice model" "$sim" "$best" "a > b"
for g in full group layer; do
	line "fmnist-router-row-$g-vs-joint" "$(col "router, per row, $g" 2)" "joint" "$joint"
done
target "router (per row, full) >= 0.97 x joint" "$(col "router, per row, full" 2)" "$joint" "a >= 0.97 * b"
line "fmnist-ensemble-vs-joint" "$(col "output ensemble (uniform)" 2)" "joint" "$joint"
line "fmnist-ties-vs-soup" "$(col "merge --method ties" 2)" "soup" "$soup"
line "fmnist-dare-vs-soup" "$(col "merge --method dare" 2)" "soup" "$soup"
fb=$(col "shifting stream, --feedback" 2)
nofb=$(col "shifting stream, no feedback" 2)
line "fmnist-shift-feedback" "$fb" "same run without --feedback" "$nofb"
target "--feedback > no feedback on the shifting stream" "$fb" "$nofb" "a > b"
nofb=$(col "segmented stream (4 shifts), per batch, no feedback" 2)
fb=$(col "segmented stream (4 shifts), per batch, --feedback" 2)
line "fmnist-segments-feedback" "$fb" "same run without --feedback" "$nofb"
target "--feedback > no feedback on the segmented stream" "$fb" "$nofb" "a > b"
ad=$(col "segmented stream (4 shifts), per batch, --adapt entropy" 2)
noad=$nofb
line "fmnist-segments-adapt-entropy" "$ad" "same run without --adapt" "$noad"
target "--adapt entropy >= 0.99 x the same run without it" "$ad" "$noad" "a >= 0.99 * b"
r1=$(col "similarity, per row, full" 4)
r0=$(col "joint (all data)" 4)
echo "bench: fmnist-similarity-row-full-throughput: $r1 rows/s (one model: $r0 rows/s, ratio $(ratio "$r1" "$r0"))"
r1=$(col "similarity, per row, layer" 4)
echo "bench: fmnist-similarity-row-layer-throughput: $r1 rows/s (one model: $r0 rows/s, ratio $(ratio "$r1" "$r0"))"
