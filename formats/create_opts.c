/* create_opts.c - parsing "-o key=value,key=value" for writers. */
#include "image.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int create_opts_parse(struct create_opts *o, const char *text, struct error *e)
{
  if (!text || !*text)
    return 0;
  char *copy = strdup(text);
  if (!copy)
    return error_set(e, ERR_NOMEM, "out of memory");
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok) {
      free(copy);
      return error_set(e, ERR_USAGE, "option '%s' is not key=value", tok);
    }
    *eq = 0;
    struct create_opt *v = realloc(o->v, (o->n + 1) * sizeof *v);
    if (!v) {
      free(copy);
      return error_set(e, ERR_NOMEM, "out of memory");
    }
    o->v = v;
    o->v[o->n] = (struct create_opt){ strdup(tok), strdup(eq + 1), false };
    if (!o->v[o->n].key || !o->v[o->n].val) {
      free(copy);
      return error_set(e, ERR_NOMEM, "out of memory");
    }
    o->n++;
  }
  free(copy);
  return 0;
}

void create_opts_free(struct create_opts *o)
{
  for (size_t i = 0; i < o->n; i++) {
    free(o->v[i].key);
    free(o->v[i].val);
  }
  free(o->v);
  o->v = NULL;
  o->n = 0;
}

const char *create_opts_get(struct create_opts *o, const char *key)
{
  const char *val = NULL;
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->v[i].key, key) == 0) {
      o->v[i].used = true;
      val = o->v[i].val; /* the last one given wins */
    }
  return val;
}

int create_opts_get_size(struct create_opts *o, const char *key, uint64_t *out,
                         struct error *e)
{
  const char *s = create_opts_get(o, key);
  *out = 0;
  if (!s)
    return 0;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || errno || *s == '-')
    return error_set(e, ERR_USAGE, "option %s=%s: not a size", key, s);
  unsigned shift = 0;
  switch (tolower((unsigned char)*end)) {
  case 0: break;
  case 'k': shift = 10; break;
  case 'm': shift = 20; break;
  case 'g': shift = 30; break;
  case 't': shift = 40; break;
  default: return error_set(e, ERR_USAGE, "option %s=%s: unknown unit", key, s);
  }
  if (*end && end[1] && !(tolower((unsigned char)end[1]) == 'b' && !end[2]) &&
      !(tolower((unsigned char)end[1]) == 'i' && end[2] == 'B' && !end[3]))
    return error_set(e, ERR_USAGE, "option %s=%s: unknown unit", key, s);
  if (shift && v > (UINT64_MAX >> shift))
    return error_set(e, ERR_USAGE, "option %s=%s: too large", key, s);
  *out = (uint64_t)v << shift;
  return 1;
}
