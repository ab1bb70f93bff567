/* xfs.c - read-only XFS driver for the inspector: the primary superblock
 * (v4 and v5), inodes v1/v2/v3, data forks in local, extents and B+tree
 * (bmbt) format, directories in every form (short form, block, leaf, node:
 * the data blocks below the 32 GiB leaf offset are walked, the hash index
 * above it is ignored), regular files (holes and unwritten extents read as
 * zeros) and symlinks (inline and remote, with the v5 XSLM header).
 *
 * Spec: "XFS Algorithms & Data Structures" (kernel.org xfs-documentation),
 * chapters "Superblocks", "On-disk Inode", "Data Extents", "Directories",
 * "Symbolic Links". Everything on disk is big-endian. CRCs are not checked;
 * every field is bounded before it is used, and walks over on-disk links
 * terminate (bmbt depth and visits, directory blocks bounded by the region). */
#include "fs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XFS_SB_MAGIC 0x58465342u      /* XFSB */
#define XFS_DINODE_MAGIC 0x494eu      /* IN */
#define XFS_BMAP_MAGIC 0x424d4150u    /* BMAP, v4 bmbt block */
#define XFS_BMAP_CRC_MAGIC 0x424d4133u /* BMA3, v5 bmbt block */
#define XFS_DIR2_BLOCK_MAGIC 0x58443242u /* XD2B */
#define XFS_DIR3_BLOCK_MAGIC 0x58444233u /* XDB3 */
#define XFS_DIR2_DATA_MAGIC 0x58443244u  /* XD2D */
#define XFS_DIR3_DATA_MAGIC 0x58444433u  /* XDD3 */
#define XFS_SYMLINK_MAGIC 0x58534c4du    /* XSLM */

#define XFS_SB_VERSION_NUMBITS 0x000f
#define XFS_SB_VERSION_DIRV2BIT 0x2000
#define XFS_SB_VERSION_MOREBITSBIT 0x8000
#define XFS_SB_VERSION2_FTYPE 0x0200
#define XFS_SB_FEAT_INCOMPAT_FTYPE 0x1
#define XFS_DIFLAG2_NREXT64 (1ull << 4)

enum { XFS_DINODE_FMT_DEV, XFS_DINODE_FMT_LOCAL, XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_BTREE };

#define XFS_DIR2_LEAF_OFFSET (32ull << 30) /* data blocks live below this */
#define XFS_SYMLINK_MAXLEN 1024
#define XFS_SYMLINK_HDR 56
#define XFS_BMBT_MAXLEVELS 9      /* 64-bit extent counts need at most 9 */
#define XFS_MAX_EXTENTS (1u << 21) /* per inode, held in memory while reading */

/* One mapping of the data fork: file blocks [off, off+len) at filesystem
 * block lin (the linear block number agno * agblocks + agbno). */
struct xfs_ext {
  uint64_t off, len, lin;
  bool unwritten;
};

struct xfs_inode {
  uint64_t ino, size, nextents;
  uint16_t mode;
  uint8_t version, format;
  const uint8_t *fork; /* the data fork inside raw */
  size_t fork_size;
  uint8_t raw[2048];
};

struct xfs {
  uint32_t blocksize, agblocks, agcount, inodesize, dirblksize, core_size;
  unsigned blocklog, agblklog, inopblog, dirblklog;
  bool v5, ftype;
  /* The extent map of the inode read last (fs.c reads a file in chunks). */
  uint64_t map_ino;
  struct xfs_ext *map;
  size_t map_n, map_cap;
};

__attribute__((format(printf, 3, 4)))
static int xfs_err(struct fs *fs, struct error *e, const char *fmt, ...)
{
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return error_set(e, ERR_FORMAT, "%s: xfs filesystem at disk offset %llu: %s",
                   fs->disk->img->path, (unsigned long long)fs->base, msg);
}

static unsigned xfs_log2(uint64_t v)
{
  unsigned l = 0;
  while (v > 1) {
    v >>= 1;
    l++;
  }
  return l;
}

static bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static int xfs_probe(struct disk *d, uint64_t base, uint64_t size)
{
  uint8_t sb[8];
  struct error e;
  if (size < 512 || disk_pread(d, sb, sizeof sb, base, &e) < 0)
    return 0;
  if (be32(sb) != XFS_SB_MAGIC)
    return 0;
  uint32_t bs = be32(sb + 4);
  return bs >= 512 && bs <= 65536 && is_pow2(bs) ? 100 : 80;
}

