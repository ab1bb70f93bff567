/* import.c - amiport import (image -> EBS snapshot -> AMI). */
#include "bundle.h"
#include "cli.h"
#include "import.h"
#include "inspect.h"
#include "reg_args.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char import_help[] =
  "Usage: amiport import " IMAGE_USAGE " --name NAME [OPTIONS] IMAGE\n"
  "       amiport import --name NAME [OPTIONS] ROOT_IMAGE IMAGE...\n"
  "       amiport import --name NAME [OPTIONS] VM.ova\n"
  "       amiport import --privatekey KEY --name NAME [OPTIONS] BUNDLE|ami-INSTANCESTORE\n\n"
  "Uploads IMAGE as an EBS snapshot through the EBS direct APIs (every 512 KiB block\n"
  "checksummed, --jobs requests in flight) and registers it as an AMI whose\n"
  "architecture, boot mode and ENA flag are what 'amiport check' reads in the guest.\n"
  "An image check finds not importable is refused unless --force.\n\n"
  "IMAGE may also be an instance-store bundle (PATH.manifest.xml,\n"
  "s3://BUCKET/PREFIX.manifest.xml) or an instance-store AMI (ami-...): it becomes\n"
  "an EBS-backed AMI in one streamed pass, its ephemeral volumes mapped as they\n"
  "were. It is read once, so check runs on the completed snapshot before it is\n"
  "registered, and must agree with the manifest's architecture. A part that does\n"
  "not match its digest fails the import, and the snapshot is deleted.\n\n"
  "Several IMAGEs (or an OVA of several disks, unless --disk picks one) become ONE\n"
  "AMI: one snapshot per disk, uploaded at once (sharing --jobs) under one progress\n"
  "line, registered once they are all complete. The root is the first IMAGE; for an\n"
  "OVA, the one disk on which check finds a bootloader (or --root-disk). It maps at\n"
  "--root-device, the others at /dev/sdb, /dev/sdc... in order (or --device), each\n"
  "volume the size of its disk; the disks are checked as one VM (FSTAB_UNRESOLVED:\n"
  "see 'amiport check --vm'). Each disk resumes on its own. If the import fails\n"
  "for good (not an interruption), the snapshots it started are deleted.\n\n"
  "The snapshot id is printed as soon as it exists. An interrupted import (Ctrl-C,\n"
  "a crash, the network) resumes where it stopped when the same command runs again\n"
  "(its state is kept in $XDG_STATE_HOME/amiport); rerunning a finished import\n"
  "prints its result again.\n\n"
  IMAGE_HELP
         BUNDLE_SOURCE_HELP
  REGISTER_HELP
  "      --encrypted           encrypt the snapshot (with --kms-key-id, that key)\n"
  "      --kms-key-id ARN      KMS key ARN for an encrypted snapshot\n"
  "      --sparse MODE         none (default: every block is uploaded), holes (blocks\n"
  "                            the image never wrote are left out) or zeros (every\n"
  "                            all-zero block is left out: such blocks read back as\n"
  "                            garbage on an encrypted volume)\n"
  "  -j, --jobs N              requests in flight (default 64; 16 for a bundle, whose\n"
  "                            parts take memory of their own)\n"
  "      --max-rate N          at most N block requests a second (default 1000, the\n"
  "                            service's per-snapshot rate; 0 = no limit)\n"
  "      --timeout MIN         a pending snapshot with no write for MIN minutes is\n"
  "                            cancelled by the service (10 to 4320, default 60)\n"
  "      --no-register         stop at the completed snapshot\n"
  "      --resume              only resume an interrupted import (fail if there is none)\n"
  "      --dry-run             show what would be uploaded and registered, and stop\n"
  "      --force               import even if check says the disk will not boot\n"
  "      --root-disk N         several disks: the Nth (1-based, as given or in the\n"
  "                            OVF) is the root\n"
  "      --device IMAGE=DEV    several disks: map IMAGE (as given, or an OVA's disk\n"
  "                            number) at DEV, e.g. /dev/sdf (repeatable)\n"
  "      --keep-partial        a source that fails for good (damaged, unreadable)\n"
  "                            keeps the snapshots this run started (default:\n"
  "                            deleted; any other failure keeps them to resume)\n"
  "  -p, --progress            show progress (default when stderr is a terminal)\n"
  "  -h, --help                show this help\n";

