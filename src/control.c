#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "ref.h"
#include "util.h"

#define LINE_MAX_BYTES (64 * 1024)
#define IDLE_TIMEOUT_S 30  /* a connection silent this long is closed */
#define SEND_TIMEOUT_S 5   /* a reply the client does not take in this long is dropped */

struct cow_control {
	struct cow_fs *fs;
	cow_control_notify_fn notify;
	void *ctx;
	int listen_fd;
	int stop_pipe[2];
	pthread_t thread;
	char path[4096];
	/* gc, fsck and df run as jobs (see "Jobs" below) */
	bool inline_jobs;          /* run them in the serving thread (cow_control_serve_fd) */
	bool conn_taken;           /* the request handed the connection to a job */
	pthread_mutex_t job_lock;
	bool job_started, job_running; /* protected by job_lock */
	pthread_t job_thread;
	int cancel;                /* set (atomically) to stop a job */
};

static json_t *handle_job(struct cow_control *c, const char *cmd, json_t *req, int fd);

static json_t *ref_json(const struct cow_ref *r)
{
	char root[65];
	cow_hash_to_hex(&r->root, root);
	return json_pack("{s:s, s:o, s:I, s:I, s:s}", "name", r->name,
			 "parent", r->parent[0] ? json_string(r->parent) : json_null(), "created",
			 (json_int_t)r->created, "owner", (json_int_t)r->owner, "root", root);
}

static json_t *error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* Write one reply line; false if the peer is gone (or, with FLAGS
 * MSG_DONTWAIT, would block). */
static bool send_reply(int fd, json_t *reply, int flags)
{
	char *text = json_dumps(reply, JSON_COMPACT);
	if (!text)
		return false;
	size_t len = strlen(text);
	text[len] = '\n';
	ssize_t w = send(fd, text, len + 1, flags | MSG_NOSIGNAL);
	free(text);
	return w == (ssize_t)len + 1;
}

struct announce {
	struct cow_control *c;
	int fd;
	bool sent;
};

/* Runs while the parent is still frozen: the reply goes out before any
 * later commit on the parent can be acknowledged.  Nothing here may wait:
 * not on the client (the send does not block; if it would, the reply goes
 * after the thaw), and not on the kernel (no cache notification: a lookup
 * in the mount root may hold the root's lock while it waits for the frozen
 * branch). */
static void announce_branch(void *ctx, const struct cow_ref *ref)
{
	struct announce *a = ctx;
	json_t *reply = json_pack("{s:b, s:o}", "ok", 1, "branch", ref_json(ref));
	a->sent = send_reply(a->fd, reply, MSG_DONTWAIT);
	json_decref(reply);
}

