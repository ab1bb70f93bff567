/* initramfs.c - lists an initramfs as a stream, in constant memory.
 *
 * An initramfs is one or more cpio archives ("newc", magic 070701/070702),
 * the first often uncompressed (early microcode), the main one compressed
 * (gzip, zstd, xz or lz4 legacy). We read the file through the filesystem
 * driver in 64 KiB pieces, decompress through a fixed buffer and parse cpio
 * headers as they pass, keeping only which driver modules we saw. Output is
 * bounded (INITRAMFS_MAX_OUTPUT) so an archive that inflates without end is
 * an error, not a hang. Format: the kernel's
 * Documentation/driver-api/early-userspace/buffer-format.rst. */
#include "kernel.h"

#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

const char *const initramfs_module_names[INITRAMFS_NDRIVERS] = {
  "nvme", "ena", "xen-blkfront", "xen-netfront",
};

#define RAW_BUF (64u << 10)
#define OUT_BUF (256u << 10)
#define LZ4_BLOCK (8u << 20) /* the kernel's lz4 legacy block size */

/* The file, read through the filesystem driver, with a window for peeking. */
struct raw {
  initramfs_read_fn read;
  void *ctx;
  uint64_t size, pos; /* pos: file offset of buf[len] */
  uint8_t buf[RAW_BUF];
  size_t at, len;
};

static int raw_fill(struct raw *r, struct error *e)
{
  if (r->at > 0) {
    memmove(r->buf, r->buf + r->at, r->len - r->at);
    r->len -= r->at;
    r->at = 0;
  }
  while (r->len < RAW_BUF && r->pos < r->size) {
    size_t want = RAW_BUF - r->len;
    if (want > r->size - r->pos)
      want = (size_t)(r->size - r->pos);
    ssize_t n = r->read(r->ctx, r->buf + r->len, want, r->pos, e);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    r->len += (size_t)n;
    r->pos += (uint64_t)n;
  }
  return 0;
}

/* Makes at least n bytes (or all that is left) available at r->buf + r->at,
 * refilling only when fewer are there; returns how many are available. */
static ssize_t raw_peek(struct raw *r, size_t n, struct error *e)
{
  if (r->len - r->at < n && raw_fill(r, e) < 0)
    return -1;
  return (ssize_t)(r->len - r->at);
}

enum codec { C_NONE, C_GZIP, C_ZSTD, C_XZ, C_LZ4 };

/* A byte source for the cpio parser: the raw file or a decompressor on it. */
struct src {
  struct raw *raw;
  enum codec codec;
  z_stream z;
  ZSTD_DStream *zs;
  lzma_stream xz;
  uint8_t *lz4_in, *lz4_out;
  uint8_t *out;
  size_t at, len;
  uint64_t total;
  bool end; /* the compressed stream ended */
  const char *path;
};

