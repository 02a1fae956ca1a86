#!/bin/sh
# Slicing cost against import: the 60000-row Fashion-MNIST training set
# read from its IDX files and written as streams, once by `tensor import`
# (one stream) and once by `slice` (four slices by row mean, label set,
# hash split and default, each with its profile), best of ZM_BENCH_REPS
# runs in the same run; then k-means (k = 10) slicing of the same data.
# Prints "bench: NAME: VALUE UNIT (REF: VALUE UNIT, ratio R)".
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
REPS=${ZM_BENCH_REPS:-5}
if [ ! -r "$FM/train-images-idx3-ubyte.gz" ]; then
	echo "bench: slice: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-slice.XXXXXX")
trap 'rm -rf "$T"' EXIT

now() { date +%s.%N; }
best_of() {
	_n=$1; _cmd=$2; _best=
	while [ "$_n" -gt 0 ]; do
		_t0=$(now)
		sh -c "$_cmd" >/dev/null || return 1
		_t1=$(now)
		_best=$(awk -v a="$_t0" -v b="$_t1" -v best="$_best" \
			'BEGIN { t = b - a; if (best == "" || t < best) best = t; printf "%.3f", best }')
		_n=$((_n - 1))
	done
	echo "$_best"
}
rate() { awk -v t="$1" 'BEGIN { printf "%.0f", (t > 0 ? 60000 / t : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

cat >"$T/rules.yaml" <<'YAML'
slices:
  - {name: hold, where: {hash: 0.1, seed: 7}}
  - {name: dark, where: {stat: mean, max: 0.2}}
  - {name: tops, where: {label: [0, 2, 4, 6]}}
  - {name: rest, default: true}
YAML
printf 'clusters: {k: 10, seed: 1, iterations: 20, sample: 10000}\n' >"$T/k.yaml"
src="--from idx --images '$FM/train-images-idx3-ubyte.gz' --labels '$FM/train-labels-idx1-ubyte.gz'"
imp="'$BIN/tensor' import $src -o '$T/imp.safetensors.gz'"
sl="'$BIN/slice' --rules '$T/rules.yaml' --out-dir '$T/s' $src"
km="'$BIN/slice' --rules '$T/k.yaml' --out-dir '$T/k' $src"
t_imp=$(best_of "$REPS" "$imp") || { echo "bench: slice: tensor import failed"; exit 1; }
t_sl=$(best_of "$REPS" "$sl") || { echo "bench: slice: slice failed"; exit 1; }
echo "bench: slice-idx-60k: $(rate "$t_sl") rows/s (tensor import of the same data: $(rate "$t_imp") rows/s, ratio $(ratio "$(rate "$t_sl")" "$(rate "$t_imp")"))"
echo "bench: slice-idx-60k-time: $t_sl s (tensor import: $t_imp s, ratio $(ratio "$t_sl" "$t_imp"))"
t_km=$(best_of 1 "$km") || { echo "bench: slice: k-means slice failed"; exit 1; }
echo "bench: slice-kmeans10-idx-60k-time: $t_km s (tensor import: $t_imp s, ratio $(ratio "$t_km" "$t_imp"))"
