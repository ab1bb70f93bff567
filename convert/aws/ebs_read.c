/* ebs_read.c - a completed EBS snapshot as a block-layer source, read through
 * the EBS direct API: ListSnapshotBlocks gives the map (every page, at
 * open), GetSnapshotBlock the data. Blocks the snapshot lacks read as zeros
 * (holes). Every block's x-amz-Checksum is verified. A read fetches all the
 * blocks it spans at once on a libcurl multi handle (the copy engine's
 * 2 MiB units: four blocks), from a pool of connections kept open; a small
 * cache keeps the last blocks for the inspector's scattered small reads.
 * Block tokens expire (ExpiryTime): a minute before they do, or when the
 * service says a token is no longer valid, the list is read again and the
 * new tokens replace the old. Answers are untrusted: indexes, sizes and
 * tokens are bounded. */
#include "ec2.h"

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EBS_TOKEN_MAX 1024
#define EBS_CACHE 16 /* blocks kept for small reads (8 MiB) */
#define EBS_POOL 64  /* transfers kept for reuse */
#define EBS_MULTIS 16 /* multi handles kept, each with its open connections */

struct ebs_cached {
  uint64_t index; /* UINT64_MAX: empty */
  uint64_t used;  /* LRU clock */
  uint8_t *data;
};

struct ebs_src {
  struct aws_ctx ctx;
  char snap[EBS_ID_MAX];
  struct ebs_blocks blocks;   /* indexes fixed at open; tokens under the tokens lock */
  pthread_rwlock_t tokens;
  unsigned generation;        /* how many times the tokens were replaced */
  uint64_t max_table;
  double listed_at;           /* when the tokens were listed */
  pthread_mutex_t lock;
  struct aws_xfer *pool[EBS_POOL];
  unsigned npool;
  /* libcurl keeps a multi handle's connections open after its transfers
   * end: a read takes one with its connections and gives it back, so
   * blocks do not each pay for a new TCP (and TLS) connection */
  CURLM *multis[EBS_MULTIS];
  unsigned nmultis;
  struct ebs_cached cache[EBS_CACHE];
  uint64_t clock;
  uint64_t fetched;  /* GetSnapshotBlock answers used */
};

