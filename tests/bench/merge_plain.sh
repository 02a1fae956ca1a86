#!/bin/sh
# Memory and time of static merges of plain safetensors checkpoints: four
# models and a base, each one F32 tensor of 4096 x 4096 (16.8M elements,
# 64 MiB), merged with linear (streamed in chunks) and TIES (a first pass
# over the chunks finds each threshold, a second merges).  Peak RSS is
# compared with the largest tensor, time with the I/O floor (reading the
# inputs and writing the output's bytes), best of ZM_BENCH_REPS (at most
# 3) runs in the same run.  Then TIES as a mergekit config over four BF16
# checkpoints and a base whose largest tensor has 100M elements (200 MiB
# each, 1.2 GiB of TMPDIR with the output, removed at the end; skipped
# with less than 2 GiB free).  The floor reads the five inputs once and
# writes and syncs the output's bytes; merge reads them twice (the second
# time from the page cache) and syncs its output.  Needs python3 (to write
# the inputs) and GNU time (/usr/bin/time -v); skips without them.
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

rm -f "$T"/*.safetensors "$T/floor"
# TIES of four checkpoints whose largest tensor has 100M elements.  The
# values are random BF16 bit patterns with the exponent held to a finite
# range (bytes.translate over os.urandom: Python writes 200 MiB a second).
free_kib=$(df -Pk "$T" | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((2 * 1024 * 1024)) ]; then
	echo "bench: merge-plain-ties-4x100M: skipped: less than 2 GiB free in ${TMPDIR:-/tmp}"
	exit 0
fi
python3 - "$T" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
n = 10000 * 10000
table = bytes((b & 0x87) | 0x38 for b in range(256))
for name in ['base', 'a', 'b', 'c', 'd']:
    big = os.urandom(2 * n).translate(table)
    small = os.urandom(2 * 4096).translate(table)
    hdr = {'__metadata__': {'format': 'pt'},
           'model.embed_tokens.weight': {'dtype': 'BF16', 'shape': [1024, 4],
                                         'data_offsets': [0, len(small)]},
           'model.layers.0.mlp.down_proj.weight': {
               'dtype': 'BF16', 'shape': [10000, 10000],
               'data_offsets': [len(small), len(small) + len(big)]}}
    h = json.dumps(hdr).encode()
    h += b' ' * (-len(h) % 8)
    with open('%s/%s.safetensors' % (d, name), 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h)
        f.write(small)
        f.write(big)
PY
cat >"$T/ties.yml" <<Y
models:
  - {model: $T/a.safetensors, parameters: {density: 0.5, weight: 1.0}}
  - {model: $T/b.safetensors, parameters: {density: 0.5, weight: 1.0}}
  - {model: $T/c.safetensors, parameters: {density: 0.5, weight: 1.0}}
  - {model: $T/d.safetensors, parameters: {density: 0.5, weight: 1.0}}
merge_method: ties
base_model: $T/base.safetensors
dtype: bfloat16
Y
in="'$T/a.safetensors' '$T/b.safetensors' '$T/c.safetensors' '$T/d.safetensors'"
out_bytes=$(wc -c <"$T/base.safetensors")
floor="cat '$T/base.safetensors' $in >/dev/null && head -c $out_bytes /dev/zero >'$T/floor' && sync '$T/floor'"
t_floor=$(best_of "$REPS" "$floor") || exit 1
# The same bytes read twice, as merge's two passes read them.
floor2="cat '$T/base.safetensors' $in '$T/base.safetensors' $in >/dev/null && head -c $out_bytes /dev/zero >'$T/floor' && sync '$T/floor'"
t_floor2=$(best_of "$REPS" "$floor2") || exit 1
cmd="'$BIN/merge' --quiet --mergekit-config '$T/ties.yml' -o '$T/out.safetensors' && sync '$T/out.safetensors'"
t=$(best_of "$REPS" "$cmd") || { echo "bench: merge-plain-ties-4x100M failed"; exit 1; }
r=$(rss "$cmd") || exit 1
echo "bench: merge-plain-ties-4x100M: $t s (read + write same bytes: $t_floor s, ratio $(ratio "$t" "$t_floor"))"
echo "bench: merge-plain-ties-4x100M-vs-two-reads: $t s (read twice + write: $t_floor2 s, ratio $(ratio "$t" "$t_floor2"))"
echo "bench: merge-plain-ties-4x100M-peak-rss: $r MiB (limit: 300 MiB, ratio $(ratio "$r" 300))"
