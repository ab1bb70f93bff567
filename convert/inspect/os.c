/* os.c - the guest's own description of itself: /etc/os-release,
 * /etc/fstab, where /boot is, the kernels there, the default boot entry
 * (GRUB 2 grub.cfg, Boot Loader Specification entries, extlinux), its
 * initramfs, and whether the kernel can reach NVMe disks and ENA/Xen
 * network devices (built in, or as modules present in the initramfs). */
#include "inspect.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_FILE (1u << 20) /* config files read whole, at most */

static struct fs *root_fs(struct inspection *in) { return &in->vol[in->root].fs; }
static struct fs *boot_fs(struct inspection *in) { return &in->vol[in->boot].fs; }

/* Copies a KEY=value's value, unquoted. */
static void os_release_value(const char *v, char *out, size_t cap)
{
  size_t n = strcspn(v, "\n");
  if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
    v++;
    n -= 2;
  }
  if (n >= cap)
    n = cap - 1;
  memcpy(out, v, n);
  out[n] = 0;
}

static void read_os_release(struct inspection *in, struct error *e)
{
  char *buf;
  size_t len;
  if (fs_read_file(root_fs(in), "/etc/os-release", SMALL_FILE, &buf, &len, e) != 0 &&
      fs_read_file(root_fs(in), "/usr/lib/os-release", SMALL_FILE, &buf, &len, e) != 0)
    return;
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    if (strncmp(line, "ID=", 3) == 0)
      os_release_value(line + 3, in->os_id, sizeof in->os_id);
    else if (strncmp(line, "VERSION_ID=", 11) == 0)
      os_release_value(line + 11, in->os_version, sizeof in->os_version);
    else if (strncmp(line, "PRETTY_NAME=", 12) == 0)
      os_release_value(line + 12, in->os_pretty, sizeof in->os_pretty);
  }
  free(buf);
}

static void read_fstab(struct inspection *in, struct error *e)
{
  char *buf;
  size_t len;
  if (fs_read_file(root_fs(in), "/etc/fstab", SMALL_FILE, &buf, &len, e) != 0)
    return;
  char *save = NULL;
  for (char *line = strtok_r(buf, "\n", &save); line && in->nfstab < INSPECT_MAX_FSTAB;
       line = strtok_r(NULL, "\n", &save)) {
    while (isspace((unsigned char)*line))
      line++;
    if (!*line || *line == '#')
      continue;
    struct fstab_entry *f = &in->fstab[in->nfstab];
    char opts[160] = "defaults";
    if (sscanf(line, "%159s %159s %31s %159s", f->spec, f->file, f->type, opts) >= 3) {
      snprintf(f->options, sizeof f->options, "%s", opts);
      in->nfstab++;
    }
  }
  free(buf);
}

/* Finds the volume a fstab spec (UUID=, LABEL=, /dev/disk/by-uuid/) names. */
static int volume_by_spec(struct inspection *in, const char *spec)
{
  const char *uuid = NULL, *label = NULL;
  if (strncasecmp(spec, "UUID=", 5) == 0)
    uuid = spec + 5;
  else if (strncmp(spec, "/dev/disk/by-uuid/", 18) == 0)
    uuid = spec + 18;
  else if (strncasecmp(spec, "LABEL=", 6) == 0)
    label = spec + 6;
  else if (strncmp(spec, "/dev/disk/by-label/", 19) == 0)
    label = spec + 19;
  for (size_t i = 0; i < in->nvol; i++) {
    struct inspect_volume *v = &in->vol[i];
    if (!v->mounted)
      continue;
    if ((uuid && strcasecmp(v->fs.uuid, uuid) == 0) || (label && strcmp(v->fs.label, label) == 0))
      return (int)i;
  }
  return -1;
}

struct name_list {
  char names[INSPECT_MAX_KERNELS][128];
  size_t n;
};

static int collect_kernel(void *ctx, const char *name, uint64_t ino, enum fs_ftype type)
{
  (void)ino;
  struct name_list *l = ctx;
  if (type != FS_REG && type != FS_LNK)
    return 0;
  if (strncmp(name, "vmlinuz-", 8) != 0 && strncmp(name, "vmlinux-", 8) != 0)
    return 0;
  if (strlen(name) < sizeof l->names[0] && l->n < INSPECT_MAX_KERNELS)
    strcpy(l->names[l->n++], name);
  return 0;
}

/* Where /boot is: on the root filesystem, or its own (fstab, or a volume
 * that looks like one). */
