/* unbundle.c - checks a bundle and decodes it back to an image.
 *
 * Before any byte is decoded: the manifest's shape, its signature (with the
 * user's certificate, or the public half of the private key), the AES key
 * and IV (the user's copy, else EC2's), and that every part is there. Then
 * three stages run at once: a reader takes each part whole, checks its SHA-1
 * and only then decrypts it; an inflater gunzips; the calling thread hashes
 * the tar stream, reads it (tar_read.c) and writes the image through the
 * block layer, holes left as holes. The image goes to a hidden name beside
 * the destination and is renamed only when the tar stream's SHA-1 matched:
 * on any mismatch no output is left. */
#include "bundle_int.h"
#include "hex.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "progress.h"

#define UB_MSG (1u << 20)          /* bytes a stage hands on at once */
#define UB_QUEUE 8
#define UB_MAX_PART ((uint64_t)BUNDLE_MAX_PART_MIB << 20) /* a part is checked whole in memory */

struct ub_msg {
  uint8_t *buf;
  size_t len;
};

/* A bounded queue between two stages; NULL buf: the end. */
struct ub_queue {
  struct ub_msg v[UB_QUEUE];
  unsigned head, count;
};

struct ub {
  const struct unbundle_opts *o;
  struct manifest m;
  uint8_t key[16], iv[16];
  pthread_mutex_t lock;
  pthread_cond_t changed;
  struct ub_queue q_plain, q_tar; /* decrypted gzip bytes; tar bytes */
  bool failed;
  struct error err;
  uint64_t bundled;              /* part bytes read */
  struct progress prog;
  /* the writer (calling thread) */
  struct img *dst;
  uint8_t *unit;                 /* one write unit being assembled */
  uint64_t unit_len, unit_base;  /* unit_base: UINT64_MAX when empty */
  bool have_member;
};

static void ub_fail(struct ub *u, const struct error *e)
{
  pthread_mutex_lock(&u->lock);
  if (!u->failed) {
    u->failed = true;
    u->err = *e;
  }
  pthread_cond_broadcast(&u->changed);
  pthread_mutex_unlock(&u->lock);
}

/* Queues buf (NULL: the end); false when the run failed meanwhile. */
static bool ub_put(struct ub *u, struct ub_queue *q, uint8_t *buf, size_t len)
{
  pthread_mutex_lock(&u->lock);
  while (q->count == UB_QUEUE && !u->failed)
    pthread_cond_wait(&u->changed, &u->lock);
  bool ok = !u->failed;
  if (ok) {
    q->v[(q->head + q->count++) % UB_QUEUE] = (struct ub_msg){ buf, len };
    pthread_cond_broadcast(&u->changed);
  }
  pthread_mutex_unlock(&u->lock);
  if (!ok)
    free(buf);
  return ok;
}

/* The next message; false when the run failed. */
static bool ub_get(struct ub *u, struct ub_queue *q, struct ub_msg *out)
{
  pthread_mutex_lock(&u->lock);
  while (!q->count && !u->failed)
    pthread_cond_wait(&u->changed, &u->lock);
  bool ok = !u->failed;
  if (ok) {
    *out = q->v[q->head];
    q->head = (q->head + 1) % UB_QUEUE;
    q->count--;
    pthread_cond_broadcast(&u->changed);
  }
  pthread_mutex_unlock(&u->lock);
  return ok;
}

static void ub_drain(struct ub_queue *q)
{
  for (; q->count; q->count--, q->head = (q->head + 1) % UB_QUEUE)
    free(q->v[q->head].buf);
}

static char *ub_part_path(const struct ub *u, unsigned i)
{
  char *p = NULL;
  if (asprintf(&p, "%s/%s", u->o->source, u->m.parts[i].filename) < 0)
    return NULL;
  return p;
}