int ebs_blocks_page(struct ebs_blocks *l, const char *snap, const char *body, uint64_t max_bytes,
                    char *next, size_t nextlen, struct error *e)
{
  json_object *j = json_tokener_parse(body), *blocks, *v;
  int rc = -1;
  next[0] = 0;
  if (!j || !json_object_object_get_ex(j, "Blocks", &blocks) ||
      !json_object_is_type(blocks, json_type_array)) {
    error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: the answer has no Blocks list", snap);
    goto out;
  }
  if (json_object_object_get_ex(j, "BlockSize", &v) && json_object_get_int64(v) != EBS_BLOCK) {
    error_set(e, ERR_UNSUPPORTED, "EBS ListSnapshotBlocks %s: BlockSize is %lld, not %u", snap,
              (long long)json_object_get_int64(v), EBS_BLOCK);
    goto out;
  }
  if (!json_object_object_get_ex(j, "VolumeSize", &v) || json_object_get_int64(v) < 1 ||
      json_object_get_int64(v) > EBS_MAX_VOLUME_GIB) {
    error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: VolumeSize is %lld GiB (must be 1 to %u)",
              snap, v ? (long long)json_object_get_int64(v) : -1LL, EBS_MAX_VOLUME_GIB);
    goto out;
  }
  if (l->volume_gib && l->volume_gib != (uint64_t)json_object_get_int64(v)) {
    error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: VolumeSize changed from page to page", snap);
    goto out;
  }
  l->volume_gib = (uint64_t)json_object_get_int64(v);
  if (json_object_object_get_ex(j, "ExpiryTime", &v) && json_object_get_double(v) > 0 &&
      (!l->expires || json_object_get_double(v) < l->expires))
    l->expires = json_object_get_double(v);
  uint64_t limit = l->volume_gib * ((1ull << 30) / EBS_BLOCK);
  size_t n = json_object_array_length(blocks);
  for (size_t i = 0; i < n; i++) {
    json_object *b = json_object_array_get_idx(blocks, i), *bi, *bt;
    if (!json_object_object_get_ex(b, "BlockIndex", &bi) ||
        !json_object_object_get_ex(b, "BlockToken", &bt) ||
        !json_object_is_type(bi, json_type_int) || !json_object_is_type(bt, json_type_string)) {
      error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: block entry %zu lacks BlockIndex or "
                "BlockToken", snap, i);
      goto out;
    }
    int64_t idx = json_object_get_int64(bi);
    if (idx < 0 || (uint64_t)idx >= limit || (l->n && (uint64_t)idx <= l->index[l->n - 1])) {
      error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: BlockIndex %lld is %s", snap,
                (long long)idx, idx < 0 || (uint64_t)idx >= limit ? "outside the volume"
                                                                  : "not in ascending order");
      goto out;
    }
    if (json_object_get_string_len(bt) < 1 || json_object_get_string_len(bt) >= EBS_TOKEN_MAX) {
      error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: BlockToken of block %lld is %d bytes",
                snap, (long long)idx, json_object_get_string_len(bt));
      goto out;
    }
    if (l->n == l->cap) {
      uint64_t cap = l->cap ? l->cap * 2 : 1024;
      if (cap * (sizeof(uint64_t) + sizeof(char *) + 128) > max_bytes) {
        error_set(e, ERR_UNSUPPORTED, "EBS ListSnapshotBlocks %s: more than %llu blocks, over "
                  "the %llu-byte limit for tables", snap, (unsigned long long)l->n,
                  (unsigned long long)max_bytes);
        goto out;
      }
      uint64_t *ni = realloc(l->index, cap * sizeof *ni);
      if (ni)
        l->index = ni;
      char **nt = realloc(l->token, cap * sizeof *nt);
      if (nt)
        l->token = nt;
      if (!ni || !nt) {
        error_set(e, ERR_NOMEM, "out of memory for the block list of %s", snap);
        goto out;
      }
      l->cap = cap;
    }
    if (!(l->token[l->n] = strdup(json_object_get_string(bt)))) {
      error_set(e, ERR_NOMEM, "out of memory for the block list of %s", snap);
      goto out;
    }
    l->index[l->n++] = (uint64_t)idx;
  }
  if (json_object_object_get_ex(j, "NextToken", &v) && json_object_is_type(v, json_type_string) &&
      json_object_get_string_len(v) > 0) {
    if (json_object_get_string_len(v) >= EBS_TOKEN_MAX ||
        aws_uri_encode(json_object_get_string(v), next, nextlen) == (size_t)-1) {
      error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: NextToken is %d bytes", snap,
                json_object_get_string_len(v));
      goto out;
    }
  }
  rc = 0;
out:
  json_object_put(j);
  return rc;
}

void ebs_blocks_free(struct ebs_blocks *l)
{
  for (uint64_t i = 0; i < l->n; i++)
    free(l->token[i]);
  free(l->token);
  free(l->index);
  memset(l, 0, sizeof *l);
}

struct fetch {
  uint64_t block;
  int64_t pos;
  struct aws_xfer *x;
  struct aws_req rq;
  char path[160], query[EBS_TOKEN_MAX * 3 + 16];
  unsigned attempt, corrupt, generation;
  bool done, relisted;
};

