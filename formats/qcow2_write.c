/* qcow2_write.c - qcow2 writer (version 2 or 3, 16-bit or other refcounts,
 * optional zlib or zstd compressed clusters). No backing file, no snapshots,
 * no extended L2 entries.
 *
 * Layout: cluster 0 is the header, the L1 table follows it, then data
 * clusters and L2 tables are appended as writes come in. Several threads may
 * write at once: each compresses its clusters on its own, then takes the lock
 * only to allocate host space and fill L2 entries, and writes its data after
 * releasing it. All-zero clusters stay unallocated. Compressed clusters are
 * packed byte after byte and may straddle host clusters, as qemu packs them.
 * Memory does not grow with the virtual size: L2 tables live in a small
 * write-back cache (re-read from the file when needed again); the L1 table
 * (at most 32 MiB, qemu's limit) and one 16-bit refcount per host cluster are
 * kept in memory. finish() flushes the L2 tables, appends the refcount blocks
 * and table (which count themselves), writes the L1 table and writes the
 * header last, so an interrupted write leaves a file with no qcow2 magic rather
 * than a wrong image. The virtual size in the header is rounded up to 512
 * bytes, as qemu-img does (qemu drops a partial last sector).
 * Spec: qemu docs/interop/qcow2.txt. */
#include "image.h"
#include "qcow2.h"

#include <libdeflate.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define QCOW2W_DEFAULT_CLUSTER_SIZE 65536u
#define QCOW2W_MIN_CLUSTER_SIZE (1u << QCOW2_MIN_CLUSTER_BITS)
#define QCOW2W_MAX_CLUSTER_SIZE (1u << QCOW2_MAX_CLUSTER_BITS)
#define QCOW2W_MAX_L1_BYTES (32ull << 20)       /* qemu's QCOW_MAX_L1_SIZE */
#define QCOW2W_MAX_REFTABLE_BYTES (8ull << 20)  /* qemu's QCOW_MAX_REFTABLE_SIZE */
#define QCOW2W_MAX_HOST_OFFSET (1ull << 56)     /* L1/L2 offset fields end at bit 55 */
#define QCOW2W_L2_CACHE_BYTES (4u << 20)        /* L2 tables kept in memory */
#define QCOW2W_L2_CACHE_MIN 16u
#define QCOW2W_L2_CACHE_MAX 1024u
#define QCOW2W_DEFLATE_LEVEL 6
#define QCOW2W_ZSTD_LEVEL 3
#define QCOW2W_META_CHUNK (1u << 20)            /* buffer for writing L1 and refcounts */

const char qcow2w_create_help[] =
  "cluster_size=SIZE           cluster size, a power of two from 512 to 2M (default 64k)\n"
  "compat=1.1|0.10             qcow2 version 3 (1.1 or v3; default) or 2 (0.10 or v2)\n"
  "compression_type=zlib|zstd  codec for -c (default zlib; zstd needs compat=1.1)\n"
  "refcount_bits=N             refcount width, a power of two from 1 to 64 (default 16)\n";

/* One cached L2 table, kept as on disk (big-endian entries). */
struct qcow2w_l2 {
  uint8_t *t;     /* cluster_size bytes, allocated on first use */
  uint64_t l1i;   /* the L1 entry it hangs from */
  uint64_t stamp; /* last use, for LRU eviction */
  bool valid, dirty;
};

/* What a call does with one of its guest clusters. */
enum qcow2w_kind { QCOW2W_SKIP, QCOW2W_PLAIN, QCOW2W_COMPRESSED };
struct qcow2w_cl {
  enum qcow2w_kind kind;
  const uint8_t *src; /* the cluster's bytes (the caller's buffer or the padded tail) */
  size_t zpos;        /* QCOW2W_COMPRESSED: where its compressed bytes start in zbuf */
  uint32_t zlen;      /* QCOW2W_COMPRESSED: how many */
};

/* One pending data write, done after the lock is released. */
struct qcow2w_io {
  uint64_t host;
  const uint8_t *src;
  size_t len;
};

/* Scratch space of one call in flight; kept in a pool so each concurrent
 * caller reuses a compressor and buffers instead of allocating per call. */
