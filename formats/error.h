/* error.h - the error carried out of every call in the project.
 *
 * The callee fills it with a sentence that names the file, the field and the
 * value; only cli/ prints it. Functions return -1 (or NULL) after filling it. */
#ifndef AMIPORT_ERROR_H
#define AMIPORT_ERROR_H

#include <stdarg.h>

enum error_code {
  ERR_NONE = 0,
  ERR_IO,          /* a system call failed */
  ERR_FORMAT,      /* the input is malformed */
  ERR_UNSUPPORTED, /* valid input using a feature we refuse or lack */
  ERR_REFUSED,     /* refused for safety (backing file, extent path) */
  ERR_USAGE,       /* bad option or argument */
  ERR_NOMEM,
  ERR_EXISTS,      /* destination exists */
  ERR_INTERRUPTED,
  ERR_REMOTE,      /* a service answered with an error */
  ERR_NETWORK,     /* no answer: the connection failed, retries spent */
};

struct error {
  int code;
  char msg[512];
};

/* Sets e and returns -1. */
int error_set(struct error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like error_set, appending ": strerror(errno)". */
int error_errno(struct error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefixes an existing message: "prefix: old message". */
int error_prefix(struct error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
