/* check.c - amiport check: will this disk boot on EC2, and if not, why. */
#include "cli.h"
#include "ebs.h"
#include "ec2.h"
#include "inspect.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static const char help[] =
  "Usage: amiport check " IMAGE_USAGE " [--output=human|json] [--deep] [--vm] IMAGE...\n"
  "       amiport check " IMAGE_USAGE " [--output=human|json] --fix IMAGE\n\n"
  "Reads the guest on IMAGE without mounting it (partition table, filesystems,\n"
  "bootloader, kernels, initramfs, fstab) and says whether it will boot on EC2,\n"
  "what registration would use, and what to change. A Windows disk (NTFS and\n"
  "Windows's boot manager or boot code) gets WINDOWS_LICENSE, a bare filesystem\n"
  "(an old paravirtual image) PARAVIRTUAL_ONLY. With several images, each gets\n"
  "its report (in JSON, an array of them, each naming its \"image\").\n"
  "For an AMI (ami-...) its billing codes are read too: a platform other than\n"
  "Linux/UNIX, a usage operation other than RunInstances, billing products or product\n"
  "codes, which an AMI registered from its snapshots would not carry, are a\n"
  "BILLING_CODES_LOST warning (the exit status stays what the disk decides).\n\n"
  IMAGE_HELP
         BUNDLE_SOURCE_HELP
  "  check reads a bundle whole into a sparse file under $TMPDIR (deleted when it\n"
  "  ends), because inspection reads anywhere on the disk.\n"
  "      --output FORMAT       human (default) or json\n"
  "      --vm                  the IMAGEs are the disks of one VM, the first its root:\n"
  "                            a UUID= or LABEL= line of the root's /etc/fstab that no\n"
  "                            disk's filesystem matches is FSTAB_UNRESOLVED ('amiport\n"
  "                            import' of several disks checks them so)\n"
  "      --deep                also inspect through libguestfs (LVM, btrfs, Windows;\n"
  "                            its appliance takes seconds to start, once for all the\n"
  "                            images; the variables LIBGUESTFS_BACKEND and\n"
  "                            LIBGUESTFS_BACKEND_SETTINGS apply). With several\n"
  "                            images, a UUID two of them share makes libguestfs's\n"
  "                            fstab mount points ambiguous between them\n"
  "      --fix                 repair IMAGE in place through libguestfs (read-write:\n"
  "                            raw and qcow2 only, and not while a VM uses it; work on\n"
  "                            a copy to keep the original): /etc/fstab entries that\n"
  "                            name a device of this disk as /dev/sdX, hdX, vdX or xvdX\n"
  "                            get the filesystem's UUID=; when the default boot entry\n"
  "                            has no serial console, console=ttyS0 (x86) or\n"
  "                            console=ttyAMA0 (arm64) is added to the kernel command\n"
  "                            lines in GRUB's grub.cfg (and GRUB_CMDLINE_LINUX in\n"
  "                            /etc/default/grub), menu.lst, extlinux.conf and boot\n"
  "                            loader entries; when the kernel has nvme or ena as a\n"
  "                            module its initramfs lacks, they are added to it by the\n"
  "                            guest's own update-initramfs or dracut, run in the\n"
  "                            appliance, so only for a guest of this host's\n"
  "                            architecture. What it cannot change (no such tool,\n"
  "                            another architecture, a device on another disk) is a\n"
  "                            FIX_ finding. Prints each change, then checks the\n"
  "                            result; nothing is written when there is nothing to\n"
  "                            change\n"
  "  -h, --help                show this help\n\n"
  "Exit status: 0 importable (every IMAGE), 1 not importable (or an error), 2 usage\n"
  "error.\n";

