/* ebs.c - the EBS direct API: StartSnapshot, PutSnapshotBlock for every block
 * of an image, CompleteSnapshot. Wire facts: AWS's EBS direct API reference
 * and botocore's ebs service model (rest-json, SigV4 service "ebs").
 *
 * The upload is a pipeline on every core: reader threads take the next block
 * the image's map says to send, read and hash it (SHA-256, the per-block
 * checksum AWS verifies) into one of `jobs` slots; the calling thread keeps
 * a libcurl multi handle with every ready slot in flight, paces itself under
 * the per-snapshot request rate, retries what may succeed on retry, and
 * records each acknowledged block's digest in the caller's array (the resume
 * state, and the input of the LINEAR aggregate checksum). */
#include "ebs.h"
#include "progress.h"

#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ebs_sha256(const void *buf, size_t len, uint8_t out[32])
{
  unsigned n = 32;
  EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

void ebs_base64(const uint8_t *in, size_t len, char *out)
{
  EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

bool ebs_digest_set(const uint8_t d[32])
{
  for (int i = 0; i < 32; i++)
    if (d[i])
      return true;
  return false;
}

/* ---- control-plane calls --------------------------------------------------- */

int ebs_parse_snapshot_id(const char *body, char id[EBS_ID_MAX], struct error *e)
{
  json_object *j = json_tokener_parse(body), *v;
  int rc = 0;
  if (j && json_object_object_get_ex(j, "SnapshotId", &v) &&
      json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 5 &&
      json_object_get_string_len(v) < EBS_ID_MAX)
    snprintf(id, EBS_ID_MAX, "%s", json_object_get_string(v));
  else
    rc = error_set(e, ERR_REMOTE, "EBS StartSnapshot: the answer has no SnapshotId");
  json_object_put(j);
  return rc;
}

int ebs_start_snapshot(struct aws_ctx *ctx, const struct ebs_start *s, char id[EBS_ID_MAX],
                       struct error *e)
{
  json_object *req = json_object_new_object();
  json_object_object_add(req, "VolumeSize", json_object_new_int64((int64_t)s->volume_gib));
  if (s->client_token)
    json_object_object_add(req, "ClientToken", json_object_new_string(s->client_token));
  if (s->description)
    json_object_object_add(req, "Description", json_object_new_string(s->description));
  if (s->encrypted)
    json_object_object_add(req, "Encrypted", json_object_new_boolean(1));
  if (s->kms_key_arn)
    json_object_object_add(req, "KmsKeyArn", json_object_new_string(s->kms_key_arn));
  if (s->timeout_min)
    json_object_object_add(req, "Timeout", json_object_new_int((int)s->timeout_min));
  if (s->ntags) {
    json_object *tags = json_object_new_array();
    for (size_t i = 0; i < s->ntags; i++) {
      json_object *t = json_object_new_object();
      json_object_object_add(t, "Key", json_object_new_string(s->tags[i].key));
      json_object_object_add(t, "Value", json_object_new_string(s->tags[i].value));
      json_object_array_add(tags, t);
    }
    json_object_object_add(req, "Tags", tags);
  }
  const char *body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
  struct aws_req rq = { .svc = AWS_EBS, .method = "POST", .path = "/snapshots",
                        .content_type = "application/json", .body = body,
                        .len = strlen(body) };
  struct aws_resp r = { 0 };
  int rc = aws_call(ctx, &rq, "EBS StartSnapshot", &r, e);
  json_object_put(req);
  if (rc == 0)
    rc = ebs_parse_snapshot_id(r.body ? r.body : "", id, e);
  free(r.body);
  return rc;
}

int ebs_complete_snapshot(struct aws_ctx *ctx, const char *id, uint64_t changed,
                          const uint8_t *linear, struct error *e)
{
  char path[128], count[24], b64[48];
  snprintf(path, sizeof path, "/snapshots/completion/%s", id);
  snprintf(count, sizeof count, "%llu", (unsigned long long)changed);
  struct aws_req rq = { .svc = AWS_EBS, .method = "POST", .path = path };
  rq.hdr[rq.nhdr++] = (struct aws_header){ "x-amz-ChangedBlocksCount", count };
  if (linear) {
    ebs_base64(linear, 32, b64);
    rq.hdr[rq.nhdr++] = (struct aws_header){ "x-amz-Checksum", b64 };
    rq.hdr[rq.nhdr++] = (struct aws_header){ "x-amz-Checksum-Algorithm", "SHA256" };
    rq.hdr[rq.nhdr++] = (struct aws_header){ "x-amz-Checksum-Aggregation-Method", "LINEAR" };
  }
  struct aws_resp r = { 0 };
  int rc = aws_call(ctx, &rq, "EBS CompleteSnapshot", &r, e);
  if (rc == 0) {
    json_object *j = json_tokener_parse(r.body ? r.body : ""), *v;
    if (j && json_object_object_get_ex(j, "Status", &v) && json_object_is_type(v, json_type_string) &&
        strcmp(json_object_get_string(v), "error") == 0)
      rc = error_set(e, ERR_REMOTE, "EBS CompleteSnapshot: snapshot %s is in state error", id);
    json_object_put(j);
  }
  free(r.body);
  return rc;
}

void ebs_linear_checksum(const uint8_t (*digests)[32], uint64_t nblocks, uint8_t out[32],
                         uint64_t *changed)
{
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  uint64_t n = 0;
  for (uint64_t i = 0; i < nblocks; i++)
    if (ebs_digest_set(digests[i])) {
      EVP_DigestUpdate(c, digests[i], 32);
      n++;
    }
  unsigned len = 32;
  EVP_DigestFinal_ex(c, out, &len);
  EVP_MD_CTX_free(c);
  *changed = n;
}

/* ---- the upload pipeline --------------------------------------------------- */

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_FLIGHT, SLOT_WAIT };

struct slot {
  enum slot_state state;
  uint8_t *buf;
  uint64_t index;
  uint8_t digest[32];
  char b64[48], path[128];
  struct aws_req rq;
  struct aws_xfer x;
  unsigned attempt;
  double retry_at;
};

struct pipe {
  struct ebs_upload *u;
  struct aws_ctx *ctx;
  CURLM *multi;
  struct slot *slots;
  unsigned nslots;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  pthread_mutex_t read_lock; /* sequential sources: one claim-and-read at a time */
  /* the block cursor and the map window it reads (under lock) */
  uint64_t next;
  struct extent_list win;
  uint64_t win_start, win_end;
  size_t win_pos;
  bool exhausted, failed, stop;
  struct error err;
  uint8_t zero_digest[32];
  uint64_t bytes_read, skipped;
  uint64_t shown_done, shown_bytes; /* what the group has of this pipe */
};

enum block_kind { BLOCK_SKIP, BLOCK_ZEROS, BLOCK_DATA };

/* What the map says of block b (under lock): data somewhere, only zeros, or
 * only never-written space. */
static int pipe_classify(struct pipe *p, uint64_t b, bool *data, bool *hole, struct error *e)
{
  struct img *src = p->u->src;
  uint64_t off = b * EBS_BLOCK, end = off + EBS_BLOCK < src->size ? off + EBS_BLOCK : src->size;
  *data = false;
  *hole = true;
  while (off < end) {
    if (off >= p->win_end || off < p->win_start) {
      p->win.n = 0;
      p->win_pos = 0;
      p->win_start = off;
      p->win_end = off + IMG_MAP_WINDOW < src->size ? off + IMG_MAP_WINDOW : src->size;
      if (img_extents(src, p->win_start, p->win_end - p->win_start, &p->win, e) < 0)
        return -1;
      if (p->win.n == 0)
        return error_set(e, ERR_FORMAT, "%s: the map is empty at offset %llu", src->path,
                         (unsigned long long)off);
    }
    while (p->win_pos < p->win.n &&
           p->win.v[p->win_pos].off + p->win.v[p->win_pos].len <= off)
      p->win_pos++;
    if (p->win_pos == p->win.n)
      return error_set(e, ERR_FORMAT, "%s: the map does not cover offset %llu", src->path,
                       (unsigned long long)off);
    const struct extent *x = &p->win.v[p->win_pos];
    if (x->kind == EXTENT_DATA)
      *data = true;
    if (x->kind != EXTENT_HOLE)
      *hole = false;
    off = x->off + x->len < end ? x->off + x->len : end;
  }
  return 0;
}

/* Claims the next block to send (under lock); false when there is none. */
static bool pipe_claim(struct pipe *p, uint64_t *b, enum block_kind *kind)
{
  struct ebs_upload *u = p->u;
  while (p->next < u->nblocks && !p->failed && !p->stop) {
    uint64_t i = p->next++;
    if (ebs_digest_set(u->digests[i]))
      continue; /* acknowledged before an interruption */
    bool data, hole;
    if (pipe_classify(p, i, &data, &hole, &p->err) < 0) {
      p->failed = true;
      return false;
    }
    if ((hole && u->sparse != EBS_SPARSE_NONE) || (!data && u->sparse == EBS_SPARSE_ZEROS)) {
      p->skipped++;
      continue;
    }
    *b = i;
    *kind = data ? BLOCK_DATA : BLOCK_ZEROS;
    return true;
  }
  p->exhausted = true;
  return false;
}

/* Reader thread: fills free slots with the next block, read and hashed. */
static void *pipe_reader(void *arg)
{
  struct pipe *p = arg;
  struct ebs_upload *u = p->u;
  bool seq = img_sequential(u->src); /* a stream: claim and read as one step */
  pthread_mutex_lock(&p->lock);
  for (;;) {
    if (seq) { /* read_lock comes before lock */
      pthread_mutex_unlock(&p->lock);
      pthread_mutex_lock(&p->read_lock);
      pthread_mutex_lock(&p->lock);
    }
    struct slot *s = NULL;
    while (!p->failed && !p->stop && !p->exhausted) {
      for (unsigned i = 0; i < p->nslots && !s; i++)
        if (p->slots[i].state == SLOT_FREE)
          s = &p->slots[i];
      if (s)
        break;
      pthread_cond_wait(&p->changed, &p->lock);
    }
    uint64_t b;
    enum block_kind kind;
    if (!s || !pipe_claim(p, &b, &kind)) {
      if (seq)
        pthread_mutex_unlock(&p->read_lock);
      break;
    }
    s->state = SLOT_FILLING;
    pthread_mutex_unlock(&p->lock);

    struct error e = { 0 };
    int rc = 0;
    bool skip = false;
    if (kind == BLOCK_ZEROS) {
      if (seq)
        pthread_mutex_unlock(&p->read_lock);
      memset(s->buf, 0, EBS_BLOCK);
      memcpy(s->digest, p->zero_digest, 32);
    } else {
      uint64_t off = b * EBS_BLOCK;
      size_t len = off + EBS_BLOCK <= u->src->size ? EBS_BLOCK : (size_t)(u->src->size - off);
      rc = img_pread(u->src, s->buf, len, off, &e);
      if (seq)
        pthread_mutex_unlock(&p->read_lock);
      if (len < EBS_BLOCK)
        memset(s->buf + len, 0, EBS_BLOCK - len); /* the last block, zero-padded */
      skip = rc == 0 && u->sparse == EBS_SPARSE_ZEROS && buf_is_zero(s->buf, EBS_BLOCK);
      if (rc == 0 && !skip)
        ebs_sha256(s->buf, EBS_BLOCK, s->digest);
    }

    pthread_mutex_lock(&p->lock);
    if (rc < 0) {
      if (!p->failed)
        p->err = e;
      p->failed = true;
      s->state = SLOT_FREE;
    } else if (skip) {
      p->skipped++;
      s->state = SLOT_FREE;
    } else {
      s->index = b;
      s->attempt = 0;
      s->state = SLOT_READY;
      if (kind == BLOCK_DATA)
        p->bytes_read += EBS_BLOCK;
    }
    curl_multi_wakeup(p->multi);
  }
  curl_multi_wakeup(p->multi);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static int pipe_send(struct pipe *p, struct slot *s, struct error *e)
{
  snprintf(s->path, sizeof s->path, "/snapshots/%s/blocks/%llu", p->u->snapshot_id,
           (unsigned long long)s->index);
  ebs_base64(s->digest, 32, s->b64);
  s->rq = (struct aws_req){ .svc = AWS_EBS, .method = "PUT", .path = s->path,
                            .content_type = "application/octet-stream", .body = s->buf,
                            .len = EBS_BLOCK, .unsigned_payload = true, .resp_max = 1 << 16 };
  s->rq.hdr[s->rq.nhdr++] = (struct aws_header){ "x-amz-Data-Length", "524288" };
  s->rq.hdr[s->rq.nhdr++] = (struct aws_header){ "x-amz-Checksum", s->b64 };
  s->rq.hdr[s->rq.nhdr++] = (struct aws_header){ "x-amz-Checksum-Algorithm", "SHA256" };
  if (aws_xfer_prepare(&s->x, p->ctx, &s->rq, e) < 0)
    return -1;
  curl_easy_setopt(s->x.h, CURLOPT_PRIVATE, s);
  if (curl_multi_add_handle(p->multi, s->x.h) != CURLM_OK)
    return error_set(e, ERR_NETWORK, "cannot start an HTTP transfer");
  s->state = SLOT_FLIGHT;
  return 0;
}

/* The group's line: every upload of the group adds its share. */
static void group_progress(struct pipe *p, uint64_t done, bool final)
{
  struct ebs_progress *g = p->u->group;
  pthread_mutex_lock(&g->lock);
  g->done += done - p->shown_done;
  g->bytes += p->u->bytes_uploaded - p->shown_bytes;
  p->shown_done = done;
  p->shown_bytes = p->u->bytes_uploaded;
  double t = mono_now();
  if (final || t - g->last >= 0.25) {
    g->last = t;
    double frac = g->total ? (double)g->done / (double)g->total : 1;
    char bar[31];
    for (int i = 0; i < 30; i++)
      bar[i] = i < (int)(frac * 30) ? '#' : '.';
    bar[30] = 0;
    double mib = (double)g->bytes / (1 << 20);
    fprintf(stderr, "\r[%s] %5.1f%%  %llu/%llu blocks of all disks  %.0f MiB/s ", bar, frac * 100,
            (unsigned long long)g->done, (unsigned long long)g->total,
            t > g->start ? mib / (t - g->start) : 0.0);
  }
  pthread_mutex_unlock(&g->lock);
}

static void pipe_progress(struct pipe *p, double start, bool final)
{
  static double last;
  struct ebs_upload *u = p->u;
  if (u->progress && u->group) {
    group_progress(p, u->blocks_uploaded + p->skipped + u->blocks_before, final);
    return;
  }
  double t = mono_now();
  if (!u->progress || (!final && t - last < 0.25))
    return;
  last = t;
  uint64_t done = u->blocks_uploaded + p->skipped + u->blocks_before;
  double frac = u->nblocks ? (double)done / (double)u->nblocks : 1;
  char bar[31];
  for (int i = 0; i < 30; i++)
    bar[i] = i < (int)(frac * 30) ? '#' : '.';
  bar[30] = 0;
  double mib = (double)u->bytes_uploaded / (1 << 20);
  fprintf(stderr, "\r[%s] %5.1f%%  %llu/%llu blocks  %.0f MiB/s ", bar, frac * 100,
          (unsigned long long)done, (unsigned long long)u->nblocks,
          t > start ? mib / (t - start) : 0.0);
  if (final)
    fputc('\n', stderr);
}

/* An acknowledged block: its checksum echoed back must be the one sent. */
static int pipe_acked(struct pipe *p, struct slot *s, struct error *e)
{
  if (s->x.resp.checksum[0] && strcmp(s->x.resp.checksum, s->b64) != 0)
    return error_set(e, ERR_REMOTE,
                     "EBS PutSnapshotBlock: block %llu acknowledged with checksum %s, sent %s",
                     (unsigned long long)s->index, s->x.resp.checksum, s->b64);
  memcpy(p->u->digests[s->index], s->digest, 32);
  p->u->blocks_uploaded++;
  p->u->bytes_uploaded += EBS_BLOCK;
  return 0;
}

int ebs_upload_blocks(struct aws_ctx *ctx, struct ebs_upload *u, struct error *e)
{
  struct pipe p = { .u = u, .ctx = ctx };
  unsigned jobs = u->jobs ? u->jobs : 64;
  unsigned nthreads = u->threads ? u->threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
  if (nthreads < 1)
    nthreads = 1;
  double rate = u->max_rate > 0 ? u->max_rate : 0, tokens = jobs, last_refill = mono_now();
  double start = last_refill;
  int rc = -1;
  pthread_t th[64];
  unsigned started = 0;

  aws_http_init();
  pthread_mutex_init(&p.lock, NULL);
  pthread_mutex_init(&p.read_lock, NULL);
  pthread_cond_init(&p.changed, NULL);
  for (uint64_t i = 0; i < u->nblocks; i++)
    if (ebs_digest_set(u->digests[i]))
      u->blocks_before++;
  uint8_t *zero = calloc(1, EBS_BLOCK);
  p.multi = curl_multi_init();
  p.slots = calloc(jobs, sizeof *p.slots);
  if (!zero || !p.multi || !p.slots) {
    error_set(e, ERR_NOMEM, "out of memory for %u upload slots", jobs);
    goto out;
  }
  ebs_sha256(zero, EBS_BLOCK, p.zero_digest);
  p.nslots = jobs;
  for (unsigned i = 0; i < jobs; i++)
    if (!(p.slots[i].buf = malloc(EBS_BLOCK))) {
      error_set(e, ERR_NOMEM, "out of memory for %u upload slots", jobs);
      goto out;
    }
  curl_multi_setopt(p.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)jobs);
  curl_multi_setopt(p.multi, CURLMOPT_MAXCONNECTS, (long)jobs);
  for (; started < nthreads && started < 64; started++)
    if (pthread_create(&th[started], NULL, pipe_reader, &p) != 0)
      break;

  pthread_mutex_lock(&p.lock);
  for (;;) {
    if (((u->cancel && *u->cancel) || (u->group && u->group->stop)) && !p.stop) {
      p.stop = true;
      pthread_cond_broadcast(&p.changed);
    }
    /* start what is ready (or due for a retry), paced under the rate */
    double t = mono_now();
    if (rate > 0) {
      tokens += (t - last_refill) * rate;
      if (tokens > jobs)
        tokens = jobs;
    }
    last_refill = t;
    unsigned busy = 0;
    for (unsigned i = 0; i < p.nslots && !p.failed; i++) {
      struct slot *s = &p.slots[i];
      if (s->state == SLOT_WAIT && t >= s->retry_at && !p.stop)
        s->state = SLOT_READY;
      if (s->state == SLOT_READY && !p.stop && (rate <= 0 || tokens >= 1)) {
        tokens -= 1;
        if (pipe_send(&p, s, &p.err) < 0)
          p.failed = true;
      }
      if (s->state != SLOT_FREE && !(p.stop && s->state != SLOT_FLIGHT && s->state != SLOT_FILLING))
        busy++;
    }
    bool readers_done = p.exhausted || p.failed || p.stop;
    if (p.failed || (readers_done && busy == 0))
      break;
    pthread_mutex_unlock(&p.lock);

    int running;
    curl_multi_perform(p.multi, &running);
    CURLMsg *m;
    int left;
    struct error fe = { 0 };
    bool fatal = false;
    pthread_mutex_lock(&p.lock);
    while ((m = curl_multi_info_read(p.multi, &left))) {
      if (m->msg != CURLMSG_DONE)
        continue;
      struct slot *s = NULL;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      CURLcode cc = m->data.result;
      curl_multi_remove_handle(p.multi, m->easy_handle);
      struct error xe = { 0 };
      char op[96];
      snprintf(op, sizeof op, "EBS PutSnapshotBlock %s block %llu", u->snapshot_id,
               (unsigned long long)s->index);
      int r = aws_xfer_result(&s->x, cc, op, &xe);
      if (r == 0 && pipe_acked(&p, s, &xe) < 0)
        r = 1;
      if (r == 0) {
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&p.changed);
      } else if (r > 0 && ++s->attempt < AWS_MAX_ATTEMPTS) {
        u->retries++;
        s->state = SLOT_WAIT;
        s->retry_at = mono_now() + aws_backoff_ms(s->attempt) / 1000.0;
        if (!strncmp(s->x.resp.error_code, "RequestThrottled", 16) && rate > 0)
          tokens -= jobs / 4.0; /* back off as a whole, not only this block */
      } else {
        if (r > 0)
          error_prefix(&xe, "giving up after %u attempts", s->attempt);
        if (!fatal)
          fe = xe;
        fatal = true;
        s->state = SLOT_FREE;
      }
    }
    if (fatal && !p.failed) {
      p.failed = true;
      p.err = fe;
      pthread_cond_broadcast(&p.changed);
    }
    pipe_progress(&p, start, false);
    pthread_mutex_unlock(&p.lock);
    curl_multi_poll(p.multi, NULL, 0, 50, NULL);
    pthread_mutex_lock(&p.lock);
  }
  p.stop = true;
  pthread_cond_broadcast(&p.changed);
  bool failed = p.failed;
  pthread_mutex_unlock(&p.lock);
  for (unsigned i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  u->blocks_skipped = p.skipped;
  u->bytes_read = p.bytes_read;
  u->seconds = mono_now() - start;
  pipe_progress(&p, start, true);
  if (failed)
    *e = p.err;
  else if (u->cancel && *u->cancel)
    error_set(e, ERR_INTERRUPTED, "interrupted");
  else if (u->group && u->group->stop)
    error_set(e, ERR_INTERRUPTED, "stopped: another disk's upload failed");
  else if (img_verify_source(u->src, e) == 0)
    rc = 0;
out:
  if (p.slots) {
    for (unsigned i = 0; i < p.nslots; i++) {
      if (p.slots[i].state == SLOT_FLIGHT)
        curl_multi_remove_handle(p.multi, p.slots[i].x.h);
      aws_xfer_free(&p.slots[i].x);
      free(p.slots[i].buf);
    }
    free(p.slots);
  }
  if (p.multi)
    curl_multi_cleanup(p.multi);
  extent_list_free(&p.win);
  free(zero);
  pthread_cond_destroy(&p.changed);
  pthread_mutex_destroy(&p.lock);
  pthread_mutex_destroy(&p.read_lock);
  return rc;
}
