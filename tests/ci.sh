#!/usr/bin/env bash
# tests/ci.sh — `cowfs ci run`: a throw-away branch with Postgres for one command,
# on a real mount with real Postgres 15:
#   a command that succeeds: it sees main's data through $DATABASE_URL and the
#     PG* variables, its writes stay off main, exit 0;
#   a command that fails (exit 7 passed through), one killed by a signal
#     (128+9), a command that is not found (127);
#   cowfs ci itself sent SIGTERM or SIGINT: the command gets it, cowfs ci
#     waits, cleans up and exits 128+N without waiting for the command's sleep;
#   every time: the branch is gone from `cowfs branch list --json` (and not
#     in the trash), and no Postgres runs on it any more;
#   --keep-on-failure: a failed command's branch stays, with Postgres running,
#     and the printed settings reach it; a successful one's goes;
#   --name of an existing branch, --from of a missing one: exit 125, nothing
#     changed, nothing deleted.
source "$(dirname "$0")/lib.sh"

C=$COWFS_BIN/cowfs
PSQL=$PGBIN/psql
[ -x "$C" ] || fail "$C missing: run make first"
store_mounted_new
pg_stop_branches_at_exit "$mnt"
export COWFS_STORE=$store

branches() { "$C" branch list --json | python3 -c 'import json,sys
print(" ".join(sorted(b["name"] for b in json.load(sys.stdin)["branches"])))'; }
# Postgres processes whose working directory is a branch of this mount other than main
pg_on_branches() {
	local p c
	for p in $(pgrep -u postgres); do
		c=$(readlink "/proc/$p/cwd" 2>/dev/null) || continue
		[[ $c == "$mnt"/* && $c != "$mnt/main" && $c != "$mnt/main/"* ]] && echo "$p:$c"
	done
}
# only_main WHAT: the run left nothing behind
trashed() { "$C" branch list --deleted --json | python3 -c 'import json,sys
print(" ".join(sorted(b["name"] for b in json.load(sys.stdin)["branches"])))'; }
only_main() {
	[ "$(branches)" = main ] || fail "$1: branches left: $(branches)"
	[ -z "$(trashed)" ] || fail "$1: a throw-away branch went to the trash instead of away: $(trashed)"
	[ -z "$(pg_on_branches)" ] || fail "$1: Postgres still runs on a branch: $(pg_on_branches)"
}

"$C" pg initdb main >/dev/null || fail "cowfs pg initdb main"
"$C" pg start main >/dev/null || fail "cowfs pg start main"
"$C" pg psql main -X -q -c "CREATE TABLE t (x text); INSERT INTO t VALUES ('main')" || fail "create table on main"
"$C" pg stop main >/dev/null || fail "cowfs pg stop main"
pass "main holds a cluster with table t = {main}"

# --- success ------------------------------------------------------------------------------
out=$("$C" ci run -- sh -c '"$0" -X -At "$DATABASE_URL" -c "SELECT string_agg(x, \$\$,\$\$) FROM t" &&
	"$0" -X -q -At -c "INSERT INTO t VALUES (\$\$ci\$\$)" && "$0" -X -At -c "SELECT count(*) FROM t" &&
	echo "branch=$COWFS_BRANCH port=$PGPORT"' "$PSQL" 2>"$T/err"); rc=$?
[ $rc = 0 ] || fail "a succeeding command: exit $rc ($out; $(cat "$T/err"))"
[ "$(echo "$out" | sed -n 1p)" = main ] && [ "$(echo "$out" | sed -n 2p)" = 2 ] ||
	fail "the command did not see main's data and its own write: $out"
name=$(echo "$out" | sed -n 's/^branch=\([^ ]*\) .*/\1/p')
[[ $name =~ ^ci-[0-9a-f]{8}$ ]] || fail "branch name '$name'"
grep -q "^cowfs ci: branch $name from main, Postgres on port" "$T/err" || fail "no start line: $(cat "$T/err")"
only_main "after a succeeding command"
"$C" pg start main >/dev/null && [ "$("$C" pg psql main -X -At -c "SELECT string_agg(x, ',') FROM t")" = main ] ||
	fail "the command's write reached main"
"$C" pg stop main >/dev/null || fail "stop main"
pass "exit 0: the command saw main's row via DATABASE_URL and PG*, wrote on $name; branch and its Postgres gone, main unchanged"

# --- failure, signal, not found --------------------------------------------------------------
"$C" ci run -- sh -c '"$0" -X -q -c "SELECT 1" >/dev/null && exit 7' "$PSQL" 2>/dev/null; rc=$?
[ $rc = 7 ] || fail "a failing command: exit $rc, expected 7"
only_main "after a failing command"
pass "exit 7 passed through; branch gone"
"$C" ci run -- sh -c 'kill -KILL $$' 2>/dev/null; rc=$?
[ $rc = 137 ] || fail "a command killed by SIGKILL: exit $rc, expected 137"
only_main "after a killed command"
pass "a command killed by signal 9: exit 137; branch gone"
"$C" ci run -- /nonexistent/command 2>"$T/err"; rc=$?
[ $rc = 127 ] && grep -q "/nonexistent/command" "$T/err" || fail "a missing command: exit $rc ($(cat "$T/err"))"
only_main "after a missing command"
pass "a command that does not exist: exit 127; branch gone"

# --- cowfs ci itself interrupted ---------------------------------------------------------------
for sig in TERM INT; do
	rm -f "$T/ready"
	t0=$(date +%s)
	lower=$(echo "$sig" | tr A-Z a-z)
	"$C" ci run --name "ci-$lower" -- sh -c 'echo $$ >"$0"; exec sleep 60' "$T/ready" 2>"$T/err" &
	ci=$!
	for _ in $(seq 1 300); do [ -s "$T/ready" ] && break; sleep 0.1; done
	[ -s "$T/ready" ] || fail "the command did not start within 30 s: $(cat "$T/err")"
	cmd=$(cat "$T/ready")
	kill "-$sig" "$ci"
	wait "$ci"; rc=$?
	want=$((128 + $(kill -l "$sig")))
	[ $rc = $want ] || fail "SIG$sig to cowfs ci: exit $rc, expected $want ($(cat "$T/err"))"
	[ $(($(date +%s) - t0)) -lt 40 ] || fail "SIG$sig: cowfs ci waited for the command's sleep"
	! _lib_alive "$cmd" || fail "SIG$sig: the command ($cmd) still runs"
	only_main "after SIG$sig"
	pass "SIG$sig to cowfs ci: passed to the command, exit $rc, branch ci-$lower and its Postgres gone"
done

# --- --keep-on-failure ------------------------------------------------------------------------------
"$C" ci run --keep-on-failure --name ci-kept -- sh -c '"$0" -X -q -c "INSERT INTO t VALUES (\$\$kept\$\$)" && exit 3' "$PSQL" 2>"$T/err"; rc=$?
[ $rc = 3 ] || fail "--keep-on-failure: exit $rc, expected 3 ($(cat "$T/err"))"
[ "$(branches)" = "ci-kept main" ] || fail "--keep-on-failure: branches $(branches)"
grep -q "branch ci-kept kept" "$T/err" && grep -q "^export DATABASE_URL=" "$T/err" || fail "no name and settings printed: $(cat "$T/err")"
got=$(eval "$(grep '^export ' "$T/err")" && "$PSQL" -X -At -c "SELECT string_agg(x, ',' ORDER BY x) FROM t") ||
	fail "the printed settings do not reach the kept branch"
[ "$got" = kept,main ] || fail "the kept branch holds '$got'"
"$C" branch delete ci-kept --now >/dev/null || fail "delete ci-kept"
only_main "after deleting the kept branch"
pass "--keep-on-failure: exit 3, branch ci-kept kept with Postgres running, the printed settings reach it"
"$C" ci run --keep-on-failure -- true 2>/dev/null || fail "--keep-on-failure with a succeeding command"
only_main "--keep-on-failure after success"
pass "--keep-on-failure with a succeeding command: branch gone"

# --- refused: nothing changed ------------------------------------------------------------------------
"$C" ci run --name main -- true 2>"$T/err"; rc=$?
[ $rc = 125 ] && grep -q "exists already" "$T/err" || fail "--name main: exit $rc ($(cat "$T/err"))"
[ "$(branches)" = main ] && [ -f "$mnt/main/PG_VERSION" ] || fail "--name main changed main"
"$C" ci run --from nope -- true 2>"$T/err"; rc=$?
[ $rc = 125 ] && grep -q "nope" "$T/err" || fail "--from nope: exit $rc ($(cat "$T/err"))"
only_main "--from nope"
"$C" ci run --name ../x -- true 2>/dev/null; rc=$?
[ $rc = 2 ] || fail "--name ../x: exit $rc, expected 2"
"$C" ci run 2>/dev/null; rc=$?
[ $rc = 2 ] || fail "no command: exit $rc, expected 2"
pass "--name of an existing branch, --from a missing one: 125, nothing touched; bad usage: 2"

cd "$T" || fail "cd"
cowfs_umount "$mnt" || fail "umount"
echo "ok: ci.sh: all checks passed"
