#!/bin/bash
# bench/ab.sh — is a change to the daemon worth it?  Paired TPC-B runs of two
# daemons (or two sets of mount options) on one loaded store.  Not a test and
# not in `make bench`: a tool for deciding, whose output goes in
# docs/PERFORMANCE.md next to the change it judged.
#
# On this VM the plain disk's own TPC-B moves by 10 to 20 % between runs a
# minute apart, so a single bench run cannot see a change of a few per cent.
# Here both sides run the same work on the same store, one after the other,
# many times, with the order alternated (A B, B A, A B, ...) so that drift
# over the session (the store growing, the host's load) falls on both alike.
#
# The store is loaded once, with A's binaries: pgbench -i -s $SCALE, then
# CHECKPOINT.  Each run then mounts it with its side's binaries and mount
# options, starts Postgres, reads for $WARM s (select-only, so that both
# sides start from a warm page cache), runs pgbench -c 4 -j 2 -T $DURATION,
# stops Postgres and unmounts.  Printed: each run's TPS, each side's mean,
# lowest and highest, and the mean of B over the mean of A.
#
# Environment:
#   A_BIN, B_BIN       directories with cowfs and cowfsd (default: build/ for both)
#   A_OPTS, B_OPTS     mount options for each side (-o), e.g. B_OPTS=noreclaim
#   PAIRS=4            pairs of runs
#   SCALE=50 DURATION=20 WARM=8
#   BENCH_PG_OPTS      server options (default: BENCH_PG_OPTS_DEFAULT in tests/pg/pglib.sh)
# Example: the daemon of another checkout against this one,
#   B_BIN=/tmp/other/build PAIRS=6 bash bench/ab.sh
. "$(dirname "$0")/../tests/lib.sh"
. "$TESTS_DIR/pg/pglib.sh"
. "$(dirname "$0")/lib.sh"

PAIRS=${PAIRS:-4}
SCALE=${SCALE:-50}
DURATION=${DURATION:-20}
WARM=${WARM:-8}
A_BIN=${A_BIN:-$COWFS_BIN}
B_BIN=${B_BIN:-$COWFS_BIN}
export PG_OPTS=${BENCH_PG_OPTS:-$BENCH_PG_OPTS_DEFAULT}

die() { echo "bench/ab.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
[ -c /dev/fuse ] || die "/dev/fuse missing"
for b in "$A_BIN" "$B_BIN"; do
	[ -x "$b/cowfs" ] && [ -x "$b/cowfsd" ] || die "$b has no cowfs and cowfsd (build it first)"
done
[ "$A_BIN" != "$B_BIN" ] || [ "${A_OPTS:-}" != "${B_OPTS:-}" ] ||
	echo "bench/ab.sh: A and B are the same daemon with the same options (a check of the noise)"
cowfs_require
bench_quiet_memory

tmpdir_new W
STORE=$W/store MNT=$W/mnt
mkdir -p "$MNT"
PORT=$(pg_free_port) || die "no free port"

# mount the store with side $1's binaries and options
side_mount() {
	local bin=${1}_BIN opts=${1}_OPTS
	COWFS_BIN=${!bin} cowfs_mount "$STORE" "$MNT" ${!opts:+-o "${!opts}"} || die "mount for side $1"
}
side_umount() {
	pg_stop "$MNT/main" || { pg_log_tail "$PORT"; die "stop Postgres"; }
	cowfs_umount "$MNT" || die "umount"
}

echo "cowfs A/B: A=$A_BIN${A_OPTS:+ -o $A_OPTS}  B=$B_BIN${B_OPTS:+ -o $B_OPTS}"
echo "  SCALE=$SCALE DURATION=$DURATION WARM=$WARM PAIRS=$PAIRS, $(nproc) CPUs; $PR_STATE"
echo "  server options: $PG_OPTS"

COWFS_BIN=$A_BIN store_init "$STORE" postgres >/dev/null || die "init"
side_mount A
pg_initdb "$MNT/main" || die "initdb"
pg_start "$MNT/main" "$PORT" || { pg_log_tail "$PORT"; die "start Postgres"; }
pgb "$PORT" -i -s "$SCALE" -q >/dev/null 2>&1 || die "pgbench -i"
psql_q "$PORT" CHECKPOINT >/dev/null || die "CHECKPOINT"
side_umount

declare -A SUM N LO HI
one_run() { # side
	side_mount "$1"
	pg_start "$MNT/main" "$PORT" || { pg_log_tail "$PORT"; die "start Postgres"; }
	pgb "$PORT" -S -c 2 -j 2 -T "$WARM" >/dev/null 2>&1 || die "warm-up"
	local out tps
	out=$(pgb "$PORT" -c 4 -j 2 -T "$DURATION" 2>&1) || { echo "$out" | tail -n 5; die "pgbench on side $1"; }
	tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p')
	[ -n "$tps" ] || { echo "$out"; die "no tps line from pgbench"; }
	side_umount
	printf '  %s %8.0f TPS\n' "$1" "$tps"
	SUM[$1]=$(awk -v a="${SUM[$1]:-0}" -v b="$tps" 'BEGIN { print a + b }')
	N[$1]=$((${N[$1]:-0} + 1))
	LO[$1]=$(awk -v a="${LO[$1]:-$tps}" -v b="$tps" 'BEGIN { print (b < a ? b : a) }')
	HI[$1]=$(awk -v a="${HI[$1]:-0}" -v b="$tps" 'BEGIN { print (b > a ? b : a) }')
}
for pair in $(seq 1 "$PAIRS"); do
	if [ $((pair % 2)) = 1 ]; then one_run A; one_run B; else one_run B; one_run A; fi
done

echo
for s in A B; do
	awk -v s="$s" -v sum="${SUM[$s]}" -v n="${N[$s]}" -v lo="${LO[$s]}" -v hi="${HI[$s]}" \
		'BEGIN { printf "%s: mean %.0f TPS over %d runs (lowest %.0f, highest %.0f)\n", s, sum / n, n, lo, hi }'
done
awk -v a="${SUM[A]}" -v b="${SUM[B]}" 'BEGIN { printf "B / A: %.3f\n", b / a }'
