#!/bin/sh
# The data-input options (--from, --images, --labels, --label) are checked
# by one shared helper: predict, slice and tensor import refuse the same
# mistakes with the same message and exit 2.
. "$(dirname "$0")/lib.sh"

printf 'a,b\n1,2\n' >"$T/d.csv"
: >"$T/i.idx"
for p in predict slice tensor; do
	case $p in
	predict) set -- predict --zoo "$T/zoo" ;;
	slice) set -- slice --rules "$T/r.yaml" --out-dir "$T/o" ;;
	tensor) set -- tensor import ;;
	esac
	run "$@" --from parquet "$T/d.csv"
	expect_rc 2 "$p: an unknown --from"
	expect_err "^$p: --from: expected .*csv or idx, got 'parquet'" \
		"$p: the unknown --from is named"
	run "$@" --from idx "$T/d.csv"
	expect_rc 2 "$p: --from idx without --images"
	expect_err "^$p: --from idx needs --images IDX" "$p: says it needs --images"
	run "$@" --from idx --images "$T/i.idx" "$T/d.csv"
	expect_rc 2 "$p: --from idx with a FILE"
	expect_err "^$p: --from idx reads --images IDX \(and --labels IDX\), not FILE" \
		"$p: says idx reads no FILE"
	run "$@" --from csv --images "$T/i.idx" "$T/d.csv"
	expect_rc 2 "$p: --images without --from idx"
	expect_err "^$p: --images and --labels need --from idx" "$p: says --images needs idx"
	run "$@" --from idx --images "$T/i.idx" --label b
	expect_rc 2 "$p: --label with --from idx"
	expect_err "^$p: --label needs --from csv" "$p: says --label needs csv"
done
finish
