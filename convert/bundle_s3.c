/* bundle_s3.c - a bundle streamed into S3: a bundle_sink whose parts are
 * held in memory only until their PutObject is acknowledged (a few in
 * flight, so memory stays near (jobs + 1) parts), the manifest stored after
 * every part.
 *
 * Resuming needs the same bytes again: the parts depend only on the tar
 * stream (the image, the member name, its mtime), the part size, and the
 * AES key and IV (bundle.c deflates fixed chunks, whatever the thread
 * count). A state file in $XDG_STATE_HOME/amiport, named by a hash of the
 * source and the target, keeps the key and IV as the manifest has them,
 * RSA-wrapped for the user's certificate (nothing secret in clear on disk),
 * the tar mtime, the part size and zlib's version. A rerun lists the
 * prefix and sends only the parts whose size or MD5 differ from the
 * bucket's. */
#include "bundle_s3.h"
#include "hex.h"
#include "import.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define STATE_MAGIC "amiport bundle state 1\n"
#define STATE_MAX 32768

/* ---- the state file --------------------------------------------------- */

struct bs_state {
  char path[PATH_MAX];
  char identity[PATH_MAX + 2304]; /* source and target, one line */
  uint64_t part_size, mtime;
  char *ukey, *uiv;        /* hex, as <user_encrypted_key> and <user_encrypted_iv> */
};

/* What the source is: an EBS snapshot does not change; a file is its real
 * path, device, inode, size and modification time. */
static void bs_identity(struct img *src, const struct bundle_s3_opts *o, const char *prefix,
                        char *out, size_t cap)
{
  char real[PATH_MAX];
  struct stat st = { 0 };
  const char *p = src->path ? src->path : "";
  if (strncmp(p, "ebs:", 4) == 0) {
    snprintf(real, sizeof real, "%s", p);
  } else {
    if (!realpath(p, real))
      snprintf(real, sizeof real, "%s", p);
    stat(real, &st);
  }
  snprintf(out, cap, "%s dev %llu ino %llu size %llu mtime %lld.%09ld -> %s/%s%s%s",
           real, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
           (unsigned long long)src->size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
           o->bucket, o->key_prefix, *o->key_prefix ? "/" : "", prefix);
}

/* The value of "name VALUE\n" in text, malloc'd, or NULL. */
static char *bs_field(const char *text, const char *name)
{
  size_t n = strlen(name);
  for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, name, n) == 0 && l[n] == ' ')
      return strndup(l + n + 1, strcspn(l + n + 1, "\n"));
  return NULL;
}

/* Loads the state: 0 with s filled and key/iv unwrapped, 1 when there is
 * none or it cannot be used (why says so), -1 on an error. */
