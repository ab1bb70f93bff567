/* vhd.c - Microsoft Virtual Hard Disk (qemu's "vpc", alias "vhd"): reader and
 * writer of fixed and dynamic disks, and reader of differencing disks when
 * the user allows backing files.
 *
 * Reader: the footer (the copy at offset 0 of a dynamic disk, or the last 512
 * bytes of a fixed one) and its checksum, the dynamic header and its checksum,
 * the BAT, and each block's sector bitmap: in a dynamic disk a sector whose
 * bit is clear reads as zeros, in a differencing disk it reads from the
 * parent. The virtual size follows qemu: CHS geometry for images from Virtual
 * PC and qemu ("vpc ", "qemu"), the footer's current size for the others and
 * whenever the geometry is the largest one. A differencing disk's parent is
 * only looked for inside the image's directory (parent locators W2ru, W2ku,
 * MacX, then the parent name), must be a VHD whose UUID matches, and loops
 * are refused through open_opts->chain.
 *
 * Writer: fixed (the data, then the footer) or dynamic (footer copy, header,
 * BAT, then blocks of 2 MiB, each a sector bitmap of all ones and its data, in
 * the order writes arrive; several threads may write at once: only the block
 * allocation is under a lock). finish() writes the BAT, the footers and the
 * header last. Sizes are rounded to CHS geometry as qemu-img does unless
 * force_size=on.
 * Spec: Microsoft "Virtual Hard Disk Image Format Specification" 1.0; qemu
 * block/vpc.c for the size rules and create layout. */
#include "image.h"
#include "vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VHD_TIMESTAMP_BASE 946684800 /* 2000-01-01 00:00:00 UTC */
#define VHD_LOCATOR_MAX (32u << 10)  /* longest parent locator we read */

struct vhd {
  uint32_t type;
  uint8_t footer[VHD_FOOTER_SIZE];
  uint64_t file_size;
  bool chs;             /* virtual size from the CHS geometry */
  char creator[5];
  /* dynamic and differencing */
  uint32_t block_size, bitmap_size, max_entries;
  uint64_t bat_offset;
  uint32_t *bat;        /* host-endian; VHD_BAT_UNUSED when not allocated */
  char *parent_name;    /* what the header or locator names, UTF-8 */
  struct img *parent;
  /* writer */
  pthread_mutex_t lock;
  bool lock_init, failed, finished;
  uint64_t next_free;   /* where the next block goes */
  uint64_t total_sectors;
};

static uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t skip)
{
  uint32_t sum = 0;
  for (size_t i = 0; i < len; i++)
    if (i < skip || i >= skip + 4)
      sum += buf[i];
  return ~sum;
}

static bool vhd_footer_valid(const uint8_t *f)
{
  return memcmp(f + VF_COOKIE, "conectix", 8) == 0 &&
         vhd_checksum(f, VHD_FOOTER_SIZE, VF_CHECKSUM) == be32(f + VF_CHECKSUM);
}

static int vhd_probe(const uint8_t *head, size_t len)
{
  return len >= 8 && memcmp(head, "conectix", 8) == 0 ? 100 : 0;
}

/* A fixed VHD is its data followed by a footer: bid on a valid footer only. */
static int vhd_probe_tail(const uint8_t *tail, size_t len)
{
  if (len < VHD_FOOTER_SIZE)
    return 0;
  const uint8_t *f = tail + len - VHD_FOOTER_SIZE;
  return vhd_footer_valid(f) && be32(f + VF_TYPE) == VHD_FIXED ? 100 : 0;
}

static void vhd_free(struct vhd *v)
{
  if (!v)
    return;
  free(v->bat);
  free(v->parent_name);
  img_close(v->parent);
  if (v->lock_init)
    pthread_mutex_destroy(&v->lock);
  free(v);
}

/* UTF-16 (big- or little-endian) to UTF-8; stops at a NUL. */
static char *vhd_utf16_to_utf8(const uint8_t *p, size_t len, bool big_endian)
{
  char *out = malloc(len / 2 * 3 + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i + 1 < len; i += 2) {
    uint32_t c = big_endian ? be16(p + i) : le16(p + i);
    if (c == 0)
      break;
    if (c >= 0xd800 && c < 0xdc00 && i + 3 < len) {
      uint32_t lo = big_endian ? be16(p + i + 2) : le16(p + i + 2);
      if (lo >= 0xdc00 && lo < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i += 2;
      }
    }
    if (c < 0x80) {
      out[o++] = (char)c;
    } else if (c < 0x800) {
      out[o++] = (char)(0xc0 | c >> 6);
      out[o++] = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out[o++] = (char)(0xe0 | c >> 12);
      out[o++] = (char)(0x80 | (c >> 6 & 0x3f));
      out[o++] = (char)(0x80 | (c & 0x3f));
    } else { /* only from a surrogate pair: the buffer has room (4 bytes for 4 in) */
      out[o++] = (char)(0xf0 | c >> 18);
      out[o++] = (char)(0x80 | (c >> 12 & 0x3f));
      out[o++] = (char)(0x80 | (c >> 6 & 0x3f));
      out[o++] = (char)(0x80 | (c & 0x3f));
    }
  }
  out[o] = 0;
  return out;
}

/* Turns a locator's text into a path to try: backslashes become slashes, a
 * Windows drive path keeps only its last component (it is looked for beside
 * the image), "file://" is dropped. */
