#include "postmaster.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "branch.h"
#include "util.h"

bool cow_postmaster_running(struct cow_branch *b, pid_t *ret_pid)
{
	struct cow_attr a;
	if (cow_branch_lookup(b, COW_ROOT_INO, "postmaster.pid", &a) < 0)
		return false;
	char buf[32] = "";
	ssize_t n = S_ISREG(a.mode) ? cow_branch_read(b, a.ino, 0, sizeof buf - 1, buf) : -1;
	cow_branch_forget(b, a.ino, 1);
	if (n <= 0)
		return false;
	buf[n] = 0;
	long pid = strtol(buf, NULL, 10);
	if (pid <= 0 || kill((pid_t)pid, 0) < 0)
		return false;
	*ret_pid = (pid_t)pid;
	return true;
}

static bool gone_within(pid_t pid, unsigned timeout_s)
{
	struct timespec step = { 0, 50 * 1000 * 1000 };
	for (unsigned i = 0; i < timeout_s * 20; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return true;
		nanosleep(&step, NULL);
	}
	return kill(pid, 0) < 0 && errno == ESRCH;
}

int cow_postmaster_stop(pid_t pid, unsigned timeout_s)
{
	if (kill(pid, SIGINT) < 0)
		return errno == ESRCH ? 0 : -errno;
	if (gone_within(pid, timeout_s))
		return 0;
	cow_warn("Postgres (pid %d) did not stop within %u s of a fast shutdown; sending an immediate shutdown",
		 (int)pid, timeout_s);
	if (kill(pid, SIGQUIT) < 0)
		return errno == ESRCH ? 0 : -errno;
	return gone_within(pid, timeout_s) ? 0 : -ETIMEDOUT;
}
