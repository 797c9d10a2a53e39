/* sha256x16 — SHA-256 of up to 16 messages of one length at once, one
 * message per 32-bit lane of AVX-512 registers.
 *
 * OpenSSL hashes one message at a time; with the SHA extensions that is
 * about 1.3 GB/s on the machines we measure, and it is the largest single
 * cost of writing through cowfs.  A bulk write hands the store many 8 KiB
 * blocks at once, and sixteen independent messages side by side hash at
 * about twice that rate.  Only used where the CPU and the kernel offer
 * AVX-512 (F and BW); cow_hash checks it against OpenSSL before first use
 * and falls back to OpenSSL otherwise. */
#ifndef COW_SHA256X16_H
#define COW_SHA256X16_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COW_SHA256X16_LANES 16

bool cow_sha256x16_available(void);
/* OUT[i] = SHA-256 of the LEN bytes at MSG[i], for i < N (1..16).  Only
 * where cow_sha256x16_available(). */
void cow_sha256x16(const uint8_t *const *msg, size_t n, size_t len, uint8_t (*out)[32]);
#endif
