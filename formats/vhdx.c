/* vhdx.c - VHDX (Virtual Hard Disk v2) reader. The writer is in
 * vhdx_write.c.
 *
 * Reads the file identifier, both headers (the valid one with the higher
 * sequence number wins; CRC-32C checked), the region table (the first valid
 * copy; regions must not overlap each other or the log), the metadata table
 * (block size, virtual size, logical and physical sector size), and the BAT
 * with its payload and sector-bitmap entries. Block states: not present and
 * undefined read as zeros and map as holes, zero and unmapped read as zeros
 * and map as zeros, fully present is data, partially present is data where
 * the chunk's sector bitmap has the sector's bit set and zeros elsewhere.
 * Logical sectors of 512 and 4096 bytes. Differencing VHDX (HasParent) is
 * refused.
 *
 * A log that still needs replaying (the header's LogGuid is not zero) is
 * replayed in memory: its entries, from the tail the newest entry names to
 * that newest entry, become an overlay of writes that every read of the file
 * goes through; the file is never written. A log whose sequence is broken,
 * that writes into the first MiB (headers and region tables) or into the log
 * itself, or that claims the file was longer than it is, is refused with an
 * error that names the log.
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" 2.1-2.6; qemu
 * block/vhdx.c and vhdx-log.c for behaviour. */
