#include "subcmd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

void cow_subcmd_self(char *out, size_t n)
{
	/* cowfs-git is run by cowfs, which names itself here */
	const char *prog = getenv("COWFS_PROGRAM");
	if (prog && *prog) {
		snprintf(out, n, "%s", prog);
		return;
	}
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
	if (len > 0) {
		self[len] = 0;
		snprintf(out, n, "%s", self);
	} else {
		snprintf(out, n, "cowfs");
	}
}

struct sink {
	int fd;
	char *p;
	size_t len, cap;
};

static int drain(struct sink *s)
{
	char tmp[4096];
	ssize_t n = read(s->fd, tmp, sizeof tmp);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : -errno;
	if (n == 0)
		return 0;
	if (s->len + (size_t)n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 1024;
		while (cap < s->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(s->p, cap);
		if (!np)
			return -ENOMEM;
		s->p = np;
		s->cap = cap;
	}
	memcpy(s->p + s->len, tmp, (size_t)n);
	s->len += (size_t)n;
	s->p[s->len] = 0;
	return 1;
}

int cow_subcmd_run(const char *const argv[], char **ret_out, char **ret_err)
{
	char self[PATH_MAX];
	cow_subcmd_self(self, sizeof self);
	size_t argc = 0;
	while (argv[argc])
		argc++;
	char **args = calloc(argc + 2, sizeof *args);
	if (!args)
		return -ENOMEM;
	args[0] = self;
	for (size_t i = 0; i < argc; i++)
		args[i + 1] = (char *)argv[i];
	int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
	int r = 0;
	if ((ret_out && pipe2(po, O_CLOEXEC) < 0) || (ret_err && pipe2(pe, O_CLOEXEC) < 0)) {
		r = -errno;
		goto out;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out;
	}
	if (pid == 0) {
		setpgid(0, 0);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null >= 0)
			dup2(null, 0);
		dup2(ret_out ? po[1] : 2, 1);
		if (ret_err)
			dup2(pe[1], 2);
		if (strchr(self, '/'))
			execv(self, args);
		else
			execvp(self, args);
		fprintf(stderr, "cowfs: cannot run %s: %s\n", self, strerror(errno));
		_exit(127);
	}
	struct sink s[2] = { { po[0], NULL, 0, 0 }, { pe[0], NULL, 0, 0 } };
	if (po[1] >= 0)
		close(po[1]);
	if (pe[1] >= 0)
		close(pe[1]);
	po[1] = pe[1] = -1;
	for (;;) {
		struct pollfd p[2];
		int k = 0, map[2];
		for (int i = 0; i < 2; i++)
			if (s[i].fd >= 0) {
				p[k] = (struct pollfd){ .fd = s[i].fd, .events = POLLIN };
				map[k++] = i;
			}
		if (!k)
			break;
		if (poll(p, k, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int j = 0; j < k; j++) {
			if (!p[j].revents)
				continue;
			int d = drain(&s[map[j]]);
			if (d <= 0) {
				close(s[map[j]].fd);
				s[map[j]].fd = -1;
			}
		}
	}
	po[0] = pe[0] = -1;
	int st;
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			r = -errno;
			break;
		}
	}
	if (r == 0)
		r = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	for (int i = 0; i < 2; i++) {
		char **dst = i == 0 ? ret_out : ret_err;
		if (!dst) {
			free(s[i].p);
			continue;
		}
		*dst = s[i].p ? s[i].p : strdup("");
	}
out:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
	}
	free(args);
	return r;
}

void cow_subcmd_reason(const char *text, char *out, size_t n)
{
	out[0] = 0;
	if (!text)
		return;
	const char *best = NULL;
	size_t best_len = 0;
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len) {
			best = p;
			best_len = len;
		}
		p += len + (nl ? 1 : 0);
	}
	if (!best)
		return;
	if (best_len >= 7 && memcmp(best, "cowfs: ", 7) == 0) {
		best += 7;
		best_len -= 7;
	}
	snprintf(out, n, "%.*s", (int)best_len, best);
}
