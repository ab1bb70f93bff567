/* vmdk_write.c - VMDK writer: streamOptimized (the default; what EC2 imports
 * and exports) and monolithicSparse, one self-contained file with the
 * descriptor embedded after the header.
 *
 * Writes come in increasing offset order (FMT_ORDERED_WRITES). encode() runs
 * on every copy thread: it drops all-zero grains and, for streamOptimized,
 * deflates each grain (zlib-wrapped, libdeflate) behind its grain marker,
 * padded to a sector, so the blob is the exact bytes to append. commit()
 * appends blobs in order and fills the grain tables.
 *
 * streamOptimized layout (VMware's stream layout, readable from a pipe):
 * header (gdOffset "at end"), descriptor, grains, then for each grain table
 * that has entries a GT marker and the table right after its grains, then a
 * GD marker and the grain directory, a footer marker and the footer (a copy
 * of the header with the real gdOffset), and the end-of-stream marker.
 * Grain tables with no entries are left out (their directory entry is 0).
 *
 * monolithicSparse layout (as qemu and VMware Workstation make it): header,
 * descriptor, redundant grain directory and tables, grain directory and
 * tables, then the grains. Tables are kept in memory (2 KiB per 32 MiB of
 * data written) and written by finish(), with the header last.
 * Spec: VMware "Virtual Disk Format 5.0" technical note. */
#include "image.h"
#include "vmdk.h"

#include <ctype.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define VW_GRAIN_SECTORS 128u /* 64 KiB grains */
#define VW_GRAIN (VW_GRAIN_SECTORS * VMDK_SECTOR)
#define VW_GTES 512u
#define VW_GT_SECTORS (VW_GTES * 4 / VMDK_SECTOR)
#define VW_DESC_SECTORS 20u
#define VW_MAX_SECTORS 0xffffffffull /* grain table entries are 32-bit sectors */
#define VW_DEFLATE_LEVEL 6         /* zlib's default, which qemu uses */

const char vmdkw_create_help[] =
  "subformat=streamOptimized|monolithicSparse  (default streamOptimized: compressed, what EC2 imports)\n"
  "adapter_type=ide|lsilogic|buslogic|legacyESX  ddb.adapterType (default lsilogic)\n"
  "hwversion=N           ddb.virtualHWVersion (default 4)\n"
  "toolsversion=N        ddb.toolsVersion (default 2147483647)\n";

/* One grain of an encoded run: its index and where its bytes start in the
 * blob's data, in sectors. */
struct vw_rec {
  uint64_t grain;
  uint32_t rel;
};

struct vw_blob {
  size_t n;        /* records */
  size_t sectors;  /* data sectors */
  struct vw_rec *rec;
  uint8_t *data;
};

struct vw_comp {
  struct vw_comp *next;
  struct libdeflate_compressor *c;
};

struct vmdkw {
  bool stream;
  uint64_t capacity;  /* sectors */
  uint64_t grains;
  uint64_t gt_count;
  uint64_t gd_sectors;
  uint64_t overhead;  /* sectors before the first grain */
  char adapter[16], hwversion[16], tools[16];
  uint32_t cid;
  /* Under the engine's ordering (commit and finish run one at a time). */
  uint64_t next;      /* next free sector */
  uint64_t next_grain; /* grains below this were written or skipped */
  uint32_t *gd;       /* stream: GT sector per table (0 = none) */
  uint32_t gt[VW_GTES]; /* stream: the table being filled */
  uint64_t gt_cur;    /* stream: which table gt[] is */
  bool gt_used;
  uint32_t **gts;     /* sparse: entries of each table, allocated on first use */
  bool failed, finished;
  /* Compressors, one per thread in encode. */
  pthread_mutex_t lock;
  struct vw_comp *pool;
};

/* --- options and descriptor --------------------------------------------- */

static int vw_digits(const char *v, const char *key, char *out, size_t cap, struct error *e)
{
  size_t n = strlen(v);
  if (!n || n >= cap)
    return error_set(e, ERR_USAGE, "vmdk option %s=%s: must be a number of 1 to %zu digits", key,
                     v, cap - 1);
  for (size_t i = 0; i < n; i++)
    if (!isdigit((unsigned char)v[i]))
      return error_set(e, ERR_USAGE, "vmdk option %s=%s: must be a number", key, v);
  memcpy(out, v, n + 1);
  return 0;
}

