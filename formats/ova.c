/* ova.c - Open Virtualization Archive: not yet readable; the registry lists it so that
 * asking for it gives a clear error. */
#include "image.h"

static int ova_open(struct img *im, const struct open_opts *o, struct error *e)
{
  (void)o;
  return error_set(e, ERR_UNSUPPORTED, "%s: the ova format is not supported yet", im->path);
}

const struct image_format format_ova = {
  .name = "ova",
  .description = "Open Virtualization Archive",
  .flags = FMT_NO_PROBE,
  .open = ova_open,
};
