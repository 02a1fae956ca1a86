#!/bin/sh
# Layers with statistics (standardize, batchnorm) and without (clip,
# dropout) through the whole pipeline: standardize is fitted to the
# training rows (checked against numpy), train-step moves batchnorm's
# running statistics, and merge averages both like parameters at every
# granularity (full, group, layer), checked tensor by tensor against a
# numpy reference computed from the base model and the update streams.
# A tabular CSV with features on scales 1e-3 to 1e4 trains well only
# with the standardize layer.
. "$(dirname "$0")/lib.sh"

PY=
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done

# Features on scales 1e-3 .. 1e4 around offsets of 3 scales; the label is
# the largest of four linear scores of the unscaled features.
tabular_csv() { # FILE ROWS SEED
	awk -v n="$2" -v seed="$3" 'BEGIN {
		srand(seed);
		split("0.001 0.01 0.1 1 10 100 1000 10000", sc, " ");
		for (j = 1; j <= 8; j++) for (k = 1; k <= 4; k++)
			w[j, k] = rand() * 2 - 1;
		printf "f1"; for (j = 2; j <= 8; j++) printf ",f%d", j;
		print ",label";
		for (i = 0; i < n; i++) {
			line = "";
			for (j = 1; j <= 8; j++) {
				z[j] = (rand() + rand() + rand() - 1.5) * 2;
				line = line (j > 1 ? "," : "") \
				       sprintf("%.6g", (z[j] + 3) * sc[j]);
			}
			best = 1; bs = -1e9;
			for (k = 1; k <= 4; k++) {
				s = 0; for (j = 1; j <= 8; j++) s += w[j, k] * z[j];
				if (s > bs) { bs = s; best = k; }
			}
			print line "," substr("abcd", best, 1);
		}
	}' >"$1"
}
tabular_csv "$T/tab.csv" 2000 5
tensor import --from csv --label label -o "$T/tab.st.gz" "$T/tab.csv"

# ---- defaults on a tabular CSV ----

printf 'input: [8]\nlayers:\n  - {name: norm, type: standardize}\n  - {name: h, units: 32, activation: relu}\n  - {name: out, units: 4}\n' >"$T/std.yaml"
printf 'input: [8]\nlayers:\n  - {name: h, units: 32, activation: relu}\n  - {name: out, units: 4}\n' >"$T/plain.yaml"
Z=$T/tz
zoo-add --zoo "$Z" --name std --arch "$T/std.yaml" 2>/dev/null
zoo-add --zoo "$Z" --name plain --arch "$T/plain.yaml" 2>/dev/null
acc_of() { # MODEL: validation accuracy of its newest version
	tensor info "$Z/models/$1/v2.safetensors.gz" |
		sed -n 's/.*zm.metrics = .*"accuracy":\([0-9.e-]*\),.*/\1/p'
}
run train-step --zoo "$Z" --model std --epochs 10 --apply "$T/tab.st.gz"
expect_rc 0 "standardize -> dense -> dense trains"
run train-step --zoo "$Z" --model plain --epochs 10 --apply "$T/tab.st.gz"
expect_rc 0 "the same net without standardize trains"
a_std=$(acc_of std); a_plain=$(acc_of plain)
echo "# validation accuracy, 10 epochs: standardize $a_std, without $a_plain"
check "with standardize: accuracy above 0.85 ($a_std)" \
	awk -v a="$a_std" 'BEGIN { exit !(a > 0.85) }'
check "without it: at least 0.1 lower ($a_plain)" \
	awk -v a="$a_std" -v b="$a_plain" 'BEGIN { exit !(a - b > 0.1) }'
run tensor info "$Z/models/std/v2.safetensors.gz"
check "the fitted statistics are in the model" grep -q 'norm.weight F32 \[8\]' "$T/out"

