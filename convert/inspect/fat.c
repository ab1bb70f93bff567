/* fat.c - read-only FAT12/16/32 driver for the inspector (the EFI system
 * partition, old /boot partitions): the boot sector's BPB, the FAT type from
 * the cluster count, cluster chains (FAT12 packed entries, FAT32 root
 * cluster, loop detection), directories with VFAT long names (UTF-16 to
 * UTF-8) and 8.3 names, and case-insensitive lookup like Linux's vfat.
 *
 * Spec: Microsoft "FAT: General Overview of On-Disk Format" (fatgen103),
 * sections 3 (boot sector and BPB), 3.5 (FAT type determination), 4 (FAT),
 * 6 (directory entries) and 7 (long names). Everything on disk is
 * little-endian.
 *
 * Inode numbers: FAT_ROOT_INO for the root directory, otherwise the byte
 * offset (in the region) of the entry's 8.3 directory entry. */
#include "fs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAT_ROOT_INO 1
#define FAT_DIRENT 32
#define FAT_MAX_DIRENTS 65536 /* a directory is at most 2 MiB (spec, section 6) */
#define FAT_ATTR_RO 0x01
#define FAT_ATTR_VOLUME 0x08
#define FAT_ATTR_DIR 0x10
#define FAT_ATTR_LFN 0x0f
#define FAT_NAME_MAX 1024 /* 255 UTF-16 units as UTF-8, with room */

enum fat_type { FAT12 = 12, FAT16 = 16, FAT32 = 32 };

struct fat {
  enum fat_type type;
  uint32_t bps, spc, cluster_size, nclusters, root_entries, root_cluster;
  uint64_t fat_off, fat_bytes, root_off, data_off;
  /* Where the last read left off (fs.c reads in chunks). */
  uint64_t pos_ino, pos_index;
  uint32_t pos_cluster;
};

__attribute__((format(printf, 3, 4)))
static int fat_err(struct fs *fs, struct error *e, const char *fmt, ...)
{
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *t = "FAT";
  struct fat *f = fs->priv;
  if (f)
    t = f->type == FAT12 ? "FAT12" : f->type == FAT16 ? "FAT16" : "FAT32";
  return error_set(e, ERR_FORMAT, "%s: vfat (%s) filesystem at disk offset %llu: %s",
                   fs->disk->img->path, t, (unsigned long long)fs->base, msg);
}

static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

static int fat_probe(struct disk *d, uint64_t base, uint64_t size)
{
  uint8_t b[512];
  struct error e;
  if (size < 512 || disk_pread(d, b, sizeof b, base, &e) < 0)
    return 0;
  if (b[0] != 0xeb && b[0] != 0xe9)
    return 0;
  if (memcmp(b + 3, "NTFS    ", 8) == 0 || memcmp(b + 3, "EXFAT   ", 8) == 0)
    return 0;
  /* The type string is informational, but mkfs.fat and Windows write it:
   * claim the region so a broken BPB is reported rather than ignored. */
  if (memcmp(b + 54, "FAT12   ", 8) == 0 || memcmp(b + 54, "FAT16   ", 8) == 0 ||
      memcmp(b + 54, "FAT     ", 8) == 0 || memcmp(b + 82, "FAT32   ", 8) == 0)
    return 60;
  uint32_t bps = le16(b + 11), spc = b[13];
  if (b[510] == 0x55 && b[511] == 0xaa && bps >= 512 && bps <= 4096 && is_pow2(bps) &&
      is_pow2(spc) && le16(b + 14) >= 1 && b[16] >= 1 && b[16] <= 4 &&
      (le16(b + 22) || le32(b + 36)) && (le16(b + 19) || le32(b + 32)))
    return 40;
  return 0;
}

