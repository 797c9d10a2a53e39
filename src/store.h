/* store — the content-addressed object store: every data block and every
 * metadata node is an object named by the SHA-256 of its bytes, kept once.
 *
 * A store is a directory:
 *   cowfs.super      superblock: magic, format version, block size, uuid, CRC
 *   segments/        the log (log.h); object records carry hash + bytes
 *   refs/            branch refs (ref.h)
 *   lock             held (flock) by the one process that has the store open
 *
 * Calling sequence: cow_store_create() once; cow_store_open() takes the lock,
 * checks the superblock, replays the log into the in-memory index
 * (hash -> position); then any thread may put/get; cow_store_close() syncs.
 *
 * cow_store_put() hashes, and appends only if the object is new (dedup).  An
 * all-zero block is never stored: it gets cow_hash_zero.  cow_store_get()
 * verifies the hash of what it read: a mismatch or a damaged record is -EIO
 * with a message naming the object, never wrong bytes.  Metadata records of
 * branches go through cow_store_meta_append() / cow_store_meta_scan().
 * cow_store_sync() is the group commit (log.h).
 *
 * Mark passes (GC, storage accounting, fsck; see gc.h and walk.h) keep their
 * marks in the index entries themselves, so that walking every root needs no
 * second table: cow_store_mark_begin() clears them, cow_store_mark() records
 * that a root reached an object (the first root that did is its owner; a
 * second makes it shared), and until cow_store_mark_end() every put marks
 * what it stores or deduplicates onto (COW_MARK_PUT), so that GC keeps what
 * a writer named after the roots were taken.  One pass at a time (-EBUSY).
 * GC then moves the live objects of a segment to the head of the log
 * (cow_store_relocate, which forgets the dead ones under the index lock) and
 * drops the segment (cow_store_drop_segments: sync, then log.h's drop).  A
 * read that races with a drop looks the object up again.
 *
 * Errors: -EEXIST (create where a store's superblock exists), -ENOENT, -EBUSY (the
 * store is open elsewhere), -EPROTONOSUPPORT (newer format), -EBADMSG
 * (damaged), -EIO, -ENOSPC.
 */
#ifndef COW_STORE_H
#define COW_STORE_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "hash.h"
#include "log.h"

#define COW_BLOCK_SIZE 8192
#define COW_STORE_VERSION 1

struct cow_store;
struct cow_log;

struct cow_store_stats {
	uint64_t objects;        /* distinct objects indexed */
	uint64_t object_bytes;   /* their payload bytes */
	uint64_t puts, dedup_hits, zero_puts;
	uint64_t gets, get_errors;
	uint64_t log_bytes, log_syncs, log_sync_waits;
	uint64_t index_bytes;    /* memory held by the index */
};

int cow_store_create(const char *path);
int cow_store_open(const char *path, struct cow_store **ret);
void cow_store_close(struct cow_store *s);
const char *cow_store_path(const struct cow_store *s);
/* Record the calling process as the store's holder (after a fork). */
int cow_store_note_pid(struct cow_store *s);

int cow_store_put(struct cow_store *s, const void *data, size_t len, cow_hash *ret);
/* Put N blocks of COW_BLOCK_SIZE bytes at once: the new ones go to the log
 * in one write.  RET[i] names block i (zero hash for an all-zero block). */
int cow_store_put_blocks(struct cow_store *s, const uint8_t *const *blocks, size_t n, cow_hash *ret);
/* The same, naming OWNER (non-zero) at generation GEN as the one that
 * stored each block appended here, so that cow_store_forget may drop it
 * later; a block already stored, or named twice in the batch, is not
 * OWNER's alone. */
int cow_store_put_blocks_owned(struct cow_store *s, const uint8_t *const *blocks, size_t n, uint32_t owner,
			       uint32_t gen, cow_hash *ret);
/* Put an object whose hash the caller already computed. */
int cow_store_put_hashed(struct cow_store *s, const void *data, size_t len, const cow_hash *h);
/* Read the object H, which must be exactly LEN bytes; the zero hash reads as zeros. */
int cow_store_get(struct cow_store *s, const cow_hash *h, void *buf, size_t len);
/* Read an object of any size into a malloc'd buffer. */
int cow_store_get_alloc(struct cow_store *s, const cow_hash *h, void **ret_buf, size_t *ret_len);
int cow_store_has(struct cow_store *s, const cow_hash *h);

