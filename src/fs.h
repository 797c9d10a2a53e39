/* fs — a store opened for use: the store, its branches (each loaded from its
 * ref and replayed from the log), and the checkpointer that folds live
 * branch state into roots and advances the refs.
 *
 * Calling sequence:
 *   cow_fs_init(path, uid, gid)       once: a store whose branch "main" is an
 *                                     empty directory owned by uid:gid
 *   cow_fs_open(path, &fs)            lock the store, recover every branch
 *   cow_fs_start_checkpointer(fs, s)  optional: checkpoint every S seconds
 *   ... cow_fs_hold(fs, slot), cow_fs_release(fs, slot) from any thread ...
 *   cow_fs_close(fs)                  stop the checkpointer, checkpoint all,
 *                                     sync, write refs, unlock
 *
 * Branch slots are small integers (the FUSE layer encodes them into node
 * ids); slot 0 is never used.  A state (a branch, or a snapshot) keeps its
 * slot while it is live.  Whoever uses a state's cow_branch holds it
 * (cow_fs_hold), so that a delete, reset or restore meanwhile frees it
 * only at the last release.  A slot is given to a new state only once the
 * old state is freed and the kernel has forgotten every node id in it
 * (cow_fs_slot_refs): a mount that serves CI all day reuses a few slots.
 *
 * Storage accounting, GC and fsck (cow_fs_usage, cow_fs_gc, cow_fs_fsck)
 * take their roots from every ref file under STORE/refs/ (branches,
 * snapshots, trash) and every live branch, checkpointed first; they run
 * while the branches serve, one at a time (a second waits for the first).
 * See gc.h and fsck.h.
 */
#ifndef COW_FS_H
#define COW_FS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "fsck.h"
#include "gc.h"
#include "log.h"
#include "ref.h"

struct cow_fs;
struct cow_branch;
struct cow_store;

#define COW_FS_MAX_BRANCHES 65536 /* node ids carry the slot in 16 bits; states at once */

struct cow_fs_stats {
	uint64_t store_bytes;       /* segment files on disk */
	uint64_t objects, object_bytes, dedup_hits, zero_puts;
	uint64_t log_syncs, log_sync_waits;
	uint64_t index_bytes, branch_bytes; /* memory */
	uint64_t gone_bytes;        /* memory of deleted or replaced states requests still hold */
	unsigned branches;
};

int cow_fs_init(const char *path, uint32_t uid, uint32_t gid);
int cow_fs_open(const char *path, struct cow_fs **ret);
/* 0, or the error of the final checkpoint. */
int cow_fs_close(struct cow_fs *fs);
int cow_fs_note_pid(struct cow_fs *fs);
int cow_fs_start_checkpointer(struct cow_fs *fs, unsigned interval_sec);
int cow_fs_checkpoint(struct cow_fs *fs);
/* One log holds every branch's data and metadata: make everything written
 * before the call durable, or call FN(ARG, err) once it is (see
 * cow_log_sync_then). */
int cow_fs_sync(struct cow_fs *fs);
void cow_fs_sync_then(struct cow_fs *fs, cow_log_synced_fn fn, void *arg);
/* The state (branch or snapshot) in SLOT, held, or NULL (none: a stale
 * slot).  Every hold is released once, when the caller is done with it. */
struct cow_branch *cow_fs_hold(struct cow_fs *fs, unsigned slot);
/* The same by name: the live state of KIND named NAME, its slot in *RET_SLOT. */
struct cow_branch *cow_fs_hold_name(struct cow_fs *fs, enum cow_ref_kind kind, const char *name, unsigned *ret_slot);
void cow_fs_release(struct cow_fs *fs, unsigned slot);
/* The kernel was given DELTA more node ids in SLOT (a lookup reply), or
 * forgot -DELTA of them; the slot is not reused before they balance. */
void cow_fs_slot_refs(struct cow_fs *fs, unsigned slot, int64_t delta);
/* Copy the name of the live state of KIND in SLOT into NAME; false if none. */
bool cow_fs_slot_name(struct cow_fs *fs, unsigned slot, enum cow_ref_kind kind, char name[COW_NAME_LEN + 1]);
/* Slots are below this; most may be free. */
unsigned cow_fs_slot_limit(struct cow_fs *fs);
int cow_fs_branch_find(struct cow_fs *fs, const char *name, unsigned *ret_slot);
int cow_fs_statfs(struct cow_fs *fs, struct statvfs *ret);
void cow_fs_get_stats(struct cow_fs *fs, struct cow_fs_stats *ret);
const char *cow_fs_path(struct cow_fs *fs);

