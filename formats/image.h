/* image.h - the block layer: every disk image is a sparse array of bytes with
 * a map of where the data is.
 *
 * One struct image_format per file in formats/ (designated initializers);
 * registry.c opens an image by name or by probing its first bytes. Readers
 * answer pread (thread-safe: several threads may call it at once) and extents
 * (the map). Writers are created empty, take pwrite of whole blocks
 * (img->block_size aligned, except the last block of the disk) each at most
 * once, and finish() writes tables and footers. Nothing here knows about AWS
 * or guests. */
#ifndef AMIPORT_IMAGE_H
#define AMIPORT_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct json_object;

enum extent_kind {
  EXTENT_DATA, /* bytes stored in the image */
  EXTENT_ZERO, /* written as zeros (zero cluster, zero grain) */
  EXTENT_HOLE, /* never written (unallocated cluster, sparse-file hole) */
};

struct extent {
  uint64_t off, len;
  enum extent_kind kind;
};

struct extent_list {
  struct extent *v;
  size_t n, cap;
};

/* Appends [off, off+len) of kind, merging with the last extent when it is
 * adjacent and of the same kind. */
int extent_list_add(struct extent_list *l, uint64_t off, uint64_t len,
                    enum extent_kind kind, struct error *e);
void extent_list_free(struct extent_list *l);
const char *extent_kind_name(enum extent_kind k);

/* The chain of images above the one being opened, to refuse backing loops. */
struct open_chain {
  const char *path; /* realpath of an image above */
  const struct open_chain *up;
};

#define IMG_DEFAULT_TABLE_CAP (256ull << 20) /* metadata a parser may hold */
#define IMG_MAX_BACKING_DEPTH 16

struct open_opts {
  bool allow_backing;       /* follow backing files the image names */
  bool quiet;               /* no warnings on stderr (fuzzing, tests) */
  bool allow_extent_paths;  /* open VMDK extents outside the descriptor's directory */
  unsigned disk_index;      /* OVA: which disk to open, 1-based; 0 = the first */
  uint64_t max_table_bytes; /* cap on tables a parser allocates; 0 = default */
  const struct open_chain *chain; /* set by the registry for backing files */
};

/* -o key=value[,key=value...] options of a writer. Every option must be
 * consumed by the format (create_opts_get), or img_create refuses it. */
struct create_opt {
  char *key, *val;
  bool used;
};
struct create_opts {
  struct create_opt *v;
  size_t n;
  bool compress;     /* -c */
  bool durable;      /* flush to stable storage at the writer's ordering points */
  bool stream;       /* written once, not read back soon: raw writes around the page
                      * cache (O_DIRECT), or writes back and drops what it cannot */
};
int create_opts_parse(struct create_opts *o, const char *text, struct error *e);
void create_opts_free(struct create_opts *o);
const char *create_opts_get(struct create_opts *o, const char *key);
/* Reads a size such as 65536, 64k, 2M into *out; 0 when absent, -1 on error. */
int create_opts_get_size(struct create_opts *o, const char *key, uint64_t *out,
                         struct error *e);

struct img;

enum image_format_flags {
  FMT_ORDERED_WRITES = 1 << 0, /* pwrite must come in increasing offset order */
  FMT_NO_PROBE = 1 << 1,       /* opened only by explicit name */
  FMT_SEQUENTIAL = 1 << 2,     /* a stream: pread must come in increasing offset order,
                                  one at a time, and verify ends the reading */
};

