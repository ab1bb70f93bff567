/* qcow2.c - qcow2 reader (versions 2 and 3): the active layer of an image,
 * through its L1 and L2 tables; standard and extended (subcluster) L2
 * entries, zero clusters, zlib and zstd compressed clusters, and backing
 * files when the user allows them. Encryption and external data files are
 * refused. Every header and table field is bounded before it is used to
 * allocate or seek. The writer is in qcow2_write.c.
 * Spec: qemu docs/interop/qcow2.txt. */
#include "image.h"
#include "qcow2.h"

#include <json-c/json.h>
#include <libdeflate.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

struct qcow2 {
  unsigned version, cluster_bits, l2_bits; /* l2_bits: log2 of entries per L2 table */
  uint64_t cluster_size, file_size;
  bool extended_l2;
  unsigned compression_type, refcount_order;
  uint64_t incompat, compat, autoclear;
  uint32_t l1_size;
  uint64_t l1_offset;
  uint64_t *l1; /* host-endian copy of the L1 table */
  char *backing_name, *backing_format;
  struct img *backing; /* NULL unless the user allowed backing files */
};

/* What one guest cluster (or subcluster) resolves to. */
enum cl_kind { CL_HOLE, CL_ZERO, CL_DATA, CL_COMPRESSED };
struct cl {
  enum cl_kind kind;
  uint64_t host;  /* CL_DATA: host offset of the guest offset asked for */
  uint64_t len;   /* bytes from the guest offset that share this answer */
  uint64_t entry; /* CL_COMPRESSED: the L2 entry */
};

static int qcow2_probe(const uint8_t *head, size_t len)
{
  return len >= 8 && be32(head) == QCOW2_MAGIC && (be32(head + 4) == 2 || be32(head + 4) == 3)
             ? 100 : 0;
}

static void qcow2_free(struct qcow2 *q)
{
  if (!q)
    return;
  free(q->l1);
  free(q->backing_name);
  free(q->backing_format);
  img_close(q->backing);
  free(q);
}

/* Header extensions: the backing format, and the ones we must refuse. */
static int qcow2_read_extensions(struct img *im, struct qcow2 *q, const uint8_t *hdr,
                                 uint64_t start, uint64_t end, struct error *e)
{
  uint64_t at = start;
  while (at + 8 <= end) {
    uint32_t type = be32(hdr + at), len = be32(hdr + at + 4);
    at += 8;
    if (type == QCOW2_EXT_END)
      return 0;
    if (len > end - at)
      return error_set(e, ERR_FORMAT, "%s: qcow2 header extension 0x%08x has length %u, past "
                       "the end of the header cluster", im->path, type, len);
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT: /* given twice, the last one counts */
      free(q->backing_format);
      if (!(q->backing_format = strndup((const char *)hdr + at, len)))
        return error_set(e, ERR_NOMEM, "out of memory");
      break;
    case QCOW2_EXT_DATA_FILE:
      return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 image keeps its data in an external data "
                       "file (data_file '%.*s'); not supported", im->path,
                       (int)(len < 256 ? len : 256), (const char *)hdr + at);
    case QCOW2_EXT_CRYPTO:
      return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 image is encrypted (LUKS); not supported",
                       im->path);
    default: /* feature name table, bitmaps, unknown: not needed to read data */
      break;
    }
    at += (len + 7) & ~7ull;
  }
  return 0;
}

