#!/bin/sh
# granctl: decisions from real train-step logs and updates, --explain, rules
# with line:col errors, the latency budget coarsening a measured level, and
# the round trip granctl -> merge applying exactly the decision.
. "$(dirname "$0")/lib.sh"

# A small separable problem (as in 030): class = the largest of 4 features.
separable_csv "$T/data.csv" 600 7
tensor import --from csv --label label -o "$T/data.safetensors.gz" "$T/data.csv"
# One slice holding every row, so the updates carry zm.slice and merge
# groups the two models that trained on it.
printf 'slices:\n  - {name: all, default: true}\n' >"$T/slices.yaml"
slice --rules "$T/slices.yaml" --out-dir "$T/slices" "$T/data.safetensors.gz" >/dev/null
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh, group: features}
  - {name: mid, units: 8, activation: tanh, group: features}
  - {name: out, units: 4, group: head}
YAML
Z=$T/zoo
zoo-add --zoo "$Z" --name m1 --arch "$T/arch.yaml" --seed 3 2>/dev/null
# m2 is a copy of m1: units are shared only between related models.
zoo-add --zoo "$Z" --name m2 --base m1 "$Z/models/m1/v1.safetensors.gz" 2>/dev/null
cat >"$T/assignment.yaml" <<'YAML'
metric: cosine
temperature: 1.0
slices:
  - slice: all
    file: slices/all.safetensors.gz
    models: [{model: m1, weight: 0.6}, {model: m2, weight: 0.4}]
    similarity: {m1: 0.9, m2: 0.8}
YAML
train-step --zoo "$Z" --assignment "$T/assignment.yaml" --epochs 4 --lr 0.1 \
	--seed 1 --log-every 5 --log "$T/log.jsonl" -o "$T/u.safetensors.gz" \
	--quiet "$T/slices/all.safetensors.gz"

run granctl --help
expect_rc 0 "--help"
check "the usage names the synopsis" grep -q 'granctl --zoo DIR' "$T/out"
run granctl --version
expect_rc 0 "--version"

run granctl --zoo "$Z" --updates "$T/u.safetensors.gz" --log "$T/log.jsonl" \
	--explain -o "$T/d.yaml"
expect_rc 0 "a decision from real updates and logs"
check "the decision has a level" grep -Eq '^level: (full|group|layer)$' "$T/d.yaml"
check "and a reason" grep -q '^reason:' "$T/d.yaml"
check "every unit has a reason" test "$(grep -c 'unit:' "$T/d.yaml")" -eq "$(grep -c 'reason:' "$T/d.yaml" | awk '{print $1 - 1}')"
check "--explain with -o prints the table on stdout" grep -q '^loss_slope  *-\{0,1\}[0-9]' "$T/out"
check "with the validation gap and epochs from the log" sh -c "grep -q '^val_gap  *-\{0,1\}[0-9]' '$T/out' && grep -q '^epochs  *4$' '$T/out'"
check "agreement from updates of a common slice" grep -q 'updates of a common slice' "$T/out"
check "two models, two updates, one slice" sh -c "grep -q '^models  *2$' '$T/out' && grep -q '^updates  *2$' '$T/out' && grep -q '^slices  *1$' '$T/out'"

# The loss slope, recomputed with awk from the log (last 20 points of
# each model, least squares over (step, loss), over the mean; mean of
# the models) must match granctl's.
want=$(awk -F'[:,}]' '{
	for (i = 1; i < NF; i++) {
		if ($i ~ /"model"/) m = $(i + 1);
		if ($i ~ /"step"/) s = $(i + 1);
		if ($i ~ /"loss"$/) l = $(i + 1);
	}
	n[m]++; S[m, n[m]] = s; L[m, n[m]] = l;
} END {
	tot = 0; k = 0;
	for (m in n) {
		c = n[m] < 20 ? n[m] : 20; mx = my = 0;
		for (i = n[m] - c + 1; i <= n[m]; i++) { mx += S[m, i]; my += L[m, i]; }
		mx /= c; my /= c; sxy = sxx = 0;
		for (i = n[m] - c + 1; i <= n[m]; i++) {
			sxy += (S[m, i] - mx) * (L[m, i] - my); sxx += (S[m, i] - mx) ^ 2;
		}
		tot += sxy / sxx / my; k++;
	}
	printf "%.6g\n", tot / k;
}' "$T/log.jsonl")
got=$(awk '$1 == "loss_slope" { print $2 }' "$T/out")
check "loss_slope matches an awk least-squares fit ($got vs $want)" \
	awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; exit !(d <= 1e-4 * s + 1e-12) }'

run granctl --zoo "$Z" --updates "$T/u.safetensors.gz" --explain
expect_rc 0 "without -o"
check "the decision goes to stdout" grep -q '^level:' "$T/out"
check "and the table to stderr" grep -q '^agreement ' "$T/err"

