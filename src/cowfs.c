/* cowfs — the command-line tool.
 *
 *   cowfs init STORE [--owner USER[:GROUP]]
 *   cowfs mount STORE MOUNTPOINT [-o OPTIONS] [-f]
 *   cowfs branch create NAME [--from PARENT] [--json]
 *   cowfs branch list [--json]
 *   cowfs branch delete NAME
 *   cowfs branch reset NAME
 *   cowfs df [STORE] [--json]
 *   cowfs gc [STORE] [--threshold PCT] [--json]
 *   cowfs fsck [STORE] [--json]
 *   cowfs version
 *
 * Branch commands talk to the daemon over its control socket (control.h),
 * found with --store STORE, --mount MOUNTPOINT, $COWFS_STORE, or the one
 * cowfs mount in /proc/mounts.  df, gc and fsck do too when the store is
 * mounted; when it is not, they open it themselves (taking its lock) and
 * serve the same request in-process (cow_control_serve_fd), so both modes
 * print the same.  On a terminal they show a progress line on stderr.
 * Exit status: 0 success, 1 failure (with a one-line message) or, for fsck,
 * problems found, 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "fs.h"
#include "util.h"

#define COWFS_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cowfs COMMAND [ARGS]\n"
		"  init STORE [--owner USER[:GROUP]]   create a store with an empty branch 'main'\n"
		"  mount STORE MOUNTPOINT [-o OPTIONS] [-f]\n"
		"                                      mount a store; branches appear as directories\n"
		"  branch create NAME [--from PARENT] a branch of PARENT (default main), in O(1)\n"
		"  branch list                         the branches\n"
		"  branch delete NAME                  delete a branch\n"
		"  branch reset NAME                   back to its parent's current state\n"
		"  df [STORE]                          bytes per branch, snapshot and trash entry, and in all\n"
		"  gc [STORE] [--threshold PCT]        reclaim the space of deleted branches and overwritten data\n"
		"  fsck [STORE]                        check every block and tree; name the file of any bad one\n"
		"      these commands take --store STORE or --mount MOUNTPOINT, and --json;\n"
		"      df, gc and fsck open an unmounted store themselves\n"
		"  version                             print the version\n"
		"Unmount with 'umount MOUNTPOINT'.  See cowfs(1).\n");
}

static int parse_owner(const char *spec, uid_t *uid, gid_t *gid)
{
	char user[256], *group;
	snprintf(user, sizeof user, "%s", spec);
	group = strchr(user, ':');
	if (group)
		*group++ = 0;
	char *end;
	struct passwd *pw = getpwnam(user);
	if (pw) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
	} else {
		unsigned long v = strtoul(user, &end, 10);
		if (!*user || *end) {
			cow_err("--owner %s: no such user", spec);
			return -1;
		}
		*uid = (uid_t)v;
		*gid = (gid_t)v;
	}
	if (group && *group) {
		struct group *gr = getgrnam(group);
		if (gr) {
			*gid = gr->gr_gid;
		} else {
			unsigned long v = strtoul(group, &end, 10);
			if (*end) {
				cow_err("--owner %s: no such group", spec);
				return -1;
			}
			*gid = (gid_t)v;
		}
	}
	return 0;
}

static int cmd_init(int argc, char **argv)
{
	const char *store = NULL;
	uid_t uid = getuid();
	gid_t gid = getgid();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--owner") == 0 && i + 1 < argc) {
			if (parse_owner(argv[++i], &uid, &gid) < 0)
				return 1;
		} else if (strncmp(argv[i], "--owner=", 8) == 0) {
			if (parse_owner(argv[i] + 8, &uid, &gid) < 0)
				return 1;
		} else if (argv[i][0] == '-' || store) {
			usage(stderr);
			return 2;
		} else {
			store = argv[i];
		}
	}
	if (!store) {
		usage(stderr);
		return 2;
	}
	int r = cow_fs_init(store, uid, gid);
	if (r == -EEXIST) {
		cow_err("%s already holds a cowfs store; nothing changed", store);
		return 1;
	}
	if (r < 0) {
		cow_err("cannot create a store at %s: %s", store, strerror(-r));
		return 1;
	}
	printf("created store %s with branch main (owner %u:%u)\n", store, (unsigned)uid, (unsigned)gid);
	return 0;
}

static int cmd_mount(int argc, char **argv)
{
	char self[PATH_MAX], daemon[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		snprintf(daemon, sizeof daemon, "%s/cowfsd", dirname(self));
		if (access(daemon, X_OK) != 0)
			snprintf(daemon, sizeof daemon, "cowfsd");
	} else {
		snprintf(daemon, sizeof daemon, "cowfsd");
	}
	char **dargv = calloc(argc + 1, sizeof *dargv);
	if (!dargv)
		return 1;
	dargv[0] = daemon;
	for (int i = 1; i < argc; i++)
		dargv[i] = argv[i];
	execvp(daemon, dargv);
	cow_err("cannot run %s: %s", daemon, strerror(errno));
	return 1;
}

/* The store whose daemon to talk to: --store, --mount, $COWFS_STORE, or
 * the only cowfs mount. */
