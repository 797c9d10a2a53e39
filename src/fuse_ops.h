/* fuse_ops — the libfuse low-level operations of a cowfs mount.  This layer
 * holds no storage logic: it maps node ids to (branch, inode), calls the
 * branch operations (branch.h), and turns their -errno into replies.
 *
 * Node ids: FUSE_ROOT_ID (1) is the mount root, a read-only directory that
 * lists the branches and .snapshots; 2 is .snapshots, a read-only directory
 * that lists the snapshots; every other node id is slot << 48 | ino, where
 * slot is the branch's (or snapshot's) slot in the cow_fs and ino its inode
 * number there.  So one branch's root directory is slot << 48 | 1.  A
 * snapshot is a read-only branch: its mutations fail with EROFS.
 *
 * No lock is held across a fuse_reply_*: branch operations take and drop
 * their own lock before this layer replies.
 */
#ifndef COW_FUSE_OPS_H
#define COW_FUSE_OPS_H
#include <stdbool.h>

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

struct cow_fs;

struct cow_fuse {
	struct cow_fs *fs;
	double timeout;        /* entry and attribute cache time in branches (seconds) */
	bool writeback_cache;  /* let the kernel cache writes (FUSE_CAP_WRITEBACK_CACHE) */
	bool durable_replies;  /* the kernel took it: WRITE, SETATTR and FALLOCATE are
				  durable when replied to, FSYNC is not used (op_fsync) */
	struct timespec mounted;
	struct fuse_session *se;   /* for cache notifications */
};

extern const struct fuse_lowlevel_ops cow_fuse_ops;

/* A branch or snapshot appeared, went or was repointed (control socket):
 * drop the kernel's cached entry for its name in the mount root or in
 * .snapshots.  CTX is a struct cow_fuse. */
void cow_fuse_branch_changed(void *ctx, bool snapshot, const char *name);
#endif
