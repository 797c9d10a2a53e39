#!/bin/bash
# tools/quickstart.sh — from a fresh Debian 12 machine to Postgres running on
# a cowfs branch: installs what is missing, builds, creates a store, mounts
# it, initialises and starts Postgres on the branch "main" with pgbench data,
# and prints how to connect.  Run again: it picks up where things are.
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
	if [ -f "$DATA/postmaster.pid" ]; then say "stopping Postgres on $DATA"; pg pg_ctl -D "$DATA" -m fast -w stop; fi
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
mkdir -p "$(dirname "$LOG")"; touch "$LOG"; chown postgres "$LOG"
if ! pg pg_ctl -D "$DATA" status >/dev/null 2>&1; then
	say "starting Postgres on $DATA, port $PORT"
	pg pg_ctl -D "$DATA" -w -l "$LOG" start >/dev/null
fi
if ! pg psql -X -h /tmp -p "$PORT" -U postgres -Atc "select 1 from pgbench_accounts limit 1" postgres >/dev/null 2>&1; then
	say "loading pgbench data (scale $SCALE)"
	pg pgbench -h /tmp -p "$PORT" -U postgres -i -s "$SCALE" -q postgres
fi
rows=$(pg psql -X -h /tmp -p "$PORT" -U postgres -Atc "select count(*) from pgbench_accounts" postgres)
cat <<DONE

cowfs is serving $STORE at $MNT; Postgres runs on the branch 'main'
($DATA, $rows rows in pgbench_accounts).

  connect:   psql -h /tmp -p $PORT -U postgres postgres
             postgresql://postgres@localhost:$PORT/postgres
  by hand:   sudo -u postgres $PGBIN/pg_ctl -D $DATA stop|start
  stop all:  sudo $0 stop
DONE
