#!/bin/bash
# bench/gc.sh — what a branch owns after a small update, and how fast GC and
# fsck go (`make bench` runs it after bench/branch.sh).  Not a test: it
# prints figures.
#
#   own bytes: a store with Postgres on main loaded with pgbench -i -s $SCALE
#     (default 10); branch b of main (running), Postgres on b,
#     UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0
#     (1 % of the rows), CHECKPOINT, then b's own bytes from
#     `cowfs df --json`, against the database size, the table's size, the
#     share of the table's pages the update touched and the WAL it wrote;
#     the same on branch c with 1 % of the pages (the first 1 % of the
#     rows: WHERE aid <= rows / 100);
#   gc: b and c stopped and deleted, main stopped; `cowfs gc --threshold 100`
#     (every segment with garbage rewritten): seconds, bytes moved and
#     reclaimed;
#   fsck: seconds and bytes checked per second.
. "$(dirname "$0")/../tests/lib.sh"

SCALE=${SCALE:-10}
C=$COWFS_BIN/cowfs
[ "$(id -u)" = 0 ] || { echo "bench/gc.sh: must run as root" >&2; exit 2; }
die() { echo "bench/gc.sh: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
json() { python3 -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$@"; }

tmpdir_new T
store=$T/store mnt=$T/mnt
mkdir -p "$mnt"
store_init "$store" postgres >/dev/null || die "init"
cowfs_mount "$store" "$mnt" || die "mount"
port=$(pg_free_port)
pg_initdb "$mnt/main" && pg_start "$mnt/main" "$port" || die "Postgres on main"
runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -i -s "$SCALE" -q postgres >/dev/null 2>&1 || die "pgbench -i"
psql_q "$port" "CHECKPOINT" >/dev/null
dbsize=$(psql_q "$port" "SELECT sum(pg_database_size(datname)) FROM pg_database")
tblsize=$(psql_q "$port" "SELECT pg_relation_size('pgbench_accounts')")
printf '%-58s %s\n' "scale" "$SCALE"
printf '%-58s %s\n' "database size (all databases)" "$(mib "$dbsize")"
pages=$((tblsize / 8192))
printf '%-58s %s (%d pages)\n' "pgbench_accounts" "$(mib "$tblsize")" "$pages"
rows=$((SCALE * 100000))
# one_branch NAME WHERE LABEL: branch NAME of main, Postgres on it, the update, a checkpoint, df
one_branch() {
	local name=$1 where=$2 label=$3 p touched lsn0 wal df own
	"$C" branch create "$name" --store "$store" >/dev/null || die "branch create $name"
	p=$(pg_free_port)
	pg_start "$mnt/$name" "$p" || die "Postgres on $name"
	touched=$(psql_q "$p" "SELECT count(DISTINCT (ctid::text::point)[0]) FROM pgbench_accounts WHERE $where")
	lsn0=$(psql_q "$p" "SELECT pg_current_wal_lsn()")
	psql_q "$p" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE $where" >/dev/null || die "update"
	psql_q "$p" "CHECKPOINT" >/dev/null
	wal=$(psql_q "$p" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
	df=$("$C" df --store "$store" --json) || die "df"
	own=$(python3 -c 'import json, sys; print([r for r in json.loads(sys.argv[1])["refs"] if r["name"] == sys.argv[2]][0]["own_bytes"])' "$df" "$name")
	echo "$label ($where):"
	printf '  %-56s %d (%s of the table)\n' "pages it touches" "$touched" \
		"$(awk -v a="$touched" -v b="$pages" 'BEGIN { printf "%.1f %%", 100 * a / b }')"
	printf '  %-56s %s\n' "WAL it writes (with the CHECKPOINT)" "$(mib "${wal%.*}")"
	printf '  %-56s %s (%s of the database)\n' "branch's own bytes (cowfs df)" "$(mib "$own")" \
		"$(awk -v a="$own" -v b="$dbsize" 'BEGIN { printf "%.1f %%", 100 * a / b }')"
	pg_stop "$mnt/$name" || die "stop $name"
}
one_branch b "aid % 100 = 0" "update of 1 % of the rows"
one_branch c "aid <= $((rows / 100))" "update of 1 % of the pages"

pg_stop "$mnt/main" || die "stop"
"$C" branch delete b --store "$store" >/dev/null && "$C" branch delete c --store "$store" >/dev/null || die "delete"
sync
gc=$("$C" gc --store "$store" --threshold 100 --json) || die "gc: $gc"
secs=$(json "$gc" seconds) moved=$(json "$gc" moved_bytes)
before=$(json "$gc" disk_bytes_before) after=$(json "$gc" disk_bytes_after)
printf '%-58s %s -> %s in %.2f s\n' "gc --threshold 100 after deleting the branches" "$(mib "$before")" "$(mib "$after")" "$secs"
printf '%-58s %s moved (%s/s), %s reclaimed\n' "gc: live data copied" "$(mib "$moved")" \
	"$(awk -v m="$moved" -v s="$secs" 'BEGIN { printf "%.0f MiB", m / 1048576 / s }')" "$(mib $((before - after)))"
fs=$("$C" fsck --store "$store" --json) || die "fsck: $fs"
secs=$(json "$fs" seconds) bytes=$(json "$fs" bytes)
printf '%-58s %s in %.2f s (%s/s), clean: %s\n' "fsck" "$(mib "$bytes")" "$secs" \
	"$(awk -v m="$bytes" -v s="$secs" 'BEGIN { printf "%.0f MiB", m / 1048576 / s }')" "$(json "$fs" clean)"
