#!/bin/sh
# tensor: import of IDX files written here byte by byte and of the real
# Fashion-MNIST training set, info over gzip, raw and concatenated streams,
# CSV round trips, and the error paths (usage 2, data 1, full disk).
. "$(dirname "$0")/lib.sh"

FM=/usr/share/datasets/fashion-mnist

# A 3-image 2x2 IDX file and its labels, written with printf.
printf '\000\000\010\003\000\000\000\003\000\000\000\002\000\000\000\002' > "$T/img.idx"
printf '\000\001\002\377\012\024\036\050\200\177\376\003' >> "$T/img.idx"
printf '\000\000\010\001\000\000\000\003\007\000\011' > "$T/lbl.idx"
gzip -c "$T/img.idx" > "$T/img.idx.gz"

run tensor import --from idx --images "$T/img.idx.gz" --labels "$T/lbl.idx" -o "$T/tiny.safetensors.gz"
expect_rc 0 "import of a tiny IDX"
run sh -c "tensor import --from idx --images '$T/img.idx' --labels '$T/lbl.idx' --batch 2 | tensor info -"
expect_rc 0 "import piped into info"
check "info lists x, y, id of the first batch" grep -q '^  x U8 \[2, 4\]$' "$T/out"
check "info lists the second batch" grep -q '^<stdin>: document 2: data$' "$T/out"
check "info shows the scale" grep -q '^  zm.scale = 0.00392156886$' "$T/out"
check "info summary" grep -q '^<stdin>: 2 documents, 3 rows, 6 tensors, 60 bytes$' "$T/out"

run tensor import --from idx --images "$T/img.idx" --shape image -o "$T/img4.safetensors.gz"
run tensor info "$T/img4.safetensors.gz"
check "--shape image gives [n, 1, rows, cols]" grep -q '^  x U8 \[3, 1, 2, 2\]$' "$T/out"
check "no labels, no y" sh -c "! grep -q '^  y ' '$T/out'"

# Export equals the IDX bytes times 1/255 (computed here by awk from od).
run tensor export --to csv "$T/tiny.safetensors.gz"
expect_rc 0 "export of the tiny import"
od -An -v -tu1 -j16 "$T/img.idx" | tr -s ' ' '\n' | grep -v '^$' > "$T/bytes"
tail -n +2 "$T/out" > "$T/rows"
check "export header" sh -c "head -1 '$T/out' | grep -qx 'id,x_0,x_1,x_2,x_3,y'"
check "export values are bytes/255, labels and ids" awk -F, -v bytes="$T/bytes" '
	BEGIN { n = 0; while ((getline b < bytes) > 0) px[n++] = b; split("7 0 9", lab, " ") }
	{ if ($1 != NR - 1) exit 1
	  for (k = 0; k < 4; k++) { d = $(k + 2) - px[(NR - 1) * 4 + k] / 255; if (d > 1e-7 || d < -1e-7) exit 1 }
	  if ($6 != lab[NR]) exit 1; rows++ }
	END { exit rows != 3 }' "$T/rows"

# Uncompressed input, and two gzip members one after the other.
zcat "$T/tiny.safetensors.gz" > "$T/tiny.safetensors"
run sh -c "zcat '$T/tiny.safetensors.gz' | tensor info -"
check "info reads uncompressed input" grep -q '^<stdin>: 1 document, 3 rows' "$T/out"
run sh -c "cat '$T/tiny.safetensors.gz' '$T/img4.safetensors.gz' | tensor info"
check "info reads concatenated members" grep -q '^<stdin>: 2 documents, 6 rows' "$T/out"
run tensor info "$T/tiny.safetensors.gz" "$T/tiny.safetensors"
check "info of several files: one summary each" test "$(grep -c ' 1 document, 3 rows' "$T/out")" -eq 2

# CSV round trip: quoted names, string classes, an integer id column.
cat > "$T/in.csv" <<'EOF'
id,"a,b",c,kind
3,0.5,-2,dog
7,1000,3.25,cat
9,-0.125,0,"bird, small"
EOF
run sh -c "tensor import --from csv --label kind --batch 2 < '$T/in.csv' | tensor export --to csv"
expect_rc 0 "csv import | export"
check "csv round trip equals the input" cmp "$T/in.csv" "$T/out"
run sh -c "tensor import --from csv --label kind '$T/in.csv' | tensor info"
check "classes in sorted order" grep -q 'zm.classes = \["bird, small","cat","dog"\]' "$T/out"
check "feature names" grep -q 'zm.columns = \["a,b","c"\]' "$T/out"
printf 'u,v\n1,2\n3,4,5\n' > "$T/ragged.csv"
run tensor import --from csv "$T/ragged.csv"
expect_rc 1 "ragged csv exits 1"
expect_err "ragged.csv:3: 3 fields, expected 2" "ragged row: line number"
printf 'u,v\n1,2\n3,abc\n' > "$T/nan.csv"
run tensor import --from csv "$T/nan.csv"
expect_rc 1 "non-number exits 1"
expect_err "nan.csv:3:2: column 'v': expected a number, got 'abc'" "non-number: line and column"
run tensor import --from csv --label nope "$T/nan.csv"
expect_rc 2 "unknown --label column exits 2"