static double ebs_epoch(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int ebs_src_list(struct ebs_src *s, struct ebs_blocks *out, struct error *e)
{
  char next[EBS_TOKEN_MAX * 3 + 1] = "";
  for (unsigned page = 0;; page++) {
    if (page > 100000) /* 10^9 blocks: more than any volume has */
      return error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: too many pages", s->snap);
    char path[128], query[sizeof next + 64];
    snprintf(path, sizeof path, "/snapshots/%s/blocks", s->snap);
    snprintf(query, sizeof query, "maxResults=10000%s%s", next[0] ? "&pageToken=" : "", next);
    struct aws_req rq = { .svc = AWS_EBS, .method = "GET", .path = path, .query = query,
                          .resp_max = 4u << 20 };
    struct aws_resp r = { 0 };
    int rc = aws_call(&s->ctx, &rq, "EBS ListSnapshotBlocks", &r, e);
    if (rc == 0)
      rc = ebs_blocks_page(out, s->snap, r.body ? r.body : "", s->max_table, next, sizeof next, e);
    free(r.body);
    if (rc < 0)
      return -1;
    if (!next[0])
      return 0;
  }
}

/* Lists the snapshot again for fresh tokens, unless another thread already
 * did since generation seen. */
static int ebs_src_relist(struct ebs_src *s, unsigned seen, struct error *e)
{
  struct ebs_blocks nb = { 0 };
  int rc = 0;
  pthread_rwlock_wrlock(&s->tokens);
  if (s->generation != seen)
    goto out;
  if ((rc = ebs_src_list(s, &nb, e)) < 0)
    goto out;
  if (nb.n != s->blocks.n || memcmp(nb.index, s->blocks.index, nb.n * sizeof *nb.index) != 0) {
    rc = error_set(e, ERR_REMOTE, "EBS ListSnapshotBlocks %s: listed again for fresh block "
                   "tokens, the snapshot's blocks are not the same (%llu, then %llu)", s->snap,
                   (unsigned long long)s->blocks.n, (unsigned long long)nb.n);
    goto out;
  }
  char **old = s->blocks.token;
  s->blocks.token = nb.token;
  nb.token = old;
  s->blocks.expires = nb.expires;
  s->listed_at = ebs_epoch();
  s->generation++;
out:
  pthread_rwlock_unlock(&s->tokens);
  ebs_blocks_free(&nb);
  return rc;
}

/* Sets f's request up with its block's current token; into (NULL or
 * EBS_BLOCK bytes) is where the block's data is to go. */
static void ebs_src_request(struct ebs_src *s, struct fetch *f, uint8_t *into)
{
  snprintf(f->path, sizeof f->path, "/snapshots/%s/blocks/%llu", s->snap,
           (unsigned long long)f->block);
  char *q = f->query + snprintf(f->query, sizeof f->query, "blockToken=");
  pthread_rwlock_rdlock(&s->tokens);
  aws_uri_encode(s->blocks.token[f->pos], q, sizeof f->query - (size_t)(q - f->query));
  f->generation = s->generation;
  pthread_rwlock_unlock(&s->tokens);
  f->rq = (struct aws_req){ .svc = AWS_EBS, .method = "GET", .path = f->path, .query = f->query,
                            .resp_max = EBS_BLOCK + 1, .into = into,
                            .into_len = into ? EBS_BLOCK : 0 };
}

/* Whether a failed GetSnapshotBlock says its token is no longer good. */
static bool ebs_src_token_refused(const struct fetch *f, const struct error *e)
{
  return strcmp(f->x->resp.error_code, "ValidationException") == 0 && strcasestr(e->msg, "token");
}

/* Position of block b in the list, or -1. */
static int64_t ebs_src_find(const struct ebs_src *s, uint64_t b)
{
  const struct ebs_blocks *l = &s->blocks;
  size_t lo = 0, hi = l->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (l->index[mid] < b)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < l->n && l->index[lo] == b ? (int64_t)lo : -1;
}

static struct aws_xfer *ebs_src_take(struct ebs_src *s)
{
  pthread_mutex_lock(&s->lock);
  struct aws_xfer *x = s->npool ? s->pool[--s->npool] : calloc(1, sizeof *x);
  pthread_mutex_unlock(&s->lock);
  return x;
}

static CURLM *ebs_src_take_multi(struct ebs_src *s)
{
  pthread_mutex_lock(&s->lock);
  CURLM *m = s->nmultis ? s->multis[--s->nmultis] : NULL;
  pthread_mutex_unlock(&s->lock);
  return m ? m : curl_multi_init();
}

static void ebs_src_give_multi(struct ebs_src *s, CURLM *m)
{
  pthread_mutex_lock(&s->lock);
  if (s->nmultis < EBS_MULTIS) {
    s->multis[s->nmultis++] = m;
    m = NULL;
  }
  pthread_mutex_unlock(&s->lock);
  if (m)
    curl_multi_cleanup(m);
}

static void ebs_src_give(struct ebs_src *s, struct aws_xfer *x)
{
  pthread_mutex_lock(&s->lock);
  if (s->npool < EBS_POOL) {
    s->pool[s->npool++] = x;
    x = NULL;
  }
  pthread_mutex_unlock(&s->lock);
  if (x) {
    aws_xfer_free(x);
    free(x);
  }
}

/* A block's answer: its length and checksum must be what was listed. */
static int ebs_src_verify(struct ebs_src *s, struct fetch *f, struct error *e)
{
  struct aws_resp *r = &f->x->resp;
  if (r->len != EBS_BLOCK)
    return error_set(e, ERR_REMOTE, "EBS GetSnapshotBlock %s block %llu: %zu bytes, not %u",
                     s->snap, (unsigned long long)f->block, r->len, EBS_BLOCK);
  uint8_t d[32];
  char b64[48];
  ebs_sha256(f->rq.into ? (const void *)f->rq.into : r->body, r->len, d);
  ebs_base64(d, 32, b64);
  if (strcmp(b64, r->checksum) != 0)
    return error_set(e, ERR_REMOTE, "EBS GetSnapshotBlock %s block %llu: the data's SHA-256 is "
                     "%s but x-amz-Checksum says '%s': corrupted in transit or at rest", s->snap,
                     (unsigned long long)f->block, b64, r->checksum);
  return 0;
}

/* Fetches n blocks at once, retrying each as the answer allows; a block
 * with an into goes there, the others into their transfer's answer. */
static int ebs_src_fetch(struct ebs_src *s, struct fetch *f, uint8_t *const *into, size_t n,
                         struct error *e)
{
  CURLM *m = ebs_src_take_multi(s);
  if (!m)
    return error_set(e, ERR_NOMEM, "cannot create an HTTP handle");
  int rc = -1;
  size_t left = n;
  for (size_t i = 0; i < n; i++) {
    ebs_src_request(s, &f[i], into[i]);
    if (!(f[i].x = ebs_src_take(s)) || aws_xfer_prepare(f[i].x, &s->ctx, &f[i].rq, e) < 0)
      goto out;
    curl_easy_setopt(f[i].x->h, CURLOPT_PRIVATE, &f[i]);
    curl_multi_add_handle(m, f[i].x->h);
  }
  while (left) {
    int running, q;
    curl_multi_perform(m, &running);
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &q))) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      struct fetch *fi;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&fi);
      CURLcode cc = msg->data.result;
      curl_multi_remove_handle(m, msg->easy_handle);
      char op[128];
      snprintf(op, sizeof op, "EBS GetSnapshotBlock %s block %llu", s->snap,
               (unsigned long long)fi->block);
      int r = aws_xfer_result(fi->x, cc, op, e);
      if (r == 0 && ebs_src_verify(s, fi, e) < 0)
        r = ++fi->corrupt < 3 ? 1 : -1; /* damaged on the way? ask twice more, no longer */
      if (r == 0) {
        fi->done = true;
        left--;
        continue;
      }
      if (r < 0 && !fi->relisted && ebs_src_token_refused(fi, e)) { /* expired: new tokens, once */
        fi->relisted = true;
        if (ebs_src_relist(s, fi->generation, e) < 0)
          goto out;
        ebs_src_request(s, fi, (uint8_t *)fi->rq.into);
        r = 1;
        fi->attempt--; /* not a fault of the service's */
      }
      if (r < 0 || ++fi->attempt >= AWS_MAX_ATTEMPTS) {
        if (r > 0)
          error_prefix(e, "giving up after %u attempts", fi->attempt);
        goto out;
      }
      usleep(aws_backoff_ms(fi->attempt) * 1000u);
      if (aws_xfer_prepare(fi->x, &s->ctx, &fi->rq, e) < 0)
        goto out;
      curl_easy_setopt(fi->x->h, CURLOPT_PRIVATE, fi);
      curl_multi_add_handle(m, fi->x->h);
    }
    if (left)
      curl_multi_poll(m, NULL, 0, 100, NULL);
  }
  rc = 0;
