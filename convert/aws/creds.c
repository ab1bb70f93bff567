/* creds.c - where the AWS layer's profile, credentials, region and endpoints
 * come from, looked up in the order the AWS CLI (botocore) uses:
 *
 *   profile      --profile, AWS_PROFILE (AWS_DEFAULT_PROFILE), "default"
 *   credentials  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not with --profile),
 *                the shared credentials file, credential_process, static keys
 *                in the config file, IMDSv2 (the EC2 instance role)
 *   region       --region, AWS_REGION, AWS_DEFAULT_REGION, the profile's
 *                region, IMDS
 *   endpoints    --endpoint-url, AWS_ENDPOINT_URL_<SERVICE>, the profile's
 *                services section, AWS_ENDPOINT_URL, the profile's
 *                endpoint_url, https://SERVICE.REGION.amazonaws.com[.cn]
 *
 * Specs: the AWS CLI User Guide ("Configuration and credential file
 * settings", "Environment variables to configure the AWS CLI", "Sourcing
 * credentials with an external process"), the SDKs and Tools Reference Guide
 * ("Service-specific endpoints", "IMDS credential provider") and the EC2 User
 * Guide ("Use the Instance Metadata Service", IMDSv2). The two files are INI
 * as Python's configparser reads them for botocore (ini.c).
 *
 * Providers botocore has and this file does not (assume-role, web identity,
 * SSO, container credentials) are refused with an error where botocore would
 * have used them, instead of quietly falling through to another identity.
 * No secret (secret key, session token, credential_process output) ever goes
 * into an error; secrets are wiped with OPENSSL_cleanse when they are dropped. */
#include "aws.h"
#include "ini.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#define CREDS_PROCESS_MAX 65536     /* credential_process output */
#define CREDS_IMDS_BODY_MAX 16384   /* one IMDS answer */
#define CREDS_IMDS_TIMEOUT_MS 1000L /* botocore's IMDS timeout */
#define CREDS_REFRESH_WINDOW 300    /* refresh credentials expiring within 5 minutes */
#define CREDS_IMDS_DEFAULT "http://169.254.169.254"
#define CREDS_IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"

const char *aws_service_name(enum aws_service s)
{
  static const char *const names[AWS_SERVICES] = { [AWS_EBS] = "ebs", [AWS_EC2] = "ec2",
                                                    [AWS_S3] = "s3" };
  return (unsigned)s < AWS_SERVICES ? names[s] : "unknown";
}

/* ---- small helpers -------------------------------------------------------- */

/* An environment variable, NULL when unset or empty. */
static const char *creds_env(const char *name)
{
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static bool creds_env_true(const char *name)
{
  const char *v = creds_env(name);
  return v && strcasecmp(v, "true") == 0;
}

/* snprintf for messages, where a long path may cut the text short. */
__attribute__((format(printf, 3, 4))) static void creds_fmt(char *out, size_t n, const char *fmt,
                                                            ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out, n, fmt, ap);
  va_end(ap);
}

/* Copies s into out (size n); -1 when it does not fit. */
static int creds_copy(char *out, size_t n, const char *s)
{
  size_t l = strlen(s);
  if (l >= n)
    return -1;
  memcpy(out, s, l + 1);
  return 0;
}

/* Region names as botocore accepts them: [a-zA-Z0-9] and inner '-', at most 63. */
static bool creds_region_ok(const char *r)
{
  size_t n = strlen(r);
  if (n == 0 || n > 63 || r[0] == '-' || r[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)r[i]) && r[i] != '-')
      return false;
  return true;
}

/* "~/x" -> "$HOME/x". */
static int creds_expand_path(const char *p, char *out, size_t n, struct error *e)
{
  if (p[0] == '~' && (p[1] == '/' || p[1] == 0)) {
    const char *home = creds_env("HOME");
    if (!home) {
      struct passwd *pw = getpwuid(getuid());
      home = pw && pw->pw_dir ? pw->pw_dir : "/";
    }
    if ((size_t)snprintf(out, n, "%s%s", home, p + 1) >= n)
      return error_set(e, ERR_UNSUPPORTED, "path '%.200s' is too long once ~ is expanded", p);
    return 0;
  }
  if (creds_copy(out, n, p) < 0)
    return error_set(e, ERR_UNSUPPORTED, "path '%.200s...' is too long", p);
  return 0;
}

/* ---- ISO 8601 times ------------------------------------------------------- */

