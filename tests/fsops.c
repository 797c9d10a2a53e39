/* tests/fsops.c — exercise the file system calls Postgres and its tools rely
 * on, inside one directory, and print a transcript that is identical on every
 * correct Linux filesystem (ext4, tmpfs, cowfs).
 *
 *   fsops DIR         DIR exists, is empty and writable; run as root
 *   fsops --tree DIR  only the final walk ("tree:" lines) of a DIR that a
 *                     run left behind, to check it again after a remount
 *
 * Each step runs in its own subdirectory DIR/<step> and prints lines
 * "<step>: <what> = <result>". Results are return values, errno names, sizes,
 * modes, link counts, owners, FNV-1a 64 checksums of contents and sorted
 * directory listings. Nothing that legitimately differs between filesystems
 * is printed: no inode numbers, st_dev, st_blocks, directory sizes, fd
 * numbers or current times (only times the test set itself, and comparisons
 * such as "mtime moved forward"). "." and ".." are left out of listings
 * because POSIX leaves it to the filesystem whether readdir returns them.
 *
 * The program does not judge: it exits 0 when it ran to the end, whatever
 * the results were. tests/fsops.sh diffs the transcript taken on cowfs
 * against one taken on a plain disk. A step whose setup fails prints the
 * errno and returns early; later steps still run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#define KiB 1024L
#define MiB (1024L * 1024L)
#define BLK 8192L                   /* cowfs block size, Postgres page size */

/* ------------------------------------------------------------------ */
/* output                                                              */

static const char *cur_step = "main";   /* prefix of every line */

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	va_list ap;

	printf("%s: ", cur_step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static const char *errname(int e)
{
	static char buf[32];
	const char *n = strerrorname_np(e);

	if (n)
		return n;
	snprintf(buf, sizeof buf, "errno%d", e);
	return buf;
}

/* "what = r" for r >= 0, "what = ENAME" otherwise. errno is read first thing,
 * so a call can be passed directly: R(unlink("a"), "unlink a"). */
__attribute__((format(printf, 2, 3)))
static long R(long r, const char *fmt, ...)
{
	int e = errno;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (r < 0)
		say("%s = %s", what, errname(e));
	else
		say("%s = %ld", what, r);
	errno = e;
	return r;
}

/* For calls returning a descriptor: prints "ok" rather than the number. */
__attribute__((format(printf, 2, 3)))
static int FD(int fd, const char *fmt, ...)
{
	int e = errno;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (fd < 0)
		say("%s = %s", what, errname(e));
	else
		say("%s = ok", what);
	errno = e;
	return fd;
}

static const char *yesno(bool b)
{
	return b ? "yes" : "no";
}

/* ------------------------------------------------------------------ */
/* data: patterns, checksums, zero checks                              */

#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *c = p;

	while (n--) {
		h ^= *c++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Byte at absolute file offset off of pattern seed; never zero, so that a
 * byte read back as zero is always a hole or a lost write. */
static unsigned char pat_byte(uint64_t off, unsigned seed)
{
	unsigned char b = (unsigned char)mix64(off * 0x9e3779b97f4a7c15ULL + seed);

	return b ? b : 0x5a;
}

static void pattern(void *buf, size_t len, uint64_t off, unsigned seed)
{
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = pat_byte(off + i, seed);
}

/* Deterministic generator for the random sequences (splitmix64). */
static uint64_t rng_state = 12345;

static uint64_t rng(void)
{
	rng_state += 0x9e3779b97f4a7c15ULL;
	return mix64(rng_state);
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i])
			return false;
	return true;
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (!p) {
		perror("fsops: calloc");
		exit(2);
	}
	return p;
}

/* pread until len bytes or EOF; returns bytes read or -1. */
static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, off + (off_t)done);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static ssize_t pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* Checksum of a whole file read through fd from offset 0 to EOF. */
static int sum_fd(int fd, uint64_t *ret_size, uint64_t *ret_hash)
{
	static char buf[1 << 20];
	uint64_t h = FNV_INIT, size = 0;

	for (;;) {
		ssize_t r = pread(fd, buf, sizeof buf, (off_t)size);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		h = fnv(buf, (size_t)r, h);
		size += (uint64_t)r;
	}
	*ret_size = size;
	*ret_hash = h;
	return 0;
}

static void show_sum_fd(int fd, const char *label)
{
	uint64_t size, h;

	if (sum_fd(fd, &size, &h) < 0)
		say("sum %s = %s", label, errname(errno));
	else
		say("sum %s = size=%" PRIu64 " fnv=%016" PRIx64, label, size, h);
}

static void show_sum(const char *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		say("sum %s = %s", path, errname(errno));
		return;
	}
	show_sum_fd(fd, path);
	close(fd);
}

/* Read [off, off+len) and print how many bytes came back and whether all of
 * them are zero. */
static void show_zero(int fd, off_t off, size_t len)
{
	char *buf = xmalloc(len);
	ssize_t r = pread_full(fd, buf, len, off);

	if (r < 0)
		say("zero [%lld,+%zu) = %s", (long long)off, len, errname(errno));
	else
		say("zero [%lld,+%zu) = n=%zd allzero=%s", (long long)off, len, r,
		    yesno(all_zero(buf, (size_t)r)));
	free(buf);
}

/* pread and print length and checksum of what came back. */
static void show_pread(int fd, off_t off, size_t len)
{
	char *buf = xmalloc(len);
	ssize_t r = pread(fd, buf, len, off);

	if (r < 0)
		say("pread off=%lld len=%zu = %s", (long long)off, len, errname(errno));
	else
		say("pread off=%lld len=%zu = %zd fnv=%016" PRIx64, (long long)off, len,
		    r, fnv(buf, (size_t)r, FNV_INIT));
	free(buf);
}

/* Short string contents of a file (for files of a few bytes). */
static void show_text(const char *path)
{
	char buf[256];
	int fd = open(path, O_RDONLY);
	ssize_t r;

	if (fd < 0) {
		say("cat %s = %s", path, errname(errno));
		return;
	}
	r = pread(fd, buf, sizeof buf - 1, 0);
	if (r < 0) {
		say("cat %s = %s", path, errname(errno));
	} else {
		buf[r] = 0;
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] == '\n')
				buf[i] = '|';
		say("cat %s = \"%s\"", path, buf);
	}
	close(fd);
}

static int make_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);

	if (fd < 0)
		return -1;
	if (len && pwrite_full(fd, data, len, 0) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return close(fd);
}

/* ------------------------------------------------------------------ */
/* metadata                                                            */

static const char *type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG:  return "reg";
	case S_IFDIR:  return "dir";
	case S_IFLNK:  return "lnk";
	case S_IFIFO:  return "fifo";
	case S_IFSOCK: return "sock";
	case S_IFCHR:  return "chr";
	case S_IFBLK:  return "blk";
	default:       return "?";
	}
}

/* Directory sizes differ between filesystems; everything else printed here
 * must not. */
static const char *describe(const struct stat *st)
{
	static char buf[160];
	int n = snprintf(buf, sizeof buf, "%s mode=%04o nlink=%lu uid=%u gid=%u",
			 type_name(st->st_mode), (unsigned)(st->st_mode & 07777),
			 (unsigned long)st->st_nlink, (unsigned)st->st_uid,
			 (unsigned)st->st_gid);
	if (S_ISREG(st->st_mode) || S_ISLNK(st->st_mode))
		snprintf(buf + n, sizeof buf - (size_t)n, " size=%lld", (long long)st->st_size);
	return buf;
}

static void show_stat(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		say("stat %s = %s", path, errname(errno));
	else
		say("stat %s = %s", path, describe(&st));
}

static void show_lstat(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		say("lstat %s = %s", path, errname(errno));
	else
		say("lstat %s = %s", path, describe(&st));
}

static void show_fstat(int fd, const char *label)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		say("fstat %s = %s", label, errname(errno));
	else
		say("fstat %s = %s", label, describe(&st));
}

static long nlink_of(const char *path)
{
	struct stat st;

	return stat(path, &st) < 0 ? -1 : (long)st.st_nlink;
}

static void show_readlink(const char *path)
{
	char buf[4096];
	ssize_t r = readlink(path, buf, sizeof buf - 1);

	if (r < 0) {
		say("readlink %s = %s", path, errname(errno));
		return;
	}
	buf[r] = 0;
	say("readlink %s = %zd \"%s\"", path, r, buf);
}

static void show_times(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		say("times %s = %s", path, errname(errno));
		return;
	}
	say("times %s = atime=%lld.%09ld mtime=%lld.%09ld", path,
	    (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
	    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* ------------------------------------------------------------------ */
/* directory listings                                                  */

struct ent {
	char *name;
	char type;
};

static char dtype_char(unsigned char t)
{
	switch (t) {
	case DT_REG:  return 'f';
	case DT_DIR:  return 'd';
	case DT_LNK:  return 'l';
	case DT_FIFO: return 'p';
	case DT_SOCK: return 's';
	case DT_CHR:  return 'c';
	case DT_BLK:  return 'b';
	case DT_UNKNOWN: return 'u';
	default:      return '?';
	}
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ent *)a)->name, ((const struct ent *)b)->name);
}

