/* cli.h - what the command files share: option parsing, errors, output. */
#ifndef AMIPORT_CLI_H
#define AMIPORT_CLI_H

#include <signal.h>
#include <stdbool.h>

#include "aws.h"
#include "image.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };
enum output { OUTPUT_HUMAN, OUTPUT_JSON };

extern volatile sig_atomic_t cli_interrupted;

/* The options every command that talks to AWS takes. */
#define AWS_LONGOPTS                                   \
  { "region", required_argument, NULL, 0x100 },        \
  { "profile", required_argument, NULL, 0x101 },       \
  { "endpoint-url", required_argument, NULL, 0x102 }
#define AWS_HELP                                                                        \
  "      --region REGION       AWS region (else AWS_REGION, AWS_DEFAULT_REGION, the\n"  \
  "                            profile's region, the instance's region)\n"             \
  "      --profile NAME        profile in ~/.aws/config and ~/.aws/credentials\n"      \
  "      --endpoint-url URL    send every AWS request to URL (else AWS_ENDPOINT_URL_EBS,\n" \
  "                            AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL, the regional one)\n"
/* Takes option c if it is one of AWS_LONGOPTS (returns 1), else 0. */
int cli_aws_option(int c, const char *arg, struct aws_opts *ao);

/* The options every command that reads an image takes, to name its format,
 * say what the image may make it open, and reach an EBS snapshot. */
#define IMAGE_LONGOPTS                                      \
  { "format", required_argument, NULL, 'f' },              \
  { "allow-backing", no_argument, NULL, 'B' },             \
  { "allow-extent-paths", no_argument, NULL, 'E' },        \
  { "disk", required_argument, NULL, 'k' },                \
  AWS_LONGOPTS
#define IMAGE_HELP                                                                      \
  "  -f, --format FMT          read the image as FMT instead of probing it\n"           \
  "      --allow-backing       follow backing files the image names (qcow2, VHD)\n"     \
  "      --allow-extent-paths  let a VMDK descriptor name extents outside its folder\n" \
  "      --disk N              OVA: read its Nth disk (1 = the first, the default)\n"   \
  "  An IMAGE named ebs:snap-... (or snap-...) is an EBS snapshot, read in place\n"    \
  "  through the EBS direct API; ami-... is that AMI's root volume. For those:\n"      \
  AWS_HELP
#define IMAGE_USAGE "[-f FMT] [--allow-backing] [--allow-extent-paths] [--disk N]"

/* The options of the commands that read a bundle as an IMAGE. */
#define BUNDLE_SOURCE_LONGOPTS                              \
  { "privatekey", required_argument, NULL, 0x110 },        \
  { "cert", required_argument, NULL, 0x111 }
#define BUNDLE_SOURCE_HELP                                                              \
  "  An IMAGE named PATH.manifest.xml or s3://BUCKET/PREFIX.manifest.xml is an\n"      \
  "  instance-store bundle, read as a stream: each part's SHA-1 and the manifest's\n"  \
  "  signature and digest are checked.\n"                                               \
  "      --privatekey KEY      the PEM private key the bundle was made for\n"          \
  "      --cert CERT           check the manifest's signature with CERT (default: the\n" \
  "                            public half of KEY)\n"

struct image_args {
  const char *format;
  const char *privatekey, *cert; /* bundles */
  struct open_opts open;
  struct aws_opts aws;
};

/* Takes option c if it is one of IMAGE_LONGOPTS: 0 taken, -1 an unknown
 * option or a bad value (reported as a usage error). */
int cli_image_option(const char *cmd, int c, const char *arg, struct image_args *ia);

/* Parses the options of a command that reads one IMAGE and prints what it
 * finds (IMAGE_LONGOPTS, BUNDLE_SOURCE_LONGOPTS, --output, --help): -1 to
 * go on with the IMAGE at argv[optind], else the exit code. */
int cli_image_command(const char *cmd, const char *help, int argc, char **argv,
                      struct image_args *ia, enum output *out);

/* Opens path as the options say: a file, or an EBS snapshot (ebs:snap-...,
 * snap-...) or an AMI's root volume (ami-...). */
struct img *cli_open_image(const char *path, const struct image_args *ia, struct error *e);

/* A bundle's manifest named as an IMAGE (PATH.manifest.xml, s3://...). */
bool cli_is_bundle(const char *path);
struct img *cli_open_bundle(const char *path, const struct image_args *ia, struct error *e);
/* A bundle's instance-store volumes (ephemeralN), to stay mapped where its
 * manifest maps them when it becomes an EBS-backed AMI; returns how many. */
#define CLI_DEVICE_MAX 80
struct manifest;
struct ec2_disk;
size_t cli_bundle_ephemerals(const struct manifest *m, struct ec2_disk *eph /* [IMPORT_MAX_EXTRA] */,
                             char (*dev)[CLI_DEVICE_MAX] /* [IMPORT_MAX_EXTRA] */);
/* A sequential source (a bundle) copied whole to an unlinked file under
 * $TMPDIR, opened as raw, for the commands that read anywhere. */
struct img *cli_spool(struct img *src, bool progress, struct error *e);

/* Prints "amiport: CMD: message" and a hint to --help; returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the error; returns EXIT_USAGE for usage errors, else EXIT_FAIL. */
int cli_fail(const struct error *e);
int cli_parse_output(const char *cmd, const char *arg, enum output *out);
/* Installs SIGINT/SIGTERM handlers that set cli_interrupted. */
void cli_catch_signals(void);
/* "1.5 GiB" */
const char *cli_human_size(uint64_t n, char buf[32]);

/* --bucket BUCKET[/PREFIX] (an s3:// in front is dropped) into bucket and
 * prefix (no leading or trailing '/'), both malloc'd; else a usage error
 * for cmd (EXIT_USAGE). */
int cli_s3_target(const char *cmd, const char *arg, char **bucket, char **prefix);
/* The canned ACLs --acl takes, and "none"; NULL-terminated. */
extern const char *const cli_s3_acls[];

int cmd_info(int argc, char **argv);
/* info of ami-... or snap-...: what the service says of it (info_aws.c). */
int cli_info_aws(const char *id, const struct aws_opts *ao, enum output out);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_register(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_unbundle(int argc, char **argv);
int cmd_upload_bundle(int argc, char **argv);
int cmd_plan(int argc, char **argv);
/* plan submit (plan_submit.c) */
int cli_plan_submit(int argc, char **argv);

#endif
