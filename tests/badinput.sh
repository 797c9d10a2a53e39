#!/usr/bin/env bash
# tests/badinput.sh — bad input gets a clear one-line error, a non-zero exit,
# and changes nothing: a store of a newer format, a missing or garbled
# segment, a mountpoint that does not exist, a store already mounted, bad
# options and commands.  "Nothing changed" is checked by hashing every file
# of the store before and after (the lock file, which records who last opened
# the store, is left out).
source "$(dirname "$0")/lib.sh"

COWFS=$COWFS_BIN/cowfs
tmpdir_new T
store=$T/store
mnt=$T/mnt
mkdir -p "$mnt"
store_init "$store" postgres >/dev/null || fail "cowfs init"
# give the store some content: mount, write, unmount
cowfs_mount "$store" "$mnt" || fail "mount"
echo hello >"$mnt/main/file" && sync "$mnt/main/file" || fail "write"
cowfs_umount "$mnt" || fail "umount"

snapshot() { (cd "$store" && find . -type f ! -name lock -print0 | sort -z | xargs -0 sha256sum); }
before=$(snapshot)

# expect_error DESCRIPTION PATTERN COMMAND...: non-zero exit, one line matching PATTERN on stderr
expect_error() {
	local what=$1 pattern=$2; shift 2
	local out rc
	out=$("$@" 2>&1 >/dev/null); rc=$?
	[ "$rc" -ne 0 ] || fail "$what: exited 0"
	[ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] || fail "$what: expected one line, got: $out"
	printf '%s\n' "$out" | grep -qiE "$pattern" || fail "$what: message '$out' does not say /$pattern/"
	mountpoint -q "$mnt" && fail "$what: left a mount behind"
	pass "$what: exit $rc, \"$(printf '%s' "$out" | head -n1)\""
}
unchanged() {
	[ "$(snapshot)" = "$before" ] || fail "$1: the store changed"
	pass "$1: store unchanged"
}

expect_error "mountpoint that does not exist" "mountpoint .*No such file" "$COWFS" mount "$store" "$T/nope"
unchanged "missing mountpoint"
expect_error "mountpoint that is a file" "not a directory" "$COWFS" mount "$store" "$store/cowfs.super"
expect_error "store that does not exist" "No such file" "$COWFS" mount "$T/nostore" "$mnt"
expect_error "directory that is not a store" "not a cowfs store" "$COWFS" mount "$mnt" "$mnt"
expect_error "unknown mount option" "option|mount" "$COWFS" mount "$store" "$mnt" -o no_such_option
expect_error "bad checkpoint value" "checkpoint" "$COWFS" mount "$store" "$mnt" -o checkpoint=abc
expect_error "bad autogc value" "autogc" "$COWFS" mount "$store" "$mnt" -o autogc=lots
expect_error "bad autogc_busy value" "autogc_busy" "$COWFS" mount "$store" "$mnt" -o autogc_busy=101
expect_error "max_read (unsupported)" "max_read" "$COWFS" mount "$store" "$mnt" -o max_read=131072
unchanged "bad options"
expect_error "init over an existing store" "already holds a cowfs store" "$COWFS" init "$store"
unchanged "init over an existing store"
expect_error "init with an unknown owner" "no such user" "$COWFS" init "$T/other" --owner no-such-user-xyz
[ -e "$T/other" ] && fail "init with an unknown owner created $T/other"
out=$("$COWFS" frobnicate 2>&1); rc=$?
[ "$rc" -eq 2 ] && printf '%s' "$out" | grep -q "unknown command" || fail "unknown command: rc=$rc '$out'"
pass "unknown command: exit 2"

# already mounted: the second mount must fail and leave the first working
cowfs_mount "$store" "$mnt" || fail "mount"
mnt2=$T/mnt2; mkdir -p "$mnt2"
out=$("$COWFS" mount "$store" "$mnt2" 2>&1); rc=$?
[ "$rc" -ne 0 ] || fail "second mount of one store succeeded"
printf '%s' "$out" | grep -q "already in use" || fail "second mount: '$out'"
[ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] || fail "second mount: expected one line, got: $out"
mountpoint -q "$mnt2" && fail "second mount left a mount at $mnt2"
[ "$(cat "$mnt/main/file")" = hello ] || fail "first mount broken by the second attempt"
pass "store already mounted: exit $rc, \"$out\""
cowfs_umount "$mnt" || fail "umount"
before=$(snapshot)