# Rules: a rule chooses the layer level; the share rule's threshold sits
# between the two layers' agreements, so one is shared and one is not.
cat >"$T/probe.yaml" <<'YAML'
rules:
  - {when: {metric: updates, op: ">=", value: 2}, level: layer}
default: full
YAML
run granctl --zoo "$Z" --updates "$T/u.safetensors.gz" --rules "$T/probe.yaml" --explain -o "$T/probe-d.yaml"
expect_rc 0 "rules"
check "the first matching rule decides the level" grep -q '^level: layer$' "$T/probe-d.yaml"
check "and is named in the reason" grep -q 'rule 1 (line 2): updates >= 2' "$T/probe-d.yaml"
awk '$2 == "yes" || $2 == "no" { print $1, $3 }' "$T/out" >"$T/layer-agreement"
mid=$(sort -k2 -g "$T/layer-agreement" | awk 'NR == 1 { lo = $2 } { hi = $2 } END { printf "%.9g\n", (lo + hi) / 2 }')
check "the layers' agreements differ ($(tr '\n' ' ' <"$T/layer-agreement"))" \
	awk -v f="$T/layer-agreement" 'BEGIN { while ((getline l < f) > 0) { split(l, a, " "); v[++n] = a[2] } exit !(v[1] != v[2] || v[2] != v[3]) }'
cat >"$T/rules.yaml" <<YAML
rules:
  - {when: {any: [{metric: drift, op: ">", value: 100}, {metric: updates, op: ">=", value: 2}]}, level: layer}
default: full
share: {metric: agreement, op: ">=", value: $mid}
YAML
run granctl --zoo "$Z" --updates "$T/u.safetensors.gz" --rules "$T/rules.yaml" -o "$T/mixed.yaml"
expect_rc 0 "a share rule"
check "some units are shared" grep -q 'shared: true' "$T/mixed.yaml"
check "and some are not" grep -q 'shared: false' "$T/mixed.yaml"

