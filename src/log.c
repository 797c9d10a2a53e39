#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "hash.h"
#include "io.h"
#include "util.h"

static const char seg_magic[8] = { 'C', 'O', 'W', 'F', 'S', 'S', 'E', 'G' };
#define REC_MAGIC 0x52574f43u /* "COWR" little-endian */

struct cow_log {
	char *dir;
	pthread_mutex_t lock;
	pthread_cond_t synced_cond;
	/* protected by lock: */
	uint32_t first_seg, cur_seg;
	uint32_t cur_off;          /* append offset in cur_seg */
	uint64_t synced;           /* every record below this position is durable */
	bool syncing;              /* a leader is inside fdatasync */
	struct waiter *waiters;    /* callers of cow_log_sync_then not yet served */
	uint64_t waiters_max;      /* the highest target among them */
	int failed;                /* sticky -errno after a failed sync */
	struct cow_log_stats stats;
	/* the next segment, zero-filled ahead of need (protected by lock) */
	pthread_t prep_thread;
	pthread_cond_t prep_cond;
	bool prep_running, prep_stop, prep_busy, prep_wanted;
	int prep_fd;               /* >= 0: ready */
	int prep_err;
	uint64_t seg_syncs_start;  /* stats.syncs when cur_seg was started */
	/* page cache of cur_seg: writeback started below wb_off, dropped below
	 * drop_off (protected by lock; see cache_behind()) */
	uint32_t wb_off, drop_off;
	/* The dropped set: ascending, disjoint, non-adjacent ranges (protected
	 * by lock).  Every number below first_seg is in it. */
	struct drop_range *dropped;
	size_t ndropped;
	/* Per-segment state lives in slot seg & (window - 1): the segments
	 * present span fewer than window numbers (roll_segment refuses to
	 * break that), so no two share a slot.  window is COW_LOG_WINDOW, or
	 * smaller for tests (COWFS_TEST_LOG_WINDOW). */
	uint32_t window;
	bool reserve_open;         /* cow_log_set_reserve (protected by lock) */
	bool window_warned;        /* the -ENOSPC of a full window was logged (protected by lock) */
	uint32_t ends[COW_LOG_WINDOW]; /* end of each full segment (protected by lock) */
	/* fds[] and segs[] are written once per segment before any position in
	 * it is handed out; fds[] is set to -1 when GC drops the segment, under
	 * seg_lock held for writing.  Readers of a segment's file hold seg_lock
	 * for reading and use seg_fd(). */
	pthread_rwlock_t seg_lock;
	int fds[COW_LOG_WINDOW];
	uint32_t segs[COW_LOG_WINDOW]; /* the segment whose file fds[] holds */
};

struct drop_range {
	uint32_t first, last; /* inclusive */
};

static uint32_t slot(const struct cow_log *log, uint32_t seg) { return seg & (log->window - 1); }

/* The file of segment SEG, or -1 if it is not open (dropped, or never
 * was).  A roll fills a slot without seg_lock (it may be taken by a scan
 * that appends): it stores segs[] before fds[], so a file seen here comes
 * with its own number. */
static int seg_fd(const struct cow_log *log, uint32_t seg)
{
	uint32_t i = slot(log, seg);
	int fd = __atomic_load_n(&log->fds[i], __ATOMIC_ACQUIRE);
	return __atomic_load_n(&log->segs[i], __ATOMIC_RELAXED) == seg ? fd : -1;
}