/* Sorted listing without "." and "..". Returns count or -1. */
static long list_dir(const char *path, struct ent **ret)
{
	DIR *d = opendir(path);
	struct dirent *de;
	struct ent *v = NULL;
	size_t n = 0, cap = 0;

	if (!d)
		return -1;
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			v = realloc(v, cap * sizeof *v);
			if (!v) {
				perror("fsops: realloc");
				exit(2);
			}
		}
		v[n].name = strdup(de->d_name);
		v[n].type = dtype_char(de->d_type);
		n++;
	}
	if (errno) {
		int e = errno;
		closedir(d);
		for (size_t i = 0; i < n; i++)
			free(v[i].name);
		free(v);
		errno = e;
		return -1;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof *v, ent_cmp);
	*ret = v;
	return (long)n;
}

static void free_list(struct ent *v, long n)
{
	for (long i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* "ls PATH = a(f) b(d) c(l)" */
static void show_ls(const char *path)
{
	struct ent *v;
	long n = list_dir(path, &v);
	char line[4096];
	size_t len = 0;

	if (n < 0) {
		say("ls %s = %s", path, errname(errno));
		return;
	}
	line[0] = 0;
	for (long i = 0; i < n && len < sizeof line - 300; i++)
		len += (size_t)snprintf(line + len, sizeof line - len, "%s%s(%c)",
					i ? " " : "", v[i].name, v[i].type);
	say("ls %s = %s", path, n ? line : "(empty)");
	free_list(v, n);
}

/* "ls PATH = count=N fnv=..." for big directories. */
static void show_ls_summary(const char *path)
{
	struct ent *v;
	long n = list_dir(path, &v);
	uint64_t h = FNV_INIT;

	if (n < 0) {
		say("ls %s = %s", path, errname(errno));
		return;
	}
	for (long i = 0; i < n; i++) {
		h = fnv(v[i].name, strlen(v[i].name) + 1, h);
		h = fnv(&v[i].type, 1, h);
	}
	say("ls %s = count=%ld fnv=%016" PRIx64, path, n, h);
	free_list(v, n);
}

/* ------------------------------------------------------------------ */
/* steps                                                               */

static void step_create_excl(void)
{
	int fd;

	fd = FD(open("a", O_CREAT | O_EXCL | O_RDWR, 0644), "open a O_CREAT|O_EXCL");
	if (fd < 0)
		return;
	R(write(fd, "hello\n", 6), "write a");
	R(close(fd), "close a");
	FD(open("a", O_CREAT | O_EXCL | O_RDWR, 0644), "open a O_CREAT|O_EXCL again");
	show_stat("a");
	show_text("a");

	FD(open("missing", O_RDONLY), "open missing");
	FD(open("a", O_RDONLY | O_DIRECTORY), "open a O_DIRECTORY");
	FD(open(".", O_WRONLY), "open . O_WRONLY");
	FD(open("a/x", O_RDONLY), "open a/x");
	FD(open("nodir/x", O_CREAT | O_WRONLY, 0644), "open nodir/x O_CREAT");
	R(symlink("nowhere", "dangling"), "symlink dangling");
	FD(open("dangling", O_CREAT | O_EXCL | O_WRONLY, 0644), "open dangling O_CREAT|O_EXCL");
	show_lstat("nowhere");

	/* umask 022 applies to the requested mode */
	fd = FD(open("m666", O_CREAT | O_EXCL | O_WRONLY, 0666), "open m666 mode 0666");
	if (fd >= 0)
		close(fd);
	fd = FD(open("m600", O_CREAT | O_EXCL | O_WRONLY, 0600), "open m600 mode 0600");
	if (fd >= 0)
		close(fd);
	fd = FD(creat("creat", 0640), "creat creat 0640");
	if (fd >= 0) {
		R(write(fd, "c", 1), "write creat");
		close(fd);
	}
	show_stat("m666");
	show_stat("m600");
	show_stat("creat");

	/* O_TRUNC on an existing file with data */
	fd = FD(open("a", O_WRONLY | O_TRUNC), "open a O_TRUNC");
	if (fd < 0)
		return;
	show_fstat(fd, "a after O_TRUNC");
	show_stat("a");
	R(write(fd, "xyz", 3), "write a");
	R(close(fd), "close a");
	show_text("a");
	/* O_TRUNC on an empty file and through O_RDONLY|O_CREAT without O_TRUNC */
	fd = FD(open("a", O_RDONLY | O_CREAT, 0644), "open a O_RDONLY|O_CREAT (exists)");
	if (fd >= 0)
		close(fd);
	show_stat("a");
	show_ls(".");
}

static void step_write_read(void)
{
	char buf[20000], rbuf[20000];
	int fd, fd2;

	fd = FD(open("f", O_CREAT | O_RDWR | O_TRUNC, 0644), "open f");
	if (fd < 0)
		return;
	pattern(buf, 10000, 0, 1);
	R(write(fd, buf, 10000), "write 10000");
	R(lseek(fd, 0, SEEK_CUR), "lseek SEEK_CUR");
	pattern(buf, 5000, 10000, 1);
	R(write(fd, buf, 5000), "write 5000");
	R(lseek(fd, 0, SEEK_SET), "lseek 0 SEEK_SET");
	{
		ssize_t r = read(fd, rbuf, 4096);
		if (r < 0)
			R(r, "read 4096");
		else
			say("read 4096 = %zd fnv=%016" PRIx64, r, fnv(rbuf, (size_t)r, FNV_INIT));
		r = read(fd, rbuf, sizeof rbuf);
		if (r < 0)
			R(r, "read 20000");
		else
			say("read 20000 = %zd fnv=%016" PRIx64, r, fnv(rbuf, (size_t)r, FNV_INIT));
	}
	R(read(fd, rbuf, 100), "read at EOF");
	R(lseek(fd, 0, SEEK_END), "lseek 0 SEEK_END");
	R(lseek(fd, -1, SEEK_SET), "lseek -1 SEEK_SET");
	R(lseek(fd, 100000, SEEK_SET), "lseek 100000 SEEK_SET");
	R(read(fd, rbuf, 100), "read past EOF");
	show_stat("f");

	/* a second descriptor sees writes made through the first at once */
	fd2 = FD(open("f", O_RDONLY), "open f second fd");
	if (fd2 >= 0) {
		show_pread(fd2, 0, 15000);
		R(pwrite(fd, "ABC", 3, 100), "pwrite ABC at 100 via fd1");
		memset(rbuf, 0, 4);
		R(pread(fd2, rbuf, 3, 100), "pread 3 at 100 via fd2");
		say("fd2 sees = \"%.3s\"", rbuf);
		R(pwrite(fd, "Q", 1, 15000), "pwrite Q at 15000 via fd1 (extends)");
		show_fstat(fd2, "fd2");
		R(read(fd2, rbuf, 1), "read fd2 at its offset 0");
		R(write(fd2, "x", 1), "write on O_RDONLY fd");
		close(fd2);
	}
	R(close(fd), "close f");
	fd = FD(open("f", O_WRONLY), "open f O_WRONLY");
	if (fd >= 0) {
		R(read(fd, rbuf, 1), "read on O_WRONLY fd");
		close(fd);
	}
	show_sum("f");
	show_stat("f");
}

/* pwrite/pread at offsets chosen to sit on, just before, just after and
 * across 4 KiB and 8 KiB boundaries, then a random sequence checked against
 * an in-memory model of the file. */
static void step_pread_pwrite(void)
{
	static const struct { long off, len; } wr[] = {
		{ 0, 1 }, { 4095, 2 }, { 4096, 4096 }, { 8191, 1 }, { 8191, 2 },
		{ 8192, 8192 }, { 8190, 8196 }, { 12000, 10000 }, { 16383, 16386 },
		{ 24576, 1 }, { 40959, 8194 }, { 65535, 3 }, { 70000, 100 },
		{ 131067, 10 }, { 1, 65536 },
	};
	static const struct { long off, len; } rd[] = {
		{ 0, 131077 }, { 0, 1 }, { 8190, 4 }, { 8191, 1 }, { 8192, 1 },
		{ 16380, 8200 }, { 65530, 10000 }, { 69990, 20 }, { 70095, 100 },
		{ 131070, 100 }, { 131077, 10 }, { 200000, 10 },
	};
	const size_t model_cap = 600000;
	unsigned char *model = xmalloc(model_cap), *buf = xmalloc(model_cap);
	size_t model_size = 0;
	int fd;

	fd = FD(open("p", O_CREAT | O_RDWR | O_TRUNC, 0644), "open p");
	if (fd < 0)
		goto out;
	pattern(model, 65536, 0, 1);
	model_size = 65536;
	R(pwrite_full(fd, model, 65536, 0), "pwrite 65536 at 0");

	for (size_t i = 0; i < sizeof wr / sizeof wr[0]; i++) {
		size_t off = (size_t)wr[i].off, len = (size_t)wr[i].len;
		pattern(buf, len, off, 2 + (unsigned)i);
		R(pwrite(fd, buf, len, (off_t)off), "pwrite off=%zu len=%zu", off, len);
		if (off > model_size)
			memset(model + model_size, 0, off - model_size);
		memcpy(model + off, buf, len);
		if (off + len > model_size)
			model_size = off + len;
	}
	show_fstat(fd, "p");
	for (size_t i = 0; i < sizeof rd / sizeof rd[0]; i++)
		show_pread(fd, rd[i].off, (size_t)rd[i].len);

	/* random mix of writes and reads, reads compared with the model */
	{
		int writes = 0, reads = 0, bad = 0;
		long first_bad = -1;
		rng_state = 4242;
		for (int i = 0; i < 400; i++) {
			size_t off = (size_t)(rng() % 400000), len = 1 + (size_t)(rng() % 30000);
			if (rng() % 8 == 0)
				off &= ~(size_t)(BLK - 1);     /* some block-aligned ones */
			if (rng() % 2) {
				pattern(buf, len, off, 100 + (unsigned)i);
				if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
					bad++;
					if (first_bad < 0)
						first_bad = i;
					continue;
				}
				if (off > model_size)
					memset(model + model_size, 0, off - model_size);
				memcpy(model + off, buf, len);
				if (off + len > model_size)
					model_size = off + len;
				writes++;
			} else {
				ssize_t want = off >= model_size ? 0 :
					(ssize_t)(off + len > model_size ? model_size - off : len);
				ssize_t r = pread(fd, buf, len, (off_t)off);
				reads++;
				if (r != want || (r > 0 && memcmp(buf, model + off, (size_t)r))) {
					bad++;
					if (first_bad < 0)
						first_bad = i;
				}
			}
		}
		say("random ops = writes=%d reads=%d mismatches=%d first_mismatch_op=%ld",
		    writes, reads, bad, first_bad);
	}
	{
		ssize_t r = pread_full(fd, buf, model_cap, 0);
		long diff = -1;
		if (r == (ssize_t)model_size) {
			for (size_t i = 0; i < model_size; i++)
				if (buf[i] != model[i]) {
					diff = (long)i;
					break;
				}
		}
		say("whole file = n=%zd model_size=%zu first_diff=%ld fnv=%016" PRIx64,
		    r, model_size, diff, r > 0 ? fnv(buf, (size_t)r, FNV_INIT) : 0);
	}
	R(close(fd), "close p");
	show_sum("p");
out:
	free(model);
	free(buf);
}

static void step_sparse(void)
{
	const off_t far = 64 * MiB + 3;
	char buf[BLK + 16];
	int fd;

	fd = FD(open("s", O_CREAT | O_RDWR | O_TRUNC, 0644), "open s");
	if (fd < 0)
		return;
	R(pwrite(fd, "head", 4, 0), "pwrite head at 0");
	R(pwrite(fd, "tail", 4, far), "pwrite tail at 64MiB+3");
	show_fstat(fd, "s");
	show_stat("s");
	show_zero(fd, 4, BLK - 4);
	show_zero(fd, BLK, 64 * KiB);
	show_zero(fd, 32 * MiB + 123, 100000);
	show_zero(fd, far - BLK, BLK);
	{
		/* [far-4096, EOF): 4096 zeros, then "tail" */
		ssize_t r = pread(fd, buf, BLK, far - 4096);
		if (r < 0)
			R(r, "pread across hole/data");
		else
			say("pread across hole/data = %zd zeros_before=%s tail=\"%.4s\"", r,
			    yesno(r >= 4096 && all_zero(buf, 4096)), r >= 4100 ? buf + 4096 : "");
	}
	/* a second far write into the middle of the hole */
	R(pwrite(fd, "mid", 3, 40 * MiB - 1), "pwrite mid at 40MiB-1 (across block)");
	show_zero(fd, 40 * MiB - BLK, BLK - 1);
	show_pread(fd, 40 * MiB - 1, 3);
	show_zero(fd, 40 * MiB + 2, BLK);
	R(close(fd), "close s");
	show_sum("s");
}

static void step_large(void)
{
	const size_t len = 3 * (size_t)MiB;
	char *buf = xmalloc(len), *rbuf = xmalloc(len + 1);
	int fd;

	pattern(buf, len, 0, 7);
	say("pattern fnv = %016" PRIx64, fnv(buf, len, FNV_INIT));
	fd = FD(open("big", O_CREAT | O_RDWR | O_TRUNC, 0644), "open big");
	if (fd < 0)
		goto out;
	R(write(fd, buf, len), "write 3MiB in one call");
	R(fsync(fd), "fsync big");
	R(close(fd), "close big");
	fd = FD(open("big", O_RDONLY), "reopen big");
	if (fd < 0)
		goto out;
	{
		ssize_t r = read(fd, rbuf, len + 1);
		if (r < 0)
			R(r, "read 3MiB+1 in one call");
		else
			say("read 3MiB+1 in one call = %zd fnv=%016" PRIx64, r,
			    fnv(rbuf, (size_t)r, FNV_INIT));
	}
	{
		/* odd-sized sequential reads */
		uint64_t h = FNV_INIT;
		size_t total = 0;
		ssize_t r;
		lseek(fd, 0, SEEK_SET);
		while ((r = read(fd, rbuf, 7777)) > 0) {
			h = fnv(rbuf, (size_t)r, h);
			total += (size_t)r;
		}
		say("read in 7777-byte pieces = total=%zu last=%zd fnv=%016" PRIx64, total, r, h);
	}
	close(fd);

	/* overwrite the middle MiB with another pattern */
	fd = FD(open("big", O_RDWR), "open big O_RDWR");
	if (fd < 0)
		goto out;
	pattern(buf + MiB, MiB, MiB, 8);
	R(pwrite(fd, buf + MiB, MiB, MiB), "pwrite 1MiB at 1MiB");
	R(close(fd), "close big");
	show_sum("big");
	say("expected fnv = %016" PRIx64, fnv(buf, len, FNV_INIT));

	/* 3 MiB at an unaligned offset */
	fd = FD(open("big2", O_CREAT | O_RDWR | O_TRUNC, 0644), "open big2");
	if (fd < 0)
		goto out;
	pattern(buf, len, 12345, 9);
	R(pwrite(fd, buf, len, 12345), "pwrite 3MiB at 12345");
	{
		ssize_t r = pread_full(fd, rbuf, len, 12345);
		say("pread 3MiB at 12345 = %zd equal=%s", r,
		    yesno(r == (ssize_t)len && !memcmp(buf, rbuf, len)));
	}
	show_zero(fd, 0, 12345);
	R(close(fd), "close big2");
	show_sum("big2");
out:
	free(buf);
	free(rbuf);
}

static void step_truncate(void)
{
	char *buf = xmalloc(64 * KiB);
	int fd;

	pattern(buf, 40000, 0, 3);
	fd = FD(open("t", O_CREAT | O_RDWR | O_TRUNC, 0644), "open t");
	if (fd < 0)
		goto out;
	R(pwrite(fd, buf, 40000, 0), "pwrite 40000");

	/* down inside a block, then up: the old data must not come back */
	R(ftruncate(fd, 20000), "ftruncate 20000 (inside block 2)");
	show_fstat(fd, "t");
	show_sum_fd(fd, "t@20000");
	R(ftruncate(fd, 50000), "ftruncate 50000");
	show_fstat(fd, "t");
	show_zero(fd, 20000, 30000);
	show_sum_fd(fd, "t@50000");

	/* down to a block boundary, then up */
	R(ftruncate(fd, 16384), "ftruncate 16384 (block boundary)");
	R(ftruncate(fd, 40000), "ftruncate 40000");
	show_zero(fd, 16384, 40000 - 16384);
	show_pread(fd, 0, 16384);

	/* shrink, then write past the new EOF inside the same block */
	R(pwrite(fd, buf, 40000, 0), "pwrite 40000 again");
	R(ftruncate(fd, 20000), "ftruncate 20000");
	R(pwrite(fd, "Z", 1, 22000), "pwrite Z at 22000");
	show_fstat(fd, "t");
	show_zero(fd, 20000, 2000);
	show_pread(fd, 0, 20000);

	/* to zero and up again */
	R(ftruncate(fd, 0), "ftruncate 0");
	show_fstat(fd, "t");
	R(ftruncate(fd, BLK + 1), "ftruncate 8193");
	show_zero(fd, 0, BLK + 100);
	R(ftruncate(fd, -1), "ftruncate -1");
	R(close(fd), "close t");
	show_sum("t");

	/* across close and reopen, so that no page cache of the writer helps */
	R(make_file("u", buf, 30000, 0644), "make u 30000");
	fd = FD(open("u", O_RDWR), "open u");
	if (fd >= 0) {
		R(ftruncate(fd, 10000), "ftruncate u 10000");
		close(fd);
	}
	fd = FD(open("u", O_RDWR), "reopen u");
	if (fd >= 0) {
		R(ftruncate(fd, 30000), "ftruncate u 30000");
		close(fd);
	}
	fd = FD(open("u", O_RDONLY), "reopen u O_RDONLY");
	if (fd >= 0) {
		show_zero(fd, 10000, 20000);
		R(ftruncate(fd, 5), "ftruncate on O_RDONLY fd");
		close(fd);
	}
	show_sum("u");

	/* by path */
	R(truncate("u", 100), "truncate u 100");
	show_stat("u");
	R(truncate("u", 3 * BLK), "truncate u 24576");
	show_stat("u");
	show_sum("u");
	R(truncate("missing", 0), "truncate missing");
	R(truncate(".", 0), "truncate .");
out:
	free(buf);
}

static void step_fallocate(void)
{
	char *buf = xmalloc(128 * KiB);
	int fd;

	pattern(buf, 10000, 0, 4);
	fd = FD(open("fa", O_CREAT | O_RDWR | O_TRUNC, 0644), "open fa");
	if (fd < 0)
		goto out;
	R(pwrite(fd, buf, 10000, 0), "pwrite 10000");

	R(fallocate(fd, 0, 0, 64 * KiB), "fallocate 0 [0,65536)");
	show_fstat(fd, "fa");
	show_pread(fd, 0, 10000);
	show_zero(fd, 10000, 64 * KiB - 10000);
	R(fallocate(fd, 0, 100000, BLK), "fallocate 0 [100000,+8192)");
	show_fstat(fd, "fa");
	show_zero(fd, 64 * KiB, 100000 + BLK - 64 * KiB);

	R(fallocate(fd, FALLOC_FL_KEEP_SIZE, 200000, 2 * BLK), "fallocate KEEP_SIZE [200000,+16384)");
	show_fstat(fd, "fa");
	show_pread(fd, 200000, 100);

	/* punch whole 8 KiB blocks out of data */
	pattern(buf, 64 * KiB, 0, 5);
	R(pwrite(fd, buf, 64 * KiB, 0), "pwrite 65536 at 0");
	R(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BLK, 2 * BLK),
	  "fallocate PUNCH|KEEP [8192,24576)");
	show_fstat(fd, "fa");
	show_zero(fd, BLK, 2 * BLK);
	{
		char *rbuf = xmalloc(64 * KiB);
		ssize_t r = pread_full(fd, rbuf, 64 * KiB, 0);
		say("rest intact = %s", yesno(r == 64 * KiB && !memcmp(rbuf, buf, BLK) &&
					       !memcmp(rbuf + 3 * BLK, buf + 3 * BLK, 5 * BLK)));
		free(rbuf);
	}
	R(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 7 * BLK, 2 * BLK),
	  "fallocate PUNCH|KEEP [57344,73728) (end of data)");
	show_zero(fd, 7 * BLK, 2 * BLK);
	R(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, BLK),
	  "fallocate PUNCH|KEEP beyond EOF");
	show_fstat(fd, "fa");
	R(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, BLK), "fallocate PUNCH without KEEP_SIZE");
	R(fallocate(fd, 0, 0, 0), "fallocate len 0");
	{
		int e = posix_fallocate(fd, 0, 200000);
		errno = e;
		R(e ? -1 : 0, "posix_fallocate [0,200000)");
	}
	show_fstat(fd, "fa");
	R(close(fd), "close fa");
	show_sum("fa");

	/* the punched hole stays a hole after reopen */
	fd = FD(open("fa", O_RDONLY), "reopen fa");
	if (fd >= 0) {
		show_zero(fd, BLK, 2 * BLK);
		show_pread(fd, 0, 64 * KiB);
		R(fallocate(fd, 0, 0, BLK), "fallocate on O_RDONLY fd");
		close(fd);
	}

	/* fallocate into an empty file then write in the middle */
	fd = FD(open("fb", O_CREAT | O_RDWR | O_TRUNC, 0644), "open fb");
	if (fd >= 0) {
		R(fallocate(fd, 0, 0, 4 * BLK), "fallocate 0 [0,32768)");
		R(pwrite(fd, "mid", 3, 2 * BLK - 1), "pwrite mid at 16383");
		show_fstat(fd, "fb");
		close(fd);
		show_sum("fb");
	}
