#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "util.h"

static const char super_magic[8] = { 'C', 'O', 'W', 'F', 'S', 'S', 'U', 'P' };
#define SUPER_SIZE 64

struct index_entry {
	cow_hash key;
	uint64_t pos;    /* 0: empty slot */
	uint32_t len;    /* object bytes */
	uint32_t flags;  /* COW_MARK_DAMAGED, the marks of the current pass, and
			  * the pass's owner (a root number) in the top 24 bits */
	uint32_t owner;  /* who stored it, if nobody else has since (0: unknown or
			  * shared); see cow_store_forget */
	uint32_t gen;    /* the owner's generation at that put */
};
#define OWNER_SHIFT 8
#define PASS_FLAGS (COW_MARK_PUT | COW_MARK_SEEN | COW_MARK_SHARED | COW_MARK_BAD)

struct cow_store {
	char *path;
	int lock_fd;
	struct cow_log *log;
	pthread_rwlock_t index_lock;
	/* protected by index_lock: */
	struct index_entry *slots;
	size_t cap, used;
	struct cow_store_stats st;
	bool pass;       /* a mark pass is under way (cow_store_mark_begin..end) */
	bool marking;    /* and its marks are cleared: puts mark what they store or find */
	uint64_t pass_token; /* bumped as a pass begins, starts marking and ends (atomic reads) */
	uint32_t *seg_objects; /* indexed objects per segment slot (COW_LOG_SLOT): a segment
				* is dropped only when none is left */
	uint64_t *seg_bytes;   /* and their bytes */
	/* The read gate (cow_store_read_enter): readers count themselves in
	 * the current epoch's slot; a barrier flips the epoch and waits for
	 * the old slot to empty. */
	pthread_mutex_t gate_lock; /* one barrier at a time */
	unsigned gate_epoch;
	unsigned long gate_count[2];
	uint32_t owner_seq, gen_seq; /* cow_store_new_owner, cow_store_new_gen */
	bool reclaim_on;
};

static bool damaged(const struct index_entry *e) { return e->flags & COW_MARK_DAMAGED; }

/* The segment of POS gains (SIGN 1) or loses (-1) an indexed object of LEN
 * bytes: seg_objects and seg_bytes move together.  index_lock held. */
static void seg_count(struct cow_store *s, uint64_t pos, int sign, uint32_t len)
{
	size_t i = COW_LOG_SLOT(COW_LOG_POS_SEG(pos));
	s->seg_objects[i] += (uint32_t)sign;
	s->seg_bytes[i] += (uint64_t)(int64_t)sign * len;
}

/* ---- index ------------------------------------------------------------ */

static size_t slot_of(const cow_hash *h, size_t cap) { return cow_get_le64(h->b) & (cap - 1); }

static struct index_entry *index_find(struct cow_store *s, const cow_hash *h)
{
	for (size_t i = slot_of(h, s->cap);; i = (i + 1) & (s->cap - 1)) {
		struct index_entry *e = &s->slots[i];
		if (!e->pos)
			return NULL;
		if (cow_hash_eq(&e->key, h))
			return e;
	}
}

static int index_grow(struct cow_store *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 1 << 16;
	struct index_entry *n = calloc(ncap, sizeof *n);
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++) {
		if (!s->slots[i].pos)
			continue;
		size_t j = slot_of(&s->slots[i].key, ncap);
		while (n[j].pos)
			j = (j + 1) & (ncap - 1);
		n[j] = s->slots[i];
	}
	free(s->slots);
	s->slots = n;
	s->cap = ncap;
	s->st.index_bytes = ncap * sizeof *n;
	return 0;
}

/* Insert or replace (a damaged copy is replaced by a good one).  A put
 * during a mark pass marks the entry. */
static int index_put(struct cow_store *s, const cow_hash *h, uint64_t pos, uint32_t len, bool bad, bool put)
{
	uint32_t mark = put && s->marking ? COW_MARK_PUT : 0;
	struct index_entry *e = s->cap ? index_find(s, h) : NULL;
	if (e) {
		if (damaged(e) && !bad) {
			seg_count(s, e->pos, -1, e->len);
			seg_count(s, pos, 1, len);
			e->pos = pos;
			s->st.object_bytes += (int64_t)len - e->len;
			e->len = len;
			e->flags &= ~COW_MARK_DAMAGED;
		}
		e->flags |= mark;
		return 0;
	}
	if ((s->used + 1) * 4 > s->cap * 3) {
		int r = index_grow(s);
		if (r < 0)
			return r;
	}
	size_t i = slot_of(h, s->cap);
	while (s->slots[i].pos)
		i = (i + 1) & (s->cap - 1);
	s->slots[i] = (struct index_entry){ .key = *h, .pos = pos, .len = len,
					    .flags = (bad ? COW_MARK_DAMAGED : 0) | mark };
	s->used++;
	seg_count(s, pos, 1, len);
	s->st.objects++;
	s->st.object_bytes += len;
	return 0;
}

