/* fuzz_vhdx.c - libFuzzer harness: open the input as vhdx from memory, walk
 * its map and read what the map calls data. Nothing the input names is
 * opened.
 *
 * A VHDX puts its regions on MiB boundaries, so even an empty one is several
 * MiB; mutating that byte for byte would waste most runs on zeros. The input
 * is a compact picture of the file instead, which this harness spreads out:
 *   input [0, 4K)    -> file [0, 4K)          file identifier
 *   input [4K, 8K)   -> file [64K, 68K)       header 1
 *   input [8K, 12K)  -> file [128K, 132K)     header 2
 *   input [12K, 16K) -> file [192K, 196K)     region table 1 (rest zeros)
 *   input [16K, 20K) -> file [256K, 260K)     region table 2
 *   then 16K per MiB of file from 1 MiB on: the first 8K of the MiB (log
 *   entries, metadata table, BAT, block data) and the 8K at 64K into it
 *   (metadata items).
 * The file is as long as the last MiB the input reaches. Seeds are made the
 * same way from real images (fixtures/fuzz/vhdx/). */
#include "fuzz.h"

static void put(int fd, const uint8_t *p, size_t n, off_t at)
{
  if (n && pwrite(fd, p, n, at) != (ssize_t)n)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > (4u << 20))
    return 0;
  int fd = fuzz_memfd();
  static const off_t head[5] = { 0, 64 << 10, 128 << 10, 192 << 10, 256 << 10 };
  size_t at = 0;
  for (int i = 0; i < 5 && at < size; i++, at += 4096)
    put(fd, data + at, size - at < 4096 ? size - at : 4096, head[i]);
  off_t end = 320 << 10;
  for (off_t mib = 1; at < size; mib++) {
    for (int half = 0; half < 2 && at < size; half++, at += 8192)
      put(fd, data + at, size - at < 8192 ? size - at : 8192, (mib << 20) + (half ? 65536 : 0));
    end = (mib + 1) << 20;
  }
  if (ftruncate(fd, end) < 0)
    abort();
  fuzz_read_image(fuzz_open_fd(fd, "fuzz.vhdx", "vhdx"));
  return 0;
}
