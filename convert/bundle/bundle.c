/* bundle.c - writes an image as an ec2-bundle-image bundle in one pass.
 *
 * The tar stream (tar_write.c) is cut into chunks; worker threads each fill
 * a chunk straight from the image and deflate it with the 32 KiB before it as
 * the dictionary, ending on a byte boundary (Z_SYNC_FLUSH), so the chunks
 * join into one gzip member as pigz makes them. In chunk order, whichever
 * worker's turn it is feeds the SHA-1 of the tar stream and the CRC-32, then
 * AES-128-CBC encrypts the deflated bytes into parts of part_size bytes, each
 * with its own SHA-1. Memory is a few chunks per thread whatever the image
 * size; nothing of the whole image is written anywhere but the parts. Chunk
 * boundaries, dictionaries and level are fixed, so the deflated bytes (and,
 * with a given key and IV, the parts) depend on the image alone, not on the
 * thread count or on timing: a rerun makes the same parts. The
 * parts and the manifest go to a sink (struct bundle_sink): files in a
 * folder (below), or whatever the caller gives, such as S3 PutObjects. */
#include "bundle_int.h"
#include "hex.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <zlib.h>

#include "progress.h"

#define BW_CHUNK (1u << 20)
#define BW_DICT (32u << 10)
#define BW_LEVEL 6 /* gzip's default: most of -9's ratio at a third of its time */

struct bw {
  const struct bundle_opts *o;
  struct tar_stream t;
  uint64_t nchunks;
  pthread_mutex_t lock;
  pthread_cond_t turn;
  uint64_t next_chunk, next_commit;
  bool failed;
  struct error err;
  /* from here on, touched only by the worker whose turn it is */
  EVP_MD_CTX *tar_sha;
  uLong crc;
  uint64_t isize;
  EVP_CIPHER_CTX *aes;
  uint8_t *enc;           /* AES output of one chunk */
  size_t enc_cap;
  const struct bundle_sink *sink;
  bool in_part, opened;   /* a part is open; the sink was given one */
  uint64_t part_bytes, bundled;
  EVP_MD_CTX *part_sha;
  struct bundle_part *parts;
  unsigned nparts, parts_cap;
  struct progress prog;
};

static void bw_fail(struct bw *w, const struct error *e)
{
  pthread_mutex_lock(&w->lock);
  if (!w->failed) {
    w->failed = true;
    w->err = *e;
  }
  pthread_cond_broadcast(&w->turn);
  pthread_mutex_unlock(&w->lock);
}

/* ---- the folder sink: DIR/PREFIX.part.NN, DIR/PREFIX.manifest.xml ---- */

struct bw_dir {
  const struct bundle_opts *o;
  int fd;
  char *path;           /* the part being written */
  unsigned nparts;      /* parts created, removed again on failure */
  char *mpath, *mtmp;   /* the manifest, and its name while it is written */
  bool mtmp_made;
};

