/* info_aws.c - amiport info ami-... | snap-...: what the AMI or snapshot is,
 * gathered from DescribeImages, DescribeImageAttribute uefiData,
 * DescribeSnapshots and ListSnapshotBlocks. In JSON every key is always
 * there; what the service does not say is null. */
#include "cli.h"
#include "ec2.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct json_object *str_or_null(const char *s)
{
  return s && s[0] ? json_object_new_string(s) : NULL;
}

static struct json_object *bool_or_null(int b)
{
  return b < 0 ? NULL : json_object_new_boolean(b);
}

static struct json_object *image_json(const struct ec2_image_info *im, bool uefi)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "image_id", str_or_null(im->image_id));
  json_object_object_add(o, "name", str_or_null(im->name));
  json_object_object_add(o, "state", str_or_null(im->state));
  json_object_object_add(o, "root_device_type", str_or_null(im->root_device_type));
  json_object_object_add(o, "root_device_name", str_or_null(im->root_device_name));
  json_object_object_add(o, "architecture", str_or_null(im->architecture));
  json_object_object_add(o, "virtualization_type", str_or_null(im->virtualization_type));
  json_object_object_add(o, "boot_mode", str_or_null(im->boot_mode));
  json_object_object_add(o, "ena_support", bool_or_null(im->ena_support));
  json_object_object_add(o, "sriov_net_support", str_or_null(im->sriov_net_support));
  json_object_object_add(o, "tpm_support", str_or_null(im->tpm_support));
  json_object_object_add(o, "imds_support", str_or_null(im->imds_support));
  json_object_object_add(o, "uefi_data", json_object_new_boolean(uefi));
  json_object_object_add(o, "image_location", str_or_null(im->image_location));
  json_object_object_add(o, "platform", str_or_null(im->platform));
  json_object_object_add(o, "platform_details", str_or_null(im->platform_details));
  json_object_object_add(o, "usage_operation", str_or_null(im->usage_operation));
  struct json_object *a = json_object_new_array();
  for (size_t i = 0; i < im->nbilling; i++)
    json_object_array_add(a, json_object_new_string(im->billing_products[i]));
  json_object_object_add(o, "billing_products", a);
  a = json_object_new_array();
  for (size_t i = 0; i < im->nproduct_codes; i++) {
    struct json_object *pc = json_object_new_object();
    json_object_object_add(pc, "product_code_id", str_or_null(im->product_codes[i].id));
    json_object_object_add(pc, "product_code_type", str_or_null(im->product_codes[i].type));
    json_object_array_add(a, pc);
  }
  json_object_object_add(o, "product_codes", a);
  a = json_object_new_array();
  for (size_t i = 0; i < im->nmappings; i++) {
    const struct ec2_mapping *m = &im->mappings[i];
    struct json_object *j = json_object_new_object();
    json_object_object_add(j, "device_name", str_or_null(m->device));
    json_object_object_add(j, "snapshot_id", str_or_null(m->snapshot_id));
    json_object_object_add(j, "volume_size_gib",
                           m->volume_gib ? json_object_new_int64((int64_t)m->volume_gib) : NULL);
    json_object_object_add(j, "volume_type", str_or_null(m->volume_type));
    json_object_object_add(j, "encrypted", bool_or_null(m->encrypted));
    json_object_object_add(j, "delete_on_termination", bool_or_null(m->delete_on_termination));
    json_object_object_add(j, "virtual_name", str_or_null(m->virtual_name));
    json_object_object_add(j, "no_device", json_object_new_boolean(m->no_device));
    json_object_array_add(a, j);
  }
  json_object_object_add(o, "block_device_mappings", a);
  char lost[1024];
  json_object_object_add(o, "billing_codes_lost",
                         ec2_billing_lost(im, lost, sizeof lost) ? json_object_new_string(lost)
                                                                 : NULL);
  return o;
}

static const char *or_dash(const char *s)
{
  return s && s[0] ? s : "-";
}

static const char *yes_no(int b)
{
  return b < 0 ? "not set" : b ? "yes" : "no";
}

