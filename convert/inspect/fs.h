/* fs.h - read-only filesystem drivers over a region of a disk (a partition
 * or the whole disk), and path resolution on top of them.
 *
 * A driver answers five questions about inodes (stat, lookup, read, readdir,
 * and mount to find the root); fs.c resolves paths (with symlinks, bounded
 * hops and depth) and reads whole small files. Drivers never trust on-disk
 * values: every block number, size and count is bounded before use, every
 * walk over on-disk links terminates (cycles, depth), and errors name the
 * filesystem, the inode and the field. */
#ifndef AMIPORT_FS_H
#define AMIPORT_FS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "disk.h"

enum fs_ftype { FS_OTHER, FS_REG, FS_DIR, FS_LNK };

struct fs_inode {
  uint64_t ino;
  enum fs_ftype type;
  uint64_t size;   /* bytes (for FS_LNK, the target's length) */
  uint32_t mode;   /* permission bits and type, as stat(2) */
};

struct fs;

/* Called for each directory entry; return non-zero to stop the walk. */
typedef int (*fs_dirent_cb)(void *ctx, const char *name, uint64_t ino, enum fs_ftype type);

struct fs_driver {
  const char *name; /* "ext4", "xfs", "vfat" */
  /* Does the region start with this filesystem's signature? 0..100. */
  int (*probe)(struct disk *d, uint64_t base, uint64_t size);
  /* Reads the superblock: fills fs->root, fs->label, fs->uuid, fs->priv. */
  int (*mount)(struct fs *fs, struct error *e);
  int (*stat)(struct fs *fs, uint64_t ino, struct fs_inode *out, struct error *e);
  /* Finds name in directory dir: 0 found (*ino set), 1 not there, -1 error. */
  int (*lookup)(struct fs *fs, uint64_t dir, const char *name, uint64_t *ino, struct error *e);
  /* Reads up to len bytes of a file's (or a symlink's target's) content at
   * off; returns the number read (0 at the end), -1 on error. Holes read as
   * zeros. */
  ssize_t (*read)(struct fs *fs, uint64_t ino, void *buf, size_t len, uint64_t off,
                  struct error *e);
  int (*readdir)(struct fs *fs, uint64_t dir, fs_dirent_cb cb, void *ctx, struct error *e);
  void (*unmount)(struct fs *fs);
};

struct fs {
  const struct fs_driver *drv;
  struct disk *disk;
  uint64_t base, size; /* the region of the disk this filesystem occupies */
  uint64_t root;       /* inode of / */
  char label[64];
  char uuid[40];       /* canonical text form, lower case */
  char version[16];    /* "ext2", "ext3", "ext4", "xfs v5", "FAT32"... */
  void *priv;
};

/* Reads [off, off+len) of the filesystem region; outside it is an error. */
int fs_pread(struct fs *fs, void *buf, size_t len, uint64_t off, struct error *e);

/* Identifies and mounts the filesystem in a region: 0 mounted, 1 no
 * filesystem we can read there (*name set to a signature we recognised but
 * cannot read, e.g. "btrfs", "LVM2_member", "crypto_LUKS", "ntfs", "swap", or
 * NULL; for "ntfs", fs->label and fs->uuid are filled), -1 error. */
int fs_open(struct fs *fs, struct disk *d, uint64_t base, uint64_t size, const char **name,
            struct error *e);
void fs_close(struct fs *fs);

/* Resolves an absolute path, following symlinks (at most 40 hops, each
 * resolved relative to its own directory, never outside this filesystem):
 * 0 found, 1 not there, -1 error. follow_last: follow a final symlink. */
int fs_resolve(struct fs *fs, const char *path, bool follow_last, struct fs_inode *out,
               struct error *e);
/* Reads a whole regular file of at most max bytes (NUL-terminated buffer,
 * caller frees): 0 read, 1 not there, -1 error (including "larger than max"). */
int fs_read_file(struct fs *fs, const char *path, size_t max, char **buf, size_t *len,
                 struct error *e);

extern const struct fs_driver fs_ext4, fs_xfs, fs_fat;

/* ntfs.c: NTFS is recognised and named, not read. */
struct ntfs_boot {
  uint32_t sector, cluster, record; /* bytes */
  uint64_t total_sectors, mft_lcn, serial;
};
/* Is b (a volume's first sector) an NTFS boot sector whose BPB fits a
 * region of that many bytes? */
bool ntfs_boot_sector(const uint8_t *b, size_t len, uint64_t region, struct ntfs_boot *nb);
/* "BOOTMGR" or "NTLDR" when the boot code (the volume's first sectors)
 * names that loader, in ASCII or UTF-16; NULL otherwise. */
const char *ntfs_boot_loader(const uint8_t *b, size_t len);
/* An NTFS volume at base: fills fs->uuid (the serial), fs->label, fs->version. */
bool ntfs_identify(struct disk *d, uint64_t base, uint64_t size, struct fs *fs);

#endif
