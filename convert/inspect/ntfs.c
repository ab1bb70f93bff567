/* ntfs.c - NTFS is named, not read: its boot sector (the OEM id "NTFS    "
 * at 3 and a BPB whose fields are in range), the volume serial number at
 * 0x48 (shown as blkid shows it, 16 hex digits), the volume label from the
 * $Volume record of the MFT, and whether the boot code loads BOOTMGR or
 * NTLDR. Every on-disk value is bounded before use. */
#include "fs.h"

#include <stdio.h>
#include <string.h>

#define NTFS_VOLUME_RECORD 3 /* $Volume, the fourth MFT record */
#define NTFS_ATTR_VOLUME_NAME 0x60
#define NTFS_ATTR_END 0xffffffffu

static bool pow2_in(uint32_t v, uint32_t lo, uint32_t hi)
{
  return v >= lo && v <= hi && !(v & (v - 1));
}

/* Bytes from the "clusters per record" byte: positive counts clusters,
 * negative n means 2^-n bytes. 0 when out of range. */
static uint32_t ntfs_record_size(int8_t v, uint32_t cluster)
{
  uint64_t s = v > 0 ? (uint64_t)v * cluster : v <= -9 && v >= -16 ? 1ull << -v : 0;
  return s <= 65536 && pow2_in((uint32_t)s, 512, 65536) ? (uint32_t)s : 0;
}

bool ntfs_boot_sector(const uint8_t *b, size_t len, uint64_t region, struct ntfs_boot *nb)
{
  if (len < 512 || memcmp(b + 3, "NTFS    ", 8) != 0)
    return false;
  *nb = (struct ntfs_boot){ .sector = le16(b + 0x0b) };
  /* Sectors per cluster: 1..128, or 0xf4..0xff meaning 2^(256-n). */
  uint8_t spc = b[0x0d];
  uint32_t sectors = spc <= 0x80 ? spc : spc >= 0xf4 ? 1u << (256 - spc) : 0;
  if (!pow2_in(nb->sector, 256, 4096) || !pow2_in(sectors, 1, 1u << 12))
    return false;
  nb->cluster = nb->sector * sectors;
  if (nb->cluster > (2u << 20))
    return false;
  nb->total_sectors = le64(b + 0x28);
  nb->mft_lcn = le64(b + 0x30);
  nb->record = ntfs_record_size((int8_t)b[0x40], nb->cluster);
  if (nb->total_sectors == 0 || nb->total_sectors > region / nb->sector + 1 ||
      nb->mft_lcn == 0 || nb->mft_lcn >= nb->total_sectors / sectors || nb->record == 0)
    return false;
  nb->serial = le64(b + 0x48);
  return true;
}

const char *ntfs_boot_loader(const uint8_t *b, size_t len)
{
  static const char *const names[][2] = { { "BOOTMGR", "B\0O\0O\0T\0M\0G\0R\0" },
                                          { "NTLDR", "N\0T\0L\0D\0R\0" } };
  for (size_t i = 0; i < 2; i++)
    if (memmem(b, len, names[i][0], strlen(names[i][0])) ||
        memmem(b, len, names[i][1], 2 * strlen(names[i][0])))
      return names[i][0];
  return NULL;
}

/* UTF-16LE (n units) to UTF-8, '?' for what is not in the BMP. */
static void utf16_to_utf8(const uint8_t *s, size_t n, char *out, size_t cap)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint16_t c = le16(s + 2 * i);
    char u[3];
    size_t k;
    if (c < 0x80) {
      u[0] = (char)c;
      k = 1;
    } else if (c < 0x800) {
      u[0] = (char)(0xc0 | c >> 6);
      u[1] = (char)(0x80 | (c & 0x3f));
      k = 2;
    } else if (c >= 0xd800 && c < 0xe000) {
      u[0] = '?';
      k = 1;
    } else {
      u[0] = (char)(0xe0 | c >> 12);
      u[1] = (char)(0x80 | ((c >> 6) & 0x3f));
      u[2] = (char)(0x80 | (c & 0x3f));
      k = 3;
    }
    if (c == 0 || o + k >= cap)
      break;
    memcpy(out + o, u, k);
    o += k;
  }
  out[o] = 0;
}

/* The label: $Volume's resident $VOLUME_NAME attribute, after the update
 * sequence fixups. Quietly none when anything is out of place. */
static void ntfs_label(struct disk *d, uint64_t base, uint64_t size, const struct ntfs_boot *nb,
                       char *out, size_t cap)
{
  uint8_t r[65536];
  struct error e;
  uint64_t off = nb->mft_lcn * nb->cluster + (uint64_t)NTFS_VOLUME_RECORD * nb->record;
  if (off > size || nb->record > size - off ||
      disk_pread(d, r, nb->record, base + off, &e) < 0 || memcmp(r, "FILE", 4) != 0)
    return;
  uint16_t usa = le16(r + 4), count = le16(r + 6);
  /* One fixup per 512-byte stride, plus the sequence number itself. */
  if (count != nb->record / 512 + 1 || usa < 0x28 || (size_t)usa + 2u * count > nb->record)
    return;
  for (uint16_t i = 1; i < count; i++) {
    uint8_t *end = r + 512u * i - 2;
    if (memcmp(end, r + usa, 2) != 0)
      return; /* a torn write */
    memcpy(end, r + usa + 2 * i, 2);
  }
  size_t a = le16(r + 0x14);
  while (a + 24 <= nb->record) {
    uint32_t type = le32(r + a), alen = le32(r + a + 4);
    if (type == NTFS_ATTR_END || alen < 24 || alen > nb->record - a)
      return;
    if (type == NTFS_ATTR_VOLUME_NAME && r[a + 8] == 0) {
      uint32_t vlen = le32(r + a + 0x10);
      uint16_t voff = le16(r + a + 0x14);
      if (voff <= alen && vlen <= alen - voff)
        utf16_to_utf8(r + a + voff, vlen / 2, out, cap);
      return;
    }
    a += alen;
  }
}

bool ntfs_identify(struct disk *d, uint64_t base, uint64_t size, struct fs *fs)
{
  uint8_t b[512];
  struct error e;
  struct ntfs_boot nb;
  if (size < 512 || disk_pread(d, b, sizeof b, base, &e) < 0 ||
      !ntfs_boot_sector(b, sizeof b, size, &nb))
    return false;
  snprintf(fs->uuid, sizeof fs->uuid, "%016llX", (unsigned long long)nb.serial);
  snprintf(fs->version, sizeof fs->version, "ntfs");
  ntfs_label(d, base, size, &nb, fs->label, sizeof fs->label);
  return true;
}
