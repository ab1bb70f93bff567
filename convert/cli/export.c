/* export.c - amiport export: an AMI or EBS snapshot becomes a local image. */
#include "cli.h"
#include "copy.h"
#include "ec2.h"
#include "resume.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
  "Usage: amiport export [OPTIONS] AMI_OR_SNAPSHOT DST\n\n"
  "Reads an EBS snapshot (snap-..., ebs:snap-...) or an AMI's volumes (ami-...)\n"
  "through the EBS direct API and writes it as a local image: the blocks the\n"
  "snapshot holds are fetched in parallel, each checked against its SHA-256, and\n"
  "blocks it never held stay unallocated. DST is written under a temporary name\n"
  "and renamed only when every block arrived and verified.\n\n"
  AWS_HELP
  "  -O, --output-format FMT  raw (default), qcow2, vmdk, vpc or vhdx\n"
  "  -o, --options OPTS       format options, key=value[,key=value...]\n"
  "  -c, --compress           compress the data (qcow2)\n"
  "      --device DEV         the AMI's volume at DEV (default: its root device)\n"
  "      --all                every EBS volume of the AMI: DST gets -DEV before its\n"
  "                           extension (disk.qcow2 -> disk-sdb.qcow2)\n"
  "  -j, --jobs N             requests in flight (default 64)\n"
  "  -p, --progress           show progress (default when stderr is a terminal)\n"
  "      --force              overwrite DST if it exists\n"
  "      --resume             keep the download resumable: blocks go to DST.partial\n"
  "                           (sparse raw) and DST.partial.state records those written;\n"
  "                           run again with --resume after an interruption and only\n"
  "                           the missing blocks are fetched. When all are there,\n"
  "                           DST.partial becomes DST (converted unless -O raw)\n"
  "  An AMI's UEFI variables (DescribeImageAttribute uefiData), if it has any, are\n"
  "  written beside DST as DST.uefi-data (the base64 text RegisterImage takes, as\n"
  "  'import --uefi-data' and 'register --uefi-data' read it), once every volume is\n"
  "  written. A platform, usage operation, billing product or product code that an\n"
  "  AMI registered from the exported disk would lose is a BILLING_CODES_LOST warning.\n"
  "  -h, --help               show this help\n";

/* disk.qcow2 + /dev/sdb -> disk-sdb.qcow2 */
static void per_device_name(const char *dst, const char *dev, char *out, size_t len)
{
  const char *base = strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev;
  const char *slash = strrchr(dst, '/'), *dot = strrchr(dst, '.');
  if (!dot || (slash && dot < slash) || dot == dst || dot[-1] == '/')
    snprintf(out, len, "%s-%s", dst, base);
  else
    snprintf(out, len, "%.*s-%s%s", (int)(dot - dst), dst, base, dot);
}

struct export_args {
  const struct image_args *ia;
  const char *fmt;
  struct create_opts *co;
  bool force, resume;
  const struct copy_opts *cp;
};

/* The copy through DST.partial that a later run can pick up. */
static int export_resumable(const struct export_args *a, struct img *src, const char *snap,
                            const char *dst, struct copy_stats *st, struct error *e)
{
  if (!a->force && access(dst, F_OK) == 0)
    return error_set(e, ERR_EXISTS, "%s: already exists (--force replaces it)", dst);
  struct resume *r = resume_open(dst, snap, src->size, EBS_BLOCK, e);
  if (!r)
    return -1;
  if (resume_blocks_reused(r))
    fprintf(stderr, "amiport: export: resuming %s: %llu blocks already in %s.partial\n", snap,
            (unsigned long long)resume_blocks_reused(r), dst);
  struct img *view = resume_source(r, src, e);
  struct copy_opts cp = *a->cp;
  cp.unit_done = resume_unit_done;
  cp.unit_ctx = r;
  int rc = view ? copy_image(view, resume_target(r), &cp, st, e) : -1;
  if (rc == 0)
    rc = resume_failed(r, e);
  if (rc == 0) {
    rc = resume_complete(r, dst, a->fmt, a->co, a->force, a->cp, e);
  } else if (view) {
    struct error ce;
    if (resume_checkpoint(r, &ce) == 0) /* keep what arrived for the next run */
      snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg),
               " (what arrived is kept in %s.partial: run again with --resume)", dst);
  }
  img_close(view);
  resume_close(r);
  return rc;
}

