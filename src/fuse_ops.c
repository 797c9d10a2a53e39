#include "fuse_ops.h"

#include <assert.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "branch.h"
#include "fs.h"
#include "util.h"

#define SLOT_SHIFT 48
#define INO_MASK ((1ull << SLOT_SHIFT) - 1)

/* The directory that lists the snapshots, /MOUNT/.snapshots: slot 0, like the root. */
#define SNAPDIR_ID ((fuse_ino_t)2)
#define SNAPDIR_NAME ".snapshots"

static struct cow_fuse *ctx_of(fuse_req_t req) { return fuse_req_userdata(req); }
static fuse_ino_t node_of(unsigned slot, uint64_t ino) { return (fuse_ino_t)slot << SLOT_SHIFT | ino; }
static uint64_t ino_of(fuse_ino_t node) { return node & INO_MASK; }

/* The branches an operation uses, held (fs.h) until it returns: declared
 * with HOLDS, which releases them however the operation ends.  Rename
 * and link take two. */
struct holds {
	struct cow_fs *fs;
	unsigned slot[2];
	int n;
};

static void release_holds(struct holds *h)
{
	for (int i = 0; i < h->n; i++)
		cow_fs_release(h->fs, h->slot[i]);
}

#define HOLDS(req) struct holds h __attribute__((cleanup(release_holds))) = { ctx_of(req)->fs, { 0 }, 0 }

static struct cow_branch *hold(struct holds *h, struct cow_branch *b, unsigned slot)
{
	assert(h->n < 2);
	if (b)
		h->slot[h->n++] = slot;
	return b;
}

/* The branch a node belongs to, held in H; NULL for the mount root and stale ids. */
static struct cow_branch *branch_of(struct holds *h, fuse_ino_t node, unsigned *ret_slot)
{
	unsigned slot = (unsigned)(node >> SLOT_SHIFT);
	if (ret_slot)
		*ret_slot = slot;
	return slot == 0 ? NULL : hold(h, cow_fs_hold(h->fs, slot), slot);
}

static void to_stat(unsigned slot, const struct cow_attr *a, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = node_of(slot, a->ino);
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = 8192;
	st->st_rdev = (dev_t)a->rdev;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
}

/* The mount root and the snapshot directory: read-only listings. */
static void root_stat(struct cow_fuse *c, fuse_ino_t node, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = node;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
	st->st_blksize = 8192;
	st->st_atim = st->st_mtim = st->st_ctim = c->mounted;
}

static void entry_of(fuse_req_t req, unsigned slot, const struct cow_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = node_of(slot, a->ino);
	e->generation = 1;
	e->attr_timeout = e->entry_timeout = ctx_of(req)->timeout;
	to_stat(slot, a, &e->attr);
}

/* Reply with a node id in SLOT, which the kernel then holds until it
 * forgets it: counted, so that the slot is not reused before (fs.h).  The
 * caller holds SLOT. */
static void reply_entry(fuse_req_t req, unsigned slot, const struct cow_attr *a)
{
	struct cow_fs *fs = ctx_of(req)->fs;
	struct fuse_entry_param e;
	entry_of(req, slot, a, &e);
	if (fuse_reply_entry(req, &e) == 0)
		cow_fs_slot_refs(fs, slot, 1);
}

static void reply_result(fuse_req_t req, int r) { fuse_reply_err(req, r < 0 ? -r : 0); }

/* R, the result of a change made for REQ; with durable_replies (see
 * op_fsync) once the log holds it durably. */
