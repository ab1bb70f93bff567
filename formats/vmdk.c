/* vmdk.c - VMware virtual disk reader: hosted sparse extents (monolithicSparse,
 * twoGbMaxExtentSparse, with zeroed-grain entries and redundant grain
 * directories), stream-optimized extents (deflate-compressed grains with
 * markers, grain directory found through the footer), flat extents
 * (monolithicFlat, twoGbMaxExtentFlat, vmfs) and zero extents, assembled
 * from a text descriptor (a separate file or embedded in a sparse extent).
 * Legacy COWD (VMDK3 / vmfsSparse) and seSparse extents are refused by name.
 *
 * Extent files named by a descriptor are opened only when they resolve inside
 * the descriptor's directory, unless the user allows other paths. A VMDK may
 * also be a byte range of another file (an OVA's tar member, vmdk_open_at).
 * Every header field is bounded before it is used to allocate or seek; grain
 * tables are read on demand with pread, so pread and extents are thread-safe
 * with no shared mutable state. The writer is in vmdk_write.c.
 * Spec: VMware "Virtual Disk Format 5.0" technical note. */
#include "image.h"
#include "vmdk.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libdeflate.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

enum vx_kind { VX_FLAT, VX_SPARSE, VX_ZERO };

/* One extent: a run of the virtual disk stored one way. */
struct vx {
  enum vx_kind kind;
  char *type;         /* as the descriptor spells it: FLAT, VMFS, SPARSE, ZERO */
  char *name;         /* the file name the descriptor gives (NULL for ZERO) */
  int fd;             /* -1 for ZERO */
  bool own_fd;
  uint64_t base;      /* where the extent's file starts in fd (OVA member offset) */
  uint64_t flen;      /* bytes of the extent's file */
  uint64_t start, len; /* guest bytes this extent covers */
  uint64_t flat_off;  /* FLAT: byte offset of the data in the file */
  /* SPARSE */
  uint32_t version, flags;
  uint64_t grain;     /* bytes per grain */
  uint32_t gtes;      /* entries per grain table */
  uint64_t gt_cover;  /* guest bytes per grain table */
  uint32_t *gd;       /* host-endian grain directory (sector offsets of GTs) */
  uint64_t gd_n;
  bool compressed, markers, zero_grain, used_rgd;
  bool is_image;      /* the extent is the image file itself: name it by its path */
};

struct vmdk {
  char *create_type, *adapter, *hwversion, *tools;
  uint32_t cid, parent_cid;
  bool has_cid;
  struct vx *x;
  size_t nx;
};

/* --- small helpers ------------------------------------------------------ */

static const char *vmdk_basename(const char *p)
{
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static char *vmdk_strndup(const char *s, size_t n, struct error *e)
{
  char *d = strndup(s, n);
  if (!d)
    error_set(e, ERR_NOMEM, "out of memory");
  return d;
}

/* Reads len bytes at off of the extent's file; bytes past the end of the
 * file read as zeros (a flat file or last grain written short). */
static int vx_read_file(struct img *im, const struct vx *x, void *buf, uint64_t len, uint64_t off,
                        struct error *e)
{
  uint64_t avail = off < x->flen ? x->flen - off : 0;
  uint64_t n = len < avail ? len : avail;
  if (n && img_pread_file(x->fd, buf, n, x->base + off, x->name && !x->is_image ? x->name : im->path,
                         e) < 0)
    return -1;
  memset((uint8_t *)buf + n, 0, len - n);
  return 0;
}

/* --- probe ----------------------------------------------------------------- */

/* A text descriptor: comment and blank lines, then "version=N". */
static bool vmdk_probe_text(const uint8_t *buf, size_t len)
{
  const char *p = (const char *)buf, *end = p + len;
  while (p < end) {
    if (*p == '#') {
      while (p < end && *p != '\n')
        p++;
      p++;
      continue;
    }
    if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
      p++;
      continue;
    }
    for (int v = '1'; v <= '3'; v++) {
      char want[12] = "version=X";
      want[8] = (char)v;
      if (end - p >= 10 && memcmp(p, want, 9) == 0 && (p[9] == '\n' || p[9] == '\r'))
        return true;
    }
    return false;
  }
  return false;
}

static int vmdk_probe(const uint8_t *head, size_t len)
{
  if (len >= 4 && (le32(head) == VMDK4_MAGIC || le32(head) == VMDK3_MAGIC))
    return 100;
  return vmdk_probe_text(head, len) ? 100 : 0;
}

/* --- descriptor ------------------------------------------------------------ */

enum { ACC_RW, ACC_RDONLY, ACC_NOACCESS };

struct vd_extent {
  int access;
  uint64_t sectors;
  char type[16];
  char *fname;     /* NULL when the line names no file */
  uint64_t offset; /* FLAT: sectors into the file */
  unsigned line;
};

struct vdesc {
  char *create_type, *adapter, *hwversion, *tools, *parent_hint;
  uint32_t cid, parent_cid;
  bool has_cid, has_parent_cid, has_version;
  struct vd_extent *x;
  size_t nx, cap;
};

static void vdesc_free(struct vdesc *d)
{
  free(d->create_type);
  free(d->adapter);
  free(d->hwversion);
  free(d->tools);
  free(d->parent_hint);
  for (size_t i = 0; i < d->nx; i++)
    free(d->x[i].fname);
  free(d->x);
  memset(d, 0, sizeof *d);
}

/* Where a descriptor stops being text: the offset of the first byte that no
 * text descriptor holds, or -1. A NUL ends the text: an embedded descriptor
 * is padded with them, and qemu pads descriptor files to a sector; in a
 * file, only more NULs may follow it. */
static long vdesc_binary_at(const char *s, size_t len, bool embedded)
{
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    /* The text ends at the first NUL, as in qemu, which reads it as a C
     * string: qemu-img itself leaves stale bytes after it when it rewrites a
     * descriptor with a shorter CID. A file that starts with NUL is binary. */
    if (c == 0)
      return i > 0 || embedded ? -1 : 0;
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t')
      return (long)i;
  }
  return -1;
}

static int vdesc_set(char **dst, const char *v, size_t n, struct error *e)
{
  free(*dst);
  return (*dst = vmdk_strndup(v, n, e)) ? 0 : -1;
}

/* Parses a decimal number of at most 20 digits; false on garbage or overflow. */
static bool vdesc_number(const char **pp, const char *end, uint64_t *out)
{
  const char *p = *pp;
  uint64_t v = 0;
  if (p >= end || !isdigit((unsigned char)*p))
    return false;
  while (p < end && isdigit((unsigned char)*p)) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
    p++;
  }
  *pp = p;
  *out = v;
  return true;
}

