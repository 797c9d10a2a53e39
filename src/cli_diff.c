#include "cli_diff.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "pg.h"
#include "ref.h"
#include "schemadiff.h"
#include "subcmd.h"
#include "util.h"

#define OUTPUT_MAX (256u << 20) /* the most we read of a dump or query */

/* One branch being compared, with a Postgres to ask. */
struct side {
	const char *name;
	const char *store;
	char datadir[4200], sockdir[512], bindir[4096], user[64];
	uint16_t port;
	uid_t owner;
	bool started;   /* we started its Postgres, and stop it at the end */
	bool up;        /* reachable */
};

static int usage_error(const char *msg)
{
	cow_err("%s (usage: cowfs diff [--schema] [--data] A B [--dbname DB] [--markdown | --json] [--exit-code])", msg);
	return 2;
}

/* pg.info of S into S; -1 after a message. */
static int side_info(struct side *s, json_t **ret_pg)
{
	json_t *reply = request(s->store, json_pack("{s:s, s:s, s:b}", "cmd", "pg.info", "name", s->name, "assign", 0));
	if (!reply)
		return -1;
	json_t *pg = json_object_get(reply, "pg");
	if (!json_is_true(json_object_get(reply, "ok")) || !pg) {
		json_t *e = json_object_get(reply, "error");
		cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
		json_decref(reply);
		return -1;
	}
	const char *v;
	snprintf(s->datadir, sizeof s->datadir, "%s", (v = json_string_value(json_object_get(pg, "data_dir"))) ? v : "");
	snprintf(s->sockdir, sizeof s->sockdir, "%s", (v = json_string_value(json_object_get(pg, "socket_dir"))) ? v : "");
	s->port = (uint16_t)json_integer_value(json_object_get(pg, "port"));
	s->owner = (uid_t)json_integer_value(json_object_get(pg, "owner"));
	*ret_pg = json_incref(pg);
	json_decref(reply);
	return 0;
}

/* Make S's Postgres reachable: running, on demand, or started by us. */
static int side_up(struct side *s)
{
	json_t *pg;
	if (side_info(s, &pg) < 0)
		return -1;
	const char *state = json_string_value(json_object_get(pg, "state"));
	bool cluster = json_is_true(json_object_get(pg, "cluster"));
	bool on_demand = json_is_true(json_object_get(pg, "on_demand"));
	bool running = state && (strcmp(state, "running") == 0 || strcmp(state, "starting") == 0);
	json_decref(pg);
	if (!cluster) {
		cow_err("branch '%s' holds no Postgres cluster to compare", s->name);
		return -1;
	}
	char version[16];
	if (cow_pg_cluster_version(s->datadir, version, sizeof version) < 0 ||
	    cow_pg_bindir(NULL, version, s->bindir, sizeof s->bindir) < 0)
		return -1;
	user_name(s->owner, s->user, sizeof s->user);
	if (!running && !on_demand) {
		const char *argv[] = { "pg", "start", s->name, "--store", s->store, NULL };
		char *err = NULL;
		int r = cow_subcmd_run(argv, NULL, &err);
		if (r != 0) {
			char why[512];
			cow_subcmd_reason(err, why, sizeof why);
			cow_err("cannot start Postgres on branch '%s' to compare it: %s", s->name, why);
			free(err);
			return -1;
		}
		free(err);
		s->started = true;
		if (side_info(s, &pg) < 0)
			return -1;
		json_decref(pg);
	}
	s->up = true;
	return 0;
}

static void side_down(struct side *s)
{
	if (!s->started)
		return;
	const char *argv[] = { "pg", "stop", s->name, "--store", s->store, NULL };
	char *err = NULL;
	if (cow_subcmd_run(argv, NULL, &err) != 0) {
		char why[512];
		cow_subcmd_reason(err, why, sizeof why);
		cow_warn("Postgres on branch '%s', started for the comparison, did not stop: %s", s->name, why);
	}
	free(err);
	s->started = false;
}

/* Run PROG (psql, pg_dump) with ARGS as S's owner against database DB;
 * its standard output into *RET (malloc'd).  -1 after a message. */
