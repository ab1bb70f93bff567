/* ova.c - Open Virtualization Archive reader: a tar holding an OVF
 * descriptor, the disks and optionally a manifest (.mf). Nothing is
 * extracted: the OVF is read from the tar, its disks are listed, and the
 * first disk (or the one --disk names) is opened in place as a VMDK that is
 * a byte range of the archive (vmdk_open_at). When the manifest lists the
 * OVF or the disk, their SHA-1 or SHA-256 digests are checked at open (the
 * disk's bytes are hashed once, streaming) and a mismatch is an error.
 * Spec: DMTF DSP0243 (OVF) 2.1, sections 5 (package, manifest) and 9.1
 * (References), 9.2 (DiskSection). */
#include "image.h"
#include "tar.h"
#include "vmdk.h"

#include <ctype.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define OVA_MAX_OVF (16u << 20)
#define OVA_MAX_MF (1u << 20)
#define OVA_MAX_DISKS 1024u

struct ova_file {
  char *id, *href, *compression, *chunk;
};

struct ova_disk {
  char *disk_id, *file_ref, *format, *capacity, *units;
  const struct tar_entry *member; /* NULL when the disk has no file in the archive */
};

struct ova {
  struct tar_list tar;
  char *ovf_name, *mf_name, *mf_algo;
  struct ova_disk *disks;
  size_t ndisks;
  unsigned chosen;        /* 1-based */
  bool disk_verified, ovf_verified;
  struct img *disk;       /* the opened disk, a VMDK inside the archive */
};

