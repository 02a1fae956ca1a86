#!/bin/sh
# predict --granularity auto: every batch's predictions are those of the
# fixed level its trace names; on a stream that alternates batches of one
# kind of input with mixes, the level switches with the batches; a tiny
# latency budget keeps every batch at the full level; rules decide; the
# bad uses exit 2 and write nothing.
. "$(dirname "$0")/lib.sh"

# Two kinds of input: a, and c (shifted and rescaled features, labels
# reversed).  m0 learns a, m1 c, from one initialisation.
awk 'BEGIN { srand(7); print "f0,f1,f2,f3,label";
	for (i = 0; i < 400; i++) { c = i % 2; line = "";
		for (j = 0; j < 4; j++) {
			v = rand() * 0.5 + c + (j == i % 4 ? 0.5 : 0)
			line = line (j ? "," : "") sprintf("%.4f", v)
		}
		print line "," (i % 4) } }' >"$T/a.csv"
awk -F, 'NR == 1 { print; next }
	{ printf "%.4f,%.4f,%.4f,%.4f,%d\n", $1 + 2, $2 * 3, $3 + 2, -$4, 3 - $5 }' \
	"$T/a.csv" >"$T/c.csv"
tensor import --from csv --label label -o "$T/a.st.gz" "$T/a.csv"
tensor import --from csv --label label -o "$T/c.st.gz" "$T/c.csv"
# Batches of 50: even batches all of a, odd ones half a, half c.
awk -F, 'NR == 1 { print; next } FNR == 1 { next }
	NR == FNR { a[na++] = $0; next } { c[nc++] = $0 }
	END { for (t = 0; t < 8; t++) for (r = 0; r < 50; r++)
		print (t % 2 == 0 || r % 2) ? a[(t * 50 + r) % na] : c[(t * 50 + r) % nc] }' \
	"$T/a.csv" "$T/c.csv" >"$T/alt.csv"
tensor import --from csv --label label -o "$T/alt.st.gz" "$T/alt.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh, group: features}
  - {name: out, units: 4, group: head}
YAML
Z=$T/z
zoo-add --zoo "$Z" --name m0 --arch "$T/arch.yaml" --seed 0 2>/dev/null
zoo-add --zoo "$Z" --name m1 --base m0 "$Z/models/m0/v1.safetensors.gz" 2>/dev/null
train-step --zoo "$Z" --model m0 --epochs 5 --lr 0.1 --apply --quiet "$T/a.st.gz"
train-step --zoo "$Z" --model m1 --epochs 5 --lr 0.1 --apply --quiet "$T/c.st.gz"

W="--metric mahalanobis --per batch --temperature 0.5 --batch-size 50"
run predict --zoo "$Z" $W --granularity auto --trace "$T/tr.csv" --explain \
	-o "$T/auto.csv" "$T/alt.st.gz"
expect_rc 0 "--granularity auto"
check "--explain says how often each level ran" \
	grep -Eq '^granularity: auto, per batch.*: full 4 batches \(50.0%\)' "$T/out"
check "the trace names each batch's level, time and reason" sh -c "
	head -1 '$T/tr.csv' | grep -qx 'batch,rows,model,unit,weight,similarity,score,level,ms,why' &&
	awk -F, 'NR > 1 && (\$8 !~ /^(full|group|layer)\$/ || \$9 !~ /^[0-9.]+\$/ || \$10 !~ /^\"/) { exit 1 }' '$T/tr.csv'"
for g in full group layer; do
	predict --zoo "$Z" $W --granularity $g -o "$T/$g.csv" "$T/alt.st.gz"
done
check "each batch's predictions are those of its level" awk -F, '
	FILENAME == ARGV[1] { if (FNR > 1) lv[$1] = $8; next }
	FILENAME == ARGV[2] { f[FNR] = $0; next }
	FILENAME == ARGV[3] { g[FNR] = $0; next }
	FILENAME == ARGV[4] { l[FNR] = $0; next }
	FNR > 1 { b = int((FNR - 2) / 50) + 1
		want = lv[b] == "full" ? f[FNR] : lv[b] == "group" ? g[FNR] : l[FNR]
		if ($0 != want) { print "row", FNR, "batch", b, lv[b]; bad = 1 } }
	END { exit bad }' "$T/tr.csv" "$T/full.csv" "$T/group.csv" "$T/layer.csv" "$T/auto.csv"
check "one kind of input: full; mixed batches: a finer level" awk -F, '
	NR > 1 && !seen[$1]++ { if ($1 % 2) { if ($8 != "full") bad = 1 }
		else if ($8 == "full") bad = 1 }
	END { exit bad }' "$T/tr.csv"
check "the fixed levels differ on the mixed batches (the choice matters)" \
	sh -c "! cmp -s '$T/full.csv' '$T/group.csv'"

# A budget no level can meet: the coarsest, every batch.
run predict --zoo "$Z" $W --granularity auto --latency-budget-ms 0.000001 \
	--trace "$T/trb.csv" --explain -o /dev/null "$T/alt.st.gz"
expect_rc 0 "--granularity auto under a budget"
check "under a tiny budget every batch runs at full" \
	awk -F, 'NR > 1 && $8 != "full" { exit 1 }' "$T/trb.csv"
# (or the load: a saturated machine also takes a level coarser)
check "the mixed batches say the budget made it coarser" \
	awk -F, 'NR > 1 && $1 % 2 == 0 && $0 !~ /budget|saturated/ { exit 1 }' "$T/trb.csv"
check "--explain counts the batches within the budget" \
	grep -q 'latency budget 1e-06 ms: 0 of 8 batches within it' "$T/out"

