#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* The store whose daemon to talk to: --store, --mount, $COWFS_STORE, or
 * the only cowfs mount. */
int find_store(const char *store, const char *mnt, char *out, size_t n)
{
	if (!store)
		store = getenv("COWFS_STORE");
	if (store && !mnt) {
		snprintf(out, n, "%s", store);
		return 0;
	}
	FILE *f = fopen("/proc/mounts", "r");
	if (!f) {
		cow_err("cannot read /proc/mounts: %s", strerror(errno));
		return -1;
	}
	char line[8192], found[4096] = "";
	int count = 0;
	char real[PATH_MAX] = "";
	if (mnt && !realpath(mnt, real)) {
		cow_err("%s: %s", mnt, strerror(errno));
		fclose(f);
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		char src[4096], dir[4096], type[64];
		if (sscanf(line, "%4095s %4095s %63s", src, dir, type) != 3 || strcmp(type, "fuse.cowfs") != 0)
			continue;
		if (mnt && strcmp(dir, real) != 0)
			continue;
		snprintf(found, sizeof found, "%s", src);
		count++;
	}
	fclose(f);
	if (count == 0) {
		cow_err(mnt ? "%s is not a cowfs mount" : "no cowfs mount found; name the store with --store STORE%s",
			mnt ? mnt : "");
		return -1;
	}
	if (count > 1 && !mnt) {
		cow_err("%d cowfs mounts; choose one with --mount MOUNTPOINT or --store STORE", count);
		return -1;
	}
	snprintf(out, n, "%s", found);
	return 0;
}

/* Send one request, return the reply (NULL after printing why). */
json_t *request(const char *store, json_t *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/control.sock", store) >= sizeof sa.sun_path) {
		cow_err("%s: path too long", store);
		return NULL;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		cow_err("cannot reach the cowfs daemon of %s (%s): is the store mounted?", store, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char *text = json_dumps(req, JSON_COMPACT);
	size_t len = strlen(text);
	text[len] = '\n';
	ssize_t w = write(fd, text, len + 1);
	free(text);
	/* One reply line, however long (a diff lists many files). */
	size_t used = 0, cap = 65536;
	char *buf = malloc(cap);
	json_t *reply = NULL;
	if (buf && w == (ssize_t)len + 1) {
		for (;;) {
			if (used + 1 == cap) {
				char *nb = cap < (256u << 20) ? realloc(buf, cap * 2) : NULL;
				if (!nb)
					break;
				buf = nb;
				cap *= 2;
			}
			ssize_t n = read(fd, buf + used, cap - 1 - used);
			if (n <= 0)
				break;
			if (memchr(buf + used, '\n', (size_t)n)) {
				used += n;
				break;
			}
			used += n;
		}
		buf[used] = 0;
		json_error_t err;
		reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, &err);
	}
	free(buf);
	close(fd);
	if (!reply || !json_is_object(reply)) {
		cow_err("no valid reply from the cowfs daemon of %s", store);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

const char *cli_duration(long s, char *buf, size_t n)
{
	if (s < 120)
		snprintf(buf, n, "%lds", s);
	else if (s < 7200)
		snprintf(buf, n, "%ldm", s / 60);
	else if (s < 172800)
		snprintf(buf, n, "%ldh", s / 3600);
	else
		snprintf(buf, n, "%ldd", s / 86400);
	return buf;
}

const char *cli_bytes(uint64_t bytes, char *buf, size_t n)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, n, "%.1f %s", v, unit[u]);
	return buf;
}

json_t *cli_call(const struct cli_target *t, json_t *req)
{
	char path[4096];
	if (!req) {
		cow_err("out of memory");
		return NULL;
	}
	if (find_store(t->store, t->mnt, path, sizeof path) < 0) {
		json_decref(req);
		return NULL;
	}
	json_t *reply = request(path, req);
	json_decref(req);
	if (reply && t->json) {
		/* out at once, also into a pipe: what follows (a restart of
		 * Postgres after a reset) may take seconds */
		char *text = json_dumps(reply, JSON_COMPACT);
		if (text) {
			puts(text);
			fflush(stdout);
		}
		free(text);
	} else if (reply && !json_is_true(json_object_get(reply, "ok"))) {
		json_t *e = json_object_get(reply, "error");
		cow_err("%s", json_is_string(e) ? json_string_value(e) : "the daemon refused");
	}
	return reply;
}

int cli_status(json_t *reply)
{
	int ok = reply && json_is_true(json_object_get(reply, "ok"));
	json_decref(reply);
	return ok ? 0 : 1;
}

int cli_target_option(struct cli_target *t, int argc, char **argv, int *i)
{
	if (strcmp(argv[*i], "--store") == 0 && *i + 1 < argc)
		t->store = argv[++*i];
	else if (strcmp(argv[*i], "--mount") == 0 && *i + 1 < argc)
		t->mnt = argv[++*i];
	else if (strcmp(argv[*i], "--json") == 0)
		t->json = true;
	else
		return 0;
	return 1;
}

const char *user_name(uint32_t uid, char *buf, size_t n)
{
	struct passwd *pw = getpwuid(uid);
	if (pw)
		snprintf(buf, n, "%s", pw->pw_name);
	else
		snprintf(buf, n, "%u", (unsigned)uid);
	return buf;
}

int parse_when(const char *text, int64_t *ret)
{
	char *end;
	if (text[0] == '@') {
		long long v = strtoll(text + 1, &end, 10);
		if (end == text + 1 || *end || v <= 0)
			return -EINVAL;
		*ret = v;
		return 0;
	}
	static const char *const formats[] = { "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M",
					       "%Y-%m-%d %H:%M", "%Y-%m-%d" };
	for (size_t i = 0; i < COW_ARRAY_SIZE(formats); i++) {
		struct tm tm = { .tm_isdst = -1 };
		end = strptime(text, formats[i], &tm);
		if (!end || (*end && strcmp(end, "Z") != 0))
			continue;
		time_t t = *end == 'Z' ? timegm(&tm) : mktime(&tm);
		if (t == (time_t)-1)
			return -EINVAL;
		*ret = t;
		return 0;
	}
	return -EINVAL;
}
