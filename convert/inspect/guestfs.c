/* guestfs.c - libguestfs: the deep path (`check --deep`) and the repair
 * path (`check --fix`).
 *
 * Deep: libguestfs starts its appliance read-only on one or several images
 * (one appliance for all of them: it takes seconds to start, more under
 * software emulation) and runs its own inspection, which sees what the
 * native path does not read (LVM logical volumes, btrfs subvolumes,
 * Windows). Each image gets its own report: what blkid says of each of its
 * partitions (or of the whole disk when it has none) and logical volumes,
 * and the OS roots libguestfs finds there. The report fills in the OS and architecture when the native
 * path found no root. What lives on an LVM volume group is the image's that
 * holds the group's first physical volume.
 *
 * Fix: libguestfs starts read-write on the one image the user named, finds
 * its root, mounts its filesystems read-only and works out what to change:
 * /etc/fstab entries naming a device by /dev/sdX, hdX, vdX or xvdX get the
 * filesystem's UUID=; GRUB's kernel command lines get a serial console when
 * they have none; the initramfs gets nvme and ena when the kernel has them as
 * modules it lacks, by the guest's own update-initramfs or dracut. Only when
 * something is to change is anything mounted read-write, so a second --fix
 * writes nothing. libguestfs (qemu) writes raw and qcow2 in place; other
 * formats are refused. The libguestfs API: https://libguestfs.org/guestfs.3.html */
#include "inspect.h"

#include <ctype.h>
#include <dlfcn.h>
#include <guestfs.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#define DEEP_MAX_VGS 64

/* libguestfs is loaded (dlopen) when --deep or --fix asks for it: linked
 * into the binary, it and the sixty libraries it pulls in (libvirt, glib,
 * gnutls, ICU...) would cost every amiport command tens of milliseconds of
 * start-up, which is most of what a native check takes. */
#define GFS_FUNCS(X)                                                          \
  X(add_drive_opts) X(close) X(command) X(create) X(feature_available)        \
  X(inspect_get_arch) X(inspect_get_distro) X(inspect_get_major_version)      \
  X(inspect_get_minor_version) X(inspect_get_mountpoints)                     \
  X(inspect_get_product_name) X(inspect_get_type) X(inspect_os) X(is_dir)     \
  X(is_file) X(is_file_opts) X(last_error) X(launch) X(list_devices)          \
  X(list_partitions) X(ls) X(lvs) X(mkdir_p) X(mount) X(mount_ro)             \
  X(read_file) X(set_error_handler) X(shutdown) X(umount_all) X(vfs_type)     \
  X(vfs_uuid) X(vgpvuuids) X(vgs) X(write)
static struct {
#define X(name) __typeof__(guestfs_##name) *name;
  GFS_FUNCS(X)
#undef X
} gfs;

