#!/bin/bash
# bench/ondemand.sh — what "on demand" costs a client: the time from connect
# to the first query's result on a branch whose Postgres is stopped (`make
# bench` runs it).  Not a test: it prints figures, medians of $N (default 10).
#
#   a store with main loaded by pgbench -i -s $SCALE (default 10), a branch
#   "od" of it, on demand; for each round Postgres on od is stopped first, then
#   timed: psql -c 'SELECT 1' over TCP (DATABASE_URL) and over the Unix socket;
#   for scale, the same psql on the already running branch (the cost of psql
#   itself and the relay), `cowfs pg start` + psql on a manual branch, and
#   branch create + on demand on + first query.
# Times include psql's own start (a few ms).
. "$(dirname "$0")/../tests/lib.sh"

SCALE=${SCALE:-10}
N=${N:-10}
C=$COWFS_BIN/cowfs
PSQL=$PGBIN/psql
[ "$(id -u)" = 0 ] || { echo "bench/ondemand.sh: must run as root" >&2; exit 2; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s%N; }
ms() { echo "scale=1; ($2 - $1) / 1000000" | bc; }

tmpdir_new T
store=$T/store mnt=$T/mnt
mkdir -p "$mnt"
store_init "$store" postgres >/dev/null
cowfs_mount "$store" "$mnt"
export COWFS_STORE=$store
for b in main od man; do _LIB_PGDATA+=("$mnt/$b"); done
"$C" pg initdb main -- -A trust >/dev/null || exit 1
rmdir_at_exit "$(dirname "$("$C" pg env main --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGHOST"])')")"
"$C" pg start main >/dev/null || exit 1
eval "$("$C" pg env main)"
runuser -u postgres -- "$PGBIN/pgbench" -i -s "$SCALE" -q >/dev/null 2>&1
"$C" pg stop main >/dev/null
unset PGHOST PGPORT PGDATABASE PGUSER DATABASE_URL
"$C" branch create od >/dev/null && "$C" branch create man >/dev/null
"$C" pg ondemand od on --idle 1h >/dev/null
url=$("$C" pg env od --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["DATABASE_URL"])')
sock=$("$C" pg env od --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGHOST"])')
port=$("$C" pg env od --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGPORT"])')
# the first start of a child recovers by WAL replay; measure from the second on
"$C" pg start od >/dev/null && "$C" pg stop od >/dev/null

tcp=() unix=() warm=() manual=()
for _ in $(seq 1 "$N"); do
	t0=$(now); "$PSQL" -X -qAt "$url" -c 'SELECT 1' >/dev/null || exit 1; t1=$(now)
	tcp+=("$(ms "$t0" "$t1")")
	t0=$(now); "$PSQL" -X -qAt "$url" -c 'SELECT 1' >/dev/null; t1=$(now)
	warm+=("$(ms "$t0" "$t1")")
	"$C" pg stop od >/dev/null
	t0=$(now); "$PSQL" -X -qAt -h "$sock" -p "$port" -U postgres -d postgres -c 'SELECT 1' >/dev/null || exit 1; t1=$(now)
	unix+=("$(ms "$t0" "$t1")")
	"$C" pg stop od >/dev/null
	t0=$(now); "$C" pg start man >/dev/null && "$C" pg psql man -qAt -c 'SELECT 1' >/dev/null || exit 1; t1=$(now)
	manual+=("$(ms "$t0" "$t1")")
	"$C" pg stop man >/dev/null
done
create=()
for i in $(seq 1 "$N"); do
	t0=$(now)
	"$C" branch create "new$i" >/dev/null && "$C" pg ondemand "new$i" on >/dev/null &&
		u=$("$C" pg env "new$i" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["DATABASE_URL"])') &&
		"$PSQL" -X -qAt "$u" -c 'SELECT 1' >/dev/null || exit 1
	t1=$(now)
	create+=("$(ms "$t0" "$t1")")
	"$C" branch delete "new$i" >/dev/null
done
size=$(du -sh "$store" | cut -f1)
printf '%-64s %10s\n' "on-demand branch of pgbench -s $SCALE (store $size), median of $N" "ms"
printf '%-64s %10s\n' "stopped, connect to first result, TCP (DATABASE_URL)" "$(printf '%s\n' "${tcp[@]}" | median)"
printf '%-64s %10s\n' "stopped, connect to first result, Unix socket" "$(printf '%s\n' "${unix[@]}" | median)"
printf '%-64s %10s\n' "running, connect to first result, TCP (psql + relay)" "$(printf '%s\n' "${warm[@]}" | median)"
printf '%-64s %10s\n' "manual branch: cowfs pg start + cowfs pg psql SELECT 1" "$(printf '%s\n' "${manual[@]}" | median)"
printf '%-64s %10s\n' "new branch: create + ondemand on + env + first result (recovery)" "$(printf '%s\n' "${create[@]}" | median)"
cowfs_umount "$mnt"
