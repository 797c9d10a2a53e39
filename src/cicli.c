#include "cicli.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ref.h"
#include "subcmd.h"
#include "util.h"

#define EXIT_CI_FAILED 125

static volatile sig_atomic_t got_signal;
static volatile pid_t command_pid;

static void usage(FILE *f)
{
	fprintf(f, "usage: cowfs ci run [--from BRANCH] [--name NAME] [--keep-on-failure]\n"
		   "                    [--store STORE | --mount MOUNTPOINT] [--] COMMAND [ARGS...]\n"
		   "  a throw-away branch of BRANCH (default main) with Postgres running, its connection\n"
		   "  settings (PGHOST, PGPORT, PGDATABASE, PGUSER, DATABASE_URL, COWFS_BRANCH) in COMMAND's\n"
		   "  environment, deleted afterwards.  Exit status: COMMAND's; 128+N after signal N;\n"
		   "  125 cowfs ci failed; 126, 127 COMMAND not executable, not found.  See cowfs(1).\n");
}

static void on_signal(int sig, siginfo_t *si, void *unused)
{
	(void)unused;
	if (!got_signal)
		got_signal = sig;
	/* A key typed at the terminal reached COMMAND already, it is in our
	 * process group; anything else (kill, a CI runner) is passed on. */
	pid_t p = command_pid;
	if (p > 0 && si->si_code != SI_KERNEL)
		kill(p, sig);
}

