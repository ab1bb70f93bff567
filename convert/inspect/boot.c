/* boot.c - which bootloaders the disk carries, and so which boot modes it
 * supports: BIOS (GRUB 2 i386-pc boot.img in the MBR with its core.img in
 * the post-MBR gap or a BIOS boot partition, GRUB legacy, SYSLINUX/EXTLINUX,
 * LILO) and UEFI (the fallback loaders \EFI\BOOT\BOOT*.EFI on the ESP, whose
 * PE header tells their architecture; shim, GRUB and systemd-boot beside),
 * and Windows's (its boot manager on the ESP, its MBR and NTFS boot code). */
#include "inspect.h"

#include <stdio.h>
#include <string.h>

#define GRUB_KERNEL_SECTOR 0x5c /* boot.img: LBA of core.img's first sector */
#define WINDOWS_EFI "/EFI/Microsoft/Boot/bootmgfw.efi"

static bool mem_has(const uint8_t *b, size_t len, const char *s)
{
  return memmem(b, len, s, strlen(s)) != NULL;
}

/* GRUB 2 in the MBR: is the core.img it points to really there? */
static void grub2_bios(struct inspection *in)
{
  uint64_t lba = le64(in->pt.mbr + GRUB_KERNEL_SECTOR);
  uint8_t s[512];
  struct error e;
  snprintf(in->bootloader, sizeof in->bootloader, "grub2");
  if (lba == 0 || lba >= in->disk.size / 512 || disk_pread(&in->disk, s, 512, lba * 512, &e) < 0 ||
      !mem_has(s, sizeof s, "loading")) {
    in->grub_core_missing = true;
    return;
  }
  in->bios = true;
}

static void bios_loaders(struct inspection *in)
{
  const uint8_t *m = in->pt.mbr;
  static const uint8_t zero[440];
  if (memcmp(m, zero, sizeof zero) == 0)
    return; /* no boot code at all */
  if (memcmp(m + 6, "LILO", 4) == 0) {
    snprintf(in->bootloader, sizeof in->bootloader, "lilo");
    in->lilo = true;
    return;
  }
  if (mem_has(m, 440, "GRUB")) {
    if (m[0x3e] == 3 && m[0x3f] == 2) {
      snprintf(in->bootloader, sizeof in->bootloader, "grub-legacy");
      in->bios = true;
      return;
    }
    grub2_bios(in);
    return;
  }
  /* Generic MBR code chain-loading the active partition's boot sector. */
  for (size_t i = 0; i < in->nvol; i++) {
    const struct partition *p = in->vol[i].part;
    uint8_t vbr[1024];
    struct error e;
    if (!p || !p->bootable || disk_pread(&in->disk, vbr, sizeof vbr, p->start, &e) < 0)
      continue;
    if (mem_has(vbr, sizeof vbr, "EXTLINUX") || mem_has(vbr, sizeof vbr, "SYSLINUX")) {
      snprintf(in->bootloader, sizeof in->bootloader,
               mem_has(vbr, sizeof vbr, "EXTLINUX") ? "extlinux" : "syslinux");
      in->bios = true;
      return;
    }
    if (mem_has(vbr, sizeof vbr, "GRUB")) {
      snprintf(in->bootloader, sizeof in->bootloader, "grub2");
      in->bios = true;
      return;
    }
  }
}

