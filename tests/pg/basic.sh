#!/bin/bash
# tests/pg/basic.sh — stock Postgres 15 on a cowfs branch survives load and a clean
# stop / umount / remount / start with every row intact.
#
#   init a store, mount it, initdb (with data checksums) on MNT/main, start Postgres,
#   pgbench -i -s $SCALE, pgbench -c 4 -j 2 -T $DURATION (no failed transactions),
#   a 1.1 GiB table "big" (a relation past one segment file and past block 2^17),
#   fingerprint the four pgbench tables and big (rows, balance sums, md5 of all contents) and
#   check the TPC-B invariant, stop, umount (the daemon must exit), remount, check the
#   cluster was left "shut down" and starts without crash recovery, same fingerprint,
#   pg_amcheck --all --heapallindexed clean, stop, pg_checksums --check clean.
#
# Every check prints "ok: ..."; the first failure prints "FAIL: ..." and exits 1.
# Needs root, /dev/fuse, postgresql-15, a built tree (make).
#
# Environment:
#   COWFS_PLAIN=1   run the Postgres part on a plain directory instead of a cowfs mount
#                   (validates the test itself; the mount/umount steps are skipped)
#   SCALE=10        pgbench scale;  DURATION=20  seconds of pgbench load
#   BIG_ROWS=1350000  rows of 800 bytes in table "big" (1.1 GiB, two segment files);
#                   0 skips it
#   COWFS_BIN=...   directory with cowfs and cowfsd (default: build/ of this tree)
. "$(dirname "$0")/../lib.sh"
. "$TESTS_DIR/pg/pglib.sh"

SCALE=${SCALE:-10}
DURATION=${DURATION:-20}
BIG_ROWS=${BIG_ROWS:-1350000}
export INITDB_OPTS="--data-checksums"

cowfs_require
target_new T
if target_is_cow T; then
	pass "store initialised and mounted at $T_MNT (daemon pid $(cowfs_daemon_pid "$T_MNT"))"
else
	echo "note: COWFS_PLAIN=1: running on the plain directory $T_DATA"
fi
PORT=$(pg_free_port) || fail "no free port"

pg_initdb "$T_DATA" || fail "initdb -D $T_DATA"
pass "initdb --data-checksums on $T_DATA"
pg_start "$T_DATA" "$PORT" || { pg_log_tail "$PORT"; fail "pg_ctl start on $T_DATA (log /tmp/cowfs-pg-$PORT.log)"; }
pass "Postgres started on port $PORT"
s=$(psql_q "$PORT" "SELECT current_setting('fsync')||','||current_setting('synchronous_commit')||','||current_setting('full_page_writes')")
[ "$s" = "on,on,on" ] || fail "expected fsync,synchronous_commit,full_page_writes = on,on,on, got $s"
pass "fsync, synchronous_commit and full_page_writes are on"

t0=$(date +%s.%N)
out=$(pgb "$PORT" -i -s "$SCALE" -q 2>&1) || { echo "$out"; pg_log_tail "$PORT"; fail "pgbench -i -s $SCALE"; }
pass "pgbench -i -s $SCALE in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

out=$(pgb "$PORT" -c 4 -j 2 -T "$DURATION" 2>&1); rc=$?
echo "$out" | grep -E '^(number of (transactions actually processed|failed transactions)|tps)' | sed 's/^/    /'
[ $rc -eq 0 ] || { echo "$out"; pg_log_tail "$PORT"; fail "pgbench -c 4 -j 2 -T $DURATION exited $rc"; }
failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
[ "$failed" = 0 ] || { echo "$out"; fail "pgbench reports failed transactions: '${failed:-no failed-transactions line}'"; }
processed=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
[ -n "$processed" ] && [ "$processed" -gt 0 ] || { echo "$out"; fail "pgbench processed no transactions"; }
pass "pgbench -c 4 -j 2 -T $DURATION: $processed transactions, 0 failed"

if [ "$BIG_ROWS" -gt 0 ]; then
	# one relation past 1 GiB: two segment files, block numbers past 2^16 and 2^17
	t0=$(date +%s.%N)
	psql_q "$PORT" "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 25) AS pad FROM generate_series(1, $BIG_ROWS) g" ||
		{ pg_log_tail "$PORT"; fail "CREATE TABLE big ($BIG_ROWS rows of 800 bytes)"; }
	big_before=$(psql_q "$PORT" "SELECT pg_relation_size('big'), count(*), sum(g), md5(string_agg(md5(pad), '' ORDER BY g)) FROM big") ||
		fail "fingerprint of table big"
	pass "table big: $(echo "$big_before" | cut -d'|' -f1) bytes, $BIG_ROWS rows, created and read back in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
