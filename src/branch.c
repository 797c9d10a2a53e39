#include "branch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "tree.h"
#include "util.h"

#define BS COW_BLOCK_SIZE
#define ROOT_MAGIC 0x52534643u /* "CFSR" */
#define ROOT_VERSION 1
#define ROOT_SIZE 48
/* At most this many blocks in one transaction (a 1 MiB record of hashes). */
#define COW_TX_MAX_BLOCKS 32768

/* Transaction ops, appended in one META record: see docs/FORMAT.md. */
enum {
	OP_INODE = 1,   /* ino u64, inode record (128) */
	OP_DIRENT = 2,  /* dir u64, ino u64 (0: remove), type u8, name len u8, name */
	OP_FILEMAP = 3, /* ino u64, first block u64, count u32, hashes */
	OP_TRUNC = 4,   /* ino u64, first block to drop u64 */
	OP_FREE = 5,    /* ino u64 */
};

struct cow_inode {
	uint64_t ino;
	struct cow_irec rec;
	uint64_t nlookup;
	bool dirty;             /* changed since the last checkpoint */
	bool dir_dirty;
	struct cow_tree *map;   /* regular file: block map, loaded on demand */
	struct cow_dir *dir;    /* directory: entries, loaded on demand */
	char *target;           /* symlink: target, loaded on demand */
	struct cow_inode *next; /* cache hash chain */
};

struct cow_branch {
	struct cow_store *store;
	uint64_t id;
	pthread_mutex_t lock;
	/* everything below is protected by lock */
	struct cow_tree *itable;
	uint64_t next_ino;
	struct cow_inode **cache;
	size_t cache_buckets, cache_count;
	bool dirty;
	int failed;
	bool readonly;          /* a snapshot: every mutation is -EROFS */
	uint8_t *tx;
	size_t tx_len, tx_cap;
	int tx_err;
	/* Early reclaim (docs/RECLAIM.md): the blocks this state stores are
	 * tagged OWNER and PUT_GEN; a checkpoint moves PUT_GEN on; SHARE_GEN
	 * is the last generation a root that others took may hold. */
	uint32_t owner, put_gen, captured_gen, share_gen;
	cow_hash *tx_old;       /* blocks the open transaction replaces */
	size_t ntx_old, tx_old_cap;
	struct reclaim_cand { cow_hash h; uint64_t pos; } *cand; /* replaced by a logged transaction at POS */
	size_t ncand, cand_cap;
};
/* Candidates beyond this wait for nobody: GC finds them (10 MiB). */
#define CAND_MAX (256u << 10)

/* The coarse clock, as the kernel's own: with the write-back cache it
 * stamps a write's mtime and ctime itself and sends them in a SETATTR
 * (at fsync(2) too), which then finds the times cow_branch_write set and
 * changes nothing; and times the kernel and the daemon set never run
 * backwards against each other. */
static void now(struct timespec *ts) { clock_gettime(CLOCK_REALTIME_COARSE, ts); }

static uint8_t dtype_of(uint32_t mode) { return (uint8_t)IFTODT(mode); }

static bool irec_same(const struct cow_irec *x, const struct cow_irec *y)
{
	uint8_t ex[COW_IREC_SIZE], ey[COW_IREC_SIZE];
	cow_irec_encode(x, ex);
	cow_irec_encode(y, ey);
	return memcmp(ex, ey, sizeof ex) == 0;
}

/* ---- inode cache ------------------------------------------------------ */

