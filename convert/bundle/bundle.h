/* bundle.h - the ec2-bundle-image format (legacy instance-store AMIs):
 * the image as one tar member, gzip, AES-128-CBC, cut into parts, described
 * and signed by PREFIX.manifest.xml. manifest.c reads and writes the
 * manifest and does its RSA; bundle.c writes a bundle from any image;
 * unbundle.c checks and decodes one back to an image. */
#ifndef AMIPORT_BUNDLE_H
#define AMIPORT_BUNDLE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <sys/types.h>

#include <openssl/evp.h>

#include "error.h"
#include "image.h"

#define BUNDLE_PART_SIZE (10u << 20)   /* ec2-bundle-image's parts */
#define BUNDLE_MAX_PART_MIB 256u       /* unbundle checks a part whole in memory */
#define BUNDLE_MAX_PARTS 100000u
#define BUNDLE_MAX_MAPPINGS 32u
#define BUNDLE_MANIFEST_MAX (64u << 20) /* largest manifest file read */

struct bundle_part {
  char *filename; /* as in the manifest: a bare file name */
  char sha1[41];  /* lowercase hex of the part's bytes */
};

struct bundle_mapping {
  char *virtual_name; /* ami, root, ephemeral0, swap */
  char *device;       /* sda1, /dev/sda1 */
};

/* A manifest, as read or about to be written. Strings are malloc'd. */
struct manifest {
  char version[16];       /* "2007-10-10"; "2007-08-29" and "3" are read too */
  char *arch;             /* x86_64, i386 (absent in version 3) */
  char *kernel_id, *ramdisk_id;
  struct bundle_mapping mappings[BUNDLE_MAX_MAPPINGS];
  unsigned nmappings;
  char *name;             /* the image file name, the tar member's name */
  char *user;             /* AWS account id */
  uint64_t size;          /* image bytes */
  uint64_t bundled_size;  /* bytes of all parts together */
  char digest[41];        /* SHA-1 hex of the tar stream */
  char *ec2_encrypted_key, *user_encrypted_key; /* hex of RSA(hex key) */
  char *ec2_encrypted_iv, *user_encrypted_iv;
  struct bundle_part *parts;
  unsigned nparts;
  char *signature;        /* hex of RSA-SHA1 over signed_text */
  char *signed_text;      /* <machine_configuration>...</machine_configuration><image>...</image>
                             exactly as the file has it */
  size_t signed_len;
};

/* Reads and checks the shape of path (every field named in an error: which
 * element, what value); does not check the signature. */
int manifest_read(const char *path, struct manifest *m, struct error *e);
/* The same on text already read (len bytes, NUL-terminated), which it frees;
 * path names it in errors. */
int manifest_parse(const char *path, char *text, size_t len, struct manifest *m, struct error *e);
void manifest_free(struct manifest *m);
/* Writes m (version 2007-10-10, one line) to path, signed by user_key. */
int manifest_write(const char *path, const struct manifest *m, EVP_PKEY *user_key,
                   const char *bundler_version, struct error *e);
/* The same text in memory (malloc'd, *len bytes). */
int manifest_format(const struct manifest *m, EVP_PKEY *user_key, const char *bundler_version,
                    char **text, size_t *len, struct error *e);

/* ---- bundle.c ---- */

/* Where bundle_write puts the parts and the manifest (NULL in bundle_opts:
 * files in o->destination). Called one call at a time, parts in order; a
 * part's bytes come in order, from offset 0. */
struct bundle_sink {
  void *arg;
  int (*part_open)(void *arg, unsigned index, const char *name, struct error *e);
  int (*part_write)(void *arg, const uint8_t *buf, size_t len, uint64_t off, struct error *e);
  /* the part is whole: size bytes with that SHA-1 (lowercase hex) */
  int (*part_close)(void *arg, unsigned index, uint64_t size, const char *sha1, struct error *e);
  /* the signed manifest, once every part was closed; name is PREFIX.manifest.xml */
  int (*manifest)(void *arg, const char *name, const char *text, size_t len, struct error *e);
  /* the bundle failed after the first part_open: drop or keep what was put */
  void (*abort)(void *arg);
};

