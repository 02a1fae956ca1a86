#!/bin/sh
# slice: every criterion end to end on small CSV data (a string column
# for the data source among them), partition and
# overlapping modes, hash splits, k-means with reusable centroids, the
# membership stream, errors with line:col, outputs that appear only on
# success, and Fashion-MNIST sliced by row mean against counts computed
# from the IDX bytes by od and awk.
. "$(dirname "$0")/lib.sh"
LC_ALL=C
export LC_ALL
FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}

# 300 rows: x0 = i, x1 = i % 7, label = i % 3 named a, b, c.
awk 'BEGIN { print "x0,x1,kind"; split("a b c", n, " ");
	for (i = 0; i < 300; i++) printf "%d,%d,%s\n", i, i % 7, n[i % 3 + 1] }' >"$T/d.csv"

run slice --help
expect_rc 0 "--help"
check "--help prints the synopsis" grep -q 'slice --rules RULES.yaml --out-dir DIR' "$T/out"
run slice --out-dir "$T/o" "$T/d.csv"
expect_rc 2 "no --rules is a usage error"
run slice --rules x --out-dir "$T/o" --from parquet
expect_rc 2 "unknown --from"

cat >"$T/r1.yaml" <<'EOF'
slices:
  - {name: low, where: {feature: x0, max: 100}}
  - {name: sevens, where: {column: x1, in: [0]}}
  - {name: bees, where: {column: kind, equals: b}}
  - {name: rest, default: true}
EOF
run slice --rules "$T/r1.yaml" --out-dir "$T/o1" --from csv --label kind "$T/d.csv"
expect_rc 0 "partition over CSV columns"
# Expected counts by the rules, first match wins, computed by awk.
awk -F, 'NR > 1 { if ($1 < 100) l++; else if ($2 == 0) s++; else if ($3 == "b") b++; else r++ }
	END { printf "%d %d %d %d\n", l, s, b, r }' "$T/d.csv" >"$T/want"
sed -n 's/^    rows: //p' "$T/out" | tr '\n' ' ' | sed 's/ $/\n/' >"$T/got"
check "rows per slice match a direct computation ($(cat "$T/want"))" cmp -s "$T/want" "$T/got"
check "one file per slice" test -s "$T/o1/low.safetensors.gz" -a -s "$T/o1/rest.safetensors.gz"
run tensor export --to csv "$T/o1/bees.safetensors.gz"
expect_rc 0 "a slice file is a data stream tensor export reads"
check "bees holds exactly the rows x0 >= 100, x1 != 0, kind b" sh -c "
	awk -F, 'NR > 1 && \$1 >= 100 && \$2 != 0 && \$3 == \"b\" { print \$1 }' '$T/d.csv' > '$T/wantb'
	awk -F, 'NR > 1 { print \$2 + 0 }' '$T/out' | sort -n > '$T/gotb'
	cmp -s '$T/wantb' '$T/gotb'"
run tensor info "$T/o1/low.safetensors.gz"
check "the last document carries the profile" grep -q 'profile.input.mean' "$T/out"
check "and names the slice" grep -q 'zm.slice = low' "$T/out"

# Overlapping mode: a row may be in several slices.
sed '1i mode: overlapping' "$T/r1.yaml" >"$T/r2.yaml"
run slice --rules "$T/r2.yaml" --out-dir "$T/o2" --from csv --label kind "$T/d.csv"
expect_rc 0 "overlapping"
awk -F, 'NR > 1 { m = 0; if ($1 < 100) { l++; m = 1 } if ($2 == 0) { s++; m = 1 }
	if ($3 == "b") { b++; m = 1 } if (!m) r++ } END { printf "%d %d %d %d\n", l, s, b, r }' "$T/d.csv" >"$T/want"
sed -n 's/^    rows: //p' "$T/out" | tr '\n' ' ' | sed 's/ $/\n/' >"$T/got"
check "overlapping counts match ($(cat "$T/want"))" cmp -s "$T/want" "$T/got"

# Hash split: reproducible, near the fraction; statistics and labels.
tensor import --from csv --label kind -o "$T/d.st.gz" "$T/d.csv"
cat >"$T/r3.yaml" <<'EOF'
slices:
  - {name: hold, where: {hash: 0.25, seed: 7}}
  - {name: train, default: true}
EOF
run slice --rules "$T/r3.yaml" --out-dir "$T/o3" "$T/d.st.gz"
expect_rc 0 "hash split of a stream file"
n=$(sed -n 's/^    rows: //p' "$T/out" | head -1)
check "the held-out part is near 25% ($n of 300)" test "$n" -ge 50 -a "$n" -le 100
run sh -c "slice --rules '$T/r3.yaml' --out-dir '$T/o3b' < '$T/d.st.gz'"
expect_rc 0 "stream on stdin"
check "the same split, byte for byte" cmp -s "$T/o3/hold.safetensors.gz" "$T/o3b/hold.safetensors.gz"