out:
	free(buf);
}

static void step_sync(void)
{
	int fd, dfd;

	fd = FD(open("f", O_CREAT | O_RDWR | O_TRUNC, 0644), "open f");
	if (fd < 0)
		return;
	R(write(fd, "durable\n", 8), "write f");
	R(fsync(fd), "fsync f");
	R(pwrite(fd, "D", 1, 0), "pwrite f");
	R(fdatasync(fd), "fdatasync f");
	R(sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE), "sync_file_range WRITE");
	R(sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				     SYNC_FILE_RANGE_WAIT_AFTER), "sync_file_range WAIT|WRITE|WAIT");
	errno = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	R(errno ? -1 : 0, "posix_fadvise DONTNEED");
	errno = posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
	R(errno ? -1 : 0, "posix_fadvise WILLNEED");
	R(syncfs(fd), "syncfs");
	R(close(fd), "close f");
	show_text("f");

	fd = FD(open("f", O_RDONLY), "open f O_RDONLY");
	if (fd >= 0) {
		R(fsync(fd), "fsync O_RDONLY fd");
		R(fdatasync(fd), "fdatasync O_RDONLY fd");
		close(fd);
	}
	fd = FD(open("f", O_WRONLY | O_DSYNC), "open f O_DSYNC");
	if (fd >= 0) {
		R(pwrite(fd, "S", 1, 1), "pwrite O_DSYNC");
		close(fd);
	}
	fd = FD(open("f", O_WRONLY | O_SYNC), "open f O_SYNC");
	if (fd >= 0) {
		R(pwrite(fd, "Y", 1, 2), "pwrite O_SYNC");
		close(fd);
	}
	show_text("f");

	R(mkdir("d", 0755), "mkdir d");
	dfd = FD(open("d", O_RDONLY | O_DIRECTORY), "open d O_DIRECTORY");
	if (dfd >= 0) {
		R(make_file("d/x", "x", 1, 0644), "create d/x");
		R(fsync(dfd), "fsync dir d");
		R(fdatasync(dfd), "fdatasync dir d");
		close(dfd);
	}
	dfd = FD(open(".", O_RDONLY | O_DIRECTORY), "open . O_DIRECTORY");
	if (dfd >= 0) {
		R(fsync(dfd), "fsync dir .");
		close(dfd);
	}
	/* Postgres's durable_rename: write tmp, fsync, rename, fsync dir */
	fd = FD(open("d/tmp", O_CREAT | O_WRONLY | O_TRUNC, 0600), "open d/tmp");
	if (fd >= 0) {
		R(write(fd, "new", 3), "write d/tmp");
		R(fsync(fd), "fsync d/tmp");
		close(fd);
		R(rename("d/tmp", "d/x"), "rename d/tmp d/x");
		dfd = open("d", O_RDONLY | O_DIRECTORY);
		R(fsync(dfd), "fsync dir d after rename");
		close(dfd);
	}
	show_text("d/x");
	show_ls("d");
}

