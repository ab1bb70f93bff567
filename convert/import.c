/* import.c - an image becomes an EBS snapshot and an AMI: StartSnapshot,
 * every block, CompleteSnapshot, wait, RegisterImage; resumable.
 *
 * The resume state is a small file in $XDG_STATE_HOME/amiport (default
 * ~/.local/state/amiport), named by what identifies the import: the image
 * (path, device, inode, size, mtime), where it goes (EBS endpoint, region)
 * and how (sparse mode, encryption). A 4 KiB text header (snapshot id,
 * client token, progress) is followed by one 32-byte SHA-256 per block,
 * mapped shared, so a block acknowledged is recorded even if the process is
 * then killed; all zeros means not acknowledged. The same digests give
 * CompleteSnapshot its LINEAR checksum without reading the image again.
 * Running the same command again resumes, or reports the finished result. */
#include "bundle.h"
#include "import.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ec2.h"

#define STATE_HEADER 4096
#define STATE_MAGIC "amiport import state 1\n"

struct state {
  char path[PATH_MAX];
  int fd;
  char key[65];
  char snapshot[EBS_ID_MAX], image[EBS_ID_MAX], token[65];
  char nonce[33];   /* random, made with the state: a new state, a new token */
  unsigned attempt;
  bool completed;
  uint64_t nblocks;
  uint8_t (*digests)[32];
  size_t maplen;
};

int amiport_state_dir(char *out, size_t len, struct error *e)
{
  const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
  if (x && *x == '/')
    snprintf(out, len, "%s/amiport", x);
  else if (home && *home)
    snprintf(out, len, "%s/.local/state/amiport", home);
  else
    return error_set(e, ERR_USAGE, "neither XDG_STATE_HOME nor HOME is set: nowhere to keep "
                                   "the import's resume state");
  /* mkdir -p */
  for (char *p = out + 1;; p++) {
    if (*p == '/' || !*p) {
      char c = *p;
      *p = 0;
      if (mkdir(out, 0700) < 0 && errno != EEXIST)
        return error_errno(e, "cannot create %s", out);
      *p = c;
      if (!c)
        break;
    }
  }
  return 0;
}