static const char *str_field(json_t *req, const char *key)
{
	json_t *v = json_object_get(req, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The reply to REQ, or NULL if it was sent already. */
static json_t *handle(struct cow_control *c, json_t *req, uid_t uid, int fd)
{
	const char *cmd = str_field(req, "cmd");
	if (!cmd)
		return error("a request is a JSON object with a string \"cmd\"");
	if (strcmp(cmd, "gc") == 0 || strcmp(cmd, "fsck") == 0 || strcmp(cmd, "df") == 0)
		return handle_job(c, cmd, req, fd);
	if (strcmp(cmd, "branch.list") == 0) {
		struct cow_ref *v;
		size_t n;
		int r = cow_fs_branch_list(c->fs, &v, &n);
		if (r < 0)
			return error("%s", strerror(-r));
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, ref_json(&v[i]));
		free(v);
		return json_pack("{s:b, s:o}", "ok", 1, "branches", arr);
	}
	if (strcmp(cmd, "branch.create") == 0 || strcmp(cmd, "branch.delete") == 0 ||
	    strcmp(cmd, "branch.reset") == 0) {
		const char *name = str_field(req, "name");
		if (!name)
			return error("%s needs a string \"name\"", cmd);
		const char *why = cow_ref_check_name(name);
		if (why)
			return error("bad branch name '%s': %s", name, why);
		if (strcmp(cmd, "branch.create") == 0) {
			const char *from = json_object_get(req, "from") ? str_field(req, "from") : "main";
			if (!from)
				return error("\"from\" must be a string");
			struct cow_ref ref;
			struct announce a = { c, fd, false };
			int r = cow_fs_branch_create(c->fs, name, from, uid, &ref, announce_branch, &a);
			if (r == -ENOENT)
				return error("no branch '%s' to create '%s' from", from, name);
			if (r == -EEXIST)
				return error("branch '%s' exists already", name);
			if (r < 0)
				return error("cannot create branch '%s': %s", name, strerror(-r));
			cow_info("branch %s created from %s by uid %u", name, from, (unsigned)uid);
			if (c->notify)
				c->notify(c->ctx, name);
			if (a.sent)
				return NULL;
			return json_pack("{s:b, s:o}", "ok", 1, "branch", ref_json(&ref));
		}
		struct cow_ref cur;
		int r = cow_fs_branch_get(c->fs, name, &cur);
		if (r < 0)
			return error("no branch '%s'", name);
		bool reset = strcmp(cmd, "branch.reset") == 0;
		if (uid != 0 && uid != cur.owner)
			return error("branch '%s' belongs to uid %u: only its owner or root may %s it", name,
				     (unsigned)cur.owner, reset ? "reset" : "delete");
		if (reset) {
			pid_t pid = 0;
			struct cow_ref ref;
			r = cow_fs_branch_reset(c->fs, name, &pid, &ref);
			if (r == -EBUSY)
				return error("Postgres runs on branch '%s' (pid %d): stop it first", name, (int)pid);
			if (r == -ECHILD)
				return error("branch '%s' has no parent to reset to", name);
			if (r < 0)
				return error("cannot reset branch '%s': %s", name, strerror(-r));
			cow_info("branch %s reset to %s by uid %u", name, ref.parent, (unsigned)uid);
			if (c->notify)
				c->notify(c->ctx, name);
			return json_pack("{s:b, s:o}", "ok", 1, "branch", ref_json(&ref));
		}
		r = cow_fs_branch_delete(c->fs, name);
		if (r == -ENOTEMPTY)
			return error("'%s' is the store's last branch and cannot be deleted", name);
		if (r < 0)
			return error("cannot delete branch '%s': %s", name, strerror(-r));
		cow_info("branch %s deleted by uid %u", name, (unsigned)uid);
		if (c->notify)
			c->notify(c->ctx, name);
		return json_pack("{s:b}", "ok", 1);
	}
	return error("unknown command '%s'", cmd);
}

static void serve(struct cow_control *c, int fd)
{
	struct ucred cred;
	socklen_t cl = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
		return;
	/* One connection is served at a time: one that stops reading or goes
	 * quiet must not hold up the others. */
	struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	char *buf = malloc(LINE_MAX_BYTES + 1);
	size_t used = 0;
	while (buf) {
		struct pollfd p[2] = { { fd, POLLIN, 0 }, { c->stop_pipe[0], POLLIN, 0 } };
		int ready = poll(p, 2, IDLE_TIMEOUT_S * 1000);
		if ((ready < 0 && errno != EINTR) || ready == 0 || p[1].revents)
			break;
		if (ready < 0)
			continue;
		ssize_t n = read(fd, buf + used, LINE_MAX_BYTES - used);
		if (n <= 0)
			break;
		used += n;
		char *nl;
		while ((nl = memchr(buf, '\n', used))) {
			*nl = 0;
			json_error_t err;
			json_t *req = json_loads(buf, 0, &err), *reply;
			if (!req)
				reply = error("not valid JSON: %s", err.text);
			else if (!json_is_object(req))
				reply = error("a request is a JSON object");
			else
				reply = handle(c, req, cred.uid, fd);
			json_decref(req);
			bool ok = !reply || send_reply(fd, reply, 0);
			json_decref(reply);
			if (!ok || c->conn_taken)
				goto out;
			size_t rest = used - (nl + 1 - buf);
			memmove(buf, nl + 1, rest);
			used = rest;
		}
		if (used == LINE_MAX_BYTES) {
			json_t *reply = error("request longer than 64 KiB");
			send_reply(fd, reply, 0);
			json_decref(reply);
			break;
		}
	}
out:
	c->conn_taken = false;
	free(buf);
}

static void *control_thread(void *arg)
{
	struct cow_control *c = arg;
	for (;;) {
		struct pollfd p[2] = { { c->listen_fd, POLLIN, 0 }, { c->stop_pipe[0], POLLIN, 0 } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(c, fd);
		close(fd);
	}
	return NULL;
}

int cow_control_start(struct cow_fs *fs, cow_control_notify_fn notify, void *ctx, struct cow_control **ret)
{
	struct cow_control *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->fs = fs;
	c->notify = notify;
	c->ctx = ctx;
	c->stop_pipe[0] = c->stop_pipe[1] = c->listen_fd = -1;
	pthread_mutex_init(&c->job_lock, NULL);
	snprintf(c->path, sizeof c->path, "%s/control.sock", cow_fs_path(fs));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int r;
	if (strlen(c->path) >= sizeof sa.sun_path) {
		cow_err("%s: path too long for a Unix socket", c->path);
		r = -ENAMETOOLONG;
		goto fail;
	}
	strcpy(sa.sun_path, c->path);
	if (pipe2(c->stop_pipe, O_CLOEXEC) < 0 ||
	    (c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		r = -errno;
		goto fail;
	}
	unlink(c->path); /* left by a daemon that did not stop cleanly; we hold the store lock */
	if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(c->path, 0600) < 0 ||
	    listen(c->listen_fd, 16) < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = -pthread_create(&c->thread, NULL, control_thread, c)) < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	if (c->listen_fd >= 0)
		close(c->listen_fd);
	if (c->stop_pipe[0] >= 0) {
		close(c->stop_pipe[0]);
		close(c->stop_pipe[1]);
	}
	free(c);
	return r;
}

void cow_control_stop(struct cow_control *c)
{
	if (!c)
		return;
	if (write(c->stop_pipe[1], "x", 1) < 0)
		cow_warn("cannot stop the control thread: %s", strerror(errno));
	pthread_join(c->thread, NULL);
	/* a job still running stops at its next progress point */
	__atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&c->job_lock);
	bool started = c->job_started;
	c->job_started = false;
	pthread_mutex_unlock(&c->job_lock);
	if (started)
		pthread_join(c->job_thread, NULL);
	close(c->listen_fd);
	unlink(c->path);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	free(c);
}

/* ---- Jobs: gc, fsck, df ---------------------------------------------------
 * They walk the whole store and may take minutes, so each runs in a thread
 * of its own, one at a time, and the control thread goes on serving branch
 * commands.  The job takes the connection: it streams {"progress":{...}}
 * lines (at most four a second), then the final reply, and closes it.  A
 * client that goes away stops the job at its next progress point, as does
 * cow_control_stop. */

struct job {
	struct cow_control *c;
	int fd;
	char cmd[8];
	json_t *req;
	struct timespec last;
	bool gone;               /* the client stopped reading */
	json_t *problems;        /* fsck */
	size_t nproblems;
};

#define JOB_MAX_PROBLEMS 1000

static bool job_stop(struct job *j)
{
	return j->gone || __atomic_load_n(&j->c->cancel, __ATOMIC_RELAXED);
}

/* Send a progress line if the last is a quarter of a second old. */
static int job_progress(struct job *j, json_t *p)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double dt = (double)(now.tv_sec - j->last.tv_sec) + (now.tv_nsec - j->last.tv_nsec) / 1e9;
	if (dt >= 0.25 && !j->gone) {
		j->last = now;
		json_t *line = json_pack("{s:o}", "progress", p);
		j->gone = !send_reply(j->fd, line, 0);
		json_decref(line);
	} else {
		json_decref(p);
	}
	return job_stop(j);
}