# Layers with no parameters take part in predict's merged passes.
printf 'input: [8]\nlayers:\n  - {name: norm, type: standardize}\n  - {name: c, type: clip, min: -4, max: 4}\n  - {name: h, units: 16, activation: relu}\n  - {name: d, type: dropout, rate: 0.2}\n  - {name: out, units: 4}\n' >"$T/all.yaml"
for m in p q; do
	zoo-add --zoo "$T/pz" --name $m --arch "$T/all.yaml" --seed 4 2>/dev/null
	train-step --zoo "$T/pz" --model $m --epochs 3 --seed ${#m} --apply "$T/tab.st.gz" 2>/dev/null
done
for g in full group layer; do
	run predict --zoo "$T/pz" --granularity $g --label label --from csv -o "$T/p-$g.csv" "$T/tab.csv"
	expect_rc 0 "predict at granularity $g through clip and dropout"
done

# ---- a string source column as one_hot units (issue 21) ----

# Three sources, 20 features on scales 1e-3 .. 1e4, string labels: the
# class is the largest of four linear scores of the unscaled features
# plus an offset per source and a little noise.
source_csv() { # FILE ROWS SEED
	awk -v n="$2" -v seed="$3" 'BEGIN {
		srand(seed);
		split("north south west", src, " ");
		split("ant bee cat dog", cls, " ");
		for (j = 1; j <= 20; j++) {
			sc[j] = 10 ^ (-3 + 7 * (j - 1) / 19);
			for (k = 1; k <= 4; k++) w[j, k] = rand() * 2 - 1;
		}
		for (s = 1; s <= 3; s++) for (k = 1; k <= 4; k++)
			b[s, k] = (rand() * 2 - 1) * 3;
		printf "source"; for (j = 1; j <= 20; j++) printf ",f%d", j;
		print ",label";
		for (i = 0; i < n; i++) {
			s = 1 + int(rand() * 3);
			line = src[s];
			for (j = 1; j <= 20; j++) {
				z[j] = (rand() + rand() + rand() - 1.5) * 2;
				line = line sprintf(",%.6g", (z[j] + 3) * sc[j]);
			}
			best = 1; bs = -1e9;
			for (k = 1; k <= 4; k++) {
				t = b[s, k] + (rand() - 0.5);
				for (j = 1; j <= 20; j++) t += w[j, k] * z[j];
				if (t > bs) { bs = t; best = k; }
			}
			print line "," cls[best];
		}
	}' >"$1"
}
# 3000 rows to train on, the next 2000 to test.
source_csv "$T/src-all.csv" 5000 7
head -n 3001 "$T/src-all.csv" >"$T/src.csv"
{ head -n 1 "$T/src-all.csv"; tail -n 2000 "$T/src-all.csv"; } >"$T/src-test.csv"
tensor import --from csv --label label -o "$T/src.st.gz" "$T/src.csv"
# Not CSV import's (sorted) order of the levels: matched by name.
cat >"$T/src.yaml" <<'YAML'
input: [20]
layers:
  - {name: norm, type: standardize}
  - {name: src, type: one_hot, column: source, levels: [west, north, south]}
  - {name: h, units: 32, activation: relu}
  - {name: out, units: 4}
YAML
S=$T/sz
run zoo-add --zoo "$S" --name m --arch "$T/src.yaml" --seed 1
expect_rc 0 "zoo-add: standardize -> one_hot(source) -> dense -> dense"
run train-step --zoo "$S" --model m --apply "$T/src.st.gz"
expect_rc 0 "train-step trains it with the defaults"
run tensor info "$S/models/m/v2.safetensors.gz"
check "the model names its units after its features, in its level order" \
	grep -q '"f20","source=west","source=north","source=south"\]' "$T/out"
