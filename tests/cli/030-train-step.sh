#!/bin/sh
# train-step: training drives the loss down, updates and --apply, logs,
# determinism, bad input, conflicts, and crashes at every write leave the
# zoo at the old version or the new one, never between.
. "$(dirname "$0")/lib.sh"

# A small separable problem: class = which of 4 features is largest.
separable_csv "$T/data.csv" 600 7
tensor import --from csv --label label -o "$T/data.safetensors.gz" "$T/data.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh}
  - {name: out, units: 4}
YAML
Z=$T/zoo
zoo-add --zoo "$Z" --name m --arch "$T/arch.yaml" --seed 3 2>/dev/null

run train-step --help
expect_rc 0 "--help"
run train-step --zoo "$Z" --model m --epochs 20 --lr 0.1 --seed 1 \
	--log "$T/log.jsonl" -o "$T/u1.safetensors.gz" "$T/data.safetensors.gz"
expect_rc 0 "train and write an update stream"
check "the log has one line per epoch end" test "$(grep -c '"epoch_end":true' "$T/log.jsonl")" -eq 20
first=$(grep '"epoch_end":true' "$T/log.jsonl" | head -1 | sed 's/.*"train_loss":\([^,]*\).*/\1/')
last=$(grep '"epoch_end":true' "$T/log.jsonl" | tail -1 | sed 's/.*"train_loss":\([^,]*\).*/\1/')
check "the training loss falls by more than half ($first -> $last)" \
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.5 * a) }'
acc=$(grep '"epoch_end":true' "$T/log.jsonl" | tail -1 | sed 's/.*"val_acc":\([^,]*\).*/\1/')
check "held-out accuracy above 0.9 ($acc)" awk -v a="$acc" 'BEGIN { exit !(a > 0.9) }'
run tensor info "$T/u1.safetensors.gz"
check "the update is an update document" grep -q 'zm.kind.*update' "$T/out"
check "with deltas of every parameter" sh -c "grep -q 'hidden.weight' '$T/out' && grep -q 'out.bias' '$T/out'"
check "the parent version" grep -q 'zm.parent.*1' "$T/out"
check "and the profile of the data" grep -q 'profile.input.mean' "$T/out"
check "without --apply the zoo stays at v1" grep -q 'version: 1' "$Z/zoo.yaml"

run train-step --zoo "$Z" --model m --epochs 20 --lr 0.1 --seed 1 \
	-o "$T/u2.safetensors.gz" "$T/data.safetensors.gz"
check "the same seed gives the same update, byte for byte" cmp -s "$T/u1.safetensors.gz" "$T/u2.safetensors.gz"
run sh -c "train-step --zoo '$Z' --model m --epochs 1 --seed 2 < '$T/data.safetensors.gz' | tensor info -"
expect_rc 0 "data from stdin, update to a pipe"

run train-step --zoo "$Z" --model m --epochs 5 --lr 0.1 --apply --optimizer adam "$T/data.safetensors.gz"
expect_rc 0 "--apply"
check "the zoo points at v2" grep -q 'file: models/m/v2.safetensors.gz' "$Z/zoo.yaml"
check "with metrics" grep -q 'accuracy:' "$Z/zoo.yaml"
run tensor info "$Z/models/m/v2.safetensors.gz"
check "v2 carries the profile" grep -q 'profile.out.var' "$T/out"
check "v2 names its parent" grep -q 'zm.parent.*1' "$T/out"

# Bad input: nothing changes.
cp "$Z/zoo.yaml" "$T/before.yaml"
printf 'a,b,label\n1,2,0\n3,4,1\n' >"$T/narrow.csv"
tensor import --from csv --label label -o "$T/narrow.safetensors.gz" "$T/narrow.csv"
run train-step --zoo "$Z" --model m --apply "$T/narrow.safetensors.gz"
expect_rc 1 "a width mismatch is refused"
expect_err "no column 'f0' \(model 'm' takes 4 named features\)" "naming the missing column"
sed 's/^\(1\.[0-9]*\),/nan,/' "$T/data.csv" | head -50 >"$T/nan.csv"
if tensor import --from csv --label label -o "$T/nan.safetensors.gz" "$T/nan.csv" 2>/dev/null; then
	run train-step --zoo "$Z" --model m --apply "$T/nan.safetensors.gz"
	expect_rc 1 "NaN in the data is refused"
	expect_err "non-finite" "and named"
