#include "pg.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "branch.h"
#include "util.h"
#include "writeback.h"

/* ---- socket directory ------------------------------------------------- */

int cow_pg_run_dir(const char *store, char *out, size_t n)
{
	/* The tag: the first 4 bytes of the superblock's uuid (bytes 16-31 of
	 * cowfs.super, docs/FORMAT.md section 2), which never changes. */
	char path[4096];
	snprintf(path, sizeof path, "%s/cowfs.super", store);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint8_t b[32];
	ssize_t got = pread(fd, b, sizeof b, 0);
	close(fd);
	if (got != (ssize_t)sizeof b)
		return -EBADMSG;
	char base[64];
	if (geteuid() == 0)
		snprintf(base, sizeof base, "/run/cowfs");
	else
		snprintf(base, sizeof base, "/tmp/cowfs-%u", (unsigned)geteuid());
	if ((size_t)snprintf(out, n, "%s/%02x%02x%02x%02x", base, b[16], b[17], b[18], b[19]) >= n)
		return -ENAMETOOLONG;
	return 0;
}

int cow_pg_socket_dir(const char *store, const char *branch, char *out, size_t n)
{
	char run[256];
	int r = cow_pg_run_dir(store, run, sizeof run);
	if (r < 0)
		return r;
	if ((size_t)snprintf(out, n, "%s/%s", run, branch) >= n)
		return -ENAMETOOLONG;
	return 0;
}

/* mkdir DIR with MODE, or check that what is there is a directory (not a
 * symbolic link someone planted). */
static int make_dir(const char *dir, mode_t mode)
{
	if (mkdir(dir, mode) == 0)
		return chmod(dir, mode) < 0 ? -errno : 0; /* whatever the umask */
	if (errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(dir, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int cow_pg_socket_dir_make(const char *dir, uid_t uid, gid_t gid)
{
	char p[4096];
	if ((size_t)snprintf(p, sizeof p, "%s", dir) >= sizeof p)
		return -ENAMETOOLONG;
	/* the two levels above: RUNDIR and RUNDIR/TAG */
	char *s1 = strrchr(p, '/');
	if (!s1 || s1 == p)
		return -EINVAL;
	*s1 = 0;
	char *s2 = strrchr(p, '/');
	int r;
	if (s2 && s2 != p) {
		*s2 = 0;
		if ((r = make_dir(p, 0755)) < 0)
			return r;
		*s2 = '/';
	}
	if ((r = make_dir(p, 0755)) < 0)
		return r;
	*s1 = '/';
	if ((r = make_dir(p, 0755)) < 0)
		return r;
	struct stat st;
	if (lstat(p, &st) < 0)
		return -errno;
	if ((st.st_uid != uid || st.st_gid != gid) && lchown(p, uid, gid) < 0)
		return -errno;
	return 0;
}

/* ---- ports ------------------------------------------------------------ */

/* Is PORT the local port of a listening socket in /proc/net/FILE? */
static bool proc_net_listens(const char *file, uint16_t port)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/net/%s", file);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		/* "  sl  local_address rem_address   st ...": ADDR:PORT in hex, st 0A = LISTEN */
		char local[128], remote[128];
		unsigned st;
		if (sscanf(line, " %*s %127s %127s %x", local, remote, &st) != 3)
			continue;
		char *colon = strrchr(local, ':');
		if (colon && st == 0x0A && strtoul(colon + 1, NULL, 16) == port)
			found = true;
	}
	fclose(f);
	return found;
}

/* Does binding PORT on the wildcard address of FAMILY fail as in use? */
static bool bind_refused(int family, uint16_t port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	int r;
	if (family == AF_INET) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
		r = bind(fd, (struct sockaddr *)&a, sizeof a);
	} else {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		r = bind(fd, (struct sockaddr *)&a, sizeof a);
	}
	bool refused = r < 0 && errno == EADDRINUSE;
	close(fd);
	return refused;
}

bool cow_pg_port_bound(uint16_t port)
{
	return proc_net_listens("tcp", port) || proc_net_listens("tcp6", port) || bind_refused(AF_INET, port) ||
	       bind_refused(AF_INET6, port);
}