check "standardize covers the 23 inputs" grep -q 'norm.weight F32 \[23\]' "$T/out"
check "the training stopped by the rule on the held-out rows" grep -q '"epochs":"auto"' "$T/out"
# Test accuracy: the share of predicted classes equal to the labels.
test_acc() { # PREDICTIONS TRUTH
	awk -F, 'NR == FNR { if (FNR > 1) want[FNR - 1] = $NF; next }
		FNR > 1 { n++; ok += $2 == want[FNR - 1] }
		END { printf "%.4f\n", ok / n }' "$2" "$1"
}
run predict --zoo "$S" --model m --from csv -o "$T/src-p.csv" "$T/src-test.csv"
expect_rc 0 "predict on the test rows"
acc1h=$(test_acc "$T/src-p.csv" "$T/src-test.csv")
echo "# test accuracy with the defaults: $acc1h"
check "test accuracy above 0.9 ($acc1h; PyTorch reaches 0.94, below)" \
	awk -v a="$acc1h" 'BEGIN { exit !(a > 0.9) }'

# Rows of two sources only: the file's levels are [south, west], their
# codes 0 and 1 where the full file has 1 and 2.
awk -F, 'NR == 1 || $1 != "north"' "$T/src-test.csv" >"$T/src-sw.csv"
run predict --zoo "$S" --model m --from csv -o "$T/src-sw-p.csv" "$T/src-sw.csv"
expect_rc 0 "predict on rows whose levels come in another order"
awk -F, 'NR == FNR { if (FNR > 1) keep[FNR - 1] = $1 != "north"; next }
	FNR > 1 && keep[FNR - 1]' "$T/src-test.csv" "$T/src-p.csv" |
	cut -d, -f2- >"$T/src-sw-want"
check "the same predictions, bit for bit, as for those rows in the full file" \
	sh -c "tail -n +2 '$T/src-sw-p.csv' | cut -d, -f2- | cmp - '$T/src-sw-want'"

# A level the model never saw, and no source column at all.
awk -F, 'NR == 5 { sub(/^[a-z]+/, "east") } { print }' "$T/src-test.csv" >"$T/src-east.csv"
run predict --zoo "$S" --model m --from csv -o "$T/x.csv" "$T/src-east.csv"
expect_rc 1 "an unseen level is refused"
expect_err "row 3, column 'source': level 'east' is not one of the model's levels" \
	"the message names the row, the column and the level"
cut -d, -f2- "$T/src-test.csv" >"$T/src-nosrc.csv"
run predict --zoo "$S" --model m --from csv -o "$T/x.csv" "$T/src-nosrc.csv"
expect_rc 1 "data without the column is refused"
expect_err "no string column 'source'" "naming the column"
tensor import --from csv --label label -o "$T/src-east.st.gz" "$T/src-east.csv"
cp "$S/zoo.yaml" "$T/sz.before"
run train-step --zoo "$S" --model m --apply "$T/src-east.st.gz"
expect_rc 1 "train-step refuses an unseen level too"
expect_err "level 'east'" "naming it"
check "and leaves the zoo as it was" cmp "$S/zoo.yaml" "$T/sz.before"

# A value of 1e30 is refused with its line and column, not trained on.
awk -F, 'BEGIN { OFS = "," } NR == 3 { $8 = "1e30" } { print }' "$T/src.csv" >"$T/src-big.csv"
run tensor import --from csv --label label -o "$T/x.st.gz" "$T/src-big.csv"
expect_rc 1 "tensor import refuses 1e30"
expect_err "src-big.csv:3:.*(column 8|f7)" "naming its line and column"
run predict --zoo "$S" --model m --from csv -o "$T/x.csv" "$T/src-big.csv"
expect_rc 1 "predict refuses it as well"

# Merging: updates of models with the same levels merge at every
# granularity (one_hot has nothing to merge); other levels are refused.
for m in a b; do zoo-add --zoo "$T/sm" --name $m --arch "$T/src.yaml" --seed 3 2>/dev/null; done
awk 'NR == 1 || NR % 2' "$T/src.csv" >"$T/src-a.csv"
awk 'NR == 1 || NR % 2 == 0' "$T/src.csv" >"$T/src-b.csv"
for m in a b; do
	tensor import --from csv --label label -o "$T/src-$m.st.gz" "$T/src-$m.csv"
	train-step --zoo "$T/sm" --model $m --epochs 3 -o "$T/su-$m.gz" "$T/src-$m.st.gz" 2>/dev/null