static int side_run(const struct side *s, const char *prog, const char *db, const char *const *args, char **ret)
{
	char path[4200], port[8], out_name[] = "/tmp/cowfs-diff.XXXXXX", err_name[] = "/tmp/cowfs-diff.XXXXXX";
	snprintf(path, sizeof path, "%s/%s", s->bindir, prog);
	snprintf(port, sizeof port, "%u", (unsigned)s->port);
	const char *argv[32] = { path };
	size_t n = 1;
	if (strcmp(prog, "psql") == 0)
		argv[n++] = "-X"; /* no ~/.psqlrc */
	const char *conn[] = { "-h", s->sockdir, "-p", port, "-U", s->user, "-d", db };
	for (size_t i = 0; i < COW_ARRAY_SIZE(conn); i++)
		argv[n++] = conn[i];
	for (size_t i = 0; args[i] && n < COW_ARRAY_SIZE(argv) - 1; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	int out = mkstemp(out_name), err = out >= 0 ? mkstemp(err_name) : -1;
	if (out < 0 || err < 0) {
		cow_err("cannot make a temporary file: %s", strerror(errno));
		if (out >= 0) {
			close(out);
			unlink(out_name);
		}
		return -1;
	}
	unlink(out_name);
	unlink(err_name);
	struct cow_pg_user u;
	int r = cow_pg_user_get(s->owner, &u);
	if (r == 0)
		r = cow_pg_run(&u, s->bindir, (char *const *)argv, NULL, out, err);
	char *text = NULL;
	if (r != 0) {
		char buf[1024] = "";
		ssize_t k = pread(err, buf, sizeof buf - 1, 0);
		buf[k > 0 ? k : 0] = 0;
		char *nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
		cow_err("%s on branch '%s' failed: %s", prog, s->name, buf[0] ? buf : r < 0 ? strerror(-r) : "no message");
	} else {
		off_t len = lseek(out, 0, SEEK_END);
		if (len < 0 || (uint64_t)len > OUTPUT_MAX || !(text = malloc((size_t)len + 1)) ||
		    pread(out, text, (size_t)len, 0) != len) {
			cow_err("cannot read what %s wrote", prog);
			free(text);
			text = NULL;
			r = -1;
		} else {
			text[len] = 0;
		}
	}
	close(out);
	close(err);
	*ret = text;
	return r == 0 ? 0 : -1;
}

static int sql(const struct side *s, const char *db, const char *query, char **ret)
{
	const char *args[] = { "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", query, NULL };
	return side_run(s, "psql", db, args, ret);
}

/* ---- schema ------------------------------------------------------------------ */

/* diff -u of two texts, labelled; malloc'd ("" if equal), NULL on failure. */
static char *unified(const char *a, const char *la, const char *b, const char *lb)
{
	char fa[] = "/tmp/cowfs-diff.XXXXXX", fb[] = "/tmp/cowfs-diff.XXXXXX";
	int da = mkstemp(fa), db = da >= 0 ? mkstemp(fb) : -1;
	char *out = NULL;
	if (da < 0 || db < 0 || write(da, a, strlen(a)) != (ssize_t)strlen(a) || write(db, b, strlen(b)) != (ssize_t)strlen(b)) {
		cow_err("cannot write temporary files: %s", strerror(errno));
		goto done;
	}
	/* the labels are branch names: [a-z0-9._-] only, safe in a command line */
	char cmd[512];
	snprintf(cmd, sizeof cmd, "diff -u --label '%s' --label '%s' %s %s", la, lb, fa, fb);
	FILE *p = popen(cmd, "r");
	if (!p) {
		cow_err("cannot run diff: %s", strerror(errno));
		goto done;
	}
	size_t len = 0, cap = 4096;
	out = malloc(cap);
	size_t k;
	while (out && (k = fread(out + len, 1, cap - len - 1, p)) > 0) {
		len += k;
		if (len + 1 == cap) {
			char *n = realloc(out, cap *= 2);
			if (!n) {
				free(out);
				out = NULL;
			}
			out = n;
		}
	}
	int st = pclose(p);
	if (out)
		out[len] = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) > 1) {
		cow_err("diff failed (is diffutils installed?)");
		free(out);
		out = NULL;
	}
done:
	if (da >= 0) {
		close(da);
		unlink(fa);
	}
	if (db >= 0) {
		close(db);
		unlink(fb);
	}
	return out;
}

