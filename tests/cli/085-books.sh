#!/bin/sh
# The zoo's bookkeeping and lineage: rollback restores the version's own
# metrics and hparams, goes back to the version the current one was made
# from, and --to N; merge records its updates' hparams and ids; zoo-add
# gives a plain safetensors file the --arch it is given; granctl --measure
# runs the predict installed beside it and honours TMPDIR; models record
# their origin, zoo-ls --related reports pairs, and merge and granctl
# refuse to mix the units of unrelated models.
. "$(dirname "$0")/lib.sh"

# yaml_of MODEL KEY: the model's KEY line in zoo.yaml ("    metrics: {...}").
yaml_of() {
	awk -v m="$1" -v k="$2" '$1 == "-" && $2 == "name:" { cur = $3 }
		cur == m && $1 == k ":" { sub(/^ +/, ""); print }' "$Z/zoo.yaml"
}
# meta_of FILE KEY: a metadata value as tensor info prints it.
meta_of() {
	tensor info "$1" | awk -v k="$2" '$1 == k && $2 == "=" { sub(/^ *[^ ]+ = /, ""); print; exit }'
}

separable_csv "$T/data.csv" 400 5
tensor import --from csv --label label -o "$T/data.st.gz" "$T/data.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh, group: features}
  - {name: out, units: 4, group: head}
YAML
Z=$T/zoo

# ---- rollback restores the version's own metrics and hparams ----
zoo-add --zoo "$Z" --name m --arch "$T/arch.yaml" --seed 1 2>/dev/null
train-step --zoo "$Z" --model m --epochs 1 --lr 0.05 --seed 1 --apply --quiet "$T/data.st.gz"
train-step --zoo "$Z" --model m --epochs 4 --lr 0.2 --seed 2 --apply --quiet "$T/data.st.gz"
v2_loss=$(yaml_of m metrics)
run zoo-add --zoo "$Z" --rollback m
expect_rc 0 "rollback from v3"
check "the index points at v2" grep -q 'file: models/m/v2.safetensors.gz' "$Z/zoo.yaml"
want=$(meta_of "$Z/models/m/v2.safetensors.gz" zm.metrics | sed 's/.*"loss":\([^,}]*\).*/\1/')
got=$(yaml_of m metrics | sed 's/.*[{ ,]loss: \([^,}]*\).*/\1/')
check "v2's own loss is listed ($got, file $want), not v3's" test -n "$want" -a "$got" = "$want"
check "and v2's own hparams (lr 0.05, 1 epoch)" sh -c "grep -A12 'name: m\$' '$Z/zoo.yaml' | grep 'hparams:' | grep -q 'lr: 0.05.*epochs: 1,'"
run zoo-ls --zoo "$Z"
check "zoo-ls shows v2 with v2's loss" grep -Eq "^m +2 +3 .* $want " "$T/out"

# ---- rollback-then-apply, then rollback: back to the parent, not v3 ----
train-step --zoo "$Z" --model m --epochs 1 --lr 0.01 --seed 3 --apply --quiet "$T/data.st.gz"
check "the apply after a rollback is v4, made from v2" sh -c "tensor info '$Z/models/m/v4.safetensors.gz' | grep -q 'zm.parent = 2'"
run zoo-add --zoo "$Z" --rollback m
expect_rc 0 "rollback from v4"
expect_err "m rolled back to v2" "goes to v2, the version v4 was made from"
check "not to the abandoned v3" grep -q 'file: models/m/v2.safetensors.gz' "$Z/zoo.yaml"
run zoo-add --zoo "$Z" --rollback m --to 3
expect_rc 0 "--to 3"
check "the index points at v3" grep -q 'file: models/m/v3.safetensors.gz' "$Z/zoo.yaml"
check "with v3's hparams (lr 0.2)" sh -c "grep -A12 'name: m\$' '$Z/zoo.yaml' | grep 'hparams:' | grep -q 'lr: 0.2,'"
cp "$Z/zoo.yaml" "$T/zoo.before"
run zoo-add --zoo "$Z" --rollback m --to 9
expect_rc 1 "--to a version that is not retained"
expect_err "v9 is not retained \(retained: v1, v2, v3, v4\)" "says which are"
check "and leaves the index as it was" cmp -s "$Z/zoo.yaml" "$T/zoo.before"
run zoo-add --zoo "$Z" --rollback m --to 0
expect_rc 2 "--to 0 is a usage error"
run zoo-add --zoo "$Z" --name m --to 2 "$Z/models/m/v1.safetensors.gz"
expect_rc 2 "--to without --rollback is a usage error"

