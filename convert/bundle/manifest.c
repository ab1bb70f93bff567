/* manifest.c - the bundle manifest (PREFIX.manifest.xml) and its RSA.
 *
 * ec2-bundle-image writes the manifest on one line; its signature is RSA-SHA1
 * (PKCS#1 v1.5), hex, over the text of <machine_configuration> followed by
 * the text of <image>, exactly as they stand in the file (version 3 has no
 * machine configuration: then <image> alone). The AES key and IV go in as
 * their hex text, RSA-encrypted (PKCS#1 v1.5) under the user's and under
 * EC2's certificate. The reader checks every field's shape and names the
 * element it refuses. */
#include "bundle.h"
#include "hex.h"
#include "lazylib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static bool mf_is_hex(const char *s, size_t want)
{
  size_t n = strlen(s);
  if (n == 0 || (want && n != want) || n % 2)
    return false;
  for (; *s; s++)
    if (hex_digit(*s) < 0)
      return false;
  return true;
}

/* ---- keys ------------------------------------------------------------------ */

static int mf_ssl_error(struct error *e, int code, const char *what, const char *path)
{
  char why[200] = "";
  unsigned long err = ERR_get_error();
  if (err)
    ERR_error_string_n(err, why, sizeof why);
  ERR_clear_error();
  return error_set(e, code, "%s: %s%s%s%s", path, what, why[0] ? " (" : "", why, why[0] ? ")" : "");
}

/* A passphrase prompt would hang a batch job: encrypted keys are refused. */
static int mf_no_passphrase(char *buf, int size, int rwflag, void *u)
{
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

EVP_PKEY *bundle_load_cert(const char *path, struct error *e)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return error_errno(e, "%s: cannot open the certificate", path), NULL;
  X509 *x = PEM_read_X509(f, NULL, mf_no_passphrase, NULL);
  fclose(f);
  if (!x)
    return mf_ssl_error(e, ERR_FORMAT, "not a PEM X.509 certificate", path), NULL;
  EVP_PKEY *k = X509_get_pubkey(x);
  X509_free(x);
  if (!k || EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
    EVP_PKEY_free(k);
    return error_set(e, ERR_UNSUPPORTED, "%s: the certificate's key is not RSA", path), NULL;
  }
  return k;
}

EVP_PKEY *bundle_load_key(const char *path, struct error *e)
{
  FILE *f = fopen(path, "r");
  if (!f)
    return error_errno(e, "%s: cannot open the private key", path), NULL;
  EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, mf_no_passphrase, NULL);
  fclose(f);
  if (!k)
    return mf_ssl_error(e, ERR_FORMAT,
                        "not an unencrypted PEM private key (a key with a passphrase must be "
                        "decrypted first: openssl rsa -in KEY -out PLAIN)", path), NULL;
  if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
    EVP_PKEY_free(k);
    return error_set(e, ERR_UNSUPPORTED, "%s: not an RSA key", path), NULL;
  }
  return k;
}

/* Hex of RSA PKCS#1 v1.5 encryption of text under k (malloc'd). */
char *bundle_rsa_encrypt_hex(EVP_PKEY *k, const char *text, struct error *e)
{
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
  size_t n = 0;
  uint8_t *out = NULL;
  char *hex = NULL;
  if (!c || EVP_PKEY_encrypt_init(c) <= 0 || EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) <= 0 ||
      EVP_PKEY_encrypt(c, NULL, &n, (const uint8_t *)text, strlen(text)) <= 0 ||
      !(out = malloc(n)) || !(hex = malloc(2 * n + 1)) ||
      EVP_PKEY_encrypt(c, out, &n, (const uint8_t *)text, strlen(text)) <= 0) {
    free(hex);
    hex = NULL;
    mf_ssl_error(e, ERR_IO, "RSA encryption failed", "bundle key");
  } else {
    hex_encode(out, n, hex);
  }
  free(out);
  EVP_PKEY_CTX_free(c);
  return hex;
}

/* Decrypts the hex of an RSA PKCS#1 v1.5 block with k into out (NUL-ended);
 * the byte count, or -1 (not an error: the caller tries the other key). */
