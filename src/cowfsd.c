/* cowfsd — the cowfs daemon: opens a store (recovering it from its log) and
 * serves it as a FUSE mount until unmounted; then checkpoints every branch,
 * syncs, and exits.  Installed as mount.cowfs too, so that
 * `mount -t cowfs STORE DIR -o OPTIONS` and fstab lines work.
 *
 *   cowfsd [-f] [-d] [-o OPTIONS] STORE MOUNTPOINT
 *   mount.cowfs STORE MOUNTPOINT [-sfnv] [-o OPTIONS]
 *
 * Options of our own (everything else goes to the kernel through libfuse):
 *   checkpoint=SECONDS   checkpoint interval (default 30)
 *   grace=DURATION       how long a deleted branch can be undeleted (default 1d)
 *   reap=DURATION        how often expired branches are looked for (default 1m)
 *   autogc=PERCENT       collect garbage by itself once the store has grown
 *                        by PERCENT % of its live data, and by 1 GiB, since
 *                        the last collection (default 100; 0: only when asked)
 *   autogc_busy=PERCENT  such a collection waits while the CPUs are more than
 *                        PERCENT % busy, up to twice that growth (default 50;
 *                        100: never waits)
 *   timeout=SECONDS      kernel entry/attribute cache time (default 60)
 *   noreclaim            no early reclaim of overwritten blocks (fs.h;
 *                        autogc=0 turns it off too)
 *   writeback / nowriteback   kernel write-back caching (default on)
 *   strictlimit          keep the kernel's hard cap on the mount's dirty
 *                        pages (writeback.h; by default it is lifted)
 *   uring / nouring      FUSE requests over io_uring where the kernel offers
 *                        it (uring.h; default off)
 *   debug                like -d: foreground, every request logged
 * allow_other and default_permissions are always on: the store records owners
 * and modes, and the kernel enforces them for every user.
 *
 * Under a service manager (systemd Type=notify, run with -f) the daemon
 * reports READY=1 once the mount answers requests and the control socket
 * listens, and STOPPING=1 when the session ends (notify.h).  A dead mount
 * of the same store at MOUNTPOINT, left by a daemon that was killed, is
 * detached and replaced, so that a restart needs no manual umount.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <linux/magic.h>
#include <mntent.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "fs.h"
#include "fuse_ops.h"
#include "pgd.h"
#include "ref.h"
#include "notify.h"
#include "powercut.h"
#include "writeback.h"
#include "uring.h"
#include "util.h"

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
		"usage: %s [-f] [-d] [-o OPTIONS] STORE MOUNTPOINT\n"
		"Serve the cowfs store STORE at MOUNTPOINT; each branch is a directory.\n"
		"  -f            stay in the foreground (messages to stderr)\n"
		"  -d            foreground and log every FUSE request\n"
		"  -o OPTIONS    comma-separated: checkpoint=SECONDS, timeout=SECONDS,\n"
		"                grace=DURATION, reap=DURATION, autogc=PERCENT,\n"
		"                autogc_busy=PERCENT, noreclaim, writeback, nowriteback, strictlimit,\n"
		"                uring, nouring,\n"
		"                and kernel mount options (ro, noatime, ...)\n"
		"See cowfsd(8).\n",
		prog);
}

/* Options that mount(8) or fstab carry but that mean nothing to a FUSE mount. */
static bool ignored_option(const char *o)
{
	static const char *const names[] = { "defaults", "auto", "noauto", "user", "users", "nouser",
					      "_netdev", "nofail", "owner", "group", "rw" };
	for (size_t i = 0; i < COW_ARRAY_SIZE(names); i++)
		if (strcmp(o, names[i]) == 0)
			return true;
	return strncmp(o, "x-", 2) == 0 || strncmp(o, "comment=", 8) == 0;
}

struct opts {
	unsigned checkpoint, reap, autogc, autogc_busy;
	int64_t grace;
	double timeout;
	bool writeback, strictlimit, noreclaim, uring, foreground, debug;
	char fuse_opts[2048];
};

/* Threads (and ring entries) per CPU queue with -o uring: see uring.h. */
#define URING_THREADS 32

