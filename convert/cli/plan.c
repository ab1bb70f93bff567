/* plan.c - amiport plan check|run|status: a fleet's plan (convert/plan),
 * one VM a line, imported one task per line with a result ledger. */
#include "bundle.h"
#include "cli.h"
#include "import.h"
#include "inspect.h"
#include "plan.h"
#include "progress.h"
#include "s3.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char plan_help[] =
  "Usage: amiport plan check PLAN [--privatekey KEY]\n"
  "       amiport plan run PLAN (--task N | --task-from-env | --all [--parallel K])\n"
  "                        --results LOC [OPTIONS]\n"
  "       amiport plan status PLAN --results LOC [--output=json]\n"
  "       amiport plan submit PLAN --engine slurm|batch|kubernetes --results LOC ...\n"
  "                        (see 'amiport plan submit --help')\n\n"
  "A plan is a JSON Lines file, one VM a line:\n"
  "  {\"name\": \"web1\", \"disks\": [\"web1.qcow2\", \"web1-data.vmdk\"], \"ami_name\": \"web1\",\n"
  "   \"description\": \"...\", \"tags\": {\"team\": \"x\"}, \"options\": {\"boot_mode\": \"uefi\"}}\n"
  "name is unique (it names LOC/NAME.json); the first disk is the root; a relative\n"
  "disk path is taken from the plan's folder. A VM's only disk may also be an\n"
  "instance-store bundle (PATH.manifest.xml, s3://BUCKET/PREFIX.manifest.xml) or an\n"
  "instance-store AMI (ami-...), read with --privatekey. options are import's\n"
  "options without their dashes: arch, boot_mode, ena, encrypted, force,\n"
  "imds_support, jobs, keep_volumes, kms_key_id, max_rate, no_register,\n"
  "root_device, root_disk, sparse, timeout, tpm_support, volume_type. A line\n"
  "whose one disk is an OVA imports every disk of it, the root being the one\n"
  "disk with a bootloader, or options.root_disk (1-based).\n\n"
  "check validates every line, runs check on every VM's disks and prints what\n"
  "would be imported and what refused; it exits 1 if any line would be refused.\n"
  "A bundle is read whole to a spool file in $TMPDIR to be checked.\n\n"
  "run imports line N (0 = the first line), as 'amiport import' would, and writes\n"
  "LOC/NAME.json (state done, failed or refused; the AMI and snapshot ids, bytes,\n"
  "seconds, the error). A task is idempotent: each disk's resume state and\n"
  "ClientToken derive from the plan's name, the line's name, the disk's index and\n"
  "the disk's size and mtime (a bundle's image digest), so a rerun continues the\n"
  "same snapshots, and an AMI of the line's ami_name tagged with the plan's name\n"
  "and digest is reused rather than registered again. A bundle is checked on its\n"
  "snapshot, before registering.\n"
  "      --task N              the line to import (0-based)\n"
  "      --task-from-env       N from SLURM_ARRAY_TASK_ID, AWS_BATCH_JOB_ARRAY_INDEX\n"
  "                            or JOB_COMPLETION_INDEX\n"
  "      --all                 every line, on this machine\n"
  "      --parallel K          with --all: K lines at once (default 1)\n"
  "      --results LOC         where the ledger goes: a folder (created if missing)\n"
  "                            or s3://BUCKET/PREFIX (one PutObject a line)\n"
  "      --max-requests-per-second R\n"
  "                            at most R block requests a second per task (default\n"
  "                            1000; a line's options.max_rate wins)\n"
  "      --privatekey KEY, --cert CERT\n"
  "                            read the plan's bundles (check and run)\n"
  AWS_HELP
  "\nstatus counts the lines by state (done, failed, refused, pending: no ledger\n"
  "yet), lists the failures and their reasons, and totals bytes and seconds. It\n"
  "exits 0 only when every line is done. It takes the AWS options for an S3 LOC.\n"
  "      --output FMT          human (default) or json\n"
  "  -h, --help                show this help\n";

/* A disk as the plan names it: a relative path is the plan's folder's; a
 * bundle in S3 and an AMI are taken as they are. */
static void disk_path(const struct plan *p, const char *d, char *out, size_t len)
{
  const char *slash = strrchr(p->path, '/');
  if (d[0] == '/' || !slash || strncmp(d, "s3://", 5) == 0 || strncmp(d, "ami-", 4) == 0)
    snprintf(out, len, "%s", d);
  else
    snprintf(out, len, "%.*s/%s", (int)(slash - p->path), p->path, d);
}

