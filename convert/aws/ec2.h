/* ec2.h - the EC2 Query API calls (ec2.c). */
#ifndef AMIPORT_EC2_H
#define AMIPORT_EC2_H

#include <signal.h>
#include <stdarg.h>

#include "ebs.h"

/* RegisterImage's UefiData: at most 64000 base64 characters (botocore's
 * StringType), each of '+', '/' and '=' sent as three. */
#define EC2_UEFI_DATA_MAX 64000

struct ec2_params {
  char buf[EC2_UEFI_DATA_MAX * 3 + 16384]; /* "&K=V&K=V", form-encoded */
  size_t len;
  bool overflow;
  char error_code[128]; /* the service's error code, after a failed call */
};

int ec2_param(struct ec2_params *p, const char *key, const char *value);
int ec2_paramf(struct ec2_params *p, const char *value, const char *keyfmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends Action with p; the parsed answer (an xmlDocPtr; ec2_free it) or NULL. */
void *ec2_call(struct aws_ctx *ctx, const char *action, struct ec2_params *p, struct error *e);
void ec2_free(void *doc);
/* The first element called name in the answer, malloc'd, or NULL. */
char *ec2_text(void *doc, const char *name);

/* state: pending, completed, error, or not-found. */
int ec2_snapshot_state(struct aws_ctx *ctx, const char *id, char *state, size_t len,
                       char *progress, size_t plen, struct error *e);
/* state: pending, available, failed, deregistered..., or not-found. */
int ec2_image_state(struct aws_ctx *ctx, const char *id, char *state, size_t len,
                    struct error *e);
/* Waits until a snapshot is completed or an image available (0 s: no limit). */
int ec2_wait(struct aws_ctx *ctx, const char *id, unsigned timeout_s, bool progress,
             const volatile sig_atomic_t *cancel, struct error *e);

struct ec2_disk {
  const char *device;      /* /dev/xvda */
  const char *virtual_name; /* an instance-store volume (ephemeral0): no snapshot */
  const char *snapshot_id;
  uint64_t volume_gib;     /* 0: the snapshot's size */
};

/* The values RegisterImage takes, NULL-terminated (import's options, a
 * plan's options). */
extern const char *const ec2_archs[], *const ec2_boot_modes[], *const ec2_volume_types[];
/* Whether v is one of set's values. */
bool ec2_one_of(const char *v, const char *const *set);

struct ec2_register {
  const char *name, *description;
  const char *arch;        /* x86_64, arm64, i386 */
  const char *boot_mode;   /* legacy-bios, uefi, uefi-preferred, or NULL */
  bool ena;                /* EnaSupport and SriovNetSupport=simple */
  const char *imds_support; /* "v2.0" or NULL */
  const char *tpm_support;  /* "v2.0" or NULL */
  const char *root_device;
  const char *uefi_data;   /* UefiData: the base64 variable store, or NULL */
  const char *volume_type; /* NULL: gp3 */
  bool keep_volumes;       /* DeleteOnTermination=false */
  const struct ec2_disk *disks;
  size_t ndisks;
  /* an instance-store image instead of disks: the manifest's S3 location,
   * BUCKET/KEY.manifest.xml; with kernel_id it is paravirtual, else hvm */
  const char *image_location;
  const char *kernel_id, *ramdisk_id; /* aki-..., ari-..., or NULL */
  const struct aws_tag *tags;
  size_t ntags;
};

int ec2_register_image(struct aws_ctx *ctx, const struct ec2_register *r, char ami[EBS_ID_MAX],
                       struct error *e);

#define EC2_MAX_VOLUMES 32

struct ec2_volume {
  char device[64];
  char snapshot_id[EBS_ID_MAX];
};

struct ec2_image {
  char root_device[64];
  struct ec2_volume volumes[EC2_MAX_VOLUMES];
  size_t nvolumes;
};

/* DeleteSnapshot. */
int ec2_delete_snapshot(struct aws_ctx *ctx, const char *id, struct error *e);
/* The EBS volumes of an available, EBS-backed AMI (DescribeImages). */
int ec2_image_volumes(struct aws_ctx *ctx, const char *ami, struct ec2_image *im,
                      struct error *e);

/* ---- describing an AMI and a snapshot (ec2_describe.c) ------------------- */

#define EC2_MAX_CODES 16

/* One block device mapping; "" where the answer says nothing. */
struct ec2_mapping {
  char device[64];
  char virtual_name[32];   /* ephemeralN: an instance store disk */
  bool ebs, no_device;
  char snapshot_id[EBS_ID_MAX];
  char volume_type[16];
  uint64_t volume_gib;     /* 0: not said */
  int encrypted;           /* -1: not said */
  int delete_on_termination; /* -1: not said */
};

/* What DescribeImages says of one AMI; "" (or -1) where it says nothing. */
struct ec2_image_info {
  char image_id[EBS_ID_MAX], name[256], state[32];
  char root_device_type[32], root_device_name[64];
  char architecture[32], virtualization_type[32], boot_mode[32];
  char sriov_net_support[32], tpm_support[16], imds_support[16];
  int ena_support;
  char image_location[1024];
  char platform[32], platform_details[128], usage_operation[64];
  char billing_products[EC2_MAX_CODES][64];
  size_t nbilling;
  struct { char id[64], type[32]; } product_codes[EC2_MAX_CODES];
  size_t nproduct_codes;
  struct ec2_mapping mappings[EC2_MAX_VOLUMES];
  size_t nmappings;
};

/* DescribeImages of one AMI (any state). */
int ec2_describe_image(struct aws_ctx *ctx, const char *ami, struct ec2_image_info *im,
                       struct error *e);
/* The parsing half of it, on an answer (an xmlDocPtr) already read. */
int ec2_parse_image(void *doc, const char *ami, struct ec2_image_info *im, struct error *e);

/* DescribeImageAttribute: *value gets the attribute's value (malloc'd), or
 * NULL when the AMI has none. attr: uefiData, bootMode, tpmSupport, ... */
int ec2_image_attribute(struct aws_ctx *ctx, const char *ami, const char *attr, char **value,
                        struct error *e);
int ec2_parse_image_attribute(void *doc, const char *attr, char **value, struct error *e);

/* What an image registered from its snapshots would no longer carry: a
 * platform other than Linux/UNIX, a UsageOperation other than RunInstances,
 * billing products, product codes. Written to out as a list ("Windows
 * (RunInstances:0002), billing product bp-6ba54002"); returns how many. */
size_t ec2_billing_lost(const struct ec2_image_info *im, char *out, size_t len);

struct ec2_snapshot_info {
  char snapshot_id[EBS_ID_MAX], state[32];
  uint64_t volume_gib;
  int encrypted; /* -1: not said */
};

/* DescribeSnapshots of one snapshot. */
int ec2_describe_snapshot(struct aws_ctx *ctx, const char *snap, struct ec2_snapshot_info *si,
                          struct error *e);
int ec2_parse_snapshot(void *doc, const char *snap, struct ec2_snapshot_info *si,
                       struct error *e);

#define EC2_MAX_IMAGES 64
/* DescribeImages with the filter block-device-mapping.snapshot-id: the AMIs
 * (at most EC2_MAX_IMAGES) that map the snapshot. */
int ec2_images_using(struct aws_ctx *ctx, const char *snap, char (*ids)[EBS_ID_MAX], size_t *n,
                     struct error *e);
int ec2_parse_image_ids(void *doc, char (*ids)[EBS_ID_MAX], size_t *n);
/* DescribeImages of this account's available or pending AMI called name
 * that carries every amiport:* tag of tags: 1 and its id, 0 if none. */
int ec2_find_image(struct aws_ctx *ctx, const char *name, const struct aws_tag *tags,
                   size_t ntags, char ami[EBS_ID_MAX], struct error *e);

#endif
