"""ebs_readback.py ENDPOINT SNAPSHOT OUT SIZE - rebuilds an EBS snapshot as a
raw file of SIZE bytes through botocore's EBS client (the library under the
AWS CLI): ListSnapshotBlocks, every page, then GetSnapshotBlock for each
block, its x-amz-Checksum verified. Blocks the snapshot lacks stay holes
(zeros). Prints the number of blocks read."""
import base64
import hashlib
import os
import sys

import botocore.session

endpoint, snap, out, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ebs = botocore.session.get_session().create_client(
    "ebs", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
blocks, token = [], None
while True:
    kw = {"SnapshotId": snap, "MaxResults": 1000}
    if token:
        kw["NextToken"] = token
    page = ebs.list_snapshot_blocks(**kw)
    blocks += page.get("Blocks", [])
    token = page.get("NextToken")
    if not token:
        break
with open(out, "wb") as f:
    f.truncate(size)
    for b in blocks:
        r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                   BlockToken=b["BlockToken"])
        data = r["BlockData"].read()
        want = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if r["Checksum"] != want:
            sys.exit("block %d: checksum %s, data hashes to %s" % (b["BlockIndex"], r["Checksum"], want))
        off = b["BlockIndex"] * 524288
        f.seek(off)
        f.write(data[: max(0, min(len(data), size - off))])
print(len(blocks))