# ---- merge records the updates' hparams and ids ----
zoo-add --zoo "$Z" --name h --arch "$T/arch.yaml" --seed 1 --hparam lr=0.003 --hparam epochs=20 2>/dev/null
check "h starts with the old hparams" sh -c "grep -A12 'name: h\$' '$Z/zoo.yaml' | grep -q 'lr: 0.003'"
train-step --zoo "$Z" --model h --epochs 3 --lr 0.001 --seed 1 --quiet -o "$T/uh.st.gz" "$T/data.st.gz"
uid=$(meta_of "$T/uh.st.gz" zm.id)
check "train-step gives the update an id ($uid)" sh -c "echo '$uid' | grep -Eq '^[0-9a-f]{16}$'"
run merge --zoo "$Z" --quiet "$T/uh.st.gz"
expect_rc 0 "merge the update"
hp=$(meta_of "$Z/models/h/v2.safetensors.gz" zm.hparams)
check "v2's zm.hparams are the update's: lr 0.001, 3 epochs ($hp)" sh -c "echo '$hp' | grep -q '\"lr\":0.001' && echo '$hp' | grep -q '\"epochs\":3'"
check "not the model's old lr 0.003 and 20 epochs" sh -c "! echo '$hp' | grep -Eq '0.003|\"epochs\":20'"
check "and name the update" sh -c "echo '$hp' | grep -q '\"updates\":\"$uid\"'"
check "zoo.yaml says the same" sh -c "grep -A12 'name: h\$' '$Z/zoo.yaml' | grep 'hparams:' | grep -q 'lr: 0.001.*updates: \"*$uid'"

# ---- zoo-add --arch gives a plain safetensors file its architecture ----
if command -v python3 >/dev/null 2>&1; then
	python3 - "$Z/models/m/v2.safetensors.gz" "$T/plain.safetensors" <<'PY'
import gzip, json, struct, sys
raw = gzip.open(sys.argv[1]).read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
hdr.pop('__metadata__')
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + raw[8 + n:])
PY
	run zoo-add --zoo "$Z" --name plain "$T/plain.safetensors"
	expect_rc 1 "a plain safetensors file without --arch is refused"
	expect_err "give its architecture" "and the message says to give it"
	run zoo-add --zoo "$Z" --name plain --arch "$T/arch.yaml" "$T/plain.safetensors"
	expect_rc 0 "with --arch it is added"
	check "with that architecture" sh -c "tensor info '$Z/models/plain/v1.safetensors.gz' | grep -q 'zm.arch = .*\"hidden\"'"
	check "and the same weights" sh -c "predict --zoo '$Z' --model plain --quiet '$T/data.st.gz' >'$T/p1.csv' && predict --model-file '$Z/models/m/v2.safetensors.gz' --quiet '$T/data.st.gz' | cmp -s - '$T/p1.csv'"
	sed 's/units: 8/units: 6/' "$T/arch.yaml" >"$T/arch6.yaml"
	cp "$Z/zoo.yaml" "$T/zoo.before"
	run zoo-add --zoo "$Z" --name plain6 --arch "$T/arch6.yaml" "$T/plain.safetensors"
	expect_rc 1 "an architecture of other shapes is refused"
	expect_err "tensor 'hidden.weight' has shape \[8, 4\], layer 'hidden' needs \[6, 4\]" "naming the tensor and both shapes"
	check "and the zoo is as before" cmp -s "$Z/zoo.yaml" "$T/zoo.before"
	check "with no directory for the model" test ! -e "$Z/models/plain6"
	run zoo-add --zoo "$Z" --name m2b --arch "$T/arch6.yaml" "$Z/models/m/v2.safetensors.gz"
	expect_rc 1 "a zoomerge model with another zm.arch than --arch is refused"
	# A version of other shapes, then back: the parameter count follows.
	zoo-add --zoo "$Z" --name w --arch "$T/arch6.yaml" 2>/dev/null
	zoo-add --zoo "$Z" --name w "$Z/models/m/v2.safetensors.gz" 2>/dev/null
	check "params of the wider v2 (76)" test "$(yaml_of w params)" = "params: 76"
	zoo-add --zoo "$Z" --rollback w 2>/dev/null
	check "rollback restores v1's params (58)" test "$(yaml_of w params)" = "params: 58"