static void image_human(const struct ec2_image_info *im, bool uefi)
{
  printf("AMI:            %s '%s' (%s)\n", im->image_id, im->name, or_dash(im->state));
  printf("Root device:    %s, %s-backed\n", or_dash(im->root_device_name),
         or_dash(im->root_device_type));
  if (strcmp(im->root_device_type, "instance-store") == 0)
    printf("Bundle:         s3://%s\n", or_dash(im->image_location));
  printf("Machine:        %s, %s, boot mode %s\n", or_dash(im->architecture),
         or_dash(im->virtualization_type), im->boot_mode[0] ? im->boot_mode : "(service default)");
  printf("Networking:     ENA %s, SR-IOV %s\n", yes_no(im->ena_support),
         im->sriov_net_support[0] ? im->sriov_net_support : "not set");
  printf("NitroTPM:       %s\n", im->tpm_support[0] ? im->tpm_support : "not set");
  printf("IMDS:           %s\n", im->imds_support[0] ? im->imds_support : "v1 and v2 (not set)");
  printf("UEFI data:      %s\n", uefi ? "present" : "none");
  printf("Billing:        %s (%s)\n", or_dash(im->platform_details), or_dash(im->usage_operation));
  for (size_t i = 0; i < im->nbilling; i++)
    printf("                billing product %s\n", im->billing_products[i]);
  for (size_t i = 0; i < im->nproduct_codes; i++)
    printf("                product code %s (%s)\n", im->product_codes[i].id,
           or_dash(im->product_codes[i].type));
  char lost[1024];
  if (ec2_billing_lost(im, lost, sizeof lost))
    printf("                an image registered from its snapshots loses: %s\n", lost);
  printf("Block devices:%s\n", im->nmappings                                       ? ""
                                : strcmp(im->root_device_type, "instance-store") == 0
                                    ? "  none beyond the root disk the bundle holds"
                                    : "  none");
  for (size_t i = 0; i < im->nmappings; i++) {
    const struct ec2_mapping *m = &im->mappings[i];
    if (m->ebs) {
      char size[32] = "size of the snapshot";
      if (m->volume_gib)
        snprintf(size, sizeof size, "%llu GiB", (unsigned long long)m->volume_gib);
      printf("  %-12s EBS %s, %s %s, %s%s\n", m->device, m->snapshot_id[0] ? m->snapshot_id : "(empty)",
             size, or_dash(m->volume_type), m->encrypted > 0 ? "encrypted" : "not encrypted",
             m->delete_on_termination == 0 ? ", kept after termination" : "");
    } else if (m->virtual_name[0]) {
      printf("  %-12s instance store %s\n", m->device, m->virtual_name);
    } else {
      printf("  %-12s %s\n", m->device, m->no_device ? "no device" : "-");
    }
  }
}

static int info_image(struct aws_ctx *ctx, const char *ami, enum output out, struct error *e)
{
  struct ec2_image_info *im = malloc(sizeof *im);
  if (!im)
    return error_set(e, ERR_NOMEM, "out of memory");
  char *uefi = NULL;
  int rc = ec2_describe_image(ctx, ami, im, e);
  if (rc == 0)
    rc = ec2_image_attribute(ctx, ami, "uefiData", &uefi, e);
  if (rc == 0) {
    if (out == OUTPUT_JSON) {
      struct json_object *o = image_json(im, uefi != NULL);
      puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
      json_object_put(o);
    } else {
      image_human(im, uefi != NULL);
    }
  }
  free(uefi);
  free(im);
  return rc;
}

static int info_snapshot(struct aws_ctx *ctx, const struct aws_opts *ao, const char *snap,
                         enum output out, struct error *e)
{
  struct ec2_snapshot_info si;
  char ids[EC2_MAX_IMAGES][EBS_ID_MAX];
  size_t nids = 0;
  if (ec2_describe_snapshot(ctx, snap, &si, e) < 0 || ec2_images_using(ctx, snap, ids, &nids, e) < 0)
    return -1;
  /* only a completed snapshot lists its blocks */
  int64_t blocks = -1;
  if (strcmp(si.state, "completed") == 0) {
    struct img *im = ebs_open(ao, snap, 0, e);
    if (!im)
      return -1;
    struct json_object *d = json_object_new_object(), *v;
    if (im->fmt->describe(im, d, e) == 0 && json_object_object_get_ex(d, "blocks", &v))
      blocks = json_object_get_int64(v);
    json_object_put(d);
    img_close(im);
  }
  if (out == OUTPUT_JSON) {
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "snapshot_id", str_or_null(si.snapshot_id));
    json_object_object_add(o, "state", str_or_null(si.state));
    json_object_object_add(o, "volume_size_gib",
                           si.volume_gib ? json_object_new_int64((int64_t)si.volume_gib) : NULL);
    json_object_object_add(o, "encrypted", bool_or_null(si.encrypted));
    json_object_object_add(o, "block_size", json_object_new_int64(EBS_BLOCK));
    json_object_object_add(o, "allocated_blocks", blocks < 0 ? NULL : json_object_new_int64(blocks));
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; i < nids; i++)
      json_object_array_add(a, json_object_new_string(ids[i]));
    json_object_object_add(o, "used_by_images", a);
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return 0;
  }
  char b1[32], b2[32], b3[32];
  printf("Snapshot:       %s (%s)\n", si.snapshot_id, or_dash(si.state));
  printf("Volume:         %llu GiB, %s\n", (unsigned long long)si.volume_gib,
         si.encrypted > 0 ? "encrypted" : "not encrypted");
  if (blocks >= 0)
    printf("Blocks:         %lld of %s hold data (%s of %s)\n", (long long)blocks,
           cli_human_size(EBS_BLOCK, b1), cli_human_size((uint64_t)blocks * EBS_BLOCK, b2),
           cli_human_size(si.volume_gib << 30, b3));
  else
    printf("Blocks:         not listed until the snapshot is completed\n");
  printf("Used by:        ");
  for (size_t i = 0; i < nids; i++)
    printf("%s%s", i ? ", " : "", ids[i]);
  printf("%s\n", nids ? "" : "no AMI");
  return 0;
}

int cli_info_aws(const char *id, const struct aws_opts *ao, enum output out)
{
  struct error e = { 0 };
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, ao, &e) < 0)
    return cli_fail(&e);
  int rc = strncmp(id, "ami-", 4) == 0 ? info_image(&ctx, id, out, &e)
                                       : info_snapshot(&ctx, ao, id, out, &e);
  aws_ctx_free(&ctx);
  return rc < 0 ? cli_fail(&e) : EXIT_OK;
}
