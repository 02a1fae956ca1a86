#!/bin/sh
# scripts/k8s-jobs: the manifests of several configurations pass the suite's
# offline Kubernetes check (tests/k8s/validate: the Kubernetes schema of the
# pinned npm package kubernetes-models, and the Job rules) with its
# best-practice lint as errors; the check itself rejects broken manifests;
# hostile values are refused with exit 2 and nothing on stdout; the
# --driver script is valid sh.  091-k8s-pipeline runs the stages.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

K=$SRC/scripts/k8s-jobs
V=$SRC/tests/k8s/validate
have_validator=1
if ! "$V" --help >/dev/null 2>"$T/err"; then
	have_validator=0
	fail "the manifest check cannot run: $(cat "$T/err")"
fi

# valid DESC ARGS...: k8s-jobs ARGS exits 0 and its output passes the validator.
valid() {
	_d=$1; shift
	run "$K" "$@"
	expect_rc 0 "$_d: exit 0"
	cp "$T/out" "$T/last.yaml"
	if [ "$have_validator" -eq 1 ]; then
		check "$_d: validate --lint --werror" "$V" --lint --werror -q "$T/last.yaml"
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
	test "$(jobs_of "$T/last.yaml")" = "zoo-add slice bootstrap assign train-step granctl merge predict "
check "default: a PVC and a ConfigMap" grep -q '^kind: PersistentVolumeClaim' "$T/last.yaml"
check "default: no CronJob without --schedule" sh -c "! grep -q '^kind: CronJob' '$T/last.yaml'"
check "default: every object's name has the prefix" \
	sh -c "! grep '^  name: ' '$T/last.yaml' | grep -v '^  name: zoomerge-'"
check "default: train-step has one index per slice" \
	test "$(value "$T/last.yaml" zoomerge-train-step completions)" = 4
check "default: ReadWriteMany volume" grep -q 'accessModes: \["ReadWriteMany"\]' "$T/last.yaml"
check "default: exit status 2 fails a Job at once" grep -q 'values: \[2\]' "$T/last.yaml"
check "default: every Job has backoffLimitPerIndex" \
	test "$(grep -c '^  backoffLimitPerIndex: 2$' "$T/last.yaml")" -eq 8
# Each stage's init container waits for the stage printed before it.
awk '/^kind: /{k=$2} k=="Job" && /^  name: /{j=$2} k=="Job" && /zm-stage wait /{
	for (i = 1; i <= NF; i++) if ($i == "wait") print j, $(i+1), $(i+2)}' \
	"$T/last.yaml" > "$T/waits"
check "default: each stage waits for the one before it" test "$(cat "$T/waits")" = \
"zoomerge-slice zoo-add 1
zoomerge-bootstrap slice 1
zoomerge-assign bootstrap 1
zoomerge-train-step assign 1
zoomerge-granctl train-step 4
zoomerge-merge granctl 1
zoomerge-predict merge 1"
# Every Job's deadline covers the waits before it.
prev=0
ordered=1
for j in zoo-add slice bootstrap assign train-step granctl merge predict; do
	d=$(value "$T/last.yaml" "zoomerge-$j" activeDeadlineSeconds)
	[ "$d" -gt "$prev" ] || ordered=0
	prev=$d
done
check "default: deadlines grow along the pipeline" test "$ordered" -eq 1
cp "$T/last.yaml" "$T/default.yaml"

valid "one slice" --slices 1 --shards 1
check "one slice: completions 1, parallelism 1" sh -c \
	"grep -A2 '^  completions: 1' '$T/last.yaml' | grep -q '^  parallelism: 1'"
check "one slice: granctl waits for 1 train-step marker" grep -q 'zm-stage wait train-step 1 ' "$T/last.yaml"

valid "many slices" --slices 500 --parallelism 16 --shards 40 --name big
check "many slices: 500 indexes, 16 at once" \
	test "$(value "$T/last.yaml" big-train-step completions)/$(value "$T/last.yaml" big-train-step parallelism)" = 500/16
check "many slices: predict parallelism is 16 of 40" \
	test "$(value "$T/last.yaml" big-predict parallelism)" = 16
check "many slices: granctl waits for 500 markers" grep -q 'zm-stage wait train-step 500 ' "$T/last.yaml"

valid "custom resources" --cpu 250m --memory 3Gi --storage 200Gi --storage-class fast-ssd \
	--access-mode ReadWriteMany --namespace ml-team --name exp-7 --image registry.example.com:5000/ml/zoomerge:1.2.3 \
	--retries 4 --deadline 600 --ttl 3600 --uid 4242
