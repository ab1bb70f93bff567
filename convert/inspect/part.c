/* part.c - MBR and GPT partition tables.
 * GPT: UEFI specification, chapter 5 (header CRC32 over HeaderSize bytes with
 * the CRC field zeroed; entry array CRC32). MBR: the classic layout with EBR
 * chains for logical partitions. Everything is bounded: entry counts, entry
 * sizes, EBR chain length and loops. */
#include "part.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GPT_MAX_ENTRIES_BYTES (1u << 20) /* more is hostile, not a disk */
#define MBR_MAX_LOGICAL 128

static const struct {
  const char *guid, *name;
} gpt_types[] = {
  { "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System" },
  { "21686148-6449-6E6F-744E-656564454649", "BIOS boot" },
  { "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux" },
  { "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)" },
  { "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM64)" },
  { "44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)" },
  { "BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot" },
  { "E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM" },
  { "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap" },
  { "A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID" },
  { "CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS" },
  { "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data" },
  { "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved" },
  { "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery" },
};

static const char *mbr_type_name(uint8_t t)
{
  switch (t) {
  case 0x01: case 0x04: case 0x06: case 0x0b: case 0x0c: case 0x0e: return "FAT";
  case 0x05: case 0x0f: case 0x85: return "Extended";
  case 0x07: return "Microsoft basic data";
  case 0x82: return "Linux swap";
  case 0x83: return "Linux";
  case 0x8e: return "Linux LVM";
  case 0xfd: return "Linux RAID";
  case 0xee: return "GPT protective";
  case 0xef: return "EFI System";
  default: return "unknown";
  }
}

const char *part_table_name(enum ptable k)
{
  static const char *names[] = { "none", "mbr", "gpt", "hybrid" };
  return names[k];
}

bool part_is_esp(const struct partition *p)
{
  return p->mbr_type == 0xef || strcmp(p->type_guid, gpt_types[0].guid) == 0;
}

bool part_is_bios_boot(const struct partition *p)
{
  return strcmp(p->type_guid, gpt_types[1].guid) == 0;
}

static int part_add(struct part_table *pt, const struct partition *p, struct error *e)
{
  struct partition *v = realloc(pt->v, (pt->n + 1) * sizeof *v);
  if (!v)
    return error_set(e, ERR_NOMEM, "out of memory");
  pt->v = v;
  pt->v[pt->n++] = *p;
  return 0;
}