struct qcow2w_ws {
  struct qcow2w_ws *next;
  struct libdeflate_compressor *deflate;
  ZSTD_CCtx *zstd;
  uint8_t *zbuf;  /* compressed clusters of the call, back to back */
  size_t zcap;
  uint8_t *tail;  /* the zero-padded last cluster of the disk */
  struct qcow2w_cl *cl;
  struct qcow2w_io *io;
  size_t ncap;    /* entries in cl and io */
};

struct qcow2w {
  /* Set by create, read-only afterwards. */
  unsigned version, cluster_bits, l2_bits, refcount_order, compression_type;
  uint32_t cluster_size;
  bool compress;
  uint64_t header_size;   /* virtual size in the header (rounded up to 512) */
  uint64_t guest_clusters;
  uint32_t l1_size;
  uint64_t l1_offset;
  uint64_t refcount_max;  /* largest refcount we let a host cluster reach */
  uint64_t coffset_limit; /* compressed data must start below this */

  pthread_mutex_t lock;
  /* Under the lock. */
  uint64_t *l1;           /* host-endian entries, with QCOW2_OFLAG_COPIED */
  uint64_t next_free;     /* end of the allocated host clusters (cluster aligned) */
  uint64_t zoff;          /* where the next compressed bytes may go; see qcow2w_place_compressed */
  uint16_t *rc;           /* refcount of each host cluster */
  uint64_t rc_cap;
  struct qcow2w_l2 *l2;
  unsigned nl2;
  uint64_t l2_clock;
  struct qcow2w_ws *pool;
  bool failed;            /* a write failed: the image must not be finished */
  bool finished;
};

static unsigned qcow2w_log2(uint64_t v)
{
  unsigned n = 0;
  while (v > 1) {
    v >>= 1;
    n++;
  }
  return n;
}

static bool qcow2w_is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* --- host space and refcounts (under the lock) --- */

static int qcow2w_rc_reserve(struct img *im, struct qcow2w *w, uint64_t nclusters, struct error *e)
{
  if (nclusters <= w->rc_cap)
    return 0;
  uint64_t cap = w->rc_cap ? w->rc_cap : 1024;
  while (cap < nclusters)
    cap = cap > UINT64_MAX / 2 ? nclusters : cap * 2;
  if (cap > SIZE_MAX / sizeof *w->rc)
    return error_set(e, ERR_NOMEM, "%s: qcow2 refcount array for %llu clusters is too large",
                     im->path, (unsigned long long)cap);
  uint16_t *rc = realloc(w->rc, (size_t)cap * sizeof *rc);
  if (!rc)
    return error_set(e, ERR_NOMEM, "%s: out of memory for qcow2 refcounts (%llu clusters)",
                     im->path, (unsigned long long)cap);
  memset(rc + w->rc_cap, 0, (size_t)(cap - w->rc_cap) * sizeof *rc);
  w->rc = rc;
  w->rc_cap = cap;
  return 0;
}

/* Appends n host clusters, each with refcount 1; *off is the first. */
static int qcow2w_alloc_clusters(struct img *im, struct qcow2w *w, uint64_t n, uint64_t *off,
                                 struct error *e)
{
  uint64_t cs = w->cluster_size;
  *off = w->next_free;
  if (n > (QCOW2W_MAX_HOST_OFFSET - w->next_free) / cs)
    return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 file would grow past 64 PiB, the largest "
                     "offset an L2 entry can hold", im->path);
  uint64_t first = w->next_free >> w->cluster_bits;
  if (qcow2w_rc_reserve(im, w, first + n, e) < 0)
    return -1;
  for (uint64_t i = 0; i < n; i++)
    w->rc[first + i] = 1;
  w->next_free += n * cs;
  return 0;
}

/* Finds room for len compressed bytes (0 < len < cluster_size) and counts the
 * references: each compressed cluster adds one to every host cluster it
 * touches, as qemu's check counts them. Bytes are packed after the previous
 * compressed cluster while its host cluster has refcount room and, when they
 * spill over, the next host cluster is still free; otherwise they start on a
 * new host cluster. */