static int bs_load(struct bs_state *s, EVP_PKEY *user_key, uint8_t key[16], uint8_t iv[16],
                   char *why, size_t whycap, struct error *e)
{
  int fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return 1;
    return error_errno(e, "cannot open the bundle state %s", s->path);
  }
  char text[STATE_MAX + 1];
  ssize_t n = read(fd, text, STATE_MAX);
  close(fd);
  if (n < 0)
    return error_errno(e, "cannot read the bundle state %s", s->path);
  text[n] = 0;
  char *ident = bs_field(text, "source"), *zv = bs_field(text, "zlib");
  char *ps = bs_field(text, "part_size"), *mt = bs_field(text, "mtime");
  char *uk = bs_field(text, "user_encrypted_key"), *ui = bs_field(text, "user_encrypted_iv");
  char khex[64], ivhex[64];
  int rc = 1;
  if (strncmp(text, STATE_MAGIC, strlen(STATE_MAGIC)) != 0 || !ident || !zv || !ps || !mt ||
      !uk || !ui) {
    snprintf(why, whycap, "it is not an amiport bundle state");
  } else if (strcmp(ident, s->identity) != 0) {
    snprintf(why, whycap, "it is for another source or target");
  } else if (strcmp(zv, zlibVersion()) != 0) {
    /* the deflated bytes could differ under another zlib */
    snprintf(why, whycap, "it was made with zlib %.20s, this is %.20s", zv, zlibVersion());
  } else if (strtoull(ps, NULL, 10) != s->part_size) {
    snprintf(why, whycap, "it is for parts of %.20s bytes, not %llu", ps,
             (unsigned long long)s->part_size);
  } else if (bundle_rsa_decrypt_hex(user_key, uk, (uint8_t *)khex, sizeof khex) != 32 ||
             bundle_rsa_decrypt_hex(user_key, ui, (uint8_t *)ivhex, sizeof ivhex) != 32 ||
             hex_decode(khex, key, 16) != 16 || hex_decode(ivhex, iv, 16) != 16) {
    snprintf(why, whycap, "its key and IV do not open with this --privatekey");
  } else {
    s->mtime = strtoull(mt, NULL, 10);
    s->ukey = uk;
    s->uiv = ui;
    uk = ui = NULL;
    rc = 0;
  }
  OPENSSL_cleanse(khex, sizeof khex);
  OPENSSL_cleanse(ivhex, sizeof ivhex);
  free(ident);
  free(zv);
  free(ps);
  free(mt);
  free(uk);
  free(ui);
  return rc;
}

