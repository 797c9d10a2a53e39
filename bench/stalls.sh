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
# TPS outside it, and how long it took.
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
# the collection if its interval overlaps the window.
summary() {
	python3 - "$W/prog-$1" "${2:-0}" "${3:-0}" <<'PY'
import sys
f, g0, g1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
secs = [(float(l.split()[1]), float(l.split()[3])) for l in open(f) if l.startswith("progress:")]
tps = sorted(t for _, t in secs)
med = tps[(len(tps) - 1) // 2]
out = "%8.0f %10.0f %12d" % (sum(tps) / len(tps), tps[0], sum(t < med / 2 for t in tps))
if g1:
    during = [t for e, t in secs if e > g0 and e - 1 < g1]
    outside = [t for e, t in secs if not (e > g0 and e - 1 < g1)]
    d, o = sum(during) / len(during), sum(outside) / len(outside)
    out += "   during gc %.0f, outside %.0f (%.2fx)" % (d, o, d / o)
print(out)
PY
}
read -r g0 g1 < <(tr '\n' ' ' <"$W/gc-window")
MP=$(summary P) MC=$(summary C "$g0" "$g1")
printf '  %-8s %8s %10s %12s\n' "" mean worst "s < median/2"
printf '  %-8s %s\n' plain "$MP" cowfs "$MC"
printf '  cowfs gc took %s s: %s\n' "$(awk -v a="$g0" -v b="$g1" 'BEGIN { printf "%.1f", b - a }')" "$(tail -1 "$W/gc-out")"
printf '  cowfs/plain mean TPS: %s\n' "$(echo "$MP $MC" | awk '{ printf "%.2f", $4 / $1 }')"
