/* envfile — cowfs's own block in an env file (.env, read by dotenv
 * libraries, docker compose, `set -a; . .env`), every other byte of the
 * file left as it was.
 *
 * The block is delimited by two whole-line comments, which every dotenv
 * reader skips:
 *     # >>> cowfs: TITLE
 *     PGHOST=...
 *     ...
 *     # <<< cowfs
 * cow_envfile_update() (pure) replaces the body of the first block in place,
 * drops any later complete block, and appends a block at the end if there
 * is none (after a line break if the file did not end with one: readers
 * take the last value of a key, so ours win over a user's earlier lines).
 * Lines end as the file's first line does ("\r\n" or "\n").  An empty BODY
 * removes the block.  A start line without its end line is -EBADMSG: the
 * file is not ours to guess about.
 *
 * cow_envfile_write() replaces PATH atomically and durably (temp file in
 * the same directory, fsync, rename, fsync of the directory), through a
 * symbolic link if PATH is one, keeping the file's mode and owner; a new
 * file gets 0666 less the umask.
 *
 * Errors: -errno; -EBADMSG as above.
 */
#ifndef COW_ENVFILE_H
#define COW_ENVFILE_H
#include <stddef.h>

#define COW_ENVFILE_BEGIN "# >>> cowfs"
#define COW_ENVFILE_END "# <<< cowfs"

/* OLD (OLD_LEN bytes, may hold NULs, NULL if there is no file) with the
 * block set to TITLE and BODY (lines "KEY=VALUE\n"; line ends are made
 * the file's).  *RET is malloc'd (NUL-terminated too), *RET_LEN its length. */
int cow_envfile_update(const char *old, size_t old_len, const char *title, const char *body, char **ret,
		       size_t *ret_len);
/* The block's body as it is in TEXT ("KEY=VALUE\n" lines, "\n" ends),
 * malloc'd; -ENOENT if TEXT has no block. */
int cow_envfile_block(const char *text, size_t len, char **ret);

/* Read PATH whole (NULL and 0 if it does not exist). */
int cow_envfile_read(const char *path, char **ret, size_t *ret_len);
int cow_envfile_write(const char *path, const char *text, size_t len);
#endif
