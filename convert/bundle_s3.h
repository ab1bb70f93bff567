/* bundle_s3.h - a bundle written straight into S3 (bundle_s3.c): the parts
 * are PutObjects from memory as the bundle writer makes them, the manifest
 * last; resumable through a small state file. */
#ifndef AMIPORT_BUNDLE_S3_H
#define AMIPORT_BUNDLE_S3_H

#include <limits.h>

#include "bundle.h"
#include "s3.h"

struct bundle_s3_opts {
  const char *bucket;
  const char *key_prefix;  /* "" or a/b: the objects are a/b/PREFIX.part.NN */
  const char *acl;         /* canned ACL, or NULL */
  unsigned jobs;           /* parts in flight; 0: 3 */
};

struct bundle_s3_result {
  char location[2048];       /* BUCKET/KEY of the manifest */
  unsigned uploaded, skipped; /* parts sent; parts the bucket already held */
  bool resumed;              /* an interrupted run's key and IV were reused */
  char fresh_why[160];       /* a state was found but not used: why */
  char state_path[PATH_MAX];
  char in_bucket[512];       /* after a failure: the parts stored, "00-03, 05" */
};

/* Bundles src (bo gives everything but the sink, key and IV) into
 * BUCKET/KEY_PREFIX. Parts the bucket holds with the same size and MD5 are
 * made but not sent. The key and IV come from the state file of an earlier
 * run with the same source and target (they are kept there wrapped for
 * bo->user_cert, as in the manifest, and unwrapped with bo->user_key); the
 * state goes once the manifest is stored. */
int bundle_to_s3(struct img *src, struct bundle_opts *bo, struct aws_ctx *ctx,
                 const struct bundle_s3_opts *o, struct bundle_result *br,
                 struct bundle_s3_result *r, struct error *e);

#endif
