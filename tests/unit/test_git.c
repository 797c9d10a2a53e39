/* Unit tests of the database branch name a git branch gets (git.h): the
 * plain mapping, the hash suffix for lossy or taken names, validity of
 * every result, stability, and that names handed out in turn never meet. */
#include <stdio.h>

#include "git.h"
#include "hash.h"
#include "ref.h"
#include "testutil.h"
#include "util.h"

/* TAKEN from a NULL-terminated list, and a counter of questions */
struct taken_set {
	const char *const *names;
	char (*extra)[COW_NAME_LEN + 1];
	size_t n_extra;
	unsigned asked;
	bool all;
};

static bool taken(const char *db, void *arg)
{
	struct taken_set *t = arg;
	t->asked++;
	if (t->all)
		return true;
	for (const char *const *p = t->names; p && *p; p++)
		if (strcmp(*p, db) == 0)
			return true;
	for (size_t i = 0; i < t->n_extra; i++)
		if (strcmp(t->extra[i], db) == 0)
			return true;
	return false;
}

static void name_of(const char *git, struct taken_set *t, char out[COW_NAME_LEN + 1])
{
	ck_assert_int_eq(cow_git_db_name(git, t ? taken : NULL, t, out), 0);
	ck_assert_msg(cow_ref_check_name(out) == NULL, "%s -> '%s' is not a valid branch name: %s", git, out,
		      cow_ref_check_name(out));
}

/* STEM-XXXXXXXX with XXXXXXXX from the SHA-256 of INPUT */
static void expect_suffixed(const char *got, const char *stem, const char *input)
{
	cow_hash h;
	char hex[65], want[COW_NAME_LEN + 1];
	ck_assert_int_eq(cow_hash_compute(input, strlen(input), &h), 0);
	cow_hash_to_hex(&h, hex);
	snprintf(want, sizeof want, "%s-%.8s", stem, hex);
	ck_assert_str_eq(got, want);
}

START_TEST(test_plain)
{
	char out[COW_NAME_LEN + 1];
	name_of("feature/inventory-split", NULL, out);
	ck_assert_str_eq(out, "feature-inventory-split");
	name_of("main", NULL, out);
	ck_assert_str_eq(out, "main");
	name_of("rel.1.2", NULL, out);
	ck_assert_str_eq(out, "rel.1.2");
	name_of("fix_42/db-migrations", NULL, out);
	ck_assert_str_eq(out, "fix_42-db-migrations");
	name_of("a/b/c", NULL, out);
	ck_assert_str_eq(out, "a-b-c");
	/* 63 bytes is still plain, 64 is not */
	char g63[64], g64[65];
	memset(g63, 'x', 63), g63[63] = 0;
	memset(g64, 'x', 64), g64[64] = 0;
	name_of(g63, NULL, out);
	ck_assert_str_eq(out, g63);
	name_of(g64, NULL, out);
	ck_assert_uint_eq(strlen(out), 63);
}
END_TEST

START_TEST(test_lossy)
{
	char out[COW_NAME_LEN + 1];
	/* upper case: lower-cased stem and a suffix, so Fix/x and fix/x differ */
	name_of("Fix/Upper", NULL, out);
	expect_suffixed(out, "fix-upper", "Fix/Upper");
	char again[COW_NAME_LEN + 1];
	name_of("Fix/Upper", NULL, again);
	ck_assert_str_eq(out, again); /* stable */
	name_of("fix/upper", NULL, again);
	ck_assert_str_eq(again, "fix-upper");
	/* unicode: each byte outside the set is part of one '-' run */
	name_of("f\xc3\xbcnf", NULL, out);
	expect_suffixed(out, "f-nf", "f\xc3\xbcnf");
	name_of("\xc3\xbc", NULL, out);
	expect_suffixed(out, "git", "\xc3\xbc");
	/* names git allows and ours does not */
	name_of("-x", NULL, out);
	expect_suffixed(out, "x", "-x");
	name_of("a+b@c", NULL, out);
	expect_suffixed(out, "a-b-c", "a+b@c");
	name_of("x..y", NULL, out);
	expect_suffixed(out, "x.y", "x..y");
	name_of("_private", NULL, out);
	expect_suffixed(out, "private", "_private");
	/* too long: a 54-byte stem, no '-' or '.' left at its end */
	char g[120];
	memset(g, 'a', sizeof g - 1), g[sizeof g - 1] = 0;
	g[53] = '-';
	name_of(g, NULL, out);
	ck_assert_uint_le(strlen(out), COW_NAME_LEN);
	char stem[60];
	memset(stem, 'a', 53), stem[53] = 0;
	expect_suffixed(out, stem, g);
}
END_TEST

START_TEST(test_taken)
{
	char out[COW_NAME_LEN + 1];
	/* a/b took a-b: git branch a-b gets a suffix, and vice versa */
	const char *ab[] = { "a-b", NULL };
	struct taken_set t = { .names = ab };
	name_of("a-b", &t, out);
	expect_suffixed(out, "a-b", "a-b");
	name_of("a/b", &t, out);
	expect_suffixed(out, "a-b", "a/b");
	/* the first suffix taken too: the next candidate hashes "NAME\n2" */
	char first[COW_NAME_LEN + 1];
	strcpy(first, out);
	const char *both[] = { "a-b", first, NULL };
	t = (struct taken_set){ .names = both };
	name_of("a/b", &t, out);
	expect_suffixed(out, "a-b", "a/b\n2");
	ck_assert_uint_eq(t.asked, 3);
	/* everything taken */
	t = (struct taken_set){ .all = true };
	ck_assert_int_eq(cow_git_db_name("x", taken, &t, out), -EEXIST);
	ck_assert_uint_eq(t.asked, 1001);
	ck_assert_int_eq(cow_git_db_name("", NULL, NULL, out), -EINVAL);
}
END_TEST

/* Names handed out one after another (each taken once given, as the
 * pairing records do) are valid and all different, whatever the input. */
START_TEST(test_never_collide)
{
	enum { N = 3000 };
	static char names[N][COW_NAME_LEN + 1];
	struct taken_set t = { .extra = names };
	const char *fixed[] = { "a/b", "a-b", "A/B", "A-B", "a--b", "a//b", "a.b", "a..b", "x", "X", "f\xc3\xbcnf",
				"f\xc3\xbdnf", "feature/inventory-split", "feature-inventory-split", "Feature/Inventory-Split" };
	size_t k = 0;
	for (; k < COW_ARRAY_SIZE(fixed); k++) {
		name_of(fixed[k], &t, names[k]);
		t.n_extra = k + 1;
	}
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	for (; k < N; k++) {
		char g[100];
		size_t len = 1 + (seed >> 33) % 90;
		for (size_t i = 0; i < len; i++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			/* mostly the characters that clash: a, A, -, /, ., and some bytes above 127 */
			static const char pick[] = "aA-/._b\xc3\xbc";
			g[i] = pick[(seed >> 40) % (sizeof pick - 1)];
		}
		g[len] = 0;
		name_of(g, &t, names[k]);
		t.n_extra = k + 1;
	}
	for (size_t i = 0; i < N; i++)
		for (size_t j = i + 1; j < N; j++)
			ck_assert_msg(strcmp(names[i], names[j]) != 0, "two git branches got %s", names[i]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("git");
	TCase *tc = tcase_create("names");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_plain);
	tcase_add_test(tc, test_lossy);
	tcase_add_test(tc, test_taken);
	tcase_add_test(tc, test_never_collide);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
