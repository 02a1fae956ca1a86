#!/bin/sh
# merge of plain safetensors checkpoints (no zm.arch, Hugging Face names),
# single files and shards with an index: BF16, F16 and F32 inputs merged by tensor name against a naive reference
# computed here in Python (struct and json only), the output's dtypes,
# names and metadata read back by that independent reader, plain and gzip
# outputs, tensors stored in another order, and every mismatch refused
# with a message naming the tensor.
. "$(dirname "$0")/lib.sh"

if ! command -v python3 >/dev/null 2>&1; then
	echo "# python3 not found: skipping"
	finish
	exit $?
fi

cat >"$T/st.py" <<'PY'
import gzip, json, math, random, struct, sys

def f32_to_bf16(x):
    # Round to nearest even on the bits, NaN kept a NaN.
    (u,) = struct.unpack('<I', struct.pack('<f', x))
    if (u & 0x7f800000) == 0x7f800000 and (u & 0x7fffff):
        return (u >> 16) | 0x40
    u += 0x7fff + ((u >> 16) & 1)
    return (u >> 16) & 0xffff

def bf16_to_float(h):
    return struct.unpack('<f', struct.pack('<I', h << 16))[0]

FMT = {'F32': ('f', 4), 'F16': ('e', 2), 'F64': ('d', 8), 'I64': ('q', 8)}