done
for g in full group layer; do
	rm -rf "$T/smg"; cp -R "$T/sm" "$T/smg"
	run merge --zoo "$T/smg" --granularity $g "$T/su-a.gz" "$T/su-b.gz"
	expect_rc 0 "merge at granularity $g of one_hot models"
done
run predict --zoo "$T/smg" --from csv -o "$T/x.csv" "$T/src-test.csv"
expect_rc 0 "the merged models predict"
# Slices of one source each: their one-hot units are constant, so the
# data profiles have null directions; they must still be read back.
for m in west north; do
	zoo-add --zoo "$T/sw" --name $m --arch "$T/src.yaml" --seed 3 2>/dev/null
	awk -F, -v s=$m 'NR == 1 || $1 == s' "$T/src.csv" >"$T/src-$m.csv"
	tensor import --from csv --label label -o "$T/src-$m.st.gz" "$T/src-$m.csv"
	train-step --zoo "$T/sw" --model $m --epochs 2 -o "$T/sw-$m.gz" "$T/src-$m.st.gz" 2>/dev/null
done
run merge --zoo "$T/sw" --granularity layer "$T/sw-west.gz" "$T/sw-north.gz"
expect_rc 0 "merge of models trained on one source each (constant columns)"
sed 's/north, south/north, east/' "$T/src.yaml" >"$T/src-east.yaml"
zoo-add --zoo "$T/sx" --name a --arch "$T/src-east.yaml" --seed 3 2>/dev/null
sed 's/^south,/east,/' "$T/src.csv" >"$T/src-x.csv"
tensor import --from csv --label label -o "$T/src-x.st.gz" "$T/src-x.csv"
train-step --zoo "$T/sx" --model a --epochs 1 -o "$T/su-x.gz" "$T/src-x.st.gz" 2>/dev/null
rm -rf "$T/smg"; cp -R "$T/sm" "$T/smg"
run merge --zoo "$T/smg" --granularity full "$T/su-x.gz" "$T/su-b.gz"
expect_rc 1 "merge refuses an update whose one_hot levels differ"
expect_err "level 3 is 'south' vs 'east'|'east' vs 'south'" "naming the level"
zoo-add --zoo "$S" --name e --arch "$T/src-east.yaml" --seed 3 2>/dev/null
run predict --zoo "$S" --model m --model e --from csv -o "$T/x.csv" "$T/src-test.csv"
expect_rc 1 "predict refuses models whose levels differ"
expect_err "'south' vs 'east'" "naming the level"

if [ -z "$PY" ]; then
	echo "# skipped: the numpy references (no python3 with numpy)"
	finish
fi

# ---- merging standardize and batchnorm at every granularity ----

cat >"$T/ref.py" <<'PY'
import gzip, json, struct, sys
import numpy as np

DT = {'F32': np.float32, 'F64': np.float64, 'I64': np.int64, 'U8': np.uint8}

def docs(path):
    raw = open(path, 'rb').read()
    if raw[:2] == b'\x1f\x8b':
        raw = gzip.decompress(raw)
    out, pos = [], 0
    while pos < len(raw):
        n = struct.unpack('<Q', raw[pos:pos + 8])[0]
        hdr = json.loads(raw[pos + 8:pos + 8 + n])
        base = pos + 8 + n
        meta = hdr.pop('__metadata__', {})
        end = max([v['data_offsets'][1] for v in hdr.values()] + [0])
        t = {k: np.frombuffer(raw[base + v['data_offsets'][0]:
                                  base + v['data_offsets'][1]],
                              DT[v['dtype']]).reshape(v['shape'])
             for k, v in hdr.items()}
        out.append((t, meta))
        pos = base + end
    return out

