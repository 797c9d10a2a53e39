#!/bin/bash
# tests/pg/crash.sh — a kill -9 or a power cut under load loses no acknowledged commit.
#
# Three scenarios, each on a fresh store and cluster (initdb --data-checksums):
#   daemon    kill -9 of the cowfs daemon while Postgres is under load. Postgres then
#             fails on the dead mount; it is stopped (pg_ctl -m immediate, then kill -9
#             of the postmaster and every child by pid), the dead mount is cleared
#             (umount -l), the store is mounted again (log replay) and Postgres restarted
#             (crash recovery).
#   postgres  kill -9 of the postmaster and all its children under the same load, the
#             daemon staying up; Postgres restarted (crash recovery).
#   powercut  as daemon, but the daemon runs with COWFS_TEST_POWERCUT=1 and is sent
#             SIGUSR2: every log write no fdatasync has covered yet turns to garbage,
#             as a power cut may leave it, and the daemon exits at once (powercut.h).
#             A kill -9 leaves the log's unsynced pages in the page cache; this does
#             not, so it is what tests that a write is durable before it is
#             acknowledged (replies to the kernel's write-back, fsync).
# The load: `pgbench -c 2 -j 2 -T 60` plus tests/pg/acked_writer.sh, which inserts
# 1, 2, 3, ... into acked(id bigint primary key), one autocommit transaction each, and
# records an id on the local disk only after its COMMIT was acknowledged. The kill comes
# at a random moment 3 to 8 s into the load; a CHECKPOINT is started 0 to 0.8 s before
# it, so the kill often lands in the middle of a checkpoint.
# After recovery: every recorded id is in acked; acked holds exactly 1..M with M the
# recorded count or one more (the one commit in flight); the TPC-B invariant holds on the
# pgbench tables (no torn transaction); pg_amcheck --all --heapallindexed is clean; after a clean stop
# pg_checksums --check is clean; no Postgres process of the test is left at any point.
#
# Every check prints "ok: ..."; the first failure prints "FAIL: ..." and exits 1.
# Needs root, /dev/fuse, postgresql-15, a built tree (make).
#
# Environment:
#   COWFS_PLAIN=1        run on a plain directory instead of a cowfs mount; there is no
#                        daemon, so the "daemon" scenario kills Postgres instead
#   SCENARIOS="daemon postgres powercut"   which scenarios to run, in order
#   SCALE=5              pgbench scale of the background load
#   COWFS_BIN=...        directory with cowfs and cowfsd (default: build/ of this tree)
. "$(dirname "$0")/../lib.sh"
. "$TESTS_DIR/pg/pglib.sh"

SCALE=${SCALE:-5}
SCENARIOS=${SCENARIOS:-"daemon postgres powercut"}
export INITDB_OPTS="--data-checksums"
export PGBIN

cowfs_require

# wait up to $2 seconds for background job $1 (from bg_start) to end; kill its group
# after that. Returns 1 if it had to be killed.
bg_wait() {
	local pid=$1
	for _ in $(seq 1 $(($2 * 10))); do
		_lib_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	bg_kill "$pid"
	return 1
}

