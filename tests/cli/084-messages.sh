#!/bin/sh
# Clear messages for the mistakes a user makes: CSV or IDX given where a
# stream is read, random bytes, a header-only CSV, a number past F32, an
# empty --updates stream, --min-rows, a usage error as one line and a hint,
# and --help listing every option with its default.
. "$(dirname "$0")/lib.sh"

cat > "$T/arch.yaml" <<'EOF'
input: [4]
loss: cross-entropy
layers:
  - {name: fc1, units: 8, activation: relu}
  - {name: out, units: 4}
EOF
run zoo-add --zoo "$T/zoo" --name m --arch "$T/arch.yaml" --seed 1
expect_rc 0 "zoo-add"
separable_csv "$T/d.csv" 40 3
gzip -nc "$T/d.csv" > "$T/d.csv.gz"

# A CSV without --from csv, plain or gzip, file or pipe: exit 1 (a data
# error, not a usage error) and the advice.
for f in d.csv d.csv.gz; do
	run predict --zoo "$T/zoo" --model m "$T/$f"
	expect_rc 1 "predict of $f without --from csv exits 1"
	expect_err "$f: looks like CSV, not a zoomerge stream \\(read it with --from csv" "predict of $f says to give --from csv"
done
run sh -c "predict --zoo '$T/zoo' --model m < '$T/d.csv'"
expect_err "<stdin>: looks like CSV, not a zoomerge stream \\(read it with --from csv" "the advice from a pipe"
run train-step --zoo "$T/zoo" --model m -o "$T/u.st.gz" "$T/d.csv"
expect_rc 1 "train-step of a CSV exits 1"
expect_err "d.csv: looks like CSV" "train-step says it looks like CSV"
check "train-step wrote nothing" test ! -e "$T/u.st.gz"
printf '\000\000\010\003\000\000\000\001\000\000\000\002\000\000\000\002abcd' > "$T/img.idx"
run tensor info "$T/img.idx"
expect_rc 1 "an IDX file given as a stream exits 1"
expect_err "img.idx: looks like IDX, not a zoomerge stream \\(read it with --from idx --images FILE" "and says it looks like IDX"

# Random bytes: exit 1 and what they are not, not a usage error.
awk 'BEGIN { srand(5); for (i = 0; i < 300; i++) printf "%c", int(rand() * 256) }' > "$T/rnd.bin"
run predict --zoo "$T/zoo" --model m "$T/rnd.bin"
expect_rc 1 "random bytes exit 1"
expect_err "rnd.bin: not a zoomerge stream, gzip or CSV" "random bytes: what they are not"
run tensor info "$T/rnd.bin"
expect_rc 1 "tensor info of random bytes exits 1"

# A header-only CSV: no data rows for slice (not a rules error), and the
# empty input of predict is 0 rows unless --min-rows asks for more.
head -n 1 "$T/d.csv" > "$T/head.csv"
cat > "$T/rules.yaml" <<'EOF'
slices:
  - {name: one, where: {label: [1]}}
  - {name: rest, default: true}
EOF
run slice --rules "$T/rules.yaml" --out-dir "$T/sl" --from csv --label label "$T/head.csv"
expect_rc 1 "slice of a header-only CSV exits 1"
expect_err "head.csv: no data rows" "slice says no data rows"
check "slice blames the data, not the rules" sh -c "! grep -q rules.yaml '$T/err'"
printf 'clusters: {k: 2, seed: 1}\n' > "$T/k.yaml"
run slice --rules "$T/k.yaml" --out-dir "$T/sk" --from csv --label label "$T/head.csv"
expect_rc 1 "k-means slice of a header-only CSV exits 1"
expect_err "head.csv: no data rows" "k-means slice says no data rows"
run sh -c "slice --rules '$T/k.yaml' --out-dir '$T/sk' --from csv --label label < '$T/head.csv'"
expect_rc 1 "k-means slice of a header-only CSV on standard input exits 1"
expect_err "<stdin>: no data rows" "and names standard input, not its spooled copy"
run predict --zoo "$T/zoo" --model m --from csv --label label --progress "$T/head.csv"
expect_rc 0 "predict of a header-only CSV exits 0"
expect_err "predict: 0 rows" "and counts 0 rows"
check "and writes the header only" test "$(wc -l < "$T/out")" -eq 1
: > "$T/empty"
run predict --zoo "$T/zoo" --model m --progress "$T/empty"
expect_rc 0 "predict of an empty stream exits 0"
expect_err "predict: 0 rows" "an empty stream is 0 rows"
cp "$T/d.csv" "$T/keep.csv"
run predict --zoo "$T/zoo" --model m --min-rows 1 -o "$T/keep.csv" "$T/empty"
expect_rc 1 "--min-rows 1 makes an empty input exit 1"
expect_err "empty: 0 rows, fewer than --min-rows 1" "--min-rows names the count"
check "--min-rows: output untouched" cmp -s "$T/d.csv" "$T/keep.csv"
run predict --zoo "$T/zoo" --model m --from csv --label label --min-rows 41 "$T/d.csv"
expect_rc 1 "predict --min-rows 41 of 40 rows exits 1"
expect_err "d.csv: 40 rows, fewer than --min-rows 41" "predict --min-rows counts CSV rows"
run predict --zoo "$T/zoo" --model m --from csv --label label --min-rows 40 "$T/d.csv"
expect_rc 0 "predict --min-rows 40 of 40 rows exits 0"
run tensor import --from csv --label label -o "$T/d.st.gz" "$T/d.csv"
expect_rc 0 "import"
run train-step --zoo "$T/zoo" --model m --min-rows 41 -o "$T/u.st.gz" "$T/d.st.gz"
expect_rc 1 "train-step --min-rows 41 of 40 rows exits 1"
expect_err "d.st.gz: 40 rows, fewer than --min-rows 41" "train-step --min-rows names the count"
check "train-step --min-rows wrote nothing" test ! -e "$T/u.st.gz"
run train-step --zoo "$T/zoo" --model m --min-rows 40 -o "$T/u.st.gz" --quiet "$T/d.st.gz"
expect_rc 0 "train-step --min-rows 40 of 40 rows exits 0"
run train-step --zoo "$T/zoo" --model m --min-rows 0 "$T/d.st.gz"
expect_rc 2 "train-step --min-rows 0 is a usage error"