def params(path):
    t, meta = docs(path)[0]
    layers = json.loads(meta['zm.arch'])['layers']
    names = [l['name'] + s for l in layers
             if l['type'] in ('dense', 'conv2d', 'standardize', 'batchnorm')
             for s in ('.weight', '.bias')]
    return {k: t[k].astype(np.float64) for k in names}, layers

def fitted(update, csv, labels):
    """The update of a new model holds the fitted statistics as its delta:
    the rows' mean and 1 / (population) std per feature."""
    d = np.loadtxt(csv, delimiter=',', skiprows=1, dtype=str)
    x = d[np.isin(d[:, -1], labels.split(','))][:, :-1].astype(np.float64)
    t, meta = docs(update)[0]
    assert int(meta['zm.samples']) == len(x), (meta['zm.samples'], len(x))
    for name, want in (('norm.weight', x.mean(0)),
                       ('norm.bias', 1 / x.std(0))):
        got = t[name].astype(np.float64)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6 * abs(want).max()), \
            (name, got, want)
    print('ok fitted', len(x), 'rows')

def merged(base, shared, models, updates):
    """models: a:MODEL.gz,..., updates: a:UPDATE.gz,...; shared: layer
    names whose deltas the models on slice lo average (the others keep
    their own), weighted by zm.weight x zm.samples."""
    b, layers = params(base)
    shared = set(shared.split(',')) if shared != '-' else set()
    ups = {}
    for u in updates.split(','):
        name, path = u.split(':')
        t, meta = docs(path)[0]
        c = float(meta.get('zm.weight', 1)) * float(meta['zm.samples'])
        ups[name] = ({k: t[k].astype(np.float64) for k in b}, c,
                     meta.get('zm.slice'))
    checked = 0
    for m in models.split(','):
        name, path = m.split(':')
        got, _ = params(path)
        mine, _, sl = ups[name]
        group = [n for n in ups if ups[n][2] == sl]
        for k in b:
            layer = k.rsplit('.', 1)[0]
            if layer in shared:
                c = sum(ups[n][1] for n in group)
                d = sum(ups[n][1] * ups[n][0][k] for n in group) / c
            else:
                d = mine[k]
            want = b[k] + d
            tol = 2e-6 * np.maximum(1, abs(want)) + 1e-6
            bad = np.abs(got[k] - want) > tol
            assert not bad.any(), (name, k, got[k][bad], want[bad])
            checked += 1
    print('ok', checked, 'tensors')

def predict(model, csv, out):
    """The model's forward pass in numpy on the CSV, inference mode."""
    p, layers = params(model)
    d = np.loadtxt(csv, delimiter=',', skiprows=1, dtype=str)
    h = d[:, :-1].astype(np.float64)
    for l in layers:
        w, bb = p.get(l['name'] + '.weight'), p.get(l['name'] + '.bias')
        if l['type'] == 'standardize':
            h = (h - w) * bb
        elif l['type'] == 'batchnorm':
            h = (h - w) / np.sqrt(bb + 1e-5)
        elif l['type'] == 'clip':
            h = np.clip(h, l['min'], l['max'])
        elif l['type'] == 'dense':
            h = h @ w.T + bb
            if l['activation'] == 'tanh':
                h = np.tanh(h)
            elif l['activation'] == 'relu':
                h = np.maximum(h, 0)
    e = np.exp(h - h.max(1, keepdims=True))
    pr = e / e.sum(1, keepdims=True)
    ours = np.genfromtxt(out, delimiter=',', names=True, dtype=None,
                         encoding=None)
    cols = [c for c in ours.dtype.names if c.startswith('p_')]
    got = np.stack([ours[c] for c in cols], 1).astype(np.float64)
    assert np.abs(got - pr).max() < 1e-4, np.abs(got - pr).max()
    print('ok predict', len(pr), 'rows, max diff', np.abs(got - pr).max())

