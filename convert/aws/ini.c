/* ini.c - the shared config and credentials files, read as INI the way
 * Python's configparser reads them for botocore (see creds.c): [section]
 * names are case-sensitive, key names are not, '#' and ';' start whole-line
 * comments, '=' or ':' separates a key from its value, and lines indented
 * under a key continue it (a key with an empty value opens a nested
 * sub-section). */
#include "ini.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CREDS_LINE_MAX 16384        /* one line of an INI file */

bool creds_blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

char *creds_strip(char *s)
{
  while (creds_blank(*s))
    s++;
  size_t n = strlen(s);
  while (n && creds_blank(s[n - 1]))
    s[--n] = 0;
  return s;
}


void creds_sec_free(struct creds_sec *s)
{
  for (size_t i = 0; i < s->n; i++) {
    OPENSSL_cleanse(s->kv[i].val, strlen(s->kv[i].val));
    free(s->kv[i].key);
    free(s->kv[i].val);
  }
  s->n = 0;
}

const char *creds_sec_get(const struct creds_sec *s, const char *key)
{
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->kv[i].key, key) == 0)
      return s->kv[i].val;
  return NULL;
}

static struct creds_kv *creds_sec_find(struct creds_sec *s, const char *key)
{
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->kv[i].key, key) == 0)
      return &s->kv[i];
  return NULL;
}

/* Sets key (a later value wins, as in botocore's merged profile). */
static int creds_sec_set(struct creds_sec *s, const char *key, const char *val, const char *path,
                         struct error *e)
{
  char *v = strdup(val);
  if (!v)
    return error_set(e, ERR_NOMEM, "%s: out of memory", path);
  struct creds_kv *kv = creds_sec_find(s, key);
  if (kv) {
    OPENSSL_cleanse(kv->val, strlen(kv->val));
    free(kv->val);
    kv->val = v;
    return 0;
  }
  if (s->n == CREDS_MAX_KEYS) {
    OPENSSL_cleanse(v, strlen(v));
    free(v);
    return error_set(e, ERR_UNSUPPORTED, "%s: more than %d keys in one profile", path,
                     CREDS_MAX_KEYS);
  }
  if (!(s->kv[s->n].key = strdup(key))) {
    free(v);
    return error_set(e, ERR_NOMEM, "%s: out of memory", path);
  }
  s->kv[s->n++].val = v;
  return 0;
}

/* Appends "\n" + more to the value of key (a multi-line value). */
static int creds_sec_append(struct creds_sec *s, const char *key, const char *more,
                            const char *path, struct error *e)
{
  struct creds_kv *kv = creds_sec_find(s, key);
  if (!kv)
    return 0;
  size_t a = strlen(kv->val), b = strlen(more);
  if (a + b + 2 > CREDS_LINE_MAX)
    return error_set(e, ERR_UNSUPPORTED, "%s: the value of '%s' is longer than %d bytes", path,
                     key, CREDS_LINE_MAX);
  char *v = malloc(a + b + 2);
  if (!v)
    return error_set(e, ERR_NOMEM, "%s: out of memory", path);
  memcpy(v, kv->val, a);
  v[a] = '\n';
  memcpy(v + a + 1, more, b + 1);
  OPENSSL_cleanse(kv->val, a);
  free(kv->val);
  kv->val = v;
  return 0;
}

/* Splits a section name into words as Python's shlex.split does (blanks
 * separate; '...' and "..." group; a backslash escapes outside single
 * quotes). Returns the number of words (at most 3 are kept), -1 on an open
 * quote. */
static int creds_shlex(const char *s, char words[3][256])
{
  int nw = 0;
  while (*s) {
    while (creds_blank(*s))
      s++;
    if (!*s)
      break;
    char w[256];
    size_t wl = 0;
    char q = 0;
    while (*s && (q || !creds_blank(*s))) {
      char c = *s++;
      if (q == '\'') {
        if (c == '\'') {
          q = 0;
          continue;
        }
      } else if (q == '"') {
        if (c == '"') {
          q = 0;
          continue;
        }
        if (c == '\\' && (*s == '"' || *s == '\\'))
          c = *s++;
      } else if (c == '\'' || c == '"') {
        q = c;
        continue;
      } else if (c == '\\') {
        if (!*s)
          return -1;
        c = *s++;
      }
      if (wl + 1 < sizeof w)
        w[wl++] = c;
    }
    if (q)
      return -1;
    w[wl] = 0;
    if (nw < 3)
      memcpy(words[nw], w, wl + 1);
    nw++;
  }
  return nw;
}

