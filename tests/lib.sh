# shellcheck shell=bash
# tests/lib.sh — shared helpers for cowfs integration tests and benchmarks.
# Source it; it installs an EXIT trap that unmounts every mount and stops every
# Postgres the script started, on success and on failure alike.
#
#   cowfs_bin_dir               build/ of this tree (override with COWFS_BIN)
#   tmpdir_new VAR              make a temp dir (removed at exit), store path in VAR
#   on_exit CMD                 run CMD first at exit, before Postgres and mounts are stopped
#                               (e.g. put back a kernel setting the script changed); the
#                               script's exit status is kept
#   rmdir_at_exit DIR           remove DIR (rm -rf) at exit, after Postgres and mounts are gone
#                               (e.g. a store's socket directories under /run/cowfs)
#   store_init STORE [OWNER]    cowfs init; the store's /run/cowfs/TAG (Postgres sockets, logs)
#                               is removed at exit
#   cowfs_mount STORE MNT [ARGS] mount (background daemon), ARGS go to cowfs mount
#                               (e.g. -o nowriteback); registers cleanup.  With
#                               COWFS_MOUNT_OPTS set, every such mount gets -o
#                               $COWFS_MOUNT_OPTS too (tests/uring.sh: uring)
#   store_mounted_new [ARGS]    a new temp dir T with a store (owner postgres) at
#                               $T/store mounted at $T/mnt (ARGS to cowfs mount);
#                               sets T, store and mnt
#   cowfs_umount MNT            unmount, wait for the daemon to exit
#   cowfs_daemon_pid MNT        pid of the daemon serving MNT
#   pg_initdb DATADIR           initdb as postgres (extra initdb options from $INITDB_OPTS)
#   pg_start DATADIR PORT       start Postgres as postgres on 127.0.0.1:PORT, socket in /tmp,
#                               server log /tmp/cowfs-pg-PORT.log (removed at exit);
#                               registers cleanup;
#                               extra server options from $PG_OPTS (e.g. "-c shared_buffers=128MB")
#   pg_stop DATADIR             fast stop
#   pg_free_port                print a free TCP port
#   psql_q PORT SQL             run SQL as postgres, unaligned tuples-only output
#   fail MSG / pass MSG         test verdicts (fail exits 1)
#
# Crash helpers (used by tests/pg/crash.sh; safe on a dead FUSE mount):
#   pg_postmaster_pid DATADIR   postmaster pid recorded by pg_start (no file access needed)
#   pg_pids DATADIR             postmaster, its children, and any postgres-owned process
#                               whose cwd is DATADIR (backends orphaned by a dead postmaster)
#   pg_kill9 DATADIR            SIGSTOP the postmaster, SIGKILL all of pg_pids, wait until gone
#   cowfs_kill9 MNT             SIGKILL the daemon serving MNT, wait until it is gone
#   cowfs_clear_dead MNT        lazily unmount a dead mount (umount -l, else fusermount3 -u -z)
#   bg_start VAR CMD...         run CMD in the background in its own session (setsid), store
#                               its pid (= process group) in VAR; killed with its group at exit
#   bg_kill PID                 SIGKILL the process group PID started by bg_start
#
# Installed-tree helpers (tests/install.sh, tests/mount.sh):
#   as_installed DESTDIR CMD... run CMD as if `make install DESTDIR=DESTDIR PREFIX=/usr` had
#                               installed for real: in a private mount namespace, DESTDIR's
#                               usr/bin, sbin, usr/sbin, usr/lib/systemd/system and
#                               usr/share/man are laid over the host's (read-only overlays),
#                               so mount(8) finds the installed /sbin/mount.cowfs, units name
#                               binaries that exist, and man finds the pages.  Nothing changes
#                               outside: a mount made inside is seen only inside, and goes
#                               away with the last process in the namespace.
#   store_daemon_gone STORE     true once no process holds STORE's lock (its daemon exited);
#                               else registers that daemon to be killed at exit, and fails
set -u
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$TESTS_DIR/.." && pwd)
COWFS_BIN=${COWFS_BIN:-$TOP/build}
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin

