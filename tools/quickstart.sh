#!/bin/bash
# tools/quickstart.sh — from a fresh Debian 12 machine to Postgres running on
# cowfs branches: installs what is missing, builds, creates a store, mounts
# it, initialises and starts Postgres on the branch "main" with pgbench data
# (cowfs pg), branches "dev" off the running "main" and starts Postgres on it
# too, each on a port of its own, and prints how to connect.  Run again: it
# picks up where things are.
#
#   sudo tools/quickstart.sh          set up and start
#   sudo tools/quickstart.sh stop     stop Postgres and unmount
#
# Environment: COWFS_STORE (default /var/lib/cowfs), COWFS_MOUNT (default
# /branches), SCALE (pgbench scale, default 10).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
STORE=${COWFS_STORE:-/var/lib/cowfs}
MNT=${COWFS_MOUNT:-/branches}
SCALE=${SCALE:-10}
PGBIN=/usr/lib/postgresql/15/bin
COWFS=$TOP/build/cowfs
export COWFS_STORE=$STORE

say() { printf '== %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (sudo $0): it installs packages and mounts" >&2; exit 1; }

if [ "${1:-}" = stop ]; then
	if mountpoint -q "$MNT"; then
		for b in dev main; do
			if [ -d "$MNT/$b" ]; then "$COWFS" pg stop "$b" >/dev/null 2>&1 && say "stopped Postgres on $b" || true; fi
		done
		say "unmounting $MNT"; umount "$MNT"
	fi
	exit 0
fi

say "installing dependencies (Debian packages)"
sh "$TOP/tools/install-deps.sh"
say "building"
make -C "$TOP" -s

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
if [ ! -f "$MNT/main/PG_VERSION" ]; then
	say "initdb on $MNT/main (a cowfs branch)"
	"$COWFS" pg initdb main >/dev/null
fi
say "starting Postgres on main"
"$COWFS" pg start main
# the branch's own connection settings: PGHOST PGPORT PGDATABASE PGUSER
q() { (eval "$("$COWFS" pg env "$1")" && runuser -u postgres -- env PGHOST="$PGHOST" PGPORT="$PGPORT" "$PGBIN/${@:2}"); }
if ! q main psql -X -U postgres -Atc "select 1 from pgbench_accounts limit 1" postgres >/dev/null 2>&1; then
	say "loading pgbench data (scale $SCALE)"
	q main pgbench -U postgres -i -s "$SCALE" -q postgres
fi
rows=$(q main psql -X -U postgres -Atc "select count(*) from pgbench_accounts" postgres)
if [ ! -d "$MNT/dev" ]; then
	say "branching dev from main while Postgres runs on main"
	t0=$(date +%s%N)
	"$COWFS" branch create dev --from main >/dev/null
	t1=$(date +%s%N)
	say "branch dev created in $(((t1 - t0) / 1000000)) ms"
fi
say "starting Postgres on dev (a fresh branch of a running cluster recovers by WAL replay)"
"$COWFS" pg start dev
devrows=$(q dev psql -X -U postgres -Atc "select count(*) from pgbench_accounts" postgres)
cat <<DONE

cowfs is serving $STORE at $MNT. Postgres runs on two branches:
  main  ($MNT/main, $rows rows in pgbench_accounts)
  dev   ($MNT/dev, branched from main: $devrows rows; writes here never reach main)

  connect:   $COWFS pg psql dev          (or: eval "\$($COWFS pg env dev)"; psql)
  status:    $COWFS pg status
  branches:  $COWFS branch list
             $COWFS branch create NAME --from main
  stop all:  sudo $0 stop
DONE