/* Reads part i whole, checks its SHA-1; the buffer or NULL. */
static uint8_t *ub_read_part(struct ub *u, unsigned i, size_t *len, struct error *e)
{
  char *path = ub_part_path(u, i);
  uint8_t *buf = NULL, md[20];
  unsigned mdlen = 0;
  char hex[41];
  struct stat st;
  int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  if (!path)
    error_set(e, ERR_NOMEM, "out of memory");
  else if (fd < 0)
    error_errno(e, "bundle part %s", path);
  else if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > UB_MAX_PART)
    error_set(e, ERR_UNSUPPORTED, "bundle part %s: larger than %u MiB", path, BUNDLE_MAX_PART_MIB);
  else if (!(buf = malloc((size_t)st.st_size + 1)))
    error_set(e, ERR_NOMEM, "out of memory for bundle part %s", path);
  else if (img_pread_file(fd, buf, (size_t)st.st_size, 0, path, e) < 0) {
    free(buf);
    buf = NULL;
  } else {
    EVP_Digest(buf, (size_t)st.st_size, md, &mdlen, EVP_sha1(), NULL);
    hex_encode(md, 20, hex);
    if (strcmp(hex, u->m.parts[i].sha1) != 0) {
      error_set(e, ERR_FORMAT, "bundle part %s: SHA-1 is %s, the manifest says %s (the part is "
                "damaged or from another bundle)", path, hex, u->m.parts[i].sha1);
      free(buf);
      buf = NULL;
    } else {
      *len = (size_t)st.st_size;
    }
  }
  if (fd >= 0)
    close(fd);
  free(path);
  return buf;
}

/* Stage 1: parts, checked, then decrypted. */
static void *ub_reader(void *arg)
{
  struct ub *u = arg;
  struct error e = { 0 };
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (!c || EVP_DecryptInit_ex(c, EVP_aes_128_cbc(), NULL, u->key, u->iv) != 1) {
    error_set(&e, ERR_IO, "unbundle: OpenSSL cannot set up AES-128-CBC");
    goto fail;
  }
  for (unsigned i = 0; i < u->m.nparts; i++) {
    size_t len = 0;
    uint8_t *part = ub_read_part(u, i, &len, &e);
    if (!part)
      goto fail;
    u->bundled += len;
    for (size_t at = 0; at < len;) {
      size_t n = len - at < UB_MSG ? len - at : UB_MSG;
      uint8_t *out = malloc(n + 32);
      int olen = 0;
      if (!out || EVP_DecryptUpdate(c, out, &olen, part + at, (int)n) != 1) {
        free(out);
        free(part);
        error_set(&e, ERR_IO, "unbundle: AES decryption failed");
        goto fail;
      }
      if (!ub_put(u, &u->q_plain, out, (size_t)olen)) {
        free(part);
        goto out;
      }
      at += n;
    }
    free(part);
    if (u->o->cancel && *u->o->cancel) {
      error_set(&e, ERR_INTERRUPTED, "unbundle: interrupted");
      goto fail;
    }
  }
  uint8_t *last = malloc(32);
  int olen = 0;
  if (!last || EVP_DecryptFinal_ex(c, last, &olen) != 1) {
    free(last);
    error_set(&e, ERR_FORMAT, "bundle %s: the encrypted stream does not end on valid AES "
              "padding (a part is missing or truncated, or the key is wrong)", u->o->manifest);
    goto fail;
  }
  if (ub_put(u, &u->q_plain, last, (size_t)olen))
    ub_put(u, &u->q_plain, NULL, 0);
  goto out;
fail:
  ub_fail(u, &e);
out:
  EVP_CIPHER_CTX_free(c);
  return NULL;
}

