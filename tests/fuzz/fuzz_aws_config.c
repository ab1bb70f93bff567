/* fuzz_aws_config.c - libFuzzer harness: the input (an in-memory file) as
 * both ~/.aws/config and ~/.aws/credentials, resolved for the default
 * profile: region, endpoints, the sections it must skip. Credentials
 * come from the environment, so no credential_process the input names is
 * ever run, and IMDS is off, so nothing leaves the process. */
#include "aws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (fd < 0) {
    fd = memfd_create("aws_config", MFD_CLOEXEC);
    if (fd < 0)
      abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    setenv("AWS_CONFIG_FILE", path, 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    unsetenv("AWS_PROFILE");
    unsetenv("AWS_ENDPOINT_URL");
  }
  if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
    abort();
  struct error e = { 0 };
  struct aws_ctx ctx;
  struct aws_opts o = { 0 };
  if (aws_ctx_init(&ctx, &o, &e) == 0)
    aws_ctx_free(&ctx);
  return 0;
}