static int gc_progress(void *ctx, const struct cow_gc_progress *p)
{
	return job_progress(ctx, json_pack("{s:s, s:I, s:I, s:I}", "phase", p->phase, "done", (json_int_t)p->done,
					   "total", (json_int_t)p->total, "bytes", (json_int_t)p->bytes));
}

static int fsck_progress(void *ctx, uint64_t objects, uint64_t bytes)
{
	struct job *j = ctx;
	return job_progress(j, json_pack("{s:s, s:I, s:I, s:I}", "phase", "check", "done", (json_int_t)objects,
					 "bytes", (json_int_t)bytes, "problems", (json_int_t)j->nproblems));
}

static void fsck_problem(void *ctx, const struct cow_fsck_problem *p)
{
	struct job *j = ctx;
	if (j->nproblems++ >= JOB_MAX_PROBLEMS)
		return;
	char hex[65], line[4600];
	cow_hash_to_hex(&p->hash, hex);
	json_array_append_new(j->problems,
		json_pack("{s:s, s:s, s:o, s:I, s:o, s:s, s:s, s:I, s:I, s:s, s:s}", "kind", p->kind, "ref", p->name,
			  "path", p->path ? json_string(p->path) : json_null(), "ino", (json_int_t)p->ino,
			  "block", p->block >= 0 ? json_integer(p->block) : json_null(), "object", p->object,
			  "hash", hex, "segment", (json_int_t)COW_LOG_POS_SEG(p->pos), "offset",
			  (json_int_t)COW_LOG_POS_OFF(p->pos), "problem", p->problem,
			  "message", cow_fsck_describe(p, line, sizeof line)));
}

