#!/bin/sh
# scripts/k8s-jobs: the manifests of several configurations pass the offline
# Kubernetes validator with its best-practice lint as errors; hostile values
# are refused with exit 2 and nothing on stdout; the --driver script is valid
# sh; the stage commands shipped in the ConfigMap run in order against stub
# programs and order themselves through their completion markers.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

K=$SRC/scripts/k8s-jobs
V=$SRC/../shared/tools/k8s-validate
have_validator=1
if [ ! -x "$V" ]; then
	have_validator=0
	fail "k8s-validate missing at $V (the shared tools must be checked out next to the repository)"
fi

# valid DESC ARGS...: k8s-jobs ARGS exits 0 and its output passes the validator.
valid() {
	_d=$1; shift
	run "$K" "$@"
	expect_rc 0 "$_d: exit 0"
	cp "$T/out" "$T/last.yaml"
	if [ "$have_validator" -eq 1 ]; then
		check "$_d: k8s-validate --lint --werror" "$V" --lint --werror "$T/last.yaml"
	fi
}

# refused DESC ARGS...: exit 2, a message, nothing on stdout.
refused() {
	_d=$1; shift
	run "$K" "$@"
	expect_rc 2 "refuses $_d"
	check "$_d: nothing on stdout" test ! -s "$T/out"
	check "$_d: a message on stderr" grep -q '^k8s-jobs: ' "$T/err"
}

# The components of the Jobs in the order printed.
jobs_of() {
	awk '/^kind: /{k=$2} k=="Job" && /app.kubernetes.io\/component:/ && !seen[$2]++ {print $2}' "$1" | tr '\n' ' '
}

# value KEY JOB FILE: the first "KEY: value" in the document of Job JOB.
value() {
	awk -v job="$2" -v key="$3" '
		/^---/ {doc = ""}
		/^  name: / {doc = $2}
		doc == job && $1 == key":" {print $2; exit}' "$1"
}

# --- valid configurations --------------------------------------------------
valid "default" 
check "default: every stage is a Job, in pipeline order" \
	test "$(jobs_of "$T/last.yaml")" = "zoo-add slice assign train-step granctl merge predict "
check "default: a PVC and a ConfigMap" grep -q '^kind: PersistentVolumeClaim' "$T/last.yaml"
check "default: no CronJob without --schedule" sh -c "! grep -q '^kind: CronJob' '$T/last.yaml'"
check "default: every object's name has the prefix" \
	sh -c "! grep '^  name: ' '$T/last.yaml' | grep -v '^  name: zoomerge-'"
check "default: train-step has one index per slice" \
	test "$(value "$T/last.yaml" zoomerge-train-step completions)" = 4
check "default: ReadWriteMany volume" grep -q 'accessModes: \["ReadWriteMany"\]' "$T/last.yaml"
check "default: exit status 2 fails a Job at once" grep -q 'values: \[2\]' "$T/last.yaml"
check "default: every Job has backoffLimitPerIndex" \
	test "$(grep -c '^  backoffLimitPerIndex: 2$' "$T/last.yaml")" -eq 7
# Each stage's init container waits for the stage printed before it.
awk '/^kind: /{k=$2} k=="Job" && /^  name: /{j=$2} k=="Job" && /zm_wait /{
	for (i = 1; i <= NF; i++) if ($i == "zm_wait") print j, $(i+1), $(i+2)}' \
	"$T/last.yaml" > "$T/waits"
check "default: each stage waits for the one before it" test "$(cat "$T/waits")" = \
"zoomerge-slice zoo-add 1
zoomerge-assign slice 1
zoomerge-train-step assign 1
zoomerge-granctl train-step 4
zoomerge-merge granctl 1
zoomerge-predict merge 1"
# Every Job's deadline covers the waits before it.
prev=0
ordered=1
for j in zoo-add slice assign train-step granctl merge predict; do
	d=$(value "$T/last.yaml" "zoomerge-$j" activeDeadlineSeconds)
	[ "$d" -gt "$prev" ] || ordered=0
	prev=$d
