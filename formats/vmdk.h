/* vmdk.h - on-disk layout of VMDK sparse extents (hosted sparse and
 * stream-optimized), shared by the reader (vmdk.c), the writer
 * (vmdk_write.c) and the OVA reader (ova.c). All fields are little-endian;
 * offsets and sizes in the header count 512-byte sectors.
 * Spec: VMware "Virtual Disk Format 5.0" technical note. */
#ifndef AMIPORT_VMDK_H
#define AMIPORT_VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMDK_SECTOR 512u
#define VMDK4_MAGIC 0x564d444bu   /* "KDMV" read as a little-endian uint32 */
#define VMDK3_MAGIC 0x44574f43u   /* "COWD": legacy VMDK3 / ESX vmfsSparse */
#define VMDK_SESPARSE_MAGIC 0xcafebabeull /* seSparse const header, le64 */
#define VMDK_GD_AT_END 0xffffffffffffffffull

/* SparseExtentHeader: one sector at the start of a sparse extent (and, in a
 * stream-optimized extent, again in the footer). */
enum {
  VH_MAGIC = 0, VH_VERSION = 4, VH_FLAGS = 8, VH_CAPACITY = 12, VH_GRAIN_SIZE = 20,
  VH_DESC_OFFSET = 28, VH_DESC_SIZE = 36, VH_NUM_GTES = 44, VH_RGD_OFFSET = 48,
  VH_GD_OFFSET = 56, VH_OVERHEAD = 64, VH_UNCLEAN = 72, VH_NL_CHARS = 73, /* "\n \r\n" */
  VH_COMPRESS = 77, VH_LENGTH = 79,
};

enum {
  VMDK_FLAG_NL_DETECT = 1u << 0,  /* the four end-of-line check bytes are valid */
  VMDK_FLAG_RGD = 1u << 1,        /* a redundant grain directory exists */
  VMDK_FLAG_ZERO_GRAIN = 1u << 2, /* GTE value 1 means "grain of zeros" */
  VMDK_FLAG_COMPRESSED = 1u << 16,
  VMDK_FLAG_MARKERS = 1u << 17,
};

enum { VMDK_COMPRESS_NONE = 0, VMDK_COMPRESS_DEFLATE = 1 };

#define VMDK_GTE_ZEROED 1u

/* Stream-optimized markers. A grain marker is {le64 lba, le32 size, data};
 * a metadata marker is a whole sector {le64 sectors, le32 0, le32 type}. */
#define VMDK_GRAIN_MARKER_LEN 12u
enum {
  VMDK_MARKER_EOS = 0,
  VMDK_MARKER_GT = 1,
  VMDK_MARKER_GD = 2,
  VMDK_MARKER_FOOTER = 3,
};

/* Limits the reader enforces (qemu's, or VMware's where qemu has none). */
#define VMDK_MAX_GRAIN_SECTORS 0x200000u   /* 1 GiB: qemu's bound */
#define VMDK_MAX_CGRAIN_SECTORS 0x8000u    /* 16 MiB: compressed grains are buffered */
#define VMDK_MAX_GTES 512u                 /* entries per grain table (qemu's bound) */
#define VMDK_MAX_DESC_BYTES (1u << 20)
#define VMDK_MAX_EXTENTS 65536u

/* The writer (vmdk_write.c); the reader's vtable points at these. */
struct create_opts;
struct img;
struct error;
struct open_opts;
int vmdkw_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e);
int vmdkw_pwrite(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
void *vmdkw_encode(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
int vmdkw_commit(struct img *im, void *blob, struct error *e);
int vmdkw_finish(struct img *im, struct error *e);
void vmdkw_close(struct img *im);
extern const char vmdkw_create_help[];

/* Opens the VMDK that is the byte range [base, base+len) of fd (a whole
 * .vmdk file, or a member of an OVA's tar) as im: sets im->size and
 * im->priv. fd stays the caller's. A text descriptor naming other files is
 * only accepted when in_archive is false. */
int vmdk_open_at(struct img *im, int fd, uint64_t base, uint64_t len, bool in_archive,
                 const struct open_opts *o, struct error *e);
/* Frees what vmdk_open_at set up (reader side). */
void vmdk_free(struct img *im);

#endif
