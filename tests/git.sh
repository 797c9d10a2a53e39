#!/usr/bin/env bash
# tests/git.sh — `cowfs git`: a database branch for each git branch, in a real
# git repository, on a real mount, with real Postgres 15:
#   install into a repository that has a post-checkout hook of its own: it is
#     kept (byte for byte), still runs, and comes back on uninstall; install
#     twice changes nothing;
#   `git checkout -b feature/inventory-split` creates the database branch
#     feature-inventory-split from main, starts its Postgres and writes its
#     connection settings into .env, whose other lines stay byte for byte;
#     psql with those settings sees main's data, and its writes stay on the
#     branch; checkout of main switches .env back (and starts main's
#     Postgres), checkout of the branch again reuses its database;
#   names: slashes, dots, upper case, unicode, 80 characters give valid,
#     distinct names; a/b and a-b never share one; stable on re-checkout;
#   cowfs.ttl: a new database branch expires;
#   detached HEAD, a store that is not mounted: the checkout succeeds, one
#     line from cowfs, .env untouched; a rebase (HEAD detached meanwhile): silent;
#   `git branch -D` alone deletes nothing; `cowfs git prune --dry-run` lists
#     the database branches of deleted and merged git branches and deletes
#     nothing; `cowfs git prune` deletes them, keeps a protected one, one whose
#     git branch has no commit of its own, those of live branches, and one
#     paired by hand (only the pairing goes);
#   an existing database branch is never taken by name (git branch staging
#     gets staging-XXXXXXXX), only by a pairing set by hand;
#   cowfs.autoPrune: `git branch -m` keeps the database (the pairing follows),
#     `git branch -D` deletes it;
#   core.hooksPath is where the hooks go.
source "$(dirname "$0")/lib.sh"

