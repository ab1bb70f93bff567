/* boot.c - which bootloaders the disk carries, and so which boot modes it
 * supports: BIOS (GRUB 2 i386-pc boot.img in the MBR with its core.img in
 * the post-MBR gap or a BIOS boot partition, GRUB legacy, SYSLINUX/EXTLINUX,
 * LILO) and UEFI (the fallback loaders \EFI\BOOT\BOOT*.EFI on the ESP, whose
 * PE header tells their architecture; shim, GRUB and systemd-boot beside). */
#include "inspect.h"

#include <stdio.h>
#include <string.h>

#define GRUB_KERNEL_SECTOR 0x5c /* boot.img: LBA of core.img's first sector */

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
    { "/EFI/Microsoft/Boot/bootmgfw.efi", "windows-boot-manager" },
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

int inspect_boot(struct inspection *in, struct error *e)
{
  (void)e;
  if (in->pt.kind != PT_NONE)
    bios_loaders(in);
  uefi_loaders(in);
  return 0;
}
