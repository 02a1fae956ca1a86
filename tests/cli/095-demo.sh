#!/bin/sh
# scripts/demo, small: 5 % of the Fashion-MNIST training images, 20 % of
# the test images, a narrow MLP.  Asserts only relations that must hold
# whatever the numbers: every stage exits 0, the table has every row, the
# dynamic weighting is not below the worst slice model, the trace's weights
# sum to 1 per unit and batch, and the picture has a line per model and
# unit.  Then scripts/trace-svg on a hand-made trace and on bad input.
. "$(dirname "$0")/lib.sh"

FM=${ZM_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -r "$FM/train-images-idx3-ubyte.gz" ]; then
	echo "ok - $_name: skipped: no Fashion-MNIST in $FM"
	finish
	exit
fi

# Under valgrind (make valgrind) the demo's training would take hours;
# the programs it runs are covered by the other CLI tests there.
if [ -n "${ZM_VALGRIND:-}" ]; then
	echo "ok - $_name: skipped under valgrind"
	finish
	exit
fi

D=$T/demo
run env DEMO_DIR="$D" ZM_BIN="$BIN" ZM_FASHION_MNIST="$FM" DEMO_TRAIN_FRACTION=0.05 \
	DEMO_TEST_FRACTION=0.2 DEMO_UNITS=32,16 DEMO_EPOCHS=4 DEMO_STREAM_BATCH=50 \
	sh "$SRC/scripts/demo"
expect_rc 0 "the small demo runs end to end"
check "no stage reported a failure" sh -c "! grep -q 'failed' '$T/err'"

rows="joint (all data)|slice model: tops|slice model: bottoms|slice model: shoes|slice model: bags|soup (merge --method linear)|merge --method ties|merge --method dare|defaults (no weighting flags)|router, defaults|output ensemble (uniform)|similarity, per row, full|similarity, per row, group|similarity, per row, layer|router, per row, full|router, per row, group|router, per row, layer|shifting stream, no feedback|shifting stream, --feedback|segmented stream (4 shifts), per batch, no feedback|segmented stream (4 shifts), per batch, --feedback|segmented stream (4 shifts), per batch, --adapt entropy"
check "results.md has every row, each with accuracy, loss and rows/s" awk -F'|' -v want="$rows" '
	BEGIN { n = split(want, w, "|"); for (i = 1; i <= n; i++) need[w[i]] = 1 }
	NF >= 6 { name = $2; gsub(/^ +| +$/, "", name)
		if (name in need && $3 + 0 >= 0 && $3 + 0 <= 1 && $4 + 0 > 0 && $5 + 0 > 0) { got[name] = 1 } }
	END { for (k in need) if (!(k in got)) { print "missing or malformed: " k; bad = 1 } exit bad }' "$D/results.md"
# Every row of results.md (past its header) is on stdout too.
check "the table on stdout has the same rows" sh -c "
	sed -n 's/^| \\([^|]*[^ |]\\) *|.*/\\1/p' '$D/results.md' | sed 1d >'$T/names'
	[ -s '$T/names' ] && while IFS= read -r n; do grep -qF \"\$n\" '$T/out' || exit 1; done <'$T/names'"

# acc NAME: the accuracy of a row of the table.
acc() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$D/results.tsv"; }
worst=$(for s in tops bottoms shoes bags; do acc "slice model: $s"; done | sort -g | head -1)
for r in "similarity, per row, full" "similarity, per row, layer" "router, per row, full" \
	"output ensemble (uniform)"; do
	check "$r ($(acc "$r")) is not below the worst slice model ($worst)" \
		awk -v a="$(acc "$r")" -v b="$worst" 'BEGIN { exit !(a >= b) }'
done
check "the metrics agree with the predictions (joint model)" awk -F, -v m="$D/metrics/joint (all data).yaml" '
	BEGIN { while ((getline l < m) > 0) if (l ~ /^rows:/) { split(l, a, " "); rows = a[2] } }
	NR > 1 { n++ } END { exit !(n == rows && n > 1000) }' "$D/pred/joint (all data).csv"

