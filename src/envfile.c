#include "envfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static void puts_(struct cow_str *b, const char *s) { cow_str_add(b, s, strlen(s)); }

/* The line at TEXT[*pos..]: its length with its end (*full) and without
 * ("\n" or "\r\n" dropped). */
static size_t line_at(const char *text, size_t len, size_t pos, size_t *full)
{
	const char *nl = memchr(text + pos, '\n', len - pos);
	size_t end = nl ? (size_t)(nl - text) + 1 : len;
	*full = end - pos;
	size_t content = nl ? end - pos - 1 : end - pos;
	if (content && text[pos + content - 1] == '\r')
		content--;
	return content;
}

static bool is_marker(const char *line, size_t n, const char *marker)
{
	size_t m = strlen(marker);
	if (n < m || memcmp(line, marker, m) != 0)
		return false;
	if (n == m)
		return true;
	char c = line[m];
	return c == ':' || c == ' ' || c == '\t';
}

static bool is_begin(const char *line, size_t n) { return is_marker(line, n, COW_ENVFILE_BEGIN); }

static bool is_end(const char *line, size_t n)
{
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	return n == strlen(COW_ENVFILE_END) && memcmp(line, COW_ENVFILE_END, n) == 0;
}

/* Offset just past the end line of the block whose start line begins at
 * POS, or 0 if it has none.  *BODY / *BODY_END: the lines between. */
static size_t block_end(const char *text, size_t len, size_t pos, size_t *body, size_t *body_end)
{
	size_t full;
	line_at(text, len, pos, &full);
	pos += full;
	*body = pos;
	while (pos < len) {
		size_t n = line_at(text, len, pos, &full);
		if (is_end(text + pos, n)) {
			*body_end = pos;
			return pos + full;
		}
		if (is_begin(text + pos, n))
			return 0;
		pos += full;
	}
	return 0;
}

static void put_block(struct cow_str *b, const char *title, const char *body, const char *eol)
{
	puts_(b, COW_ENVFILE_BEGIN);
	if (title && *title) {
		puts_(b, ": ");
		/* one line, whatever the caller gave */
		for (const char *t = title; *t; t++)
			cow_str_add(b, *t == '\n' || *t == '\r' ? " " : t, 1);
	}
	puts_(b, eol);
	for (const char *p = body; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		size_t k = n;
		if (k && p[k - 1] == '\r')
			k--;
		if (k) {
			cow_str_add(b, p, k);
			puts_(b, eol);
		}
		p += n + (nl ? 1 : 0);
	}
	puts_(b, COW_ENVFILE_END);
	puts_(b, eol);
}

int cow_envfile_update(const char *old, size_t old_len, const char *title, const char *body, char **ret,
		       size_t *ret_len)
{
	if (!old)
		old_len = 0;
	const char *eol = "\n";
	const char *first_nl = old_len ? memchr(old, '\n', old_len) : NULL;
	if (first_nl && first_nl > old && first_nl[-1] == '\r')
		eol = "\r\n";
	bool want = body && *body;
	struct cow_str b = { 0 };
	bool placed = false;
	size_t pos = 0;
	while (pos < old_len) {
		size_t full, n = line_at(old, old_len, pos, &full);
		if (!is_begin(old + pos, n)) {
			cow_str_add(&b, old + pos, full);
			pos += full;
			continue;
		}
		size_t body_start, body_stop, next = block_end(old, old_len, pos, &body_start, &body_stop);
		if (!next) {
			free(b.p);
			return -EBADMSG;
		}
		if (!placed && want)
			put_block(&b, title, body, eol);
		placed = true;
		pos = next;
	}
	if (!placed && want) {
		if (old_len && old[old_len - 1] != '\n')
			puts_(&b, eol);
		put_block(&b, title, body, eol);
	}
	cow_str_add(&b, "", 0);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*ret = b.p;
	*ret_len = b.len;
	return 0;
}

int cow_envfile_block(const char *text, size_t len, char **ret)
{
	size_t pos = 0;
	while (pos < len) {
		size_t full, n = line_at(text, len, pos, &full);
		if (is_begin(text + pos, n)) {
			size_t body, stop;
			if (!block_end(text, len, pos, &body, &stop))
				return -EBADMSG;
			struct cow_str b = { 0 };
			cow_str_add(&b, "", 0);
			for (size_t p = body; p < stop;) {
				size_t k = line_at(text, len, p, &full);
				cow_str_add(&b, text + p, k);
				cow_str_add(&b, "\n", 1);
				p += full;
			}
			if (b.oom) {
				free(b.p);
				return -ENOMEM;
			}
			*ret = b.p;
			return 0;
		}
		pos += full;
	}
	return -ENOENT;
}

int cow_envfile_read(const char *path, char **ret, size_t *ret_len)
{
	*ret = NULL;
	*ret_len = 0;
	int r = cow_read_file(path, 64u << 20, ret, ret_len);
	if (r == -ENOENT) {
		*ret = NULL;
		*ret_len = 0;
		return 0;
	}
	return r;
}

int cow_envfile_write(const char *path, const char *text, size_t len)
{
	char target[PATH_MAX];
	struct stat st;
	bool exists = false;
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		/* write where the link points, and keep the link */
		if (!realpath(path, target)) {
			if (errno != ENOENT)
				return -errno;
			char link[PATH_MAX];
			ssize_t n = readlink(path, link, sizeof link - 1);
			if (n < 0)
				return -errno;
			link[n] = 0;
			if (link[0] == '/' || !strchr(path, '/')) {
				snprintf(target, sizeof target, "%s", link);
			} else {
				const char *slash = strrchr(path, '/');
				if ((size_t)snprintf(target, sizeof target, "%.*s/%s", (int)(slash - path), path, link) >=
				    sizeof target)
					return -ENAMETOOLONG;
			}
		}
	} else if ((size_t)snprintf(target, sizeof target, "%s", path) >= sizeof target) {
		return -ENAMETOOLONG;
	}
	if (stat(target, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		exists = true;
	} else if (errno != ENOENT) {
		return -errno;
	}
	char dir[PATH_MAX], tmp[PATH_MAX + 32];
	const char *slash = strrchr(target, '/');
	const char *base = slash ? slash + 1 : target;
	if (slash)
		snprintf(dir, sizeof dir, "%.*s", slash == target ? 1 : (int)(slash - target), target);
	else
		snprintf(dir, sizeof dir, ".");
	if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.cowfs-XXXXXX", dir, base) >= sizeof tmp)
		return -ENAMETOOLONG;
	int fd = mkstemp(tmp);
	if (fd < 0)
		return -errno;
	mode_t mode;
	if (exists) {
		mode = st.st_mode & 07777;
	} else {
		mode_t mask = umask(0);
		umask(mask);
		mode = 0666 & ~mask;
	}
	int r = 0;
	if (fchmod(fd, mode) < 0 ||
	    (exists && (st.st_uid != geteuid() || st.st_gid != getegid()) && fchown(fd, st.st_uid, st.st_gid) < 0 &&
	     errno != EPERM)) {
		r = -errno;
		goto fail;
	}
	return cow_write_tmp_durable(fd, tmp, target, dir, text, len);
fail:
	close(fd);
	unlink(tmp);
	return r;
}
