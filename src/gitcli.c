#include "gitcli.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "envfile.h"
#include "git.h"
#include "ref.h"
#include "subcmd.h"
#include "util.h"

#define HOOK_MARK "# cowfs-hook"

static const char *const HOOKS[] = { "post-checkout", "post-merge", "reference-transaction" };

struct opts {
	const char *repo, *store, *mnt, *hooks;
	bool json, dry_run;
};

struct ctx {
	const struct opts *o;
	struct cow_git *g;
	char store[PATH_MAX];
	json_t *list;                   /* the daemon's branch.list reply, once asked */
	char parent[COW_NAME_LEN + 1];  /* cowfs.parent */
	char parent_git[COW_GIT_BRANCH_MAX];           /* the git branch that uses it */
	const char *naming;             /* the git branch being named (name_taken) */
	char why[8192];                 /* what failed, one line */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cowfs git COMMAND [OPTIONS]\n"
		"  install [--hooks DIR]      install the git hooks (an existing hook is kept and runs first)\n"
		"  uninstall                  remove them and put back the hooks that were there\n"
		"  sync                       pair the checked-out branch now: what the post-checkout hook does\n"
		"  list [--json]              git branches, their database branches and their state\n"
		"  prune [--dry-run] [--json] delete the database branches of gone or merged git branches\n"
		"  hook NAME [ARGS...]        run by the installed hooks\n"
		"Options: --repo DIR (default: the current directory), --store STORE, --mount MOUNTPOINT.\n"
		"Settings (git config): cowfs.store, cowfs.mount, cowfs.parent, cowfs.parentGitBranch,\n"
		"cowfs.envFile, cowfs.onDemand, cowfs.ttl, cowfs.autoPrune.  See cowfs-git(7).\n");
}