out:
  for (size_t i = 0; i < n; i++)
    if (f[i].x && !f[i].done && f[i].x->h)
      curl_multi_remove_handle(m, f[i].x->h);
  if (rc == 0)
    ebs_src_give_multi(s, m);
  else
    curl_multi_cleanup(m); /* its connections may be in any state */
  return rc;
}

static int ebs_src_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct ebs_src *s = im->priv;
  uint8_t *out = buf;
  uint64_t first = off / EBS_BLOCK, last = (off + len - 1) / EBS_BLOCK;
  size_t n = 0, cap = (size_t)(last - first + 1);
  struct fetch *f = calloc(cap, sizeof *f);
  uint8_t **into = calloc(cap, sizeof *into);
  if (!f || !into) {
    free(f);
    free(into);
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  int rc = -1;
  pthread_rwlock_rdlock(&s->tokens);
  unsigned gen = s->generation;
  /* a minute before they expire, or a quarter of their life for short-lived ones */
  double life = s->blocks.expires - s->listed_at, margin = life / 4 < 60 ? life / 4 : 60;
  bool stale = s->blocks.expires && ebs_epoch() > s->blocks.expires - margin;
  pthread_rwlock_unlock(&s->tokens);
  if (stale && ebs_src_relist(s, gen, e) < 0)
    goto out;
  /* zeros and cached blocks now; the rest fetched together */
  for (uint64_t b = first; b <= last; b++) {
    uint64_t bs = b * EBS_BLOCK, from = bs > off ? bs : off;
    uint64_t to = bs + EBS_BLOCK < off + len ? bs + EBS_BLOCK : off + len;
    int64_t pos = ebs_src_find(s, b);
    bool hit = false;
    if (pos >= 0) {
      pthread_mutex_lock(&s->lock);
      for (int c = 0; c < EBS_CACHE; c++)
        if (s->cache[c].index == b) {
          memcpy(out + (from - off), s->cache[c].data + (from - bs), (size_t)(to - from));
          s->cache[c].used = ++s->clock;
          hit = true;
        }
      pthread_mutex_unlock(&s->lock);
    }
    if (pos < 0)
      memset(out + (from - off), 0, (size_t)(to - from));
    else if (!hit) { /* a whole block is received in place */
      into[n] = to - from == EBS_BLOCK ? out + (from - off) : NULL;
      f[n++] = (struct fetch){ .block = b, .pos = pos };
    }
  }
  if (n && ebs_src_fetch(s, f, into, n, e) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    uint64_t bs = f[i].block * EBS_BLOCK, from = bs > off ? bs : off;
    uint64_t to = bs + EBS_BLOCK < off + len ? bs + EBS_BLOCK : off + len;
    const uint8_t *data = (const uint8_t *)f[i].x->resp.body;
    if (!into[i])
      memcpy(out + (from - off), data + (from - bs), (size_t)(to - from));
    pthread_mutex_lock(&s->lock);
    s->fetched++;
    if (to - from < EBS_BLOCK) { /* a partial read: keep the block for the next one */
      struct ebs_cached *victim = &s->cache[0];
      for (int c = 1; c < EBS_CACHE; c++)
        if (s->cache[c].used < victim->used)
          victim = &s->cache[c];
      if (victim->data || (victim->data = malloc(EBS_BLOCK))) {
        memcpy(victim->data, data, EBS_BLOCK);
        victim->index = f[i].block;
        victim->used = ++s->clock;
      }
    }
    pthread_mutex_unlock(&s->lock);
  }
  rc = 0;
out:
  for (size_t i = 0; i < cap; i++)
    if (f[i].x)
      ebs_src_give(s, f[i].x);
  free(f);
  free(into);
  return rc;
}

