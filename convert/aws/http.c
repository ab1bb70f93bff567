/* http.c - signed AWS requests over libcurl, and what to make of the answers.
 *
 * A transfer (struct aws_xfer) is one easy handle with its signed headers and
 * the answer it collects; callers run it on their own multi handle (ebs.c
 * keeps 64 in flight) or through aws_call, which retries. Retries follow
 * AWS's guidance: capped exponential backoff with full jitter, on throttling,
 * 5xx and connection faults only; anything else is reported with the
 * service's error code and message. TLS is verified; proxies come from the
 * environment (libcurl reads http_proxy, https_proxy, no_proxy). Nothing here
 * prints, and no header value reaches an error message. */
#include "aws.h"

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define RESP_MAX (8u << 20) /* no AWS answer used here is larger */
#define HTTP_BUF_DEFAULT (64u << 10)
/* An answer of a block comes in reads of this size: few enough system calls,
 * and small enough that what one read brings is still in the core's cache
 * when it is copied out (a block-sized 512 KiB buffer cost 15 % more CPU) */
#define HTTP_BUF_BIG (128u << 10)

static pthread_once_t http_once = PTHREAD_ONCE_INIT;

static void http_global_init(void)
{
  curl_global_init(CURL_GLOBAL_DEFAULT);
  xmlInitParser();
}

void aws_http_init(void)
{
  pthread_once(&http_once, http_global_init);
}

static size_t http_on_body(char *p, size_t sz, size_t n, void *arg)
{
  struct aws_resp *r = arg;
  size_t len = sz * n;
  if (r->len + len > r->max)
    return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
  if (r->into && r->status >= 200 && r->status < 300) {
    /* bytes past into_len are counted, not kept: the caller sees the length */
    if (r->len + len <= r->into_len)
      memcpy(r->into + r->len, p, len);
    r->len += len;
    return len;
  }
  if (r->len + len + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + len + 1)
      cap *= 2;
    char *b = realloc(r->body, cap);
    if (!b)
      return 0;
    r->body = b;
    r->cap = cap;
  }
  memcpy(r->body + r->len, p, len);
  r->len += len;
  r->body[r->len] = 0;
  return len;
}

/* Copies a header's value when its name is name (case-insensitive). */
static void http_take_header(const char *line, size_t len, const char *name, char *out,
                             size_t outlen)
{
  size_t nl = strlen(name);
  if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
    return;
  const char *v = line + nl + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  size_t n = (size_t)(end - v) < outlen - 1 ? (size_t)(end - v) : outlen - 1;
  memcpy(out, v, n);
  out[n] = 0;
}

static size_t http_on_header(char *p, size_t sz, size_t n, void *arg)
{
  struct aws_resp *r = arg;
  size_t len = sz * n;
  if (len > 9 && memcmp(p, "HTTP/", 5) == 0) { /* a status line: a new answer begins */
    const char *sp = memchr(p, ' ', len), *end = p + len;
    r->status = 0; /* the line is not NUL-terminated: three digits, bounded by len */
    for (int i = 1; sp && i <= 3 && sp + i < end && sp[i] >= '0' && sp[i] <= '9'; i++)
      r->status = r->status * 10 + (sp[i] - '0');
  }
  http_take_header(p, len, "x-amzn-ErrorType", r->error_type, sizeof r->error_type);
  http_take_header(p, len, "x-amz-Checksum", r->checksum, sizeof r->checksum);
  http_take_header(p, len, "x-amzn-RequestId", r->request_id, sizeof r->request_id);
  http_take_header(p, len, "x-amz-request-id", r->request_id, sizeof r->request_id);
  http_take_header(p, len, "x-amz-Data-Length", r->data_length, sizeof r->data_length);
  return len;
}

/* "https://host:port/base" -> host[:port] as the Host header has it, and the
 * path prefix (without a trailing '/'). */