/* Stage 2: gunzip (members one after another, as gunzip reads them). */
static void *ub_inflater(void *arg)
{
  struct ub *u = arg;
  struct error e = { 0 };
  z_stream z = { 0 };
  struct ub_msg in = { 0 };
  bool ended = false, any = false;
  uint8_t *out = NULL;
  if (inflateInit2(&z, 15 + 16) != Z_OK) {
    error_set(&e, ERR_NOMEM, "unbundle: out of memory for the inflater");
    goto fail;
  }
  for (;;) {
    if (!ub_get(u, &u->q_plain, &in))
      goto out;
    if (!in.buf)
      break;
    z.next_in = in.buf;
    z.avail_in = (uInt)in.len;
    while (z.avail_in) {
      if (ended) { /* another gzip member, or zero padding after the last */
        if (inflateReset(&z) != Z_OK)
          break;
        ended = false;
      }
      if (!out && !(out = malloc(UB_MSG))) {
        error_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
      }
      z.next_out = out;
      z.avail_out = UB_MSG;
      int r = inflate(&z, Z_NO_FLUSH);
      if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
        error_set(&e, ERR_FORMAT, "bundle %s: the decrypted stream is not valid gzip (%s) at "
                  "compressed byte %lu", u->o->manifest, z.msg ? z.msg : "zlib error", z.total_in);
        goto fail;
      }
      ended = r == Z_STREAM_END;
      any |= ended;
      size_t n = UB_MSG - z.avail_out;
      if (n) {
        if (!ub_put(u, &u->q_tar, out, n)) {
          out = NULL;
          goto out;
        }
        out = NULL;
      }
    }
    free(in.buf);
    in.buf = NULL;
  }
  if (!ended || !any) {
    error_set(&e, ERR_FORMAT, "bundle %s: the gzip stream ends early (a part is missing)",
              u->o->manifest);
    goto fail;
  }
  ub_put(u, &u->q_tar, NULL, 0);
  goto out;
fail:
  ub_fail(u, &e);
out:
  free(in.buf);
  free(out);
  inflateEnd(&z);
  return NULL;
}

/* ---- the writer: whole units of the destination's blocks, in order ---- */

static int ub_flush_unit(struct ub *u, struct error *e)
{
  if (u->unit_base == UINT64_MAX)
    return 0;
  uint64_t end = u->dst->size - u->unit_base < u->unit_len ? u->dst->size - u->unit_base : u->unit_len;
  size_t bs = u->dst->block_size, at = 0;
  while (at < end) { /* runs of blocks that are not all zeros */
    while (at < end && buf_is_zero(u->unit + at, end - at < bs ? end - at : bs))
      at += bs;
    size_t stop = at;
    while (stop < end && !buf_is_zero(u->unit + stop, end - stop < bs ? end - stop : bs))
      stop += bs;
    if (stop > end)
      stop = end;
    if (stop > at &&
        u->dst->fmt->pwrite(u->dst, u->unit + at, stop - at, u->unit_base + at, e) < 0)
      return -1;
    at = stop;
  }
  u->unit_base = UINT64_MAX;
  return 0;
}

static int ub_data(void *ctx, uint64_t off, const uint8_t *buf, size_t len, struct error *e)
{
  struct ub *u = ctx;
  while (len) {
    uint64_t base = off - off % u->unit_len;
    if (base != u->unit_base) {
      if (ub_flush_unit(u, e) < 0)
        return -1;
      memset(u->unit, 0, u->unit_len);
      u->unit_base = base;
    }
    size_t in = (size_t)(off - base), n = u->unit_len - in < len ? (size_t)(u->unit_len - in) : len;
    memcpy(u->unit + in, buf, n);
    off += n;
    buf += n;
    len -= n;
  }
  return 0;
}

static int ub_member(void *ctx, const char *name, uint64_t size, struct error *e)
{
  struct ub *u = ctx;
  (void)name;
  if (size != u->m.size)
    return error_set(e, ERR_FORMAT, "bundle %s: the archived image is %llu bytes, the manifest's "
                     "<size> says %llu", u->o->manifest, (unsigned long long)size,
                     (unsigned long long)u->m.size);
  u->have_member = true;
  return 0;
}

