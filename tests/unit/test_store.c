/* Unit tests of the object store: round trips across reopen, dedup, the
 * implicit zero block, hash verification on every read, damaged records,
 * superblock checks and the single-owner lock; mark passes (owner, shared,
 * marks by puts during a pass), relocation of a segment's live objects and
 * the drop of the segment, with readers racing it.  Hashing many blocks
 * at once (sixteen lanes where the CPU has AVX-512) gives OpenSSL's answer,
 * and so does a batch put of blocks.  An object only its owner named is
 * forgotten when asked, and nothing else is, nor while a reader is inside
 * the read gate; a segment's indexed bytes count what is left, and a
 * cleaner's relocation moves all of it and drops the rest with the
 * segment. */
#include <pthread.h>
#include "crc32c.h"
#include "hash.h"
#include "io.h"
#include "log.h"
#include "sha256x16.h"
#include "store.h"
#include "testutil.h"

static struct cow_store *open_new(char **tmp, char **path)
{
	*path = tu_store_path(tmp);
	ck_assert_int_eq(cow_store_create(*path), 0);
	struct cow_store *s;
	ck_assert_int_eq(cow_store_open(*path, &s), 0);
	return s;
}

START_TEST(test_roundtrip_and_reopen)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	uint8_t blk[COW_BLOCK_SIZE], got[COW_BLOCK_SIZE];
	cow_hash h[50];
	for (int i = 0; i < 50; i++) {
		tu_fill(blk, sizeof blk, i);
		ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &h[i]), 0);
		ck_assert(!cow_hash_is_zero(&h[i]));
	}
	/* an object of another size: a metadata node */
	cow_hash hs;
	ck_assert_int_eq(cow_store_put(s, "hello", 5, &hs), 0);
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	for (int i = 0; i < 50; i++) {
		tu_fill(blk, sizeof blk, i);
		ck_assert_int_eq(cow_store_get(s, &h[i], got, sizeof got), 0);
		ck_assert_mem_eq(got, blk, sizeof blk);
	}
	void *buf;
	size_t len;
	ck_assert_int_eq(cow_store_get_alloc(s, &hs, &buf, &len), 0);
	ck_assert_uint_eq(len, 5);
	ck_assert_mem_eq(buf, "hello", 5);
	free(buf);
	/* asking for the wrong size is an error, not a short read */
	ck_assert_int_eq(cow_store_get(s, &hs, got, 8), -EIO);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

/* SHA-256("abc"), FIPS 180-2 appendix B.1 */
static const char abc_hex[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

START_TEST(test_hash_many_matches_single)
{
	printf("hash: sixteen lanes %s on this machine\n", cow_hash_batched() ? "in use" : "not available");
	static const size_t lens[] = { 0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, COW_BLOCK_SIZE };
	static const size_t counts[] = { 1, 7, 8, 9, 15, 16, 17, 24, 33, 128 };
	uint8_t *buf = malloc(128 * COW_BLOCK_SIZE + 2);
	const void *data[128];
	cow_hash many[128], one;
	for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
		for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
			size_t n = counts[ci];
			for (size_t i = 0; i < n; i++) {
				/* misaligned on purpose, every message different */
				data[i] = buf + i * COW_BLOCK_SIZE + (i % 3);
				tu_fill((uint8_t *)data[i], lens[li], li * 1000 + ci * 100 + i);
			}
			ck_assert_int_eq(cow_hash_compute_many(data, lens[li], n, many), 0);
			for (size_t i = 0; i < n; i++) {
				ck_assert_int_eq(cow_hash_compute(data[i], lens[li], &one), 0);
				ck_assert_msg(cow_hash_eq(&one, &many[i]), "len %zu, %zu messages: #%zu differs",
					      lens[li], n, i);
			}
		}
	}
	/* a known answer, sixteen times over */
	for (int i = 0; i < 16; i++)
		data[i] = "abc";
	ck_assert_int_eq(cow_hash_compute_many(data, 3, 16, many), 0);
	for (int i = 0; i < 16; i++) {
		char hex[65];
		cow_hash_to_hex(&many[i], hex);
		ck_assert_str_eq(hex, abc_hex);
	}
	if (cow_sha256x16_available()) {
		uint8_t out[16][32];
		cow_sha256x16((const uint8_t *const *)data, 1, 3, out);
		cow_hash h;
		memcpy(h.b, out[0], 32);
		char hex[65];
		cow_hash_to_hex(&h, hex);
		ck_assert_str_eq(hex, abc_hex);
	}
	free(buf);
}
END_TEST

