/* diff — which files of two branches differ, and in how many 8 KiB blocks,
 * read from their block maps: no data block is read, and a file whose map
 * is shared (same root hash) is skipped whole.
 *
 * Both branches are walked from their roots in name order.  A regular file
 * is reported when its size or any block differs (holes count as blocks of
 * zeros); a file on one side only is reported with every block it holds.
 * Directories are descended; other file types are not compared.  The
 * callback gets paths relative to the branch root ("base/5/16384").
 * Checkpoint the branches first (cow_fs_checkpoint) so that unchanged maps
 * are recognised by their root.
 */
#ifndef COW_DIFF_H
#define COW_DIFF_H
#include <stdbool.h>
#include <stdint.h>

struct cow_branch;

struct cow_diff_entry {
	const char *path;
	bool in_a, in_b;               /* which sides have a regular file there */
	uint64_t size_a, size_b;       /* bytes */
	uint64_t changed;              /* blocks that differ */
};
/* Return 0 to go on, or -errno to stop the walk with that error. */
typedef int (*cow_diff_fn)(void *ctx, const struct cow_diff_entry *e);

int cow_diff_branches(struct cow_branch *a, struct cow_branch *b, cow_diff_fn fn, void *ctx);
#endif
