/* fuzz_ova.c - libFuzzer harness: open the input as an OVA from memory: the tar
 * listing, the OVF, the manifest digests and the VMDK inside; walk the map
 * and read what it calls data. Nothing the input names is
 * opened: the image's path is in a directory that does not exist, so a text
 * descriptor's extent files cannot be resolved, and absolute or '..' extent
 * paths are refused (allow_extent_paths is off). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_read_image(fuzz_open(data, size, "/nonexistent-amiport-fuzz/fuzz.ova", "ova"));
  return 0;
}
