#!/bin/sh
# Resource limits: document sizes are checked before anything is
# allocated (ZM_MAX_MEMORY, train-step --max-memory), a small address
# space (ulimit -v) is "out of memory" and exit 1, a file size limit
# (ulimit -f) is a reported write error that leaves no partial output,
# every program that writes fails loudly on /dev/full, and NaN or Inf
# never enter a saved model.
. "$(dirname "$0")/lib.sh"

# A small separable problem: class = which of 4 features is largest.
separable_csv "$T/data.csv" 400 7 1
tensor import --from csv --label label -o "$T/data.sgz" "$T/data.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 8, activation: tanh}
  - {name: out, units: 4}
YAML
Z=$T/zoo
zoo-add --zoo "$Z" --name m --arch "$T/arch.yaml" --seed 3 2>/dev/null
M=$Z/models/m/v1.safetensors.gz
cp "$Z/zoo.yaml" "$T/before.yaml"

# Nothing in the zoo but the index, the lock and the version files.
zoo_clean() {
	! find "$1" -name '.*.tmp.*' | grep -q . &&
	cmp -s "$1/zoo.yaml" "$2" &&
	test "$(find "$1/models" -type f | wc -l)" -eq "$3"
}

# ---- size caps checked before allocating ----

# Valgrind and ASan (SANITIZE=1, whose shadow memory alone takes
# terabytes of address space) cannot run under ulimit -v.
limit_as=yes
[ -n "${ZM_VALGRIND:-}" ] && limit_as=
grep -q __asan_init "$BIN/tensor" 2>/dev/null && limit_as=