/* The socket inode listening on PORT in /proc/net/FILE, or 0. */
static unsigned long listen_inode(const char *file, uint16_t port)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/net/%s", file);
	FILE *f = fopen(path, "re");
	unsigned long found = 0;
	while (f && !found && fgets(line, sizeof line, f)) {
		char local[128];
		unsigned st;
		unsigned long ino;
		if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &ino) != 3)
			continue;
		char *colon = strrchr(local, ':');
		if (colon && st == 0x0A && strtoul(colon + 1, NULL, 16) == port)
			found = ino;
	}
	if (f)
		fclose(f);
	return found;
}

pid_t cow_pg_port_user(uint16_t port, char *comm, size_t n)
{
	unsigned long ino = listen_inode("tcp", port);
	if (!ino)
		ino = listen_inode("tcp6", port);
	if (!ino)
		return 0;
	char want[64];
	snprintf(want, sizeof want, "socket:[%lu]", ino);
	DIR *proc = opendir("/proc");
	struct dirent *pe;
	pid_t found = 0;
	while (proc && !found && (pe = readdir(proc))) {
		if (!isdigit((unsigned char)pe->d_name[0]))
			continue;
		char fdpath[300];
		snprintf(fdpath, sizeof fdpath, "/proc/%s/fd", pe->d_name);
		DIR *fds = opendir(fdpath);
		struct dirent *fe;
		while (fds && !found && (fe = readdir(fds))) {
			char link[600], target[64];
			snprintf(link, sizeof link, "%s/%s", fdpath, fe->d_name);
			ssize_t l = readlink(link, target, sizeof target - 1);
			if (l > 0) {
				target[l] = 0;
				if (strcmp(target, want) == 0)
					found = (pid_t)atoi(pe->d_name);
			}
		}
		if (fds)
			closedir(fds);
	}
	if (proc)
		closedir(proc);
	if (found && n) {
		/* a /proc file says size 0: read it, not its size */
		char cpath[64];
		snprintf(cpath, sizeof cpath, "/proc/%d/comm", (int)found);
		comm[0] = 0;
		int fd = open(cpath, O_RDONLY | O_CLOEXEC);
		ssize_t got = fd >= 0 ? read(fd, comm, n - 1) : -1;
		comm[got > 0 ? got : 0] = 0;
		comm[strcspn(comm, "\n")] = 0;
		if (fd >= 0)
			close(fd);
	}
	return found;
}

int cow_pg_pick_port(const uint16_t *used, size_t n, uint16_t *ret)
{
	/* Start at a random place: two stores (or a store and a test picking
	 * ports of its own) then rarely try the same port at the same time. */
	unsigned span = COW_PG_PORT_MAX - COW_PG_PORT_MIN + 1, start = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (read(fd, &start, sizeof start) != sizeof start)
			start = (unsigned)getpid();
		close(fd);
	}
	for (unsigned i = 0; i < span; i++) {
		uint16_t p = (uint16_t)(COW_PG_PORT_MIN + (start + i) % span);
		bool taken = false;
		for (size_t j = 0; j < n && !taken; j++)
			taken = used[j] == p;
		/* Binding the wildcard address with SO_REUSEADDR fails while
		 * anything listens on the port, on any address: enough to pick.
		 * Reading /proc/net/tcp (cow_pg_port_bound) walks the kernel's
		 * whole connection table, about a millisecond per read here, and
		 * a branch create waits for this. */
		if (!taken && !bind_refused(AF_INET, p) && !bind_refused(AF_INET6, p)) {
			*ret = p;
			return 0;
		}
	}
	return -EADDRINUSE;
}

/* ---- ports of other stores ------------------------------------------------ */