/* "2024-05-01T12:34:56Z", with optional fraction and a Z or +HH:MM offset. */
static int creds_parse_time(const char *s, time_t *out)
{
  int y, mo, d, h, mi, sec, n = 0;
  if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || !n)
    return -1;
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
      h < 0 || mi < 0 || sec < 0)
    return -1;
  s += n;
  if (*s == '.' || *s == ',') {
    s++;
    if (!isdigit((unsigned char)*s))
      return -1;
    while (isdigit((unsigned char)*s))
      s++;
  }
  long off = 0;
  if (*s == 'Z' || *s == 'z') {
    s++;
  } else if (*s == '+' || *s == '-') {
    int sign = *s == '-' ? -1 : 1, oh, om;
    if (sscanf(s + 1, "%2d:%2d%n", &oh, &om, &n) == 2 || sscanf(s + 1, "%2d%2d%n", &oh, &om, &n) == 2)
      s += 1 + n;
    else
      return -1;
    if (oh > 23 || om > 59 || oh < 0 || om < 0)
      return -1;
    off = sign * (oh * 3600L + om * 60L);
  } else {
    return -1; /* a time without a zone is ambiguous */
  }
  if (*s)
    return -1;
  struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                   .tm_min = mi, .tm_sec = sec };
  time_t t = timegm(&tm);
  if (t == (time_t)-1)
    return -1;
  *out = t - off;
  return 0;
}

/* ---- filling struct aws_creds ---------------------------------------------- */

/* Copies the key pair and token into c; the error names where they came
 * from (what) and never the value. */
static int creds_fill(struct aws_creds *c, const char *ak, const char *sk, const char *token,
                      const char *what, struct error *e)
{
  if (!ak || !*ak || !sk || !*sk)
    return error_set(e, ERR_FORMAT, "%s: an access key id without a secret access key, or the "
                     "other way round", what);
  if (creds_copy(c->access_key, sizeof c->access_key, ak) < 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: the access key id is longer than %zu bytes", what,
                     sizeof c->access_key - 1);
  if (creds_copy(c->secret_key, sizeof c->secret_key, sk) < 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: the secret access key is longer than %zu bytes",
                     what, sizeof c->secret_key - 1);
  if (creds_copy(c->token, sizeof c->token, token ? token : "") < 0)
    return error_set(e, ERR_UNSUPPORTED, "%s: the session token is longer than %zu bytes", what,
                     sizeof c->token - 1);
  for (const char *p = c->access_key; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == '/' || *p == ',' || (unsigned char)*p >= 0x7f)
      return error_set(e, ERR_FORMAT, "%s: the access key id holds a character it cannot hold",
                       what);
  for (const char *p = c->token; *p; p++)
    if ((unsigned char)*p < ' ' || (unsigned char)*p == 0x7f)
      return error_set(e, ERR_FORMAT, "%s: the session token holds a control character", what);
  return 0;
}

/* Wipes the secrets in the string values of a parsed JSON object before it
 * is freed. */
