/* tree — persistent copy-on-write radix trees: a map from uint64 keys to
 * fixed-size values, whose nodes are objects in the store.  cowfs uses one
 * for the inode table (ino -> inode record) and one per file (block index ->
 * block hash).  A tree is named by the hash of its root node; two trees may
 * share any number of nodes, which is what makes a branch O(1).
 *
 * Shape: leaves hold 8192 / value_size values (value_size a power of two
 * from 8 to 1024, so that a leaf's presence bitmap is whole bytes); interior nodes hold 256 child hashes.  A node's level says
 * how tall the tree under it is.  An all-zero value is "absent", and an empty
 * subtree is the zero hash, so holes cost nothing.  Node byte layout: see
 * docs/FORMAT.md.
 *
 * Nodes are loaded lazily on first access and kept in memory; changes mark
 * the path to the root dirty; cow_tree_commit() writes the dirty nodes
 * bottom-up as new objects and returns the new root hash.  The old root
 * stays valid: nothing is overwritten.
 *
 * Not thread-safe: the owner (a branch) serialises access.  Functions return
 * 0 or -errno: -EIO when a node cannot be read or is malformed, -ENOMEM,
 * -ENOENT from cow_tree_next when no key follows.
 */
#ifndef COW_TREE_H
#define COW_TREE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

struct cow_store;
struct cow_tree;

int cow_tree_open(struct cow_store *s, const cow_hash *root, uint32_t value_size, struct cow_tree **ret);
void cow_tree_free(struct cow_tree *t);
int cow_tree_get(struct cow_tree *t, uint64_t key, void *ret_val);
int cow_tree_set(struct cow_tree *t, uint64_t key, const void *val);
/* Smallest present key >= FROM. */
int cow_tree_next(struct cow_tree *t, uint64_t from, uint64_t *ret_key, void *ret_val);
/* Remove every key >= FROM. */
int cow_tree_truncate(struct cow_tree *t, uint64_t from);
int cow_tree_commit(struct cow_tree *t, cow_hash *ret_root);
bool cow_tree_dirty(const struct cow_tree *t);
/* Drop every loaded node of a clean tree (they are read back on demand). */
void cow_tree_trim(struct cow_tree *t);
/* Bytes of node memory held. */
size_t cow_tree_mem(const struct cow_tree *t);

/* For walkers that visit stored nodes one at a time (walk.h), without a
 * cow_tree: decode node object BUF of a tree with VALUE_SIZE (EXPECT_LEVEL
 * < 0: any level), set *RET_LEVEL, and call FN for each present entry with
 * its slot and bytes (a child's hash in an interior node, a value in a
 * leaf; FN may be NULL to check the node only).  -EIO if malformed
 * (quietly), else FN's first error. */
typedef int (*cow_tree_entry_fn)(void *ctx, unsigned slot, const uint8_t *entry);
int cow_tree_node_decode(const void *buf, size_t len, uint32_t value_size, int expect_level, unsigned *ret_level,
			 cow_tree_entry_fn fn, void *ctx);
/* The first key under SLOT of a node at LEVEL whose first key is BASE (in a
 * leaf, the key of the value in SLOT). */
uint64_t cow_tree_slot_key(uint32_t value_size, unsigned level, uint64_t base, unsigned slot);
#endif