ssize_t bundle_rsa_decrypt_hex(EVP_PKEY *k, const char *hex, uint8_t *out, size_t cap)
{
  uint8_t in[1024];
  ssize_t len = hex_decode(hex, in, sizeof in);
  if (len <= 0)
    return -1;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
  size_t n = 0;
  ssize_t ret = -1;
  if (c && EVP_PKEY_decrypt_init(c) > 0 && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0 &&
      EVP_PKEY_decrypt(c, NULL, &n, in, (size_t)len) > 0) {
    uint8_t *buf = malloc(n);
    if (buf && EVP_PKEY_decrypt(c, buf, &n, in, (size_t)len) > 0 && n < cap) {
      memcpy(out, buf, n);
      out[n] = 0;
      ret = (ssize_t)n;
    }
    free(buf);
  }
  ERR_clear_error();
  EVP_PKEY_CTX_free(c);
  return ret;
}

/* Hex RSA-SHA1 signature of data by k (malloc'd). */
char *bundle_sign_hex(EVP_PKEY *k, const void *data, size_t len, struct error *e)
{
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  size_t n = 0;
  uint8_t *sig = NULL;
  char *hex = NULL;
  if (!c || EVP_DigestSignInit(c, NULL, EVP_sha1(), NULL, k) <= 0 ||
      EVP_DigestSign(c, NULL, &n, data, len) <= 0 || !(sig = malloc(n)) ||
      !(hex = malloc(2 * n + 1)) || EVP_DigestSign(c, sig, &n, data, len) <= 0) {
    free(hex);
    hex = NULL;
    mf_ssl_error(e, ERR_IO, "RSA-SHA1 signing failed", "manifest");
  } else {
    hex_encode(sig, n, hex);
  }
  free(sig);
  EVP_MD_CTX_free(c);
  return hex;
}

bool bundle_verify_hex(EVP_PKEY *k, const void *data, size_t len, const char *sighex)
{
  uint8_t sig[1024];
  ssize_t n = hex_decode(sighex, sig, sizeof sig);
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  bool ok = n > 0 && c && EVP_DigestVerifyInit(c, NULL, EVP_sha1(), NULL, k) > 0 &&
            EVP_DigestVerify(c, sig, (size_t)n, data, len) == 1;
  ERR_clear_error();
  EVP_MD_CTX_free(c);
  return ok;
}

/* ---- reading --------------------------------------------------------------- */

static xmlNodePtr mf_child(xmlNodePtr parent, const char *name)
{
  for (xmlNodePtr n = parent ? parent->children : NULL; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0)
      return n;
  return NULL;
}

/* The element's text without surrounding white space, malloc'd. */
static char *mf_content(xmlNodePtr n)
{
  char *s = (char *)xmlNodeGetContent(n), *out;
  if (!s)
    return strdup("");
  char *a = s, *z = s + strlen(s);
  while (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r')
    a++;
  while (z > a && (z[-1] == ' ' || z[-1] == '\t' || z[-1] == '\n' || z[-1] == '\r'))
    z--;
  out = strndup(a, (size_t)(z - a));
  xmlFree(s);
  return out;
}

struct mf_reader {
  const char *path;
  struct error *e;
};

/* The text of parent/name; NULL (and an error) when required and absent. */
static char *mf_field(struct mf_reader *r, xmlNodePtr parent, const char *where, const char *name,
                      bool required)
{
  xmlNodePtr n = mf_child(parent, name);
  if (!n) {
    if (required)
      error_set(r->e, ERR_FORMAT, "manifest %s: <%s> has no <%s>", r->path, where, name);
    return NULL;
  }
  char *s = mf_content(n);
  if (!s)
    error_set(r->e, ERR_NOMEM, "manifest %s: out of memory", r->path);
  return s;
}

static int mf_u64(struct mf_reader *r, xmlNodePtr parent, const char *name, uint64_t *out)
{
  char *s = mf_field(r, parent, "image", name, true), *end;
  if (!s)
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  int ret = 0;
  if (!s[0] || *end || errno || s[0] == '-')
    ret = error_set(r->e, ERR_FORMAT, "manifest %s: <image><%s> is '%.40s', not a byte count",
                    r->path, name, s);
  *out = v;
  free(s);
  return ret;
}

/* A file name the manifest may give: a bare name in the manifest's folder. */
bool bundle_name_ok(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
    return false;
  for (; *s; s++)
    if (*s == '/' || (unsigned char)*s < 0x20 || *s == 0x7f)
      return false;
  return true;
}

static int mf_digest(struct mf_reader *r, xmlNodePtr parent, const char *where, char out[41])
{
  xmlNodePtr d = mf_child(parent, "digest");
  if (!d)
    return error_set(r->e, ERR_FORMAT, "manifest %s: %s has no <digest>", r->path, where);
  xmlChar *alg = xmlGetProp(d, (const xmlChar *)"algorithm");
  bool sha1 = !alg || strcasecmp((const char *)alg, "SHA1") == 0;
  if (!sha1) {
    error_set(r->e, ERR_UNSUPPORTED, "manifest %s: %s <digest algorithm=\"%.20s\">: only SHA1 is "
              "known", r->path, where, (const char *)alg);
    xmlFree(alg);
    return -1;
  }
  xmlFree(alg);
  char *s = mf_content(d);
  int ret = 0;
  if (!s || !mf_is_hex(s, 40))
    ret = error_set(r->e, ERR_FORMAT, "manifest %s: %s <digest> is '%.48s', not a SHA-1 in hex",
                    r->path, where, s ? s : "");
  else
    for (int i = 0; i <= 40; i++)
      out[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] + 32 : s[i]);
  free(s);
  return ret;
}

