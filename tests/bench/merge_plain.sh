#!/bin/sh
# Memory and time of static merges of plain safetensors checkpoints: four
# models and a base, each one F32 tensor of 4096 x 4096 (16.8M elements,
# 64 MiB), merged with linear (streamed in chunks) and TIES (threshold
# selected over chunks, task vectors spilled to TMPDIR).  Peak RSS is
# compared with the largest tensor, time with the I/O floor (reading the
# inputs and writing the output's bytes), best of ZM_BENCH_REPS (at most
# 3) runs in the same run.  Needs python3 (to write the inputs) and GNU
# time (/usr/bin/time -v); skips without them.
# Prints "bench: NAME: VALUE UNIT (REF: VALUE UNIT, ratio R)".
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
REPS=${ZM_BENCH_REPS:-5}
[ "$REPS" -gt 3 ] && REPS=3
if ! command -v python3 >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
	echo "bench: merge-plain: skipped: needs python3 and /usr/bin/time"
	exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-mergeplain.XXXXXX")
trap 'rm -rf "$T"' EXIT

python3 - "$T" <<'PY'
import array, json, random, struct, sys
d = sys.argv[1]
for i, name in enumerate(['base', 'a', 'b', 'c', 'd']):
    rng = random.Random(i)
    row = array.array('f', [rng.gauss(0, 0.02) for _ in range(4096 * 16)])
    raw = (row * 256).tobytes()
    hdr = {'__metadata__': {'format': 'pt'},
           'model.layers.0.mlp.weight': {'dtype': 'F32', 'shape': [4096, 4096],
                                         'data_offsets': [0, len(raw)]}}
    h = json.dumps(hdr).encode()
    h += b' ' * (-len(h) % 8)
    with open('%s/%s.safetensors' % (d, name), 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + raw)
PY

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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# Peak RSS in MiB of one run of the shell command.
rss() {
	/usr/bin/time -v sh -c "$1" 2>"$T/time.err" >/dev/null || return 1
	awk '/Maximum resident/ { printf "%.1f", $NF / 1024 }' "$T/time.err"
}

in="'$T/a.safetensors' '$T/b.safetensors' '$T/c.safetensors' '$T/d.safetensors'"
floor="cat '$T/base.safetensors' $in >/dev/null && head -c 67108960 /dev/zero >'$T/floor'"
t_floor=$(best_of "$REPS" "$floor") || exit 1
for m in linear ties; do
	cmd="'$BIN/merge' --quiet --method $m --base '$T/base.safetensors' -o '$T/out.safetensors' $in"
	t=$(best_of "$REPS" "$cmd") || { echo "bench: merge-plain-$m failed"; exit 1; }
	r=$(rss "$cmd") || exit 1
	echo "bench: merge-plain-$m-4x16.8M: $t s (read + write same bytes: $t_floor s, ratio $(ratio "$t" "$t_floor"))"
	echo "bench: merge-plain-$m-peak-rss: $r MiB (largest tensor: 64 MiB, ratio $(ratio "$r" 64))"
done