static void find_boot(struct inspection *in, struct error *e)
{
  struct fs_inode ino;
  struct name_list l = { 0 };
  if (in->root >= 0 && fs_resolve(root_fs(in), "/boot", true, &ino, e) == 0 && ino.type == FS_DIR &&
      root_fs(in)->drv->readdir(root_fs(in), ino.ino, collect_kernel, &l, e) == 0 && l.n) {
    in->boot = in->root;
    in->boot_prefix = "/boot";
    return;
  }
  for (size_t i = 0; i < in->nfstab; i++)
    if (strcmp(in->fstab[i].file, "/boot") == 0) {
      int v = volume_by_spec(in, in->fstab[i].spec);
      if (v >= 0) {
        in->boot = v;
        in->boot_prefix = "";
        return;
      }
    }
  for (size_t i = 0; i < in->nvol; i++) {
    struct inspect_volume *v = &in->vol[i];
    if ((int)i == in->root || (int)i == in->esp || !v->mounted)
      continue;
    if (fs_resolve(&v->fs, "/grub/grub.cfg", true, &ino, e) == 0 ||
        fs_resolve(&v->fs, "/grub2/grub.cfg", true, &ino, e) == 0 ||
        fs_resolve(&v->fs, "/loader/entries", true, &ino, e) == 0) {
      in->boot = (int)i;
      in->boot_prefix = "";
      return;
    }
  }
  in->boot = in->root; /* -1 without a root: no kernels to report */
  in->boot_prefix = "/boot";
}

/* The path of rel in the /boot directory, on the volume that holds it. */
static void boot_path(struct inspection *in, char *out, size_t cap, const char *rel)
{
  size_t p = strlen(in->boot_prefix), r = strlen(rel);
  if (p + 1 + r >= cap) {
    out[0] = 0;
    return;
  }
  memcpy(out, in->boot_prefix, p);
  out[p] = '/';
  memcpy(out + p + 1, rel, r + 1);
}

/* Lists the kernels in /boot: 0 (none is not an error), -1 when the /boot
 * directory itself could not be read (a symlink loop, a damaged directory;
 * why in e). */
static int read_kernels(struct inspection *in, struct error *e)
{
  struct fs_inode dir;
  struct name_list l = { 0 };
  char path[300];
  boot_path(in, path, sizeof path, "");
  size_t plen = strlen(path);
  if (plen > 1 && path[plen - 1] == '/')
    path[plen - 1] = 0; /* "/boot", as the guest names it */
  int r = fs_resolve(boot_fs(in), path[0] ? path : "/", true, &dir, e);
  if (r != 0 || dir.type != FS_DIR)
    return r < 0 ? -1 : 0;
  if (boot_fs(in)->drv->readdir(boot_fs(in), dir.ino, collect_kernel, &l, e) != 0)
    return -1;
  uint8_t *head = malloc(KERNEL_HEAD);
  if (!head)
    return 0;
  for (size_t i = 0; i < l.n; i++) {
    struct fs_inode k;
    boot_path(in, path, sizeof path, l.names[i]);
    if (fs_resolve(boot_fs(in), path, true, &k, e) != 0 || k.type != FS_REG)
      continue;
    ssize_t n = boot_fs(in)->drv->read(boot_fs(in), k.ino, head, KERNEL_HEAD, 0, e);
    struct kernel_id id;
    if (n <= 0 || !kernel_identify(head, (size_t)n, &id))
      continue;
    struct inspect_kernel *ik = &in->kernels[in->nkernels++];
    snprintf(ik->path, sizeof ik->path, "/boot/%s", l.names[i]);
    ik->arch = id.arch;
    /* The header's version when it has one, else the file name's. */
    snprintf(ik->version, sizeof ik->version, "%s", id.version[0] ? id.version : l.names[i] + 8);
  }
  free(head);
  return 0;
}

/* Finds the kernel whose file name is the last component of path. */
static int kernel_by_path(struct inspection *in, const char *path)
{
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  for (size_t i = 0; i < in->nkernels; i++) {
    const char *kb = strrchr(in->kernels[i].path, '/') + 1;
    if (strcmp(kb, base) == 0)
      return (int)i;
  }
  return -1;
}

/* Reads "linux PATH ARGS" style lines: sets the default kernel, cmdline and
 * initrd from the first entry; returns whether it found one. */
static bool parse_entry_lines(struct inspection *in, char *text, const char *linux_kw[],
                              const char *initrd_kw[], const char *args_kw, char *initrd,
                              size_t icap)
{
  bool found = false;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    while (isspace((unsigned char)*line))
      line++;
    char kw[32];
    int n = 0;
    if (sscanf(line, "%31s %n", kw, &n) != 1)
      continue;
    char *rest = line + n;
    if (found && strncmp(kw, "menuentry", 9) == 0)
      break; /* the first entry ends where the next begins */
    for (int i = 0; linux_kw[i]; i++)
      if (strcasecmp(kw, linux_kw[i]) == 0 && !found) {
        char path[256];
        int m = 0;
        if (sscanf(rest, "%255s %n", path, &m) < 1)
          continue;
        int k = kernel_by_path(in, path);
        if (k >= 0)
          in->default_kernel = k;
        snprintf(in->cmdline, sizeof in->cmdline, "%s", rest + m);
        in->cmdline_known = true;
        found = true;
      }
    if (args_kw && strcasecmp(kw, args_kw) == 0) {
      snprintf(in->cmdline, sizeof in->cmdline, "%s", rest);
      in->cmdline_known = true;
    }
    for (int i = 0; initrd_kw[i]; i++)
      if (strcasecmp(kw, initrd_kw[i]) == 0 && !initrd[0])
        sscanf(rest, "%255s", initrd), (void)icap;
  }
  return found;
}

