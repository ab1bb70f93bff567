/* registry.c - the list of formats, opening by name or by probing magic bytes,
 * creating, and the bounds-checked wrappers every caller goes through.
 * Raw answers every probe with 1, so it wins only when nothing else bids; the
 * image is then marked guessed and a warning says so. */
#include "image.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct image_format *const formats[] = {
  &format_qcow2,
  &format_vmdk,
  &format_ova,
  &format_vhd,
  &format_vhdx,
  &format_raw,
  NULL,
};

const struct image_format *const *img_formats(void) { return formats; }

const struct image_format *img_format_by_name(const char *name)
{
  for (size_t i = 0; formats[i]; i++)
    if (strcmp(formats[i]->name, name) == 0 ||
        (formats[i]->alias && strcmp(formats[i]->alias, name) == 0))
      return formats[i];
  return NULL;
}

static const struct image_format *probe(int fd, const char *path, struct error *e)
{
  uint8_t head[4096], tail[512];
  ssize_t n = pread(fd, head, sizeof head, 0), nt = 0;
  struct stat st;
  if (n >= 0 && fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof tail)
    nt = pread(fd, tail, sizeof tail, st.st_size - (off_t)sizeof tail);
  if (n < 0 || nt < 0) {
    error_errno(e, "%s: read", path);
    return NULL;
  }
  const struct image_format *best = NULL;
  int best_score = 0;
  for (size_t i = 0; formats[i]; i++) {
    const struct image_format *f = formats[i];
    if (f->flags & FMT_NO_PROBE)
      continue;
    int s = f->probe ? f->probe(head, (size_t)n) : 0;
    if (f->probe_tail && nt == (ssize_t)sizeof tail) {
      int t = f->probe_tail(tail, sizeof tail);
      s = t > s ? t : s;
    }
    if (s > best_score) {
      best_score = s;
      best = f;
    }
  }
  return best;
}

struct img *img_open(const char *path, const char *fmtname, const struct open_opts *o,
                     struct error *e)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error_errno(e, "%s: open", path);
    return NULL;
  }
  return img_open_fd(fd, path, fmtname, o, e);
}

struct img *img_open_fd(int fd, const char *path, const char *fmtname,
                        const struct open_opts *o, struct error *e)
{
  static const struct open_opts defaults;
  if (!o)
    o = &defaults;
  const struct image_format *f = NULL;
  if (fmtname && !(f = img_format_by_name(fmtname))) {
    error_set(e, ERR_USAGE, "unknown format '%s'", fmtname);
    close(fd);
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
    if (S_ISDIR(st.st_mode))
      error_set(e, ERR_USAGE, "%s: is a directory", path);
    else
      error_errno(e, "%s: stat", path);
    close(fd);
    return NULL;
  }
  bool guessed = false;
  if (!f) {
    if (!(f = probe(fd, path, e))) {
      close(fd);
      return NULL;
    }
    guessed = f == &format_raw;
  }
  struct img *im = calloc(1, sizeof *im);
  if (!im || !(im->path = strdup(path))) {
    free(im);
    close(fd);
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  im->fmt = f;
  im->fd = fd;
  im->guessed = guessed;
  if (f->open(im, o, e) < 0) {
    img_close(im);
    return NULL;
  }
  if (guessed && !o->quiet)
    fprintf(stderr, "amiport: warning: %s: no format recognised, reading it as raw "
                    "(pass -f raw to say so)\n", path);
  return im;
}

struct img *img_create(const char *path, const char *fmtname, uint64_t size,
                       struct create_opts *o, struct error *e)
{
  const struct image_format *f = img_format_by_name(fmtname);
  if (!f) {
    error_set(e, ERR_USAGE, "unknown format '%s'", fmtname);
    return NULL;
  }
  if (!f->create) {
    error_set(e, ERR_UNSUPPORTED, "format %s cannot be written", fmtname);
    return NULL;
  }
  static struct create_opts none;
  if (!o)
    o = &none;
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    error_errno(e, "%s: create", path);
    return NULL;
  }
  struct img *im = calloc(1, sizeof *im);
  if (!im || !(im->path = strdup(path))) {
    free(im);
    close(fd);
    unlink(path);
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  im->fmt = f;
  im->fd = fd;
  im->size = size;
  im->block_size = 1;
  im->writable = true;
  im->durable = o->durable;
  im->stream = o->stream;
  if (f->create(im, size, o, e) < 0)
    goto fail;
  for (size_t i = 0; i < o->n; i++)
    if (!o->v[i].used) {
      error_set(e, ERR_USAGE, "format %s has no option '%s' (see amiport convert --help)",
                fmtname, o->v[i].key);
      goto fail;
    }
  return im;
fail:
  img_close(im);
  unlink(path);
  return NULL;
}

void img_close(struct img *im)
{
  if (!im)
    return;
  if (im->fmt && im->fmt->close)
    im->fmt->close(im);
  if (im->fd >= 0)
    close(im->fd);
  free(im->path);
  free(im);
}

int img_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  if (off > im->size || len > im->size - off)
    return error_set(e, ERR_USAGE, "%s: read of %zu bytes at %llu is past the end (%llu)",
                     im->path, len, (unsigned long long)off, (unsigned long long)im->size);
  if (len == 0)
    return 0;
  return im->fmt->pread(im, buf, len, off, e);
}

int img_verify_source(struct img *im, struct error *e)
{
  return im->fmt->verify ? im->fmt->verify(im, e) : 0;
}