/* Copies an 11-byte space-padded label, trimmed, to out. */
static void fat_label(char *out, size_t cap, const uint8_t *l)
{
  size_t n = 11;
  while (n && (l[n - 1] == ' ' || l[n - 1] == 0))
    n--;
  size_t j = 0;
  for (size_t i = 0; i < n && j + 1 < cap; i++)
    out[j++] = l[i] >= 0x20 && l[i] < 0x7f ? (char)l[i] : '?';
  out[j] = 0;
}

/* The FAT entry of cluster c (2 <= c < nclusters + 2). */
static int fat_entry(struct fs *fs, uint32_t c, uint32_t *next, struct error *e)
{
  struct fat *f = fs->priv;
  uint8_t b[4];
  if (f->type == FAT12) {
    uint64_t off = c + c / 2;
    if (fs_pread(fs, b, 2, f->fat_off + off, e) < 0)
      return -1;
    uint32_t v = le16(b);
    *next = c & 1 ? v >> 4 : v & 0xfff;
    if (*next >= 0xff7)
      *next |= 0x0ffff000;
  } else if (f->type == FAT16) {
    if (fs_pread(fs, b, 2, f->fat_off + 2ull * c, e) < 0)
      return -1;
    *next = le16(b);
    if (*next >= 0xfff7)
      *next |= 0x0fff0000;
  } else {
    if (fs_pread(fs, b, 4, f->fat_off + 4ull * c, e) < 0)
      return -1;
    *next = le32(b) & 0x0fffffff;
  }
  return 0;
}

/* Follows the chain from cluster c one step: 0 next in *c, 1 end of chain. */
static int fat_next(struct fs *fs, uint64_t ino, uint32_t *c, struct error *e)
{
  struct fat *f = fs->priv;
  uint32_t n;
  if (fat_entry(fs, *c, &n, e) < 0)
    return -1;
  if (n >= 0x0ffffff8)
    return 1;
  if (n < 2 || n >= f->nclusters + 2)
    return fat_err(fs, e, "inode %llu: the FAT entry of cluster %u is %s (0x%x; clusters are "
                   "2..%u)", (unsigned long long)ino, *c,
                   n == 0 ? "free" : n == 0x0ffffff7 ? "marked bad" : "past the end", n,
                   f->nclusters + 1);
  *c = n;
  return 0;
}

static int fat_check_cluster(struct fs *fs, uint64_t ino, uint32_t c, struct error *e)
{
  struct fat *f = fs->priv;
  if (c < 2 || c >= f->nclusters + 2)
    return fat_err(fs, e, "inode %llu: first cluster %u is past the end (clusters 2..%u)",
                   (unsigned long long)ino, c, f->nclusters + 1);
  return 0;
}

/* A chain walker with Brent's cycle detection (the cluster last marked is
 * compared with each new one; the mark moves at powers of two) and the
 * cluster count as a bound on the length. */
struct fat_walk {
  uint64_t ino, steps, lam, power;
  uint32_t cur, mark;
};

static void fat_walk_init(struct fat_walk *w, uint64_t ino, uint32_t first, uint64_t index)
{
  *w = (struct fat_walk){ .ino = ino, .steps = index, .power = 1, .cur = first, .mark = first };
}

/* 0 moved to the next cluster, 1 end of chain, -1 error (a loop included). */
static int fat_walk_next(struct fs *fs, struct fat_walk *w, struct error *e)
{
  struct fat *f = fs->priv;
  int r = fat_next(fs, w->ino, &w->cur, e);
  if (r)
    return r;
  w->steps++;
  if (w->cur == w->mark || w->steps >= f->nclusters)
    return fat_err(fs, e, "inode %llu: its cluster chain loops (at cluster %u)",
                   (unsigned long long)w->ino, w->cur);
  if (++w->lam == w->power) {
    w->mark = w->cur;
    w->power *= 2;
    w->lam = 0;
  }
  return 0;
}

static uint64_t fat_cluster_off(const struct fat *f, uint32_t c)
{
  return f->data_off + (uint64_t)(c - 2) * f->cluster_size;
}