int cow_pg_ports_publish(const char *store, const uint16_t *ports, size_t n)
{
	char dir[256];
	int r = cow_pg_run_dir(store, dir, sizeof dir);
	if (r < 0)
		return r;
	char *base = strdup(dir), *slash = base ? strrchr(base, '/') : NULL;
	if (!base)
		return -ENOMEM;
	if (slash)
		*slash = 0;
	r = make_dir(base, 0755);
	free(base);
	if (r < 0 || (r = make_dir(dir, 0755)) < 0)
		return r;
	char *text = malloc(n * 7 + 1), *p = text;
	if (!text)
		return -ENOMEM;
	*p = 0;
	for (size_t i = 0; i < n; i++)
		if (ports[i])
			p += sprintf(p, "%u\n", (unsigned)ports[i]);
	/* not durable on purpose: /run does not outlive a reboot, and a mount
	 * publishes again */
	char tmp[300], dst[300];
	snprintf(tmp, sizeof tmp, "%s/.ports.tmp", dir);
	snprintf(dst, sizeof dst, "%s/ports", dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r = fd < 0 ? -errno : write(fd, text, (size_t)(p - text)) == p - text ? 0 : -EIO;
	if (fd >= 0)
		close(fd);
	if (r == 0 && rename(tmp, dst) < 0)
		r = -errno;
	free(text);
	return r;
}

void cow_pg_ports_unpublish(const char *store)
{
	char dir[256], f[300];
	if (cow_pg_run_dir(store, dir, sizeof dir) == 0) {
		snprintf(f, sizeof f, "%s/ports", dir);
		unlink(f);
	}
}

int cow_pg_ports_others(const char *store, uint16_t **ret, size_t *ret_n)
{
	char own[256];
	*ret = NULL;
	*ret_n = 0;
	int r = cow_pg_run_dir(store, own, sizeof own);
	if (r < 0)
		return r;
	char *slash = strrchr(own, '/');
	if (!slash)
		return -EINVAL;
	*slash = 0;
	const char *tag = slash + 1;
	DIR *d = opendir(own);
	if (!d)
		return 0;
	uint16_t *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, tag) == 0)
			continue;
		char path[600], *text;
		size_t len;
		snprintf(path, sizeof path, "%s/%s/ports", own, de->d_name);
		if (cow_read_file(path, 1u << 20, &text, &len) < 0)
			continue;
		for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			long p = strtol(l, NULL, 10);
			if (p <= 0 || p > 65535)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				uint16_t *nv = realloc(v, cap * sizeof *v);
				if (!nv)
					break;
				v = nv;
			}
			v[n++] = (uint16_t)p;
		}
		free(text);
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* ---- postgresql.auto.conf --------------------------------------------- */

/* The key of a configuration line (lower-cased into KEY), and where its
 * value starts; false for blank lines and comments. */
static bool conf_key(const char *line, const char *end, char *key, size_t n, const char **ret_val)
{
	const char *p = line;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	size_t k = 0;
	while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '.')) {
		if (k + 1 < n)
			key[k++] = (char)tolower((unsigned char)*p);
		p++;
	}
	key[k] = 0;
	if (k == 0)
		return false;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p < end && *p == '=')
		p++;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	*ret_val = p;
	return true;
}

/* A configuration value: 'quoted' (with '' or \' for a quote) or bare. */
static void conf_value(const char *p, const char *end, char *out, size_t n)
{
	size_t k = 0;
	if (p < end && *p == '\'') {
		for (p++; p < end; p++) {
			if ((*p == '\'' && p + 1 < end && p[1] == '\'') || (*p == '\\' && p + 1 < end))
				p++;
			else if (*p == '\'')
				break;
			if (k + 1 < n)
				out[k++] = *p;
		}
	} else {
		while (p < end && !isspace((unsigned char)*p) && *p != '#') {
			if (k + 1 < n)
				out[k++] = *p;
			p++;
		}
	}
	out[k] = 0;
}

static bool ours(const char *key) { return strcmp(key, "port") == 0 || strcmp(key, "unix_socket_directories") == 0; }

void cow_pg_settings_parse(const char *text, uint16_t *ret_port, char *ret_sockdir, size_t n)
{
	*ret_port = 0;
	if (n)
		ret_sockdir[0] = 0;
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		char key[64], val[512];
		const char *v;
		if (conf_key(line, end, key, sizeof key, &v)) {
			if (strcmp(key, "port") == 0) {
				conf_value(v, end, val, sizeof val);
				long p = strtol(val, NULL, 10);
				*ret_port = p > 0 && p <= 65535 ? (uint16_t)p : 0;
			} else if (strcmp(key, "unix_socket_directories") == 0 && n) {
				conf_value(v, end, ret_sockdir, n);
			}
		}
		line = *end ? end + 1 : end;
	}
}

