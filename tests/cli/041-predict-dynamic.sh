#!/bin/sh
# predict with several models: the trace against the predictions of the
# models alone (ensemble), params vs outputs, weights that sum to 1 per
# unit, top-k, static weights and granularity files, feedback with a state
# file that survives runs and is refused when corrupt or foreign, and the
# bad inputs (different architectures, no profile, NaN) leaving nothing.
. "$(dirname "$0")/lib.sh"

awk 'BEGIN { srand(7); print "f0,f1,f2,f3,label";
	for (i = 0; i < 400; i++) { c = i % 2; line = "";
		for (j = 0; j < 4; j++) {
			v = rand() * 0.5 + c + (j == i % 4 ? 0.5 : 0)
			line = line (j ? "," : "") sprintf("%.4f", v)
		}
		print line "," (i % 4) } }' >"$T/a.csv"
tensor import --from csv --label label -o "$T/a.st.gz" "$T/a.csv"
awk -F, 'NR == 1 || NR % 2 == 1' "$T/a.csv" >"$T/b.csv"
tensor import --from csv --label label -o "$T/b.st.gz" "$T/b.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh, group: features}
  - {name: out, units: 4, group: head}
YAML
Z=$T/z
# One initialisation (related models), so their layers may be merged.
zoo-add --zoo "$Z" --name m0 --arch "$T/arch.yaml" --seed 0 2>/dev/null
for m in m1 m2; do
	zoo-add --zoo "$Z" --name $m --base m0 "$Z/models/m0/v1.safetensors.gz" 2>/dev/null
done
train-step --zoo "$Z" --model m0 --epochs 5 --lr 0.1 --apply --quiet "$T/a.st.gz"
train-step --zoo "$Z" --model m1 --epochs 1 --lr 0.1 --apply --quiet "$T/b.st.gz"
# m2 stays untrained: no profile.

P="--zoo $Z --model m0 --model m1"
predict --zoo "$Z" --model m0 "$T/a.st.gz" >"$T/p0.csv"
predict --zoo "$Z" --model m1 "$T/a.st.gz" >"$T/p1.csv"

# Ensemble per batch: p = w0 p(m0) + w1 p(m1), with w from the trace.
run predict $P --merge ensemble --per batch --batch-size 100 --temperature 2 \
	--trace "$T/tr.csv" "$T/a.st.gz"
expect_rc 0 "ensemble of two models"
cp "$T/out" "$T/ens.csv"
check "the trace has a line per batch and model" test "$(wc -l <"$T/tr.csv")" -eq 9
check "the trace's weights reproduce the predictions" awk -F, '
	FILENAME == ARGV[1] { if (FNR > 1) w[$1, $3] = $5; next }
	FILENAME == ARGV[2] { if (FNR > 1) for (j = 3; j <= NF; j++) a[FNR, j] = $j; next }
	FILENAME == ARGV[3] { if (FNR > 1) for (j = 3; j <= NF; j++) b[FNR, j] = $j; next }
	FNR > 1 { bt = int((FNR - 2) / 100) + 1
		for (j = 3; j <= NF; j++) {
			e = w[bt, "m0"] * a[FNR, j] + w[bt, "m1"] * b[FNR, j] - $j
			if (e > 2e-6 || e < -2e-6) { print "row", FNR, j, e; bad = 1 }
		} }
	END { exit bad }' "$T/tr.csv" "$T/p0.csv" "$T/p1.csv" "$T/ens.csv"
check "the weights differ from uniform (similarity decides)" \
	awk -F, 'NR > 1 && ($5 < 0.49 || $5 > 0.51) { f = 1 } END { exit !f }' "$T/tr.csv"

# Parameters merged once per batch = outputs merged before activation.
predict $P --merge params --granularity layer --batch-size 64 "$T/a.st.gz" >"$T/par.csv"
predict $P --merge outputs --granularity layer --batch-size 64 "$T/a.st.gz" >"$T/out.csv"
check "--merge params equals --merge outputs (pre, per batch)" awk -F, '
	NR == FNR { for (j = 3; j <= NF; j++) a[FNR, j] = $j; next }
	FNR > 1 { for (j = 3; j <= NF; j++) { e = a[FNR, j] - $j
		if (e > 1e-5 || e < -1e-5) bad = 1 } } END { exit bad }' "$T/par.csv" "$T/out.csv"