static bool is_dropped(const struct cow_log *log, uint32_t seg)
{
	size_t lo = 0, hi = log->ndropped;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (seg < log->dropped[mid].first)
			hi = mid;
		else if (seg > log->dropped[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static uint32_t pad8(uint32_t n) { return (n + 7) & ~7u; }

/* ---- page cache behind the log ----------------------------------------
 *
 * The kernel already caches file data above FUSE (keep_cache, writeback
 * cache), so a block the daemon appends would be cached twice: once in the
 * branch file's pages, once in the segment's.  The second copy halves the
 * memory left for caching and makes every append take pages nobody will
 * read, which is slow where fresh pages are dear (a VM whose memory is
 * given back to the host when freed: ~25 us per 8 KiB append instead of
 * ~3).  So the log drops what it appended from the page cache once it is
 * durable: after a group commit that makes DROP_MIN more durable, after
 * each roll, and, for appends with no sync in sight (bulk loads), it
 * starts writeback of each WINDOW as it fills and drops the window before.
 * Only advice: durability is still fdatasync's job, a page the kernel
 * cannot drop yet stays for its LRU, and the page holding the tail (with
 * its folio) is never dropped, so appends never read. */
#define CACHE_WINDOW (8u << 20)
/* The page cache may hold a file in folios of up to 2 MiB (a PMD), and a
 * folio only partly inside a DONTNEED range is left alone: each drop
 * starts again from the folio boundary below, so that one cut by the last
 * drop goes with the next. */
#define FOLIO_MAX (2u << 20)
/* A group commit drops what it made durable only once that is this much:
 * each drop is a syscall that may wait for every CPU to drain its page
 * batches, and a commit-heavy load syncs a few KiB at a time. */
#define DROP_MIN (256u << 10)

struct cache_op {
	uint32_t seg;
	uint32_t from, to; /* page-aligned byte range; empty: nothing to do */
	bool writeback;    /* start writeback of the range instead of dropping it */
};

static uint32_t page_down(uint32_t off) { return off & ~4095u; }

/* Under lock: what to do with cur_seg's cache now that everything below
 * SYNCED_OFF is durable (0: nothing new is durable) and the tail is at
 * cur_off.  At most two operations. */
static int cache_behind(struct cow_log *log, uint32_t synced_off, struct cache_op op[2])
{
	int n = 0;
	uint32_t seg = log->cur_seg, tail = page_down(log->cur_off);
	if (synced_off) {
		uint32_t to = COW_MIN(page_down(synced_off), tail);
		if (to >= log->drop_off + DROP_MIN) {
			op[n++] = (struct cache_op){ seg, log->drop_off, to, false };
			log->drop_off = to;
			log->wb_off = COW_MAX(log->wb_off, to);
		}
		return n;
	}
	if (tail >= log->wb_off + CACHE_WINDOW) {
		op[n++] = (struct cache_op){ seg, log->wb_off, tail, true };
		log->wb_off = tail;
		/* the window before the one just started has had a window's
		 * worth of appends to reach the disk */
		uint32_t to = log->wb_off - CACHE_WINDOW;
		if (to > log->drop_off + CACHE_WINDOW / 2) {
			op[n++] = (struct cache_op){ seg, log->drop_off, to, false };
			log->drop_off = to;
		}
	}
	return n;
}

/* Outside lock. */
static void cache_apply(struct cow_log *log, const struct cache_op *op, int n)
{
	pthread_rwlock_rdlock(&log->seg_lock);
	for (int i = 0; i < n; i++) {
		int fd = seg_fd(log, op[i].seg);
		if (fd < 0 || op[i].to <= op[i].from)
			continue;
		if (op[i].writeback)
			sync_file_range(fd, op[i].from, op[i].to - op[i].from, SYNC_FILE_RANGE_WRITE);
		else
			posix_fadvise(fd, op[i].from & ~(FOLIO_MAX - 1), op[i].to - (op[i].from & ~(FOLIO_MAX - 1)),
				      POSIX_FADV_DONTNEED);
	}
	pthread_rwlock_unlock(&log->seg_lock);
}

static void seg_path(const char *dir, uint32_t seg, char *out, size_t n)
{
	snprintf(out, n, "%s/%016llx.seg", dir, (unsigned long long)seg);
}

static void encode_seg_header(uint8_t *h, uint32_t seg)
{
	memset(h, 0, COW_LOG_SEG_HDR);
	memcpy(h, seg_magic, 8);
	cow_put_le32(h + 8, COW_LOG_VERSION);
	cow_put_le32(h + 12, COW_LOG_SEG_HDR);
	cow_put_le64(h + 16, seg);
	cow_put_le32(h + 28, cow_crc32c(0, h, 28));
}

static int check_seg_header(const uint8_t *h, uint32_t seg, const char *path)
{
	if (memcmp(h, seg_magic, 8) != 0 || cow_get_le32(h + 28) != cow_crc32c(0, h, 28)) {
		cow_err("%s: not a cowfs segment or its header is damaged", path);
		return -EBADMSG;
	}
	if (cow_get_le32(h + 8) > COW_LOG_VERSION) {
		cow_err("%s: segment format version %u is newer than this cowfs supports (%u)", path,
			cow_get_le32(h + 8), COW_LOG_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (cow_get_le32(h + 12) != COW_LOG_SEG_HDR || cow_get_le64(h + 16) != seg) {
		cow_err("%s: segment header names segment %llu, expected %u", path,
			(unsigned long long)cow_get_le64(h + 16), seg);
		return -EBADMSG;
	}
	return 0;
}

#define PREP_NAME "prealloc.tmp" /* zero-filled by the preparer */
#define NEW_NAME "new.tmp"          /* sparse, made by a roll that found none prepared */

/* Zero-fill the next segment only where syncs are dense: writing 64 MiB of
 * zeros costs about as much disk time as ~2000 fdatasyncs save by not
 * committing metadata, so it pays above ~32 syncs per MiB appended (TPC-B
 * style commits), and not for bulk loads (few syncs, many bytes). */
#define PREP_MIN_SYNCS_PER_MIB 32

/* Overwrite [from, to) with zeros: a new segment's preallocation, or a torn
 * tail inside one. */
static int zero_range(int fd, uint64_t from, uint64_t to)
{
	static const uint8_t zeros[1 << 20];
	while (from < to) {
		struct iovec iov = { (void *)zeros, (size_t)COW_MIN(to - from, (uint64_t)sizeof zeros) };
		ssize_t n = cow_io_pwritev_all(fd, &iov, 1, (off_t)from);
		if (n < 0)
			return (int)n;
		from += iov.iov_len;
	}
	return 0;
}

/* Make [from, to) of FD read as zeros after a failed write there: punch
 * it out (no space needed, so this works on a full disk), or else
 * overwrite it with zeros. */
static int clear_range(int fd, uint64_t from, uint64_t to)
{
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)(to - from)) == 0)
		return 0;
	return zero_range(fd, from, to);
}

/* Write DIR/NAME, COW_LOG_SEGMENT_MAX bytes long: zero-filled and synced
 * (so appends change no metadata), or sparse. */
static int new_segment_file(const char *dir, const char *name, bool zero_fill, int *ret_fd)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = zero_fill ? zero_range(fd, 0, COW_LOG_SEGMENT_MAX) : cow_io_ftruncate(fd, COW_LOG_SEGMENT_MAX);
	if (r == 0)
		r = cow_io_fdatasync(fd);
	if (r < 0) {
		close(fd);
		unlink(path);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

/* Turn DIR/NAME into segment SEG: header, sync, rename, sync dir.  On
 * failure the file is closed and removed. */
static int segment_install(const char *dir, const char *name, int fd, uint32_t seg)
{
	char from[4096], to[4096];
	snprintf(from, sizeof from, "%s/%s", dir, name);
	seg_path(dir, seg, to, sizeof to);
	uint8_t h[COW_LOG_SEG_HDR];
	encode_seg_header(h, seg);
	struct iovec iov = { h, sizeof h };
	ssize_t n = cow_io_pwritev_all(fd, &iov, 1, 0);
	int r = n < 0 ? (int)n : cow_io_fdatasync(fd);
	if (r == 0 && rename(from, to) < 0)
		r = -errno;
	if (r == 0)
		r = cow_fsync_path(dir);
	if (r < 0) {
		close(fd);
		unlink(from);
	}
	return r;
}

static int segment_create(const char *dir, uint32_t seg, int *ret_fd)
{
	int fd;
	int r = new_segment_file(dir, PREP_NAME, true, &fd);
	if (r == 0 && (r = segment_install(dir, PREP_NAME, fd, seg)) == 0)
		*ret_fd = fd;
	return r;
}

/* Tests reach what takes a store's lifetime: COWFS_TEST_LOG_FIRST=N starts
 * a new log at segment N (1..N-1 dropped), COWFS_TEST_LOG_WINDOW=W (a power
 * of two, 4 to COW_LOG_WINDOW) lets a log span only W segments. */
static uint32_t test_env(const char *name, uint32_t dflt, uint32_t min, uint32_t max)
{
	uint64_t n;
	return cow_parse_uint(getenv(name), min, max, &n) == 0 ? (uint32_t)n : dflt;
}

static uint32_t test_window(void)
{
	uint32_t w = test_env("COWFS_TEST_LOG_WINDOW", COW_LOG_WINDOW, 4, COW_LOG_WINDOW);
	return (w & (w - 1)) ? COW_LOG_WINDOW : w;
}

static int dropped_store(const char *dir, const struct drop_range *v, size_t n);

int cow_log_create(const char *dir)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	uint32_t first = test_env("COWFS_TEST_LOG_FIRST", 1, 1, UINT32_MAX - 1);
	int r = 0, fd;
	if (first > 1) {
		struct drop_range all_before = { 1, first - 1 };
		r = dropped_store(dir, &all_before, 1);
	}
	if (r == 0 && (r = segment_create(dir, first, &fd)) == 0)
		close(fd);
	return r;
}

/* Record header: magic u32, type u8, 3 reserved bytes, payload length u32,
 * crc32c u32 over the first 12 header bytes and the payload. */
static void encode_rec_header(uint8_t *h, unsigned type, uint32_t len)
{
	cow_put_le32(h, REC_MAGIC);
	h[4] = (uint8_t)type;
	h[5] = h[6] = h[7] = 0;
	cow_put_le32(h + 8, len);
}

/* A buffered sequential reader over one segment. */
struct reader {
	int fd;
	uint64_t size;
	uint8_t *buf;
	size_t cap;
	uint64_t win_off; /* file offset of buf[0] */
	size_t win_len;
	size_t ahead;     /* bytes to read at a time; 0: READ_AHEAD */
};
#define READ_AHEAD (4u << 20)

/* Make [off, off+len) available; returns a pointer or NULL (-errno in *err) */
static const uint8_t *reader_get(struct reader *rd, uint64_t off, size_t len, int *err)
{
	if (off >= rd->win_off && off + len <= rd->win_off + rd->win_len)
		return rd->buf + (off - rd->win_off);
	size_t want = COW_MAX(len, rd->ahead ? rd->ahead : (size_t)READ_AHEAD);
	if (want > rd->cap) {
		uint8_t *nb = realloc(rd->buf, want);
		if (!nb) {
			*err = -ENOMEM;
			return NULL;
		}
		rd->buf = nb;
		rd->cap = want;
	}
	ssize_t n = cow_io_pread_all(rd->fd, rd->buf, want, off);
	if (n < 0) {
		*err = (int)n;
		return NULL;
	}
	rd->win_off = off;
	rd->win_len = n;
	if ((size_t)n < len) {
		*err = 0; /* short: end of file */
		return NULL;
	}
	return rd->buf;
}

enum rec_state { REC_OK, REC_END, REC_BAD };

/* Check the record at OFF; on REC_OK the payload, length, type and next offset are set. */
static enum rec_state rec_check(struct reader *rd, uint64_t off, const uint8_t **payload, uint32_t *len,
				unsigned *type, uint64_t *next, int *err)
{
	*err = 0;
	if (off == rd->size)
		return REC_END;
	if (off + COW_LOG_REC_HDR > rd->size)
		return REC_BAD;
	const uint8_t *h = reader_get(rd, off, COW_LOG_REC_HDR, err);
	if (!h)
		return REC_BAD;
	if (cow_get_le32(h) != REC_MAGIC)
		return REC_BAD;
	uint32_t plen = cow_get_le32(h + 8);
	if (plen > COW_LOG_REC_MAX || off + COW_LOG_REC_HDR + plen > rd->size)
		return REC_BAD;
	h = reader_get(rd, off, COW_LOG_REC_HDR + plen, err);
	if (!h)
		return REC_BAD;
	uint32_t crc = cow_crc32c(0, h, 12);
	crc = cow_crc32c(crc, h + COW_LOG_REC_HDR, plen);
	if (crc != cow_get_le32(h + 12))
		return REC_BAD;
	*type = h[4];
	*len = plen;
	*payload = h + COW_LOG_REC_HDR;
	*next = off + pad8(COW_LOG_REC_HDR + plen);
	if (*next > rd->size)
		*next = rd->size; /* padding of the very last record may be cut; harmless */
	return REC_OK;
}

/* After a bad record at OFF: is there any valid record later in the segment?
 * If the bad record's frame looks intact, the search starts past its claimed
 * end, so that bytes inside its own payload (which may hold anything, even a
 * cowfs log) are not mistaken for a record. */
static bool valid_record_after(struct reader *rd, uint64_t off)
{
	uint64_t from = off + 8;
	int e;
	const uint8_t *bad = reader_get(rd, off, COW_LOG_REC_HDR, &e);
	if (bad && cow_get_le32(bad) == REC_MAGIC && cow_get_le32(bad + 8) <= COW_LOG_REC_MAX)
		from = off + pad8(COW_LOG_REC_HDR + cow_get_le32(bad + 8));
	uint8_t magic[4];
	cow_put_le32(magic, REC_MAGIC);
	/* Look for the magic a chunk at a time (fast over zeros), then check the
	 * candidates at record alignment.  Chunks start 8-aligned and are a
	 * multiple of 8 long, so no aligned header straddles two. */
	const size_t chunk = 1 << 20;
	for (uint64_t base = (from + 7) & ~7ull; base + COW_LOG_REC_HDR <= rd->size; base += chunk) {
		size_t n = (size_t)COW_MIN(rd->size - base, (uint64_t)chunk);
		const uint8_t *p = reader_get(rd, base, n, &e);
		if (!p)
			return false;
		for (size_t at = 0; at + 4 <= n;) {
			const uint8_t *q = memmem(p + at, n - at, magic, 4);
			if (!q)
				break;
			uint64_t o = base + (uint64_t)(q - p);
			at = (size_t)(q - p) + 1;
			if (o & 7)
				continue;
			const uint8_t *pl;
			uint32_t len;
			unsigned type;
			uint64_t next;
			if (rec_check(rd, o, &pl, &len, &type, &next, &e) == REC_OK)
				return true;
			/* rec_check may have moved the reader's window */
			if (!(p = reader_get(rd, base, n, &e)))
				return false;
		}
	}
	return false;
}

static bool rest_is_zero(struct reader *rd, uint64_t off, int *err)
{
	*err = 0;
	while (off < rd->size) {
		size_t n = (size_t)COW_MIN(rd->size - off, (uint64_t)1 << 20);
		const uint8_t *p = reader_get(rd, off, n, err);
		if (!p || !cow_buf_is_zero(p, n))
			return false;
		off += n;
	}
	return true;
}

/* Scan one segment from START up to LIMIT (a record boundary known to be the
 * end, or UINT64_MAX to find the end).  On the last segment a torn tail is
 * cut (if CUT), elsewhere any damage is an error.  *ret_end is the end. */
static int scan_segment(struct cow_log *log, uint32_t seg, uint64_t start, uint64_t limit, bool last, bool cut,
			cow_log_record_fn fn, void *ctx, uint64_t *ret_end)
{
	char path[4096];
	seg_path(log->dir, seg, path, sizeof path);
	struct stat st;
	int fd = seg_fd(log, seg);
	if (fstat(fd, &st) < 0)
		return -errno;
	struct reader rd = { .fd = fd, .size = COW_MIN((uint64_t)st.st_size, limit) };
	int r = 0, err;
	uint64_t off = COW_MAX(start, (uint64_t)COW_LOG_SEG_HDR);
	for (;;) {
		const uint8_t *p;
		uint32_t len;
		unsigned type;
		uint64_t next;
		enum rec_state s = rec_check(&rd, off, &p, &len, &type, &next, &err);
		if (err < 0) {
			r = err;
			break;
		}
		if (s == REC_END)
			break;
		if (s == REC_OK) {
			if (fn) {
				r = fn(ctx, COW_LOG_POS(seg, off), type, p, len);
				if (r < 0)
					break;
			}
			off = next;
			continue;
		}
		/* The clean end of a preallocated segment: zeros from here on. */
		if (rest_is_zero(&rd, off, &err))
			break;
		if (err < 0) {
			r = err;
			break;
		}
		/* A bad record: a torn tail if nothing valid follows, damage otherwise. */
		if (valid_record_after(&rd, off)) {
			const uint8_t *h = reader_get(&rd, off, COW_LOG_REC_HDR, &err);
			uint32_t plen = h ? cow_get_le32(h + 8) : 0;
			if (h && cow_get_le32(h) == REC_MAGIC && h[4] == COW_REC_OBJ && plen <= COW_LOG_REC_MAX &&
			    off + COW_LOG_REC_HDR + plen <= rd.size) {
				/* A data record whose frame is intact: keep going, and tell the
				 * caller, so that reads of it fail with EIO instead of the whole
				 * store failing to open. */
				cow_err("%s: object record at offset %llu fails its checksum; reads of it will "
					"fail with EIO", path, (unsigned long long)off);
				const uint8_t *pl = reader_get(&rd, off + COW_LOG_REC_HDR, plen, &err);
				if (fn && pl) {
					r = fn(ctx, COW_LOG_POS(seg, off), COW_REC_DAMAGED | COW_REC_OBJ, pl, plen);
					if (r < 0)
						break;
				}
				off += pad8(COW_LOG_REC_HDR + plen);
				continue;
			}
			cow_err("%s: record at offset %llu is damaged (checksum or header) and valid records "
				"follow it: not a torn tail, so nothing is cut", path, (unsigned long long)off);
			r = -EBADMSG;
			break;
		}
		if (!last) {
			cow_err("%s: damaged from offset %llu to its end, and it is not the last segment",
				path, (unsigned long long)off);
			r = -EBADMSG;
			break;
		}
		if (cut) {
			cow_warn("%s: clearing a torn tail at offset %llu (an append that was never synced)",
				 path, (unsigned long long)off);
			/* zero only as far as anything was written (reading holes is cheap) */
			uint64_t dirty_end = off;
			for (uint64_t o = off; o < rd.size; o += 1 << 20) {
				size_t n = (size_t)COW_MIN(rd.size - o, (uint64_t)1 << 20);
				const uint8_t *q = reader_get(&rd, o, n, &err);
				if (!q || !cow_buf_is_zero(q, n))
					dirty_end = o + n;
			}
			r = zero_range(fd, off, dirty_end);
			if (r == 0)
				r = cow_io_fdatasync(fd);
		}
		break;
	}
	free(rd.buf);
	*ret_end = off;
	return r;
}

/* ---- the dropped set: DIR/dropped -------------------------------------
 * magic "COWFSDRP", version u32, count u32, count ranges (first u32, last
 * u32, inclusive, ascending, disjoint), CRC32C u32 over everything before it.
 * Absent: nothing was ever dropped.  Numbers not dropped below the last
 * segment are present, fewer than COW_LOG_WINDOW of them, so there are at
 * most COW_LOG_WINDOW + 1 ranges. */
static const char drop_magic[8] = { 'C', 'O', 'W', 'F', 'S', 'D', 'R', 'P' };
#define DROP_VERSION 1
#define DROP_NAME "dropped"
#define DROP_TMP "dropped.tmp"
#define DROP_MAX_RANGES (COW_LOG_WINDOW + 1)

static int dropped_read(struct cow_log *log)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/" DROP_NAME, log->dir);
	char *buf;
	size_t len;
	int r = cow_read_file(path, (size_t)16 + 8 * DROP_MAX_RANGES + 4, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		cow_err("%s: %s", path, strerror(-r));
		return r;
	}
	const uint8_t *b = (const uint8_t *)buf;
	r = -EBADMSG;
	if (len < 20 || memcmp(b, drop_magic, 8) != 0 || cow_get_le32(b + len - 4) != cow_crc32c(0, b, len - 4)) {
		cow_err("%s: not a dropped-segment set, or damaged", path);
		goto out;
	}
	if (cow_get_le32(b + 8) > DROP_VERSION) {
		cow_err("%s: format version %u is newer than this cowfs supports (%u)", path, cow_get_le32(b + 8),
			DROP_VERSION);
		r = -EPROTONOSUPPORT;
		goto out;
	}
	uint32_t n = cow_get_le32(b + 12);
	if ((uint64_t)n * 8 + 20 != len) {
		cow_err("%s: length does not match its count of ranges", path);
		goto out;
	}
	struct drop_range *v = malloc((n ? n : 1) * sizeof *v);
	if (!v) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		v[i] = (struct drop_range){ cow_get_le32(b + 16 + 8 * i), cow_get_le32(b + 20 + 8 * i) };
		/* segment 0 never exists; ranges ascend with a gap between them */
		if (v[i].first == 0 || v[i].last < v[i].first || (i && v[i].first <= (uint64_t)v[i - 1].last + 1)) {
			cow_err("%s: range %u..%u is out of order or out of range", path, v[i].first, v[i].last);
			free(v);
			goto out;
		}
	}
	log->dropped = v;
	log->ndropped = n;
	r = 0;
out:
	free(buf);
	return r;
}

