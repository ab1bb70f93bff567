# export.sh - amiport export from tests/fakeaws: a fixture imported, then
# exported as raw, qcow2 and VMDK, each identical to the source (qemu-img
# compare) and passing qemu-img check; an AMI's volumes by device; check on a
# snapshot read in place; a corrupted block refused with no file left behind;
# throttling and dropped connections survived; an interrupted --resume
# export picks up where it stopped; expiring block tokens are listed again;
# clear errors for what cannot be exported.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws

src=$FIXTURES/x86_64-bios-mbr.raw
amiport_ok import -f raw --output=json --name export-source "$src"
snap=$(json_get "$T/stdout" snapshot_id)
ami=$(json_get "$T/stdout" image_id)
[[ $ami == ami-* ]] || fail "import gave no AMI"

# --- raw, qcow2, VMDK: identical, and the writers' images pass qemu-img check ---
amiport_ok export "$snap" "$T/out.raw"
qemu-img compare -q -f raw -F raw "$src" "$T/out.raw" || fail "export to raw differs from the source"
stderr_has "blocks fetched"
total=$(grep -o '[0-9]* blocks fetched' "$T/stderr" | cut -d' ' -f1)
amiport_ok export -O qcow2 -c "$ami" "$T/out.qcow2"
qemu-img check -q "$T/out.qcow2" || fail "exported qcow2 fails qemu-img check"
qemu-img compare -q -F raw "$T/out.qcow2" "$src" || fail "export to qcow2 differs from the source"
amiport_ok export -O vmdk "ebs:$snap" "$T/out.vmdk"
qemu-img check -q "$T/out.vmdk" || fail "exported VMDK fails qemu-img check"
qemu-img compare -q -F raw "$T/out.vmdk" "$src" || fail "export to VMDK differs from the source"
info "raw, qcow2 and VMDK exports identical to the source"

# the map: blocks the snapshot lacks are holes, the rest data
amiport_ok map --output=json "$snap"
[ "$(json_get "$T/stdout" 0 data)" = "" ] || true
amiport_ok info --output=json "$snap"
[ "$(json_get "$T/stdout" volume_size_gib)" = 1 ] || fail "info: the snapshot's size is not its 1 GiB volume: $(cat "$T/stdout")"

# an existing destination is refused without --force; --device and --all
expect_rc 1 export "$snap" "$T/out.raw"
stderr_has "exists"
amiport_ok export --all "$ami" "$T/all.raw"
[ -s "$T/all-xvda.raw" ] || fail "--all did not write all-xvda.raw: $(ls "$T")"
expect_rc 2 export --device /dev/sdz "$ami" "$T/none.raw"
stderr_has "no EBS volume at /dev/sdz" "/dev/xvda"

# --- check on the snapshot in place: the same answer, a fraction of the blocks ---
amiport_ok check --output=json -f raw "$src"
cp "$T/stdout" "$T/check-file.json"
amiport_ok check --output=json "ebs:$snap"
cp "$T/stdout" "$T/check-snap.json"
/usr/bin/python3 - "$T/check-file.json" "$T/check-snap.json" <<'EOF' || fail "check on the snapshot differs from check on the file"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
fetched = b.pop("snapshot_blocks_fetched")
for k in ("format", "virtual_size", "bytes_read"):
    a.pop(k, None)
    b.pop(k, None)
if a != b:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print("differs:", k, a.get(k), "vs", b.get(k))
    sys.exit(1)
total = 2048  # blocks in the 1 GiB volume
assert 0 < fetched < total // 10, "check fetched %d of %d blocks" % (fetched, total)
print("check on the snapshot fetched %d of %d blocks" % (fetched, total))
EOF
amiport_ok check "$ami"
grep -q "^Fetched [0-9]* blocks" "$T/stdout" || fail "check on an AMI does not say how many blocks it fetched"