else
	echo "# python3 missing: plain safetensors checks skipped"
fi

# ---- granctl --measure: the predict beside it, and TMPDIR ----
mkdir "$T/inst" "$T/decoy"
cp "$BIN/granctl" "$T/inst/zm-granctl"
cp "$BIN/predict" "$T/inst/zm-predict"
printf '#!/bin/sh\necho "decoy predict ran" >&2\nexit 3\n' >"$T/decoy/predict"
chmod +x "$T/decoy/predict"
run env PATH="$T/decoy:/usr/bin:/bin" "$T/inst/zm-granctl" --zoo "$Z" --model m --measure --data "$T/data.st.gz" --explain -o "$T/measured.yaml"
expect_rc 0 "zm-granctl --measure runs zm-predict beside it, not predict from PATH"
check "and measured each level" grep -Eq '^latency_layer_ms +[0-9]' "$T/out"
rm "$T/inst/zm-predict"
run env PATH="$T/decoy:/usr/bin:/bin" "$T/inst/zm-granctl" --zoo "$Z" --model m --measure --data "$T/data.st.gz"
expect_rc 1 "without zm-predict beside it, it fails"
expect_err "no .*/inst/zm-predict beside granctl" "saying where it looked"
expect_err "give --predict PROGRAM" "and what to do"
run env TMPDIR="$T/no/such/dir" granctl --zoo "$Z" --model m --measure --data "$T/data.st.gz"
expect_rc 1 "--measure with a TMPDIR that does not exist fails"
expect_err "$T/no/such/dir/zm-granctl" "so its temporary file is under TMPDIR"
mkdir "$T/tmp"
run env TMPDIR="$T/tmp" granctl --zoo "$Z" --model m --measure --data "$T/data.st.gz"
expect_rc 0 "and works with one that does"
check "leaving nothing there" test "$(ls -A "$T/tmp" | wc -l)" -eq 0

# ---- lineage ----
L=$T/lzoo
Z=$L   # for yaml_of
zoo-add --zoo "$L" --name a --arch "$T/arch.yaml" --seed 1 2>/dev/null
zoo-add --zoo "$L" --name b --arch "$T/arch.yaml" --seed 2 2>/dev/null
zoo-add --zoo "$L" --name a2 --base a "$L/models/a/v1.safetensors.gz" 2>/dev/null
zoo-add --zoo "$L" --name anon "$L/models/a/v1.safetensors.gz" 2>/dev/null
zoo-add --zoo "$L" --name anonb "$L/models/b/v1.safetensors.gz" 2>/dev/null
oa=$(yaml_of a origin)
check "a created model records its origin ($oa)" sh -c "echo '$oa' | grep -Eq 'origin: \"?init:[0-9a-f]{16}'"
check "in its file too" sh -c "tensor info '$L/models/a/v1.safetensors.gz' | grep -Eq 'zm.origin = init:[0-9a-f]{16}'"
check "another seed, another origin" test "$(yaml_of b origin)" != "$oa"
check "--base gives the base's origin" test "$(yaml_of a2 origin)" = "$oa"
check "and records the base" sh -c "tensor info '$L/models/a2/v1.safetensors.gz' | grep -q 'zm.base = a@v1'"
check "an imported model has unknown lineage" test -z "$(yaml_of anon origin)"
zoo-add --zoo "$L" --name anon2 "$L/models/a2/v1.safetensors.gz" 2>/dev/null
check "whatever lineage its file records" sh -c "test -z \"\$(tensor info '$L/models/anon2/v1.safetensors.gz' | grep -E 'zm.(origin|base) =')\""
train-step --zoo "$L" --model a --epochs 2 --lr 0.1 --seed 1 --apply --quiet "$T/data.st.gz"
check "a new version keeps the origin" test "$(yaml_of a origin)" = "$oa"
run zoo-add --zoo "$L" --name claimed --base a "$L/models/b/v1.safetensors.gz"
expect_rc 0 "--base with weights that do not align with the base's"
expect_err "the weights do not align with a's .* at layer 'hidden'" "is recorded with a warning"
run zoo-add --zoo "$L" --name x --base nosuch "$L/models/a/v1.safetensors.gz"
expect_rc 1 "--base of a model not in the zoo"
expect_err "--base: .*no model named 'nosuch'" "is refused naming it"
run zoo-add --zoo "$L" --name x --base a --arch "$T/arch.yaml"
expect_rc 2 "--base without a model file is a usage error"