_LIB_MOUNTS=()
_LIB_PGDATA=()
_LIB_PGMOUNTS=()
_LIB_TMPDIRS=()
_LIB_RMDIRS=()
_LIB_ONEXIT=()
_LIB_DAEMONS=()
_LIB_BGPIDS=()
_LIB_PGKILL=()
declare -A _LIB_PGPID=()
_LIB_PGUID=$(id -u postgres 2>/dev/null || echo -1)

_lib_cleanup() {
	local rc=$?
	local d m p _
	for p in "${_LIB_ONEXIT[@]}"; do eval "$p"; done
	for p in "${_LIB_BGPIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	for m in "${_LIB_PGMOUNTS[@]}"; do
		for d in "$m"/*/; do [ -f "$d/postmaster.pid" ] && _LIB_PGDATA+=("${d%/}"); done
		_LIB_PGDATA+=("$m")
	done
	# postmasters a test expects to end with a daemon (a failure may leave
	# them on a detached mount, out of reach of the data-directory search)
	for p in "${_LIB_PGKILL[@]}"; do
		[ "$(stat -c %u "/proc/$p" 2>/dev/null)" = "$_LIB_PGUID" ] && kill -KILL -- "-$p" "$p" 2>/dev/null
	done
	for d in "${_LIB_PGDATA[@]}"; do
		[ -f "$d/postmaster.pid" ] && timeout 60 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
		# whatever is left (dead mount, hung stop, orphaned backends): kill -9 by pid
		pg_kill9 "$d" >/dev/null 2>&1
	done
	for m in "${_LIB_MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null || grep -q " $m fuse" /proc/mounts; then
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	# give each daemon we started time to flush and exit, then make sure it is gone
	for p in "${_LIB_DAEMONS[@]}"; do
		for _ in $(seq 1 300); do _lib_alive "$p" || break; sleep 0.1; done
		if _lib_alive "$p" && grep -qaE 'cowfsd|mount\.cowfs' "/proc/$p/cmdline" 2>/dev/null; then
			echo "cleanup: daemon $p still running after unmount; killing it" >&2
			kill -KILL "$p" 2>/dev/null
		fi
	done
	for d in "${_LIB_RMDIRS[@]}"; do rm -rf "$d"; done
	for d in "${_LIB_TMPDIRS[@]}"; do
		# never rm -rf through a mount that is still attached
		if grep -q " $d/" /proc/mounts; then
			echo "cleanup: $d still has a mount under it; not removing" >&2
		else
			rm -rf "$d"
		fi
	done
	exit $rc
}
trap _lib_cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

tmpdir_new() {
	local d
	d=$(mktemp -d /tmp/cowfs-test.XXXXXX)
	chmod 755 "$d"
	_LIB_TMPDIRS+=("$d")
	printf -v "$1" '%s' "$d"
}

rmdir_at_exit() {
	_LIB_RMDIRS+=("$1")
}

on_exit() {
	_LIB_ONEXIT+=("$1")
}

store_init() {
	"$COWFS_BIN/cowfs" init "$1" --owner "${2:-postgres}" || return
	# the store's Postgres socket directories and logs (/run/cowfs/TAG, TAG
	# the first 4 bytes of the superblock's uuid: src/pg.h) go at exit too
	local tag
	tag=$(od -An -tx1 -j16 -N4 "$1/cowfs.super" 2>/dev/null | tr -d ' \n')
	[ ${#tag} -eq 8 ] && rmdir_at_exit "/run/cowfs/$tag"
	return 0
}

store_mounted_new() {
	tmpdir_new T
	store=$T/store mnt=$T/mnt
	mkdir -p "$mnt"
	store_init "$store" postgres >/dev/null || fail "cowfs init"
	cowfs_mount "$store" "$mnt" "$@" || fail "mount"
}

cowfs_mount() {
	_LIB_MOUNTS+=("$2")
	"$COWFS_BIN/cowfs" mount "$1" "$2" "${@:3}" ${COWFS_MOUNT_OPTS:+-o "$COWFS_MOUNT_OPTS"} || return
	local p
	p=$(cowfs_daemon_pid "$2")
	[ -n "$p" ] && _LIB_DAEMONS+=("$p")
	return 0
}

cowfs_store_of() {
	# the mount's source is its store
	awk -v m="$1" '$2 == m && $3 == "fuse.cowfs" { print $1 }' /proc/mounts | tail -n1
}

cowfs_daemon_pid() {
	# The store's lock file names the daemon, however it was started
	# (cowfsd, cowfs mount, mount.cowfs, mount -t cowfs).
	local store pid
	store=$(cowfs_store_of "$1")
	[ -n "$store" ] && [ -r "$store/lock" ] || return 0
	pid=$(head -n1 "$store/lock")
	[ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "$pid"
}

cowfs_umount() {
	local store i
	store=$(cowfs_store_of "$1")
	umount "$1" || return 1
	# The daemon checkpoints and exits once the kernel lets go of the mount;
	# it holds the store's lock until then.
	[ -n "$store" ] || return 0
	for i in $(seq 1 600); do
		flock -n -x "$store/lock" true 2>/dev/null && return 0
		sleep 0.1
	done
	echo "the daemon of $store did not exit within 60 s of umount $1" >&2
	return 1
}

pg_initdb() {
	# shellcheck disable=SC2086
	runuser -u postgres -- "$PGBIN/initdb" -D "$1" -A trust -U postgres --no-instructions ${INITDB_OPTS:-} >/dev/null
}

pg_start() {
	local d=$1 port=$2
	_LIB_PGDATA+=("$d")
	local log=/tmp/cowfs-pg-$port.log
	: >"$log"; chown postgres "$log"
	_LIB_RMDIRS+=("$log") # removed at exit, once Postgres is stopped
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -w -t 120 -l "$log" \
		-o "-p $port -k /tmp -c listen_addresses=127.0.0.1 ${PG_OPTS:-}" start >/dev/null || return
	local pm
	pm=$(head -n1 "$d/postmaster.pid" 2>/dev/null)
	[ -n "$pm" ] && _LIB_PGPID[$d]=$pm
	return 0
}

# At exit, before the mounts go: every Postgres on a branch of the mount MNT
# (started by hand, by a hook or by cowfs pg) is stopped, the rest killed by
# its working directory.
pg_stop_branches_at_exit() { _LIB_PGMOUNTS+=("$1"); }

# A git of the test's own: no user's or system's settings, HOME in DIR.
git_test_env() {
	export GIT_CONFIG_NOSYSTEM=1 HOME=$1
	export GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.invalid GIT_COMMITTER_NAME=test \
		GIT_COMMITTER_EMAIL=test@example.invalid
}

pg_stop() {
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 120 stop >/dev/null
}

pg_free_port() {
	local p
	for p in $(shuf -i 20000-60000 -n 50); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
	done
	return 1
}

psql_q() {
	local port=$1; shift
	runuser -u postgres -- "$PGBIN/psql" -X -q -At -h /tmp -p "$port" -d postgres -v ON_ERROR_STOP=1 -c "$*"
}

# --- crash helpers ------------------------------------------------------

# true if PID exists and is not a zombie
_lib_alive() {
	local st
	st=$(awk '/^State:/{print $2; exit}' "/proc/$1/status" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# true if PID is a live process of the postgres user whose cwd is DIR or below it
# (the postmaster and every backend chdir to the data directory; the cwd test keeps
# a recycled pid of somebody else's Postgres from being mistaken for ours)
_lib_pg_in_dir() {
	local c
	_lib_alive "$1" && [ "$(stat -c %u "/proc/$1" 2>/dev/null)" = "$_LIB_PGUID" ] || return 1
	c=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
	c=${c% (deleted)}
	[ "$c" = "$2" ] || [ "${c#"$2"/}" != "$c" ]
}

pg_postmaster_pid() {
	local pm=${_LIB_PGPID[$1]:-}
	[ -z "$pm" ] && pm=$(head -n1 "$1/postmaster.pid" 2>/dev/null)
	[ -n "$pm" ] && echo "$pm"
}

pg_pids() {
	local d=$1 pm p c
	pm=$(pg_postmaster_pid "$d")
	{
		if [ -n "$pm" ] && _lib_pg_in_dir "$pm" "$d"; then
			echo "$pm"
			pgrep -P "$pm" -u postgres
		fi
		# this also finds children orphaned by a postmaster that already died
		for p in $(pgrep -u postgres); do
			_lib_pg_in_dir "$p" "$d" && echo "$p"
		done
	} | sort -un | while read -r p; do _lib_alive "$p" && echo "$p"; done
}

# pg_kill_at_exit PID...: kill these postmasters and their process groups at
# exit if they still run (as postgres).
pg_kill_at_exit() { _LIB_PGKILL+=("$@"); }

pg_kill9() {
	local d=$1 pm pids left p _
	pm=$(pg_postmaster_pid "$d")
	# freeze the postmaster first so it forks no new child while we collect them
	[ -n "$pm" ] && _lib_pg_in_dir "$pm" "$d" && kill -STOP "$pm" 2>/dev/null
	pids=$(pg_pids "$d")
	[ -z "$pids" ] && return 0
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null
	for _ in $(seq 1 300); do
		left=
		for p in $pids $(pg_pids "$d"); do _lib_alive "$p" && left="$left $p"; done
		[ -z "$left" ] && break
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null
		sleep 0.1
	done
	if [ -z "$left" ]; then
		# a zombie still owns its pid, and a new postmaster refuses to start while
		# the pid in postmaster.pid answers kill(pid, 0): wait until init reaped them
		for _ in $(seq 1 300); do
			left=
			for p in $pids; do [ -e "/proc/$p" ] && left="$left $p"; done
			[ -z "$left" ] && return 0
			sleep 0.1
		done
		echo "pg_kill9 $d: killed, but not yet reaped after 30 s:$left" >&2
		return 0
	fi
	echo "pg_kill9 $d: processes survive SIGKILL:$left" >&2
	for p in $left; do echo "  $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) state $(awk '/^State:/{print $2}' "/proc/$p/status" 2>/dev/null)" >&2; done
	return 1
}

cowfs_kill9() {
	local pid
	pid=$(cowfs_daemon_pid "$1")
	[ -n "$pid" ] || { echo "cowfs_kill9: no daemon for $1" >&2; return 1; }
	kill -KILL "$pid" || return 1
	for _ in $(seq 1 300); do _lib_alive "$pid" || return 0; sleep 0.1; done
	echo "cowfs_kill9: daemon $pid survives SIGKILL" >&2
	return 1
}

cowfs_clear_dead() {
	umount -l "$1" 2>/dev/null || fusermount3 -u -z "$1" 2>/dev/null
	! grep -q " $1 fuse" /proc/mounts
}

bg_start() {
	local __var=$1; shift
	setsid "$@" &
	local p=$!
	_LIB_BGPIDS+=("$p")
	printf -v "$__var" '%s' "$p"
}

bg_kill() {
	kill -KILL -- "-$1" 2>/dev/null
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

# --- installed-tree helpers -------------------------------------------------

as_installed() {
	local root=$1 d t
	shift
	local -A lower=()
	for d in usr/bin sbin usr/sbin usr/lib/systemd/system usr/share/man; do
		[ -d "$root/$d" ] || continue
		t=$(realpath "/$d") || return
		lower[$t]="${lower[$t]:+${lower[$t]}:}$root/$d"
	done
	local script='set -e'
	for t in "${!lower[@]}"; do
		script+="; mount -t overlay cowfs-test -o 'lowerdir=${lower[$t]}:$t' '$t'"
	done
	unshare --mount --propagation private -- bash -c "$script"'; exec "$@"' as_installed "$@"
}

store_daemon_gone() {
	local pid _
	for _ in $(seq 1 300); do
		flock -n -x "$1/lock" true 2>/dev/null && return 0
		sleep 0.1
	done
	pid=$(head -n1 "$1/lock" 2>/dev/null)
	[ -n "$pid" ] && _LIB_DAEMONS+=("$pid")
	return 1
}
