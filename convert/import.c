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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ec2.h"
#include "progress.h"

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

static void state_key(struct img *src, size_t index, struct aws_ctx *ctx,
                      const struct import_opts *o, char key[65])
{
  char buf[8192], real[PATH_MAX];
  struct stat st = { 0 };
  /* a bundle at the same place may be another bundle: its digest tells */
  const struct manifest *m = bundle_image_manifest(src);
  if (o->state_id) {
    /* the source's identity: a bundle's image digest (it may be in S3),
     * else the file's size and mtime */
    if (!m)
      stat(src->path, &st);
    int n = snprintf(buf, sizeof buf, "task|%s|disk%zu|%llu|%s|%lld.%09ld|%s|%s|%d|%d|%s",
                     o->state_id, index, (unsigned long long)src->size, m ? m->digest : "",
                     (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, ctx->endpoint[AWS_EBS],
                     ctx->region, (int)o->sparse, (int)o->encrypted,
                     o->kms_key_arn ? o->kms_key_arn : "");
    uint8_t d[32];
    ebs_sha256(buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, d);
    for (int i = 0; i < 32; i++)
      sprintf(key + 2 * i, "%02x", d[i]);
    return;
  }
  if (!realpath(src->path, real))
    snprintf(real, sizeof real, "%s", src->path);
  stat(real, &st);
  int n = snprintf(buf, sizeof buf, "%s|%s|%llu|%llu|%llu|%lld.%09ld|%s|%s|%d|%d|%s", real,
                   m ? m->digest : "",
                   (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                   (unsigned long long)src->size, (long long)st.st_mtim.tv_sec,
                   st.st_mtim.tv_nsec, ctx->endpoint[AWS_EBS], ctx->region, (int)o->sparse,
                   (int)o->encrypted, o->kms_key_arn ? o->kms_key_arn : "");
  /* an OVA's other disks: the same file, another disk (the first keeps the
   * key it always had) */
  if (img_ova_disk(src) > 1 && n > 0 && (size_t)n < sizeof buf)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "|disk%u", img_ova_disk(src));
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

static int state_open(struct state *s, struct img *src, size_t index, struct aws_ctx *ctx,
                      const struct import_opts *o, bool *existed, struct error *e)
{
  char dir[PATH_MAX - 100];
  if (amiport_state_dir(dir, sizeof dir, e) < 0)
    return -1;
  state_key(src, index, ctx, o, s->key);
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
  } else if (o->state_id) {
    /* lost state, same token: StartSnapshot answers with the same snapshot */
    char t[80];
    uint8_t d[32];
    snprintf(t, sizeof t, "token|%s", s->key);
    ebs_sha256(t, strlen(t), d);
    for (int i = 0; i < 16; i++)
      sprintf(s->nonce + 2 * i, "%02x", d[i]);
    if (state_save(s, e) < 0)
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

/* One disk of an import as it goes: its state and its upload. */
struct job {
  struct import_disk *d;
  size_t index;
  struct state s;
  bool created;           /* this run started its snapshot */
  struct ebs_upload u;
  struct aws_ctx *ctx;
  int rc;
  struct error e;
  pthread_t th;
};

/* Opens the disk's state and gets its snapshot: the pending one of an
 * interrupted run, or a new one. 1: the state says the import is done. */
static int job_begin(struct job *j, struct aws_ctx *ctx, const struct import_opts *o,
                     struct error *e)
{
  struct img *src = j->d->src;
  struct import_result *r = &j->d->r;
  struct state *s = &j->s;
  bool existed = false;
  uint64_t gib = (src->size + (1ull << 30) - 1) >> 30;
  if (gib == 0)
    gib = 1;
  if (gib > EBS_MAX_VOLUME_GIB)
    return error_set(e, ERR_UNSUPPORTED, "%s: %llu GiB is larger than an EBS snapshot can be "
                     "(%u GiB)", src->path, (unsigned long long)gib, EBS_MAX_VOLUME_GIB);
  if (state_open(s, src, j->index, ctx, o, &existed, e) < 0)
    return -1;
  snprintf(r->state_path, sizeof r->state_path, "%s", s->path);
  if (o->resume_only && !s->snapshot[0]) {
    unlink(s->path);
    return error_set(e, ERR_USAGE, "%s: nothing to resume (no pending import of this image to %s)",
                     src->path, ctx->endpoint[AWS_EBS]);
  }
  if (s->image[0] && !o->no_register) {
    snprintf(r->snapshot_id, sizeof r->snapshot_id, "%s", s->snapshot);
    snprintf(r->image_id, sizeof r->image_id, "%s", s->image);
    r->completed = true;
    return 1;
  }
  if (s->snapshot[0]) {
    char st[32];
    if (ec2_snapshot_state(ctx, s->snapshot, st, sizeof st, NULL, 0, e) < 0)
      return -1;
    if (strcmp(st, "pending") == 0 || strcmp(st, "completed") == 0) {
      r->resumed = true;
      if (strcmp(st, "completed") == 0)
        s->completed = true;
    } else {
      if (o->on_event)
        o->on_event(o->event_arg, strcmp(st, "error") == 0 ? IMPORT_EXPIRED : IMPORT_LOST,
                    s->snapshot);
      if (state_restart(s, e) < 0)
        return -1;
    }
  }
  if (!s->snapshot[0]) {
    struct ebs_start st = { .volume_gib = gib, .client_token = s->token,
                            .description = o->description, .encrypted = o->encrypted,
                            .kms_key_arn = o->kms_key_arn, .timeout_min = o->timeout_min,
                            .tags = o->tags, .ntags = o->ntags };
    if (ebs_start_snapshot(ctx, &st, s->snapshot, e) < 0)
      return -1;
    j->created = true;
    if (o->state_id && !existed) {
      /* a task whose state was lost: its token may name the snapshot an
       * earlier run made, complete already */
      char sst[32];
      if (ec2_snapshot_state(ctx, s->snapshot, sst, sizeof sst, NULL, 0, e) < 0)
        return -1;
      if (strcmp(sst, "completed") == 0) {
        s->completed = r->resumed = true;
        j->created = false;
      }
    }
    if (state_save(s, e) < 0)
      return -1;
  }
  snprintf(r->snapshot_id, sizeof r->snapshot_id, "%s", s->snapshot);
  if (o->on_event)
    o->on_event(o->event_arg, r->resumed ? IMPORT_RESUMED : IMPORT_STARTED, s->snapshot);
  return 0;
}

static void *job_upload(void *arg)
{
  struct job *j = arg;
  j->rc = ebs_upload_blocks(j->ctx, &j->u, &j->e);
  if (j->rc < 0 && j->u.group)
    j->u.group->stop = 1;
  return NULL;
}

/* Uploads every disk still pending and completes its snapshot. Several
 * disks upload at once, each in a thread of its own with its share of
 * o->jobs: the upload pipeline stays the one-image pipeline it is, the
 * budget is still o->jobs requests in flight, and the slowest disk alone
 * decides when the uploads end (splitting one pipeline's slots between
 * disks would buy nothing the threads do not). */
static int upload_all(struct job *jobs, size_t n, struct aws_ctx *ctx, const struct import_opts *o,
                      struct error *e)
{
  size_t todo = 0;
  for (size_t i = 0; i < n; i++)
    todo += !jobs[i].s.completed;
  if (!todo)
    return 0;
  unsigned budget = o->jobs ? o->jobs : 64;
  unsigned share = budget / (unsigned)todo ? budget / (unsigned)todo : 1;
  struct ebs_progress g = { .start = mono_now() };
  pthread_mutex_init(&g.lock, NULL);
  for (size_t i = 0; i < n; i++)
    if (!jobs[i].s.completed)
      g.total += jobs[i].s.nblocks;
  for (size_t i = 0; i < n; i++) {
    struct job *j = &jobs[i];
    if (j->s.completed)
      continue;
    j->ctx = ctx;
    j->u = (struct ebs_upload){ .src = j->d->src, .snapshot_id = j->s.snapshot,
                                .sparse = o->sparse, .jobs = todo > 1 ? share : o->jobs,
                                .threads = todo > 1 && o->threads ? (o->threads + 1) / 2 : o->threads,
                                .max_rate = o->max_rate, .progress = o->progress,
                                .group = todo > 1 ? &g : NULL, .cancel = o->cancel,
                                .digests = j->s.digests, .nblocks = j->s.nblocks };
    j->e = (struct error){ 0 };
    if (todo == 1)
      job_upload(j);
    else if (pthread_create(&j->th, NULL, job_upload, j) != 0) {
      j->rc = -1;
      error_set(&j->e, ERR_NOMEM, "cannot start an upload thread");
      j->th = 0;
    }
  }
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    struct job *j = &jobs[i];
    if (j->s.completed)
      continue;
    if (todo > 1 && j->th)
      pthread_join(j->th, NULL);
    struct import_result *r = &j->d->r;
    r->blocks_uploaded = j->u.blocks_uploaded;
    r->bytes_uploaded = j->u.bytes_uploaded;
    r->blocks_skipped = j->u.blocks_skipped;
    r->blocks_before = j->u.blocks_before;
    r->retries = j->u.retries;
    r->upload_seconds = j->u.seconds;
    msync(j->s.digests, j->s.maplen, MS_SYNC);
    if (j->rc < 0 && rc == 0) {
      /* the first failure tells; an interruption only if nothing else failed */
      *e = j->e;
      if (n > 1)
        error_prefix(e, "%s", j->d->src->path);
      rc = -1;
    } else if (j->rc < 0 && e->code == ERR_INTERRUPTED && j->e.code != ERR_INTERRUPTED) {
      *e = j->e;
      error_prefix(e, "%s", j->d->src->path);
    }
  }
  if (o->progress && todo > 1)
    fputc('\n', stderr);
  pthread_mutex_destroy(&g.lock);
  for (size_t i = 0; i < n && rc == 0; i++) {
    struct job *j = &jobs[i];
    if (j->s.completed)
      continue;
    uint8_t linear[32];
    uint64_t changed;
    ebs_linear_checksum((const uint8_t(*)[32])j->s.digests, j->s.nblocks, linear, &changed);
    if (ebs_complete_snapshot(ctx, j->s.snapshot, changed, linear, e) < 0 ||
        (j->s.completed = true, state_save(&j->s, e) < 0))
      rc = -1;
  }
  return rc;
}

/* Whether a failed import is for good: a source that is damaged or cannot
 * be read fails the same way on a rerun. Anything else (an interruption,
 * the network, the service, a snapshot not registered) leaves the snapshots
 * and their state for a rerun to continue. */
static bool source_at_fault(int code)
{
  return code == ERR_FORMAT || code == ERR_UNSUPPORTED || code == ERR_IO;
}

/* A failure for good: the snapshots this run started go, with their state,
 * and the error says which (or which were kept). */
static void drop_partial(struct job *jobs, size_t n, struct aws_ctx *ctx, bool keep,
                         struct error *e)
{
  char gone[1024] = "", left[1024] = "";
  for (size_t i = 0; i < n; i++) {
    struct job *j = &jobs[i];
    if (!j->created || !j->s.snapshot[0])
      continue;
    struct error de = { 0 };
    char *to = keep ? left : gone;
    if (!keep && ec2_delete_snapshot(ctx, j->s.snapshot, &de) == 0)
      unlink(j->s.path);
    else if (!keep)
      to = left;
    snprintf(to + strlen(to), 1024 - strlen(to), "%s%s (%s)", to[0] ? ", " : "", j->s.snapshot,
             j->d->src->path);
  }
  if (gone[0] && left[0])
    error_prefix(e, "deleted snapshot(s) %s; kept %s", gone, left);
  else if (gone[0])
    error_prefix(e, "deleted snapshot(s) %s, nothing registered", gone);
  else if (left[0])
    error_prefix(e, "kept snapshot(s) %s%s, nothing registered", left,
                 keep ? " (--keep-partial)" : " (deleting them failed)");
}

int import_disks(struct import_disk *d, size_t n, struct aws_ctx *ctx,
                 const struct import_opts *o, struct error *e)
{
  if (n == 0 || n > IMPORT_MAX_DISKS)
    return error_set(e, ERR_USAGE, "an import takes 1 to %d disks, not %zu", IMPORT_MAX_DISKS, n);
  struct job jobs[IMPORT_MAX_DISKS];
  int rc = -1;
  size_t opened = 0, done = 0;
  for (size_t i = 0; i < n; i++) {
    jobs[i] = (struct job){ .d = &d[i], .index = i, .s = { .fd = -1 } };
    memset(&d[i].r, 0, sizeof d[i].r);
  }
  for (; opened < n; opened++) {
    int b = job_begin(&jobs[opened], ctx, o, e);
    if (b < 0) {
      opened++;
      goto fail;
    }
    done += b == 1;
  }
  /* registered already (every disk's state holds the image, or a run stopped
   * while recording it with every snapshot complete): the result again */
  if (done && done < n && !o->no_register) {
    const char *image = NULL;
    bool all = true;
    for (size_t i = 0; i < n; i++) {
      all &= jobs[i].s.completed;
      if (jobs[i].s.image[0])
        image = jobs[i].s.image;
    }
    for (size_t i = 0; all && i < n; i++)
      if (!jobs[i].s.image[0]) {
        snprintf(jobs[i].s.image, sizeof jobs[i].s.image, "%s", image);
        snprintf(d[i].r.image_id, sizeof d[i].r.image_id, "%s", image);
        snprintf(d[i].r.snapshot_id, sizeof d[i].r.snapshot_id, "%s", jobs[i].s.snapshot);
        if (state_save(&jobs[i].s, e) < 0)
          goto out;
        done++;
      }
  }
  if (done == n) {
    for (size_t i = 0; i < n; i++)
      d[i].r.already_done = true;
    rc = 0;
    goto out;
  }
  if (upload_all(jobs, n, ctx, o, e) < 0)
    goto fail;
  for (size_t i = 0; i < n; i++) {
    if (ec2_wait(ctx, jobs[i].s.snapshot, o->wait_timeout_s, o->progress, o->cancel, e) < 0)
      goto fail;
    d[i].r.completed = true;
  }
  if (o->no_register) {
    rc = 0;
    goto out;
  }
  /* the root, the other disks, then what o->reg maps besides (instance-store volumes) */
  struct ec2_disk disks[IMPORT_MAX_DISKS + IMPORT_MAX_EXTRA];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t gib = (d[i].src->size + (1ull << 30) - 1) >> 30;
    disks[m++] = (struct ec2_disk){ .device = i ? d[i].device : o->reg.root_device,
                                    .snapshot_id = jobs[i].s.snapshot,
                                    .volume_gib = n > 1 ? (gib ? gib : 1) : 0 };
  }
  for (size_t i = 0; i < o->reg.ndisks && i < IMPORT_MAX_EXTRA; i++)
    disks[m++] = o->reg.disks[i];
  struct ec2_register reg = o->reg;
  if (o->before_register && o->before_register(o->event_arg, jobs[0].s.snapshot, &reg, e) < 0)
    goto out; /* the snapshots stay, complete but not registered */
  reg.disks = disks;
  reg.ndisks = m;
  char image[EBS_ID_MAX] = "";
  if (o->reuse_image) {
    int f = ec2_find_image(ctx, reg.name, reg.tags, reg.ntags, image, e);
    if (f < 0)
      goto out; /* the snapshots are complete; a rerun registers them */
    for (size_t i = 0; f > 0 && i < n; i++)
      d[i].r.image_reused = true;
  }
  if (!image[0] && ec2_register_image(ctx, &reg, image, e) < 0)
    goto fail;
  for (size_t i = 0; i < n; i++) {
    snprintf(d[i].r.image_id, sizeof d[i].r.image_id, "%s", image);
    snprintf(jobs[i].s.image, sizeof jobs[i].s.image, "%s", image);
    if (state_save(&jobs[i].s, e) < 0)
      goto out;
  }
  rc = 0;
  goto out;
fail:
  if (source_at_fault(e->code))
    drop_partial(jobs, opened, ctx, o->keep_partial, e);
out:
  for (size_t i = 0; i < opened; i++)
    state_close(&jobs[i].s);
  return rc;
}

int import_image(struct img *src, struct aws_ctx *ctx, const struct import_opts *o,
                 struct import_result *r, struct error *e)
{
  struct import_disk d = { .src = src };
  int rc = import_disks(&d, 1, ctx, o, e);
  *r = d.r;
  return rc;
}