static int ebs_src_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                           struct error *e)
{
  struct ebs_src *s = im->priv;
  uint64_t end = off + len;
  while (off < end) {
    uint64_t b = off / EBS_BLOCK, bend = (b + 1) * EBS_BLOCK;
    if (bend > end)
      bend = end;
    bool data = ebs_src_find(s, b) >= 0;
    if (extent_list_add(out, off, bend - off, data ? EXTENT_DATA : EXTENT_HOLE, e) < 0)
      return -1;
    off = bend;
  }
  return 0;
}

static int ebs_src_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  struct ebs_src *s = im->priv;
  json_object_object_add(obj, "snapshot-id", json_object_new_string(s->snap));
  json_object_object_add(obj, "blocks", json_object_new_int64((int64_t)s->blocks.n));
  return 0;
}

static void ebs_src_close(struct img *im)
{
  struct ebs_src *s = im->priv;
  if (!s)
    return;
  ebs_blocks_free(&s->blocks);
  for (unsigned i = 0; i < s->npool; i++) {
    aws_xfer_free(s->pool[i]);
    free(s->pool[i]);
  }
  for (unsigned i = 0; i < s->nmultis; i++)
    curl_multi_cleanup(s->multis[i]);
  for (int c = 0; c < EBS_CACHE; c++)
    free(s->cache[c].data);
  pthread_mutex_destroy(&s->lock);
  pthread_rwlock_destroy(&s->tokens);
  aws_ctx_free(&s->ctx);
  free(s);
}