C=$COWFS_BIN/cowfs
PSQL=$PGBIN/psql
[ -x "$C" ] || fail "$C missing: run make first"
command -v git >/dev/null || fail "git is not installed"
store_mounted_new
repo=$T/repo
pg_stop_branches_at_exit "$mnt"
git_test_env "$T"
branches() { "$C" branch list --json --store "$store" | python3 -c 'import json,sys
print(" ".join(sorted(b["name"] for b in json.load(sys.stdin)["branches"])))'; }
has_branch() { [[ " $(branches) " == *" $1 "* ]]; }
# envval KEY [FILE]: the value of KEY in the env file
envval() { sed -n "s/^$1=//p" "${2:-$repo/.env}" | tail -n1; }
# q SQL: psql with the env file's settings, as an application would
q() { (set -a && . "$repo/.env" && "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -c "$1"); }
# outside: the env file without cowfs's block
outside() { sed '/^# >>> cowfs/,/^# <<< cowfs$/d' "$repo/.env"; }
# cowfs_lines FILE: the lines cowfs wrote to a hook's stderr
cowfs_lines() { grep '^cowfs: ' "$1"; }

# --- main holds a cluster with one row ------------------------------------------
"$C" pg initdb --store "$store" main >/dev/null || fail "cowfs pg initdb main"
"$C" pg start main --store "$store" >/dev/null || fail "cowfs pg start main"
"$C" pg psql --store "$store" main -X -q -c "CREATE TABLE t (x text); INSERT INTO t VALUES ('main')" ||
	fail "create table on main"
"$C" pg stop main --store "$store" >/dev/null || fail "cowfs pg stop main"
pass "main holds a cluster with table t = {main}, stopped"

# --- a repository with a hook of its own and an env file ----------------------------
git init -q -b main "$repo" && cd "$repo" || fail "git init"
echo hello >README && git add README && git commit -q -m init || fail "first commit"
cat >.git/hooks/post-checkout <<EOF
#!/bin/sh
echo "own hook: \$*" >>"$T/own-hook.log"
EOF
chmod 755 .git/hooks/post-checkout
cp -p .git/hooks/post-checkout "$T/own-hook"
printf 'SECRET="a=b # not a comment"\n# the team'"'"'s settings\n\nexport X_MODE=dev\nPGPORT=5432\nUNICODE=gr\xc3\xbc\xc3\x9f\x65\n' >.env
cp .env "$T/env.orig"
git config cowfs.store "$store"

out=$("$C" git install 2>&1) || fail "cowfs git install: $out"
echo "$out" | sed 's/^/    /'
for h in post-checkout post-merge reference-transaction; do
	[ -x ".git/hooks/$h" ] && grep -q '^# cowfs-hook' ".git/hooks/$h" || fail "hook $h not installed"
done
cmp -s .git/hooks/post-checkout.local "$T/own-hook" && [ -x .git/hooks/post-checkout.local ] ||
	fail "the repository's own post-checkout was not kept as post-checkout.local"
"$C" git install >/dev/null 2>&1 || fail "second install"
cmp -s .git/hooks/post-checkout.local "$T/own-hook" && [ ! -e .git/hooks/post-checkout.local.local ] ||
	fail "a second install changed the kept hook"
pass "install: three hooks, the repository's own post-checkout kept as post-checkout.local; install twice is the same"

# --- checkout -b: a database branch of its own ------------------------------------------
git checkout -b feature/inventory-split 2>"$T/err" || fail "git checkout -b failed: $(cat "$T/err")"
has_branch feature-inventory-split || fail "no database branch feature-inventory-split: $(branches); $(cat "$T/err")"
parent=$("$C" branch list --json --store "$store" | python3 -c 'import json,sys
print([b["parent"] for b in json.load(sys.stdin)["branches"] if b["name"] == "feature-inventory-split"][0])')
[ "$parent" = main ] || fail "feature-inventory-split has parent '$parent', not main"
[ "$(cowfs_lines "$T/err" | wc -l)" = 1 ] && cowfs_lines "$T/err" | grep -q "feature-inventory-split (new, from main)" ||
	fail "the hook did not say what it did in one line: $(cat "$T/err")"
grep -q "own hook: .* 1$" "$T/own-hook.log" || fail "the repository's own post-checkout did not run"
pass "git checkout -b feature/inventory-split: database branch feature-inventory-split from main; $(cowfs_lines "$T/err")"

"$C" pg env feature-inventory-split --format dotenv --store "$store" >"$T/want-env" || fail "cowfs pg env"
sed -n '/^# >>> cowfs/,/^# <<< cowfs$/p' .env | sed '1d;$d' | cmp -s - "$T/want-env" ||
	fail "the env file's block is not 'cowfs pg env feature-inventory-split --format dotenv': $(cat .env)"
outside | cmp -s - "$T/env.orig" || fail "lines outside cowfs's block changed: $(cat .env)"
for k in PGHOST PGPORT PGDATABASE PGUSER DATABASE_URL; do [ -n "$(envval $k)" ] || fail "no $k in .env"; done
pass ".env: PGHOST, PGPORT, PGDATABASE, PGUSER, DATABASE_URL of the branch; the other lines byte for byte"

[ "$(q "SELECT string_agg(x, ',') FROM t")" = main ] || fail "the branch does not hold main's row"
q "INSERT INTO t VALUES ('feature')" || fail "insert on the branch"
url=$(envval DATABASE_URL)
[ "$("$PSQL" -X -At "$url" -c "SELECT string_agg(x, ',' ORDER BY x) FROM t")" = feature,main ] ||
	fail "DATABASE_URL does not reach the branch"
pass "psql with the env file's settings (and with DATABASE_URL) reaches the branch's own Postgres"
echo "LATER=1" >>.env # a user's line after the block
printf 'LATER=1\n' >>"$T/env.orig.after"

git checkout main 2>"$T/err" || fail "git checkout main: $(cat "$T/err")"
main_port=$("$C" pg env main --format json --store "$store" | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGPORT"])')
[ "$(envval PGPORT)" = "$main_port" ] || fail ".env names port $(envval PGPORT), main's is $main_port"
"$C" pg status main --store "$store" >/dev/null || fail "the checkout of main did not start main's Postgres"
[ "$(q "SELECT string_agg(x, ',') FROM t")" = main ] || fail "main sees the branch's row, or .env is not main's"
[ "$(grep -c '^# >>> cowfs' .env)" = 1 ] || fail "more than one cowfs block: $(cat .env)"
cat "$T/env.orig" "$T/env.orig.after" | cmp -s - <(outside) || fail "lines outside the block changed: $(cat .env)"
pass "git checkout main: .env names main (Postgres started, data without the branch's row); other lines kept"

n_before=$(branches | wc -w)
git checkout -q feature/inventory-split 2>"$T/err" || fail "checkout of the branch again"
[ "$(branches | wc -w)" = "$n_before" ] || fail "a second checkout created a branch: $(branches)"
[ "$(q "SELECT string_agg(x, ',' ORDER BY x) FROM t")" = feature,main ] || fail "the branch lost its row"
pass "checkout of an existing branch: same database branch, same data, nothing created"
git checkout -q main 2>/dev/null || fail "checkout main"

# --- names -------------------------------------------------------------------------------------
git config cowfs.onDemand true # the rest only needs Postgres when connected to
long=$(printf 'x%.0s' $(seq 1 80))
declare -A db=()
for g in a/b a-b Fix/Upper fix/upper rel.1.2 "gr$(printf '\xc3\xbc\xc3\x9f')e" "$long"; do
	git checkout -q -b "$g" 2>"$T/err" || fail "git checkout -b $g: $(cat "$T/err")"
	db[$g]=$(git config "branch.$g.cowfsDatabase") || fail "no branch.$g.cowfsDatabase: $(cat "$T/err")"
	d=${db[$g]}
	[[ $d =~ ^[a-z0-9][a-z0-9._-]*$ ]] && [ ${#d} -le 63 ] && [[ $d != *..* ]] || fail "$g -> invalid name '$d'"
	has_branch "$d" || fail "$g -> $d, which does not exist"
	[ "$(envval PGPORT)" = "$("$C" pg env "$d" --format json --store "$store" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["PGPORT"])')" ] || fail ".env does not name $d"
	git checkout -q main 2>/dev/null
done
[ "${db[a/b]}" = a-b ] && [ "${db[fix/upper]}" = fix-upper ] && [ "${db[rel.1.2]}" = rel.1.2 ] ||
	fail "plain names: a/b -> ${db[a/b]}, fix/upper -> ${db[fix/upper]}, rel.1.2 -> ${db[rel.1.2]}"
[[ ${db[a-b]} =~ ^a-b-[0-9a-f]{8}$ ]] || fail "a-b (a-b taken by a/b) -> ${db[a-b]}"
[[ ${db[Fix/Upper]} =~ ^fix-upper-[0-9a-f]{8}$ ]] || fail "Fix/Upper -> ${db[Fix/Upper]}"
[[ ${db[gr$(printf '\xc3\xbc\xc3\x9f')e]} =~ ^gr-e-[0-9a-f]{8}$ ]] || fail "unicode -> ${db[gr$(printf '\xc3\xbc\xc3\x9f')e]}"
[[ ${db[$long]} =~ ^x{54}-[0-9a-f]{8}$ ]] || fail "80 x -> ${db[$long]}"
[ "$(printf '%s\n' "${db[@]}" | sort -u | wc -l)" = "${#db[@]}" ] || fail "two git branches share a name: ${db[*]}"
git checkout -q a/b 2>/dev/null && [ "$(git config branch.a/b.cowfsDatabase)" = a-b ] && [ "$(envval PGHOST)" = "$("$C" pg env a-b --format json --store "$store" | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGHOST"])')" ] ||
	fail "a/b does not get a-b again"
[ "$(q "SELECT count(*) FROM t")" = 1 ] || fail "on-demand Postgres of a-b does not answer through .env"
git checkout -q main 2>/dev/null
for g in "${!db[@]}"; do printf '    %-24s -> %s\n' "$(printf '%s' "$g" | cut -c1-24)" "${db[$g]}"; done
pass "names valid and distinct (a/b -> a-b, a-b -> ${db[a-b]}), stable, reachable on demand"
# cowfs.ttl: new database branches expire
git config cowfs.ttl 2h
git checkout -q -b ttl/x 2>"$T/err" || fail "checkout with cowfs.ttl: $(cat "$T/err")"
left=$("$C" branch list --json --store "$store" | python3 -c 'import json,sys,time
b = [b for b in json.load(sys.stdin)["branches"] if b["name"] == "ttl-x"][0]
print(int(b["expires"] - time.time()) if b.get("expires") else "none")')
[ "$left" != none ] && [ "$left" -gt 7000 ] && [ "$left" -le 7200 ] || fail "cowfs.ttl 2h: ttl-x expires in $left s"
git config --unset cowfs.ttl && git checkout -q main 2>/dev/null
pass "cowfs.ttl 2h: the new database branch ttl-x expires in $left s"
# a database branch cowfs git did not make is never taken by name, only when paired by hand
"$C" branch create staging --from main --store "$store" >/dev/null || fail "create staging"
git checkout -q -b staging 2>/dev/null && [[ $(git config branch.staging.cowfsDatabase) =~ ^staging-[0-9a-f]{8}$ ]] ||
	fail "git branch staging took the existing database branch staging: $(git config branch.staging.cowfsDatabase)"
git checkout -q main 2>/dev/null && git branch manual && git config branch.manual.cowfsDatabase staging &&
	git checkout -q manual 2>/dev/null || fail "check out a branch paired by hand"
[ "$(envval PGPORT)" = "$("$C" pg env staging --format json --store "$store" | python3 -c 'import json,sys; print(json.load(sys.stdin)["PGPORT"])')" ] &&
	[ "$(git config cowfsDatabase.staging.gitBranch)" = manual ] && [ -z "$(git config cowfsDatabase.staging.created)" ] ||
	fail "the pairing by hand with staging was not used or recorded: $(git config --get-regexp cowfsdatabase.staging)"
git checkout -q main 2>/dev/null
pass "git branch staging gets $(git config branch.staging.cowfsDatabase), not the existing staging; a pairing set by hand is used"

# --- detached HEAD, not mounted --------------------------------------------------------------
cp .env "$T/env.before"
git checkout --detach 2>"$T/err" || fail "checkout --detach failed: $(cat "$T/err")"
[ "$(cowfs_lines "$T/err" | wc -l)" = 1 ] && cowfs_lines "$T/err" | grep -q detached ||
	fail "detached HEAD: expected one line from cowfs, got: $(cat "$T/err")"
cmp -s .env "$T/env.before" || fail "detached HEAD changed .env"
pass "detached HEAD: checkout succeeds, one line: $(cowfs_lines "$T/err")"
git checkout -q main 2>/dev/null
# a rebase detaches HEAD while it works: no message, .env stays the branch's
git checkout -q -b rb 2>/dev/null && echo r >r && git add r && git commit -q -m r && git checkout -q main 2>/dev/null &&
	echo m0 >m0 && git add m0 && git commit -q -m m0 && git checkout -q rb 2>/dev/null || fail "set up a rebase"
cp .env "$T/env.before"
git rebase main 2>"$T/err" >/dev/null || fail "git rebase: $(cat "$T/err")"
[ -z "$(cowfs_lines "$T/err")" ] && cmp -s .env "$T/env.before" || fail "rebase: cowfs said $(cat "$T/err") or changed .env"
pass "git rebase (HEAD detached meanwhile): no message, .env still names rb's database"
git checkout -q main 2>/dev/null
cp .env "$T/env.before"
mkdir -p "$T/not-mounted"
git config --unset cowfs.store && git config cowfs.mount "$T/not-mounted"
n_before=$(branches)
git checkout -b nomount 2>"$T/err" || fail "checkout with the store not mounted failed: $(cat "$T/err")"
[ "$(git branch --show-current)" = nomount ] || fail "the checkout did not happen"
[ "$(cowfs_lines "$T/err" | wc -l)" = 1 ] && cowfs_lines "$T/err" | grep -q "not a cowfs mount" ||
	fail "not mounted: expected one line from cowfs, got: $(cat "$T/err")"
cmp -s .env "$T/env.before" && [ "$(branches)" = "$n_before" ] || fail "not mounted: .env or the branches changed"
pass "store not mounted: checkout succeeds, one line: $(cowfs_lines "$T/err")"
git config --unset cowfs.mount && git config cowfs.store "$store"
git checkout -q main 2>/dev/null && git branch -q -D nomount

# --- prune ------------------------------------------------------------------------------------------
git checkout -q -b feature/merged 2>/dev/null && echo m >m && git add m && git commit -q -m m && git checkout -q main 2>/dev/null
git merge -q --no-ff -m merge feature/merged 2>"$T/err" || fail "merge"
cowfs_lines "$T/err" | grep -q "feature-merged" || fail "post-merge did not name feature-merged: $(cat "$T/err")"
pass "post-merge names the database branch of the merged git branch: $(cowfs_lines "$T/err")"
git checkout -q -b fresh 2>/dev/null && git checkout -q main 2>/dev/null # no commit of its own
git checkout -q -b keepme 2>/dev/null && git checkout -q main 2>/dev/null
uni=gr$(printf '\xc3\xbc\xc3\x9f')e
git branch -q -D rel.1.2 "$uni" keepme manual || fail "git branch -D"
has_branch rel.1.2 && has_branch "${db[$uni]}" && has_branch keepme || fail "git branch -D alone deleted a database branch"
"$C" branch set keepme --protected --store "$store" >/dev/null || fail "protect keepme"
states=$("$C" git list --json | python3 -c 'import json,sys
print(" ".join(sorted(e["database"] + "=" + e["state"].replace(" ", "_") for e in json.load(sys.stdin))))')
for want in rel.1.2=git_branch_gone feature-merged=merged_into_main keepme=git_branch_gone fresh=ok main=parent a-b=ok; do
	[[ " $states " == *" $want "* ]] || fail "cowfs git list --json: no $want in: $states"
done
pass "cowfs git list: gone, merged, ok and the parent told apart"
all_before=$(branches)
"$C" git prune --dry-run >"$T/dry" 2>&1 || fail "prune --dry-run: $(cat "$T/dry")"
sed 's/^/    /' "$T/dry"
[ "$(branches)" = "$all_before" ] || fail "prune --dry-run deleted something"
[ "$(grep -c '^would delete' "$T/dry")" = 3 ] &&
	grep -q "^would delete database branch rel.1.2 (git branch rel.1.2 is gone)" "$T/dry" &&
	grep -q "^would delete database branch ${db[$uni]} " "$T/dry" &&
	grep -q "^would delete database branch feature-merged (git branch feature/merged is merged into main)" "$T/dry" &&
	grep -q "^would keep database branch keepme .*: protected" "$T/dry" &&
	grep -q "^would forget the pairing of staging (git branch manual is gone)" "$T/dry" || fail "prune --dry-run listed: $(cat "$T/dry")"
pass "prune --dry-run: lists rel.1.2, ${db[$uni]}, feature-merged; keeps protected keepme and staging (made by hand); deletes nothing"
"$C" git prune >"$T/out" 2>&1 || fail "prune: $(cat "$T/out")"
for d in rel.1.2 "${db[$uni]}" feature-merged; do ! has_branch "$d" || fail "prune left $d"; done
for d in keepme fresh a-b "${db[a-b]}" feature-inventory-split main staging; do has_branch "$d" || fail "prune deleted $d"; done
[ -z "$(git config cowfsDatabase.staging.gitBranch)" ] || fail "the pairing of staging with the deleted git branch manual stays"
[ -z "$(git config --get-regexp '^cowfsdatabase\.rel\.1\.2\.')" ] || fail "the pairing of rel.1.2 is still recorded"
"$C" git prune --dry-run >"$T/dry" 2>&1 && ! grep -q '^would delete' "$T/dry" || fail "a second prune would still delete: $(cat "$T/dry")"
pass "prune deleted them; protected keepme, fresh (no commit of its own) and live branches kept"

# --- autoPrune: rename keeps, delete deletes -------------------------------------------------
git config cowfs.autoPrune true
git branch -m a/b renamed/ab || fail "git branch -m"
git branch -q -D a-b || fail "git branch -D a-b"
gone=${db[a-b]}
for _ in $(seq 1 300); do has_branch "$gone" || break; sleep 0.1; done
! has_branch "$gone" || fail "cowfs.autoPrune: $gone not deleted 30 s after git branch -D a-b"
# the pairing record follows the rename once git is done (the hook waits for it)
for _ in $(seq 1 300); do [ "$(git config cowfsDatabase.a-b.gitBranch)" = renamed/ab ] && break; sleep 0.1; done
has_branch a-b && [ "$(git config branch.renamed/ab.cowfsDatabase)" = a-b ] &&
	[ "$(git config cowfsDatabase.a-b.gitBranch)" = renamed/ab ] || fail "git branch -m lost or did not move a-b"
pass "cowfs.autoPrune: git branch -D a-b deleted $gone; git branch -m a/b renamed/ab kept a-b and moved its pairing"
git config cowfs.autoPrune false

# --- core.hooksPath ------------------------------------------------------------------------------
r2=$T/repo2
git init -q -b main "$r2" && git -C "$r2" commit -q --allow-empty -m init || fail "git init repo2"
git -C "$r2" config core.hooksPath .githooks && git -C "$r2" config cowfs.store "$store" &&
	git -C "$r2" config cowfs.onDemand true && git -C "$r2" config cowfs.envFile conf/db.env
mkdir -p "$r2/conf"
"$C" git install --repo "$r2" >/dev/null || fail "install with core.hooksPath"
[ -x "$r2/.githooks/post-checkout" ] && [ ! -e "$r2/.git/hooks/post-checkout" ] || fail "hooks not in core.hooksPath"
git -C "$r2" checkout -q -b hp/x 2>"$T/err" || fail "checkout in repo2"
has_branch hp-x && grep -q '^PGPORT=' "$r2/conf/db.env" || fail "core.hooksPath hook did not run: $(cat "$T/err")"
pass "core.hooksPath: hooks installed there and run; cowfs.envFile conf/db.env written"

# --- uninstall -------------------------------------------------------------------------------------
"$C" git uninstall >"$T/out" 2>&1 || fail "uninstall: $(cat "$T/out")"
cmp -s .git/hooks/post-checkout "$T/own-hook" && [ -x .git/hooks/post-checkout ] || fail "own hook not restored"
[ ! -e .git/hooks/post-checkout.local ] && [ ! -e .git/hooks/post-merge ] && [ ! -e .git/hooks/reference-transaction ] ||
	fail "uninstall left hooks: $(ls .git/hooks | grep -v sample)"
cp .env "$T/env.before"
: >"$T/own-hook.log"
git checkout -q -b after-uninstall 2>"$T/err" || fail "checkout after uninstall"
cmp -s .env "$T/env.before" && ! has_branch after-uninstall && [ -z "$(cowfs_lines "$T/err")" ] ||
	fail "cowfs still acts after uninstall"
grep -q "own hook:" "$T/own-hook.log" || fail "the restored hook does not run"
pass "uninstall: the repository's own hook is back byte for byte and runs alone"

cd "$T" || fail "cd"
for d in "$mnt"/*/; do [ -f "$d/postmaster.pid" ] && { "$C" pg stop "$(basename "$d")" --store "$store" >/dev/null || fail "stop $d"; }; done
cowfs_umount "$mnt" || fail "umount"
echo "ok: git.sh: all checks passed"
