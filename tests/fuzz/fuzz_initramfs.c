/* fuzz_initramfs.c - libFuzzer harness: the input is an initramfs file
 * (cpio, optionally compressed, optionally after an early archive). The
 * first input byte picks a window size, to reach the refill paths. */
#include "fuzz.h"
#include "kernel.h"

#include <string.h>

struct mem {
  const uint8_t *p;
  size_t n, window;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len, uint64_t off, struct error *e)
{
  (void)e;
  struct mem *m = ctx;
  if (off >= m->n)
    return 0;
  size_t take = m->n - off < len ? m->n - (size_t)off : len;
  if (take > m->window)
    take = m->window;
  memcpy(buf, m->p + off, take);
  return (ssize_t)take;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  struct mem m = { data + 1, size - 1, (size_t)data[0] * 64 + 1 };
  struct initramfs_info info;
  struct error e;
  initramfs_scan_stream(mem_read, &m, m.n, "fuzz.initrd", &info, &e);
  return 0;
}
