/* tar_write.c - the tar stream of a bundle: one member holding the image,
 * as GNU tar -S writes it (GNU format; an old-GNU sparse member 'S' when the
 * image has holes, a regular member otherwise; base-256 numbers past 8 GiB;
 * the archive padded to 10240-byte records). The stream is described as
 * pieces (header bytes, image ranges, zeros) so threads can fill any window
 * of it without building it. */
#include "bundle_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TW_RECORD 10240u    /* GNU tar's default blocking factor, 20 x 512 */
#define TW_HDR_SPARSE 4     /* sparse entries in the main header */
#define TW_EXT_SPARSE 21    /* ... in each extension block */

/* A 12-byte (or 8-byte) numeric field: octal while it fits, else GNU base-256. */
static void tw_num(uint8_t *f, size_t width, uint64_t v)
{
  uint64_t limit = 1ull << (3 * (width - 1));
  if (v < limit) {
    snprintf((char *)f, width, "%0*llo", (int)(width - 1), (unsigned long long)v);
    return;
  }
  memset(f, 0, width);
  f[0] = 0x80;
  for (size_t i = width - 1; i > 0 && v; i--, v >>= 8)
    f[i] = (uint8_t)v;
}

static void tw_checksum(uint8_t *h)
{
  unsigned sum = 0;
  memset(h + 148, ' ', 8);
  for (int i = 0; i < 512; i++)
    sum += h[i];
  snprintf((char *)h + 148, 8, "%06o", sum);
  h[155] = ' ';
}

static void tw_header(uint8_t *h, const char *name, char type, uint64_t size, uint64_t mtime)
{
  memset(h, 0, 512);
  memcpy(h, name, strnlen(name, 100));
  memcpy(h + 100, "0000644", 8);
  memcpy(h + 108, "0000000", 8);
  memcpy(h + 116, "0000000", 8);
  tw_num(h + 124, 12, size);
  tw_num(h + 136, 12, mtime);
  h[156] = (uint8_t)type;
  memcpy(h + 257, "ustar  ", 8); /* GNU magic and version */
  memcpy(h + 265, "root", 4);
  memcpy(h + 297, "root", 4);
}

