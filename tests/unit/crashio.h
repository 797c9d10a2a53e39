/* crashio.h — an I/O backend (io.h) for unit tests that simulates a power
 * cut: it remembers every write no fdatasync of its file has covered yet,
 * and crashio_garble() turns those to garbage, as a cut may.  Install it
 * with cow_io_set(&crashio); crashio_reset() clears what it remembers and
 * its knobs:
 *   crashio_delay_ms   each sync first sleeps this long
 *   crashio_fail_next  the next sync fails with EIO and covers nothing
 *   crashio_crash_at   the N-th sync (from 1) does not happen: the power
 *                      fails there, the process garbles and _exit(0)s (run
 *                      it in a forked child)
 * One copy per test program (static state). */
#ifndef COW_TEST_CRASHIO_H
#define COW_TEST_CRASHIO_H
#include <errno.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"
#include "testutil.h"

#define CRASHIO_MAXW 8192
static struct { int fd; off_t off; size_t len; } crashio_w[CRASHIO_MAXW];
static int crashio_nw, crashio_syncs;
static int crashio_delay_ms, crashio_fail_next, crashio_crash_at;
static pthread_mutex_t crashio_lock = PTHREAD_MUTEX_INITIALIZER;

static inline void crashio_reset(void)
{
	crashio_nw = crashio_syncs = crashio_delay_ms = crashio_fail_next = crashio_crash_at = 0;
}

/* Writes not yet covered by a sync. */
static inline int crashio_unsynced(void) { return crashio_nw; }

/* The power fails: every write not covered by a sync turns to garbage.
 * 0, or -1 if a garbage write failed. */
static inline int crashio_garble(void)
{
	int r = 0;
	for (int i = 0; i < crashio_nw; i++) {
		uint8_t *g = malloc(crashio_w[i].len);
		tu_fill(g, crashio_w[i].len, (uint64_t)i + 99);
		if (pwrite(crashio_w[i].fd, g, crashio_w[i].len, crashio_w[i].off) != (ssize_t)crashio_w[i].len)
			r = -1;
		free(g);
	}
	crashio_nw = 0;
	return r;
}

static ssize_t crashio_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	ssize_t r = pwritev(fd, iov, n, off);
	pthread_mutex_lock(&crashio_lock);
	if (r > 0 && crashio_nw < CRASHIO_MAXW)
		crashio_w[crashio_nw++] = (typeof(crashio_w[0])){ fd, off, (size_t)r };
	pthread_mutex_unlock(&crashio_lock);
	return r;
}

static ssize_t crashio_pread(int fd, void *b, size_t n, off_t off) { return pread(fd, b, n, off); }
static int crashio_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

static int crashio_fdatasync(int fd)
{
	if (crashio_delay_ms)
		usleep(crashio_delay_ms * 1000);
	pthread_mutex_lock(&crashio_lock);
	if (++crashio_syncs == crashio_crash_at)
		_exit(crashio_garble() < 0 ? 5 : 0);
	int fail = crashio_fail_next;
	crashio_fail_next = 0;
	if (!fail) {
		int j = 0;
		for (int i = 0; i < crashio_nw; i++)
			if (crashio_w[i].fd != fd)
				crashio_w[j++] = crashio_w[i];
		crashio_nw = j;
	}
	pthread_mutex_unlock(&crashio_lock);
	if (fail) {
		errno = EIO;
		return -1;
	}
	return fdatasync(fd);
}

static const struct cow_io crashio = { crashio_pwritev, crashio_pread, crashio_fdatasync, crashio_ftruncate };
#endif