#include "image.h"
#include "crc32c.h"
#include "vhdx.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const uint8_t vhdx_guid_bat[16] = { 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                                    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
const uint8_t vhdx_guid_metadata[16] = { 0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
                                         0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
const uint8_t vhdx_guid_file_params[16] = { 0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
                                            0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
const uint8_t vhdx_guid_disk_size[16] = { 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
                                          0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
const uint8_t vhdx_guid_disk_id[16] = { 0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
                                        0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };
const uint8_t vhdx_guid_logical_sector[16] = { 0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
                                               0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f };
const uint8_t vhdx_guid_physical_sector[16] = { 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
                                                0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 };
const uint8_t vhdx_guid_parent_locator[16] = { 0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
                                               0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
  static const uint8_t zero[4];
  uint32_t c = crc32c(0, buf, csum_off);
  c = crc32c(c, zero, 4);
  return crc32c(c, buf + csum_off + 4, len - csum_off - 4);
}

/* One write of the replayed log: data, or zeros when data is NULL. */
struct vhdx_op {
  uint64_t off, len;
  uint8_t *data;
};

struct vhdx {
  uint64_t file_size;     /* on disk */
  uint64_t logical_size;  /* after the log: at least its LastFileOffset */
  struct vhdx_op *ops;    /* the replayed log, in order */
  size_t nops, ops_cap;
  uint64_t ops_lo, ops_hi, ops_bytes;
  uint64_t seq;
  int header_index;       /* 1 or 2 */
  uint32_t log_length;
  uint64_t log_offset;
  unsigned log_entries;   /* entries replayed */
  uint32_t block_size, logical_sector, physical_sector, fp_flags;
  uint64_t chunk_ratio;   /* payload blocks per sector bitmap block */
  uint64_t nblocks, bat_entries;
  uint64_t *bat;
};

static int vhdx_probe(const uint8_t *head, size_t len)
{
  return len >= 8 && memcmp(head, "vhdxfile", 8) == 0 ? 100 : 0;
}

static void vhdx_free(struct vhdx *v)
{
  if (!v)
    return;
  for (size_t i = 0; i < v->nops; i++)
    free(v->ops[i].data);
  free(v->ops);
  free(v->bat);
  free(v);
}

/* Reads the file as the replayed log leaves it: zeros past the end, then the
 * log's writes on top. */
static int vhdx_read(struct img *im, struct vhdx *v, void *vbuf, uint64_t len, uint64_t off,
                     struct error *e)
{
  uint8_t *buf = vbuf;
  uint64_t avail = off < v->file_size ? v->file_size - off : 0;
  uint64_t n = len < avail ? len : avail;
  if (n && img_pread_file(im->fd, buf, n, off, im->path, e) < 0)
    return -1;
  memset(buf + n, 0, len - n);
  if (!v->nops || off >= v->ops_hi || off + len <= v->ops_lo)
    return 0;
  for (size_t i = 0; i < v->nops; i++) {
    const struct vhdx_op *op = &v->ops[i];
    if (op->off >= off + len || op->off + op->len <= off)
      continue;
    uint64_t a = op->off > off ? op->off : off;
    uint64_t b = op->off + op->len < off + len ? op->off + op->len : off + len;
    if (op->data)
      memcpy(buf + (a - off), op->data + (a - op->off), b - a);
    else
      memset(buf + (a - off), 0, b - a);
  }
  return 0;
}

static bool guid_is_zero(const uint8_t *g)
{
  for (int i = 0; i < 16; i++)
    if (g[i])
      return false;
  return true;
}

/* Why a header is not usable, or NULL. */
static const char *vhdx_header_problem(const uint8_t *h, char *why, size_t whylen)
{
  if (memcmp(h + VH_SIGNATURE, "head", 4) != 0)
    return "no \"head\" signature";
  uint32_t c = vhdx_checksum(h, VHDX_HEADER_SIZE, VH_CHECKSUM);
  if (c != le32(h + VH_CHECKSUM)) {
    snprintf(why, whylen, "checksum 0x%08x, but the CRC-32C is 0x%08x", le32(h + VH_CHECKSUM), c);
    return why;
  }
  if (le16(h + VH_VERSION) != 1) {
    snprintf(why, whylen, "version %u, not 1", le16(h + VH_VERSION));
    return why;
  }
  return NULL;
}

/* --- the log --- */

struct vhdx_log {
  uint8_t *buf;     /* the whole log region */
  uint32_t len;
  const uint8_t *guid;
};

/* Copies n bytes of the circular log starting at pos. */
static void vhdx_log_copy(const struct vhdx_log *lg, uint8_t *dst, uint64_t pos, uint64_t n)
{
  pos %= lg->len;
  while (n) {
    uint64_t k = lg->len - pos < n ? lg->len - pos : n;
    memcpy(dst, lg->buf + pos, k);
    dst += k;
    n -= k;
    pos = 0;
  }
}

/* Whether a whole valid entry starts at pos; fills *ent (EntryLength bytes, caller frees). */
static bool vhdx_log_entry(const struct vhdx_log *lg, uint64_t pos, uint8_t **ent)
{
  uint8_t h[VL_HEADER_SIZE];
  vhdx_log_copy(lg, h, pos, sizeof h);
  if (memcmp(h + VL_SIGNATURE, "loge", 4) != 0)
    return false;
  uint32_t elen = le32(h + VL_ENTRY_LENGTH), tail = le32(h + VL_TAIL);
  uint32_t ndesc = le32(h + VL_DESCRIPTOR_COUNT);
  if (elen < VHDX_LOG_SECTOR || elen % VHDX_LOG_SECTOR || elen > lg->len ||
      tail % VHDX_LOG_SECTOR || tail >= lg->len || memcmp(h + VL_LOG_GUID, lg->guid, 16) != 0)
    return false;
  uint64_t dsec = ((uint64_t)VL_HEADER_SIZE + (uint64_t)ndesc * VL_DESCRIPTOR_SIZE +
                   VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
  if (dsec > elen / VHDX_LOG_SECTOR)
    return false;
  uint8_t *b = malloc(elen);
  if (!b)
    return false;
  vhdx_log_copy(lg, b, pos, elen);
  if (vhdx_checksum(b, elen, VL_CHECKSUM) != le32(b + VL_CHECKSUM)) {
    free(b);
    return false;
  }
  *ent = b;
  return true;
}

static int vhdx_add_op(struct img *im, struct vhdx *v, uint64_t off, uint64_t len,
                       const uint8_t *data, uint64_t cap, struct error *e)
{
  if (off < VHDX_MiB)
    return error_set(e, ERR_FORMAT, "%s: VHDX log writes to file offset %llu, inside the "
                     "headers and region tables; refusing to replay it", im->path,
                     (unsigned long long)off);
  if (off < v->log_offset + v->log_length && off + len > v->log_offset)
    return error_set(e, ERR_FORMAT, "%s: VHDX log writes to file offset %llu, inside the log "
                     "itself; refusing to replay it", im->path, (unsigned long long)off);
  if (off > VHDX_MAX_SIZE * 2 || len > VHDX_MAX_SIZE * 2)
    return error_set(e, ERR_FORMAT, "%s: VHDX log writes %llu bytes at file offset %llu, past "
                     "any VHDX file; refusing to replay it", im->path, (unsigned long long)len,
                     (unsigned long long)off);
  if (data && (v->ops_bytes += len) > cap)
    return error_set(e, ERR_FORMAT, "%s: VHDX log holds more than %llu bytes of writes, over the "
                     "limit for replaying it in memory", im->path, (unsigned long long)cap);
  if (v->nops == v->ops_cap) {
    size_t ncap = v->ops_cap ? v->ops_cap * 2 : 16;
    struct vhdx_op *ops = realloc(v->ops, ncap * sizeof *ops);
    if (!ops)
      return error_set(e, ERR_NOMEM, "out of memory");
    v->ops = ops;
    v->ops_cap = ncap;
  }
  uint8_t *copy = NULL;
  if (data) {
    if (!(copy = malloc(len)))
      return error_set(e, ERR_NOMEM, "out of memory");
    memcpy(copy, data, len);
  }
  v->ops[v->nops++] = (struct vhdx_op){ off, len, copy };
  if (v->nops == 1 || off < v->ops_lo)
    v->ops_lo = off;
  if (off + len > v->ops_hi)
    v->ops_hi = off + len;
  return 0;
}

/* Applies one valid entry's descriptors to the overlay. */
static int vhdx_log_apply(struct img *im, struct vhdx *v, const uint8_t *ent, uint64_t cap,
                          struct error *e)
{
  uint64_t seq = le64(ent + VL_SEQUENCE);
  uint32_t ndesc = le32(ent + VL_DESCRIPTOR_COUNT), elen = le32(ent + VL_ENTRY_LENGTH);
  uint64_t dsec = ((uint64_t)VL_HEADER_SIZE + (uint64_t)ndesc * VL_DESCRIPTOR_SIZE +
                   VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
  uint64_t sector = dsec; /* next data sector */
  uint8_t page[VHDX_LOG_SECTOR];
  for (uint32_t i = 0; i < ndesc; i++) {
    const uint8_t *d = ent + VL_HEADER_SIZE + (uint64_t)i * VL_DESCRIPTOR_SIZE;
    uint64_t foff = le64(d + 16);
    if (le64(d + 24) != seq)
      return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu: descriptor %u has sequence "
                       "number %llu; refusing to replay the log", im->path,
                       (unsigned long long)seq, i, (unsigned long long)le64(d + 24));
    if (foff % VHDX_LOG_SECTOR)
      return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu: descriptor %u file offset %llu "
                       "is not a multiple of 4096; refusing to replay the log", im->path,
                       (unsigned long long)seq, i, (unsigned long long)foff);
    if (memcmp(d, "zero", 4) == 0) {
      uint64_t zlen = le64(d + 8);
      if (zlen % VHDX_LOG_SECTOR)
        return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu: zero descriptor %u length "
                         "%llu is not a multiple of 4096; refusing to replay the log", im->path,
                         (unsigned long long)seq, i, (unsigned long long)zlen);
      if (zlen && vhdx_add_op(im, v, foff, zlen, NULL, cap, e) < 0)
        return -1;
    } else if (memcmp(d, "desc", 4) == 0) {
      if (sector >= elen / VHDX_LOG_SECTOR)
        return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu has more data descriptors "
                         "than data sectors; refusing to replay the log", im->path,
                         (unsigned long long)seq);
      const uint8_t *s = ent + sector * VHDX_LOG_SECTOR;
      if (memcmp(s, "data", 4) != 0 || le32(s + 4) != (uint32_t)(seq >> 32) ||
          le32(s + 4092) != (uint32_t)seq)
        return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu: data sector %llu does not "
                         "belong to the entry; refusing to replay the log", im->path,
                         (unsigned long long)seq, (unsigned long long)sector);
      memcpy(page, d + 8, 8);          /* leading bytes */
      memcpy(page + 8, s + 8, 4084);
      memcpy(page + 4092, d + 4, 4);   /* trailing bytes */
      if (vhdx_add_op(im, v, foff, VHDX_LOG_SECTOR, page, cap, e) < 0)
        return -1;
      sector++;
    } else {
      return error_set(e, ERR_FORMAT, "%s: VHDX log entry %llu: descriptor %u has an unknown "
                       "signature; refusing to replay the log", im->path,
                       (unsigned long long)seq, i);
    }
  }
  return 0;
}

