#!/bin/bash
# tests/fsops.sh — POSIX semantics through a cowfs mount.
#
# Runs build/fsops in a plain directory and in a directory on a fresh cowfs
# branch and diffs the two transcripts; then checks that what was written
# survives unmount and remount, and that ownership and permissions work for
# the postgres user through the mount (allow_other, default_permissions).
# Needs root, /dev/fuse and a postgres user. Exit 0 only if every check passed.
#
# fsops runs twice on cowfs: on a default mount (kernel write-back cache) and
# on one with -o nowriteback, where every write and size change goes straight
# to the daemon and kernel caching cannot hide what the daemon stores.
#
#   bash tests/fsops.sh                    (after make all build/fsops)
#   KEEP_OUTPUT=DIR bash tests/fsops.sh    also copy the transcripts to DIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FSOPS=$COWFS_BIN/fsops
FSOPS_TIMEOUT=${FSOPS_TIMEOUT:-900}

[ "$(id -u)" = 0 ] || fail "must run as root"
[ -x "$FSOPS" ] || fail "$FSOPS missing: run make build/fsops"
[ -x "$COWFS_BIN/cowfs" ] || fail "$COWFS_BIN/cowfs missing: run make"
id postgres >/dev/null 2>&1 || fail "no postgres user"
PG_UID=$(id -u postgres)
PG_GID=$(id -g postgres)

failures=0
bad() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run_fsops OUT ARGS...: fsops with a time limit; a hung mount must not hang CI
run_fsops() {
	local out=$1; shift
	timeout -k 10 "$FSOPS_TIMEOUT" "$FSOPS" "$@" >"$out"
}

# fsops_on_cowfs LABEL STORE MNT [OPTIONS]: init STORE, mount it at MNT (left
# mounted), run fsops in MNT/main/fsops and diff against the plain transcript.
fsops_on_cowfs() {
	local label=$1 st=$2 mp=$3 opts=${4:-} rc=0
	store_init "$st" root || fail "cowfs init $st --owner root"
	cowfs_mount "$st" "$mp" ${opts:+-o "$opts"} || fail "cowfs mount $st $mp ${opts:+-o $opts}"
	[ -d "$mp/main" ] || fail "$mp/main is not a directory after mount"
	chmod 0755 "$mp/main" || fail "chmod 0755 $mp/main"
	mkdir "$mp/main/fsops" || fail "mkdir $mp/main/fsops"
	run_fsops "$work/$label.out" "$mp/main/fsops" || rc=$?
	[ -n "${KEEP_OUTPUT:-}" ] && cp "$work/$label.out" "$KEEP_OUTPUT/"
	[ "$rc" = 0 ] || bad "fsops on $label exited $rc (its transcript up to there is in the diff)"
	if diff -u --label plain "$work/plain.out" --label "$label" "$work/$label.out" >"$work/$label.diff"; then
		pass "fsops transcript on $label identical to plain directory"
	else
		cat "$work/$label.diff"
		bad "fsops transcript differs between plain directory and $label ($(grep -c '^[-+][^-+]' "$work/$label.diff") lines)"
	fi
}

# tree_after_remount LABEL STORE MNT [OPTIONS]: unmount MNT, mount again, and
# compare the fsops tree with the "tree:" lines of LABEL's transcript.
tree_after_remount() {
	local label=$1 st=$2 mp=$3 opts=${4:-}
	cowfs_umount "$mp" || bad "unmount $mp ($label)"
	mountpoint -q "$mp" && fail "$mp still mounted after umount"
	cowfs_mount "$st" "$mp" ${opts:+-o "$opts"} || fail "remount $st $mp ${opts:+-o $opts}"
	grep '^tree: ' "$work/$label.out" >"$work/$label.tree-before"
	if run_fsops "$work/$label.tree-after" --tree "$mp/main/fsops" &&
	   cmp -s "$work/$label.tree-before" "$work/$label.tree-after"; then
		pass "fsops tree on $label (modes, owners, links, symlinks, contents) unchanged after remount"
	else
		diff -u --label before-unmount "$work/$label.tree-before" \
			--label after-remount "$work/$label.tree-after"
		bad "fsops tree on $label differs after remount"
	fi
}

tmpdir_new work
tmpdir_new mnt
tmpdir_new mnt_nwb
store=$work/store

# --- 1. the same system calls on a plain directory and on cowfs -------------
mkdir "$work/plain"
run_fsops "$work/plain.out" "$work/plain" || fail "fsops on a plain directory exited $?"
[ -n "${KEEP_OUTPUT:-}" ] && cp "$work/plain.out" "$KEEP_OUTPUT/"
pass "fsops on plain directory ($(wc -l <"$work/plain.out") lines)"

