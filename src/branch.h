/* branch — one branch's live filesystem: the POSIX operations on it, its
 * write-ahead of metadata into the log, and checkpoints that fold its state
 * into a single root hash.
 *
 * State: a root hash names a root object (next inode number + inode table
 * tree).  A live branch keeps the inodes it has touched in an in-memory cache
 * (attributes, file block maps as trees, directory maps).  Every mutation is
 * one transaction: a META record (branch id + ops) is appended to the log,
 * and only then applied to memory by the same code that replays the log at
 * open.  So a crash can lose only what was never synced, and a replayed
 * branch is exactly the branch that was live.
 *
 * Calling sequence:
 *   cow_branch_open(store, id, root, log_pos, &b)   replays records >= log_pos
 *   ... operations from any thread (one mutex per branch, never held across
 *       anything but store I/O) ...
 *   cow_branch_checkpoint(b, &root, &pos)           then write the ref (fs.c)
 *   cow_branch_free(b)
 *
 * Inode numbers are per branch (1 is the branch's root directory) and never
 * reused.  Lookup counts follow the FUSE protocol: lookup/create/mknod/
 * mkdir/symlink/link each add one, cow_branch_forget() drops them, and an
 * unlinked inode is freed when its count reaches zero.
 *
 * Errors are -errno as POSIX would give them; -EIO when the store fails.
 * After a failed log append or apply, the branch is failed for good (sticky).
 */
#ifndef COW_BRANCH_H
#define COW_BRANCH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "hash.h"
#include "inode.h"

struct cow_store;
struct cow_branch;

#define COW_ROOT_INO 1

struct cow_attr {
	uint64_t ino;
	uint32_t mode, uid, gid, nlink;
	uint64_t size, blocks, rdev;
	struct timespec atime, mtime, ctime;
};

/* what cow_branch_setattr changes */
enum {
	COW_SET_MODE = 1 << 0, COW_SET_UID = 1 << 1, COW_SET_GID = 1 << 2, COW_SET_SIZE = 1 << 3,
	COW_SET_ATIME = 1 << 4, COW_SET_MTIME = 1 << 5, COW_SET_ATIME_NOW = 1 << 6,
	COW_SET_MTIME_NOW = 1 << 7, COW_SET_CTIME = 1 << 8,
};

int cow_branch_open(struct cow_store *s, uint64_t id, const cow_hash *root, uint64_t log_pos,
		    struct cow_branch **ret);
/* Decode a branch root object (for walkers, walk.h): the next inode number
 * and the root of the inode table, whose values are COW_IREC_SIZE bytes.
 * -EIO if malformed. */
int cow_branch_root_decode(const void *buf, size_t len, uint64_t *ret_next_ino, cow_hash *ret_itable);
/* Make the root directory of a new, empty branch. */
int cow_branch_init_root(struct cow_branch *b, uint32_t mode, uint32_t uid, uint32_t gid);
void cow_branch_free(struct cow_branch *b);
uint64_t cow_branch_id(const struct cow_branch *b);
/* From now on every mutation of B fails with -EROFS (a snapshot).  Call
 * before B is shared with other threads. */
void cow_branch_set_readonly(struct cow_branch *b);
int cow_branch_checkpoint(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos);
/* Hold every mutation of B, all its files at once, until cow_branch_thaw
 * (reads go on).  While frozen, only cow_branch_checkpoint_frozen may be
 * called on B by the freezing thread; it does not sync the log (the caller
 * does, once, before it relies on the root). */
void cow_branch_freeze(struct cow_branch *b);
void cow_branch_thaw(struct cow_branch *b);
int cow_branch_checkpoint_frozen(struct cow_branch *b, cow_hash *ret_root, uint64_t *ret_log_pos);
bool cow_branch_dirty(struct cow_branch *b);
/* Early reclaim (docs/RECLAIM.md).  A root of B's, just checkpointed while
 * frozen, is taken by another ref (a child, a snapshot): what B stored
 * until then may be in it and must never be forgotten on B's account. */
void cow_branch_shared_frozen(struct cow_branch *b);
/* Forget the blocks B replaced, by transactions now durable, that B alone
 * stored since its last shared root; adds to *ACC.  0 or -errno. */
struct cow_store_forgot;
int cow_branch_reclaim(struct cow_branch *b, struct cow_store_forgot *acc);
size_t cow_branch_mem(struct cow_branch *b);

int cow_branch_getattr(struct cow_branch *b, uint64_t ino, struct cow_attr *ret);
/* The block-map root of regular file INO: two files with the same root have
 * the same blocks.  -EAGAIN while the map has changes not yet checkpointed. */
int cow_branch_map_root(struct cow_branch *b, uint64_t ino, cow_hash *ret);
/* The hashes of blocks FIRST .. FIRST+N-1 of regular file INO (the zero hash
 * for a hole). */
int cow_branch_block_hashes(struct cow_branch *b, uint64_t ino, uint64_t first, uint32_t n, cow_hash *ret);
int cow_branch_lookup(struct cow_branch *b, uint64_t parent, const char *name, struct cow_attr *ret);
/* Add one lookup reference to an inode the caller already knows (the branch root). */
int cow_branch_ref(struct cow_branch *b, uint64_t ino, struct cow_attr *ret);
void cow_branch_forget(struct cow_branch *b, uint64_t ino, uint64_t nlookup);
int cow_branch_setattr(struct cow_branch *b, uint64_t ino, const struct cow_attr *in, unsigned to_set,
		       struct cow_attr *ret);
int cow_branch_mknod(struct cow_branch *b, uint64_t parent, const char *name, uint32_t mode, uint64_t rdev,
		     uint32_t uid, uint32_t gid, struct cow_attr *ret);
int cow_branch_symlink(struct cow_branch *b, uint64_t parent, const char *name, const char *target,
		       uint32_t uid, uint32_t gid, struct cow_attr *ret);
/* malloc'd, NUL-terminated */
int cow_branch_readlink(struct cow_branch *b, uint64_t ino, char **ret);
int cow_branch_unlink(struct cow_branch *b, uint64_t parent, const char *name);
int cow_branch_rmdir(struct cow_branch *b, uint64_t parent, const char *name);
/* flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE */
int cow_branch_rename(struct cow_branch *b, uint64_t parent, const char *name, uint64_t newparent,
		      const char *newname, unsigned flags);
int cow_branch_link(struct cow_branch *b, uint64_t ino, uint64_t newparent, const char *newname,
		    struct cow_attr *ret);
/* Checks that INO may be opened with these open(2) flags. */
int cow_branch_open_file(struct cow_branch *b, uint64_t ino, int flags);
/* Bytes read (short at end of file), or -errno. */
ssize_t cow_branch_read(struct cow_branch *b, uint64_t ino, off_t off, size_t size, void *buf);
ssize_t cow_branch_write(struct cow_branch *b, uint64_t ino, off_t off, size_t size, const void *buf);
int cow_branch_fallocate(struct cow_branch *b, uint64_t ino, int mode, off_t off, off_t len);
int cow_branch_lseek(struct cow_branch *b, uint64_t ino, off_t off, int whence, off_t *ret);
/* Sorted entries plus "." and ".."; ".." of the root is the root itself. */
int cow_branch_readdir(struct cow_branch *b, uint64_t ino, struct cow_dirent **ret, size_t *ret_n);
#endif