/* Finds the active sequence of the log and replays it into the overlay. */
static int vhdx_replay_log(struct img *im, struct vhdx *v, const uint8_t *hdr, uint64_t cap,
                           struct error *e)
{
  if (v->log_length > cap)
    return error_set(e, ERR_FORMAT, "%s: VHDX log needs replaying but is %u bytes, over the "
                     "%llu-byte limit for tables", im->path, v->log_length,
                     (unsigned long long)cap);
  struct vhdx_log lg = { malloc(v->log_length), v->log_length, hdr + VH_LOG_GUID };
  uint8_t *ent = NULL;
  int ret = -1;
  if (!lg.buf)
    return error_set(e, ERR_NOMEM, "out of memory for the VHDX log");
  if (img_pread_file(im->fd, lg.buf, lg.len, v->log_offset, im->path, e) < 0)
    goto out;
  /* The head: the valid entry with the highest sequence number. */
  bool found = false;
  uint64_t head_pos = 0, head_seq = 0;
  for (uint64_t pos = 0; pos < lg.len; pos += VHDX_LOG_SECTOR) {
    if (!vhdx_log_entry(&lg, pos, &ent))
      continue;
    uint64_t s = le64(ent + VL_SEQUENCE);
    if (!found || s > head_seq) {
      found = true;
      head_seq = s;
      head_pos = pos;
    }
    free(ent);
    ent = NULL;
  }
  if (!found) { /* nothing was logged: the header's LogGuid alone changes nothing */
    ret = 0;
    goto out;
  }
  if (!vhdx_log_entry(&lg, head_pos, &ent))
    goto out;
  uint64_t tail = le32(ent + VL_TAIL);
  uint64_t flushed = le64(ent + VL_FLUSHED_OFFSET), last = le64(ent + VL_LAST_OFFSET);
  free(ent);
  ent = NULL;
  if (flushed > v->file_size) {
    error_set(e, ERR_FORMAT, "%s: VHDX log (entry %llu) says the file was flushed at %llu bytes, "
              "but it is %llu bytes; the file was truncated, refusing to replay the log",
              im->path, (unsigned long long)head_seq, (unsigned long long)flushed,
              (unsigned long long)v->file_size);
    goto out;
  }
  /* Walk from the tail to the head; every step must be the next sequence number. */
  uint64_t pos = tail, prev = 0;
  for (uint64_t steps = 0;; steps++) {
    if (steps > lg.len / VHDX_LOG_SECTOR || !vhdx_log_entry(&lg, pos, &ent)) {
      error_set(e, ERR_FORMAT, "%s: VHDX log entry sequence is broken: entry %llu names its tail "
                "at log offset %llu, but %s there; refusing to replay the log", im->path,
                (unsigned long long)head_seq, (unsigned long long)tail,
                steps ? "the chain from it ends early" : "no valid entry starts");
      goto out;
    }
    uint64_t s = le64(ent + VL_SEQUENCE);
    if (steps && s != prev + 1) {
      error_set(e, ERR_FORMAT, "%s: VHDX log entry sequence is broken: entry %llu follows entry "
                "%llu at log offset %llu; refusing to replay the log", im->path,
                (unsigned long long)s, (unsigned long long)prev, (unsigned long long)pos);
      goto out;
    }
    if (s > head_seq || (s == head_seq && pos != head_pos)) {
      error_set(e, ERR_FORMAT, "%s: VHDX log entry sequence is broken: entry %llu at log offset "
                "%llu does not lead to the newest entry %llu; refusing to replay the log",
                im->path, (unsigned long long)s, (unsigned long long)pos,
                (unsigned long long)head_seq);
      goto out;
    }
    if (vhdx_log_apply(im, v, ent, cap, e) < 0)
      goto out;
    v->log_entries++;
    uint32_t elen = le32(ent + VL_ENTRY_LENGTH);
    free(ent);
    ent = NULL;
    prev = s;
    if (pos == head_pos)
      break;
    pos = (pos + elen) % lg.len;
  }
  if (last > v->logical_size)
    v->logical_size = last;
  ret = 0;
out:
  free(ent);
  free(lg.buf);
  return ret;
}