if __name__ == '__main__':
    globals()[sys.argv[1]](*sys.argv[2:])
PY
py() { "$PY" "$T/ref.py" "$@"; }

cat >"$T/lo1.yaml" <<'YAML'
mode: partition
slices:
  - {name: lo, where: {label: [a, b]}}
  - {name: hi, default: true}
YAML
cat >"$T/lo2.yaml" <<'YAML'
mode: partition
slices:
  - {name: lo, where: {label: [a, b, c]}}
  - {name: hi, default: true}
YAML
slice --rules "$T/lo1.yaml" --out-dir "$T/s1" "$T/tab.st.gz" >/dev/null
slice --rules "$T/lo2.yaml" --out-dir "$T/s2" "$T/tab.st.gz" >/dev/null
cat >"$T/arch.yaml" <<'YAML'
input: [8]
layers:
  - {name: norm, type: standardize, group: prep}
  - {name: h, units: 12, activation: tanh, group: features}
  - {name: bn, type: batchnorm, group: features}
  - {name: d, type: dropout, rate: 0.1, group: features}
  - {name: out, units: 4, group: head}
YAML
M=$T/mz
for m in a b c; do zoo-add --zoo "$M" --name $m --arch "$T/arch.yaml" --seed 3 2>/dev/null; done
train() { # MODEL DATA SEED OUT
	train-step --zoo "$M" --model "$1" --epochs 2 --val-fraction 0 \
		--seed "$3" -o "$4" "$2" 2>/dev/null
}
train a "$T/s1/lo.safetensors.gz" 1 "$T/ua.gz"
train b "$T/s2/lo.safetensors.gz" 2 "$T/ub.gz"
train c "$T/s1/hi.safetensors.gz" 3 "$T/uc.gz"
check "a's update holds standardize fitted to its rows (numpy)" \
	py fitted "$T/ua.gz" "$T/tab.csv" a,b
check "b's too, on other rows" py fitted "$T/ub.gz" "$T/tab.csv" a,b,c
check "c's too" py fitted "$T/uc.gz" "$T/tab.csv" c,d
run tensor info "$T/ua.gz"
check "the update moved batchnorm's running statistics" grep -q 'bn.bias F32 \[12\]' "$T/out"
cp -R "$M" "$T/mz0"
BASE=$T/mz0/models/a/v1.safetensors.gz
U=a:$T/ua.gz,b:$T/ub.gz,c:$T/uc.gz
mods() { echo "a:$M/models/a/v2.safetensors.gz,b:$M/models/b/v2.safetensors.gz,c:$M/models/c/v2.safetensors.gz"; }

run merge --zoo "$M" --granularity full --share all "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
expect_rc 0 "merge at full granularity, everything shared"
check "full: every tensor as numpy averages it (standardize, batchnorm included)" \
	py merged "$BASE" norm,h,bn,out "$(mods)" "$U"

rm -rf "$M"; cp -R "$T/mz0" "$M"
run merge --zoo "$M" --granularity group --share groups=prep,features "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
expect_rc 0 "merge at group granularity, prep and features shared"
check "group: standardize and batchnorm averaged, out kept" \
	py merged "$BASE" norm,h,bn "$(mods)" "$U"

rm -rf "$M"; cp -R "$T/mz0" "$M"
run merge --zoo "$M" --granularity layer --share layers=norm,bn "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
expect_rc 0 "merge at layer granularity, norm and bn shared"
check "layer: only standardize and batchnorm averaged" \
	py merged "$BASE" norm,bn "$(mods)" "$U"

rm -rf "$M"; cp -R "$T/mz0" "$M"
run merge --zoo "$M" --granularity layer --share none "$T/ua.gz" "$T/ub.gz" "$T/uc.gz"
expect_rc 0 "merge sharing nothing"
check "none: every model keeps its own statistics" py merged "$BASE" - "$(mods)" "$U"
check "(the reference tells: norm shared is wrong here)" sh -c "! $PY $T/ref.py merged $BASE norm $(mods) $U 2>/dev/null"