/* Remove E, shifting back the entries of its probe run (no tombstones). */
static void index_remove(struct cow_store *s, struct index_entry *e)
{
	size_t mask = s->cap - 1, i = (size_t)(e - s->slots);
	s->st.objects--;
	s->st.object_bytes -= e->len;
	s->used--;
	seg_count(s, e->pos, -1, e->len);
	for (size_t j = (i + 1) & mask; s->slots[j].pos; j = (j + 1) & mask) {
		size_t home = slot_of(&s->slots[j].key, s->cap);
		/* slot j may fill the hole at i unless its home lies in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			s->slots[i] = s->slots[j];
			i = j;
		}
	}
	s->slots[i] = (struct index_entry){ 0 };
}

static int index_record(void *ctx, uint64_t pos, unsigned type, const uint8_t *payload, uint32_t len)
{
	struct cow_store *s = ctx;
	if ((type & ~COW_REC_DAMAGED) != COW_REC_OBJ)
		return 0;
	if (len < COW_HASH_SIZE)
		return (type & COW_REC_DAMAGED) ? 0 : -EBADMSG;
	cow_hash h;
	memcpy(h.b, payload, COW_HASH_SIZE);
	return index_put(s, &h, pos, len - COW_HASH_SIZE, type & COW_REC_DAMAGED, false);
}

/* ---- superblock ------------------------------------------------------- */

static int super_write(const char *path)
{
	uint8_t b[SUPER_SIZE] = { 0 };
	memcpy(b, super_magic, 8);
	cow_put_le32(b + 8, COW_STORE_VERSION);
	cow_put_le32(b + 12, COW_BLOCK_SIZE);
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, b + 16, 16) != 16) {
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	cow_put_le64(b + 32, (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec);
	cow_put_le32(b + 60, cow_crc32c(0, b, 60));
	return cow_write_file_durable(path, "cowfs.super", b, sizeof b);
}

static int super_check(const char *path)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/cowfs.super", path);
	char *buf = NULL;
	size_t len = 0;
	int r = cow_read_file(p, 4096, &buf, &len);
	if (r == -ENOENT) {
		cow_err("%s: not a cowfs store (no cowfs.super); create one with 'cowfs init %s'", path, path);
		return -ENOENT;
	}
	if (r < 0) {
		cow_err("%s: %s", p, strerror(-r));
		return r;
	}
	const uint8_t *b = (const uint8_t *)buf;
	if (len != SUPER_SIZE || memcmp(b, super_magic, 8) != 0) {
		cow_err("%s: not a cowfs superblock", p);
		r = -EBADMSG;
	} else if (cow_get_le32(b + 60) != cow_crc32c(0, b, 60)) {
		cow_err("%s: superblock checksum mismatch (damaged)", p);
		r = -EBADMSG;
	} else if (cow_get_le32(b + 8) > COW_STORE_VERSION) {
		cow_err("%s: store format version %u is newer than this cowfs supports (%u); "
			"use a newer cowfs", path, cow_get_le32(b + 8), COW_STORE_VERSION);
		r = -EPROTONOSUPPORT;
	} else if (cow_get_le32(b + 12) != COW_BLOCK_SIZE) {
		cow_err("%s: block size %u is not supported", path, cow_get_le32(b + 12));
		r = -EBADMSG;
	}
	free(buf);
	return r;
}

/* ---- create / open ---------------------------------------------------- */

int cow_store_create(const char *path)
{
	/* 0711: every user may reach control.sock (the daemon checks who asks,
	 * by SO_PEERCRED); segments/ and refs/ stay the daemon's alone (0700). */
	if (mkdir(path, 0711) < 0) {
		if (errno != EEXIST)
			return -errno;
		char p[4096];
		snprintf(p, sizeof p, "%s/cowfs.super", path);
		if (access(p, F_OK) == 0)
			return -EEXIST;
	}
	char p[4096];
	snprintf(p, sizeof p, "%s/segments", path);
	int r = cow_log_create(p);
	if (r < 0)
		return r;
	snprintf(p, sizeof p, "%s/refs", path);
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	/* The superblock is written last: a store without one is not a store. */
	r = super_write(path);
	if (r == 0)
		r = cow_fsync_path(path);
	return r;
}

static int write_pid(int fd)
{
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, n, 0) != n)
		return -errno;
	return 0;
}

static int take_lock(const char *path, int *ret_fd)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/lock", path);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
		if (n > 0)
			pid[n] = 0;
		pid[strcspn(pid, "\n")] = 0;
		close(fd);
		if (e == EWOULDBLOCK) {
			cow_err("%s: store is already in use (mounted) by pid %s", path, pid[0] ? pid : "?");
			return -EBUSY;
		}
		return -e;
	}
	*ret_fd = fd;
	return write_pid(fd);
}

int cow_store_note_pid(struct cow_store *s) { return write_pid(s->lock_fd); }

int cow_store_open(const char *path, struct cow_store **ret)
{
	int r = super_check(path);
	if (r < 0)
		return r;
	struct cow_store *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	pthread_rwlock_init(&s->index_lock, NULL);
	pthread_mutex_init(&s->gate_lock, NULL);
	s->path = strdup(path);
	r = s->path ? take_lock(path, &s->lock_fd) : -ENOMEM;
	if (r < 0)
		goto fail;
	if (!(s->seg_objects = calloc(COW_LOG_WINDOW, sizeof *s->seg_objects)) ||
	    !(s->seg_bytes = calloc(COW_LOG_WINDOW, sizeof *s->seg_bytes))) {
		r = -ENOMEM;
		goto fail;
	}
	r = index_grow(s);
	if (r < 0)
		goto fail;
	char p[4096];
	snprintf(p, sizeof p, "%s/segments", path);
	r = cow_log_open(p, index_record, s, &s->log);
	if (r < 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	cow_store_close(s);
	return r;
}

void cow_store_close(struct cow_store *s)
{
	if (!s)
		return;
	cow_log_close(s->log);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->slots);
	free(s->seg_objects);
	free(s->seg_bytes);
	free(s->path);
	free(s);
}

const char *cow_store_path(const struct cow_store *s) { return s->path; }

/* ---- objects ---------------------------------------------------------- */