/* Opens the backing file the header names, only when the user allowed it. */
static int qcow2_open_backing(struct img *im, struct qcow2 *q, const struct open_opts *o,
                              struct error *e)
{
  if (!o->allow_backing)
    return error_set(e, ERR_REFUSED, "%s: qcow2 image names a backing file '%s'; refusing to "
                     "open it (pass --allow-backing to follow backing files)", im->path,
                     q->backing_name);
  char self[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
  if (!realpath(im->path, self))
    return error_errno(e, "%s: realpath", im->path);
  if (q->backing_name[0] == '/') {
    snprintf(path, sizeof path, "%s", q->backing_name);
  } else {
    const char *slash = strrchr(im->path, '/');
    int dirlen = slash ? (int)(slash - im->path) : 1;
    if (snprintf(path, sizeof path, "%.*s/%s", dirlen, slash ? im->path : ".",
                 q->backing_name) >= (int)sizeof path)
      return error_set(e, ERR_FORMAT, "%s: backing file name too long", im->path);
  }
  if (!realpath(path, real))
    return error_errno(e, "%s: backing file '%s'", im->path, q->backing_name);
  unsigned depth = 1;
  struct open_chain me = { self, o->chain };
  for (const struct open_chain *c = &me; c; c = c->up, depth++) {
    if (strcmp(c->path, real) == 0)
      return error_set(e, ERR_FORMAT, "%s: backing chain loop: '%s' is already in the chain",
                       im->path, q->backing_name);
  }
  if (depth > IMG_MAX_BACKING_DEPTH)
    return error_set(e, ERR_FORMAT, "%s: backing chain deeper than %d images", im->path,
                     IMG_MAX_BACKING_DEPTH);
  struct open_opts bo = *o;
  bo.chain = &me;
  const char *fmt = q->backing_format;
  if (!fmt) {
    /* Never guess raw for a backing file: only a format with magic bytes. */
    struct img *probe = img_open(real, NULL, &(struct open_opts){ .quiet = true, .chain = &me,
                                 .allow_backing = o->allow_backing,
                                 .max_table_bytes = o->max_table_bytes }, e);
    if (!probe)
      return error_prefix(e, "%s: backing file '%s'", im->path, q->backing_name);
    if (probe->guessed) {
      img_close(probe);
      return error_set(e, ERR_REFUSED, "%s: backing file '%s' has no format in the header and "
                       "no magic bytes; refusing to guess raw", im->path, q->backing_name);
    }
    q->backing = probe;
    return 0;
  }
  if (!(q->backing = img_open(real, fmt, &bo, e)))
    return error_prefix(e, "%s: backing file '%s'", im->path, q->backing_name);
  return 0;
}

/* The refcount and snapshot tables are never read (only the active layer
 * is), but their header fields are bounded as qemu bounds them at open, so
 * an image qemu-img refuses is not read as if it were sound. */
static int qcow2_check_tables(struct img *im, struct qcow2 *q, const uint8_t *fixed,
                              struct error *e)
{
  uint64_t rt_offset = be64(fixed + QH_REFCOUNT_TABLE_OFFSET);
  uint32_t rt_clusters = be32(fixed + QH_REFCOUNT_TABLE_CLUSTERS);
  uint64_t rt_bytes = (uint64_t)rt_clusters << q->cluster_bits;
  if (rt_bytes > QCOW2_MAX_REFTABLE_BYTES)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_table_clusters is %u (a "
                     "%llu-byte table), over the %llu-byte limit for refcount tables", im->path,
                     rt_clusters, (unsigned long long)rt_bytes,
                     (unsigned long long)QCOW2_MAX_REFTABLE_BYTES);
  if (rt_clusters == 0)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_table_clusters is 0; the "
                     "image has no refcount table", im->path);
  if (rt_offset % q->cluster_size)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_table_offset is 0x%llx; "
                     "not aligned to the cluster size %llu", im->path,
                     (unsigned long long)rt_offset, (unsigned long long)q->cluster_size);
  if (rt_offset < q->cluster_size)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_table_offset is 0x%llx; "
                     "the refcount table would overlap the header cluster", im->path,
                     (unsigned long long)rt_offset);
  if (rt_offset > q->file_size || rt_bytes > q->file_size - rt_offset)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_table_offset is 0x%llx; a "
                     "%u-cluster table there runs past the end of the file (file size %llu)",
                     im->path, (unsigned long long)rt_offset, rt_clusters,
                     (unsigned long long)q->file_size);

  uint32_t nb_snapshots = be32(fixed + QH_NB_SNAPSHOTS);
  uint64_t sn_offset = be64(fixed + QH_SNAPSHOTS_OFFSET);
  if (nb_snapshots > QCOW2_MAX_SNAPSHOTS)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field nb_snapshots is %u; at most %d",
                     im->path, nb_snapshots, QCOW2_MAX_SNAPSHOTS);
  if (sn_offset % q->cluster_size)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field snapshots_offset is 0x%llx; not "
                     "aligned to the cluster size %llu", im->path,
                     (unsigned long long)sn_offset, (unsigned long long)q->cluster_size);
  if (nb_snapshots == 0)
    return 0;
  /* Each entry is at least its fixed part long. */
  uint64_t sn_min = (uint64_t)nb_snapshots * QCOW2_SNAPSHOT_HEADER_BYTES;
  if (sn_offset < q->cluster_size)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field snapshots_offset is 0x%llx; the "
                     "snapshot table (nb_snapshots %u) would overlap the header cluster",
                     im->path, (unsigned long long)sn_offset, nb_snapshots);
  if (sn_offset > q->file_size || sn_min > q->file_size - sn_offset)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field snapshots_offset is 0x%llx; a "
                     "table of %u snapshots (at least %llu bytes) there runs past the end of "
                     "the file (file size %llu)", im->path, (unsigned long long)sn_offset,
                     nb_snapshots, (unsigned long long)sn_min, (unsigned long long)q->file_size);
  return 0;
}