fi

pg_check_invariant "$PORT"
before=$(pg_fingerprint "$PORT") || fail "fingerprint query failed"
echo "$before" | sed 's/^/    /'
hist=$(echo "$before" | awk -F'|' '$1=="pgbench_history"{print $2}')
[ "$hist" -ge "$processed" ] || fail "pgbench_history has $hist rows, pgbench reported $processed committed transactions"
pass "pgbench_history has $hist rows for $processed reported transactions"

pg_stop "$T_DATA" || { pg_log_tail "$PORT"; fail "pg_ctl stop -m fast"; }
pass "Postgres stopped (fast)"

if target_is_cow T; then
	dpid=$(cowfs_daemon_pid "$T_MNT")
	[ -n "$dpid" ] || fail "no daemon serving $T_MNT before umount"
	cowfs_umount "$T_MNT" || fail "umount $T_MNT (or daemon $dpid did not exit)"
	# the lock is released just before the process exits; a zombie counts as exited
	for _ in $(seq 1 300); do _lib_alive "$dpid" || break; sleep 0.1; done
	! _lib_alive "$dpid" || fail "daemon $dpid still running 30 s after umount"
	! grep -q " $T_MNT fuse" /proc/mounts || fail "$T_MNT still in /proc/mounts after umount"
	pass "umount; daemon $dpid exited"
	[ -z "$(ls -A "$T_MNT")" ] || fail "mount point $T_MNT not empty after umount"
	cowfs_mount "$T_STORE" "$T_MNT" || fail "remount cowfs mount $T_STORE $T_MNT"
	pass "remounted (daemon pid $(cowfs_daemon_pid "$T_MNT"))"
fi

state=$(runuser -u postgres -- "$PGBIN/pg_controldata" -D "$T_DATA" 2>&1 | sed -n 's/^Database cluster state: *//p')
[ "$state" = "shut down" ] || fail "pg_controldata after remount: cluster state '$state', expected 'shut down'"
pass "pg_controldata: cluster state 'shut down'"
[ ! -e "$T_DATA/postmaster.pid" ] || fail "postmaster.pid left in $T_DATA after a clean stop"

pg_start "$T_DATA" "$PORT" || { pg_log_tail "$PORT"; fail "pg_ctl start after remount"; }
pass "Postgres started again"
if grep -qE 'not properly shut down|redo starts|automatic recovery in progress' "/tmp/cowfs-pg-$PORT.log"; then
	pg_log_tail "$PORT"
	fail "Postgres ran crash recovery after a clean shutdown"
fi
pass "no crash recovery after a clean shutdown"

after=$(pg_fingerprint "$PORT") || fail "fingerprint query after restart failed"
if [ "$before" != "$after" ]; then
	echo "before:"; echo "$before" | sed 's/^/    /'
	echo "after:"; echo "$after" | sed 's/^/    /'
	fail "pgbench tables differ after stop/umount/remount/start"
fi
pass "rows, sums and md5 of all four pgbench tables identical after $(target_is_cow T && echo remount || echo restart)"
if [ "$BIG_ROWS" -gt 0 ]; then
	big_after=$(psql_q "$PORT" "SELECT pg_relation_size('big'), count(*), sum(g), md5(string_agg(md5(pad), '' ORDER BY g)) FROM big") ||
		{ pg_log_tail "$PORT"; fail "reading table big after remount"; }
	[ "$big_before" = "$big_after" ] || fail "table big differs after remount: before $big_before, after $big_after (size|rows|sum|md5)"
	pass "table big (past 1 GiB) identical after $(target_is_cow T && echo remount || echo restart)"
fi
pg_check_invariant "$PORT"

pg_amcheck_all "$PORT" || { echo "$AMCHECK_OUT" | head -50; pg_log_tail "$PORT"; fail "pg_amcheck --all --heapallindexed"; }
pass "pg_amcheck --all --heapallindexed clean"

pg_stop "$T_DATA" || fail "pg_ctl stop at the end"
out=$(runuser -u postgres -- "$PGBIN/pg_checksums" --check -D "$T_DATA" 2>&1) || { echo "$out"; fail "pg_checksums --check"; }
pass "pg_checksums --check: $(echo "$out" | sed -n 's/^Blocks scanned: *//p') blocks, no bad checksum"

if target_is_cow T; then
	cowfs_umount "$T_MNT" || fail "final umount $T_MNT"
	pass "final umount; daemon exited"
fi
echo "basic.sh: all checks passed"
