/* error.c - filling struct error (see error.h). */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Appends s to e->msg, cut to fit. */
static void error_append(struct error *e, const char *s)
{
  size_t at = strlen(e->msg), n = strlen(s);
  if (n > sizeof e->msg - 1 - at)
    n = sizeof e->msg - 1 - at;
  memcpy(e->msg + at, s, n);
  e->msg[at + n] = 0;
}

int error_set(struct error *e, int code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->code = code;
  return -1;
}

int error_errno(struct error *e, const char *fmt, ...)
{
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  error_append(e, ": ");
  error_append(e, strerror(saved));
  e->code = saved == ENOMEM ? ERR_NOMEM : ERR_IO;
  errno = saved;
  return -1;
}

int error_prefix(struct error *e, const char *fmt, ...)
{
  char old[sizeof e->msg];
  memcpy(old, e->msg, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  error_append(e, ": ");
  error_append(e, old);
  return -1;
}
