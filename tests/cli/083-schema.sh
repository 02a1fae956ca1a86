#!/bin/sh
# Models know their data (issue 16, items 1, 2, 3 and 7): class names and
# column names travel with models and data, labels and columns are matched
# by name, a router's classes are matched to the assignment's slices by
# name, and routers are not experts.  Closes with a nightly retraining
# run over CSV files with a string label and a source column.
. "$(dirname "$0")/lib.sh"
LC_ALL=C
export LC_ALL

# gen FILE ROWS SEED CLASSES: rows of classes low (0), mid (1), high (2)
# among CLASSES (digits), feature f<c> raised by 1 for class c, noise in
# [0, 1.2); a string column 'source'; the label by name.
gen() {
	awk -v n="$2" -v seed="$3" -v allow="$4" 'BEGIN { srand(seed)
		split("low mid high", name, " ")
		print "f0,f1,f2,source,label"
		for (i = 0; k < n; i++) { c = i % 3
			if (index(allow, c) == 0) continue
			k++; line = ""
			for (j = 0; j < 3; j++) {
				v = rand() * 1.2; if (j == c) v += 1
				line = line sprintf("%.4f,", v) }
			print line (i % 2 ? "north" : "south") "," name[c + 1] } }' >"$1"
}
# accuracy PRED.csv DATA.csv: the share of rows whose pred (by name) is
# the label column of DATA, computed here from the two files.
accuracy() {
	awk -F, 'NR == FNR { if (FNR > 1) p[FNR] = $2; next }
		FNR == 1 { for (j = 1; j <= NF; j++) if ($j == "label") l = j; next }
		{ n++; if (p[FNR] == $l) c++ }
		END { printf "%.6f\n", c / n }' "$1" "$2"
}
metric() { awk -v k="$1:" '$1 == k { printf "%.6f\n", $2 }' "$2"; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }

cat >"$T/arch.yaml" <<'EOF'
input: [3]
layers:
  - {name: fc1, units: 16, activation: relu}
  - {name: out, units: 3}
EOF
gen "$T/train.csv" 900 1 012
gen "$T/day.csv" 300 2 01          # a day without class high
gen "$T/test.csv" 600 3 012
tensor import --from csv --label label -o "$T/train.st.gz" "$T/train.csv"
tensor import --from csv --label label -o "$T/day.st.gz" "$T/day.csv"
Z=$T/zoo
zoo-add --zoo "$Z" --name m --arch "$T/arch.yaml" --seed 1 2>/dev/null
run train-step --zoo "$Z" --model m --epochs 30 --lr 0.05 --apply --quiet "$T/train.st.gz"
expect_rc 0 "first training"
run tensor info "$Z/models/m/v2.safetensors.gz"
check "the model records its classes, as the data named them" \
	grep -q 'zm.classes = \["high","low","mid"\]' "$T/out"
check "and its features" grep -q 'zm.features = \["f0","f1","f2"\]' "$T/out"

# 1. A file without one class: its labels are ids into its own class list
# (low, mid), mapped by name to the model's (high, low, mid).
run predict --zoo "$Z" --model m --from csv --label label --metrics "$T/day.yaml" "$T/day.csv"
expect_rc 0 "1: predict a day without class high"
cp "$T/out" "$T/day-pred.csv"
check "1: pred holds class names, p_NAME the headers" \
	sh -c "head -1 '$T/day-pred.csv' | grep -qx 'id,pred,p_high,p_low,p_mid'"
