/* aws.h - the AWS layer: SigV4 signing (sigv4.c), the credential, region and
 * endpoint chain (creds.c), HTTP with retries over libcurl (http.c), the EBS
 * direct API (ebs.c) and the EC2 Query API (ec2.c). Nothing here prints;
 * secrets never reach an error message. */
#ifndef AMIPORT_AWS_H
#define AMIPORT_AWS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lazylib.h" /* libcurl and libxml2 */

#include "error.h"

/* ---- credentials, region, endpoints (creds.c) ---------------------------- */

struct aws_creds {
  char access_key[128];
  char secret_key[128];
  char token[4096];   /* session token; "" when there is none */
  time_t expires;     /* 0: does not expire */
  char source[32];    /* "environment", "shared-credentials-file", "config-file",
                         "credential_process", "imds" */
};

/* What the command line gave; NULL where it gave nothing. */
struct aws_opts {
  const char *profile;
  const char *region;
  const char *endpoint_url;
};

enum aws_service { AWS_EBS, AWS_EC2, AWS_S3, AWS_SERVICES };

struct aws_ctx {
  char profile[128];             /* "default" unless --profile / AWS_PROFILE */
  char region[64];
  char endpoint[AWS_SERVICES][512]; /* "https://ebs.us-east-1.amazonaws.com", no trailing '/' */
  struct aws_creds creds;
  /* how to refresh creds that expire */
  char credential_process[2048]; /* "" unless the profile names one */
  bool from_imds;
  pthread_mutex_t lock;
};

/* Resolves profile, region, endpoints and credentials in the AWS CLI's order.
 * An error names what is missing (no credentials found, no region) and where
 * it looked; it never contains a secret. */
int aws_ctx_init(struct aws_ctx *ctx, const struct aws_opts *o, struct error *e);
void aws_ctx_free(struct aws_ctx *ctx);

/* Copies the current credentials into *out, first refreshing them when they
 * expire within five minutes (credential_process, IMDS). Thread-safe. */
int aws_ctx_creds(struct aws_ctx *ctx, struct aws_creds *out, struct error *e);

/* The SigV4 signing name of a service: "ebs", "ec2", "s3". */
const char *aws_service_name(enum aws_service s);

/* ---- SigV4 (sigv4.c) ------------------------------------------------------ */

struct aws_header {
  const char *name;
  const char *value;
};

/* Optional out-parameters for tests: the canonical request and the string to sign. */
struct sigv4_debug {
  char creq[16384];
  char sts[1024];
};

/* Computes the Authorization header value for one request.
 * path: the URI path as it goes on the wire (already percent-encoded);
 * query: the raw query string without '?', "" if none;
 * headers: every header to sign (must include host and x-amz-date, and
 *   x-amz-security-token when creds has a token: the signer adds nothing);
 * payload_hash: lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD";
 * amzdate: "20150830T123600Z". For service "s3" the path is used as given;
 * for every other service it is normalized and encoded once more, as SigV4 says.
 * dbg may be NULL. */
int sigv4_authorization(const char *method, const char *path, const char *query,
                        const struct aws_header *headers, size_t nheaders,
                        const char *payload_hash, const char *region,
                        const char *service, const char *amzdate,
                        const struct aws_creds *c, char *out, size_t outlen,
                        struct sigv4_debug *dbg, struct error *e);

/* Lowercase hex SHA-256 of buf (out: 65 bytes). */
void aws_sha256_hex(const void *buf, size_t len, char out[65]);

/* "20150830T123600Z" for t (UTC). */
void aws_amzdate(time_t t, char out[17]);

/* ---- HTTP (http.c) --------------------------------------------------------- */

#define AWS_REQ_MAX_HEADERS 8
#define AWS_MAX_ATTEMPTS 10 /* per request, throttling and faults included */

struct aws_req {
  enum aws_service svc;
  const char *method;       /* "GET", "PUT", "POST" */
  const char *path;         /* percent-encoded, after the endpoint's own path */
  const char *query;        /* raw query string without '?', or NULL */
  struct aws_header hdr[AWS_REQ_MAX_HEADERS]; /* further headers, all signed */
  size_t nhdr;
  const char *content_type; /* NULL: none */
  const void *body;
  size_t len;
  bool unsigned_payload;    /* sign "UNSIGNED-PAYLOAD" instead of the body's hash */
  size_t resp_max;          /* largest answer body accepted; 0: 8 MiB */
  void *into;               /* NULL, or where a 2xx answer's body goes (into_len bytes)
                             * instead of resp.body: one copy fewer for block data */
  size_t into_len;
};

struct aws_resp {
  long status;
  char *body;               /* NUL-terminated, malloc'd; empty when a 2xx body went to into */
  size_t len, cap, max;     /* len counts the body wherever it went */
  uint8_t *into;            /* the request's into, if any */
  size_t into_len;
  char error_type[128];     /* x-amzn-ErrorType */
  char error_code[128];     /* the service's error code, after a failure */
  char checksum[64];        /* x-amz-Checksum */
  char data_length[24];     /* x-amz-Data-Length */
  char request_id[80];
};

/* One transfer: an easy handle (reused across prepares, so its connection
 * stays open), its signed headers and the answer it collects. */
struct aws_xfer {
  CURL *h;
  struct curl_slist *hdrs;
  struct aws_resp resp;
  char errbuf[CURL_ERROR_SIZE];
};

void aws_http_init(void); /* once per process; aws_xfer_prepare calls it */
/* Signs rq now and sets x up to send it; the body must outlive the transfer. */
int aws_xfer_prepare(struct aws_xfer *x, struct aws_ctx *ctx, const struct aws_req *rq,
                     struct error *e);
/* After the transfer: 0 on a 2xx answer; otherwise e says "op: Code: message
 * (HTTP n)" and the return is 1 when a retry may succeed, -1 when not. */
int aws_xfer_result(struct aws_xfer *x, CURLcode cc, const char *op, struct error *e);
void aws_xfer_free(struct aws_xfer *x);
/* Milliseconds to wait before retry number attempt+1 (full jitter, capped). */
unsigned aws_backoff_ms(unsigned attempt);
/* One request, retried as aws_xfer_result allows; out (may be NULL) gets the
 * answer, to be freed with free(out->body). */
int aws_call(struct aws_ctx *ctx, const struct aws_req *rq, const char *op,
             struct aws_resp *out, struct error *e);
/* Percent-encodes in (everything but RFC 3986's unreserved characters), as
 * SigV4 canonicalizes query values; (size_t)-1 if out is too small. */
size_t aws_uri_encode(const char *in, char *out, size_t outlen);
/* The service's error code and message in an answer: EBS's x-amzn-ErrorType
 * and JSON body, EC2's and S3's XML. Either may come back empty. */
void aws_error_text(const struct aws_resp *r, char *code, size_t codelen, char *msg,
                    size_t msglen);
/* An XML answer parsed (an xmlDocPtr; free with xmlFreeDoc), or NULL. */
void *aws_xml_parse(const char *body, size_t len);
/* The first element called name among node (an xmlNodePtr), its siblings
 * and their descendants, depth first; NULL if there is none. */
void *aws_xml_find(void *node, const char *name);
/* The text of that element, malloc'd; NULL if there is none. */
char *aws_xml_text(void *node, const char *name);

#endif