static void state_key(struct img *src, struct aws_ctx *ctx, const struct import_opts *o,
                      char key[65])
{
  char buf[8192], real[PATH_MAX];
  struct stat st = { 0 };
  if (!realpath(src->path, real))
    snprintf(real, sizeof real, "%s", src->path);
  stat(real, &st);
  /* a bundle at the same place may be another bundle: its digest tells */
  const struct manifest *m = bundle_image_manifest(src);
  int n = snprintf(buf, sizeof buf, "%s|%s|%llu|%llu|%llu|%lld.%09ld|%s|%s|%d|%d|%s", real,
                   m ? m->digest : "",
                   (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                   (unsigned long long)src->size, (long long)st.st_mtim.tv_sec,
                   st.st_mtim.tv_nsec, ctx->endpoint[AWS_EBS], ctx->region, (int)o->sparse,
                   (int)o->encrypted, o->kms_key_arn ? o->kms_key_arn : "");
  uint8_t d[32];
  ebs_sha256(buf, (size_t)n, d);
  for (int i = 0; i < 32; i++)
    sprintf(key + 2 * i, "%02x", d[i]);
}

static int state_save(struct state *s, struct error *e)
{
  char h[STATE_HEADER] = { 0 };
  snprintf(h, sizeof h, STATE_MAGIC "nonce %s\nsnapshot %s\nimage %s\nattempt %u\ncompleted %d\nblocks %llu\n",
           s->nonce, s->snapshot[0] ? s->snapshot : "-", s->image[0] ? s->image : "-", s->attempt,
           (int)s->completed, (unsigned long long)s->nblocks);
  if (pwrite(s->fd, h, sizeof h, 0) != (ssize_t)sizeof h)
    return error_errno(e, "cannot write the import state %s", s->path);
  return 0;
}

static void state_token(struct state *s)
{
  /* the same import (key) and attempt asks StartSnapshot with the same token,
   * so a retried call whose answer was lost cannot start a second snapshot */
  snprintf(s->token, sizeof s->token, "%.32s-%u", s->nonce, s->attempt);
}

static int state_parse(struct state *s, const char *h, struct error *e)
{
  char snap[EBS_ID_MAX], image[EBS_ID_MAX];
  unsigned long long blocks;
  int completed;
  if (strncmp(h, STATE_MAGIC, strlen(STATE_MAGIC)) != 0 ||
      sscanf(h + strlen(STATE_MAGIC), "nonce %32s\nsnapshot %63s\nimage %63s\nattempt %u\ncompleted %d\nblocks %llu",
             s->nonce, snap, image, &s->attempt, &completed, &blocks) != 6)
    return error_set(e, ERR_FORMAT, "%s: not an amiport import state (delete it to start over)",
                     s->path);
  if (blocks != s->nblocks)
    return error_set(e, ERR_FORMAT, "%s: state is for %llu blocks, the image has %llu", s->path,
                     blocks, (unsigned long long)s->nblocks);
  snprintf(s->snapshot, sizeof s->snapshot, "%s", strcmp(snap, "-") ? snap : "");
  snprintf(s->image, sizeof s->image, "%s", strcmp(image, "-") ? image : "");
  s->completed = completed != 0;
  return 0;
}

static int state_open(struct state *s, struct img *src, struct aws_ctx *ctx,
                      const struct import_opts *o, bool *existed, struct error *e)
{
  char dir[PATH_MAX - 100];
  if (amiport_state_dir(dir, sizeof dir, e) < 0)
    return -1;
  state_key(src, ctx, o, s->key);
  snprintf(s->path, sizeof s->path, "%s/import-%.32s.state", dir, s->key);
  s->nblocks = (src->size + EBS_BLOCK - 1) / EBS_BLOCK;
  s->fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->fd < 0)
    return error_errno(e, "cannot open the import state %s", s->path);
  struct stat st;
  fstat(s->fd, &st);
  *existed = st.st_size > 0;
  if (*existed) {
    char h[STATE_HEADER + 1] = { 0 };
    if (pread(s->fd, h, STATE_HEADER, 0) != STATE_HEADER)
      return error_set(e, ERR_FORMAT, "%s: truncated import state (delete it to start over)",
                       s->path);
    if (state_parse(s, h, e) < 0)
      return -1;
  } else {
    uint8_t r[16];
    if (RAND_bytes(r, sizeof r) != 1)
      return error_set(e, ERR_IO, "cannot draw random bytes for the import's client token");
    for (int i = 0; i < 16; i++)
      sprintf(s->nonce + 2 * i, "%02x", r[i]);
    if (state_save(s, e) < 0)
      return -1;
  }
  s->maplen = (size_t)s->nblocks * 32;
  if (ftruncate(s->fd, (off_t)(STATE_HEADER + s->maplen)) < 0)
    return error_errno(e, "cannot size the import state %s", s->path);
  s->digests = mmap(NULL, s->maplen ? s->maplen : 1, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
                    STATE_HEADER);
  if (s->digests == MAP_FAILED) {
    s->digests = NULL;
    return error_errno(e, "cannot map the import state %s", s->path);
  }
  state_token(s);
  return 0;
}

static void state_close(struct state *s)
{
  if (s->digests) {
    msync(s->digests, s->maplen, MS_SYNC);
    munmap(s->digests, s->maplen);
  }
  if (s->fd >= 0)
    close(s->fd);
}

/* A new snapshot: forget what the old one held. */
static int state_restart(struct state *s, struct error *e)
{
  memset(s->digests, 0, s->maplen);
  s->snapshot[0] = s->image[0] = 0;
  s->completed = false;
  s->attempt++;
  state_token(s);
  return state_save(s, e);
}

int import_image(struct img *src, struct aws_ctx *ctx, const struct import_opts *o,
                 struct import_result *r, struct error *e)
{
  struct state s = { .fd = -1 };
  bool existed;
  int rc = -1;
  memset(r, 0, sizeof *r);
  uint64_t gib = (src->size + (1ull << 30) - 1) >> 30;
  if (gib == 0)
    gib = 1;
  if (gib > EBS_MAX_VOLUME_GIB)
    return error_set(e, ERR_UNSUPPORTED, "%s: %llu GiB is larger than an EBS snapshot can be "
                     "(%u GiB)", src->path, (unsigned long long)gib, EBS_MAX_VOLUME_GIB);
  if (state_open(&s, src, ctx, o, &existed, e) < 0)
    goto out;
  snprintf(r->state_path, sizeof r->state_path, "%s", s.path);
  if (o->resume_only && !s.snapshot[0]) {
    error_set(e, ERR_USAGE, "%s: nothing to resume (no pending import of this image to %s)",
              src->path, ctx->endpoint[AWS_EBS]);
    unlink(s.path);
    goto out;
  }
  if (s.image[0] && !o->no_register) {
    snprintf(r->snapshot_id, sizeof r->snapshot_id, "%s", s.snapshot);
    snprintf(r->image_id, sizeof r->image_id, "%s", s.image);
    r->already_done = true;
    rc = 0;
    goto out;
  }

