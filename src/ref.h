/* ref — branch refs: small JSON files, STORE/refs/branches/NAME.json, each
 * naming a branch's checkpointed root and the log position from which its
 * later changes are replayed.  Written by write-temp, fsync, rename, fsync of
 * the directory (util.h), so a ref is always either the old or the new one.
 * Format: docs/FORMAT.md.
 *
 * Names: [a-z0-9][a-z0-9._-]*, at most 63 bytes, no "..": cow_ref_check_name
 * says why a name is refused.  Errors: -EINVAL (bad name), -ENOENT, -EBADMSG
 * (unreadable or malformed ref, with a message), -EPROTONOSUPPORT (newer).
 */
#ifndef COW_REF_H
#define COW_REF_H
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define COW_REF_VERSION 1
#define COW_NAME_LEN 63

struct cow_ref {
	char name[COW_NAME_LEN + 1];
	uint64_t id;              /* unique in the store, never reused */
	cow_hash root;            /* checkpointed state */
	uint64_t log_pos;         /* replay this branch's records from here */
	char parent[COW_NAME_LEN + 1];
	int64_t created;          /* unix seconds */
	uint32_t owner;           /* uid */
};

/* NULL if NAME is acceptable, else a reason. */
const char *cow_ref_check_name(const char *name);
int cow_ref_write(const char *store, const struct cow_ref *ref);
int cow_ref_read(const char *store, const char *name, struct cow_ref *ret);
/* Remove NAME's ref durably (unlink, fsync of the directory). */
int cow_ref_remove(const char *store, const char *name);
/* Sorted names; free with cow_ref_names_free. */
int cow_ref_list(const char *store, char ***ret, size_t *ret_n);
void cow_ref_names_free(char **names, size_t n);
#endif
