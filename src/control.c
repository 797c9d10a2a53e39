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
#include <unistd.h>

#include "fs.h"
#include "pgd.h"
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
	struct cow_pgd *pgd; /* Postgres on branches; set once, read with __atomic */
};

void cow_control_set_pgd(struct cow_control *c, struct cow_pgd *pgd)
{
	if (c)
		__atomic_store_n(&c->pgd, pgd, __ATOMIC_RELEASE);
}

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
	struct cow_pgd *pgd = __atomic_load_n(&c->pgd, __ATOMIC_ACQUIRE);
	if (strncmp(cmd, "pg.", 3) == 0)
		return pgd ? cow_pgd_handle(pgd, cmd, req, uid) : error("the daemon runs without its Postgres helper");
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
			cow_pgd_created(pgd, name);
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
			cow_pgd_hold(pgd, name); /* an on-demand Postgres is stopped, and restarts on the new state */
			r = cow_fs_branch_reset(c->fs, name, &pid, &ref);
			cow_pgd_release(pgd, name, false);
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
		cow_pgd_hold(pgd, name);
		r = cow_fs_branch_delete(c->fs, name);
		cow_pgd_release(pgd, name, r == 0);
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
			if (!ok)
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
	close(c->listen_fd);
	unlink(c->path);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	free(c);
}