static int http_split_endpoint(const char *url, char *host, size_t hostlen, char *base,
                               size_t baselen, struct error *e)
{
  const char *p = strstr(url, "://");
  if (!p)
    return error_set(e, ERR_USAGE, "endpoint '%s' is not a URL (http:// or https://)", url);
  p += 3;
  size_t hl = strcspn(p, "/");
  if (hl == 0 || hl >= hostlen)
    return error_set(e, ERR_USAGE, "endpoint '%s' has no host", url);
  memcpy(host, p, hl);
  host[hl] = 0;
  snprintf(base, baselen, "%s", p + hl);
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/')
    base[--bl] = 0;
  return 0;
}

int aws_xfer_prepare(struct aws_xfer *x, struct aws_ctx *ctx, const struct aws_req *rq,
                     struct error *e)
{
  aws_http_init();
  struct aws_creds cr;
  if (aws_ctx_creds(ctx, &cr, e) < 0)
    return -1;
  if (!x->h && !(x->h = curl_easy_init()))
    return error_set(e, ERR_NOMEM, "cannot create an HTTP handle");
  curl_easy_reset(x->h);
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  /* the answer's buffer is kept from one request to the next; one that
   * will hold a block is made whole at once, not grown by doubling */
  char *keep = x->resp.body;
  size_t keepcap = x->resp.cap;
  memset(&x->resp, 0, sizeof x->resp);
  x->resp.max = rq->resp_max ? rq->resp_max : RESP_MAX;
  x->resp.into = rq->into;
  x->resp.into_len = rq->into ? rq->into_len : 0;
  if (!rq->into && x->resp.max <= (1u << 20) && keepcap < x->resp.max + 1) {
    char *b = realloc(keep, x->resp.max + 1);
    if (!b)
      return error_set(e, ERR_NOMEM, "out of memory for an HTTP answer");
    keep = b;
    keepcap = x->resp.max + 1;
  }
  x->resp.body = keep;
  x->resp.cap = keepcap;
  if (keep)
    keep[0] = 0;
  x->errbuf[0] = 0;

  const char *endpoint = ctx->endpoint[rq->svc];
  char host[256], base[256];
  if (http_split_endpoint(endpoint, host, sizeof host, base, sizeof base, e) < 0)
    return -1;
  char path[1024];
  snprintf(path, sizeof path, "%s%s", base, rq->path);
  char url[2048];
  int n = snprintf(url, sizeof url, "%.*s%s%s%s%s", (int)(strstr(endpoint, "://") + 3 - endpoint),
                   endpoint, host, path, rq->query && *rq->query ? "?" : "",
                   rq->query ? rq->query : "");
  if (n < 0 || (size_t)n >= sizeof url)
    return error_set(e, ERR_USAGE, "request URL too long");

  char date[17], hash[65];
  aws_amzdate(time(NULL), date);
  if (rq->unsigned_payload)
    snprintf(hash, sizeof hash, "UNSIGNED-PAYLOAD");
  else
    aws_sha256_hex(rq->body ? rq->body : "", rq->len, hash);

  struct aws_header h[AWS_REQ_MAX_HEADERS + 5];
  size_t nh = 0;
  h[nh++] = (struct aws_header){ "host", host };
  h[nh++] = (struct aws_header){ "x-amz-date", date };
  h[nh++] = (struct aws_header){ "x-amz-content-sha256", hash };
  if (cr.token[0])
    h[nh++] = (struct aws_header){ "x-amz-security-token", cr.token };
  if (rq->content_type)
    h[nh++] = (struct aws_header){ "content-type", rq->content_type };
  for (size_t i = 0; i < rq->nhdr; i++)
    h[nh++] = rq->hdr[i];

  char authz[1024];
  int rc = sigv4_authorization(rq->method, path[0] ? path : "/", rq->query ? rq->query : "", h,
                               nh, hash, ctx->region, aws_service_name(rq->svc), date, &cr,
                               authz, sizeof authz, NULL, e);
  if (rc < 0) {
    OPENSSL_cleanse(&cr, sizeof cr);
    return -1;
  }

