/* awsctx - test tool: resolves the AWS profile, region, endpoints and
 * credentials with aws_ctx_init and prints what it found, one key=value a
 * line: profile, region, endpoint_ebs, endpoint_ec2, endpoint_s3,
 * access_key, secret_sha256 (SHA-256 of the secret, never the secret),
 * token_present, source, expires (seconds since the epoch, 0 = never).
 *   awsctx [--profile P] [--region R] [--endpoint-url U] [--refresh] [--threads N]
 * --refresh: calls aws_ctx_creds (which refreshes credentials expiring within
 *   five minutes), then, when the credentials can be refreshed at all
 *   (credential_process, IMDS), makes them expire in 60 s and calls it again;
 *   the values printed are the last call's.
 * --threads N: N threads call aws_ctx_creds 20 times each at once (with
 *   --refresh, each first makes the credentials expire in 60 s, so refreshes
 *   and copies interleave); all must succeed.
 * Exit 0 ok, 1 error (the message on stderr), 2 usage. */
#include "aws.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker {
  struct aws_ctx *ctx;
  bool force;
  int failed;
  struct error e;
};

static void *worker_run(void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < 20 && !w->failed; i++) {
    struct aws_creds c;
    if (w->force && i == 0) {
      pthread_mutex_lock(&w->ctx->lock);
      w->ctx->creds.expires = time(NULL) + 60;
      pthread_mutex_unlock(&w->ctx->lock);
    }
    if (aws_ctx_creds(w->ctx, &c, &w->e) < 0 || !c.access_key[0] || !c.secret_key[0])
      w->failed = 1;
    memset(&c, 0, sizeof c);
  }
  return NULL;
}

int main(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "profile", required_argument, NULL, 'p' },
    { "region", required_argument, NULL, 'r' },
    { "endpoint-url", required_argument, NULL, 'u' },
    { "refresh", no_argument, NULL, 'f' },
    { "threads", required_argument, NULL, 't' },
    { 0 },
  };
  struct aws_opts o = { 0 };
  bool refresh = false;
  int threads = 0, c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 'p': o.profile = optarg; break;
    case 'r': o.region = optarg; break;
    case 'u': o.endpoint_url = optarg; break;
    case 'f': refresh = true; break;
    case 't': threads = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: awsctx [--profile P] [--region R] [--endpoint-url U] [--refresh] "
                      "[--threads N]\n");
      return 2;
    }
  }
  if (optind != argc || threads < 0 || threads > 64) {
    fprintf(stderr, "awsctx: no arguments besides the options; --threads 0..64\n");
    return 2;
  }

  struct error e = { 0 };
  struct aws_ctx ctx;
  if (aws_ctx_init(&ctx, &o, &e) < 0) {
    fprintf(stderr, "awsctx: %s\n", e.msg);
    return 1;
  }
  int rc = 1;
  struct aws_creds cr;
  if (aws_ctx_creds(&ctx, &cr, &e) < 0)
    goto fail;
  bool refreshable = ctx.credential_process[0] || ctx.from_imds;
  if (refresh && refreshable) {
    pthread_mutex_lock(&ctx.lock);
    ctx.creds.expires = time(NULL) + 60;
    pthread_mutex_unlock(&ctx.lock);
    if (aws_ctx_creds(&ctx, &cr, &e) < 0)
      goto fail;
  }
  if (threads) {
    pthread_t tid[64];
    struct worker w[64];
    for (int i = 0; i < threads; i++) {
      w[i] = (struct worker){ .ctx = &ctx, .force = refresh && refreshable };
      if (pthread_create(&tid[i], NULL, worker_run, &w[i]) != 0) {
        fprintf(stderr, "awsctx: pthread_create failed\n");
        threads = i;
        w[0].failed = 1;
        break;
      }
    }
    int failed = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(tid[i], NULL);
      if (w[i].failed) {
        fprintf(stderr, "awsctx: thread %d: %s\n", i, w[i].e.msg);
        failed = 1;
      }
    }
    if (failed)
      goto out;
    if (aws_ctx_creds(&ctx, &cr, &e) < 0)
      goto fail;
  }

  char hash[65];
  aws_sha256_hex(cr.secret_key, strlen(cr.secret_key), hash);
  printf("profile=%s\n", ctx.profile);
  printf("region=%s\n", ctx.region);
  printf("endpoint_ebs=%s\n", ctx.endpoint[AWS_EBS]);
  printf("endpoint_ec2=%s\n", ctx.endpoint[AWS_EC2]);
  printf("endpoint_s3=%s\n", ctx.endpoint[AWS_S3]);
  printf("access_key=%s\n", cr.access_key);
  printf("secret_sha256=%s\n", hash);
  printf("token_present=%s\n", cr.token[0] ? "yes" : "no");
  printf("source=%s\n", cr.source);
  printf("expires=%lld\n", (long long)cr.expires);
  rc = 0;
  goto out;
fail:
  fprintf(stderr, "awsctx: %s\n", e.msg);
out:
  memset(&cr, 0, sizeof cr);
  aws_ctx_free(&ctx);
  return rc;
}
