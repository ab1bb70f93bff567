/* upload_bundle.c - amiport upload-bundle (not yet written). */
#include "cli.h"

#include <stdio.h>

int cmd_upload_bundle(int argc, char **argv)
{
  (void)argc, (void)argv;
  fprintf(stderr, "amiport: upload-bundle: not built yet\n");
  return EXIT_FAIL;
}
