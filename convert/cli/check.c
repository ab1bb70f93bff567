/* check.c - amiport check: will this disk boot on EC2, and if not, why. */
#include "cli.h"
#include "ebs.h"
#include "inspect.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static const char help[] =
  "Usage: amiport check " IMAGE_USAGE " [--output=human|json] [--deep] IMAGE\n\n"
  "Reads the guest on IMAGE without mounting it (partition table, filesystems,\n"
  "bootloader, kernels, initramfs, fstab) and says whether it will boot on EC2,\n"
  "what registration would use, and what to change.\n\n"
  IMAGE_HELP
  "      --output FORMAT       human (default) or json\n"
  "      --deep                also inspect through libguestfs (LVM, btrfs, Windows;\n"
  "                            its appliance takes seconds to start; the variables\n"
  "                            LIBGUESTFS_BACKEND and LIBGUESTFS_BACKEND_SETTINGS apply)\n"
  "  -h, --help                show this help\n\n"
  "Exit status: 0 importable, 1 not importable (or an error), 2 usage error.\n";

static void print_human(const struct inspection *in, struct json_object *j)
{
  char b1[32], b2[32];
  printf("%s: %s, %s, partition table %s\n", in->disk.img->path, in->format,
         cli_human_size(in->virtual_size, b1), part_table_name(in->pt.kind));
  for (size_t i = 0; i < in->nvol; i++) {
    const struct inspect_volume *v = &in->vol[i];
    printf("  %-3u %10s at %-10s %-22s %-12s %s%s\n", v->part ? v->part->index : 0,
           cli_human_size(v->size, b1), cli_human_size(v->start, b2),
           v->part ? v->part->type : "whole disk", v->fs_name ? v->fs_name : "-",
           v->mounted && v->fs.label[0] ? "label=" : "", v->mounted ? v->fs.label : "");
  }
  printf("OS:           %s\n", in->os_pretty[0] ? in->os_pretty : in->os_id[0] ? in->os_id : "unknown");
  printf("Architecture: %s\n", in->arch ? in->arch : in->efi_arch ? in->efi_arch : "unknown");
  printf("Boot modes:   %s%s%s\n", in->bios ? "legacy-bios " : "", in->uefi ? "uefi" : "",
         !in->bios && !in->uefi ? "none" : "");
  printf("Bootloader:   %s%s%s\n", in->bootloader[0] ? in->bootloader : "none",
         in->efi_loader[0] ? ", " : "", in->efi_loader);
  for (size_t i = 0; i < in->nkernels; i++)
    printf("Kernel:       %s (%s)%s\n", in->kernels[i].version,
           in->kernels[i].arch ? in->kernels[i].arch : "?",
           in->kernels[i].is_default ? " default" : "");
  if (in->default_kernel >= 0)
    printf("Drivers:      nvme %s, ena %s, xen-blkfront %s\n",
           driver_state_name(in->drivers[INITRAMFS_NVME]),
           driver_state_name(in->drivers[INITRAMFS_ENA]),
           driver_state_name(in->drivers[INITRAMFS_XEN_BLKFRONT]));
  if (in->nfindings) {
    printf("Findings:\n");
    for (size_t i = 0; i < in->nfindings; i++)
      printf("  %-7s %s: %s\n", severity_name(in->findings[i].severity), in->findings[i].code,
             in->findings[i].message);
  }
  struct json_object *ami;
  json_object_object_get_ex(j, "ami", &ami);
  printf("Importable:   %s\n", inspect_importable(in) ? "yes" : "no");
  printf("AMI:          %s\n",
         json_object_to_json_string_ext(ami, JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
  printf("Read %s from the image.\n", cli_human_size(in->disk.bytes_read, b1));
  struct json_object *deep;
  if (json_object_object_get_ex(j, "deep", &deep) && deep)
    printf("libguestfs:   %s\n", json_object_to_json_string_ext(deep, JSON_C_TO_STRING_SPACED |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
}

int cmd_check(int argc, char **argv)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    { "output", required_argument, NULL, 'O' },
    { "deep", no_argument, NULL, 'D' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  enum output out = OUTPUT_HUMAN;
  struct image_args ia = { 0 };
  bool deep = false;
  int c;
  while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'O': if (cli_parse_output("check", optarg, &out)) return EXIT_USAGE; break;
    case 'D': deep = true; break;
    case 'h': fputs(help, stdout); return EXIT_OK;
    default: if (cli_image_option("check", c, optarg, &ia) < 0) return EXIT_USAGE; break;
    }
  }
  if (optind + 1 != argc)
    return cli_usage("check", "expects one IMAGE");
  struct error e = { 0 };
  struct img *im = cli_open_image(argv[optind], &ia, &e);
  if (!im)
    return cli_fail(&e);
  struct inspection *in = calloc(1, sizeof *in);
  int rc = EXIT_FAIL;
  if (!in) {
    error_set(&e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (inspect_image(im, in, &e) < 0)
    goto out;
  struct json_object *deep_report = NULL;
  if (deep && inspect_deep(im, in, &deep_report, &e) < 0)
    goto out;
  struct json_object *j = inspect_to_json(in);
  bool remote = strncmp(im->path, "ebs:", 4) == 0;
  if (remote) /* a snapshot read in place: what it cost, in the service's blocks */
    json_object_object_add(j, "snapshot_blocks_fetched",
                           json_object_new_int64((int64_t)ebs_blocks_fetched(im)));
  if (deep)
    json_object_object_add(j, "deep", deep_report);
  if (out == OUTPUT_JSON)
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  else
    print_human(in, j);
  if (remote && out != OUTPUT_JSON)
    printf("Fetched %llu blocks of 512 KiB from %s.\n",
           (unsigned long long)ebs_blocks_fetched(im), im->path + 4);
  json_object_put(j);
  rc = inspect_importable(in) ? EXIT_OK : EXIT_FAIL;
out:
  if (in) {
    inspect_free(in);
    free(in);
  }
  img_close(im);
  return rc == EXIT_FAIL && e.msg[0] ? cli_fail(&e) : rc;
}
