#!/bin/bash
# bench/commit.sh — what one small commit costs on cowfs against the plain disk
# (`make bench` runs it).  Not a test: it prints figures.
#
# bench/commitlat writes 16 KiB and calls fdatasync, $N times (default 3000),
# one client, on a file in a plain directory under /tmp (the store's own
# filesystem) and on a file in branch main of a new store; $ROUNDS rounds
# (default 3), alternating which side goes first.  TPC-B's commits are this
# plus Postgres's own work.
. "$(dirname "$0")/../tests/lib.sh"

N=${N:-3000}
ROUNDS=${ROUNDS:-3}
[ "$(id -u)" = 0 ] || { echo "bench/commit.sh: must run as root" >&2; exit 2; }
[ -x "$COWFS_BIN/cowfs" ] || { echo "bench/commit.sh: build cowfs first (make)" >&2; exit 2; }
LAT=$COWFS_BIN/commitlat
[ -x "$LAT" ] || { echo "bench/commit.sh: $LAT missing (make bench builds it)" >&2; exit 2; }

tmpdir_new P
store_mounted_new
echo "commit: 16 KiB write + fdatasync, $N per round, one client; mean / median in us"
declare -A MEAN
MEAN[plain]=0 MEAN[cowfs]=0
for r in $(seq 1 "$ROUNDS"); do
	order="plain cowfs"; [ $((r % 2)) = 0 ] && order="cowfs plain"
	for side in $order; do
		if [ "$side" = plain ]; then f=$P/commit.dat; else f=$mnt/main/commit.dat; fi
		read -r mean median < <("$LAT" "$f" "$N") || { echo "bench/commit.sh: commitlat on $side failed" >&2; exit 1; }
		[ -n "$median" ] || { echo "bench/commit.sh: no figures from commitlat on $side" >&2; exit 1; }
		printf '  round %d  %-6s %8.1f / %8.1f us\n' "$r" "$side" "$mean" "$median"
		MEAN[$side]=$(awk "BEGIN { print ${MEAN[$side]} + $mean / $ROUNDS }")
	done
done
printf '%-34s %10s %10s %8s  %s\n' "metric" "plain" "cowfs" "ratio" "ratio is"
printf '%-34s %10.1f %10.1f %8.2f  %s\n' "commit latency, mean (us)" "${MEAN[plain]}" "${MEAN[cowfs]}" \
	"$(awk "BEGIN { print ${MEAN[plain]} / ${MEAN[cowfs]} }")" "plain/cowfs (commits per second, higher is better)"
echo "reproduce: cd $TOP && make bench   (or: make build/commitlat && N=$N ROUNDS=$ROUNDS bash bench/commit.sh)"
