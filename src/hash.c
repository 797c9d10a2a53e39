#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>

const cow_hash cow_hash_zero;

static EVP_MD *sha256;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) { sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); }

int cow_hash_compute(const void *data, size_t len, cow_hash *ret)
{
	pthread_once(&once, init);
	unsigned int n = 0;
	if (!sha256 || !EVP_Digest(data, len, ret->b, &n, sha256, NULL) || n != COW_HASH_SIZE)
		return -EIO;
	/* A real SHA-256 of all zero bits is not something we will meet;
	 * if it ever were, it would read as a hole, so refuse it loudly. */
	if (cow_hash_is_zero(ret))
		return -EIO;
	return 0;
}

void cow_hash_to_hex(const cow_hash *h, char *out)
{
	static const char hexd[] = "0123456789abcdef";
	for (int i = 0; i < COW_HASH_SIZE; i++) {
		out[2 * i] = hexd[h->b[i] >> 4];
		out[2 * i + 1] = hexd[h->b[i] & 15];
	}
	out[2 * COW_HASH_SIZE] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

int cow_hash_from_hex(const char *hex, cow_hash *ret)
{
	if (strlen(hex) != 2 * COW_HASH_SIZE)
		return -EINVAL;
	for (int i = 0; i < COW_HASH_SIZE; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		ret->b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

bool cow_buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len && ((uintptr_t)p & 7)) {
		if (*p++) return false;
		len--;
	}
	const uint64_t *q = (const uint64_t *)p;
	for (; len >= 8; len -= 8)
		if (*q++) return false;
	p = (const uint8_t *)q;
	while (len--)
		if (*p++) return false;
	return true;
}