/* Stage 3, in the calling thread: hash and untar into the image. */
static int ub_untar(struct ub *u, char digest[41], struct error *e)
{
  struct tar_reader tr = { .path = u->o->manifest, .member = ub_member, .data = ub_data, .ctx = u };
  EVP_MD_CTX *sha = EVP_MD_CTX_new();
  struct ub_msg msg;
  int ret = -1;
  if (!sha || EVP_DigestInit_ex(sha, EVP_sha1(), NULL) != 1) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  for (;;) {
    if (!ub_get(u, &u->q_tar, &msg))
      goto out;
    if (!msg.buf)
      break;
    EVP_DigestUpdate(sha, msg.buf, msg.len);
    int r = tar_reader_feed(&tr, msg.buf, msg.len, e);
    free(msg.buf);
    if (r < 0)
      goto out;
    progress_draw(&u->prog, __atomic_load_n(&u->bundled, __ATOMIC_RELAXED), false);
  }
  if (tar_reader_end(&tr, e) < 0 || ub_flush_unit(u, e) < 0)
    goto out;
  uint8_t md[20];
  unsigned mdlen = 0;
  EVP_DigestFinal_ex(sha, md, &mdlen);
  hex_encode(md, 20, digest);
  ret = 0;
out:
  EVP_MD_CTX_free(sha);
  tar_reader_free(&tr);
  return ret;
}

/* ---- checks before decoding ---- */

/* The AES key or IV: the user's copy, else EC2's (when the key is EC2's). */
static int ub_unwrap(struct ub *u, const char *user_hex, const char *ec2_hex, const char *what,
                     uint8_t out[16], struct error *e)
{
  uint8_t text[600];
  ssize_t n = bundle_rsa_decrypt_hex(u->o->key, user_hex, text, sizeof text);
  if (n < 0)
    n = bundle_rsa_decrypt_hex(u->o->key, ec2_hex, text, sizeof text);
  if (n < 0)
    return error_set(e, ERR_FORMAT, "manifest %s: neither user_encrypted_%s nor ec2_encrypted_%s "
                     "opens with the private key %s (the wrong key?)", u->o->manifest, what, what,
                     u->o->key_path);
  int ret = 0;
  bool hex = n == 32 && hex_decode((const char *)text, out, 16) == 16; /* as ec2-bundle-image */
  if (!hex && n == 16)
    memcpy(out, text, 16);
  else if (!hex)
    ret = error_set(e, ERR_FORMAT, "manifest %s: the decrypted %s is %zd bytes, not an AES-128 %s",
                    u->o->manifest, what, n, what);
  OPENSSL_cleanse(text, sizeof text);
  return ret;
}