static int qcow2_open(struct img *im, const struct open_opts *o, struct error *e)
{
  struct stat st;
  if (fstat(im->fd, &st) < 0)
    return error_errno(e, "%s: stat", im->path);
  uint64_t file_size = (uint64_t)st.st_size;
  uint8_t *hdr = NULL;
  struct qcow2 *q = calloc(1, sizeof *q);
  if (!q)
    return error_set(e, ERR_NOMEM, "out of memory");
  im->priv = q;
  q->file_size = file_size;

  uint8_t fixed[QH_V3_LENGTH_WITH_COMPRESSION] = { 0 };
  if (file_size < QH_V2_LENGTH)
    return error_set(e, ERR_FORMAT, "%s: truncated: the file is %llu bytes, shorter than a "
                     "qcow2 header", im->path, (unsigned long long)file_size);
  if (img_pread_file(im->fd, fixed, file_size < sizeof fixed ? (size_t)file_size : sizeof fixed,
                     0, im->path, e) < 0)
    return -1;
  if (be32(fixed + QH_MAGIC) != QCOW2_MAGIC)
    return error_set(e, ERR_FORMAT, "%s: not a qcow2 image (bad magic)", im->path);
  q->version = be32(fixed + QH_VERSION);
  if (q->version != 2 && q->version != 3)
    return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 header field version is %u; only 2 and 3 "
                     "exist", im->path, q->version);
  q->cluster_bits = be32(fixed + QH_CLUSTER_BITS);
  if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field cluster_bits is %u; must be %d to %d",
                     im->path, q->cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
  q->cluster_size = 1ull << q->cluster_bits;
  im->size = be64(fixed + QH_SIZE);
  im->block_size = (uint32_t)q->cluster_size;
  if (im->size > (1ull << 62))
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field size is %llu; larger than 2^62",
                     im->path, (unsigned long long)im->size);
  uint32_t crypt = be32(fixed + QH_CRYPT_METHOD);
  if (crypt)
    return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 image is encrypted (crypt_method %u, %s); "
                     "not supported", im->path, crypt, crypt == 1 ? "AES" : "LUKS");

  uint64_t header_length = QH_V2_LENGTH;
  q->refcount_order = 4;
  if (q->version == 3) {
    if (file_size < QH_V3_LENGTH)
      return error_set(e, ERR_FORMAT, "%s: truncated: the file is %llu bytes, shorter than a "
                       "qcow2 version 3 header", im->path, (unsigned long long)file_size);
    q->incompat = be64(fixed + QH_INCOMPAT);
    q->compat = be64(fixed + QH_COMPAT);
    q->autoclear = be64(fixed + QH_AUTOCLEAR);
    q->refcount_order = be32(fixed + QH_REFCOUNT_ORDER);
    header_length = be32(fixed + QH_HEADER_LENGTH);
    if (header_length < QH_V3_LENGTH || header_length > q->cluster_size)
      return error_set(e, ERR_FORMAT, "%s: qcow2 header field header_length is %llu; must be "
                       "%d to the cluster size %llu", im->path,
                       (unsigned long long)header_length, QH_V3_LENGTH,
                       (unsigned long long)q->cluster_size);
    if (q->refcount_order > 6)
      return error_set(e, ERR_FORMAT, "%s: qcow2 header field refcount_order is %u; must be 0 "
                       "to 6", im->path, q->refcount_order);
    uint64_t unknown = q->incompat & ~(uint64_t)QCOW2_INCOMPAT_KNOWN;
    if (unknown)
      return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 incompatible_features has unknown bits "
                       "0x%llx", im->path, (unsigned long long)unknown);
    if (q->incompat & QCOW2_INCOMPAT_DATA_FILE)
      return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 image keeps its data in an external data "
                       "file (incompatible feature data_file); not supported", im->path);
    if (q->incompat & QCOW2_INCOMPAT_COMPRESSION) {
      if (header_length <= QH_COMPRESSION_TYPE)
        return error_set(e, ERR_FORMAT, "%s: qcow2 compression type bit set but header_length "
                         "%llu has no compression_type field", im->path,
                         (unsigned long long)header_length);
      q->compression_type = fixed[QH_COMPRESSION_TYPE];
      if (q->compression_type != QCOW2_COMPRESS_ZLIB && q->compression_type != QCOW2_COMPRESS_ZSTD)
        return error_set(e, ERR_UNSUPPORTED, "%s: qcow2 header field compression_type is %u; "
                         "only 0 (zlib) and 1 (zstd) exist", im->path, q->compression_type);
    } else if (header_length > QH_COMPRESSION_TYPE && fixed[QH_COMPRESSION_TYPE] != 0) {
      return error_set(e, ERR_FORMAT, "%s: qcow2 header field compression_type is %u but the "
                       "compression type feature bit is clear", im->path,
                       fixed[QH_COMPRESSION_TYPE]);
    }
    q->extended_l2 = q->incompat & QCOW2_INCOMPAT_EXTL2;
    if (q->extended_l2 && q->cluster_bits < 14)
      return error_set(e, ERR_FORMAT, "%s: qcow2 extended L2 entries need clusters of at least "
                       "16 KiB; cluster_bits is %u", im->path, q->cluster_bits);
  }
  /* Entries per L2 table: a cluster of 8-byte entries, or 16-byte extended ones. */
  q->l2_bits = q->cluster_bits - (q->extended_l2 ? 4 : 3);

  if (qcow2_check_tables(im, q, fixed, e) < 0)
    return -1;

  q->l1_size = be32(fixed + QH_L1_SIZE);
  q->l1_offset = be64(fixed + QH_L1_OFFSET);
  uint64_t per_l1 = 1ull << (q->cluster_bits + q->l2_bits); /* guest bytes per L1 entry */
  uint64_t l1_needed = (im->size + per_l1 - 1) / per_l1;
  uint64_t cap = o->max_table_bytes ? o->max_table_bytes : IMG_DEFAULT_TABLE_CAP;
  if ((uint64_t)q->l1_size * 8 > cap)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field l1_size is %u (a %llu-byte table), "
                     "over the %llu-byte limit for tables", im->path, q->l1_size,
                     (unsigned long long)q->l1_size * 8, (unsigned long long)cap);
  if (q->l1_size < l1_needed)
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field l1_size is %u; a %llu-byte disk "
                     "needs %llu entries", im->path, q->l1_size, (unsigned long long)im->size,
                     (unsigned long long)l1_needed);
  if (q->l1_size && (q->l1_offset % q->cluster_size || q->l1_offset > file_size ||
                     (uint64_t)q->l1_size * 8 > file_size - q->l1_offset))
    return error_set(e, ERR_FORMAT, "%s: qcow2 header field l1_table_offset is 0x%llx; a "
                     "%u-entry table there %s (file size %llu)", im->path,
                     (unsigned long long)q->l1_offset, q->l1_size,
                     q->l1_offset % q->cluster_size ? "is not cluster-aligned"
                                                    : "runs past the end of the file",
                     (unsigned long long)file_size);
  if (q->l1_size) {
    if (!(q->l1 = malloc((size_t)q->l1_size * 8)))
      return error_set(e, ERR_NOMEM, "out of memory for a %u-entry L1 table", q->l1_size);
    if (img_pread_file(im->fd, q->l1, (size_t)q->l1_size * 8, q->l1_offset, im->path, e) < 0)
      return -1;
    for (uint32_t i = 0; i < q->l1_size; i++)
      q->l1[i] = be64((const uint8_t *)&q->l1[i]);
  }

  /* Header extensions and the backing file name live in the first cluster. */
  uint64_t hdr_len = file_size < q->cluster_size ? file_size : q->cluster_size;
  if (!(hdr = malloc(hdr_len)))
    return error_set(e, ERR_NOMEM, "out of memory");
  int ret = -1;
  if (img_pread_file(im->fd, hdr, hdr_len, 0, im->path, e) < 0)
    goto out;
  uint64_t backing_offset = be64(fixed + QH_BACKING_OFFSET);
  uint32_t backing_size = be32(fixed + QH_BACKING_SIZE);
  uint64_t ext_end = backing_offset && backing_offset < hdr_len ? backing_offset : hdr_len;
  if (header_length < ext_end && qcow2_read_extensions(im, q, hdr, header_length, ext_end, e) < 0)
    goto out;
  if (backing_offset) {
    if (backing_size == 0 || backing_size > 1023 || backing_offset > hdr_len ||
        backing_size > hdr_len - backing_offset) {
      error_set(e, ERR_FORMAT, "%s: qcow2 backing file name (backing_file_offset %llu, "
                "backing_file_size %u) is not within the first cluster or longer than 1023",
                im->path, (unsigned long long)backing_offset, backing_size);
      goto out;
    }
    if (!(q->backing_name = strndup((const char *)hdr + backing_offset, backing_size))) {
      error_set(e, ERR_NOMEM, "out of memory");
      goto out;
    }
    if (strlen(q->backing_name) != backing_size) {
      error_set(e, ERR_FORMAT, "%s: qcow2 backing file name contains a NUL byte", im->path);
      goto out;
    }
    if (qcow2_open_backing(im, q, o, e) < 0)
      goto out;
  }
  if (q->incompat & QCOW2_INCOMPAT_CORRUPT && !o->quiet)
    fprintf(stderr, "amiport: warning: %s: qcow2 image is marked corrupt; reading it anyway\n",
            im->path);
  ret = 0;