fi
awk -F, 'NR == 1 || NR > 20 { print } NR > 1 && NR <= 20 { $5 = 9; print }' OFS=, "$T/data.csv" >"$T/range.csv"
tensor import --from csv --label label -o "$T/range.safetensors.gz" "$T/range.csv"
run train-step --zoo "$Z" --model m --apply "$T/range.safetensors.gz"
expect_rc 1 "a label out of range is refused"
expect_err "label '9' is not a class of model 'm' \(classes: 0, 1, 2, 3\)" "with the label and the model's classes"
head -c 300 "$T/data.safetensors.gz" >"$T/trunc.safetensors.gz"
run train-step --zoo "$Z" --model m --apply "$T/trunc.safetensors.gz"
expect_rc 1 "truncated data is refused"
run train-step --zoo "$Z" --model nosuch "$T/data.safetensors.gz"
expect_rc 1 "an unknown model"
expect_err "no model named 'nosuch'" "is named"
run train-step --zoo "$Z" --model m --lr 0.1 --lr-typo 1 "$T/data.safetensors.gz"
expect_rc 2 "an unknown option is a usage error"
run train-step --zoo "$Z" --model m --epochs 0 "$T/data.safetensors.gz"
expect_rc 2 "zero epochs is a usage error"
run train-step --zoo "$Z" --model m --optimizer rmsprop "$T/data.safetensors.gz"
expect_rc 2 "an unknown optimizer is a usage error"
run train-step --zoo "$Z" --model m -o "$T/nodir/u.safetensors.gz" "$T/data.safetensors.gz"
expect_rc 1 "an unwritable output fails"
if [ -w /dev/full ]; then
	run sh -c "train-step --zoo '$Z' --model m '$T/data.safetensors.gz' >/dev/full"
	expect_rc 1 "a full disk fails the run"
fi
run train-step --zoo "$Z" --model m --lr 1000 --epochs 3 -o "$T/big.safetensors.gz" "$T/data.safetensors.gz"
if [ "$rc" -ne 0 ]; then
	expect_err "diverged|non-finite" "a diverging run is refused with a reason"
else
	pass "a large learning rate that still converges is accepted"
fi
check "after all the bad runs the index is unchanged" cmp -s "$Z/zoo.yaml" "$T/before.yaml"

# Weighted updates from an assignment: every model of the slice trains,
# each step scaled by its weight; --apply moves them all in one change.
zoo-add --zoo "$Z" --name m2 --arch "$T/arch.yaml" --seed 4 2>/dev/null
cat >"$T/assignment.yaml" <<'YAML'
metric: kl
temperature: 1.0
slices:
  - slice: all
    file: data.safetensors.gz
    models: [{model: m, weight: 0.75}, {model: m2, weight: 0.25}]
    similarity: {m: -0.1, m2: -0.5}
  - slice: other
    file: other.safetensors.gz
    models: [{model: m2, weight: 1.0}]
    similarity: {m: -2, m2: -0.1}
YAML
cp "$Z/zoo.yaml" "$T/before-assign.yaml"
run train-step --zoo "$Z" --assignment "$T/assignment.yaml" --epochs 2 \
	-o "$T/wu.safetensors.gz" "$T/data.safetensors.gz"
expect_rc 0 "train the slice's models from an assignment (slice found by file name)"
run tensor info "$T/wu.safetensors.gz"
check "one update per model" test "$(grep -c 'zm.kind.*update' "$T/out")" -eq 2
check "with the weights" sh -c "grep -q 'zm.weight.*0.75' '$T/out' && grep -q 'zm.weight.*0.25' '$T/out'"
check "and the held-out loss before training" grep -q 'loss_before' "$T/out"
check "each update names the assignment's slice" test "$(grep -c 'zm.slice.*all' "$T/out")" -eq 2
check "no change to the zoo without --apply" cmp -s "$Z/zoo.yaml" "$T/before-assign.yaml"
run train-step --zoo "$Z" --assignment "$T/assignment.yaml" --slice nosuch "$T/data.safetensors.gz"
expect_rc 1 "an unknown slice"
expect_err "no slice 'nosuch'" "is named"
printf 'metric: kl\nslices:\n  - {slice: a, models: [{model: m, weight: 2}]}\n' >"$T/badw.yaml"
run train-step --zoo "$Z" --assignment "$T/badw.yaml" --slice a "$T/data.safetensors.gz"
expect_rc 2 "weights that do not sum to 1 are a configuration error"
run train-step --zoo "$Z" --assignment "$T/assignment.yaml" --model m "$T/data.safetensors.gz"
expect_rc 2 "--model and --assignment together are a usage error"
run train-step --zoo "$Z" --assignment "$T/assignment.yaml" --slice all --epochs 1 --apply --quiet "$T/data.safetensors.gz"
expect_rc 0 "--apply with an assignment"
check "both models moved in one change" sh -c "grep -q 'file: models/m/v3' '$Z/zoo.yaml' && grep -q 'file: models/m2/v2' '$Z/zoo.yaml'"

