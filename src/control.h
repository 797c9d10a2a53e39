/* control — the daemon's control socket: STORE/control.sock, one request
 * per line and one reply per line, both JSON objects (jansson).  The
 * caller's uid comes from SO_PEERCRED.  The protocol is in cowfs(5).
 *
 *   {"cmd":"branch.create","name":N,"from":P}  -> {"ok":true,"branch":{...}}
 *   {"cmd":"branch.list"}                      -> {"ok":true,"branches":[...]}
 *   ... one handler per command (branch.*, snapshot.*, reap), all in cowfs(5)
 *   {"cmd":"pg.*", ...}                        -> pgd.h
 *   {"cmd":"df"}                               -> {"ok":true,"refs":[...],"store":{...}}
 *   {"cmd":"gc","threshold":PCT}               -> {"progress":{...}} lines, then
 *                                                 {"ok":true, ...figures}
 *   {"cmd":"fsck"}                             -> {"progress":{...}} lines, then
 *                                                 {"ok":true,"clean":B,"problems":[...],...}
 *   anything else                              -> {"ok":false,"error":"..."}
 *
 * Bad input (not JSON, not an object, unknown command, missing or mistyped
 * fields, bad names) gets an error reply and changes nothing; the
 * connection stays usable.  One thread serves one connection at a time; a
 * connection idle for 30 s, or not reading its replies for 5 s, is closed.
 * NOTIFY is called after a branch or snapshot appears, disappears or is
 * repointed, with its name, so that the FUSE layer can drop the kernel's
 * cached entry.
 *
 * gc, fsck and df walk the whole store: each runs in a thread of its own,
 * one at a time, taking the connection (it ends after the final reply), so
 * that branch commands are served meanwhile.  cow_control_serve_fd serves
 * one connection in the calling thread, jobs included: the CLI's offline
 * mode on a store it opened itself, with the same replies.
 */
#ifndef COW_CONTROL_H
#define COW_CONTROL_H
#include <stdbool.h>

struct cow_fs;
struct cow_control;

typedef void (*cow_control_notify_fn)(void *ctx, bool snapshot, const char *name);

int cow_control_start(struct cow_fs *fs, cow_control_notify_fn notify, void *ctx, struct cow_control **ret);
/* Hand "pg.*" requests and branch changes to PGD (pgd.h). */
struct cow_pgd;
void cow_control_set_pgd(struct cow_control *c, struct cow_pgd *pgd);
void cow_control_stop(struct cow_control *c);
/* Serve requests from FD (one end of a socketpair) until it is closed. */
int cow_control_serve_fd(struct cow_fs *fs, int fd);
#endif