/* --- open --- */

struct vhdx_region {
  const char *name;
  uint64_t off, len;
};

static int vhdx_read_regions(struct img *im, struct vhdx *v, struct vhdx_region *bat,
                             struct vhdx_region *meta, struct error *e)
{
  uint8_t *rt = malloc(VHDX_REGION_SIZE);
  if (!rt)
    return error_set(e, ERR_NOMEM, "out of memory");
  int ret = -1;
  const char *why[2] = { NULL, NULL };
  char whybuf[2][96];
  int use = -1;
  for (int k = 0; k < 2 && use < 0; k++) {
    if (vhdx_read(im, v, rt, VHDX_REGION_SIZE, k ? VHDX_REGION2_OFFSET : VHDX_REGION1_OFFSET,
                  e) < 0)
      goto out;
    uint32_t c = vhdx_checksum(rt, VHDX_REGION_SIZE, VR_CHECKSUM);
    if (memcmp(rt, "regi", 4) != 0)
      why[k] = "no \"regi\" signature";
    else if (c != le32(rt + VR_CHECKSUM))
      snprintf(whybuf[k], sizeof whybuf[k], "checksum 0x%08x, but the CRC-32C is 0x%08x",
               le32(rt + VR_CHECKSUM), c), why[k] = whybuf[k];
    else if (le32(rt + VR_ENTRY_COUNT) > VHDX_REGION_MAX_ENTRIES)
      snprintf(whybuf[k], sizeof whybuf[k], "entry count %u, more than %d",
               le32(rt + VR_ENTRY_COUNT), VHDX_REGION_MAX_ENTRIES), why[k] = whybuf[k];
    else
      use = k;
  }
  if (use < 0) {
    error_set(e, ERR_FORMAT, "%s: both VHDX region tables are invalid (at 196608: %s; at "
              "262144: %s)", im->path, why[0], why[1]);
    goto out;
  }
  uint32_t n = le32(rt + VR_ENTRY_COUNT);
  bat->name = meta->name = NULL;
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *r = rt + VR_ENTRIES + i * VR_ENTRY_SIZE;
    uint64_t off = le64(r + VRE_OFFSET);
    uint32_t len = le32(r + VRE_LENGTH);
    bool required = le32(r + VRE_REQUIRED) & 1;
    if (off % VHDX_MiB || off < VHDX_MiB || len % VHDX_MiB || len == 0) {
      error_set(e, ERR_FORMAT, "%s: VHDX region table entry %u has offset %llu and length %u; "
                "both must be multiples of 1 MiB, the offset at least 1 MiB, the length not 0",
                im->path, i, (unsigned long long)off, len);
      goto out;
    }
    if (off > VHDX_MAX_SIZE * 2) {
      error_set(e, ERR_FORMAT, "%s: VHDX region table entry %u has offset %llu, past any VHDX "
                "file", im->path, i, (unsigned long long)off);
      goto out;
    }
    if (v->log_length && off < v->log_offset + v->log_length && off + len > v->log_offset) {
      error_set(e, ERR_FORMAT, "%s: VHDX region table entry %u ([%llu, %llu)) overlaps the log "
                "([%llu, %llu))", im->path, i, (unsigned long long)off,
                (unsigned long long)(off + len), (unsigned long long)v->log_offset,
                (unsigned long long)(v->log_offset + v->log_length));
      goto out;
    }
    for (uint32_t j = 0; j < i; j++) {
      const uint8_t *q = rt + VR_ENTRIES + j * VR_ENTRY_SIZE;
      uint64_t qo = le64(q + VRE_OFFSET), ql = le32(q + VRE_LENGTH);
      if (off < qo + ql && qo < off + len) {
        error_set(e, ERR_FORMAT, "%s: VHDX region table entries %u ([%llu, %llu)) and %u ([%llu, "
                  "%llu)) overlap", im->path, j, (unsigned long long)qo,
                  (unsigned long long)(qo + ql), i, (unsigned long long)off,
                  (unsigned long long)(off + len));
        goto out;
      }
    }
    struct vhdx_region *dst = NULL;
    if (memcmp(r + VRE_GUID, vhdx_guid_bat, 16) == 0)
      dst = bat;
    else if (memcmp(r + VRE_GUID, vhdx_guid_metadata, 16) == 0)
      dst = meta;
    else if (required) {
      error_set(e, ERR_UNSUPPORTED, "%s: VHDX region table entry %u is a required region of an "
                "unknown kind; not supported", im->path, i);
      goto out;
    }
    if (!dst)
      continue;
    if (dst->name) {
      error_set(e, ERR_FORMAT, "%s: VHDX region table names the %s region twice", im->path,
                dst == bat ? "BAT" : "metadata");
      goto out;
    }
    *dst = (struct vhdx_region){ dst == bat ? "BAT" : "metadata", off, len };
  }
  if (!bat->name || !meta->name) {
    error_set(e, ERR_FORMAT, "%s: VHDX region table has no %s region", im->path,
              !bat->name ? "BAT" : "metadata");
    goto out;
  }
  ret = 0;