# Crashes: SIGKILL at every write, fsync and rename of an --apply leaves
# the index valid and at v3 or v4, and the model it names loads.
rm -f "$T/counts"
cp -r "$Z" "$T/zc"
ZM_FAULT_COUNT=$T/counts train-step --zoo "$T/zc" --model m --epochs 1 --apply --quiet "$T/data.safetensors.gz"
bad=0
kills=0
for kind in write fsync rename; do
	n=$(sed -n "s/^$kind //p" "$T/counts")
	i=1
	while [ "$i" -le "${n:-0}" ]; do
		rm -rf "$T/zc" && cp -r "$Z" "$T/zc"
		rc=0
		ZM_FAULT=$kind:$i:kill train-step --zoo "$T/zc" --model m --epochs 1 --apply --quiet "$T/data.safetensors.gz" 2>/dev/null || rc=$?
		[ "$rc" -eq 137 ] && kills=$((kills + 1))
		v=$(zoo-ls --zoo "$T/zc" --format yaml | awk '/^  - name: m$/ { f = 1; next } f && /^    version: / { print $2; exit }')
		case $v in
		3|4) train-step --zoo "$T/zc" --model m --epochs 1 --quiet -o /dev/null "$T/data.safetensors.gz" 2>/dev/null || bad=$((bad + 1)) ;;
		*) bad=$((bad + 1)); echo "# kill at $kind:$i left version '$v'" ;;
		esac
		i=$((i + 1))
	done
done
if [ "$bad" -eq 0 ] && [ "$kills" -gt 0 ]; then pass "$kills kill points leave a valid zoo"; else fail "kills: $bad bad of $kills"; fi


# zoo-add --profile: the profile train-step --apply writes, recomputed from
# the same rows without training.  v2 (trained, nothing held out) and v3
# (its profile recomputed) hold the same bytes after their headers, which
# differ only in zm.version and zm.parent.
ZP=$T/zp
zoo-add --zoo "$ZP" --name p --arch "$T/arch.yaml" --seed 3 2>/dev/null
train-step --zoo "$ZP" --model p --epochs 2 --lr 0.1 --seed 1 --val-fraction 0 --apply --quiet "$T/data.safetensors.gz"
run zoo-add --zoo "$ZP" --name p --profile "$T/data.safetensors.gz"
expect_rc 0 "zoo-add --profile"
check "it is the model's next version" grep -q 'file: models/p/v3' "$ZP/zoo.yaml"
# body FILE: a document's bytes after its header.
body() {
	gzip -dc "$1" >"$T/body.raw"
	n=$(od -An -tu8 -N8 "$T/body.raw" | tr -d ' ')
	tail -c +$((n + 9)) "$T/body.raw"
}
body "$ZP/models/p/v2.safetensors.gz" >"$T/v2.body"
body "$ZP/models/p/v3.safetensors.gz" >"$T/v3.body"
check "the profile (and weights) equal what train-step wrote, byte for byte" cmp "$T/v2.body" "$T/v3.body"
check "the PPCA is among them" sh -c "gzip -dc '$ZP/models/p/v3.safetensors.gz' | head -c 4000 | grep -q profile.input.pc"
head -n 301 "$T/data.csv" >"$T/half.csv"
tensor import --from csv --label label -o "$T/half.safetensors.gz" "$T/half.csv"
run zoo-add --zoo "$ZP" --name p --profile "$T/half.safetensors.gz"
expect_rc 0 "zoo-add --profile on other rows"
body "$ZP/models/p/v4.safetensors.gz" >"$T/v4.body"
zoo-add --zoo "$ZP" --name p --profile "$T/half.safetensors.gz" 2>/dev/null
body "$ZP/models/p/v5.safetensors.gz" >"$T/v5.body"
check "other rows give another profile" sh -c "! cmp -s '$T/v3.body' '$T/v4.body'"
check "the same rows again replace it, not add to it" cmp "$T/v4.body" "$T/v5.body"
cp -r "$ZP" "$T/zp0"
printf 'a,b,label\n1,2,0\n' >"$T/narrow.csv"
tensor import --from csv --label label -o "$T/narrow.safetensors.gz" "$T/narrow.csv"
run zoo-add --zoo "$ZP" --name p --profile "$T/narrow.safetensors.gz"
expect_rc 1 "zoo-add --profile of data without the model's columns"
expect_err "narrow|f0|column" "the message names the data or the column"
check "the zoo is as before" diff -r "$T/zp0" "$ZP"
run zoo-add --zoo "$ZP" --name nosuch --profile "$T/data.safetensors.gz"
expect_rc 1 "zoo-add --profile of a model the zoo lacks"
run zoo-add --zoo "$ZP" --name p --profile "$T/data.safetensors.gz" --seed 2
expect_rc 2 "--profile with --seed is a usage error"
run zoo-add --zoo "$ZP" --name p --arch "$T/arch.yaml" --max-memory 10
expect_rc 2 "--max-memory without --profile is a usage error"

finish
