/* fuzz_xfs.c - libFuzzer harness for the inspector's XFS driver: the input
 * is a raw disk holding an XFS filesystem (seeds are truncated prefixes of
 * small ones: superblock, AG headers, the root inode chunk, a few files;
 * reads past the end fail like any bad block number). Mounts it, resolves
 * and reads the paths the inspector reads, and lists the root. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const files[] = { "/EFI/BOOT/BOOTX64.EFI", "/etc/fstab", "/boot/grub/grub.cfg", "/etc/mtab", "/longlink", NULL };
  static const char *const dirs[] = { "/", NULL };
  fuzz_walk_fs(data, size, files, dirs);
  return 0;
}
