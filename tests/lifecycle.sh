#!/usr/bin/env bash
# tests/lifecycle.sh — the life of a branch beyond create/reset (cowfs branch,
# cowfs snapshot, cowfs reap), on a real mount with real Postgres:
#   snapshots: read-only under MOUNT/.snapshots, frozen at the instant taken
#     (also of a running Postgres), a branch made from one, restore (rollback
#     by repoint) refused while Postgres runs, Postgres after restore sees the
#     snapshot's rows; files open before a restore never read old bytes;
#   delete and undelete within the grace period, delete of a parent with
#     children, delete stops the branch's Postgres, delete --now, the trash
#     purged once the grace period is over;
#   expiry: --ttl and --expire-at, the daemon's reaper deletes an expired
#     branch by itself, --no-expiry and protected branches are kept;
#   protected branches refuse delete, reset and restore until unprotected;
#   bad input (names, durations, times, missing snapshots, other users): a
#     clear message, a non-zero exit, nothing changed.
source "$(dirname "$0")/lib.sh"

C=$COWFS_BIN/cowfs
# a short grace period and a reaper that looks every second
store_mounted_new -o grace=6s,reap=1s
br() { "$C" branch "$@" --store "$store"; }
snap() { "$C" snapshot "$@" --store "$store"; }
tree_sum() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum &&
		find . -printf '%y %m %U:%G %s %p\n' | sort) | sha256sum | cut -d' ' -f1
}
# the rows of 'branch list' without the tree's drawing
rows() { br list "$@" | sed -E 's/^(│|├|└|─| )+//'; }
# (the trash is left out: the reaper purges it on its own schedule)
state() { ls "$store/refs/branches" "$store/refs/snapshots" 2>/dev/null | tr '\n' ' '; ls -a "$mnt" "$mnt/.snapshots" | tr '\n' ' '; }
expect_refused() { # DESCRIPTION EXIT PATTERN COMMAND...
	local what=$1 want=$2 pattern=$3 out rc before; shift 3
	before=$(state)
	out=$("$@" 2>&1); rc=$?
	[ "$rc" -eq "$want" ] || fail "$what: exit $rc, expected $want ($out)"
	[ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] || fail "$what: expected one line, got: $out"
	printf '%s' "$out" | grep -qiE "$pattern" || fail "$what: '$out' does not say /$pattern/"
	[ "$(state)" = "$before" ] || fail "$what: the store or the mount changed"
	pass "$what: \"$out\""
}

# --- snapshots of plain files --------------------------------------------------
w=$mnt/main/files
mkdir -p "$w/d" && for i in 1 2 3; do head -c $((i * 50000)) /dev/urandom >"$w/f$i"; done
echo one >"$w/d/x"
s0=$(tree_sum "$w")
snap create main s0 >/dev/null || fail "snapshot create main s0"
[ -d "$mnt/.snapshots/s0" ] || fail "no $mnt/.snapshots/s0"
[ "$(tree_sum "$mnt/.snapshots/s0/files")" = "$s0" ] || fail "the snapshot differs from main when taken"
echo two >>"$w/d/x" && rm "$w/f1" && head -c 9000 /dev/urandom >"$w/f4"
s1=$(tree_sum "$w")
[ "$(tree_sum "$mnt/.snapshots/s0/files")" = "$s0" ] || fail "writes on main changed the snapshot"
pass "snapshot s0 is main as it was when taken, and stays so while main changes"
for op in "touch $mnt/.snapshots/s0/files/new" "rm $mnt/.snapshots/s0/files/f2" \
	"mkdir $mnt/.snapshots/s0/dir" "chmod 600 $mnt/.snapshots/s0/files/f2" \
	"truncate -s 0 $mnt/.snapshots/s0/files/f2"; do
	out=$($op 2>&1) && fail "'$op' succeeded on a snapshot"
	printf '%s' "$out" | grep -q "Read-only file system" || fail "'$op' on a snapshot: $out"
done
out=$(sh -c "echo x >>$mnt/.snapshots/s0/files/f2" 2>&1) && fail "append to a snapshot file succeeded"
out=$(mkdir "$mnt/.snapshots/s9" 2>&1) && fail "mkdir in .snapshots succeeded"
[ "$(tree_sum "$mnt/.snapshots/s0/files")" = "$s0" ] || fail "a refused write changed the snapshot"
pass "a snapshot is read-only: every write fails with EROFS and changes nothing"