static int cmp_range(const void *a, const void *b)
{
	const struct drop_range *x = a, *y = b;
	return x->first < y->first ? -1 : x->first > y->first;
}

/* Write RANGES (N of them) as DIR/dropped: temp file, sync, rename, sync
 * the directory. */
static int dropped_store(const char *dir, const struct drop_range *v, size_t n)
{
	size_t len = 16 + 8 * n;
	uint8_t *buf = malloc(len + 4);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, drop_magic, 8);
	cow_put_le32(buf + 8, DROP_VERSION);
	cow_put_le32(buf + 12, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		cow_put_le32(buf + 16 + 8 * i, v[i].first);
		cow_put_le32(buf + 20 + 8 * i, v[i].last);
	}
	cow_put_le32(buf + len, cow_crc32c(0, buf, len));
	len += 4;
	char tmp[4096], dst[4096];
	snprintf(tmp, sizeof tmp, "%s/" DROP_TMP, dir);
	snprintf(dst, sizeof dst, "%s/" DROP_NAME, dir);
	int r = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
	} else {
		struct iovec iov = { buf, len };
		ssize_t w = cow_io_pwritev_all(fd, &iov, 1, 0);
		r = w < 0 ? (int)w : cow_io_fdatasync(fd);
		close(fd);
		if (r == 0 && rename(tmp, dst) < 0)
			r = -errno;
		if (r == 0)
			r = cow_fsync_path(dir);
		if (r < 0)
			unlink(tmp);
	}
	free(buf);
	return r;
}