done
check "default: deadlines grow along the pipeline" test "$ordered" -eq 1
cp "$T/last.yaml" "$T/default.yaml"

valid "one slice" --slices 1 --shards 1
check "one slice: completions 1, parallelism 1" sh -c \
	"grep -A2 '^  completions: 1' '$T/last.yaml' | grep -q '^  parallelism: 1'"
check "one slice: granctl waits for 1 train-step marker" grep -q 'zm_wait train-step 1 ' "$T/last.yaml"

valid "many slices" --slices 500 --parallelism 16 --shards 40 --name big
check "many slices: 500 indexes, 16 at once" \
	test "$(value "$T/last.yaml" big-train-step completions)/$(value "$T/last.yaml" big-train-step parallelism)" = 500/16
check "many slices: predict parallelism is 16 of 40" \
	test "$(value "$T/last.yaml" big-predict parallelism)" = 16
check "many slices: granctl waits for 500 markers" grep -q 'zm_wait train-step 500 ' "$T/last.yaml"

valid "custom resources" --cpu 250m --memory 3Gi --storage 200Gi --storage-class fast-ssd \
	--access-mode ReadWriteMany --namespace ml-team --name exp-7 --image registry.example.com:5000/ml/zoomerge:1.2.3 \
	--retries 4 --deadline 600 --ttl 3600 --uid 4242
check "custom: memory request equals limit" \
	test "$(grep -c 'memory: "3Gi"' "$T/last.yaml")" -eq 14
check "custom: namespace on every object" \
	test "$(grep -c '^  namespace: ml-team$' "$T/last.yaml")" -eq 9
check "custom: storage class" grep -q '^  storageClassName: fast-ssd$' "$T/last.yaml"
check "custom: the image" grep -q 'image: registry.example.com:5000/ml/zoomerge:1.2.3$' "$T/last.yaml"
check "custom: the uid" grep -q 'runAsUser: 4242$' "$T/last.yaml"

valid "cron" --schedule '30 2 * * 1-5' --time-zone Etc/UTC
check "cron: a CronJob named NAME-retrain" sh -c \
	"grep -A1 '^kind: CronJob' '$T/last.yaml' >/dev/null && grep -q '^  name: zoomerge-retrain$' '$T/last.yaml'"
check "cron: Forbid concurrent runs" grep -q '^  concurrencyPolicy: Forbid$' "$T/last.yaml"
check "cron: the schedule, quoted" grep -q '^  schedule: "30 2 \* \* 1-5"$' "$T/last.yaml"
valid "cron macro" --schedule @daily --stages predict --access-mode ReadWriteOncePod --parallelism 1

valid "subset of stages, any order" --stages train-step,slice
check "subset: pipeline order" test "$(jobs_of "$T/last.yaml")" = "slice train-step "
check "subset: train-step waits for slice" grep -q 'zm_wait slice 1 ' "$T/last.yaml"

valid "digest-pinned image" --image "zoomerge@sha256:$(printf '0123456789abcdef%.0s' 1 2 3 4)"

# A config file: comments, quotes, a document marker; relative file
# paths are relative to the config; the command line wins.
mkdir "$T/cfg"
printf '  indented first line\nmode: partition\n\n\n' > "$T/cfg/rules.yaml"
printf 'input: [784]\nlayers: []' > "$T/cfg/arch.yaml"
cat > "$T/cfg/pipeline.yaml" <<'EOF'
---
# a zoomerge pipeline
name: "nightly"          # quoted
slices: 3
shards: 5
image: 'zoomerge:0.1.0'
schedule: "0 4 * * *"
rules: rules.yaml
arch: arch.yaml
memory: 1Gi
driver: false
EOF
valid "--config file" --config "$T/cfg/pipeline.yaml" --shards 2
check "config: name from the file" grep -q '^  name: nightly-train-step$' "$T/last.yaml"
check "config: slices from the file" test "$(value "$T/last.yaml" nightly-train-step completions)" = 3
check "config: the command line wins" test "$(value "$T/last.yaml" nightly-predict completions)" = 2
check "config: the CronJob" grep -q '^  name: nightly-retrain$' "$T/last.yaml"
valid "config as the operand (DESIGN.md section 7)" "$T/cfg/pipeline.yaml"

