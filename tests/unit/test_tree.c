/* Unit tests of the copy-on-write radix tree: get/set/next/truncate, far
 * apart keys, persistence across commits (old roots stay valid), sharing of
 * unchanged nodes, and malformed nodes. */
#include "store.h"
#include "testutil.h"
#include "tree.h"
#include "util.h"

static struct cow_store *store_new(char **tmp, char **path)
{
	*path = tu_store_path(tmp);
	ck_assert_int_eq(cow_store_create(*path), 0);
	struct cow_store *s;
	ck_assert_int_eq(cow_store_open(*path, &s), 0);
	return s;
}

static void val_of(uint64_t k, uint8_t v[32])
{
	memset(v, 0, 32);
	memcpy(v, &k, 8);
	v[31] = 0x5A;
}

START_TEST(test_set_get_commit_reopen)
{
	char *tmp, *path;
	struct cow_store *s = store_new(&tmp, &path);
	struct cow_tree *t;
	ck_assert_int_eq(cow_tree_open(s, NULL, 32, &t), 0);
	static const uint64_t keys[] = { 0, 1, 255, 256, 257, 65535, 65536, 1000000, 1ull << 30, 1ull << 40, (1ull << 52) + 3 };
	uint8_t v[32], got[32];
	for (size_t i = 0; i < COW_ARRAY_SIZE(keys); i++) {
		val_of(keys[i], v);
		ck_assert_int_eq(cow_tree_set(t, keys[i], v), 0);
	}
	ck_assert(cow_tree_dirty(t));
	cow_hash root;
	ck_assert_int_eq(cow_tree_commit(t, &root), 0);
	ck_assert(!cow_tree_dirty(t));
	cow_tree_free(t);
	ck_assert_int_eq(cow_tree_open(s, &root, 32, &t), 0);
	for (size_t i = 0; i < COW_ARRAY_SIZE(keys); i++) {
		val_of(keys[i], v);
		ck_assert_int_eq(cow_tree_get(t, keys[i], got), 0);
		ck_assert_mem_eq(got, v, 32);
	}
	/* absent keys read as zero */
	uint8_t zero[32] = { 0 };
	ck_assert_int_eq(cow_tree_get(t, 2, got), 0);
	ck_assert_mem_eq(got, zero, 32);
	ck_assert_int_eq(cow_tree_get(t, 1ull << 62, got), 0);
	ck_assert_mem_eq(got, zero, 32);
	/* next() walks keys in order */
	uint64_t k = 0, seen = 0;
	size_t i = 0;
	while (cow_tree_next(t, k, &k, got) == 0) {
		ck_assert_uint_eq(k, keys[i++]);
		seen++;
		k++;
	}
	ck_assert_uint_eq(seen, COW_ARRAY_SIZE(keys));
	cow_tree_free(t);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_old_roots_stay_valid)
{
	char *tmp, *path;
	struct cow_store *s = store_new(&tmp, &path);
	struct cow_tree *t;
	uint8_t v[32], got[32];
	ck_assert_int_eq(cow_tree_open(s, NULL, 32, &t), 0);
	for (uint64_t k = 0; k < 5000; k++) {
		val_of(k, v);
		ck_assert_int_eq(cow_tree_set(t, k, v), 0);
	}
	cow_hash r1, r2;
	ck_assert_int_eq(cow_tree_commit(t, &r1), 0);
	struct cow_store_stats a, b;
	cow_store_get_stats(s, &a);
	/* change one key: only the path to it is new (leaf + interior nodes) */
	val_of(99999, v);
	ck_assert_int_eq(cow_tree_set(t, 4321, v), 0);
	ck_assert_int_eq(cow_tree_commit(t, &r2), 0);
	cow_store_get_stats(s, &b);
	ck_assert(!cow_hash_eq(&r1, &r2));
	ck_assert_uint_le(b.objects - a.objects, 3);
	cow_tree_free(t);
	struct cow_tree *t1, *t2;
	ck_assert_int_eq(cow_tree_open(s, &r1, 32, &t1), 0);
	ck_assert_int_eq(cow_tree_open(s, &r2, 32, &t2), 0);
	val_of(4321, v);
	ck_assert_int_eq(cow_tree_get(t1, 4321, got), 0);
	ck_assert_mem_eq(got, v, 32);
	val_of(99999, v);
	ck_assert_int_eq(cow_tree_get(t2, 4321, got), 0);
	ck_assert_mem_eq(got, v, 32);
	/* committing an unchanged tree gives the same root */
	cow_hash r3;
	ck_assert_int_eq(cow_tree_commit(t1, &r3), 0);
	ck_assert(cow_hash_eq(&r1, &r3));
	cow_tree_free(t1);
	cow_tree_free(t2);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_truncate_and_empty)
{
	char *tmp, *path;
	struct cow_store *s = store_new(&tmp, &path);
	struct cow_tree *t;
	uint8_t v[128], got[128], zero[128] = { 0 };
	ck_assert_int_eq(cow_tree_open(s, NULL, 128, &t), 0);
	for (uint64_t k = 1; k < 3000; k += 7) {
		memset(v, (int)(k % 250) + 1, sizeof v);
		ck_assert_int_eq(cow_tree_set(t, k, v), 0);
	}
	ck_assert_int_eq(cow_tree_truncate(t, 1000), 0);
	cow_hash r;
	ck_assert_int_eq(cow_tree_commit(t, &r), 0);
	cow_tree_free(t);
	ck_assert_int_eq(cow_tree_open(s, &r, 128, &t), 0);
	uint64_t k;
	for (k = 1; k < 3000; k += 7) {
		ck_assert_int_eq(cow_tree_get(t, k, got), 0);
		if (k < 1000) {
			memset(v, (int)(k % 250) + 1, sizeof v);
			ck_assert_mem_eq(got, v, sizeof v);
		} else {
			ck_assert_mem_eq(got, zero, sizeof zero);
		}
	}
	ck_assert_int_eq(cow_tree_next(t, 1000, &k, got), -ENOENT);
	/* removing everything leaves the empty tree, named by the zero hash */
	ck_assert_int_eq(cow_tree_truncate(t, 0), 0);
	ck_assert_int_eq(cow_tree_commit(t, &r), 0);
	ck_assert(cow_hash_is_zero(&r));
	cow_tree_free(t);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

START_TEST(test_malformed_node)
{
	char *tmp, *path;
	struct cow_store *s = store_new(&tmp, &path);
	cow_hash h;
	ck_assert_int_eq(cow_store_put(s, "not a tree node at all", 22, &h), 0);
	struct cow_tree *t;
	uint8_t got[32];
	ck_assert_int_eq(cow_tree_open(s, &h, 32, &t), 0);
	ck_assert_int_eq(cow_tree_get(t, 0, got), -EIO);
	cow_tree_free(t);
	cow_store_close(s);
	tu_rmrf(tmp);
	free(tmp);
	free(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tree");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_set_get_commit_reopen);
	tcase_add_test(tc, test_old_roots_stay_valid);
	tcase_add_test(tc, test_truncate_and_empty);
	tcase_add_test(tc, test_malformed_node);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