/* Write the dropped set with SEGS added.  Called with lock held; the
 * in-memory set changes only once the file is durable. */
static int dropped_write(struct cow_log *log, const uint32_t *segs, size_t nsegs)
{
	struct drop_range *v = malloc((log->ndropped + nsegs) * sizeof *v);
	if (!v)
		return -ENOMEM;
	if (log->ndropped)
		memcpy(v, log->dropped, log->ndropped * sizeof *v);
	size_t n = log->ndropped;
	for (size_t i = 0; i < nsegs; i++)
		v[n++] = (struct drop_range){ segs[i], segs[i] };
	qsort(v, n, sizeof *v, cmp_range);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m && v[i].first <= (uint64_t)v[m - 1].last + 1)
			v[m - 1].last = COW_MAX(v[m - 1].last, v[i].last);
		else
			v[m++] = v[i];
	}
	int r = dropped_store(log->dir, v, m);
	if (r < 0) {
		free(v);
		return r;
	}
	free(log->dropped);
	log->dropped = v;
	log->ndropped = m;
	return 0;
}

/* Find the segments: *ret_first..*ret_last, each present unless GC dropped
 * it.  A segment still present although it is in the dropped set lost the
 * race with a crash between the set's update and the unlink: it is removed
 * now, unread (its live records were copied and synced before the drop). */