/* What check says of a VM (its root disk, with the others beside it). */
struct verdict {
  bool importable;
  char findings[400];          /* the error findings, when it is not */
  char arch[16], boot_mode[32];
  bool ena;
};

/* Inspects the disks and judges them as one VM whose root is d[pick], or
 * with pick -1 the one disk with a bootloader (an OVA's); *root: which. */
static int judge(const struct import_disk *d, size_t n, int pick, size_t *root,
                 struct verdict *out, struct error *e)
{
  struct inspection *in[PLAN_MAX_DISKS] = { 0 };
  const struct inspection *others[PLAN_MAX_DISKS];
  size_t r = pick > 0 ? (size_t)pick : 0, nothers = 0, found = 0;
  int rc = -1;
  memset(out, 0, sizeof *out);
  for (size_t k = 0; k < n; k++) {
    if (!(in[k] = calloc(1, sizeof *in[k]))) {
      error_set(e, ERR_NOMEM, "out of memory");
      goto out;
    }
    if (inspect_image(d[k].src, in[k], e) < 0) {
      error_prefix(e, "disk %s", d[k].src->path);
      goto out;
    }
  }
  for (size_t k = 0; pick < 0 && k < n; k++)
    if (in[k]->bootloader[0] || in[k]->efi_loader[0]) {
      r = k;
      found++;
    }
  if (pick < 0 && found != 1) {
    error_set(e, ERR_USAGE, "%s: %s of its %zu disks has a bootloader; set options.root_disk",
              d[0].src->path, found ? "more than one" : "none", n);
    goto out;
  }
  for (size_t k = 0; k < n; k++)
    if (k != r)
      others[nothers++] = in[k];
  inspect_judge_vm(in[r], others, nothers);
  *root = r;
  const struct inspection *ri = in[r];
  out->importable = inspect_importable(ri);
  for (size_t i = 0; i < ri->nfindings; i++)
    if (ri->findings[i].severity == SEV_ERROR &&
        strlen(out->findings) + strlen(ri->findings[i].code) + 3 < sizeof out->findings)
      snprintf(out->findings + strlen(out->findings), sizeof out->findings - strlen(out->findings),
               "%s%s", out->findings[0] ? ", " : "", ri->findings[i].code);
  struct ami_params ap;
  inspect_ami_params(ri, &ap);
  snprintf(out->arch, sizeof out->arch, "%s", ap.arch ? ap.arch : "");
  snprintf(out->boot_mode, sizeof out->boot_mode, "%s", ap.boot_mode ? ap.boot_mode : "");
  out->ena = ap.ena;
  rc = 0;
out:
  for (size_t k = 0; k < n; k++)
    if (in[k]) {
      inspect_free(in[k]);
      free(in[k]);
    }
  return rc;
}

/* Why a line with this verdict is not imported (ERR_REFUSED, ERR_USAGE), or 0. */
static int refusal(const struct verdict *v, const struct plan_line *l, const char *root,
                   struct error *e)
{
  if (!v->importable && !l->opt.force)
    return error_set(e, ERR_REFUSED, "%s will not boot on EC2 (%s); run 'amiport check %s' for "
                     "the details, or set options.force", root, v->findings, root);
  if (!v->arch[0] && !l->opt.arch)
    return error_set(e, ERR_USAGE, "%s: cannot tell the guest's architecture; set options.arch",
                     root);
  return 0;
}

/* The architecture a bundle's manifest gives (x86_64 when it names none). */
static const char *manifest_arch(const struct manifest *m)
{
  return m->arch && strcmp(m->arch, "i386") == 0 ? "i386" : "x86_64";
}

/* One VM of the plan, opened and checked. A bundle (a manifest, in S3 or
 * an instance-store AMI's) is read once, as a stream: run checks it on its
 * snapshot before registering (stream), check spools it first. */
struct vm {
  struct import_disk d[PLAN_MAX_DISKS];
  char path[PLAN_MAX_DISKS][PATH_MAX];
  char dev[PLAN_MAX_DISKS][32];
  size_t n;
  struct verdict j;
  const struct manifest *stream; /* judged on the snapshot */
};

static void vm_close(struct vm *v)
{
  for (size_t k = 0; k < v->n; k++)
    img_close(v->d[k].src);
  v->n = 0;
}

