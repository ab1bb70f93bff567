/* disk.c - page-cached, counted reads of an image for the inspector. A
 * direct-mapped cache is enough: the inspector reads superblocks, inode
 * tables and directory blocks, each a few times. */
#include "disk.h"

#include <stdlib.h>
#include <string.h>

struct disk_page {
  uint64_t no;   /* page number + 1; 0 = empty */
  uint8_t *data; /* allocated on first use: most inspections touch few pages */
};

int disk_init(struct disk *d, struct img *im, struct error *e)
{
  *d = (struct disk){ .img = im, .size = im->size };
  if (!(d->pages = calloc(DISK_CACHE_PAGES, sizeof *d->pages)))
    return error_set(e, ERR_NOMEM, "out of memory for the inspector's cache");
  return 0;
}

void disk_free(struct disk *d)
{
  for (size_t i = 0; d->pages && i < DISK_CACHE_PAGES; i++)
    free(d->pages[i].data);
  free(d->pages);
  d->pages = NULL;
}

static struct disk_page *disk_page(struct disk *d, uint64_t no, struct error *e)
{
  struct disk_page *p = &d->pages[(no * 0x9e3779b97f4a7c15ull >> 40) % DISK_CACHE_PAGES];
  if (p->no == no + 1)
    return p;
  uint64_t off = no * DISK_PAGE;
  size_t len = d->size - off < DISK_PAGE ? (size_t)(d->size - off) : DISK_PAGE;
  if (d->read_limit && d->bytes_read + len > d->read_limit) {
    error_set(e, ERR_FORMAT, "%s: the inspector read more than its limit of %llu bytes",
              d->img->path, (unsigned long long)d->read_limit);
    return NULL;
  }
  p->no = 0;
  if (!p->data && !(p->data = malloc(DISK_PAGE))) {
    error_set(e, ERR_NOMEM, "out of memory for the inspector's cache");
    return NULL;
  }
  if (img_pread(d->img, p->data, len, off, e) < 0)
    return NULL;
  memset(p->data + len, 0, DISK_PAGE - len);
  d->bytes_read += len;
  p->no = no + 1;
  return p;
}

int disk_pread(struct disk *d, void *buf, size_t len, uint64_t off, struct error *e)
{
  if (off > d->size || len > d->size - off)
    return error_set(e, ERR_FORMAT, "%s: read of %zu bytes at offset %llu is past the end of "
                     "the %llu-byte disk", d->img->path, len, (unsigned long long)off,
                     (unsigned long long)d->size);
  uint8_t *out = buf;
  while (len) {
    uint64_t no = off / DISK_PAGE;
    size_t in = (size_t)(off % DISK_PAGE), n = DISK_PAGE - in < len ? DISK_PAGE - in : len;
    struct disk_page *p = disk_page(d, no, e);
    if (!p)
      return -1;
    memcpy(out, p->data + in, n);
    out += n;
    off += n;
    len -= n;
  }
  return 0;
}
