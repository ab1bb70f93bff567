/* main.c - the amiport command: dispatches to one file per command. */
#include "cli.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

static const struct command {
  const char *name, *summary;
  int (*run)(int argc, char **argv);
} commands[] = {
  { "info", "show an image's format, size and allocation", cmd_info },
  { "map", "show where an image's data, zeros and holes are", cmd_map },
  { "convert", "copy an image to another format", cmd_convert },
  { "check", "tell whether the disk will boot on EC2, and why not", cmd_check },
  { "import", "upload an image as an EBS snapshot and register it as an AMI", cmd_import },
  { "export", "download an AMI or EBS snapshot as a local image", cmd_export },
  { "register", "register an AMI from an EBS snapshot", cmd_register },
  { "wait", "wait until a snapshot is completed or an AMI available", cmd_wait },
  { "bundle", "pack an image as an instance-store bundle (ec2-bundle-image format)", cmd_bundle },
  { "unbundle", "check and unpack an instance-store bundle to an image", cmd_unbundle },
  { "upload-bundle", "upload a bundle's parts and manifest to S3", cmd_upload_bundle },
  { "plan", "check, import and follow a fleet's plan (one VM a line)", cmd_plan },
};

static void usage(FILE *f)
{
  fprintf(f, "Usage: amiport COMMAND [OPTIONS] ARGS...\n\n"
             "Moves bootable virtual machine disks between formats and Amazon EC2.\n\n"
             "Commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nFormats:");
  for (const struct image_format *const *fp = img_formats(); *fp; fp++)
    fprintf(f, " %s", (*fp)->name);
  fprintf(f, "\n\nRun 'amiport COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
  /* Buffers of 4 MiB and more (bundle parts, S3 objects) are mapped and
   * unmapped whole, so a freed one goes back to the system at once; glibc's
   * default raises this threshold as such buffers are freed, and the
   * per-thread arenas would then keep them resident. Smaller ones (blocks,
   * chunks, libcurl's buffers of a block, allocated and freed with every
   * transfer) are reused from the heap, without page faults: nor is the
   * heap trimmed under 64 MiB free (the default trims at 128 KiB, so a
   * freed block's pages would be given back and faulted in again). */
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  if (argc < 2)
    return usage(stderr), EXIT_USAGE;
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)
    return usage(stdout), EXIT_OK;
  if (strcmp(argv[1], "--version") == 0)
    return printf("amiport 0.1.0\n"), EXIT_OK;
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(argv[1], commands[i].name) == 0)
      return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "amiport: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return EXIT_USAGE;
}
