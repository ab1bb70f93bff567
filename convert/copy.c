/* copy.c - the copy engine.
 *
 * The main thread walks the source map a window at a time and cuts the data
 * into units: block-aligned for the writer (img->block_size), never crossing
 * a CHUNK boundary, so no two units share a block. Worker threads take units
 * from a small queue, pread them, drop all-zero blocks (the writer leaves
 * those unallocated), and pwrite the rest; writers that need increasing
 * offsets (FMT_ORDERED_WRITES) take their turn by unit number. Memory is
 * threads x CHUNK plus the queue, whatever the image size. */
#include "copy.h"
#include "progress.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (2u << 20)       /* largest unit */
#define QUEUE 16

struct unit {
  uint64_t seq, off, len;
};

struct engine {
  struct img *src, *dst;
  const struct copy_opts *o;
  uint32_t zero_gran; /* zero detection granularity, a multiple of dst->block_size */
  pthread_mutex_t lock;
  pthread_cond_t changed;
  pthread_mutex_t read_lock; /* sequential sources: taking a unit and reading it are one step */
  struct unit q[QUEUE];
  unsigned head, count;
  bool done, failed;
  uint64_t next_write; /* ordered writers: the unit whose turn it is */
  struct error err;
  uint64_t bytes_read, bytes_written;
};

static bool cancelled(struct engine *g)
{
  return g->o->cancel && *g->o->cancel;
}

static void engine_fail(struct engine *g, const struct error *e)
{
  pthread_mutex_lock(&g->lock);
  if (!g->failed) {
    g->failed = true;
    g->err = *e;
  }
  pthread_cond_broadcast(&g->changed);
  pthread_mutex_unlock(&g->lock);
}

#define MAX_RUNS (CHUNK / 4096)

struct run {
  size_t start, stop;
  void *blob; /* what encode returned */
};

/* Splits unit u into the runs of buf to write: every block, or only the ones
 * that are not all zeros. */
static size_t unit_runs(struct engine *g, const uint8_t *buf, const struct unit *u,
                        struct run *runs)
{
  size_t n = 0, at = 0, gran = g->zero_gran;
  if (g->o->write_zeros) {
    runs[0] = (struct run){ 0, u->len, NULL };
    return 1;
  }
  while (at < u->len) {
    size_t start = at;
    while (start < u->len && buf_is_zero(buf + start, u->len - start < gran ? u->len - start : gran))
      start += gran;
    if (start >= u->len)
      break;
    size_t stop = start + gran;
    while (stop < u->len && !buf_is_zero(buf + stop, u->len - stop < gran ? u->len - stop : gran))
      stop += gran;
    if (stop > u->len)
      stop = u->len;
    runs[n++] = (struct run){ start, stop, NULL };
    at = stop;
  }
  return n;
}

/* Waits until it is unit seq's turn; false when the copy failed meanwhile. */
static bool wait_turn(struct engine *g, uint64_t seq)
{
  pthread_mutex_lock(&g->lock);
  while (g->next_write != seq && !g->failed)
    pthread_cond_wait(&g->changed, &g->lock);
  bool ok = !g->failed;
  pthread_mutex_unlock(&g->lock);
  return ok;
}

static void pass_turn(struct engine *g)
{
  pthread_mutex_lock(&g->lock);
  g->next_write++;
  pthread_cond_broadcast(&g->changed);
  pthread_mutex_unlock(&g->lock);
}

/* Writes unit u (read into buf) to the destination, in its turn when the
 * writer needs order. Returns 1 when the copy failed elsewhere meanwhile. */
static int write_unit(struct engine *g, const uint8_t *buf, const struct unit *u,
                      struct run *runs, struct error *e)
{
  const struct image_format *f = g->dst->fmt;
  bool ordered = f->flags & FMT_ORDERED_WRITES;
  size_t n = unit_runs(g, buf, u, runs), i;
  int ret = -1;
  uint64_t written = 0;
  if (ordered && f->encode)
    for (i = 0; i < n; i++)
      if (!(runs[i].blob = f->encode(g->dst, buf + runs[i].start, runs[i].stop - runs[i].start,
                                     u->off + runs[i].start, e)))
        goto out;
  if (ordered && !wait_turn(g, u->seq)) {
    ret = 1;
    goto out;
  }
  for (i = 0; i < n; i++) {
    int r = runs[i].blob ? f->commit(g->dst, runs[i].blob, e)
                         : f->pwrite(g->dst, buf + runs[i].start, runs[i].stop - runs[i].start,
                                     u->off + runs[i].start, e);
    if (r < 0)
      break;
    written += runs[i].stop - runs[i].start;
  }
  if (ordered)
    pass_turn(g);
  ret = i == n ? 0 : -1;
out:
  for (i = 0; i < n; i++)
    free(runs[i].blob);
  __atomic_add_fetch(&g->bytes_written, written, __ATOMIC_RELAXED);
  return ret;
}

