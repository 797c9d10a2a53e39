#include "git.h"

#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "hash.h"
#include "util.h"

/* ---- the naming rule (pure) ---------------------------------------------------- */

static bool db_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Rule 1: '/' -> '-', nothing else changed; false if that loses anything
 * or is not a valid name. */
static bool plain_name(const char *git, char out[COW_NAME_LEN + 1])
{
	size_t len = strlen(git);
	if (len > COW_NAME_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (git[i] == '/')
			out[i] = '-';
		else if (db_char(git[i]))
			out[i] = git[i];
		else
			return false;
	}
	out[len] = 0;
	return cow_ref_check_name(out) == NULL;
}

static void stem_of(const char *git, char out[COW_GIT_STEM_MAX + 1])
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)git; *p && n < COW_GIT_STEM_MAX; p++) {
		char c = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		if (c == '-' || !db_char(c)) {
			if (n == 0 || out[n - 1] != '-')
				out[n++] = '-';
		} else if (c == '.') {
			if (n == 0 || out[n - 1] != '.')
				out[n++] = '.';
		} else {
			out[n++] = c;
		}
	}
	out[n] = 0;
	size_t start = 0;
	while (out[start] == '-' || out[start] == '.' || out[start] == '_')
		start++;
	memmove(out, out + start, n - start + 1);
	n -= start;
	while (n && (out[n - 1] == '-' || out[n - 1] == '.' || out[n - 1] == '_'))
		out[--n] = 0;
	if (!n)
		snprintf(out, COW_GIT_STEM_MAX + 1, "git");
}

int cow_git_db_name(const char *git_branch, cow_git_taken_fn taken, void *ctx, char ret[COW_NAME_LEN + 1])
{
	if (!git_branch || !*git_branch)
		return -EINVAL;
	char cand[COW_NAME_LEN + 1];
	if (plain_name(git_branch, cand) && !(taken && taken(cand, ctx))) {
		memcpy(ret, cand, sizeof cand);
		return 0;
	}
	char stem[COW_GIT_STEM_MAX + 1];
	stem_of(git_branch, stem);
	size_t len = strlen(git_branch);
	char *buf = malloc(len + 16);
	if (!buf)
		return -ENOMEM;
	int r = -EEXIST;
	for (unsigned k = 1; k <= 1000; k++) {
		size_t n = len;
		memcpy(buf, git_branch, len);
		if (k > 1)
			n += (size_t)sprintf(buf + len, "\n%u", k);
		cow_hash h;
		char hex[2 * COW_HASH_SIZE + 1];
		if ((r = cow_hash_compute(buf, n, &h)) < 0)
			break;
		cow_hash_to_hex(&h, hex);
		snprintf(cand, sizeof cand, "%s-%.*s", stem, COW_GIT_SUFFIX_HEX, hex);
		r = -EEXIST;
		if (!(taken && taken(cand, ctx))) {
			memcpy(ret, cand, sizeof cand);
			r = 0;
			break;
		}
	}
	free(buf);
	return r;
}

/* ---- the repository (libgit2) ----------------------------------------------------- */

struct cow_git {
	git_repository *repo;
	char workdir[4096];
};

/* libgit2's last error as a message; -EIO. */
static int lg_fail(const char *what)
{
	const git_error *e = git_error_last();
	cow_err("%s: %s", what, e && e->message ? e->message : "libgit2 failed");
	return -EIO;
}

int cow_git_open(const char *dir, struct cow_git **ret)
{
	struct cow_git *g = calloc(1, sizeof *g);
	if (!g)
		return -ENOMEM;
	git_libgit2_init();
	int e = dir ? git_repository_open_ext(&g->repo, dir, 0, NULL)
		    : git_repository_open_ext(&g->repo, NULL, GIT_REPOSITORY_OPEN_FROM_ENV, NULL);
	if (e < 0) {
		int r = e == GIT_ENOTFOUND ? -ENOENT : lg_fail("cannot open the git repository");
		if (r == -ENOENT)
			cow_err("%s is not in a git repository", dir ? dir : "the current directory");
		free(g);
		git_libgit2_shutdown();
		return r;
	}
	const char *wd = git_repository_workdir(g->repo);
	snprintf(g->workdir, sizeof g->workdir, "%s", wd ? wd : "");
	size_t n = strlen(g->workdir);
	while (n > 1 && g->workdir[n - 1] == '/')
		g->workdir[--n] = 0;
	*ret = g;
	return 0;
}

void cow_git_close(struct cow_git *g)
{
	if (!g)
		return;
	git_repository_free(g->repo);
	free(g);
	git_libgit2_shutdown();
}