out:
  free(hdr);
  return ret;
}

/* Reads the L2 entries for guest clusters [first, first+n) of one L2 table
 * (n entries, 1 or 2 words each) into words, host-endian; returns how many
 * words per entry, or -1. A missing table yields zero words. */
static int qcow2_read_l2(struct img *im, struct qcow2 *q, uint64_t first, uint64_t n,
                         uint64_t *words, struct error *e)
{
  int per = q->extended_l2 ? 2 : 1;
  uint64_t l1_index = first >> q->l2_bits;
  uint64_t l2_index = first & ((1ull << q->l2_bits) - 1);
  uint64_t l1e = l1_index < q->l1_size ? q->l1[l1_index] : 0;
  uint64_t l2_offset = l1e & QCOW2_L1_OFFSET_MASK;
  if (!l2_offset) {
    memset(words, 0, n * per * 8);
    return per;
  }
  if (l2_offset % q->cluster_size || l2_offset > q->file_size ||
      q->cluster_size > q->file_size - l2_offset)
    return error_set(e, ERR_FORMAT, "%s: qcow2 L1 entry %llu points to an L2 table at 0x%llx, "
                     "%s (file size %llu)", im->path, (unsigned long long)l1_index,
                     (unsigned long long)l2_offset,
                     l2_offset % q->cluster_size ? "not cluster-aligned" : "past the end of the file",
                     (unsigned long long)q->file_size);
  if (img_pread_file(im->fd, words, n * per * 8, l2_offset + l2_index * per * 8, im->path, e) < 0)
    return -1;
  for (uint64_t i = 0; i < n * per; i++)
    words[i] = be64((const uint8_t *)&words[i]);
  return per;
}

