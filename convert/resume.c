/* resume.c - a download that survives an interruption (export --resume).
 *
 * Blocks go to DST.partial, a sparse raw file the size of the source, and
 * DST.partial.state records which blocks are written: a text line naming
 * the source, its size and block size, then one byte per block. The state
 * is written only after an fdatasync of the data it vouches for, every few
 * seconds and when the copy stops, so a block marked done is on disk even
 * after a crash. A second run with the same source skips the blocks marked
 * done: its source is the real one seen through a map with those blocks as
 * holes. */
#include "resume.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "progress.h"

#define RESUME_CHECKPOINT_S 5.0

struct resume {
  char *partial, *state;
  char header[256];
  size_t header_len;
  uint64_t size, nblocks;
  uint32_t block;
  uint8_t *done;      /* one byte per block: 1 when written */
  uint64_t ndone, reused;
  struct img *inner;  /* the source, for the filtered view */
  struct img *target;
  pthread_mutex_t lock;
  double last_checkpoint;
  struct error err;   /* a checkpoint that failed in a worker */
  bool failed;
};

static int resume_load(struct resume *r)
{
  int fd = open(r->state, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  char head[256];
  ssize_t n = pread(fd, head, r->header_len, 0);
  bool ok = n == (ssize_t)r->header_len && memcmp(head, r->header, r->header_len) == 0 &&
            pread(fd, r->done, r->nblocks, r->header_len) == (ssize_t)r->nblocks;
  close(fd);
  if (!ok)
    return -1;
  for (uint64_t i = 0; i < r->nblocks; i++)
    r->ndone += r->done[i] = r->done[i] == 1;
  return 0;
}

struct resume *resume_open(const char *dst, const char *source_id, uint64_t size, uint32_t block,
                           struct error *e)
{
  struct resume *r = calloc(1, sizeof *r);
  if (!r)
    return error_set(e, ERR_NOMEM, "out of memory"), NULL;
  pthread_mutex_init(&r->lock, NULL);
  r->size = size;
  r->block = block;
  r->nblocks = (size + block - 1) / block;
  r->header_len = (size_t)snprintf(r->header, sizeof r->header,
                                   "amiport resume 1 %s size %llu block %u\n", source_id,
                                   (unsigned long long)size, block);
  if (asprintf(&r->partial, "%s.partial", dst) < 0 || asprintf(&r->state, "%s.partial.state", dst) < 0 ||
      !(r->done = calloc(r->nblocks ? r->nblocks : 1, 1))) {
    resume_close(r);
    return error_set(e, ERR_NOMEM, "out of memory"), NULL;
  }
  int fd = -1;
  struct stat st;
  if (stat(r->partial, &st) == 0 && (uint64_t)st.st_size == size && resume_load(r) == 0) {
    fd = open(r->partial, O_RDWR | O_CLOEXEC);
    r->reused = r->ndone;
  } else {
    memset(r->done, 0, r->nblocks);
    r->ndone = 0;
    unlink(r->state);
    fd = open(r->partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && ftruncate(fd, (off_t)size) < 0) {
      error_errno(e, "%s: set size to %llu", r->partial, (unsigned long long)size);
      close(fd);
      resume_close(r);
      return NULL;
    }
  }
  if (fd < 0) {
    error_errno(e, "%s: cannot open", r->partial);
    resume_close(r);
    return NULL;
  }
  if (!(r->target = img_open_fd(fd, r->partial, "raw", &(struct open_opts){ .quiet = true }, e))) {
    resume_close(r);
    return NULL;
  }
  r->target->writable = true;
  r->target->block_size = 512;
  r->last_checkpoint = mono_now();
  return r;
}

uint64_t resume_blocks_reused(const struct resume *r)
{
  return r->reused;
}

struct img *resume_target(struct resume *r)
{
  return r->target;
}

int resume_checkpoint(struct resume *r, struct error *e)
{
  pthread_mutex_lock(&r->lock);
  int ret = -1, fd = -1;
  char *tmp = NULL;
  if (fdatasync(r->target->fd) < 0) {
    error_errno(e, "%s: fdatasync", r->partial);
    goto out;
  }
  if (asprintf(&tmp, "%s.tmp", r->state) < 0) {
    tmp = NULL;
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || img_pwrite_file(fd, r->header, r->header_len, 0, tmp, e) < 0 ||
      img_pwrite_file(fd, r->done, r->nblocks, r->header_len, tmp, e) < 0) {
    if (fd < 0)
      error_errno(e, "%s: cannot create", tmp);
    goto out;
  }
  if (fdatasync(fd) < 0 || rename(tmp, r->state) < 0) {
    error_errno(e, "%s: cannot write", r->state);
    goto out;
  }
  r->last_checkpoint = mono_now();
  ret = 0;
out:
  if (fd >= 0)
    close(fd);
  if (ret < 0 && tmp)
    unlink(tmp);
  free(tmp);
  pthread_mutex_unlock(&r->lock);
  return ret;
}

void resume_unit_done(void *ctx, uint64_t off, uint64_t len)
{
  struct resume *r = ctx;
  uint64_t first = (off + r->block - 1) / r->block, end = off + len;
  uint64_t last = end == r->size ? r->nblocks : end / r->block; /* blocks wholly inside */
  pthread_mutex_lock(&r->lock);
  for (uint64_t b = first; b < last; b++)
    if (!r->done[b]) {
      r->done[b] = 1;
      r->ndone++;
    }
  bool due = mono_now() - r->last_checkpoint > RESUME_CHECKPOINT_S;
  if (due)
    r->last_checkpoint = mono_now(); /* one thread takes it */
  pthread_mutex_unlock(&r->lock);
  struct error e;
  if (due && resume_checkpoint(r, &e) < 0) {
    pthread_mutex_lock(&r->lock);
    if (!r->failed) {
      r->failed = true;
      r->err = e;
    }
    pthread_mutex_unlock(&r->lock);
  }
}

/* ---- the source seen without the blocks already written ---- */

static int resume_src_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct resume *r = im->priv;
  return img_pread(r->inner, buf, len, off, e);
}