want=$(accuracy "$T/day-pred.csv" "$T/day.csv")
got=$(metric accuracy "$T/day.yaml")
check "1: the metrics' accuracy ($got) is the predictions' against the labels ($want)" test "$got" = "$want"
check "1: and it is high (the model learned the task)" above "$got" 0.7
run predict --zoo "$Z" --model m --from csv --label label --metrics "$T/t0.yaml" "$T/test.csv"
cp "$T/out" "$T/t0.csv"
before=$(metric accuracy "$T/t0.yaml")
run train-step --zoo "$Z" --model m --epochs 3 --lr 0.05 --apply --quiet "$T/day.st.gz"
expect_rc 0 "1: train-step --apply on the day without high"
run tensor info "$Z/models/m/v3.safetensors.gz"
check "1: the classes stay as they were" grep -q 'zm.classes = \["high","low","mid"\]' "$T/out"
run predict --zoo "$Z" --model m --from csv --label label --metrics "$T/t1.yaml" "$T/test.csv"
cp "$T/out" "$T/t1-pred.csv"
after=$(metric accuracy "$T/t1.yaml")
check "1: next-day accuracy holds ($before -> $after)" above "$after" "$(awk -v b="$before" 'BEGIN { print b - 0.1 }')"
# A label the model does not know: an error naming it; the zoo as it was.
gen "$T/odd.csv" 30 4 012
sed '2s/,[a-z]*$/,extreme/' "$T/odd.csv" >"$T/odd2.csv"
tensor import --from csv --label label -o "$T/odd.st.gz" "$T/odd2.csv"
cp "$Z/zoo.yaml" "$T/zoo.before"
run train-step --zoo "$Z" --model m --apply "$T/odd.st.gz"
expect_rc 1 "1: an unknown label is refused"
expect_err "label 'extreme' is not a class of model 'm' \(classes: high, low, mid\)" "1: naming it and the model's classes"
check "1: the zoo is unchanged" cmp -s "$Z/zoo.yaml" "$T/zoo.before"
run predict --zoo "$Z" --model m --from csv --label label "$T/odd2.csv"
expect_rc 1 "1: predict refuses it too"
expect_err "label 'extreme' is not a class" "1: naming it"

# 2. Columns by name: reordered columns are reordered back, a missing one
# is an error naming it, an extra one is ignored.
awk -F, -v OFS=, '{ print $5, $3, $4, $1, $2 }' "$T/test.csv" >"$T/reordered.csv"
run predict --zoo "$Z" --model m --from csv --label label --metrics "$T/t2.yaml" "$T/reordered.csv"
expect_rc 0 "2: predict with the columns in another order"
check "2: the same predictions as in the model's order" cmp -s "$T/out" "$T/t1-pred.csv"
check "2: the same accuracy" test "$(metric accuracy "$T/t2.yaml")" = "$after"
cut -d, -f1,3- "$T/test.csv" >"$T/missing.csv"
run predict --zoo "$Z" --model m --from csv --label label -o "$T/missing-pred.csv" "$T/missing.csv"
expect_rc 1 "2: a missing column is refused"
expect_err "no column 'f1' \(model 'm' takes 3 named features\)" "2: naming it"
check "2: nothing written" test ! -e "$T/missing-pred.csv"
awk -F, -v OFS=, '{ print $0, (NR == 1 ? "extra" : NR) }' "$T/test.csv" >"$T/extra.csv"
run predict --zoo "$Z" --model m --from csv --label label --progress "$T/extra.csv"
expect_rc 0 "2: an extra column is ignored"
check "2: with the same predictions" cmp -s "$T/out" "$T/t1-pred.csv"
expect_err "1 column\(s\) model 'm' does not use, such as 'extra', ignored" "2: said under --progress"
tensor import --from csv --label label -o "$T/reordered.st.gz" "$T/reordered.csv"
run train-step --zoo "$Z" --model m --epochs 1 --seed 3 -o "$T/u1.st.gz" "$T/reordered.st.gz"
expect_rc 0 "2: train-step on reordered columns"
tensor import --from csv --label label -o "$T/test.st.gz" "$T/test.csv"
train-step --zoo "$Z" --model m --epochs 1 --seed 3 -o "$T/u2.st.gz" "$T/test.st.gz" 2>/dev/null
check "2: gives the update of the model's order" cmp -s "$T/u1.st.gz" "$T/u2.st.gz"

# 3 and 7. Slice experts and a router trained on slice --membership.
cat >"$T/rules.yaml" <<'EOF'
mode: partition
slices:
  - {name: s-low, where: {label: [low]}}
  - {name: s-mid, where: {label: [mid]}}
  - {name: s-high, where: {label: [high]}}
