/* qcow2.h - on-disk layout of qcow2, shared by the reader (qcow2.c) and the
 * writer (qcow2_write.c). All fields are big-endian.
 * Spec: qemu docs/interop/qcow2.txt. */
#ifndef AMIPORT_QCOW2_H
#define AMIPORT_QCOW2_H

#include <stdint.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

/* Header field offsets. */
enum {
  QH_MAGIC = 0, QH_VERSION = 4, QH_BACKING_OFFSET = 8, QH_BACKING_SIZE = 16,
  QH_CLUSTER_BITS = 20, QH_SIZE = 24, QH_CRYPT_METHOD = 32, QH_L1_SIZE = 36,
  QH_L1_OFFSET = 40, QH_REFCOUNT_TABLE_OFFSET = 48, QH_REFCOUNT_TABLE_CLUSTERS = 56,
  QH_NB_SNAPSHOTS = 60, QH_SNAPSHOTS_OFFSET = 64,
  QH_V2_LENGTH = 72,
  /* version 3 */
  QH_INCOMPAT = 72, QH_COMPAT = 80, QH_AUTOCLEAR = 88, QH_REFCOUNT_ORDER = 96,
  QH_HEADER_LENGTH = 100, QH_COMPRESSION_TYPE = 104,
  QH_V3_LENGTH = 104, QH_V3_LENGTH_WITH_COMPRESSION = 112,
};

enum {
  QCOW2_INCOMPAT_DIRTY = 1u << 0,
  QCOW2_INCOMPAT_CORRUPT = 1u << 1,
  QCOW2_INCOMPAT_DATA_FILE = 1u << 2,
  QCOW2_INCOMPAT_COMPRESSION = 1u << 3,
  QCOW2_INCOMPAT_EXTL2 = 1u << 4,
  QCOW2_INCOMPAT_KNOWN = 0x1f,
  QCOW2_COMPAT_LAZY_REFCOUNTS = 1u << 0,
  QCOW2_AUTOCLEAR_BITMAPS = 1u << 0,
  QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1u << 1,
};

enum { QCOW2_COMPRESS_ZLIB = 0, QCOW2_COMPRESS_ZSTD = 1 };

/* Header extension types. */
enum {
  QCOW2_EXT_END = 0x00000000u,
  QCOW2_EXT_BACKING_FORMAT = 0xe2792acau,
  QCOW2_EXT_FEATURE_TABLE = 0x6803f857u,
  QCOW2_EXT_BITMAPS = 0x23852875u,
  QCOW2_EXT_CRYPTO = 0x0537be77u,
  QCOW2_EXT_DATA_FILE = 0x44415441u,
};

/* L1 and L2 entries. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO 1ull                     /* standard L2 entries, v3 */
#define QCOW2_L1_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_SUBCLUSTERS 32 /* per cluster with extended L2 entries */
#define QCOW2_MAX_REFTABLE_BYTES (8ull << 20) /* qemu's QCOW_MAX_REFTABLE_SIZE */
#define QCOW2_MAX_SNAPSHOTS 65536              /* qemu's QCOW_MAX_SNAPSHOTS */
#define QCOW2_SNAPSHOT_HEADER_BYTES 40         /* fixed part of a snapshot table entry */

/* Compressed cluster descriptor: host offset in the low (62 - (cluster_bits - 8))
 * bits, then the number of additional 512-byte sectors. */
static inline unsigned qcow2_csize_shift(unsigned cluster_bits) { return 62 - (cluster_bits - 8); }

/* The writer (qcow2_write.c); the reader's vtable points at these. */
#include <stddef.h>
struct create_opts;
struct img;
struct error;
int qcow2w_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e);
int qcow2w_pwrite(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
int qcow2w_finish(struct img *im, struct error *e);
void qcow2w_close(struct img *im);
extern const char qcow2w_create_help[];

#endif
