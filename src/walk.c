#include "walk.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "branch.h"
#include "inode.h"
#include "store.h"
#include "tree.h"
#include "util.h"

enum kind { K_ROOT, K_ITABLE, K_MAP, K_DATA, K_DIR, K_SYMLINK };
static const char *const kind_name[] = {
	"root object", "inode table node", "block map node", "data block", "directory", "symlink target",
};
/* Objects that name other objects: read even without VERIFY, sizes memoised. */
static bool interior(enum kind k) { return k == K_ROOT || k == K_ITABLE || k == K_MAP; }

#define PROGRESS_EVERY 4096

struct memo_ent {
	cow_hash h;              /* zero: empty slot (the zero hash names no object) */
	uint64_t bytes;          /* logical bytes at and below the object */
};

struct cow_walk {
	struct cow_store *s;
	unsigned flags;
	cow_walk_problem_fn problem;
	void *problem_ctx;
	cow_walk_progress_fn progress;
	void *progress_ctx;
	struct cow_walk_stats st;
	uint64_t next_progress;
	struct memo_ent *memo;
	size_t memo_cap, memo_used;
	/* the root being walked: */
	uint32_t root;
	uint64_t next_ino;       /* from its root object */
	struct cow_tree *itable; /* VERIFY: its inode table, to check directory entries */
};

/* Where an object sits. */
struct at {
	uint64_t ino;            /* the file whose content it is, or 0 */
	int64_t block;           /* data block: its index; map node: first index covered; else -1 */
	uint64_t size;           /* the file's size in bytes */
	int level;               /* tree node: the level its parent implies (-1: a tree's root) */
	uint64_t base;           /* tree node: the first key it covers */
};

int cow_walk_new(struct cow_store *s, unsigned flags, struct cow_walk **ret)
{
	struct cow_walk *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->s = s;
	w->flags = flags;
	w->next_progress = PROGRESS_EVERY;
	*ret = w;
	return 0;
}

void cow_walk_free(struct cow_walk *w)
{
	if (!w)
		return;
	cow_tree_free(w->itable);
	free(w->memo);
	free(w);
}

void cow_walk_set_problem_fn(struct cow_walk *w, cow_walk_problem_fn fn, void *ctx)
{
	w->problem = fn;
	w->problem_ctx = ctx;
}

void cow_walk_set_progress_fn(struct cow_walk *w, cow_walk_progress_fn fn, void *ctx)
{
	w->progress = fn;
	w->progress_ctx = ctx;
}

void cow_walk_get_stats(struct cow_walk *w, struct cow_walk_stats *ret) { *ret = w->st; }

/* ---- subtree sizes of interior objects --------------------------------- */

static struct memo_ent *memo_slot(struct memo_ent *v, size_t cap, const cow_hash *h)
{
	size_t i = cow_get_le64(h->b) & (cap - 1);
	while (!cow_hash_is_zero(&v[i].h) && !cow_hash_eq(&v[i].h, h))
		i = (i + 1) & (cap - 1);
	return &v[i];
}

static const uint64_t *memo_get(struct cow_walk *w, const cow_hash *h)
{
	if (!w->memo_cap)
		return NULL;
	struct memo_ent *e = memo_slot(w->memo, w->memo_cap, h);
	return cow_hash_is_zero(&e->h) ? NULL : &e->bytes;
}

static int memo_put(struct cow_walk *w, const cow_hash *h, uint64_t bytes)
{
	if ((w->memo_used + 1) * 4 > w->memo_cap * 3) {
		size_t ncap = w->memo_cap ? w->memo_cap * 2 : 1024;
		struct memo_ent *n = calloc(ncap, sizeof *n);
		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < w->memo_cap; i++)
			if (!cow_hash_is_zero(&w->memo[i].h))
				*memo_slot(n, ncap, &w->memo[i].h) = w->memo[i];
		free(w->memo);
		w->memo = n;
		w->memo_cap = ncap;
	}
	struct memo_ent *e = memo_slot(w->memo, w->memo_cap, h);
	if (cow_hash_is_zero(&e->h)) {
		e->h = *h;
		w->memo_used++;
	}
	e->bytes = bytes;
	return 0;
}

