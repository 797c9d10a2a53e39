#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

#define NODE_MAGIC 0x4e525443u /* "CTRN" */
#define NODE_VERSION 1
#define NODE_HDR 12
#define KIDS 256
#define KID_BITS 8

struct tnode {
	uint8_t level;
	bool dirty;
	cow_hash hash;           /* the persisted version, valid when !dirty */
	union {
		struct {
			struct tnode **kids;  /* loaded children, or NULL */
			cow_hash *kid_hash;   /* persisted children hashes */
		};
		uint8_t *vals;
	};
};

struct cow_tree {
	struct cow_store *store;
	uint32_t value_size;
	uint32_t leaf_fanout, leaf_bits;
	struct tnode *root;      /* NULL: not loaded yet, or empty */
	cow_hash root_hash;      /* persisted root */
	size_t mem;
};

static unsigned span_bits(const struct cow_tree *t, unsigned level) { return t->leaf_bits + KID_BITS * level; }

static bool fits(const struct cow_tree *t, unsigned level, uint64_t key)
{
	unsigned b = span_bits(t, level);
	return b >= 64 || key < (1ull << b);
}

static void node_free(struct cow_tree *t, struct tnode *n)
{
	if (!n)
		return;
	if (n->level) {
		for (int i = 0; i < KIDS; i++)
			node_free(t, n->kids[i]);
		free(n->kids);
		free(n->kid_hash);
		t->mem -= KIDS * (sizeof(void *) + sizeof(cow_hash));
	} else {
		free(n->vals);
		t->mem -= 8192;
	}
	t->mem -= sizeof *n;
	free(n);
}

static struct tnode *node_new(struct cow_tree *t, unsigned level)
{
	struct tnode *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->level = level;
	if (level) {
		n->kids = calloc(KIDS, sizeof *n->kids);
		n->kid_hash = calloc(KIDS, sizeof *n->kid_hash);
		if (!n->kids || !n->kid_hash) {
			free(n->kids);
			free(n->kid_hash);
			free(n);
			return NULL;
		}
		t->mem += KIDS * (sizeof(void *) + sizeof(cow_hash));
	} else {
		n->vals = calloc(1, 8192);
		if (!n->vals) {
			free(n);
			return NULL;
		}
		t->mem += 8192;
	}
	t->mem += sizeof *n;
	return n;
}

/* Check a stored node of a tree with VALUE_SIZE: its level, entry size and
 * fanout, and that its length matches its bitmap.  -EIO if malformed. */
static int node_parse(const uint8_t *b, size_t len, uint32_t value_size, int expect_level, unsigned *ret_level,
		      unsigned *ret_fanout, unsigned *ret_esize)
{
	if (len < NODE_HDR || cow_get_le32(b) != NODE_MAGIC || b[4] != NODE_VERSION)
		return -EIO;
	unsigned level = b[5];
	unsigned esize = cow_get_le16(b + 6), fanout = cow_get_le16(b + 8);
	if ((expect_level >= 0 && (int)level != expect_level) || level > 8)
		return -EIO;
	if (level ? (esize != COW_HASH_SIZE || fanout != KIDS) : (esize != value_size || fanout != 8192 / value_size))
		return -EIO;
	size_t bm = fanout / 8;
	if (len < NODE_HDR + bm)
		return -EIO;
	const uint8_t *bitmap = b + NODE_HDR;
	size_t present = 0;
	for (unsigned i = 0; i < fanout; i++)
		present += bitmap[i / 8] >> (i % 8) & 1;
	if (len != NODE_HDR + bm + present * esize)
		return -EIO;
	*ret_level = level;
	*ret_fanout = fanout;
	*ret_esize = esize;
	return 0;
}

static int node_load(struct cow_tree *t, const cow_hash *h, int expect_level, struct tnode **ret)
{
	void *buf;
	size_t len;
	int r = cow_store_get_alloc(t->store, h, &buf, &len);
	if (r < 0)
		return r;
	const uint8_t *b = buf;
	unsigned level, fanout, esize;
	r = node_parse(b, len, t->value_size, expect_level, &level, &fanout, &esize);
	if (r < 0) {
		char hex[65];
		cow_hash_to_hex(h, hex);
		cow_err("tree node %s is malformed", hex);
		goto out;
	}
	const uint8_t *bitmap = b + NODE_HDR, *e = bitmap + fanout / 8;
	struct tnode *n = node_new(t, level);
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < fanout; i++) {
		if (!(bitmap[i / 8] >> (i % 8) & 1))
			continue;
		if (level)
			memcpy(n->kid_hash[i].b, e, COW_HASH_SIZE);
		else
			memcpy(n->vals + (size_t)i * esize, e, esize);
		e += esize;
	}
	n->hash = *h;
	*ret = n;
out:
	free(buf);
	return r;
}

