/* bundle.c - amiport bundle and amiport unbundle: legacy instance-store
 * bundles in ec2-bundle-image's format (convert/bundle). */
#include "bundle.h"
#include "bundle_s3.h"
#include "cli.h"
#include "ec2.h"
#include "inspect.h"

#include <getopt.h>
#include <json-c/json.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EC2_CERT_HINT                                                                       \
  "EC2's public certificate: AWS publishes it in ec2-ami-tools\n"                          \
  "  (https://s3.amazonaws.com/ec2-downloads/ec2-ami-tools.zip) as\n"                      \
  "  etc/ec2/amitools/cert-ec2.pem (cert-ec2-gov.pem for GovCloud,\n"                       \
  "  cert-ec2-cn-north-1.pem for China); installed, it is\n"                                \
  "  /etc/ec2/amitools/cert-ec2.pem, which amiport uses when present"

#define EC2_CERT_DEFAULT "/etc/ec2/amitools/cert-ec2.pem"

static void bundle_help(void)
{
  printf("Usage: amiport bundle " IMAGE_USAGE "\n"
         "                      --cert USER_CERT.pem --privatekey USER_KEY.pem --user ACCOUNT_ID\n"
         "                      [--ec2cert EC2_CERT.pem] [--arch ARCH] [--kernel AKI] [--ramdisk ARI]\n"
         "                      [--block-device-mapping VIRTUAL=DEVICE,...] [--prefix NAME]\n"
         "                      [--destination DIR | --bucket BUCKET[/PREFIX] [--acl ACL]\n"
         "                       [--register --name NAME [--description TEXT]]]\n"
         "                      [--part-size MiB] [-p] [-j N] [--output FMT] IMAGE\n\n"
         "Packs IMAGE (any format, converted to raw on the fly; an EBS snapshot or an AMI's\n"
         "root volume too) as an instance-store bundle in ec2-bundle-image's format: one tar\n"
         "member (sparse where the image has holes), gzip, AES-128-CBC with a random key and\n"
         "IV, cut into DIR/PREFIX.part.NN, and DIR/PREFIX.manifest.xml (version 2007-10-10)\n"
         "signed with the user's key. One pass, no temporary copy of the image. Prints the\n"
         "manifest's path. Then: amiport upload-bundle, and amiport register --image-location.\n\n"
         "With --bucket nothing is written locally: each part is stored in S3 as\n"
         "BUCKET/PREFIX/NAME.part.NN as soon as it is made (PutObject with its Content-MD5,\n"
         "three at a time, so memory stays near four parts), and NAME.manifest.xml last,\n"
         "once every part is acknowledged. Prints BUCKET/PREFIX/NAME.manifest.xml (and,\n"
         "with --register, the AMI id). An interrupted run is resumed by the same command:\n"
         "the key and IV are kept, wrapped for --cert as in the manifest, in a state file\n"
         "in $XDG_STATE_HOME/amiport (default ~/.local/state/amiport), so the same parts\n"
         "are made again and those the bucket holds with the same size and MD5 are not\n"
         "sent again; the state goes once the manifest is stored. Requests are path-style;\n"
         "S3's endpoint is AWS_ENDPOINT_URL_S3 when set (--endpoint-url would send EBS,\n"
         "EC2 and S3 requests alike to one URL).\n\n"
         IMAGE_HELP
         "  -c, --cert FILE           the user's X.509 certificate (PEM)\n"
         "      --privatekey FILE     the user's RSA private key (PEM), signs the manifest\n"
         "  -u, --user ACCOUNT_ID     the AWS account id (12 digits; dashes are dropped)\n"
         "      --ec2cert FILE        " EC2_CERT_HINT ";\n"
         "                            else set AMIPORT_EC2_CERT\n"
         "  -r, --arch ARCH           x86_64, i386 or arm64 (default: what 'amiport check'\n"
         "                            finds in the guest)\n"
         "      --kernel AKI          kernel id for the manifest (paravirtual images)\n"
         "      --ramdisk ARI         ramdisk id for the manifest\n"
         "  -M, --block-device-mapping VIRTUAL=DEVICE,...\n"
         "                            (default ami=sda1,root=/dev/sda1)\n"
         "      --prefix NAME         name of the image in the bundle, and of its parts and\n"
         "                            manifest (default: the image's file name; for a\n"
         "                            non-raw image with .img for its extension)\n"
         "  -d, --destination DIR     where to write them (default: the current folder)\n"
         "  -b, --bucket BUCKET[/PREFIX]  store them in S3 instead, under PREFIX (an s3://\n"
         "                            in front is ignored); not with --destination\n"
         "      --acl ACL             with --bucket: canned ACL of every object, as\n"
         "                            upload-bundle: aws-exec-read (the default), private,\n"
         "                            ..., or none\n"
         "      --register            with --bucket: then register the bundle as an\n"
         "                            instance-store AMI (its architecture, --kernel and\n"
         "                            --ramdisk, also spelt --kernel-id and --ramdisk-id)\n"
         "      --name NAME           the AMI's name (--register)\n"
         "      --description TEXT    the AMI's description (--register)\n"
         "      --output FMT          human (default) or json: the manifest (its path, or with\n"
         "                            --bucket its location), parts, digest; image_id\n"
         "      --part-size MiB       size of each part, 1 to 256 (default 10, as\n"
         "                            ec2-bundle-image)\n"
         "  -p, --progress            show progress (default when stderr is a terminal)\n"
         "  -j, --jobs N              compression threads (default: one per core)\n"
         "  -h, --help                show this help\n");
}