  char line[4200];
  for (size_t i = 0; i < nh; i++) {
    snprintf(line, sizeof line, "%s: %s", h[i].name, h[i].value);
    x->hdrs = curl_slist_append(x->hdrs, line);
  }
  snprintf(line, sizeof line, "Authorization: %s", authz);
  x->hdrs = curl_slist_append(x->hdrs, line);
  x->hdrs = curl_slist_append(x->hdrs, "Expect:"); /* no 100-continue round trip */
  x->hdrs = curl_slist_append(x->hdrs, "Accept:");
  OPENSSL_cleanse(&cr, sizeof cr); /* h[] pointed into it until here */
  OPENSSL_cleanse(line, sizeof line);
  if (!x->hdrs)
    return error_set(e, ERR_NOMEM, "out of memory for HTTP headers");

  CURL *c = x->h;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
  if (strcmp(rq->method, "GET") == 0)
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  else {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->len);
  }
  if (x->resp.max > HTTP_BUF_DEFAULT)
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)HTTP_BUF_BIG);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &x->resp);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &x->resp);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  /* a read timeout: an answer that stalls below 1 byte/s for 60 s is dropped */
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(c, CURLOPT_PRIVATE, x);
  return 0;
}

void aws_xfer_free(struct aws_xfer *x)
{
  if (x->h)
    curl_easy_cleanup(x->h);
  curl_slist_free_all(x->hdrs);
  free(x->resp.body);
  memset(x, 0, sizeof *x);
}

void aws_error_text(const struct aws_resp *r, char *code, size_t codelen, char *msg,
                            size_t msglen)
{
  code[0] = msg[0] = 0;
  if (r->error_type[0])
    snprintf(code, codelen, "%.*s", (int)strcspn(r->error_type, ":"), r->error_type);
  if (!r->body || !r->len)
    return;
  if (r->body[0] == '{') {
    json_object *j = json_tokener_parse(r->body), *v;
    if (j) {
      if ((json_object_object_get_ex(j, "message", &v) ||
           json_object_object_get_ex(j, "Message", &v)) && json_object_is_type(v, json_type_string))
        snprintf(msg, msglen, "%s", json_object_get_string(v));
      if (!code[0] && (json_object_object_get_ex(j, "__type", &v) ||
                       json_object_object_get_ex(j, "code", &v)) &&
          json_object_is_type(v, json_type_string))
        snprintf(code, codelen, "%s", json_object_get_string(v));
      json_object_put(j);
    }
    return;
  }
  xmlDocPtr doc = aws_xml_parse(r->body, r->len);
  if (!doc)
    return;
  char *c = aws_xml_text(xmlDocGetRootElement(doc), "Code");
  char *m = aws_xml_text(xmlDocGetRootElement(doc), "Message");
  if (c && !code[0])
    snprintf(code, codelen, "%s", c);
  if (m)
    snprintf(msg, msglen, "%s", m);
  free(c);
  free(m);
  xmlFreeDoc(doc);
}

static bool http_code_retryable(const char *code)
{
  static const char *const codes[] = {
    "RequestThrottled", "RequestThrottledException", "ThrottlingException", "Throttling",
    "ThrottledException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown",
    "InternalError", "InternalServerException", "InternalFailure", "ServiceUnavailable",
    "Unavailable", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BadDigest", /* S3: the body arrived other than its Content-MD5 says: damaged on the way */
  };
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
    if (strcmp(code, codes[i]) == 0)
      return true;
  return false;
}

static bool http_curl_retryable(CURLcode cc)
{
  switch (cc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_GOT_NOTHING:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_SSL_CONNECT_ERROR:
    return true;
  default:
    return false;
  }
}

