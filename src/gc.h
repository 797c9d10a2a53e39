/* gc — garbage collection and storage accounting of a store's log.
 *
 * Mark: one mark pass of the store (store.h) walks every root (walk.h).  An
 * object no root reaches, and that no put named during the pass, is
 * garbage.  The marks give, per root, its logical bytes, the bytes it alone
 * reaches (own) and the rest (shared: held in common with other roots, or
 * stored once for several of its own files); and per segment its live
 * bytes.
 *
 * Sweep: every segment below the sweep limit whose live records take less
 * than the threshold share of its size on disk, or that is filled less than
 * a quarter (an earlier run's head: so that they coalesce), is rewritten;
 * then (unless no_slack) more of the others, sparsest first, until the
 * garbage left in them is at most COW_GC_SLACK_PCT % of the live data (so
 * that a deleted branch's data are reclaimed also where they share segments
 * with live data).  To rewrite a segment: its live objects are copied to
 * the head of the log, the log is synced, and the segment is added to the
 * dropped set and unlinked (cow_store_relocate, cow_store_drop_segments).
 * A segment holding a damaged object that is still reached stays, the
 * evidence in place, until it is old (log.h): then the object is moved as
 * it is (reads of it still fail), so that one bad block cannot stop the
 * log from rolling on.
 * One pass over the index first lists the objects of every segment to be
 * rewritten (cow_store_plan), so that only the live records are read, not
 * whole segments of garbage (a deleted branch's, or old WAL pages).  Metadata records are not copied: the limit is
 * the lowest replay position (log_pos) of any live branch, which the caller
 * moves to the log's end by checkpointing every branch after cow_gc_begin.
 * A crash at any point loses nothing: until its drop a segment is intact,
 * and the copies are durable before it.  Writers go on meanwhile: the pass
 * marks what they put, and reads racing with a drop look the object up
 * again.
 *
 * Calling sequence (fs.c drives it; one pass at a time in a store):
 *   cow_gc_begin(store, opts, &g)   roll the log (unless mark_only), so that
 *                                   all data so far is sweepable; begin the
 *                                   pass: from now on puts are marked
 *   ... the caller checkpoints every live branch and collects every root ...
 *   cow_gc_mark(g, roots, n)        walk them; fills in each root's bytes
 *   cow_gc_sweep(g, limit)          unless mark_only
 *   cow_gc_end(g, &stats)           end the pass, free
 * Errors: -EBUSY (a pass is under way), -EIO (a root's tree cannot be
 * followed: nothing is swept, run fsck), -ECANCELED (the progress function
 * asked to stop; what was swept stays swept), -ENOSPC, -ENOMEM.
 */
#ifndef COW_GC_H
#define COW_GC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

struct cow_store;
struct cow_gc;

#define COW_GC_THRESHOLD_DEFAULT 50
#define COW_GC_SLACK_PCT 5

struct cow_gc_progress {
	const char *phase;       /* "mark" or "sweep" */
	uint64_t done, total;    /* mark: objects reached (total 0); sweep: segments */
	uint64_t bytes;          /* sweep: bytes moved so far */
};
/* A non-zero return stops the run (-ECANCELED). */
typedef int (*cow_gc_progress_fn)(void *ctx, const struct cow_gc_progress *p);

struct cow_gc_opts {
	unsigned threshold;      /* percent (1..100): rewrite a segment whose live
				  * records are below this share of its size on
				  * disk; 0: COW_GC_THRESHOLD_DEFAULT */
	bool mark_only;          /* accounting: mark and count, sweep nothing */
	bool no_slack;           /* rewrite only the segments below the threshold
				  * (the daemon's own runs: least copying per byte
				  * freed), not also the sparsest others until the
				  * garbage left is COW_GC_SLACK_PCT % of the live */
	cow_gc_progress_fn progress;
	void *ctx;
};

struct cow_gc_root {
	cow_hash root;           /* in: a branch root object (zero: empty) */
	uint64_t logical_bytes;  /* out (walk.h) */
	uint64_t own_bytes;      /* out: objects no other root reaches */
	uint64_t shared_bytes;   /* out: logical_bytes - own_bytes */
};

struct cow_gc_stats {
	double seconds;
	uint32_t segments_before, segments_after;
	uint32_t segments_rewritten;     /* dropped after their live objects were moved */
	uint32_t segments_kept_damaged;  /* left alone: a damaged object is still reached */
	uint64_t damaged_moved;          /* such objects moved as they are, out of old segments */
	uint64_t disk_before, disk_after; /* segment files, bytes allocated on disk */
	uint64_t log_bytes;              /* bytes of records in them (at the mark) */
	uint64_t live_bytes;             /* of which records of live objects */
	uint64_t reclaimable_bytes;      /* disk bytes of segments below the head not live */
	uint64_t moved_objects, moved_bytes;
	uint64_t dropped_objects, dropped_bytes;
	uint64_t objects_reached;
	uint64_t missing, damaged;       /* data blocks reached but missing or damaged */
};

