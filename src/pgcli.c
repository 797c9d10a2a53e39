#include "pgcli.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "pg.h"
#include "ref.h"
#include "util.h"

#define START_TIMEOUT_S 300

struct opts {
	const char *store, *mnt, *bindir, *format, *user, *dbname, *mode, *idle, *log;
	const char *pgopts; /* for pg_ctl -o */
	unsigned timeout;
	bool json, all;
};

/* What the daemon says about a branch's Postgres (pg.info). */
struct target {
	char store[4096];
	char name[COW_NAME_LEN + 1];
	char datadir[4200];
	char sockdir[512];
	uint16_t port;
	uid_t owner;
	bool on_demand, cluster;
	uint32_t idle;
	char state[16];
	pid_t pid;
	time_t started;
};

static bool quiet; /* around a branch reset with --json: nothing on stdout */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	if (quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cowfs pg COMMAND [OPTIONS] BRANCH\n"
		"  start BRANCH [--timeout SECONDS] [--log FILE]   start Postgres on the branch (as its owner)\n"
		"  stop BRANCH [--mode smart|fast|immediate]       stop it (default fast)\n"
		"  stop --all [--mode ...]                         stop every Postgres on the store's branches\n"
		"  restart BRANCH                                  stop if running, then start\n"
		"  status [BRANCH] [--json]                        pid, port, socket directory, uptime\n"
		"  env BRANCH [--format sh|dotenv|json] [--user U] [--dbname D]\n"
		"                                                  PGHOST, PGPORT, PGDATABASE, PGUSER, DATABASE_URL\n"
		"  psql [OPTIONS] BRANCH [PSQL ARGS...]            run psql on the branch\n"
		"  ondemand BRANCH on|off [--idle DURATION]        start at the first connection, stop when idle\n"
		"                                                  (DURATION: 90, 90s, 10m, 1h; default 10m)\n"
		"  initdb [OPTIONS] BRANCH [INITDB ARGS...]        create a cluster in the branch (as its owner)\n"
		"Options: --store STORE, --mount MOUNTPOINT, --bindir DIR (Postgres programs).\n"
		"Exit status: 0 done, 1 failure, 2 bad usage, 3 Postgres not running.  See cowfs(1).\n");
}

/* "90", "90s", "10m", "1h", "1d" -> seconds; -1 if malformed. */
/* A duration of at most a week (util.h's syntax), or -1. */
static long parse_duration(const char *s)
{
	int64_t v;
	return cow_parse_duration(s, &v) < 0 || v > 7 * 86400 ? -1 : (long)v;
}

/* The mount point of STORE (its source in /proc/mounts), or "". */
static void mount_of(const char *store, char *out, size_t n)
{
	out[0] = 0;
	FILE *f = fopen("/proc/mounts", "re");
	char line[8192];
	while (f && fgets(line, sizeof line, f)) {
		char src[4096], dir[4096], type[64];
		if (sscanf(line, "%4095s %4095s %63s", src, dir, type) == 3 && strcmp(type, "fuse.cowfs") == 0 &&
		    strcmp(src, store) == 0)
			snprintf(out, n, "%s", dir);
	}
	if (f)
		fclose(f);
}

static int reply_error(json_t *reply)
{
	json_t *e = json_object_get(reply, "error");
	json_t *code = json_object_get(reply, "code");
	cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
	return json_is_string(code) && strcmp(json_string_value(code), "not_running") == 0 ? 3 : 1;
}

/* Send REQ (taken) to STORE's daemon: its reply if that says ok; else NULL
 * after a message, *RET_STATUS then being the exit status (3: not running). */
static json_t *ask(const char *store, json_t *req, int *ret_status)
{
	json_t *reply = request(store, req);
	json_decref(req);
	*ret_status = 1;
	if (!reply)
		return NULL;
	if (!json_is_true(json_object_get(reply, "ok"))) {
		*ret_status = reply_error(reply);
		json_decref(reply);
		return NULL;
	}
	*ret_status = 0;
	return reply;
}

