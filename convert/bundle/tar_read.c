/* tar_read.c - reads the tar stream of a bundle as it is decoded, in pieces
 * of any size: one file member (regular, or old-GNU sparse 'S' with its
 * extension blocks, as GNU tar -S writes), GNU long names ('L') and pax
 * headers ('x': path, size) before it, global pax headers skipped. Each byte
 * of the member goes to a callback with its offset in the image; holes are
 * never called for. Every header checksum is verified and the sparse map
 * checked (increasing, inside the file, adding up to the stored size). */
#include "bundle_int.h"

#include <stdlib.h>
#include <string.h>

#include "tar.h"

#define TR_MAX_MAP (1u << 22) /* sparse map entries */

static int tr_fail(struct tar_reader *r, struct error *e, int code, const char *what)
{
  return error_set(e, code, "%s: tar stream, byte %llu: %s", r->path,
                   (unsigned long long)r->pos, what);
}

static int tr_map_add(struct tar_reader *r, uint64_t off, uint64_t len, struct error *e)
{
  if (r->nmap == TR_MAX_MAP)
    return tr_fail(r, e, ERR_FORMAT, "sparse map has too many entries");
  if (r->nmap == r->capmap) {
    size_t cap = r->capmap ? 2 * r->capmap : 64;
    struct extent *v = realloc(r->map, cap * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory for the sparse map");
    r->map = v;
    r->capmap = cap;
  }
  r->map[r->nmap++] = (struct extent){ .off = off, .len = len, .kind = EXTENT_DATA };
  return 0;
}

/* Adds the entries of a header's sparse array (n entries at p); an entry
 * whose offset field is empty ends it. */
static int tr_map_block(struct tar_reader *r, const uint8_t *p, unsigned n, struct error *e)
{
  for (unsigned i = 0; i < n && p[24 * i]; i++) {
    uint64_t off, len;
    if (!tar_size(p + 24 * i, &off) || !tar_size(p + 24 * i + 12, &len))
      return tr_fail(r, e, ERR_FORMAT, "unreadable sparse map entry");
    if (tr_map_add(r, off, len, e) < 0)
      return -1;
  }
  return 0;
}

/* The member's data starts: check the map, tell the caller. */
static int tr_begin_data(struct tar_reader *r, struct error *e)
{
  uint64_t sum = 0, end = 0;
  for (size_t i = 0; i < r->nmap; i++) {
    const struct extent *x = &r->map[i];
    if (x->off < end || x->off > r->realsize || x->len > r->realsize - x->off)
      return tr_fail(r, e, ERR_FORMAT, "sparse map entry out of order or past the file's size");
    end = x->off + x->len;
    sum += x->len;
  }
  if (sum != r->stored)
    return tr_fail(r, e, ERR_FORMAT, "sparse map does not add up to the member's stored size");
  if (r->member(r->ctx, r->name, r->realsize, e) < 0)
    return -1;
  r->left = r->stored;
  r->seg = 0;
  r->seg_off = 0;
  r->skip = (TAR_BLOCK - r->stored % TAR_BLOCK) % TAR_BLOCK;
  r->state = r->left ? TR_DATA : TR_SKIP;
  return 0;
}

static int tr_member(struct tar_reader *r, const uint8_t *h, char type, uint64_t size,
                     struct error *e)
{
  if (r->seen_member)
    return tr_fail(r, e, ERR_FORMAT, "a second file in the archive (a bundle holds one image)");
  r->seen_member = true;
  if (!r->name) {
    char full[TAR_BLOCK];
    size_t plen = memcmp(h + 257, "ustar", 6) == 0 ? strnlen((const char *)h + 345, 155) : 0;
    snprintf(full, sizeof full, "%.*s%s%.*s", (int)plen, h + 345, plen ? "/" : "",
             (int)strnlen((const char *)h, 100), h);
    if (!(r->name = strdup(full)))
      return error_set(e, ERR_NOMEM, "out of memory");
  }
  r->stored = r->has_next_size ? r->next_size : size;
  if (type != 'S') {
    r->realsize = r->stored;
    if (r->stored && tr_map_add(r, 0, r->stored, e) < 0)
      return -1;
    return tr_begin_data(r, e);
  }
  if (!tar_size(h + 483, &r->realsize))
    return tr_fail(r, e, ERR_FORMAT, "unreadable sparse file size");
  if (tr_map_block(r, h + 386, 4, e) < 0)
    return -1;
  if (h[482]) {
    r->state = TR_SPARSE_EXT;
    return 0;
  }
  return tr_begin_data(r, e);
}

static int tr_header(struct tar_reader *r, const uint8_t *h, struct error *e)
{
  if (buf_is_zero(h, TAR_BLOCK)) {
    r->state = TR_END;
    return 0;
  }
  uint64_t size;
  if (!tar_header_ok(h))
    return tr_fail(r, e, ERR_FORMAT, "header checksum is wrong (a corrupt bundle, or the "
                   "wrong key)");
  if (!tar_size(h + 124, &size))
    return tr_fail(r, e, ERR_FORMAT, "unreadable size field");
  char type = (char)h[156];
  switch (type) {
  case 'L':
  case 'x':
    if (size > (type == 'L' ? TAR_MAX_NAME : TAR_MAX_PAX))
      return tr_fail(r, e, ERR_FORMAT, "long-name or pax header too large");
    free(r->ext);
    if (!(r->ext = malloc(size + 1)))
      return error_set(e, ERR_NOMEM, "out of memory");
    r->ext_type = type;
    r->ext_len = (size_t)size;
    r->ext_have = 0;
    r->skip = (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
    r->state = TR_EXT;
    return 0;
  case 'g':
    r->skip = size + (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
    r->state = TR_SKIP;
    return 0;
  case '0':
  case 0:
  case '7':
  case 'S':
    return tr_member(r, h, type, size, e);
  default:
    return tr_fail(r, e, ERR_UNSUPPORTED, "a member that is not a file (a bundle holds one "
                   "image file)");
  }
}

/* A long name or pax header has been read whole. */
static int tr_ext_done(struct tar_reader *r, struct error *e)
{
  r->ext[r->ext_len] = 0;
  if (r->ext_type == 'L') {
    free(r->name);
    if (!(r->name = strndup(r->ext, r->ext_len)))
      return error_set(e, ERR_NOMEM, "out of memory");
  } else {
    if (memmem(r->ext, r->ext_len, "GNU.sparse.", 11))
      return tr_fail(r, e, ERR_UNSUPPORTED, "PAX sparse member (made with tar --format=posix "
                     "-S); only GNU tar's own sparse format is read");
    if (tar_pax(r->ext, r->ext_len, &r->name, &r->next_size, &r->has_next_size, r->path, r->pos,
                e) < 0)
      return -1;
  }
  r->state = TR_SKIP;
  return 0;
}

/* Hands member bytes to the callback, split where the sparse map jumps. */
static int tr_data(struct tar_reader *r, const uint8_t *buf, size_t n, struct error *e)
{
  while (n) {
    const struct extent *x = &r->map[r->seg];
    uint64_t avail = x->len - r->seg_off;
    size_t k = avail < n ? (size_t)avail : n;
    if (k && r->data(r->ctx, x->off + r->seg_off, buf, k, e) < 0)
      return -1;
    r->seg_off += k;
    buf += k;
    n -= k;
    if (r->seg_off == x->len) {
      r->seg++;
      r->seg_off = 0;
    }
  }
  return 0;
}

int tar_reader_feed(struct tar_reader *r, const uint8_t *buf, size_t len, struct error *e)
{
  while (len) {
    size_t n;
    switch (r->state) {
    case TR_HEADER:
    case TR_SPARSE_EXT:
      n = TAR_BLOCK - r->have < len ? TAR_BLOCK - r->have : len;
      memcpy(r->blk + r->have, buf, n);
      r->have += n;
      if (r->have == TAR_BLOCK) {
        r->have = 0;
        if (r->state == TR_HEADER) {
          if (tr_header(r, r->blk, e) < 0)
            return -1;
        } else if (tr_map_block(r, r->blk, 21, e) < 0 ||
                   (!r->blk[504] && tr_begin_data(r, e) < 0)) {
          return -1;
        }
      }
      break;
    case TR_EXT:
      n = r->ext_len - r->ext_have < len ? r->ext_len - r->ext_have : len;
      memcpy(r->ext + r->ext_have, buf, n);
      r->ext_have += n;
      if (r->ext_have == r->ext_len && tr_ext_done(r, e) < 0)
        return -1;
      break;
    case TR_DATA:
      n = r->left < len ? (size_t)r->left : len;
      if (tr_data(r, buf, n, e) < 0)
        return -1;
      r->left -= n;
      if (!r->left)
        r->state = TR_SKIP;
      break;
    case TR_SKIP:
      n = r->skip < len ? (size_t)r->skip : len;
      r->skip -= n;
      if (!r->skip)
        r->state = TR_HEADER;
      break;
    default: /* TR_END: what follows the end-of-archive blocks is ignored, as GNU tar does */
      n = len;
      break;
    }
    buf += n;
    len -= n;
    r->pos += n;
  }
  return 0;
}

int tar_reader_end(struct tar_reader *r, struct error *e)
{
  if (!r->seen_member)
    return tr_fail(r, e, ERR_FORMAT, "no image file in the archive");
  if (r->state == TR_DATA || r->state == TR_SPARSE_EXT || r->state == TR_EXT ||
      (r->state == TR_HEADER && r->have))
    return tr_fail(r, e, ERR_FORMAT, "the archive ends inside a member");
  return 0;
}

void tar_reader_free(struct tar_reader *r)
{
  free(r->ext);
  free(r->name);
  free(r->map);
  r->ext = r->name = NULL;
  r->map = NULL;
}
