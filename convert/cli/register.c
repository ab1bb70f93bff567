/* register.c - amiport register (a snapshot or an uploaded bundle -> AMI)
 * and amiport wait. */
#include "cli.h"
#include "reg_args.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char register_help[] =
  "Usage: amiport register --name NAME [OPTIONS] SNAPSHOT_ID\n"
  "       amiport register --name NAME --image-location BUCKET/KEY.manifest.xml [OPTIONS]\n\n"
  "Registers an AMI whose root volume is the completed EBS snapshot SNAPSHOT_ID, or\n"
  "an instance-store AMI from the bundle whose manifest is at BUCKET/KEY.manifest.xml\n"
  "in S3 (as 'amiport upload-bundle' stored it: EC2 reads the manifest and the parts,\n"
  "so they need the aws-exec-read ACL or a policy that lets EC2 read them).\n"
  "Without --arch the architecture is x86_64; without --boot-mode the service's\n"
  "default applies ('amiport import' derives both from the guest).\n\n"
  AWS_HELP
  REGISTER_HELP
  "      --image-location LOC  BUCKET/KEY.manifest.xml (an s3:// in front is ignored):\n"
  "                            register that bundle instead of a snapshot; the service\n"
  "                            picks the root device (--root-device, --volume-type and\n"
  "                            --keep-volumes do not apply)\n"
  "      --kernel-id AKI       with --image-location: the kernel image (aki-...); the AMI\n"
  "                            is then paravirtual, else hvm\n"
  "      --ramdisk-id ARI      with --kernel-id: the ramdisk image (ari-...)\n"
  "  -h, --help                show this help\n";

/* BUCKET/KEY.manifest.xml, an s3:// in front dropped; NULL if loc is not that. */
static const char *register_image_location(const char *loc)
{
  static const char suffix[] = ".manifest.xml";
  if (strncmp(loc, "s3://", 5) == 0)
    loc += 5;
  const char *slash = strchr(loc, '/');
  size_t n = strlen(loc);
  const char *tail = n >= sizeof suffix ? loc + n - (sizeof suffix - 1) : NULL;
  if (!slash || slash == loc || slash[1] == '/' || !tail || strcmp(tail, suffix) != 0 ||
      tail == slash + 1 || strchr(loc, ' '))
    return NULL;
  return loc;
}