/* Keeps the newest *.conf name (by version order) in ctx. */
static int newest_conf(void *ctx, const char *name, uint64_t ino, enum fs_ftype type)
{
  (void)ino;
  char *best = ctx;
  size_t n = strlen(name);
  if (type == FS_REG && n > 5 && n < 128 && strcmp(name + n - 5, ".conf") == 0 &&
      (!best[0] || strverscmp(name, best) > 0))
    strcpy(best, name);
  return 0;
}

static void read_boot_entries(struct inspection *in, char *initrd, size_t icap, struct error *e)
{
  static const char *grub_linux[] = { "linux", "linux16", "linuxefi", NULL };
  static const char *grub_initrd[] = { "initrd", "initrd16", "initrdefi", NULL };
  static const char *sys_linux[] = { "kernel", "linux", NULL };
  static const char *sys_initrd[] = { "initrd", NULL };
  static const char *const grub_cfgs[] = { "grub/grub.cfg", "grub2/grub.cfg" };
  static const char *const sys_cfgs[] = { "extlinux/extlinux.conf", "syslinux/syslinux.cfg",
                                          "extlinux.conf" };
  char path[300], *buf;
  size_t len;
  for (size_t i = 0; i < 2; i++) {
    boot_path(in, path, sizeof path, grub_cfgs[i]);
    if (fs_read_file(boot_fs(in), path, 4 * SMALL_FILE, &buf, &len, e) != 0)
      continue;
    bool ok = parse_entry_lines(in, buf, grub_linux, grub_initrd, NULL, initrd, icap);
    free(buf);
    if (ok)
      return;
  }
  for (size_t i = 0; i < 3; i++) {
    boot_path(in, path, sizeof path, sys_cfgs[i]);
    if (fs_read_file(boot_fs(in), path, SMALL_FILE, &buf, &len, e) != 0)
      continue;
    bool ok = parse_entry_lines(in, buf, sys_linux, sys_initrd, "append", initrd, icap);
    free(buf);
    if (ok)
      return;
  }
  /* Boot Loader Specification entries (grub.cfg with blscfg): named after
   * versions; the newest is the default. */
  struct fs_inode dir;
  char best[128] = "";
  boot_path(in, path, sizeof path, "loader/entries");
  if (fs_resolve(boot_fs(in), path, true, &dir, e) != 0 || dir.type != FS_DIR ||
      boot_fs(in)->drv->readdir(boot_fs(in), dir.ino, newest_conf, best, e) != 0 || !best[0])
    return;
  static const char *bls_linux[] = { "linux", NULL };
  static const char *bls_initrd[] = { "initrd", NULL };
  char entry[300];
  snprintf(entry, sizeof entry, "loader/entries/%s", best);
  boot_path(in, path, sizeof path, entry);
  if (fs_read_file(boot_fs(in), path, SMALL_FILE, &buf, &len, e) != 0)
    return;
  parse_entry_lines(in, buf, bls_linux, bls_initrd, "options", initrd, icap);
  free(buf);
}

/* Module file of driver d for kernel version ver, by its usual path. */
static bool module_present(struct inspection *in, const char *ver, int d, struct error *e)
{
  static const char *const dirs[INITRAMFS_NDRIVERS] = {
    "drivers/nvme/host", "drivers/net/ethernet/amazon/ena", "drivers/block", "drivers/net",
  };
  static const char *const suffixes[] = { ".ko", ".ko.xz", ".ko.zst", ".ko.gz" };
  for (size_t s = 0; s < 4; s++) {
    char path[400];
    struct fs_inode ino;
    snprintf(path, sizeof path, "/lib/modules/%s/kernel/%s/%s%s", ver, dirs[d],
             initramfs_module_names[d], suffixes[s]);
    if (fs_resolve(root_fs(in), path, true, &ino, e) == 0)
      return true;
  }
  return false;
}

