#include "sha256x16.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

/* FIPS 180-4, 4.2.2 and 5.3.3 */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t IV[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define TARGET __attribute__((target("avx512f,avx512bw")))
typedef __m512i vec;
#define ADD(a, b) _mm512_add_epi32(a, b)
#define ROR(x, n) _mm512_ror_epi32(x, n)
#define SHR(x, n) _mm512_srli_epi32(x, n)
/* vpternlogd truth tables: a^b^c, (a&b)|(~a&c), majority */
#define XOR3(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi32(e, f, g, 0xCA)
#define MAJ(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0xE8)

/* Word I of the current block of every lane, as R[I]: the 16 rows of 16
 * big-endian words, transposed (unpack 32, unpack 64, then two rounds of
 * 128-bit lane shuffles). */
TARGET static void load_words(const uint8_t *const p[COW_SHA256X16_LANES], size_t off, vec r[16])
{
	const vec bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
	vec t[16];
	for (int l = 0; l < 16; l++)
		r[l] = _mm512_shuffle_epi8(_mm512_loadu_si512(p[l] + off), bswap);
	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
	}
	for (int i = 0; i < 16; i += 4) {
		r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
		r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
		r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
		r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
	}
	for (int i = 0; i < 4; i++) {
		t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
		t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
		t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
		t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
	}
	for (int i = 0; i < 4; i++) {
		r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
		r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
		r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
		r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
	}
}

/* NB 64-byte blocks of every lane (block B of lane L at P[L] + 64 B) into
 * the lane states S. */
TARGET static void compress(vec s[8], const uint8_t *const p[COW_SHA256X16_LANES], size_t nb)
{
	for (size_t b = 0; b < nb; b++) {
		vec w[16];
		load_words(p, 64 * b, w);
		vec a = s[0], bb = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma GCC unroll 64
		for (int i = 0; i < 64; i++) {
			if (i >= 16) { /* the message schedule, in place in a ring of 16 */
				vec w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
				vec s0 = XOR3(ROR(w15, 7), ROR(w15, 18), SHR(w15, 3));
				vec s1 = XOR3(ROR(w2, 17), ROR(w2, 19), SHR(w2, 10));
				w[i & 15] = ADD(ADD(w[i & 15], s0), ADD(w[(i - 7) & 15], s1));
			}
			vec t1 = ADD(ADD(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),
				     ADD(CH(e, f, g), ADD(w[i & 15], _mm512_set1_epi32((int)K[i]))));
			vec t2 = ADD(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, bb, c));
			h = g;
			g = f;
			f = e;
			e = ADD(d, t1);
			d = c;
			c = bb;
			bb = a;
			a = ADD(t1, t2);
		}
		s[0] = ADD(s[0], a);
		s[1] = ADD(s[1], bb);
		s[2] = ADD(s[2], c);
		s[3] = ADD(s[3], d);
		s[4] = ADD(s[4], e);
		s[5] = ADD(s[5], f);
		s[6] = ADD(s[6], g);
		s[7] = ADD(s[7], h);
	}
}

TARGET static void run(const uint8_t *const *msg, size_t n, size_t len, uint8_t (*out)[32])
{
	/* lanes past N hash message 0 again; their results are not kept */
	const uint8_t *p[COW_SHA256X16_LANES];
	for (size_t l = 0; l < COW_SHA256X16_LANES; l++)
		p[l] = msg[l < n ? l : 0];
	vec s[8];
	for (int i = 0; i < 8; i++)
		s[i] = _mm512_set1_epi32((int)IV[i]);
	compress(s, p, len / 64);

	/* the padding: the last partial block, 0x80, zeros, the length in
	 * bits as a big-endian u64 at the end of one or two blocks */
	uint8_t tail[COW_SHA256X16_LANES][128];
	size_t rem = len % 64, tb = rem < 56 ? 1 : 2;
	uint64_t bits = (uint64_t)len * 8;
	const uint8_t *tp[COW_SHA256X16_LANES];
	for (size_t l = 0; l < COW_SHA256X16_LANES; l++) {
		memcpy(tail[l], p[l] + len - rem, rem);
		tail[l][rem] = 0x80;
		memset(tail[l] + rem + 1, 0, 64 * tb - rem - 1);
		for (int k = 0; k < 8; k++)
			tail[l][64 * tb - 1 - k] = (uint8_t)(bits >> (8 * k));
		tp[l] = tail[l];
	}
	compress(s, tp, tb);

	for (int i = 0; i < 8; i++) {
		uint32_t v[COW_SHA256X16_LANES];
		_mm512_storeu_si512(v, s[i]);
		for (size_t l = 0; l < n; l++) {
			out[l][4 * i] = (uint8_t)(v[l] >> 24);
			out[l][4 * i + 1] = (uint8_t)(v[l] >> 16);
			out[l][4 * i + 2] = (uint8_t)(v[l] >> 8);
			out[l][4 * i + 3] = (uint8_t)v[l];
		}
	}
}
#endif

bool cow_sha256x16_available(void)
{
#if defined(__x86_64__)
	/* GCC's checks include the kernel's consent (XCR0) to AVX-512 state */
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
	return false;
#endif
}

void cow_sha256x16(const uint8_t *const *msg, size_t n, size_t len, uint8_t (*out)[32])
{
	if (n == 0 || n > COW_SHA256X16_LANES)
		abort();
#if defined(__x86_64__)
	run(msg, n, len, out);
#else
	(void)msg;
	(void)len;
	(void)out;
	abort();
#endif
}