scenario() {
	local kind=$1 port delay ckgap ckstate n dpid='' pm nkids writer_killed=0 N M missing s out err
	case $kind in
	daemon) echo "--- scenario 'daemon': kill -9 of the cowfs daemon under load" ;;
	postgres) echo "--- scenario 'postgres': kill -9 of the Postgres server under load" ;;
	powercut) echo "--- scenario 'powercut': a simulated power cut of the store's disk under load" ;;
	esac
	[ "$kind" = powercut ] && export COWFS_TEST_POWERCUT=1
	target_new T
	unset COWFS_TEST_POWERCUT
	port=$(pg_free_port) || fail "no free port"
	if [ "$kind" != postgres ] && ! target_is_cow T; then
		echo "note: COWFS_PLAIN=1: no daemon to kill; this scenario kills Postgres instead"
	fi

	pg_initdb "$T_DATA" || fail "initdb -D $T_DATA"
	pg_start "$T_DATA" "$port" || { pg_log_tail "$port"; fail "pg_ctl start on $T_DATA"; }
	s=$(psql_q "$port" "SELECT current_setting('fsync')||','||current_setting('synchronous_commit')||','||current_setting('full_page_writes')")
	[ "$s" = "on,on,on" ] || fail "expected fsync,synchronous_commit,full_page_writes = on,on,on, got $s"
	psql_q "$port" "CREATE TABLE acked (id bigint PRIMARY KEY)" || fail "CREATE TABLE acked"
	out=$(pgb "$port" -i -s "$SCALE" -q 2>&1) || { echo "$out"; pg_log_tail "$port"; fail "pgbench -i -s $SCALE"; }
	pass "$T_DATA: initdb, start on port $port, acked table, pgbench -i -s $SCALE"

	bg_start LOAD runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -U postgres \
		-c 2 -j 2 -T 60 postgres >"$T_WORK/pgbench.out" 2>&1
	bg_start WRITER "$TESTS_DIR/pg/acked_writer.sh" "$port" "$T_WORK/acked.txt" 2>"$T_WORK/writer.err"
	# the kill comes $delay tenths of a second into the load; $ckgap tenths before it a
	# CHECKPOINT starts, so that the kill lands during or shortly after a checkpoint
	delay=$(shuf -i 30-80 -n 1)
	ckgap=$(shuf -i 0-8 -n 1)
	sleep "$(((delay - ckgap) / 10)).$(((delay - ckgap) % 10))"
	bg_start CKPT runuser -u postgres -- "$PGBIN/psql" -X -q -h /tmp -p "$port" -d postgres -c CHECKPOINT >"$T_WORK/checkpoint.out" 2>&1
	sleep "$((ckgap / 10)).$((ckgap % 10))"
	_lib_alive "$LOAD" || { cat "$T_WORK/pgbench.out"; pg_log_tail "$port"; fail "pgbench load ended before the kill"; }
	_lib_alive "$WRITER" || { cat "$T_WORK/writer.err"; pg_log_tail "$port"; fail "acked writer ended before the kill"; }
	_lib_alive "$CKPT" && ckstate="still running" || ckstate="finished"
	n=$(wc -l <"$T_WORK/acked.txt")
	[ "$n" -gt 0 ] || { cat "$T_WORK/writer.err"; fail "acked writer got no commit acknowledged in ${delay}00 ms"; }

	if [ "$kind" != postgres ] && target_is_cow T; then
		dpid=$(cowfs_daemon_pid "$T_MNT")
		[ -n "$dpid" ] || fail "no daemon serving $T_MNT"
		if [ "$kind" = powercut ]; then
			kill -USR2 "$dpid" || fail "SIGUSR2 to daemon $dpid"
			for _ in $(seq 1 300); do _lib_alive "$dpid" || break; sleep 0.1; done
			_lib_alive "$dpid" && fail "daemon $dpid still runs 30 s after the power cut"
			grep -q "simulated power cut" "$T_STORE/cowfsd.log" || fail "daemon $dpid exited without the power cut (see $T_STORE/cowfsd.log)"
			pass "power cut of daemon $dpid at ${delay}00 ms into the load ($(grep -o '[0-9]* unsynced log writes garbled' "$T_STORE/cowfsd.log")), $n commits acknowledged so far, CHECKPOINT started ${ckgap}00 ms before ($ckstate)"
		else
			cowfs_kill9 "$T_MNT" || fail "kill -9 of daemon $dpid"
			pass "kill -9 of daemon $dpid at ${delay}00 ms into the load, $n commits acknowledged so far, CHECKPOINT started ${ckgap}00 ms before ($ckstate)"
		fi
		sleep 2 # let Postgres run into the dead mount
		err=$(stat "$T_DATA" 2>&1 >/dev/null)
		echo "    stat $T_DATA after the kill: ${err:-succeeded}"
		echo "    Postgres log after the kill:"
		pg_log_tail "$port" 8
		timeout 30 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1 ||
			echo "    pg_ctl -m immediate stop failed (expected on a dead mount); killing by pid"
		pm=$(pg_postmaster_pid "$T_DATA")
		pg_kill9 "$T_DATA" || fail "Postgres processes of $T_DATA survive kill -9"
	else
		target_is_cow T && dpid=$(cowfs_daemon_pid "$T_MNT")
		pm=$(pg_postmaster_pid "$T_DATA")
		nkids=$(pgrep -c -P "$pm" -u postgres)
		pg_kill9 "$T_DATA" || fail "Postgres processes of $T_DATA survive kill -9"
		pass "kill -9 of postmaster $pm and its $nkids children at ${delay}00 ms into the load, $n commits acknowledged so far, CHECKPOINT started ${ckgap}00 ms before ($ckstate)"
	fi
	[ -z "$(pg_pids "$T_DATA")" ] || fail "Postgres processes left after the kill: $(pg_pids "$T_DATA" | tr '\n' ' ')"
	pass "no Postgres process of $T_DATA left (postmaster was $pm)"

	bg_wait "$WRITER" 30 || { writer_killed=1; echo "    note: acked writer did not exit by itself; killed"; }
	bg_wait "$LOAD" 30 || echo "    note: pgbench did not exit by itself; killed"
	bg_wait "$CKPT" 30 || echo "    note: CHECKPOINT client did not exit by itself; killed"
	sed 's/^/    writer: /' "$T_WORK/writer.err"
	cp "/tmp/cowfs-pg-$port.log" "$T_WORK/pg-before-restart.log" 2>/dev/null

	if [ "$kind" != postgres ] && target_is_cow T; then
		grep -q " $T_MNT fuse" /proc/mounts || fail "$T_MNT vanished from /proc/mounts after the daemon died"
		cowfs_clear_dead "$T_MNT" || fail "could not clear the dead mount at $T_MNT (umount -l, fusermount3 -u -z)"
		[ -z "$(ls -A "$T_MNT")" ] || fail "mount point $T_MNT not empty after clearing the dead mount"
		cowfs_mount "$T_STORE" "$T_MNT" || fail "cowfs mount $T_STORE $T_MNT after the $kind scenario's crash of the daemon"
		pass "dead mount cleared (umount -l), store mounted again (daemon pid $(cowfs_daemon_pid "$T_MNT"))"
	elif target_is_cow T; then
		[ "$(cowfs_daemon_pid "$T_MNT")" = "$dpid" ] || fail "daemon $dpid died or changed while Postgres was killed"
		pass "daemon $dpid still serving $T_MNT"
	fi

	pg_start "$T_DATA" "$port" || {
		echo "    log before restart:"; tail -n 30 "$T_WORK/pg-before-restart.log" | sed 's/^/    | /'
		echo "    log of the restart:"; pg_log_tail "$port"
		fail "Postgres does not start after the kill (log /tmp/cowfs-pg-$port.log)"
	}
	grep -qE 'not properly shut down|automatic recovery in progress' "/tmp/cowfs-pg-$port.log" ||
		{ pg_log_tail "$port"; fail "Postgres did not run crash recovery after a kill -9 (pg_control said clean?)"; }
	pass "Postgres restarted after crash recovery: $(grep -oE 'redo done at [0-9A-F/]+|redo is not required' "/tmp/cowfs-pg-$port.log" | head -n1)"

	psql_q "$port" "SELECT id FROM acked ORDER BY id" >"$T_WORK/present.txt" || fail "SELECT from acked after recovery"
	N=$(wc -l <"$T_WORK/acked.txt")
	M=$(wc -l <"$T_WORK/present.txt")
	seq 1 "$N" | cmp -s - "$T_WORK/acked.txt" || fail "acked writer's record is not 1..$N (test bug)"
	missing=$(comm -23 <(sort "$T_WORK/acked.txt") <(sort "$T_WORK/present.txt"))
	if [ -n "$missing" ]; then
		fail "$(echo "$missing" | wc -l) of $N acknowledged commits lost after the $kind scenario's crash; missing ids: $(echo "$missing" | sort -n | head -n 20 | tr '\n' ' ')"
	fi
	pass "all $N acknowledged commits present after recovery"
	seq 1 "$M" | cmp -s - "$T_WORK/present.txt" || fail "acked is not exactly ids 1..$M after recovery"
	if [ $writer_killed = 0 ]; then
		[ "$M" -le $((N + 1)) ] || fail "acked has ids 1..$M but only $N were acknowledged and one more in flight"
	fi
	pass "acked holds exactly ids 1..$M ($((M - N)) committed but unacknowledged in flight)"

	pg_check_invariant "$port"
	pg_amcheck_all "$port" || { echo "$AMCHECK_OUT" | head -50; pg_log_tail "$port"; fail "pg_amcheck --all --heapallindexed after recovery"; }
	pass "pg_amcheck --all --heapallindexed clean"
	pg_stop "$T_DATA" || fail "pg_ctl stop after the checks"
	out=$(runuser -u postgres -- "$PGBIN/pg_checksums" --check -D "$T_DATA" 2>&1) || { echo "$out"; fail "pg_checksums --check after recovery"; }
	pass "pg_checksums --check clean ($(echo "$out" | sed -n 's/^Blocks scanned: *//p') blocks)"
	if target_is_cow T; then
		cowfs_umount "$T_MNT" || fail "umount $T_MNT at the end of the scenario (or the daemon did not exit)"
		pass "umount; daemon exited"
	fi
	[ -z "$(pg_pids "$T_DATA")" ] || fail "Postgres processes left at the end of the scenario"
}

for sc in $SCENARIOS; do
	case $sc in
	daemon | postgres | powercut) scenario "$sc" ;;
	*) fail "unknown scenario '$sc' (daemon, postgres, powercut)" ;;
	esac
done
echo "crash.sh: all checks passed"
