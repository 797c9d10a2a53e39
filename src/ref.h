/* ref — refs: small JSON files under STORE/refs/, each naming a checkpointed
 * root and, for a live branch, the log position from which its later changes
 * are replayed.  Three kinds, one directory each:
 *   refs/branches/NAME.json    live branches
 *   refs/snapshots/NAME.json   read-only snapshots (fully checkpointed)
 *   refs/trash/NAME.json       deleted branches in their grace period
 * Written by write-temp, fsync, rename, fsync of the directory (util.h), so a
 * ref is always either the old or the new one.  Format: docs/FORMAT.md.
 *
 * Names: [a-z0-9][a-z0-9._-]*, at most 63 bytes, no "..": cow_ref_check_name
 * says why a name is refused.  Errors: -EINVAL (bad name), -ENOENT, -EBADMSG
 * (unreadable or malformed ref, with a message), -EPROTONOSUPPORT (newer).
 */
#ifndef COW_REF_H
#define COW_REF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define COW_REF_VERSION 1
#define COW_NAME_LEN 63

enum cow_ref_kind { COW_REF_BRANCH, COW_REF_SNAPSHOT, COW_REF_TRASH };
#define COW_REF_KINDS 3

struct cow_ref {
	char name[COW_NAME_LEN + 1];
	uint64_t id;              /* unique in the store, never reused */
	cow_hash root;            /* checkpointed state */
	uint64_t log_pos;         /* replay this branch's records from here */
	char parent[COW_NAME_LEN + 1]; /* branch: forked from; snapshot: taken of */
	int64_t created;          /* unix seconds */
	uint32_t owner;           /* uid */
	int64_t expires;          /* unix seconds; 0: never */
	bool protected;           /* refuse delete, reset, restore */
	int64_t deleted;          /* trash: when it was deleted */
	/* Postgres on the branch (pg.h): 0 / false when not assigned */
	uint16_t port;
	bool on_demand;
	uint32_t idle_timeout;    /* seconds; 0: the default */
};

/* "branches", "snapshots" or "trash" */
const char *cow_ref_kind_dir(enum cow_ref_kind kind);
/* NULL if NAME is acceptable, else a reason. */
const char *cow_ref_check_name(const char *name);
int cow_ref_write(const char *store, enum cow_ref_kind kind, const struct cow_ref *ref);
int cow_ref_read(const char *store, enum cow_ref_kind kind, const char *name, struct cow_ref *ret);
/* Remove NAME's ref durably (unlink, fsync of the directory). */
int cow_ref_remove(const char *store, enum cow_ref_kind kind, const char *name);
/* Sorted names; free with cow_ref_names_free. */
int cow_ref_list(const char *store, enum cow_ref_kind kind, char ***ret, size_t *ret_n);
void cow_ref_names_free(char **names, size_t n);
#endif