static int vdesc_extent_line(const char *path, struct vdesc *d, const char *p, const char *end,
                             int access, unsigned lineno, struct error *e)
{
  struct vd_extent x = { .access = access, .line = lineno };
  while (p < end && !isspace((unsigned char)*p))
    p++; /* the access word */
  while (p < end && isspace((unsigned char)*p))
    p++;
  const char *num = p, *ne = p;
  while (ne < end && !isspace((unsigned char)*ne))
    ne++;
  if (!vdesc_number(&p, end, &x.sectors) || p != ne)
    return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent size '%.*s' is not a "
                     "number of sectors", path, lineno, (int)((ne - num) > 40 ? 40 : ne - num),
                     num);
  while (p < end && isspace((unsigned char)*p))
    p++;
  size_t tl = 0;
  while (p < end && !isspace((unsigned char)*p)) {
    if (tl + 1 >= sizeof x.type)
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent type is too long", path,
                       lineno);
    x.type[tl++] = (char)toupper((unsigned char)*p++);
  }
  if (!tl)
    return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent line has no type", path,
                     lineno);
  while (p < end && isspace((unsigned char)*p))
    p++;
  if (p < end && *p == '"') {
    const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
    if (!q)
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent file name has no closing "
                       "quote", path, lineno);
    if (q - p - 1 > PATH_MAX)
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent file name is longer than "
                       "%d bytes", path, lineno, PATH_MAX);
    if (!(x.fname = vmdk_strndup(p + 1, (size_t)(q - p - 1), e)))
      return -1;
    p = q + 1;
    while (p < end && isspace((unsigned char)*p))
      p++;
    if (p < end && !vdesc_number(&p, end, &x.offset)) {
      free(x.fname);
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent offset is not a number",
                       path, lineno);
    }
  }
  if (d->nx >= VMDK_MAX_EXTENTS) {
    free(x.fname);
    return error_set(e, ERR_FORMAT, "%s: descriptor lists more than %u extents", path,
                     VMDK_MAX_EXTENTS);
  }
  if (d->nx == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    struct vd_extent *v = realloc(d->x, cap * sizeof *v);
    if (!v) {
      free(x.fname);
      return error_set(e, ERR_NOMEM, "out of memory");
    }
    d->x = v;
    d->cap = cap;
  }
  d->x[d->nx++] = x;
  return 0;
}

/* Parses the text of a descriptor (len bytes, not NUL-terminated). */
static int vdesc_parse(const char *path, const char *text, size_t len, bool embedded,
                       struct vdesc *d, struct error *e)
{
  long bad = vdesc_binary_at(text, len, embedded);
  if (bad >= 0)
    return error_set(e, ERR_FORMAT, "%s: not a VMDK descriptor: byte 0x%02x at offset %ld is not "
                     "text", path, (unsigned char)text[bad], bad);
  const char *end = text + len;
  const char *nul = memchr(text, 0, len);
  if (nul)
    end = nul;
  unsigned lineno = 0;
  for (const char *p = text; p < end;) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *le = eol ? eol : end;
    const char *next = eol ? eol + 1 : end;
    lineno++;
    while (p < le && isspace((unsigned char)*p))
      p++;
    while (le > p && isspace((unsigned char)le[-1]))
      le--;
    if (p == le || *p == '#') {
      p = next;
      continue;
    }
    int access = -1;
    size_t wl = 0;
    while (p + wl < le && !isspace((unsigned char)p[wl]) && p[wl] != '=')
      wl++;
    if (wl == 2 && strncmp(p, "RW", 2) == 0)
      access = ACC_RW;
    else if (wl == 6 && strncmp(p, "RDONLY", 6) == 0)
      access = ACC_RDONLY;
    else if (wl == 8 && strncmp(p, "NOACCESS", 8) == 0)
      access = ACC_NOACCESS;
    if (access >= 0 && p + wl < le && isspace((unsigned char)p[wl])) {
      if (vdesc_extent_line(path, d, p, le, access, lineno, e) < 0)
        return -1;
      p = next;
      continue;
    }
    const char *eq = memchr(p, '=', (size_t)(le - p));
    if (!eq) { /* neither key=value nor an extent: ignored, as VMware does */
      p = next;
      continue;
    }
    const char *k = p, *ke = eq, *v = eq + 1, *ve = le;
    while (ke > k && isspace((unsigned char)ke[-1]))
      ke--;
    while (v < ve && isspace((unsigned char)*v))
      v++;
    if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
      v++;
      ve--;
    } else if (ve - v >= 1 && *v == '"') {
      v++;
    }
    size_t kl = (size_t)(ke - k), vl = (size_t)(ve - v);
#define KEY(s) (kl == sizeof(s) - 1 && strncasecmp(k, s, kl) == 0)
    int r = 0;
    if (KEY("version")) {
      d->has_version = true;
    } else if (KEY("CID") || KEY("parentCID")) {
      char tmp[16] = { 0 };
      char *te;
      memcpy(tmp, v, vl < 15 ? vl : 15);
      unsigned long c = strtoul(tmp, &te, 16);
      if (te != tmp && c <= UINT32_MAX) {
        if (KEY("CID")) {
          d->cid = (uint32_t)c;
          d->has_cid = true;
        } else {
          d->parent_cid = (uint32_t)c;
          d->has_parent_cid = true;
        }
      }
    } else if (KEY("createType")) {
      r = vdesc_set(&d->create_type, v, vl, e);
    } else if (KEY("parentFileNameHint")) {
      r = vdesc_set(&d->parent_hint, v, vl, e);
    } else if (KEY("ddb.adapterType")) {
      r = vdesc_set(&d->adapter, v, vl, e);
    } else if (KEY("ddb.virtualHWVersion")) {
      r = vdesc_set(&d->hwversion, v, vl, e);
    } else if (KEY("ddb.toolsVersion")) {
      r = vdesc_set(&d->tools, v, vl, e);
    }
#undef KEY
    if (r < 0)
      return -1;
    p = next;
  }
  return 0;
}

/* --- sparse extents -------------------------------------------------------- */

static const char *vx_label(struct img *im, const struct vx *x)
{
  return x->name && !x->is_image ? x->name : im->path;
}

/* Reads the sparse header of x (and its footer when the grain directory is
 * at the end), bounds every field and loads the grain directory. hdr_out,
 * when given, receives the header sector (for the embedded descriptor). */
