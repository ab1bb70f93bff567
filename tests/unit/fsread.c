/* fsread - test tool: reads a filesystem inside an image through the
 * inspector's drivers, with no partition table logic.
 *   fsread IMAGE OFFSET SIZE info           driver, label, uuid, version
 *   fsread IMAGE OFFSET SIZE cat PATH       file content to stdout
 *   fsread IMAGE OFFSET SIZE ls PATH        one "type name" line per entry
 *   fsread IMAGE OFFSET SIZE stat PATH      "type size mode" (no final symlink follow)
 *   fsread IMAGE OFFSET SIZE initramfs PATH what initramfs_scan finds in the file
 * OFFSET and SIZE in bytes (SIZE 0 = to the end of the image). Exit 0 ok,
 * 1 error (message on stderr), 3 not found. */
#include "fs.h"
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char type_char[] = { '?', 'f', 'd', 'l' };

static int print_entry(void *ctx, const char *name, uint64_t ino, enum fs_ftype type)
{
  (void)ctx;
  printf("%c %s %llu\n", type_char[type], name, (unsigned long long)ino);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: fsread IMAGE OFFSET SIZE info|cat|ls|stat|initramfs [PATH]\n");
    return 2;
  }
  struct error e = { 0 };
  struct img *im = img_open(argv[1], NULL, &(struct open_opts){ .quiet = true }, &e);
  if (!im) {
    fprintf(stderr, "fsread: %s\n", e.msg);
    return 1;
  }
  struct disk d;
  struct fs fs;
  const char *name;
  uint64_t off = strtoull(argv[2], NULL, 0), size = strtoull(argv[3], NULL, 0);
  if (!size)
    size = im->size - off;
  int rc = 1;
  if (disk_init(&d, im, &e) < 0)
    goto out;
  int r = fs_open(&fs, &d, off, size, &name, &e);
  if (r == 1) {
    printf("none %s\n", name ? name : "-");
    rc = 3;
    goto out_disk;
  }
  if (r < 0)
    goto out_disk;
  const char *cmd = argv[4], *path = argc > 5 ? argv[5] : "/";
  if (strcmp(cmd, "info") == 0) {
    printf("%s label=%s uuid=%s version=%s\n", fs.drv->name, fs.label, fs.uuid, fs.version);
    rc = 0;
  } else if (strcmp(cmd, "cat") == 0) {
    char *buf;
    size_t len;
    r = fs_read_file(&fs, path, 256u << 20, &buf, &len, &e);
    if (r == 0) {
      fwrite(buf, 1, len, stdout);
      free(buf);
    }
    rc = r < 0 ? 1 : r == 1 ? 3 : 0;
  } else if (strcmp(cmd, "initramfs") == 0) {
    struct fs_inode in;
    struct initramfs_info info;
    r = fs_resolve(&fs, path, true, &in, &e);
    if (r == 0)
      r = initramfs_scan(&fs, in.ino, in.size, &info, &e);
    if (r == 0) {
      printf("compression=%s files=%u microcode=%d", info.compression, info.files,
             info.microcode_prefix);
      for (int i = 0; i < INITRAMFS_NDRIVERS; i++)
        if (info.has[i])
          printf(" %s", initramfs_module_names[i]);
      printf("\n");
    }
    rc = r < 0 ? 1 : r == 1 ? 3 : 0;
  } else if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "stat") == 0) {
    struct fs_inode in;
    r = fs_resolve(&fs, path, cmd[0] == 'l', &in, &e);
    if (r == 0 && cmd[0] == 's')
      printf("%c %llu %o\n", type_char[in.type], (unsigned long long)in.size, in.mode);
    else if (r == 0 && in.type != FS_DIR)
      r = error_set(&e, ERR_USAGE, "%s is not a directory", path);
    else if (r == 0)
      r = fs.drv->readdir(&fs, in.ino, print_entry, NULL, &e);
    rc = r < 0 ? 1 : r == 1 ? 3 : 0;
  } else {
    fprintf(stderr, "fsread: unknown command %s\n", cmd);
    rc = 2;
  }
  fs_close(&fs);
out_disk:
  disk_free(&d);
out:
  if (rc == 1)
    fprintf(stderr, "fsread: %s\n", e.msg);
  img_close(im);
  return rc;
}
