/* crc32c.h - CRC-32C (Castagnoli), as VHDX checksums its headers, region
 * and metadata tables and log entries. */
#ifndef AMIPORT_CRC32C_H
#define AMIPORT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues crc over buf; start with crc32c(0, ...). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
