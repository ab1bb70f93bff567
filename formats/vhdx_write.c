/* vhdx_write.c - VHDX writer: dynamic (blocks allocated as writes arrive) or
 * fixed (every block allocated up front), 512-byte logical sectors.
 *
 * Layout, as qemu lays it out: the file identifier, two headers and two region
 * tables in the first MiB, then an empty log (log_size, 1 MiB by default),
 * the metadata region (1 MiB) and the BAT, then payload blocks. Several
 * threads may write at once: a write takes the lock only to give a block its
 * place at the end of the file, and writes its data after releasing it. The
 * copy engine hands us at most 2 MiB at a time, so a larger block is filled
 * by several writes; what is never written stays a hole of the file and
 * reads as zeros. Blocks never written are in state PAYLOAD_BLOCK_ZERO (as
 * qemu's block_state_zero=on). finish() writes the metadata, the BAT, the
 * region tables and the headers, and the file identifier last, so an
 * interrupted write leaves a file no one takes for a VHDX.
 * Spec: [MS-VHDX] 2.1-2.6. */
#include "image.h"
#include "vhdx.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VW_MAX_WRITE_UNIT (2u << 20) /* the copy engine's largest unit */

const char vhdxw_create_help[] =
  "subformat=dynamic|fixed  dynamic (default: blocks allocated as data arrives) or fixed\n"
  "block_size=SIZE       block size, a power of two from 1M to 256M (default as qemu-img:\n"
  "                      8M up to 1 GiB, 16M up to 100 GiB, 32M up to 32 TiB, 64M above)\n"
  "log_size=SIZE         log size, a multiple of 1M (default 1M)\n"
  "block_state_zero=on|off  blocks never written are 'zero' (on, default) or 'not present'\n";

struct vhdxw {
  pthread_mutex_t lock;
  bool fixed, failed, finished, state_zero;
  uint32_t block_size, log_size;
  uint64_t size, nblocks, chunk_ratio, bat_entries;
  uint64_t meta_off, bat_off, bat_len, data_off;
  uint64_t *bat;      /* host-endian entries */
  uint64_t next_free; /* under the lock */
};

static void vw_random(uint8_t *p, size_t n)
{
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ssize_t got = fd >= 0 ? read(fd, p, n) : -1;
  if (fd >= 0)
    close(fd);
  if (got != (ssize_t)n) {
    uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)p;
    for (size_t i = 0; i < n; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p[i] = (uint8_t)(x >> 56);
    }
  }
  p[7] = (uint8_t)((p[7] & 0x0f) | 0x40); /* version 4 (Data3's high nibble, stored LE) */
  p[8] = (uint8_t)((p[8] & 0x3f) | 0x80);
}

