/* source.c - a bundle read as an image: a sequential block-layer source.
 *
 * Before any byte is decoded: the manifest's shape, its signature (with the
 * user's certificate, or the public half of the private key), the AES key
 * and IV (the user's copy, else EC2's), and that every part is in the
 * store. Then a pipeline runs in the background: fetchers take whole parts
 * from the store (a folder, or S3), a few at once, and check each one's
 * SHA-1; a decoder decrypts them in order and gunzips; the reader (whoever
 * calls pread, in increasing offset order) hashes the tar stream and untars
 * it straight into the caller's buffer. The map is the tar member's sparse
 * map, known once its header is read. verify() reads what is left and
 * checks the tar stream's SHA-1 and sizes against the manifest: a copy from
 * a bundle is complete only when it passes. */
#include "bundle_int.h"
#include "hex.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <zlib.h>

#define BS_MSG (1u << 20) /* bytes the decoder hands on at once */
#define BS_QUEUE 4
#define BS_MAX_PART ((uint64_t)BUNDLE_MAX_PART_MIB << 20) /* a part is checked whole in memory */
#define BS_MAX_JOBS 16
#define BS_FEED 512       /* header bytes fed at a time, so no data is passed by */

struct bs_msg {
  uint8_t *buf;
  size_t len;
};

struct bs {
  struct bundle_store store;
  struct manifest m;
  char *name;                    /* where/manifest, for messages */
  uint8_t key[16], iv[16];
  const volatile sig_atomic_t *cancel;
  pthread_mutex_t lock;          /* the pipeline's */
  pthread_cond_t changed;
  bool failed, stopping;
  struct error err;
  /* fetchers: part next_fetch is fetched next; part i lands in slot[i % jobs] */
  unsigned jobs, next_fetch, next_decode;
  struct bs_msg slot[BS_MAX_JOBS];
  bool slot_full[BS_MAX_JOBS];
  pthread_t fetcher[BS_MAX_JOBS], decoder;
  unsigned nfetchers;
  bool decoder_started;
  /* decoded tar bytes, in order; a NULL buf ends them */
  struct bs_msg q[BS_QUEUE];
  unsigned q_head, q_count;
  uint64_t bundled;              /* part bytes fetched */
  /* the reader's side (under rlock) */
  pthread_mutex_t rlock;
  struct tar_reader tr;
  EVP_MD_CTX *sha;
  struct bs_msg cur;             /* the message being fed; cur.buf NULL: none */
  size_t cur_at;
  bool ended;                    /* the decoder's end marker was reached */
  bool map_known;                /* the member's map is read (and fixed from then on) */
  uint64_t done;                 /* every image byte below this was handed out */
  uint8_t *req;                  /* the pread being served, or NULL */
  uint64_t req_off, req_end;
  bool verified;
  int verify_rc;
  struct error verify_err;
};

static void bs_fail(struct bs *s, const struct error *e)
{
  pthread_mutex_lock(&s->lock);
  if (!s->failed) {
    s->failed = true;
    s->err = *e;
  }
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
}

static bool bs_cancelled(const struct bs *s)
{
  return s->cancel && *s->cancel;
}

/* ---- fetchers ---- */

static uint8_t *bs_fetch(struct bs *s, unsigned i, size_t *len, struct error *e)
{
  const struct bundle_part *p = &s->m.parts[i];
  uint8_t *buf = NULL, md[20];
  unsigned mdlen = 0;
  char hex[41];
  if (s->store.get(s->store.ctx, p->filename, BS_MAX_PART, &buf, len, e) < 0)
    return NULL;
  EVP_Digest(buf, *len, md, &mdlen, EVP_sha1(), NULL);
  hex_encode(md, 20, hex);
  if (strcmp(hex, p->sha1) != 0) {
    error_set(e, ERR_FORMAT, "bundle part %s/%s: SHA-1 is %s, the manifest says %s (the part "
              "is damaged or from another bundle)", s->store.where, p->filename, hex, p->sha1);
    free(buf);
    return NULL;
  }
  return buf;
}

