# Shared helper for the CLI tests: sourced by every tests/cli/NNN-*.sh.
# Provides $BIN (the programs), $SRC (source tree), $T (a fresh temporary
# directory, removed at exit), and checks that print one line each:
#   run CMD...            runs CMD, keeps stdout in $T/out, stderr in $T/err,
#                         exit status in $rc
#   expect_rc N DESC      passes when the last run exited with N
#   expect_err PAT DESC   passes when the last run's stderr matches grep -E PAT
#   check DESC CMD...     passes when CMD exits 0
#   finish                prints "N passed, N failed" and sets the exit status
set -u
BIN=${ZM_BIN:?ZM_BIN must name the directory of the programs}
SRC=${ZM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PATH=$BIN:$PATH
export PATH
T=$(mktemp -d "${TMPDIR:-/tmp}/zm-cli.XXXXXX")
[ -n "${ZM_KEEP_TMP:-}" ] && echo "# keeping $T" || trap 'rm -rf "$T"' EXIT
_passed=0
_failed=0
_name=$(basename "$0" .sh)
rc=0

pass() { _passed=$((_passed + 1)); echo "ok - $_name: $1"; }
fail() {
	_failed=$((_failed + 1)); echo "not ok - $_name: $1"
	if [ -s "$T/err" ]; then sed 's/^/#   stderr: /' "$T/err" | head -5; fi
}

run() {
	rc=0
	"$@" >"$T/out" 2>"$T/err" || rc=$?
}

expect_rc() {
	if [ "$rc" -eq "$1" ]; then pass "$2"; else fail "$2 (exit $rc, want $1)"; fi
}

expect_err() {
	if grep -Eq -- "$1" "$T/err"; then pass "$2"; else fail "$2 (stderr lacks /$1/)"; fi
}

check() {
	_desc=$1; shift
	if "$@" >"$T/check.out" 2>&1; then pass "$_desc"; else
		fail "$_desc"; sed 's/^/#   /' "$T/check.out" | head -5; fi
}

# separable_csv FILE ROWS SEED [SCALE]: a 4-feature, 4-class CSV whose
# class is the feature raised by 1 (noise in [0, 0.5)), with a header and
# a 'label' column; easy to learn, so tests can train on it quickly.  With
# SCALE every feature is multiplied by it (written with 4 significant
# digits), for values at the edges of F32.
separable_csv() {
	awk -v n="$2" -v seed="$3" -v scale="${4:-}" 'BEGIN {
		srand(seed); print "f0,f1,f2,f3,label";
		for (i = 0; i < n; i++) {
			c = i % 4; line = "";
			for (j = 0; j < 4; j++) {
				v = rand() * 0.5; if (j == c) v += 1;
				f = scale == "" ? sprintf("%.4f", v) : sprintf("%.4g", v * scale)
				line = line (j ? "," : "") f;
			}
			print line "," c;
		}
	}' >"$1"
}

finish() {
	echo "$_name: $_passed passed, $_failed failed"
	[ "$_failed" -eq 0 ]
}