char *cow_pg_settings_rewrite(const char *old, uint16_t port, const char *sockdir)
{
	static const char header[] = "# Do not edit this file manually!\n"
				     "# It will be overwritten by the ALTER SYSTEM command.\n";
	size_t oldlen = old ? strlen(old) : 0;
	size_t cap = oldlen + sizeof header + 2 * strlen(sockdir) + 128;
	char *out = malloc(cap), *o = out;
	if (!out)
		return NULL;
	if (!old || !*old)
		o += sprintf(o, "%s", header);
	for (const char *line = old; line && *line;) {
		const char *end = strchr(line, '\n');
		const char *next = end ? end + 1 : line + strlen(line);
		if (!end)
			end = next;
		char key[64];
		const char *v;
		if (!(conf_key(line, end, key, sizeof key, &v) && ours(key))) {
			memcpy(o, line, end - line);
			o += end - line;
			*o++ = '\n';
		}
		line = next;
	}
	/* the format ALTER SYSTEM writes, so that it keeps the lines as they are */
	o += sprintf(o, "port = '%u'\nunix_socket_directories = '", (unsigned)port);
	for (const char *s = sockdir; *s; s++) {
		if (*s == '\'')
			*o++ = '\'';
		*o++ = *s;
	}
	o += sprintf(o, "'\n");
	return out;
}

int cow_pg_settings_write_branch(struct cow_branch *b, uint16_t port, const char *sockdir)
{
	static const char tmpname[] = ".cowfs-auto.conf.tmp";
	struct cow_attr a, root;
	char *old = NULL, *text = NULL;
	int r = cow_branch_lookup(b, COW_ROOT_INO, "PG_VERSION", &a);
	if (r == -ENOENT || r == -ENOTDIR)
		return 0; /* no cluster (yet) */
	if (r < 0)
		return r;
	cow_branch_forget(b, a.ino, 1);
	if ((r = cow_branch_getattr(b, COW_ROOT_INO, &root)) < 0)
		return r;
	uint32_t uid = root.uid, gid = root.gid, mode = 0600;
	r = cow_branch_lookup(b, COW_ROOT_INO, COW_PG_SETTINGS_FILE, &a);
	if (r == 0) {
		if (S_ISREG(a.mode) && a.size <= (1u << 20) && (old = malloc(a.size + 1))) {
			ssize_t got = cow_branch_read(b, a.ino, 0, a.size, old);
			old[got > 0 ? got : 0] = 0;
			if (got < 0)
				r = (int)got;
		} else {
			r = S_ISREG(a.mode) ? -EFBIG : -EISDIR;
		}
		uid = a.uid, gid = a.gid, mode = a.mode & 07777;
		cow_branch_forget(b, a.ino, 1);
		if (r < 0)
			goto out;
	} else if (r != -ENOENT) {
		return r;
	}
	if (!(text = cow_pg_settings_rewrite(old, port, sockdir))) {
		r = -ENOMEM;
		goto out;
	}
	/* temp file, then rename over: the file is always the old or the new one */
	r = cow_branch_unlink(b, COW_ROOT_INO, tmpname);
	if (r < 0 && r != -ENOENT)
		goto out;
	if ((r = cow_branch_mknod(b, COW_ROOT_INO, tmpname, S_IFREG | mode, 0, uid, gid, &a)) < 0)
		goto out;
	size_t len = strlen(text);
	ssize_t w = cow_branch_write(b, a.ino, 0, len, text);
	r = w == (ssize_t)len ? 0 : w < 0 ? (int)w : -EIO;
	if (r == 0)
		r = cow_branch_rename(b, COW_ROOT_INO, tmpname, COW_ROOT_INO, COW_PG_SETTINGS_FILE, 0);
	cow_branch_forget(b, a.ino, 1);
	if (r < 0)
		cow_branch_unlink(b, COW_ROOT_INO, tmpname);
out:
	free(old);
	free(text);
	return r;
}

