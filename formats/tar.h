/* tar.h - listing the members of a tar archive (POSIX ustar, pax extended
 * headers, GNU long names and base-256 sizes) without extracting it: each
 * member is a byte range of the archive file. Used by ova.c. */
#ifndef AMIPORT_TAR_H
#define AMIPORT_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct error;

struct tar_entry {
  char *name;   /* without a leading "./" */
  uint64_t off; /* where the member's bytes start in the archive */
  uint64_t size;
};

struct tar_list {
  struct tar_entry *v;
  size_t n;
};

#define TAR_BLOCK 512u
#define TAR_MAX_ENTRIES 100000u
#define TAR_MAX_NAME 4096u
#define TAR_MAX_PAX (1u << 20)

/* Whether a 512-byte block is a tar header with a valid checksum. */
bool tar_header_ok(const uint8_t *h);
/* A 12-byte number field: octal, or GNU base-256 when the top bit of the
 * first byte is set; false on garbage. */
bool tar_size(const uint8_t *field, uint64_t *out);
/* Reads a pax extended header's "path" and "size" records (at: the header's
 * offset, for messages). */
int tar_pax(const char *d, size_t n, char **pname, uint64_t *psize, bool *has_size,
            const char *path, uint64_t at, struct error *e);
/* Lists the regular files of the archive [0, file_size) of fd. */
int tar_list_read(int fd, uint64_t file_size, const char *path, struct tar_list *out,
                  struct error *e);
void tar_list_free(struct tar_list *l);

#endif
