/* guestfs.c - the deep path (`check --deep`): libguestfs starts its
 * appliance read-only on the image and runs its own inspection, which sees
 * what the native path does not read (LVM logical volumes, btrfs
 * subvolumes, Windows). Its answer is added to the report and fills in the
 * OS and architecture when the native path found no root. The appliance
 * takes seconds to start, so nothing else waits for it. */
#include "inspect.h"

#include <guestfs.h>
#include <stdio.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static void free_strings(char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

/* A NULL-terminated list of key, value, key, value... as an object. */
static struct json_object *pairs(char **v)
{
  struct json_object *o = json_object_new_object();
  for (size_t i = 0; v && v[i] && v[i + 1]; i += 2)
    json_object_object_add(o, v[i], json_object_new_string(v[i + 1]));
  return o;
}

static struct json_object *take_string(char *s)
{
  struct json_object *o = s ? json_object_new_string(s) : NULL;
  free(s);
  return o;
}

int inspect_deep(struct img *im, struct inspection *in, struct json_object **out,
                 struct error *e)
{
  *out = NULL;
  if (im->fd < 0 || strcmp(im->fmt->name, "ova") == 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: --deep needs an image qemu can open directly "
                     "(not %s); convert it first", im->path, im->fmt->name);
  guestfs_h *g = guestfs_create();
  if (!g)
    return error_set(e, ERR_NOMEM, "libguestfs: cannot create a handle");
  int ret = -1;
  char **roots = NULL, **fss = NULL;
  guestfs_set_error_handler(g, NULL, NULL); /* errors are taken from guestfs_last_error */
  if (guestfs_add_drive_opts(g, im->path, GUESTFS_ADD_DRIVE_OPTS_FORMAT, im->fmt->name,
                             GUESTFS_ADD_DRIVE_OPTS_READONLY, 1, -1) < 0 ||
      guestfs_launch(g) < 0 || !(fss = guestfs_list_filesystems(g)) ||
      !(roots = guestfs_inspect_os(g))) {
    error_set(e, ERR_IO, "%s: libguestfs: %s", im->path,
              guestfs_last_error(g) ? guestfs_last_error(g) : "failed");
    goto out;
  }
  struct json_object *d = json_object_new_object();
  json_object_object_add(d, "filesystems", pairs(fss));
  struct json_object *ra = json_object_new_array();
  for (size_t i = 0; roots[i]; i++) {
    struct json_object *r = json_object_new_object();
    const char *root = roots[i];
    json_object_object_add(r, "root", json_object_new_string(root));
    json_object_object_add(r, "type", take_string(guestfs_inspect_get_type(g, root)));
    json_object_object_add(r, "distro", take_string(guestfs_inspect_get_distro(g, root)));
    json_object_object_add(r, "product_name", take_string(guestfs_inspect_get_product_name(g, root)));
    json_object_object_add(r, "arch", take_string(guestfs_inspect_get_arch(g, root)));
    json_object_object_add(r, "major_version",
                           json_object_new_int(guestfs_inspect_get_major_version(g, root)));
    json_object_object_add(r, "minor_version",
                           json_object_new_int(guestfs_inspect_get_minor_version(g, root)));
    char **mp = guestfs_inspect_get_mountpoints(g, root);
    json_object_object_add(r, "mountpoints", pairs(mp));
    free_strings(mp);
    json_object_array_add(ra, r);
  }
  json_object_object_add(d, "roots", ra);

  /* Fill in what the native path could not see. */
  if (in->root < 0 && roots[0]) {
    struct json_object *r0 = json_object_array_get_idx(ra, 0), *v;
    if (json_object_object_get_ex(r0, "distro", &v) && v)
      snprintf(in->os_id, sizeof in->os_id, "%s", json_object_get_string(v));
    if (json_object_object_get_ex(r0, "product_name", &v) && v)
      snprintf(in->os_pretty, sizeof in->os_pretty, "%s", json_object_get_string(v));
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
                        "and driver checks above are from the native path.", roots[0]);
  }
  *out = d;
  ret = 0;
out:
  free_strings(roots);
  free_strings(fss);
  guestfs_close(g);
  return ret;
}
