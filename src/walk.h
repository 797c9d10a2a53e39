/* walk — every object reachable from a set of roots, with the inode and
 * block that reach it: the traversal shared by GC's mark, storage accounting
 * and fsck.
 *
 * A root is the hash of a branch root object (a ref's `root`).  Below it:
 * the inode table (a tree of inode records), and below each inode its
 * content: a regular file's block map (a tree of block hashes) and its data
 * blocks, a directory's object, a symlink's target.
 *
 * The walk runs inside a mark pass of the store (store.h) and keeps its
 * state in the index's marks: roots are numbered 1..N; each object records
 * the first root that reached it, and whether another did (shared).  A
 * subtree already reached from the same root is not entered again; one that
 * another root reached first is entered once more, to mark it shared; a
 * shared subtree is not entered again.  So a subtree common to any number of
 * roots is entered at most twice, and the only memory of its own is a table
 * of subtree sizes for interior objects (tree nodes and root objects, about
 * one per 256 data blocks), not a set per root.
 *
 * Logical bytes of a root: the bytes of the objects below it, counted once
 * per reference, as a copy of it without dedup would store them (holes and
 * zero blocks are nothing, an object named by two files counts twice).
 *
 * Without COW_WALK_VERIFY (GC, accounting) only interior objects are read;
 * an interior object that is missing, damaged or malformed stops the walk
 * (-EIO): what it hides is unknown, and GC must not sweep it.  A missing or
 * damaged data block is counted (cow_walk_stats) and the walk goes on.
 * With COW_WALK_VERIFY (fsck) every object reached is read and its hash
 * checked, data blocks included, and the structures are checked: tree node
 * shapes and levels, root objects, inode records (type, number below the
 * next free one), directory objects and their entries (each names an inode
 * present in the same root), block map entries past the end of a file.
 * Each problem goes to the problem function with the inode and block that
 * reached it, and the object and everything above it are marked bad in the
 * index, so that every other root reaching it enters it again and reports
 * it for itself.
 *
 * Calling sequence:
 *   cow_store_mark_begin(store)
 *   cow_walk_new(store, flags, &w)
 *   cow_walk_root(w, number, &root_hash, &logical_bytes)   for each root
 *   cow_walk_get_stats(w, ...), cow_walk_free(w)
 *   cow_store_tally(store, ...)  (own bytes: objects whose owner is the root
 *                                 and that are not shared)
 *   cow_store_mark_end(store)
 * Errors: -EIO (see above), -ENOMEM, -ECANCELED (the progress function said
 * stop), -EINVAL (no mark pass).
 */
#ifndef COW_WALK_H
#define COW_WALK_H
#include <stdbool.h>
#include <stdint.h>

#include "hash.h"

struct cow_store;
struct cow_walk;

#define COW_WALK_VERIFY 1u

struct cow_walk_problem {
	uint32_t root;           /* the root number that reached it */
	cow_hash hash;           /* the object at fault */
	uint64_t pos;            /* where it is stored (segment << 32 | offset); 0: nowhere */
	const char *object;      /* "root object", "inode table node", "block map node",
				  * "data block", "directory", "symlink target" */
	const char *problem;     /* what is wrong, e.g. "is missing from the store"
				  * (both strings are valid during the call only) */
	uint64_t ino;            /* the inode whose content it is; 0: not a file's */
	int64_t block;           /* data block: its index in the file; block map node:
				  * the first index it covers; else -1 */
};
typedef void (*cow_walk_problem_fn)(void *ctx, const struct cow_walk_problem *p);
/* Called every few thousand objects; a non-zero return stops the walk. */
typedef int (*cow_walk_progress_fn)(void *ctx, uint64_t objects, uint64_t bytes);

struct cow_walk_stats {
	uint64_t reached;        /* objects reached, counting each root's visits */
	uint64_t entered;        /* of these, entered (read or marked anew) */
	uint64_t read_bytes;     /* bytes read and hash-checked */
	uint64_t missing, damaged; /* data blocks missing or damaged (without VERIFY) */
	uint64_t problems;       /* problems reported (with VERIFY) */
};

int cow_walk_new(struct cow_store *s, unsigned flags, struct cow_walk **ret);
void cow_walk_free(struct cow_walk *w);
void cow_walk_set_problem_fn(struct cow_walk *w, cow_walk_problem_fn fn, void *ctx);
void cow_walk_set_progress_fn(struct cow_walk *w, cow_walk_progress_fn fn, void *ctx);
/* Walk everything below ROOT (a branch root object; the zero hash is the
 * empty branch) as root number NUMBER (1..COW_MARK_ROOT_MAX, each root its
 * own).  *RET_LOGICAL: its logical bytes.  Returns 0 (with VERIFY: also when
 * problems were found and reported), or -errno. */
int cow_walk_root(struct cow_walk *w, uint32_t number, const cow_hash *root, uint64_t *ret_logical);
void cow_walk_get_stats(struct cow_walk *w, struct cow_walk_stats *ret);

/* Paths of the inodes of one branch state, found through its directories
 * once (for naming the files of problems).  cow_walk_paths_get: "/base/5/1259",
 * or NULL when no directory names the inode (open but unlinked, or below a
 * damaged directory). */
struct cow_walk_paths;
int cow_walk_paths_open(struct cow_store *s, const cow_hash *root, struct cow_walk_paths **ret);
const char *cow_walk_paths_get(struct cow_walk_paths *p, uint64_t ino);
void cow_walk_paths_free(struct cow_walk_paths *p);
#endif