static int made_durable(fuse_req_t req, int r)
{
	struct cow_fuse *c = ctx_of(req);
	return r == 0 && c->durable_replies ? cow_fs_sync(c->fs) : r;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct cow_fuse *c = userdata;
	if (c->writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	c->durable_replies = conn->want & FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Data changes only through this mount, so cached pages stay valid. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* Let the kernel turn O_TRUNC into a size-0 setattr, one path for all truncation. */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	conn->max_write = 1 << 20;
	/* Write-back WRITEs are background requests, of which the kernel sends
	 * max_background (12 by default) at a time; with durable_replies each
	 * holds its place until a log sync covers it.  A burst of evicted data
	 * pages (hundreds of MiB when the kernel writes back an inode dirty for
	 * 30 s) then went through 12 per sync, and a commit's WAL page waited
	 * behind all of it: a second at 0-30 TPS.  With room for all of them,
	 * one group commit covers the burst (bench/stalls.sh; docs/PERFORMANCE.md). */
	conn->max_background = 1024;
	conn->congestion_threshold = conn->max_background * 3 / 4;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cow_fuse *c = ctx_of(req);
	struct cow_attr a;
	unsigned slot;
	int r;
	if (parent == FUSE_ROOT_ID && strcmp(name, SNAPDIR_NAME) == 0) {
		struct fuse_entry_param e = { .ino = SNAPDIR_ID, .generation = 1 };
		root_stat(c, SNAPDIR_ID, &e.attr);
		fuse_reply_entry(req, &e);
		return;
	}
	HOLDS(req);
	if (parent == FUSE_ROOT_ID || parent == SNAPDIR_ID) {
		enum cow_ref_kind kind = parent == FUSE_ROOT_ID ? COW_REF_BRANCH : COW_REF_SNAPSHOT;
		struct cow_branch *b = cow_fs_hold_name(c->fs, kind, name, &slot);
		r = hold(&h, b, slot) ? cow_branch_ref(b, COW_ROOT_INO, &a) : -ENOENT;
		if (r < 0)
			return reply_result(req, r);
		return reply_entry(req, slot, &a);
	}
	struct cow_branch *b = branch_of(&h, parent, &slot);
	if (!b)
		return reply_result(req, -ESTALE);
	r = cow_branch_lookup(b, ino_of(parent), name, &a);
	if (r == -ENOENT) {
		/* A negative entry the kernel may cache: names appear only through us. */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = c->timeout };
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0)
		return reply_result(req, r);
	reply_entry(req, slot, &a);
}

static void forget_one(fuse_req_t req, fuse_ino_t node, uint64_t n)
{
	HOLDS(req);
	unsigned slot;
	struct cow_branch *b = branch_of(&h, node, &slot);
	if (b)
		cow_branch_forget(b, ino_of(node), n);
	cow_fs_slot_refs(h.fs, slot, -(int64_t)n);
}