EOF
cat >"$T/router.yaml" <<'EOF'
input: [3]
layers:
  - {name: fc1, units: 8, activation: relu}
  - {name: out, units: 3}
EOF
R=$T/rzoo
slice --rules "$T/rules.yaml" --out-dir "$T/sl" --from csv --label label \
	--membership "$T/member.st.gz" "$T/train.csv" >/dev/null
for s in low mid high; do
	zoo-add --zoo "$R" --name "e-$s" --arch "$T/arch.yaml" --seed 1 2>/dev/null
	train-step --zoo "$R" --model "e-$s" --epochs 10 --lr 0.05 --apply --quiet "$T/sl/s-$s.safetensors.gz"
done
zoo-add --zoo "$R" --name router --arch "$T/router.yaml" --seed 2 2>/dev/null
run train-step --zoo "$R" --model router --epochs 30 --lr 0.05 --apply --quiet "$T/member.st.gz"
expect_rc 0 "3: train the router on slice --membership"
run tensor info "$R/models/router/v2.safetensors.gz"
check "3: the router's classes are the slices" grep -q 'zm.classes = \["s-low","s-mid","s-high"\]' "$T/out"
check "7: and its role is router" grep -q 'zm.role = router' "$T/out"
run zoo-ls --zoo "$R"
check "7: zoo-ls shows the roles" awk '$1 == "router" && $8 == "router" { r = 1 }
	$1 == "e-low" && $8 == "expert" { e = 1 } END { exit !(r && e) }' "$T/out"
run assign --zoo "$R" "$T/sl/s-low.safetensors.gz" "$T/sl/s-mid.safetensors.gz" "$T/sl/s-high.safetensors.gz"
expect_rc 0 "7: assign over a zoo with a router"
cp "$T/out" "$T/asg.yaml"
check "7: assign offers experts only" sh -c "! grep -q 'model: router' '$T/asg.yaml'"
run granctl --zoo "$R"
expect_rc 0 "7: granctl over the whole zoo leaves the router out"
run train-step --zoo "$R" --model router "$T/train.st.gz"
expect_rc 1 "7: the router is not trained on class labels"
expect_err "label '(low|mid|high)' is not a class of model 'router' \(classes: s-low, s-mid, s-high\)" "7: naming the label"
P="--zoo $R --weighting router --router router --from csv --label label"
run predict $P --assignment "$T/asg.yaml" --metrics "$T/r1.yaml" "$T/test.csv"
expect_rc 0 "3: predict with --weighting router"
cp "$T/out" "$T/r1.csv"
# The same slices in another order: s-high first.
awk '/^  - slice:/ { n++ } n == 0 { print; next } { b[n] = b[n] $0 "\n" }
	END { printf "%s%s%s", b[3], b[1], b[2] }' "$T/asg.yaml" >"$T/asg2.yaml"
check "3: the reordered assignment starts with s-high" sh -c "grep -m1 'slice:' '$T/asg2.yaml' | grep -q s-high"
run predict $P --assignment "$T/asg2.yaml" --metrics "$T/r2.yaml" "$T/test.csv"
expect_rc 0 "3: predict with the slices in another order"
check "3: the same predictions" cmp -s "$T/out" "$T/r1.csv"
check "3: the same metrics" cmp -s "$T/r1.yaml" "$T/r2.yaml"
sed 's/slice: s-high/slice: s-top/' "$T/asg.yaml" >"$T/asg3.yaml"
run predict $P --assignment "$T/asg3.yaml" -o "$T/r3.csv" "$T/test.csv"
expect_rc 1 "3: a router whose classes are not the assignment's slices is refused"
expect_err "router class 's-high' is not a slice of the assignment" "3: naming the class"
check "3: nothing written" test ! -e "$T/r3.csv"
run predict --zoo "$R" --from csv --label label --weighting uniform "$T/test.csv"
expect_rc 0 "7: predict over the whole zoo takes its experts"