out:
  free(rt);
  return ret;
}

static int vhdx_read_metadata(struct img *im, struct vhdx *v, const struct vhdx_region *meta,
                              struct error *e)
{
  uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
  if (!t)
    return error_set(e, ERR_NOMEM, "out of memory");
  int ret = -1;
  if (vhdx_read(im, v, t, VHDX_METADATA_TABLE_SIZE, meta->off, e) < 0)
    goto out;
  if (memcmp(t + VM_SIGNATURE, "metadata", 8) != 0) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata table at offset %llu has no \"metadata\" "
              "signature", im->path, (unsigned long long)meta->off);
    goto out;
  }
  uint16_t n = le16(t + VM_ENTRY_COUNT);
  if (n > VHDX_METADATA_MAX_ENTRIES) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata table entry count is %u; at most %d", im->path,
              n, VHDX_METADATA_MAX_ENTRIES);
    goto out;
  }
  bool have_fp = false, have_size = false, have_ls = false;
  v->physical_sector = 512;
  uint64_t size = 0;
  for (uint16_t i = 0; i < n; i++) {
    const uint8_t *m = t + VM_ENTRIES + (size_t)i * VM_ENTRY_SIZE;
    uint32_t off = le32(m + VME_OFFSET), len = le32(m + VME_LENGTH), flags = le32(m + VME_FLAGS);
    if (len && (off < VHDX_METADATA_TABLE_SIZE || off > meta->len || len > meta->len - off)) {
      error_set(e, ERR_FORMAT, "%s: VHDX metadata entry %u has offset %u and length %u, outside "
                "the %llu-byte metadata region", im->path, i, off, len,
                (unsigned long long)meta->len);
      goto out;
    }
    const uint8_t *id = m + VME_ITEM;
    uint8_t val[8] = { 0 };
    uint32_t want = 0;
    const char *name = NULL;
    if (memcmp(id, vhdx_guid_file_params, 16) == 0)
      want = 8, name = "file parameters", have_fp = true;
    else if (memcmp(id, vhdx_guid_disk_size, 16) == 0)
      want = 8, name = "virtual disk size", have_size = true;
    else if (memcmp(id, vhdx_guid_logical_sector, 16) == 0)
      want = 4, name = "logical sector size", have_ls = true;
    else if (memcmp(id, vhdx_guid_physical_sector, 16) == 0)
      want = 4, name = "physical sector size";
    else if (memcmp(id, vhdx_guid_disk_id, 16) == 0)
      continue; /* the disk's identity (page 83 data): not needed to read it */
    else if (memcmp(id, vhdx_guid_parent_locator, 16) == 0) {
      error_set(e, ERR_UNSUPPORTED, "%s: differencing VHDX (it has a parent locator); not "
                "supported", im->path);
      goto out;
    } else if ((flags & VME_IS_REQUIRED) && !(flags & VME_IS_USER)) {
      error_set(e, ERR_UNSUPPORTED, "%s: VHDX metadata entry %u is a required item of an unknown "
                "kind; not supported", im->path, i);
      goto out;
    }
    if (!name)
      continue;
    if (len < want) {
      error_set(e, ERR_FORMAT, "%s: VHDX metadata item %s is %u bytes; it needs %u", im->path,
                name, len, want);
      goto out;
    }
    if (vhdx_read(im, v, val, want, meta->off + off, e) < 0)
      goto out;
    if (want == 8 && name[0] == 'f') {
      v->block_size = le32(val);
      v->fp_flags = le32(val + 4);
    } else if (want == 8) {
      size = le64(val);
    } else if (name[0] == 'l') {
      v->logical_sector = le32(val);
    } else {
      v->physical_sector = le32(val);
    }
  }
  if (!have_fp || !have_size || !have_ls) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata has no %s item", im->path,
              !have_fp ? "file parameters" : !have_size ? "virtual disk size" : "logical sector size");
    goto out;
  }
  if (v->fp_flags & VFP_HAS_PARENT) {
    error_set(e, ERR_UNSUPPORTED, "%s: differencing VHDX (file parameters HasParent is set); not "
              "supported", im->path);
    goto out;
  }
  if (v->block_size < VHDX_MIN_BLOCK || v->block_size > VHDX_MAX_BLOCK ||
      (v->block_size & (v->block_size - 1))) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata field block size is %u; must be a power of two "
              "from 1 MiB to 256 MiB", im->path, v->block_size);
    goto out;
  }
  if (v->logical_sector != 512 && v->logical_sector != 4096) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata field logical sector size is %u; must be 512 or "
              "4096", im->path, v->logical_sector);
    goto out;
  }
  if (v->physical_sector != 512 && v->physical_sector != 4096) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata field physical sector size is %u; must be 512 "
              "or 4096", im->path, v->physical_sector);
    goto out;
  }
  if (size > VHDX_MAX_SIZE) {
    error_set(e, ERR_FORMAT, "%s: VHDX metadata field virtual disk size is %llu; the largest is "
              "64 TiB", im->path, (unsigned long long)size);
    goto out;
  }
  im->size = size;
  ret = 0;
