#!/usr/bin/env bash
# tests/install.sh — what an operator installs and runs.
#
#   1. `make install DESTDIR= PREFIX=/usr` puts binaries, mount helper, units,
#      the environment file and every man page in place, with the units naming
#      the installed paths; a second install keeps an edited environment file;
#      `make uninstall` removes everything but that file.
#   2. systemd-analyze verify passes on every installed unit, prints nothing,
#      and fails on deliberately broken copies.
#   3. cowfs.service's own command lines, run as systemd runs them (Type=notify,
#      under tests/notify-mock.py): READY=1 from the daemon's pid once the mount
#      is there and the control socket listens, the mount answering right away;
#      stop is systemd's SIGTERM to the daemon alone (KillMode=mixed, no
#      ExecStop): STOPPING=1, unmounted, exit 0, a file written before it
#      there at the next start; after a
#      kill -9, the next ExecStart mounts again over the dead mount; no READY=1
#      when the store cannot be opened.
#   4. The fstab line of the docs: `mount -t cowfs -o <its options>` through
#      the installed /sbin/mount.cowfs, and the helper run as mount(8) runs it.
#   5. Every man page: mandoc -Tlint and man --warnings -l silent; a page for
#      every installed command, unit and file; every command of `cowfs help`
#      in cowfs(1).
# Steps that need the tree "installed" run under as_installed (lib.sh): a
# private mount namespace with the DESTDIR laid over /usr, so nothing is
# installed on the host and mounts made there are seen only there.
source "$(dirname "$0")/lib.sh"

tmpdir_new T
R=$T/root
UD=/usr/lib/systemd/system
make -s -C "$TOP" install DESTDIR="$R" PREFIX=/usr >/dev/null || fail "make install DESTDIR=$R PREFIX=/usr"

# --- 1. make install / uninstall --------------------------------------------
for f in usr/bin/cowfs usr/bin/cowfsd; do
	[ -f "$R/$f" ] && [ -x "$R/$f" ] || fail "make install did not install $f"
done
[ "$(readlink "$R/sbin/mount.cowfs")" = /usr/bin/cowfsd ] || fail "/sbin/mount.cowfs does not point at /usr/bin/cowfsd"
units=$(cd "$TOP/systemd" && ls -- *.service *.timer)
[ -n "$units" ] || fail "no units in systemd/"
for u in $units; do
	f=$R$UD/$u
	[ -f "$f" ] || fail "make install did not install $UD/$u"
	[ "$(stat -c %a "$f")" = 644 ] || fail "$UD/$u has mode $(stat -c %a "$f"), not 644"
	! grep -n '@[A-Z_]*@' "$f" || fail "a placeholder is left in the installed $u"
	case $u in *.service)
		grep -qx 'EnvironmentFile=-/etc/default/cowfs' "$f" || fail "$u does not read /etc/default/cowfs"
		grep '^Exec' "$f" | grep -v -e '=-\?/usr/bin/cowfs ' -e '=/usr/bin/cowfsd ' -e '=-\?mkdir ' -e '=umount ' &&
			fail "$u runs something other than the installed binaries"
	esac
done
grep -qx 'ExecStart=/usr/bin/cowfsd -f -o "${COWFS_OPTIONS}" "${COWFS_STORE}" "${COWFS_MOUNT}"' "$R$UD/cowfs.service" ||
	fail "cowfs.service does not run the installed cowfsd in the foreground"
grep -qx 'Type=notify' "$R$UD/cowfs.service" || fail "cowfs.service is not Type=notify"
grep -qx 'ExecStart=/usr/bin/cowfs pg start %i' "$R$UD/cowfs-pg@.service" || fail "cowfs-pg@.service: ExecStart"
grep -qx 'ExecStop=-/usr/bin/cowfs pg stop %i' "$R$UD/cowfs-pg@.service" || fail "cowfs-pg@.service: ExecStop"
for t in $(cd "$TOP/systemd" && ls -- *.timer); do
	grep -qx 'Persistent=true' "$R$UD/$t" || fail "$t is not Persistent=true"
	[ -f "$R$UD/${t%.timer}.service" ] || fail "$t has no ${t%.timer}.service"