run predict $P --merge params --per row "$T/a.st.gz"
expect_rc 2 "--merge params with --per row exits 2"

# Weights sum to 1 per unit, per row weighting, all granularities.
for g in full group layer; do
	run predict $P --granularity $g --per row --metric mahalanobis \
		--trace "$T/tr-$g.csv" --batch-size 128 "$T/a.st.gz"
	expect_rc 0 "--granularity $g --per row"
	check "$g: weights sum to 1 per batch and unit" awk -F, '
		NR > 1 { s[$1, $4] += $5 } END { for (k in s) if (s[k] < 0.999999 || s[k] > 1.000001) bad = 1; exit bad }' "$T/tr-$g.csv"
done
check "group level has the units features and head" sh -c "cut -d, -f4 '$T/tr-group.csv' | sort -u | tr '\n' ' ' | grep -q 'features head unit'"

# top-k 1: one model per batch and unit.
predict --zoo "$Z" --model m0 --model m1 --top-k 1 --granularity layer \
	--per batch --batch-size 100 --trace "$T/tk.csv" "$T/a.st.gz" >/dev/null
check "--top-k 1 keeps one model per batch and unit" awk -F, '
	NR > 1 && $5 > 0 { n[$1, $4]++ } END { for (k in n) if (n[k] != 1) bad = 1; exit bad }' "$T/tk.csv"

# Static weights (merge's config format) and a granularity decision file.
cat >"$T/w.yaml" <<'YAML'
models:
  - {model: m0, weight: {features: 1, head: 3}}
  - {model: m1, weight: 1}
YAML
cat >"$T/g.yaml" <<'YAML'
level: group
units:
  - {unit: features, shared: true}
reason: "test"
YAML
run predict $P --weights "$T/w.yaml" --granularity-from "$T/g.yaml" \
	--trace "$T/st.csv" "$T/a.st.gz"
expect_rc 0 "--weights FILE with --granularity-from FILE"
check "static weights in the trace: features 0.5/0.5, head 0.75/0.25" sh -c "
	grep -q ',m0,features,0.5,' '$T/st.csv' && grep -q ',m0,head,0.75,' '$T/st.csv' &&
	grep -q ',m1,head,0.25,' '$T/st.csv'"
printf 'models:\n  - {model: zz, weight: 1}\n' >"$T/bad-w.yaml"
run predict $P --weights "$T/bad-w.yaml" "$T/a.st.gz"
expect_rc 2 "a weights file naming another model exits 2"
expect_err "bad-w.yaml:2:" "and names the line"

# Feedback with a state file.
S=$T/state
run predict $P --feedback --eta 2 --state "$S" --batch-size 50 -o "$T/fb1.csv" "$T/a.st.gz"
expect_rc 0 "--feedback --state, first run"
check "the state file holds both models" sh -c "grep -q '^score m0 ' '$S' && grep -q '^score m1 ' '$S'"
check "8 batches fed back" grep -qx 'batches 8' "$S"
check "the better-trained model leads" grep -qx 'score m0 0' "$S"
run predict $P --feedback --eta 2 --state "$S" --batch-size 50 -o "$T/fb2.csv" "$T/a.st.gz"
expect_rc 0 "second run continues from the state"
check "16 batches after two runs" grep -qx 'batches 16' "$S"
cp "$S" "$T/state.good"
printf 'zoomerge-predict-state 1\nscore m0 0\nscore m1 oops\n' >"$S"
cp "$S" "$T/state.bad"
run predict $P --feedback --state "$S" -o "$T/fb3.csv" "$T/a.st.gz"
expect_rc 1 "a corrupt state file exits 1"
expect_err "state:3:" "naming the line"
check "the corrupt state file is unchanged" cmp -s "$S" "$T/state.bad"
check "no output is left behind" test ! -e "$T/fb3.csv"
run predict --zoo "$Z" --model m0 --model m2 --weighting uniform --feedback \
	--state "$T/state.good" -o "$T/fb4.csv" "$T/a.st.gz"
expect_rc 1 "a state file of other models exits 1"
expect_err "other models" "says it is foreign"
run predict $P --state "$S" "$T/a.st.gz"
expect_rc 2 "--state without --feedback exits 2"

