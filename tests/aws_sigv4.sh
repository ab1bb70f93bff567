#!/bin/bash
# aws_sigv4.sh - SigV4 signing (convert/aws/sigv4.c) against AWS's own test
# suite, kept in tests/vectors/aws-sigv4-testsuite.json: every distinct case
# of every group must pass (canonical request, string to sign and
# Authorization), and so must the tool's further checks (S3 paths, query
# encoding, overflow and argument errors). Two cases of the suite contradict
# themselves; tests/unit/sigv4_vectors.c says how they are checked.
. "$(dirname "$0")/lib.sh"
: "${TESTBIN:?TESTBIN must name the directory of the test tools}"
SUITE=$SRCDIR/tests/vectors/aws-sigv4-testsuite.json
[ -x "$TESTBIN/sigv4_vectors" ] || fail "$TESTBIN/sigv4_vectors is not built"
[ -s "$SUITE" ] || fail "$SUITE is missing"
setup_tmp

# the number of distinct cases, counted independently of the tool
n=$("$PYTHON" - "$SUITE" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
seen = []
for group in d["tests"].values():
    for c in group:
        if c not in seen:
            seen.append(c)
print(len(seen))
EOF
) || fail "cannot read $SUITE"
[ "$n" -gt 0 ] || fail "$SUITE has no cases"

rc=0
timeout -k 5 120 "$TESTBIN/sigv4_vectors" "$SUITE" >"$T/out" 2>&1 || rc=$?
cat "$T/out"
[ "$rc" -eq 0 ] || fail "sigv4_vectors exited $rc"
grep -qx "sigv4_vectors: $n/$n cases passed (.*)" "$T/out" ||
  fail "sigv4_vectors did not report all $n cases passed"
grep -Eq '^sigv4_vectors: ([0-9]+)/\1 further checks passed$' "$T/out" ||
  fail "sigv4_vectors did not report all further checks passed"
if grep -q '^FAIL' "$T/out"; then fail "sigv4_vectors printed a failure"; fi
info "sigv4 vectors: $n/$n pass"

# --- botocore signs the requests amiport makes the same way ----------------------
# Requests shaped like the EBS direct API, EC2 Query API and S3 calls (paths
# with encoded bytes and dot segments, base64 page tokens in the query, an
# unsigned payload, a session token), signed by botocore's SigV4Auth (S3:
# S3SigV4Auth) at a fixed time; sigv4_vectors --sign must produce the same
# canonical request and Authorization for the headers botocore signed.
if ! /usr/bin/python3 -c 'import botocore.auth' 2>/dev/null; then
  info "botocore is not importable by /usr/bin/python3: the comparison with it is skipped"
  exit 0
fi
/usr/bin/python3 - "$TESTBIN/sigv4_vectors" >"$T/boto.out" 2>&1 <<'EOF' || { cat "$T/boto.out"; fail "sigv4 differs from botocore"; }
import datetime, subprocess, sys
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

class FixedDatetime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return datetime.datetime(2015, 8, 30, 12, 36, 0)

class FixedModule:
    datetime = FixedDatetime

botocore.auth.datetime = FixedModule
tool = sys.argv[1]
AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE+/token=="
B64 = "AbC+d/e=="
cases = [
    ("ebs", "GET", "https://ebs.us-east-1.amazonaws.com/snapshots/snap-0123456789abcdef0/blocks"
     "?maxResults=100&pageToken=AbC%2Bd%2Fe%3D%3D&startingBlockIndex=0", {}, b"", True, None),
    ("ebs", "PUT", "https://ebs.us-east-1.amazonaws.com/snapshots/snap-0123456789abcdef0/blocks/42",
     {"x-amz-Data-Length": "524288", "x-amz-Checksum": B64, "x-amz-Checksum-Algorithm": "SHA256",
      "x-amz-Progress": "50", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, b"", False, TOKEN),
    ("ebs", "POST", "https://ebs.us-east-1.amazonaws.com/snapshots",
     {"Content-Type": "application/json"}, b'{"VolumeSize": 8, "ClientToken": "a b"}', True, None),
    ("ebs", "GET", "https://ebs.us-east-1.amazonaws.com/snapshots//snap-1/./blocks/%7E7/../7"
     "?blockToken=x%2By", {}, b"", True, None),
    ("ec2", "POST", "https://ec2.us-east-1.amazonaws.com/",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
     b"Action=RegisterImage&Version=2016-11-15&Name=my%20image", True, TOKEN),
    ("s3", "GET", "https://s3.us-east-1.amazonaws.com/my-bucket/dir//a%20b/../c.manifest.xml"
     "?list-type=2&prefix=a%2Fb%20c", {}, b"", True, TOKEN),
    ("s3", "PUT", "https://my-bucket.s3.us-east-1.amazonaws.com/img/disk.part.00",
     {"Content-Type": "application/octet-stream"}, b"0123456789" * 100, True, None),
]
bad = 0
for service, method, url, headers, body, sign_payload, token in cases:
    req = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    req.context["payload_signing_enabled"] = sign_payload
    creds = Credentials(AK, SK, token)
    cls = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    auth = cls(creds, service, "us-east-1")
    auth.add_auth(req)
    want = req.headers["Authorization"]
    del req.headers["Authorization"]  # what was signed is what came before it
    creq = auth.canonical_request(req)
    payload = creq.rsplit("\n", 1)[1]
    signed = auth.headers_to_sign(req)
    hdrs = ["%s:%s" % (k, v) for k, v in signed.items()]
    path, _, query = ("/" + url.split("://", 1)[1].split("/", 1)[1]).partition("?")
    args = [tool, "--sign", service, method, path, query, payload, req.context["timestamp"]]
    if token:
        args.append(token)
    p = subprocess.run(args + ["--"] + hdrs, capture_output=True, text=True)
    if p.returncode != 0:
        print("%s %s %s: sigv4_vectors failed: %s" % (service, method, url, p.stderr))
        bad += 1
        continue
    ours_creq, _, ours_authz = p.stdout.rstrip("\n").rpartition("\nauthz=")
    if ours_creq != creq or ours_authz != want:
        print("%s %s %s differs\n--- botocore\n%s\n%s\n--- ours\n%s\n%s" %
              (service, method, url, creq, want, ours_creq, ours_authz))
        bad += 1
print("botocore: %d/%d requests signed alike" % (len(cases) - bad, len(cases)))
sys.exit(1 if bad else 0)
EOF
cat "$T/boto.out"
exit 0