run zoo-ls --zoo "$L" --related
expect_rc 0 "zoo-ls --related"
check "a and a2 related by origin" grep -Eq '^a +a2 +related +origin ' "$T/out"
check "a and b unrelated by origin" grep -Eq '^a +b +unrelated +origin ' "$T/out"
check "a2 and anon (same weights, one origin unknown) related by alignment" grep -Eq '^a2 +anon +related +alignment +1\.0000 +hidden$' "$T/out"
check "anon and anonb unrelated by alignment" grep -Eq '^anon +anonb +unrelated +alignment ' "$T/out"
run zoo-ls --zoo "$L" --related --format yaml
expect_rc 2 "--related with --format yaml is a usage error"

# Static merges refuse unrelated models, naming the pair.
run merge --zoo "$L" --method linear -o "$T/soup.st.gz" a b
expect_rc 2 "merge --method linear of unrelated models is refused"
expect_err "models 'a' and 'b' are unrelated" "naming the pair"
expect_err "allow-unrelated" "and the way out"
check "nothing was written" test ! -e "$T/soup.st.gz"
run merge --zoo "$L" --method ties --base anon -o "$T/soup.st.gz" a2 anon
expect_rc 0 "models related by origin and by alignment merge"
run merge --zoo "$L" --method linear -o "$T/soup.st.gz" anon anonb
expect_rc 2 "unknown lineage and unaligned units are refused too"
expect_err "do not align: .* at layer 'hidden'" "with the alignment"
run merge --zoo "$L" --method linear --allow-unrelated -o "$T/soup.st.gz" a b
expect_rc 0 "--allow-unrelated merges them anyway"
check "and the result has no origin" sh -c "! tensor info '$T/soup.st.gz' | grep -q zm.origin"
run merge --zoo "$L" --method linear -o "$T/soup2.st.gz" a a2
oid=$(echo "$oa" | sed 's/.*\(init:[0-9a-f]*\).*/\1/')
check "a merge of one origin keeps it ($oid)" sh -c "tensor info '$T/soup2.st.gz' | grep -q 'zm.origin = $oid\$'"

# Updates on a common slice of unrelated models: no shared units.
printf 'mode: partition\nslices:\n  - {name: all, default: true}\n' >"$T/one.yaml"
slice --rules "$T/one.yaml" --out-dir "$T/slices" "$T/data.st.gz" >/dev/null
for m in a b; do
	train-step --zoo "$L" --model $m --epochs 1 --lr 0.1 --seed 1 --quiet -o "$T/u$m.st.gz" "$T/slices/all.safetensors.gz"
done
cp -r "$L" "$T/lzoo.before"
run merge --zoo "$L" --share all "$T/ua.st.gz" "$T/ub.st.gz"
expect_rc 2 "merge --zoo sharing units of unrelated models is refused"
expect_err "models '(a|b)' and '(a|b)' are unrelated" "naming the pair"
check "and the zoo is unchanged" diff -r "$L" "$T/lzoo.before"
run granctl --zoo "$L" --updates "$T/ua.st.gz" --updates "$T/ub.st.gz" --explain -o "$T/dec.yaml"
expect_rc 0 "granctl over unrelated models"
check "marks no unit shared" sh -c "! grep -q 'shared: true' '$T/dec.yaml' && grep -q 'shared: false' '$T/dec.yaml'"
check "and says why" grep -q "models 'a' and 'b' are unrelated by origin: never shared" "$T/dec.yaml"
check "--explain lists the lineage" grep -Eq "^a b: unrelated by origin; alignment per layer: hidden" "$T/out"
run merge --zoo "$L" --granularity-from "$T/dec.yaml" "$T/ua.st.gz" "$T/ub.st.gz"
expect_rc 0 "merge applies that decision"
run merge --zoo "$T/lzoo.before" --share all --allow-unrelated "$T/ua.st.gz" "$T/ub.st.gz"
expect_rc 0 "--allow-unrelated shares anyway"


