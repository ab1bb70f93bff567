/* tar.c - lists a tar archive's regular files as byte ranges of the archive.
 * Understands POSIX ustar headers (with the 155-byte name prefix), pax
 * extended headers ('x': path and size), GNU long names ('L') and GNU
 * base-256 sizes; skips directories, links and global headers. Every header
 * checksum is verified and every size bounded by the archive's length.
 * Spec: POSIX.1-2008 pax, "ustar Interchange Format" and "pax Header Block". */
#include "tar.h"
#include "image.h"

#include <stdlib.h>
#include <string.h>

enum {
  TH_NAME = 0, TH_SIZE = 124, TH_CHKSUM = 148, TH_TYPE = 156, TH_MAGIC = 257, TH_PREFIX = 345,
};

/* Parses an octal field (NUL or space terminated); false on garbage. */
static bool tar_octal(const uint8_t *p, size_t n, uint64_t *out)
{
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && p[i] == ' ')
    i++;
  bool any = false;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
    if (v >> 61)
      return false;
    v = v * 8 + (uint64_t)(p[i] - '0');
    any = true;
  }
  for (; i < n; i++)
    if (p[i] != ' ' && p[i] != 0)
      return false;
  *out = v;
  return any || n == 0 || p[0] == 0 || p[0] == ' ';
}

bool tar_size(const uint8_t *p, uint64_t *out)
{
  if (p[0] & 0x80) {
    if (p[0] != 0x80)
      return false; /* negative, or more than 88 bits */
    uint64_t v = 0;
    for (int i = 1; i < 12; i++) {
      if (v >> 56)
        return false;
      v = v << 8 | p[i];
    }
    *out = v;
    return true;
  }
  return tar_octal(p, 12, out);
}

bool tar_header_ok(const uint8_t *h)
{
  uint64_t want;
  if (!tar_octal(h + TH_CHKSUM, 8, &want))
    return false;
  uint64_t su = 0;
  int64_t ss = 0;
  for (unsigned i = 0; i < TAR_BLOCK; i++) {
    uint8_t c = i >= TH_CHKSUM && i < TH_CHKSUM + 8 ? ' ' : h[i];
    su += c;
    ss += (int8_t)c;
  }
  return want == su || (int64_t)want == ss;
}

static int tar_add(struct tar_list *l, const char *name, size_t nlen, uint64_t off, uint64_t size,
                   size_t *cap, const char *path, struct error *e)
{
  while (nlen >= 2 && name[0] == '.' && name[1] == '/') {
    name += 2;
    nlen -= 2;
  }
  if (l->n >= TAR_MAX_ENTRIES)
    return error_set(e, ERR_FORMAT, "%s: tar archive has more than %u members", path,
                     TAR_MAX_ENTRIES);
  if (l->n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    struct tar_entry *v = realloc(l->v, c * sizeof *v);
    if (!v)
      return error_set(e, ERR_NOMEM, "out of memory");
    l->v = v;
    *cap = c;
  }
  char *s = strndup(name, nlen);
  if (!s)
    return error_set(e, ERR_NOMEM, "out of memory");
  l->v[l->n++] = (struct tar_entry){ s, off, size };
  return 0;
}

int tar_pax(const char *d, size_t n, char **pname, uint64_t *psize, bool *has_size,
                   const char *path, uint64_t at, struct error *e)
{
  size_t i = 0;
  while (i < n) {
    size_t len = 0, j = i;
    while (j < n && d[j] >= '0' && d[j] <= '9' && len < n)
      len = len * 10 + (size_t)(d[j++] - '0');
    if (j >= n || d[j] != ' ' || len <= j - i || len > n - i || d[i + len - 1] != '\n')
      return error_set(e, ERR_FORMAT, "%s: malformed pax extended header record at offset %llu",
                       path, (unsigned long long)(at + i));
    const char *k = d + j + 1, *rend = d + i + len - 1;
    const char *eq = memchr(k, '=', (size_t)(rend - k));
    if (eq) {
      size_t kl = (size_t)(eq - k), vl = (size_t)(rend - eq - 1);
      if (kl == 4 && memcmp(k, "path", 4) == 0) {
        if (vl > TAR_MAX_NAME)
          return error_set(e, ERR_FORMAT, "%s: pax path longer than %u bytes", path, TAR_MAX_NAME);
        free(*pname);
        if (!(*pname = strndup(eq + 1, vl)))
          return error_set(e, ERR_NOMEM, "out of memory");
      } else if (kl == 4 && memcmp(k, "size", 4) == 0) {
        uint64_t v = 0;
        for (size_t q = 1; q <= vl; q++) {
          char c = eq[q];
          if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10)
            return error_set(e, ERR_FORMAT, "%s: pax size record '%.*s' is not a number", path,
                             (int)(vl < 32 ? vl : 32), eq + 1);
          v = v * 10 + (uint64_t)(c - '0');
        }
        *psize = v;
        *has_size = true;
      }
    }
    i += len;
  }
  return 0;
}

