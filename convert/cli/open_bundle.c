/* open_bundle.c - a bundle named as an IMAGE (PATH.manifest.xml, or
 * s3://BUCKET/PREFIX.manifest.xml) opened as a streaming source with the
 * user's private key; and a streaming source spooled to a temporary file
 * for the commands that need to read anywhere. */
#include "bundle.h"
#include "cli.h"
#include "copy.h"
#include "import.h"
#include "s3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S3_BUNDLE_JOBS 2 /* parts fetched ahead: 10 MiB each, enough to hide latency */

bool cli_is_bundle(const char *path)
{
  size_t n = strlen(path), m = strlen(".manifest.xml");
  return strncmp(path, "s3://", 5) == 0 || (n > m && strcmp(path + n - m, ".manifest.xml") == 0);
}

struct s3_store {
  struct aws_ctx aws;
  char bucket[256];
  char dir[1024];   /* the manifest's key up to its last '/', "" at the top */
  char where[1400]; /* s3://BUCKET/DIR */
  struct s3_list list;
};

static int s3_store_key(const struct s3_store *s, const char *name, char *key, size_t len,
                        struct error *e)
{
  if ((size_t)snprintf(key, len, "%s%s", s->dir, name) >= len)
    return error_set(e, ERR_USAGE, "%s/%s: key too long", s->where, name);
  return 0;
}

static int s3_store_get(void *ctx, const char *name, uint64_t max, uint8_t **buf, size_t *len,
                        struct error *e)
{
  struct s3_store *s = ctx;
  char key[2048];
  if (s3_store_key(s, name, key, sizeof key, e) < 0)
    return -1;
  return s3_get_object(&s->aws, s->bucket, key, max, buf, len, e);
}

static int s3_store_has(void *ctx, const char *name, struct error *e)
{
  struct s3_store *s = ctx;
  char key[2048];
  if (s3_store_key(s, name, key, sizeof key, e) < 0)
    return -1;
  if (!s3_list_find(&s->list, key))
    return error_set(e, ERR_FORMAT, "bundle part s3://%s/%s: not in the bucket", s->bucket, key);
  return 0;
}

static void s3_store_release(void *ctx)
{
  struct s3_store *s = ctx;
  s3_list_free(&s->list);
  aws_ctx_free(&s->aws);
  free(s);
}

/* The store for s3://BUCKET/KEY; *name: the manifest's file name in it. */
static int s3_store_open(const char *url, const struct image_args *ia, struct bundle_store *st,
                         const char **name, struct error *e)
{
  const char *b = url + 5, *slash = strchr(b, '/');
  if (!slash || slash == b || !slash[1] || (size_t)(slash - b) >= 256)
    return error_set(e, ERR_USAGE, "%s: not s3://BUCKET/KEY.manifest.xml", url);
  struct s3_store *s = calloc(1, sizeof *s);
  if (!s)
    return error_set(e, ERR_NOMEM, "out of memory");
  snprintf(s->bucket, sizeof s->bucket, "%.*s", (int)(slash - b), b);
  const char *key = slash + 1, *last = strrchr(key, '/');
  *name = last ? last + 1 : key;
  snprintf(s->dir, sizeof s->dir, "%.*s", last ? (int)(last - key + 1) : 0, key);
  snprintf(s->where, sizeof s->where, "s3://%s/%.*s", s->bucket,
           s->dir[0] ? (int)strlen(s->dir) - 1 : 0, s->dir);
  if (s->where[strlen(s->where) - 1] == '/')
    s->where[strlen(s->where) - 1] = 0;
  if (aws_ctx_init(&s->aws, &ia->aws, e) < 0) {
    free(s);
    return -1;
  }
  if (s3_list_objects(&s->aws, s->bucket, s->dir, &s->list, e) < 0) {
    s3_store_release(s);
    return -1;
  }
  *st = (struct bundle_store){ .where = s->where, .get = s3_store_get, .has = s3_store_has,
                               .release = s3_store_release, .ctx = s,
                               .jobs = S3_BUNDLE_JOBS };
  return 0;
}

struct img *cli_open_bundle(const char *path, const struct image_args *ia, struct error *e)
{
  if (!ia->privatekey) {
    error_set(e, ERR_USAGE, "%s: a bundle is read with the private key it was made for: "
              "--privatekey KEY.pem", path);
    return NULL;
  }
  EVP_PKEY *key = bundle_load_key(ia->privatekey, e);
  EVP_PKEY *cert = key && ia->cert ? bundle_load_cert(ia->cert, e) : NULL;
  struct img *im = NULL;
  if (!key || (ia->cert && !cert))
    goto out;
  struct bundle_store st;
  struct bundle_source_opts so = { .store = &st, .key = key, .key_path = ia->privatekey,
                                   .cert = cert, .cert_path = ia->cert,
                                   .cancel = &cli_interrupted };
  if (strncmp(path, "s3://", 5) == 0) {
    if (s3_store_open(path, ia, &st, &so.manifest, e) < 0)
      goto out;
  } else {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) {
      error_set(e, ERR_NOMEM, "out of memory");
      goto out;
    }
    bundle_store_dir(&st, dir);
    st.release = free;
    so.manifest = path;
    so.local_manifest = true;
  }
  im = bundle_open(&so, e);
out:
  EVP_PKEY_free(key);
  EVP_PKEY_free(cert);
  return im;
}

size_t cli_bundle_ephemerals(const struct manifest *m, struct ec2_disk *eph,
                             char (*dev)[CLI_DEVICE_MAX])
{
  size_t n = 0;
  for (unsigned i = 0; i < m->nmappings && n < IMPORT_MAX_EXTRA; i++) {
    const struct bundle_mapping *bm = &m->mappings[i];
    if (strncmp(bm->virtual_name, "ephemeral", 9) != 0)
      continue;
    snprintf(dev[n], CLI_DEVICE_MAX, "%s%s", bm->device[0] == '/' ? "" : "/dev/", bm->device);
    eph[n] = (struct ec2_disk){ .device = dev[n], .virtual_name = bm->virtual_name };
    n++;
  }
  return n;
}

struct img *cli_spool(struct img *src, bool progress, struct error *e)
{
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  static unsigned n;
  snprintf(path, sizeof path, "%s/amiport-spool-%ld-%u.raw", tmp && *tmp ? tmp : "/tmp",
           (long)getpid(), n++);
  struct copy_opts co = { .progress = progress, .cancel = &cli_interrupted };
  struct img *im = NULL;
  if (copy_to_file(src, path, "raw", NULL, false, &co, NULL, e) == 0) {
    im = img_open(path, "raw", &(struct open_opts){ .quiet = true }, e);
    unlink(path); /* gone with the last descriptor */
    char *name = im ? strdup(src->path) : NULL;
    if (name) { /* reports name what the user named */
      free(im->path);
      im->path = name;
    }
  }
  return im;
}