int img_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                struct error *e)
{
  if (off > im->size || len > im->size - off)
    return error_set(e, ERR_USAGE, "%s: map of %llu bytes at %llu is past the end", im->path,
                     (unsigned long long)len, (unsigned long long)off);
  if (len == 0)
    return 0;
  if (!im->fmt->extents)
    return extent_list_add(out, off, len, EXTENT_DATA, e);
  /* The map must tile [off, off+len) exactly. The format may have merged
   * its first extent into the caller's last one when that ended at off. */
  size_t first = out->n;
  bool joined = first && out->v[first - 1].off + out->v[first - 1].len == off;
  if (im->fmt->extents(im, off, len, out, e) < 0)
    return -1;
  size_t i = joined ? first - 1 : first;
  uint64_t at = joined ? out->v[i].off : off;
  for (; i < out->n; i++) {
    if (out->v[i].off != at || out->v[i].len == 0)
      return error_set(e, ERR_FORMAT, "%s: internal error: map is not contiguous at %llu",
                       im->path, (unsigned long long)at);
    at += out->v[i].len;
  }
  if (at != off + len)
    return error_set(e, ERR_FORMAT, "%s: internal error: map ends at %llu, not %llu", im->path,
                     (unsigned long long)at, (unsigned long long)(off + len));
  return 0;
}

int img_map_walk(struct img *im, img_extent_cb cb, void *ctx, struct error *e)
{
  struct extent_list map = { 0 };
  struct extent pend = { 0 };
  int ret = 0;
  for (uint64_t off = 0; off < im->size && ret == 0; off += IMG_MAP_WINDOW) {
    map.n = 0;
    uint64_t len = im->size - off < IMG_MAP_WINDOW ? im->size - off : IMG_MAP_WINDOW;
    if (img_extents(im, off, len, &map, e) < 0) {
      ret = -1;
      break;
    }
    for (size_t i = 0; i < map.n && ret == 0; i++) {
      if (pend.len && pend.kind == map.v[i].kind) {
        pend.len += map.v[i].len;
        continue;
      }
      if (pend.len)
        ret = cb(ctx, &pend, e);
      pend = map.v[i];
    }
  }
  if (ret == 0 && pend.len)
    ret = cb(ctx, &pend, e);
  extent_list_free(&map);
  return ret;
}

int64_t img_actual_size(struct img *im)
{
  struct stat st;
  if (im->fd < 0 || fstat(im->fd, &st) < 0)
    return -1;
  return (int64_t)st.st_blocks * 512;
}

int extent_list_add(struct extent_list *l, uint64_t off, uint64_t len, enum extent_kind kind,
                    struct error *e)
{
  if (len == 0)
    return 0;
  if (l->n) {
    struct extent *last = &l->v[l->n - 1];
    if (last->kind == kind && last->off + last->len == off) {
      last->len += len;
      return 0;
    }
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct extent *v = realloc(l->v, cap * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory for the map");
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct extent){ off, len, kind };
  return 0;
}

void extent_list_free(struct extent_list *l)
{
  free(l->v);
  *l = (struct extent_list){ 0 };
}

const char *extent_kind_name(enum extent_kind k)
{
  switch (k) {
  case EXTENT_DATA: return "data";
  case EXTENT_ZERO: return "zero";
  case EXTENT_HOLE: return "hole";
  }
  return "?";
}

int img_pread_file(int fd, void *buf, size_t len, uint64_t off, const char *path,
                   struct error *e)
{
  uint8_t *p = buf;
  while (len) {
    ssize_t n = pread(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return error_errno(e, "%s: read at offset %llu", path, (unsigned long long)off);
    }
    if (n == 0)
      return error_set(e, ERR_FORMAT, "%s: file ends before offset %llu (truncated?)", path,
                       (unsigned long long)(off + len));
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return 0;
}

/* Buffered writes to one file take its inode lock in the kernel, and a
 * writer that finds it taken spins on it: with every copy worker writing,
 * that spinning cost more CPU than the copy. Writers queue here instead,
 * asleep; the reading, hashing and compressing around them stay parallel. */
static pthread_mutex_t img_write_lock = PTHREAD_MUTEX_INITIALIZER;

int img_pwrite_file(int fd, const void *buf, size_t len, uint64_t off, const char *path,
                    struct error *e)
{
  const uint8_t *p = buf;
  int rc = 0;
  pthread_mutex_lock(&img_write_lock);
  while (len) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = error_errno(e, "%s: write at offset %llu", path, (unsigned long long)off);
      break;
    }
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  pthread_mutex_unlock(&img_write_lock);
  return rc;
}

int img_sync(struct img *im)
{
  return im->durable ? fsync(im->fd) : 0;
}

int img_pwrite_sparse(int fd, const void *vbuf, size_t n, uint64_t off, const char *path,
                      struct error *e)
{
  const uint8_t *buf = vbuf;
  size_t at = 0;
  while (at < n) {
    size_t k = n - at < 4096 ? n - at : 4096;
    if (buf_is_zero(buf + at, k)) {
      at += k;
      continue;
    }
    size_t stop = at + k;
    while (stop < n) {
      size_t k2 = n - stop < 4096 ? n - stop : 4096;
      if (buf_is_zero(buf + stop, k2))
        break;
      stop += k2;
    }
    if (img_pwrite_file(fd, buf + at, stop - at, off + at, path, e) < 0)
      return -1;
    at = stop;
  }
  return 0;
}

bool buf_is_zero(const void *buf, size_t len)
{
  const uint8_t *p = buf;
  /* Check the first 16 bytes, then compare the buffer with itself shifted. */
  size_t head = len < 16 ? len : 16;
  for (size_t i = 0; i < head; i++)
    if (p[i])
      return false;
  return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}