# Without the kernel's write-back cache every write, truncate and size goes
# straight to the daemon, so this pass sees what the daemon itself stores.
fsops_on_cowfs cowfs-nowriteback "$work/store-nwb" "$mnt_nwb" nowriteback
tree_after_remount cowfs-nowriteback "$work/store-nwb" "$mnt_nwb" nowriteback
cowfs_umount "$mnt_nwb" || bad "unmount $mnt_nwb"

# The default mount; it stays mounted for the checks below.
fsops_on_cowfs cowfs "$store" "$mnt"

# --- 2. durability across a clean unmount and remount -----------------------
# Written without fsync: a clean unmount must flush it.
head -c $((5 * 1024 * 1024 + 12345)) /dev/urandom >"$work/persist.src"
want=$(sha256sum <"$work/persist.src")
cp "$work/persist.src" "$mnt/main/persist.bin" || bad "copy persist.bin onto cowfs"
printf 'small\n' >"$mnt/main/small.txt"
got=$(sha256sum <"$mnt/main/persist.bin")
[ "$got" = "$want" ] || bad "persist.bin reads back wrong before unmount"

tree_after_remount cowfs "$store" "$mnt"
got=$({ sha256sum <"$mnt/main/persist.bin"; } 2>/dev/null)
if [ "$got" = "$want" ] && [ "$(cat "$mnt/main/small.txt" 2>/dev/null)" = small ]; then
	pass "file written before unmount reads back identically after remount"
else
	bad "persist.bin or small.txt differs after remount"
fi

# --- 3. ownership and permissions for the postgres user ---------------------
as_pg() { runuser -u postgres -- "$@"; }

pgdir=$mnt/main/pgown
mkdir "$pgdir" && chown postgres:postgres "$pgdir" && chmod 0700 "$pgdir" ||
	bad "mkdir/chown $pgdir"
if as_pg sh -c 'echo by-postgres >"$1/file" && mkdir "$1/sub"' sh "$pgdir" 2>"$work/pg.err"; then
	owner=$(stat -c '%u:%g' "$pgdir/file")
	subowner=$(stat -c '%u:%g' "$pgdir/sub")
	if [ "$owner" = "$PG_UID:$PG_GID" ] && [ "$subowner" = "$PG_UID:$PG_GID" ]; then
		pass "file and directory created by postgres are owned by postgres ($owner)"
	else
		bad "created by postgres but owned by $owner (file) $subowner (dir), want $PG_UID:$PG_GID"
	fi
	[ "$(as_pg cat "$pgdir/file")" = by-postgres ] && pass "postgres reads back its own file" ||
		bad "postgres cannot read back its own file"
else
	bad "postgres cannot create a file in a directory it owns: $(cat "$work/pg.err")"
fi

# expect_eacces WHAT CMD...: CMD, run as postgres, must fail with EACCES
# (which the shell and coreutils report as "Permission denied")
expect_eacces() {
	local what=$1 err; shift
	if err=$(as_pg "$@" 2>&1); then
		bad "postgres could $what"
	elif [[ $err == *"Permission denied"* ]]; then
		pass "postgres gets EACCES trying to $what"
	else
		bad "postgres trying to $what: want Permission denied, got: $err"
	fi
}

rootfile=$mnt/main/rootfile
printf 'root data\n' >"$rootfile" && chmod 0644 "$rootfile"
expect_eacces "write to a root-owned 0644 file" sh -c 'printf x >>"$1"' sh "$rootfile"
expect_eacces "truncate a root-owned 0644 file" truncate -s 0 "$rootfile"
[ "$(cat "$rootfile")" = "root data" ] || bad "root-owned file changed after the denied writes"
if [ "$(as_pg cat "$rootfile" 2>&1)" = "root data" ]; then
	pass "postgres can read a root-owned 0644 file"
else
	bad "postgres cannot read a root-owned 0644 file"
fi
expect_eacces "create a file in a root-owned 0755 directory" sh -c ': >"$1/x"' sh "$mnt/main"
chmod 0700 "$mnt/main/fsops"
expect_eacces "list a root-owned 0700 directory" ls "$mnt/main/fsops"

cowfs_umount "$mnt" && pass "final unmount" || bad "final unmount"

[ "$failures" = 0 ] || fail "$failures check(s) failed"
pass "fsops.sh: all checks passed"
