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
  "      --output FORMAT       human (default) or json\n"
  "  -h, --help                show this help\n";

static void print_extent(const struct extent *x, enum output out, bool first)
{
  if (out == OUTPUT_JSON)
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": 0, \"present\": %s, "
           "\"zero\": %s, \"data\": %s}",
           first ? "[" : ",\n", x->off, x->len, x->kind == EXTENT_HOLE ? "false" : "true",
           x->kind == EXTENT_DATA ? "false" : "true", x->kind == EXTENT_DATA ? "true" : "false");
  else
    printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " %s\n", x->off, x->len, extent_kind_name(x->kind));
}

int cmd_map(int argc, char **argv)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    { "output", required_argument, NULL, 'O' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  enum output out = OUTPUT_HUMAN;
  struct image_args ia = { 0 };
  int c;
  while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'O': if (cli_parse_output("map", optarg, &out)) return EXIT_USAGE; break;
    case 'h': fputs(help, stdout); return EXIT_OK;
    default: if (cli_image_option("map", c, optarg, &ia) < 0) return EXIT_USAGE; break;
    }
  }
  if (optind + 1 != argc)
    return cli_usage("map", "expects one IMAGE");
  struct error e = { 0 };
  struct img *im = img_open(argv[optind], ia.format, &ia.open, &e);
  if (!im)
    return cli_fail(&e);
  if (out == OUTPUT_HUMAN)
    printf("%-18s %-18s %s\n", "Offset", "Length", "Kind");
  struct extent_list map = { 0 };
  struct extent pend = { 0 };
  bool first = true;
  int rc = EXIT_OK;
  /* Ask a window at a time; merge runs that continue across windows. */
  for (uint64_t off = 0; off < im->size; off += 1ull << 30) {
    map.n = 0;
    uint64_t len = im->size - off < (1ull << 30) ? im->size - off : 1ull << 30;
    if (img_extents(im, off, len, &map, &e) < 0) {
      rc = EXIT_FAIL;
      break;
    }
    for (size_t i = 0; i < map.n; i++) {
      if (pend.len && pend.kind == map.v[i].kind) {
        pend.len += map.v[i].len;
        continue;
      }
      if (pend.len) {
        print_extent(&pend, out, first);
        first = false;
      }
      pend = map.v[i];
    }
  }
  if (rc == EXIT_OK) {
    if (pend.len) {
      print_extent(&pend, out, first);
      first = false;
    }
    if (out == OUTPUT_JSON)
      puts(first ? "[]" : "]");
  }
  extent_list_free(&map);
  img_close(im);
  return rc == EXIT_OK ? rc : cli_fail(&e);
}
