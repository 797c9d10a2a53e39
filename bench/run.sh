#!/bin/bash
# bench/run.sh — cowfs against the plain disk, side by side in one run (`make bench`).
# Not a test: it prints figures and exits 0 unless something broke.
#
# Two clusters, one on a plain data directory (a mktemp dir under /tmp, the same
# filesystem as the store) and one on a cowfs mount (branch main of a new store under
# /tmp), both initdb'ed the same way and started with the same options ($BENCH_PG_OPTS).
# For each phase the two sides run one after the other (the order alternates by round);
# only the cluster under measurement is running (the other is stopped), so the two
# never compete for the CPUs;
# before each plain phase the cowfs daemon's automatic gc, if due, is let run and
# finish (a due collection waits while the CPUs are busy, so it runs in that gap),
# and any gc that overlapped a phase is printed under it:
#   load      pgbench -i -s $SCALE: wall time; also time of load + CHECKPOINT (the same
#             load made durable).  Each side first loads once, not counted (see the
#             warm-up below), so a measured load replaces tables of its own side
#   TPC-B     CHECKPOINT, then pgbench -c 4 -j 2 -T $DURATION (fsync on): TPS
#   select    pgbench -S -c 4 -j 2 -T $DURATION: TPS
# Then: the daemon's peak memory (VmHWM from /proc/PID/status, read before unmount),
# and after stop and umount, du of the store directory against du of the plain
# data directory.
# Ratios are always "cowfs relative to plain, higher is better" for speed:
#   load ratio = plain_time / cowfs_time (throughput ratio), TPS ratio = cowfs_tps / plain_tps;
# for size: store_bytes / plain_bytes (lower is better).
#
# Environment:
#   SCALE=50 DURATION=30     pgbench scale and seconds per timed run
#   ROUNDS=1                 repeat the three phases, alternating which side goes first;
#                            the table shows the means (other load on the machine is noise)
#   BENCH_PG_OPTS="..."      server options used for both clusters (default:
#                            BENCH_PG_OPTS_DEFAULT in tests/pg/pglib.sh)
#   COWFS_PLAIN=1            the "cowfs" side is a second plain directory (a check of the
#                            script and of the noise between two identical runs)
#   COWFS_BIN=...            directory with cowfs and cowfsd (default: build/)
. "$(dirname "$0")/../tests/lib.sh"
. "$TESTS_DIR/pg/pglib.sh"
. "$(dirname "$0")/lib.sh"

SCALE=${SCALE:-50}
DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-1}
BENCH_PG_OPTS=${BENCH_PG_OPTS:-$BENCH_PG_OPTS_DEFAULT}
export PG_OPTS=$BENCH_PG_OPTS

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: must run as root" >&2; exit 2; }
[ "$COWFS_PLAIN" = 1 ] || [ -c /dev/fuse ] || { echo "bench/run.sh: /dev/fuse missing" >&2; exit 2; }
cowfs_require

die() { echo "bench/run.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN{ printf \"%.${2:-2}f\", $1 }"; }

# Free page reporting off while the bench runs: see bench/lib.sh.
bench_quiet_memory

bench_sides
COW_LABEL=cowfs
target_is_cow C || COW_LABEL="plain#2"

echo "cowfs bench: SCALE=$SCALE DURATION=$DURATION, $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "  plain:  $P_DATA (filesystem $(df --output=source,fstype "$P_WORK" | tail -n1 | tr -s ' '))"
if target_is_cow C; then
	echo "  cowfs:  $C_DATA (store $C_STORE, daemon pid $(cowfs_daemon_pid "$C_MNT"))"
else
	echo "  $COW_LABEL: $C_DATA (COWFS_PLAIN=1: no cowfs; both sides on the plain disk)"
fi
echo "  server options (both): $BENCH_PG_OPTS"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  memory: $PR_STATE"
echo

pg_initdb "$P_DATA" || die "initdb $P_DATA"
pg_initdb "$C_DATA" || die "initdb $C_DATA"

side_start() { # P|C
	local d=${1}_DATA p=PORT_$1
	pg_start "${!d}" "${!p}" || { pg_log_tail "${!p}"; die "start Postgres on ${!d}"; }
}
side_stop() {
	local d=${1}_DATA p=PORT_$1
	pg_stop "${!d}" || { pg_log_tail "${!p}"; die "stop Postgres on ${!d}"; }
	# write back what the stopped side left dirty in the page cache, so that the
	# next measured run does not pay for it
	sync
	sleep 2
}
# run pgbench, print its summary lines indented, store the TPS in TPS_OUT
TPS_OUT=
bench_tps() {
	local port=$1 label=$2 out rc failed; shift 2
	out=$(pgb "$port" "$@" 2>&1); rc=$?
	[ $rc -eq 0 ] || { echo "$out" | tail -n 20; pg_log_tail "$port"; die "pgbench $* on $label exited $rc"; }
	failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
	TPS_OUT=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p')
	[ -n "$TPS_OUT" ] || { echo "$out"; die "no tps line from pgbench on $label"; }
	printf '  %-8s pgbench %s: %s tps, %s failed\n' "$label" "$*" "$TPS_OUT" "${failed:-?}"
}

