/* Unit tests of the log: append and read back, recovery from a log cut at
 * every record boundary and inside every record, a crash that garbles
 * unsynced writes, sticky sync failures, group commit, syncs that call
 * back instead of waiting, the segments GC
 * drops (told apart from segments lost by accident), the page cache
 * the log leaves behind, and the records' checksum against a bit-by-bit
 * CRC-32C. */
#include <linux/magic.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "crashio.h"
#include "crc32c.h"
#include "io.h"
#include "log.h"
#include "testutil.h"

#define NREC 24

struct seen {
	int n;
	uint64_t pos[NREC * 2];
	uint32_t len[NREC * 2];
	uint8_t first[NREC * 2];
};

static int collect(void *ctx, uint64_t pos, unsigned type, const uint8_t *p, uint32_t len)
{
	struct seen *s = ctx;
	ck_assert_int_eq(type, COW_REC_OBJ);
	s->pos[s->n] = pos;
	s->len[s->n] = len;
	s->first[s->n] = len ? p[0] : 0;
	/* every payload is its record number repeated */
	for (uint32_t i = 0; i < len; i++)
		ck_assert_int_eq(p[i], p[0]);
	s->n++;
	return 0;
}

static uint32_t rec_len(int i) { return 3 + (uint32_t)(i * 977 % 8990); }

/* Write NREC records of varied sizes; return their positions. */
static void write_records(const char *dir, uint64_t *pos)
{
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint8_t *buf = malloc(9000);
	for (int i = 0; i < NREC; i++) {
		memset(buf, i + 1, rec_len(i));
		struct iovec iov = { buf, rec_len(i) };
		ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &pos[i]), 0);
	}
	ck_assert_int_eq(cow_log_sync(log), 0);
	cow_log_close(log);
	free(buf);
}

/* A new log in a fresh temp dir: DIR (512 bytes), inside *RET_TMP; its
 * I/O goes through crashio, reset. */
static struct cow_log *open_under_crashio(char **ret_tmp, char *dir)
{
	*ret_tmp = tu_tmpdir();
	snprintf(dir, 512, "%s/seg", *ret_tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	crashio_reset();
	cow_io_set(&cow_powercut_io);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	return log;
}

/* Append a one-byte record. */
static void append_byte(struct cow_log *log)
{
	uint8_t b = 7;
	struct iovec iov = { &b, 1 };
	uint64_t p;
	ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &p), 0);
}

/* Close LOG, give the real I/O back and remove TMP. */
static void close_under_crashio(struct cow_log *log, char *tmp)
{
	cow_log_close(log);
	cow_io_set(NULL);
	tu_rmrf(tmp);
	free(tmp);
}

/* CRC-32C one bit at a time, straight from the polynomial. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

START_TEST(test_crc32c_matches_bitwise)
{
	ck_assert_uint_eq(cow_crc32c(0, "123456789", 9), 0xE3069283u); /* the check value */
	enum { MAX = 3 * 2048 * 2 + 3 * 256 + 40 };
	uint8_t *buf = malloc(MAX + 8);
	tu_fill(buf, MAX + 8, 99);
	/* every length class of the three-stream paths, at odd alignments,
	 * and extended in two pieces split anywhere */
	static const size_t lens[] = { 0, 1, 7, 8, 9, 255, 767, 768, 769, 6143, 6144, 6145, 8192, 8224, MAX };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		for (size_t off = 0; off < 3; off++) {
			const uint8_t *p = buf + off;
			uint32_t want = crc_bitwise(0, p, lens[i]);
			ck_assert_uint_eq(cow_crc32c(0, p, lens[i]), want);
			size_t cut = lens[i] * off / 3;
			ck_assert_uint_eq(cow_crc32c(cow_crc32c(0, p, cut), p + cut, lens[i] - cut), want);
		}
	}
	free(buf);
}
END_TEST

START_TEST(test_append_read)
{
	char *tmp = tu_tmpdir(), dir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	uint64_t pos[NREC];
	write_records(dir, pos);
	struct seen s = { 0 };
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, collect, &s, &log), 0);
	ck_assert_int_eq(s.n, NREC);
	for (int i = 0; i < NREC; i++) {
		ck_assert_uint_eq(s.pos[i], pos[i]);
		ck_assert_uint_eq(s.len[i], rec_len(i));
		uint8_t b[3];
		ck_assert_int_eq(cow_log_read(log, pos[i], 0, b, 1), 0);
		ck_assert_int_eq(b[0], i + 1);
	}
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

