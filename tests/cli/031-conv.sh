#!/bin/sh
# Convolutional models end to end: zoo-add from a conv arch, train-step
# (weights of the PyTorch shape [out_c, in_c, kh, kw]), predict with one
# model and with two at every granularity and merge kind, static merges,
# update merging under granctl's decision, and (when /usr/bin/python3 has
# torch) the same nn.Sequential in PyTorch giving the same logits.
. "$(dirname "$0")/lib.sh"

# 8x8 one-channel images of 3 classes: a bright bar in the top, middle or
# bottom rows, plus noise.
awk 'BEGIN { srand(3); for (j = 0; j < 64; j++) printf "p%d,", j; print "label";
	for (i = 0; i < 240; i++) { c = i % 3; line = "";
		for (j = 0; j < 64; j++) { r = int(j / 8);
			v = rand() * 0.4 + (int(r / 3) == c ? 0.6 : 0)
			line = line sprintf("%.4f,", v) }
		print line c } }' >"$T/img.csv"
tensor import --from csv --label label -o "$T/img.st.gz" "$T/img.csv"
awk -F, 'NR == 1 || NR % 2 == 0' "$T/img.csv" >"$T/half.csv"
tensor import --from csv --label label -o "$T/half.st.gz" "$T/half.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [1, 8, 8]
layers:
  - {name: c1, type: conv2d, filters: 4, kernel: 3, padding: same, activation: relu}
  - {name: p1, type: maxpool2d, size: 2}
  - {name: c2, type: conv2d, filters: 6, kernel: [3, 2], stride: [1, 2], activation: tanh}
  - {name: f, type: flatten}
  - {name: out, units: 3}
YAML
Z=$T/z
# One initialisation, so that their layers can be merged (lineage).
for m in m0 m1; do
	zoo-add --zoo "$Z" --name $m --arch "$T/arch.yaml" --seed 1 2>/dev/null
done
run train-step --zoo "$Z" --model m0 --epochs 15 --lr 0.01 --optimizer adam \
	--val-fraction 0 --apply --quiet --log "$T/log0" "$T/img.st.gz"
expect_rc 0 "train-step trains a conv model"
run train-step --zoo "$Z" --model m1 --epochs 3 --lr 0.05 --apply --quiet \
	--val-fraction 0 "$T/half.st.gz"
expect_rc 0 "train-step with SGD on a conv model"
M0=$(sed -n 's/^ *file: //p' "$Z/zoo.yaml" | head -1)
run tensor info "$Z/$M0"
check "conv weight in PyTorch layout" grep -Eq 'c2.weight F32 \[6, 4, 3, 2\]' "$T/out"
check "per-channel profile of a conv input" grep -Eq 'profile.c2.mean F(32|64) \[4\]' "$T/out"

run predict --zoo "$Z" --model m0 --metrics "$T/m.yaml" "$T/img.st.gz"
expect_rc 0 "predict with one conv model"
check "the trained conv model learned the bars" awk -F': ' \
	'$1 == "accuracy" { exit !($2 >= 0.9) }' "$T/m.yaml"
for g in full group layer; do
	for mg in outputs params; do
		run predict --zoo "$Z" --model m0 --model m1 --granularity $g \
			--merge $mg --per batch "$T/img.st.gz"
		expect_rc 0 "predict two conv models, $g, merge $mg"
	done
	run predict --zoo "$Z" --model m0 --model m1 --granularity $g \
		--merge outputs --per row --merge-point post "$T/img.st.gz"
	expect_rc 0 "predict two conv models, $g, per row, post"
done
check "predictions for every row" sh -c "[ \$(wc -l <'$T/out') -eq 241 ]"

for meth in linear task-arithmetic ties dare slerp; do
	base=
	[ $meth = linear ] || [ $meth = slerp ] || base="--base m0"
	run merge --zoo "$Z" --method $meth $base -o "$T/$meth.st.gz" m0 m1
	expect_rc 0 "merge --method $meth of conv models"
done
run zoo-add --zoo "$Z" --name lin "$T/linear.st.gz"
run predict --zoo "$Z" --model lin "$T/img.st.gz"
expect_rc 0 "a merged conv model predicts"

run train-step --zoo "$Z" --model m0 --epochs 1 --lr 0.01 --quiet \
	--val-fraction 0 -o "$T/u0.st.gz" --log "$T/l0" "$T/img.st.gz"
expect_rc 0 "update stream of a conv model"
run train-step --zoo "$Z" --model m1 --epochs 1 --lr 0.01 --quiet \
	--val-fraction 0 -o "$T/u1.st.gz" --log "$T/l1" "$T/half.st.gz"
run granctl --zoo "$Z" --updates "$T/u0.st.gz" --updates "$T/u1.st.gz"
expect_rc 0 "granctl on conv updates"
cp "$T/out" "$T/gran.yaml"
check "granctl's units are the conv and dense groups or layers" \
	grep -Eq 'unit: (conv|dense|c1|c2|out|model)' "$T/gran.yaml"
run merge --zoo "$Z" --granularity-from "$T/gran.yaml" "$T/u0.st.gz" "$T/u1.st.gz"
expect_rc 0 "merge applies conv updates under granctl's decision"

# PyTorch: the same network from the saved file gives the same logits.
PY=/usr/bin/python3
if [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; then
	M0=$(sed -n 's/^ *file: //p' "$Z/zoo.yaml" | head -1)
	awk -F, 'NR > 1 && NR <= 41' "$T/img.csv" >"$T/x40.csv"
	run predict --zoo "$Z" --model m0 --output csv "$T/img.st.gz"
	head -41 "$T/out" >"$T/ours.csv"
	cat >"$T/cmp.py" <<'PY'
import gzip, json, struct, sys
import torch
raw = gzip.open(sys.argv[1]).read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
def t(name):
    e = hdr[name]; a, b = e["data_offsets"]
    return torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(e["shape"])
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 4, 3, padding="same"), torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(4, 6, (3, 2), stride=(1, 2)), torch.nn.Tanh(),
    torch.nn.Flatten(), torch.nn.Linear(24, 3))
sd = {"0.weight": t("c1.weight"), "0.bias": t("c1.bias"),
      "3.weight": t("c2.weight"), "3.bias": t("c2.bias"),
      "6.weight": t("out.weight"), "6.bias": t("out.bias")}
net.load_state_dict(sd)
rows = [list(map(float, l.split(",")[:64])) for l in open(sys.argv[2])]
x = torch.tensor(rows).reshape(-1, 1, 8, 8)
p = torch.softmax(net(x), 1).detach()
ours = [l.strip().split(",") for l in open(sys.argv[3])][1:]
worst = max(abs(float(r[2 + j]) - float(p[i, j])) for i, r in enumerate(ours) for j in range(3))
print("max |p - p_torch| =", worst)
sys.exit(0 if worst < 1e-4 else 1)
PY
	check "PyTorch loads the conv model and agrees within 1e-4" \
		"$PY" "$T/cmp.py" "$Z/$M0" "$T/x40.csv" "$T/ours.csv"
else
	echo "# skipped: the PyTorch comparison ($PY has no torch)"
fi
finish
