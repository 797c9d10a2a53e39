#include "diff.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "branch.h"
#include "store.h"

#define CHUNK 1024 /* block hashes fetched at a time */

struct side {
	struct cow_branch *b;
	uint64_t ino;     /* 0: absent */
	uint32_t mode;
	uint64_t size;
};

static uint64_t nblocks(uint64_t size) { return (size + COW_BLOCK_SIZE - 1) / COW_BLOCK_SIZE; }

/* Blocks of S's file in [from, to) that hold data (not holes). */
static int count_data(const struct side *s, uint64_t from, uint64_t to, cow_hash *buf, uint64_t *count)
{
	for (uint64_t i = from; i < to; i += CHUNK) {
		uint32_t n = (uint32_t)(to - i < CHUNK ? to - i : CHUNK);
		int r = cow_branch_block_hashes(s->b, s->ino, i, n, buf);
		if (r < 0)
			return r;
		for (uint32_t k = 0; k < n; k++)
			*count += !cow_hash_is_zero(&buf[k]);
	}
	return 0;
}

static int diff_file(const struct side *a, const struct side *b, uint64_t *changed)
{
	*changed = 0;
	cow_hash ra, rb;
	if (a->ino && b->ino && a->size == b->size && cow_branch_map_root(a->b, a->ino, &ra) == 0 &&
	    cow_branch_map_root(b->b, b->ino, &rb) == 0 && cow_hash_eq(&ra, &rb))
		return 0;
	cow_hash *ha = malloc(2 * CHUNK * sizeof *ha), *hb = ha + CHUNK;
	if (!ha)
		return -ENOMEM;
	uint64_t na = a->ino ? nblocks(a->size) : 0, nb = b->ino ? nblocks(b->size) : 0;
	uint64_t both = na < nb ? na : nb;
	int r = 0;
	for (uint64_t i = 0; r == 0 && i < both; i += CHUNK) {
		uint32_t n = (uint32_t)(both - i < CHUNK ? both - i : CHUNK);
		if ((r = cow_branch_block_hashes(a->b, a->ino, i, n, ha)) < 0 ||
		    (r = cow_branch_block_hashes(b->b, b->ino, i, n, hb)) < 0)
			break;
		for (uint32_t k = 0; k < n; k++)
			*changed += !cow_hash_eq(&ha[k], &hb[k]);
	}
	/* past the shorter file: its blocks are absent, so every block of
	 * data on the longer side is a difference */
	if (r == 0 && na > both)
		r = count_data(a, both, na, ha, changed);
	if (r == 0 && nb > both)
		r = count_data(b, both, nb, hb, changed);
	free(ha);
	return r;
}

static int diff_dir(struct side a, struct side b, const char *prefix, cow_diff_fn fn, void *ctx);

/* NAME at PREFIX on both sides (either ino may be 0). */
static int diff_entry(struct side a, struct side b, const char *prefix, const char *name, cow_diff_fn fn, void *ctx)
{
	struct cow_attr at;
	int r;
	if (a.ino) {
		if ((r = cow_branch_getattr(a.b, a.ino, &at)) < 0)
			return r;
		a.mode = at.mode;
		a.size = at.size;
	}
	if (b.ino) {
		if ((r = cow_branch_getattr(b.b, b.ino, &at)) < 0)
			return r;
		b.mode = at.mode;
		b.size = at.size;
	}
	size_t len = strlen(prefix) + strlen(name) + 2;
	char *path = malloc(len);
	if (!path)
		return -ENOMEM;
	snprintf(path, len, "%s%s%s", prefix, *prefix ? "/" : "", name);
	struct side da = a, db = b, fa = a, fb = b;
	if (!a.ino || !S_ISDIR(a.mode))
		da.ino = 0;
	if (!b.ino || !S_ISDIR(b.mode))
		db.ino = 0;
	if (!a.ino || !S_ISREG(a.mode))
		fa.ino = 0;
	if (!b.ino || !S_ISREG(b.mode))
		fb.ino = 0;
	r = 0;
	if (da.ino || db.ino)
		r = diff_dir(da, db, path, fn, ctx);
	if (r == 0 && (fa.ino || fb.ino)) {
		struct cow_diff_entry e = { path, fa.ino != 0, fb.ino != 0, fa.ino ? fa.size : 0, fb.ino ? fb.size : 0, 0 };
		r = diff_file(&fa, &fb, &e.changed);
		if (r == 0 && (e.changed || e.size_a != e.size_b || e.in_a != e.in_b))
			r = fn(ctx, &e);
	}
	free(path);
	return r;
}

static int diff_dir(struct side a, struct side b, const char *prefix, cow_diff_fn fn, void *ctx)
{
	struct cow_dirent *ea = NULL, *eb = NULL;
	size_t na = 0, nb = 0, i = 2, k = 2; /* past "." and ".." */
	int r = 0;
	if (a.ino)
		r = cow_branch_readdir(a.b, a.ino, &ea, &na);
	if (r == 0 && b.ino)
		r = cow_branch_readdir(b.b, b.ino, &eb, &nb);
	if (!a.ino)
		i = na = 0;
	if (!b.ino)
		k = nb = 0;
	/* both lists are sorted by name: merge them */
	while (r == 0 && (i < na || k < nb)) {
		int c = i == na ? 1 : k == nb ? -1 : strcmp(ea[i].name, eb[k].name);
		struct side sa = a, sb = b;
		sa.ino = c <= 0 ? ea[i].ino : 0;
		sb.ino = c >= 0 ? eb[k].ino : 0;
		r = diff_entry(sa, sb, prefix, c <= 0 ? ea[i].name : eb[k].name, fn, ctx);
		i += c <= 0;
		k += c >= 0;
	}
	cow_dirents_free(ea, a.ino ? na : 0);
	cow_dirents_free(eb, b.ino ? nb : 0);
	return r;
}

int cow_diff_branches(struct cow_branch *a, struct cow_branch *b, cow_diff_fn fn, void *ctx)
{
	struct side sa = { a, COW_ROOT_INO, S_IFDIR, 0 }, sb = { b, COW_ROOT_INO, S_IFDIR, 0 };
	return diff_dir(sa, sb, "", fn, ctx);
}
