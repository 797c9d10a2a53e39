#!/usr/bin/env bash
# tests/gc.sh — storage accounting, GC and fsck on a mount with real Postgres:
#   df: a fresh branch of a running cluster owns next to nothing and shares
#     everything; N MiB written on it become its own (N to N+2 MiB); a child
#     of it then owns next to nothing, and the parent's N MiB are shared;
#   gc reclaims deleted branches: after a branch that rewrote a table
#     (VACUUM FULL) is deleted, gc keeps its data while it is in the trash
#     (and it comes back readable); purged, the segment files shrink back to
#     within 5 % of their size before the branch; fsck is clean;
#   gc (rewriting every segment with garbage, three times) while pgbench and
#     a writer of acknowledged commits run on main and pgbench on another
#     branch, and a third branch is written and deleted: no failed
#     transaction, every acknowledged commit present, TPC-B invariant,
#     pg_amcheck clean, the same fingerprints after a remount;
#   kill -9 of the daemon in the middle of a gc: the store mounts again,
#     the data is the same, fsck is clean, a gc then completes;
#   a flipped byte in a table's block of an unmounted store: cowfs fsck
#     (opening the store itself) names the branch and the table's file and
#     exits 1; an offline gc still runs and keeps the damaged data;
#   early reclaim: a 256 MiB file written over in place six times needs no
#     collection: within 30 s the segment files are under 512 MiB, the file
#     reads back after a remount, fsck is clean; a file written between the
#     first round's blocks is moved out of their segments by the cleaner
#     and reads back right (O_DIRECT) all the while and after a remount;
#   automatic gc: a 256 MiB file replaced with new data six times (1.5 GiB
#     written, 256 MiB live) on a mount with default options: the daemon
#     collects by itself, the segment files end below live + 1 GiB + two
#     segments, and the file reads back as last written; with -o autogc=0
#     nothing is collected, and once remounted with the defaults the daemon
#     collects it (growth counts from the last collection, across mounts,
#     STORE/gc.base); a store with under 2 GiB free (on a small tmpfs)
#     is collected before it has grown by 1 GiB; with the CPUs kept busy a
#     due collection waits (and says so) until they are quiet, or until
#     twice the growth is reached;
#   the log's window (test hooks: a log from segment 65530 spanning at most
#     16, then 64 segments): with -o autogc=0 writes fail with ENOSPC when it
#     is full and nothing is lost, cowfs gc lets them go on; by default the
#     daemon moves old segments on by itself through 5 GiB of writes; the
#     files read back after a remount and fsck is clean.
source "$(dirname "$0")/lib.sh"
source "$TESTS_DIR/pg/pglib.sh"
cowfs_require

C=$COWFS_BIN/cowfs
MiB=1048576
store_mounted_new
br() { "$C" branch "$@" --store "$store"; }