/* When the daemon collects by itself (fs.c's cleaner): once the segment
 * files have grown, since the last run ended (or since the mount), by PCT %
 * of the live data that run found, and by at least MIN_GROWTH bytes; so a
 * store that only grows (a load) is marked a logarithmic number of times.
 * Such a run waits while the machine's CPUs are more than BUSY_MAX % busy
 * (a collection takes CPU and disk from whatever runs: it is done in a
 * quieter moment), but not beyond twice that growth.  And it runs at once,
 * however busy, while the filesystem under the store has less than
 * COW_GC_AUTO_LOW_FREE bytes free, as soon as they have grown by a segment:
 * before the disk is full, while GC still has room to copy.  The same while
 * the oldest segment is old (log.h): before the log's window is full and
 * writes fail with ENOSPC. */
#define COW_GC_AUTO_PCT_DEFAULT 100
#define COW_GC_AUTO_BUSY_DEFAULT 50
#define COW_GC_AUTO_MIN_GROWTH (1ull << 30)
#define COW_GC_AUTO_LOW_FREE (2ull << 30)
struct cow_gc_auto {
	unsigned pct;            /* 0: never */
	unsigned busy_max;       /* percent of CPU time; 100: never wait */
	uint64_t min_growth;
	uint64_t base_disk;      /* segment files after the last run, or at the mount */
	uint64_t base_live;      /* live data the last run found (0: none yet) */
};
enum cow_gc_auto_verdict {
	COW_GC_AUTO_NO,          /* not due */
	COW_GC_AUTO_WAIT,        /* due, but the machine is busy: later */
	COW_GC_AUTO_RUN,
};
void cow_gc_auto_init(struct cow_gc_auto *a, unsigned pct, unsigned busy_max, uint64_t min_growth,
		      uint64_t disk_now);
/* DISK_NOW: the segment files' bytes; FREE_NOW: bytes free for them; OLD:
 * the oldest segment is old; BUSY: percent of the CPUs' time busy lately. */
enum cow_gc_auto_verdict cow_gc_auto_due(const struct cow_gc_auto *a, uint64_t disk_now, uint64_t free_now,
					 bool old, unsigned busy);
/* A run ended with ST (any run: a manual one counts too). */
void cow_gc_auto_ran(struct cow_gc_auto *a, const struct cow_gc_stats *st);
/* The baseline (base_disk, base_live) outlives the mount in STORE/gc.base
 * (docs/FORMAT.md section 2), so that growth counts from the last run and
 * not from the last mount.  Load: 0, -ENOENT (none kept yet), -EBADMSG
 * (not a baseline this version reads), or another -errno; A is changed
 * only on 0.  Save: written durably (temporary file, rename). */
int cow_gc_auto_load(struct cow_gc_auto *a, const char *store);
int cow_gc_auto_save(const struct cow_gc_auto *a, const char *store);
/* The bytes the segment files take on disk now, and whether the oldest
 * segment is old (RET_OLD may be NULL). */
int cow_gc_disk(struct cow_store *s, uint64_t *ret, bool *ret_old);

int cow_gc_begin(struct cow_store *s, const struct cow_gc_opts *opts, struct cow_gc **ret);
int cow_gc_mark(struct cow_gc *g, struct cow_gc_root *roots, size_t n);
/* Sweep segments below the segment of position LIMIT. */
int cow_gc_sweep(struct cow_gc *g, uint64_t limit);
/* Rewrite segments SEGS[0..N) (ascending, below the replay limit, in a mark
 * pass): move what each holds that is live (with RELOC_FLAGS'
 * COW_RELOC_ALL_INDEXED: all it has indexed), then drop it.  Damaged
 * objects still reached move as they are in segments below OLD_END (old,
 * log.h), else keep their segment (with a warning if WARN_KEPT).
 * PROGRESS may stop it (-ECANCELED).  Adds to ST's segments_rewritten,
 * segments_kept_damaged, moved, dropped and damaged_moved.  The sweep of
 * a GC, and early reclaim's cleaner (fs.h). */
struct cow_gc_rewrite {
	uint32_t old_end;
	unsigned reloc_flags;
	bool warn_kept;
	void (*kept)(void *ctx, uint32_t seg); /* (may be NULL) told each segment kept */
	cow_gc_progress_fn progress;
	void *ctx;
};
int cow_gc_rewrite(struct cow_store *s, const uint32_t *segs, size_t n, const struct cow_gc_rewrite *o,
		   struct cow_gc_stats *st);
/* End the pass; RET (may be NULL) gets the figures. */
void cow_gc_end(struct cow_gc *g, struct cow_gc_stats *ret);
#endif
