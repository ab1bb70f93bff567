/* check.c - judging an inspection: findings with stable codes, a severity
 * and a sentence saying what to do; whether the image is importable (no
 * error findings); what registration would use; the JSON of it all. */
#include "inspect.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define EBS_MAX_GIB 65536ull

const char *severity_name(enum severity s)
{
  static const char *names[] = { "error", "warning", "info" };
  return names[s];
}

const char *driver_state_name(enum driver_state s)
{
  static const char *names[] = { "missing", "builtin", "module-in-initramfs",
                                 "module-not-in-initramfs" };
  return names[s];
}

void inspect_add_finding(struct inspection *in, const char *code, enum severity sev,
                         const char *fmt, ...)
{
  if (in->nfindings == INSPECT_MAX_FINDINGS)
    return;
  va_list ap;
  va_start(ap, fmt);
  finding_vset(&in->findings[in->nfindings++], code, sev, fmt, ap);
  va_end(ap);
}

void finding_vset(struct finding *f, const char *code, enum severity sev, const char *fmt,
                  va_list ap)
{
  f->code = code;
  f->severity = sev;
  vsnprintf(f->message, sizeof f->message, fmt, ap);
}

bool inspect_importable(const struct inspection *in)
{
  for (size_t i = 0; i < in->nfindings; i++)
    if (in->findings[i].severity == SEV_ERROR)
      return false;
  return true;
}

static bool check_has_finding(const struct inspection *in, const char *code)
{
  for (size_t i = 0; i < in->nfindings; i++)
    if (strcmp(in->findings[i].code, code) == 0)
      return true;
  return false;
}

static const char *foreign_root(const struct inspection *in, const char *sig)
{
  for (size_t i = 0; i < in->nvol; i++)
    if (!in->vol[i].mounted && in->vol[i].fs_name && strcmp(in->vol[i].fs_name, sig) == 0)
      return sig;
  return NULL;
}

static bool cmdline_has(const struct inspection *in, const char *word)
{
  for (const char *p = in->cmdline; (p = strstr(p, word)); p++)
    if (p == in->cmdline || p[-1] == ' ' || p[-1] == '\t')
      return true;
  return false;
}

static bool bad_device_name(const char *spec)
{
  static const char *const prefixes[] = { "/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd" };
  for (size_t i = 0; i < 4; i++)
    if (strncmp(spec, prefixes[i], strlen(prefixes[i])) == 0)
      return true;
  return false;
}

/* A bare filesystem (no partition table) holding the root: an image for a
 * paravirtual Xen kernel (AKI), which current instance types cannot boot. */
static bool paravirtual(const struct inspection *in)
{
  return in->pt.kind == PT_NONE && in->root == 0 && in->vol[0].part == NULL;
}

static void judge_paravirtual(struct inspection *in)
{
  if (!paravirtual(in))
    return;
  inspect_add_finding(in, "PARAVIRTUAL_ONLY", SEV_ERROR,
                      "The disk is a bare %s filesystem with no partition table%s: a paravirtual "
                      "(Xen AKI) image, which current instance types cannot boot. Put the "
                      "filesystem in partition 1 of a partitioned disk (virt-resize, or sfdisk "
                      "and dd), install GRUB 2 and an HVM kernel with the NVMe and ENA drivers, "
                      "then re-check.",
                      in->vol[0].fs_name ? in->vol[0].fs_name : "?",
                      in->pv_grub_menu ? " (its /boot/grub/menu.lst is for pv-grub)" : "");
}

static void judge_windows(struct inspection *in)
{
  if (!in->windows)
    return;
  inspect_add_finding(in, "WINDOWS_LICENSE", SEV_ERROR,
                      "This is a Windows disk (%s). An AMI registered from its snapshot carries "
                      "no Windows billing code, so its instances are not licensed through AWS. "
                      "Use VM Import (aws ec2 import-image with --license-type AWS or BYOL), or "
                      "bring your own licence on Dedicated Hosts and pass --force.",
                      in->bootloader);
}