bool cow_git_bare(const struct cow_git *g) { return git_repository_is_bare(g->repo); }
const char *cow_git_workdir(const struct cow_git *g) { return g->workdir; }

static int config(struct cow_git *g, git_config **ret)
{
	/* a fresh view each time: hooks and this process write the file */
	git_config *cfg;
	if (git_repository_config(&cfg, g->repo) < 0)
		return lg_fail("cannot read the git configuration");
	int e = git_config_snapshot(ret, cfg);
	git_config_free(cfg);
	return e < 0 ? lg_fail("cannot read the git configuration") : 0;
}

static int get_string(struct cow_git *g, const char *key, bool path, char *out, size_t n)
{
	git_config *cfg;
	int r = config(g, &cfg);
	if (r < 0)
		return r;
	git_buf b = { 0 };
	int e = path ? git_config_get_path(&b, cfg, key) : git_config_get_string_buf(&b, cfg, key);
	if (e == GIT_ENOTFOUND)
		r = -ENOENT;
	else if (e < 0)
		r = lg_fail(key);
	else if ((size_t)snprintf(out, n, "%s", b.ptr) >= n)
		r = -ENAMETOOLONG;
	git_buf_dispose(&b);
	git_config_free(cfg);
	return r;
}

int cow_git_get(struct cow_git *g, const char *key, char *out, size_t n) { return get_string(g, key, false, out, n); }
int cow_git_get_path(struct cow_git *g, const char *key, char *out, size_t n) { return get_string(g, key, true, out, n); }

