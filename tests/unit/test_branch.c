/* Unit tests of a branch without a mount: POSIX operations, and the crash
 * property: a branch reopened from an old root by replaying the log equals
 * the branch that was live (same tree, same bytes), with or without a
 * checkpoint in between. */
#include <dirent.h>
#include <linux/falloc.h>
#include <stdio.h>

#include "branch.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

struct env {
	char *tmp, *path;
	struct cow_store *s;
	cow_hash root0;
	uint64_t pos0;
};

static struct cow_branch *env_new(struct env *e)
{
	e->path = tu_store_path(&e->tmp);
	ck_assert_int_eq(cow_store_create(e->path), 0);
	ck_assert_int_eq(cow_store_open(e->path, &e->s), 0);
	struct cow_branch *b;
	e->pos0 = cow_store_log_end(e->s);
	e->root0 = cow_hash_zero;
	ck_assert_int_eq(cow_branch_open(e->s, 7, &e->root0, e->pos0, &b), 0);
	ck_assert_int_eq(cow_branch_init_root(b, 0755, 0, 0), 0);
	return b;
}

static void env_free(struct env *e)
{
	cow_store_close(e->s);
	tu_rmrf(e->tmp);
	free(e->tmp);
	free(e->path);
}

/* A canonical dump of a whole branch: paths, types, modes, sizes, link
 * counts and a checksum of every file's bytes. */
static void dump_dir(struct cow_branch *b, uint64_t ino, const char *prefix, FILE *out)
{
	struct cow_dirent *e;
	size_t n;
	ck_assert_int_eq(cow_branch_readdir(b, ino, &e, &n), 0);
	for (size_t i = 2; i < n; i++) {
		struct cow_attr a;
		ck_assert_int_eq(cow_branch_getattr(b, e[i].ino, &a), 0);
		char path[1024];
		snprintf(path, sizeof path, "%s/%s", prefix, e[i].name);
		uint64_t sum = 1469598103934665603ull;
		if (S_ISREG(a.mode) && a.size) {
			/* checksum each data extent with its offset; holes are zeros */
			uint8_t *buf = malloc(1 << 20);
			off_t at = 0, data, hole;
			while (cow_branch_lseek(b, e[i].ino, at, SEEK_DATA, &data) == 0) {
				ck_assert_int_eq(cow_branch_lseek(b, e[i].ino, data, SEEK_HOLE, &hole), 0);
				sum = (sum ^ (uint64_t)data) * 1099511628211ull;
				for (off_t p = data; p < hole; p += 1 << 20) {
					size_t len = (size_t)COW_MIN((off_t)1 << 20, hole - p);
					ck_assert_int_eq(cow_branch_read(b, e[i].ino, p, len, buf), (ssize_t)len);
					for (size_t k = 0; k < len; k++)
						sum = (sum ^ buf[k]) * 1099511628211ull;
				}
				at = hole;
			}
			free(buf);
		}
		char *target = NULL;
		if (S_ISLNK(a.mode))
			ck_assert_int_eq(cow_branch_readlink(b, e[i].ino, &target), 0);
		fprintf(out, "%s mode=%o nlink=%u uid=%u size=%llu sum=%016llx%s%s\n", path, a.mode, a.nlink, a.uid,
			(unsigned long long)a.size, (unsigned long long)sum, target ? " -> " : "", target ? target : "");
		free(target);
		if (S_ISDIR(a.mode))
			dump_dir(b, e[i].ino, path, out);
	}
	cow_dirents_free(e, n);
}

static char *dump(struct cow_branch *b)
{
	char *text;
	size_t len;
	FILE *f = open_memstream(&text, &len);
	dump_dir(b, COW_ROOT_INO, "", f);
	fclose(f);
	return text;
}