static json_t *job_error(const char *cmd, int r)
{
	if (r == -EBUSY)
		return error("a gc, fsck or df is already running on this store; try again when it is done");
	if (r == -ECANCELED)
		return error("%s stopped before the end", cmd);
	if (r == -EIO)
		return error("%s could not follow every tree of the store (the daemon's log says which object): "
			     "nothing was removed; run cowfs fsck", cmd);
	return error("%s failed: %s", cmd, strerror(-r));
}

static json_t *run_gc(struct job *j)
{
	json_t *t = json_object_get(j->req, "threshold");
	if (t && (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 100))
		return error("\"threshold\" is a percentage from 1 to 100");
	struct cow_gc_opts o = { .threshold = t ? (unsigned)json_integer_value(t) : 0, .progress = gc_progress,
				 .ctx = j };
	struct cow_gc_stats st;
	int r = cow_fs_gc(j->c->fs, &o, &st);
	if (r < 0)
		return job_error("gc", r);
	return json_pack("{s:b, s:f, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ok", 1,
			 "seconds", st.seconds, "segments_before", (int)st.segments_before, "segments_after",
			 (int)st.segments_after, "segments_rewritten", (int)st.segments_rewritten,
			 "segments_kept_damaged", (int)st.segments_kept_damaged, "disk_bytes_before",
			 (json_int_t)st.disk_before, "disk_bytes_after", (json_int_t)st.disk_after, "live_bytes",
			 (json_int_t)st.live_bytes, "moved_bytes", (json_int_t)st.moved_bytes, "moved_objects",
			 (json_int_t)st.moved_objects, "dropped_objects", (json_int_t)st.dropped_objects,
			 "dropped_bytes", (json_int_t)st.dropped_bytes, "missing_blocks", (json_int_t)st.missing,
			 "damaged_blocks", (json_int_t)st.damaged);
}

static json_t *run_fsck(struct job *j)
{
	j->problems = json_array();
	struct cow_fsck_opts o = { .problem = fsck_problem, .progress = fsck_progress, .ctx = j };
	struct cow_fsck_stats st;
	int r = cow_fs_fsck(j->c->fs, &o, &st);
	json_t *problems = j->problems;
	j->problems = NULL;
	if (r < 0) {
		json_decref(problems);
		return job_error("fsck", r);
	}
	return json_pack("{s:b, s:b, s:I, s:o, s:i, s:I, s:I, s:f}", "ok", 1, "clean", st.problems == 0,
			 "problem_count", (json_int_t)st.problems, "problems", problems, "refs", (int)st.roots,
			 "objects", (json_int_t)st.objects, "bytes", (json_int_t)st.bytes, "seconds", st.seconds);
}

