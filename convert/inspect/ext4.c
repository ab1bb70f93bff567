/* ext4.c - read-only ext2, ext3 and ext4 for the inspector.
 *
 * Implements the fs_driver of fs.h over the on-disk format described in the
 * kernel's "ext4 Data Structures and Algorithms" (Documentation/filesystems/
 * ext4/, also the kernel.org wiki page "Ext4 Disk Layout"): the superblock
 * at byte 1024, group descriptors (32 or 64 bytes, meta_bg placement),
 * inode tables, extent trees and classic block maps (direct, indirect,
 * double, triple), inline data (i_block plus the in-inode "system.data"
 * attribute), fast and slow symlinks, and linear or hashed directories (an
 * htree is read linearly: its root hides in the ".." entry and its index
 * blocks look like one empty entry spanning the block). Checksums are not
 * verified, the journal is not replayed.
 *
 * Nothing read from the disk is trusted: each field is bounded before it is
 * used as a size, an offset or a count, every walk has a bound (extent depth,
 * blocks visited, entries per block), and every error names the image, the
 * inode and the field. Reads go through fs_pread and the disk's page cache;
 * nothing larger than one block is held. */
#include "fs.h"

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXT4_SB_OFF 1024
#define EXT4_MAGIC 0xEF53
#define EXT4_ROOT_INO 2
#define EXT4_N_BLOCKS 15
#define EXT4_IBLOCK_OFF 0x28
#define EXT4_IBLOCK_LEN 60
#define EXT4_GOOD_OLD_INODE 128
#define EXT4_MAX_INODE 4096 /* largest inode we read (mke2fs allows up to a block) */
#define EXT4_MAX_DEPTH 5    /* extent tree depth, as the kernel */
#define EXT4_EXT_MAGIC 0xF30A
#define EXT4_XATTR_MAGIC 0xEA020000u

/* Superblock fields (offsets into the 1024-byte superblock). */
enum {
  SB_INODES_COUNT = 0x00, SB_BLOCKS_LO = 0x04, SB_FIRST_DATA_BLOCK = 0x14,
  SB_LOG_BLOCK_SIZE = 0x18, SB_LOG_CLUSTER_SIZE = 0x1C, SB_BLOCKS_PER_GROUP = 0x20,
  SB_CLUSTERS_PER_GROUP = 0x24, SB_INODES_PER_GROUP = 0x28, SB_MAGIC = 0x38,
  SB_REV_LEVEL = 0x4C, SB_FIRST_INO = 0x54, SB_INODE_SIZE = 0x58, SB_COMPAT = 0x5C,
  SB_INCOMPAT = 0x60, SB_RO_COMPAT = 0x64, SB_UUID = 0x68, SB_VOLUME_NAME = 0x78,
  SB_DESC_SIZE = 0xFE, SB_FIRST_META_BG = 0x104, SB_BLOCKS_HI = 0x150,
  SB_BACKUP_BGS = 0x24C,
};

#define COMPAT_HAS_JOURNAL 0x4u
#define COMPAT_SPARSE_SUPER2 0x200u

#define INCOMPAT_COMPRESSION 0x1u
#define INCOMPAT_FILETYPE 0x2u
#define INCOMPAT_RECOVER 0x4u
#define INCOMPAT_JOURNAL_DEV 0x8u
#define INCOMPAT_META_BG 0x10u
#define INCOMPAT_EXTENTS 0x40u
#define INCOMPAT_64BIT 0x80u
#define INCOMPAT_MMP 0x100u
#define INCOMPAT_FLEX_BG 0x200u
#define INCOMPAT_EA_INODE 0x400u
#define INCOMPAT_DIRDATA 0x1000u
#define INCOMPAT_CSUM_SEED 0x2000u
#define INCOMPAT_LARGEDIR 0x4000u
#define INCOMPAT_INLINE_DATA 0x8000u
#define INCOMPAT_ENCRYPT 0x10000u
#define INCOMPAT_CASEFOLD 0x20000u
/* What this driver reads; anything else is refused at mount, as the kernel does. */
#define INCOMPAT_READ                                                                        \
  (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS |              \
   INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE | INCOMPAT_CSUM_SEED | \
   INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD)

#define RO_COMPAT_SPARSE_SUPER 0x1u
#define RO_COMPAT_LARGE_FILE 0x2u
#define RO_COMPAT_BTREE_DIR 0x4u
#define RO_COMPAT_HUGE_FILE 0x8u
#define RO_COMPAT_BIGALLOC 0x200u
#define RO_COMPAT_GDT_CSUM 0x10u
#define RO_COMPAT_METADATA_CSUM 0x400u

/* What ext2 and ext3 know (as blkid decides the name). */
#define EXT3_INCOMPAT (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG)
#define EXT3_RO_COMPAT (RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR)

/* Group descriptor fields. */
#define BG_INODE_TABLE_LO 0x08
#define BG_FLAGS 0x12
#define BG_ITABLE_UNUSED_LO 0x1C
#define BG_INODE_TABLE_HI 0x28
#define BG_ITABLE_UNUSED_HI 0x32
#define BG_INODE_UNINIT 0x1

/* Inode fields. */
#define I_MODE 0x00
#define I_SIZE_LO 0x04
#define I_LINKS 0x1A
#define I_BLOCKS_LO 0x1C
#define I_FLAGS 0x20
#define I_FILE_ACL_LO 0x68
#define I_SIZE_HIGH 0x6C
#define I_BLOCKS_HIGH 0x74
#define I_FILE_ACL_HIGH 0x76
#define I_EXTRA_ISIZE 0x80

#define IFL_ENCRYPT 0x800u
#define IFL_HUGE_FILE 0x40000u
#define IFL_EXTENTS 0x80000u
#define IFL_INLINE_DATA 0x10000000u

