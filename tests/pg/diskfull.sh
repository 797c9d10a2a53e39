#!/bin/bash
# tests/pg/diskfull.sh — a full disk under Postgres gives it ENOSPC and loses
# nothing acknowledged.
#
# The store lives on a 600 MiB tmpfs.  Postgres on branch main inserts rows of
# 1.25 MB of random hex, one transaction each; an id is recorded on the local
# disk only once its COMMIT was acknowledged.  The tmpfs fills and cowfs answers
# ENOSPC, which Postgres sees at a write or at an fdatasync (with the kernel's
# write-back cache a WAL page's ENOSPC comes at its fdatasync, and Postgres
# then PANICs, as it does on any file system whose fsync fails).  Then:
#   - the daemon still runs and the mount answers;
#   - the tmpfs grows to 1200 MiB (space freed): Postgres starts (recovering if
#     it had stopped), every acknowledged id is there, a new insert commits,
#     pg_amcheck is clean;
#   - after umount + mount: the same rows, pg_amcheck clean, and `cowfs fsck`
#     of the unmounted store clean.
source "$(dirname "$0")/../lib.sh"
. "$TESTS_DIR/pg/pglib.sh"
cowfs_require

tmpdir_new T
# For a failure's message: what Postgres and the daemon said last.
logs_tail() {
	echo "  Postgres's log:"
	pg_log_tail "$port" 60
	echo "  the daemon's log:"
	tail -n 40 "$store/cowfsd.log" 2>/dev/null | sed 's/^/    | /'
}
store=$T/small/store mnt=$T/mnt
mkdir -p "$T/small" "$mnt"
mount -t tmpfs -o size=600m cowfs-test "$T/small" || fail "mount a 600 MiB tmpfs"
store_init "$store" postgres >/dev/null || fail "cowfs init on the tmpfs"
cowfs_mount "$store" "$mnt" || fail "mount"
_LIB_MOUNTS+=("$T/small") # after the cowfs mount: unmounted after it
pg_initdb "$mnt/main" || fail "initdb on main"
port=$(pg_free_port) || fail "no free port"
pg_start "$mnt/main" "$port" || fail "start Postgres on main"
psql_q "$port" "CREATE TABLE t (id int PRIMARY KEY, pad text)" || fail "create table"

: >"$T/acked"
n=0 err=
for i in $(seq 1 2000); do # 2000 x 1.25 MB is far more than 600 MiB
	if out=$(psql_q "$port" "INSERT INTO t SELECT $i, string_agg(md5(random()::text), '') FROM generate_series(1, 40000)" 2>&1); then
		echo "$i" >>"$T/acked"
		n=$i
	else
		err=$out
		break
	fi
done
[ -n "$err" ] || fail "2000 inserts of 1.25 MB fitted on a 600 MiB file system"
printf '%s\n' "$err" | grep -q "No space left on device" ||
	{ pg_log_tail "$port"; fail "insert $((n + 1)) failed, but not with ENOSPC: $err"; }
[ "$n" -ge 50 ] || fail "only $n inserts before the disk was full: something else filled it"
pass "the 600 MiB file system filled after $n acknowledged inserts; insert $((n + 1)): $(printf '%s' "$err" | head -n1)"

dpid=$(cowfs_daemon_pid "$mnt")
[ -n "$dpid" ] && _lib_alive "$dpid" || fail "the daemon is gone after the disk filled"
[ -f "$mnt/main/PG_VERSION" ] || fail "the mount does not answer after the disk filled"
pass "the daemon still serves the mount on a full disk"

mount -o remount,size=1200m "$T/small" || fail "grow the tmpfs to 1200 MiB"
# After a PANIC the postmaster restarts by itself (restart_after_crash), and
# stops if that recovery fails for want of space: wait until it answers or is gone.
for _ in $(seq 1 600); do
	[ -z "$(pg_pids "$mnt/main")" ] && break
	psql_q "$port" "SELECT 1" >/dev/null 2>&1 && break
	sleep 0.1
done
if [ -z "$(pg_pids "$mnt/main")" ]; then
	pg_start "$mnt/main" "$port" || { pg_log_tail "$port"; fail "Postgres does not start once space is free"; }
	how="Postgres had stopped and recovered when started again"
else
	how="Postgres kept running (or restarted itself)"
fi
psql_q "$port" "SELECT id FROM t" | sort >"$T/present" || fail "select after the disk was full"
missing=$(sort "$T/acked" | comm -23 - "$T/present" | wc -l)
[ "$missing" = 0 ] || fail "$missing acknowledged inserts are missing after the disk was full"
psql_q "$port" "INSERT INTO t VALUES (100000, 'after')" || fail "an insert once space is free"
pg_amcheck_all "$port" || fail "pg_amcheck after the disk was full: $AMCHECK_OUT"
rows=$(psql_q "$port" "SELECT count(*) FROM t")
pass "space freed: $how; all $n acknowledged rows there ($rows rows), a new insert commits, pg_amcheck clean"

pg_stop "$mnt/main" || fail "stop Postgres"
cowfs_umount "$mnt" || fail "umount"
cowfs_mount "$store" "$mnt" || fail "mount again"
pg_start "$mnt/main" "$port" || { logs_tail; fail "start Postgres after the remount"; }
[ "$(psql_q "$port" "SELECT count(*) FROM t")" = "$rows" ] || fail "the row count changed across umount + mount"
pg_amcheck_all "$port" || { logs_tail; fail "pg_amcheck after the remount: $AMCHECK_OUT"; }
pg_stop "$mnt/main" || fail "stop Postgres"
cowfs_umount "$mnt" || fail "final umount"
out=$("$COWFS_BIN/cowfs" fsck "$store" 2>&1) || fail "cowfs fsck after the disk was full: $out"
umount "$T/small" || fail "umount the tmpfs"
pass "after umount + mount: $rows rows, pg_amcheck clean; cowfs fsck clean"
echo "ok: diskfull.sh: all checks passed"