# Headers that promise a terabyte or an absurd header length: refused
# from the header alone, so a 200 MB address space is plenty.
small_as="ulimit -v 200000;"
[ -n "$limit_as" ] || small_as=
le64() {	# prints the 8 bytes of $1 as a little-endian u64
	n=$1; i=0
	while [ "$i" -lt 8 ]; do
		printf "\\$(printf '%03o' $((n % 256)))"
		n=$((n / 256)); i=$((i + 1))
	done
}
hdr='{"__metadata__":{"zm.kind":"data"},"x":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}}'
{ le64 ${#hdr}; printf '%s' "$hdr"; } >"$T/tera.st"
run sh -c "$small_as tensor export --to csv '$T/tera.st'"
expect_rc 1 "a document claiming 1 TiB is refused"
expect_err "exceeds the limit of [0-9]+ bytes" "before allocating, naming the limit"
{ le64 4611686018427387904; printf '{}'; } >"$T/hlen.st"
run sh -c "$small_as tensor info '$T/hlen.st'"
expect_rc 1 "a header length of 2^62 is refused"
expect_err "bad header length" "and named"

# ZM_MAX_MEMORY lowers the cap for every stream reader.
run env ZM_MAX_MEMORY=1K tensor export --to csv "$T/data.sgz"
expect_rc 1 "ZM_MAX_MEMORY=1K refuses a 9.6 kB document"
expect_err "exceeds the limit of 1024 bytes \(ZM_MAX_MEMORY\)" "naming the variable"
run env ZM_MAX_MEMORY=1K predict --zoo "$Z" --model m "$T/data.sgz"
expect_rc 1 "predict honours ZM_MAX_MEMORY"
run env ZM_MAX_MEMORY=100 zoo-add --zoo "$Z" --name copy "$M"
expect_rc 1 "zoo-add honours ZM_MAX_MEMORY for model files"
run env ZM_MAX_MEMORY=lots tensor info "$T/data.sgz"
expect_rc 2 "a malformed ZM_MAX_MEMORY is a usage error, not the default"
expect_err "ZM_MAX_MEMORY.*'lots'" "naming the variable and its value"
run env ZM_MAX_MEMORY=1M tensor export --to csv "$T/data.sgz"
expect_rc 0 "a cap above the document size reads it"

# train-step --max-memory bounds the data it keeps (4 floats + a label
# per row: 80000 rows need about 1.9 MB).
separable_csv "$T/big.csv" 80000 7 1
tensor import --from csv --label label -o "$T/big.sgz" "$T/big.csv"
run train-step --zoo "$Z" --model m --max-memory 1 --apply "$T/big.sgz"
expect_rc 1 "--max-memory 1 refuses 1.9 MB of data"
expect_err "more than the 1 MiB allowed \(--max-memory\)" "and says which limit"
run train-step --zoo "$Z" --model m --max-memory 0 "$T/big.sgz"
expect_rc 2 "--max-memory 0 is a usage error"
check "the zoo is unchanged" zoo_clean "$Z" "$T/before.yaml" 1

# ---- a small address space is out of memory, not a crash ----

if [ -n "$limit_as" ]; then

	# A truncated document whose header asks for 1 GiB (under the default
	# cap): the reader allocates before it can know the data is missing.
	hdr='{"__metadata__":{"zm.kind":"data"},"x":{"dtype":"F32","shape":[67108864,4],"data_offsets":[0,1073741824]}}'
	{ le64 ${#hdr}; printf '%s' "$hdr"; printf '%064d' 0; } >"$T/gig.st"
	for p in "tensor export --to csv" "predict --zoo $Z --model m" \
		 "train-step --zoo $Z --model m --apply"; do
		run sh -c "ulimit -v 300000; $p '$T/gig.st' >/dev/null"
		expect_rc 1 "ulimit -v: ${p%% *} exits 1"
		expect_err "out of memory" "ulimit -v: ${p%% *} says out of memory"
	done
	printf 'input: [4096]\nlayers:\n  - {name: big, units: 65536}\n  - {name: out, units: 4}\n' >"$T/huge.yaml"
	run sh -c "ulimit -v 400000; zoo-add --zoo '$Z' --name huge --arch '$T/huge.yaml'"
	expect_rc 1 "ulimit -v: a 1 GiB model is out of memory for zoo-add"
	expect_err "out of memory" "and says so"
	check "the zoo is unchanged after running out of memory" zoo_clean "$Z" "$T/before.yaml" 1
fi

# ---- a file size limit is a write error, with no partial output ----

# ulimit -f counts 512-byte blocks: 100 blocks is 51200 bytes, less than
# any output below.  Programs ignore SIGXFSZ, so the write fails with
# EFBIG instead of the signal killing them (exit 153).
mkdir "$T/fs"
run sh -c "ulimit -f 100; tensor import --from csv --label label -o '$T/fs/big.sgz' '$T/big.csv'"
expect_rc 1 "ulimit -f: tensor import -o exits 1"
expect_err "File too large" "ulimit -f: and says why"
run sh -c "ulimit -f 100; tensor export --to csv -o '$T/fs/big.csv' '$T/big.sgz'"
expect_rc 1 "ulimit -f: tensor export -o exits 1"
check "ulimit -f: no output and no temporary file is left" test -z "$(ls -A "$T/fs")"
run sh -c "ulimit -f 100; tensor export --to csv '$T/big.sgz' >'$T/fs/stdout.csv'"
expect_rc 1 "ulimit -f: writing standard output past the limit exits 1"
expect_err "write error" "ulimit -f: standard output's error is reported"
rm -f "$T/fs/stdout.csv"
printf 'input: [64]\nlayers:\n  - {name: wide, units: 512}\n  - {name: out, units: 4}\n' >"$T/wide.yaml"
run sh -c "ulimit -f 100; ZM_COMPRESS=0 zoo-add --zoo '$Z' --name wide --arch '$T/wide.yaml'"
expect_rc 1 "ulimit -f: zoo-add of a model larger than the limit exits 1"
expect_err "File too large" "ulimit -f: zoo-add says why"
check "ulimit -f: the zoo is unchanged, no temporary file" zoo_clean "$Z" "$T/before.yaml" 1
check "ulimit -f: no directory for the refused model" test ! -e "$Z/models/wide"

# ---- /dev/full: every program that writes fails loudly ----

if [ -w /dev/full ]; then
	merge --method linear -o "$T/merged.sgz" "$M" "$M" 2>/dev/null
	printf 'slices:\n  - {name: all, default: true}\n' >"$T/rules.yaml"
	slice --rules "$T/rules.yaml" --out-dir "$T/slices" "$T/data.sgz" >/dev/null 2>&1
	for p in "tensor info $T/data.sgz" \
		 "tensor import --from csv --label label $T/data.csv" \
		 "tensor export --to csv $T/data.sgz" \
		 "zoo-ls --zoo $Z" "zoo-ls --zoo $Z --format yaml" \
		 "train-step --zoo $Z --model m --epochs 1 $T/data.sgz" \
		 "predict --zoo $Z --model m $T/data.sgz" \
		 "predict --zoo $Z --model m --output stream $T/data.sgz" \
		 "merge --method linear -o - $M $M" \
		 "slice --rules $T/rules.yaml --out-dir $T/s2 $T/data.sgz" \
		 "assign --zoo $Z $T/slices/all.safetensors.gz" \
		 "granctl --zoo $Z" \
		 "zoo-add --help"; do
		run sh -c "$p >/dev/full"
		expect_rc 1 "/dev/full: ${p%% $T*} exits 1"
		expect_err "write error|No space" "/dev/full: ${p%% $T*} says why"
	done
	# The log is written out before the zoo changes (train-step(1)): a
	# full disk stops the run with the zoo as it was.
	cp -r "$Z" "$T/zlog"
	cp "$Z/zoo.yaml" "$T/zlog.before"
	run train-step --zoo "$T/zlog" --model m --epochs 1 --apply --log /dev/full "$T/data.sgz"
	expect_rc 1 "/dev/full: train-step --apply --log to a full disk exits 1"
	expect_err "/dev/full: write error" "/dev/full: and names the log"
	check "/dev/full: nothing was applied" sh -c "cmp -s '$T/zlog/zoo.yaml' '$T/zlog.before' && test ! -e '$T/zlog/models/m/v2.safetensors.gz'"
	check "/dev/full: the zoo named in the test is untouched" zoo_clean "$Z" "$T/before.yaml" 1
fi

# ---- NaN and Inf never enter a saved model ----

# Patch the first weight of a model to NaN and another to -Inf in the
# uncompressed document: the data starts after the 8-byte length and the
# header.
zcat "$M" >"$T/m.st"
n=$(od -An -tu8 -N8 "$T/m.st" | tr -d ' ')
cp "$T/m.st" "$T/nan.st"
printf '\000\000\300\177' | dd of="$T/nan.st" bs=1 seek=$((8 + n)) conv=notrunc 2>/dev/null
cp "$T/m.st" "$T/inf.st"
printf '\000\000\200\377' | dd of="$T/inf.st" bs=1 seek=$((8 + n + 20)) conv=notrunc 2>/dev/null
check "the patched files differ from the model" sh -c "! cmp -s '$T/m.st' '$T/nan.st' && ! cmp -s '$T/m.st' '$T/inf.st'"
run zoo-add --zoo "$Z" --name nan "$T/nan.st"
expect_rc 1 "zoo-add refuses a model holding NaN"
expect_err "hidden.weight.*element 0" "naming the tensor and element"
run zoo-add --zoo "$Z" --name m "$T/inf.st"
expect_rc 1 "zoo-add refuses a new version holding -Inf"
expect_err "hidden.weight.*element 5" "naming the tensor and element"
run merge --method linear -o "$T/merged-nan.sgz" "$T/nan.st" "$M"
expect_rc 1 "merge refuses a model holding NaN"
check "and writes nothing" test ! -e "$T/merged-nan.sgz"
run predict --model-file "$T/nan.st" "$T/data.sgz"
expect_rc 1 "predict refuses a model holding NaN"

# A linear model on inputs near 6e17 (inside the CSV limit) with a large learning rate diverges
# within a few steps: refused, nothing written, the zoo unchanged.
printf 'input: [4]\nlayers:\n  - {name: out, units: 4}\n' >"$T/lin.yaml"
zoo-add --zoo "$Z" --name lin --arch "$T/lin.yaml" --seed 3 2>/dev/null
cp "$Z/zoo.yaml" "$T/before2.yaml"
separable_csv "$T/e18.csv" 400 7 6e17
tensor import --from csv --label label -o "$T/e18.sgz" "$T/e18.csv"
run train-step --zoo "$Z" --model lin --lr 1000 --epochs 5 --apply --quiet "$T/e18.sgz"
expect_rc 1 "a diverging train-step --apply is refused"
expect_err "not finite \(diverged" "and says it diverged"
run train-step --zoo "$Z" --model lin --lr 1000 --epochs 5 -o "$T/div.sgz" "$T/e18.sgz"
expect_rc 1 "a diverging train-step -o is refused"
check "and writes no update" test ! -e "$T/div.sgz"
# Inputs near 1e30 would make training diverge (their squares overflow
# F32): the CSV reader refuses the first with its line and column, so
# nothing is trained on them.
separable_csv "$T/e30.csv" 400 7 1e30
run tensor import --from csv --label label -o "$T/e30.sgz" "$T/e30.csv"
expect_rc 1 "inputs near 1e30 are refused at import"
expect_err "e30.csv:2:1: column 'f0': .* is beyond" "with line and column"
check "and nothing is written" test ! -e "$T/e30.sgz"
check "after the refused runs the zoo is unchanged" zoo_clean "$Z" "$T/before2.yaml" 2
for f in $(find "$Z/models" -type f); do
	tensor export --to csv "$f" >/dev/null 2>&1 && { fail "$f is not a model"; continue; }
	zcat "$f" >"$T/check.st"
	run zoo-add --zoo "$T/scratch" --name x "$T/check.st"
	expect_rc 0 "every stored model loads with finite values (${f#$Z/})"
	rm -rf "$T/scratch"
done

finish
