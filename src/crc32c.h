/* crc32c — CRC-32C (Castagnoli), the checksum of every cowfs record and
 * header.  Uses the SSE4.2 instruction when the CPU has it (three streams at
 * once over long buffers), a table otherwise.
 * cow_crc32c(0, buf, len) starts a checksum; pass the result back in to extend. */
#ifndef COW_CRC32C_H
#define COW_CRC32C_H
#include <stddef.h>
#include <stdint.h>
uint32_t cow_crc32c(uint32_t crc, const void *buf, size_t len);
#endif