static void step_rename(void)
{
	int fd;
	char buf[16];

	/* plain */
	R(make_file("a", "A", 1, 0644), "create a");
	R(rename("a", "b"), "rename a b");
	show_stat("a");
	show_text("b");

	/* replacing: the old target stays readable through an open fd */
	R(make_file("c", "CC", 2, 0644), "create c");
	fd = FD(open("c", O_RDONLY), "open c");
	R(rename("b", "c"), "rename b c (replace)");
	show_stat("b");
	show_text("c");
	if (fd >= 0) {
		memset(buf, 0, sizeof buf);
		R(pread(fd, buf, sizeof buf - 1, 0), "pread old c via fd");
		say("old c via fd = \"%s\"", buf);
		show_fstat(fd, "old c");
		close(fd);
	}

	/* an open fd follows its file across a rename */
	R(make_file("g", "g1", 2, 0644), "create g");
	fd = FD(open("g", O_RDWR), "open g");
	R(rename("g", "h"), "rename g h");
	if (fd >= 0) {
		R(pwrite(fd, "G", 1, 2), "pwrite via fd after rename");
		close(fd);
	}
	show_text("h");

	/* RENAME_NOREPLACE */
	R(make_file("d", "D", 1, 0644), "create d");
	R(renameat2(AT_FDCWD, "c", AT_FDCWD, "d", RENAME_NOREPLACE), "renameat2 c d NOREPLACE");
	show_text("c");
	show_text("d");
	R(renameat2(AT_FDCWD, "d", AT_FDCWD, "e", RENAME_NOREPLACE), "renameat2 d e NOREPLACE");
	show_stat("d");
	show_text("e");

	/* RENAME_EXCHANGE */
	R(make_file("x", "X1", 2, 0644), "create x");
	R(make_file("y", "Y22", 3, 0600), "create y");
	R(renameat2(AT_FDCWD, "x", AT_FDCWD, "y", RENAME_EXCHANGE), "renameat2 x y EXCHANGE");
	show_stat("x");
	show_text("x");
	show_stat("y");
	show_text("y");
	R(renameat2(AT_FDCWD, "x", AT_FDCWD, "nonexistent", RENAME_EXCHANGE),
	  "renameat2 x nonexistent EXCHANGE");
	R(mkdir("xd", 0700), "mkdir xd");
	R(make_file("xd/in", "in", 2, 0644), "create xd/in");
	say("nlink . = %ld", nlink_of("."));
	R(renameat2(AT_FDCWD, "x", AT_FDCWD, "xd", RENAME_EXCHANGE), "renameat2 x xd EXCHANGE (file/dir)");
	show_stat("x");
	show_stat("xd");
	show_text("x/in");
	show_text("xd");
	say("nlink . = %ld", nlink_of("."));
	R(renameat2(AT_FDCWD, "x", AT_FDCWD, "e", RENAME_NOREPLACE | RENAME_EXCHANGE),
	  "renameat2 NOREPLACE|EXCHANGE");

	/* two names of one file: rename is a no-op */
	R(link("e", "e2"), "link e e2");
	R(rename("e", "e2"), "rename e e2 (same inode)");
	show_stat("e");
	show_stat("e2");
	R(rename("e", "e"), "rename e e");
	R(rename("missing", "z"), "rename missing z");

	/* a directory to another parent: link counts of both parents */
	R(mkdir("p1", 0755), "mkdir p1");
	R(mkdir("p2", 0755), "mkdir p2");
	R(mkdir("p1/sub", 0755), "mkdir p1/sub");
	R(make_file("p1/sub/file", "inside", 6, 0644), "create p1/sub/file");
	say("nlink p1=%ld p2=%ld", nlink_of("p1"), nlink_of("p2"));
	R(rename("p1/sub", "p2/sub"), "rename p1/sub p2/sub");
	say("nlink p1=%ld p2=%ld sub=%ld", nlink_of("p1"), nlink_of("p2"), nlink_of("p2/sub"));
	show_stat("p1/sub");
	show_text("p2/sub/file");
	show_ls("p1");
	show_ls("p2");
	{
		struct stat a, b;
		bool same = stat("p2/sub/..", &a) == 0 && stat("p2", &b) == 0 &&
			    a.st_ino == b.st_ino && a.st_dev == b.st_dev;
		say("p2/sub/.. is p2 = %s", yesno(same));
	}
	R(rename("p2/sub", "p2/sub2"), "rename p2/sub p2/sub2 (same parent)");
	say("nlink p2=%ld", nlink_of("p2"));

	/* a directory onto an empty directory replaces it */
	R(mkdir("q1", 0755), "mkdir q1");
	R(mkdir("q2", 0700), "mkdir q2");
	R(make_file("q1/f", "q", 1, 0644), "create q1/f");
	say("nlink . = %ld", nlink_of("."));
	R(rename("q1", "q2"), "rename q1 q2 (onto empty dir)");
	say("nlink . = %ld", nlink_of("."));
	show_stat("q1");
	show_stat("q2");
	show_ls("q2");

	/* the errors */
	R(mkdir("r1", 0755), "mkdir r1");
	R(mkdir("r2", 0755), "mkdir r2");
	R(mkdir("r2/x", 0755), "mkdir r2/x");
	R(rename("r1", "r2"), "rename r1 r2 (onto non-empty dir)");
	R(rename("r1", "e"), "rename r1 e (dir onto file)");
	R(rename("e", "r1"), "rename e r1 (file onto dir)");
	R(rename("r2", "r2/x/y"), "rename r2 r2/x/y (into itself)");
	R(rename("e", "nodir/e"), "rename e nodir/e");
	R(rename("e", "e2/x"), "rename e e2/x");
	R(renameat2(AT_FDCWD, "r1", AT_FDCWD, "r2", RENAME_NOREPLACE), "renameat2 r1 r2 NOREPLACE");
	show_stat("r1");
	show_ls("r2");

	/* a file into a subdirectory and back */
	R(rename("e2", "p1/e2"), "rename e2 p1/e2");
	show_ls("p1");
	R(rename("p1/e2", "e3"), "rename p1/e2 e3");
	show_ls("p1");
	show_ls(".");
}

