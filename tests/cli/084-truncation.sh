#!/bin/sh
# Truncated input is refused, never read short: gzip CSV cut at a row
# boundary, in its trailer (each of the last 1..8 bytes) and mid-row;
# plain CSV cut mid-row; streams cut inside a document or in the trailer
# of a model file; IDX cut.  From files and from pipes; exit 1, a message
# that says "truncated", and the output left as it was.
. "$(dirname "$0")/lib.sh"

separable_csv "$T/d.csv" 600 7
gzip -nc "$T/d.csv" > "$T/d.csv.gz"
# Two members split at a row boundary: rows 1-300, then the rest.
head -n 301 "$T/d.csv" | gzip -nc > "$T/a.gz"
tail -n +302 "$T/d.csv" | gzip -nc > "$T/b.gz"
cat "$T/a.gz" "$T/b.gz" > "$T/two.csv.gz"
size() { wc -c < "$1" | tr -d ' '; }
echo "keep" > "$T/before"

# The whole inputs read: 600 rows from one member and from two.
run tensor import --from csv --label label -o "$T/ok.st.gz" "$T/two.csv.gz"
expect_rc 0 "two gzip members read"
run tensor info "$T/ok.st.gz"
check "all 600 rows of two members" grep -q '1 documents, 600 rows\|1 document, 600 rows' "$T/out"

# import_cut DESC FILE PATTERN: refused from the file and from a pipe,
# the output untouched.
import_cut() {
	cp "$T/before" "$T/o.st.gz"
	run tensor import --from csv --label label -o "$T/o.st.gz" "$2"
	expect_rc 1 "$1: file exits 1"
	expect_err "$3" "$1: file says truncated"
	check "$1: output untouched" cmp -s "$T/before" "$T/o.st.gz"
	run sh -c "cat '$2' | tensor import --from csv --label label -o '$T/o.st.gz'"
	expect_rc 1 "$1: pipe exits 1"
	expect_err "<stdin>:.*$3" "$1: pipe says truncated"
	check "$1: output untouched (pipe)" cmp -s "$T/before" "$T/o.st.gz"
}

# Cut at the row boundary: member 1 whole, member 2 only its header; the
# data read so far is 300 complete rows.
head -c $(($(size "$T/a.gz") + 10)) "$T/two.csv.gz" > "$T/rows.csv.gz"
import_cut "cut at a row boundary" "$T/rows.csv.gz" \
	'truncated \(gzip stream ends inside member 2\)'

# The trailer: every one of the last 8 bytes (CRC-32, length) counts.
k=1
while [ $k -le 8 ]; do
	head -c $(($(size "$T/d.csv.gz") - k)) "$T/d.csv.gz" > "$T/t$k.csv.gz"
	import_cut "last $k bytes cut" "$T/t$k.csv.gz" \
		'truncated \(gzip stream ends inside member 1\)'
	k=$((k + 1))
done

# Mid-row in gzip: truncation, not a field-count error.
head -c $(($(size "$T/d.csv.gz") / 2)) "$T/d.csv.gz" > "$T/mid.csv.gz"
import_cut "cut mid-row (gzip)" "$T/mid.csv.gz" \
	'truncated \(gzip stream ends inside member 1\)'
check "cut mid-row is not blamed on the field count" sh -c "! grep -q fields '$T/err'"

# Mid-row in a plain file: the last row is short and has no newline.
head -c 9000 "$T/d.csv" > "$T/mid.csv"
check "the plain cut really is mid-row" sh -c "tail -c 1 '$T/mid.csv' | od -An -c | grep -vq '\\\\n'"
import_cut "cut mid-row (plain)" "$T/mid.csv" \
	'[0-9]+: truncated \(the last row has [0-9]+ of 5 fields and no newline\)'
# ... while a short row with its newline is still a ragged row.
{ cat "$T/mid.csv"; echo; } > "$T/ragged.csv"
run tensor import --from csv --label label -o "$T/o.st.gz" "$T/ragged.csv"
expect_rc 1 "ragged row exits 1"
expect_err 'ragged.csv:[0-9]+: [0-9] fields, expected 5' "ragged row keeps its message"

# A data stream cut inside a document (gzip and raw) and cut in its
# trailer: every reader refuses it, predict writes nothing.
cat > "$T/arch.yaml" <<'EOF'
input: [4]
loss: cross-entropy
layers:
  - {name: fc1, units: 8, activation: relu}
  - {name: out, units: 4}