static int vx_open_sparse(struct img *im, struct vx *x, const struct open_opts *o,
                          uint8_t hdr_out[VMDK_SECTOR], struct error *e)
{
  const char *f = vx_label(im, x);
  uint8_t h[VMDK_SECTOR];
  if (x->flen < VMDK_SECTOR)
    return error_set(e, ERR_FORMAT, "%s: truncated: %llu bytes, shorter than a VMDK sparse "
                     "header", f, (unsigned long long)x->flen);
  if (img_pread_file(x->fd, h, sizeof h, x->base, f, e) < 0)
    return -1;
  uint32_t magic = le32(h + VH_MAGIC);
  if (magic == VMDK3_MAGIC)
    return error_set(e, ERR_UNSUPPORTED, "%s: legacy VMDK3 'COWD' sparse extent (vmfsSparse); "
                     "not supported", f);
  if (le64(h) == VMDK_SESPARSE_MAGIC)
    return error_set(e, ERR_UNSUPPORTED, "%s: seSparse extent (ESXi space-efficient sparse); "
                     "not supported", f);
  if (magic != VMDK4_MAGIC)
    return error_set(e, ERR_FORMAT, "%s: not a VMDK sparse extent (magic 0x%08x, expected "
                     "'KDMV')", f, magic);
  if (hdr_out)
    memcpy(hdr_out, h, VMDK_SECTOR);
  if (le64(h + VH_GD_OFFSET) == VMDK_GD_AT_END) {
    /* Stream-optimized: the footer (marker, header copy) and the
     * end-of-stream marker are the last three sectors. */
    uint8_t ft[3 * VMDK_SECTOR];
    uint64_t end = x->flen & ~(uint64_t)(VMDK_SECTOR - 1);
    if (end < 5 * VMDK_SECTOR)
      return error_set(e, ERR_FORMAT, "%s: stream-optimized VMDK (gdOffset at end) is %llu "
                       "bytes, too short to hold a footer", f, (unsigned long long)x->flen);
    if (img_pread_file(x->fd, ft, sizeof ft, x->base + end - sizeof ft, f, e) < 0)
      return -1;
    const uint8_t *fm = ft, *fh = ft + VMDK_SECTOR, *eos = ft + 2 * VMDK_SECTOR;
    if (le32(fm + 8) != 0 || le32(fm + 12) != VMDK_MARKER_FOOTER || le32(fh) != VMDK4_MAGIC ||
        le64(eos) != 0 || le32(eos + 8) != 0 || le32(eos + 12) != VMDK_MARKER_EOS)
      return error_set(e, ERR_FORMAT, "%s: stream-optimized VMDK has gdOffset at the end but no "
                       "valid footer and end-of-stream marker in its last 1536 bytes "
                       "(truncated?)", f);
    memcpy(h, fh, VMDK_SECTOR);
    if (le64(h + VH_GD_OFFSET) == VMDK_GD_AT_END)
      return error_set(e, ERR_FORMAT, "%s: VMDK footer's gdOffset is also 'at end'", f);
  }
  x->version = le32(h + VH_VERSION);
  x->flags = le32(h + VH_FLAGS);
  uint64_t capacity = le64(h + VH_CAPACITY), grain_sectors = le64(h + VH_GRAIN_SIZE);
  uint64_t gd_off = le64(h + VH_GD_OFFSET), rgd_off = le64(h + VH_RGD_OFFSET);
  uint16_t calg = le16(h + VH_COMPRESS);
  x->gtes = le32(h + VH_NUM_GTES);
  if (x->version < 1 || x->version > 3)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK sparse header field version is %u; only 1 to 3 "
                     "exist", f, x->version);
  if (calg != VMDK_COMPRESS_NONE && calg != VMDK_COMPRESS_DEFLATE)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK sparse header field compressAlgorithm is %u; "
                     "only 0 (none) and 1 (deflate) exist", f, calg);
  x->compressed = calg == VMDK_COMPRESS_DEFLATE;
  x->markers = x->flags & VMDK_FLAG_MARKERS;
  x->zero_grain = x->flags & VMDK_FLAG_ZERO_GRAIN;
  uint64_t gmax = x->compressed ? VMDK_MAX_CGRAIN_SECTORS : VMDK_MAX_GRAIN_SECTORS;
  if (grain_sectors < 1 || grain_sectors > gmax)
    return error_set(e, ERR_FORMAT, "%s: VMDK sparse header field grainSize is %llu sectors; "
                     "must be 1 to %llu%s", f, (unsigned long long)grain_sectors,
                     (unsigned long long)gmax, x->compressed ? " for compressed grains" : "");
  if (x->gtes < 1 || x->gtes > VMDK_MAX_GTES)
    return error_set(e, ERR_FORMAT, "%s: VMDK sparse header field numGTEsPerGT is %u; must be 1 "
                     "to %u", f, x->gtes, VMDK_MAX_GTES);
  if (capacity > (1ull << 53))
    return error_set(e, ERR_FORMAT, "%s: VMDK sparse header field capacity is %llu sectors; "
                     "larger than 2^53", f, (unsigned long long)capacity);
  x->grain = grain_sectors * VMDK_SECTOR;
  x->gt_cover = x->grain * x->gtes;
  uint64_t cap_bytes = capacity * VMDK_SECTOR;
  x->gd_n = cap_bytes / x->gt_cover + (cap_bytes % x->gt_cover != 0);
  uint64_t tcap = o->max_table_bytes ? o->max_table_bytes : IMG_DEFAULT_TABLE_CAP;
  if (x->gd_n * 4 > tcap)
    return error_set(e, ERR_FORMAT, "%s: VMDK capacity %llu sectors needs a %llu-byte grain "
                     "directory, over the %llu-byte limit for tables", f,
                     (unsigned long long)capacity, (unsigned long long)x->gd_n * 4,
                     (unsigned long long)tcap);
  /* The primary grain directory, or the redundant one when the primary is
   * out of the file and the header says there is one. */
  uint64_t gd_bytes = x->gd_n * 4;
  bool has_rgd = (x->flags & VMDK_FLAG_RGD) && rgd_off;
#define GD_FITS(s) ((s) && (s) <= x->flen / VMDK_SECTOR && gd_bytes <= x->flen - (s) * VMDK_SECTOR)
  if (x->gd_n && !GD_FITS(gd_off)) {
    if (!has_rgd || !GD_FITS(rgd_off))
      return error_set(e, ERR_FORMAT, "%s: VMDK sparse header field gdOffset is sector %llu; a "
                       "%llu-byte grain directory there runs past the end of the file (size %llu)%s",
                       f, (unsigned long long)gd_off, (unsigned long long)gd_bytes,
                       (unsigned long long)x->flen,
                       has_rgd ? ", and so does the redundant one (rgdOffset)" : "");
    if (!o->quiet)
      fprintf(stderr, "amiport: warning: %s: grain directory at sector %llu is past the end of "
              "the file; using the redundant one at sector %llu\n", f,
              (unsigned long long)gd_off, (unsigned long long)rgd_off);
    gd_off = rgd_off;
    x->used_rgd = true;
  }
#undef GD_FITS
  if (!(x->gd = malloc(x->gd_n ? gd_bytes : 4)))
    return error_set(e, ERR_NOMEM, "%s: out of memory for a %llu-entry grain directory", f,
                     (unsigned long long)x->gd_n);
  if (x->gd_n && img_pread_file(x->fd, x->gd, gd_bytes, x->base + gd_off * VMDK_SECTOR, f, e) < 0)
    return -1;
  uint64_t gt_bytes = (uint64_t)x->gtes * 4;
  for (uint64_t i = 0; i < x->gd_n; i++) {
    x->gd[i] = le32((const uint8_t *)&x->gd[i]);
    uint64_t s = x->gd[i];
    if (s && (s > x->flen / VMDK_SECTOR || gt_bytes > x->flen - s * VMDK_SECTOR))
      return error_set(e, ERR_FORMAT, "%s: VMDK grain directory entry %llu points to a grain "
                       "table at sector %llu, past the end of the file (size %llu)", f,
                       (unsigned long long)i, (unsigned long long)s, (unsigned long long)x->flen);
  }
  x->len = cap_bytes;
  return 0;
}

