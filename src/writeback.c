#include "writeback.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57 /* Linux 5.6 */
#endif

int cow_writeback_flusher(void)
{
	return prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0 ? -errno : 0;
}

void cow_writeback_child(void)
{
	prctl(PR_SET_IO_FLUSHER, 0, 0, 0, 0); /* fails harmlessly if it never was one */
}

/* MAJOR:MINOR of the fuse mount at MNT, from /proc/self/mountinfo:
 * "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS". */
static int mount_dev(const char *mnt, char *dev, size_t n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char line[8192];
	int r = -ENOENT;
	while (fgets(line, sizeof line, f)) {
		char majmin[64], point[4096];
		if (sscanf(line, "%*s %*s %63s %*s %4095s", majmin, point) != 2)
			continue;
		/* mountinfo escapes space, tab, newline and backslash as \ooo;
		 * such a mountpoint does not match, and the limits stay */
		const char *dash = strstr(line, " - ");
		if (strcmp(point, mnt) != 0 || !dash || strncmp(dash + 3, "fuse.", 5) != 0)
			continue;
		snprintf(dev, n, "%s", majmin); /* the last match is the top mount */
		r = 0;
	}
	fclose(f);
	return r;
}

static int write_knob(const char *dev, const char *knob, const char *val)
{
	char path[256];
	snprintf(path, sizeof path, "/sys/class/bdi/%s/%s", dev, knob);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t w = write(fd, val, strlen(val));
	int r = w < 0 ? -errno : 0;
	close(fd);
	return r;
}

int cow_writeback_lift(const char *mnt)
{
	char dev[64];
	int r = mount_dev(mnt, dev, sizeof dev);
	if (r < 0)
		return r;
	/* max_ratio first: alone it changes little, and if strict_limit then
	 * fails the mount is no worse off */
	if ((r = write_knob(dev, "max_ratio", "100")) < 0)
		return r;
	/* strict_limit is in /sys from Linux 6.2; before, only max_ratio helps */
	r = write_knob(dev, "strict_limit", "0");
	return r == -ENOENT ? 0 : r;
}