/* Classifies the guest offset off, given its cluster's L2 entry words. */
static int qcow2_classify(struct img *im, struct qcow2 *q, const uint64_t *w, uint64_t off,
                          struct cl *c, struct error *e)
{
  uint64_t in_cluster = off & (q->cluster_size - 1);
  uint64_t entry = w[0];
  c->len = q->cluster_size - in_cluster;
  c->entry = entry;
  if (entry & QCOW2_OFLAG_COMPRESSED) {
    c->kind = CL_COMPRESSED;
    uint64_t coffset = entry & ((1ull << qcow2_csize_shift(q->cluster_bits)) - 1);
    if (coffset >= q->file_size)
      return error_set(e, ERR_FORMAT, "%s: compressed cluster for guest offset %llu is at host "
                       "offset 0x%llx, past the end of the file (size %llu)", im->path,
                       (unsigned long long)off, (unsigned long long)coffset,
                       (unsigned long long)q->file_size);
    return 0;
  }
  uint64_t host = entry & QCOW2_L2_OFFSET_MASK;
  if (q->extended_l2) {
    uint64_t bitmap = w[1];
    unsigned sc_bits = q->cluster_bits - 5;
    unsigned sc = (unsigned)(in_cluster >> sc_bits);
    uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
    if (alloc & zero)
      return error_set(e, ERR_FORMAT, "%s: qcow2 extended L2 entry for guest offset %llu marks a "
                       "subcluster both allocated and zero (bitmap 0x%016llx)", im->path,
                       (unsigned long long)off, (unsigned long long)bitmap);
    bool is_alloc = alloc >> sc & 1, is_zero = zero >> sc & 1;
    unsigned end = sc + 1;
    while (end < QCOW2_SUBCLUSTERS && (alloc >> end & 1) == is_alloc && (zero >> end & 1) == is_zero)
      end++;
    c->len = ((uint64_t)end << sc_bits) - in_cluster;
    if (is_zero)
      c->kind = CL_ZERO;
    else if (!is_alloc)
      c->kind = CL_HOLE;
    else if (!host)
      return error_set(e, ERR_FORMAT, "%s: qcow2 extended L2 entry for guest offset %llu has "
                       "allocated subclusters but no host offset", im->path,
                       (unsigned long long)off);
    else
      c->kind = CL_DATA;
  } else if (entry & QCOW2_OFLAG_ZERO) {
    c->kind = CL_ZERO;
  } else {
    c->kind = host ? CL_DATA : CL_HOLE;
  }
  if (c->kind == CL_DATA) {
    if (host % q->cluster_size || host >= q->file_size)
      return error_set(e, ERR_FORMAT, "%s: qcow2 L2 entry for guest offset %llu points to host "
                       "offset 0x%llx, %s (file size %llu)", im->path, (unsigned long long)off,
                       (unsigned long long)host,
                       host % q->cluster_size ? "not cluster-aligned" : "past the end of the file",
                       (unsigned long long)q->file_size);
    c->host = host + in_cluster;
    /* A whole cluster, or with subclusters the allocated run, is in the file. */
    if (c->len > q->file_size - c->host)
      return error_set(e, ERR_FORMAT, "%s: truncated: the data of guest offset %llu is at host "
                       "offset 0x%llx to 0x%llx, past the end of the file (size %llu)", im->path,
                       (unsigned long long)off, (unsigned long long)c->host,
                       (unsigned long long)(c->host + c->len), (unsigned long long)q->file_size);
  }
  return 0;
}