#define S_IFMT_ 0xF000u
#define S_IFREG_ 0x8000u
#define S_IFDIR_ 0x4000u
#define S_IFLNK_ 0xA000u

struct ext4 {
  uint32_t bs;            /* block size, 1 KiB..64 KiB */
  unsigned log_bs;        /* log2(bs) */
  uint64_t blocks;        /* s_blocks_count */
  uint32_t first_data_block;
  uint32_t sb_block;      /* the block holding byte 1024 */
  uint32_t bpg, ipg;      /* blocks and inodes per group */
  uint32_t inodes;        /* s_inodes_count */
  uint32_t groups;
  uint32_t inode_size, desc_size, descs_per_block;
  uint32_t cluster_sectors; /* 512-byte sectors in a cluster (EA block in i_blocks) */
  uint32_t compat, incompat, ro_compat;
  uint32_t first_meta_bg;
  uint32_t backup_bgs[2];
};

/* A loaded inode: its number, its bytes (inode_size of them) and decoded fields. */
struct ext4_inode {
  uint64_t ino;
  uint32_t mode, flags;
  uint64_t size;
  uint8_t raw[EXT4_MAX_INODE];
};

/* Where a run of logical blocks lives: pblk 0 = hole (or unwritten, read as zeros). */
struct ext4_run {
  uint64_t pblk;
  uint64_t len; /* blocks, at least 1 */
};

static struct ext4 *ext4_priv(struct fs *fs) { return fs->priv; }

