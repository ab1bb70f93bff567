#!/bin/bash
# fakeaws.sh - the local AWS emulator (tests/fakeaws/server.py) speaks the
# real protocols: Debian's awscli, which signs and parses with botocore,
# drives every call against it.
#
#   - EBS direct API: start-snapshot, put-snapshot-block (random blocks, an
#     all-zero block, the last block of the volume), complete-snapshot with
#     the linear checksum, list-snapshot-blocks, get-snapshot-block (the bytes
#     read back are the bytes written), an incremental snapshot and
#     list-changed-blocks, StartSnapshot idempotency by client token;
#   - EC2: describe-snapshots and `ec2 wait snapshot-completed`,
#     register-image with architecture, boot mode, ENA, and describe-images
#     returning them, create-tags, deregister-image, delete-snapshot;
#   - errors, with the code awscli reports: wrong secret key, unknown access
#     key, expired session token, wrong block checksum, block index past the
#     end, wrong linear checksum, wrong changed-block count, a write to an
#     expired snapshot, duplicate AMI name, registering a pending snapshot,
#     deleting a snapshot an image uses;
#   - fault rules: throttled calls are retried by awscli and succeed, and the
#     statistics count the faults; a "stuck" completion stays pending;
#   - a restart keeps the state (snapshots, blocks, tokens, images, tags),
#     and a pending snapshot past its Timeout turns to error (so does one
#     expired through the control API).
. "$(dirname "$0")/lib.sh"
setup_tmp

AWS=/usr/bin/aws
[ -x "$AWS" ] || skip "$AWS (Debian's awscli) is not installed"
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
PY=/usr/bin/python3

AK=AKIDEXAMPLE
SK='wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY'
EXPIRED=FAKEAWSEXPIREDTOKEN
SERVER_PID=
PORT=

start_server() {
  : >"$T/server.out"
  "$PY" "$SRCDIR/tests/fakeaws/server.py" --port 0 --state "$T/state" --expired-token "$EXPIRED" "$@" \
    >"$T/server.out" 2>>"$T/server.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^ready \([0-9][0-9]*\)$/\1/p' "$T/server.out")
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$T/server.log" >&2; fail "the server exited at start"; }
    sleep 0.1
  done
  fail "the server did not print 'ready PORT' within 10 s"
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
  fi
}

cleanup() {
  local rc=$?
  stop_server
  if [ "$rc" -ne 0 ] && [ -f "$T/server.log" ]; then
    echo "--- last lines of the server log:" >&2
    tail -n 30 "$T/server.log" >&2
  fi
  (exit "$rc")
  lib_cleanup
}
trap cleanup EXIT

mkdir -p "$T/home"
: >"$T/empty"

# awsx [ENV=VALUE...] -- ARGS...: one awscli call against the server.
awsx() {
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN -u AWS_DEFAULT_REGION -u AWS_REGION \
    -u AWS_ENDPOINT_URL -u AWS_CA_BUNDLE -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy \
    HOME="$T/home" AWS_CONFIG_FILE="$T/empty" AWS_SHARED_CREDENTIALS_FILE="$T/empty" \
    AWS_EC2_METADATA_DISABLED=true AWS_PAGER= AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=3 \
    NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" "${envs[@]}" \
    timeout -k 5 90 "$AWS" --endpoint-url "http://127.0.0.1:$PORT" --region us-east-1 --output json "$@"
}

# ok ARGS...: awscli with the right keys; must succeed.
ok() { awsx -- "$@"; }

