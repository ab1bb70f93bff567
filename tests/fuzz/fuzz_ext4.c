/* fuzz_ext4.c - libFuzzer harness for the inspector's ext2/3/4 driver: the
 * input is a raw disk holding the filesystem at offset 0 (seeds in
 * fixtures/fuzz/ext4/ are whole 64 KiB filesystems made by mkfs.ext4 -d:
 * extents, block maps, inline data, 64bit with meta_bg, an htree directory,
 * fast and slow symlinks, a sparse file). Mounts it, resolves and reads the
 * paths the inspector reads (through symlinks), and lists a few directories.
 * Every walk is bounded: the driver's own bounds, a cap on entries listed,
 * 1 MiB per file and a read limit on the disk. */
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
  return ++*(unsigned *)ctx >= 4096; /* stop after 4096 entries */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char *const files[] = { "/etc/os-release", "/etc/fstab", "/boot/grub/grub.cfg",
                                       "/link", "/slowlink", "/sparse", "/big" };
  static const char *const dirs[] = { "/", "/etc", "/boot", "/many" };
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  struct error e = { 0 };
  struct open_opts o = { .quiet = true };
  struct img *im = img_open_fd(fd, "fuzz.ext4", "raw", &o, &e);
  if (!im)
    return 0;
  struct disk d;
  if (disk_init(&d, im, &e) == 0) {
    d.read_limit = 64u << 20;
    struct fs fs;
    const char *name;
    if (fs_open(&fs, &d, 0, im->size, &name, &e) == 0) {
      for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *buf;
        size_t len;
        struct fs_inode in;
        if (fs_read_file(&fs, files[i], 1u << 20, &buf, &len, &e) == 0)
          free(buf);
        fs_resolve(&fs, files[i], false, &in, &e);
      }
      for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        struct fs_inode in;
        unsigned n = 0;
        if (fs_resolve(&fs, dirs[i], true, &in, &e) == 0 && in.type == FS_DIR)
          fs.drv->readdir(&fs, in.ino, count_entry, &n, &e);
      }
      fs_close(&fs);
    }
    disk_free(&d);
  }
  img_close(im);
  return 0;
}