static int list_segments(struct cow_log *log, uint32_t *ret_first, uint32_t *ret_last)
{
	const char *dir = log->dir;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	uint32_t *present = NULL;
	size_t np = 0, cap = 0;
	uint32_t finished = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		unsigned long long n;
		char tail[8];
		if (sscanf(de->d_name, "%16llx.%7s", &n, tail) != 2 || strcmp(tail, "seg") != 0 ||
		    strlen(de->d_name) != 20)
			continue;
		if (n == 0 || n > UINT32_MAX) {
			cow_err("%s/%s: segment number out of range", dir, de->d_name);
			r = -EBADMSG;
			goto out;
		}
		if (is_dropped(log, (uint32_t)n)) {
			char path[4096];
			snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
			if (unlink(path) < 0 && errno != ENOENT) {
				r = -errno;
				goto out;
			}
			cow_info("%s: removed; GC had dropped it, a crash came before the unlink", path);
			finished++;
			continue;
		}
		if (np == cap) {
			cap = cap ? 2 * cap : 64;
			uint32_t *p = realloc(present, cap * sizeof *p);
			if (!p) {
				r = -ENOMEM;
				goto out;
			}
			present = p;
		}
		present[np++] = (uint32_t)n;
	}
	if (finished && (r = cow_fsync_path(dir)) < 0)
		goto out;
	if (!np) {
		cow_err("%s: no segment files: this is not a cowfs store, or its segments were removed", dir);
		r = -EBADMSG;
		goto out;
	}
	qsort(present, np, sizeof *present, cow_cmp_u32);
	uint32_t first = present[0], last = present[np - 1];
	for (size_t i = 1; i < np; i++)
		if (present[i] == present[i - 1]) {
			cow_err("%s: two files name segment %u", dir, present[i]);
			r = -EBADMSG;
			goto out;
		}
	if (last - first >= log->window) {
		cow_err("%s: segments %u to %u span more than the %u a log may hold", dir, first, last, log->window);
		r = -EBADMSG;
		goto out;
	}
	if (log->ndropped && log->dropped[log->ndropped - 1].last >= last) {
		cow_err("%s: segment %u is in the dropped set but the log ends at segment %u", dir,
			log->dropped[log->ndropped - 1].last, last);
		r = -EBADMSG;
		goto out;
	}
	/* Every number from 1 to last is present or dropped: walk both in order. */
	uint64_t missing = 0;
	uint32_t first_missing = 0;
	size_t i = 0, k = 0;
	for (uint64_t s = 1; s <= last;) {
		if (k < log->ndropped && s >= log->dropped[k].first) {
			s = (uint64_t)log->dropped[k++].last + 1;
		} else if (i < np && s == present[i]) {
			s++;
			i++;
		} else {
			/* up to whichever comes next */
			uint64_t next = last + 1ull;
			if (k < log->ndropped)
				next = COW_MIN(next, (uint64_t)log->dropped[k].first);
			if (i < np)
				next = COW_MIN(next, (uint64_t)present[i]);
			if (!missing)
				first_missing = (uint32_t)s;
			missing += next - s;
			s = next;
		}
	}
	if (missing) {
		cow_err("%s: segments 1..%u expected (less those GC dropped), but %llu of them are missing, "
			"the first is %u", dir, last, (unsigned long long)missing, first_missing);
		r = -EBADMSG;
		goto out;
	}
	*ret_first = first;
	*ret_last = last;
out:
	closedir(d);
	free(present);
	return r;
}

/* Prepares the next segment once the current one is half full. */
static void *preparer(void *arg)
{
	struct cow_log *log = arg;
	pthread_mutex_lock(&log->lock);
	while (!log->prep_stop) {
		if (!log->prep_wanted || log->prep_fd >= 0 || log->prep_err) {
			pthread_cond_wait(&log->prep_cond, &log->lock);
			continue;
		}
		log->prep_busy = true;
		pthread_mutex_unlock(&log->lock);
		int fd = -1;
		int r = new_segment_file(log->dir, PREP_NAME, true, &fd);
		pthread_mutex_lock(&log->lock);
		log->prep_busy = false;
		log->prep_wanted = false;
		if (r < 0)
			log->prep_err = r;
		else
			log->prep_fd = fd;
		pthread_cond_broadcast(&log->prep_cond);
	}
	pthread_mutex_unlock(&log->lock);
	return NULL;
}

int cow_log_open(const char *dir, cow_log_record_fn fn, void *ctx, struct cow_log **ret)
{
	struct cow_log *log = calloc(1, sizeof *log);
	if (!log)
		return -ENOMEM;
	for (uint32_t i = 0; i < COW_LOG_WINDOW; i++)
		log->fds[i] = -1;
	log->window = test_window();
	pthread_mutex_init(&log->lock, NULL);
	pthread_cond_init(&log->synced_cond, NULL);
	pthread_cond_init(&log->prep_cond, NULL);
	/* Replay reads objects (a read lock) from inside a scan (a read lock
	 * too): readers must not queue behind a waiting drop. */
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_READER_NP);
	pthread_rwlock_init(&log->seg_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	log->prep_fd = -1;
	int r = -ENOMEM;
	log->dir = strdup(dir);
	if (!log->dir)
		goto fail;
	uint32_t first = 0, last = 0;
	if ((r = dropped_read(log)) < 0 || (r = list_segments(log, &first, &last)) < 0)
		goto fail;
	log->first_seg = first;
	for (uint32_t s = first; s <= last; s++) {
		if (is_dropped(log, s))
			continue;
		char path[4096];
		seg_path(dir, s, path, sizeof path);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			cow_err("%s: %s", path, strerror(errno));
			goto fail;
		}
		log->fds[slot(log, s)] = fd;
		log->segs[slot(log, s)] = s;
		uint8_t h[COW_LOG_SEG_HDR];
		ssize_t n = cow_io_pread_all(fd, h, sizeof h, 0);
		if (n != sizeof h) {
			cow_err("%s: too short to be a segment", path);
			r = n < 0 ? (int)n : -EBADMSG;
			goto fail;
		}
		r = check_seg_header(h, s, path);
		if (r < 0)
			goto fail;
	}
	for (uint32_t s = first; s <= last; s++) {
		if (is_dropped(log, s))
			continue;
		uint64_t end;
		r = scan_segment(log, s, 0, UINT64_MAX, s == last, true, fn, ctx, &end);
		if (r < 0)
			goto fail;
		log->stats.bytes += end;
		log->stats.segments++;
		log->ends[slot(log, s)] = (uint32_t)end;
		if (s == last)
			log->cur_off = (uint32_t)end;
	}
	/* The scan's pages stay: blocks read at mount are read again soon. */
	log->wb_off = log->drop_off = page_down(log->cur_off);
	log->cur_seg = last;
	log->synced = COW_LOG_POS(log->cur_seg, log->cur_off);
	/* leftovers from a previous run may be half written */
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s/" PREP_NAME, dir);
	unlink(tmp);
	snprintf(tmp, sizeof tmp, "%s/" NEW_NAME, dir);
	unlink(tmp);
	snprintf(tmp, sizeof tmp, "%s/" DROP_TMP, dir);
	unlink(tmp);
	/* The preparer thread starts when first wanted, not here: the daemon
	 * opens the store before it forks into the background, and a thread
	 * does not survive a fork (nor, if it held it, does the lock). */
	*ret = log;
	return 0;
fail:
	cow_log_close(log);
	return r;
}

void cow_log_close(struct cow_log *log)
{
	if (!log)
		return;
	if (log->prep_running) {
		pthread_mutex_lock(&log->lock);
		log->prep_stop = true;
		pthread_cond_broadcast(&log->prep_cond);
		pthread_mutex_unlock(&log->lock);
		pthread_join(log->prep_thread, NULL);
	}
	if (log->prep_fd >= 0) {
		char prep[4096];
		snprintf(prep, sizeof prep, "%s/" PREP_NAME, log->dir);
		close(log->prep_fd);
		unlink(prep);
	}
	if (log->cur_seg)
		cow_log_sync(log);
	for (uint32_t i = 0; i < COW_LOG_WINDOW; i++)
		if (log->fds[i] >= 0)
			close(log->fds[i]);
	free(log->dropped);
	free(log->dir);
	pthread_rwlock_destroy(&log->seg_lock);
	free(log);
}

