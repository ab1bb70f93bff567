/* ini.h - one section of an INI file as botocore reads it (ini.c). */
#ifndef AMIPORT_INI_H
#define AMIPORT_INI_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define CREDS_MAX_KEYS 256          /* keys kept from one profile */

struct creds_kv {
  char *key; /* lower case; "ebs.endpoint_url" for a key of a nested sub-section */
  char *val;
};

struct creds_sec {
  struct creds_kv kv[CREDS_MAX_KEYS];
  size_t n;
  bool exists; /* the file is there */
  bool found;  /* and has a matching section */
};

void creds_sec_free(struct creds_sec *s);
/* The value of key (lower case), or NULL. */
const char *creds_sec_get(const struct creds_sec *s, const char *key);
/* Reads path and keeps the keys of every section that match(header, want)
 * accepts (later sections and keys win). A file that does not exist leaves
 * s->exists false and is no error. Errors never quote a line: it may hold a
 * secret. */
int creds_ini_load(const char *path, bool (*match)(const char *, const char *), const char *want,
                   struct creds_sec *s, struct error *e);
/* Section matchers: the credentials file names a profile as it is; the
 * config file as [default] or [profile NAME]; a services block as
 * [services NAME]. */
bool creds_match_exact(const char *hdr, const char *want);
bool creds_match_profile(const char *hdr, const char *want);
bool creds_match_services(const char *hdr, const char *want);

bool creds_blank(char c);
/* Strips blanks at both ends, in place; returns the start. */
char *creds_strip(char *s);

#endif
