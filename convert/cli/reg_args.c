/* reg_args.c - the options import and register share (reg_args.h). */
#include "reg_args.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads FILE for --uefi-data: base64 text of at most EC2_UEFI_DATA_MAX
 * characters, trailing white space dropped. */
static int read_uefi_data(const char *cmd, const char *path, struct reg_args *ra)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return cli_usage(cmd, "--uefi-data %s: %s", path, strerror(errno)), -1;
  size_t cap = EC2_UEFI_DATA_MAX + 4096;
  char *buf = malloc(cap + 1);
  size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
  bool err = ferror(f);
  fclose(f);
  if (!buf)
    return cli_usage(cmd, "out of memory"), -1;
  free(ra->uefi_buf);
  ra->uefi_buf = buf;
  if (err)
    return cli_usage(cmd, "--uefi-data %s: read error", path), -1;
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    n--;
  if (n > EC2_UEFI_DATA_MAX)
    return cli_usage(cmd, "--uefi-data %s: more than %d characters (RegisterImage's limit)", path,
                     EC2_UEFI_DATA_MAX), -1;
  if (n == 0)
    return cli_usage(cmd, "--uefi-data %s: the file is empty", path), -1;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)buf[i];
    bool pad = ch == '=' && i + 2 >= n && (i + 1 == n || buf[i + 1] == '=');
    if (!(isalnum(ch) || ch == '+' || ch == '/' || pad))
      return cli_usage(cmd, "--uefi-data %s: byte %zu is 0x%02x, not base64 (the file must hold "
                            "the base64 text of the UEFI variable store)", path, i, ch), -1;
  }
  if (n % 4)
    return cli_usage(cmd, "--uefi-data %s: %zu characters of base64 is not a multiple of 4", path,
                     n), -1;
  buf[n] = 0;
  ra->r.uefi_data = buf;
  return 0;
}

/* --uefi-data with a boot mode that cannot use it: a usage error. */
int cli_check_uefi_boot_mode(const char *cmd, const struct reg_args *ra)
{
  const char *m = ra->r.boot_mode;
  if (ra->r.uefi_data && (!m || strcmp(m, "legacy-bios") == 0))
    return cli_usage(cmd, "--uefi-data needs a uefi or uefi-preferred boot mode (%s); pass "
                          "--boot-mode", m ? "the boot mode is legacy-bios" : "none is given");
  return 0;
}

/* Takes option c if it is one of REGISTER_LONGOPTS: 1 taken, 0 not one, -1 bad. */
int cli_reg_option(const char *cmd, int c, const char *arg, struct reg_args *ra)
{
  switch (c) {
  case 0x200: ra->r.name = arg; return 1;
  case 0x201: ra->r.description = arg; return 1;
  case 0x202:
    if (!ec2_one_of(arg, ec2_archs))
      return cli_usage(cmd, "--arch must be x86_64, arm64 or i386, not '%s'", arg), -1;
    ra->r.arch = arg;
    return 1;
  case 0x203:
    if (!ec2_one_of(arg, ec2_boot_modes))
      return cli_usage(cmd, "--boot-mode must be legacy-bios, uefi or uefi-preferred, not '%s'", arg), -1;
    ra->r.boot_mode = arg;
    return 1;
  case 0x204: ra->ena = 1; return 1;
  case 0x205: ra->ena = 0; return 1;
  case 0x206:
    if (strcmp(arg, "v2.0") && strcmp(arg, "none"))
      return cli_usage(cmd, "--imds-support must be v2.0 or none, not '%s'", arg), -1;
    ra->r.imds_support = strcmp(arg, "none") ? arg : NULL;
    return 1;
  case 0x207:
    if (strcmp(arg, "v2.0"))
      return cli_usage(cmd, "--tpm-support must be v2.0, not '%s'", arg), -1;
    ra->r.tpm_support = arg;
    return 1;
  case 0x208:
    if (!ec2_one_of(arg, ec2_volume_types))
      return cli_usage(cmd, "--volume-type must be one of gp3 gp2 io1 io2 st1 sc1 standard, not '%s'", arg), -1;
    ra->r.volume_type = arg;
    return 1;
  case 0x209:
    if (strncmp(arg, "/dev/", 5) != 0)
      return cli_usage(cmd, "--root-device must be a device name such as /dev/xvda, not '%s'", arg), -1;
    ra->r.root_device = arg;
    return 1;
  case 0x20a: {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
      return cli_usage(cmd, "--tag must be KEY=VALUE, not '%s'", arg), -1;
    if (ra->r.ntags == MAX_TAGS)
      return cli_usage(cmd, "at most %d tags", MAX_TAGS), -1;
    char *k = strndup(arg, (size_t)(eq - arg));
    ra->tagbuf[ra->r.ntags] = k;
    ra->tags[ra->r.ntags++] = (struct aws_tag){ k, eq + 1 };
    ra->r.tags = ra->tags;
    return 1;
  }
  case 0x20b: ra->r.keep_volumes = true; return 1;
  case 0x20c: return cli_parse_output(cmd, arg, &ra->out) ? -1 : 1;
  case 0x20d: return read_uefi_data(cmd, arg, ra) < 0 ? -1 : 1;
  default: return 0;
  }
}

void cli_reg_free(struct reg_args *ra)
{
  for (size_t i = 0; i < ra->r.ntags; i++)
    free(ra->tagbuf[i]);
  free(ra->uefi_buf);
}

void cli_print_json(json_object *j)
{
  puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(j);
}