static void judge_root(struct inspection *in)
{
  if (in->root >= 0 || in->windows)
    return;
  if (foreign_root(in, "crypto_LUKS"))
    inspect_add_finding(in, "ROOT_ENCRYPTED", SEV_ERROR,
                        "The root filesystem is inside a LUKS-encrypted volume: EC2 cannot type "
                        "the passphrase at boot. Decrypt it before import, or unlock it with a "
                        "key the instance can fetch (e.g. Clevis/Tang) and re-check.");
  else if (foreign_root(in, "LVM2_member") || foreign_root(in, "btrfs") ||
           foreign_root(in, "linux_raid_member"))
    inspect_add_finding(in, "ROOT_NOT_NATIVE", SEV_WARNING,
                        "The root filesystem is on LVM, btrfs or software RAID, which this check "
                        "does not read natively; run 'amiport check --deep' to inspect it.");
  else if (check_has_finding(in, "FILESYSTEM_UNREADABLE"))
    inspect_add_finding(in, "NO_ROOT_FILESYSTEM", SEV_ERROR,
                        "No readable filesystem on this disk holds /etc/os-release or "
                        "/etc/fstab; the filesystem that could not be read (see "
                        "FILESYSTEM_UNREADABLE) may be the root. Repair it (fsck) before import.");
  else
    inspect_add_finding(in, "NO_ROOT_FILESYSTEM", SEV_ERROR,
                        "No filesystem on this disk holds /etc/os-release or /etc/fstab: there "
                        "is no Linux root filesystem to boot. Check that this is the system disk.");
}

static void judge_boot(struct inspection *in)
{
  if (in->lilo)
    inspect_add_finding(in, "BOOTLOADER_UNSUPPORTED", SEV_ERROR,
                        "The disk boots with LILO, which is not supported on EC2. Install GRUB 2 "
                        "(grub-install) before import.");
  if (in->grub_core_missing)
    inspect_add_finding(in, "GRUB_CORE_MISSING", SEV_ERROR,
                        "GRUB 2 is in the MBR but the core.img it points to is not on the disk; "
                        "the disk will not boot. Re-run grub-install on the source machine.");
  if (!in->bios && !in->uefi && !in->lilo && !in->grub_core_missing && !paravirtual(in))
    inspect_add_finding(in, "NO_BOOTLOADER", SEV_ERROR,
                        "No bootloader was found: nothing in the MBR and no EFI fallback loader "
                        "(\\EFI\\BOOT\\BOOTX64.EFI or BOOTAA64.EFI) on an EFI System Partition. "
                        "Install GRUB 2 for BIOS or UEFI before import.");
  if (in->pt.gpt_backup_used)
    inspect_add_finding(in, "GPT_BACKUP_USED", SEV_WARNING,
                        "The primary GPT is damaged; the backup GPT at the end of the disk was "
                        "used. Repair it (sgdisk -e / gdisk) before import.");
  else if (in->pt.kind == PT_GPT && in->pt.gpt_backup_bad)
    inspect_add_finding(in, "GPT_BACKUP_DAMAGED", SEV_WARNING,
                        "The backup GPT at the end of the disk is missing or damaged (was the "
                        "disk resized?). Repair it with 'sgdisk -e' before import.");
  if (in->pt.mbr_loop)
    inspect_add_finding(in, "MBR_EXTENDED_LOOP", SEV_WARNING,
                        "The chain of logical partitions loops or runs too long; only the first "
                        "ones were read.");
}

