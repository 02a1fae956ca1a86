#!/bin/sh
# merge: applying train-step updates (shared and independent units, a
# granctl-style decision file, stale bases, --rebase, injected faults that
# must leave every model at its old version) and static merges (every
# method, registrable by zoo-add, mismatched architectures, bad configs).
. "$(dirname "$0")/lib.sh"

# The parameters of a model file: the first 76 x 4 bytes of the data
# section of its first document (after u64 N and the header), where the
# 4-8-4 arch below keeps its weights and biases.
params_of() {
	_n=$(zcat "$1" | head -c 8 | od -An -tu8 | tr -d ' ')
	zcat "$1" | tail -c +$((9 + _n)) | head -c 304
}
same_params() {
	params_of "$1" >"$T/d1"; params_of "$2" >"$T/d2"
	test "$(wc -c <"$T/d1")" -eq 304 && cmp -s "$T/d1" "$T/d2"
}

separable_csv "$T/data.csv" 400 11
tensor import --from csv --label label -o "$T/data.st.gz" "$T/data.csv"
cat >"$T/rules.yaml" <<'YAML'
mode: partition
slices:
  - {name: lo, where: {label: [0, 1]}}
  - {name: hi, default: true}
YAML
slice --rules "$T/rules.yaml" --out-dir "$T/slices" "$T/data.st.gz" >/dev/null
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh, group: features}
  - {name: out, units: 4, group: head}
YAML
Z=$T/zoo
for m in a b c; do zoo-add --zoo "$Z" --name $m --arch "$T/arch.yaml" --seed 3 2>/dev/null; done
train() { # MODEL SLICE SEED OUT
	train-step --zoo "$Z" --model "$1" --epochs 3 --lr 0.1 --seed "$3" \
		-o "$4" "$T/slices/$2.safetensors.gz" 2>/dev/null
}
train a lo 1 "$T/ua.gz"; train b lo 2 "$T/ub.gz"; train c hi 3 "$T/uc.gz"
cp -R "$Z" "$T/zoo0"

run merge --help
expect_rc 0 "--help"
run merge --zoo "$Z"
expect_rc 2 "no updates is a usage error"
run merge --zoo "$Z" --granularity wide "$T/ua.gz"
expect_rc 2 "bad --granularity"
run merge --zoo "$Z" --granularity-from x.yaml --share all "$T/ua.gz"
expect_rc 2 "--granularity-from with --share"

# Everything shared: a and b (slice lo) get the same average delta.
run merge --zoo "$Z" --granularity full --share all "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
expect_rc 0 "apply with everything shared"
check "three models moved to v2" test "$(grep -c 'a: v1 -> v2\|b: v1 -> v2\|c: v1 -> v2' "$T/out")" -eq 3
check "a and b have identical parameters" \
	same_params "$Z/models/a/v2.safetensors.gz" "$Z/models/b/v2.safetensors.gz"
check "c kept its own delta" sh -c "! cmp -s '$Z/models/a/v2.safetensors.gz' '$Z/models/c/v2.safetensors.gz'"
check "the index lists the new metrics" grep -q 'samples:' "$Z/zoo.yaml"
run tensor info "$Z/models/a/v2.safetensors.gz"
check "the new version names its parent" grep -q 'zm.parent = 1' "$T/out"

# The same updates again are stale; --rebase applies them.
run merge --zoo "$Z" "$T/ua.gz"
expect_rc 1 "a stale base is refused"
expect_err "based on v1 but the zoo holds v2" "naming both versions"
check "nothing moved" sh -c "! test -e '$Z/models/a/v3.safetensors.gz'"
run merge --zoo "$Z" --rebase "$T/ua.gz"
expect_rc 0 "--rebase applies it"
check "a is at v3" grep -q 'file: models/a/v3' "$Z/zoo.yaml"

# Nothing shared: a and b differ.
rm -rf "$Z"; cp -R "$T/zoo0" "$Z"
run merge --zoo "$Z" --granularity group --share none "$T/ua.gz" "$T/ub.gz"
expect_rc 0 "apply with nothing shared"
params_of "$Z/models/a/v2.safetensors.gz" >"$T/pa"
params_of "$Z/models/b/v2.safetensors.gz" >"$T/pb"
check "a and b keep their own deltas" sh -c "test -s '$T/pa' && ! cmp -s '$T/pa' '$T/pb'"

# A decision file sharing one layer.
rm -rf "$Z"; cp -R "$T/zoo0" "$Z"
cat >"$T/g.yaml" <<'YAML'
level: layer
units:
  - {unit: hidden, shared: false, agreement: 0.1, reason: "conflict"}
  - {unit: out, shared: true, agreement: 0.95, reason: "agree"}
