/* inspect.c - the normalizer's walk over a disk: the partition table, a
 * filesystem on each partition (or on the whole disk), which one is the root
 * and which holds /boot, then the bootloaders (boot.c) and the OS (os.c).
 * Nothing is mounted; everything goes through the block layer. */
#include "inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mounts (or identifies) the filesystem in [start, start+size). */
static int inspect_volume(struct inspection *in, const struct partition *p, uint64_t start,
                          uint64_t size, struct error *e)
{
  if (in->nvol == INSPECT_MAX_FS)
    return 0;
  struct inspect_volume *v = &in->vol[in->nvol];
  *v = (struct inspect_volume){ .part = p, .start = start, .size = size };
  struct error fe = { 0 };
  int r = fs_open(&v->fs, &in->disk, start, size, &v->fs_name, &fe);
  if (r < 0) {
    /* A damaged filesystem is a finding, not the end of the inspection. */
    inspect_add_finding(in, "FILESYSTEM_UNREADABLE", SEV_WARNING,
                        "Partition %u holds a %s filesystem that could not be read (%s).",
                        p ? p->index : 0, v->fs_name ? v->fs_name : "?", fe.msg);
    v->fs_name = v->fs_name ? v->fs_name : NULL;
  }
  v->mounted = r == 0;
  in->nvol++;
  (void)e;
  return 0;
}

/* Whether path is on v: 1 there, 0 not there (or v not mounted), -1 the
 * filesystem could not be read on the way (why in e). */
static int inspect_has_path(struct inspect_volume *v, const char *path, struct error *e)
{
  struct fs_inode ino;
  if (!v->mounted)
    return 0;
  int r = fs_resolve(&v->fs, path, true, &ino, e);
  return r == 0 ? 1 : r == 1 ? 0 : -1;
}

/* The root: the first filesystem with /etc/os-release, else with /etc/fstab.
 * A filesystem that fails while looking is a finding (once per volume), not
 * a filesystem without the file. */
static void inspect_find_root(struct inspection *in)
{
  bool reported[INSPECT_MAX_FS] = { false };
  for (int pass = 0; pass < 2 && in->root < 0; pass++) {
    const char *path = pass == 0 ? "/etc/os-release" : "/etc/fstab";
    for (size_t i = 0; i < in->nvol; i++) {
      struct inspect_volume *v = &in->vol[i];
      struct error fe = { 0 };
      int r = inspect_has_path(v, path, &fe);
      if (r > 0) {
        in->root = (int)i;
        break;
      }
      if (r < 0 && !reported[i]) {
        reported[i] = true;
        char where[32] = "the whole disk";
        if (v->part)
          snprintf(where, sizeof where, "partition %u", v->part->index);
        inspect_add_finding(in, "FILESYSTEM_UNREADABLE", SEV_WARNING,
                            "The %s filesystem on %s could not be read while looking for %s "
                            "(%s).", v->fs_name ? v->fs_name : v->fs.drv->name, where, path,
                            fe.msg);
      }
    }
  }
}

int inspect_image(struct img *im, struct inspection *in, struct error *e)
{
  memset(in, 0, sizeof *in);
  in->root = in->boot = in->esp = in->default_kernel = -1;
  in->boot_prefix = "/boot";
  in->format = im->fmt->name;
  in->virtual_size = im->size;
  if (disk_init(&in->disk, im, e) < 0)
    return -1;
  /* A hostile image must not make the inspector read without end. */
  in->disk.read_limit = 256ull << 20;
  if (part_read(&in->disk, &in->pt, e) < 0)
    return -1;
  if (in->pt.kind == PT_NONE) {
    if (inspect_volume(in, NULL, 0, im->size, e) < 0)
      return -1;
  } else {
    for (size_t i = 0; i < in->pt.n; i++) {
      const struct partition *p = &in->pt.v[i];
      if (p->mbr_type == 0x05 || p->mbr_type == 0x0f || p->mbr_type == 0x85)
        continue; /* the extended container itself */
      if (inspect_volume(in, p, p->start, p->size, e) < 0)
        return -1;
      struct inspect_volume *v = &in->vol[in->nvol - 1];
      if (part_is_esp(p) && in->esp < 0 && v->mounted)
        in->esp = (int)(in->nvol - 1);
    }
  }
  inspect_find_root(in);
  if (inspect_os(in, e) < 0)
    return -1;
  if (inspect_boot(in, e) < 0)
    return -1;
  inspect_judge(in);
  return 0;
}

void inspect_free(struct inspection *in)
{
  for (size_t i = 0; i < in->nvol; i++)
    if (in->vol[i].mounted)
      fs_close(&in->vol[i].fs);
  part_free(&in->pt);
  disk_free(&in->disk);
}
