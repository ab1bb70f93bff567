/* fs.c - filesystem identification and path resolution over the drivers.
 * Signatures we recognise but do not read natively (LVM, LUKS, btrfs, NTFS,
 * swap) are named so `check` can report them and `--deep` can take over. */
#include "fs.h"

#include <stdlib.h>
#include <string.h>

#define FS_MAX_HOPS 40   /* symlinks followed in one resolution, as Linux */
#define FS_MAX_DEPTH 256 /* path components */

static const struct fs_driver *const drivers[] = { &fs_ext4, &fs_xfs, &fs_fat, NULL };

int fs_pread(struct fs *fs, void *buf, size_t len, uint64_t off, struct error *e)
{
  if (off > fs->size || len > fs->size - off)
    return error_set(e, ERR_FORMAT, "%s: %s filesystem at disk offset %llu: read of %zu bytes "
                     "at %llu is past its end (%llu bytes)", fs->disk->img->path, fs->drv->name,
                     (unsigned long long)fs->base, len, (unsigned long long)off,
                     (unsigned long long)fs->size);
  return disk_pread(fs->disk, buf, len, fs->base + off, e);
}

/* Signatures of what we can name but not read. */
static const char *foreign_signature(struct disk *d, uint64_t base, uint64_t size)
{
  uint8_t b[4096];
  struct error e;
  if (size < 0x10040 + 8)
    return NULL;
  if (disk_pread(d, b, sizeof b, base, &e) == 0) {
    if (memcmp(b, "LUKS\xba\xbe", 6) == 0)
      return "crypto_LUKS";
    if (memcmp(b + 0x218, "LVM2 001", 8) == 0 || memcmp(b + 0x018, "LVM2 001", 8) == 0)
      return "LVM2_member";
    if (memcmp(b + 4086, "SWAPSPACE2", 10) == 0 || memcmp(b + 4086, "SWAP-SPACE", 10) == 0)
      return "swap";
    if (memcmp(b + 0x1fe, "\x55\xaa", 2) != 0 && memcmp(b, "\xfc\x4e\x2b\xa9", 4) == 0)
      return "linux_raid_member";
  }
  if (disk_pread(d, b, 8, base + 0x10040, &e) == 0 && memcmp(b, "_BHRfS_M", 8) == 0)
    return "btrfs";
  if (size > 4096 + 8 && disk_pread(d, b, 4, base + 4096, &e) == 0 &&
      memcmp(b, "\xfc\x4e\x2b\xa9", 4) == 0)
    return "linux_raid_member";
  return NULL;
}

int fs_open(struct fs *fs, struct disk *d, uint64_t base, uint64_t size, const char **name,
            struct error *e)
{
  *fs = (struct fs){ .disk = d, .base = base, .size = size };
  *name = NULL;
  const struct fs_driver *best = NULL;
  int best_score = 0;
  for (size_t i = 0; drivers[i]; i++) {
    int s = drivers[i]->probe(d, base, size);
    if (s > best_score) {
      best_score = s;
      best = drivers[i];
    }
  }
  if (!best) {
    *name = ntfs_identify(d, base, size, fs) ? "ntfs" : foreign_signature(d, base, size);
    return 1;
  }
  fs->drv = best;
  *name = best->name;
  if (best->mount(fs, e) < 0) {
    fs->drv = NULL;
    return -1;
  }
  return 0;
}

void fs_close(struct fs *fs)
{
  if (fs->drv && fs->drv->unmount)
    fs->drv->unmount(fs);
  fs->drv = NULL;
  fs->priv = NULL;
}

