/* fat.c - placeholder: the fat driver is not written yet; it never claims a region. */
#include "fs.h"

static int fat_probe(struct disk *d, uint64_t base, uint64_t size)
{
  (void)d;
  (void)base;
  (void)size;
  return 0;
}

const struct fs_driver fs_fat = {
  .name = "fat",
  .probe = fat_probe,
};