static int xfs_mount(struct fs *fs, struct error *e)
{
  uint8_t sb[512];
  if (fs_pread(fs, sb, sizeof sb, 0, e) < 0)
    return -1;
  if (be32(sb) != XFS_SB_MAGIC)
    return xfs_err(fs, e, "superblock magic is not XFSB");
  struct xfs x = { .blocksize = be32(sb + 4), .agblocks = be32(sb + 84), .agcount = be32(sb + 88),
                   .inodesize = be16(sb + 104), .blocklog = sb[120], .agblklog = sb[124],
                   .inopblog = sb[123], .dirblklog = sb[192], .map_ino = UINT64_MAX };
  uint16_t versionnum = be16(sb + 100), sectsize = be16(sb + 102), inopblock = be16(sb + 106);
  unsigned version = versionnum & XFS_SB_VERSION_NUMBITS;
  uint64_t dblocks = be64(sb + 8), rootino = be64(sb + 56);
  if (version != 4 && version != 5)
    return xfs_err(fs, e, "superblock version %u is not 4 or 5", version);
  x.v5 = version == 5;
  if (!x.v5 && !(versionnum & XFS_SB_VERSION_DIRV2BIT))
    return error_set(e, ERR_UNSUPPORTED, "%s: xfs filesystem at disk offset %llu: version 1 "
                     "directories (sb_versionnum 0x%04x) are not supported",
                     fs->disk->img->path, (unsigned long long)fs->base, versionnum);
  if (x.blocksize < 512 || x.blocksize > 65536 || !is_pow2(x.blocksize) ||
      xfs_log2(x.blocksize) != x.blocklog)
    return xfs_err(fs, e, "sb_blocksize %u (sb_blocklog %u) is not a power of two in 512..65536",
                   x.blocksize, x.blocklog);
  if (sectsize < 512 || sectsize > 32768 || !is_pow2(sectsize) || sectsize > x.blocksize ||
      xfs_log2(sectsize) != sb[121])
    return xfs_err(fs, e, "sb_sectsize %u (sb_sectlog %u) is out of range", sectsize, sb[121]);
  if (x.inodesize < (x.v5 ? 512u : 256u) || x.inodesize > 2048 || !is_pow2(x.inodesize) ||
      x.inodesize > x.blocksize || xfs_log2(x.inodesize) != sb[122])
    return xfs_err(fs, e, "sb_inodesize %u (sb_inodelog %u) is out of range", x.inodesize,
                   sb[122]);
  if (inopblock != x.blocksize / x.inodesize || x.inopblog != xfs_log2(inopblock))
    return xfs_err(fs, e, "sb_inopblock %u (sb_inopblog %u) does not match %u-byte blocks of "
                   "%u-byte inodes", inopblock, x.inopblog, x.blocksize, x.inodesize);
  if (x.agblocks < 1 || x.agblklog > 31 || (1ull << x.agblklog) < x.agblocks ||
      (x.agblklog && (1ull << (x.agblklog - 1)) >= x.agblocks))
    return xfs_err(fs, e, "sb_agblocks %u (sb_agblklog %u) is out of range", x.agblocks,
                   x.agblklog);
  if (x.agcount < 1 || dblocks == 0 || dblocks > (uint64_t)x.agcount * x.agblocks ||
      dblocks <= (uint64_t)(x.agcount - 1) * x.agblocks)
    return xfs_err(fs, e, "sb_agcount %u of %u blocks does not hold sb_dblocks %llu", x.agcount,
                   x.agblocks, (unsigned long long)dblocks);
  if (dblocks > (UINT64_MAX >> 17))
    return xfs_err(fs, e, "sb_dblocks %llu is out of range", (unsigned long long)dblocks);
  if (x.dirblklog > 16 || (uint64_t)x.blocksize << x.dirblklog > 65536)
    return xfs_err(fs, e, "sb_dirblklog %u makes directory blocks larger than 64 KiB",
                   x.dirblklog);
  if (sb[126])
    return xfs_err(fs, e, "sb_inprogress is set (mkfs did not finish)");
  x.dirblksize = x.blocksize << x.dirblklog;
  x.core_size = x.v5 ? 176 : 100;
  x.ftype = x.v5 ? (be32(sb + 216) & XFS_SB_FEAT_INCOMPAT_FTYPE) != 0
                 : (versionnum & XFS_SB_VERSION_MOREBITSBIT) &&
                       (be32(sb + 200) & XFS_SB_VERSION2_FTYPE);
  struct xfs *p = malloc(sizeof *p);
  if (!p)
    return error_set(e, ERR_NOMEM, "out of memory");
  *p = x;
  fs->priv = p;
  fs->root = rootino;
  snprintf(fs->version, sizeof fs->version, "xfs v%u", version);
  size_t n = 0;
  while (n < 12 && sb[108 + n])
    n++;
  memcpy(fs->label, sb + 108, n);
  fs->label[n] = 0;
  const uint8_t *u = sb + 32;
  snprintf(fs->uuid, sizeof fs->uuid,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
           u[15]);
  /* The root must be a readable directory. */
  struct fs_inode root;
  if (fs->drv->stat(fs, rootino, &root, e) < 0)
    goto fail;
  if (root.type != FS_DIR) {
    xfs_err(fs, e, "root inode %llu (sb_rootino) is not a directory",
            (unsigned long long)rootino);
    goto fail;
  }
  return 0;
fail:
  free(p);
  fs->priv = NULL;
  return -1;
}