# predict merges layers only across related models: for unrelated ones a
# merge it chose itself mixes the final outputs; an explicit --merge goes
# ahead after a warning.
train-step --zoo "$L" --model b --epochs 2 --lr 0.1 --seed 1 --apply --quiet "$T/data.st.gz"
run predict --zoo "$L" --model a --model b --granularity layer -o "$T/pl.csv" "$T/data.st.gz"
expect_rc 0 "predict --granularity layer over unrelated models"
expect_err "models 'a' and 'b' are unrelated \\(origin\\): their final outputs are mixed \\(--merge route\\)" "mixes their final outputs and says so"
run predict --zoo "$L" --model a --model b -o "$T/pd.csv" "$T/data.st.gz"
check "as the defaults at the full level do" cmp "$T/pl.csv" "$T/pd.csv"
check "without a word there" sh -c "! grep -q unrelated '$T/err'"
run predict --zoo "$L" --model a --model b --granularity layer --merge outputs -o "$T/po.csv" "$T/data.st.gz"
expect_rc 0 "an explicit --merge outputs over unrelated models"
expect_err "unrelated .*going ahead as --merge outputs asks" "goes ahead after a warning"
check "and merges their layers" sh -c "! cmp -s '$T/po.csv' '$T/pd.csv'"
run predict --zoo "$L" --model a --model a2 --granularity layer -o "$T/pr.csv" "$T/data.st.gz"
expect_rc 0 "predict --granularity layer over related models"
check "merges their layers without a warning" sh -c "! grep -q unrelated '$T/err'"

# Routing mixes the rows it is unsure of at the final outputs by default,
# for related and unrelated models alike, and says why; --route-mix layers
# mixes them as --merge outputs does.
train-step --zoo "$L" --model a2 --epochs 1 --lr 0.1 --seed 3 --apply --quiet "$T/data.st.gz"
run predict --zoo "$L" --model a --model a2 --explain -o "$T/rf.csv" "$T/data.st.gz"
expect_rc 0 "predict's defaults over related models"
check "--explain: final outputs, and why for related models" grep -Eq "mixed at their final outputs: the models are related .*, but mixing their layers was measured" "$T/out"
run predict --zoo "$L" --model a --model b --explain -o "$T/rfu.csv" "$T/data.st.gz"
check "and for unrelated ones" grep -Eq "mixed at their final outputs: models 'a' and 'b' are unrelated \\(by origin\\)" "$T/out"
run predict --zoo "$L" --model a --model a2 --route-mix final -o "$T/rf2.csv" "$T/data.st.gz"
check "--route-mix final is the default" cmp "$T/rf.csv" "$T/rf2.csv"
run predict --zoo "$L" --model a --model a2 --route-mix layers --threshold 1 --explain -o "$T/rl.csv" "$T/data.st.gz"
expect_rc 0 "--route-mix layers"
check "says so" grep -Eq "mixed layer by layer .*as asked \\(--route-mix layers\\)" "$T/out"
mixed=$(sed -n 's/.*), \([0-9]*\) mixed layer by layer$/\1/p' "$T/out")
run predict --zoo "$L" --model a --model a2 --weighting density --per row --merge outputs -o "$T/ro.csv" "$T/data.st.gz"
# Rows routed alone (weight 1) are the model alone, as under outputs with
# weights (1, 0); the others are the outputs merge: every probability the
# same up to float rounding.
check "equals --merge outputs on the same weights ($mixed rows mixed)" awk -F, '
	NR == FNR { for (i = 3; i <= NF; i++) v[FNR, i] = $i; next }
	FNR > 1 { for (i = 3; i <= NF; i++) { d = $i - v[FNR, i]; if (d < 0) d = -d; if (d > 1e-6) bad = 1 } }
	END { exit bad }' "$T/rl.csv" "$T/ro.csv"
