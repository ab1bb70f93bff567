/* common.c - helpers shared by the commands. */
#include "cli.h"
#include "ec2.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile sig_atomic_t cli_interrupted;

int cli_usage(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "amiport: %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'amiport %s --help'.\n", cmd);
  return EXIT_USAGE;
}

int cli_image_option(const char *cmd, int c, const char *arg, struct image_args *ia)
{
  switch (c) {
  case 0x100: case 0x101: case 0x102: cli_aws_option(c, arg, &ia->aws); return 0;
  case 'f': ia->format = arg; return 0;
  case 0x110: ia->privatekey = arg; return 0;
  case 0x111: ia->cert = arg; return 0;
  case 'B': ia->open.allow_backing = true; return 0;
  case 'E': ia->open.allow_extent_paths = true; return 0;
  case 'k': {
    char *end;
    long n = strtol(arg, &end, 10);
    if (*end || n < 1 || n > 65535) {
      cli_usage(cmd, "--disk must be 1 to 65535, not '%s'", arg);
      return -1;
    }
    ia->open.disk_index = (unsigned)n;
    return 0;
  }
  default:
    cli_usage(cmd, "unknown option");
    return -1;
  }
}

int cli_image_command(const char *cmd, const char *help, int argc, char **argv,
                      struct image_args *ia, enum output *out)
{
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    BUNDLE_SOURCE_LONGOPTS,
    { "output", required_argument, NULL, 'O' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'O': if (cli_parse_output(cmd, optarg, out)) return EXIT_USAGE; break;
    case 'h': fputs(help, stdout); return EXIT_OK;
    default: if (cli_image_option(cmd, c, optarg, ia) < 0) return EXIT_USAGE; break;
    }
  }
  if (optind + 1 != argc)
    return cli_usage(cmd, "expects one IMAGE");
  return -1;
}

int cli_fail(const struct error *e)
{
  fprintf(stderr, "amiport: %s\n", e->msg[0] ? e->msg : "unknown error");
  return e->code == ERR_USAGE ? EXIT_USAGE : EXIT_FAIL;
}

int cli_parse_output(const char *cmd, const char *arg, enum output *out)
{
  if (strcmp(arg, "human") == 0)
    *out = OUTPUT_HUMAN;
  else if (strcmp(arg, "json") == 0)
    *out = OUTPUT_JSON;
  else
    return cli_usage(cmd, "--output must be human or json, not '%s'", arg);
  return 0;
}

static void on_signal(int sig)
{
  (void)sig;
  cli_interrupted = 1;
}

void cli_catch_signals(void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

const char *cli_human_size(uint64_t n, char buf[32])
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, 32, "%llu B", (unsigned long long)n);
  else
    snprintf(buf, 32, "%.3g %s", v, units[u]);
  return buf;
}

int cli_aws_option(int c, const char *arg, struct aws_opts *ao)
{
  switch (c) {
  case 0x100: ao->region = arg; return 1;
  case 0x101: ao->profile = arg; return 1;
  case 0x102: ao->endpoint_url = arg; return 1;
  default: return 0;
  }
}

struct img *cli_open_image(const char *path, const struct image_args *ia, struct error *e)
{
  if (cli_is_bundle(path) && !ia->format)
    return cli_open_bundle(path, ia, e);
  const char *id = strncmp(path, "ebs:", 4) == 0 ? path + 4 : path;
  if (strncmp(id, "snap-", 5) == 0 && !strchr(id, '/'))
    return ebs_open(&ia->aws, id, ia->open.max_table_bytes, e);
  if (strncmp(path, "ami-", 4) == 0 && !strchr(path, '/')) {
    struct aws_ctx ctx;
    struct ec2_image im;
    struct ec2_image_info *info = malloc(sizeof *info);
    if (!info) {
      error_set(e, ERR_NOMEM, "out of memory");
      return NULL;
    }
    if (aws_ctx_init(&ctx, &ia->aws, e) < 0) {
      free(info);
      return NULL;
    }
    /* an instance-store AMI is its bundle in S3 */
    int rc = ec2_describe_image(&ctx, path, info, e);
    bool store = rc == 0 && strcmp(info->root_device_type, "instance-store") == 0;
    if (rc == 0 && !store)
      rc = ec2_image_volumes(&ctx, path, &im, e);
    aws_ctx_free(&ctx);
    char url[1100];
    snprintf(url, sizeof url, "s3://%s", store ? info->image_location : "");
    free(info);
    if (rc < 0)
      return NULL;
    if (store)
      return cli_open_bundle(url, ia, e);
    for (size_t i = 0; i < im.nvolumes; i++)
      if (strcmp(im.volumes[i].device, im.root_device) == 0)
        return ebs_open(&ia->aws, im.volumes[i].snapshot_id, ia->open.max_table_bytes, e);
    error_set(e, ERR_REMOTE, "%s: no EBS volume is its root device %s", path, im.root_device);
    return NULL;
  }
  return img_open(path, ia->format, &ia->open, e);
}
