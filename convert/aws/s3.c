/* s3.c - the S3 REST API calls amiport makes: PutObject (Content-MD5, an
 * optional canned ACL), ListObjectsV2 (every page, through
 * continuation-token), an upload of many local files by a few threads
 * that leaves out what the bucket already holds, and a stream of objects
 * made in memory (bundle --bucket's parts), a few in flight at a time. Wire facts: the Amazon S3
 * API Reference (PutObject, ListObjectsV2, Error responses) and "Signature
 * Version 4 for Amazon S3" (x-amz-content-sha256, the payload's SHA-256 hex,
 * is sent and signed; http.c does that for every request).
 *
 * Addressing is always path-style: ENDPOINT/BUCKET/KEY. A custom endpoint
 * (--endpoint-url, AWS_ENDPOINT_URL_S3: s3rver, MinIO, an interface VPC
 * endpoint) needs it; AWS's regional endpoints (https://s3.REGION.amazonaws.com)
 * still serve it in every region, it works for bucket names with dots
 * (which break TLS under virtual-hosted style) and it keeps one host per
 * endpoint for the signer. A bucket in another region than the request's
 * answers 301 PermanentRedirect, reported as such. */
#include "s3.h"
#include "hex.h"

#include <errno.h>
#include <fcntl.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3_PATH_MAX 900 /* http.c joins the endpoint's path and ours in 1 KiB */

/* "/bucket/key" with every byte of the key but '/' percent-encoded once, as
 * the request line and SigV4's canonical URI for s3 both have it. */
static int s3_path(const char *bucket, const char *key, char *out, size_t outlen,
                   struct error *e)
{
  char seg[S3_PATH_MAX];
  size_t n = 0;
  const char *parts[2] = { bucket, key };
  for (int k = 0; k < 2 && parts[k]; k++) {
    const char *p = parts[k];
    for (;;) {
      size_t sl = strcspn(p, "/");
      if (sl >= sizeof seg)
        goto long_path;
      memcpy(seg, p, sl);
      seg[sl] = 0;
      if (n + 1 >= outlen)
        goto long_path;
      out[n++] = '/';
      size_t w = aws_uri_encode(seg, out + n, outlen - n);
      if (w == (size_t)-1)
        goto long_path;
      n += w;
      if (k == 0 || !p[sl])
        break;
      p += sl + 1;
    }
  }
  out[n] = 0;
  return 0;
long_path:
  return error_set(e, ERR_USAGE, "S3 %s/%s: the bucket and key are too long to address", bucket,
                   key ? key : "");
}

int s3_put_object(struct aws_ctx *ctx, const struct s3_put *p, struct error *e)
{
  char path[S3_PATH_MAX], op[1200], md5b64[32];
  uint8_t md5[16];
  snprintf(op, sizeof op, "S3 PutObject %s/%s", p->bucket, p->key);
  if (p->len > S3_PUT_MAX)
    return error_set(e, ERR_UNSUPPORTED, "%s: %zu bytes; one PutObject stores at most 5 GiB", op,
                     p->len);
  if (s3_path(p->bucket, p->key, path, sizeof path, e) < 0)
    return -1;
  if (!EVP_Digest(p->body ? p->body : "", p->len, md5, NULL, EVP_md5(), NULL))
    return error_set(e, ERR_UNSUPPORTED, "%s: MD5 is not available in OpenSSL", op);
  EVP_EncodeBlock((unsigned char *)md5b64, md5, 16);
  struct aws_req rq = { .svc = AWS_S3, .method = "PUT", .path = path,
                        .content_type = p->content_type ? p->content_type
                                                        : "application/octet-stream",
                        .body = p->body, .len = p->len, .resp_max = 1 << 16 };
  rq.hdr[rq.nhdr++] = (struct aws_header){ "content-md5", md5b64 };
  if (p->acl)
    rq.hdr[rq.nhdr++] = (struct aws_header){ "x-amz-acl", p->acl };
  return aws_call(ctx, &rq, op, NULL, e);
}

