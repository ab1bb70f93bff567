/* raw.c - a plain file (or block device) is the disk, byte for byte.
 * The map comes from SEEK_DATA/SEEK_HOLE: holes of a sparse file are
 * "never written". The writer sizes the file up front and writes only data,
 * so runs of zeros that the copy engine skips stay holes. */
#include "image.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define RAW_STREAM_MIN (1u << 20)

static int raw_probe(const uint8_t *head, size_t len)
{
  (void)head;
  (void)len;
  return 1;
}

static int raw_open(struct img *im, const struct open_opts *o, struct error *e)
{
  (void)o;
  struct stat st;
  if (fstat(im->fd, &st) < 0)
    return error_errno(e, "%s: stat", im->path);
  if (S_ISBLK(st.st_mode)) {
    uint64_t size;
    if (ioctl(im->fd, BLKGETSIZE64, &size) < 0)
      return error_errno(e, "%s: BLKGETSIZE64", im->path);
    im->size = size;
  } else {
    im->size = (uint64_t)st.st_size;
  }
  return 0;
}

static int raw_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  return img_pread_file(im->fd, buf, len, off, im->path, e);
}

static int raw_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                       struct error *e)
{
  uint64_t end = off + len;
  while (off < end) {
    off_t data = lseek(im->fd, (off_t)off, SEEK_DATA);
    if (data < 0 && errno == ENXIO) /* no data past off */
      data = (off_t)end;
    else if (data < 0) /* no SEEK_DATA here (block device, old fs): all data */
      return extent_list_add(out, off, end - off, EXTENT_DATA, e);
    if ((uint64_t)data > off &&
        extent_list_add(out, off, ((uint64_t)data < end ? (uint64_t)data : end) - off,
                        EXTENT_HOLE, e) < 0)
      return -1;
    if ((uint64_t)data >= end)
      break;
    off_t hole = lseek(im->fd, data, SEEK_HOLE);
    if (hole < 0)
      return error_errno(e, "%s: SEEK_HOLE", im->path);
    uint64_t stop = (uint64_t)hole < end ? (uint64_t)hole : end;
    if (extent_list_add(out, (uint64_t)data, stop - (uint64_t)data, EXTENT_DATA, e) < 0)
      return -1;
    off = stop;
  }
  return 0;
}

/* A stream (create_opts.stream) is written once and not read back soon:
 * the aligned units, which are nearly all of it, go around the page cache
 * through a second descriptor opened with O_DIRECT, so the kernel neither
 * copies them nor takes fresh cache pages for them (on a VM whose host
 * reclaims freed guest memory, taking pages is the dearest part of a write).
 * The rest is written through the cache, then written back and dropped. */
#define RAW_DIRECT_ALIGN 4096u

struct raw_writer {
  int direct_fd; /* -1: no O_DIRECT here */
};

static int raw_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e)
{
  if (o->compress)
    return error_set(e, ERR_USAGE, "raw images cannot be compressed (-c)");
  im->block_size = 512;
  if (ftruncate(im->fd, (off_t)size) < 0)
    return error_errno(e, "%s: set size to %llu", im->path, (unsigned long long)size);
  if (!im->stream)
    return 0;
  struct raw_writer *w = malloc(sizeof *w);
  if (!w)
    return error_set(e, ERR_NOMEM, "out of memory");
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", im->fd);
  w->direct_fd = open(self, O_WRONLY | O_DIRECT | O_CLOEXEC);
  im->priv = w;
  return 0;
}

/* 1: written; 0: not aligned, or O_DIRECT refused here (then never again) */
static int raw_pwrite_direct(struct img *im, const void *buf, size_t len, uint64_t off,
                             struct error *e)
{
  struct raw_writer *w = im->priv;
  if (!w || w->direct_fd < 0 || (((uintptr_t)buf | off | len) & (RAW_DIRECT_ALIGN - 1)))
    return 0;
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = pwrite(w->direct_fd, p, len, (off_t)off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EINVAL && p == buf) {
      close(w->direct_fd); /* the file system takes no O_DIRECT writes */
      w->direct_fd = -1;
      return 0;
    }
    if (n <= 0)
      return error_errno(e, "%s: write at offset %llu", im->path, (unsigned long long)off);
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return 1;
}

static int raw_pwrite(struct img *im, const void *buf, size_t len, uint64_t off,
                      struct error *e)
{
  int direct = raw_pwrite_direct(im, buf, len, off, e);
  if (direct)
    return direct < 0 ? -1 : 0;
  if (img_pwrite_file(im->fd, buf, len, off, im->path, e) < 0)
    return -1;
  if (!im->stream || len < RAW_STREAM_MIN)
    return 0;
  /* Written back and dropped from the cache as it goes: the cache does not
   * fill with dirty pages nobody reads again, and the pages freed are the
   * next ones used. A failure of the write-back is the write's: fsync
   * would not see it. */
  if (sync_file_range(im->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WAIT_BEFORE |
                      SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
    if (errno != EINVAL && errno != ESPIPE && errno != ENOSYS)
      return error_errno(e, "%s: write at offset %llu", im->path, (unsigned long long)off);
    return 0; /* not supported here: the cache keeps it until fsync */
  }
  posix_fadvise(im->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
  return 0;
}

static int raw_finish(struct img *im, struct error *e)
{
  if (img_sync(im) < 0)
    return error_errno(e, "%s: fsync", im->path);
  return 0;
}

static void raw_close(struct img *im)
{
  struct raw_writer *w = im->priv;
  if (w && w->direct_fd >= 0)
    close(w->direct_fd);
  free(w);
  im->priv = NULL;
}

const struct image_format format_raw = {
  .name = "raw",
  .description = "raw disk image (sparse file or block device)",
  .create_help = "",
  .probe = raw_probe,
  .open = raw_open,
  .pread = raw_pread,
  .extents = raw_extents,
  .create = raw_create,
  .pwrite = raw_pwrite,
  .finish = raw_finish,
  .close = raw_close,
};