check "the trace's weights sum to 1 per unit and batch" awk -F, '
	NR > 1 { s[$1 "/" $4] += $5; k[$1 "/" $4]++ }
	END { for (u in s) { if (s[u] < 0.999 || s[u] > 1.001 || k[u] != 4) { print u, s[u], k[u]; bad = 1 } n++ }
	      exit bad || n < 10 }' "$D/trace.csv"
check "the picture is a complete SVG with one line per model and unit" sh -c "
	head -1 '$D/weights.svg' | grep -q '^<?xml' && tail -1 '$D/weights.svg' | grep -q '^</svg>\$' &&
	[ \$(grep -c '<polyline' '$D/weights.svg') -eq \$(awk -F, 'NR > 1 { print \$3 \"/\" \$4 }' '$D/trace.csv' | sort -u | wc -l) ]"
check "the zoo holds the four merged slice models and the router" sh -c "
	zoo-ls --zoo '$D/zoo' | awk 'NR > 1 { print \$1 }' | sort | tr '\n' ' ' | grep -qx 'bags bottoms router shoes tops '"

# trace-svg on a hand-made trace: 3 batches, 2 models, 2 units.
cat >"$T/tr.csv" <<'EOF'
batch,rows,model,unit,weight,similarity,score
1,10,a,g1,0.25,,
1,10,b,g1,0.75,,
1,10,a,g2,1,,
1,10,b,g2,0,,
2,10,a,g1,0.5,,
2,10,b,g1,0.5,,
2,10,a,g2,1,,
2,10,b,g2,0,,
3,5,a,g1,1,,
3,5,b,g1,0,,
3,5,a,g2,0,,
3,5,b,g2,1,,
EOF
run sh "$SRC/scripts/trace-svg" --title 'a < b & c' --mark-row 15 "$T/tr.csv"
expect_rc 0 "trace-svg draws a hand-made trace"
check "four lines, the title escaped, the mark at batch 2" sh -c "
	[ \$(grep -c '<polyline' '$T/out') -eq 4 ] && grep -q 'a &lt; b &amp; c' '$T/out' &&
	grep -q 'stroke-dasharray' '$T/out'"
# With the default --width 760 the plot spans x = 56 to 630; SVG y grows
# downwards, so a rising weight has falling y values.
check "model a's line in g1 rises across the batches from x=56 to x=630" awk '
	/<polyline/ && /<title>a<\/title>/ && !done { done = 1
		match($0, /points="[^"]*"/); p = substr($0, RSTART + 8, RLENGTH - 9)
		n = split(p, pt, " "); split(pt[1], f, ","); split(pt[n], l, ","); split(pt[2], m, ",")
		exit !(n == 3 && f[1] == 56 && l[1] == 630 && f[2] > m[2] && m[2] > l[2]) }' "$T/out"
run sh "$SRC/scripts/trace-svg" -o "$T/t.svg" "$T/tr.csv"
check "-o writes the file and nothing else" sh -c "[ -s '$T/t.svg' ] && [ ! -s '$T/out' ] && ! ls '$T'/t.svg.tmp.* 2>/dev/null"
printf 'a,b,c\n1,2,3\n' >"$T/bad.csv"
run sh "$SRC/scripts/trace-svg" -o "$T/bad.svg" "$T/bad.csv"
expect_rc 1 "a file that is not a trace is refused"
expect_err 'not a predict trace' "the error names the problem"
check "and leaves no output" sh -c "[ ! -e '$T/bad.svg' ] && ! ls '$T'/bad.svg.tmp.* 2>/dev/null"
run sh "$SRC/scripts/trace-svg" --unit nosuch "$T/tr.csv"
expect_rc 1 "an unknown --unit is refused"
run sh "$SRC/scripts/trace-svg" --width x "$T/tr.csv"
expect_rc 2 "a bad --width is a usage error"
finish