static int ova_probe(const uint8_t *head, size_t len)
{
  /* A tar whose first member (after any pax or long-name header) is an .ovf. */
  for (size_t off = 0; off + TAR_BLOCK <= len; ) {
    const uint8_t *h = head + off;
    if (!tar_header_ok(h) || memcmp(h + 257, "ustar", 5) != 0)
      return 0;
    char t = (char)h[156];
    if (t == 'x' || t == 'g' || t == 'L') {
      uint64_t size = 0;
      for (int i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; i++)
        size = size * 8 + (uint64_t)(h[i] - '0');
      if (t == 'L' && size <= TAR_BLOCK * 2 && off + TAR_BLOCK + size <= len) {
        const char *n = (const char *)h + TAR_BLOCK;
        size_t nl = strnlen(n, (size_t)size);
        return nl > 4 && strncasecmp(n + nl - 4, ".ovf", 4) == 0 ? 100 : 0;
      }
      off += TAR_BLOCK + (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
      continue;
    }
    size_t nl = strnlen((const char *)h, 100);
    return nl > 4 && strncasecmp((const char *)h + nl - 4, ".ovf", 4) == 0 ? 100 : 0;
  }
  return 0;
}

/* --- a minimal XML scan: start tags and their attributes ------------------- */

struct xtag {
  const char *name; /* local name (after any prefix) */
  size_t nlen;
  const char *attrs, *end; /* the attribute text */
};

/* Finds the next start tag at or after *pp; false at the end. */
static bool xml_next(const char **pp, const char *end, struct xtag *t)
{
  const char *p = *pp;
  while (p < end) {
    const char *lt = memchr(p, '<', (size_t)(end - p));
    if (!lt)
      break;
    p = lt + 1;
    const char *close = NULL;
    if (end - p >= 3 && memcmp(p, "!--", 3) == 0) {
      close = memmem(p + 3, (size_t)(end - p - 3), "-->", 3);
      p = close ? close + 3 : end;
      continue;
    }
    if (end - p >= 8 && memcmp(p, "![CDATA[", 8) == 0) {
      close = memmem(p + 8, (size_t)(end - p - 8), "]]>", 3);
      p = close ? close + 3 : end;
      continue;
    }
    if (p < end && (*p == '?' || *p == '!' || *p == '/')) {
      close = memchr(p, '>', (size_t)(end - p));
      p = close ? close + 1 : end;
      continue;
    }
    const char *n = p;
    while (p < end && !isspace((unsigned char)*p) && *p != '>' && *p != '/')
      p++;
    const char *colon = memchr(n, ':', (size_t)(p - n));
    t->name = colon ? colon + 1 : n;
    t->nlen = (size_t)(p - t->name);
    t->attrs = p;
    /* The tag ends at the first '>' outside quotes. */
    char q = 0;
    while (p < end && (q || *p != '>')) {
      if (q && *p == q)
        q = 0;
      else if (!q && (*p == '"' || *p == '\''))
        q = *p;
      p++;
    }
    t->end = p;
    *pp = p < end ? p + 1 : end;
    return true;
  }
  *pp = end;
  return false;
}

/* The value of the attribute whose local name is want, entities decoded;
 * NULL when absent (or out of memory, which then reads as absent). */
static char *xml_attr(const struct xtag *t, const char *want)
{
  size_t wl = strlen(want);
  const char *p = t->attrs;
  while (p < t->end) {
    while (p < t->end && (isspace((unsigned char)*p) || *p == '/'))
      p++;
    const char *n = p;
    while (p < t->end && *p != '=' && !isspace((unsigned char)*p))
      p++;
    const char *ne = p;
    while (p < t->end && isspace((unsigned char)*p))
      p++;
    if (p >= t->end || *p != '=')
      return NULL;
    p++;
    while (p < t->end && isspace((unsigned char)*p))
      p++;
    if (p >= t->end || (*p != '"' && *p != '\''))
      return NULL;
    char q = *p++;
    const char *v = p;
    while (p < t->end && *p != q)
      p++;
    const char *ve = p;
    if (p < t->end)
      p++;
    const char *colon = memchr(n, ':', (size_t)(ne - n));
    const char *ln = colon ? colon + 1 : n;
    if ((size_t)(ne - ln) != wl || memcmp(ln, want, wl) != 0)
      continue;
    char *out = malloc((size_t)(ve - v) + 1), *o = out;
    if (!out)
      return NULL;
    for (const char *s = v; s < ve;) {
      static const struct { const char *ent; char c; } ents[] = {
        { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
      };
      bool done = false;
      for (size_t i = 0; i < sizeof ents / sizeof ents[0] && *s == '&'; i++) {
        size_t el = strlen(ents[i].ent);
        if ((size_t)(ve - s) >= el && memcmp(s, ents[i].ent, el) == 0) {
          *o++ = ents[i].c;
          s += el;
          done = true;
          break;
        }
      }
      if (!done)
        *o++ = *s++;
    }
    *o = 0;
    return out;
  }
  return NULL;
}

/* --- the package ------------------------------------------------------------ */

static void ova_free(struct ova *a)
{
  if (!a)
    return;
  img_close(a->disk);
  for (size_t i = 0; i < a->ndisks; i++) {
    free(a->disks[i].disk_id);
    free(a->disks[i].file_ref);
    free(a->disks[i].format);
    free(a->disks[i].capacity);
    free(a->disks[i].units);
  }
  free(a->disks);
  free(a->ovf_name);
  free(a->mf_name);
  free(a->mf_algo);
  tar_list_free(&a->tar);
  free(a);
}

static bool ova_ends_with(const char *s, const char *suffix)
{
  size_t l = strlen(s), sl = strlen(suffix);
  return l > sl && strcasecmp(s + l - sl, suffix) == 0;
}

static const struct tar_entry *ova_member(const struct ova *a, const char *name)
{
  while (name[0] == '.' && name[1] == '/')
    name += 2;
  for (size_t i = 0; i < a->tar.n; i++)
    if (strcmp(a->tar.v[i].name, name) == 0)
      return &a->tar.v[i];
  return NULL;
}

static char *ova_read_member(struct img *im, const struct tar_entry *m, size_t cap,
                             struct error *e)
{
  if (m->size > cap) {
    error_set(e, ERR_FORMAT, "%s: '%s' is %llu bytes, over the %zu-byte limit", im->path, m->name,
              (unsigned long long)m->size, cap);
    return NULL;
  }
  char *t = malloc((size_t)m->size + 1);
  if (!t) {
    error_set(e, ERR_NOMEM, "out of memory");
    return NULL;
  }
  if (img_pread_file(im->fd, t, (size_t)m->size, m->off, im->path, e) < 0) {
    free(t);
    return NULL;
  }
  t[m->size] = 0;
  return t;
}

static void ova_free_files(struct ova_file *f, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(f[i].id);
    free(f[i].href);
    free(f[i].compression);
    free(f[i].chunk);
  }
  free(f);
}

/* Reads the References and DiskSection of the OVF and binds each disk to
 * the archive member its file names. */
static int ova_parse_ovf(struct img *im, struct ova *a, const char *ovf, size_t len,
                         struct error *e)
{
  struct ova_file *files = NULL;
  size_t nf = 0;
  int ret = -1;
  struct xtag t;
  for (const char *p = ovf, *end = ovf + len; xml_next(&p, end, &t);) {
    bool is_file = t.nlen == 4 && memcmp(t.name, "File", 4) == 0;
    bool is_disk = t.nlen == 4 && memcmp(t.name, "Disk", 4) == 0;
    if (!is_file && !is_disk)
      continue;
    if (nf + a->ndisks >= 2 * OVA_MAX_DISKS) {
      error_set(e, ERR_FORMAT, "%s: OVF lists more than %u files or disks", im->path,
                OVA_MAX_DISKS);
      goto out;
    }
    if (is_file) {
      struct ova_file *v = realloc(files, (nf + 1) * sizeof *v);
      if (!v)
        goto nomem;
      files = v;
      files[nf++] = (struct ova_file){ xml_attr(&t, "id"), xml_attr(&t, "href"),
                                       xml_attr(&t, "compression"), xml_attr(&t, "chunkSize") };
    } else {
      struct ova_disk *v = realloc(a->disks, (a->ndisks + 1) * sizeof *v);
      if (!v)
        goto nomem;
      a->disks = v;
      a->disks[a->ndisks++] = (struct ova_disk){
        xml_attr(&t, "diskId"), xml_attr(&t, "fileRef"), xml_attr(&t, "format"),
        xml_attr(&t, "capacity"), xml_attr(&t, "capacityAllocationUnits"), NULL };
    }
  }
  if (!a->ndisks) {
    error_set(e, ERR_FORMAT, "%s: OVF descriptor '%s' lists no disks (no DiskSection/Disk)",
              im->path, a->ovf_name);
    goto out;
  }
  for (size_t i = 0; i < a->ndisks; i++) {
    struct ova_disk *d = &a->disks[i];
    if (!d->file_ref)
      continue; /* an empty disk, created at import */
    struct ova_file *f = NULL;
    for (size_t j = 0; j < nf && !f; j++)
      if (files[j].id && strcmp(files[j].id, d->file_ref) == 0)
        f = &files[j];
    if (!f || !f->href) {
      error_set(e, ERR_FORMAT, "%s: OVF disk %zu ('%s') refers to file '%s', which References "
                "does not list", im->path, i + 1, d->disk_id ? d->disk_id : "?", d->file_ref);
      goto out;
    }
    if (f->compression && strcmp(f->compression, "identity") != 0) {
      error_set(e, ERR_UNSUPPORTED, "%s: OVF file '%s' is %s-compressed; not supported", im->path,
                f->href, f->compression);
      goto out;
    }
    if (f->chunk) {
      error_set(e, ERR_UNSUPPORTED, "%s: OVF file '%s' is split in chunks (chunkSize %s); not "
                "supported", im->path, f->href, f->chunk);
      goto out;
    }
    if (!(d->member = ova_member(a, f->href))) {
      error_set(e, ERR_FORMAT, "%s: OVF disk %zu refers to '%s', which is not in the archive",
                im->path, i + 1, f->href);
      goto out;
    }
  }
  ret = 0;
  goto out;
nomem:
  error_set(e, ERR_NOMEM, "out of memory");
out:
  ova_free_files(files, nf);
  return ret;
}

/* Hashes [off, off+len) of the archive with algo into hex. */
static int ova_digest(struct img *im, const char *algo, const char *what, uint64_t off,
                      uint64_t len, char hex[2 * EVP_MAX_MD_SIZE + 1], struct error *e)
{
  const EVP_MD *md = strcasecmp(algo, "SHA1") == 0 ? EVP_sha1()
                     : strcasecmp(algo, "SHA256") == 0 ? EVP_sha256()
                     : strcasecmp(algo, "SHA512") == 0 ? EVP_sha512() : NULL;
  if (!md)
    return error_set(e, ERR_UNSUPPORTED, "%s: manifest digest %s for '%s' is not supported "
                     "(SHA1, SHA256, SHA512 are)", im->path, algo, what);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  size_t bufsz = 1u << 20;
  uint8_t *buf = malloc(bufsz);
  int ret = -1;
  if (!ctx || !buf || !EVP_DigestInit_ex(ctx, md, NULL)) {
    error_set(e, ERR_NOMEM, "out of memory for a digest");
    goto out;
  }
  while (len) {
    size_t n = len < bufsz ? (size_t)len : bufsz;
    if (img_pread_file(im->fd, buf, n, off, im->path, e) < 0)
      goto out;
    EVP_DigestUpdate(ctx, buf, n);
    off += n;
    len -= n;
  }
  uint8_t d[EVP_MAX_MD_SIZE];
  unsigned dl = 0;
  EVP_DigestFinal_ex(ctx, d, &dl);
  for (unsigned i = 0; i < dl; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  hex[2 * dl] = 0;
  ret = 0;
out:
  EVP_MD_CTX_free(ctx);
  free(buf);
  return ret;
}

/* Checks every manifest line naming the OVF or the chosen disk's file:
 * "SHA256(name)= hex". Sets *checked_ovf / *checked_disk. */
static int ova_verify(struct img *im, struct ova *a, const char *mf, const struct tar_entry *ovf,
                      const struct tar_entry *disk, struct error *e)
{
  for (const char *p = mf; *p;) {
    const char *eol = strchr(p, '\n');
    const char *le = eol ? eol : p + strlen(p);
    const char *open = memchr(p, '(', (size_t)(le - p));
    const char *close = open ? memchr(open, ')', (size_t)(le - open)) : NULL;
    const char *eq = close ? memchr(close, '=', (size_t)(le - close)) : NULL;
    if (eq) {
      char algo[16], name[TAR_MAX_NAME + 1], want[2 * EVP_MAX_MD_SIZE + 1], got[2 * EVP_MAX_MD_SIZE + 1];
      size_t al = (size_t)(open - p), nl = (size_t)(close - open - 1);
      while (al && isspace((unsigned char)p[al - 1]))
        al--;
      const char *h = eq + 1;
      while (h < le && isspace((unsigned char)*h))
        h++;
      size_t hl = 0;
      while (h + hl < le && isxdigit((unsigned char)h[hl]))
        hl++;
      if (al && al < sizeof algo && nl <= TAR_MAX_NAME && hl && hl < sizeof want) {
        memcpy(algo, p, al);
        algo[al] = 0;
        memcpy(name, open + 1, nl);
        name[nl] = 0;
        for (size_t i = 0; i < hl; i++)
          want[i] = (char)tolower((unsigned char)h[i]);
        want[hl] = 0;
        const struct tar_entry *m = ova_member(a, name);
        if (m && (m == ovf || m == disk)) {
          if (ova_digest(im, algo, name, m->off, m->size, got, e) < 0)
            return -1;
          if (strcmp(got, want) != 0)
            return error_set(e, ERR_FORMAT, "%s: manifest '%s' gives %s %s for '%s', but its "
                             "content hashes to %s (corrupt or altered)", im->path, a->mf_name,
                             algo, want, name, got);
          if (m == ovf)
            a->ovf_verified = true;
          if (m == disk)
            a->disk_verified = true;
          free(a->mf_algo);
          a->mf_algo = strdup(algo);
        }
      }
    }
    p = eol ? eol + 1 : le;
  }
  return 0;
}

static int ova_open(struct img *im, const struct open_opts *o, struct error *e)
{
  struct stat st;
  if (fstat(im->fd, &st) < 0)
    return error_errno(e, "%s: stat", im->path);
  struct ova *a = calloc(1, sizeof *a);
  if (!a)
    return error_set(e, ERR_NOMEM, "out of memory");
  im->priv = a;
  char *ovf = NULL, *mf = NULL, *dpath = NULL;
  int ret = -1;
  if (tar_list_read(im->fd, (uint64_t)st.st_size, im->path, &a->tar, e) < 0)
    goto out;
  const struct tar_entry *ovf_m = NULL, *mf_m = NULL;
  for (size_t i = 0; i < a->tar.n && !ovf_m; i++)
    if (ova_ends_with(a->tar.v[i].name, ".ovf"))
      ovf_m = &a->tar.v[i];
  if (!ovf_m) {
    error_set(e, ERR_FORMAT, "%s: archive holds no .ovf descriptor (not an OVA)", im->path);
    goto out;
  }
  if (!(a->ovf_name = strdup(ovf_m->name)))
    goto nomem;
  /* The manifest: NAME.mf beside NAME.ovf, or else the only .mf. */
  size_t stem = strlen(ovf_m->name) - 4;
  for (size_t i = 0; i < a->tar.n; i++) {
    const char *n = a->tar.v[i].name;
    if (strlen(n) == stem + 3 && strncmp(n, ovf_m->name, stem) == 0 && ova_ends_with(n, ".mf"))
      mf_m = &a->tar.v[i];
  }
  for (size_t i = 0; i < a->tar.n && !mf_m; i++)
    if (ova_ends_with(a->tar.v[i].name, ".mf"))
      mf_m = &a->tar.v[i];
  if (!(ovf = ova_read_member(im, ovf_m, OVA_MAX_OVF, e)))
    goto out;
  if (strlen(ovf) != ovf_m->size) {
    error_set(e, ERR_FORMAT, "%s: OVF descriptor '%s' is not text (NUL byte at offset %zu)",
              im->path, ovf_m->name, strlen(ovf));
    goto out;
  }
  if (ova_parse_ovf(im, a, ovf, (size_t)ovf_m->size, e) < 0)
    goto out;
  a->chosen = o->disk_index ? o->disk_index : 1;
  if (a->chosen > a->ndisks) {
    error_set(e, ERR_USAGE, "%s: the OVF lists %zu disk%s; there is no disk %u", im->path,
              a->ndisks, a->ndisks == 1 ? "" : "s", a->chosen);
    goto out;
  }
  const struct ova_disk *d = &a->disks[a->chosen - 1];
  if (!d->member) {
    error_set(e, ERR_UNSUPPORTED, "%s: OVF disk %u ('%s') has no file in the archive (an empty "
              "disk)", im->path, a->chosen, d->disk_id ? d->disk_id : "?");
    goto out;
  }
  if (mf_m) {
    if (!(a->mf_name = strdup(mf_m->name)))
      goto nomem;
    if (!(mf = ova_read_member(im, mf_m, OVA_MAX_MF, e)))
      goto out;
    if (ova_verify(im, a, mf, ovf_m, d->member, e) < 0)
      goto out;
    if (!a->disk_verified && !o->quiet)
      fprintf(stderr, "amiport: warning: %s: manifest '%s' has no digest for '%s'\n", im->path,
              a->mf_name, d->member->name);
  }
  /* The disk: a VMDK that is a byte range of the archive. */
  size_t pl = strlen(im->path) + strlen(d->member->name) + 2;
  struct img *child = calloc(1, sizeof *child);
  if (!child || !(dpath = malloc(pl))) {
    free(child);
    goto nomem;
  }
  snprintf(dpath, pl, "%s/%s", im->path, d->member->name);
  child->fmt = &format_vmdk;
  child->fd = -1; /* the archive's descriptor stays ours */
  child->path = dpath;
  dpath = NULL;
  a->disk = child;
  if (vmdk_open_at(child, im->fd, d->member->off, d->member->size, true, o, e) < 0)
    goto out;
  im->size = child->size;
  im->block_size = child->block_size;
  ret = 0;
  goto out;
nomem:
  error_set(e, ERR_NOMEM, "out of memory");
out:
  free(ovf);
  free(mf);
  free(dpath);
  return ret;
}

static int ova_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e)
{
  struct ova *a = im->priv;
  return a->disk->fmt->pread(a->disk, buf, len, off, e);
}

static int ova_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                       struct error *e)
{
  struct ova *a = im->priv;
  return a->disk->fmt->extents(a->disk, off, len, out, e);
}