static void *bs_fetcher(void *arg)
{
  struct bs *s = arg;
  struct error e = { 0 };
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->failed && !s->stopping && s->next_fetch < s->m.nparts &&
           s->next_fetch >= s->next_decode + s->jobs)
      pthread_cond_wait(&s->changed, &s->lock);
    if (s->failed || s->stopping || s->next_fetch >= s->m.nparts)
      break;
    unsigned i = s->next_fetch++;
    pthread_mutex_unlock(&s->lock);
    size_t len = 0;
    uint8_t *buf = bs_cancelled(s) ? (error_set(&e, ERR_INTERRUPTED, "interrupted"), NULL)
                                   : bs_fetch(s, i, &len, &e);
    if (!buf) {
      bs_fail(s, &e);
      pthread_mutex_lock(&s->lock);
      break;
    }
    pthread_mutex_lock(&s->lock);
    s->slot[i % s->jobs] = (struct bs_msg){ buf, len };
    s->slot_full[i % s->jobs] = true;
    s->bundled += len;
    pthread_cond_broadcast(&s->changed);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* ---- the decoder: decrypt, gunzip ---- */

/* Queues buf (NULL: the end); false when the run failed or stops. */
static bool bs_put(struct bs *s, uint8_t *buf, size_t len)
{
  pthread_mutex_lock(&s->lock);
  while (s->q_count == BS_QUEUE && !s->failed && !s->stopping)
    pthread_cond_wait(&s->changed, &s->lock);
  bool ok = !s->failed && !s->stopping;
  if (ok) {
    s->q[(s->q_head + s->q_count++) % BS_QUEUE] = (struct bs_msg){ buf, len };
    pthread_cond_broadcast(&s->changed);
  }
  pthread_mutex_unlock(&s->lock);
  if (!ok)
    free(buf);
  return ok;
}

/* Part i, once fetched; NULL when the run failed. */
static uint8_t *bs_take_part(struct bs *s, unsigned i, size_t *len)
{
  pthread_mutex_lock(&s->lock);
  while (!s->slot_full[i % s->jobs] && !s->failed && !s->stopping)
    pthread_cond_wait(&s->changed, &s->lock);
  uint8_t *buf = NULL;
  if (!s->failed && !s->stopping) {
    buf = s->slot[i % s->jobs].buf;
    *len = s->slot[i % s->jobs].len;
    s->slot_full[i % s->jobs] = false;
    s->next_decode = i + 1;
    pthread_cond_broadcast(&s->changed);
  }
  pthread_mutex_unlock(&s->lock);
  return buf;
}

struct bs_inflate {
  z_stream z;
  bool ended, any;
};

/* Gunzips in (members one after another, as gunzip reads them) onto the queue. */
static int bs_inflate(struct bs *s, struct bs_inflate *d, uint8_t *in, size_t len,
                      struct error *e)
{
  d->z.next_in = in;
  d->z.avail_in = (uInt)len;
  while (d->z.avail_in) {
    if (d->ended) { /* another gzip member, or zero padding after the last */
      if (inflateReset(&d->z) != Z_OK)
        break;
      d->ended = false;
    }
    uint8_t *out = malloc(BS_MSG);
    if (!out)
      return error_set(e, ERR_NOMEM, "out of memory");
    d->z.next_out = out;
    d->z.avail_out = BS_MSG;
    int r = inflate(&d->z, Z_NO_FLUSH);
    if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
      free(out);
      return error_set(e, ERR_FORMAT, "bundle %s: the decrypted stream is not valid gzip (%s) "
                       "at compressed byte %lu", s->name, d->z.msg ? d->z.msg : "zlib error",
                       d->z.total_in);
    }
    d->ended = r == Z_STREAM_END;
    d->any |= d->ended;
    size_t n = BS_MSG - d->z.avail_out;
    if (!n)
      free(out);
    else if (!bs_put(s, out, n))
      return 1;
  }
  return 0;
}

/* Gives the pages of part[0, done) back to the system: a part is held
 * whole only until it is decoded, so at most the parts fetched ahead are
 * resident, not the one being decoded too. */