static int qcow2w_place_compressed(struct img *im, struct qcow2w *w, uint32_t len, uint64_t *coff,
                                   struct error *e)
{
  uint64_t cs = w->cluster_size, at = w->zoff;
  bool fresh = at % cs == 0 || w->rc[at >> w->cluster_bits] >= w->refcount_max;
  uint64_t cl_end = (at | (cs - 1)) + 1; /* end of the host cluster holding at */
  if (!fresh && len > cl_end - at && cl_end != w->next_free)
    fresh = true;
  uint64_t first;
  if (fresh) {
    if (qcow2w_alloc_clusters(im, w, (len + cs - 1) / cs, &at, e) < 0)
      return -1;
  } else {
    if (len > cl_end - at &&
        qcow2w_alloc_clusters(im, w, (len - (cl_end - at) + cs - 1) / cs, &first, e) < 0)
      return -1;
    w->rc[at >> w->cluster_bits]++;
  }
  if (at >= w->coffset_limit)
    return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 compressed data would start at offset %llu, "
                     "past what a compressed cluster descriptor of a %u-byte cluster can hold",
                     im->path, (unsigned long long)at, w->cluster_size);
  *coff = at;
  w->zoff = at + len;
  return 0;
}

/* --- the L2 cache (under the lock) --- */

static int qcow2w_l2_writeback(struct img *im, struct qcow2w *w, struct qcow2w_l2 *s,
                               struct error *e)
{
  if (!s->valid || !s->dirty)
    return 0;
  uint64_t off = w->l1[s->l1i] & QCOW2_L1_OFFSET_MASK;
  if (img_pwrite_file(im->fd, s->t, w->cluster_size, off, im->path, e) < 0)
    return error_prefix(e, "qcow2 L2 table %llu", (unsigned long long)s->l1i);
  s->dirty = false;
  return 0;
}

/* The cache slot holding the L2 table of L1 entry l1i; allocates the table
 * (and its host cluster) the first time, re-reads it after an eviction. */
static struct qcow2w_l2 *qcow2w_l2_get(struct img *im, struct qcow2w *w, uint64_t l1i,
                                       struct error *e)
{
  struct qcow2w_l2 *victim = NULL;
  for (unsigned i = 0; i < w->nl2; i++) {
    struct qcow2w_l2 *s = &w->l2[i];
    if (s->valid && s->l1i == l1i) {
      s->stamp = ++w->l2_clock;
      return s;
    }
    if (!victim || (victim->valid && (!s->valid || s->stamp < victim->stamp)))
      victim = s;
  }
  if (qcow2w_l2_writeback(im, w, victim, e) < 0)
    return NULL;
  victim->valid = false;
  if (!victim->t && !(victim->t = malloc(w->cluster_size))) {
    error_set(e, ERR_NOMEM, "%s: out of memory for a qcow2 L2 table", im->path);
    return NULL;
  }
  if (w->l1[l1i] == 0) {
    uint64_t off;
    if (qcow2w_alloc_clusters(im, w, 1, &off, e) < 0)
      return NULL;
    w->l1[l1i] = off | QCOW2_OFLAG_COPIED;
    memset(victim->t, 0, w->cluster_size);
    victim->dirty = true;
  } else {
    if (img_pread_file(im->fd, victim->t, w->cluster_size, w->l1[l1i] & QCOW2_L1_OFFSET_MASK,
                       im->path, e) < 0) {
      error_prefix(e, "qcow2 L2 table %llu", (unsigned long long)l1i);
      return NULL;
    }
    victim->dirty = false;
  }
  victim->l1i = l1i;
  victim->valid = true;
  victim->stamp = ++w->l2_clock;
  return victim;
}

/* --- scratch pool --- */

static void qcow2w_ws_free(struct qcow2w_ws *ws)
{
  if (!ws)
    return;
  if (ws->deflate)
    libdeflate_free_compressor(ws->deflate);
  ZSTD_freeCCtx(ws->zstd);
  free(ws->zbuf);
  free(ws->tail);
  free(ws->cl);
  free(ws->io);
  free(ws);
}

static struct qcow2w_ws *qcow2w_ws_get(struct img *im, struct qcow2w *w, struct error *e)
{
  pthread_mutex_lock(&w->lock);
  struct qcow2w_ws *ws = w->pool;
  if (ws)
    w->pool = ws->next;
  pthread_mutex_unlock(&w->lock);
  if (ws)
    return ws;
  if (!(ws = calloc(1, sizeof *ws)))
    goto nomem;
  if (w->compress) {
    if (w->compression_type == QCOW2_COMPRESS_ZSTD)
      ws->zstd = ZSTD_createCCtx();
    else
      ws->deflate = libdeflate_alloc_compressor(QCOW2W_DEFLATE_LEVEL);
    if (!ws->zstd && !ws->deflate)
      goto nomem;
  }
  return ws;
nomem:
  qcow2w_ws_free(ws);
  error_set(e, ERR_NOMEM, "%s: out of memory for a qcow2 compressor", im->path);
  return NULL;
}

