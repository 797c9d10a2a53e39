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
 * Errors: -EEXIST (create where a store's superblock exists), -ENOENT, -EBUSY (the
 * store is open elsewhere), -EPROTONOSUPPORT (newer format), -EBADMSG
 * (damaged), -EIO, -ENOSPC.
 */
#ifndef COW_STORE_H
#define COW_STORE_H
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "hash.h"

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
int cow_store_sync(struct cow_store *s);
uint64_t cow_store_log_end(struct cow_store *s);
void cow_store_get_stats(struct cow_store *s, struct cow_store_stats *ret);
#endif
