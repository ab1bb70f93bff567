/* fuzz.h - what the libFuzzer harnesses share: the input as an in-memory
 * file (a memfd, so no file the input names is ever opened next to it), and
 * the walks every format and filesystem harness does. Each harness is one
 * .c file that includes this once. */
#ifndef AMIPORT_FUZZ_H
#define AMIPORT_FUZZ_H

#include "fs.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An empty in-memory file. */
static inline int fuzz_memfd(void)
{
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0)
    abort();
  return fd;
}

/* The input as an image of format fmt; name sits in a directory that does
 * not exist, so even a relative path the input names resolves nowhere. */
static inline struct img *fuzz_open_fd(int fd, const char *name, const char *fmt)
{
  struct error e = { 0 };
  struct open_opts o = { .quiet = true, .max_table_bytes = 1 << 20 };
  return img_open_fd(fd, name, fmt, &o, &e);
}

static inline struct img *fuzz_open(const uint8_t *data, size_t size, const char *name, const char *fmt)
{
  int fd = fuzz_memfd();
  if (write(fd, data, size) != (ssize_t)size)
    abort();
  return fuzz_open_fd(fd, name, fmt);
}

/* Walks the map of the first 64 MiB of the guest (enough to reach every
 * table an input can point at without one input taking seconds) and reads
 * what it calls data; closes the image. */
static inline void fuzz_read_image(struct img *im)
{
  if (!im)
    return;
  struct error e = { 0 };
  uint64_t span = im->size < (64u << 20) ? im->size : (64u << 20);
  struct extent_list map = { 0 };
  static uint8_t buf[1 << 16];
  if (img_extents(im, 0, span, &map, &e) == 0)
    for (size_t i = 0; i < map.n && i < 64; i++) {
      size_t n = map.v[i].len < sizeof buf ? (size_t)map.v[i].len : sizeof buf;
      img_pread(im, buf, n, map.v[i].off, &e);
    }
  extent_list_free(&map);
  img_close(im);
}

static inline int fuzz_count_entry(void *ctx, const char *name, uint64_t ino, enum fs_ftype type)
{
  (void)name;
  (void)ino;
  (void)type;
  return ++*(unsigned *)ctx >= 4096; /* stop after 4096 entries */
}

/* The input as a raw disk holding a filesystem at offset 0: mounts it,
 * reads and resolves files (NULL-terminated list) and lists dirs. Every
 * walk is bounded: the drivers' own bounds, 4096 entries listed, 1 MiB a
 * file, 64 MiB read from the disk. */
static inline void fuzz_walk_fs(const uint8_t *data, size_t size, const char *const *files,
                         const char *const *dirs)
{
  struct img *im = fuzz_open(data, size, "fuzz.img", "raw");
  struct error e = { 0 };
  struct disk d;
  if (!im)
    return;
  if (disk_init(&d, im, &e) == 0) {
    d.read_limit = 64u << 20;
    struct fs fs;
    const char *name;
    if (fs_open(&fs, &d, 0, im->size, &name, &e) == 0) {
      for (size_t i = 0; files[i]; i++) {
        char *buf;
        size_t len;
        struct fs_inode in;
        if (fs_read_file(&fs, files[i], 1u << 20, &buf, &len, &e) == 0)
          free(buf);
        fs_resolve(&fs, files[i], false, &in, &e);
      }
      for (size_t i = 0; dirs[i]; i++) {
        struct fs_inode in;
        unsigned n = 0;
        if (fs_resolve(&fs, dirs[i], true, &in, &e) == 0 && in.type == FS_DIR)
          fs.drv->readdir(&fs, in.ino, fuzz_count_entry, &n, &e);
      }
      fs_close(&fs);
    }
    disk_free(&d);
  }
  img_close(im);
}

#endif