static void qcow2w_ws_put(struct qcow2w *w, struct qcow2w_ws *ws)
{
  pthread_mutex_lock(&w->lock);
  ws->next = w->pool;
  w->pool = ws;
  pthread_mutex_unlock(&w->lock);
}

static int qcow2w_ws_reserve(struct img *im, struct qcow2w *w, struct qcow2w_ws *ws, size_t ncl,
                             struct error *e)
{
  if (ncl > ws->ncap) {
    struct qcow2w_cl *cl = realloc(ws->cl, ncl * sizeof *cl);
    if (cl)
      ws->cl = cl;
    struct qcow2w_io *io = realloc(ws->io, ncl * sizeof *io);
    if (io)
      ws->io = io;
    if (!cl || !io)
      return error_set(e, ERR_NOMEM, "%s: out of memory", im->path);
    ws->ncap = ncl;
  }
  /* Each compressed cluster is smaller than a cluster. */
  size_t need = ncl * w->cluster_size;
  if (w->compress && need > ws->zcap) {
    uint8_t *z = realloc(ws->zbuf, need);
    if (!z)
      return error_set(e, ERR_NOMEM, "%s: out of memory for compressed clusters", im->path);
    ws->zbuf = z;
    ws->zcap = need;
  }
  return 0;
}

/* Compresses one cluster into dst (room for cluster_size - 1 bytes); returns
 * the compressed length, or 0 when the result would not be smaller. */
static size_t qcow2w_compress(struct qcow2w *w, struct qcow2w_ws *ws, const uint8_t *src,
                              uint8_t *dst)
{
  size_t cs = w->cluster_size;
  if (ws->zstd) {
    size_t n = ZSTD_compressCCtx(ws->zstd, dst, cs - 1, src, cs, QCOW2W_ZSTD_LEVEL);
    return ZSTD_isError(n) || n >= cs ? 0 : n;
  }
  size_t n = libdeflate_deflate_compress(ws->deflate, src, cs, dst, cs - 1);
  return n < cs ? n : 0;
}

/* Queues a write, merging it with the previous one when both the host range
 * and the source bytes continue it. */
static void qcow2w_queue(struct qcow2w_io *io, size_t *n, uint64_t host, const uint8_t *src,
                         size_t len)
{
  if (*n) {
    struct qcow2w_io *last = &io[*n - 1];
    if (last->host + last->len == host && last->src + last->len == src) {
      last->len += len;
      return;
    }
  }
  io[(*n)++] = (struct qcow2w_io){ host, src, len };
}

/* --- the interface --- */

static int qcow2w_parse_opts(struct img *im, struct qcow2w *w, struct create_opts *o,
                             struct error *e)
{
  uint64_t cs;
  int r = create_opts_get_size(o, "cluster_size", &cs, e);
  if (r < 0)
    return -1;
  if (r == 0)
    cs = QCOW2W_DEFAULT_CLUSTER_SIZE;
  else if (!qcow2w_is_pow2(cs) || cs < QCOW2W_MIN_CLUSTER_SIZE || cs > QCOW2W_MAX_CLUSTER_SIZE)
    return error_set(e, ERR_USAGE, "qcow2 option cluster_size=%s: must be a power of two from "
                     "512 to 2M", create_opts_get(o, "cluster_size"));
  w->cluster_size = (uint32_t)cs;
  w->cluster_bits = qcow2w_log2(cs);
  w->l2_bits = w->cluster_bits - 3;

  const char *compat = create_opts_get(o, "compat");
  if (!compat || strcmp(compat, "1.1") == 0 || strcmp(compat, "v3") == 0)
    w->version = 3;
  else if (strcmp(compat, "0.10") == 0 || strcmp(compat, "v2") == 0)
    w->version = 2;
  else
    return error_set(e, ERR_USAGE, "qcow2 option compat=%s: must be 1.1 (or v3) or 0.10 (or v2)",
                     compat);

