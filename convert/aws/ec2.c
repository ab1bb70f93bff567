/* ec2.c - the EC2 Query API calls amiport makes: DescribeSnapshots,
 * RegisterImage, DescribeImages, and the waits built on them. Wire facts:
 * the EC2 API reference (Query requests: form-encoded POST, Version
 * 2016-11-15; XML answers) and botocore's ec2 service model. */
#include "ec2.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const ec2_archs[] = { "x86_64", "arm64", "i386", NULL };
const char *const ec2_boot_modes[] = { "legacy-bios", "uefi", "uefi-preferred", NULL };
const char *const ec2_volume_types[] = { "gp3", "gp2", "io1", "io2", "st1", "sc1", "standard",
                                         NULL };

bool ec2_one_of(const char *v, const char *const *set)
{
  for (; *set; set++)
    if (strcmp(v, *set) == 0)
      return true;
  return false;
}

#define EC2_VERSION "2016-11-15"

/* Appends &key=value, form-encoded (RFC 3986 unreserved kept). */
int ec2_param(struct ec2_params *p, const char *key, const char *value)
{
  const char *parts[2] = { key, value };
  for (int k = 0; k < 2; k++) {
    if (p->len + 2 >= sizeof p->buf)
      return p->overflow = true, -1;
    p->buf[p->len++] = k ? '=' : '&';
    size_t n = aws_uri_encode(parts[k], p->buf + p->len, sizeof p->buf - p->len);
    if (n == (size_t)-1)
      return p->overflow = true, -1;
    p->len += n;
  }
  return 0;
}

int ec2_paramf(struct ec2_params *p, const char *value, const char *keyfmt, ...)
{
  char key[128];
  va_list ap;
  va_start(ap, keyfmt);
  vsnprintf(key, sizeof key, keyfmt, ap);
  va_end(ap);
  return ec2_param(p, key, value);
}

void *ec2_call(struct aws_ctx *ctx, const char *action, struct ec2_params *p, struct error *e)
{
  char op[64];
  snprintf(op, sizeof op, "EC2 %s", action);
  if (p->overflow) {
    error_set(e, ERR_USAGE, "%s: the request's parameters are too long", op);
    return NULL;
  }
  char *body = malloc(p->len + 128);
  if (!body) {
    error_set(e, ERR_NOMEM, "%s: out of memory", op);
    return NULL;
  }
  int n = sprintf(body, "Action=%s&Version=%s%s", action, EC2_VERSION, p->buf);
  struct aws_req rq = { .svc = AWS_EC2, .method = "POST", .path = "/", .body = body,
                        .len = (size_t)n,
                        .content_type = "application/x-www-form-urlencoded; charset=utf-8" };
  struct aws_resp r = { 0 };
  xmlDocPtr doc = NULL;
  if (aws_call(ctx, &rq, op, &r, e) == 0) {
    doc = aws_xml_parse(r.body ? r.body : "", r.len);
    if (!doc)
      error_set(e, ERR_REMOTE, "%s: the answer is not XML", op);
  } else {
    snprintf(p->error_code, sizeof p->error_code, "%s", r.error_code);
  }
  free(r.body);
  free(body);
  return doc;
}

void ec2_free(void *doc)
{
  xmlFreeDoc(doc);
}

char *ec2_text(void *doc, const char *name)
{
  return doc ? aws_xml_text(xmlDocGetRootElement((xmlDocPtr)doc), name) : NULL;
}

int ec2_snapshot_state(struct aws_ctx *ctx, const char *id, char *state, size_t len,
                       char *progress, size_t plen, struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "SnapshotId.1", id);
  void *doc = ec2_call(ctx, "DescribeSnapshots", &p, e);
  if (!doc) {
    if (strcmp(p.error_code, "InvalidSnapshot.NotFound") == 0) {
      snprintf(state, len, "not-found");
      return 0;
    }
    return -1;
  }
  char *st = ec2_text(doc, "status"), *pr = ec2_text(doc, "progress");
  int rc = 0;
  if (st)
    snprintf(state, len, "%s", st);
  else
    snprintf(state, len, "not-found");
  if (progress)
    snprintf(progress, plen, "%s", pr ? pr : "");
  free(st);
  free(pr);
  ec2_free(doc);
  return rc;
}