static void judge_kernel(struct inspection *in)
{
  if (in->root < 0)
    return;
  if (in->default_kernel < 0) {
    /* An unreadable /boot is already an error that says why; "install a
     * kernel package" would be the wrong advice. */
    if (check_has_finding(in, "BOOT_UNREADABLE") || paravirtual(in))
      return;
    inspect_add_finding(in, "NO_KERNEL", SEV_ERROR,
                        "No kernel (vmlinuz-*) was found in /boot. Install a kernel package "
                        "before import.");
    return;
  }
  const char *arch = in->arch ? in->arch : in->efi_arch;
  if (!arch || (strcmp(arch, "x86_64") != 0 && strcmp(arch, "arm64") != 0))
    inspect_add_finding(in, "ARCH_UNSUPPORTED", SEV_ERROR,
                        "The kernel's architecture is %s; EC2 runs x86_64 and arm64 only.",
                        arch ? arch : "unknown");
  if (in->arch && in->efi_arch && strcmp(in->arch, in->efi_arch) != 0)
    inspect_add_finding(in, "ARCH_MISMATCH", SEV_ERROR,
                        "The EFI loader is %s but the kernel is %s; the disk cannot boot both.",
                        in->efi_arch, in->arch);
  if (arch && strcmp(arch, "arm64") == 0 && !in->uefi)
    inspect_add_finding(in, "ARM64_REQUIRES_UEFI", SEV_ERROR,
                        "arm64 instances boot only with UEFI, and this disk has no "
                        "\\EFI\\BOOT\\BOOTAA64.EFI. Install GRUB for arm64-efi (grub-install "
                        "--removable) before import.");
  const char *ver = in->kernels[in->default_kernel].version;
  if (in->initrd_found && !in->initrd_scanned)
    inspect_add_finding(in, "INITRAMFS_UNREADABLE", SEV_WARNING,
                        "The initramfs of %s could not be read (%s), so whether it holds the "
                        "NVMe driver is unknown.", ver, in->initrd_error);
  switch (in->drivers[INITRAMFS_NVME]) {
  case DRV_MISSING:
    inspect_add_finding(in, "NVME_DRIVER_MISSING", SEV_ERROR,
                        "Kernel %s has no NVMe driver: on Nitro instances the root disk is NVMe "
                        "and will not be found. Install a kernel with CONFIG_BLK_DEV_NVME.", ver);
    break;
  case DRV_NOT_IN_INITRAMFS:
    if (in->initrd_scanned || !in->initrd_found)
      inspect_add_finding(in, "NVME_DRIVER_MISSING", SEV_ERROR,
                          "Kernel %s has NVMe as a module, but its initramfs %s: the root disk "
                          "will not be found on Nitro instances. Add nvme to the initramfs "
                          "(dracut --add-drivers nvme, or 'nvme' in /etc/initramfs-tools/modules "
                          "and update-initramfs -u).", ver,
                          in->initrd_found ? "does not include it" : "was not found");
    break;
  default:
    break;
  }
  if (in->drivers[INITRAMFS_ENA] == DRV_MISSING)
    inspect_add_finding(in, "ENA_DRIVER_MISSING", SEV_WARNING,
                        "Kernel %s has no ENA network driver: Nitro instances will have no "
                        "network. Install a kernel with CONFIG_ENA_ETHERNET, or register the "
                        "image without ENA for Xen instance types only.", ver);
  if (in->cmdline_known && !cmdline_has(in, "console=ttyS0") && !cmdline_has(in, "console=ttyAMA0"))
    inspect_add_finding(in, "NO_SERIAL_CONSOLE", SEV_INFO,
                        "The kernel command line has no serial console (console=ttyS0 on x86_64, "
                        "console=ttyAMA0 on arm64); EC2's console output will be empty.");
  const char *root = in->cmdline_known ? strstr(in->cmdline, "root=") : NULL;
  if (root && bad_device_name(root + 5))
    inspect_add_finding(in, "ROOT_DEVICE_NAME", SEV_ERROR,
                        "The kernel command line names the root by device (%.*s); on Nitro "
                        "the disk is /dev/nvme0n1. Use root=UUID=... and regenerate grub.cfg.",
                        (int)strcspn(root, " \t"), root);
}

/* An instance-store volume: the classic names EC2 gave ephemeral disks
 * (sdb..sde, xvdb..xvde, or their first partition), or "ephemeral" in the
 * device or mount point (/media/ephemeral0). */
static bool ephemeral_entry(const struct fstab_entry *f)
{
  if (strstr(f->spec, "ephemeral") || strstr(f->file, "ephemeral"))
    return true;
  const char *d = strncmp(f->spec, "/dev/sd", 7) == 0    ? f->spec + 7
                  : strncmp(f->spec, "/dev/xvd", 8) == 0 ? f->spec + 8
                                                         : NULL;
  return d && d[0] >= 'b' && d[0] <= 'e' && (!d[1] || strcmp(d + 1, "1") == 0);
}

