#include "cli_store.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "fs.h"
#include "util.h"

/* Read one line (any length) from FD into a malloc'd string; NULL at EOF. */
static char *read_line(int fd, char **buf, size_t *used, size_t *cap)
{
	for (;;) {
		char *nl = *used ? memchr(*buf, '\n', *used) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - *buf);
			char *line = strndup(*buf, n);
			memmove(*buf, nl + 1, *used - n - 1);
			*used -= n + 1;
			return line;
		}
		if (*used == *cap) {
			size_t c = *cap ? *cap * 2 : 65536;
			char *b = realloc(*buf, c);
			if (!b)
				return NULL;
			*buf = b;
			*cap = c;
		}
		ssize_t r = read(fd, *buf + *used, *cap - *used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return NULL;
		*used += (size_t)r;
	}
}


static uint64_t jint(json_t *o, const char *key) { return (uint64_t)json_integer_value(json_object_get(o, key)); }

static void show_progress(const char *cmd, json_t *p)
{
	const char *phase = json_string_value(json_object_get(p, "phase"));
	char b[32];
	cli_bytes(jint(p, "bytes"), b, sizeof b);
	if (phase && strcmp(phase, "sweep") == 0)
		fprintf(stderr, "\r\033[K%s: rewriting segments: %llu of %llu, %s moved", cmd,
			(unsigned long long)jint(p, "done"), (unsigned long long)jint(p, "total"), b);
	else if (phase && strcmp(phase, "check") == 0)
		fprintf(stderr, "\r\033[K%s: %llu objects, %s checked, %llu problems", cmd,
			(unsigned long long)jint(p, "done"), b, (unsigned long long)jint(p, "problems"));
	else
		fprintf(stderr, "\r\033[K%s: marking: %llu objects reached", cmd, (unsigned long long)jint(p, "done"));
	fflush(stderr);
}

/* Print the final reply of df, gc or fsck; the exit status. */
static int show_result(const char *cmd, json_t *reply)
{
	char a[32], b[32], c[32], d[32];
	if (strcmp(cmd, "df") == 0) {
		json_t *refs = json_object_get(reply, "refs"), *r, *st = json_object_get(reply, "store");
		size_t i;
		printf("%-9s %-32s %11s %11s %11s\n", "KIND", "NAME", "LOGICAL", "OWN", "SHARED");
		json_array_foreach(refs, i, r) {
			cli_bytes(jint(r, "logical_bytes"), a, sizeof a);
			cli_bytes(jint(r, "own_bytes"), b, sizeof b);
			cli_bytes(jint(r, "shared_bytes"), c, sizeof c);
			printf("%-9s %-32s %11s %11s %11s\n", json_string_value(json_object_get(r, "kind")),
			       json_string_value(json_object_get(r, "name")), a, b, c);
		}
		cli_bytes(jint(st, "disk_bytes"), a, sizeof a);
		cli_bytes(jint(st, "live_bytes"), b, sizeof b);
		cli_bytes(jint(st, "reclaimable_bytes"), c, sizeof c);
		printf("store: %llu segments, %s on disk, %s live, up to %s reclaimable by cowfs gc\n",
		       (unsigned long long)jint(st, "segments"), a, b, c);
		json_t *rc = json_object_get(reply, "reclaimed");
		cli_bytes(jint(rc, "forgotten_bytes"), a, sizeof a);
		cli_bytes(jint(rc, "cleaned_moved_bytes"), b, sizeof b);
		if (jint(rc, "forgotten_objects") || jint(rc, "cleaned_segments"))
			printf("early reclaim since the mount: %s of overwritten blocks forgotten, %llu segments "
			       "cleaned (%s moved)\n", a, (unsigned long long)jint(rc, "cleaned_segments"), b);
		return 0;
	}
	if (strcmp(cmd, "gc") == 0) {
		uint64_t before = jint(reply, "disk_bytes_before"), after = jint(reply, "disk_bytes_after");
		cli_bytes(before, a, sizeof a);
		cli_bytes(after, b, sizeof b);
		cli_bytes(before > after ? before - after : 0, c, sizeof c);
		cli_bytes(jint(reply, "moved_bytes"), d, sizeof d);
		printf("gc: %llu of %llu segments rewritten (%s of live data moved); %s on disk before, %s after: "
		       "%s reclaimed in %.1f s\n",
		       (unsigned long long)jint(reply, "segments_rewritten"),
		       (unsigned long long)jint(reply, "segments_before"), d, a, b, c,
		       json_real_value(json_object_get(reply, "seconds")));
		if (jint(reply, "segments_kept_damaged") || jint(reply, "missing_blocks") || jint(reply, "damaged_blocks"))
			printf("gc: %llu missing and %llu damaged blocks are still in use (%llu segments kept for "
			       "them): run cowfs fsck to name their files\n",
			       (unsigned long long)jint(reply, "missing_blocks"),
			       (unsigned long long)jint(reply, "damaged_blocks"),
			       (unsigned long long)jint(reply, "segments_kept_damaged"));
		if (jint(reply, "damaged_moved"))
			printf("gc: %llu damaged blocks were moved as they are out of old segments, so that the log "
			       "can roll on; reads of them still fail\n",
			       (unsigned long long)jint(reply, "damaged_moved"));
		return 0;
	}
	json_t *problems = json_object_get(reply, "problems"), *p;
	size_t i;
	json_array_foreach(problems, i, p)
		printf("%s\n", json_string_value(json_object_get(p, "message")));
	uint64_t n = jint(reply, "problem_count");
	if (n > json_array_size(problems))
		printf("... and %llu more\n", (unsigned long long)(n - json_array_size(problems)));
	cli_bytes(jint(reply, "bytes"), a, sizeof a);
	printf("fsck: %llu refs, %llu objects (%s) checked in %.1f s: %s", (unsigned long long)jint(reply, "refs"),
	       (unsigned long long)jint(reply, "objects"), a, json_real_value(json_object_get(reply, "seconds")),
	       n ? "" : "clean\n");
	if (n)
		printf("%llu problem%s\n", (unsigned long long)n, n == 1 ? "" : "s");
	return n ? 1 : 0;
}

