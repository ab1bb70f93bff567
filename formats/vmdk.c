/* vmdk.c - VMware virtual disk: not yet readable; the registry lists it so that
 * asking for it gives a clear error. */
#include "image.h"

static int vmdk_open(struct img *im, const struct open_opts *o, struct error *e)
{
  (void)o;
  return error_set(e, ERR_UNSUPPORTED, "%s: the vmdk format is not supported yet", im->path);
}

const struct image_format format_vmdk = {
  .name = "vmdk",
  .description = "VMware virtual disk",
  .flags = FMT_NO_PROBE,
  .open = vmdk_open,
};