__attribute__((format(printf, 5, 6)))
static int ext4_err(struct fs *fs, struct error *e, int code, uint64_t ino, const char *fmt, ...)
{
  char what[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (ino)
    return error_set(e, code, "%s: ext4 at disk offset %llu: inode %llu: %s", fs->disk->img->path,
                     (unsigned long long)fs->base, (unsigned long long)ino, what);
  return error_set(e, code, "%s: ext4 at disk offset %llu: %s", fs->disk->img->path,
                   (unsigned long long)fs->base, what);
}

/* Reads blocks [blk, blk+n) bounded to the filesystem; off/len within. */
static int ext4_read_blocks(struct fs *fs, uint64_t ino, const char *what, uint64_t blk,
                            uint64_t n, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  if (blk >= x->blocks || n > x->blocks - blk)
    return ext4_err(fs, e, ERR_FORMAT, ino, "%s block %llu is past the end of the filesystem "
                    "(%llu blocks)", what, (unsigned long long)blk, (unsigned long long)x->blocks);
  return fs_pread(fs, buf, len, (blk << x->log_bs) + off, e);
}

/* ---- superblock ---- */

static int ext4_probe(struct disk *d, uint64_t base, uint64_t size)
{
  uint8_t sb[0x68];
  struct error e;
  if (size < EXT4_SB_OFF + 1024 || base > d->size || size > d->size - base)
    return 0;
  if (disk_pread(d, sb, sizeof sb, base + EXT4_SB_OFF, &e) < 0)
    return 0;
  /* The magic alone claims the region: a damaged superblock is then
   * reported field by field by mount instead of passing for no filesystem. */
  if (le16(sb + SB_MAGIC) != EXT4_MAGIC)
    return 0;
  /* An external journal carries the magic but holds no files. */
  if (le32(sb + SB_INCOMPAT) & INCOMPAT_JOURNAL_DEV)
    return 0;
  return 60;
}

static bool ext4_power_of(uint32_t n, uint32_t b)
{
  while (n > 1 && n % b == 0)
    n /= b;
  return n == 1;
}

/* Does group g hold a copy of the superblock (and so, with meta_bg, its
 * descriptor block after it)? */
static bool ext4_bg_has_super(const struct ext4 *x, uint32_t g)
{
  if (g == 0)
    return true;
  if (x->compat & COMPAT_SPARSE_SUPER2)
    return g == x->backup_bgs[0] || g == x->backup_bgs[1];
  if (g <= 1 || !(x->ro_compat & RO_COMPAT_SPARSE_SUPER))
    return true;
  if (!(g & 1))
    return false;
  return ext4_power_of(g, 3) || ext4_power_of(g, 5) || ext4_power_of(g, 7);
}

/* Block holding descriptor block number nr (meta_bg moves the later ones
 * into their own meta group). */
static uint64_t ext4_desc_block(const struct ext4 *x, uint32_t nr)
{
  if (!(x->incompat & INCOMPAT_META_BG) || nr < x->first_meta_bg)
    return (uint64_t)x->sb_block + 1 + nr;
  uint64_t g = (uint64_t)nr * x->descs_per_block;
  if (g >= x->groups)
    return UINT64_MAX;
  uint64_t has_super = ext4_bg_has_super(x, (uint32_t)g) ? 1 : 0;
  if (x->bs == 1024 && nr == 0 && x->first_data_block == 0)
    has_super++;
  return x->first_data_block + g * x->bpg + has_super;
}

static int ext4_mount(struct fs *fs, struct error *e)
{
  uint8_t sb[1024];
  struct ext4 *x = NULL;
  if (fs->size < EXT4_SB_OFF + sizeof sb)
    return ext4_err(fs, e, ERR_FORMAT, 0, "region of %llu bytes is too small for a superblock",
                    (unsigned long long)fs->size);
  if (fs_pread(fs, sb, sizeof sb, EXT4_SB_OFF, e) < 0)
    return -1;
  if (le16(sb + SB_MAGIC) != EXT4_MAGIC)
    return ext4_err(fs, e, ERR_FORMAT, 0, "bad superblock magic 0x%04x", le16(sb + SB_MAGIC));
  if (!(x = calloc(1, sizeof *x)))
    return error_set(e, ERR_NOMEM, "out of memory");
  fs->priv = x;

  uint32_t log = le32(sb + SB_LOG_BLOCK_SIZE);
  if (log > 6) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_log_block_size %u is out of range (block size 1 KiB "
             "to 64 KiB)", log);
    goto fail;
  }
  x->log_bs = 10 + log;
  x->bs = 1u << x->log_bs;
  x->sb_block = x->bs == 1024 ? 1 : 0;
  x->compat = le32(sb + SB_COMPAT);
  x->incompat = le32(sb + SB_INCOMPAT);
  x->ro_compat = le32(sb + SB_RO_COMPAT);
  uint32_t rev = le32(sb + SB_REV_LEVEL);
  if (rev > 1) {
    ext4_err(fs, e, ERR_UNSUPPORTED, 0, "s_rev_level %u is unknown", rev);
    goto fail;
  }
  if (rev == 0) {
    x->compat = x->incompat = x->ro_compat = 0;
    x->inode_size = EXT4_GOOD_OLD_INODE;
  } else {
    x->inode_size = le16(sb + SB_INODE_SIZE);
    if (x->inode_size < EXT4_GOOD_OLD_INODE || x->inode_size > x->bs ||
        (x->inode_size & (x->inode_size - 1))) {
      ext4_err(fs, e, ERR_FORMAT, 0, "s_inode_size %u is not a power of two from 128 to the "
               "block size %u", x->inode_size, x->bs);
      goto fail;
    }
    if (x->inode_size > EXT4_MAX_INODE) {
      ext4_err(fs, e, ERR_UNSUPPORTED, 0, "s_inode_size %u is larger than the %u this reads",
               x->inode_size, EXT4_MAX_INODE);
      goto fail;
    }
  }
  if (x->incompat & INCOMPAT_JOURNAL_DEV) {
    ext4_err(fs, e, ERR_UNSUPPORTED, 0, "this is an external journal, not a filesystem");
    goto fail;
  }
  if (x->incompat & ~INCOMPAT_READ) {
    ext4_err(fs, e, ERR_UNSUPPORTED, 0, "incompatible features 0x%x are not supported%s",
             x->incompat & ~INCOMPAT_READ,
             x->incompat & INCOMPAT_COMPRESSION ? " (compression)"
             : x->incompat & INCOMPAT_DIRDATA   ? " (dirdata)" : "");
    goto fail;
  }

  x->blocks = le32(sb + SB_BLOCKS_LO);
  if (x->incompat & INCOMPAT_64BIT)
    x->blocks |= (uint64_t)le32(sb + SB_BLOCKS_HI) << 32;
  if (x->blocks == 0 || x->blocks > (fs->size >> x->log_bs)) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_blocks_count %llu (of %u bytes) does not fit the %llu-byte "
             "region", (unsigned long long)x->blocks, x->bs, (unsigned long long)fs->size);
    goto fail;
  }
  x->first_data_block = le32(sb + SB_FIRST_DATA_BLOCK);
  if (x->first_data_block > x->sb_block || x->first_data_block >= x->blocks) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_first_data_block %u is out of range for %u-byte blocks",
             x->first_data_block, x->bs);
    goto fail;
  }
  x->bpg = le32(sb + SB_BLOCKS_PER_GROUP);
  if (x->ro_compat & RO_COMPAT_BIGALLOC) {
    uint32_t lc = le32(sb + SB_LOG_CLUSTER_SIZE), cpg = le32(sb + SB_CLUSTERS_PER_GROUP);
    if (lc < log || lc - log > 16 || cpg == 0 || cpg > x->bs * 8 ||
        (uint64_t)cpg << (lc - log) != x->bpg) {
      ext4_err(fs, e, ERR_FORMAT, 0, "bigalloc geometry (s_log_cluster_size %u, "
               "s_clusters_per_group %u, s_blocks_per_group %u) is inconsistent", lc, cpg, x->bpg);
      goto fail;
    }
    x->cluster_sectors = 1u << (10 + lc - 9);
  } else {
    if (x->bpg < 8 || x->bpg > x->bs * 8) {
      ext4_err(fs, e, ERR_FORMAT, 0, "s_blocks_per_group %u is out of range (8 to %u)", x->bpg,
               x->bs * 8);
      goto fail;
    }
    x->cluster_sectors = x->bs >> 9;
  }
  uint64_t groups = (x->blocks - x->first_data_block + x->bpg - 1) / x->bpg;
  if (groups == 0 || groups > UINT32_MAX) {
    ext4_err(fs, e, ERR_FORMAT, 0, "%llu block groups is out of range",
             (unsigned long long)groups);
    goto fail;
  }
  x->groups = (uint32_t)groups;
  x->ipg = le32(sb + SB_INODES_PER_GROUP);
  x->inodes = le32(sb + SB_INODES_COUNT);
  if (x->ipg == 0 || x->ipg > x->bs * 8 || x->ipg < x->bs / x->inode_size) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_inodes_per_group %u is out of range (%u to %u)", x->ipg,
             x->bs / x->inode_size, x->bs * 8);
    goto fail;
  }
  if ((uint64_t)x->ipg * x->groups != x->inodes) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_inodes_count %u is not %u inodes per group times %u "
             "groups", x->inodes, x->ipg, x->groups);
    goto fail;
  }
  if (rev > 0 && le32(sb + SB_FIRST_INO) > x->inodes) {
    ext4_err(fs, e, ERR_FORMAT, 0, "s_first_ino %u is past s_inodes_count %u",
             le32(sb + SB_FIRST_INO), x->inodes);
    goto fail;
  }

  x->desc_size = 32;
  if (x->incompat & INCOMPAT_64BIT) {
    x->desc_size = le16(sb + SB_DESC_SIZE);
    if (x->desc_size < 64 || x->desc_size > 1024 || (x->desc_size & (x->desc_size - 1))) {
      ext4_err(fs, e, ERR_FORMAT, 0, "s_desc_size %u is not a power of two from 64 to 1024",
               x->desc_size);
      goto fail;
    }
  }
  x->descs_per_block = x->bs / x->desc_size;
  uint64_t desc_blocks = (x->groups + (uint64_t)x->descs_per_block - 1) / x->descs_per_block;
  uint64_t flat = desc_blocks;
  if (x->incompat & INCOMPAT_META_BG) {
    x->first_meta_bg = le32(sb + SB_FIRST_META_BG);
    if (x->first_meta_bg > desc_blocks) {
      ext4_err(fs, e, ERR_FORMAT, 0, "s_first_meta_bg %u is past the %llu descriptor blocks",
               x->first_meta_bg, (unsigned long long)desc_blocks);
      goto fail;
    }
    flat = x->first_meta_bg;
  }
  if (x->sb_block + 1 + flat > x->blocks) {
    ext4_err(fs, e, ERR_FORMAT, 0, "the group descriptor table (blocks %u to %llu) is past the "
             "end of the filesystem (%llu blocks)", x->sb_block + 1,
             (unsigned long long)(x->sb_block + flat), (unsigned long long)x->blocks);
    goto fail;
  }
  x->backup_bgs[0] = le32(sb + SB_BACKUP_BGS);
  x->backup_bgs[1] = le32(sb + SB_BACKUP_BGS + 4);

  /* Names: as blkid, ext4 as soon as a feature ext3 lacks is on. */
  const char *ver = (x->incompat & ~EXT3_INCOMPAT) || (x->ro_compat & ~EXT3_RO_COMPAT) ? "ext4"
                    : x->compat & COMPAT_HAS_JOURNAL                                 ? "ext3"
                                                                                     : "ext2";
  snprintf(fs->version, sizeof fs->version, "%s", ver);
  size_t n = 0;
  for (; n < 16 && n < sizeof fs->label - 1 && sb[SB_VOLUME_NAME + n]; n++) {
    uint8_t c = sb[SB_VOLUME_NAME + n];
    fs->label[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  fs->label[n] = 0;
  const uint8_t *u = sb + SB_UUID;
  snprintf(fs->uuid, sizeof fs->uuid,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
           u[15]);
  fs->root = EXT4_ROOT_INO;

  /* The root must be a directory we can read. */
  struct fs_inode root;
  if (fs->drv->stat(fs, EXT4_ROOT_INO, &root, e) < 0)
    goto fail;
  if (root.type != FS_DIR) {
    ext4_err(fs, e, ERR_FORMAT, EXT4_ROOT_INO, "the root is not a directory (i_mode 0%o)",
             root.mode);
    goto fail;
  }
  return 0;
fail:
  free(x);
  fs->priv = NULL;
  return -1;
}

static void ext4_unmount(struct fs *fs)
{
  free(fs->priv);
  fs->priv = NULL;
}

/* ---- inodes ---- */

static int ext4_load_inode(struct fs *fs, uint64_t ino, struct ext4_inode *in, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  if (ino == 0 || ino > x->inodes)
    return ext4_err(fs, e, ERR_FORMAT, 0, "inode number %llu is out of range (1 to %u)",
                    (unsigned long long)ino, x->inodes);
  uint32_t g = (uint32_t)((ino - 1) / x->ipg), idx = (uint32_t)((ino - 1) % x->ipg);
  uint64_t dblk = ext4_desc_block(x, g / x->descs_per_block);
  uint8_t d[64];
  size_t dlen = x->desc_size >= 64 ? 64 : 32;
  if (dblk == UINT64_MAX || dblk >= x->blocks)
    return ext4_err(fs, e, ERR_FORMAT, ino, "the descriptor of group %u is past the end of the "
                    "filesystem", g);
  if (fs_pread(fs, d, dlen, (dblk << x->log_bs) + (uint64_t)(g % x->descs_per_block) *
               x->desc_size, e) < 0)
    return -1;
  uint64_t itab = le32(d + BG_INODE_TABLE_LO);
  uint32_t unused = le16(d + BG_ITABLE_UNUSED_LO);
  if (dlen >= 64) {
    itab |= (uint64_t)le32(d + BG_INODE_TABLE_HI) << 32;
    unused |= (uint32_t)le16(d + BG_ITABLE_UNUSED_HI) << 16;
  }
  uint64_t tblocks = ((uint64_t)x->ipg * x->inode_size + x->bs - 1) >> x->log_bs;
  if (itab == 0 || itab >= x->blocks || tblocks > x->blocks - itab)
    return ext4_err(fs, e, ERR_FORMAT, ino, "group %u descriptor: bg_inode_table %llu (%llu "
                    "blocks) is past the end of the filesystem (%llu blocks)", g,
                    (unsigned long long)itab, (unsigned long long)tblocks,
                    (unsigned long long)x->blocks);
  /* With group checksums, an uninitialised part of the table reads as zeros. */
  bool zero = false;
  if (x->ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM))
    zero = (le16(d + BG_FLAGS) & BG_INODE_UNINIT) || (unused <= x->ipg && idx >= x->ipg - unused);
  memset(in, 0, offsetof(struct ext4_inode, raw));
  in->ino = ino;
  if (zero)
    memset(in->raw, 0, x->inode_size);
  else if (fs_pread(fs, in->raw, x->inode_size,
                    (itab << x->log_bs) + (uint64_t)idx * x->inode_size, e) < 0)
    return -1;
  in->mode = le16(in->raw + I_MODE);
  in->flags = le32(in->raw + I_FLAGS);
  in->size = le32(in->raw + I_SIZE_LO) | (uint64_t)le32(in->raw + I_SIZE_HIGH) << 32;
  if (in->mode == 0 || le16(in->raw + I_LINKS) == 0)
    return ext4_err(fs, e, ERR_FORMAT, ino, "is not in use (i_mode 0%o, i_links_count %u)",
                    in->mode, le16(in->raw + I_LINKS));
  /* Logical block numbers are 32 bits. */
  if (in->size > (uint64_t)UINT32_MAX << x->log_bs)
    return ext4_err(fs, e, ERR_FORMAT, ino, "i_size %llu is larger than 2^32 blocks",
                    (unsigned long long)in->size);
  if ((in->flags & IFL_INLINE_DATA) && !(x->incompat & INCOMPAT_INLINE_DATA))
    return ext4_err(fs, e, ERR_FORMAT, ino, "i_flags has inline data but the filesystem lacks "
                    "the inline_data feature");
  if (x->inode_size > EXT4_GOOD_OLD_INODE) {
    uint32_t extra = le16(in->raw + I_EXTRA_ISIZE);
    if (extra % 4 || EXT4_GOOD_OLD_INODE + extra > x->inode_size)
      return ext4_err(fs, e, ERR_FORMAT, ino, "i_extra_isize %u is out of range", extra);
  }
  return 0;
}