static struct cow_inode **cache_slot(struct cow_branch *b, uint64_t ino)
{
	struct cow_inode **p = &b->cache[(ino * 0x9E3779B97F4A7C15ull >> 40) & (b->cache_buckets - 1)];
	while (*p && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

static void inode_drop_content(struct cow_inode *in)
{
	cow_tree_free(in->map);
	cow_dir_free(in->dir);
	free(in->target);
	in->map = NULL;
	in->dir = NULL;
	in->target = NULL;
}

static void cache_remove(struct cow_branch *b, struct cow_inode *in)
{
	struct cow_inode **p = cache_slot(b, in->ino);
	*p = in->next;
	b->cache_count--;
	inode_drop_content(in);
	free(in);
}

static int cache_grow(struct cow_branch *b)
{
	size_t n = b->cache_buckets ? b->cache_buckets * 2 : 1024;
	struct cow_inode **nc = calloc(n, sizeof *nc);
	if (!nc)
		return -ENOMEM;
	struct cow_inode **old = b->cache;
	size_t on = b->cache_buckets;
	b->cache = nc;
	b->cache_buckets = n;
	for (size_t i = 0; i < on; i++)
		for (struct cow_inode *in = old[i], *nx; in; in = nx) {
			nx = in->next;
			struct cow_inode **p = cache_slot(b, in->ino);
			in->next = NULL;
			*p = in;
		}
	free(old);
	return 0;
}

/* Find INO in the cache or the inode table; with CREATE, make a blank one. */
static int inode_get(struct cow_branch *b, uint64_t ino, bool create, struct cow_inode **ret)
{
	struct cow_inode **p = cache_slot(b, ino);
	if (*p) {
		*ret = *p;
		return 0;
	}
	uint8_t raw[COW_IREC_SIZE];
	int r = cow_tree_get(b->itable, ino, raw);
	if (r < 0)
		return r;
	struct cow_irec rec;
	cow_irec_decode(raw, &rec);
	if (!rec.mode && !create)
		return -ENOENT;
	if (b->cache_count >= b->cache_buckets) {
		if ((r = cache_grow(b)) < 0)
			return r;
		p = cache_slot(b, ino);
	}
	struct cow_inode *in = calloc(1, sizeof *in);
	if (!in)
		return -ENOMEM;
	in->ino = ino;
	in->rec = rec;
	*p = in;
	b->cache_count++;
	*ret = in;
	return 0;
}

static int inode_map(struct cow_branch *b, struct cow_inode *in, struct cow_tree **ret)
{
	if (!in->map) {
		int r = cow_tree_open(b->store, &in->rec.content, COW_HASH_SIZE, &in->map);
		if (r < 0)
			return r;
	}
	*ret = in->map;
	return 0;
}

static int inode_dir(struct cow_branch *b, struct cow_inode *in, struct cow_dir **ret)
{
	if (!S_ISDIR(in->rec.mode))
		return -ENOTDIR;
	if (!in->dir) {
		if (cow_hash_is_zero(&in->rec.content)) {
			in->dir = cow_dir_new();
			if (!in->dir)
				return -ENOMEM;
		} else {
			void *buf;
			size_t len;
			int r = cow_store_get_alloc(b->store, &in->rec.content, &buf, &len);
			if (r < 0)
				return r;
			r = cow_dir_decode(buf, len, &in->dir);
			free(buf);
			if (r < 0) {
				cow_err("directory inode %llu of branch %llu: malformed directory object",
					(unsigned long long)in->ino, (unsigned long long)b->id);
				return -EIO;
			}
		}
	}
	*ret = in->dir;
	return 0;
}

static void fill_attr(const struct cow_inode *in, struct cow_attr *a)
{
	const struct cow_irec *r = &in->rec;
	*a = (struct cow_attr){
		.ino = in->ino, .mode = r->mode, .uid = r->uid, .gid = r->gid, .nlink = r->nlink,
		.size = r->size, .blocks = (r->size + 511) / 512,
		.rdev = (S_ISCHR(r->mode) || S_ISBLK(r->mode)) ? r->rdev : 0,
		.atime = r->atime, .mtime = r->mtime, .ctime = r->ctime,
	};
}

/* ---- transactions ----------------------------------------------------- */

static void tx_bytes(struct cow_branch *b, const void *p, size_t n)
{
	if (b->tx_err)
		return;
	if (b->tx_len + n > b->tx_cap) {
		size_t cap = COW_MAX(b->tx_cap * 2, b->tx_len + n + 256);
		uint8_t *t = realloc(b->tx, cap);
		if (!t) {
			b->tx_err = -ENOMEM;
			return;
		}
		b->tx = t;
		b->tx_cap = cap;
	}
	memcpy(b->tx + b->tx_len, p, n);
	b->tx_len += n;
}

static void tx_u8(struct cow_branch *b, uint8_t v) { tx_bytes(b, &v, 1); }
static void tx_u32(struct cow_branch *b, uint32_t v) { uint8_t x[4]; cow_put_le32(x, v); tx_bytes(b, x, 4); }
static void tx_u64(struct cow_branch *b, uint64_t v) { uint8_t x[8]; cow_put_le64(x, v); tx_bytes(b, x, 8); }

static void tx_begin(struct cow_branch *b)
{
	b->tx_len = 0;
	b->tx_err = 0;
	b->ntx_old = 0;
	tx_u64(b, b->id);
}

static void tx_op(struct cow_branch *b, uint8_t op, uint32_t len)
{
	tx_u8(b, op);
	tx_u32(b, len);
}

static void tx_inode(struct cow_branch *b, uint64_t ino, const struct cow_irec *rec)
{
	uint8_t raw[COW_IREC_SIZE];
	cow_irec_encode(rec, raw);
	tx_op(b, OP_INODE, 8 + COW_IREC_SIZE);
	tx_u64(b, ino);
	tx_bytes(b, raw, sizeof raw);
}

static void tx_dirent(struct cow_branch *b, uint64_t dir, const char *name, uint64_t ino, uint8_t type)
{
	size_t nl = strlen(name);
	tx_op(b, OP_DIRENT, 18 + nl);
	tx_u64(b, dir);
	tx_u64(b, ino);
	tx_u8(b, type);
	tx_u8(b, (uint8_t)nl);
	tx_bytes(b, name, nl);
}

static void tx_filemap(struct cow_branch *b, uint64_t ino, uint64_t first, uint32_t n, const cow_hash *h)
{
	tx_op(b, OP_FILEMAP, 20 + n * COW_HASH_SIZE);
	tx_u64(b, ino);
	tx_u64(b, first);
	tx_u32(b, n);
	tx_bytes(b, h, (size_t)n * COW_HASH_SIZE);
}

static void tx_trunc(struct cow_branch *b, uint64_t ino, uint64_t first)
{
	tx_op(b, OP_TRUNC, 16);
	tx_u64(b, ino);
	tx_u64(b, first);
}

static void tx_free(struct cow_branch *b, uint64_t ino)
{
	tx_op(b, OP_FREE, 8);
	tx_u64(b, ino);
}

static int apply_op(struct cow_branch *b, uint8_t op, const uint8_t *p, uint32_t len)
{
	struct cow_inode *in;
	int r;
	if (len < 8)
		return -EBADMSG;
	uint64_t ino = cow_get_le64(p);
	switch (op) {
	case OP_INODE: {
		if (len != 8 + COW_IREC_SIZE || ino == 0)
			return -EBADMSG;
		struct cow_irec rec;
		cow_irec_decode(p + 8, &rec);
		if ((r = inode_get(b, ino, true, &in)) < 0)
			return r;
		bool fresh = in->rec.mode == 0;
		if (!S_ISLNK(rec.mode))
			rec.content = in->rec.content;
		else if (!cow_hash_eq(&rec.content, &in->rec.content)) {
			free(in->target);
			in->target = NULL;
		}
		in->rec = rec;
		if (fresh && S_ISDIR(rec.mode))
			in->dir_dirty = true; /* written out at checkpoint, even while empty */
		in->dirty = true;
		if (ino >= b->next_ino)
			b->next_ino = ino + 1;
		return 0;
	}
	case OP_DIRENT: {
		if (len < 18 || len != 18u + p[17] || p[17] == 0)
			return -EBADMSG;
		char name[COW_NAME_MAX + 1];
		memcpy(name, p + 18, p[17]);
		name[p[17]] = 0;
		struct cow_dir *d;
		if ((r = inode_get(b, ino, false, &in)) < 0)
			return r == -ENOENT ? 0 : r;
		if ((r = inode_dir(b, in, &d)) < 0)
			return r;
		uint64_t child = cow_get_le64(p + 8);
		r = child ? cow_dir_set(d, name, child, p[16]) : cow_dir_del(d, name);
		if (r < 0 && r != -ENOENT)
			return r;
		in->dirty = in->dir_dirty = true;
		return 0;
	}
	case OP_FILEMAP: {
		if (len < 20)
			return -EBADMSG;
		uint64_t first = cow_get_le64(p + 8);
		uint32_t n = cow_get_le32(p + 16);
		if (len != 20 + (uint64_t)n * COW_HASH_SIZE)
			return -EBADMSG;
		if ((r = inode_get(b, ino, false, &in)) < 0)
			return r == -ENOENT ? 0 : r; /* an orphan freed since: nothing to do */
		struct cow_tree *m;
		if ((r = inode_map(b, in, &m)) < 0)
			return r;
		for (uint32_t i = 0; i < n; i++)
			if ((r = cow_tree_set(m, first + i, p + 20 + (size_t)i * COW_HASH_SIZE)) < 0)
				return r;
		in->dirty = true;
		return 0;
	}
	case OP_TRUNC: {
		if (len != 16)
			return -EBADMSG;
		if ((r = inode_get(b, ino, false, &in)) < 0)
			return r == -ENOENT ? 0 : r;
		struct cow_tree *m;
		if ((r = inode_map(b, in, &m)) < 0 || (r = cow_tree_truncate(m, cow_get_le64(p + 8))) < 0)
			return r;
		in->dirty = true;
		return 0;
	}
	case OP_FREE: {
		static const uint8_t zero[COW_IREC_SIZE];
		if (len != 8)
			return -EBADMSG;
		struct cow_inode **slot = cache_slot(b, ino);
		if (*slot)
			cache_remove(b, *slot);
		return cow_tree_set(b->itable, ino, zero);
	}
	default:
		return -EBADMSG;
	}
}

/* Apply one transaction (live, or replayed from the log). */
static int tx_apply(struct cow_branch *b, const uint8_t *p, size_t len)
{
	size_t off = 8;
	while (off < len) {
		if (len - off < 5)
			return -EBADMSG;
		uint8_t op = p[off];
		uint32_t olen = cow_get_le32(p + off + 1);
		if (olen > len - off - 5)
			return -EBADMSG;
		int r = apply_op(b, op, p + off + 5, olen);
		if (r < 0)
			return r;
		off += 5 + olen;
	}
	b->dirty = true;
	return 0;
}

/* The open transaction replaces block H (of this file map): a candidate
 * for early reclaim once the transaction is logged. */
static void tx_replaced(struct cow_branch *b, const cow_hash *h)
{
	if (!cow_store_reclaim_on(b->store) || b->ntx_old >= CAND_MAX)
		return; /* nothing would forget it (or too many at once): GC finds it */
	if (b->ntx_old == b->tx_old_cap) {
		size_t ncap = b->tx_old_cap ? b->tx_old_cap * 2 : 64;
		cow_hash *n = realloc(b->tx_old, ncap * sizeof *n);
		if (!n)
			return; /* GC will find it */
		b->tx_old = n;
		b->tx_old_cap = ncap;
	}
	b->tx_old[b->ntx_old++] = *h;
}

/* The replaced blocks of the transaction logged at POS become candidates. */
static void tx_candidates(struct cow_branch *b, uint64_t pos)
{
	size_t n = COW_MIN(b->ntx_old, CAND_MAX - COW_MIN(b->ncand, CAND_MAX));
	if (b->ncand + n > b->cand_cap) {
		size_t ncap = COW_MAX(b->cand_cap * 2, b->ncand + n);
		struct reclaim_cand *c = realloc(b->cand, ncap * sizeof *c);
		if (!c)
			n = 0;
		else {
			b->cand = c;
			b->cand_cap = ncap;
		}
	}
	for (size_t i = 0; i < n; i++)
		b->cand[b->ncand++] = (struct reclaim_cand){ b->tx_old[i], pos };
	b->ntx_old = 0;
}

/* The open transaction drops IN's blocks from index FIRST on (a truncate,
 * or the file freed): each a candidate, as an overwritten block is.
 * Called locked; a map that cannot be read nominates nothing (GC finds
 * them). */
static void tx_dropped_from(struct cow_branch *b, struct cow_inode *in, uint64_t first)
{
	struct cow_tree *m;
	if (!cow_store_reclaim_on(b->store) || !S_ISREG(in->rec.mode) || inode_map(b, in, &m) < 0)
		return;
	uint64_t k = first;
	cow_hash h;
	while (b->ntx_old < CAND_MAX && cow_tree_next(m, k, &k, &h) == 0) {
		if (!cow_hash_is_zero(&h))
			tx_replaced(b, &h);
		if (++k == 0)
			break;
	}
}

/* Log the transaction, then apply it.  Nothing changes if the append fails. */
static int tx_commit(struct cow_branch *b)
{
	if (b->tx_err)
		return b->tx_err;
	struct iovec iov = { b->tx, b->tx_len };
	uint64_t pos;
	int r = cow_store_meta_append(b->store, &iov, 1, &pos);
	if (r < 0)
		return r;
	tx_candidates(b, pos);
	r = tx_apply(b, b->tx, b->tx_len);
	if (r < 0) {
		b->failed = -EIO;
		cow_err("branch %llu: applying a logged change failed (%s); the branch is now read-only",
			(unsigned long long)b->id, strerror(-r));
		return -EIO;
	}
	return 0;
}

static int replay_record(void *ctx, uint64_t pos, const uint8_t *p, uint32_t len)
{
	struct cow_branch *b = ctx;
	if (len < 8 || cow_get_le64(p) != b->id)
		return 0;
	int r = tx_apply(b, p, len);
	if (r < 0)
		cow_err("branch %llu: log record at segment %u offset %u cannot be replayed: %s",
			(unsigned long long)b->id, (unsigned)(pos >> 32), (unsigned)pos, strerror(-r));
	return r;
}

/* ---- open, checkpoint ------------------------------------------------- */

static int checkpoint_locked(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos);

int cow_branch_open(struct cow_store *s, uint64_t id, const cow_hash *root, uint64_t log_pos,
		    struct cow_branch **ret)
{
	struct cow_branch *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	b->store = s;
	b->id = id;
	b->next_ino = COW_ROOT_INO;
	b->owner = cow_store_new_owner(s);
	b->put_gen = cow_store_new_gen(s);
	pthread_mutex_init(&b->lock, NULL);
	int r = cache_grow(b);
	if (r < 0)
		goto fail;
	cow_hash itable_root = cow_hash_zero;
	if (!cow_hash_is_zero(root)) {
		void *buf;
		size_t len;
		r = cow_store_get_alloc(s, root, &buf, &len);
		if (r < 0)
			goto fail;
		r = cow_branch_root_decode(buf, len, &b->next_ino, &itable_root);
		free(buf);
		if (r < 0) {
			cow_err("branch %llu: root object is malformed", (unsigned long long)id);
			goto fail;
		}
	}
	r = cow_tree_open(s, &itable_root, COW_IREC_SIZE, &b->itable);
	if (r < 0)
		goto fail;
	r = cow_store_meta_scan(s, log_pos, replay_record, b);
	if (r < 0)
		goto fail;
	/* Inodes unlinked while open when the daemon stopped: nobody holds them now. */
	for (size_t i = 0; i < b->cache_buckets; i++)
		for (struct cow_inode *in = b->cache[i], *nx; in; in = nx) {
			nx = in->next;
			if (in->rec.nlink == 0 && in->rec.mode) {
				tx_begin(b);
				tx_free(b, in->ino);
				if ((r = tx_commit(b)) < 0)
					goto fail;
			}
		}
	*ret = b;
	return 0;
fail:
	cow_branch_free(b);
	return r;
}

int cow_branch_root_decode(const void *buf, size_t len, uint64_t *ret_next_ino, cow_hash *ret_itable)
{
	const uint8_t *p = buf;
	if (len != ROOT_SIZE || cow_get_le32(p) != ROOT_MAGIC || cow_get_le32(p + 4) != ROOT_VERSION)
		return -EIO;
	*ret_next_ino = cow_get_le64(p + 8);
	memcpy(ret_itable->b, p + 16, COW_HASH_SIZE);
	return 0;
}

int cow_branch_init_root(struct cow_branch *b, uint32_t mode, uint32_t uid, uint32_t gid)
{
	struct cow_irec rec = { .mode = S_IFDIR | (mode & 07777), .uid = uid, .gid = gid, .nlink = 2,
				.rdev = COW_ROOT_INO };
	now(&rec.mtime);
	rec.atime = rec.ctime = rec.mtime;
	pthread_mutex_lock(&b->lock);
	tx_begin(b);
	tx_inode(b, COW_ROOT_INO, &rec);
	int r = tx_commit(b);
	pthread_mutex_unlock(&b->lock);
	return r;
}

void cow_branch_free(struct cow_branch *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->cache_buckets; i++)
		for (struct cow_inode *in = b->cache[i], *nx; in; in = nx) {
			nx = in->next;
			inode_drop_content(in);
			free(in);
		}
	free(b->cache);
	cow_tree_free(b->itable);
	free(b->tx);
	free(b->tx_old);
	free(b->cand);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

uint64_t cow_branch_id(const struct cow_branch *b) { return b->id; }

void cow_branch_set_readonly(struct cow_branch *b)
{
	pthread_mutex_lock(&b->lock);
	b->readonly = true;
	pthread_mutex_unlock(&b->lock);
}

bool cow_branch_dirty(struct cow_branch *b)
{
	pthread_mutex_lock(&b->lock);
	bool d = b->dirty;
	pthread_mutex_unlock(&b->lock);
	return d;
}

size_t cow_branch_mem(struct cow_branch *b)
{
	pthread_mutex_lock(&b->lock);
	size_t m = cow_tree_mem(b->itable) + b->cache_buckets * sizeof(void *);
	for (size_t i = 0; i < b->cache_buckets; i++)
		for (struct cow_inode *in = b->cache[i]; in; in = in->next)
			m += sizeof *in + (in->map ? cow_tree_mem(in->map) : 0) +
			     (in->dir ? cow_dir_count(in->dir) * 48 : 0);
	pthread_mutex_unlock(&b->lock);
	return m;
}

/* Write one dirty inode's content and record into the inode table. */
static int checkpoint_inode(struct cow_branch *b, struct cow_inode *in)
{
	int r = 0;
	if (S_ISREG(in->rec.mode) && in->map) {
		r = cow_tree_commit(in->map, &in->rec.content);
	} else if (S_ISDIR(in->rec.mode) && in->dir && in->dir_dirty) {
		void *buf;
		size_t len;
		r = cow_dir_encode(in->dir, &buf, &len);
		if (r == 0) {
			r = cow_store_put(b->store, buf, len, &in->rec.content);
			free(buf);
		}
		if (r == 0)
			in->dir_dirty = false;
	}
	if (r < 0)
		return r;
	uint8_t raw[COW_IREC_SIZE] = { 0 };
	/* An unlinked inode still open is not part of the persistent state. */
	if (in->rec.nlink > 0)
		cow_irec_encode(&in->rec, raw);
	r = cow_tree_set(b->itable, in->ino, raw);
	if (r == 0)
		in->dirty = false;
	return r;
}

void cow_branch_freeze(struct cow_branch *b) { pthread_mutex_lock(&b->lock); }

void cow_branch_shared_frozen(struct cow_branch *b) { b->share_gen = b->captured_gen; }

int cow_branch_reclaim(struct cow_branch *b, struct cow_store_forgot *acc)
{
	uint64_t durable = cow_store_durable_end(b->store);
	pthread_mutex_lock(&b->lock);
	size_t n = 0;
	while (n < b->ncand && b->cand[n].pos < durable) /* logged in order */
		n++;
	cow_hash *h = n ? malloc(n * sizeof *h) : NULL;
	if (h) {
		for (size_t i = 0; i < n; i++)
			h[i] = b->cand[i].h;
		memmove(b->cand, b->cand + n, (b->ncand - n) * sizeof *b->cand);
		b->ncand -= n;
	}
	uint32_t owner = b->owner, share_gen = b->share_gen;
	pthread_mutex_unlock(&b->lock);
	struct cow_store_forgot f = { 0 };
	int r = h ? cow_store_forget(b->store, h, n, owner, share_gen, &f) : n ? -ENOMEM : 0;
	free(h);
	if (r == -EBUSY)
		r = 0; /* a GC runs: it finds them itself */
	acc->objects += f.objects;
	acc->bytes += f.bytes;
	return r;
}
void cow_branch_thaw(struct cow_branch *b) { pthread_mutex_unlock(&b->lock); }

int cow_branch_checkpoint(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos)
{
	pthread_mutex_lock(&b->lock);
	int r = checkpoint_locked(b, ret_root, ret_log_pos);
	pthread_mutex_unlock(&b->lock);
	if (r == 0)
		r = cow_store_sync(b->store);
	return r;
}

int cow_branch_checkpoint_frozen(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos)
{
	return checkpoint_locked(b, ret_root, ret_log_pos);
}

/* Fold the live state into a root; the caller holds b->lock and syncs. */
static int checkpoint_locked(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos)
{
	int r = b->failed;
	if (r < 0)
		goto out;
	for (size_t i = 0; i < b->cache_buckets && r == 0; i++)
		for (struct cow_inode *in = b->cache[i]; in && r == 0; in = in->next)
			if (in->dirty)
				r = checkpoint_inode(b, in);
	cow_hash iroot;
	if (r == 0)
		r = cow_tree_commit(b->itable, &iroot);
	if (r < 0)
		goto out;
	uint8_t obj[ROOT_SIZE] = { 0 };
	cow_put_le32(obj, ROOT_MAGIC);
	cow_put_le32(obj + 4, ROOT_VERSION);
	cow_put_le64(obj + 8, b->next_ino);
	memcpy(obj + 16, iroot.b, COW_HASH_SIZE);
	r = cow_store_put(b->store, obj, sizeof obj, ret_root);
	if (r < 0)
		goto out;
	/* Every record of this branch so far was appended under this lock: all
	 * of them are folded into the root, so replay may start here. */
	*ret_log_pos = cow_store_log_end(b->store);
	b->dirty = false;
	/* what is put from now on is in no root yet */
	b->captured_gen = b->put_gen;
	__atomic_store_n(&b->put_gen, cow_store_new_gen(b->store), __ATOMIC_RELAXED);
	/* Keep memory bounded: everything is clean now and can be read back on
	 * demand.  Inodes the kernel no longer references go; the others drop
	 * their loaded tree nodes. */
	for (size_t i = 0; i < b->cache_buckets; i++)
		for (struct cow_inode *in = b->cache[i], *nx; in; in = nx) {
			nx = in->next;
			if (in->nlookup == 0 && in->ino != COW_ROOT_INO)
				cache_remove(b, in);
			else if (in->map)
				cow_tree_trim(in->map);
		}
	cow_tree_trim(b->itable);
out:
	return r;
}

/* ---- operations ------------------------------------------------------- */

#define LOCK_OR_FAIL(b)                        \
	do {                                   \
		pthread_mutex_lock(&(b)->lock); \
		if ((b)->failed || (b)->readonly) { \
			r = (b)->failed ? (b)->failed : -EROFS; \
			goto out;              \
		}                              \
	} while (0)

int cow_branch_map_root(struct cow_branch *b, uint64_t ino, cow_hash *ret)
{
	struct cow_inode *in;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0 && !S_ISREG(in->rec.mode))
		r = -EINVAL;
	if (r == 0 && in->map && cow_tree_dirty(in->map))
		r = -EAGAIN;
	if (r == 0)
		*ret = in->rec.content;
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_block_hashes(struct cow_branch *b, uint64_t ino, uint64_t first, uint32_t n, cow_hash *ret)
{
	struct cow_inode *in;
	struct cow_tree *m;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0 && !S_ISREG(in->rec.mode))
		r = -EINVAL;
	if (r == 0)
		r = inode_map(b, in, &m);
	for (uint32_t i = 0; r == 0 && i < n; i++)
		r = cow_tree_get(m, first + i, &ret[i]);
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_getattr(struct cow_branch *b, uint64_t ino, struct cow_attr *ret)
{
	struct cow_inode *in;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0)
		fill_attr(in, ret);
	pthread_mutex_unlock(&b->lock);
	return r;
}

static int dir_child(struct cow_branch *b, uint64_t parent, const char *name, struct cow_inode **ret_dir,
		     uint64_t *ret_ino, uint8_t *ret_type)
{
	struct cow_inode *p;
	struct cow_dir *d;
	int r = inode_get(b, parent, false, &p);
	if (r < 0)
		return r;
	if ((r = inode_dir(b, p, &d)) < 0)
		return r;
	*ret_dir = p;
	if (strlen(name) > COW_NAME_MAX)
		return -ENAMETOOLONG;
	return cow_dir_lookup(d, name, ret_ino, ret_type);
}

int cow_branch_lookup(struct cow_branch *b, uint64_t parent, const char *name, struct cow_attr *ret)
{
	struct cow_inode *p, *in;
	uint64_t ino;
	pthread_mutex_lock(&b->lock);
	int r = dir_child(b, parent, name, &p, &ino, NULL);
	if (r == 0)
		r = inode_get(b, ino, false, &in);
	if (r == 0) {
		in->nlookup++;
		fill_attr(in, ret);
	}
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_ref(struct cow_branch *b, uint64_t ino, struct cow_attr *ret)
{
	struct cow_inode *in;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0) {
		in->nlookup++;
		fill_attr(in, ret);
	}
	pthread_mutex_unlock(&b->lock);
	return r;
}

/* Free an unlinked inode once nothing references it. */
static int maybe_free(struct cow_branch *b, struct cow_inode *in)
{
	if (in->rec.nlink > 0 || in->nlookup > 0)
		return 0;
	tx_begin(b);
	tx_dropped_from(b, in, 0);
	tx_free(b, in->ino);
	return tx_commit(b);
}

void cow_branch_forget(struct cow_branch *b, uint64_t ino, uint64_t nlookup)
{
	pthread_mutex_lock(&b->lock);
	struct cow_inode **p = cache_slot(b, ino);
	if (*p) {
		struct cow_inode *in = *p;
		in->nlookup -= COW_MIN(nlookup, in->nlookup);
		if (!b->failed && !b->readonly)
			maybe_free(b, in);
	}
	pthread_mutex_unlock(&b->lock);
}

/* Read block IDX of a file into BUF (zeros for a hole). Called locked. */
static int read_block_locked(struct cow_branch *b, struct cow_tree *m, uint64_t idx, uint8_t *buf)
{
	cow_hash h;
	int r = cow_tree_get(m, idx, &h);
	return r < 0 ? r : cow_store_get(b->store, &h, buf, BS);
}

/* Blocks wholly inside [off, off+len): *ret_first and the count. */
static uint32_t full_blocks(off_t off, size_t len, uint64_t *ret_first)
{
	uint64_t first = ((uint64_t)off + BS - 1) / BS, end = ((uint64_t)off + len) / BS;
	*ret_first = first;
	return end > first ? (uint32_t)(end - first) : 0;
}

/* Log new contents for [off, off+len) of a file: SRC, or zeros if NULL.
 * Partial blocks at either end are read, merged and rewritten; all new
 * blocks go to the store in one batch.  PRE, if not NULL, holds the hashes
 * of the full blocks (see full_blocks()), already stored by the caller.
 * Adds the FILEMAP op to the open transaction.  Called locked. */
static int tx_write_range(struct cow_branch *b, struct cow_inode *in, off_t off, size_t len, const uint8_t *src,
			  const cow_hash *pre)
{
	static const uint8_t zero_block[BS];
	struct cow_tree *m;
	int r = inode_map(b, in, &m);
	if (r < 0 || len == 0)
		return r;
	uint64_t first = off / BS, last = (off + len - 1) / BS;
	if (last - first >= COW_TX_MAX_BLOCKS)
		return -EFBIG; /* callers split larger ranges into several transactions */
	uint32_t n = (uint32_t)(last - first + 1);
	uint64_t pre_first = 0;
	uint32_t npre = pre ? full_blocks(off, len, &pre_first) : 0;
	cow_hash *h = malloc(n * sizeof *h), *put_h = malloc(n * sizeof *put_h);
	const uint8_t **blocks = malloc(n * sizeof *blocks);
	uint32_t *slot = malloc(n * sizeof *slot);
	uint8_t *edge = malloc(2 * BS); /* the partial first and last blocks */
	uint32_t nput = 0;
	if (!h || !put_h || !blocks || !slot || !edge) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint64_t idx = first + i;
		if (npre && idx >= pre_first && idx < pre_first + npre) {
			h[i] = pre[idx - pre_first];
			continue;
		}
		off_t bstart = (off_t)idx * BS;
		size_t s = off > bstart ? (size_t)(off - bstart) : 0;
		size_t e = COW_MIN((size_t)BS, (size_t)(off + len - bstart));
		const uint8_t *piece = src ? src + (bstart + s - off) : NULL;
		slot[nput] = i;
		if (s == 0 && e == BS) {
			blocks[nput++] = piece ? piece : zero_block;
			continue;
		}
		uint8_t *tmp = edge + (i == 0 ? 0 : BS);
		if ((r = read_block_locked(b, m, idx, tmp)) < 0)
			goto out;
		if (piece)
			memcpy(tmp + s, piece, e - s);
		else
			memset(tmp + s, 0, e - s);
		blocks[nput++] = tmp;
	}
	if (nput && (r = cow_store_put_blocks_owned(b->store, blocks, nput, b->owner, b->put_gen, put_h)) < 0)
		goto out;
	for (uint32_t k = 0; k < nput; k++)
		h[slot[k]] = put_h[k];
	/* the blocks replaced, for early reclaim; no look-ups while it is off */
	if (cow_store_reclaim_on(b->store))
		for (uint32_t i = 0; i < n; i++) {
			cow_hash old;
			if (cow_tree_get(m, first + i, &old) == 0 && !cow_hash_is_zero(&old) &&
			    !cow_hash_eq(&old, &h[i]))
				tx_replaced(b, &old);
		}
	tx_filemap(b, in->ino, first, n, h);
out:
	free(h);
	free(put_h);
	free(blocks);
	free(slot);
	free(edge);
	return r;
}