static void creds_json_wipe(json_object *o)
{
  if (!json_object_is_type(o, json_type_object))
    return;
  json_object_object_foreach(o, k, v)
  {
    (void)k;
    if (json_object_is_type(v, json_type_string))
      OPENSSL_cleanse((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
  }
}

static const char *creds_json_str(json_object *o, const char *key)
{
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

/* Parses a JSON object from buf[0..len); NULL if it is not exactly one. */
static json_object *creds_json_parse(const char *buf, size_t len)
{
  json_tokener *tok = json_tokener_new();
  if (!tok)
    return NULL;
  json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
  size_t end = json_tokener_get_parse_end(tok);
  bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
            json_object_is_type(o, json_type_object);
  for (size_t i = end; ok && i < len; i++)
    ok = creds_blank(buf[i]);
  json_tokener_free(tok);
  if (!ok && o) {
    creds_json_wipe(o);
    json_object_put(o);
    o = NULL;
  }
  return o;
}

/* ---- credential_process ------------------------------------------------------ */

/* Runs cmd with /bin/sh -c and reads its JSON: {"Version": 1, "AccessKeyId",
 * "SecretAccessKey", "SessionToken"?, "Expiration"? (ISO 8601)}. The
 * process's stderr and stdin are ours (it may ask for an MFA code). */
static int creds_process(const char *cmd, const char *profile, struct aws_creds *c,
                         struct error *e)
{
  char *buf = malloc(CREDS_PROCESS_MAX + 1);
  if (!buf)
    return error_set(e, ERR_NOMEM, "credential_process: out of memory");
  int rc = -1;
  json_object *o = NULL;
  fflush(NULL);
  FILE *f = popen(cmd, "re");
  if (!f) {
    error_errno(e, "credential_process for profile '%s': cannot start /bin/sh", profile);
    free(buf);
    return -1;
  }
  size_t len = 0, got;
  while (len <= CREDS_PROCESS_MAX && (got = fread(buf + len, 1, CREDS_PROCESS_MAX + 1 - len, f)) > 0)
    len += got;
  bool too_long = len > CREDS_PROCESS_MAX;
  int st = pclose(f);
  if (st == -1) {
    error_errno(e, "credential_process for profile '%s': waiting for it", profile);
    goto out;
  }
  if (WIFSIGNALED(st) && !too_long) {
    error_set(e, ERR_IO, "credential_process for profile '%s' was killed by signal %d", profile,
              WTERMSIG(st));
    goto out;
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
    error_set(e, ERR_IO, "credential_process for profile '%s' exited with status %d%s", profile,
              WEXITSTATUS(st),
              WEXITSTATUS(st) == 127 ? " (command not found)" : "");
    goto out;
  }
  if (too_long) {
    error_set(e, ERR_FORMAT, "credential_process for profile '%s' printed more than %d bytes",
              profile, CREDS_PROCESS_MAX);
    goto out;
  }
  if (!(o = creds_json_parse(buf, len))) {
    error_set(e, ERR_FORMAT, "credential_process for profile '%s' printed no JSON object (%zu bytes "
              "of output, exit status 0)", profile, len);
    goto out;
  }
  json_object *ver;
  if (!json_object_object_get_ex(o, "Version", &ver) || !json_object_is_type(ver, json_type_int) ||
      json_object_get_int(ver) != 1) {
    error_set(e, ERR_UNSUPPORTED, "credential_process for profile '%s': its JSON has no "
              "\"Version\": 1", profile);
    goto out;
  }
  const char *ak = creds_json_str(o, "AccessKeyId"), *sk = creds_json_str(o, "SecretAccessKey");
  const char *tok = creds_json_str(o, "SessionToken"), *exp = creds_json_str(o, "Expiration");
  if (!ak || !sk) {
    error_set(e, ERR_FORMAT, "credential_process for profile '%s': its JSON lacks %s", profile,
              !ak ? "AccessKeyId" : "SecretAccessKey");
    goto out;
  }
  char what[200];
  snprintf(what, sizeof what, "credential_process for profile '%s'", profile);
  if (creds_fill(c, ak, sk, tok, what, e) < 0)
    goto out;
  c->expires = 0;
  if (exp && creds_parse_time(exp, &c->expires) < 0) {
    error_set(e, ERR_FORMAT, "credential_process for profile '%s': Expiration '%.40s' is not an "
              "ISO 8601 time", profile, exp);
    goto out;
  }
  snprintf(c->source, sizeof c->source, "credential_process");
  rc = 0;
out:
  if (o) {
    creds_json_wipe(o);
    json_object_put(o);
  }
  OPENSSL_cleanse(buf, CREDS_PROCESS_MAX + 1);
  free(buf);
  if (rc < 0)
    OPENSSL_cleanse(c, sizeof *c);
  return rc;
}

/* ---- IMDSv2 ----------------------------------------------------------------------- */

struct creds_imds {
  char endpoint[256];
  char token[1024];
  int state;       /* 0 not tried, 1 token, 2 IMDSv1 (no token), -1 unavailable */
  char why[200];   /* why it is unavailable */
};

struct creds_body {
  char *p;
  size_t len, cap;
  bool over;
};

static size_t creds_on_body(char *p, size_t sz, size_t n, void *arg)
{
  struct creds_body *b = arg;
  size_t l = sz * n;
  if (l > b->cap - 1 - b->len) {
    b->over = true;
    return 0; /* aborts the transfer */
  }
  memcpy(b->p + b->len, p, l);
  b->len += l;
  b->p[b->len] = 0;
  return l;
}

static pthread_once_t creds_curl_once = PTHREAD_ONCE_INIT;

static void creds_curl_init(void)
{
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void creds_imds_setup(struct creds_imds *m)
{
  memset(m, 0, sizeof *m);
  const char *ep = creds_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  const char *mode = creds_env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
  if (!ep)
    ep = mode && strcasecmp(mode, "ipv6") == 0 ? CREDS_IMDS_DEFAULT_V6 : CREDS_IMDS_DEFAULT;
  if (creds_copy(m->endpoint, sizeof m->endpoint, ep) < 0) {
    snprintf(m->endpoint, sizeof m->endpoint, "%s", CREDS_IMDS_DEFAULT);
    m->state = -1;
    creds_fmt(m->why, sizeof m->why, "AWS_EC2_METADATA_SERVICE_ENDPOINT is too long");
  }
  size_t n = strlen(m->endpoint);
  while (n && m->endpoint[n - 1] == '/')
    m->endpoint[--n] = 0;
  if (creds_env_true("AWS_EC2_METADATA_DISABLED")) {
    m->state = -1;
    creds_fmt(m->why, sizeof m->why, "disabled by AWS_EC2_METADATA_DISABLED");
  }
}

/* One request; 0 with *status set when an answer came, -1 (m->why set, IMDS
 * marked unavailable) when none did. */
static int creds_imds_request(struct creds_imds *m, bool put, const char *path, char *out,
                              size_t outcap, long *status)
{
  pthread_once(&creds_curl_once, creds_curl_init);
  char url[512], hdr[1100];
  snprintf(url, sizeof url, "%s%s", m->endpoint, path);
  CURL *h = curl_easy_init();
  if (!h) {
    creds_fmt(m->why, sizeof m->why, "cannot create an HTTP handle");
    m->state = -1;
    return -1;
  }
  struct curl_slist *hl = NULL, *t;
  if (put)
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
  else if (m->state == 1)
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", m->token);
  else
    hdr[0] = 0;
  bool ok = true;
  if (hdr[0])
    ok = (t = curl_slist_append(hl, hdr)) && (hl = t);
  ok = ok && (t = curl_slist_append(hl, "Content-Type:")) && (hl = t);
  ok = ok && (t = curl_slist_append(hl, "Accept:")) && (hl = t);
  OPENSSL_cleanse(hdr, sizeof hdr);
  char errbuf[CURL_ERROR_SIZE] = "";
  struct creds_body b = { out, 0, outcap, false };
  out[0] = 0;
  if (ok) {
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* the metadata service is link-local */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CREDS_IMDS_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, CREDS_IMDS_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, creds_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (put) {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
  }
  CURLcode cc = ok ? curl_easy_perform(h) : CURLE_OUT_OF_MEMORY;
  if (cc == CURLE_OK)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
  curl_slist_free_all(hl);
  curl_easy_cleanup(h);
  if (b.over) {
    creds_fmt(m->why, sizeof m->why, "%s answered more than %zu bytes", path, outcap - 1);
    m->state = -1;
    return -1;
  }
  if (cc != CURLE_OK) {
    creds_fmt(m->why, sizeof m->why, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    m->state = -1;
    return -1;
  }
  return 0;
}

/* Gets the session token once (PUT /latest/api/token). */
static int creds_imds_token(struct creds_imds *m)
{
  if (m->state != 0)
    return m->state < 0 ? -1 : 0;
  char body[1024];
  long st = 0;
  if (creds_imds_request(m, true, "/latest/api/token", body, sizeof body, &st) < 0)
    return -1;
  if (st == 200) {
    char *t = creds_strip(body);
    bool ok = *t && strlen(t) < sizeof m->token;
    for (char *p = t; ok && *p; p++)
      ok = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f;
    if (!ok) {
      m->state = -1;
      creds_fmt(m->why, sizeof m->why, "its session token is malformed");
      return -1;
    }
    memcpy(m->token, t, strlen(t) + 1);
    m->state = 1;
    return 0;
  }
  if ((st == 403 || st == 404 || st == 405) && !creds_env_true("AWS_EC2_METADATA_V1_DISABLED")) {
    m->state = 2; /* an IMDSv1-only service, as botocore allows */
    return 0;
  }
  m->state = -1;
  creds_fmt(m->why, sizeof m->why, "PUT /latest/api/token answered HTTP %ld", st);
  return -1;
}

/* GET path; 0 with the body in out on HTTP 200, -1 with m->why otherwise
 * (*status is 0 when no answer came). */
static int creds_imds_get(struct creds_imds *m, const char *path, char *out, size_t outcap,
                          long *status)
{
  *status = 0;
  if (creds_imds_token(m) < 0)
    return -1;
  if (creds_imds_request(m, false, path, out, outcap, status) < 0)
    return -1;
  if (*status != 200) {
    creds_fmt(m->why, sizeof m->why, "GET %s answered HTTP %ld", path, *status);
    return -1;
  }
  return 0;
}

/* The instance role's credentials. */
static int creds_imds_creds(struct creds_imds *m, struct aws_creds *c)
{
  static const char base[] = "/latest/meta-data/iam/security-credentials/";
  char *body = malloc(CREDS_IMDS_BODY_MAX);
  if (!body) {
    creds_fmt(m->why, sizeof m->why, "out of memory");
    return -1;
  }
  int rc = -1;
  long st;
  json_object *o = NULL;
  if (creds_imds_get(m, base, body, CREDS_IMDS_BODY_MAX, &st) < 0) {
    if (st == 404)
      creds_fmt(m->why, sizeof m->why, "the instance has no IAM role (%s answered HTTP 404)", base);
    goto out;
  }
  char role[128];
  char *r = creds_strip(body);
  r[strcspn(r, "\r\n")] = 0;
  size_t rl = strlen(r);
  bool ok = rl > 0 && rl < sizeof role;
  for (size_t i = 0; ok && i < rl; i++)
    ok = isalnum((unsigned char)r[i]) || strchr("+=,.@_-", r[i]);
  if (!ok) {
    creds_fmt(m->why, sizeof m->why, "%s answered no role name", base);
    goto out;
  }
  memcpy(role, r, rl + 1);
  char path[256];
  snprintf(path, sizeof path, "%s%s", base, role);
  if (creds_imds_get(m, path, body, CREDS_IMDS_BODY_MAX, &st) < 0)
    goto out;
  if (!(o = creds_json_parse(body, strlen(body)))) {
    creds_fmt(m->why, sizeof m->why, "the credentials of role '%s' are not a JSON object", role);
    goto out;
  }
  const char *code = creds_json_str(o, "Code");
  if (code && strcmp(code, "Success") != 0) {
    creds_fmt(m->why, sizeof m->why, "the credentials of role '%s' have Code '%.40s'", role, code);
    goto out;
  }
  const char *ak = creds_json_str(o, "AccessKeyId"), *sk = creds_json_str(o, "SecretAccessKey");
  const char *tok = creds_json_str(o, "Token"), *exp = creds_json_str(o, "Expiration");
  if (!ak || !sk || !tok || !exp) {
    creds_fmt(m->why, sizeof m->why, "the credentials of role '%s' lack %s", role,
             !ak ? "AccessKeyId" : !sk ? "SecretAccessKey" : !tok ? "Token" : "Expiration");
    goto out;
  }
  struct error fe = { 0 };
  char what[200];
  snprintf(what, sizeof what, "IMDS role '%s'", role);
  if (creds_fill(c, ak, sk, tok, what, &fe) < 0) {
    creds_fmt(m->why, sizeof m->why, "%s", fe.msg);
    goto out;
  }
  if (creds_parse_time(exp, &c->expires) < 0) {
    creds_fmt(m->why, sizeof m->why, "the credentials of role '%s' have Expiration '%.40s', not "
             "an ISO 8601 time", role, exp);
    goto out;
  }
  snprintf(c->source, sizeof c->source, "imds");
  rc = 0;
out:
  if (o) {
    creds_json_wipe(o);
    json_object_put(o);
  }
  OPENSSL_cleanse(body, CREDS_IMDS_BODY_MAX);
  free(body);
  if (rc < 0)
    OPENSSL_cleanse(c, sizeof *c);
  return rc;
}

/* The instance's region. */
static int creds_imds_region(struct creds_imds *m, char *out, size_t n)
{
  char body[256];
  long st;
  if (creds_imds_get(m, "/latest/meta-data/placement/region", body, sizeof body, &st) < 0)
    return -1;
  char *r = creds_strip(body);
  if (!creds_region_ok(r) || creds_copy(out, n, r) < 0) {
    creds_fmt(m->why, sizeof m->why, "/latest/meta-data/placement/region answered no region name");
    return -1;
  }
  return 0;
}

/* ---- the chain ---------------------------------------------------------------------- */

struct creds_files {
  char config[PATH_MAX], credentials[PATH_MAX];
  struct creds_sec cfg; /* the profile's section(s) of the config file */
  struct creds_sec crd; /* ... of the credentials file */
};

/* A key of the merged profile: the credentials file overrides the config
 * file, as in botocore's full_config. */
static const char *creds_profile_get(const struct creds_files *f, const char *key)
{
  const char *v = creds_sec_get(&f->crd, key);
  return v ? v : creds_sec_get(&f->cfg, key);
}

static int creds_unsupported(const char *profile, const char *what, struct error *e)
{
  return error_set(e, ERR_UNSUPPORTED,
                   "profile '%s' gets its credentials from %s, which amiport does not support; "
                   "set credential_process = aws configure export-credentials --profile %s "
                   "--format process in another profile and use that one, or export "
                   "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                   profile, what, profile);
}

/* Where a profile lives in the config file, for messages. */
static void creds_cfg_section(const char *profile, char *out, size_t n)
{
  if (strcmp(profile, "default") == 0)
    snprintf(out, n, "[default]");
  else
    snprintf(out, n, "[profile %s]", profile);
}

static int creds_resolve(struct aws_ctx *ctx, struct creds_files *f, bool explicit_profile,
                         struct creds_imds *m, struct error *e)
{
  struct aws_creds *c = &ctx->creds;
  const char *p = ctx->profile;
  char what[PATH_MAX + 200], sect[200];

  /* 1. the environment, unless --profile named a profile */
  const char *ak = creds_env("AWS_ACCESS_KEY_ID"), *sk = creds_env("AWS_SECRET_ACCESS_KEY");
  if (!explicit_profile && ak) {
    if (!sk)
      return error_set(e, ERR_FORMAT, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    const char *tok = creds_env("AWS_SESSION_TOKEN");
    if (!tok)
      tok = creds_env("AWS_SECURITY_TOKEN");
    if (creds_fill(c, ak, sk, tok, "the environment (AWS_ACCESS_KEY_ID)", e) < 0)
      return -1;
    snprintf(c->source, sizeof c->source, "environment");
    return 0;
  }

  /* providers botocore tries next, which amiport lacks */
  if (creds_profile_get(f, "role_arn"))
    return creds_unsupported(p, "an assumed role (role_arn)", e);
  if (creds_profile_get(f, "web_identity_token_file") ||
      (creds_env("AWS_WEB_IDENTITY_TOKEN_FILE") && creds_env("AWS_ROLE_ARN")))
    return creds_unsupported(p, "a web identity token (web_identity_token_file)", e);
  if (creds_profile_get(f, "sso_start_url") || creds_profile_get(f, "sso_session"))
    return creds_unsupported(p, "IAM Identity Center (sso_session, sso_start_url)", e);

  /* 2. the shared credentials file */
  ak = creds_sec_get(&f->crd, "aws_access_key_id");
  if (ak) {
    sk = creds_sec_get(&f->crd, "aws_secret_access_key");
    const char *tok = creds_sec_get(&f->crd, "aws_session_token");
    if (!tok)
      tok = creds_sec_get(&f->crd, "aws_security_token");
    creds_fmt(what, sizeof what, "%s [%s]", f->credentials, p);
    if (creds_fill(c, ak, sk, tok, what, e) < 0)
      return -1;
    snprintf(c->source, sizeof c->source, "shared-credentials-file");
    return 0;
  }

  /* 3. credential_process */
  const char *cp = creds_profile_get(f, "credential_process");
  if (cp && *cp) {
    if (creds_copy(ctx->credential_process, sizeof ctx->credential_process, cp) < 0)
      return error_set(e, ERR_UNSUPPORTED, "profile '%s': credential_process is longer than %zu "
                       "bytes", p, sizeof ctx->credential_process - 1);
    if (creds_process(cp, p, c, e) < 0)
      return -1;
    return 0;
  }

  /* 4. static keys in the config file */
  ak = creds_profile_get(f, "aws_access_key_id");
  if (ak) {
    sk = creds_profile_get(f, "aws_secret_access_key");
    const char *tok = creds_profile_get(f, "aws_session_token");
    if (!tok)
      tok = creds_profile_get(f, "aws_security_token");
    creds_cfg_section(p, sect, sizeof sect);
    creds_fmt(what, sizeof what, "%s %s", f->config, sect);
    if (creds_fill(c, ak, sk, tok, what, e) < 0)
      return -1;
    snprintf(c->source, sizeof c->source, "config-file");
    return 0;
  }

  if (creds_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ||
      creds_env("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
    return creds_unsupported(p, "the container credentials endpoint "
                             "(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)", e);

  /* 5. the instance role, through IMDSv2 */
  if (creds_imds_creds(m, c) == 0) {
    ctx->from_imds = true;
    return 0;
  }
  creds_cfg_section(p, sect, sizeof sect);
  return error_set(e, ERR_FORMAT,
                   "no AWS credentials found for profile '%s': looked in %s, %s [%s]%s, %s %s%s "
                   "and the EC2 instance metadata service at %s (%s)",
                   p,
                   explicit_profile ? "the environment (not used with --profile)"
                                    : "the environment (AWS_ACCESS_KEY_ID)",
                   f->credentials, p, f->crd.exists ? "" : " (no such file)", f->config, sect,
                   f->cfg.exists ? "" : " (no such file)", m->endpoint, m->why);
}

static int creds_region(struct aws_ctx *ctx, const struct aws_opts *o, struct creds_files *f,
                        struct creds_imds *m, struct error *e)
{
  const char *r = NULL, *from = NULL;
  char fromfile[PATH_MAX + 200], sect[200];
  if (o->region && *o->region) {
    r = o->region;
    from = "--region";
  } else if ((r = creds_env("AWS_REGION"))) {
    from = "AWS_REGION";
  } else if ((r = creds_env("AWS_DEFAULT_REGION"))) {
    from = "AWS_DEFAULT_REGION";
  } else if ((r = creds_profile_get(f, "region")) && *r) {
    creds_cfg_section(ctx->profile, sect, sizeof sect);
    creds_fmt(fromfile, sizeof fromfile, "region in %s %s", f->config, sect);
    from = fromfile;
  } else {
    char got[sizeof ctx->region];
    if (creds_imds_region(m, got, sizeof got) == 0) {
      memcpy(ctx->region, got, sizeof got);
      return 0;
    }
    creds_cfg_section(ctx->profile, sect, sizeof sect);
    return error_set(e, ERR_FORMAT,
                     "no AWS region: pass --region, or set AWS_REGION, or region in %s %s "
                     "(the instance metadata service at %s: %s)",
                     f->config, sect, m->endpoint, m->why);
  }
  if (!creds_region_ok(r) || creds_copy(ctx->region, sizeof ctx->region, r) < 0)
    return error_set(e, r == o->region ? ERR_USAGE : ERR_FORMAT, "%s: '%.64s' is not a region name",
                     from, r);
  return 0;
}

/* Sets out to url without its trailing '/'s; a bad URL is a usage error
 * when it came from the command line. */
static int creds_endpoint_set(char *out, size_t n, const char *url, const char *from,
                              struct error *e)
{
  int code = strcmp(from, "--endpoint-url") == 0 ? ERR_USAGE : ERR_FORMAT;
  if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
    return error_set(e, code, "%s: '%.200s' is not an http:// or https:// URL", from, url);
  for (const char *p = url; *p; p++)
    if ((unsigned char)*p <= ' ' || (unsigned char)*p == 0x7f)
      return error_set(e, code, "%s: the URL holds a blank or a control character", from);
  size_t l = strlen(url);
  while (l && url[l - 1] == '/')
    l--;
  if (l >= n)
    return error_set(e, code, "%s: the URL is longer than %zu bytes", from, n - 1);
  memcpy(out, url, l);
  out[l] = 0;
  return 0;
}

static int creds_endpoints(struct aws_ctx *ctx, const struct aws_opts *o, struct creds_files *f,
                           struct error *e)
{
  static const char *const env[AWS_SERVICES] = {
    [AWS_EBS] = "AWS_ENDPOINT_URL_EBS", [AWS_EC2] = "AWS_ENDPOINT_URL_EC2",
    [AWS_S3] = "AWS_ENDPOINT_URL_S3"
  };
  struct creds_sec svc = { 0 };
  int rc = -1;
  const char *ign = creds_profile_get(f, "ignore_configured_endpoint_urls");
  bool ignore = creds_env_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") ||
                (!creds_env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") && ign &&
                 strcasecmp(ign, "true") == 0);
  const char *services = creds_profile_get(f, "services");
  if (!ignore && !o->endpoint_url && services && *services &&
      creds_ini_load(f->config, creds_match_services, services, &svc, e) < 0)
    goto out;
  char sect[200], from[PATH_MAX + 300];
  creds_cfg_section(ctx->profile, sect, sizeof sect);
  for (int s = 0; s < AWS_SERVICES; s++) {
    const char *name = aws_service_name((enum aws_service)s), *url = NULL;
    char key[64];
    snprintf(key, sizeof key, "%s.endpoint_url", name);
    if (o->endpoint_url && *o->endpoint_url) {
      url = o->endpoint_url;
      snprintf(from, sizeof from, "--endpoint-url");
    } else if (!ignore && (url = creds_env(env[s]))) {
      snprintf(from, sizeof from, "%s", env[s]);
    } else if (!ignore && (url = creds_sec_get(&svc, key)) && *url) {
      creds_fmt(from, sizeof from, "%s [services %s] %s endpoint_url", f->config, services, name);
    } else if (!ignore && (url = creds_env("AWS_ENDPOINT_URL"))) {
      snprintf(from, sizeof from, "AWS_ENDPOINT_URL");
    } else if (!ignore && (url = creds_profile_get(f, "endpoint_url")) && *url) {
      creds_fmt(from, sizeof from, "endpoint_url in %s %s", f->config, sect);
    } else {
      bool cn = strncmp(ctx->region, "cn-", 3) == 0;
      snprintf(ctx->endpoint[s], sizeof ctx->endpoint[s], "https://%s.%s.amazonaws.com%s", name,
               ctx->region, cn ? ".cn" : "");
      continue;
    }
    if (creds_endpoint_set(ctx->endpoint[s], sizeof ctx->endpoint[s], url, from, e) < 0)
      goto out;
  }
  rc = 0;
out:
  creds_sec_free(&svc);
  return rc;
}

int aws_ctx_init(struct aws_ctx *ctx, const struct aws_opts *o, struct error *e)
{
  static const struct aws_opts none = { 0 };
  if (!o)
    o = &none;
  memset(ctx, 0, sizeof *ctx);
  struct creds_files *f = calloc(1, sizeof *f);
  if (!f)
    return error_set(e, ERR_NOMEM, "out of memory for the AWS configuration");
  struct creds_imds m;
  creds_imds_setup(&m);
  int rc = -1;

  /* the profile */
  bool explicit_profile = o->profile && *o->profile;
  const char *p = explicit_profile ? o->profile : creds_env("AWS_PROFILE");
  if (!p)
    p = creds_env("AWS_DEFAULT_PROFILE");
  if (!p)
    p = "default";
  bool ok = creds_copy(ctx->profile, sizeof ctx->profile, p) == 0;
  for (const char *q = p; ok && *q; q++)
    ok = (unsigned char)*q >= ' ' && *q != '[' && *q != ']';
  if (!ok) {
    error_set(e, explicit_profile ? ERR_USAGE : ERR_FORMAT, "'%.64s' is not a profile name", p);
    goto out;
  }

  /* the two files */
  const char *cf = creds_env("AWS_CONFIG_FILE"), *sf = creds_env("AWS_SHARED_CREDENTIALS_FILE");
  if (creds_expand_path(cf ? cf : "~/.aws/config", f->config, sizeof f->config, e) < 0 ||
      creds_expand_path(sf ? sf : "~/.aws/credentials", f->credentials, sizeof f->credentials,
                        e) < 0 ||
      creds_ini_load(f->config, creds_match_profile, ctx->profile, &f->cfg, e) < 0 ||
      creds_ini_load(f->credentials, creds_match_exact, ctx->profile, &f->crd, e) < 0)
    goto out;
  if (!f->cfg.found && !f->crd.found && strcmp(ctx->profile, "default") != 0) {
    error_set(e, ERR_FORMAT, "profile '%s' not found in %s and %s", ctx->profile, f->config,
              f->credentials);
    goto out;
  }

  if (creds_resolve(ctx, f, explicit_profile, &m, e) < 0 || creds_region(ctx, o, f, &m, e) < 0 ||
      creds_endpoints(ctx, o, f, e) < 0)
    goto out;
  if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
    error_set(e, ERR_NOMEM, "cannot create a lock for the credentials");
    goto out;
  }
  rc = 0;
out:
  creds_sec_free(&f->cfg);
  creds_sec_free(&f->crd);
  free(f);
  OPENSSL_cleanse(m.token, sizeof m.token);
  if (rc < 0)
    OPENSSL_cleanse(ctx, sizeof *ctx);
  return rc;
}

int aws_ctx_creds(struct aws_ctx *ctx, struct aws_creds *out, struct error *e)
{
  pthread_mutex_lock(&ctx->lock);
  int rc = 0;
  time_t now = time(NULL);
  struct aws_creds *c = &ctx->creds;
  if (c->expires != 0 && c->expires - now <= CREDS_REFRESH_WINDOW &&
      (ctx->credential_process[0] || ctx->from_imds)) {
    struct aws_creds fresh = { 0 };
    if (ctx->credential_process[0]) {
      rc = creds_process(ctx->credential_process, ctx->profile, &fresh, e);
    } else {
      struct creds_imds m;
      creds_imds_setup(&m);
      if ((rc = creds_imds_creds(&m, &fresh)) < 0)
        error_set(e, ERR_IO, "refreshing the instance role's credentials from %s: %s", m.endpoint,
                  m.why);
      OPENSSL_cleanse(m.token, sizeof m.token);
    }
    if (rc == 0) {
      OPENSSL_cleanse(c, sizeof *c);
      *c = fresh;
    } else {
      error_prefix(e, "credentials of profile '%s' expire in %lld s and could not be refreshed",
                   ctx->profile, (long long)(c->expires - now));
    }
    OPENSSL_cleanse(&fresh, sizeof fresh);
  }
  if (rc == 0)
    *out = *c;
  pthread_mutex_unlock(&ctx->lock);
  return rc;
}

void aws_ctx_free(struct aws_ctx *ctx)
{
  pthread_mutex_destroy(&ctx->lock);
  OPENSSL_cleanse(&ctx->creds, sizeof ctx->creds);
  OPENSSL_cleanse(ctx->credential_process, sizeof ctx->credential_process);
}