check "and differs from final outputs" sh -c "! cmp -s '$T/rl.csv' '$T/rf.csv'"
# Specialists of one origin on two halves of the labels: some rows go to
# one model alone (weight exactly 1 at --threshold 1), the others are
# gathered and mixed layer by layer, each with its own weights.
printf 'mode: partition\nslices:\n  - {name: lo, where: {label: [0, 1]}}\n  - {name: hi, default: true}\n' >"$T/halves.yaml"
slice --rules "$T/halves.yaml" --out-dir "$T/halves" "$T/data.st.gz" >/dev/null
for h in lo hi; do
	zoo-add --zoo "$L" --name sp$h --base a "$L/models/a/v1.safetensors.gz" 2>/dev/null
	train-step --zoo "$L" --model sp$h --epochs 2 --lr 0.1 --seed 1 --apply --quiet "$T/halves/$h.safetensors.gz"
done
run predict --zoo "$L" --model splo --model sphi --route-mix layers --threshold 1 --explain -o "$T/sl.csv" "$T/data.st.gz"
alone=$(sed -n 's/^rows: \([0-9]*\) computed by one model alone.*/\1/p' "$T/out")
mixed=$(sed -n 's/.*), \([0-9]*\) mixed layer by layer$/\1/p' "$T/out")
check "specialists: $alone rows alone and $mixed mixed layer by layer" test "${alone:-0}" -gt 0 -a "${mixed:-0}" -gt 0
run predict --zoo "$L" --model splo --model sphi --weighting density --per row --merge outputs -o "$T/so.csv" "$T/data.st.gz"
check "equal to --merge outputs on the same weights" awk -F, '
	NR == FNR { for (i = 3; i <= NF; i++) v[FNR, i] = $i; next }
	FNR > 1 { for (i = 3; i <= NF; i++) { d = $i - v[FNR, i]; if (d < 0) d = -d; if (d > 1e-6) bad = 1 } }
	END { exit bad }' "$T/sl.csv" "$T/so.csv"
run predict --zoo "$L" --model a --model a2 --route-mix sideways "$T/data.st.gz"
expect_rc 2 "--route-mix sideways is a usage error"
run predict --zoo "$L" --model a --model a2 --merge outputs --route-mix layers "$T/data.st.gz"
expect_rc 2 "--route-mix without routing is a usage error, not ignored"
expect_err "route-mix.*the merge here is outputs" "saying which merge there is"

