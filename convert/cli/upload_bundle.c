/* upload_bundle.c - amiport upload-bundle: an instance-store bundle's parts,
 * then its manifest, to S3 (what ec2-upload-bundle does), resumable. */
#include "bundle.h"
#include "cli.h"
#include "s3.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char upload_bundle_help[] =
  "Usage: amiport upload-bundle --bucket BUCKET[/PREFIX] --manifest MANIFEST [OPTIONS]\n\n"
  "Uploads an instance-store bundle (MANIFEST, NAME.manifest.xml as 'amiport bundle'\n"
  "or ec2-bundle-image wrote it, and the parts it names, which must be in MANIFEST's\n"
  "folder) to S3 as BUCKET/PREFIX/FILENAME: every part first, --jobs at once, each\n"
  "with its Content-MD5 (S3 refuses a body damaged on the way), then the manifest,\n"
  "so that the bucket never holds a manifest whose parts are missing.\n\n"
  "Before anything is sent every part must exist and be readable; a part whose\n"
  "SHA-1 is not the one the manifest gives is not sent, and the upload stops.\n"
  "Running the same command again resumes: a file the bucket already holds with the\n"
  "same size and MD5 (its ETag) is skipped. Then register the AMI with\n"
  "  amiport register --image-location BUCKET/PREFIX/NAME.manifest.xml --name AMI_NAME\n\n"
  "Requests are path-style (ENDPOINT/BUCKET/KEY), so the bucket must be in the\n"
  "region the request is signed for.\n\n"
  "  -b, --bucket BUCKET[/PREFIX]  the bucket, and the key prefix the files go under\n"
  "                            (an s3:// in front is ignored)\n"
  "  -m, --manifest MANIFEST   the bundle's manifest file\n"
  "      --acl ACL             canned ACL of every object: aws-exec-read (the default, as\n"
  "                            ec2-upload-bundle: the owner and EC2 may read), private,\n"
  "                            public-read, public-read-write, authenticated-read,\n"
  "                            bucket-owner-read, bucket-owner-full-control, or none\n"
  "                            (no ACL sent, for buckets whose ACLs are disabled)\n"
  "  -j, --jobs N              files uploaded at once (1 to 64, default 8); each is held\n"
  "                            in memory while it is sent (10 MiB for a standard part)\n"
  "      --retry               accepted for ec2-upload-bundle's sake: a failed request is\n"
  "                            always retried (throttling, 5xx, dropped connections; at\n"
  "                            most 10 attempts, with backoff)\n"
  "  -q, --quiet               no line on stderr for each file\n"
  "      --region REGION       AWS region (else AWS_REGION, AWS_DEFAULT_REGION, the\n"
  "                            profile's region, the instance's region)\n"
  "      --profile NAME        profile in ~/.aws/config and ~/.aws/credentials\n"
  "      --endpoint-url URL    send the S3 requests to URL (else AWS_ENDPOINT_URL_S3,\n"
  "                            AWS_ENDPOINT_URL, https://s3.REGION.amazonaws.com)\n"
  "  -h, --help                show this help\n\n"
  "Output: a line on stderr for each file stored or skipped; on stdout one line,\n"
  "  uploaded N parts, M skipped, manifest s3://BUCKET/KEY (uploaded|unchanged)\n"
  "Exit status: 0 when every part and the manifest are in the bucket, 1 on an error\n"
  "(what was stored stays; run again to resume), 2 on a usage error, 130 when\n"
  "interrupted.\n";

const char *const cli_s3_acls[] = {
  "aws-exec-read", "private", "public-read", "public-read-write", "authenticated-read",
  "bucket-owner-read", "bucket-owner-full-control", "none", NULL,
};

struct upload_bundle_progress {
  bool quiet;
  const char *bucket;
  size_t base, total; /* files done before this upload, files in all */
};

static void upload_bundle_on_file(void *arg, const struct s3_file *f, size_t done, size_t total)
{
  const struct upload_bundle_progress *p = arg;
  (void)total;
  if (p->quiet)
    return;
  char sz[32];
  fprintf(stderr, "amiport: upload-bundle: [%zu/%zu] %s s3://%s/%s (%s)\n", p->base + done,
          p->total, f->state == S3_FILE_SKIPPED ? "already there:" : "uploaded", p->bucket,
          f->key, cli_human_size(f->size, sz));
}