static void read_drivers(struct inspection *in, const char *initrd_path, struct error *e)
{
  static const char *const config[INITRAMFS_NDRIVERS] = {
    "CONFIG_BLK_DEV_NVME=", "CONFIG_ENA_ETHERNET=", "CONFIG_XEN_BLKDEV_FRONTEND=",
    "CONFIG_XEN_NETDEV_FRONTEND=",
  };
  const char *ver = in->kernels[in->default_kernel].version;
  char path[400], *cfg = NULL;
  size_t len;
  boot_path(in, path, sizeof path, "config-");
  strncat(path, ver, sizeof path - strlen(path) - 1);
  if (fs_read_file(boot_fs(in), path, 4 * SMALL_FILE, &cfg, &len, e) != 0)
    cfg = NULL;
  char *builtin = NULL;
  snprintf(path, sizeof path, "/lib/modules/%s/modules.builtin", ver);
  if (in->root < 0 || fs_read_file(root_fs(in), path, 4 * SMALL_FILE, &builtin, &len, e) != 0)
    builtin = NULL;

  /* The initramfs: the boot entry's, else the distributions' usual names. */
  static const char *const names[][2] = { { "initrd.img-", "" }, { "initramfs-", ".img" },
                                          { "initrd-", "" }, { "initramfs-", "" } };
  struct fs_inode ino = { 0 };
  bool found = false;
  if (initrd_path[0]) {
    const char *base = strrchr(initrd_path, '/');
    boot_path(in, path, sizeof path, base ? base + 1 : initrd_path);
    found = fs_resolve(boot_fs(in), path, true, &ino, e) == 0 && ino.type == FS_REG;
  }
  for (size_t i = 0; i < 4 && !found; i++) {
    char name[300];
    snprintf(name, sizeof name, "%s%s%s", names[i][0], ver, names[i][1]);
    boot_path(in, path, sizeof path, name);
    found = fs_resolve(boot_fs(in), path, true, &ino, e) == 0 && ino.type == FS_REG;
  }
  in->initrd_found = found;
  if (found) {
    struct error ie = { 0 };
    if (initramfs_scan(boot_fs(in), ino.ino, ino.size, &in->initrd, &ie) == 0)
      in->initrd_scanned = true;
    else
      snprintf(in->initrd_error, sizeof in->initrd_error, "%s", ie.msg);
  }
  for (int d = 0; d < INITRAMFS_NDRIVERS; d++) {
    const char *c = cfg ? strstr(cfg, config[d]) : NULL;
    char value = c ? c[strlen(config[d])] : 0;
    char mod[64];
    snprintf(mod, sizeof mod, "/%s.ko", initramfs_module_names[d]);
    if (value == 'y' || (builtin && strstr(builtin, mod)))
      in->drivers[d] = DRV_BUILTIN;
    else if (value == 'm' || (in->root >= 0 && module_present(in, ver, d, e)))
      in->drivers[d] = in->initrd_scanned && in->initrd.has[d] ? DRV_IN_INITRAMFS
                                                               : DRV_NOT_IN_INITRAMFS;
    else
      in->drivers[d] = DRV_MISSING;
  }
  free(cfg);
  free(builtin);
}

int inspect_os(struct inspection *in, struct error *e)
{
  struct error ignored;
  (void)e;
  if (in->root >= 0) {
    read_os_release(in, &ignored);
    read_fstab(in, &ignored);
    struct fs_inode ino;
    in->cloud_init = fs_resolve(root_fs(in), "/etc/cloud/cloud.cfg", true, &ino, &ignored) == 0;
    in->pv_grub_menu = fs_resolve(root_fs(in), "/boot/grub/menu.lst", true, &ino, &ignored) == 0;
  }
  /* Without a readable root (encrypted, LVM) /boot may still be its own. */
  find_boot(in, &ignored);
  if (in->boot < 0)
    return 0;
  struct error be = { 0 };
  if (read_kernels(in, &be) < 0)
    inspect_add_finding(in, "BOOT_UNREADABLE", SEV_ERROR,
                        "The /boot directory could not be read (%s%s), so whether it holds a "
                        "kernel is unknown. Fix /boot on the source machine (it must be a "
                        "directory, or a symlink to one) before import.", be.msg,
                        strstr(be.msg, "symbolic links")
                            ? ": the symlinks on the way loop, or chain more than 40 deep" : "");
  char initrd[256] = "";
  read_boot_entries(in, initrd, sizeof initrd, &ignored);
  if (in->default_kernel < 0 && in->nkernels) {
    /* No boot entry named one: the newest version boots. */
    in->default_kernel = 0;
    for (size_t i = 1; i < in->nkernels; i++)
      if (strverscmp(in->kernels[i].version, in->kernels[in->default_kernel].version) > 0)
        in->default_kernel = (int)i;
  }
  if (in->default_kernel >= 0) {
    in->kernels[in->default_kernel].is_default = true;
    in->arch = in->kernels[in->default_kernel].arch;
    read_drivers(in, initrd, &ignored);
  }
  return 0;
}
