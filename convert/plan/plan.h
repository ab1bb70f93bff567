/* plan.h - a fleet's migration plan: a JSON Lines file, one VM a line
 * (plan.c). Every line is validated when the plan is read; an error names
 * the file, the line, the field and the value. */
#ifndef AMIPORT_PLAN_H
#define AMIPORT_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "ebs.h"
#include "error.h"

#define PLAN_MAX_DISKS 16  /* IMPORT_MAX_DISKS */
#define PLAN_MAX_TAGS 40   /* EC2 allows 50; the plan's own tags take some */
#define PLAN_NAME_MAX 128  /* an AMI name's limit, and a ledger file's */

/* The import options a line may set ("options": {...}); unset ones keep
 * the import's defaults. */
struct plan_options {
  const char *arch, *boot_mode, *volume_type, *root_device, *imds_support, *tpm_support;
  const char *kms_key_id;
  int ena;                /* -1: what check finds */
  int sparse;             /* -1: none; else enum ebs_sparse */
  bool encrypted, keep_volumes, force, no_register;
  unsigned jobs;          /* 0: the default */
  double max_rate;        /* < 0: the default */
  unsigned timeout_min;   /* 0: the service's */
  unsigned root_disk;     /* 1-based; 0: the first disk, or an OVA's one bootable disk */
};

struct plan_line {
  unsigned lineno;        /* 1-based, in the file */
  const char *name, *ami_name, *description;
  const char *disks[PLAN_MAX_DISKS];
  size_t ndisks;
  struct aws_tag tags[PLAN_MAX_TAGS];
  size_t ntags;
  struct plan_options opt;
};

struct plan {
  char *path;
  char name[PLAN_NAME_MAX + 1];  /* the file's name without .jsonl/.json */
  char digest[65];               /* SHA-256 of the file's bytes, hex */
  struct plan_line *lines;
  size_t n;
  void *docs;                    /* the parsed lines, which the strings point into */
};

/* Reads and validates PATH. */
int plan_load(const char *path, struct plan *p, struct error *e);
/* The same for bytes already read (path names them in errors). */
int plan_parse(const char *buf, size_t len, const char *path, struct plan *p, struct error *e);
void plan_free(struct plan *p);

/* The line named name, or NULL. */
const struct plan_line *plan_find(const struct plan *p, const char *name);

#endif