struct codecs {
  struct libdeflate_decompressor *inflate;
  ZSTD_DCtx *zstd;
  uint8_t *in;
};

static void codecs_free(struct codecs *k)
{
  libdeflate_free_decompressor(k->inflate);
  ZSTD_freeDCtx(k->zstd);
  free(k->in);
}

/* Decompresses the cluster whose L2 entry is entry into out (cluster_size bytes). */
static int qcow2_read_compressed(struct img *im, struct qcow2 *q, uint64_t entry, uint64_t guest,
                                 uint8_t *out, struct codecs *k, struct error *e)
{
  unsigned shift = qcow2_csize_shift(q->cluster_bits);
  uint64_t coffset = entry & ((1ull << shift) - 1);
  uint64_t nb_sectors = ((entry >> shift) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;
  uint64_t csize = nb_sectors * 512 - (coffset & 511);
  if (coffset >= q->file_size)
    return error_set(e, ERR_FORMAT, "%s: compressed cluster for guest offset %llu is at host "
                     "offset 0x%llx, past the end of the file (size %llu)", im->path,
                     (unsigned long long)guest, (unsigned long long)coffset,
                     (unsigned long long)q->file_size);
  if (csize > q->file_size - coffset) /* the last one may claim sectors past the end */
    csize = q->file_size - coffset;
  if (!k->in && !(k->in = malloc(2 * q->cluster_size + 512)))
    return error_set(e, ERR_NOMEM, "out of memory");
  if (img_pread_file(im->fd, k->in, csize, coffset, im->path, e) < 0)
    return -1;
  if (q->compression_type == QCOW2_COMPRESS_ZSTD) {
    if (!k->zstd && !(k->zstd = ZSTD_createDCtx()))
      return error_set(e, ERR_NOMEM, "out of memory");
    ZSTD_DCtx_reset(k->zstd, ZSTD_reset_session_only);
    ZSTD_inBuffer in = { k->in, csize, 0 };
    ZSTD_outBuffer ob = { out, q->cluster_size, 0 };
    /* The stored size is rounded up to sectors: stop once the cluster is full. */
    while (ob.pos < ob.size && in.pos < in.size) {
      size_t r = ZSTD_decompressStream(k->zstd, &ob, &in);
      if (ZSTD_isError(r))
        return error_set(e, ERR_FORMAT, "%s: compressed cluster for guest offset %llu (host "
                         "0x%llx) does not decompress: zstd: %s", im->path,
                         (unsigned long long)guest, (unsigned long long)coffset,
                         ZSTD_getErrorName(r));
    }
    if (ob.pos != ob.size)
      return error_set(e, ERR_FORMAT, "%s: compressed cluster for guest offset %llu (host 0x%llx) "
                       "decompresses to %zu bytes, not the cluster size %llu", im->path,
                       (unsigned long long)guest, (unsigned long long)coffset, ob.pos,
                       (unsigned long long)q->cluster_size);
    return 0;
  }
  if (!k->inflate && !(k->inflate = libdeflate_alloc_decompressor()))
    return error_set(e, ERR_NOMEM, "out of memory");
  size_t in_used;
  enum libdeflate_result r =
      libdeflate_deflate_decompress_ex(k->inflate, k->in, csize, out, q->cluster_size, &in_used, NULL);
  if (r != LIBDEFLATE_SUCCESS)
    return error_set(e, ERR_FORMAT, "%s: compressed cluster for guest offset %llu (host 0x%llx, "
                     "%llu bytes) %s", im->path, (unsigned long long)guest,
                     (unsigned long long)coffset, (unsigned long long)csize,
                     r == LIBDEFLATE_BAD_DATA ? "is not valid deflate data"
                                              : "does not inflate to the cluster size");
  return 0;
}

static int qcow2_read_hole(struct qcow2 *q, uint8_t *buf, uint64_t len, uint64_t off,
                           struct error *e)
{
  uint64_t from_backing = 0;
  if (q->backing && off < q->backing->size) {
    from_backing = q->backing->size - off < len ? q->backing->size - off : len;
    if (img_pread(q->backing, buf, from_backing, off, e) < 0)
      return -1;
  }
  memset(buf + from_backing, 0, len - from_backing);
  return 0;
}

#define L2_BATCH 512 /* entries read from an L2 table at a time */

static int qcow2_pread(struct img *im, void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct qcow2 *q = im->priv;
  uint8_t *buf = vbuf;
  uint64_t words[L2_BATCH * 2];
  struct codecs k = { 0 };
  uint8_t *cbuf = NULL; /* one decompressed cluster */
  int ret = -1;
  uint64_t end = off + len;
  while (off < end) {
    uint64_t cluster = off >> q->cluster_bits;
    uint64_t in_table = (1ull << q->l2_bits) - (cluster & ((1ull << q->l2_bits) - 1));
    uint64_t n = ((end - 1) >> q->cluster_bits) - cluster + 1;
    if (n > in_table)
      n = in_table;
    if (n > L2_BATCH)
      n = L2_BATCH;
    int per = qcow2_read_l2(im, q, cluster, n, words, e);
    if (per < 0)
      goto out;
    for (uint64_t i = 0; i < n && off < end;) {
      struct cl c;
      if (qcow2_classify(im, q, &words[i * per], off, &c, e) < 0)
        goto out;
      uint64_t span = c.len < end - off ? c.len : end - off;
      uint8_t *dst = buf + (size_t)(off - (end - len));
      if (c.kind == CL_DATA) {
        /* Extend over following clusters stored contiguously on the host. */
        uint64_t host_end = c.host + span;
        while (off + span < end && i + 1 < n && !q->extended_l2) {
          uint64_t nx = words[(i + 1) * per];
          if (nx & (QCOW2_OFLAG_COMPRESSED | QCOW2_OFLAG_ZERO) ||
              (nx & QCOW2_L2_OFFSET_MASK) != host_end)
            break;
          struct cl c2;
          if (qcow2_classify(im, q, &words[(i + 1) * per], off + span, &c2, e) < 0)
            goto out;
          uint64_t more = c2.len < end - off - span ? c2.len : end - off - span;
          span += more;
          host_end += more;
          i++;
        }
        if (img_pread_file(im->fd, dst, span, c.host, im->path, e) < 0)
          goto out;
      } else if (c.kind == CL_ZERO) {
        memset(dst, 0, span);
      } else if (c.kind == CL_HOLE) {
        if (qcow2_read_hole(q, dst, span, off, e) < 0)
          goto out;
      } else {
        if (!cbuf && !(cbuf = malloc(q->cluster_size))) {
          error_set(e, ERR_NOMEM, "out of memory");
          goto out;
        }
        if (qcow2_read_compressed(im, q, c.entry, off, cbuf, &k, e) < 0)
          goto out;
        memcpy(dst, cbuf + (off & (q->cluster_size - 1)), span);
      }
      off += span;
      if ((off & (q->cluster_size - 1)) == 0)
        i++;
    }
  }
  ret = 0;
out:
  free(cbuf);
  codecs_free(&k);
  return ret;
}

static int qcow2_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                         struct error *e)
{
  struct qcow2 *q = im->priv;
  uint64_t words[L2_BATCH * 2];
  uint64_t end = off + len;
  while (off < end) {
    uint64_t cluster = off >> q->cluster_bits;
    uint64_t l1_index = cluster >> q->l2_bits;
    uint64_t in_table = (1ull << q->l2_bits) - (cluster & ((1ull << q->l2_bits) - 1));
    if (l1_index >= q->l1_size || !(q->l1[l1_index] & QCOW2_L1_OFFSET_MASK)) {
      /* No L2 table: the whole table's range is unallocated. */
      uint64_t span = in_table << q->cluster_bits;
      span -= off & (q->cluster_size - 1);
      if (span > end - off)
        span = end - off;
      if (extent_list_add(out, off, span, EXTENT_HOLE, e) < 0)
        return -1;
      off += span;
      continue;
    }
    uint64_t n = ((end - 1) >> q->cluster_bits) - cluster + 1;
    if (n > in_table)
      n = in_table;
    if (n > L2_BATCH)
      n = L2_BATCH;
    int per = qcow2_read_l2(im, q, cluster, n, words, e);
    if (per < 0)
      return -1;
    for (uint64_t i = 0; i < n && off < end;) {
      struct cl c = { 0 };
      if (qcow2_classify(im, q, &words[i * per], off, &c, e) < 0)
        return -1;
      uint64_t span = c.len < end - off ? c.len : end - off;
      enum extent_kind kind = c.kind == CL_ZERO ? EXTENT_ZERO
                              : c.kind == CL_HOLE ? EXTENT_HOLE : EXTENT_DATA;
      if (extent_list_add(out, off, span, kind, e) < 0)
        return -1;
      off += span;
      if ((off & (q->cluster_size - 1)) == 0)
        i++;
    }
  }
  return 0;
}