out:
  free(t);
  return ret;
}

static int vhdx_open(struct img *im, const struct open_opts *o, struct error *e)
{
  struct stat st;
  if (fstat(im->fd, &st) < 0)
    return error_errno(e, "%s: stat", im->path);
  struct vhdx *v = calloc(1, sizeof *v);
  if (!v)
    return error_set(e, ERR_NOMEM, "out of memory");
  im->priv = v;
  v->file_size = v->logical_size = (uint64_t)st.st_size;
  uint64_t cap = o->max_table_bytes ? o->max_table_bytes : IMG_DEFAULT_TABLE_CAP;
  if (v->file_size < VHDX_REGION2_OFFSET + VHDX_REGION_SIZE)
    return error_set(e, ERR_FORMAT, "%s: truncated: the file is %llu bytes, shorter than the "
                     "VHDX headers and region tables", im->path, (unsigned long long)v->file_size);
  uint8_t sig[8];
  if (img_pread_file(im->fd, sig, 8, 0, im->path, e) < 0)
    return -1;
  if (memcmp(sig, "vhdxfile", 8) != 0)
    return error_set(e, ERR_FORMAT, "%s: not a VHDX image (no \"vhdxfile\" identifier)", im->path);

  uint8_t h[2][VHDX_HEADER_SIZE];
  char why[2][96];
  const char *bad[2];
  int best = -1;
  for (int k = 0; k < 2; k++) {
    if (img_pread_file(im->fd, h[k], VHDX_HEADER_SIZE,
                       k ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET, im->path, e) < 0)
      return -1;
    bad[k] = vhdx_header_problem(h[k], why[k], sizeof why[k]);
    if (!bad[k] && (best < 0 || le64(h[k] + VH_SEQUENCE) > le64(h[best] + VH_SEQUENCE)))
      best = k;
  }
  if (best < 0)
    return error_set(e, ERR_FORMAT, "%s: both VHDX headers are invalid (header 1 at 65536: %s; "
                     "header 2 at 131072: %s)", im->path, bad[0], bad[1]);
  const uint8_t *hdr = h[best];
  v->header_index = best + 1;
  v->seq = le64(hdr + VH_SEQUENCE);
  v->log_length = le32(hdr + VH_LOG_LENGTH);
  v->log_offset = le64(hdr + VH_LOG_OFFSET);
  if (le16(hdr + VH_LOG_VERSION) != 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: VHDX header field log version is %u; only 0 exists",
                     im->path, le16(hdr + VH_LOG_VERSION));
  if (v->log_length % VHDX_MiB || v->log_offset % VHDX_MiB ||
      (v->log_length && (v->log_offset < VHDX_MiB || v->log_offset > v->file_size ||
                         v->log_length > v->file_size - v->log_offset)))
    return error_set(e, ERR_FORMAT, "%s: VHDX header places the log at offset %llu with length "
                     "%u; both must be multiples of 1 MiB, inside the file (size %llu)", im->path,
                     (unsigned long long)v->log_offset, v->log_length,
                     (unsigned long long)v->file_size);
  if (!guid_is_zero(hdr + VH_LOG_GUID)) {
    if (!v->log_length)
      return error_set(e, ERR_FORMAT, "%s: VHDX header says the log needs replaying, but the log "
                       "is empty (length 0)", im->path);
    if (vhdx_replay_log(im, v, hdr, cap, e) < 0)
      return -1;
  }

  struct vhdx_region bat = { 0 }, meta = { 0 };
  if (vhdx_read_regions(im, v, &bat, &meta, e) < 0 || vhdx_read_metadata(im, v, &meta, e) < 0)
    return -1;
  if (bat.off > v->logical_size || bat.len > v->logical_size - bat.off)
    return error_set(e, ERR_FORMAT, "%s: VHDX BAT region at offset %llu (%llu bytes) runs past "
                     "the end of the file (size %llu)", im->path, (unsigned long long)bat.off,
                     (unsigned long long)bat.len, (unsigned long long)v->logical_size);
  v->chunk_ratio = (VHDX_CHUNK_SECTORS * v->logical_sector) / v->block_size;
  v->nblocks = (im->size + v->block_size - 1) / v->block_size;
  v->bat_entries = v->nblocks ? v->nblocks + (v->nblocks - 1) / v->chunk_ratio : 0;
  if (v->bat_entries * 8 > bat.len)
    return error_set(e, ERR_FORMAT, "%s: VHDX BAT region is %llu bytes; a %llu-byte disk of "
                     "%u-byte blocks needs %llu entries (%llu bytes)", im->path,
                     (unsigned long long)bat.len, (unsigned long long)im->size, v->block_size,
                     (unsigned long long)v->bat_entries, (unsigned long long)v->bat_entries * 8);
  if (v->bat_entries * 8 > cap)
    return error_set(e, ERR_FORMAT, "%s: VHDX BAT of %llu entries is over the %llu-byte limit "
                     "for tables", im->path, (unsigned long long)v->bat_entries,
                     (unsigned long long)cap);
  if (!(v->bat = malloc(v->bat_entries ? v->bat_entries * 8 : 8)))
    return error_set(e, ERR_NOMEM, "out of memory for the VHDX BAT");
  if (v->bat_entries && vhdx_read(im, v, v->bat, v->bat_entries * 8, bat.off, e) < 0)
    return -1;
  for (uint64_t i = 0; i < v->bat_entries; i++) {
    uint64_t x = le64((const uint8_t *)&v->bat[i]);
    v->bat[i] = x;
    bool sb = (i + 1) % (v->chunk_ratio + 1) == 0;
    unsigned s = VHDX_BAT_STATE(x);
    uint64_t off = VHDX_BAT_OFFSET(x), need = sb ? VHDX_MiB : v->block_size;
    bool present = sb ? s == VHDX_SB_PRESENT
                      : s == VHDX_PAYLOAD_FULLY_PRESENT || s == VHDX_PAYLOAD_PARTIALLY_PRESENT;
    if (sb ? (s != VHDX_SB_NOT_PRESENT && s != VHDX_SB_PRESENT) : (s == 4 || s == 5))
      return error_set(e, ERR_FORMAT, "%s: VHDX BAT entry %llu (%s) has state %u, which does not "
                       "exist", im->path, (unsigned long long)i,
                       sb ? "sector bitmap" : "payload block", s);
    if (present && (off < VHDX_MiB || off > v->logical_size || need > v->logical_size - off))
      return error_set(e, ERR_FORMAT, "%s: VHDX BAT entry %llu (%s) points to offset %llu, %s "
                       "(file size %llu)", im->path, (unsigned long long)i,
                       sb ? "sector bitmap" : "payload block", (unsigned long long)off,
                       off < VHDX_MiB ? "inside the headers" : "running past the end of the file",
                       (unsigned long long)v->logical_size);
  }
  im->block_size = v->block_size;
  return 0;
}

