/* Helpers shared by the Check unit tests: temp directories, random blocks,
 * a raw look at segment files.  Header-only so that each test_*.c builds
 * into one program. */
#ifndef COW_TESTUTIL_H
#define COW_TESTUTIL_H
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline char *tu_tmpdir(void)
{
	char *d = strdup("/tmp/cowfs-unit.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

static inline void tu_rmrf(const char *d)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	ck_assert_int_eq(system(cmd), 0);
}

/* A store path inside a fresh temp dir (the store dir itself does not exist). */
static inline char *tu_store_path(char **ret_tmp)
{
	*ret_tmp = tu_tmpdir();
	char *p = malloc(strlen(*ret_tmp) + 8);
	sprintf(p, "%s/store", *ret_tmp);
	return p;
}

static inline void tu_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

static inline void tu_seg_path(const char *store, unsigned seg, char *out, size_t n)
{
	snprintf(out, n, "%s/segments/%016x.seg", store, seg);
}

static inline void tu_flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	uint8_t b;
	ck_assert_int_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}
/* Run every test in SUITE; the exit status says whether any failed. */
static inline int tu_run(Suite *suite)
{
	SRunner *sr = srunner_create(suite);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
#endif