/* Copy the first LEN bytes of segment 1 of SRC into a new log dir DST:
 * either cut there (TRUNCATE_FILE), or followed by 1 MiB of zeros, as the
 * unused rest of a preallocated segment is (a full 64 MiB only costs time). */
static void copy_cut(const char *src, const char *dst, off_t len, bool truncate_file)
{
	char from[600], to[600];
	mkdir(dst, 0700);
	snprintf(from, sizeof from, "%s/%016x.seg", src, 1);
	snprintf(to, sizeof to, "%s/%016x.seg", dst, 1);
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert(in >= 0 && out >= 0);
	uint8_t *buf = malloc(len ? len : 1);
	ck_assert_int_eq(pread(in, buf, len, 0), len);
	ck_assert_int_eq(pwrite(out, buf, len, 0), len);
	ck_assert_int_eq(ftruncate(out, truncate_file ? len : len + (1 << 20)), 0);
	free(buf);
	close(in);
	close(out);
}

START_TEST(test_cut_everywhere)
{
	char *tmp = tu_tmpdir(), dir[512], cutdir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	uint64_t pos[NREC];
	write_records(dir, pos);
	uint64_t end = COW_LOG_POS_OFF(pos[NREC - 1]) + ((COW_LOG_REC_HDR + rec_len(NREC - 1) + 7) & ~7u);
	int cases = 0;
	for (int i = 0; i <= NREC; i++) {
		uint64_t start = i < NREC ? COW_LOG_POS_OFF(pos[i]) : end;
		/* at the boundary, inside the header, just after it, mid-payload, one byte short */
		uint64_t cuts[5] = { start, start + 7, start + COW_LOG_REC_HDR + 1, 0, 0 };
		int ncuts = i < NREC ? 5 : 1;
		if (i < NREC) {
			cuts[3] = start + COW_LOG_REC_HDR + rec_len(i) / 2;
			cuts[4] = start + COW_LOG_REC_HDR + rec_len(i) - 1;
		}
		for (int c = 0; c < ncuts; c++) {
			for (int trunc = 0; trunc < 2; trunc++) {
				snprintf(cutdir, sizeof cutdir, "%s/cut-%d-%d-%d", tmp, i, c, trunc);
				copy_cut(dir, cutdir, (off_t)cuts[c], trunc);
				struct seen s = { 0 };
				struct cow_log *log;
				ck_assert_int_eq(cow_log_open(cutdir, collect, &s, &log), 0);
				/* exactly the records wholly before the cut survive */
				ck_assert_int_eq(s.n, i);
				/* and the log goes on where the last whole record ended */
				uint8_t b = 0xEE;
				struct iovec iov = { &b, 1 };
				uint64_t p;
				ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &p), 0);
				ck_assert_uint_eq(COW_LOG_POS_OFF(p), start);
				ck_assert_int_eq(cow_log_sync(log), 0);
				cow_log_close(log);
				struct seen s2 = { 0 };
				ck_assert_int_eq(cow_log_open(cutdir, collect, &s2, &log), 0);
				ck_assert_int_eq(s2.n, i + 1);
				ck_assert_int_eq(s2.first[i], 0xEE);
				cow_log_close(log);
				tu_rmrf(cutdir);
				cases++;
			}
		}
	}
	ck_assert_int_eq(cases, (NREC * 5 + 1) * 2);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_damage_mid_log_is_refused)
{
	/* A metadata record damaged in the middle of the log is not a torn tail:
	 * the log must not open (and must not cut away what follows). */
	char *tmp = tu_tmpdir(), dir[512], seg[600];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint8_t buf[100];
	memset(buf, 7, sizeof buf);
	struct iovec iov = { buf, sizeof buf };
	uint64_t p1, p2;
	ck_assert_int_eq(cow_log_append(log, COW_REC_META, &iov, 1, &p1), 0);
	ck_assert_int_eq(cow_log_append(log, COW_REC_META, &iov, 1, &p2), 0);
	ck_assert_int_eq(cow_log_sync(log), 0);
	cow_log_close(log);
	snprintf(seg, sizeof seg, "%s/%016x.seg", dir, 1);
	tu_flip_byte(seg, COW_LOG_POS_OFF(p1) + COW_LOG_REC_HDR + 50);
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EBADMSG);
	/* nothing was changed: the second record is still on disk intact */
	tu_flip_byte(seg, COW_LOG_POS_OFF(p1) + COW_LOG_REC_HDR + 50);
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	ck_assert_uint_eq(cow_log_end(log), COW_LOG_POS(1, COW_LOG_POS_OFF(p2) + 120));
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_crash_garbles_unsynced)
{
	char *tmp, dir[512];
	/* The crashed process is a child that dies without closing its log
	 * (no final sync), as a daemon killed at that point would. */
	tmp = tu_tmpdir();
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		crashio_reset();
		cow_io_set(&cow_powercut_io);
		struct cow_log *log;
		if (cow_log_open(dir, NULL, NULL, &log) < 0)
			_exit(2);
		uint8_t buf[5000];
		uint64_t p;
		for (int i = 0; i < 10; i++) {
			memset(buf, i + 1, sizeof buf);
			struct iovec iov = { buf, sizeof buf };
			if (cow_log_append(log, COW_REC_OBJ, &iov, 1, &p) < 0)
				_exit(3);
			if (i == 5 && cow_log_sync(log) < 0) /* records 0..5 acknowledged */
				_exit(4);
		}
		_exit(crashio_garble() == 0 ? 0 : 5); /* records 6..9 were never synced */
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	struct seen s = { 0 };
	struct cow_log *log2;
	ck_assert_int_eq(cow_log_open(dir, collect, &s, &log2), 0);
	ck_assert_int_eq(s.n, 6);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(s.first[i], i + 1);
	cow_log_close(log2);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_sync_failure_is_sticky)
{
	char *tmp, dir[512];
	struct cow_log *log = open_under_crashio(&tmp, dir);
	append_byte(log);
	crashio_fail_next = 1;
	ck_assert_int_eq(cow_log_sync(log), -EIO);
	/* after one failed sync, nothing is accepted any more */
	ck_assert_int_eq(cow_log_sync(log), -EIO);
	uint8_t b = 1;
	struct iovec iov = { &b, 1 };
	uint64_t p;
	ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &p), -EIO);
	close_under_crashio(log, tmp);
}
END_TEST