# err CODE [ENV=VALUE...] -- ARGS...: awscli must fail with error CODE.
err() {
  local code=$1 out rc=0
  shift
  out=$(awsx "$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "expected error $code, but the call succeeded: $out" >&2
    return 1
  fi
  if ! grep -qF "($code)" <<<"$out"; then
    echo "expected error ($code), got (exit $rc): $out" >&2
    return 1
  fi
  echo "$out"
}

# Background jobs: bg NAME CMD... runs CMD with stdout in $T/NAME.out and
# stderr in $T/NAME.err; join waits for all of them and fails on the first
# that failed.
JOBS=()
bg() {
  local name=$1
  shift
  "$@" >"$T/$name.out" 2>"$T/$name.err" &
  JOBS+=("$!:$name")
}
join() {
  local j pid name bad=
  for j in "${JOBS[@]}"; do
    pid=${j%%:*}
    name=${j#*:}
    if ! wait "$pid"; then
      echo "--- $name failed:" >&2
      cat "$T/$name.err" "$T/$name.out" >&2
      bad="$bad $name"
    fi
  done
  JOBS=()
  [ -z "$bad" ] || fail "failed:$bad"
}

# jget FILE EXPR: evaluates the Python expression EXPR with d = the JSON in FILE.
jget() {
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(v if isinstance(v,str) else json.dumps(v))' "$1" "$2" \
    || fail "cannot evaluate $2 on $1: $(head -c 2000 "$1")"
}
# jeq FILE EXPR WANT
jeq() {
  local got
  got=$(jget "$1" "$2")
  [ "$got" = "$3" ] || fail "$2 in $1 is '$got', expected '$3'"
}

# jat FILE WANT KEY...: the value at a key path (numbers index lists) must be WANT.
jat() {
  local f=$1 want=$2 got
  shift 2
  got=$("$PY" - "$f" "$@" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))
EOF
) || fail "$f has nothing at $*: $(head -c 2000 "$f")"
  [ "$got" = "$want" ] || fail "$* in $f is '$got', expected '$want'"
}

# ctl METHOD PATH [BODY]: the unsigned control API; prints the JSON answer.
ctl() {
  "$PY" - "$PORT" "$1" "$2" "${3:-}" <<'EOF'
import sys, urllib.request
port, method, path, body = sys.argv[1:5]
req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), method=method,
                             data=body.encode() if method == "POST" else None)
with urllib.request.urlopen(req, timeout=10) as r:
    sys.stdout.write(r.read().decode())
EOF
}

# The blocks: random ones, an all-zero one.
"$PY" - "$T" <<'EOF'
import os, sys
t = sys.argv[1]
for name in ("a0", "a5", "a2047", "b5", "b7", "c0", "e0"):
    with open(os.path.join(t, name + ".blk"), "wb") as f:
        f.write(os.urandom(524288))
with open(os.path.join(t, "a1.blk"), "wb") as f:
    f.write(bytes(524288))
EOF
cks() { "$PY" -c 'import sys,hashlib,base64; print(base64.b64encode(hashlib.sha256(open(sys.argv[1],"rb").read()).digest()).decode())' "$1"; }
linear() { "$PY" -c 'import sys,hashlib,base64; print(base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(open(f,"rb").read()).digest() for f in sys.argv[1:])).digest()).decode())' "$@"; }
# put SNAP INDEX FILE [CHECKSUM]
put() {
  ok ebs put-snapshot-block --snapshot-id "$1" --block-index "$2" --block-data "$3" --data-length 524288 \
    --checksum "${4:-$(cks "$3")}" --checksum-algorithm SHA256 --progress 50
}
put_err() {
  local code=$1
  shift
  err "$code" -- ebs put-snapshot-block --snapshot-id "$1" --block-index "$2" --block-data "$3" --data-length 524288 \
    --checksum "${4:-$(cks "$3")}" --checksum-algorithm SHA256
}
snap_id() { jget "$T/$1.out" 'd["SnapshotId"]'; }

start_server
info "server on port $PORT"

# --- snapshot A, and the pending snapshots the negative tests use --------------
ok ebs start-snapshot --volume-size 1 --description "fakeaws test A" --tags Key=purpose,Value=test \
  --timeout 60 >"$T/startA.out" || fail "start-snapshot failed"
A=$(snap_id startA)
[[ "$A" =~ ^snap-[0-9a-f]{17}$ ]] || fail "snapshot id '$A' is not snap- and 17 hex digits"
jeq "$T/startA.out" 'd["Status"]' pending
jeq "$T/startA.out" 'd["BlockSize"]' 524288
jeq "$T/startA.out" 'd["VolumeSize"]' 1
jeq "$T/startA.out" 'd["OwnerId"]' 123456789012

