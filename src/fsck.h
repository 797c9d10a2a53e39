/* fsck — check every object reachable from a store's roots, and name the
 * ref and file of each bad one.
 *
 * One mark pass of the store walks every root with COW_WALK_VERIFY
 * (walk.h): every object reached is read and its SHA-256 checked (data
 * blocks included), every tree node, root object, inode record and
 * directory is checked for shape, and each directory entry must name an
 * inode of the same root.  A bad object reached from several refs is
 * reported once per ref.  The file is named by its path in that ref,
 * found through the ref's directories once per ref that has a problem.
 *
 * Calling sequence: cow_fsck_run(store, roots, n, opts, &stats), after the
 * caller checkpointed the live branches (fs.c does both: cow_fs_fsck).
 * Returns 0 when the check ran, whatever it found (stats.problems), or
 * -errno: -EBUSY (another pass, GC say, is under way), -ECANCELED, -ENOMEM.
 */
#ifndef COW_FSCK_H
#define COW_FSCK_H
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

struct cow_store;

struct cow_fsck_root {
	cow_hash root;           /* a branch root object */
	const char *kind;        /* "branch", "snapshot", "trash" (for messages) */
	const char *name;
};

struct cow_fsck_problem {
	const char *kind, *name; /* the ref that reaches the object */
	const char *path;        /* the file in it ("/base/5/1259"), or NULL: not
				  * a file's (root object, inode table), or no
				  * directory names the inode */
	uint64_t ino;            /* 0: not a file's */
	int64_t block;           /* block index in the file, or -1 */
	cow_hash hash;           /* the object */
	uint64_t pos;            /* where it is stored (segment << 32 | offset), 0: nowhere */
	const char *object;      /* "data block", "block map node", ... (walk.h) */
	const char *problem;     /* "does not match its hash, or cannot be read", ... */
};
/* Strings are valid during the call only. */
typedef void (*cow_fsck_problem_fn)(void *ctx, const struct cow_fsck_problem *p);
/* Called every few thousand objects; a non-zero return stops the check. */
typedef int (*cow_fsck_progress_fn)(void *ctx, uint64_t objects, uint64_t bytes);

struct cow_fsck_opts {
	cow_fsck_problem_fn problem;
	cow_fsck_progress_fn progress;
	void *ctx;               /* for both */
};

struct cow_fsck_stats {
	double seconds;
	uint32_t roots;
	uint64_t objects;        /* objects checked */
	uint64_t bytes;          /* bytes read and hash-checked */
	uint64_t problems;       /* one per bad object per ref that reaches it */
};

int cow_fsck_run(struct cow_store *s, const struct cow_fsck_root *roots, size_t n, const struct cow_fsck_opts *opts,
		 struct cow_fsck_stats *ret);
/* One line for a problem: "branch main: /base/5/1259 (inode 812), block 7:
 * data block 3fa1... (segment 3, offset 1234567) does not match its hash, or
 * cannot be read".  Returns BUF. */
char *cow_fsck_describe(const struct cow_fsck_problem *p, char *buf, size_t len);
#endif