int cli_s3_target(const char *cmd, const char *arg, char **bucket, char **prefix)
{
  if (strncmp(arg, "s3://", 5) == 0)
    arg += 5;
  size_t bl = strcspn(arg, "/");
  if (bl < 3 || bl > 255)
    return cli_usage(cmd, "--bucket must be BUCKET[/PREFIX] with a bucket name of "
                          "3 to 255 characters, not '%s'", arg);
  for (size_t i = 0; i < bl; i++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_", arg[i]))
      return cli_usage(cmd, "--bucket: '%.*s' is not a bucket name (letters, "
                            "digits, '.', '-', '_')", (int)bl, arg);
  const char *p = arg + bl;
  while (*p == '/')
    p++;
  size_t pl = strlen(p);
  while (pl && p[pl - 1] == '/')
    pl--;
  if (pl > 900)
    return cli_usage(cmd, "--bucket: the prefix is longer than 900 bytes");
  *bucket = strndup(arg, bl);
  *prefix = strndup(p, pl);
  return 0;
}

/* Every part the manifest names exists in dir and can be read; else e names
 * the first that cannot (and how many more). */
static int upload_bundle_check_parts(const struct manifest *m, const char *mpath,
                                     const char *dir, char **paths, struct error *e)
{
  unsigned bad = 0;
  for (unsigned i = 0; i < m->nparts; i++) {
    const char *fn = m->parts[i].filename;
    if (!fn || !bundle_name_ok(fn))
      return error_set(e, ERR_FORMAT, "%s: part %u is named '%s', not a bare file name; "
                                      "nothing was uploaded", mpath, i, fn ? fn : "");
    if (asprintf(&paths[i], "%s/%s", dir, fn) < 0) {
      paths[i] = NULL;
      return error_set(e, ERR_NOMEM, "out of memory");
    }
    int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
    struct stat st;
    int err = fd < 0 ? errno : fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? 0 : EINVAL;
    if (fd >= 0)
      close(fd);
    if (err && bad++ == 0) {
      errno = err;
      if (err == EINVAL)
        error_set(e, ERR_USAGE, "%s names part %u, %s, but %s is not a regular file", mpath, i,
                  fn, paths[i]);
      else
        error_errno(e, "%s names part %u, %s, but %s cannot be read", mpath, i, fn, paths[i]);
    }
  }
  if (!bad)
    return 0;
  if (bad > 1)
    error_prefix(e, "%u of the %u parts are missing or unreadable; the first", bad, m->nparts);
  size_t l = strlen(e->msg);
  snprintf(e->msg + l, sizeof e->msg - l, "; nothing was uploaded");
  return -1;
}

/* The longest common prefix of every key: the one listing resume needs. */
static char *upload_bundle_common_prefix(struct s3_file *files, size_t n)
{
  size_t len = strlen(files[0].key);
  for (size_t i = 1; i < n; i++) {
    size_t k = 0;
    while (k < len && files[i].key[k] == files[0].key[k])
      k++;
    len = k;
  }
  return strndup(files[0].key, len);
}

/* Lists what the bucket holds, then stores the parts and, last, the manifest
 * (files[nparts]); prints the result. An exit status. */
static int upload_bundle_send(struct aws_ctx *ctx, struct s3_file *files, unsigned nparts,
                              const char *bucket, const char *prefix, const char *acl,
                              unsigned jobs, bool quiet)
{
  struct error e = { 0 };
  struct s3_list have = { 0 };
  char *common = upload_bundle_common_prefix(files, (size_t)nparts + 1);
  if (!common)
    return error_set(&e, ERR_NOMEM, "out of memory"), cli_fail(&e);
  int rc = s3_list_objects(ctx, bucket, common, &have, &e);
  free(common);
  if (rc < 0)
    return cli_fail(&e);
  for (unsigned i = 0; i <= nparts; i++)
    files[i].have = s3_list_find(&have, files[i].key);

  struct upload_bundle_progress pr = { .quiet = quiet, .bucket = bucket,
                                       .total = (size_t)nparts + 1 };
  struct s3_upload parts = { .bucket = bucket, .acl = acl, .files = files, .nfiles = nparts,
                             .jobs = jobs, .cancel = &cli_interrupted,
                             .on_file = upload_bundle_on_file, .arg = &pr };
  struct s3_upload man = parts;
  man.files = &files[nparts];
  man.nfiles = 1;
  man.content_type = "application/xml";
  rc = s3_upload_files(ctx, &parts, &e);
  if (rc == 0) {
    pr.base = nparts;
    rc = s3_upload_files(ctx, &man, &e);
  }
  s3_list_free(&have);
  if (rc < 0) {
    cli_fail(&e);
    if (acl && strstr(e.msg, ": AccessControlListNotSupported:"))
      fprintf(stderr, "amiport: upload-bundle: the bucket has ACLs disabled (Object Ownership: "
                      "bucket owner enforced); --acl none uploads without one, and then the "
                      "bucket policy must let EC2 read the bundle\n");
    if (parts.uploaded + parts.skipped)
      fprintf(stderr, "amiport: upload-bundle: %zu of %u parts are in s3://%s/%s; the same "
                      "command resumes (what is there is skipped)\n",
              parts.uploaded + parts.skipped, nparts, bucket, prefix);
    return e.code == ERR_INTERRUPTED ? 130 : EXIT_FAIL;
  }
  printf("uploaded %zu parts, %zu skipped, manifest s3://%s/%s (%s)\n", parts.uploaded,
         parts.skipped, bucket, files[nparts].key, man.uploaded ? "uploaded" : "unchanged");
  if (!quiet)
    fprintf(stderr, "amiport: upload-bundle: register it with: amiport register "
                    "--image-location %s/%s --name NAME\n", bucket, files[nparts].key);
  return EXIT_OK;
}

int cmd_upload_bundle(int argc, char **argv)
{
  static const struct option longopts[] = {
    AWS_LONGOPTS,
    { "bucket", required_argument, NULL, 'b' },
    { "manifest", required_argument, NULL, 'm' },
    { "acl", required_argument, NULL, 0x500 },
    { "jobs", required_argument, NULL, 'j' },
    { "retry", no_argument, NULL, 0x501 },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct aws_opts ao = { 0 };
  const char *target = NULL, *mpath = NULL, *acl = "aws-exec-read";
  unsigned jobs = 8;
  bool quiet = false;
  int c;
  while ((c = getopt_long(argc, argv, "b:m:j:qh", longopts, NULL)) != -1) {
    if (cli_aws_option(c, optarg, &ao))
      continue;
    char *end;
    long n;
    bool known = false;
    switch (c) {
    case 'b': target = optarg; break;
    case 'm': mpath = optarg; break;
    case 0x500:
      for (const char *const *a = cli_s3_acls; *a; a++)
        known |= strcmp(optarg, *a) == 0;
      if (!known)
        return cli_usage("upload-bundle", "--acl must be a canned ACL (aws-exec-read, private, "
                                          "...; see --help) or none, not '%s'", optarg);
      acl = optarg;
      break;
    case 'j':
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 64)
        return cli_usage("upload-bundle", "--jobs must be 1 to 64, not '%s'", optarg);
      jobs = (unsigned)n;
      break;
    case 0x501: break; /* retries are always on */
    case 'q': quiet = true; break;
    case 'h': fputs(upload_bundle_help, stdout); return EXIT_OK;
    default: return cli_usage("upload-bundle", "unknown option");
    }
  }
  if (optind != argc)
    return cli_usage("upload-bundle", "takes no arguments, only options ('%s'?)", argv[optind]);
  if (!target || !mpath)
    return cli_usage("upload-bundle", "--bucket and --manifest are required");
  if (strcmp(acl, "none") == 0)
    acl = NULL;

  char *bucket = NULL, *prefix = NULL, *dir = NULL;
  char **paths = NULL, **keys = NULL;
  struct s3_file *files = NULL;
  struct manifest m = { 0 };
  bool have_manifest = false;
  struct error e = { 0 };
  int rc = cli_s3_target("upload-bundle", target, &bucket, &prefix);
  if (rc)
    return rc;
  rc = EXIT_FAIL;
  if (manifest_read(mpath, &m, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  have_manifest = true;
  const char *slash = strrchr(mpath, '/');
  dir = slash ? strndup(mpath, slash == mpath ? 1 : (size_t)(slash - mpath)) : strdup(".");
  paths = calloc((size_t)m.nparts + 1, sizeof *paths);
  keys = calloc((size_t)m.nparts + 1, sizeof *keys);
  files = calloc((size_t)m.nparts + 1, sizeof *files);
  if (!dir || !paths || !keys || !files) {
    rc = cli_fail((error_set(&e, ERR_NOMEM, "out of memory"), &e));
    goto out;
  }
  if (upload_bundle_check_parts(&m, mpath, dir, paths, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  for (unsigned i = 0; i <= m.nparts; i++) {
    const char *name = i < m.nparts ? m.parts[i].filename : slash ? slash + 1 : mpath;
    if (asprintf(&keys[i], "%s%s%s", prefix, *prefix ? "/" : "", name) < 0) {
      keys[i] = NULL;
      rc = cli_fail((error_set(&e, ERR_NOMEM, "out of memory"), &e));
      goto out;
    }
    files[i].key = keys[i];
    files[i].path = i < m.nparts ? paths[i] : mpath;
    files[i].sha1 = i < m.nparts && m.parts[i].sha1[0] ? m.parts[i].sha1 : NULL;
  }

  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &ao, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  cli_catch_signals();
  rc = upload_bundle_send(&ctx, files, m.nparts, bucket, prefix, acl, jobs, quiet);
  aws_ctx_free(&ctx);
out:
  for (unsigned i = 0; have_manifest && i <= m.nparts; i++) {
    free(paths ? paths[i] : NULL);
    free(keys ? keys[i] : NULL);
  }
  free(files);
  free(paths);
  free(keys);
  if (have_manifest)
    manifest_free(&m);
  free(dir);
  free(bucket);
  free(prefix);
  return rc;
}