/* DST.uefi-data: the AMI's UEFI variable store, written under a hidden
 * temporary name beside it and renamed once complete, as the image is. */
static int export_uefi_data(const char *dst, const char *data, struct error *e)
{
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s.uefi-data", dst);
  const char *slash = strrchr(path, '/');
  int dirlen = slash ? (int)(slash - path + 1) : 0;
  snprintf(tmp, sizeof tmp, "%.*s.%s.amiport-%ld", dirlen, path, path + dirlen, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return error_errno(e, "%s: cannot create", tmp);
  size_t len = strlen(data);
  int rc = img_pwrite_file(fd, data, len, 0, tmp, e);
  if (rc == 0)
    rc = img_pwrite_file(fd, "\n", 1, len, tmp, e);
  if (rc == 0 && fsync(fd) < 0)
    rc = error_errno(e, "%s: fsync", tmp);
  if (close(fd) < 0 && rc == 0)
    rc = error_errno(e, "%s: close", tmp);
  if (rc == 0 && rename(tmp, path) < 0)
    rc = error_errno(e, "%s: rename from %s", path, tmp);
  if (rc < 0)
    unlink(tmp);
  return rc;
}

/* What the AMI says beyond its volumes: a BILLING_CODES_LOST warning, and
 * its UEFI variables (*uefi, malloc'd, NULL when it has none). */
static int export_image_extras(struct aws_ctx *ctx, const char *ami, const char *dst, bool force,
                               char **uefi, struct error *e)
{
  struct ec2_image_info *im = malloc(sizeof *im);
  if (!im)
    return error_set(e, ERR_NOMEM, "out of memory");
  int rc = ec2_describe_image(ctx, ami, im, e);
  char lost[1024];
  if (rc == 0 && ec2_billing_lost(im, lost, sizeof lost))
    fprintf(stderr, "amiport: export: warning: BILLING_CODES_LOST: %s carries %s; an AMI "
                    "registered from the exported disk would not\n", ami, lost);
  free(im);
  if (rc == 0)
    rc = ec2_image_attribute(ctx, ami, "uefiData", uefi, e);
  if (rc == 0 && *uefi && !force) {
    char path[4200];
    snprintf(path, sizeof path, "%s.uefi-data", dst);
    if (access(path, F_OK) == 0)
      rc = error_set(e, ERR_EXISTS, "%s: already exists (--force replaces it)", path);
  }
  return rc;
}

static int export_one(const struct export_args *a, const char *snap, const char *dst,
                      struct error *e)
{
  struct img *src = ebs_open(&a->ia->aws, snap, 0, e);
  if (!src)
    return -1;
  struct copy_stats st = { 0 };
  int rc = a->resume ? export_resumable(a, src, snap, dst, &st, e)
                     : copy_to_file(src, dst, a->fmt, a->co, a->force, a->cp, &st, e);
  if (rc == 0) {
    char b[32];
    fprintf(stderr, "amiport: export: %s -> %s: %llu blocks fetched (%s), %.1f s\n", snap, dst,
            (unsigned long long)ebs_blocks_fetched(src), cli_human_size(st.bytes_read, b),
            st.seconds);
  }
  img_close(src);
  return rc;
}

int cmd_export(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    { "output-format", required_argument, NULL, 'O' },
    { "options", required_argument, NULL, 'o' },
    { "compress", no_argument, NULL, 'c' },
    { "device", required_argument, NULL, 0x500 },
    { "all", no_argument, NULL, 0x501 },
    { "jobs", required_argument, NULL, 'j' },
    { "progress", no_argument, NULL, 'p' },
    { "force", no_argument, NULL, 'F' },
    { "resume", no_argument, NULL, 0x502 },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct image_args ia = { 0 };
  struct create_opts co = { .stream = true }; /* a raw file is written around the page cache */
  struct copy_opts cp = { .progress = isatty(2), .cancel = &cli_interrupted, .threads = 16 };
  const char *fmt = "raw", *device = NULL;
  bool all = false, force = false, resume = false;
  struct error e = { 0 };
  int c, rc = EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "O:o:cj:ph", longopts, NULL)) != -1) {
    if (cli_aws_option(c, optarg, &ia.aws))
      continue;
    switch (c) {
    case 'O': fmt = optarg; break;
    case 'o':
      if (create_opts_parse(&co, optarg, &e) < 0) {
        cli_usage("export", "%s", e.msg);
        goto out;
      }
      break;
    case 'c': co.compress = true; break;
    case 0x500: device = optarg; break;
    case 0x501: all = true; break;
    case 'j': {
      char *end;
      long n = strtol(optarg, &end, 10);
      if (*end || n < 4 || n > 1024) {
        cli_usage("export", "--jobs must be 4 to 1024, not '%s'", optarg);
        goto out;
      }
      /* each copy worker fetches a 2 MiB unit: four blocks at once */
      cp.threads = (unsigned)(n / 4);
      break;
    }
    case 'p': cp.progress = true; break;
    case 'F': force = true; break;
    case 0x502: resume = true; break;
    case 'h': fputs(help, stdout); rc = EXIT_OK; goto out;
    default: cli_usage("export", "unknown option"); goto out;
    }
  }
  if (optind + 2 != argc) {
    cli_usage("export", "expects AMI_OR_SNAPSHOT and DST");
    goto out;
  }
  const struct image_format *of = img_format_by_name(fmt);
  if (!of || !of->create) {
    cli_usage("export", "cannot write format '%s'", fmt);
    goto out;
  }
  const char *what = argv[optind], *dst = argv[optind + 1];
  if (strncmp(what, "ebs:", 4) == 0)
    what += 4;
  bool ami = strncmp(what, "ami-", 4) == 0;
  if (!ami && strncmp(what, "snap-", 5) != 0) {
    cli_usage("export", "'%s' is neither an AMI (ami-...) nor a snapshot (snap-...)", what);
    goto out;
  }
  if (!ami && (device || all)) {
    cli_usage("export", "--device and --all are for an AMI");
    goto out;
  }
  struct export_args ea = { .ia = &ia, .fmt = fmt, .co = &co, .force = force, .resume = resume,
                           .cp = &cp };
  cli_catch_signals();
  rc = EXIT_FAIL;
  if (!ami) {
    if (export_one(&ea, what, dst, &e) < 0)
      rc = cli_fail(&e);
    else
      rc = EXIT_OK;
    goto out;
  }
  struct aws_ctx ctx;
  struct ec2_image im;
  if (aws_ctx_init(&ctx, &ia.aws, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  char *uefi = NULL;
  int r = ec2_image_volumes(&ctx, what, &im, &e);
  if (r == 0)
    r = export_image_extras(&ctx, what, dst, force, &uefi, &e);
  aws_ctx_free(&ctx);
  if (r < 0) {
    free(uefi);
    rc = cli_fail(&e);
    goto out;
  }
  const char *want = device ? device : im.root_device;
  bool found = false;
  for (size_t i = 0; i < im.nvolumes; i++) {
    const struct ec2_volume *v = &im.volumes[i];
    if (!all && strcmp(v->device, want) != 0)
      continue;
    found = true;
    char name[4096];
    if (all)
      per_device_name(dst, v->device, name, sizeof name);
    else
      snprintf(name, sizeof name, "%s", dst);
    if (export_one(&ea, v->snapshot_id, name, &e) < 0) {
      free(uefi);
      rc = cli_fail(&e);
      goto out;
    }
  }
  if (!found) {
    error_set(&e, ERR_USAGE, "%s has no EBS volume at %s (it has:", what, want);
    for (size_t i = 0; i < im.nvolumes; i++)
      snprintf(e.msg + strlen(e.msg), sizeof e.msg - strlen(e.msg), " %s", im.volumes[i].device);
    snprintf(e.msg + strlen(e.msg), sizeof e.msg - strlen(e.msg), ")");
    free(uefi);
    rc = cli_fail(&e);
    goto out;
  }
  if (uefi) {
    r = export_uefi_data(dst, uefi, &e);
    free(uefi);
    if (r < 0) {
      rc = cli_fail(&e);
      goto out;
    }
    fprintf(stderr, "amiport: export: %s's UEFI variables -> %s.uefi-data\n", what, dst);
  }
  rc = EXIT_OK;
out:
  create_opts_free(&co);
  return rc;
}