static int vw_parse_opts(struct vmdkw *w, struct create_opts *o, struct error *e)
{
  const char *v = create_opts_get(o, "subformat");
  w->stream = true;
  if (v && strcasecmp(v, "monolithicSparse") == 0)
    w->stream = false;
  else if (v && strcasecmp(v, "streamOptimized") != 0)
    return error_set(e, ERR_USAGE, "vmdk option subformat=%s: amiport writes streamOptimized or "
                     "monolithicSparse", v);
  if (o->compress && !w->stream)
    return error_set(e, ERR_USAGE, "vmdk: -c needs subformat=streamOptimized (monolithicSparse "
                     "grains are not compressed)");
  static const char *const adapters[] = { "ide", "lsilogic", "buslogic", "legacyESX", NULL };
  v = create_opts_get(o, "adapter_type");
  snprintf(w->adapter, sizeof w->adapter, "lsilogic");
  if (v) {
    size_t i = 0;
    while (adapters[i] && strcasecmp(v, adapters[i]) != 0)
      i++;
    if (!adapters[i])
      return error_set(e, ERR_USAGE, "vmdk option adapter_type=%s: must be ide, lsilogic, "
                       "buslogic or legacyESX", v);
    snprintf(w->adapter, sizeof w->adapter, "%s", adapters[i]);
  }
  snprintf(w->hwversion, sizeof w->hwversion, "4");
  if ((v = create_opts_get(o, "hwversion")) &&
      vw_digits(v, "hwversion", w->hwversion, 4, e) < 0)
    return -1;
  snprintf(w->tools, sizeof w->tools, "2147483647");
  if ((v = create_opts_get(o, "toolsversion")) &&
      vw_digits(v, "toolsversion", w->tools, 11, e) < 0)
    return -1;
  return 0;
}

/* The name the image will have: copy_to_file writes ".NAME.amiport-PID"
 * beside NAME and renames it when done, and the descriptor should name NAME. */
static void vw_final_name(const char *path, char *out, size_t cap)
{
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  const char *tag = strstr(b, ".amiport-");
  if (b[0] == '.' && tag && tag > b + 1)
    snprintf(out, cap, "%.*s", (int)(tag - b - 1), b + 1);
  else
    snprintf(out, cap, "%s", b);
}

static int vw_descriptor(struct img *im, struct vmdkw *w, uint8_t *out, size_t cap,
                         struct error *e)
{
  char name[256];
  vw_final_name(im->path, name, sizeof name);
  for (char *p = name; *p; p++)
    if (*p == '"' || (unsigned char)*p < 0x20)
      *p = '_';
  unsigned heads = strcmp(w->adapter, "ide") == 0 ? 16 : 255;
  int n = snprintf((char *)out, cap,
                   "# Disk DescriptorFile\n"
                   "version=1\n"
                   "CID=%08x\n"
                   "parentCID=ffffffff\n"
                   "createType=\"%s\"\n"
                   "\n"
                   "# Extent description\n"
                   "RW %llu SPARSE \"%s\"\n"
                   "\n"
                   "# The Disk Data Base\n"
                   "#DDB\n"
                   "\n"
                   "ddb.virtualHWVersion = \"%s\"\n"
                   "ddb.geometry.cylinders = \"%llu\"\n"
                   "ddb.geometry.heads = \"%u\"\n"
                   "ddb.geometry.sectors = \"63\"\n"
                   "ddb.adapterType = \"%s\"\n"
                   "ddb.toolsVersion = \"%s\"\n",
                   w->cid, w->stream ? "streamOptimized" : "monolithicSparse",
                   (unsigned long long)w->capacity, name, w->hwversion,
                   (unsigned long long)(w->capacity / (63ull * heads)), heads, w->adapter,
                   w->tools);
  if (n < 0 || (size_t)n >= cap)
    return error_set(e, ERR_USAGE, "%s: VMDK descriptor does not fit in %u sectors", im->path,
                     VW_DESC_SECTORS);
  return 0;
}