static void step_link(void)
{
	int fd;

	R(make_file("l1", "data1", 5, 0644), "create l1");
	R(link("l1", "l2"), "link l1 l2");
	show_stat("l1");
	show_stat("l2");
	fd = FD(open("l2", O_WRONLY), "open l2");
	if (fd >= 0) {
		R(pwrite(fd, "XY", 2, 0), "pwrite XY via l2");
		close(fd);
	}
	show_text("l1");
	show_text("l2");
	R(chmod("l2", 0600), "chmod l2 0600");
	show_stat("l1");
	R(link("l1", "l2"), "link l1 l2 again");
	R(link("missing", "l3"), "link missing l3");
	R(mkdir("d", 0755), "mkdir d");
	R(link("d", "d2"), "link d d2");
	R(link("l1", "d/l4"), "link l1 d/l4");
	show_stat("d/l4");
	R(unlink("l1"), "unlink l1");
	show_stat("l2");
	show_text("d/l4");
	R(unlink("d/l4"), "unlink d/l4");
	show_stat("l2");
	show_ls(".");
	show_ls("d");
}

static void step_symlink(void)
{
	char longt[1001];
	int fd;

	R(make_file("t", "target\n", 7, 0644), "create t");
	R(symlink("t", "s"), "symlink t s");
	show_readlink("s");
	show_stat("s");
	show_lstat("s");
	show_text("s");
	R(symlink("t", "s"), "symlink t s again");
	FD(open("s", O_RDONLY | O_NOFOLLOW), "open s O_NOFOLLOW");

	/* relative target resolved from the link's own directory */
	R(mkdir("sub", 0755), "mkdir sub");
	R(symlink("../t", "sub/up"), "symlink ../t sub/up");
	show_readlink("sub/up");
	show_stat("sub/up");
	show_text("sub/up");

	/* dangling, absolute, to a directory */
	R(symlink("does/not/exist", "dang"), "symlink does/not/exist dang");
	show_readlink("dang");
	show_stat("dang");
	show_lstat("dang");
	R(symlink("/nonexistent-cowfs-fsops/x", "abs"), "symlink /nonexistent... abs");
	show_readlink("abs");
	R(symlink("sub", "sdir"), "symlink sub sdir");
	show_stat("sdir");
	show_ls("sdir/");
	show_readlink("t");

	/* O_CREAT through a dangling link creates its target */
	R(symlink("made_via_link", "mk"), "symlink made_via_link mk");
	fd = FD(open("mk", O_CREAT | O_WRONLY, 0644), "open mk O_CREAT");
	if (fd >= 0) {
		R(write(fd, "m", 1), "write mk");
		close(fd);
	}
	show_stat("made_via_link");

	/* a long target */
	memset(longt, 'q', 1000);
	longt[1000] = 0;
	for (int i = 50; i < 1000; i += 51)
		longt[i] = '/';
	R(symlink(longt, "long"), "symlink <1000 bytes> long");
	{
		char buf[2048];
		ssize_t r = readlink("long", buf, sizeof buf);
		say("readlink long = %zd equal=%s", r, yesno(r == 1000 && !memcmp(buf, longt, 1000)));
	}
	show_lstat("long");

	/* ownership of the link itself */
	R(lchown("s", 101, 104), "lchown s 101 104");
	show_lstat("s");
	show_stat("s");

	R(unlink("s"), "unlink s");
	show_stat("t");
	show_ls(".");
}

static void step_unlink_open(void)
{
	char buf[20000], rbuf[20000];
	int fd, fd2;

	pattern(buf, sizeof buf, 0, 11);
	R(make_file("u", buf, sizeof buf, 0644), "create u 20000");
	R(make_file("keep", "k", 1, 0644), "create keep");
	fd = FD(open("u", O_RDWR), "open u");
	fd2 = FD(open("u", O_RDONLY), "open u second fd");
	if (fd < 0 || fd2 < 0)
		return;
	R(unlink("u"), "unlink u");
	show_ls(".");
	show_stat("u");
	show_fstat(fd, "u");
	{
		ssize_t r = pread_full(fd, rbuf, sizeof rbuf, 0);
		say("pread after unlink = %zd equal=%s", r,
		    yesno(r == (ssize_t)sizeof buf && !memcmp(buf, rbuf, sizeof buf)));
	}
	pattern(buf, 5000, 20000, 12);
	R(pwrite(fd, buf, 5000, 20000), "pwrite 5000 at 20000 after unlink");
	show_fstat(fd, "u");
	show_sum_fd(fd, "u via fd");
	show_sum_fd(fd2, "u via fd2");
	R(ftruncate(fd, 8000), "ftruncate 8000 after unlink");
	show_fstat(fd2, "u via fd2");
	R(fsync(fd), "fsync after unlink");
	R(close(fd), "close fd");
	show_sum_fd(fd2, "u via fd2 after close of fd");
	R(close(fd2), "close fd2");

	/* the name is free again */
	fd = FD(open("u", O_CREAT | O_EXCL | O_RDWR, 0644), "open u O_CREAT|O_EXCL");
	if (fd >= 0) {
		show_fstat(fd, "new u");
		close(fd);
	}
	R(unlink("missing"), "unlink missing");
	R(mkdir("d", 0755), "mkdir d");
	R(unlink("d"), "unlink d (directory)");
	R(unlink("keep/x"), "unlink keep/x");
	show_ls(".");
}

