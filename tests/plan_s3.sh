# plan_s3.sh - plan run and plan status with the ledger in S3
# (--results s3://BUCKET/PREFIX): tests/fakeaws for EBS and EC2,
# tests/s3rver for S3. One line done, one failed; each result is one
# PutObject that awscli reads back; status reads them (and counts a line
# with no object as pending).
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
ensure_fixtures 1
start_fakeaws
start_s3rver

BUCKET=amiport-ledger
s3x s3api create-bucket --bucket "$BUCKET" >/dev/null || fail "awscli: create-bucket $BUCKET"
P=$T/plan
mkdir -p "$P"
cp --sparse=always "$FIXTURES/x86_64-bios-mbr.raw" "$P/bios.raw"
qemu-img create -q -f qcow2 "$P/broken.qcow2" 64M || fail "qemu-img create failed"
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of="$P/broken.qcow2" bs=1 seek=40 conv=notrunc status=none
cat >"$P/s3fleet.jsonl" <<'JSONL'
{"name": "bios", "disks": ["bios.raw"], "ami_name": "s3 bios", "options": {"sparse": "holes"}}
{"name": "broken", "disks": ["broken.qcow2"], "ami_name": "s3 broken"}
{"name": "later", "disks": ["bios.raw"], "ami_name": "s3 later"}
JSONL
L=s3://$BUCKET/runs/one

amiport_ok plan run "$P/s3fleet.jsonl" --task 0 --results "$L"
expect_rc 1 plan run "$P/s3fleet.jsonl" --task 1 --results "$L"
s3x s3api list-objects-v2 --bucket "$BUCKET" --prefix runs/one/ >"$T/list.json" || fail "awscli: list-objects-v2"
/usr/bin/python3 - "$T/list.json" <<'PY' || fail "objects: $(cat "$T/list.json")"
import json, sys
keys = sorted(o["Key"] for o in json.load(open(sys.argv[1]))["Contents"])
assert keys == ["runs/one/bios.json", "runs/one/broken.json"], keys
PY
s3x s3 cp --only-show-errors "$L/bios.json" "$T/bios.json" || fail "awscli: get bios.json"
[ "$(json_get "$T/bios.json" state)" = done ] || fail "bios: $(cat "$T/bios.json")"
[[ $(json_get "$T/bios.json" image_id) == ami-* ]] || fail "bios: no AMI: $(cat "$T/bios.json")"
s3x s3 cp --only-show-errors "$L/broken.json" "$T/broken.json" || fail "awscli: get broken.json"
[ "$(json_get "$T/broken.json" state)" = failed ] || fail "broken: $(cat "$T/broken.json")"

expect_rc 1 plan status "$P/s3fleet.jsonl" --results "$L"
grep -q '^3 lines: 1 done, 1 failed, 0 refused, 1 pending' "$T/stdout" || fail "status: $(cat "$T/stdout")"
grep -q '^  failed broken: .*broken.qcow2' "$T/stdout" || fail "status: no reason for broken: $(cat "$T/stdout")"
expect_rc 1 plan status "$P/s3fleet.jsonl" --results "s3://$BUCKET/runs/none"
grep -q '3 pending' "$T/stdout" || fail "status of an empty prefix: $(cat "$T/stdout")"
expect_rc 2 plan run "$P/s3fleet.jsonl" --task 0 --results "s3://x"
info "S3 ledger: one PutObject a line, read back by awscli and by plan status"