br create fromsnap --from-snapshot s0 >/dev/null || fail "branch create --from-snapshot"
[ "$(tree_sum "$mnt/fromsnap/files")" = "$s0" ] || fail "the branch made from s0 differs from s0"
echo mine >"$mnt/fromsnap/files/f2"
[ "$(tree_sum "$mnt/.snapshots/s0/files")" = "$s0" ] || fail "writing the branch changed its snapshot"
[ "$(br list --json | python3 -c 'import json,sys; print([b["parent"] for b in json.load(sys.stdin)["branches"] if b["name"]=="fromsnap"][0])')" = main ] ||
	fail "the branch made from s0 does not name main, the snapshot's branch, as parent"
pass "a branch made from a snapshot starts as the snapshot and writes only to itself"

exec 7<"$w/f2" # open before the restore
head -c 4096 <&7 >/dev/null
br restore main --to s0 >/dev/null || fail "restore main --to s0"
[ "$(tree_sum "$w")" = "$s0" ] || fail "main after restore differs from s0"
cat <&7 >"$T/rest" 2>/dev/null && ! cmp -s "$T/rest" <(tail -c +4097 "$mnt/.snapshots/s0/files/f2") &&
	fail "a file open before the restore read bytes that are not the snapshot's"
exec 7<&-
pass "restore: main is s0 again; a file open before reads the snapshot's bytes or fails"
cowfs_umount "$mnt" && cowfs_mount "$store" "$mnt" -o grace=6s,reap=1s || fail "remount"
[ "$(tree_sum "$mnt/.snapshots/s0/files")" = "$s0" ] && [ "$(tree_sum "$w")" = "$s0" ] ||
	fail "snapshot or restored branch changed across a remount"
snap list | grep -qE "^s0 +main " || fail "snapshot list: $(snap list)"
pass "snapshots and restores survive a remount; snapshot list names s0 of main"

# --- delete, undelete, trash -----------------------------------------------------
br create p >/dev/null && br create ch --from p >/dev/null || fail "create p, ch"
echo child >"$mnt/ch/files/c" && echo parent >"$mnt/p/files/p"
s_ch=$(tree_sum "$mnt/ch/files") s_p=$(tree_sum "$mnt/p/files")
out=$(br delete p) || fail "delete p (a parent): $out"
printf '%s' "$out" | grep -q "undelete p" || fail "delete does not say how to undelete: $out"
[ ! -e "$mnt/p" ] || fail "$mnt/p still there after delete"
[ "$(tree_sum "$mnt/ch/files")" = "$s_ch" ] || fail "deleting the parent p changed its child ch"
br list | grep -qE "^ch " || fail "ch is not listed as a root of the tree once its parent is gone: $(br list)"
br list --deleted | grep -qE "^p " || fail "p not in the trash: $(br list --deleted)"
pass "deleting a parent keeps its child's data; the deleted branch is in the trash"
br list --json | python3 -c '
import json, sys
bs = {b["name"]: b for b in json.load(sys.stdin)["branches"]}
ch = bs["ch"]["bytes"]
assert ch["logical"] >= 100000 and ch["own"] + ch["shared"] == ch["logical"], ch
assert all("bytes" in b for b in bs.values()), bs' || fail "branch list --json lacks the bytes"
rows | grep -E "^ch " | grep -qE "KiB|MiB" || fail "branch list does not show bytes: $(br list)"
pass "branch list shows logical, own and shared bytes per branch"
br undelete p >/dev/null || fail "undelete p"
[ "$(tree_sum "$mnt/p/files")" = "$s_p" ] || fail "undeleted p differs from p before delete"
br list --deleted | grep -qE "^p " && fail "p still in the trash after undelete"
pass "undelete brings p back with its data"
expect_refused "undelete of a branch that is not deleted" 1 "no deleted branch 'zzz'" br undelete zzz
br create dup >/dev/null && br delete dup >/dev/null && br create dup >/dev/null || fail "dup"
expect_refused "undelete over a live branch" 1 "exists" br undelete dup
br delete --now ch >/dev/null || fail "delete --now"
br list --deleted | grep -qE "^ch " && fail "delete --now put ch in the trash"
pass "delete --now skips the trash"
br delete dup >/dev/null || fail "delete dup"
sleep 8 # past the 6 s grace period; the reaper runs every second
br list --deleted | grep -qE "^dup " && fail "dup still in the trash after its grace period"
expect_refused "undelete after the grace period" 1 "no deleted branch 'dup'" br undelete dup
pass "the reaper purges the trash once the grace period is over"