static const int SIGNALS[] = { SIGINT, SIGTERM, SIGHUP };

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("cowfs ci: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* `cowfs ARGS... --store STORE`; 0, or -1 after saying WHAT failed and why. */
static int run(const char *store, const char *const *args, char **out, const char *what)
{
	const char *argv[16];
	size_t n = 0;
	while (args[n] && n < 12) {
		argv[n] = args[n];
		n++;
	}
	argv[n++] = "--store";
	argv[n++] = store;
	argv[n] = NULL;
	char *err = NULL, *tmp = NULL;
	int r = cow_subcmd_run(argv, out ? out : &tmp, &err);
	free(tmp);
	if (r == 0) {
		free(err);
		return 0;
	}
	char reason[512];
	cow_subcmd_reason(err, reason, sizeof reason);
	free(err);
	if (r < 0)
		snprintf(reason, sizeof reason, "cannot run cowfs: %s", strerror(-r));
	say("%s: %s", what, reason[0] ? reason : "failed");
	if (out) {
		free(*out);
		*out = NULL;
	}
	return -1;
}

/* --now: a throw-away branch skips the trash's grace period */
static int drop_branch(const char *store, const char *name)
{
	const char *args[] = { "branch", "delete", name, "--now", NULL };
	char what[128];
	snprintf(what, sizeof what, "cannot delete branch %s", name);
	return run(store, args, NULL, what);
}

static int set_env_from(json_t *env, const char *name)
{
	const char *key;
	json_t *v;
	json_object_foreach(env, key, v) {
		if (json_is_string(v) && setenv(key, json_string_value(v), 1) < 0)
			return -1;
	}
	return setenv("COWFS_BRANCH", name, 1);
}

int cicli_main(int argc, char **argv)
{
	const char *from = "main", *name = NULL, *store_opt = NULL, *mnt = NULL;
	bool keep = false;
	int cmd = -1;
	if (argc < 2)
		goto usage;
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "run") != 0)
		goto usage;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char **val = strcmp(a, "--from") == 0    ? &from
				   : strcmp(a, "--name") == 0  ? &name
				   : strcmp(a, "--store") == 0 ? &store_opt
				   : strcmp(a, "--mount") == 0 ? &mnt
							       : NULL;
		if (val) {
			if (i + 1 >= argc)
				goto usage;
			*val = argv[++i];
		} else if (strcmp(a, "--keep-on-failure") == 0) {
			keep = true;
		} else if (strcmp(a, "--") == 0) {
			cmd = i + 1;
			break;
		} else if (a[0] == '-') {
			goto usage;
		} else {
			cmd = i;
			break;
		}
	}
	if (cmd < 0 || cmd >= argc)
		goto usage;
	char gen[32];
	if (name) {
		const char *why = cow_ref_check_name(name);
		if (why) {
			cow_err("--name %s: %s", name, why);
			return 2;
		}
	} else {
		uint32_t rnd;
		if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
			rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL);
		snprintf(gen, sizeof gen, "ci-%08x", rnd);
		name = gen;
	}
	char store[PATH_MAX];
	if (find_store(store_opt, mnt, store, sizeof store) < 0)
		return EXIT_CI_FAILED;

	struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < COW_ARRAY_SIZE(SIGNALS); i++)
		sigaction(SIGNALS[i], &sa, NULL);

	int rc = EXIT_CI_FAILED, st = 0;
	bool command_ran = false, failed = false;
	json_t *env = NULL;
	char *env_text = NULL, what[160];
	const char *create[] = { "branch", "create", name, "--from", from, NULL };
	snprintf(what, sizeof what, "cannot create branch %s from %s", name, from);
	if (run(store, create, NULL, what) < 0)
		return EXIT_CI_FAILED; /* nothing of ours to clean up */
	if (got_signal)
		goto cleanup;
	const char *start[] = { "pg", "start", name, NULL };
	snprintf(what, sizeof what, "cannot start Postgres on branch %s", name);
	if (run(store, start, NULL, what) < 0 || got_signal)
		goto cleanup;
	const char *getenv_args[] = { "pg", "env", name, "--format", "json", NULL };
	snprintf(what, sizeof what, "cannot get the connection settings of branch %s", name);
	if (run(store, getenv_args, &env_text, what) < 0)
		goto cleanup;
	json_error_t jerr;
	env = json_loads(env_text, 0, &jerr);
	if (!json_is_object(env)) {
		say("cannot read the connection settings of branch %s: %s", name, jerr.text);
		goto cleanup;
	}
	json_t *port = json_object_get(env, "PGPORT");
	say("branch %s from %s, Postgres on port %s", name, from, json_is_string(port) ? json_string_value(port) : "?");
	if (got_signal)
		goto cleanup;

	/* signals held while the child's pid is not yet where the handler looks */
	sigset_t block, old;
	sigemptyset(&block);
	for (size_t i = 0; i < COW_ARRAY_SIZE(SIGNALS); i++)
		sigaddset(&block, SIGNALS[i]);
	sigprocmask(SIG_BLOCK, &block, &old);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		for (size_t i = 0; i < COW_ARRAY_SIZE(SIGNALS); i++)
			sigaction(SIGNALS[i], &dfl, NULL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (set_env_from(env, name) < 0)
			_exit(EXIT_CI_FAILED);
		execvp(argv[cmd], argv + cmd);
		int e = errno;
		fprintf(stderr, "cowfs ci: %s: %s\n", argv[cmd], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		say("cannot run %s: %s", argv[cmd], strerror(errno));
		goto cleanup;
	}
	command_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			st = 0;
			say("lost track of %s: %s", argv[cmd], strerror(errno));
			break;
		}
	}
	command_pid = 0;
	command_ran = true;
	rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	failed = rc != 0;

cleanup:
	if (got_signal) {
		rc = 128 + got_signal;
		keep = false; /* an interrupted run leaves nothing behind */
	}
	if (keep && command_ran && failed) {
		char *sh = NULL;
		const char *sh_args[] = { "pg", "env", name, "--format", "sh", NULL };
		say("%s %s %d; branch %s kept, with Postgres running (delete it with 'cowfs branch delete %s'):",
		    argv[cmd], WIFSIGNALED(st) ? "was killed by signal" : "exited with status",
		    WIFSIGNALED(st) ? WTERMSIG(st) : rc, name, name);
		if (run(store, sh_args, &sh, "cannot get the connection settings") == 0)
			fputs(sh, stderr);
		free(sh);
	} else if (drop_branch(store, name) < 0) {
		if (rc == 0)
			rc = EXIT_CI_FAILED;
	}
	json_decref(env);
	free(env_text);
	return rc;
usage:
	usage(stderr);
	return 2;
}