int aws_xfer_result(struct aws_xfer *x, CURLcode cc, const char *op, struct error *e)
{
  if (cc != CURLE_OK) {
    error_set(e, ERR_NETWORK, "%s: %s", op, x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc));
    return http_curl_retryable(cc) ? 1 : -1;
  }
  curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->resp.status);
  long st = x->resp.status;
  if (st >= 200 && st < 300)
    return 0;
  char code[128], msg[400];
  aws_error_text(&x->resp, code, sizeof code, msg, sizeof msg);
  error_set(e, ERR_REMOTE, "%s: %s%s%s (HTTP %ld)", op, code[0] ? code : "error",
            msg[0] ? ": " : "", msg, st);
  snprintf(x->resp.error_code, sizeof x->resp.error_code, "%s", code);
  return st >= 500 || st == 429 || http_code_retryable(code) ? 1 : -1;
}

/* xorshift64*, seeded per thread: jitter needs spread, not secrecy */
static uint32_t http_random(void)
{
  static __thread uint64_t s;
  if (!s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = ((uint64_t)ts.tv_nsec << 20 ^ (uint64_t)ts.tv_sec ^ (uint64_t)pthread_self()) | 1;
  }
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return (uint32_t)((s * 2685821657736338717ull) >> 32);
}

unsigned aws_backoff_ms(unsigned attempt)
{
  /* full jitter: uniform in [0, min(cap, base * 2^attempt)] */
  unsigned cap = 20000, base = 200;
  unsigned ceil = attempt >= 16 ? cap : base << attempt;
  if (ceil > cap)
    ceil = cap;
  return http_random() % (ceil + 1);
}

int aws_call(struct aws_ctx *ctx, const struct aws_req *rq, const char *op,
             struct aws_resp *out, struct error *e)
{
  struct aws_xfer x = { 0 };
  int rc = -1;
  for (unsigned attempt = 0;; attempt++) {
    if (aws_xfer_prepare(&x, ctx, rq, e) < 0)
      break;
    CURLcode cc = curl_easy_perform(x.h);
    int r = aws_xfer_result(&x, cc, op, e);
    if (r == 0) {
      rc = 0;
      break;
    }
    if (r < 0 || attempt + 1 >= AWS_MAX_ATTEMPTS) {
      if (r > 0)
        error_prefix(e, "giving up after %u attempts", attempt + 1);
      break;
    }
    usleep(aws_backoff_ms(attempt) * 1000u);
  }
  if (out) {
    free(out->body);
    *out = x.resp;
    x.resp.body = NULL;
  }
  aws_xfer_free(&x);
  return rc;
}

size_t aws_uri_encode(const char *in, char *out, size_t outlen)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (const unsigned char *c = (const unsigned char *)in; *c; c++) {
    bool plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                 (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.' || *c == '~';
    if (n + (plain ? 1 : 3) >= outlen)
      return (size_t)-1;
    if (plain) {
      out[n++] = (char)*c;
    } else {
      out[n++] = '%';
      out[n++] = hex[*c >> 4];
      out[n++] = hex[*c & 15];
    }
  }
  out[n] = 0;
  return n;
}

/* ---- XML (EC2 and S3 answers) ---------------------------------------------- */

void *aws_xml_parse(const char *body, size_t len)
{
  /* no network, no external entities (libxml2 loads none without
   * XML_PARSE_NOENT / DTDLOAD) and its default limits on entity expansion */
  if (len > RESP_MAX)
    return NULL;
  return xmlReadMemory(body, (int)len, NULL, NULL,
                       XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

void *aws_xml_find(void *node, const char *name)
{
  for (xmlNodePtr n = node; n; n = n->next) {
    if (n->type != XML_ELEMENT_NODE)
      continue;
    if (strcmp((const char *)n->name, name) == 0)
      return n;
    xmlNodePtr c = aws_xml_find(n->children, name);
    if (c)
      return c;
  }
  return NULL;
}

char *aws_xml_text(void *node, const char *name)
{
  xmlNodePtr n = aws_xml_find(node, name);
  if (!n)
    return NULL;
  xmlChar *t = xmlNodeGetContent(n);
  char *s = strdup(t ? (const char *)t : "");
  xmlFree(t);
  return s;
}