# The files reach the ConfigMap unchanged (leading spaces, trailing blank
# lines, no final newline), read back by an independent YAML parser.
if python3 -c 'import yaml' 2>/dev/null; then
	check "config: rules and arch round-trip through the ConfigMap" python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
data = docs[0]["data"]
assert data["slice-rules.yaml"] == open(sys.argv[2]).read(), repr(data["slice-rules.yaml"])
assert data["arch.yaml"] == open(sys.argv[3]).read(), repr(data["arch.yaml"])
' "$T/last.yaml" "$T/cfg/rules.yaml" "$T/cfg/arch.yaml"
else
	echo "ok - 090-k8s: # SKIP round trip (no python3 yaml)"
fi

# --driver: a shell script whose here-documents are valid manifests.
run "$K" --driver --schedule @weekly --namespace ml
expect_rc 0 "driver: exit 0"
cp "$T/out" "$T/driver.sh"
check "driver: sh -n" sh -n "$T/driver.sh"
check "driver: waits for each Job" \
	test "$(grep -c 'wait_job zoomerge-' "$T/driver.sh")" -eq 7
awk '/^ZM_MANIFEST_EOF$/ {p = 0} p {print} /<<.ZM_MANIFEST_EOF.$/ {p = 1}' "$T/driver.sh" > "$T/driver.yaml"
if [ "$have_validator" -eq 1 ]; then
	check "driver: its manifests pass k8s-validate" "$V" --lint --werror "$T/driver.yaml"
fi
check "driver: no init containers" sh -c "! grep -q 'initContainers' '$T/driver.yaml'"

# --- hostile values ------------------------------------------------------------
refused "an upper-case name" --name Zoo
refused "a name with a dot" --name zoo.merge
refused "a name too long for the pod host names" --name "$(printf 'abcdefghij%.0s' 1 2 3 4 5)-x"
refused "a name too long for the CronJob" --name "$(printf 'abcdefghij%.0s' 1 2 3 4)-abcd" --schedule @daily
# 49 characters: NAME-train-step-99 has 63, NAME-train-step-100 has 64.
long=$(printf 'abcdefghij%.0s' 1 2 3 4)-abcdefgh
valid "the longest name that fits" --name "$long" --slices 100 --shards 100
refused "a name whose last train-step host is too long" --name "$long" --slices 101
long=$(printf 'abcdefghij%.0s' 1 2 3 4)-abcdefghijk
valid "a 52-character name for predict alone" --name "$long" --stages predict --shards 100
refused "a name whose last predict host is too long" --name "$long" --stages predict --shards 101
refused "zero slices" --slices 0
refused "non-numeric slices" --slices four
refused "negative slices" --slices -3
refused "slices with a leading zero" --slices 08
refused "too many slices" --slices 99999
refused "zero shards" --shards 0
refused "zero parallelism" --parallelism 0
refused "a six-field schedule" --schedule '0 0 3 * * *'
refused "a four-field schedule" --schedule '0 3 * *'
refused "a minute out of range" --schedule '60 3 * * *'
refused "TZ= in the schedule" --schedule 'TZ=UTC 0 3 * * *'
refused "an unknown macro" --schedule '@sometimes'
refused "an unknown option" --frobnicate
refused "an unknown option with =" --frobnicate=1
refused "an option without its value" --slices
refused "an image without a tag" --image zoomerge
refused "an image with a registry port but no tag" --image registry:5000/zoomerge
refused "an image tagged latest" --image zoomerge:latest
refused "an image with a short digest" --image zoomerge@sha256:abc
refused "an upper-case repository" --image Zoomerge:1
refused "a zero memory" --memory 0Gi
refused "a memory that is no quantity" --memory lots
refused "a cpu that is no quantity" --cpu 1.5.2
refused "an unknown access mode" --access-mode ReadWriteSometimes
refused "ReadWriteOncePod with parallel pods" --access-mode ReadWriteOncePod --stages train-step
refused "an unknown stage" --stages slice,bake
refused "a stage twice" --stages slice,slice
refused "a data path leaving the volume" --data ../../etc/passwd
refused "an absolute data path" --data /etc/passwd
refused "a namespace with capitals" --namespace Prod
refused "a storage class with a space" --storage-class 'fast ssd'
refused "a newline in a name" --name "$(printf 'a\nb')"
refused "two config files" --config "$T/cfg/pipeline.yaml" "$T/cfg/pipeline.yaml"
refused "a missing rules file" --rules "$T/nope.yaml"
printf 'a: 1\r\n' > "$T/crlf.yaml"
refused "a rules file with CR" --rules "$T/crlf.yaml"
printf 'a\000b\n' > "$T/nul.yaml"
refused "a rules file with NUL" --rules "$T/nul.yaml"
printf '\377\376\n' > "$T/latin.yaml"
refused "a rules file that is not UTF-8" --rules "$T/latin.yaml"