static void vhd_locator_path(char *s, bool windows_abs)
{
  for (char *p = s; *p; p++)
    if (*p == '\\')
      *p = '/';
  if (strncmp(s, "file://", 7) == 0)
    memmove(s, s + 7, strlen(s + 7) + 1);
  bool drive = ((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z' && s[1] == ':');
  if (windows_abs || drive) {
    char *slash = strrchr(s, '/');
    if (slash)
      memmove(s, slash + 1, strlen(slash + 1) + 1);
    else if (drive)
      memmove(s, s + 2, strlen(s + 2) + 1);
  }
}

/* Opens the parent of a differencing disk, only inside the image's directory. */
static int vhd_open_parent(struct img *im, struct vhd *v, const uint8_t *hdr,
                           const struct open_opts *o, struct error *e)
{
  char *names[VD_NLOCATORS + 1] = { 0 };
  const char *kinds[VD_NLOCATORS + 1] = { 0 };
  size_t n = 0;
  int ret = -1;
  /* Candidates in order of preference: W2ru, W2ku, MacX, the parent name. */
  static const uint32_t order[] = { VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX };
  static const char *const order_names[] = { "W2ru", "W2ku", "MacX" };
  for (size_t k = 0; k < 3; k++)
    for (unsigned i = 0; i < VD_NLOCATORS; i++) {
      const uint8_t *l = hdr + VD_LOCATORS + i * VD_LOCATOR_SIZE;
      if (be32(l) != order[k])
        continue;
      uint32_t len = be32(l + 8);
      uint64_t off = be64(l + 16);
      if (len == 0)
        continue;
      if (len > VHD_LOCATOR_MAX || off > v->file_size || len > v->file_size - off) {
        error_set(e, ERR_FORMAT, "%s: VHD parent locator %u (%s) has %u bytes at offset %llu, "
                  "%s (file size %llu)", im->path, i, order_names[k], len,
                  (unsigned long long)off, len > VHD_LOCATOR_MAX ? "too long" : "past the end of the file",
                  (unsigned long long)v->file_size);
        goto out;
      }
      uint8_t *raw = malloc(len + 1);
      if (!raw) {
        error_set(e, ERR_NOMEM, "out of memory");
        goto out;
      }
      if (img_pread_file(im->fd, raw, len, off, im->path, e) < 0) {
        free(raw);
        goto out;
      }
      raw[len] = 0;
      char *s = order[k] == VHD_PLAT_MACX ? strndup((char *)raw, len)
                                           : vhd_utf16_to_utf8(raw, len, false);
      free(raw);
      if (!s) {
        error_set(e, ERR_NOMEM, "out of memory");
        goto out;
      }
      vhd_locator_path(s, order[k] == VHD_PLAT_W2KU);
      if (!*s) {
        free(s);
        continue;
      }
      kinds[n] = order_names[k];
      names[n++] = s;
    }
  if (v->parent_name && *v->parent_name) {
    char *s = strdup(v->parent_name);
    if (!s) {
      error_set(e, ERR_NOMEM, "out of memory");
      goto out;
    }
    vhd_locator_path(s, true);
    if (*s) {
      kinds[n] = "parent name";
      names[n++] = s;
    } else {
      free(s);
    }
  }
  const char *shown = n ? names[0] : v->parent_name ? v->parent_name : "";
  if (!o->allow_backing) {
    error_set(e, ERR_REFUSED, "%s: differencing VHD names a parent '%s'; refusing to open it "
              "(pass --allow-backing to follow backing files)", im->path, shown);
    goto out;
  }
  if (n == 0) {
    error_set(e, ERR_FORMAT, "%s: differencing VHD has no parent locator and no parent name",
              im->path);
    goto out;
  }
  char self[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
  if (!realpath(im->path, self)) {
    error_errno(e, "%s: realpath", im->path);
    goto out;
  }
  snprintf(dir, sizeof dir, "%s", self);
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    dir[1] = 0;
  else if (slash)
    *slash = 0;
  size_t dirlen = strlen(dir);
  bool found = false;
  size_t which = 0;
  for (size_t i = 0; i < n && !found; i++) {
    if (names[i][0] == '/')
      snprintf(path, sizeof path, "%s", names[i]);
    else if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
      continue;
    if (!realpath(path, real))
      continue;
    bool inside = strncmp(real, dir, dirlen) == 0 &&
                  (real[dirlen] == '/' || (dirlen == 1 && dir[0] == '/'));
    if (!inside) {
      error_set(e, ERR_REFUSED, "%s: differencing VHD parent '%s' (%s) resolves to '%s', "
                "outside the image's directory %s; refusing", im->path, names[i], kinds[i],
                real, dir);
      goto out;
    }
    found = true;
    which = i;
  }
  if (!found) {
    error_set(e, ERR_FORMAT, "%s: differencing VHD parent '%s' (%s) not found in %s",
              im->path, names[0], kinds[0], dir);
    goto out;
  }
  free(v->parent_name);
  v->parent_name = names[which];
  names[which] = NULL;
  unsigned depth = 1;
  struct open_chain me = { self, o->chain };
  for (const struct open_chain *c = &me; c; c = c->up, depth++)
    if (strcmp(c->path, real) == 0) {
      error_set(e, ERR_FORMAT, "%s: backing chain loop: parent '%s' is already in the chain",
                im->path, v->parent_name);
      goto out;
    }
  if (depth > IMG_MAX_BACKING_DEPTH) {
    error_set(e, ERR_FORMAT, "%s: backing chain deeper than %d images", im->path,
              IMG_MAX_BACKING_DEPTH);
    goto out;
  }
  struct open_opts po = *o;
  po.chain = &me;
  if (!(v->parent = img_open(real, "vpc", &po, e))) {
    error_prefix(e, "%s: parent '%s'", im->path, v->parent_name);
    goto out;
  }
  struct vhd *pv = v->parent->priv;
  if (memcmp(pv->footer + VF_UUID, hdr + VD_PARENT_UUID, 16) != 0) {
    error_set(e, ERR_FORMAT, "%s: differencing VHD parent '%s' has another UUID than the one "
              "the header names (the parent was changed or replaced)", im->path, v->parent_name);
    goto out;
  }
  ret = 0;
out:
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  return ret;
}

static int vhd_open(struct img *im, const struct open_opts *o, struct error *e)
{
  struct stat st;
  if (fstat(im->fd, &st) < 0)
    return error_errno(e, "%s: stat", im->path);
  struct vhd *v = calloc(1, sizeof *v);
  if (!v)
    return error_set(e, ERR_NOMEM, "out of memory");
  im->priv = v;
  v->file_size = (uint64_t)st.st_size;
  if (v->file_size < VHD_FOOTER_SIZE)
    return error_set(e, ERR_FORMAT, "%s: truncated: the file is %llu bytes, shorter than a VHD "
                     "footer", im->path, (unsigned long long)v->file_size);
  uint8_t head[VHD_FOOTER_SIZE], tail[VHD_FOOTER_SIZE];
  if (img_pread_file(im->fd, head, sizeof head, 0, im->path, e) < 0 ||
      img_pread_file(im->fd, tail, sizeof tail, v->file_size - VHD_FOOTER_SIZE, im->path, e) < 0)
    return -1;
  /* A dynamic disk starts with a copy of its footer; a fixed one has only the
   * footer at the end (its data may happen to start with a VHD of its own). */
  const uint8_t *f;
  bool head_ok = memcmp(head, "conectix", 8) == 0 && be32(head + VF_TYPE) != VHD_FIXED;
  if (head_ok && (vhd_footer_valid(head) || !vhd_footer_valid(tail)))
    f = head;
  else if (memcmp(tail, "conectix", 8) == 0)
    f = tail;
  else if (memcmp(head, "conectix", 8) == 0)
    f = head;
  else
    return error_set(e, ERR_FORMAT, "%s: not a VHD image (no \"conectix\" footer at the start or "
                     "in the last 512 bytes)", im->path);
  memcpy(v->footer, f, VHD_FOOTER_SIZE);
  uint32_t sum = vhd_checksum(v->footer, VHD_FOOTER_SIZE, VF_CHECKSUM);
  if (sum != be32(v->footer + VF_CHECKSUM))
    return error_set(e, ERR_FORMAT, "%s: VHD footer checksum is 0x%08x but the footer sums to "
                     "0x%08x (footer at offset %llu)", im->path, be32(v->footer + VF_CHECKSUM), sum,
                     f == head ? 0ull : (unsigned long long)(v->file_size - VHD_FOOTER_SIZE));
  v->type = be32(v->footer + VF_TYPE);
  if (v->type != VHD_FIXED && v->type != VHD_DYNAMIC && v->type != VHD_DIFFERENCING)
    return error_set(e, ERR_FORMAT, "%s: VHD footer field disk type is %u; only 2 (fixed), "
                     "3 (dynamic) and 4 (differencing) exist", im->path, v->type);
  memcpy(v->creator, v->footer + VF_CREATOR_APP, 4);
  for (int i = 0; i < 4; i++)
    if (v->creator[i] && (v->creator[i] < 0x20 || v->creator[i] > 0x7e))
      v->creator[i] = '?';

  /* qemu's rule (block/vpc.c): geometry unless the creator is known to use
   * the current size, or the geometry is the largest one. */
  const uint8_t *app = v->footer + VF_CREATOR_APP;
  v->chs = memcmp(app, "win ", 4) && memcmp(app, "qem2", 4) && memcmp(app, "d2v ", 4) &&
           memcmp(app, "CTXS", 4) && memcmp(app, "tap\0", 4);
  uint64_t sectors = (uint64_t)be16(v->footer + VF_CYLS) * v->footer[VF_HEADS] * v->footer[VF_SECS];
  if (!v->chs || sectors == VHD_MAX_GEOMETRY) {
    v->chs = false;
    sectors = be64(v->footer + VF_CURRENT_SIZE) / VHD_SECTOR;
  }
  if (sectors > VHD_MAX_SECTORS)
    return error_set(e, ERR_FORMAT, "%s: VHD virtual size is %llu sectors (%s); the largest is "
                     "%llu (2040 GiB)", im->path, (unsigned long long)sectors,
                     v->chs ? "CHS geometry" : "footer field current size",
                     (unsigned long long)VHD_MAX_SECTORS);
  im->size = sectors * VHD_SECTOR;
  im->block_size = VHD_SECTOR;
  if (v->type == VHD_FIXED)
    return 0;

  uint64_t hoff = be64(v->footer + VF_DATA_OFFSET);
  if (hoff > v->file_size || VHD_DYN_HEADER_SIZE > v->file_size - hoff)
    return error_set(e, ERR_FORMAT, "%s: VHD footer field data offset is %llu; a dynamic header "
                     "there runs past the end of the file (size %llu)", im->path,
                     (unsigned long long)hoff, (unsigned long long)v->file_size);
  uint8_t hdr[VHD_DYN_HEADER_SIZE];
  if (img_pread_file(im->fd, hdr, sizeof hdr, hoff, im->path, e) < 0)
    return -1;
  if (memcmp(hdr + VD_COOKIE, "cxsparse", 8) != 0)
    return error_set(e, ERR_FORMAT, "%s: VHD dynamic header at offset %llu has no \"cxsparse\" "
                     "cookie", im->path, (unsigned long long)hoff);
  sum = vhd_checksum(hdr, sizeof hdr, VD_CHECKSUM);
  if (sum != be32(hdr + VD_CHECKSUM))
    return error_set(e, ERR_FORMAT, "%s: VHD dynamic header checksum is 0x%08x but the header "
                     "sums to 0x%08x", im->path, be32(hdr + VD_CHECKSUM), sum);
  v->block_size = be32(hdr + VD_BLOCK_SIZE);
  if (v->block_size < VHD_SECTOR || (v->block_size & (v->block_size - 1)))
    return error_set(e, ERR_FORMAT, "%s: VHD dynamic header field block size is %u; must be a "
                     "power of two of at least 512", im->path, v->block_size);
  v->bitmap_size = ((v->block_size / VHD_SECTOR / 8) + VHD_SECTOR - 1) & ~(VHD_SECTOR - 1);
  v->max_entries = be32(hdr + VD_MAX_ENTRIES);
  uint64_t needed = (im->size + v->block_size - 1) / v->block_size;
  if (v->max_entries < needed)
    return error_set(e, ERR_FORMAT, "%s: VHD dynamic header field max table entries is %u; a "
                     "%llu-byte disk of %u-byte blocks needs %llu", im->path, v->max_entries,
                     (unsigned long long)im->size, v->block_size, (unsigned long long)needed);
  uint64_t cap = o->max_table_bytes ? o->max_table_bytes : IMG_DEFAULT_TABLE_CAP;
  uint64_t bat_bytes = (uint64_t)v->max_entries * 4;
  if (bat_bytes > cap)
    return error_set(e, ERR_FORMAT, "%s: VHD dynamic header field max table entries is %u (a "
                     "%llu-byte BAT), over the %llu-byte limit for tables", im->path,
                     v->max_entries, (unsigned long long)bat_bytes, (unsigned long long)cap);
  v->bat_offset = be64(hdr + VD_TABLE_OFFSET);
  if (v->bat_offset > v->file_size || bat_bytes > v->file_size - v->bat_offset)
    return error_set(e, ERR_FORMAT, "%s: VHD BAT at offset %llu (%u entries, %llu bytes) runs "
                     "past the end of the file (size %llu)", im->path,
                     (unsigned long long)v->bat_offset, v->max_entries,
                     (unsigned long long)bat_bytes, (unsigned long long)v->file_size);
  if (!(v->bat = malloc(bat_bytes ? bat_bytes : 1)))
    return error_set(e, ERR_NOMEM, "out of memory for a %llu-byte VHD BAT",
                     (unsigned long long)bat_bytes);
  if (bat_bytes && img_pread_file(im->fd, v->bat, bat_bytes, v->bat_offset, im->path, e) < 0)
    return -1;
  for (uint32_t i = 0; i < v->max_entries; i++) {
    v->bat[i] = be32((const uint8_t *)&v->bat[i]);
    if (v->bat[i] == VHD_BAT_UNUSED)
      continue;
    uint64_t at = (uint64_t)v->bat[i] * VHD_SECTOR;
    if (at > v->file_size || (uint64_t)v->bitmap_size + v->block_size > v->file_size - at)
      return error_set(e, ERR_FORMAT, "%s: VHD BAT entry %u points to a block at offset %llu that "
                       "runs past the end of the file (size %llu; truncated?)", im->path, i,
                       (unsigned long long)at, (unsigned long long)v->file_size);
  }
  im->block_size = v->block_size;
  if (v->type == VHD_DIFFERENCING) {
    if (!(v->parent_name = vhd_utf16_to_utf8(hdr + VD_PARENT_NAME, VD_PARENT_NAME_LEN, true)))
      return error_set(e, ERR_NOMEM, "out of memory");
    if (vhd_open_parent(im, v, hdr, o, e) < 0)
      return -1;
  }
  return 0;
}

/* Bit s of a sector bitmap (most significant bit first). */
static inline bool vhd_bit(const uint8_t *bm, uint32_t s) { return bm[s >> 3] >> (7 - (s & 7)) & 1; }

/* Reads the part of the parent (or zeros) for guest range [off, off+len). */
static int vhd_read_below(struct vhd *v, uint8_t *buf, uint64_t len, uint64_t off, struct error *e)
{
  uint64_t from = 0;
  if (v->parent && off < v->parent->size) {
    from = v->parent->size - off < len ? v->parent->size - off : len;
    if (img_pread(v->parent, buf, from, off, e) < 0)
      return -1;
  }
  memset(buf + from, 0, len - from);
  return 0;
}

/* Reads the file, with zeros past its end (as qemu reads a fixed disk). */
static int vhd_read_file(struct img *im, struct vhd *v, uint8_t *buf, uint64_t len, uint64_t off,
                         struct error *e)
{
  uint64_t avail = off < v->file_size ? v->file_size - off : 0;
  uint64_t n = len < avail ? len : avail;
  if (n && img_pread_file(im->fd, buf, n, off, im->path, e) < 0)
    return -1;
  memset(buf + n, 0, len - n);
  return 0;
}

/* The runs of one block: calls fn for each stretch of [in, in+n) that is
 * present (bit set) or not, in order. */
struct vhd_run {
  uint64_t off, len; /* guest */
  uint64_t host;     /* file offset when present */
  bool present;
};

static int vhd_block_runs(struct img *im, struct vhd *v, uint64_t off, uint64_t len,
                          struct vhd_run *runs, size_t *nruns, uint8_t *bm, struct error *e)
{
  uint64_t blk = off / v->block_size, in = off % v->block_size;
  uint64_t n = v->block_size - in < len ? v->block_size - in : len;
  *nruns = 0;
  if (blk >= v->max_entries || v->bat[blk] == VHD_BAT_UNUSED) {
    runs[(*nruns)++] = (struct vhd_run){ off, n, 0, false };
    return 0;
  }
  uint64_t base = (uint64_t)v->bat[blk] * VHD_SECTOR;
  uint32_t s0 = (uint32_t)(in / VHD_SECTOR), s1 = (uint32_t)((in + n - 1) / VHD_SECTOR);
  uint32_t b0 = s0 / 8, b1 = s1 / 8;
  if (img_pread_file(im->fd, bm + b0, b1 - b0 + 1, base + b0, im->path, e) < 0)
    return -1;
  uint64_t at = off, end = off + n;
  uint32_t s = s0;
  while (at < end) {
    bool p = vhd_bit(bm, s);
    uint32_t t = s + 1;
    while (t <= s1 && vhd_bit(bm, t) == p)
      t++;
    uint64_t stop = (blk * v->block_size) + (uint64_t)t * VHD_SECTOR;
    if (stop > end)
      stop = end;
    runs[(*nruns)++] = (struct vhd_run){ at, stop - at,
                                         base + v->bitmap_size + (at - blk * v->block_size), p };
    at = stop;
    s = t;
  }
  return 0;
}

static int vhd_pread(struct img *im, void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct vhd *v = im->priv;
  uint8_t *buf = vbuf;
  if (v->type == VHD_FIXED)
    return vhd_read_file(im, v, buf, len, off, e);
  uint8_t *bm = malloc(v->bitmap_size);
  /* At most one run per sector of a block, in the worst case of alternating bits. */
  size_t maxruns = v->block_size / VHD_SECTOR + 1;
  struct vhd_run *runs = malloc(maxruns * sizeof *runs);
  int ret = -1;
  if (!bm || !runs) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  uint64_t end = off + len, start = off;
  while (off < end) {
    size_t nr;
    if (vhd_block_runs(im, v, off, end - off, runs, &nr, bm, e) < 0)
      goto out;
    for (size_t i = 0; i < nr; i++) {
      uint8_t *dst = buf + (runs[i].off - start);
      if (runs[i].present) {
        if (img_pread_file(im->fd, dst, runs[i].len, runs[i].host, im->path, e) < 0)
          goto out;
      } else if (vhd_read_below(v, dst, runs[i].len, runs[i].off, e) < 0) {
        goto out;
      }
      off = runs[i].off + runs[i].len;
    }
  }
  ret = 0;
out:
  free(bm);
  free(runs);
  return ret;
}

/* The parent's map of [off, off+len) (holes past its end), appended to out.
 * It goes through a list of its own: img_extents checks that what it adds
 * tiles the range, and the first extent could merge into out's last one. */
static int vhd_parent_extents(struct vhd *v, uint64_t off, uint64_t len, struct extent_list *out,
                              struct error *e)
{
  if (!v->parent || off >= v->parent->size)
    return extent_list_add(out, off, len, EXTENT_HOLE, e);
  uint64_t in = v->parent->size - off < len ? v->parent->size - off : len;
  struct extent_list pm = { 0 };
  int ret = img_extents(v->parent, off, in, &pm, e);
  for (size_t i = 0; ret == 0 && i < pm.n; i++)
    ret = extent_list_add(out, pm.v[i].off, pm.v[i].len, pm.v[i].kind, e);
  extent_list_free(&pm);
  if (ret == 0)
    ret = extent_list_add(out, off + in, len - in, EXTENT_HOLE, e);
  return ret;
}

static int vhd_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                       struct error *e)
{
  struct vhd *v = im->priv;
  uint64_t end = off + len;
  if (v->type == VHD_FIXED) {
    /* Sparse stretches of the file read as zeros; past its end too. */
    while (off < end) {
      uint64_t data = end, stop = end;
      if (off < v->file_size) {
        off_t d = lseek(im->fd, (off_t)off, SEEK_DATA);
        if (d < 0 && errno == ENXIO)
          d = (off_t)v->file_size;
        else if (d < 0) /* no SEEK_DATA: all data */
          d = (off_t)off;
        data = (uint64_t)d < end ? (uint64_t)d : end;
        if (data < end && data < v->file_size) {
          off_t h = lseek(im->fd, d, SEEK_HOLE);
          if (h < 0)
            h = (off_t)v->file_size;
          stop = (uint64_t)h < end ? (uint64_t)h : end;
        }
      }
      if (extent_list_add(out, off, data - off, EXTENT_ZERO, e) < 0)
        return -1;
      if (data >= end)
        break;
      if (data >= v->file_size) {
        if (extent_list_add(out, data, end - data, EXTENT_ZERO, e) < 0)
          return -1;
        break;
      }
      if (extent_list_add(out, data, stop - data, EXTENT_DATA, e) < 0)
        return -1;
      off = stop;
    }
    return 0;
  }
  uint8_t *bm = malloc(v->bitmap_size);
  size_t maxruns = v->block_size / VHD_SECTOR + 1;
  struct vhd_run *runs = malloc(maxruns * sizeof *runs);
  int ret = -1;
  if (!bm || !runs) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  while (off < end) {
    uint64_t blk = off / v->block_size;
    if (blk >= v->max_entries || v->bat[blk] == VHD_BAT_UNUSED) {
      /* Unallocated blocks in a row: one hole (or the parent's map). */
      uint64_t stop = off;
      while (stop < end && (blk >= v->max_entries || v->bat[blk] == VHD_BAT_UNUSED)) {
        stop = (blk + 1) * v->block_size;
        blk++;
      }
      if (stop > end)
        stop = end;
      if (vhd_parent_extents(v, off, stop - off, out, e) < 0)
        goto out;
      off = stop;
      continue;
    }
    size_t nr;
    if (vhd_block_runs(im, v, off, end - off, runs, &nr, bm, e) < 0)
      goto out;
    for (size_t i = 0; i < nr; i++) {
      struct vhd_run *r = &runs[i];
      if (r->present) {
        if (extent_list_add(out, r->off, r->len, EXTENT_DATA, e) < 0)
          goto out;
      } else if (vhd_parent_extents(v, r->off, r->len, out, e) < 0) {
        goto out;
      }
      off = r->off + r->len;
    }
  }
  ret = 0;
out:
  free(bm);
  free(runs);
  return ret;
}

static int vhd_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  struct vhd *v = im->priv;
  if (v->type != VHD_FIXED)
    json_object_object_add(obj, "cluster-size", json_object_new_int64(v->block_size));
  if (v->parent_name)
    json_object_object_add(obj, "backing-filename", json_object_new_string(v->parent_name));
  struct json_object *fs = json_object_new_object();
  json_object_object_add(fs, "subformat", json_object_new_string(
                             v->type == VHD_FIXED ? "fixed" : v->type == VHD_DYNAMIC ? "dynamic"
                                                                                      : "differencing"));
  if (v->type != VHD_FIXED)
    json_object_object_add(fs, "block-size", json_object_new_int64(v->block_size));
  json_object_object_add(fs, "logical-sector-size", json_object_new_int(VHD_SECTOR));
  json_object_object_add(fs, "creator-app", json_object_new_string(v->creator));
  json_object_object_add(fs, "size-from", json_object_new_string(v->chs ? "chs" : "current-size"));
  json_object_object_add(fs, "current-size",
                         json_object_new_int64((int64_t)be64(v->footer + VF_CURRENT_SIZE)));
  char geo[48];
  snprintf(geo, sizeof geo, "%u/%u/%u", be16(v->footer + VF_CYLS), v->footer[VF_HEADS],
           v->footer[VF_SECS]);
  json_object_object_add(fs, "chs", json_object_new_string(geo));
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

/* ---- writer ---- */

static const char vhd_create_help[] =
  "subformat=dynamic|fixed  dynamic (default, 2 MiB blocks) or fixed (the data then a footer)\n"
  "force_size=on|off     keep the exact size (creator 'qem2') instead of rounding it up to\n"
  "                      CHS geometry as Virtual PC needs (default off, like qemu-img)\n";

/* CHS geometry of the VHD spec (appendix), with qemu's 255-head extension. */
static void vhd_geometry(uint64_t total_sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs)
{
  uint32_t cth;
  if (total_sectors > VHD_MAX_GEOMETRY)
    total_sectors = VHD_MAX_GEOMETRY;
  if (total_sectors >= 65535ull * 16 * 63) {
    *secs = 255;
    *heads = 16;
    cth = (uint32_t)(total_sectors / *secs);
  } else {
    *secs = 17;
    cth = (uint32_t)(total_sectors / *secs);
    *heads = (uint8_t)((cth + 1023) / 1024);
    if (*heads < 4)
      *heads = 4;
    if (cth >= (uint32_t)*heads * 1024 || *heads > 16) {
      *secs = 31;
      *heads = 16;
      cth = (uint32_t)(total_sectors / *secs);
    }
    if (cth >= (uint32_t)*heads * 1024) {
      *secs = 63;
      *heads = 16;
      cth = (uint32_t)(total_sectors / *secs);
    }
  }
  *cyls = (uint16_t)(cth / *heads);
}

static void vhd_random(uint8_t *p, size_t n)
{
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ssize_t got = fd >= 0 ? read(fd, p, n) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)n) {
    uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    for (size_t i = 0; i < n; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p[i] = (uint8_t)(x >> 56);
    }
  }
  if (n == 16) { /* a version 4 UUID */
    p[6] = (uint8_t)((p[6] & 0x0f) | 0x40);
    p[8] = (uint8_t)((p[8] & 0x3f) | 0x80);
  }
}