int tar_list_read(int fd, uint64_t file_size, const char *path, struct tar_list *out,
                  struct error *e)
{
  uint8_t h[TAR_BLOCK];
  uint64_t off = 0;
  size_t cap = 0;
  char *next_name = NULL, *extra = NULL;
  uint64_t next_size = 0;
  bool has_next_size = false;
  int ret = -1;
  memset(out, 0, sizeof *out);
  for (;;) {
    if (file_size - off < TAR_BLOCK) {
      if (off == file_size && out->n)
        break; /* no end-of-archive blocks: tolerated */
      error_set(e, ERR_FORMAT, "%s: tar archive is truncated at offset %llu", path,
                (unsigned long long)off);
      goto out;
    }
    if (img_pread_file(fd, h, TAR_BLOCK, off, path, e) < 0)
      goto out;
    if (buf_is_zero(h, TAR_BLOCK))
      break;
    if (!tar_header_ok(h)) {
      error_set(e, ERR_FORMAT, "%s: tar header at offset %llu has a bad checksum (not a tar "
                "archive, or corrupt)", path, (unsigned long long)off);
      goto out;
    }
    uint64_t size;
    if (!tar_size(h + TH_SIZE, &size)) {
      error_set(e, ERR_FORMAT, "%s: tar header at offset %llu has an unreadable size field", path,
                (unsigned long long)off);
      goto out;
    }
    char type = (char)h[TH_TYPE];
    if (has_next_size && (type == '0' || type == 0 || type == '7'))
      size = next_size;
    uint64_t data = off + TAR_BLOCK;
    if (size > file_size - data) {
      error_set(e, ERR_FORMAT, "%s: tar member at offset %llu claims %llu bytes, past the end of "
                "the archive (size %llu)", path, (unsigned long long)off,
                (unsigned long long)size, (unsigned long long)file_size);
      goto out;
    }
    if (type == 'x' || type == 'L') {
      if (size > (type == 'L' ? TAR_MAX_NAME : TAR_MAX_PAX)) {
        error_set(e, ERR_FORMAT, "%s: tar %s header at offset %llu is %llu bytes, too large",
                  path, type == 'L' ? "long-name" : "pax", (unsigned long long)off,
                  (unsigned long long)size);
        goto out;
      }
      free(extra);
      if (!(extra = malloc((size_t)size + 1))) {
        error_set(e, ERR_NOMEM, "out of memory");
        goto out;
      }
      if (img_pread_file(fd, extra, (size_t)size, data, path, e) < 0)
        goto out;
      extra[size] = 0;
      if (type == 'L') {
        free(next_name);
        if (!(next_name = strndup(extra, (size_t)size))) {
          error_set(e, ERR_NOMEM, "out of memory");
          goto out;
        }
      } else if (tar_pax(extra, (size_t)size, &next_name, &next_size, &has_next_size, path, data,
                         e) < 0) {
        goto out;
      }
    } else if (type == '0' || type == 0 || type == '7') {
      char name[TAR_BLOCK];
      size_t nl = strnlen((const char *)h + TH_NAME, 100);
      size_t pl = memcmp(h + TH_MAGIC, "ustar", 5) == 0 && h[TH_MAGIC + 5] == 0
                      ? strnlen((const char *)h + TH_PREFIX, 155) : 0;
      const char *nm = name;
      if (next_name) {
        nm = next_name;
        nl = strlen(next_name);
      } else if (pl) {
        memcpy(name, h + TH_PREFIX, pl);
        name[pl] = '/';
        memcpy(name + pl + 1, h + TH_NAME, nl);
        nl += pl + 1;
      } else {
        memcpy(name, h + TH_NAME, nl);
      }
      if (tar_add(out, nm, nl, data, size, &cap, path, e) < 0)
        goto out;
      free(next_name);
      next_name = NULL;
      has_next_size = false;
    } else if (type != 'g') { /* directories, links, devices: nothing to read */
      free(next_name);
      next_name = NULL;
      has_next_size = false;
    }
    uint64_t skip = (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
    if (skip > file_size - data) { /* the last member's padding may be missing */
      off = file_size;
      if (out->n)
        break;
    } else {
      off = data + skip;
    }
  }
  if (!out->n) {
    error_set(e, ERR_FORMAT, "%s: tar archive holds no files", path);
    goto out;
  }
  ret = 0;
out:
  free(next_name);
  free(extra);
  if (ret < 0)
    tar_list_free(out);
  return ret;
}

void tar_list_free(struct tar_list *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i].name);
  free(l->v);
  memset(l, 0, sizeof *l);
}
