#!/bin/sh
# Bring your own model: PyTorch state dicts into the zoo with one zoo-add
# command and back out with tensor export --state-dict.  Python's standard
# library writes the files exactly as numpy.savez lays them out (stored,
# deflated, ZIP64 members; .npy v1 and v2; f4 and f8) and as safetensors
# does, for an nn.Sequential MLP; predictions are compared with a softmax
# computed independently in Python, the export with the written weights.
# With torch (and numpy) installed, the same round trip runs through
# PyTorch itself: numpy.savez, import, predict, export, strict load.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
if ! [ -x "$PY" ]; then
	echo "# skipped: $PY is absent"
	finish
	exit
fi
cat >"$T/mk.py" <<'PY'
# Writes PyTorch-style state dicts without numpy or torch: .npz archives
# exactly as numpy.savez lays them out (a ZIP of NAME.npy members, .npy
# version 1 headers padded to 64 bytes) and a plain safetensors file; and
# the reference softmax of the MLP in double precision.
import json, struct, sys, zipfile, random

def npy(shape, values, descr="<f4", fortran=False, version=1):
    fmt = {"<f4": "<f", "<f8": "<d", "<f2": "<e", ">f4": ">f"}.get(descr)
    data = b"".join(struct.pack(fmt, v) for v in values) if fmt else b""
    shp = "(" + "".join("%d, " % d for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shp)
    pre = 10 if version == 1 else 12
    hdr += " " * ((64 - (pre + len(hdr) + 1) % 64) % 64) + "\n"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H" if version == 1 else "<I", len(hdr))
    return head + hdr.encode("latin1") + data

def npz(path, arrays, method=zipfile.ZIP_STORED, zip64=False):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, blob in arrays:
            if zip64:   # numpy.savez writes each member this way
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    f.write(blob)
            else:
                z.writestr(name + ".npy", blob)

def safetensors(path, tensors):
    hdr, data = {}, b""
    for name, shape, values in tensors:
        blob = struct.pack("<%df" % len(values), *values)
        hdr[name] = {"dtype": "F32", "shape": shape,
                     "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)

def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]

rng = random.Random(7)
IN, HID, OUT = 4, 8, 3
W1 = [f32(rng.uniform(-1, 1)) for _ in range(HID * IN)]
B1 = [f32(rng.uniform(-0.5, 0.5)) for _ in range(HID)]
W2 = [f32(rng.uniform(-1, 1)) for _ in range(OUT * HID)]
B2 = [f32(rng.uniform(-0.5, 0.5)) for _ in range(OUT)]
params = [("0.weight", [HID, IN], W1), ("0.bias", [HID], B1),
          ("2.weight", [OUT, HID], W2), ("2.bias", [OUT], B2)]
out = sys.argv[1]
json.dump({n: v for n, _, v in params}, open(out + "/params.json", "w"))
f4 = [(n, npy(s, v)) for n, s, v in params]
npz(out + "/seq.npz", f4)
npz(out + "/seq-deflate.npz", f4, zipfile.ZIP_DEFLATED)
npz(out + "/seq-zip64.npz", f4, zipfile.ZIP_DEFLATED, zip64=True)
# Every ZIP64 record (central directory sizes and offsets, the 64-bit end
# record), as zipfile writes them for archives over 4 GiB or 65535 members.
lim = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 16, 2
npz(out + "/seq-zip64cd.npz", f4, zipfile.ZIP_DEFLATED, zip64=True)
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = lim
raw = open(out + "/seq-zip64cd.npz", "rb").read()   # saturate the end record
open(out + "/seq-zip64cd.npz", "wb").write(raw[:-22] + raw[-22:-14] +
    b"\xff" * 4 + b"\xff" * 8 + raw[-2:])