done
for m in "$TOP"/man/*.[1-9]; do
	cmp -s "$m" "$R/usr/share/man/man${m##*.}/${m##*/}" || fail "make install did not install ${m#"$TOP"/}"
done
[ -f "$R/etc/default/cowfs" ] || fail "make install did not install /etc/default/cowfs"
pass "make install DESTDIR= PREFIX=/usr: binaries, mount.cowfs, $(echo "$units" | wc -w) units naming /usr/bin, /etc/default/cowfs, man pages"

echo "COWFS_OPTIONS=checkpoint=5" >>"$R/etc/default/cowfs"
cp "$R/etc/default/cowfs" "$T/edited"
make -s -C "$TOP" install DESTDIR="$R" PREFIX=/usr >/dev/null || fail "second make install"
cmp -s "$T/edited" "$R/etc/default/cowfs" || fail "a second make install overwrote an edited /etc/default/cowfs"
make -s -C "$TOP" install DESTDIR="$T/u" PREFIX=/usr >/dev/null || fail "make install DESTDIR=$T/u"
make -s -C "$TOP" uninstall DESTDIR="$T/u" PREFIX=/usr >/dev/null || fail "make uninstall"
left=$(cd "$T/u" && find . ! -type d | sort)
[ "$left" = ./etc/default/cowfs ] || fail "make uninstall left more (or less) than /etc/default/cowfs: $left"
make -s -C "$TOP" install DESTDIR="$T/u2" PREFIX=/usr/local UNITDIR=/lib/systemd/system >/dev/null ||
	fail "make install UNITDIR=/lib/systemd/system"
[ -f "$T/u2/lib/systemd/system/cowfs.service" ] || fail "make install ignored UNITDIR"
grep -qx 'ExecStart=/usr/local/bin/cowfsd -f -o "${COWFS_OPTIONS}" "${COWFS_STORE}" "${COWFS_MOUNT}"' \
	"$T/u2/lib/systemd/system/cowfs.service" || fail "with PREFIX=/usr/local, cowfs.service does not run /usr/local/bin/cowfsd"
pass "a second install keeps an edited /etc/default/cowfs; make uninstall removes all else; UNITDIR and PREFIX reach the units"

# --- 2. systemd-analyze verify ----------------------------------------------
# A good unit makes systemd-analyze print nothing: it exits 0 on unknown keys
# and bad values and only warns, so any output counts as a failure.
verify() {
	local out
	out=$(as_installed "$R" systemd-analyze verify "$1" 2>&1) && [ -z "$out" ] && return 0
	printf '%s\n' "$out"
	return 1
}
for u in $units; do
	verify "$UD/$u" || fail "systemd-analyze verify $u"
done
mkdir "$T/broken"
sed 's|^ExecStart=/usr/bin/cowfsd |ExecStart=/usr/bin/cowfsdd |' "$R$UD/cowfs.service" >"$T/broken/b1.service"
sed 's|^Type=notify|Type=notfy|' "$R$UD/cowfs.service" >"$T/broken/b2.service"
sed 's|^Documentation=.*|Documentation=man:cowfs-nosuch(7)|' "$R$UD/cowfs-pg@.service" >"$T/broken/b3@.service"
sed 's|^OnCalendar=.*|OnCalendar=hourlyy|' "$R$UD/cowfs-gc.timer" >"$T/broken/b4.timer"
for b in b1.service b2.service b3@.service b4.timer; do
	verify "$T/broken/$b" >/dev/null && fail "systemd-analyze verify passed a broken unit ($b)"
done
pass "systemd-analyze verify: all $(echo "$units" | wc -w) units clean; broken copies fail (bad binary, bad value, missing man page, bad calendar)"

# --- 3. cowfs.service's command lines, run as systemd runs them ---------------
store=$T/store
mnt=$T/branches
"$R/usr/bin/cowfs" init "$store" --owner postgres >/dev/null || fail "installed cowfs init"

# The environment systemd builds: the unit's Environment=, then
# EnvironmentFile= (the installed file, pointed at the test's store; the
# COWFS_OPTIONS=checkpoint=5 added above is in it).
unit_value() { sed -n "s/^$2=//p" "$R$UD/$1"; }
{
	for kv in $(unit_value cowfs.service Environment); do echo "$kv"; done
	sed -e "s|^COWFS_STORE=.*|COWFS_STORE=$store|" -e "s|^COWFS_MOUNT=.*|COWFS_MOUNT=$mnt|" "$R/etc/default/cowfs"
} >"$T/env"
unit_value cowfs.service ExecStartPre >"$T/ExecStartPre"
unit_value cowfs.service ExecStart >"$T/ExecStart"
[ -z "$(unit_value cowfs.service ExecStop)" ] || fail "cowfs.service has an ExecStop: its stop is the SIGTERM"
[ "$(unit_value cowfs.service KillMode)" = mixed ] || fail "cowfs.service: KillMode is not mixed"

# Runs inside as_installed: ExecStartPre, ExecStart under the notify mock,
# checks that the mount answers at once, evals CHECK (if given), then ends.
# MODE "stop": a file main/stop, then the SIGTERM systemd sends to the
# daemon.  MODE "kill": a synced file main/kill, then kill -9.
service_cycle() {
	set -u
	local dir=$1 log=$2 mode=$3 check=${4:-} mock pid cmd
	set -a; . "$dir/env"; set +a
	cmd=$(cat "$dir/ExecStartPre"); eval "set -- ${cmd#-}"; "$@" || true
	eval "set -- $(cat "$dir/ExecStart")"
	python3 "$TESTS_DIR/notify-mock.py" --store "$COWFS_STORE" --mount "$COWFS_MOUNT" "$log" -- "$@" &
	mock=$!
	for _ in $(seq 1 600); do grep -qs '^ready-check' "$log" && break; sleep 0.1; done
	pid=$(awk '$1 == "started" { print $2 }' "$log")
	grep -q '^ready-check ok' "$log" || { echo "no ready-check ok"; kill -KILL "$pid"; return 1; }
	# READY=1 said the mount answers: no waiting
	timeout 10 ls "$COWFS_MOUNT/main" >/dev/null || { echo "mount does not answer after READY=1"; return 1; }
	timeout 10 cowfs branch list --store "$COWFS_STORE" | grep -qw main || { echo "control socket does not answer"; return 1; }
	eval "$check" || { echo "check failed: $check"; return 1; }
	if [ "$mode" = stop ]; then
		echo "$mode" >"$COWFS_MOUNT/main/$mode"
		kill -TERM "$pid" || { echo "kill -TERM $pid failed"; return 1; }
		wait "$mock"
		! mountpoint -q "$COWFS_MOUNT" || { echo "still mounted after the daemon exited"; return 1; }
	else
		echo "$mode" | dd of="$COWFS_MOUNT/main/$mode" conv=fsync status=none
		kill -KILL "$pid"
		wait "$mock"
		return 0
	fi
}
run_cycle() {
	as_installed "$R" bash -c "TESTS_DIR=$TESTS_DIR; $(declare -f service_cycle); service_cycle \"\$@\"" _ "$@"
}
check_log() { # LOG: one READY=1, every message from the daemon's pid
	local log=$1 pid
	pid=$(awk '$1 == "started" { print $2 }' "$log")
	[ "$(grep -c '^notify .*READY=1' "$log")" = 1 ] || { cat "$log"; fail "READY=1 not sent exactly once"; }
	awk -v p="$pid" '$1 == "notify" && $2 != p { bad = 1 } END { exit bad }' "$log" ||
		{ cat "$log"; fail "a notification came from a pid other than the daemon's ($pid)"; }
}

run_cycle "$T" "$T/log1" stop >"$T/out1" 2>&1 || { cat "$T/out1" "$T/log1"; fail "cowfs.service start/stop cycle"; }
check_log "$T/log1"
grep -q "^notify [0-9]* READY=1|STATUS=serving $store at $mnt\$" "$T/log1" || { cat "$T/log1"; fail "no READY=1 with STATUS"; }
sed -n '/READY=1/,$p' "$T/log1" | grep -q '^notify [0-9]* STOPPING=1' || { cat "$T/log1"; fail "no STOPPING=1 after READY=1"; }
tail -n1 "$T/log1" | grep -qx 'exit 0' || { cat "$T/log1"; fail "the daemon did not exit 0 after SIGTERM"; }
store_daemon_gone "$store" || fail "the daemon still holds the store after SIGTERM"
pass "cowfs.service ExecStartPre/ExecStart, then stop by SIGTERM: READY=1 once mounted and listening, STOPPING=1, unmounted, exit 0"

run_cycle "$T" "$T/log2" kill >"$T/out2" 2>&1 || { cat "$T/out2" "$T/log2"; fail "cowfs.service cycle ending in kill -9"; }
store_daemon_gone "$store" || fail "the daemon survived kill -9"
# the dead mount is in that namespace, gone with it; make one here to restart over
run_restart() {
	as_installed "$R" bash -c "
		set -e; . '$T/env'
		mount -t cowfs '$store' '$mnt'
		kill -KILL \$(head -n1 '$store/lock')
		while ! flock -n -x '$store/lock' true; do sleep 0.1; done
		! stat '$mnt' 2>/dev/null  # dead: ENOTCONN
		TESTS_DIR=$TESTS_DIR; $(declare -f service_cycle)
		service_cycle '$T' '$T/log3' stop 'cat $mnt/main/kill $mnt/main/stop >$T/seen'
		[ -z \"\$(ls -A '$mnt')\" ]  # the daemon's exit left no mount behind
	"
}
out=$(run_restart 2>&1) || { printf '%s\n' "$out"; cat "$T/log3"; fail "restart over a dead mount"; }
[ "$(cat "$T/seen")" = "$(printf 'kill\nstop')" ] ||
	{ cat "$T/seen"; fail "a synced write before kill -9, or one before the first stop, is lost after the restart"; }
printf '%s\n' "$out" | grep -q 'detached the dead mount' || { printf '%s\n' "$out"; fail "no warning about the dead mount"; }
check_log "$T/log3"
store_daemon_gone "$store" || fail "the daemon still holds the store"
pass "after kill -9 the unit's ExecStart mounts again over the dead mount (Restart=on-failure works); synced data kept"

sed -i "s|^COWFS_STORE=.*|COWFS_STORE=$T/nostore|" "$T/env"
as_installed "$R" bash -c "set -a; . '$T/env'; set +a; eval \"set -- \$(cat '$T/ExecStart')\";
	python3 '$TESTS_DIR/notify-mock.py' '$T/log4' -- \"\$@\"" 2>/dev/null && fail "cowfsd served a store that does not exist"
grep -q READY "$T/log4" && { cat "$T/log4"; fail "READY=1 sent for a store that cannot be opened"; }
tail -n1 "$T/log4" | grep -qx 'exit 1' || { cat "$T/log4"; fail "expected exit 1 for a missing store"; }
pass "no READY=1, exit 1, when the store cannot be opened"

# --- 4. the documented fstab line -------------------------------------------
fstab=$(grep -h -E '^/var/lib/cowfs +/branches +cowfs ' "$TOP/README.md" | head -n1)
[ -n "$fstab" ] || fail "README.md shows no fstab line for /var/lib/cowfs /branches"
for m in man/mount.cowfs.8 man/cowfsd.8; do
	grep -qxF "$fstab" "$TOP/$m" || fail "$m does not show the fstab line of README.md: $fstab"
done
opts=$(echo "$fstab" | awk '{ print $4 }')
opts=${opts//\/var\/lib\/cowfs/$store}
out=$(as_installed "$R" bash -c "set -e
	mount -t cowfs -o '$opts' '$store' '$mnt'
	grep ' $mnt fuse.cowfs ' /proc/mounts >/dev/null
	echo fstab >'$mnt/main/fstab'
	umount '$mnt'
	while ! flock -n -x '$store/lock' true; do sleep 0.1; done
	/sbin/mount.cowfs '$store' '$mnt' -n -o 'ro,$opts'
	cat '$mnt/main/fstab'
	! echo x 2>/dev/null >'$mnt/main/ro'
	umount '$mnt'" 2>&1) || { printf '%s\n' "$out"; fail "mount -t cowfs -o $opts through the installed helper"; }
[ "$out" = fstab ] || fail "data written through mount -t cowfs not there after remount: $out"
store_daemon_gone "$store" || fail "the daemon did not exit after umount"
pass "fstab options $opts: mount -t cowfs through the installed /sbin/mount.cowfs, and the helper as mount(8) calls it"

# --- 5. man pages -----------------------------------------------------------
pages=$(cd "$R/usr/share/man" && ls -- man*/*)
for p in $pages; do
	# mandoc looks cross-references up in a mandoc.db that man-db systems do not
	# build, finds the page by name instead, and says so: not about our page.
	out=$(as_installed "$R" mandoc -Tlint "/usr/share/man/$p" 2>&1 | grep -v '^mandoc: outdated mandoc.db lacks ')
	[ -z "$out" ] || { printf '%s\n' "$out"; fail "mandoc -Tlint $p"; }
	out=$(as_installed "$R" env MANWIDTH=80 man --warnings -l "/usr/share/man/$p" 2>&1 >/dev/null) && [ -z "$out" ] ||
		{ printf '%s\n' "$out"; fail "man --warnings -l $p"; }
done
for c in $(ls "$R/usr/bin") $(ls "$R/sbin"); do
	ls "$R/usr/share/man/"man[18]/"$c".[18] >/dev/null 2>&1 || fail "no man page for the installed command $c"
done
for u in $units; do
	grep -q "^\.It Pa $u\$" "$TOP/man/cowfs-systemd.7" || fail "cowfs-systemd(7) does not describe $u"
done
grep -q '^\.It Pa /etc/default/cowfs$' "$TOP/man/cowfs-systemd.7" || fail "no man page describes /etc/default/cowfs"
# a command line of the help: two spaces, the command's words (lower case),
# its arguments (upper case, options), two or more spaces, what it does
"$R/usr/bin/cowfs" help | grep '^  [a-z]' | sed -E 's/^  //; s/  .*//' |
	awk '{ s = $1; for (i = 2; i <= NF && $i ~ /^[a-z][a-z-]*$/; i++) s = s " " $i; print s }' >"$T/cmds"
[ -s "$T/cmds" ] || fail "cowfs help lists no commands"
while read -r c; do
	grep -q "^\.It Cm $c\( \|\$\)" "$TOP/man/cowfs.1" || fail "cowfs help names '$c', cowfs(1) does not describe it"
done <"$T/cmds"
pass "$(echo "$pages" | wc -w) man pages lint-clean and render; a page for every command, unit and file; cowfs(1) covers $(wc -l <"$T/cmds") commands of cowfs help"
echo "ok: install.sh: all checks passed"