START_TEST(test_put_blocks_batch)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	enum { N = 40 };
	uint8_t *blk = calloc(N, COW_BLOCK_SIZE), got[COW_BLOCK_SIZE];
	const uint8_t *v[N];
	for (int i = 0; i < N; i++) {
		v[i] = blk + (size_t)i * COW_BLOCK_SIZE;
		if (i % 5 != 4) /* every fifth all zeros; blocks 30.. repeat 0.. */
			tu_fill(blk + (size_t)i * COW_BLOCK_SIZE, COW_BLOCK_SIZE, i < 30 ? i : i - 30);
	}
	cow_hash h[N], one;
	struct cow_store_stats st0, st1;
	cow_store_get_stats(s, &st0);
	ck_assert_int_eq(cow_store_put_blocks(s, v, N, h), 0);
	cow_store_get_stats(s, &st1);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(cow_hash_compute(v[i], COW_BLOCK_SIZE, &one), 0);
		ck_assert(i % 5 == 4 ? cow_hash_is_zero(&h[i]) : cow_hash_eq(&h[i], &one));
		ck_assert_int_eq(cow_store_get(s, &h[i], got, sizeof got), 0);
		ck_assert_mem_eq(got, v[i], COW_BLOCK_SIZE);
	}
	/* 8 zero blocks, 24 distinct of 30 others, 8 repeats of 0..9 */
	ck_assert_uint_eq(st1.zero_puts - st0.zero_puts, 8);
	ck_assert_uint_eq(st1.objects - st0.objects, 24);
	cow_store_close(s);
	free(blk);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_dedup_and_zero)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	uint8_t blk[COW_BLOCK_SIZE], zero[COW_BLOCK_SIZE] = { 0 }, got[COW_BLOCK_SIZE];
	tu_fill(blk, sizeof blk, 7);
	cow_hash a, b, z;
	struct cow_store_stats st0, st1, st2;
	cow_store_get_stats(s, &st0);
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &a), 0);
	cow_store_get_stats(s, &st1);
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &b), 0);
	cow_store_get_stats(s, &st2);
	ck_assert(cow_hash_eq(&a, &b));
	ck_assert_uint_eq(st2.objects, st1.objects);
	ck_assert_uint_eq(st2.log_bytes, st1.log_bytes); /* stored once */
	ck_assert_uint_eq(st2.dedup_hits, st1.dedup_hits + 1);
	ck_assert_uint_gt(st1.log_bytes, st0.log_bytes);
	/* the zero block is never stored and reads back as zeros */
	ck_assert_int_eq(cow_store_put(s, zero, sizeof zero, &z), 0);
	ck_assert(cow_hash_is_zero(&z));
	struct cow_store_stats st3;
	cow_store_get_stats(s, &st3);
	ck_assert_uint_eq(st3.log_bytes, st2.log_bytes);
	memset(got, 0xAA, sizeof got);
	ck_assert_int_eq(cow_store_get(s, &z, got, sizeof got), 0);
	ck_assert_mem_eq(got, zero, sizeof zero);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

/* Offset of the payload byte BYTE of the object record holding H. */
struct find { cow_hash h; uint64_t pos; };
static int find_rec(void *ctx, uint64_t pos, unsigned type, const uint8_t *p, uint32_t len)
{
	struct find *f = ctx;
	if (type == COW_REC_OBJ && len >= 32 && memcmp(p, f->h.b, 32) == 0)
		f->pos = pos;
	return 0;
}

