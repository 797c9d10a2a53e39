/* Unit tests of storage accounting, GC and fsck on a store opened without a
 * mount (fs.h):
 *   - own and shared bytes: new data is owned by the branch that wrote it; a
 *     fresh child shares everything and owns next to nothing;
 *   - GC reclaims a deleted branch and overwritten blocks, and every branch
 *     reads identically before, after, and after a reopen; fsck is clean;
 *   - GC while writers overwrite (also with content that exists in the
 *     segments being swept) and readers read: nothing lost;
 *   - a crash at every sync GC makes (unsynced writes garbled): the store
 *     reopens and every branch reads identically;
 *   - fsck names the ref, path and block of a flipped byte, once per ref
 *     that reaches it; GC then keeps the damaged segment;
 *   - the daemon's own runs: when one is due (the store grew by PCT % of
 *     the live data, and by the minimum), and that they rewrite only
 *     mostly-dead segments. */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "branch.h"
#include "crashio.h"
#include "fs.h"
#include "io.h"
#include "log.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

#define MiB (1u << 20)

struct env {
	char *tmp, *path;
	struct cow_fs *fs;
};

static void env_new(struct env *e)
{
	e->path = tu_store_path(&e->tmp);
	ck_assert_int_eq(cow_fs_init(e->path, 0, 0), 0);
	ck_assert_int_eq(cow_fs_open(e->path, &e->fs), 0);
}

static void env_reopen(struct env *e)
{
	ck_assert_int_eq(cow_fs_close(e->fs), 0);
	ck_assert_int_eq(cow_fs_open(e->path, &e->fs), 0);
}

static void env_free(struct env *e)
{
	if (e->fs)
		ck_assert_int_eq(cow_fs_close(e->fs), 0);
	tu_rmrf(e->tmp);
	free(e->tmp);
	free(e->path);
}

/* Branch NAME.  Held only for the lookup: these tests use it from one
 * thread and never after deleting it. */
static struct cow_branch *br(struct env *e, const char *name)
{
	unsigned slot;
	struct cow_branch *b = cow_fs_hold_name(e->fs, COW_REF_BRANCH, name, &slot);
	ck_assert_ptr_nonnull(b);
	cow_fs_release(e->fs, slot);
	return b;
}

static void branch_create(struct env *e, const char *name, const char *from)
{
	struct cow_ref ref = { 0 };
	snprintf(ref.name, sizeof ref.name, "%s", name);
	snprintf(ref.parent, sizeof ref.parent, "%s", from);
	ck_assert_int_eq(cow_fs_branch_create(e->fs, &ref, NULL, NULL), 0);
}

/* Write LEN bytes of seeded noise at OFF of DIR/NAME (created if needed). */
static void write_file(struct cow_branch *b, const char *name, off_t off, size_t len, uint64_t seed)
{
	struct cow_attr a;
	int r = cow_branch_lookup(b, COW_ROOT_INO, name, &a);
	if (r == -ENOENT)
		r = cow_branch_mknod(b, COW_ROOT_INO, name, S_IFREG | 0644, 0, 0, 0, &a);
	ck_assert_int_eq(r, 0);
	uint8_t *buf = malloc(len);
	tu_fill(buf, len, seed);
	ck_assert_int_eq(cow_branch_write(b, a.ino, off, len, buf), (ssize_t)len);
	cow_branch_forget(b, a.ino, 1);
	free(buf);
}