/* ---- reporting --------------------------------------------------------- */

/* With VERIFY: tell the caller; returns 1 (something is wrong here). */
static int report(struct cow_walk *w, const cow_hash *h, uint64_t pos, enum kind k, const struct at *at,
		  const char *what)
{
	w->st.problems++;
	if (w->problem) {
		struct cow_walk_problem p = {
			.root = w->root, .hash = *h, .pos = pos, .object = kind_name[k], .problem = what,
			.ino = at->ino, .block = at->block,
		};
		w->problem(w->problem_ctx, &p);
	}
	return 1;
}

/* Without VERIFY: an interior object that cannot be followed stops the walk. */
static int fatal(struct cow_walk *w, const cow_hash *h, enum kind k, const struct at *at, const char *what)
{
	char hex[65];
	cow_hash_to_hex(h, hex);
	if (at->ino)
		cow_err("%s %s of inode %llu (root %u) is %s; run cowfs fsck", kind_name[k], hex,
			(unsigned long long)at->ino, w->root, what);
	else
		cow_err("%s %s (root %u) is %s; run cowfs fsck", kind_name[k], hex, w->root, what);
	return -EIO;
}

static int tick(struct cow_walk *w)
{
	if (++w->st.reached < w->next_progress)
		return 0;
	w->next_progress = w->st.reached + PROGRESS_EVERY;
	if (w->progress && w->progress(w->progress_ctx, w->st.reached, w->st.read_bytes))
		return -ECANCELED;
	return 0;
}

/* ---- the traversal ----------------------------------------------------- */

static int reach(struct cow_walk *w, const cow_hash *h, enum kind k, const struct at *at, bool shared,
		 uint64_t *bytes);

struct node_ctx {
	struct cow_walk *w;
	enum kind k;
	const struct at *at;
	const cow_hash *node;    /* the node being decoded, and where it is */
	uint64_t pos;
	unsigned level;
	bool shared;             /* its children are reached by two roots at least */
	uint64_t *bytes;
	int res;                 /* 1: something is wrong below */
	cow_hash leaf[256];      /* a block map leaf's data blocks, marked at once */
	uint64_t leaf_key[256];
	unsigned nleaf;
};

static int visit_inode(struct node_ctx *c, uint64_t ino, const uint8_t *raw)
{
	struct cow_walk *w = c->w;
	bool verify = w->flags & COW_WALK_VERIFY;
	struct cow_irec rec;
	cow_irec_decode(raw, &rec);
	struct at a = { .ino = ino, .block = -1, .size = rec.size, .level = -1 };
	int r = 0;
	if (verify && ino >= w->next_ino)
		r = report(w, c->node, c->pos, c->k, &a, "holds an inode numbered past the next free one");
	int q = 0;
	bool empty = cow_hash_is_zero(&rec.content);
	switch (rec.mode & S_IFMT) {
	case S_IFREG:
		a.block = 0;
		q = empty ? 0 : reach(w, &rec.content, K_MAP, &a, c->shared, c->bytes);
		break;
	case S_IFDIR:
		q = empty ? 0 : reach(w, &rec.content, K_DIR, &a, c->shared, c->bytes);
		break;
	case S_IFLNK:
		if (empty)
			q = verify ? report(w, c->node, c->pos, c->k, &a, "holds a symlink without a target") : 0;
		else
			q = reach(w, &rec.content, K_SYMLINK, &a, c->shared, c->bytes);
		break;
	case S_IFIFO: case S_IFSOCK: case S_IFCHR: case S_IFBLK:
		break;
	default:
		if (verify && rec.mode)
			q = report(w, c->node, c->pos, c->k, &a, "holds an inode of no known type");
		break;
	}
	return q < 0 ? q : COW_MAX(r, q);
}