# Entropy adaptation runs and writes whole outputs.
run predict $P --adapt entropy --granularity layer --batch-size 100 "$T/a.st.gz"
expect_rc 0 "--adapt entropy"
check "401 lines of predictions" test "$(wc -l <"$T/out")" -eq 401
run predict $P --adapt entropy --adapt-reg 1 --adapt-trust 0.2 --adapt-steps 2 "$T/a.st.gz"
expect_rc 0 "--adapt-reg and --adapt-trust"
run predict $P --feedback --share 0.2 --probe 1 --batch-size 50 "$T/a.st.gz"
expect_rc 0 "--feedback --share --probe"
for bad in "--share 1" "--share -0.1" "--probe 0" "--probe 1.5" "--adapt-reg -1" "--adapt-trust 0"; do
	run predict $P --feedback --adapt entropy $bad "$T/a.st.gz"
	expect_rc 2 "$bad exits 2"
done

# Bad inputs.
run predict --zoo "$Z" --model m0 --model m2 --weighting similarity "$T/a.st.gz"
expect_rc 1 "similarity with a model without profile exits 1"
expect_err "'m2' has no profile.*uniform or static" "names the model and the way out"
run predict --zoo "$Z" --model m0 --model m2 --weighting density "$T/a.st.gz"
expect_rc 1 "density weighting asked for with a model without profile exits 1"
run predict --zoo "$Z" --model m0 --model m2 --explain "$T/a.st.gz"
expect_rc 0 "the defaults with a model without profile: uniform weights"
expect_err "'m2' has no profile of its inputs.*uniform" "and --explain says why"
run predict --zoo "$Z" --model m0 --model m2 --weighting uniform "$T/a.st.gz"
expect_rc 0 "uniform weighting needs no profile"
printf 'input: [4]\nlayers:\n  - {name: hidden, units: 6, activation: tanh}\n  - {name: out, units: 4}\n' >"$T/arch2.yaml"
zoo-add --zoo "$Z" --name w --arch "$T/arch2.yaml" 2>/dev/null
run predict --zoo "$Z" --model m0 --model w --weighting uniform -o "$T/xd.csv" "$T/a.st.gz"
expect_rc 0 "different architectures of unrelated models: their outputs are mixed"
predict --zoo "$Z" --model m0 --model w --weighting uniform --merge ensemble -o "$T/xe.csv" "$T/a.st.gz"
check "as --merge ensemble does" cmp "$T/xd.csv" "$T/xe.csv"
run predict --zoo "$Z" --model m0 --model w --weighting uniform --merge outputs -o "$T/x.csv" "$T/a.st.gz"
expect_rc 1 "different architectures with --merge outputs exit 1"
expect_err "layer 0 'hidden'.*units 8 vs 6|hidden.*8.*6" "the first differing layer is named"
expect_err "--merge ensemble" "ensemble is suggested"
check "nothing written" test ! -e "$T/x.csv"
run predict --zoo "$Z" --model m0 --model w --weighting uniform --merge ensemble "$T/a.st.gz"
expect_rc 0 "different architectures with --merge ensemble"
printf 'f0,f1,f2,f3,label\n1,2,3,4,0\n1,nan,3,4,1\n' >"$T/nan.csv"
run predict $P --from csv --label label -o "$T/n.csv" "$T/nan.csv"
expect_rc 1 "NaN input exits 1"
expect_err "nan|NaN" "says NaN"
check "no output after NaN" test ! -e "$T/n.csv"
run predict --zoo "$Z" --weighting router "$T/a.st.gz"
expect_rc 2 "--weighting router without --router exits 2"
run predict $P --merge bogus "$T/a.st.gz"
expect_rc 2 "unknown --merge exits 2"

# The man page's examples.
run sh -c "predict --zoo '$Z' --model m0 --model m1 --per row --granularity layer \
	--trace '$T/ex-trace.csv' --metrics '$T/ex-m.yaml' '$T/a.st.gz' > '$T/ex.csv'"
expect_rc 0 "man example: per-row layer-wise merging with a trace"
check "man example: metrics with accuracy" grep -q '^accuracy: ' "$T/ex-m.yaml"
finish