static void *worker(void *arg)
{
  struct engine *g = arg;
  struct error e = { 0 };
  /* aligned for O_DIRECT writers, and to a huge page: one fault, not 512 */
  uint8_t *buf = aligned_alloc(CHUNK, CHUNK);
  if (buf)
    madvise(buf, CHUNK, MADV_HUGEPAGE);
  struct run *runs = malloc(MAX_RUNS * sizeof *runs);
  if (!buf || !runs) {
    error_set(&e, ERR_NOMEM, "out of memory for a copy buffer");
    engine_fail(g, &e);
    goto out;
  }
  bool seq = img_sequential(g->src);
  for (;;) {
    if (seq)
      pthread_mutex_lock(&g->read_lock);
    pthread_mutex_lock(&g->lock);
    while (!g->count && !g->done && !g->failed)
      pthread_cond_wait(&g->changed, &g->lock);
    if (g->failed || !g->count) {
      pthread_mutex_unlock(&g->lock);
      if (seq)
        pthread_mutex_unlock(&g->read_lock);
      break;
    }
    struct unit u = g->q[g->head];
    g->head = (g->head + 1) % QUEUE;
    g->count--;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);

    int rc = cancelled(g) ? error_set(&e, ERR_INTERRUPTED, "interrupted")
                          : img_pread(g->src, buf, u.len, u.off, &e);
    if (seq)
      pthread_mutex_unlock(&g->read_lock);
    if (rc < 0) {
      engine_fail(g, &e);
      break;
    }
    __atomic_add_fetch(&g->bytes_read, u.len, __ATOMIC_RELAXED);
    int r = write_unit(g, buf, &u, runs, &e);
    if (r < 0)
      engine_fail(g, &e);
    if (r)
      break;
    if (g->o->unit_done)
      g->o->unit_done(g->o->unit_ctx, u.off, u.len);
  }
out:
  free(buf);
  free(runs);
  return NULL;
}

/* Queues one unit, waiting while the queue is full. */
static int push_unit(struct engine *g, uint64_t *seq, uint64_t off, uint64_t len,
                     struct progress *p)
{
  pthread_mutex_lock(&g->lock);
  while (g->count == QUEUE && !g->failed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&g->changed, &g->lock, &ts);
    pthread_mutex_unlock(&g->lock);
    progress_draw(p, __atomic_load_n(&g->bytes_read, __ATOMIC_RELAXED), false);
    pthread_mutex_lock(&g->lock);
  }
  bool failed = g->failed;
  if (!failed) {
    g->q[(g->head + g->count) % QUEUE] = (struct unit){ (*seq)++, off, len };
    g->count++;
    pthread_cond_broadcast(&g->changed);
  }
  pthread_mutex_unlock(&g->lock);
  return failed ? -1 : 0;
}

/* Cuts the source map into block-aligned units of at most CHUNK bytes. */
struct producer {
  struct engine *g;
  struct progress *p;
  uint64_t blk, seq, pend_off, pend_len, emitted;
};

static int produce_extent(void *ctx, const struct extent *x, struct error *e)
{
  (void)e;
  struct producer *pr = ctx;
  struct engine *g = pr->g;
  uint64_t size = g->src->size;
  if (x->kind == EXTENT_HOLE || (x->kind == EXTENT_ZERO && !g->o->write_zeros))
    return 0;
  uint64_t a = x->off / pr->blk * pr->blk, b = x->off + x->len;
  b = (b + pr->blk - 1) / pr->blk * pr->blk;
  if (b > size) /* the last block of the disk may be short */
    b = size;
  if (a < pr->emitted) /* its first block went with the previous extent */
    a = pr->emitted;
  while (a < b) {
    uint64_t chunk_end = (a / CHUNK + 1) * CHUNK;
    uint64_t piece_end = b < chunk_end ? b : chunk_end;
    if (pr->pend_len && pr->pend_off + pr->pend_len == a && pr->pend_off / CHUNK == a / CHUNK) {
      pr->pend_len += piece_end - a;
    } else {
      if (pr->pend_len && push_unit(g, &pr->seq, pr->pend_off, pr->pend_len, pr->p) < 0)
        return 1; /* a worker failed; its error is the one reported */
      pr->pend_off = a;
      pr->pend_len = piece_end - a;
    }
    a = piece_end;
  }
  pr->emitted = b;
  return 0;
}