/* Opens every disk and checks them as one VM (the root first). */
static int vm_check(const struct plan *p, const struct plan_line *l, const struct image_args *ia,
                    bool stream, struct vm *v, struct error *e)
{
  for (size_t k = 0; k < l->ndisks; k++) {
    disk_path(p, l->disks[k], v->path[k], sizeof v->path[k]);
    bool remote = cli_is_bundle(v->path[k]) || strncmp(v->path[k], "ami-", 4) == 0;
    if (remote && l->ndisks > 1)
      return error_set(e, ERR_USAGE, "%s: a bundle or an instance-store AMI is a VM's only "
                       "disk", v->path[k]);
    v->d[k].src = remote ? cli_open_image(v->path[k], ia, e)
                         : img_open(v->path[k], NULL, &(struct open_opts){ 0 }, e);
    if (!v->d[k].src)
      return error_prefix(e, "disk %s", v->path[k]);
    v->n++;
    if (remote && !(v->stream = bundle_image_manifest(v->d[k].src)))
      return error_set(e, ERR_USAGE, "%s is EBS-backed already; a plan imports image files, "
                       "bundles and instance-store AMIs", v->path[k]);
    if (!remote && img_ova_disks(v->d[k].src) > 1 && l->ndisks > 1)
      return error_set(e, ERR_USAGE, "%s: an OVA of %u disks is a VM's only disk", v->path[k],
                       img_ova_disks(v->d[k].src));
  }
  /* an OVA of several disks: every disk of it, the one with a bootloader the root */
  unsigned nd = v->stream ? 1 : img_ova_disks(v->d[0].src);
  if (nd > PLAN_MAX_DISKS)
    return error_set(e, ERR_UNSUPPORTED, "%s: the OVF lists %u disks; a VM has at most %d",
                     v->path[0], nd, PLAN_MAX_DISKS);
  for (unsigned k = 1; k < nd; k++) {
    snprintf(v->path[k], sizeof v->path[k], "%s", v->path[0]);
    if (!(v->d[k].src = img_open(v->path[k], NULL, &(struct open_opts){ .disk_index = k + 1 }, e)))
      return error_prefix(e, "disk %u of %s", k + 1, v->path[k]);
    v->n++;
  }
  if (l->opt.root_disk > v->n)
    return error_set(e, ERR_USAGE, "options.root_disk %u: the VM has %zu disk%s", l->opt.root_disk,
                     v->n, v->n > 1 ? "s" : "");
  int pick = l->opt.root_disk ? (int)l->opt.root_disk - 1 : nd > 1 ? -1 : 0;
  size_t root = 0;
  int rc = 0;
  if (v->stream && stream) { /* until the snapshot is inspected */
    v->j.importable = true;
    snprintf(v->j.arch, sizeof v->j.arch, "%s", manifest_arch(v->stream));
  } else if (v->stream) {
    struct img *im = cli_spool(v->d[0].src, false, e);
    if (!im)
      return -1;
    rc = judge(&(struct import_disk){ .src = im }, 1, 0, &root, &v->j, e);
    img_close(im);
  } else
    rc = judge(v->d, v->n, pick, &root, &v->j, e);
  if (root) { /* the root maps first; the others keep their order */
    struct import_disk d = v->d[root];
    char path[PATH_MAX];
    memcpy(path, v->path[root], sizeof path);
    memmove(&v->d[1], &v->d[0], root * sizeof v->d[0]);
    memmove(v->path[1], v->path[0], root * sizeof v->path[0]);
    v->d[0] = d;
    memcpy(v->path[0], path, sizeof path);
  }
  for (size_t k = 0; k < v->n; k++) {
    snprintf(v->dev[k], sizeof v->dev[k], "/dev/sd%c", (char)('a' + k));
    v->d[k].device = v->dev[k];
  }
  return rc;
}

static int plan_check(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS, BUNDLE_SOURCE_LONGOPTS, { "help", no_argument, NULL, 'h' }, { 0 },
  };
  struct image_args ia = { 0 };
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c == 'h')
      return fputs(plan_help, stdout), EXIT_OK;
    if (c == '?' || cli_image_option("plan check", c, optarg, &ia) < 0)
      return c == '?' ? cli_usage("plan check", "unknown option") : EXIT_USAGE;
  }
  if (optind + 1 != argc)
    return cli_usage("plan check", "expects one PLAN");
  struct plan p;
  struct error e = { 0 };
  if (plan_load(argv[optind], &p, &e) < 0)
    return cli_fail(&e);
  int refused = 0;
  printf("%-4s %-24s %-5s %-8s %-15s %s\n", "TASK", "NAME", "DISKS", "ARCH", "BOOT", "VERDICT");
  for (size_t i = 0; i < p.n; i++) {
    const struct plan_line *l = &p.lines[i];
    struct vm *v = calloc(1, sizeof *v);
    struct error ve = { 0 };
    if (!v)
      return plan_free(&p), error_set(&e, ERR_NOMEM, "out of memory"), cli_fail(&e);
    bool no = vm_check(&p, l, &ia, false, v, &ve) < 0 || refusal(&v->j, l, v->path[0], &ve) < 0;
    refused += no;
    printf("%-4zu %-24s %-5zu %-8s %-15s %s%s%s\n", i, l->name, l->ndisks,
           l->opt.arch ? l->opt.arch : v->j.arch[0] ? v->j.arch : "-",
           l->opt.boot_mode ? l->opt.boot_mode : v->j.boot_mode[0] ? v->j.boot_mode : "-",
           no ? "refused" : v->j.importable ? "import" : "import (forced)", no ? ": " : "",
           no ? ve.msg : "");
    vm_close(v);
    free(v);
  }
  printf("%zu lines: %zu to import, %d refused.\n", p.n, p.n - (size_t)refused, refused);
  plan_free(&p);
  return refused ? EXIT_FAIL : EXIT_OK;
}