/* An I/O backend whose next pwritev, once armed, writes all but the last
 * 100 bytes and then fails with ENOSPC, as a file system does when it
 * fills in the middle of a write. */
static int enospc_armed;
static ssize_t enospc_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	if (enospc_armed == 0)
		return cow_io_posix.pwritev(fd, iov, n, off);
	if (enospc_armed == 2) {
		enospc_armed = 0;
		errno = ENOSPC;
		return -1;
	}
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	uint8_t *flat = malloc(total), *p = flat;
	for (int i = 0; i < n; i++)
		p = (uint8_t *)memcpy(p, iov[i].iov_base, iov[i].iov_len) + iov[i].iov_len;
	enospc_armed = 2;
	ssize_t w = pwrite(fd, flat, total - 100, off);
	free(flat);
	return w;
}


/* A batch that failed halfway (a full disk) leaves no record behind the
 * log's end: a later, shorter append and a reopen see the log as it was
 * plus that append, not damage followed by valid records. */
START_TEST(test_failed_append_leaves_nothing)
{
	char *tmp = tu_tmpdir(), dir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_io enospc_io = cow_io_posix; /* but for its pwritev */
	enospc_io.pwritev = enospc_pwritev;
	cow_io_set(&enospc_io);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint8_t *buf = malloc(3 * 9000);
	uint64_t pos[4];
	for (int i = 0; i < 2; i++) {
		memset(buf, i + 1, 5000);
		struct iovec iov = { buf, 5000 };
		ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &pos[i]), 0);
	}
	ck_assert_int_eq(cow_log_sync(log), 0);
	/* three records of 9000 bytes in one write, of which all but the last
	 * 100 bytes land: the first two whole */
	struct iovec iov[3];
	struct cow_log_rec recs[3];
	for (int i = 0; i < 3; i++) {
		memset(buf + i * 9000, 0xa0 + i, 9000);
		iov[i] = (struct iovec){ buf + i * 9000, 9000 };
		recs[i] = (struct cow_log_rec){ COW_REC_OBJ, &iov[i], 1 };
	}
	uint64_t bpos[3];
	int done = -1;
	enospc_armed = 1;
	ck_assert_int_eq(cow_log_append_many(log, recs, 3, bpos, &done), -ENOSPC);
	ck_assert_int_eq(done, 0);
	/* the log goes on: a short record where the batch began */
	memset(buf, 3, 10);
	struct iovec small = { buf, 10 };
	ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &small, 1, &pos[2]), 0);
	ck_assert_int_eq(cow_log_sync(log), 0);
	cow_log_close(log);
	cow_io_set(NULL);
	struct seen s = { 0 };
	ck_assert_int_eq(cow_log_open(dir, collect, &s, &log), 0);
	ck_assert_int_eq(s.n, 3);
	ck_assert_uint_eq(s.pos[2], pos[2]);
	ck_assert_int_eq(s.first[2], 3);
	ck_assert_uint_eq(s.len[2], 10);
	cow_log_close(log);
	free(buf);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