# Round trip: merge applies exactly that decision.  The new parameters
# must be old + the w*samples-weighted mean of the two models' deltas on
# shared layers and old + the model's own delta elsewhere.
cp -r "$Z" "$T/zoo-before"
run merge --zoo "$Z" --granularity-from "$T/mixed.yaml" "$T/u.safetensors.gz"
expect_rc 0 "merge --granularity-from the decision"
cat >"$T/check.py" <<'PY'
import gzip, json, struct, sys
def docs(path):
    b = gzip.open(path).read(); out = []; p = 0
    while p < len(b):
        n = struct.unpack('<Q', b[p:p + 8])[0]; h = json.loads(b[p + 8:p + 8 + n]); base = p + 8 + n
        meta = h.pop('__metadata__', {}); t = {}; end = base
        for k, v in h.items():
            s, e = v['data_offsets']; end = max(end, base + e)
            if v['dtype'] == 'F32':
                t[k] = struct.unpack('<%df' % ((e - s) // 4), b[base + s:base + e])
        out.append((meta, t)); p = end
    return out
dec, zoo0, zoo1, upd = sys.argv[1:5]
shared = {}
for line in open(dec):
    line = line.strip()
    if line.startswith('- {unit:') or line.startswith('- unit:'):
        name = line.split('unit:')[1].split(',')[0].strip()
        shared[name] = 'shared: true' in line
ups = docs(upd)
c = {m['zm.name']: float(m['zm.weight']) * float(m['zm.samples']) for m, _ in ups}
delta = {m['zm.name']: t for m, t in ups}
worst = 0.0; checked = 0
for model in ('m1', 'm2'):
    old = docs('%s/models/%s/v1.safetensors.gz' % (zoo0, model))[0][1]
    new = docs('%s/models/%s/v2.safetensors.gz' % (zoo1, model))[0][1]
    for layer, sh in shared.items():
        for kind in ('weight', 'bias'):
            k = '%s.%s' % (layer, kind)
            for i in range(len(old[k])):
                if sh:
                    d = (c['m1'] * delta['m1'][k][i] + c['m2'] * delta['m2'][k][i]) / (c['m1'] + c['m2'])
                else:
                    d = delta[model][k][i]
                worst = max(worst, abs(new[k][i] - (old[k][i] + d)) / (1e-3 + abs(d)))
                checked += 1
print('checked %d values, worst relative error %.3g' % (checked, worst))
sys.exit(0 if checked > 0 and worst < 1e-4 else 1)
PY
check "shared layers got the averaged delta, independent ones their own" \
	python3 "$T/check.py" "$T/mixed.yaml" "$T/zoo-before" "$Z" "$T/u.safetensors.gz"

# Errors.
run granctl --updates "$T/u.safetensors.gz"
expect_rc 2 "--zoo is required"
run granctl --zoo "$Z" --metric euclid
expect_rc 2 "an unknown metric"
run granctl --zoo "$Z" --measure
expect_rc 2 "--measure needs --data"
printf 'rules:\n  - {when: {metric: speed, op: ">", value: 1}, level: full}\n' >"$T/bad1.yaml"
run granctl --zoo "$Z" --rules "$T/bad1.yaml"
expect_rc 2 "a rule with an unknown metric"
expect_err "bad1.yaml:2:[0-9]+: unknown metric 'speed'" "names the line and column"
printf 'rules:\n  - {when: {metric: drift, op: "=>", value: 1}, level: full}\n' >"$T/bad2.yaml"
run granctl --zoo "$Z" --rules "$T/bad2.yaml"
expect_rc 2 "an unknown op"
expect_err "bad2.yaml:2:[0-9]+: unknown op '=>'" "names the line and column"
printf 'default: medium\n' >"$T/bad3.yaml"
run granctl --zoo "$Z" --rules "$T/bad3.yaml"
expect_rc 2 "a bad level"
expect_err "bad3.yaml:1:10: unknown level 'medium'" "at its line and column"
printf 'rules: []\nshare: {metric: agreement, op: ">=", value: 0.5, unit: fc1}\n' >"$T/bad4.yaml"
run granctl --zoo "$Z" --rules "$T/bad4.yaml"
expect_rc 2 "an unknown key"
expect_err "bad4.yaml:2:" "names its line"
run granctl --zoo "$Z" --updates "$T/data.safetensors.gz"
expect_rc 1 "a data stream is no update stream"
expect_err "not an update" "and says so"
run granctl --zoo "$Z" --updates "$T/nosuch.safetensors.gz"
expect_rc 1 "a missing update file"
printf '{"model":"m1","loss":\n' >"$T/bad.jsonl"
run granctl --zoo "$Z" --log "$T/bad.jsonl"
expect_rc 1 "a broken log line"
expect_err "bad.jsonl:1:" "names the line"
run granctl --zoo "$Z" --updates "$T/u.safetensors.gz" -o /dev/full
expect_rc 1 "writing to /dev/full fails loudly"

# Drift of a data sample to the models' profiles (the trained versions
# carry profiles of the data).
run granctl --zoo "$Z" --data "$T/data.safetensors.gz" --explain -o "$T/dd.yaml"
expect_rc 0 "--data"
check "gives a data drift" grep -q '^data_drift  *[0-9]' "$T/out"

# Budgets: a stand-in for predict whose cost grows with the level (it
# takes a second for the group and layer levels) shows the budget rule: the
# layer level the rules want is too slow, so the decision coarsens.
cat >"$T/fake-predict" <<'SH'
#!/bin/sh
level=full
while [ $# -gt 0 ]; do [ "$1" = --granularity ] && level=$2; shift; done
# A latency, not a synchronisation: group and layer take at least a
# second of wall time however fast or loaded the machine is, full almost
# nothing, so a budget of half a second separates them on any machine.
case $level in
full) exit 0 ;;
*) sleep 1 ;;
esac
SH
chmod +x "$T/fake-predict"
printf 'rules: []\ndefault: layer\n' >"$T/layer.yaml"
run granctl --zoo "$Z" --rules "$T/layer.yaml" --data "$T/data.safetensors.gz" \
	--measure --predict "$T/fake-predict" --explain -o "$T/b0.yaml"
expect_rc 0 "--measure without a budget"
check "measures every level" sh -c "grep -q '^latency_full_ms  *[0-9]' '$T/out' && grep -q '^latency_layer_ms  *[0-9]' '$T/out' && grep -q '^memory_layer_mib  *[0-9]' '$T/out'"
check "keeps the level" grep -q '^level: layer$' "$T/b0.yaml"
budget=500
run granctl --zoo "$Z" --rules "$T/layer.yaml" --data "$T/data.safetensors.gz" \
	--measure --predict "$T/fake-predict" --latency-budget-ms "$budget" -o "$T/b1.yaml"
expect_rc 0 "--latency-budget-ms $budget"
check "the level over budget is coarsened to full" grep -q '^level: full$' "$T/b1.yaml"
check "and the reason says why" grep -q 'latency budget' "$T/b1.yaml"
printf '#!/bin/sh\necho "predict: --granularity: not implemented yet" >&2\nexit 2\n' >"$T/bad-predict"
chmod +x "$T/bad-predict"
run granctl --zoo "$Z" --data "$T/data.safetensors.gz" --measure --predict "$T/bad-predict"
expect_rc 1 "a failing predict fails the measurement"
expect_err "full level: .*bad-predict exited with 2: predict: --granularity: not implemented" "quoting its error"

# The real predict, when it takes --granularity.
run granctl --zoo "$Z" --data "$T/data.safetensors.gz" --measure --explain -o "$T/real.yaml"
if [ "$rc" -eq 0 ]; then
	check "real predict measured at every level" grep -q '^latency_layer_ms  *[0-9]' "$T/out"
	run predict --zoo "$Z" --model m1 --model m2 --granularity-from "$T/mixed.yaml" \
		-o "$T/pred.csv" "$T/data.safetensors.gz"
	expect_rc 0 "predict --granularity-from the decision"
else
	expect_err "predict exited with" "predict without --granularity is reported (multi-model predict not there yet)"
fi

finish