static void on_import_event(void *arg, enum import_event ev, const char *snap)
{
  (void)arg;
  switch (ev) {
  case IMPORT_STARTED:
    fprintf(stderr, "amiport: import: snapshot %s started\n", snap);
    break;
  case IMPORT_RESUMED:
    fprintf(stderr, "amiport: import: resuming snapshot %s\n", snap);
    break;
  case IMPORT_EXPIRED:
    fprintf(stderr, "amiport: import: snapshot %s of the interrupted import expired (no write "
                    "within its timeout); starting a new one\n", snap);
    break;
  case IMPORT_LOST:
    fprintf(stderr, "amiport: import: snapshot %s of the interrupted import no longer exists; "
                    "starting a new one\n", snap);
    break;
  }
}

/* Fills what the options left open from the inspected guest; -1 if it cannot. */
static int derive_from(const char *path, const struct inspection *in, struct reg_args *ra,
                       bool force, struct error *e)
{
  if (!inspect_importable(in) && !force) {
    char list[400] = "";
    for (size_t i = 0; i < in->nfindings; i++)
      if (in->findings[i].severity == SEV_ERROR && strlen(list) + strlen(in->findings[i].code) + 3 < sizeof list)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "",
                 in->findings[i].code);
    return error_set(e, ERR_REFUSED, "%s will not boot on EC2 (%s); run 'amiport check %s' for "
                                     "the details, or pass --force", path, list, path);
  }
  struct ami_params ap;
  inspect_ami_params(in, &ap);
  if (!ra->r.arch)
    ra->r.arch = ap.arch;
  if (!ra->r.boot_mode)
    ra->r.boot_mode = ap.boot_mode;
  if (ra->ena < 0)
    ra->ena = ap.ena;
  if (!ra->r.arch)
    return error_set(e, ERR_USAGE, "%s: cannot tell the guest's architecture; pass --arch", path);
  return 0;
}

/* Fills what the options left open from the guest; -1 if it cannot. */
static int derive(struct img *im, struct reg_args *ra, bool force, struct error *e)
{
  struct inspection *in = calloc(1, sizeof *in);
  if (!in)
    return error_set(e, ERR_NOMEM, "out of memory");
  int rc = inspect_image(im, in, e) < 0 ? -1 : derive_from(im->path, in, ra, force, e);
  inspect_free(in);
  free(in);
  return rc;
}

/* A bundle is read once, by the upload; its guest is inspected on the
 * completed snapshot instead (the EBS reader fetches only what check reads),
 * and must agree with the manifest's architecture. */
struct snapshot_check {
  const struct image_args *ia;
  struct reg_args *ra;
  bool force, arch_given;
  const char *path, *manifest_arch;
};

static int check_snapshot(void *arg, const char *snap, struct ec2_register *reg,
                          struct error *e)
{
  struct snapshot_check *c = arg;
  struct img *im = ebs_open(&c->ia->aws, snap, c->ia->open.max_table_bytes, e);
  if (!im)
    return -1;
  if (!c->arch_given)
    c->ra->r.arch = NULL;
  int rc = derive(im, c->ra, c->force, e);
  img_close(im);
  if (rc == 0 && !c->arch_given && strcmp(c->ra->r.arch, c->manifest_arch) != 0)
    rc = error_set(e, ERR_REFUSED, "%s: the manifest says %s but the guest on %s is %s; pass "
                   "--arch to register it anyway", c->path, c->manifest_arch, snap,
                   c->ra->r.arch);
  if (rc < 0)
    return error_prefix(e, "snapshot %s is complete but was not registered", snap);
  reg->arch = c->ra->r.arch;
  reg->boot_mode = c->ra->r.boot_mode;
  reg->ena = c->ra->ena > 0;
  return 0;
}

/* --device IMAGE=DEV: where a disk other than the root is mapped. */
struct dev_arg {
  char image[PATH_MAX];
  const char *device;
  bool used;
};

/* The disks of a multi-disk import, in the order they map: root first. */
struct vm_disks {
  struct import_disk d[IMPORT_MAX_DISKS];
  char source[IMPORT_MAX_DISKS][PATH_MAX + 16]; /* as the command line names it */
  char devname[IMPORT_MAX_DISKS][32];
  size_t n;
};

