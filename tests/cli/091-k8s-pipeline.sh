#!/bin/sh
# The Kubernetes pipeline with the real programs: k8s-jobs' manifests pass
# the suite's manifest check, then every pod of every Job runs at once in
# the background, as after one `kubectl apply` (tests/k8s/run-pods runs the
# ConfigMap's zm-stage with the pods' commands; the markers order them), on
# a small Fashion-MNIST subset.  Every stage completes on a fresh zoo, the
# zoo gets new versions, the predictions cover every input row once, and
# they are those of scripts/run-pipeline on the same data and seed, for the
# defaults, --rules, --granularity-rules, a CNN --arch, --slices 1 and
# --shards 3.  A stage that fails stops the later ones.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

K=$SRC/scripts/k8s-jobs
RP=$SRC/scripts/run-pipeline
V=$SRC/tests/k8s/validate
TK=$SRC/tests/k8s
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
ZM_POLL=0.2
export ZM_POLL

if [ ! -r "$FM/train-images-idx3-ubyte.gz" ]; then
	fail "no Fashion-MNIST in $FM (scripts/install-deps installs dataset-fashion-mnist)"
	finish
	exit 1
fi

# --- the data: 600 training rows, 300 test rows in shards ----------------------
mkdir -p "$T/d"
# subset KIND FIRST COUNT OUT: rows of the train or t10k IDX files as a stream.
subset() {
	"$TK/idx-rows" "$FM/$1-images-idx3-ubyte.gz" "$T/d/i.gz" "$2" "$3" &&
		"$TK/idx-rows" "$FM/$1-labels-idx1-ubyte.gz" "$T/d/l.gz" "$2" "$3" &&
		tensor import --from idx --images "$T/d/i.gz" --labels "$T/d/l.gz" -o "$4" 2>/dev/null
}
check "a 600-row training subset" subset train 0 600 "$T/d/train.safetensors.gz"
# shards N: the 300 test rows in N shards, $T/d/sN/shard-I.safetensors.gz
shards() {
	mkdir -p "$T/d/s$1"
	i=0
	while [ "$i" -lt "$1" ]; do
		subset t10k $((i * 300 / $1)) $(((i + 1) * 300 / $1 - i * 300 / $1)) \
			"$T/d/s$1/shard-$i.safetensors.gz" || return 1
		i=$((i + 1))
	done
}
for n in 1 2 3; do
	check "the 300 test rows in $n shards" shards "$n"
done

# Configurations the tests use.
cat > "$T/d/rules.yaml" <<'EOF'
mode: partition
slices:
  - {name: tops, where: {label: [0, 2, 4, 6]}}
  - {name: shoes, where: {label: [5, 7, 9]}}
  - {name: rest, default: true}
EOF
cat > "$T/d/grules.yaml" <<'EOF'
rules:
  - {when: {metric: latency_ms, op: ">", value: 1000000}, level: layer}
default: full
EOF
cat > "$T/d/cnn.yaml" <<'EOF'
input: [1, 28, 28]
loss: cross-entropy
layers:
  - {name: conv1, type: conv2d, filters: 4, kernel: 3, padding: same, activation: relu}
  - {name: pool1, type: maxpool2d, size: 2}
  - {name: flat, type: flatten}
  - {name: fc1, type: dense, units: 32, activation: relu}
  - {name: out, type: dense, units: 10}
EOF

# accuracy FILES...: correct / labelled over predict's metrics files.
accuracy() {
	cat "$@" | awk '$1 == "labelled:" { l += $2 } $1 == "correct:" { c += $2 }
		END { if (l > 0) printf "%.6f\n", c / l }'
}