/* snprintf for messages and for paths whose length is bounded elsewhere: a cut is fine */
static void cut(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cut(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
}

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof c->why, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- stderr of in-process calls (find_store, request), as one line ---------------- */

struct capture {
	int saved;
	FILE *f;
};

static void capture_begin(struct capture *cap)
{
	fflush(stderr);
	cap->f = tmpfile();
	cap->saved = cap->f ? dup(2) : -1;
	if (cap->saved >= 0)
		dup2(fileno(cap->f), 2);
}

static void capture_end(struct capture *cap, char *out, size_t n)
{
	out[0] = 0;
	fflush(stderr);
	if (cap->saved < 0) {
		if (cap->f)
			fclose(cap->f);
		return;
	}
	dup2(cap->saved, 2);
	close(cap->saved);
	char text[8192];
	rewind(cap->f);
	size_t got = fread(text, 1, sizeof text - 1, cap->f);
	text[got] = 0;
	fclose(cap->f);
	cow_subcmd_reason(text, out, n);
}

/* ---- settings and the store ---------------------------------------------------------- */

/* P relative to the working tree, absolute as it is. */
static void in_worktree(struct ctx *c, const char *p, char *out, size_t n)
{
	if (p[0] == '/' || !cow_git_workdir(c->g)[0])
		snprintf(out, n, "%s", p);
	else
		snprintf(out, n, "%s/%s", cow_git_workdir(c->g), p);
}

static int settings(struct ctx *c)
{
	if (cow_git_get(c->g, "cowfs.parent", c->parent, sizeof c->parent) < 0 || !c->parent[0])
		snprintf(c->parent, sizeof c->parent, "main");
	const char *why = cow_ref_check_name(c->parent);
	if (why)
		return fail(c, "git config cowfs.parent '%s': %s", c->parent, why);
	cow_git_parent_branch(c->g, c->parent_git, sizeof c->parent_git);
	return 0;
}

static int store_open(struct ctx *c)
{
	if (c->list)
		return 0;
	char cfg[PATH_MAX], abs[PATH_MAX], reason[512];
	const char *store = c->o->store, *mnt = c->o->mnt;
	if (!store && !mnt) {
		if (cow_git_get_path(c->g, "cowfs.store", cfg, sizeof cfg) == 0 && cfg[0]) {
			in_worktree(c, cfg, abs, sizeof abs);
			store = abs;
		} else if (cow_git_get_path(c->g, "cowfs.mount", cfg, sizeof cfg) == 0 && cfg[0]) {
			in_worktree(c, cfg, abs, sizeof abs);
			mnt = abs;
		}
	}
	struct capture cap;
	json_t *reply = NULL;
	capture_begin(&cap);
	int r = find_store(store, mnt, c->store, sizeof c->store);
	if (r == 0) {
		json_t *req = json_pack("{s:s}", "cmd", "branch.list");
		reply = request(c->store, req);
		json_decref(req);
	}
	capture_end(&cap, reason, sizeof reason);
	if (r < 0 || !reply)
		return fail(c, "%s", reason[0] ? reason : "no cowfs store");
	if (!json_is_true(json_object_get(reply, "ok"))) {
		json_t *e = json_object_get(reply, "error");
		fail(c, "%s", json_is_string(e) ? json_string_value(e) : "the daemon refused to list the branches");
		json_decref(reply);
		return -1;
	}
	c->list = reply;
	return 0;
}

static json_t *branch_get(struct ctx *c, const char *name)
{
	size_t i;
	json_t *b;
	json_array_foreach(json_object_get(c->list, "branches"), i, b) {
		const char *n = json_string_value(json_object_get(b, "name"));
		if (n && strcmp(n, name) == 0)
			return b;
	}
	return NULL;
}

static bool branch_protected(struct ctx *c, const char *name)
{
	json_t *b = branch_get(c, name);
	return b && json_is_true(json_object_get(b, "protected"));
}

/* Run `cowfs ARGS... --store STORE`; 0, or -1 with why = "WHAT: reason". */
static int run(struct ctx *c, char **out, const char *const *args, const char *what)
{
	const char *argv[24];
	size_t n = 0;
	while (args[n] && n < 20) {
		argv[n] = args[n];
		n++;
	}
	argv[n++] = "--store";
	argv[n++] = c->store;
	argv[n] = NULL;
	char *err = NULL, *dropped = NULL;
	int r = cow_subcmd_run(argv, out ? out : &dropped, &err);
	free(dropped);
	if (r != 0) {
		char reason[512];
		cow_subcmd_reason(err, reason, sizeof reason);
		if (r < 0)
			snprintf(reason, sizeof reason, "cannot run cowfs: %s", strerror(-r));
		else if (r == 2)
			snprintf(reason, sizeof reason, "'cowfs %s %s' refused its arguments", args[0], args[1]);
		fail(c, "%s: %s", what, reason[0] ? reason : "failed");
		if (out) {
			free(*out);
			*out = NULL;
		}
	}
	free(err);
	return r == 0 ? 0 : -1;
}

/* ---- pairing ------------------------------------------------------------------------ */

static bool name_taken(const char *db, void *arg)
{
	struct ctx *c = arg;
	struct cow_git_pair p;
	return strcmp(db, c->parent) == 0 || branch_get(c, db) || cow_git_pair_get(c->g, db, &p) == 0 ||
	       cow_git_db_claimed(c->g, db, c->naming, NULL, 0);
}

/* The database branch of git branch G, recorded (git.h). */
static int pair_for(struct ctx *c, const char *G, struct cow_git_pair *ret)
{
	char key[COW_GIT_BRANCH_MAX + 64], db[COW_NAME_LEN + 1], tip[COW_GIT_OID_HEX] = "";
	cow_git_branch_tip(c->g, G, tip);
	if ((size_t)snprintf(key, sizeof key, "branch.%s.cowfsDatabase", G) >= sizeof key)
		return fail(c, "git branch name too long");
	memset(ret, 0, sizeof *ret);
	if (cow_git_get(c->g, key, db, sizeof db) == 0 && !cow_ref_check_name(db)) {
		struct cow_git_pair rec;
		if (cow_git_pair_get(c->g, db, &rec) < 0) {
			/* set by hand: taken as it is */
			snprintf(ret->db, sizeof ret->db, "%s", db);
			snprintf(ret->git_branch, sizeof ret->git_branch, "%s", G);
			snprintf(ret->forked_at, sizeof ret->forked_at, "%s", tip);
			goto record;
		}
		char other[COW_GIT_OID_HEX];
		if (strcmp(rec.git_branch, G) == 0) {
			*ret = rec;
			return 0;
		}
		if (cow_git_branch_tip(c->g, rec.git_branch, other) < 0) {
			/* `git branch -m`: the config moved with the branch */
			*ret = rec;
			snprintf(ret->git_branch, sizeof ret->git_branch, "%s", G);
			goto record;
		}
		/* `git branch -c`: the copy gets a database of its own */
	}
	struct cow_git_pair *v;
	size_t n;
	if (cow_git_pairs(c->g, &v, &n) == 0) {
		bool found = false;
		for (size_t i = 0; i < n && !found; i++)
			if (strcmp(v[i].git_branch, G) == 0) {
				*ret = v[i];
				found = true;
			}
		free(v);
		if (found)
			goto record;
	}
	c->naming = G;
	int r = cow_git_db_name(G, name_taken, c, ret->db);
	c->naming = NULL;
	if (r < 0)
		return fail(c, "no free database branch name for git branch %s", G);
	snprintf(ret->git_branch, sizeof ret->git_branch, "%s", G);
	snprintf(ret->forked_at, sizeof ret->forked_at, "%s", tip);
record:
	if (cow_git_pair_put(c->g, ret) < 0)
		return fail(c, "cannot record database branch %s for git branch %s in the git config", ret->db, G);
	return 0;
}

/* PGPORT=N in a dotenv body. */
static unsigned env_port(const char *body)
{
	const char *p = body ? strstr(body, "PGPORT=") : NULL;
	return p && (p == body || p[-1] == '\n') ? (unsigned)strtoul(p + 7, NULL, 10) : 0;
}

static int write_env(struct ctx *c, const char *db, const char *G, const char *body, char *path, size_t pn)
{
	char cfg[PATH_MAX];
	if (cow_git_get_path(c->g, "cowfs.envFile", cfg, sizeof cfg) < 0 || !cfg[0])
		snprintf(cfg, sizeof cfg, ".env");
	in_worktree(c, cfg, path, pn);
	char *old, *text, title[COW_GIT_BRANCH_MAX + 256];
	size_t old_len, len;
	int r = cow_envfile_read(path, &old, &old_len);
	if (r < 0)
		return fail(c, "cannot read %s: %s", path, strerror(-r));
	snprintf(title, sizeof title, "database branch %s for git branch %s (written by cowfs git; edits here are replaced)",
		 db, G);
	r = cow_envfile_update(old, old_len, title, body, &text, &len);
	bool same = r == 0 && old && old_len == len && memcmp(old, text, len) == 0;
	free(old);
	if (r == -EBADMSG)
		return fail(c, "%s has a '%s' line without its '%s' line: mend it by hand", path, COW_ENVFILE_BEGIN,
			    COW_ENVFILE_END);
	if (r < 0)
		return fail(c, "cannot update %s: %s", path, strerror(-r));
	if (!same)
		r = cow_envfile_write(path, text, len);
	free(text);
	return r < 0 ? fail(c, "cannot write %s: %s", path, strerror(-r)) : !same;
}

/* Pair git branch G with its database branch, create that if need be,
 * point the env file at it, start its Postgres.  The one line that says
 * what happened goes into SUMMARY. */
static int sync_locked(struct ctx *c, const char *G, char *summary, size_t sn);
static int sync_branch(struct ctx *c, const char *G, char *summary, size_t sn)
{
	int lock = cow_git_lock(c->g);
	if (lock < 0)
		return fail(c, "cannot lock the repository's cowfs.lock: %s", strerror(-lock));
	int r = sync_locked(c, G, summary, sn);
	close(lock);
	return r;
}

static int sync_locked(struct ctx *c, const char *G, char *summary, size_t sn)
{
	if (settings(c) < 0 || store_open(c) < 0)
		return -1;
	struct cow_git_pair pair = { .created = 0 };
	bool is_parent = strcmp(G, c->parent_git) == 0;
	const char *db = c->parent;
	if (!is_parent) {
		if (pair_for(c, G, &pair) < 0)
			return -1;
		db = pair.db;
	}
	bool created = false;
	if (!branch_get(c, db)) {
		if (is_parent)
			return fail(c, "no database branch '%s' in %s for git branch %s (cowfs.parent)", db, c->store, G);
		if (!branch_get(c, c->parent))
			return fail(c, "no database branch '%s' to create '%s' from (cowfs.parent)", c->parent, db);
		char ttl[64] = "", what[COW_GIT_BRANCH_MAX + 256];
		bool has_ttl = cow_git_get(c->g, "cowfs.ttl", ttl, sizeof ttl) == 0 && ttl[0];
		const char *args[] = { "branch", "create", db, "--from", c->parent, has_ttl ? "--ttl" : NULL, ttl, NULL };
		snprintf(what, sizeof what, "cannot create database branch %s for git branch %s", db, G);
		if (run(c, NULL, args, what) < 0)
			return -1;
		created = true;
		pair.created = (int64_t)time(NULL);
		if (cow_git_pair_put(c->g, &pair) < 0)
			return fail(c, "cannot record database branch %s in the git config", db);
	}
	char *body = NULL, what[PATH_MAX + 256], path[PATH_MAX];
	const char *env_args[] = { "pg", "env", db, "--format", "dotenv", NULL };
	snprintf(what, sizeof what, "cannot get the connection settings of database branch %s", db);
	if (run(c, &body, env_args, what) < 0)
		return -1;
	int r = write_env(c, db, G, body, path, sizeof path);
	unsigned port = env_port(body);
	free(body);
	if (r < 0)
		return -1;
	bool on_demand;
	if (cow_git_get_bool(c->g, "cowfs.onDemand", false, &on_demand) < 0)
		return fail(c, "git config cowfs.onDemand: not a boolean");
	/* running already (by hand, on demand, from an earlier checkout): left as it is */
	const char *status[] = { "pg", "status", db, "--json", NULL };
	const char *start[] = { "pg", "start", db, NULL }, *od[] = { "pg", "ondemand", db, "on", NULL };
	cut(what, sizeof what, "%s names database branch %s now, but Postgres did not start", path, db);
	bool running = run(c, NULL, status, what) == 0;
	if (!running && run(c, NULL, on_demand ? od : start, what) < 0)
		return -1;
	char from[100] = "";
	if (created)
		snprintf(from, sizeof from, " (new, from %s)", c->parent);
	cut(summary, sn, "database branch %s%s for git branch %s; Postgres %s on port %u; %s %s", db, from, G,
	    running ? "running" : on_demand ? "on demand" : "started", port, path, r ? "updated" : "unchanged");
	return 0;
}

/* ---- prune ------------------------------------------------------------------------- */

enum which { PRUNE_ALL, PRUNE_GONE, PRUNE_MERGED };

/* What prune would do: an array of {database, git_branch, reason, action
 * ("delete", "keep", "forget"), kept_because}. */
static json_t *prune_plan(struct ctx *c, enum which which, const char *only_db, bool repair)
{
	json_t *plan = json_array();
	struct cow_git_pair *v;
	size_t n;
	if (cow_git_pairs(c->g, &v, &n) < 0) {
		json_decref(plan);
		fail(c, "cannot read the pairings from the git config");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		struct cow_git_pair *p = &v[i];
		char tip[COW_GIT_OID_HEX], reason[2 * COW_GIT_BRANCH_MAX + 64], other[COW_GIT_BRANCH_MAX];
		if (only_db && strcmp(p->db, only_db) != 0)
			continue;
		bool gone = cow_git_branch_tip(c->g, p->git_branch, tip) < 0;
		if (gone) {
			if (cow_git_db_claimed(c->g, p->db, p->git_branch, other, sizeof other)) {
				/* renamed: the record follows the branch */
				snprintf(p->git_branch, sizeof p->git_branch, "%s", other);
				if (repair)
					cow_git_pair_put(c->g, p);
				continue;
			}
			if (which == PRUNE_MERGED)
				continue;
			snprintf(reason, sizeof reason, "git branch %s is gone", p->git_branch);
		} else {
			if (which == PRUNE_GONE || strcmp(p->git_branch, c->parent_git) == 0 ||
			    cow_git_checked_out(c->g, p->git_branch) || (p->forked_at[0] && strcmp(tip, p->forked_at) == 0) ||
			    cow_git_merged(c->g, p->git_branch, c->parent_git) != 1)
				continue;
			cut(reason, sizeof reason, "git branch %s is merged into %s", p->git_branch, c->parent_git);
		}
		const char *action = "delete", *kept = NULL;
		if (!p->created && gone)
			action = "forget", kept = "cowfs git did not create it, so only the pairing goes";
		else if (!p->created)
			action = "keep", kept = "not created by cowfs git";
		else if (strcmp(p->db, c->parent) == 0)
			action = "keep", kept = "it is cowfs.parent";
		else if (!branch_get(c, p->db))
			action = "forget", kept = "no such database branch";
		else if (branch_protected(c, p->db))
			action = "keep", kept = "protected";
		json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "database", p->db, "git_branch", p->git_branch, "reason",
				      reason, "action", action);
		if (kept)
			json_object_set_new(e, "kept_because", json_string(kept));
		json_array_append_new(plan, e);
	}
	free(v);
	return plan;
}