/* Opens the disks: the IMAGEs given, or every disk of the one OVA. */
static int vm_open(char **paths, size_t npaths, struct image_args *ia, struct vm_disks *v,
                   bool *ova, struct error *e)
{
  *ova = false;
  if (npaths == 1) {
    struct img *im = img_open(paths[0], ia->format, &ia->open, e);
    if (!im)
      return -1;
    unsigned nd = img_ova_disks(im);
    img_close(im);
    if (nd > IMPORT_MAX_DISKS)
      return error_set(e, ERR_UNSUPPORTED, "%s: the OVF lists %u disks; an import takes at most %d",
                       paths[0], nd, IMPORT_MAX_DISKS);
    *ova = true;
    for (unsigned k = 0; k < nd; k++) {
      struct open_opts oo = ia->open;
      oo.disk_index = k + 1;
      if (!(v->d[v->n].src = img_open(paths[0], ia->format, &oo, e)))
        return -1;
      snprintf(v->source[v->n++], sizeof v->source[0], "%u", k + 1);
    }
    return 0;
  }
  if (npaths > IMPORT_MAX_DISKS)
    return error_set(e, ERR_USAGE, "%zu images; an import takes at most %d", npaths,
                     IMPORT_MAX_DISKS);
  for (size_t k = 0; k < npaths; k++) {
    if (cli_is_bundle(paths[k]) || strncmp(paths[k], "ami-", 4) == 0)
      return error_set(e, ERR_USAGE, "%s: a bundle or an AMI imports alone, not with other disks",
                       paths[k]);
    /* one file, one resume state: the same disk twice would share it */
    struct stat a, b;
    for (size_t o = 0; o < k; o++)
      if (stat(paths[k], &a) == 0 && stat(paths[o], &b) == 0 && a.st_dev == b.st_dev &&
          a.st_ino == b.st_ino)
        return error_set(e, ERR_USAGE, "%s and %s are the same file; each disk is imported once",
                         paths[o], paths[k]);
    if (!(v->d[v->n].src = img_open(paths[k], ia->format, &ia->open, e)))
      return -1;
    snprintf(v->source[v->n++], sizeof v->source[0], "%s", paths[k]);
  }
  return 0;
}

/* Inspects every disk, picks the root (the first image; for an OVA the one
 * disk with a bootloader, or --root-disk), puts it first, checks the disks
 * as one VM and derives the AMI's parameters from the root. */
static int vm_inspect(struct vm_disks *v, bool ova, unsigned root_disk, struct reg_args *ra,
                      bool force, struct error *e)
{
  struct inspection *in[IMPORT_MAX_DISKS] = { 0 };
  int rc = -1;
  size_t root = 0;
  for (size_t k = 0; k < v->n; k++) {
    if (!(in[k] = calloc(1, sizeof *in[k]))) {
      error_set(e, ERR_NOMEM, "out of memory");
      goto out;
    }
    if (inspect_image(v->d[k].src, in[k], e) < 0) {
      error_prefix(e, "disk %s", v->source[k]);
      goto out;
    }
  }
  if (root_disk) {
    if (root_disk > v->n) {
      error_set(e, ERR_USAGE, "--root-disk %u: there are %zu disks", root_disk, v->n);
      goto out;
    }
    root = root_disk - 1;
  } else if (ova) {
    char with[256] = "";
    size_t found = 0;
    for (size_t k = 0; k < v->n; k++)
      if (in[k]->bootloader[0] || in[k]->efi_loader[0]) {
        root = k;
        found++;
        snprintf(with + strlen(with), sizeof with - strlen(with), "%s%zu", found > 1 ? ", " : "",
                 k + 1);
      }
    if (found != 1) {
      error_set(e, ERR_USAGE, "%s: %s of its %zu disks has a bootloader%s%s; pass --root-disk N",
                v->d[0].src->path, found ? "more than one" : "none", v->n,
                found ? " (disks " : "", found ? with : "");
      if (found)
        snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), ")");
      goto out;
    }
  }
  if (root) { /* the root maps first; the others keep their order */
    struct import_disk d = v->d[root];
    struct inspection *ri = in[root];
    char src[sizeof v->source[0]];
    memcpy(src, v->source[root], sizeof src);
    memmove(&v->d[1], &v->d[0], root * sizeof v->d[0]);
    memmove(&in[1], &in[0], root * sizeof in[0]);
    memmove(v->source[1], v->source[0], root * sizeof v->source[0]);
    v->d[0] = d;
    in[0] = ri;
    memcpy(v->source[0], src, sizeof src);
  }
  inspect_judge_vm(in[0], (const struct inspection *const *)in + 1, v->n - 1);
  for (size_t f = 0; f < in[0]->nfindings; f++)
    if (strcmp(in[0]->findings[f].code, "FSTAB_UNRESOLVED") == 0)
      fprintf(stderr, "amiport: import: %s: FSTAB_UNRESOLVED (%s): %s\n", v->source[0],
              severity_name(in[0]->findings[f].severity), in[0]->findings[f].message);
  rc = derive_from(v->d[0].src->path, in[0], ra, force, e);