bg putA0 put "$A" 0 "$T/a0.blk"
bg putA1 put "$A" 1 "$T/a1.blk"
bg putA5 put "$A" 5 "$T/a5.blk"
bg putA2047 put "$A" 2047 "$T/a2047.blk"
bg startC ok ebs start-snapshot --volume-size 2
bg startD ok ebs start-snapshot --volume-size 1
# (a session token other than the expired one is accepted)
bg idem1 awsx AWS_SESSION_TOKEN=some-other-token -- ebs start-snapshot --volume-size 3 --client-token fakeaws-token-1
bg badsecret_ebs err InvalidSignatureException AWS_SECRET_ACCESS_KEY=wrong-secret -- ebs start-snapshot --volume-size 1
bg badsecret_ec2 err SignatureDoesNotMatch AWS_SECRET_ACCESS_KEY=wrong-secret -- ec2 describe-snapshots --owner-ids self
bg badkey_ec2 err AuthFailure AWS_ACCESS_KEY_ID=AKIDUNKNOWN -- ec2 describe-snapshots --owner-ids self
bg expired_ebs err ExpiredTokenException AWS_SESSION_TOKEN=$EXPIRED -- ebs start-snapshot --volume-size 1
join
C=$(snap_id startC)
D=$(snap_id startD)
F=$(snap_id idem1)
jeq "$T/putA0.out" 'd["Checksum"]' "$(cks "$T/a0.blk")"
jeq "$T/putA0.out" 'd["ChecksumAlgorithm"]' SHA256
grep -q " ec2 DescribeSnapshots 401 AuthFailure" "$T/server.log" || fail "the server log lacks the AuthFailure line"

# --- complete A; negatives on C and D -----------------------------------------
LIN_A=$(linear "$T/a0.blk" "$T/a1.blk" "$T/a5.blk" "$T/a2047.blk")
bg completeA ok ebs complete-snapshot --snapshot-id "$A" --changed-blocks-count 4 \
  --checksum "$LIN_A" --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR
bg putC0 put "$C" 0 "$T/c0.blk"
bg badcks put_err ValidationException "$C" 1 "$T/c0.blk" "$(cks "$T/a0.blk")"
bg idem2 ok ebs start-snapshot --volume-size 3 --client-token fakeaws-token-1
bg idem3 err ConflictException -- ebs start-snapshot --volume-size 4 --client-token fakeaws-token-1
bg expireD ctl POST "/_fakeaws/snapshots/$D/expire"
join
jeq "$T/completeA.out" 'd["Status"]' pending
jeq "$T/idem2.out" 'd["SnapshotId"]' "$F"

# --- A completes; more negatives on C and D -----------------------------------
bg waitA ok ec2 wait snapshot-completed --snapshot-ids "$A"
bg badcount err ValidationException -- ebs complete-snapshot --snapshot-id "$C" --changed-blocks-count 2
bg badlinear err ValidationException -- ebs complete-snapshot --snapshot-id "$C" --changed-blocks-count 1 \
  --checksum "$(linear "$T/a0.blk")" --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR
bg putD put_err ValidationException "$D" 0 "$T/c0.blk"
join

# A completion that the rules keep pending for ever, a throttled put and a
# throttled DescribeImages (awscli retries both).
ctl POST /_fakeaws/faults '[{"op":"CompleteSnapshot","kind":"stuck","count":1},
  {"op":"PutSnapshotBlock","kind":"throttle","count":1},
  {"op":"DescribeImages","kind":"throttle","count":1}]' >"$T/faults.json" || fail "setting the fault rules failed"
jeq "$T/faults.json" 'len(d)' 3

bg listA ok ebs list-snapshot-blocks --snapshot-id "$A" --starting-block-index 1 --max-results 100
bg startB ok ebs start-snapshot --volume-size 1 --parent-snapshot-id "$A" --description "fakeaws test B"
bg completeC ok ebs complete-snapshot --snapshot-id "$C" --changed-blocks-count 1 \
  --checksum "$(linear "$T/c0.blk")" --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR
bg register ok ec2 register-image --name "fakeaws-test image (1)" --description "made by fakeaws.sh" \
  --architecture x86_64 --boot-mode uefi --ena-support --sriov-net-support simple --imds-support v2.0 \
  --tpm-support v2.0 --virtualization-type hvm --root-device-name /dev/xvda \
  --block-device-mappings "[{\"DeviceName\":\"/dev/xvda\",\"Ebs\":{\"SnapshotId\":\"$A\",\"VolumeType\":\"gp3\",\"DeleteOnTermination\":true}}]"
