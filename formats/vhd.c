/* vhd.c - Microsoft Virtual Hard Disk: not yet readable; the registry lists it so that
 * asking for it gives a clear error. */
#include "image.h"

static int vhd_open(struct img *im, const struct open_opts *o, struct error *e)
{
  (void)o;
  return error_set(e, ERR_UNSUPPORTED, "%s: the vpc (VHD) format is not supported yet", im->path);
}

const struct image_format format_vhd = {
  .name = "vpc",
  .alias = "vhd",
  .description = "Microsoft Virtual Hard Disk",
  .flags = FMT_NO_PROBE,
  .open = vhd_open,
};