int cow_store_meta_append(struct cow_store *s, const struct iovec *iov, int iovcnt, uint64_t *ret_pos);
typedef int (*cow_store_meta_fn)(void *ctx, uint64_t pos, const uint8_t *payload, uint32_t len);
int cow_store_meta_scan(struct cow_store *s, uint64_t from, cow_store_meta_fn fn, void *ctx);
/* Everything put or appended so far is durable once this returns 0. */
int cow_store_sync(struct cow_store *s);
/* Call FN(ARG, err) once that is so, without waiting for another thread's
 * sync (see cow_log_sync_then). */
void cow_store_sync_then(struct cow_store *s, cow_log_synced_fn fn, void *arg);
uint64_t cow_store_log_end(struct cow_store *s);
/* Every record below this position is durable. */
uint64_t cow_store_durable_end(struct cow_store *s);
void cow_store_get_stats(struct cow_store *s, struct cow_store_stats *ret);
/* fsck: read and verify H with no message: 0, -ENOENT (not stored), -EBADMSG
 * (its record fails its checksum), -EIO (wrong bytes, or unreadable).
 * *RET_POS: where it is stored (0: nowhere).  With RET_BUF, its bytes
 * (malloc'd). */
int cow_store_check(struct cow_store *s, const cow_hash *h, uint64_t *ret_pos, void **ret_buf, size_t *ret_len);

/* ---- forgetting what only its owner named ---- */
/* An object stored by cow_store_put_blocks_owned keeps its owner and
 * generation until any later put names it too (deduplication: then it is
 * nobody's alone).  When the owner has overwritten the only place that
 * named it, durably, and no root anything else may read holds it (the
 * caller's rules, see docs/RECLAIM.md), cow_store_forget drops it from
 * the index: the record stays in its segment as garbage, a later put of
 * the same bytes stores them anew, and a reopen brings the entry back
 * (owned by nobody), for GC to find unreached.
 *
 * Readers that took a hash from a file's map before an overwrite must
 * still find the object: they read between cow_store_read_enter() and
 * cow_store_read_leave(), entered before they look the hash up, and
 * cow_store_forget waits for every reader that entered before it was
 * called.  Entering costs two atomic operations; nobody ever waits to
 * enter. */
/* The objects the index holds in segment SEG, and their bytes: what a
 * cleaner would have to move to drop it. */
void cow_store_segment_usage(struct cow_store *s, uint32_t seg, uint32_t *ret_objects, uint64_t *ret_bytes);
/* Owners and generations for cow_store_put_blocks_owned, from counters
 * of the open store, never 0, never reused while it is open (an index
 * entry's owner does not outlive a reopen). */
uint32_t cow_store_new_owner(struct cow_store *s);
/* Whether anything forgets (off at open): writers keep no candidates
 * while it is off. */
void cow_store_set_reclaim(struct cow_store *s, bool on);
bool cow_store_reclaim_on(struct cow_store *s);
uint32_t cow_store_new_gen(struct cow_store *s);
unsigned cow_store_read_enter(struct cow_store *s);
void cow_store_read_leave(struct cow_store *s, unsigned token);
struct cow_store_forgot {
	uint64_t objects, bytes;
};
/* Forget each of H[0..N) whose owner is OWNER (non-zero) and whose
 * generation is above AFTER_GEN; others are left alone.  -EBUSY (nothing
 * forgotten) while a mark pass runs: a GC's plan lists objects by
 * position.  -EINVAL for owner 0. */
int cow_store_forget(struct cow_store *s, const cow_hash *h, size_t n, uint32_t owner, uint32_t after_gen,
		     struct cow_store_forgot *ret);

/* ---- mark passes and GC ---- */
#define COW_MARK_DAMAGED 0x01u /* the only copy fails its checksum */
#define COW_MARK_PUT     0x02u /* stored or deduplicated onto during the pass */
#define COW_MARK_SEEN    0x04u /* reached from a root */
#define COW_MARK_SHARED  0x08u /* reached from two roots or more */
#define COW_MARK_BAD     0x10u /* fsck: something is wrong at or below it */
#define COW_MARK_MISSING 0x80u /* (cow_store_mark only) not in the store */
#define COW_MARK_ROOT_MAX 0xffffffu

