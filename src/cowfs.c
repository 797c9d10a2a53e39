/* cowfs — the command-line tool.
 *
 *   cowfs init STORE [--owner USER[:GROUP]]
 *   cowfs mount STORE MOUNTPOINT [-o OPTIONS] [-f]
 *   cowfs branch create|list|delete|undelete|reset|restore|set ...  (cli_branch.h)
 *   cowfs snapshot create|list|delete ...
 *   cowfs reap
 *   cowfs df|gc|fsck [STORE] ...                                    (cli_store.h)
 *   cowfs pg ...                                                    (pgcli.h)
 *   cowfs git ...                                                   (gitcli.h)
 *   cowfs ci run ...                                                (cicli.h)
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
#include "cli_branch.h"
#include "cli_diff.h"
#include "cli_store.h"
#include "fs.h"
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
		"  branch create NAME [--from PARENT | --from-snapshot SNAP]\n"
		"         [--ttl 8h | --expire-at TIME | --no-expiry] [--protected]\n"
		"                                      a branch of PARENT (default main), in O(1)\n"
		"  branch list [--deleted]             the branches as a tree (or those in the trash)\n"
		"  branch delete NAME [--now] [--keep-postgres]\n"
		"                                      delete (stopping its Postgres); undeletable\n"
		"                                      for the grace period unless --now\n"
		"  branch undelete NAME                bring a deleted branch back\n"
		"  branch reset NAME                   back to its parent's current state\n"
		"  branch restore NAME --to SNAP       back to a snapshot\n"
		"  branch set NAME [--ttl D | --expire-at T | --no-expiry] [--protected | --unprotected]\n"
		"  snapshot create BRANCH NAME         a read-only snapshot, at MOUNT/.snapshots/NAME\n"
		"  snapshot list | snapshot delete NAME\n"
		"  reap                                delete expired branches, purge the trash now\n"
		"  df [STORE]                          bytes per branch, snapshot and trash entry, and in all\n"
		"  gc [STORE] [--threshold PCT]        reclaim the space of deleted branches and overwritten data\n"
		"  fsck [STORE]                        check every block and tree; name the file of any bad one\n"
		"      these take --store STORE or --mount MOUNTPOINT, and --json;\n"
		"      df, gc and fsck open an unmounted store themselves\n"
		"  pg start|stop|restart|status|env|psql|ondemand|initdb BRANCH ...\n"
		"                                      Postgres on a branch; 'cowfs pg --help'\n"
		"  git install|uninstall|sync|list|prune a database branch per git branch; 'cowfs git --help'\n"
		"  ci run [--from BRANCH] -- COMMAND   COMMAND on a throw-away branch; 'cowfs ci --help'\n"
		"  diff [--schema] [--data] A B [--markdown | --json]\n"
		"                                      schema and data differences of two branches\n"
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

/* `cowfs git`: exec cowfs-git, next to this program (the build tree) or in
 * ../lib/cowfs/ (installed), telling it where this program is. */
static int run_git(int argc, char **argv)
{
	char self[PATH_MAX], prog[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		cow_err("cannot find this program: %s", strerror(errno));
		return 1;
	}
	self[n] = 0;
	setenv("COWFS_PROGRAM", self, 1);
	char *dir = dirname(strdup(self));
	const char *where[] = { "", "/../lib/cowfs" };
	for (size_t i = 0; dir && i < COW_ARRAY_SIZE(where); i++) {
		snprintf(prog, sizeof prog, "%s%s/cowfs-git", dir, where[i]);
		if (access(prog, X_OK) == 0) {
			char **v = calloc((size_t)argc + 2, sizeof *v);
			if (!v)
				break;
			v[0] = prog;
			for (int k = 0; k < argc; k++)
				v[k + 1] = argv[k];
			execv(prog, v);
			cow_err("cannot run %s: %s", prog, strerror(errno));
			return 1;
		}
	}
	cow_err("cowfs-git is not installed next to %s (or in ../lib/cowfs/)", self);
	return 1;
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
	if (strcmp(cmd, "pg") == 0)
		return pgcli_main(argc - 1, argv + 1);
	if (strcmp(cmd, "branch") == 0)
		return cmd_branch(argc - 1, argv + 1);
	if (strcmp(cmd, "snapshot") == 0)
		return cmd_snapshot(argc - 1, argv + 1);
	if (strcmp(cmd, "reap") == 0)
		return cmd_reap(argc - 1, argv + 1);
	if (strcmp(cmd, "df") == 0 || strcmp(cmd, "gc") == 0 || strcmp(cmd, "fsck") == 0)
		return cmd_store_job(argc - 1, argv + 1);
	if (strcmp(cmd, "git") == 0)
		return run_git(argc - 1, argv + 1);
	if (strcmp(cmd, "diff") == 0)
		return cmd_diff(argc - 1, argv + 1);
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