static int mf_read_parts(struct mf_reader *r, xmlNodePtr image, struct manifest *m)
{
  xmlNodePtr parts = mf_child(image, "parts");
  if (!parts)
    return error_set(r->e, ERR_FORMAT, "manifest %s: <image> has no <parts>", r->path);
  xmlChar *cnt = xmlGetProp(parts, (const xmlChar *)"count");
  char *end = NULL;
  unsigned long count = cnt ? strtoul((const char *)cnt, &end, 10) : 0;
  bool ok = cnt && cnt[0] && !*end && count > 0 && count <= BUNDLE_MAX_PARTS;
  if (!ok) {
    error_set(r->e, ERR_FORMAT, "manifest %s: <parts count=\"%.20s\">: not a part count from 1 "
              "to %u", r->path, cnt ? (const char *)cnt : "", BUNDLE_MAX_PARTS);
    xmlFree(cnt);
    return -1;
  }
  xmlFree(cnt);
  if (!(m->parts = calloc(count, sizeof *m->parts)))
    return error_set(r->e, ERR_NOMEM, "manifest %s: out of memory", r->path);
  for (xmlNodePtr p = parts->children; p; p = p->next) {
    if (p->type != XML_ELEMENT_NODE || strcmp((const char *)p->name, "part") != 0)
      continue;
    char where[48];
    snprintf(where, sizeof where, "<part> %u", m->nparts);
    xmlChar *idx = xmlGetProp(p, (const xmlChar *)"index");
    unsigned long i = idx ? strtoul((const char *)idx, &end, 10) : 0;
    ok = idx && idx[0] && !*end && i == m->nparts;
    xmlFree(idx);
    if (m->nparts >= count)
      return error_set(r->e, ERR_FORMAT, "manifest %s: more <part> elements than <parts "
                       "count=\"%lu\">", r->path, count);
    if (!ok)
      return error_set(r->e, ERR_FORMAT, "manifest %s: %s: index is not %u (parts must be in "
                       "order)", r->path, where, m->nparts);
    struct bundle_part *bp = &m->parts[m->nparts++];
    if (!(bp->filename = mf_field(r, p, "part", "filename", true)))
      return -1;
    if (!bundle_name_ok(bp->filename))
      return error_set(r->e, ERR_REFUSED, "manifest %s: %s: <filename> '%.80s' is not a bare file "
                       "name", r->path, where, bp->filename);
    if (mf_digest(r, p, where, bp->sha1) < 0)
      return -1;
  }
  if (m->nparts != count)
    return error_set(r->e, ERR_FORMAT, "manifest %s: <parts count=\"%lu\"> but %u <part> elements",
                     r->path, count, m->nparts);
  return 0;
}

static int mf_read_machine(struct mf_reader *r, xmlNodePtr mc, struct manifest *m)
{
  m->arch = mf_field(r, mc, "machine_configuration", "architecture", false);
  m->kernel_id = mf_field(r, mc, "machine_configuration", "kernel_id", false);
  m->ramdisk_id = mf_field(r, mc, "machine_configuration", "ramdisk_id", false);
  xmlNodePtr bdm = mf_child(mc, "block_device_mapping");
  for (xmlNodePtr p = bdm ? bdm->children : NULL; p; p = p->next) {
    if (p->type != XML_ELEMENT_NODE || strcmp((const char *)p->name, "mapping") != 0)
      continue;
    if (m->nmappings == BUNDLE_MAX_MAPPINGS)
      return error_set(r->e, ERR_FORMAT, "manifest %s: more than %u block device mappings",
                       r->path, BUNDLE_MAX_MAPPINGS);
    struct bundle_mapping *bm = &m->mappings[m->nmappings++];
    if (!(bm->virtual_name = mf_field(r, p, "mapping", "virtual", true)) ||
        !(bm->device = mf_field(r, p, "mapping", "device", true)))
      return -1;
  }
  return 0;
}