/* Carry PLAN out (or not, DRY), one line per entry on OUT; 0, or 1 if a
 * deletion failed. */
static int prune_apply(struct ctx *c, json_t *plan, bool dry, FILE *out)
{
	size_t i;
	json_t *e;
	int rc = 0;
	json_array_foreach(plan, i, e) {
		const char *db = json_string_value(json_object_get(e, "database"));
		const char *gb = json_string_value(json_object_get(e, "git_branch"));
		const char *reason = json_string_value(json_object_get(e, "reason"));
		const char *action = json_string_value(json_object_get(e, "action"));
		const char *kept = json_string_value(json_object_get(e, "kept_because"));
		char tip[COW_GIT_OID_HEX];
		bool git_exists = cow_git_branch_tip(c->g, gb, tip) == 0;
		if (strcmp(action, "keep") == 0) {
			if (out)
				fprintf(out, "%s database branch %s (%s): %s\n", dry ? "would keep" : "kept", db, reason, kept);
			json_object_set_new(e, "result", json_string("kept"));
		} else if (strcmp(action, "forget") == 0) {
			if (!dry)
				cow_git_pair_forget(c->g, db, git_exists ? gb : NULL);
			if (out)
				fprintf(out, "%s the pairing of %s (%s): %s\n", dry ? "would forget" : "forgot", db, reason, kept);
			json_object_set_new(e, "result", json_string(dry ? "would forget" : "forgotten"));
		} else if (dry) {
			if (out)
				fprintf(out, "would delete database branch %s (%s)\n", db, reason);
			json_object_set_new(e, "result", json_string("would delete"));
		} else {
			const char *args[] = { "branch", "delete", db, NULL };
			char what[200];
			snprintf(what, sizeof what, "cannot delete database branch %s", db);
			if (run(c, NULL, args, what) < 0) {
				cow_err("%s", c->why);
				json_object_set_new(e, "result", json_string("failed"));
				json_object_set_new(e, "error", json_string(c->why));
				rc = 1;
				continue;
			}
			cow_git_pair_forget(c->g, db, git_exists ? gb : NULL);
			if (out)
				fprintf(out, "deleted database branch %s (%s)\n", db, reason);
			json_object_set_new(e, "result", json_string("deleted"));
		}
	}
	return rc;
}

