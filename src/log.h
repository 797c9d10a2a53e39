/* log — the append-only record log that holds everything cowfs stores.
 *
 * The log is a directory of segment files named %016llx.seg (segment numbers
 * from 1, consecutive).  Each starts with a 32-byte header and then holds
 * records, each a 16-byte header, a payload, and zero padding to 8 bytes.
 * The byte layout is in docs/FORMAT.md.  A position (uint64) is
 * segno << 32 | offset of the record header; positions only grow.
 *
 * Segments are zero-filled and synced to their full size before the first
 * record goes in (a background thread prepares the next one), so that an
 * append changes neither the file's size nor its allocation, and fdatasync
 * flushes data only, as Postgres does with its own WAL segments.  The log
 * ends where the rest of the last segment is all zeros.
 *
 * Segments only GC removes (cow_log_drop) are named in DIR/dropped, a small
 * checksummed file rewritten durably before any of them is unlinked, so that
 * open tells a segment GC dropped from one lost by accident (still -EBADMSG).
 *
 * Segment numbers are 32-bit and never reused: a log rolls 2^32 segments
 * (256 PiB) in its life.  The segments present span fewer than
 * COW_LOG_WINDOW numbers, so per-segment state fits in arrays of that many
 * slots, indexed by COW_LOG_SLOT(seg).  A roll fails with -ENOSPC (not
 * sticky) where it would make the log span more than 7/8 of the window,
 * the last eighth being kept for GC (cow_log_set_reserve), which needs to
 * append to move the oldest segment on; and nothing may span the whole
 * window.  GC keeps it from coming to that by relocating every segment in
 * the older half of the window (cow_log_segment.old).
 *
 * Calling sequence:
 *   cow_log_create(dir)                   once, makes segment 1
 *   cow_log_open(dir, fn, ctx, &log)      checks every record's CRC, calls fn
 *                                         for each valid one in order, cuts a
 *                                         torn tail off the last segment
 *   cow_log_append(...)  any thread       returns the record's position
 *   cow_log_sync(log)    any thread       group commit: one fdatasync covers
 *                                         every append made before it started
 *   cow_log_read / cow_log_scan           read back payloads by position
 *   cow_log_roll / cow_log_segments / cow_log_scan_segment / cow_log_drop
 *                                         for GC: close the head, list, read
 *                                         and remove whole segments
 *   cow_log_close(log)                    syncs and frees
 *
 * Errors: -EBADMSG for damage that is not a torn tail (with a message naming
 * segment and offset), -EPROTONOSUPPORT for a newer format version, -EIO
 * after any failed sync: failures of fdatasync are sticky, every later append
 * and sync fails too, so that an acknowledged write is never silently lost.
 * -ESTALE from cow_log_read: the segment was dropped (look the object up again).
 */
#ifndef COW_LOG_H
#define COW_LOG_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define COW_LOG_VERSION 1
#define COW_LOG_SEGMENT_MAX (64u << 20)
#define COW_LOG_WINDOW 65536u
#define COW_LOG_SLOT(seg) ((uint32_t)(seg) & (COW_LOG_WINDOW - 1))
#define COW_LOG_REC_HDR 16
#define COW_LOG_SEG_HDR 32
/* A record always fits in a fresh segment, so none is written past the preallocated end. */
#define COW_LOG_REC_MAX (COW_LOG_SEGMENT_MAX - COW_LOG_SEG_HDR - COW_LOG_REC_HDR - 8)

enum { COW_REC_OBJ = 1, COW_REC_META = 2 };
/* Or'ed into the type given to a scan callback for an object record whose
 * frame is intact but whose checksum fails, with more valid records after it. */
#define COW_REC_DAMAGED 0x80u

#define COW_LOG_POS(seg, off) ((uint64_t)(seg) << 32 | (uint32_t)(off))
#define COW_LOG_POS_SEG(pos) ((uint32_t)((pos) >> 32))
#define COW_LOG_POS_OFF(pos) ((uint32_t)(pos))

struct cow_log;
/* Called for each valid record; a negative return stops the scan and is returned. */
typedef int (*cow_log_record_fn)(void *ctx, uint64_t pos, unsigned type, const uint8_t *payload, uint32_t len);