static void vw_header(const struct vmdkw *w, uint8_t h[VMDK_SECTOR], uint64_t gd_sector,
                      uint64_t rgd_sector)
{
  memset(h, 0, VMDK_SECTOR);
  put_le32(h + VH_MAGIC, VMDK4_MAGIC);
  put_le32(h + VH_VERSION, w->stream ? 3 : 1);
  put_le32(h + VH_FLAGS, VMDK_FLAG_NL_DETECT |
           (w->stream ? VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS : VMDK_FLAG_RGD));
  put_le64(h + VH_CAPACITY, w->capacity);
  put_le64(h + VH_GRAIN_SIZE, VW_GRAIN_SECTORS);
  put_le64(h + VH_DESC_OFFSET, 1);
  put_le64(h + VH_DESC_SIZE, VW_DESC_SECTORS);
  put_le32(h + VH_NUM_GTES, VW_GTES);
  put_le64(h + VH_RGD_OFFSET, rgd_sector);
  put_le64(h + VH_GD_OFFSET, gd_sector);
  put_le64(h + VH_OVERHEAD, w->overhead);
  memcpy(h + VH_NL_CHARS, "\n \r\n", 4);
  put_le16(h + VH_COMPRESS, w->stream ? VMDK_COMPRESS_DEFLATE : VMDK_COMPRESS_NONE);
}

static void vw_free(struct vmdkw *w)
{
  if (!w)
    return;
  while (w->pool) {
    struct vw_comp *c = w->pool;
    w->pool = c->next;
    libdeflate_free_compressor(c->c);
    free(c);
  }
  if (w->gts)
    for (uint64_t i = 0; i < w->gt_count; i++)
      free(w->gts[i]);
  free(w->gts);
  free(w->gd);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

int vmdkw_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e)
{
  struct vmdkw *w = calloc(1, sizeof *w);
  if (!w)
    return error_set(e, ERR_NOMEM, "out of memory");
  pthread_mutex_init(&w->lock, NULL);
  uint8_t *meta = NULL;
  if (vw_parse_opts(w, o, e) < 0)
    goto fail;
  if (size > (VW_MAX_SECTORS << 9)) {
    error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for a VMDK sparse extent (at "
              "most 2 TiB)", im->path, (unsigned long long)size);
    goto fail;
  }
  w->capacity = (size + VMDK_SECTOR - 1) / VMDK_SECTOR; /* as qemu-img, round up to sectors */
  w->grains = (w->capacity + VW_GRAIN_SECTORS - 1) / VW_GRAIN_SECTORS;
  w->gt_count = (w->grains + VW_GTES - 1) / VW_GTES;
  w->gd_sectors = (w->gt_count * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
  if (getrandom(&w->cid, sizeof w->cid, 0) != (ssize_t)sizeof w->cid)
    w->cid = (uint32_t)time(NULL) ^ (uint32_t)getpid();
  if (w->cid == 0xffffffffu)
    w->cid = 0xfffffffeu;
  uint64_t rgd = 0;
  if (w->stream) {
    w->overhead = VW_GRAIN_SECTORS; /* header and descriptor, padded to a grain */
    if (!(w->gd = calloc(w->gt_count ? w->gt_count : 1, sizeof *w->gd)))
      goto nomem;
    w->gt_cur = UINT64_MAX;
  } else {
    rgd = 1 + VW_DESC_SECTORS;
    uint64_t tables = w->gd_sectors + w->gt_count * VW_GT_SECTORS;
    uint64_t end = rgd + 2 * tables;
    w->overhead = (end + VW_GRAIN_SECTORS - 1) / VW_GRAIN_SECTORS * VW_GRAIN_SECTORS;
    if (w->overhead + w->grains * VW_GRAIN_SECTORS > VW_MAX_SECTORS) {
      error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for a monolithicSparse VMDK "
                "(its grains would pass the 2 TiB offset limit)", im->path,
                (unsigned long long)size);
      goto fail;
    }
    if (!(w->gts = calloc(w->gt_count ? w->gt_count : 1, sizeof *w->gts)))
      goto nomem;
    if (ftruncate(im->fd, (off_t)(w->overhead * VMDK_SECTOR)) < 0) {
      error_errno(e, "%s: set size", im->path);
      goto fail;
    }
  }
  w->next = w->overhead;
  /* The header and descriptor. A stream's header is final now (its
   * directory is found through the footer); a sparse one is rewritten by
   * finish with the same bytes, after the tables. */
  if (!(meta = calloc(1 + VW_DESC_SECTORS, VMDK_SECTOR)))
    goto nomem;
  vw_header(w, meta, w->stream ? VMDK_GD_AT_END : rgd + w->gd_sectors + w->gt_count * VW_GT_SECTORS,
            rgd);
  if (vw_descriptor(im, w, meta + VMDK_SECTOR, VW_DESC_SECTORS * VMDK_SECTOR, e) < 0)
    goto fail;
  if (w->stream) {
    if (img_pwrite_file(im->fd, meta, (1 + VW_DESC_SECTORS) * VMDK_SECTOR, 0, im->path, e) < 0)
      goto fail;
  } else if (img_pwrite_file(im->fd, meta + VMDK_SECTOR, VW_DESC_SECTORS * VMDK_SECTOR,
                             VMDK_SECTOR, im->path, e) < 0) {
    goto fail;
  }
  free(meta);
  im->block_size = VW_GRAIN;
  im->priv = w;
  return 0;
nomem:
  error_set(e, ERR_NOMEM, "out of memory");
fail:
  free(meta);
  vw_free(w);
  return -1;
}