static int vw_bool(const char *key, const char *val, bool *out, struct error *e)
{
  if (!strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1"))
    *out = true;
  else if (!strcmp(val, "off") || !strcmp(val, "no") || !strcmp(val, "false") || !strcmp(val, "0"))
    *out = false;
  else
    return error_set(e, ERR_USAGE, "vhdx option %s=%s: must be on or off", key, val);
  return 0;
}

int vhdxw_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e)
{
  const char *sub = create_opts_get(o, "subformat");
  bool fixed;
  if (!sub || strcmp(sub, "dynamic") == 0)
    fixed = false;
  else if (strcmp(sub, "fixed") == 0)
    fixed = true;
  else
    return error_set(e, ERR_USAGE, "vhdx option subformat=%s: must be dynamic or fixed", sub);
  uint64_t bs, ls;
  int r = create_opts_get_size(o, "block_size", &bs, e);
  if (r < 0)
    return -1;
  if (r == 0 || bs == 0)
    bs = size > (32ull << 40) ? 64u << 20 : size > (100ull << 30) ? 32u << 20
         : size > (1ull << 30) ? 16u << 20 : 8u << 20;
  else if (bs < VHDX_MIN_BLOCK || bs > VHDX_MAX_BLOCK || (bs & (bs - 1)))
    return error_set(e, ERR_USAGE, "vhdx option block_size=%s: must be a power of two from 1M "
                     "to 256M", create_opts_get(o, "block_size"));
  if ((r = create_opts_get_size(o, "log_size", &ls, e)) < 0)
    return -1;
  if (r == 0)
    ls = VHDX_MiB;
  else if (ls < VHDX_MiB || ls % VHDX_MiB || ls > (1ull << 31))
    return error_set(e, ERR_USAGE, "vhdx option log_size=%s: must be a multiple of 1M from 1M "
                     "to 2G", create_opts_get(o, "log_size"));
  bool state_zero = true;
  const char *bsz = create_opts_get(o, "block_state_zero");
  if (bsz && vw_bool("block_state_zero", bsz, &state_zero, e) < 0)
    return -1;
  if (o->compress)
    return error_set(e, ERR_USAGE, "vhdx images cannot be compressed (-c)");
  /* Whole logical sectors, as qemu-img rounds. */
  if (size > VHDX_MAX_SIZE)
    return error_set(e, ERR_USAGE, "%s: virtual size %llu is too large for VHDX; the largest is "
                     "64 TiB", im->path, (unsigned long long)size);
  size = (size + 511) & ~511ull;

  struct vhdxw *w = calloc(1, sizeof *w);
  if (!w)
    return error_set(e, ERR_NOMEM, "out of memory");
  if (pthread_mutex_init(&w->lock, NULL) != 0) {
    free(w);
    return error_set(e, ERR_NOMEM, "%s: cannot create a mutex", im->path);
  }
  im->priv = w;
  w->fixed = fixed;
  w->state_zero = state_zero;
  w->block_size = (uint32_t)bs;
  w->log_size = (uint32_t)ls;
  w->size = size;
  w->nblocks = (size + bs - 1) / bs;
  w->chunk_ratio = (VHDX_CHUNK_SECTORS * 512) / bs;
  w->bat_entries = w->nblocks ? w->nblocks + (w->nblocks - 1) / w->chunk_ratio : 0;
  w->meta_off = VHDX_MiB + ls;
  w->bat_off = w->meta_off + VHDX_MiB;
  w->bat_len = (w->bat_entries * 8 + VHDX_MiB - 1) / VHDX_MiB * VHDX_MiB;
  if (w->bat_len == 0)
    w->bat_len = VHDX_MiB;
  if (w->bat_len > UINT32_MAX)
    return error_set(e, ERR_USAGE, "%s: VHDX BAT of %llu bytes is too large (use a larger "
                     "block_size)", im->path, (unsigned long long)w->bat_len);
  w->data_off = w->bat_off + w->bat_len;
  w->next_free = w->data_off;
  if (!(w->bat = calloc(w->bat_entries ? w->bat_entries : 1, sizeof *w->bat)))
    return error_set(e, ERR_NOMEM, "out of memory for a %llu-entry VHDX BAT",
                     (unsigned long long)w->bat_entries);
  for (uint64_t b = 0; b < w->nblocks; b++) {
    uint64_t *x = &w->bat[b + b / w->chunk_ratio];
    if (fixed) {
      *x = w->next_free | VHDX_PAYLOAD_FULLY_PRESENT;
      w->next_free += bs;
    } else {
      *x = state_zero ? VHDX_PAYLOAD_ZERO : VHDX_PAYLOAD_NOT_PRESENT;
    }
  }
  if (fixed && ftruncate(im->fd, (off_t)w->next_free) < 0)
    return error_errno(e, "%s: set size to %llu", im->path, (unsigned long long)w->next_free);
  im->size = size;
  im->block_size = w->block_size < VW_MAX_WRITE_UNIT ? w->block_size : VW_MAX_WRITE_UNIT;
  return 0;
}

