#include "pgd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "branch.h"
#include "fs.h"
#include "pg.h"
#include "ref.h"
#include "util.h"

#define START_TIMEOUT_S 300 /* recovery of a big child may take this long */
#define STOP_TIMEOUT_S 60   /* fast shutdown, then immediate, then SIGKILL */
#define LISTEN_RETRY_S 5    /* an on-demand port that could not be bound is tried again */

enum od_state { OD_STOPPED, OD_STARTING, OD_RUNNING, OD_STOPPING };
static const char *const state_names[] = { "stopped", "starting", "running", "stopping" };

/* One on-demand branch. */
struct od {
	char name[COW_NAME_LEN + 1];
	uint16_t port;        /* public: the branch's own */
	char sockdir[256];
	char sockpath[300];   /* SOCKDIR/.s.PGSQL.PORT */
	/* protected by pgd->lock; listeners are closed only by the acceptor */
	int lfd[3];
	int nl;
	uint32_t idle;        /* seconds */
	enum od_state state;
	pid_t pid;            /* postmaster, a child of ours, while starting/running/stopping */
	uint16_t priv_port;   /* where Postgres itself listens */
	time_t started, last; /* last: when the last connection ended */
	unsigned active;      /* relayed connections */
	unsigned holds;       /* reset/delete under way: new connections wait */
	unsigned refs;        /* the list, and every thread using it */
	bool gone;            /* no more on demand: the acceptor closes the listeners */
	time_t retry_at;      /* not listening: try again then */
	char error[256];      /* why it last failed to listen or to start */
};

struct cow_pgd {
	struct cow_fs *fs;
	char mnt[4096];
	char bindir[4096];    /* configured; "" to search */
	pthread_mutex_t lock; /* protects the list, every od's mutable fields, threads, stopping */
	pthread_cond_t cond;  /* any state change */
	struct od **ods;
	size_t nods, cap;
	unsigned threads;     /* relay and stop threads running */
	bool stopping;
	int wake[2];          /* tells the acceptor to look at the list again */
	pthread_t acceptor;
};

/* ---- helpers ------------------------------------------------------------ */

static void wake(struct cow_pgd *d)
{
	if (write(d->wake[1], "x", 1) < 0 && errno != EAGAIN)
		cow_warn("pg: cannot wake the acceptor: %s", strerror(errno));
}

static void datadir_of(struct cow_pgd *d, const char *name, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", d->mnt, name);
}

/* Owner of the branch's root directory, read from the branch itself (not
 * through the mount, which may not be served yet). */
static int branch_owner(struct cow_pgd *d, const char *name, uid_t *uid, gid_t *gid)
{
	unsigned slot;
	struct cow_branch *b = cow_fs_hold_name(d->fs, COW_REF_BRANCH, name, &slot);
	if (!b)
		return -ENOENT;
	struct cow_attr a;
	int r = cow_branch_getattr(b, COW_ROOT_INO, &a);
	cow_fs_release(d->fs, slot);
	if (r < 0)
		return r;
	*uid = a.uid;
	*gid = a.gid;
	return 0;
}

static int make_socket_dir(struct cow_pgd *d, const char *name, char *out, size_t n)
{
	uid_t uid;
	gid_t gid;
	int r = cow_pg_socket_dir(cow_fs_path(d->fs), name, out, n);
	if (r == 0)
		r = branch_owner(d, name, &uid, &gid);
	if (r == 0 && (r = cow_pg_socket_dir_make(out, uid, gid)) < 0)
		cow_err("pg: cannot make socket directory %s for branch %s: %s", out, name, strerror(-r));
	return r;
}

/* Tell other stores' daemons which ports this store's branches have. */
static void publish(struct cow_pgd *d)
{
	struct cow_ref *refs = NULL;
	size_t n = 0;
	if (cow_fs_branch_list(d->fs, &refs, &n) < 0)
		return;
	uint16_t *ports = malloc((n + 1) * sizeof *ports);
	if (ports) {
		for (size_t i = 0; i < n; i++)
			ports[i] = refs[i].port;
		int r = cow_pg_ports_publish(cow_fs_path(d->fs), ports, n);
		if (r < 0)
			cow_warn("pg: cannot publish the store's ports: %s", strerror(-r));
	}
	free(ports);
	free(refs);
}

static struct od *find_locked(struct cow_pgd *d, const char *name)
{
	for (size_t i = 0; i < d->nods; i++)
		if (!d->ods[i]->gone && strcmp(d->ods[i]->name, name) == 0)
			return d->ods[i];
	return NULL;
}

static void put_locked(struct od *o)
{
	if (--o->refs == 0)
		free(o);
}

/* ---- starting and stopping Postgres -------------------------------------- */

/* A postmaster to stop, and the branch it serves (for messages). */
struct postmaster {
	pid_t pid;
	char name[COW_NAME_LEN + 1];
};

/* Has PID exited?  Our child is reaped; another process is looked up. */
static bool exited(pid_t pid)
{
	pid_t w = waitpid(pid, NULL, WNOHANG);
	return w == pid || (w < 0 && errno == ECHILD && !cow_pg_pid_alive(pid));
}

/* Stop the postmasters P[0..N), our children or not: fast shutdown, then
 * immediate, then kill, each stage until all have exited or its time is
 * up.  The pid of each that exited becomes 0. */
static void stop_postmasters(struct postmaster *p, size_t n)
{
	static const int sigs[] = { SIGINT, SIGQUIT, SIGKILL };
	static const int secs[] = { STOP_TIMEOUT_S, 10, 10 };
	static const char *const what[] = { "a fast shutdown", "an immediate shutdown", "SIGKILL" };
	for (size_t s = 0; s < COW_ARRAY_SIZE(sigs); s++) {
		size_t left = 0;
		for (size_t i = 0; i < n; i++) {
			if (p[i].pid && exited(p[i].pid))
				p[i].pid = 0;
			if (!p[i].pid)
				continue;
			if (s > 0)
				cow_warn("pg: Postgres on branch %s (pid %d) still runs after %d s: %s", p[i].name,
					 (int)p[i].pid, secs[s - 1], what[s]);
			kill(p[i].pid, sigs[s]);
			left++;
		}
		for (int t = 0; left && t < secs[s] * 100; t++) {
			usleep(10000);
			left = 0;
			for (size_t i = 0; i < n; i++) {
				if (p[i].pid && exited(p[i].pid))
					p[i].pid = 0;
				left += p[i].pid != 0;
			}
		}
	}
}