/* Reads n grain table entries of x from grain index g (all in one table). */
static int vx_read_gt(struct img *im, const struct vx *x, uint64_t g, uint64_t n, uint32_t *out,
                      struct error *e)
{
  uint64_t gt = g / x->gtes, j = g % x->gtes;
  uint32_t s = gt < x->gd_n ? x->gd[gt] : 0;
  if (!s) {
    memset(out, 0, n * 4);
    return 0;
  }
  if (img_pread_file(x->fd, out, n * 4, x->base + (uint64_t)s * VMDK_SECTOR + j * 4,
                     vx_label(im, x), e) < 0)
    return -1;
  for (uint64_t i = 0; i < n; i++)
    out[i] = le32((const uint8_t *)&out[i]);
  return 0;
}

/* Per-call scratch of pread: nothing is shared between threads. */
struct rd {
  struct libdeflate_decompressor *inflate;
  uint8_t *cbuf, *gbuf;
};

static void rd_free(struct rd *r)
{
  libdeflate_free_decompressor(r->inflate);
  free(r->cbuf);
  free(r->gbuf);
}

/* Inflates the compressed grain g of x (whose table entry is sector s) into
 * out (x->grain bytes). */
static int vx_read_cgrain(struct img *im, const struct vx *x, uint64_t g, uint32_t s,
                          uint8_t *out, struct rd *r, struct error *e)
{
  const char *f = vx_label(im, x);
  uint64_t guest = x->start + g * x->grain, off = (uint64_t)s * VMDK_SECTOR;
  uint64_t maxc = 2 * x->grain; /* qemu's bound on a compressed grain */
  if (off >= x->flen)
    return error_set(e, ERR_FORMAT, "%s: grain table entry for guest offset %llu points to sector "
                     "%u, past the end of the file (size %llu)", f, (unsigned long long)guest, s,
                     (unsigned long long)x->flen);
  if (!r->cbuf && !(r->cbuf = malloc(maxc + VMDK_GRAIN_MARKER_LEN)))
    return error_set(e, ERR_NOMEM, "out of memory");
  uint64_t avail = x->flen - off, have, clen;
  const uint8_t *data;
  if (x->markers) {
    /* Most grains fit in a grain and a page; the buffer holds the most. */
    have = VMDK_GRAIN_MARKER_LEN + (x->grain + 4096 < maxc ? x->grain + 4096 : maxc);
    if (have > avail)
      have = avail;
    if (have < VMDK_GRAIN_MARKER_LEN)
      return error_set(e, ERR_FORMAT, "%s: grain marker for guest offset %llu at file offset %llu "
                       "is cut off by the end of the file", f, (unsigned long long)guest,
                       (unsigned long long)off);
    if (img_pread_file(x->fd, r->cbuf, have, x->base + off, f, e) < 0)
      return -1;
    clen = le32(r->cbuf + 8);
    if (clen == 0 || clen > maxc)
      return error_set(e, ERR_FORMAT, "%s: compressed grain for guest offset %llu at file offset "
                       "%llu has length %llu; must be 1 to %llu", f, (unsigned long long)guest,
                       (unsigned long long)off, (unsigned long long)clen,
                       (unsigned long long)maxc);
    if (clen > avail - VMDK_GRAIN_MARKER_LEN)
      return error_set(e, ERR_FORMAT, "%s: compressed grain for guest offset %llu at file offset "
                       "%llu has length %llu, past the end of the file (size %llu)", f,
                       (unsigned long long)guest, (unsigned long long)off,
                       (unsigned long long)clen, (unsigned long long)x->flen);
    if (VMDK_GRAIN_MARKER_LEN + clen > have &&
        img_pread_file(x->fd, r->cbuf + have, VMDK_GRAIN_MARKER_LEN + clen - have,
                       x->base + off + have, f, e) < 0)
      return -1;
    data = r->cbuf + VMDK_GRAIN_MARKER_LEN;
  } else {
    clen = avail < maxc ? avail : maxc;
    if (img_pread_file(x->fd, r->cbuf, clen, x->base + off, f, e) < 0)
      return -1;
    data = r->cbuf;
  }
  if (!r->inflate && !(r->inflate = libdeflate_alloc_decompressor()))
    return error_set(e, ERR_NOMEM, "out of memory");
  size_t in_used = 0, got = 0;
  enum libdeflate_result res = libdeflate_zlib_decompress_ex(r->inflate, data, clen, out,
                                                             x->grain, &in_used, &got);
  if (res == LIBDEFLATE_INSUFFICIENT_SPACE)
    return error_set(e, ERR_FORMAT, "%s: compressed grain for guest offset %llu at file offset "
                     "%llu inflates to more than the grain size %llu", f,
                     (unsigned long long)guest, (unsigned long long)off,
                     (unsigned long long)x->grain);
  if (res != LIBDEFLATE_SUCCESS)
    return error_set(e, ERR_FORMAT, "%s: compressed grain for guest offset %llu at file offset "
                     "%llu (%llu bytes) is not valid zlib data", f, (unsigned long long)guest,
                     (unsigned long long)off, (unsigned long long)clen);
  /* A full grain; only the extent's last grain may hold just what is left. */
  uint64_t left = x->len - g * x->grain;
  if (got != x->grain && !(left < x->grain && got == left))
    return error_set(e, ERR_FORMAT, "%s: compressed grain for guest offset %llu at file offset "
                     "%llu inflates to %zu bytes, not the grain size %llu", f,
                     (unsigned long long)guest, (unsigned long long)off, got,
                     (unsigned long long)x->grain);
  memset(out + got, 0, x->grain - got);
  return 0;
}

#define GT_BATCH 512