static int parse_o(struct opts *o, char *list)
{
	for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		uint64_t n;
		if (strncmp(tok, "checkpoint=", 11) == 0) {
			if (cow_parse_uint(tok + 11, 1, 86400, &n) < 0) {
				cow_err("checkpoint=%s: give a number of seconds from 1 to 86400", tok + 11);
				return -EINVAL;
			}
			o->checkpoint = (unsigned)n;
		} else if (strncmp(tok, "grace=", 6) == 0) {
			if (cow_parse_duration(tok + 6, &o->grace) < 0) {
				cow_err("grace=%s: give a duration such as 3600, 90m, 24h or 7d", tok + 6);
				return -EINVAL;
			}
		} else if (strncmp(tok, "reap=", 5) == 0) {
			int64_t v;
			if (cow_parse_duration(tok + 5, &v) < 0 || v < 1 || v > 86400) {
				cow_err("reap=%s: give a duration from 1s to 1d", tok + 5);
				return -EINVAL;
			}
			o->reap = (unsigned)v;
		} else if (strncmp(tok, "autogc=", 7) == 0) {
			if (cow_parse_uint(tok + 7, 0, 10000, &n) < 0) {
				cow_err("autogc=%s: give a percentage from 0 (off) to 10000", tok + 7);
				return -EINVAL;
			}
			o->autogc = (unsigned)n;
		} else if (strncmp(tok, "autogc_busy=", 12) == 0) {
			if (cow_parse_uint(tok + 12, 0, 100, &n) < 0) {
				cow_err("autogc_busy=%s: give a percentage from 0 to 100 (never wait)", tok + 12);
				return -EINVAL;
			}
			o->autogc_busy = (unsigned)n;
		} else if (strncmp(tok, "timeout=", 8) == 0) {
			double v = strtod(tok + 8, &end);
			if (*end || v < 0 || v > 86400) {
				cow_err("timeout=%s: give a number of seconds from 0 to 86400", tok + 8);
				return -EINVAL;
			}
			o->timeout = v;
		} else if (strcmp(tok, "writeback") == 0) {
			o->writeback = true;
		} else if (strcmp(tok, "nowriteback") == 0) {
			o->writeback = false;
		} else if (strcmp(tok, "strictlimit") == 0) {
			o->strictlimit = true;
		} else if (strcmp(tok, "noreclaim") == 0) {
			o->noreclaim = true;
		} else if (strcmp(tok, "uring") == 0) {
			o->uring = true;
		} else if (strcmp(tok, "nouring") == 0) {
			o->uring = false;
		} else if (strncmp(tok, "max_read=", 9) == 0) {
			/* libfuse ends the session at FUSE_INIT unless init() asks for the
			 * same size, and the daemon exited 0 without a mount */
			cow_err("max_read=%s: not supported", tok + 9);
			return -EINVAL;
		} else if (strcmp(tok, "debug") == 0) {
			o->debug = o->foreground = true;
		} else if (strcmp(tok, "allow_other") == 0 || strcmp(tok, "default_permissions") == 0 ||
			   ignored_option(tok)) {
			continue;
		} else {
			size_t l = strlen(o->fuse_opts);
			if (l + strlen(tok) + 2 >= sizeof o->fuse_opts)
				return -E2BIG;
			snprintf(o->fuse_opts + l, sizeof o->fuse_opts - l, ",%s", tok);
		}
	}
	return 0;
}

/* The reaper deleted a branch: the kernel must forget its entry. */
static void reaped(void *ctx, const char *what, const struct cow_ref *ref)
{
	if (strcmp(what, "expired") == 0)
		cow_fuse_branch_changed(ctx, false, ref->name);
}

/* The absolute path of PATH when its last component cannot be looked at
 * (a dead mount answers ENOTCONN): the resolved parent plus the name. */
