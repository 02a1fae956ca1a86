#!/bin/sh
# tensor: more CSV cases (gzip input, regression targets, label by index,
# header only, a large round trip) and outputs that stay whole on failure.
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