/* "ami=sda1,root=/dev/sda1" into maps; the count, or -1. */
static int parse_mappings(char *text, struct bundle_mapping *maps)
{
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok || !eq[1] || n == BUNDLE_MAX_MAPPINGS)
      return -1;
    *eq = 0;
    maps[n].virtual_name = tok;
    maps[n].device = eq + 1;
    n++;
  }
  return n;
}

/* The account id without dashes, or NULL when it is not 12 digits. */
static const char *account_id(const char *in, char out[13])
{
  size_t n = 0;
  for (; *in; in++) {
    if (*in == '-')
      continue;
    if (*in < '0' || *in > '9' || n == 12)
      return NULL;
    out[n++] = *in;
  }
  out[n] = 0;
  return n == 12 ? out : NULL;
}

/* The member name: the file's name; for a non-raw image, with .img instead
 * of its extension. */
static void member_name(const char *path, const struct img *im, char *out, size_t cap)
{
  char *copy = strdup(path);
  const char *base = copy ? basename(copy) : "image";
  if (strcmp(im->fmt->name, "raw") == 0) {
    snprintf(out, cap, "%s", base);
  } else {
    const char *dot = strrchr(base, '.');
    int stem = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, cap, "%.*s.img", stem, base);
  }
  free(copy);
}

/* --arch, else what the guest shows. */
static const char *guest_arch(struct img *im, struct error *e)
{
  struct inspection in;
  struct ami_params p = { 0 };
  if (inspect_image(im, &in, e) < 0)
    return NULL;
  inspect_ami_params(&in, &p);
  const char *arch = p.arch;
  inspect_free(&in);
  if (!arch)
    error_set(e, ERR_USAGE, "%s: cannot tell the guest's architecture (no kernel or boot loader "
              "found); give --arch", im->path);
  return arch;
}

/* bundle --bucket: the bundle streamed into S3, then registered if asked;
 * prints the result. An exit status. */