int ec2_image_state(struct aws_ctx *ctx, const char *id, char *state, size_t len,
                    struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "ImageId.1", id);
  void *doc = ec2_call(ctx, "DescribeImages", &p, e);
  if (!doc) {
    if (strcmp(p.error_code, "InvalidAMIID.NotFound") == 0 ||
        strcmp(p.error_code, "InvalidAMIID.Unavailable") == 0) {
      snprintf(state, len, "not-found");
      return 0;
    }
    return -1;
  }
  char *st = ec2_text(doc, "imageState");
  snprintf(state, len, "%s", st ? st : "not-found");
  free(st);
  ec2_free(doc);
  return 0;
}

int ec2_wait(struct aws_ctx *ctx, const char *id, unsigned timeout_s, bool progress,
             const volatile sig_atomic_t *cancel, struct error *e)
{
  bool image = strncmp(id, "ami-", 4) == 0;
  const char *want = image ? "available" : "completed";
  char state[32], pr[32] = "";
  time_t start = time(NULL);
  for (unsigned attempt = 0;; attempt++) {
    int rc = image ? ec2_image_state(ctx, id, state, sizeof state, e)
                   : ec2_snapshot_state(ctx, id, state, sizeof state, pr, sizeof pr, e);
    if (rc < 0)
      return -1;
    if (progress)
      fprintf(stderr, "\r%s: %s %s   ", id, state, pr);
    if (strcmp(state, want) == 0) {
      if (progress)
        fputc('\n', stderr);
      return 0;
    }
    if (strcmp(state, "not-found") == 0)
      return error_set(e, ERR_REMOTE, "%s does not exist", id);
    if (strcmp(state, "error") == 0 || strcmp(state, "failed") == 0 ||
        strcmp(state, "invalid") == 0 || strcmp(state, "deregistered") == 0)
      return error_set(e, ERR_REMOTE, "%s is in state '%s'", id, state);
    if (cancel && *cancel)
      return error_set(e, ERR_INTERRUPTED, "interrupted while waiting for %s (%s)", id, state);
    if (timeout_s && (unsigned)(time(NULL) - start) >= timeout_s)
      return error_set(e, ERR_REMOTE, "%s still '%s' after %u s", id, state, timeout_s);
    /* 0.25 s doubling to 15 s: fast when it is fast, polite when it is slow */
    unsigned ms = attempt >= 6 ? 15000 : 250u << attempt;
    for (unsigned t = 0; t < ms && !(cancel && *cancel); t += 50)
      usleep(50000);
  }
}

int ec2_register_image(struct aws_ctx *ctx, const struct ec2_register *r, char ami[EBS_ID_MAX],
                       struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "Name", r->name);
  if (r->description)
    ec2_param(&p, "Description", r->description);
  ec2_param(&p, "Architecture", r->arch);
  if (r->image_location) {
    /* instance-store: the root device and its mapping are the service's to set */
    ec2_param(&p, "ImageLocation", r->image_location);
    ec2_param(&p, "VirtualizationType", r->kernel_id ? "paravirtual" : "hvm");
    if (r->kernel_id)
      ec2_param(&p, "KernelId", r->kernel_id);
    if (r->ramdisk_id)
      ec2_param(&p, "RamdiskId", r->ramdisk_id);
  } else {
    ec2_param(&p, "VirtualizationType", "hvm");
    ec2_param(&p, "RootDeviceName", r->root_device);
  }
  if (r->boot_mode)
    ec2_param(&p, "BootMode", r->boot_mode);
  if (r->ena) {
    ec2_param(&p, "EnaSupport", "true");
    ec2_param(&p, "SriovNetSupport", "simple");
  }
  if (r->imds_support)
    ec2_param(&p, "ImdsSupport", r->imds_support);
  if (r->tpm_support)
    ec2_param(&p, "TpmSupport", r->tpm_support);
  if (r->uefi_data)
    ec2_param(&p, "UefiData", r->uefi_data);
  for (size_t i = 0; i < r->ndisks; i++) {
    char v[32];
    ec2_paramf(&p, r->disks[i].device, "BlockDeviceMapping.%zu.DeviceName", i + 1);
    if (r->disks[i].virtual_name) {
      ec2_paramf(&p, r->disks[i].virtual_name, "BlockDeviceMapping.%zu.VirtualName", i + 1);
      continue;
    }
    ec2_paramf(&p, r->disks[i].snapshot_id, "BlockDeviceMapping.%zu.Ebs.SnapshotId", i + 1);
    ec2_paramf(&p, r->volume_type ? r->volume_type : "gp3",
               "BlockDeviceMapping.%zu.Ebs.VolumeType", i + 1);
    ec2_paramf(&p, r->keep_volumes ? "false" : "true",
               "BlockDeviceMapping.%zu.Ebs.DeleteOnTermination", i + 1);
    if (r->disks[i].volume_gib) {
      snprintf(v, sizeof v, "%llu", (unsigned long long)r->disks[i].volume_gib);
      ec2_paramf(&p, v, "BlockDeviceMapping.%zu.Ebs.VolumeSize", i + 1);
    }
  }
  if (r->ntags) {
    ec2_param(&p, "TagSpecification.1.ResourceType", "image");
    for (size_t i = 0; i < r->ntags; i++) {
      ec2_paramf(&p, r->tags[i].key, "TagSpecification.1.Tag.%zu.Key", i + 1);
      ec2_paramf(&p, r->tags[i].value, "TagSpecification.1.Tag.%zu.Value", i + 1);
    }
  }
  void *doc = ec2_call(ctx, "RegisterImage", &p, e);
  if (!doc)
    return -1;
  char *id = ec2_text(doc, "imageId");
  int rc = 0;
  if (id && strlen(id) > 4 && strlen(id) < EBS_ID_MAX)
    snprintf(ami, EBS_ID_MAX, "%s", id);
  else
    rc = error_set(e, ERR_REMOTE, "EC2 RegisterImage: the answer has no imageId");
  free(id);
  ec2_free(doc);
  return rc;
}

