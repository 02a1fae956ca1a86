#!/bin/sh
# Injected faults: every write, fsync, rename and open, and a sample of
# the allocations, of train-step --apply and of merge applying updates to
# a zoo fails in turn.  After each: a non-zero exit with a message, an
# index that reads, every model it names loads, and nothing changed (the
# index byte for byte, the same files, no temporaries).  Then writers
# killed at every write, fsync and rename leave temporaries that readers
# ignore and the next writer removes.
. "$(dirname "$0")/lib.sh"

# Allocations are sampled (every $step-th) to bound the time; valgrind
# runs each program ~50 times slower, so it samples far fewer.
# The checks after each run use the plain programs when valgrind wraps
# $BIN: it is the faulted run whose memory is of interest.
step=7
C=$BIN
if [ -n "${ZM_VALGRIND:-}" ]; then
	step=101
	[ -x "$BIN/../bin/zoo-ls" ] && C=$BIN/../bin
fi

separable_csv "$T/data.csv" 200 5
tensor import --from csv --label label -o "$T/data.sgz" "$T/data.csv"
cat >"$T/arch.yaml" <<'YAML'
input: [4]
layers:
  - {name: hidden, units: 6, activation: tanh}
  - {name: out, units: 4}
YAML
Z=$T/zoo
zoo-add --zoo "$Z" --name m --arch "$T/arch.yaml" --seed 1 2>/dev/null
zoo-add --zoo "$Z" --name m2 --arch "$T/arch.yaml" --seed 2 2>/dev/null
train-step --zoo "$Z" --model m --epochs 1 --quiet -o "$T/u1.sgz" "$T/data.sgz"
train-step --zoo "$Z" --model m2 --epochs 1 --seed 2 --quiet -o "$T/u2.sgz" "$T/data.sgz"
cat "$T/u1.sgz" "$T/u2.sgz" >"$T/updates.sgz"

listing() { (cd "$1" && find . | LC_ALL=C sort); }
listing "$Z" >"$T/files.before"
cp "$Z/zoo.yaml" "$T/index.before"

# Checks the zoo copy $T/zf after a run that exited $1 with stderr in
# $T/ferr, the fault of kind $kind, and the outputs named in $OUTS
# (absent before the run); prints why it is bad, or nothing.
verify() {
	"$C/zoo-ls" --zoo "$T/zf" --format yaml >"$T/fls" 2>/dev/null || { echo "zoo-ls fails"; return; }
	for f in $(sed -n 's/^ *file: //p' "$T/fls"); do
		"$C/tensor" info "$T/zf/$f" >/dev/null 2>&1 || { echo "$f does not load"; return; }
	done
	if [ "$1" -eq 0 ]; then
		# A fault that did not matter (the directory fsync after the
		# rename): then the change is whole, both models moved.
		grep -q 'file: models/m/v2' "$T/fls" || echo "exit 0 without m v2"
		return
	fi
	[ -s "$T/ferr" ] || echo "no message"
	# Only the outputs' renames come after the zoo's commit; a fault
	# there is reported as such, with the change whole.
	if grep -q 'the models were applied to the zoo, but' "$T/ferr"; then
		[ "$kind" = rename ] || echo "applied, then a $kind fault"
		grep -q 'file: models/m/v2' "$T/fls" || echo "applied without m v2"
		return
	fi
	for o in $OUTS; do
		[ -e "$o" ] && echo "output $o appeared"
	done
	cmp -s "$T/zf/zoo.yaml" "$T/index.before" || echo "index changed"
	listing "$T/zf" | cmp -s - "$T/files.before" || echo "files changed: $(listing "$T/zf" | diff "$T/files.before" - | grep '^[<>]' | tr '\n' ' ')"
}

