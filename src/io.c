#include "io.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static ssize_t px_pwritev(int fd, const struct iovec *iov, int n, off_t off) { return pwritev(fd, iov, n, off); }
static ssize_t px_pread(int fd, void *buf, size_t len, off_t off) { return pread(fd, buf, len, off); }
static int px_fdatasync(int fd) { return fdatasync(fd); }
static int px_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

const struct cow_io cow_io_posix = {
	.pwritev = px_pwritev, .pread = px_pread, .fdatasync = px_fdatasync, .ftruncate = px_ftruncate,
};

static const struct cow_io *io = &cow_io_posix;

void cow_io_set(const struct cow_io *new_io) { io = new_io ? new_io : &cow_io_posix; }

ssize_t cow_io_pwritev_all(int fd, const struct iovec *iov_in, int iovcnt, off_t off)
{
	struct iovec iov[COW_IO_MAX_IOV];
	if (iovcnt > COW_IO_MAX_IOV)
		return -EINVAL;
	memcpy(iov, iov_in, iovcnt * sizeof *iov);
	struct iovec *v = iov;
	ssize_t total = 0;
	while (iovcnt > 0) {
		ssize_t n = io->pwritev(fd, v, iovcnt, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		total += n;
		off += n;
		while (iovcnt > 0 && (size_t)n >= v->iov_len) {
			n -= v->iov_len;
			v++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
		}
	}
	return total;
}

ssize_t cow_io_pread_all(int fd, void *buf, size_t len, off_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = io->pread(fd, (char *)buf + got, len - got, off + got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += n;
	}
	return got;
}

int cow_io_fdatasync(int fd) { return io->fdatasync(fd) < 0 ? -errno : 0; }
int cow_io_ftruncate(int fd, off_t len) { return io->ftruncate(fd, len) < 0 ? -errno : 0; }