static void print_human(const struct inspection *in, struct json_object *j)
{
  char b1[32], b2[32];
  printf("%s: %s, %s, partition table %s\n", in->disk.img->path, in->format,
         cli_human_size(in->virtual_size, b1), part_table_name(in->pt.kind));
  for (size_t i = 0; i < in->nvol; i++) {
    const struct inspect_volume *v = &in->vol[i];
    /* NTFS is named, not read, but its label is known. */
    bool named = v->mounted || (v->fs_name && strcmp(v->fs_name, "ntfs") == 0);
    printf("  %-3u %10s at %-10s %-22s %-12s %s%s\n", v->part ? v->part->index : 0,
           cli_human_size(v->size, b1), cli_human_size(v->start, b2),
           v->part ? v->part->type : "whole disk", v->fs_name ? v->fs_name : "-",
           named && v->fs.label[0] ? "label=" : "", named ? v->fs.label : "");
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

/* An AMI whose billing codes an image registered from its snapshots would
 * not carry: a BILLING_CODES_LOST warning on in. */
static int check_billing(const char *ami, const struct image_args *ia, struct inspection *in,
                         struct error *e)
{
  struct aws_ctx ctx;
  struct ec2_image_info *im = malloc(sizeof *im);
  if (!im)
    return error_set(e, ERR_NOMEM, "out of memory");
  int rc = aws_ctx_init(&ctx, &ia->aws, e);
  if (rc == 0) {
    rc = ec2_describe_image(&ctx, ami, im, e);
    aws_ctx_free(&ctx);
  }
  char lost[400];
  if (rc == 0 && ec2_billing_lost(im, lost, sizeof lost))
    inspect_add_finding(in, "BILLING_CODES_LOST", SEV_WARNING,
                        "%s carries %s; an AMI registered from its snapshots (amiport import or "
                        "register) would not (CopyImage keeps them, as does CreateImage from an "
                        "instance launched from it)",
                        ami, lost);
  free(im);
  return rc;
}

/* Opens and reads one image; NULL (e set) on failure. */
static struct inspection *check_read(const char *path, const struct image_args *ia,
                                     struct img **im, struct error *e)
{
  if (!(*im = cli_open_image(path, ia, e)))
    return NULL;
  if (img_sequential(*im)) { /* a bundle: inspection reads anywhere */
    struct img *spool = cli_spool(*im, false, e);
    img_close(*im);
    if (!(*im = spool))
      return NULL;
  }
  struct inspection *in = calloc(1, sizeof *in);
  if (!in) {
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  if (inspect_image(*im, in, e) < 0 ||
      (strncmp(path, "ami-", 4) == 0 && check_billing(path, ia, in, e) < 0)) {
    inspect_free(in);
    free(in);
    return NULL;
  }
  return in;
}

static void check_free(struct inspection *in)
{
  if (in) {
    inspect_free(in);
    free(in);
  }
}

/* --fix: repairs the image, then reads it again; the notes of what could
 * not be repaired join the new findings. */
static int check_fix(const char *path, const struct image_args *ia, struct img **im,
                     struct inspection **in, struct fix_report *fr, struct error *e)
{
  if (inspect_fix(*im, *in, fr, e) < 0)
    return -1;
  check_free(*in);
  *in = NULL;
  img_close(*im);
  *im = NULL;
  if (!(*in = check_read(path, ia, im, e)))
    return -1;
  for (size_t i = 0; i < fr->nnotes; i++)
    inspect_add_finding(*in, fr->notes[i].code, fr->notes[i].severity, "%s", fr->notes[i].message);
  return 0;
}

static struct json_object *check_fix_json(const struct fix_report *fr)
{
  struct json_object *o = json_object_new_object(), *a = json_object_new_array();
  for (size_t i = 0; i < fr->nchanges; i++)
    json_object_array_add(a, json_object_new_string(fr->changes[i]));
  json_object_object_add(o, "changes", a);
  json_object_object_add(o, "image_changed", json_object_new_boolean(fr->image_changed));
  return o;
}

int cmd_check(int argc, char **argv)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    BUNDLE_SOURCE_LONGOPTS,
    { "output", required_argument, NULL, 'O' },
    { "deep", no_argument, NULL, 'D' },
    { "fix", no_argument, NULL, 'X' },
    { "vm", no_argument, NULL, 'V' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  enum output out = OUTPUT_HUMAN;
  struct image_args ia = { 0 };
  bool deep = false, fix = false, vm = false;
  int c;
  while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'O': if (cli_parse_output("check", optarg, &out)) return EXIT_USAGE; break;
    case 'D': deep = true; break;
    case 'X': fix = true; break;
    case 'V': vm = true; break;
    case 'h': fputs(help, stdout); return EXIT_OK;
    default: if (cli_image_option("check", c, optarg, &ia) < 0) return EXIT_USAGE; break;
    }
  }
  if (optind == argc)
    return cli_usage("check", "expects an IMAGE");
  size_t n = (size_t)(argc - optind);
  if (fix && n != 1)
    return cli_usage("check", "--fix repairs one IMAGE at a time");
  char **paths = argv + optind;
  struct error e = { 0 };
  struct img **ims = calloc(n, sizeof *ims);
  struct inspection **ins = calloc(n, sizeof *ins);
  struct json_object **deeps = calloc(n, sizeof *deeps);
  struct fix_report *fr = fix ? calloc(1, sizeof *fr) : NULL;
  int rc = EXIT_FAIL;
  if (!ims || !ins || !deeps || (fix && !fr)) {
    error_set(&e, ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if (!(ins[i] = check_read(paths[i], &ia, &ims[i], &e)))
      goto out;
  if (fix && check_fix(paths[0], &ia, &ims[0], &ins[0], fr, &e) < 0)
    goto out;
  if (vm)
    inspect_judge_vm(ins[0], (const struct inspection *const *)ins + 1, n - 1);
  if (deep && inspect_deep(ims, ins, n, deeps, &e) < 0)
    goto out;
  struct json_object *all = n > 1 && out == OUTPUT_JSON ? json_object_new_array() : NULL;
  bool importable = true;
  for (size_t i = 0; i < n; i++) {
    struct img *im = ims[i];
    struct inspection *in = ins[i];
    struct json_object *j = inspect_to_json(in);
    bool remote = strncmp(im->path, "ebs:", 4) == 0;
    if (n > 1)
      json_object_object_add(j, "image", json_object_new_string(paths[i]));
    if (remote) /* a snapshot read in place: what it cost, in the service's blocks */
      json_object_object_add(j, "snapshot_blocks_fetched",
                             json_object_new_int64((int64_t)ebs_blocks_fetched(im)));
    if (deep) {
      json_object_object_add(j, "deep", deeps[i]);
      deeps[i] = NULL;
    }
    if (fix)
      json_object_object_add(j, "fix", check_fix_json(fr));
    importable &= inspect_importable(in);
    if (out == OUTPUT_JSON) {
      if (all) {
        json_object_array_add(all, j);
      } else {
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
      }
      continue;
    }
    if (i > 0)
      putchar('\n');
    if (fix) {
      if (fr->nchanges) {
        printf("Fixed %s:\n", paths[0]);
        for (size_t k = 0; k < fr->nchanges; k++)
          printf("  %s\n", fr->changes[k]);
      } else {
        printf("Nothing to fix on %s%s.\n", paths[0],
               fr->nnotes ? " that --fix can change (see the FIX_ findings)" : "");
      }
      printf("After --fix:\n");
    }
    print_human(in, j);
    if (remote)
      printf("Fetched %llu blocks of 512 KiB from %s.\n",
             (unsigned long long)ebs_blocks_fetched(im), im->path + 4);
    json_object_put(j);
  }
  if (all) {
    puts(json_object_to_json_string_ext(all, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(all);
  }
  rc = importable ? EXIT_OK : EXIT_FAIL;
out:
  for (size_t i = 0; ins && ims && i < n; i++) {
    check_free(ins[i]);
    if (ims[i])
      img_close(ims[i]);
    if (deeps && deeps[i])
      json_object_put(deeps[i]);
  }
  free(ims);
  free(ins);
  free(deeps);
  free(fr);
  return rc == EXIT_FAIL && e.msg[0] ? cli_fail(&e) : rc;
}
