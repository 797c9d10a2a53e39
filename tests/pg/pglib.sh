# shellcheck shell=bash
# tests/pg/pglib.sh — helpers shared by tests/pg/*.sh and bench/*.sh. Not a
# test. Source it after tests/lib.sh.
#
# COWFS_PLAIN=1 replaces every cowfs mount by a plain directory on the local disk:
# the same Postgres work and the same checks run, minus the mount/umount/daemon
# steps. It exists to validate the Postgres side of the tests without the daemon.
#
#   target_new PFX [plain]    new temp dir with a branch to run Postgres on; sets
#                             PFX_WORK (temp dir, plain disk), PFX_DATA (data directory),
#                             PFX_STORE and PFX_MNT (empty in plain mode)
#   target_is_cow PFX         true if PFX is a cowfs mount
#   pgb PORT ARGS...          pgbench as postgres against database postgres
#   pg_fingerprint PORT       per pgbench table: rows, balance sum, md5 of the contents
#   pg_check_invariant PORT   TPC-B invariant: sum(abalance)=sum(bbalance)=sum(tbalance)
#                             =sum(history.delta); prints the sums, fails otherwise
#   pg_amcheck_all PORT       pg_amcheck --all --heapallindexed; output in $AMCHECK_OUT
#   pg_log_tail PORT [N]      last N lines of the server log (for FAIL messages)
#   cowfs_require             fail unless build/cowfs and build/cowfsd exist (or plain mode)
#   BENCH_PG_OPTS_DEFAULT     the server options of the benches (bench/run.sh,
#                             bench/commitpath.sh, bench/stalls.sh) unless BENCH_PG_OPTS is set
#   bench_sides               a bench's two sides: targets P (plain) and C, and two
#                             distinct free ports PORT_P and PORT_C
#   bench_load P|C            initdb that side, start its Postgres, pgbench -i -s $SCALE,
#                             CHECKPOINT

COWFS_PLAIN=${COWFS_PLAIN:-0}
BENCH_PG_OPTS_DEFAULT="-c shared_buffers=128MB -c max_connections=100 -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_wal_size=1GB -c checkpoint_timeout=5min"

cowfs_require() {
	[ "$COWFS_PLAIN" = 1 ] && return 0
	[ -x "$COWFS_BIN/cowfs" ] && [ -x "$COWFS_BIN/cowfsd" ] ||
		fail "$COWFS_BIN/cowfs or cowfsd missing: run make first (or COWFS_PLAIN=1 to run on the plain disk)"
}

target_new() {
	local pfx=$1 mode=${2:-cow} w
	tmpdir_new w
	printf -v "${pfx}_WORK" '%s' "$w"
	if [ "$mode" = plain ] || [ "$COWFS_PLAIN" = 1 ]; then
		mkdir "$w/data" && chown postgres: "$w/data" && chmod 700 "$w/data" || fail "mkdir $w/data"
		printf -v "${pfx}_STORE" '%s' ""
		printf -v "${pfx}_MNT" '%s' ""
		printf -v "${pfx}_DATA" '%s' "$w/data"
	else
		mkdir "$w/mnt" || fail "mkdir $w/mnt"
		store_init "$w/store" postgres || fail "cowfs init $w/store --owner postgres"
		cowfs_mount "$w/store" "$w/mnt" || fail "cowfs mount $w/store $w/mnt"
		[ -d "$w/mnt/main" ] || fail "no branch directory $w/mnt/main after mount"
		printf -v "${pfx}_STORE" '%s' "$w/store"
		printf -v "${pfx}_MNT" '%s' "$w/mnt"
		printf -v "${pfx}_DATA" '%s' "$w/mnt/main"
	fi
}

bench_sides() {
	target_new P plain
	target_new C
	PORT_P=$(pg_free_port) || fail "no free port"
	PORT_C=$(pg_free_port) || fail "no free port"
	[ "$PORT_P" != "$PORT_C" ] || PORT_C=$(pg_free_port)
}

bench_load() {
	local d=${1}_DATA p=PORT_$1
	pg_initdb "${!d}" || fail "initdb on $1"
	pg_start "${!d}" "${!p}" || fail "start on $1"
	pgb "${!p}" -i -s "$SCALE" -q >/dev/null 2>&1 || fail "pgbench -i on $1"
	runuser -u postgres -- "$PGBIN/psql" -h /tmp -p "${!p}" -d postgres -qc CHECKPOINT || fail "CHECKPOINT on $1"
}

target_is_cow() {
	local v="${1}_MNT"
	[ -n "${!v}" ]
}

pgb() {
	local port=$1; shift
	runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -U postgres "$@" postgres
}

pg_fingerprint() {
	# Parallel Append may emit the UNION ALL branches in any order: sort them.
	psql_q "$1" "
SELECT * FROM (
SELECT 'pgbench_branches', count(*), sum(bbalance),
       md5(coalesce(string_agg(bid||':'||bbalance, ',' ORDER BY bid), ''))
  FROM pgbench_branches
UNION ALL
SELECT 'pgbench_tellers', count(*), sum(tbalance),
       md5(coalesce(string_agg(tid||':'||bid||':'||tbalance, ',' ORDER BY tid), ''))
  FROM pgbench_tellers
UNION ALL
SELECT 'pgbench_accounts', count(*), sum(abalance),
       md5(coalesce(string_agg(aid||':'||bid||':'||abalance||':'||filler, ',' ORDER BY aid), ''))
  FROM pgbench_accounts
UNION ALL
SELECT 'pgbench_history', count(*), coalesce(sum(delta), 0),
       md5(coalesce(string_agg(tid||':'||bid||':'||aid||':'||delta||':'||mtime,
                               ',' ORDER BY tid, bid, aid, delta, mtime), ''))
  FROM pgbench_history
) f ORDER BY 1"
}

pg_check_invariant() {
	local sums a b t h
	sums=$(psql_q "$1" "SELECT (SELECT sum(abalance) FROM pgbench_accounts),
		(SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers),
		(SELECT coalesce(sum(delta), 0) FROM pgbench_history)") || fail "query of pgbench sums failed"
	IFS='|' read -r a b t h <<<"$sums"
	[ "$a" = "$b" ] && [ "$b" = "$t" ] && [ "$t" = "$h" ] ||
		fail "TPC-B invariant broken: sum(abalance)=$a sum(bbalance)=$b sum(tbalance)=$t sum(history.delta)=$h"
	pass "TPC-B invariant holds: sum(abalance)=sum(bbalance)=sum(tbalance)=sum(history.delta)=$a"
}

AMCHECK_OUT=
pg_amcheck_all() {
	local rc
	# client_min_messages: a second run's "extension amcheck already exists" is no finding
	AMCHECK_OUT=$(runuser -u postgres -- env PGOPTIONS="-c client_min_messages=warning" \
		"$PGBIN/pg_amcheck" -h /tmp -p "$1" -U postgres --all --install-missing --heapallindexed 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$AMCHECK_OUT" ]
}

pg_log_tail() {
	tail -n "${2:-40}" "/tmp/cowfs-pg-$1.log" 2>/dev/null | sed 's/^/    | /'
}