static void bs_release(uint8_t *part, size_t done)
{
  static long page;
  if (!page)
    page = sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)part + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
  uintptr_t hi = ((uintptr_t)part + done) & ~(uintptr_t)(page - 1);
  if (hi > lo)
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static void *bs_decoder(void *arg)
{
  struct bs *s = arg;
  struct error e = { 0 };
  struct bs_inflate d = { 0 };
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  uint8_t *plain = malloc(BS_MSG + 32);
  int zr = inflateInit2(&d.z, 15 + 16);
  if (!c || !plain || zr != Z_OK ||
      EVP_DecryptInit_ex(c, EVP_aes_128_cbc(), NULL, s->key, s->iv) != 1) {
    error_set(&e, ERR_NOMEM, "bundle %s: cannot set up AES-128-CBC and gunzip", s->name);
    goto fail;
  }
  for (unsigned i = 0; i < s->m.nparts; i++) {
    size_t len = 0;
    uint8_t *part = bs_take_part(s, i, &len);
    if (!part)
      goto out;
    for (size_t at = 0; at < len;) {
      size_t n = len - at < BS_MSG ? len - at : BS_MSG;
      int olen = 0;
      if (EVP_DecryptUpdate(c, plain, &olen, part + at, (int)n) != 1) {
        free(part);
        error_set(&e, ERR_IO, "bundle %s: AES decryption failed", s->name);
        goto fail;
      }
      int r = bs_inflate(s, &d, plain, (size_t)olen, &e);
      if (r) {
        free(part);
        if (r < 0)
          goto fail;
        goto out;
      }
      at += n;
      bs_release(part, at);
    }
    free(part);
  }
  int olen = 0;
  if (EVP_DecryptFinal_ex(c, plain, &olen) != 1) {
    error_set(&e, ERR_FORMAT, "bundle %s: the encrypted stream does not end on valid AES "
              "padding (a part is missing or truncated, or the key is wrong)", s->name);
    goto fail;
  }
  int r = bs_inflate(s, &d, plain, (size_t)olen, &e);
  if (r > 0)
    goto out;
  if (r < 0)
    goto fail;
  if (!d.ended || !d.any) {
    error_set(&e, ERR_FORMAT, "bundle %s: the gzip stream ends early (a part is missing)", s->name);
    goto fail;
  }
  bs_put(s, NULL, 0);
  goto out;
fail:
  bs_fail(s, &e);
out:
  EVP_CIPHER_CTX_free(c);
  free(plain);
  inflateEnd(&d.z);
  return NULL;
}

/* ---- the reader: hash, untar, serve ---- */

/* The next decoded message into s->cur; 1 at the end, -1 when the run failed. */
static int bs_next(struct bs *s, struct error *e)
{
  free(s->cur.buf);
  s->cur = (struct bs_msg){ 0 };
  s->cur_at = 0;
  pthread_mutex_lock(&s->lock);
  while (!s->q_count && !s->failed)
    pthread_cond_wait(&s->changed, &s->lock);
  int r = 0;
  if (s->failed) {
    *e = s->err;
    r = -1;
  } else {
    s->cur = s->q[s->q_head];
    s->q_head = (s->q_head + 1) % BS_QUEUE;
    s->q_count--;
    pthread_cond_broadcast(&s->changed);
    if (!s->cur.buf)
      r = 1;
  }
  pthread_mutex_unlock(&s->lock);
  if (r == 1)
    s->ended = true;
  return r;
}

/* Feeds at most max tar stream bytes; 1 when the stream has ended. */
static int bs_feed(struct bs *s, uint64_t max, struct error *e)
{
  if (s->ended)
    return 1;
  if (!s->cur.buf || s->cur_at == s->cur.len) {
    int r = bs_next(s, e);
    if (r)
      return r;
  }
  size_t n = s->cur.len - s->cur_at < max ? s->cur.len - s->cur_at : (size_t)max;
  EVP_DigestUpdate(s->sha, s->cur.buf + s->cur_at, n);
  int r = tar_reader_feed(&s->tr, s->cur.buf + s->cur_at, n, e);
  s->cur_at += n;
  return r;
}

/* The tar member's data callback: the part inside the pread being served
 * is copied; bytes before it are passed over (the reader skips ahead). */
static int bs_data(void *ctx, uint64_t off, const uint8_t *buf, size_t len, struct error *e)
{
  struct bs *s = ctx;
  (void)e;
  if (!s->req)
    return 0;
  uint64_t lo = off > s->req_off ? off : s->req_off;
  uint64_t hi = off + len < s->req_end ? off + len : s->req_end;
  if (lo < hi)
    memcpy(s->req + (lo - s->req_off), buf + (lo - off), (size_t)(hi - lo));
  return 0;
}