/* A workload touching every kind of operation; returns nothing, asserts all. */
static void workload(struct cow_branch *b, int round)
{
	struct cow_attr a, d, f;
	char name[64];
	snprintf(name, sizeof name, "dir%d", round);
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, name, S_IFDIR | 0750, 0, 101, 104, &d), 0);
	ck_assert_int_eq(cow_branch_mknod(b, d.ino, "data", S_IFREG | 0600, 0, 101, 104, &f), 0);
	uint8_t *buf = malloc(3 * 1024 * 1024 + 77);
	tu_fill(buf, 3 * 1024 * 1024 + 77, round);
	ck_assert_int_eq(cow_branch_write(b, f.ino, 0, 3 * 1024 * 1024 + 77, buf), 3 * 1024 * 1024 + 77);
	/* unaligned overwrite spanning blocks, a write far past EOF, a shrink */
	ck_assert_int_eq(cow_branch_write(b, f.ino, 8190, 5, "hello"), 5);
	ck_assert_int_eq(cow_branch_write(b, f.ino, 700 * 1024 * 1024, 3, "end"), 3);
	struct cow_attr sz = { .size = 700 * 1024 * 1024 - 12345 };
	ck_assert_int_eq(cow_branch_setattr(b, f.ino, &sz, COW_SET_SIZE, &a), 0);
	ck_assert_uint_eq(a.size, 700 * 1024 * 1024 - 12345);
	ck_assert_int_eq(cow_branch_mknod(b, d.ino, "tmp", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_write(b, a.ino, 0, 5, "12345"), 5);
	ck_assert_int_eq(cow_branch_rename(b, d.ino, "tmp", COW_ROOT_INO, "moved", 0), 0);
	ck_assert_int_eq(cow_branch_symlink(b, d.ino, "link", "../moved", 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_link(b, f.ino, COW_ROOT_INO, name[3] == '0' ? "hard0" : "hard1", &a), 0);
	ck_assert_uint_eq(a.nlink, 2);
	ck_assert_int_eq(cow_branch_mknod(b, d.ino, "gone", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_unlink(b, d.ino, "gone"), 0);
	free(buf);
}

START_TEST(test_posix_semantics)
{
	struct env e;
	struct cow_branch *b = env_new(&e);
	struct cow_attr a, d;
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "d", S_IFDIR | 0755, 0, 0, 0, &d), 0);
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "d", S_IFREG | 0644, 0, 0, 0, &a), -EEXIST);
	ck_assert_int_eq(cow_branch_getattr(b, COW_ROOT_INO, &a), 0);
	ck_assert_uint_eq(a.nlink, 3);
	ck_assert_int_eq(cow_branch_mknod(b, d.ino, "f", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_rmdir(b, COW_ROOT_INO, "d"), -ENOTEMPTY);
	ck_assert_int_eq(cow_branch_unlink(b, COW_ROOT_INO, "d"), -EISDIR);
	ck_assert_int_eq(cow_branch_lookup(b, COW_ROOT_INO, "nope", &a), -ENOENT);
	char longname[300];
	memset(longname, 'x', 299);
	longname[299] = 0;
	ck_assert_int_eq(cow_branch_lookup(b, COW_ROOT_INO, longname, &a), -ENAMETOOLONG);
	/* sparse file: holes read as zeros, SEEK_DATA/HOLE see them */
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "sparse", S_IFREG | 0644, 0, 0, 0, &a), 0);
	uint64_t ino = a.ino;
	ck_assert_int_eq(cow_branch_write(b, ino, 1 << 20, 4, "data"), 4);
	uint8_t buf[16];
	ck_assert_int_eq(cow_branch_read(b, ino, 100, 16, buf), 16);
	uint8_t zero[16] = { 0 };
	ck_assert_mem_eq(buf, zero, 16);
	off_t o;
	ck_assert_int_eq(cow_branch_lseek(b, ino, 0, SEEK_DATA, &o), 0);
	ck_assert_int_eq(o, 1 << 20);
	ck_assert_int_eq(cow_branch_lseek(b, ino, 0, SEEK_HOLE, &o), 0);
	ck_assert_int_eq(o, 0);
	ck_assert_int_eq(cow_branch_lseek(b, ino, 1 << 20, SEEK_HOLE, &o), 0);
	ck_assert_int_eq(o, (1 << 20) + 4);
	/* truncate down inside a block, then up: the tail reads as zeros */
	struct cow_attr sz = { .size = (1 << 20) + 2 };
	ck_assert_int_eq(cow_branch_setattr(b, ino, &sz, COW_SET_SIZE, &a), 0);
	sz.size = (1 << 20) + 8;
	ck_assert_int_eq(cow_branch_setattr(b, ino, &sz, COW_SET_SIZE, &a), 0);
	ck_assert_int_eq(cow_branch_read(b, ino, 1 << 20, 16, buf), 8);
	ck_assert_mem_eq(buf, "da\0\0\0\0\0\0", 8);
	/* unlink while referenced: data stays until the last forget */
	ck_assert_int_eq(cow_branch_lookup(b, COW_ROOT_INO, "sparse", &a), 0);
	ck_assert_int_eq(cow_branch_unlink(b, COW_ROOT_INO, "sparse"), 0);
	ck_assert_int_eq(cow_branch_read(b, ino, 1 << 20, 2, buf), 2);
	ck_assert_mem_eq(buf, "da", 2);
	cow_branch_forget(b, ino, 2); /* the create and the lookup */
	ck_assert_int_eq(cow_branch_getattr(b, ino, &a), -ENOENT);
	/* a punch spanning several transactions (> 256 MiB) zeroes it all, keeps the size */
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "big", S_IFREG | 0644, 0, 0, 0, &a), 0);
	uint64_t big = a.ino;
	ck_assert_int_eq(cow_branch_write(b, big, 0, 4, "head"), 4);
	ck_assert_int_eq(cow_branch_write(b, big, 300ll << 20, 4, "midl"), 4);
	ck_assert_int_eq(cow_branch_write(b, big, 600ll << 20, 4, "tail"), 4);
	ck_assert_int_eq(cow_branch_fallocate(b, big, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 600ll << 20), 0);
	ck_assert_int_eq(cow_branch_lseek(b, big, 0, SEEK_DATA, &o), 0);
	ck_assert_int_eq(o, 600ll << 20);
	ck_assert_int_eq(cow_branch_getattr(b, big, &a), 0);
	ck_assert_uint_eq(a.size, (600ull << 20) + 4);
	ck_assert_int_eq(cow_branch_read(b, big, 300ll << 20, 4, buf), 4);
	ck_assert_mem_eq(buf, "\0\0\0\0", 4);
	/* rename flags */
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "x", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "y", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_rename(b, COW_ROOT_INO, "x", COW_ROOT_INO, "y", RENAME_NOREPLACE), -EEXIST);
	ck_assert_int_eq(cow_branch_rename(b, COW_ROOT_INO, "x", COW_ROOT_INO, "d", 0), -EISDIR);
	ck_assert_int_eq(cow_branch_rename(b, COW_ROOT_INO, "d", COW_ROOT_INO, "x", 0), -ENOTDIR);
	ck_assert_int_eq(cow_branch_rename(b, COW_ROOT_INO, "x", COW_ROOT_INO, "z", RENAME_EXCHANGE), -ENOENT);
	cow_branch_free(b);
	env_free(&e);
}
END_TEST

