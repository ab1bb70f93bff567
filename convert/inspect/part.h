/* part.h - partition tables: MBR (with extended/logical partitions) and GPT
 * (CRC-checked, with the backup header when the primary is damaged),
 * protective and hybrid MBRs. */
#ifndef AMIPORT_PART_H
#define AMIPORT_PART_H

#include <stdbool.h>
#include <stdint.h>

#include "disk.h"

enum ptable { PT_NONE, PT_MBR, PT_GPT, PT_HYBRID };

struct partition {
  unsigned index;     /* 1-based, as Linux numbers them (logical from 5) */
  uint64_t start, size; /* bytes */
  uint8_t mbr_type;   /* MBR partitions */
  char type_guid[37]; /* GPT partitions, upper case */
  char name[72];      /* GPT partition name (UTF-8) */
  bool bootable;      /* MBR active flag */
  const char *type;   /* "EFI System", "BIOS boot", "Linux", ... or "unknown" */
};

struct part_table {
  enum ptable kind;
  struct partition *v;
  size_t n;
  uint32_t sector;        /* logical sector size the table was found with */
  bool gpt_backup_used;   /* the primary GPT was damaged */
  bool gpt_backup_bad;    /* the backup GPT is missing or damaged */
  bool mbr_loop;          /* an extended partition chain looped or ran too long */
  char gpt_invalid[352];  /* both GPT headers refused: why each, naming the field */
  uint8_t mbr[512];       /* sector 0, for boot code checks */
};

int part_read(struct disk *d, struct part_table *pt, struct error *e);
void part_free(struct part_table *pt);
const char *part_table_name(enum ptable k);

/* Well-known types. */
bool part_is_esp(const struct partition *p);
bool part_is_bios_boot(const struct partition *p);

#endif
