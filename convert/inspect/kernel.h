/* kernel.h - what a kernel image says about itself (x86 bzImage setup
 * header, arm64 Image header, PE/COFF EFI stub, ELF), and what an initramfs
 * carries (cpio archives, compressed with gzip, zstd, xz or lz4, after an
 * optional uncompressed early-microcode archive). */
#ifndef AMIPORT_KERNEL_H
#define AMIPORT_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs.h"

#define KERNEL_HEAD 65536 /* bytes of a kernel file kernel_identify looks at */

struct kernel_id {
  char version[128]; /* from the bzImage header; empty when the header has none */
  const char *arch;  /* "x86_64", "i386", "arm64", or NULL */
  const char *kind;  /* "bzImage", "arm64 Image", "EFI zboot", "ELF", "PE" */
};

/* Identifies a kernel from its first bytes; false if it is none we know. */
bool kernel_identify(const uint8_t *head, size_t len, struct kernel_id *k);

/* Architecture of a PE/COFF executable (an EFI loader), or NULL. */
const char *pe_machine_arch(const uint8_t *head, size_t len);

enum { INITRAMFS_NVME, INITRAMFS_ENA, INITRAMFS_XEN_BLKFRONT, INITRAMFS_XEN_NETFRONT,
       INITRAMFS_NDRIVERS };

struct initramfs_info {
  bool has[INITRAMFS_NDRIVERS]; /* the driver's module is in the archive */
  unsigned files;
  char compression[8];          /* of the main archive: "gzip", "zstd", "xz", "lz4", "none" */
  bool microcode_prefix;        /* an uncompressed early archive came first */
};

#define INITRAMFS_MAX_OUTPUT (1ull << 30) /* decompressed bytes, at most */

/* Reads up to len bytes at off; returns the count (0 at the end) or -1. */
typedef ssize_t (*initramfs_read_fn)(void *ctx, void *buf, size_t len, uint64_t off,
                                     struct error *e);

/* Lists an initramfs of size bytes as a stream, in constant memory; name
 * names it in errors. */
int initramfs_scan_stream(initramfs_read_fn read, void *ctx, uint64_t size, const char *name,
                          struct initramfs_info *out, struct error *e);
/* The same for a file (inode ino) of a filesystem. */
int initramfs_scan(struct fs *fs, uint64_t ino, uint64_t size, struct initramfs_info *out,
                   struct error *e);

/* The module file names (without .ko and compression suffixes) of each driver. */
extern const char *const initramfs_module_names[INITRAMFS_NDRIVERS];

#endif