# --- expiry and protection ----------------------------------------------------------
br create t1 --ttl 2s >/dev/null || fail "create --ttl"
br create t2 --expire-at "@$(($(date +%s) + 2))" >/dev/null || fail "create --expire-at"
br create keep --ttl 1s >/dev/null && br set keep --no-expiry >/dev/null || fail "set --no-expiry"
br create prot --ttl 1s --protected >/dev/null || fail "create --protected"
rows --no-bytes | grep -E "^t1 " | grep -qE " [12]s$" || fail "list does not show t1's expiry: $(br list)"
sleep 5
ls "$mnt" | grep -qx t1 && fail "t1 is still there 3 s after it expired"
ls "$mnt" | grep -qx t2 && fail "t2 is still there 3 s after it expired"
ls "$mnt" | grep -qx keep || fail "keep (no expiry) was reaped"
ls "$mnt" | grep -qx prot || fail "prot (protected) was reaped"
br list --deleted | grep -qE "^t1 " || fail "the expired t1 is not in the trash"
pass "the daemon's reaper deleted t1 and t2 when they expired, into the trash; keep and prot stay"
expect_refused "delete of a protected branch" 1 "protected" br delete prot
expect_refused "reset of a protected branch" 1 "protected" br reset prot
expect_refused "restore of a protected branch" 1 "protected" br restore prot --to s0
rows | grep -E "^prot " | grep -q "protected" || fail "list does not show prot as protected"
br set prot --unprotected --no-expiry >/dev/null || fail "set --unprotected"
br reset prot >/dev/null && br delete prot >/dev/null || fail "reset/delete after --unprotected"
pass "a protected branch refuses delete, reset and restore until 'set --unprotected'"
out=$("$C" reap --store "$store") || fail "cowfs reap: $out"
pass "cowfs reap runs the reaper on demand"

# --- Postgres: snapshot of a running cluster, restore, delete stops it -----------------
# a cluster at the root of its branch, as cowfs lays them out
br create db --from-snapshot s0 >/dev/null || fail "create db"
rm -rf "${mnt:?}/db/"* && chown postgres:postgres "$mnt/db" && chmod 700 "$mnt/db" || fail "empty db"
pg_initdb "$mnt/db" || fail "initdb"
port=$(pg_free_port)
pg_start "$mnt/db" "$port" || fail "start Postgres"
psql_q "$port" "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000)" || fail "fill t"
snap create db pgsnap >/dev/null || fail "snapshot of a running Postgres"
[ -e "$mnt/.snapshots/pgsnap/postmaster.pid" ] && fail "the snapshot has a postmaster.pid"
psql_q "$port" "DELETE FROM t WHERE v > 10" || fail "delete rows"
# the daemon refuses to repoint a running cluster; the command line stops
# Postgres, restores and starts it again on the same port
reply=$(python3 - "$store/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')
f.write(b'{"cmd": "branch.restore", "name": "db", "snapshot": "pgsnap"}\n'); f.flush(); print(f.readline().decode().strip())
PY
)
printf '%s' "$reply" | grep -q "Postgres runs on branch 'db'" || fail "the daemon restored a branch with Postgres running: $reply"
[ "$(psql_q "$port" "SELECT count(*) FROM t")" = 10 ] || fail "the refused restore changed db"
pass "the daemon refuses to restore while Postgres runs: $reply"
pm0=$(head -n1 "$mnt/db/postmaster.pid")
br restore db --to pgsnap >/dev/null || fail "restore db --to pgsnap with Postgres running"
[ "$(psql_q "$port" "SELECT count(*) FROM t")" = 1000 ] || fail "after restore, t does not hold the snapshot's 1000 rows"
[ "$(head -n1 "$mnt/db/postmaster.pid")" != "$pm0" ] || fail "Postgres was not restarted by the restore"
_LIB_PGPID[$mnt/db]=$(head -n1 "$mnt/db/postmaster.pid")
pass "snapshot of a running Postgres; restore stops Postgres, repoints, starts it again on port $port with the snapshot's 1000 rows"
pm=$(head -n1 "$mnt/db/postmaster.pid")
_lib_alive "$pm" || fail "no postmaster on db"
br delete db >/dev/null || fail "delete of a branch with Postgres running"
_lib_alive "$pm" && fail "Postgres ($pm) still runs after its branch was deleted"
br list --deleted | grep -qE "^db " || fail "db is not in the trash"
pass "delete stopped the branch's Postgres (pid $pm) first"
br undelete db >/dev/null || fail "undelete db"
[ -e "$mnt/db/postmaster.pid" ] && fail "undeleted db has a postmaster.pid"
pg_start "$mnt/db" "$port" || fail "Postgres on the undeleted branch"
[ "$(psql_q "$port" "SELECT count(*) FROM t")" = 1000 ] || fail "undeleted db lost rows"
pg_stop "$mnt/db" || fail "stop db"
pass "an undeleted branch runs Postgres again with its data"