static json_t *run_df(struct job *j)
{
	struct cow_fs_usage u;
	int r = cow_fs_usage(j->c->fs, &u);
	if (r < 0)
		return job_error("df", r);
	json_t *refs = json_array();
	for (size_t i = 0; i < u.nrefs; i++)
		json_array_append_new(refs, json_pack("{s:s, s:s, s:I, s:I, s:I}", "kind",
						      cow_fs_kind_name(u.refs[i].kind), "name", u.refs[i].name,
						      "logical_bytes", (json_int_t)u.refs[i].logical_bytes,
						      "own_bytes", (json_int_t)u.refs[i].own_bytes, "shared_bytes",
						      (json_int_t)u.refs[i].shared_bytes));
	json_t *reply = json_pack("{s:b, s:o, s:{s:i, s:I, s:I, s:I, s:I}}", "ok", 1, "refs", refs, "store",
				  "segments", (int)u.segments, "disk_bytes", (json_int_t)u.disk_bytes, "log_bytes",
				  (json_int_t)u.log_bytes, "live_bytes", (json_int_t)u.live_bytes,
				  "reclaimable_bytes", (json_int_t)u.reclaimable_bytes);
	cow_fs_usage_free(&u);
	return reply;
}

static void job_run(struct job *j)
{
	json_t *reply = strcmp(j->cmd, "gc") == 0     ? run_gc(j)
			: strcmp(j->cmd, "fsck") == 0 ? run_fsck(j)
						      : run_df(j);
	if (!j->gone)
		send_reply(j->fd, reply, 0);
	json_decref(reply);
}

static void *job_thread(void *arg)
{
	struct job *j = arg;
	job_run(j);
	struct cow_control *c = j->c;
	close(j->fd);
	json_decref(j->req);
	free(j);
	pthread_mutex_lock(&c->job_lock);
	c->job_running = false;
	pthread_mutex_unlock(&c->job_lock);
	return NULL;
}

static json_t *handle_job(struct cow_control *c, const char *cmd, json_t *req, int fd)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return error("%s", strerror(ENOMEM));
	j->c = c;
	snprintf(j->cmd, sizeof j->cmd, "%s", cmd);
	clock_gettime(CLOCK_MONOTONIC, &j->last);
	j->last.tv_sec -= 1; /* the first progress line goes out at once */
	if (c->inline_jobs) {
		j->fd = fd;
		j->req = req;
		job_run(j);
		free(j);
		return NULL;
	}
	pthread_mutex_lock(&c->job_lock);
	json_t *refused = NULL;
	if (c->job_running) {
		refused = error("a gc, fsck or df is already running on this store; try again when it is done");
	} else {
		if (c->job_started)
			pthread_join(c->job_thread, NULL); /* it has finished */
		c->job_started = false;
		j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		j->req = json_incref(req);
		int e = j->fd < 0 ? errno : pthread_create(&c->job_thread, NULL, job_thread, j);
		if (e) {
			refused = error("cannot start %s: %s", cmd, strerror(e));
			if (j->fd >= 0)
				close(j->fd);
			json_decref(j->req);
		} else {
			c->job_started = c->job_running = true;
			c->conn_taken = true;
			j = NULL;
		}
	}
	pthread_mutex_unlock(&c->job_lock);
	free(j);
	return refused;
}

int cow_control_serve_fd(struct cow_fs *fs, int fd)
{
	struct cow_control c = { .fs = fs, .inline_jobs = true, .listen_fd = -1, .stop_pipe = { -1, -1 } };
	if (pipe2(c.stop_pipe, O_CLOEXEC) < 0)
		return -errno;
	pthread_mutex_init(&c.job_lock, NULL);
	serve(&c, fd);
	close(c.stop_pipe[0]);
	close(c.stop_pipe[1]);
	return 0;
}
