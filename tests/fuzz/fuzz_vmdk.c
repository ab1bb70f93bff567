/* fuzz_vmdk.c - libFuzzer harness: open the input as a VMDK from memory, walk
 * its map and read what the map calls data. Nothing the input names is
 * opened: the image's path is in a directory that does not exist, so a text
 * descriptor's extent files cannot be resolved, and absolute or '..' extent
 * paths are refused (allow_extent_paths is off). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_read_image(fuzz_open(data, size, "/nonexistent-amiport-fuzz/fuzz.vmdk", "vmdk"));
  return 0;
}
