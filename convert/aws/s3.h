/* s3.h - the S3 REST API calls amiport makes (s3.c): PutObject,
 * ListObjectsV2, and an upload of many local files at once. */
#ifndef AMIPORT_S3_H
#define AMIPORT_S3_H

#include <signal.h>

#include "aws.h"

#define S3_PUT_MAX (5ull << 30) /* the largest object one PutObject stores */

/* One PutObject: body is sent with its Content-MD5 (which S3 checks). */
struct s3_put {
  const char *bucket, *key;
  const void *body;
  size_t len;
  const char *acl;          /* canned ACL (x-amz-acl), or NULL for none */
  const char *content_type; /* NULL: application/octet-stream */
};

int s3_put_object(struct aws_ctx *ctx, const struct s3_put *p, struct error *e);

/* One GetObject: the object whole into *buf (malloc'd, NUL-terminated), at
 * most max bytes (a larger one is an error). */
int s3_get_object(struct aws_ctx *ctx, const char *bucket, const char *key, uint64_t max,
                  uint8_t **buf, size_t *len, struct error *e);

struct s3_object {
  char *key;
  uint64_t size;
  char etag[80]; /* without its quotes; the MD5 hex of an object one PutObject stored */
};

/* A listing, sorted by key. */
struct s3_list {
  struct s3_object *v;
  size_t n, cap;
};

/* Every object whose key starts with prefix ("" for all), every page of
 * ListObjectsV2 followed. */
int s3_list_objects(struct aws_ctx *ctx, const char *bucket, const char *prefix,
                    struct s3_list *out, struct error *e);
const struct s3_object *s3_list_find(const struct s3_list *l, const char *key);
void s3_list_free(struct s3_list *l);

enum s3_file_state { S3_FILE_PENDING, S3_FILE_UPLOADED, S3_FILE_SKIPPED };

/* One local file to store at key. */
struct s3_file {
  const char *path, *key;
  const char *sha1;             /* hex the file's SHA-1 must have, or NULL: a file
                                   that differs is refused, not sent */
  const struct s3_object *have; /* what the bucket holds at key, or NULL */
  /* filled in */
  enum s3_file_state state;     /* SKIPPED: have is the same size and MD5 */
  uint64_t size;
  char md5[33];
};

struct s3_upload {
  const char *bucket, *acl, *content_type; /* as in struct s3_put */
  struct s3_file *files;
  size_t nfiles;
  unsigned jobs;                          /* files in flight; 0: 8 */
  const volatile sig_atomic_t *cancel;    /* set: no new file is started */
  /* called after each file is stored or skipped, one call at a time */
  void (*on_file)(void *arg, const struct s3_file *f, size_t done, size_t total);
  void *arg;
  /* filled in */
  size_t uploaded, skipped;
  uint64_t bytes_uploaded;
};

/* Stores every file (jobs at once, each read whole into memory, each
 * request retried as aws_call retries) except those whose `have` shows the
 * bucket already holds the same bytes. Stops at the first failure; what
 * was stored stays stored, so running it again resumes. */
int s3_upload_files(struct aws_ctx *ctx, struct s3_upload *u, struct error *e);

/* ---- objects made in memory, stored as they come ----------------------- */

/* PutObjects of buffers the caller produces one after the other: at most
 * jobs requests in flight, s3_stream_put waits for a free one, so memory
 * stays at jobs buffers (plus the caller's own). */
struct s3_stream_opts {
  const char *bucket, *acl, *content_type; /* as in struct s3_put */
  unsigned jobs;                           /* requests in flight; 0: 3 */
  const struct s3_list *have;              /* what the bucket holds, or NULL */
  /* after each object is stored or skipped, one call at a time; tag is
   * what s3_stream_put was given */
  void (*on_object)(void *arg, unsigned tag, const char *key, uint64_t size, bool skipped);
  void *arg;
};

struct s3_stream;

struct s3_stream *s3_stream_open(struct aws_ctx *ctx, const struct s3_stream_opts *o,
                                 struct error *e);
/* Takes buf (malloc'd; freed here whatever happens) to store at key, unless
 * `have` shows the bucket holds key with the same size and MD5. -1 when an
 * earlier PUT failed (its error, which names the key and the S3 error). */
int s3_stream_put(struct s3_stream *s, unsigned tag, const char *key, uint8_t *buf, size_t len,
                  struct error *e);
/* Waits for every PUT; -1 with the first failure. */
int s3_stream_finish(struct s3_stream *s, struct error *e);
/* Waits for what is in flight and frees s. */
void s3_stream_free(struct s3_stream *s);

#endif
