/* hex.h - lowercase hex text of bytes, and back (digests, keys, signatures). */
#ifndef AMIPORT_HEX_H
#define AMIPORT_HEX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* out gets 2*len hex digits and a NUL. */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* The value of one hex digit (either case), or -1. */
int hex_digit(char c);
/* Decodes the whole of hex into out (at most cap bytes): the byte count, or
 * -1 when it is not an even number of hex digits that fits. */
ssize_t hex_decode(const char *hex, uint8_t *out, size_t cap);

#endif