static enum fs_ftype ext4_mode_type(uint32_t mode)
{
  switch (mode & S_IFMT_) {
  case S_IFREG_: return FS_REG;
  case S_IFDIR_: return FS_DIR;
  case S_IFLNK_: return FS_LNK;
  default: return FS_OTHER;
  }
}

/* The target of a fast symlink lives in i_block (the kernel's test: no data
 * blocks counted beyond an extended attribute block, no inline data). */
static bool ext4_fast_symlink(struct fs *fs, const struct ext4_inode *in)
{
  struct ext4 *x = ext4_priv(fs);
  if ((in->mode & S_IFMT_) != S_IFLNK_ || (in->flags & IFL_INLINE_DATA))
    return false;
  uint64_t blocks = le32(in->raw + I_BLOCKS_LO);
  if (x->ro_compat & RO_COMPAT_HUGE_FILE)
    blocks |= (uint64_t)le16(in->raw + I_BLOCKS_HIGH) << 32;
  if (in->flags & IFL_HUGE_FILE)
    blocks <<= x->log_bs - 9;
  uint64_t acl = le32(in->raw + I_FILE_ACL_LO) | (uint64_t)le16(in->raw + I_FILE_ACL_HIGH) << 32;
  uint64_t ea = acl ? x->cluster_sectors : 0;
  return blocks <= ea;
}

