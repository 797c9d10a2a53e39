/* inode — the on-disk codecs of inode records and directory objects, and
 * the in-memory directory map.
 *
 * An inode record is 128 bytes, the value type of the inode table tree;
 * mode 0 means "no inode".  Its content hash names: for a regular file, the
 * root of its block-map tree; for a directory, its directory object; for a
 * symlink, an object holding the target.  For directories, rdev holds the
 * parent's inode number (for ".." in readdir).
 *
 * A directory object lists entries sorted by name, so equal directories are
 * equal objects.  struct cow_dir is the live form: a hash map from name to
 * (ino, type).  Layouts: docs/FORMAT.md.  Functions return 0 or -errno
 * (-EIO for a malformed object, -ENOMEM).
 */
#ifndef COW_INODE_H
#define COW_INODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "hash.h"

#define COW_IREC_SIZE 128
#define COW_NAME_MAX 255

struct cow_irec {
	uint32_t mode, uid, gid, nlink;
	uint64_t size, rdev;
	struct timespec atime, mtime, ctime;
	cow_hash content;
};

void cow_irec_encode(const struct cow_irec *r, uint8_t out[COW_IREC_SIZE]);
void cow_irec_decode(const uint8_t in[COW_IREC_SIZE], struct cow_irec *r);

struct cow_dir;
struct cow_dirent {
	uint64_t ino;
	uint8_t type;   /* DT_* */
	char *name;
};

struct cow_dir *cow_dir_new(void);
void cow_dir_free(struct cow_dir *d);
int cow_dir_decode(const void *buf, size_t len, struct cow_dir **ret);
/* Encode sorted by name into a malloc'd buffer. */
int cow_dir_encode(const struct cow_dir *d, void **ret_buf, size_t *ret_len);
/* 0 and the entry, or -ENOENT. */
int cow_dir_lookup(const struct cow_dir *d, const char *name, uint64_t *ret_ino, uint8_t *ret_type);
int cow_dir_set(struct cow_dir *d, const char *name, uint64_t ino, uint8_t type);
int cow_dir_del(struct cow_dir *d, const char *name);
size_t cow_dir_count(const struct cow_dir *d);
/* A sorted, malloc'd copy of the entries (names are allocated too); free with cow_dirents_free. */
int cow_dir_list(const struct cow_dir *d, struct cow_dirent **ret, size_t *ret_n);
void cow_dirents_free(struct cow_dirent *e, size_t n);
#endif