int s3_get_object(struct aws_ctx *ctx, const char *bucket, const char *key, uint64_t max,
                  uint8_t **buf, size_t *len, struct error *e)
{
  char path[S3_PATH_MAX], op[1200];
  snprintf(op, sizeof op, "S3 GetObject %s/%s", bucket, key);
  if (s3_path(bucket, key, path, sizeof path, e) < 0)
    return -1;
  struct aws_req rq = { .svc = AWS_S3, .method = "GET", .path = path,
                        .resp_max = max < SIZE_MAX - 1 ? (size_t)max : SIZE_MAX - 1 };
  struct aws_resp r = { 0 };
  if (aws_call(ctx, &rq, op, &r, e) < 0) {
    free(r.body);
    return -1;
  }
  if (!r.body && !(r.body = calloc(1, 1))) /* an empty object */
    return error_set(e, ERR_NOMEM, "%s: out of memory", op);
  *buf = (uint8_t *)r.body;
  *len = r.len;
  return 0;
}

/* ---- ListObjectsV2 ------------------------------------------------------- */

/* The text of node's first child element called name, malloc'd, or NULL. */
static char *s3_child_text(xmlNodePtr node, const char *name)
{
  for (xmlNodePtr c = node->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0) {
      xmlChar *t = xmlNodeGetContent(c);
      char *s = strdup(t ? (const char *)t : "");
      xmlFree(t);
      return s;
    }
  return NULL;
}

static int s3_list_add(struct s3_list *l, xmlNodePtr c, const char *op, struct error *e)
{
  char *key = s3_child_text(c, "Key"), *size = s3_child_text(c, "Size");
  char *etag = s3_child_text(c, "ETag"), *end = NULL;
  int rc = -1;
  unsigned long long sz = 0;
  if (size) {
    errno = 0;
    sz = strtoull(size, &end, 10);
  }
  if (!key || !*key || !size || !*size || *end || errno || size[0] == '-') {
    error_set(e, ERR_REMOTE, "%s: an object in the answer has no Key or no valid Size", op);
    goto out;
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    struct s3_object *v = realloc(l->v, cap * sizeof *v);
    if (!v) {
      error_set(e, ERR_NOMEM, "%s: out of memory for %zu objects", op, cap);
      goto out;
    }
    l->v = v;
    l->cap = cap;
  }
  struct s3_object *o = &l->v[l->n++];
  memset(o, 0, sizeof *o);
  o->key = key;
  key = NULL;
  o->size = sz;
  const char *t = etag ? etag : "";
  size_t tl = strlen(t);
  if (tl >= 2 && t[0] == '"' && t[tl - 1] == '"')
    t++, tl -= 2;
  snprintf(o->etag, sizeof o->etag, "%.*s", (int)tl, t);
  rc = 0;
out:
  free(key);
  free(size);
  free(etag);
  return rc;
}

static int s3_object_cmp(const void *a, const void *b)
{
  return strcmp(((const struct s3_object *)a)->key, ((const struct s3_object *)b)->key);
}