/* Truncate or extend to SIZE: ops into the open transaction. Called locked. */
static int tx_resize(struct cow_branch *b, struct cow_inode *in, uint64_t size)
{
	if (size >= in->rec.size)
		return 0;
	int r = 0;
	/* Bytes past the end of a file are always zero in its last block. */
	if (size % BS)
		r = tx_write_range(b, in, (off_t)size, BS - size % BS, NULL, NULL);
	if (r == 0) {
		tx_dropped_from(b, in, (size + BS - 1) / BS);
		tx_trunc(b, in->ino, (size + BS - 1) / BS);
	}
	return r;
}

int cow_branch_setattr(struct cow_branch *b, uint64_t ino, const struct cow_attr *a, unsigned set,
		       struct cow_attr *ret)
{
	struct cow_inode *in;
	int r;
	LOCK_OR_FAIL(b);
	if ((r = inode_get(b, ino, false, &in)) < 0)
		goto out;
	struct cow_irec rec = in->rec;
	struct timespec t;
	now(&t);
	tx_begin(b);
	if (set & COW_SET_SIZE) {
		if (S_ISDIR(rec.mode)) {
			r = -EISDIR;
			goto out;
		}
		if (!S_ISREG(rec.mode)) {
			r = -EINVAL;
			goto out;
		}
		if ((r = tx_resize(b, in, a->size)) < 0)
			goto out;
		if (a->size != rec.size)
			rec.mtime = t;
		rec.size = a->size;
	}
	if (set & COW_SET_MODE)
		rec.mode = (rec.mode & S_IFMT) | (a->mode & 07777);
	if (set & COW_SET_UID)
		rec.uid = a->uid;
	if (set & COW_SET_GID)
		rec.gid = a->gid;
	if (set & COW_SET_ATIME)
		rec.atime = a->atime;
	if (set & COW_SET_ATIME_NOW)
		rec.atime = t;
	if (set & COW_SET_MTIME)
		rec.mtime = a->mtime;
	if (set & COW_SET_MTIME_NOW)
		rec.mtime = t;
	rec.ctime = (set & COW_SET_CTIME) ? a->ctime : t;
	if (!(set & COW_SET_SIZE) && irec_same(&rec, &in->rec)) {
		/* nothing to log (nor for an fsync to wait for): see now() */
		fill_attr(in, ret);
		goto out;
	}
	tx_inode(b, ino, &rec);
	if ((r = tx_commit(b)) == 0)
		fill_attr(in, ret);
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

/* Create NAME in PARENT: a new inode with REC (ino assigned here). Called locked. */
static int create_locked(struct cow_branch *b, uint64_t parent, const char *name, struct cow_irec *rec,
			 struct cow_attr *ret)
{
	struct cow_inode *p, *in;
	uint64_t existing;
	int r = dir_child(b, parent, name, &p, &existing, NULL);
	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	if (p->rec.nlink == 0)
		return -ENOENT; /* the directory was removed */
	if (p->rec.mode & S_ISGID) {
		rec->gid = p->rec.gid;
		if (S_ISDIR(rec->mode))
			rec->mode |= S_ISGID;
	}
	now(&rec->mtime);
	rec->atime = rec->ctime = rec->mtime;
	uint64_t ino = b->next_ino;
	struct cow_irec prec = p->rec;
	prec.mtime = prec.ctime = rec->mtime;
	if (S_ISDIR(rec->mode)) {
		rec->nlink = 2;
		rec->rdev = parent;
		prec.nlink++;
	} else {
		rec->nlink = 1;
	}
	tx_begin(b);
	tx_inode(b, ino, rec);
	tx_dirent(b, parent, name, ino, dtype_of(rec->mode));
	tx_inode(b, parent, &prec);
	if ((r = tx_commit(b)) < 0)
		return r;
	if ((r = inode_get(b, ino, false, &in)) < 0)
		return r;
	in->nlookup++;
	fill_attr(in, ret);
	return 0;
}

int cow_branch_mknod(struct cow_branch *b, uint64_t parent, const char *name, uint32_t mode, uint64_t rdev,
		     uint32_t uid, uint32_t gid, struct cow_attr *ret)
{
	int r;
	LOCK_OR_FAIL(b);
	uint32_t type = mode & S_IFMT;
	if (type != S_IFREG && type != S_IFDIR && type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR &&
	    type != S_IFBLK) {
		r = -EINVAL;
		goto out;
	}
	struct cow_irec rec = { .mode = mode, .uid = uid, .gid = gid, .rdev = rdev };
	r = create_locked(b, parent, name, &rec, ret);
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_symlink(struct cow_branch *b, uint64_t parent, const char *name, const char *target,
		       uint32_t uid, uint32_t gid, struct cow_attr *ret)
{
	int r;
	size_t len = strlen(target);
	LOCK_OR_FAIL(b);
	if (len == 0 || len >= 4096) {
		r = len ? -ENAMETOOLONG : -ENOENT;
		goto out;
	}
	struct cow_irec rec = { .mode = S_IFLNK | 0777, .uid = uid, .gid = gid, .size = len };
	if ((r = cow_store_put(b->store, target, len, &rec.content)) < 0)
		goto out;
	r = create_locked(b, parent, name, &rec, ret);
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_readlink(struct cow_branch *b, uint64_t ino, char **ret)
{
	struct cow_inode *in;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0 && !S_ISLNK(in->rec.mode))
		r = -EINVAL;
	if (r == 0 && !in->target) {
		void *buf;
		size_t len;
		r = cow_store_get_alloc(b->store, &in->rec.content, &buf, &len);
		if (r == 0) {
			in->target = strndup(buf, len);
			free(buf);
			if (!in->target)
				r = -ENOMEM;
		}
	}
	if (r == 0 && !(*ret = strdup(in->target)))
		r = -ENOMEM;
	pthread_mutex_unlock(&b->lock);
	return r;
}

/* unlink (DIR false) or rmdir (DIR true) */
static int remove_name(struct cow_branch *b, uint64_t parent, const char *name, bool dir)
{
	struct cow_inode *p, *in;
	uint64_t ino;
	int r;
	LOCK_OR_FAIL(b);
	if ((r = dir_child(b, parent, name, &p, &ino, NULL)) < 0 || (r = inode_get(b, ino, false, &in)) < 0)
		goto out;
	struct timespec t;
	now(&t);
	struct cow_irec rec = in->rec, prec = p->rec;
	if (dir) {
		struct cow_dir *d;
		if ((r = inode_dir(b, in, &d)) < 0)
			goto out;
		if (cow_dir_count(d)) {
			r = -ENOTEMPTY;
			goto out;
		}
		rec.nlink = 0;
		prec.nlink--;
	} else {
		if (S_ISDIR(rec.mode)) {
			r = -EISDIR;
			goto out;
		}
		rec.nlink--;
	}
	rec.ctime = t;
	prec.mtime = prec.ctime = t;
	tx_begin(b);
	tx_dirent(b, parent, name, 0, 0);
	tx_inode(b, ino, &rec);
	tx_inode(b, parent, &prec);
	if ((r = tx_commit(b)) == 0)
		r = maybe_free(b, in);
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_unlink(struct cow_branch *b, uint64_t parent, const char *name)
{
	return remove_name(b, parent, name, false);
}

int cow_branch_rmdir(struct cow_branch *b, uint64_t parent, const char *name)
{
	return remove_name(b, parent, name, true);
}

int cow_branch_rename(struct cow_branch *b, uint64_t parent, const char *name, uint64_t newparent,
		      const char *newname, unsigned flags)
{
	struct cow_inode *p, *np, *src, *dst = NULL;
	uint64_t sino, dino;
	uint8_t stype, dtype;
	int r;
	LOCK_OR_FAIL(b);
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		r = -EINVAL;
		goto out;
	}
	if ((r = dir_child(b, parent, name, &p, &sino, &stype)) < 0)
		goto out;
	r = dir_child(b, newparent, newname, &np, &dino, &dtype);
	if (r < 0 && r != -ENOENT)
		goto out;
	bool dst_exists = r == 0;
	if ((r = inode_get(b, sino, false, &src)) < 0)
		goto out;
	if (dst_exists && (r = inode_get(b, dino, false, &dst)) < 0)
		goto out;
	if ((flags & RENAME_EXCHANGE) && !dst_exists) {
		r = -ENOENT;
		goto out;
	}
	if ((flags & RENAME_NOREPLACE) && dst_exists) {
		r = -EEXIST;
		goto out;
	}
	if (dst_exists && dino == sino) {
		r = 0; /* two names of one inode: POSIX says do nothing */
		goto out;
	}
	if (np->rec.nlink == 0) {
		r = -ENOENT;
		goto out;
	}
	struct timespec t;
	now(&t);
	/* Work on copies; p and np may be the same inode. */
	struct cow_irec prec = p->rec, nprec_own = np->rec;
	struct cow_irec *nprec = np == p ? &prec : &nprec_own;
	struct cow_irec srec = src->rec, drec = dst ? dst->rec : (struct cow_irec){ 0 };
	bool sdir = S_ISDIR(srec.mode), ddir = dst && S_ISDIR(drec.mode);
	tx_begin(b);
	if (flags & RENAME_EXCHANGE) {
		tx_dirent(b, parent, name, dino, dtype);
		tx_dirent(b, newparent, newname, sino, stype);
		if (p != np) {
			if (sdir) {
				srec.rdev = newparent;
				prec.nlink--;
				nprec->nlink++;
			}
			if (ddir) {
				drec.rdev = parent;
				nprec->nlink--;
				prec.nlink++;
			}
		}
		drec.ctime = t;
	} else {
		if (dst) {
			if (sdir && !ddir) {
				r = -ENOTDIR;
				goto out;
			}
			if (!sdir && ddir) {
				r = -EISDIR;
				goto out;
			}
			if (ddir) {
				struct cow_dir *dd;
				if ((r = inode_dir(b, dst, &dd)) < 0)
					goto out;
				if (cow_dir_count(dd)) {
					r = -ENOTEMPTY;
					goto out;
				}
				drec.nlink = 0;
				nprec->nlink--;
			} else {
				drec.nlink--;
			}
			drec.ctime = t;
		}
		tx_dirent(b, newparent, newname, sino, stype);
		tx_dirent(b, parent, name, 0, 0);
		if (sdir && p != np) {
			srec.rdev = newparent;
			prec.nlink--;
			nprec->nlink++;
		}
	}
	srec.ctime = t;
	prec.mtime = prec.ctime = t;
	nprec->mtime = nprec->ctime = t;
	tx_inode(b, sino, &srec);
	if (dst)
		tx_inode(b, dino, &drec);
	tx_inode(b, parent, &prec);
	if (np != p)
		tx_inode(b, newparent, nprec);
	if ((r = tx_commit(b)) < 0)
		goto out;
	if (dst && !(flags & RENAME_EXCHANGE))
		r = maybe_free(b, dst);
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_link(struct cow_branch *b, uint64_t ino, uint64_t newparent, const char *newname,
		    struct cow_attr *ret)
{
	struct cow_inode *in, *np;
	uint64_t existing;
	int r;
	LOCK_OR_FAIL(b);
	if ((r = inode_get(b, ino, false, &in)) < 0)
		goto out;
	if (S_ISDIR(in->rec.mode)) {
		r = -EPERM;
		goto out;
	}
	r = dir_child(b, newparent, newname, &np, &existing, NULL);
	if (r == 0)
		r = -EEXIST;
	if (r != -ENOENT)
		goto out;
	if (in->rec.nlink == 0 || np->rec.nlink == 0) {
		r = -ENOENT;
		goto out;
	}
	struct timespec t;
	now(&t);
	struct cow_irec rec = in->rec, nprec = np->rec;
	rec.nlink++;
	rec.ctime = t;
	nprec.mtime = nprec.ctime = t;
	tx_begin(b);
	tx_dirent(b, newparent, newname, ino, dtype_of(rec.mode));
	tx_inode(b, ino, &rec);
	tx_inode(b, newparent, &nprec);
	if ((r = tx_commit(b)) == 0) {
		in->nlookup++;
		fill_attr(in, ret);
	}
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_open_file(struct cow_branch *b, uint64_t ino, int flags)
{
	struct cow_inode *in;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0 && S_ISDIR(in->rec.mode) && (flags & O_ACCMODE) != O_RDONLY)
		r = -EISDIR;
	if (r == 0 && (flags & (O_ACCMODE | O_TRUNC)) != O_RDONLY && (b->failed || b->readonly))
		r = b->failed ? b->failed : -EROFS;
	pthread_mutex_unlock(&b->lock);
	return r;
}

ssize_t cow_branch_read(struct cow_branch *b, uint64_t ino, off_t off, size_t size, void *buf)
{
	struct cow_inode *in;
	struct cow_tree *m;
	cow_hash *h = NULL;
	uint8_t *tmp = NULL;
	uint64_t first = 0;
	uint32_t n = 0;
	size_t len = 0;
	/* In the gate before the hashes are taken: an overwrite meanwhile does
	 * not let them be forgotten until this read is done (store.h). */
	unsigned gate = cow_store_read_enter(b->store);
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0 && S_ISDIR(in->rec.mode))
		r = -EISDIR;
	if (r == 0 && (uint64_t)off < in->rec.size && size > 0) {
		len = COW_MIN(size, in->rec.size - off);
		first = off / BS;
		n = (uint32_t)((off + len - 1) / BS - first + 1);
		h = malloc(n * sizeof *h);
		if (!h)
			r = -ENOMEM;
		if (r == 0)
			r = inode_map(b, in, &m);
		for (uint32_t i = 0; r == 0 && i < n; i++)
			r = cow_tree_get(m, first + i, &h[i]);
	}
	pthread_mutex_unlock(&b->lock);
	/* Blocks are immutable: read them without the branch lock. */
	for (uint32_t i = 0; r == 0 && i < n; i++) {
		off_t bstart = (off_t)(first + i) * BS;
		size_t s = off > bstart ? (size_t)(off - bstart) : 0;
		size_t e = COW_MIN((size_t)BS, (size_t)(off + len - bstart));
		uint8_t *dst = (uint8_t *)buf + (bstart + s - off);
		if (s == 0 && e == BS) {
			r = cow_store_get(b->store, &h[i], dst, BS);
		} else {
			if (!tmp && !(tmp = malloc(BS))) {
				r = -ENOMEM;
				break;
			}
			r = cow_store_get(b->store, &h[i], tmp, BS);
			if (r == 0)
				memcpy(dst, tmp + s, e - s);
		}
	}
	cow_store_read_leave(b->store, gate);
	free(h);
	free(tmp);
	return r < 0 ? r : (ssize_t)len;
}

/* cow_store_hold() the N blocks BLOCKS[] stored as H[] before the lock was
 * taken; put again those a sweep took meanwhile.  Called locked. */
static int hold_blocks(struct cow_branch *b, const uint8_t **blocks, const cow_hash *h, uint32_t n)
{
	bool *missing = malloc(n * sizeof *missing);
	const uint8_t **again = malloc(n * sizeof *again);
	cow_hash *h2 = malloc(n * sizeof *h2);
	int r = missing && again && h2 ? 0 : -ENOMEM;
	uint32_t k = 0;
	if (r == 0 && cow_store_hold(b->store, h, n, missing))
		for (uint32_t i = 0; i < n; i++)
			if (missing[i])
				again[k++] = blocks[i];
	if (k)
		r = cow_store_put_blocks_owned(b->store, again, k, b->owner, b->put_gen, h2);
	free(missing);
	free(again);
	free(h2);
	return r;
}

ssize_t cow_branch_write(struct cow_branch *b, uint64_t ino, off_t off, size_t size, const void *buf)
{
	struct cow_inode *in;
	cow_hash *pre = NULL;
	int r;
	if (off < 0 || (uint64_t)off + size > (1ull << 52))
		return -EFBIG;
	if (b->readonly)
		return -EROFS; /* set before the branch is shared, never cleared */
	/* Blocks the write covers whole are hashed and stored before taking the
	 * branch lock, so that concurrent writes hash in parallel; only partial
	 * edge blocks need the file's current content, under the lock. */
	uint64_t pre_first, token = 0;
	uint32_t npre = full_blocks(off, size, &pre_first);
	const uint8_t **blocks = NULL;
	if (npre && npre <= COW_TX_MAX_BLOCKS) {
		blocks = malloc(npre * sizeof *blocks);
		pre = malloc(npre * sizeof *pre);
		if (!blocks || !pre) {
			free(blocks);
			free(pre);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < npre; i++)
			blocks[i] = (const uint8_t *)buf + ((pre_first + i) * BS - off);
		token = cow_store_pass_token(b->store);
		/* (a checkpoint meanwhile only makes the tag older: more careful) */
		r = cow_store_put_blocks_owned(b->store, blocks, npre, b->owner,
					       __atomic_load_n(&b->put_gen, __ATOMIC_RELAXED), pre);
		if (r < 0) {
			free(blocks);
			free(pre);
			return r;
		}
	}
	LOCK_OR_FAIL(b);
	/* A GC pass that began since took its roots without these blocks:
	 * they are kept for it now, or put again if its sweep took them. */
	if (pre && cow_store_pass_token(b->store) != token && (r = hold_blocks(b, blocks, pre, npre)) < 0)
		goto out;
	if ((r = inode_get(b, ino, false, &in)) < 0)
		goto out;
	if (!S_ISREG(in->rec.mode)) {
		r = S_ISDIR(in->rec.mode) ? -EISDIR : -EINVAL;
		goto out;
	}
	tx_begin(b);
	if ((r = tx_write_range(b, in, off, size, buf, pre)) < 0)
		goto out;
	struct cow_irec rec = in->rec;
	if ((uint64_t)off + size > rec.size)
		rec.size = off + size;
	now(&rec.mtime);
	rec.ctime = rec.mtime;
	tx_inode(b, ino, &rec);
	r = tx_commit(b);
out:
	pthread_mutex_unlock(&b->lock);
	free(blocks);
	free(pre);
	return r < 0 ? r : (ssize_t)size;
}

int cow_branch_fallocate(struct cow_branch *b, uint64_t ino, int mode, off_t off, off_t len)
{
	struct cow_inode *in;
	int r;
	LOCK_OR_FAIL(b);
	if ((r = inode_get(b, ino, false, &in)) < 0)
		goto out;
	if (!S_ISREG(in->rec.mode)) {
		r = S_ISDIR(in->rec.mode) ? -EISDIR : -ENODEV;
		goto out;
	}
	if (off < 0 || len <= 0) {
		r = -EINVAL;
		goto out;
	}
	bool keep = mode & FALLOC_FL_KEEP_SIZE;
	bool zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
	if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !keep)) {
		r = -EOPNOTSUPP;
		goto out;
	}
	/* Zero [off, zend) in transactions of bounded size (fallocate is not
	 * atomic in POSIX either); the last one also sets the size.  Space is
	 * not reserved: blocks are allocated when written (see README). */
	uint64_t zend = zero && (uint64_t)off < in->rec.size ? COW_MIN((uint64_t)(off + len), in->rec.size) : (uint64_t)off;
	const uint64_t chunk = (uint64_t)COW_TX_MAX_BLOCKS * BS / 2;
	for (uint64_t at = off;;) {
		uint64_t end = COW_MIN(zend, at + chunk);
		struct cow_irec rec = in->rec;
		tx_begin(b);
		if (at < end && (r = tx_write_range(b, in, (off_t)at, end - at, NULL, NULL)) < 0)
			goto out;
		bool last = end >= zend;
		if (last && !keep && (uint64_t)(off + len) > rec.size)
			rec.size = off + len;
		now(&rec.ctime);
		if (zero)
			rec.mtime = rec.ctime;
		tx_inode(b, ino, &rec);
		if ((r = tx_commit(b)) < 0 || last)
			goto out;
		at = end;
	}
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_lseek(struct cow_branch *b, uint64_t ino, off_t off, int whence, off_t *ret)
{
	struct cow_inode *in;
	struct cow_tree *m;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r < 0)
		goto out;
	uint64_t size = in->rec.size;
	if (off < 0 || (uint64_t)off >= size) {
		r = -ENXIO;
		goto out;
	}
	if ((r = inode_map(b, in, &m)) < 0)
		goto out;
	uint64_t idx = off / BS, key;
	cow_hash h;
	if (whence == SEEK_DATA) {
		r = cow_tree_next(m, idx, &key, &h);
		if (r == -ENOENT || (r == 0 && key * BS >= size)) {
			r = -ENXIO;
		} else if (r == 0) {
			*ret = COW_MAX((off_t)(key * BS), off);
		}
	} else if (whence == SEEK_HOLE) {
		for (;;) {
			r = cow_tree_next(m, idx, &key, &h);
			if (r == -ENOENT || (r == 0 && key > idx)) {
				r = 0;
				break;
			}
			if (r < 0)
				goto out;
			idx++;
		}
		*ret = COW_MIN(COW_MAX((off_t)(idx * BS), off), (off_t)size);
	} else {
		r = -EINVAL;
	}
out:
	pthread_mutex_unlock(&b->lock);
	return r;
}