/* Stop the postmaster PID of branch NAME, our child. */
static void stop_postgres(pid_t pid, const char *name)
{
	struct postmaster p = { .pid = pid };
	snprintf(p.name, sizeof p.name, "%s", name);
	stop_postmasters(&p, 1);
}

/* Start Postgres for O on a private port and wait until it takes
 * connections.  WHY says what went wrong. */
static int spawn_postgres(struct cow_pgd *d, struct od *o, pid_t *ret_pid, uint16_t *ret_port, char *why, size_t wn)
{
	char datadir[4200], ver[16], bindir[4096], prog[4200], logpath[320];
	uid_t uid;
	gid_t gid;
	datadir_of(d, o->name, datadir, sizeof datadir);
	int r = branch_owner(d, o->name, &uid, &gid);
	if (r < 0) {
		snprintf(why, wn, "branch '%s' is gone", o->name);
		return r;
	}
	if (uid == 0) {
		snprintf(why, wn, "%.300s belongs to root, and Postgres does not run as root", datadir);
		return -EPERM;
	}
	if ((r = cow_pg_cluster_version(datadir, ver, sizeof ver)) < 0) {
		snprintf(why, wn, "branch '%s' holds no Postgres cluster (no PG_VERSION in %.300s)", o->name, datadir);
		return r;
	}
	if ((r = cow_pg_bindir(d->bindir[0] ? d->bindir : NULL, ver, bindir, sizeof bindir)) < 0) {
		snprintf(why, wn, "no PostgreSQL %s programs found", ver);
		return r;
	}
	struct cow_pg_user u;
	cow_pg_user_get(uid, &u);
	/* a private port: none of a branch, none in use */
	struct cow_ref *refs = NULL;
	size_t nrefs = 0;
	uint16_t *others = NULL;
	size_t nothers = 0;
	if (cow_fs_branch_list(d->fs, &refs, &nrefs) < 0)
		nrefs = 0;
	cow_pg_ports_others(cow_fs_path(d->fs), &others, &nothers);
	/* and none another branch is starting on right now: reserved under the lock */
	uint16_t q;
	size_t nused = 0;
	pthread_mutex_lock(&d->lock);
	uint16_t *all = malloc((nrefs + nothers + d->nods + 1) * sizeof *all);
	if (all) {
		for (size_t i = 0; i < nrefs; i++)
			all[nused++] = refs[i].port;
		for (size_t i = 0; i < nothers; i++)
			all[nused++] = others[i];
		for (size_t i = 0; i < d->nods; i++)
			all[nused++] = d->ods[i]->priv_port;
		if ((r = cow_pg_pick_port(all, nused, &q)) == 0)
			o->priv_port = q;
		free(all);
	} else {
		r = -ENOMEM;
	}
	pthread_mutex_unlock(&d->lock);
	free(refs);
	free(others);
	if (r < 0) {
		snprintf(why, wn, "no free port for Postgres");
		return r;
	}
	snprintf(logpath, sizeof logpath, "%s/postgres.log", o->sockdir);
	int logfd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (logfd < 0 || (geteuid() == 0 && fchown(logfd, uid, gid) < 0)) {
		snprintf(why, wn, "cannot open %s: %s", logpath, strerror(errno));
		if (logfd >= 0)
			close(logfd);
		return -EIO;
	}
	off_t log_start = lseek(logfd, 0, SEEK_END);
	char a_port[32], a_sock[300];
	snprintf(prog, sizeof prog, "%s/postgres", bindir);
	snprintf(a_port, sizeof a_port, "port=%u", (unsigned)q);
	snprintf(a_sock, sizeof a_sock, "unix_socket_directories=%s", o->sockdir);
	char *argv[] = { prog, "-D", datadir, "-c", a_port, "-c", "listen_addresses=127.0.0.1", "-c", a_sock, NULL };
	pid_t pid;
	r = cow_pg_spawn(&u, bindir, argv, NULL, logfd, logfd, &pid);
	close(logfd);
	if (r < 0) {
		snprintf(why, wn, "cannot run %.300s: %s", prog, strerror(-r));
		return r;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned us = 2000;
	for (;;) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			cow_pg_log_reason(logpath, log_start, why, wn);
			return -EIO;
		}
		struct cow_pg_pid p;
		if (cow_pg_pid_read(datadir, &p) == 0 && p.pid == pid &&
		    (strcmp(p.status, "ready") == 0 || strcmp(p.status, "standby") == 0))
			break;
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > START_TIMEOUT_S) {
			stop_postgres(pid, o->name);
			snprintf(why, wn, "Postgres did not take connections within %d s (log: %s)", START_TIMEOUT_S, logpath);
			return -ETIMEDOUT;
		}
		usleep(us);
		us = COW_MIN(us * 2, 20000u);
	}
	*ret_pid = pid;
	*ret_port = q;
	return 0;
}