# The merged model predicts as numpy's forward pass of its tensors
# (inference: batchnorm on running statistics, dropout the identity).
run predict --zoo "$M" --model a --label label --from csv -o "$T/pa.csv" "$T/tab.csv"
expect_rc 0 "predict with the merged model"
check "predict equals numpy's inference pass" py predict "$M/models/a/v2.safetensors.gz" "$T/tab.csv" "$T/pa.csv"

# ---- PyTorch: BatchNorm1d and Dropout in, and back out ----

if ! "$PY" -c 'import torch' 2>/dev/null; then
	echo "# skipped: the PyTorch round trip ($PY has no torch)"
	finish
fi
cat >"$T/pt_bn.py" <<'PY'
import json, struct, sys
import numpy as np, torch

def net():
    return torch.nn.Sequential(
        torch.nn.Linear(8, 12), torch.nn.Tanh(),
        torch.nn.BatchNorm1d(12, affine=False), torch.nn.Dropout(0.1),
        torch.nn.Linear(12, 4))

d, cmd = sys.argv[1], sys.argv[2]
raw = np.loadtxt(d + '/tab.csv', delimiter=',', skiprows=1, dtype=str)
x = raw[:, :8].astype(np.float32)
x = (x - x.mean(0)) / x.std(0)
if cmd == 'train':
    torch.manual_seed(0)
    y = torch.tensor(['abcd'.index(v) for v in raw[:, -1]])
    m, xs = net(), torch.tensor(x)
    opt = torch.optim.Adam(m.parameters(), 0.01)
    for ep in range(5):
        for i in range(0, len(xs), 100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xs[i:i + 100]),
                                              y[i:i + 100]).backward()
            opt.step()
    m.eval()
    np.savez(d + '/bn.npz', **{k: v.numpy() for k, v in m.state_dict().items()})
    np.savetxt(d + '/xs.csv', x, delimiter=',', comments='', fmt='%.9g',
               header=','.join('f%d' % i for i in range(1, 9)))
    with torch.no_grad():
        np.save(d + '/pt.npy', torch.softmax(m(torch.tensor(x)), 1).numpy())
elif cmd == 'compare':
    ours = np.genfromtxt(sys.argv[3], delimiter=',', names=True)
    got = np.stack([ours['p_%d' % i] for i in range(4)], 1)
    diff = np.abs(got - np.load(d + '/pt.npy')).max()
    assert diff < 1e-5, diff
    print('max difference', diff)
elif cmd == 'load':
    b = open(sys.argv[3], 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop('__metadata__', None)
    dt = {'F32': np.float32, 'I64': np.int64}
    sd = {k: torch.tensor(np.frombuffer(
              b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]],
              dt[v['dtype']]).reshape(v['shape']).copy())
          for k, v in hdr.items()}
    net().load_state_dict(sd, strict=True)
PY
printf 'input: [8]\nlayers:\n  - {name: h, units: 12, activation: tanh}\n  - {name: bn, type: batchnorm}\n  - {name: d, type: dropout, rate: 0.1}\n  - {name: out, units: 4}\n' >"$T/bn.yaml"
check "PyTorch trains an nn.Sequential with BatchNorm1d and Dropout" "$PY" "$T/pt_bn.py" "$T" train
run zoo-add --zoo "$T/ptz" --name bn --arch "$T/bn.yaml" "$T/bn.npz"
expect_rc 0 "zoo-add imports its state dict (running_mean, running_var)"
run predict --zoo "$T/ptz" --model bn --from csv -o "$T/bn-pred.csv" "$T/xs.csv"
expect_rc 0 "predict with the imported model"
check "it predicts as PyTorch in eval mode within 1e-5" "$PY" "$T/pt_bn.py" "$T" compare "$T/bn-pred.csv"
run tensor export --state-dict -o "$T/bn-back.safetensors" "$T/ptz/models/bn/v1.safetensors.gz"
expect_rc 0 "tensor export --state-dict"
check "PyTorch loads the export strictly" "$PY" "$T/pt_bn.py" "$T" load "$T/bn-back.safetensors"