static void step_dirs(void)
{
	char name[64];

	R(mkdir("d", 0755), "mkdir d");
	show_stat("d");
	R(mkdir("d", 0755), "mkdir d again");
	R(mkdir("d/e", 0777), "mkdir d/e 0777");
	R(mkdir("d/f", 0700), "mkdir d/f 0700");
	show_stat("d");
	show_stat("d/e");
	show_stat("d/f");
	R(mkdir("missing/x", 0755), "mkdir missing/x");
	R(make_file("file", "f", 1, 0644), "create file");
	R(mkdir("file/x", 0755), "mkdir file/x");
	R(mkdir("file", 0755), "mkdir file (exists as file)");

	R(rmdir("d"), "rmdir d (not empty)");
	R(rmdir("missing"), "rmdir missing");
	R(rmdir("file"), "rmdir file");
	R(rmdir("d/e/."), "rmdir d/e/.");
	R(rmdir("d/e"), "rmdir d/e");
	show_stat("d");
	show_stat("d/e");

	/* one of each type, listed with d_type */
	R(make_file("d/r", "r", 1, 0644), "create d/r");
	R(symlink("r", "d/l"), "symlink r d/l");
	R(mkfifo("d/p", 0644), "mkfifo d/p");
	show_ls("d");
	show_ls(".");

	/* 2000 entries */
	R(mkdir("big", 0755), "mkdir big");
	{
		int made = 0;
		for (int i = 0; i < 2000; i++) {
			snprintf(name, sizeof name, "big/e%04d", i);
			int fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
			if (fd >= 0) {
				made++;
				close(fd);
			}
		}
		say("created in big = %d", made);
	}
	show_ls_summary("big");
	say("nlink big = %ld", nlink_of("big"));
	{
		int gone = 0;
		for (int i = 0; i < 2000; i += 2) {
			snprintf(name, sizeof name, "big/e%04d", i);
			if (unlink(name) == 0)
				gone++;
		}
		say("unlinked even = %d", gone);
	}
	show_ls_summary("big");
	show_stat("big/e0000");
	show_stat("big/e0001");
	show_stat("big/e1998");
	show_stat("big/e1999");
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof name, "big/sub%02d", i);
		mkdir(name, 0755);
	}
	say("nlink big after 50 subdirs = %ld", nlink_of("big"));
	show_ls_summary("big");

	/* remove while reading the directory, as rm -r does: every entry not
	 * yet removed must still be returned */
	{
		DIR *dp = opendir("big");
		struct dirent *de;
		int files = 0, subdirs = 0, errs = 0;
		if (!dp) {
			say("opendir big = %s", errname(errno));
		} else {
			while ((de = readdir(dp))) {
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				if (unlinkat(dirfd(dp), de->d_name, 0) == 0)
					files++;
				else if (errno == EISDIR && unlinkat(dirfd(dp), de->d_name, AT_REMOVEDIR) == 0)
					subdirs++;
				else
					errs++;
			}
			closedir(dp);
			say("removed during readdir = files=%d dirs=%d errors=%d", files, subdirs, errs);
		}
	}
	show_ls_summary("big");
	R(rmdir("big"), "rmdir big");
	show_ls(".");
}

static void step_attrs(void)
{
	int fd;

	R(make_file("a", "a", 1, 0644), "create a");
	R(chmod("a", 0600), "chmod a 0600");
	show_stat("a");
	R(chmod("a", 0755), "chmod a 0755");
	show_stat("a");
	R(chmod("a", 0), "chmod a 0");
	show_stat("a");
	show_text("a");   /* root reads regardless */
	fd = FD(open("a", O_RDWR), "open a");
	if (fd >= 0) {
		R(fchmod(fd, 0640), "fchmod a 0640");
		show_fstat(fd, "a");
	}
	R(chown("a", 101, 104), "chown a 101 104");
	show_stat("a");
	R(chown("a", (uid_t)-1, 0), "chown a -1 0");
	show_stat("a");
	if (fd >= 0) {
		R(fchown(fd, 0, (gid_t)-1), "fchown a 0 -1");
		show_fstat(fd, "a");
		close(fd);
	}
	R(chown("a", 101, 104), "chown a 101 104");
	R(chmod("a", 04755), "chmod a 04755");
	show_stat("a");
	R(chown("a", 101, 104), "chown a 101 104 (clears setuid)");
	show_stat("a");
	R(chmod("missing", 0644), "chmod missing");
	R(chown("missing", 0, 0), "chown missing");

	R(mkdir("d", 0755), "mkdir d");
	R(chmod("d", 01777), "chmod d 01777");
	show_stat("d");
	R(chown("d", 101, 104), "chown d 101 104");
	show_stat("d");
	R(make_file("d/f", "f", 1, 0644), "create d/f (as root in 101-owned dir)");
	show_stat("d/f");
	R(mkfifo("fifo", 0600), "mkfifo fifo");
	R(chmod("fifo", 0666), "chmod fifo 0666");
	R(chown("fifo", 101, 104), "chown fifo 101 104");
	show_stat("fifo");
}

static void step_utimens(void)
{
	struct timespec ts[2];
	struct stat st;
	int fd;

	R(make_file("u", "u", 1, 0644), "create u");
	ts[0] = (struct timespec){ 1000000000, 123456789 };
	ts[1] = (struct timespec){ 1100000000, 987654321 };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u explicit");
	show_times("u");
	ts[0] = (struct timespec){ 0, UTIME_OMIT };
	ts[1] = (struct timespec){ 1200000000, 5 };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u atime=OMIT");
	show_times("u");
	ts[0] = (struct timespec){ 1300000000, 0 };
	ts[1] = (struct timespec){ 0, UTIME_OMIT };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u mtime=OMIT");
	show_times("u");
	ts[0] = ts[1] = (struct timespec){ 0, UTIME_OMIT };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u both OMIT");
	show_times("u");
	ts[0] = (struct timespec){ 4102444800, 1 };     /* 2100-01-01 */
	ts[1] = (struct timespec){ 4102444800, 999999999 };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u year 2100");
	show_times("u");
	fd = FD(open("u", O_RDWR), "open u");
	if (fd >= 0) {
		ts[0] = (struct timespec){ 1400000000, 400 };
		ts[1] = (struct timespec){ 1500000000, 500 };
		R(futimens(fd, ts), "futimens u");
		show_times("u");
		close(fd);
	}
	ts[0] = (struct timespec){ 0, UTIME_OMIT };
	ts[1] = (struct timespec){ 0, UTIME_NOW };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u mtime=NOW");
	if (stat("u", &st) == 0) {
		time_t now = time(NULL);
		say("mtime within 120s of now = %s",
		    yesno(st.st_mtim.tv_sec > now - 120 && st.st_mtim.tv_sec <= now + 1));
		say("atime kept = %s", yesno(st.st_atim.tv_sec == 1400000000 &&
					     st.st_atim.tv_nsec == 400));
	}
	R(utimensat(AT_FDCWD, "missing", NULL, 0), "utimensat missing");

	/* writes and truncates move mtime forward, entries move the dir's */
	ts[0] = ts[1] = (struct timespec){ 1000000000, 0 };
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u 2001");
	fd = FD(open("u", O_WRONLY), "open u");
	if (fd >= 0) {
		R(write(fd, "w", 1), "write u");
		if (fstat(fd, &st) == 0)
			say("fstat mtime moved after write = %s", yesno(st.st_mtim.tv_sec > 1000000000));
		close(fd);
		if (stat("u", &st) == 0)
			say("stat mtime moved after write = %s", yesno(st.st_mtim.tv_sec > 1000000000));
	}
	R(utimensat(AT_FDCWD, "u", ts, 0), "utimensat u 2001");
	R(truncate("u", 0), "truncate u 0");
	if (stat("u", &st) == 0)
		say("mtime moved after truncate = %s", yesno(st.st_mtim.tv_sec > 1000000000));

	R(mkdir("d", 0755), "mkdir d");
	R(utimensat(AT_FDCWD, "d", ts, 0), "utimensat d 2001");
	show_times("d");
	R(make_file("d/x", "x", 1, 0644), "create d/x");
	if (stat("d", &st) == 0)
		say("dir mtime moved after create = %s", yesno(st.st_mtim.tv_sec > 1000000000));
	R(utimensat(AT_FDCWD, "d", ts, 0), "utimensat d 2001");
	R(unlink("d/x"), "unlink d/x");
	if (stat("d", &st) == 0)
		say("dir mtime moved after unlink = %s", yesno(st.st_mtim.tv_sec > 1000000000));
	R(utimensat(AT_FDCWD, "d", ts, 0), "utimensat d 2001");
	R(make_file("y", "y", 1, 0644), "create y");
	R(rename("y", "d/y"), "rename y d/y");
	if (stat("d", &st) == 0)
		say("dir mtime moved after rename into = %s", yesno(st.st_mtim.tv_sec > 1000000000));
}

static void step_statfs(void)
{
	struct statfs sf;
	struct statvfs sv;
	int fd;

	if (statfs(".", &sf) < 0)
		say("statfs = %s", errname(errno));
	else
		say("statfs = %s", sf.f_bsize > 0 ? "ok" : "f_bsize is 0");
	if (statvfs(".", &sv) < 0)
		say("statvfs = %s", errname(errno));
	else
		say("statvfs = %s", sv.f_bsize > 0 && sv.f_namemax >= 255 ? "ok" : "bad values");
	fd = open(".", O_RDONLY | O_DIRECTORY);
	if (fd < 0 || fstatfs(fd, &sf) < 0)
		say("fstatfs = %s", errname(errno));
	else
		say("fstatfs = %s", sf.f_bsize > 0 ? "ok" : "f_bsize is 0");
	if (fd >= 0)
		close(fd);
}