/* ---- hooks: install, uninstall ---------------------------------------------------- */

/* 0: no such file, 1: one of ours, 2: somebody else's. */
static int hook_kind(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISREG(st.st_mode))
		return 2;
	char head[1024] = "";
	FILE *f = fopen(path, "re");
	if (!f)
		return 2;
	size_t got = fread(head, 1, sizeof head - 1, f);
	fclose(f);
	head[got] = 0;
	return strstr(head, "\n" HOOK_MARK) ? 1 : 2;
}

static int hooks_source(const struct opts *o, char *out, size_t n)
{
	char self[PATH_MAX], dirs[4][PATH_MAX + 32];
	int k = 0;
	if (o->hooks)
		snprintf(dirs[k++], sizeof dirs[0], "%s", o->hooks);
	else {
		const char *env = getenv("COWFS_HOOKS_DIR");
		if (env && *env)
			snprintf(dirs[k++], sizeof dirs[0], "%s", env);
		cow_subcmd_self(self, sizeof self);
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			/* installed (PREFIX/bin -> PREFIX/share/cowfs/hooks), then the build tree */
			snprintf(dirs[k++], sizeof dirs[0], "%s/../share/cowfs/hooks", self);
			snprintf(dirs[k++], sizeof dirs[0], "%s/../hooks", self);
		}
	}
	for (int i = 0; i < k; i++) {
		bool all = true;
		for (size_t h = 0; h < COW_ARRAY_SIZE(HOOKS) && all; h++) {
			char p[PATH_MAX + 64];
			cut(p, sizeof p, "%s/%s", dirs[i], HOOKS[h]);
			all = hook_kind(p) == 1;
		}
		if (all) {
			if (!realpath(dirs[i], out))
				cut(out, n, "%s", dirs[i]);
			return 0;
		}
	}
	cow_err("the cowfs hooks are not found%s%s (looked for post-checkout, post-merge and reference-transaction "
		"in --hooks DIR, $COWFS_HOOKS_DIR, PREFIX/share/cowfs/hooks)",
		o->hooks ? " in " : "", o->hooks ? o->hooks : "");
	return -1;
}