int cmd_register(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    REGISTER_LONGOPTS,
    { "image-location", required_argument, NULL, 0x210 },
    { "kernel-id", required_argument, NULL, 0x211 },
    { "ramdisk-id", required_argument, NULL, 0x212 },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct aws_opts ao = { 0 };
  struct reg_args ra = { .ena = 0, .r.imds_support = "v2.0", .r.arch = "x86_64" };
  int c, rc = EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    int t = cli_reg_option("register", c, optarg, &ra);
    if (t < 0)
      goto out;
    if (t > 0 || cli_aws_option(c, optarg, &ao))
      continue;
    switch (c) {
    case 0x210:
      if (!(ra.r.image_location = register_image_location(optarg))) {
        cli_usage("register", "--image-location must be BUCKET/KEY.manifest.xml, not '%s'",
                  optarg);
        goto out;
      }
      continue;
    case 0x211:
      if (strncmp(optarg, "aki-", 4) != 0) {
        cli_usage("register", "--kernel-id must be a kernel image id (aki-...), not '%s'", optarg);
        goto out;
      }
      ra.r.kernel_id = optarg;
      continue;
    case 0x212:
      if (strncmp(optarg, "ari-", 4) != 0) {
        cli_usage("register", "--ramdisk-id must be a ramdisk image id (ari-...), not '%s'", optarg);
        goto out;
      }
      ra.r.ramdisk_id = optarg;
      continue;
    case 'h':
      fputs(register_help, stdout);
      rc = EXIT_OK;
      goto out;
    default:
      cli_usage("register", "unknown option");
      goto out;
    }
  }
  if (ra.r.image_location) {
    if (optind != argc) {
      cli_usage("register", "takes a SNAPSHOT_ID or --image-location, not both");
      goto out;
    }
    if (ra.r.root_device || ra.r.volume_type || ra.r.keep_volumes) {
      cli_usage("register", "--root-device, --volume-type and --keep-volumes are for an EBS "
                            "snapshot, not --image-location");
      goto out;
    }
  } else if (optind + 1 != argc || strncmp(argv[optind], "snap-", 5) != 0) {
    cli_usage("register", "expects one SNAPSHOT_ID (snap-...) or --image-location "
                          "BUCKET/KEY.manifest.xml");
    goto out;
  } else if (ra.r.kernel_id || ra.r.ramdisk_id) {
    cli_usage("register", "--kernel-id and --ramdisk-id need --image-location (an EBS "
                          "snapshot is registered as hvm)");
    goto out;
  }
  if (ra.r.ramdisk_id && !ra.r.kernel_id) {
    cli_usage("register", "--ramdisk-id needs --kernel-id");
    goto out;
  }
  if (!ra.r.name) {
    cli_usage("register", "--name is required");
    goto out;
  }
  if (cli_check_uefi_boot_mode("register", &ra))
    goto out;
  ra.r.ena = ra.ena > 0;
  struct error e = { 0 };
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ao, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  if (!ra.r.root_device)
    ra.r.root_device = "/dev/xvda";
  struct ec2_disk disk = { .device = ra.r.root_device, .snapshot_id = argv[optind] };
  if (!ra.r.image_location) {
    ra.r.disks = &disk;
    ra.r.ndisks = 1;
  }
  char ami[EBS_ID_MAX];
  if (ec2_register_image(&ctx, &ra.r, ami, &e) < 0) {
    rc = cli_fail(&e);
  } else {
    if (ra.out == OUTPUT_JSON) {
      json_object *j = json_object_new_object();
      json_object_object_add(j, "image_id", json_object_new_string(ami));
      cli_print_json(j);
    } else {
      printf("%s\n", ami);
    }
    rc = EXIT_OK;
  }
  aws_ctx_free(&ctx);
out:
  cli_reg_free(&ra);
  return rc;
}

static const char wait_help[] =
  "Usage: amiport wait [OPTIONS] SNAPSHOT_ID|IMAGE_ID\n\n"
  "Waits until a snapshot is completed or an AMI is available; fails at once when it\n"
  "is in state error (failed) or does not exist.\n\n"
  AWS_HELP
  "      --timeout SECONDS     give up after this long (default: no limit)\n"
  "  -p, --progress            show the state while waiting\n"
  "  -h, --help                show this help\n";

int cmd_wait(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    { "timeout", required_argument, NULL, 0x400 },
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct aws_opts ao = { 0 };
  unsigned timeout = 0;
  bool progress = isatty(2);
  int c;
  while ((c = getopt_long(argc, argv, "ph", longopts, NULL)) != -1) {
    if (cli_aws_option(c, optarg, &ao))
      continue;
    char *end;
    long n;
    switch (c) {
    case 0x400:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1)
        return cli_usage("wait", "--timeout must be a number of seconds, not '%s'", optarg);
      timeout = (unsigned)n;
      break;
    case 'p': progress = true; break;
    case 'h': fputs(wait_help, stdout); return EXIT_OK;
    default: return cli_usage("wait", "unknown option");
    }
  }
  if (optind + 1 != argc ||
      (strncmp(argv[optind], "snap-", 5) != 0 && strncmp(argv[optind], "ami-", 4) != 0))
    return cli_usage("wait", "expects one SNAPSHOT_ID (snap-...) or IMAGE_ID (ami-...)");
  struct error e = { 0 };
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ao, &e) < 0)
    return cli_fail(&e);
  cli_catch_signals();
  int rc = ec2_wait(&ctx, argv[optind], timeout, progress, &cli_interrupted, &e) < 0
               ? cli_fail(&e) : EXIT_OK;
  aws_ctx_free(&ctx);
  return rc;
}