/* Make sure O's Postgres runs, and count one connection on it.  d->lock held. */
static int acquire_locked(struct cow_pgd *d, struct od *o, char *why, size_t wn)
{
	for (;;) {
		if (o->gone || d->stopping) {
			snprintf(why, wn, "branch '%s' is no longer served on demand", o->name);
			return -ESHUTDOWN;
		}
		if (o->holds || o->state == OD_STARTING || o->state == OD_STOPPING) {
			pthread_cond_wait(&d->cond, &d->lock);
			continue;
		}
		if (o->state == OD_RUNNING) {
			o->active++;
			return 0;
		}
		o->state = OD_STARTING;
		pthread_mutex_unlock(&d->lock);
		pid_t pid = 0;
		uint16_t q = 0;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int r = spawn_postgres(d, o, &pid, &q, why, wn);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		pthread_mutex_lock(&d->lock);
		if (r < 0) {
			o->state = OD_STOPPED;
			o->priv_port = 0;
			snprintf(o->error, sizeof o->error, "%s", why);
			pthread_cond_broadcast(&d->cond);
			cow_err("pg: cannot start Postgres on branch %s: %s", o->name, why);
			return r;
		}
		o->state = OD_RUNNING;
		o->pid = pid;
		o->priv_port = q;
		o->started = o->last = time(NULL);
		o->error[0] = 0;
		pthread_cond_broadcast(&d->cond);
		cow_info("pg: started Postgres on branch %s (pid %d) in %ld ms", o->name, (int)pid,
			 (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
	}
}

static void release_locked(struct cow_pgd *d, struct od *o)
{
	if (--o->active == 0)
		o->last = time(NULL);
	pthread_cond_broadcast(&d->cond);
}

/* O is OD_STOPPING: stop its Postgres and mark it stopped; d->lock held
 * (dropped while stopping). */
static void finish_stop_locked(struct cow_pgd *d, struct od *o)
{
	pid_t pid = o->pid;
	pthread_mutex_unlock(&d->lock);
	stop_postgres(pid, o->name);
	pthread_mutex_lock(&d->lock);
	o->state = OD_STOPPED;
	o->pid = 0;
	pthread_cond_broadcast(&d->cond);
}

/* Stop O's Postgres if it runs; d->lock held (dropped while stopping). */
static void stop_locked(struct cow_pgd *d, struct od *o)
{
	while (o->state == OD_STARTING || o->state == OD_STOPPING)
		pthread_cond_wait(&d->cond, &d->lock);
	if (o->state != OD_RUNNING)
		return;
	o->state = OD_STOPPING;
	finish_stop_locked(d, o);
	cow_info("pg: stopped Postgres on branch %s", o->name);
}

/* ---- relaying a connection ---------------------------------------------- */

struct conn {
	struct cow_pgd *d;
	struct od *o;
	int fd;
	bool is_unix;
	uid_t uid;
	gid_t gid;
};

/* A Postgres ErrorResponse, which libpq shows as the connection's error
 * (also when it came in answer to an SSLRequest). */
static void send_error(int fd, const char *msg)
{
	char buf[600];
	size_t n = 5;
	n += (size_t)snprintf(buf + n, sizeof buf - n, "SFATAL%cVFATAL%cC57P03%cMcowfs: %.400s%c%c", 0, 0, 0, msg, 0, 0);
	buf[0] = 'E';
	uint32_t len = htonl((uint32_t)(n - 1));
	memcpy(buf + 1, &len, 4);
	if (send(fd, buf, n, MSG_NOSIGNAL) < 0)
		return;
}

/* Connect to Postgres's own socket as the client's uid and gid, so that
 * Postgres's peer authentication (SO_PEERCRED, taken at connect) sees the
 * client and not the daemon.  Credentials are per thread in the kernel: the
 * raw system calls change only this thread's (glibc's wrappers would change
 * every thread's), and the saved uid 0 lets it change back. */
static int connect_backend(struct conn *c, uint16_t q)
{
	int fd;
	if (c->is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%u", c->o->sockdir, (unsigned)q) >=
		    sizeof sa.sun_path)
			return -ENAMETOOLONG;
		bool as_client = geteuid() == 0 && c->uid != 0;
		if (as_client && (syscall(SYS_setresgid, -1, c->gid, -1) < 0 || syscall(SYS_setresuid, -1, c->uid, -1) < 0)) {
			syscall(SYS_setresgid, -1, 0, -1);
			return -errno;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int r = fd < 0 ? -errno : connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
		if (as_client && (syscall(SYS_setresuid, -1, 0, -1) < 0 || syscall(SYS_setresgid, -1, 0, -1) < 0))
			abort(); /* cannot happen with a saved uid of 0; never go on as the client */
		if (r < 0) {
			if (fd >= 0)
				close(fd);
			return r;
		}
		return fd;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(q), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Copy between the client A and Postgres B until Postgres closes (a half
 * close by the client is passed on; Postgres then closes too). */
static void relay(int a, int b)
{
	char *buf = malloc(65536);
	struct pollfd p[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };
	int open_dirs = 2;
	while (buf && open_dirs > 0) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int to = i == 0 ? b : a;
			ssize_t n = recv(p[i].fd, buf, 65536, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				shutdown(to, SHUT_WR);
				p[i].fd = -1;
				open_dirs--;
				/* Postgres gone, or a reset: nothing more will come */
				if (n < 0 || i == 1)
					open_dirs = 0;
			} else if (!write_all(to, buf, (size_t)n)) {
				open_dirs = 0;
			}
		}
	}
	free(buf);
}

static void *relay_thread(void *arg)
{
	struct conn *c = arg;
	struct cow_pgd *d = c->d;
	struct od *o = c->o;
	char why[512];
	pthread_mutex_lock(&d->lock);
	int r = acquire_locked(d, o, why, sizeof why);
	uint16_t q = o->priv_port;
	pthread_mutex_unlock(&d->lock);
	if (r < 0) {
		send_error(c->fd, why);
	} else {
		int be = connect_backend(c, q);
		if (be < 0) {
			snprintf(why, sizeof why, "cannot connect to Postgres of branch '%s': %s", o->name, strerror(-be));
			send_error(c->fd, why);
		} else {
			relay(c->fd, be);
			close(be);
		}
		pthread_mutex_lock(&d->lock);
		release_locked(d, o);
		pthread_mutex_unlock(&d->lock);
	}
	close(c->fd);
	pthread_mutex_lock(&d->lock);
	put_locked(o);
	d->threads--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	free(c);
	return NULL;
}

/* ---- listening ------------------------------------------------------------ */

static int listen_tcp(int family, uint16_t port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int one = 1, r;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (family == AF_INET) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		r = bind(fd, (struct sockaddr *)&a, sizeof a);
	} else {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		r = bind(fd, (struct sockaddr *)&a, sizeof a);
	}
	if (r < 0 || listen(fd, 64) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* The Unix socket SOCKDIR/.s.PGSQL.PORT and its lock file, as Postgres
 * makes them: a Postgres started by hand on this port then finds the lock
 * file naming a live process (us) and refuses. */
static int listen_unix(struct od *o, char *why, size_t wn)
{
	char lock[320];
	snprintf(lock, sizeof lock, "%s.lock", o->sockpath);
	char *text = NULL;
	size_t len;
	if (cow_read_file(lock, 4096, &text, &len) == 0) {
		pid_t pid = (pid_t)strtol(text, NULL, 10);
		free(text);
		if (pid != getpid() && cow_pg_pid_alive(pid)) {
			snprintf(why, wn, "%.200s is in use by pid %d", o->sockpath, (int)pid);
			return -EADDRINUSE;
		}
	}
	unlink(o->sockpath);
	char body[600];
	int n = snprintf(body, sizeof body, "%d\n%s\n%lld\n%u\n%s\n", (int)getpid(), "cowfs on-demand", (long long)time(NULL),
			 (unsigned)o->port, o->sockdir);
	int lf = open(lock, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (lf < 0 || write(lf, body, (size_t)n) != n) {
		snprintf(why, wn, "cannot write %.200s: %s", lock, strerror(errno));
		if (lf >= 0)
			close(lf);
		return -EIO;
	}
	close(lf);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(o->sockpath) >= sizeof sa.sun_path) {
		snprintf(why, wn, "%s: path too long for a Unix socket", o->sockpath);
		unlink(lock);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, o->sockpath);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(o->sockpath, 0777) < 0 ||
	    listen(fd, 64) < 0) {
		int r = -errno;
		snprintf(why, wn, "cannot listen on %s: %s", o->sockpath, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(lock);
		return r;
	}
	return fd;
}

static void unlisten_files(struct od *o)
{
	char lock[320];
	snprintf(lock, sizeof lock, "%s.lock", o->sockpath);
	unlink(o->sockpath);
	unlink(lock);
}

/* Listen on O's port and socket; d->lock held. */
static int listen_locked(struct cow_pgd *d, struct od *o)
{
	char why[300] = "";
	int fds[3] = { -1, -1, -1 }, n = 0, r;
	if ((r = listen_tcp(AF_INET, o->port)) < 0) {
		snprintf(why, sizeof why, "cannot listen on 127.0.0.1 port %u: %s", (unsigned)o->port, strerror(-r));
		goto fail;
	}
	fds[n++] = r;
	if ((r = listen_tcp(AF_INET6, o->port)) >= 0)
		fds[n++] = r;
	else if (r != -EADDRNOTAVAIL && r != -EAFNOSUPPORT) {
		snprintf(why, sizeof why, "cannot listen on ::1 port %u: %s", (unsigned)o->port, strerror(-r));
		goto fail;
	}
	if ((r = listen_unix(o, why, sizeof why)) < 0)
		goto fail;
	fds[n++] = r;
	memcpy(o->lfd, fds, sizeof fds);
	o->nl = n;
	o->error[0] = 0;
	wake(d);
	return 0;
fail:
	for (int i = 0; i < n; i++)
		close(fds[i]);
	snprintf(o->error, sizeof o->error, "%s", why);
	o->retry_at = time(NULL) + LISTEN_RETRY_S;
	return r;
}

/* ---- the acceptor: connections, idle stops, crashed Postgres, retries ------- */

struct stop_arg {
	struct cow_pgd *d;
	struct od *o;
};

static void *idle_stop_thread(void *arg)
{
	struct stop_arg *s = arg;
	struct cow_pgd *d = s->d;
	struct od *o = s->o;
	free(s);
	pthread_mutex_lock(&d->lock);
	finish_stop_locked(d, o); /* the acceptor marked it stopping */
	cow_info("pg: stopped Postgres on branch %s after %u s without a connection", o->name, (unsigned)o->idle);
	put_locked(o);
	d->threads--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Run FN(ARG) on a thread of its own, which holds a reference to O; on
 * failure ARG is freed.  d->lock held. */
static int start_detached(struct cow_pgd *d, void *(*fn)(void *), void *arg, struct od *o)
{
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	o->refs++;
	d->threads++;
	int r = -pthread_create(&t, &at, fn, arg);
	if (r < 0) {
		o->refs--;
		d->threads--;
		free(arg);
		cow_err("pg: cannot start a thread for branch %s: %s", o->name, strerror(-r));
	}
	pthread_attr_destroy(&at);
	return r;
}

/* Once a second: idle Postgres is stopped, Postgres that died is noticed,
 * ports that could not be bound are tried again; d->lock held. */
static void tick_locked(struct cow_pgd *d)
{
	time_t now = time(NULL);
	for (size_t i = 0; i < d->nods; i++) {
		struct od *o = d->ods[i];
		if (o->gone)
			continue;
		if (o->state == OD_RUNNING && waitpid(o->pid, NULL, WNOHANG) == o->pid) {
			cow_warn("pg: Postgres of branch %s (pid %d) exited by itself", o->name, (int)o->pid);
			o->state = OD_STOPPED;
			o->pid = 0;
			pthread_cond_broadcast(&d->cond);
		}
		if (o->state == OD_RUNNING && !o->active && !o->holds && now - o->last >= (time_t)o->idle) {
			o->state = OD_STOPPING;
			struct stop_arg *s = malloc(sizeof *s);
			if (s) {
				*s = (struct stop_arg){ d, o };
				if (start_detached(d, idle_stop_thread, s, o) < 0)
					o->state = OD_RUNNING; /* next tick */
			} else {
				o->state = OD_RUNNING;
			}
		}
		if (o->nl == 0 && now >= o->retry_at)
			listen_locked(d, o);
	}
}

/* A branch deleted by someone else than the control socket (the expiry
 * reaper, which stops its Postgres itself) is no longer listened for.
 * d->lock held; dropped while asking the fs, whose lock a checkpoint may
 * hold for long. */
static void forget_deleted(struct cow_pgd *d)
{
	size_t n = d->nods;
	char (*names)[COW_NAME_LEN + 1] = malloc((n + 1) * sizeof *names);
	if (!names)
		return;
	for (size_t i = 0; i < n; i++)
		snprintf(names[i], sizeof names[i], "%s", d->ods[i]->name);
	pthread_mutex_unlock(&d->lock);
	bool *gone = calloc(n + 1, sizeof *gone);
	struct cow_ref ref;
	for (size_t i = 0; gone && i < n; i++)
		gone[i] = cow_fs_branch_get(d->fs, names[i], &ref) == -ENOENT;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; gone && i < n; i++) {
		struct od *o = gone[i] ? find_locked(d, names[i]) : NULL;
		if (o && !o->holds && (o->state == OD_STOPPED || o->state == OD_RUNNING)) {
			cow_info("pg: branch %s is gone: no longer listening on port %u", o->name, (unsigned)o->port);
			o->gone = true;
			if (o->state == OD_RUNNING) { /* stopped by whoever deleted it, or now */
				struct stop_arg *sa = malloc(sizeof *sa);
				o->state = OD_STOPPING;
				if (sa) {
					*sa = (struct stop_arg){ d, o };
					if (start_detached(d, idle_stop_thread, sa, o) < 0)
						o->state = OD_RUNNING;
				} else {
					o->state = OD_RUNNING;
				}
			}
		}
	}
	free(gone);
	free(names);
}

static void *acceptor(void *arg)
{
	struct cow_pgd *d = arg;
	struct pollfd *p = NULL;
	struct od **owner = NULL;
	size_t cap = 0;
	time_t last_tick = 0;
	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		/* listeners of branches no longer on demand are closed here, and
		 * only here, so that no descriptor is closed under a poll */
		for (size_t i = 0; i < d->nods;) {
			struct od *o = d->ods[i];
			if (o->gone && o->state == OD_STOPPED && !o->holds) {
				for (int k = 0; k < o->nl; k++)
					close(o->lfd[k]);
				if (o->nl)
					unlisten_files(o);
				o->nl = 0;
				d->ods[i] = d->ods[--d->nods];
				put_locked(o);
				pthread_cond_broadcast(&d->cond);
			} else {
				i++;
			}
		}
		size_t n = 1;
		for (size_t i = 0; i < d->nods; i++)
			n += (size_t)d->ods[i]->nl;
		if (n > cap) {
			cap = n * 2;
			p = realloc(p, cap * sizeof *p);
			owner = realloc(owner, cap * sizeof *owner);
			if (!p || !owner)
				break;
		}
		p[0] = (struct pollfd){ d->wake[0], POLLIN, 0 };
		size_t k = 1;
		for (size_t i = 0; i < d->nods; i++)
			for (int j = 0; j < d->ods[i]->nl; j++) {
				owner[k] = d->ods[i];
				p[k++] = (struct pollfd){ d->ods[i]->lfd[j], POLLIN, 0 };
			}
		pthread_mutex_unlock(&d->lock);
		int ready = poll(p, k, 1000);
		pthread_mutex_lock(&d->lock);
		if (ready > 0 && (p[0].revents & POLLIN)) {
			char buf[64];
			while (read(d->wake[0], buf, sizeof buf) > 0)
				;
		}
		for (size_t i = 1; ready > 0 && i < k && !d->stopping; i++) {
			if (!(p[i].revents & POLLIN) || owner[i]->gone)
				continue;
			int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			struct conn *c = calloc(1, sizeof *c);
			if (!c) {
				close(fd);
				continue;
			}
			*c = (struct conn){ d, owner[i], fd, false, 0, 0 };
			struct sockaddr_storage ss;
			socklen_t sl = sizeof ss;
			if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX) {
				struct ucred cred;
				socklen_t cl = sizeof cred;
				c->is_unix = true;
				if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
					c->uid = cred.uid;
					c->gid = cred.gid;
				}
			}
			if (start_detached(d, relay_thread, c, owner[i]) < 0)
				close(fd);
		}
		time_t now = time(NULL);
		if (now != last_tick) {
			last_tick = now;
			tick_locked(d);
			forget_deleted(d);
		}
	}
	/* stopping: close every listener */
	for (size_t i = 0; i < d->nods; i++) {
		struct od *o = d->ods[i];
		for (int j = 0; j < o->nl; j++)
			close(o->lfd[j]);
		if (o->nl)
			unlisten_files(o);
		o->nl = 0;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	free(p);
	free(owner);
	return NULL;
}

/* A new on-demand entry for REF (not yet in the list). */
static struct od *od_new(struct cow_pgd *d, const struct cow_ref *ref)
{
	struct od *o = calloc(1, sizeof *o);
	if (!o)
		return NULL;
	snprintf(o->name, sizeof o->name, "%s", ref->name);
	o->port = ref->port;
	o->idle = ref->idle_timeout ? ref->idle_timeout : COW_PG_IDLE_DEFAULT;
	o->refs = 1;
	o->lfd[0] = o->lfd[1] = o->lfd[2] = -1;
	if (make_socket_dir(d, ref->name, o->sockdir, sizeof o->sockdir) < 0) {
		free(o);
		return NULL;
	}
	snprintf(o->sockpath, sizeof o->sockpath, "%s/.s.PGSQL.%u", o->sockdir, (unsigned)o->port);
	return o;
}

static int add_locked(struct cow_pgd *d, struct od *o)
{
	if (d->nods == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct od **v = realloc(d->ods, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		d->ods = v;
		d->cap = cap;
	}
	d->ods[d->nods++] = o;
	wake(d);
	return 0;
}

/* ---- start / stop ------------------------------------------------------------ */

int cow_pgd_start(struct cow_fs *fs, const char *mountpoint, const char *bindir, struct cow_pgd **ret)
{
	struct cow_pgd *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->fs = fs;
	snprintf(d->mnt, sizeof d->mnt, "%s", mountpoint);
	snprintf(d->bindir, sizeof d->bindir, "%s", bindir ? bindir : "");
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	if (pipe2(d->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(d);
		return -errno;
	}
	/* every branch's socket directory (after a reboot /run is empty), so
	 * that a hand-typed pg_ctl finds it; on-demand branches listen */
	struct cow_ref *refs = NULL;
	size_t n = 0;
	int r = cow_fs_branch_list(fs, &refs, &n);
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; r == 0 && i < n; i++) {
		char dir[512];
		if (!refs[i].port)
			continue;
		if (!refs[i].on_demand) {
			make_socket_dir(d, refs[i].name, dir, sizeof dir);
			continue;
		}
		struct od *o = od_new(d, &refs[i]);
		if (!o || add_locked(d, o) < 0) {
			free(o);
			continue;
		}
		if (listen_locked(d, o) < 0)
			cow_err("pg: branch %s is on demand, but %s; trying again every %d s", o->name, o->error, LISTEN_RETRY_S);
	}
	pthread_mutex_unlock(&d->lock);
	free(refs);
	publish(d);
	if ((r = -pthread_create(&d->acceptor, NULL, acceptor, d)) < 0) {
		close(d->wake[0]);
		close(d->wake[1]);
		for (size_t i = 0; i < d->nods; i++)
			free(d->ods[i]);
		free(d->ods);
		free(d);
		return r;
	}
	*ret = d;
	return 0;
}

static bool started_by_us(struct cow_pgd *d, pid_t pid)
{
	bool ours = false;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->nods; i++)
		ours |= d->ods[i]->pid == pid;
	pthread_mutex_unlock(&d->lock);
	return ours;
}

/* The Postgres servers started by hand (cowfs pg start, pg_ctl, a
 * cowfs-pg@ unit) on the mount's branches: a branch's postmaster.pid (read
 * through the mount, which the caller serves) names a live process whose
 * working directory is that branch (so not a pid reused since a crash).
 * malloc'd, *RET_N of them. */
static struct postmaster *find_by_hand(struct cow_pgd *d, size_t *ret_n)
{
	*ret_n = 0;
	struct cow_ref *refs = NULL;
	size_t n = 0;
	char mnt[PATH_MAX];
	struct postmaster *h = NULL;
	if (cow_fs_branch_list(d->fs, &refs, &n) < 0 || n == 0 || !realpath(d->mnt, mnt) ||
	    !(h = calloc(n, sizeof *h))) {
		free(refs);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		char datadir[PATH_MAX + COW_NAME_LEN + 2], cwd[sizeof datadir], link[64];
		snprintf(datadir, sizeof datadir, "%s/%s", mnt, refs[i].name);
		pid_t pid = cow_pg_running(datadir);
		if (!pid || started_by_us(d, pid))
			continue;
		snprintf(link, sizeof link, "/proc/%d/cwd", (int)pid);
		ssize_t k = readlink(link, cwd, sizeof cwd - 1);
		if (k < 0 || (cwd[k] = 0, strcmp(cwd, datadir) != 0))
			continue;
		h[*ret_n].pid = pid;
		snprintf(h[*ret_n].name, sizeof h[*ret_n].name, "%s", refs[i].name);
		++*ret_n;
	}
	free(refs);
	return h;
}

static void noop_handler(int sig) { (void)sig; }

static void *serve_thread(void *arg)
{
	fuse_session_loop(arg);
	return NULL;
}

void cow_pgd_stop(struct cow_pgd *d, struct fuse_session *se)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_cond_broadcast(&d->cond);
	wake(d);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->acceptor, NULL);
	/* The loop ended on a signal, with the mount still there: Postgres may
	 * run on it, started on demand or by hand.  Its shutdown writes to the
	 * mount, and finding it reads postmaster.pid files, so serve the mount
	 * meanwhile, on one thread, which a signal without SA_RESTART then gets
	 * out of its read. */
	pthread_t server;
	bool serving = false;
	struct postmaster *hand = NULL;
	size_t nhand = 0;
	if (se) {
		struct sigaction sa = { .sa_handler = noop_handler };
		sigaction(SIGUSR1, &sa, NULL);
		fuse_session_reset(se);
		serving = pthread_create(&server, NULL, serve_thread, se) == 0;
	}
	if (serving)
		hand = find_by_hand(d, &nhand);
	for (size_t i = 0; i < nhand; i++) {
		cow_info("pg: stopping Postgres on branch %s (pid %d, started by hand) before exiting", hand[i].name,
			 (int)hand[i].pid);
		kill(hand[i].pid, SIGINT); /* a fast shutdown, alongside those started on demand */
	}
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->nods; i++)
		if (serving && d->ods[i]->state != OD_STOPPED)
			cow_info("pg: stopping Postgres on branch %s (started on demand) before exiting", d->ods[i]->name);
	for (size_t i = 0; i < d->nods; i++)
		stop_locked(d, d->ods[i]);
	pthread_mutex_unlock(&d->lock);
	stop_postmasters(hand, nhand);
	for (size_t i = 0; i < nhand; i++)
		if (hand[i].pid)
			cow_err("pg: Postgres on branch %s (pid %d) survived SIGKILL", hand[i].name, (int)hand[i].pid);
		else
			cow_info("pg: stopped Postgres on branch %s", hand[i].name);
	free(hand);
	pthread_mutex_lock(&d->lock);
	/* relays end when Postgres closes; one stuck on a client that reads
	 * nothing is left behind after a while (the process is ending) */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	while (d->threads && pthread_cond_timedwait(&d->cond, &d->lock, &until) != ETIMEDOUT)
		;
	bool stuck = d->threads > 0;
	pthread_mutex_unlock(&d->lock);
	if (stuck)
		cow_warn("pg: %u relay threads still blocked on their clients at exit", d->threads);
	if (serving) {
		/* a signal that lands between two reads is lost: repeat it */
		fuse_session_exit(se);
		for (;;) {
			pthread_kill(server, SIGUSR1);
			struct timespec t;
			clock_gettime(CLOCK_REALTIME, &t);
			t.tv_nsec += 100000000;
			if (t.tv_nsec >= 1000000000) {
				t.tv_sec++;
				t.tv_nsec -= 1000000000;
			}
			if (pthread_timedjoin_np(server, NULL, &t) == 0)
				break;
		}
	}
	if (stuck) /* their threads still use them, and d */
		return;
	for (size_t i = 0; i < d->nods; i++)
		free(d->ods[i]);
	free(d->ods);
	/* socket directories that hold nothing (no Postgres log) go; the next
	 * mount makes them again, and publishes the ports again */
	cow_pg_ports_unpublish(cow_fs_path(d->fs));
	struct cow_ref *refs = NULL;
	size_t n = 0;
	char dir[512];
	if (cow_fs_branch_list(d->fs, &refs, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (refs[i].port && cow_pg_socket_dir(cow_fs_path(d->fs), refs[i].name, dir, sizeof dir) == 0)
				rmdir(dir);
	free(refs);
	if (cow_pg_run_dir(cow_fs_path(d->fs), dir, sizeof dir) == 0)
		rmdir(dir);
	close(d->wake[0]);
	close(d->wake[1]);
	free(d);
}

/* ---- hooks for branch changes --------------------------------------------------- */

void cow_pgd_created(struct cow_pgd *d, const char *name)
{
	struct cow_ref ref;
	char dir[512];
	if (!d || cow_fs_branch_get(d->fs, name, &ref) < 0 || !ref.port)
		return;
	make_socket_dir(d, name, dir, sizeof dir);
	publish(d);
	/* an undeleted branch that was on demand is listened for again */
	pthread_mutex_lock(&d->lock);
	struct od *o = ref.on_demand && !find_locked(d, name) ? od_new(d, &ref) : NULL;
	if (o && add_locked(d, o) < 0) {
		free(o);
		o = NULL;
	}
	if (o && listen_locked(d, o) < 0)
		cow_err("pg: branch %s is on demand, but %s; trying again every %d s", o->name, o->error, LISTEN_RETRY_S);
	pthread_mutex_unlock(&d->lock);
}

void cow_pgd_hold(struct cow_pgd *d, const char *name)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	struct od *o = find_locked(d, name);
	if (o) {
		o->holds++;
		o->refs++;
		stop_locked(d, o);
	}
	pthread_mutex_unlock(&d->lock);
}

