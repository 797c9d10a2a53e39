/* hash — the SHA-256 names of blocks and objects (OpenSSL EVP, and
 * sixteen at a time on AVX-512: sha256x16.h).
 *
 * The all-zero value (cow_hash_zero) is reserved: it names "nothing", which
 * is a hole in a file map, an empty subtree, and the all-zero 8 KiB block,
 * which is never stored. */
#ifndef COW_HASH_H
#define COW_HASH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define COW_HASH_SIZE 32
typedef struct { uint8_t b[COW_HASH_SIZE]; } cow_hash;

extern const cow_hash cow_hash_zero;

/* 0, or -EIO if OpenSSL fails (it does not in practice; never ignored). */
int cow_hash_compute(const void *data, size_t len, cow_hash *ret);
/* RET[i] = the hash of the LEN bytes at DATA[i], for i < N: sixteen at a
 * time where the CPU can (sha256x16.h), which is about twice as fast. */
int cow_hash_compute_many(const void *const *data, size_t len, size_t n, cow_hash *ret);
/* Whether cow_hash_compute_many uses the sixteen lanes on this machine. */
bool cow_hash_batched(void);
static inline bool cow_hash_is_zero(const cow_hash *h) { return memcmp(h, &cow_hash_zero, sizeof *h) == 0; }
static inline bool cow_hash_eq(const cow_hash *a, const cow_hash *b) { return memcmp(a, b, sizeof *a) == 0; }
/* OUT holds 65 bytes. */
void cow_hash_to_hex(const cow_hash *h, char *out);
int cow_hash_from_hex(const char *hex, cow_hash *ret);
bool cow_buf_is_zero(const void *buf, size_t len);
#endif