int cow_pg_settings_write_path(const char *datadir, uint16_t port, const char *sockdir, uid_t uid, gid_t gid)
{
	char path[4096], tmp[4096];
	snprintf(path, sizeof path, "%s/%s", datadir, COW_PG_SETTINGS_FILE);
	snprintf(tmp, sizeof tmp, "%s/.cowfs-auto.conf.tmp", datadir);
	char *old = NULL;
	size_t len = 0;
	int r = cow_read_file(path, 1u << 20, &old, &len);
	if (r < 0 && r != -ENOENT)
		return r;
	uint16_t cur_port;
	char cur_dir[512];
	cow_pg_settings_parse(old, &cur_port, cur_dir, sizeof cur_dir);
	if (cur_port == port && strcmp(cur_dir, sockdir) == 0) {
		free(old);
		return 0;
	}
	struct stat st;
	mode_t mode = r == 0 && stat(path, &st) == 0 ? st.st_mode & 07777 : 0600;
	char *text = cow_pg_settings_rewrite(old, port, sockdir);
	free(old);
	if (!text)
		return -ENOMEM;
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	len = strlen(text);
	r = write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
	if (r == 0 && geteuid() == 0 && fchown(fd, uid, gid) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	else
		r = cow_fsync_path(datadir) < 0 ? -EIO : 1;
out:
	free(text);
	return r;
}

/* ---- postmaster.pid --------------------------------------------------- */

int cow_pg_pid_read(const char *datadir, struct cow_pg_pid *ret)
{
	char path[4096], *buf;
	size_t len;
	snprintf(path, sizeof path, "%s/postmaster.pid", datadir);
	int r = cow_read_file(path, 65536, &buf, &len);
	if (r < 0)
		return r;
	/* lines: pid, data directory, start time, port, socket directory,
	 * listen address, shared memory key, status */
	memset(ret, 0, sizeof *ret);
	char *save = NULL, *line = buf;
	int i = 0;
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save), i++) {
		line = l;
		if (i == 0)
			ret->pid = (pid_t)strtol(line, NULL, 10);
		else if (i == 2)
			ret->started = (time_t)strtoll(line, NULL, 10);
		else if (i == 3)
			ret->port = (uint16_t)strtoul(line, NULL, 10);
		else if (i == 4)
			snprintf(ret->sockdir, sizeof ret->sockdir, "%s", line);
		else if (i == 7) {
			snprintf(ret->status, sizeof ret->status, "%s", line);
			ret->status[strcspn(ret->status, " ")] = 0;
		}
	}
	free(buf);
	return ret->pid > 0 ? 0 : -EBADMSG;
}

bool cow_pg_pid_alive(pid_t pid)
{
	if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
		return false;
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return !(p && (p[2] == 'Z' || p[2] == 'X'));
}

pid_t cow_pg_running(const char *datadir)
{
	struct cow_pg_pid p;
	if (cow_pg_pid_read(datadir, &p) < 0 || !cow_pg_pid_alive(p.pid))
		return 0;
	return p.pid;
}

/* The last line of FILE from OFFSET on that says why Postgres stopped. */
void cow_pg_log_reason(const char *file, off_t from, char *out, size_t n)
{
	snprintf(out, n, "see %s", file);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char buf[16384];
	off_t end = lseek(fd, 0, SEEK_END);
	if (end - from > (off_t)sizeof buf - 1)
		from = end - (off_t)sizeof buf + 1;
	ssize_t got = pread(fd, buf, sizeof buf - 1, from);
	close(fd);
	if (got <= 0)
		return;
	buf[got] = 0;
	const char *best = NULL;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		const char *lvl = strstr(l, "FATAL:");
		if (!lvl)
			lvl = strstr(l, "PANIC:");
		if (!lvl && !best)
			lvl = strstr(l, "ERROR:");
		if (lvl)
			best = lvl;
	}
	if (best) {
		char tmp[512];
		snprintf(tmp, sizeof tmp, "%s", best);
		/* "FATAL:  msg" -> "FATAL: msg" */
		char *sp = strstr(tmp, ":  ");
		if (sp)
			memmove(sp + 1, sp + 2, strlen(sp + 2) + 1);
		snprintf(out, n, "%.300s (log: %.200s)", tmp, file);
	}
}

