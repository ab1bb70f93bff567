/* disk.h - the inspector's view of an image: reads through the block layer
 * with a small page cache, counting what it reads (the inspector promises
 * to read a few MiB at most, whatever the disk's size). */
#ifndef AMIPORT_DISK_H
#define AMIPORT_DISK_H

#include <stdint.h>
#include <stddef.h>

#include "image.h"

#define DISK_PAGE 4096
#define DISK_CACHE_PAGES 2048 /* 8 MiB */

struct disk_page;

struct disk {
  struct img *img;
  uint64_t size;
  uint64_t bytes_read;   /* from the image, cache misses only */
  uint64_t read_limit;   /* 0 = none; past it reads fail (hostile images) */
  struct disk_page *pages;
  uint64_t tick;
};

int disk_init(struct disk *d, struct img *im, struct error *e);
void disk_free(struct disk *d);
/* Reads [off, off+len) of the disk; past the end is an error naming what. */
int disk_pread(struct disk *d, void *buf, size_t len, uint64_t off, struct error *e);

#endif
