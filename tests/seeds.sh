#!/usr/bin/env bash
# tests/seeds.sh — the developer's story end to end, as a user lives it, in a
# real git repository with cowfs's hooks, on a real mount, real Postgres 15:
#   main holds an inventory table (inventory_code, thousands of rows);
#   `git checkout -b feature/inventory-split`: .env points at the new database
#     branch feature-inventory-split;
#   the split-column migration runs there (add location_code, batch_number,
#     serial_number, fill them from inventory_code, drop inventory_code);
#     main is unchanged;
#   `cowfs diff --schema main feature-inventory-split` shows exactly the three
#     added columns and the dropped one (unified and Markdown), `cowfs diff
#     --data` names inventory, and nothing for an untouched table;
#   `cowfs branch reset` brings the old table back (the time is printed, not
#     asserted: figures belong to benchmarks), on the same connection settings;
#   `git branch -D` + `cowfs git prune` removes the database branch.
source "$(dirname "$0")/lib.sh"

C=$COWFS_BIN/cowfs
PSQL=$PGBIN/psql
command -v git >/dev/null || fail "git is not installed"
store_mounted_new
repo=$T/repo
pg_stop_branches_at_exit "$mnt"
git_test_env "$T"
db=feature-inventory-split
# q SQL: psql with the env file's settings, as the application would connect
q() { (set -a && . "$repo/.env" && "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -c "$1"); }
onmain() { "$C" pg psql --store "$store" main -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
cols() { # the columns of inventory through connection function $1
	"$1" "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'inventory'"
}

# --- main: production-shaped inventory ----------------------------------------------
"$C" pg initdb --store "$store" main >/dev/null || fail "cowfs pg initdb main"
"$C" pg start --store "$store" main >/dev/null || fail "cowfs pg start main"
onmain "CREATE TABLE inventory (id serial PRIMARY KEY, inventory_code text NOT NULL, qty integer NOT NULL);
	INSERT INTO inventory (inventory_code, qty)
	SELECT 'LOC' || (g % 50) || '-B' || (g % 977) || '-S' || g, g % 100 FROM generate_series(1, 20000) g;
	CREATE TABLE untouched (x integer); INSERT INTO untouched SELECT generate_series(1, 5000)" >/dev/null ||
	fail "fill main"
# Pages differ too where only hint bits were set, or where main had not yet
# written a page out when the branch was taken: settle main first, so that
# an untouched table is byte for byte the same on both.
{ onmain "VACUUM FREEZE" && onmain "CHECKPOINT"; } >/dev/null || fail "vacuum, checkpoint"
main_sum=$(onmain "SELECT count(*), md5(string_agg(inventory_code || qty, ',' ORDER BY id)) FROM inventory")
pass "main: inventory with 20000 rows and inventory_code; Postgres running"

# --- the repository, hooks installed --------------------------------------------------
git init -q -b main "$repo" && cd "$repo" || fail "git init"
echo app >README && git add README && git commit -q -m init || fail "first commit"
git config cowfs.store "$store"
"$C" git install >/dev/null || fail "cowfs git install"
git checkout -q -b feature/inventory-split 2>"$T/hook.err" || fail "git checkout -b"
grep -q "PGDATABASE\|PGPORT" .env || fail "no .env written by the checkout: $(cat "$T/hook.err")"
[ -d "$mnt/$db" ] || fail "no database branch $db after the checkout: $(cat "$T/hook.err")"
[ "$(q "SELECT count(*) FROM inventory")" = 20000 ] || fail ".env does not reach the branch's data"
port=$(sed -n 's/^PGPORT=//p' .env)
[ "$port" != "$("$C" pg env --store "$store" main --format dotenv | sed -n 's/^PGPORT=//p')" ] ||
	fail ".env points at main's port, not the branch's"
pass "git checkout -b feature/inventory-split: .env points at $db (port $port), which holds main's rows"

# --- the migration, on the branch only -------------------------------------------------
q "ALTER TABLE inventory ADD COLUMN location_code text, ADD COLUMN batch_number text, ADD COLUMN serial_number text;
   UPDATE inventory SET location_code = split_part(inventory_code, '-', 1),
                        batch_number = split_part(inventory_code, '-', 2),
                        serial_number = split_part(inventory_code, '-', 3);
   ALTER TABLE inventory DROP COLUMN inventory_code" || fail "migration on the branch"
[ "$(cols q)" = "id,qty,location_code,batch_number,serial_number" ] || fail "branch columns: $(cols q)"
[ "$(q "SELECT location_code || '/' || batch_number || '/' || serial_number FROM inventory WHERE id = 7")" = "LOC7/B7/S7" ] ||
	fail "the split values are wrong"
[ "$(cols onmain)" = "id,inventory_code,qty" ] || fail "main's columns changed: $(cols onmain)"
[ "$(onmain "SELECT count(*), md5(string_agg(inventory_code || qty, ',' ORDER BY id)) FROM inventory")" = "$main_sum" ] ||
	fail "main's rows changed"
pass "the split-column migration ran on the branch; main is unchanged (columns and every row)"

# --- diffs --------------------------------------------------------------------------------
"$C" diff --schema --store "$store" main "$db" >"$T/schema.diff" || fail "cowfs diff --schema"
sed 's/^/    /' "$T/schema.diff"
changes=$(grep -E '^[-+] ' "$T/schema.diff" | grep -vE '^(---|\+\+\+) ' | sort)
want=$(printf '%s\n' '+    batch_number text' '+    location_code text' '+    serial_number text' \
	'-    inventory_code text NOT NULL' | sort)
[ "$changes" = "$want" ] || fail "the schema diff is not exactly the 3 added columns and the dropped one: $changes"
pass "cowfs diff --schema: exactly +location_code +batch_number +serial_number -inventory_code"
"$C" diff --schema --markdown --store "$store" main "$db" >"$T/schema.md" || fail "diff --schema --markdown"
grep -q 'added column(s) `location_code`, `batch_number`, `serial_number`; dropped column(s) `inventory_code`' "$T/schema.md" ||
	fail "the Markdown summary does not name the columns: $(cat "$T/schema.md")"
grep -q '^```diff' "$T/schema.md" || fail "no diff block in the Markdown"
pass "cowfs diff --schema --markdown: a summary naming the columns, and the diff, ready for a pull request"
"$C" diff --data --store "$store" main "$db" >"$T/data.txt" || fail "cowfs diff --data"
sed 's/^/    /' "$T/data.txt"
grep -qE '^postgres +public\.inventory +table +[1-9]' "$T/data.txt" || fail "diff --data does not name inventory"
grep -q 'public.untouched' "$T/data.txt" && fail "diff --data names the untouched table"
"$C" diff --data --json --store "$store" main "$db" | python3 -c '
import json, sys
d = {r["relation"]: r for r in json.load(sys.stdin)["data"]}
inv = d["public.inventory"]
assert inv["kind"] == "table" and inv["changed_pages"] > 0, inv
assert "public.untouched" not in d, d' || fail "diff --data --json"
pass "cowfs diff --data names public.inventory (and not the untouched table), from the block maps"
"$C" diff --exit-code --store "$store" main main >/dev/null || fail "diff of main with itself reports a difference"
pass "diff --exit-code: a branch against itself differs in nothing"

# --- reset --------------------------------------------------------------------------------
t0=$(date +%s%N)
"$C" branch reset --store "$store" "$db" >/dev/null || fail "cowfs branch reset"
t1=$(date +%s%N)
[ "$(cols q)" = "id,inventory_code,qty" ] || fail "after reset, the branch's columns are $(cols q)"
[ "$(q "SELECT count(*), md5(string_agg(inventory_code || qty, ',' ORDER BY id)) FROM inventory")" = "$main_sum" ] ||
	fail "after reset, the branch's rows are not main's"
pass "cowfs branch reset: the old table is back in $(((t1 - t0) / 1000000)) ms (Postgres stopped and started again), same .env"

# --- the git branch goes, and so does the database --------------------------------------------
git checkout -q main 2>/dev/null || fail "checkout main"
git branch -q -D feature/inventory-split || fail "git branch -D"
"$C" git prune --dry-run | grep -q "$db" || fail "prune --dry-run does not list $db"
[ -d "$mnt/$db" ] || fail "--dry-run deleted $db"
"$C" git prune >/dev/null || fail "cowfs git prune"
[ -e "$mnt/$db" ] && fail "$db still there after cowfs git prune"
"$C" pg stop --store "$store" main >/dev/null || fail "stop main"
pass "git branch -D + cowfs git prune deleted the database branch"
echo "ok: seeds.sh: all checks passed"