int cow_store_put_hashed(struct cow_store *s, const void *data, size_t len, const cow_hash *h)
{
	pthread_rwlock_wrlock(&s->index_lock);
	s->st.puts++;
	struct index_entry *e = index_find(s, h);
	int r = 0;
	if (e && !damaged(e)) {
		s->st.dedup_hits++;
		e->owner = 0; /* named twice now */
		if (s->marking)
			e->flags |= COW_MARK_PUT; /* GC must keep what a writer just named */
		goto out;
	}
	struct iovec iov[2] = { { (void *)h->b, COW_HASH_SIZE }, { (void *)data, len } };
	uint64_t pos;
	r = cow_log_append(s->log, COW_REC_OBJ, iov, 2, &pos);
	if (r == 0)
		r = index_put(s, h, pos, (uint32_t)len, false, true);
out:
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

/* Marks, in put_blocks' WHICH[], a new block that the batch names twice. */
#define SHARED_IN_BATCH ((size_t)1 << (sizeof(size_t) * 8 - 1))

/* An all-zero block is named by the zero hash and never stored. */
static bool zero_block(struct cow_store *s, const void *data, size_t len, cow_hash *ret)
{
	if (len != COW_BLOCK_SIZE || !cow_buf_is_zero(data, len))
		return false;
	*ret = cow_hash_zero;
	__atomic_add_fetch(&s->st.zero_puts, 1, __ATOMIC_RELAXED);
	return true;
}

/* The name of DATA: the zero hash for an all-zero block, its SHA-256
 * otherwise. */
static int name_object(struct cow_store *s, const void *data, size_t len, cow_hash *ret)
{
	return zero_block(s, data, len, ret) ? 0 : cow_hash_compute(data, len, ret);
}

int cow_store_put(struct cow_store *s, const void *data, size_t len, cow_hash *ret)
{
	int r = name_object(s, data, len, ret);
	if (r < 0 || cow_hash_is_zero(ret))
		return r;
	return cow_store_put_hashed(s, data, len, ret);
}

int cow_store_put_blocks(struct cow_store *s, const uint8_t *const *blocks, size_t n, cow_hash *ret)
{
	return cow_store_put_blocks_owned(s, blocks, n, 0, 0, ret);
}

int cow_store_put_blocks_owned(struct cow_store *s, const uint8_t *const *blocks, size_t n, uint32_t owner,
			       uint32_t gen, cow_hash *ret)
{
	struct cow_log_rec *recs = malloc(n * sizeof *recs);
	struct iovec *iov = malloc(2 * n * sizeof *iov);
	size_t *which = malloc(n * sizeof *which);
	uint64_t *pos = malloc(n * sizeof *pos);
	const void **data = calloc(n, sizeof *data);
	cow_hash *h = malloc(n * sizeof *h);
	int r = recs && iov && which && pos && data && h ? 0 : -ENOMEM;
	if (r < 0)
		goto out;
	/* Hash outside the lock, every block that is not all zeros in one
	 * batch; then one append for every block not yet stored. */
	size_t nz = 0;
	for (size_t i = 0; i < n; i++) {
		if (zero_block(s, blocks[i], COW_BLOCK_SIZE, &ret[i]))
			continue;
		which[nz] = i;
		data[nz++] = blocks[i];
	}
	if ((r = cow_hash_compute_many(data, COW_BLOCK_SIZE, nz, h)) < 0)
		goto out;
	for (size_t k = 0; k < nz; k++)
		ret[which[k]] = h[k];
	pthread_rwlock_wrlock(&s->index_lock);
	/* The index is far larger than the caches: ask for every block's home
	 * slot at once, so that the misses overlap instead of queueing. */
	for (size_t i = 0; i < n && s->cap; i++)
		__builtin_prefetch(&s->slots[slot_of(&ret[i], s->cap)]);
	int nnew = 0;
	for (size_t i = 0; i < n; i++) {
		if (cow_hash_is_zero(&ret[i]))
			continue;
		s->st.puts++;
		struct index_entry *e = index_find(s, &ret[i]);
		bool dup = e && !damaged(e);
		if (dup) {
			e->owner = 0; /* named twice now */
			if (s->marking)
				e->flags |= COW_MARK_PUT;
		}
		for (int k = 0; k < nnew && !dup; k++)
			if ((dup = cow_hash_eq(&ret[which[k] & ~SHARED_IN_BATCH], &ret[i]))) /* twice in this batch */
				which[k] |= SHARED_IN_BATCH;
		if (dup) {
			s->st.dedup_hits++;
			continue;
		}
		iov[2 * nnew] = (struct iovec){ (void *)ret[i].b, COW_HASH_SIZE };
		iov[2 * nnew + 1] = (struct iovec){ (void *)blocks[i], COW_BLOCK_SIZE };
		recs[nnew] = (struct cow_log_rec){ COW_REC_OBJ, &iov[2 * nnew], 2 };
		/* (a good copy of a damaged object: others may name it already) */
		which[nnew++] = i | (e ? SHARED_IN_BATCH : 0);
	}
	int done = 0;
	r = cow_log_append_many(s->log, recs, nnew, pos, &done);
	for (int k = 0; k < done; k++) {
		const cow_hash *hk = &ret[which[k] & ~SHARED_IN_BATCH];
		int q = index_put(s, hk, pos[k], COW_BLOCK_SIZE, false, true);
		if (q < 0 && r == 0)
			r = q;
		struct index_entry *e = q == 0 && owner && !(which[k] & SHARED_IN_BATCH) ? index_find(s, hk) : NULL;
		if (e) {
			e->owner = owner;
			e->gen = gen;
		}
	}
	pthread_rwlock_unlock(&s->index_lock);
out:
	free(recs);
	free(iov);
	free(which);
	free(pos);
	free(data);
	free(h);
	return r;
}

/* Where H is: 0, -ENOENT (not stored), -EBADMSG (only a damaged copy). */
static int lookup(struct cow_store *s, const cow_hash *h, uint64_t *pos, uint32_t *len)
{
	pthread_rwlock_rdlock(&s->index_lock);
	struct index_entry *e = index_find(s, h);
	int r = !e ? -ENOENT : damaged(e) ? -EBADMSG : 0;
	if (e) {
		*pos = e->pos;
		*len = e->len;
	}
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

int cow_store_has(struct cow_store *s, const cow_hash *h)
{
	pthread_rwlock_rdlock(&s->index_lock);
	struct index_entry *e = index_find(s, h);
	int r = e && !damaged(e);
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

/* Read object H (LEN bytes, 0: any) into BUF, or a malloc'd *RET_BUF; verify
 * its hash.  A read that finds its segment dropped by GC looks the object up
 * again (GC copied it first).  -ENOENT, -EBADMSG (damaged record), -EIO
 * (wrong bytes, wrong size, or a failed read); with LOUD, a message says so. */
static int read_object(struct cow_store *s, const cow_hash *h, size_t want, bool loud, void *buf, void **ret_buf,
		       size_t *ret_len, uint64_t *ret_pos)
{
	char hex[65];
	uint64_t pos = 0;
	uint32_t len = 0;
	int r;
	for (int attempt = 0;; attempt++) {
		r = lookup(s, h, &pos, &len);
		if (r < 0)
			break;
		if (want && len != want) {
			if (loud) {
				cow_hash_to_hex(h, hex);
				cow_err("object %s has %u bytes where %zu were expected", hex, len, want);
			}
			r = -EIO;
			break;
		}
		void *dst = buf;
		if (!dst && !(dst = malloc(len ? len : 1))) {
			r = -ENOMEM;
			break;
		}
		r = cow_log_read(s->log, pos, COW_HASH_SIZE, dst, len);
		cow_hash got;
		if (r == 0)
			r = cow_hash_compute(dst, len, &got);
		if (r == 0 && !cow_hash_eq(&got, h)) {
			if (loud) {
				cow_hash_to_hex(h, hex);
				cow_err("object %s: content read from segment %u offset %u does not match its hash",
					hex, COW_LOG_POS_SEG(pos), COW_LOG_POS_OFF(pos));
			}
			r = -EIO;
		}
		if (r == 0 && ret_buf) {
			*ret_buf = dst;
			*ret_len = len;
		} else if (dst != buf) {
			free(dst);
		}
		if (r != -ESTALE || attempt >= 8)
			break;
	}
	if (r == -ESTALE)
		r = -EIO;
	if (loud && (r == -ENOENT || r == -EBADMSG)) {
		cow_hash_to_hex(h, hex);
		cow_err("object %s is %s", hex,
			r == -EBADMSG ? "damaged on disk (checksum mismatch)" : "missing from the store");
	}
	if (ret_pos)
		*ret_pos = pos;
	if (r < 0 && r != -ENOMEM)
		__atomic_add_fetch(&s->st.get_errors, 1, __ATOMIC_RELAXED);
	return r;
}

int cow_store_get(struct cow_store *s, const cow_hash *h, void *buf, size_t len)
{
	__atomic_add_fetch(&s->st.gets, 1, __ATOMIC_RELAXED);
	if (cow_hash_is_zero(h)) {
		memset(buf, 0, len);
		return 0;
	}
	int r = read_object(s, h, len, true, buf, NULL, NULL, NULL);
	return r == -ENOENT || r == -EBADMSG ? -EIO : r;
}

int cow_store_get_alloc(struct cow_store *s, const cow_hash *h, void **ret_buf, size_t *ret_len)
{
	int r = read_object(s, h, 0, true, NULL, ret_buf, ret_len, NULL);
	return r == -ENOENT || r == -EBADMSG ? -EIO : r;
}

int cow_store_check(struct cow_store *s, const cow_hash *h, uint64_t *ret_pos, void **ret_buf, size_t *ret_len)
{
	void *buf = NULL;
	size_t len = 0;
	int r = read_object(s, h, 0, false, NULL, &buf, &len, ret_pos);
	if (r == 0 && ret_buf) {
		*ret_buf = buf;
		*ret_len = len;
	} else {
		free(buf);
	}
	return r;
}

/* ---- metadata records, sync, stats ------------------------------------ */

int cow_store_meta_append(struct cow_store *s, const struct iovec *iov, int iovcnt, uint64_t *ret_pos)
{
	return cow_log_append(s->log, COW_REC_META, iov, iovcnt, ret_pos);
}

struct meta_scan { cow_store_meta_fn fn; void *ctx; };

static int meta_filter(void *ctx, uint64_t pos, unsigned type, const uint8_t *payload, uint32_t len)
{
	struct meta_scan *m = ctx;
	return type == COW_REC_META ? m->fn(m->ctx, pos, payload, len) : 0;
}

int cow_store_meta_scan(struct cow_store *s, uint64_t from, cow_store_meta_fn fn, void *ctx)
{
	struct meta_scan m = { fn, ctx };
	return cow_log_scan(s->log, from, meta_filter, &m);
}

int cow_store_sync(struct cow_store *s) { return cow_log_sync(s->log); }
void cow_store_sync_then(struct cow_store *s, cow_log_synced_fn fn, void *arg) { cow_log_sync_then(s->log, fn, arg); }
uint64_t cow_store_log_end(struct cow_store *s) { return cow_log_end(s->log); }
uint64_t cow_store_durable_end(struct cow_store *s) { return cow_log_synced(s->log); }

void cow_store_get_stats(struct cow_store *s, struct cow_store_stats *ret)
{
	pthread_rwlock_rdlock(&s->index_lock);
	*ret = s->st;
	pthread_rwlock_unlock(&s->index_lock);
	struct cow_log_stats ls;
	cow_log_get_stats(s->log, &ls);
	ret->log_bytes = ls.bytes;
	ret->log_syncs = ls.syncs;
	ret->log_sync_waits = ls.sync_waits;
}

/* ---- forgetting what only its owner named ------------------------------ */

void cow_store_segment_usage(struct cow_store *s, uint32_t seg, uint32_t *ret_objects, uint64_t *ret_bytes)
{
	pthread_rwlock_rdlock(&s->index_lock);
	*ret_objects = s->seg_objects[COW_LOG_SLOT(seg)];
	*ret_bytes = s->seg_bytes[COW_LOG_SLOT(seg)];
	pthread_rwlock_unlock(&s->index_lock);
}

uint32_t cow_store_new_owner(struct cow_store *s) { return __atomic_add_fetch(&s->owner_seq, 1, __ATOMIC_RELAXED); }
uint32_t cow_store_new_gen(struct cow_store *s) { return __atomic_add_fetch(&s->gen_seq, 1, __ATOMIC_RELAXED); }
void cow_store_set_reclaim(struct cow_store *s, bool on) { __atomic_store_n(&s->reclaim_on, on, __ATOMIC_RELAXED); }
bool cow_store_reclaim_on(struct cow_store *s) { return __atomic_load_n(&s->reclaim_on, __ATOMIC_RELAXED); }

unsigned cow_store_read_enter(struct cow_store *s)
{
	/* Counted in the epoch that is current once counted: the next
	 * barrier waits for exactly that slot. */
	for (;;) {
		unsigned e = __atomic_load_n(&s->gate_epoch, __ATOMIC_SEQ_CST) & 1;
		__atomic_add_fetch(&s->gate_count[e], 1, __ATOMIC_SEQ_CST);
		if ((__atomic_load_n(&s->gate_epoch, __ATOMIC_SEQ_CST) & 1) == e)
			return e;
		__atomic_sub_fetch(&s->gate_count[e], 1, __ATOMIC_SEQ_CST);
	}
}

void cow_store_read_leave(struct cow_store *s, unsigned token)
{
	__atomic_sub_fetch(&s->gate_count[token], 1, __ATOMIC_SEQ_CST);
}

/* Wait for every read that entered the gate before this call began. */
static void read_barrier(struct cow_store *s)
{
	pthread_mutex_lock(&s->gate_lock);
	unsigned old = __atomic_fetch_xor(&s->gate_epoch, 1, __ATOMIC_SEQ_CST) & 1;
	for (unsigned spins = 0; __atomic_load_n(&s->gate_count[old], __ATOMIC_SEQ_CST); spins++) {
		if (spins < 64)
			sched_yield();
		else
			usleep(50);
	}
	pthread_mutex_unlock(&s->gate_lock);
}

int cow_store_forget(struct cow_store *s, const cow_hash *h, size_t n, uint32_t owner, uint32_t after_gen,
		     struct cow_store_forgot *ret)
{
	*ret = (struct cow_store_forgot){ 0 };
	if (owner == 0)
		return -EINVAL;
	read_barrier(s);
	pthread_rwlock_wrlock(&s->index_lock);
	int r = s->pass ? -EBUSY : 0; /* a GC's plan lists objects by position */
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct index_entry *e = cow_hash_is_zero(&h[i]) ? NULL : index_find(s, &h[i]);
		if (!e || e->owner != owner || e->gen <= after_gen || damaged(e))
			continue;
		ret->objects++;
		ret->bytes += e->len;
		index_remove(s, e);
	}
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

/* ---- mark passes and GC ------------------------------------------------ */

/* Whole-index loops let puts and reads in every this many entries. */
#define INDEX_CHUNK 65536

int cow_store_mark_begin(struct cow_store *s)
{
	pthread_rwlock_wrlock(&s->index_lock);
	int r = s->pass ? -EBUSY : 0;
	if (r == 0) {
		/* Nothing marks until s->marking: the marks can be cleared a chunk
		 * at a time; a grow in between moves entries, so it starts over. */
		s->pass = true;
		__atomic_add_fetch(&s->pass_token, 1, __ATOMIC_RELEASE);
		size_t cap = s->cap;
		for (size_t i = 0; i < s->cap;) {
			if (s->cap != cap) {
				cap = s->cap;
				i = 0;
			}
			for (size_t end = COW_MIN(i + INDEX_CHUNK, s->cap); i < end; i++)
				s->slots[i].flags &= COW_MARK_DAMAGED;
			pthread_rwlock_unlock(&s->index_lock);
			pthread_rwlock_wrlock(&s->index_lock);
		}
		s->marking = true;
		__atomic_add_fetch(&s->pass_token, 1, __ATOMIC_RELEASE);
		/* GC must be able to move the oldest segments on when ordinary
		 * appends have filled the log's window (log.h).  (The log's lock
		 * nests inside index_lock; the log never calls out holding it.) */
		cow_log_set_reserve(s->log, true);
	}
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

void cow_store_mark_end(struct cow_store *s)
{
	pthread_rwlock_wrlock(&s->index_lock);
	if (s->pass) {
		cow_log_set_reserve(s->log, false);
		__atomic_add_fetch(&s->pass_token, 1, __ATOMIC_RELEASE);
	}
	s->marking = s->pass = false;
	pthread_rwlock_unlock(&s->index_lock);
}

/* No lock: a pass that matters checkpoints the branch after it bumps the
 * token, so the writer, which reads it again once it holds the branch lock
 * the checkpoint released, sees the bump. */
uint64_t cow_store_pass_token(struct cow_store *s) { return __atomic_load_n(&s->pass_token, __ATOMIC_ACQUIRE); }

size_t cow_store_hold(struct cow_store *s, const cow_hash *h, size_t n, bool *missing)
{
	size_t nmissing = 0;
	pthread_rwlock_wrlock(&s->index_lock);
	for (size_t i = 0; i < n; i++) {
		struct index_entry *e = cow_hash_is_zero(&h[i]) ? NULL : index_find(s, &h[i]);
		missing[i] = !cow_hash_is_zero(&h[i]) && (!e || damaged(e));
		if (missing[i])
			nmissing++;
		else if (e && s->marking)
			e->flags |= COW_MARK_PUT;
	}
	pthread_rwlock_unlock(&s->index_lock);
	return nmissing;
}

int cow_store_mark(struct cow_store *s, const cow_hash *h, size_t n, uint32_t root, bool shared,
		   struct cow_mark *ret)
{
	if (root == 0 || root > COW_MARK_ROOT_MAX)
		return -EINVAL;
	pthread_rwlock_wrlock(&s->index_lock);
	int r = s->marking ? 0 : -EINVAL;
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct index_entry *e = cow_hash_is_zero(&h[i]) ? NULL : index_find(s, &h[i]);
		if (!e) {
			ret[i] = (struct cow_mark){ .flags = cow_hash_is_zero(&h[i]) ? 0 : COW_MARK_MISSING };
			continue;
		}
		uint32_t owner = e->flags >> OWNER_SHIFT;
		ret[i] = (struct cow_mark){ .flags = e->flags & ((1u << OWNER_SHIFT) - 1), .owner = owner,
					    .len = e->len, .pos = e->pos };
		if (!(e->flags & COW_MARK_SEEN))
			e->flags = (e->flags & ((1u << OWNER_SHIFT) - 1)) | COW_MARK_SEEN |
				   (shared ? COW_MARK_SHARED : 0) | root << OWNER_SHIFT;
		else if (!(e->flags & COW_MARK_SHARED) && (shared || owner != root))
			e->flags |= COW_MARK_SHARED;
	}
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

int cow_store_mark_bad(struct cow_store *s, const cow_hash *h)
{
	pthread_rwlock_wrlock(&s->index_lock);
	struct index_entry *e = s->marking ? index_find(s, h) : NULL;
	if (e)
		e->flags |= COW_MARK_BAD;
	pthread_rwlock_unlock(&s->index_lock);
	return e ? 0 : -ENOENT;
}

int cow_store_tally(struct cow_store *s, cow_store_tally_fn fn, void (*restart)(void *ctx), void *ctx)
{
	pthread_rwlock_rdlock(&s->index_lock);
	int r = s->marking ? 0 : -EINVAL;
	size_t cap = s->cap;
	if (r == 0)
		restart(ctx);
	/* A chunk at a time, so that puts are not held up for the whole index.
	 * An entry put meanwhile may be missed: it is at the head, which GC
	 * does not sweep, and marked by its put only.  A grow moves entries:
	 * start over. */
	for (size_t i = 0; r == 0 && i < s->cap;) {
		if (s->cap != cap) {
			cap = s->cap;
			i = 0;
			restart(ctx);
		}
		for (size_t end = COW_MIN(i + INDEX_CHUNK, s->cap); i < end; i++) {
			const struct index_entry *e = &s->slots[i];
			if (e->pos)
				fn(ctx, e->pos, e->len, e->flags & ((1u << OWNER_SHIFT) - 1), e->flags >> OWNER_SHIFT);
		}
		pthread_rwlock_unlock(&s->index_lock);
		pthread_rwlock_rdlock(&s->index_lock);
	}
	pthread_rwlock_unlock(&s->index_lock);
	return r;
}

int cow_store_roll(struct cow_store *s) { return cow_log_roll(s->log); }

int cow_store_segments(struct cow_store *s, struct cow_log_segment **ret, size_t *ret_n)
{
	return cow_log_segments(s->log, ret, ret_n);
}

/* Records of one segment on their way to the head of the log. */
struct reloc {
	struct cow_store *s;
	struct cow_store_sweep *acc;
	bool keep;              /* a damaged object somebody needs: the segment stays */
	bool move_damaged;      /* ... unless the log must roll on past it */
	bool all_indexed;       /* everything the index holds is live (no marks) */
	uint8_t *buf;           /* payloads (hash + bytes) back to back */
	size_t used;
	struct reloc_item { uint64_t pos; size_t off; uint32_t len; bool live; } *items;
	size_t n;
};
#define RELOC_BATCH_BYTES (1u << 20) /* bounds how long the log lock is held per append */
#define RELOC_BATCH_ITEMS 512

static bool live(const struct index_entry *e) { return e->flags & (COW_MARK_SEEN | COW_MARK_PUT); }
static bool kept(const struct reloc *rl, const struct index_entry *e) { return rl->all_indexed || live(e); }

static int reloc_flush(struct reloc *rl)
{
	struct cow_store *s = rl->s;
	if (rl->n == 0)
		return 0;
	/* Decide under the lock: a put that found an object before this point
	 * marked it live; one after it finds nothing and stores a new copy. */
	pthread_rwlock_wrlock(&s->index_lock);
	int nlive = 0;
	for (size_t i = 0; i < rl->n; i++) {
		struct reloc_item *it = &rl->items[i];
		struct index_entry *e = index_find(s, (const cow_hash *)(rl->buf + it->off));
		it->live = false;
		if (!e || e->pos != it->pos)
			continue; /* a copy the index does not use */
		if (kept(rl, e)) {
			it->live = true;
			nlive++;
		} else {
			rl->acc->dropped_objects++;
			rl->acc->dropped_bytes += it->len - COW_HASH_SIZE;
			index_remove(s, e);
		}
	}
	pthread_rwlock_unlock(&s->index_lock);
	int r = 0;
	if (nlive) {
		struct iovec *iov = malloc(nlive * sizeof *iov);
		struct cow_log_rec *recs = malloc(nlive * sizeof *recs);
		uint64_t *pos = malloc(nlive * sizeof *pos);
		int k = 0, done = 0;
		r = iov && recs && pos ? 0 : -ENOMEM;
		for (size_t i = 0; r == 0 && i < rl->n; i++)
			if (rl->items[i].live) {
				iov[k] = (struct iovec){ rl->buf + rl->items[i].off, rl->items[i].len };
				recs[k] = (struct cow_log_rec){ COW_REC_OBJ, &iov[k], 1 };
				k++;
			}
		if (r == 0)
			r = cow_log_append_many(s->log, recs, nlive, pos, &done);
		pthread_rwlock_wrlock(&s->index_lock);
		k = 0;
		for (size_t i = 0; i < rl->n && k < done; i++) {
			struct reloc_item *it = &rl->items[i];
			if (!it->live)
				continue;
			struct index_entry *e = index_find(s, (const cow_hash *)(rl->buf + it->off));
			if (e && e->pos == it->pos) {
				seg_count(s, e->pos, -1, e->len);
				seg_count(s, pos[k], 1, e->len);
				e->pos = pos[k];
			}
			rl->acc->moved_objects++;
			rl->acc->moved_bytes += it->len - COW_HASH_SIZE;
			k++;
		}
		pthread_rwlock_unlock(&s->index_lock);
		free(iov);
		free(recs);
		free(pos);
	}
	rl->n = 0;
	rl->used = 0;
	return r;
}

static int reloc_record(void *ctx, uint64_t pos, unsigned type, const uint8_t *payload, uint32_t len)
{
	struct reloc *rl = ctx;
	struct cow_store *s = rl->s;
	/* Metadata records are not copied: every branch was checkpointed past them. */
	if ((type & ~COW_REC_DAMAGED) != COW_REC_OBJ || len < COW_HASH_SIZE)
		return 0;
	if (type & COW_REC_DAMAGED) {
		pthread_rwlock_wrlock(&s->index_lock);
		struct index_entry *e = index_find(s, (const cow_hash *)payload);
		bool copy = false;
		if (e && e->pos == pos) {
			if (kept(rl, e) && rl->move_damaged) {
				/* The bytes as they are, evidence and all: the copy's
				 * record checksum is good, and reads of it still fail
				 * (its bytes do not hash to its name). */
				rl->acc->damaged_moved++;
				copy = true;
			} else if (kept(rl, e)) {
				rl->keep = true; /* nothing good to copy, and the evidence stays */
			} else {
				rl->acc->dropped_objects++;
				rl->acc->dropped_bytes += e->len;
				index_remove(s, e);
			}
		}
		pthread_rwlock_unlock(&s->index_lock);
		if (!copy)
			return 0;
		char hex[2 * COW_HASH_SIZE + 1];
		cow_hash_to_hex((const cow_hash *)payload, hex);
		cow_warn("gc: moving damaged object %s out of segment %u as it is, so that the log can roll on; "
			 "reads of it still fail with EIO", hex, COW_LOG_POS_SEG(pos));
	}
	if (rl->n == RELOC_BATCH_ITEMS || rl->used + len > RELOC_BATCH_BYTES) {
		int r = reloc_flush(rl);
		if (r < 0)
			return r;
	}
	if (len > RELOC_BATCH_BYTES) {
		/* larger than a batch: on its own */
		uint8_t *big = malloc(len);
		if (!big)
			return -ENOMEM;
		uint8_t *saved = rl->buf;
		memcpy(big, payload, len);
		rl->buf = big;
		rl->items[0] = (struct reloc_item){ pos, 0, len, false };
		rl->n = 1;
		int r = reloc_flush(rl);
		rl->buf = saved;
		free(big);
		return r;
	}
	memcpy(rl->buf + rl->used, payload, len);
	rl->items[rl->n++] = (struct reloc_item){ pos, rl->used, len, false };
	rl->used += len;
	return 0;
}

/* The objects the index holds in the segments a sweep is to rewrite,
 * ascending by position, each as the index saw it when planned. */
struct plan_item {
	cow_hash key;
	uint64_t pos;
	uint32_t len;
	bool live;
};
struct cow_store_plan {
	struct plan_item *v;
	size_t n, cap;
};

static int by_pos(const void *a, const void *b)
{
	const struct plan_item *x = a, *y = b;
	return (x->pos > y->pos) - (x->pos < y->pos);
}

void cow_store_plan_free(struct cow_store_plan *p)
{
	if (p)
		free(p->v);
	free(p);
}

int cow_store_plan(struct cow_store *s, const uint32_t *segs, size_t nsegs, struct cow_store_plan **ret)
{
	/* the segments present span less than the window: a slot names one */
	uint8_t *want = calloc(COW_LOG_WINDOW / 8, 1);
	struct cow_store_plan *p = calloc(1, sizeof *p);
	int r = want && p ? 0 : -ENOMEM;
	for (size_t k = 0; r == 0 && k < nsegs; k++)
		want[COW_LOG_SLOT(segs[k]) / 8] |= (uint8_t)(1u << (COW_LOG_SLOT(segs[k]) % 8));
	pthread_rwlock_rdlock(&s->index_lock);
	if (r == 0 && !s->marking)
		r = -EINVAL;
	/* A chunk at a time, as cow_store_tally does.  Puts meanwhile go to
	 * the head, which is not swept; a grow moves entries: start over. */
	size_t cap = s->cap;
	for (size_t i = 0; r == 0 && i < s->cap;) {
		if (s->cap != cap) {
			cap = s->cap;
			i = 0;
			p->n = 0;
		}
		for (size_t end = COW_MIN(i + INDEX_CHUNK, s->cap); r == 0 && i < end; i++) {
			const struct index_entry *e = &s->slots[i];
			uint32_t sl = e->pos ? COW_LOG_SLOT(COW_LOG_POS_SEG(e->pos)) : 0;
			if (!e->pos || !(want[sl / 8] & (1u << (sl % 8))))
				continue;
			if (p->n == p->cap) {
				size_t ncap = p->cap ? p->cap * 2 : 4096;
				struct plan_item *nv = realloc(p->v, ncap * sizeof *nv);
				if (!nv) {
					r = -ENOMEM;
					break;
				}
				p->v = nv;
				p->cap = ncap;
			}
			p->v[p->n++] = (struct plan_item){ e->key, e->pos, e->len, live(e) };
		}
		pthread_rwlock_unlock(&s->index_lock);
		pthread_rwlock_rdlock(&s->index_lock);
	}
	pthread_rwlock_unlock(&s->index_lock);
	free(want);
	if (r < 0) {
		cow_store_plan_free(p);
		return r;
	}
	qsort(p->v, p->n, sizeof *p->v, by_pos);
	*ret = p;
	return 0;
}

/* Relocate SEG as PLAN lists it: forget the objects that are dead (a chunk
 * at a time under the lock, deciding as reloc_flush does), and read only
 * the live ones, not the whole segment: under a load that rewrites pages,
 * most of a segment is garbage, and reading it all took the disk from
 * every commit.  -EAGAIN: the index and the segment disagree, or the index
 * still points into SEG (something the plan missed): scan it whole. */
#define FORGET_CHUNK 1024
static int reloc_planned(struct reloc *rl, uint32_t seg, const struct cow_store_plan *plan)
{
	struct cow_store *s = rl->s;
	size_t lo = 0, hi = plan->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (COW_LOG_POS_SEG(plan->v[mid].pos) < seg)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (hi = lo; hi < plan->n && COW_LOG_POS_SEG(plan->v[hi].pos) == seg; hi++)
		;
	struct cow_log_extent *x = malloc((hi - lo + 1) * sizeof *x);
	if (!x)
		return -ENOMEM;
	size_t nx = 0;
	for (size_t i = lo; i < hi;) {
		pthread_rwlock_wrlock(&s->index_lock);
		for (size_t end = COW_MIN(i + FORGET_CHUNK, hi); i < end; i++) {
			const struct plan_item *it = &plan->v[i];
			struct index_entry *e = it->live ? NULL : index_find(s, &it->key);
			if (!it->live && (!e || e->pos != it->pos))
				continue; /* moved or gone since */
			if (it->live || kept(rl, e)) {
				/* (one a put revived since the plan is moved too) */
				x[nx++] = (struct cow_log_extent){ COW_LOG_POS_OFF(it->pos), it->len + COW_HASH_SIZE };
				continue;
			}
			rl->acc->dropped_objects++;
			rl->acc->dropped_bytes += e->len;
			index_remove(s, e);
		}
		pthread_rwlock_unlock(&s->index_lock);
	}
	int r = cow_log_scan_records(s->log, seg, x, nx, reloc_record, rl);
	free(x);
	if (r == 0)
		r = reloc_flush(rl);
	if (r == 0 && !rl->keep) {
		pthread_rwlock_rdlock(&s->index_lock);
		if (s->seg_objects[COW_LOG_SLOT(seg)])
			r = -EAGAIN;
		pthread_rwlock_unlock(&s->index_lock);
	}
	return r == -EBADMSG ? -EAGAIN : r;
}

int cow_store_relocate(struct cow_store *s, uint32_t seg, const struct cow_store_plan *plan, unsigned flags,
		       struct cow_store_sweep *acc)
{
	struct reloc rl = { .s = s, .acc = acc, .move_damaged = flags & COW_RELOC_MOVE_DAMAGED,
			    .all_indexed = flags & COW_RELOC_ALL_INDEXED };
	rl.buf = malloc(RELOC_BATCH_BYTES);
	rl.items = malloc(RELOC_BATCH_ITEMS * sizeof *rl.items);
	int r = rl.buf && rl.items ? 0 : -ENOMEM;
	if (r == 0)
		r = plan ? reloc_planned(&rl, seg, plan) : -EAGAIN;
	if (r == -EAGAIN) {
		/* what is moved already is a copy the index no longer uses there */
		r = cow_log_scan_segment(s->log, seg, reloc_record, &rl);
		if (r == 0)
			r = reloc_flush(&rl);
	}
	free(rl.buf);
	free(rl.items);
	if (r < 0)
		return r;
	return rl.keep ? 0 : 1;
}

int cow_store_drop_segments(struct cow_store *s, const uint32_t *segs, size_t n)
{
	if (n == 0)
		return 0;
	/* Never drop what the index still points into. */
	pthread_rwlock_rdlock(&s->index_lock);
	int r = 0;
	for (size_t k = 0; k < n && r == 0; k++)
		if (s->seg_objects[COW_LOG_SLOT(segs[k])]) {
			cow_err("gc: segment %u still holds %u indexed objects; not dropped", segs[k],
				s->seg_objects[COW_LOG_SLOT(segs[k])]);
			r = -EBUSY;
		}
	pthread_rwlock_unlock(&s->index_lock);
	/* The copies are durable before the originals go. */
	if (r == 0)
		r = cow_log_sync(s->log);
	if (r == 0)
		r = cow_log_drop(s->log, segs, n);
	return r;
}