static void guid_text(const uint8_t *g, char out[37])
{
  snprintf(out, 37, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", le32(g), le16(g + 4),
           le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
}

/* UTF-16LE name to UTF-8 (BMP only, which is all GPT names use in practice). */
static void utf16_name(const uint8_t *src, size_t units, char *out, size_t cap)
{
  size_t o = 0;
  for (size_t i = 0; i < units; i++) {
    unsigned c = le16(src + 2 * i);
    if (!c)
      break;
    if (c < 0x80 && o + 1 < cap)
      out[o++] = (char)c;
    else if (c < 0x800 && o + 2 < cap) {
      out[o++] = (char)(0xc0 | c >> 6);
      out[o++] = (char)(0x80 | (c & 0x3f));
    } else if (c >= 0x800 && o + 3 < cap) {
      out[o++] = (char)(0xe0 | c >> 12);
      out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
      out[o++] = (char)(0x80 | (c & 0x3f));
    }
  }
  out[o] = 0;
}

/* Reads and checks a GPT header at lba; 0 good (entries loaded into pt), 1 bad
 * (why, naming the field and its value, in why[cap]), -1 error. */
static int gpt_try(struct disk *d, struct part_table *pt, uint32_t ss, uint64_t lba,
                   char *why, size_t cap, struct error *e)
{
  uint8_t h[4096];
  if (lba == 0 || lba > d->size / ss - 1) {
    snprintf(why, cap, "LBA %llu is outside the disk (%llu sectors)", (unsigned long long)lba,
             (unsigned long long)(d->size / ss));
    return 1;
  }
  if (disk_pread(d, h, ss, lba * ss, e) < 0)
    return -1;
  if (memcmp(h, "EFI PART", 8) != 0) {
    snprintf(why, cap, "no 'EFI PART' signature");
    return 1;
  }
  uint32_t hsize = le32(h + 12);
  if (hsize < 92 || hsize > ss) {
    snprintf(why, cap, "HeaderSize is %u (must be 92 to %u)", hsize, ss);
    return 1;
  }
  uint32_t crc = le32(h + 16);
  memset(h + 16, 0, 4);
  uint32_t sum = (uint32_t)crc32(0, h, hsize);
  if (sum != crc) {
    snprintf(why, cap, "HeaderCRC32 is 0x%08x but the header sums to 0x%08x", crc, sum);
    return 1;
  }
  if (le64(h + 24) != lba) {
    snprintf(why, cap, "MyLBA is %llu but the header is at LBA %llu",
             (unsigned long long)le64(h + 24), (unsigned long long)lba);
    return 1;
  }
  uint64_t entries_lba = le64(h + 72);
  uint32_t count = le32(h + 80), esize = le32(h + 84), ecrc = le32(h + 88);
  if (esize < 128 || esize > 4096 || (esize & (esize - 1))) {
    snprintf(why, cap, "SizeOfPartitionEntry is %u (must be a power of two from 128 to 4096)",
             esize);
    return 1;
  }
  if ((uint64_t)count * esize > GPT_MAX_ENTRIES_BYTES) {
    snprintf(why, cap, "NumberOfPartitionEntries is %u (at most %u entries of %u bytes)", count,
             GPT_MAX_ENTRIES_BYTES / esize, esize);
    return 1;
  }
  uint64_t bytes = (uint64_t)count * esize;
  if (entries_lba == 0 || entries_lba > d->size / ss || bytes > d->size - entries_lba * ss) {
    snprintf(why, cap, "PartitionEntryLBA is %llu; %u entries of %u bytes there are outside "
             "the disk (%llu sectors)", (unsigned long long)entries_lba, count, esize,
             (unsigned long long)(d->size / ss));
    return 1;
  }
  uint8_t *ents = malloc(bytes ? bytes : 1);
  if (!ents)
    return error_set(e, ERR_NOMEM, "out of memory");
  int ret = -1;
  if (disk_pread(d, ents, bytes, entries_lba * ss, e) < 0)
    goto out;
  uint32_t esum = (uint32_t)crc32(0, ents, (uInt)bytes);
  if (esum != ecrc) {
    snprintf(why, cap, "PartitionEntryArrayCRC32 is 0x%08x but the entries sum to 0x%08x", ecrc,
             esum);
    ret = 1;
    goto out;
  }
  uint64_t disk_sectors = d->size / ss;
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *x = ents + (size_t)i * esize;
    static const uint8_t zero[16];
    if (memcmp(x, zero, 16) == 0)
      continue;
    uint64_t first = le64(x + 32), last = le64(x + 40);
    struct partition p = { .index = i + 1 };
    guid_text(x, p.type_guid);
    utf16_name(x + 56, 36, p.name, sizeof p.name);
    p.type = "unknown";
    for (size_t k = 0; k < sizeof gpt_types / sizeof *gpt_types; k++)
      if (strcmp(p.type_guid, gpt_types[k].guid) == 0)
        p.type = gpt_types[k].name;
    if (first > last || last >= disk_sectors)
      continue; /* an entry outside the disk cannot be read; skip it */
    p.start = first * ss;
    p.size = (last - first + 1) * ss;
    if (part_add(pt, &p, e) < 0)
      goto out;
  }
  ret = 0;
out:
  free(ents);
  return ret;
}

/* Reads the GPT on ss-byte sectors: 0 found (the primary, or the backup when
 * the primary is bad), 1 both headers bad (why each in why[cap]; *sig when
 * either has the signature), -1 error. */
static int gpt_read(struct disk *d, struct part_table *pt, uint32_t ss, char *why, size_t cap,
                    bool *sig, struct error *e)
{
  char why_primary[128], why_backup[128];
  int r = gpt_try(d, pt, ss, 1, why_primary, sizeof why_primary, e);
  if (r < 0)
    return -1;
  uint64_t last = d->size / ss - 1;
  if (r == 0) {
    /* Check the backup too, without keeping its entries. */
    struct part_table tmp = { 0 };
    int rb = gpt_try(d, &tmp, ss, last, why_backup, sizeof why_backup, e);
    part_free(&tmp);
    if (rb < 0)
      return -1;
    pt->gpt_backup_bad = rb == 1;
    return 0;
  }
  pt->n = 0;
  r = gpt_try(d, pt, ss, last, why_backup, sizeof why_backup, e);
  if (r == 0)
    pt->gpt_backup_used = true;
  if (r == 1) {
    static const char nosig[] = "no 'EFI PART' signature";
    *sig = strcmp(why_primary, nosig) != 0 || strcmp(why_backup, nosig) != 0;
    snprintf(why, cap, "primary header (LBA 1%s): %s; backup header (LBA %llu): %s",
             ss == 512 ? "" : " of 4096-byte sectors", why_primary, (unsigned long long)last,
             why_backup);
  }
  return r;
}