static int mkdir_p(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

/* Copy SRC to DIR/NAME, executable, through a temp file and a rename. */
static int put_hook(const char *src, const char *dir, const char *name)
{
	char *text;
	size_t len;
	int r = cow_read_file(src, 1 << 20, &text, &len);
	if (r < 0)
		return r;
	char tmp[PATH_MAX + 64], dst[PATH_MAX + 64];
	snprintf(tmp, sizeof tmp, "%s/.%s.cowfs-tmp", dir, name);
	snprintf(dst, sizeof dst, "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (fd < 0) {
		free(text);
		return -errno;
	}
	ssize_t w = write(fd, text, len);
	free(text);
	if (w != (ssize_t)len || fchmod(fd, 0755) < 0 || fsync(fd) < 0) {
		r = w < 0 || w == (ssize_t)len ? -errno : -EIO;
		close(fd);
		unlink(tmp);
		return r;
	}
	close(fd);
	if (rename(tmp, dst) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return cow_fsync_path(dir);
}

static int cmd_install(struct ctx *c)
{
	if (cow_git_bare(c->g)) {
		cow_err("a bare repository has no checkouts: install the hooks in a clone with a working tree");
		return 1;
	}
	char src[PATH_MAX], dir[PATH_MAX];
	if (hooks_source(c->o, src, sizeof src) < 0)
		return 1;
	int r = cow_git_hooks_dir(c->g, dir, sizeof dir);
	if (r < 0) {
		cow_err("cannot find the repository's hooks directory: %s", strerror(-r));
		return 1;
	}
	/* every check first: nothing changes unless all hooks can go in */
	int kinds[COW_ARRAY_SIZE(HOOKS)];
	for (size_t h = 0; h < COW_ARRAY_SIZE(HOOKS); h++) {
		char p[PATH_MAX + 64], local[PATH_MAX + 64];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, HOOKS[h]);
		cut(local, sizeof local, "%s.local", p);
		kinds[h] = hook_kind(p);
		if (kinds[h] == 2 && lstat(local, &st) == 0) {
			cow_err("%s is not cowfs's and %s exists too: move one of them away; nothing installed", p, local);
			return 1;
		}
	}
	if ((r = mkdir_p(dir)) < 0) {
		cow_err("cannot create %s: %s", dir, strerror(-r));
		return 1;
	}
	for (size_t h = 0; h < COW_ARRAY_SIZE(HOOKS); h++) {
		char p[PATH_MAX + 64], local[PATH_MAX + 64], from[PATH_MAX + 64];
		snprintf(p, sizeof p, "%s/%s", dir, HOOKS[h]);
		cut(local, sizeof local, "%s.local", p);
		snprintf(from, sizeof from, "%s/%s", src, HOOKS[h]);
		if (kinds[h] == 2 && rename(p, local) < 0) {
			cow_err("cannot rename %s to %s: %s", p, local, strerror(errno));
			return 1;
		}
		if ((r = put_hook(from, dir, HOOKS[h])) < 0) {
			cow_err("cannot write %s: %s", p, strerror(-r));
			if (kinds[h] == 2)
				rename(local, p);
			return 1;
		}
		if (kinds[h] == 2)
			printf("%s: installed; the hook that was there is now %s.local and runs first\n", p, HOOKS[h]);
		else
			printf("%s: %s\n", p, kinds[h] == 1 ? "updated" : "installed");
	}
	char self[PATH_MAX];
	cow_subcmd_self(self, sizeof self);
	if (cow_git_set(c->g, "cowfs.program", self) < 0 || cow_git_set(c->g, "cowfs.enabled", "true") < 0) {
		cow_err("cannot write cowfs.program and cowfs.enabled into the git config");
		return 1;
	}
	return 0;
}

static int cmd_uninstall(struct ctx *c)
{
	char dir[PATH_MAX];
	int r = cow_git_hooks_dir(c->g, dir, sizeof dir), rc = 0;
	if (r < 0) {
		cow_err("cannot find the repository's hooks directory: %s", strerror(-r));
		return 1;
	}
	for (size_t h = 0; h < COW_ARRAY_SIZE(HOOKS); h++) {
		char p[PATH_MAX + 64], local[PATH_MAX + 64];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, HOOKS[h]);
		cut(local, sizeof local, "%s.local", p);
		int kind = hook_kind(p);
		if (kind == 2) {
			printf("%s: not cowfs's, left as it is\n", p);
			continue;
		}
		if (kind == 1 && unlink(p) < 0) {
			cow_err("cannot remove %s: %s", p, strerror(errno));
			rc = 1;
			continue;
		}
		if (lstat(local, &st) == 0) {
			if (rename(local, p) < 0) {
				cow_err("cannot put %s back as %s: %s", local, p, strerror(errno));
				rc = 1;
				continue;
			}
			printf("%s: removed; the hook from before is back\n", p);
		} else if (kind == 1) {
			printf("%s: removed\n", p);
		}
	}
	if (rc == 0 && cow_git_bare(c->g) == false)
		cow_fsync_path(dir);
	if (cow_git_set(c->g, "cowfs.enabled", NULL) < 0 || cow_git_set(c->g, "cowfs.program", NULL) < 0)
		rc = 1;
	return rc;
}