/* Writes the state whole under a temporary name, then renames it. */
static int bs_save(const struct bs_state *s, struct error *e)
{
  char tmp[PATH_MAX + 16], *text = NULL;
  snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
  int n = asprintf(&text, STATE_MAGIC "source %s\nzlib %s\npart_size %llu\nmtime %llu\n"
                   "user_encrypted_key %s\nuser_encrypted_iv %s\n", s->identity, zlibVersion(),
                   (unsigned long long)s->part_size, (unsigned long long)s->mtime, s->ukey, s->uiv);
  if (n < 0)
    return error_set(e, ERR_NOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc = -1;
  if (fd < 0) {
    error_errno(e, "cannot create the bundle state %s", tmp);
  } else if (img_pwrite_file(fd, text, (size_t)n, 0, tmp, e) == 0) {
    if (fsync(fd) < 0 || rename(tmp, s->path) < 0)
      error_errno(e, "cannot write the bundle state %s", s->path);
    else
      rc = 0;
  }
  if (fd >= 0)
    close(fd);
  if (rc < 0)
    unlink(tmp);
  free(text);
  return rc;
}

/* The state for this source and target: an earlier run's, or a new one
 * with a random key and IV. */
static int bs_open(struct bs_state *s, struct img *src, const struct bundle_opts *bo,
                   const struct bundle_s3_opts *o, uint8_t key[16], uint8_t iv[16],
                   struct bundle_s3_result *r, struct error *e)
{
  char dir[PATH_MAX - 100], hex[65];
  uint8_t d[32];
  if (amiport_state_dir(dir, sizeof dir, e) < 0)
    return -1;
  bs_identity(src, o, bo->prefix, s->identity, sizeof s->identity);
  EVP_Digest(s->identity, strlen(s->identity), d, NULL, EVP_sha256(), NULL);
  hex_encode(d, 32, hex);
  snprintf(s->path, sizeof s->path, "%s/bundle-%.32s.state", dir, hex);
  snprintf(r->state_path, sizeof r->state_path, "%s", s->path);
  s->part_size = bo->part_size;
  int rc = bs_load(s, bo->user_key, key, iv, r->fresh_why, sizeof r->fresh_why, e);
  if (rc <= 0) {
    r->resumed = rc == 0;
    return rc;
  }
  char khex[33], ivhex[33];
  if (RAND_bytes(key, 16) != 1 || RAND_bytes(iv, 16) != 1)
    return error_set(e, ERR_IO, "bundle: OpenSSL's random generator failed");
  hex_encode(key, 16, khex);
  hex_encode(iv, 16, ivhex);
  s->mtime = bo->mtime;
  s->ukey = bundle_rsa_encrypt_hex(bo->user_cert, khex, e);
  s->uiv = s->ukey ? bundle_rsa_encrypt_hex(bo->user_cert, ivhex, e) : NULL;
  OPENSSL_cleanse(khex, sizeof khex);
  OPENSSL_cleanse(ivhex, sizeof ivhex);
  if (!s->uiv)
    return -1;
  return bs_save(s, e);
}

/* ---- the S3 sink ------------------------------------------------------- */

struct bs_sink {
  const struct bundle_s3_opts *o;
  struct aws_ctx *ctx;
  struct s3_stream *stream;
  uint64_t part_size;
  uint8_t *buf;            /* the part being made */
  char *key;               /* its object key */
  pthread_mutex_t lock;    /* the counters and marks below */
  unsigned opened, uploaded, skipped;
  uint8_t *stored;         /* one mark per part: in the bucket */
  size_t stored_cap;
  char location[2048];
};

static char *bs_key(const struct bs_sink *b, const char *name)
{
  char *k = NULL;
  if (asprintf(&k, "%s%s%s", b->o->key_prefix, *b->o->key_prefix ? "/" : "", name) < 0)
    return NULL;
  return k;
}

static void bs_on_object(void *arg, unsigned tag, const char *key, uint64_t size, bool skipped)
{
  struct bs_sink *b = arg;
  (void)key, (void)size;
  pthread_mutex_lock(&b->lock);
  if (skipped)
    b->skipped++;
  else
    b->uploaded++;
  if (tag < b->stored_cap)
    b->stored[tag] = 1;
  pthread_mutex_unlock(&b->lock);
}

static int bs_part_open(void *arg, unsigned index, const char *name, struct error *e)
{
  struct bs_sink *b = arg;
  free(b->key);
  if (!(b->key = bs_key(b, name)))
    return error_set(e, ERR_NOMEM, "out of memory");
  pthread_mutex_lock(&b->lock);
  if (index >= b->stored_cap) {
    size_t cap = b->stored_cap ? 2 * b->stored_cap : 64;
    uint8_t *v = realloc(b->stored, cap);
    if (v) {
      memset(v + b->stored_cap, 0, cap - b->stored_cap);
      b->stored = v;
      b->stored_cap = cap;
    }
  }
  b->opened = index + 1;
  pthread_mutex_unlock(&b->lock);
  if (index >= b->stored_cap || !(b->buf = malloc(b->part_size)))
    return error_set(e, ERR_NOMEM, "out of memory for part %s (%llu bytes)", name,
                     (unsigned long long)b->part_size);
  return 0;
}

static int bs_part_write(void *arg, const uint8_t *buf, size_t len, uint64_t off, struct error *e)
{
  struct bs_sink *b = arg;
  (void)e;
  memcpy(b->buf + off, buf, len);
  return 0;
}

static int bs_part_close(void *arg, unsigned index, uint64_t size, const char *sha1,
                         struct error *e)
{
  struct bs_sink *b = arg;
  (void)sha1;
  uint8_t *buf = b->buf;
  b->buf = NULL;
  return s3_stream_put(b->stream, index, b->key, buf, (size_t)size, e);
}

static int bs_manifest(void *arg, const char *name, const char *text, size_t len,
                       struct error *e)
{
  struct bs_sink *b = arg;
  if (s3_stream_finish(b->stream, e) < 0) /* every part acknowledged first */
    return -1;
  char *key = bs_key(b, name);
  if (!key)
    return error_set(e, ERR_NOMEM, "out of memory");
  struct s3_put p = { .bucket = b->o->bucket, .key = key, .body = text, .len = len,
                      .acl = b->o->acl, .content_type = "application/xml" };
  int rc = s3_put_object(b->ctx, &p, e);
  snprintf(b->location, sizeof b->location, "%s/%s", b->o->bucket, key);
  free(key);
  return rc;
}

static void bs_abort(void *arg)
{
  struct bs_sink *b = arg;
  struct error e;
  s3_stream_finish(b->stream, &e); /* the PUTs in flight end, acknowledged or not */
}

static void bs_note(void *arg, char *buf, size_t cap)
{
  struct bs_sink *b = arg;
  pthread_mutex_lock(&b->lock);
  snprintf(buf, cap, "parts: %u stored, %u already there, %u made", b->uploaded, b->skipped,
           b->opened);
  pthread_mutex_unlock(&b->lock);
}

/* "00-03, 05": the parts marked stored. */
static void bs_ranges(const struct bs_sink *b, char *out, size_t cap)
{
  size_t n = 0;
  out[0] = 0;
  for (unsigned i = 0; i < b->opened && i < b->stored_cap; i++) {
    if (!b->stored[i])
      continue;
    unsigned j = i;
    while (j + 1 < b->opened && b->stored[j + 1])
      j++;
    int w = i == j ? snprintf(out + n, cap - n, "%s%02u", n ? ", " : "", i)
                   : snprintf(out + n, cap - n, "%s%02u-%02u", n ? ", " : "", i, j);
    if (w < 0 || (size_t)w >= cap - n) {
      if (cap > 4)
        snprintf(out + cap - 4, 4, "...");
      return;
    }
    n += (size_t)w;
    i = j;
  }
}

int bundle_to_s3(struct img *src, struct bundle_opts *bo, struct aws_ctx *ctx,
                 const struct bundle_s3_opts *o, struct bundle_result *br,
                 struct bundle_s3_result *r, struct error *e)
{
  struct bs_state st = { 0 };
  struct s3_list have = { 0 };
  struct bs_sink b = { .o = o, .ctx = ctx, .part_size = bo->part_size };
  uint8_t key[16], iv[16];
  char *lprefix = NULL;
  int rc = -1;
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&b.lock, NULL);
  /* PREFIX.part.NN and PREFIX.manifest.xml: one listing finds them all */
  if (asprintf(&lprefix, "%s%s%s.", o->key_prefix, *o->key_prefix ? "/" : "", bo->prefix) < 0) {
    lprefix = NULL;
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (s3_list_objects(ctx, o->bucket, lprefix, &have, e) < 0)
    goto out;
  if (bs_open(&st, src, bo, o, key, iv, r, e) < 0) /* after the listing: the bucket is there */
    goto out;
  struct s3_stream_opts so = { .bucket = o->bucket, .acl = o->acl, .jobs = o->jobs,
                               .have = &have, .on_object = bs_on_object, .arg = &b };
  if (!(b.stream = s3_stream_open(ctx, &so, e)))
    goto out;
  const struct bundle_sink sink = { &b, bs_part_open, bs_part_write, bs_part_close, bs_manifest,
                                    bs_abort };
  bo->sink = &sink;
  bo->key = key;
  bo->iv = iv;
  bo->user_encrypted_key = st.ukey;
  bo->user_encrypted_iv = st.uiv;
  bo->mtime = st.mtime;
  bo->progress_note = bs_note;
  bo->progress_arg = &b;
  rc = bundle_write(src, bo, br, e);
  bo->sink = NULL;
  bo->key = bo->iv = NULL;
  bo->user_encrypted_key = bo->user_encrypted_iv = NULL;
  bo->progress_note = NULL;
  if (rc == 0) {
    snprintf(r->location, sizeof r->location, "%s", b.location);
    unlink(st.path); /* done: a later run is a new bundle */
  }
  r->uploaded = b.uploaded;
  r->skipped = b.skipped;
  bs_ranges(&b, r->in_bucket, sizeof r->in_bucket);
out:
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(iv, sizeof iv);
  s3_stream_free(b.stream);
  s3_list_free(&have);
  free(b.buf);
  free(b.key);
  free(b.stored);
  free(lprefix);
  free(st.ukey);
  free(st.uiv);
  pthread_mutex_destroy(&b.lock);
  return rc;
}
