/* fuzz_aws_answers.c - libFuzzer harness: the answers AWS sends, as amiport
 * reads them. The first byte picks the shape: EC2 (XML: errors,
 * DescribeSnapshots, DescribeImages, DescribeImageAttribute, RegisterImage,
 * each parsed as every one of them), EBS (an x-amzn-ErrorType
 * line, then a JSON body: errors and StartSnapshot), or ListSnapshotBlocks
 * pages (the rest split at the first newline into two pages, read in turn). */
#include "ec2.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  char *body = malloc(size);
  memcpy(body, data + 1, size - 1);
  body[size - 1] = 0;
  struct aws_resp r = { .body = body, .len = size - 1 };
  char code[128], msg[400], id[EBS_ID_MAX];
  struct error e = { 0 };
  if (data[0] % 3 == 2) {
    struct ebs_blocks l = { 0 };
    char next[256];
    char *nl = strchr(body, '\n');
    if (nl)
      *nl = 0;
    if (ebs_blocks_page(&l, "snap-fuzz", body, 1 << 20, next, sizeof next, &e) == 0 && nl)
      ebs_blocks_page(&l, "snap-fuzz", nl + 1, 1 << 20, next, sizeof next, &e);
    ebs_blocks_free(&l);
  } else if (data[0] % 3 == 1) {
    /* EBS: a first line is the x-amzn-ErrorType header */
    char *nl = memchr(body, '\n', size - 1);
    if (nl) {
      size_t n = (size_t)(nl - body) < sizeof r.error_type - 1 ? (size_t)(nl - body) : sizeof r.error_type - 1;
      memcpy(r.error_type, body, n);
      r.body = nl + 1;
      r.len = size - 1 - (size_t)(nl + 1 - body);
    }
    aws_error_text(&r, code, sizeof code, msg, sizeof msg);
    ebs_parse_snapshot_id(r.body, id, &e);
  } else {
    aws_error_text(&r, code, sizeof code, msg, sizeof msg);
    void *doc = aws_xml_parse(body, size - 1);
    static const char *const names[] = { "status", "progress", "imageId", "imageState",
                                         "snapshotId", "Code", "Message" };
    for (size_t i = 0; doc && i < sizeof names / sizeof *names; i++)
      free(ec2_text(doc, names[i]));
    if (doc) {
      static struct ec2_image_info im;
      char lost[1024], *value = NULL, ids[EC2_MAX_IMAGES][EBS_ID_MAX];
      struct ec2_snapshot_info si;
      size_t n;
      if (ec2_parse_image(doc, "ami-fuzz", &im, &e) == 0)
        ec2_billing_lost(&im, lost, sizeof lost);
      ec2_parse_image_attribute(doc, "uefiData", &value, &e);
      free(value);
      ec2_parse_snapshot(doc, "snap-fuzz", &si, &e);
      ec2_parse_image_ids(doc, ids, &n);
    }
    ec2_free(doc);
  }
  free(body);
  return 0;
}