int vhdxw_pwrite(struct img *im, const void *vbuf, size_t len, uint64_t off, struct error *e)
{
  struct vhdxw *w = im->priv;
  const uint8_t *buf = vbuf;
  if (!w || w->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: VHDX write after finish", im->path);
  if (off > w->size || len > w->size - off)
    return error_set(e, ERR_USAGE, "%s: internal error: VHDX write of %zu bytes at %llu is past "
                     "the end", im->path, len, (unsigned long long)off);
  while (len) {
    uint64_t blk = off / w->block_size, in = off % w->block_size;
    size_t n = w->block_size - in < len ? (size_t)(w->block_size - in) : len;
    uint64_t *x = &w->bat[blk + blk / w->chunk_ratio];
    pthread_mutex_lock(&w->lock);
    if (w->failed) {
      pthread_mutex_unlock(&w->lock);
      return error_set(e, ERR_IO, "%s: an earlier VHDX write failed", im->path);
    }
    if (VHDX_BAT_STATE(*x) != VHDX_PAYLOAD_FULLY_PRESENT) {
      *x = w->next_free | VHDX_PAYLOAD_FULLY_PRESENT;
      w->next_free += w->block_size;
    }
    uint64_t host = VHDX_BAT_OFFSET(*x) + in;
    pthread_mutex_unlock(&w->lock);
    if (img_pwrite_sparse(im->fd, buf, n, host, im->path, e) < 0) {
      pthread_mutex_lock(&w->lock);
      w->failed = true;
      pthread_mutex_unlock(&w->lock);
      return -1;
    }
    buf += n;
    off += n;
    len -= n;
  }
  return 0;
}

static void vw_header(uint8_t *h, uint64_t seq, const uint8_t *fguid, const uint8_t *dguid,
                      uint32_t log_size)
{
  memset(h, 0, VHDX_HEADER_SIZE);
  memcpy(h + VH_SIGNATURE, "head", 4);
  put_le64(h + VH_SEQUENCE, seq);
  memcpy(h + VH_FILE_WRITE_GUID, fguid, 16);
  memcpy(h + VH_DATA_WRITE_GUID, dguid, 16);
  put_le16(h + VH_LOG_VERSION, 0);
  put_le16(h + VH_VERSION, 1);
  put_le32(h + VH_LOG_LENGTH, log_size);
  put_le64(h + VH_LOG_OFFSET, VHDX_MiB);
  put_le32(h + VH_CHECKSUM, vhdx_checksum(h, VHDX_HEADER_SIZE, VH_CHECKSUM));
}

static int vw_write_tables(struct img *im, struct vhdxw *w, struct error *e)
{
  int ret = -1;
  size_t big = VHDX_REGION_SIZE > VHDX_METADATA_TABLE_SIZE + 4096 ? VHDX_REGION_SIZE
                                                                   : VHDX_METADATA_TABLE_SIZE + 4096;
  uint8_t *b = calloc(1, big);
  uint8_t *t = NULL;
  if (!b)
    return error_set(e, ERR_NOMEM, "out of memory");

  /* Metadata: the table, then the items right after its 64 KiB. */
  memcpy(b + VM_SIGNATURE, "metadata", 8);
  put_le16(b + VM_ENTRY_COUNT, 5);
  struct { const uint8_t *id; uint32_t len, flags; } items[] = {
    { vhdx_guid_file_params, 8, VME_IS_REQUIRED },
    { vhdx_guid_disk_size, 8, VME_IS_VIRTUAL_DISK | VME_IS_REQUIRED },
    { vhdx_guid_disk_id, 16, VME_IS_VIRTUAL_DISK | VME_IS_REQUIRED },
    { vhdx_guid_logical_sector, 4, VME_IS_VIRTUAL_DISK | VME_IS_REQUIRED },
    { vhdx_guid_physical_sector, 4, VME_IS_VIRTUAL_DISK | VME_IS_REQUIRED },
  };
  uint32_t at = VHDX_METADATA_TABLE_SIZE;
  for (size_t i = 0; i < 5; i++) {
    uint8_t *m = b + VM_ENTRIES + i * VM_ENTRY_SIZE;
    memcpy(m + VME_ITEM, items[i].id, 16);
    put_le32(m + VME_OFFSET, at);
    put_le32(m + VME_LENGTH, items[i].len);
    put_le32(m + VME_FLAGS, items[i].flags);
    uint8_t *val = b + at;
    switch (i) {
    case 0: put_le32(val, w->block_size); put_le32(val + 4, w->fixed ? VFP_LEAVE_ALLOCATED : 0); break;
    case 1: put_le64(val, w->size); break;
    case 2: vw_random(val, 16); break;
    case 3: put_le32(val, 512); break;
    case 4: put_le32(val, 4096); break;
    }
    at += items[i].len;
  }
  if (img_pwrite_file(im->fd, b, VHDX_METADATA_TABLE_SIZE + 4096, w->meta_off, im->path, e) < 0) {
    error_prefix(e, "VHDX metadata");
    goto out;
  }

  /* The BAT, a MiB at a time. */
  if (!(t = malloc(VHDX_MiB))) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  uint64_t per = VHDX_MiB / 8;
  for (uint64_t i = 0; i < w->bat_entries; i += per) {
    uint64_t n = w->bat_entries - i < per ? w->bat_entries - i : per;
    for (uint64_t k = 0; k < n; k++)
      put_le64(t + k * 8, w->bat[i + k]);
    if (img_pwrite_file(im->fd, t, n * 8, w->bat_off + i * 8, im->path, e) < 0) {
      error_prefix(e, "VHDX BAT");
      goto out;
    }
  }

  /* Region tables, twice. */
  memset(b, 0, VHDX_REGION_SIZE);
  memcpy(b + VR_SIGNATURE, "regi", 4);
  put_le32(b + VR_ENTRY_COUNT, 2);
  uint8_t *r = b + VR_ENTRIES;
  memcpy(r + VRE_GUID, vhdx_guid_bat, 16);
  put_le64(r + VRE_OFFSET, w->bat_off);
  put_le32(r + VRE_LENGTH, (uint32_t)w->bat_len);
  put_le32(r + VRE_REQUIRED, 1);
  r += VR_ENTRY_SIZE;
  memcpy(r + VRE_GUID, vhdx_guid_metadata, 16);
  put_le64(r + VRE_OFFSET, w->meta_off);
  put_le32(r + VRE_LENGTH, (uint32_t)VHDX_MiB);
  put_le32(r + VRE_REQUIRED, 1);
  put_le32(b + VR_CHECKSUM, vhdx_checksum(b, VHDX_REGION_SIZE, VR_CHECKSUM));
  if (img_pwrite_file(im->fd, b, VHDX_REGION_SIZE, VHDX_REGION1_OFFSET, im->path, e) < 0 ||
      img_pwrite_file(im->fd, b, VHDX_REGION_SIZE, VHDX_REGION2_OFFSET, im->path, e) < 0) {
    error_prefix(e, "VHDX region table");
    goto out;
  }

  /* Headers. */
  uint8_t fguid[16], dguid[16];
  vw_random(fguid, 16);
  vw_random(dguid, 16);
  vw_header(b, 1, fguid, dguid, w->log_size);
  if (img_pwrite_file(im->fd, b, VHDX_HEADER_SIZE, VHDX_HEADER1_OFFSET, im->path, e) < 0)
    goto hdr_fail;
  vw_header(b, 2, fguid, dguid, w->log_size);
  if (img_pwrite_file(im->fd, b, VHDX_HEADER_SIZE, VHDX_HEADER2_OFFSET, im->path, e) < 0)
    goto hdr_fail;
  ret = 0;
  goto out;
hdr_fail:
  error_prefix(e, "VHDX header");
out:
  free(b);
  free(t);
  return ret;
}

int vhdxw_finish(struct img *im, struct error *e)
{
  struct vhdxw *w = im->priv;
  if (!w || w->finished)
    return error_set(e, ERR_USAGE, "%s: internal error: VHDX finish twice", im->path);
  if (w->failed)
    return error_set(e, ERR_IO, "%s: an earlier VHDX write failed; the image is incomplete",
                     im->path);
  if (ftruncate(im->fd, (off_t)w->next_free) < 0)
    return error_errno(e, "%s: set size to %llu", im->path, (unsigned long long)w->next_free);
  if (vw_write_tables(im, w, e) < 0)
    return -1;
  if (img_sync(im) < 0)
    return error_errno(e, "%s: fsync", im->path);
  uint8_t id[512] = { 0 };
  memcpy(id, "vhdxfile", 8);
  static const char creator[] = "amiport";
  for (size_t i = 0; creator[i]; i++)
    put_le16(id + 8 + i * 2, (uint16_t)creator[i]);
  if (img_pwrite_file(im->fd, id, sizeof id, 0, im->path, e) < 0)
    return error_prefix(e, "VHDX file identifier");
  if (img_sync(im) < 0)
    return error_errno(e, "%s: fsync", im->path);
  w->finished = true;
  return 0;
}

void vhdxw_close(struct img *im)
{
  struct vhdxw *w = im->priv;
  if (!w)
    return;
  pthread_mutex_destroy(&w->lock);
  free(w->bat);
  free(w);
  im->priv = NULL;
}