  const char *ct = create_opts_get(o, "compression_type");
  if (!ct || strcmp(ct, "zlib") == 0)
    w->compression_type = QCOW2_COMPRESS_ZLIB;
  else if (strcmp(ct, "zstd") == 0)
    w->compression_type = QCOW2_COMPRESS_ZSTD;
  else
    return error_set(e, ERR_USAGE, "qcow2 option compression_type=%s: must be zlib or zstd", ct);
  if (w->compression_type == QCOW2_COMPRESS_ZSTD && w->version < 3)
    return error_set(e, ERR_USAGE, "qcow2 option compression_type=zstd needs compat=1.1 "
                     "(version 2 images can only hold zlib)");

  const char *rb = create_opts_get(o, "refcount_bits");
  unsigned long long bits = 16;
  if (rb) {
    char *end;
    bits = strtoull(rb, &end, 10);
    if (end == rb || *end || *rb == '-' || !qcow2w_is_pow2(bits) || bits > 64)
      return error_set(e, ERR_USAGE, "qcow2 option refcount_bits=%s: must be a power of two "
                       "from 1 to 64", rb);
    if (bits != 16 && w->version < 3)
      return error_set(e, ERR_USAGE, "qcow2 option refcount_bits=%s: compat=0.10 images have "
                       "16-bit refcounts only (use compat=1.1)", rb);
  }
  w->refcount_order = qcow2w_log2(bits);
  /* Refcounts are kept as uint16 in memory; nothing we write needs more. */
  w->refcount_max = bits >= 16 ? UINT16_MAX : (1ull << bits) - 1;

  w->compress = o->compress;
  (void)im;
  return 0;
}

int qcow2w_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e)
{
  struct qcow2w *w = calloc(1, sizeof *w);
  if (!w)
    return error_set(e, ERR_NOMEM, "out of memory");
  if (pthread_mutex_init(&w->lock, NULL) != 0) {
    free(w);
    return error_set(e, ERR_NOMEM, "%s: cannot create a mutex", im->path);
  }
  if (qcow2w_parse_opts(im, w, o, e) < 0)
    goto fail;

  /* qemu counts the virtual size in 512-byte sectors and drops a partial
   * last one, so round up as qemu-img does; the padding reads as zeros. */
  if (size > UINT64_MAX - 511) {
    error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for qcow2", im->path,
              (unsigned long long)size);
    goto fail;
  }
  w->header_size = (size + 511) & ~511ull;
  uint64_t cs = w->cluster_size;
  w->guest_clusters = w->header_size / cs + (w->header_size % cs != 0);
  uint64_t l2_entries = 1ull << w->l2_bits;
  uint64_t l1_size = w->guest_clusters / l2_entries + (w->guest_clusters % l2_entries != 0);
  if (l1_size > QCOW2W_MAX_L1_BYTES / 8) {
    error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for qcow2 with %u-byte clusters: "
              "its L1 table would be %llu bytes, over qemu's limit of 32 MiB (use a larger "
              "cluster_size)", im->path, (unsigned long long)size, w->cluster_size,
              (unsigned long long)l1_size * 8);
    goto fail;
  }
  w->l1_size = (uint32_t)l1_size;
  w->l1_offset = cs;
  uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
  if (!(w->l1 = calloc(l1_size ? l1_size : 1, sizeof *w->l1))) {
    error_set(e, ERR_NOMEM, "%s: out of memory for a %llu-entry qcow2 L1 table", im->path,
              (unsigned long long)l1_size);
    goto fail;
  }
  /* A compressed cluster's offset field has 62 - (cluster_bits - 8) bits. */
  unsigned cbits = qcow2_csize_shift(w->cluster_bits);
  w->coffset_limit = cbits >= 56 ? QCOW2W_MAX_HOST_OFFSET : 1ull << cbits;

  uint64_t at;
  if (qcow2w_alloc_clusters(im, w, 1 + l1_clusters, &at, e) < 0) /* header, L1 */
    goto fail;

  w->nl2 = QCOW2W_L2_CACHE_BYTES / w->cluster_size;
  if (w->nl2 < QCOW2W_L2_CACHE_MIN)
    w->nl2 = QCOW2W_L2_CACHE_MIN;
  if (w->nl2 > QCOW2W_L2_CACHE_MAX)
    w->nl2 = QCOW2W_L2_CACHE_MAX;
  if (!(w->l2 = calloc(w->nl2, sizeof *w->l2))) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto fail;
  }
  im->block_size = w->cluster_size;
  im->priv = w;
  return 0;