static int ext4_stat(struct fs *fs, uint64_t ino, struct fs_inode *out, struct error *e)
{
  struct ext4_inode *in = malloc(sizeof *in);
  if (!in)
    return error_set(e, ERR_NOMEM, "out of memory");
  int r = ext4_load_inode(fs, ino, in, e);
  if (r == 0) {
    *out = (struct fs_inode){ .ino = ino, .type = ext4_mode_type(in->mode), .size = in->size,
                              .mode = in->mode };
    if (ext4_fast_symlink(fs, in) && in->size >= EXT4_IBLOCK_LEN)
      r = ext4_err(fs, e, ERR_FORMAT, ino, "fast symlink length %llu does not fit in i_block",
                   (unsigned long long)in->size);
  }
  free(in);
  return r;
}

/* ---- inline data ---- */

/* Finds the in-inode "system.data" attribute: its offset in raw and length. */
static int ext4_inline_xattr(struct fs *fs, const struct ext4_inode *in, uint32_t *voff,
                             uint32_t *vlen, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  *voff = *vlen = 0;
  if (x->inode_size <= EXT4_GOOD_OLD_INODE)
    return 0;
  uint32_t start = EXT4_GOOD_OLD_INODE + le16(in->raw + I_EXTRA_ISIZE), end = x->inode_size;
  if (start + 4 > end || le32(in->raw + start) != EXT4_XATTR_MAGIC)
    return 0;
  uint32_t first = start + 4, p = first;
  /* Each entry is at least 16 bytes, so this ends within (end - first) / 16 steps. */
  while (p + 4 <= end && le32(in->raw + p) != 0) {
    if (p + 16 > end)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "in-inode extended attribute entry at %u runs "
                      "past the inode", p);
    uint32_t nlen = in->raw[p], idx = in->raw[p + 1], offs = le16(in->raw + p + 2);
    uint32_t vino = le32(in->raw + p + 4), size = le32(in->raw + p + 8);
    uint32_t esize = (16 + nlen + 3) & ~3u;
    if (p + esize > end)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "in-inode extended attribute name at %u runs "
                      "past the inode", p);
    if (idx == 7 && nlen == 4 && memcmp(in->raw + p + 16, "data", 4) == 0) {
      if (vino != 0)
        return ext4_err(fs, e, ERR_UNSUPPORTED, in->ino, "system.data is kept in inode %u",
                        vino);
      if (size > end - first || offs > end - first - size)
        return ext4_err(fs, e, ERR_FORMAT, in->ino, "system.data value (e_value_offs %u, "
                        "e_value_size %u) is outside the inode", offs, size);
      *voff = first + offs;
      *vlen = size;
      return 0;
    }
    p += esize;
  }
  return 0;
}

/* ---- block mapping ---- */

