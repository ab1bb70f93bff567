/* plan.c - reads a migration plan (JSON Lines) and validates every line.
 *
 * One JSON object a line: name, disks, ami_name, and optionally
 * description, tags and options (import options, spelt as the command
 * line's without the dashes: boot_mode, sparse, volume_type...). Blank
 * lines are skipped. Unknown fields are errors: a typo in an option would
 * otherwise import with a default the plan did not mean. */
#include "ec2.h"
#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_MAX_BYTES (64u << 20)

struct docs {
  json_object **v;
  size_t n;
};

/* "PLAN:LINE: field 'F'" in front of what is wrong */
#define LERR(e, path, ln, fmt, ...) \
  error_set(e, ERR_FORMAT, "%s:%u: " fmt, path, ln, __VA_ARGS__)

/* A line's name names its ledger file (LOC/NAME.json) and its state: a
 * plain file name. */
static bool good_name(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > PLAN_NAME_MAX || s[0] == '.' || s[0] == '-')
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
      return false;
  return true;
}

/* RegisterImage's rule: 3 to 128 of letters, digits and ()[] ./-'@_ */
static bool good_ami_name(const char *s)
{
  size_t n = strlen(s);
  if (n < 3 || n > 128)
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("()[] ./-'@_", *s))
      return false;
  return true;
}

static int get_string(json_object *v, const char *path, unsigned ln, const char *field,
                      const char **out, struct error *e)
{
  if (!json_object_is_type(v, json_type_string))
    return LERR(e, path, ln, "field '%s': %s is not a string", field,
                json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
  *out = json_object_get_string(v);
  if (strlen(*out) != (size_t)json_object_get_string_len(v))
    return LERR(e, path, ln, "field '%s': the string holds a NUL byte", field);
  return 0;
}

static int get_bool(json_object *v, const char *path, unsigned ln, const char *field, bool *out,
                    struct error *e)
{
  if (!json_object_is_type(v, json_type_boolean))
    return LERR(e, path, ln, "field '%s': %s is not true or false", field,
                json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
  *out = json_object_get_boolean(v);
  return 0;
}

static int get_uint(json_object *v, const char *path, unsigned ln, const char *field, long lo,
                    long hi, long *out, struct error *e)
{
  if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < lo ||
      json_object_get_int64(v) > hi)
    return LERR(e, path, ln, "field '%s': %s is not a whole number from %ld to %ld", field,
                json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), lo, hi);
  *out = (long)json_object_get_int64(v);
  return 0;
}

static int choice(json_object *v, const char *path, unsigned ln, const char *field,
                  const char *const *set, const char *list, const char **out, struct error *e)
{
  if (get_string(v, path, ln, field, out, e) < 0)
    return -1;
  if (!ec2_one_of(*out, set))
    return LERR(e, path, ln, "field '%s': '%s' is not one of %s", field, *out, list);
  return 0;
}

