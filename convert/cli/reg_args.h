/* reg_args.h - what import and register share: the options that describe
 * the AMI (reg_args.c). */
#ifndef AMIPORT_CLI_REG_ARGS_H
#define AMIPORT_CLI_REG_ARGS_H

#include "cli.h"
#include "ec2.h"

#include <json-c/json.h>

#define MAX_TAGS 50 /* EC2's limit per resource */

/* What register and import both take: how the AMI is described. */
#define REGISTER_LONGOPTS                                   \
  { "name", required_argument, NULL, 0x200 },              \
  { "description", required_argument, NULL, 0x201 },      \
  { "arch", required_argument, NULL, 0x202 },              \
  { "boot-mode", required_argument, NULL, 0x203 },         \
  { "ena", no_argument, NULL, 0x204 },                     \
  { "no-ena", no_argument, NULL, 0x205 },                  \
  { "imds-support", required_argument, NULL, 0x206 },      \
  { "tpm-support", required_argument, NULL, 0x207 },       \
  { "volume-type", required_argument, NULL, 0x208 },       \
  { "root-device", required_argument, NULL, 0x209 },       \
  { "tag", required_argument, NULL, 0x20a },               \
  { "keep-volumes", no_argument, NULL, 0x20b },            \
  { "output", required_argument, NULL, 0x20c },           \
  { "uefi-data", required_argument, NULL, 0x20d }
#define REGISTER_HELP                                                                     \
  "      --name NAME           the AMI's name (required unless --no-register)\n"          \
  "      --description TEXT    the AMI's (and snapshot's) description\n"                  \
  "      --arch ARCH           x86_64, arm64 or i386 (default: what check found)\n"       \
  "      --boot-mode MODE      legacy-bios, uefi or uefi-preferred (default: what check\n" \
  "                            found: both loaders present gives uefi-preferred)\n"       \
  "      --ena, --no-ena       EnaSupport (and SriovNetSupport=simple); default: whether\n" \
  "                            the guest's kernel has the ENA driver\n"                   \
  "      --imds-support V      v2.0 (the default: IMDSv2 only) or none\n"                 \
  "      --tpm-support V       v2.0 for an NitroTPM (UEFI only)\n"                        \
  "      --volume-type TYPE    gp3 (default), gp2, io1, io2, st1, sc1, standard\n"        \
  "      --root-device DEV     root device name (default /dev/xvda)\n"                    \
  "      --tag KEY=VALUE       a tag on the snapshot and the image (repeatable)\n"        \
  "      --keep-volumes        volumes outlive their instances (DeleteOnTermination=false)\n" \
  "      --output FMT          human (default) or json\n"                                 \
  "      --uefi-data FILE      the AMI's UEFI variables: FILE holds the base64 text\n"     \
  "                            RegisterImage takes as UefiData (as python-uefivars\n"     \
  "                            writes it, or 'amiport export' of an AMI; at most 64000\n"  \
  "                            characters); needs a uefi or uefi-preferred boot mode\n"

struct reg_args {
  struct ec2_register r;
  int ena; /* -1: derive */
  struct aws_tag tags[MAX_TAGS];
  char *tagbuf[MAX_TAGS];
  char *uefi_buf;
  enum output out;
};

/* Takes option c if it is one of REGISTER_LONGOPTS: 1 taken, 0 not one, -1 bad. */
int cli_reg_option(const char *cmd, int c, const char *arg, struct reg_args *ra);
/* --uefi-data with a boot mode that cannot use it: a usage error. */
int cli_check_uefi_boot_mode(const char *cmd, const struct reg_args *ra);
void cli_reg_free(struct reg_args *ra);
/* Prints j, pretty, and frees it. */
void cli_print_json(json_object *j);

#endif
