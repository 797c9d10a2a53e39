/* cowfs — the command-line tool.
 *
 *   cowfs init STORE [--owner USER[:GROUP]]
 *   cowfs mount STORE MOUNTPOINT [-o OPTIONS] [-f]
 *   cowfs branch create NAME [--from PARENT] [--json]
 *   cowfs branch list [--json]
 *   cowfs branch delete NAME
 *   cowfs branch reset NAME
 *   cowfs pg ...                 (pgcli.h)
 *   cowfs git ...                (gitcli.h)
 *   cowfs ci run ...             (cicli.h)
 *   cowfs version
 *
 * Branch commands talk to the daemon over its control socket (control.h),
 * found with --store STORE, --mount MOUNTPOINT, $COWFS_STORE, or the one
 * cowfs mount in /proc/mounts.
 * Exit status: 0 success, 1 failure (with a one-line message), 2 bad usage.
 */
#include <errno.h>
#include <jansson.h>
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

#include "cicli.h"
#include "cli.h"
#include "fs.h"
#include "gitcli.h"
#include "pgcli.h"
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
		"      branch commands take --store STORE or --mount MOUNTPOINT, and --json\n"
		"  pg start|stop|restart|status|env|psql|ondemand|initdb BRANCH ...\n"
		"                                      Postgres on a branch; 'cowfs pg --help'\n"
		"  git install|uninstall|sync|list|prune a database branch per git branch; 'cowfs git --help'\n"
		"  ci run [--from BRANCH] -- COMMAND   COMMAND on a throw-away branch; 'cowfs ci --help'\n"
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
int find_store(const char *store, const char *mnt, char *out, size_t n)
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
json_t *request(const char *store, json_t *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", store) >= sizeof sa.sun_path) {
		cow_err("%s: path too long", store);
		return NULL;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (errno == EACCES)
			cow_err("cannot reach the cowfs daemon of %s: its control socket is for root only", store);
		else
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
	/* Postgres started by hand on the branch is stopped first, and after a
	 * reset (or a failed delete) started again on the same port */
	struct pgcli_change pgc = { .restart = false };
	bool reset = strcmp(sub, "reset") == 0;
	if ((reset || strcmp(sub, "delete") == 0) && pgcli_before_change(path, name, &pgc)) {
		json_decref(req);
		return 1;
	}
	json_t *reply = request(path, req);
	json_decref(req);
	if (!reply) {
		pgcli_after_change(&pgc);
		return 1;
	}
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
	if ((reset || !ok) && pgcli_after_change(&pgc))
		ok = 0;
	return ok ? 0 : 1;
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
	if (strcmp(cmd, "pg") == 0)
		return pgcli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "git") == 0)
		return gitcli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "ci") == 0)
		return cicli_main(argc - 1, argv + 1);
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