struct image_format {
  const char *name;
  const char *alias; /* another name -f/-O accept (vhd for vpc) */
  const char *description;
  unsigned flags;
  const char *create_help; /* the -o options, one per line */
  /* 0..100: how sure the first bytes are this format; raw answers 1. */
  int (*probe)(const uint8_t *head, size_t len);
  /* Optional second bid on the last 512 bytes (a fixed VHD's footer). */
  int (*probe_tail)(const uint8_t *tail, size_t len);
  int (*open)(struct img *im, const struct open_opts *o, struct error *e);
  int (*pread)(struct img *im, void *buf, size_t len, uint64_t off, struct error *e);
  int (*extents)(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                 struct error *e);
  /* Sequential sources: after the last read, reads what is left and checks
   * the whole arrived intact (a bundle's SHA-1). A copy from such a source
   * is complete only when this succeeds. */
  int (*verify)(struct img *im, struct error *e);
  /* Adds format-specific fields to the info object (optional). */
  int (*describe)(struct img *im, struct json_object *obj, struct error *e);
  int (*create)(struct img *im, uint64_t size, struct create_opts *o, struct error *e);
  int (*pwrite)(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
  /* Streaming writers (FMT_ORDERED_WRITES) may split a write in two, so the
   * costly part runs on every core: encode (any thread, in parallel; e.g.
   * compress a grain) returns a malloc'd blob, then commit takes the blobs
   * in increasing offset order (the copy engine frees them). Without encode,
   * pwrite is called in order. */
  void *(*encode)(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
  int (*commit)(struct img *im, void *encoded, struct error *e);
  int (*finish)(struct img *im, struct error *e);
  void (*close)(struct img *im);
};

struct img {
  const struct image_format *fmt;
  char *path;          /* as the user named it */
  int fd;              /* the image file, -1 when not file-backed */
  uint64_t size;       /* virtual size in bytes */
  uint32_t block_size; /* writers: pwrite granularity (power of two) */
  bool writable;
  bool guessed;        /* format was probed as raw for lack of anything better */
  bool durable;        /* writers: img_sync really flushes (create_opts.durable) */
  bool stream;         /* writers: create_opts.stream */
  void *priv;          /* the format's state */
};

/* registry.c */
const struct image_format *img_format_by_name(const char *name);
const struct image_format *const *img_formats(void); /* NULL-terminated */
/* Opens path; fmt NULL probes. */
struct img *img_open(const char *path, const char *fmt, const struct open_opts *o,
                     struct error *e);
/* The same on an open file descriptor, which the image owns from then on
 * (closed on failure too); path only names it in messages. */
struct img *img_open_fd(int fd, const char *path, const char *fmt, const struct open_opts *o,
                        struct error *e);
/* Creates path (O_EXCL) as a new image of fmt. */
struct img *img_create(const char *path, const char *fmt, uint64_t size,
                       struct create_opts *o, struct error *e);
void img_close(struct img *im);
/* Bounds-checked wrappers around the vtable. */
int img_pread(struct img *im, void *buf, size_t len, uint64_t off, struct error *e);
int img_extents(struct img *im, uint64_t off, uint64_t len, struct extent_list *out,
                struct error *e);
/* fmt->verify when the format has one, else 0. */
int img_verify_source(struct img *im, struct error *e);
static inline bool img_sequential(const struct img *im)
{
  return im->fmt->flags & FMT_SEQUENTIAL;
}
/* Calls cb for each run of the whole image's map, in order, runs that
 * continue across the windows it asks for merged; the map is asked for a
 * GiB at a time, so memory stays small whatever the size. cb returns 0 to
 * go on, anything else to stop (its value is returned). */
#define IMG_MAP_WINDOW (1ull << 30)
typedef int (*img_extent_cb)(void *ctx, const struct extent *x, struct error *e);
int img_map_walk(struct img *im, img_extent_cb cb, void *ctx, struct error *e);
/* File size on disk (allocated bytes), -1 if unknown. */
int64_t img_actual_size(struct img *im);

/* Helpers shared by format implementations. */
int img_pread_file(int fd, void *buf, size_t len, uint64_t off, const char *path,
                   struct error *e); /* full read; short read is an ERR_FORMAT */
int img_pwrite_file(int fd, const void *buf, size_t len, uint64_t off, const char *path,
                    struct error *e);
/* Writers call this where the image must be on stable storage before they
 * go on (data before the header that points at it, all before finish): an
 * fsync when the image was created durable, else nothing, as qemu-img does
 * by default. Returns -1 with errno set. */
int img_sync(struct img *im);
/* img_pwrite_file, skipping 4 KiB stretches of zeros: for space known to
 * read as zeros already (just appended to the file), which stays sparse. */
int img_pwrite_sparse(int fd, const void *buf, size_t len, uint64_t off, const char *path,
                      struct error *e);
bool buf_is_zero(const void *buf, size_t len);

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put_be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v) { put_be32(p, (uint32_t)(v >> 32)); put_be32(p + 4, (uint32_t)v); }
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le32(const uint8_t *p)
{
  return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put_le32(uint8_t *p, uint32_t v) { put_le16(p, (uint16_t)v); put_le16(p + 2, (uint16_t)(v >> 16)); }
static inline void put_le64(uint8_t *p, uint64_t v) { put_le32(p, (uint32_t)v); put_le32(p + 4, (uint32_t)(v >> 32)); }

extern const struct image_format format_raw;
extern const struct image_format format_qcow2;
extern const struct image_format format_vmdk;
extern const struct image_format format_ova;
/* An OVA: how many disks its OVF lists, and which one im reads (1-based);
 * 0 for any other image. */
unsigned img_ova_disks(const struct img *im);
unsigned img_ova_disk(const struct img *im);
extern const struct image_format format_vhd;
extern const struct image_format format_vhdx;

#endif