# bytes of segment files on disk (allocated, as du counts them)
seg_bytes() {
	python3 -c 'import glob, os, sys; print(sum(os.stat(f).st_blocks * 512 for f in glob.glob(sys.argv[1] + "/segments/*.seg")))' "$store"
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# df_get REF FIELD: from the JSON of `cowfs df` in $DF
df_get() {
	python3 -c 'import json, sys
d = json.loads(sys.argv[1])
print([r for r in d["refs"] if r["name"] == sys.argv[2]][0][sys.argv[3]])' "$DF" "$1" "$2"
}
df_now() { DF=$("$C" df --store "$store" --json) || fail "cowfs df: $DF"; }
# start Postgres on DATA on a free port, stored in VAR (a port can be taken
# between the check and the bind by other tests of the machine: try again)
pg_start_free() {
	local p _
	for _ in 1 2 3; do
		p=$(pg_free_port) || return 1
		if pg_start "$1" "$p"; then
			printf -v "$2" '%s' "$p"
			return 0
		fi
		grep -q "Address already in use" "/tmp/cowfs-pg-$p.log" || break
	done
	pg_log_tail "$p"
	return 1
}

# pg_amcheck_all, run a second time on a cluster: the extension is there already
amcheck_clean() {
	pg_amcheck_all "$1" && return 0
	AMCHECK_OUT=$(printf '%s\n' "$AMCHECK_OUT" | grep -v '^NOTICE:  extension "amcheck" already exists, skipping$')
	[ -z "$AMCHECK_OUT" ] && runuser -u postgres -- "$PGBIN/pg_amcheck" -h /tmp -p "$1" -U postgres --all \
		--heapallindexed >/dev/null 2>&1
}

pgm=$mnt/main
pg_initdb "$pgm" || fail "initdb"
pg_start_free "$pgm" port || fail "start Postgres on main"
psql_q "$port" "CREATE TABLE acked (id bigint PRIMARY KEY)" || fail "create table"
pgb "$port" -i -s 5 -q >/dev/null 2>&1 || fail "pgbench -i"
pass "Postgres on main with pgbench data (scale 5)"

# --- df: own and shared bytes -------------------------------------------------
br create acct >/dev/null || fail "branch create acct"
df_now
own0=$(df_get acct own_bytes) logical=$(df_get acct logical_bytes) shared=$(df_get acct shared_bytes)
[ "$own0" -lt $MiB ] || fail "a fresh branch owns $(mib "$own0")"
[ "$shared" -ge $((logical * 99 / 100)) ] && [ "$logical" -gt $((50 * MiB)) ] ||
	fail "a fresh branch shares $(mib "$shared") of its $(mib "$logical")"
pass "a fresh branch of a running cluster: $(mib "$logical") logical, owns $own0 bytes, shares $(mib "$shared")"
N=40
dd if=/dev/urandom of="$mnt/acct/new.dat" bs=1M count=$N conv=fsync status=none || fail "write on acct"
df_now
own1=$(df_get acct own_bytes)
grow=$((own1 - own0))
[ "$grow" -ge $((N * MiB)) ] && [ "$grow" -le $(((N + 2) * MiB)) ] ||
	fail "after writing $N MiB on acct its own bytes grew by $(mib "$grow")"
pass "after writing $N MiB on acct, its own bytes grew by $(mib "$grow")"
br create acct2 --from acct >/dev/null || fail "branch create acct2"
df_now
own2=$(df_get acct2 own_bytes) sh2=$(df_get acct2 shared_bytes) own1b=$(df_get acct own_bytes)
[ "$own2" -lt $MiB ] || fail "a fresh child of acct owns $(mib "$own2")"
[ "$own1b" -lt $MiB ] || fail "acct still owns $(mib "$own1b") after its child took its data"
[ "$sh2" -ge $((logical + N * MiB)) ] || fail "acct2 shares only $(mib "$sh2")"
pass "a fresh child of acct owns $own2 bytes and shares $(mib "$sh2"); acct's own bytes drop to $own1b"
"$C" df --store "$store" | sed 's/^/    /'
# --now: past the trash, so that gc may reclaim them (the trash case is below)
br delete --now acct2 >/dev/null && br delete --now acct >/dev/null || fail "delete acct, acct2"

# --- gc reclaims a deleted branch that rewrote a table ---------------------------
pg_stop "$pgm" || fail "stop main"
b0=$(seg_bytes)
out=$("$C" gc --store "$store") || fail "cowfs gc: $out"
echo "    $out"
b1=$(seg_bytes)
[ "$b1" -le $((b0 - N * MiB)) ] || fail "gc after deleting acct: $(mib "$b0") -> $(mib "$b1"), less than $N MiB reclaimed"
pass "gc reclaimed the deleted branches: $(mib "$b0") -> $(mib "$b1") of segment files"
s0=$(seg_bytes)
br create rw >/dev/null || fail "branch create rw"
pg_start_free "$mnt/rw" port2 || fail "start Postgres on rw"
psql_q "$port2" "VACUUM FULL pgbench_accounts" || fail "VACUUM FULL on rw"
psql_q "$port2" "UPDATE pgbench_accounts SET abalance = abalance + 1" || fail "UPDATE on rw"
psql_q "$port2" "CHECKPOINT" || fail "CHECKPOINT on rw"
pg_stop "$mnt/rw" || fail "stop rw"
s1=$(seg_bytes)
[ "$s1" -gt $((s0 + 100 * MiB)) ] || fail "rewriting pgbench_accounts twice grew the store by $(mib $((s1 - s0))) only"
# in the trash (its grace period), the branch is a root: gc keeps its data
br delete rw >/dev/null || fail "delete rw"
out=$("$C" gc --store "$store") || fail "cowfs gc: $out"
st=$(seg_bytes) # what rw alone holds must still be there (checked below, once it is purged)
br undelete rw >/dev/null || fail "undelete rw after a gc"
pg_start_free "$mnt/rw" port2 || fail "start Postgres on the undeleted rw"
psql_q "$port2" "SELECT sum(abalance) FROM pgbench_accounts" >/dev/null || fail "read rw after gc and undelete"
pg_stop "$mnt/rw" || fail "stop rw"
pass "a deleted branch in the trash survives gc and comes back readable"
br delete --now rw >/dev/null || fail "delete --now rw"
out=$("$C" gc --store "$store") || fail "cowfs gc: $out"
echo "    $out"
s2=$(seg_bytes)
[ "$s2" -le $((s0 + s0 / 20)) ] || { ls -ls "$store/segments"; "$C" df --store "$store"; }
[ "$s2" -le $((s0 + s0 / 20)) ] ||
	fail "after deleting rw and gc the segment files take $(mib "$s2"), more than 5 % over $(mib "$s0") before the branch"
pass "segment files: $(mib "$s0") before the branch, $(mib "$s1") after its table rewrites, $(mib "$s2") after delete and gc"
[ "$st" -ge $((s2 + 100 * MiB)) ] ||
	fail "with rw in the trash gc left $(mib "$st"), with rw purged $(mib "$s2"): the trash did not keep rw's data"
pass "gc kept rw's data while it was in the trash ($(mib "$st")) and reclaimed it once purged ($(mib "$s2"))"
out=$("$C" fsck --store "$store") || fail "fsck after gc: $out"
echo "$out" | grep -q "clean" || fail "fsck after gc: $out"
pass "fsck after gc: $out"

# --- gc under load --------------------------------------------------------------
pg_start "$pgm" "$port" || fail "restart main"
br create side >/dev/null || fail "branch create side"
pg_start_free "$mnt/side" port3 || fail "start Postgres on side"
bg_start LOAD runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port" -c 2 -j 2 -T 20 postgres >"$T/load.out" 2>&1
bg_start LOAD2 runuser -u postgres -- "$PGBIN/pgbench" -h /tmp -p "$port3" -c 1 -T 20 postgres >"$T/load2.out" 2>&1
bg_start WRITER "$TESTS_DIR/pg/acked_writer.sh" "$port" "$T/acked.txt" 2>"$T/writer.err"
for i in 1 2 3; do
	sleep 2
	br create junk >/dev/null || fail "branch create junk"
	dd if=/dev/urandom of="$mnt/junk/junk.dat" bs=1M count=30 conv=fsync status=none || fail "write on junk"
	br delete --now junk >/dev/null || fail "delete junk"
	out=$("$C" gc --store "$store" --threshold 100) || fail "gc $i under load: $out"
	echo "    gc $i under load: $out"
done
bg_wait() { local i; for i in $(seq 1 "$2"); do _lib_alive "$1" || return 0; sleep 1; done; return 1; }
bg_wait "$LOAD" 60 && bg_wait "$LOAD2" 60 || fail "pgbench did not finish"
bg_kill "$WRITER"
for f in load load2; do
	grep -q "number of failed transactions: 0" "$T/$f.out" || { cat "$T/$f.out"; fail "pgbench ($f) during gc"; }
done
n=$(wc -l <"$T/acked.txt")
[ "$n" -gt 0 ] || fail "no commit acknowledged during the load"
missing=$(comm -23 <(sort "$T/acked.txt") <(psql_q "$port" "SELECT id FROM acked" | sort))
[ -z "$missing" ] || fail "acknowledged ids missing after gc under load: $(echo "$missing" | head -n 10 | tr '\n' ' ')"
pass "pgbench on main and side: no failed transaction; all $n acknowledged commits present"
for p in "$port" "$port3"; do
	pg_check_invariant "$p"
	amcheck_clean "$p" || { echo "$AMCHECK_OUT" | head -20; fail "pg_amcheck on port $p after gc under load"; }
done
pass "pg_amcheck clean on main and side"
f_main=$(pg_fingerprint "$port") f_side=$(pg_fingerprint "$port3")
pg_stop "$pgm" && pg_stop "$mnt/side" || fail "stop"
cowfs_umount "$mnt" && cowfs_mount "$store" "$mnt" || fail "remount"
pg_start "$pgm" "$port" && pg_start "$mnt/side" "$port3" || fail "start after remount"
[ "$(pg_fingerprint "$port")" = "$f_main" ] && [ "$(pg_fingerprint "$port3")" = "$f_side" ] ||
	fail "fingerprints changed across a remount after gc"
pass "the same fingerprints on main and side after a remount"
pg_stop "$mnt/side" && pg_stop "$pgm" || fail "stop"

# --- kill -9 of the daemon in the middle of a gc ----------------------------------
br create junk >/dev/null || fail "branch create junk"
dd if=/dev/urandom of="$mnt/junk/junk.dat" bs=1M count=100 conv=fsync status=none || fail "write on junk"
dd if=/dev/urandom of="$pgm/junk.dat" bs=1M count=60 conv=fsync status=none || fail "write on main"
br delete --now junk >/dev/null || fail "delete junk"
rm "$pgm/junk.dat" # garbage after the gc's checkpoint
dd if=/dev/urandom of="$pgm/keep.dat" bs=1M count=20 conv=fsync status=none || fail "write on main"
sum_keep=$(sha256sum <"$pgm/keep.dat")
bg_start GC "$C" gc --store "$store" --threshold 100 --json >"$T/gc-killed.out" 2>&1
sleep 0.$(shuf -i 3-8 -n 1)
_lib_alive "$GC" && state="while it ran" || state="after it ended (it was quicker)"
cowfs_kill9 "$mnt" || fail "kill -9 of the daemon"
bg_wait "$GC" 10 || fail "cowfs gc did not return after the daemon died"
cowfs_clear_dead "$mnt" || fail "clear the dead mount"
cowfs_mount "$store" "$mnt" || fail "mount after kill -9 during gc"
[ "$(sha256sum <"$pgm/keep.dat")" = "$sum_keep" ] || fail "main/keep.dat changed across the kill -9 during gc"
pg_start "$pgm" "$port" || fail "start main after the kill"
[ "$(pg_fingerprint "$port")" = "$f_main" ] || fail "main's tables changed across the kill -9 during gc"
amcheck_clean "$port" || { echo "$AMCHECK_OUT" | head -20; cat "$T/gc-killed.out"; fail "pg_amcheck after the kill -9 during gc (the kill came $state)"; }
pass "kill -9 of the daemon $state: remounted, the same data, pg_amcheck clean"
out=$("$C" fsck --store "$store") || fail "fsck after the kill: $out"
out=$("$C" gc --store "$store") || fail "gc after the kill: $out"
echo "    $out"
pass "fsck clean and gc completes after the kill"

# --- fsck names a flipped byte's branch and file, offline --------------------------
rel=$(psql_q "$port" "SELECT pg_relation_filepath('pgbench_branches')") || fail "pg_relation_filepath"
pg_stop "$pgm" || fail "stop main"
head -c 8192 "$pgm/$rel" >"$T/block0"
cowfs_umount "$mnt" || fail "umount"
# Every copy: a copy that early reclaim forgot, or GC moved, may still lie
# in an older segment, and the store reads only the one its index names.
hits=$(python3 - "$store" "$T/block0" <<'PY'
import glob, sys
block = open(sys.argv[2], 'rb').read()
for f in sorted(glob.glob(sys.argv[1] + '/segments/*.seg')):
    data = open(f, 'rb').read()
    at = data.find(block)
    while at >= 0:
        print(f, at + 4000)
        at = data.find(block, at + 1)
PY
)
[ -n "$hits" ] || fail "block 0 of $rel not found in the segments"
while read -r segfile off; do
	printf '\xff' | dd of="$segfile" bs=1 seek="$off" conv=notrunc status=none
done <<<"$hits"
out=$("$C" fsck "$store" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
[ $rc -eq 1 ] || fail "fsck of a store with a flipped byte exited $rc"
echo "$out" | grep -E "^branch main: /$rel \(inode [0-9]+\), block 0: data block" | grep -q "checksum" ||
	fail "fsck does not name branch main, file /$rel, block 0"
pass "fsck names the branch, the file and the block of a flipped byte, and exits 1"
out=$("$C" gc "$store" 2>&1) || fail "offline gc on a store with a damaged block: $out"
echo "$out" | grep -q "damaged blocks are still in use" || fail "gc does not mention the damaged block: $out"
"$C" fsck "$store" >/dev/null 2>&1 && fail "fsck clean after gc: the damaged block was dropped"
pass "offline gc runs around the damaged block and keeps it"

# --- automatic gc ------------------------------------------------------------------
sum_of() { sha256sum <"$1" | cut -d' ' -f1; }
# write_round MNT [inplace]: 256 MiB of new random data as MNT/main/big,
# durably: a new file renamed over the old one, or, with inplace, written
# over the old blocks; either way early reclaim frees the old blocks, and
# with -o noreclaim only a collection does.  Its sha256 in ROUND_SUM, dd's complaint in
# $T/dd.err; the status of dd (or mv)
write_round() {
	head -c $((256 * MiB)) /dev/urandom >"$T/round" || fail "random data"
	ROUND_SUM=$(sum_of "$T/round")
	if [ "${2:-}" = inplace ]; then
		dd if="$T/round" of="$1/main/big" bs=1M conv=notrunc,fsync status=none 2>"$T/dd.err"
	else
		dd if="$T/round" of="$1/main/big.new" bs=1M conv=fsync status=none 2>"$T/dd.err" &&
			mv -f "$1/main/big.new" "$1/main/big" 2>"$T/dd.err"
	fi
}
# overwrite_rounds MNT N [inplace]: write_round N times, each one required to succeed
overwrite_rounds() {
	local i
	for i in $(seq "$2"); do
		write_round "$1" "${3:-}" || fail "write round $i on $1: $(cat "$T/dd.err")"
	done
	rm -f "$T/round"
}
collections() { grep -c "gc: the store grew by" "$1/cowfsd.log"; }
# the growth in MiB that started the first automatic collection of store $1
first_growth() { sed -n 's/.*gc: the store grew by \([0-9]*\) MiB.*/\1/p' "$1/cowfsd.log" | head -n 1; }
finished() { grep -c "gc: [0-9]* segments rewritten" "$1/cowfsd.log"; }
# await_collection STORE [N]: up to 30 s for N (default 1) automatic
# collections of STORE to have finished, then show the daemon's gc lines
# (the checks that follow judge them)
await_collection() {
	for _ in $(seq 60); do
		[ "$(collections "$1")" -ge "${2:-1}" ] && [ "$(finished "$1")" -ge "${2:-1}" ] && break
		sleep 0.5
	done
	grep "gc: " "$1/cowfsd.log" | sed 's/^/    /'
}
# intact_after_remount NAME WHAT: $T/NAME.mnt/main/big reads as last written,
# and again after an unmount and a mount of $T/NAME; left unmounted.
# WHAT says after what, in the failure message.
intact_after_remount() {
	[ "$(sum_of "$T/$1.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after $2"
	cowfs_umount "$T/$1.mnt" || fail "umount $1"
	cowfs_mount "$T/$1" "$T/$1.mnt" || fail "remount $1"
	[ "$(sum_of "$T/$1.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after a remount"
	cowfs_umount "$T/$1.mnt" || fail "umount $1"
}
# auto_store NAME [mount args]: a new store $T/NAME mounted at $T/NAME.mnt
auto_store() {
	mkdir -p "$T/$1.mnt"
	store_init "$T/$1" root >/dev/null || fail "cowfs init $1"
	cowfs_mount "$T/$1" "$T/$1.mnt" "${@:2}" || fail "mount $1"
}
# early reclaim: the same file written over in place six times needs no
# collection; the blocks each round replaced are forgotten and their
# segments rewritten within a few of the cleaner's 5 s looks.  A second
# file, keep, is written between the blocks of the first round (each
# piece made durable at once, so that the log holds them in that order):
# the cleaner must move it out of the segments it shares with them, and it
# reads back right all the while, with O_DIRECT (through the daemon, not
# the page cache)
auto_store reclaim
store=$T/reclaim
head -c $((256 * MiB)) /dev/urandom >"$T/round" || fail "random data"
ROUND_SUM=$(sum_of "$T/round")
head -c $((32 * MiB)) /dev/urandom >"$T/keep" || fail "random data"
KEEP_SUM=$(sum_of "$T/keep")
for i in $(seq 0 255); do
	dd if="$T/round" of="$T/reclaim.mnt/main/big" bs=1M skip="$i" seek="$i" count=1 conv=notrunc,fsync \
		status=none || fail "write block $i of big"
	[ $((i % 8)) = 7 ] || continue
	dd if="$T/keep" of="$T/reclaim.mnt/main/keep" bs=1M skip=$((i / 8)) seek=$((i / 8)) count=1 \
		conv=notrunc,fsync status=none || fail "write block $((i / 8)) of keep"
done
keep_segs=$(cd "$store/segments" && ls ./*.seg)
# shellcheck disable=SC2016 # the reader's own script
bg_start READER bash -c 'while :; do
	s=$(dd if="$1" iflag=direct bs=1M status=none | sha256sum | cut -d" " -f1)
	if [ "$s" = "$2" ]; then echo ok >>"$3.ok"; else echo "$(date +%T.%N) $s" >>"$3.bad"; fi
done' reader "$T/reclaim.mnt/main/keep" "$KEEP_SUM" "$T/reader"
overwrite_rounds "$T/reclaim.mnt" 5 inplace
for _ in $(seq 12); do
	[ "$(seg_bytes)" -le $((256 * MiB + 256 * MiB)) ] && break
	sleep 2.5
done
b=$(seg_bytes)
bg_kill "$READER"
[ "$(collections "$T/reclaim")" = 0 ] || fail "a collection ran: $(grep "gc: " "$T/reclaim/cowfsd.log")"
grep "reclaim: " "$T/reclaim/cowfsd.log" | sed 's/^/    /'
# every segment that held keep's blocks but the last (still the log's
# tail then) has been cleaned, so keep was moved while the reader ran
gone=0 held=0
for f in $keep_segs; do
	held=$((held + 1))
	[ -e "$store/segments/$f" ] || gone=$((gone + 1))
done
[ "$held" -ge 4 ] && [ "$gone" -ge $((held - 1)) ] ||
	fail "$gone of the $held segments that held keep were cleaned: $(cd "$store/segments" && ls)"
reads=$(wc -l <"$T/reader.ok" 2>/dev/null || echo 0)
[ ! -s "$T/reader.bad" ] || fail "keep read back wrong while the cleaner moved it: $(head -n 5 "$T/reader.bad")"
[ "$reads" -ge 3 ] || fail "the reader of keep read it only $reads times"
[ "$(sum_of "$T/reclaim.mnt/main/keep")" = "$KEEP_SUM" ] || fail "keep reads back wrong after early reclaim"
pass "early reclaim moved keep out of $gone segments while it was read $reads times with O_DIRECT, always right"
[ "$b" -le $((256 * MiB + 256 * MiB)) ] ||
	fail "segment files take $(mib "$b") 30 s after 1.5 GiB written in place over 256 MiB, with no collection"
# cowfs df tells what early reclaim did since the mount
df_now
read -r forgot cleaned < <(python3 -c 'import json, sys
r = json.loads(sys.argv[1])["reclaimed"]
print(r["forgotten_bytes"], r["cleaned_segments"])' "$DF")
[ "$forgot" -ge $((3 * 256 * MiB)) ] && [ "$cleaned" -ge 1 ] ||
	fail "cowfs df: $(mib "$forgot") forgotten and $cleaned segments cleaned early, after 1.5 GiB written in place over 256 MiB"
"$C" df --store "$store" | grep -q "^early reclaim since the mount: .* forgotten, [0-9]* segments cleaned" ||
	fail "cowfs df does not say what early reclaim did: $("$C" df --store "$store")"
intact_after_remount reclaim "early reclaim"
cowfs_mount "$T/reclaim" "$T/reclaim.mnt" || fail "remount reclaim"
[ "$(sum_of "$T/reclaim.mnt/main/keep")" = "$KEEP_SUM" ] || fail "keep reads back wrong after a remount"
cowfs_umount "$T/reclaim.mnt" || fail "umount reclaim"
out=$("$C" fsck "$T/reclaim" 2>&1) || fail "fsck after early reclaim: $out"
pass "early reclaim: 1.5 GiB written in place over a 256 MiB file, no collection, segment files $(mib "$b") ($(mib "$forgot") forgotten, $cleaned segments cleaned, as cowfs df says), the file intact after a remount, fsck clean"

# (files replaced whole: early reclaim would take their blocks itself, so
# the stores for the collections' own checks run without it)
auto_store auto -o noreclaim
overwrite_rounds "$T/auto.mnt" 6
await_collection "$T/auto"
[ "$(collections "$T/auto")" -ge 1 ] || fail "no automatic gc after 1.5 GiB written over 256 MiB"
grep -q "gc: [0-9]* segments rewritten" "$T/auto/cowfsd.log" || fail "the automatic gc did not finish"
store=$T/auto
b=$(seg_bytes)
[ "$b" -le $((256 * MiB + 1024 * MiB + 128 * MiB)) ] ||
	fail "segment files take $(mib "$b") after the automatic gc, for 256 MiB live"
intact_after_remount auto "the automatic gc"
pass "automatic gc: 1.5 GiB written over a 256 MiB file, segment files $(mib "$b"), the file intact after a remount"

auto_store manual -o autogc=0
overwrite_rounds "$T/manual.mnt" 6
sleep 6 # longer than the cleaner's interval
store=$T/manual
b=$(seg_bytes)
[ "$(collections "$T/manual")" = 0 ] || fail "a collection ran with -o autogc=0"
[ "$b" -ge $((6 * 256 * MiB)) ] || fail "with -o autogc=0 the segment files take only $(mib "$b") after 1.5 GiB written"
cowfs_umount "$T/manual.mnt" || fail "umount manual"
pass "with -o autogc=0 nothing is collected: segment files $(mib "$b")"
# growth counts from the last collection, not from the mount: remounted
# with the defaults, the same store is collected for what it grew by before
cowfs_mount "$T/manual" "$T/manual.mnt" || fail "remount manual"
await_collection "$T/manual"
grew=$(first_growth "$T/manual")
[ -n "$grew" ] || fail "no automatic gc after a remount with the defaults of a store that grew by $(mib "$b") before"
[ "$grew" -ge 1024 ] || fail "the automatic gc after the remount counted only $grew MiB of growth"
[ "$(finished "$T/manual")" -ge 1 ] || fail "the automatic gc after the remount did not finish"
b2=$(seg_bytes)
[ "$b2" -le $((256 * MiB + 1024 * MiB + 128 * MiB)) ] ||
	fail "segment files take $(mib "$b2") after the automatic gc, for 256 MiB live"
[ "$(sum_of "$T/manual.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after the automatic gc"
cowfs_umount "$T/manual.mnt" || fail "umount manual"
pass "remounted with the defaults, the daemon collected the store that grew by $grew MiB under autogc=0 (segment files $(mib "$b") -> $(mib "$b2"))"

# short of space: a store on a 2200 MiB tmpfs has less than 2 GiB free after
# one round, and is collected long before it has grown by 1 GiB
mkdir -p "$T/small" "$T/small.mnt"
mount -t tmpfs -o size=2200m cowfs-test "$T/small" || fail "mount a tmpfs"
store_init "$T/small/store" root >/dev/null || fail "cowfs init on the tmpfs"
cowfs_mount "$T/small/store" "$T/small.mnt" -o noreclaim || fail "mount small"
_LIB_MOUNTS+=("$T/small") # after the cowfs mount: unmounted after it
overwrite_rounds "$T/small.mnt" 3
await_collection "$T/small/store"
grew=$(first_growth "$T/small/store")
[ -n "$grew" ] || fail "no automatic gc on a store short of space"
[ "$grew" -lt 1024 ] || fail "the first automatic gc short of space came only after $grew MiB of growth"
grep -q "gc: [0-9]* segments rewritten" "$T/small/store/cowfsd.log" || fail "the automatic gc short of space did not finish"
[ "$(sum_of "$T/small.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong on the small store"
cowfs_umount "$T/small.mnt" || fail "umount small"
umount "$T/small" || fail "umount the tmpfs"
pass "short of space (under 2 GiB free), the daemon collected after $grew MiB of growth"
# --- a due collection waits while the CPUs are busy ----------------------------------
# One busy loop per CPU keeps the CPUs near 100 % busy.  1.25 GiB written
# over 256 MiB makes a collection due (at 1 GiB), but it waits; once the
# loops stop it runs.  Under the loops again, 2.25 GiB more (twice the growth
# due) is collected however busy.
burn_start() {
	local burner _
	BURN=()
	for _ in $(seq "$(nproc)"); do
		bg_start burner sh -c 'while :; do :; done'
		BURN+=("$burner")
	done
}
burn_stop() { local p; for p in "${BURN[@]}"; do bg_kill "$p"; done; }
auto_store busy -o noreclaim
burn_start
overwrite_rounds "$T/busy.mnt" 5
sleep 11 # two of the cleaner's looks with the CPUs busy
[ "$(collections "$T/busy")" = 0 ] || fail "a collection ran with the CPUs busy after 1.25 GiB written: $(grep "gc: " "$T/busy/cowfsd.log")"
grep -q "gc: a collection is due .* it waits for a quieter moment" "$T/busy/cowfsd.log" ||
	fail "the daemon did not say that the due collection waits: $(grep "gc: " "$T/busy/cowfsd.log")"
burn_stop
await_collection "$T/busy"
[ "$(finished "$T/busy")" = 1 ] || fail "no collection within 30 s of the CPUs becoming quiet"
burn_start
overwrite_rounds "$T/busy.mnt" 9
await_collection "$T/busy" 2
burn_stop
[ "$(finished "$T/busy")" = 2 ] || fail "no collection while busy after 2.25 GiB written, twice the growth due"
busy=$(sed -n 's/.*gc: the store grew by.*CPUs \([0-9]*\) % busy.*/\1/p' "$T/busy/cowfsd.log" | tail -n 1)
[ "${busy:-0}" -gt 50 ] || fail "the second collection ran with the CPUs only ${busy:-?} % busy: it was not forced"
[ "$(sum_of "$T/busy.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after the collections"
cowfs_umount "$T/busy.mnt" || fail "umount busy"
rm -f "$T/round"
pass "a due collection waited while the CPUs were busy, ran once quiet, and ran at $busy % busy after twice the growth"
# --- the log's window --------------------------------------------------------------
# A log rolls on past any number of segments.  Test hooks give a store whose
# log starts at segment 65530 (so numbers cross 2^16) and may span only 16
# segments, later 64 (a real log's window is 65536 segments, 4 TiB).
# the highest segment number present
top_segment() { ls "$1/segments" | sed -n 's/^\([0-9a-f]\{16\}\)\.seg$/\1/p' | sort | tail -n 1; }
mkdir -p "$T/win.mnt"
COWFS_TEST_LOG_FIRST=65530 store_init "$T/win" root >/dev/null || fail "cowfs init win"
export COWFS_TEST_LOG_WINDOW=16
cowfs_mount "$T/win" "$T/win.mnt" -o autogc=0 || fail "mount win"
head -c $((32 * MiB)) /dev/urandom >"$T/keep" || fail "random data"
dd if="$T/keep" of="$T/win.mnt/main/keep" bs=1M conv=fsync status=none || fail "write keep"
KEEP_SUM=$(sum_of "$T/keep")
# with no gc, ordinary writes stop at 14 segments of 16, with ENOSPC
failed=0
for i in $(seq 8); do
	write_round "$T/win.mnt" || { failed=$i; break; }
done
[ "$failed" -gt 0 ] || fail "2 GiB written into a log of 16 segments (1 GiB) with no gc, and no write failed"
grep -q "No space left on device" "$T/dd.err" || fail "the write that failed did not say ENOSPC: $(cat "$T/dd.err")"
grep -q "writes fail with ENOSPC until GC moves it on" "$T/win/cowfsd.log" || fail "the daemon did not say why writes fail"
[ "$(sum_of "$T/win.mnt/main/keep")" = "$KEEP_SUM" ] || fail "keep reads back wrong once the log's window is full"
# cowfs gc moves the oldest segments on (by hand: autogc=0), and writes go on
out=$("$C" gc "$T/win" 2>&1) || fail "cowfs gc with the log's window full: $out"
echo "    $out"
write_round "$T/win.mnt" || fail "a write after cowfs gc: $(cat "$T/dd.err")"
[ "$(sum_of "$T/win.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after the gc"
cowfs_umount "$T/win.mnt" || fail "umount win"
pass "a log of 16 segments: writes stopped with ENOSPC in round $failed, nothing lost; cowfs gc, then writes went on"
# with the default, the daemon moves old segments on by itself: 5 GiB
# written through a window of 64 segments (4 GiB) with never a failed write;
# the log rolls on by more than its window, so every segment there was at
# the start, keep's fully live ones too, was moved on
export COWFS_TEST_LOG_WINDOW=64
cowfs_mount "$T/win" "$T/win.mnt" || fail "remount win"
top0=$(top_segment "$T/win")
overwrite_rounds "$T/win.mnt" 20
top1=$(top_segment "$T/win")
[ $((16#$top1)) -gt $((16#$top0 + 64)) ] || fail "5 GiB written, but the log went only from segment $top0 to $top1"
cowfs_umount "$T/win.mnt" || fail "umount win"
cowfs_mount "$T/win" "$T/win.mnt" || fail "remount win"
[ "$(sum_of "$T/win.mnt/main/keep")" = "$KEEP_SUM" ] || fail "keep reads back wrong after a remount"
[ "$(sum_of "$T/win.mnt/main/big")" = "$ROUND_SUM" ] || fail "big reads back wrong after a remount"
cowfs_umount "$T/win.mnt" || fail "umount win"
out=$("$C" fsck "$T/win" 2>&1) || fail "fsck of the rolled-on store: $out"
unset COWFS_TEST_LOG_WINDOW
rm -f "$T/round" "$T/keep"
pass "the log rolled on from segment $((16#$top0)) to $((16#$top1)) through a window of 64, the files intact"
echo "ok: gc.sh: all checks passed"