static int bs_member(void *ctx, const char *name, uint64_t size, struct error *e)
{
  struct bs *s = ctx;
  (void)name;
  if (size != s->m.size)
    return error_set(e, ERR_FORMAT, "bundle %s: the archived image is %llu bytes, the manifest's "
                     "<size> says %llu", s->name, (unsigned long long)size,
                     (unsigned long long)s->m.size);
  return 0;
}

static bool bs_map_ready(const struct bs *s)
{
  return s->tr.seen_member && s->tr.state != TR_SPARSE_EXT;
}

/* Tar stream bytes to feed, in the member's data, until every data byte
 * below t has been handed out; 0 when there are none. */
static uint64_t bs_bytes_until(const struct bs *s, uint64_t t)
{
  const struct tar_reader *r = &s->tr;
  if (r->state != TR_DATA)
    return 0;
  uint64_t n = 0, so = r->seg_off;
  for (size_t k = r->seg; k < r->nmap; k++, so = 0) {
    const struct extent *x = &r->map[k];
    if (t <= x->off + so)
      break;
    uint64_t end = x->off + x->len < t ? x->off + x->len : t;
    n += end - (x->off + so);
    if (end < x->off + x->len)
      break;
  }
  return n < r->left ? n : r->left;
}

/* Reads on until the member's map is known (or the stream ends). */
static int bs_read_header(struct bs *s, struct error *e)
{
  while (!bs_map_ready(s)) {
    int r = bs_feed(s, BS_FEED, e);
    if (r < 0)
      return -1;
    if (r > 0)
      return error_set(e, ERR_FORMAT, "bundle %s: the tar stream holds no image file", s->name);
  }
  return 0;
}

static int bs_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct bs *s = im->priv;
  int ret = -1;
  pthread_mutex_lock(&s->rlock);
  if (off < s->done) {
    error_set(e, ERR_UNSUPPORTED, "bundle %s: read at byte %llu after byte %llu; a bundle is a "
              "stream and is read once, in order", s->name, (unsigned long long)off,
              (unsigned long long)s->done);
    goto out;
  }
  if (bs_read_header(s, e) < 0)
    goto out;
  memset(buf, 0, len);
  s->req = buf;
  s->req_off = off;
  s->req_end = off + len;
  for (uint64_t n; (n = bs_bytes_until(s, s->req_end));) {
    int r = bs_feed(s, n, e);
    if (r < 0)
      goto out;
    if (r > 0) {
      error_set(e, ERR_FORMAT, "bundle %s: the tar stream ends inside the image", s->name);
      goto out;
    }
  }
  s->done = off + len;
  ret = 0;
out:
  s->req = NULL;
  pthread_mutex_unlock(&s->rlock);
  return ret;
}

static int bs_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                      struct error *e)
{
  struct bs *s = im->priv;
  int ret = 0;
  if (!__atomic_load_n(&s->map_known, __ATOMIC_ACQUIRE)) {
    /* the map is read once; after that it stays as it is and needs no lock,
     * so asking for it never waits behind a read */
    pthread_mutex_lock(&s->rlock);
    ret = bs_read_header(s, e);
    if (ret == 0)
      __atomic_store_n(&s->map_known, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->rlock);
  }
  uint64_t at = off, end = off + len;
  for (size_t k = 0; ret == 0 && k < s->tr.nmap && at < end; k++) {
    const struct extent *x = &s->tr.map[k];
    uint64_t lo = x->off > at ? x->off : at, hi = x->off + x->len < end ? x->off + x->len : end;
    if (hi <= lo)
      continue;
    if (lo > at)
      ret = extent_list_add(out, at, lo - at, EXTENT_HOLE, e);
    if (ret == 0)
      ret = extent_list_add(out, lo, hi - lo, EXTENT_DATA, e);
    at = hi;
  }
  if (ret == 0 && at < end)
    ret = extent_list_add(out, at, end - at, EXTENT_HOLE, e);
  return ret;
}

