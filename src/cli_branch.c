#include "cli_branch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_store.h"
#include "pgcli.h"
#include "util.h"

static int usage_error(const char *msg)
{
	cow_err("%s (see 'cowfs help' or cowfs(1))", msg);
	return 2;
}

/* "in" how long until T, "-" for none, "expired" */
static const char *until(int64_t t, char *buf, size_t n)
{
	long s = (long)(t - time(NULL));
	return !t ? "-" : s <= 0 ? "expired" : cli_duration(s, buf, n);
}

static const char *age(int64_t t, char *buf, size_t n) { return cli_duration((long)(time(NULL) - t), buf, n); }

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t jint(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static void print_row(json_t *b, const char *prefix, const char *name)
{
	char label[640], user[64];
	snprintf(label, sizeof label, "%s%s", prefix, name);
	/* the tree's box-drawing characters take 3 bytes but one column */
	int extra = 0;
	for (const char *p = prefix; *p; p++)
		extra += ((unsigned char)*p & 0xc0) == 0x80;
	char a[32], u[32];
	printf("%-*s %-10s %6s %8s", 32 + extra, label, user_name((uint32_t)jint(b, "owner"), user, sizeof user),
	       age(jint(b, "created"), a, sizeof a), until(jint(b, "expires"), u, sizeof u));
	json_t *by = json_object_get(b, "bytes");
	if (by) {
		char l[32], o[32], s[32];
		printf(" %10s %10s %10s", cli_bytes((uint64_t)jint(by, "logical"), l, sizeof l),
		       cli_bytes((uint64_t)jint(by, "own"), o, sizeof o), cli_bytes((uint64_t)jint(by, "shared"), s, sizeof s));
	}
	printf("%s\n", json_is_true(json_object_get(b, "protected")) ? " protected" : "");
}

/* Give every branch of the list reply LIST a "bytes" object from df. */
static int add_bytes(const struct cli_target *t, json_t *list)
{
	char store[4096];
	if (find_store(t->store, t->mnt, store, sizeof store) < 0)
		return -1;
	json_t *df = cli_store_df(store);
	if (!df)
		return -1;
	size_t i, k;
	json_t *b, *r;
	json_array_foreach(json_object_get(list, "branches"), i, b) {
		json_array_foreach(json_object_get(df, "refs"), k, r) {
			if (strcmp(jstr(r, "kind") ? jstr(r, "kind") : "", "branch") != 0 ||
			    strcmp(jstr(r, "name") ? jstr(r, "name") : "", jstr(b, "name")) != 0)
				continue;
			json_object_set_new(b, "bytes", json_pack("{s:I, s:I, s:I}", "logical", jint(r, "logical_bytes"), "own",
								  jint(r, "own_bytes"), "shared", jint(r, "shared_bytes")));
		}
	}
	json_decref(df);
	return 0;
}

/* Is B a child of PARENT; or, PARENT NULL, a root (no parent, or one gone)? */
static bool under(json_t *arr, json_t *b, const char *parent)
{
	const char *p = jstr(b, "parent");
	if (parent)
		return p && strcmp(p, parent) == 0;
	size_t j;
	json_t *o;
	json_array_foreach(arr, j, o) if (p && strcmp(jstr(o, "name"), p) == 0) return false;
	return true;
}

/* Print the children of PARENT (NULL: the roots) under PREFIX, depth first. */
static void print_tree(json_t *arr, const char *parent, const char *prefix, int depth)
{
	size_t i, n = 0, k = 0;
	json_t *b;
	json_array_foreach(arr, i, b) n += under(arr, b, parent);
	json_array_foreach(arr, i, b) {
		if (!under(arr, b, parent))
			continue;
		bool last = ++k == n;
		char here[512], below[512]; /* 64 levels of 6 bytes at most */
		snprintf(here, sizeof here, "%s%s", prefix, !parent ? "" : last ? "└─ " : "├─ ");
		snprintf(below, sizeof below, "%s%s", prefix, !parent ? "" : last ? "   " : "│  ");
		print_row(b, here, jstr(b, "name"));
		if (depth < 64)
			print_tree(arr, jstr(b, "name"), below, depth + 1);
	}
}

/* --ttl D, --expire-at T, --no-expiry, --protected, --unprotected: into REQ. */
static int expiry_option(json_t *req, int argc, char **argv, int *i, int *ret)
{
	const char *a = argv[*i];
	int64_t v;
	*ret = 0;
	if (strcmp(a, "--ttl") == 0 && *i + 1 < argc) {
		if (cow_parse_duration(argv[++*i], &v) < 0 || v == 0) {
			*ret = usage_error("--ttl takes a duration such as 90m, 8h or 7d");
			return 1;
		}
		json_object_set_new(req, "expires", json_integer(time(NULL) + v));
	} else if (strcmp(a, "--expire-at") == 0 && *i + 1 < argc) {
		if (parse_when(argv[++*i], &v) < 0) {
			*ret = usage_error("--expire-at takes YYYY-MM-DD[THH:MM[:SS]][Z] or @UNIXTIME");
			return 1;
		}
		json_object_set_new(req, "expires", json_integer(v));
	} else if (strcmp(a, "--no-expiry") == 0) {
		json_object_set_new(req, "expires", json_null());
	} else if (strcmp(a, "--protected") == 0) {
		json_object_set_new(req, "protected", json_true());
	} else if (strcmp(a, "--unprotected") == 0) {
		json_object_set_new(req, "protected", json_false());
	} else {
		return 0;
	}
	return 1;
}

int cmd_branch(int argc, char **argv)
{
	struct cli_target t = { 0 };
	const char *sub = argc > 1 ? argv[1] : NULL, *name = NULL, *from = NULL, *snap = NULL, *to = NULL;
	bool now = false, keep_pg = false, deleted = false, no_bytes = false;
	json_t *req = json_object();
	int bad = 0;
	if (!sub) {
		json_decref(req);
		return usage_error("branch needs a subcommand: create, list, delete, undelete, reset, restore, set");
	}
	for (int i = 2; i < argc && !bad; i++) {
		int r;
		if (cli_target_option(&t, argc, argv, &i))
			continue;
		if (expiry_option(req, argc, argv, &i, &r)) {
			bad = r;
			continue;
		}
		if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
			from = argv[++i];
		else if (strcmp(argv[i], "--from-snapshot") == 0 && i + 1 < argc)
			snap = argv[++i];
		else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
			to = argv[++i];
		else if (strcmp(argv[i], "--now") == 0)
			now = true;
		else if (strcmp(argv[i], "--keep-postgres") == 0)
			keep_pg = true;
		else if (strcmp(argv[i], "--deleted") == 0)
			deleted = true;
		else if (strcmp(argv[i], "--no-bytes") == 0)
			no_bytes = true;
		else if (argv[i][0] == '-' || name)
			bad = usage_error(argv[i][0] == '-' ? "unknown option, or an option without its value"
							   : "too many arguments");
		else
			name = argv[i];
	}
	size_t settings = json_object_size(req);
	bool creating = strcmp(sub, "create") == 0, setting = strcmp(sub, "set") == 0;
	if (!bad && settings && !creating && !setting)
		bad = usage_error("--ttl, --expire-at, --no-expiry and --protected go with create or set");
	if (!bad && (from || snap) && !creating)
		bad = usage_error("--from and --from-snapshot go with create");
	if (!bad && from && snap)
		bad = usage_error("a branch is created --from a branch or --from-snapshot, not both");
	if (!bad && to && strcmp(sub, "restore") != 0)
		bad = usage_error("--to goes with restore");
	if (!bad && (now || keep_pg) && strcmp(sub, "delete") != 0)
		bad = usage_error("--now and --keep-postgres go with delete");
	if (!bad && (deleted || no_bytes) && strcmp(sub, "list") != 0)
		bad = usage_error("--deleted and --no-bytes go with list");
	if (!bad && strcmp(sub, "list") == 0 ? name != NULL : !name)
		bad = bad ? bad : usage_error(strcmp(sub, "list") == 0 ? "list takes no name" : "name the branch");
	if (bad) {
		json_decref(req);
		return bad;
	}
	const char *cmd;
	if (strcmp(sub, "list") == 0) {
		cmd = deleted ? "branch.trash" : "branch.list";
	} else if (creating) {
		cmd = "branch.create";
		if (snap)
			json_object_set_new(req, "snapshot", json_string(snap));
		else
			json_object_set_new(req, "from", json_string(from ? from : "main"));
	} else if (strcmp(sub, "delete") == 0) {
		cmd = "branch.delete";
		json_object_set_new(req, "purge", json_boolean(now));
		json_object_set_new(req, "stop", json_boolean(!keep_pg));
	} else if (strcmp(sub, "undelete") == 0) {
		cmd = "branch.undelete";
	} else if (strcmp(sub, "reset") == 0) {
		cmd = "branch.reset";
	} else if (strcmp(sub, "restore") == 0) {
		if (!to) {
			json_decref(req);
			return usage_error("restore needs --to SNAPSHOT");
		}
		cmd = "branch.restore";
		json_object_set_new(req, "snapshot", json_string(to));
	} else if (setting) {
		if (!settings) {
			json_decref(req);
			return usage_error("set needs --ttl, --expire-at, --no-expiry, --protected or --unprotected");
		}
		cmd = "branch.set";
	} else {
		json_decref(req);
		return usage_error("unknown branch subcommand");
	}
	json_object_set_new(req, "cmd", json_string(cmd));
	if (name)
		json_object_set_new(req, "name", json_string(name));
	/* Postgres started by hand is stopped around a reset (the daemon
	 * refuses one while it runs) and started again on the same port, with
	 * the options it had (pgcli.h) */
	struct pgcli_change pgc = { .restart = false, .quiet = t.json };
	if (strcmp(cmd, "branch.reset") == 0 || strcmp(cmd, "branch.restore") == 0) {
		/* the daemon refuses to repoint a running Postgres: stop it, and
		 * start it again afterwards, on the same port */
		char store[4096];
		if (find_store(t.store, t.mnt, store, sizeof store) < 0 || pgcli_before_change(store, name, &pgc)) {
			json_decref(req);
			return 1;
		}
	}
	/* the list takes its bytes from df (a walk of the store) before printing */
	bool bytes = strcmp(cmd, "branch.list") == 0 && !no_bytes;
	struct cli_target tc = t;
	tc.json = t.json && !bytes;
	json_t *reply = cli_call(&tc, req);
	if (reply && bytes && json_is_true(json_object_get(reply, "ok")) && add_bytes(&t, reply) == 0 && t.json) {
		char *text = json_dumps(reply, JSON_COMPACT);
		puts(text ? text : "{}");
		free(text);
	}
	if (!reply || t.json || !json_is_true(json_object_get(reply, "ok"))) {
		int st = reply ? cli_status(reply) : 1;
		return pgcli_after_change(&pgc) ? 1 : st;
	}
	json_t *b = json_object_get(reply, "branch");
	if (strcmp(cmd, "branch.list") == 0) {
		printf("%-32s %-10s %6s %8s", "NAME", "OWNER", "AGE", "EXPIRES");
		if (bytes)
			printf(" %10s %10s %10s", "LOGICAL", "OWN", "SHARED");
		printf("\n");
		print_tree(json_object_get(reply, "branches"), NULL, "", 0);
	} else if (strcmp(cmd, "branch.trash") == 0) {
		json_t *arr = json_object_get(reply, "branches"), *d;
		size_t i;
		printf("%-32s %-10s %8s\n", "NAME", "OWNER", "DELETED");
		json_array_foreach(arr, i, d) {
			char user[64], a[32];
			printf("%-32s %-10s %4s ago\n", jstr(d, "name"), user_name((uint32_t)jint(d, "owner"), user, sizeof user),
			       age(jint(d, "deleted"), a, sizeof a));
		}
	} else if (creating) {
		printf("created branch %s from %s%s\n", name, snap ? "snapshot " : "", snap ? snap : from ? from : "main");
	} else if (strcmp(cmd, "branch.delete") == 0) {
		char g[32];
		if (now)
			printf("deleted branch %s\n", name);
		else
			printf("deleted branch %s; 'cowfs branch undelete %s' brings it back within %s\n", name, name,
			       cli_duration((long)jint(reply, "grace"), g, sizeof g));
	} else if (strcmp(cmd, "branch.undelete") == 0) {
		printf("branch %s is back\n", name);
	} else if (strcmp(cmd, "branch.reset") == 0) {
		printf("reset branch %s to %s\n", name, jstr(b, "parent") ? jstr(b, "parent") : "its parent");
	} else if (strcmp(cmd, "branch.restore") == 0) {
		printf("restored branch %s to snapshot %s\n", name, to);
	} else {
		printf("branch %s: ", name);
		if (jint(b, "expires")) {
			time_t e = (time_t)jint(b, "expires");
			char when[64];
			strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", localtime(&e));
			printf("expires %s", when);
		} else {
			printf("no expiry");
		}
		printf(", %s\n", json_is_true(json_object_get(b, "protected")) ? "protected" : "not protected");
	}
	int st = cli_status(reply);
	return pgcli_after_change(&pgc) ? 1 : st;
}

int cmd_snapshot(int argc, char **argv)
{
	struct cli_target t = { 0 };
	const char *sub = argc > 1 ? argv[1] : NULL, *args[2] = { NULL, NULL };
	int nargs = 0;
	if (!sub)
		return usage_error("snapshot needs a subcommand: create, list, delete");
	for (int i = 2; i < argc; i++) {
		if (cli_target_option(&t, argc, argv, &i))
			continue;
		if (argv[i][0] == '-' || nargs == 2)
			return usage_error(argv[i][0] == '-' ? "unknown option" : "too many arguments");
		args[nargs++] = argv[i];
	}
	json_t *req;
	if (strcmp(sub, "create") == 0 && nargs == 2)
		req = json_pack("{s:s, s:s, s:s}", "cmd", "snapshot.create", "branch", args[0], "name", args[1]);
	else if (strcmp(sub, "list") == 0 && nargs == 0)
		req = json_pack("{s:s}", "cmd", "snapshot.list");
	else if (strcmp(sub, "delete") == 0 && nargs == 1)
		req = json_pack("{s:s, s:s}", "cmd", "snapshot.delete", "name", args[0]);
	else
		return usage_error("usage: cowfs snapshot create BRANCH NAME | list | delete NAME");
	json_t *reply = cli_call(&t, req);
	if (!reply || t.json || !json_is_true(json_object_get(reply, "ok")))
		return reply ? cli_status(reply) : 1;
	if (strcmp(sub, "create") == 0) {
		printf("snapshot %s of branch %s taken\n", args[1], args[0]);
	} else if (strcmp(sub, "delete") == 0) {
		printf("deleted snapshot %s\n", args[0]);
	} else {
		json_t *arr = json_object_get(reply, "snapshots"), *s;
		size_t i;
		printf("%-32s %-24s %-10s %6s\n", "NAME", "BRANCH", "OWNER", "AGE");
		json_array_foreach(arr, i, s) {
			char user[64], a[32];
			printf("%-32s %-24s %-10s %6s\n", jstr(s, "name"), jstr(s, "parent") ? jstr(s, "parent") : "-",
			       user_name((uint32_t)jint(s, "owner"), user, sizeof user), age(jint(s, "created"), a, sizeof a));
		}
	}
	return cli_status(reply);
}

int cmd_reap(int argc, char **argv)
{
	struct cli_target t = { 0 };
	for (int i = 1; i < argc; i++)
		if (!cli_target_option(&t, argc, argv, &i))
			return usage_error("usage: cowfs reap [--store STORE | --mount MOUNTPOINT] [--json]");
	json_t *reply = cli_call(&t, json_pack("{s:s}", "cmd", "reap"));
	if (reply && !t.json) {
		size_t i;
		json_t *v;
		json_array_foreach(json_object_get(reply, "expired"), i, v)
			printf("expired: deleted branch %s\n", json_string_value(v));
		json_array_foreach(json_object_get(reply, "purged"), i, v)
			printf("grace period over: purged branch %s\n", json_string_value(v));
	}
	return reply ? cli_status(reply) : 1;
}
