#!/bin/bash
# tests/pg/helper.sh — the Postgres helper, `cowfs pg ...`, on a real mount with
# real Postgres 15, as a user would check it:
#   bad input first (no branch, no cluster, bad name, bad usage): one line, the
#     documented exit status, nothing started;
#   initdb + start on main: the ref's port and socket directory are in the
#     branch's postgresql.auto.conf, psql through `cowfs pg env` works;
#   two children of a running main, both running at once on their own ports
#     (one started by a hand-typed pg_ctl, which must pick the branch's port by
#     itself), each write, no branch sees another's rows;
#   reset of a running branch: same port and options, the DATABASE_URL from
#     `cowfs pg env` works before and after, the data is the parent's again;
#   stop of a stopped branch (exit 3), a port taken by another program, a user
#     who does not own the branch: refused, one line, nothing half started;
#   on demand (idle 3 s): psql to a stopped branch answers; peer authentication
#     through the daemon's socket sees the client's uid; after the idle time
#     Postgres is gone and the data stays; the next connection starts it again;
#     a hand-typed pg_ctl on the port refuses; reset of an on-demand branch;
#   delete of a branch with Postgres running (by hand or on demand) stops it
#     first, and the daemon stops listening on an on-demand branch's port;
#   umount is refused while Postgres runs; `cowfs pg stop --all` stops every
#     Postgres on the store, by hand or on demand, and then umount works;
#   ports and on-demand survive umount + mount; SIGTERM to the daemon (what
#     systemctl stop sends) shuts down every Postgres on the mount cleanly,
#     the one it started and one started by hand, then unmounts and exits.
source "$(dirname "$0")/../lib.sh"

C=$COWFS_BIN/cowfs
PSQL=$PGBIN/psql
[ -x "$C" ] || fail "$C missing: run make first"
store_mounted_new
mkdir -p "$T/log" && chown postgres "$T/log" || fail "mkdir $T/log"
export COWFS_STORE=$store
pgc() { "$C" pg "$@"; }
br() { "$C" branch "$@"; }
reg() { _LIB_PGDATA+=("$mnt/$1"); } # the EXIT trap stops any Postgres on it
for b in main a b c; do reg "$b"; done
json() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1:]: d=d[k]
print(d)' "$@"; }
ref_port() { json postgres port <"$store/refs/branches/$1.json"; }
env_of() { pgc env "$1" --format json | json "$2"; }
# the postmaster of DATADIR if it is alive, else nothing
pm_of() { local p; p=$(head -n1 "$mnt/$1/postmaster.pid" 2>/dev/null) && [ -n "$p" ] && _lib_alive "$p" && echo "$p"; }
q() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# expect DESCRIPTION RC PATTERN COMMAND...: exit status RC, one line matching PATTERN
expect() {
	local what=$1 want=$2 pattern=$3 out rc; shift 3
	out=$("$@" 2>&1); rc=$?
	[ "$rc" -eq "$want" ] || fail "$what: exit $rc, expected $want ($out)"
	[ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] || fail "$what: expected one line, got: $out"
	printf '%s' "$out" | grep -qE "$pattern" || fail "$what: '$out' does not say /$pattern/"
	pass "$what (exit $rc): \"$out\""
}

# --- bad input before there is a cluster -------------------------------------------
expect "start on a missing branch" 1 "no branch 'nope'" pgc start nope
expect "start on a branch without a cluster" 1 "holds no Postgres cluster.*cowfs pg initdb main" pgc start main
expect "a bad branch name" 1 "bad branch name" pgc start ../x
out=$(pgc 2>&1); rc=$?
[ $rc -eq 2 ] || fail "cowfs pg without a command: exit $rc"
out=$(pgc frobnicate main 2>&1); rc=$?
[ $rc -eq 2 ] || fail "cowfs pg frobnicate: exit $rc"
pass "bad usage: exit 2"
[ -z "$(pm_of main)" ] || fail "a Postgres runs on main after refused starts"

# --- initdb, start, env ----------------------------------------------------------------
pgc initdb main -- -A trust --no-instructions >/dev/null || fail "cowfs pg initdb main"
pm=$(ref_port main)
sock=$(env_of main PGHOST)
rmdir_at_exit "$(dirname "$sock")"
[ -n "$pm" ] && [ "$pm" -ge 10000 ] && [ "$pm" -le 19999 ] || fail "main's port '$pm' not in 10000-19999"
grep -qx "port = '$pm'" "$mnt/main/postgresql.auto.conf" &&
	grep -qx "unix_socket_directories = '$sock'" "$mnt/main/postgresql.auto.conf" ||
	fail "main's postgresql.auto.conf lacks its port/socket: $(cat "$mnt/main/postgresql.auto.conf")"