/* 0 if file NAME of state B reads as LEN bytes of SEED's noise, else the error. */
static int reads_as(struct cow_branch *b, const char *name, size_t len, uint64_t seed)
{
	struct cow_attr a;
	int r = cow_branch_lookup(b, COW_ROOT_INO, name, &a);
	if (r < 0)
		return r;
	uint8_t *want = malloc(len), *got = malloc(len);
	tu_fill(want, len, seed);
	ssize_t n = cow_branch_read(b, a.ino, 0, len, got);
	r = n < 0 ? (int)n : n != (ssize_t)len || memcmp(want, got, len) ? -EILSEQ : 0;
	cow_branch_forget(b, a.ino, 1);
	free(want);
	free(got);
	return r;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

/* A checksum of a whole branch: names, types, sizes and bytes. */
static uint64_t dump_dir(struct cow_branch *b, uint64_t ino, uint64_t h)
{
	struct cow_dirent *e;
	size_t n;
	ck_assert_int_eq(cow_branch_readdir(b, ino, &e, &n), 0);
	uint8_t *buf = malloc(MiB);
	for (size_t i = 2; i < n; i++) {
		struct cow_attr a;
		ck_assert_int_eq(cow_branch_getattr(b, e[i].ino, &a), 0);
		h = fnv(h, e[i].name, strlen(e[i].name) + 1);
		h = fnv(h, &a.mode, sizeof a.mode);
		h = fnv(h, &a.size, sizeof a.size);
		if (S_ISREG(a.mode))
			for (uint64_t off = 0; off < a.size; off += MiB) {
				ssize_t got = cow_branch_read(b, e[i].ino, off, MiB, buf);
				ck_assert_int_eq(got, (ssize_t)COW_MIN((uint64_t)MiB, a.size - off));
				h = fnv(h, buf, got);
			}
		if (S_ISDIR(a.mode))
			h = dump_dir(b, e[i].ino, h);
	}
	free(buf);
	cow_dirents_free(e, n);
	return h;
}

static uint64_t dump_all(struct env *e)
{
	struct cow_ref *refs;
	size_t n;
	ck_assert_int_eq(cow_fs_branch_list(e->fs, &refs, &n), 0);
	uint64_t sum = 0; /* in any order of the branches */
	for (size_t i = 0; i < n; i++) {
		uint64_t h = fnv(1469598103934665603ull, refs[i].name, strlen(refs[i].name) + 1);
		sum += dump_dir(br(e, refs[i].name), COW_ROOT_INO, h);
	}
	free(refs);
	return sum;
}

static const struct cow_fs_ref_usage *usage_of(const struct cow_fs_usage *u, const char *name)
{
	for (size_t i = 0; i < u->nrefs; i++)
		if (strcmp(u->refs[i].name, name) == 0)
			return &u->refs[i];
	ck_abort_msg("no ref %s in the usage", name);
	return NULL;
}

struct fsck_seen {
	int n;
	char line[8][4500];
	struct cow_fsck_problem p[8];
};

static void on_problem(void *ctx, const struct cow_fsck_problem *p)
{
	struct fsck_seen *f = ctx;
	if (f->n < 8) {
		cow_fsck_describe(p, f->line[f->n], sizeof f->line[0]);
		fprintf(stderr, "fsck: %s\n", f->line[f->n]);
		f->p[f->n] = *p;
		f->n++;
	}
}

static int fsck_problems(struct env *e, struct fsck_seen *f)
{
	memset(f, 0, sizeof *f);
	struct cow_fsck_opts o = { .problem = on_problem, .ctx = f };
	struct cow_fsck_stats st;
	ck_assert_int_eq(cow_fs_fsck(e->fs, &o, &st), 0);
	ck_assert_uint_eq(st.problems, (uint64_t)f->n);
	ck_assert_uint_gt(st.objects, 0);
	return f->n;
}

static struct cow_gc_stats gc(struct env *e, unsigned threshold)
{
	struct cow_gc_opts o = { .threshold = threshold };
	struct cow_gc_stats st;
	ck_assert_int_eq(cow_fs_gc(e->fs, &o, &st), 0);
	return st;
}

START_TEST(test_usage_own_and_shared)
{
	struct env e;
	env_new(&e);
	write_file(br(&e, "main"), "a", 0, 4 * MiB, 1);
	struct cow_fs_usage u;
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	ck_assert_uint_eq(u.nrefs, 1);
	const struct cow_fs_ref_usage *m = usage_of(&u, "main");
	ck_assert_int_eq(m->kind, COW_REF_BRANCH);
	ck_assert_uint_ge(m->own_bytes, 4 * MiB);
	ck_assert_uint_lt(m->own_bytes, 4 * MiB + 64 * 1024);
	ck_assert_uint_eq(m->logical_bytes, m->own_bytes);
	ck_assert_uint_eq(m->shared_bytes, 0);
	ck_assert_uint_ge(u.live_bytes, 4 * MiB);
	ck_assert_uint_le(u.live_bytes, u.log_bytes);
	cow_fs_usage_free(&u);

	/* a fresh child shares everything */
	branch_create(&e, "b", "main");
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	ck_assert_uint_eq(u.nrefs, 2);
	const struct cow_fs_ref_usage *b = usage_of(&u, "b");
	m = usage_of(&u, "main");
	ck_assert_uint_lt(b->own_bytes, 64 * 1024);
	ck_assert_uint_lt(m->own_bytes, 64 * 1024);
	ck_assert_uint_ge(b->shared_bytes, 4 * MiB);
	ck_assert_uint_ge(b->logical_bytes, 4 * MiB);
	cow_fs_usage_free(&u);

	/* new data on b is b's own */
	write_file(br(&e, "b"), "new", 0, 2 * MiB, 2);
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	b = usage_of(&u, "b");
	ck_assert_uint_ge(b->own_bytes, 2 * MiB);
	ck_assert_uint_lt(b->own_bytes, 2 * MiB + 64 * 1024);
	ck_assert_uint_ge(b->logical_bytes, 6 * MiB);
	ck_assert_uint_lt(usage_of(&u, "main")->own_bytes, 64 * 1024);
	cow_fs_usage_free(&u);

	/* a child of b shares b's new data too */
	branch_create(&e, "c", "b");
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	ck_assert_uint_lt(usage_of(&u, "b")->own_bytes, 64 * 1024);
	ck_assert_uint_lt(usage_of(&u, "c")->own_bytes, 64 * 1024);
	ck_assert_uint_ge(usage_of(&u, "c")->shared_bytes, 6 * MiB);
	cow_fs_usage_free(&u);

	/* identical content in two files of one branch: logical counts both, own once */
	write_file(br(&e, "main"), "copy", 0, 1 * MiB, 3);
	write_file(br(&e, "main"), "copy2", 0, 1 * MiB, 3);
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	m = usage_of(&u, "main");
	ck_assert_uint_ge(m->own_bytes, 1 * MiB);
	ck_assert_uint_lt(m->own_bytes, 1 * MiB + 64 * 1024);
	ck_assert_uint_ge(m->logical_bytes, 6 * MiB);
	uint64_t main_logical = m->logical_bytes;
	cow_fs_usage_free(&u);

	/* a branch create checkpoints its parent without writing the parent's
	 * ref: what the parent wrote just before must still count as its own */
	write_file(br(&e, "main"), "late", 0, 1 * MiB, 4);
	branch_create(&e, "d", "main");
	ck_assert_int_eq(cow_fs_usage(e.fs, &u), 0);
	ck_assert_uint_ge(usage_of(&u, "main")->logical_bytes, main_logical + MiB);
	ck_assert_uint_ge(usage_of(&u, "d")->logical_bytes, main_logical + MiB);
	cow_fs_usage_free(&u);
	env_free(&e);
}
END_TEST

START_TEST(test_gc_reclaims_and_keeps_everything_else)
{
	struct env e;
	env_new(&e);
	write_file(br(&e, "main"), "base", 0, 6 * MiB, 10);
	branch_create(&e, "keep", "main");
	write_file(br(&e, "keep"), "kept", 0, 1 * MiB, 11);
	struct cow_gc_stats st = gc(&e, 0);
	struct cow_fs_usage u0;
	ck_assert_int_eq(cow_fs_usage(e.fs, &u0), 0);
	/* a branch that rewrites most of the data, then goes */
	branch_create(&e, "x", "main");
	write_file(br(&e, "x"), "base", 0, 6 * MiB, 20);
	write_file(br(&e, "x"), "more", 0, 4 * MiB, 21);
	/* and main overwrites a part of its own data a few times */
	for (int i = 0; i < 3; i++)
		write_file(br(&e, "main"), "base", 2 * MiB, 1 * MiB, 30 + i);
	struct cow_fs_usage u1;
	ck_assert_int_eq(cow_fs_usage(e.fs, &u1), 0);
	ck_assert_uint_gt(u1.disk_bytes, u0.disk_bytes + 12 * MiB);
	ck_assert_uint_ge(usage_of(&u1, "x")->own_bytes, 10 * MiB);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "x", true, &(pid_t){ 0 }), 0);
	uint64_t before = dump_all(&e);
	st = gc(&e, 0);
	ck_assert_uint_gt(st.segments_rewritten, 0);
	/* x's 10 MiB, main's two overwritten versions (the first is keep's) */
	ck_assert_uint_ge(st.dropped_bytes, 12 * MiB);
	ck_assert_uint_lt(st.disk_after, st.disk_before);
	struct cow_fs_usage u2;
	ck_assert_int_eq(cow_fs_usage(e.fs, &u2), 0);
	/* back to about the size before x, plus main's one new MiB (the MiB it
	 * replaced is keep's) */
	ck_assert_uint_le(u2.disk_bytes, u0.disk_bytes + MiB + u0.disk_bytes / 20);
	ck_assert_uint_eq(dump_all(&e), before);
	struct fsck_seen f;
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	env_reopen(&e);
	ck_assert_uint_eq(dump_all(&e), before);
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	/* a second run finds little to do and changes nothing */
	st = gc(&e, 0);
	ck_assert_uint_eq(dump_all(&e), before);
	env_reopen(&e);
	ck_assert_uint_eq(dump_all(&e), before);
	cow_fs_usage_free(&u0);
	cow_fs_usage_free(&u1);
	cow_fs_usage_free(&u2);
	env_free(&e);
}
END_TEST

