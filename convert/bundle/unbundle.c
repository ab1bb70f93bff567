/* unbundle.c - a bundle's parts in a local folder, and a bundle decoded back
 * to an image file: bundle_open (source.c) and the copy engine, whose
 * output is renamed into place only after the tar stream's SHA-1 matched. */
#include "bundle_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"

static int dir_get(void *ctx, const char *name, uint64_t max, uint8_t **buf, size_t *len,
                   struct error *e)
{
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error_errno(e, "bundle part %s", path);
  int ret = -1;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
    error_set(e, ERR_UNSUPPORTED, "bundle part %s: not a regular file of at most %llu MiB", path,
              (unsigned long long)(max >> 20));
  else if (!(*buf = malloc((size_t)st.st_size + 1)))
    error_set(e, ERR_NOMEM, "out of memory for bundle part %s", path);
  else if (img_pread_file(fd, *buf, (size_t)st.st_size, 0, path, e) < 0) {
    free(*buf);
    *buf = NULL;
  } else {
    *len = (size_t)st.st_size;
    ret = 0;
  }
  close(fd);
  return ret;
}

static int dir_has(void *ctx, const char *name, struct error *e)
{
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name);
  if (stat(path, &st) < 0)
    return error_errno(e, "bundle part %s", path);
  if (!S_ISREG(st.st_mode))
    return error_set(e, ERR_FORMAT, "bundle part %s: not a regular file", path);
  return 0;
}

void bundle_store_dir(struct bundle_store *s, const char *dir)
{
  *s = (struct bundle_store){ .where = dir, .get = dir_get, .has = dir_has, .ctx = (void *)dir,
                              .jobs = 2 };
}

int unbundle(const struct unbundle_opts *o, struct unbundle_result *res, struct error *e)
{
  memset(res, 0, sizeof *res);
  const struct image_format *f = img_format_by_name(o->format);
  if (!f || !f->create)
    return error_set(e, ERR_USAGE, "unbundle: '%s' is not a format amiport writes", o->format);
  struct bundle_store store;
  bundle_store_dir(&store, o->source);
  struct bundle_source_opts so = { .store = &store, .manifest = o->manifest,
                                   .local_manifest = true, .key = o->key,
                                   .key_path = o->key_path, .cert = o->cert,
                                   .cert_path = o->cert_path, .cancel = o->cancel };
  struct img *src = bundle_open(&so, e);
  if (!src)
    return -1;
  const struct manifest *m = bundle_image_manifest(src);
  /* the manifest's name, with the format's extension unless raw */
  const char *name = m->name, *dot = strrchr(name, '.');
  bool raw = strcmp(f->name, "raw") == 0;
  int stem = dot && dot != name && !raw ? (int)(dot - name) : (int)strlen(name);
  snprintf(res->path, sizeof res->path, "%s/%.*s%s%s", o->destination, stem, name,
           raw ? "" : ".", raw ? "" : strcmp(f->name, "vpc") ? f->name : "vhd");
  struct copy_opts co = { .progress = o->progress, .cancel = o->cancel };
  int ret = copy_to_file(src, res->path, f->name, o->create, o->force, &co, NULL, e);
  if (ret == 0) {
    snprintf(res->digest, sizeof res->digest, "%s", m->digest);
    res->size = m->size;
    res->nparts = m->nparts;
  }
  img_close(src);
  return ret;
}
