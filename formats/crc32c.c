/* crc32c.c - table-driven CRC-32C (polynomial 0x1EDC6F41, reflected
 * 0x82F63B78, initial and final value all ones), as [MS-VHDX] 2.2 uses it. */
#include "crc32c.h"

#include <pthread.h>

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc32c_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8) ^ crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
  pthread_once(&crc32c_once, crc32c_init);
  const uint8_t *p = buf;
  crc = ~crc;
  while (len >= 8) { /* slicing by 8 */
    uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
          crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
          crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^ crc32c_table[0][p[7]];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}