join
jeq "$T/listA.out" '[b["BlockIndex"] for b in d["Blocks"]]' '[1, 5, 2047]'
jeq "$T/listA.out" 'd["VolumeSize"]' 1
jeq "$T/listA.out" 'd["BlockSize"]' 524288
B=$(snap_id startB)
AMI=$(jget "$T/register.out" 'd["ImageId"]')
[[ "$AMI" =~ ^ami-[0-9a-f]{17}$ ]] || fail "image id '$AMI' is not ami- and 17 hex digits"
TOK5=$(jget "$T/listA.out" '[b["BlockToken"] for b in d["Blocks"] if b["BlockIndex"] == 5][0]')
TOK1=$(jget "$T/listA.out" '[b["BlockToken"] for b in d["Blocks"] if b["BlockIndex"] == 1][0]')
TOK2047=$(jget "$T/listA.out" '[b["BlockToken"] for b in d["Blocks"] if b["BlockIndex"] == 2047][0]')

bg get5 ok ebs get-snapshot-block --snapshot-id "$A" --block-index 5 --block-token "$TOK5" "$T/got5.blk"
bg get1 ok ebs get-snapshot-block --snapshot-id "$A" --block-index 1 --block-token "$TOK1" "$T/got1.blk"
bg putB5 put "$B" 5 "$T/b5.blk"
bg putB7 put "$B" 7 "$T/b7.blk"
bg regpending err IncorrectState -- ec2 register-image --name fakeaws-from-pending --architecture x86_64 \
  --virtualization-type hvm --root-device-name /dev/xvda \
  --block-device-mappings "[{\"DeviceName\":\"/dev/xvda\",\"Ebs\":{\"SnapshotId\":\"$C\"}}]"
bg regdup err InvalidAMIName.Duplicate -- ec2 register-image --name "fakeaws-test image (1)" --architecture x86_64 \
  --virtualization-type hvm --root-device-name /dev/xvda \
  --block-device-mappings "[{\"DeviceName\":\"/dev/xvda\",\"Ebs\":{\"SnapshotId\":\"$A\"}}]"
bg tags ok ec2 create-tags --resources "$AMI" "$A" --tags Key=Name,Value=fakeaws-test Key=stage,Value=
bg inuse err InvalidSnapshot.InUse -- ec2 delete-snapshot --snapshot-id "$A"
join
cmp "$T/a5.blk" "$T/got5.blk" || fail "block 5 read back differs from what was written"
cmp "$T/a1.blk" "$T/got1.blk" || fail "the zero block read back differs from what was written"
jeq "$T/get5.out" 'd["Checksum"]' "$(cks "$T/a5.blk")"
jeq "$T/get5.out" 'd["DataLength"]' 524288

bg completeB ok ebs complete-snapshot --snapshot-id "$B" --changed-blocks-count 2 \
  --checksum "$(linear "$T/b5.blk" "$T/b7.blk")" --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR
bg descimg ok ec2 describe-images --image-ids "$AMI"
join
jat "$T/descimg.out" "$AMI" Images 0 ImageId
jat "$T/descimg.out" "fakeaws-test image (1)" Images 0 Name
jat "$T/descimg.out" "made by fakeaws.sh" Images 0 Description
jat "$T/descimg.out" x86_64 Images 0 Architecture
jat "$T/descimg.out" uefi Images 0 BootMode
jat "$T/descimg.out" true Images 0 EnaSupport
jat "$T/descimg.out" simple Images 0 SriovNetSupport
jat "$T/descimg.out" v2.0 Images 0 ImdsSupport
jat "$T/descimg.out" v2.0 Images 0 TpmSupport
jat "$T/descimg.out" hvm Images 0 VirtualizationType
jat "$T/descimg.out" /dev/xvda Images 0 RootDeviceName
jat "$T/descimg.out" ebs Images 0 RootDeviceType
jat "$T/descimg.out" available Images 0 State
jat "$T/descimg.out" machine Images 0 ImageType
jat "$T/descimg.out" 123456789012 Images 0 OwnerId
jat "$T/descimg.out" /dev/xvda Images 0 BlockDeviceMappings 0 DeviceName
jat "$T/descimg.out" "$A" Images 0 BlockDeviceMappings 0 Ebs SnapshotId
jat "$T/descimg.out" 1 Images 0 BlockDeviceMappings 0 Ebs VolumeSize
jat "$T/descimg.out" gp3 Images 0 BlockDeviceMappings 0 Ebs VolumeType
jat "$T/descimg.out" true Images 0 BlockDeviceMappings 0 Ebs DeleteOnTermination
jeq "$T/descimg.out" '{t["Key"]: t["Value"] for t in d["Images"][0]["Tags"]}' '{"Name": "fakeaws-test", "stage": ""}'
[ -n "$(jget "$T/descimg.out" 'd["Images"][0]["CreationDate"]')" ] || fail "describe-images has no CreationDate"