/* Where the signed text lies in the file: <machine_configuration>...</...>
 * (when present) and <image>...</image>, joined. */
static int mf_signed_text(struct mf_reader *r, const char *text, struct manifest *m)
{
  const char *mc = strstr(text, "<machine_configuration>"), *mce = NULL;
  const char *im = strstr(text, "<image>"), *ime = im ? strstr(im, "</image>") : NULL;
  if (mc && !(mce = strstr(mc, "</machine_configuration>")))
    return error_set(r->e, ERR_FORMAT, "manifest %s: <machine_configuration> is not closed", r->path);
  if (!im || !ime)
    return error_set(r->e, ERR_FORMAT, "manifest %s: no <image>...</image> text to check the "
                     "signature over", r->path);
  size_t mlen = mc ? (size_t)(mce - mc) + strlen("</machine_configuration>") : 0;
  size_t ilen = (size_t)(ime - im) + strlen("</image>");
  if (!(m->signed_text = malloc(mlen + ilen + 1)))
    return error_set(r->e, ERR_NOMEM, "manifest %s: out of memory", r->path);
  if (mlen) /* version 3 has no machine configuration */
    memcpy(m->signed_text, mc, mlen);
  memcpy(m->signed_text + mlen, im, ilen);
  m->signed_text[mlen + ilen] = 0;
  m->signed_len = mlen + ilen;
  return 0;
}

static char *mf_slurp(const char *path, size_t *len, struct error *e)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0)
    return error_errno(e, "manifest %s: cannot open", path), NULL;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > BUNDLE_MANIFEST_MAX) {
    close(fd);
    return error_set(e, ERR_FORMAT, "manifest %s: not a regular file of at most %u MiB", path,
                     BUNDLE_MANIFEST_MAX >> 20), NULL;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf || img_pread_file(fd, buf, (size_t)st.st_size, 0, path, e) < 0) {
    close(fd);
    free(buf);
    return buf ? NULL : (error_set(e, ERR_NOMEM, "manifest %s: out of memory", path), NULL);
  }
  close(fd);
  buf[st.st_size] = 0;
  *len = (size_t)st.st_size;
  return buf;
}

int manifest_read(const char *path, struct manifest *m, struct error *e)
{
  size_t len = 0;
  memset(m, 0, sizeof *m);
  char *text = mf_slurp(path, &len, e);
  return text ? manifest_parse(path, text, len, m, e) : -1;
}