static int src_fill(struct src *s, struct error *e)
{
  s->at = s->len = 0;
  if (s->end)
    return 0;
  while (s->len == 0 && !s->end) {
    ssize_t avail = raw_peek(s->raw, s->codec == C_LZ4 ? 4 : 1, e);
    if (avail < 0)
      return -1;
    uint8_t *in = s->raw->buf + s->raw->at;
    size_t used = 0;
    if (avail == 0) {
      s->end = true;
      break;
    }
    switch (s->codec) {
    case C_GZIP: {
      s->z.next_in = in;
      s->z.avail_in = (uInt)avail;
      s->z.next_out = s->out;
      s->z.avail_out = OUT_BUF;
      int r = inflate(&s->z, Z_NO_FLUSH);
      if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
        return error_set(e, ERR_FORMAT, "%s: gzip data is corrupt (%s)", s->path,
                         s->z.msg ? s->z.msg : "inflate failed");
      used = (size_t)avail - s->z.avail_in;
      s->len = OUT_BUF - s->z.avail_out;
      if (r == Z_STREAM_END)
        s->end = true;
      else if (r == Z_BUF_ERROR && used == 0 && s->len == 0)
        return error_set(e, ERR_FORMAT, "%s: gzip data ends early", s->path);
      break;
    }
    case C_ZSTD: {
      ZSTD_inBuffer ib = { in, (size_t)avail, 0 };
      ZSTD_outBuffer ob = { s->out, OUT_BUF, 0 };
      size_t r = ZSTD_decompressStream(s->zs, &ob, &ib);
      if (ZSTD_isError(r))
        return error_set(e, ERR_FORMAT, "%s: zstd data is corrupt (%s)", s->path,
                         ZSTD_getErrorName(r));
      used = ib.pos;
      s->len = ob.pos;
      if (r == 0)
        s->end = true;
      else if (used == 0 && s->len == 0)
        return error_set(e, ERR_FORMAT, "%s: zstd data ends early", s->path);
      break;
    }
    case C_XZ: {
      s->xz.next_in = in;
      s->xz.avail_in = (size_t)avail;
      s->xz.next_out = s->out;
      s->xz.avail_out = OUT_BUF;
      lzma_ret r = lzma_code(&s->xz, LZMA_RUN);
      if (r != LZMA_OK && r != LZMA_STREAM_END)
        return error_set(e, ERR_FORMAT, "%s: xz data is corrupt (lzma error %d)", s->path, r);
      used = (size_t)avail - s->xz.avail_in;
      s->len = OUT_BUF - s->xz.avail_out;
      if (r == LZMA_STREAM_END)
        s->end = true;
      else if (used == 0 && s->len == 0)
        return error_set(e, ERR_FORMAT, "%s: xz data ends early", s->path);
      break;
    }
    case C_LZ4: {
      /* Legacy frames: a little-endian compressed size, then the block. */
      if (avail < 4) {
        s->end = true;
        break;
      }
      uint32_t csize = le32(in);
      if (csize == 0 || csize > (uint32_t)LZ4_compressBound(LZ4_BLOCK)) {
        s->end = true; /* the next archive, or padding */
        break;
      }
      s->raw->at += 4;
      for (size_t got = 0; got < csize;) {
        ssize_t a = raw_peek(s->raw, csize - got, e);
        if (a < 0)
          return -1;
        if (a == 0)
          return error_set(e, ERR_FORMAT, "%s: lz4 block of %u bytes runs past the end",
                           s->path, csize);
        size_t take = (size_t)a < csize - got ? (size_t)a : csize - got;
        memcpy(s->lz4_in + got, s->raw->buf + s->raw->at, take);
        s->raw->at += take;
        got += take;
      }
      int n = LZ4_decompress_safe((const char *)s->lz4_in, (char *)s->lz4_out, (int)csize,
                                  LZ4_BLOCK);
      if (n < 0)
        return error_set(e, ERR_FORMAT, "%s: lz4 block is corrupt", s->path);
      s->out = s->lz4_out; /* the block is handed out from its own buffer */
      s->len = (size_t)n;
      break;
    }
    case C_NONE:
      return error_set(e, ERR_FORMAT, "%s: internal: no codec", s->path);
    }
    s->raw->at += used;
  }
  s->total += s->len;
  if (s->total > INITRAMFS_MAX_OUTPUT)
    return error_set(e, ERR_FORMAT, "%s: initramfs decompresses to more than %llu bytes; "
                     "refusing to read further", s->path,
                     (unsigned long long)INITRAMFS_MAX_OUTPUT);
  return 0;
}

/* Reads exactly n bytes (dst may be NULL to skip); returns n, or 0 at a
 * clean end before the first byte, or -1. */
static ssize_t src_read(struct src *s, void *dst, uint64_t n, struct error *e)
{
  uint64_t done = 0;
  while (done < n) {
    if (s->at == s->len) {
      if (s->codec == C_NONE) {
        /* Uncompressed: read straight from the raw window. */
        ssize_t a = raw_peek(s->raw, 1, e);
        if (a < 0)
          return -1;
        if (a == 0)
          break;
        size_t take = (uint64_t)a < n - done ? (size_t)a : (size_t)(n - done);
        if (dst)
          memcpy((uint8_t *)dst + done, s->raw->buf + s->raw->at, take);
        s->raw->at += take;
        done += take;
        continue;
      }
      if (src_fill(s, e) < 0)
        return -1;
      if (s->len == 0)
        break;
    }
    size_t take = s->len - s->at < n - done ? s->len - s->at : (size_t)(n - done);
    if (dst)
      memcpy((uint8_t *)dst + done, s->out + s->at, take);
    s->at += take;
    done += take;
  }
  if (done == 0)
    return 0;
  if (done < n)
    return error_set(e, ERR_FORMAT, "%s: cpio archive ends in the middle of an entry", s->path);
  return (ssize_t)n;
}

