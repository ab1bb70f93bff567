/* fuzz_inspect.c - libFuzzer harness: the input is a whole disk image
 * (raw); the normalizer runs over it as `amiport check` does: partition
 * tables, filesystems, bootloaders, kernels, initramfs, config files, and
 * the fstab resolved as check --vm does. */
#include "inspect.h"

#include <json-c/json.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct error e = { 0 };
  struct img *im = fuzz_open(data, size, "fuzz.img", "raw");
  if (!im)
    return 0;
  static struct inspection in;
  if (inspect_image(im, &in, &e) == 0) {
    /* the disk as a VM's root and as its own data disk: fstab against both */
    const struct inspection *others[1] = { &in };
    inspect_judge_vm(&in, others, 1);
    struct json_object *j = inspect_to_json(&in);
    json_object_put(j);
  }
  inspect_free(&in);
  img_close(im);
  return 0;
}