/* Walks the EBR chain of an extended partition at byte offset ext. */
static int mbr_logical(struct disk *d, struct part_table *pt, uint64_t ext, uint64_t ext_size,
                       struct error *e)
{
  uint64_t ebr = ext;
  unsigned index = 5;
  uint64_t seen[MBR_MAX_LOGICAL];
  for (unsigned hops = 0;; hops++) {
    if (hops == MBR_MAX_LOGICAL) {
      pt->mbr_loop = true;
      return 0;
    }
    for (unsigned k = 0; k < hops; k++)
      if (seen[k] == ebr) {
        pt->mbr_loop = true;
        return 0;
      }
    seen[hops] = ebr;
    uint8_t s[512];
    if (ebr > d->size - 512 || disk_pread(d, s, 512, ebr, e) < 0)
      return ebr > d->size - 512 ? 0 : -1;
    if (s[510] != 0x55 || s[511] != 0xaa)
      return 0;
    const uint8_t *a = s + 446, *b = s + 462;
    uint64_t start = (uint64_t)le32(a + 8) * 512, size = (uint64_t)le32(a + 12) * 512;
    if (a[4] && size && ebr + start + size <= d->size) {
      struct partition p = { .index = index++, .start = ebr + start, .size = size,
                             .mbr_type = a[4], .bootable = a[0] == 0x80, .type = mbr_type_name(a[4]) };
      if (part_add(pt, &p, e) < 0)
        return -1;
    }
    if (b[4] != 0x05 && b[4] != 0x0f && b[4] != 0x85)
      return 0;
    uint64_t next = ext + (uint64_t)le32(b + 8) * 512;
    if (next >= ext + ext_size)
      return 0;
    ebr = next;
  }
}

int part_read(struct disk *d, struct part_table *pt, struct error *e)
{
  *pt = (struct part_table){ .sector = 512 };
  if (d->size < 512)
    return 0;
  if (disk_pread(d, pt->mbr, 512, 0, e) < 0)
    return -1;
  bool has_mbr = pt->mbr[510] == 0x55 && pt->mbr[511] == 0xaa;
  bool protective = false, others = false;
  if (has_mbr)
    for (int i = 0; i < 4; i++) {
      uint8_t t = pt->mbr[446 + 16 * i + 4];
      if (t == 0xee)
        protective = true;
      else if (t)
        others = true;
    }
  if (protective || !has_mbr) {
    /* GPT, on 512-byte sectors or on 4 KiB ones. When neither has one, say
     * why if a header has the signature or the MBR promises a GPT. */
    char why[sizeof pt->gpt_invalid] = "";
    bool why_sig = false;
    for (uint32_t ss = 512; ss <= 4096; ss *= 8) {
      if (d->size < 3ull * ss)
        break;
      char w[sizeof pt->gpt_invalid];
      bool sig = false;
      int r = gpt_read(d, pt, ss, w, sizeof w, &sig, e);
      if (r < 0)
        return -1;
      if (r == 0) {
        pt->sector = ss;
        pt->kind = protective && others ? PT_HYBRID : PT_GPT;
        return 0;
      }
      if (!why[0] || (sig && !why_sig)) {
        memcpy(why, w, sizeof why);
        why_sig = sig;
      }
    }
    if (why[0] && (why_sig || protective))
      memcpy(pt->gpt_invalid, why, sizeof why);
    if (!has_mbr)
      return 0;
  }
  /* A plain MBR. A FAT or NTFS boot sector also ends in 55 AA: an MBR's
   * status bytes are 0x00 or 0x80. */
  for (int i = 0; i < 4; i++) {
    const uint8_t *x = pt->mbr + 446 + 16 * i;
    if (x[0] != 0 && x[0] != 0x80)
      return 0;
  }
  pt->kind = PT_MBR;
  for (int i = 0; i < 4; i++) {
    const uint8_t *x = pt->mbr + 446 + 16 * i;
    uint64_t start = (uint64_t)le32(x + 8) * 512, size = (uint64_t)le32(x + 12) * 512;
    if (!x[4] || !size || start > d->size || size > d->size - start)
      continue;
    struct partition p = { .index = (unsigned)i + 1, .start = start, .size = size,
                           .mbr_type = x[4], .bootable = x[0] == 0x80, .type = mbr_type_name(x[4]) };
    if (part_add(pt, &p, e) < 0)
      return -1;
    if ((x[4] == 0x05 || x[4] == 0x0f || x[4] == 0x85) && mbr_logical(d, pt, start, size, e) < 0)
      return -1;
  }
  return 0;
}

void part_free(struct part_table *pt)
{
  free(pt->v);
  pt->v = NULL;
  pt->n = 0;
}