/* Reads the 32-byte entry at an inode number; the root has none. */
static int fat_dirent_at(struct fs *fs, uint64_t ino, uint8_t *d, struct error *e)
{
  struct fat *f = fs->priv;
  if (ino % FAT_DIRENT || ino < f->root_off || ino >= fs->size)
    return fat_err(fs, e, "inode number %llu is not a directory entry", (unsigned long long)ino);
  if (fs_pread(fs, d, FAT_DIRENT, ino, e) < 0)
    return -1;
  if (d[0] == 0 || d[0] == 0xe5 || (d[11] & 0x3f) == FAT_ATTR_LFN)
    return fat_err(fs, e, "inode %llu is not a file or directory entry",
                   (unsigned long long)ino);
  return 0;
}

static uint32_t fat_first_cluster(const struct fat *f, const uint8_t *d)
{
  uint32_t c = le16(d + 26);
  if (f->type == FAT32)
    c |= (uint32_t)le16(d + 20) << 16;
  return c;
}

static int fat_stat(struct fs *fs, uint64_t ino, struct fs_inode *out, struct error *e)
{
  if (ino == FAT_ROOT_INO) {
    *out = (struct fs_inode){ .ino = ino, .type = FS_DIR, .mode = 040755 };
    return 0;
  }
  uint8_t d[FAT_DIRENT];
  if (fat_dirent_at(fs, ino, d, e) < 0)
    return -1;
  bool dir = d[11] & FAT_ATTR_DIR;
  uint32_t ro = d[11] & FAT_ATTR_RO ? 0222 : 0;
  *out = (struct fs_inode){ .ino = ino, .type = dir ? FS_DIR : FS_REG,
                            .size = dir ? 0 : le32(d + 28),
                            .mode = dir ? 040755 & ~ro : 0100644 & ~ro };
  return 0;
}

/* Directory walking: fn gets each raw entry with its offset; a non-zero
 * return stops the walk and is passed back. */
typedef int (*fat_raw_fn)(struct fs *fs, void *arg, const uint8_t *d, uint64_t off,
                          struct error *e);

static int fat_dir_raw(struct fs *fs, uint64_t dir, fat_raw_fn fn, void *arg, struct error *e)
{
  struct fat *f = fs->priv;
  uint8_t d[FAT_DIRENT];
  if (dir == FAT_ROOT_INO && f->type != FAT32) {
    for (uint32_t i = 0; i < f->root_entries; i++) {
      uint64_t off = f->root_off + (uint64_t)i * FAT_DIRENT;
      if (fs_pread(fs, d, FAT_DIRENT, off, e) < 0)
        return -1;
      if (d[0] == 0)
        return 0;
      int r = fn(fs, arg, d, off, e);
      if (r)
        return r;
    }
    return 0;
  }
  uint32_t c;
  if (dir == FAT_ROOT_INO) {
    c = f->root_cluster;
  } else {
    if (fat_dirent_at(fs, dir, d, e) < 0)
      return -1;
    if (!(d[11] & FAT_ATTR_DIR))
      return fat_err(fs, e, "inode %llu is not a directory", (unsigned long long)dir);
    c = fat_first_cluster(f, d);
    if (c == 0) /* ".." of a child of the root */
      return fat_dir_raw(fs, FAT_ROOT_INO, fn, arg, e);
  }
  if (fat_check_cluster(fs, dir, c, e) < 0)
    return -1;
  struct fat_walk w;
  fat_walk_init(&w, dir, c, 0);
  uint64_t n = 0;
  for (;;) {
    uint64_t base = fat_cluster_off(f, w.cur);
    for (uint32_t i = 0; i < f->cluster_size / FAT_DIRENT; i++) {
      if (n++ >= FAT_MAX_DIRENTS)
        return fat_err(fs, e, "directory inode %llu has more than %d entries (no end marker)",
                       (unsigned long long)dir, FAT_MAX_DIRENTS);
      uint64_t off = base + (uint64_t)i * FAT_DIRENT;
      if (fs_pread(fs, d, FAT_DIRENT, off, e) < 0)
        return -1;
      if (d[0] == 0)
        return 0;
      int r = fn(fs, arg, d, off, e);
      if (r)
        return r;
    }
    int r = fat_walk_next(fs, &w, e);
    if (r < 0)
      return -1;
    if (r == 1)
      return 0;
  }
}