/* Reads [rel, rel+n) of sparse extent x into dst. */
static int vx_pread_sparse(struct img *im, const struct vx *x, uint8_t *dst, uint64_t rel,
                           uint64_t n, struct rd *r, struct error *e)
{
  uint32_t gte[GT_BATCH];
  uint64_t end = rel + n;
  while (rel < end) {
    uint64_t g = rel / x->grain;
    uint64_t in_gt = x->gtes - g % x->gtes;
    uint64_t k = (end - 1) / x->grain - g + 1;
    if (k > in_gt)
      k = in_gt;
    if (k > GT_BATCH)
      k = GT_BATCH;
    if (vx_read_gt(im, x, g, k, gte, e) < 0)
      return -1;
    for (uint64_t i = 0; i < k && rel < end; i++) {
      uint64_t in_grain = rel - (g + i) * x->grain;
      uint64_t span = x->grain - in_grain < end - rel ? x->grain - in_grain : end - rel;
      uint8_t *out = dst + (rel - (end - n));
      uint32_t s = gte[i];
      if (!s || (s == VMDK_GTE_ZEROED && x->zero_grain)) {
        memset(out, 0, span);
      } else if (x->compressed) {
        if (span == x->grain) {
          if (vx_read_cgrain(im, x, g + i, s, out, r, e) < 0)
            return -1;
        } else {
          if (!r->gbuf && !(r->gbuf = malloc(x->grain)))
            return error_set(e, ERR_NOMEM, "out of memory");
          if (vx_read_cgrain(im, x, g + i, s, r->gbuf, r, e) < 0)
            return -1;
          memcpy(out, r->gbuf + in_grain, span);
        }
      } else {
        uint64_t host = (uint64_t)s * VMDK_SECTOR;
        if (host >= x->flen)
          return error_set(e, ERR_FORMAT, "%s: grain table entry for guest offset %llu points to "
                           "sector %u, past the end of the file (size %llu)", vx_label(im, x),
                           (unsigned long long)(x->start + (g + i) * x->grain), s,
                           (unsigned long long)x->flen);
        /* Extend over following grains stored right after this one. */
        uint64_t host_end = host + in_grain + span;
        while (rel + span < end && i + 1 < k && gte[i + 1] > VMDK_GTE_ZEROED &&
               (uint64_t)gte[i + 1] * VMDK_SECTOR == host_end) {
          uint64_t more = x->grain < end - rel - span ? x->grain : end - rel - span;
          span += more;
          host_end += more;
          i++;
        }
        if (vx_read_file(im, x, out, span, host + in_grain, e) < 0)
          return -1;
      }
      rel += span;
    }
  }
  return 0;
}

/* --- the extent array ------------------------------------------------------ */

/* The extent holding guest offset off (extents tile [0, size)). */
static size_t vmdk_find(const struct vmdk *v, uint64_t off)
{
  size_t lo = 0, hi = v->nx;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (v->x[mid].start <= off)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

static int vmdk_pread(struct img *im, void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct vmdk *v = im->priv;
  uint8_t *buf = vbuf;
  struct rd r = { 0 };
  int ret = -1;
  uint64_t end = off + len;
  for (size_t i = vmdk_find(v, off); off < end && i < v->nx; i++) {
    const struct vx *x = &v->x[i];
    if (off >= x->start + x->len)
      continue;
    uint64_t rel = off - x->start;
    uint64_t n = x->len - rel < end - off ? x->len - rel : end - off;
    uint8_t *dst = buf + (len - (end - off));
    if (x->kind == VX_ZERO)
      memset(dst, 0, n);
    else if (x->kind == VX_FLAT) {
      if (vx_read_file(im, x, dst, n, x->flat_off + rel, e) < 0)
        goto out;
    } else if (vx_pread_sparse(im, x, dst, rel, n, &r, e) < 0) {
      goto out;
    }
    off += n;
  }
  ret = 0;
out:
  rd_free(&r);
  return ret;
}

/* The map of a flat extent: the holes of its file are holes. */
static int vx_extents_flat(struct img *im, const struct vx *x, uint64_t rel, uint64_t n,
                           struct extent_list *out, struct error *e)
{
  uint64_t end = rel + n;
  while (rel < end) {
    uint64_t foff = x->flat_off + rel; /* in the extent's file */
    if (foff >= x->flen)
      return extent_list_add(out, x->start + rel, end - rel, EXTENT_HOLE, e);
    off_t data = lseek(x->fd, (off_t)(x->base + foff), SEEK_DATA);
    uint64_t drel; /* where data starts, relative to the extent */
    if (data < 0 && errno == ENXIO)
      drel = end;
    else if (data < 0)
      return extent_list_add(out, x->start + rel, end - rel, EXTENT_DATA, e);
    else
      drel = (uint64_t)data - x->base - x->flat_off;
    if (drel > end)
      drel = end;
    if (drel > rel && extent_list_add(out, x->start + rel, drel - rel, EXTENT_HOLE, e) < 0)
      return -1;
    if (drel >= end)
      break;
    off_t hole = lseek(x->fd, data, SEEK_HOLE);
    if (hole < 0)
      return error_errno(e, "%s: SEEK_HOLE", vx_label(im, x));
    uint64_t hrel = (uint64_t)hole - x->base - x->flat_off;
    if (hrel > end)
      hrel = end;
    if (hrel <= drel) /* cannot happen: data at drel runs at least one byte */
      hrel = end;
    if (extent_list_add(out, x->start + drel, hrel - drel, EXTENT_DATA, e) < 0)
      return -1;
    rel = hrel;
  }
  return 0;
}

static int vx_extents_sparse(struct img *im, const struct vx *x, uint64_t rel, uint64_t n,
                             struct extent_list *out, struct error *e)
{
  uint32_t gte[GT_BATCH];
  uint64_t end = rel + n;
  while (rel < end) {
    uint64_t g = rel / x->grain;
    uint64_t gt = g / x->gtes;
    uint64_t in_gt = x->gtes - g % x->gtes;
    if (gt >= x->gd_n || !x->gd[gt]) {
      uint64_t stop = (gt + 1) * x->gt_cover;
      if (stop > end)
        stop = end;
      if (extent_list_add(out, x->start + rel, stop - rel, EXTENT_HOLE, e) < 0)
        return -1;
      rel = stop;
      continue;
    }
    uint64_t k = (end - 1) / x->grain - g + 1;
    if (k > in_gt)
      k = in_gt;
    if (k > GT_BATCH)
      k = GT_BATCH;
    if (vx_read_gt(im, x, g, k, gte, e) < 0)
      return -1;
    for (uint64_t i = 0; i < k && rel < end; i++) {
      uint64_t stop = (g + i + 1) * x->grain;
      if (stop > end)
        stop = end;
      enum extent_kind kind = !gte[i] ? EXTENT_HOLE
                              : gte[i] == VMDK_GTE_ZEROED && x->zero_grain ? EXTENT_ZERO
                              : EXTENT_DATA;
      if (extent_list_add(out, x->start + rel, stop - rel, kind, e) < 0)
        return -1;
      rel = stop;
    }
  }
  return 0;
}

static int vmdk_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                        struct error *e)
{
  struct vmdk *v = im->priv;
  uint64_t end = off + len;
  for (size_t i = vmdk_find(v, off); off < end && i < v->nx; i++) {
    const struct vx *x = &v->x[i];
    if (off >= x->start + x->len)
      continue;
    uint64_t rel = off - x->start;
    uint64_t n = x->len - rel < end - off ? x->len - rel : end - off;
    int r = x->kind == VX_ZERO ? extent_list_add(out, off, n, EXTENT_ZERO, e)
            : x->kind == VX_FLAT ? vx_extents_flat(im, x, rel, n, out, e)
                                 : vx_extents_sparse(im, x, rel, n, out, e);
    if (r < 0)
      return -1;
    off += n;
  }
  return 0;
}

/* --- opening ----------------------------------------------------------------- */