# --- a block corrupted in the service: refused by its checksum, nothing left ---
mkdir "$T/dst"
fakeaws_ctl POST faults '[{"op": "GetSnapshotBlock", "kind": "corrupt"}]' >/dev/null
expect_rc 1 export "$snap" "$T/dst/bad.raw"
stderr_has "GetSnapshotBlock" "SHA-256" "x-amz-Checksum"
dir_empty "$T/dst"
fakeaws_ctl POST faults '[]' >/dev/null

# --- throttling, 500s and dropped connections: still identical ---
fakeaws_ctl POST faults '[{"op": "GetSnapshotBlock", "kind": "throttle", "every": 6},
  {"op": "GetSnapshotBlock", "kind": "drop", "every": 9},
  {"op": "GetSnapshotBlock", "kind": "500", "every": 13},
  {"op": "GetSnapshotBlock", "kind": "corrupt", "every": 11, "count": 2},
  {"op": "ListSnapshotBlocks", "kind": "throttle", "count": 1},
  {"op": "DescribeImages", "kind": "drop", "count": 1}]' >/dev/null
amiport_ok export -O qcow2 "$ami" "$T/faults.qcow2"
fakeaws_ctl GET stats >"$T/stats.json"
fakeaws_ctl POST faults '[]' >/dev/null
qemu-img compare -q -F raw "$T/faults.qcow2" "$src" || fail "export under injected faults differs"
n=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ops"]["GetSnapshotBlock"]["faults"])' "$T/stats.json")
[ "$n" -gt 10 ] || fail "only $n faults were injected"
info "export under $n injected faults identical"

# --- an interrupted export resumes without fetching again what it has ---
gets() { # GetSnapshotBlock requests the service has answered so far
  fakeaws_ctl GET stats | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["ops"]["GetSnapshotBlock"]["requests"])'
}
fakeaws_ctl POST faults '[{"op": "GetSnapshotBlock", "kind": "slow", "delay_ms": 150}]' >/dev/null
before=$(gets)
"$AMIPORT" export --resume --jobs 4 "$snap" "$T/res.raw" >"$T/res.out" 2>"$T/res.err" &
pid=$!
for _ in $(seq 200); do [ $(($(gets) - before)) -ge 8 ] && break; sleep 0.1; done
kill -INT "$pid"
rc=0; wait "$pid" || rc=$?
fakeaws_ctl POST faults '[]' >/dev/null
[ "$rc" -eq 1 ] || fail "the interrupted export exited $rc, expected 1: $(cat "$T/res.err")"
grep -q -- "--resume" "$T/res.err" || fail "the interrupted export does not say how to go on: $(cat "$T/res.err")"
[ ! -e "$T/res.raw" ] && [ -s "$T/res.raw.partial.state" ] || fail "an interrupted export must leave only res.raw.partial and its state: $(ls "$T")"
first=$(($(gets) - before))
before=$(gets)
amiport_ok export --resume "$snap" "$T/res.raw"
second=$(($(gets) - before))
stderr_has "resuming $snap: [1-9][0-9]* blocks already"
reused=$(grep -o 'resuming [^:]*: [0-9]* blocks' "$T/stderr" | grep -o '[0-9]* blocks' | cut -d' ' -f1)
qemu-img compare -q -f raw -F raw "$src" "$T/res.raw" || fail "the resumed export differs from the source"
[ ! -e "$T/res.raw.partial" ] && [ ! -e "$T/res.raw.partial.state" ] || fail "the resumed export left its partial files"
[ "$second" -eq $((total - reused)) ] ||
  fail "the resumed export fetched $second blocks; $total - $reused were missing"
info "export interrupted with $reused of $total blocks written; resumed fetching the other $second"
amiport_ok export --resume -O qcow2 "$snap" "$T/res.qcow2"
qemu-img compare -q -F raw "$T/res.qcow2" "$src" || fail "a resumable export to qcow2 differs from the source"
[ ! -e "$T/res.qcow2.partial" ] || fail "a resumable export to qcow2 left its partial file"