static void target_from(json_t *pg, struct target *t)
{
	const char *s;
	snprintf(t->name, sizeof t->name, "%s", (s = json_string_value(json_object_get(pg, "name"))) ? s : "");
	snprintf(t->datadir, sizeof t->datadir, "%s", (s = json_string_value(json_object_get(pg, "data_dir"))) ? s : "");
	snprintf(t->sockdir, sizeof t->sockdir, "%s", (s = json_string_value(json_object_get(pg, "socket_dir"))) ? s : "");
	snprintf(t->state, sizeof t->state, "%s", (s = json_string_value(json_object_get(pg, "state"))) ? s : "");
	t->port = (uint16_t)json_integer_value(json_object_get(pg, "port"));
	t->owner = (uid_t)json_integer_value(json_object_get(pg, "owner"));
	t->on_demand = json_is_true(json_object_get(pg, "on_demand"));
	t->cluster = json_is_true(json_object_get(pg, "cluster"));
	t->idle = (uint32_t)json_integer_value(json_object_get(pg, "idle_timeout"));
	t->pid = (pid_t)json_integer_value(json_object_get(pg, "pid"));
	t->started = (time_t)json_integer_value(json_object_get(pg, "started"));
}

static int locate(const struct opts *o, char *store, size_t n)
{
	char found[4096];
	if (find_store(o->store, o->mnt, found, sizeof found) < 0)
		return -1;
	if (!realpath(found, store)) {
		cow_err("%s: %s", found, strerror(errno));
		return -1;
	}
	(void)n;
	return 0;
}

/* May the caller VERB the Postgres of branch NAME, owned by OWNER (its own
 * branch, or root)?  If not, says why. */
static bool caller_may(const char *name, uid_t owner, const char *verb)
{
	if (getuid() == 0 || getuid() == owner)
		return true;
	char u[64];
	cow_err("branch '%s' belongs to %s (uid %u): only that user or root may %s its Postgres", name,
		user_name(owner, u, sizeof u), (unsigned)owner, verb);
	return false;
}

/* Find NAME's store, check (through the mount, so that it works without
 * the daemon) that it exists and that the caller may VERB its Postgres
 * (VERB NULL: anyone may), then ask the daemon.  1 after printing why. */
static int target_get(const struct opts *o, const char *name, const char *verb, struct target *t)
{
	memset(t, 0, sizeof *t);
	const char *why = cow_ref_check_name(name);
	if (why) {
		cow_err("bad branch name '%s': %s", name, why);
		return 1;
	}
	if (locate(o, t->store, sizeof t->store) < 0)
		return 1;
	char mnt[4096];
	if (o->mnt) {
		if (!realpath(o->mnt, mnt))
			mnt[0] = 0;
	} else {
		mount_of(t->store, mnt, sizeof mnt);
	}
	if (mnt[0]) {
		char dir[4200];
		struct stat st;
		snprintf(dir, sizeof dir, "%s/%s", mnt, name);
		if (stat(dir, &st) < 0) {
			if (errno == ENOENT)
				cow_err("no branch '%s'", name);
			else
				cow_err("%s: %s", dir, strerror(errno));
			return 1;
		}
		if (verb && !caller_may(name, st.st_uid, verb))
			return 1;
	}
	int r;
	json_t *reply = ask(t->store, json_pack("{s:s, s:s}", "cmd", "pg.info", "name", name), &r);
	if (!reply)
		return 1;
	target_from(json_object_get(reply, "pg"), t);
	json_decref(reply);
	return 0;
}

/* Ask the daemon CMD about T (on-demand start/stop); prints the outcome. */
static int daemon_pg(struct target *t, const char *cmd, json_t **ret)
{
	int r;
	json_t *reply = ask(t->store, json_pack("{s:s, s:s}", "cmd", cmd, "name", t->name), &r);
	if (!reply)
		return r;
	target_from(json_object_get(reply, "pg"), t);
	if (ret)
		*ret = reply;
	else
		json_decref(reply);
	return 0;
}

static int bindir_for(const struct opts *o, const struct target *t, char *out, size_t n)
{
	char ver[16];
	bool known = t && cow_pg_cluster_version(t->datadir, ver, sizeof ver) == 0;
	return cow_pg_bindir(o->bindir, known ? ver : NULL, out, n) < 0 ? 1 : 0;
}

/* Run BINDIR/PROG ARGS... as T's owner; its standard error goes into ERR
 * (one line, for a message).  The exit status, or -errno. */