START_TEST(test_gc_auto_due)
{
	const uint64_t G = 1ull << 30, PLENTY = 100 * G;
	enum { NO = COW_GC_AUTO_NO, WAIT = COW_GC_AUTO_WAIT, RUN = COW_GC_AUTO_RUN };
	struct cow_gc_auto a;
	/* at the mount nothing is known of the live data: the minimum decides */
	cow_gc_auto_init(&a, 100, 50, G, 64 * MiB);
	ck_assert_int_eq(cow_gc_auto_due(&a, 64 * MiB, PLENTY, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 64 * MiB + G - 1, PLENTY, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 64 * MiB + G, PLENTY, false, 0), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 0, PLENTY, false, 0), NO); /* smaller than at the mount (a gc by hand) */
	/* after a run that found 3 GiB live and left 4 GiB: due at 3 GiB more */
	struct cow_gc_stats st = { .disk_after = 4 * G, .live_bytes = 3 * G };
	cow_gc_auto_ran(&a, &st);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 2 * G, PLENTY, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 7 * G - 1, PLENTY, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 7 * G, PLENTY, false, 50), RUN);
	/* busier than 50 %: it waits, until twice the growth (6 GiB) */
	ck_assert_int_eq(cow_gc_auto_due(&a, 7 * G, PLENTY, false, 51), WAIT);
	ck_assert_int_eq(cow_gc_auto_due(&a, 10 * G - 1, PLENTY, false, 100), WAIT);
	ck_assert_int_eq(cow_gc_auto_due(&a, 10 * G, PLENTY, false, 100), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 2 * G, PLENTY, false, 100), NO);
	/* a share of the live data below the minimum: the minimum, and twice it */
	cow_gc_auto_init(&a, 10, 50, G, 0);
	st = (struct cow_gc_stats){ .disk_after = 2 * G, .live_bytes = 2 * G };
	cow_gc_auto_ran(&a, &st);
	ck_assert_int_eq(cow_gc_auto_due(&a, 2 * G + G / 5, PLENTY, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 3 * G, PLENTY, false, 0), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G - 1, PLENTY, false, 90), WAIT);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G, PLENTY, false, 90), RUN);
	/* short of free space: as soon as a segment may be freed, however busy */
	cow_gc_auto_init(&a, 100, 50, G, 4 * G);
	st = (struct cow_gc_stats){ .disk_after = 4 * G, .live_bytes = 3 * G };
	cow_gc_auto_ran(&a, &st);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 63 * MiB, COW_GC_AUTO_LOW_FREE - 1, false, 0), NO);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 64 * MiB, COW_GC_AUTO_LOW_FREE - 1, false, 100), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 64 * MiB, COW_GC_AUTO_LOW_FREE, false, 0), NO);
	/* old segments to move on: at once, however busy, and with no growth
	 * at all (early reclaim may keep the store's size flat while the log
	 * advances) */
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G + 64 * MiB, PLENTY, true, 100), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 4 * G, PLENTY, true, 100), RUN);
	ck_assert_int_eq(cow_gc_auto_due(&a, 2 * G, PLENTY, true, 0), RUN);
	/* busy limit 100: never waits */
	cow_gc_auto_init(&a, 100, 100, G, 0);
	ck_assert_int_eq(cow_gc_auto_due(&a, G, PLENTY, false, 100), RUN);
	/* 0: never, even short of space or with old segments */
	cow_gc_auto_init(&a, 0, 50, G, 0);
	ck_assert_int_eq(cow_gc_auto_due(&a, 100 * G, 0, true, 0), NO);
}
END_TEST

/* The cleaner's baseline outlives the mount: what a run found is kept in
 * STORE/gc.base and read at the next start, so that growth counts from the
 * last collection and not from the last mount; a start with none kept
 * keeps its own; a garbled file is refused and replaced. */
START_TEST(test_gc_auto_baseline_kept)
{
	struct env e;
	env_new(&e);
	char path[4096];
	snprintf(path, sizeof path, "%s/gc.base", e.path);
	struct cow_gc_auto a;
	cow_gc_auto_init(&a, 100, 50, 1ull << 30, 7);
	ck_assert_int_eq(cow_gc_auto_load(&a, e.path), -ENOENT);
	ck_assert_uint_eq(a.base_disk, 7);
	write_file(br(&e, "main"), "a", 0, 4 * MiB, 1);
	struct cow_gc_opts o = { .no_slack = true };
	struct cow_gc_stats st;
	ck_assert_int_eq(cow_fs_gc(e.fs, &o, &st), 0);
	env_reopen(&e);
	ck_assert_int_eq(cow_gc_auto_load(&a, e.path), 0);
	ck_assert_uint_eq(a.base_disk, st.disk_after);
	ck_assert_uint_eq(a.base_live, st.live_bytes);
	ck_assert_uint_ge(a.base_live, 4 * MiB);
	/* none kept: the start keeps the segment files' size at that moment */
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(cow_fs_start_cleaner(e.fs, 0, 50), 0);
	a = (struct cow_gc_auto){ 0 };
	ck_assert_int_eq(cow_gc_auto_load(&a, e.path), 0);
	ck_assert_uint_ge(a.base_disk, 4 * MiB);
	ck_assert_uint_eq(a.base_live, 0);
	/* garbled, or of another version: refused, A untouched; a start replaces it */
	static const char *const bad[] = {
		"{\"version\": 1, \"disk_bytes\": -5, \"live_bytes\": 0}",
		"{\"version\": 2, \"disk_bytes\": 5, \"live_bytes\": 0}",
		"{\"version\": 1, \"disk_bytes\": 5}",
		"not json",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		ck_assert_int_eq(cow_write_file_durable(e.path, "gc.base", bad[i], strlen(bad[i])), 0);
		struct cow_gc_auto c = { .base_disk = 3, .base_live = 2 };
		ck_assert_int_eq(cow_gc_auto_load(&c, e.path), -EBADMSG);
		ck_assert_uint_eq(c.base_disk, 3);
		ck_assert_uint_eq(c.base_live, 2);
	}
	ck_assert_int_eq(cow_fs_start_cleaner(e.fs, 0, 50), 0);
	ck_assert_int_eq(cow_gc_auto_load(&a, e.path), 0);
	ck_assert_uint_ge(a.base_disk, 4 * MiB);
	env_free(&e);
}
END_TEST