static void xfs_unmount(struct fs *fs)
{
  struct xfs *x = fs->priv;
  if (x)
    free(x->map);
  free(x);
  fs->priv = NULL;
}

/* Linear block number of an encoded filesystem block (agno << agblklog | agbno)
 * holding count blocks, all inside one allocation group. */
static int xfs_fsb_to_lin(struct fs *fs, uint64_t fsb, uint64_t count, uint64_t *lin,
                          uint64_t ino, struct error *e)
{
  struct xfs *x = fs->priv;
  uint64_t agno = fsb >> x->agblklog, agbno = fsb & ((1ull << x->agblklog) - 1);
  if (agno >= x->agcount || agbno >= x->agblocks || count > x->agblocks - agbno)
    return xfs_err(fs, e, "inode %llu: block %llu (AG %llu, block %llu, %llu blocks) is outside "
                   "the %u allocation groups of %u blocks", (unsigned long long)ino,
                   (unsigned long long)fsb, (unsigned long long)agno, (unsigned long long)agbno,
                   (unsigned long long)count, x->agcount, x->agblocks);
  *lin = agno * x->agblocks + agbno;
  return 0;
}

static int xfs_read_inode(struct fs *fs, uint64_t ino, struct xfs_inode *ip, struct error *e)
{
  struct xfs *x = fs->priv;
  unsigned shift = x->agblklog + x->inopblog;
  uint64_t agno = ino >> shift, agbno = (ino >> x->inopblog) & ((1ull << x->agblklog) - 1);
  if (agno >= x->agcount || agbno >= x->agblocks)
    return xfs_err(fs, e, "inode number %llu (AG %llu, block %llu) is outside the filesystem",
                   (unsigned long long)ino, (unsigned long long)agno, (unsigned long long)agbno);
  uint64_t off = (agno * x->agblocks + agbno) * x->blocksize +
                 (ino & ((1ull << x->inopblog) - 1)) * x->inodesize;
  if (fs_pread(fs, ip->raw, x->inodesize, off, e) < 0)
    return error_prefix(e, "xfs inode %llu", (unsigned long long)ino);
  const uint8_t *r = ip->raw;
  if (be16(r) != XFS_DINODE_MAGIC)
    return xfs_err(fs, e, "inode %llu: di_magic 0x%04x is not IN", (unsigned long long)ino,
                   be16(r));
  ip->ino = ino;
  ip->mode = be16(r + 2);
  ip->version = r[4];
  ip->format = r[5];
  if (x->v5 ? ip->version != 3 : ip->version != 1 && ip->version != 2)
    return xfs_err(fs, e, "inode %llu: di_version %u is not valid on a v%d filesystem",
                   (unsigned long long)ino, ip->version, x->v5 ? 5 : 4);
  if (ip->version == 3 && be64(r + 152) != ino)
    return xfs_err(fs, e, "inode %llu: di_ino says %llu", (unsigned long long)ino,
                   (unsigned long long)be64(r + 152));
  ip->size = be64(r + 56);
  if (ip->size >> 63)
    return xfs_err(fs, e, "inode %llu: di_size %llu is negative", (unsigned long long)ino,
                   (unsigned long long)ip->size);
  if (ip->version == 3 && (be64(r + 120) & XFS_DIFLAG2_NREXT64))
    ip->nextents = be64(r + 24);
  else
    ip->nextents = be32(r + 76);
  size_t lit = x->inodesize - x->core_size, forkoff = (size_t)r[82] * 8;
  if (forkoff >= lit)
    return xfs_err(fs, e, "inode %llu: di_forkoff %u is past the inode's literal area",
                   (unsigned long long)ino, r[82]);
  ip->fork = r + x->core_size;
  ip->fork_size = forkoff ? forkoff : lit;
  return 0;
}