cat >"$T/r4.yaml" <<'EOF'
mode: overlapping
slices:
  - {name: spread, where: {stat: std, min: 50}}
  - {name: big, where: {stat: max, min: 250}}
  - {name: ac, where: {label: [a, 2]}}
  - {name: none, where: {stat: min, max: -1}}
  - {name: rest, default: true}
EOF
run slice --rules "$T/r4.yaml" --out-dir "$T/o4" "$T/d.st.gz"
expect_rc 0 "row statistics and label sets"
# std of (x0, x1) = |x0 - x1| / 2; max = max(x0, x1).
awk -F, 'NR > 1 { d = $1 - $2; if (d < 0) d = -d; m = 0
	if (d / 2 >= 50) { s++; m = 1 } if ($1 >= 250) { g++; m = 1 }
	if ($3 != "b") { a++; m = 1 } if (!m) r++ }
	END { printf "%d %d %d 0 %d\n", s, g, a, r }' "$T/d.csv" >"$T/want"
sed -n 's/^    rows: //p' "$T/out" | tr '\n' ' ' | sed 's/ $/\n/' >"$T/got"
check "stat and label counts match ($(cat "$T/want"))" cmp -s "$T/want" "$T/got"
expect_err "slice 'none' is empty" "an empty slice is a warning"

# Errors.
printf 'slices:\n  - {name: a, where: {feature: nope, min: 1}}\n' >"$T/bad1.yaml"
run slice --rules "$T/bad1.yaml" --out-dir "$T/o5" --from csv --label kind "$T/d.csv"
expect_rc 2 "a rule naming a missing column"
expect_err "bad1.yaml:2:5: .*no column 'nope'" "with the rule's line and column"
printf 'slices:\n  - {name: a, where: {stat: mean, min: 1, max: 5}}\n  - {name: b, where: {stat: mean, min: 4}}\n' >"$T/bad2.yaml"
run slice --rules "$T/bad2.yaml" --out-dir "$T/o5" "$T/d.st.gz"
expect_rc 2 "overlapping ranges in partition mode without a default"
expect_err "bad2.yaml:3:5: .*overlaps" "named at line:col"
printf 'slices:\n  - {name: a, where: {feature: 0, max: 10}}\n' >"$T/part.yaml"
run slice --rules "$T/part.yaml" --out-dir "$T/o6" "$T/d.st.gz"
expect_rc 1 "rows matching nothing fail without a default"
expect_err "290 of 300 rows match no slice" "and are counted"
check "a failed run leaves no slice file" test ! -e "$T/o6/a.safetensors.gz"
check "nor a temporary file" sh -c "[ -z \"\$(ls -A '$T/o6')\" ]"
run slice --rules "$T/part.yaml" --out-dir "$T/o6" --unmatched drop "$T/d.st.gz"
expect_rc 0 "--unmatched drop"
check "keeps the 10 matching rows" grep -q '^    rows: 10$' "$T/out"
run slice --rules "$T/part.yaml" --out-dir "$T/o7" --unmatched drop --membership /dev/full "$T/d.st.gz"
expect_rc 1 "--membership to a full disk fails"
check "and no slice file appears" test ! -e "$T/o7/a.safetensors.gz"
size=$(wc -c < "$T/d.st.gz")
run sh -c "head -c $((size - 20)) '$T/d.st.gz' | slice --rules '$T/r3.yaml' --out-dir '$T/o8'"
expect_rc 1 "a truncated stream"
check "leaves no slice file" test ! -e "$T/o8/hold.safetensors.gz"

# By data source: a string column (north, south, east, west).
awk 'BEGIN { srand(5); print "source,x1,x2,label"
	split("north south east west", s, " ")
	for (i = 0; i < 500; i++)	# eighths: exact in F32, so the export prints them back
		printf "%s,%g,%g,%d\n", s[1 + int(rand() * 4)], int(rand() * 64) / 8, int(rand() * 64) / 8, i % 3 }' >"$T/sources.csv"
cat >"$T/src-rules.yaml" <<'EOF'
mode: partition
slices:
  - {name: coast, where: {column: source, in: [north, west]}}
  - {name: south, where: {column: source, equals: south}}
  - {name: rest, default: true}
EOF
run slice --from csv --label label --rules "$T/src-rules.yaml" --out-dir "$T/src" "$T/sources.csv"
expect_rc 0 "slice a CSV by its source column"
for sl in coast south rest; do
	case $sl in
	coast) want=$(awk -F, 'NR > 1 && ($1 == "north" || $1 == "west")' "$T/sources.csv" | wc -l) ;;
	south) want=$(awk -F, 'NR > 1 && $1 == "south"' "$T/sources.csv" | wc -l) ;;
	*) want=$(awk -F, 'NR > 1 && $1 == "east"' "$T/sources.csv" | wc -l) ;;
	esac
	tensor export --to csv "$T/src/$sl.safetensors.gz" >"$T/src-$sl.csv"
	check "slice $sl has the rows awk counts ($want)" sh -c "[ \$(sed 1d '$T/src-$sl.csv' | wc -l) -eq $want ]"