EOF
run zoo-add --zoo "$T/zoo" --name m --arch "$T/arch.yaml" --seed 1
expect_rc 0 "zoo-add"
run tensor import --from csv --label label --batch 100 -o "$T/s.st.gz" "$T/d.csv"
expect_rc 0 "import a 6-document stream"
ZM_COMPRESS=0 tensor import --from csv --label label --batch 100 "$T/d.csv" | gzip -dc > "$T/s.st"
head -c $(($(size "$T/s.st.gz") * 2 / 3)) "$T/s.st.gz" > "$T/s-mid.st.gz"
head -c $(($(size "$T/s.st.gz") - 3)) "$T/s.st.gz" > "$T/s-end.st.gz"
head -c $(($(size "$T/s.st") - 100)) "$T/s.st" > "$T/s-raw.st"
for f in s-mid.st.gz s-end.st.gz s-raw.st; do
	cp "$T/before" "$T/p.csv"
	run predict --zoo "$T/zoo" --model m -o "$T/p.csv" "$T/$f"
	expect_rc 1 "predict $f exits 1"
	expect_err "$f: .*truncated" "predict $f says truncated"
	case $f in *.gz) expect_err "$f: truncated \(gzip stream ends inside member [0-9]\)" \
		"predict $f names the member";; esac
	check "predict $f: output untouched" cmp -s "$T/before" "$T/p.csv"
	run sh -c "cat '$T/$f' | predict --zoo '$T/zoo' --model m -o '$T/p.csv'"
	expect_rc 1 "predict $f from a pipe exits 1"
	expect_err "<stdin>: .*truncated" "predict $f from a pipe says truncated"
	run train-step --zoo "$T/zoo" --model m --epochs 1 -o "$T/u.st.gz" "$T/$f"
	expect_rc 1 "train-step $f exits 1"
	expect_err "truncated" "train-step $f says truncated"
	check "train-step $f wrote no update" test ! -e "$T/u.st.gz"
	run tensor info "$T/$f"
	expect_rc 1 "tensor info $f exits 1"
done

# A model file cut in its trailer: the document is whole, the member not.
m=$(ls "$T/zoo/models/m/"v1.safetensors.gz)
k=1
while [ $k -le 8 ]; do
	head -c $(($(size "$m") - k)) "$m" > "$T/model.st.gz"
	run predict --model-file "$T/model.st.gz" "$T/s.st.gz"
	expect_rc 1 "model file without its last $k bytes exits 1"
	expect_err 'model.st.gz: truncated \(gzip stream ends inside member 1\)' \
		"model file without its last $k bytes says truncated"
	k=$((k + 2))
done

# IDX: a gzip image file cut in its trailer, from the file and a pipe, and
# a plain one cut inside an image.
printf '\000\000\010\003\000\000\000\003\000\000\000\002\000\000\000\002' > "$T/img.idx"
printf '\000\001\002\377\012\024\036\050\200\177\376\003' >> "$T/img.idx"
gzip -nc "$T/img.idx" > "$T/img.idx.gz"
head -c $(($(size "$T/img.idx.gz") - 4)) "$T/img.idx.gz" > "$T/cut.idx.gz"
cp "$T/before" "$T/i.st.gz"
run tensor import --from idx --images "$T/cut.idx.gz" -o "$T/i.st.gz"
expect_rc 1 "IDX cut in its gzip trailer exits 1"
expect_err 'cut.idx.gz: truncated \(gzip stream ends inside member 1\)' "IDX cut says truncated"
check "IDX: output untouched" cmp -s "$T/before" "$T/i.st.gz"
run sh -c "cat '$T/cut.idx.gz' | tensor import --from idx --images - -o '$T/i.st.gz'"
expect_rc 1 "IDX cut from a pipe exits 1"
expect_err '<stdin>: truncated \(gzip stream ends inside member 1\)' "IDX pipe says truncated"
head -c 25 "$T/img.idx" > "$T/cut.idx"
run tensor import --from idx --images "$T/cut.idx" -o "$T/i.st.gz"
expect_rc 1 "plain IDX cut inside an image exits 1"
expect_err 'cut.idx: truncated' "plain IDX cut says truncated"
run tensor import --from idx --images "$T/img.idx.gz" -o "$T/i.st.gz"
expect_rc 0 "the whole gzip IDX reads"

finish
