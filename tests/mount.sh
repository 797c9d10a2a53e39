#!/usr/bin/env bash
# tests/mount.sh — the ways an operator mounts a store: `make install
# DESTDIR=...` installs cowfs, cowfsd, mount.cowfs and the man pages;
# mount.cowfs takes mount(8)'s argument order and fstab options; and
# `mount -t cowfs` works through the installed /sbin/mount.cowfs (seen only
# in a private mount namespace; nothing is installed on the host).
# tests/install.sh covers installing, the systemd units and the docs.
source "$(dirname "$0")/lib.sh"

tmpdir_new T
make -s -C "$TOP" install DESTDIR="$T/root" PREFIX=/usr >/dev/null || fail "make install DESTDIR=$T/root"
for f in usr/bin/cowfs usr/bin/cowfsd sbin/mount.cowfs; do
	[ -x "$T/root/$f" ] || [ -L "$T/root/$f" ] || fail "make install did not install $f"
done
[ "$(readlink "$T/root/sbin/mount.cowfs")" = /usr/bin/cowfsd ] || fail "mount.cowfs does not point at /usr/bin/cowfsd"
ls "$T/root/usr/share/man/man1/cowfs.1" "$T/root/usr/share/man/man8/cowfsd.8" >/dev/null 2>&1 ||
	fail "make install did not install the man pages"
for f in post-checkout post-merge reference-transaction; do
	[ -x "$T/root/usr/share/cowfs/hooks/$f" ] || fail "make install did not install hooks/$f"
done
[ -f "$T/root/usr/share/man/man7/cowfs-git.7" ] || fail "make install did not install cowfs-git.7"
# the installed cowfs finds its hooks in PREFIX/share/cowfs/hooks
git init -q "$T/repo" && "$T/root/usr/bin/cowfs" git install --repo "$T/repo" >/dev/null &&
	cmp -s "$T/repo/.git/hooks/post-checkout" "$T/root/usr/share/cowfs/hooks/post-checkout" ||
	fail "the installed cowfs git install did not install the installed hooks"
pass "make install DESTDIR= installs binaries, mount.cowfs, the git hooks and man pages"

store=$T/store
mnt=$T/mnt
mkdir -p "$mnt"
"$T/root/usr/bin/cowfs" init "$store" --owner postgres >/dev/null || fail "installed cowfs init"

# mount(8) calls helpers as: mount.cowfs SPEC DIR [-sfnv] [-o OPTIONS]
helper=$T/mount.cowfs
ln -s "$T/root/usr/bin/cowfsd" "$helper"
_LIB_MOUNTS+=("$mnt")
"$helper" "$store" "$mnt" -n -o rw,noatime,defaults,_netdev,nofail || fail "mount.cowfs with fstab options"
grep -q " $mnt fuse.cowfs .*noatime" /proc/mounts || fail "not mounted as fuse.cowfs with noatime"
[ -d "$mnt/main" ] || fail "no branch main under $mnt"
# the kernel's hard cap on a FUSE mount's dirty pages is lifted (writeback.h)
bdi=/sys/class/bdi/$(awk -v m="$mnt" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
[ "$(cat "$bdi/max_ratio")" = 100 ] || fail "$bdi/max_ratio is $(cat "$bdi/max_ratio"), not 100"
[ ! -e "$bdi/strict_limit" ] || [ "$(cat "$bdi/strict_limit")" = 0 ] || fail "$bdi/strict_limit is not 0"
# the daemon says whether it made itself an I/O flusher (writeback.h), and
# says the truth: marked, every thread carries PF_MEMALLOC_NOIO and
# PF_LOCAL_THROTTLE (0x180000 in the flags of /proc/PID/task/*/stat); not
# marked for want of CAP_SYS_RESOURCE, it indeed lacks that capability (24)
dpid=$(cowfs_daemon_pid "$mnt")
for _ in $(seq 50); do
	grep -q "\[$dpid\] \(not \)\?marked an I/O flusher" "$store/cowfsd.log" && break
	sleep 0.1
done
if grep -q "\[$dpid\] marked an I/O flusher: " "$store/cowfsd.log"; then
	for t in /proc/"$dpid"/task/*/stat; do
		flags=$(sed 's/.*) //' "$t" | awk '{ print $7 }')
		[ $((flags & 0x180000)) = $((0x180000)) ] || fail "daemon thread $t: flags $flags lack the I/O flusher's"
	done
	flusher="an I/O flusher"
elif grep -q "\[$dpid\] not marked an I/O flusher (no CAP_SYS_RESOURCE)" "$store/cowfsd.log"; then
	cap=$(awk '/^CapEff:/ { print $2 }' /proc/"$dpid"/status)
	[ $((0x$cap >> 24 & 1)) = 0 ] || fail "the daemon says it lacks CAP_SYS_RESOURCE, but its CapEff is $cap"
	flusher="not an I/O flusher: no CAP_SYS_RESOURCE, as its CapEff $cap shows"
else
	fail "the daemon's log does not say whether it is an I/O flusher: $(cat "$store/cowfsd.log")"
fi
cowfs_umount "$mnt" || fail "umount after mount.cowfs"
pass "mount.cowfs SPEC DIR -n -o rw,noatime,defaults,_netdev,nofail (dirty-page cap lifted; $flusher)"

"$helper" "$store" "$mnt" -o strictlimit || fail "mount.cowfs -o strictlimit"
bdi=/sys/class/bdi/$(awk -v m="$mnt" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)
[ "$(cat "$bdi/max_ratio")" = 1 ] || fail "-o strictlimit: $bdi/max_ratio is $(cat "$bdi/max_ratio"), not the kernel's 1"
[ ! -e "$bdi/strict_limit" ] || [ "$(cat "$bdi/strict_limit")" = 1 ] || fail "-o strictlimit: $bdi/strict_limit is not 1"
cowfs_umount "$mnt" || fail "umount after mount.cowfs -o strictlimit"
pass "mount.cowfs -o strictlimit keeps the kernel's cap"

# mount -t cowfs, through the installed /sbin/mount.cowfs: in a private mount
# namespace with the DESTDIR laid over /usr (as_installed, lib.sh), so nothing
# is put on the host, and a concurrent run cannot take our helper away
out=$(as_installed "$T/root" bash -c "set -e
	mount -t cowfs '$store' '$mnt'
	echo via-mount >'$mnt/main/f'
	umount '$mnt'
	while ! flock -n -x '$store/lock' true; do sleep 0.1; done
	mount -t cowfs -o ro '$store' '$mnt'
	cat '$mnt/main/f'
	! echo x 2>/dev/null >'$mnt/main/g'
	umount '$mnt'" 2>&1) || { printf '%s\n' "$out"; fail "mount -t cowfs through the installed helper"; }
[ "$out" = via-mount ] || fail "data written before umount not there after mount -o ro: $out"
store_daemon_gone "$store" || fail "the daemon did not exit after umount"
pass "mount -t cowfs STORE DIR (and -o ro refuses writes)"
echo "ok: mount.sh: all checks passed"
