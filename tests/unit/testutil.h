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

/* Every test's temp dirs go inside one dir per run (one under /tmp, one
 * under /var/tmp for tests that need a disk filesystem), which tu_run
 * removes when all tests are done: a failed assertion ends its test at
 * once (Check runs each test in a child it ends with _exit), before the
 * test's own tu_rmrf. */
static char tu_base[2][64];

static inline char *tu_tmpdir_in(int which)
{
	static const char *const top[2] = { "/tmp", "/var/tmp" };
	char *d = malloc(sizeof tu_base[0] + 16);
	if (tu_base[which][0])
		sprintf(d, "%s/t.XXXXXX", tu_base[which]);
	else /* a program that runs its tests without tu_run */
		sprintf(d, "%s/cowfs-unit.XXXXXX", top[which]);
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

static inline char *tu_tmpdir(void) { return tu_tmpdir_in(0); }
/* Under /var/tmp, which is on disk where /tmp may be a tmpfs. */
static inline char *tu_disk_tmpdir(void) { return tu_tmpdir_in(1); }

/* rm -rf D: system(3)'s status. */
static inline int tu_rm_rf(const char *d)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	return system(cmd);
}

static inline void tu_rmrf(const char *d) { ck_assert_int_eq(tu_rm_rf(d), 0); }

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
	strcpy(tu_base[0], "/tmp/cowfs-unit.XXXXXX");
	strcpy(tu_base[1], "/var/tmp/cowfs-unit.XXXXXX");
	for (int i = 0; i < 2; i++)
		if (!mkdtemp(tu_base[i])) {
			perror("mkdtemp");
			return 1;
		}
	SRunner *sr = srunner_create(suite);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	for (int i = 0; i < 2; i++) {
		if (tu_rm_rf(tu_base[i]) != 0) {
			fprintf(stderr, "could not remove %s\n", tu_base[i]);
			failed = 1;
		}
	}
	return failed ? 1 : 0;
}
#endif
