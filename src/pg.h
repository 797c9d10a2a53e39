/* pg — what the daemon and the command-line tool both need to run stock
 * Postgres on a branch: the branch's port and socket directory, the two
 * settings cowfs keeps in the branch's postgresql.auto.conf, the
 * postmaster.pid, where the Postgres binaries are, and running a program as
 * the branch's owner.
 *
 * A branch's port and socket directory stay the same for the branch's life:
 *   - the port is chosen once by the daemon (at branch create, or at the
 *     first `cowfs pg` command for a branch that has none):
 *     cow_pg_pick_port() takes one in COW_PG_PORT_MIN..MAX that no other
 *     branch of the store has, no other mounted store published
 *     (cow_pg_ports_*), and nothing on the machine listens on; the ref
 *     keeps it ("postgres": {"port": N}, ref.h);
 *   - the socket directory is RUNDIR/TAG/BRANCH (cow_pg_socket_dir), RUNDIR
 *     being /run/cowfs for a daemon running as root and /tmp/cowfs-UID
 *     otherwise, TAG the first 8 hex digits of the store's uuid, so two
 *     stores with a branch of the same name do not meet;
 *   - both are written into the branch's postgresql.auto.conf as `port` and
 *     `unix_socket_directories` (cow_pg_settings_*), so that a hand-typed
 *     `pg_ctl -D MOUNT/BRANCH start` uses them.  A child is given its own
 *     values when it is created, and a reset branch gets its own back.
 *
 * Postgres runs as the owner of the branch's directory (Postgres itself
 * insists that its data directory belongs to the user running it), never
 * as root.
 *
 * Errors: -errno; -ENOENT (no such file / not running), -EADDRINUSE (no free
 * port), -EBADMSG (a file that cannot be parsed).
 */
#ifndef COW_PG_H
#define COW_PG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct cow_branch;

/* Ports handed out to branches: below Linux's default ephemeral range
 * (32768-60999), so that no outgoing connection holds one. */
#define COW_PG_PORT_MIN 10000
#define COW_PG_PORT_MAX 19999
#define COW_PG_IDLE_DEFAULT 600 /* seconds an on-demand Postgres idles before it is stopped */
#define COW_PG_SETTINGS_FILE "postgresql.auto.conf"

/* RUNDIR/TAG for the store at STORE (see above). */
int cow_pg_run_dir(const char *store, char *out, size_t n);
/* RUNDIR/TAG/BRANCH. */
int cow_pg_socket_dir(const char *store, const char *branch, char *out, size_t n);
/* Make DIR (and its parents up to RUNDIR, mode 0755) owned by UID:GID, mode 0755. */
int cow_pg_socket_dir_make(const char *dir, uid_t uid, gid_t gid);

/* Is anything on this machine (this network namespace) listening on, or
 * bound to, TCP PORT? */
bool cow_pg_port_bound(uint16_t port);
/* The process listening on PORT (0 if none is found; needs root to see
 * other users' processes), its command name in COMM. */
pid_t cow_pg_port_user(uint16_t port, char *comm, size_t n);
/* A port in COW_PG_PORT_MIN..MAX not in USED[0..N) and not bound. */
int cow_pg_pick_port(const uint16_t *used, size_t n, uint16_t *ret);

/* While a store is mounted, its daemon publishes its branches' ports in
 * RUNDIR/TAG/ports (one per line), so that the daemon of another store on
 * the same machine does not give them out too.  Others: every port the
 * other stores published (malloc'd; free it). */
int cow_pg_ports_publish(const char *store, const uint16_t *ports, size_t n);
void cow_pg_ports_unpublish(const char *store);
int cow_pg_ports_others(const char *store, uint16_t **ret, size_t *ret_n);

/* postgresql.auto.conf text OLD (may be NULL) with every `port` and
 * `unix_socket_directories` line replaced by ours, at the end.  malloc'd. */
char *cow_pg_settings_rewrite(const char *old, uint16_t port, const char *sockdir);
/* The last `port` and `unix_socket_directories` of TEXT (0 / "" if absent). */
void cow_pg_settings_parse(const char *text, uint16_t *ret_port, char *ret_sockdir, size_t n);
/* Write them into B's postgresql.auto.conf through the branch operations
 * (for a branch no kernel has cached yet: a new child).  0 and nothing
 * written if B holds no cluster (no PG_VERSION in its root). */
int cow_pg_settings_write_branch(struct cow_branch *b, uint16_t port, const char *sockdir);
/* The same through the file system, for DATADIR on a mount; the file is
 * given UID:GID.  Writes only if a value differs; 1 if it wrote, else 0. */
int cow_pg_settings_write_path(const char *datadir, uint16_t port, const char *sockdir, uid_t uid, gid_t gid);

/* DATADIR/postmaster.pid. */
struct cow_pg_pid {
	pid_t pid;
	time_t started;
	uint16_t port;
	char sockdir[256];
	char status[16]; /* "starting", "ready", "stopping", "standby", or "" */
};
/* -ENOENT if there is no postmaster.pid. */
int cow_pg_pid_read(const char *datadir, struct cow_pg_pid *ret);
/* Does PID name a live process (a zombie is not)? */
bool cow_pg_pid_alive(pid_t pid);
/* The pid of the Postgres running on DATADIR, or 0. */
pid_t cow_pg_running(const char *datadir);

/* The last FATAL, PANIC (or else ERROR) line Postgres wrote to its log
 * FILE from offset FROM on, with the log's name; "see FILE" if none. */
void cow_pg_log_reason(const char *file, off_t from, char *out, size_t n);

/* DATADIR/PG_VERSION ("15"), -ENOENT without a cluster. */
int cow_pg_cluster_version(const char *datadir, char *out, size_t n);
/* The directory of the Postgres programs for a cluster of major version
 * VERSION (NULL: any, the newest).  In order: CONFIGURED (a --bindir
 * option, may be NULL), $COWFS_PG_BINDIR, `pg_config --bindir` if its
 * version matches, /usr/lib/postgresql/VERSION/bin (Debian; without a
 * VERSION the highest).  -ENOENT with a message if none has pg_ctl. */
int cow_pg_bindir(const char *configured, const char *version, char *out, size_t n);

/* A user to run Postgres as. */
struct cow_pg_user {
	uid_t uid;
	gid_t gid;
	char name[64];
	char home[256];
	int ngroups;
	gid_t groups[64];
};
/* Look UID up in the password database (a uid without an entry gets its
 * number as name and / as home). */
int cow_pg_user_get(uid_t uid, struct cow_pg_user *ret);
/* Fork and exec ARGV[0] (a path) as U: if we run as root, the child drops
 * to U (groups, gid, uid) first; otherwise we must be U.  The child gets a
 * clean environment (PATH with BINDIR first, HOME, USER, LOGNAME, the
 * caller's LANG, LC_* and TZ, then EXTRA_ENV, NULL-terminated, may be NULL),
 * / as its working directory, stdin from /dev/null, stdout and stderr from
 * OUT_FD and ERR_FD (-1: /dev/null), and no other descriptor. */
int cow_pg_spawn(const struct cow_pg_user *u, const char *bindir, char *const argv[], char *const extra_env[],
		 int out_fd, int err_fd, pid_t *ret_pid);
/* cow_pg_spawn and wait: the exit status (0-255), 128+N after signal N. */
int cow_pg_run(const struct cow_pg_user *u, const char *bindir, char *const argv[], char *const extra_env[],
	       int out_fd, int err_fd);
#endif