bool creds_match_exact(const char *hdr, const char *want)
{
  return strcmp(hdr, want) == 0;
}

static bool creds_match_words(const char *hdr, const char *first, const char *want)
{
  char w[3][256];
  size_t fl = strlen(first);
  if (strncmp(hdr, first, fl) != 0)
    return false;
  return creds_shlex(hdr, w) == 2 && strcmp(w[0], first) == 0 && strcmp(w[1], want) == 0;
}

bool creds_match_profile(const char *hdr, const char *want)
{
  if (strcmp(hdr, "default") == 0)
    return strcmp(want, "default") == 0;
  return creds_match_words(hdr, "profile", want);
}

bool creds_match_services(const char *hdr, const char *want)
{
  return creds_match_words(hdr, "services", want);
}

int creds_ini_load(const char *path, bool (*match)(const char *, const char *), const char *want,
                   struct creds_sec *s, struct error *e)
{
  FILE *f = fopen(path, "re");
  if (!f) {
    if (errno == ENOENT || errno == ENOTDIR)
      return 0;
    return error_errno(e, "%s", path);
  }
  s->exists = true;
  char *line = malloc(CREDS_LINE_MAX + 2);
  if (!line) {
    fclose(f);
    return error_set(e, ERR_NOMEM, "%s: out of memory", path);
  }
  int rc = -1;
  unsigned lineno = 0;
  bool in_section = false, in_match = false, have_key = false, nested = false;
  size_t key_indent = 0;
  char key[128] = "";
  while (fgets(line, CREDS_LINE_MAX + 2, f)) {
    lineno++;
    size_t len = strlen(line);
    if (len == CREDS_LINE_MAX + 1 && line[len - 1] != '\n' && !feof(f)) {
      error_set(e, ERR_UNSUPPORTED, "%s line %u is longer than %d bytes", path, lineno,
                CREDS_LINE_MAX);
      goto out;
    }
    size_t indent = 0;
    while (line[indent] == ' ' || line[indent] == '\t')
      indent++;
    char *t = creds_strip(line);
    if (!*t || *t == '#' || *t == ';')
      continue; /* blank lines and comments leave a multi-line value open */
    if (have_key && indent > key_indent) { /* continues the key above */
      if (!in_match)
        continue;
      if (nested) { /* botocore splits these at '=' and keeps the key's case */
        char *eq = strchr(t, '=');
        if (!eq)
          continue; /* botocore would fail on this sub-key; nothing here reads it */
        *eq = 0;
        char *sub = creds_strip(t), *val = creds_strip(eq + 1), full[300];
        if (!*sub || (size_t)snprintf(full, sizeof full, "%s.%s", key, sub) >= sizeof full)
          continue;
        if (creds_sec_set(s, full, val, path, e) < 0)
          goto out;
      } else if (creds_sec_append(s, key, t, path, e) < 0) {
        goto out;
      }
      continue;
    }
    if (*t == '[') {
      char *close = strrchr(t, ']');
      if (!close || close == t + 1) {
        error_set(e, ERR_FORMAT, "%s line %u: a section header without a name or without ']'",
                  path, lineno);
        goto out;
      }
      *close = 0;
      in_section = true;
      in_match = match(t + 1, want);
      s->found = s->found || in_match;
      have_key = false;
      continue;
    }
    char *eq = t + strcspn(t, "=:");
    if (!*eq) {
      error_set(e, ERR_FORMAT, "%s line %u is neither a [section] nor a key = value line", path,
                lineno);
      goto out;
    }
    if (!in_section) {
      error_set(e, ERR_FORMAT, "%s line %u: a key before the first [section]", path, lineno);
      goto out;
    }
    *eq = 0;
    char *k = creds_strip(t), *v = creds_strip(eq + 1);
    if (!*k) {
      error_set(e, ERR_FORMAT, "%s line %u: a value without a key name", path, lineno);
      goto out;
    }
    for (char *p = k; *p; p++)
      *p = (char)tolower((unsigned char)*p);
    have_key = true;
    key_indent = indent;
    if (strlen(k) >= sizeof key) { /* no key this long is read here: skip it and its lines */
      key[0] = 0;
      nested = false;
      continue;
    }
    memcpy(key, k, strlen(k) + 1);
    nested = *v == 0;
    if (in_match && creds_sec_set(s, key, v, path, e) < 0)
      goto out;
  }
  if (ferror(f)) {
    error_errno(e, "%s: read", path);
    goto out;
  }
  rc = 0;
out:
  OPENSSL_cleanse(line, CREDS_LINE_MAX + 2);
  free(line);
  fclose(f);
  return rc;
}
