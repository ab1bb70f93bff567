/* ebs.h - the EBS direct API (ebs.c): snapshots written block by block. */
#ifndef AMIPORT_EBS_H
#define AMIPORT_EBS_H

#include <pthread.h>
#include <signal.h>

#include "aws.h"
#include "image.h"

#define EBS_BLOCK 524288u          /* the API's only block size */
#define EBS_ID_MAX 64
#define EBS_MAX_VOLUME_GIB 65536u

enum ebs_sparse {
  EBS_SPARSE_NONE,  /* every block is uploaded (safe for encrypted launches) */
  EBS_SPARSE_HOLES, /* blocks the source never wrote are left out */
  EBS_SPARSE_ZEROS, /* every all-zero block is left out */
};

struct aws_tag {
  const char *key, *value;
};

struct ebs_start {
  uint64_t volume_gib;
  const char *client_token, *description, *kms_key_arn;
  bool encrypted;
  unsigned timeout_min; /* 0: the service's default (60) */
  const struct aws_tag *tags;
  size_t ntags;
};

/* The SnapshotId of a StartSnapshot answer. */
int ebs_parse_snapshot_id(const char *body, char id[EBS_ID_MAX], struct error *e);
int ebs_start_snapshot(struct aws_ctx *ctx, const struct ebs_start *s, char id[EBS_ID_MAX],
                       struct error *e);
/* linear: the LINEAR aggregate checksum (32 bytes) or NULL to send none. */
int ebs_complete_snapshot(struct aws_ctx *ctx, const char *id, uint64_t changed,
                          const uint8_t *linear, struct error *e);

/* Several uploads at once (the disks of one import): one progress line,
 * each pipe adding what it did since it last reported, and one stop. */
struct ebs_progress {
  pthread_mutex_t lock;
  uint64_t done, total; /* blocks over all the uploads */
  uint64_t bytes;
  double start, last;
  volatile sig_atomic_t stop; /* one upload failed: the others stop too */
};

struct ebs_upload {
  struct img *src;
  const char *snapshot_id;
  enum ebs_sparse sparse;
  unsigned jobs;      /* requests in flight; 0: 64 */
  unsigned threads;   /* reader threads; 0: one per core */
  double max_rate;    /* requests per second; 0: unpaced */
  bool progress;
  struct ebs_progress *group; /* or NULL; with progress, its line is drawn instead */
  const volatile sig_atomic_t *cancel;
  /* one digest per block; all-zero means not acknowledged yet. Blocks already
   * set are not sent again (resume); each block acknowledged is set. */
  uint8_t (*digests)[32];
  uint64_t nblocks;
  /* results */
  uint64_t blocks_before, blocks_uploaded, blocks_skipped, bytes_uploaded, bytes_read;
  unsigned retries;
  double seconds;
};

/* Sends every block of src the sparse mode asks for into a pending snapshot. */
int ebs_upload_blocks(struct aws_ctx *ctx, struct ebs_upload *u, struct error *e);

/* A snapshot's block list, from ListSnapshotBlocks pages (ebs_read.c). */
struct ebs_blocks {
  uint64_t volume_gib;
  uint64_t n, cap;
  uint64_t *index; /* ascending */
  char **token;
  double expires;  /* the tokens' ExpiryTime, seconds since the epoch; 0: not said */
};
/* Adds one page (an untrusted JSON answer) to l: every index inside the
 * volume and above the last, tokens bounded, at most max_bytes of list;
 * next gets the page token to ask for next, percent-encoded, or "". */
int ebs_blocks_page(struct ebs_blocks *l, const char *snap, const char *body, uint64_t max_bytes,
                    char *next, size_t nextlen, struct error *e);
void ebs_blocks_free(struct ebs_blocks *l);

/* A completed snapshot as a read-only image (ebs_read.c): its map from
 * ListSnapshotBlocks, its data from GetSnapshotBlock, each block verified.
 * The image owns its own AWS context, made from ao. */
struct img *ebs_open(const struct aws_opts *ao, const char *snapshot_id,
                     uint64_t max_table_bytes, struct error *e);
/* GetSnapshotBlock answers an image from ebs_open has used so far. */
uint64_t ebs_blocks_fetched(struct img *im);

/* SHA-256 over the digests set, in block order; *changed counts them. */
void ebs_linear_checksum(const uint8_t (*digests)[32], uint64_t nblocks, uint8_t out[32],
                         uint64_t *changed);
bool ebs_digest_set(const uint8_t d[32]);
void ebs_sha256(const void *buf, size_t len, uint8_t out[32]);
void ebs_base64(const uint8_t *in, size_t len, char *out); /* out: 4*ceil(len/3)+1 */

#endif
