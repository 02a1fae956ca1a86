#!/bin/sh
# make bench: prints the machine, makes the 60000-row Fashion-MNIST data
# stream once, runs every $ZM_BENCH/bench_* program (they find the stream
# in ZM_BENCH_TRAIN), then the shell-level measurements.  Each figure is a
# line "bench: NAME: VALUE UNIT (REF: VALUE UNIT, ratio R)", best of
# ZM_BENCH_REPS runs, measured next to its reference in the same run.
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
BENCH=${ZM_BENCH:?ZM_BENCH must name the directory of the benchmarks}
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
ZM_BENCH_REPS=${ZM_BENCH_REPS:-5}
export ZM_BENCH_REPS
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT
status=0

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo "machine: ${cpu:-unknown CPU}, $(nproc 2>/dev/null || echo '?') threads," \
	"$("$BIN/tensor" --version | sed -n 's/^BLIS kernels: /BLIS arch /p')"

# Seconds since the epoch with nanoseconds (GNU date).
now() { date +%s.%N; }

# best_of N CMD: runs the shell command N times, prints the best seconds.
best_of() {
	_n=$1; _cmd=$2; _best=
	while [ "$_n" -gt 0 ]; do
		_t0=$(now)
		sh -c "$_cmd" || return 1
		_t1=$(now)
		_best=$(awk -v a="$_t0" -v b="$_t1" -v best="$_best" \
			'BEGIN { t = b - a; if (best == "" || t < best) best = t; printf "%.3f", best }')
		_n=$((_n - 1))
	done
	echo "$_best"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

if [ ! -r "$FM/train-images-idx3-ubyte.gz" ]; then
	echo "bench: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
ZM_BENCH_TRAIN=$T/train.safetensors.gz
export ZM_BENCH_TRAIN
imp="'$BIN/tensor' import --from idx --images '$FM/train-images-idx3-ubyte.gz' --labels '$FM/train-labels-idx1-ubyte.gz' -o '$ZM_BENCH_TRAIN'"
t_imp=$(best_of 3 "$imp") || { echo "bench: tensor import failed"; exit 1; }
t_zimg=$(best_of 3 "zcat '$FM/train-images-idx3-ubyte.gz' '$FM/train-labels-idx1-ubyte.gz' > /dev/null")
echo "bench: tensor-import-idx-60k: $t_imp s (zcat of the IDX files: $t_zimg s, ratio $(ratio "$t_imp" "$t_zimg"))"

# bench_mlp reads the IDX files and runs its PyTorch peer
# (tests/bench/torch_mlp.py, through ZM_SRCDIR) itself.
ZM_FASHION_MNIST=$FM
export ZM_FASHION_MNIST
for b in "$BENCH"/bench_*; do
	[ -x "$b" ] || continue
	"$b" || { echo "bench: $(basename "$b") failed"; status=1; }
done

# Shell benchmarks: every tests/bench/*.sh but this one, with the same
# environment (ZM_BIN, ZM_BENCH, ZM_BENCH_TRAIN, ZM_FASHION_MNIST).
for s in "$(dirname "$0")"/*.sh; do
	[ "$(basename "$s")" = run.sh ] && continue
	sh "$s" || { echo "bench: $(basename "$s") failed"; status=1; }
done

t_zcat=$(best_of "$ZM_BENCH_REPS" "zcat '$ZM_BENCH_TRAIN' > /dev/null")
t_info=$(best_of "$ZM_BENCH_REPS" "'$BIN/tensor' info '$ZM_BENCH_TRAIN' > /dev/null")
echo "bench: tensor-info-60k: $t_info s (zcat > /dev/null: $t_zcat s, ratio $(ratio "$t_info" "$t_zcat"))"
t_exp=$(best_of 1 "'$BIN/tensor' export --to csv '$ZM_BENCH_TRAIN' > /dev/null")
echo "bench: tensor-export-csv-60k: $t_exp s (zcat > /dev/null: $t_zcat s, ratio $(ratio "$t_exp" "$t_zcat"))"
exit $status
