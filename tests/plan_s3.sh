# plan_s3.sh - plan run and plan status with the ledger in S3
# (--results s3://BUCKET/PREFIX): tests/fakeaws for EBS and EC2,
# tests/s3rver for S3. One line done, one failed; each result is one
# PutObject that awscli reads back; status reads them (and counts a line
# with no object as pending). A line whose disk is a bundle in S3: plan
# check spools and checks it, plan run imports it (checked on its snapshot),
# a rerun makes no second snapshot or AMI, and the same key holding another
# bundle is another source (its image digest is the identity).
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl openssl cmp
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

# --- a bundle in S3 as a VM's disk ---
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 \
  -subj /CN=amiport-test >/dev/null 2>&1 || fail "openssl cannot make a key pair"
bundle_up() { # SRC PREFIX: bundle SRC and put it at s3://$BUCKET/PREFIX/disk.img.manifest.xml
  rm -rf "$T/b" && mkdir -p "$T/b"
  amiport_ok bundle --privatekey "$T/key.pem" --cert "$T/cert.pem" --ec2cert "$T/cert.pem" \
    --user 123456789012 --prefix disk.img --part-size 1 -d "$T/b" \
    --block-device-mapping ami=sda1,root=/dev/sda1,ephemeral0=sdb "$1"
  amiport_ok upload-bundle --bucket "$BUCKET/$2" --manifest "$T/b/disk.img.manifest.xml"
}
bundle_up "$P/bios.raw" bundles
cat >"$P/bfleet.jsonl" <<JSONL
{"name": "fromstore", "disks": ["s3://$BUCKET/bundles/disk.img.manifest.xml"], "ami_name": "from store"}
{"name": "mixed", "disks": ["bios.raw", "s3://$BUCKET/bundles/disk.img.manifest.xml"], "ami_name": "mixed"}
JSONL
expect_rc 1 plan check --privatekey "$T/key.pem" "$P/bfleet.jsonl"
grep -E '^0 +fromstore +1 +x86_64 +legacy-bios +import$' "$T/stdout" >/dev/null ||
  fail "check: the bundle line: $(cat "$T/stdout")"
grep -E '^1 +mixed .* refused: .*only disk' "$T/stdout" >/dev/null || fail "check: mixed: $(cat "$T/stdout")"
expect_rc 1 plan check "$P/bfleet.jsonl" # no key: the line says what it needs
grep -E '^0 +fromstore .* refused: .*--privatekey' "$T/stdout" >/dev/null || fail "check without a key: $(cat "$T/stdout")"
L=s3://$BUCKET/runs/bundles
amiport_ok plan run --privatekey "$T/key.pem" "$P/bfleet.jsonl" --task 0 --results "$L"
s3x s3 cp --only-show-errors "$L/fromstore.json" "$T/fs.json" || fail "awscli: get fromstore.json"
[ "$(json_get "$T/fs.json" state)" = done ] || fail "fromstore: $(cat "$T/fs.json")"
AMI=$(json_get "$T/fs.json" image_id)
SNAP=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_ids"][0])' "$T/fs.json") # first_snap
[[ $AMI == ami-* && $SNAP == snap-* ]] || fail "fromstore: no ids: $(cat "$T/fs.json")"
snapshot_equals "$SNAP" "$P/bios.raw"
awsx ec2 describe-images --image-ids "$AMI" >"$T/di.json" || fail "aws ec2 describe-images failed"
/usr/bin/python3 - "$T/di.json" <<'PY' || fail "describe-images: $(cat "$T/di.json")"
import json, sys
im = json.load(open(sys.argv[1]))["Images"][0]
assert im["Architecture"] == "x86_64" and im.get("BootMode") == "legacy-bios", im
assert {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"} in im["BlockDeviceMappings"], im
PY
before=$(fakeaws_made)
amiport_ok plan run --privatekey "$T/key.pem" "$P/bfleet.jsonl" --task 0 --results "$L"
[ "$(fakeaws_made)" = "$before" ] || fail "a rerun of a done bundle line made a snapshot or an AMI: $before -> $(fakeaws_made)"
s3x s3 cp --only-show-errors "$L/fromstore.json" "$T/fs2.json" || fail "awscli: get fromstore.json"
[ "$(json_get "$T/fs2.json" image_id)" = "$AMI" ] || fail "the rerun names another AMI: $(cat "$T/fs2.json")"
info "a bundle in S3 as a plan's disk: checked, imported equal, ephemeral0 kept, a rerun makes nothing"

# the bundle's image digest is its identity: a rerun of a done line takes the
# same snapshot; another bundle put at the same key is another snapshot
cat >"$P/ident.jsonl" <<JSONL
{"name": "ident", "disks": ["s3://$BUCKET/ident/disk.img.manifest.xml"], "ami_name": "ident", "options": {"no_register": true}}
JSONL
first_snap() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_ids"][0])' "$1"; }
bundle_up "$P/bios.raw" ident
amiport_ok plan run --privatekey "$T/key.pem" "$P/ident.jsonl" --task 0 --results "$T/ir"
S1=$(first_snap "$T/ir/ident.json")
amiport_ok plan run --privatekey "$T/key.pem" "$P/ident.jsonl" --task 0 --results "$T/ir"
[ "$(first_snap "$T/ir/ident.json")" = "$S1" ] && [ "$(json_get "$T/ir/ident.json" bytes)" = 0 ] ||
  fail "a rerun of the same bundle did not take $S1: $(cat "$T/ir/ident.json")"
cp --sparse=always "$P/bios.raw" "$P/bios2.raw"
printf 'another disk' | dd of="$P/bios2.raw" bs=1 seek=$(( $(stat -c %s "$P/bios.raw") - 4096 )) conv=notrunc status=none
bundle_up "$P/bios2.raw" ident
amiport_ok plan run --privatekey "$T/key.pem" "$P/ident.jsonl" --task 0 --results "$T/ir"
S2=$(first_snap "$T/ir/ident.json")
[[ $S2 == snap-* && $S2 != "$S1" ]] || fail "another bundle at the same key took $S1 again: $(cat "$T/ir/ident.json")"
snapshot_equals "$S2" "$P/bios2.raw"
info "a bundle's identity is its digest: the same one resumes $S1, another at the same key makes $S2"