static void judge_fstab(struct inspection *in)
{
  for (size_t i = 0; i < in->nfstab; i++) {
    const struct fstab_entry *f = &in->fstab[i];
    /* A mount the boot waits for stops it when its device is not there;
     * swap and nofail mounts only warn. */
    bool waits = strcmp(f->type, "swap") != 0 && !strstr(f->options, "nofail");
    if (ephemeral_entry(f))
      inspect_add_finding(in, "FSTAB_EPHEMERAL", SEV_WARNING,
                          "/etc/fstab mounts the instance-store volume %s at %s%s; an EBS-backed "
                          "instance has it only when the launch maps an ephemeral device (on "
                          "Nitro as /dev/nvme*n1). Remove the entry, or add nofail and map the "
                          "ephemeral device at launch.", f->spec, f->file,
                          waits ? ", and the boot waits for it" : "");
    else if (bad_device_name(f->spec))
      inspect_add_finding(in, "FSTAB_DEVICE_NAME", waits ? SEV_ERROR : SEV_WARNING,
                          "/etc/fstab names %s by device (%s); on Nitro instances disks are "
                          "/dev/nvme*, so %s. Use UUID= or LABEL= instead.", f->file, f->spec,
                          waits ? "the boot stops waiting for it" : "it will not be found");
    bool network = strcmp(f->type, "nfs") == 0 || strcmp(f->type, "nfs4") == 0 ||
                   strcmp(f->type, "cifs") == 0 || strcmp(f->type, "smb3") == 0;
    if (network && !strstr(f->options, "nofail") && !strstr(f->options, "_netdev"))
      inspect_add_finding(in, "FSTAB_NETWORK_NO_NOFAIL", SEV_WARNING,
                          "/etc/fstab mounts the network filesystem %s at %s without nofail; if "
                          "it is unreachable from EC2 the boot stops. Add nofail.",
                          f->spec, f->file);
  }
  if (in->root >= 0 && !in->cloud_init)
    inspect_add_finding(in, "NO_CLOUD_INIT", SEV_INFO,
                        "cloud-init is not installed: SSH keys and hostnames from EC2 will not "
                        "be applied at first boot.");
}

void inspect_judge(struct inspection *in)
{
  uint64_t gib = (in->virtual_size + (1ull << 30) - 1) >> 30;
  if (gib > EBS_MAX_GIB)
    inspect_add_finding(in, "DISK_TOO_LARGE", SEV_ERROR,
                        "The disk is %llu GiB; an EBS snapshot holds at most %llu GiB.",
                        (unsigned long long)gib, EBS_MAX_GIB);
  if (in->pt.kind == PT_MBR && in->virtual_size > (2ull << 40))
    inspect_add_finding(in, "MBR_OVER_2TIB", SEV_WARNING,
                        "The disk is larger than 2 TiB but partitioned with MBR, which cannot "
                        "address past 2 TiB.");
  /* Before the root: a table that cannot be read explains a missing root. */
  if (in->pt.gpt_invalid[0])
    inspect_add_finding(in, "GPT_INVALID", SEV_ERROR,
                        "Both GPT headers are invalid: %s. The partitions cannot be read, here "
                        "or by Linux at boot. Repair the GPT (gdisk) before import.",
                        in->pt.gpt_invalid);
  judge_windows(in);
  judge_paravirtual(in);
  judge_root(in);
  judge_boot(in);
  judge_kernel(in);
  judge_fstab(in);
}

static struct json_object *jstr(const char *s)
{
  return s && *s ? json_object_new_string(s) : NULL;
}

void inspect_ami_params(const struct inspection *in, struct ami_params *p)
{
  p->arch = in->arch ? in->arch : in->efi_arch;
  p->boot_mode = in->bios && in->uefi ? "uefi-preferred" : in->uefi ? "uefi"
                 : in->bios ? "legacy-bios" : NULL;
  p->ena = in->default_kernel >= 0 && in->drivers[INITRAMFS_ENA] != DRV_MISSING;
  p->root_device = "/dev/xvda";
  p->volume_gib = (in->virtual_size + (1ull << 30) - 1) >> 30;
}