static int parse_options(json_object *o, const char *path, unsigned ln, struct plan_options *po,
                         struct error *e)
{
  static const char *const sparse[] = { "none", "holes", "zeros", NULL };
  static const char *const imds[] = { "v2.0", "none", NULL };
  static const char *const tpm[] = { "v2.0", NULL };
  if (!json_object_is_type(o, json_type_object))
    return LERR(e, path, ln, "field 'options': %s is not an object",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_object_foreach(o, k, v) {
    char f[96];
    snprintf(f, sizeof f, "options.%.80s", k);
    const char *s;
    long n = 0;
    bool b = false;
    int rc = 0;
    if (strcmp(k, "arch") == 0)
      rc = choice(v, path, ln, f, ec2_archs, "x86_64 arm64 i386", &po->arch, e);
    else if (strcmp(k, "boot_mode") == 0)
      rc = choice(v, path, ln, f, ec2_boot_modes, "legacy-bios uefi uefi-preferred", &po->boot_mode, e);
    else if (strcmp(k, "volume_type") == 0)
      rc = choice(v, path, ln, f, ec2_volume_types, "gp3 gp2 io1 io2 st1 sc1 standard", &po->volume_type, e);
    else if (strcmp(k, "imds_support") == 0)
      rc = choice(v, path, ln, f, imds, "v2.0 none", &po->imds_support, e);
    else if (strcmp(k, "tpm_support") == 0)
      rc = choice(v, path, ln, f, tpm, "v2.0", &po->tpm_support, e);
    else if (strcmp(k, "sparse") == 0) {
      if ((rc = choice(v, path, ln, f, sparse, "none holes zeros", &s, e)) == 0)
        po->sparse = strcmp(s, "none") == 0 ? EBS_SPARSE_NONE
                     : strcmp(s, "holes") == 0 ? EBS_SPARSE_HOLES : EBS_SPARSE_ZEROS;
    } else if (strcmp(k, "root_device") == 0) {
      if ((rc = get_string(v, path, ln, f, &po->root_device, e)) == 0 &&
          (strncmp(po->root_device, "/dev/", 5) != 0 || !po->root_device[5] ||
           strlen(po->root_device) > 31))
        rc = LERR(e, path, ln, "field '%s': '%s' is not a device name such as /dev/xvda", f,
                  po->root_device);
    } else if (strcmp(k, "kms_key_id") == 0) {
      if ((rc = get_string(v, path, ln, f, &po->kms_key_id, e)) == 0)
        po->encrypted = true;
    } else if (strcmp(k, "ena") == 0) {
      if ((rc = get_bool(v, path, ln, f, &b, e)) == 0)
        po->ena = b;
    } else if (strcmp(k, "encrypted") == 0)
      rc = get_bool(v, path, ln, f, &po->encrypted, e);
    else if (strcmp(k, "keep_volumes") == 0)
      rc = get_bool(v, path, ln, f, &po->keep_volumes, e);
    else if (strcmp(k, "force") == 0)
      rc = get_bool(v, path, ln, f, &po->force, e);
    else if (strcmp(k, "no_register") == 0)
      rc = get_bool(v, path, ln, f, &po->no_register, e);
    else if (strcmp(k, "jobs") == 0) {
      if ((rc = get_uint(v, path, ln, f, 1, 1024, &n, e)) == 0)
        po->jobs = (unsigned)n;
    } else if (strcmp(k, "max_rate") == 0) {
      if ((rc = get_uint(v, path, ln, f, 0, 1000000, &n, e)) == 0)
        po->max_rate = (double)n;
    } else if (strcmp(k, "timeout") == 0) {
      if ((rc = get_uint(v, path, ln, f, 10, 4320, &n, e)) == 0)
        po->timeout_min = (unsigned)n;
    } else if (strcmp(k, "root_disk") == 0) {
      if ((rc = get_uint(v, path, ln, f, 1, PLAN_MAX_DISKS, &n, e)) == 0)
        po->root_disk = (unsigned)n;
    } else
      rc = LERR(e, path, ln, "field '%s': no such import option (arch, boot_mode, ena, "
                "encrypted, force, imds_support, jobs, keep_volumes, kms_key_id, max_rate, "
                "no_register, root_device, root_disk, sparse, timeout, tpm_support, "
                "volume_type)", f);
    if (rc < 0)
      return -1;
  }
  if (po->tpm_support && po->boot_mode && strcmp(po->boot_mode, "legacy-bios") == 0)
    return LERR(e, path, ln, "field 'options.tpm_support': '%s' needs a UEFI boot mode, not "
                "'legacy-bios'", po->tpm_support);
  return 0;
}

static int parse_tags(json_object *o, const char *path, unsigned ln, struct plan_line *l,
                      struct error *e)
{
  if (!json_object_is_type(o, json_type_object))
    return LERR(e, path, ln, "field 'tags': %s is not an object of KEY: VALUE",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_object_foreach(o, k, v) {
    char f[96];
    snprintf(f, sizeof f, "tags.%.80s", k);
    const char *s;
    if (!*k || strlen(k) > 128)
      return LERR(e, path, ln, "field 'tags': key '%.140s' is not 1 to 128 characters", k);
    if (strncmp(k, "amiport:", 8) == 0)
      return LERR(e, path, ln, "field '%s': the amiport: keys are the plan's own", f);
    if (l->ntags == PLAN_MAX_TAGS)
      return LERR(e, path, ln, "field 'tags': more than %d tags", PLAN_MAX_TAGS);
    if (get_string(v, path, ln, f, &s, e) < 0)
      return -1;
    if (strlen(s) > 256)
      return LERR(e, path, ln, "field '%s': the value is longer than 256 characters", f);
    l->tags[l->ntags++] = (struct aws_tag){ k, s };
  }
  return 0;
}

static int parse_disks(json_object *a, const char *path, unsigned ln, struct plan_line *l,
                       struct error *e)
{
  if (!json_object_is_type(a, json_type_array))
    return LERR(e, path, ln, "field 'disks': %s is not an array of paths",
                json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
  size_t n = json_object_array_length(a);
  if (n == 0)
    return LERR(e, path, ln, "field 'disks': %s is empty (the first disk is the root)", "[]");
  if (n > PLAN_MAX_DISKS)
    return LERR(e, path, ln, "field 'disks': %zu disks; a VM takes at most %d", n, PLAN_MAX_DISKS);
  for (size_t i = 0; i < n; i++) {
    char f[32];
    snprintf(f, sizeof f, "disks[%zu]", i);
    if (get_string(json_object_array_get_idx(a, i), path, ln, f, &l->disks[i], e) < 0)
      return -1;
    if (!*l->disks[i])
      return LERR(e, path, ln, "field '%s': '' is not a path", f);
    for (size_t o = 0; o < i; o++)
      if (strcmp(l->disks[o], l->disks[i]) == 0)
        return LERR(e, path, ln, "field '%s': '%s' is disks[%zu] already", f, l->disks[i], o);
  }
  l->ndisks = n;
  return 0;
}

static int parse_line(json_object *o, const char *path, unsigned ln, struct plan_line *l,
                      struct error *e)
{
  *l = (struct plan_line){ .lineno = ln, .opt = { .ena = -1, .sparse = -1, .max_rate = -1 } };
  if (!json_object_is_type(o, json_type_object))
    return error_set(e, ERR_FORMAT, "%s:%u: a line must be a JSON object, not %s", path, ln,
                     json_type_to_name(json_object_get_type(o)));
  bool has_disks = false;
  json_object_object_foreach(o, k, v) {
    int rc;
    if (strcmp(k, "name") == 0) {
      if ((rc = get_string(v, path, ln, k, &l->name, e)) == 0 && !good_name(l->name))
        rc = LERR(e, path, ln, "field 'name': '%s' must be 1 to %d letters, digits, '.', '_' "
                  "or '-', not starting with '.' or '-' (it names LOC/NAME.json)", l->name,
                  PLAN_NAME_MAX);
    } else if (strcmp(k, "ami_name") == 0) {
      if ((rc = get_string(v, path, ln, k, &l->ami_name, e)) == 0 && !good_ami_name(l->ami_name))
        rc = LERR(e, path, ln, "field 'ami_name': '%s' must be 3 to 128 letters, digits, "
                  "spaces or ()[]./-'@_", l->ami_name);
    } else if (strcmp(k, "description") == 0) {
      if ((rc = get_string(v, path, ln, k, &l->description, e)) == 0 &&
          strlen(l->description) > 255)
        rc = LERR(e, path, ln, "field 'description': %zu characters; at most 255",
                  strlen(l->description));
    } else if (strcmp(k, "disks") == 0) {
      rc = parse_disks(v, path, ln, l, e);
      has_disks = true;
    } else if (strcmp(k, "tags") == 0)
      rc = parse_tags(v, path, ln, l, e);
    else if (strcmp(k, "options") == 0)
      rc = parse_options(v, path, ln, &l->opt, e);
    else
      rc = LERR(e, path, ln, "field '%.80s': unknown (name, disks, ami_name, description, tags, "
                "options)", k);
    if (rc < 0)
      return -1;
  }
  if (!l->name)
    return LERR(e, path, ln, "field 'name': %s", "missing");
  if (!has_disks)
    return LERR(e, path, ln, "field 'disks': missing (line '%s')", l->name);
  if (!l->ami_name && !l->opt.no_register)
    return LERR(e, path, ln, "field 'ami_name': missing (line '%s')", l->name);
  return 0;
}

static void plan_name(const char *path, char *out, size_t len)
{
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  size_t n = strlen(b);
  if (n > 6 && strcmp(b + n - 6, ".jsonl") == 0)
    n -= 6;
  else if (n > 5 && strcmp(b + n - 5, ".json") == 0)
    n -= 5;
  snprintf(out, len, "%.*s", (int)n, b);
}

int plan_parse(const char *buf, size_t len, const char *path, struct plan *p, struct error *e)
{
  *p = (struct plan){ 0 };
  struct docs *d = calloc(1, sizeof *d);
  if (!d || !(p->path = strdup(path)))
    return free(d), error_set(e, ERR_NOMEM, "out of memory");
  p->docs = d;
  plan_name(path, p->name, sizeof p->name);
  uint8_t dg[32];
  ebs_sha256(buf, len, dg);
  for (int i = 0; i < 32; i++)
    sprintf(p->digest + 2 * i, "%02x", dg[i]);
  size_t cap = 0;
  unsigned ln = 0;
  json_tokener *tok = json_tokener_new();
  if (!tok)
    return plan_free(p), error_set(e, ERR_NOMEM, "out of memory");
  for (size_t off = 0; off < len; ) {
    const char *nl = memchr(buf + off, '\n', len - off);
    size_t end = nl ? (size_t)(nl - buf) : len, n = end - off;
    const char *s = buf + off;
    off = nl ? end + 1 : len;
    ln++;
    while (n && isspace((unsigned char)s[n - 1]))
      n--;
    while (n && isspace((unsigned char)*s))
      s++, n--;
    if (!n)
      continue;
    if (memchr(s, 0, n)) {
      error_set(e, ERR_FORMAT, "%s:%u: the line holds a NUL byte", path, ln);
      goto fail;
    }
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, s, (int)(n > 0x7fffffff ? 0x7fffffff : n));
    enum json_tokener_error je = json_tokener_get_error(tok);
    if (!o || je != json_tokener_success || json_tokener_get_parse_end(tok) != n) {
      error_set(e, ERR_FORMAT, "%s:%u: not one JSON object (%s at byte %zu)", path, ln,
                je == json_tokener_continue ? "the line ends inside it"
                : je != json_tokener_success ? json_tokener_error_desc(je)
                                             : "more text after it",
                json_tokener_get_parse_end(tok) + 1);
      json_object_put(o);
      goto fail;
    }
    if (p->n == cap) {
      cap = cap ? cap * 2 : 16;
      json_object **nv = realloc(d->v, cap * sizeof *nv);
      struct plan_line *nl2 = realloc(p->lines, cap * sizeof *nl2);
      if (nv)
        d->v = nv;
      if (nl2)
        p->lines = nl2;
      if (!nv || !nl2) {
        json_object_put(o);
        error_set(e, ERR_NOMEM, "out of memory");
        goto fail;
      }
    }
    d->v[d->n++] = o;
    if (parse_line(o, path, ln, &p->lines[p->n], e) < 0)
      goto fail;
    const struct plan_line *dup = plan_find(p, p->lines[p->n].name);
    if (dup) {
      error_set(e, ERR_FORMAT, "%s:%u: field 'name': '%s' is line %u's name already", path, ln,
                dup->name, dup->lineno);
      goto fail;
    }
    p->n++;
  }
  json_tokener_free(tok);
  if (p->n == 0) {
    error_set(e, ERR_FORMAT, "%s: the plan has no lines", path);
    plan_free(p);
    return -1;
  }
  return 0;
fail:
  json_tokener_free(tok);
  plan_free(p);
  return -1;
}

int plan_load(const char *path, struct plan *p, struct error *e)
{
  *p = (struct plan){ 0 };
  FILE *f = fopen(path, "rb");
  if (!f)
    return error_errno(e, "cannot open the plan %s", path);
  char *buf = malloc(PLAN_MAX_BYTES + 1);
  size_t n = buf ? fread(buf, 1, PLAN_MAX_BYTES + 1, f) : 0;
  bool err = ferror(f);
  fclose(f);
  if (!buf)
    return error_set(e, ERR_NOMEM, "out of memory");
  int rc;
  if (err)
    rc = error_set(e, ERR_IO, "%s: read error", path);
  else if (n > PLAN_MAX_BYTES)
    rc = error_set(e, ERR_FORMAT, "%s: larger than %u MiB", path, PLAN_MAX_BYTES >> 20);
  else
    rc = plan_parse(buf, n, path, p, e);
  free(buf);
  return rc;
}

const struct plan_line *plan_find(const struct plan *p, const char *name)
{
  for (size_t i = 0; i < p->n; i++)
    if (strcmp(p->lines[i].name, name) == 0)
      return &p->lines[i];
  return NULL;
}

void plan_free(struct plan *p)
{
  struct docs *d = p->docs;
  if (d) {
    for (size_t i = 0; i < d->n; i++)
      json_object_put(d->v[i]);
    free(d->v);
    free(d);
  }
  free(p->lines);
  free(p->path);
  *p = (struct plan){ 0 };
}