struct bundle_opts {
  EVP_PKEY *user_cert, *ec2_cert; /* public keys the AES key and IV are wrapped for */
  EVP_PKEY *user_key;             /* signs the manifest */
  const char *user;               /* AWS account id */
  const char *arch, *kernel_id, *ramdisk_id; /* the last two may be NULL */
  const struct bundle_mapping *mappings;
  unsigned nmappings;
  const char *name;               /* the tar member and <image><name> */
  const char *prefix;             /* PREFIX.part.NN, PREFIX.manifest.xml */
  const char *destination;        /* an existing folder */
  uint64_t part_size;
  uint64_t mtime;                 /* the tar member's */
  const char *bundler_version;
  unsigned threads;               /* 0: one per core */
  bool progress;
  const volatile sig_atomic_t *cancel;
  /* NULL: the parts and manifest are files in destination */
  const struct bundle_sink *sink;
  /* NULL: a random key and IV. Given (16 bytes each), the same source and
   * options give the same parts; user_encrypted_key/iv, when given, are
   * their manifest fields for user_cert, reused as they are */
  const uint8_t *key, *iv;
  const char *user_encrypted_key, *user_encrypted_iv;
  /* with progress: more text after the bar (what the sink has done) */
  void (*progress_note)(void *arg, char *buf, size_t cap);
  void *progress_arg;
};

struct bundle_result {
  char manifest[4096];
  char digest[41];
  unsigned nparts;
  uint64_t bundled_size, tar_size, data;
};

/* Writes src as a bundle. On failure nothing this call wrote is left. */
int bundle_write(struct img *src, const struct bundle_opts *o, struct bundle_result *r,
                 struct error *e);

/* ---- source.c: a bundle read as an image ---- */

/* Where a bundle's files are: a local folder, or anything else that hands
 * over a named file whole (an S3 prefix). */
struct bundle_store {
  const char *where;     /* named in messages: a folder, s3://BUCKET/PREFIX */
  /* Reads file name whole into *buf (malloc'd with one spare byte), at
   * most max bytes; errors name the file. */
  int (*get)(void *ctx, const char *name, uint64_t max, uint8_t **buf, size_t *len,
             struct error *e);
  /* 0 when name is there; -1 with e naming it when not. */
  int (*has)(void *ctx, const char *name, struct error *e);
  void (*release)(void *ctx); /* when the image is closed; may be NULL */
  void *ctx;
  unsigned jobs;         /* parts fetched at once; 0: 2 */
};

/* The folder dir (which must outlive the store) as a store. */
void bundle_store_dir(struct bundle_store *s, const char *dir);

struct bundle_source_opts {
  const struct bundle_store *store; /* copied; its release is called in any case */
  const char *manifest;             /* the manifest's file name in the store, or with
                                       local_manifest its path on this machine */
  bool local_manifest;
  EVP_PKEY *key;                    /* the user's (or EC2's) private key */
  const char *key_path;
  EVP_PKEY *cert;                   /* checks the signature; NULL: the key's public half */
  const char *cert_path;
  const volatile sig_atomic_t *cancel;
};

extern const struct image_format format_bundle;

/* Opens a bundle as a sequential image source (FMT_SEQUENTIAL): read once,
 * in order, then img_verify_source checks the tar stream's SHA-1 and sizes.
 * Before it returns, the manifest's shape and signature, the AES key and IV
 * and every part's presence are checked. The key and cert are not kept. */
struct img *bundle_open(const struct bundle_source_opts *o, struct error *e);
/* The manifest of an image bundle_open returned; NULL for any other image. */
const struct manifest *bundle_image_manifest(struct img *im);

/* ---- unbundle.c ---- */

struct unbundle_opts {
  const char *manifest;
  EVP_PKEY *key;                /* the user's (or EC2's) private key */
  const char *key_path;
  EVP_PKEY *cert;               /* checks the signature; NULL: the key's public half */
  const char *cert_path;
  const char *source;           /* the parts' folder */
  const char *destination;      /* the image goes here, named as the manifest says */
  const char *format;           /* "raw", "qcow2", ... */
  struct create_opts *create;
  bool force;                   /* replace an existing output */
  bool progress;
  const volatile sig_atomic_t *cancel;
};

struct unbundle_result {
  char path[4096];
  char digest[41];
  uint64_t size;
  unsigned nparts;
};

/* Checks and decodes a bundle (bundle_open, then the copy engine); on any
 * mismatch no output is left. */
int unbundle(const struct unbundle_opts *o, struct unbundle_result *r, struct error *e);

/* Keys and RSA (manifest.c). Errors name the file. */
EVP_PKEY *bundle_load_cert(const char *path, struct error *e);  /* a PEM certificate's key */
EVP_PKEY *bundle_load_key(const char *path, struct error *e);   /* a PEM RSA private key */
char *bundle_rsa_encrypt_hex(EVP_PKEY *k, const char *text, struct error *e);
/* -1 when k cannot decrypt it (the caller may try another key). */
ssize_t bundle_rsa_decrypt_hex(EVP_PKEY *k, const char *hex, uint8_t *out, size_t cap);
char *bundle_sign_hex(EVP_PKEY *k, const void *data, size_t len, struct error *e);
bool bundle_verify_hex(EVP_PKEY *k, const void *data, size_t len, const char *sighex);
/* A file name a manifest may give: bare, in the manifest's folder. */
bool bundle_name_ok(const char *s);

#endif
