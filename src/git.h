/* git — a git repository as cowfs sees it (libgit2), and which database
 * branch goes with which git branch.
 *
 * The naming rule (cow_git_db_name, pure; cowfs-git(7) documents it):
 *   1. a git branch made only of a-z, 0-9, '.', '_', '-' and '/' maps to
 *      itself with every '/' turned into '-' ("feature/inventory-split" ->
 *      "feature-inventory-split"), if that is a valid database branch name
 *      (ref.h: [a-z0-9][a-z0-9._-]*, at most 63 bytes, no "..") and not
 *      taken;
 *   2. otherwise (upper case, other characters or bytes, too long, not
 *      valid) or if that name is taken: a readable stem and a suffix,
 *      STEM-XXXXXXXX, XXXXXXXX the first 8 hex digits of the SHA-256 of the
 *      git branch name (attempt 1), or of "NAME\nK" for attempt K >= 2
 *      when the earlier ones are taken too.  The stem is the name in lower
 *      case with every run of other characters than a-z0-9._ made one '-',
 *      every run of dots one '.', no '-', '.' or '_' at either end, cut to
 *      54 bytes ("git" if nothing is left).
 * "Taken" is the caller's to say (TAKEN below); the caller then records
 * the pairing so that the name stays the git branch's (cow_git_pair_*).
 *
 * Pairings live in the repository's own config (.git/config):
 *   branch.<git branch>.cowfsDatabase = DB       moves with `git branch -m`,
 *                                                goes with `git branch -D`
 *   cowfsDatabase.<DB>.gitBranch = GIT BRANCH   the record prune works from;
 *   cowfsDatabase.<DB>.forkedAt = COMMIT        git keeps it after -D
 *   cowfsDatabase.<DB>.created = UNIX TIME      only if cowfs git created DB
 * A database branch belongs to at most one git branch: the record is keyed
 * by the database name.
 *
 * Calling sequence: cow_git_open, then any of the rest, cow_git_close.
 * Errors: -errno; -ENOENT (not a repository, no such branch or setting),
 * -EINVAL (a setting of the wrong type), -EIO (libgit2 failed; its message
 * is printed, libgit2 errors never leave this module as they are).
 */
#ifndef COW_GIT_H
#define COW_GIT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ref.h"

#define COW_GIT_SUFFIX_HEX 8
#define COW_GIT_STEM_MAX (COW_NAME_LEN - 1 - COW_GIT_SUFFIX_HEX)
#define COW_GIT_OID_HEX 65 /* SHA-1 or SHA-256 object names, NUL included */
#define COW_GIT_BRANCH_MAX 1024 /* a git branch's short name, NUL included */

typedef bool (*cow_git_taken_fn)(const char *db, void *ctx);

/* The database branch name for GIT_BRANCH (its short name, "feature/x"):
 * the first of the rule's candidates that TAKEN (may be NULL) says is
 * free.  -EINVAL for an empty name, -EEXIST if 1000 candidates are all taken. */
int cow_git_db_name(const char *git_branch, cow_git_taken_fn taken, void *ctx, char ret[COW_NAME_LEN + 1]);

struct cow_git;

/* Open the repository at or above DIR; DIR NULL: the one git itself would
 * use ($GIT_DIR, else the current directory and up), as in a hook. */
int cow_git_open(const char *dir, struct cow_git **ret);
void cow_git_close(struct cow_git *g);
bool cow_git_bare(const struct cow_git *g);
/* The top of the working tree, without a trailing '/' ("" if bare). */
const char *cow_git_workdir(const struct cow_git *g);
/* Where git looks for hooks: core.hooksPath (relative to the working
 * tree), else the common git directory's hooks/. */
int cow_git_hooks_dir(struct cow_git *g, char *out, size_t n);

/* Serialise the commands that change pairings and database branches of
 * this repository (two deletions of one branch run two hooks at once):
 * an exclusive flock on GITDIR/cowfs.lock, waited for.  The descriptor
 * (close it to unlock), or -errno. */
int cow_git_lock(struct cow_git *g);

/* The checked-out branch's short name: 0; 1 if HEAD is detached (OUT ""). */
int cow_git_head(struct cow_git *g, char *out, size_t n);
/* Is a rebase under way (HEAD detached for its duration)? */
bool cow_git_rebasing(struct cow_git *g);
/* The commit a local branch points at, in hex: 0, -ENOENT if no such
 * branch (or it has no commit yet). */
int cow_git_branch_tip(struct cow_git *g, const char *branch, char oid[COW_GIT_OID_HEX]);
/* Is BRANCH checked out in any working tree of the repository? */
bool cow_git_checked_out(struct cow_git *g, const char *branch);
/* 1 if BRANCH's tip is INTO's tip or one of its ancestors, else 0. */
int cow_git_merged(struct cow_git *g, const char *branch, const char *into);
/* The git branch whose database is cowfs.parent: cowfs.parentGitBranch,
 * else "main" or "master" (the first that exists), else init.defaultBranch,
 * else "main". */
void cow_git_parent_branch(struct cow_git *g, char *out, size_t n);

/* Settings (every level git reads; writes go to the repository's own). */
int cow_git_get(struct cow_git *g, const char *key, char *out, size_t n);
/* A path setting (~/ expanded). */
int cow_git_get_path(struct cow_git *g, const char *key, char *out, size_t n);
/* DFLT if unset; -EINVAL (with a message) if not a boolean. */
int cow_git_get_bool(struct cow_git *g, const char *key, bool dflt, bool *ret);
/* VALUE NULL removes the setting (no error if it was not set). */
int cow_git_set(struct cow_git *g, const char *key, const char *value);

/* ---- pairings ---- */
struct cow_git_pair {
	char db[COW_NAME_LEN + 1];
	char git_branch[COW_GIT_BRANCH_MAX];
	char forked_at[COW_GIT_OID_HEX]; /* "" if unknown */
	int64_t created;                 /* 0: not created by cowfs git */
};

/* Every cowfsDatabase record, sorted by database name; free() the array. */
int cow_git_pairs(struct cow_git *g, struct cow_git_pair **ret, size_t *ret_n);
/* The record of DB: 0, or -ENOENT. */
int cow_git_pair_get(struct cow_git *g, const char *db, struct cow_git_pair *ret);
/* Write P's record and branch.<git branch>.cowfsDatabase. */
int cow_git_pair_put(struct cow_git *g, const struct cow_git_pair *p);
/* Remove DB's record, and branch.<GIT_BRANCH>.cowfsDatabase if it names DB
 * (GIT_BRANCH may be NULL). */
int cow_git_pair_forget(struct cow_git *g, const char *db, const char *git_branch);
/* Is DB named by branch.<B>.cowfsDatabase of an existing git branch B
 * other than EXCEPT (may be NULL)?  B goes into OUT (may be NULL). */
bool cow_git_db_claimed(struct cow_git *g, const char *db, const char *except, char *out, size_t n);
#endif