static int find_store(const char *store, const char *mnt, char *out, size_t n)
{
	if (!store)
		store = getenv("COWFS_STORE");
	if (store && !mnt) {
		snprintf(out, n, "%s", store);
		return 0;
	}
	FILE *f = fopen("/proc/mounts", "r");
	if (!f) {
		cow_err("cannot read /proc/mounts: %s", strerror(errno));
		return -1;
	}
	char line[8192], found[4096] = "";
	int count = 0;
	char real[PATH_MAX] = "";
	if (mnt && !realpath(mnt, real)) {
		cow_err("%s: %s", mnt, strerror(errno));
		fclose(f);
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		char src[4096], dir[4096], type[64];
		if (sscanf(line, "%4095s %4095s %63s", src, dir, type) != 3 || strcmp(type, "fuse.cowfs") != 0)
			continue;
		if (mnt && strcmp(dir, real) != 0)
			continue;
		snprintf(found, sizeof found, "%s", src);
		count++;
	}
	fclose(f);
	if (count == 0) {
		cow_err(mnt ? "%s is not a cowfs mount" : "no cowfs mount found; name the store with --store STORE%s",
			mnt ? mnt : "");
		return -1;
	}
	if (count > 1 && !mnt) {
		cow_err("%d cowfs mounts; choose one with --mount MOUNTPOINT or --store STORE", count);
		return -1;
	}
	snprintf(out, n, "%s", found);
	return 0;
}

/* Send one request, return the reply (NULL after printing why). */
static json_t *request(const char *store, json_t *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", store) >= sizeof sa.sun_path) {
		cow_err("%s: path too long", store);
		return NULL;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		cow_err("cannot reach the cowfs daemon of %s (%s): is the store mounted?", store, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char *text = json_dumps(req, JSON_COMPACT);
	size_t len = strlen(text);
	text[len] = '\n';
	ssize_t w = write(fd, text, len + 1);
	free(text);
	char buf[65536];
	size_t used = 0;
	json_t *reply = NULL;
	if (w == (ssize_t)len + 1) {
		while (used < sizeof buf - 1) {
			ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
			if (n <= 0)
				break;
			used += n;
			if (memchr(buf, '\n', used))
				break;
		}
		buf[used] = 0;
		json_error_t err;
		reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, &err);
	}
	close(fd);
	if (!reply || !json_is_object(reply)) {
		cow_err("no valid reply from the cowfs daemon of %s", store);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

static void print_age(time_t created)
{
	long s = (long)(time(NULL) - created);
	if (s < 120)
		printf("%lds", s);
	else if (s < 7200)
		printf("%ldm", s / 60);
	else if (s < 172800)
		printf("%ldh", s / 3600);
	else
		printf("%ldd", s / 86400);
}

static int cmd_branch(int argc, char **argv)
{
	const char *store = NULL, *mnt = NULL, *from = NULL, *sub = NULL, *name = NULL;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
			store = argv[++i];
		else if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
			from = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (argv[i][0] == '-')
			goto usage;
		else if (!sub)
			sub = argv[i];
		else if (!name)
			name = argv[i];
		else
			goto usage;
	}
	if (!sub)
		goto usage;
	json_t *req;
	if (strcmp(sub, "list") == 0 && !name && !from)
		req = json_pack("{s:s}", "cmd", "branch.list");
	else if (strcmp(sub, "create") == 0 && name)
		req = json_pack("{s:s, s:s, s:s}", "cmd", "branch.create", "name", name, "from", from ? from : "main");
	else if (strcmp(sub, "delete") == 0 && name && !from)
		req = json_pack("{s:s, s:s}", "cmd", "branch.delete", "name", name);
	else if (strcmp(sub, "reset") == 0 && name && !from)
		req = json_pack("{s:s, s:s}", "cmd", "branch.reset", "name", name);
	else
		goto usage;
	char path[4096];
	if (find_store(store, mnt, path, sizeof path) < 0) {
		json_decref(req);
		return 1;
	}
	json_t *reply = request(path, req);
	json_decref(req);
	if (!reply)
		return 1;
	int ok = json_is_true(json_object_get(reply, "ok"));
	if (as_json) {
		char *text = json_dumps(reply, JSON_COMPACT);
		puts(text);
		free(text);
	} else if (!ok) {
		json_t *e = json_object_get(reply, "error");
		cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
	} else if (strcmp(sub, "list") == 0) {
		json_t *arr = json_object_get(reply, "branches"), *b;
		size_t i;
		printf("%-24s %-24s %8s %6s\n", "NAME", "PARENT", "OWNER", "AGE");
		json_array_foreach(arr, i, b) {
			json_t *par = json_object_get(b, "parent");
			printf("%-24s %-24s %8lld ", json_string_value(json_object_get(b, "name")),
			       json_is_string(par) ? json_string_value(par) : "-",
			       (long long)json_integer_value(json_object_get(b, "owner")));
			print_age((time_t)json_integer_value(json_object_get(b, "created")));
			printf("\n");
		}
	} else if (strcmp(sub, "create") == 0) {
		printf("created branch %s from %s\n", name, from ? from : "main");
	} else if (strcmp(sub, "reset") == 0) {
		json_t *par = json_object_get(json_object_get(reply, "branch"), "parent");
		printf("reset branch %s to %s\n", name, json_is_string(par) ? json_string_value(par) : "its parent");
	} else {
		printf("deleted branch %s\n", name);
	}
	json_decref(reply);
	return ok ? 0 : 1;
usage:
	usage(stderr);
	return 2;
}

/* ---- df, gc, fsck ------------------------------------------------------ */

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

static void human_bytes(uint64_t b, char *out, size_t n)
{
	const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, n, "%llu B", (unsigned long long)b);
	else
		snprintf(out, n, "%.1f %s", v, unit[u]);
}