static int produce(struct engine *g, struct progress *p, struct error *e)
{
  struct producer pr = { .g = g, .p = p, .blk = g->dst->block_size ? g->dst->block_size : 1 };
  int r = img_map_walk(g->src, produce_extent, &pr, e);
  if (r < 0)
    return -1;
  if (r == 0 && pr.pend_len)
    push_unit(g, &pr.seq, pr.pend_off, pr.pend_len, p);
  return 0;
}

static int count_extent(void *ctx, const struct extent *x, struct error *e)
{
  (void)e;
  uint64_t *c = ctx; /* c[0]: the total; c[1]: whether zeros count */
  if (x->kind == EXTENT_DATA || (c[1] && x->kind == EXTENT_ZERO))
    c[0] += x->len;
  return 0;
}

/* Data bytes the copy will read, for the progress bar. */
static uint64_t count_data(struct img *src, bool zeros, struct error *e)
{
  uint64_t c[2] = { 0, zeros };
  img_map_walk(src, count_extent, c, e);
  return c[0];
}

int copy_image(struct img *src, struct img *dst, const struct copy_opts *o,
               struct copy_stats *st, struct error *e)
{
  if (dst->block_size > CHUNK || (dst->block_size & (dst->block_size - 1)))
    return error_set(e, ERR_UNSUPPORTED, "%s: block size %u is not a power of two up to %u",
                     dst->path, dst->block_size, CHUNK);
  struct engine g = { .src = src, .dst = dst, .o = o };
  g.zero_gran = dst->block_size > 4096 ? dst->block_size : 4096;
  pthread_mutex_init(&g.lock, NULL);
  pthread_mutex_init(&g.read_lock, NULL);
  pthread_cond_init(&g.changed, NULL);
  unsigned n = o->threads;
  if (!n) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = cores < 2 ? 2 : cores > 64 ? 64 : (unsigned)cores;
  }
  struct progress p;
  progress_start(&p, o->progress, 0);
  if (p.on)
    p.total = count_data(src, o->write_zeros, e);
  pthread_t *tids = calloc(n, sizeof *tids);
  if (!tids)
    return error_set(e, ERR_NOMEM, "out of memory");
  unsigned started = 0;
  int ret = -1;
  for (; started < n; started++)
    if (pthread_create(&tids[started], NULL, worker, &g)) {
      error_set(e, ERR_NOMEM, "cannot start a copy thread");
      engine_fail(&g, e);
      break;
    }
  int pr = started ? produce(&g, &p, e) : -1;
  if (pr < 0 && started)
    engine_fail(&g, e);
  pthread_mutex_lock(&g.lock);
  g.done = true;
  pthread_cond_broadcast(&g.changed);
  pthread_mutex_unlock(&g.lock);
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  free(tids);
  if (g.failed) {
    *e = g.err;
    goto out;
  }
  if (cancelled(&g)) {
    error_set(e, ERR_INTERRUPTED, "interrupted");
    goto out;
  }
  if (img_verify_source(src, e) < 0 || (dst->fmt->finish && dst->fmt->finish(dst, e) < 0))
    goto out;
  progress_draw(&p, p.total, true);
  ret = 0;
out:
  if (ret < 0 && p.on)
    fputc('\n', stderr);
  if (st) {
    st->bytes_mapped = p.total;
    st->bytes_read = g.bytes_read;
    st->bytes_written = g.bytes_written;
    st->seconds = mono_now() - p.start;
  }
  pthread_mutex_destroy(&g.lock);
  pthread_mutex_destroy(&g.read_lock);
  pthread_cond_destroy(&g.changed);
  return ret;
}

/* Whether [off, off+len) is data in a map covering it (sorted extents). */
static bool map_has_data(const struct extent_list *m, size_t *i, uint64_t off, uint64_t len)
{
  while (*i < m->n && m->v[*i].off + m->v[*i].len <= off)
    (*i)++;
  for (size_t j = *i; j < m->n && m->v[j].off < off + len; j++)
    if (m->v[j].kind == EXTENT_DATA)
      return true;
  return false;
}