static int node_entry(void *ctx, unsigned slot, const uint8_t *e)
{
	struct node_ctx *c = ctx;
	uint32_t vsize = c->k == K_ITABLE ? COW_IREC_SIZE : COW_HASH_SIZE;
	uint64_t key = cow_tree_slot_key(vsize, c->level, c->at->base, slot);
	int r;
	if (c->level > 0) {
		cow_hash child;
		memcpy(child.b, e, COW_HASH_SIZE);
		struct at a = *c->at;
		a.level = (int)c->level - 1;
		a.base = key;
		if (c->k == K_MAP)
			a.block = (int64_t)key;
		r = reach(c->w, &child, c->k, &a, c->shared, c->bytes);
	} else if (c->k == K_MAP) {
		memcpy(c->leaf[c->nleaf].b, e, COW_HASH_SIZE);
		c->leaf_key[c->nleaf++] = key;
		r = 0;
	} else {
		r = visit_inode(c, key, e);
	}
	if (r > c->res)
		c->res = r;
	return r < 0 ? r : 0;
}

/* The data blocks of a block map leaf. */
static int visit_blocks(struct node_ctx *c)
{
	struct cow_walk *w = c->w;
	uint64_t nblocks = (c->at->size + COW_BLOCK_SIZE - 1) / COW_BLOCK_SIZE;
	int res = 0;
	if (w->flags & COW_WALK_VERIFY) {
		for (unsigned i = 0; i < c->nleaf; i++) {
			struct at a = *c->at;
			a.block = (int64_t)c->leaf_key[i];
			int r = 0;
			if (c->leaf_key[i] >= nblocks)
				r = report(w, c->node, c->pos, K_MAP, &a, "names a block past the end of the file");
			int q = reach(w, &c->leaf[i], K_DATA, &a, c->shared, c->bytes);
			if (q < 0)
				return q;
			res = COW_MAX(res, COW_MAX(r, q));
		}
		return res;
	}
	struct cow_mark m[256];
	int r = cow_store_mark(w->s, c->leaf, c->nleaf, w->root, c->shared, m);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < c->nleaf; i++) {
		if ((r = tick(w)) < 0)
			return r;
		if (m[i].flags & COW_MARK_MISSING) {
			w->st.missing++;
			continue;
		}
		*c->bytes += m[i].len;
		bool seen = m[i].flags & COW_MARK_SEEN;
		if (!seen || (!(m[i].flags & COW_MARK_SHARED) && (c->shared || m[i].owner != w->root)))
			w->st.entered++;
		if (!seen && (m[i].flags & COW_MARK_DAMAGED))
			w->st.damaged++;
	}
	return 0;
}

static int visit_node(struct cow_walk *w, const cow_hash *h, const void *buf, size_t len, uint64_t pos, enum kind k,
		      const struct at *at, bool shared, uint64_t *bytes)
{
	struct node_ctx *c = malloc(sizeof *c);
	if (!c)
		return -ENOMEM;
	*c = (struct node_ctx){ .w = w, .k = k, .at = at, .node = h, .pos = pos, .shared = shared, .bytes = bytes };
	unsigned level;
	/* node_entry needs the level before the first entry: decode the header twice */
	int r = cow_tree_node_decode(buf, len, k == K_ITABLE ? COW_IREC_SIZE : COW_HASH_SIZE, at->level, &level, NULL,
				     NULL);
	if (r == -EIO) {
		r = w->flags & COW_WALK_VERIFY ? report(w, h, pos, k, at, "is malformed")
					       : fatal(w, h, k, at, "malformed");
		goto out;
	}
	if (r < 0)
		goto out;
	c->level = level;
	r = cow_tree_node_decode(buf, len, k == K_ITABLE ? COW_IREC_SIZE : COW_HASH_SIZE, at->level, &level,
				 node_entry, c);
	if (r == 0 && c->nleaf)
		r = visit_blocks(c);
	if (r >= 0)
		r = COW_MAX(r, c->res);
out:
	free(c);
	return r;
}