out:
  for (size_t k = 0; k < v->n; k++)
    if (in[k]) {
      inspect_free(in[k]);
      free(in[k]);
    }
  return rc;
}

/* Device names: the root's --root-device, then /dev/sdb, /dev/sdc... unless
 * --device names the disk. */
static int vm_devices(struct vm_disks *v, struct dev_arg *devs, size_t ndevs, const char *rootdev)
{
  for (size_t k = 0; k < v->n; k++) {
    snprintf(v->devname[k], sizeof v->devname[k], "%s", rootdev);
    if (k)
      snprintf(v->devname[k], sizeof v->devname[k], "/dev/sd%c", (char)('a' + k));
    for (size_t x = 0; x < ndevs; x++)
      if (strcmp(devs[x].image, v->source[k]) == 0) {
        if (k == 0)
          return cli_usage("import", "--device %s=%s: %s is the root disk (its device is "
                                     "--root-device)", devs[x].image, devs[x].device,
                           devs[x].image), -1;
        snprintf(v->devname[k], sizeof v->devname[k], "%s", devs[x].device);
        devs[x].used = true;
      }
    v->d[k].device = v->devname[k];
    for (size_t o = 0; o < k; o++)
      if (strcmp(v->devname[o], v->devname[k]) == 0)
        return cli_usage("import", "disks %s and %s would both map at %s", v->source[o],
                         v->source[k], v->devname[k]), -1;
  }
  for (size_t x = 0; x < ndevs; x++)
    if (!devs[x].used)
      return cli_usage("import", "--device %s=%s: no disk %s (name an IMAGE as given, or an "
                                 "OVA's disk by its number)", devs[x].image, devs[x].device,
                       devs[x].image), -1;
  return 0;
}

static json_object *vm_disks_json(const struct vm_disks *v)
{
  json_object *a = json_object_new_array();
  for (size_t k = 0; k < v->n; k++) {
    json_object *d = json_object_new_object();
    json_object_object_add(d, "source", json_object_new_string(v->source[k]));
    json_object_object_add(d, "device_name", json_object_new_string(v->devname[k]));
    json_object_object_add(d, "snapshot_id", v->d[k].r.snapshot_id[0]
                                                 ? json_object_new_string(v->d[k].r.snapshot_id)
                                                 : NULL);
    json_object_object_add(d, "blocks_uploaded",
                           json_object_new_int64((int64_t)v->d[k].r.blocks_uploaded));
    uint64_t gib = (v->d[k].src->size + (1ull << 30) - 1) >> 30;
    json_object_object_add(d, "volume_size_gib", json_object_new_int64((int64_t)(gib ? gib : 1)));
    json_object_array_add(a, d);
  }
  return a;
}

/* An OVA of more than one disk (read quietly: the import reports errors). */
static bool is_multi_ova(const char *path)
{
  size_t l = strlen(path);
  if (l < 4 || strcasecmp(path + l - 4, ".ova") != 0)
    return false;
  struct error e = { 0 };
  struct open_opts oo = { .quiet = true };
  struct img *im = img_open(path, NULL, &oo, &e);
  unsigned n = im ? img_ova_disks(im) : 0;
  if (im)
    img_close(im);
  return n > 1;
}

