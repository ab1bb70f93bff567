/* map.c - amiport map: where the data, zeros and holes are. The JSON has the
 * shape of `qemu-img map --output=json`. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char help[] =
  "Usage: amiport map " IMAGE_USAGE " [--output=human|json] IMAGE\n\n"
  "Prints the image's map: each run of data, zeros (written as zeros) and holes\n"
  "(never written). The JSON has the shape of 'qemu-img map --output=json'.\n\n"
  IMAGE_HELP
         BUNDLE_SOURCE_HELP
  "      --output FORMAT       human (default) or json\n"
  "  -h, --help                show this help\n";

struct printer {
  enum output out;
  bool first;
};

static int print_extent(void *ctx, const struct extent *x, struct error *e)
{
  (void)e;
  struct printer *p = ctx;
  enum output out = p->out;
  bool first = p->first;
  p->first = false;
  if (out == OUTPUT_JSON)
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": 0, \"present\": %s, "
           "\"zero\": %s, \"data\": %s}",
           first ? "[" : ",\n", x->off, x->len, x->kind == EXTENT_HOLE ? "false" : "true",
           x->kind == EXTENT_DATA ? "false" : "true", x->kind == EXTENT_DATA ? "true" : "false");
  else
    printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " %s\n", x->off, x->len, extent_kind_name(x->kind));
  return 0;
}

int cmd_map(int argc, char **argv)
{
  enum output out = OUTPUT_HUMAN;
  struct image_args ia = { 0 };
  int rc = cli_image_command("map", help, argc, argv, &ia, &out);
  if (rc >= 0)
    return rc;
  struct error e = { 0 };
  struct img *im = cli_open_image(argv[optind], &ia, &e);
  if (!im)
    return cli_fail(&e);
  if (out == OUTPUT_HUMAN)
    printf("%-18s %-18s %s\n", "Offset", "Length", "Kind");
  struct printer p = { out, true };
  rc = img_map_walk(im, print_extent, &p, &e) < 0 ? EXIT_FAIL : EXIT_OK;
  if (rc == EXIT_OK && out == OUTPUT_JSON)
    puts(p.first ? "[]" : "]");
  img_close(im);
  return rc == EXIT_OK ? rc : cli_fail(&e);
}