static enum fs_ftype xfs_mode_type(uint16_t mode)
{
  switch (mode & 0170000) {
  case 0040000:
    return FS_DIR;
  case 0100000:
    return FS_REG;
  case 0120000:
    return FS_LNK;
  default:
    return FS_OTHER;
  }
}

static int xfs_stat(struct fs *fs, uint64_t ino, struct fs_inode *out, struct error *e)
{
  struct xfs_inode ip;
  if (xfs_read_inode(fs, ino, &ip, e) < 0)
    return -1;
  *out = (struct fs_inode){ .ino = ino, .type = xfs_mode_type(ip.mode), .size = ip.size,
                            .mode = ip.mode };
  return 0;
}

/* Appends one packed 128-bit extent record to the map, keeping it sorted. */
static int xfs_map_add(struct fs *fs, const struct xfs_inode *ip, const uint8_t *rec,
                       struct error *e)
{
  struct xfs *x = fs->priv;
  uint64_t l0 = be64(rec), l1 = be64(rec + 8);
  struct xfs_ext ext = { .unwritten = l0 >> 63,
                         .off = (l0 & ~(1ull << 63)) >> 9,
                         .len = l1 & ((1ull << 21) - 1) };
  uint64_t fsb = (l0 & 0x1ff) << 43 | l1 >> 21;
  if (ext.len == 0)
    return xfs_err(fs, e, "inode %llu: extent at file block %llu has no blocks",
                   (unsigned long long)ip->ino, (unsigned long long)ext.off);
  if (x->map_n) {
    const struct xfs_ext *prev = &x->map[x->map_n - 1];
    if (ext.off < prev->off + prev->len)
      return xfs_err(fs, e, "inode %llu: extent at file block %llu overlaps or precedes the one "
                     "before it", (unsigned long long)ip->ino, (unsigned long long)ext.off);
  }
  if (ext.off + ext.len > (1ull << 63) >> x->blocklog)
    return xfs_err(fs, e, "inode %llu: extent at file block %llu ends past the largest file "
                   "offset", (unsigned long long)ip->ino, (unsigned long long)ext.off);
  if (xfs_fsb_to_lin(fs, fsb, ext.len, &ext.lin, ip->ino, e) < 0)
    return -1;
  if (x->map_n >= XFS_MAX_EXTENTS || x->map_n >= ip->nextents)
    return xfs_err(fs, e, "inode %llu: more extents than di_nextents %llu (or than the %u this "
                   "reads)", (unsigned long long)ip->ino, (unsigned long long)ip->nextents,
                   XFS_MAX_EXTENTS);
  if (x->map_n == x->map_cap) {
    size_t cap = x->map_cap ? x->map_cap * 2 : 16;
    struct xfs_ext *m = realloc(x->map, cap * sizeof *m);
    if (!m)
      return error_set(e, ERR_NOMEM, "out of memory");
    x->map = m;
    x->map_cap = cap;
  }
  x->map[x->map_n++] = ext;
  return 0;
}

/* Walks one bmbt block at the given level (and everything below it). */
static int xfs_bmbt_walk(struct fs *fs, const struct xfs_inode *ip, uint64_t fsb, unsigned level,
                         unsigned *visits, struct error *e)
{
  struct xfs *x = fs->priv;
  uint64_t lin = 0;
  if (++*visits > 2 * ip->nextents + 16)
    return xfs_err(fs, e, "inode %llu: its extent B+tree has more blocks than its %llu extents "
                   "need", (unsigned long long)ip->ino, (unsigned long long)ip->nextents);
  if (xfs_fsb_to_lin(fs, fsb, 1, &lin, ip->ino, e) < 0)
    return -1;
  uint8_t *b = malloc(x->blocksize);
  if (!b)
    return error_set(e, ERR_NOMEM, "out of memory");
  int ret = -1;
  if (fs_pread(fs, b, x->blocksize, lin * x->blocksize, e) < 0)
    goto out;
  size_t hdr = x->v5 ? 72 : 24, maxrecs = (x->blocksize - hdr) / 16;
  uint32_t magic = be32(b);
  if (magic != (x->v5 ? XFS_BMAP_CRC_MAGIC : XFS_BMAP_MAGIC)) {
    xfs_err(fs, e, "inode %llu: extent B+tree block %llu has magic 0x%08x, not %s",
            (unsigned long long)ip->ino, (unsigned long long)fsb, magic, x->v5 ? "BMA3" : "BMAP");
    goto out;
  }
  unsigned blevel = be16(b + 4), numrecs = be16(b + 6);
  if (blevel != level || numrecs == 0 || numrecs > maxrecs) {
    xfs_err(fs, e, "inode %llu: extent B+tree block %llu: level %u (expected %u), %u records "
            "(1..%zu)", (unsigned long long)ip->ino, (unsigned long long)fsb, blevel, level,
            numrecs, maxrecs);
    goto out;
  }
  for (unsigned i = 0; i < numrecs; i++) {
    if (level == 0 ? xfs_map_add(fs, ip, b + hdr + 16 * i, e) < 0
                   : xfs_bmbt_walk(fs, ip, be64(b + hdr + maxrecs * 8 + 8 * i), level - 1,
                                   visits, e) < 0)
      goto out;
  }
  ret = 0;
out:
  free(b);
  return ret;
}