static int tw_add(struct tar_stream *t, enum piece_kind kind, uint64_t len, uint64_t arg,
                  struct error *e)
{
  if (!len)
    return 0;
  if (t->npieces == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 64;
    struct piece *v = realloc(t->pieces, cap * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory for the tar layout");
    t->pieces = v;
    t->cap = cap;
  }
  t->pieces[t->npieces++] = (struct piece){ .pos = t->len, .len = len, .kind = kind, .arg = arg };
  t->len += len;
  return 0;
}

struct tw_map {
  struct extent *v;
  size_t n, cap;
  uint64_t data;
};

/* Collects the data runs of the map (zeros and holes both become holes). */
static int tw_collect(void *ctx, const struct extent *x, struct error *e)
{
  struct tw_map *m = ctx;
  if (x->kind != EXTENT_DATA)
    return 0;
  m->data += x->len;
  if (m->n && m->v[m->n - 1].off + m->v[m->n - 1].len == x->off) {
    m->v[m->n - 1].len += x->len;
    return 0;
  }
  if (m->n == m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 256;
    struct extent *v = realloc(m->v, cap * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory for the image map");
    m->v = v;
    m->cap = cap;
  }
  m->v[m->n++] = *x;
  return 0;
}

/* The sparse map GNU tar would write: the data runs, then a zero-length run
 * at the end when the file ends in a hole. */
static void tw_sparse_entry(uint8_t *at, const struct extent *x)
{
  tw_num(at, 12, x->off);
  tw_num(at + 12, 12, x->len);
}

int tar_stream_build(struct tar_stream *t, struct img *src, const char *name, uint64_t mtime,
                     struct error *e)
{
  struct tw_map m = { 0 };
  int ret = -1;
  memset(t, 0, sizeof *t);
  if (img_map_walk(src, tw_collect, &m, e) < 0)
    goto out;
  bool sparse = !(m.n == 1 && m.v[0].off == 0 && m.v[0].len == src->size) && src->size > 0;
  if (sparse && (m.n == 0 || m.v[m.n - 1].off + m.v[m.n - 1].len < src->size)) {
    struct extent end = { .off = src->size, .len = 0, .kind = EXTENT_DATA };
    if (m.n == m.cap) {
      struct extent *v = realloc(m.v, (m.cap + 1) * sizeof *v);
      if (!v) {
        error_set(e, ERR_NOMEM, "out of memory for the image map");
        goto out;
      }
      m.v = v;
      m.cap++;
    }
    m.v[m.n++] = end;
  }
  size_t name_len = strlen(name);
  size_t ext = sparse && m.n > TW_HDR_SPARSE ? (m.n - TW_HDR_SPARSE + TW_EXT_SPARSE - 1) / TW_EXT_SPARSE : 0;
  size_t long_name = name_len >= 100 ? 1 + (name_len + 1 + 511) / 512 : 0;
  t->hdr_len = 512 * (1 + ext + long_name);
  if (!(t->hdr = calloc(1, t->hdr_len))) {
    error_set(e, ERR_NOMEM, "out of memory for the tar header");
    goto out;
  }
  uint8_t *h = t->hdr;
  if (long_name) { /* GNU ././@LongLink record, then the name itself */
    tw_header(h, "././@LongLink", 'L', name_len + 1, 0);
    tw_checksum(h);
    memcpy(h + 512, name, name_len);
    h += 512 * long_name;
  }
  tw_header(h, name, sparse ? 'S' : '0', m.data, mtime);
  if (sparse) {
    for (size_t i = 0; i < m.n && i < TW_HDR_SPARSE; i++)
      tw_sparse_entry(h + 386 + 24 * i, &m.v[i]);
    h[482] = ext ? 1 : 0;
    tw_num(h + 483, 12, src->size);
  }
  tw_checksum(h);
  for (size_t b = 0; b < ext; b++) {
    uint8_t *x = h + 512 * (1 + b);
    for (size_t i = 0; i < TW_EXT_SPARSE; i++) {
      size_t k = TW_HDR_SPARSE + b * TW_EXT_SPARSE + i;
      if (k < m.n)
        tw_sparse_entry(x + 24 * i, &m.v[k]);
    }
    x[504] = b + 1 < ext ? 1 : 0;
  }
  if (tw_add(t, PIECE_MEM, t->hdr_len, 0, e) < 0)
    goto out;
  for (size_t i = 0; i < m.n; i++)
    if (tw_add(t, PIECE_IMAGE, m.v[i].len, m.v[i].off, e) < 0)
      goto out;
  uint64_t pad = (512 - t->len % 512) % 512;
  uint64_t end = t->len + pad + 1024;
  end += (TW_RECORD - end % TW_RECORD) % TW_RECORD;
  if (tw_add(t, PIECE_ZERO, end - t->len, 0, e) < 0)
    goto out;
  t->src = src;
  t->data = m.data;
  ret = 0;
out:
  free(m.v);
  if (ret < 0)
    tar_stream_free(t);
  return ret;
}

void tar_stream_free(struct tar_stream *t)
{
  free(t->hdr);
  free(t->pieces);
  memset(t, 0, sizeof *t);
}

int tar_stream_read(const struct tar_stream *t, uint8_t *buf, uint64_t pos, size_t len,
                    struct error *e)
{
  size_t lo = 0, hi = t->npieces;
  while (hi - lo > 1) { /* the last piece starting at or before pos */
    size_t mid = (lo + hi) / 2;
    if (t->pieces[mid].pos <= pos)
      lo = mid;
    else
      hi = mid;
  }
  for (size_t i = lo; len && i < t->npieces; i++) {
    const struct piece *p = &t->pieces[i];
    uint64_t in = pos - p->pos, n = p->len - in < len ? p->len - in : len;
    if (p->kind == PIECE_MEM)
      memcpy(buf, t->hdr + in, n);
    else if (p->kind == PIECE_ZERO)
      memset(buf, 0, n);
    else if (img_pread(t->src, buf, n, p->arg + in, e) < 0)
      return -1;
    buf += n;
    pos += n;
    len -= n;
  }
  return len ? error_set(e, ERR_IO, "tar stream read past its end") : 0;
}