int cow_tree_node_decode(const void *buf, size_t len, uint32_t value_size, int expect_level, unsigned *ret_level,
			 cow_tree_entry_fn fn, void *ctx)
{
	if (value_size < 8 || value_size > 1024 || (value_size & (value_size - 1)))
		return -EINVAL;
	const uint8_t *b = buf;
	unsigned level, fanout, esize;
	int r = node_parse(b, len, value_size, expect_level, &level, &fanout, &esize);
	if (r < 0)
		return r;
	*ret_level = level;
	const uint8_t *bitmap = b + NODE_HDR, *e = bitmap + fanout / 8;
	for (unsigned i = 0; fn && i < fanout; i++) {
		if (!(bitmap[i / 8] >> (i % 8) & 1))
			continue;
		if ((r = fn(ctx, i, e)) < 0)
			return r;
		e += esize;
	}
	return 0;
}

uint64_t cow_tree_slot_key(uint32_t value_size, unsigned level, uint64_t base, unsigned slot)
{
	unsigned leaf_bits = __builtin_ctz(8192 / value_size);
	if (level == 0)
		return base + slot;
	unsigned sb = leaf_bits + KID_BITS * (level - 1);
	return sb >= 64 ? base : base + ((uint64_t)slot << sb);
}

int cow_tree_open(struct cow_store *s, const cow_hash *root, uint32_t value_size, struct cow_tree **ret)
{
	if (value_size < 8 || value_size > 1024 || (value_size & (value_size - 1))) /* a leaf holds >= 8 */
		return -EINVAL;
	struct cow_tree *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	t->store = s;
	t->value_size = value_size;
	t->leaf_fanout = 8192 / value_size;
	t->leaf_bits = __builtin_ctz(t->leaf_fanout);
	t->root_hash = root ? *root : cow_hash_zero;
	*ret = t;
	return 0;
}

void cow_tree_free(struct cow_tree *t)
{
	if (!t)
		return;
	node_free(t, t->root);
	free(t);
}

static int ensure_root(struct cow_tree *t)
{
	if (t->root || cow_hash_is_zero(&t->root_hash))
		return 0;
	return node_load(t, &t->root_hash, -1, &t->root);
}

static int kid_get(struct cow_tree *t, struct tnode *n, unsigned i, bool create, struct tnode **ret)
{
	if (!n->kids[i]) {
		if (!cow_hash_is_zero(&n->kid_hash[i])) {
			int r = node_load(t, &n->kid_hash[i], n->level - 1, &n->kids[i]);
			if (r < 0)
				return r;
		} else if (create) {
			n->kids[i] = node_new(t, n->level - 1);
			if (!n->kids[i])
				return -ENOMEM;
			n->kids[i]->dirty = true;
		}
	}
	*ret = n->kids[i];
	return 0;
}

static unsigned kid_index(const struct cow_tree *t, unsigned level, uint64_t key)
{
	return (key >> span_bits(t, level - 1)) & (KIDS - 1);
}

int cow_tree_get(struct cow_tree *t, uint64_t key, void *ret_val)
{
	int r = ensure_root(t);
	if (r < 0)
		return r;
	struct tnode *n = t->root;
	if (n && !fits(t, n->level, key))
		n = NULL; /* beyond what the tree covers */
	while (n && n->level)
		if ((r = kid_get(t, n, kid_index(t, n->level, key), false, &n)) < 0)
			return r;
	if (!n)
		memset(ret_val, 0, t->value_size);
	else
		memcpy(ret_val, n->vals + (size_t)(key & (t->leaf_fanout - 1)) * t->value_size, t->value_size);
	return 0;
}

int cow_tree_set(struct cow_tree *t, uint64_t key, const void *val)
{
	int r = ensure_root(t);
	if (r < 0)
		return r;
	if (!t->root) {
		t->root = node_new(t, 0);
		if (!t->root)
			return -ENOMEM;
		t->root->dirty = true;
	}
	while (!fits(t, t->root->level, key)) {
		struct tnode *nr = node_new(t, t->root->level + 1);
		if (!nr)
			return -ENOMEM;
		nr->kids[0] = t->root;
		nr->kid_hash[0] = t->root->hash;
		nr->dirty = true;
		t->root = nr;
	}
	struct tnode *n = t->root;
	n->dirty = true;
	while (n->level) {
		r = kid_get(t, n, kid_index(t, n->level, key), true, &n);
		if (r < 0)
			return r;
		n->dirty = true;
	}
	memcpy(n->vals + (size_t)(key & (t->leaf_fanout - 1)) * t->value_size, val, t->value_size);
	return 0;
}

static bool val_zero(const struct cow_tree *t, const uint8_t *v) { return cow_buf_is_zero(v, t->value_size); }