int manifest_parse(const char *path, char *text, size_t len, struct manifest *m, struct error *e)
{
  struct mf_reader r = { path, e };
  memset(m, 0, sizeof *m);
  int ret = -1;
  char *s = NULL;
  /* no network, no external entities, libxml2's limits on expansion */
  xmlDocPtr doc = memchr(text, 0, len) ? NULL
                  : xmlReadMemory(text, (int)len, NULL, NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL, image, mc;
  if (!root || strcmp((const char *)root->name, "manifest") != 0) {
    error_set(e, ERR_FORMAT, "manifest %s: not an XML document with a <manifest> root", path);
    goto out;
  }
  if (!(s = mf_field(&r, root, "manifest", "version", true)))
    goto out;
  if (strcmp(s, "2007-10-10") && strcmp(s, "2007-08-29") && strcmp(s, "3")) {
    error_set(e, ERR_UNSUPPORTED, "manifest %s: <version> '%.20s' is not one amiport reads "
              "(2007-10-10, 2007-08-29, 3)", path, s);
    goto out;
  }
  snprintf(m->version, sizeof m->version, "%s", s);
  if ((mc = mf_child(root, "machine_configuration")) && mf_read_machine(&r, mc, m) < 0)
    goto out;
  if (!(image = mf_child(root, "image"))) {
    error_set(e, ERR_FORMAT, "manifest %s: no <image>", path);
    goto out;
  }
  if (!(m->name = mf_field(&r, image, "image", "name", true)) ||
      !(m->user = mf_field(&r, image, "image", "user", false) ?: strdup("")))
    goto out;
  if (!bundle_name_ok(m->name)) {
    error_set(e, ERR_REFUSED, "manifest %s: <image><name> '%.80s' is not a bare file name", path,
              m->name);
    goto out;
  }
  if (mf_digest(&r, image, "<image>", m->digest) < 0 || mf_u64(&r, image, "size", &m->size) < 0)
    goto out;
  if (mf_child(image, "bundled_size") && mf_u64(&r, image, "bundled_size", &m->bundled_size) < 0)
    goto out;
  struct { const char *name; char **out; } keys[] = {
    { "ec2_encrypted_key", &m->ec2_encrypted_key }, { "user_encrypted_key", &m->user_encrypted_key },
    { "ec2_encrypted_iv", &m->ec2_encrypted_iv }, { "user_encrypted_iv", &m->user_encrypted_iv },
  };
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    if (!(*keys[i].out = mf_field(&r, image, "image", keys[i].name, true)))
      goto out;
    if (!mf_is_hex(*keys[i].out, 0) || strlen(*keys[i].out) > 2048) {
      error_set(e, ERR_FORMAT, "manifest %s: <%s> is not hex of an RSA block", path, keys[i].name);
      goto out;
    }
  }
  xmlNodePtr alg = mf_child(image, "user_encrypted_key");
  xmlChar *a = xmlGetProp(alg, (const xmlChar *)"algorithm");
  if (a && strcasecmp((const char *)a, "AES-128-CBC") != 0) {
    error_set(e, ERR_UNSUPPORTED, "manifest %s: <user_encrypted_key algorithm=\"%.20s\">: only "
              "AES-128-CBC is known", path, (const char *)a);
    xmlFree(a);
    goto out;
  }
  xmlFree(a);
  if (mf_read_parts(&r, image, m) < 0)
    goto out;
  free(s);
  if (!(s = mf_field(&r, root, "manifest", "signature", true)))
    goto out;
  if (!mf_is_hex(s, 0) || strlen(s) > 2048) {
    error_set(e, ERR_FORMAT, "manifest %s: <signature> is not hex of an RSA signature", path);
    goto out;
  }
  m->signature = s;
  s = NULL;
  ret = mf_signed_text(&r, text, m);
out:
  free(s);
  xmlFreeDoc(doc);
  free(text);
  if (ret < 0)
    manifest_free(m);
  return ret;
}

void manifest_free(struct manifest *m)
{
  free(m->arch);
  free(m->kernel_id);
  free(m->ramdisk_id);
  for (unsigned i = 0; i < m->nmappings; i++) {
    free(m->mappings[i].virtual_name);
    free(m->mappings[i].device);
  }
  free(m->name);
  free(m->user);
  free(m->ec2_encrypted_key);
  free(m->user_encrypted_key);
  free(m->ec2_encrypted_iv);
  free(m->user_encrypted_iv);
  for (unsigned i = 0; i < m->nparts; i++)
    free(m->parts[i].filename);
  free(m->parts);
  free(m->signature);
  free(m->signed_text);
  memset(m, 0, sizeof *m);
}

/* ---- writing --------------------------------------------------------------- */

struct mf_text {
  char *s;
  size_t len, cap;
  bool failed;
};

static void mf_put(struct mf_text *t, const char *s, size_t n)
{
  if (t->failed)
    return;
  if (t->len + n + 1 > t->cap) {
    size_t cap = (t->cap ? t->cap : 4096);
    while (cap < t->len + n + 1)
      cap *= 2;
    char *p = realloc(t->s, cap);
    if (!p) {
      t->failed = true;
      return;
    }
    t->s = p;
    t->cap = cap;
  }
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = 0;
}

static void mf_puts(struct mf_text *t, const char *s)
{
  mf_put(t, s, strlen(s));
}

/* <tag>escaped value</tag>; attr ("algorithm=\"SHA1\"") may be NULL. */
static void mf_elem(struct mf_text *t, const char *tag, const char *attr, const char *value)
{
  mf_puts(t, "<");
  mf_puts(t, tag);
  if (attr) {
    mf_puts(t, " ");
    mf_puts(t, attr);
  }
  mf_puts(t, ">");
  for (const char *p = value; *p; p++)
    switch (*p) {
    case '&': mf_puts(t, "&amp;"); break;
    case '<': mf_puts(t, "&lt;"); break;
    case '>': mf_puts(t, "&gt;"); break;
    default: mf_put(t, p, 1);
    }
  mf_puts(t, "</");
  mf_puts(t, tag);
  mf_puts(t, ">");
}