pass "initdb: port $pm and socket directory $sock in the ref and in postgresql.auto.conf"
pgc start main >/dev/null || fail "cowfs pg start main"
[ -n "$(pm_of main)" ] || fail "no postmaster on main after start"
[ "$(stat -c %U "/proc/$(pm_of main)")" = postgres ] || fail "Postgres on main does not run as postgres"
eval "$(pgc env main)" || fail "eval cowfs pg env main"
[ "$PGPORT" = "$pm" ] && [ "$PGHOST" = "$sock" ] && [ "$PGUSER" = postgres ] && [ "$PGDATABASE" = postgres ] ||
	fail "env of main: $PGHOST $PGPORT $PGUSER $PGDATABASE"
q -c "CREATE TABLE t (v text); INSERT INTO t VALUES ('main')" || fail "psql through the env of main"
[ "$(q "$DATABASE_URL" -c 'SELECT v FROM t')" = main ] || fail "DATABASE_URL of main"
unset PGHOST PGPORT PGUSER PGDATABASE DATABASE_URL
[ "$(pgc psql main -c 'SELECT count(*) FROM t' -At)" = 1 ] || fail "cowfs pg psql main"
pgc status main >/dev/null || fail "status main: exit $? while running"
pass "start main as postgres; env, DATABASE_URL and cowfs pg psql connect"

# --- two children, both running at once ----------------------------------------------
br create a >/dev/null && br create b >/dev/null || fail "branch create a, b from running main"
pa=$(ref_port a) pb=$(ref_port b)
[ "$pa" != "$pm" ] && [ "$pb" != "$pm" ] && [ "$pa" != "$pb" ] || fail "ports not distinct: main $pm a $pa b $pb"
grep -qx "port = '$pa'" "$mnt/a/postgresql.auto.conf" || fail "a carries a port other than its own"
[ "$(sort -n "$(dirname "$sock")/ports" | tr '\n' ' ')" = "$(printf '%s\n' "$pm" "$pa" "$pb" | sort -n | tr '\n' ' ')" ] ||
	fail "published ports of the store: $(cat "$(dirname "$sock")/ports")"
pass "children get ports of their own: main $pm, a $pa, b $pb (published for other stores' daemons)"
# a hand-typed pg_ctl on a new branch, no options: the branch's own settings
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$mnt/a" -o "-c work_mem=7MB" -l "$T/log/a.log" -w -s start ||
	fail "hand-typed pg_ctl start on a"
[ "$(sed -n 4p "$mnt/a/postmaster.pid")" = "$pa" ] || fail "a hand-typed pg_ctl on a did not listen on $pa"
pgc start b >/dev/null || fail "cowfs pg start b"
running=$(pgc status | awk '$2 == "running" { print $1 ":" $4 }' | sort | tr '\n' ' ')
[ "$running" = "a:$pa b:$pb main:$pm " ] || fail "status shows running: $running"
pass "a (hand-typed pg_ctl) and b (cowfs pg start) run at once with main: $running"
url_a=$(env_of a DATABASE_URL) url_b=$(env_of b DATABASE_URL) url_m=$(env_of main DATABASE_URL)
q "$url_a" -c "INSERT INTO t VALUES ('a')" && q "$url_b" -c "INSERT INTO t VALUES ('b')" &&
	q "$url_m" -c "INSERT INTO t VALUES ('main2')" || fail "writes on a, b, main"