/* Extent tree: the run holding logical block lblk. */
static int ext4_map_extent(struct fs *fs, const struct ext4_inode *in, uint32_t lblk,
                           struct ext4_run *run, uint8_t *buf, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  const uint8_t *node = in->raw + EXT4_IBLOCK_OFF;
  uint32_t node_len = EXT4_IBLOCK_LEN;
  uint64_t next = (uint64_t)UINT32_MAX + 1; /* first logical block past this subtree */
  int want = -1;
  for (int level = 0;; level++) {
    uint32_t magic = le16(node), n = le16(node + 2), max = le16(node + 4), depth = le16(node + 6);
    if (magic != EXT4_EXT_MAGIC)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "extent header magic 0x%04x at depth %d is "
                      "not 0xf30a", magic, level);
    if (level == 0 ? depth > EXT4_MAX_DEPTH : (int)depth != want)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "extent header eh_depth %u is out of range "
                      "(%s %d)", depth, level == 0 ? "at most" : "expected",
                      level == 0 ? EXT4_MAX_DEPTH : want);
    if (max > (node_len - 12) / 12 || n > max)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "extent header eh_entries %u / eh_max %u do "
                      "not fit the %u-byte node", n, max, node_len);
    const uint8_t *ent = node + 12;
    /* The last entry starting at or before lblk. */
    uint32_t i = 0;
    bool found = false;
    for (uint32_t k = 0; k < n; k++) {
      uint32_t start = le32(ent + 12 * k);
      if (start > lblk) {
        if (start < next)
          next = start;
        break;
      }
      i = k;
      found = true;
    }
    if (depth == 0) {
      run->pblk = 0;
      run->len = next - lblk;
      if (!found)
        return 0;
      const uint8_t *ee = ent + 12 * i;
      uint32_t start = le32(ee), len = le16(ee + 4);
      bool unwritten = len > 32768;
      if (unwritten)
        len -= 32768;
      uint64_t pblk = le32(ee + 8) | (uint64_t)le16(ee + 6) << 32;
      if (len == 0)
        return ext4_err(fs, e, ERR_FORMAT, in->ino, "extent at logical block %u has length 0",
                        start);
      if (pblk == 0 || pblk >= x->blocks || len > x->blocks - pblk)
        return ext4_err(fs, e, ERR_FORMAT, in->ino, "extent (logical %u, ee_start %llu, ee_len "
                        "%u) is past the end of the filesystem (%llu blocks)", start,
                        (unsigned long long)pblk, len, (unsigned long long)x->blocks);
      if ((uint64_t)lblk >= (uint64_t)start + len)
        return 0; /* in a hole before the next extent */
      run->len = (uint64_t)start + len - lblk;
      if (run->len > next - lblk)
        run->len = next - lblk;
      run->pblk = unwritten ? 0 : pblk + (lblk - start);
      return 0;
    }
    if (!found) {
      run->pblk = 0;
      run->len = next - lblk;
      return 0;
    }
    const uint8_t *ei = ent + 12 * i;
    uint64_t child = le32(ei + 4) | (uint64_t)le16(ei + 8) << 32;
    if (ext4_read_blocks(fs, in->ino, "extent index", child, 1, buf, x->bs, 0, e) < 0)
      return -1;
    node = buf;
    node_len = x->bs;
    want = (int)depth - 1;
  }
}

/* Reads one 32-bit block pointer from an indirect block. */
static int ext4_ind_entry(struct fs *fs, uint64_t ino, uint64_t blk, uint64_t idx, uint64_t *out,
                          struct error *e)
{
  uint8_t b[4];
  if (ext4_read_blocks(fs, ino, "indirect", blk, 1, b, 4, idx * 4, e) < 0)
    return -1;
  *out = le32(b);
  return 0;
}

/* Classic block map: the run holding logical block lblk (one block when
 * mapped, a whole missing subtree when a pointer is 0). */
static int ext4_map_blockmap(struct fs *fs, const struct ext4_inode *in, uint32_t lblk,
                             struct ext4_run *run, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  uint64_t p = x->bs / 4, b = lblk;
  const uint8_t *ib = in->raw + EXT4_IBLOCK_OFF;
  uint64_t ptr;
  int levels;
  run->pblk = 0;
  run->len = 1;
  if (b < 12) {
    ptr = le32(ib + 4 * b);
    levels = 0;
  } else if ((b -= 12) < p) {
    ptr = le32(ib + 4 * 12);
    levels = 1;
  } else if ((b -= p) < p * p) {
    ptr = le32(ib + 4 * 13);
    levels = 2;
  } else if ((b -= p * p) < p * p * p) {
    ptr = le32(ib + 4 * 14);
    levels = 3;
  } else {
    run->len = (uint64_t)UINT32_MAX + 1 - lblk;
    return 0;
  }
  /* span = blocks under one pointer at the current level */
  uint64_t span = levels == 0 ? 1 : levels == 1 ? p : levels == 2 ? p * p : p * p * p;
  for (int l = levels;; l--) {
    if (ptr == 0) {
      run->len = span - (b % span);
      return 0;
    }
    if (l == 0)
      break;
    if (ptr >= x->blocks)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "indirect block %llu (level %d) is past the "
                      "end of the filesystem (%llu blocks)", (unsigned long long)ptr, l,
                      (unsigned long long)x->blocks);
    span /= p;
    if (ext4_ind_entry(fs, in->ino, ptr, (b / span) % p, &ptr, e) < 0)
      return -1;
  }
  if (ptr >= x->blocks)
    return ext4_err(fs, e, ERR_FORMAT, in->ino, "block %llu for logical block %u is past the end "
                    "of the filesystem (%llu blocks)", (unsigned long long)ptr, lblk,
                    (unsigned long long)x->blocks);
  run->pblk = ptr;
  return 0;
}

static int ext4_map(struct fs *fs, const struct ext4_inode *in, uint32_t lblk,
                    struct ext4_run *run, uint8_t *buf, struct error *e)
{
  if (in->flags & IFL_EXTENTS)
    return ext4_map_extent(fs, in, lblk, run, buf, e);
  return ext4_map_blockmap(fs, in, lblk, run, e);
}

/* ---- file content ---- */