# a store of a newer format version (superblock with a valid checksum)
cp "$store/cowfs.super" "$T/super.good"
python3 - "$store/cowfs.super" <<'PY'
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
b[8:12] = struct.pack('<I', 2)
# CRC-32C (Castagnoli) over bytes 0..59
def crc32c(data):
    crc = 0xffffffff
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xffffffff
b[60:64] = struct.pack('<I', crc32c(bytes(b[:60])))
open(p, 'wb').write(b)
PY
newer=$(snapshot)
expect_error "store of a newer format" "newer than this cowfs" "$COWFS" mount "$store" "$mnt"
[ "$(snapshot)" = "$newer" ] || fail "newer format: the store changed"
pass "newer format: store unchanged"
cp "$T/super.good" "$store/cowfs.super"

# a missing segment: fake a second one, so that segment 1 goes missing
seg1=$store/segments/0000000000000001.seg
mv "$seg1" "$T/seg1.saved"
expect_error "missing segment" "no segment files|missing" "$COWFS" mount "$store" "$mnt"
cp --sparse=always "$T/seg1.saved" "$store/segments/0000000000000003.seg"
mv "$T/seg1.saved" "$seg1"
expect_error "gap in the segments" "missing" "$COWFS" mount "$store" "$mnt"
rm "$store/segments/0000000000000003.seg"
unchanged "missing segment"

# a garbled segment header
cp --sparse=always "$seg1" "$T/seg1.good"
printf 'XXXXXXXX' | dd of="$seg1" bs=1 seek=0 conv=notrunc status=none
garbled=$(snapshot)
expect_error "garbled segment header" "not a cowfs segment|damaged" "$COWFS" mount "$store" "$mnt"
[ "$(snapshot)" = "$garbled" ] || fail "garbled header: the store changed"
pass "garbled segment header: store unchanged"
cp --sparse=always "$T/seg1.good" "$seg1"

# a garbled metadata record in the middle of the log (not a torn tail)
off=$(python3 - "$seg1" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read(); off = 32; metas = []
while off + 16 <= len(d):
    magic, typ, ln = struct.unpack_from('<IB3xI', d, off)
    if magic != 0x52574f43: break
    if typ == 2: metas.append(off)
    off += (16 + ln + 7) & ~7
print(metas[0] + 16 + 4)   # inside the payload of the first metadata record
PY
)
printf '\xff\xff' | dd of="$seg1" bs=1 seek="$off" conv=notrunc status=none
garbled=$(snapshot)
expect_error "garbled record in the middle of the log" "damaged" "$COWFS" mount "$store" "$mnt"
[ "$(snapshot)" = "$garbled" ] || fail "garbled record: the store changed"
pass "garbled record: store unchanged"
cp --sparse=always "$T/seg1.good" "$seg1"

# a ref of a newer format, and a ref that is not JSON: checked before the log is touched
ref=$store/refs/branches/main.json
cp "$ref" "$T/ref.good"
sed -i 's/"version": 1/"version": 7/' "$ref"
grep -q '"version": 7' "$ref" || fail "could not edit the ref's version"
bad=$(snapshot)
expect_error "ref of a newer format" "newer than this cowfs" "$COWFS" mount "$store" "$mnt"
[ "$(snapshot)" = "$bad" ] || fail "newer ref: the store changed"
printf '{"format": "cowfs-ref", "version": 1, ' >"$ref"
bad=$(snapshot)
expect_error "ref that is not JSON" "not valid JSON" "$COWFS" mount "$store" "$mnt"
[ "$(snapshot)" = "$bad" ] || fail "garbled ref: the store changed"
pass "bad refs: store unchanged"
cp "$T/ref.good" "$ref"

# and the store is fine again once repaired by hand
cowfs_mount "$store" "$mnt" || fail "mount after restoring the segment"
[ "$(cat "$mnt/main/file")" = hello ] || fail "content after restoring the segment"
cowfs_umount "$mnt" || fail "umount"
pass "store mounts and reads back after the damage is undone"
echo "ok: badinput.sh: all checks passed"