/* Loads the extent map of an inode with an extents or btree data fork into
 * x->map (cached for the last inode). */
static int xfs_load_map(struct fs *fs, const struct xfs_inode *ip, struct error *e)
{
  struct xfs *x = fs->priv;
  if (x->map_ino == ip->ino)
    return 0;
  x->map_ino = UINT64_MAX;
  x->map_n = 0;
  if (ip->format == XFS_DINODE_FMT_EXTENTS) {
    if (ip->nextents > ip->fork_size / 16)
      return xfs_err(fs, e, "inode %llu: di_nextents %llu does not fit in its %zu-byte data fork",
                     (unsigned long long)ip->ino, (unsigned long long)ip->nextents,
                     ip->fork_size);
    for (uint64_t i = 0; i < ip->nextents; i++)
      if (xfs_map_add(fs, ip, ip->fork + 16 * i, e) < 0)
        return -1;
  } else if (ip->format == XFS_DINODE_FMT_BTREE) {
    unsigned level = be16(ip->fork), numrecs = be16(ip->fork + 2), visits = 0;
    size_t maxrecs = (ip->fork_size - 4) / 16;
    if (level < 1 || level > XFS_BMBT_MAXLEVELS || numrecs < 1 || numrecs > maxrecs)
      return xfs_err(fs, e, "inode %llu: extent B+tree root has level %u (1..%d) and %u records "
                     "(1..%zu)", (unsigned long long)ip->ino, level, XFS_BMBT_MAXLEVELS,
                     numrecs, maxrecs);
    for (unsigned i = 0; i < numrecs; i++)
      if (xfs_bmbt_walk(fs, ip, be64(ip->fork + 4 + maxrecs * 8 + 8 * i), level - 1, &visits,
                        e) < 0)
        return -1;
  } else {
    return xfs_err(fs, e, "inode %llu: data fork format %u is not extents or btree",
                   (unsigned long long)ip->ino, ip->format);
  }
  x->map_ino = ip->ino;
  return 0;
}

/* Reads bytes [off, off+len) of the inode's mapped data (x->map loaded):
 * holes and unwritten extents read as zeros. */
static int xfs_read_mapped(struct fs *fs, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct xfs *x = fs->priv;
  uint8_t *out = buf;
  while (len) {
    uint64_t blk = off >> x->blocklog;
    /* The first extent that ends after blk. */
    size_t lo = 0, hi = x->map_n;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (x->map[mid].off + x->map[mid].len <= blk)
        lo = mid + 1;
      else
        hi = mid;
    }
    size_t n;
    if (lo < x->map_n && x->map[lo].off <= blk) {
      const struct xfs_ext *m = &x->map[lo];
      uint64_t end = (m->off + m->len) << x->blocklog;
      n = end - off < len ? (size_t)(end - off) : len;
      if (m->unwritten)
        memset(out, 0, n);
      else if (fs_pread(fs, out, n, ((m->lin + (blk - m->off)) << x->blocklog) +
                                        (off & (x->blocksize - 1)), e) < 0)
        return -1;
    } else {
      uint64_t next = lo < x->map_n ? x->map[lo].off << x->blocklog : UINT64_MAX;
      n = next - off < len ? (size_t)(next - off) : len;
      memset(out, 0, n);
    }
    out += n;
    off += n;
    len -= n;
  }
  return 0;
}