/* Called with lock held: seal cur_seg and start the next.  *DROP is set to
 * the sealed segment's cache, to drop once the lock is released. */
static int roll_segment(struct cow_log *log, struct cache_op *drop)
{
	uint32_t next = log->cur_seg + 1;
	uint32_t span = log->reserve_open ? log->window : log->window - log->window / 8;
	if (next == 0 || next - log->first_seg >= span) {
		/* Not sticky: GC relocating the oldest segment's data ends it. */
		if (!log->window_warned)
			cow_err("the log cannot start segment %u while segment %u is still in use (a log spans at "
				"most %u segments): writes fail with ENOSPC until GC moves it on (cowfs gc)",
				next, log->first_seg, span);
		log->window_warned = true;
		return -ENOSPC;
	}
	log->window_warned = false;
	int r = cow_io_fdatasync(log->fds[slot(log, log->cur_seg)]);
	if (r < 0) {
		log->failed = -EIO;
		cow_err("fdatasync of segment %u failed: %s; the store is now read-only", log->cur_seg, strerror(-r));
		return -EIO;
	}
	/* Take the prepared segment if there is one; never wait for it. */
	int fd = log->prep_fd;
	const char *name = PREP_NAME;
	log->prep_fd = -1;
	log->prep_err = 0;
	if (fd < 0) {
		name = NEW_NAME;
		if ((r = new_segment_file(log->dir, name, false, &fd)) < 0)
			return r;
	}
	if ((r = segment_install(log->dir, name, fd, log->cur_seg + 1)) < 0)
		return r;
	log->seg_syncs_start = log->stats.syncs;
	/* synced whole above: none of it need stay, prepared zeros past the end included */
	*drop = (struct cache_op){ log->cur_seg, log->drop_off, COW_LOG_SEGMENT_MAX, false };
	log->wb_off = log->drop_off = 0;
	log->ends[slot(log, log->cur_seg)] = log->cur_off;
	/* The slot's last segment was dropped (fds[] is -1); see seg_fd(). */
	__atomic_store_n(&log->segs[slot(log, next)], next, __ATOMIC_RELAXED);
	__atomic_store_n(&log->fds[slot(log, next)], fd, __ATOMIC_RELEASE);
	log->synced = COW_LOG_POS(log->cur_seg + 1, COW_LOG_SEG_HDR);
	log->cur_seg++;
	log->cur_off = COW_LOG_SEG_HDR;
	log->stats.segments++;
	log->stats.bytes += COW_LOG_SEG_HDR;
	return 0;
}

int cow_log_append_many(struct cow_log *log, const struct cow_log_rec *recs, int n, uint64_t *ret_pos,
			int *ret_done)
{
	static const uint8_t zeros[8];
	*ret_done = 0;
	if (n <= 0)
		return 0;
	/* Headers and checksums are computed before taking the lock. */
	uint8_t (*hdr)[COW_LOG_REC_HDR] = malloc((size_t)n * COW_LOG_REC_HDR);
	uint32_t *total = malloc((size_t)n * sizeof *total);
	int r = hdr && total ? 0 : -ENOMEM;
	for (int i = 0; r == 0 && i < n; i++) {
		size_t sum = 0;
		for (int k = 0; k < recs[i].iovcnt; k++)
			sum += recs[i].iov[k].iov_len;
		if (sum > COW_LOG_REC_MAX || recs[i].iovcnt > 8) {
			r = -E2BIG;
			break;
		}
		encode_rec_header(hdr[i], recs[i].type, (uint32_t)sum);
		uint32_t crc = cow_crc32c(0, hdr[i], 12);
		for (int k = 0; k < recs[i].iovcnt; k++)
			crc = cow_crc32c(crc, recs[i].iov[k].iov_base, recs[i].iov[k].iov_len);
		cow_put_le32(hdr[i] + 12, crc);
		total[i] = pad8(COW_LOG_REC_HDR + (uint32_t)sum);
	}
	if (r < 0)
		goto out;

	struct iovec v[COW_IO_MAX_IOV];
	struct cache_op ops[4];
	int nops = 0;
	pthread_mutex_lock(&log->lock);
	r = log->failed;
	int i = 0;
	while (r == 0 && i < n) {
		if ((uint64_t)log->cur_off + total[i] > COW_LOG_SEGMENT_MAX && log->cur_off > COW_LOG_SEG_HDR) {
			struct cache_op drop;
			if ((r = roll_segment(log, &drop)) < 0)
				break;
			if (nops < 2) /* more than two rolls in one call: the LRU takes the rest */
				ops[nops++] = drop;
		}
		/* as many records as fit in this segment and in one pwritev */
		int j = i, nv = 0;
		uint64_t bytes = 0;
		while (j < n && nv + 2 + recs[j].iovcnt <= COW_IO_MAX_IOV &&
		       (j == i || (uint64_t)log->cur_off + bytes + total[j] <= COW_LOG_SEGMENT_MAX)) {
			v[nv++] = (struct iovec){ hdr[j], COW_LOG_REC_HDR };
			uint32_t len = 0;
			for (int k = 0; k < recs[j].iovcnt; k++) {
				v[nv++] = recs[j].iov[k];
				len += recs[j].iov[k].iov_len;
			}
			if (total[j] > COW_LOG_REC_HDR + len)
				v[nv++] = (struct iovec){ (void *)zeros, total[j] - COW_LOG_REC_HDR - len };
			ret_pos[j] = COW_LOG_POS(log->cur_seg, log->cur_off + bytes);
			bytes += total[j];
			j++;
		}
		int fd = log->fds[slot(log, log->cur_seg)];
		ssize_t w = cow_io_pwritev_all(fd, v, nv, log->cur_off);
		if (w < 0) {
			/* Nothing advanced, but part of the batch may have landed
			 * (a disk that filled halfway), whole records among it.  A
			 * shorter append here later would leave those behind the
			 * log's end, after a torn one, which recovery must take for
			 * damage.  So they are cleared; if they cannot be, nothing
			 * more is appended. */
			r = (int)w;
			int z = clear_range(fd, log->cur_off, log->cur_off + bytes);
			if (z < 0) {
				log->failed = -EIO;
				cow_err("an append to segment %u failed (%s) and its remains could not be cleared (%s); "
					"refusing all further writes", log->cur_seg, strerror(-r), strerror(-z));
			}
			break;
		}
		log->cur_off += (uint32_t)bytes;
		log->stats.bytes += bytes;
		log->stats.appends += j - i;
		i = j;
	}
	*ret_done = i;
	if (log->cur_off > COW_LOG_SEGMENT_MAX / 2 && log->prep_fd < 0 && !log->prep_busy && !log->prep_wanted &&
	    (log->stats.syncs - log->seg_syncs_start) >= (uint64_t)PREP_MIN_SYNCS_PER_MIB * (log->cur_off >> 20)) {
		if (!log->prep_running && pthread_create(&log->prep_thread, NULL, preparer, log) == 0)
			log->prep_running = true;
		log->prep_wanted = log->prep_running; /* without it, a roll makes a sparse segment */
		pthread_cond_broadcast(&log->prep_cond);
	}
	if (r == 0)
		nops += cache_behind(log, 0, ops + nops);
	pthread_mutex_unlock(&log->lock);
	cache_apply(log, ops, nops);
out:
	free(hdr);
	free(total);
	return r;
}

