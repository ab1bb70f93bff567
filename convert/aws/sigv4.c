/* sigv4.c - AWS Signature Version 4 for one request: the canonical request,
 * the string to sign, the signing key (an HMAC-SHA256 chain over the date,
 * region, service and "aws4_request") and the Authorization header value.
 *
 * Spec: the IAM User Guide, "Create a signed AWS API request" (Signature
 * Version 4), and AWS's own test suite, kept in
 * tests/vectors/aws-sigv4-testsuite.json and run by tests/aws_sigv4.sh.
 * Where the spec leaves a choice open the AWS CLI's signer (botocore) decides:
 * for every service but S3 the path loses its dot segments and repeated
 * slashes and is then percent-encoded once more (so "%20" on the wire signs as
 * "%2520"); S3 signs the path exactly as it goes on the wire.
 *
 * Every buffer is bounded; a request that does not fit is an error, and no
 * error ever carries the secret key or a header value. */
#include "aws.h"
#include "hex.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGV4_CREQ_MAX 16384 /* the canonical request, as struct sigv4_debug */
#define SIGV4_STS_MAX 1024
#define SIGV4_SIGNED_MAX 4096 /* "host;x-amz-date;..." */
#define SIGV4_QUERY_MAX 8192  /* raw query string */
#define SIGV4_MAX_HEADERS 64

/* ---- bounded string building ---------------------------------------------- */

struct sigv4_buf {
  char *p;
  size_t cap, len;
  bool over; /* something did not fit; p holds a prefix */
};

static void sigv4_buf_init(struct sigv4_buf *b, char *p, size_t cap)
{
  b->p = p;
  b->cap = cap;
  b->len = 0;
  b->over = false;
  if (cap)
    p[0] = 0;
}