/* A symlink's whole target into t (at most XFS_SYMLINK_MAXLEN bytes). */
static int xfs_read_symlink(struct fs *fs, const struct xfs_inode *ip, char *t, struct error *e)
{
  struct xfs *x = fs->priv;
  if (ip->size == 0 || ip->size > XFS_SYMLINK_MAXLEN)
    return xfs_err(fs, e, "symlink inode %llu: di_size %llu is out of range (1..%d)",
                   (unsigned long long)ip->ino, (unsigned long long)ip->size,
                   XFS_SYMLINK_MAXLEN);
  if (ip->format == XFS_DINODE_FMT_LOCAL) {
    if (ip->size > ip->fork_size)
      return xfs_err(fs, e, "symlink inode %llu: di_size %llu is larger than its data fork",
                     (unsigned long long)ip->ino, (unsigned long long)ip->size);
    memcpy(t, ip->fork, (size_t)ip->size);
    return 0;
  }
  if (xfs_load_map(fs, ip, e) < 0)
    return -1;
  /* v4 blocks hold the bare target. So do v5 blocks written by mkfs.xfs -p
   * before xfsprogs 6.x (no XSLM header: the kernel calls them corrupt, but
   * the target is unambiguous), told apart by the first block's magic. */
  uint8_t magic[4];
  bool headers = x->v5;
  if (headers) {
    if (xfs_read_mapped(fs, magic, sizeof magic, 0, e) < 0)
      return -1;
    headers = be32(magic) == XFS_SYMLINK_MAGIC;
  }
  if (!headers) {
    for (size_t i = 0; i < x->map_n; i++)
      if (x->map[i].unwritten)
        return xfs_err(fs, e, "symlink inode %llu has an unwritten extent",
                       (unsigned long long)ip->ino);
    return xfs_read_mapped(fs, t, (size_t)ip->size, 0, e);
  }
  /* v5: each block starts with a header saying which bytes it carries. */
  uint8_t *b = malloc(x->blocksize);
  if (!b)
    return error_set(e, ERR_NOMEM, "out of memory");
  size_t got = 0;
  int ret = -1;
  for (uint64_t blk = 0; got < ip->size; blk++) {
    if (xfs_read_mapped(fs, b, x->blocksize, blk << x->blocklog, e) < 0)
      goto out;
    uint32_t boff = be32(b + 4), bytes = be32(b + 8);
    if (be32(b) != XFS_SYMLINK_MAGIC || boff != got || bytes == 0 ||
        bytes > x->blocksize - XFS_SYMLINK_HDR || bytes > ip->size - got) {
      xfs_err(fs, e, "symlink inode %llu: block %llu has no valid XSLM header",
              (unsigned long long)ip->ino, (unsigned long long)blk);
      goto out;
    }
    memcpy(t + got, b + XFS_SYMLINK_HDR, bytes);
    got += bytes;
  }
  ret = 0;
out:
  free(b);
  return ret;
}

static ssize_t xfs_read(struct fs *fs, uint64_t ino, void *buf, size_t len, uint64_t off,
                        struct error *e)
{
  struct xfs_inode ip;
  if (xfs_read_inode(fs, ino, &ip, e) < 0)
    return -1;
  enum fs_ftype type = xfs_mode_type(ip.mode);
  if (type != FS_REG && type != FS_LNK)
    return xfs_err(fs, e, "inode %llu is not a regular file or a symlink",
                   (unsigned long long)ino);
  if (off >= ip.size)
    return 0;
  size_t n = ip.size - off < len ? (size_t)(ip.size - off) : len;
  if (type == FS_LNK) {
    char t[XFS_SYMLINK_MAXLEN];
    if (xfs_read_symlink(fs, &ip, t, e) < 0)
      return -1;
    memcpy(buf, t + off, n);
    return (ssize_t)n;
  }
  if (ip.format == XFS_DINODE_FMT_LOCAL) {
    if (ip.size > ip.fork_size)
      return xfs_err(fs, e, "inode %llu: inline di_size %llu is larger than its data fork",
                     (unsigned long long)ino, (unsigned long long)ip.size);
    memcpy(buf, ip.fork + off, n);
    return (ssize_t)n;
  }
  if (xfs_load_map(fs, &ip, e) < 0 || xfs_read_mapped(fs, buf, n, off, e) < 0)
    return -1;
  return (ssize_t)n;
}

/* Directory walking: fn gets each entry but "." and ".."; a non-zero
 * return stops the walk and is passed back. */
typedef int (*xfs_dirent_fn)(struct fs *fs, void *arg, const uint8_t *name, size_t namelen,
                             uint64_t ino, int ftype, struct error *e);

static int xfs_dir_entry(struct fs *fs, xfs_dirent_fn fn, void *arg, const uint8_t *name,
                         size_t namelen, uint64_t ino, int ftype, struct error *e)
{
  if ((namelen == 1 && name[0] == '.') || (namelen == 2 && name[0] == '.' && name[1] == '.'))
    return 0;
  return fn(fs, arg, name, namelen, ino, ftype, e);
}