fail:
  pthread_mutex_destroy(&w->lock);
  free(w->l1);
  free(w->rc);
  free(w->l2);
  free(w);
  return -1;
}

int qcow2w_pwrite(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e)
{
  struct qcow2w *w = im->priv;
  if (!w || w->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: qcow2 write after finish", im->path);
  uint64_t cs = w->cluster_size;
  if (off % cs || off > im->size || len > im->size - off ||
      (len % cs && off + len != im->size) || len > SIZE_MAX - cs)
    return error_set(e, ERR_USAGE, "%s: internal error: qcow2 write of %zu bytes at %llu is "
                     "not whole %u-byte clusters inside the disk", im->path, len,
                     (unsigned long long)off, w->cluster_size);
  if (len == 0)
    return 0;
  size_t ncl = len / cs + (len % cs != 0);
  struct qcow2w_ws *ws = qcow2w_ws_get(im, w, e);
  if (!ws)
    return -1;
  int ret = -1;
  size_t nio = 0;
  bool locked = false;
  if (qcow2w_ws_reserve(im, w, ws, ncl, e) < 0)
    goto out;

  /* Outside the lock: find zero clusters and compress the others. */
  size_t zpos = 0;
  const uint8_t *p = buf;
  for (size_t i = 0; i < ncl; i++) {
    struct qcow2w_cl *c = &ws->cl[i];
    c->src = p + i * cs;
    if (i == ncl - 1 && len % cs) {
      if (!ws->tail && !(ws->tail = malloc(cs))) {
        error_set(e, ERR_NOMEM, "%s: out of memory", im->path);
        goto out;
      }
      memcpy(ws->tail, c->src, len % cs);
      memset(ws->tail + len % cs, 0, cs - len % cs);
      c->src = ws->tail;
    }
    c->kind = QCOW2W_PLAIN;
    if (buf_is_zero(c->src, cs)) {
      c->kind = QCOW2W_SKIP;
    } else if (w->compress) {
      size_t n = qcow2w_compress(w, ws, c->src, ws->zbuf + zpos);
      if (n) {
        c->kind = QCOW2W_COMPRESSED;
        c->zpos = zpos;
        c->zlen = (uint32_t)n;
        zpos += n;
      }
    }
  }

  /* Under the lock: allocate host space, fill L2 entries. */
  pthread_mutex_lock(&w->lock);
  locked = true;
  if (w->failed) {
    error_set(e, ERR_IO, "%s: an earlier qcow2 write failed", im->path);
    goto out;
  }
  uint64_t gc0 = off >> w->cluster_bits, l2_mask = (1ull << w->l2_bits) - 1;
  struct qcow2w_l2 *l2 = NULL;
  for (size_t i = 0; i < ncl; i++) {
    struct qcow2w_cl *c = &ws->cl[i];
    if (c->kind == QCOW2W_SKIP)
      continue;
    uint64_t gc = gc0 + i, l1i = gc >> w->l2_bits;
    if ((!l2 || l2->l1i != l1i) && !(l2 = qcow2w_l2_get(im, w, l1i, e)))
      goto fail;
    uint8_t *slot = l2->t + (gc & l2_mask) * 8;
    if (be64(slot)) {
      error_set(e, ERR_USAGE, "%s: internal error: qcow2 guest cluster at %llu written twice",
                im->path, (unsigned long long)(gc << w->cluster_bits));
      goto fail;
    }
    uint64_t entry, host = 0;
    if (c->kind == QCOW2W_COMPRESSED) {
      if (qcow2w_place_compressed(im, w, c->zlen, &host, e) < 0)
        goto fail;
      uint64_t extra = ((host + c->zlen - 1) >> 9) - (host >> 9);
      if (extra >= 1ull << (w->cluster_bits - 8)) {
        error_set(e, ERR_FORMAT, "%s: internal error: compressed cluster of %u bytes does not "
                  "fit its descriptor", im->path, c->zlen);
        goto fail;
      }
      entry = QCOW2_OFLAG_COMPRESSED | extra << qcow2_csize_shift(w->cluster_bits) | host;
      qcow2w_queue(ws->io, &nio, host, ws->zbuf + c->zpos, c->zlen);
    } else {
      if (qcow2w_alloc_clusters(im, w, 1, &host, e) < 0)
        goto fail;
      entry = host | QCOW2_OFLAG_COPIED;
      qcow2w_queue(ws->io, &nio, host, c->src, cs);
    }
    put_be64(slot, entry);
    l2->dirty = true;
  }
  pthread_mutex_unlock(&w->lock);
  locked = false;

  /* Outside the lock: the data. */
  for (size_t i = 0; i < nio; i++)
    if (img_pwrite_file(im->fd, ws->io[i].src, ws->io[i].len, ws->io[i].host, im->path, e) < 0) {
      pthread_mutex_lock(&w->lock);
      locked = true;
      goto fail;
    }
  ret = 0;
  goto out;
fail:
  w->failed = true;
out:
  if (locked)
    pthread_mutex_unlock(&w->lock);
  qcow2w_ws_put(w, ws);
  return ret;
}

/* Stores refcount v as entry i of a refcount block. */
static void qcow2w_put_refcount(uint8_t *blk, unsigned order, uint64_t i, uint64_t v)
{
  switch (order) {
  case 3: blk[i] = (uint8_t)v; break;
  case 4: put_be16(blk + i * 2, (uint16_t)v); break;
  case 5: put_be32(blk + i * 4, (uint32_t)v); break;
  case 6: put_be64(blk + i * 8, v); break;
  default: { /* 1, 2 or 4 bits: bit 0 is the least significant bit of the byte */
    unsigned bits = 1u << order, per_byte = 8 / bits;
    blk[i / per_byte] |= (uint8_t)(v << (i % per_byte * bits));
  }
  }
}

/* Appends the refcount blocks and the refcount table; they count themselves. */
static int qcow2w_write_refcounts(struct img *im, struct qcow2w *w, uint64_t *table_off,
                                  uint32_t *table_clusters, struct error *e)
{
  uint64_t cs = w->cluster_size;
  uint64_t used = w->next_free >> w->cluster_bits;
  uint64_t per_block = (cs * 8) >> w->refcount_order;
  uint64_t nblk = 0, ntab = 0;
  for (;;) {
    uint64_t total = used + nblk + ntab;
    uint64_t b = total / per_block + (total % per_block != 0);
    uint64_t t = (b * 8 + cs - 1) / cs;
    if (b == nblk && t == ntab)
      break;
    nblk = b;
    ntab = t;
  }
  if (ntab * cs > QCOW2W_MAX_REFTABLE_BYTES)
    return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 refcount table would be %llu bytes, over "
                     "qemu's limit of 8 MiB (use a larger cluster_size)", im->path,
                     (unsigned long long)(ntab * cs));
  uint64_t blk_off;
  if (qcow2w_alloc_clusters(im, w, nblk + ntab, &blk_off, e) < 0)
    return -1;
  uint64_t total = used + nblk + ntab;

  size_t chunk_clusters = QCOW2W_META_CHUNK / cs ? QCOW2W_META_CHUNK / cs : 1;
  uint8_t *buf = malloc(chunk_clusters * cs);
  if (!buf)
    return error_set(e, ERR_NOMEM, "%s: out of memory", im->path);
  for (uint64_t b = 0; b < nblk; b += chunk_clusters) {
    uint64_t n = nblk - b < chunk_clusters ? nblk - b : chunk_clusters;
    memset(buf, 0, n * cs);
    for (uint64_t k = 0; k < n; k++) {
      uint64_t c0 = (b + k) * per_block;
      uint64_t c1 = c0 + per_block < total ? c0 + per_block : total;
      for (uint64_t c = c0; c < c1; c++)
        if (w->rc[c])
          qcow2w_put_refcount(buf + k * cs, w->refcount_order, c - c0, w->rc[c]);
    }
    if (img_pwrite_file(im->fd, buf, n * cs, blk_off + b * cs, im->path, e) < 0) {
      free(buf);
      return error_prefix(e, "qcow2 refcount blocks");
    }
  }
  free(buf);

  uint64_t toff = blk_off + nblk * cs;
  uint8_t *table = calloc(ntab, cs);
  if (!table)
    return error_set(e, ERR_NOMEM, "%s: out of memory", im->path);
  for (uint64_t b = 0; b < nblk; b++)
    put_be64(table + b * 8, blk_off + b * cs);
  int r = img_pwrite_file(im->fd, table, ntab * cs, toff, im->path, e);
  free(table);
  if (r < 0)
    return error_prefix(e, "qcow2 refcount table");
  *table_off = toff;
  *table_clusters = (uint32_t)ntab;
  return 0;
}