/* ---- run ---- */

struct run_args {
  const char *results;
  char *bucket, *prefix;      /* --results s3://BUCKET/PREFIX */
  struct image_args ia;        /* the AWS options; a bundle's key */
  double max_rate;
  bool progress;
};

static const char *err_name(int code)
{
  static const char *const n[] = { "none", "io", "format", "unsupported", "refused", "usage",
                                   "nomem", "exists", "interrupted", "remote",
                                   "network" };
  return code >= 0 && (size_t)code < sizeof n / sizeof *n ? n[code] : "error";
}

/* The ledger's S3 key for a line. */
static void ledger_key(const char *prefix, const char *name, char *out, size_t len)
{
  snprintf(out, len, "%s%s%s.json", prefix && *prefix ? prefix : "", prefix && *prefix ? "/" : "",
           name);
}

/* One PutObject: S3 stores the object whole or not at all. */
static int ledger_put(const struct run_args *ra, const char *name, const char *text,
                      struct error *e)
{
  char key[1200];
  struct aws_ctx ctx;
  ledger_key(ra->prefix, name, key, sizeof key);
  if (aws_ctx_init(&ctx, &ra->ia.aws, e) < 0)
    return -1;
  struct s3_put put = { .bucket = ra->bucket, .key = key, .body = text, .len = strlen(text),
                        .content_type = "application/json" };
  int rc = s3_put_object(&ctx, &put, e);
  aws_ctx_free(&ctx);
  if (rc < 0)
    error_prefix(e, "the result s3://%s/%s", ra->bucket, key);
  return rc;
}