/* The element called name directly or deeper under node, depth first. */
int ec2_image_volumes(struct aws_ctx *ctx, const char *ami, struct ec2_image *im, struct error *e)
{
  memset(im, 0, sizeof *im);
  struct ec2_params p = { 0 };
  ec2_param(&p, "ImageId.1", ami);
  xmlDocPtr doc = ec2_call(ctx, "DescribeImages", &p, e);
  if (!doc) {
    if (strncmp(p.error_code, "InvalidAMIID", 12) == 0)
      error_set(e, ERR_REMOTE, "%s does not exist (or is not shared with this account)", ami);
    return -1;
  }
  int rc = -1;
  xmlNodePtr item = aws_xml_find(xmlDocGetRootElement(doc), "imagesSet");
  item = item ? aws_xml_find(item->children, "item") : NULL;
  if (!item) {
    error_set(e, ERR_REMOTE, "%s does not exist (DescribeImages lists no such image)", ami);
    goto out;
  }
  char *state = aws_xml_text(item->children, "imageState");
  char *type = aws_xml_text(item->children, "rootDeviceType");
  char *root = aws_xml_text(item->children, "rootDeviceName");
  snprintf(im->root_device, sizeof im->root_device, "%s", root ? root : "");
  bool ok = true;
  if (!state || strcmp(state, "available") != 0) {
    error_set(e, ERR_REMOTE, "%s is in state '%s', not available", ami, state ? state : "unknown");
    ok = false;
  } else if (type && strcmp(type, "ebs") != 0) {
    error_set(e, ERR_UNSUPPORTED, "%s is an %s-backed AMI: it has no EBS snapshots to read", ami,
              type);
    ok = false;
  }
  free(state);
  free(type);
  free(root);
  if (!ok)
    goto out;
  xmlNodePtr bdm = aws_xml_find(item->children, "blockDeviceMapping");
  for (xmlNodePtr n = bdm ? bdm->children : NULL; n; n = n->next) {
    if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, "item") != 0)
      continue;
    char *dev = aws_xml_text(n->children, "deviceName");
    char *snap = aws_xml_text(n->children, "snapshotId");
    if (dev && snap && *snap && im->nvolumes < EC2_MAX_VOLUMES) {
      struct ec2_volume *v = &im->volumes[im->nvolumes++];
      snprintf(v->device, sizeof v->device, "%s", dev);
      snprintf(v->snapshot_id, sizeof v->snapshot_id, "%s", snap);
    }
    free(dev);
    free(snap);
  }
  if (!im->nvolumes) {
    error_set(e, ERR_UNSUPPORTED, "%s has no EBS volumes", ami);
    goto out;
  }
  rc = 0;
out:
  ec2_free(doc);
  return rc;
}

int ec2_delete_snapshot(struct aws_ctx *ctx, const char *id, struct error *e)
{
  struct ec2_params p = { 0 };
  ec2_param(&p, "SnapshotId", id);
  void *doc = ec2_call(ctx, "DeleteSnapshot", &p, e);
  ec2_free(doc);
  return doc ? 0 : -1;
}