static uint8_t fat_lfn_sum(const uint8_t *d)
{
  uint8_t s = 0;
  for (int i = 0; i < 11; i++)
    s = (uint8_t)(((s & 1) << 7) + (s >> 1) + d[i]);
  return s;
}

/* Collects long-name pieces and hands on complete entries with their
 * names (long name when valid, else the 8.3 name). */
typedef int (*fat_ent_fn)(struct fs *fs, void *arg, const char *lname, const char *sname,
                          const uint8_t *d, uint64_t off, struct error *e);

struct fat_names {
  fat_ent_fn fn;
  void *arg;
  uint16_t u[20 * 13];
  int next_ord; /* the order number expected next; 0 = no long name pending */
  int count;
  uint8_t sum;
};

static size_t fat_put_utf8(char *o, uint32_t cp)
{
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* UTF-16 (n units, stopping at a NUL) to UTF-8; false if empty. */
static bool fat_utf16_to_utf8(const uint16_t *u, size_t n, char *out)
{
  size_t j = 0;
  for (size_t i = 0; i < n && u[i]; i++) {
    uint32_t cp = u[i];
    if (cp >= 0xd800 && cp < 0xdc00 && i + 1 < n && u[i + 1] >= 0xdc00 && u[i + 1] < 0xe000) {
      cp = 0x10000 + ((cp - 0xd800) << 10) + (u[i + 1] - 0xdc00);
      i++;
    } else if (cp >= 0xd800 && cp < 0xe000) {
      cp = 0xfffd;
    }
    if (cp == '/')
      cp = 0xfffd;
    j += fat_put_utf8(out + j, cp);
  }
  out[j] = 0;
  return j > 0;
}

static void fat_short_name(const uint8_t *d, char *out)
{
  size_t j = 0;
  bool lower_base = d[12] & 0x08, lower_ext = d[12] & 0x10;
  for (int i = 0; i < 8; i++) {
    uint8_t ch = i == 0 && d[0] == 0x05 ? 0xe5 : d[i];
    if (ch == ' ')
      break;
    if (ch >= 0x80 || ch < 0x20 || ch == '/')
      out[j++] = '?';
    else
      out[j++] = (char)(lower_base && ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  if (d[8] != ' ') {
    out[j++] = '.';
    for (int i = 8; i < 11 && d[i] != ' '; i++) {
      uint8_t ch = d[i];
      if (ch >= 0x80 || ch < 0x20 || ch == '/')
        out[j++] = '?';
      else
        out[j++] = (char)(lower_ext && ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
  }
  out[j] = 0;
}

static int fat_names_fn(struct fs *fs, void *arg, const uint8_t *d, uint64_t off,
                        struct error *e)
{
  struct fat_names *s = arg;
  if (d[0] == 0xe5) {
    s->next_ord = 0;
    return 0;
  }
  if ((d[11] & 0x3f) == FAT_ATTR_LFN) {
    int ord = d[0] & 0x1f;
    if (d[0] & 0x40) {
      s->next_ord = ord;
      s->count = ord;
      s->sum = d[13];
      if (ord < 1 || ord > 20) {
        s->next_ord = 0;
        return 0;
      }
      for (int i = 0; i < 20 * 13; i++)
        s->u[i] = 0;
    } else if (s->next_ord == 0 || ord != s->next_ord || d[13] != s->sum) {
      s->next_ord = 0;
      return 0;
    }
    static const uint8_t pos[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30 };
    for (int i = 0; i < 13; i++)
      s->u[(ord - 1) * 13 + i] = le16(d + pos[i]);
    s->next_ord = ord - 1 > 0 ? ord - 1 : -1; /* -1: complete, the 8.3 entry comes next */
    return 0;
  }
  bool have_long = s->next_ord == -1 && fat_lfn_sum(d) == s->sum;
  s->next_ord = 0;
  if (d[11] & FAT_ATTR_VOLUME)
    return 0;
  char lname[FAT_NAME_MAX], sname[16];
  fat_short_name(d, sname);
  if (!have_long || !fat_utf16_to_utf8(s->u, (size_t)s->count * 13, lname))
    lname[0] = 0;
  const char *name = lname[0] ? lname : sname;
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return 0;
  return s->fn(fs, s->arg, lname[0] ? lname : NULL, sname, d, off, e);
}

static int fat_dir_walk(struct fs *fs, uint64_t dir, fat_ent_fn fn, void *arg, struct error *e)
{
  struct fat_names *s = malloc(sizeof *s);
  if (!s)
    return error_set(e, ERR_NOMEM, "out of memory");
  s->fn = fn;
  s->arg = arg;
  s->next_ord = 0;
  int r = fat_dir_raw(fs, dir, fat_names_fn, s, e);
  free(s);
  return r;
}

static bool fat_name_eq(const char *a, const char *b)
{
  for (;; a++, b++) {
    unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
    if (x >= 'A' && x <= 'Z')
      x += 32;
    if (y >= 'A' && y <= 'Z')
      y += 32;
    if (x != y)
      return false;
    if (!x)
      return true;
  }
}

struct fat_lookup_arg {
  const char *name;
  uint64_t ino;
};

static int fat_lookup_fn(struct fs *fs, void *arg, const char *lname, const char *sname,
                         const uint8_t *d, uint64_t off, struct error *e)
{
  (void)fs;
  (void)d;
  (void)e;
  struct fat_lookup_arg *a = arg;
  if ((lname && fat_name_eq(lname, a->name)) || fat_name_eq(sname, a->name)) {
    a->ino = off;
    return 1;
  }
  return 0;
}

static int fat_lookup(struct fs *fs, uint64_t dir, const char *name, uint64_t *ino,
                      struct error *e)
{
  struct fat_lookup_arg a = { .name = name };
  int r = fat_dir_walk(fs, dir, fat_lookup_fn, &a, e);
  if (r < 0)
    return -1;
  if (r == 0)
    return 1;
  *ino = a.ino;
  return 0;
}

struct fat_readdir_arg {
  fs_dirent_cb cb;
  void *ctx;
};

static int fat_readdir_fn(struct fs *fs, void *arg, const char *lname, const char *sname,
                          const uint8_t *d, uint64_t off, struct error *e)
{
  (void)fs;
  (void)e;
  struct fat_readdir_arg *a = arg;
  return a->cb(a->ctx, lname ? lname : sname, off, d[11] & FAT_ATTR_DIR ? FS_DIR : FS_REG) ? 1
                                                                                          : 0;
}

static int fat_readdir(struct fs *fs, uint64_t dir, fs_dirent_cb cb, void *ctx, struct error *e)
{
  struct fat_readdir_arg a = { .cb = cb, .ctx = ctx };
  return fat_dir_walk(fs, dir, fat_readdir_fn, &a, e) < 0 ? -1 : 0;
}

static ssize_t fat_read(struct fs *fs, uint64_t ino, void *buf, size_t len, uint64_t off,
                        struct error *e)
{
  struct fat *f = fs->priv;
  uint8_t d[FAT_DIRENT];
  if (ino == FAT_ROOT_INO)
    return fat_err(fs, e, "the root directory is not a file");
  if (fat_dirent_at(fs, ino, d, e) < 0)
    return -1;
  if (d[11] & FAT_ATTR_DIR)
    return fat_err(fs, e, "inode %llu is a directory", (unsigned long long)ino);
  uint64_t size = le32(d + 28);
  if (off >= size || len == 0)
    return 0;
  if (size > (uint64_t)f->nclusters * f->cluster_size)
    return fat_err(fs, e, "inode %llu: size %llu is larger than the filesystem",
                   (unsigned long long)ino, (unsigned long long)size);
  size_t n = size - off < len ? (size_t)(size - off) : len;
  uint32_t first = fat_first_cluster(f, d);
  if (fat_check_cluster(fs, ino, first, e) < 0)
    return -1;
  /* Resume from the last position when reading on, else from the start. */
  uint64_t want = off / f->cluster_size;
  struct fat_walk w;
  if (f->pos_ino == ino && f->pos_index <= want)
    fat_walk_init(&w, ino, f->pos_cluster, f->pos_index);
  else
    fat_walk_init(&w, ino, first, 0);
  while (w.steps < want) {
    int r = fat_walk_next(fs, &w, e);
    if (r < 0)
      return -1;
    if (r == 1)
      return fat_err(fs, e, "inode %llu: its cluster chain ends before its size %llu",
                     (unsigned long long)ino, (unsigned long long)size);
  }
  uint8_t *out = buf;
  size_t done = 0;
  for (;;) {
    size_t in = (size_t)(off % f->cluster_size);
    size_t k = f->cluster_size - in < n - done ? f->cluster_size - in : n - done;
    if (fs_pread(fs, out + done, k, fat_cluster_off(f, w.cur) + in, e) < 0)
      return -1;
    done += k;
    off += k;
    f->pos_ino = ino;
    f->pos_index = w.steps;
    f->pos_cluster = w.cur;
    if (done == n)
      break;
    int r = fat_walk_next(fs, &w, e);
    if (r < 0)
      return -1;
    if (r == 1)
      return fat_err(fs, e, "inode %llu: its cluster chain ends before its size %llu",
                     (unsigned long long)ino, (unsigned long long)size);
  }
  return (ssize_t)n;
}

static int fat_label_fn(struct fs *fs, void *arg, const uint8_t *d, uint64_t off,
                        struct error *e)
{
  (void)off;
  (void)e;
  if (d[0] != 0xe5 && (d[11] & 0x3f) != FAT_ATTR_LFN && (d[11] & 0x18) == FAT_ATTR_VOLUME) {
    fat_label(fs->label, sizeof fs->label, d);
    (void)arg;
    return 1;
  }
  return 0;
}

static int fat_mount(struct fs *fs, struct error *e)
{
  uint8_t b[512];
  fs->priv = NULL;
  if (fs_pread(fs, b, sizeof b, 0, e) < 0)
    return -1;
  struct fat f = { .bps = le16(b + 11), .spc = b[13], .pos_ino = 0 };
  uint32_t rsvd = le16(b + 14), nfats = b[16], fatsz = le16(b + 22), totsec = le16(b + 19);
  f.root_entries = le16(b + 17);
  if (f.bps < 512 || f.bps > 4096 || !is_pow2(f.bps))
    return fat_err(fs, e, "bytes per sector %u is not a power of two in 512..4096", f.bps);
  if (!is_pow2(f.spc) || f.spc > 128)
    return fat_err(fs, e, "sectors per cluster %u is not a power of two in 1..128", f.spc);
  f.cluster_size = f.bps * f.spc;
  if (rsvd < 1)
    return fat_err(fs, e, "reserved sector count is 0");
  if (nfats < 1 || nfats > 4)
    return fat_err(fs, e, "FAT count %u is not in 1..4", nfats);
  if (!fatsz)
    fatsz = le32(b + 36);
  if (!totsec)
    totsec = le32(b + 32);
  if (!fatsz || !totsec)
    return fat_err(fs, e, "sectors per FAT (%u) or total sectors (%u) is 0", fatsz, totsec);
  uint64_t root_secs = ((uint64_t)f.root_entries * FAT_DIRENT + f.bps - 1) / f.bps;
  uint64_t first_data = rsvd + (uint64_t)nfats * fatsz + root_secs;
  if (first_data >= totsec)
    return fat_err(fs, e, "the FATs and root directory (%llu sectors) fill the %u sectors of "
                   "the volume", (unsigned long long)first_data, totsec);
  uint64_t nclusters = (totsec - first_data) / f.spc;
  f.type = nclusters < 4085 ? FAT12 : nclusters < 65525 ? FAT16 : FAT32;
  /* A FAT32 layout (no 16-bit FAT size, no fixed root) with too few
   * clusters for Microsoft's rule is FAT32 all the same, as Linux reads it. */
  if (f.type != FAT32 && le16(b + 22) == 0 && f.root_entries == 0)
    f.type = FAT32;
  if (nclusters < 1 || nclusters > 0x0ffffff5)
    return fat_err(fs, e, "cluster count %llu is out of range", (unsigned long long)nclusters);
  f.nclusters = (uint32_t)nclusters;
  uint64_t need = f.type == FAT12 ? (nclusters + 2) * 3 / 2 + 1 : (nclusters + 2) * (f.type / 8);
  f.fat_bytes = (uint64_t)fatsz * f.bps;
  if (f.fat_bytes < need)
    return fat_err(fs, e, "sectors per FAT %u hold less than the %llu bytes %llu clusters need",
                   fatsz, (unsigned long long)need, (unsigned long long)nclusters);
  unsigned active = 0;
  if (f.type == FAT32) {
    if (f.root_entries != 0 || le16(b + 22) != 0)
      return fat_err(fs, e, "FAT32 volume with %u root entries or a 16-bit FAT size",
                     f.root_entries);
    uint16_t ext = le16(b + 40);
    if (ext & 0x80)
      active = ext & 0x0f;
    if (active >= nfats)
      return fat_err(fs, e, "active FAT %u (extended flags) is not one of the %u FATs", active,
                     nfats);
    f.root_cluster = le32(b + 44);
    if (f.root_cluster < 2 || f.root_cluster >= f.nclusters + 2)
      return fat_err(fs, e, "root cluster %u is past the end (clusters 2..%u)", f.root_cluster,
                     f.nclusters + 1);
  } else if (f.root_entries == 0) {
    return fat_err(fs, e, "root entry count is 0 on a FAT%d volume", f.type);
  }
  f.fat_off = ((uint64_t)rsvd + (uint64_t)active * fatsz) * f.bps;
  f.root_off = (rsvd + (uint64_t)nfats * fatsz) * f.bps;
  f.data_off = first_data * f.bps;
  struct fat *p = malloc(sizeof *p);
  if (!p)
    return error_set(e, ERR_NOMEM, "out of memory");
  *p = f;
  fs->priv = p;
  fs->root = FAT_ROOT_INO;
  snprintf(fs->version, sizeof fs->version, "FAT%d", f.type);
  const uint8_t *ext = f.type == FAT32 ? b + 64 : b + 36; /* drive number, then boot signature */
  if (ext[2] == 0x29 || ext[2] == 0x28) {
    uint32_t serial = le32(ext + 3);
    snprintf(fs->uuid, sizeof fs->uuid, "%04X-%04X", serial >> 16, serial & 0xffff);
    if (ext[2] == 0x29 && memcmp(ext + 7, "NO NAME    ", 11) != 0)
      fat_label(fs->label, sizeof fs->label, ext + 7);
  }
  /* The root directory's volume label entry wins, as blkid has it. A root
   * directory we cannot read is reported when it is walked. */
  struct error ignored;
  fat_dir_raw(fs, FAT_ROOT_INO, fat_label_fn, NULL, &ignored);
  return 0;
}

static void fat_unmount(struct fs *fs)
{
  free(fs->priv);
  fs->priv = NULL;
}

const struct fs_driver fs_fat = {
  .name = "vfat",
  .probe = fat_probe,
  .mount = fat_mount,
  .stat = fat_stat,
  .lookup = fat_lookup,
  .read = fat_read,
  .readdir = fat_readdir,
  .unmount = fat_unmount,
};