int s3_list_objects(struct aws_ctx *ctx, const char *bucket, const char *prefix,
                    struct s3_list *out, struct error *e)
{
  char path[S3_PATH_MAX], op[1200], eprefix[3 * 1024 + 1], *token = NULL;
  memset(out, 0, sizeof *out);
  snprintf(op, sizeof op, "S3 ListObjectsV2 %s/%s", bucket, prefix);
  if (s3_path(bucket, NULL, path, sizeof path, e) < 0)
    return -1;
  if (aws_uri_encode(prefix, eprefix, sizeof eprefix) == (size_t)-1)
    return error_set(e, ERR_USAGE, "%s: the prefix is longer than 1024 bytes", op);
  int rc = -1;
  struct aws_resp r = { 0 };
  xmlDocPtr doc = NULL;
  for (;;) {
    char etoken[4096] = "", query[sizeof etoken + sizeof eprefix + 64];
    if (token && aws_uri_encode(token, etoken, sizeof etoken) == (size_t)-1) {
      error_set(e, ERR_REMOTE, "%s: the answer's NextContinuationToken is too long", op);
      goto out;
    }
    snprintf(query, sizeof query, "list-type=2&prefix=%s%s%s", eprefix,
             token ? "&continuation-token=" : "", etoken);
    struct aws_req rq = { .svc = AWS_S3, .method = "GET", .path = path, .query = query };
    if (aws_call(ctx, &rq, op, &r, e) < 0)
      goto out;
    xmlFreeDoc(doc);
    doc = aws_xml_parse(r.body ? r.body : "", r.len);
    xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
    if (!root || strcmp((const char *)root->name, "ListBucketResult") != 0) {
      error_set(e, ERR_REMOTE, "%s: the answer is not a ListBucketResult", op);
      goto out;
    }
    for (xmlNodePtr c = root->children; c; c = c->next)
      if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, "Contents") == 0 &&
          s3_list_add(out, c, op, e) < 0)
        goto out;
    char *trunc = s3_child_text(root, "IsTruncated");
    bool more = trunc && strcmp(trunc, "true") == 0;
    free(trunc);
    if (!more)
      break;
    char *next = s3_child_text(root, "NextContinuationToken");
    if (!next || !*next || (token && strcmp(next, token) == 0)) {
      free(next);
      error_set(e, ERR_REMOTE, "%s: the answer is truncated but gives no new "
                               "NextContinuationToken", op);
      goto out;
    }
    free(token);
    token = next;
  }
  if (out->n)
    qsort(out->v, out->n, sizeof *out->v, s3_object_cmp);
  rc = 0;
out:
  xmlFreeDoc(doc);
  free(r.body);
  free(token);
  if (rc < 0)
    s3_list_free(out);
  return rc;
}

const struct s3_object *s3_list_find(const struct s3_list *l, const char *key)
{
  struct s3_object k = { .key = (char *)key };
  return l->n ? bsearch(&k, l->v, l->n, sizeof *l->v, s3_object_cmp) : NULL;
}

void s3_list_free(struct s3_list *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i].key);
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* ---- many files at once ---------------------------------------------------- */

struct s3_pool {
  struct aws_ctx *ctx;
  struct s3_upload *u;
  pthread_mutex_t lock;
  size_t next, done;
  bool failed;
  struct error err;
};

/* The whole file, in a malloc'd buffer. */
static int s3_read_file(const char *path, uint8_t **buf, size_t *len, struct error *e)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return error_errno(e, "cannot open %s", path);
  struct stat st;
  int rc = -1;
  uint8_t *b = NULL;
  if (fstat(fd, &st) < 0) {
    error_errno(e, "cannot stat %s", path);
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    error_set(e, ERR_USAGE, "%s is not a regular file", path);
    goto out;
  }
  if ((uint64_t)st.st_size > S3_PUT_MAX) {
    error_set(e, ERR_UNSUPPORTED, "%s is %llu bytes; one PutObject stores at most 5 GiB", path,
              (unsigned long long)st.st_size);
    goto out;
  }
  size_t n = (size_t)st.st_size, got = 0;
  if (!(b = malloc(n ? n : 1))) {
    error_set(e, ERR_NOMEM, "out of memory for the %zu bytes of %s", n, path);
    goto out;
  }
  while (got < n) {
    ssize_t r = pread(fd, b + got, n - got, (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      error_errno(e, "cannot read %s", path);
      goto out;
    }
    if (r == 0) {
      error_set(e, ERR_IO, "%s shrank while it was read (%zu of %zu bytes)", path, got, n);
      goto out;
    }
    got += (size_t)r;
  }
  *buf = b;
  *len = n;
  b = NULL;
  rc = 0;
out:
  free(b);
  close(fd);
  return rc;
}

