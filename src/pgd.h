/* pgd — the daemon's side of Postgres on branches: the branches' socket
 * directories, the "pg.*" control commands, and on-demand Postgres.
 *
 * On demand: for a branch whose ref says on_demand, the daemon listens on
 * the branch's own port (127.0.0.1 and ::1) and Unix socket
 * (SOCKDIR/.s.PGSQL.PORT, with a Postgres-style .lock file naming the
 * daemon, so that a hand-started Postgres on that port refuses cleanly).
 * The first connection starts Postgres (the postgres program, as the owner
 * of the branch's directory) on a private port in the same socket
 * directory, waits until its postmaster.pid says "ready", and then relays
 * bytes between the client and Postgres, one thread per connection: TCP to
 * Postgres's TCP port on 127.0.0.1, Unix to its Unix socket, connected with
 * the client's uid and gid so that `peer` authentication sees the client.
 * The client sees no error and need not retry.  When the branch has had no
 * connection for its idle time (ref idle_timeout, default 10 minutes),
 * Postgres is stopped (fast shutdown); the data stays, and the next
 * connection starts it again.  If Postgres cannot start, the client gets a
 * Postgres ErrorResponse naming the reason, and the reason is logged.
 *
 * Calling sequence (cowfsd):
 *   cow_pgd_start(fs, mountpoint, bindir, &pgd)  socket directories of all
 *                                 branches; listen for on-demand ones
 *   cow_control_set_pgd(control, pgd)
 *   ... the file system is served ...
 *   cow_pgd_stop(pgd, se)         after the FUSE loop ended: SE, if the
 *                                 mount is still there (the loop ended on a
 *                                 signal), is served (one thread) while every
 *                                 Postgres on it stops: those it started,
 *                                 and those started by hand (fast shutdown,
 *                                 then immediate, then kill); frees
 *
 * From the control socket (control.c):
 *   cow_pgd_handle(pgd, cmd, req, uid)  the reply to a "pg.*" request
 *   cow_pgd_created(pgd, name)          after a branch create
 *   cow_pgd_hold(pgd, name)             before a reset or delete: stop the
 *                                       on-demand Postgres of NAME and hold
 *                                       new connections (they wait)
 *   cow_pgd_release(pgd, name, gone)    after: let them go (to the new
 *                                       state), or, GONE, close them and stop
 *                                       listening for NAME
 *
 * Lock order: pgd->lock is taken after the fs's locks are released, never
 * while holding them, and never held across a Postgres start or stop.
 */
#ifndef COW_PGD_H
#define COW_PGD_H
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

struct cow_fs;
struct cow_pgd;
struct fuse_session;

int cow_pgd_start(struct cow_fs *fs, const char *mountpoint, const char *bindir, struct cow_pgd **ret);
void cow_pgd_stop(struct cow_pgd *d, struct fuse_session *se);

json_t *cow_pgd_handle(struct cow_pgd *d, const char *cmd, json_t *req, uid_t uid);
void cow_pgd_created(struct cow_pgd *d, const char *name);
void cow_pgd_hold(struct cow_pgd *d, const char *name);
void cow_pgd_release(struct cow_pgd *d, const char *name, bool gone);
#endif