[ "$(q "$url_a" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "a,main" ] &&
	[ "$(q "$url_b" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "b,main" ] &&
	[ "$(q "$url_m" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "main,main2" ] ||
	fail "rows leak between branches"
pass "each branch sees its own writes only"

# --- reset of a running branch ----------------------------------------------------------
pid_a=$(pm_of a)
out=$(br reset a) || fail "reset of running a: $out"
echo "$out" | sed 's/^/    /'
[ "$(ref_port a)" = "$pa" ] || fail "a's port changed by the reset: $(ref_port a)"
[ "$(env_of a DATABASE_URL)" = "$url_a" ] || fail "a's DATABASE_URL changed by the reset"
[ -n "$(pm_of a)" ] && [ "$(pm_of a)" != "$pid_a" ] || fail "a not running again (new postmaster) after reset"
[ "$(q "$url_a" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "main,main2" ] ||
	fail "after reset, a does not hold main's current rows"
grep -qx "port = '$pa'" "$mnt/a/postgresql.auto.conf" || fail "after reset, a carries main's port"
[ "$(q "$url_a" -c 'SHOW work_mem')" = 7MB ] || fail "after reset, a lost the options it was started with"
pass "reset of running a: stopped, reset, started again on port $pa with its options; the same DATABASE_URL works"

# --- bad input with clusters ---------------------------------------------------------------
pgc stop b >/dev/null || fail "stop b"
expect "stop of a stopped branch" 3 "not running on branch 'b'" pgc stop b
pgc status b >/dev/null; rc=$?
[ $rc -eq 3 ] || fail "status of stopped b: exit $rc, expected 3"
bg_start LISTENER python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $pb)); s.listen(); time.sleep(60)"
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$pb") 2>/dev/null && break; sleep 0.1; done
expect "start with the branch's port taken" 1 "port $pb of branch 'b' is in use by another program \(pid [0-9]+, python3\); nothing started" pgc start b
[ -z "$(pm_of b)" ] || fail "a Postgres runs on b after the refused start"
bg_kill "$LISTENER"
expect "start by a user who does not own the branch" 1 "belongs to postgres \(uid [0-9]+\): only that user or root may start" runuser -u nobody -- "$C" pg start b
expect "stop by a user who does not own the branch" 1 "only that user or root may stop" runuser -u nobody -- "$C" pg stop a
expect "on demand while Postgres runs by hand" 1 "Postgres runs on branch 'a' \(pid [0-9]+\), started by hand: stop it first" pgc ondemand a on
expect "a bad idle time" 2 "idle 10x: give a duration" pgc ondemand b on --idle 10x
out=$(runuser -u postgres -- "$C" pg restart a 2>&1) || fail "cowfs pg restart a by its owner, not root: $out"
[ "$(q "$url_a" -c 'SHOW work_mem')" = 4MB ] || fail "a restarted by cowfs pg kept hand-typed options"
pass "the branch's owner (not root) restarts its Postgres with cowfs pg"
[ -n "$(pm_of a)" ] || fail "a stopped by a non-owner"
[ -z "$(pm_of b)" ] || fail "b started by a non-owner"
pass "nothing half started or stopped by refused commands"

# --- on demand ---------------------------------------------------------------------------------
# b's own pg_hba: peer for the socket, trust for TCP, to see whose uid reaches Postgres
printf 'local all all peer\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' >"$mnt/b/pg_hba.conf"
pgc ondemand b on --idle 3s >/dev/null || fail "ondemand b on"
pgc status b | grep -qE "^b +stopped .*on demand \(idle 3s\)" || fail "status b: $(pgc status b)"
[ -z "$(pm_of b)" ] || fail "on demand started Postgres before a connection"
t0=$(date +%s%N)
[ "$(q "$url_b" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "b,main" ] ||
	fail "first query on the stopped on-demand branch b"
t1=$(date +%s%N)
pid_b=$(pm_of b)
[ -n "$pid_b" ] || fail "no Postgres on b after the first connection"
pass "psql to stopped on-demand b answered in $(((t1 - t0) / 1000000)) ms (Postgres started, pid $pid_b)"
sock_b=$(env_of b PGHOST)
[ "$(runuser -u postgres -- "$PSQL" -X -At -h "$sock_b" -p "$pb" -U postgres -d postgres -c 'SELECT 1')" = 1 ] ||
	fail "peer authentication as postgres through b's socket"
out=$(runuser -u nobody -- "$PSQL" -X -At -h "$sock_b" -p "$pb" -U postgres -d postgres -c 'SELECT 1' 2>&1) &&
	fail "nobody got in as postgres by peer authentication through the daemon's socket"
echo "$out" | grep -q "Peer authentication failed" || fail "nobody through b's socket: $out"
pass "through the daemon's socket, peer authentication sees the client (postgres in, nobody refused)"
q "$url_b" -c "INSERT INTO t VALUES ('ondemand')" || fail "write on on-demand b"
gone=
for _ in $(seq 1 100); do _lib_alive "$pid_b" || { gone=1; break; }; sleep 0.1; done
[ -n "$gone" ] || fail "Postgres on b still runs 10 s after its last connection (idle 3 s)"
pgc status b | grep -qE "^b +stopped" || fail "status b after idle: $(pgc status b)"
pass "after 3 s without a connection Postgres on b stopped"
starts() { grep -c "pg: started Postgres on branch b " "$store/cowfsd.log"; }
n0=$(starts)
for i in $(seq 1 12); do
	if [ $((i % 2)) = 0 ]; then
		q "$url_b" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t' >"$T/c$i" 2>&1 &
	else
		runuser -u postgres -- "$PSQL" -X -q -At -h "$sock_b" -p "$pb" -d postgres \
			-c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t' >"$T/c$i" 2>&1 &
	fi
done
wait
for i in $(seq 1 12); do
	[ "$(cat "$T/c$i")" = "b,main,ondemand" ] || fail "concurrent first connection $i: $(cat "$T/c$i")"
done
[ "$(starts)" = $((n0 + 1)) ] || fail "12 concurrent first connections started Postgres $(($(starts) - n0)) times"
[ -n "$(pm_of b)" ] && [ "$(pm_of b)" != "$pid_b" ] || fail "b not started again by the next connection"
pass "12 concurrent first connections (TCP and socket) started it again once; all answered; the data stayed"
out=$(runuser -u postgres -- "$PGBIN/pg_ctl" -D "$mnt/b" -o "-c unix_socket_directories=$T/log" -l "$T/log/b.log" -w -t 20 -s start 2>&1) &&
	fail "a hand-typed pg_ctl started a second Postgres on on-demand b"
pass "a hand-typed pg_ctl on the running on-demand branch refuses"
q "$url_b" -c "INSERT INTO t VALUES ('gone after reset')" || fail "write on b"
br reset b >/dev/null || fail "reset of on-demand b"
[ "$(q "$url_b" -c 'SELECT string_agg(v, $$,$$ ORDER BY v) FROM t')" = "main,main2" ] ||
	fail "after reset, on-demand b does not hold main's rows"
pass "reset of on-demand b: stopped, reset, the next connection sees main's rows"

# --- delete stops Postgres first ------------------------------------------------------------------
br create c >/dev/null && pgc start c >/dev/null || fail "create and start c"
pid_c=$(pm_of c) sock_c=$(env_of c PGHOST)
out=$(br delete c) || fail "delete of running c: $out"
for _ in $(seq 1 50); do _lib_alive "$pid_c" || break; sleep 0.1; done
_lib_alive "$pid_c" && fail "Postgres of deleted c still runs"
[ ! -e "$sock_c" ] || fail "socket directory of deleted c still there"
pass "delete of running c stopped its Postgres first and removed its socket directory"
br create d >/dev/null && pgc ondemand d on >/dev/null || fail "create d, on demand"
pd=$(ref_port d)
[ "$(q "$(env_of d DATABASE_URL)" -c 'SELECT count(*) FROM t')" = 2 ] || fail "first query on on-demand d"
pid_d=$(pm_of d)
br delete d >/dev/null || fail "delete of on-demand d"
_lib_alive "$pid_d" && fail "Postgres of deleted on-demand d still runs"
cowfs_port_listens() { grep -qiE "^ *[0-9]+: [0-9A-F]+:$(printf '%04X' "$1") [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6; }
cowfs_port_listens "$pd" && fail "port $pd of deleted d still listened on"
pass "delete of running on-demand d stopped its Postgres and its listeners"
br undelete d >/dev/null || fail "undelete d"
[ "$(ref_port d)" = "$pd" ] || fail "undeleted d has port $(ref_port d), not $pd"
[ "$(q "$(env_of d DATABASE_URL)" -c 'SELECT count(*) FROM t')" = 2 ] || fail "undeleted d not on demand again"
pass "undelete: d is back on its port $pd, on demand again"
"$C" snapshot create d snap1 >/dev/null || fail "snapshot of d"
br create e --from-snapshot snap1 >/dev/null || fail "branch e of snapshot snap1"
pe=$(ref_port e)
[ -n "$pe" ] && [ "$pe" != "$pd" ] || fail "a branch of d's snapshot has port '$pe' (d: $pd)"
grep -qx "port = '$pe'" "$mnt/e/postgresql.auto.conf" || fail "e carries another port in postgresql.auto.conf"
pgc stop d >/dev/null
br restore d --to snap1 >/dev/null || fail "restore d"
[ "$(ref_port d)" = "$pd" ] && grep -qx "port = '$pd'" "$mnt/d/postgresql.auto.conf" || fail "restore changed d's port"
br delete e --now >/dev/null && br delete d --now >/dev/null || fail "delete d, e"
pass "a branch of a snapshot gets its own port ($pe); restore keeps the branch's ($pd)"

# --- umount + mount: same ports, on demand again ------------------------------------------------------
# stop --all: main and a started by hand, b on demand (a query starts it)
pgc start main >/dev/null 2>&1
[ "$(q "$url_b" -c 'SELECT count(*) FROM t')" = 2 ] || fail "on-demand b before stop --all"
[ -n "$(pm_of main)" ] && [ -n "$(pm_of a)" ] && [ -n "$(pm_of b)" ] || fail "main, a and b are not all running"
umount "$mnt" 2>/dev/null && fail "umount succeeded with Postgres running on the mount"
pgc stop --all main >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "cowfs pg stop --all main: exit $rc, expected 2 (usage)"
[ -n "$(pm_of main)" ] || fail "a refused stop --all stopped main"
out=$(pgc stop --all) || fail "cowfs pg stop --all: $out"
for b in main a b; do [ -z "$(pm_of "$b")" ] || fail "Postgres still runs on $b after stop --all"; done
[ "$(printf '%s\n' "$out" | grep -c '^stopped Postgres on branch')" = 3 ] || fail "stop --all said: $out"
expect "stop --all with nothing running" 0 "no Postgres runs" pgc stop --all
pass "stop --all stopped main and a (by hand) and b (on demand)"
before=$(pgc status | awk 'NR > 1 { print $1 ":" $4 }' | sort | tr '\n' ' ')
cowfs_umount "$mnt" || fail "umount with every Postgres stopped"
cowfs_mount "$store" "$mnt" || fail "remount"
after=$(pgc status | awk 'NR > 1 { print $1 ":" $4 }' | sort | tr '\n' ' ')
[ "$before" = "$after" ] || fail "ports changed across a remount: $before -> $after"
pgc start main >/dev/null || fail "start main after remount"
[ "$(q "$url_m" -c 'SELECT count(*) FROM t')" = 2 ] || fail "main after remount"
[ "$(q "$url_b" -c 'SELECT count(*) FROM t')" = 2 ] || fail "on-demand b after remount"
pass "after umount + mount: the same ports ($after), main starts, b still on demand"

# --- SIGTERM to the daemon (systemctl stop) with Postgres running on demand and by hand ------------------
pid_b=$(pm_of b) pid_m=$(pm_of main)
[ -n "$pid_b" ] || fail "b not running"
[ -n "$pid_m" ] || fail "main not running"
pg_kill_at_exit "$pid_b" "$pid_m"
dpid=$(cowfs_daemon_pid "$mnt")
kill -TERM "$dpid" || fail "kill -TERM $dpid"
for _ in $(seq 1 600); do _lib_alive "$dpid" || break; sleep 0.1; done
_lib_alive "$dpid" && fail "the daemon did not exit within 60 s of SIGTERM"
_lib_alive "$pid_b" && fail "Postgres started on demand outlived the daemon"
_lib_alive "$pid_m" && fail "Postgres started by hand on main outlived the daemon"
if grep -q " $mnt " /proc/mounts; then cowfs_clear_dead "$mnt"; fail "the daemon exited and left $mnt mounted"; fi
grep -q "database system is shut down" "$sock_b/postgres.log" || fail "b's Postgres was not shut down cleanly"
grep -q "database system is shut down" "$sock/postgres.log" || fail "main's Postgres was not shut down cleanly"
cowfs_mount "$store" "$mnt" || fail "mount after SIGTERM"
for b in main b; do
	st=$(runuser -u postgres -- "$PGBIN/pg_controldata" "$mnt/$b" | sed -n 's/^Database cluster state: *//p')
	[ "$st" = "shut down" ] || fail "after SIGTERM, $b's cluster state is '$st', not 'shut down'"
done
pass "SIGTERM: the daemon shut down Postgres on main (by hand) and b (on demand) cleanly, unmounted and exited"
[ "$(q "$url_b" -c 'SELECT count(*) FROM t')" = 2 ] || fail "on-demand b after the daemon's restart"
pgc stop b >/dev/null || fail "stop b"
cowfs_umount "$mnt" || fail "final umount"
[ ! -e "$(dirname "$sock")/ports" ] || fail "the store's ports are still published after umount"
echo "ok: helper.sh: all checks passed"