def decode(dtype, raw):
    if dtype == 'BF16':
        return [bf16_to_float(h) for h in struct.unpack('<%dH' % (len(raw) // 2), raw)]
    c, s = FMT[dtype]
    return list(struct.unpack('<%d%s' % (len(raw) // s, c), raw))

def encode(dtype, vals):
    if dtype == 'BF16':
        return struct.pack('<%dH' % len(vals), *[f32_to_bf16(v) for v in vals])
    c, _ = FMT[dtype]
    return struct.pack('<%d%s' % (len(vals), c), *vals)

def load(path):
    with open(path, 'rb') as f:
        data = f.read()
    if data[:2] == b'\x1f\x8b':
        data = gzip.decompress(data)
    (n,) = struct.unpack('<Q', data[:8])
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop('__metadata__', {})
    body = data[8 + n:]
    out = {}
    for name, t in hdr.items():
        a, b = t['data_offsets']
        out[name] = (t['dtype'], t['shape'], decode(t['dtype'], body[a:b]))
    order = sorted(hdr, key=lambda k: hdr[k]['data_offsets'][0])
    return out, meta, order

def save(path, tensors, meta, order):
    hdr, body = {'__metadata__': meta}, b''
    for name in order:
        dtype, shape, vals = tensors[name]
        raw = encode(dtype, vals)
        hdr[name] = {'dtype': dtype, 'shape': shape,
                     'data_offsets': [len(body), len(body) + len(raw)]}
        body += raw
    h = json.dumps(hdr).encode()
    h += b' ' * (-len(h) % 8)
    data = struct.pack('<Q', len(h)) + h + body
    if path.endswith('.gz'):
        data = gzip.compress(data)
    with open(path, 'wb') as f:
        f.write(data)

SHAPES = [('model.embed_tokens.weight', [6, 4]),
          ('model.layers.0.self_attn.q_proj.weight', [4, 4]),
          ('model.layers.0.input_layernorm.weight', [4]),
          ('model.norm.weight', [4]),
          ('lm_head.weight', [6, 4])]

def gen(path, seed, dtype, *edits):
    rng = random.Random(int(seed))
    tensors, order = {}, []
    for name, shape in SHAPES:
        n = 1
        for d in shape:
            n *= d
        vals = [rng.gauss(0, 1) for _ in range(n)]
        if dtype == 'BF16':
            vals = [bf16_to_float(f32_to_bf16(v)) for v in vals]
        tensors[name] = (dtype, shape, vals)
        order.append(name)
    tensors['model.rotary.inv_freq_ids'] = ('I64', [3], [1, 2, 3])
    order.append('model.rotary.inv_freq_ids')
    for e in edits:
        what, _, arg = e.partition('=')
        if what == 'drop':
            del tensors[arg]
            order.remove(arg)
        elif what == 'extra':
            tensors[arg] = (dtype, [2], [0.5, 0.25])
            order.append(arg)
        elif what == 'reshape':
            d, s, v = tensors[arg]
            tensors[arg] = (d, [len(v)], v)
        elif what == 'reverse':
            order.reverse()
        elif what == 'big':
            d, s, v = tensors[arg]
            tensors[arg] = (d, s, [40000.0] * len(v))
        elif what == 'nan':
            d, s, v = tensors[arg]
            v[1] = float('nan')
    save(path, tensors, {'format': 'pt', 'zm.note': 'x'}, order)

def merge_ref(method, weights, base, models, density=0.2, lam=1.0):
    """Naive loops in double precision."""
    out = {}
    ref = base if base else models[0]
    for name, (dtype, shape, bv) in ref.items():
        if dtype == 'I64':
            out[name] = bv
            continue
        xs = [m[name][2] for m in models]
        n = len(bv)
        if method == 'linear':
            out[name] = [sum(w * x[i] for w, x in zip(weights, xs)) / sum(weights)
                         for i in range(n)]
        elif method == 'task-arithmetic':
            out[name] = [bv[i] + lam * sum(w * (x[i] - bv[i]) for w, x in zip(weights, xs))
                         for i in range(n)]
        elif method == 'ties':
            taus = []
            for x in xs:
                t = [x[i] - bv[i] for i in range(n)]
                k = max(1, int(math.floor(density * n + 0.5)))
                if k < n:
                    th = sorted((abs(v) for v in t), reverse=True)[k - 1]
                    t = [v if abs(v) >= th else 0.0 for v in t]
                taus.append(t)
            res = []
            for i in range(n):
                mass = sum(w * t[i] for w, t in zip(weights, taus))
                sel = [(w, t[i]) for w, t in zip(weights, taus)
                       if (t[i] > 0 and mass > 0) or (t[i] < 0 and mass < 0)]
                m = sum(w * v for w, v in sel) / sum(w for w, v in sel) if sel else 0.0
                res.append(bv[i] + lam * m)
            out[name] = res
    return out

def check(out_path, method, weights, base_path, model_paths, *kw):
    got, meta, order = load(out_path)
    models = [load(p)[0] for p in model_paths]
    base = load(base_path)[0] if base_path != '-' else None
    kwargs = dict(a.split('=') for a in kw)
    kwargs = {k: float(v) for k, v in kwargs.items()}
    want = merge_ref(method, [float(w) for w in weights.split(',')], base, models, **kwargs)
    ref = base if base else models[0]
    assert set(got) == set(ref), 'names differ: %s' % (set(got) ^ set(ref))
    assert meta.get('format') == 'pt', 'metadata lost: %s' % meta
    assert 'zm.note' not in meta, 'zm.* metadata copied: %s' % meta
    for name, (d, shape, vals) in got.items():
        assert shape == ref[name][1], name
        assert d == ref[name][0], '%s: dtype %s, want %s' % (name, d, ref[name][0])
        for i, (g, w) in enumerate(zip(vals, want[name])):
            if d == 'I64':
                assert g == w, name
                continue
            # One unit in the last place of the output dtype: the result
            # is computed in F32, the reference in double.
            ulp = {'BF16': 2.0 ** -7, 'F16': 2.0 ** -10, 'F32': 2.0 ** -21}[d]
            tol = ulp * max(abs(w), 2.0 ** -14) + 1e-6
            assert abs(g - w) <= tol, '%s[%d]: %r, want %r' % (name, i, g, w)
    print('ok', len(got), 'tensors')

def shard(src, d, nshards, *edits):
    """Splits src into nshards files in d with a Hugging Face index."""
    import os
    tensors, meta, order = load(src)
    os.makedirs(d, exist_ok=True)
    n = int(nshards)
    wmap = {}
    for s in range(n):
        fname = 'model-%05d-of-%05d.safetensors' % (s + 1, n)
        names = order[s::n]
        save(os.path.join(d, fname), tensors, meta, names)
        for name in names:
            wmap[name] = fname
    for e in edits:
        what, _, arg = e.partition('=')
        if what == 'unmap':
            del wmap[arg]
        elif what == 'slash':
            wmap[arg] = '../' + wmap[arg]
    with open(os.path.join(d, 'model.safetensors.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': 0}, 'weight_map': wmap}, f)

if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'gen':
        gen(*sys.argv[2:])
    elif cmd == 'shard':
        shard(*sys.argv[2:])
    elif cmd == 'check':
        a = sys.argv[2:]
        check(a[0], a[1], a[2], a[3], a[4].split(':'), *a[5:])
    elif cmd == 'dtype':
        got, _, _ = load(sys.argv[2])
        print(got[sys.argv[3]][0])
PY
py() { python3 "$T/st.py" "$@"; }

py gen "$T/base.safetensors" 1 BF16
py gen "$T/a.safetensors" 2 BF16
py gen "$T/b.safetensors.gz" 3 BF16
py gen "$T/c.safetensors" 4 BF16 reverse
M="$T/a.safetensors:$T/b.safetensors.gz:$T/c.safetensors"

run merge --method linear --weights 1,2,3 -o "$T/lin.safetensors" \
	"$T/a.safetensors" "$T/b.safetensors.gz" "$T/c.safetensors"
expect_rc 0 "linear merge of plain BF16 checkpoints (one gzip, one in another order)"
check "linear: plain safetensors output, BF16, names, metadata, naive reference" \
	py check "$T/lin.safetensors" linear 1,2,3 - "$M"
check "a .safetensors output is not gzip" \
	sh -c "test \"\$(head -c 2 '$T/lin.safetensors' | od -An -tx1 | tr -d ' ')\" != 1f8b"

run merge --method task-arithmetic --lambda 0.5 --weights 1,1,0.5 \
	--base "$T/base.safetensors" -o "$T/ta.gz" \
	"$T/a.safetensors" "$T/b.safetensors.gz" "$T/c.safetensors"
expect_rc 0 "task arithmetic over a plain base, gzip output"
check "task arithmetic: naive reference" \
	py check "$T/ta.gz" task-arithmetic 1,1,0.5 "$T/base.safetensors" "$M" lam=0.5
check "a .gz output is gzip" \
	sh -c "test \"\$(head -c 2 '$T/ta.gz' | od -An -tx1 | tr -d ' ')\" = 1f8b"

run merge --method ties --density 0.5 --base "$T/base.safetensors" \
	-o "$T/ties.safetensors" \
	"$T/a.safetensors" "$T/b.safetensors.gz" "$T/c.safetensors"
expect_rc 0 "TIES over a plain base"
check "ties: naive reference (trim, sign election, disjoint mean)" \
	py check "$T/ties.safetensors" ties 1,1,1 "$T/base.safetensors" "$M" density=0.5

py gen "$T/f16a.safetensors" 5 F16
py gen "$T/f16b.safetensors" 6 F16
run merge --method linear -o "$T/f16.safetensors" "$T/f16a.safetensors" "$T/f16b.safetensors"
expect_rc 0 "F16 checkpoints"
check "F16 stays F16 and agrees with the reference" \
	py check "$T/f16.safetensors" linear 1,1 - "$T/f16a.safetensors:$T/f16b.safetensors"
py gen "$T/f32a.safetensors" 7 F32
py gen "$T/f32b.safetensors" 8 F32
run merge --method linear -o "$T/f32.safetensors" "$T/f32a.safetensors" "$T/f32b.safetensors"
check "F32 stays F32 and agrees with the reference" \
	py check "$T/f32.safetensors" linear 1,1 - "$T/f32a.safetensors:$T/f32b.safetensors"

# Mismatches: named, exit 1, nothing written.
py gen "$T/short.safetensors" 9 BF16 drop=model.norm.weight
run merge --method linear -o "$T/x.safetensors" "$T/a.safetensors" "$T/short.safetensors"
expect_rc 1 "a model missing a tensor is refused"
expect_err "short.safetensors has no tensor model.norm.weight" "... naming the model and the tensor"
check "... and nothing is written" test ! -e "$T/x.safetensors"
run merge --method task-arithmetic --missing copy-base --base "$T/base.safetensors" \
	-o "$T/copy.safetensors" "$T/a.safetensors" "$T/short.safetensors"
expect_rc 0 "--missing copy-base merges it"
check "... copying the base's tensor" python3 -c "
import sys; sys.path.insert(0, '$T'); import st
g = st.load('$T/copy.safetensors')[0]['model.norm.weight'][2]
b = st.load('$T/base.safetensors')[0]['model.norm.weight'][2]
assert g == b, (g, b)"
py gen "$T/extra.safetensors" 10 BF16 extra=model.extra.weight
run merge --method linear -o "$T/x.safetensors" "$T/a.safetensors" "$T/extra.safetensors"
expect_rc 1 "an extra tensor is refused"
expect_err "extra.safetensors has tensor model.extra.weight" "... naming it"
py gen "$T/shape.safetensors" 11 BF16 reshape=lm_head.weight
run merge --method linear -o "$T/x.safetensors" "$T/a.safetensors" "$T/shape.safetensors"
expect_rc 1 "a shape mismatch is refused"
expect_err "tensor lm_head.weight is \[24\] in .*shape.safetensors but \[6, 4\]" "... naming the tensor and both shapes"
py gen "$T/nan.safetensors" 12 BF16 nan=model.norm.weight
run merge --method linear -o "$T/x.safetensors" "$T/a.safetensors" "$T/nan.safetensors"
expect_rc 1 "a NaN in an input is refused"
expect_err "tensor model.norm.weight element 1 is not finite" "... naming tensor and element"
check "nothing written by the refused merges" test ! -e "$T/x.safetensors"

# Sharded checkpoints: a directory with model.safetensors.index.json, or
# the index itself, give the same tensors as the single files (in the
# base's shard order).
py shard "$T/base.safetensors" "$T/base-sh" 2
py shard "$T/a.safetensors" "$T/a-sh" 3
py shard "$T/c.safetensors" "$T/c-sh" 2
run merge --method ties --density 0.5 --base "$T/base-sh" -o "$T/ties-sh.safetensors" \
	"$T/a-sh/model.safetensors.index.json" "$T/b.safetensors.gz" "$T/c-sh"
expect_rc 0 "TIES over sharded checkpoints (directory and index)"
check "... the same tensors, bit for bit, as over the single files" python3 -c "
import sys; sys.path.insert(0, '$T'); import st
a, b = st.load('$T/ties.safetensors'), st.load('$T/ties-sh.safetensors')
assert a[0] == b[0] and a[1] == b[1], 'differ'"
run merge --method ties --density 0.5 --shard-size 100 --base "$T/base-sh" \
	-o "$T/ties-out" "$T/a-sh" "$T/b.safetensors.gz" "$T/c-sh"
expect_rc 0 "--shard-size writes shards and an index"
check "... shards of at most 100 bytes of data (one tensor may exceed it), an index naming each tensor's shard, the same tensors as one file" python3 -c "
import sys, json, os; sys.path.insert(0, '$T'); import st
d = '$T/ties-out'
ix = json.load(open(d + '/model.safetensors.index.json'))['weight_map']
files = sorted(set(ix.values()))
assert len(files) > 1 and files == sorted(f for f in os.listdir(d) if f.endswith('.safetensors')), files
got, meta = {}, None
for f in files:
    t, m, order = st.load(os.path.join(d, f))
    size = sum(len(st.encode(v[0], v[2])) for v in t.values())
    assert size <= 100 or len(t) == 1, (f, size)
    for k in t:
        assert ix[k] == f, k
    got.update(t)
    meta = m
want, wmeta, _ = st.load('$T/ties.safetensors')
assert got == want and meta == wmeta and set(ix) == set(want)"
run merge --method linear -o "$T/round.safetensors" "$T/ties-out" "$T/ties.safetensors"
expect_rc 0 "the sharded output reads back as an input"
run merge --method linear --shard-size 0 -o "$T/x-dir" "$T/a.safetensors"
expect_rc 2 "--shard-size 0 is a usage error"
py shard "$T/a.safetensors" "$T/bad-sh" 2 unmap=lm_head.weight
run merge --method linear -o "$T/x.safetensors" "$T/bad-sh" "$T/a.safetensors"
expect_rc 1 "a shard holding a tensor its index does not list is refused"
expect_err "tensor lm_head.weight is in model-0000[12]-of-00002.safetensors, but the index says nothing" "... naming tensor and shard"
py shard "$T/a.safetensors" "$T/slash-sh" 2 slash=lm_head.weight
run merge --method linear -o "$T/x.safetensors" "$T/slash-sh" "$T/a.safetensors"
expect_rc 2 "an index naming a file outside its directory is refused"
expect_err "model.safetensors.index.json:[0-9]+:[0-9]+: '../model" "... with line and column"
mkdir "$T/nul-sh"
printf '{"weight_map": {"lm_head\\u0000.weight": "model.safetensors"}}' \
	>"$T/nul-sh/model.safetensors.index.json"
run merge --method linear -o "$T/x.safetensors" "$T/nul-sh" "$T/a.safetensors"
expect_rc 2 "an index naming a tensor with a NUL byte is refused"
expect_err "model.safetensors.index.json:[0-9]+:[0-9]+: 'lm_head' is not a tensor name" "... with line and column"
mkdir "$T/empty-dir"
run merge --method linear -o "$T/x.safetensors" "$T/empty-dir" "$T/a.safetensors"
expect_rc 1 "a directory without a checkpoint is refused"

py gen "$T/big1.safetensors" 13 F16 big=model.norm.weight
py gen "$T/big2.safetensors" 14 F16 big=model.norm.weight
run merge --method linear --weights 1,1 -o "$T/big.safetensors" "$T/big1.safetensors" "$T/big2.safetensors"
expect_rc 0 "F16 values of 40000 average within F16"
run merge --method task-arithmetic --base "$T/f16a.safetensors" -o "$T/x.safetensors" \
	"$T/big1.safetensors" "$T/big2.safetensors"
expect_rc 1 "a merged value beyond F16's range is refused"
expect_err "merged tensor model.norm.weight element 0 .* overflows F16" "... naming tensor and element"
cat >"$T/plain.yaml" <<YAML
method: linear
models:
  - {model: $T/a.safetensors, weight: [1, 2]}
  - {model: $T/c.safetensors}
YAML
run merge --config "$T/plain.yaml" -o "$T/y.safetensors"
expect_rc 2 "per-layer weights on plain checkpoints are a configuration error"
expect_err "plain.yaml:[0-9]+:[0-9]+: per-layer weights need zoomerge models" "... with line and column"
check "nothing written by the refused merges" test ! -e "$T/x.safetensors" -a ! -e "$T/y.safetensors"

run merge --method linear --weights 1,nan -o "$T/x.safetensors" "$T/a.safetensors" "$T/f32a.safetensors"
expect_rc 2 "--weights 1,nan is a usage error"
expect_err "'nan'" "... naming the value"
run merge --method linear --weights 1,-1 -o "$T/x.safetensors" "$T/a.safetensors" "$T/f32a.safetensors"
expect_rc 2 "a negative weight is a usage error"
expect_err "'-1'" "... naming the value"
run merge --method linear --weights 1,inf -o "$T/x.safetensors" "$T/a.safetensors" "$T/f32a.safetensors"
expect_rc 2 "an infinite weight is a usage error"
run merge --method linear --missing maybe -o "$T/x.safetensors" "$T/a.safetensors"
expect_rc 2 "--missing with a bad value"

finish
