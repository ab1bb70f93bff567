/* copy.h - the copy engine: moves an image's data to a writer, skipping what
 * the map says is absent, reading in parallel, in bounded memory. */
#ifndef AMIPORT_COPY_H
#define AMIPORT_COPY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "image.h"

struct copy_opts {
  unsigned threads;  /* workers; 0 = one per core (at least 2) */
  bool progress;     /* draw a progress bar on stderr */
  bool write_zeros;  /* hand zero blocks to the writer too (default: skip) */
  bool verify;       /* copy_to_file: read the result back and compare it */
  const volatile sig_atomic_t *cancel; /* set by a signal handler to stop */
  /* called (from any worker) once a unit of the source is wholly written */
  void (*unit_done)(void *ctx, uint64_t off, uint64_t len);
  void *unit_ctx;
};

struct copy_stats {
  uint64_t bytes_mapped;  /* data bytes the source map names */
  uint64_t bytes_read;
  uint64_t bytes_written; /* handed to the writer */
  double seconds;
};

/* Copies every byte of src to dst (same virtual size), then dst->finish. */
int copy_image(struct img *src, struct img *dst, const struct copy_opts *o,
               struct copy_stats *st, struct error *e);

/* Compares every byte of a and b; reads only where either map has data. b
 * may be larger (formats that round the size up) if the rest reads as zeros. */
int copy_verify(struct img *a, struct img *b, struct error *e);

/* Creates dst_path as fmt from src through a temporary name in the same
 * directory, renamed only when the copy and finish succeeded; an existing
 * dst_path is refused unless force. On failure nothing is left behind. */
int copy_to_file(struct img *src, const char *dst_path, const char *fmt,
                 struct create_opts *co, bool force, const struct copy_opts *o,
                 struct copy_stats *st, struct error *e);

#endif
