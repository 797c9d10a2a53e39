#!/bin/bash
# bench/branch.sh — what a branch costs, against the ways to copy a database
# on the plain disk, in one run (`make bench` runs it after bench/run.sh).
# Not a test: it prints figures.
#
# For each pgbench scale in $SCALES (default "10 100"):
#   cowfs: a store with Postgres on main loaded with pgbench -i -s SCALE;
#     branch create time, median of $N (default 20) creates, parent stopped;
#     the same with the parent running pgbench -c 2 (TPC-B) throughout;
#     store bytes added per create (du of the store, before and after);
#     branch to first query: create, start Postgres on the child, SELECT 1.
#   plain disk, same data: CREATE DATABASE ... TEMPLATE, and cp -a of the
#     stopped data directory.
# Times include the cowfs command-line tool's own start (a few ms).
. "$(dirname "$0")/../tests/lib.sh"

SCALES=${SCALES:-"10 100"}
N=${N:-20}
C=$COWFS_BIN/cowfs
[ "$(id -u)" = 0 ] || { echo "bench/branch.sh: must run as root" >&2; exit 2; }

ms() { echo "scale=1; ($2 - $1) / 1000000" | bc; }
# times come from ${EPOCHREALTIME} (microseconds, no process started: a
# `date` under load takes milliseconds of its own)
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kb() { du -sk "$1" | cut -f1; }

printf '%-6s %-44s %12s\n' scale measure value
for S in $SCALES; do
	tmpdir_new T
	store=$T/store mnt=$T/mnt
	mkdir -p "$mnt"
	store_init "$store" postgres >/dev/null
	cowfs_mount "$store" "$mnt"
	br() { "$C" branch "$@" --store "$store" >/dev/null; }
	port=$(pg_free_port)
	pg_initdb "$mnt/main" && pg_start "$mnt/main" "$port" || { echo "cannot start Postgres" >&2; exit 1; }
	runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -i -s "$S" -q postgres >/dev/null 2>&1
	size=$(psql_q "$port" "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
	printf '%-6s %-44s %12s\n' "$S" "database size" "$size"
	pg_stop "$mnt/main"

	# parent stopped; a first branch takes the parent's pending checkpoint
	# (Postgres's shutdown wrote to it), which is not the cost of a branch
	br create warmup --from main && br delete warmup
	# let the kernel finish writing the load back: ext4 commits a small
	# file's fsync only with the dirty data of every file in the journal
	sync
	before=$(kb "$store")
	times=()
	for i in $(seq 1 "$N"); do
		t0=${EPOCHREALTIME/./}000; br create "s$i" --from main; t1=${EPOCHREALTIME/./}000
		times+=("$(ms "$t0" "$t1")")
	done
	after=$(kb "$store")
	printf '%-6s %-44s %9s ms\n' "$S" "branch create, parent stopped (median of $N)" "$(printf '%s\n' "${times[@]}" | median)"
	printf '%-6s %-44s %9s KiB\n' "$S" "store growth per branch create" "$(echo "scale=1; ($after - $before) / $N" | bc)"
	for i in $(seq 1 "$N"); do br delete "s$i"; done

	# branch to first query
	t0=${EPOCHREALTIME/./}000
	br create first --from main
	p2=$(pg_free_port)
	pg_start "$mnt/first" "$p2" && psql_q "$p2" "SELECT 1" >/dev/null
	t1=${EPOCHREALTIME/./}000
	printf '%-6s %-44s %9s ms\n' "$S" "branch to first query (create, start, SELECT 1)" "$(ms "$t0" "$t1")"
	pg_stop "$mnt/first"; br delete first

	# parent running TPC-B
	pg_start "$mnt/main" "$port"
	sync
	bg_start LOAD runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -c 2 -j 2 -T 600 postgres
	sleep 3
	times=()
	for i in $(seq 1 "$N"); do
		t0=${EPOCHREALTIME/./}000; br create "r$i" --from main; t1=${EPOCHREALTIME/./}000
		times+=("$(ms "$t0" "$t1")")
		sleep 0.2
	done
	bg_kill "$LOAD"
	printf '%-6s %-44s %9s ms\n' "$S" "branch create, parent under TPC-B (median)" "$(printf '%s\n' "${times[@]}" | median)"
	pg_stop "$mnt/main"
	for i in $(seq 1 "$N"); do br delete "r$i"; done
	cowfs_umount "$mnt"

	# the plain disk: CREATE DATABASE ... TEMPLATE, and cp -a
	P=$T/plain
	mkdir -p "$P" && chown postgres "$P"
	pg_initdb "$P/data" && pg_start "$P/data" "$port"
	runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -i -s "$S" -q postgres >/dev/null 2>&1
	psql_q "$port" "CHECKPOINT" >/dev/null
	t0=${EPOCHREALTIME/./}000; psql_q "$port" "CREATE DATABASE copy1 TEMPLATE postgres" >/dev/null; t1=${EPOCHREALTIME/./}000
	printf '%-6s %-44s %9s ms\n' "$S" "plain: CREATE DATABASE ... TEMPLATE" "$(ms "$t0" "$t1")"
	pg_stop "$P/data"
	sync
	t0=${EPOCHREALTIME/./}000; cp -a "$P/data" "$P/copy" && sync; t1=${EPOCHREALTIME/./}000
	printf '%-6s %-44s %9s ms\n' "$S" "plain: cp -a of the data directory (+ sync)" "$(ms "$t0" "$t1")"
	rm -rf "$P"
done
echo "reproduce: cd $TOP && make && SCALES=\"$SCALES\" N=$N bash bench/branch.sh"