# ---- realignment (merge --align, zoo-add --align-to) ----
if command -v python3 >/dev/null 2>&1; then
	# permute IN OUT: OUT is IN (a model of arch.yaml) with its hidden
	# units in another order (out's columns, the profile of out's input
	# alike), as an imported file (no origin): the same function.
	permute() {
		python3 - "$1" "$2" <<'PY'
import gzip, json, struct, sys
P = [3, 0, 7, 1, 6, 2, 5, 4]
raw = gzip.open(sys.argv[1]).read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
def floats(name):
    a, b = hdr[name]['data_offsets']
    return list(struct.unpack('<%df' % ((b - a) // 4), data[a:b])), a
def put(name, vals):
    a, b = hdr[name]['data_offsets']
    data[a:b] = struct.pack('<%df' % len(vals), *vals)
w, _ = floats('hidden.weight')
put('hidden.weight', [w[P[j] * 4 + k] for j in range(8) for k in range(4)])
b, _ = floats('hidden.bias')
put('hidden.bias', [b[P[j]] for j in range(8)])
o, _ = floats('out.weight')
put('out.weight', [o[r * 8 + P[j]] for r in range(4) for j in range(8)])
for t in ('profile.out.mean', 'profile.out.var'):
    if t in hdr:
        v, _ = floats(t)
        put(t, [v[P[j]] for j in range(8)])
meta = hdr['__metadata__']
for k in ('zm.origin', 'zm.base'):
    meta.pop(k, None)
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
gzip.open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + bytes(data))
PY
	}
	fa=$L/$(yaml_of a file | sed 's/^file: //')
	va=$(echo "$fa" | sed 's/.*\/v\([0-9]*\)\.safetensors\.gz$/\1/')
	permute "$fa" "$T/pa.st.gz"
	predict --model-file "$fa" -o "$T/pa0.csv" "$T/data.st.gz" 2>/dev/null
	predict --model-file "$T/pa.st.gz" -o "$T/pa1.csv" "$T/data.st.gz" 2>/dev/null
	check "the permuted copy computes what a does" awk -F, '
		NR == FNR { for (i = 3; i <= NF; i++) v[FNR, i] = $i; next }
		FNR > 1 { for (i = 3; i <= NF; i++) { d = $i - v[FNR, i]; if (d < 0) d = -d; if (d > 1e-6) bad = 1 } }
		END { exit bad }' "$T/pa0.csv" "$T/pa1.csv"
	run merge --method linear -o "$T/m-al.st.gz" "$fa" "$T/pa.st.gz" --align
	expect_rc 0 "merge --align of a and its permuted copy"
	expect_err "realigned to .*: [1-9][0-9]* units moved, alignment .* -> 1\\.000" "realigns the copy, saying so"
	merge --method linear --quiet -o "$T/m-or.st.gz" "$fa" "$fa"
	predict --model-file "$T/m-al.st.gz" -o "$T/m-al.csv" "$T/data.st.gz" 2>/dev/null
	predict --model-file "$T/m-or.st.gz" -o "$T/m-or.csv" "$T/data.st.gz" 2>/dev/null
	check "equals the merge with the original" cmp "$T/m-al.csv" "$T/m-or.csv"
	check "leaving no temporary files" sh -c "! ls '${TMPDIR:-/tmp}' | grep -q '^zm-align\\.'"
	run merge --method linear --align --mergekit-config /dev/null -o "$T/x.st.gz"
	expect_rc 2 "--align with --mergekit-config is a usage error"
	tensor export --state-dict -o "$T/plain-a.safetensors" "$fa"
	run merge --method linear --align -o "$T/x.st.gz" "$T/plain-a.safetensors" "$T/plain-a.safetensors"
	expect_rc 1 "--align of plain checkpoints"
	expect_err "--align: .*plain-a.safetensors: no zm.arch" "says it needs zoomerge models"

	run zoo-add --zoo "$L" --name pa --align-to a "$T/pa.st.gz"
	expect_rc 0 "zoo-add --align-to"
	expect_err "pa realigned to a@v$va: [1-9][0-9]* units moved, alignment .* -> 1\\.000: related" "reports the realignment"
	check "records it" sh -c "tensor info '$L/models/pa/v1.safetensors.gz' | grep -q 'zm.aligned = a@v$va'"
	check "and stores a's weights" sh -c "predict --model-file '$L/models/pa/v1.safetensors.gz' '$T/data.st.gz' 2>/dev/null | cmp -s - '$T/pa0.csv'"
	run zoo-ls --zoo "$L" --related
	check "a and pa related by alignment 1" grep -Eq '^a +pa +related +alignment +1\.0000 ' "$T/out"
	run zoo-add --zoo "$L" --name ba --align-to a "$L/$(yaml_of b file | sed 's/^file: //')"
	expect_rc 0 "zoo-add --align-to of a model from another seed"
	expect_err "ba realigned to a@v$va: .*alignment (-?[0-9.]+) -> " "reports its alignment before and after"
	check "which rises ($(sed -n 's/.*alignment \(.*\): .*/\1/p' "$T/err"))" sh -c "sed -n 's/.*alignment \\(-*[0-9.]*\\) -> \\([0-9.]*\\).*/\\1 \\2/p' '$T/err' | awk '{ exit !(\$2 > \$1) }'"
	run zoo-add --zoo "$L" --name x --align-to a --base a "$T/pa.st.gz"
	expect_rc 2 "--align-to with --base is a usage error"
	run zoo-add --zoo "$L" --name x --align-to nosuch "$T/pa.st.gz"
	expect_rc 1 "--align-to a model not in the zoo"
	expect_err "--align-to: .*nosuch" "names it"
else
	echo "# python3 missing: realignment checks skipped"
fi

finish
