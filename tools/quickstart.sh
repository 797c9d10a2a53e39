#!/bin/bash
# tools/quickstart.sh — from a fresh Debian 12 machine to Postgres running on
# cowfs branches: installs what is missing, builds, creates a store, mounts
# it, initialises and starts Postgres on the branch "main" with pgbench data,
# branches "dev" off the running "main" and starts Postgres on it too, and
# prints how to connect.  Run again: it picks up where things are.
#
#   sudo tools/quickstart.sh          set up and start
#   sudo tools/quickstart.sh stop     stop Postgres and unmount
#
# Environment: COWFS_STORE (default /var/lib/cowfs), COWFS_MOUNT (default
# /branches), COWFS_PORT (default 5433), SCALE (pgbench scale, default 10).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
STORE=${COWFS_STORE:-/var/lib/cowfs}
MNT=${COWFS_MOUNT:-/branches}
PORT=${COWFS_PORT:-5433}
SCALE=${SCALE:-10}
PGBIN=/usr/lib/postgresql/15/bin
DATA=$MNT/main
LOG=/var/log/postgresql/cowfs-main.log

say() { printf '== %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (sudo $0): it installs packages and mounts" >&2; exit 1; }

pg() { runuser -u postgres -- "$PGBIN/$@"; }

if [ "${1:-}" = stop ]; then
	for d in "$MNT/dev" "$DATA"; do
		if [ -f "$d/postmaster.pid" ]; then say "stopping Postgres on $d"; pg pg_ctl -D "$d" -m fast -w stop; fi
	done
	if mountpoint -q "$MNT"; then say "unmounting $MNT"; umount "$MNT"; fi
	exit 0
fi

say "installing dependencies (Debian packages)"
sh "$TOP/tools/install-deps.sh"
say "building"
make -C "$TOP" -s
COWFS=$TOP/build/cowfs

if [ ! -e "$STORE/cowfs.super" ]; then
	say "creating the store $STORE (branch main owned by postgres)"
	mkdir -p "$(dirname "$STORE")"
	"$COWFS" init "$STORE" --owner postgres
fi
mkdir -p "$MNT"
if ! mountpoint -q "$MNT"; then
	say "mounting $STORE at $MNT"
	"$COWFS" mount "$STORE" "$MNT"
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
	say "initdb on $DATA (a cowfs branch)"
	pg initdb -D "$DATA" -A trust -U postgres >/dev/null
	cat >>"$DATA/postgresql.conf" <<CONF
# set by cowfs quickstart
port = $PORT
unix_socket_directories = '/tmp'
listen_addresses = 'localhost'
CONF
fi
DEVLOG=${LOG%.log}-dev.log
mkdir -p "$(dirname "$LOG")"; touch "$LOG" "$DEVLOG"; chown postgres "$LOG" "$DEVLOG"
if ! pg pg_ctl -D "$DATA" status >/dev/null 2>&1; then
	say "starting Postgres on $DATA, port $PORT"
	pg pg_ctl -D "$DATA" -w -l "$LOG" start >/dev/null
fi
if ! pg psql -X -h /tmp -p "$PORT" -U postgres -Atc "select 1 from pgbench_accounts limit 1" postgres >/dev/null 2>&1; then
	say "loading pgbench data (scale $SCALE)"
	pg pgbench -h /tmp -p "$PORT" -U postgres -i -s "$SCALE" -q postgres
fi
rows=$(pg psql -X -h /tmp -p "$PORT" -U postgres -Atc "select count(*) from pgbench_accounts" postgres)
DEVPORT=$((PORT + 1))
if [ ! -d "$MNT/dev" ]; then
	say "branching dev from main while Postgres runs on main"
	t0=$(date +%s%N)
	"$COWFS" branch create dev --from main --store "$STORE" >/dev/null
	t1=$(date +%s%N)
	say "branch dev created in $(((t1 - t0) / 1000000)) ms"
fi
if ! pg pg_ctl -D "$MNT/dev" status >/dev/null 2>&1; then
	say "starting Postgres on $MNT/dev, port $DEVPORT (a fresh branch of a running cluster recovers by WAL replay)"
	pg pg_ctl -D "$MNT/dev" -w -l "$DEVLOG" -o "-p $DEVPORT" start >/dev/null
fi
devrows=$(pg psql -X -h /tmp -p "$DEVPORT" -U postgres -Atc "select count(*) from pgbench_accounts" postgres)
cat <<DONE

cowfs is serving $STORE at $MNT. Postgres runs on two branches:
  main  ($DATA, $rows rows in pgbench_accounts)
        psql -h /tmp -p $PORT -U postgres postgres
  dev   ($MNT/dev, branched from main: $devrows rows; writes here never reach main)
        psql -h /tmp -p $DEVPORT -U postgres postgres

  branches:  $COWFS branch list --store $STORE
             $COWFS branch create NAME --from main --store $STORE
  by hand:   sudo -u postgres $PGBIN/pg_ctl -D $MNT/dev stop|start
  stop all:  sudo $0 stop
DONE