static uint64_t locate(const char *path, const cow_hash *h)
{
	char dir[600];
	snprintf(dir, sizeof dir, "%s/segments", path);
	struct find f = { *h, 0 };
	struct cow_log *log;
	ck_assert_int_eq(cow_log_open(dir, find_rec, &f, &log), 0);
	cow_log_close(log);
	ck_assert_uint_ne(f.pos, 0);
	return f.pos;
}

START_TEST(test_flipped_byte_detected_on_read)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	uint8_t blk[COW_BLOCK_SIZE], got[COW_BLOCK_SIZE];
	cow_hash h1, h2;
	tu_fill(blk, sizeof blk, 1);
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &h1), 0);
	tu_fill(blk, sizeof blk, 2);
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &h2), 0);
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	uint64_t pos = locate(path, &h1);
	char seg[700];
	tu_seg_path(path, COW_LOG_POS_SEG(pos), seg, sizeof seg);

	/* damage under a running store: the read verifies the hash */
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	tu_flip_byte(seg, COW_LOG_POS_OFF(pos) + COW_LOG_REC_HDR + 32 + 4000);
	ck_assert_int_eq(cow_store_get(s, &h1, got, sizeof got), -EIO);
	ck_assert_int_eq(cow_store_get(s, &h2, got, sizeof got), 0);
	ck_assert_mem_eq(got, blk, sizeof blk);
	cow_store_close(s);

	/* damage found at open: the store opens, the damaged object is EIO, the rest reads */
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	ck_assert_int_eq(cow_store_get(s, &h1, got, sizeof got), -EIO);
	ck_assert_int_eq(cow_store_has(s, &h1), 0);
	ck_assert_int_eq(cow_store_get(s, &h2, got, sizeof got), 0);
	/* writing the same content again heals it */
	tu_fill(blk, sizeof blk, 1);
	cow_hash h1b;
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &h1b), 0);
	ck_assert(cow_hash_eq(&h1, &h1b));
	ck_assert_int_eq(cow_store_get(s, &h1, got, sizeof got), 0);
	ck_assert_mem_eq(got, blk, sizeof blk);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_superblock_checks)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_create(path), -EEXIST);
	char sb[600];
	snprintf(sb, sizeof sb, "%s/cowfs.super", path);
	/* a newer format version (with a valid checksum) is refused */
	int fd = open(sb, O_RDWR);
	uint8_t b[64];
	ck_assert_int_eq(pread(fd, b, 64, 0), 64);
	uint8_t saved[64];
	memcpy(saved, b, 64);
	b[8] = 2;
	uint32_t c = cow_crc32c(0, b, 60);
	memcpy(b + 60, &c, 4);
	ck_assert_int_eq(pwrite(fd, b, 64, 0), 64);
	ck_assert_int_eq(cow_store_open(path, &s), -EPROTONOSUPPORT);
	/* a damaged superblock is refused */
	b[8] = 1;
	ck_assert_int_eq(pwrite(fd, b, 64, 0), 64); /* checksum now wrong */
	ck_assert_int_eq(cow_store_open(path, &s), -EBADMSG);
	ck_assert_int_eq(pwrite(fd, saved, 64, 0), 64);
	close(fd);
	/* not a store at all */
	ck_assert_int_eq(cow_store_open(tmp, &s), -ENOENT);
	/* one owner at a time */
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	struct cow_store *s2;
	ck_assert_int_eq(cow_store_open(path, &s2), -EBUSY);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_segment_roll)
{
	/* more than one segment's worth of objects: all readable after reopen */
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	size_t n = COW_LOG_SEGMENT_MAX / COW_BLOCK_SIZE + 500;
	uint8_t blk[COW_BLOCK_SIZE], got[COW_BLOCK_SIZE];
	cow_hash *h = malloc(n * sizeof *h);
	for (size_t i = 0; i < n; i++) {
		tu_fill(blk, sizeof blk, 1000 + i);
		ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, &h[i]), 0);
	}
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	struct cow_store_stats st;
	cow_store_get_stats(s, &st);
	ck_assert_uint_eq(st.objects, n);
	for (size_t i = 0; i < n; i += 97) {
		tu_fill(blk, sizeof blk, 1000 + i);
		ck_assert_int_eq(cow_store_get(s, &h[i], got, sizeof got), 0);
		ck_assert_mem_eq(got, blk, sizeof blk);
	}
	char seg2[700];
	tu_seg_path(path, 2, seg2, sizeof seg2);
	ck_assert_int_eq(access(seg2, F_OK), 0);
	cow_store_close(s);
	free(h);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