static void uefi_loaders(struct inspection *in)
{
  if (in->esp < 0)
    return;
  struct fs *fs = &in->vol[in->esp].fs;
  static const char *const fallback[] = { "/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/BOOTAA64.EFI",
                                          "/EFI/BOOT/BOOTIA32.EFI" };
  for (size_t i = 0; i < 3; i++) {
    struct fs_inode ino;
    struct error e;
    uint8_t head[4096];
    if (fs_resolve(fs, fallback[i], true, &ino, &e) != 0 || ino.type != FS_REG)
      continue;
    ssize_t n = fs->drv->read(fs, ino.ino, head, sizeof head, 0, &e);
    const char *arch = n > 0 ? pe_machine_arch(head, (size_t)n) : NULL;
    if (!arch)
      continue;
    snprintf(in->efi_loader, sizeof in->efi_loader, "%s", fallback[i]);
    for (char *c = in->efi_loader; *c; c++)
      if (*c == '/')
        *c = '\\';
    in->efi_arch = arch;
    in->uefi = true;
    break;
  }
  if (!in->uefi)
    return;
  /* Name the loader from what sits beside it on the ESP. */
  static const struct { const char *path, *name; } known[] = {
    { "/EFI/systemd/systemd-bootx64.efi", "systemd-boot" },
    { "/EFI/systemd/systemd-bootaa64.efi", "systemd-boot" },
    { "/EFI/BOOT/grubx64.efi", "grub2" },
    { "/EFI/BOOT/grubaa64.efi", "grub2" },
    { "/EFI/debian/grubx64.efi", "grub2" },
    { "/EFI/debian/grubaa64.efi", "grub2" },
    { "/EFI/ubuntu/grubx64.efi", "grub2" },
    { "/EFI/redhat/grubx64.efi", "grub2" },
    { "/EFI/centos/grubx64.efi", "grub2" },
    { "/EFI/fedora/grubx64.efi", "grub2" },
    { WINDOWS_EFI, "windows-boot-manager" },
  };
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
    struct fs_inode ino;
    struct error e;
    if (fs_resolve(fs, known[i].path, true, &ino, &e) == 0) {
      if (!in->bootloader[0]) /* a BIOS loader found first keeps the name */
        snprintf(in->bootloader, sizeof in->bootloader, "%s", known[i].name);
      return;
    }
  }
  /* A lone fallback loader: GRUB's standalone image names itself inside. */
  if (!in->bootloader[0])
    snprintf(in->bootloader, sizeof in->bootloader, "efi");
}

/* The Windows Boot Manager on the ESP, a real PE image: its architecture. */
static const char *windows_efi(struct inspection *in)
{
  if (in->esp < 0)
    return NULL;
  struct fs *fs = &in->vol[in->esp].fs;
  struct fs_inode ino;
  struct error e;
  uint8_t head[4096];
  if (fs_resolve(fs, WINDOWS_EFI, true, &ino, &e) != 0 || ino.type != FS_REG)
    return NULL;
  ssize_t n = fs->drv->read(fs, ino.ino, head, sizeof head, 0, &e);
  return n > 0 ? pe_machine_arch(head, (size_t)n) : NULL;
}

/* Windows: an NTFS volume, and its boot manager on the ESP, or on a BIOS
 * disk Windows's MBR code (known by its messages) or an NTFS boot sector
 * whose code loads BOOTMGR or NTLDR. A Linux root wins (dual boot). */
static void windows_loaders(struct inspection *in)
{
  bool ntfs = false;
  const char *vbr_loader = NULL;
  for (size_t i = 0; i < in->nvol; i++) {
    const struct inspect_volume *v = &in->vol[i];
    uint8_t vbr[8192]; /* the boot sector and the rest of $Boot's code */
    struct error e;
    if (!v->fs_name || strcmp(v->fs_name, "ntfs") != 0)
      continue;
    ntfs = true;
    if (!vbr_loader && v->size >= sizeof vbr &&
        disk_pread(&in->disk, vbr, sizeof vbr, v->start, &e) == 0)
      vbr_loader = ntfs_boot_loader(vbr, sizeof vbr);
  }
  if (!ntfs || in->root >= 0)
    return;
  const uint8_t *m = in->pt.mbr;
  bool mbr = in->pt.kind != PT_NONE && (mem_has(m, 440, "Invalid partition table") ||
                                        mem_has(m, 440, "Missing operating system"));
  const char *efi_arch = windows_efi(in);
  if (!efi_arch && !mbr && !(vbr_loader && in->pt.kind != PT_NONE))
    return;
  in->windows = true;
  snprintf(in->os_id, sizeof in->os_id, "windows");
  if (!in->os_pretty[0])
    snprintf(in->os_pretty, sizeof in->os_pretty, "Windows");
  snprintf(in->bootloader, sizeof in->bootloader, "%s",
           efi_arch || (vbr_loader && strcmp(vbr_loader, "BOOTMGR") == 0) ? "windows-boot-manager"
           : vbr_loader ? "ntldr" : "windows-mbr");
  if (efi_arch) {
    in->uefi = true;
    in->efi_arch = efi_arch;
    if (!in->efi_loader[0])
      snprintf(in->efi_loader, sizeof in->efi_loader, "%s", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi");
  }
  /* The boot sector's loader runs only if some MBR code chain-loads it. */
  static const uint8_t zero[440];
  if (in->pt.kind != PT_NONE && (mbr || (vbr_loader && memcmp(m, zero, sizeof zero) != 0)))
    in->bios = true;
}

int inspect_boot(struct inspection *in, struct error *e)
{
  (void)e;
  if (in->pt.kind != PT_NONE)
    bios_loaders(in);
  uefi_loaders(in);
  windows_loaders(in);
  return 0;
}
