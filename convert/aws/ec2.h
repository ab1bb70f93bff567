/* ec2.h - the EC2 Query API calls (ec2.c). */
#ifndef AMIPORT_EC2_H
#define AMIPORT_EC2_H

#include <signal.h>
#include <stdarg.h>

#include "ebs.h"

struct ec2_params {
  char buf[16384]; /* "&K=V&K=V", form-encoded */
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
  const char *snapshot_id;
  uint64_t volume_gib;     /* 0: the snapshot's size */
};

struct ec2_register {
  const char *name, *description;
  const char *arch;        /* x86_64, arm64, i386 */
  const char *boot_mode;   /* legacy-bios, uefi, uefi-preferred, or NULL */
  bool ena;                /* EnaSupport and SriovNetSupport=simple */
  const char *imds_support; /* "v2.0" or NULL */
  const char *tpm_support;  /* "v2.0" or NULL */
  const char *root_device;
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

#endif