/* How many bytes at p (of n) are zero, a word at a time. */
static size_t initramfs_zero_run(const uint8_t *p, size_t n)
{
  size_t z = 0;
  while (z + 8 <= n) {
    uint64_t w;
    memcpy(&w, p + z, 8);
    if (w)
      break;
    z += 8;
  }
  while (z < n && !p[z])
    z++;
  return z;
}

/* Skips the zero padding ahead of s in whole 4-byte groups, a buffer at a
 * time: exactly the groups cpio_parse would skip one by one, but without a
 * call per group (an archive that inflates to a gigabyte of zeros is all
 * padding). A group that straddles the end of the buffer is left to
 * src_read. Returns 0, or -1. */
static int initramfs_skip_zeros(struct src *s, struct error *e)
{
  for (;;) {
    const uint8_t *p;
    size_t avail;
    if (s->codec == C_NONE) {
      ssize_t a = raw_peek(s->raw, 4, e);
      if (a < 0)
        return -1;
      if (a == 0)
        return 0;
      p = s->raw->buf + s->raw->at;
      avail = (size_t)a;
    } else {
      if (!s->out || s->at >= s->len) /* nothing decoded yet: src_read refills */
        return 0;
      p = s->out + s->at;
      avail = s->len - s->at;
    }
    size_t whole = avail & ~(size_t)3;
    size_t skip = initramfs_zero_run(p, whole) & ~(size_t)3;
    if (s->codec == C_NONE)
      s->raw->at += skip;
    else
      s->at += skip;
    /* Stop at a non-zero byte, or where src_read must refill. */
    if (skip < whole || whole == 0 || s->codec != C_NONE)
      return 0;
  }
}

static uint64_t hex8(const char *p, bool *ok)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    char c = p[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0)
      *ok = false;
    v = v << 4 | (unsigned)(d < 0 ? 0 : d);
  }
  return v;
}

static void note_module(struct initramfs_info *info, const char *name)
{
  const char *base = strrchr(name, '/');
  base = base ? base + 1 : name;
  for (int i = 0; i < INITRAMFS_NDRIVERS; i++) {
    size_t n = strlen(initramfs_module_names[i]);
    if (strncmp(base, initramfs_module_names[i], n) == 0 && strncmp(base + n, ".ko", 3) == 0)
      info->has[i] = true;
  }
}

/* Parses cpio entries from s until a trailer (returns 1) or the end (0). */
static int cpio_parse(struct src *s, struct initramfs_info *info, bool stop_at_trailer,
                      struct error *e)
{
  char h[110], name[4096];
  for (;;) {
    /* Archives are padded with zeros; headers are 4-byte aligned. */
    if (initramfs_skip_zeros(s, e) < 0)
      return -1;
    ssize_t r = src_read(s, h, 4, e);
    if (r <= 0)
      return (int)r;
    if (memcmp(h, "\0\0\0\0", 4) == 0)
      continue;
    if (memcmp(h, "0707", 4) != 0) {
      if (stop_at_trailer)
        return error_set(e, ERR_FORMAT, "%s: not a cpio header where one was expected", s->path);
      return error_set(e, ERR_FORMAT, "%s: decompressed data is not a cpio archive", s->path);
    }
    if (src_read(s, h + 4, 106, e) <= 0)
      return error_set(e, ERR_FORMAT, "%s: truncated cpio header", s->path);
    if (memcmp(h, "070701", 6) != 0 && memcmp(h, "070702", 6) != 0)
      return error_set(e, ERR_FORMAT, "%s: cpio header magic %.6s is not newc", s->path, h);
    bool ok = true;
    uint64_t filesize = hex8(h + 54, &ok), namesize = hex8(h + 94, &ok);
    if (!ok || namesize == 0 || namesize > sizeof name)
      return error_set(e, ERR_FORMAT, "%s: cpio header has a bad field (namesize %llu)", s->path,
                       (unsigned long long)namesize);
    if (src_read(s, name, namesize, e) <= 0)
      return error_set(e, ERR_FORMAT, "%s: truncated cpio name", s->path);
    name[namesize - 1] = 0;
    uint64_t pad = (4 - (110 + namesize) % 4) % 4;
    if (pad && src_read(s, NULL, pad, e) <= 0)
      return -1;
    if (strcmp(name, "TRAILER!!!") == 0) {
      if (stop_at_trailer)
        return 1;
      continue;
    }
    info->files++;
    note_module(info, name);
    uint64_t skip = filesize + (4 - filesize % 4) % 4;
    if (skip && src_read(s, NULL, skip, e) <= 0)
      return error_set(e, ERR_FORMAT, "%s: cpio entry %s runs past the end", s->path, name);
  }
}

