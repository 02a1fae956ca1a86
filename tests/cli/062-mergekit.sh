#!/bin/sh
# merge --mergekit-config: mergekit's own YAML examples (linear,
# task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
# breadcrumbs_ties, slerp; model_stock and nuslerp in mergekit's form),
# with only the
# model names replaced by local paths, run on sharded BF16 checkpoints
# with Hugging Face tensor names.  The output is read back by an
# independent reader written here (Python: json, struct, array) and
# compared with a naive reference of mergekit's formulas (per-tensor
# gradients and filters, per-model density, floor(density n) kept,
# sign election with a zero sum positive); DARE, being random, is checked
# for its structure (every entry one of the values some drop pattern
# gives, kept entries rescaled exactly by 1/density, the kept fraction
# within a binomial bound) and its determinism under --seed.  Unknown
# keys and methods are refused with file:line:col.
. "$(dirname "$0")/lib.sh"

if ! command -v python3 >/dev/null 2>&1; then
	echo "# python3 not found: skipping"
	finish
	exit $?
fi

cat >"$T/mk.py" <<'PY'
import json, math, os, random, struct, sys
from array import array

def f32(x):
    return struct.unpack('<f', struct.pack('<f', x))[0]

def bf16_bits(x):
    (u,) = struct.unpack('<I', struct.pack('<f', x))
    u += 0x7fff + ((u >> 16) & 1)
    return (u >> 16) & 0xffff