/* Remove O from service and wait until the acceptor closed its listeners;
 * d->lock held. */
static void retire_locked(struct cow_pgd *d, struct od *o)
{
	o->gone = true;
	stop_locked(d, o);
	o->refs++;
	wake(d);
	while (o->nl > 0 && !d->stopping) {
		pthread_cond_broadcast(&d->cond);
		pthread_cond_wait(&d->cond, &d->lock);
		wake(d);
	}
	put_locked(o);
}

void cow_pgd_release(struct cow_pgd *d, const char *name, bool gone)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	struct od *o = NULL;
	for (size_t i = 0; i < d->nods && !o; i++)
		if (strcmp(d->ods[i]->name, name) == 0 && d->ods[i]->holds)
			o = d->ods[i];
	if (o) {
		o->holds--;
		pthread_cond_broadcast(&d->cond);
		if (gone)
			retire_locked(d, o);
		put_locked(o);
	}
	pthread_mutex_unlock(&d->lock);
	if (gone) {
		publish(d);
		/* the socket directory goes with the branch (its Postgres log too) */
		char dir[512], f[600];
		if (cow_pg_socket_dir(cow_fs_path(d->fs), name, dir, sizeof dir) == 0) {
			snprintf(f, sizeof f, "%s/postgres.log", dir);
			unlink(f);
			rmdir(dir);
		}
	}
}