int initramfs_scan_stream(initramfs_read_fn read, void *ctx, uint64_t size, const char *path,
                          struct initramfs_info *out, struct error *e)
{
  *out = (struct initramfs_info){ .compression = "none" };
  struct raw *r = calloc(1, sizeof *r);
  if (!r)
    return error_set(e, ERR_NOMEM, "out of memory");
  *r = (struct raw){ .read = read, .ctx = ctx, .size = size };
  int ret = -1;
  for (int segment = 0; segment < 16; segment++) {
    /* Skip the zero padding between archives, in whole 4-byte groups. */
    for (;;) {
      ssize_t a = raw_peek(r, 4, e);
      if (a < 0)
        goto out;
      size_t whole = (size_t)a & ~(size_t)3;
      size_t skip = initramfs_zero_run(r->buf + r->at, whole) & ~(size_t)3;
      r->at += skip;
      if (skip < whole || whole == 0)
        break;
    }
    ssize_t a = raw_peek(r, 6, e);
    if (a < 0)
      goto out;
    if (a < 6)
      break;
    const uint8_t *m = r->buf + r->at;
    struct src s = { .raw = r, .path = path };
    if (memcmp(m, "0707", 4) == 0) {
      if (segment == 0)
        out->microcode_prefix = true;
      s.codec = C_NONE;
      int c = cpio_parse(&s, out, true, e);
      if (c < 0)
        goto out;
      if (c == 0)
        break;
      continue;
    }
    if (m[0] == 0x1f && m[1] == 0x8b) {
      s.codec = C_GZIP;
      if (inflateInit2(&s.z, 16 + MAX_WBITS) != Z_OK)
        goto nomem;
      strcpy(out->compression, "gzip");
    } else if (memcmp(m, "\x28\xb5\x2f\xfd", 4) == 0) {
      s.codec = C_ZSTD;
      if (!(s.zs = ZSTD_createDStream()))
        goto nomem;
      strcpy(out->compression, "zstd");
    } else if (memcmp(m, "\xfd" "7zXZ\0", 6) == 0) {
      s.codec = C_XZ;
      s.xz = (lzma_stream)LZMA_STREAM_INIT;
      if (lzma_stream_decoder(&s.xz, 256u << 20, 0) != LZMA_OK)
        goto nomem;
      strcpy(out->compression, "xz");
    } else if (memcmp(m, "\x02\x21\x4c\x18", 4) == 0) {
      s.codec = C_LZ4;
      r->at += 4;
      if (!(s.lz4_out = malloc(LZ4_BLOCK)) ||
          !(s.lz4_in = malloc((size_t)LZ4_compressBound(LZ4_BLOCK)))) {
        free(s.lz4_out);
        goto nomem;
      }
      strcpy(out->compression, "lz4");
    } else {
      if (segment == 0) {
        error_set(e, ERR_FORMAT, "%s: initramfs is neither cpio nor a compression we know "
                  "(starts %02x %02x %02x %02x)", path, m[0], m[1], m[2], m[3]);
        goto out;
      }
      break; /* trailing bytes after the archives */
    }
    uint8_t *buf = s.codec == C_LZ4 ? NULL : malloc(OUT_BUF);
    if (s.codec != C_LZ4 && !buf)
      goto nomem;
    s.out = buf;
    int c = cpio_parse(&s, out, false, e);
    if (s.codec == C_GZIP)
      inflateEnd(&s.z);
    ZSTD_freeDStream(s.zs);
    if (s.codec == C_XZ)
      lzma_end(&s.xz);
    free(s.lz4_in);
    free(s.lz4_out);
    free(buf);
    if (c < 0)
      goto out;
    if (!s.end)
      break;
  }
  ret = 0;
  goto out;
nomem:
  error_set(e, ERR_NOMEM, "out of memory");
out:
  free(r);
  return ret;
}

struct fs_file {
  struct fs *fs;
  uint64_t ino;
};

static ssize_t fs_file_read(void *ctx, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct fs_file *f = ctx;
  return f->fs->drv->read(f->fs, f->ino, buf, len, off, e);
}

int initramfs_scan(struct fs *fs, uint64_t ino, uint64_t size, struct initramfs_info *out,
                   struct error *e)
{
  struct fs_file f = { fs, ino };
  return initramfs_scan_stream(fs_file_read, &f, size, fs->disk->img->path, out, e);
}