printf 'name: x\nslices: 2\nbogus: 1\n' > "$T/c1.yaml"
refused "an unknown config key" --config "$T/c1.yaml"
expect_err "c1.yaml:3: unknown key 'bogus'" "unknown key named with its line"
printf 'slices: 2\n  shards: 3\n' > "$T/c2.yaml"
refused "a nested config value" --config "$T/c2.yaml"
expect_err 'c2.yaml:2:' "nested value named with its line"
printf 'slices: 2\nslices: 3\n' > "$T/c3.yaml"
refused "a duplicate config key" --config "$T/c3.yaml"
printf 'slices: 0\n' > "$T/c4.yaml"
refused "a bad value in the config" --config "$T/c4.yaml"
expect_err 'c4.yaml:1: slices' "bad value named with its line"
printf 'slices 2\n' > "$T/c5.yaml"
refused "a config line without a colon" --config "$T/c5.yaml"
printf 'slices: [2]\n' > "$T/c6.yaml"
refused "a flow value in the config" --config "$T/c6.yaml"
refused "a missing config" --config "$T/none.yaml"

run "$K" --help
expect_rc 0 "--help exits 0"
check "--help prints the synopsis" grep -q -- '--schedule CRON' "$T/out"
run "$K" --version
expect_rc 0 "--version exits 0"
check "--version names the version" grep -Eq '^k8s-jobs .*[0-9]+\.[0-9]+\.[0-9]+$' "$T/out"

# --- the stage programs --------------------------------------------------------
# Every program a stage runs is one the Makefile builds (cmd/NAME.c) or one
# DESIGN.md's synopses define.
awk '/^  pipeline.sh: /{p=1; next} p && /^  [a-z]/{p=0} p && /^[^ ]/{p=0} p{sub(/^    /, ""); print}' \
	"$T/default.yaml" > "$T/pipeline.sh"
