#!/bin/sh
# Adaptive merging without tuning (issue 15): builds five zoos with the
# programs themselves and measures, on each, what predict does with its
# defaults next to the static merges, the single models, a jointly trained
# model, perfect routing, the router and the hand-tuned flags of today.
#
#   finetuned  four label-group specialists (tops, bottoms, shoes, bags)
#              fine-tuned from a base pre-trained on all the training rows
#   seeded     the same four specialists from one seeded initialisation
#              (scripts/demo's set-up)
#   hparams    four models of the same rows with different hyperparameters
#              (no slices: no routing, router or perfect routing)
#   domains    the same images under four transformations (ident, invert,
#              flip upside down, shift by 4 pixels right and down), each row
#              under one of them by a hash of its id, one model per domain,
#              a mixed test stream
#   sources    a CSV with a string column source (north, south, west: three
#              synthetic sources, with their own feature distribution and
#              their own classes' geometry), one model per source
#   unrelated  three specialists (tops, shoes, rest: labels 1, 3, 8)
#              created with different seeds (1, 2, 3), so that their hidden
#              units do not correspond (issue 23), each trained on its slice
#   oneinit    the same three from one seeded initialisation (seed 1)
#
# Sizes: an 11,950-row subset of the Fashion-MNIST training set (a seeded
# hash of the id, 0.2), the 10,000 test images, an MLP 784-256-128-10; the
# CSV has 20 features, 5 classes, 2,000 training and 1,000 test rows per
# source.  Routing accuracy is measured on a fifth of the test
# stream with --batch-size 1, where predict's trace holds one row's weights:
# a row counts when its own slice's model has a weight above every other's.
#
# Usage: sh tests/bench/adaptive.sh [DIR]
#   DIR keeps the zoos, the test streams, results and README.txt (the
#   predict commands of every row); without it a temporary directory is
#   used and removed.  Environment:
#   ZM_BIN                the programs [build/bin of this checkout]
#   ZM_FASHION_MNIST      the IDX files [/usr/share/datasets/fashion-mnist]
#   ZM_BENCH_TRAIN        the 60k training stream, already imported [import]
#   ZM_ADAPTIVE_ZOOS      which zoos [finetuned seeded hparams domains sources
#                         unrelated oneinit]
#   ZM_ADAPTIVE_REUSE     1: keep the zoos DIR already holds, only measure
#   ZM_ADAPTIVE_EPOCHS    epochs of the specialists and the joint model [3]
#   ZM_ADAPTIVE_PROFILE   1: before measuring, recompute every model's
#                         profile from its training rows (zoo-add --profile
#                         with its slice, or the training set) [0]
# Lines: "bench: adaptive-ZOO-WHAT: VALUE UNIT (REF: VALUE UNIT, ratio R)",
# the issue's targets as "bench:   target ...: PASS|FAIL" (informational),
# then a table per zoo.  Exit 1 only when a program fails.
# shellcheck disable=SC2046,SC2086 # lists of options and names split on purpose
set -u
LC_ALL=C
export LC_ALL
prog=adaptive
here=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${ZM_BIN:-$here/build/bin}
BIN=$(cd "$BIN" && pwd)
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
ALL_ZOOS="finetuned seeded hparams domains sources unrelated oneinit"
ZOOS=${ZM_ADAPTIVE_ZOOS:-$ALL_ZOOS}
REUSE=${ZM_ADAPTIVE_REUSE:-0}
EPOCHS=${ZM_ADAPTIVE_EPOCHS:-3}
PROFILE=${ZM_ADAPTIVE_PROFILE:-0}
TUNED1="--per row --metric cosine --temperature 0.01"
TUNED2="--per row --metric mahalanobis --temperature 0.1"
TRAIN="--lr 0.05 --batch-size 64 --quiet"

if [ ! -r "$FM/t10k-images-idx3-ubyte.gz" ]; then
	echo "bench: $prog: skipped: no Fashion-MNIST in $FM"
	exit 0