/* With a backing file, the holes of this layer show what the backing has. */
static int qcow2_extents_chain(struct img *im, uint64_t off, uint64_t len,
                               struct extent_list *out, struct error *e)
{
  struct qcow2 *q = im->priv;
  if (!q->backing)
    return qcow2_extents(im, off, len, out, e);
  struct extent_list mine = { 0 };
  int ret = -1;
  if (qcow2_extents(im, off, len, &mine, e) < 0)
    goto out;
  for (size_t i = 0; i < mine.n; i++) {
    struct extent x = mine.v[i];
    if (x.kind != EXTENT_HOLE || x.off >= q->backing->size) {
      if (extent_list_add(out, x.off, x.len, x.kind, e) < 0)
        goto out;
      continue;
    }
    uint64_t in_backing = q->backing->size - x.off < x.len ? q->backing->size - x.off : x.len;
    if (img_extents(q->backing, x.off, in_backing, out, e) < 0 ||
        extent_list_add(out, x.off + in_backing, x.len - in_backing, EXTENT_HOLE, e) < 0)
      goto out;
  }
  ret = 0;
out:
  extent_list_free(&mine);
  return ret;
}

static int qcow2_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  struct qcow2 *q = im->priv;
  json_object_object_add(obj, "cluster-size", json_object_new_int64((int64_t)q->cluster_size));
  if (q->backing_name) {
    json_object_object_add(obj, "backing-filename", json_object_new_string(q->backing_name));
    if (q->backing_format)
      json_object_object_add(obj, "backing-filename-format",
                             json_object_new_string(q->backing_format));
  }
  struct json_object *fs = json_object_new_object();
  json_object_object_add(fs, "compat", json_object_new_string(q->version == 2 ? "0.10" : "1.1"));
  json_object_object_add(fs, "compression-type", json_object_new_string(
                             q->compression_type == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib"));
  json_object_object_add(fs, "extended-l2", json_object_new_boolean(q->extended_l2));
  json_object_object_add(fs, "lazy-refcounts",
                         json_object_new_boolean(q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS));
  json_object_object_add(fs, "refcount-bits", json_object_new_int(1 << q->refcount_order));
  json_object_object_add(fs, "corrupt", json_object_new_boolean(q->incompat & QCOW2_INCOMPAT_CORRUPT));
  json_object_object_add(fs, "dirty", json_object_new_boolean(q->incompat & QCOW2_INCOMPAT_DIRTY));
  json_object_object_add(fs, "bitmaps", json_object_new_boolean(q->autoclear & QCOW2_AUTOCLEAR_BITMAPS));
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

static void qcow2_close(struct img *im)
{
  if (im->writable)
    qcow2w_close(im);
  else
    qcow2_free(im->priv);
  im->priv = NULL;
}

const struct image_format format_qcow2 = {
  .name = "qcow2",
  .description = "QEMU copy-on-write v2/v3",
  .create_help = qcow2w_create_help,
  .probe = qcow2_probe,
  .open = qcow2_open,
  .pread = qcow2_pread,
  .extents = qcow2_extents_chain,
  .describe = qcow2_describe,
  .create = qcow2w_create,
  .pwrite = qcow2w_pwrite,
  .finish = qcow2w_finish,
  .close = qcow2_close,
};