static int schema_diff(struct side *a, struct side *b, const char *db, bool markdown, json_t *json, bool *differs)
{
	const char *args[] = { "--schema-only", "--no-owner", "--no-privileges", NULL };
	char *da = NULL, *dbb = NULL, *na = NULL, *nb = NULL, *u = NULL, *sum = NULL;
	int r = -1;
	if (side_run(a, "pg_dump", db, args, &da) < 0 || side_run(b, "pg_dump", db, args, &dbb) < 0)
		goto out;
	if (!(na = cow_schema_normalize(da)) || !(nb = cow_schema_normalize(dbb)) || !(sum = cow_schema_summary(na, nb)) ||
	    !(u = unified(na, a->name, nb, b->name)))
		goto out;
	*differs |= u[0] != 0;
	if (json) {
		json_object_set_new(json, "schema", json_pack("{s:s, s:s}", "summary", sum, "diff", u));
	} else if (markdown) {
		printf("### Schema: `%s` → `%s` (database `%s`)\n\n", a->name, b->name, db);
		if (!u[0]) {
			printf("No schema changes.\n\n");
		} else {
			printf("%s\n<details><summary>Unified diff</summary>\n\n```diff\n%s```\n\n</details>\n\n", sum, u);
		}
	} else {
		fputs(u, stdout);
	}
	r = 0;
out:
	free(da);
	free(dbb);
	free(na);
	free(nb);
	free(u);
	free(sum);
	return r;
}

/* ---- data -------------------------------------------------------------------- */

struct rel {
	char db[64], name[256], kind[16];
	uint64_t pages, bytes_a, bytes_b;
};

struct rels {
	struct rel *v;
	size_t n, cap;
};

static struct rel *rel_get(struct rels *rs, const char *db, const char *name, const char *kind)
{
	for (size_t i = 0; i < rs->n; i++)
		if (strcmp(rs->v[i].db, db) == 0 && strcmp(rs->v[i].name, name) == 0)
			return &rs->v[i];
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 32;
		struct rel *v = realloc(rs->v, cap * sizeof *v);
		if (!v)
			return NULL;
		rs->v = v;
		rs->cap = cap;
	}
	struct rel *r = &rs->v[rs->n++];
	memset(r, 0, sizeof *r);
	snprintf(r->db, sizeof r->db, "%s", db);
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->kind, sizeof r->kind, "%s", kind);
	return r;
}

/* A side's catalog: "dboid|datname" lines, and per database "filenode|name|kind". */
struct catalog {
	char *dbs;
	struct {
		unsigned long oid;
		char *rels;
	} per[64];
	size_t n;
};

static void catalog_free(struct catalog *c)
{
	free(c->dbs);
	for (size_t i = 0; i < c->n; i++)
		free(c->per[i].rels);
}

/* Find FIELD-separated LINE whose first field is KEY in TEXT; copy fields 2 and 3. */
static bool lookup_line(const char *text, const char *key, char *f2, size_t n2, char *f3, size_t n3)
{
	size_t kl = strlen(key);
	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		if (l > kl && memcmp(p, key, kl) == 0 && p[kl] == '|') {
			const char *a = p + kl + 1, *end = p + l, *bar = memchr(a, '|', (size_t)(end - a));
			snprintf(f2, n2, "%.*s", (int)((bar ? bar : end) - a), a);
			if (f3)
				snprintf(f3, n3, "%.*s", bar ? (int)(end - bar - 1) : 0, bar ? bar + 1 : "");
			return true;
		}
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

static const char *kind_name(const char *k)
{
	return !strcmp(k, "r") ? "table" : !strcmp(k, "i") ? "index" : !strcmp(k, "t") ? "toast" : !strcmp(k, "S") ? "sequence"
	       : !strcmp(k, "m") ? "matview" : !strcmp(k, "p") ? "partitioned" : "relation";
}

/* The relations of database DBOID (0: shared catalogs) on side S. */
static const char *catalog_rels(struct side *s, struct catalog *c, unsigned long dboid, const char *default_db)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->per[i].oid == dboid)
			return c->per[i].rels;
	if (!s->up || c->n == COW_ARRAY_SIZE(c->per))
		return NULL;
	char key[32], dbname[256] = "";
	snprintf(key, sizeof key, "%lu", dboid);
	if (dboid == 0)
		snprintf(dbname, sizeof dbname, "%s", default_db);
	else if (!c->dbs || !lookup_line(c->dbs, key, dbname, sizeof dbname, NULL, 0))
		return NULL;
	char *rels = NULL;
	if (sql(s, dbname,
		"SELECT pg_relation_filenode(c.oid), n.nspname || '.' || c.relname, c.relkind FROM pg_class c "
		"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pg_relation_filenode(c.oid) IS NOT NULL",
		&rels) < 0)
		rels = NULL;
	c->per[c->n].oid = dboid;
	c->per[c->n].rels = rels;
	c->n++;
	return rels;
}