static int ub_check(struct ub *u, struct error *e)
{
  const struct unbundle_opts *o = u->o;
  EVP_PKEY *pub = o->cert ? o->cert : o->key;
  if (!bundle_verify_hex(pub, u->m.signed_text, u->m.signed_len, u->m.signature)) {
    if (o->cert)
      return error_set(e, ERR_FORMAT, "manifest %s: the signature does not verify with %s (the "
                       "manifest was changed, or that certificate's owner did not sign it)",
                       o->manifest, o->cert_path);
    return error_set(e, ERR_FORMAT, "manifest %s: the signature does not verify with the public "
                     "half of %s (the manifest was changed, or it was made with another key)",
                     o->manifest, o->key_path);
  }
  if (ub_unwrap(u, u->m.user_encrypted_key, u->m.ec2_encrypted_key, "key", u->key, e) < 0 ||
      ub_unwrap(u, u->m.user_encrypted_iv, u->m.ec2_encrypted_iv, "iv", u->iv, e) < 0)
    return -1;
  for (unsigned i = 0; i < u->m.nparts; i++) {
    char *path = ub_part_path(u, i);
    struct stat st;
    int r = path && stat(path, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
    if (r < 0)
      error_errno(e, "bundle part %s (part %u of %u)", path ? path : "?", i, u->m.nparts);
    free(path);
    if (r < 0)
      return -1;
  }
  return 0;
}

static int ub_run(struct ub *u, char digest[41], struct error *e)
{
  pthread_t reader, inflater;
  bool r_ok = pthread_create(&reader, NULL, ub_reader, u) == 0;
  bool i_ok = r_ok && pthread_create(&inflater, NULL, ub_inflater, u) == 0;
  int ret = -1;
  if (!i_ok) {
    struct error te;
    error_set(&te, ERR_IO, "unbundle: cannot start a thread");
    ub_fail(u, &te);
  } else {
    ret = ub_untar(u, digest, e);
    if (ret < 0) {
      struct error mine = *e;
      ub_fail(u, &mine);
    }
  }
  if (r_ok)
    pthread_join(reader, NULL);
  if (i_ok)
    pthread_join(inflater, NULL);
  if (u->failed) { /* the first failure, wherever it was, is the one to tell */
    *e = u->err;
    ret = -1;
  }
  ub_drain(&u->q_plain);
  ub_drain(&u->q_tar);
  return ret;
}

int unbundle(const struct unbundle_opts *o, struct unbundle_result *res, struct error *e)
{
  struct ub u = { .o = o, .unit_base = UINT64_MAX };
  char *tmp = NULL;
  int ret = -1;
  memset(res, 0, sizeof *res);
  pthread_mutex_init(&u.lock, NULL);
  pthread_cond_init(&u.changed, NULL);
  if (manifest_read(o->manifest, &u.m, e) < 0 || ub_check(&u, e) < 0)
    goto out;
  const struct image_format *f = img_format_by_name(o->format);
  if (!f || !f->create) {
    error_set(e, ERR_USAGE, "unbundle: '%s' is not a format amiport writes", o->format);
    goto out;
  }
  /* the manifest's name, with the format's extension unless raw */
  const char *name = u.m.name, *dot = strrchr(name, '.');
  int stem = dot && dot != name && strcmp(f->name, "raw") != 0 ? (int)(dot - name) : (int)strlen(name);
  snprintf(res->path, sizeof res->path, "%s/%.*s%s%s", o->destination, stem, name,
           strcmp(f->name, "raw") ? "." : "", strcmp(f->name, "raw") ? (strcmp(f->name, "vpc") ? f->name : "vhd") : "");
  if (!o->force && access(res->path, F_OK) == 0) {
    error_set(e, ERR_EXISTS, "%s: already exists (--force replaces it)", res->path);
    goto out;
  }
  if (asprintf(&tmp, "%s/.%.*s.amiport-%ld", o->destination, stem, name, (long)getpid()) < 0) {
    tmp = NULL;
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (!(u.dst = img_create(tmp, f->name, u.m.size, o->create, e)))
    goto out;
  u.unit_len = u.dst->block_size > UB_MSG ? u.dst->block_size : UB_MSG;
  if (!(u.unit = malloc(u.unit_len))) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  progress_start(&u.prog, o->progress, u.m.bundled_size);
  char digest[41];
  if (ub_run(&u, digest, e) < 0)
    goto out;
  progress_draw(&u.prog, u.bundled, true);
  if (strcmp(digest, u.m.digest) != 0) {
    error_set(e, ERR_FORMAT, "bundle %s: the tar stream's SHA-1 is %s, the manifest's <digest> "
              "says %s", o->manifest, digest, u.m.digest);
    goto out;
  }
  if (u.m.bundled_size && u.bundled != u.m.bundled_size) {
    error_set(e, ERR_FORMAT, "bundle %s: the parts hold %llu bytes, the manifest's <bundled_size> "
              "says %llu", o->manifest, (unsigned long long)u.bundled,
              (unsigned long long)u.m.bundled_size);
    goto out;
  }
  if (u.dst->fmt->finish && u.dst->fmt->finish(u.dst, e) < 0)
    goto out;
  img_close(u.dst);
  u.dst = NULL;
  if (rename(tmp, res->path) < 0) {
    error_errno(e, "%s: rename from %s", res->path, tmp);
    goto out;
  }
  snprintf(res->digest, sizeof res->digest, "%s", digest);
  res->size = u.m.size;
  res->nparts = u.m.nparts;
  ret = 0;
out:
  if (u.dst)
    img_close(u.dst);
  if (ret < 0 && tmp)
    unlink(tmp);
  OPENSSL_cleanse(u.key, sizeof u.key);
  OPENSSL_cleanse(u.iv, sizeof u.iv);
  free(u.unit);
  free(tmp);
  manifest_free(&u.m);
  pthread_mutex_destroy(&u.lock);
  pthread_cond_destroy(&u.changed);
  return ret;
}