static void show_seek(int fd, off_t off)
{
	off_t d = lseek(fd, off, SEEK_DATA);
	int de = errno;
	off_t h = lseek(fd, off, SEEK_HOLE);
	int he = errno;
	char ds[32], hs[32];

	if (d < 0)
		snprintf(ds, sizeof ds, "%s", errname(de));
	else
		snprintf(ds, sizeof ds, "%lld", (long long)d);
	if (h < 0)
		snprintf(hs, sizeof hs, "%s", errname(he));
	else
		snprintf(hs, sizeof hs, "%lld", (long long)h);
	say("seek %lld = data=%s hole=%s", (long long)off, ds, hs);
}

static void step_seek(void)
{
	char buf[BLK];
	int fd;

	/* data [0,8192), hole [8192,1MiB), data [1MiB,1MiB+8192), hole to 2MiB */
	fd = FD(open("h", O_CREAT | O_RDWR | O_TRUNC, 0644), "open h");
	if (fd < 0)
		return;
	pattern(buf, BLK, 0, 21);
	R(pwrite(fd, buf, BLK, 0), "pwrite [0,8192)");
	pattern(buf, BLK, MiB, 21);
	R(pwrite(fd, buf, BLK, MiB), "pwrite [1MiB,+8192)");
	R(ftruncate(fd, 2 * MiB), "ftruncate 2MiB");
	static const off_t offs[] = { 0, 8192, 100000, 1048576, 2097151, 2097152, 3000000 };
	for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++)
		show_seek(fd, offs[i]);
	R(fsync(fd), "fsync h");
	R(close(fd), "close h");
	fd = FD(open("h", O_RDONLY), "reopen h");
	if (fd >= 0) {
		for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++)
			show_seek(fd, offs[i]);
		close(fd);
	}

	/* all data: the only hole is the virtual one at EOF */
	fd = FD(open("full", O_CREAT | O_RDWR | O_TRUNC, 0644), "open full");
	if (fd >= 0) {
		pattern(buf, BLK, 0, 22);
		R(pwrite(fd, buf, BLK, 0), "pwrite [0,8192)");
		R(pwrite(fd, buf, BLK, BLK), "pwrite [8192,16384)");
		show_seek(fd, 0);
		show_seek(fd, 5000);
		show_seek(fd, 16384);
		close(fd);
	}
	/* all hole */
	fd = FD(open("empty", O_CREAT | O_RDWR | O_TRUNC, 0644), "open empty");
	if (fd >= 0) {
		R(ftruncate(fd, 4 * BLK), "ftruncate 32768");
		show_seek(fd, 0);
		show_seek(fd, 20000);
		R(ftruncate(fd, 0), "ftruncate 0");
		show_seek(fd, 0);
		close(fd);
	}
	/* a punched hole is a hole */
	fd = FD(open("punched", O_CREAT | O_RDWR | O_TRUNC, 0644), "open punched");
	if (fd >= 0) {
		char *b3 = xmalloc(3 * BLK);
		pattern(b3, 3 * BLK, 0, 23);
		R(pwrite(fd, b3, 3 * BLK, 0), "pwrite [0,24576)");
		free(b3);
		R(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BLK, BLK),
		  "fallocate PUNCH|KEEP [8192,16384)");
		show_seek(fd, 0);
		show_seek(fd, BLK);
		show_seek(fd, 2 * BLK);
		close(fd);
	}
}

static void step_odirect(void)
{
	void *dbuf = NULL, *dbuf2 = NULL;
	char *nbuf = xmalloc(32 * KiB);
	int fd, nfd;

	if (posix_memalign(&dbuf, 4096, 32 * KiB) || posix_memalign(&dbuf2, 4096, 32 * KiB)) {
		say("posix_memalign = failed");
		goto out;
	}
	pattern(nbuf, 32 * KiB, 0, 31);
	R(make_file("o", nbuf, 32 * KiB, 0644), "create o 32768");
	fd = FD(open("o", O_RDWR | O_DIRECT), "open o O_DIRECT");
	if (fd < 0)
		goto out;
	{
		int fl = fcntl(fd, F_GETFL);
		say("F_GETFL has O_DIRECT = %s", yesno(fl >= 0 && (fl & O_DIRECT)));
	}
	pattern(dbuf, BLK, BLK, 32);
	R(pwrite(fd, dbuf, BLK, BLK), "pwrite O_DIRECT 8192 at 8192");
	memset(dbuf2, 0, BLK);
	R(pread(fd, dbuf2, BLK, BLK), "pread O_DIRECT 8192 at 8192");
	say("direct read = written = %s", yesno(!memcmp(dbuf, dbuf2, BLK)));
	nfd = FD(open("o", O_RDONLY), "open o normal");
	if (nfd >= 0) {
		ssize_t r = pread(nfd, nbuf, BLK, BLK);
		say("normal pread 8192 at 8192 = %zd equal_to_direct=%s", r,
		    yesno(r == BLK && !memcmp(nbuf, dbuf2, BLK)));
		memset(dbuf2, 0, 32 * KiB);
		r = pread(fd, dbuf2, 32 * KiB, 0);
		ssize_t r2 = pread_full(nfd, nbuf, 32 * KiB, 0);
		say("direct pread 32768 at 0 = %zd normal=%zd equal=%s", r, r2,
		    yesno(r == r2 && r > 0 && !memcmp(nbuf, dbuf2, (size_t)r)));
		/* normal write then direct read sees it */
		close(nfd);
		nfd = open("o", O_WRONLY);
		R(pwrite(nfd, "NORMAL", 6, 3 * BLK), "normal pwrite at 24576");
		close(nfd);
		memset(dbuf2, 0, BLK);
		R(pread(fd, dbuf2, BLK, 3 * BLK), "pread O_DIRECT 8192 at 24576");
		say("direct read sees normal write = %s", yesno(!memcmp(dbuf2, "NORMAL", 6)));
	}
	R(pread(fd, dbuf2, BLK, 32 * KiB), "pread O_DIRECT at EOF");
	R(fdatasync(fd), "fdatasync O_DIRECT fd");
	R(close(fd), "close o");
	show_sum("o");

	/* created with O_DIRECT|O_DSYNC (wal_sync_method=open_datasync), extended */
	fd = FD(open("w", O_CREAT | O_EXCL | O_WRONLY | O_DIRECT | O_DSYNC, 0600),
		"open w O_CREAT|O_DIRECT|O_DSYNC");
	if (fd >= 0) {
		pattern(dbuf, 2 * BLK, 0, 33);
		R(pwrite(fd, dbuf, 2 * BLK, 0), "pwrite O_DIRECT 16384 at 0");
		pattern(dbuf, BLK, 4 * BLK, 33);
		R(pwrite(fd, dbuf, BLK, 4 * BLK), "pwrite O_DIRECT 8192 at 32768 (past EOF)");
		show_fstat(fd, "w");
		close(fd);
		show_sum("w");
		fd = open("w", O_RDONLY);
		show_zero(fd, 2 * BLK, 2 * BLK);
		close(fd);
	}
out:
	free(dbuf);
	free(dbuf2);
	free(nbuf);
}

static void step_many_open(void)
{
	enum { N = 1500 };
	static int fds[N];
	struct rlimit rl;
	char name[32], buf[64], rbuf[64];
	int opened = 0, written = 0, verified = 0, closed = 0, removed = 0;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
		rl.rlim_cur = 4096;
		if (rl.rlim_max < 4096)
			rl.rlim_max = 4096;
		R(setrlimit(RLIMIT_NOFILE, &rl), "setrlimit NOFILE 4096");
	} else {
		say("setrlimit NOFILE 4096 = 0");
	}
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "m%04d", i);
		fds[i] = open(name, O_CREAT | O_EXCL | O_RDWR, 0644);
		if (fds[i] >= 0)
			opened++;
	}
	say("opened = %d of %d", opened, N);
	for (int i = 0; i < N; i++) {
		if (fds[i] < 0)
			continue;
		pattern(buf, sizeof buf, (uint64_t)i * 64, 41);
		if (pwrite(fds[i], buf, sizeof buf, 0) == (ssize_t)sizeof buf &&
		    pwrite(fds[i], buf, 8, BLK) == 8)
			written++;
	}
	say("written = %d", written);
	for (int i = 0; i < N; i++) {
		if (fds[i] < 0)
			continue;
		pattern(buf, sizeof buf, (uint64_t)i * 64, 41);
		if (pread(fds[i], rbuf, sizeof rbuf, 0) == (ssize_t)sizeof rbuf &&
		    !memcmp(buf, rbuf, sizeof buf) &&
		    pread(fds[i], rbuf, 16, BLK - 8) == 16 && all_zero(rbuf, 8) &&
		    !memcmp(rbuf + 8, buf, 8))
			verified++;
	}
	say("verified = %d", verified);
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0 && close(fds[i]) == 0)
			closed++;
	say("closed = %d", closed);
	show_ls_summary(".");
	show_stat("m0000");
	show_stat("m1499");
	show_sum("m0777");
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "m%04d", i);
		if (unlink(name) == 0)
			removed++;
	}
	say("removed = %d", removed);
	show_ls(".");
}

