/* fuzz_vhd.c - libFuzzer harness: open the input as vpc from memory, walk
 * its map and read what the map calls data. Nothing the input names is
 * opened (differencing parents are refused: allow_backing is off). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_read_image(fuzz_open(data, size, "fuzz.vhd", "vpc"));
  return 0;
}