struct cow_log_stats {
	uint64_t bytes;      /* sum of segment sizes */
	uint64_t appends;
	uint64_t syncs;      /* fdatasync calls issued */
	uint64_t sync_waits; /* cow_log_sync calls (>= syncs thanks to group commit) */
	uint32_t segments;
};

int cow_log_create(const char *dir);
int cow_log_open(const char *dir, cow_log_record_fn fn, void *ctx, struct cow_log **ret);
void cow_log_close(struct cow_log *log);
int cow_log_append(struct cow_log *log, unsigned type, const struct iovec *iov, int iovcnt, uint64_t *ret_pos);
/* Append N records back to back, in as few writes as the segment and IOV_MAX
 * allow (one per 8 KiB block costs ext4 a journal handle each).  Record i
 * lands at ret_pos[i].  On error the first *ret_done records were appended
 * (and may be used), the rest were not. */
struct cow_log_rec {
	unsigned type;
	const struct iovec *iov;
	int iovcnt;                 /* at most 8 */
};
int cow_log_append_many(struct cow_log *log, const struct cow_log_rec *recs, int n, uint64_t *ret_pos,
			int *ret_done);
/* Read LEN payload bytes starting OFF bytes into the payload of the record at POS. */
int cow_log_read(struct cow_log *log, uint64_t pos, uint32_t off, void *buf, uint32_t len);
/* Call FN for every record at or after FROM, in order. */
int cow_log_scan(struct cow_log *log, uint64_t from, cow_log_record_fn fn, void *ctx);
/* Make everything appended so far durable (group commit: one fdatasync
 * serves every caller waiting meanwhile).  0, or the sticky error of a
 * failed sync. */
int cow_log_sync(struct cow_log *log);
/* Call FN(ARG, 0 or the sticky error) once everything appended so far is
 * durable: in this thread if it is already, or if no sync is running (this
 * thread then leads one), else from the thread whose sync covers it.  The
 * caller never waits for another thread's sync. */
typedef void (*cow_log_synced_fn)(void *arg, int err);
void cow_log_sync_then(struct cow_log *log, cow_log_synced_fn fn, void *arg);
uint64_t cow_log_end(struct cow_log *log);
/* Every record below this position is durable. */
uint64_t cow_log_synced(struct cow_log *log);
void cow_log_get_stats(struct cow_log *log, struct cow_log_stats *ret);

/* ---- for GC ---- */
/* Start a new segment now if the current one holds any record, so that
 * everything appended so far is in segments no longer appended to. */
int cow_log_roll(struct cow_log *log);
struct cow_log_segment {
	uint32_t seg;
	uint32_t used;      /* end of its last record (the current segment: so far) */
	uint64_t disk;      /* bytes allocated on disk (st_blocks * 512) */
	bool old;           /* half a window or more behind the head: GC must relocate it */
};
/* The segments present, in order; the last is the one appended to.  Free *ret. */
int cow_log_segments(struct cow_log *log, struct cow_log_segment **ret, size_t *ret_n);
/* Call FN for every record of segment SEG, which must be below the current
 * one.  A damaged object record whose frame is intact comes with
 * COW_REC_DAMAGED, as at open. */
int cow_log_scan_segment(struct cow_log *log, uint32_t seg, cow_log_record_fn fn, void *ctx);
/* The same for only the records at X[0..N) (offsets ascending, each with
 * its payload length): reads those (and gaps under 64 KiB between them),
 * not the whole segment.  A record there whose frame is intact but whose
 * checksum fails comes with COW_REC_DAMAGED; one whose frame does not match
 * X: -EBADMSG. */
struct cow_log_extent {
	uint32_t off, len;
};
int cow_log_scan_records(struct cow_log *log, uint32_t seg, const struct cow_log_extent *x, size_t n,
			 cow_log_record_fn fn, void *ctx);
/* While OPEN (a GC pass), appends may roll into the window's reserve. */
void cow_log_set_reserve(struct cow_log *log, bool open);
/* Remove segments below the current one for good: they are added to the
 * dropped set durably first, then closed (after reads in flight) and
 * unlinked.  The caller made sure nothing in them is needed any more. */
int cow_log_drop(struct cow_log *log, const uint32_t *segs, size_t n);
#endif
