/* bundle_int.h - what the files of convert/bundle share among themselves. */
#ifndef AMIPORT_BUNDLE_INT_H
#define AMIPORT_BUNDLE_INT_H

#include "bundle.h"

enum piece_kind { PIECE_MEM, PIECE_IMAGE, PIECE_ZERO };

struct piece {
  uint64_t pos, len;    /* where it lies in the tar stream */
  enum piece_kind kind;
  uint64_t arg;         /* PIECE_IMAGE: the image offset; PIECE_MEM: unused */
};

/* The tar stream of one image (tar_write.c). */
struct tar_stream {
  struct img *src;
  uint8_t *hdr;         /* the header blocks */
  size_t hdr_len;
  struct piece *pieces;
  size_t npieces, cap;
  uint64_t len;         /* the whole stream, end-of-archive records included */
  uint64_t data;        /* image bytes stored */
};

int tar_stream_build(struct tar_stream *t, struct img *src, const char *name, uint64_t mtime,
                     struct error *e);
/* Fills buf with stream bytes [pos, pos+len); safe from several threads. */
int tar_stream_read(const struct tar_stream *t, uint8_t *buf, uint64_t pos, size_t len,
                    struct error *e);
void tar_stream_free(struct tar_stream *t);

/* A tar stream read as it arrives (tar_read.c). */
enum tar_reader_state { TR_HEADER, TR_EXT, TR_SPARSE_EXT, TR_DATA, TR_SKIP, TR_END };

struct tar_reader {
  const char *path;    /* named in messages */
  /* the member's name and size, before its data; then its bytes by image offset */
  int (*member)(void *ctx, const char *name, uint64_t size, struct error *e);
  int (*data)(void *ctx, uint64_t off, const uint8_t *buf, size_t len, struct error *e);
  void *ctx;
  enum tar_reader_state state;
  uint64_t pos;        /* stream bytes consumed */
  uint8_t blk[512];
  size_t have;
  char *ext;           /* a long name or pax header being read */
  char ext_type;
  size_t ext_len, ext_have;
  char *name;
  uint64_t next_size;
  bool has_next_size, seen_member;
  uint64_t realsize, stored, left, skip;
  struct extent *map;
  size_t nmap, capmap, seg;
  uint64_t seg_off;
};

int tar_reader_feed(struct tar_reader *r, const uint8_t *buf, size_t len, struct error *e);
/* After the last byte: the member was there and complete. */
int tar_reader_end(struct tar_reader *r, struct error *e);
void tar_reader_free(struct tar_reader *r);

#endif