static int visit_root(struct cow_walk *w, const cow_hash *h, const void *buf, size_t len, uint64_t pos, bool shared,
		      uint64_t *bytes)
{
	cow_hash itable;
	struct at a = { .block = -1, .level = -1 };
	if (cow_branch_root_decode(buf, len, &w->next_ino, &itable) < 0)
		return w->flags & COW_WALK_VERIFY ? report(w, h, pos, K_ROOT, &a, "is malformed")
						  : fatal(w, h, K_ROOT, &a, "malformed");
	if ((w->flags & COW_WALK_VERIFY) && !w->itable) {
		int r = cow_tree_open(w->s, &itable, COW_IREC_SIZE, &w->itable);
		if (r < 0)
			return r;
	}
	return cow_hash_is_zero(&itable) ? 0 : reach(w, &itable, K_ITABLE, &a, shared, bytes);
}

/* VERIFY: a directory object decodes, and each entry names an inode of the
 * same type that the branch has. */
static int check_dir(struct cow_walk *w, const cow_hash *h, const void *buf, size_t len, uint64_t pos,
		     const struct at *at)
{
	struct cow_dir *d;
	if (cow_dir_decode(buf, len, &d) < 0)
		return report(w, h, pos, K_DIR, at, "is malformed");
	struct cow_dirent *e;
	size_t n;
	int r = cow_dir_list(d, &e, &n);
	cow_dir_free(d);
	if (r < 0)
		return r;
	int res = 0;
	for (size_t i = 0; i < n && w->itable; i++) {
		uint8_t raw[COW_IREC_SIZE];
		if (cow_tree_get(w->itable, e[i].ino, raw) < 0)
			continue; /* the inode table's own damage is reported where it is */
		struct cow_irec rec;
		cow_irec_decode(raw, &rec);
		char what[COW_NAME_MAX + 96];
		if (!rec.mode)
			snprintf(what, sizeof what, "has an entry '%s' for inode %llu, which does not exist", e[i].name,
				 (unsigned long long)e[i].ino);
		else if (IFTODT(rec.mode) != e[i].type)
			snprintf(what, sizeof what, "has an entry '%s' whose type is not that of inode %llu", e[i].name,
				 (unsigned long long)e[i].ino);
		else
			continue;
		res = report(w, h, pos, K_DIR, at, what);
	}
	cow_dirents_free(e, n);
	return res;
}

/* Reach H from the current root as kind K.  Adds its logical bytes to
 * *BYTES.  Returns 1 if something is wrong at or below it (VERIFY), 0 if
 * not, or -errno. */