static int run_as_owner(const struct target *t, const char *bindir, char *const argv[], char *err, size_t en)
{
	struct cow_pg_user u;
	cow_pg_user_get(t->owner, &u);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid;
	int r = cow_pg_spawn(&u, bindir, argv, NULL, -1, p[1], &pid);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		return r;
	}
	char buf[8192];
	size_t used = 0;
	ssize_t got;
	while ((got = read(p[0], buf + used, sizeof buf - 1 - used)) > 0 || (got < 0 && errno == EINTR))
		if (got > 0)
			used += (size_t)got;
	close(p[0]);
	buf[used] = 0;
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (err && en) {
		/* the first line that says something */
		char *line = buf, *nl;
		while (*line == '\n')
			line++;
		if ((nl = strchr(line, '\n')))
			*nl = 0;
		if ((size_t)snprintf(err, en, "%s", line) >= en)
			err[en - 1] = 0;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool running(const struct target *t)
{
	return strcmp(t->state, "running") == 0 || strcmp(t->state, "starting") == 0;
}

/* ---- start / stop --------------------------------------------------------------- */

static int do_stop(const struct opts *o, struct target *t, bool quiet_not_running)
{
	if (t->on_demand) {
		int r = daemon_pg(t, "pg.stop", NULL);
		if (r == 0)
			say("stopped Postgres on branch %s (on demand: the next connection starts it again)\n", t->name);
		return r;
	}
	if (!running(t)) {
		if (quiet_not_running)
			return 0;
		cow_err("Postgres is not running on branch '%s'", t->name);
		return 3;
	}
	const char *mode = o->mode ? o->mode : "fast";
	if (strcmp(mode, "smart") != 0 && strcmp(mode, "fast") != 0 && strcmp(mode, "immediate") != 0) {
		cow_err("--mode %s: give smart, fast or immediate", mode);
		return 2;
	}
	char bindir[4096], prog[4200], err[512] = "", timeout[16];
	if (bindir_for(o, t, bindir, sizeof bindir))
		return 1;
	snprintf(prog, sizeof prog, "%s/pg_ctl", bindir);
	snprintf(timeout, sizeof timeout, "%u", o->timeout ? o->timeout : START_TIMEOUT_S);
	char *argv[] = { prog, "-D", t->datadir, "-m", (char *)mode, "-w", "-t", timeout, "-s", "stop", NULL };
	int r = run_as_owner(t, bindir, argv, err, sizeof err);
	if (r != 0) {
		cow_err("cannot stop Postgres on branch '%s': %s", t->name, r < 0 ? strerror(-r) : err);
		return 1;
	}
	say("stopped Postgres on branch %s\n", t->name);
	return 0;
}

/* stop --all: every Postgres running on the store's branches, started by
 * hand or on demand; 1 if any could not be stopped. */
static int do_stop_all(const struct opts *o)
{
	char store[4096];
	if (locate(o, store, sizeof store) < 0)
		return 1;
	int r;
	json_t *reply = ask(store, json_pack("{s:s}", "cmd", "pg.list"), &r);
	if (!reply)
		return r;
	size_t i, n = 0;
	json_t *pg;
	r = 0;
	json_array_foreach(json_object_get(reply, "branches"), i, pg) {
		struct target t;
		memset(&t, 0, sizeof t);
		target_from(pg, &t);
		snprintf(t.store, sizeof t.store, "%s", store);
		if (!running(&t))
			continue;
		n++;
		if (!caller_may(t.name, t.owner, "stop") || do_stop(o, &t, true) != 0)
			r = 1;
	}
	json_decref(reply);
	if (n == 0)
		say("no Postgres runs on this store's branches\n");
	return r;
}

static int do_start(const struct opts *o, struct target *t)
{
	if (!t->cluster) {
		cow_err("branch '%s' holds no Postgres cluster (no PG_VERSION in %s): create one with 'cowfs pg initdb %s'",
			t->name, t->datadir, t->name);
		return 1;
	}
	if (t->on_demand) {
		bool was = running(t);
		int r = daemon_pg(t, "pg.start", NULL);
		if (r == 0)
			say("%s Postgres on branch %s (on demand): pid %d, port %u, socket directory %s\n",
			       was ? "already running:" : "started", t->name, (int)t->pid, (unsigned)t->port, t->sockdir);
		return r;
	}
	if (running(t)) {
		say("Postgres already runs on branch %s: pid %d, port %u, socket directory %s\n", t->name, (int)t->pid,
		       (unsigned)t->port, t->sockdir);
		return 0;
	}
	if (t->owner == 0) {
		cow_err("%s belongs to root, and Postgres does not run as root: give the branch to the user that should "
			"run it (chown)", t->datadir);
		return 1;
	}
	if (cow_pg_port_bound(t->port)) {
		char comm[64] = "";
		pid_t pid = cow_pg_port_user(t->port, comm, sizeof comm);
		if (pid)
			cow_err("port %u of branch '%s' is in use by another program (pid %d, %s); nothing started",
				(unsigned)t->port, t->name, (int)pid, comm);
		else
			cow_err("port %u of branch '%s' is in use by another program; nothing started", (unsigned)t->port,
				t->name);
		return 1;
	}
	struct cow_pg_user u;
	cow_pg_user_get(t->owner, &u);
	/* the branch's own settings, so that a hand-typed pg_ctl uses them too */
	int r = cow_pg_settings_write_path(t->datadir, t->port, t->sockdir, u.uid, u.gid);
	if (r < 0) {
		cow_err("cannot write the port of branch '%s' into %s/%s: %s", t->name, t->datadir, COW_PG_SETTINGS_FILE,
			strerror(-r));
		return 1;
	}
	char bindir[4096], prog[4200], err[512] = "", timeout[16], log[600];
	if (bindir_for(o, t, bindir, sizeof bindir))
		return 1;
	snprintf(prog, sizeof prog, "%s/pg_ctl", bindir);
	snprintf(timeout, sizeof timeout, "%u", o->timeout ? o->timeout : START_TIMEOUT_S);
	snprintf(log, sizeof log, "%s", o->log ? o->log : "");
	if (!o->log)
		snprintf(log, sizeof log, "%s/postgres.log", t->sockdir);
	struct stat st;
	off_t log_start = stat(log, &st) == 0 ? st.st_size : 0;
	char *argv[] = { prog, "-D", t->datadir, "-l", log, "-w", "-t", timeout, "-s", "start", NULL, NULL, NULL };
	if (o->pgopts && *o->pgopts) {
		argv[10] = argv[9];
		argv[9] = "-o";
		argv[11] = argv[10];
		argv[10] = (char *)o->pgopts;
	}
	r = run_as_owner(t, bindir, argv, err, sizeof err);
	if (r != 0) {
		char reason[700];
		if (r < 0)
			snprintf(reason, sizeof reason, "%s", strerror(-r));
		else
			cow_pg_log_reason(log, log_start, reason, sizeof reason);
		/* nothing left half started */
		pid_t pid = cow_pg_running(t->datadir);
		if (pid) {
			char *stop[] = { prog, "-D", t->datadir, "-m", "immediate", "-w", "-s", "stop", NULL };
			run_as_owner(t, bindir, stop, NULL, 0);
		}
		cow_err("cannot start Postgres on branch '%s': %s", t->name, reason);
		return 1;
	}
	struct cow_pg_pid p = { 0 };
	cow_pg_pid_read(t->datadir, &p);
	say("started Postgres on branch %s: pid %d, port %u, socket directory %s (log: %s)\n", t->name, (int)p.pid,
	       (unsigned)t->port, t->sockdir, log);
	return 0;
}

/* ---- status / env / psql / ondemand / initdb ------------------------------------- */

static void status_line(json_t *pg)
{
	struct target t;
	target_from(pg, &t);
	char pid[16] = "-", up[16] = "-", mode[64] = "manual", port[8] = "-", idle[16];
	if (t.pid) {
		snprintf(pid, sizeof pid, "%d", (int)t.pid);
		cli_duration(COW_MAX((long)(time(NULL) - t.started), 0L), up, sizeof up);
	}
	if (t.port)
		snprintf(port, sizeof port, "%u", (unsigned)t.port);
	if (t.on_demand) {
		cli_duration((long)t.idle, idle, sizeof idle);
		snprintf(mode, sizeof mode, "on demand (idle %s)%s", idle,
			 json_is_false(json_object_get(pg, "listening")) ? ", NOT LISTENING" : "");
	}
	printf("%-24s %-9s %-8s %-6s %-40s %-7s %s\n", t.name, t.state, pid, port, t.sockdir[0] ? t.sockdir : "-", up,
	       mode);
	json_t *e = json_object_get(pg, "error");
	if (json_is_string(e))
		printf("    %s\n", json_string_value(e));
}

static int do_status(const struct opts *o, const char *name)
{
	struct target t;
	char store[4096];
	json_t *req, *reply, *list;
	if (name) {
		if (target_get(o, name, NULL, &t))
			return 1;
		req = json_pack("{s:s, s:s}", "cmd", "pg.info", "name", name);
		snprintf(store, sizeof store, "%s", t.store);
	} else {
		if (locate(o, store, sizeof store) < 0)
			return 1;
		req = json_pack("{s:s}", "cmd", "pg.list");
	}
	int r;
	if (!(reply = ask(store, req, &r)))
		return r;
	list = name ? json_object_get(reply, "pg") : json_object_get(reply, "branches");
	if (o->json) {
		char *text = json_dumps(list, JSON_COMPACT);
		puts(text);
		free(text);
	} else {
		printf("%-24s %-9s %-8s %-6s %-40s %-7s %s\n", "BRANCH", "STATE", "PID", "PORT", "SOCKET DIRECTORY",
		       "UPTIME", "MODE");
		if (name) {
			status_line(list);
		} else {
			size_t i;
			json_t *pg;
			json_array_foreach(list, i, pg) status_line(pg);
		}
	}
	if (name) {
		target_from(list, &t);
		r = running(&t) ? 0 : 3;
	}
	json_decref(reply);
	return r;
}

/* The database user: --user, else the owner of the branch (initdb's default superuser). */
static void db_user(const struct opts *o, const struct target *t, char *out, size_t n)
{
	if (o->user)
		snprintf(out, n, "%s", o->user);
	else
		user_name(t->owner, out, n);
}

static int do_env(const struct opts *o, const char *name)
{
	struct target t;
	if (target_get(o, name, NULL, &t))
		return 1;
	const char *fmt = o->format ? o->format : "sh";
	char user[64], port[8], url[1024];
	const char *db = o->dbname ? o->dbname : "postgres";
	db_user(o, &t, user, sizeof user);
	snprintf(port, sizeof port, "%u", (unsigned)t.port);
	snprintf(url, sizeof url, "postgresql://%s@127.0.0.1:%u/%s", user, (unsigned)t.port, db);
	const char *keys[] = { "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "DATABASE_URL" };
	const char *vals[] = { t.sockdir, port, db, user, url };
	if (strcmp(fmt, "json") == 0) {
		json_t *j = json_object();
		for (size_t i = 0; i < COW_ARRAY_SIZE(keys); i++)
			json_object_set_new(j, keys[i], json_string(vals[i]));
		char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
		json_decref(j);
	} else if (strcmp(fmt, "sh") == 0 || strcmp(fmt, "dotenv") == 0) {
		for (size_t i = 0; i < COW_ARRAY_SIZE(keys); i++) {
			/* the values hold no quote: names, paths of branch names, numbers */
			if (strcmp(fmt, "sh") == 0)
				printf("export %s='%s'\n", keys[i], vals[i]);
			else
				printf("%s=%s\n", keys[i], vals[i]);
		}
	} else {
		cow_err("--format %s: give sh, dotenv or json", fmt);
		return 2;
	}
	return 0;
}

static int do_psql(const struct opts *o, const char *name, int argc, char **argv)
{
	struct target t;
	if (target_get(o, name, NULL, &t))
		return 1;
	char bindir[4096], prog[4200], user[64], port[8];
	if (bindir_for(o, &t, bindir, sizeof bindir))
		return 1;
	snprintf(prog, sizeof prog, "%s/psql", bindir);
	db_user(o, &t, user, sizeof user);
	snprintf(port, sizeof port, "%u", (unsigned)t.port);
	setenv("PGHOST", t.sockdir, 1);
	setenv("PGPORT", port, 1);
	setenv("PGUSER", user, 1);
	setenv("PGDATABASE", o->dbname ? o->dbname : "postgres", 1);
	char **args = calloc((size_t)argc + 2, sizeof *args);
	if (!args)
		return 1;
	args[0] = prog;
	for (int i = 0; i < argc; i++)
		args[i + 1] = argv[i];
	fflush(stdout);
	execv(prog, args);
	cow_err("cannot run %s: %s", prog, strerror(errno));
	return 1;
}

static int do_ondemand(const struct opts *o, const char *name, const char *onoff)
{
	bool on;
	if (strcmp(onoff, "on") == 0)
		on = true;
	else if (strcmp(onoff, "off") == 0)
		on = false;
	else {
		usage(stderr);
		return 2;
	}
	long idle = 0;
	if (o->idle && ((idle = parse_duration(o->idle)) <= 0)) {
		cow_err("--idle %s: give a duration from 1s to 7d (90, 90s, 10m, 1h, 1d)", o->idle);
		return 2;
	}
	struct target t;
	if (target_get(o, name, "manage", &t))
		return 1;
	json_t *req = json_pack("{s:s, s:s, s:b}", "cmd", "pg.ondemand", "name", name, "on", (int)on);
	if (o->idle)
		json_object_set_new(req, "idle", json_integer(idle));
	int r;
	json_t *reply = ask(t.store, req, &r);
	if (!reply)
		return r;
	target_from(json_object_get(reply, "pg"), &t);
	char d[16];
	cli_duration((long)t.idle, d, sizeof d);
	if (on)
		printf("branch %s: Postgres starts at the first connection to port %u or %s, and stops after %s "
		       "without one\n", name, (unsigned)t.port, t.sockdir, d);
	else
		printf("branch %s: Postgres no longer on demand (start it with 'cowfs pg start %s')\n", name, name);
	json_decref(reply);
	return 0;
}

static int do_initdb(const struct opts *o, const char *name, int argc, char **argv)
{
	struct target t;
	if (target_get(o, name, "initialise", &t))
		return 1;
	if (t.cluster) {
		cow_err("branch '%s' already holds a Postgres cluster (%s/PG_VERSION)", name, t.datadir);
		return 1;
	}
	if (t.owner == 0) {
		cow_err("%s belongs to root, and Postgres does not run as root: give the branch to the user that should "
			"run it (chown)", t.datadir);
		return 1;
	}
	char bindir[4096], prog[4200], err[512] = "";
	if (bindir_for(o, NULL, bindir, sizeof bindir))
		return 1;
	snprintf(prog, sizeof prog, "%s/initdb", bindir);
	char **args = calloc((size_t)argc + 4, sizeof *args);
	if (!args)
		return 1;
	int k = 0;
	args[k++] = prog;
	args[k++] = "-D";
	args[k++] = t.datadir;
	for (int i = 0; i < argc; i++)
		args[k++] = argv[i];
	int r = run_as_owner(&t, bindir, args, err, sizeof err);
	free(args);
	if (r != 0) {
		cow_err("initdb on branch '%s' failed: %s", name, r < 0 ? strerror(-r) : err);
		return 1;
	}
	struct cow_pg_user u;
	cow_pg_user_get(t.owner, &u);
	if ((r = cow_pg_settings_write_path(t.datadir, t.port, t.sockdir, u.uid, u.gid)) < 0) {
		cow_err("cannot write the port of branch '%s' into %s/%s: %s", name, t.datadir, COW_PG_SETTINGS_FILE,
			strerror(-r));
		return 1;
	}
	printf("created a Postgres cluster on branch %s (port %u, socket directory %s)\n", name, (unsigned)t.port,
	       t.sockdir);
	return 0;
}

/* ---- entry points ------------------------------------------------------------------ */

int pgcli_main(int argc, char **argv)
{
	struct opts o = { 0 };
	const char *sub = NULL, *name = NULL, *extra = NULL;
	int rest = argc; /* psql / initdb: arguments from here on are theirs */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **val = strcmp(a, "--store") == 0    ? &o.store
				   : strcmp(a, "--mount") == 0  ? &o.mnt
				   : strcmp(a, "--bindir") == 0 ? &o.bindir
				   : strcmp(a, "--format") == 0 ? &o.format
				   : strcmp(a, "--user") == 0   ? &o.user
				   : strcmp(a, "--dbname") == 0 ? &o.dbname
				   : strcmp(a, "--mode") == 0   ? &o.mode
				   : strcmp(a, "--idle") == 0   ? &o.idle
				   : strcmp(a, "--log") == 0    ? &o.log
								: NULL;
		if (val) {
			if (i + 1 >= argc)
				goto usage;
			*val = argv[++i];
		} else if (strcmp(a, "--timeout") == 0) {
			long s = i + 1 < argc ? parse_duration(argv[++i]) : -1;
			if (s <= 0)
				goto usage;
			o.timeout = (unsigned)s;
		} else if (strcmp(a, "--json") == 0) {
			o.json = true;
		} else if (strcmp(a, "--all") == 0) {
			o.all = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (a[0] == '-' && a[1]) {
			goto usage;
		} else if (!sub) {
			sub = a;
		} else if (!name) {
			name = a;
			if (strcmp(sub, "psql") == 0 || strcmp(sub, "initdb") == 0) {
				rest = i + 1;
				if (rest < argc && strcmp(argv[rest], "--") == 0)
					rest++;
				break;
			}
		} else if (!extra) {
			extra = a;
		} else {
			goto usage;
		}
	}
	if (!sub)
		goto usage;
	if (o.all) {
		if (strcmp(sub, "stop") != 0 || name)
			goto usage;
		return do_stop_all(&o);
	}
	if (strcmp(sub, "status") == 0 && !extra)
		return do_status(&o, name);
	if (!name)
		goto usage;
	if (strcmp(sub, "ondemand") == 0 && extra)
		return do_ondemand(&o, name, extra);
	if (extra)
		goto usage;
	if (strcmp(sub, "env") == 0)
		return do_env(&o, name);
	if (strcmp(sub, "psql") == 0)
		return do_psql(&o, name, argc - rest, argv + rest);
	if (strcmp(sub, "initdb") == 0)
		return do_initdb(&o, name, argc - rest, argv + rest);
	bool start = strcmp(sub, "start") == 0, stop = strcmp(sub, "stop") == 0, restart = strcmp(sub, "restart") == 0;
	if (!start && !stop && !restart)
		goto usage;
	struct target t;
	if (target_get(&o, name, sub, &t))
		return 1;
	if (stop)
		return do_stop(&o, &t, false);
	if (restart) {
		int r = do_stop(&o, &t, true);
		if (r)
			return r;
		if (target_get(&o, name, sub, &t))
			return 1;
	}
	return do_start(&o, &t);
usage:
	usage(stderr);
	return 2;
}

int pgcli_before_change(const char *store, const char *name, struct pgcli_change *ret)
{
	bool q = ret->quiet;
	memset(ret, 0, sizeof *ret);
	quiet = ret->quiet = q;
	snprintf(ret->name, sizeof ret->name, "%s", name);
	snprintf(ret->store, sizeof ret->store, "%s", store);
	json_t *req = json_pack("{s:s, s:s, s:b}", "cmd", "pg.info", "name", name, "assign", 0);
	json_t *reply = request(store, req);
	json_decref(req);
	struct target t = { 0 };
	bool ok = reply && json_is_true(json_object_get(reply, "ok"));
	if (ok)
		target_from(json_object_get(reply, "pg"), &t);
	json_decref(reply);
	/* no such branch, an old daemon: the change itself says what is wrong */
	if (!ok || t.on_demand || !running(&t))
		return 0;
	snprintf(t.store, sizeof t.store, "%s", store);
	/* the options it was started with: "PROGRAM" "ARG"... (postmaster.opts) */
	char path[4300], *text;
	size_t len;
	snprintf(path, sizeof path, "%s/postmaster.opts", t.datadir);
	if (cow_read_file(path, sizeof ret->opts - 1, &text, &len) == 0) {
		char *p = text;
		if (*p == '"')
			p = strchr(p + 1, '"');
		p = p ? p + strcspn(p, " ") : text + len;
		p += strspn(p, " ");
		p[strcspn(p, "\n")] = 0;
		snprintf(ret->opts, sizeof ret->opts, "%s", p);
		free(text);
	}
	struct opts o = { 0 };
	int r = do_stop(&o, &t, false);
	if (r != 0)
		return 1;
	ret->restart = true;
	return 0;
}

int pgcli_after_change(struct pgcli_change *c)
{
	if (!c->restart)
		return 0;
	quiet = c->quiet;
	struct opts o = { .store = c->store, .pgopts = c->opts };
	struct target t;
	if (target_get(&o, c->name, NULL, &t))
		return 1;
	return do_start(&o, &t) ? 1 : 0;
}