done
check "the coast slice holds exactly the north and west rows" sh -c "
	sed 1d '$T/src-coast.csv' | cut -d, -f2- | sort >'$T/got' &&
	awk -F, 'NR > 1 && (\$1 == \"north\" || \$1 == \"west\")' '$T/sources.csv' | sort >'$T/want' &&
	cmp -s '$T/got' '$T/want'"
check "the string column survives slicing" grep -q '^id,source,x1,x2,label$' "$T/src-south.csv"
printf 'slices:\n  - {name: s, where: {column: source, in: [mars]}}\n' >"$T/src-bad.yaml"
run slice --from csv --label label --rules "$T/src-bad.yaml" --out-dir "$T/src-bad" "$T/sources.csv"
expect_rc 2 "a source the data does not have is a configuration error"
expect_err "src-bad.yaml:2:5: slice 's': no value 'mars' in column 'source'" "naming the rule and the value"

# k-means: three well-separated blobs; each cluster is one blob (label).
awk 'BEGIN { srand(5); print "a,b,blob"
	for (i = 0; i < 600; i++) { c = i % 3
		printf "%.4f,%.4f,%d\n", c * 10 + rand(), (c == 1) * 10 + rand(), c } }' >"$T/g.csv"
printf 'clusters: {k: 3, seed: 2, iterations: 30}\n' >"$T/k.yaml"
run slice --rules "$T/k.yaml" --out-dir "$T/ko" --from csv --label blob --membership "$T/m.st.gz" "$T/g.csv"
expect_rc 0 "k-means slices"
check "three slices of 200 rows" test "$(grep -c '^    rows: 200$' "$T/out")" -eq 3
check "each cluster holds one blob only" test "$(grep -c 'labels: \[\(0, \)*200\]' "$T/out")" -eq 3
check "the centroids are saved" test -s "$T/ko/centroids.safetensors.gz"
cp "$T/out" "$T/k1.out"
run sh -c "tensor import --from csv --label blob '$T/g.csv' | slice --rules '$T/k.yaml' --out-dir '$T/ko2' --centroids '$T/ko/centroids.safetensors.gz'"
expect_rc 0 "reusing the centroids on a stream from stdin"
check "gives the same slices" cmp -s "$T/ko/cluster-1.safetensors.gz" "$T/ko2/cluster-1.safetensors.gz"
run sh -c "tensor import --from csv --label blob '$T/g.csv' | slice --rules '$T/k.yaml' --out-dir '$T/ko3'"
expect_rc 0 "k-means fitted on standard input (spooled)"
check "the same clusters as from the file" cmp -s "$T/ko/cluster-2.safetensors.gz" "$T/ko3/cluster-2.safetensors.gz"
run tensor info "$T/m.st.gz"
check "the membership stream names the slices" grep -q 'zm.classes = \["cluster-0","cluster-1","cluster-2"\]' "$T/out"
check "with 600 rows" grep -q '600 rows' "$T/out"
run slice --rules "$T/k.yaml" --out-dir "$T/ko4" --centroids "$T/d.st.gz" "$T/d.st.gz"
expect_rc 1 "centroids of the wrong shape"

# Fashion-MNIST: the row mean in [lo, hi) against od + awk over the IDX
# bytes (the bounds sit half a grey level from any row sum, so float
# rounding cannot move a row across them).
if [ -r "$FM/train-images-idx3-ubyte.gz" ] && [ -z "${ZM_VALGRIND:-}" ]; then
	cat >"$T/fm.yaml" <<'EOF'
slices:
  - {name: mid, where: {stat: mean, min: 0.2500025, max: 0.3500025}}
  - {name: rest, default: true}
EOF
	run slice --rules "$T/fm.yaml" --out-dir "$T/fm" --from idx \
		--images "$FM/train-images-idx3-ubyte.gz" --labels "$FM/train-labels-idx1-ubyte.gz"
	expect_rc 0 "Fashion-MNIST by row mean"
	got=$(sed -n 's/^    rows: //p' "$T/out" | head -1)
	want=$(zcat "$FM/train-images-idx3-ubyte.gz" | od -An -v -tu1 -j16 -w784 |
		awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; m = s / 784 / 255
			if (m >= 0.2500025 && m < 0.3500025) n++ } END { print n + 0 }')
	check "mid has the rows od and awk count ($got, $want)" test "$got" = "$want"
	check "rest has the others" grep -q "^    rows: $((60000 - want))\$" "$T/out"
fi
finish