# covered DIR SHARDDIR N: every shard's CSV has one line per input row, ids
# 0 ... rows-1 once each.
covered() {
	i=0
	while [ "$i" -lt "$3" ]; do
		rows=$(tensor info "$2/shard-$i.safetensors.gz" | awk '/rows,/ { print $(NF-5) }')
		[ -n "$rows" ] && [ "$rows" -gt 0 ] || return 1
		tail -n +2 "$1/shard-$i.csv" | cut -d, -f1 | sort -n > "$T/ids"
		awk -v n="$rows" 'BEGIN { for (i = 0; i < n; i++) print i }' > "$T/want"
		cmp -s "$T/ids" "$T/want" || { echo "shard $i: ids are not 0..$((rows - 1)) once each"; return 1; }
		i=$((i + 1))
	done
}

# pipeline NAME SHARDS -- K8S-ARGS -- RUN-PIPELINE-ARGS: the Jobs and
# run-pipeline on the same data and seed; leaves $T/NAME/{vol,pods,rp}.
pipeline() {
	nm=$1 ns=$2
	shift 3
	kargs=
	while [ "$1" != -- ]; do kargs="$kargs $1"; shift; done
	shift
	d=$T/$nm
	mkdir -p "$d/vol/data/predict"
	cp "$T/d/train.safetensors.gz" "$d/vol/data/"
	cp "$T/d/s$ns"/* "$d/vol/data/predict/"
	# shellcheck disable=SC2086 # one word per option
	run "$K" --run-id t --deadline 60 --shards "$ns" $kargs
	expect_rc 0 "$nm: k8s-jobs exits 0"
	cp "$T/out" "$d/manifests.yaml"
	check "$nm: the manifests pass validate --lint --werror" "$V" --lint --werror -q "$d/manifests.yaml"
	check "$nm: every Job's pods complete, all started at once" "$TK/run-pods" "$d/manifests.yaml" "$d/vol" "$d/pods"
	for f in "$d"/pods/*.rc; do
		[ "$(cat "$f")" -eq 0 ] || sed "s/^/#   ${f##*/}: /" "${f%.rc}.log" | tail -5
	done
	check "$nm: the ConfigMap carries scripts/zm-stage unchanged" cmp "$d/pods/conf/zm-stage" "$SRC/scripts/zm-stage"
	run_dir=$d/vol/runs/t
	check "$nm: the zoo has new versions of every model" sh -c \
		"zoo-ls --zoo '$d/vol/zoo' | awk 'NR > 1 { n++; if (\$2 < 2) bad = 1; if (\$2 >= 3) merged = 1 }
			END { exit !(n > 0 && !bad && merged) }'"
	check "$nm: the predictions cover every input row once" covered "$run_dir/predictions" "$d/vol/data/predict" "$ns"
	set -- "$@" --work "$d/rp" --data "$T/d/train.safetensors.gz" --jobs 2 --seed 1
	i=0
	while [ "$i" -lt "$ns" ]; do
		set -- "$@" --test "$T/d/s$ns/shard-$i.safetensors.gz"
		i=$((i + 1))
	done
	run "$RP" "$@"
	expect_rc 0 "$nm: run-pipeline completes"
	rp_acc=$(awk '$1 == "accuracy:" { print $2 }' "$T/out")
	acc=$(accuracy "$run_dir"/predictions/shard-*.metrics.yaml)
	echo "# $nm: accuracy $acc (Jobs), $rp_acc (run-pipeline), chance 0.1"
	check "$nm: the Jobs' accuracy equals run-pipeline's" test -n "$acc" -a "$acc" = "$rp_acc"
	same=1
	i=0
	while [ "$i" -lt "$ns" ]; do
		cmp -s "$run_dir/predictions/shard-$i.csv" "$d/rp/predictions/shard-$i.csv" || same=0
		i=$((i + 1))
	done
	check "$nm: the Jobs' predictions are run-pipeline's, byte for byte" test "$same" -eq 1
	check "$nm: predict is far from chance (accuracy >= 0.2, twice chance)" awk -v a="$acc" 'BEGIN { exit !(a >= 0.2) }'
}