# The daemon's automatic collections run when they fall due and the CPUs are
# quiet, or however busy once the store has grown twice as much: say which
# phases they overlapped.
gc_count() { # the count of collections started and ended so far: "S E"
	local started=0 ended=0
	if target_is_cow C; then
		started=$(grep -c "gc: the store grew by" "$C_STORE/cowfsd.log" 2>/dev/null)
		ended=$(grep -c "gc: [0-9]* segments rewritten" "$C_STORE/cowfsd.log" 2>/dev/null)
	fi
	echo "${started:-0} ${ended:-0}"
}
gc_since() { # "S E" from gc_count before the phase
	local b e b1 e1
	read -r b e <<<"$1"
	read -r b1 e1 <<<"$(gc_count)"
	[ $((b1 - b + e1 - e)) -gt 0 ] &&
		echo "           (automatic gc of the cowfs store: $((b1 - b)) started, $((e1 - e)) ended during it)"
	return 0
}
# Before a phase on the plain side: let the cleaner see what the cowfs side
# wrote (it looks every 5 s) and wait for any collection that starts to end,
# or that waits for the CPUs to be quiet to start and end, so that the
# plain side is measured with the cowfs daemon idle.
gc_waiting() { # the daemon's last word on a due collection is that it waits
	grep -E "gc: a collection is due|gc: the store grew by" "$C_STORE/cowfsd.log" 2>/dev/null |
		tail -n 1 | grep -q "gc: a collection is due"
}
gc_quiet() {
	local b e i
	target_is_cow C || return 0
	for i in $(seq 1 20); do
		sleep 6
		read -r b e <<<"$(gc_count)"
		[ "$b" = "$e" ] && ! gc_waiting && return 0
	done
	echo "           (an automatic gc of the cowfs store is still due or running after 2 minutes)"
}

label_of() { if [ "$1" = P ]; then echo plain; else echo "$COW_LABEL"; fi; }
# pgbench -i on side S (P|C), or die with its output and the server's log
load_on() {
	local p=PORT_$1 out
	out=$(pgb "${!p}" -i -s "$SCALE" -q 2>&1) || { echo "$out"; pg_log_tail "${!p}"; die "pgbench -i on $(label_of "$1")"; }
}

# --- a warm-up load on each side, not counted.  On a VM that gives memory it
# frees back to its host (see free page reporting above), memory never
# touched since boot costs a fault in the host too, so a first load is
# slower for whichever side runs second (with COWFS_PLAIN=1, the second
# side's first load took 7.5 s against 5.1 s).  With reporting off (above),
# memory touched once stays cheap, and after the warm-up every measured
# load replaces tables of its own side, as any re-run of pgbench -i does,
# so the two sides start alike.
for s in P C; do
	side_start $s
	t0=$(now)
	load_on $s
	printf '  %-8s pgbench -i -s %s: %s s (warm-up, not counted)\n' "$(label_of $s)" "$SCALE" "$(calc "$(now) - $t0")"
	side_stop $s
done

# --- the timed phases; with ROUNDS > 1 every round repeats all three (pgbench -i
# recreates the tables), alternating which side goes first, and the table shows means
declare -A LOAD LOADCK TPCB SEL
for s in P C; do LOAD[$s]=0; LOADCK[$s]=0; TPCB[$s]=0; SEL[$s]=0; done
for round in $(seq 1 "$ROUNDS"); do
	order="P C"; [ $((round % 2)) = 0 ] && order="C P"
	[ "$ROUNDS" -gt 1 ] && echo "  round $round of $ROUNDS"
	for s in $order; do
		label=$(label_of $s); port=PORT_$s
		[ $s = P ] && gc_quiet
		side_start $s
		g0=$(gc_count)
		t0=$(now)
		load_on $s
		t1=$(now)
		psql_q "${!port}" "CHECKPOINT" || die "CHECKPOINT on $label"
		t2=$(now)
		printf '  %-8s pgbench -i -s %s: %s s (with CHECKPOINT %s s)\n' "$label" "$SCALE" "$(calc "$t1 - $t0")" "$(calc "$t2 - $t0")"
		gc_since "$g0"
		LOAD[$s]=$(calc "${LOAD[$s]} + ($t1 - $t0) / $ROUNDS" 3)
		LOADCK[$s]=$(calc "${LOADCK[$s]} + ($t2 - $t0) / $ROUNDS" 3)
		side_stop $s
	done
	for s in $order; do
		label=$(label_of $s); port=PORT_$s
		[ $s = P ] && gc_quiet
		side_start $s
		psql_q "${!port}" "CHECKPOINT" || die "CHECKPOINT on $label"
		g0=$(gc_count)
		bench_tps "${!port}" "$label" -c 4 -j 2 -T "$DURATION"
		gc_since "$g0"
		TPCB[$s]=$(calc "${TPCB[$s]} + $TPS_OUT / $ROUNDS" 1)
		side_stop $s
	done
	for s in $order; do
		label=$(label_of $s); port=PORT_$s
		[ $s = P ] && gc_quiet
		side_start $s
		g0=$(gc_count)
		bench_tps "${!port}" "$label" -S -c 4 -j 2 -T "$DURATION"
		gc_since "$g0"
		SEL[$s]=$(calc "${SEL[$s]} + $TPS_OUT / $ROUNDS" 1)
		side_stop $s
	done