struct json_object *inspect_to_json(const struct inspection *in)
{
  struct json_object *o = json_object_new_object(), *a;
  json_object_object_add(o, "format", json_object_new_string(in->format));
  json_object_object_add(o, "virtual_size", json_object_new_int64((int64_t)in->virtual_size));
  json_object_object_add(o, "partition_table", json_object_new_string(part_table_name(in->pt.kind)));
  a = json_object_new_array();
  for (size_t i = 0; i < in->nvol; i++) {
    const struct inspect_volume *v = &in->vol[i];
    struct json_object *p = json_object_new_object();
    json_object_object_add(p, "index", json_object_new_int(v->part ? (int)v->part->index : 0));
    json_object_object_add(p, "start", json_object_new_int64((int64_t)v->start));
    json_object_object_add(p, "size", json_object_new_int64((int64_t)v->size));
    json_object_object_add(p, "type", jstr(v->part ? v->part->type : "whole disk"));
    json_object_object_add(p, "filesystem", jstr(v->fs_name));
    bool named = v->mounted || (v->fs_name && strcmp(v->fs_name, "ntfs") == 0);
    json_object_object_add(p, "label", named ? jstr(v->fs.label) : NULL);
    json_object_object_add(p, "uuid", named ? jstr(v->fs.uuid) : NULL);
    json_object_array_add(a, p);
  }
  json_object_object_add(o, "partitions", a);
  struct json_object *os = json_object_new_object();
  json_object_object_add(os, "id", jstr(in->os_id));
  json_object_object_add(os, "version", jstr(in->os_version));
  json_object_object_add(os, "pretty_name", jstr(in->os_pretty));
  json_object_object_add(o, "os", os);
  json_object_object_add(o, "arch", jstr(in->arch ? in->arch : in->efi_arch));
  a = json_object_new_array();
  if (in->bios)
    json_object_array_add(a, json_object_new_string("legacy-bios"));
  if (in->uefi)
    json_object_array_add(a, json_object_new_string("uefi"));
  json_object_object_add(o, "boot_modes", a);
  struct json_object *bl = json_object_new_object();
  json_object_object_add(bl, "name", jstr(in->bootloader));
  json_object_object_add(bl, "version", jstr(in->bootloader_version));
  json_object_object_add(bl, "efi_loader", jstr(in->efi_loader));
  json_object_object_add(o, "bootloader", bl);
  a = json_object_new_array();
  for (size_t i = 0; i < in->nkernels; i++) {
    struct json_object *k = json_object_new_object();
    json_object_object_add(k, "path", json_object_new_string(in->kernels[i].path));
    json_object_object_add(k, "version", json_object_new_string(in->kernels[i].version));
    json_object_object_add(k, "arch", jstr(in->kernels[i].arch));
    json_object_object_add(k, "default", json_object_new_boolean(in->kernels[i].is_default));
    json_object_array_add(a, k);
  }
  json_object_object_add(o, "kernels", a);
  if (in->default_kernel >= 0) {
    struct json_object *d = json_object_new_object();
    static const char *const keys[] = { "nvme", "ena", "xen_blkfront", "xen_netfront" };
    for (int i = 0; i < INITRAMFS_NDRIVERS; i++)
      json_object_object_add(d, keys[i], json_object_new_string(driver_state_name(in->drivers[i])));
    json_object_object_add(o, "drivers", d);
    if (in->initrd_scanned) {
      struct json_object *r = json_object_new_object();
      json_object_object_add(r, "compression", json_object_new_string(in->initrd.compression));
      json_object_object_add(r, "files", json_object_new_int((int)in->initrd.files));
      json_object_object_add(r, "microcode_prefix", json_object_new_boolean(in->initrd.microcode_prefix));
      json_object_object_add(o, "initramfs", r);
    }
  } else {
    json_object_object_add(o, "drivers", NULL);
  }
  json_object_object_add(o, "cmdline", in->cmdline_known ? json_object_new_string(in->cmdline) : NULL);
  a = json_object_new_array();
  for (size_t i = 0; i < in->nfstab; i++) {
    struct json_object *f = json_object_new_object();
    json_object_object_add(f, "spec", json_object_new_string(in->fstab[i].spec));
    json_object_object_add(f, "file", json_object_new_string(in->fstab[i].file));
    json_object_object_add(f, "type", json_object_new_string(in->fstab[i].type));
    json_object_object_add(f, "options", json_object_new_string(in->fstab[i].options));
    json_object_array_add(a, f);
  }
  json_object_object_add(o, "fstab", a);
  json_object_object_add(o, "cloud_init", json_object_new_boolean(in->cloud_init));
  a = json_object_new_array();
  for (size_t i = 0; i < in->nfindings; i++) {
    struct json_object *f = json_object_new_object();
    json_object_object_add(f, "code", json_object_new_string(in->findings[i].code));
    json_object_object_add(f, "severity", json_object_new_string(severity_name(in->findings[i].severity)));
    json_object_object_add(f, "message", json_object_new_string(in->findings[i].message));
    json_object_array_add(a, f);
  }
  json_object_object_add(o, "findings", a);
  bool ok = inspect_importable(in);
  json_object_object_add(o, "importable", json_object_new_boolean(ok));
  struct ami_params ap;
  inspect_ami_params(in, &ap);
  struct json_object *ami = json_object_new_object();
  json_object_object_add(ami, "architecture", jstr(ap.arch));
  json_object_object_add(ami, "boot_mode", jstr(ap.boot_mode));
  json_object_object_add(ami, "ena_support", json_object_new_boolean(ap.ena));
  json_object_object_add(ami, "root_device_name", json_object_new_string(ap.root_device));
  json_object_object_add(ami, "volume_size_gib", json_object_new_int64((int64_t)ap.volume_gib));
  json_object_object_add(o, "ami", ami);
  json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)in->disk.bytes_read));
  return o;
}