# --- block tokens that expire: listed again before they do, or when refused ---
lists() { # ListSnapshotBlocks requests the service has answered so far
  fakeaws_ctl GET stats | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["ops"].get("ListSnapshotBlocks", {}).get("requests", 0))'
}
stop_fakeaws
start_fakeaws --token-lifetime 3
fakeaws_ctl POST faults '[{"op": "GetSnapshotBlock", "kind": "slow", "delay_ms": 100}]' >/dev/null
amiport_ok export --jobs 4 "$snap" "$T/tok.raw"
n=$(lists)
qemu-img compare -q -f raw -F raw "$src" "$T/tok.raw" || fail "the export with short-lived tokens differs"
[ "$n" -ge 3 ] || fail "tokens living 3 s were listed $n times in a 6 s export (expected again before they expired)"
fakeaws_ctl POST faults '[{"op": "GetSnapshotBlock", "kind": "expired_token", "every": 40, "count": 2}]' >/dev/null
amiport_ok export "$snap" "$T/tok2.raw"
m=$(($(lists) - n))
qemu-img compare -q -f raw -F raw "$src" "$T/tok2.raw" || fail "the export with refused tokens differs"
[ "$m" -ge 2 ] || fail "two refused tokens led to $m listings (expected the first and at least one more)"
fakeaws_ctl POST faults '[]' >/dev/null
info "short-lived tokens listed again $((n - 1)) times; refused tokens answered by $((m - 1)) new listings"

# --- what cannot be exported says why ---
awsx ebs start-snapshot --volume-size 1 >"$T/pending.json" || fail "aws ebs start-snapshot"
pending=$(json_get "$T/pending.json" SnapshotId)
expect_rc 1 export "$pending" "$T/dst/pending.raw"
stderr_has "$pending" "pending|completed"
dir_empty "$T/dst"
awsx ec2 register-image --name instance-store-image --image-location bucket/image.manifest.xml \
  --architecture x86_64 >"$T/is.json" || fail "aws ec2 register-image (instance store)"
is=$(json_get "$T/is.json" ImageId)
expect_rc 1 export "$is" "$T/dst/is.raw"
stderr_has "instance-store"
# --- hostile answers (fixtures/hostile/): refused by name, nothing left ---
hostile() { # OP FILE PATTERN ARGS...
  local op=$1 file=$SRCDIR/fixtures/hostile/$2 pattern=$3
  shift 3
  fakeaws_ctl POST faults "$(/usr/bin/python3 -c 'import json,sys; print(json.dumps([{"op": sys.argv[1], "kind": "answer", "body": open(sys.argv[2]).read()}]))' "$op" "$file")" >/dev/null
  expect_rc 1 "$@"
  stderr_has "$pattern"
  dir_empty "$T/dst"
}
hostile ListSnapshotBlocks ebs-list-index-2e63.json "BlockIndex [0-9]+ is outside the volume" export "$snap" "$T/dst/h.raw"
hostile ListSnapshotBlocks ebs-list-repeated-index.json "BlockIndex 5 is not in ascending order" export "$snap" "$T/dst/h.raw"
hostile ListSnapshotBlocks ebs-list-block-size.json "BlockSize is 4096, not 524288" export "$snap" "$T/dst/h.raw"
hostile ListSnapshotBlocks ebs-list-volume-huge.json "VolumeSize is [0-9]+ GiB \\(must be 1 to 65536\\)" export "$snap" "$T/dst/h.raw"
hostile ListSnapshotBlocks ebs-list-wrong-types.json "block entry 0 lacks BlockIndex or BlockToken" info "ebs:$snap"
hostile DescribeImages ec2-images-entity-bomb.xml "DescribeImages: the answer is not XML" export "$ami" "$T/dst/h.raw"
! grep -q "root:" "$T/stderr" || fail "an external entity was expanded"
fakeaws_ctl POST faults '[]' >/dev/null

awsx ec2 deregister-image --image-id "$ami" >/dev/null || fail "aws ec2 deregister-image"
expect_rc 1 export "$ami" "$T/dst/gone.raw"
stderr_has "$ami" "does not exist|deregistered"
dir_empty "$T/dst"
exit 0