npz(out + "/seq-f8.npz", [(n, npy(s, v, "<f8", version=2)) for n, s, v in params])
npz(out + "/named.npz", [(n.replace("0.", "fc1.").replace("2.", "out."), b) for n, b in f4])
safetensors(out + "/seq.safetensors", params)
# Refusals.
npz(out + "/fortran.npz", [(n, npy(s, v, fortran=len(s) > 1)) for n, s, v in params])
npz(out + "/object.npz", [(params[0][0], npy(params[0][1], [], "|O"))])
npz(out + "/bigend.npz", [(n, npy(s, v, ">f4")) for n, s, v in params])
npz(out + "/transposed.npz", [(n, npy(s[::-1], v)) for n, s, v in params])
npz(out + "/extra.npz", f4 + [("4.weight", npy([2], [1.0, 2.0]))])
npz(out + "/short.npz", f4[:2])
raw = open(out + "/seq.npz", "rb").read()
open(out + "/truncated.npz", "wb").write(raw[:len(raw) // 2])
i = raw.index(b"\x93NUMPY") + 200
open(out + "/badcrc.npz", "wb").write(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:])

# The reference: softmax(W2 relu(W1 x + b1) + b2) in double precision.
rows = [[rng.uniform(-2, 2) for _ in range(IN)] for _ in range(30)]
with open(out + "/x.csv", "w") as f:
    f.write(",".join("f%d" % k for k in range(IN)) + "\n")
    for r in rows:
        f.write(",".join("%.6f" % v for v in r) + "\n")
import math
with open(out + "/ref.csv", "w") as f:
    for r in rows:
        x = [float("%.6f" % v) for v in r]
        h = [max(0.0, sum(W1[j * IN + k] * x[k] for k in range(IN)) + B1[j]) for j in range(HID)]
        z = [sum(W2[j * HID + k] * h[k] for k in range(HID)) + B2[j] for j in range(OUT)]
        m = max(z); e = [math.exp(v - m) for v in z]; s = sum(e)
        f.write(",".join("%.9g" % (v / s) for v in e) + "\n")
PY
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: fc1, units: 8, activation: relu}
  - {name: out, units: 3}
YAML
cp "$T/arch.yaml" "$T/mapped.yaml"
printf 'map: {fc1: "0", out: "2"}\n' >>"$T/mapped.yaml"
check "python writes the state dicts" "$PY" "$T/mk.py" "$T"
run tensor import --from csv -o "$T/x.st" "$T/x.csv"
expect_rc 0 "import the rows"

Z=$T/zoo
# within_ref NAME: the model's probabilities are the reference's, 1e-5.
within_ref() {
	predict --zoo "$Z" --model "$1" "$T/x.st" >"$T/p.csv" &&
	test "$(wc -l <"$T/p.csv")" -eq 31 &&
	tail -n +2 "$T/p.csv" | cut -d, -f3- | paste -d, - "$T/ref.csv" |
	awk -F, '{ for (k = 1; k <= 3; k++) { d = $k - $(k + 3)
		if (d < 0) d = -d; if (d > w) w = d } }
		END { print "max |p - p_ref| =", w; exit !(NR == 30 && w < 1e-5) }'
}
for f in seq seq-deflate seq-zip64 seq-zip64cd seq-f8 named; do
	run zoo-add --zoo "$Z" --name "$f" --arch "$T/arch.yaml" "$T/$f.npz"
	expect_rc 0 "zoo-add --arch imports $f.npz"
	check "$f.npz predicts as the reference within 1e-5" within_ref "$f"
done
run zoo-add --zoo "$Z" --name st --arch "$T/arch.yaml" "$T/seq.safetensors"
expect_rc 0 "zoo-add --arch imports a plain safetensors state dict"
check "the safetensors import predicts as the reference" within_ref st
run sh -c "zoo-add --zoo '$Z' --name stdin --arch '$T/arch.yaml' - <'$T/seq-deflate.npz'"
expect_rc 0 "zoo-add reads an .npz from standard input"
check "the .npz from standard input predicts as the reference" within_ref stdin
run zoo-add --zoo "$Z" --name mapped --arch "$T/mapped.yaml" "$T/seq.npz"
expect_rc 0 "an arch's map: names the modules"
check "the mapped import predicts as the reference" within_ref mapped
run tensor import --from npz -o "$T/seq.st.gz" "$T/seq-deflate.npz"
expect_rc 0 "tensor import --from npz"
run tensor info "$T/seq.st.gz"
check "the stream holds the four arrays with their shapes" sh -c "
	grep -qx '  0.weight F32 \[8, 4\]' '$T/out' &&
	grep -qx '  2.bias F32 \[3\]' '$T/out' &&
	grep -q '1 document, 0 rows, 4 tensors' '$T/out'"
run zoo-add --zoo "$Z" --name conv --arch "$T/arch.yaml" "$T/seq.st.gz"
check "the converted stream imports and predicts alike" within_ref conv

# Export: the state dict comes back under PyTorch's names, bit for bit.
file_of() {
	awk -v n="$1" '$1 == "-" && $2 == "name:" { m = $3 }
		$1 == "file:" && m == n { print $2; exit }' "$Z/zoo.yaml"
}
cat >"$T/cmp.py" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
hdr.pop("__metadata__", None)
want = json.load(open(sys.argv[2]))
names = {k.replace("0.", sys.argv[3] + ".", 1).replace("2.", sys.argv[4] + ".", 1): v
         for k, v in want.items()}