/* import of several disks (IMAGEs, or every disk of an OVA) as one AMI. */
static int import_vm(char **paths, size_t npaths, struct image_args *ia, struct reg_args *ra,
                     struct import_opts *io, struct dev_arg *devs, size_t ndevs,
                     unsigned root_disk, bool dry, bool force)
{
  struct vm_disks *v = calloc(1, sizeof *v);
  struct error e = { 0 };
  int rc = EXIT_FAIL;
  bool ova;
  if (!v)
    return error_set(&e, ERR_NOMEM, "out of memory"), cli_fail(&e);
  if (vm_open(paths, npaths, ia, v, &ova, &e) < 0 ||
      vm_inspect(v, ova, root_disk, ra, force, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  if (vm_devices(v, devs, ndevs, ra->r.root_device) < 0 || cli_check_uefi_boot_mode("import", ra)) {
    rc = EXIT_USAGE;
    goto out;
  }
  ra->r.ena = ra->ena > 0;
  io->description = ra->r.description;
  io->tags = ra->r.tags;
  io->ntags = ra->r.ntags;
  io->reg = ra->r;
  if (dry) {
    if (ra->out == OUTPUT_JSON) {
      json_object *j = json_object_new_object();
      json_object_object_add(j, "name", ra->r.name ? json_object_new_string(ra->r.name) : NULL);
      json_object_object_add(j, "architecture", json_object_new_string(ra->r.arch));
      json_object_object_add(j, "boot_mode", ra->r.boot_mode ? json_object_new_string(ra->r.boot_mode) : NULL);
      json_object_object_add(j, "ena_support", json_object_new_boolean(ra->r.ena));
      json_object_object_add(j, "root_device_name", json_object_new_string(ra->r.root_device));
      json_object_object_add(j, "register", json_object_new_boolean(!io->no_register));
      json_object_object_add(j, "disks", vm_disks_json(v));
      cli_print_json(j);
    } else {
      printf("Would upload %zu disks and register '%s': %s, %s, ENA %s.\n", v->n,
             ra->r.name ? ra->r.name : "(no AMI)", ra->r.arch,
             ra->r.boot_mode ? ra->r.boot_mode : "default boot mode", ra->r.ena ? "on" : "off");
      for (size_t k = 0; k < v->n; k++)
        printf("  %-10s %s (%s)\n", v->devname[k], v->source[k], v->d[k].src->fmt->name);
    }
    rc = EXIT_OK;
    goto out;
  }
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ia->aws, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  if (import_disks(v->d, v->n, &ctx, io, &e) < 0) {
    rc = e.code == ERR_INTERRUPTED ? 130 : EXIT_FAIL;
    cli_fail(&e);
    if (e.code == ERR_INTERRUPTED)
      for (size_t k = 0; k < v->n; k++)
        if (v->d[k].r.snapshot_id[0])
          fprintf(stderr, "amiport: import: %s: snapshot %s kept; run the same command again "
                          "to resume\n", v->source[k], v->d[k].r.snapshot_id);
    aws_ctx_free(&ctx);
    goto out;
  }
  aws_ctx_free(&ctx);
  const struct import_result *r = &v->d[0].r;
  if (ra->out == OUTPUT_JSON) {
    json_object *j = json_object_new_object();
    uint64_t up = 0, bytes = 0;
    bool resumed = false;
    for (size_t k = 0; k < v->n; k++) {
      up += v->d[k].r.blocks_uploaded;
      bytes += v->d[k].r.bytes_uploaded;
      resumed |= v->d[k].r.resumed;
    }
    json_object_object_add(j, "snapshot_id", json_object_new_string(r->snapshot_id));
    json_object_object_add(j, "image_id", r->image_id[0] ? json_object_new_string(r->image_id) : NULL);
    json_object_object_add(j, "blocks_uploaded", json_object_new_int64((int64_t)up));
    json_object_object_add(j, "bytes_uploaded", json_object_new_int64((int64_t)bytes));
    json_object_object_add(j, "resumed", json_object_new_boolean(resumed));
    json_object_object_add(j, "already_done", json_object_new_boolean(r->already_done));
    json_object_object_add(j, "architecture", json_object_new_string(ra->r.arch));
    json_object_object_add(j, "boot_mode", ra->r.boot_mode ? json_object_new_string(ra->r.boot_mode) : NULL);
    json_object_object_add(j, "ena_support", json_object_new_boolean(ra->r.ena));
    json_object_object_add(j, "disks", vm_disks_json(v));
    cli_print_json(j);
  } else {
    if (r->already_done)
      printf("Already imported.\n");
    for (size_t k = 0; k < v->n; k++) {
      char b[32];
      printf("Disk %-10s %s: snapshot %s, %llu blocks (%s) uploaded%s\n", v->devname[k],
             v->source[k], v->d[k].r.snapshot_id, (unsigned long long)v->d[k].r.blocks_uploaded,
             cli_human_size(v->d[k].r.bytes_uploaded, b),
             v->d[k].r.resumed ? ", resumed" : "");
    }
    if (r->image_id[0])
      printf("AMI:      %s (%s, %s, ENA %s)\n", r->image_id, ra->r.arch,
             ra->r.boot_mode ? ra->r.boot_mode : "default boot mode", ra->r.ena ? "on" : "off");
  }
  rc = EXIT_OK;
out:
  for (size_t k = 0; k < v->n; k++)
    img_close(v->d[k].src);
  free(v);
  return rc;
}

int cmd_import(int argc, char **argv)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    BUNDLE_SOURCE_LONGOPTS,
    REGISTER_LONGOPTS,
    { "encrypted", no_argument, NULL, 0x300 },
    { "kms-key-id", required_argument, NULL, 0x301 },
    { "sparse", required_argument, NULL, 0x302 },
    { "jobs", required_argument, NULL, 'j' },
    { "max-rate", required_argument, NULL, 0x303 },
    { "timeout", required_argument, NULL, 0x304 },
    { "no-register", no_argument, NULL, 0x305 },
    { "resume", no_argument, NULL, 0x306 },
    { "dry-run", no_argument, NULL, 0x307 },
    { "force", no_argument, NULL, 0x308 },
    { "root-disk", required_argument, NULL, 0x309 },
    { "device", required_argument, NULL, 0x30a },
    { "keep-partial", no_argument, NULL, 0x30b },
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct image_args ia = { 0 };
  struct reg_args ra = { .ena = -1, .r.imds_support = "v2.0", .r.root_device = "/dev/xvda" };
  struct import_opts io = { .progress = isatty(2), .cancel = &cli_interrupted,
                            .max_rate = 1000, .on_event = on_import_event };
  bool dry = false, force = false;
  struct dev_arg devs[IMPORT_MAX_DISKS];
  size_t ndevs = 0;
  unsigned root_disk = 0;
  int c, rc = EXIT_USAGE;
  long n;
  char *end;
  while ((c = getopt_long(argc, argv, "f:j:ph", longopts, NULL)) != -1) {
    int t = cli_reg_option("import", c, optarg, &ra);
    if (t < 0)
      goto out;
    if (t > 0)
      continue;
    switch (c) {
    case 0x300: io.encrypted = true; break;
    case 0x301: io.kms_key_arn = optarg; io.encrypted = true; break;
    case 0x302:
      if (strcmp(optarg, "none") == 0)
        io.sparse = EBS_SPARSE_NONE;
      else if (strcmp(optarg, "holes") == 0)
        io.sparse = EBS_SPARSE_HOLES;
      else if (strcmp(optarg, "zeros") == 0)
        io.sparse = EBS_SPARSE_ZEROS;
      else {
        cli_usage("import", "--sparse must be none, holes or zeros, not '%s'", optarg);
        goto out;
      }
      break;
    case 'j':
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 1024) {
        cli_usage("import", "--jobs must be 1 to 1024, not '%s'", optarg);
        goto out;
      }
      io.jobs = (unsigned)n;
      break;
    case 0x303:
      n = strtol(optarg, &end, 10);
      if (*end || n < 0) {
        cli_usage("import", "--max-rate must be a number of requests a second, not '%s'", optarg);
        goto out;
      }
      io.max_rate = (double)n;
      break;
    case 0x304:
      n = strtol(optarg, &end, 10);
      if (*end || n < 10 || n > 4320) {
        cli_usage("import", "--timeout must be 10 to 4320 minutes, not '%s'", optarg);
        goto out;
      }
      io.timeout_min = (unsigned)n;
      break;
    case 0x305: io.no_register = true; break;
    case 0x306: io.resume_only = true; break;
    case 0x307: dry = true; break;
    case 0x308: force = true; break;
    case 0x309:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > IMPORT_MAX_DISKS) {
        cli_usage("import", "--root-disk must be a disk number, 1 to %d, not '%s'",
                  IMPORT_MAX_DISKS, optarg);
        goto out;
      }
      root_disk = (unsigned)n;
      break;
    case 0x30a: {
      const char *eq = strrchr(optarg, '=');
      if (!eq || eq == optarg || strncmp(eq + 1, "/dev/", 5) != 0 || !eq[6] ||
          (size_t)(eq - optarg) >= sizeof devs[0].image || strlen(eq + 1) >= 32) {
        cli_usage("import", "--device must be IMAGE=/dev/NAME, not '%s'", optarg);
        goto out;
      }
      if (ndevs == IMPORT_MAX_DISKS) {
        cli_usage("import", "at most %d --device", IMPORT_MAX_DISKS);
        goto out;
      }
      snprintf(devs[ndevs].image, sizeof devs[ndevs].image, "%.*s", (int)(eq - optarg), optarg);
      devs[ndevs].device = eq + 1;
      devs[ndevs++].used = false;
      break;
    }
    case 0x30b: io.keep_partial = true; break;
    case 'p': io.progress = true; break;
    case 'h': fputs(import_help, stdout); rc = EXIT_OK; goto out;
    default:
      if (cli_image_option("import", c, optarg, &ia) < 0)
        goto out;
      break;
    }
  }
  if (optind == argc) {
    cli_usage("import", "expects an IMAGE");
    goto out;
  }
  if (!ra.r.name && !io.no_register) {
    cli_usage("import", "--name is required (or --no-register)");
    goto out;
  }
  if (ra.r.tpm_support && ra.r.boot_mode && strcmp(ra.r.boot_mode, "legacy-bios") == 0) {
    cli_usage("import", "--tpm-support needs a UEFI boot mode");
    goto out;
  }
  struct error e = { 0 };
  cli_catch_signals();
  if (optind + 1 < argc || (!ia.open.disk_index && !ia.format && is_multi_ova(argv[optind]))) {
    rc = import_vm(argv + optind, (size_t)(argc - optind), &ia, &ra, &io, devs, ndevs, root_disk,
                   dry, force);
    goto out;
  }
  if (ndevs || root_disk) {
    cli_usage("import", "--device and --root-disk are for several disks (IMAGEs, or an OVA's)");
    goto out;
  }
  /* a bundle (local, in S3, or an instance-store AMI's) or a file */
  const char *path = argv[optind];
  bool remote = (cli_is_bundle(path) || strncmp(path, "ami-", 4) == 0) && !ia.format;
  struct img *im = remote ? cli_open_image(path, &ia, &e) : img_open(path, ia.format, &ia.open, &e);
  if (!im) {
    rc = cli_fail(&e);
    goto out;
  }
  rc = EXIT_FAIL;
  const struct manifest *m = bundle_image_manifest(im);
  struct ec2_disk eph[IMPORT_MAX_EXTRA];
  char ephdev[IMPORT_MAX_EXTRA][CLI_DEVICE_MAX];
  if (!m && strncmp(path, "ami-", 4) == 0) {
    fprintf(stderr, "amiport: import: %s is EBS-backed already; import takes image files, "
                    "bundles and instance-store AMIs ('amiport export' gets its disk)\n", path);
    goto close;
  }
  struct snapshot_check sc = { .ia = &ia, .ra = &ra, .force = force, .arch_given = !!ra.r.arch,
                               .path = path };
  if (m) {
    sc.manifest_arch = m->arch && strcmp(m->arch, "i386") == 0 ? "i386" : "x86_64";
    if (!ra.r.arch)
      ra.r.arch = sc.manifest_arch; /* until the snapshot is inspected */
    io.before_register = check_snapshot;
    io.event_arg = &sc;
    ra.r.disks = eph;
    ra.r.ndisks = cli_bundle_ephemerals(m, eph, ephdev);
    /* the stream's parts take memory of their own; the decoder is the bound */
    if (!io.jobs)
      io.jobs = 16;
  } else if (derive(im, &ra, force, &e) < 0) {
    rc = cli_fail(&e);
    goto close;
  }
  if (cli_check_uefi_boot_mode("import", &ra)) {
    rc = EXIT_USAGE;
    goto close;
  }
  ra.r.ena = ra.ena > 0;
  io.description = ra.r.description;
  io.tags = ra.r.tags;
  io.ntags = ra.r.ntags;
  io.reg = ra.r;
  uint64_t gib = (im->size + (1ull << 30) - 1) >> 30;
  if (dry) {
    json_object *j = json_object_new_object();
    json_object_object_add(j, "image", json_object_new_string(im->path));
    json_object_object_add(j, "format", json_object_new_string(im->fmt->name));
    json_object_object_add(j, "volume_size_gib", json_object_new_int64((int64_t)(gib ? gib : 1)));
    json_object_object_add(j, "blocks", json_object_new_int64((int64_t)((im->size + EBS_BLOCK - 1) / EBS_BLOCK)));
    json_object_object_add(j, "sparse", json_object_new_string(
        io.sparse == EBS_SPARSE_NONE ? "none" : io.sparse == EBS_SPARSE_HOLES ? "holes" : "zeros"));
    json_object_object_add(j, "name", ra.r.name ? json_object_new_string(ra.r.name) : NULL);
    json_object_object_add(j, "architecture", json_object_new_string(ra.r.arch));
    json_object_object_add(j, "boot_mode", ra.r.boot_mode ? json_object_new_string(ra.r.boot_mode) : NULL);
    json_object_object_add(j, "ena_support", json_object_new_boolean(ra.r.ena));
    json_object_object_add(j, "root_device_name", json_object_new_string(ra.r.root_device));
    json_object_object_add(j, "uefi_data", json_object_new_boolean(ra.r.uefi_data != NULL));
    json_object_object_add(j, "register", json_object_new_boolean(!io.no_register));
    if (ra.out == OUTPUT_JSON)
      cli_print_json(j);
    else {
      printf("Would upload %s (%s, %llu GiB volume) and register '%s': %s, %s, ENA %s.\n",
             im->path, im->fmt->name, (unsigned long long)(gib ? gib : 1),
             ra.r.name ? ra.r.name : "(no AMI)", ra.r.arch,
             ra.r.boot_mode ? ra.r.boot_mode : "default boot mode", ra.r.ena ? "on" : "off");
      json_object_put(j);
    }
    rc = EXIT_OK;
    goto close;
  }
  if (io.sparse == EBS_SPARSE_ZEROS)
    fprintf(stderr, "amiport: import: --sparse=zeros leaves all-zero blocks out; they read "
                    "back as zeros only on unencrypted volumes (an encrypted launch of this "
                    "snapshot reads garbage there)\n");
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ia.aws, &e) < 0) {
    rc = cli_fail(&e);
    goto close;
  }
  struct import_result r;
  if (import_image(im, &ctx, &io, &r, &e) < 0) {
    rc = cli_fail(&e);
    if (r.completed)
      fprintf(stderr, "amiport: import: snapshot %s is complete; run the same command again "
                      "(or 'amiport register %s --name ...') to register it\n", r.snapshot_id,
              r.snapshot_id);
    else if (r.snapshot_id[0])
      fprintf(stderr, "amiport: import: snapshot %s is pending (%llu blocks uploaded so far). "
                      "Run the same command again to resume it before it times out, or "
                      "delete it: aws ec2 delete-snapshot --snapshot-id %s\n",
              r.snapshot_id, (unsigned long long)(r.blocks_before + r.blocks_uploaded),
              r.snapshot_id);
    if (e.code == ERR_INTERRUPTED)
      rc = 130;
    aws_ctx_free(&ctx);
    goto close;
  }
  aws_ctx_free(&ctx);
  if (ra.out == OUTPUT_JSON) {
    json_object *j = json_object_new_object();
    json_object_object_add(j, "snapshot_id", json_object_new_string(r.snapshot_id));
    json_object_object_add(j, "image_id", r.image_id[0] ? json_object_new_string(r.image_id) : NULL);
    json_object_object_add(j, "blocks_uploaded", json_object_new_int64((int64_t)r.blocks_uploaded));
    json_object_object_add(j, "blocks_skipped", json_object_new_int64((int64_t)r.blocks_skipped));
    json_object_object_add(j, "blocks_before", json_object_new_int64((int64_t)r.blocks_before));
    json_object_object_add(j, "bytes_uploaded", json_object_new_int64((int64_t)r.bytes_uploaded));
    json_object_object_add(j, "retries", json_object_new_int64((int64_t)r.retries));
    json_object_object_add(j, "seconds", json_object_new_double(r.upload_seconds));
    json_object_object_add(j, "resumed", json_object_new_boolean(r.resumed));
    json_object_object_add(j, "already_done", json_object_new_boolean(r.already_done));
    json_object_object_add(j, "architecture", json_object_new_string(ra.r.arch));
    json_object_object_add(j, "boot_mode", ra.r.boot_mode ? json_object_new_string(ra.r.boot_mode) : NULL);
    json_object_object_add(j, "ena_support", json_object_new_boolean(ra.r.ena));
    cli_print_json(j);
  } else {
    char b[32];
    if (r.already_done)
      printf("Already imported (state %s).\n", r.state_path);
    else
      printf("Uploaded %llu blocks (%s) in %.1f s%s.\n", (unsigned long long)r.blocks_uploaded,
             cli_human_size(r.bytes_uploaded, b), r.upload_seconds,
             r.resumed ? ", resuming an interrupted import" : "");
    printf("Snapshot: %s\n", r.snapshot_id);
    if (r.image_id[0])
      printf("AMI:      %s (%s, %s, ENA %s)\n", r.image_id, ra.r.arch,
             ra.r.boot_mode ? ra.r.boot_mode : "default boot mode", ra.r.ena ? "on" : "off");
  }
  rc = EXIT_OK;
close:
  img_close(im);
out:
  cli_reg_free(&ra);
  return rc;
}