static int vhd_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e)
{
  const char *sub = create_opts_get(o, "subformat");
  const char *force = create_opts_get(o, "force_size");
  uint32_t type;
  if (!sub || strcmp(sub, "dynamic") == 0)
    type = VHD_DYNAMIC;
  else if (strcmp(sub, "fixed") == 0)
    type = VHD_FIXED;
  else
    return error_set(e, ERR_USAGE, "vpc option subformat=%s: must be dynamic or fixed", sub);
  bool force_size = false;
  if (force) {
    if (!strcmp(force, "on") || !strcmp(force, "yes") || !strcmp(force, "true") || !strcmp(force, "1"))
      force_size = true;
    else if (strcmp(force, "off") && strcmp(force, "no") && strcmp(force, "false") && strcmp(force, "0"))
      return error_set(e, ERR_USAGE, "vpc option force_size=%s: must be on or off", force);
  }
  if (o->compress)
    return error_set(e, ERR_USAGE, "vpc images cannot be compressed (-c)");
  if (size > VHD_MAX_SECTORS * VHD_SECTOR)
    return error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for VHD; the largest is "
                     "2040 GiB", im->path, (unsigned long long)size);
  /* As qemu-img: round up to a sector, then (unless force_size) up to a CHS geometry. */
  uint64_t total = (size + VHD_SECTOR - 1) / VHD_SECTOR;
  uint16_t cyls = 0;
  uint8_t heads = 0, secs = 0;
  if (force_size) {
    cyls = VHD_CHS_MAX_C;
    heads = VHD_CHS_MAX_H;
    secs = VHD_CHS_MAX_S;
  } else {
    uint64_t want = total < VHD_MAX_GEOMETRY ? total : VHD_MAX_GEOMETRY;
    for (uint64_t i = 0; want > (uint64_t)cyls * heads * secs; i++)
      vhd_geometry(want + i, &cyls, &heads, &secs);
    if ((uint64_t)cyls * heads * secs != VHD_MAX_GEOMETRY)
      total = (uint64_t)cyls * heads * secs;
  }
  if (total > VHD_MAX_SECTORS)
    return error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for VHD; the largest is "
                     "2040 GiB", im->path, (unsigned long long)size);

  struct vhd *v = calloc(1, sizeof *v);
  if (!v)
    return error_set(e, ERR_NOMEM, "out of memory");
  if (pthread_mutex_init(&v->lock, NULL) != 0) {
    free(v);
    return error_set(e, ERR_NOMEM, "%s: cannot create a mutex", im->path);
  }
  v->lock_init = true;
  im->priv = v;
  v->type = type;
  v->total_sectors = total;
  im->size = total * VHD_SECTOR;

  uint8_t *f = v->footer;
  memcpy(f + VF_COOKIE, "conectix", 8);
  put_be32(f + VF_FEATURES, 2);
  put_be32(f + VF_VERSION, 0x00010000);
  put_be64(f + VF_DATA_OFFSET, type == VHD_DYNAMIC ? VHD_FOOTER_SIZE : UINT64_MAX);
  put_be32(f + VF_TIMESTAMP, (uint32_t)(time(NULL) - VHD_TIMESTAMP_BASE));
  memcpy(f + VF_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
  put_be32(f + VF_CREATOR_VERSION, 0x00050003);
  memcpy(f + VF_CREATOR_OS, "Wi2k", 4);
  put_be64(f + VF_ORIG_SIZE, im->size);
  put_be64(f + VF_CURRENT_SIZE, im->size);
  put_be16(f + VF_CYLS, cyls);
  f[VF_HEADS] = heads;
  f[VF_SECS] = secs;
  put_be32(f + VF_TYPE, type);
  vhd_random(f + VF_UUID, 16);
  put_be32(f + VF_CHECKSUM, vhd_checksum(f, VHD_FOOTER_SIZE, VF_CHECKSUM));

  if (type == VHD_FIXED) {
    im->block_size = VHD_SECTOR;
    if (ftruncate(im->fd, (off_t)(im->size + VHD_FOOTER_SIZE)) < 0)
      return error_errno(e, "%s: set size to %llu", im->path,
                         (unsigned long long)(im->size + VHD_FOOTER_SIZE));
    return 0;
  }
  v->block_size = VHD_DEFAULT_BLOCK;
  v->bitmap_size = VHD_SECTOR;
  uint64_t entries = (total + v->block_size / VHD_SECTOR - 1) / (v->block_size / VHD_SECTOR);
  v->max_entries = (uint32_t)entries;
  v->bat_offset = VHD_FOOTER_SIZE + VHD_DYN_HEADER_SIZE;
  if (!(v->bat = malloc(entries ? entries * 4 : 4)))
    return error_set(e, ERR_NOMEM, "out of memory for a %llu-entry VHD BAT",
                     (unsigned long long)entries);
  memset(v->bat, 0xff, entries * 4);
  v->next_free = v->bat_offset + ((entries * 4 + VHD_SECTOR - 1) & ~(uint64_t)(VHD_SECTOR - 1));
  im->block_size = v->block_size;
  return 0;
}

