/* info.c - amiport info: format, sizes, allocation and format features. */
#include "cli.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
  "Usage: amiport info " IMAGE_USAGE " [--output=human|json] IMAGE\n"
  "       amiport info [--region R] [--profile P] [--endpoint-url URL] [--output=human|json]\n"
  "                    ami-...|snap-...\n\n"
  "Shows the image's format, virtual size, size on disk, cluster size, how much of it\n"
  "is data, zeros and unallocated, and the format's features.\n\n"
  "For an AMI (ami-...) it shows instead what EC2 holds for it: state, root device\n"
  "and its type (ebs or instance-store), architecture, virtualization type, boot\n"
  "mode, ENA, SR-IOV, TPM and IMDS support, whether it has UEFI variables, the\n"
  "bundle's location (instance-store), platform details, usage operation, billing\n"
  "products, product codes and every block device mapping; for a snapshot\n"
  "(snap-..., ebs:snap-...): state, volume size, encryption, block size, the blocks\n"
  "that hold data (ListSnapshotBlocks) and the AMIs that map it. In JSON every key is\n"
  "always present, null where the service says nothing.\n\n"
  IMAGE_HELP
         BUNDLE_SOURCE_HELP
  "      --output FORMAT       human (default) or json\n"
  "  -h, --help                show this help\n";

static int add_extent(void *ctx, const struct extent *x, struct error *e)
{
  (void)e;
  ((uint64_t *)ctx)[x->kind] += x->len;
  return 0;
}

static void print_human(struct json_object *o, int depth)
{
  json_object_object_foreach(o, key, val) {
    if (json_object_is_type(val, json_type_object)) {
      printf("%*s%s:\n", depth * 4, "", key);
      print_human(val, depth + 1);
    } else {
      printf("%*s%s: %s\n", depth * 4, "", key, json_object_get_string(val));
    }
  }
}

int cmd_info(int argc, char **argv)
{
  enum output out = OUTPUT_HUMAN;
  struct image_args ia = { 0 };
  int rc = cli_image_command("info", help, argc, argv, &ia, &out);
  if (rc >= 0)
    return rc;
  const char *id = argv[optind];
  if (strncmp(id, "ebs:", 4) == 0 && strncmp(id + 4, "snap-", 5) == 0)
    id += 4;
  if ((strncmp(id, "ami-", 4) == 0 || strncmp(id, "snap-", 5) == 0) && !strchr(id, '/'))
    return cli_info_aws(id, &ia.aws, out);
  struct error e = { 0 };
  struct img *im = cli_open_image(argv[optind], &ia, &e);
  if (!im)
    return cli_fail(&e);
  uint64_t sums[3] = { 0 };
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "filename", json_object_new_string(im->path));
  json_object_object_add(o, "format", json_object_new_string(im->fmt->name));
  if (im->guessed)
    json_object_object_add(o, "format-guessed", json_object_new_boolean(1));
  json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)im->size));
  json_object_object_add(o, "actual-size", json_object_new_int64(img_actual_size(im)));
  rc = EXIT_FAIL;
  if (im->fmt->describe && im->fmt->describe(im, o, &e) < 0)
    goto out;
  if (img_map_walk(im, add_extent, sums, &e) < 0)
    goto out;
  struct json_object *a = json_object_new_object();
  json_object_object_add(a, "data", json_object_new_int64((int64_t)sums[EXTENT_DATA]));
  json_object_object_add(a, "zero", json_object_new_int64((int64_t)sums[EXTENT_ZERO]));
  json_object_object_add(a, "unallocated", json_object_new_int64((int64_t)sums[EXTENT_HOLE]));
  json_object_object_add(o, "allocation", a);
  if (out == OUTPUT_JSON) {
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  } else {
    char b1[32], b2[32], b3[32], b4[32];
    printf("image: %s\nfile format: %s%s\nvirtual size: %s (%llu bytes)\n", im->path,
           im->fmt->name, im->guessed ? " (guessed)" : "", cli_human_size(im->size, b1),
           (unsigned long long)im->size);
    int64_t actual = img_actual_size(im);
    if (actual >= 0)
      printf("disk size: %s\n", cli_human_size((uint64_t)actual, b1));
    struct json_object *v;
    if (json_object_object_get_ex(o, "cluster-size", &v))
      printf("cluster_size: %s\n", json_object_get_string(v));
    if (json_object_object_get_ex(o, "backing-filename", &v))
      printf("backing file: %s\n", json_object_get_string(v));
    printf("allocation: data %s, zero %s, unallocated %s\n",
           cli_human_size(sums[EXTENT_DATA], b2), cli_human_size(sums[EXTENT_ZERO], b3),
           cli_human_size(sums[EXTENT_HOLE], b4));
    if (json_object_object_get_ex(o, "format-specific", &v)) {
      printf("Format specific information:\n");
      print_human(v, 1);
    }
  }
  rc = EXIT_OK;
out:
  json_object_put(o);
  img_close(im);
  return rc == EXIT_OK ? rc : cli_fail(&e);
}
