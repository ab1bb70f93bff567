/* fuzz_ext4.c - libFuzzer harness for the inspector's ext2/3/4 driver: the
 * input is a raw disk holding the filesystem at offset 0 (seeds in
 * fixtures/fuzz/ext4/ are whole 64 KiB filesystems made by mkfs.ext4 -d:
 * extents, block maps, inline data, 64bit with meta_bg, an htree directory,
 * fast and slow symlinks, a sparse file). Mounts it, resolves and reads the
 * paths the inspector reads (through symlinks), and lists a few directories.
 * Every walk is bounded: the driver's own bounds, a cap on entries listed,
 * 1 MiB per file and a read limit on the disk. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const files[] = { "/etc/os-release", "/etc/fstab", "/boot/grub/grub.cfg", "/link", "/slowlink", "/sparse", "/big", NULL };
  static const char *const dirs[] = { "/", "/etc", "/boot", "/many", NULL };
  fuzz_walk_fs(data, size, files, dirs);
  return 0;
}
