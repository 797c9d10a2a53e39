#!/bin/bash
# tests/uring.sh — FUSE requests over io_uring (mount option uring, src/uring.h).
#
# Where the kernel has FUSE over io_uring (the fuse module's enable_uring
# parameter, Linux 6.14 and later), the test turns it on (and puts it back
# at exit) and checks:
#   1. a mount with -o uring says it serves through the ring; 200 files
#      written with fsync through it read back byte for byte after a remount
#      without the ring, and the daemon counted at least that many requests
#      through the ring;
#   2. tests/fsops.sh, tests/pg/basic.sh and tests/pg/crash.sh pass with
#      every mount -o uring (COWFS_MOUNT_OPTS): POSIX semantics, Postgres
#      load and remount, kill -9 of the daemon or of Postgres losing no
#      acknowledged commit.
# Where it has not, -o uring must still mount, say why the ring is not
# used, and serve through /dev/fuse.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || fail "must run as root"
[ -x "$COWFS_BIN/cowfs" ] || fail "$COWFS_BIN/cowfs missing: run make"
PARAM=/sys/module/fuse/parameters/enable_uring
N=200

# write_files DIR: N files of 8 KiB from $src, each written and fsynced
write_files() {
	local i
	for i in $(seq 0 $((N - 1))); do
		dd if="$src" of="$1/f$i" bs=8k skip="$i" count=1 conv=fsync status=none || return
	done
}

# same_files DIR: the N files, in order, are $src
same_files() {
	local i
	for i in $(seq 0 $((N - 1))); do cat "$1/f$i" || return; done | cmp -s - "$src"
}

store_mounted_new
src=$T/src
head -c $((N * 8192)) /dev/urandom >"$src"
cowfs_umount "$mnt" || fail "unmount $mnt"

if [ ! -e "$PARAM" ]; then
	cowfs_mount "$store" "$mnt" -o uring || fail "mount -o uring on a kernel without FUSE over io_uring"
	write_files "$mnt/main" || fail "writes through /dev/fuse under -o uring"
	same_files "$mnt/main" || fail "files written under -o uring read back wrong"
	cowfs_umount "$mnt" || fail "unmount"
	grep -q "FUSE over io_uring: not offered by the kernel" "$store/cowfsd.log" ||
		fail "the daemon did not say why the ring is not used: $(tail -n 5 "$store/cowfsd.log")"
	pass "no FUSE over io_uring in this kernel: -o uring serves through /dev/fuse and says why"
	exit 0
fi

old=$(cat "$PARAM")
on_exit 'echo "$old" >"$PARAM"'
echo Y >"$PARAM" || fail "cannot turn on $PARAM"

# --- 1. the ring carries the requests, and what it carried is stored --------
cowfs_mount "$store" "$mnt" -o uring || fail "mount -o uring"
write_files "$mnt/main" || fail "writing $N files with fsync through the ring"
cowfs_umount "$mnt" || fail "unmount"
grep -q "FUSE over io_uring: [0-9]* queues" "$store/cowfsd.log" ||
	fail "the daemon did not start the ring: $(tail -n 5 "$store/cowfsd.log")"
served=$(sed -n 's/.*FUSE over io_uring: \([0-9]*\) requests came through the ring.*/\1/p' "$store/cowfsd.log" | tail -n1)
[ -n "$served" ] && [ "$served" -ge "$N" ] ||
	fail "the daemon counted ${served:-no} requests through the ring for $N synced files"
pass "-o uring: $served requests came through the ring for $N synced files"
cowfs_mount "$store" "$mnt" || fail "remount without the ring"
same_files "$mnt/main" || fail "files written through the ring read back wrong after a remount"
pass "$N files written through the ring read back byte for byte after a remount"
cowfs_umount "$mnt" || fail "unmount"

# --- 2. the other suites, every mount through the ring ----------------------
export COWFS_MOUNT_OPTS=uring
for t in fsops.sh pg/basic.sh pg/crash.sh; do
	echo "-- tests/$t with -o uring"
	bash "$TESTS_DIR/$t" || fail "tests/$t with every mount -o uring"
	pass "tests/$t with every mount -o uring"
done