static int bs_verify(struct img *im, struct error *e)
{
  struct bs *s = im->priv;
  pthread_mutex_lock(&s->rlock);
  if (!s->verified) {
    struct error *ve = &s->verify_err;
    int r = 0;
    while (r == 0)
      r = bs_feed(s, UINT64_MAX, ve);
    uint8_t md[20];
    unsigned mdlen = 0;
    char digest[41];
    s->verify_rc = -1;
    if (r > 0 && tar_reader_end(&s->tr, ve) == 0) {
      EVP_DigestFinal_ex(s->sha, md, &mdlen);
      hex_encode(md, 20, digest);
      if (strcmp(digest, s->m.digest) != 0)
        error_set(ve, ERR_FORMAT, "bundle %s: the tar stream's SHA-1 is %s, the manifest's "
                  "<digest> says %s", s->name, digest, s->m.digest);
      else if (s->m.bundled_size && s->bundled != s->m.bundled_size)
        error_set(ve, ERR_FORMAT, "bundle %s: the parts hold %llu bytes, the manifest's "
                  "<bundled_size> says %llu", s->name, (unsigned long long)s->bundled,
                  (unsigned long long)s->m.bundled_size);
      else
        s->verify_rc = 0;
    }
    s->verified = true;
  }
  if (s->verify_rc < 0)
    *e = s->verify_err;
  pthread_mutex_unlock(&s->rlock);
  return s->verify_rc;
}

static int bs_describe(struct img *im, struct json_object *obj, struct error *e)
{
  (void)e;
  const struct manifest *m = &((struct bs *)im->priv)->m;
  struct json_object *fs = json_object_new_object();
  json_object_object_add(fs, "manifest-version", json_object_new_string(m->version));
  if (m->arch)
    json_object_object_add(fs, "architecture", json_object_new_string(m->arch));
  json_object_object_add(fs, "image-name", json_object_new_string(m->name));
  json_object_object_add(fs, "parts", json_object_new_int64(m->nparts));
  if (m->bundled_size)
    json_object_object_add(fs, "bundled-size", json_object_new_int64((int64_t)m->bundled_size));
  json_object_object_add(fs, "digest", json_object_new_string(m->digest));
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

static void bs_close(struct img *im)
{
  struct bs *s = im->priv;
  if (!s)
    return;
  pthread_mutex_lock(&s->lock);
  s->stopping = true;
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
  for (unsigned i = 0; i < s->nfetchers; i++)
    pthread_join(s->fetcher[i], NULL);
  if (s->decoder_started)
    pthread_join(s->decoder, NULL);
  for (unsigned i = 0; i < BS_MAX_JOBS; i++)
    if (s->slot_full[i])
      free(s->slot[i].buf);
  for (; s->q_count; s->q_count--, s->q_head = (s->q_head + 1) % BS_QUEUE)
    free(s->q[s->q_head].buf);
  free(s->cur.buf);
  tar_reader_free(&s->tr);
  EVP_MD_CTX_free(s->sha);
  if (s->store.release)
    s->store.release(s->store.ctx);
  OPENSSL_cleanse(s->key, sizeof s->key);
  OPENSSL_cleanse(s->iv, sizeof s->iv);
  manifest_free(&s->m);
  free(s->name);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->changed);
  pthread_mutex_destroy(&s->rlock);
  free(s);
  im->priv = NULL;
}

const struct image_format format_bundle = {
  .name = "bundle",
  .description = "EC2 instance-store bundle (manifest and parts), read as a stream",
  .flags = FMT_NO_PROBE | FMT_SEQUENTIAL,
  .pread = bs_pread,
  .extents = bs_extents,
  .verify = bs_verify,
  .describe = bs_describe,
  .close = bs_close,
};

/* ---- opening: every check before a byte is decoded ---- */

/* The AES key or IV: the user's copy, else EC2's (when the key is EC2's). */
static int bs_unwrap(struct bs *s, const struct bundle_source_opts *o, const char *user_hex,
                     const char *ec2_hex, const char *what, uint8_t out[16], struct error *e)
{
  uint8_t text[600];
  ssize_t n = bundle_rsa_decrypt_hex(o->key, user_hex, text, sizeof text);
  if (n < 0)
    n = bundle_rsa_decrypt_hex(o->key, ec2_hex, text, sizeof text);
  if (n < 0)
    return error_set(e, ERR_FORMAT, "manifest %s: neither user_encrypted_%s nor ec2_encrypted_%s "
                     "opens with the private key %s (the wrong key?)", s->name, what, what,
                     o->key_path);
  int ret = 0;
  bool hex = n == 32 && hex_decode((const char *)text, out, 16) == 16; /* as ec2-bundle-image */
  if (!hex && n == 16)
    memcpy(out, text, 16);
  else if (!hex)
    ret = error_set(e, ERR_FORMAT, "manifest %s: the decrypted %s is %zd bytes, not an AES-128 %s",
                    s->name, what, n, what);
  OPENSSL_cleanse(text, sizeof text);
  return ret;
}