ok ebs list-changed-blocks --first-snapshot-id "$A" --second-snapshot-id "$B" >"$T/changed.out" \
  || fail "list-changed-blocks failed"
jeq "$T/changed.out" '[b["BlockIndex"] for b in d["ChangedBlocks"]]' '[5, 7]'
jeq "$T/changed.out" '["FirstBlockToken" in b for b in d["ChangedBlocks"]]' '[true, false]'
jeq "$T/changed.out" '["SecondBlockToken" in b for b in d["ChangedBlocks"]]' '[true, true]'

# The statistics: the throttled put and DescribeImages were retried.
ctl GET /_fakeaws/stats >"$T/stats.json" || fail "GET /_fakeaws/stats failed"
jeq "$T/stats.json" 'd["ops"]["PutSnapshotBlock"]["faults"]' 1
jeq "$T/stats.json" 'd["ops"]["DescribeImages"]["faults"]' 1
jeq "$T/stats.json" 'd["ops"]["DescribeImages"]["responses"]["503"]' 1
jeq "$T/stats.json" 'd["ops"]["CompleteSnapshot"]["faults"]' 1
jeq "$T/stats.json" "d[\"snapshots\"][\"$B\"][\"put_requests\"]" 3
jeq "$T/stats.json" "d[\"snapshots\"][\"$B\"][\"blocks\"]" 2
jeq "$T/stats.json" "d[\"snapshots\"][\"$A\"][\"blocks\"]" 4
jeq "$T/stats.json" "d[\"snapshots\"][\"$C\"][\"status\"]" pending
ctl POST /_fakeaws/faults '[]' >/dev/null || fail "clearing the fault rules failed"

# --- restart: the state survives; F (pending, Timeout 60 minutes of 0.01 s) expires
stop_server
start_server --minute-seconds 0.01
info "restarted on port $PORT"
sleep 1
bg descAll ok ec2 describe-snapshots --owner-ids self --filters Name=tag-key,Values=purpose,Name Name=status,Values=completed
bg descErr ok ec2 describe-snapshots --snapshot-ids "$C" "$D" "$F"
bg regetA ok ebs get-snapshot-block --snapshot-id "$A" --block-index 2047 --block-token "$TOK2047" "$T/got2047.blk"
bg listB ok ebs list-snapshot-blocks --snapshot-id "$B"
join
cmp "$T/a2047.blk" "$T/got2047.blk" || fail "block 2047 read back after the restart differs"
# only A has the tags (B has none, C, D and F are not completed)
jeq "$T/descAll.out" '[s["SnapshotId"] for s in d["Snapshots"]]' "[\"$A\"]"
jat "$T/descAll.out" completed Snapshots 0 State
jat "$T/descAll.out" 100% Snapshots 0 Progress
jat "$T/descAll.out" 1 Snapshots 0 VolumeSize
jat "$T/descAll.out" vol-ffffffff Snapshots 0 VolumeId
jat "$T/descAll.out" 123456789012 Snapshots 0 OwnerId
jat "$T/descAll.out" "fakeaws test A" Snapshots 0 Description
jat "$T/descAll.out" false Snapshots 0 Encrypted
jeq "$T/descAll.out" '{t["Key"]: t["Value"] for t in d["Snapshots"][0]["Tags"]}' '{"purpose": "test", "Name": "fakeaws-test", "stage": ""}'
jeq "$T/descErr.out" '[s["State"] for s in d["Snapshots"]]' '["pending", "error", "error"]'
jeq "$T/listB.out" '[b["BlockIndex"] for b in d["Blocks"]]' '[0, 1, 5, 7, 2047]'

# --- clean up through the API -------------------------------------------------
ok ec2 deregister-image --image-id "$AMI" >/dev/null || fail "deregister-image failed"
bg delA ok ec2 delete-snapshot --snapshot-id "$A"
bg delB ok ec2 delete-snapshot --snapshot-id "$B"
join
err InvalidSnapshot.NotFound -- ec2 describe-snapshots --snapshot-ids "$A" >/dev/null \
  || fail "a deleted snapshot is still described"
[ ! -d "$T/state/snapshots/$A" ] || fail "the deleted snapshot's blocks are still on disk"

info "all checks passed"