static const struct image_format format_ebs = {
  .name = "ebs",
  .description = "EBS snapshot (EBS direct API)",
  .flags = FMT_NO_PROBE,
  .pread = ebs_src_pread,
  .extents = ebs_src_extents,
  .describe = ebs_src_describe,
  .close = ebs_src_close,
};

uint64_t ebs_blocks_fetched(struct img *im)
{
  return im->fmt == &format_ebs ? ((struct ebs_src *)im->priv)->fetched : 0;
}

struct img *ebs_open(const struct aws_opts *ao, const char *snapshot_id, uint64_t max_table_bytes,
                     struct error *e)
{
  struct img *im = calloc(1, sizeof *im);
  struct ebs_src *s = calloc(1, sizeof *s);
  if (!im || !s) {
    free(im);
    free(s);
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  im->fmt = &format_ebs;
  im->fd = -1;
  if (aws_ctx_init(&s->ctx, ao, e) < 0) {
    free(s);
    free(im);
    return NULL;
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_rwlock_init(&s->tokens, NULL);
  s->max_table = max_table_bytes ? max_table_bytes : IMG_DEFAULT_TABLE_CAP;
  for (int c = 0; c < EBS_CACHE; c++)
    s->cache[c].index = UINT64_MAX;
  im->priv = s;
  snprintf(s->snap, sizeof s->snap, "%s", snapshot_id);
  if (!(im->path = malloc(strlen(snapshot_id) + 5))) {
    img_close(im);
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  sprintf(im->path, "ebs:%s", snapshot_id);
  s->listed_at = ebs_epoch();
  if (ebs_src_list(s, &s->blocks, e) < 0) {
    /* only completed snapshots can be read: say so when that is why */
    char state[32], progress[32];
    struct error se = { 0 };
    if (e->code == ERR_REMOTE &&
        ec2_snapshot_state(&s->ctx, s->snap, state, sizeof state, progress, sizeof progress, &se) == 0) {
      if (strcmp(state, "pending") == 0)
        error_set(e, ERR_REMOTE, "%s is still pending (%s): only completed snapshots can be read; "
                  "'amiport wait %s' waits for it", s->snap, progress, s->snap);
      else if (strcmp(state, "not-found") == 0)
        error_set(e, ERR_REMOTE, "%s does not exist", s->snap);
      else if (strcmp(state, "error") == 0)
        error_set(e, ERR_REMOTE, "%s is in state error: it never completed", s->snap);
    }
    img_close(im);
    return NULL;
  }
  im->size = s->blocks.volume_gib << 30;
  return im;
}