/* ---- binaries --------------------------------------------------------- */

int cow_pg_cluster_version(const char *datadir, char *out, size_t n)
{
	char path[4096], *buf;
	size_t len;
	snprintf(path, sizeof path, "%s/PG_VERSION", datadir);
	int r = cow_read_file(path, 64, &buf, &len);
	if (r < 0)
		return r;
	buf[strcspn(buf, " \t\r\n")] = 0;
	r = buf[0] && strspn(buf, "0123456789.") == strlen(buf) ? 0 : -EBADMSG;
	if (r == 0)
		snprintf(out, n, "%s", buf);
	free(buf);
	return r;
}

static bool has_pg_ctl(const char *dir)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/pg_ctl", dir);
	return access(p, X_OK) == 0;
}

/* The major version of "15.4" / "9.6.24" in the form PG_VERSION has. */
static void major_of(const char *full, char *out, size_t n)
{
	snprintf(out, n, "%.15s", full);
	char *dot = strchr(out, '.');
	if (dot && atoi(out) < 10)
		dot = strchr(dot + 1, '.');
	if (dot)
		*dot = 0;
}

/* `pg_config --bindir` and the major version it is for. */
static bool pg_config(char *bindir, size_t n, char *major, size_t mn)
{
	FILE *f = popen("pg_config --bindir --version 2>/dev/null", "re");
	if (!f)
		return false;
	char line1[4096] = "", line2[256] = "";
	bool ok = fgets(line1, sizeof line1, f) && fgets(line2, sizeof line2, f);
	if (pclose(f) != 0 || !ok)
		return false;
	line1[strcspn(line1, "\n")] = 0;
	const char *v = strstr(line2, "PostgreSQL ");
	if (!v)
		return false;
	char full[64];
	snprintf(full, sizeof full, "%s", v + 11);
	full[strspn(full, "0123456789.")] = 0;
	major_of(full, major, mn);
	snprintf(bindir, n, "%s", line1);
	return true;
}

static double version_num(const char *v) { return strtod(v, NULL); }

int cow_pg_bindir(const char *configured, const char *version, char *out, size_t n)
{
	const char *env = getenv("COWFS_PG_BINDIR");
	const char *given = configured && *configured ? configured : env && *env ? env : NULL;
	if (given) {
		if (!has_pg_ctl(given)) {
			cow_err("%s: no pg_ctl there (from %s)", given, configured && *configured ? "--bindir" : "COWFS_PG_BINDIR");
			return -ENOENT;
		}
		snprintf(out, n, "%s", given);
		return 0;
	}
	char dir[4096];
	if (version) {
		snprintf(dir, sizeof dir, "/usr/lib/postgresql/%s/bin", version);
		if (has_pg_ctl(dir)) {
			snprintf(out, n, "%s", dir);
			return 0;
		}
	}
	char major[32];
	if (pg_config(dir, sizeof dir, major, sizeof major) && (!version || strcmp(major, version) == 0) &&
	    has_pg_ctl(dir)) {
		snprintf(out, n, "%s", dir);
		return 0;
	}
	if (!version) {
		DIR *d = opendir("/usr/lib/postgresql");
		struct dirent *de;
		double best = 0;
		while (d && (de = readdir(d))) {
			if (!isdigit((unsigned char)de->d_name[0]) || version_num(de->d_name) <= best)
				continue;
			snprintf(dir, sizeof dir, "/usr/lib/postgresql/%s/bin", de->d_name);
			if (has_pg_ctl(dir)) {
				best = version_num(de->d_name);
				snprintf(out, n, "%s", dir);
			}
		}
		if (d)
			closedir(d);
		if (best > 0)
			return 0;
	}
	if (version)
		cow_err("no PostgreSQL %s programs found (tried /usr/lib/postgresql/%s/bin and pg_config); "
			"name them with --bindir DIR or COWFS_PG_BINDIR", version, version);
	else
		cow_err("no PostgreSQL programs found (tried pg_config and /usr/lib/postgresql/*/bin); "
			"name them with --bindir DIR or COWFS_PG_BINDIR");
	return -ENOENT;
}