static int bundle_bucket(struct img *src, struct bundle_opts *bo, const struct aws_opts *ao,
                         const char *bucket, const char *kprefix, const char *acl, bool reg,
                         const char *ami_name, const char *description, enum output out_fmt,
                         const char *what)
{
  struct error e = { 0 };
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, ao, &e) < 0)
    return cli_fail(&e);
  struct bundle_s3_opts so = { .bucket = bucket, .key_prefix = kprefix, .acl = acl };
  struct bundle_s3_result r;
  struct bundle_result res;
  char ami[EBS_ID_MAX] = "";
  int rc = EXIT_FAIL;
  if (bundle_to_s3(src, bo, &ctx, &so, &res, &r, &e) < 0) {
    cli_fail(&e);
    if (r.fresh_why[0])
      fprintf(stderr, "amiport: bundle: the state %s was not used: %s\n", r.state_path,
              r.fresh_why);
    if (acl && strstr(e.msg, ": AccessControlListNotSupported:"))
      fprintf(stderr, "amiport: bundle: the bucket has ACLs disabled; --acl none stores the "
                      "objects without one\n");
    if (r.in_bucket[0])
      fprintf(stderr, "amiport: bundle: parts in s3://%s/%s%s: %s; they are kept, and the same "
                      "command resumes without sending them again\n", bucket, kprefix,
              *kprefix ? "/" : "", r.in_bucket);
    else if (r.state_path[0])
      fprintf(stderr, "amiport: bundle: no part was stored\n");
    rc = e.code == ERR_INTERRUPTED ? 130 : EXIT_FAIL;
    goto out;
  }
  char a[32], b[32];
  if (r.fresh_why[0])
    fprintf(stderr, "amiport: bundle: the state %s was not used (%s): a new bundle\n",
            r.state_path, r.fresh_why);
  fprintf(stderr, "bundled %s (%s, %s) into %u parts, %s, digest %s; %u parts stored, %u "
                  "already in the bucket%s; manifest s3://%s\n", what, bo->arch,
          cli_human_size(src->size, a), res.nparts, cli_human_size(res.bundled_size, b),
          res.digest, r.uploaded, r.skipped, r.resumed ? " (resumed)" : "", r.location);
  if (reg) {
    struct ec2_register rg = { .name = ami_name, .description = description, .arch = bo->arch,
                               .imds_support = "v2.0", .image_location = r.location,
                               .kernel_id = bo->kernel_id, .ramdisk_id = bo->ramdisk_id };
    if (ec2_register_image(&ctx, &rg, ami, &e) < 0) {
      cli_fail(&e);
      fprintf(stderr, "amiport: bundle: the bundle is in S3; register it with: amiport register "
                      "--image-location %s --name NAME\n", r.location);
      goto out;
    }
  }
  if (out_fmt == OUTPUT_JSON) {
    json_object *j = json_object_new_object();
    json_object_object_add(j, "manifest", json_object_new_string(r.location));
    json_object_object_add(j, "parts", json_object_new_int64(res.nparts));
    json_object_object_add(j, "parts_uploaded", json_object_new_int64(r.uploaded));
    json_object_object_add(j, "parts_skipped", json_object_new_int64(r.skipped));
    json_object_object_add(j, "bundled_size", json_object_new_int64((int64_t)res.bundled_size));
    json_object_object_add(j, "digest", json_object_new_string(res.digest));
    json_object_object_add(j, "resumed", json_object_new_boolean(r.resumed));
    json_object_object_add(j, "image_id", ami[0] ? json_object_new_string(ami) : NULL);
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
  } else {
    printf("%s\n", r.location);
    if (ami[0])
      printf("%s\n", ami);
  }
  rc = EXIT_OK;
out:
  aws_ctx_free(&ctx);
  return rc;
}