/* Reads a symlink's target (at most 4095 bytes). */
static int fs_readlink(struct fs *fs, const struct fs_inode *in, char *out, size_t cap,
                       struct error *e)
{
  if (in->size == 0 || in->size >= cap)
    return error_set(e, ERR_FORMAT, "%s: %s inode %llu: symlink length %llu is out of range",
                     fs->disk->img->path, fs->drv->name, (unsigned long long)in->ino,
                     (unsigned long long)in->size);
  size_t got = 0;
  while (got < in->size) {
    ssize_t n = fs->drv->read(fs, in->ino, out + got, (size_t)in->size - got, got, e);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  out[got] = 0;
  if (strlen(out) != got)
    return error_set(e, ERR_FORMAT, "%s: %s inode %llu: symlink target holds a NUL byte",
                     fs->disk->img->path, fs->drv->name, (unsigned long long)in->ino);
  return 0;
}

int fs_resolve(struct fs *fs, const char *path, bool follow_last, struct fs_inode *out,
               struct error *e)
{
  /* The remaining path, and the stack of directories walked (for ".."). */
  char *rest = malloc(8192), *link = malloc(4096);
  uint64_t *stack = malloc(FS_MAX_DEPTH * sizeof *stack);
  int ret = -1, hops = 0;
  size_t depth = 0;
  if (!rest || !link || !stack) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (strlen(path) >= 4096) {
    error_set(e, ERR_USAGE, "path too long");
    goto out;
  }
  strcpy(rest, path);
  stack[depth++] = fs->root;
  struct fs_inode cur;
  if (fs->drv->stat(fs, fs->root, &cur, e) < 0)
    goto out;
  char *p = rest;
  for (;;) {
    while (*p == '/')
      p++;
    if (!*p)
      break;
    char *end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    char name[256];
    if (n >= sizeof name) {
      ret = 1;
      goto out;
    }
    memcpy(name, p, n);
    name[n] = 0;
    p += n;
    bool last = true;
    for (const char *q = p; *q; q++)
      if (*q != '/') {
        last = false;
        break;
      }
    if (cur.type != FS_DIR) {
      ret = 1;
      goto out;
    }
    if (strcmp(name, ".") == 0)
      continue;
    if (strcmp(name, "..") == 0) {
      if (depth > 1)
        depth--;
      if (fs->drv->stat(fs, stack[depth - 1], &cur, e) < 0)
        goto out;
      continue;
    }
    uint64_t ino;
    int r = fs->drv->lookup(fs, stack[depth - 1], name, &ino, e);
    if (r != 0) {
      ret = r;
      goto out;
    }
    struct fs_inode next;
    if (fs->drv->stat(fs, ino, &next, e) < 0)
      goto out;
    if (next.type == FS_LNK && (!last || follow_last)) {
      if (++hops > FS_MAX_HOPS) {
        error_set(e, ERR_FORMAT, "%s: %s: too many levels of symbolic links resolving %s",
                  fs->disk->img->path, fs->drv->name, path);
        goto out;
      }
      if (fs_readlink(fs, &next, link, 4096, e) < 0)
        goto out;
      /* New remaining path: the target, then what was left. */
      size_t tl = strlen(link), rl = strlen(p);
      if (tl + 1 + rl >= 8192) {
        error_set(e, ERR_FORMAT, "%s: %s: path too long resolving %s", fs->disk->img->path,
                  fs->drv->name, path);
        goto out;
      }
      memmove(rest + tl + 1, p, rl + 1);
      memcpy(rest, link, tl);
      rest[tl] = '/';
      p = rest;
      if (link[0] == '/') {
        depth = 1;
        if (fs->drv->stat(fs, fs->root, &cur, e) < 0)
          goto out;
      }
      continue;
    }
    if (depth == FS_MAX_DEPTH) {
      error_set(e, ERR_FORMAT, "%s: %s: path deeper than %d resolving %s", fs->disk->img->path,
                fs->drv->name, FS_MAX_DEPTH, path);
      goto out;
    }
    stack[depth++] = ino;
    cur = next;
  }
  *out = cur;
  ret = 0;
out:
  free(rest);
  free(link);
  free(stack);
  return ret;
}

int fs_read_file(struct fs *fs, const char *path, size_t max, char **buf, size_t *len,
                 struct error *e)
{
  struct fs_inode in;
  int r = fs_resolve(fs, path, true, &in, e);
  if (r != 0)
    return r;
  if (in.type != FS_REG)
    return 1;
  if (in.size > max)
    return error_set(e, ERR_FORMAT, "%s: %s:%s is %llu bytes, more than the %zu this reads",
                     fs->disk->img->path, fs->drv->name, path, (unsigned long long)in.size, max);
  char *b = malloc((size_t)in.size + 1);
  if (!b)
    return error_set(e, ERR_NOMEM, "out of memory");
  size_t got = 0;
  while (got < in.size) {
    ssize_t n = fs->drv->read(fs, in.ino, b + got, (size_t)in.size - got, got, e);
    if (n < 0) {
      free(b);
      return -1;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  b[got] = 0;
  *buf = b;
  *len = got;
  return 0;
}