static int cmp_rel(const void *x, const void *y)
{
	const struct rel *a = x, *b = y;
	bool fa = !strcmp(a->kind, "files"), fb = !strcmp(b->kind, "files");
	if (fa != fb)
		return fa - fb; /* relations first, then directories of files */
	if (a->pages != b->pages)
		return a->pages < b->pages ? 1 : -1;
	return strcmp(a->name, b->name);
}

static int data_diff(struct cli_target *t, const char *store, struct side *a, struct side *b, const char *db,
		     bool markdown, json_t *json, bool *differs)
{
	/* What Postgres changed sits in its shared buffers until a checkpoint
	 * writes it to the files the block maps describe. */
	struct side *sides[2] = { a, b };
	for (int k = 0; k < 2; k++) {
		char *out = NULL;
		if (sides[k]->up && sql(sides[k], db, "CHECKPOINT", &out) < 0)
			cow_warn("pages Postgres on '%s' has not written yet are not compared", sides[k]->name);
		free(out);
	}
	json_t *reply = request(store, json_pack("{s:s, s:s, s:s}", "cmd", "diff.blocks", "a", a->name, "b", b->name));
	if (!reply)
		return -1;
	if (!json_is_true(json_object_get(reply, "ok"))) {
		json_t *e = json_object_get(reply, "error");
		cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
		json_decref(reply);
		return -1;
	}
	struct catalog ca = { 0 }, cb = { 0 };
	const char *dbq = "SELECT oid, datname FROM pg_database";
	if (a->up && sql(a, db, dbq, &ca.dbs) < 0)
		ca.dbs = NULL;
	if (b->up && sql(b, db, dbq, &cb.dbs) < 0)
		cb.dbs = NULL;
	struct rels rs = { 0 };
	size_t i;
	json_t *f;
	int r = 0;
	json_array_foreach(json_object_get(reply, "files"), i, f) {
		const char *path = json_string_value(json_object_get(f, "path"));
		uint64_t pages = (uint64_t)json_integer_value(json_object_get(f, "changed_blocks"));
		uint64_t sa = (uint64_t)json_integer_value(json_object_get(f, "size_a"));
		uint64_t sb = (uint64_t)json_integer_value(json_object_get(f, "size_b"));
		unsigned long dboid = 0, node = 0;
		char fork[16] = "";
		int used = 0;
		bool relfile = (sscanf(path, "base/%lu/%lu%n", &dboid, &node, &used) == 2 ||
				(dboid = 0, sscanf(path, "global/%lu%n", &node, &used) == 1)) &&
			       (path[used] == 0 || path[used] == '.' || path[used] == '_');
		if (relfile && path[used] == '_')
			sscanf(path + used, "_%15[a-z]", fork);
		char dbname[64] = "-", name[256], kind[16] = "files";
		if (relfile) {
			char key[32], found[256] = "", k[8] = "";
			snprintf(key, sizeof key, "%lu", node);
			const char *rb = catalog_rels(b, &cb, dboid, db), *ra = NULL;
			bool ok = rb && lookup_line(rb, key, found, sizeof found, k, sizeof k);
			if (!ok && (ra = catalog_rels(a, &ca, dboid, db)))
				ok = lookup_line(ra, key, found, sizeof found, k, sizeof k);
			if (dboid) {
				char okey[32];
				snprintf(okey, sizeof okey, "%lu", dboid);
				if (!((cb.dbs && lookup_line(cb.dbs, okey, dbname, sizeof dbname, NULL, 0)) ||
				      (ca.dbs && lookup_line(ca.dbs, okey, dbname, sizeof dbname, NULL, 0))))
					snprintf(dbname, sizeof dbname, "oid %lu", dboid);
			} else {
				snprintf(dbname, sizeof dbname, "(shared)");
			}
			if (ok) {
				snprintf(name, sizeof name, "%s", found);
				snprintf(kind, sizeof kind, "%s", kind_name(k));
			} else {
				snprintf(name, sizeof name, "filenode %lu", node);
				snprintf(kind, sizeof kind, "unknown");
			}
		} else {
			const char *slash = strchr(path, '/');
			snprintf(name, sizeof name, "%.*s", slash ? (int)(slash - path) : (int)strlen(path), path);
		}
		struct rel *rel = rel_get(&rs, dbname, name, kind);
		if (!rel) {
			r = -1;
			break;
		}
		rel->pages += pages;
		if (!fork[0]) { /* the main fork's bytes are the relation's size */
			rel->bytes_a += sa;
			rel->bytes_b += sb;
		}
	}
	if (r == 0 && rs.n)
		qsort(rs.v, rs.n, sizeof *rs.v, cmp_rel);
	*differs |= rs.n > 0;
	if (r == 0 && json) {
		json_t *arr = json_array();
		for (i = 0; i < rs.n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "database", rs.v[i].db,
							     "relation", rs.v[i].name, "kind", rs.v[i].kind, "changed_pages",
							     (json_int_t)rs.v[i].pages, "bytes_a", (json_int_t)rs.v[i].bytes_a,
							     "bytes_b", (json_int_t)rs.v[i].bytes_b));
		json_object_set_new(json, "data", arr);
	} else if (r == 0) {
		if (markdown)
			printf("### Data: `%s` → `%s` (8 KiB pages that differ, from the block maps)\n\n"
			       "| database | relation | kind | pages changed | size in `%s` | size in `%s` |\n"
			       "| --- | --- | --- | ---: | ---: | ---: |\n",
			       a->name, b->name, a->name, b->name);
		else
			printf("%-12s %-48s %-9s %8s %11s %11s\n", "DATABASE", "RELATION", "KIND", "PAGES", a->name, b->name);
		for (i = 0; i < rs.n; i++) {
			char ha[32], hb[32];
			cli_bytes(rs.v[i].bytes_a, ha, sizeof ha);
			cli_bytes(rs.v[i].bytes_b, hb, sizeof hb);
			if (markdown)
				printf("| %s | `%s` | %s | %llu | %s | %s |\n", rs.v[i].db, rs.v[i].name, rs.v[i].kind,
				       (unsigned long long)rs.v[i].pages, ha, hb);
			else
				printf("%-12s %-48s %-9s %8llu %11s %11s\n", rs.v[i].db, rs.v[i].name, rs.v[i].kind,
				       (unsigned long long)rs.v[i].pages, ha, hb);
		}
		if (markdown && !rs.n)
			printf("| | no difference | | | | |\n");
		if (markdown)
			printf("\n");
	}
	(void)t;
	free(rs.v);
	catalog_free(&ca);
	catalog_free(&cb);
	json_decref(reply);
	return r;
}

