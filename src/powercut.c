#include "powercut.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "util.h"

/* A write not yet covered by an fdatasync of its file. */
struct pending {
	int fd;
	off_t off;
	size_t len;
	uint64_t seq;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pending *pend;
static size_t npend, cap;
static uint64_t next_seq;

/* Under the lock, so that no write lands once the cut has begun (the cut
 * holds it to the end): a write that landed untracked after a tracked one
 * would survive it, which no power cut does. */
static ssize_t pc_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	pthread_mutex_lock(&lock);
	if (npend == cap) {
		size_t ncap = cap ? cap * 2 : 1024;
		struct pending *p = realloc(pend, ncap * sizeof *p);
		if (!p) { /* cannot remember it: fail the write, as a full disk would */
			pthread_mutex_unlock(&lock);
			errno = ENOMEM;
			return -1;
		}
		pend = p;
		cap = ncap;
	}
	ssize_t r = pwritev(fd, iov, n, off);
	if (r > 0)
		pend[npend++] = (struct pending){ fd, off, (size_t)r, next_seq++ };
	pthread_mutex_unlock(&lock);
	return r;
}

static ssize_t pc_pread(int fd, void *buf, size_t len, off_t off) { return pread(fd, buf, len, off); }
static int pc_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

static cow_powercut_hook sync_hook;

void cow_powercut_set_hook(cow_powercut_hook hook)
{
	pthread_mutex_lock(&lock);
	sync_hook = hook;
	pthread_mutex_unlock(&lock);
}

static int pc_fdatasync(int fd)
{
	pthread_mutex_lock(&lock);
	cow_powercut_hook hook = sync_hook;
	pthread_mutex_unlock(&lock);
	int r = hook ? hook(fd) : 0;
	if (r < 0) {
		errno = -r;
		return -1;
	}
	/* A write is covered once an fdatasync that started after it returns:
	 * until then a cut garbles it (and nobody was told it was durable). */
	pthread_mutex_lock(&lock);
	uint64_t start = next_seq;
	pthread_mutex_unlock(&lock);
	if ((r = fdatasync(fd)) < 0)
		return r;
	pthread_mutex_lock(&lock);
	size_t j = 0;
	for (size_t i = 0; i < npend; i++)
		if (pend[i].fd != fd || pend[i].seq >= start)
			pend[j++] = pend[i];
	npend = j;
	pthread_mutex_unlock(&lock);
	return 0;
}

const struct cow_io cow_powercut_io = { pc_pwritev, pc_pread, pc_fdatasync, pc_ftruncate };

void cow_powercut_reset(void)
{
	pthread_mutex_lock(&lock);
	npend = 0;
	pthread_mutex_unlock(&lock);
}

size_t cow_powercut_unsynced(void)
{
	pthread_mutex_lock(&lock);
	size_t n = npend;
	pthread_mutex_unlock(&lock);
	return n;
}

int cow_powercut_garble(bool keep_locked)
{
	pthread_mutex_lock(&lock);
	int r = (int)npend;
	for (size_t i = 0; i < npend; i++) {
		uint8_t g[4096];
		for (size_t k = 0; k < sizeof g; k++)
			g[k] = (uint8_t)(0xa5 ^ (k * 31) ^ i);
		for (size_t done = 0; done < pend[i].len;) {
			size_t n = COW_MIN(sizeof g, pend[i].len - done);
			if (pwrite(pend[i].fd, g, n, pend[i].off + (off_t)done) != (ssize_t)n) {
				r = -EIO;
				break;
			}
			done += n;
		}
	}
	npend = 0;
	if (!keep_locked)
		pthread_mutex_unlock(&lock);
	return r;
}

static void *wait_for_cut(void *arg)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	int sig;
	while (sigwait(&set, &sig) != 0)
		;
	/* Holding the lock to the end: no write lands and no sync returns
	 * (so nothing more is acknowledged) from here on. */
	int r = cow_powercut_garble(true);
	if (r < 0)
		cow_warn("simulated power cut: a garbage write failed; exiting");
	else
		cow_warn("simulated power cut: %d unsynced log writes garbled; exiting", r);
	_exit(0);
	return NULL;
}

int cow_powercut_arm(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	int r = pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (r)
		return -r;
	cow_io_set(&cow_powercut_io);
	return 0;
}

int cow_powercut_start(void)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, wait_for_cut, NULL);
	if (r)
		return -r;
	pthread_detach(t);
	return 0;
}