static struct vx *vmdk_add(struct vmdk *v, struct error *e)
{
  struct vx *nx = realloc(v->x, (v->nx + 1) * sizeof *nx);
  if (!nx) {
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  v->x = nx;
  struct vx *x = &v->x[v->nx++];
  memset(x, 0, sizeof *x);
  x->fd = -1;
  return x;
}

/* Takes createType, adapter, versions and CIDs from a parsed descriptor. */
static void vmdk_take_desc(struct vmdk *v, struct vdesc *d)
{
#define TAKE(f) if (d->f) { free(v->f); v->f = d->f; d->f = NULL; }
  TAKE(create_type);
  TAKE(adapter);
  TAKE(hwversion);
  TAKE(tools);
#undef TAKE
  if (d->has_cid) {
    v->cid = d->cid;
    v->has_cid = true;
  }
  v->parent_cid = d->has_parent_cid ? d->parent_cid : 0xffffffffu;
}

/* Opens the file an extent line names, refusing paths that leave the
 * descriptor's directory unless the user allowed them. */
static int vmdk_open_extent_file(struct img *im, const char *dir, const char *fname,
                                 bool allow, unsigned line, int *fd_out, struct error *e)
{
  if (!*fname)
    return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent file name is empty", im->path,
                     line);
  if (!allow) {
    if (fname[0] == '/')
      return error_set(e, ERR_REFUSED, "%s: extent path '%s' is absolute; refusing to open it "
                       "(pass --allow-extent-paths to allow extents outside the descriptor's "
                       "directory)", im->path, fname);
    for (const char *p = fname; *p;) {
      const char *s = strchr(p, '/');
      size_t l = s ? (size_t)(s - p) : strlen(p);
      if (l == 2 && p[0] == '.' && p[1] == '.')
        return error_set(e, ERR_REFUSED, "%s: extent path '%s' goes up a directory ('..'); "
                         "refusing to open it (pass --allow-extent-paths to allow extents "
                         "outside the descriptor's directory)", im->path, fname);
      p += l + (s != NULL);
    }
  }
  char path[PATH_MAX], real[PATH_MAX], rdir[PATH_MAX];
  if (fname[0] == '/') {
    if (snprintf(path, sizeof path, "%s", fname) >= (int)sizeof path)
      return error_set(e, ERR_FORMAT, "%s: extent path '%s' is too long", im->path, fname);
  } else if (snprintf(path, sizeof path, "%s/%s", dir, fname) >= (int)sizeof path) {
    return error_set(e, ERR_FORMAT, "%s: extent path '%s' is too long", im->path, fname);
  }
  if (!allow) {
    if (!realpath(dir, rdir))
      return error_errno(e, "%s: cannot resolve the descriptor's directory '%s'", im->path, dir);
    if (!realpath(path, real))
      return error_errno(e, "%s: extent file '%s'", im->path, fname);
    size_t dl = strlen(rdir);
    if (!(strncmp(real, rdir, dl) == 0 && (real[dl] == '/' || (dl == 1 && rdir[0] == '/'))))
      return error_set(e, ERR_REFUSED, "%s: extent path '%s' resolves to '%s', outside the "
                       "descriptor's directory '%s' (a symbolic link?); refusing to open it (pass "
                       "--allow-extent-paths to allow it)", im->path, fname, real, rdir);
    snprintf(path, sizeof path, "%s", real);
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error_errno(e, "%s: extent file '%s'", im->path, fname);
  struct stat st;
  if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
    int saved = errno;
    close(fd);
    if (S_ISDIR(st.st_mode))
      return error_set(e, ERR_FORMAT, "%s: extent file '%s' is a directory", im->path, fname);
    errno = saved;
    return error_errno(e, "%s: extent file '%s': stat", im->path, fname);
  }
  *fd_out = fd;
  return 0;
}

static int64_t vmdk_fd_size(int fd)
{
  struct stat st;
  if (fstat(fd, &st) < 0)
    return -1;
  if (S_ISBLK(st.st_mode)) {
    uint64_t size;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0)
      return -1;
    return (int64_t)size;
  }
  return st.st_size;
}

static const char *const vmdk_known_types[] = {
  "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
  "streamOptimized", "vmfs", "vmfsThin", "vmfsPreallocated", "vmfsEagerZeroedThick", "custom",
  NULL,
};

