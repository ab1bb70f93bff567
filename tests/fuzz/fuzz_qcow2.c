/* fuzz_qcow2.c - libFuzzer harness: open the input as qcow2 from memory,
 * walk its map and read what the map calls data. Nothing the input names is
 * opened (backing files are refused: allow_backing is off). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_read_image(fuzz_open(data, size, "fuzz.qcow2", "qcow2"));
  return 0;
}
