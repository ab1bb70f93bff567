/* vhdx.c - Microsoft Virtual Hard Disk v2: not yet readable; the registry lists it so that
 * asking for it gives a clear error. */
#include "image.h"

static int vhdx_open(struct img *im, const struct open_opts *o, struct error *e)
{
  (void)o;
  return error_set(e, ERR_UNSUPPORTED, "%s: the vhdx format is not supported yet", im->path);
}

const struct image_format format_vhdx = {
  .name = "vhdx",
  .description = "Microsoft Virtual Hard Disk v2",
  .flags = FMT_NO_PROBE,
  .open = vhdx_open,
};