# --- the configurations ------------------------------------------------------------
pipeline default 2 -- -- --slices 4
# The three failures of issue 19, each on a fresh zoo with the defaults:
# the slice stage counted centroids.safetensors.gz as a slice, train-step
# found no trained model without a bootstrap, and predict was at chance.
check "default: the slice list holds the 4 slices, not the k-means centroids" sh -c \
	"test \$(wc -l < '$T/default/vol/runs/t/slices.list') -eq 4 && ! grep -q centroids '$T/default/vol/runs/t/slices.list'"
check "default: bootstrap is a Job of its own" grep -q '^  name: zoomerge-bootstrap$' "$T/default/manifests.yaml"
check "default: every train-step index trained a fresh zoo" test "$(cat "$T"/default/pods/train-step-*.rc | tr -d '\n')" = 0000
# The CronJob's pod: the training stages in order, in a run directory of its
# own, on the zoo the pipeline made: every model gets a new version.
zoo-ls --zoo "$T/default/vol/zoo" | awk 'NR > 1 { print $1, $2 + 1 }' > "$T/want-versions"
run env ZM_ROOT="$T/default/vol" ZM_CONF="$T/default/pods/conf" ZM_RUN="$T/default/vol/runs/retrain-1" \
	sh "$T/default/pods/conf/zm-stage" retrain
expect_rc 0 "retrain (the CronJob's command) completes"
check "retrain: a new version of every model" sh -c \
	"zoo-ls --zoo '$T/default/vol/zoo' | awk 'NR > 1 { print \$1, \$2 }' | cmp -s - '$T/want-versions'"

# Under valgrind (make valgrind) the defaults alone: every program runs there.
if [ -z "${ZM_VALGRIND:-}" ]; then
pipeline rules 2 -- --rules "$T/d/rules.yaml" --slices 3 -- --rules "$T/d/rules.yaml"
check "rules: three slices by label" test "$(wc -l < "$T/rules/vol/runs/t/slices.list")" -eq 3

pipeline grules 2 -- --granularity-rules "$T/d/grules.yaml" -- --granularity-rules "$T/d/grules.yaml"
check "granularity-rules: granctl followed them (level full)" grep -q '^level: full' "$T/grules/vol/runs/t/granularity.yaml"

pipeline cnn 2 -- --arch "$T/d/cnn.yaml" -- --arch "$T/d/cnn.yaml"
check "arch: the zoo holds the CNN" sh -c "zoo-ls --zoo '$T/cnn/vol/zoo' | awk 'NR == 2 { exit !(\$4 < 30000) }'"

pipeline one 1 -- --slices 1 -- --slices 1
pipeline three 3 -- --shards 3 --
fi

