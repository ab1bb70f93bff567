/* ec2_describe.c - what an AMI and a snapshot are, as EC2 describes them:
 * DescribeImages (every field amiport shows), DescribeImageAttribute,
 * DescribeSnapshots and the AMIs that map a snapshot. Member names and XML
 * shapes: botocore's ec2 service model (Image, ImageAttribute, Snapshot).
 * The answers are untrusted: every string is bounded by its field. */
#include "ec2.h"

#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The direct child element called name, or NULL. */
static xmlNodePtr child(xmlNodePtr parent, const char *name)
{
  for (xmlNodePtr n = parent ? parent->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0)
      return n;
  return NULL;
}

/* The text of parent's child called name into out ("" when there is none). */
static void child_text(xmlNodePtr parent, const char *name, char *out, size_t len)
{
  out[0] = 0;
  xmlNodePtr n = child(parent, name);
  if (!n)
    return;
  xmlChar *t = xmlNodeGetContent(n);
  snprintf(out, len, "%s", t ? (const char *)t : "");
  xmlFree(t);
}

/* -1 when parent has no child called name, else whether it says "true". */
static int child_bool(xmlNodePtr parent, const char *name)
{
  char v[8];
  if (!child(parent, name))
    return -1;
  child_text(parent, name, v, sizeof v);
  return strcmp(v, "true") == 0;
}

/* The <item> children of parent's child called list, one at a time. */
static xmlNodePtr next_item(xmlNodePtr n)
{
  for (; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, "item") == 0)
      return n;
  return NULL;
}
#define FOR_ITEMS(it, parent, list)                                                     \
  for (xmlNodePtr it = next_item(child(parent, list) ? child(parent, list)->children : NULL); \
       it; it = next_item(it->next))

static void parse_mapping(xmlNodePtr it, struct ec2_mapping *m)
{
  memset(m, 0, sizeof *m);
  m->encrypted = m->delete_on_termination = -1;
  child_text(it, "deviceName", m->device, sizeof m->device);
  child_text(it, "virtualName", m->virtual_name, sizeof m->virtual_name);
  m->no_device = child(it, "noDevice") != NULL;
  xmlNodePtr ebs = child(it, "ebs");
  if (!ebs)
    return;
  m->ebs = true;
  char size[24];
  child_text(ebs, "snapshotId", m->snapshot_id, sizeof m->snapshot_id);
  child_text(ebs, "volumeType", m->volume_type, sizeof m->volume_type);
  child_text(ebs, "volumeSize", size, sizeof size);
  char *end;
  unsigned long long gib = strtoull(size, &end, 10);
  if (size[0] >= '0' && size[0] <= '9' && !*end && gib <= EBS_MAX_VOLUME_GIB)
    m->volume_gib = gib;
  m->encrypted = child_bool(ebs, "encrypted");
  m->delete_on_termination = child_bool(ebs, "deleteOnTermination");
}

int ec2_parse_image(void *doc, const char *ami, struct ec2_image_info *im, struct error *e)
{
  memset(im, 0, sizeof *im);
  im->ena_support = -1;
  xmlNodePtr root = doc ? xmlDocGetRootElement((xmlDocPtr)doc) : NULL;
  xmlNodePtr set = root ? child(root, "imagesSet") : NULL;
  xmlNodePtr it = set ? next_item(set->children) : NULL;
  if (!it)
    return error_set(e, ERR_REMOTE, "%s does not exist (DescribeImages lists no such image)", ami);
  child_text(it, "imageId", im->image_id, sizeof im->image_id);
  child_text(it, "name", im->name, sizeof im->name);
  child_text(it, "imageState", im->state, sizeof im->state);
  child_text(it, "rootDeviceType", im->root_device_type, sizeof im->root_device_type);
  child_text(it, "rootDeviceName", im->root_device_name, sizeof im->root_device_name);
  child_text(it, "architecture", im->architecture, sizeof im->architecture);
  child_text(it, "virtualizationType", im->virtualization_type, sizeof im->virtualization_type);
  child_text(it, "bootMode", im->boot_mode, sizeof im->boot_mode);
  child_text(it, "sriovNetSupport", im->sriov_net_support, sizeof im->sriov_net_support);
  child_text(it, "tpmSupport", im->tpm_support, sizeof im->tpm_support);
  child_text(it, "imdsSupport", im->imds_support, sizeof im->imds_support);
  im->ena_support = child_bool(it, "enaSupport");
  child_text(it, "imageLocation", im->image_location, sizeof im->image_location);
  child_text(it, "platform", im->platform, sizeof im->platform);
  child_text(it, "platformDetails", im->platform_details, sizeof im->platform_details);
  child_text(it, "usageOperation", im->usage_operation, sizeof im->usage_operation);
  /* not in EC2's Image shape (the service shows billing products only
   * through platformDetails and usageOperation); read when an answer has it */
  FOR_ITEMS(b, it, "billingProducts") {
    if (im->nbilling == EC2_MAX_CODES)
      break;
    xmlChar *t = xmlNodeGetContent(b);
    snprintf(im->billing_products[im->nbilling++], sizeof im->billing_products[0], "%s",
             t ? (const char *)t : "");
    xmlFree(t);
  }
  FOR_ITEMS(pc, it, "productCodes") {
    if (im->nproduct_codes == EC2_MAX_CODES)
      break;
    size_t k = im->nproduct_codes++;
    child_text(pc, "productCode", im->product_codes[k].id, sizeof im->product_codes[k].id);
    child_text(pc, "type", im->product_codes[k].type, sizeof im->product_codes[k].type);
  }
  FOR_ITEMS(m, it, "blockDeviceMapping") {
    if (im->nmappings == EC2_MAX_VOLUMES)
      break;
    parse_mapping(m, &im->mappings[im->nmappings++]);
  }
  return 0;
}

