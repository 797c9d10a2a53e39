#!/bin/bash
# bench/stalls.sh — TPC-B second by second, on the plain disk and on cowfs,
# with a garbage collection in the middle of the cowfs run (`make bench`
# runs it).  Not a test: it prints figures.
#
# Mean TPS says how fast; the seconds say how evenly.  Both clusters as in
# bench/run.sh (pgbench -i -s $SCALE, the same server options), one running
# at a time; each runs pgbench -c 4 -j 2 -T $DURATION -P 1.  On cowfs,
# `cowfs gc --mount` starts $GC_AT seconds in, after the earlier seconds
# have made garbage (every commit writes a new copy of a WAL page).
# Printed per side: mean TPS, the worst second, the seconds below half the
# median second; on cowfs also the TPS while the collection ran against the
# TPS outside it, how long it took, the daemon's own collections during the
# run, and the worst second outside every collection.
#
# Environment: SCALE=50 DURATION=60 GC_AT=20, BENCH_PG_OPTS as bench/run.sh.
. "$(dirname "$0")/../tests/lib.sh"
. "$TESTS_DIR/pg/pglib.sh"

SCALE=${SCALE:-50}
DURATION=${DURATION:-60}
GC_AT=${GC_AT:-20}
BENCH_PG_OPTS=${BENCH_PG_OPTS:-$BENCH_PG_OPTS_DEFAULT}
export PG_OPTS=$BENCH_PG_OPTS

die() { echo "bench/stalls.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/stalls.sh: must run as root" >&2; exit 2; }
[ "$DURATION" -gt $((GC_AT + 10)) ] || die "DURATION ($DURATION) must exceed GC_AT ($GC_AT) by more than 10 s"
cowfs_require

bench_sides
tmpdir_new W

echo "stalls: pgbench -i -s $SCALE, then -c 4 -j 2 -T $DURATION -P 1; on cowfs a gc at ${GC_AT} s"
for s in P C; do
	d=${s}_DATA p=PORT_$s
	bench_load "$s"
	pgb "${!p}" -c 4 -j 2 -T "$DURATION" -P 1 --progress-timestamp >"$W/prog-$s" 2>&1 &
	bench=$!
	if [ "$s" = C ]; then
		sleep "$GC_AT"
		date +%s.%N >"$W/gc-window"
		"$COWFS_BIN/cowfs" gc --mount "$C_MNT" >"$W/gc-out" 2>&1 || die "cowfs gc: $(cat "$W/gc-out")"
		date +%s.%N >>"$W/gc-window"
	fi
	wait "$bench" || die "pgbench on $s: $(tail -3 "$W/prog-$s")"
	pg_stop "${!d}" || die "stop on $s"
done

# The seconds ("progress: EPOCH s, TPS tps, ..."): a second counts as during
# the collection if its interval overlaps the window.  The daemon's own
# collections (cowfsd.log, stamped to the second) are windows too: the
# worst second outside all of them is what the write path alone gives.
auto_windows() { # "START END" per automatic collection in the daemon's log, epoch seconds
	[ -f "$C_STORE/cowfsd.log" ] || return 0
	python3 - "$C_STORE/cowfsd.log" <<'PY'
import sys, calendar, time
start = None
for l in open(sys.argv[1]):
    t = calendar.timegm(time.strptime(l[:19], "%Y-%m-%dT%H:%M:%S")) if l[:4].isdigit() else None
    if t is None:
        continue
    if "gc: the store grew by" in l:
        start = t
    elif start is not None and " segments rewritten" in l:
        print(start, t + 1)
        start = None
if start is not None:
    print(start, 2 ** 40)
PY
}
summary() {
	python3 - "$W/prog-$1" "${2:-0}" "${3:-0}" "${4:-}" <<'PY'
import sys
f, g0, g1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
auto = [tuple(map(float, w.split())) for w in sys.argv[4].splitlines() if w.strip()]
secs = [(float(l.split()[1]), float(l.split()[3])) for l in open(f) if l.startswith("progress:")]
tps = sorted(t for _, t in secs)
med = tps[(len(tps) - 1) // 2]
out = "%8.0f %10.0f %12d" % (sum(tps) / len(tps), tps[0], sum(t < med / 2 for t in tps))
if g1:
    inside = lambda e, a, b: e > a and e - 1 < b
    during = [t for e, t in secs if inside(e, g0, g1)]
    outside = [t for e, t in secs if not inside(e, g0, g1)]
    d, o = sum(during) / len(during), sum(outside) / len(outside)
    out += "   during gc %.0f, outside %.0f (%.2fx)" % (d, o, d / o)
    auto = [(a, b) for a, b in auto if b > secs[0][0] - 1 and a < secs[-1][0]]
    quiet = [t for e, t in secs if not inside(e, g0, g1) and not any(inside(e, a, b) for a, b in auto)]
    out += "\n  %-8s %d automatic collection(s) during the run; worst second outside every collection: %s" % (
        "", len(auto), "%.0f" % min(quiet) if quiet else "none")
print(out)
PY
}
read -r g0 g1 < <(tr '\n' ' ' <"$W/gc-window")
MP=$(summary P) MC=$(summary C "$g0" "$g1" "$(auto_windows)")
printf '  %-8s %8s %10s %12s\n' "" mean worst "s < median/2"
printf '  %-8s %s\n' plain "$MP" cowfs "$MC"
printf '  cowfs gc took %s s: %s\n' "$(awk -v a="$g0" -v b="$g1" 'BEGIN { printf "%.1f", b - a }')" "$(tail -1 "$W/gc-out")"
printf '  cowfs/plain mean TPS: %s\n' "$(echo "$MP $(head -n 1 <<<"$MC")" | awk '{ printf "%.2f", $4 / $1 }')"