/* ---- control commands -------------------------------------------------------------- */

static json_t *error(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *error(const char *code, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *j = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	if (code)
		json_object_set_new(j, "code", json_string(code));
	return j;
}

/* What a client needs to know about REF's Postgres. */
static json_t *info(struct cow_pgd *d, const struct cow_ref *ref)
{
	char datadir[4200], sockdir[512] = "";
	uid_t uid = 0;
	gid_t gid = 0;
	datadir_of(d, ref->name, datadir, sizeof datadir);
	if (ref->port)
		cow_pg_socket_dir(cow_fs_path(d->fs), ref->name, sockdir, sizeof sockdir);
	branch_owner(d, ref->name, &uid, &gid);
	json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:b, s:I}", "name", ref->name, "port", (int)ref->port,
			      "socket_dir", sockdir, "data_dir", datadir, "owner", (json_int_t)uid, "ref_owner",
			      (json_int_t)ref->owner, "on_demand", (int)ref->on_demand, "idle_timeout",
			      (json_int_t)(ref->idle_timeout ? ref->idle_timeout : COW_PG_IDLE_DEFAULT));
	char ver[16];
	json_object_set_new(j, "cluster", json_boolean(cow_pg_cluster_version(datadir, ver, sizeof ver) == 0));
	struct cow_pg_pid p;
	bool running = cow_pg_pid_read(datadir, &p) == 0 && cow_pg_pid_alive(p.pid);
	pthread_mutex_lock(&d->lock);
	struct od *o = ref->on_demand ? find_locked(d, ref->name) : NULL;
	if (o) {
		json_object_set_new(j, "state", json_string(state_names[o->state]));
		json_object_set_new(j, "listening", json_boolean(o->nl > 0));
		json_object_set_new(j, "connections", json_integer(o->active));
		if (o->error[0])
			json_object_set_new(j, "error", json_string(o->error));
		if (o->pid) {
			json_object_set_new(j, "pid", json_integer(o->pid));
			json_object_set_new(j, "started", json_integer(o->started));
		}
		running = false; /* described by the above */
	}
	pthread_mutex_unlock(&d->lock);
	if (!o) {
		json_object_set_new(j, "state", json_string(running ? "running" : "stopped"));
		if (running) {
			json_object_set_new(j, "pid", json_integer(p.pid));
			json_object_set_new(j, "started", json_integer(p.started));
			json_object_set_new(j, "running_port", json_integer(p.port));
		}
	}
	return j;
}

