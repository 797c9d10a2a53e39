#include "crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[256];
static int have_sse42;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The SSE4.2 instruction takes three cycles per 8 bytes but can start one
 * every cycle, so a long buffer goes as three streams side by side whose
 * CRCs are then combined: the CRC of A then B is A's CRC run through
 * len(B) zero bytes, xor B's CRC from zero.  Running through N zero bytes
 * is linear, so it is a 32x32 bit matrix, kept as four byte tables. */
#define LONG 2048
#define SHORT 256
static uint32_t long_zeros[4][256], short_zeros[4][256];

/* The raw register (no pre- or post-inversion) after N zero bytes. */
static uint32_t through_zeros(uint32_t c, size_t n)
{
	while (n--)
		c = table[c & 0xff] ^ (c >> 8);
	return c;
}

static void zeros_table(uint32_t t[4][256], size_t n)
{
	uint32_t basis[32];
	for (int k = 0; k < 32; k++)
		basis[k] = through_zeros(1u << k, n);
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 256; b++) {
			uint32_t v = 0;
			for (int j = 0; j < 8; j++)
				if (b >> j & 1)
					v ^= basis[8 * i + j];
			t[i][b] = v;
		}
}

static uint32_t shift(const uint32_t t[4][256], uint32_t c)
{
	return t[0][c & 0xff] ^ t[1][c >> 8 & 0xff] ^ t[2][c >> 16 & 0xff] ^ t[3][c >> 24];
}

static void init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		table[i] = c;
	}
	zeros_table(long_zeros, LONG);
	zeros_table(short_zeros, SHORT);
#if defined(__x86_64__)
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static inline uint64_t crc_u64(uint64_t c, const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return __builtin_ia32_crc32di(c, v);
}

/* Three streams of N bytes each (N a multiple of 8) at P, folded into C. */
__attribute__((target("sse4.2")))
static uint64_t crc_3way(uint64_t c, const uint8_t *p, size_t n, const uint32_t zeros[4][256])
{
	uint64_t c1 = 0, c2 = 0;
	for (size_t i = 0; i < n; i += 8) {
		c = crc_u64(c, p + i);
		c1 = crc_u64(c1, p + n + i);
		c2 = crc_u64(c2, p + 2 * n + i);
	}
	c = shift(zeros, (uint32_t)c) ^ c1;
	return shift(zeros, (uint32_t)c) ^ c2;
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	for (; len >= 3 * LONG; p += 3 * LONG, len -= 3 * LONG)
		c = crc_3way(c, p, LONG, long_zeros);
	for (; len >= 3 * SHORT; p += 3 * SHORT, len -= 3 * SHORT)
		c = crc_3way(c, p, SHORT, short_zeros);
	for (; len >= 8; p += 8, len -= 8)
		c = crc_u64(c, p);
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}
#endif

uint32_t cow_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&once, init);
	const uint8_t *p = buf;
	crc = ~crc;
#if defined(__x86_64__)
	if (have_sse42)
		return ~crc_hw(crc, p, len);
#endif
	while (len--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