struct gc_arg {
	struct cow_log *log;
	pthread_barrier_t *bar;
	int result;
};

static void *gc_thread(void *a)
{
	struct gc_arg *g = a;
	uint8_t b = 3;
	struct iovec iov = { &b, 1 };
	uint64_t p;
	pthread_barrier_wait(g->bar);
	g->result = cow_log_append(g->log, COW_REC_OBJ, &iov, 1, &p);
	if (g->result == 0)
		g->result = cow_log_sync(g->log);
	return NULL;
}

START_TEST(test_group_commit)
{
	/* Eight writers each append and sync at once; with each fdatasync taking
	 * 200 ms, they must share syncs rather than queue for eight of them. */
	char *tmp, dir[512];
	struct cow_log *log = open_under_crashio(&tmp, dir);
	crashio_delay_ms = 200;
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, 8);
	pthread_t th[8];
	struct gc_arg args[8];
	for (int i = 0; i < 8; i++) {
		args[i] = (struct gc_arg){ log, &bar, -1 };
		pthread_create(&th[i], NULL, gc_thread, &args[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(args[i].result, 0);
	}
	struct cow_log_stats st;
	cow_log_get_stats(log, &st);
	ck_assert_uint_eq(st.sync_waits, 8);
	ck_assert_uint_le(st.syncs, 3);
	ck_assert_int_eq(crashio_unsynced(), 0); /* every append is durable */
	crashio_delay_ms = 0;
	close_under_crashio(log, tmp);
}
END_TEST

/* What a cow_log_sync_then callback saw when it ran. */
struct called {
	int n, err, unsynced;
	pthread_t thread;
};

static void note_call(void *arg, int err)
{
	struct called *c = arg;
	c->n++;
	c->err = err;
	c->unsynced = crashio_unsynced();
	c->thread = pthread_self();
}

static void *slow_sync(void *a)
{
	return (void *)(intptr_t)cow_log_sync(a);
}

START_TEST(test_sync_then)
{
	/* A FUSE reply waits for the log this way: the callback runs once
	 * everything appended before the call is durable, exactly once, and
	 * the caller never waits for another thread's sync. */
	char *tmp, dir[512];
	struct cow_log *log = open_under_crashio(&tmp, dir);
	struct cow_log_stats st;

	/* nothing to sync: called at once, no fdatasync */
	struct called c0 = { 0 };
	cow_log_sync_then(log, note_call, &c0);
	ck_assert_int_eq(c0.n, 1);
	ck_assert_int_eq(c0.err, 0);
	cow_log_get_stats(log, &st);
	ck_assert_uint_eq(st.syncs, 0);

	/* no sync running: this thread leads one, then is called */
	append_byte(log);
	struct called c1 = { 0 };
	cow_log_sync_then(log, note_call, &c1);
	ck_assert_int_eq(c1.n, 1);
	ck_assert_int_eq(c1.err, 0);
	ck_assert_int_eq(c1.unsynced, 0);
	ck_assert(pthread_equal(c1.thread, pthread_self()));

	/* another thread's sync is running and does not cover this append:
	 * the call returns without waiting, and that thread runs one more
	 * sync before it returns, then calls back */
	crashio_delay_ms = 500;
	append_byte(log);
	cow_log_get_stats(log, &st);
	uint64_t before = st.syncs;
	pthread_t th;
	pthread_create(&th, NULL, slow_sync, log);
	do {
		usleep(1000);
		cow_log_get_stats(log, &st);
	} while (st.syncs == before); /* the other thread is inside its fdatasync */
	append_byte(log);
	struct called c2 = { 0 };
	cow_log_sync_then(log, note_call, &c2);
	ck_assert_int_eq(c2.n, 0);
	void *res;
	pthread_join(th, &res);
	ck_assert_int_eq((int)(intptr_t)res, 0);
	ck_assert_int_eq(c2.n, 1);
	ck_assert_int_eq(c2.err, 0);
	ck_assert_int_eq(c2.unsynced, 0);
	ck_assert(pthread_equal(c2.thread, th));
	cow_log_get_stats(log, &st);
	ck_assert_uint_eq(st.syncs, before + 2);
	crashio_delay_ms = 0;

	/* a failed sync reaches the callback, and every later one */
	append_byte(log);
	crashio_fail_next = 1;
	struct called c3 = { 0 }, c4 = { 0 };
	cow_log_sync_then(log, note_call, &c3);
	ck_assert_int_eq(c3.n, 1);
	ck_assert_int_eq(c3.err, -EIO);
	cow_log_sync_then(log, note_call, &c4);
	ck_assert_int_eq(c4.n, 1);
	ck_assert_int_eq(c4.err, -EIO);

	close_under_crashio(log, tmp);
}
END_TEST

struct appender {
	struct cow_log *log;
	int appended;
	int done; /* atomic */
};

static void *append_loop(void *a)
{
	struct appender *ap = a;
	uint8_t buf[20000];
	for (int i = 0; i < 3000; i++) { /* ~3 MB: many scans overlap the appends */
		memset(buf, (i % 250) + 1, sizeof buf);
		struct iovec iov = { buf, 100 + (size_t)(i * 7919 % 1900) };
		uint64_t p;
		if (cow_log_append(ap->log, COW_REC_OBJ, &iov, 1, &p) == 0)
			ap->appended++;
	}
	__atomic_store_n(&ap->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int count_rec(void *ctx, uint64_t pos, unsigned type, const uint8_t *p, uint32_t len)
{
	(*(int *)ctx)++;
	return 0;
}

START_TEST(test_scan_while_appending)
{
	/* A replay scan (a branch being opened) runs while other threads append:
	 * it must see a whole prefix, never a record half written. */
	char *tmp = tu_tmpdir(), dir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint64_t start = cow_log_end(log);
	struct appender ap = { log, 0, 0 };
	pthread_t th;
	pthread_create(&th, NULL, append_loop, &ap);
	int last = 0, scans = 0;
	while (!__atomic_load_n(&ap.done, __ATOMIC_ACQUIRE)) {
		int n = 0;
		ck_assert_int_eq(cow_log_scan(log, start, count_rec, &n), 0);
		ck_assert_int_ge(n, last);
		last = n;
		scans++;
	}
	pthread_join(th, NULL);
	ck_assert_int_gt(scans, 1);
	int n = 0;
	ck_assert_int_eq(cow_log_scan(log, start, count_rec, &n), 0);
	ck_assert_int_eq(n, ap.appended);
	ck_assert_int_gt(ap.appended, 0);
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_missing_segment_refused)
{
	char *tmp = tu_tmpdir(), dir[512], a[600], b[600];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	/* segments 1 and 3 but no 2 */
	snprintf(a, sizeof a, "%s/%016x.seg", dir, 1);
	snprintf(b, sizeof b, "%s/%016x.seg", dir, 3);
	ck_assert_int_eq(link(a, b), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EBADMSG);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_newer_segment_version_refused)
{
	char *tmp = tu_tmpdir(), dir[512], seg[600];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	snprintf(seg, sizeof seg, "%s/%016x.seg", dir, 1);
	int fd = open(seg, O_RDWR);
	uint8_t h[32];
	ck_assert_int_eq(pread(fd, h, 32, 0), 32);
	h[8] = 9; /* version 9 */
	/* recompute the header CRC so that only the version is "wrong" */
	uint32_t c = cow_crc32c(0, h, 28);
	memcpy(h + 28, &c, 4);
	ck_assert_int_eq(pwrite(fd, h, 32, 0), 32);
	close(fd);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EPROTONOSUPPORT);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

/* Four segments, records 1..4 in segment k; returns the log open. */
/* What the log appended and synced does not stay in the page cache (the
 * kernel caches it above FUSE already), except the folio holding the tail
 * (up to 2 MiB); the tail page itself stays.  On a disk filesystem: tmpfs
 * keeps every page by nature. */
START_TEST(test_synced_appends_leave_page_cache)
{
	char *tmp = tu_disk_tmpdir(), dir[512], path[600];
	struct statfs sf;
	ck_assert_int_eq(statfs(tmp, &sf), 0);
	ck_assert_msg(sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC, "/var/tmp must be on a disk filesystem");
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint8_t *buf = malloc(8200);
	uint64_t pos = 0;
	for (int i = 0; i < 512; i++) { /* 4 MiB, in group commits of 64 records */
		memset(buf, i + 1, 8200);
		struct iovec iov = { buf, 8200 };
		ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &pos), 0);
		if (i % 64 == 63)
			ck_assert_int_eq(cow_log_sync(log), 0);
	}
	uint64_t end = cow_log_end(log);
	ck_assert_uint_eq(COW_LOG_POS_SEG(end), 1);
	size_t tail_page = COW_LOG_POS_OFF(end) / 4096, pages = tail_page + 1;
	snprintf(path, sizeof path, "%s/%016x.seg", dir, 1);
	int fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	void *m = mmap(NULL, pages * 4096, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	unsigned char *vec = malloc(pages);
	ck_assert_int_eq(mincore(m, pages * 4096, vec), 0);
	size_t resident = 0, below = tail_page & ~(size_t)511; /* the tail's 2 MiB folio may stay */
	ck_assert_uint_ge(below, 1024);
	for (size_t p = 0; p < below; p++)
		resident += vec[p] & 1;
	ck_assert_msg(resident == 0, "%zu of %zu synced pages still cached", resident, below);
	ck_assert_msg(vec[tail_page] & 1, "the tail page was dropped: the next append would read it");
	/* and what was dropped reads back */
	uint8_t b;
	ck_assert_int_eq(cow_log_read(log, pos, 8199, &b, 1), 0);
	ck_assert_int_eq(b, 512 % 256);
	munmap(m, pages * 4096);
	close(fd);
	free(vec);
	free(buf);
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

static struct cow_log *four_segments(const char *dir, uint64_t *pos)
{
	ck_assert_int_eq(cow_log_create(dir), 0);
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	uint8_t buf[100];
	for (int k = 0; k < 4; k++) {
		if (k)
			ck_assert_int_eq(cow_log_roll(log), 0);
		memset(buf, k + 1, sizeof buf);
		struct iovec iov = { buf, sizeof buf };
		ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &pos[k]), 0);
		ck_assert_uint_eq(COW_LOG_POS_SEG(pos[k]), k + 1);
	}
	/* an empty head is not rolled again */
	ck_assert_int_eq(cow_log_sync(log), 0);
	return log;
}

START_TEST(test_drop_segments)
{
	char *tmp = tu_tmpdir(), dir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	uint64_t pos[4];
	struct cow_log *log = four_segments(dir, pos);
	struct cow_log_segment *v;
	size_t n;
	ck_assert_int_eq(cow_log_segments(log, &v, &n), 0);
	ck_assert_uint_eq(n, 4);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(v[i].seg, i + 1);
		ck_assert_uint_eq(v[i].used, COW_LOG_SEG_HDR + 16 + 104);
	}
	free(v);
	/* the head cannot be dropped, nor anything twice */
	uint32_t bad[] = { 4 };
	ck_assert_int_eq(cow_log_drop(log, bad, 1), -EINVAL);
	uint32_t drop[] = { 1, 3 };
	ck_assert_int_eq(cow_log_drop(log, drop, 2), 0);
	ck_assert_int_eq(cow_log_drop(log, drop, 1), -EINVAL);
	uint8_t b;
	ck_assert_int_eq(cow_log_read(log, pos[0], 0, &b, 1), -ESTALE);
	ck_assert_int_eq(cow_log_read(log, pos[1], 0, &b, 1), 0);
	ck_assert_int_eq(b, 2);
	ck_assert_int_eq(cow_log_segments(log, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(v[0].seg, 2);
	ck_assert_uint_eq(v[1].seg, 4);
	free(v);
	struct seen s = { 0 };
	ck_assert_int_eq(cow_log_scan(log, COW_LOG_POS(1, 0), collect, &s), 0);
	ck_assert_int_eq(s.n, 2);
	cow_log_close(log);
	/* reopen: the gaps are accepted, the records of dropped segments are gone */
	char path[600];
	snprintf(path, sizeof path, "%s/%016x.seg", dir, 1);
	ck_assert_int_ne(access(path, F_OK), 0);
	memset(&s, 0, sizeof s);
	ck_assert_int_eq(cow_log_open(dir, collect, &s, &log), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_int_eq(s.first[0], 2);
	ck_assert_int_eq(s.first[1], 4);
	/* appends go on at the head */
	uint64_t p;
	struct iovec iov = { &b, 1 };
	ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &p), 0);
	ck_assert_uint_eq(COW_LOG_POS_SEG(p), 4);
	cow_log_close(log);
	/* a segment that went missing without being dropped is still damage */
	snprintf(path, sizeof path, "%s/%016x.seg", dir, 2);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EBADMSG);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_drop_interrupted_before_unlink)
{
	/* A crash after the dropped set was written but before the unlink:
	 * open removes the segment without reading it. */
	char *tmp = tu_tmpdir(), dir[512], path[600], saved[600];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	uint64_t pos[4];
	struct cow_log *log = four_segments(dir, pos);
	snprintf(path, sizeof path, "%s/%016x.seg", dir, 2);
	snprintf(saved, sizeof saved, "%s/saved", tmp);
	ck_assert_int_eq(link(path, saved), 0);
	uint32_t drop[] = { 2 };
	ck_assert_int_eq(cow_log_drop(log, drop, 1), 0);
	cow_log_close(log);
	ck_assert_int_eq(rename(saved, path), 0);
	struct seen s = { 0 };
	ck_assert_int_eq(cow_log_open(dir, collect, &s, &log), 0);
	ck_assert_int_eq(s.n, 3);
	ck_assert_int_eq(s.first[0], 1);
	ck_assert_int_eq(s.first[1], 3);
	ck_assert_int_ne(access(path, F_OK), 0);
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

START_TEST(test_dropped_set_damaged_refused)
{
	char *tmp = tu_tmpdir(), dir[512], path[600];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	uint64_t pos[4];
	struct cow_log *log = four_segments(dir, pos);
	uint32_t drop[] = { 1, 2 };
	ck_assert_int_eq(cow_log_drop(log, drop, 2), 0);
	cow_log_close(log);
	snprintf(path, sizeof path, "%s/dropped", dir);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 16 + 8 + 4); /* one range, 1..2 */
	tu_flip_byte(path, 17);
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EBADMSG);
	tu_flip_byte(path, 17);
	/* repaired, it opens again */
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	cow_log_close(log);
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