static void step_append(void)
{
	char big[10000];
	int fd, fd2;

	fd = FD(open("ap", O_CREAT | O_WRONLY | O_APPEND, 0644), "open ap O_APPEND");
	if (fd < 0)
		return;
	R(write(fd, "one\n", 4), "write one");
	R(lseek(fd, 0, SEEK_SET), "lseek 0");
	R(write(fd, "two\n", 4), "write two (still appends)");
	R(lseek(fd, 0, SEEK_CUR), "lseek SEEK_CUR");
	show_fstat(fd, "ap");
	R(close(fd), "close ap");
	show_text("ap");

	fd = FD(open("ap", O_WRONLY | O_APPEND), "open ap O_APPEND");
	fd2 = FD(open("ap", O_WRONLY | O_APPEND), "open ap O_APPEND second fd");
	if (fd < 0 || fd2 < 0)
		return;
	R(write(fd, "a", 1), "write a via fd");
	R(write(fd2, "b", 1), "write b via fd2");
	R(write(fd, "c", 1), "write c via fd");
	show_text("ap");
	pattern(big, sizeof big, 11, 51);
	R(write(fd2, big, sizeof big), "write 10000 via fd2");
	show_fstat(fd, "ap");
	close(fd);
	close(fd2);
	show_sum("ap");
	/* an ordinary fd does not append */
	fd = FD(open("ap", O_WRONLY), "open ap O_WRONLY");
	if (fd >= 0) {
		R(write(fd, "ZERO", 4), "write ZERO at 0");
		close(fd);
	}
	show_sum("ap");
}

static void step_fifo(void)
{
	char buf[16];
	int rfd, wfd;

	R(mkfifo("p", 0644), "mkfifo p 0644");
	show_stat("p");
	R(mkfifo("p", 0644), "mkfifo p again");
	R(mknod("q", S_IFIFO | 0600, 0), "mknod q S_IFIFO 0600");
	show_stat("q");
	R(mknod("r", S_IFREG | 0640, 0), "mknod r S_IFREG 0640");
	show_stat("r");
	rfd = FD(open("p", O_RDONLY | O_NONBLOCK), "open p O_RDONLY|O_NONBLOCK");
	wfd = FD(open("p", O_WRONLY | O_NONBLOCK), "open p O_WRONLY|O_NONBLOCK");
	if (rfd >= 0 && wfd >= 0) {
		R(write(wfd, "ping", 4), "write ping");
		memset(buf, 0, sizeof buf);
		R(read(rfd, buf, sizeof buf - 1), "read");
		say("read back = \"%s\"", buf);
	}
	if (rfd >= 0)
		close(rfd);
	if (wfd >= 0)
		close(wfd);
	show_stat("p");
	show_ls(".");
	R(unlink("q"), "unlink q");
	show_ls(".");
}

/* Not on the list in design.md, but POSIX and cheap: shared mappings. */
static void step_mmap(void)
{
	const size_t len = 2 * BLK;
	char *buf = xmalloc(len);
	unsigned char *m;
	int fd;

	pattern(buf, len, 0, 61);
	R(make_file("mm", buf, len, 0644), "create mm 16384");
	fd = FD(open("mm", O_RDWR), "open mm");
	if (fd < 0)
		goto out;
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		say("mmap MAP_SHARED = %s", errname(errno));
		close(fd);
		goto out;
	}
	say("mmap MAP_SHARED = ok");
	say("mapped equals file = %s", yesno(!memcmp(m, buf, len)));
	memcpy(m + 100, "MAPPED", 6);
	memcpy(m + BLK - 3, "ACROSS", 6);
	R(msync(m, len, MS_SYNC), "msync");
	R(munmap(m, len), "munmap");
	{
		char r[6];
		R(pread(fd, r, 6, BLK - 3), "pread 6 at 8189");
		say("write through map visible = %s", yesno(!memcmp(r, "ACROSS", 6)));
	}
	R(pwrite(fd, "PWRITE", 6, 200), "pwrite at 200");
	m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		say("mmap MAP_PRIVATE = %s", errname(errno));
	} else {
		say("pwrite visible in new map = %s", yesno(!memcmp(m + 200, "PWRITE", 6)));
		munmap(m, len);
	}
	R(close(fd), "close mm");
	show_sum("mm");
out:
	free(buf);
}

/* Not on the list in design.md: set-group-ID directories (the daemon, not
 * the kernel, has to apply the inheritance rule on FUSE). */
static void step_sgid_dir(void)
{
	R(mkdir("g", 0755), "mkdir g");
	R(chown("g", 0, 104), "chown g 0 104");
	R(chmod("g", 02775), "chmod g 02775");
	show_stat("g");
	R(make_file("g/f", "f", 1, 0644), "create g/f");
	show_stat("g/f");
	R(mkdir("g/sub", 0755), "mkdir g/sub");
	show_stat("g/sub");
}

/* Names at and past NAME_MAX, and bytes other than ASCII. */
static void step_names(void)
{
	char name[300];

	memset(name, 'n', 255);
	name[255] = 0;
	R(make_file(name, "x", 1, 0644), "create 255-byte name");
	show_ls_summary(".");
	R(unlink(name), "unlink 255-byte name");
	memset(name, 'n', 256);
	name[256] = 0;
	R(make_file(name, "x", 1, 0644), "create 256-byte name");
	R(mkdir(name, 0755), "mkdir 256-byte name");
	R(make_file("with space", "s", 1, 0644), "create 'with space'");
	R(make_file("caf\xc3\xa9", "e", 1, 0644), "create utf-8 name");
	R(make_file("-dash", "d", 1, 0644), "create -dash");
	R(make_file(".hidden", "h", 1, 0644), "create .hidden");
	R(make_file("...", "h", 1, 0644), "create ...");
	show_ls(".");
}

/* Final state of the whole tree, as a cross-check of everything above. */
static void walk(const char *dir, int depth)
{
	struct ent *v;
	long n = list_dir(dir, &v);
	char path[4096];

	if (n < 0) {
		say("ls %s = %s", dir, errname(errno));
		return;
	}
	for (long i = 0; i < n; i++) {
		struct stat st;
		if (strcmp(dir, "."))
			snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
		else
			snprintf(path, sizeof path, "%s", v[i].name);
		if (lstat(path, &st) < 0) {
			say("%s = %s", path, errname(errno));
			continue;
		}
		if (S_ISREG(st.st_mode)) {
			uint64_t size, h;
			int fd = open(path, O_RDONLY);
			if (fd < 0 || sum_fd(fd, &size, &h) < 0)
				say("%s = %s %s", path, describe(&st), errname(errno));
			else
				say("%s = %s fnv=%016" PRIx64, path, describe(&st), h);
			if (fd >= 0)
				close(fd);
		} else if (S_ISLNK(st.st_mode)) {
			char t[64];
			ssize_t r = readlink(path, t, sizeof t - 1);
			t[r > 0 ? r : 0] = 0;
			say("%s = %s -> %s%s", path, describe(&st), t,
			    r == (ssize_t)sizeof t - 1 ? "..." : "");
		} else {
			say("%s = %s", path, describe(&st));
		}
		if (S_ISDIR(st.st_mode) && depth < 8)
			walk(path, depth + 1);
	}
	free_list(v, n);
}

static const struct {
	const char *name;
	void (*fn)(void);
} steps[] = {
	{ "create_excl",  step_create_excl },
	{ "write_read",   step_write_read },
	{ "pread_pwrite", step_pread_pwrite },
	{ "sparse",       step_sparse },
	{ "large",        step_large },
	{ "truncate",     step_truncate },
	{ "fallocate",    step_fallocate },
	{ "sync",         step_sync },
	{ "rename",       step_rename },
	{ "link",         step_link },
	{ "symlink",      step_symlink },
	{ "unlink_open",  step_unlink_open },
	{ "dirs",         step_dirs },
	{ "attrs",        step_attrs },
	{ "utimens",      step_utimens },
	{ "statfs",       step_statfs },
	{ "seek",         step_seek },
	{ "odirect",      step_odirect },
	{ "many_open",    step_many_open },
	{ "append",       step_append },
	{ "fifo",         step_fifo },
	{ "mmap",         step_mmap },
	{ "sgid_dir",     step_sgid_dir },
	{ "names",        step_names },
};

int main(int argc, char **argv)
{
	bool tree_only = argc == 3 && !strcmp(argv[1], "--tree");
	const char *dir = argv[argc - 1];
	int top;

	if (argc != 2 && !tree_only) {
		fprintf(stderr, "usage: fsops DIR         run all steps in the empty directory DIR\n"
				"       fsops --tree DIR  print only the final tree walk of DIR\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);       /* a crash keeps the transcript so far */
	umask(022);
	top = open(dir, O_RDONLY | O_DIRECTORY);
	if (top < 0 || fchdir(top) < 0) {
		fprintf(stderr, "fsops: %s: %s\n", dir, strerror(errno));
		return 2;
	}
	if (tree_only) {
		/* e.g. after a remount: must equal the "tree:" lines of the run */
		cur_step = "tree";
		walk(".", 0);
		return 0;
	}
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		cur_step = steps[i].name;
		if (mkdir(cur_step, 0755) < 0 || chdir(cur_step) < 0) {
			say("setup = %s", errname(errno));
			continue;
		}
		steps[i].fn();
		if (fchdir(top) < 0) {
			fprintf(stderr, "fsops: fchdir back to %s: %s\n", dir, strerror(errno));
			return 2;
		}
	}
	cur_step = "tree";
	walk(".", 0);
	cur_step = "end";
	say("done");
	return 0;
}