# The real Fashion-MNIST training set: all 60000 rows, then the first rows
# of the export against the IDX bytes / 255 computed by od and awk.
# (Too slow under valgrind, which the tiny files above cover.)
if [ -r "$FM/train-images-idx3-ubyte.gz" ] && [ -z "${ZM_VALGRIND:-}" ]; then
	run tensor import --from idx --images "$FM/train-images-idx3-ubyte.gz" \
		--labels "$FM/train-labels-idx1-ubyte.gz" -o "$T/train.safetensors.gz"
	expect_rc 0 "import of Fashion-MNIST train"
	run tensor info "$T/train.safetensors.gz"
	check "60000 rows in 15 batches" grep -q 'train.safetensors.gz: 15 documents, 60000 rows, 45 tensors' "$T/out"
	tensor export --to csv "$T/train.safetensors.gz" 2>/dev/null | head -n 201 | tail -n +2 > "$T/rows"
	zcat "$FM/train-images-idx3-ubyte.gz" | od -An -v -tu1 -j16 -N156800 | tr -s ' ' '\n' | grep -v '^$' > "$T/bytes"
	zcat "$FM/train-labels-idx1-ubyte.gz" | od -An -v -tu1 -j8 -N200 | tr -s ' ' '\n' | grep -v '^$' > "$T/labels"
	check "first 200 exported rows equal the IDX bytes / 255" awk -F, -v bytes="$T/bytes" -v labels="$T/labels" '
		BEGIN { n = 0; while ((getline b < bytes) > 0) px[n++] = b
		        n = 0; while ((getline b < labels) > 0) lab[n++] = b }
		{ if (NF != 786 || $1 != NR - 1 || $786 != lab[NR - 1]) exit 1
		  for (k = 0; k < 784; k++) { d = $(k + 2) - px[(NR - 1) * 784 + k] / 255; if (d > 1e-7 || d < -1e-7) exit 1 }
		  rows++ }
		END { exit rows != 200 }' "$T/rows"
fi

# Failures: a full disk, usage errors, corrupt input.
run tensor import --from idx --images "$T/img.idx" -o /dev/full
expect_rc 1 "-o /dev/full exits 1"
expect_err "tensor: .*(space|full)" "-o /dev/full says why"
run sh -c "tensor export --to csv '$T/tiny.safetensors.gz' > /dev/full"
expect_rc 1 "export to a full disk exits 1"
run tensor import --from idx --bogus
expect_rc 2 "unknown option exits 2"
run tensor import --from idx
expect_rc 2 "missing --images exits 2"
expect_err "needs --images" "missing --images says so"
run tensor import --from idx --images "$T/img.idx" --batch 0
expect_rc 2 "--batch 0 exits 2"
run tensor import --from idx --images "$T/img.idx" --batch 12x
expect_rc 2 "--batch 12x exits 2"
run tensor frobnicate
expect_rc 2 "unknown command exits 2"
run tensor
expect_rc 2 "no command exits 2"
run tensor import --from idx --images "$T/img.idx" --compress 10
expect_rc 2 "--compress 10 exits 2"
run tensor --help
expect_rc 0 "--help exits 0"
check "--help prints the synopsis" grep -q 'tensor export --to csv' "$T/out"
run tensor --version
expect_rc 0 "--version exits 0"

head -c 20 "$T/img.idx" > "$T/cut.idx"
run tensor import --from idx --images "$T/cut.idx" -o "$T/cut.safetensors.gz"
expect_rc 1 "truncated IDX exits 1"
expect_err "cut.idx: truncated" "truncated IDX names the file"
check "nothing written on failure" test ! -e "$T/cut.safetensors.gz"
printf '\000\000\010\001\000\000\000\002\000\001' > "$T/two.idx"
run tensor import --from idx --images "$T/img.idx" --labels "$T/two.idx"
expect_rc 1 "label count mismatch exits 1"
expect_err "two.idx: 2 labels for 3 images" "count mismatch names the file"
run tensor import --from idx --images "$T/lbl.idx"
expect_rc 1 "labels given as images exits 1"
expect_err "lbl.idx: IDX magic 0x00000801" "bad magic names the file"
printf 'this is not a stream at all' > "$T/junk.safetensors.gz"
run tensor info "$T/junk.safetensors.gz"
expect_rc 1 "corrupt stream exits 1"
expect_err "junk.safetensors.gz" "corrupt stream names the file"
head -c $(($(wc -c < "$T/tiny.safetensors") - 5)) "$T/tiny.safetensors" > "$T/short.safetensors"
run tensor export --to csv "$T/short.safetensors"
expect_rc 1 "truncated stream exits 1 on export"
expect_err "short.safetensors" "truncated stream names the file"

# Binary output to a terminal is refused (when script(1) can make one).
if command -v script >/dev/null 2>&1; then
	run script -qec "tensor import --from idx --images '$T/img.idx'" /dev/null
	expect_rc 2 "binary output to a terminal is refused"
fi

finish
