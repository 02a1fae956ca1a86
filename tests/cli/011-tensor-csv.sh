#!/bin/sh
# tensor: more CSV cases (gzip input, regression targets, label by index,
# header only, a large round trip, string columns) and outputs that stay
# whole on failure.
. "$(dirname "$0")/lib.sh"

printf 'f1,f2,target\n1,2,0.5\n3,4,-1.25\n5,6,3\n' > "$T/reg.csv"
gzip -c "$T/reg.csv" > "$T/reg.csv.gz"
run sh -c "tensor import --from csv --label 2 '$T/reg.csv.gz' | tensor info"
expect_rc 0 "gzip CSV with the label by index"
check "fractional labels give F32 targets" grep -q '^  y F32 \[3\]$' "$T/out"
check "the label column is named" grep -q '^  zm.label = target$' "$T/out"
run sh -c "tensor import --from csv --label target < '$T/reg.csv.gz' | tensor export --to csv"
check "regression round trip from stdin" cmp "$T/reg.csv" "$T/out"

printf 'a,b,c\n' > "$T/head.csv"
run sh -c "tensor import --from csv '$T/head.csv' | tensor export --to csv"
expect_rc 0 "header-only CSV"
check "header-only round trip keeps the names" cmp "$T/head.csv" "$T/out"

# 3000 rows in batches of 256: the export equals the input line for line
# (values chosen exactly representable in F32).
awk 'BEGIN { print "id,u,v,label"; for (i = 0; i < 3000; i++) printf "%d,%d,%g,%d\n", i * 2, i - 1500, i / 8, i % 7 }' > "$T/many.csv"
run sh -c "tensor import --from csv --label label --batch 256 '$T/many.csv' > '$T/many.safetensors.gz'"
expect_rc 0 "import of 3000 rows"
run tensor info "$T/many.safetensors.gz"
check "12 batches of at most 256 rows" grep -q 'many.safetensors.gz: 12 documents, 3000 rows' "$T/out"
run tensor export --to csv -o "$T/many.out.csv" "$T/many.safetensors.gz"
check "3000-row round trip" cmp "$T/many.csv" "$T/many.out.csv"

# String columns (a data source, a device) are kept beside the features
# and come back in the export, after the id and before the features.
cat >"$T/src.csv" <<'EOF'
id,f,source,g,device,label
1,0.5,"north, coast",2,d1,0
2,1.5,south,4,,1
3,2.5,"north, coast",6,d2,1
EOF
run sh -c "tensor import --from csv --label label '$T/src.csv' > '$T/src.sgz' && tensor info '$T/src.sgz'"
expect_rc 0 "import of a CSV with string columns"
check "a string column is an I64 tensor of level indexes" grep -q '^  column.source I64 \[3\]$' "$T/out"
check "its levels are sorted, in metadata" grep -qF 'zm.levels.source = ["north, coast","south"]' "$T/out"
check "an empty field is a level too" grep -qF 'zm.levels.device = ["","d1","d2"]' "$T/out"
check "the features are the numeric columns" grep -qF 'zm.columns = ["f","g"]' "$T/out"
run tensor export --to csv "$T/src.sgz"
check "the export has every value back" awk -F, '
	NR == 1 { ok = $0 == "id,source,device,f,g,label"; next }
	NR == 2 { ok = ok && $0 == "1,\"north, coast\",d1,0.5,2,0" }
	NR == 3 { ok = ok && $0 == "2,south,,1.5,4,1" }
	NR == 4 { ok = ok && $0 == "3,\"north, coast\",d2,2.5,6,1" }
	END { exit !(ok && NR == 4) }' "$T/out"
printf 'source,f
north,1
7,2
' >"$T/mixed.csv"
run tensor import --from csv -o "$T/mixed.sgz" "$T/mixed.csv"
expect_rc 1 "a column of text with a number in it is refused"
expect_err "mixed.csv:2:1: column 'source': expected a number, got 'north'" "and the message names the first text"
check "no output" test ! -e "$T/mixed.sgz"

# A string column whose name makes a key no reader could parse back (over
# 1000 bytes) is refused when writing, with no output.
awk 'BEGIN { n = ""; for (i = 0; i < 1200; i++) n = n "s"; print n ",f"; print "a,1"; print "b,2" }' >"$T/longname.csv"
run tensor import --from csv -o "$T/longname.sgz" "$T/longname.csv"
expect_rc 1 "a 1200-byte string column name exits 1"
expect_err "is longer than 1000 bytes" "and says why"
check "no output" test ! -e "$T/longname.sgz"

# A failed import leaves an existing output as it was.
printf '\000\000\010\003\000\000\000\005\000\000\000\002\000\000\000\002\001\002' > "$T/short.idx"
echo keep > "$T/old.safetensors.gz"
run tensor import --from idx --images "$T/short.idx" -o "$T/old.safetensors.gz"
expect_rc 1 "truncated IDX exits 1"
check "the old output is untouched" grep -qx keep "$T/old.safetensors.gz"
run tensor export --to csv -o "$T/old.safetensors.gz" "$T/short.idx"
expect_rc 1 "export of a non-stream exits 1"
check "the old output is still untouched" grep -qx keep "$T/old.safetensors.gz"

finish