static void sigv4_put(struct sigv4_buf *b, const char *s, size_t n)
{
  if (b->over || n >= b->cap - b->len) {
    b->over = true;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sigv4_puts(struct sigv4_buf *b, const char *s)
{
  sigv4_put(b, s, strlen(s));
}

static void sigv4_putc(struct sigv4_buf *b, char c)
{
  sigv4_put(b, &c, 1);
}

/* Ends a string inside b and starts the next one after its NUL. */
static void sigv4_end(struct sigv4_buf *b)
{
  if (b->over || b->len >= b->cap) {
    b->over = true;
    return;
  }
  b->p[b->len++] = 0;
  if (b->len < b->cap)
    b->p[b->len] = 0;
}

/* ---- URI encoding (RFC 3986 unreserved set) ------------------------------- */

static bool sigv4_unreserved(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends s[0..n) percent-encoded: every byte outside the unreserved set (and
 * '/', unless keep_slash) becomes %XX with upper-case hex digits. */
static void sigv4_encode(struct sigv4_buf *b, const char *s, size_t n, bool keep_slash)
{
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n && !b->over; i++) {
    unsigned char c = (unsigned char)s[i];
    if (sigv4_unreserved(c) || (keep_slash && c == '/')) {
      sigv4_putc(b, (char)c);
    } else {
      char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
      sigv4_put(b, esc, 3);
    }
  }
}

/* Percent-decodes s[0..n) into out (at least n bytes); returns the length.
 * A '%' not followed by two hex digits stays as it is, and '+' is a plus sign
 * (the query strings signed here are URIs, not HTML form bodies). */
static size_t sigv4_decode(const char *s, size_t n, char *out)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
        (lo = hex_digit(s[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  return o;
}

/* ---- canonical URI --------------------------------------------------------- */

/* Appends the canonical URI of path for a service other than S3: dot segments
 * and empty segments removed as botocore does (a trailing '/' survives when
 * something is left before it), then every segment encoded once more. */
static void sigv4_canonical_path(struct sigv4_buf *b, const char *path)
{
  size_t n = strlen(path);
  /* segment boundaries of the normalized path, as offsets into path */
  size_t start[256], len[256], depth = 0;
  bool too_deep = false;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && path[j] != '/')
      j++;
    size_t sl = j - i;
    if (sl == 0 || (sl == 1 && path[i] == '.')) {
      /* empty or "." segment: dropped */
    } else if (sl == 2 && path[i] == '.' && path[i + 1] == '.') {
      if (depth)
        depth--;
    } else if (depth < sizeof start / sizeof start[0]) {
      start[depth] = i;
      len[depth] = sl;
      depth++;
    } else {
      too_deep = true;
    }
    i = j + 1;
  }
  if (too_deep) {
    b->over = true;
    return;
  }
  sigv4_putc(b, '/');
  for (size_t k = 0; k < depth; k++) {
    if (k)
      sigv4_putc(b, '/');
    sigv4_encode(b, path + start[k], len[k], false);
  }
  if (depth && n && path[n - 1] == '/')
    sigv4_putc(b, '/');
}

/* ---- canonical query string ------------------------------------------------ */

struct sigv4_param {
  const char *name, *value; /* encoded, NUL-terminated, inside one scratch buffer */
};

static int sigv4_param_cmp(const void *a, const void *b)
{
  const struct sigv4_param *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : strcmp(x->value, y->value);
}

/* Appends the canonical query: each name and value decoded and re-encoded
 * with the unreserved set, sorted by name then value, joined with '&'. */
static int sigv4_canonical_query(struct sigv4_buf *b, const char *query, struct error *e)
{
  size_t qn = strlen(query);
  if (qn == 0)
    return 0;
  if (qn > SIGV4_QUERY_MAX)
    return error_set(e, ERR_UNSUPPORTED, "sigv4: query string of %zu bytes is longer than %d",
                     qn, SIGV4_QUERY_MAX);
  size_t np = 1;
  for (size_t i = 0; i < qn; i++)
    np += query[i] == '&';
  /* each encoded byte takes at most 3, plus a NUL for each name and value */
  size_t scap = 3 * qn + 2 * np + 1;
  struct sigv4_param *pv = calloc(np, sizeof *pv);
  char *scratch = malloc(scap), *tmp = malloc(qn + 1);
  int rc = -1;
  if (!pv || !scratch || !tmp) {
    error_set(e, ERR_NOMEM, "sigv4: out of memory for a %zu-byte query string", qn);
    goto out;
  }
  struct sigv4_buf s;
  sigv4_buf_init(&s, scratch, scap);
  size_t k = 0;
  for (const char *p = query; p <= query + qn;) {
    const char *amp = memchr(p, '&', (size_t)(query + qn - p));
    const char *end = amp ? amp : query + qn;
    if (end > p) { /* "a&&b": the empty piece is no parameter */
      const char *eq = memchr(p, '=', (size_t)(end - p));
      const char *nend = eq ? eq : end;
      const char *vstart = eq ? eq + 1 : end;
      size_t d = sigv4_decode(p, (size_t)(nend - p), tmp);
      pv[k].name = s.p + s.len;
      sigv4_encode(&s, tmp, d, false);
      sigv4_end(&s);
      d = sigv4_decode(vstart, (size_t)(end - vstart), tmp);
      pv[k].value = s.p + s.len;
      sigv4_encode(&s, tmp, d, false);
      sigv4_end(&s);
      k++;
    }
    p = end + 1;
  }
  if (s.over) { /* cannot happen: scap is the worst case */
    error_set(e, ERR_UNSUPPORTED, "sigv4: query string does not fit its canonical form");
    goto out;
  }
  qsort(pv, k, sizeof *pv, sigv4_param_cmp);
  for (size_t i = 0; i < k; i++) {
    if (i)
      sigv4_putc(b, '&');
    sigv4_puts(b, pv[i].name);
    sigv4_putc(b, '=');
    sigv4_puts(b, pv[i].value);
  }
  rc = 0;
out:
  free(pv);
  free(scratch);
  free(tmp);
  return rc;
}

/* ---- canonical headers ----------------------------------------------------- */

struct sigv4_hdr {
  const char *name;
  size_t index; /* position in the caller's list: equal names keep their order */
};

static int sigv4_lower(int c)
{
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int sigv4_namecmp(const char *a, const char *b)
{
  for (;; a++, b++) {
    int x = sigv4_lower((unsigned char)*a), y = sigv4_lower((unsigned char)*b);
    if (x != y || !x)
      return x - y;
  }
}

static int sigv4_hdr_cmp(const void *a, const void *b)
{
  const struct sigv4_hdr *x = a, *y = b;
  int c = sigv4_namecmp(x->name, y->name);
  if (c)
    return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

static bool sigv4_space(char c)
{
  return c == ' ' || c == '\t';
}

/* Appends a header value with leading and trailing blanks removed and every
 * inner run of blanks made one space. */
static void sigv4_put_value(struct sigv4_buf *b, const char *v)
{
  while (sigv4_space(*v))
    v++;
  size_t n = strlen(v);
  while (n && sigv4_space(v[n - 1]))
    n--;
  for (size_t i = 0; i < n; i++) {
    if (sigv4_space(v[i])) {
      while (i + 1 < n && sigv4_space(v[i + 1]))
        i++;
      sigv4_putc(b, ' ');
    } else {
      sigv4_putc(b, v[i]);
    }
  }
}

static bool sigv4_token_char(unsigned char c)
{
  /* RFC 9110 token characters: what a header name may hold */
  return sigv4_unreserved(c) || (c && strchr("!#$%&'*+^`|", c));
}

/* ---- OpenSSL ------------------------------------------------------------------ */

static pthread_once_t sigv4_once = PTHREAD_ONCE_INIT;
static EVP_MAC *sigv4_mac; /* fetched once, shared by every thread */

static void sigv4_fetch_mac(void)
{
  sigv4_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* out = HMAC-SHA256(key, msg); out holds 32 bytes. */
static int sigv4_hmac(const void *key, size_t keylen, const void *msg, size_t msglen,
                      unsigned char out[32])
{
  pthread_once(&sigv4_once, sigv4_fetch_mac);
  if (!sigv4_mac)
    return -1;
  EVP_MAC_CTX *mc = EVP_MAC_CTX_new(sigv4_mac);
  if (!mc)
    return -1;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
    OSSL_PARAM_construct_end(),
  };
  size_t outlen = 0;
  int ok = EVP_MAC_init(mc, key, keylen, params) && EVP_MAC_update(mc, msg, msglen) &&
           EVP_MAC_final(mc, out, &outlen, 32) && outlen == 32;
  EVP_MAC_CTX_free(mc);
  return ok ? 0 : -1;
}

void aws_sha256_hex(const void *buf, size_t len, char out[65])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (!EVP_Digest(len ? buf : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
    out[0] = 0; /* an empty hash: the signer refuses it, so this cannot go unseen */
    return;
  }
  hex_encode(md, 32, out);
}

void aws_amzdate(time_t t, char out[17])
{
  struct tm tm;
  if (!gmtime_r(&t, &tm) || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
    snprintf(out, 17, "19700101T000000Z");
}

/* ---- checks on the arguments -------------------------------------------------- */

/* "20150830T123600Z" */
static bool sigv4_amzdate_ok(const char *d)
{
  if (strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
    return false;
  for (int i = 0; i < 15; i++)
    if (i != 8 && (d[i] < '0' || d[i] > '9'))
      return false;
  return true;
}

/* A credential scope part (region, service, access key id): printable, no
 * blank, no '/' or ','. */
static bool sigv4_scope_ok(const char *s)
{
  if (!*s)
    return false;
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == '/' || *s == ',')
      return false;
  return true;
}

static bool sigv4_printable(const char *s)
{
  for (; *s; s++)
    if (((unsigned char)*s < ' ' && *s != '\t') || (unsigned char)*s == 0x7f)
      return false;
  return true;
}

/* ---- the signature ---------------------------------------------------------------- */

int sigv4_authorization(const char *method, const char *path, const char *query,
                        const struct aws_header *headers, size_t nheaders,
                        const char *payload_hash, const char *region,
                        const char *service, const char *amzdate,
                        const struct aws_creds *c, char *out, size_t outlen,
                        struct sigv4_debug *dbg, struct error *e)
{
  char creq[SIGV4_CREQ_MAX], sts[SIGV4_STS_MAX], signed_hdrs[SIGV4_SIGNED_MAX];
  struct sigv4_hdr hv[SIGV4_MAX_HEADERS];
  unsigned char key[32], mac[32];
  char kinit[4 + sizeof c->secret_key], sig[65], hash[65];
  int rc = -1;

  if (!method || !*method || !path || !query || !payload_hash || !*payload_hash || !region ||
      !service || !amzdate || !c || !out || (nheaders && !headers))
    return error_set(e, ERR_USAGE, "sigv4: a required argument is missing");
  for (const char *m = method; *m; m++)
    if (!((*m >= 'A' && *m <= 'Z') || (*m >= 'a' && *m <= 'z')))
      return error_set(e, ERR_USAGE, "sigv4: method '%.16s' is not a word", method);
  if (!sigv4_amzdate_ok(amzdate))
    return error_set(e, ERR_USAGE, "sigv4: date '%.20s' is not like 20150830T123600Z", amzdate);
  if (!sigv4_scope_ok(region) || strlen(region) > 64)
    return error_set(e, ERR_USAGE, "sigv4: region '%.64s' cannot go in a credential scope", region);
  if (!sigv4_scope_ok(service) || strlen(service) > 64)
    return error_set(e, ERR_USAGE, "sigv4: service '%.64s' cannot go in a credential scope",
                     service);
  if (strnlen(c->access_key, sizeof c->access_key) == sizeof c->access_key ||
      !sigv4_scope_ok(c->access_key))
    return error_set(e, ERR_USAGE, "sigv4: the access key id is empty or malformed");
  size_t slen = strnlen(c->secret_key, sizeof c->secret_key);
  if (slen == 0 || slen == sizeof c->secret_key)
    return error_set(e, ERR_USAGE, "sigv4: the secret access key is empty or too long");
  if (!sigv4_printable(payload_hash) || strchr(payload_hash, ' '))
    return error_set(e, ERR_USAGE, "sigv4: the payload hash is malformed");
  if (strchr(path, '?') || strchr(path, '#') || !sigv4_printable(path) || strchr(path, ' '))
    return error_set(e, ERR_USAGE, "sigv4: path '%.200s' is not an encoded URI path", path);
  if (nheaders > SIGV4_MAX_HEADERS)
    return error_set(e, ERR_UNSUPPORTED, "sigv4: %zu headers to sign, at most %d", nheaders,
                     SIGV4_MAX_HEADERS);

  /* headers: checked, then sorted by lower-case name, equal names in order */
  bool have_host = false, have_date = false;
  for (size_t i = 0; i < nheaders; i++) {
    const char *nm = headers[i].name, *v = headers[i].value;
    if (!nm || !*nm || !v)
      return error_set(e, ERR_USAGE, "sigv4: header %zu has no name or no value", i);
    for (const char *p = nm; *p; p++)
      if (!sigv4_token_char((unsigned char)*p))
        return error_set(e, ERR_USAGE, "sigv4: header name '%.64s' is not an HTTP token", nm);
    if (!sigv4_printable(v)) /* CR or LF would split the header */
      return error_set(e, ERR_USAGE, "sigv4: the value of header '%.64s' holds a control character",
                       nm);
    if (sigv4_namecmp(nm, "host") == 0)
      have_host = true;
    if (sigv4_namecmp(nm, "x-amz-date") == 0) {
      if (have_date)
        return error_set(e, ERR_USAGE, "sigv4: x-amz-date is given twice");
      have_date = true;
      if (strcmp(v, amzdate) != 0)
        return error_set(e, ERR_USAGE, "sigv4: header x-amz-date '%.20s' is not the signing date %s",
                         v, amzdate);
    }
    hv[i] = (struct sigv4_hdr){ nm, i };
  }
  if (!have_host)
    return error_set(e, ERR_USAGE, "sigv4: no host header to sign");
  if (!have_date)
    return error_set(e, ERR_USAGE, "sigv4: no x-amz-date header to sign");
  qsort(hv, nheaders, sizeof *hv, sigv4_hdr_cmp);

  /* the canonical request */
  struct sigv4_buf b, sh;
  sigv4_buf_init(&b, creq, sizeof creq);
  sigv4_buf_init(&sh, signed_hdrs, sizeof signed_hdrs);
  for (const char *m = method; *m; m++)
    sigv4_putc(&b, (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m));
  sigv4_putc(&b, '\n');
  if (strcmp(service, "s3") == 0)
    sigv4_puts(&b, *path ? path : "/");
  else
    sigv4_canonical_path(&b, path);
  sigv4_putc(&b, '\n');
  if (sigv4_canonical_query(&b, query, e) < 0)
    goto out;
  sigv4_putc(&b, '\n');
  for (size_t i = 0; i < nheaders; i++) {
    bool same = i && sigv4_namecmp(hv[i].name, hv[i - 1].name) == 0;
    if (same) {
      sigv4_putc(&b, ',');
    } else {
      if (i) {
        sigv4_putc(&b, '\n');
        sigv4_putc(&sh, ';');
      }
      for (const char *p = hv[i].name; *p; p++) {
        sigv4_putc(&b, (char)sigv4_lower((unsigned char)*p));
        sigv4_putc(&sh, (char)sigv4_lower((unsigned char)*p));
      }
      sigv4_putc(&b, ':');
    }
    sigv4_put_value(&b, headers[hv[i].index].value);
  }
  sigv4_puts(&b, "\n\n");
  sigv4_puts(&b, signed_hdrs);
  sigv4_putc(&b, '\n');
  sigv4_puts(&b, payload_hash);
  if (sh.over) {
    error_set(e, ERR_UNSUPPORTED, "sigv4: the signed header names are longer than %d bytes",
              SIGV4_SIGNED_MAX - 1);
    goto out;
  }
  if (b.over) {
    error_set(e, ERR_UNSUPPORTED, "sigv4: %.16s %.200s: the canonical request is longer than %d bytes",
              method, path, SIGV4_CREQ_MAX - 1);
    goto out;
  }

  /* the string to sign */
  char date[9];
  memcpy(date, amzdate, 8);
  date[8] = 0;
  aws_sha256_hex(creq, b.len, hash);
  int n = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amzdate,
                   date, region, service, hash);
  if (n < 0 || (size_t)n >= sizeof sts || !hash[0]) {
    error_set(e, ERR_UNSUPPORTED, "sigv4: cannot form the string to sign");
    goto out;
  }

  /* the signing key and the signature */
  memcpy(kinit, "AWS4", 4);
  memcpy(kinit + 4, c->secret_key, slen);
  if (sigv4_hmac(kinit, 4 + slen, date, 8, key) < 0 ||
      sigv4_hmac(key, 32, region, strlen(region), key) < 0 ||
      sigv4_hmac(key, 32, service, strlen(service), key) < 0 ||
      sigv4_hmac(key, 32, "aws4_request", 12, key) < 0 ||
      sigv4_hmac(key, 32, sts, (size_t)n, mac) < 0) {
    error_set(e, ERR_NOMEM, "sigv4: HMAC-SHA256 failed in OpenSSL");
    goto out;
  }
  hex_encode(mac, 32, sig);

  n = snprintf(out, outlen,
               "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
               "Signature=%s",
               c->access_key, date, region, service, signed_hdrs, sig);
  if (n < 0 || (size_t)n >= outlen) {
    if (outlen)
      out[0] = 0;
    error_set(e, ERR_UNSUPPORTED, "sigv4: the Authorization value needs %d bytes, the buffer has %zu",
              n + 1, outlen);
    goto out;
  }
  if (dbg) {
    memcpy(dbg->creq, creq, b.len + 1);
    snprintf(dbg->sts, sizeof dbg->sts, "%s", sts);
  }
  rc = 0;
out:
  OPENSSL_cleanse(kinit, sizeof kinit);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}