static int resume_src_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                              struct error *e)
{
  struct resume *r = im->priv;
  struct extent_list in = { 0 };
  int ret = img_extents(r->inner, off, len, &in, e);
  for (size_t i = 0; ret == 0 && i < in.n; i++) {
    struct extent x = in.v[i];
    if (x.kind != EXTENT_DATA) {
      ret = extent_list_add(out, x.off, x.len, x.kind, e);
      continue;
    }
    for (uint64_t at = x.off; ret == 0 && at < x.off + x.len;) { /* per block: data or done */
      uint64_t b = at / r->block, stop = (b + 1) * r->block;
      if (stop > x.off + x.len)
        stop = x.off + x.len;
      ret = extent_list_add(out, at, stop - at, r->done[b] ? EXTENT_HOLE : EXTENT_DATA, e);
      at = stop;
    }
  }
  extent_list_free(&in);
  return ret;
}

static const struct image_format resume_src_format = {
  .name = "resume",
  .description = "a source without the blocks a resumed copy already has",
  .flags = FMT_NO_PROBE,
  .pread = resume_src_pread,
  .extents = resume_src_extents,
};

struct img *resume_source(struct resume *r, struct img *src, struct error *e)
{
  struct img *im = calloc(1, sizeof *im);
  if (!im || !(im->path = strdup(src->path))) {
    free(im);
    return error_set(e, ERR_NOMEM, "out of memory"), NULL;
  }
  r->inner = src;
  im->fmt = &resume_src_format;
  im->fd = -1;
  im->size = src->size;
  im->priv = r;
  return im;
}

int resume_failed(struct resume *r, struct error *e)
{
  if (r->failed)
    *e = r->err;
  return r->failed ? -1 : 0;
}

int resume_complete(struct resume *r, const char *dst, const char *fmt, struct create_opts *co,
                    bool force, const struct copy_opts *cp, struct error *e)
{
  if (resume_checkpoint(r, e) < 0)
    return -1;
  if (!force && access(dst, F_OK) == 0)
    return error_set(e, ERR_EXISTS, "%s: already exists (--force replaces it)", dst);
  if (strcmp(fmt, "raw") == 0) {
    if (rename(r->partial, dst) < 0)
      return error_errno(e, "%s: rename from %s", dst, r->partial);
  } else {
    struct img *src = img_open(r->partial, "raw", &(struct open_opts){ .quiet = true }, e);
    int rc = src ? copy_to_file(src, dst, fmt, co, force, cp, NULL, e) : -1;
    img_close(src);
    if (rc < 0)
      return -1;
    unlink(r->partial);
  }
  unlink(r->state);
  return 0;
}

void resume_close(struct resume *r)
{
  if (!r)
    return;
  img_close(r->target);
  pthread_mutex_destroy(&r->lock);
  free(r->partial);
  free(r->state);
  free(r->done);
  free(r);
}