static void put_seed(struct cow_store *s, uint64_t seed, cow_hash *h)
{
	uint8_t blk[COW_BLOCK_SIZE];
	tu_fill(blk, sizeof blk, seed);
	ck_assert_int_eq(cow_store_put(s, blk, sizeof blk, h), 0);
}

static void check_seed(struct cow_store *s, uint64_t seed, const cow_hash *h)
{
	uint8_t blk[COW_BLOCK_SIZE], got[COW_BLOCK_SIZE];
	tu_fill(blk, sizeof blk, seed);
	ck_assert_int_eq(cow_store_get(s, h, got, sizeof got), 0);
	ck_assert_mem_eq(got, blk, sizeof blk);
}

struct tally { uint64_t live, objects, seg1; };
static void tally_restart(void *ctx) { memset(ctx, 0, sizeof(struct tally)); }
static void tally_fn(void *ctx, uint64_t pos, uint32_t len, uint32_t flags, uint32_t owner)
{
	struct tally *t = ctx;
	t->objects++;
	if (flags & (COW_MARK_SEEN | COW_MARK_PUT))
		t->live++;
	if (COW_LOG_POS_SEG(pos) == 1)
		t->seg1++;
}

struct reader_arg { struct cow_store *s; cow_hash h; volatile bool stop; int errors, reads; };
static void *reader(void *a)
{
	struct reader_arg *r = a;
	uint8_t got[COW_BLOCK_SIZE];
	while (!r->stop) {
		if (cow_store_get(r->s, &r->h, got, sizeof got) != 0)
			r->errors++;
		r->reads++;
	}
	return NULL;
}

/* _i 0: each segment read whole; 1: with a plan, made before a put
 * revives one of the dead objects (which must then move too). */