int cow_git_get_bool(struct cow_git *g, const char *key, bool dflt, bool *ret)
{
	git_config *cfg;
	int r = config(g, &cfg);
	if (r < 0)
		return r;
	int v = 0, e = git_config_get_bool(&v, cfg, key);
	git_config_free(cfg);
	if (e == GIT_ENOTFOUND) {
		*ret = dflt;
		return 0;
	}
	if (e < 0) {
		cow_err("git config %s: not a boolean (true or false)", key);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

int cow_git_set(struct cow_git *g, const char *key, const char *value)
{
	git_config *cfg, *local;
	if (git_repository_config(&cfg, g->repo) < 0)
		return lg_fail("cannot open the git configuration");
	int e = git_config_open_level(&local, cfg, GIT_CONFIG_LEVEL_LOCAL);
	git_config_free(cfg);
	if (e < 0)
		return lg_fail("cannot open the repository's git configuration");
	e = value ? git_config_set_string(local, key, value) : git_config_delete_entry(local, key);
	git_config_free(local);
	if (e == GIT_ENOTFOUND && !value)
		return 0;
	return e < 0 ? lg_fail(key) : 0;
}

int cow_git_hooks_dir(struct cow_git *g, char *out, size_t n)
{
	char p[4096];
	int r = cow_git_get_path(g, "core.hooksPath", p, sizeof p);
	if (r == 0 && p[0]) {
		const char *base = cow_git_bare(g) ? git_repository_path(g->repo) : g->workdir;
		if (p[0] == '/')
			snprintf(out, n, "%s", p);
		else if ((size_t)snprintf(out, n, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", p) >= n)
			return -ENAMETOOLONG;
		return 0;
	}
	if (r < 0 && r != -ENOENT)
		return r;
	const char *common = git_repository_commondir(g->repo);
	if ((size_t)snprintf(out, n, "%s%shooks", common, common[strlen(common) - 1] == '/' ? "" : "/") >= n)
		return -ENAMETOOLONG;
	return 0;
}

int cow_git_lock(struct cow_git *g)
{
	char path[4096];
	const char *common = git_repository_commondir(g->repo);
	if ((size_t)snprintf(path, sizeof path, "%s%scowfs.lock", common, common[strlen(common) - 1] == '/' ? "" : "/") >=
	    sizeof path)
		return -ENAMETOOLONG;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int r = -errno;
			close(fd);
			return r;
		}
	}
	return fd;
}

int cow_git_head(struct cow_git *g, char *out, size_t n)
{
	git_reference *head;
	out[0] = 0;
	if (git_reference_lookup(&head, g->repo, "HEAD") < 0)
		return lg_fail("cannot read HEAD");
	int r = 1;
	if (git_reference_type(head) == GIT_REFERENCE_SYMBOLIC) {
		const char *t = git_reference_symbolic_target(head);
		if (strncmp(t, "refs/heads/", 11) == 0) {
			snprintf(out, n, "%s", t + 11);
			r = 0;
		}
	}
	git_reference_free(head);
	return r;
}

bool cow_git_rebasing(struct cow_git *g)
{
	switch (git_repository_state(g->repo)) {
	case GIT_REPOSITORY_STATE_REBASE:
	case GIT_REPOSITORY_STATE_REBASE_INTERACTIVE:
	case GIT_REPOSITORY_STATE_REBASE_MERGE:
	case GIT_REPOSITORY_STATE_APPLY_MAILBOX_OR_REBASE:
		return true;
	default:
		return false;
	}
}

static int branch_oid(struct cow_git *g, const char *branch, git_oid *ret)
{
	git_reference *ref, *resolved;
	int e = git_branch_lookup(&ref, g->repo, branch, GIT_BRANCH_LOCAL);
	if (e == GIT_ENOTFOUND || e == GIT_EINVALIDSPEC)
		return -ENOENT;
	if (e < 0)
		return lg_fail(branch);
	e = git_reference_resolve(&resolved, ref);
	git_reference_free(ref);
	if (e == GIT_ENOTFOUND)
		return -ENOENT;
	if (e < 0)
		return lg_fail(branch);
	git_oid_cpy(ret, git_reference_target(resolved));
	git_reference_free(resolved);
	return 0;
}

int cow_git_branch_tip(struct cow_git *g, const char *branch, char oid[COW_GIT_OID_HEX])
{
	git_oid o;
	int r = branch_oid(g, branch, &o);
	if (r < 0)
		return r;
	git_oid_tostr(oid, COW_GIT_OID_HEX, &o);
	return 0;
}

bool cow_git_checked_out(struct cow_git *g, const char *branch)
{
	git_reference *ref;
	if (git_branch_lookup(&ref, g->repo, branch, GIT_BRANCH_LOCAL) < 0)
		return false;
	bool out = git_branch_is_checked_out(ref) == 1;
	git_reference_free(ref);
	return out;
}

int cow_git_merged(struct cow_git *g, const char *branch, const char *into)
{
	git_oid b, i;
	int r;
	if ((r = branch_oid(g, branch, &b)) < 0 || (r = branch_oid(g, into, &i)) < 0)
		return r == -ENOENT ? 0 : r;
	if (git_oid_equal(&b, &i))
		return 1;
	int e = git_graph_descendant_of(g->repo, &i, &b);
	return e < 0 ? lg_fail("cannot walk the history") : e;
}

void cow_git_parent_branch(struct cow_git *g, char *out, size_t n)
{
	char tip[COW_GIT_OID_HEX];
	if (cow_git_get(g, "cowfs.parentGitBranch", out, n) == 0 && out[0])
		return;
	if (cow_git_branch_tip(g, "main", tip) == 0)
		snprintf(out, n, "main");
	else if (cow_git_branch_tip(g, "master", tip) == 0)
		snprintf(out, n, "master");
	else if (cow_git_get(g, "init.defaultBranch", out, n) < 0 || !out[0])
		snprintf(out, n, "main");
}

/* ---- pairings ---------------------------------------------------------------------- */

static int pair_key(char *out, size_t n, const char *db, const char *field)
{
	return (size_t)snprintf(out, n, "cowfsDatabase.%s.%s", db, field) >= n ? -ENAMETOOLONG : 0;
}

int cow_git_pair_get(struct cow_git *g, const char *db, struct cow_git_pair *ret)
{
	char key[128], v[64];
	memset(ret, 0, sizeof *ret);
	snprintf(ret->db, sizeof ret->db, "%s", db);
	int r = pair_key(key, sizeof key, db, "gitBranch");
	if (r < 0 || (r = cow_git_get(g, key, ret->git_branch, sizeof ret->git_branch)) < 0)
		return r;
	pair_key(key, sizeof key, db, "forkedAt");
	if (cow_git_get(g, key, ret->forked_at, sizeof ret->forked_at) < 0)
		ret->forked_at[0] = 0;
	pair_key(key, sizeof key, db, "created");
	if (cow_git_get(g, key, v, sizeof v) == 0)
		ret->created = strtoll(v, NULL, 10);
	return 0;
}

static int cmp_pair(const void *a, const void *b)
{
	return strcmp(((const struct cow_git_pair *)a)->db, ((const struct cow_git_pair *)b)->db);
}

int cow_git_pairs(struct cow_git *g, struct cow_git_pair **ret, size_t *ret_n)
{
	git_config *cfg;
	int r = config(g, &cfg);
	if (r < 0)
		return r;
	git_config_iterator *it;
	if (git_config_iterator_glob_new(&it, cfg, "^cowfsdatabase\\..*\\.gitbranch$") < 0) {
		git_config_free(cfg);
		return lg_fail("cannot read the git configuration");
	}
	struct cow_git_pair *v = NULL;
	size_t n = 0;
	git_config_entry *e;
	while (r == 0 && git_config_next(&e, it) == 0) {
		/* cowfsdatabase.DB.gitbranch: DB is the subsection, case kept */
		const char *first = strchr(e->name, '.'), *last = strrchr(e->name, '.');
		char db[COW_NAME_LEN + 1];
		if (!first || last <= first + 1 || (size_t)(last - first - 1) > COW_NAME_LEN)
			continue;
		snprintf(db, sizeof db, "%.*s", (int)(last - first - 1), first + 1);
		if (cow_ref_check_name(db))
			continue;
		bool dup = false;
		for (size_t i = 0; i < n; i++)
			dup |= strcmp(v[i].db, db) == 0;
		if (dup)
			continue;
		struct cow_git_pair *nv = realloc(v, (n + 1) * sizeof *v);
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		v = nv;
		if (cow_git_pair_get(g, db, &v[n]) == 0)
			n++;
	}
	git_config_iterator_free(it);
	git_config_free(cfg);
	if (r < 0) {
		free(v);
		return r;
	}
	if (n)
		qsort(v, n, sizeof *v, cmp_pair);
	*ret = v;
	*ret_n = n;
	return 0;
}

int cow_git_pair_put(struct cow_git *g, const struct cow_git_pair *p)
{
	char key[COW_GIT_BRANCH_MAX + 64], v[32];
	int r;
	if (cow_ref_check_name(p->db) || !p->git_branch[0])
		return -EINVAL;
	pair_key(key, sizeof key, p->db, "gitBranch");
	if ((r = cow_git_set(g, key, p->git_branch)) < 0)
		return r;
	pair_key(key, sizeof key, p->db, "forkedAt");
	if ((r = cow_git_set(g, key, p->forked_at[0] ? p->forked_at : NULL)) < 0)
		return r;
	pair_key(key, sizeof key, p->db, "created");
	snprintf(v, sizeof v, "%lld", (long long)p->created);
	if ((r = cow_git_set(g, key, p->created ? v : NULL)) < 0)
		return r;
	if ((size_t)snprintf(key, sizeof key, "branch.%s.cowfsDatabase", p->git_branch) >= sizeof key)
		return -ENAMETOOLONG;
	return cow_git_set(g, key, p->db);
}

int cow_git_pair_forget(struct cow_git *g, const char *db, const char *git_branch)
{
	static const char *const fields[] = { "gitBranch", "forkedAt", "created" };
	char key[COW_GIT_BRANCH_MAX + 64], cur[COW_NAME_LEN + 1];
	int r;
	for (size_t i = 0; i < COW_ARRAY_SIZE(fields); i++) {
		if ((r = pair_key(key, sizeof key, db, fields[i])) < 0 || (r = cow_git_set(g, key, NULL)) < 0)
			return r;
	}
	if (!git_branch)
		return 0;
	if ((size_t)snprintf(key, sizeof key, "branch.%s.cowfsDatabase", git_branch) >= sizeof key)
		return 0;
	if (cow_git_get(g, key, cur, sizeof cur) == 0 && strcmp(cur, db) == 0)
		return cow_git_set(g, key, NULL);
	return 0;
}

bool cow_git_db_claimed(struct cow_git *g, const char *db, const char *except, char *out, size_t n)
{
	git_config *cfg;
	if (config(g, &cfg) < 0)
		return false;
	git_config_iterator *it;
	bool found = false;
	if (git_config_iterator_glob_new(&it, cfg, "^branch\\..*\\.cowfsdatabase$") == 0) {
		git_config_entry *e;
		while (!found && git_config_next(&e, it) == 0) {
			const char *first = strchr(e->name, '.'), *last = strrchr(e->name, '.');
			if (strcmp(e->value, db) != 0 || !first || last <= first + 1)
				continue;
			char branch[COW_GIT_BRANCH_MAX], tip[COW_GIT_OID_HEX];
			if ((size_t)(last - first - 1) >= sizeof branch)
				continue;
			snprintf(branch, sizeof branch, "%.*s", (int)(last - first - 1), first + 1);
			if (except && strcmp(branch, except) == 0)
				continue;
			if (cow_git_branch_tip(g, branch, tip) == 0) {
				found = true;
				if (out)
					snprintf(out, n, "%s", branch);
			}
		}
		git_config_iterator_free(it);
	}
	git_config_free(cfg);
	return found;
}
