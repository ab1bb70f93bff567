/* fuzz_fat.c - libFuzzer harness for the inspector's FAT driver: the input
 * is a raw disk holding a FAT12, FAT16 or FAT32 volume (seeds: small ones
 * from mkfs.fat and mtools with long names, a deep path, a fragmented file;
 * reads past the end fail like any bad block number). Mounts it, resolves
 * and reads the paths the inspector reads, and lists the root. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const files[] = { "/EFI/BOOT/BOOTX64.EFI", "/efi/boot/bootaa64.efi", "/etc/fstab", "/boot/grub/grub.cfg",
                                       "/A long File Name with spaces.txt", "/a/b/c/d/deep.txt", NULL };
  static const char *const dirs[] = { "/", NULL };
  fuzz_walk_fs(data, size, files, dirs);
  return 0;
}