/* Send REQ on FD, show progress lines, print the final reply. */
static int run_job(const char *cmd, int fd, json_t *req, bool as_json)
{
	char *text = json_dumps(req, JSON_COMPACT);
	size_t len = strlen(text);
	text[len] = '\n';
	ssize_t w = write(fd, text, len + 1);
	free(text);
	if (w != (ssize_t)len + 1) {
		cow_err("cannot send the request: %s", strerror(errno));
		return 1;
	}
	bool tty = isatty(STDERR_FILENO) && !as_json, shown = false;
	char *buf = NULL, *line;
	size_t used = 0, cap = 0;
	int rc = 1;
	while ((line = read_line(fd, &buf, &used, &cap))) {
		json_error_t err;
		json_t *reply = json_loads(line, 0, &err);
		free(line);
		if (!json_is_object(reply)) {
			json_decref(reply);
			break;
		}
		json_t *p = json_object_get(reply, "progress");
		if (p) {
			if (tty) {
				show_progress(cmd, p);
				shown = true;
			}
			json_decref(reply);
			continue;
		}
		if (shown)
			fprintf(stderr, "\r\033[K");
		shown = false;
		bool ok = json_is_true(json_object_get(reply, "ok"));
		if (as_json) {
			char *out = json_dumps(reply, JSON_COMPACT);
			puts(out);
			free(out);
			rc = !ok || (strcmp(cmd, "fsck") == 0 && !json_is_true(json_object_get(reply, "clean")));
		} else if (!ok) {
			json_t *e = json_object_get(reply, "error");
			cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
		} else {
			rc = show_result(cmd, reply);
		}
		json_decref(reply);
		free(buf);
		return rc;
	}
	if (shown)
		fprintf(stderr, "\r\033[K");
	free(buf);
	cow_err("%s: no final reply (the daemon stopped, or the connection broke)", cmd);
	return 1;
}