/* Builds the extents a text descriptor lists; dir is where its files are. */
static int vmdk_open_desc(struct img *im, struct vmdk *v, struct vdesc *d, const char *dir,
                          const struct open_opts *o, struct error *e)
{
  const char *ct = d->create_type;
  if (!ct)
    return error_set(e, ERR_FORMAT, "%s: VMDK descriptor has no createType", im->path);
  if (strcasecmp(ct, "seSparse") == 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK createType 'seSparse' (ESXi space-efficient "
                     "sparse); not supported", im->path);
  if (strcasecmp(ct, "vmfsSparse") == 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK createType 'vmfsSparse' (legacy COWD sparse "
                     "extents); not supported", im->path);
  if (strncasecmp(ct, "vmfsRaw", 7) == 0 || strncasecmp(ct, "vmfsPassthroughRaw", 18) == 0 ||
      strcasecmp(ct, "fullDevice") == 0 || strcasecmp(ct, "partitionedDevice") == 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK createType '%s' maps a raw device; not "
                     "supported", im->path, ct);
  bool known = false;
  for (size_t i = 0; vmdk_known_types[i]; i++)
    known |= strcasecmp(ct, vmdk_known_types[i]) == 0;
  if (!known)
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK createType '%s' is not supported", im->path, ct);
  if (d->parent_hint || (d->has_parent_cid && d->parent_cid != 0xffffffffu))
    return error_set(e, ERR_UNSUPPORTED, "%s: VMDK is a delta disk of parent '%s' (parentCID "
                     "%08x); not supported", im->path, d->parent_hint ? d->parent_hint : "?",
                     d->parent_cid);
  if (!d->nx)
    return error_set(e, ERR_FORMAT, "%s: VMDK descriptor lists no extents", im->path);
  uint64_t at = 0;
  for (size_t i = 0; i < d->nx; i++) {
    struct vd_extent *de = &d->x[i];
    if (de->access == ACC_NOACCESS)
      return error_set(e, ERR_UNSUPPORTED, "%s: descriptor line %u: extent with access NOACCESS; "
                       "not supported", im->path, de->line);
    if (de->sectors == 0 || de->sectors > (1ull << 53) || at + de->sectors * VMDK_SECTOR > (1ull << 62))
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent size %llu sectors is "
                       "absurd (the disk may be at most 2^62 bytes)", im->path, de->line,
                       (unsigned long long)de->sectors);
    const char *t = de->type;
    enum vx_kind kind;
    if (strcmp(t, "FLAT") == 0 || strcmp(t, "VMFS") == 0)
      kind = VX_FLAT;
    else if (strcmp(t, "SPARSE") == 0)
      kind = VX_SPARSE;
    else if (strcmp(t, "ZERO") == 0)
      kind = VX_ZERO;
    else if (strcmp(t, "VMFSSPARSE") == 0)
      return error_set(e, ERR_UNSUPPORTED, "%s: descriptor line %u: VMFSSPARSE extent (legacy "
                       "COWD); not supported", im->path, de->line);
    else if (strcmp(t, "SESPARSE") == 0)
      return error_set(e, ERR_UNSUPPORTED, "%s: descriptor line %u: SESPARSE extent (seSparse); "
                       "not supported", im->path, de->line);
    else if (strcmp(t, "VMFSRDM") == 0 || strcmp(t, "VMFSRAW") == 0)
      return error_set(e, ERR_UNSUPPORTED, "%s: descriptor line %u: %s extent (raw device "
                       "mapping); not supported", im->path, de->line, t);
    else
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: unknown extent type '%s'",
                       im->path, de->line, t);
    if (kind != VX_ZERO && !de->fname)
      return error_set(e, ERR_FORMAT, "%s: descriptor line %u: %s extent names no file", im->path,
                       de->line, t);
    struct vx *x = vmdk_add(v, e);
    if (!x || !(x->type = vmdk_strndup(t, strlen(t), e)))
      return -1;
    x->kind = kind;
    x->start = at;
    x->len = de->sectors * VMDK_SECTOR;
    if (kind != VX_ZERO) {
      if (!(x->name = vmdk_strndup(de->fname, strlen(de->fname), e)))
        return -1;
      if (vmdk_open_extent_file(im, dir, de->fname, o->allow_extent_paths, de->line, &x->fd, e) < 0)
        return -1;
      x->own_fd = true;
      int64_t fs = vmdk_fd_size(x->fd);
      if (fs < 0)
        return error_errno(e, "%s: extent file '%s': size", im->path, de->fname);
      x->flen = (uint64_t)fs;
    }
    if (kind == VX_FLAT) {
      if (de->offset > (1ull << 53))
        return error_set(e, ERR_FORMAT, "%s: descriptor line %u: FLAT extent offset %llu is "
                         "absurd", im->path, de->line, (unsigned long long)de->offset);
      x->flat_off = de->offset * VMDK_SECTOR;
      if (x->flat_off + x->len > x->flen)
        return error_set(e, ERR_FORMAT, "%s: descriptor line %u: %s extent '%s' needs bytes %llu "
                         "to %llu of its file, but the file is %llu bytes", im->path, de->line, t,
                         de->fname, (unsigned long long)x->flat_off,
                         (unsigned long long)(x->flat_off + x->len), (unsigned long long)x->flen);
    } else if (kind == VX_SPARSE) {
      uint64_t want = x->len;
      if (vx_open_sparse(im, x, o, NULL, e) < 0)
        return -1;
      if (x->len < want)
        return error_set(e, ERR_FORMAT, "%s: descriptor line %u: extent '%s' has %llu sectors, "
                         "but its sparse header's capacity is only %llu", im->path, de->line,
                         de->fname, (unsigned long long)(want / VMDK_SECTOR),
                         (unsigned long long)(x->len / VMDK_SECTOR));
      x->len = want;
    }
    at += x->len;
  }
  im->size = at;
  return 0;
}

/* Reads a whole descriptor file (at most VMDK_MAX_DESC_BYTES). */
static int vmdk_read_desc_file(struct img *im, int fd, uint64_t base, uint64_t len, char **out,
                               struct error *e)
{
  uint8_t probe[512];
  size_t pn = len < sizeof probe ? (size_t)len : sizeof probe;
  if (img_pread_file(fd, probe, pn, base, im->path, e) < 0)
    return -1;
  long bad = vdesc_binary_at((const char *)probe, pn, false);
  if (bad >= 0 || len == 0)
    return error_set(e, ERR_FORMAT, "%s: not a VMDK image: no sparse header magic, and not a text "
                     "descriptor (byte 0x%02x at offset %ld)", im->path,
                     bad >= 0 ? probe[bad] : 0, bad >= 0 ? bad : 0);
  if (len > VMDK_MAX_DESC_BYTES)
    return error_set(e, ERR_FORMAT, "%s: VMDK descriptor file is %llu bytes, over the %u-byte "
                     "limit for descriptors", im->path, (unsigned long long)len,
                     VMDK_MAX_DESC_BYTES);
  char *t = malloc((size_t)len + 1);
  if (!t)
    return error_set(e, ERR_NOMEM, "out of memory");
  if (img_pread_file(fd, t, (size_t)len, base, im->path, e) < 0) {
    free(t);
    return -1;
  }
  t[len] = 0;
  *out = t;
  return 0;
}

static char *vmdk_dirname(const char *path, struct error *e)
{
  const char *s = strrchr(path, '/');
  if (!s)
    return vmdk_strndup(".", 1, e);
  if (s == path)
    return vmdk_strndup("/", 1, e);
  return vmdk_strndup(path, (size_t)(s - path), e);
}

void vmdk_free(struct img *im)
{
  struct vmdk *v = im->priv;
  if (!v)
    return;
  for (size_t i = 0; i < v->nx; i++) {
    if (v->x[i].own_fd && v->x[i].fd >= 0)
      close(v->x[i].fd);
    free(v->x[i].gd);
    free(v->x[i].type);
    free(v->x[i].name);
  }
  free(v->x);
  free(v->create_type);
  free(v->adapter);
  free(v->hwversion);
  free(v->tools);
  free(v);
  im->priv = NULL;
}