static int s3_upload_one(struct aws_ctx *ctx, const struct s3_upload *u, struct s3_file *f,
                         struct error *e)
{
  uint8_t *buf = NULL, md[20];
  size_t len = 0;
  if (s3_read_file(f->path, &buf, &len, e) < 0)
    return -1;
  int rc = -1;
  if (f->sha1) {
    char hex[41];
    EVP_Digest(buf, len, md, NULL, EVP_sha1(), NULL);
    hex_encode(md, 20, hex);
    if (strcasecmp(hex, f->sha1) != 0) {
      error_set(e, ERR_FORMAT, "%s: its SHA-1 is %s, not the expected %s (damaged or changed); "
                               "not uploaded", f->path, hex, f->sha1);
      goto out;
    }
  }
  if (!EVP_Digest(buf, len, md, NULL, EVP_md5(), NULL)) {
    error_set(e, ERR_UNSUPPORTED, "MD5 is not available in OpenSSL");
    goto out;
  }
  hex_encode(md, 16, f->md5);
  f->size = len;
  if (f->have && f->have->size == len && strcasecmp(f->have->etag, f->md5) == 0) {
    f->state = S3_FILE_SKIPPED;
    rc = 0;
    goto out;
  }
  struct s3_put p = { .bucket = u->bucket, .key = f->key, .body = buf, .len = len,
                      .acl = u->acl, .content_type = u->content_type };
  if (s3_put_object(ctx, &p, e) < 0)
    goto out;
  f->state = S3_FILE_UPLOADED;
  rc = 0;
out:
  free(buf);
  return rc;
}