static uint64_t jint(json_t *o, const char *key) { return (uint64_t)json_integer_value(json_object_get(o, key)); }

static void show_progress(const char *cmd, json_t *p)
{
	const char *phase = json_string_value(json_object_get(p, "phase"));
	char b[32];
	human_bytes(jint(p, "bytes"), b, sizeof b);
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
			human_bytes(jint(r, "logical_bytes"), a, sizeof a);
			human_bytes(jint(r, "own_bytes"), b, sizeof b);
			human_bytes(jint(r, "shared_bytes"), c, sizeof c);
			printf("%-9s %-32s %11s %11s %11s\n", json_string_value(json_object_get(r, "kind")),
			       json_string_value(json_object_get(r, "name")), a, b, c);
		}
		human_bytes(jint(st, "disk_bytes"), a, sizeof a);
		human_bytes(jint(st, "live_bytes"), b, sizeof b);
		human_bytes(jint(st, "reclaimable_bytes"), c, sizeof c);
		printf("store: %llu segments, %s on disk, %s live, up to %s reclaimable by cowfs gc\n",
		       (unsigned long long)jint(st, "segments"), a, b, c);
		return 0;
	}
	if (strcmp(cmd, "gc") == 0) {
		uint64_t before = jint(reply, "disk_bytes_before"), after = jint(reply, "disk_bytes_after");
		human_bytes(before, a, sizeof a);
		human_bytes(after, b, sizeof b);
		human_bytes(before > after ? before - after : 0, c, sizeof c);
		human_bytes(jint(reply, "moved_bytes"), d, sizeof d);
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
		return 0;
	}
	json_t *problems = json_object_get(reply, "problems"), *p;
	size_t i;
	json_array_foreach(problems, i, p)
		printf("%s\n", json_string_value(json_object_get(p, "message")));
	uint64_t n = jint(reply, "problem_count");
	if (n > json_array_size(problems))
		printf("... and %llu more\n", (unsigned long long)(n - json_array_size(problems)));
	human_bytes(jint(reply, "bytes"), a, sizeof a);
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

struct local { struct cow_fs *fs; int fd; };
static void *serve_local(void *arg)
{
	struct local *l = arg;
	cow_control_serve_fd(l->fs, l->fd);
	close(l->fd);
	return NULL;
}

static int cmd_job(int argc, char **argv)
{
	const char *cmd = argv[0], *store = NULL, *mnt = NULL, *pos = NULL;
	bool as_json = false;
	long threshold = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
			store = argv[++i];
		else if (strcmp(argv[i], "--mount") == 0 && i + 1 < argc)
			mnt = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(cmd, "gc") == 0 && strcmp(argv[i], "--threshold") == 0 && i + 1 < argc) {
			char *end;
			threshold = strtol(argv[++i], &end, 10);
			if (*end || threshold < 1 || threshold > 100) {
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
		json_object_set_new(req, "threshold", json_integer(threshold));
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
	usage(stderr);
	return 2;
}

int main(int argc, char **argv)
{
	cow_msg_set_prefix("cowfs");
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "init") == 0)
		return cmd_init(argc - 1, argv + 1);
	if (strcmp(cmd, "mount") == 0)
		return cmd_mount(argc - 1, argv + 1);
	if (strcmp(cmd, "branch") == 0)
		return cmd_branch(argc - 1, argv + 1);
	if (strcmp(cmd, "df") == 0 || strcmp(cmd, "gc") == 0 || strcmp(cmd, "fsck") == 0)
		return cmd_job(argc - 1, argv + 1);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("cowfs %s\n", COWFS_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	cow_err("unknown command '%s'", cmd);
	usage(stderr);
	return 2;
}