static int dir_part_open(void *arg, unsigned index, const char *name, struct error *e)
{
  struct bw_dir *d = arg;
  (void)index;
  free(d->path);
  if (asprintf(&d->path, "%s/%s", d->o->destination, name) < 0) {
    d->path = NULL;
    return error_set(e, ERR_NOMEM, "out of memory");
  }
  d->fd = open(d->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (d->fd < 0)
    return error_errno(e, "%s: cannot create", d->path);
  d->nparts++;
  return 0;
}

static int dir_part_write(void *arg, const uint8_t *buf, size_t len, uint64_t off, struct error *e)
{
  struct bw_dir *d = arg;
  return img_pwrite_file(d->fd, buf, len, off, d->path, e);
}

static int dir_part_close(void *arg, unsigned index, uint64_t size, const char *sha1,
                          struct error *e)
{
  struct bw_dir *d = arg;
  int fd = d->fd;
  (void)index, (void)size, (void)sha1;
  d->fd = -1;
  if (close(fd) < 0)
    return error_errno(e, "%s: close", d->path);
  return 0;
}

static int dir_manifest(void *arg, const char *name, const char *text, size_t len,
                        struct error *e)
{
  struct bw_dir *d = arg;
  if (asprintf(&d->mpath, "%s/%s", d->o->destination, name) < 0 ||
      asprintf(&d->mtmp, "%s.tmp-%ld", d->mpath, (long)getpid()) < 0)
    return error_set(e, ERR_NOMEM, "out of memory");
  int fd = open(d->mtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return error_errno(e, "%s: cannot create", d->mtmp);
  d->mtmp_made = true;
  int rc = img_pwrite_file(fd, text, len, 0, d->mtmp, e);
  if (rc == 0 && fsync(fd) < 0)
    rc = error_errno(e, "%s: fsync", d->mtmp);
  close(fd);
  if (rc == 0 && rename(d->mtmp, d->mpath) < 0)
    rc = error_errno(e, "%s: rename from %s", d->mpath, d->mtmp);
  if (rc == 0)
    d->mtmp_made = false;
  return rc;
}

/* Removes the parts this run wrote, and the manifest if it got that far. */
static void dir_abort(void *arg)
{
  struct bw_dir *d = arg;
  char path[4096];
  if (d->fd >= 0)
    close(d->fd);
  d->fd = -1;
  for (unsigned i = 0; i < d->nparts; i++) {
    snprintf(path, sizeof path, "%s/%s.part.%02u", d->o->destination, d->o->prefix, i);
    unlink(path);
  }
  if (d->mtmp_made)
    unlink(d->mtmp);
}

/* ---- parts ---- */

static int bw_part_close(struct bw *w, struct error *e)
{
  uint8_t md[20];
  unsigned len = 0;
  struct bundle_part *p = &w->parts[w->nparts - 1];
  w->in_part = false;
  EVP_DigestFinal_ex(w->part_sha, md, &len);
  hex_encode(md, 20, p->sha1);
  return w->sink->part_close(w->sink->arg, w->nparts - 1, w->part_bytes, p->sha1, e);
}

static int bw_part_open(struct bw *w, struct error *e)
{
  if (w->nparts == BUNDLE_MAX_PARTS)
    return error_set(e, ERR_USAGE, "bundle: more than %u parts; use a larger --part-size",
                     BUNDLE_MAX_PARTS);
  if (w->nparts == w->parts_cap) {
    unsigned cap = w->parts_cap ? 2 * w->parts_cap : 64;
    struct bundle_part *v = realloc(w->parts, cap * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory");
    w->parts = v;
    w->parts_cap = cap;
  }
  char *name;
  if (asprintf(&name, "%s.part.%02u", w->o->prefix, w->nparts) < 0)
    return error_set(e, ERR_NOMEM, "out of memory");
  w->parts[w->nparts].filename = name;
  w->nparts++;
  w->opened = true;
  if (w->sink->part_open(w->sink->arg, w->nparts - 1, name, e) < 0)
    return -1;
  w->in_part = true;
  w->part_bytes = 0;
  EVP_DigestInit_ex(w->part_sha, EVP_sha1(), NULL);
  return 0;
}

/* Appends encrypted bytes to the parts, starting a new part at part_size. */
static int bw_parts_write(struct bw *w, const uint8_t *buf, size_t len, struct error *e)
{
  while (len) {
    if (!w->in_part && bw_part_open(w, e) < 0)
      return -1;
    size_t n = w->o->part_size - w->part_bytes < len ? (size_t)(w->o->part_size - w->part_bytes) : len;
    if (w->sink->part_write(w->sink->arg, buf, n, w->part_bytes, e) < 0)
      return -1;
    EVP_DigestUpdate(w->part_sha, buf, n);
    w->part_bytes += n;
    w->bundled += n;
    buf += n;
    len -= n;
    if (w->part_bytes == w->o->part_size && bw_part_close(w, e) < 0)
      return -1;
  }
  return 0;
}

static int bw_encrypt(struct bw *w, const uint8_t *buf, size_t len, struct error *e)
{
  while (len) {
    int n = len > w->enc_cap - 32 ? (int)(w->enc_cap - 32) : (int)len, out = 0;
    if (EVP_EncryptUpdate(w->aes, w->enc, &out, buf, n) != 1)
      return error_set(e, ERR_IO, "bundle: AES-128-CBC encryption failed");
    if (bw_parts_write(w, w->enc, (size_t)out, e) < 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Chunk k's turn: digest its tar bytes, encrypt its deflated bytes. */
static int bw_commit(struct bw *w, uint64_t k, const uint8_t *data, size_t len, uLong crc,
                     const uint8_t *z, size_t zlen, struct error *e)
{
  if (k == 0) { /* gzip member header: deflate, no name, mtime 0, Unix */
    static const uint8_t gz[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };
    if (bw_encrypt(w, gz, sizeof gz, e) < 0)
      return -1;
  }
  EVP_DigestUpdate(w->tar_sha, data, len);
  w->crc = k == 0 ? crc : crc32_combine(w->crc, crc, (z_off_t)len);
  w->isize += len;
  if (bw_encrypt(w, z, zlen, e) < 0)
    return -1;
  progress_draw(&w->prog, w->isize, false);
  if (k + 1 < w->nchunks)
    return 0;
  uint8_t tail[8];
  put_le32(tail, (uint32_t)w->crc);
  put_le32(tail + 4, (uint32_t)w->isize);
  int out = 0;
  if (bw_encrypt(w, tail, sizeof tail, e) < 0 || EVP_EncryptFinal_ex(w->aes, w->enc, &out) != 1)
    return error_set(e, ERR_IO, "bundle: AES-128-CBC encryption failed");
  if (bw_parts_write(w, w->enc, (size_t)out, e) < 0)
    return -1;
  return w->in_part ? bw_part_close(w, e) : 0;
}

static bool bw_wait_turn(struct bw *w, uint64_t k)
{
  pthread_mutex_lock(&w->lock);
  while (w->next_commit != k && !w->failed)
    pthread_cond_wait(&w->turn, &w->lock);
  bool ok = !w->failed;
  pthread_mutex_unlock(&w->lock);
  return ok;
}

static void *bw_worker(void *arg)
{
  struct bw *w = arg;
  struct error e = { 0 };
  z_stream z = { 0 };
  size_t zcap = deflateBound(&z, BW_CHUNK) + 64;
  uint8_t *in = malloc(BW_DICT + BW_CHUNK), *out = malloc(zcap);
  if (!in || !out || deflateInit2(&z, BW_LEVEL, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    error_set(&e, ERR_NOMEM, "bundle: out of memory for the compressor");
    bw_fail(w, &e);
    goto out;
  }
  for (;;) {
    pthread_mutex_lock(&w->lock);
    uint64_t k = w->next_chunk++;
    bool stop = w->failed || k >= w->nchunks;
    pthread_mutex_unlock(&w->lock);
    if (stop)
      break;
    if (w->o->cancel && *w->o->cancel) {
      error_set(&e, ERR_INTERRUPTED, "bundle: interrupted");
      bw_fail(w, &e);
      break;
    }
    uint64_t pos = k * BW_CHUNK;
    size_t len = w->t.len - pos < BW_CHUNK ? (size_t)(w->t.len - pos) : BW_CHUNK;
    size_t dict = pos < BW_DICT ? (size_t)pos : BW_DICT;
    bool last = k + 1 == w->nchunks;
    if (tar_stream_read(&w->t, in, pos - dict, dict + len, &e) < 0) {
      bw_fail(w, &e);
      break;
    }
    uLong crc = crc32(0, in + dict, (uInt)len);
    deflateReset(&z);
    if (dict)
      deflateSetDictionary(&z, in, (uInt)dict);
    z.next_in = in + dict;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)zcap;
    int r = deflate(&z, last ? Z_FINISH : Z_SYNC_FLUSH);
    if (z.avail_in || (last ? r != Z_STREAM_END : r != Z_OK) || !z.avail_out) {
      error_set(&e, ERR_IO, "bundle: deflate failed on tar bytes %llu+%zu (zlib %d)",
                (unsigned long long)pos, len, r);
      bw_fail(w, &e);
      break;
    }
    if (!bw_wait_turn(w, k))
      break;
    if (bw_commit(w, k, in + dict, len, crc, out, zcap - z.avail_out, &e) < 0) {
      bw_fail(w, &e);
      break;
    }
    pthread_mutex_lock(&w->lock);
    w->next_commit++;
    pthread_cond_broadcast(&w->turn);
    pthread_mutex_unlock(&w->lock);
  }
out:
  deflateEnd(&z);
  free(in);
  free(out);
  return NULL;
}

static int bw_run(struct bw *w, struct error *e)
{
  unsigned n = w->o->threads;
  if (!n) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = cores < 2 ? 2 : cores > 64 ? 64 : (unsigned)cores;
  }
  pthread_t tids[64];
  unsigned started = 0;
  for (; started < n; started++)
    if (pthread_create(&tids[started], NULL, bw_worker, w) != 0) {
      struct error te;
      error_set(&te, ERR_IO, "bundle: cannot start a thread");
      bw_fail(w, &te);
      break;
    }
  for (unsigned i = 0; i < started; i++)
    pthread_join(tids[i], NULL);
  if (w->failed) {
    *e = w->err;
    return -1;
  }
  progress_draw(&w->prog, w->isize, true);
  return 0;
}

/* Encrypts the hex text of key and iv under cert into the manifest fields. */
static int bw_wrap_keys(EVP_PKEY *cert, const char *khex, const char *ivhex, char **k, char **iv,
                        struct error *e)
{
  if (!(*k = bundle_rsa_encrypt_hex(cert, khex, e)) || !(*iv = bundle_rsa_encrypt_hex(cert, ivhex, e)))
    return -1;
  return 0;
}

static int bw_manifest(struct bw *w, struct img *src, const uint8_t key[16], const uint8_t iv[16],
                       struct bundle_result *res, struct error *e)
{
  const struct bundle_opts *o = w->o;
  struct manifest m = {
    .arch = (char *)o->arch, .kernel_id = (char *)o->kernel_id, .ramdisk_id = (char *)o->ramdisk_id,
    .nmappings = o->nmappings, .name = (char *)o->name, .user = (char *)o->user,
    .size = src->size, .bundled_size = w->bundled, .parts = w->parts, .nparts = w->nparts,
  };
  for (unsigned i = 0; i < o->nmappings; i++)
    m.mappings[i] = o->mappings[i];
  uint8_t md[20];
  unsigned mdlen = 0;
  EVP_DigestFinal_ex(w->tar_sha, md, &mdlen);
  hex_encode(md, 20, m.digest);
  snprintf(res->digest, sizeof res->digest, "%s", m.digest);
  char khex[33], ivhex[33], *text = NULL, *name = NULL;
  size_t len = 0;
  hex_encode(key, 16, khex);
  hex_encode(iv, 16, ivhex);
  int ret = -1;
  bool reuse = o->key && o->user_encrypted_key && o->user_encrypted_iv;
  if (reuse) {
    m.user_encrypted_key = strdup(o->user_encrypted_key);
    m.user_encrypted_iv = strdup(o->user_encrypted_iv);
  }
  if (reuse && (!m.user_encrypted_key || !m.user_encrypted_iv))
    error_set(e, ERR_NOMEM, "out of memory");
  else if ((reuse || bw_wrap_keys(o->user_cert, khex, ivhex, &m.user_encrypted_key,
                                  &m.user_encrypted_iv, e) == 0) &&
           bw_wrap_keys(o->ec2_cert, khex, ivhex, &m.ec2_encrypted_key, &m.ec2_encrypted_iv, e) == 0 &&
           manifest_format(&m, o->user_key, o->bundler_version, &text, &len, e) == 0) {
    if (asprintf(&name, "%s.manifest.xml", o->prefix) < 0)
      error_set(e, ERR_NOMEM, "out of memory"), name = NULL;
    else if (w->sink->manifest(w->sink->arg, name, text, len, e) == 0)
      ret = 0;
  }
  OPENSSL_cleanse(khex, sizeof khex);
  OPENSSL_cleanse(ivhex, sizeof ivhex);
  free(m.user_encrypted_key);
  free(m.user_encrypted_iv);
  free(m.ec2_encrypted_key);
  free(m.ec2_encrypted_iv);
  free(text);
  if (ret == 0)
    snprintf(res->manifest, sizeof res->manifest, "%s", name);
  free(name);
  return ret;
}

int bundle_write(struct img *src, const struct bundle_opts *o, struct bundle_result *res,
                 struct error *e)
{
  struct bw_dir dir = { .o = o, .fd = -1 };
  const struct bundle_sink dir_sink = { &dir, dir_part_open, dir_part_write, dir_part_close,
                                        dir_manifest, dir_abort };
  struct bw w = { .o = o, .sink = o->sink ? o->sink : &dir_sink };
  uint8_t key[16], iv[16];
  int ret = -1;
  memset(res, 0, sizeof *res);
  if (!bundle_name_ok(o->prefix) || !bundle_name_ok(o->name))
    return error_set(e, ERR_USAGE, "bundle: the prefix '%s' and image name '%s' must be bare file "
                     "names", o->prefix, o->name);
  if (o->part_size < 1 || o->nmappings > BUNDLE_MAX_MAPPINGS)
    return error_set(e, ERR_USAGE, "bundle: bad part size or too many block device mappings");
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.turn, NULL);
  w.enc_cap = BW_CHUNK + 64;
  w.tar_sha = EVP_MD_CTX_new();
  w.part_sha = EVP_MD_CTX_new();
  w.aes = EVP_CIPHER_CTX_new();
  w.enc = malloc(w.enc_cap);
  if (!w.tar_sha || !w.part_sha || !w.aes || !w.enc) {
    error_set(e, ERR_NOMEM, "out of memory");
    goto out;
  }
  if (o->key && o->iv) {
    memcpy(key, o->key, sizeof key);
    memcpy(iv, o->iv, sizeof iv);
  } else if (RAND_bytes(key, sizeof key) != 1 || RAND_bytes(iv, sizeof iv) != 1) {
    error_set(e, ERR_IO, "bundle: OpenSSL's random generator failed");
    goto out;
  }
  if (EVP_EncryptInit_ex(w.aes, EVP_aes_128_cbc(), NULL, key, iv) != 1 ||
      EVP_DigestInit_ex(w.tar_sha, EVP_sha1(), NULL) != 1) {
    error_set(e, ERR_IO, "bundle: OpenSSL cannot set up AES-128-CBC and SHA-1");
    goto out;
  }
  if (tar_stream_build(&w.t, src, o->name, o->mtime, e) < 0)
    goto out;
  w.nchunks = (w.t.len + BW_CHUNK - 1) / BW_CHUNK;
  progress_start(&w.prog, o->progress, w.t.len);
  w.prog.note = o->progress_note;
  w.prog.note_arg = o->progress_arg;
  if (bw_run(&w, e) < 0 || bw_manifest(&w, src, key, iv, res, e) < 0)
    goto out;
  if (!o->sink)
    snprintf(res->manifest, sizeof res->manifest, "%s", dir.mpath);
  res->nparts = w.nparts;
  res->bundled_size = w.bundled;
  res->tar_size = w.t.len;
  res->data = w.t.data;
  ret = 0;
out:
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(iv, sizeof iv);
  if (ret < 0 && w.opened)
    w.sink->abort(w.sink->arg);
  for (unsigned i = 0; i < w.nparts; i++)
    free(w.parts[i].filename);
  free(w.parts);
  free(w.enc);
  EVP_MD_CTX_free(w.tar_sha);
  EVP_MD_CTX_free(w.part_sha);
  EVP_CIPHER_CTX_free(w.aes);
  tar_stream_free(&w.t);
  pthread_mutex_destroy(&w.lock);
  pthread_cond_destroy(&w.turn);
  if (dir.fd >= 0)
    close(dir.fd);
  free(dir.path);
  free(dir.mpath);
  free(dir.mtmp);
  return ret;
}