static bool may_manage(struct cow_pgd *d, const struct cow_ref *ref, uid_t uid)
{
	uid_t owner;
	gid_t gid;
	return uid == 0 || uid == ref->owner || (branch_owner(d, ref->name, &owner, &gid) == 0 && owner == uid);
}

struct pg_set {
	bool on;
	uint32_t idle;
};

static int set_ondemand(void *ctx, struct cow_ref *ref)
{
	const struct pg_set *p = ctx;
	ref->on_demand = p->on;
	ref->idle_timeout = p->idle;
	return 0;
}

static json_t *do_ondemand(struct cow_pgd *d, struct cow_ref *ref, bool on, uint32_t idle)
{
	char datadir[4200];
	datadir_of(d, ref->name, datadir, sizeof datadir);
	pthread_mutex_lock(&d->lock);
	struct od *o = find_locked(d, ref->name);
	if (on && o) { /* already: a new idle time only */
		o->idle = idle ? idle : COW_PG_IDLE_DEFAULT;
		pthread_mutex_unlock(&d->lock);
	} else if (on) {
		pthread_mutex_unlock(&d->lock);
		pid_t pid = cow_pg_running(datadir);
		if (pid)
			return error(NULL, "Postgres runs on branch '%s' (pid %d), started by hand: stop it first", ref->name,
				     (int)pid);
		struct cow_ref tmp = *ref;
		tmp.idle_timeout = idle;
		if (!(o = od_new(d, &tmp)))
			return error(NULL, "cannot make the socket directory of branch '%s'", ref->name);
		pthread_mutex_lock(&d->lock);
		if (listen_locked(d, o) < 0) {
			json_t *e = error(NULL, "branch '%s': %s", ref->name, o->error);
			pthread_mutex_unlock(&d->lock);
			free(o);
			return e;
		}
		if (add_locked(d, o) < 0) {
			for (int i = 0; i < o->nl; i++)
				close(o->lfd[i]);
			unlisten_files(o);
			pthread_mutex_unlock(&d->lock);
			free(o);
			return error(NULL, "out of memory");
		}
		pthread_mutex_unlock(&d->lock);
	} else {
		if (o)
			retire_locked(d, o);
		pthread_mutex_unlock(&d->lock);
	}
	struct cow_ref out;
	struct pg_set set = { on, idle };
	int r = cow_fs_branch_update(d->fs, ref->name, set_ondemand, &set, &out);
	if (r < 0)
		return error(NULL, "cannot update the ref of branch '%s': %s", ref->name, strerror(-r));
	cow_info("pg: branch %s on demand %s (idle %u s)", ref->name, on ? "on" : "off",
		 idle ? idle : COW_PG_IDLE_DEFAULT);
	return json_pack("{s:b, s:o}", "ok", 1, "pg", info(d, &out));
}

