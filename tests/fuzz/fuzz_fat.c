/* fuzz_fat.c - libFuzzer harness for the inspector's FAT driver: the input
 * is a raw disk holding a FAT12, FAT16 or FAT32 volume (seeds: small ones
 * from mkfs.fat and mtools with long names, a deep path, a fragmented file;
 * reads past the end fail like any bad block number). Mounts it, resolves
 * and reads the paths the inspector reads, and lists the root. */
#include "fs.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_entry(void *ctx, const char *name, uint64_t ino, enum fs_ftype type)
{
  (void)name;
  (void)ino;
  (void)type;
  return ++*(unsigned *)ctx >= 4096; /* bounded: stop after 4096 entries */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const paths[] = { "/EFI/BOOT/BOOTX64.EFI", "/efi/boot/bootaa64.efi",
                                       "/etc/fstab", "/boot/grub/grub.cfg",
                                       "/A long File Name with spaces.txt", "/a/b/c/d/deep.txt" };
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  struct error e = { 0 };
  struct open_opts o = { .quiet = true };
  struct img *im = img_open_fd(fd, "fuzz.img", "raw", &o, &e);
  if (!im)
    return 0;
  struct disk d;
  if (disk_init(&d, im, &e) == 0) {
    d.read_limit = 64u << 20;
    struct fs fs;
    const char *name;
    if (fs_open(&fs, &d, 0, im->size, &name, &e) == 0) {
      for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char *buf;
        size_t len;
        struct fs_inode in;
        if (fs_read_file(&fs, paths[i], 1u << 20, &buf, &len, &e) == 0)
          free(buf);
        fs_resolve(&fs, paths[i], false, &in, &e);
      }
      unsigned n = 0;
      fs.drv->readdir(&fs, fs.root, count_entry, &n, &e);
      fs_close(&fs);
    }
    disk_free(&d);
  }
  img_close(im);
  return 0;
}
