/* progress.h - a monotonic clock and the progress bar long jobs draw on
 * stderr (copy, bundle, unbundle). */
#ifndef AMIPORT_PROGRESS_H
#define AMIPORT_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

double mono_now(void); /* seconds, CLOCK_MONOTONIC */

struct progress {
  bool on;
  uint64_t total;
  double start, last;
  void (*note)(void *arg, char *buf, size_t cap); /* more text after the bar, or NULL */
  void *note_arg;
};

void progress_start(struct progress *p, bool on, uint64_t total);
/* Redraws at most five times a second; final draws and ends the line. */
void progress_draw(struct progress *p, uint64_t done, bool final);

#endif