static int resolve_unreachable(const char *path, char ret_path[PATH_MAX])
{
	char a[PATH_MAX], b[PATH_MAX], dir[PATH_MAX];
	if (snprintf(a, sizeof a, "%s", path) >= (int)sizeof a)
		return -ENAMETOOLONG;
	memcpy(b, a, sizeof b);
	const char *name = basename(b);
	if (!realpath(dirname(a), dir))
		return -errno;
	if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "/"))
		return -ENOTCONN;
	if (snprintf(ret_path, PATH_MAX, "%s/%s", strcmp(dir, "/") ? dir : "", name) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* MNT answers ENOTCONN: a FUSE mount whose daemon is gone.  We hold STORE's
 * lock, so no daemon serves STORE.  If the topmost mount at MNT is a cowfs
 * mount of STORE, it is what a killed daemon of this store left behind
 * (kill -9, a crash, the OOM killer): detach it, so that a restart (by hand,
 * or systemd's Restart=on-failure) needs no umount first.  A dead mount of
 * anything else is not ours to touch: -ENOTCONN. */
static int replace_dead_mount(const char *store, const char *mnt)
{
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	bool ours = false;
	struct mntent m;
	char buf[3 * PATH_MAX];
	while (getmntent_r(f, &m, buf, sizeof buf))
		if (strcmp(m.mnt_dir, mnt) == 0) /* the last line for MNT is the topmost mount */
			ours = strcmp(m.mnt_type, "fuse.cowfs") == 0 && strcmp(m.mnt_fsname, store) == 0;
	endmntent(f);
	if (!ours)
		return -ENOTCONN;
	if (umount2(mnt, MNT_DETACH) < 0)
		return -errno;
	cow_warn("detached the dead mount of %s at %s left by a daemon that died", store, mnt);
	struct stat st;
	if (stat(mnt, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

struct ready {
	const char *store, *mnt;
	bool control; /* the control socket listens */
};

/* Report READY=1 once the mount answers.  statfs(2) on a FUSE mount is
 * always a request to this daemon (the kernel caches nothing for it), and
 * the kernel holds every request until the session loop has answered
 * FUSE_INIT: when statfs returns, the loop serves requests. */
static void *announce_ready(void *arg)
{
	const struct ready *rd = arg;
	struct statfs sf;
	int r = statfs(rd->mnt, &sf) < 0 ? -errno : sf.f_type != FUSE_SUPER_MAGIC ? -EXDEV : 0;
	if (r < 0) {
		cow_warn("%s does not answer as our mount (%s); not reporting readiness", rd->mnt, strerror(-r));
		return NULL;
	}
	r = cow_notifyf("READY=1\nSTATUS=serving %s at %s%s", rd->store, rd->mnt,
			    rd->control ? "" : " without a control socket (branch commands fail)");
	if (r < 0)
		cow_warn("cannot tell the service manager that the mount is ready: %s", strerror(-r));
	return NULL;
}

int main(int argc, char **argv)
{
	const char *prog = basename(argv[0]);
	cow_msg_set_prefix(prog);
	int notifying = cow_notify_init();
	if (notifying < 0)
		cow_warn("NOTIFY_SOCKET: %s; the service manager will not hear when the mount is ready",
			 strerror(-notifying));
	struct opts o = { .checkpoint = 30,
			  .reap = 60,
			  .autogc = COW_GC_AUTO_PCT_DEFAULT,
			  .autogc_busy = COW_GC_AUTO_BUSY_DEFAULT,
			  .grace = COW_FS_GRACE_DEFAULT,
			  .timeout = 60.0,
			  .writeback = true };
	static const struct option longopts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "fdsnvho:", longopts, NULL)) != -1) {
		switch (c) {
		case 'f': o.foreground = true; break;
		case 'd': o.debug = o.foreground = true; break;
		case 's': case 'n': case 'v': break; /* mount(8) helper flags: nothing to do */
		case 'o':
			if (parse_o(&o, optarg) < 0)
				return 2;
			break;
		case 'h': usage(stdout, prog); return 0;
		default: usage(stderr, prog); return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr, prog);
		return 2;
	}
	char store[PATH_MAX], mnt[PATH_MAX];
	if (!realpath(argv[optind], store)) {
		cow_err("store %s: %s", argv[optind], strerror(errno));
		return 1;
	}
	struct stat st;
	bool dead_mount = false;
	if (!realpath(argv[optind + 1], mnt) || stat(mnt, &st) < 0) {
		int e = errno;
		/* perhaps the corpse of this store's last daemon: see replace_dead_mount() */
		if (e == ENOTCONN && resolve_unreachable(argv[optind + 1], mnt) == 0) {
			dead_mount = true;
		} else {
			cow_err("mountpoint %s: %s", argv[optind + 1], strerror(e));
			return 1;
		}
	}
	if (!dead_mount && !S_ISDIR(st.st_mode)) {
		cow_err("mountpoint %s: not a directory", mnt);
		return 1;
	}

	/* Options are checked (by libfuse) before the store is opened and perhaps
	 * recovered: bad input changes nothing. */
	struct cow_fuse ctx = { .timeout = o.timeout, .writeback_cache = o.writeback };
	clock_gettime(CLOCK_REALTIME, &ctx.mounted);
	char fsname[PATH_MAX + sizeof o.fuse_opts + 128];
	snprintf(fsname, sizeof fsname, "-osubtype=cowfs,fsname=%s,allow_other,default_permissions%s", store,
		 o.fuse_opts);
	char *fargv[] = { argv[0], fsname, o.debug ? "-d" : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(o.debug ? 3 : 2, fargv);
	struct fuse_session *se = fuse_session_new(&args, &cow_fuse_ops, sizeof cow_fuse_ops, &ctx);
	fuse_opt_free_args(&args);
	if (!se) /* libfuse has said why (an unknown option, usually) */
		return 1;
	/* One descriptor per log segment stays open: allow as many as the system does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* tests/pg/crash.sh's simulated power cut (powercut.h) */
	bool powercut = getenv("COWFS_TEST_POWERCUT") && strcmp(getenv("COWFS_TEST_POWERCUT"), "1") == 0;
	int pa;
	if (powercut && (pa = cow_powercut_arm()) < 0) {
		cow_err("COWFS_TEST_POWERCUT: %s", strerror(-pa));
		fuse_session_destroy(se);
		return 1;
	}
	unsigned said = cow_msg_count();
	cow_notifyf("STATUS=recovering %s", store);
	int r = cow_fs_open(store, &ctx.fs);
	if (r < 0) {
		if (cow_msg_count() == said) /* the reason was not given yet */
			cow_err("cannot open store %s: %s", store, strerror(-r));
		fuse_session_destroy(se);
		return 1;
	}
	if (dead_mount && (r = replace_dead_mount(store, mnt)) < 0) {
		cow_err("mountpoint %s: %s", mnt, strerror(-r));
		fuse_session_destroy(se);
		cow_fs_close(ctx.fs);
		return 1;
	}

	ctx.se = se;
	if (fuse_set_signal_handlers(se) < 0 || fuse_session_mount(se, mnt) < 0) {
		cow_err("cannot mount %s at %s", store, mnt);
		fuse_session_destroy(se);
		cow_fs_close(ctx.fs);
		return 1;
	}
	if (o.uring) {
		int ur = cow_uring_attach(se, URING_THREADS);
		if (ur < 0)
			cow_warn("FUSE over io_uring: not used (%s)", strerror(-ur));
	}
	/* Only with the write-back cache do writes wait for the dirty limit. */
	int flusher = 1; /* not asked */
	if (o.writeback && !o.strictlimit) {
		flusher = cow_writeback_flusher(); /* where allowed: writeback.h */
		int wr = cow_writeback_lift(mnt);
		if (wr < 0)
			cow_info("the kernel's dirty-page cap for FUSE stays (%s): writes may wait for the daemon sooner",
				 strerror(-wr));
	}
	if (!o.foreground) {
		char logpath[PATH_MAX + 16];
		snprintf(logpath, sizeof logpath, "%s/cowfsd.log", store);
		FILE *logf = fopen(logpath, "a");
		if (!logf)
			cow_warn("cannot open %s (%s): messages after detaching are lost", logpath, strerror(errno));
		if (fuse_daemonize(0) < 0) {
			cow_err("cannot detach from the terminal");
			fuse_session_unmount(se);
			fuse_session_destroy(se);
			cow_fs_close(ctx.fs);
			return 1;
		}
		if (logf)
			cow_msg_set_file(logf);
		cow_fs_note_pid(ctx.fs);
	}
	cow_info("serving %s at %s", store, mnt);
	if (flusher == 0)
		cow_info("marked an I/O flusher: writes to the store are throttled on its own device only");
	else if (flusher < 0)
		cow_info("not marked an I/O flusher (%s): writes to the store may also wait for the mount's "
			 "dirty pages to be written back", flusher == -EPERM ? "no CAP_SYS_RESOURCE" : strerror(-flusher));
	if (powercut) {
		int pr = cow_powercut_start();
		if (pr < 0)
			cow_err("COWFS_TEST_POWERCUT: %s", strerror(-pr));
		else
			cow_warn("COWFS_TEST_POWERCUT=1: SIGUSR2 cuts the power (garbles unsynced log writes, exits)");
	}
	r = cow_fs_start_checkpointer(ctx.fs, o.checkpoint);
	if (r < 0)
		cow_err("cannot start the checkpointer: %s", strerror(-r));
	cow_fs_set_grace(ctx.fs, o.grace);
	int rr = cow_fs_start_reaper(ctx.fs, o.reap, reaped, &ctx);
	if (rr < 0)
		cow_err("cannot start the expiry reaper: %s", strerror(-rr));
	if (powercut && o.autogc) {
		/* a dropped segment's descriptor may be reused under the simulation */
		cow_warn("COWFS_TEST_POWERCUT=1: no automatic gc");
		o.autogc = 0;
	}
	if ((rr = cow_fs_start_cleaner(ctx.fs, o.autogc, o.autogc_busy)) < 0)
		cow_err("cannot start the automatic gc: %s; run cowfs gc now and then", strerror(-rr));
	if (o.noreclaim)
		cow_fs_set_reclaim(ctx.fs, false);
	/* Without its control socket the mount still serves its branches. */
	struct cow_control *control = NULL;
	int cr = cow_control_start(ctx.fs, cow_fuse_branch_changed, &ctx, &control);
	if (cr < 0)
		cow_err("cannot start the control socket: %s; branch commands will not work", strerror(-cr));
	/* Postgres on branches: socket directories, on-demand listeners */
	struct cow_pgd *pgd = NULL;
	int pr = cow_pgd_start(ctx.fs, mnt, NULL, &pgd);
	if (pr < 0)
		cow_err("cannot start the Postgres helper: %s; 'cowfs pg' will not work", strerror(-pr));
	cow_control_set_pgd(control, pgd);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	/* Workers, once started, are kept (the idle limit is the most there may
	 * be).  With a lower one, each write-back burst that kept them all busy
	 * had libfuse start threads and stop them again, about 40 a second
	 * under TPC-B, and commits were slower for it (docs/PERFORMANCE.md). */
	const unsigned workers = 32;
	fuse_loop_cfg_set_max_threads(cfg, workers);
	fuse_loop_cfg_set_idle_threads(cfg, workers);
	struct ready rd = { .store = store, .mnt = mnt, .control = cr == 0 };
	pthread_t ready_thread;
	bool ready_started = false;
	if (notifying > 0 && r == 0) {
		int tr = pthread_create(&ready_thread, NULL, announce_ready, &rd);
		if (tr)
			cow_warn("cannot start the readiness check: %s", strerror(tr));
		ready_started = tr == 0;
	}
	int loop = r < 0 ? r : fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* The session is over.  A SIGTERM now (systemd's, after an umount by
	 * hand, or a second one) must not cut the final checkpoint short. */
	fuse_remove_signal_handlers(se);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	cow_notify("STOPPING=1\nSTATUS=unmounting; final checkpoint");
	cow_control_stop(control);
	/* After a signal the mount is still there, and so may be Postgres on
	 * it: pgd stops it while serving the mount (an unmount ends the loop
	 * only once nothing uses the mount). */
	cow_pgd_stop(pgd, loop > 0 ? se : NULL);
	/* Unmounting ends the connection, which fails a statfs still waiting. */
	fuse_session_unmount(se);
	cow_uring_stop();
	if (ready_started)
		pthread_join(ready_thread, NULL);
	fuse_session_destroy(se);
	r = cow_fs_close(ctx.fs);
	if (r < 0)
		cow_err("final checkpoint failed: %s (the log still holds every synced change)", strerror(-r));
	else
		cow_info("unmounted %s; store checkpointed", mnt);
	/* The loop returns a signal number after SIGTERM/SIGINT/SIGHUP: a clean stop. */
	return loop < 0 || r < 0;
}