/* ---- running as the owner --------------------------------------------- */

int cow_pg_user_get(uid_t uid, struct cow_pg_user *ret)
{
	memset(ret, 0, sizeof *ret);
	ret->uid = uid;
	char buf[4096];
	struct passwd pw, *res = NULL;
	if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res) {
		ret->gid = pw.pw_gid;
		snprintf(ret->name, sizeof ret->name, "%s", pw.pw_name);
		snprintf(ret->home, sizeof ret->home, "%s", pw.pw_dir && *pw.pw_dir ? pw.pw_dir : "/");
		ret->ngroups = (int)COW_ARRAY_SIZE(ret->groups);
		if (getgrouplist(pw.pw_name, pw.pw_gid, ret->groups, &ret->ngroups) < 0)
			ret->ngroups = (int)COW_ARRAY_SIZE(ret->groups); /* the first 64 */
	} else {
		ret->gid = (gid_t)uid;
		snprintf(ret->name, sizeof ret->name, "%u", (unsigned)uid);
		snprintf(ret->home, sizeof ret->home, "/");
		ret->groups[0] = ret->gid;
		ret->ngroups = 1;
	}
	return 0;
}

int cow_pg_spawn(const struct cow_pg_user *u, const char *bindir, char *const argv[], char *const extra_env[],
		 int out_fd, int err_fd, pid_t *ret_pid)
{
	bool become = geteuid() == 0 && u->uid != 0;
	if (geteuid() != 0 && geteuid() != u->uid)
		return -EPERM;
	if (u->uid == 0)
		return -EPERM; /* never Postgres as root */
	/* Everything the child needs is prepared here: after fork() in a
	 * threaded process (the daemon) only async-signal-safe calls are made. */
	char path[4200], home[300], user[80], logname[90];
	snprintf(path, sizeof path, "PATH=%s%s/usr/local/bin:/usr/bin:/bin", bindir ? bindir : "", bindir ? ":" : "");
	snprintf(home, sizeof home, "HOME=%s", u->home);
	snprintf(user, sizeof user, "USER=%s", u->name);
	snprintf(logname, sizeof logname, "LOGNAME=%s", u->name);
	char *env[64];
	size_t ne = 0;
	env[ne++] = path;
	env[ne++] = home;
	env[ne++] = user;
	env[ne++] = logname;
	extern char **environ;
	for (char **e = environ; *e && ne < 48; e++)
		if (strncmp(*e, "LANG=", 5) == 0 || strncmp(*e, "LC_", 3) == 0 || strncmp(*e, "TZ=", 3) == 0)
			env[ne++] = *e;
	for (char *const *e = extra_env; e && *e && ne < COW_ARRAY_SIZE(env) - 1; e++)
		env[ne++] = *e;
	env[ne] = NULL;
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return -errno;
	int o = out_fd >= 0 ? out_fd : devnull, e = err_fd >= 0 ? err_fd : devnull;
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(devnull);
		return r;
	}
	if (pid == 0) {
		/* stdio first (dup2 clears close-on-exec), then nothing else stays open */
		int eo = e == 1 ? dup(e) : e; /* not lost when 1 is replaced */
		if (dup2(devnull, 0) < 0 || dup2(o, 1) < 0 || dup2(eo < 0 ? e : eo, 2) < 0)
			_exit(127);
		close_range(3, ~0U, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		cow_writeback_child(); /* while still root: it takes CAP_SYS_RESOURCE */
		if (become && (setgroups((size_t)u->ngroups, u->groups) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0))
			_exit(126);
		if (chdir("/") < 0)
			_exit(126);
		execve(argv[0], argv, env);
		_exit(127);
	}
	close(devnull);
	*ret_pid = pid;
	return 0;
}

int cow_pg_run(const struct cow_pg_user *u, const char *bindir, char *const argv[], char *const extra_env[],
	       int out_fd, int err_fd)
{
	pid_t pid;
	int r = cow_pg_spawn(u, bindir, argv, extra_env, out_fd, err_fd, &pid);
	if (r < 0)
		return r;
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