json_t *cli_store_df(const char *store)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", store) >= sizeof sa.sun_path)
		return NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		cow_err("cannot reach the cowfs daemon of %s (%s)", store, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	static const char req[] = "{\"cmd\":\"df\"}\n";
	char *buf = NULL, *line;
	size_t used = 0, cap = 0;
	json_t *reply = NULL;
	if (write(fd, req, sizeof req - 1) == (ssize_t)sizeof req - 1)
		while ((line = read_line(fd, &buf, &used, &cap))) {
			json_error_t err;
			reply = json_loads(line, 0, &err);
			free(line);
			if (json_is_object(reply) && !json_object_get(reply, "progress"))
				break;
			json_decref(reply);
			reply = NULL;
		}
	free(buf);
	close(fd);
	if (reply && !json_is_true(json_object_get(reply, "ok"))) {
		json_t *e = json_object_get(reply, "error");
		cow_err("%s", json_is_string(e) ? json_string_value(e) : "df refused");
		json_decref(reply);
		reply = NULL;
	}
	return reply;
}

struct local { struct cow_fs *fs; int fd; };
static void *serve_local(void *arg)
{
	struct local *l = arg;
	cow_control_serve_fd(l->fs, l->fd);
	close(l->fd);
	return NULL;
}

int cmd_store_job(int argc, char **argv)
{
	const char *cmd = argv[0], *store = NULL, *mnt = NULL, *pos = NULL;
	bool as_json = false;
	uint64_t threshold = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
			store = argv[++i];
		else if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(cmd, "gc") == 0 && strcmp(argv[i], "--threshold") == 0 && i + 1 < argc) {
			if (cow_parse_uint(argv[++i], 1, 100, &threshold) < 0) {
				cow_err("--threshold %s: give a percentage from 1 to 100", argv[i]);
				return 2;
			}
		} else if (argv[i][0] == '-' || pos)
			goto usage;
		else
			pos = argv[i];
	}
	if ((pos && (store || mnt)) || (store && mnt))
		goto usage;
	if (pos)
		store = pos;
	json_t *req = json_pack("{s:s}", "cmd", cmd);
	if (threshold)
		json_object_set_new(req, "threshold", json_integer((json_int_t)threshold));
	char path[4096];
	if (find_store(store, mnt, path, sizeof path) < 0) {
		json_decref(req);
		return 1;
	}
	/* The daemon's socket if it answers; else the store itself. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", path) >= sizeof sa.sun_path) {
		cow_err("%s: path too long", path);
		json_decref(req);
		return 1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int rc = 1;
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		rc = run_job(cmd, fd, req, as_json);
		close(fd);
		json_decref(req);
		return rc;
	}
	int e = errno;
	if (fd >= 0)
		close(fd);
	if (mnt || (e != ENOENT && e != ECONNREFUSED)) {
		cow_err("cannot reach the cowfs daemon of %s (%s)", path, strerror(e));
		json_decref(req);
		return 1;
	}
	struct local l;
	unsigned said = cow_msg_count();
	int r = cow_fs_open(path, &l.fs);
	if (r < 0) {
		if (r == -EBUSY)
			cow_err("%s is in use, but its daemon does not answer on %s", path, sa.sun_path);
		else if (cow_msg_count() == said)
			cow_err("cannot open store %s: %s", path, strerror(-r));
		json_decref(req);
		return 1;
	}
	int sv[2];
	pthread_t th;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		cow_err("socketpair: %s", strerror(errno));
	} else {
		l.fd = sv[1];
		if (pthread_create(&th, NULL, serve_local, &l) != 0) {
			cow_err("cannot start a thread");
			close(sv[1]);
		} else {
			rc = run_job(cmd, sv[0], req, as_json);
			shutdown(sv[0], SHUT_RDWR);
			pthread_join(th, NULL);
		}
		close(sv[0]);
	}
	json_decref(req);
	if ((r = cow_fs_close(l.fs)) < 0) {
		cow_err("closing %s: %s", path, strerror(-r));
		rc = 1;
	}
	return rc;
usage:
	cow_err("usage: cowfs %s [STORE | --store STORE | --mount MOUNTPOINT]%s [--json]", cmd,
		strcmp(cmd, "gc") == 0 ? " [--threshold PCT]" : "");
	return 2;
}

