#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static FILE *msg_file;
static const char *msg_prefix = "cowfs";
static unsigned msg_count;

unsigned cow_msg_count(void) { return __atomic_load_n(&msg_count, __ATOMIC_RELAXED); }

void cow_msg_set_file(FILE *f) { msg_file = f; }
void cow_msg_set_prefix(const char *prefix) { msg_prefix = prefix; }

static void vmsg(const char *level, const char *fmt, va_list ap)
{
	FILE *f = msg_file ? msg_file : stderr;
	char line[1024];
	vsnprintf(line, sizeof line, fmt, ap);
	if (msg_file) {
		char ts[32];
		time_t now = time(NULL);
		struct tm tm;
		strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", gmtime_r(&now, &tm));
		fprintf(f, "%sZ %s[%d] %s%s\n", ts, msg_prefix, (int)getpid(), level, line);
	} else {
		fprintf(f, "%s: %s%s\n", msg_prefix, level, line);
	}
	fflush(f);
}

void cow_err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
	__atomic_add_fetch(&msg_count, 1, __ATOMIC_RELAXED);
}

void cow_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg("warning: ", fmt, ap);
	va_end(ap);
	__atomic_add_fetch(&msg_count, 1, __ATOMIC_RELAXED);
}
void cow_info(const char *fmt, ...)
{
	if (!msg_file && !getenv("COWFS_VERBOSE"))
		return;
	va_list ap; va_start(ap, fmt); vmsg("", fmt, ap); va_end(ap);
}

int cow_fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int cow_write_tmp_durable(int fd, const char *tmp, const char *dst, const char *dir, const void *buf, size_t len)
{
	const char *p = buf;
	int r = 0;
	for (size_t left = len; left;) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, dst) < 0) {
		r = -errno;
		goto fail;
	}
	return cow_fsync_path(dir);
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}

int cow_write_file_durable(const char *dir, const char *name, const void *buf, size_t len)
{
	char tmp[4096], dst[4096];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp ||
	    (size_t)snprintf(dst, sizeof dst, "%s/%s", dir, name) >= sizeof dst)
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	return cow_write_tmp_durable(fd, tmp, dst, dir, buf, len);
}

int cow_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = 0;
	char *buf = NULL;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if ((size_t)st.st_size > max) {
		r = -EFBIG;
		goto out;
	}
	buf = malloc(st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = 0;
	*ret_buf = buf;
	*ret_len = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

int cow_parse_duration(const char *text, int64_t *ret_sec)
{
	char *end;
	if (!text || !(*text >= '0' && *text <= '9'))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	int64_t unit = 1;
	switch (*end) {
	case 0: case 's': break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	case 'w': unit = 7 * 86400; break;
	default: return -EINVAL;
	}
	if (*end && end[1])
		return -EINVAL;
	if (errno || v > 100ull * 366 * 86400 / (unsigned long long)unit)
		return -EINVAL;
	*ret_sec = (int64_t)v * unit;
	return 0;
}

void cow_str_add(struct cow_str *s, const char *text, size_t n)
{
	if (s->oom)
		return;
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		while (cap < s->len + n + 1)
			cap *= 2;
		char *p = realloc(s->p, cap);
		if (!p) {
			s->oom = true;
			return;
		}
		s->p = p;
		s->cap = cap;
	}
	memcpy(s->p + s->len, text, n);
	s->len += n;
	s->p[s->len] = 0;
}

void cow_str_addf(struct cow_str *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		s->oom = true;
	else
		cow_str_add(s, text, (size_t)n);
	free(text);
}

char *cow_str_take(struct cow_str *s)
{
	if (!s->oom && !s->p)
		cow_str_add(s, "", 0);
	if (s->oom) {
		free(s->p);
		s->p = NULL;
	}
	return s->p;
}

int cow_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *ret)
{
	char *end;
	if (!text || !*text)
		return -EINVAL;
	unsigned long long v = strtoull(text, &end, 10);
	if (*end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int cow_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int cow_cpu_ticks(uint64_t *ret_busy, uint64_t *ret_all)
{
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return -errno;
	/* cpu user nice system idle iowait irq softirq steal (guest time is
	 * within user and nice) */
	unsigned long long t[8] = { 0 };
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &t[0], &t[1], &t[2], &t[3], &t[4], &t[5],
		       &t[6], &t[7]);
	fclose(f);
	if (n < 5)
		return -EIO;
	*ret_busy = t[0] + t[1] + t[2] + t[5] + t[6] + t[7];
	*ret_all = *ret_busy + t[3] + t[4];
	return 0;
}