/* Copies [off, off+len) of an inode's content (clamped to i_size) into out;
 * buf is a block-sized scratch buffer. Returns bytes copied or -1. */
static ssize_t ext4_read_inode(struct fs *fs, const struct ext4_inode *in, void *out, size_t len,
                               uint64_t off, uint8_t *buf, struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  if (in->flags & IFL_ENCRYPT)
    return ext4_err(fs, e, ERR_UNSUPPORTED, in->ino, "is encrypted");
  if (off >= in->size)
    return 0;
  if (len > in->size - off)
    len = (size_t)(in->size - off);
  if (len > SSIZE_MAX)
    len = SSIZE_MAX;
  uint8_t *o = out;
  if (ext4_fast_symlink(fs, in)) {
    if (in->size >= EXT4_IBLOCK_LEN)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "fast symlink length %llu does not fit in "
                      "i_block", (unsigned long long)in->size);
    memcpy(o, in->raw + EXT4_IBLOCK_OFF + off, len);
    return (ssize_t)len;
  }
  if (in->flags & IFL_INLINE_DATA) {
    uint32_t voff, vlen;
    if (ext4_inline_xattr(fs, in, &voff, &vlen, e) < 0)
      return -1;
    if (in->size > (uint64_t)EXT4_IBLOCK_LEN + vlen)
      return ext4_err(fs, e, ERR_FORMAT, in->ino, "inline data i_size %llu is more than the "
                      "%u bytes stored in the inode", (unsigned long long)in->size,
                      EXT4_IBLOCK_LEN + vlen);
    for (size_t k = 0; k < len; k++) {
      uint64_t at = off + k;
      o[k] = at < EXT4_IBLOCK_LEN ? in->raw[EXT4_IBLOCK_OFF + at]
                                  : in->raw[voff + (at - EXT4_IBLOCK_LEN)];
    }
    return (ssize_t)len;
  }
  size_t done = 0;
  while (done < len) {
    uint64_t pos = off + done;
    uint32_t lblk = (uint32_t)(pos >> x->log_bs);
    uint32_t in_blk = (uint32_t)(pos & (x->bs - 1));
    struct ext4_run run;
    if (ext4_map(fs, in, lblk, &run, buf, e) < 0)
      return -1;
    uint64_t avail = (run.len << x->log_bs) - in_blk;
    size_t n = avail < len - done ? (size_t)avail : len - done;
    if (run.pblk == 0)
      memset(o + done, 0, n);
    else if (fs_pread(fs, o + done, n, (run.pblk << x->log_bs) + in_blk, e) < 0)
      return -1;
    done += n;
  }
  return (ssize_t)done;
}

static ssize_t ext4_read(struct fs *fs, uint64_t ino, void *out, size_t len, uint64_t off,
                         struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  struct ext4_inode *in = malloc(sizeof *in);
  uint8_t *buf = malloc(x->bs);
  ssize_t r = -1;
  if (!in || !buf) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (ext4_load_inode(fs, ino, in, e) < 0)
    goto out;
  if ((in->mode & S_IFMT_) == S_IFDIR_) {
    ext4_err(fs, e, ERR_USAGE, ino, "is a directory");
    goto out;
  }
  r = ext4_read_inode(fs, in, out, len, off, buf, e);
out:
  free(in);
  free(buf);
  return r;
}

/* ---- directories ---- */

/* Called per entry: name (not NUL-terminated), its length, inode, dirent type. */
typedef int (*ext4_entry_fn)(struct fs *fs, void *ctx, const char *name, size_t nlen,
                             uint64_t ino, unsigned dtype, struct error *e);

/* Walks the entries of one directory block (or inline area). Returns the
 * callback's non-zero value to stop, 0 at the end, -1 on error. */
static int ext4_dir_block(struct fs *fs, uint64_t dir, const uint8_t *b, uint32_t len,
                          const char *where, uint64_t where_no, ext4_entry_fn fn, void *ctx,
                          struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  uint32_t off = 0;
  while (off < len) {
    if (len - off < 12)
      return ext4_err(fs, e, ERR_FORMAT, dir, "directory entry at byte %u of %s %llu runs past "
                      "its end", off, where, (unsigned long long)where_no);
    uint32_t ino = le32(b + off), rec = le16(b + off + 4), nlen = b[off + 6];
    unsigned type = b[off + 7];
    if (x->bs == 65536 && len == 65536 && (rec == 65535 || rec == 0))
      rec = 65536;
    else if (x->bs == 65536)
      rec = (rec & 65532) | (rec & 3) << 16;
    if (!(x->incompat & INCOMPAT_FILETYPE)) {
      /* a 16-bit name length; a name is at most 255 bytes */
      if (type != 0 && ino != 0)
        return ext4_err(fs, e, ERR_FORMAT, dir, "directory entry at byte %u of %s %llu: "
                        "name_len %u is longer than 255", off, where,
                        (unsigned long long)where_no, nlen | type << 8);
      type = 0;
    }
    if (rec < 12 || rec % 4 || rec > len - off || (ino != 0 && 8 + nlen > rec))
      return ext4_err(fs, e, ERR_FORMAT, dir, "directory entry at byte %u of %s %llu: rec_len "
                      "%u is invalid (name_len %u, %u bytes left)", off, where,
                      (unsigned long long)where_no, rec, nlen, len - off);
    if (ino != 0 && nlen > 0) {
      if (ino > x->inodes)
        return ext4_err(fs, e, ERR_FORMAT, dir, "directory entry at byte %u of %s %llu: inode "
                        "%u is past s_inodes_count %u", off, where,
                        (unsigned long long)where_no, ino, x->inodes);
      int r = fn(fs, ctx, (const char *)b + off + 8, nlen, ino, type, e);
      if (r)
        return r;
    }
    off += rec;
  }
  return 0;
}