fi
if [ $# -gt 0 ]; then
	mkdir -p "$1" || exit 1
	OUT=$(cd "$1" && pwd)
else
	OUT=$(mktemp -d "${TMPDIR:-/tmp}/zm-bench-adaptive.XXXXXX")
	trap 'rm -rf "$OUT"' EXIT
fi
LOG=$OUT/log.txt
: >>"$LOG"

now() { date +%s.%N; }
T0=$(now)
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

# run CMD...: runs a program with its stderr in the log; on failure says
# so and stops the benchmark.
run() {
	"$@" 2>>"$LOG" && return 0
	rc=$?
	echo "bench: $prog: failed (exit $rc): $*"
	tail -n 5 "$LOG" | sed 's/^/    /'
	exit 1
}
P() { _p=$1; shift; run "$BIN/$_p" "$@"; }

# mfile ZOO NAME: the current file of model NAME of a zoo.
mfile() {
	awk -v n="$2" -v z="$1" '
		$1 == "-" && $2 == "name:" { cur = $3 }
		cur == n && $1 == "file:" { f = z "/" $2 }
		END { print f }' "$1/zoo.yaml"
}
# metric FILE KEY: a value of a --metrics file.
metric() { awk -v k="$2:" '$1 == k { print $2; exit }' "$1"; }

# ---------------------------------------------------------------------------
# Shared data: the training subset and the test set, as streams and CSV.
C=$OUT/common
mkdir -p "$C"
if [ "$REUSE" != 1 ] || [ ! -s "$C/test.csv" ]; then
	rm -rf "$C" && mkdir -p "$C"
	if [ -n "${ZM_BENCH_TRAIN:-}" ] && [ -r "$ZM_BENCH_TRAIN" ]; then
		cp "$ZM_BENCH_TRAIN" "$C/train-all.safetensors.gz"
	else
		P tensor import --from idx --images "$FM/train-images-idx3-ubyte.gz" \
			--labels "$FM/train-labels-idx1-ubyte.gz" -o "$C/train-all.safetensors.gz"
	fi
	cat >"$C/subset.yaml" <<'EOF'
slices:
  - {name: train, where: {hash: 0.2, seed: 11}}
EOF
	P slice --rules "$C/subset.yaml" --unmatched drop --out-dir "$C" "$C/train-all.safetensors.gz" >/dev/null
	rm -f "$C/train-all.safetensors.gz"
	P tensor import --from idx --images "$FM/t10k-images-idx3-ubyte.gz" \
		--labels "$FM/t10k-labels-idx1-ubyte.gz" -o "$C/test.safetensors.gz"
	P tensor export --to csv -o "$C/train.csv" "$C/train.safetensors.gz"
	P tensor export --to csv -o "$C/test.csv" "$C/test.safetensors.gz"
fi
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
cat >"$C/groups3.yaml" <<'EOF'
mode: partition
slices:
  - {name: tops,  where: {label: [0, 2, 4, 6]}}
  - {name: shoes, where: {label: [5, 7, 9]}}
  - {name: rest,  where: {label: [1, 3, 8]}}
EOF
cat >"$C/route.yaml" <<'EOF'
slices:
  - {name: route, where: {hash: 0.2, seed: 5}}
EOF

# router_arch IN K FILE: a router MLP IN-128-K.
router_arch() {
	cat >"$3" <<EOF
input: [$1]
loss: cross-entropy
layers:
  - {name: hidden, type: dense, units: 128, activation: relu, group: features}
  - {name: out, type: dense, units: $2, group: head}
EOF
}

# identity_assignment FILE SLICE...: slice i to model i, weight 1: the
# router's class j is the jth slice, as slice --membership numbers them.
identity_assignment() {
	f=$1
	shift
	{
		echo "metric: kl"
		echo "slices:"
		for s in "$@"; do
			echo "  - slice: $s"
			echo "    models: [{model: $s, weight: 1}]"
		done
	} >"$f"
}

# test_parts ZD RULES: splits ZD/test.safetensors.gz by the rules into
# ZD/parts/ (perfect routing), and makes the routing subset
# ZD/route.safetensors.gz with ZD/route-truth.txt, the slice of each of its
# rows in order.
test_parts() {
	P slice --rules "$2" --out-dir "$1/parts" "$1/test.safetensors.gz" >/dev/null
	P slice --rules "$C/route.yaml" --unmatched drop --out-dir "$1/tmp" "$1/test.safetensors.gz" >/dev/null
	mv "$1/tmp/route.safetensors.gz" "$1/route.safetensors.gz"
	P slice --rules "$2" --out-dir "$1/tmp/parts" --membership "$1/tmp/m.safetensors.gz" \
		"$1/route.safetensors.gz" >/dev/null
	"$BIN/tensor" export --to csv "$1/tmp/m.safetensors.gz" 2>>"$LOG" |
		awk -F, 'NR > 1 { print $NF }' >"$1/route-truth.txt"
	rm -rf "$1/tmp"
}

# specialists ZD SLICE...: one profile-less copy of ZD/models/base per
# slice (assign --create), each trained EPOCHS epochs on its slice
# ZD/slices/SLICE; the router on ZD/membership.
specialists() {
	zd=$1
	shift
	for s in "$@"; do set -- "$@" "$zd/slices/$s.safetensors.gz"; shift; done
	P zoo-add --zoo "$zd/base-zoo" --name base "$zd/models/base.safetensors.gz"
	P assign --zoo "$zd/base-zoo" --new-model-threshold 1e30 --create --base base \
		-o "$zd/tmp-create.yaml" "$@" >/dev/null
	i=0
	for f in "$@"; do
		s=$(basename "$f" .safetensors.gz)
		i=$((i + 1))
		P zoo-add --zoo "$zd/zoo" --name "$s" --tag "slice=$s" "$(mfile "$zd/base-zoo" "$s")"
		P train-step --zoo "$zd/zoo" --model "$s" --epochs "$EPOCHS" $TRAIN --seed "$i" --apply "$f"
	done
	rm -rf "$zd/base-zoo" "$zd/tmp-create.yaml"
}

# joint_from ZD EPOCHS DATA: ZD/models/joint, the base trained on all data.
joint_from() {
	P zoo-add --zoo "$1/joint-zoo" --name joint "$1/models/base.safetensors.gz"
	P train-step --zoo "$1/joint-zoo" --model joint --epochs "$2" $TRAIN --seed 1 --apply "$3"
	cp "$(mfile "$1/joint-zoo" joint)" "$1/models/joint.safetensors.gz"
	rm -rf "$1/joint-zoo"
}

# router ZD IN K: the router of the zoo, trained 3 epochs on ZD/membership.
router() {
	router_arch "$2" "$3" "$1/router.yaml"
	P zoo-add --zoo "$1/zoo" --name router --arch "$1/router.yaml" --seed 1 --tag role=router
	P train-step --zoo "$1/zoo" --model router --epochs 3 $TRAIN --seed 1 --apply \
		"$1/membership.safetensors.gz"
}

# static_merges ZD MODEL...: soup and TIES (against models/base).
static_merges() {
	zd=$1
	shift
	set -- $(for m in "$@"; do mfile "$zd/zoo" "$m"; done)
	P merge --quiet --method linear -o "$zd/models/soup.safetensors.gz" "$@"
	P merge --quiet --method ties --base "$zd/models/base.safetensors.gz" --density 0.2 \
		-o "$zd/models/ties.safetensors.gz" "$@"
}

# ---------------------------------------------------------------------------
# The zoos.
LABEL_GROUPS="tops bottoms shoes bags"

build_groups() { # ZD BASE_EPOCHS
	zd=$1
	mkdir -p "$zd/models"
	P slice --rules "$C/groups.yaml" --out-dir "$zd/slices" \
		--membership "$zd/membership.safetensors.gz" "$C/train.safetensors.gz" >/dev/null
	P zoo-add --zoo "$zd/init-zoo" --name base --arch "$C/mlp.yaml" --seed 1
	if [ "$2" -gt 0 ]; then
		P train-step --zoo "$zd/init-zoo" --model base --epochs "$2" $TRAIN --seed 1 --apply \
			"$C/train.safetensors.gz"
	fi
	cp "$(mfile "$zd/init-zoo" base)" "$zd/models/base.safetensors.gz"
	rm -rf "$zd/init-zoo"
	specialists "$zd" $LABEL_GROUPS
	joint_from "$zd" "$EPOCHS" "$C/train.safetensors.gz"
	router "$zd" 784 4
	static_merges "$zd" $LABEL_GROUPS
	cp "$C/test.safetensors.gz" "$zd/test.safetensors.gz"
	test_parts "$zd" "$C/groups.yaml"
	identity_assignment "$zd/assignment.yaml" $LABEL_GROUPS
	echo "$LABEL_GROUPS" >"$zd/models.txt"
}

# build_seeds ZD SAME: the three-slice specialists, each created by zoo-add
# from the architecture with seed i (SAME 0: unrelated models) or all with
# seed 1 (SAME 1: one initialisation), trained on its slice.
GROUPS3="tops shoes rest"
build_seeds() {
	zd=$1
	mkdir -p "$zd/models"
	P slice --rules "$C/groups3.yaml" --out-dir "$zd/slices" \
		--membership "$zd/membership.safetensors.gz" "$C/train.safetensors.gz" >/dev/null
	P zoo-add --zoo "$zd/init-zoo" --name base --arch "$C/mlp.yaml" --seed 1
	cp "$(mfile "$zd/init-zoo" base)" "$zd/models/base.safetensors.gz"
	rm -rf "$zd/init-zoo"
	i=0
	for s in $GROUPS3; do
		i=$((i + 1))
		seed=$i
		[ "$2" = 1 ] && seed=1
		P zoo-add --zoo "$zd/zoo" --name "$s" --arch "$C/mlp.yaml" --seed "$seed" --tag "slice=$s"
		P train-step --zoo "$zd/zoo" --model "$s" --epochs "$EPOCHS" $TRAIN --seed "$i" \
			--apply "$zd/slices/$s.safetensors.gz"
	done
	joint_from "$zd" "$EPOCHS" "$C/train.safetensors.gz"
	router "$zd" 784 3
	set -- $(for m in $GROUPS3; do mfile "$zd/zoo" "$m"; done)
	# A static merge of unrelated models is refused without this (issue 23).
	P merge --quiet --allow-unrelated --method linear -o "$zd/models/soup.safetensors.gz" "$@"
	P merge --quiet --allow-unrelated --method ties --base "$zd/models/base.safetensors.gz" \
		--density 0.2 -o "$zd/models/ties.safetensors.gz" "$@"
	cp "$C/test.safetensors.gz" "$zd/test.safetensors.gz"
	test_parts "$zd" "$C/groups3.yaml"
	identity_assignment "$zd/assignment.yaml" $GROUPS3
	echo "$GROUPS3" >"$zd/models.txt"
}

build_hparams() {
	zd=$1
	mkdir -p "$zd/models"
	P zoo-add --zoo "$zd/zoo" --name init --arch "$C/mlp.yaml" --seed 1
	cp "$(mfile "$zd/zoo" init)" "$zd/models/base.safetensors.gz"
	rm -rf "$zd/zoo"
	n=0
	: >"$zd/models.txt"
	for h in "sgd-lr0.05-b64:--optimizer sgd --lr 0.05 --batch-size 64" \
		"sgd-lr0.02-b32:--optimizer sgd --lr 0.02 --batch-size 32" \
		"momentum0.9-lr0.02-b128:--optimizer sgd --lr 0.02 --momentum 0.9 --batch-size 128" \
		"adam-lr0.001-b128:--optimizer adam --lr 0.001 --batch-size 128"; do
		n=$((n + 1))
		name=${h%%:*}
		P zoo-add --zoo "$zd/zoo" --name "$name" --arch "$C/mlp.yaml" --seed 1
		P train-step --zoo "$zd/zoo" --model "$name" --epochs "$EPOCHS" ${h#*:} --quiet \
			--seed "$n" --apply "$C/train.safetensors.gz"
		printf '%s ' "$name" >>"$zd/models.txt"
	done
	static_merges "$zd" $(cat "$zd/models.txt")
	cp "$C/test.safetensors.gz" "$zd/test.safetensors.gz"
}

# domains_csv IN OUT: every row of a tensor-exported Fashion-MNIST CSV under
# the transformation a multiplicative hash of its id picks, as CSV with the
# columns label, domain (a string column) and x_0..x_783.
domains_csv() {
	awk -F, '
	NR == 1 {
		printf "label,domain"
		for (i = 0; i < 784; i++) printf ",x_%d", i
		printf "\n"
		next
	}
	{
		d = int(($1 * 2654435761 % 4294967296) / 1073741824)
		printf "%s,%s", $786, name[d]
		for (p = 0; p < 784; p++) {
			r = int(p / 28); c = p % 28
			if (d == 0) v = $(p + 2)
			else if (d == 1) v = 1 - $(p + 2)
			else if (d == 2) v = $((27 - r) * 28 + c + 2)
			else v = (r >= 4 && c >= 4) ? $((r - 4) * 28 + c - 4 + 2) : 0
			printf ",%s", v
		}
		printf "\n"
	}
	BEGIN { name[0] = "ident"; name[1] = "invert"; name[2] = "flip"; name[3] = "shift" }
	' "$1" >"$2"
}

DOMAINS="ident invert flip shift"
build_domains() {
	zd=$1
	mkdir -p "$zd/models"
	domains_csv "$C/train.csv" "$zd/train.csv"
	domains_csv "$C/test.csv" "$zd/test.csv"
	P tensor import --from csv --label label -o "$zd/train.safetensors.gz" "$zd/train.csv"
	P tensor import --from csv --label label -o "$zd/test.safetensors.gz" "$zd/test.csv"
	rm -f "$zd/train.csv" "$zd/test.csv"
	{
		echo "mode: partition"
		echo "slices:"
		for s in $DOMAINS; do echo "  - {name: $s, where: {column: domain, in: [$s]}}"; done
	} >"$zd/rules.yaml"
	P slice --rules "$zd/rules.yaml" --out-dir "$zd/slices" \
		--membership "$zd/membership.safetensors.gz" "$zd/train.safetensors.gz" >/dev/null
	P zoo-add --zoo "$zd/init-zoo" --name base --arch "$C/mlp.yaml" --seed 1
	cp "$(mfile "$zd/init-zoo" base)" "$zd/models/base.safetensors.gz"
	rm -rf "$zd/init-zoo"
	specialists "$zd" $DOMAINS
	joint_from "$zd" "$EPOCHS" "$zd/train.safetensors.gz"
	router "$zd" 784 4
	static_merges "$zd" $DOMAINS
	test_parts "$zd" "$zd/rules.yaml"
	identity_assignment "$zd/assignment.yaml" $DOMAINS
	echo "$DOMAINS" >"$zd/models.txt"
}

# sources_csv SEED ROWS OUT: ROWS rows per source, interleaved, of three
# synthetic sources; 20 features, 5 classes.  Source s draws its feature
# offset, its spread and its class centres from its own seeded stream (a
# Lehmer generator, the same in every awk); a row is centre + offset +
# spread * N(0, 1) noise.
SOURCES="north south west"
sources_csv() {
	awk -v seed="$1" -v rows="$2" '
	function u() { st = (st * 48271) % 2147483647; return st / 2147483647 }
	function g(  a, b) { a = u(); b = u(); return sqrt(-2 * log(a)) * cos(6.283185307179586 * b) }
	BEGIN {
		F = 20; K = 5; split("north south west", name, " ")
		spread[1] = 0.8; spread[2] = 1.0; spread[3] = 1.3
		for (s = 1; s <= 3; s++) {
			st = 1000 + 7919 * s
			for (f = 0; f < F; f++) off[s, f] = 1.2 * g()
			for (k = 0; k < K; k++) for (f = 0; f < F; f++) ctr[s, k, f] = 0.9 * g()
		}
		printf "source,label"
		for (f = 0; f < F; f++) printf ",f%d", f
		printf "\n"
		st = seed
		for (i = 0; i < rows; i++) for (s = 1; s <= 3; s++) {
			k = int(u() * K)
			printf "%s,%d", name[s], k
			for (f = 0; f < F; f++) printf ",%.5g", ctr[s, k, f] + off[s, f] + spread[s] * g()
			printf "\n"
		}
	}' >"$3"
}

build_sources() {
	zd=$1
	mkdir -p "$zd/models"
	sources_csv 12345 2000 "$zd/train.csv"
	sources_csv 67890 1000 "$zd/test.csv"
	P tensor import --from csv --label label -o "$zd/train.safetensors.gz" "$zd/train.csv"
	P tensor import --from csv --label label -o "$zd/test.safetensors.gz" "$zd/test.csv"
	{
		echo "mode: partition"
		echo "slices:"
		for s in $SOURCES; do echo "  - {name: $s, where: {column: source, in: [$s]}}"; done
	} >"$zd/rules.yaml"
	P slice --rules "$zd/rules.yaml" --out-dir "$zd/slices" \
		--membership "$zd/membership.safetensors.gz" "$zd/train.safetensors.gz" >/dev/null
	cat >"$zd/arch.yaml" <<'EOF'
input: [20]
loss: cross-entropy
layers:
  - {name: fc1, type: dense, units: 64, activation: relu, group: features}
  - {name: fc2, type: dense, units: 32, activation: relu, group: features}
  - {name: out, type: dense, units: 5, group: head}
EOF
	P zoo-add --zoo "$zd/init-zoo" --name base --arch "$zd/arch.yaml" --seed 1
	cp "$(mfile "$zd/init-zoo" base)" "$zd/models/base.safetensors.gz"
	rm -rf "$zd/init-zoo"
	e=$EPOCHS
	EPOCHS=$((EPOCHS * 4))
	specialists "$zd" $SOURCES
	joint_from "$zd" "$EPOCHS" "$zd/train.safetensors.gz"
	EPOCHS=$e
	router "$zd" 20 3
	static_merges "$zd" $SOURCES
	test_parts "$zd" "$zd/rules.yaml"
	identity_assignment "$zd/assignment.yaml" $SOURCES
	echo "$SOURCES" >"$zd/models.txt"
}

# ---------------------------------------------------------------------------
# Measuring.  R: ZD/results.tsv, one line per row of the table:
# key, name, accuracy, loss, rows/s, routing accuracy, the predict flags.

# pred ZD KEY NAME ARGS...: predicts ZD/test with ARGS, adds a row.
pred() {
	zd=$1 key=$2 name=$3
	shift 3
	best_t=
	r=${REPS:-1}
	while [ "$r" -gt 0 ]; do
		t0=$(now)
		P predict --quiet --metrics "$zd/m-$key.yaml" -o /dev/null "$@" "$zd/test.safetensors.gz"
		t1=$(now)
		best_t=$(awk -v a="$t0" -v b="$t1" -v t="$best_t" 'BEGIN { d = b - a; print (t == "" || d < t) ? d : t }')
		r=$((r - 1))
	done
	m=$zd/m-$key.yaml
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$name" "$(metric "$m" accuracy)" "$(metric "$m" loss)" \
		"$(awk -v t="$best_t" -v n="$(metric "$m" rows)" 'BEGIN { printf "%.0f", n / t }')" \
		"${RA:-}" "$*" >>"$zd/results.tsv"
	rm -f "$m"
}

# routing ZD ARGS...: sets RA, the fraction of the routing subset's rows
# whose own slice's model has the largest weight (strictly) in the trace of
# predict ARGS --batch-size 1; averaged over the units of the trace.
routing() {
	zd=$1
	shift
	RA=
	[ -s "$zd/route-truth.txt" ] || return 0
	P predict --quiet -o /dev/null --batch-size 1 --trace "$zd/trace.csv" "$@" "$zd/route.safetensors.gz"
	RA=$(awk -F, '
		FNR == 1 && NR == FNR { nt = 0 }
		NR == FNR { truth[++nt] = $1; next }
		FNR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		{
			b = $col["batch"]; u = $col["unit"]; w = $col["weight"] + 0
			k = b SUBSEP u
			if (!(k in best) || w > best[k]) { second[k] = (k in best) ? best[k] : -1; best[k] = w; top[k] = $col["model"] }
			else if (w > second[k]) second[k] = w
			units[u] = 1
		}
		END {
			n = 0; ok = 0
			for (k in best) {
				split(k, p, SUBSEP)
				n++
				if (top[k] == truth[p[1]] && best[k] > second[k]) ok++
			}
			if (n) printf "%.4f", ok / n
		}' "$zd/route-truth.txt" "$zd/trace.csv")
	rm -f "$zd/trace.csv"
}

# perfect ZD MODEL...: each slice's test rows predicted by its own model.
perfect() {
	zd=$1
	shift
	t0=$(now)
	for s in "$@"; do
		P predict --quiet --zoo "$zd/zoo" --model "$s" --metrics "$zd/m-part-$s.yaml" -o /dev/null \
			"$zd/parts/$s.safetensors.gz"
	done
	t1=$(now)
	for s in "$@"; do cat "$zd/m-part-$s.yaml"; done | awk -v a="$t0" -v b="$t1" -v args="$*" '
		$1 == "rows:" { rows += $2 }
		$1 == "labelled:" { n = $2; lab += n }
		$1 == "correct:" { ok += $2 }
		$1 == "loss:" { loss += $2 * n }
		END { printf "perfect\tperfect routing (each slice to its model)\t%.4f\t%.9g\t%.0f\t\t%s\n",
			ok / lab, loss / lab, rows / (b - a), "per part: --zoo Z --model SLICE parts/SLICE" }' \
		>>"$zd/results.tsv"
	rm -f "$zd"/m-part-*.yaml
}

measure() { # ZD HAS_SLICES
	zd=$1
	: >"$zd/results.tsv"
	set -- $(cat "$zd/models.txt")
	if [ "$PROFILE" = 1 ]; then
		for m in "$@"; do
			d=$zd/slices/$m.safetensors.gz
			[ -r "$d" ] || d=$C/train.safetensors.gz
			P zoo-add --zoo "$zd/zoo" --name "$m" --profile "$d"
		done
	fi
	K="--zoo $zd/zoo"
	for m in "$@"; do K="$K --model $m"; done
	RA=
	routing "$zd" $K
	# The speed target compares these two: best of three runs each.
	REPS=3
	pred "$zd" defaults "defaults (no weighting flags)" $K
	routing "$zd" $K --weighting similarity --per row
	pred "$zd" kl-row "similarity per row (kl, T 1)" $K --weighting similarity --per row
	REPS=1
	# The defaults once assign --calibrate has fitted the routing
	# temperature on the slices' rows (in a copy of the zoo).
	if [ -d "$zd/slices" ]; then
		rm -rf "$zd/zoo-cal"
		cp -r "$zd/zoo" "$zd/zoo-cal"
		P assign --zoo "$zd/zoo-cal" --calibrate -o "$zd/calibrated.yaml" \
			$(for m in "$@"; do echo "$zd/slices/$m.safetensors.gz"; done)
		KC="--zoo $zd/zoo-cal"
		for m in "$@"; do KC="$KC --model $m"; done
		routing "$zd" $KC
		pred "$zd" calibrated "defaults after assign --calibrate" $KC
		rm -rf "$zd/zoo-cal" "$zd/calibrated.yaml"
	fi
	routing "$zd" $K $TUNED1
	pred "$zd" tuned-cosine "hand-tuned: $TUNED1" $K $TUNED1
	routing "$zd" $K $TUNED2
	pred "$zd" tuned-mahalanobis "hand-tuned: $TUNED2" $K $TUNED2
	RA=
	# Beside the defaults (issue 23): the output ensemble, every row to
	# its top model, and the models' layers mixed with the same weights.
	pred "$zd" ensemble "output ensemble (--weighting uniform --merge ensemble)" $K \
		--weighting uniform --merge ensemble
	pred "$zd" hard "hard routing (--threshold 0)" $K --threshold 0
	pred "$zd" layers "layer-wise (--merge outputs)" $K --merge outputs
	pred "$zd" soup "soup (merge --method linear)" --model-file "$zd/models/soup.safetensors.gz"
	pred "$zd" ties "TIES (density 0.2)" --model-file "$zd/models/ties.safetensors.gz"
	for m in "$@"; do pred "$zd" "single-$m" "single model $m" --zoo "$zd/zoo" --model "$m"; done
	if [ -r "$zd/models/joint.safetensors.gz" ]; then
		pred "$zd" joint "jointly trained" --model-file "$zd/models/joint.safetensors.gz"
	fi
	if [ -d "$zd/parts" ]; then
		perfect "$zd" "$@"
		RT="--weighting router --router router --assignment $zd/assignment.yaml"
		routing "$zd" $K $RT
		pred "$zd" router "router, defaults" $K $RT
		routing "$zd" $K $RT --per row
		pred "$zd" router-row "router --per row" $K $RT --per row
	fi
}

# ---------------------------------------------------------------------------
# Reporting.
col() { awk -F'\t' -v k="$2" -v f="$3" '$1 == k { print $f; exit }' "$1/results.tsv"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
# target DESC A B CONDITION: PASS or FAIL (informational).
target() {
	if [ -z "$2" ] || [ -z "$3" ]; then return 0; fi
	if awk -v a="$2" -v b="$3" "BEGIN { exit !($4) }"; then r=PASS; else r=FAIL; fi
	echo "bench:   target $1: $r ($2 vs $3)"
}

report() { # NAME ZD KIND(specialists|mixed|hparams)
	zn=$1 zd=$2 kind=$3
	d=$(col "$zd" defaults 3)
	dl=$(col "$zd" defaults 4)
	dr=$(col "$zd" defaults 5)
	soup=$(col "$zd" soup 3)
	best=0 bestn=
	for m in $(cat "$zd/models.txt"); do
		a=$(col "$zd" "single-$m" 3)
		if awk -v a="$a" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$a bestn=$m; fi
	done
	joint=$(col "$zd" joint 3)
	jl=$(col "$zd" joint 4)
	perf=$(col "$zd" perfect 3)
	pl=$(col "$zd" perfect 4)
	rtr=$(col "$zd" router 3)
	echo "bench: adaptive-$zn-defaults-vs-soup: $d accuracy (soup: $soup accuracy, ratio $(ratio "$d" "$soup"))"
	echo "bench: adaptive-$zn-defaults-vs-best-single: $d accuracy (single model $bestn: $best accuracy, ratio $(ratio "$d" "$best"))"
	ca=$(col "$zd" calibrated 3)
	if [ -n "$ca" ]; then
		echo "bench: adaptive-$zn-calibrated: $ca accuracy, log-loss $(col "$zd" calibrated 4), routing $(col "$zd" calibrated 6) (defaults: $d accuracy, log-loss $dl, routing $(col "$zd" defaults 6))"
	fi
	echo "bench: adaptive-$zn-ties: $(col "$zd" ties 3) accuracy (soup: $soup accuracy, ratio $(ratio "$(col "$zd" ties 3)" "$soup"))"
	for t in tuned-cosine tuned-mahalanobis; do
		echo "bench: adaptive-$zn-defaults-vs-$t: $d accuracy ($(col "$zd" $t 2): $(col "$zd" $t 3) accuracy, ratio $(ratio "$d" "$(col "$zd" $t 3)"))"
	done
	if [ -n "$joint" ]; then
		echo "bench: adaptive-$zn-defaults-vs-joint: $d accuracy (jointly trained: $joint accuracy, ratio $(ratio "$d" "$joint"))"
		echo "bench: adaptive-$zn-log-loss: $dl (jointly trained: $jl, ratio $(ratio "$dl" "$jl"))"
	fi
	if [ -n "$perf" ]; then
		echo "bench: adaptive-$zn-defaults-vs-perfect-routing: $d accuracy (perfect routing: $perf accuracy, ratio $(ratio "$d" "$perf"))"
		echo "bench: adaptive-$zn-router-vs-joint: $rtr accuracy (jointly trained: $joint accuracy, ratio $(ratio "$rtr" "$joint"))"
		echo "bench: adaptive-$zn-routing-accuracy: $(col "$zd" defaults 6) (hand-tuned cosine: $(col "$zd" tuned-cosine 6), ratio $(ratio "$(col "$zd" defaults 6)" "$(col "$zd" tuned-cosine 6)"))"
	fi
	echo "bench: adaptive-$zn-throughput: $dr rows/s (similarity per row: $(col "$zd" kl-row 5) rows/s, ratio $(ratio "$dr" "$(col "$zd" kl-row 5)"))"
	# What hard routing aims at: one model's forward pass per row.
	one=$(col "$zd" "single-$bestn" 5)
	echo "bench: adaptive-$zn-throughput-vs-one-model: $dr rows/s (single model $bestn: $one rows/s, ratio $(ratio "$dr" "$one"))"
	case $kind in
	specialists)
		target "$zn: defaults >= soup + 0.10" "$d" "$soup" "a >= b + 0.10"
		target "$zn: defaults > every single model" "$d" "$best" "a > b"
		target "$zn: defaults >= 0.95 x joint" "$d" "$joint" "a >= 0.95 * b"
		target "$zn: router with defaults >= 1.0 x joint" "$rtr" "$joint" "a >= b"
		target "$zn: log-loss of defaults <= 1.5 x joint's" "$dl" "$jl" "a <= 1.5 * b"
		;;
	mixed)
		target "$zn: defaults >= 0.97 x perfect routing" "$d" "$perf" "a >= 0.97 * b"
		target "$zn: defaults >= soup + 0.10" "$d" "$soup" "a >= b + 0.10"
		target "$zn: log-loss of defaults <= 1.5 x joint's" "$dl" "$jl" "a <= 1.5 * b"
		target "$zn: log-loss of defaults <= 1.5 x perfect routing's" "$dl" "$pl" "a <= 1.5 * b"
		;;
	hparams)
		bb=$(awk -v a="$soup" -v b="$best" 'BEGIN { print (a > b ? a : b) }')
		target "$zn: defaults within 0.005 of max(soup, best single)" "$d" "$bb" "a >= b - 0.005"
		;;
	esac
	target "$zn: defaults rows/s >= similarity per row's" "$dr" "$(col "$zd" kl-row 5)" "a >= b"
	awk -F'\t' -v z="$zn" '
		BEGIN { printf "%s:\n  %-62s %8s %8s %9s %7s\n", z, "strategy", "accuracy", "log-loss", "rows/s", "routing" }
		{ printf "  %-62s %8.4f %8.4f %9s %7s\n", $2, $3, $4, $5, ($6 == "" ? "-" : $6) }' "$zd/results.tsv"
}

# summary ZOO...: the results table in markdown, a column per zoo:
# accuracy (log-loss); routing accuracy; rows/s.
summary() {
	zs=
	for zn in "$@"; do [ -s "$OUT/$zn/results.tsv" ] && zs="$zs $zn"; done
	printf '| strategy |'
	for zn in $zs; do printf ' %s |' "$zn"; done
	printf '\n|---|'
	for zn in $zs; do printf -- '---:|'; done
	printf '\n'
	# cell ZN KEY...: accuracy (log-loss) of the first key present.
	cell() {
		_z=$1
		shift
		for _k in "$@"; do
			_v=$(awk -F'\t' -v k="$_k" '$1 == k { printf "%.3f (%.2f)", $3, $4; exit }' "$OUT/$_z/results.tsv")
			[ -n "$_v" ] && { printf '%s' "$_v"; return; }
		done
		printf -- '-'
	}
	row() { # LABEL KIND ARGS
		_l=$1 _kind=$2
		shift 2
		printf '| %s |' "$_l"
		for zn in $zs; do
			case $_kind in
			cell) printf ' %s |' "$(cell "$zn" "$@")" ;;
			best) printf ' %s |' "$(awk -F'\t' '$1 ~ /^single-/ && $3 > b { b = $3; l = $4 } END { printf "%.3f (%.2f)", b, l }' "$OUT/$zn/results.tsv")" ;;
			route) printf ' %s |' "$(for k in defaults tuned-cosine router; do col "$OUT/$zn" $k 6; done |
				awk '{ s = s (NR > 1 ? " / " : "") ($1 == "" ? "-" : sprintf("%.3f", $1)) } END { print (s ~ /[0-9]/ ? s : "-") }')" ;;
			speed) printf ' %s |' "$(col "$OUT/$zn" defaults 5) / $(col "$OUT/$zn" kl-row 5)" ;;
			esac
		done
		printf '\n'
	}
	row "defaults (no weighting flags)" cell defaults
	row "defaults after \`assign --calibrate\`" cell calibrated
	row "similarity per row (\`--per row\`: kl, T 1)" cell kl-row
	row "\`$TUNED1\`" cell tuned-cosine
	row "\`$TUNED2\`" cell tuned-mahalanobis
	row "output ensemble (\`--weighting uniform --merge ensemble\`)" cell ensemble
	row "hard routing (\`--threshold 0\`)" cell hard
	row "layer-wise (\`--merge outputs\`)" cell layers
	row "soup (\`merge --method linear\`)" cell soup
	row "TIES (density 0.2)" cell ties
	row "best single model" best
	row "jointly trained" cell joint
	row "perfect routing" cell perfect
	row "router, defaults" cell router
	row "router, \`--per row\`" cell router-row
	row "routing accuracy: defaults / cosine / router" route
	row "rows/s: defaults / similarity per row" speed
}