START_TEST(test_gc_no_slack)
{
	/* A segment three quarters live: a run by hand rewrites it (the
	 * garbage left would be more than COW_GC_SLACK_PCT % of the live
	 * data); the daemon's own runs (no_slack) leave it, since copying
	 * three bytes to free one is not worth it. */
	struct env e;
	env_new(&e);
	write_file(br(&e, "main"), "a", 0, 36 * MiB, 1);
	write_file(br(&e, "main"), "a", 0, 12 * MiB, 2);
	uint64_t before = dump_all(&e);
	struct cow_gc_opts o = { .no_slack = true };
	struct cow_gc_stats st;
	ck_assert_int_eq(cow_fs_gc(e.fs, &o, &st), 0);
	ck_assert_uint_eq(st.segments_rewritten, 0);
	ck_assert_uint_eq(st.moved_bytes, 0);
	ck_assert_uint_eq(dump_all(&e), before);
	st = gc(&e, 0);
	ck_assert_uint_ge(st.segments_rewritten, 1);
	ck_assert_uint_ge(st.dropped_bytes, 12 * MiB);
	ck_assert_uint_eq(dump_all(&e), before);
	env_reopen(&e);
	ck_assert_uint_eq(dump_all(&e), before);
	env_free(&e);
}
END_TEST

/* ---- GC with writers and readers at work ------------------------------ */

struct worker {
	struct env *e;
	volatile bool stop;
	int rounds;
	uint64_t seed[64];       /* the seed last written to each MiB of "hot" */
	int errors;
};

static void *writer(void *a)
{
	struct worker *w = a;
	struct cow_branch *b = br(w->e, "main");
	for (int i = 0; !w->stop || i < 8; i++) {
		int at = (i * 7) % 16;
		/* half the writes bring back content that exists in old segments */
		uint64_t seed = i % 2 ? 1000 + (uint64_t)(i % 5) : 5000 + (uint64_t)i;
		write_file(b, "hot", (off_t)at * MiB, MiB, seed);
		w->seed[at] = seed;
		__atomic_add_fetch(&w->rounds, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *reader_thread(void *a)
{
	struct worker *w = a;
	struct cow_branch *b = br(w->e, "keep");
	while (!w->stop)
		if (reads_as(b, "cold", MiB, 77) != 0)
			w->errors++;
	return NULL;
}

START_TEST(test_gc_online_loses_nothing)
{
	struct env e;
	env_new(&e);
	for (int i = 0; i < 16; i++)
		write_file(br(&e, "main"), "hot", (off_t)i * MiB, MiB, 1000 + (uint64_t)(i % 5));
	branch_create(&e, "keep", "main");
	write_file(br(&e, "keep"), "cold", 0, MiB, 77);
	branch_create(&e, "gone", "main");
	write_file(br(&e, "gone"), "junk", 0, 8 * MiB, 78);
	gc(&e, 0);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "gone", true, &(pid_t){ 0 }), 0);
	struct worker w = { .e = &e };
	for (int i = 0; i < 16; i++)
		w.seed[i] = 1000 + (uint64_t)(i % 5);
	pthread_t tw, tr;
	pthread_create(&tw, NULL, writer, &w);
	pthread_create(&tr, NULL, reader_thread, &w);
	/* GC runs over and over while the writer writes */
	int runs = 0;
	while (runs < 3 || __atomic_load_n(&w.rounds, __ATOMIC_RELAXED) < 24) {
		gc(&e, 100);
		runs++;
	}
	w.stop = true;
	pthread_join(tw, NULL);
	pthread_join(tr, NULL);
	ck_assert_int_eq(w.errors, 0);
	uint8_t *buf = malloc(MiB), *want = malloc(MiB);
	for (int round = 0; round < 2; round++) {
		struct cow_branch *b = br(&e, "main");
		struct cow_attr at;
		ck_assert_int_eq(cow_branch_lookup(b, COW_ROOT_INO, "hot", &at), 0);
		for (int i = 0; i < 16; i++) {
			tu_fill(want, MiB, w.seed[i]);
			ck_assert_int_eq(cow_branch_read(b, at.ino, (off_t)i * MiB, MiB, buf), (ssize_t)MiB);
			ck_assert_msg(memcmp(buf, want, MiB) == 0, "MiB %d of main/hot differs (round %d)", i, round);
		}
		cow_branch_forget(b, at.ino, 1);
		gc(&e, 100);
		env_reopen(&e);
	}
	struct fsck_seen f;
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	free(buf);
	free(want);
	env_free(&e);
}
END_TEST

/* ---- crashes ----------------------------------------------------------- */

START_TEST(test_gc_crash_at_every_sync)
{
	struct env e;
	env_new(&e);
	write_file(br(&e, "main"), "base", 0, 3 * MiB, 40);
	branch_create(&e, "a", "main");
	write_file(br(&e, "a"), "mine", 0, 2 * MiB, 41);
	gc(&e, 0);
	branch_create(&e, "x", "main");
	write_file(br(&e, "x"), "base", MiB, 2 * MiB, 42);
	write_file(br(&e, "a"), "base", 0, MiB, 43);
	gc(&e, 0);
	write_file(br(&e, "main"), "base", 0, MiB, 44);
	gc(&e, 0);
	/* a relocation bigger than a batch, and several sparse segments */
	branch_create(&e, "y", "a");
	write_file(br(&e, "y"), "big", 0, 3 * MiB, 45);
	gc(&e, 0);
	write_file(br(&e, "y"), "big", MiB, MiB, 46);
	write_file(br(&e, "main"), "base", 2 * MiB, MiB, 47);
	ck_assert_int_eq(cow_fs_branch_delete(e.fs, "x", true, &(pid_t){ 0 }), 0);
	uint64_t want = dump_all(&e);
	ck_assert_int_eq(cow_fs_close(e.fs), 0);
	ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
	ck_assert_uint_eq(dump_all(&e), want);
	ck_assert_int_eq(cow_fs_close(e.fs), 0);
	e.fs = NULL;
	int completed = 0;
	for (int k = 1; k < 200 && !completed; k++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			crashio_reset();
			crashio_crash_at = k; /* writes not yet covered by a sync turn to garbage there */
			cow_io_set(&cow_powercut_io);
			struct cow_fs *fs;
			if (cow_fs_open(e.path, &fs) < 0)
				_exit(6);
			struct cow_gc_opts o = { .threshold = 100 };
			struct cow_gc_stats st;
			if (cow_fs_gc(fs, &o, &st) < 0)
				_exit(7);
			/* the run ended before the crash: no close (the crash would
			 * come in its syncs), just stop */
			_exit(3);
		}
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert(WIFEXITED(status));
		ck_assert_msg(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3, "child exit %d at sync %d",
			      WEXITSTATUS(status), k);
		completed = WEXITSTATUS(status) == 3;
		fprintf(stderr, "crash test: sync %d: %s\n", k, completed ? "gc completed" : "crashed");
		ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
		ck_assert_msg(dump_all(&e) == want, "branches differ after a crash at sync %d", k);
		ck_assert_int_eq(cow_fs_close(e.fs), 0);
		e.fs = NULL;
	}
	ck_assert(completed);
	ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
	struct fsck_seen f;
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	gc(&e, 100);
	ck_assert_uint_eq(dump_all(&e), want);
	env_free(&e);
}
END_TEST