# --- bad input ------------------------------------------------------------------------
expect_refused "snapshot of a missing branch" 1 "no branch 'nope'" snap create nope s5
expect_refused "snapshot with a bad name" 1 "lower-case" snap create fromsnap Bad/Name
expect_refused "snapshot name taken" 1 "exists already" snap create fromsnap s0
expect_refused "restore to a missing snapshot" 1 "no snapshot 'nope'" br restore fromsnap --to nope
expect_refused "branch from a missing snapshot" 1 "no snapshot 'nope'" br create x --from-snapshot nope
expect_refused "restore without --to" 2 "needs --to" br restore fromsnap
expect_refused "bad --ttl" 2 "duration" br create x --ttl soon
expect_refused "bad --expire-at" 2 "YYYY-MM-DD" br create x --expire-at tomorrow
expect_refused "--from with --from-snapshot" 2 "not both" br create x --from main --from-snapshot s0
expect_refused "set without a setting" 2 "set needs" br set fromsnap
expect_refused "delete of a missing snapshot" 1 "no snapshot 'nope'" snap delete nope
expect_refused "another user deletes root's branch" 1 "only its owner or root" \
	runuser -u postgres -- "$C" branch delete fromsnap --store "$store"
expect_refused "another user changes root's branch" 1 "only its owner or root" \
	runuser -u postgres -- "$C" branch set fromsnap --protected --store "$store"
replies=$(python3 - "$store/control.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')
for req in [b'{"cmd": "branch.set", "name": "fromsnap", "expires": "soon"}',
            b'{"cmd": "branch.set", "name": "fromsnap", "protected": 1}',
            b'{"cmd": "branch.delete", "name": "fromsnap", "purge": "yes"}',
            b'{"cmd": "snapshot.create", "branch": "fromsnap"}',
            b'{"cmd": "branch.restore", "name": "fromsnap", "snapshot": 3}',
            b'{"cmd": "branch.create", "name": "x", "from": "main", "snapshot": "s0"}',
            b'{"cmd": "snapshot.list"}']:
    f.write(req + b'\n'); f.flush(); print(f.readline().decode().strip())
PY
)
echo "$replies" | sed 's/^/    /'
[ "$(echo "$replies" | grep -c '"ok":false')" -eq 6 ] || fail "mistyped requests were not all refused"
echo "$replies" | tail -n1 | grep -q '"ok":true' || fail "the connection was not usable after bad requests"
pass "mistyped fields on the socket refused; the connection stays usable"
snap delete s0 >/dev/null || fail "snapshot delete"
[ -e "$mnt/.snapshots/s0" ] && fail "$mnt/.snapshots/s0 still there after delete"
[ "$(tree_sum "$mnt/fromsnap/files")" != "" ] || fail "fromsnap lost its data with its snapshot"
pass "snapshot delete removes it from the mount; branches made from it keep their data"
echo "ok: lifecycle.sh: all checks passed"