/* The signed part: <machine_configuration>...</machine_configuration><image>...</image>. */
static void mf_signed_part(struct mf_text *t, const struct manifest *m)
{
  char num[32];
  mf_puts(t, "<machine_configuration>");
  mf_elem(t, "architecture", NULL, m->arch);
  if (m->nmappings) {
    mf_puts(t, "<block_device_mapping>");
    for (unsigned i = 0; i < m->nmappings; i++) {
      mf_puts(t, "<mapping>");
      mf_elem(t, "virtual", NULL, m->mappings[i].virtual_name);
      mf_elem(t, "device", NULL, m->mappings[i].device);
      mf_puts(t, "</mapping>");
    }
    mf_puts(t, "</block_device_mapping>");
  }
  if (m->kernel_id)
    mf_elem(t, "kernel_id", NULL, m->kernel_id);
  if (m->ramdisk_id)
    mf_elem(t, "ramdisk_id", NULL, m->ramdisk_id);
  mf_puts(t, "</machine_configuration><image>");
  mf_elem(t, "name", NULL, m->name);
  mf_elem(t, "user", NULL, m->user);
  mf_elem(t, "type", NULL, "machine");
  mf_elem(t, "digest", "algorithm=\"SHA1\"", m->digest);
  snprintf(num, sizeof num, "%llu", (unsigned long long)m->size);
  mf_elem(t, "size", NULL, num);
  snprintf(num, sizeof num, "%llu", (unsigned long long)m->bundled_size);
  mf_elem(t, "bundled_size", NULL, num);
  mf_elem(t, "ec2_encrypted_key", "algorithm=\"AES-128-CBC\"", m->ec2_encrypted_key);
  mf_elem(t, "user_encrypted_key", "algorithm=\"AES-128-CBC\"", m->user_encrypted_key);
  mf_elem(t, "ec2_encrypted_iv", NULL, m->ec2_encrypted_iv);
  mf_elem(t, "user_encrypted_iv", NULL, m->user_encrypted_iv);
  snprintf(num, sizeof num, "<parts count=\"%u\">", m->nparts);
  mf_puts(t, num);
  for (unsigned i = 0; i < m->nparts; i++) {
    snprintf(num, sizeof num, "<part index=\"%u\">", i);
    mf_puts(t, num);
    mf_elem(t, "filename", NULL, m->parts[i].filename);
    mf_elem(t, "digest", "algorithm=\"SHA1\"", m->parts[i].sha1);
    mf_puts(t, "</part>");
  }
  mf_puts(t, "</parts></image>");
}

int manifest_format(const struct manifest *m, EVP_PKEY *user_key, const char *bundler_version,
                    char **text, size_t *len, struct error *e)
{
  struct mf_text body = { 0 }, doc = { 0 };
  int ret = -1;
  mf_signed_part(&body, m);
  if (body.failed)
    return error_set(e, ERR_NOMEM, "manifest: out of memory");
  char *sig = bundle_sign_hex(user_key, body.s, body.len, e);
  if (!sig)
    goto out;
  mf_puts(&doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest>");
  mf_elem(&doc, "version", NULL, "2007-10-10");
  mf_puts(&doc, "<bundler>");
  mf_elem(&doc, "name", NULL, "amiport");
  mf_elem(&doc, "version", NULL, bundler_version);
  mf_elem(&doc, "release", NULL, "0");
  mf_puts(&doc, "</bundler>");
  mf_put(&doc, body.s ? body.s : "", body.len);
  mf_elem(&doc, "signature", NULL, sig);
  mf_puts(&doc, "</manifest>\n");
  if (doc.failed) {
    error_set(e, ERR_NOMEM, "manifest: out of memory");
    goto out;
  }
  *text = doc.s;
  *len = doc.len;
  doc.s = NULL;
  ret = 0;
out:
  free(sig);
  free(body.s);
  free(doc.s);
  return ret;
}

int manifest_write(const char *path, const struct manifest *m, EVP_PKEY *user_key,
                   const char *bundler_version, struct error *e)
{
  char *text = NULL;
  size_t len = 0;
  int ret = -1, fd = -1;
  if (manifest_format(m, user_key, bundler_version, &text, &len, e) < 0)
    return error_prefix(e, "%s", path), -1;
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    error_errno(e, "%s: cannot create", path);
    goto out;
  }
  if (img_pwrite_file(fd, text, len, 0, path, e) < 0)
    goto out;
  if (fsync(fd) < 0) {
    error_errno(e, "%s: fsync", path);
    goto out;
  }
  ret = 0;
out:
  if (fd >= 0)
    close(fd);
  free(text);
  return ret;
}