int cow_log_append(struct cow_log *log, unsigned type, const struct iovec *iov, int iovcnt, uint64_t *ret_pos)
{
	struct cow_log_rec rec = { type, iov, iovcnt };
	int done;
	return cow_log_append_many(log, &rec, 1, ret_pos, &done);
}

int cow_log_read(struct cow_log *log, uint64_t pos, uint32_t off, void *buf, uint32_t len)
{
	uint32_t seg = COW_LOG_POS_SEG(pos);
	if (seg == 0)
		return -EIO;
	pthread_rwlock_rdlock(&log->seg_lock);
	int fd = seg_fd(log, seg);
	ssize_t n = fd < 0 ? -ESTALE
			   : cow_io_pread_all(fd, buf, len, (off_t)COW_LOG_POS_OFF(pos) + COW_LOG_REC_HDR + off);
	pthread_rwlock_unlock(&log->seg_lock);
	if (n < 0)
		return (int)n;
	return (uint32_t)n == len ? 0 : -EIO;
}

int cow_log_scan(struct cow_log *log, uint64_t from, cow_log_record_fn fn, void *ctx)
{
	/* Stop at the end as of now: appends may be under way (a record is
	 * counted in cur_off only once it is written whole), and the rest of a
	 * preallocated segment need not be read to find the end. */
	pthread_mutex_lock(&log->lock);
	uint32_t last = log->cur_seg, last_end = log->cur_off;
	pthread_mutex_unlock(&log->lock);
	uint32_t first = COW_MAX(COW_LOG_POS_SEG(from), log->first_seg);
	for (uint32_t s = first; s <= last; s++) {
		uint64_t end;
		pthread_rwlock_rdlock(&log->seg_lock);
		/* a segment GC dropped held nothing anybody replays any more */
		int r = seg_fd(log, s) < 0 ? 0
			: scan_segment(log, s, s == COW_LOG_POS_SEG(from) ? COW_LOG_POS_OFF(from) : 0,
				       s == last ? last_end : UINT64_MAX, s == last, false, fn, ctx, &end);
		pthread_rwlock_unlock(&log->seg_lock);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A caller of cow_log_sync_then, waiting for everything below TARGET. */
struct waiter {
	uint64_t target;
	cow_log_synced_fn fn;
	void *arg;
	struct waiter *next;
};

/* Under lock: unlink the waiters the log now serves (all of them once it
 * has failed) and return them, to be called once the lock is released. */
static struct waiter *take_served(struct cow_log *log)
{
	struct waiter *served = NULL, **p = &log->waiters;
	log->waiters_max = 0;
	while (*p) {
		struct waiter *w = *p;
		if (log->failed || w->target <= log->synced) {
			*p = w->next;
			w->next = served;
			served = w;
		} else {
			log->waiters_max = COW_MAX(log->waiters_max, w->target);
			p = &w->next;
		}
	}
	return served;
}

static void call_served(struct waiter *w, int err)
{
	while (w) {
		struct waiter *next = w->next;
		w->fn(w->arg, err);
		free(w);
		w = next;
	}
}

/* The group commit.  One caller at a time leads an fdatasync of everything
 * appended so far; callers that need a sync meanwhile wait for it (WAIT)
 * or, as waiters, are called back by whoever leads.  A leader goes on
 * while its own TARGET or any waiter's is not yet durable, so a waiter is
 * never left without one; it also serves waiters a roll's sync or a
 * failure settled.  Called and returns with lock held. */
static void lead_or_wait(struct cow_log *log, uint64_t target, bool wait)
{
	struct cache_op ops[2];
	int nops = 0;
	for (;;) {
		struct waiter *served = take_served(log);
		if (served) {
			int err = log->failed;
			pthread_mutex_unlock(&log->lock);
			call_served(served, err);
			pthread_mutex_lock(&log->lock);
			continue;
		}
		if (log->failed || (log->synced >= target && log->synced >= log->waiters_max))
			break;
		if (log->syncing) {
			if (!wait)
				break;
			pthread_cond_wait(&log->synced_cond, &log->lock);
			continue;
		}
		log->syncing = true;
		uint64_t pos = COW_LOG_POS(log->cur_seg, log->cur_off);
		int fd = log->fds[slot(log, log->cur_seg)];
		log->stats.syncs++;
		pthread_mutex_unlock(&log->lock);
		cache_apply(log, ops, nops);
		nops = 0;
		int r = cow_io_fdatasync(fd);
		pthread_mutex_lock(&log->lock);
		log->syncing = false;
		if (r < 0) {
			log->failed = -EIO;
			cow_err("fdatasync of the log failed: %s; refusing all further writes", strerror(-r));
		} else if (pos > log->synced) {
			log->synced = pos;
			/* a roll since has dropped that segment's cache whole */
			if (COW_LOG_POS_SEG(pos) == log->cur_seg)
				nops = cache_behind(log, COW_LOG_POS_OFF(pos), ops);
		}
		pthread_cond_broadcast(&log->synced_cond);
	}
	if (nops) {
		pthread_mutex_unlock(&log->lock);
		cache_apply(log, ops, nops);
		pthread_mutex_lock(&log->lock);
	}
}

int cow_log_sync(struct cow_log *log)
{
	pthread_mutex_lock(&log->lock);
	log->stats.sync_waits++;
	lead_or_wait(log, COW_LOG_POS(log->cur_seg, log->cur_off), true);
	int r = log->failed;
	pthread_mutex_unlock(&log->lock);
	return r;
}

void cow_log_sync_then(struct cow_log *log, cow_log_synced_fn fn, void *arg)
{
	struct waiter *w = malloc(sizeof *w);
	if (!w) {
		fn(arg, cow_log_sync(log));
		return;
	}
	pthread_mutex_lock(&log->lock);
	log->stats.sync_waits++;
	*w = (struct waiter){ COW_LOG_POS(log->cur_seg, log->cur_off), fn, arg, NULL };
	if (log->failed || w->target <= log->synced) {
		int r = log->failed;
		pthread_mutex_unlock(&log->lock);
		call_served(w, r);
		return;
	}
	w->next = log->waiters;
	log->waiters = w;
	log->waiters_max = COW_MAX(log->waiters_max, w->target);
	lead_or_wait(log, 0, false);
	pthread_mutex_unlock(&log->lock);
}

uint64_t cow_log_synced(struct cow_log *log)
{
	pthread_mutex_lock(&log->lock);
	uint64_t pos = log->synced;
	pthread_mutex_unlock(&log->lock);
	return pos;
}

uint64_t cow_log_end(struct cow_log *log)
{
	pthread_mutex_lock(&log->lock);
	uint64_t pos = COW_LOG_POS(log->cur_seg, log->cur_off);
	pthread_mutex_unlock(&log->lock);
	return pos;
}

void cow_log_get_stats(struct cow_log *log, struct cow_log_stats *ret)
{
	pthread_mutex_lock(&log->lock);
	*ret = log->stats;
	pthread_mutex_unlock(&log->lock);
}

/* ---- for GC ----------------------------------------------------------- */

int cow_log_roll(struct cow_log *log)
{
	pthread_mutex_lock(&log->lock);
	int r = log->failed;
	struct cache_op drop = { 0 };
	if (r == 0 && log->cur_off > COW_LOG_SEG_HDR)
		r = roll_segment(log, &drop);
	pthread_mutex_unlock(&log->lock);
	if (r == 0)
		cache_apply(log, &drop, 1);
	return r;
}

void cow_log_set_reserve(struct cow_log *log, bool open)
{
	pthread_mutex_lock(&log->lock);
	log->reserve_open = open;
	pthread_mutex_unlock(&log->lock);
}

int cow_log_segments(struct cow_log *log, struct cow_log_segment **ret, size_t *ret_n)
{
	pthread_mutex_lock(&log->lock);
	uint32_t first = log->first_seg, last = log->cur_seg, cur_off = log->cur_off;
	struct cow_log_segment *v = calloc(last - first + 1, sizeof *v);
	size_t n = 0;
	if (v)
		for (uint32_t s = first; s <= last; s++)
			if (!is_dropped(log, s))
				v[n++] = (struct cow_log_segment){ .seg = s,
								   .used = s == last ? cur_off : log->ends[slot(log, s)],
								   .old = last - s >= log->window / 2 };
	pthread_mutex_unlock(&log->lock);
	if (!v)
		return -ENOMEM;
	pthread_rwlock_rdlock(&log->seg_lock);
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		int fd = seg_fd(log, v[i].seg);
		if (fd >= 0 && fstat(fd, &st) == 0)
			v[i].disk = (uint64_t)st.st_blocks * 512;
	}
	pthread_rwlock_unlock(&log->seg_lock);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* The end of segment SEG, which must be below the current one and not
 * dropped (-EINVAL). */
static int closed_end(struct cow_log *log, uint32_t seg, uint64_t *ret)
{
	pthread_mutex_lock(&log->lock);
	bool ok = seg >= log->first_seg && seg < log->cur_seg && !is_dropped(log, seg);
	if (ok)
		*ret = log->ends[slot(log, seg)];
	pthread_mutex_unlock(&log->lock);
	return ok ? 0 : -EINVAL;
}

int cow_log_scan_segment(struct cow_log *log, uint32_t seg, cow_log_record_fn fn, void *ctx)
{
	uint64_t end;
	int q = closed_end(log, seg, &end);
	if (q < 0)
		return q;
	pthread_rwlock_rdlock(&log->seg_lock);
	uint64_t got;
	int r = seg_fd(log, seg) < 0 ? -ESTALE : scan_segment(log, seg, 0, end, false, false, fn, ctx, &got);
	pthread_rwlock_unlock(&log->seg_lock);
	return r;
}

/* Records closer than this are read together, gap and all: one read of a
 * few KiB more costs less than a second request to the disk. */
#define SCAN_GAP (64u << 10)

int cow_log_scan_records(struct cow_log *log, uint32_t seg, const struct cow_log_extent *x, size_t n,
			 cow_log_record_fn fn, void *ctx)
{
	uint64_t end;
	int q = closed_end(log, seg, &end);
	if (q < 0)
		return q;
	pthread_rwlock_rdlock(&log->seg_lock);
	struct reader rd = { .fd = seg_fd(log, seg), .size = end };
	int r = rd.fd < 0 ? -ESTALE : 0;
	for (size_t i = 0; r == 0 && i < n;) {
		/* the records from i on that one read of at most READ_AHEAD covers */
		uint64_t from = x[i].off, to = x[i].off + pad8(COW_LOG_REC_HDR + x[i].len);
		size_t j = i + 1;
		while (j < n && x[j].off >= to && x[j].off <= to + SCAN_GAP &&
		       x[j].off + pad8(COW_LOG_REC_HDR + x[j].len) - from <= READ_AHEAD) {
			to = x[j].off + pad8(COW_LOG_REC_HDR + x[j].len);
			j++;
		}
		rd.ahead = COW_MIN(to, end) > from ? (size_t)(COW_MIN(to, end) - from) : 0;
		for (; r == 0 && i < j; i++) {
			const uint8_t *p;
			uint32_t len;
			unsigned type;
			uint64_t next;
			int err = 0;
			enum rec_state st = x[i].off + COW_LOG_REC_HDR + x[i].len > end ? REC_BAD
					  : rec_check(&rd, x[i].off, &p, &len, &type, &next, &err);
			if (st == REC_OK && len == x[i].len) {
				r = fn(ctx, COW_LOG_POS(seg, x[i].off), type, p, len);
				continue;
			}
			if (st != REC_OK && err < 0) {
				r = err;
				break;
			}
			/* Not the record the caller knows of here: a damaged one. */
			const uint8_t *h = reader_get(&rd, x[i].off, COW_LOG_REC_HDR + x[i].len, &err);
			if (!h || cow_get_le32(h) != REC_MAGIC || h[4] != COW_REC_OBJ ||
			    cow_get_le32(h + 8) != x[i].len) {
				r = h || err == 0 ? -EBADMSG : err;
				break;
			}
			r = fn(ctx, COW_LOG_POS(seg, x[i].off), COW_REC_DAMAGED | COW_REC_OBJ, h + COW_LOG_REC_HDR,
			       x[i].len);
		}
	}
	pthread_rwlock_unlock(&log->seg_lock);
	free(rd.buf);
	return r;
}

int cow_log_drop(struct cow_log *log, const uint32_t *segs, size_t n)
{
	if (n == 0)
		return 0;
	pthread_mutex_lock(&log->lock);
	int r = log->failed;
	for (size_t i = 0; r == 0 && i < n; i++)
		if (segs[i] < log->first_seg || segs[i] >= log->cur_seg || is_dropped(log, segs[i]))
			r = -EINVAL;
	/* Durably in the set before any file goes: a crash after this point
	 * finishes the unlinks at the next open. */
	if (r == 0)
		r = dropped_write(log, segs, n);
	uint64_t bytes = 0;
	if (r == 0) {
		for (size_t i = 0; i < n; i++)
			bytes += log->ends[slot(log, segs[i])];
		log->stats.bytes -= bytes;
		log->stats.segments -= (uint32_t)n;
	}
	pthread_mutex_unlock(&log->lock);
	if (r < 0)
		return r;
	/* Reads in flight on these files finish first; later ones get -ESTALE. */
	pthread_rwlock_wrlock(&log->seg_lock);
	for (size_t i = 0; i < n; i++) {
		close(log->fds[slot(log, segs[i])]);
		log->fds[slot(log, segs[i])] = -1;
	}
	pthread_rwlock_unlock(&log->seg_lock);
	/* Only now may a roll reuse their slots (roll_segment counts from first_seg). */
	pthread_mutex_lock(&log->lock);
	while (log->first_seg < log->cur_seg && is_dropped(log, log->first_seg))
		log->first_seg++;
	pthread_mutex_unlock(&log->lock);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		seg_path(log->dir, segs[i], path, sizeof path);
		if (unlink(path) < 0 && errno != ENOENT && r == 0)
			r = -errno;
	}
	int q = cow_fsync_path(log->dir);
	return r < 0 ? r : q;
}