/* Branches.  Create is O(1) in the data size: the parent is checkpointed
 * (frozen at one instant) and the child's ref names that root; the child has
 * no postmaster.pid.  Errors: -EINVAL bad name, -ENOENT no such branch (or
 * parent, or snapshot), -EEXIST name taken, -EPERM protected, -EBUSY
 * Postgres runs on it (its pid in *ret_pid), -ENOSPC out of slots (more
 * than COW_FS_MAX_BRANCHES - 1 states live, or not yet forgotten by the
 * kernel). */
struct cow_ref;
typedef void (*cow_fs_announce_fn)(void *ctx, const struct cow_ref *ref);
/* REF in: name, parent, owner, and any of expires, protected; out: the
 * whole ref.  ANNOUNCE (may be NULL) runs once the child is durable, while
 * the parent is still frozen: a reply sent from it precedes any later
 * commit on the parent. */
int cow_fs_branch_create(struct cow_fs *fs, struct cow_ref *ref, cow_fs_announce_fn announce, void *ctx);
/* As create, from snapshot SNAPSHOT; the child's parent is the branch the
 * snapshot was taken of. */
int cow_fs_branch_create_from_snapshot(struct cow_fs *fs, const char *snapshot, struct cow_ref *ref);
/* Move NAME to the trash (PURGE: drop it at once), where it stays until
 * cow_fs_reap finds its grace period over.  -ENOTEMPTY for the last branch. */
int cow_fs_branch_delete(struct cow_fs *fs, const char *name, bool purge, pid_t *ret_pid);
/* The same, stopping the Postgres that runs on NAME first (and again should
 * it have been started meanwhile, twice at most); a failed stop is returned
 * as is, and also in *RET_STOP_ERR. */
int cow_fs_branch_delete_stopping(struct cow_fs *fs, const char *name, bool purge, pid_t *ret_pid, int *ret_stop_err);
/* Bring back the branch NAME from the trash (-ENOENT: not there). */
int cow_fs_branch_undelete(struct cow_fs *fs, const char *name, struct cow_ref *ret);
/* Repoint NAME at its parent's current state (a crash-consistent image, as
 * at create); -ECHILD: no parent (any more).  Files open on the old state
 * then fail (ESTALE). */
int cow_fs_branch_reset(struct cow_fs *fs, const char *name, pid_t *ret_pid, struct cow_ref *ret);
/* Repoint NAME at snapshot SNAPSHOT (-ESRCH: no such snapshot). */
int cow_fs_branch_restore(struct cow_fs *fs, const char *name, const char *snapshot, pid_t *ret_pid,
			  struct cow_ref *ret);
/* Change NAME's ref: FN edits a copy (returning 0, or -errno to change
 * nothing), which is then written durably.  Not for root or log_pos. */
typedef int (*cow_fs_update_fn)(void *ctx, struct cow_ref *ref);
int cow_fs_branch_update(struct cow_fs *fs, const char *name, cow_fs_update_fn fn, void *ctx, struct cow_ref *ret);
/* Copies of refs: live branches, snapshots, the trash (read from disk). */
int cow_fs_branch_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n);
int cow_fs_snapshot_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n);
int cow_fs_trash_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n);
int cow_fs_branch_get(struct cow_fs *fs, const char *name, struct cow_ref *ret);

/* Snapshots: read-only, taken like a branch create (REF in: name, owner). */
int cow_fs_snapshot_create(struct cow_fs *fs, const char *branch, struct cow_ref *ref,
			   cow_fs_announce_fn announce, void *ctx);
int cow_fs_snapshot_delete(struct cow_fs *fs, const char *name);
int cow_fs_snapshot_get(struct cow_fs *fs, const char *name, struct cow_ref *ret);
int cow_fs_snapshot_find(struct cow_fs *fs, const char *name, unsigned *ret_slot);

/* Expiry.  Deletes (into the trash) every unprotected branch whose expiry
 * is at or before NOW, stopping its Postgres first, and purges from the
 * trash every branch deleted more than GRACE seconds before NOW.  REPORT
 * (may be NULL) is called for each: what is "expired" or "purged". */
typedef void (*cow_fs_reap_fn)(void *ctx, const char *what, const struct cow_ref *ref);
int cow_fs_reap(struct cow_fs *fs, int64_t now, int64_t grace, cow_fs_reap_fn report, void *ctx);
#define COW_FS_GRACE_DEFAULT (24 * 3600)
/* Run cow_fs_reap every INTERVAL seconds in a thread until cow_fs_close,
 * with the grace period set by cow_fs_set_grace (default above). */