/* An object's state before cow_store_mark changed it. */
struct cow_mark {
	uint32_t flags;   /* COW_MARK_* */
	uint32_t owner;   /* the first root that reached it (with COW_MARK_SEEN) */
	uint32_t len;     /* object bytes */
	uint64_t pos;     /* where it is stored */
};
int cow_store_mark_begin(struct cow_store *s);
void cow_store_mark_end(struct cow_store *s);
/* Blocks put before the writer takes the lock under which it names them
 * (branch.c's writes hash and store outside the branch lock): a pass that
 * began in between took its roots without them, and their put marked
 * nothing.  Read a token before such a put; if it differs once the lock is
 * held, cow_store_hold() the blocks: each still indexed is marked as a put
 * now would mark it; each a sweep took since (or damaged) is flagged in
 * MISSING[i], to be put again.  Returns how many are missing. */
uint64_t cow_store_pass_token(struct cow_store *s);
size_t cow_store_hold(struct cow_store *s, const cow_hash *h, size_t n, bool *missing);
/* Root ROOT (1..COW_MARK_ROOT_MAX) reaches the N objects H[]; with SHARED
 * they are known to be reached by another root too.  An unmarked object gets
 * ROOT as owner; a marked one becomes shared if another root or SHARED
 * reaches it.  RET[i] is the state before; zero hashes are skipped (flags
 * 0).  -EINVAL outside a pass. */
int cow_store_mark(struct cow_store *s, const cow_hash *h, size_t n, uint32_t root, bool shared,
		   struct cow_mark *ret);
int cow_store_mark_bad(struct cow_store *s, const cow_hash *h);
/* Call FN for every indexed object, under the index lock a chunk at a
 * time (FN must not call into the store).  RESTART is called first, and
 * again if the index grew meanwhile: then the tally starts over.  Objects
 * put during the tally may be missed. */
typedef void (*cow_store_tally_fn)(void *ctx, uint64_t pos, uint32_t len, uint32_t flags, uint32_t owner);
int cow_store_tally(struct cow_store *s, cow_store_tally_fn fn, void (*restart)(void *ctx), void *ctx);

int cow_store_roll(struct cow_store *s);
int cow_store_segments(struct cow_store *s, struct cow_log_segment **ret, size_t *ret_n);
struct cow_store_sweep {
	uint64_t moved_objects, moved_bytes;     /* live, copied to the head */
	uint64_t dropped_objects, dropped_bytes; /* dead, forgotten */
	uint64_t damaged_moved;                  /* damaged but reached, moved as they are */
};
/* A list of the objects the index holds in segments SEGS[0..N), made once
 * per sweep (one pass over the index; 48 bytes per object), so that each
 * relocation reads only the live ones.  During a mark pass only. */
struct cow_store_plan;
int cow_store_plan(struct cow_store *s, const uint32_t *segs, size_t n, struct cow_store_plan **ret);
void cow_store_plan_free(struct cow_store_plan *p);
/* Copy every live object of segment SEG (marked in this pass) to the head of
 * the log and forget the dead ones; adds to *ACC.  With PLAN (which must
 * name SEG) it reads only the records of live objects, else the whole
 * segment.  A damaged object that is still reached is left where it is,
 * the evidence in place, or with COW_RELOC_MOVE_DAMAGED (the log must roll
 * on past SEG) copied as it is: its new record is sound, its bytes still
 * fail the hash check of every read.  With COW_RELOC_ALL_INDEXED every
 * object the index holds in SEG counts as live, marked or not: for a
 * cleaner that moves what cow_store_forget left of a segment (still
 * within a mark pass, which keeps GC and forgetting out).  1: SEG may be
 * dropped once the log is synced; 0: it must stay (it holds a damaged
 * object that is still reached); -errno. */
#define COW_RELOC_MOVE_DAMAGED 0x1u
#define COW_RELOC_ALL_INDEXED  0x2u
int cow_store_relocate(struct cow_store *s, uint32_t seg, const struct cow_store_plan *plan, unsigned flags,
		       struct cow_store_sweep *acc);
/* Sync the log, then drop the segments (log.h); refused if the index still
 * points into one of them. */
int cow_store_drop_segments(struct cow_store *s, const uint32_t *segs, size_t n);
#endif