/* Whether a filesystem of in is spec's UUID= / LABEL= (case matters for
 * labels, not for UUIDs). */
static bool vm_has(const struct inspection *in, bool uuid, const char *v)
{
  for (size_t i = 0; i < in->nvol; i++) {
    const struct fs *f = &in->vol[i].fs;
    if (uuid ? f->uuid[0] && strcasecmp(f->uuid, v) == 0 : f->label[0] && strcmp(f->label, v) == 0)
      return true;
  }
  return false;
}

void inspect_judge_vm(struct inspection *root, const struct inspection *const *others, size_t n)
{
  for (size_t i = 0; i < root->nfstab; i++) {
    const struct fstab_entry *f = &root->fstab[i];
    bool uuid = strncmp(f->spec, "UUID=", 5) == 0;
    if (!uuid && strncmp(f->spec, "LABEL=", 6) != 0)
      continue;
    char v[sizeof f->spec];
    snprintf(v, sizeof v, "%s", f->spec + (uuid ? 5 : 6));
    size_t l = strlen(v);
    if (l >= 2 && (v[0] == '"' || v[0] == '\'') && v[l - 1] == v[0]) {
      memmove(v, v + 1, l - 2);
      v[l - 2] = 0;
    }
    bool found = vm_has(root, uuid, v);
    for (size_t k = 0; k < n && !found; k++)
      found = vm_has(others[k], uuid, v);
    if (found)
      continue;
    /* a swap area's signature is not read: only a warning would be a guess */
    bool soft = strstr(f->options, "nofail") || strcmp(f->type, "swap") == 0;
    inspect_add_finding(root, "FSTAB_UNRESOLVED", soft ? SEV_INFO : SEV_WARNING,
                        "/etc/fstab line '%s %s %s' names a filesystem found on none of the "
                        "VM's %zu disk%s%s", f->spec, f->file, f->type, n + 1, n ? "s" : "",
                        soft ? " (nofail or swap: the boot goes on without it)"
                             : "; the boot waits for it and stops. Import the disk that holds "
                               "it, or add nofail.");
  }
}