static int xfs_dir_shortform(struct fs *fs, const struct xfs_inode *ip, xfs_dirent_fn fn,
                             void *arg, struct error *e)
{
  struct xfs *x = fs->priv;
  if (ip->size > ip->fork_size || ip->size < 6)
    return xfs_err(fs, e, "directory inode %llu: short-form size %llu does not fit its %zu-byte "
                   "data fork", (unsigned long long)ip->ino, (unsigned long long)ip->size,
                   ip->fork_size);
  const uint8_t *p = ip->fork, *end = ip->fork + ip->size;
  unsigned count = p[0], isz = p[1] ? 8 : 4;
  p += 2 + isz;
  for (unsigned i = 0; i < count; i++) {
    if (end - p < 3 || p[0] == 0 || end - p < 3 + p[0] + (x->ftype ? 1 : 0) + (int)isz)
      return xfs_err(fs, e, "directory inode %llu: short-form entry %u runs past the end",
                     (unsigned long long)ip->ino, i);
    size_t namelen = p[0];
    const uint8_t *name = p + 3, *q = name + namelen;
    int ftype = x->ftype ? *q++ : 0;
    uint64_t ino = isz == 8 ? be64(q) : be32(q);
    int r = xfs_dir_entry(fs, fn, arg, name, namelen, ino, ftype, e);
    if (r)
      return r;
    p = q + isz;
  }
  return 0;
}

/* Walks the entries of one directory data block (or single block). */
static int xfs_dir_datablock(struct fs *fs, const struct xfs_inode *ip, const uint8_t *b,
                             uint64_t db, xfs_dirent_fn fn, void *arg, struct error *e)
{
  struct xfs *x = fs->priv;
  size_t hdr = x->v5 ? 64 : 16, end = x->dirblksize;
  uint32_t magic = be32(b);
  if (magic == (x->v5 ? XFS_DIR3_BLOCK_MAGIC : XFS_DIR2_BLOCK_MAGIC)) {
    uint32_t count = be32(b + x->dirblksize - 8);
    if (count > (x->dirblksize - hdr - 8) / 8)
      return xfs_err(fs, e, "directory inode %llu: block tail count %u is too large",
                     (unsigned long long)ip->ino, count);
    end = x->dirblksize - 8 - (size_t)count * 8;
  } else if (magic != (x->v5 ? XFS_DIR3_DATA_MAGIC : XFS_DIR2_DATA_MAGIC)) {
    return xfs_err(fs, e, "directory inode %llu: data block %llu has magic 0x%08x",
                   (unsigned long long)ip->ino, (unsigned long long)db, magic);
  }
  size_t p = hdr;
  while (p < end) {
    if (be16(b + p) == 0xffff) {
      size_t l = be16(b + p + 2);
      if (l < 8 || l % 8 || l > end - p)
        return xfs_err(fs, e, "directory inode %llu: block %llu: free entry at %zu has length "
                       "%zu", (unsigned long long)ip->ino, (unsigned long long)db, p, l);
      p += l;
      continue;
    }
    size_t namelen = end - p >= 9 ? b[p + 8] : 0;
    size_t sz = (8 + 1 + namelen + (x->ftype ? 1 : 0) + 2 + 7) & ~(size_t)7;
    if (namelen == 0 || sz > end - p)
      return xfs_err(fs, e, "directory inode %llu: block %llu: entry at %zu runs past the end",
                     (unsigned long long)ip->ino, (unsigned long long)db, p);
    int ftype = x->ftype ? b[p + 9 + namelen] : 0;
    int r = xfs_dir_entry(fs, fn, arg, b + p + 9, namelen, be64(b + p), ftype, e);
    if (r)
      return r;
    p += sz;
  }
  return 0;
}