/* Writes the L1 table; all-zero stretches stay holes (never written). */
static int qcow2w_write_l1(struct img *im, struct qcow2w *w, struct error *e)
{
  size_t per = QCOW2W_META_CHUNK / 8;
  uint8_t *buf = malloc(QCOW2W_META_CHUNK);
  if (!buf)
    return error_set(e, ERR_NOMEM, "%s: out of memory", im->path);
  for (uint64_t i = 0; i < w->l1_size; i += per) {
    uint64_t n = w->l1_size - i < per ? w->l1_size - i : per;
    bool any = false;
    for (uint64_t k = 0; k < n; k++) {
      put_be64(buf + k * 8, w->l1[i + k]);
      any |= w->l1[i + k] != 0;
    }
    if (any && img_pwrite_file(im->fd, buf, n * 8, w->l1_offset + i * 8, im->path, e) < 0) {
      free(buf);
      return error_prefix(e, "qcow2 L1 table");
    }
  }
  free(buf);
  return 0;
}

int qcow2w_finish(struct img *im, struct error *e)
{
  struct qcow2w *w = im->priv;
  if (!w || w->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: qcow2 finish twice", im->path);
  int ret = -1;
  pthread_mutex_lock(&w->lock);
  if (w->failed) {
    error_set(e, ERR_IO, "%s: an earlier qcow2 write failed; the image is incomplete", im->path);
    goto out;
  }
  for (unsigned i = 0; i < w->nl2; i++)
    if (qcow2w_l2_writeback(im, w, &w->l2[i], e) < 0)
      goto fail;

  uint64_t rt_off = 0;
  uint32_t rt_clusters = 0;
  if (qcow2w_write_refcounts(im, w, &rt_off, &rt_clusters, e) < 0 || qcow2w_write_l1(im, w, e) < 0)
    goto fail;
  /* Everything the header points at must be on disk before the header. */
  if (img_sync(im) < 0) {
    error_errno(e, "%s: fsync", im->path);
    goto fail;
  }

  uint8_t h[512] = { 0 }; /* header, then the end of extensions (zeros) */
  put_be32(h + QH_MAGIC, QCOW2_MAGIC);
  put_be32(h + QH_VERSION, w->version);
  put_be32(h + QH_CLUSTER_BITS, w->cluster_bits);
  put_be64(h + QH_SIZE, w->header_size);
  put_be32(h + QH_L1_SIZE, w->l1_size);
  put_be64(h + QH_L1_OFFSET, w->l1_offset);
  put_be64(h + QH_REFCOUNT_TABLE_OFFSET, rt_off);
  put_be32(h + QH_REFCOUNT_TABLE_CLUSTERS, rt_clusters);
  if (w->version >= 3) {
    bool zstd = w->compression_type == QCOW2_COMPRESS_ZSTD;
    put_be64(h + QH_INCOMPAT, zstd ? QCOW2_INCOMPAT_COMPRESSION : 0);
    put_be32(h + QH_REFCOUNT_ORDER, w->refcount_order);
    put_be32(h + QH_HEADER_LENGTH, QH_V3_LENGTH_WITH_COMPRESSION);
    h[QH_COMPRESSION_TYPE] = (uint8_t)w->compression_type;
  }
  if (img_pwrite_file(im->fd, h, sizeof h, 0, im->path, e) < 0) {
    error_prefix(e, "qcow2 header");
    goto fail;
  }
  if (img_sync(im) < 0) {
    error_errno(e, "%s: fsync", im->path);
    goto fail;
  }
  w->finished = true;
  ret = 0;
  goto out;
fail:
  w->failed = true;
out:
  pthread_mutex_unlock(&w->lock);
  return ret;
}

void qcow2w_close(struct img *im)
{
  struct qcow2w *w = im->priv;
  if (!w)
    return;
  for (unsigned i = 0; i < w->nl2; i++)
    free(w->l2[i].t);
  free(w->l2);
  while (w->pool) {
    struct qcow2w_ws *ws = w->pool;
    w->pool = ws->next;
    qcow2w_ws_free(ws);
  }
  free(w->l1);
  free(w->rc);
  pthread_mutex_destroy(&w->lock);
  free(w);
  im->priv = NULL;
}