readme() {
	{
		echo "Zoos of tests/bench/adaptive.sh (issue 15), made $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "with the programs in $BIN."
		echo "The script is on branch zoos: git show zoos:tests/bench/adaptive.sh >adaptive.sh"
		echo "Build the zoos with your programs: ZM_BIN=\$PWD/build/bin sh adaptive.sh DIR"
		echo "Measure again without rebuilding: ZM_ADAPTIVE_REUSE=1 ZM_BIN=... sh adaptive.sh DIR"
		echo "(ZM_ADAPTIVE_ZOOS='finetuned domains' picks zoos.)  'predict' below is your build/bin/predict."
		echo "A measuring run rewrites results.tsv and this file: measure on a copy (cp -r)."
		echo
		echo "Per zoo DIR: zoo/ (the models and 'router'), test.safetensors.gz (the test"
		echo "stream, mixed), parts/SLICE.safetensors.gz (its rows of each slice),"
		echo "route.safetensors.gz + route-truth.txt (a fifth of the test rows and each row's slice,"
		echo "for routing accuracy with --batch-size 1 --trace), models/{base,joint,soup,ties}"
		echo "(joint: the base trained on all the training rows), assignment.yaml (slice i"
		echo "to model i, for the router), slices/ and membership.safetensors.gz (training)."
		echo "results.tsv: key, name, accuracy, log-loss, rows/s, routing accuracy, flags."
		echo "Routing accuracy: rows whose own slice's model has strictly the largest weight"
		echo "in the trace (at --batch-size 1 per batch and per row are the same, so it"
		echo "measures the metric and the router, not the choice between them)."
		for zn in $ALL_ZOOS; do
			zd=$OUT/$zn
			[ -s "$zd/results.tsv" ] || continue
			K="--zoo $zd/zoo"
			for m in $(cat "$zd/models.txt"); do K="$K --model $m"; done
			echo
			echo "== $zn"
			echo "defaults:        predict $K --metrics m.yaml -o p.csv $zd/test.safetensors.gz"
			echo "hand-tuned:      the same with $TUNED1, or $TUNED2"
			echo "soup, TIES:      predict --model-file $zd/models/soup.safetensors.gz (ties.safetensors.gz) --metrics m.yaml $zd/test.safetensors.gz"
			if [ -r "$zd/models/joint.safetensors.gz" ]; then
				echo "joint:           predict --model-file $zd/models/joint.safetensors.gz --metrics m.yaml $zd/test.safetensors.gz"
			fi
			if [ -d "$zd/parts" ]; then
				echo "perfect routing: for s in $(cat "$zd/models.txt"); do predict --zoo $zd/zoo --model \$s --metrics m-\$s.yaml $zd/parts/\$s.safetensors.gz; done"
				echo "                 (accuracy = sum of correct / sum of labelled)"
				echo "router:          predict $K --weighting router --router router --assignment $zd/assignment.yaml $zd/test.safetensors.gz"
				echo "routing:         predict $K --batch-size 1 --trace t.csv $zd/route.safetensors.gz"
				echo "                 (top model of trace batch i vs line i of $zd/route-truth.txt)"
			fi
			echo "figures (accuracy, log-loss, rows/s, routing accuracy):"
			awk -F'\t' '{ printf "  %-62s %8.4f %8.4f %9s %7s\n", $2, $3, $4, $5, ($6 == "" ? "-" : $6) }' "$zd/results.tsv"
		done
		echo
		summary $ALL_ZOOS
	} >"$OUT/README.txt"
}