static int node_next(struct cow_tree *t, struct tnode *n, uint64_t base, uint64_t from, uint64_t *ret_key, void *ret_val)
{
	if (!n->level) {
		for (uint64_t i = from > base ? from - base : 0; i < t->leaf_fanout; i++) {
			const uint8_t *v = n->vals + i * t->value_size;
			if (!val_zero(t, v)) {
				*ret_key = base + i;
				memcpy(ret_val, v, t->value_size);
				return 0;
			}
		}
		return -ENOENT;
	}
	unsigned sb = span_bits(t, n->level - 1);
	unsigned i0 = from > base ? (unsigned)((from - base) >> sb) : 0;
	for (unsigned i = i0; i < KIDS; i++) {
		struct tnode *k;
		int r = kid_get(t, n, i, false, &k);
		if (r < 0)
			return r;
		if (!k)
			continue;
		r = node_next(t, k, base + ((uint64_t)i << sb), from, ret_key, ret_val);
		if (r != -ENOENT)
			return r;
	}
	return -ENOENT;
}

int cow_tree_next(struct cow_tree *t, uint64_t from, uint64_t *ret_key, void *ret_val)
{
	int r = ensure_root(t);
	if (r < 0)
		return r;
	if (!t->root || !fits(t, t->root->level, from))
		return -ENOENT;
	return node_next(t, t->root, 0, from, ret_key, ret_val);
}

static int node_truncate(struct cow_tree *t, struct tnode *n, uint64_t base, uint64_t from)
{
	n->dirty = true;
	if (!n->level) {
		uint64_t i = from > base ? from - base : 0;
		if (i < t->leaf_fanout)
			memset(n->vals + i * t->value_size, 0, (t->leaf_fanout - i) * t->value_size);
		return 0;
	}
	unsigned sb = span_bits(t, n->level - 1);
	unsigned i0 = from > base ? (unsigned)((from - base) >> sb) : 0;
	for (unsigned i = i0; i < KIDS; i++) {
		uint64_t kbase = base + ((uint64_t)i << sb);
		if (kbase >= from) {
			node_free(t, n->kids[i]);
			n->kids[i] = NULL;
			n->kid_hash[i] = cow_hash_zero;
			continue;
		}
		struct tnode *k;
		int r = kid_get(t, n, i, false, &k);
		if (r < 0)
			return r;
		if (k && (r = node_truncate(t, k, kbase, from)) < 0)
			return r;
	}
	return 0;
}

int cow_tree_truncate(struct cow_tree *t, uint64_t from)
{
	int r = ensure_root(t);
	if (r < 0 || !t->root || !fits(t, t->root->level, from))
		return r;
	return node_truncate(t, t->root, 0, from);
}

static int node_commit(struct cow_tree *t, struct tnode *n)
{
	if (!n->dirty)
		return 0;
	unsigned fanout = n->level ? KIDS : t->leaf_fanout;
	unsigned esize = n->level ? COW_HASH_SIZE : t->value_size;
	if (n->level) {
		for (unsigned i = 0; i < KIDS; i++) {
			if (!n->kids[i])
				continue;
			int r = node_commit(t, n->kids[i]);
			if (r < 0)
				return r;
			n->kid_hash[i] = n->kids[i]->hash;
		}
	}
	size_t bm = fanout / 8;
	uint8_t *buf = malloc(NODE_HDR + bm + (size_t)fanout * esize);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, NODE_HDR + bm);
	cow_put_le32(buf, NODE_MAGIC);
	buf[4] = NODE_VERSION;
	buf[5] = n->level;
	cow_put_le16(buf + 6, esize);
	cow_put_le16(buf + 8, fanout);
	uint8_t *e = buf + NODE_HDR + bm;
	for (unsigned i = 0; i < fanout; i++) {
		const uint8_t *v = n->level ? n->kid_hash[i].b : n->vals + (size_t)i * esize;
		if (cow_buf_is_zero(v, esize))
			continue;
		buf[NODE_HDR + i / 8] |= 1 << (i % 8);
		memcpy(e, v, esize);
		e += esize;
	}
	int r = 0;
	if (e == buf + NODE_HDR + bm)
		n->hash = cow_hash_zero; /* empty subtree: nothing stored */
	else
		r = cow_store_put(t->store, buf, e - buf, &n->hash);
	free(buf);
	if (r == 0)
		n->dirty = false;
	return r;
}

int cow_tree_commit(struct cow_tree *t, cow_hash *ret_root)
{
	if (t->root) {
		int r = node_commit(t, t->root);
		if (r < 0)
			return r;
		t->root_hash = t->root->hash;
	}
	*ret_root = t->root_hash;
	return 0;
}

bool cow_tree_dirty(const struct cow_tree *t) { return t->root && t->root->dirty; }

void cow_tree_trim(struct cow_tree *t)
{
	if (!t->root || t->root->dirty)
		return;
	t->root_hash = t->root->hash;
	node_free(t, t->root);
	t->root = NULL;
}
size_t cow_tree_mem(const struct cow_tree *t) { return t->mem; }