/* A log rolls on past any number of segments as long as GC drops the old
 * ones: numbers cross 2^16 (COW_LOG_SLOT wraps), slots are reused (a
 * window of 8 here), a stale position into a reused slot is -ESTALE, and
 * a roll that would make the log span more than the window is refused
 * with ENOSPC, changing nothing: at 7/8 of the window unless GC opened
 * the reserve, at the whole window even then. */
START_TEST(test_window_rolls_on)
{
	char *tmp = tu_tmpdir(), dir[512];
	snprintf(dir, sizeof dir, "%s/seg", tmp);
	setenv("COWFS_TEST_LOG_FIRST", "65530", 1);
	setenv("COWFS_TEST_LOG_WINDOW", "8", 1);
	ck_assert_int_eq(cow_log_create(dir), 0);
	unsetenv("COWFS_TEST_LOG_FIRST");
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), 0);
	/* one record per segment, numbered by its segment; segments 65530..65537 */
	enum { N = 40 };
	uint64_t pos[N];
	uint8_t b;
	struct iovec iov = { &b, 1 };
	uint32_t first = 65530, s = 65530;
	for (int i = 0; i < N; i++, s++) {
		b = (uint8_t)s;
		int r = cow_log_append(log, COW_REC_OBJ, &iov, 1, &pos[i]);
		ck_assert_int_eq(r, 0);
		ck_assert_uint_eq(COW_LOG_POS_SEG(pos[i]), s);
		if (s - first == 6) {
			/* 7 of 8: ordinary appends may not roll, GC may */
			ck_assert_int_eq(cow_log_roll(log), -ENOSPC);
			ck_assert_int_eq(cow_log_roll(log), -ENOSPC);
			cow_log_set_reserve(log, true);
			ck_assert_int_eq(cow_log_roll(log), 0);
			cow_log_set_reserve(log, false);
			continue;
		}
		if (s - first == 7) {
			/* the window is full: no roll even for GC, and nothing changed */
			cow_log_set_reserve(log, true);
			ck_assert_int_eq(cow_log_roll(log), -ENOSPC);
			cow_log_set_reserve(log, false);
			struct cow_log_segment *v;
			size_t n;
			ck_assert_int_eq(cow_log_segments(log, &v, &n), 0);
			ck_assert_uint_eq(n, 8);
			ck_assert_uint_eq(v[0].seg, first);
			ck_assert_uint_eq(v[7].seg, s);
			/* the older half is old */
			for (size_t k = 0; k < n; k++)
				ck_assert(v[k].old == (k < 4));
			free(v);
			/* GC moves the oldest three on */
			uint32_t drop[] = { first, first + 1, first + 2 };
			ck_assert_int_eq(cow_log_drop(log, drop, 3), 0);
			first += 3;
			/* the slot of a dropped segment is reused by the next roll,
			 * and a stale position into it reads nothing */
			ck_assert_int_eq(cow_log_roll(log), 0);
			ck_assert_int_eq(cow_log_read(log, pos[i - 7], 0, &b, 1), -ESTALE);
			continue;
		}
		ck_assert_int_eq(cow_log_roll(log), 0);
	}
	ck_assert_uint_eq(s, 65530 + N);
	ck_assert_uint_gt(s, 65536 + 32);
	cow_log_close(log);
	/* reopened, the segments present are the last few, every record in
	 * them reads back, and appends go on from the head */
	struct seen seen = { 0 };
	ck_assert_int_eq(cow_log_open(dir, collect, &seen, &log), 0);
	ck_assert_int_eq(seen.n, (int)(s - first));
	for (int k = 0; k < seen.n; k++) {
		ck_assert_uint_eq(COW_LOG_POS_SEG(seen.pos[k]), first + (uint32_t)k);
		ck_assert_int_eq(seen.first[k], (uint8_t)(first + (uint32_t)k));
		ck_assert_int_eq(cow_log_read(log, seen.pos[k], 0, &b, 1), 0);
		ck_assert_int_eq(b, (uint8_t)(first + (uint32_t)k));
	}
	uint64_t p;
	ck_assert_int_eq(cow_log_append(log, COW_REC_OBJ, &iov, 1, &p), 0);
	ck_assert_uint_eq(COW_LOG_POS_SEG(p), s);
	cow_log_close(log);
	/* the dropped set is one range, 1..first-1 */
	char path[600];
	snprintf(path, sizeof path, "%s/dropped", dir);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 16 + 8 + 4);
	/* a log spanning more than its window is damage, not something to guess at */
	setenv("COWFS_TEST_LOG_WINDOW", "4", 1);
	ck_assert_int_eq(cow_log_open(dir, NULL, NULL, &log), -EBADMSG);
	unsetenv("COWFS_TEST_LOG_WINDOW");
	tu_rmrf(tmp);
	free(tmp);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_crc32c_matches_bitwise);
	tcase_add_test(tc, test_append_read);
	tcase_add_test(tc, test_cut_everywhere);
	tcase_add_test(tc, test_damage_mid_log_is_refused);
	tcase_add_test(tc, test_crash_garbles_unsynced);
	tcase_add_test(tc, test_sync_failure_is_sticky);
	tcase_add_test(tc, test_failed_append_leaves_nothing);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_sync_then);
	tcase_add_test(tc, test_scan_while_appending);
	tcase_add_test(tc, test_synced_appends_leave_page_cache);
	tcase_add_test(tc, test_missing_segment_refused);
	tcase_add_test(tc, test_newer_segment_version_refused);
	tcase_add_test(tc, test_drop_segments);
	tcase_add_test(tc, test_drop_interrupted_before_unlink);
	tcase_add_test(tc, test_dropped_set_damaged_refused);
	tcase_add_test(tc, test_window_rolls_on);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
