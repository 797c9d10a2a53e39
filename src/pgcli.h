/* pgcli — `cowfs pg ...`: stock Postgres on a branch, run as the owner of
 * the branch's directory (the CLI drops to that user when run as root).
 *
 *   cowfs pg start|stop|restart BRANCH       pg_ctl -D MOUNT/BRANCH, as the owner
 *   cowfs pg status [BRANCH]                 pid, port, socket directory, uptime
 *   cowfs pg env BRANCH [--format sh|dotenv|json]
 *   cowfs pg psql BRANCH [PSQL ARGS...]
 *   cowfs pg ondemand BRANCH on|off [--idle DURATION]
 *   cowfs pg initdb BRANCH [-- INITDB ARGS...]
 *
 * The daemon gives the branch's port and socket directory (pg.info, pgd.h);
 * start writes them into the branch's postgresql.auto.conf if they are not
 * there.  On-demand branches are started and stopped by the daemon, so
 * start and stop on them are requests to it.
 *
 * `cowfs branch reset` calls pgcli_before_change() first, which
 * stops a Postgres started by hand (pg_ctl) on the branch (the daemon
 * refuses to repoint a branch Postgres runs on), and pgcli_after_change()
 * after, which starts it again with the options it
 * had (postmaster.opts, as `pg_ctl restart` does), so on the same port and
 * socket (also when the reset failed: then on the old state).
 *
 * Exit status: 0 success, 1 failure (one line on stderr), 2 bad usage,
 * 3 Postgres not running (stop, status BRANCH).
 */
#ifndef COW_PGCLI_H
#define COW_PGCLI_H
#include <stdbool.h>

int pgcli_main(int argc, char **argv);

struct pgcli_change {
	bool quiet;        /* say nothing on stdout (the caller prints JSON) */
	bool restart;      /* Postgres ran, started by hand, and was stopped */
	char opts[2048];   /* its options (postmaster.opts), to start it the same way */
	char name[64];
	char store[4096];
};
/* 0, or 1 after printing why the change must not go on. */
int pgcli_before_change(const char *store, const char *name, struct pgcli_change *ret);
/* 0, or 1 after printing why Postgres did not start again. */
int pgcli_after_change(struct pgcli_change *c);
#endif