# Updates carry the names: a model first trained through an update and
# merge records them; a static merge keeps them and refuses models that
# name other classes.
# u shares m's initialisation, so that their layers can be merged (lineage).
zoo-add --zoo "$Z" --name u --arch "$T/arch.yaml" --seed 1 2>/dev/null
train-step --zoo "$Z" --model u --epochs 1 -o "$T/uu.st.gz" "$T/train.st.gz" 2>/dev/null
run merge --zoo "$Z" "$T/uu.st.gz"
expect_rc 0 "merge an update of a model that names nothing yet"
run tensor info "$Z/models/u/v2.safetensors.gz"
check "the merged version records the update's classes" grep -q 'zm.classes = \["high","low","mid"\]' "$T/out"
run merge --method linear -o "$T/lin.st.gz" "$Z/models/m/v3.safetensors.gz" "$Z/models/u/v2.safetensors.gz"
expect_rc 0 "a static merge of two models with the same classes"
run tensor info "$T/lin.st.gz"
check "keeps them" grep -q 'zm.classes = \["high","low","mid"\]' "$T/out"

# Roles given by hand.
run zoo-add --zoo "$R" --name b --role boss --arch "$T/arch.yaml"
expect_rc 2 "zoo-add --role: an unknown role is a usage error"
check "and adds nothing" sh -c "! grep -q 'name: b$' '$R/zoo.yaml'"
run zoo-add --zoo "$R" --name b --role base --arch "$T/arch.yaml" --seed 9
expect_rc 0 "zoo-add --role base"
run tensor info "$R/models/b/v1.safetensors.gz"
check "the file says zm.role = base" grep -q 'zm.role = base' "$T/out"
run zoo-ls --zoo "$R"
check "zoo-ls shows it" awk '$1 == "b" && $8 == "base" { f = 1 } END { exit !f }' "$T/out"
run predict --zoo "$R" --from csv --label label --weighting uniform --trace "$T/tr.csv" "$T/test.csv"
expect_rc 0 "predict over the whole zoo with a base"
check "takes the three experts only" sh -c "test \"\$(tail -n +2 '$T/tr.csv' | cut -d, -f3 | sort -u | tr '\n' ' ')\" = 'e-high e-low e-mid '"
run zoo-add --zoo "$R" --rollback b --role expert
expect_rc 2 "--rollback takes no --role"

# A model that names no classes (created from an architecture and never
# trained, as models written before zoomerge kept names): position, once.
zoo-add --zoo "$Z" --name fresh --arch "$T/arch.yaml" --seed 5 2>/dev/null
run predict --zoo "$Z" --model fresh --from csv --label label --batch-size 100 "$T/test.csv"
expect_rc 0 "a model without names still predicts"
check "with one warning about position matching" \
	test "$(grep -c "model 'fresh' records no class or column names.*matched by position" "$T/err")" -eq 1
check "and ids in its output" sh -c "head -1 '$T/out' | grep -qx 'id,pred,p_0,p_1,p_2'"

# Stream output names the classes of pred.
run predict --zoo "$Z" --model m --from csv --label label --output stream -o "$T/p.st.gz" "$T/test.csv"
run tensor info "$T/p.st.gz"
check "stream output: zm.classes names pred's ids" grep -q 'zm.classes = \["high","low","mid"\]' "$T/out"

# A class name that needs CSV quoting stays one field.
sed 's/,mid$/,"mid, or so"/' "$T/train.csv" >"$T/q.csv"
tensor import --from csv --label label -o "$T/q.st.gz" "$T/q.csv"
zoo-add --zoo "$Z" --name q --arch "$T/arch.yaml" --seed 1 2>/dev/null
train-step --zoo "$Z" --model q --epochs 1 --apply --quiet "$T/q.st.gz"
run predict --zoo "$Z" --model q "$T/q.st.gz"
check "a quoted class name in the header" sh -c "head -1 '$T/out' | grep -qx 'id,pred,p_high,p_low,\"p_mid, or so\"'"
run merge --method linear -o "$T/lin2.st.gz" "$Z/models/m/v3.safetensors.gz" "$Z/models/q/v2.safetensors.gz"
expect_rc 1 "a static merge of models with other classes is refused"
expect_err "zm.classes .* differ from the model's" "saying the classes differ"
check "and writes nothing" test ! -e "$T/lin2.st.gz"