# ---------------------------------------------------------------------------
echo "bench: $prog: zoos $ZOOS; 11950 training rows, 10000 test rows, $EPOCHS epochs; work in $OUT"
for zn in $ZOOS; do
	zd=$OUT/$zn
	if [ "$REUSE" != 1 ] || [ ! -s "$zd/models.txt" ]; then
		rm -rf "$zd"
		mkdir -p "$zd"
		case $zn in
		finetuned) build_groups "$zd" 1 ;;
		seeded) build_groups "$zd" 0 ;;
		hparams) build_hparams "$zd" ;;
		domains) build_domains "$zd" ;;
		sources) build_sources "$zd" ;;
		unrelated) build_seeds "$zd" 0 ;;
		oneinit) build_seeds "$zd" 1 ;;
		*) echo "bench: $prog: unknown zoo $zn"; exit 1 ;;
		esac
		echo "bench: $prog: built $zn at $(elapsed) s"
	fi
	measure "$zd"
	case $zn in
	finetuned | seeded | unrelated | oneinit) kind=specialists ;;
	hparams) kind=hparams ;;
	*) kind=mixed ;;
	esac
	report "$zn" "$zd" "$kind"
	readme
done
summary $ZOOS >"$OUT/summary.md"
cat "$OUT/summary.md"
echo "bench: $prog: done in $(elapsed) s"