static int ova_describe(struct img *im, struct json_object *obj, struct error *e)
{
  struct ova *a = im->priv;
  struct json_object *fs = json_object_new_object(), *inner = json_object_new_object(), *v;
  json_object_object_add(fs, "ovf", json_object_new_string(a->ovf_name));
  if (a->mf_name) {
    json_object_object_add(fs, "manifest", json_object_new_string(a->mf_name));
    json_object_object_add(fs, "manifest-algorithm",
                           json_object_new_string(a->mf_algo ? a->mf_algo : "none"));
    json_object_object_add(fs, "ovf-verified", json_object_new_boolean(a->ovf_verified));
    json_object_object_add(fs, "disk-verified", json_object_new_boolean(a->disk_verified));
  }
  json_object_object_add(fs, "disk", json_object_new_int((int)a->chosen));
  struct json_object *ds = json_object_new_array();
  for (size_t i = 0; i < a->ndisks; i++) {
    const struct ova_disk *d = &a->disks[i];
    struct json_object *j = json_object_new_object();
    json_object_object_add(j, "index", json_object_new_int((int)i + 1));
    if (d->disk_id)
      json_object_object_add(j, "disk-id", json_object_new_string(d->disk_id));
    if (d->member) {
      json_object_object_add(j, "file", json_object_new_string(d->member->name));
      json_object_object_add(j, "file-size", json_object_new_int64((int64_t)d->member->size));
    }
    if (d->capacity) {
      char *end;
      unsigned long long c = strtoull(d->capacity, &end, 10);
      unsigned shift = 0;
      const char *u = d->units;
      if (u) { /* "byte", "byte * 2^30" */
        const char *caret = strchr(u, '^');
        if (caret)
          shift = (unsigned)strtoul(caret + 1, NULL, 10);
      }
      if (!*end && shift < 64 && (shift == 0 || c <= (UINT64_MAX >> shift)))
        json_object_object_add(j, "capacity", json_object_new_int64((int64_t)(c << shift)));
    }
    if (d->format)
      json_object_object_add(j, "format", json_object_new_string(d->format));
    json_object_array_add(ds, j);
  }
  json_object_object_add(fs, "disks", ds);
  if (a->disk->fmt->describe && a->disk->fmt->describe(a->disk, inner, e) < 0) {
    json_object_put(inner);
    json_object_put(fs);
    return -1;
  }
  if (json_object_object_get_ex(inner, "format-specific", &v))
    json_object_object_add(fs, "vmdk", json_object_get(v));
  if (json_object_object_get_ex(inner, "cluster-size", &v))
    json_object_object_add(obj, "cluster-size", json_object_get(v));
  json_object_put(inner);
  json_object_object_add(obj, "format-specific", fs);
  return 0;
}

static void ova_close(struct img *im)
{
  ova_free(im->priv);
  im->priv = NULL;
}

const struct image_format format_ova = {
  .name = "ova",
  .description = "Open Virtualization Archive (OVF + VMDK disks in a tar)",
  .probe = ova_probe,
  .open = ova_open,
  .pread = ova_pread,
  .extents = ova_extents,
  .describe = ova_describe,
  .close = ova_close,
};

unsigned img_ova_disks(const struct img *im)
{
  return im->fmt == &format_ova ? (unsigned)((const struct ova *)im->priv)->ndisks : 0;
}

unsigned img_ova_disk(const struct img *im)
{
  return im->fmt == &format_ova ? ((const struct ova *)im->priv)->chosen : 0;
}