/* What guest block blk is: its state, and its file offset when present. */
static unsigned vhdx_block(const struct vhdx *v, uint64_t blk, uint64_t *host)
{
  uint64_t x = v->bat[blk + blk / v->chunk_ratio];
  *host = VHDX_BAT_OFFSET(x);
  return VHDX_BAT_STATE(x);
}

/* A run of one block: data at host, or zeros (kind says which kind of zeros). */
struct vhdx_run {
  uint64_t off, len, host;
  enum extent_kind kind;
};

/* Splits [off, off+len), inside one block, into runs; for partially present
 * blocks through the chunk's sector bitmap (bit i is sector i, LSB first). */
static int vhdx_block_runs(struct img *im, struct vhdx *v, uint64_t off, uint64_t len,
                           struct vhdx_run *runs, size_t *nruns, uint8_t *bm, struct error *e)
{
  uint64_t blk = off / v->block_size, in = off % v->block_size, host;
  uint64_t n = v->block_size - in < len ? v->block_size - in : len;
  unsigned s = vhdx_block(v, blk, &host);
  *nruns = 0;
  switch (s) {
  case VHDX_PAYLOAD_FULLY_PRESENT:
    runs[(*nruns)++] = (struct vhdx_run){ off, n, host + in, EXTENT_DATA };
    return 0;
  case VHDX_PAYLOAD_ZERO:
  case VHDX_PAYLOAD_UNMAPPED:
    runs[(*nruns)++] = (struct vhdx_run){ off, n, 0, EXTENT_ZERO };
    return 0;
  case VHDX_PAYLOAD_PARTIALLY_PRESENT:
    break;
  default:
    runs[(*nruns)++] = (struct vhdx_run){ off, n, 0, EXTENT_HOLE };
    return 0;
  }
  uint64_t chunk = blk / v->chunk_ratio;
  uint64_t sbx = v->bat[chunk * (v->chunk_ratio + 1) + v->chunk_ratio < v->bat_entries
                            ? chunk * (v->chunk_ratio + 1) + v->chunk_ratio : 0];
  if (chunk * (v->chunk_ratio + 1) + v->chunk_ratio >= v->bat_entries ||
      VHDX_BAT_STATE(sbx) != VHDX_SB_PRESENT)
    return error_set(e, ERR_FORMAT, "%s: VHDX block %llu is partially present but its chunk "
                     "has no sector bitmap", im->path, (unsigned long long)blk);
  uint64_t ls = v->logical_sector;
  uint64_t chunk_start = chunk * v->chunk_ratio * v->block_size;
  uint64_t s0 = (off - chunk_start) / ls, s1 = (off + n - 1 - chunk_start) / ls;
  uint64_t b0 = s0 / 8, b1 = s1 / 8;
  if (vhdx_read(im, v, bm, b1 - b0 + 1, VHDX_BAT_OFFSET(sbx) + b0, e) < 0)
    return -1;
  uint64_t at = off, end = off + n, sec = s0;
#define BIT(i) (bm[(i) / 8 - b0] >> ((i) % 8) & 1)
  while (at < end) {
    bool p = BIT(sec);
    uint64_t t = sec + 1;
    while (t <= s1 && BIT(t) == p)
      t++;
    uint64_t stop = chunk_start + t * ls;
    if (stop > end)
      stop = end;
    runs[(*nruns)++] = (struct vhdx_run){ at, stop - at, host + (at - blk * v->block_size),
                                          p ? EXTENT_DATA : EXTENT_ZERO };
    at = stop;
    sec = t;
  }
#undef BIT
  return 0;
}