int cow_branch_readdir(struct cow_branch *b, uint64_t ino, struct cow_dirent **ret, size_t *ret_n)
{
	struct cow_inode *in;
	struct cow_dir *d;
	struct cow_dirent *list = NULL;
	size_t n = 0;
	pthread_mutex_lock(&b->lock);
	int r = inode_get(b, ino, false, &in);
	if (r == 0)
		r = inode_dir(b, in, &d);
	if (r == 0)
		r = cow_dir_list(d, &list, &n);
	if (r == 0) {
		struct cow_dirent *all = calloc(n + 2, sizeof *all);
		if (!all) {
			r = -ENOMEM;
		} else {
			all[0] = (struct cow_dirent){ ino, DT_DIR, strdup(".") };
			all[1] = (struct cow_dirent){ in->rec.rdev ? in->rec.rdev : ino, DT_DIR, strdup("..") };
			memcpy(all + 2, list, n * sizeof *list);
			free(list);
			list = NULL;
			if (!all[0].name || !all[1].name) {
				cow_dirents_free(all, n + 2);
				r = -ENOMEM;
			} else {
				*ret = all;
				*ret_n = n + 2;
			}
		}
	}
	cow_dirents_free(list, n);
	pthread_mutex_unlock(&b->lock);
	return r;
}