/* ---- hooks: what they run ------------------------------------------------------------ */

static void hook_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void hook_say(const char *fmt, ...)
{
	char line[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "cowfs: %s\n", line);
}

static void hook_post_checkout(struct ctx *c, int argc, char **argv)
{
	/* a file checkout (flag 0) changes no branch */
	if (argc >= 3 && strcmp(argv[2], "1") != 0)
		return;
	char G[COW_GIT_BRANCH_MAX], summary[8192];
	if (cow_git_head(c->g, G, sizeof G) != 0) {
		/* a rebase detaches HEAD for its duration and comes back to its branch */
		if (!cow_git_rebasing(c->g))
			hook_say("HEAD is detached: the database branch and the env file stay as they were");
		return;
	}
	if (sync_branch(c, G, summary, sizeof summary) < 0)
		hook_say("%s (git branch %s; the checkout itself is done)", c->why, G);
	else
		hook_say("%s", summary);
}

/* The pid of git, which ran the hook script, which ran us. */
static pid_t git_pid(void)
{
	const char *env = getenv("COWFS_GIT_PID");
	if (env && *env)
		return (pid_t)strtol(env, NULL, 10);
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)getppid());
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	int ppid = 0;
	return p && sscanf(p + 1, " %*c %d", &ppid) == 1 ? (pid_t)ppid : 0;
}

static bool alive(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	char state = 0;
	return p && sscanf(p + 1, " %c", &state) == 1 && state != 'Z' && state != 'X';
}

/* Carry out PLAN from a hook: what prune says, said the hook's way. */
static void hook_prune(struct ctx *c, json_t *plan)
{
	char text[8192] = "";
	FILE *mem = fmemopen(text, sizeof text - 1, "w");
	prune_apply(c, plan, false, mem);
	if (mem)
		fclose(mem);
	for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
		hook_say("%s", l);
}

static void hook_reference_transaction(struct ctx *c, int argc, char **argv)
{
	char line[COW_GIT_BRANCH_MAX + 256];
	char gone[32][COW_GIT_BRANCH_MAX];
	int n = 0;
	while (fgets(line, sizeof line, stdin)) {
		char old[80], new[80], ref[1024];
		if (sscanf(line, "%79s %79s %1023s", old, new, ref) != 3 || strncmp(ref, "refs/heads/", 11) != 0)
			continue;
		if (strspn(new, "0") != strlen(new) || n >= 32)
			continue;
		cut(gone[n++], sizeof gone[0], "%s", ref + 11);
	}
	bool auto_prune = false;
	if (argc < 1 || strcmp(argv[0], "committed") != 0 || !n ||
	    cow_git_get_bool(c->g, "cowfs.autoPrune", false, &auto_prune) < 0 || !auto_prune)
		return;
	/* Which of the deleted branches had a database cowfs git made? */
	struct cow_git_pair *v;
	size_t np;
	if (cow_git_pairs(c->g, &v, &np) < 0)
		return;
	char dbs[32][COW_NAME_LEN + 1];
	int k = 0;
	for (size_t i = 0; i < np; i++)
		for (int j = 0; j < n && k < 32; j++)
			if (v[i].created && strcmp(v[i].git_branch, gone[j]) == 0)
				snprintf(dbs[k++], sizeof dbs[0], "%s", v[i].db);
	free(v);
	if (!k)
		return;
	/* `git branch -m` deletes the old ref this same way, and moves the
	 * branch's config only after this hook: decide once git is done. */
	pid_t git = git_pid();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid != 0)
		return;
	setsid();
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null >= 0)
		dup2(null, 0);
	for (int i = 0; git > 1 && i < 6000 && alive(git); i++)
		usleep(10000);
	/* the other hook run for the same deletion may have done it: look after it */
	int lock = cow_git_lock(c->g);
	if (settings(c) < 0 || store_open(c) < 0) {
		hook_say("%s: database branches of deleted git branches are kept", c->why);
		_exit(0);
	}
	for (int i = 0; i < k; i++) {
		json_t *plan = prune_plan(c, PRUNE_GONE, dbs[i], true);
		if (plan)
			hook_prune(c, plan);
		json_decref(plan);
	}
	if (lock >= 0)
		close(lock);
	_exit(0);
}

