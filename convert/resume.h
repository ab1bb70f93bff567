/* resume.h - a copy that survives an interruption: see resume.c. */
#ifndef AMIPORT_RESUME_H
#define AMIPORT_RESUME_H

#include "copy.h"

struct resume;

/* Opens DST.partial and DST.partial.state for source_id (reusing them when
 * they belong to the same source and size, else starting afresh). */
struct resume *resume_open(const char *dst, const char *source_id, uint64_t size, uint32_t block,
                           struct error *e);
uint64_t resume_blocks_reused(const struct resume *r); /* blocks an earlier run wrote */
/* The source without the blocks already written (src must outlive it). */
struct img *resume_source(struct resume *r, struct img *src, struct error *e);
struct img *resume_target(struct resume *r); /* DST.partial, raw */
/* copy_opts.unit_done for the copy into resume_target; checkpoints now and then. */
void resume_unit_done(void *ctx, uint64_t off, uint64_t len);
/* Data synced, then the state written. */
int resume_checkpoint(struct resume *r, struct error *e);
int resume_failed(struct resume *r, struct error *e); /* a checkpoint that failed in a worker */
/* After the copy succeeded: DST.partial becomes DST (converted to fmt unless
 * raw) and the state goes. */
int resume_complete(struct resume *r, const char *dst, const char *fmt, struct create_opts *co,
                    bool force, const struct copy_opts *cp, struct error *e);
void resume_close(struct resume *r);

#endif