static int bs_check(struct bs *s, const struct bundle_source_opts *o, struct error *e)
{
  EVP_PKEY *pub = o->cert ? o->cert : o->key;
  if (!bundle_verify_hex(pub, s->m.signed_text, s->m.signed_len, s->m.signature)) {
    if (o->cert)
      return error_set(e, ERR_FORMAT, "manifest %s: the signature does not verify with %s (the "
                       "manifest was changed, or that certificate's owner did not sign it)",
                       s->name, o->cert_path);
    return error_set(e, ERR_FORMAT, "manifest %s: the signature does not verify with the public "
                     "half of %s (the manifest was changed, or it was made with another key)",
                     s->name, o->key_path);
  }
  if (bs_unwrap(s, o, s->m.user_encrypted_key, s->m.ec2_encrypted_key, "key", s->key, e) < 0 ||
      bs_unwrap(s, o, s->m.user_encrypted_iv, s->m.ec2_encrypted_iv, "iv", s->iv, e) < 0)
    return -1;
  for (unsigned i = 0; i < s->m.nparts; i++)
    if (s->store.has(s->store.ctx, s->m.parts[i].filename, e) < 0)
      return -1;
  return 0;
}

static int bs_start(struct bs *s, struct error *e)
{
  s->jobs = s->store.jobs ? s->store.jobs : 2;
  if (s->jobs > BS_MAX_JOBS)
    s->jobs = BS_MAX_JOBS;
  for (; s->nfetchers < s->jobs && s->nfetchers < s->m.nparts; s->nfetchers++)
    if (pthread_create(&s->fetcher[s->nfetchers], NULL, bs_fetcher, s))
      return error_set(e, ERR_NOMEM, "bundle %s: cannot start a thread", s->name);
  if (pthread_create(&s->decoder, NULL, bs_decoder, s))
    return error_set(e, ERR_NOMEM, "bundle %s: cannot start a thread", s->name);
  s->decoder_started = true;
  return 0;
}

struct img *bundle_open(const struct bundle_source_opts *o, struct error *e)
{
  struct img *im = calloc(1, sizeof *im);
  struct bs *s = calloc(1, sizeof *s);
  uint8_t *text = NULL;
  size_t len = 0;
  if (!im || !s) {
    free(im);
    free(s);
    if (o->store->release)
      o->store->release(o->store->ctx);
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  s->store = *o->store;
  s->cancel = o->cancel;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->changed, NULL);
  pthread_mutex_init(&s->rlock, NULL);
  s->tr = (struct tar_reader){ .member = bs_member, .data = bs_data, .ctx = s };
  im->fmt = &format_bundle;
  im->fd = -1;
  im->priv = s;
  if (o->local_manifest ? !(s->name = strdup(o->manifest))
                        : asprintf(&s->name, "%s/%s", s->store.where, o->manifest) < 0) {
    s->name = NULL;
    error_set(e, ERR_NOMEM, "out of memory");
    goto fail;
  }
  s->tr.path = s->name;
  if (!(im->path = strdup(s->name)) || !(s->sha = EVP_MD_CTX_new()) ||
      EVP_DigestInit_ex(s->sha, EVP_sha1(), NULL) != 1) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto fail;
  }
  if (o->local_manifest) {
    if (manifest_read(o->manifest, &s->m, e) < 0)
      goto fail;
  } else {
    if (s->store.get(s->store.ctx, o->manifest, BUNDLE_MANIFEST_MAX, &text, &len, e) < 0)
      goto fail;
    text[len] = 0;
    if (manifest_parse(s->name, (char *)text, len, &s->m, e) < 0)
      goto fail;
  }
  if (bs_check(s, o, e) < 0 || bs_start(s, e) < 0)
    goto fail;
  im->size = s->m.size;
  im->block_size = 512;
  return im;
fail:
  free(im->path);
  bs_close(im);
  free(im);
  return NULL;
}

const struct manifest *bundle_image_manifest(struct img *im)
{
  return im->fmt == &format_bundle ? &((struct bs *)im->priv)->m : NULL;
}