# The nightly retraining: each night a CSV file is imported, the model is
# trained on it and applied, and the fixed test file is predicted.  Night
# 2 lacks class high, night 3 has its columns in another order, and the
# zoo holds a router.  Nothing may change results silently: every night
# the metrics equal the predictions' own accuracy, and predicting night
# 3's file in the model's order gives the same answers.
N=$T/nightly
zoo-add --zoo "$N" --name m --arch "$T/arch.yaml" --seed 7 2>/dev/null
zoo-add --zoo "$N" --name router --role router --arch "$T/router.yaml" --seed 2 2>/dev/null
gen "$T/n1.csv" 900 11 012
gen "$T/n2.csv" 400 12 01
gen "$T/n3o.csv" 400 13 012
awk -F, -v OFS=, '{ print $4, $5, $3, $1, $2 }' "$T/n3o.csv" >"$T/n3.csv"
ok=1
for night in 1 2 3; do
	tensor import --from csv --label label -o "$T/n$night.st.gz" "$T/n$night.csv" 2>"$T/err" || ok=0
	train-step --zoo "$N" --model m --epochs 5 --lr 0.05 --apply --quiet "$T/n$night.st.gz" 2>>"$T/err" || ok=0
	predict --zoo "$N" --from csv --label label --metrics "$T/nm$night.yaml" "$T/test.csv" >"$T/np$night.csv" 2>>"$T/err" || ok=0
	echo "night $night: accuracy $(metric accuracy "$T/nm$night.yaml") own $(accuracy "$T/np$night.csv" "$T/test.csv")" >>"$T/nightly.log"
done
check "nightly: every night runs" test "$ok" -eq 1
check "nightly: the metrics are the predictions' accuracy every night" \
	awk '$4 != $6 { exit 1 }' "$T/nightly.log"
check "nightly: no night loses accuracy (the day without high included)" \
	awk '{ a[NR] = $4 } END { exit !(a[1] > 0.7 && a[2] > a[1] - 0.15 && a[3] > a[1] - 0.15) }' "$T/nightly.log"
run predict --zoo "$N" --model m --from csv --label label "$T/n3.csv"
cp "$T/out" "$T/n3p.csv"
run predict --zoo "$N" --model m --from csv --label label "$T/n3o.csv"
check "nightly: night 3 predicted in either column order is the same" cmp -s "$T/out" "$T/n3p.csv"
run zoo-ls --zoo "$N"
check "nightly: the router is listed as one" awk '$1 == "router" && $8 == "router" { f = 1 } END { exit !f }' "$T/out"
check "nightly: and untouched by the nights" awk '$1 == "router" && $2 == 1 { f = 1 } END { exit !f }' "$T/out"
# Night 4 arrives cut short (a .csv.gz that lost its second half): the
# import and the training refuse it, and the zoo stays as night 3 left it.
gen "$T/n4.csv" 900 14 012
gzip -c "$T/n4.csv" >"$T/n4full.csv.gz"
head -c $(($(wc -c <"$T/n4full.csv.gz") / 2)) "$T/n4full.csv.gz" >"$T/n4.csv.gz"
cp "$N/zoo.yaml" "$T/nightly-index.before"
run tensor import --from csv --label label -o "$T/n4.st.gz" "$T/n4.csv.gz"
expect_rc 1 "nightly: a truncated night is refused by tensor import"
expect_err "truncated" "as truncated"
check "nightly: and nothing is written" test ! -e "$T/n4.st.gz"
tensor import --from csv --label label -o "$T/n4full.st.gz" "$T/n4.csv"
head -c $(($(wc -c <"$T/n4full.st.gz") / 2)) "$T/n4full.st.gz" >"$T/n4cut.st.gz"
run train-step --zoo "$N" --model m --epochs 5 --lr 0.05 --apply --quiet "$T/n4cut.st.gz"
expect_rc 1 "nightly: train-step --apply refuses the truncated night"
expect_err "truncated" "as truncated"
check "nightly: the zoo is as night 3 left it" cmp "$N/zoo.yaml" "$T/nightly-index.before"
sed "s/^/# /" "$T/nightly.log"
finish