assert set(hdr) == set(names), sorted(hdr)
for k, e in hdr.items():
    a, b = e["data_offsets"]
    got = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    assert e["dtype"] == "F32" and list(got) == names[k], k
print("exported", sorted(hdr))
PY
for m in seq:0:2 named:fc1:out mapped:0:2; do
	name=${m%%:*}; rest=${m#*:}
	run tensor export --state-dict -o "$T/$name.out.safetensors" "$Z/$(file_of "$name")"
	expect_rc 0 "tensor export --state-dict of $name"
	check "$name's export is its state dict (${rest%:*}.*, ${rest#*:}.*) bit for bit" \
		"$PY" "$T/cmp.py" "$T/$name.out.safetensors" "$T/params.json" \
		"${rest%:*}" "${rest#*:}"
done
run zoo-add --zoo "$Z" --name again --arch "$T/arch.yaml" "$T/seq.out.safetensors"
check "the export imports again" within_ref again

# A CNN as nn.Sequential(Conv2d, ReLU, MaxPool2d, Flatten, Linear) names
# its parameters 0.* and 4.*: a zoo CNN exported under those names (map:)
# comes back by order alone and predicts exactly as before.
cat >"$T/cnn.yaml" <<'YAML'
input: [1, 6, 6]
layers:
  - {name: c1, type: conv2d, filters: 2, kernel: 3, activation: relu}
  - {name: p1, type: maxpool2d, size: 2}
  - {name: flat, type: flatten}
  - {name: out, units: 3}
YAML
{ cat "$T/cnn.yaml"; printf 'map: {c1: "0", out: "4"}\n'; } >"$T/cnn-map.yaml"
awk 'BEGIN { s = 99; for (c = 0; c < 36; c++) printf "%sp%d", c ? "," : "", c
	print ""; for (i = 0; i < 20; i++) { for (c = 0; c < 36; c++) {
		s = (s * 1103515245 + 12345) % 2147483648
		printf "%s%.4f", c ? "," : "", s / 2147483648 } print "" } }' >"$T/img.csv"
run tensor import --from csv -o "$T/img.st" "$T/img.csv"
run zoo-add --zoo "$Z" --name cnn --arch "$T/cnn-map.yaml" --seed 5
expect_rc 0 "a CNN with a map"
run tensor export --state-dict -o "$T/cnn.safetensors" "$Z/$(file_of cnn)"
expect_rc 0 "the CNN's state dict"
check "the CNN's state dict has nn.Sequential's names" "$PY" -c '
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
h = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]); h.pop("__metadata__", None)
want = {"0.weight": [2, 1, 3, 3], "0.bias": [2], "4.weight": [3, 8], "4.bias": [3]}
sys.exit(0 if {k: e["shape"] for k, e in h.items()} == want else 1)' "$T/cnn.safetensors"
run zoo-add --zoo "$Z" --name cnn2 --arch "$T/cnn.yaml" "$T/cnn.safetensors"
expect_rc 0 "the CNN comes back by order"
check "and predicts exactly as the original" sh -c "
	predict --zoo '$Z' --model cnn '$T/img.st' >'$T/c1.csv' &&
	predict --zoo '$Z' --model cnn2 '$T/img.st' >'$T/c2.csv' &&
	test \$(wc -l <'$T/c1.csv') -eq 21 && cmp '$T/c1.csv' '$T/c2.csv'"

