/* fs — a store opened for use: the store, its branches (each loaded from its
 * ref and replayed from the log), and the checkpointer that folds live
 * branch state into roots and advances the refs.
 *
 * Calling sequence:
 *   cow_fs_init(path, uid, gid)       once: a store whose branch "main" is an
 *                                     empty directory owned by uid:gid
 *   cow_fs_open(path, &fs)            lock the store, recover every branch
 *   cow_fs_start_checkpointer(fs, s)  optional: checkpoint every S seconds
 *   ... cow_fs_branch(fs, slot) from any thread ...
 *   cow_fs_close(fs)                  stop the checkpointer, checkpoint all,
 *                                     sync, write refs, unlock
 *
 * Branch slots are small integers stable for the life of the cow_fs (the
 * FUSE layer encodes them into node ids); slot 0 is never used.
 */
#ifndef COW_FS_H
#define COW_FS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct cow_fs;
struct cow_branch;
struct cow_store;

#define COW_FS_MAX_BRANCHES 4096

struct cow_fs_stats {
	uint64_t store_bytes;       /* segment files on disk */
	uint64_t objects, object_bytes, dedup_hits, zero_puts;
	uint64_t log_syncs, log_sync_waits;
	uint64_t index_bytes, branch_bytes; /* memory */
	unsigned branches;
};

int cow_fs_init(const char *path, uint32_t uid, uint32_t gid);
int cow_fs_open(const char *path, struct cow_fs **ret);
/* 0, or the error of the final checkpoint. */
int cow_fs_close(struct cow_fs *fs);
int cow_fs_note_pid(struct cow_fs *fs);
int cow_fs_start_checkpointer(struct cow_fs *fs, unsigned interval_sec);
int cow_fs_checkpoint(struct cow_fs *fs);
int cow_fs_sync(struct cow_fs *fs);
/* The branch in SLOT, or NULL. */
struct cow_branch *cow_fs_branch(struct cow_fs *fs, unsigned slot);
const char *cow_fs_branch_name(struct cow_fs *fs, unsigned slot);
unsigned cow_fs_slot_limit(struct cow_fs *fs);
int cow_fs_branch_find(struct cow_fs *fs, const char *name, unsigned *ret_slot);
int cow_fs_statfs(struct cow_fs *fs, struct statvfs *ret);
void cow_fs_get_stats(struct cow_fs *fs, struct cow_fs_stats *ret);
const char *cow_fs_path(struct cow_fs *fs);

/* Branches.  Create is O(1) in the data size: the parent is checkpointed
 * (frozen at one instant) and the child's ref names that root; the child has
 * no postmaster.pid.  -EINVAL bad name, -ENOENT no parent, -EEXIST taken.
 * Delete removes the ref (the blocks stay until GC); -ENOTEMPTY for the
 * store's last branch.  List and get copy refs of live branches. */
struct cow_ref;
typedef void (*cow_fs_announce_fn)(void *ctx, const struct cow_ref *ref);
/* ANNOUNCE (may be NULL) runs once the child is durable, while the parent is
 * still frozen: a reply sent from it precedes any later commit on the parent. */
int cow_fs_branch_create(struct cow_fs *fs, const char *name, const char *parent, uint32_t owner,
			 struct cow_ref *ret, cow_fs_announce_fn announce, void *ctx);
int cow_fs_branch_delete(struct cow_fs *fs, const char *name);
/* Repoint NAME at its parent's current state (a crash-consistent image, as
 * at create).  -ECHILD: no parent (any more); -EBUSY: Postgres runs on it
 * (its pid in *ret_pid).  Files open on the old state then fail (ESTALE). */
int cow_fs_branch_reset(struct cow_fs *fs, const char *name, pid_t *ret_pid, struct cow_ref *ret);
int cow_fs_branch_list(struct cow_fs *fs, struct cow_ref **ret, size_t *ret_n);
/* A copy of NAME's ref, or -ENOENT. */
int cow_fs_branch_get(struct cow_fs *fs, const char *name, struct cow_ref *ret);

/* Postgres on branches (pg.h).  Create gives the child a port of its own
 * (none of another branch, none bound on the machine); create and reset
 * write the branch's port and socket directory into its
 * postgresql.auto.conf.  Restore must do the same (pg_settle_child).
 * pg_port: NAME's ref, after giving it a port if it had none
 * (-EADDRINUSE: no port free).  pg_set: set the on-demand members. */
int cow_fs_branch_pg_port(struct cow_fs *fs, const char *name, struct cow_ref *ret);
int cow_fs_branch_pg_set(struct cow_fs *fs, const char *name, bool on_demand, uint32_t idle_timeout,
			 struct cow_ref *ret);
#endif