static int xfs_dir_walk(struct fs *fs, uint64_t dir, xfs_dirent_fn fn, void *arg,
                        struct error *e)
{
  struct xfs *x = fs->priv;
  struct xfs_inode ip;
  if (xfs_read_inode(fs, dir, &ip, e) < 0)
    return -1;
  if (xfs_mode_type(ip.mode) != FS_DIR)
    return xfs_err(fs, e, "inode %llu is not a directory", (unsigned long long)dir);
  if (ip.format == XFS_DINODE_FMT_LOCAL)
    return xfs_dir_shortform(fs, &ip, fn, arg, e);
  if (xfs_load_map(fs, &ip, e) < 0)
    return -1;
  /* The map is cached per inode and fn may read other inodes (stat), so
   * work on a copy of the part below the leaf offset. */
  uint64_t limit = XFS_DIR2_LEAF_OFFSET >> x->blocklog;
  size_t n = 0;
  while (n < x->map_n && x->map[n].off < limit)
    n++;
  struct xfs_ext *map = malloc((n ? n : 1) * sizeof *map);
  uint8_t *b = malloc(x->dirblksize);
  int ret = -1;
  if (!map || !b) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (n) /* x->map is NULL for an empty fork */
    memcpy(map, x->map, n * sizeof *map);
  /* No directory holds more data blocks than the region has blocks. */
  uint64_t budget = fs->size / x->dirblksize + 1, next = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t first = map[i].off >> x->dirblklog;
    uint64_t last = (map[i].off + map[i].len - 1) >> x->dirblklog;
    if (last >= limit >> x->dirblklog)
      last = (limit >> x->dirblklog) - 1;
    if (first < next)
      first = next;
    for (uint64_t db = first; db <= last; db++) {
      if (budget-- == 0) {
        xfs_err(fs, e, "directory inode %llu has more blocks than the filesystem",
                (unsigned long long)dir);
        goto out;
      }
      /* Read through the map (a directory block may span extents). */
      if (x->map_ino != dir) {
        x->map_ino = UINT64_MAX;
        if (xfs_load_map(fs, &ip, e) < 0)
          goto out;
      }
      if (xfs_read_mapped(fs, b, x->dirblksize, db * x->dirblksize, e) < 0)
        goto out;
      int r = xfs_dir_datablock(fs, &ip, b, db, fn, arg, e);
      if (r) {
        ret = r;
        goto out;
      }
      next = db + 1;
    }
  }
  ret = 0;
out:
  free(map);
  free(b);
  return ret;
}

struct xfs_lookup_arg {
  const char *name;
  size_t len;
  uint64_t ino;
};

static int xfs_lookup_fn(struct fs *fs, void *arg, const uint8_t *name, size_t namelen,
                         uint64_t ino, int ftype, struct error *e)
{
  (void)fs;
  (void)ftype;
  (void)e;
  struct xfs_lookup_arg *a = arg;
  if (namelen != a->len || memcmp(name, a->name, namelen) != 0)
    return 0;
  a->ino = ino;
  return 1;
}

static int xfs_lookup(struct fs *fs, uint64_t dir, const char *name, uint64_t *ino,
                      struct error *e)
{
  struct xfs_lookup_arg a = { .name = name, .len = strlen(name) };
  int r = xfs_dir_walk(fs, dir, xfs_lookup_fn, &a, e);
  if (r < 0)
    return -1;
  if (r == 0)
    return 1;
  *ino = a.ino;
  return 0;
}

struct xfs_readdir_arg {
  fs_dirent_cb cb;
  void *ctx;
  int stopped;
};

static int xfs_readdir_fn(struct fs *fs, void *arg, const uint8_t *name, size_t namelen,
                          uint64_t ino, int ftype, struct error *e)
{
  (void)e;
  struct xfs_readdir_arg *a = arg;
  char nm[256];
  memcpy(nm, name, namelen); /* namelen is a byte: at most 255 */
  nm[namelen] = 0;
  enum fs_ftype type = FS_OTHER;
  switch (ftype) {
  case 1:
    type = FS_REG;
    break;
  case 2:
    type = FS_DIR;
    break;
  case 7:
    type = FS_LNK;
    break;
  case 0: { /* no file type in the entry: ask the inode */
    struct fs_inode in;
    struct error ignored;
    if (xfs_stat(fs, ino, &in, &ignored) == 0)
      type = in.type;
    break;
  }
  default:
    break;
  }
  if (a->cb(a->ctx, nm, ino, type)) {
    a->stopped = 1;
    return 1;
  }
  return 0;
}

static int xfs_readdir(struct fs *fs, uint64_t dir, fs_dirent_cb cb, void *ctx, struct error *e)
{
  struct xfs_readdir_arg a = { .cb = cb, .ctx = ctx };
  return xfs_dir_walk(fs, dir, xfs_readdir_fn, &a, e) < 0 ? -1 : 0;
}

const struct fs_driver fs_xfs = {
  .name = "xfs",
  .probe = xfs_probe,
  .mount = xfs_mount,
  .stat = xfs_stat,
  .lookup = xfs_lookup,
  .read = xfs_read,
  .readdir = xfs_readdir,
  .unmount = xfs_unmount,
};