/* ---- fsck -------------------------------------------------------------- */

/* The offset in a segment file of the first 8 KiB block holding NEEDLE. */
static off_t find_in_segments(const char *store, const uint8_t *needle, size_t n, unsigned *ret_seg)
{
	for (unsigned seg = 1; seg < 64; seg++) {
		char path[600];
		tu_seg_path(store, seg, path, sizeof path);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		struct stat st;
		fstat(fd, &st);
		uint8_t *buf = malloc(st.st_size);
		ck_assert_int_eq(pread(fd, buf, st.st_size, 0), st.st_size);
		close(fd);
		uint8_t *hit = memmem(buf, st.st_size, needle, n);
		off_t off = hit ? hit - buf : -1;
		free(buf);
		if (hit) {
			*ret_seg = seg;
			return off;
		}
	}
	return -1;
}

START_TEST(test_fsck_names_branch_and_file)
{
	struct env e;
	env_new(&e);
	struct cow_branch *m = br(&e, "main");
	struct cow_attr d;
	ck_assert_int_eq(cow_branch_mknod(m, COW_ROOT_INO, "dir", S_IFDIR | 0755, 0, 0, 0, &d), 0);
	cow_branch_forget(m, d.ino, 1);
	write_file(m, "other", 0, 3 * 8192, 50);
	/* dir/victim: blocks 0..4, block 3 is the one to damage */
	struct cow_attr v;
	ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "dir", &d), 0);
	ck_assert_int_eq(cow_branch_mknod(m, d.ino, "victim", S_IFREG | 0600, 0, 0, 0, &v), 0);
	uint8_t *buf = malloc(5 * 8192);
	tu_fill(buf, 5 * 8192, 51);
	ck_assert_int_eq(cow_branch_write(m, v.ino, 0, 5 * 8192, buf), 5 * 8192);
	cow_branch_forget(m, v.ino, 1);
	cow_branch_forget(m, d.ino, 1);
	branch_create(&e, "child", "main");
	struct fsck_seen f;
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	ck_assert_int_eq(cow_fs_close(e.fs), 0);
	e.fs = NULL;
	unsigned seg;
	off_t off = find_in_segments(e.path, buf + 3 * 8192, 64, &seg);
	ck_assert_int_gt(off, 0);
	char path[600];
	tu_seg_path(e.path, seg, path, sizeof path);
	tu_flip_byte(path, off + 100);
	ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
	ck_assert_int_eq(fsck_problems(&e, &f), 2);
	for (int i = 0; i < 2; i++) {
		ck_assert_str_eq(f.p[i].kind, "branch");
		ck_assert_str_eq(f.p[i].object, "data block");
		ck_assert_int_eq(f.p[i].block, 3);
		ck_assert_uint_eq(COW_LOG_POS_SEG(f.p[i].pos), seg);
		ck_assert_msg(strstr(f.line[i], "/dir/victim (inode ") != NULL, "no path in: %s", f.line[i]);
		ck_assert_msg(strstr(f.line[i], "block 3:") != NULL, "no block in: %s", f.line[i]);
	}
	ck_assert(strstr(f.line[0], "branch main:") || strstr(f.line[1], "branch main:"));
	ck_assert(strstr(f.line[0], "branch child:") || strstr(f.line[1], "branch child:"));
	/* GC goes on around it, and keeps the segment with the evidence */
	struct cow_gc_stats st = gc(&e, 100);
	ck_assert_uint_eq(st.damaged, 1);
	ck_assert_uint_ge(st.segments_kept_damaged, 1);
	ck_assert_uint_eq(st.damaged_moved, 0);
	ck_assert_int_eq(fsck_problems(&e, &f), 2);
	/* ... until the log must roll on past it (a window of 16 segments:
	 * old at 8 behind the head, appends refused at 14): then the object
	 * moves as it is, the segment goes, and reads of it still fail */
	ck_assert_int_eq(cow_fs_close(e.fs), 0);
	setenv("COWFS_TEST_LOG_WINDOW", "16", 1);
	ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
	unsetenv("COWFS_TEST_LOG_WINDOW"); /* read at open only */
	uint64_t moved = 0;
	int rounds = 0;
	for (; rounds < 40; rounds++) {
		write_file(br(&e, "main"), "churn", 0, 8192, 60 + rounds);
		st = gc(&e, 100);
		moved += st.damaged_moved;
		if (moved && rounds >= 30)
			break;
	}
	ck_assert_uint_eq(moved, 1);
	ck_assert_int_eq(access(path, F_OK), -1); /* the damaged segment is gone */
	for (int pass = 0; pass < 2; pass++) { /* and after a remount, whose scan finds its record sound */
		ck_assert_int_eq(fsck_problems(&e, &f), 2);
		m = br(&e, "main");
		ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "dir", &d), 0);
		ck_assert_int_eq(cow_branch_lookup(m, d.ino, "victim", &v), 0);
		ck_assert_int_eq(cow_branch_read(m, v.ino, 3 * 8192, 8192, buf), -EIO);
		ck_assert_int_eq(cow_branch_read(m, v.ino, 2 * 8192, 8192, buf), 8192);
		cow_branch_forget(m, v.ino, 1);
		cow_branch_forget(m, d.ino, 1);
		ck_assert_int_eq(cow_fs_close(e.fs), 0);
		ck_assert_int_eq(cow_fs_open(e.path, &e.fs), 0);
	}
	/* once no ref reaches it, it is garbage like any other block */
	struct cow_branch *c = br(&e, "child");
	ck_assert_int_eq(cow_branch_lookup(c, COW_ROOT_INO, "dir", &d), 0);
	ck_assert_int_eq(cow_branch_unlink(c, d.ino, "victim"), 0);
	cow_branch_forget(c, d.ino, 1);
	m = br(&e, "main");
	ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "dir", &d), 0);
	ck_assert_int_eq(cow_branch_unlink(m, d.ino, "victim"), 0);
	cow_branch_forget(m, d.ino, 1);
	st = gc(&e, 100);
	ck_assert_uint_eq(st.segments_kept_damaged, 0);
	ck_assert_int_eq(fsck_problems(&e, &f), 0);
	free(buf);
	env_free(&e);
}
END_TEST