int vmdk_open_at(struct img *im, int fd, uint64_t base, uint64_t len, bool in_archive,
                 const struct open_opts *o, struct error *e)
{
  struct vmdk *v = calloc(1, sizeof *v);
  struct vdesc d = { 0 };
  char *text = NULL, *dir = NULL;
  if (!v)
    return error_set(e, ERR_NOMEM, "out of memory");
  im->priv = v;
  v->parent_cid = 0xffffffffu;
  int ret = -1;
  uint8_t head[VMDK_SECTOR] = { 0 };
  size_t hn = len < sizeof head ? (size_t)len : sizeof head;
  if (hn && img_pread_file(fd, head, hn, base, im->path, e) < 0)
    goto out;
  if (hn >= 8 && (le32(head) == VMDK4_MAGIC || le32(head) == VMDK3_MAGIC ||
                  le64(head) == VMDK_SESPARSE_MAGIC)) {
    /* A sparse extent with its descriptor embedded: the file is the disk. */
    struct vx *x = vmdk_add(v, e);
    if (!x || !(x->type = vmdk_strndup("SPARSE", 6, e)) ||
        !(x->name = vmdk_strndup(vmdk_basename(im->path), strlen(vmdk_basename(im->path)), e)))
      goto out;
    x->kind = VX_SPARSE;
    x->is_image = true;
    x->fd = fd;
    x->base = base;
    x->flen = len;
    uint8_t h[VMDK_SECTOR];
    if (vx_open_sparse(im, x, o, h, e) < 0)
      goto out;
    uint64_t doff = le64(h + VH_DESC_OFFSET), dsize = le64(h + VH_DESC_SIZE);
    if (doff && dsize) {
      if (dsize > VMDK_MAX_DESC_BYTES / VMDK_SECTOR)
        dsize = VMDK_MAX_DESC_BYTES / VMDK_SECTOR; /* only the metadata is wanted */
      if (doff > len / VMDK_SECTOR || dsize * VMDK_SECTOR > len - doff * VMDK_SECTOR) {
        error_set(e, ERR_FORMAT, "%s: VMDK sparse header fields descriptorOffset %llu and "
                  "descriptorSize %llu (sectors) run past the end of the file (size %llu)",
                  im->path, (unsigned long long)le64(h + VH_DESC_OFFSET),
                  (unsigned long long)le64(h + VH_DESC_SIZE), (unsigned long long)len);
        goto out;
      }
      if (!(text = malloc(dsize * VMDK_SECTOR)))
        goto nomem;
      if (img_pread_file(fd, text, dsize * VMDK_SECTOR, base + doff * VMDK_SECTOR, im->path, e) < 0)
        goto out;
      if (vdesc_parse(im->path, text, dsize * VMDK_SECTOR, true, &d, e) < 0)
        goto out;
      if (le64(h + VH_CAPACITY) == 0 && d.nx && d.create_type) {
        /* A header with no capacity defers to its descriptor's extents. */
        if (in_archive) {
          error_set(e, ERR_UNSUPPORTED, "%s: VMDK descriptor names other extent files; only "
                    "self-contained VMDKs can be read from an archive", im->path);
          goto out;
        }
        v->nx = 0;
        free(x->gd);
        free(x->type);
        free(x->name);
        if (!(dir = vmdk_dirname(im->path, e)) || vmdk_open_desc(im, v, &d, dir, o, e) < 0)
          goto out;
        vmdk_take_desc(v, &d);
        ret = 0;
        goto out;
      }
      vmdk_take_desc(v, &d);
    }
    if (d.parent_hint) {
      error_set(e, ERR_UNSUPPORTED, "%s: VMDK is a delta disk of parent '%s'; not supported",
                im->path, d.parent_hint);
      goto out;
    }
    free(v->create_type);
    v->create_type = NULL;
    const char *ct = x->compressed ? "streamOptimized"
                     : d.create_type ? d.create_type : "monolithicSparse";
    if (!(v->create_type = vmdk_strndup(ct, strlen(ct), e)))
      goto out;
    im->size = x->len;
    ret = 0;
    goto out;
  }
  if (in_archive) {
    error_set(e, ERR_UNSUPPORTED, "%s: not a sparse VMDK (magic 0x%08x); only self-contained "
              "sparse VMDKs can be read from an archive", im->path, hn >= 4 ? le32(head) : 0);
    goto out;
  }
  if (vmdk_read_desc_file(im, fd, base, len, &text, e) < 0 ||
      vdesc_parse(im->path, text, (size_t)len, false, &d, e) < 0)
    goto out;
  if (!d.has_version && !d.create_type) {
    error_set(e, ERR_FORMAT, "%s: not a VMDK descriptor: no 'version=' or 'createType=' line",
              im->path);
    goto out;
  }
  if (!(dir = vmdk_dirname(im->path, e)) || vmdk_open_desc(im, v, &d, dir, o, e) < 0)
    goto out;
  vmdk_take_desc(v, &d);
  ret = 0;
  goto out;
nomem:
  error_set(e, ERR_NOMEM, "out of memory");
out:
  if (ret == 0) {
    const struct vx *x0 = &v->x[0];
    im->block_size = x0->kind == VX_SPARSE ? (uint32_t)x0->grain : VMDK_SECTOR;
    if (im->block_size & (im->block_size - 1))
      im->block_size = VMDK_SECTOR;
  }
  vdesc_free(&d);
  free(text);
  free(dir);
  return ret;
}

static int vmdk_open(struct img *im, const struct open_opts *o, struct error *e)
{
  int64_t size = vmdk_fd_size(im->fd);
  if (size < 0)
    return error_errno(e, "%s: stat", im->path);
  return vmdk_open_at(im, im->fd, 0, (uint64_t)size, false, o, e);
}

static int vmdk_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  struct vmdk *v = im->priv;
  struct json_object *fs = json_object_new_object();
  json_object_object_add(fs, "create-type", json_object_new_string(v->create_type ? v->create_type
                                                                                 : "unknown"));
  if (v->adapter)
    json_object_object_add(fs, "adapter-type", json_object_new_string(v->adapter));
  if (v->hwversion)
    json_object_object_add(fs, "hw-version", json_object_new_string(v->hwversion));
  if (v->tools)
    json_object_object_add(fs, "tools-version", json_object_new_string(v->tools));
  if (v->has_cid)
    json_object_object_add(fs, "cid", json_object_new_int64(v->cid));
  json_object_object_add(fs, "parent-cid", json_object_new_int64(v->parent_cid));
  struct json_object *xs = json_object_new_array();
  bool first_sparse = v->nx && v->x[0].kind == VX_SPARSE;
  for (size_t i = 0; i < v->nx; i++) {
    const struct vx *x = &v->x[i];
    struct json_object *j = json_object_new_object();
    if (x->name)
      json_object_object_add(j, "filename", json_object_new_string(x->name));
    json_object_object_add(j, "format", json_object_new_string(x->type));
    json_object_object_add(j, "virtual-size", json_object_new_int64((int64_t)x->len));
    if (x->kind == VX_SPARSE) {
      json_object_object_add(j, "cluster-size", json_object_new_int64((int64_t)x->grain));
      json_object_object_add(j, "compressed", json_object_new_boolean(x->compressed));
      json_object_object_add(j, "version", json_object_new_int((int)x->version));
      if (x->zero_grain)
        json_object_object_add(j, "zeroed-grain", json_object_new_boolean(1));
      if (x->used_rgd)
        json_object_object_add(j, "redundant-gd-used", json_object_new_boolean(1));
    } else if (x->kind == VX_FLAT) {
      json_object_object_add(j, "offset", json_object_new_int64((int64_t)x->flat_off));
    }
    json_object_array_add(xs, j);
  }
  json_object_object_add(fs, "extents", xs);
  if (first_sparse)
    json_object_object_add(obj, "cluster-size", json_object_new_int64((int64_t)v->x[0].grain));
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

static void vmdk_close(struct img *im)
{
  if (im->writable)
    vmdkw_close(im);
  else
    vmdk_free(im);
  im->priv = NULL;
}

const struct image_format format_vmdk = {
  .name = "vmdk",
  .description = "VMware virtual disk (sparse, stream-optimized, flat; descriptor files)",
  .flags = FMT_ORDERED_WRITES,
  .create_help = vmdkw_create_help,
  .probe = vmdk_probe,
  .open = vmdk_open,
  .pread = vmdk_pread,
  .extents = vmdk_extents,
  .describe = vmdk_describe,
  .create = vmdkw_create,
  .pwrite = vmdkw_pwrite,
  .encode = vmdkw_encode,
  .commit = vmdkw_commit,
  .finish = vmdkw_finish,
  .close = vmdk_close,
};