static int reach(struct cow_walk *w, const cow_hash *h, enum kind k, const struct at *at, bool shared,
		 uint64_t *bytes)
{
	bool verify = w->flags & COW_WALK_VERIFY;
	struct cow_mark m;
	int r = cow_store_mark(w->s, h, 1, w->root, shared, &m);
	if (r < 0 || (r = tick(w)) < 0)
		return r;
	if (m.flags & COW_MARK_MISSING) {
		if (verify)
			return report(w, h, 0, k, at, "is missing from the store");
		if (interior(k))
			return fatal(w, h, k, at, "missing from the store");
		w->st.missing++;
		return 0;
	}
	bool seen = m.flags & COW_MARK_SEEN;
	bool enter = !seen || (!(m.flags & COW_MARK_SHARED) && (shared || m.owner != w->root));
	if (!enter && !(verify && (m.flags & COW_MARK_BAD))) {
		const uint64_t *memo = interior(k) ? memo_get(w, h) : NULL;
		*bytes += memo ? *memo : m.len;
		return 0;
	}
	/* Entered: for the first time, to mark it shared, or (VERIFY) to report
	 * a known problem for this root too. */
	if (enter)
		w->st.entered++;
	bool child_shared = shared || (seen && m.owner != w->root);
	if (m.flags & COW_MARK_DAMAGED) {
		*bytes += m.len;
		if (verify)
			r = report(w, h, m.pos, k, at, "fails its record's checksum (damaged on disk)");
		else if (interior(k))
			return fatal(w, h, k, at, "damaged on disk");
		else if (!seen)
			w->st.damaged++;
		if (r > 0)
			cow_store_mark_bad(w->s, h);
		return r;
	}
	/* Data, directories and targets need no second read to be marked shared;
	 * interior objects are read again to reach what they name. */
	if (!interior(k) && (!verify || (seen && !(m.flags & COW_MARK_BAD)))) {
		*bytes += m.len;
		return 0;
	}
	void *buf;
	size_t len;
	uint64_t pos;
	r = cow_store_check(w->s, h, &pos, &buf, &len);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		*bytes += m.len;
		if (!verify)
			return fatal(w, h, k, at, r == -ENOENT ? "missing" : r == -EBADMSG ? "damaged" : "unreadable");
		cow_store_mark_bad(w->s, h);
		return report(w, h, m.pos, k, at,
			      r == -ENOENT    ? "is missing from the store"
			      : r == -EBADMSG ? "fails its record's checksum (damaged on disk)"
					      : "does not match its hash, or cannot be read");
	}
	w->st.read_bytes += len;
	uint64_t sub = len;
	switch (k) {
	case K_ROOT:
		r = visit_root(w, h, buf, len, pos, child_shared, &sub);
		break;
	case K_ITABLE:
	case K_MAP:
		r = visit_node(w, h, buf, len, pos, k, at, child_shared, &sub);
		break;
	case K_DIR:
		r = check_dir(w, h, buf, len, pos, at);
		break;
	case K_DATA:
		r = len != COW_BLOCK_SIZE ? report(w, h, pos, k, at, "is not 8192 bytes long") : 0;
		break;
	case K_SYMLINK:
		r = len == 0 || len >= 4096 || len != at->size
			    ? report(w, h, pos, k, at, "does not have the symlink's length")
			    : 0;
		break;
	}
	free(buf);
	if (r < 0)
		return r;
	if (interior(k)) {
		int q = memo_put(w, h, sub);
		if (q < 0)
			return q;
	}
	*bytes += sub;
	if (r > 0)
		cow_store_mark_bad(w->s, h);
	return r;
}

int cow_walk_root(struct cow_walk *w, uint32_t number, const cow_hash *root, uint64_t *ret_logical)
{
	if (number == 0 || number > COW_MARK_ROOT_MAX)
		return -EINVAL;
	w->root = number;
	w->next_ino = UINT64_MAX;
	cow_tree_free(w->itable);
	w->itable = NULL;
	uint64_t bytes = 0;
	struct at a = { .block = -1, .level = -1 };
	int r = cow_hash_is_zero(root) ? 0 : reach(w, root, K_ROOT, &a, false, &bytes);
	cow_tree_free(w->itable);
	w->itable = NULL;
	if (r < 0)
		return r;
	if (ret_logical)
		*ret_logical = bytes;
	return 0;
}

/* ---- paths ------------------------------------------------------------- */

struct path_ent {
	uint64_t ino;            /* 0: empty slot */
	char *path;
};

struct cow_walk_paths {
	struct path_ent *v;
	size_t cap, n;
};

