/* util — small shared helpers: diagnostics, little-endian codecs, durable
 * small-file writes.
 *
 * Diagnostics go to stderr until cow_msg_set_file() points them elsewhere
 * (the daemon does so after it detaches).  Little-endian helpers are used by
 * every on-disk format.  cow_write_file_durable() is the one way small
 * immutable-or-replaced files (superblock, refs) reach disk: temp file in the
 * same directory, fsync, rename, fsync of the directory.  Returns 0 or -errno.
 */
#ifndef COW_UTIL_H
#define COW_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void cow_msg_set_file(FILE *f);
void cow_msg_set_prefix(const char *prefix);
void cow_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cow_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cow_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* How many errors and warnings were printed so far (to avoid saying a thing twice). */
unsigned cow_msg_count(void);

static inline void cow_put_le16(void *p, uint16_t v) { uint8_t *b = p; b[0] = v; b[1] = v >> 8; }
static inline void cow_put_le32(void *p, uint32_t v) { uint8_t *b = p; for (int i = 0; i < 4; i++) b[i] = v >> (8 * i); }
static inline void cow_put_le64(void *p, uint64_t v) { uint8_t *b = p; for (int i = 0; i < 8; i++) b[i] = v >> (8 * i); }
static inline uint16_t cow_get_le16(const void *p) { const uint8_t *b = p; return (uint16_t)(b[0] | b[1] << 8); }
static inline uint32_t cow_get_le32(const void *p) { const uint8_t *b = p; uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | b[i]; return v; }
static inline uint64_t cow_get_le64(const void *p) { const uint8_t *b = p; uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | b[i]; return v; }

/* Write LEN bytes as DIR/NAME atomically and durably. */
int cow_write_file_durable(const char *dir, const char *name, const void *buf, size_t len);
/* The common tail of such writes: BUF into FD (open on TMP, in DIR), fsync,
 * close, rename TMP to DST, fsync DIR.  FD is closed, and TMP removed on
 * failure, whatever happens. */
int cow_write_tmp_durable(int fd, const char *tmp, const char *dst, const char *dir, const void *buf, size_t len);
/* Read a whole small file (at most MAX bytes) into a malloc'd buffer (NUL-terminated). */
int cow_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len);
int cow_fsync_path(const char *path);

/* "90", "90s", "10m", "8h", "7d", "2w" -> seconds; -EINVAL for anything else
 * (negative, empty, trailing junk, or more than 100 years). */
int cow_parse_duration(const char *text, int64_t *ret_sec);

/* A whole decimal number (strtoull(3)'s syntax) from MIN to MAX -> *RET;
 * -EINVAL for anything else (empty, trailing junk, out of range). */
int cow_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *ret);

/* qsort(3) comparison of two uint32_t, ascending. */
int cow_cmp_u32(const void *a, const void *b);

/* The machine's CPU time since boot, all CPUs, in clock ticks (/proc/stat):
 * busy (user, nice, system, irq, softirq, steal) and all (busy, idle and
 * iowait).  Two samples give how busy the CPUs were between them. */
int cow_cpu_ticks(uint64_t *ret_busy, uint64_t *ret_all);

/* A growing NUL-terminated string.  After an allocation fails, further
 * additions do nothing and oom stays set; free p in any case. */
struct cow_str {
	char *p;
	size_t len, cap;
	bool oom;
};
void cow_str_add(struct cow_str *s, const char *text, size_t n);
void cow_str_addf(struct cow_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string (never NULL unless out of memory: "" for nothing added), or
 * NULL after freeing it if an allocation failed. */
char *cow_str_take(struct cow_str *s);

#define COW_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define COW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define COW_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