# Rules on the batch's metrics decide.
cat >"$T/rules.yaml" <<'YAML'
rules:
  - {when: {metric: agreement, op: "<", value: 2}, level: layer}
YAML
run predict --zoo "$Z" $W --granularity auto --granularity-rules "$T/rules.yaml" \
	--trace "$T/trr.csv" -o /dev/null "$T/alt.st.gz"
expect_rc 0 "--granularity-rules"
check "a rule that always holds: layer, naming the rule" \
	awk -F, 'NR > 1 && ($8 != "layer" || $0 !~ /rule 1: agreement < 2/) { exit 1 }' "$T/trr.csv"
cat >"$T/rules2.yaml" <<'YAML'
default: group
YAML
run predict --zoo "$Z" $W --granularity auto --granularity-rules "$T/rules2.yaml" \
	--trace "$T/trr2.csv" -o /dev/null "$T/alt.st.gz"
check "the rules' default when no rule holds" awk -F, 'NR > 1 && $8 != "group" { exit 1 }' "$T/trr2.csv"

# A granctl decision as the prior is accepted next to auto.
printf 'level: layer\n' >"$T/g.yaml"
run predict --zoo "$Z" $W --granularity auto --granularity-from "$T/g.yaml" -o /dev/null "$T/alt.st.gz"
expect_rc 0 "--granularity auto with --granularity-from (its prior)"

# --state keeps each level's cost per row between runs, next to Hedge
# scores a --feedback run left there.
predict --zoo "$Z" --model m0 --model m1 $W --granularity full --feedback \
	--state "$T/st" -o /dev/null "$T/a.st.gz"
run predict --zoo "$Z" $W --granularity auto --state "$T/st" -o /dev/null "$T/alt.st.gz"
expect_rc 0 "--granularity auto --state"
check "the state has cost lines for the levels that ran, and keeps the scores" sh -c "
	head -1 '$T/st' | grep -qx 'zoomerge-predict-state 1' &&
	grep -Eq '^cost full [0-9.e-]+\$' '$T/st' && grep -Eq '^cost group [0-9.e-]+\$' '$T/st' &&
	test \$(grep -c '^score ' '$T/st') -eq 2"
run predict --zoo "$Z" $W --granularity auto --state "$T/st" --explain -o /dev/null "$T/a.st.gz"
check "a second run starts from the costs: group has an estimate without running" \
	sh -c "grep -q 'group 0 batches' '$T/out' && grep -Eq 'cost per row:.* group [0-9.]+ ms' '$T/out'"
sed 's/^cost full .*/cost full fast/' "$T/st" >"$T/st-bad"
cp "$T/st-bad" "$T/st-bad.orig"
run predict --zoo "$Z" $W --granularity auto --state "$T/st-bad" -o "$T/no.csv" "$T/alt.st.gz"
expect_rc 1 "a malformed cost line exits 1"
expect_err "st-bad:[0-9]+: cost of full: expected a finite number" "names the file, line and value"
check "the bad state file is unchanged" cmp "$T/st-bad" "$T/st-bad.orig"
run predict --zoo "$Z" --model m0 --model m1 $W --granularity full --feedback \
	--state "$T/st" -o /dev/null "$T/a.st.gz"
expect_rc 0 "a --feedback run reads a state file with cost lines"

# Bad uses.
run predict --zoo "$Z" --granularity sometimes -o "$T/no.csv" "$T/alt.st.gz"
expect_rc 2 "--granularity sometimes exits 2"
expect_err "expected full, group, layer or auto" "names the levels"
run predict --zoo "$Z" --granularity layer --granularity-rules "$T/rules.yaml" -o "$T/no.csv" "$T/alt.st.gz"
expect_rc 2 "--granularity-rules without auto exits 2"
run predict --zoo "$Z" --granularity auto --feedback -o "$T/no.csv" "$T/alt.st.gz"
expect_rc 2 "--granularity auto --feedback exits 2"
printf 'rules:\n  - {when: {metric: nonsense, op: "<", value: 1}, level: layer}\n' >"$T/bad.yaml"
run predict --zoo "$Z" $W --granularity auto --granularity-rules "$T/bad.yaml" -o "$T/no.csv" "$T/alt.st.gz"
expect_rc 2 "a bad rules file exits 2"
expect_err "bad.yaml:2:" "names the file, line and column"
check "nothing written by the refused runs" test ! -e "$T/no.csv"

# Unrelated models (another initialisation) never merge their layers.
zoo-add --zoo "$Z" --name u --arch "$T/arch.yaml" --seed 5 2>/dev/null
train-step --zoo "$Z" --model u --epochs 5 --lr 0.1 --apply --quiet "$T/c.st.gz"
for w in "$W" "--batch-size 50"; do
	run predict --zoo "$Z" --model m0 --model u $w --granularity auto --explain \
		--trace "$T/tru.csv" -o "$T/u.csv" "$T/alt.st.gz"
	expect_rc 0 "unrelated models with --granularity auto ($w)"
	check "unrelated models ($w): the full level only" sh -c "
		awk -F, 'NR > 1 && \$8 != \"full\" { exit 1 }' '$T/tru.csv' &&
		grep -q 'group unavailable layer unavailable' '$T/out'"
done

# One model: auto is the plain pass.
run predict --zoo "$Z" --model m0 --granularity auto -o "$T/one.csv" "$T/alt.st.gz"
expect_rc 0 "one model with --granularity auto"
predict --zoo "$Z" --model m0 -o "$T/one-ref.csv" "$T/alt.st.gz"
check "one model: the same predictions" cmp "$T/one.csv" "$T/one-ref.csv"
finish