# ---- accuracy against PyTorch on the source CSV ----
# The same network in PyTorch, given standardised features and the
# one-hot source, trained as its users do: Adam with its defaults,
# batches of 128, 10 % of the rows held out, stopping when their loss
# has not improved for 10 epochs and keeping the best epoch.  Five seeds
# on each side; zoomerge's mean must be within one point of PyTorch's
# (the seeds' spread on each side is about one point).
cat >"$T/pt_src.py" <<'PY'
import sys
import numpy as np, torch

def load(p):
    raw = np.loadtxt(p, delimiter=',', skiprows=1, dtype=str)
    src = np.array([['north', 'south', 'west'].index(v) for v in raw[:, 0]])
    y = np.array([['ant', 'bee', 'cat', 'dog'].index(v) for v in raw[:, -1]])
    return raw[:, 1:21].astype(np.float64), src, y

x, s, y = load(sys.argv[1])
xt, st, yt = load(sys.argv[2])
mu, sd = x.mean(0), x.std(0)
def feats(x, s):
    return torch.tensor(np.hstack([(x - mu) / sd, np.eye(3)[s]]),
                        dtype=torch.float32)
X, Y, XT, YT = feats(x, s), torch.tensor(y), feats(xt, st), torch.tensor(yt)
accs = []
for seed in range(1, 6):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    perm = rng.permutation(len(X))
    vi, ti = perm[:len(X) // 10], perm[len(X) // 10:]
    m = torch.nn.Sequential(torch.nn.Linear(23, 32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(m.parameters())
    best, since, state = float('inf'), 0, None
    for epoch in range(200):
        p = rng.permutation(ti)
        for i in range(0, len(p), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(X[p[i:i + 128]]),
                                              Y[p[i:i + 128]]).backward()
            opt.step()
        with torch.no_grad():
            vl = torch.nn.functional.cross_entropy(m(X[vi]), Y[vi]).item()
        if vl < best * (1 - 1e-4):
            best, since = vl, 0
            state = {k: v.clone() for k, v in m.state_dict().items()}
        else:
            since += 1
            if since >= 10:
                break
    m.load_state_dict(state)
    with torch.no_grad():
        accs.append((m(XT).argmax(1) == YT).float().mean().item())
print('%.4f %.4f %.4f' % (np.mean(accs), min(accs), max(accs)))
PY
if ! "$PY" -c 'import torch' 2>/dev/null; then
	echo "# skipped: the accuracy against PyTorch ($PY has no torch)"
	finish
fi
pt=$("$PY" "$T/pt_src.py" "$T/src.csv" "$T/src-test.csv")
ours=$(for seed in 1 2 3 4 5; do
	zoo-add --zoo "$T/seeds" --name s$seed --arch "$T/src.yaml" --seed $seed 2>/dev/null
	train-step --zoo "$T/seeds" --model s$seed --seed $seed --apply --quiet "$T/src.st.gz" 2>/dev/null
	predict --zoo "$T/seeds" --model s$seed --from csv -o "$T/seed-p.csv" "$T/src-test.csv" 2>/dev/null
	test_acc "$T/seed-p.csv" "$T/src-test.csv"
done | awk '{ s += $1; if (NR == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 }
	END { printf "%.4f %.4f %.4f\n", s / NR, lo, hi }')
echo "# test accuracy over 5 seeds (mean min max): zoomerge $ours, PyTorch $pt"
check "zoomerge's defaults within one point of PyTorch ($ours vs $pt)" \
	awk -v a="${ours%% *}" -v b="${pt%% *}" 'BEGIN { exit !(a >= b - 0.01) }'

finish