# Refusals: exit 1 naming the file, member or tensor, the zoo untouched.
cp "$Z/zoo.yaml" "$T/zoo.before"
refuse() {
	run zoo-add --zoo "$Z" --name bad --arch "$T/arch.yaml" "$T/$1"
	expect_rc 1 "$1 is refused"
	expect_err "$2" "$1: the message says why"
}
refuse fortran.npz "member '0.weight.npy': an array in Fortran order"
refuse object.npz "object array.*pickle"
refuse bigend.npz "big-endian dtype '>f4'"
refuse transposed.npz "tensor '0.weight' has shape \[4, 8\], layer 'fc1' needs \[8, 4\]"
refuse extra.npz "3 numbered modules.*2 layers with parameters"
refuse short.npz "1 numbered modules"
refuse truncated.npz "truncated.npz: not a valid .npz"
refuse badcrc.npz "CRC mismatch"
run zoo-add --zoo "$Z" --name bad --arch "$T/mapped.yaml" "$T/named.npz"
expect_rc 1 "a map: the file does not follow is refused"
expect_err "no tensor '0.weight' for layer 'fc1'" "the map error names both sides"
check "refusals leave the zoo as it was" cmp "$Z/zoo.yaml" "$T/zoo.before"
printf 'input: [4]\nlayers:\n  - {name: fc1, units: 8}\nmap: {fc2: "0"}\n' >"$T/badmap.yaml"
run zoo-add --zoo "$Z" --name bad --arch "$T/badmap.yaml" "$T/seq.npz"
expect_rc 2 "a map: naming no layer is a configuration error"
expect_err "map: 'fc2' is not a layer" "the map error names the key"
run zoo-add --zoo "$Z" --name bad "$T/seq.npz"
expect_rc 2 "an .npz without --arch is a usage error"
expect_err "seq.npz: a NumPy archive holds no architecture; give it with --arch" \
	"the message says to give --arch"
run zoo-add --zoo "$Z" --name bad "$T/seq.safetensors"
expect_rc 1 "a plain safetensors state dict without --arch is refused"
expect_err "no zm.arch metadata" "the message says it has no architecture"
run tensor import --from npz --label y "$T/seq.npz"
expect_rc 2 "--from npz with --label is a usage error"
run tensor export "$T/seq.st.gz"
expect_rc 2 "export without --to or --state-dict is a usage error"
run tensor export --state-dict -o "$T/x.safetensors" "$T/seq.st.gz"
expect_rc 1 "--state-dict of a file that is no model fails"
check "and writes nothing" test ! -e "$T/x.safetensors"
run tensor export --state-dict -o /dev/full "$Z/$(file_of seq)"
expect_rc 1 "--state-dict to a full disk fails"

# PyTorch itself, when installed: numpy.savez and a safetensors file of a
# trained-shape nn.Sequential, one zoo-add each, predictions within 1e-5,
# and the export loaded with load_state_dict(strict=True).
if "$PY" -c 'import torch, numpy' 2>/dev/null; then
	cat >"$T/torchref.py" <<'PY'
import json, struct, subprocess, sys
import numpy as np, torch
t, mode = sys.argv[1], sys.argv[2]
torch.manual_seed(3)
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                          torch.nn.Linear(8, 3))
sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
if mode == "save":
    np.savez(t + "/torch.npz", **{k: v.numpy() for k, v in sd.items()})
    hdr, data = {}, b""
    for k, v in sd.items():
        b = v.numpy().astype("<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape),
                  "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(hdr).encode()
    open(t + "/torch.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
elif mode == "predict":
    rows = [list(map(float, l.split(","))) for l in open(t + "/x.csv").readlines()[1:]]
    p = torch.softmax(net(torch.tensor(rows)), 1).detach().numpy()
    ours = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1)[:, 2:]
    print("max |p - p_torch| =", abs(ours - p).max())
    sys.exit(0 if abs(ours - p).max() < 1e-5 else 1)
else:
    raw = open(sys.argv[3], "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    hdr.pop("__metadata__", None)
    back = {k: torch.frombuffer(bytearray(data[e["data_offsets"][0]:e["data_offsets"][1]]),
                                dtype=torch.float32).reshape(e["shape"]) for k, e in hdr.items()}
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    fresh.load_state_dict(back, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())
    print("strict load_state_dict: ok")
PY
	check "PyTorch saves the MLP with numpy.savez and safetensors" \
		"$PY" "$T/torchref.py" "$T" save
	for f in torch.npz torch.safetensors; do
		run zoo-add --zoo "$Z" --name "t-${f#*.}" --arch "$T/arch.yaml" "$T/$f"
		expect_rc 0 "zoo-add imports PyTorch's $f"
		run predict --zoo "$Z" --model "t-${f#*.}" "$T/x.st"
		cp "$T/out" "$T/tp.csv"
		check "$f predicts as PyTorch within 1e-5" \
			"$PY" "$T/torchref.py" "$T" predict "$T/tp.csv"
		run tensor export --state-dict -o "$T/t.safetensors" "$Z/$(file_of "t-${f#*.}")"
		check "PyTorch loads the export of $f strictly" \
			"$PY" "$T/torchref.py" "$T" load "$T/t.safetensors"
	done
else
	echo "# skipped: the PyTorch round trip ($PY has no torch or numpy)"
fi
finish