START_TEST(test_mark_relocate_drop)
{
	bool planned = _i == 1;
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	enum { N = 40 };
	cow_hash h[N];
	for (int i = 0; i < N; i++)
		put_seed(s, 500 + i, &h[i]);
	ck_assert_int_eq(cow_store_roll(s), 0);
	ck_assert_int_eq(cow_store_mark_begin(s), 0);
	ck_assert_int_eq(cow_store_mark_begin(s), -EBUSY);
	/* root 1 reaches 0..19, root 2 reaches 10..24: 10..19 are shared */
	struct cow_mark m[N];
	ck_assert_int_eq(cow_store_mark(s, h, 20, 1, false, m), 0);
	for (int i = 0; i < 20; i++)
		ck_assert_uint_eq(m[i].flags & COW_MARK_SEEN, 0);
	ck_assert_int_eq(cow_store_mark(s, h + 10, 15, 2, false, m), 0);
	for (int i = 0; i < 10; i++) {
		ck_assert_uint_eq(m[i].flags & COW_MARK_SEEN, COW_MARK_SEEN);
		ck_assert_uint_eq(m[i].owner, 1);
		ck_assert_uint_eq(m[i].len, COW_BLOCK_SIZE);
	}
	ck_assert_int_eq(cow_store_mark(s, h, 25, 2, false, m), 0);
	ck_assert_uint_eq(m[0].flags & COW_MARK_SHARED, 0);  /* was owned by 1 */
	ck_assert_uint_eq(m[12].flags & COW_MARK_SHARED, COW_MARK_SHARED);
	ck_assert_uint_eq(m[22].flags & COW_MARK_SHARED, 0); /* owned by 2 alone */
	ck_assert_uint_eq(m[22].owner, 2);
	uint32_t one = 1;
	struct cow_store_plan *plan = NULL;
	if (planned)
		ck_assert_int_eq(cow_store_plan(s, &one, 1, &plan), 0);
	/* a put during the pass keeps 30 alive; 25..29 and 31..39 are garbage */
	cow_hash again;
	put_seed(s, 530, &again);
	ck_assert(cow_hash_eq(&again, &h[30]));
	cow_hash fresh;
	put_seed(s, 999, &fresh); /* stored during the pass, at the head */
	struct tally t = { 0 };
	ck_assert_int_eq(cow_store_tally(s, tally_fn, tally_restart, &t), 0);
	ck_assert_uint_eq(t.objects, N + 1);
	ck_assert_uint_eq(t.live, 27);
	ck_assert_uint_eq(t.seg1, N);

	/* not before its objects are moved */
	ck_assert_int_eq(cow_store_drop_segments(s, &one, 1), -EBUSY);
	struct reader_arg ra = { .s = s, .h = h[5] };
	pthread_t th;
	pthread_create(&th, NULL, reader, &ra);
	struct cow_store_sweep acc = { 0 };
	ck_assert_int_eq(cow_store_relocate(s, 1, plan, 0, &acc), 1);
	cow_store_plan_free(plan);
	ck_assert_uint_eq(acc.moved_objects, 26);
	ck_assert_uint_eq(acc.dropped_objects, 14); /* 25..29, 31..39 */
	uint32_t seg = 1;
	ck_assert_int_eq(cow_store_drop_segments(s, &seg, 1), 0);
	while (ra.reads < 1000)
		usleep(1000);
	ra.stop = true;
	pthread_join(th, NULL);
	ck_assert_int_eq(ra.errors, 0);
	cow_store_mark_end(s);
	for (int i = 0; i <= 30; i++)
		if (i < 25 || i == 30)
			check_seed(s, 500 + i, &h[i]);
	uint8_t got[COW_BLOCK_SIZE];
	ck_assert_int_eq(cow_store_get(s, &h[35], got, sizeof got), -EIO);
	/* a dropped object stored again is a new copy */
	cow_hash h35;
	put_seed(s, 535, &h35);
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	for (int i = 0; i <= 30; i++)
		if (i < 25 || i == 30)
			check_seed(s, 500 + i, &h[i]);
	check_seed(s, 535, &h35);
	check_seed(s, 999, &fresh);
	ck_assert_int_eq(cow_store_get(s, &h[36], got, sizeof got), -EIO);
	struct cow_store_stats st;
	cow_store_get_stats(s, &st);
	ck_assert_uint_eq(st.objects, 28); /* 26 kept, 999, and 35 again */
	/* marks are not persistent, and outside a pass marking is refused */
	ck_assert_int_eq(cow_store_mark(s, h, 1, 1, false, m), -EINVAL);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_index_remove_keeps_probe_runs)
{
	/* many removals from a crowded table: every survivor still found */
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	enum { N = 3000 };
	cow_hash *h = malloc(N * sizeof *h);
	for (int i = 0; i < N; i++) {
		char obj[32];
		int len = snprintf(obj, sizeof obj, "object %d", i);
		ck_assert_int_eq(cow_store_put(s, obj, len, &h[i]), 0);
	}
	ck_assert_int_eq(cow_store_roll(s), 0);
	ck_assert_int_eq(cow_store_mark_begin(s), 0);
	struct cow_mark m;
	for (int i = 0; i < N; i += 3)
		ck_assert_int_eq(cow_store_mark(s, &h[i], 1, 1, false, &m), 0);
	struct cow_store_sweep acc = { 0 };
	ck_assert_int_eq(cow_store_relocate(s, 1, NULL, 0, &acc), 1);
	ck_assert_uint_eq(acc.moved_objects, N / 3);
	ck_assert_uint_eq(acc.dropped_objects, N - N / 3);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(cow_store_has(s, &h[i]), i % 3 == 0);
	cow_store_mark_end(s);
	cow_store_close(s);
	free(h);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

/* Bytes the log reads, through an I/O backend that counts them. */
static uint64_t bytes_read;
static ssize_t counting_pread(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n = cow_io_posix.pread(fd, buf, len, off);
	if (n > 0)
		__atomic_add_fetch(&bytes_read, (uint64_t)n, __ATOMIC_RELAXED);
	return n;
}

START_TEST(test_relocate_reads_only_live)
{
	/* one object in 16 live, the dead ones far apart: a planned relocation
	 * reads the live records, not the segment; and moves what a scan of the
	 * whole segment would */
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	enum { N = 256, EVERY = 16 };
	cow_hash h[N];
	for (int i = 0; i < N; i++)
		put_seed(s, 700 + i, &h[i]);
	ck_assert_int_eq(cow_store_roll(s), 0);
	ck_assert_int_eq(cow_store_mark_begin(s), 0);
	struct cow_mark m;
	for (int i = 0; i < N; i += EVERY)
		ck_assert_int_eq(cow_store_mark(s, &h[i], 1, 1, false, &m), 0);
	uint32_t one = 1;
	struct cow_store_plan *plan;
	ck_assert_int_eq(cow_store_plan(s, &one, 1, &plan), 0);
	struct cow_io counting = cow_io_posix;
	counting.pread = counting_pread;
	bytes_read = 0;
	cow_io_set(&counting);
	struct cow_store_sweep acc = { 0 };
	int r = cow_store_relocate(s, 1, plan, 0, &acc);
	cow_io_set(NULL);
	cow_store_plan_free(plan);
	ck_assert_int_eq(r, 1);
	ck_assert_uint_eq(acc.moved_objects, N / EVERY);
	ck_assert_uint_eq(acc.dropped_objects, N - N / EVERY);
	/* each live record is a header, a hash and a block */
	ck_assert_uint_le(bytes_read, (uint64_t)(N / EVERY) * (COW_BLOCK_SIZE + 64));
	ck_assert_uint_ge(bytes_read, (uint64_t)(N / EVERY) * COW_BLOCK_SIZE);
	ck_assert_int_eq(cow_store_drop_segments(s, &one, 1), 0);
	cow_store_mark_end(s);
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	for (int i = 0; i < N; i++)
		if (i % EVERY == 0)
			check_seed(s, 700 + i, &h[i]);
		else
			ck_assert_int_eq(cow_store_has(s, &h[i]), 0);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

/* Put seeds SEED[0..N) as one batch owned by OWNER at GEN. */
static void put_owned(struct cow_store *s, const uint64_t *seed, size_t n, uint32_t owner, uint32_t gen, cow_hash *h)
{
	uint8_t *buf = malloc(n * COW_BLOCK_SIZE);
	const uint8_t **blocks = malloc(n * sizeof *blocks);
	for (size_t i = 0; i < n; i++) {
		tu_fill(buf + i * COW_BLOCK_SIZE, COW_BLOCK_SIZE, seed[i]);
		blocks[i] = buf + i * COW_BLOCK_SIZE;
	}
	ck_assert_int_eq(cow_store_put_blocks_owned(s, blocks, n, owner, gen, h), 0);
	free(blocks);
	free(buf);
}

static uint64_t forget1(struct cow_store *s, const cow_hash *h, uint32_t owner, uint32_t after_gen)
{
	struct cow_store_forgot f;
	ck_assert_int_eq(cow_store_forget(s, h, 1, owner, after_gen, &f), 0);
	ck_assert_uint_eq(f.bytes, f.objects * COW_BLOCK_SIZE);
	return f.objects;
}

struct forgetter { struct cow_store *s; const cow_hash *h; int done; };
static void *forget_thread(void *arg)
{
	struct forgetter *f = arg;
	struct cow_store_forgot got;
	ck_assert_int_eq(cow_store_forget(f->s, f->h, 1, 7, 0, &got), 0);
	ck_assert_uint_eq(got.objects, 1);
	__atomic_store_n(&f->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

START_TEST(test_forget_only_what_its_owner_alone_named)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	/* owner 7 at generation 5: a, b, c, d; then b is put again by
	 * someone else (dedup), and e twice in one batch */
	const uint64_t seeds[] = { 1, 2, 3, 4, 5, 5 };
	cow_hash h[6], again;
	put_owned(s, seeds, 4, 7, 5, h);
	put_seed(s, 2, &again);
	ck_assert(cow_hash_eq(&again, &h[1]));
	put_owned(s, seeds + 4, 2, 7, 5, h + 4);
	struct cow_store_stats st0, st1;
	cow_store_get_stats(s, &st0);
	ck_assert_uint_eq(forget1(s, &h[0], 8, 0), 0); /* another owner */
	ck_assert_uint_eq(forget1(s, &h[0], 7, 5), 0); /* not after the generation given */
	ck_assert_uint_eq(forget1(s, &h[1], 7, 0), 0); /* named again since */
	ck_assert_uint_eq(forget1(s, &h[4], 7, 0), 0); /* named twice by its own batch */
	ck_assert_int_eq(cow_store_has(s, &h[0]), 1);
	/* during a mark pass nothing is forgotten */
	struct cow_store_forgot f;
	ck_assert_int_eq(cow_store_mark_begin(s), 0);
	ck_assert_int_eq(cow_store_forget(s, &h[0], 1, 7, 4, &f), -EBUSY);
	ck_assert_uint_eq(f.objects, 0);
	cow_store_mark_end(s);
	ck_assert_int_eq(cow_store_has(s, &h[0]), 1);
	ck_assert_int_eq(cow_store_forget(s, &h[0], 1, 0, 0, &f), -EINVAL);
	/* a is its owner's alone: forgotten; the others still read */
	ck_assert_uint_eq(forget1(s, &h[0], 7, 4), 1);
	ck_assert_uint_eq(forget1(s, &h[0], 7, 4), 0);
	cow_store_get_stats(s, &st1);
	ck_assert_uint_eq(st1.objects, st0.objects - 1);
	ck_assert_int_eq(cow_store_has(s, &h[0]), 0);
	check_seed(s, 2, &h[1]);
	check_seed(s, 3, &h[2]);
	check_seed(s, 5, &h[4]);
	/* the same bytes put again are stored anew, and read */
	cow_hash a2;
	put_seed(s, 1, &a2);
	ck_assert(cow_hash_eq(&a2, &h[0]));
	check_seed(s, 1, &h[0]);
	cow_store_get_stats(s, &st1);
	ck_assert_uint_eq(st1.objects, st0.objects);
	/* a reader inside the gate holds the forgetting back until it leaves */
	struct forgetter fg = { s, &h[3], 0 };
	unsigned tok = cow_store_read_enter(s);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, forget_thread, &fg), 0);
	usleep(100 * 1000);
	ck_assert_int_eq(__atomic_load_n(&fg.done, __ATOMIC_SEQ_CST), 0);
	check_seed(s, 4, &h[3]);
	cow_store_read_leave(s, tok);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(fg.done, 1);
	ck_assert_int_eq(cow_store_has(s, &h[3]), 0);
	/* a reopen finds d's record again, owned by nobody */
	ck_assert_int_eq(cow_store_sync(s), 0);
	cow_store_close(s);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	check_seed(s, 4, &h[3]);
	ck_assert_uint_eq(forget1(s, &h[3], 7, 0), 0);
	check_seed(s, 3, &h[2]);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

/* Forgetting, then cleaning: what is forgotten goes with its segment, all
 * the rest moves, marked or not. */
START_TEST(test_forget_then_clean_segment)
{
	char *tmp, *path;
	struct cow_store *s = open_new(&tmp, &path);
	uint64_t seeds[64];
	cow_hash owned[64], other[4];
	for (int i = 0; i < 64; i++)
		seeds[i] = 500 + i;
	put_owned(s, seeds, 64, 3, 2, owned);
	for (int i = 0; i < 4; i++)
		put_seed(s, 600 + i, &other[i]);
	ck_assert_int_eq(cow_store_roll(s), 0);
	uint32_t objects;
	uint64_t bytes;
	cow_store_segment_usage(s, 1, &objects, &bytes);
	ck_assert_uint_eq(objects, 68);
	ck_assert_uint_eq(bytes, 68 * COW_BLOCK_SIZE);
	struct cow_store_forgot f;
	ck_assert_int_eq(cow_store_forget(s, owned, 60, 3, 1, &f), 0);
	ck_assert_uint_eq(f.objects, 60);
	cow_store_segment_usage(s, 1, &objects, &bytes);
	ck_assert_uint_eq(objects, 8);
	ck_assert_uint_eq(bytes, 8 * COW_BLOCK_SIZE);
	/* a cleaner's pass: nothing is marked, everything indexed moves */
	ck_assert_int_eq(cow_store_mark_begin(s), 0);
	const uint32_t seg1 = 1;
	struct cow_store_plan *plan;
	ck_assert_int_eq(cow_store_plan(s, &seg1, 1, &plan), 0);
	struct cow_store_sweep acc = { 0 };
	ck_assert_int_eq(cow_store_relocate(s, 1, plan, COW_RELOC_ALL_INDEXED, &acc), 1);
	cow_store_plan_free(plan);
	ck_assert_uint_eq(acc.moved_objects, 8);
	ck_assert_uint_eq(acc.dropped_objects, 0);
	ck_assert_int_eq(cow_store_drop_segments(s, &seg1, 1), 0);
	cow_store_mark_end(s);
	cow_store_segment_usage(s, 1, &objects, &bytes);
	ck_assert_uint_eq(objects, 0);
	ck_assert_uint_eq(bytes, 0);
	char seg[600];
	tu_seg_path(path, 1, seg, sizeof seg);
	ck_assert_int_eq(access(seg, F_OK), -1);
	for (int pass = 0; pass < 2; pass++) { /* and after a reopen */
		for (int i = 60; i < 64; i++)
			check_seed(s, 500 + i, &owned[i]);
		for (int i = 0; i < 4; i++)
			check_seed(s, 600 + i, &other[i]);
		for (int i = 0; i < 60; i++)
			ck_assert_int_eq(cow_store_has(s, &owned[i]), 0);
		ck_assert_int_eq(cow_store_sync(s), 0);
		cow_store_close(s);
		ck_assert_int_eq(cow_store_open(path, &s), 0);
	}
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_roundtrip_and_reopen);
	tcase_add_test(tc, test_dedup_and_zero);
	tcase_add_test(tc, test_hash_many_matches_single);
	tcase_add_test(tc, test_put_blocks_batch);
	tcase_add_test(tc, test_flipped_byte_detected_on_read);
	tcase_add_test(tc, test_superblock_checks);
	tcase_add_test(tc, test_segment_roll);
	tcase_add_loop_test(tc, test_mark_relocate_drop, 0, 2);
	tcase_add_test(tc, test_relocate_reads_only_live);
	tcase_add_test(tc, test_index_remove_keeps_probe_runs);
	tcase_add_test(tc, test_forget_only_what_its_owner_alone_named);
	tcase_add_test(tc, test_forget_then_clean_segment);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
