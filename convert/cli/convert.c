/* convert.c - amiport convert: copy an image into another format. */
#include "cli.h"
#include "copy.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void help(void)
{
  printf("Usage: amiport convert " IMAGE_USAGE "\n"
         "                       -O FMT [-o OPTIONS] [-c] [-p] [-j N] [--force] [--verify] [--sync]\n"
         "                       SRC DST\n\n"
         "Copies SRC into a new image DST of format FMT, reading only the data SRC's map\n"
         "names and leaving zeros unallocated. DST is written under a temporary name and\n"
         "renamed only when complete; on failure or Ctrl-C nothing is left behind.\n\n"
         IMAGE_HELP
         BUNDLE_SOURCE_HELP
         "  -O, --output-format FMT  format of DST (required)\n"
         "  -o, --options OPTS       format options, key=value[,key=value...] (below)\n"
         "  -c, --compress           compress the data (qcow2)\n"
         "  -p, --progress           show progress (default when stderr is a terminal)\n"
         "  -j, --jobs N             worker threads (default: one per core)\n"
         "      --force              overwrite DST if it exists\n"
         "      --verify             read DST back and compare it with SRC before renaming\n"
         "      --sync               flush DST to stable storage before renaming it (slower;\n"
         "                           like qemu-img, the default leaves that to the kernel)\n"
         "  -h, --help               show this help\n");
  for (const struct image_format *const *f = img_formats(); *f; f++)
    if ((*f)->create && (*f)->create_help && *(*f)->create_help)
      printf("\nOptions for -O %s:\n%s", (*f)->name, (*f)->create_help);
}

int cmd_convert(int argc, char **argv)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    BUNDLE_SOURCE_LONGOPTS,
    { "output-format", required_argument, NULL, 'O' },
    { "options", required_argument, NULL, 'o' },
    { "compress", no_argument, NULL, 'c' },
    { "progress", no_argument, NULL, 'p' },
    { "jobs", required_argument, NULL, 'j' },
    { "force", no_argument, NULL, 'F' },
    { "verify", no_argument, NULL, 'V' },
    { "sync", no_argument, NULL, 'S' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  const char *out_fmt = NULL;
  struct image_args ia = { 0 };
  struct create_opts co = { 0 };
  struct copy_opts cp = { .progress = isatty(2), .cancel = &cli_interrupted };
  bool force = false;
  struct error e = { 0 };
  int c, rc = EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "f:O:o:cpj:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'O': out_fmt = optarg; break;
    case 'o':
      if (create_opts_parse(&co, optarg, &e) < 0) {
        rc = cli_usage("convert", "%s", e.msg);
        goto out;
      }
      break;
    case 'c': co.compress = true; break;
    case 'p': cp.progress = true; break;
    case 'j': {
      char *end;
      long n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 256) {
        rc = cli_usage("convert", "--jobs must be 1 to 256, not '%s'", optarg);
        goto out;
      }
      cp.threads = (unsigned)n;
      break;
    }
    case 'F': force = true; break;
    case 'V': cp.verify = true; break;
    case 'S': co.durable = true; break;
    case 'h': help(); rc = EXIT_OK; goto out;
    default:
      if (cli_image_option("convert", c, optarg, &ia) < 0)
        goto out;
      break;
    }
  }
  if (optind + 2 != argc) {
    rc = cli_usage("convert", "expects SRC and DST");
    goto out;
  }
  if (!out_fmt) {
    rc = cli_usage("convert", "-O FMT is required (the formats are listed in --help)");
    goto out;
  }
  const struct image_format *of = img_format_by_name(out_fmt);
  if (!of || !of->create) {
    rc = cli_usage("convert", "cannot write format '%s'", out_fmt);
    goto out;
  }
  cli_catch_signals();
  struct img *src = cli_open_image(argv[optind], &ia, &e);
  if (!src) {
    rc = cli_fail(&e);
    goto out;
  }
  if (copy_to_file(src, argv[optind + 1], out_fmt, &co, force, &cp, NULL, &e) < 0)
    rc = cli_fail(&e);
  else
    rc = EXIT_OK;
  img_close(src);
out:
  create_opts_free(&co);
  return rc;
}
