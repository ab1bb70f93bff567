/* inspect.h - what the normalizer learns about a guest from its disk, and
 * the findings that say whether it will boot on EC2. Filled by
 * inspect_image (inspect.c, boot.c, os.c); judged by check.c. */
#ifndef AMIPORT_INSPECT_H
#define AMIPORT_INSPECT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "fs.h"
#include "kernel.h"
#include "part.h"

#define INSPECT_MAX_FS 16
#define INSPECT_MAX_KERNELS 16
#define INSPECT_MAX_FSTAB 64
#define INSPECT_MAX_FINDINGS 48

struct inspect_volume {
  const struct partition *part; /* NULL: the filesystem fills the whole disk */
  uint64_t start, size;
  const char *fs_name;          /* driver or recognised signature, or NULL */
  bool mounted;
  struct fs fs;
};

enum driver_state { DRV_MISSING, DRV_BUILTIN, DRV_IN_INITRAMFS, DRV_NOT_IN_INITRAMFS };

struct inspect_kernel {
  char path[256];    /* as the guest sees it: /boot/vmlinuz-6.1.0-13-amd64 */
  char version[128];
  const char *arch;
  bool is_default;
};

struct fstab_entry {
  char spec[160], file[160], type[32], options[160];
};

enum severity { SEV_ERROR, SEV_WARNING, SEV_INFO };

struct finding {
  const char *code;
  enum severity severity;
  char message[400];
};

struct inspection {
  const char *format;
  uint64_t virtual_size;
  struct disk disk;
  struct part_table pt;
  struct inspect_volume vol[INSPECT_MAX_FS];
  size_t nvol;
  int root, boot, esp;      /* indexes into vol, -1 when not found */
  const char *boot_prefix;  /* "/boot" when /boot is on the root filesystem, "" on its own */

  char os_id[64], os_version[64], os_pretty[128];
  const char *arch;         /* x86_64, arm64, i386, or NULL */
  bool bios, uefi;          /* boot modes the disk supports */
  char bootloader[32], bootloader_version[32];
  char efi_loader[64];      /* \EFI\BOOT\BOOTX64.EFI */
  const char *efi_arch;
  bool lilo, grub_core_missing;
  bool windows;             /* an NTFS volume and a Windows boot loader, no Linux root */
  bool pv_grub_menu;        /* the root has /boot/grub/menu.lst (pv-grub's, on a bare filesystem) */

  struct inspect_kernel kernels[INSPECT_MAX_KERNELS];
  size_t nkernels;
  int default_kernel;       /* index, -1 none */
  char cmdline[1024];       /* of the default boot entry */
  bool cmdline_known;
  struct initramfs_info initrd;
  bool initrd_found, initrd_scanned;
  char initrd_error[512];
  enum driver_state drivers[INITRAMFS_NDRIVERS];

  struct fstab_entry fstab[INSPECT_MAX_FSTAB];
  size_t nfstab;
  bool cloud_init;

  struct finding findings[INSPECT_MAX_FINDINGS];
  size_t nfindings;
};

/* Reads the guest; errors only for I/O failures and malformed images (a
 * guest that cannot boot is described by findings, not by an error). */
int inspect_image(struct img *im, struct inspection *in, struct error *e);
void inspect_free(struct inspection *in);

/* boot.c: bootloaders in the MBR, the post-MBR gap, a BIOS boot partition
 * and on the ESP. */
int inspect_boot(struct inspection *in, struct error *e);
/* os.c: os-release, fstab, boot entries, kernels, initramfs and drivers. */
int inspect_os(struct inspection *in, struct error *e);

/* guestfs.c: the deep path through libguestfs (slow: an appliance boots,
 * one for all n images); outs[i] receives image i's own report, and ins[i]
 * is completed where it knew less. */
struct json_object;
int inspect_deep(struct img **ims, struct inspection **ins, size_t n,
                 struct json_object **outs, struct error *e);

/* guestfs.c: the repair path (`check --fix`), read-write on im (raw or
 * qcow2) after in was read from it: what was changed, and notes (findings)
 * on what could not be. */
#define INSPECT_MAX_FIXES 32
#define INSPECT_MAX_FIX_NOTES 16
struct fix_report {
  char changes[INSPECT_MAX_FIXES][400];
  size_t nchanges;
  struct finding notes[INSPECT_MAX_FIX_NOTES];
  size_t nnotes;
  bool image_changed;
};
int inspect_fix(struct img *im, const struct inspection *in, struct fix_report *r,
                struct error *e);

/* check.c */
void inspect_add_finding(struct inspection *in, const char *code, enum severity sev,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Fills one finding; the message from fmt and ap. */
void finding_vset(struct finding *f, const char *code, enum severity sev, const char *fmt,
                  va_list ap) __attribute__((format(printf, 4, 0)));
void inspect_judge(struct inspection *in); /* adds the findings */
bool inspect_importable(const struct inspection *in);
/* The disks of one VM, root first: each UUID= or LABEL= line of the root's
 * fstab that names a filesystem found on none of them is FSTAB_UNRESOLVED
 * on the root (a warning; info for a nofail or swap line). */
void inspect_judge_vm(struct inspection *root, const struct inspection *const *others, size_t n);
struct json_object *inspect_to_json(const struct inspection *in);

/* What RegisterImage should be told, as the guest shows it. */
struct ami_params {
  const char *arch;        /* x86_64, arm64, i386, or NULL when unknown */
  const char *boot_mode;   /* legacy-bios, uefi, uefi-preferred, or NULL */
  bool ena;
  const char *root_device; /* /dev/xvda */
  uint64_t volume_gib;
};
void inspect_ami_params(const struct inspection *in, struct ami_params *p);
const char *driver_state_name(enum driver_state s);
const char *severity_name(enum severity s);

#endif