check "custom: memory request equals limit" \
	test "$(grep -c 'memory: "3Gi"' "$T/last.yaml")" -eq 16
check "custom: namespace on every object" \
	test "$(grep -c '^  namespace: ml-team$' "$T/last.yaml")" -eq 10
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
check "subset: train-step waits for slice" grep -q 'zm-stage wait slice 1 ' "$T/last.yaml"

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
valid "config as the operand" "$T/cfg/pipeline.yaml"

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
	test "$(grep -c 'wait_job zoomerge-' "$T/driver.sh")" -eq 8
awk '/^ZM_MANIFEST_EOF$/ {p = 0} p {print} /<<.ZM_MANIFEST_EOF.$/ {p = 1}' "$T/driver.sh" > "$T/driver.yaml"
if [ "$have_validator" -eq 1 ]; then
	check "driver: its manifests pass validate" "$V" --lint --werror -q "$T/driver.yaml"
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

# --- the check rejects what it must ---------------------------------------------
# Each of these edits of the default manifests is an error the API server
# (or --lint) reports; the suite's check must report it too.
if [ "$have_validator" -eq 1 ]; then
	# broken DESC SED-EXPRESSION PATTERN: the edited manifests fail, naming PATTERN.
	broken() {
		sed "$2" "$T/default.yaml" > "$T/broken.yaml"
		run "$V" --lint --werror "$T/broken.yaml"
		expect_rc 1 "validate rejects $1"
		check "validate names $1" grep -q -- "$3" "$T/out"
	}
	broken "an unknown field" 's/^  completions: 4$/  completionz: 4/' 'unknown field "completionz"'
	broken "a wrong type" 's/^  parallelism: 4$/  parallelism: four/' 'parallelism'
	broken "a bad quantity" 's/cpu: "1"/cpu: "lots"/' 'cpu'
	broken "restartPolicy Always in a Job" 's/restartPolicy: Never/restartPolicy: Always/' 'restartPolicy Never or OnFailure'
	broken "backoffLimitPerIndex without Indexed" 's/completionMode: Indexed/completionMode: NonIndexed/' 'requires completionMode Indexed'
	broken "an unpinned image" 's/image: zoomerge:0.1.0/image: zoomerge:latest/' 'no pinned tag'
	broken "a writable root file system" 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' 'readOnlyRootFilesystem'
	broken "a mount path used twice" 's|mountPath: /etc/zoomerge|mountPath: /zm|' 'used twice'
	broken "an Indexed Job without retries per index" '/backoffLimitPerIndex/d; /maxFailedIndexes/d' 'without backoffLimitPerIndex'
	broken "a YAML error" 's/^kind: Job$/kind: Job: x/' 'YAML'
	run "$V" --frobnicate "$T/default.yaml"
	expect_rc 2 "validate refuses an unknown option"
fi

# --- the stage programs --------------------------------------------------------
# Every program the stage script runs is one the Makefile builds
# (cmd/NAME.c) and documents (man/NAME.1).
progs=$(grep -Eo 'zm_prog [a-z][a-z-]*' "$SRC/scripts/zm-stage" | awk '{print $2}' | sort -u)
check "the stages run eight programs" test "$(printf '%s\n' "$progs" | wc -l)" -eq 8
for p in $progs; do
	check "stage program '$p' is built and has a man page" test -f "$SRC/cmd/$p.c" -a -f "$SRC/man/$p.1"
done

# --- scripts/run-pipeline refuses bad options ---------------------------------
RP=$SRC/scripts/run-pipeline
run "$RP" --slices 0
expect_rc 2 "run-pipeline refuses zero slices"
run "$RP" --bogus 1
expect_rc 2 "run-pipeline refuses an unknown option"
run "$RP" --test "$T/none.safetensors.gz"
expect_rc 2 "run-pipeline refuses a missing test file"

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
	check "shellcheck scripts/zm-stage" shellcheck -s sh "$SRC/scripts/zm-stage"
	check "shellcheck the driver script" shellcheck -s sh "$T/driver.sh"
	if [ -f "$SRC/scripts/run-pipeline" ]; then
		check "shellcheck scripts/run-pipeline" shellcheck -s sh "$SRC/scripts/run-pipeline"
	fi
	check "shellcheck this test" shellcheck -s sh -x -P SCRIPTDIR "$0"
else
	echo "ok - 090-k8s: # SKIP shellcheck not installed"
fi

finish