/* Calls fn on every run of [off, off+len), in order. */
static int vhdx_walk(struct img *im, uint64_t off, uint64_t len,
                     int (*fn)(struct img *im, const struct vhdx_run *r, void *arg,
                               struct error *e),
                     void *arg, struct error *e)
{
  struct vhdx *v = im->priv;
  uint64_t end = off + len;
  size_t maxruns = v->block_size / v->logical_sector + 1;
  struct vhdx_run one[1], *runs = one;
  uint8_t *bm = NULL;
  int ret = -1;
  while (off < end) {
    uint64_t host;
    unsigned s = vhdx_block(v, off / v->block_size, &host);
    if (s == VHDX_PAYLOAD_PARTIALLY_PRESENT && runs == one) {
      runs = malloc(maxruns * sizeof *runs);
      bm = malloc(v->block_size / v->logical_sector / 8 + 1);
      if (!runs || !bm) {
        error_set(e, ERR_NOMEM, "out of memory");
        goto out;
      }
    }
    size_t nr;
    if (vhdx_block_runs(im, v, off, end - off, runs, &nr, bm, e) < 0)
      goto out;
    for (size_t i = 0; i < nr; i++) {
      if (fn(im, &runs[i], arg, e) < 0)
        goto out;
      off = runs[i].off + runs[i].len;
    }
  }
  ret = 0;
out:
  if (runs != one)
    free(runs);
  free(bm);
  return ret;
}

struct vhdx_dst {
  uint8_t *buf;
  uint64_t start;
};

static int vhdx_read_run(struct img *im, const struct vhdx_run *r, void *arg, struct error *e)
{
  const struct vhdx_dst *d = arg;
  uint8_t *dst = d->buf + (r->off - d->start);
  if (r->kind == EXTENT_DATA)
    return vhdx_read(im, im->priv, dst, r->len, r->host, e);
  memset(dst, 0, r->len);
  return 0;
}

static int vhdx_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  return vhdx_walk(im, off, len, vhdx_read_run, &(struct vhdx_dst){ buf, off }, e);
}

static int vhdx_list_run(struct img *im, const struct vhdx_run *r, void *arg, struct error *e)
{
  (void)im;
  return extent_list_add(arg, r->off, r->len, r->kind, e);
}

static int vhdx_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                        struct error *e)
{
  return vhdx_walk(im, off, len, vhdx_list_run, out, e);
}

static int vhdx_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  struct vhdx *v = im->priv;
  json_object_object_add(obj, "cluster-size", json_object_new_int64(v->block_size));
  struct json_object *fs = json_object_new_object();
  json_object_object_add(fs, "subformat", json_object_new_string(
                             v->fp_flags & VFP_LEAVE_ALLOCATED ? "fixed" : "dynamic"));
  json_object_object_add(fs, "block-size", json_object_new_int64(v->block_size));
  json_object_object_add(fs, "logical-sector-size", json_object_new_int64(v->logical_sector));
  json_object_object_add(fs, "physical-sector-size", json_object_new_int64(v->physical_sector));
  json_object_object_add(fs, "log-size", json_object_new_int64(v->log_length));
  json_object_object_add(fs, "log-replayed-entries", json_object_new_int64(v->log_entries));
  json_object_object_add(fs, "header-sequence", json_object_new_int64((int64_t)v->seq));
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

static void vhdx_close(struct img *im)
{
  if (im->writable)
    vhdxw_close(im);
  else
    vhdx_free(im->priv);
  im->priv = NULL;
}

const struct image_format format_vhdx = {
  .name = "vhdx",
  .description = "Microsoft Virtual Hard Disk v2 (VHDX: dynamic, fixed)",
  .create_help = vhdxw_create_help,
  .probe = vhdx_probe,
  .open = vhdx_open,
  .pread = vhdx_pread,
  .extents = vhdx_extents,
  .describe = vhdx_describe,
  .create = vhdxw_create,
  .pwrite = vhdxw_pwrite,
  .finish = vhdxw_finish,
  .close = vhdx_close,
};