json_t *cow_pgd_handle(struct cow_pgd *d, const char *cmd, json_t *req, uid_t uid)
{
	if (strcmp(cmd, "pg.list") == 0) {
		struct cow_ref *v;
		size_t n;
		int r = cow_fs_branch_list(d->fs, &v, &n);
		if (r < 0)
			return error(NULL, "%s", strerror(-r));
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, info(d, &v[i]));
		free(v);
		return json_pack("{s:b, s:o}", "ok", 1, "branches", arr);
	}
	json_t *jn = json_object_get(req, "name");
	const char *name = json_is_string(jn) ? json_string_value(jn) : NULL;
	if (!name)
		return error(NULL, "%s needs a string \"name\"", cmd);
	const char *why = cow_ref_check_name(name);
	if (why)
		return error(NULL, "bad branch name '%s': %s", name, why);
	struct cow_ref ref;
	if (cow_fs_branch_get(d->fs, name, &ref) < 0)
		return error("no_branch", "no branch '%s'", name);
	if (strcmp(cmd, "pg.info") == 0) {
		/* the first Postgres command on a branch gives it its port */
		if (json_is_false(json_object_get(req, "assign")))
			return json_pack("{s:b, s:o}", "ok", 1, "pg", info(d, &ref));
		int r = cow_fs_branch_pg_port(d->fs, name, &ref);
		if (r == -EADDRINUSE)
			return error(NULL, "no free port for branch '%s' in %d-%d", name, COW_PG_PORT_MIN, COW_PG_PORT_MAX);
		if (r < 0)
			return error(NULL, "cannot give branch '%s' a port: %s", name, strerror(-r));
		char dir[512];
		make_socket_dir(d, name, dir, sizeof dir);
		publish(d);
		return json_pack("{s:b, s:o}", "ok", 1, "pg", info(d, &ref));
	}
	if (!may_manage(d, &ref, uid))
		return error("not_owner", "branch '%s' belongs to uid %u: only its owner or root may manage its Postgres",
			     name, (unsigned)ref.owner);
	if (strcmp(cmd, "pg.ondemand") == 0) {
		json_t *jon = json_object_get(req, "on"), *jidle = json_object_get(req, "idle");
		if (!json_is_boolean(jon) || (jidle && (!json_is_integer(jidle) || json_integer_value(jidle) < 0 ||
							json_integer_value(jidle) > 7 * 86400)))
			return error(NULL, "pg.ondemand needs a boolean \"on\" and optionally \"idle\", seconds (at most a week)");
		if (!ref.port) {
			if (cow_fs_branch_pg_port(d->fs, name, &ref) < 0)
				return error(NULL, "no free port for branch '%s'", name);
			publish(d);
		}
		uint32_t idle = jidle ? (uint32_t)json_integer_value(jidle) : ref.idle_timeout;
		return do_ondemand(d, &ref, json_is_true(jon), idle);
	}
	if (strcmp(cmd, "pg.start") == 0 || strcmp(cmd, "pg.stop") == 0) {
		bool start = strcmp(cmd, "pg.start") == 0;
		pthread_mutex_lock(&d->lock);
		struct od *o = ref.on_demand ? find_locked(d, name) : NULL;
		if (!o) {
			pthread_mutex_unlock(&d->lock);
			return error("not_on_demand", "branch '%s' is not on demand: 'cowfs pg %s' runs pg_ctl itself", name,
				     start ? "start" : "stop");
		}
		char msg[512];
		int r = 0;
		bool was = o->state == OD_RUNNING;
		if (start) {
			if ((r = acquire_locked(d, o, msg, sizeof msg)) == 0)
				release_locked(d, o); /* the idle time counts from now */
		} else if (was || o->state != OD_STOPPED) {
			o->refs++;
			stop_locked(d, o);
			put_locked(o);
		}
		pthread_mutex_unlock(&d->lock);
		if (r < 0)
			return error(NULL, "cannot start Postgres on branch '%s': %s", name, msg);
		if (!start && !was)
			return error("not_running", "Postgres is not running on branch '%s'", name);
		json_t *reply = json_pack("{s:b, s:o}", "ok", 1, "pg", info(d, &ref));
		json_object_set_new(reply, "was_running", json_boolean(was));
		return reply;
	}
	return error(NULL, "unknown command '%s'", cmd);
}
