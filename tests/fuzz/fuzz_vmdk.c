/* fuzz_vmdk.c - libFuzzer harness: open the input as a VMDK from memory, walk
 * its map and read what the map calls data. Nothing the input names is
 * opened: the image's path is in a directory that does not exist, so a text
 * descriptor's extent files cannot be resolved, and absolute or '..' extent
 * paths are refused (allow_extent_paths is off). */
#include "image.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  struct error e = { 0 };
  struct open_opts o = { .quiet = true, .max_table_bytes = 1 << 20 };
  struct img *im = img_open_fd(fd, "/nonexistent-amiport-fuzz/fuzz.vmdk", "vmdk", &o, &e);
  if (!im)
    return 0;
  /* Only the first 64 MiB of the guest: enough to reach every table the
   * input can point at without making one input take seconds. */
  uint64_t span = im->size < (64u << 20) ? im->size : (64u << 20);
  struct extent_list map = { 0 };
  static uint8_t buf[1 << 17];
  if (img_extents(im, 0, span, &map, &e) == 0)
    for (size_t i = 0; i < map.n && i < 64; i++) {
      size_t n = map.v[i].len < sizeof buf ? (size_t)map.v[i].len : sizeof buf;
      img_pread(im, buf, n, map.v[i].off, &e);
      if (map.v[i].len > 1000) /* an unaligned read inside a grain, too */
        img_pread(im, buf, 777, map.v[i].off + 100, &e);
    }
  extent_list_free(&map);
  img_close(im);
  return 0;
}