# --- failures ------------------------------------------------------------------------
# Corrupt training data: slice fails for good, every later stage stops
# with exit 2 and a message, nothing is predicted, the zoo keeps its models.
mkdir -p "$T/bad/vol/data/predict"
head -c 1000 "$T/d/train.safetensors.gz" > "$T/bad/vol/data/train.safetensors.gz"
cp "$T/d/s2"/* "$T/bad/vol/data/predict/"
"$K" --run-id t --deadline 60 > "$T/bad/manifests.yaml" 2>/dev/null
run "$TK/run-pods" "$T/bad/manifests.yaml" "$T/bad/vol" "$T/bad/pods"
check "corrupt data: the run fails" test "$rc" -ne 0
check "corrupt data: zoo-add completes" test "$(cat "$T/bad/pods/zoo-add-0.rc")" -eq 0
check "corrupt data: slice fails" test "$(cat "$T/bad/pods/slice-0.rc")" -ne 0
check "corrupt data: slice names the file" grep -q 'train.safetensors.gz' "$T/bad/pods/slice-0.log"
later=ok
for s in bootstrap assign train-step-0 train-step-3 granctl merge predict-0 predict-1; do
	case $s in *-[0-9]) f=$s ;; *) f=$s-0 ;; esac
	[ "$(cat "$T/bad/pods/$f.rc")" -eq 2 ] || later="$s exited $(cat "$T/bad/pods/$f.rc")"
	grep -q 'not starting: slice.failed.0' "$T/bad/pods/$f.log" || grep -q 'not starting' "$T/bad/pods/$f.log" || later="$s said nothing"
done
check "corrupt data: every later stage stops with exit 2 and a message ($later)" test "$later" = ok
check "corrupt data: nothing predicted" test ! -e "$T/bad/vol/runs/t/predictions"
check "corrupt data: the zoo keeps its untrained models" sh -c \
	"zoo-ls --zoo '$T/bad/vol/zoo' | awk 'NR > 1 && \$2 != 1 { exit 1 }'"

# A missing file: no predict shards on the volume; predict fails with exit 2
# (final) and says what is missing.
rm -rf "$T/default/vol/data/predict" "$T/default/vol/runs/t/markers"/predict.*
run env ZM_ROOT="$T/default/vol" ZM_CONF="$T/default/pods/conf" ZM_INDEX=0 sh "$T/default/pods/conf/zm-stage" run predict
expect_rc 2 "missing predict input: exit 2"
expect_err 'no predict input directory .*/data/predict' "missing predict input: named"
check "missing predict input: the failure is final for the later stages" test -e "$T/default/vol/runs/t/markers/predict.failed.0"

# A failing program with retries left leaves no failure marker; the index's
# last try does.
rm -f "$T/default/vol/runs/t/markers"/*.failed.*
rm -f "$T/default/vol/runs/t/updates/update-1.safetensors.gz"
printf 'corrupt' > "$T/default/vol/runs/t/slices/$(sed -n 2p "$T/default/vol/runs/t/slices.list")"
st() {
	env ZM_ROOT="$T/default/vol" ZM_CONF="$T/default/pods/conf" ZM_INDEX=1 ZM_FAILURES="$1" \
		sh "$T/default/pods/conf/zm-stage" run train-step
}
run st 0
expect_rc 1 "a corrupt slice fails train-step with exit 1 (retried)"
check "a failure with retries left leaves no marker" test ! -e "$T/default/vol/runs/t/markers/train-step.failed.1"
run st 2
check "the last retry's failure leaves a marker" test -e "$T/default/vol/runs/t/markers/train-step.failed.1"
run env ZM_ROOT="$T/default/vol" ZM_CONF="$T/default/pods/conf" ZM_STAGE=granctl sh "$T/default/pods/conf/zm-stage" wait train-step 4 60
expect_rc 2 "a waiting stage stops at the failure marker"
expect_err 'not starting: train-step.failed.1' "and names it"
run env ZM_ROOT="$T/default/vol" ZM_CONF="$T/default/pods/conf" ZM_STAGE=x sh "$T/default/pods/conf/zm-stage" wait nothing 1 0
expect_rc 2 "a wait gives up when its time is spent"

# run-pipeline names the stage that failed and stops there.
run "$RP" --work "$T/rpbad" --data "$T/bad/vol/data/train.safetensors.gz" --test "$T/d/s1/shard-0.safetensors.gz"
check "run-pipeline: corrupt data fails the run" test "$rc" -ne 0
expect_err 'stage slice failed' "run-pipeline names the failing stage"
check "run-pipeline: no stage after it ran" test ! -e "$T/rpbad/assignment.yaml"

if command -v mandoc >/dev/null 2>&1; then
	check "man/zm-stage.1 is mandoc -T lint -W warning clean" mandoc -T lint -W warning "$SRC/man/zm-stage.1"
fi
if command -v shellcheck >/dev/null 2>&1; then
	for f in validate idx-rows jobs-table configmap-files run-pods check-container; do
		check "shellcheck tests/k8s/$f" shellcheck -s sh "$TK/$f"
	done
	check "shellcheck this test" shellcheck -s sh -x -P SCRIPTDIR "$0"
fi

finish