int ec2_describe_image(struct aws_ctx *ctx, const char *ami, struct ec2_image_info *im,
                       struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "ImageId.1", ami);
  void *doc = ec2_call(ctx, "DescribeImages", &p, e);
  if (!doc) {
    if (strncmp(p.error_code, "InvalidAMIID", 12) == 0)
      error_set(e, ERR_REMOTE, "%s does not exist (or is not shared with this account)", ami);
    return -1;
  }
  int rc = ec2_parse_image(doc, ami, im, e);
  ec2_free(doc);
  return rc;
}

int ec2_parse_image_attribute(void *doc, const char *attr, char **value, struct error *e)
{
  *value = NULL;
  xmlNodePtr root = doc ? xmlDocGetRootElement((xmlDocPtr)doc) : NULL;
  if (!root)
    return error_set(e, ERR_REMOTE, "EC2 DescribeImageAttribute %s: the answer is empty", attr);
  xmlNodePtr a = child(root, attr);
  xmlNodePtr v = a ? child(a, "value") : NULL;
  if (!v)
    return 0;
  xmlChar *t = xmlNodeGetContent(v);
  if (t && *t && !(*value = strdup((const char *)t))) {
    xmlFree(t);
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  xmlFree(t);
  return 0;
}

int ec2_image_attribute(struct aws_ctx *ctx, const char *ami, const char *attr, char **value,
                        struct error *e)
{
  *value = NULL;
  struct ec2_params p = { 0 };
  ec2_param(&p, "ImageId", ami);
  ec2_param(&p, "Attribute", attr);
  void *doc = ec2_call(ctx, "DescribeImageAttribute", &p, e);
  if (!doc) {
    if (strncmp(p.error_code, "InvalidAMIID", 12) == 0)
      error_set(e, ERR_REMOTE, "%s does not exist (or is not shared with this account)", ami);
    return -1;
  }
  int rc = ec2_parse_image_attribute(doc, attr, value, e);
  ec2_free(doc);
  return rc;
}

/* Appends what to the list in out, after ", " unless it is the first. */
static void add_lost(char *out, size_t len, size_t *n, const char *what)
{
  size_t used = strlen(out);
  if (used < len)
    snprintf(out + used, len - used, "%s%s", *n ? ", " : "", what);
  (*n)++;
}

size_t ec2_billing_lost(const struct ec2_image_info *im, char *out, size_t len)
{
  size_t n = 0;
  char what[256];
  out[0] = 0;
  bool plat = im->platform_details[0] && strcmp(im->platform_details, "Linux/UNIX") != 0;
  bool op = im->usage_operation[0] && strcmp(im->usage_operation, "RunInstances") != 0;
  if (plat || op) {
    snprintf(what, sizeof what, "%s (%s)",
             im->platform_details[0] ? im->platform_details
             : im->platform[0]       ? im->platform
                                     : "platform not said",
             im->usage_operation[0] ? im->usage_operation : "usage operation not said");
    add_lost(out, len, &n, what);
  }
  for (size_t i = 0; i < im->nbilling; i++) {
    snprintf(what, sizeof what, "billing product %s", im->billing_products[i]);
    add_lost(out, len, &n, what);
  }
  for (size_t i = 0; i < im->nproduct_codes; i++) {
    snprintf(what, sizeof what, "product code %s (%s)", im->product_codes[i].id,
             im->product_codes[i].type[0] ? im->product_codes[i].type : "type not said");
    add_lost(out, len, &n, what);
  }
  return n;
}

int ec2_parse_snapshot(void *doc, const char *snap, struct ec2_snapshot_info *si,
                       struct error *e)
{
  memset(si, 0, sizeof *si);
  si->encrypted = -1;
  xmlNodePtr root = doc ? xmlDocGetRootElement((xmlDocPtr)doc) : NULL;
  xmlNodePtr set = root ? child(root, "snapshotSet") : NULL;
  xmlNodePtr it = set ? next_item(set->children) : NULL;
  if (!it)
    return error_set(e, ERR_REMOTE, "%s does not exist (DescribeSnapshots lists no such snapshot)",
                     snap);
  char size[24];
  child_text(it, "snapshotId", si->snapshot_id, sizeof si->snapshot_id);
  child_text(it, "status", si->state, sizeof si->state);
  child_text(it, "volumeSize", size, sizeof size);
  char *end;
  unsigned long long gib = strtoull(size, &end, 10);
  if (size[0] >= '0' && size[0] <= '9' && !*end && gib <= EBS_MAX_VOLUME_GIB)
    si->volume_gib = gib;
  si->encrypted = child_bool(it, "encrypted");
  return 0;
}

int ec2_describe_snapshot(struct aws_ctx *ctx, const char *snap, struct ec2_snapshot_info *si,
                          struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "SnapshotId.1", snap);
  void *doc = ec2_call(ctx, "DescribeSnapshots", &p, e);
  if (!doc) {
    if (strncmp(p.error_code, "InvalidSnapshot", 15) == 0)
      error_set(e, ERR_REMOTE, "%s does not exist (or is not shared with this account)", snap);
    return -1;
  }
  int rc = ec2_parse_snapshot(doc, snap, si, e);
  ec2_free(doc);
  return rc;
}