  if (s.snapshot[0]) {
    char st[32];
    if (ec2_snapshot_state(ctx, s.snapshot, st, sizeof st, NULL, 0, e) < 0)
      goto out;
    if (strcmp(st, "pending") == 0 || strcmp(st, "completed") == 0) {
      r->resumed = true;
      if (strcmp(st, "completed") == 0)
        s.completed = true;
    } else {
      if (o->on_event)
        o->on_event(o->event_arg, strcmp(st, "error") == 0 ? IMPORT_EXPIRED : IMPORT_LOST,
                    s.snapshot);
      if (state_restart(&s, e) < 0)
        goto out;
    }
  }
  if (!s.snapshot[0]) {
    struct ebs_start st = { .volume_gib = gib, .client_token = s.token,
                            .description = o->description, .encrypted = o->encrypted,
                            .kms_key_arn = o->kms_key_arn, .timeout_min = o->timeout_min,
                            .tags = o->tags, .ntags = o->ntags };
    if (ebs_start_snapshot(ctx, &st, s.snapshot, e) < 0)
      goto out;
    if (state_save(&s, e) < 0)
      goto out;
  }
  snprintf(r->snapshot_id, sizeof r->snapshot_id, "%s", s.snapshot);
  if (o->on_event)
    o->on_event(o->event_arg, r->resumed ? IMPORT_RESUMED : IMPORT_STARTED, s.snapshot);

  if (!s.completed) {
    struct ebs_upload u = { .src = src, .snapshot_id = s.snapshot, .sparse = o->sparse,
                            .jobs = o->jobs, .threads = o->threads, .max_rate = o->max_rate,
                            .progress = o->progress, .cancel = o->cancel,
                            .digests = s.digests, .nblocks = s.nblocks };
    int up = ebs_upload_blocks(ctx, &u, e);
    r->blocks_uploaded = u.blocks_uploaded;
    r->bytes_uploaded = u.bytes_uploaded;
    r->blocks_skipped = u.blocks_skipped;
    r->blocks_before = u.blocks_before;
    r->retries = u.retries;
    r->upload_seconds = u.seconds;
    msync(s.digests, s.maplen, MS_SYNC);
    if (up < 0 && img_sequential(src) && e->code == ERR_FORMAT) {
      /* a damaged stream (a bundle part or its digest): nothing to resume */
      struct error de;
      unlink(s.path);
      if (ec2_delete_snapshot(ctx, s.snapshot, &de) == 0)
        error_prefix(e, "snapshot %s deleted, nothing registered", s.snapshot);
      else
        error_prefix(e, "snapshot %s left behind (deleting it failed: %s)", s.snapshot, de.msg);
    }
    if (up < 0)
      goto out;
    uint8_t linear[32];
    uint64_t changed;
    ebs_linear_checksum((const uint8_t(*)[32])s.digests, s.nblocks, linear, &changed);
    if (ebs_complete_snapshot(ctx, s.snapshot, changed, linear, e) < 0)
      goto out;
    s.completed = true;
    if (state_save(&s, e) < 0)
      goto out;
  }
  if (ec2_wait(ctx, s.snapshot, o->wait_timeout_s, o->progress, o->cancel, e) < 0)
    goto out;
  r->completed = true;
  if (o->no_register) {
    rc = 0;
    goto out;
  }
  /* the root, then what o->reg maps besides it (instance-store volumes) */
  struct ec2_disk disks[1 + IMPORT_MAX_EXTRA] = {
    { .device = o->reg.root_device, .snapshot_id = s.snapshot } };
  struct ec2_register reg = o->reg;
  if (o->before_register && o->before_register(o->event_arg, s.snapshot, &reg, e) < 0)
    goto out;
  disks[0].device = reg.root_device;
  size_t n = 1;
  for (size_t i = 0; i < o->reg.ndisks && n < 1 + IMPORT_MAX_EXTRA; i++)
    disks[n++] = o->reg.disks[i];
  reg.disks = disks;
  reg.ndisks = n;
  if (ec2_register_image(ctx, &reg, s.image, e) < 0)
    goto out;
  snprintf(r->image_id, sizeof r->image_id, "%s", s.image);
  if (state_save(&s, e) < 0)
    goto out;
  rc = 0;
out:
  state_close(&s);
  return rc;
}