static struct path_ent *path_slot(struct path_ent *v, size_t cap, uint64_t ino)
{
	size_t i = (ino * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
	while (v[i].ino && v[i].ino != ino)
		i = (i + 1) & (cap - 1);
	return &v[i];
}

const char *cow_walk_paths_get(struct cow_walk_paths *p, uint64_t ino)
{
	if (!ino || !p->cap)
		return NULL;
	return path_slot(p->v, p->cap, ino)->path;
}

/* Add INO -> PATH (taken); false if INO had a path already (PATH freed). */
static int path_add(struct cow_walk_paths *p, uint64_t ino, char *path)
{
	if ((p->n + 1) * 2 > p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 256;
		struct path_ent *n = calloc(ncap, sizeof *n);
		if (!n) {
			free(path);
			return -ENOMEM;
		}
		for (size_t i = 0; i < p->cap; i++)
			if (p->v[i].ino)
				*path_slot(n, ncap, p->v[i].ino) = p->v[i];
		free(p->v);
		p->v = n;
		p->cap = ncap;
	}
	struct path_ent *e = path_slot(p->v, p->cap, ino);
	if (e->ino) {
		free(path);
		return 0;
	}
	*e = (struct path_ent){ ino, path };
	p->n++;
	return 1;
}

void cow_walk_paths_free(struct cow_walk_paths *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->cap; i++)
		free(p->v[i].path);
	free(p->v);
	free(p);
}

int cow_walk_paths_open(struct cow_store *s, const cow_hash *root, struct cow_walk_paths **ret)
{
	struct cow_walk_paths *p = calloc(1, sizeof *p);
	if (!p)
		return -ENOMEM;
	char *slash = strdup("/");
	int r = slash ? path_add(p, COW_ROOT_INO, slash) : -ENOMEM;
	struct cow_tree *itable = NULL;
	uint64_t *stack = NULL;
	size_t depth = 0, cap = 0;
	void *buf = NULL;
	size_t len;
	cow_hash ih;
	uint64_t next_ino;
	if (r < 0 || cow_hash_is_zero(root))
		goto out;
	/* Damage is fsck's to report: what cannot be read simply has no path. */
	if (cow_store_check(s, root, NULL, &buf, &len) < 0)
		goto out;
	r = cow_branch_root_decode(buf, len, &next_ino, &ih);
	free(buf);
	if (r < 0 || (r = cow_tree_open(s, &ih, COW_IREC_SIZE, &itable)) < 0) {
		r = r == -EIO ? 0 : r;
		goto out;
	}
	stack = malloc(64 * sizeof *stack);
	if (!stack) {
		r = -ENOMEM;
		goto out;
	}
	cap = 64;
	stack[depth++] = COW_ROOT_INO;
	while (depth && r >= 0) {
		uint64_t dir = stack[--depth];
		uint8_t raw[COW_IREC_SIZE];
		struct cow_irec rec;
		struct cow_dir *d;
		struct cow_dirent *e;
		size_t n;
		if (cow_tree_get(itable, dir, raw) < 0)
			continue;
		cow_irec_decode(raw, &rec);
		if (!S_ISDIR(rec.mode) || cow_hash_is_zero(&rec.content) ||
		    cow_store_check(s, &rec.content, NULL, &buf, &len) < 0)
			continue;
		r = cow_dir_decode(buf, len, &d);
		free(buf);
		if (r < 0) {
			r = r == -EIO ? 0 : r;
			continue;
		}
		r = cow_dir_list(d, &e, &n);
		cow_dir_free(d);
		if (r < 0)
			break;
		const char *base = cow_walk_paths_get(p, dir);
		for (size_t i = 0; i < n && r >= 0; i++) {
			char *child = malloc(strlen(base) + strlen(e[i].name) + 2);
			if (!child) {
				r = -ENOMEM;
				break;
			}
			sprintf(child, "%s%s%s", base, strcmp(base, "/") ? "/" : "", e[i].name);
			r = path_add(p, e[i].ino, child);
			base = cow_walk_paths_get(p, dir); /* the table may have moved */
			if (r == 1 && e[i].type == DT_DIR) {
				if (depth == cap) {
					uint64_t *ns = realloc(stack, 2 * cap * sizeof *ns);
					if (!ns) {
						r = -ENOMEM;
						break;
					}
					stack = ns;
					cap *= 2;
				}
				stack[depth++] = e[i].ino;
			}
		}
		cow_dirents_free(e, n);
	}
out:
	free(stack);
	cow_tree_free(itable);
	if (r < 0) {
		cow_walk_paths_free(p);
		return r;
	}
	*ret = p;
	return 0;
}