static void replay_equals_live(bool checkpoint_midway)
{
	struct env e;
	struct cow_branch *b = env_new(&e);
	workload(b, 0);
	cow_hash root = e.root0;
	uint64_t pos = e.pos0;
	if (checkpoint_midway)
		ck_assert_int_eq(cow_branch_checkpoint(b, &root, &pos), 0);
	workload(b, 1);
	ck_assert_int_eq(cow_store_sync(e.s), 0);
	char *live = dump(b);
	ck_assert_ptr_nonnull(strstr(live, "/dir1/data"));
	/* crash: the live branch is gone; reopen from the last root + the log */
	cow_branch_free(b);
	ck_assert_int_eq(cow_branch_open(e.s, 7, &root, pos, &b), 0);
	char *replayed = dump(b);
	ck_assert_str_eq(replayed, live);
	/* a checkpoint of the replayed branch, reopened with nothing to replay */
	cow_hash r2;
	uint64_t p2;
	ck_assert_int_eq(cow_branch_checkpoint(b, &r2, &p2), 0);
	cow_branch_free(b);
	ck_assert_int_eq(cow_branch_open(e.s, 7, &r2, p2, &b), 0);
	char *again = dump(b);
	ck_assert_str_eq(again, live);
	/* another branch's records in the same log are not replayed here */
	struct cow_branch *other;
	ck_assert_int_eq(cow_branch_open(e.s, 8, &cow_hash_zero, e.pos0, &other), 0);
	struct cow_attr a;
	ck_assert_int_eq(cow_branch_getattr(other, COW_ROOT_INO, &a), -ENOENT);
	cow_branch_free(other);
	free(live);
	free(replayed);
	free(again);
	cow_branch_free(b);
	env_free(&e);
}

START_TEST(test_replay_without_checkpoint) { replay_equals_live(false); }
END_TEST

START_TEST(test_replay_after_checkpoint) { replay_equals_live(true); }
END_TEST

START_TEST(test_orphan_freed_at_reopen)
{
	/* unlinked while open, then a crash: the inode must not survive */
	struct env e;
	struct cow_branch *b = env_new(&e);
	struct cow_attr a;
	ck_assert_int_eq(cow_branch_mknod(b, COW_ROOT_INO, "o", S_IFREG | 0644, 0, 0, 0, &a), 0);
	ck_assert_int_eq(cow_branch_write(b, a.ino, 0, 4, "oooo"), 4);
	ck_assert_int_eq(cow_branch_unlink(b, COW_ROOT_INO, "o"), 0);
	ck_assert_int_eq(cow_branch_getattr(b, a.ino, &a), 0); /* still referenced */
	ck_assert_int_eq(cow_store_sync(e.s), 0);
	cow_branch_free(b);
	ck_assert_int_eq(cow_branch_open(e.s, 7, &e.root0, e.pos0, &b), 0);
	ck_assert_int_eq(cow_branch_getattr(b, a.ino, &a), -ENOENT);
	cow_branch_free(b);
	env_free(&e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("branch");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_posix_semantics);
	tcase_add_test(tc, test_replay_without_checkpoint);
	tcase_add_test(tc, test_replay_after_checkpoint);
	tcase_add_test(tc, test_orphan_freed_at_reopen);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
