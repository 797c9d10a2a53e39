/* io — the one narrow interface through which all storage I/O of the log
 * passes, so that a test can drop or garble unsynced writes, inject errors
 * (EIO, ENOSPC) and count syncs.  Production uses cow_io_posix.
 *
 * All functions return 0 (or bytes) on success and -errno on failure; the
 * _all variants loop over short transfers. */
#ifndef COW_IO_H
#define COW_IO_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct cow_io {
	ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t off);
	ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
	int (*fdatasync)(int fd);
	int (*ftruncate)(int fd, off_t len);
};

extern const struct cow_io cow_io_posix;
/* Replace the I/O backend (tests only); NULL restores cow_io_posix. */
void cow_io_set(const struct cow_io *io);

#define COW_IO_MAX_IOV 1024 /* IOV_MAX on Linux */
ssize_t cow_io_pwritev_all(int fd, const struct iovec *iov, int iovcnt, off_t off);
ssize_t cow_io_pread_all(int fd, void *buf, size_t len, off_t off);
int cow_io_fdatasync(int fd);
int cow_io_ftruncate(int fd, off_t len);
#endif
