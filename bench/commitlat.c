/* commitlat FILE N — what one commit costs: N times, write 16 KiB (two
 * pages, as a WAL flush of a small transaction does) at the next offset
 * of a 16 MiB file written in full first, then fdatasync.  Prints the
 * mean and the median of the N commits in microseconds.  Used by
 * bench/commit.sh on the plain disk and on a cowfs mount. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (16 << 20)
#define COMMIT (16 << 10)

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 3 || atoi(argv[2]) <= 0) {
		fprintf(stderr, "usage: commitlat FILE N\n");
		return 2;
	}
	int n = atoi(argv[2]);
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "commitlat: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	static char buf[1 << 20];
	memset(buf, 0x5a, sizeof buf);
	for (int i = 0; i < FILE_SIZE / (int)sizeof buf; i++)
		if (pwrite(fd, buf, sizeof buf, (off_t)i * sizeof buf) != (ssize_t)sizeof buf) {
			perror("commitlat: pwrite");
			return 1;
		}
	if (fdatasync(fd) < 0) {
		perror("commitlat: fdatasync");
		return 1;
	}
	double *lat = malloc(n * sizeof *lat), sum = 0;
	for (int i = 0; i < n; i++) {
		buf[0] = (char)i; /* every commit writes new content */
		double t0 = now_us();
		off_t off = (off_t)i * COMMIT % FILE_SIZE;
		if (pwrite(fd, buf, COMMIT, off) != COMMIT || fdatasync(fd) < 0) {
			perror("commitlat: commit");
			return 1;
		}
		lat[i] = now_us() - t0;
		sum += lat[i];
	}
	qsort(lat, n, sizeof *lat, cmp);
	printf("%.1f %.1f\n", sum / n, lat[n / 2]);
	close(fd);
	unlink(argv[1]);
	free(lat);
	return 0;
}