int ec2_parse_image_ids(void *doc, char (*ids)[EBS_ID_MAX], size_t *n)
{
  *n = 0;
  xmlNodePtr root = doc ? xmlDocGetRootElement((xmlDocPtr)doc) : NULL;
  FOR_ITEMS(it, root, "imagesSet") {
    if (*n == EC2_MAX_IMAGES)
      break;
    child_text(it, "imageId", ids[*n], EBS_ID_MAX);
    if (ids[*n][0])
      (*n)++;
  }
  return 0;
}

int ec2_images_using(struct aws_ctx *ctx, const char *snap, char (*ids)[EBS_ID_MAX], size_t *n,
                     struct error *e)
{
  *n = 0;
  struct ec2_params p = { 0 };
  ec2_param(&p, "Filter.1.Name", "block-device-mapping.snapshot-id");
  ec2_param(&p, "Filter.1.Value.1", snap);
  void *doc = ec2_call(ctx, "DescribeImages", &p, e);
  if (!doc)
    return -1;
  int rc = ec2_parse_image_ids(doc, ids, n);
  ec2_free(doc);
  return rc;
}

int ec2_find_image(struct aws_ctx *ctx, const char *name, const struct aws_tag *tags,
                   size_t ntags, char ami[EBS_ID_MAX], struct error *e)
{
  ami[0] = 0;
  struct ec2_params p = { 0 };
  unsigned f = 1;
  ec2_param(&p, "Owner.1", "self");
  ec2_paramf(&p, "name", "Filter.%u.Name", f);
  ec2_paramf(&p, name, "Filter.%u.Value.1", f++);
  ec2_paramf(&p, "state", "Filter.%u.Name", f);
  ec2_paramf(&p, "available", "Filter.%u.Value.1", f);
  ec2_paramf(&p, "pending", "Filter.%u.Value.2", f++);
  for (size_t i = 0; i < ntags; i++)
    if (strncmp(tags[i].key, "amiport:", 8) == 0) {
      char k[160];
      snprintf(k, sizeof k, "tag:%s", tags[i].key);
      ec2_paramf(&p, k, "Filter.%u.Name", f);
      ec2_paramf(&p, tags[i].value, "Filter.%u.Value.1", f++);
    }
  void *doc = ec2_call(ctx, "DescribeImages", &p, e);
  if (!doc)
    return -1;
  char ids[EC2_MAX_IMAGES][EBS_ID_MAX];
  size_t n;
  ec2_parse_image_ids(doc, ids, &n);
  ec2_free(doc);
  if (n)
    snprintf(ami, EBS_ID_MAX, "%s", ids[0]);
  return n > 0;
}