static int vhd_pwrite(struct img *im, const void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct vhd *v = im->priv;
  const uint8_t *buf = vbuf;
  if (!v || v->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: VHD write after finish", im->path);
  if (off > im->size || len > im->size - off)
    return error_set(e, ERR_USAGE, "%s: internal error: VHD write of %zu bytes at %llu is past "
                     "the end", im->path, len, (unsigned long long)off);
  if (v->type == VHD_FIXED)
    return img_pwrite_file(im->fd, buf, len, off, im->path, e);
  static const uint8_t ones[VHD_SECTOR] = {
    [0 ... VHD_SECTOR - 1] = 0xff,
  };
  while (len) {
    uint64_t blk = off / v->block_size, in = off % v->block_size;
    size_t n = v->block_size - in < len ? (size_t)(v->block_size - in) : len;
    pthread_mutex_lock(&v->lock);
    if (v->failed) {
      pthread_mutex_unlock(&v->lock);
      return error_set(e, ERR_IO, "%s: an earlier VHD write failed", im->path);
    }
    bool fresh = v->bat[blk] == VHD_BAT_UNUSED;
    if (fresh) {
      if (v->next_free / VHD_SECTOR > UINT32_MAX - 1) {
        v->failed = true;
        pthread_mutex_unlock(&v->lock);
        return error_set(e, ERR_UNSUPPORTED, "%s: VHD file would grow past what a BAT entry can "
                         "address", im->path);
      }
      v->bat[blk] = (uint32_t)(v->next_free / VHD_SECTOR);
      v->next_free += v->bitmap_size + v->block_size;
    }
    uint64_t base = (uint64_t)v->bat[blk] * VHD_SECTOR;
    pthread_mutex_unlock(&v->lock);
    if ((fresh && img_pwrite_file(im->fd, ones, sizeof ones, base, im->path, e) < 0) ||
        img_pwrite_sparse(im->fd, buf, n, base + v->bitmap_size + in, im->path, e) < 0) {
      pthread_mutex_lock(&v->lock);
      v->failed = true;
      pthread_mutex_unlock(&v->lock);
      return -1;
    }
    buf += n;
    off += n;
    len -= n;
  }
  return 0;
}

static int vhd_finish(struct img *im, struct error *e)
{
  struct vhd *v = im->priv;
  if (!v || v->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: VHD finish twice", im->path);
  if (v->failed)
    return error_set(e, ERR_IO, "%s: an earlier VHD write failed; the image is incomplete",
                     im->path);
  if (v->type == VHD_FIXED) {
    if (img_sync(im) < 0)
      return error_errno(e, "%s: fsync", im->path);
    if (img_pwrite_file(im->fd, v->footer, VHD_FOOTER_SIZE, im->size, im->path, e) < 0)
      return error_prefix(e, "VHD footer");
  } else {
    uint64_t bat_bytes = (uint64_t)v->max_entries * 4;
    size_t padded = (size_t)((bat_bytes + VHD_SECTOR - 1) & ~(uint64_t)(VHD_SECTOR - 1));
    uint8_t *t = malloc(padded ? padded : 1);
    if (!t)
      return error_set(e, ERR_NOMEM, "out of memory");
    memset(t, 0xff, padded);
    for (uint32_t i = 0; i < v->max_entries; i++)
      put_be32(t + i * 4, v->bat[i]);
    int r = img_pwrite_file(im->fd, t, padded, v->bat_offset, im->path, e);
    free(t);
    if (r < 0)
      return error_prefix(e, "VHD BAT");
    uint8_t h[VHD_DYN_HEADER_SIZE] = { 0 };
    memcpy(h + VD_COOKIE, "cxsparse", 8);
    put_be64(h + VD_DATA_OFFSET, UINT64_MAX);
    put_be64(h + VD_TABLE_OFFSET, v->bat_offset);
    put_be32(h + VD_VERSION, 0x00010000);
    put_be32(h + VD_MAX_ENTRIES, v->max_entries);
    put_be32(h + VD_BLOCK_SIZE, v->block_size);
    put_be32(h + VD_CHECKSUM, vhd_checksum(h, sizeof h, VD_CHECKSUM));
    if (ftruncate(im->fd, (off_t)(v->next_free + VHD_FOOTER_SIZE)) < 0)
      return error_errno(e, "%s: set size", im->path);
    if (img_pwrite_file(im->fd, h, sizeof h, VHD_FOOTER_SIZE, im->path, e) < 0)
      return error_prefix(e, "VHD dynamic header");
    if (img_pwrite_file(im->fd, v->footer, VHD_FOOTER_SIZE, v->next_free, im->path, e) < 0)
      return error_prefix(e, "VHD footer");
    /* Everything the footer copy at offset 0 announces is on disk first. */
    if (img_sync(im) < 0)
      return error_errno(e, "%s: fsync", im->path);
    if (img_pwrite_file(im->fd, v->footer, VHD_FOOTER_SIZE, 0, im->path, e) < 0)
      return error_prefix(e, "VHD footer copy");
  }
  if (img_sync(im) < 0)
    return error_errno(e, "%s: fsync", im->path);
  v->finished = true;
  return 0;
}

static void vhd_close(struct img *im)
{
  vhd_free(im->priv);
  im->priv = NULL;
}

const struct image_format format_vhd = {
  .name = "vpc",
  .alias = "vhd",
  .description = "Microsoft Virtual Hard Disk (VHD: fixed, dynamic, differencing)",
  .create_help = vhd_create_help,
  .probe = vhd_probe,
  .probe_tail = vhd_probe_tail,
  .open = vhd_open,
  .pread = vhd_pread,
  .extents = vhd_extents,
  .describe = vhd_describe,
  .create = vhd_create,
  .pwrite = vhd_pwrite,
  .finish = vhd_finish,
  .close = vhd_close,
};
