/* postmaster — what the daemon knows of a Postgres server running on a
 * branch: the pid in the branch's postmaster.pid, whether that process is
 * alive, and stopping it.  The daemon stops Postgres itself only where it
 * must act alone (the expiry reaper, delete); starting Postgres, ports and
 * connection settings belong to the pg helper of the command line.
 */
#ifndef COW_POSTMASTER_H
#define COW_POSTMASTER_H
#include <stdbool.h>
#include <sys/types.h>

struct cow_branch;

/* Does B's postmaster.pid name a live process?  Its pid in *RET_PID. */
bool cow_postmaster_running(struct cow_branch *b, pid_t *ret_pid);
/* Ask postmaster PID to shut down (SIGINT: fast shutdown, every
 * transaction rolled back, a checkpoint written) and wait up to TIMEOUT_S
 * seconds; then SIGQUIT (immediate shutdown, crash recovery at the next
 * start) and wait as long again.  0 once it is gone, -ETIMEDOUT. */
int cow_postmaster_stop(pid_t pid, unsigned timeout_s);
#endif
