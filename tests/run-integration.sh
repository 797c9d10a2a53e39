#!/bin/bash
# tests/run-integration.sh — the integration part of `make check` (after the unit tests).
#
# Runs, in order:
#   tests/fsops.sh        POSIX operations on a mount, compared with a plain directory
#   tests/badinput.sh     bad stores, refs, mount points and options: one line, nothing changed
#   tests/mount.sh        mount.cowfs, mount -t cowfs through the installed helper
#   tests/install.sh      make install/uninstall, systemd units (verify, readiness), fstab, man pages
#   tests/branch.sh       branches: isolation, a branch of a running Postgres, bad input
#   tests/lifecycle.sh    snapshots, restore, delete/undelete, expiry, protection
#   tests/gc.sh           cowfs df, gc and fsck: own/shared bytes, space reclaimed, gc under
#                         pgbench load and a kill -9 during gc lose nothing, fsck names bad blocks
#   tests/pg/basic.sh     Postgres load, clean umount/remount, same data, pg_amcheck clean
#   tests/pg/crash.sh     kill -9 of the daemon / of Postgres loses no acknowledged commit
#   tests/pg/diskfull.sh  a full disk gives Postgres ENOSPC and loses no acknowledged commit
#   tests/uring.sh        -o uring: requests through io_uring; fsops, pg/basic and pg/crash
#                         again over it (or, without it in the kernel, the fallback)
#   tests/pg/helper.sh    cowfs pg: ports, start/stop as the owner, reset, on demand, bad input
#   tests/git.sh          cowfs git: hooks pair git branches with database branches; prune
#   tests/ci.sh           cowfs ci run: a throw-away branch per command, gone on every path
#   tests/seeds.sh        the developer story: git checkout -b, migration, diff --schema/--data, reset, prune
# prints each script's name and result, and ends with the line "N passed, N failed".
# Exit status: 0 if all passed, 1 if any failed, 2 if the environment is unusable.
#
# Needs root (FUSE mounts by root with allow_other; Postgres runs as postgres via
# runuser), /dev/fuse, the postgres user and PostgreSQL 15 binaries.
# Environment: TESTS="tests/pg/basic.sh ..." to run a subset; TEST_TIMEOUT=900 seconds
# per script; COWFS_PLAIN=1 is passed through (tests/pg/*.sh then run on a plain
# directory instead of a cowfs mount).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 2

die() { echo "run-integration: $*" >&2; echo "0 passed, 1 failed"; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (it mounts FUSE filesystems and runs Postgres as the postgres user via runuser); try: sudo make check"
[ -c /dev/fuse ] || die "/dev/fuse does not exist: load the fuse module (modprobe fuse) or run the container with --device /dev/fuse"
id postgres >/dev/null 2>&1 || die "no 'postgres' user: install postgresql-15"
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pgbench" ] && [ -x "$PGBIN/pg_amcheck" ] ||
	die "PostgreSQL 15 server binaries not found in $PGBIN (initdb, pgbench, pg_amcheck): install postgresql-15"
export PGBIN

TESTS=${TESTS:-"tests/fsops.sh tests/badinput.sh tests/mount.sh tests/install.sh tests/branch.sh tests/lifecycle.sh tests/gc.sh tests/pg/basic.sh tests/pg/crash.sh tests/pg/diskfull.sh tests/uring.sh tests/pg/helper.sh tests/git.sh tests/ci.sh tests/seeds.sh"}
passed=0 failed=0 failed_names=
for t in $TESTS; do
	if [ ! -f "$t" ]; then
		echo "== $t: missing"
		failed=$((failed + 1)); failed_names="$failed_names $t"
		continue
	fi
	echo "== $t"
	start=$(date +%s)
	timeout -k 120 "${TEST_TIMEOUT:-900}" bash "$t" </dev/null
	rc=$?
	secs=$(($(date +%s) - start))
	if [ $rc -eq 0 ]; then
		echo "== $t: PASS (${secs} s)"
		passed=$((passed + 1))
	else
		[ $rc -eq 124 ] && echo "== $t: timed out after ${TEST_TIMEOUT:-900} s"
		echo "== $t: FAIL (exit $rc, ${secs} s)"
		failed=$((failed + 1)); failed_names="$failed_names $t"
	fi
done
[ $failed -gt 0 ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