int copy_verify(struct img *a, struct img *b, struct error *e)
{
  /* Some formats round the size up (VHD geometry); the rest must be zeros. */
  if (b->size < a->size)
    return error_set(e, ERR_FORMAT, "%s: verify: virtual size %llu is smaller than %s's %llu",
                     b->path, (unsigned long long)b->size, a->path, (unsigned long long)a->size);
  struct extent_list ma = { 0 }, mb = { 0 };
  uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
  int ret = -1;
  if (!ba || !bb) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  for (uint64_t win = 0; win < b->size; win += IMG_MAP_WINDOW) {
    uint64_t wlen = b->size - win < IMG_MAP_WINDOW ? b->size - win : IMG_MAP_WINDOW;
    /* Past a's end, a reads as zeros: no map, no reads. */
    uint64_t alen = win >= a->size ? 0 : a->size - win < wlen ? a->size - win : wlen;
    ma.n = mb.n = 0;
    if ((alen && img_extents(a, win, alen, &ma, e) < 0) || img_extents(b, win, wlen, &mb, e) < 0)
      goto out;
    size_t ia = 0, ib = 0;
    for (uint64_t off = win; off < win + wlen; off += CHUNK) {
      size_t len = win + wlen - off < CHUNK ? (size_t)(win + wlen - off) : CHUNK;
      size_t in_a = off >= a->size ? 0 : a->size - off < len ? (size_t)(a->size - off) : len;
      bool da = in_a && map_has_data(&ma, &ia, off, in_a), db = map_has_data(&mb, &ib, off, len);
      if (!da && !db)
        continue; /* both read as zeros */
      memset(ba, 0, len);
      if ((in_a && img_pread(a, ba, in_a, off, e) < 0) || img_pread(b, bb, len, off, e) < 0)
        goto out;
      if (memcmp(ba, bb, len) != 0) {
        size_t k = 0;
        while (ba[k] == bb[k])
          k++;
        error_set(e, ERR_FORMAT, "%s: verify: content differs from %s at offset %llu", b->path,
                  a->path, (unsigned long long)(off + k));
        goto out;
      }
    }
  }
  ret = 0;
out:
  free(ba);
  free(bb);
  extent_list_free(&ma);
  extent_list_free(&mb);
  return ret;
}

int copy_to_file(struct img *src, const char *dst_path, const char *fmt,
                 struct create_opts *co, bool force, const struct copy_opts *o,
                 struct copy_stats *st, struct error *e)
{
  struct stat sb;
  if (o->verify && img_sequential(src))
    return error_set(e, ERR_USAGE, "%s: a %s is read once, as a stream, and cannot be read again "
                     "to verify the copy (its own checksums are checked)", src->path,
                     src->fmt->name);
  if (lstat(dst_path, &sb) == 0) {
    if (!force)
      return error_set(e, ERR_EXISTS, "%s: already exists (pass --force to overwrite it)",
                       dst_path);
    if (!S_ISREG(sb.st_mode))
      return error_set(e, ERR_USAGE, "%s: exists and is not a regular file", dst_path);
  }
  size_t tlen = strlen(dst_path) + 32;
  char *tmp = malloc(tlen);
  if (!tmp)
    return error_set(e, ERR_NOMEM, "out of memory");
  /* A hidden name beside the destination, so the rename stays in one filesystem. */
  const char *slash = strrchr(dst_path, '/');
  int dirlen = slash ? (int)(slash - dst_path + 1) : 0;
  snprintf(tmp, tlen, "%.*s.%s.amiport-%ld", dirlen, dst_path, dst_path + dirlen, (long)getpid());
  struct img *dst = img_create(tmp, fmt, src->size, co, e);
  if (!dst) {
    free(tmp);
    return -1;
  }
  int ret = copy_image(src, dst, o, st, e);
  img_close(dst);
  if (ret == 0 && o->verify) {
    struct img *back = img_open(tmp, fmt, &(struct open_opts){ .quiet = true }, e);
    ret = back ? copy_verify(src, back, e) : -1;
    img_close(back);
  }
  if (ret == 0 && rename(tmp, dst_path) < 0)
    ret = error_errno(e, "%s: rename from %s", dst_path, tmp);
  if (ret < 0)
    unlink(tmp);
  free(tmp);
  return ret;
}
