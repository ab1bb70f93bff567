/* import.h - an image becomes an EBS snapshot and an AMI (import.c). */
#ifndef AMIPORT_IMPORT_H
#define AMIPORT_IMPORT_H

#include <limits.h>
#include <signal.h>

#include "ec2.h"

enum import_event {
  IMPORT_STARTED, /* a new snapshot: its id, the moment StartSnapshot answers */
  IMPORT_RESUMED, /* the pending snapshot of an interrupted run */
  IMPORT_EXPIRED, /* the interrupted run's snapshot timed out; a new one follows */
  IMPORT_LOST,    /* the interrupted run's snapshot is gone; a new one follows */
};

#define IMPORT_MAX_EXTRA 24

struct import_opts {
  const char *description;
  const struct aws_tag *tags; /* on the snapshot (and, through reg, the image) */
  size_t ntags;
  bool encrypted;
  const char *kms_key_arn;
  unsigned timeout_min;       /* StartSnapshot Timeout; 0: the service's 60 */
  enum ebs_sparse sparse;
  unsigned jobs, threads;
  double max_rate;
  bool progress;
  bool no_register;
  bool keep_partial;          /* a source at fault keeps the snapshots anyway */
  bool resume_only;           /* fail unless an interrupted import exists */
  unsigned wait_timeout_s;    /* 0: wait as long as it takes */
  struct ec2_register reg;    /* everything but the root disk; its disks, if any, are
                                 mapped too (at most IMPORT_MAX_EXTRA) */
  /* A plan's task: each disk's resume state and ClientToken derive from
   * this, the disk's index and the source's identity (its size and mtime;
   * a bundle's image digest), not a random nonce, so a task rerun anywhere asks for the same snapshots. */
  const char *state_id;
  /* Before RegisterImage: an AMI of reg.name carrying the same amiport:*
   * tags as reg.tags is taken as this import's (a rerun registers none). */
  bool reuse_image;
  const volatile sig_atomic_t *cancel;
  void (*on_event)(void *arg, enum import_event ev, const char *snapshot_id);
  void *event_arg;
  /* Optional: called with the completed snapshot before it is registered,
   * to inspect it and settle what reg says (a source read as a stream is
   * inspected only then); -1 stops the import (the snapshot stays). */
  int (*before_register)(void *arg, const char *snapshot_id, struct ec2_register *reg,
                         struct error *e);
};

struct import_result {
  char snapshot_id[EBS_ID_MAX], image_id[EBS_ID_MAX];
  char state_path[PATH_MAX];
  bool resumed, already_done;
  bool image_reused;          /* reuse_image found it */
  bool completed;             /* the snapshot is complete (registration may not be) */
  uint64_t blocks_before, blocks_uploaded, blocks_skipped, bytes_uploaded;
  unsigned retries;
  double upload_seconds;
};

int import_image(struct img *src, struct aws_ctx *ctx, const struct import_opts *o,
                 struct import_result *r, struct error *e);

#define IMPORT_MAX_DISKS 16

/* One disk of a VM: the first is the root (o->reg.root_device), the others
 * map at their own device. */
struct import_disk {
  struct img *src;
  const char *device;        /* the others: /dev/sdb... (not used for the root) */
  struct import_result r;    /* image_id is the same on every disk */
};

/* Several disks become one AMI: every disk gets its snapshot (each with its
 * own resume state, as import_image), the uploads share o->jobs, and one
 * RegisterImage maps them all once every snapshot is complete. A failure
 * of a source (damaged, unreadable: a rerun fails the same way) deletes the
 * snapshots this run started (unless o->keep_partial) and the error names
 * them; any other failure leaves them and their state for a rerun. */
int import_disks(struct import_disk *d, size_t n, struct aws_ctx *ctx,
                 const struct import_opts *o, struct error *e);

/* $XDG_STATE_HOME/amiport (else ~/.local/state/amiport), created when
 * missing: where resume state is kept (import, bundle --bucket). */
int amiport_state_dir(char *out, size_t len, struct error *e);

#endif