/* --- encode: any thread --------------------------------------------------- */

static struct libdeflate_compressor *vw_get_comp(struct vmdkw *w)
{
  pthread_mutex_lock(&w->lock);
  struct vw_comp *c = w->pool;
  if (c)
    w->pool = c->next;
  pthread_mutex_unlock(&w->lock);
  if (c) {
    struct libdeflate_compressor *k = c->c;
    free(c);
    return k;
  }
  return libdeflate_alloc_compressor(VW_DEFLATE_LEVEL);
}

static void vw_put_comp(struct vmdkw *w, struct libdeflate_compressor *k)
{
  struct vw_comp *c = malloc(sizeof *c);
  if (!c) {
    libdeflate_free_compressor(k);
    return;
  }
  c->c = k;
  pthread_mutex_lock(&w->lock);
  c->next = w->pool;
  w->pool = c;
  pthread_mutex_unlock(&w->lock);
}

static void vw_blob_free(struct vw_blob *b)
{
  free(b);
}

void *vmdkw_encode(struct img *im, const void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct vmdkw *w = im->priv;
  const uint8_t *buf = vbuf;
  if (off % VW_GRAIN || (len % VW_GRAIN && off + len != im->size) || off + len > im->size) {
    error_set(e, ERR_USAGE, "%s: VMDK write of %zu bytes at %llu is not whole grains", im->path,
              len, (unsigned long long)off);
    return NULL;
  }
  size_t n = (len + VW_GRAIN - 1) / VW_GRAIN;
  struct libdeflate_compressor *k = NULL;
  size_t slot = VW_GRAIN; /* bytes one grain may take in the blob */
  if (w->stream) {
    if (!(k = vw_get_comp(w))) {
      error_set(e, ERR_NOMEM, "out of memory for a compressor");
      return NULL;
    }
    slot = libdeflate_zlib_compress_bound(k, VW_GRAIN) + VMDK_GRAIN_MARKER_LEN;
    slot = (slot + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
  }
  size_t head = sizeof(struct vw_blob) + n * sizeof(struct vw_rec);
  head = (head + 63) & ~(size_t)63;
  struct vw_blob *b = malloc(head + n * slot);
  if (!b) {
    if (k)
      vw_put_comp(w, k);
    error_set(e, ERR_NOMEM, "out of memory for %zu grains", n);
    return NULL;
  }
  b->rec = (struct vw_rec *)(b + 1);
  b->data = (uint8_t *)b + head;
  b->n = 0;
  size_t at = 0; /* bytes of data */
  uint8_t tail[VW_GRAIN];
  for (size_t i = 0; i < n; i++) {
    size_t glen = len - i * VW_GRAIN < VW_GRAIN ? len - i * VW_GRAIN : VW_GRAIN;
    const uint8_t *src = buf + i * VW_GRAIN;
    if (buf_is_zero(src, glen))
      continue;
    if (glen < VW_GRAIN) { /* the disk's last grain: pad with zeros */
      memcpy(tail, src, glen);
      memset(tail + glen, 0, VW_GRAIN - glen);
      src = tail;
    }
    uint64_t g = off / VW_GRAIN + i;
    uint8_t *dst = b->data + at;
    size_t used;
    if (w->stream) {
      size_t c = libdeflate_zlib_compress(k, src, VW_GRAIN, dst + VMDK_GRAIN_MARKER_LEN,
                                          slot - VMDK_GRAIN_MARKER_LEN);
      if (!c) {
        vw_put_comp(w, k);
        free(b);
        error_set(e, ERR_FORMAT, "%s: deflate of the grain at %llu failed", im->path,
                  (unsigned long long)(g * VW_GRAIN));
        return NULL;
      }
      put_le64(dst, g * VW_GRAIN_SECTORS);
      put_le32(dst + 8, (uint32_t)c);
      used = VMDK_GRAIN_MARKER_LEN + c;
      size_t padded = (used + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
      memset(dst + used, 0, padded - used);
      used = padded;
    } else {
      memcpy(dst, src, VW_GRAIN);
      used = VW_GRAIN;
    }
    b->rec[b->n++] = (struct vw_rec){ g, (uint32_t)(at / VMDK_SECTOR) };
    at += used;
  }
  b->sectors = at / VMDK_SECTOR;
  if (k)
    vw_put_comp(w, k);
  return b;
}

/* --- commit: in order ------------------------------------------------------ */

/* Stream: writes the grain table being filled (marker, then table). */
static int vw_flush_gt(struct img *im, struct vmdkw *w, struct error *e)
{
  if (w->gt_cur == UINT64_MAX || !w->gt_used)
    return 0;
  uint8_t m[VMDK_SECTOR + VW_GTES * 4];
  memset(m, 0, VMDK_SECTOR);
  put_le64(m, VW_GT_SECTORS);
  put_le32(m + 12, VMDK_MARKER_GT);
  for (unsigned i = 0; i < VW_GTES; i++)
    put_le32(m + VMDK_SECTOR + i * 4, w->gt[i]);
  if (w->next + 1 + VW_GT_SECTORS > VW_MAX_SECTORS)
    return error_set(e, ERR_UNSUPPORTED, "%s: streamOptimized VMDK grew past 2 TiB", im->path);
  if (img_pwrite_file(im->fd, m, sizeof m, w->next * VMDK_SECTOR, im->path, e) < 0)
    return -1;
  w->gd[w->gt_cur] = (uint32_t)(w->next + 1);
  w->next += 1 + VW_GT_SECTORS;
  memset(w->gt, 0, sizeof w->gt);
  w->gt_used = false;
  return 0;
}

int vmdkw_commit(struct img *im, void *blob, struct error *e)
{
  struct vmdkw *w = im->priv;
  struct vw_blob *b = blob;
  if (w->failed)
    return error_set(e, ERR_IO, "%s: an earlier VMDK write failed", im->path);
  size_t i = 0;
  while (i < b->n) {
    /* A batch of records that lands in one grain table, written at once. */
    size_t j = i;
    uint64_t gt = b->rec[i].grain / VW_GTES;
    while (j < b->n && b->rec[j].grain / VW_GTES == gt)
      j++;
    if (b->rec[i].grain < w->next_grain || b->rec[i].grain >= w->grains) {
      w->failed = true;
      return error_set(e, ERR_USAGE, "%s: VMDK grain %llu written out of order (next is %llu)",
                       im->path, (unsigned long long)b->rec[i].grain,
                       (unsigned long long)w->next_grain);
    }
    if (w->stream && gt != w->gt_cur) {
      if (vw_flush_gt(im, w, e) < 0)
        goto fail;
      w->gt_cur = gt;
    }
    uint32_t first = b->rec[i].rel;
    uint64_t nsec = (j < b->n ? b->rec[j].rel : b->sectors) - first;
    if (w->next + nsec > VW_MAX_SECTORS) {
      error_set(e, ERR_UNSUPPORTED, "%s: VMDK grew past 2 TiB (grain offsets are 32-bit sectors)",
                im->path);
      goto fail;
    }
    if (img_pwrite_file(im->fd, b->data + (size_t)first * VMDK_SECTOR, nsec * VMDK_SECTOR,
                        w->next * VMDK_SECTOR, im->path, e) < 0)
      goto fail;
    for (size_t r = i; r < j; r++) {
      uint32_t sector = (uint32_t)(w->next + b->rec[r].rel - first);
      uint64_t g = b->rec[r].grain;
      if (w->stream) {
        w->gt[g % VW_GTES] = sector;
        w->gt_used = true;
      } else {
        if (!w->gts[gt] && !(w->gts[gt] = calloc(VW_GTES, 4))) {
          error_set(e, ERR_NOMEM, "out of memory for a grain table");
          goto fail;
        }
        w->gts[gt][g % VW_GTES] = sector;
      }
      w->next_grain = g + 1;
    }
    w->next += nsec;
    i = j;
  }
  return 0;
fail:
  w->failed = true;
  return -1;
}

int vmdkw_pwrite(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e)
{
  void *b = vmdkw_encode(im, buf, len, off, e);
  if (!b)
    return -1;
  int r = vmdkw_commit(im, b, e);
  vw_blob_free(b);
  return r;
}

/* --- finish ---------------------------------------------------------------- */

static int vw_write_marker(struct img *im, struct vmdkw *w, uint64_t val, uint32_t type,
                           struct error *e)
{
  uint8_t m[VMDK_SECTOR] = { 0 };
  put_le64(m, val);
  put_le32(m + 12, type);
  if (img_pwrite_file(im->fd, m, sizeof m, w->next * VMDK_SECTOR, im->path, e) < 0)
    return -1;
  w->next++;
  return 0;
}

/* Writes a directory (entries from a callback's table) at sector s. */
static int vw_write_gd(struct img *im, struct vmdkw *w, uint64_t s, uint64_t first_gt,
                       bool use_gd, struct error *e)
{
  size_t bytes = (size_t)(w->gd_sectors * VMDK_SECTOR);
  uint8_t *gd = calloc(1, bytes ? bytes : 1);
  if (!gd)
    return error_set(e, ERR_NOMEM, "out of memory");
  for (uint64_t i = 0; i < w->gt_count; i++)
    put_le32(gd + i * 4, use_gd ? w->gd[i] : (uint32_t)(first_gt + i * VW_GT_SECTORS));
  int r = bytes ? img_pwrite_file(im->fd, gd, bytes, s * VMDK_SECTOR, im->path, e) : 0;
  free(gd);
  return r;
}

static int vw_finish_stream(struct img *im, struct vmdkw *w, struct error *e)
{
  if (vw_flush_gt(im, w, e) < 0)
    return -1;
  if (w->next + 4 + w->gd_sectors > VW_MAX_SECTORS)
    return error_set(e, ERR_UNSUPPORTED, "%s: streamOptimized VMDK grew past 2 TiB", im->path);
  if (vw_write_marker(im, w, w->gd_sectors, VMDK_MARKER_GD, e) < 0)
    return -1;
  uint64_t gd_sector = w->next;
  if (vw_write_gd(im, w, gd_sector, 0, true, e) < 0)
    return -1;
  w->next += w->gd_sectors;
  if (vw_write_marker(im, w, 1, VMDK_MARKER_FOOTER, e) < 0)
    return -1;
  uint8_t h[VMDK_SECTOR];
  vw_header(w, h, gd_sector, 0);
  if (img_pwrite_file(im->fd, h, sizeof h, w->next * VMDK_SECTOR, im->path, e) < 0)
    return -1;
  w->next++;
  return vw_write_marker(im, w, 0, VMDK_MARKER_EOS, e);
}

static int vw_finish_sparse(struct img *im, struct vmdkw *w, struct error *e)
{
  uint64_t rgd = 1 + VW_DESC_SECTORS;
  uint64_t tables = w->gd_sectors + w->gt_count * VW_GT_SECTORS;
  uint64_t gd = rgd + tables;
  uint8_t t[VW_GTES * 4];
  for (int copy = 0; copy < 2; copy++) {
    uint64_t dir = copy ? gd : rgd, first = dir + w->gd_sectors;
    if (vw_write_gd(im, w, dir, first, false, e) < 0)
      return -1;
    for (uint64_t i = 0; i < w->gt_count; i++) {
      if (!w->gts[i])
        continue; /* the file is sparse: an absent table reads as zeros */
      for (unsigned j = 0; j < VW_GTES; j++)
        put_le32(t + j * 4, w->gts[i][j]);
      if (img_pwrite_file(im->fd, t, sizeof t, (first + i * VW_GT_SECTORS) * VMDK_SECTOR,
                          im->path, e) < 0)
        return -1;
    }
  }
  /* Grains are whole: the file ends at the end of the last one. */
  if (ftruncate(im->fd, (off_t)(w->next * VMDK_SECTOR)) < 0)
    return error_errno(e, "%s: set size", im->path);
  if (img_sync(im) < 0)
    return error_errno(e, "%s: fsync", im->path);
  uint8_t h[VMDK_SECTOR];
  vw_header(w, h, gd, rgd);
  return img_pwrite_file(im->fd, h, sizeof h, 0, im->path, e);
}

int vmdkw_finish(struct img *im, struct error *e)
{
  struct vmdkw *w = im->priv;
  if (w->failed)
    return error_set(e, ERR_IO, "%s: an earlier VMDK write failed; the image is incomplete",
                     im->path);
  if (w->finished)
    return 0;
  int r = w->stream ? vw_finish_stream(im, w, e) : vw_finish_sparse(im, w, e);
  if (r == 0 && img_sync(im) < 0)
    r = error_errno(e, "%s: fsync", im->path);
  if (r < 0) {
    w->failed = true;
    return -1;
  }
  w->finished = true;
  return 0;
}

void vmdkw_close(struct img *im)
{
  vw_free(im->priv);
  im->priv = NULL;
}