reason: "by layer"
YAML
run merge --zoo "$Z" --granularity-from "$T/g.yaml" "$T/ua.gz" "$T/ub.gz"
expect_rc 0 "apply under a decision file"
params_of "$Z/models/a/v2.safetensors.gz" >"$T/pa"
params_of "$Z/models/b/v2.safetensors.gz" >"$T/pb"
check "layer out (bytes 161-304) is shared" sh -c "tail -c 144 '$T/pa' >'$T/oa'; tail -c 144 '$T/pb' >'$T/ob'; cmp -s '$T/oa' '$T/ob'"
check "layer hidden (bytes 1-160) is not" sh -c "head -c 160 '$T/pa' >'$T/ha'; head -c 160 '$T/pb' >'$T/hb'; ! cmp -s '$T/ha' '$T/hb'"
cat >"$T/bad.yaml" <<'YAML'
level: layer
units:
  - {unit: hidden, shared: true}
  - {unit: fc9, shared: true}
YAML
rm -rf "$Z"; cp -R "$T/zoo0" "$Z"
run merge --zoo "$Z" --granularity-from "$T/bad.yaml" "$T/ua.gz" "$T/ub.gz"
expect_rc 2 "a decision naming an unknown unit"
expect_err "bad.yaml:4:5: unknown layer unit 'fc9'" "with its line and column"
printf 'level: layer\nunits:\n  - {unit: out, shared: perhaps}\n' >"$T/bad2.yaml"
run merge --zoo "$Z" --granularity-from "$T/bad2.yaml" "$T/ua.gz"
expect_rc 2 "a decision with a bad boolean"
expect_err "bad2.yaml:3:" "with its line"

# Faults in the middle of applying leave every model at v1.
for f in rename:1 rename:2 rename:3 write:2 fsync:1 open:3; do
	rm -rf "$Z"; cp -R "$T/zoo0" "$Z"
	run env ZM_FAULT=$f merge --zoo "$Z" "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
	check "ZM_FAULT=$f fails" test "$rc" -ne 0
	check "ZM_FAULT=$f leaves the index at v1" sh -c "! grep -q 'version: 2' '$Z/zoo.yaml'"
done
chmod a-w "$Z" "$Z/models" 2>/dev/null
if ! touch "$Z/probe" 2>/dev/null; then
	run merge --zoo "$Z" "$T/ua.gz"
	check "an unwritable zoo fails" test "$rc" -ne 0
	check "and stays at v1" sh -c "! grep -q 'version: 2' '$Z/zoo.yaml'"
fi
chmod u+w "$Z" "$Z/models"
rm -f "$Z/probe"
run merge --zoo "$Z" "$T/data.st.gz"
expect_rc 1 "a data stream is no update"
expect_err "expected update" "saying so"

# Static merges.
Z=$T/zoo1; cp -R "$T/zoo0" "$Z"
merge --quiet --zoo "$Z" "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
for m in linear ties dare task-arithmetic; do
	run merge --method $m --zoo "$Z" --base a --seed 1 -o "$T/$m.gz" a b c
	expect_rc 0 "static $m merge"
done
run merge --method slerp --zoo "$Z" -o "$T/slerp.gz" a c
expect_rc 0 "static slerp merge"
run merge --method slerp --zoo "$Z" -o "$T/slerp.gz" a b c
expect_rc 2 "slerp takes two models"
run zoo-add --zoo "$Z" --name merged "$T/ties.gz"
expect_rc 0 "zoo-add registers a merged model"
run tensor info "$T/linear.gz"
check "the merged model carries a profile" grep -q 'profile.input.mean' "$T/out"
check "and says how it was merged" grep -q '"merge":"linear"' "$T/out"
run merge --method linear --zoo "$Z" -o "$T/same.gz" a a
check "a linear merge of a model with itself is the model" \
	same_params "$T/same.gz" "$Z/models/a/v2.safetensors.gz"
run merge --method ties --zoo "$Z" -o "$T/x.gz" a b
expect_rc 2 "ties without a base"
run merge --method linear --weights 1,2 --zoo "$Z" -o "$T/x.gz" a b c
expect_rc 2 "--weights of the wrong length"
run merge --method linear --zoo "$Z" -o /dev/full a b
expect_rc 1 "writing to /dev/full fails"
cat >"$T/arch2.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 6, activation: tanh}
  - {name: out, units: 4}
YAML
zoo-add --zoo "$Z" --name w --arch "$T/arch2.yaml" 2>/dev/null
run merge --method linear --zoo "$Z" -o "$T/x.gz" a w
expect_rc 1 "mismatched architectures"
expect_err "tensor hidden.weight is \[6, 4\] in w but \[8, 4\] in a" "name the tensor"
check "and write nothing" test ! -e "$T/x.gz"
cat >"$T/cfg.yaml" <<'YAML'
method: linear
models:
  - {model: a, weight: {features: 1, head: 0}}
  - {model: b, weight: [0.5, 1]}
YAML
run merge --config "$T/cfg.yaml" --zoo "$Z" -o "$T/cfg.gz"
expect_rc 0 "a config with per-group and per-layer weights"
printf 'method: linear\nmodels:\n  - {model: a, weight: {neck: 1}}\n' >"$T/cfg2.yaml"
run merge --config "$T/cfg2.yaml" --zoo "$Z" -o "$T/cfg.gz"
expect_rc 2 "a config naming an unknown group"
expect_err "cfg2.yaml:3:25" "with its line and column"
finish