/* ---- early reclaim ----------------------------------------------------- */

START_TEST(test_reclaim_overwritten_blocks)
{
	struct env e;
	env_new(&e);
	cow_fs_set_reclaim(e.fs, true);
	/* main's "wal", 4 MiB, written 48 times over (192 MiB, three segments
	 * and more); a snapshot after the 8th version; "kept" is a copy of the
	 * 21st version, stored once (dedup) */
	for (int v = 0; v < 48; v++) {
		write_file(br(&e, "main"), "wal", 0, 4 * MiB, 100 + v);
		ck_assert_int_eq(cow_fs_sync(e.fs), 0);
		if (v == 7) {
			struct cow_ref ref = { .name = "s8" };
			ck_assert_int_eq(cow_fs_snapshot_create(e.fs, "main", &ref, NULL, NULL), 0);
		}
		if (v == 20)
			write_file(br(&e, "main"), "kept", 0, 4 * MiB, 100 + v);
	}
	struct cow_fs_reclaim_stats rs;
	ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
	/* versions 8..46 were replaced after the snapshot; the 21st is kept's too */
	ck_assert_uint_eq(rs.forgotten_objects, (47 - 8 - 1) * 512);
	ck_assert_uint_eq(rs.forgotten_bytes, rs.forgotten_objects * 8192);
	ck_assert_uint_ge(rs.segments_cleaned, 1);
	ck_assert_uint_lt(rs.disk_after + 64 * MiB, rs.disk_before);
	/* nothing more to forget; what each ref holds reads, also after a reopen */
	ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
	ck_assert_uint_eq(rs.forgotten_objects, 0);
	for (int pass = 0; pass < 2; pass++) {
		ck_assert_int_eq(reads_as(br(&e, "main"), "wal", 4 * MiB, 100 + 47), 0);
		ck_assert_int_eq(reads_as(br(&e, "main"), "kept", 4 * MiB, 100 + 20), 0);
		unsigned slot;
		struct cow_branch *snap = cow_fs_hold_name(e.fs, COW_REF_SNAPSHOT, "s8", &slot);
		ck_assert_ptr_nonnull(snap);
		ck_assert_int_eq(reads_as(snap, "wal", 4 * MiB, 100 + 7), 0);
		cow_fs_release(e.fs, slot);
		struct fsck_seen f;
		ck_assert_int_eq(fsck_problems(&e, &f), 0);
		env_reopen(&e);
	}
	env_free(&e);
}
END_TEST

/* Truncating a file, and freeing one (unlinked, and nothing holds it),
 * nominates the blocks they drop, as an overwrite does; a file unlinked
 * while open keeps its blocks until it is let go. */
START_TEST(test_reclaim_truncated_and_freed_blocks)
{
	struct env e;
	env_new(&e);
	cow_fs_set_reclaim(e.fs, true);
	struct cow_branch *m = br(&e, "main");
	write_file(m, "t", 0, 4 * MiB, 400);
	write_file(m, "u", 0, 4 * MiB, 401);
	write_file(m, "open", 0, MiB, 402);
	struct cow_attr t, o, out;
	ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "t", &t), 0);
	struct cow_attr sz = { .size = MiB + 100 };
	ck_assert_int_eq(cow_branch_setattr(m, t.ino, &sz, COW_SET_SIZE, &out), 0);
	cow_branch_forget(m, t.ino, 1);
	ck_assert_int_eq(cow_branch_unlink(m, COW_ROOT_INO, "u"), 0);
	ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "open", &o), 0); /* held, as by an open file */
	ck_assert_int_eq(cow_branch_unlink(m, COW_ROOT_INO, "open"), 0);
	ck_assert_int_eq(cow_fs_sync(e.fs), 0);
	struct cow_fs_reclaim_stats rs;
	ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
	/* t: blocks 129..511 dropped and block 128 rewritten with a zero
	 * tail; u: all 512 of its blocks; open: none yet */
	ck_assert_uint_eq(rs.forgotten_objects, 383 + 1 + 512);
	uint8_t *want = malloc(MiB + 8192), *got = malloc(MiB);
	tu_fill(want, MiB, 402);
	ck_assert_int_eq(cow_branch_read(m, o.ino, 0, MiB, got), (ssize_t)MiB);
	ck_assert(memcmp(want, got, MiB) == 0);
	cow_branch_forget(m, o.ino, 1); /* let go: freed now */
	ck_assert_int_eq(cow_fs_sync(e.fs), 0);
	ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
	ck_assert_uint_eq(rs.forgotten_objects, 128);
	for (int pass = 0; pass < 2; pass++) { /* and after a reopen */
		m = br(&e, "main");
		ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "t", &t), 0);
		ck_assert_uint_eq(t.size, MiB + 100);
		tu_fill(want, MiB, 400);
		ck_assert_int_eq(cow_branch_read(m, t.ino, 0, MiB, got), (ssize_t)MiB);
		ck_assert(memcmp(want, got, MiB) == 0);
		uint8_t tail[200];
		ck_assert_int_eq(cow_branch_read(m, t.ino, MiB, sizeof tail, tail), 100);
		tu_fill(want, MiB + 8192, 400);
		ck_assert(memcmp(want + MiB, tail, 100) == 0);
		cow_branch_forget(m, t.ino, 1);
		ck_assert_int_eq(cow_branch_lookup(m, COW_ROOT_INO, "u", &out), -ENOENT);
		struct fsck_seen f;
		ck_assert_int_eq(fsck_problems(&e, &f), 0);
		env_reopen(&e);
	}
	free(want);
	free(got);
	env_free(&e);
}
END_TEST

