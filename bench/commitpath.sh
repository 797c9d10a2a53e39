#!/bin/bash
# bench/commitpath.sh — where a TPC-B commit's time goes, on the plain disk and
# on cowfs (`make bench` runs it when perf is installed).  Not a test: it
# prints figures.
#
# Both clusters as in bench/run.sh (pgbench -i -s $SCALE, the same server
# options), one running at a time.  On each side, pgbench -c 4 -j 2 runs for
# $DURATION seconds; $TRACE seconds into its middle are traced with perf
# (fdatasync entry and exit, the kernel's FUSE request tracepoints, wake-ups
# and context switches, bios queued, all CPUs), and bench/commitpath.py
# takes Postgres's WAL fdatasyncs apart: on cowfs, the FUSE WRITE that
# carries the WAL page (and the daemon's part of it: waking a worker, its
# work, the log's own fdatasync, the reply), the SETATTR of the file's
# times, and waking Postgres again; on both sides, whether the syncs that
# reach the disk also wrote metadata.  Tracing costs TPS on both sides;
# the TPS printed are of the traced runs.
#
# Environment: SCALE=50 DURATION=20 TRACE=5, BENCH_PG_OPTS as bench/run.sh.
. "$(dirname "$0")/../tests/lib.sh"
. "$TESTS_DIR/pg/pglib.sh"

SCALE=${SCALE:-50}
DURATION=${DURATION:-20}
TRACE=${TRACE:-5}
BENCH_PG_OPTS=${BENCH_PG_OPTS:-$BENCH_PG_OPTS_DEFAULT}
export PG_OPTS=$BENCH_PG_OPTS
EVENTS="-e syscalls:sys_enter_fdatasync -e syscalls:sys_exit_fdatasync -e fuse:fuse_request_send -e fuse:fuse_request_end -e sched:sched_wakeup -e sched:sched_switch -e block:block_bio_queue"

die() { echo "bench/commitpath.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/commitpath.sh: must run as root" >&2; exit 2; }
command -v perf >/dev/null || { echo "bench/commitpath.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
# shellcheck disable=SC2086
perf list 2>/dev/null | grep -q 'fuse:fuse_request_send' ||
	{ echo "bench/commitpath.sh: this kernel has no fuse:fuse_request_send tracepoint" >&2; exit 2; }
[ "$DURATION" -gt $((TRACE + 4)) ] || die "DURATION ($DURATION) must exceed TRACE ($TRACE) by more than 4 s"
cowfs_require

bench_sides
tmpdir_new W

echo "commit path: pgbench -i -s $SCALE, then -c 4 -j 2 -T $DURATION with $TRACE s traced in its middle, one side at a time"
declare -A TPS
for s in P C; do
	d=${s}_DATA p=PORT_$s
	bench_load "$s"
	data=$W/trace-$s.data
	( sleep $(((DURATION - TRACE) / 2))
	  # shellcheck disable=SC2086
	  perf record -q -a -o "$data" $EVENTS -- sleep "$TRACE" >/dev/null 2>&1 ) &
	tracer=$!
	TPS[$s]=$(pgb "${!p}" -c 4 -j 2 -T "$DURATION" 2>&1 | sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p')
	wait "$tracer"
	pg_stop "${!d}" || die "stop on $s"
	[ -n "${TPS[$s]}" ] || die "no TPS from pgbench on $s"
	perf script -i "$data" 2>/dev/null | python3 "$(dirname "$0")/commitpath.py" >"$W/fig-$s" ||
		die "commitpath.py on $s"
	rm -f "$data"
done

fig() { awk -v k="$2" -v c="${3:-2}" '$1 == k { print $c }' "$W/fig-$1"; }
row() { printf '  %-44s %9s %9s\n' "$1" "$2" "$3"; }
echo "microseconds, mean (median in brackets)"
row "" plain cowfs
row "TPS while traced" "$(printf '%.0f' "${TPS[P]}")" "$(printf '%.0f' "${TPS[C]}")"
row "Postgres fdatasync calls traced" "$(fig P pg_fdatasync 4)" "$(fig C pg_fdatasync 4)"
row "Postgres fdatasync" "$(fig P pg_fdatasync) ($(fig P pg_fdatasync 3))" "$(fig C pg_fdatasync) ($(fig C pg_fdatasync 3))"
echo "  on cowfs, of $(fig C to_send 4) fdatasyncs that sent a FUSE WRITE:"
row "  entered -> WRITE sent" "" "$(fig C to_send)"
row "  WRITE sent -> its reply" "" "$(fig C write_rt)"
echo "    the daemon's part, of $(fig C d_wake 4) WRITEs followed to the thread that took them:"
row "    -> a daemon thread woken" "" "$(fig C d_wake)"
row "    -> that thread running" "" "$(fig C d_run)"
row "    -> the log's fdatasync begins" "" "$(fig C d_work)"
row "       found the log idle ($(fig C d_work_idle 4))" "" "$(fig C d_work_idle)"
row "       found a sync of the log under way ($(fig C d_work_busy 4))" "" "$(fig C d_work_busy)"
row "    the log's fdatasync" "" "$(fig C d_sync) ($(fig C d_sync 3))"
row "    -> the reply" "" "$(fig C d_reply)"
row "  SETATTR of the file's times (per fdatasync)" "" "$(fig C setattr)"
row "  reply -> Postgres woken" "" "$(fig C reply_to_wake)"
row "  woken -> running" "" "$(fig C wake_to_run)"
row "  running -> fdatasync returns" "" "$(fig C run_to_exit)"
row "every fdatasync of the daemon (median)" "" "$(fig C daemon_fdatasync 3)"
echo "  the fdatasyncs that reach the disk (plain: Postgres's; cowfs: the daemon's), by whether"
echo "  the file system wrote metadata in them (an inode after a block allocation, say):"
row "  with a metadata write: calls" "$(fig P disk_sync_meta 4)" "$(fig C disk_sync_meta 4)"
row "  … their length" "$(fig P disk_sync_meta) ($(fig P disk_sync_meta 3))" "$(fig C disk_sync_meta) ($(fig C disk_sync_meta 3))"
row "  without: calls" "$(fig P disk_sync_data 4)" "$(fig C disk_sync_data 4)"
row "  … their length" "$(fig P disk_sync_data) ($(fig P disk_sync_data 3))" "$(fig C disk_sync_data) ($(fig C disk_sync_data 3))"
echo "reproduce: cd $TOP && make && SCALE=$SCALE DURATION=$DURATION TRACE=$TRACE bash bench/commitpath.sh"