int cow_fs_start_reaper(struct cow_fs *fs, unsigned interval_sec, cow_fs_reap_fn report, void *ctx);
void cow_fs_set_grace(struct cow_fs *fs, int64_t grace_sec);
int64_t cow_fs_grace(struct cow_fs *fs);
/* The cleaner: check every few seconds whether the store has grown enough
 * since the last collection (cow_gc_auto_due, with PCT and BUSY_MAX against
 * the CPUs' busy share since the last check) and if so run cow_fs_gc in a
 * thread, rewriting only mostly-dead segments (no_slack).  PCT 0: no
 * thread; collections run only when asked. */
int cow_fs_start_cleaner(struct cow_fs *fs, unsigned pct, unsigned busy_max);

/* Postgres on branches (pg.h).  A new branch gets a port of its own (none
 * of another branch, none bound on the machine); every state a branch is
 * (re)pointed at gets the branch's port and socket directory written into
 * its postgresql.auto.conf (create, reset, restore, undelete).  pg_port:
 * NAME's ref, after giving it a port if it had none (-EADDRINUSE: no port
 * free).  The on-demand members are set with cow_fs_branch_update. */
int cow_fs_branch_pg_port(struct cow_fs *fs, const char *name, struct cow_ref *ret);

/* Storage per ref and for the whole store (cowfs df).  Live branches are
 * checkpointed first.  Bytes of objects (walk.h, gc.h):
 *   logical: the objects below the ref counted file by file, as a copy of it
 *            alone without dedup would store them (holes, zero blocks: 0);
 *   own:     objects no other ref reaches: what deleting it, then GC, frees;
 *   shared:  logical - own (held with other refs, or deduplicated within). */
struct cow_fs_ref_usage {
	enum cow_ref_kind kind;
	char name[COW_NAME_LEN + 1];
	uint64_t logical_bytes, own_bytes, shared_bytes;
};
struct cow_fs_usage {
	struct cow_fs_ref_usage *refs;  /* live branches first, then the ref files by kind and name */
	size_t nrefs;
	uint32_t segments;
	uint64_t disk_bytes;        /* segment files: bytes allocated on disk */
	uint64_t log_bytes;         /* bytes of records in them */
	uint64_t live_bytes;        /* records of objects a ref, or a write since, still needs */
	uint64_t reclaimable_bytes; /* at most what GC could free: disk bytes of segments
				     * below the head that are not live */
	struct cow_fs_reclaimed {   /* early reclaim since the mount (cow_fs_reclaim) */
		uint64_t forgotten_objects, forgotten_bytes;
		uint64_t cleaned_segments, cleaned_moved_bytes;
	} reclaimed;
};
int cow_fs_usage(struct cow_fs *fs, struct cow_fs_usage *ret);
void cow_fs_usage_free(struct cow_fs_usage *u);
/* Early reclaim (docs/RECLAIM.md): forget the blocks each live branch
 * replaced, durably, that it alone stored since its last shared root; then
 * rewrite every segment below the replay limit whose indexed bytes have
 * fallen under COW_FS_CLEAN_PCT % of its size (what is left moves, the
 * forgotten records go with the segment).  The cleaner thread does this at
 * every check; it waits for, and is waited for by, gc, df and fsck. */
#define COW_FS_CLEAN_PCT 20
struct cow_fs_reclaim_stats {
	uint64_t forgotten_objects, forgotten_bytes;
	uint32_t segments_tried;   /* in a pass: mostly forgotten, below the replay limit */
	uint32_t segments_cleaned; /* of those, rewritten and dropped */
	uint32_t segments_kept;    /* of those, kept for a damaged object still reached */
	uint64_t moved_bytes;
	uint64_t disk_before, disk_after;
};
/* A segment kept for a damaged object is not tried again until it is old
 * (log.h: then the object moves as it is).  One caller at a time (the
 * cleaner thread). */
int cow_fs_reclaim(struct cow_fs *fs, struct cow_fs_reclaim_stats *ret);
/* Branches keep candidates for it only while it is on: the cleaner turns it
 * on; tests that call cow_fs_reclaim themselves do. */
void cow_fs_set_reclaim(struct cow_fs *fs, bool on);
/* Collect garbage online (gc.h): every live branch, even a clean one, is
 * checkpointed so that its replay starts past the segments swept. */
int cow_fs_gc(struct cow_fs *fs, const struct cow_gc_opts *opts, struct cow_gc_stats *ret);
/* Check every ref (fsck.h); problems go to OPTS->problem.  0 when the check
 * ran, whatever it found. */
int cow_fs_fsck(struct cow_fs *fs, const struct cow_fsck_opts *opts, struct cow_fsck_stats *ret);
/* "branch", "snapshot" or "trash" */
const char *cow_fs_kind_name(enum cow_ref_kind kind);
#endif