/* A mostly forgotten segment that holds a damaged block still in use is
 * kept, the evidence in place, and not tried again at every look (each try
 * is a checkpoint of every branch and a mark pass) until it is old. */
START_TEST(test_reclaim_leaves_a_kept_segment_be)
{
	struct env e;
	env_new(&e);
	cow_fs_set_reclaim(e.fs, true);
	uint8_t *victim = malloc(5 * 8192);
	tu_fill(victim, 5 * 8192, 51);
	write_file(br(&e, "main"), "victim", 0, 5 * 8192, 51);
	/* 80 MiB written in place over 4 MiB: segment 1 is then all old
	 * versions but the victim's blocks */
	for (int v = 0; v < 20; v++) {
		write_file(br(&e, "main"), "wal", 0, 4 * MiB, 200 + v);
		ck_assert_int_eq(cow_fs_sync(e.fs), 0);
	}
	unsigned seg;
	off_t off = find_in_segments(e.path, victim + 3 * 8192, 64, &seg);
	ck_assert_int_gt(off, 0);
	ck_assert_uint_eq(seg, 1);
	char path[600];
	tu_seg_path(e.path, seg, path, sizeof path);
	tu_flip_byte(path, off + 100);
	struct cow_fs_reclaim_stats rs;
	ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
	ck_assert_uint_ge(rs.segments_tried, 1);
	ck_assert_uint_eq(rs.segments_kept, 1);
	ck_assert_int_eq(access(path, F_OK), 0); /* the evidence stays */
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(cow_fs_reclaim(e.fs, &rs), 0);
		ck_assert_uint_eq(rs.segments_tried, 0);
	}
	ck_assert_int_eq(reads_as(br(&e, "main"), "wal", 4 * MiB, 219), 0);
	struct fsck_seen f;
	ck_assert_int_eq(fsck_problems(&e, &f), 1); /* the victim's block 3, and nothing else */
	free(victim);
	env_free(&e);
}
END_TEST

/* The child of the cleaner's crash test: in the store at PATH, write "wal"
 * over in place (a branch's candidates live in the process that wrote),
 * sync, then let the cleaner run with the power failing at its K-th sync
 * (never if K is 0), or else just after it ends.  Exits 0 if the power
 * failed inside the run, 3 if the run ended having cleaned a segment. */
static void reclaim_child(const char *path, int k)
{
	crashio_reset();
	cow_io_set(&cow_powercut_io);
	struct cow_fs *fs;
	if (cow_fs_open(path, &fs) < 0)
		_exit(6);
	cow_fs_set_reclaim(fs, true);
	unsigned slot;
	struct cow_branch *b = cow_fs_hold_name(fs, COW_REF_BRANCH, "main", &slot);
	struct cow_attr a;
	uint8_t *buf = malloc(4 * MiB);
	if (!b || !buf || cow_branch_lookup(b, COW_ROOT_INO, "wal", &a) < 0)
		_exit(7);
	for (uint64_t v = 0; v < 20; v++) {
		tu_fill(buf, 4 * MiB, 300 + v);
		if (cow_branch_write(b, a.ino, 0, 4 * MiB, buf) != (ssize_t)(4 * MiB))
			_exit(7);
	}
	cow_branch_forget(b, a.ino, 1);
	cow_fs_release(fs, slot);
	/* durable, but replay still starts at the last checkpoint: the
	 * cleaner must checkpoint before it drops those records */
	if (cow_fs_sync(fs) < 0)
		_exit(7);
	if (k)
		crashio_crash_at = __atomic_load_n(&crashio_syncs, __ATOMIC_RELAXED) + k;
	struct cow_fs_reclaim_stats rs;
	if (cow_fs_reclaim(fs, &rs) < 0)
		_exit(8);
	/* and the power fails right after it, before anything else syncs */
	if (crashio_garble() < 0)
		_exit(5);
	_exit(rs.segments_cleaned ? 3 : 9);
}