static void *s3_worker(void *arg)
{
  struct s3_pool *p = arg;
  struct s3_upload *u = p->u;
  pthread_mutex_lock(&p->lock);
  while (!p->failed && p->next < u->nfiles && !(u->cancel && *u->cancel)) {
    struct s3_file *f = &u->files[p->next++];
    pthread_mutex_unlock(&p->lock);
    struct error e = { 0 };
    int rc = s3_upload_one(p->ctx, u, f, &e);
    pthread_mutex_lock(&p->lock);
    if (rc < 0) {
      if (!p->failed)
        p->err = e;
      p->failed = true;
      break;
    }
    p->done++;
    if (f->state == S3_FILE_SKIPPED) {
      u->skipped++;
    } else {
      u->uploaded++;
      u->bytes_uploaded += f->size;
    }
    if (u->on_file)
      u->on_file(u->arg, f, p->done, u->nfiles);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

int s3_upload_files(struct aws_ctx *ctx, struct s3_upload *u, struct error *e)
{
  struct s3_pool p = { .ctx = ctx, .u = u };
  pthread_t th[64];
  unsigned jobs = u->jobs ? u->jobs : 8, started = 0;
  if (jobs > 64)
    jobs = 64;
  if (jobs > u->nfiles)
    jobs = (unsigned)u->nfiles;
  u->uploaded = u->skipped = 0;
  u->bytes_uploaded = 0;
  for (size_t i = 0; i < u->nfiles; i++)
    u->files[i].state = S3_FILE_PENDING;
  aws_http_init(); /* before the threads: libcurl's global set-up is not thread-safe */
  pthread_mutex_init(&p.lock, NULL);
  for (; started < jobs; started++)
    if (pthread_create(&th[started], NULL, s3_worker, &p) != 0)
      break;
  if (started == 0)
    s3_worker(&p);
  for (unsigned i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  pthread_mutex_destroy(&p.lock);
  if (p.failed) {
    *e = p.err;
    return -1;
  }
  if (p.done < u->nfiles)
    return error_set(e, ERR_INTERRUPTED, "interrupted after %zu of %zu files", p.done,
                     u->nfiles);
  return 0;
}

/* ---- objects made in memory, stored as they come ----------------------- */

struct s3_job {
  unsigned tag;
  char *key;
  uint8_t *buf;
  size_t len;
};

struct s3_stream {
  struct aws_ctx *ctx;
  struct s3_stream_opts o;
  pthread_mutex_t lock;
  pthread_cond_t cv;
  struct s3_job *queue;   /* a ring of o.jobs */
  size_t head, queued;
  unsigned inflight, nthreads;
  pthread_t th[64];
  bool closing, failed;
  struct error err;
};

static void *s3_stream_worker(void *arg)
{
  struct s3_stream *s = arg;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->queued && !s->closing)
      pthread_cond_wait(&s->cv, &s->lock);
    if (!s->queued)
      break;
    struct s3_job j = s->queue[s->head];
    s->head = (s->head + 1) % s->o.jobs;
    s->queued--;
    s->inflight++;
    bool skip = s->failed; /* after a failure nothing more is sent */
    pthread_mutex_unlock(&s->lock);
    struct error e = { 0 };
    struct s3_put p = { .bucket = s->o.bucket, .key = j.key, .body = j.buf, .len = j.len,
                        .acl = s->o.acl, .content_type = s->o.content_type };
    int rc = skip ? 0 : s3_put_object(s->ctx, &p, &e);
    free(j.buf);
    pthread_mutex_lock(&s->lock);
    s->inflight--;
    if (rc < 0 && !s->failed) {
      s->failed = true;
      s->err = e;
    } else if (rc == 0 && !skip && s->o.on_object) {
      s->o.on_object(s->o.arg, j.tag, j.key, j.len, false);
    }
    free(j.key);
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

struct s3_stream *s3_stream_open(struct aws_ctx *ctx, const struct s3_stream_opts *o,
                                 struct error *e)
{
  struct s3_stream *s = calloc(1, sizeof *s);
  unsigned jobs = o->jobs ? o->jobs : 3;
  if (jobs > 64)
    jobs = 64;
  if (!s || !(s->queue = calloc(jobs, sizeof *s->queue))) {
    free(s);
    return error_set(e, ERR_NOMEM, "out of memory"), NULL;
  }
  s->ctx = ctx;
  s->o = *o;
  s->o.jobs = jobs;
  aws_http_init(); /* before the threads: libcurl's global set-up is not thread-safe */
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cv, NULL);
  for (; s->nthreads < jobs; s->nthreads++)
    if (pthread_create(&s->th[s->nthreads], NULL, s3_stream_worker, s) != 0)
      break;
  if (!s->nthreads) {
    s3_stream_free(s);
    return error_set(e, ERR_IO, "S3: cannot start an upload thread"), NULL;
  }
  return s;
}

int s3_stream_put(struct s3_stream *s, unsigned tag, const char *key, uint8_t *buf, size_t len,
                  struct error *e)
{
  const struct s3_object *have = s->o.have ? s3_list_find(s->o.have, key) : NULL;
  if (have && have->size == len) {
    uint8_t md[16];
    char hex[33];
    if (EVP_Digest(buf, len, md, NULL, EVP_md5(), NULL)) {
      hex_encode(md, 16, hex);
      if (strcasecmp(hex, have->etag) == 0) {
        free(buf);
        pthread_mutex_lock(&s->lock);
        if (s->o.on_object && !s->failed)
          s->o.on_object(s->o.arg, tag, key, len, true);
        pthread_mutex_unlock(&s->lock);
        return 0;
      }
    }
  }
  char *k = strdup(key);
  pthread_mutex_lock(&s->lock);
  while (!s->failed && s->queued + s->inflight >= s->nthreads)
    pthread_cond_wait(&s->cv, &s->lock);
  if (s->failed || !k) {
    if (s->failed)
      *e = s->err;
    else
      error_set(e, ERR_NOMEM, "out of memory");
    pthread_mutex_unlock(&s->lock);
    free(buf);
    free(k);
    return -1;
  }
  s->queue[(s->head + s->queued) % s->o.jobs] = (struct s3_job){ tag, k, buf, len };
  s->queued++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

int s3_stream_finish(struct s3_stream *s, struct error *e)
{
  pthread_mutex_lock(&s->lock);
  s->closing = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->lock);
  for (unsigned i = 0; i < s->nthreads; i++)
    pthread_join(s->th[i], NULL);
  s->nthreads = 0;
  if (s->failed) {
    *e = s->err;
    return -1;
  }
  return 0;
}

void s3_stream_free(struct s3_stream *s)
{
  if (!s)
    return;
  struct error e;
  if (s->nthreads) {
    pthread_mutex_lock(&s->lock);
    s->failed = true; /* what is still queued is dropped, not sent */
    pthread_mutex_unlock(&s->lock);
    s3_stream_finish(s, &e);
  }
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cv);
  free(s->queue);
  free(s);
}