done
for s in P C; do LOAD[$s]=$(calc "${LOAD[$s]}"); LOADCK[$s]=$(calc "${LOADCK[$s]}"); TPCB[$s]=$(calc "${TPCB[$s]}" 0); SEL[$s]=$(calc "${SEL[$s]}" 0); done

# --- memory (before unmount) and sizes (after)
HWM=- RSS=-
if target_is_cow C; then
	dpid=$(cowfs_daemon_pid "$C_MNT")
	HWM=$(awk '/^VmHWM:/{print $2}' "/proc/$dpid/status" 2>/dev/null)
	RSS=$(awk '/^VmRSS:/{print $2}' "/proc/$dpid/status" 2>/dev/null)
	LOGICAL=$(du -sk --apparent-size "$C_DATA" | cut -f1)
	cowfs_umount "$C_MNT" || die "umount $C_MNT (or the daemon did not exit)"
	SIZE_C=$(du -sk "$C_STORE" | cut -f1)
else
	LOGICAL=$(du -sk --apparent-size "$C_DATA" | cut -f1)
	SIZE_C=$(du -sk "$C_DATA" | cut -f1)
fi
SIZE_P=$(du -sk "$P_DATA" | cut -f1)

mib() { calc "$1 / 1024" 0; }
echo
printf '%-34s %12s %12s %8s %8s  %s\n' "metric" "plain" "$COW_LABEL" "ratio" "target" "ratio is"
printf '%-34s %12s %12s %8s %8s  %s\n' "pgbench -i -s $SCALE (s)" "${LOAD[P]}" "${LOAD[C]}" \
	"$(calc "${LOAD[P]} / ${LOAD[C]}")" ">= 0.70" "plain_time/${COW_LABEL}_time (throughput, higher is better)"
printf '%-34s %12s %12s %8s %8s  %s\n' "  same + CHECKPOINT (s)" "${LOADCK[P]}" "${LOADCK[C]}" \
	"$(calc "${LOADCK[P]} / ${LOADCK[C]}")" "-" "plain_time/${COW_LABEL}_time (load made durable)"
printf '%-34s %12s %12s %8s %8s  %s\n' "TPC-B -c4 -j2 -T$DURATION, fsync on (tps)" "${TPCB[P]}" "${TPCB[C]}" \
	"$(calc "${TPCB[C]} / ${TPCB[P]}")" ">= 0.80" "${COW_LABEL}_tps/plain_tps"
printf '%-34s %12s %12s %8s %8s  %s\n' "select-only -S -c4 -j2 (tps)" "${SEL[P]}" "${SEL[C]}" \
	"$(calc "${SEL[C]} / ${SEL[P]}")" ">= 0.90" "${COW_LABEL}_tps/plain_tps"
printf '%-34s %12s %12s %8s %8s  %s\n' "on-disk size (MiB, du)" "$(mib "$SIZE_P")" "$(mib "$SIZE_C")" \
	"$(calc "$SIZE_C / $SIZE_P")" "-" "store/plain data dir (lower is better); branch apparent size $(mib "$LOGICAL") MiB"
if [ "$HWM" != - ] && [ -n "$HWM" ]; then
	printf '%-34s %12s %12s %8s %8s  %s\n' "daemon peak memory VmHWM (MiB)" "-" "$(mib "$HWM")" "-" "-" \
		"$(calc "($HWM / 1024) / ($SIZE_C / 1048576)" 0) MiB per GiB of store; VmRSS at end $(mib "$RSS") MiB"
fi
echo
echo "order: per phase and round, plain first in odd rounds, $COW_LABEL first in even rounds; only the measured cluster running; no automatic gc during plain phases."
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the ratios)"
echo "reproduce: cd $TOP && make && SCALE=$SCALE DURATION=$DURATION ROUNDS=$ROUNDS bash bench/run.sh"