int cmd_bundle(int argc, char **argv)
{
  enum { O_EC2CERT = 0x200, O_KERNEL, O_RAMDISK, O_PREFIX, O_PART_SIZE, O_ACL, O_REGISTER,
         O_NAME, O_DESCRIPTION, O_OUTPUT };
  static const struct option longopts[] = {
    IMAGE_LONGOPTS,
    { "cert", required_argument, NULL, 'c' },
    { "privatekey", required_argument, NULL, 'K' },
    { "user", required_argument, NULL, 'u' },
    { "ec2cert", required_argument, NULL, O_EC2CERT },
    { "arch", required_argument, NULL, 'r' },
    { "kernel", required_argument, NULL, O_KERNEL },
    { "ramdisk", required_argument, NULL, O_RAMDISK },
    { "block-device-mapping", required_argument, NULL, 'M' },
    { "prefix", required_argument, NULL, O_PREFIX },
    { "destination", required_argument, NULL, 'd' },
    { "bucket", required_argument, NULL, 'b' },
    { "acl", required_argument, NULL, O_ACL },
    { "register", no_argument, NULL, O_REGISTER },
    { "name", required_argument, NULL, O_NAME },
    { "description", required_argument, NULL, O_DESCRIPTION },
    { "kernel-id", required_argument, NULL, O_KERNEL },
    { "ramdisk-id", required_argument, NULL, O_RAMDISK },
    { "output", required_argument, NULL, O_OUTPUT },
    { "part-size", required_argument, NULL, O_PART_SIZE },
    { "progress", no_argument, NULL, 'p' },
    { "jobs", required_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  const char *cert = NULL, *key = NULL, *user = NULL, *ec2cert = getenv("AMIPORT_EC2_CERT");
  char acct[13], name[512], *bdm = NULL;
  struct bundle_mapping maps[BUNDLE_MAX_MAPPINGS];
  struct bundle_opts bo = { .destination = ".", .part_size = BUNDLE_PART_SIZE,
                            .progress = isatty(2), .cancel = &cli_interrupted,
                            .bundler_version = "0.1.0" };
  struct image_args ia = { 0 };
  struct error e = { 0 };
  struct img *src = NULL;
  const char *target = NULL, *acl = "aws-exec-read", *ami_name = NULL, *description = NULL;
  char *bucket = NULL, *kprefix = NULL;
  bool dest_given = false, reg = false, known;
  enum output out_fmt = OUTPUT_HUMAN;
  int c, rc = EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "f:c:u:r:M:d:b:pj:h", longopts, NULL)) != -1) {
    char *end;
    long n;
    switch (c) {
    case 'c': cert = optarg; break;
    case 'K': key = optarg; break;
    case 'u': user = optarg; break;
    case O_EC2CERT: ec2cert = optarg; break;
    case 'r': bo.arch = optarg; break;
    case O_KERNEL: bo.kernel_id = optarg; break;
    case O_RAMDISK: bo.ramdisk_id = optarg; break;
    case 'M': free(bdm); bdm = strdup(optarg); break;
    case O_PREFIX: bo.prefix = optarg; break;
    case 'd': bo.destination = optarg; dest_given = true; break;
    case 'b': target = optarg; break;
    case O_ACL:
      known = false;
      for (const char *const *a = cli_s3_acls; *a; a++)
        known |= strcmp(optarg, *a) == 0;
      if (!known) {
        cli_usage("bundle", "--acl must be a canned ACL (aws-exec-read, private, ...; see "
                            "upload-bundle --help) or none, not '%s'", optarg);
        goto out;
      }
      acl = optarg;
      break;
    case O_REGISTER: reg = true; break;
    case O_NAME: ami_name = optarg; break;
    case O_DESCRIPTION: description = optarg; break;
    case O_OUTPUT:
      if (cli_parse_output("bundle", optarg, &out_fmt) != 0)
        goto out;
      break;
    case O_PART_SIZE:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > BUNDLE_MAX_PART_MIB) {
        cli_usage("bundle", "--part-size must be 1 to %u (MiB), not '%s'", BUNDLE_MAX_PART_MIB,
                  optarg);
        goto out;
      }
      bo.part_size = (uint64_t)n << 20;
      break;
    case 'p': bo.progress = true; break;
    case 'j':
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 64) {
        cli_usage("bundle", "--jobs must be 1 to 64, not '%s'", optarg);
        goto out;
      }
      bo.threads = (unsigned)n;
      break;
    case 'h': bundle_help(); rc = EXIT_OK; goto out;
    default:
      if (cli_image_option("bundle", c, optarg, &ia) < 0)
        goto out;
    }
  }
  if (optind + 1 != argc) {
    cli_usage("bundle", "expects one IMAGE");
    goto out;
  }
  if (!cert || !key || !user) {
    cli_usage("bundle", "--cert, --privatekey and --user are required");
    goto out;
  }
  if (target && dest_given) {
    cli_usage("bundle", "--bucket and --destination cannot be used together");
    goto out;
  }
  if (!target && (reg || ami_name || description)) {
    cli_usage("bundle", "--register, --name and --description need --bucket");
    goto out;
  }
  if (reg != (ami_name != NULL) || (description && !reg)) {
    cli_usage("bundle", "--register needs --name, and --name and --description need --register");
    goto out;
  }
  if (bo.kernel_id && strncmp(bo.kernel_id, "aki-", 4) != 0) {
    cli_usage("bundle", "--kernel must be a kernel image id (aki-...), not '%s'", bo.kernel_id);
    goto out;
  }
  if (bo.ramdisk_id && strncmp(bo.ramdisk_id, "ari-", 4) != 0) {
    cli_usage("bundle", "--ramdisk must be a ramdisk image id (ari-...), not '%s'", bo.ramdisk_id);
    goto out;
  }
  if (target && (rc = cli_s3_target("bundle", target, &bucket, &kprefix)) != 0)
    goto out;
  rc = EXIT_USAGE;
  if (strcmp(acl, "none") == 0)
    acl = NULL;
  if (!(bo.user = account_id(user, acct))) {
    cli_usage("bundle", "--user must be a 12-digit AWS account id, not '%s'", user);
    goto out;
  }
  if (!ec2cert && access(EC2_CERT_DEFAULT, R_OK) == 0)
    ec2cert = EC2_CERT_DEFAULT;
  if (!ec2cert) {
    fprintf(stderr, "amiport: bundle: --ec2cert is required: " EC2_CERT_HINT ".\n");
    goto out;
  }
  if (bo.arch && strcmp(bo.arch, "x86_64") && strcmp(bo.arch, "i386") && strcmp(bo.arch, "arm64")) {
    cli_usage("bundle", "--arch must be x86_64, i386 or arm64, not '%s'", bo.arch);
    goto out;
  }
  static char default_bdm[] = "ami=sda1,root=/dev/sda1";
  int nm = parse_mappings(bdm ? bdm : default_bdm, maps);
  if (nm < 0) {
    cli_usage("bundle", "--block-device-mapping takes VIRTUAL=DEVICE[,VIRTUAL=DEVICE...]");
    goto out;
  }
  bo.mappings = maps;
  bo.nmappings = (unsigned)nm;
  struct stat st;
  if (!target && (stat(bo.destination, &st) < 0 || !S_ISDIR(st.st_mode))) {
    fprintf(stderr, "amiport: bundle: --destination %s is not a folder\n", bo.destination);
    rc = EXIT_FAIL;
    goto out;
  }
  cli_catch_signals();
  rc = EXIT_FAIL;
  if (!(bo.user_cert = bundle_load_cert(cert, &e)) || !(bo.ec2_cert = bundle_load_cert(ec2cert, &e)) ||
      !(bo.user_key = bundle_load_key(key, &e)) || !(src = cli_open_image(argv[optind], &ia, &e)) ||
      (!bo.arch && !(bo.arch = guest_arch(src, &e)))) {
    rc = cli_fail(&e);
    goto out;
  }
  /* as ec2-bundle-image: the image is named by the prefix when there is one */
  member_name(argv[optind], src, name, sizeof name);
  bo.name = bo.prefix ? bo.prefix : name;
  if (!bo.prefix)
    bo.prefix = name;
  if (src->fd >= 0 && fstat(src->fd, &st) == 0)
    bo.mtime = (uint64_t)st.st_mtime;
  struct bundle_result res;
  if (target) {
    rc = bundle_bucket(src, &bo, &ia.aws, bucket, kprefix, acl, reg, ami_name, description,
                       out_fmt, argv[optind]);
    goto out;
  }
  if (bundle_write(src, &bo, &res, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  char a[32], b[32];
  fprintf(stderr, "bundled %s (%s, %s) into %u parts, %s, digest %s\n", argv[optind], bo.arch,
          cli_human_size(src->size, a), res.nparts, cli_human_size(res.bundled_size, b), res.digest);
  if (out_fmt == OUTPUT_JSON) {
    json_object *j = json_object_new_object();
    json_object_object_add(j, "manifest", json_object_new_string(res.manifest));
    json_object_object_add(j, "parts", json_object_new_int64(res.nparts));
    json_object_object_add(j, "bundled_size", json_object_new_int64((int64_t)res.bundled_size));
    json_object_object_add(j, "digest", json_object_new_string(res.digest));
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
  } else {
    printf("%s\n", res.manifest);
  }
  rc = EXIT_OK;
out:
  img_close(src);
  EVP_PKEY_free(bo.user_cert);
  EVP_PKEY_free(bo.ec2_cert);
  EVP_PKEY_free(bo.user_key);
  free(bdm);
  free(bucket);
  free(kprefix);
  return rc;
}

static void unbundle_help(void)
{
  printf("Usage: amiport unbundle --manifest M --privatekey KEY [--cert CERT] [--source DIR]\n"
         "                        [--destination DIR] [-O FMT] [-o OPTIONS] [--force] [-p]\n\n"
         "Checks an instance-store bundle and writes its image. Before decoding anything it\n"
         "checks the manifest's signature (with CERT, else with KEY's public half), opens\n"
         "the AES key with KEY (the user's copy, or EC2's) and finds every part; then it\n"
         "checks each part's SHA-1, decrypts, gunzips and untars in one pass and checks the\n"
         "tar stream's SHA-1. The image is written under a hidden name and renamed only\n"
         "when all of it matched: on any mismatch nothing is left. Reads manifests of\n"
         "versions 2007-10-10, 2007-08-29 and 3. Prints the image's path.\n\n"
         "  -m, --manifest FILE       the bundle's PREFIX.manifest.xml\n"
         "  -k, --privatekey FILE     the RSA private key (PEM) the bundle was made for\n"
         "  -c, --cert FILE           the signer's certificate (PEM)\n"
         "  -s, --source DIR          where the parts are (default: the manifest's folder)\n"
         "  -d, --destination DIR     where to write the image (default: the current\n"
         "                            folder), named as the manifest's <image><name>\n"
         "  -O, --output-format FMT   raw (default), qcow2, vmdk, vhdx or vpc; other than raw\n"
         "                            the name takes the format's extension\n"
         "  -o, --options OPTS        format options, as for amiport convert\n"
         "      --force               replace the image if it exists\n"
         "  -p, --progress            show progress (default when stderr is a terminal)\n"
         "  -h, --help                show this help\n");
}

int cmd_unbundle(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "manifest", required_argument, NULL, 'm' },
    { "privatekey", required_argument, NULL, 'k' },
    { "cert", required_argument, NULL, 'c' },
    { "source", required_argument, NULL, 's' },
    { "destination", required_argument, NULL, 'd' },
    { "output-format", required_argument, NULL, 'O' },
    { "options", required_argument, NULL, 'o' },
    { "force", no_argument, NULL, 'F' },
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct create_opts co = { 0 };
  struct unbundle_opts uo = { .destination = ".", .format = "raw", .create = &co,
                              .progress = isatty(2), .cancel = &cli_interrupted };
  struct error e = { 0 };
  char *mdir = NULL;
  int c, rc = EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "m:k:c:s:d:O:o:ph", longopts, NULL)) != -1) {
    switch (c) {
    case 'm': uo.manifest = optarg; break;
    case 'k': uo.key_path = optarg; break;
    case 'c': uo.cert_path = optarg; break;
    case 's': uo.source = optarg; break;
    case 'd': uo.destination = optarg; break;
    case 'O': uo.format = optarg; break;
    case 'o':
      if (create_opts_parse(&co, optarg, &e) < 0) {
        cli_usage("unbundle", "%s", e.msg);
        goto out;
      }
      break;
    case 'F': uo.force = true; break;
    case 'p': uo.progress = true; break;
    case 'h': unbundle_help(); rc = EXIT_OK; goto out;
    default: cli_usage("unbundle", "unknown option"); goto out;
    }
  }
  if (optind != argc || !uo.manifest || !uo.key_path) {
    cli_usage("unbundle", "--manifest and --privatekey are required, and nothing else");
    goto out;
  }
  const struct image_format *f = img_format_by_name(uo.format);
  if (!f || !f->create) {
    cli_usage("unbundle", "cannot write format '%s'", uo.format);
    goto out;
  }
  uo.format = f->name;
  if (!uo.source && (mdir = strdup(uo.manifest)))
    uo.source = dirname(mdir);
  cli_catch_signals();
  struct unbundle_result res;
  if (!(uo.key = bundle_load_key(uo.key_path, &e)) ||
      (uo.cert_path && !(uo.cert = bundle_load_cert(uo.cert_path, &e))) || unbundle(&uo, &res, &e) < 0) {
    rc = cli_fail(&e);
    goto out;
  }
  char a[32];
  fprintf(stderr, "unbundled %u parts into %s (%s), digest %s\n", res.nparts, res.path,
          cli_human_size(res.size, a), res.digest);
  printf("%s\n", res.path);
  rc = EXIT_OK;
out:
  EVP_PKEY_free(uo.key);
  EVP_PKEY_free(uo.cert);
  create_opts_free(&co);
  free(mdir);
  return rc;
}
