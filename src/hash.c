#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>

#include "sha256x16.h"
#include "util.h"

const cow_hash cow_hash_zero;

static EVP_MD *sha256;
static bool use_x16;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int evp(const void *data, size_t len, cow_hash *ret)
{
	unsigned int n = 0;
	if (!sha256 || !EVP_Digest(data, len, ret->b, &n, sha256, NULL) || n != COW_HASH_SIZE)
		return -EIO;
	return 0;
}

/* The sixteen lanes must give OpenSSL's answer, for every length class
 * of the padding (one tail block or two) and for lanes left idle. */
static bool x16_agrees(void)
{
	static uint8_t buf[COW_SHA256X16_LANES * 200];
	static const size_t lens[] = { 0, 1, 55, 56, 64, 119, 120, 200 };
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 131 + (i >> 7));
	for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
		const uint8_t *msg[COW_SHA256X16_LANES];
		uint8_t out[COW_SHA256X16_LANES][32];
		size_t n = COW_SHA256X16_LANES - k; /* 16 down to 9 lanes in use */
		for (size_t l = 0; l < n; l++)
			msg[l] = buf + l * 200;
		cow_sha256x16(msg, n, lens[k], out);
		for (size_t l = 0; l < n; l++) {
			cow_hash h;
			if (evp(msg[l], lens[k], &h) < 0 || memcmp(h.b, out[l], COW_HASH_SIZE) != 0)
				return false;
		}
	}
	return true;
}

static void init(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	use_x16 = sha256 && cow_sha256x16_available() && x16_agrees();
}

/* A real SHA-256 of all zero bits is not something we will meet; if it
 * ever were, it would read as a hole, so refuse it loudly. */
int cow_hash_compute(const void *data, size_t len, cow_hash *ret)
{
	pthread_once(&once, init);
	int r = evp(data, len, ret);
	return r < 0 ? r : cow_hash_is_zero(ret) ? -EIO : 0;
}

/* Fewer messages than this go to OpenSSL one by one: a group of sixteen
 * lanes costs about what eight single hashes do. */
#define X16_MIN 8

int cow_hash_compute_many(const void *const *data, size_t len, size_t n, cow_hash *ret)
{
	pthread_once(&once, init);
	size_t i = 0;
	while (use_x16 && n - i >= X16_MIN) {
		size_t m = COW_MIN(n - i, COW_SHA256X16_LANES);
		uint8_t out[COW_SHA256X16_LANES][32];
		cow_sha256x16((const uint8_t *const *)data + i, m, len, out);
		for (size_t l = 0; l < m; l++, i++) {
			memcpy(ret[i].b, out[l], COW_HASH_SIZE);
			if (cow_hash_is_zero(&ret[i]))
				return -EIO;
		}
	}
	for (; i < n; i++) {
		int r = cow_hash_compute(data[i], len, &ret[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

bool cow_hash_batched(void)
{
	pthread_once(&once, init);
	return use_x16;
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
