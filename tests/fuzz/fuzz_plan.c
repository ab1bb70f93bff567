/* fuzz_plan.c - libFuzzer harness: the input as a migration plan (JSON
 * Lines), parsed and validated; a plan that passes must hold what the
 * validation promises (a name, at least one disk, unique names). */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct plan p;
  struct error e = { 0 };
  if (plan_parse((const char *)data, size, "fuzz.jsonl", &p, &e) < 0) {
    if (!e.msg[0])
      abort(); /* a refusal always says why */
    return 0;
  }
  for (size_t i = 0; i < p.n; i++) {
    const struct plan_line *l = &p.lines[i];
    if (!l->name || !l->ndisks || l->ndisks > PLAN_MAX_DISKS || plan_find(&p, l->name) != l)
      abort();
    for (size_t k = 0; k < l->ndisks; k++)
      if (!l->disks[k] || !l->disks[k][0])
        abort();
  }
  plan_free(&p);
  return 0;
}
