/* gitcli — `cowfs git ...`: a database branch for each git branch.
 *
 *   cowfs git install [--repo DIR] [--hooks DIR]   install the hooks (chained)
 *   cowfs git uninstall [--repo DIR]               remove them, put back the old ones
 *   cowfs git sync [--repo DIR]                    what the post-checkout hook does, by hand
 *   cowfs git list [--repo DIR] [--json]           git branch -> database branch, and state
 *   cowfs git prune [--repo DIR] [--dry-run]       delete database branches of gone or merged git branches
 *   cowfs git hook NAME [ARGS...]                  run by the hooks; never fails
 * and --store STORE / --mount MOUNTPOINT to name the store (else cowfs.store,
 * cowfs.mount, $COWFS_STORE, the one cowfs mount).
 *
 * The repository's settings (git config): cowfs.store, cowfs.mount,
 * cowfs.parent (database branch new ones fork from, default main),
 * cowfs.parentGitBranch (the git branch that uses cowfs.parent itself,
 * default main or master), cowfs.envFile (default .env, relative to the
 * working tree), cowfs.onDemand, cowfs.ttl, cowfs.autoPrune, and, written
 * by install, cowfs.enabled and cowfs.program.  Pairings: git.h.
 *
 * Everything the store does goes through this same program (subcmd.h):
 * `cowfs branch create|delete`, `cowfs pg start|ondemand|env`.
 *
 * Exit status: 0 done, 1 failure (one line on stderr), 2 bad usage; the
 * hook subcommand always 0.  cowfs-git(7) has the whole story.
 */
#ifndef COW_GITCLI_H
#define COW_GITCLI_H

int gitcli_main(int argc, char **argv);
#endif