# sweep NAME CMD...: counts the calls of CMD on a fresh copy, then fails
# each in turn.
sweep() {
	name=$1; shift
	rm -rf "$T/zf" "$T/counts" $OUTS && cp -r "$Z" "$T/zf"
	ZM_FAULT_COUNT=$T/counts "$@" >/dev/null 2>&1
	check "$name runs cleanly without faults" grep -q 'file: models/m/v2' "$T/zf/zoo.yaml"
	ok=0; quiet=0; bad=0
	for kind in write fsync rename open alloc; do
		n=$(sed -n "s/^$kind //p" "$T/counts")
		i=1
		while [ "$i" -le "${n:-0}" ]; do
			rm -rf "$T/zf" $OUTS && cp -r "$Z" "$T/zf"
			rc=0
			ZM_FAULT=$kind:$i "$@" >/dev/null 2>"$T/ferr" || rc=$?
			why=$(verify "$rc")
			if [ -n "$why" ]; then
				bad=$((bad + 1))
				echo "# $name: fault $kind:$i (exit $rc): $why"
			elif [ "$rc" -eq 0 ]; then
				quiet=$((quiet + 1))
			else
				ok=$((ok + 1))
			fi
			if [ "$kind" = alloc ]; then i=$((i + step)); else i=$((i + 1)); fi
		done
	done
	if [ "$bad" -eq 0 ] && [ "$ok" -gt 0 ]; then
		pass "$name: $ok failing calls leave the zoo as it was ($quiet harmless)"
	else
		fail "$name: $bad of $((ok + quiet + bad)) faults left the zoo changed, broken or silent"
	fi
}

OUTS=
sweep "train-step --apply" train-step --zoo "$T/zf" --model m --epochs 1 --apply --quiet "$T/data.sgz"
# With an update stream and a log beside the zoo: a failure before the
# zoo's commit (a full disk while writing them) leaves neither.
OUTS="$T/out-u.sgz $T/out-log.jsonl"
sweep "train-step --apply -o --log" train-step --zoo "$T/zf" --model m --epochs 1 --apply --quiet \
	-o "$T/out-u.sgz" --log "$T/out-log.jsonl" "$T/data.sgz"
OUTS=
sweep "merge --zoo" merge --zoo "$T/zf" --quiet "$T/updates.sgz"

# ---- kills: stale temporaries ----

# A killed process frees nothing, so valgrind has nothing to add here.
if [ -n "${ZM_VALGRIND:-}" ]; then finish; exit; fi

# SIGKILL at each write, fsync and rename of train-step --apply and of a
# zoo-add creating a model; count the kills that left a temporary behind.
writer() {	# $1: program; the run that is killed
	if [ "$1" = train-step ]; then
		train-step --zoo "$T/zk" --model m --epochs 1 --apply --quiet "$T/data.sgz"
	else
		zoo-add --zoo "$T/zk" --name fresh --arch "$T/arch.yaml"
	fi
}
left=0; bad=0
for prog in train-step zoo-add; do
	rm -rf "$T/zk" "$T/counts" && cp -r "$Z" "$T/zk"
	ZM_FAULT_COUNT=$T/counts writer "$prog" >/dev/null 2>&1
	for kind in write fsync rename; do
		n=$(sed -n "s/^$kind //p" "$T/counts")
		i=1
		while [ "$i" -le "${n:-0}" ]; do
			rm -rf "$T/zk" && cp -r "$Z" "$T/zk"
			rc=0
			ZM_FAULT=$kind:$i:kill writer "$prog" >/dev/null 2>&1 || rc=$?
			i=$((i + 1))
			[ "$rc" -eq 137 ] || continue
			find "$T/zk" -name '.*.tmp.*' >"$T/temps"
			[ -s "$T/temps" ] || continue
			left=$((left + 1))
			# Readers ignore them: the index is the old one and
			# every model it names loads.
			if ! cmp -s "$T/zk/zoo.yaml" "$T/index.before" ||
			   ! zoo-ls --zoo "$T/zk" >/dev/null 2>&1 ||
			   ! predict --zoo "$T/zk" --model m "$T/data.sgz" >/dev/null 2>&1; then
				bad=$((bad + 1)); echo "# $prog $kind:$i: readers affected"
			fi
			# The next writer (adding another model) removes them.
			zoo-add --zoo "$T/zk" --name next --arch "$T/arch.yaml" >/dev/null 2>&1 ||
				{ bad=$((bad + 1)); echo "# $prog $kind:$i: next writer fails"; }
			if find "$T/zk" -name '.*.tmp.*' | grep -q .; then
				bad=$((bad + 1)); echo "# $prog $kind:$i: temporaries survive the next writer"
			fi
			[ "$prog" = zoo-add ] && [ -e "$T/zk/models/fresh" ] &&
				! grep -q 'name: fresh' "$T/zk/zoo.yaml" &&
				[ -z "$(ls -A "$T/zk/models/fresh")" ] &&
				{ bad=$((bad + 1)); echo "# zoo-add $kind:$i: empty directory survives"; }
		done
	done
done
if [ "$bad" -eq 0 ] && [ "$left" -gt 0 ]; then
	pass "$left kills left temporaries: readers ignore them, the next writer removes them"
else
	fail "stale temporaries: $bad problems in $left kills that left some"
fi

finish
