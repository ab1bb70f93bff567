/* progress.c - see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>

double mono_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void progress_start(struct progress *p, bool on, uint64_t total)
{
  *p = (struct progress){ .on = on, .total = total, .start = mono_now() };
}

void progress_draw(struct progress *p, uint64_t done, bool final)
{
  if (!p->on)
    return;
  double t = mono_now();
  if (!final && t - p->last < 0.2)
    return;
  p->last = t;
  double frac = p->total ? (double)done / (double)p->total : 1.0;
  if (frac > 1.0)
    frac = 1.0;
  char bar[31];
  int fill = (int)(frac * 30);
  for (int i = 0; i < 30; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[30] = 0;
  double rate = t > p->start ? (double)done / (t - p->start) / (1 << 20) : 0;
  fprintf(stderr, "\r[%s] %5.1f%%  %.1f/%.1f MiB  %.0f MiB/s ", bar, frac * 100,
          (double)done / (1 << 20), (double)p->total / (1 << 20), rate);
  if (p->note) {
    char note[128] = "";
    p->note(p->note_arg, note, sizeof note);
    fprintf(stderr, " %s ", note);
  }
  if (final)
    fputc('\n', stderr);
}