int cmd_diff(int argc, char **argv)
{
	struct cli_target t = { 0 };
	bool schema = false, data = false, markdown = false, exit_code = false;
	const char *names[2] = { NULL, NULL }, *db = "postgres";
	int n = 0;
	for (int i = 1; i < argc; i++) {
		if (cli_target_option(&t, argc, argv, &i))
			continue;
		if (strcmp(argv[i], "--schema") == 0)
			schema = true;
		else if (strcmp(argv[i], "--data") == 0)
			data = true;
		else if (strcmp(argv[i], "--markdown") == 0)
			markdown = true;
		else if (strcmp(argv[i], "--exit-code") == 0)
			exit_code = true;
		else if (strcmp(argv[i], "--dbname") == 0 && i + 1 < argc)
			db = argv[++i];
		else if (argv[i][0] == '-')
			return usage_error("unknown option, or an option without its value");
		else if (n == 2)
			return usage_error("two branches, A and B");
		else
			names[n++] = argv[i];
	}
	if (n != 2)
		return usage_error("name two branches, A and B");
	if (markdown && t.json)
		return usage_error("--markdown or --json, not both");
	for (int k = 0; k < 2; k++) {
		const char *why = cow_ref_check_name(names[k]);
		if (why) {
			cow_err("bad branch name '%s': %s", names[k], why);
			return 1;
		}
	}
	if (!schema && !data)
		schema = data = true;
	char store[4096];
	if (find_store(t.store, t.mnt, store, sizeof store) < 0)
		return 1;
	struct side a = { .name = names[0], .store = store }, b = { .name = names[1], .store = store };
	bool differs = false;
	json_t *json = t.json ? json_object() : NULL;
	int r = 0;
	/* Postgres on both for the schema and for naming relations; the data
	 * diff alone goes on without it, naming files instead */
	if (side_up(&a) < 0 || side_up(&b) < 0)
		r = schema ? -1 : 0;
	if (r == 0 && schema)
		r = schema_diff(&a, &b, db, markdown, json, &differs);
	if (r == 0 && data)
		r = data_diff(&t, store, &a, &b, db, markdown, json, &differs);
	side_down(&a);
	side_down(&b);
	if (r == 0 && json) {
		char *text = json_dumps(json, JSON_COMPACT);
		puts(text ? text : "{}");
		free(text);
	}
	json_decref(json);
	if (r < 0)
		return 1;
	return exit_code && differs ? 1 : 0;
}