known=" "
for c in "$SRC"/cmd/*.c; do
	[ -e "$c" ] && known="$known$(basename "$c" .c) "
done
if [ -f "$SRC/../shared/DESIGN.md" ]; then
	known="$known$(sed -n '/^### Synopses/,/^`$/p' "$SRC/../shared/DESIGN.md" |
		awk '/^[a-z]/ {print $1}' | sort -u | tr '\n' ' ')"
fi
progs=$(grep -Eo '^[[:space:]]+[a-z][a-z-]* --(zoo|rules) ' "$T/pipeline.sh" | awk '{print $1}' | sort -u)
check "the stages run seven programs" test "$(printf '%s\n' "$progs" | wc -l)" -eq 7
for p in $progs; do
	check "stage program '$p' is built or documented" sh -c "case '$known' in *' $p '*) ;; *) exit 1 ;; esac"
done

# --- the stage commands against stub programs ----------------------------------
mkdir -p "$T/stub" "$T/vol/data/predict" "$T/conf"
: > "$T/vol/data/train.safetensors.gz"
: > "$T/vol/data/predict/a.safetensors.gz"
: > "$T/vol/data/predict/b.safetensors.gz"
cat > "$T/stub/stub" <<'EOF'
#!/bin/sh
# A stand-in for every stage program: logs its command line, writes the
# files it is asked for, fails when STUB_FAIL names it.
p=$(basename "$0")
echo "$p $*" >> "$STUB_LOG"
case ${STUB_FAIL:-} in "$p:"*) exit "${STUB_FAIL#*:}" ;; esac
while [ $# -gt 0 ]; do
	case $1 in
	-o) echo update > "$2"; shift ;;
	--out-dir) i=0; while [ "$i" -lt "${STUB_SLICES:-4}" ]; do : > "$2/cluster-$i.safetensors.gz"; i=$((i + 1)); done; shift ;;
	--name) mkdir -p "$ZM_ROOT/zoo/models/$2"; echo "models: []" > "$ZM_ROOT/zoo/zoo.yaml"; shift ;;
	--metrics) echo "rows: 1" > "$2"; shift ;;
	esac
	shift
done
echo "$p output"
EOF
chmod +x "$T/stub/stub"
for p in zoo-add slice assign train-step granctl merge predict; do
	ln -s stub "$T/stub/$p"
done
STUB_LOG=$T/calls
ZM_ROOT=$T/vol
ZM_CONF=$T/conf
ZM_RUN=$T/vol/runs/test
export STUB_LOG ZM_ROOT ZM_CONF ZM_RUN
M=$ZM_RUN/markers
stage() {
	PATH="$T/stub:$PATH" JOB_COMPLETION_INDEX=$2 ZM_STAGE=$1 sh -c '. "$1"; zm_main "$2"' sh "$T/pipeline.sh" "$1"
}
waits() {
	ZM_STAGE=$1 JOB_COMPLETION_INDEX=$2 sh -c '. "$1"; zm_wait "$2" "$3" "$4"' sh "$T/pipeline.sh" "$3" "$4" "$5"
}

run waits slice 0 zoo-add 1 0
expect_rc 2 "an init container gives up when its wait time is spent"
check "giving up leaves a failure marker" test -f "$M/slice.failed.0"
rm -f "$M"/*

ok=1
for s in zoo-add slice assign; do
	run stage "$s" 0
	[ "$rc" -eq 0 ] || ok=0
done
check "zoo-add, slice and assign run" test "$ok" -eq 1
check "zoo-add made 3 models" test "$(grep -c '^zoo-add ' "$T/calls")" -eq 3
check "slice wrote the list of its 4 slices" test "$(wc -l < "$ZM_RUN/slices.list")" -eq 4
check "assign got the 4 slices" grep -q "^assign --zoo $T/vol/zoo .*cluster-0.* .*cluster-3" "$T/calls"
run waits train-step 2 assign 1 0
expect_rc 0 "train-step's wait ends at assign's marker"
run waits granctl 0 train-step 4 0
expect_rc 2 "granctl does not start before every train-step index is done"
rm -f "$M/granctl.failed.0"
for i in 3 1 0 2; do
	run stage train-step "$i"
done
check "train-step index 2 trained on slice 2" grep -q "^train-step .*update-2.safetensors.gz $ZM_RUN/slices/cluster-2" "$T/calls"
n=0
for f in "$M"/train-step.done.*; do
	[ -e "$f" ] && n=$((n + 1))
done
check "each index left its marker" test "$n" -eq 4
run waits granctl 0 train-step 4 0
expect_rc 0 "granctl starts once all 4 train-step indexes are done"
for s in granctl merge; do
	run stage "$s" 0
done
check "granctl read every update and log" test "$(grep '^granctl ' "$T/calls" | grep -o -- '--updates' | wc -l)" -eq 4
check "merge applied the 4 updates" grep -q "^merge --zoo .*--granularity-from $ZM_RUN/granularity.yaml .*update-3" "$T/calls"
run stage predict 1
expect_rc 0 "predict shard 1 runs"
check "predict shard 1 read the second input" grep -q "^predict .*predict/b.safetensors.gz" "$T/calls"
check "predict wrote its csv" test -s "$ZM_RUN/predictions/shard-1.csv"

# Failures: exit status 2 is final; another status is final on the last retry.
STUB_FAIL=train-step:1 ZM_FAILURES=0 run stage train-step 1
expect_rc 1 "a failing program's status comes through"
check "a failure with retries left leaves no marker" test ! -e "$M/train-step.failed.1"
STUB_FAIL=train-step:1 ZM_FAILURES=2 run stage train-step 1
check "the last retry's failure leaves a marker" test -e "$M/train-step.failed.1"
run waits granctl 0 train-step 4 0
expect_rc 2 "a later stage stops at a failure marker"
check "and passes the failure on" test -e "$M/granctl.failed.0"
rm -f "$M"/*.failed.*
STUB_FAIL=merge:2 run stage merge 0
expect_rc 2 "a usage error exits 2"
check "a usage error is final at once" test -e "$M/merge.failed.0"
rm -f "$M"/*.failed.*
STUB_SLICES=3 run stage slice 0
expect_rc 2 "slice rules that make another number of slices are a configuration error"
expect_err 'made 3 slices' "the message says how many"

# --- scripts/run-pipeline: the same stages on one machine, against the stubs --
ln -s stub "$T/stub/tensor"
RP=$SRC/scripts/run-pipeline
: > "$T/calls"
run "$RP" --bin "$T/stub" --work "$T/rp" --jobs 3 --slices 5 --epochs 2
expect_rc 0 "run-pipeline runs every stage"
check "run-pipeline: the stages in order" test "$(awk '{print $1}' "$T/calls" | uniq | tr '\n' ' ')" = \
	"tensor slice zoo-add train-step assign train-step granctl merge predict "
check "run-pipeline: one train-step per slice" test "$(grep -c '^train-step .*--epochs 2 ' "$T/calls")" -eq 4
check "run-pipeline: default rules ask for 5 clusters" grep -q 'k: 5' "$T/rp/conf/slice-rules.yaml"
check "run-pipeline: merge gets every update" \
	test "$(grep '^merge ' "$T/calls" | grep -o 'updates/cluster-[0-9]*' | wc -l)" -eq 4
: > "$T/calls"
STUB_FAIL=train-step:1 run "$RP" --bin "$T/stub" --work "$T/rp2" --jobs 2
check "run-pipeline: a failing stage fails the run" test "$rc" -ne 0
expect_err 'stage (bootstrap|train-step) failed' "run-pipeline names the failing stage"
check "run-pipeline: nothing after the failing stage" sh -c "! grep -q '^granctl' '$T/calls'"
run "$RP" --slices 0
expect_rc 2 "run-pipeline refuses zero slices"
run "$RP" --bogus 1
expect_rc 2 "run-pipeline refuses an unknown option"

# --- reproducible output and the man page -------------------------------------
"$K" --run-id r1 --schedule @daily > "$T/r1a.yaml" 2>/dev/null
"$K" --run-id r1 --schedule @daily > "$T/r1b.yaml" 2>/dev/null
check "the same --run-id gives the same manifests" cmp -s "$T/r1a.yaml" "$T/r1b.yaml"
check "--run-id names the run directory" grep -Fq 'ZM_ROOT/runs/r1}' "$T/r1a.yaml"
if command -v mandoc >/dev/null 2>&1; then
	check "man/k8s-jobs.1 is mandoc -T lint -W warning clean" mandoc -T lint -W warning "$SRC/man/k8s-jobs.1"
	check "man/k8s-jobs.1 has EXAMPLES" grep -q '^\.Sh EXAMPLES' "$SRC/man/k8s-jobs.1"
fi

# --- shell style -----------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
	check "shellcheck scripts/k8s-jobs" shellcheck -s sh "$K"
	check "shellcheck the ConfigMap's pipeline.sh" shellcheck -s sh "$T/pipeline.sh"
	check "shellcheck the driver script" shellcheck -s sh "$T/driver.sh"
	if [ -f "$SRC/scripts/run-pipeline" ]; then
		check "shellcheck scripts/run-pipeline" shellcheck -s sh "$SRC/scripts/run-pipeline"
	fi
	check "shellcheck this test" shellcheck -s sh -x -P SCRIPTDIR "$0"
else
	echo "ok - 090-k8s: # SKIP shellcheck not installed"
fi

finish