/* DIR/NAME.json, written whole then renamed over the old one (or put in S3). */
static int ledger_write(const struct run_args *ra, const char *name, json_object *j,
                        struct error *e)
{
  if (ra->bucket)
    return ledger_put(ra, name, json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE), e);
  const char *dir = ra->results;
  char path[PATH_MAX], tmp[PATH_MAX + 32];
  if (mkdir(dir, 0777) < 0 && errno != EEXIST)
    return error_errno(e, "cannot create the results folder %s", dir);
  snprintf(path, sizeof path, "%s/%s.json", dir, name);
  snprintf(tmp, sizeof tmp, "%s/.%s.json.%ld", dir, name, (long)getpid());
  const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return error_errno(e, "cannot create %s", tmp);
  size_t len = strlen(s);
  bool ok = write(fd, s, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
  ok &= close(fd) == 0;
  if (!ok || rename(tmp, path) < 0) {
    error_errno(e, "cannot write %s", path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* A line being imported, for import's callbacks. */
struct line_run {
  const struct plan_line *l;
  const struct run_args *ra;
  struct vm *v;
};

static void on_event(void *arg, enum import_event ev, const char *snap)
{
  const struct line_run *lr = arg;
  static const char *const what[] = { "started", "resumed", "expired (a new one follows)",
                                      "lost (a new one follows)" };
  fprintf(stderr, "amiport: plan: %s: snapshot %s %s\n", lr->l->name, snap, what[ev]);
}

/* What the AMI says of the guest: the line's options, else the verdict's. */
static void settle(const struct verdict *j, const struct plan_options *po, struct ec2_register *reg)
{
  reg->arch = po->arch ? po->arch : j->arch;
  reg->boot_mode = po->boot_mode ? po->boot_mode : j->boot_mode[0] ? j->boot_mode : NULL;
  reg->ena = po->ena >= 0 ? po->ena : j->ena;
}

/* A bundle's snapshot, complete: checked as a file would be before the
 * upload, and what it holds settles the registration. */
static int judge_snapshot(void *arg, const char *snap, struct ec2_register *reg, struct error *e)
{
  struct line_run *lr = arg;
  struct img *im = ebs_open(&lr->ra->ia.aws, snap, 0, e);
  if (!im)
    return -1;
  const char *said = manifest_arch(lr->v->stream);
  size_t root;
  int rc = judge(&(struct import_disk){ .src = im }, 1, 0, &root, &lr->v->j, e);
  img_close(im);
  if (rc == 0)
    rc = refusal(&lr->v->j, lr->l, lr->v->path[0], e);
  if (rc == 0 && !lr->l->opt.arch && strcmp(lr->v->j.arch, said) != 0)
    rc = error_set(e, ERR_REFUSED, "%s: the manifest says %s but the guest is %s; set "
                   "options.arch to register it anyway", lr->v->path[0], said, lr->v->j.arch);
  if (rc < 0)
    return error_prefix(e, "snapshot %s is complete but was not registered", snap);
  settle(&lr->v->j, &lr->l->opt, reg);
  return 0;
}

/* Imports line i and writes its ledger: 0 done, 1 failed or refused. */
static int run_line(const struct plan *p, size_t i, const struct run_args *ra)
{
  const struct plan_line *l = &p->lines[i];
  struct vm *v = calloc(1, sizeof *v);
  struct line_run lr = { .l = l, .ra = ra, .v = v };
  struct error e = { 0 };
  const char *state = "failed";
  double t0 = mono_now();
  struct aws_tag tags[PLAN_MAX_TAGS + 3];
  char state_id[PLAN_NAME_MAX * 2 + 80];
  struct ec2_disk eph[IMPORT_MAX_EXTRA];
  char ephdev[IMPORT_MAX_EXTRA][CLI_DEVICE_MAX];
  if (!v) {
    error_set(&e, ERR_NOMEM, "out of memory");
    goto ledger;
  }
  if (vm_check(p, l, &ra->ia, true, v, &e) < 0)
    goto ledger;
  if (refusal(&v->j, l, v->path[0], &e) < 0) {
    state = "refused";
    goto ledger;
  }
  const struct plan_options *po = &l->opt;
  size_t nt = 0;
  for (size_t t = 0; t < l->ntags; t++)
    tags[nt++] = l->tags[t];
  tags[nt++] = (struct aws_tag){ "amiport:plan", p->name };
  tags[nt++] = (struct aws_tag){ "amiport:plan-digest", p->digest };
  tags[nt++] = (struct aws_tag){ "amiport:line", l->name };
  snprintf(state_id, sizeof state_id, "%s|%s", p->name, l->name);
  struct import_opts io = {
    .description = l->description, .tags = tags, .ntags = nt, .encrypted = po->encrypted,
    .kms_key_arn = po->kms_key_id, .timeout_min = po->timeout_min,
    .sparse = po->sparse >= 0 ? (enum ebs_sparse)po->sparse : EBS_SPARSE_NONE,
    .jobs = po->jobs, .max_rate = po->max_rate >= 0 ? po->max_rate : ra->max_rate,
    .progress = ra->progress, .no_register = po->no_register, .state_id = state_id,
    .reuse_image = true, .cancel = &cli_interrupted, .on_event = on_event, .event_arg = &lr,
    .reg = { .name = l->ami_name, .description = l->description,
             .imds_support = po->imds_support ? (strcmp(po->imds_support, "none") ? po->imds_support : NULL)
                                              : "v2.0",
             .tpm_support = po->tpm_support, .volume_type = po->volume_type,
             .root_device = po->root_device ? po->root_device : "/dev/xvda",
             .keep_volumes = po->keep_volumes, .tags = tags, .ntags = nt },
  };
  settle(&v->j, po, &io.reg);
  if (v->stream) {
    io.before_register = judge_snapshot;
    io.reg.disks = eph;
    io.reg.ndisks = cli_bundle_ephemerals(v->stream, eph, ephdev);
    if (!io.jobs)
      io.jobs = 16; /* as import: the stream's parts are the bound */
  }
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ra->ia.aws, &e) < 0)
    goto ledger;
  if (import_disks(v->d, v->n, &ctx, &io, &e) == 0)
    state = "done";
  else if (e.code == ERR_REFUSED)
    state = "refused";
  aws_ctx_free(&ctx);
ledger:;
  json_object *j = json_object_new_object();
  json_object_object_add(j, "name", json_object_new_string(l->name));
  json_object_object_add(j, "task", json_object_new_int64((int64_t)i));
  json_object_object_add(j, "line", json_object_new_int64(l->lineno));
  json_object_object_add(j, "plan", json_object_new_string(p->name));
  json_object_object_add(j, "plan_digest", json_object_new_string(p->digest));
  json_object_object_add(j, "state", json_object_new_string(state));
  json_object *snaps = json_object_new_array();
  uint64_t bytes = 0;
  bool resumed = false;
  for (size_t k = 0; v && k < v->n; k++) {
    const struct import_result *r = &v->d[k].r;
    json_object_array_add(snaps, r->snapshot_id[0] ? json_object_new_string(r->snapshot_id) : NULL);
    bytes += r->bytes_uploaded;
    resumed |= r->resumed;
  }
  const struct import_result *r0 = v && v->n ? &v->d[0].r : NULL;
  json_object_object_add(j, "image_id", r0 && r0->image_id[0] ? json_object_new_string(r0->image_id) : NULL);
  json_object_object_add(j, "snapshot_ids", snaps);
  json_object_object_add(j, "bytes", json_object_new_int64((int64_t)bytes));
  json_object_object_add(j, "seconds", json_object_new_double(mono_now() - t0));
  json_object_object_add(j, "resumed", json_object_new_boolean(resumed));
  json_object_object_add(j, "already_done", json_object_new_boolean(r0 && r0->already_done));
  json_object_object_add(j, "image_reused", json_object_new_boolean(r0 && r0->image_reused));
  if (strcmp(state, "done") != 0) {
    json_object *err = json_object_new_object();
    json_object_object_add(err, "code", json_object_new_string(err_name(e.code)));
    json_object_object_add(err, "message", json_object_new_string(e.msg));
    json_object_object_add(j, "error", err);
    fprintf(stderr, "amiport: plan: %s: %s: %s\n", l->name, state, e.msg);
  } else {
    json_object_object_add(j, "error", NULL);
    fprintf(stderr, "amiport: plan: %s: done, %s\n", l->name, r0->image_id[0] ? r0->image_id : "(not registered)");
  }
  struct error we = { 0 };
  int rc = strcmp(state, "done") ? 1 : 0;
  if (ledger_write(ra, l->name, j, &we) < 0) {
    cli_fail(&we);
    rc = 1;
  }
  json_object_put(j);
  if (v)
    vm_close(v);
  free(v);
  return rc;
}

/* --all: every line, at most k at once, each in a process of its own (a
 * crash or a leak in one VM's import stays in it). 1 if any failed. */
static int run_all(const struct plan *p, unsigned k, const struct run_args *ra)
{
  size_t next = 0, running = 0;
  int bad = 0;
  fflush(NULL);
  while (next < p->n || running) {
    if (next < p->n && running < k && !cli_interrupted) {
      pid_t pid = fork();
      if (pid == 0)
        _exit(run_line(p, next, ra));
      if (pid < 0) {
        fprintf(stderr, "amiport: plan: cannot fork: %s\n", strerror(errno));
        bad = 1;
        if (!running)
          break;
      } else {
        next++;
        running++;
        continue;
      }
    }
    int st;
    pid_t w = waitpid(-1, &st, 0);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    running--;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      bad = 1;
    if (cli_interrupted && next < p->n)
      next = p->n; /* start no more */
  }
  return bad;
}

static int task_from_env(long *n)
{
  static const char *const vars[] = { "SLURM_ARRAY_TASK_ID", "AWS_BATCH_JOB_ARRAY_INDEX",
                                      "JOB_COMPLETION_INDEX", NULL };
  for (const char *const *v = vars; *v; v++) {
    const char *s = getenv(*v);
    char *end;
    if (!s || !*s)
      continue;
    errno = 0;
    *n = strtol(s, &end, 10);
    if (*end || errno || *n < 0)
      return cli_usage("plan run", "%s is '%s', not a task number", *v, s), -1;
    return 0;
  }
  return cli_usage("plan run", "--task-from-env: none of SLURM_ARRAY_TASK_ID, "
                               "AWS_BATCH_JOB_ARRAY_INDEX, JOB_COMPLETION_INDEX is set"), -1;
}

static int plan_run(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    BUNDLE_SOURCE_LONGOPTS,
    { "task", required_argument, NULL, 0x500 },
    { "task-from-env", no_argument, NULL, 0x501 },
    { "all", no_argument, NULL, 0x502 },
    { "parallel", required_argument, NULL, 0x503 },
    { "results", required_argument, NULL, 0x504 },
    { "max-requests-per-second", required_argument, NULL, 0x505 },
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct run_args ra = { .max_rate = 1000 };
  long task = -1, n;
  bool from_env = false, all = false;
  unsigned parallel = 1;
  char *end;
  int c;
  while ((c = getopt_long(argc, argv, "ph", longopts, NULL)) != -1) {
    if ((c >= 0x100 && c <= 0x102) || c == 0x110 || c == 0x111) {
      cli_image_option("plan run", c, optarg, &ra.ia);
      continue;
    }
    switch (c) {
    case 0x500:
      errno = 0;
      task = strtol(optarg, &end, 10);
      if (*end || errno || task < 0 || !*optarg)
        return cli_usage("plan run", "--task must be a line number from 0, not '%s'", optarg);
      break;
    case 0x501: from_env = true; break;
    case 0x502: all = true; break;
    case 0x503:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 256)
        return cli_usage("plan run", "--parallel must be 1 to 256, not '%s'", optarg);
      parallel = (unsigned)n;
      break;
    case 0x504: ra.results = optarg; break;
    case 0x505:
      n = strtol(optarg, &end, 10);
      if (*end || n < 0 || !*optarg)
        return cli_usage("plan run", "--max-requests-per-second must be a number (0 = no "
                                     "limit), not '%s'", optarg);
      ra.max_rate = (double)n;
      break;
    case 'p': ra.progress = true; break;
    case 'h': fputs(plan_help, stdout); return EXIT_OK;
    default: return cli_usage("plan run", "unknown option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage("plan run", "expects one PLAN");
  if ((task >= 0) + from_env + all != 1)
    return cli_usage("plan run", "takes one of --task N, --task-from-env and --all");
  if (!ra.results)
    return cli_usage("plan run", "--results LOC is required");
  if (strncmp(ra.results, "s3://", 5) == 0 &&
      cli_s3_target("plan run", ra.results, &ra.bucket, &ra.prefix) != 0)
    return EXIT_USAGE;
  int rc = EXIT_USAGE;
  struct plan p = { 0 };
  struct error e = { 0 };
  if (from_env && task_from_env(&task) < 0)
    goto out;
  if (plan_load(argv[optind], &p, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  if (!all && (size_t)task >= p.n) {
    cli_usage("plan run", "task %ld: the plan has %zu lines (0 to %zu)", task, p.n, p.n - 1);
    goto out;
  }
  cli_catch_signals();
  rc = (all ? run_all(&p, parallel, &ra) : run_line(&p, (size_t)task, &ra)) ? EXIT_FAIL : EXIT_OK;
out:
  plan_free(&p);
  free(ra.bucket);
  free(ra.prefix);
  return rc;
}

/* ---- status ---- */

/* Where status reads the ledger from: a folder, or S3 (listed once). */
struct ledgers {
  const char *dir;
  char *bucket, *prefix;
  struct aws_ctx ctx;
  bool ctx_ok;
  struct s3_list list;
};

static int ledgers_open(struct ledgers *lg, const char *results, const struct aws_opts *ao,
                        struct error *e)
{
  lg->dir = results;
  if (strncmp(results, "s3://", 5) != 0)
    return 0;
  if (cli_s3_target("plan status", results, &lg->bucket, &lg->prefix) != 0)
    return error_set(e, ERR_USAGE, "--results %s: not s3://BUCKET/PREFIX", results);
  if (aws_ctx_init(&lg->ctx, ao, e) < 0)
    return -1;
  lg->ctx_ok = true;
  char pre[1100];
  snprintf(pre, sizeof pre, "%s%s", lg->prefix && *lg->prefix ? lg->prefix : "",
           lg->prefix && *lg->prefix ? "/" : "");
  return s3_list_objects(&lg->ctx, lg->bucket, pre, &lg->list, e);
}

/* A line's ledger; NULL with e->code 0 when there is none (or it is not
 * JSON: a task that died writing it never renamed it into place). */
static json_object *ledger_read(struct ledgers *lg, const char *name, struct error *e)
{
  e->code = 0;
  if (!lg->bucket) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.json", lg->dir, name);
    return json_object_from_file(path);
  }
  char key[1200];
  ledger_key(lg->prefix, name, key, sizeof key);
  if (!s3_list_find(&lg->list, key))
    return NULL;
  uint8_t *buf = NULL;
  size_t len;
  if (s3_get_object(&lg->ctx, lg->bucket, key, 1 << 20, &buf, &len, e) < 0)
    return NULL;
  json_object *j = json_tokener_parse((const char *)buf);
  free(buf);
  return j;
}

static void ledgers_close(struct ledgers *lg)
{
  if (lg->bucket)
    s3_list_free(&lg->list);
  if (lg->ctx_ok)
    aws_ctx_free(&lg->ctx);
  free(lg->bucket);
  free(lg->prefix);
}

static int plan_status(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    { "results", required_argument, NULL, 0x504 },
    { "output", required_argument, NULL, 0x506 },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  const char *results = NULL;
  enum output out = OUTPUT_HUMAN;
  struct aws_opts ao = { 0 };
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (cli_aws_option(c, optarg, &ao))
      continue;
    switch (c) {
    case 0x504: results = optarg; break;
    case 0x506:
      if (cli_parse_output("plan status", optarg, &out))
        return EXIT_USAGE;
      break;
    case 'h': fputs(plan_help, stdout); return EXIT_OK;
    default: return cli_usage("plan status", "unknown option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage("plan status", "expects one PLAN");
  if (!results)
    return cli_usage("plan status", "--results LOC is required");
  struct plan p;
  struct error e = { 0 };
  if (plan_load(argv[optind], &p, &e) < 0)
    return cli_fail(&e);
  struct ledgers lg = { 0 };
  if (ledgers_open(&lg, results, &ao, &e) < 0) {
    plan_free(&p);
    return cli_fail(&e);
  }
  static const char *const states[] = { "done", "failed", "refused", "pending" };
  size_t count[4] = { 0 };
  int rc_fail = EXIT_FAIL;
  int64_t bytes = 0;
  double seconds = 0;
  json_object *lines = json_object_new_array();
  for (size_t i = 0; i < p.n; i++) {
    json_object *j = ledger_read(&lg, p.lines[i].name, &e), *v;
    if (!j && e.code) {
      rc_fail = cli_fail(&e);
      json_object_put(lines);
      goto out;
    }
    const char *st = "pending";
    if (j && json_object_object_get_ex(j, "state", &v) && json_object_is_type(v, json_type_string))
      st = json_object_get_string(v);
    size_t s = 0;
    while (s < 3 && strcmp(st, states[s]) != 0)
      s++;
    count[s]++;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(p.lines[i].name));
    json_object_object_add(o, "state", json_object_new_string(states[s]));
    if (j && json_object_object_get_ex(j, "bytes", &v))
      bytes += json_object_get_int64(v);
    if (j && json_object_object_get_ex(j, "seconds", &v))
      seconds += json_object_get_double(v);
    if (j && json_object_object_get_ex(j, "image_id", &v) && v)
      json_object_object_add(o, "image_id", json_object_get(v));
    json_object *er, *msg;
    if (j && s && json_object_object_get_ex(j, "error", &er) && er &&
        json_object_object_get_ex(er, "message", &msg))
      json_object_object_add(o, "error", json_object_get(msg));
    json_object_array_add(lines, o);
    json_object_put(j);
  }
  if (out == OUTPUT_JSON) {
    json_object *j = json_object_new_object(), *cj = json_object_new_object();
    for (int s = 0; s < 4; s++)
      json_object_object_add(cj, states[s], json_object_new_int64((int64_t)count[s]));
    json_object_object_add(j, "plan", json_object_new_string(p.name));
    json_object_object_add(j, "lines", json_object_new_int64((int64_t)p.n));
    json_object_object_add(j, "counts", cj);
    json_object_object_add(j, "bytes", json_object_new_int64(bytes));
    json_object_object_add(j, "seconds", json_object_new_double(seconds));
    json_object_object_add(j, "tasks", lines);
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
  } else {
    char b[32];
    printf("%zu lines: %zu done, %zu failed, %zu refused, %zu pending; %s uploaded in %.1f s "
           "of task time.\n", p.n, count[0], count[1], count[2], count[3],
           cli_human_size((uint64_t)bytes, b), seconds);
    for (size_t i = 0; i < json_object_array_length(lines); i++) {
      json_object *o = json_object_array_get_idx(lines, i), *st, *er;
      json_object_object_get_ex(o, "state", &st);
      if (json_object_object_get_ex(o, "error", &er))
        printf("  %s %s: %s\n", json_object_get_string(st), p.lines[i].name,
               json_object_get_string(er));
    }
    json_object_put(lines);
  }
  rc_fail = count[0] == p.n ? EXIT_OK : EXIT_FAIL;
out:
  ledgers_close(&lg);
  plan_free(&p);
  return rc_fail;
}

int cmd_plan(int argc, char **argv)
{
  if (argc < 2)
    return cli_usage("plan", "expects check, run, status or submit");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
    return fputs(plan_help, stdout), EXIT_OK;
  if (strcmp(argv[1], "check") == 0)
    return plan_check(argc - 1, argv + 1);
  if (strcmp(argv[1], "run") == 0)
    return plan_run(argc - 1, argv + 1);
  if (strcmp(argv[1], "status") == 0)
    return plan_status(argc - 1, argv + 1);
  if (strcmp(argv[1], "submit") == 0)
    return cli_plan_submit(argc - 1, argv + 1);
  return cli_usage("plan", "unknown subcommand '%s' (check, run, status or submit)", argv[1]);
}