static void op_forget(fuse_req_t req, fuse_ino_t node, uint64_t nlookup)
{
	forget_one(req, node, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(req, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_fuse *c = ctx_of(req);
	struct stat st;
	if (node == FUSE_ROOT_ID || node == SNAPDIR_ID) {
		root_stat(c, node, &st);
		fuse_reply_attr(req, &st, 1.0);
		return;
	}
	unsigned slot;
	struct cow_branch *b = branch_of(&h, node, &slot);
	struct cow_attr a;
	int r = b ? cow_branch_getattr(b, ino_of(node), &a) : -ESTALE;
	if (r < 0)
		return reply_result(req, r);
	to_stat(slot, &a, &st);
	fuse_reply_attr(req, &st, c->timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t node, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	HOLDS(req);
	unsigned slot;
	struct cow_branch *b = branch_of(&h, node, &slot);
	if (!b)
		return reply_result(req, node >> SLOT_SHIFT == 0 ? -EPERM : -ESTALE);
	struct cow_attr in = {
		.mode = attr->st_mode, .uid = attr->st_uid, .gid = attr->st_gid, .size = (uint64_t)attr->st_size,
		.atime = attr->st_atim, .mtime = attr->st_mtim, .ctime = attr->st_ctim,
	};
	unsigned set = 0;
	if (to_set & FUSE_SET_ATTR_MODE) set |= COW_SET_MODE;
	if (to_set & FUSE_SET_ATTR_UID) set |= COW_SET_UID;
	if (to_set & FUSE_SET_ATTR_GID) set |= COW_SET_GID;
	if (to_set & FUSE_SET_ATTR_SIZE) set |= COW_SET_SIZE;
	if (to_set & FUSE_SET_ATTR_ATIME) set |= COW_SET_ATIME;
	if (to_set & FUSE_SET_ATTR_MTIME) set |= COW_SET_MTIME;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) set |= COW_SET_ATIME_NOW;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) set |= COW_SET_MTIME_NOW;
	if (to_set & FUSE_SET_ATTR_CTIME) set |= COW_SET_CTIME;
	struct cow_attr a;
	int r = made_durable(req, cow_branch_setattr(b, ino_of(node), &in, set, &a));
	if (r < 0)
		return reply_result(req, r);
	struct stat st;
	to_stat(slot, &a, &st);
	fuse_reply_attr(req, &st, ctx_of(req)->timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t node)
{
	HOLDS(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	char *target = NULL;
	int r = b ? cow_branch_readlink(b, ino_of(node), &target) : -EINVAL;
	if (r < 0)
		return reply_result(req, r);
	fuse_reply_readlink(req, target);
	free(target);
}

/* The branch of PARENT for an operation that creates or removes names. */
static struct cow_branch *dir_branch(struct holds *h, fuse_ino_t parent, unsigned *ret_slot, int *err)
{
	unsigned s;
	unsigned *slot = ret_slot ? ret_slot : &s;
	struct cow_branch *b = branch_of(h, parent, slot);
	/* Branches are made with 'cowfs branch', not mkdir in the mount root;
	 * snapshots with 'cowfs snapshot'. */
	*err = b ? 0 : *slot == 0 ? -EPERM : -ESTALE;
	return b;
}

static void do_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	HOLDS(req);
	unsigned slot;
	int r;
	struct cow_branch *b = dir_branch(&h, parent, &slot, &r);
	if (!b)
		return reply_result(req, r);
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct cow_attr a;
	r = cow_branch_mknod(b, ino_of(parent), name, mode, rdev, fc->uid, fc->gid, &a);
	if (r < 0)
		return reply_result(req, r);
	reply_entry(req, slot, &a);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	do_mknod(req, parent, name, mode, rdev);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	do_mknod(req, parent, name, S_IFDIR | (mode & 07777), 0);
}

static void op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	HOLDS(req);
	unsigned slot;
	int r;
	struct cow_branch *b = dir_branch(&h, parent, &slot, &r);
	if (!b)
		return reply_result(req, r);
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct cow_attr a;
	r = cow_branch_symlink(b, ino_of(parent), name, target, fc->uid, fc->gid, &a);
	if (r < 0)
		return reply_result(req, r);
	reply_entry(req, slot, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	HOLDS(req);
	int r;
	struct cow_branch *b = dir_branch(&h, parent, NULL, &r);
	reply_result(req, b ? cow_branch_unlink(b, ino_of(parent), name) : r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	HOLDS(req);
	int r;
	struct cow_branch *b = dir_branch(&h, parent, NULL, &r);
	reply_result(req, b ? cow_branch_rmdir(b, ino_of(parent), name) : r);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	HOLDS(req);
	int r;
	unsigned s1, s2;
	struct cow_branch *b = dir_branch(&h, parent, &s1, &r);
	if (!b)
		return reply_result(req, r);
	if (!dir_branch(&h, newparent, &s2, &r))
		return reply_result(req, r);
	if (s1 != s2)
		return reply_result(req, -EXDEV);
	reply_result(req, cow_branch_rename(b, ino_of(parent), name, ino_of(newparent), newname, flags));
}

static void op_link(fuse_req_t req, fuse_ino_t node, fuse_ino_t newparent, const char *newname)
{
	HOLDS(req);
	int r;
	unsigned s1, s2;
	struct cow_branch *b = dir_branch(&h, newparent, &s2, &r);
	if (!b)
		return reply_result(req, r);
	if (!branch_of(&h, node, &s1) || s1 != s2)
		return reply_result(req, -EXDEV);
	struct cow_attr a;
	r = cow_branch_link(b, ino_of(node), ino_of(newparent), newname, &a);
	if (r < 0)
		return reply_result(req, r);
	reply_entry(req, s2, &a);
}

static void op_open(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	int r = b ? cow_branch_open_file(b, ino_of(node), fi->flags) : -ESTALE;
	if (r < 0)
		return reply_result(req, r);
	/* Data changes only through this mount: the kernel may keep its pages. */
	fi->keep_cache = 1;
	/* close(2) needs no round trip: flush promises nothing we must do. */
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	HOLDS(req);
	unsigned slot;
	int r;
	struct cow_branch *b = dir_branch(&h, parent, &slot, &r);
	if (!b)
		return reply_result(req, r);
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct cow_attr a;
	r = cow_branch_mknod(b, ino_of(parent), name, S_IFREG | (mode & 07777), 0, fc->uid, fc->gid, &a);
	if (r < 0)
		return reply_result(req, r);
	struct fuse_entry_param e;
	entry_of(req, slot, &a, &e);
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) == 0)
		cow_fs_slot_refs(h.fs, slot, 1); /* as reply_entry */
}

static void op_read(fuse_req_t req, fuse_ino_t node, size_t size, off_t off, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	if (!b)
		return reply_result(req, -ESTALE);
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return reply_result(req, -ENOMEM);
	ssize_t n = cow_branch_read(b, ino_of(node), off, size, buf);
	if (n < 0)
		reply_result(req, (int)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

/* A WRITE to reply to once it is durable. */
struct written {
	fuse_req_t req;
	size_t n;
};

static void reply_written(void *arg, int err)
{
	struct written *w = arg;
	if (err < 0)
		fuse_reply_err(w->req, -err);
	else
		fuse_reply_write(w->req, w->n);
	free(w);
}

static void op_write(fuse_req_t req, fuse_ino_t node, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	if (!b)
		return reply_result(req, -ESTALE);
	ssize_t n = cow_branch_write(b, ino_of(node), off, size, buf);
	if (n < 0)
		return reply_result(req, (int)n);
	struct cow_fuse *c = ctx_of(req);
	if (!c->durable_replies)
		return (void)fuse_reply_write(req, (size_t)n);
	/* Replied to once durable (see op_fsync), by whichever thread's
	 * sync covers it: this worker does not wait for another's. */
	struct written *w = malloc(sizeof *w);
	if (!w) {
		int r = cow_fs_sync(c->fs);
		if (r < 0)
			return reply_result(req, r);
		return (void)fuse_reply_write(req, (size_t)n);
	}
	*w = (struct written){ req, (size_t)n };
	cow_fs_sync_then(c->fs, reply_written, w);
}

static void op_flush(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	/* close(2) promises nothing about durability; fsync does. */
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi) { fuse_reply_err(req, 0); }

static void reply_synced(void *req, int err) { reply_result(req, err); }

static void reply_nosys_synced(void *req, int err) { reply_result(req, err < 0 ? err : -ENOSYS); }

/* fsync(2) with the write-back cache: the kernel sends the file's dirty
 * pages as WRITEs and its times as a SETATTR, waits for the replies, then
 * sends FSYNC.  With durable_replies those replies come only once the log
 * holds them durably, so FSYNC would find nothing left to do; answering
 * ENOSYS (after a sync, for what other requests logged) makes the kernel
 * stop sending it (fc->no_fsync) and fsync(2) return 0 on the replies
 * alone: one round trip less per commit, and their errors still reach
 * fsync(2) as write-back errors.  Without the write-back cache, FSYNC
 * makes everything logged so far durable. */
static void op_fsync(fuse_req_t req, fuse_ino_t node, int datasync, struct fuse_file_info *fi)
{
	struct cow_fuse *c = ctx_of(req);
	cow_fs_sync_then(c->fs, c->durable_replies ? reply_nosys_synced : reply_synced, req);
}

struct dir_handle {
	struct cow_dirent *e;
	size_t n;
};

static void op_opendir(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_fuse *c = ctx_of(req);
	struct dir_handle *dh = calloc(1, sizeof *dh);
	if (!dh)
		return reply_result(req, -ENOMEM);
	int r = 0;
	if (node == FUSE_ROOT_ID || node == SNAPDIR_ID) {
		/* ".", "..", ".snapshots" in the root, then one entry per slot */
		bool root = node == FUSE_ROOT_ID;
		unsigned lim = cow_fs_slot_limit(c->fs);
		dh->e = calloc(lim + 3, sizeof *dh->e);
		if (!dh->e)
			r = -ENOMEM;
		enum cow_ref_kind kind = root ? COW_REF_BRANCH : COW_REF_SNAPSHOT;
		for (unsigned s = 0; r == 0 && s < lim + 2; s++) {
			char slot_name[COW_NAME_LEN + 1];
			const char *name = s == 0 ? "." : s == 1 ? ".." : s == 2 ? (root ? SNAPDIR_NAME : NULL)
				: cow_fs_slot_name(c->fs, s - 2, kind, slot_name) ? slot_name : NULL;
			if (!name)
				continue;
			fuse_ino_t ino = s == 0 ? node : s == 1 ? FUSE_ROOT_ID : s == 2 ? SNAPDIR_ID : node_of(s - 2, COW_ROOT_INO);
			dh->e[dh->n] = (struct cow_dirent){ ino, DT_DIR, strdup(name) };
			if (!dh->e[dh->n++].name)
				r = -ENOMEM;
		}
	} else {
		unsigned slot;
		struct cow_branch *b = branch_of(&h, node, &slot);
		r = b ? cow_branch_readdir(b, ino_of(node), &dh->e, &dh->n) : -ESTALE;
		char name[COW_NAME_LEN + 1];
		fuse_ino_t up = cow_fs_slot_name(c->fs, slot, COW_REF_SNAPSHOT, name) ? SNAPDIR_ID : FUSE_ROOT_ID;
		for (size_t i = 0; r == 0 && i < dh->n; i++)
			dh->e[i].ino = (i == 1 && ino_of(node) == COW_ROOT_INO) ? up : node_of(slot, dh->e[i].ino);
	}
	if (r < 0) {
		cow_dirents_free(dh->e, dh->n);
		free(dh);
		return reply_result(req, r);
	}
	fi->fh = (uintptr_t)dh;
	fi->cache_readdir = 0;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t node, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct dir_handle *h = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	if (!buf)
		return reply_result(req, -ENOMEM);
	size_t used = 0;
	for (size_t i = (size_t)off; i < h->n; i++) {
		struct stat st = { .st_ino = h->e[i].ino, .st_mode = (mode_t)DTTOIF(h->e[i].type) };
		size_t need = fuse_add_direntry(req, buf + used, size - used, h->e[i].name, &st, (off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	struct dir_handle *h = (struct dir_handle *)(uintptr_t)fi->fh;
	cow_dirents_free(h->e, h->n);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t node, int datasync, struct fuse_file_info *fi)
{
	cow_fs_sync_then(ctx_of(req)->fs, reply_synced, req);
}

static void op_statfs(fuse_req_t req, fuse_ino_t node)
{
	struct statvfs sv;
	int r = cow_fs_statfs(ctx_of(req)->fs, &sv);
	if (r < 0)
		return reply_result(req, r);
	fuse_reply_statfs(req, &sv);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t node, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	reply_result(req, made_durable(req, b ? cow_branch_fallocate(b, ino_of(node), mode, off, len) : -ESTALE));
}

static void op_lseek(fuse_req_t req, fuse_ino_t node, off_t off, int whence, struct fuse_file_info *fi)
{
	HOLDS(req);
	struct cow_fuse *c = ctx_of(req);
	struct cow_branch *b = branch_of(&h, node, NULL);
	off_t res = 0;
	/* The kernel does not write back dirty pages before FUSE_LSEEK: make it,
	 * so that data still in its write-back cache is not reported as a hole.
	 * Other worker threads serve the resulting writes. */
	if (b && c->writeback_cache && c->se)
		fuse_lowlevel_notify_inval_inode(c->se, node, 0, 0);
	int r = b ? cow_branch_lseek(b, ino_of(node), off, whence, &res) : -ESTALE;
	if (r < 0)
		return reply_result(req, r);
	fuse_reply_lseek(req, res);
}

/* Extended attributes are not stored.  ENOSYS here (and only here) is the
 * protocol's way to say so once: the kernel then answers EOPNOTSUPP itself
 * and stops asking for security.capability on every write. */
static void op_getxattr(fuse_req_t req, fuse_ino_t node, const char *name, size_t size) { fuse_reply_err(req, ENOSYS); }
static void op_listxattr(fuse_req_t req, fuse_ino_t node, size_t size) { fuse_reply_err(req, ENOSYS); }
static void op_setxattr(fuse_req_t req, fuse_ino_t node, const char *name, const char *value, size_t size, int flags)
{
	fuse_reply_err(req, ENOSYS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t node, const char *name) { fuse_reply_err(req, ENOSYS); }

void cow_fuse_branch_changed(void *ctx, bool snapshot, const char *name)
{
	struct cow_fuse *c = ctx;
	if (!c->se)
		return;
	/* Failing (nothing cached, or not mounted yet) is harmless. */
	fuse_ino_t dir = snapshot ? SNAPDIR_ID : FUSE_ROOT_ID;
	fuse_lowlevel_notify_inval_entry(c->se, dir, name, strlen(name));
	fuse_lowlevel_notify_inval_inode(c->se, dir, -1, 0);
}

const struct fuse_lowlevel_ops cow_fuse_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
};