# A number that parses but is too large for F32 training, like NaN:
# file:line:column, before anything is trained on.
printf 'f0,f1,f2,f3,label\n1,2,3,4,0\n0.5,1e39,0,0,1\n' > "$T/big.csv"
run predict --zoo "$T/zoo" --model m --from csv --label label "$T/big.csv"
expect_rc 1 "1e39 in a feature exits 1"
expect_err "big.csv:3:2: column 'f1': 1e39 is beyond .-1e.18" "1e39 with line and column"
printf 'f0,f1,f2,f3,label\n1,2,3,4,0\n0.5,1,0,1e30,1\n' > "$T/e30.csv"
run tensor import --from csv --label label -o "$T/e30.st.gz" "$T/e30.csv"
expect_rc 1 "importing a 1e30 feature for training exits 1"
expect_err "e30.csv:3:4: column 'f3': 1e30 is beyond .-1e.18" "1e30 refused with line and column"
check "the 1e30 import wrote nothing" test ! -e "$T/e30.st.gz"
printf 'f0,f1,f2,f3,label\n1,2,3,4,0\n0.5,1,0,9e17,1\n' > "$T/e17.csv"
run tensor import --from csv -o "$T/e17.st.gz" "$T/e17.csv"
expect_rc 0 "9e17 (inside the limit) imports"
run tensor import --from csv -o "$T/big.st.gz" "$T/big.csv"
expect_rc 1 "tensor import of 1e39 exits 1"
check "tensor import of 1e39 wrote nothing" test ! -e "$T/big.st.gz"

# granctl --updates of an empty stream.
run granctl --zoo "$T/zoo" --updates "$T/empty"
expect_rc 1 "granctl of an empty update stream exits 1"
expect_err "empty: no update documents" "granctl says no update documents"
run sh -c "granctl --zoo '$T/zoo' --updates - < '$T/empty'"
expect_err "<stdin>: no update documents" "granctl names standard input"

# A usage error is one line and a hint, not the whole usage.
for p in assign granctl merge predict slice tensor train-step zoo-add zoo-ls; do
	run $p --frobnicate
	expect_rc 2 "$p --frobnicate exits 2"
	check "$p: a usage error is two lines" test "$(wc -l < "$T/err")" -eq 2
	check "$p: the hint names --help" sh -c "tail -n 1 '$T/err' | grep -qx \"Try '$p --help'.\""
	check "$p: the usage is not repeated" sh -c "! grep -q '^usage:' '$T/err'"
done
run predict --zoo "$T/zoo" --batch-size 0
expect_rc 2 "a bad value exits 2"
check "a bad value is two lines" test "$(wc -l < "$T/err")" -eq 2
expect_err "^predict: --batch-size: expected an integer" "a bad value says which option"

# --help lists every long option the program accepts in its option list
# (after the usage and a line of description), each with its default in
# brackets (on its line or the next) unless it is -h or --version.
for p in assign granctl merge predict slice tensor train-step zoo-add zoo-ls; do
	run $p --help
	expect_rc 0 "$p --help exits 0"
	awk '/^$/ { blank++; next } blank >= 2' "$T/out" > "$T/options"
	missing=
	for opt in $(sed -n 's/^[[:space:]]*{ "\([a-z0-9-]*\)", [a-z_]*argument.*/\1/p' "$SRC/cmd/$p.c"); do
		grep -q -- "--$opt\\b" "$T/options" || missing="$missing --$opt"
	done
	check "$p --help lists every option:${missing:- all there}" test -z "$missing"
	# The option list follows the usage and a line of description.
	nodefault=$(awk '/^$/ { blank++; next } blank < 2 { next }
		/^ +-|^  -/ { if (opt != "" && !seen) print opt; opt = $1; seen = ($0 ~ /\[/) ; next }
		/^                    / && opt != "" { if ($0 ~ /\[/) seen = 1; next }
		END { if (opt != "" && !seen) print opt }' "$T/out" | grep -v -e '^-h,' -e '^--version$' | tr '\n' ' ')
	check "$p --help gives every default:${nodefault:- all there}" test -z "$nodefault"
done

finish