static void hook_post_merge(struct ctx *c)
{
	char G[COW_GIT_BRANCH_MAX];
	if (cow_git_head(c->g, G, sizeof G) != 0 || settings(c) < 0 || strcmp(G, c->parent_git) != 0)
		return;
	bool auto_prune = false;
	if (cow_git_get_bool(c->g, "cowfs.autoPrune", false, &auto_prune) < 0)
		return;
	int lock = cow_git_lock(c->g);
	json_t *plan = NULL;
	if (store_open(c) < 0) {
		/* without autoPrune this hook only informs: no store, nothing to say */
		if (auto_prune)
			hook_say("%s: merged git branches keep their database branches", c->why);
		goto out;
	}
	if (!(plan = prune_plan(c, PRUNE_MERGED, NULL, auto_prune)))
		goto out;
	if (auto_prune) {
		hook_prune(c, plan);
	} else {
		char names[900] = "";
		size_t i, count = 0;
		json_t *e;
		json_array_foreach(plan, i, e) {
			if (strcmp(json_string_value(json_object_get(e, "action")), "delete") != 0)
				continue;
			size_t used = strlen(names);
			snprintf(names + used, sizeof names - used, "%s%s", count ? ", " : "",
				 json_string_value(json_object_get(e, "database")));
			count++;
		}
		if (count)
			hook_say("git branches merged into %s: 'cowfs git prune' deletes their database branches %s", G, names);
	}
out:
	json_decref(plan);
	if (lock >= 0)
		close(lock);
}

static int cmd_hook(struct ctx *c, const char *name, int argc, char **argv)
{
	bool enabled = false;
	if (cow_git_bare(c->g) || cow_git_get_bool(c->g, "cowfs.enabled", false, &enabled) < 0 || !enabled) {
		/* hooks left behind, or switched off with cowfs.enabled=false */
		if (strcmp(name, "reference-transaction") == 0)
			while (getchar() != EOF)
				;
		return 0;
	}
	if (strcmp(name, "post-checkout") == 0)
		hook_post_checkout(c, argc, argv);
	else if (strcmp(name, "reference-transaction") == 0)
		hook_reference_transaction(c, argc, argv);
	else if (strcmp(name, "post-merge") == 0)
		hook_post_merge(c);
	return 0;
}

/* ---- list, sync, prune ------------------------------------------------------------------ */

static int cmd_list(struct ctx *c)
{
	if (settings(c) < 0) {
		cow_err("%s", c->why);
		return 1;
	}
	bool have_store = store_open(c) == 0;
	struct cow_git_pair *v;
	size_t n;
	if (cow_git_pairs(c->g, &v, &n) < 0)
		return 1;
	json_t *arr = json_array();
	char head[COW_GIT_BRANCH_MAX] = "";
	cow_git_head(c->g, head, sizeof head);
	json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "git_branch", c->parent_git, "database", c->parent,
					     "state", "parent"));
	for (size_t i = 0; i < n; i++) {
		struct cow_git_pair *p = &v[i];
		char tip[COW_GIT_OID_HEX], state[COW_GIT_BRANCH_MAX + 64];
		bool exists = cow_git_branch_tip(c->g, p->git_branch, tip) == 0;
		if (!exists)
			snprintf(state, sizeof state, "git branch gone");
		else if (strcmp(p->git_branch, head) == 0 || cow_git_checked_out(c->g, p->git_branch))
			snprintf(state, sizeof state, "checked out");
		else if (strcmp(p->git_branch, c->parent_git) != 0 && (!p->forked_at[0] || strcmp(tip, p->forked_at) != 0) &&
			 cow_git_merged(c->g, p->git_branch, c->parent_git) == 1)
			snprintf(state, sizeof state, "merged into %s", c->parent_git);
		else
			snprintf(state, sizeof state, "ok");
		if (have_store && !branch_get(c, p->db)) {
			size_t used = strlen(state);
			snprintf(state + used, sizeof state - used, ", no database branch");
		}
		json_t *e = json_pack("{s:s, s:s, s:s, s:b}", "git_branch", p->git_branch, "database", p->db, "state",
				      state, "created_by_cowfs", p->created != 0);
		if (p->forked_at[0])
			json_object_set_new(e, "forked_at", json_string(p->forked_at));
		json_array_append_new(arr, e);
	}
	free(v);
	if (c->o->json) {
		char *text = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
	} else {
		size_t i;
		json_t *e;
		printf("%-32s %-32s %s\n", "GIT BRANCH", "DATABASE", "STATE");
		json_array_foreach(arr, i, e)
			printf("%-32s %-32s %s\n", json_string_value(json_object_get(e, "git_branch")),
			       json_string_value(json_object_get(e, "database")),
			       json_string_value(json_object_get(e, "state")));
	}
	json_decref(arr);
	if (!have_store)
		cow_warn("%s: whether the database branches exist is not shown", c->why);
	return 0;
}