def decode(dtype, raw):
    if dtype == 'BF16':
        h = array('H')
        h.frombytes(raw)
        u = array('I', [x << 16 for x in h])
        f = array('f')
        f.frombytes(u.tobytes())
        return list(f)
    if dtype == 'F32':
        f = array('f')
        f.frombytes(raw)
        return list(f)
    if dtype == 'F16':
        return list(struct.unpack('<%de' % (len(raw) // 2), raw))
    raise SystemExit('dtype ' + dtype)

def read_file(path):
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop('__metadata__', {})
    out = {}
    for name, t in hdr.items():
        a, b = t['data_offsets']
        out[name] = (t['dtype'], t['shape'], decode(t['dtype'], data[8 + n + a:8 + n + b]))
    return out, meta

def load(path):
    """A checkpoint: a file, or a directory with an index of shards."""
    if not os.path.isdir(path):
        return read_file(path)[0]
    with open(os.path.join(path, 'model.safetensors.index.json')) as f:
        wmap = json.load(f)['weight_map']
    out = {}
    for fname in sorted(set(wmap.values())):
        got, _ = read_file(os.path.join(path, fname))
        for k, v in got.items():
            assert wmap[k] == fname, (k, fname)
            out[k] = v
    assert sorted(out) == sorted(wmap)
    return out

def save_sharded(d, tensors, nshards=2):
    os.makedirs(d, exist_ok=True)
    names = list(tensors)
    wmap = {}
    for s in range(nshards):
        fname = 'model-%05d-of-%05d.safetensors' % (s + 1, nshards)
        hdr, body = {'__metadata__': {'format': 'pt'}}, b''
        for name in names[s::nshards]:
            shape, vals = tensors[name]
            raw = array('H', [bf16_bits(v) for v in vals]).tobytes()
            hdr[name] = {'dtype': 'BF16', 'shape': shape,
                         'data_offsets': [len(body), len(body) + len(raw)]}
            body += raw
            wmap[name] = fname
        h = json.dumps(hdr).encode()
        h += b' ' * (-len(h) % 8)
        with open(os.path.join(d, fname), 'wb') as f:
            f.write(struct.pack('<Q', len(h)) + h + body)
    with open(os.path.join(d, 'model.safetensors.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': 0}, 'weight_map': wmap}, f)

def shapes(big):
    if big:
        return [('model.embed_tokens.weight', [8, 4]),
                ('model.layers.0.mlp.down_proj.weight', [1025, 1024]),
                ('model.layers.1.self_attn.q_proj.weight', [4, 4]),
                ('lm_head.weight', [8, 4])]
    s = [('model.embed_tokens.weight', [8, 4])]
    for l in range(4):
        s += [('model.layers.%d.self_attn.q_proj.weight' % l, [4, 4]),
              ('model.layers.%d.mlp.up_proj.weight' % l, [6, 4]),
              ('model.layers.%d.input_layernorm.weight' % l, [4])]
    return s + [('model.norm.weight', [4]), ('lm_head.weight', [8, 4])]

def gen(d, seed, big):
    """The base (seed 0) or a fine-tune of it: base plus noise."""
    rb, rf = random.Random(1000 + int(big)), random.Random(int(seed))
    t = {}
    for name, shape in shapes(big == '1'):
        n = 1
        for x in shape:
            n *= x
        v = [rb.gauss(0, 0.1) for _ in range(n)]
        if int(seed):
            v = [x + rf.gauss(0, 0.02) for x in v]
        t[name] = (shape, v)
    save_sharded(d, t)

# ---- mergekit's parameters, evaluated as mergekit documents them ----

def layer_pos(name, n_layers):
    parts = name.split('.')
    for i, p in enumerate(parts[:-1]):
        if p == 'layers' and parts[i + 1].isdigit():
            return int(parts[i + 1]) / max(n_layers - 1, 1)
    return 0.0 if 'embed' in name else 1.0

def grad(v, pos):
    if not isinstance(v, list):
        return float(v)
    if len(v) == 1:
        return float(v[0])
    x = pos * (len(v) - 1)
    lo = min(int(math.floor(x)), len(v) - 2)
    f = x - lo
    return v[lo] * (1 - f) + v[lo + 1] * f

def param(spec, name, pos, dflt):
    if spec is None:
        return dflt
    if isinstance(spec, list) and spec and isinstance(spec[0], dict):
        for e in spec:
            if 'filter' not in e or e['filter'] in name:
                return grad(e['value'], pos)
        return dflt
    return grad(spec, pos)

def sign(x):
    return 1 if x >= 0 else -1

def ties_vec(taus, ws, ds, normalize, gs=None, elect=True):
    n = len(taus[0])
    kept = []
    for i, (tau, d) in enumerate(zip(taus, ds)):
        k = int(math.floor(d * n))
        top = int(math.floor(gs[i] * n)) if gs and k else 0
        mags = sorted((abs(x) for x in tau), reverse=True)
        hi = mags[top - 1] if top else float('inf')
        lo = 0.0 if k + top >= n else mags[k + top - 1] if k else float('inf')
        kept.append([x if lo <= abs(x) < hi else 0.0 for x in tau])
    if not elect:
        return [sum(w * t[j] for w, t in zip(ws, kept)) / (sum(ws) if normalize else 1.0)
                for j in range(n)]
    out = []
    w32 = [f32(w) for w in ws]
    for j in range(n):
        # The election in F32 as merge sums it (positive and negative
        # mass apart, model by model): weights such as 0.5, 0.3, 0.2 on
        # BF16 task vectors cancel exactly in real arithmetic, and the
        # sign is then the rounding's.
        pos = neg = 0.0
        for w, t in zip(w32, kept):
            if t[j] > 0:
                pos = f32(pos + f32(w * t[j]))
            elif t[j] < 0:
                neg = f32(neg + f32(w * t[j]))
        s = sign(f32(pos + neg))
        num = sum(w * t[j] for w, t in zip(ws, kept) if t[j] != 0 and sign(t[j]) == s)
        den = sum(w for w, t in zip(ws, kept) if t[j] != 0 and sign(t[j]) == s)
        out.append(num / den if normalize and den != 0 else num)
    return out

def slerp(a, b, t):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    c = dot / (na * nb) if na > 0 and nb > 0 else 0.0
    if abs(c) > 0.9995:
        return [(1 - t) * x + t * y for x, y in zip(a, b)]
    w = math.acos(c)
    return [(math.sin((1 - t) * w) * x + math.sin(t * w) * y) / math.sin(w)
            for x, y in zip(a, b)]

def reference(cfg, ckpt):
    """The merged tensors of config cfg (a dict), models read by ckpt."""
    method = cfg['merge_method']
    gp = cfg.get('parameters', {}) or {}
    if 'slices' in cfg:
        entries = cfg['slices'][0]['sources']
    else:
        entries = cfg['models']
    base = cfg.get('base_model')
    names = [e['model'] for e in entries]
    data = {m: load(m) for m in names + ([base] if base else [])}
    ref = data[base] if base else data[names[0]]
    n_layers = 1 + max(int(k.split('.')[2]) for k in ref if '.layers.' in k)
    out = {}
    for name in ref:
        pos = layer_pos(name, n_layers)
        def mp(m, key, dflt):
            e = [x for x in entries if x['model'] == m][0]
            own = (e.get('parameters') or {}).get(key)
            v = param(own, name, pos, None) if own is not None else None
            return v if v is not None else param(gp.get(key), name, pos, dflt)
        if method == 'slerp':
            other = [m for m in names if m != base][0]
            t = param(gp['t'], name, pos, 0.5)
            out[name] = slerp(data[base][name][2], data[other][name][2], t)
            continue
        if method == 'linear':
            ws = [mp(m, 'weight', 1.0) for m in names]
            vals = [data[m][name][2] for m in names]
            out[name] = [sum(w * v[j] for w, v in zip(ws, vals)) / sum(ws)
                         for j in range(len(vals[0]))]
            continue
        models = [m for m in names if m != base]
        ws = [mp(m, 'weight', 1.0) for m in models]
        ds = [mp(m, 'density', 1.0) for m in models]
        b = data[base][name][2]
        taus = [[f32(x - y) for x, y in zip(data[m][name][2], b)] for m in models]
        lam = gp.get('lambda', 1.0)
        if method == 'task_arithmetic':
            norm = gp.get('normalize', False)
            s = sum(ws) if norm else 1.0
            d = [sum(w * t[j] for w, t in zip(ws, taus)) / s for j in range(len(b))]
        elif method == 'ties':
            d = ties_vec(taus, ws, ds, gp.get('normalize', True))
        elif method.startswith('breadcrumbs'):
            gs = [mp(m, 'gamma', 0.01) for m in models]
            d = ties_vec(taus, ws, ds, gp.get('normalize', False), gs,
                         method == 'breadcrumbs_ties')
        else:
            raise SystemExit('no reference for ' + method)
        out[name] = [x + lam * y for x, y in zip(b, d)]
    return out, ref

def close(got, want, tol):
    scale = max([abs(x) for x in want] + [1e-30])
    return all(abs(g - w) <= tol * (abs(w) + 1e-2 * scale) for g, w in zip(got, want))

def check(cfg_path, out_path, dtype):
    cfg = json.load(open(cfg_path + '.json'))
    want, ref = reference(cfg, load)
    got = load(out_path)
    if sorted(got) != sorted(ref):
        raise SystemExit('names differ: %s' % sorted(set(got) ^ set(ref)))
    tol = {'BF16': 2 ** -7, 'F16': 2 ** -10, 'F32': 1e-5}[dtype]
    for name in ref:
        dt, shape, vals = got[name]
        if dt != dtype or shape != ref[name][1]:
            raise SystemExit('%s: %s %s, want %s %s' % (name, dt, shape, dtype, ref[name][1]))
        if not close(vals, want[name], tol):
            bad = max(range(len(vals)), key=lambda j: abs(vals[j] - want[name][j]))
            raise SystemExit('%s[%d]: %r, want %r' % (name, bad, vals[bad], want[name][bad]))

def dare_ties(cfg_path, out_path):
    """Every entry is what some drop pattern gives: the TIES sum (normalize
    false) over a subset of the models, each kept entry scaled by 1/density;
    and the subsets are not all 'everything kept'."""
    import itertools
    cfg = json.load(open(cfg_path + '.json'))
    base = cfg['base_model']
    models = [e for e in cfg['models'] if e['model'] != base]
    b, got = load(base), load(out_path)
    ws = [e['parameters']['weight'] for e in models]
    ds = [e['parameters']['density'] for e in models]
    data = [load(e['model']) for e in models]
    full = 0
    total = 0
    for name in b:
        taus = [[f32(x - y) / d for x, y in zip(m[name][2], b[name][2])] for m, d in zip(data, ds)]
        for j, g in enumerate(got[name][2]):
            delta = g - b[name][2][j]
            cands = []
            for keep in itertools.product([0, 1], repeat=len(models)):
                t = [tau[j] * k for tau, k in zip(taus, keep)]
                s = sign(sum(w * x for w, x in zip(ws, t)))
                v = sum(w * x for w, x in zip(ws, t) if x != 0 and sign(x) == s)
                cands.append((abs(b[name][2][j] + v - g), keep))
            err, keep = min(cands)
            if err > 2 ** -7 * (abs(g) + 1e-3):
                raise SystemExit('%s[%d]: %r is no drop pattern\'s value' % (name, j, g))
            full += all(keep)
            total += 1
    # Each model keeps an entry with probability 0.53: all three about
    # 15 % of the time, far from every time.
    if full > 0.5 * total:
        raise SystemExit('%d of %d entries kept by every model' % (full, total))

def dare_linear(cfg_path, out_path):
    """One model: each entry of out - base is 0 or tau / density exactly
    (F32 output), kept with probability density (binomial bound)."""
    cfg = json.load(open(cfg_path + '.json'))
    base = cfg['base_model']
    e = [x for x in cfg['models'] if x['model'] != base][0]
    d = e['parameters']['density']
    b, m, got = load(base), load(e['model']), load(out_path)
    kept = n = 0
    for name in b:
        for x, y, g in zip(b[name][2], m[name][2], got[name][2]):
            tau = f32(x - y) if False else f32(y - x)
            k = f32(x + f32(tau / d))
            if k == x:
                continue    # kept or not, the same value
            if g == k:
                kept += 1
            elif g != x:
                raise SystemExit('%s: %r is neither %r nor %r' % (name, g, x, k))
            n += 1
    bound = 4 * math.sqrt(n * d * (1 - d))
    if abs(kept - n * d) > bound:
        raise SystemExit('kept %d of %d, want %g +- %g' % (kept, n, n * d, bound))

if __name__ == '__main__':
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == 'gen':
        gen(*a)
    elif cmd == 'check':
        check(*a)
    elif cmd == 'dare_ties':
        dare_ties(*a)
    elif cmd == 'dare_linear':
        dare_linear(*a)
    elif cmd == 'same':
        x, y = load(a[0]), load(a[1])
        sys.exit(0 if x == y else 1)
PY
py() { python3 "$T/mk.py" "$@"; }

cd "$T" || exit 1
py gen base 0 0
py gen m1 1 0
py gen m2 2 0
py gen m3 3 0


cat >linear.yml <<'Y'
models:
  - model: m1
    parameters:
      weight: 1.0
  - model: m2
    parameters:
      weight: 0.3
  - model: m3
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
Y
cat >linear.yml.json <<'Y'
{"models": [{"model": "m1", "parameters": {"weight": 1.0}},
            {"model": "m2", "parameters": {"weight": 0.3}},
            {"model": "m3", "parameters": {"weight": 0.5}}],
 "merge_method": "linear", "dtype": "float16"}
Y
run merge --mergekit-config linear.yml -o lin.safetensors
expect_rc 0 "linear: mergekit's example runs"
check "linear: F16 (dtype: float16), the base's names, naive reference" py check linear.yml lin.safetensors F16

cat >ta.yml <<'Y'
models:
  - model: m1
    parameters:
      weight: 1.0
  - model: m2
    parameters:
      weight: -0.5
base_model: base
merge_method: task_arithmetic
dtype: bfloat16
parameters:
  lambda: 0.8
Y
cat >ta.yml.json <<'Y'
{"models": [{"model": "m1", "parameters": {"weight": 1.0}},
            {"model": "m2", "parameters": {"weight": -0.5}}],
 "base_model": "base", "merge_method": "task_arithmetic",
 "dtype": "bfloat16", "parameters": {"lambda": 0.8}}
Y
run merge --mergekit-config ta.yml --shard-size 200 -o ta
expect_rc 0 "task_arithmetic: a negative weight subtracts a task; sharded output"
check "task_arithmetic: BF16 shards with an index, naive reference" py check ta.yml ta BF16

cat >ties.yml <<'Y'
models:
  - model: m1
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: m2
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: m3
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: base
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
Y
cat >ties.yml.json <<'Y'
{"models": [{"model": "m1", "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
            {"model": "m2", "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
            {"model": "m3", "parameters": {"density": 0.33, "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]}}],
 "merge_method": "ties", "base_model": "base",
 "parameters": {"normalize": true, "int8_mask": true}, "dtype": "bfloat16"}
Y
run merge --mergekit-config ties.yml -o ties.safetensors
expect_rc 0 "ties: mergekit's README example runs"
expect_err "int8_mask: ignored" "... int8_mask is named as ignored"
check "ties: gradients, filters, per-model density, naive reference" py check ties.yml ties.safetensors BF16

cat >slerp.yml <<'Y'
slices:
  - sources:
      - model: m1
        layer_range: [0, 4]
      - model: m2
        layer_range: [0, 4]
merge_method: slerp
base_model: m1
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: bfloat16
Y
cat >slerp.yml.json <<'Y'
{"slices": [{"sources": [{"model": "m1", "layer_range": [0, 4]},
                         {"model": "m2", "layer_range": [0, 4]}]}],
 "merge_method": "slerp", "base_model": "m1",
 "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                      {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                      {"value": 0.5}]},
 "dtype": "bfloat16"}
Y
run merge --mergekit-config slerp.yml -o slerp.safetensors
expect_rc 0 "slerp: mergekit's gradient-slerp example runs"
check "slerp: t per layer and filter, naive reference" py check slerp.yml slerp.safetensors BF16

cat >dt.yml <<'Y'
models:
  - model: base
    # No parameters necessary for base model
  - model: m1
    parameters:
      density: 0.53
      weight: 0.4
  - model: m2
    parameters:
      density: 0.53
      weight: 0.3
  - model: m3
    parameters:
      density: 0.53
      weight: 0.3
merge_method: dare_ties
base_model: base
parameters:
  int8_mask: true
dtype: bfloat16
Y
cat >dt.yml.json <<'Y'
{"models": [{"model": "base"},
            {"model": "m1", "parameters": {"density": 0.53, "weight": 0.4}},
            {"model": "m2", "parameters": {"density": 0.53, "weight": 0.3}},
            {"model": "m3", "parameters": {"density": 0.53, "weight": 0.3}}],
 "merge_method": "dare_ties", "base_model": "base", "dtype": "bfloat16"}
Y
run merge --mergekit-config dt.yml --seed 7 -o dt1.safetensors
expect_rc 0 "dare_ties: mergekit's example runs (base_model among the models)"
check "dare_ties: every entry a drop pattern's TIES sum (normalize: false) of tau / density" py dare_ties dt.yml dt1.safetensors
run merge --mergekit-config dt.yml --seed 7 -o dt2.safetensors
check "dare_ties: the same seed, the same bytes" py same dt1.safetensors dt2.safetensors
run merge --mergekit-config dt.yml --seed 8 -o dt3.safetensors
check "dare_ties: another seed, other drops" sh -c '! python3 mk.py same dt1.safetensors dt3.safetensors'

cat >bc.yml <<'Y'
models:
  - model: m1
    parameters:
      weight: 1.0
      density: [0.9, 0.5]
      gamma: 0.1
  - model: m2
    parameters:
      weight: 0.5
      density: 0.6
      gamma: [0, 0.2]
merge_method: breadcrumbs
base_model: base
parameters:
  normalize: true
dtype: bfloat16
Y
cat >bc.yml.json <<'Y'
{"models": [{"model": "m1", "parameters": {"weight": 1.0, "density": [0.9, 0.5], "gamma": 0.1}},
            {"model": "m2", "parameters": {"weight": 0.5, "density": 0.6, "gamma": [0, 0.2]}}],
 "merge_method": "breadcrumbs", "base_model": "base",
 "parameters": {"normalize": true}, "dtype": "bfloat16"}
Y
run merge --mergekit-config bc.yml -o bc.safetensors
expect_rc 0 "breadcrumbs runs"
check "breadcrumbs: magnitude band per model and layer, no sign election, normalized, naive reference" py check bc.yml bc.safetensors BF16

cat >dl.yml <<'Y'
models:
  - model: m1
    parameters:
      density: 0.5
      weight: 1.0
merge_method: dare_linear
base_model: base
dtype: float32
Y
cat >dl.yml.json <<'Y'
{"models": [{"model": "m1", "parameters": {"density": 0.5, "weight": 1.0}}],
 "merge_method": "dare_linear", "base_model": "base", "dtype": "float32"}
Y
run merge --mergekit-config dl.yml -o dl.safetensors
expect_rc 0 "dare_linear runs"
check "dare_linear: kept entries rescaled exactly by 1/density, kept fraction within 4 sigma" py dare_linear dl.yml dl.safetensors

# A tensor of 1025 x 1024 elements: TIES streams it in chunks with an
# exact cut, with each model's density.
py gen bb 0 1
py gen b1 1 1
py gen b2 2 1
py gen b3 3 1
cat >big.yml <<'Y'
models:
  - {model: b1, parameters: {density: 0.3, weight: 1.0}}
  - {model: b2, parameters: {density: 0.5, weight: 0.5}}
  - {model: b3, parameters: {density: 0.7, weight: 0.25}}
merge_method: ties
base_model: bb
Y
cat >big.yml.json <<'Y'
{"models": [{"model": "b1", "parameters": {"density": 0.3, "weight": 1.0}},
            {"model": "b2", "parameters": {"density": 0.5, "weight": 0.5}},
            {"model": "b3", "parameters": {"density": 0.7, "weight": 0.25}}],
 "merge_method": "ties", "base_model": "bb"}
Y
run merge --mergekit-config big.yml -o big.safetensors
expect_rc 0 "ties on a tensor larger than a chunk"
check "... the input's dtype (no dtype:), naive reference" py check big.yml big.safetensors BF16
cat >bct.yml <<'Y'
models:
  - model: bb
  - model: b1
    parameters:
      weight: 0.5
      density: 0.9
      gamma: 0.01
  - model: b2
    parameters:
      weight: 0.3
      density: 0.9
      gamma: 0.01
  - model: b3
    parameters:
      weight: 0.2
      density: 0.9
      gamma: 0.01
merge_method: breadcrumbs_ties
base_model: bb
dtype: bfloat16
Y
cat >bct.yml.json <<'Y'
{"models": [{"model": "bb"},
            {"model": "b1", "parameters": {"weight": 0.5, "density": 0.9, "gamma": 0.01}},
            {"model": "b2", "parameters": {"weight": 0.3, "density": 0.9, "gamma": 0.01}},
            {"model": "b3", "parameters": {"weight": 0.2, "density": 0.9, "gamma": 0.01}}],
 "merge_method": "breadcrumbs_ties", "base_model": "bb", "dtype": "bfloat16"}
Y
run merge --mergekit-config bct.yml -o bct.safetensors
expect_rc 0 "breadcrumbs_ties: mergekit's example runs"
check "breadcrumbs_ties: both tails dropped, sign election, sum (normalize: false), naive reference" py check bct.yml bct.safetensors BF16
rm -rf bb b1 b2 b3 big.safetensors bct.safetensors

# model_stock and nuslerp against a numpy reference of mergekit's
# formulas (mkn.py: numpy, float64), with a python3 that has numpy
# (Debian's python3-numpy is for /usr/bin/python3).
NPY=
for p in python3 /usr/bin/python3; do
	if [ -z "$NPY" ] && "$p" -c 'import numpy' 2>/dev/null; then
		NPY=$p
	fi
done
if [ -n "$NPY" ]; then
cat >mkn.py <<'PY'
import json, sys
import numpy as np
from mk import load, close

def arr(t):
    return np.array(t[2], dtype=np.float64).reshape(t[1])

def model_stock(base, ms, filter_wise):
    shape = base.shape
    if filter_wise:
        w0 = base.reshape(1, -1) if base.ndim == 1 else base
        ws = [m.reshape(w0.shape) for m in ms]
    else:
        w0, ws = base.reshape(-1), [m.reshape(-1) for m in ms]
    off = [w - w0 for w in ws]
    cos = []
    for i in range(len(off)):
        for j in range(i + 1, len(off)):
            d = np.maximum(np.linalg.norm(off[i], axis=-1) * np.linalg.norm(off[j], axis=-1), 1e-6)
            cos.append(np.clip((off[i] * off[j]).sum(axis=-1) / d, -1, 1))
    c = np.mean(cos, axis=0)[..., None]
    n = len(ws)
    t = n * c / (1 + (n - 1) * c)
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(shape)

def nuslerp(t, v0, v1, row_wise, flatten):
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = np.swapaxes(v0, 0, -1), np.swapaxes(v1, 0, -1)
    u0 = v0 / np.maximum(np.linalg.norm(v0, axis=-1, keepdims=True), 1e-7)
    u1 = v1 / np.maximum(np.linalg.norm(v1, axis=-1, keepdims=True), 1e-7)
    th = np.arccos(np.clip((u0 * u1).sum(axis=-1, keepdims=True), -1, 1))
    s = np.sin(th)
    lin = np.abs(s) < 1e-8
    safe = np.where(lin, 1.0, s)
    res = np.where(lin, (1 - t) * v0 + t * v1,
                   (np.sin((1 - t) * th) * v0 + np.sin(t * th) * v1) / safe)
    if row_wise and not flatten:
        res = np.swapaxes(res, 0, -1)
    return res.reshape(shape)

def main(cfg_path, out_path, dtype):
    cfg = json.load(open(cfg_path))
    gp = cfg.get('parameters', {}) or {}
    base = cfg.get('base_model')
    models = [e['model'] for e in cfg['models'] if e['model'] != base]
    data = {m: load(m) for m in models + ([base] if base else [])}
    ref = data[base] if base else data[models[0]]
    got = load(out_path)
    if sorted(got) != sorted(ref):
        raise SystemExit('names differ')
    tol = {'BF16': 2 ** -7, 'F32': 1e-5}[dtype]
    for name in ref:
        ms = [arr(data[m][name]) for m in models]
        if cfg['merge_method'] == 'model_stock':
            want = model_stock(arr(data[base][name]), ms, gp.get('filter_wise', False))
        else:
            w = [e['parameters']['weight'] for e in cfg['models']]
            t = w[1] / sum(w)
            b = arr(data[base][name]) if base else 0
            want = b + nuslerp(t, ms[0] - b, ms[1] - b,
                               gp.get('nuslerp_row_wise', False),
                               gp.get('nuslerp_flatten', True))
        dt, shape, vals = got[name]
        if dt != dtype or shape != ref[name][1]:
            raise SystemExit('%s: %s %s' % (name, dt, shape))
        if not close(vals, list(want.reshape(-1)), tol):
            raise SystemExit('%s differs from the reference' % name)

main(*sys.argv[1:])
PY
cat >ms.yml <<'Y'
models:
  - model: m1
  - model: m2
  - model: m3
merge_method: model_stock
base_model: base
dtype: bfloat16
Y
printf '%s\n' '{"models": [{"model": "m1"}, {"model": "m2"}, {"model": "m3"}], "merge_method": "model_stock", "base_model": "base"}' >ms.json
run merge --mergekit-config ms.yml -o ms.safetensors
expect_rc 0 "model_stock: mergekit's form runs"
check "model_stock: per-tensor ratio from the task vectors' cosines, numpy reference" "$NPY" mkn.py ms.json ms.safetensors BF16
printf 'models:\n  - model: m1\n  - model: m2\nmerge_method: model_stock\nbase_model: base\nparameters:\n  filter_wise: true\ndtype: float32\n' >msf.yml
printf '%s\n' '{"models": [{"model": "m1"}, {"model": "m2"}], "merge_method": "model_stock", "base_model": "base", "parameters": {"filter_wise": true}}' >msf.json
run merge --mergekit-config msf.yml -o msf.safetensors
expect_rc 0 "model_stock: filter_wise runs"
check "model_stock: a ratio per row (filter_wise), numpy reference" "$NPY" mkn.py msf.json msf.safetensors F32
cat >nu.yml <<'Y'
models:
  - model: m1
    parameters:
      weight: 0.6
  - model: m2
    parameters:
      weight: 0.4
merge_method: nuslerp
dtype: bfloat16
Y
printf '%s\n' '{"models": [{"model": "m1", "parameters": {"weight": 0.6}}, {"model": "m2", "parameters": {"weight": 0.4}}], "merge_method": "nuslerp"}' >nu.json
run merge --mergekit-config nu.yml -o nu.safetensors
expect_rc 0 "nuslerp: mergekit's form runs"
check "nuslerp: t = w2 / (w1 + w2), whole tensors, numpy reference" "$NPY" mkn.py nu.json nu.safetensors BF16
printf 'models:\n  - model: m1\n    parameters: {weight: 1}\n  - model: m3\n    parameters: {weight: 3}\nmerge_method: nuslerp\nbase_model: base\nparameters:\n  nuslerp_flatten: false\n  nuslerp_row_wise: true\ndtype: float32\n' >nur.yml
printf '%s\n' '{"models": [{"model": "m1", "parameters": {"weight": 1}}, {"model": "m3", "parameters": {"weight": 3}}], "merge_method": "nuslerp", "base_model": "base", "parameters": {"nuslerp_flatten": false, "nuslerp_row_wise": true}}' >nur.json
run merge --mergekit-config nur.yml -o nur.safetensors
expect_rc 0 "nuslerp: task vectors, column by column, runs"
check "nuslerp: base_model, nuslerp_flatten false, row_wise, numpy reference" "$NPY" mkn.py nur.json nur.safetensors F32
sed 's/nuslerp_row_wise: true/nuslerp_row_wise: false/' nur.yml >nuw.yml
sed 's/"nuslerp_row_wise": true/"nuslerp_row_wise": false/' nur.json >nuw.json
run merge --mergekit-config nuw.yml -o nuw.safetensors
expect_rc 0 "nuslerp: row by row runs"
check "nuslerp: nuslerp_flatten false, rows, numpy reference" "$NPY" mkn.py nuw.json nuw.safetensors F32
printf 'models:\n  - {model: "-", parameters: {weight: 1}}\n  - {model: m2, parameters: {weight: 1}}\nmerge_method: nuslerp\n' >stdin.yml
run merge --mergekit-config stdin.yml -o x <nu.safetensors
expect_rc 2 "nuslerp of standard input is refused (it reads each tensor twice)"
expect_err "standard input cannot be read twice" "... saying why"
printf 'models:\n  - model: m1\n  - model: m2\nmerge_method: nuslerp\n' >bad8.yml
run merge --mergekit-config bad8.yml -o x
expect_rc 2 "nuslerp without weights is refused"
expect_err "nuslerp needs a weight for model m1" "... naming the model"
printf 'models:\n  - model: m1\nmerge_method: model_stock\nbase_model: base\n' >bad9.yml
run merge --mergekit-config bad9.yml -o x
expect_err "model_stock: expected two models or more" "model_stock with one model is refused"
else
	echo "# numpy not found: model_stock and nuslerp not checked"
fi

# Refusals: nothing written, the place named.
printf 'merge_method: ties\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {densty: 0.5}\n' >bad1.yml
run merge --mergekit-config bad1.yml -o x
expect_rc 2 "a misspelt parameter is refused"
expect_err "bad1.yml:5:18: model parameter 'densty' is not one ties takes" "... naming file, line and column"
printf 'merge_method: ties\nbase_model: base\nmodels: [{model: m1}]\nlayer_range: [0, 4]\n' >bad2.yml
run merge --mergekit-config bad2.yml -o x
expect_rc 2 "an unknown key is refused"
expect_err "bad2.yml:4:1: .*unknown key .layer_range" "... naming it and where"
printf 'merge_method: della\nbase_model: base\nmodels: [{model: m1}]\n' >bad3.yml
run merge --mergekit-config bad3.yml -o x
expect_err "bad3.yml:1:15: merge_method della is not supported" "a mergekit method zoomerge lacks is named as such"
printf 'merge_method: tie\nmodels: [{model: m1}]\n' >bad4.yml
run merge --mergekit-config bad4.yml -o x
expect_err "bad4.yml:1:15: unknown merge_method 'tie'" "an unknown method is refused"
sed 's/layer_range: \[0, 4\]/layer_range: [0, 3]/' slerp.yml >bad5.yml
run merge --mergekit-config bad5.yml -o x
expect_rc 2 "a slice over some layers only is refused"
expect_err "layer_range ends at 3 but the checkpoint has 4 layers" "... saying why"
printf 'merge_method: dare_ties\nbase_model: base\nmodels: [{model: m1, parameters: {density: 0, weight: 1}}]\n' >bad6.yml
run merge --mergekit-config bad6.yml -o x
expect_err "bad6.yml:3:44: density: expected a number in \(0, 1\]" "DARE with density 0 is refused"
printf 'merge_method: linear\nmodels: [{model: m1, parameters: {weight: .nan}}, {model: m2}]\n' >bad7.yml
run merge --mergekit-config bad7.yml -o x
expect_rc 2 "a NaN weight is refused"
printf 'merge_method: linear\nmodels: [{model: m1}, {model: m2}]\ntokenizer_source: base\n' >tok.yml
run merge --mergekit-config tok.yml -o tok.safetensors
expect_rc 0 "tokenizer_source does not stop the merge"
expect_err "tok.yml:3:19: tokenizer: ignored" "... and is named as ignored"
check "nothing written by the refused merges" test ! -e x
run merge --mergekit-config linear.yml --method ties -o x
expect_rc 2 "--mergekit-config with --method is a usage error"
cd "$SRC" || exit 1
finish
