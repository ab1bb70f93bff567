/* fuzz_bundle.c - libFuzzer harness for what unbundle parses. First byte
 * even: the rest is a manifest (an in-memory file) for manifest_read. Odd:
 * the rest is a decoded tar stream, fed to the streaming tar reader in
 * pieces whose sizes the first byte picks; every byte it hands on must lie
 * inside the member's size, in increasing order. */
#include "bundle_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
  uint64_t size, next;
  bool member;
};

static int on_member(void *ctx, const char *name, uint64_t size, struct error *e)
{
  struct seen *s = ctx;
  (void)e;
  if (!name || s->member)
    abort();
  s->member = true;
  s->size = size;
  return 0;
}

static int on_data(void *ctx, uint64_t off, const uint8_t *buf, size_t len, struct error *e)
{
  struct seen *s = ctx;
  (void)buf, (void)e;
  if (!s->member || off < s->next || len > s->size || off > s->size - len)
    abort();
  s->next = off + len;
  return 0;
}

static void fuzz_manifest(const uint8_t *data, size_t size)
{
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    if ((fd = memfd_create("manifest", MFD_CLOEXEC)) < 0)
      abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
    abort();
  struct manifest m;
  struct error e = { 0 };
  if (manifest_read(path, &m, &e) == 0) {
    if (!m.signed_text || m.nparts == 0 || strlen(m.digest) != 40)
      abort();
    manifest_free(&m);
  }
}

static void fuzz_tar(unsigned piece, const uint8_t *data, size_t size)
{
  struct seen s = { 0 };
  struct tar_reader r = { .path = "fuzz", .member = on_member, .data = on_data, .ctx = &s };
  struct error e = { 0 };
  size_t step = 1 + piece * 37;
  int ret = 0;
  for (size_t at = 0; at < size && ret == 0; at += step)
    ret = tar_reader_feed(&r, data + at, size - at < step ? size - at : step, &e);
  if (ret == 0)
    tar_reader_end(&r, &e);
  tar_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  if (data[0] % 2 == 0)
    fuzz_manifest(data + 1, size - 1);
  else
    fuzz_tar(data[0] >> 1, data + 1, size - 1);
  return 0;
}
