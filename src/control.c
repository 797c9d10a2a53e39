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

#include "diff.h"
#include "fs.h"
#include "log.h"
#include "pgd.h"
#include "ref.h"
#include "store.h"
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
	/* gc, fsck and df run as jobs (see "Jobs" below) */
	bool inline_jobs;          /* run them in the serving thread (cow_control_serve_fd) */
	bool conn_taken;           /* the request handed the connection to a job */
	pthread_mutex_t job_lock;
	bool job_started, job_running; /* protected by job_lock */
	pthread_t job_thread;
	int cancel;                /* set (atomically) to stop a job */
};

static json_t *handle_job(struct cow_control *c, const char *cmd, json_t *req, int fd);

void cow_control_set_pgd(struct cow_control *c, struct cow_pgd *pgd)
{
	if (c)
		__atomic_store_n(&c->pgd, pgd, __ATOMIC_RELEASE);
}

static struct cow_pgd *pgd_of(struct cow_control *c) { return __atomic_load_n(&c->pgd, __ATOMIC_ACQUIRE); }

static json_t *ref_json(const struct cow_ref *r)
{
	char root[65];
	cow_hash_to_hex(&r->root, root);
	json_t *j = json_pack("{s:s, s:o, s:I, s:I, s:s, s:o, s:b}", "name", r->name, "parent",
			      r->parent[0] ? json_string(r->parent) : json_null(), "created", (json_int_t)r->created,
			      "owner", (json_int_t)r->owner, "root", root, "expires",
			      r->expires ? json_integer(r->expires) : json_null(), "protected", (int)r->protected);
	if (j && r->deleted)
		json_object_set_new(j, "deleted", json_integer(r->deleted));
	if (j && (r->port || r->on_demand || r->idle_timeout))
		json_object_set_new(j, "postgres",
				    json_pack("{s:i, s:b, s:I}", "port", (int)r->port, "on_demand", (int)r->on_demand,
					      "idle_timeout", (json_int_t)r->idle_timeout));
	return j;
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

static const char *str_field(json_t *req, const char *key)
{
	json_t *v = json_object_get(req, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* One request being served. */
struct req {
	struct cow_control *c;
	json_t *j;
	uid_t uid;
	int fd;
	bool sent;       /* the reply went out already (announce) */
};

/* Runs while the parent is still frozen: the reply goes out before any
 * later commit on the parent can be acknowledged.  Nothing here may wait:
 * not on the client (the send does not block; if it would, the reply goes
 * after the thaw), and not on the kernel (no cache notification: a lookup
 * in the mount root may hold the root's lock while it waits for the frozen
 * branch). */
static void announce(void *ctx, const struct cow_ref *ref)
{
	struct req *q = ctx;
	const char *key = strcmp(str_field(q->j, "cmd"), "snapshot.create") == 0 ? "snapshot" : "branch";
	json_t *reply = json_pack("{s:b, s:o}", "ok", 1, key, ref_json(ref));
	q->sent = send_reply(q->fd, reply, MSG_DONTWAIT);
	json_decref(reply);
}

static void tell_fuse(struct req *q, bool snapshot, const char *name)
{
	if (q->c->notify)
		q->c->notify(q->c->ctx, snapshot, name);
}

static json_t *ok_ref(const char *key, const struct cow_ref *ref)
{
	return json_pack("{s:b, s:o}", "ok", 1, key, ref_json(ref));
}

static json_t *ref_list(const char *key, int (*list)(struct cow_fs *, struct cow_ref **, size_t *), struct cow_fs *fs)
{
	struct cow_ref *v;
	size_t n;
	int r = list(fs, &v, &n);
	if (r < 0)
		return error("%s", strerror(-r));
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, ref_json(&v[i]));
	free(v);
	return json_pack("{s:b, s:o}", "ok", 1, key, arr);
}

/* The name in field KEY, checked; NULL after setting *ERR. */
static const char *name_field(struct req *q, const char *key, const char *what, json_t **err)
{
	const char *name = str_field(q->j, key);
	if (!name) {
		*err = error("%s needs a string \"%s\"", str_field(q->j, "cmd"), key);
		return NULL;
	}
	const char *why = cow_ref_check_name(name);
	if (why) {
		*err = error("bad %s name '%s': %s", what, name, why);
		return NULL;
	}
	return name;
}

/* Optional members "expires" (integer unix time, or null/0 for none) and
 * "protected" (boolean): into REF; false after setting *ERR. */
static bool settings(struct req *q, struct cow_ref *ref, bool *has_expires, bool *has_protected, json_t **err)
{
	json_t *e = json_object_get(q->j, "expires"), *p = json_object_get(q->j, "protected");
	if (e && !json_is_null(e) && (!json_is_integer(e) || json_integer_value(e) < 0)) {
		*err = error("\"expires\" is a unix time in seconds, or null for none");
		return false;
	}
	if (p && !json_is_boolean(p)) {
		*err = error("\"protected\" is true or false");
		return false;
	}
	if (e)
		ref->expires = json_is_integer(e) ? json_integer_value(e) : 0;
	if (p)
		ref->protected = json_is_true(p);
	if (has_expires)
		*has_expires = e;
	if (has_protected)
		*has_protected = p;
	return true;
}

/* Only the owner of what is changed, or root, may change it. */
static json_t *not_owner(struct req *q, const char *what, const struct cow_ref *ref, const char *verb)
{
	if (q->uid == 0 || q->uid == ref->owner)
		return NULL;
	return error("%s '%s' belongs to uid %u: only its owner or root may %s it", what, ref->name,
		     (unsigned)ref->owner, verb);
}

static json_t *h_branch_list(struct req *q) { return ref_list("branches", cow_fs_branch_list, q->c->fs); }
static json_t *h_branch_trash(struct req *q) { return ref_list("branches", cow_fs_trash_list, q->c->fs); }
static json_t *h_snapshot_list(struct req *q) { return ref_list("snapshots", cow_fs_snapshot_list, q->c->fs); }

static json_t *h_branch_create(struct req *q)
{
	json_t *err = NULL;
	const char *name = name_field(q, "name", "branch", &err);
	if (!name)
		return err;
	json_t *from = json_object_get(q->j, "from"), *snap = json_object_get(q->j, "snapshot");
	if ((from && !json_is_string(from)) || (snap && !json_is_string(snap)))
		return error("\"from\" and \"snapshot\" must be strings");
	if (from && snap)
		return error("a branch is created from a branch or from a snapshot, not both");
	struct cow_ref ref = { .owner = q->uid };
	snprintf(ref.name, sizeof ref.name, "%s", name);
	if (!settings(q, &ref, NULL, NULL, &err))
		return err;
	int r;
	const char *src = snap ? json_string_value(snap) : from ? json_string_value(from) : "main";
	if (snap) {
		r = cow_fs_branch_create_from_snapshot(q->c->fs, src, &ref);
	} else {
		snprintf(ref.parent, sizeof ref.parent, "%s", src);
		r = cow_fs_branch_create(q->c->fs, &ref, announce, q);
	}
	if (r == -ENOENT)
		return error("no %s '%s' to create '%s' from", snap ? "snapshot" : "branch", src, name);
	if (r == -EEXIST)
		return error("branch '%s' exists already", name);
	if (r == -ENOSPC)
		return error("too many branches and snapshots made since the mount: remount the store");
	if (r < 0)
		return error("cannot create branch '%s': %s", name, strerror(-r));
	cow_info("branch %s created from %s%s by uid %u", name, snap ? "snapshot " : "", src, (unsigned)q->uid);
	tell_fuse(q, false, name);
	cow_pgd_created(pgd_of(q->c), name);
	return q->sent ? NULL : ok_ref("branch", &ref);
}

/* The live branch named in "name", owned by the caller; NULL after *ERR. */
static const char *own_branch(struct req *q, const char *verb, struct cow_ref *cur, json_t **err)
{
	const char *name = name_field(q, "name", "branch", err);
	if (!name)
		return NULL;
	if (cow_fs_branch_get(q->c->fs, name, cur) < 0) {
		*err = error("no branch '%s'", name);
		return NULL;
	}
	if ((*err = not_owner(q, "branch", cur, verb)))
		return NULL;
	return name;
}

static json_t *repoint_error(const char *verb, const char *name, int r, pid_t pid)
{
	if (r == -EBUSY)
		return error("Postgres runs on branch '%s' (pid %d): stop it first (cowfs pg stop %s)", name, (int)pid,
			     name);
	if (r == -EPERM)
		return error("branch '%s' is protected: 'cowfs branch set %s --unprotected' first", name, name);
	if (r == -ENOSPC)
		return error("too many branches and snapshots made since the mount: remount the store");
	return error("cannot %s branch '%s': %s", verb, name, strerror(-r));
}

static json_t *h_branch_reset(struct req *q)
{
	struct cow_ref cur, ref;
	json_t *err = NULL;
	const char *name = own_branch(q, "reset", &cur, &err);
	if (!name)
		return err;
	pid_t pid = 0;
	cow_pgd_hold(pgd_of(q->c), name); /* an on-demand Postgres stops, and restarts on the new state */
	int r = cow_fs_branch_reset(q->c->fs, name, &pid, &ref);
	cow_pgd_release(pgd_of(q->c), name, false);
	if (r == -ECHILD)
		return error("branch '%s' has no parent to reset to", name);
	if (r < 0)
		return repoint_error("reset", name, r, pid);
	cow_info("branch %s reset to %s by uid %u", name, ref.parent, (unsigned)q->uid);
	tell_fuse(q, false, name);
	return ok_ref("branch", &ref);
}

static json_t *h_branch_restore(struct req *q)
{
	struct cow_ref cur, ref;
	json_t *err = NULL;
	const char *name = own_branch(q, "restore", &cur, &err);
	if (!name)
		return err;
	const char *snap = name_field(q, "snapshot", "snapshot", &err);
	if (!snap)
		return err;
	pid_t pid = 0;
	cow_pgd_hold(pgd_of(q->c), name);
	int r = cow_fs_branch_restore(q->c->fs, name, snap, &pid, &ref);
	cow_pgd_release(pgd_of(q->c), name, false);
	if (r == -ESRCH)
		return error("no snapshot '%s'", snap);
	if (r < 0)
		return repoint_error("restore", name, r, pid);
	cow_info("branch %s restored to snapshot %s by uid %u", name, snap, (unsigned)q->uid);
	tell_fuse(q, false, name);
	return ok_ref("branch", &ref);
}

static json_t *h_branch_delete(struct req *q)
{
	struct cow_ref cur;
	json_t *err = NULL;
	const char *name = own_branch(q, "delete", &cur, &err);
	if (!name)
		return err;
	json_t *purge = json_object_get(q->j, "purge"), *stop = json_object_get(q->j, "stop");
	if ((purge && !json_is_boolean(purge)) || (stop && !json_is_boolean(stop)))
		return error("\"purge\" and \"stop\" are true or false");
	if (cur.protected)
		return repoint_error("delete", name, -EPERM, 0);
	pid_t pid = 0;
	int r, stop_err = 0;
	/* an on-demand Postgres is the daemon's: stopped first, and no longer listened for after */
	cow_pgd_hold(pgd_of(q->c), name);
	if (json_is_true(stop))
		r = cow_fs_branch_delete_stopping(q->c->fs, name, json_is_true(purge), &pid, &stop_err);
	else
		r = cow_fs_branch_delete(q->c->fs, name, json_is_true(purge), &pid);
	cow_pgd_release(pgd_of(q->c), name, r == 0);
	if (stop_err < 0)
		return error("cannot stop Postgres (pid %d) on branch '%s': %s", (int)pid, name, strerror(-stop_err));
	if (r == -ENOTEMPTY)
		return error("'%s' is the store's last branch and cannot be deleted", name);
	if (r < 0)
		return repoint_error("delete", name, r, pid);
	cow_info("branch %s deleted%s by uid %u", name, json_is_true(purge) ? " (purged)" : "", (unsigned)q->uid);
	tell_fuse(q, false, name);
	return json_pack("{s:b, s:b, s:I}", "ok", 1, "purged", json_is_true(purge), "grace",
			 (json_int_t)cow_fs_grace(q->c->fs));
}

static json_t *h_branch_undelete(struct req *q)
{
	json_t *err = NULL;
	const char *name = name_field(q, "name", "branch", &err);
	if (!name)
		return err;
	struct cow_ref *v, ref;
	size_t n;
	int r = cow_fs_trash_list(q->c->fs, &v, &n);
	if (r < 0)
		return error("%s", strerror(-r));
	for (size_t i = 0; i < n && !err; i++)
		if (strcmp(v[i].name, name) == 0)
			err = not_owner(q, "deleted branch", &v[i], "undelete");
	free(v);
	if (err)
		return err;
	r = cow_fs_branch_undelete(q->c->fs, name, &ref);
	if (r == -ENOENT)
		return error("no deleted branch '%s' in the trash (its grace period may be over)", name);
	if (r == -EEXIST)
		return error("a branch '%s' exists: delete or rename it first", name);
	if (r < 0)
		return error("cannot undelete branch '%s': %s", name, strerror(-r));
	cow_info("branch %s undeleted by uid %u", name, (unsigned)q->uid);
	tell_fuse(q, false, name);
	cow_pgd_created(pgd_of(q->c), name); /* its socket directory; on demand again */
	return ok_ref("branch", &ref);
}

struct set_ctx {
	struct cow_ref want;
	bool expires, protected;
};

static int apply_set(void *ctx, struct cow_ref *ref)
{
	struct set_ctx *s = ctx;
	if (s->expires)
		ref->expires = s->want.expires;
	if (s->protected)
		ref->protected = s->want.protected;
	return 0;
}

static json_t *h_branch_set(struct req *q)
{
	struct cow_ref cur, ref;
	json_t *err = NULL;
	const char *name = own_branch(q, "change", &cur, &err);
	if (!name)
		return err;
	struct set_ctx s = { .want = cur };
	if (!settings(q, &s.want, &s.expires, &s.protected, &err))
		return err;
	if (!s.expires && !s.protected)
		return error("branch.set needs \"expires\" or \"protected\"");
	int r = cow_fs_branch_update(q->c->fs, name, apply_set, &s, &ref);
	if (r < 0)
		return error("cannot change branch '%s': %s", name, strerror(-r));
	cow_info("branch %s: expires %lld, %sprotected, set by uid %u", name, (long long)ref.expires,
		 ref.protected ? "" : "not ", (unsigned)q->uid);
	return ok_ref("branch", &ref);
}

static json_t *h_snapshot_create(struct req *q)
{
	struct cow_ref cur, ref = { .owner = q->uid };
	json_t *err = NULL;
	const char *branch = name_field(q, "branch", "branch", &err), *name;
	if (!branch || !(name = name_field(q, "name", "snapshot", &err)))
		return err;
	if (cow_fs_branch_get(q->c->fs, branch, &cur) < 0)
		return error("no branch '%s'", branch);
	if ((err = not_owner(q, "branch", &cur, "snapshot")))
		return err;
	snprintf(ref.name, sizeof ref.name, "%s", name);
	int r = cow_fs_snapshot_create(q->c->fs, branch, &ref, announce, q);
	if (r == -EEXIST)
		return error("snapshot '%s' exists already", name);
	if (r == -ENOSPC)
		return error("too many branches and snapshots made since the mount: remount the store");
	if (r < 0)
		return error("cannot snapshot branch '%s': %s", branch, strerror(-r));
	cow_info("snapshot %s of branch %s taken by uid %u", name, branch, (unsigned)q->uid);
	tell_fuse(q, true, name);
	return q->sent ? NULL : ok_ref("snapshot", &ref);
}

static json_t *h_snapshot_delete(struct req *q)
{
	struct cow_ref cur;
	json_t *err = NULL;
	const char *name = name_field(q, "name", "snapshot", &err);
	if (!name)
		return err;
	if (cow_fs_snapshot_get(q->c->fs, name, &cur) < 0)
		return error("no snapshot '%s'", name);
	if ((err = not_owner(q, "snapshot", &cur, "delete")))
		return err;
	int r = cow_fs_snapshot_delete(q->c->fs, name);
	if (r < 0)
		return error("cannot delete snapshot '%s': %s", name, strerror(-r));
	cow_info("snapshot %s deleted by uid %u", name, (unsigned)q->uid);
	tell_fuse(q, true, name);
	return json_pack("{s:b}", "ok", 1);
}

struct reaped {
	struct req *q;
	json_t *expired, *purged;
};

static void note_reaped(void *ctx, const char *what, const struct cow_ref *ref)
{
	struct reaped *p = ctx;
	json_array_append_new(strcmp(what, "expired") == 0 ? p->expired : p->purged, json_string(ref->name));
	if (strcmp(what, "expired") == 0)
		tell_fuse(p->q, false, ref->name);
}

static json_t *h_reap(struct req *q)
{
	if (q->uid != 0)
		return error("only root may run the reaper");
	struct reaped p = { q, json_array(), json_array() };
	int r = cow_fs_reap(q->c->fs, time(NULL), cow_fs_grace(q->c->fs), note_reaped, &p);
	json_t *reply = json_pack("{s:b, s:o, s:o}", "ok", r == 0, "expired", p.expired, "purged", p.purged);
	if (r < 0)
		json_object_set_new(reply, "error", json_sprintf("some branches could not be reaped: %s", strerror(-r)));
	return reply;
}

struct diff_out {
	json_t *files;
	uint64_t changed;
};

static int note_diff(void *ctx, const struct cow_diff_entry *e)
{
	struct diff_out *d = ctx;
	d->changed += e->changed;
	json_t *f = json_pack("{s:s, s:o, s:o, s:I}", "path", e->path, "size_a",
			      e->in_a ? json_integer((json_int_t)e->size_a) : json_null(), "size_b",
			      e->in_b ? json_integer((json_int_t)e->size_b) : json_null(), "changed_blocks",
			      (json_int_t)e->changed);
	return f && json_array_append_new(d->files, f) == 0 ? 0 : -ENOMEM;
}

/* The branch, or else the snapshot, named in KEY: held (fs.h) in *SLOT. */
static struct cow_branch *branch_or_snapshot(struct req *q, const char *key, unsigned *slot, json_t **err)
{
	const char *name = name_field(q, key, "branch", err);
	if (!name)
		return NULL;
	struct cow_branch *b = cow_fs_hold_name(q->c->fs, COW_REF_BRANCH, name, slot);
	if (!b)
		b = cow_fs_hold_name(q->c->fs, COW_REF_SNAPSHOT, name, slot);
	if (!b)
		*err = error("no branch or snapshot '%s'", name);
	return b;
}

static json_t *h_diff_blocks(struct req *q)
{
	json_t *err = NULL;
	unsigned sa, sb;
	struct cow_branch *a = branch_or_snapshot(q, "a", &sa, &err);
	struct cow_branch *b = a ? branch_or_snapshot(q, "b", &sb, &err) : NULL;
	if (!b) {
		if (a)
			cow_fs_release(q->c->fs, sa);
		return err;
	}
	/* fold live changes into roots, so that shared block maps are skipped whole */
	int r = cow_fs_checkpoint(q->c->fs);
	struct diff_out d = { json_array(), 0 };
	if (r == 0)
		r = cow_diff_branches(a, b, note_diff, &d);
	cow_fs_release(q->c->fs, sa);
	cow_fs_release(q->c->fs, sb);
	if (r < 0) {
		json_decref(d.files);
		return error("cannot compare: %s", strerror(-r));
	}
	return json_pack("{s:b, s:o, s:I, s:i}", "ok", 1, "files", d.files, "changed_blocks", (json_int_t)d.changed,
			 "block_size", COW_BLOCK_SIZE);
}

static const struct command {
	const char *name;
	json_t *(*fn)(struct req *q);
} commands[] = {
	{ "branch.create", h_branch_create },
	{ "branch.delete", h_branch_delete },
	{ "branch.list", h_branch_list },
	{ "branch.reset", h_branch_reset },
	{ "branch.restore", h_branch_restore },
	{ "branch.set", h_branch_set },
	{ "branch.trash", h_branch_trash },
	{ "branch.undelete", h_branch_undelete },
	{ "diff.blocks", h_diff_blocks },
	{ "reap", h_reap },
	{ "snapshot.create", h_snapshot_create },
	{ "snapshot.delete", h_snapshot_delete },
	{ "snapshot.list", h_snapshot_list },
};

/* The reply to REQ, or NULL if it was sent already. */
static json_t *handle(struct cow_control *c, json_t *j, uid_t uid, int fd)
{
	const char *cmd = str_field(j, "cmd");
	if (!cmd)
		return error("a request is a JSON object with a string \"cmd\"");
	if (strcmp(cmd, "gc") == 0 || strcmp(cmd, "fsck") == 0 || strcmp(cmd, "df") == 0)
		return handle_job(c, cmd, j, fd);
	if (strncmp(cmd, "pg.", 3) == 0)
		return pgd_of(c) ? cow_pgd_handle(pgd_of(c), cmd, j, uid) : error("the daemon runs without its Postgres helper");
	struct req q = { c, j, uid, fd, false };
	for (size_t i = 0; i < COW_ARRAY_SIZE(commands); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return commands[i].fn(&q);
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
	if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(c->path, 0666) < 0 ||
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
	return json_pack("{s:b, s:f, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ok", 1,
			 "seconds", st.seconds, "segments_before", (int)st.segments_before, "segments_after",
			 (int)st.segments_after, "segments_rewritten", (int)st.segments_rewritten,
			 "segments_kept_damaged", (int)st.segments_kept_damaged, "disk_bytes_before",
			 (json_int_t)st.disk_before, "disk_bytes_after", (json_int_t)st.disk_after, "live_bytes",
			 (json_int_t)st.live_bytes, "moved_bytes", (json_int_t)st.moved_bytes, "moved_objects",
			 (json_int_t)st.moved_objects, "dropped_objects", (json_int_t)st.dropped_objects,
			 "dropped_bytes", (json_int_t)st.dropped_bytes, "missing_blocks", (json_int_t)st.missing,
			 "damaged_blocks", (json_int_t)st.damaged, "damaged_moved", (json_int_t)st.damaged_moved);
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
	json_t *reply = json_pack("{s:b, s:o, s:{s:i, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}}", "ok", 1, "refs",
				  refs, "store", "segments", (int)u.segments, "disk_bytes", (json_int_t)u.disk_bytes,
				  "log_bytes", (json_int_t)u.log_bytes, "live_bytes", (json_int_t)u.live_bytes,
				  "reclaimable_bytes", (json_int_t)u.reclaimable_bytes, "reclaimed",
				  "forgotten_objects", (json_int_t)u.reclaimed.forgotten_objects, "forgotten_bytes",
				  (json_int_t)u.reclaimed.forgotten_bytes, "cleaned_segments",
				  (json_int_t)u.reclaimed.cleaned_segments, "cleaned_moved_bytes",
				  (json_int_t)u.reclaimed.cleaned_moved_bytes);
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