/* Each run starts from a copy of the same store at WORK; the child's exit. */
static int reclaim_run(const char *base, const char *work, int k)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", work, base, work);
	ck_assert_int_eq(system(cmd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		reclaim_child(work, k);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* The cleaner's run (checkpoints, moves, syncs, drops) with the power
 * failing at each of its syncs in turn: every branch reads what was
 * durable before it began. */
START_TEST(test_reclaim_crash_at_every_sync)
{
	struct env e;
	env_new(&e);
	write_file(br(&e, "main"), "keep", 0, 2 * MiB, 30);
	write_file(br(&e, "main"), "wal", 0, 4 * MiB, 31);
	branch_create(&e, "side", "main");
	write_file(br(&e, "side"), "own", 0, MiB, 32);
	ck_assert_int_eq(cow_fs_close(e.fs), 0);
	e.fs = NULL;
	struct env w = { .path = malloc(strlen(e.path) + 8) };
	sprintf(w.path, "%s.work", e.path);
	/* what the writes leave, the cleaner run to its end */
	ck_assert_int_eq(reclaim_run(e.path, w.path, 0), 3);
	ck_assert_int_eq(cow_fs_open(w.path, &w.fs), 0);
	uint64_t want = dump_all(&w);
	ck_assert_int_eq(reads_as(br(&w, "main"), "wal", 4 * MiB, 319), 0);
	ck_assert_int_eq(cow_fs_close(w.fs), 0);
	int completed = 0;
	for (int k = 1; k < 100 && !completed; k++) {
		int x = reclaim_run(e.path, w.path, k);
		ck_assert_msg(x == 0 || x == 3, "child exit %d at sync %d", x, k);
		completed = x == 3;
		fprintf(stderr, "reclaim crash test: sync %d: %s\n", k, completed ? "cleaner completed" : "crashed");
		ck_assert_int_eq(cow_fs_open(w.path, &w.fs), 0);
		ck_assert_msg(dump_all(&w) == want, "branches differ after a crash at the cleaner's sync %d", k);
		struct fsck_seen f;
		ck_assert_msg(fsck_problems(&w, &f) == 0, "fsck after a crash at the cleaner's sync %d", k);
		ck_assert_int_eq(cow_fs_close(w.fs), 0);
	}
	ck_assert(completed);
	free(w.path);
	env_free(&e);
}
END_TEST

/* ---- blocks stored before the writer's lock ----------------------------- */

struct early_write {
	struct cow_branch *b;
	uint64_t ino;
	uint8_t *buf;
	ssize_t ret;
};

static void *early_writer(void *a)
{
	struct early_write *w = a;
	w->ret = cow_branch_write(w->b, w->ino, 0, MiB, w->buf);
	return NULL;
}

/* A write stores its whole blocks before it takes the branch lock.  A GC pass
 * that begins in between and checkpoints the branch before the write names
 * them took its roots without them, and their put marked nothing: the sweep
 * must still keep them (cow_store_pass_token, cow_store_hold).  Driven step
 * by step: the test holds the branch's lock while the pass begins. */
START_TEST(test_gc_keeps_blocks_stored_before_the_lock)
{
	char *tmp, *path = tu_store_path(&tmp);
	struct cow_store *s;
	struct cow_branch *b, *o;
	ck_assert_int_eq(cow_store_create(path), 0);
	ck_assert_int_eq(cow_store_open(path, &s), 0);
	ck_assert_int_eq(cow_branch_open(s, 1, &cow_hash_zero, cow_store_log_end(s), &b), 0);
	ck_assert_int_eq(cow_branch_init_root(b, 0700, 0, 0), 0);
	ck_assert_int_eq(cow_branch_open(s, 2, &cow_hash_zero, cow_store_log_end(s), &o), 0);
	ck_assert_int_eq(cow_branch_init_root(o, 0700, 0, 0), 0);
	write_file(b, "f", 0, MiB, 1);
	struct cow_attr a;
	ck_assert_int_eq(cow_branch_lookup(b, COW_ROOT_INO, "f", &a), 0);

	/* the write stores its blocks, then waits for the lock the test holds */
	struct early_write w = { .b = b, .ino = a.ino, .buf = malloc(MiB) };
	tu_fill(w.buf, MiB, 2);
	struct cow_store_stats st0, st1;
	cow_store_get_stats(s, &st0);
	cow_branch_freeze(b);
	pthread_t t;
	pthread_create(&t, NULL, early_writer, &w);
	do {
		usleep(1000);
		cow_store_get_stats(s, &st1);
	} while (st1.puts < st0.puts + MiB / COW_BLOCK_SIZE);

	/* garbage enough, in another branch, that the log rolls past them and
	 * their segment is worth rewriting */
	for (uint64_t v = 0; v < 9; v++)
		write_file(o, "x", 0, 8 * MiB, 100 + v);
	struct cow_gc *g;
	struct cow_gc_opts opts = { .threshold = 50, .no_slack = true };
	ck_assert_int_eq(cow_gc_begin(s, &opts, &g), 0);
	struct cow_gc_root roots[2] = { 0 };
	uint64_t pos_b, pos_o;
	ck_assert_int_eq(cow_branch_checkpoint_frozen(b, &roots[0].root, &pos_b), 0);
	ck_assert_int_eq(cow_branch_checkpoint(o, &roots[1].root, &pos_o), 0);
	ck_assert_uint_gt(COW_LOG_POS_SEG(COW_MIN(pos_b, pos_o)), 1);
	cow_branch_thaw(b); /* the write names its blocks after the checkpoint */
	pthread_join(t, NULL);
	ck_assert_int_eq(w.ret, (ssize_t)MiB);
	ck_assert_int_eq(cow_gc_mark(g, roots, 2), 0);
	ck_assert_int_eq(cow_gc_sweep(g, COW_MIN(pos_b, pos_o)), 0);
	struct cow_gc_stats st;
	cow_gc_end(g, &st);
	ck_assert_uint_ge(st.segments_rewritten, 1); /* segment 1, where the write's blocks went */

	ck_assert_int_eq(reads_as(b, "f", MiB, 2), 0);
	ck_assert_int_eq(reads_as(o, "x", 8 * MiB, 108), 0);
	cow_branch_forget(b, a.ino, 1);
	free(w.buf);
	cow_branch_free(b);
	cow_branch_free(o);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gc");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_usage_own_and_shared);
	tcase_add_test(tc, test_gc_reclaims_and_keeps_everything_else);
	tcase_add_test(tc, test_reclaim_overwritten_blocks);
	tcase_add_test(tc, test_reclaim_truncated_and_freed_blocks);
	tcase_add_test(tc, test_reclaim_leaves_a_kept_segment_be);
	tcase_add_test(tc, test_reclaim_crash_at_every_sync);
	tcase_add_test(tc, test_gc_online_loses_nothing);
	tcase_add_test(tc, test_gc_keeps_blocks_stored_before_the_lock);
	tcase_add_test(tc, test_gc_crash_at_every_sync);
	tcase_add_test(tc, test_fsck_names_branch_and_file);
	tcase_add_test(tc, test_gc_auto_due);
	tcase_add_test(tc, test_gc_auto_baseline_kept);
	tcase_add_test(tc, test_gc_no_slack);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