static int cmd_sync(struct ctx *c)
{
	char G[COW_GIT_BRANCH_MAX], summary[8192];
	if (cow_git_bare(c->g)) {
		cow_err("a bare repository has no checked-out branch");
		return 1;
	}
	if (cow_git_head(c->g, G, sizeof G) != 0) {
		cow_err("HEAD is detached: check a branch out first");
		return 1;
	}
	if (sync_branch(c, G, summary, sizeof summary) < 0) {
		cow_err("%s", c->why);
		return 1;
	}
	fprintf(stderr, "cowfs: %s\n", summary);
	return 0;
}

static int cmd_prune(struct ctx *c)
{
	int lock = cow_git_lock(c->g);
	if (lock < 0) {
		cow_err("cannot lock the repository's cowfs.lock: %s", strerror(-lock));
		return 1;
	}
	json_t *plan = NULL;
	if (settings(c) < 0 || store_open(c) < 0 || !(plan = prune_plan(c, PRUNE_ALL, NULL, !c->o->dry_run))) {
		cow_err("%s", c->why);
		close(lock);
		return 1;
	}
	int rc = prune_apply(c, plan, c->o->dry_run, c->o->json ? NULL : stdout);
	if (c->o->json) {
		char *text = json_dumps(plan, JSON_COMPACT | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
	} else if (json_array_size(plan) == 0) {
		printf("nothing to prune\n");
	}
	json_decref(plan);
	close(lock);
	return rc;
}

int gitcli_main(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *sub = argc > 1 ? argv[1] : NULL;
	if (!sub)
		goto usage;
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	int first_arg = argc;
	if (strcmp(sub, "hook") == 0) {
		/* the hook's own arguments are git's, whatever they look like */
		if (argc < 3)
			goto usage;
		first_arg = 3;
	} else {
		for (int i = 2; i < argc; i++) {
			const char *a = argv[i];
			const char **val = strcmp(a, "--repo") == 0    ? &o.repo
					   : strcmp(a, "--store") == 0 ? &o.store
					   : strcmp(a, "--mount") == 0 ? &o.mnt
					   : strcmp(a, "--hooks") == 0 ? &o.hooks
								       : NULL;
			if (val) {
				if (i + 1 >= argc)
					goto usage;
				*val = argv[++i];
			} else if (strcmp(a, "--json") == 0) {
				o.json = true;
			} else if (strcmp(a, "--dry-run") == 0 || strcmp(a, "-n") == 0) {
				o.dry_run = true;
			} else {
				goto usage;
			}
		}
	}
	bool hook = strcmp(sub, "hook") == 0;
	if (!hook && strcmp(sub, "install") != 0 && strcmp(sub, "uninstall") != 0 && strcmp(sub, "sync") != 0 &&
	    strcmp(sub, "list") != 0 && strcmp(sub, "prune") != 0)
		goto usage;
	if ((o.hooks && strcmp(sub, "install") != 0) || (o.dry_run && strcmp(sub, "prune") != 0) ||
	    (o.json && strcmp(sub, "list") != 0 && strcmp(sub, "prune") != 0))
		goto usage;
	struct ctx c = { .o = &o };
	if (hook) {
		/* whatever happens, the git command goes on: one line at most */
		struct capture cap;
		char reason[512];
		capture_begin(&cap);
		int r = cow_git_open(NULL, &c.g);
		capture_end(&cap, reason, sizeof reason);
		if (r < 0) {
			hook_say("%s", reason[0] ? reason : "cannot open the git repository");
			return 0;
		}
		cmd_hook(&c, argv[2], argc - first_arg, argv + first_arg);
		json_decref(c.list);
		cow_git_close(c.g);
		return 0;
	}
	if (cow_git_open(o.repo, &c.g) < 0)
		return 1;
	int rc = strcmp(sub, "install") == 0     ? cmd_install(&c)
		 : strcmp(sub, "uninstall") == 0 ? cmd_uninstall(&c)
		 : strcmp(sub, "sync") == 0      ? cmd_sync(&c)
		 : strcmp(sub, "list") == 0      ? cmd_list(&c)
						 : cmd_prune(&c);
	json_decref(c.list);
	cow_git_close(c.g);
	return rc;
usage:
	usage(stderr);
	return 2;
}