static int ext4_dir_walk(struct fs *fs, uint64_t dir, ext4_entry_fn fn, void *ctx,
                         struct error *e)
{
  struct ext4 *x = ext4_priv(fs);
  struct ext4_inode *in = malloc(sizeof *in);
  uint8_t *buf = malloc(x->bs), *blk = malloc(x->bs);
  int r = -1;
  if (!in || !buf || !blk) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (ext4_load_inode(fs, dir, in, e) < 0)
    goto out;
  if ((in->mode & S_IFMT_) != S_IFDIR_) {
    ext4_err(fs, e, ERR_USAGE, dir, "is not a directory");
    goto out;
  }
  if (in->flags & IFL_ENCRYPT) {
    ext4_err(fs, e, ERR_UNSUPPORTED, dir, "is an encrypted directory");
    goto out;
  }
  if (in->flags & IFL_INLINE_DATA) {
    /* i_block: the parent (4 bytes), then entries; then the system.data value. */
    uint32_t voff, vlen;
    if (ext4_inline_xattr(fs, in, &voff, &vlen, e) < 0)
      goto out;
    r = ext4_dir_block(fs, dir, in->raw + EXT4_IBLOCK_OFF + 4, EXT4_IBLOCK_LEN - 4, "i_block",
                       0, fn, ctx, e);
    if (r == 0 && vlen)
      r = ext4_dir_block(fs, dir, in->raw + voff, vlen, "system.data", 0, fn, ctx, e);
    goto out;
  }
  uint64_t nblocks = (in->size + x->bs - 1) >> x->log_bs, seen = 0;
  for (uint64_t lb = 0; lb < nblocks;) {
    struct ext4_run run;
    if (ext4_map(fs, in, (uint32_t)lb, &run, buf, e) < 0)
      goto out;
    if (run.pblk == 0) {
      lb += run.len; /* a hole or an unwritten extent: no entries */
      continue;
    }
    for (uint64_t k = 0; k < run.len && lb < nblocks; k++, lb++) {
      /* A directory cannot hold more blocks than the filesystem has. */
      if (++seen > x->blocks) {
        ext4_err(fs, e, ERR_FORMAT, dir, "directory maps more blocks than the filesystem has");
        goto out;
      }
      if (ext4_read_blocks(fs, dir, "directory", run.pblk + k, 1, blk, x->bs, 0, e) < 0)
        goto out;
      r = ext4_dir_block(fs, dir, blk, x->bs, "directory block", lb, fn, ctx, e);
      if (r)
        goto out;
    }
  }
  r = 0;
out:
  free(in);
  free(buf);
  free(blk);
  return r;
}

struct ext4_lookup_ctx {
  const char *name;
  size_t len;
  uint64_t ino;
};

static int ext4_lookup_fn(struct fs *fs, void *ctx, const char *name, size_t nlen, uint64_t ino,
                          unsigned dtype, struct error *e)
{
  (void)fs;
  (void)dtype;
  (void)e;
  struct ext4_lookup_ctx *c = ctx;
  if (nlen != c->len || memcmp(name, c->name, nlen) != 0)
    return 0;
  c->ino = ino;
  return 1;
}

static int ext4_lookup(struct fs *fs, uint64_t dir, const char *name, uint64_t *ino,
                       struct error *e)
{
  struct ext4_lookup_ctx c = { .name = name, .len = strlen(name) };
  if (c.len == 0 || c.len > 255)
    return 1;
  int r = ext4_dir_walk(fs, dir, ext4_lookup_fn, &c, e);
  if (r < 0)
    return -1;
  if (r == 0)
    return 1;
  *ino = c.ino;
  return 0;
}

struct ext4_readdir_ctx {
  fs_dirent_cb cb;
  void *ctx;
  int stopped;
};

static int ext4_readdir_fn(struct fs *fs, void *ctx, const char *name, size_t nlen, uint64_t ino,
                           unsigned dtype, struct error *e)
{
  struct ext4_readdir_ctx *c = ctx;
  if ((nlen == 1 && name[0] == '.') || (nlen == 2 && name[0] == '.' && name[1] == '.'))
    return 0;
  char n[256];
  memcpy(n, name, nlen);
  n[nlen] = 0;
  if (strlen(n) != nlen)
    return ext4_err(fs, e, ERR_FORMAT, 0, "directory entry for inode %llu has a NUL in its name",
                    (unsigned long long)ino);
  enum fs_ftype t;
  switch (dtype) {
  case 1: t = FS_REG; break;
  case 2: t = FS_DIR; break;
  case 7: t = FS_LNK; break;
  case 0: { /* no file type in the entry (ext2 without filetype): ask the inode */
    struct fs_inode st;
    if (ext4_stat(fs, ino, &st, e) < 0)
      return -1;
    t = st.type;
    break;
  }
  default: t = FS_OTHER; break;
  }
  if (c->cb(c->ctx, n, ino, t)) {
    c->stopped = 1;
    return 1;
  }
  return 0;
}

/* Lists a directory's entries, leaving out "." and "..". */
static int ext4_readdir(struct fs *fs, uint64_t dir, fs_dirent_cb cb, void *ctx, struct error *e)
{
  struct ext4_readdir_ctx c = { .cb = cb, .ctx = ctx };
  int r = ext4_dir_walk(fs, dir, ext4_readdir_fn, &c, e);
  return r < 0 ? -1 : 0;
}

const struct fs_driver fs_ext4 = {
  .name = "ext4",
  .probe = ext4_probe,
  .mount = ext4_mount,
  .stat = ext4_stat,
  .lookup = ext4_lookup,
  .read = ext4_read,
  .readdir = ext4_readdir,
  .unmount = ext4_unmount,
};