static int gfs_load(struct error *e)
{
  static void *lib;
  if (lib)
    return 0;
  void *h = dlopen("libguestfs.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return error_set(e, ERR_UNSUPPORTED, "libguestfs cannot be loaded (Debian: libguestfs0): %s",
                     dlerror());
#define X(name)                                                                 \
  if (!(*(void **)&gfs.name = dlsym(h, "guestfs_" #name))) {                  \
    error_set(e, ERR_UNSUPPORTED, "libguestfs.so.0 lacks guestfs_" #name);    \
    dlclose(h);                                                               \
    return -1;                                                                \
  }
  GFS_FUNCS(X)
#undef X
  lib = h;
  return 0;
}

static void free_strings(char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

static struct json_object *take_string(char *s)
{
  struct json_object *o = s ? json_object_new_string(s) : NULL;
  free(s);
  return o;
}

static const char *deep_last_error(guestfs_h *g)
{
  const char *m = gfs.last_error(g);
  return m ? m : "failed";
}

/* A handle with errors kept for guestfs_last_error, not printed. */
static guestfs_h *deep_handle(struct error *e)
{
  if (gfs_load(e) < 0)
    return NULL;
  guestfs_h *g = gfs.create();
  if (!g) {
    error_set(e, ERR_NOMEM, "libguestfs: cannot create a handle");
    return NULL;
  }
  gfs.set_error_handler(g, NULL, NULL);
  return g;
}

/* Adds im as a drive, by its absolute path (qemu reads no protocol prefix
 * into a path that starts with '/') and with its format named, so that
 * nothing is probed. */
static int deep_add_drive(guestfs_h *g, struct img *im, bool readonly, struct error *e)
{
  char real[PATH_MAX];
  if (!realpath(im->path, real))
    return error_errno(e, "%s", im->path);
  if (gfs.add_drive_opts(g, real, GUESTFS_ADD_DRIVE_OPTS_FORMAT, im->fmt->name,
                             GUESTFS_ADD_DRIVE_OPTS_READONLY, readonly ? 1 : 0, -1) < 0)
    return error_set(e, ERR_IO, "%s: libguestfs: %s", im->path, deep_last_error(g));
  return 0;
}

/* ------------------------------------------------------------------ deep */

struct deep_vg {
  char name[128];
  int drive;
};

struct deep_pv {
  char uuid[33]; /* without dashes */
  int drive;
};

struct deep_map {
  char **devices; /* guestfs_list_devices: drive i is devices[i] */
  struct deep_pv pv[DEEP_MAX_VGS];
  size_t npv;
  struct deep_vg vg[DEEP_MAX_VGS];
  size_t nvg;
  bool vg_done;
};

/* The drive a device path (/dev/sdb, /dev/sdb3) is on, or -1. */
static int deep_drive_of_device(const struct deep_map *m, const char *dev)
{
  for (int i = 0; m->devices[i]; i++) {
    size_t n = strlen(m->devices[i]);
    if (strncmp(dev, m->devices[i], n) != 0)
      continue;
    const char *p = dev + n;
    while (isdigit((unsigned char)*p))
      p++;
    if (!*p)
      return i;
  }
  return -1;
}

static void deep_uuid(char out[33], const char *s)
{
  size_t k = 0;
  for (; *s && k < 32; s++)
    if (isalnum((unsigned char)*s))
      out[k++] = *s;
  out[k] = 0;
}

/* Volume groups and the drive of each one's first physical volume, by the
 * UUIDs blkid read on the partitions (what LVM calls the device of a PV is
 * its metadata's hint, not always where it is now). */
static void deep_map_vgs(guestfs_h *g, struct deep_map *m)
{
  m->vg_done = true;
  char **vgs = gfs.vgs(g);
  for (size_t i = 0; vgs && vgs[i] && m->nvg < DEEP_MAX_VGS; i++) {
    struct deep_vg *v = &m->vg[m->nvg++];
    snprintf(v->name, sizeof v->name, "%s", vgs[i]);
    v->drive = -1;
    char **uuids = gfs.vgpvuuids(g, vgs[i]);
    char want[33];
    deep_uuid(want, uuids && uuids[0] ? uuids[0] : "");
    for (size_t j = 0; j < m->npv && want[0]; j++)
      if (strcmp(m->pv[j].uuid, want) == 0)
        v->drive = m->pv[j].drive;
    free_strings(uuids);
  }
  free_strings(vgs);
}

/* The drive a mountable (/dev/sdb3, /dev/VG/LV, btrfsvol:/dev/sdb3/@) is
 * on, or -1 when that cannot be told (md devices). */
static int deep_drive_of(guestfs_h *g, struct deep_map *m, const char *mountable)
{
  char dev[256];
  bool btrfsvol = strncmp(mountable, "btrfsvol:", 9) == 0;
  snprintf(dev, sizeof dev, "%s", btrfsvol ? mountable + 9 : mountable);
  if (strncmp(dev, "/dev/", 5) != 0)
    return -1;
  char *slash = strchr(dev + 5, '/');
  if (slash)
    *slash = 0; /* btrfsvol:/dev/sdb3/@home is on /dev/sdb3; /dev/VG/LV in VG */
  if (btrfsvol || !slash)
    return deep_drive_of_device(m, dev);
  if (!m->vg_done)
    deep_map_vgs(g, m);
  for (size_t i = 0; i < m->nvg; i++)
    if (strcmp(m->vg[i].name, dev + 5) == 0)
      return m->vg[i].drive;
  return -1;
}

/* The report of one root. */
static struct json_object *deep_root(guestfs_h *g, const char *root)
{
  struct json_object *r = json_object_new_object();
  json_object_object_add(r, "root", json_object_new_string(root));
  json_object_object_add(r, "type", take_string(gfs.inspect_get_type(g, root)));
  json_object_object_add(r, "distro", take_string(gfs.inspect_get_distro(g, root)));
  json_object_object_add(r, "product_name", take_string(gfs.inspect_get_product_name(g, root)));
  json_object_object_add(r, "arch", take_string(gfs.inspect_get_arch(g, root)));
  json_object_object_add(r, "major_version",
                         json_object_new_int(gfs.inspect_get_major_version(g, root)));
  json_object_object_add(r, "minor_version",
                         json_object_new_int(gfs.inspect_get_minor_version(g, root)));
  struct json_object *mo = json_object_new_object();
  char **mp = gfs.inspect_get_mountpoints(g, root);
  for (size_t i = 0; mp && mp[i] && mp[i + 1]; i += 2)
    json_object_object_add(mo, mp[i], json_object_new_string(mp[i + 1]));
  free_strings(mp);
  json_object_object_add(r, "mountpoints", mo);
  return r;
}

/* What the native path could not see, from the image's first root. */
static void deep_fill_in(struct inspection *in, struct json_object *r0, const char *root)
{
  struct json_object *v;
  if (json_object_object_get_ex(r0, "distro", &v) && v)
    snprintf(in->os_id, sizeof in->os_id, "%s", json_object_get_string(v));
  if (json_object_object_get_ex(r0, "product_name", &v) && v)
    snprintf(in->os_pretty, sizeof in->os_pretty, "%s", json_object_get_string(v));
  struct json_object *maj, *min;
  if (json_object_object_get_ex(r0, "major_version", &maj) &&
      json_object_object_get_ex(r0, "minor_version", &min) && json_object_get_int(maj) > 0) {
    if (json_object_get_int(min) > 0)
      snprintf(in->os_version, sizeof in->os_version, "%d.%d", json_object_get_int(maj),
               json_object_get_int(min));
    else
      snprintf(in->os_version, sizeof in->os_version, "%d", json_object_get_int(maj));
  }
  if (json_object_object_get_ex(r0, "arch", &v) && v && !in->arch) {
    const char *a = json_object_get_string(v);
    in->arch = strcmp(a, "x86_64") == 0 ? "x86_64" : strcmp(a, "aarch64") == 0 ? "arm64"
             : strcmp(a, "i386") == 0 ? "i386" : NULL;
  }
  /* The root was there after all: the native "not found" finding goes. */
  for (size_t i = 0; i < in->nfindings; i++)
    if (strcmp(in->findings[i].code, "ROOT_NOT_NATIVE") == 0) {
      in->findings[i] = in->findings[--in->nfindings];
      break;
    }
  inspect_add_finding(in, "ROOT_FOUND_DEEP", SEV_INFO,
                      "The root filesystem (%s) was found by libguestfs only; the bootloader "
                      "and driver checks above are from the native path.", root);
}

/* Adds what blkid (in the appliance) says of dev to the report of the
 * images it belongs to. */
static void deep_type(guestfs_h *g, struct deep_map *m, size_t n, struct json_object **types,
                      const char *dev)
{
  char *t = gfs.vfs_type(g, dev);
  const char *type = t && *t ? t : "unknown";
  if (strcmp(type, "LVM2_member") == 0 && m->npv < DEEP_MAX_VGS) {
    char *u = gfs.vfs_uuid(g, dev);
    deep_uuid(m->pv[m->npv].uuid, u ? u : "");
    m->pv[m->npv++].drive = deep_drive_of_device(m, dev);
    free(u);
  }
  /* With one image everything is its own; with several, what cannot be
   * placed (md devices) is listed under each. */
  int d = n == 1 ? 0 : deep_drive_of(g, m, dev);
  for (size_t i = 0; i < n; i++)
    if (d < 0 || (size_t)d == i)
      json_object_object_add(types[i], dev, json_object_new_string(type));
  free(t);
}

int inspect_deep(struct img **ims, struct inspection **ins, size_t n,
                 struct json_object **outs, struct error *e)
{
  for (size_t i = 0; i < n; i++) {
    outs[i] = NULL;
    if (ims[i]->fd < 0 || strcmp(ims[i]->fmt->name, "ova") == 0)
      return error_set(e, ERR_UNSUPPORTED, "%s: --deep needs an image qemu can open directly "
                       "(not %s); convert it first", ims[i]->path, ims[i]->fmt->name);
  }
  guestfs_h *g = deep_handle(e);
  if (!g)
    return -1;
  int ret = -1;
  char **roots = NULL, **parts = NULL, **lvs = NULL;
  struct deep_map map = { 0 };
  /* Per image: the blkid types, the roots. */
  struct json_object **obj = calloc(2 * n, sizeof *obj), **types = obj, **rootarr = obj + n;
  if (!obj) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if (deep_add_drive(g, ims[i], true, e) < 0)
      goto out;
  /* Not guestfs_list_filesystems: it runs parted twice on every partition,
   * seconds each under emulation, and guestfs_inspect_os runs it again. */
  if (gfs.launch(g) < 0 || !(map.devices = gfs.list_devices(g)) ||
      !(parts = gfs.list_partitions(g)) || !(roots = gfs.inspect_os(g))) {
    error_set(e, ERR_IO, "%s%s: libguestfs: %s", ims[0]->path, n > 1 ? " and the others" : "",
              deep_last_error(g));
    goto out;
  }
  size_t ndev = 0;
  while (map.devices[ndev])
    ndev++;
  if (ndev != n) {
    error_set(e, ERR_IO, "libguestfs shows %zu disks for the %zu images added", ndev, n);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    types[i] = json_object_new_object();
    rootarr[i] = json_object_new_array();
  }
  for (size_t i = 0; i < n; i++) {
    bool partitioned = false;
    for (size_t p = 0; parts[p]; p++)
      partitioned |= deep_drive_of_device(&map, parts[p]) == (int)i;
    if (!partitioned)
      deep_type(g, &map, n, types, map.devices[i]);
  }
  for (size_t p = 0; parts[p]; p++)
    deep_type(g, &map, n, types, parts[p]);
  if (gfs.feature_available(g, (char *[]){ "lvm2", NULL }) == 1 && (lvs = gfs.lvs(g)))
    for (size_t l = 0; lvs[l]; l++)
      deep_type(g, &map, n, types, lvs[l]);
  for (size_t r = 0; roots[r]; r++) {
    int d = n == 1 ? 0 : deep_drive_of(g, &map, roots[r]);
    for (size_t i = 0; i < n; i++)
      if (d < 0 || (size_t)d == i)
        json_object_array_add(rootarr[i], deep_root(g, roots[r]));
  }
  for (size_t i = 0; i < n; i++) {
    struct json_object *d = json_object_new_object();
    json_object_object_add(d, "drive", json_object_new_string(map.devices[i]));
    json_object_object_add(d, "devices", types[i]);
    json_object_object_add(d, "roots", rootarr[i]);
    if (ins[i]->root < 0 && json_object_array_length(rootarr[i]) > 0) {
      struct json_object *r0 = json_object_array_get_idx(rootarr[i], 0), *v;
      json_object_object_get_ex(r0, "root", &v);
      deep_fill_in(ins[i], r0, json_object_get_string(v));
    }
    outs[i] = d;
    types[i] = rootarr[i] = NULL;
  }
  ret = 0;
out:
  for (size_t i = 0; obj && i < 2 * n; i++)
    json_object_put(obj[i]);
  free(obj);
  free_strings(roots);
  free_strings(parts);
  free_strings(lvs);
  free_strings(map.devices);
  gfs.close(g);
  return ret;
}

/* ------------------------------------------------------------------- fix */

struct fix {
  guestfs_h *g;
  const struct inspection *in;
  struct fix_report *r;
  const char *drive;     /* the image's disk in the appliance: /dev/sda */
  /* The files to write, path and new content, once all is worked out. */
  struct { char path[256]; char *text; } out[INSPECT_MAX_FIXES];
  size_t nout;
  const char *add_drivers[2]; /* nvme, ena: what the initramfs lacks */
  size_t nadd;
  const char *initramfs_tool; /* update-initramfs or dracut, when it will run */
  const char *initramfs_path; /* where the guest has it */
  uint64_t ro_mounted;        /* fix_mount's mount points, read-only pass */
};

static void fix_change(struct fix_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fix_change(struct fix_report *r, const char *fmt, ...)
{
  if (r->nchanges == INSPECT_MAX_FIXES)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->changes[r->nchanges++], sizeof r->changes[0], fmt, ap);
  va_end(ap);
}

static void fix_note(struct fix_report *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fix_note(struct fix_report *r, const char *code, const char *fmt, ...)
{
  if (r->nnotes == INSPECT_MAX_FIX_NOTES)
    return;
  va_list ap;
  va_start(ap, fmt);
  finding_vset(&r->notes[r->nnotes++], code, SEV_WARNING, fmt, ap);
  va_end(ap);
}

/* A growing string. */
struct fix_buf {
  char *s;
  size_t len, cap;
  bool failed;
};

static void fix_put(struct fix_buf *b, const char *s, size_t n)
{
  if (b->failed)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->len + n + 1 > cap)
      cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) {
      b->failed = true;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

static void fix_puts(struct fix_buf *b, const char *s)
{
  fix_put(b, s, strlen(s));
}

/* Queues path to be written with text (taken). */
static int fix_queue(struct fix *f, const char *path, char *text, struct error *e)
{
  if (f->nout == INSPECT_MAX_FIXES) {
    free(text);
    return error_set(e, ERR_UNSUPPORTED, "--fix: more than %d files to change", INSPECT_MAX_FIXES);
  }
  snprintf(f->out[f->nout].path, sizeof f->out[0].path, "%s", path);
  f->out[f->nout++].text = text;
  return 0;
}

/* Reads a regular file of the guest (not through a symlink); NULL when it
 * is not there. */
static char *fix_read(struct fix *f, const char *path, size_t *len)
{
  if (gfs.is_file(f->g, path) != 1)
    return NULL;
  char *s = gfs.read_file(f->g, path, len);
  if (s && strlen(s) != *len) { /* a NUL byte: not a text file to edit */
    free(s);
    return NULL;
  }
  return s;
}

/* /dev/sdXN, /dev/hdXN, /dev/vdXN, /dev/xvdXN: sets *letters and *num
 * (pointers into spec) and returns true. */
static bool fix_device_name(const char *spec, const char **letters, size_t *nletters,
                            const char **num)
{
  static const char *const prefixes[] = { "/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd" };
  for (size_t i = 0; i < 4; i++) {
    size_t n = strlen(prefixes[i]);
    if (strncmp(spec, prefixes[i], n) != 0)
      continue;
    const char *p = spec + n, *l = p;
    while (*p >= 'a' && *p <= 'z')
      p++;
    if (p == l)
      return false;
    const char *d = p;
    while (isdigit((unsigned char)*p))
      p++;
    if (*p)
      return false;
    *letters = l;
    *nletters = (size_t)(d - l);
    *num = d;
    return true;
  }
  return false;
}

static bool fix_same_type(const char *fstab, const char *blkid)
{
  if (strcmp(fstab, "auto") == 0 || strcmp(fstab, blkid) == 0)
    return true;
  bool ef = strncmp(fstab, "ext", 3) == 0 && strlen(fstab) == 4;
  bool eb = strncmp(blkid, "ext", 3) == 0 && strlen(blkid) == 4;
  return (ef && eb) || (strcmp(fstab, "msdos") == 0 && strcmp(blkid, "vfat") == 0);
}

/* /etc/fstab: every entry whose device is /dev/sdXN and the like names the
 * filesystem by its UUID instead. The device must be on this disk (X is
 * the first disk, 'a'), exist and hold a filesystem of the type the entry
 * says; otherwise a note says why the entry stays. */
static int fix_fstab(struct fix *f, struct error *e)
{
  size_t len;
  char *text = fix_read(f, "/etc/fstab", &len);
  if (!text)
    return 0;
  struct fix_buf b = { 0 };
  bool changed = false;
  for (char *line = text; *line;) {
    char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line + 1) : strlen(line);
    char spec[256], file[256], type[64];
    int s0 = 0, s1 = 0;
    const char *letters, *num;
    size_t nl;
    char *lc = strndup(line, n);
    if (!lc) {
      b.failed = true;
      break;
    }
    bool edit = lc[strspn(lc, " \t")] != '#' &&
                sscanf(lc, " %n%255s%n %255s %63s", &s0, spec, &s1, file, type) == 3 &&
                fix_device_name(spec, &letters, &nl, &num);
    free(lc);
    if (edit) {
      char dev[300];
      snprintf(dev, sizeof dev, "%s%s", f->drive, num);
      char *vt = NULL, *uuid = NULL;
      edit = false;
      if (nl != 1 || letters[0] != 'a')
        fix_note(f->r, "FIX_FSTAB_LEFT", "/etc/fstab: %s (%s) is on another disk than this "
                 "one; it was left as it is. Name it by UUID= on the guest.", file, spec);
      else if (!(vt = gfs.vfs_type(f->g, dev)) || !*vt)
        fix_note(f->r, "FIX_FSTAB_LEFT", "/etc/fstab: %s (%s) is no filesystem on this disk; "
                 "it was left as it is.", file, spec);
      else if (!fix_same_type(type, vt))
        fix_note(f->r, "FIX_FSTAB_LEFT", "/etc/fstab: %s says %s is %s, but this disk's "
                 "partition %s holds %s; it was left as it is.", file, spec, type,
                 *num ? num : "(whole disk)", vt);
      else if (!(uuid = gfs.vfs_uuid(f->g, dev)) || !*uuid)
        fix_note(f->r, "FIX_FSTAB_LEFT", "/etc/fstab: %s (%s) has no UUID; it was left as it "
                 "is.", file, spec);
      else {
        fix_put(&b, line, (size_t)s0);
        fix_puts(&b, "UUID=");
        fix_puts(&b, uuid);
        fix_put(&b, line + s1, n - (size_t)s1);
        fix_change(f->r, "/etc/fstab: %s is now UUID=%s (was %s)", file, uuid, spec);
        changed = edit = true;
      }
      free(vt);
      free(uuid);
    }
    if (!edit)
      fix_put(&b, line, n);
    line += n;
  }
  free(text);
  if (b.failed) {
    free(b.s);
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  if (!changed) {
    free(b.s);
    return 0;
  }
  return fix_queue(f, "/etc/fstab", b.s, e);
}

static bool fix_has_serial(const char *s, size_t n)
{
  static const char *const words[] = { "console=ttyS", "console=ttyAMA" };
  for (size_t w = 0; w < 2; w++) {
    size_t k = strlen(words[w]);
    for (size_t i = 0; i + k <= n; i++)
      if ((i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t' || s[i - 1] == '"' || s[i - 1] == '\'') &&
          memcmp(s + i, words[w], k) == 0)
        return true;
  }
  return false;
}

/* Appends " word" to every line whose first word is one of kws (any case)
 * and which sets no serial console; queues the file when one changed. */
static int fix_cmdline_file(struct fix *f, const char *path, const char *const *kws,
                            const char *word, struct error *e)
{
  size_t len;
  char *text = fix_read(f, path, &len);
  if (!text)
    return 0;
  struct fix_buf b = { 0 };
  int nchanged = 0;
  for (char *line = text; *line;) {
    char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    size_t ws = strspn(line, " \t"), kl = strcspn(line + ws, " \t\n");
    bool match = false;
    for (size_t k = 0; kws[k]; k++)
      if (kl == strlen(kws[k]) && strncasecmp(line + ws, kws[k], kl) == 0)
        match = true;
    size_t keep = n;
    while (keep > 0 && (line[keep - 1] == ' ' || line[keep - 1] == '\t' || line[keep - 1] == '\r'))
      keep--;
    if (match && ws + kl < keep && !fix_has_serial(line, n)) {
      fix_put(&b, line, keep);
      fix_puts(&b, " ");
      fix_puts(&b, word);
      fix_put(&b, line + keep, n - keep);
      nchanged++;
    } else {
      fix_put(&b, line, n);
    }
    if (end)
      fix_puts(&b, "\n");
    line += n + (end ? 1 : 0);
  }
  free(text);
  if (b.failed) {
    free(b.s);
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  if (!nchanged) {
    free(b.s);
    return 0;
  }
  fix_change(f->r, "%s: %s added to %d kernel command line%s", path, word, nchanged,
             nchanged > 1 ? "s" : "");
  return fix_queue(f, path, b.s, e);
}

/* /etc/default/grub: GRUB_CMDLINE_LINUX gets the console too, so that the
 * next update-grub keeps it. */
static int fix_default_grub(struct fix *f, const char *word, struct error *e)
{
  size_t len;
  char *text = fix_read(f, "/etc/default/grub", &len);
  if (!text)
    return 0;
  static const char key[] = "GRUB_CMDLINE_LINUX=", key_default[] = "GRUB_CMDLINE_LINUX_DEFAULT=";
  /* A console in either variable is enough: both reach the default entry. */
  for (char *line = text; *line;) {
    size_t n = strcspn(line, "\n");
    char *l = line + strspn(line, " \t");
    if ((strncmp(l, key, sizeof key - 1) == 0 || strncmp(l, key_default, sizeof key_default - 1) == 0) &&
        fix_has_serial(l, n - (size_t)(l - line))) {
      free(text);
      return 0;
    }
    line += n + (line[n] ? 1 : 0);
  }
  struct fix_buf b = { 0 };
  bool done = false;
  for (char *line = text; *line;) {
    size_t n = strcspn(line, "\n"), nl = line[n] ? 1 : 0;
    char *l = line + strspn(line, " \t");
    size_t pre = (size_t)(l - line) + sizeof key - 1;
    if (!done && strncmp(l, key, sizeof key - 1) == 0) {
      const char *v = line + pre;
      size_t vl = n - pre;
      while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r'))
        vl--;
      char q = vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0] ? v[0] : 0;
      fix_put(&b, line, pre);
      if (q) {
        fix_put(&b, v, vl - 1);
        if (vl > 2)
          fix_puts(&b, " ");
        fix_puts(&b, word);
        fix_put(&b, &q, 1);
      } else {
        fix_puts(&b, "\"");
        fix_put(&b, v, vl);
        if (vl)
          fix_puts(&b, " ");
        fix_puts(&b, word);
        fix_puts(&b, "\"");
      }
      fix_put(&b, v + vl, n - pre - vl);
      done = true;
    } else {
      fix_put(&b, line, n);
    }
    fix_put(&b, "\n", nl);
    line += n + nl;
  }
  if (!done) {
    if (b.len && b.s[b.len - 1] != '\n')
      fix_puts(&b, "\n");
    fix_puts(&b, key);
    fix_puts(&b, "\"");
    fix_puts(&b, word);
    fix_puts(&b, "\"\n");
  }
  free(text);
  if (b.failed) {
    free(b.s);
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  fix_change(f->r, "/etc/default/grub: %s added to GRUB_CMDLINE_LINUX", word);
  return fix_queue(f, "/etc/default/grub", b.s, e);
}

/* The serial console on every kernel command line GRUB (2 or legacy),
 * Boot Loader Specification entries and extlinux know, when the default
 * entry has none. */
static int fix_console(struct fix *f, const char *root, struct error *e)
{
  const struct inspection *in = f->in;
  if (in->cmdline_known && fix_has_serial(in->cmdline, strlen(in->cmdline)))
    return 0;
  const char *arch = in->arch;
  char *ga = NULL;
  if (!arch) {
    ga = gfs.inspect_get_arch(f->g, root);
    arch = !ga ? NULL : strcmp(ga, "x86_64") == 0 ? "x86_64" : strcmp(ga, "aarch64") == 0 ? "arm64"
         : strcmp(ga, "i386") == 0 ? "i386" : NULL;
  }
  free(ga);
  if (!arch) {
    fix_note(f->r, "FIX_CONSOLE_LEFT", "The guest's architecture is unknown, so the serial "
             "console (console=ttyS0 on x86, console=ttyAMA0 on arm64) was not added.");
    return 0;
  }
  const char *word = strcmp(arch, "arm64") == 0 ? "console=ttyAMA0" : "console=ttyS0";
  static const char *const grub2[] = { "linux", "linux16", "linuxefi", NULL };
  static const char *const legacy[] = { "kernel", NULL };
  static const char *const bls[] = { "options", NULL };
  static const char *const syslinux[] = { "append", NULL };
  size_t before = f->r->nchanges;
  if (fix_cmdline_file(f, "/boot/grub/grub.cfg", grub2, word, e) < 0 ||
      fix_cmdline_file(f, "/boot/grub2/grub.cfg", grub2, word, e) < 0 ||
      fix_cmdline_file(f, "/boot/grub/menu.lst", legacy, word, e) < 0 ||
      fix_cmdline_file(f, "/boot/extlinux/extlinux.conf", syslinux, word, e) < 0 ||
      fix_cmdline_file(f, "/boot/syslinux/syslinux.cfg", syslinux, word, e) < 0)
    return -1;
  /* Where GRUB's real config is on the ESP (Fedora before 34, others). */
  char **efi = gfs.is_dir(f->g, "/boot/efi/EFI") == 1 ? gfs.ls(f->g, "/boot/efi/EFI") : NULL;
  for (size_t i = 0; efi && efi[i]; i++) {
    char p[300];
    snprintf(p, sizeof p, "/boot/efi/EFI/%s/grub.cfg", efi[i]);
    if (fix_cmdline_file(f, p, grub2, word, e) < 0) {
      free_strings(efi);
      return -1;
    }
  }
  free_strings(efi);
  char **ent = gfs.is_dir(f->g, "/boot/loader/entries") == 1
               ? gfs.ls(f->g, "/boot/loader/entries") : NULL;
  for (size_t i = 0; ent && ent[i]; i++) {
    size_t l = strlen(ent[i]);
    char p[300];
    if (l < 5 || strcmp(ent[i] + l - 5, ".conf") != 0)
      continue;
    snprintf(p, sizeof p, "/boot/loader/entries/%s", ent[i]);
    if (fix_cmdline_file(f, p, bls, word, e) < 0) {
      free_strings(ent);
      return -1;
    }
  }
  free_strings(ent);
  if (f->r->nchanges == before && !in->cmdline_known)
    fix_note(f->r, "FIX_CONSOLE_LEFT", "No kernel command line was found (no grub.cfg, menu.lst, "
             "extlinux.conf or boot loader entry), so no serial console was added.");
  if (f->r->nchanges > before && fix_default_grub(f, word, e) < 0)
    return -1;
  return 0;
}

/* The appliance runs the host's architecture: the guest's programs run in it
 * only when they are of that architecture (or i386 on x86_64). */
static bool fix_runs_here(const char *arch, char *host, size_t cap)
{
  struct utsname u;
  if (uname(&u) < 0)
    return false;
  snprintf(host, cap, "%s", u.machine);
  if (!arch)
    return false;
  if (strcmp(u.machine, "x86_64") == 0)
    return strcmp(arch, "x86_64") == 0 || strcmp(arch, "i386") == 0;
  if (strcmp(u.machine, "aarch64") == 0)
    return strcmp(arch, "arm64") == 0;
  return false;
}

/* Which of nvme and ena the initramfs lacks while the kernel has them as
 * modules, and whether the guest can rebuild it here. */
static int fix_initramfs_plan(struct fix *f)
{
  const struct inspection *in = f->in;
  if (in->default_kernel < 0 || !in->initrd_scanned)
    return 0;
  if (in->drivers[INITRAMFS_NVME] == DRV_NOT_IN_INITRAMFS)
    f->add_drivers[f->nadd++] = "nvme";
  if (in->drivers[INITRAMFS_ENA] == DRV_NOT_IN_INITRAMFS)
    f->add_drivers[f->nadd++] = "ena";
  if (!f->nadd)
    return 0;
  const char *kver = in->kernels[in->default_kernel].version;
  char want[32], host[65];
  snprintf(want, sizeof want, "%s%s%s", f->add_drivers[0], f->nadd > 1 ? " and " : "",
           f->nadd > 1 ? f->add_drivers[1] : "");
  static const char *const uinit[] = { "/usr/sbin/update-initramfs", "/sbin/update-initramfs" };
  static const char *const dracut[] = { "/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut" };
  for (size_t i = 0; i < 2 && !f->initramfs_tool; i++)
    if (gfs.is_file_opts(f->g, uinit[i], GUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS, 1, -1) == 1) {
      f->initramfs_tool = "update-initramfs";
      f->initramfs_path = uinit[i];
    }
  for (size_t i = 0; i < 3 && !f->initramfs_tool; i++)
    if (gfs.is_file_opts(f->g, dracut[i], GUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS, 1, -1) == 1) {
      f->initramfs_tool = "dracut";
      f->initramfs_path = dracut[i];
    }
  if (!f->initramfs_tool) {
    fix_note(f->r, "FIX_INITRAMFS_LEFT", "The initramfs of %s lacks %s, but the guest has neither "
             "update-initramfs nor dracut to rebuild it; it was left as it is. Rebuild it on the "
             "guest with those drivers before import.", kver, want);
    f->nadd = 0;
  } else if (!fix_runs_here(in->arch, host, sizeof host)) {
    fix_note(f->r, "FIX_INITRAMFS_LEFT", "The initramfs of %s lacks %s; the guest's %s is for %s "
             "and cannot run on this %s host, so it was left as it is. Rebuild it on the guest "
             "(or fix the image on a host of its architecture).", kver, want, f->initramfs_tool,
             in->arch ? in->arch : "an unknown architecture", host);
    f->initramfs_tool = NULL;
    f->nadd = 0;
  }
  return 0;
}

/* update-initramfs: the drivers go into /etc/initramfs-tools/modules (so
 * the next update keeps them), then the initramfs of the default kernel is
 * rebuilt. dracut: a drop-in asks for them, then dracut rebuilds. */
static int fix_initramfs_run(struct fix *f)
{
  const char *kver = f->in->kernels[f->in->default_kernel].version;
  struct fix_buf b = { 0 };
  const char *conf;
  size_t len;
  char *text = NULL;
  if (strcmp(f->initramfs_tool, "update-initramfs") == 0) {
    conf = "/etc/initramfs-tools/modules";
    text = fix_read(f, conf, &len);
    if (text)
      fix_puts(&b, text);
    if (b.len && b.s[b.len - 1] != '\n')
      fix_puts(&b, "\n");
    for (size_t i = 0; i < f->nadd; i++) {
      fix_puts(&b, f->add_drivers[i]);
      fix_puts(&b, "\n");
    }
  } else {
    conf = "/etc/dracut.conf.d/90-amiport-ec2.conf";
    fix_puts(&b, "# Added by amiport check --fix: the drivers an EC2 Nitro instance boots with.\n");
    fix_puts(&b, "add_drivers+=\"");
    for (size_t i = 0; i < f->nadd; i++) {
      fix_puts(&b, " ");
      fix_puts(&b, f->add_drivers[i]);
    }
    fix_puts(&b, " \"\n");
  }
  free(text);
  char dir[64];
  snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(conf, '/') - conf), conf);
  if (b.failed || gfs.mkdir_p(f->g, dir) < 0 || gfs.write(f->g, conf, b.s, b.len) < 0) {
    fix_note(f->r, "FIX_INITRAMFS_LEFT", "Could not write %s: %s; the initramfs of %s was left as "
             "it is.", conf, b.failed ? "out of memory" : deep_last_error(f->g), kver);
    free(b.s);
    return 0;
  }
  free(b.s);
  fix_change(f->r, "%s: %s added", conf, f->nadd > 1 ? "nvme and ena" : f->add_drivers[0]);
  char *uargs[] = { (char *)f->initramfs_path, "-u", "-k", (char *)kver, NULL };
  char *dargs[] = { (char *)f->initramfs_path, "--force", "--kver", (char *)kver, NULL };
  char *out = gfs.command(f->g, strcmp(f->initramfs_tool, "dracut") == 0 ? dargs : uargs);
  if (!out) {
    fix_note(f->r, "FIX_INITRAMFS_LEFT", "The guest's %s failed for %s: %.250s", f->initramfs_tool,
             kver, deep_last_error(f->g));
    return 0;
  }
  free(out);
  fix_change(f->r, "initramfs of %s rebuilt by the guest's %s with %s", kver, f->initramfs_tool,
             f->nadd > 1 ? "nvme and ena" : f->add_drivers[0]);
  return 0;
}

/* Mounts the root's filesystems, shortest mount point first; *mounted
 * gets a bit for each mount point (in the order libguestfs lists them) that
 * could be mounted, so that the read-write pass can insist on the same
 * ones: a file read from /boot must not be written into the root's empty
 * /boot directory. */
static int fix_mount(struct fix *f, const char *root, bool rw, uint64_t *mounted, struct error *e)
{
  *mounted = 0;
  if ((rw ? gfs.mount(f->g, root, "/") : gfs.mount_ro(f->g, root, "/")) < 0)
    return error_set(e, ERR_IO, "libguestfs: mounting the root %s: %s", root, deep_last_error(f->g));
  char **mp = gfs.inspect_get_mountpoints(f->g, root);
  size_t n = 0;
  while (mp && mp[n] && mp[n + 1] && n < 2 * 64)
    n += 2;
  for (size_t want = 2; mp; want++) {
    bool more = false;
    for (size_t i = 0; i < n; i += 2) {
      size_t l = strlen(mp[i]);
      more |= l > want;
      if (l != want || strcmp(mp[i + 1], root) == 0 || gfs.is_dir(f->g, mp[i]) != 1)
        continue;
      if ((rw ? gfs.mount(f->g, mp[i + 1], mp[i]) : gfs.mount_ro(f->g, mp[i + 1], mp[i])) == 0)
        *mounted |= 1ull << (i / 2);
      else if (rw && (f->ro_mounted & (1ull << (i / 2)))) {
        error_set(e, ERR_IO, "libguestfs: mounting %s on %s read-write: %s", mp[i + 1], mp[i],
                  deep_last_error(f->g));
        free_strings(mp);
        return -1;
      }
    }
    if (!more)
      break;
  }
  free_strings(mp);
  return 0;
}

int inspect_fix(struct img *im, const struct inspection *in, struct fix_report *r,
                struct error *e)
{
  memset(r, 0, sizeof *r);
  if (im->fd < 0 || (strcmp(im->fmt->name, "raw") != 0 && strcmp(im->fmt->name, "qcow2") != 0))
    return error_set(e, ERR_UNSUPPORTED, "%s: --fix changes raw and qcow2 images only (this one is "
                     "%s); convert it to qcow2 first and fix the copy", im->path,
                     im->fd < 0 ? "not a local file" : im->fmt->name);
  guestfs_h *g = deep_handle(e);
  if (!g)
    return -1;
  struct fix f = { .g = g, .in = in, .r = r };
  int ret = -1;
  char **roots = NULL, **devs = NULL;
  if (deep_add_drive(g, im, false, e) < 0)
    goto out;
  if (gfs.launch(g) < 0 || !(devs = gfs.list_devices(g)) || !devs[0] ||
      !(roots = gfs.inspect_os(g))) {
    error_set(e, ERR_IO, "%s: libguestfs: %s", im->path, deep_last_error(g));
    goto out;
  }
  f.drive = devs[0];
  if (!roots[0] || roots[1]) {
    error_set(e, ERR_UNSUPPORTED, "%s: --fix: libguestfs found %s operating system on this disk; "
              "it repairs a disk with exactly one", im->path, roots[0] ? "more than one" : "no");
    goto out;
  }
  /* Read-only first: work out every change. */
  uint64_t rw_mounted;
  if (fix_mount(&f, roots[0], false, &f.ro_mounted, e) < 0 || fix_fstab(&f, e) < 0 ||
      fix_console(&f, roots[0], e) < 0 || fix_initramfs_plan(&f) < 0)
    goto out;
  if (f.nout || f.nadd) {
    if (gfs.umount_all(g) < 0 || fix_mount(&f, roots[0], true, &rw_mounted, e) < 0) {
      if (!e->msg[0])
        error_set(e, ERR_IO, "%s: libguestfs: %s", im->path, deep_last_error(g));
      goto out;
    }
    for (size_t i = 0; i < f.nout; i++)
      if (gfs.write(g, f.out[i].path, f.out[i].text, strlen(f.out[i].text)) < 0) {
        error_set(e, ERR_IO, "%s: libguestfs: writing %s: %s", im->path, f.out[i].path,
                  deep_last_error(g));
        goto out;
      }
    if (f.nadd)
      fix_initramfs_run(&f);
  }
  /* Written back only when the appliance shuts down cleanly. */
  if (gfs.umount_all(g) < 0 || gfs.shutdown(g) < 0) {
    error_set(e, ERR_IO, "%s: libguestfs: %s", im->path, deep_last_error(g));
    goto out;
  }
  r->image_changed = f.nout || f.nadd;
  ret = 0;
out:
  for (size_t i = 0; i < f.nout; i++)
    free(f.out[i].text);
  free_strings(roots);
  free_strings(devs);
  gfs.close(g);
  return ret;
}
