# aws_info.sh - what an AMI and a snapshot are, against tests/fakeaws:
# `amiport info ami-...` and `info snap-...` checked field by field (and
# against what Debian's awscli reads from the same emulator); the AMIs that
# map a snapshot; BILLING_CODES_LOST on `check ami-...` (a warning: the exit
# status stays the same) and on `export` for an AMI registered with a billing
# product and one with a Windows platform; UEFI variables from `import
# --uefi-data` and `register --uefi-data` back out of `export` as
# DST.uefi-data; an instance-store AMI. Every emulator call amiport makes
# here is also made with /usr/bin/aws, so botocore parses each answer.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd curl cmp base64
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws --page-size 10

# json_check FILE PYTHON-DICT - every key of FILE's object equals the dict's,
# and FILE has no other key
json_check() {
  /usr/bin/python3 - "$1" "$2" <<'EOF' || fail "$(cat "$T/jc.out")"
import json, sys
got = json.load(open(sys.argv[1]))
want = eval(sys.argv[2], {"null": None, "true": True, "false": False})
bad = ["%s: got %r, want %r" % (k, got.get(k, "<absent>"), want.get(k, "<absent>"))
       for k in sorted(set(got) | set(want)) if got.get(k, "<absent>") != want.get(k, "<absent>")]
open(sys.argv[1] + ".diff", "w").write("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}
# a failing json_check says what differs
json_check_ok() {
  json_check "$1" "$2" 2>/dev/null || true
  [ ! -s "$1.diff" ] || fail "$3: $(cat "$1.diff")"
}

py() { /usr/bin/python3 -c "$@"; }

# The UEFI variable store as RegisterImage takes it: base64 text (random
# bytes stand in for python-uefivars' output)
head -c 6000 /dev/urandom | base64 -w 0 >"$T/vars.b64"
echo >>"$T/vars.b64"

# --- an imported AMI: info field by field --------------------------------------
src=$FIXTURES/x86_64-uefi-gpt.raw
run_amiport check -f raw "$src"
local_rc=$RC
amiport_ok import -f raw --output=json --sparse holes --name anatomy-source --uefi-data "$T/vars.b64" "$src"
cp "$T/stdout" "$T/imp.json"
snap=$(json_get "$T/imp.json" snapshot_id)
ami=$(json_get "$T/imp.json" image_id)
uploaded=$(json_get "$T/imp.json" blocks_uploaded)
boot=$(json_get "$T/imp.json" boot_mode)
ena=$(json_get "$T/imp.json" ena_support)
[[ $ami == ami-* && $snap == snap-* ]] || fail "import gave no AMI: $(cat "$T/imp.json")"
[[ $boot == uefi* ]] || fail "the UEFI fixture was registered with boot mode '$boot'"
if [ "$ena" = true ]; then ena_py=true; sriov='"simple"'; else ena_py=null; sriov=null; fi

amiport_ok info --output=json "$ami"
cp "$T/stdout" "$T/ami.json"
json_check_ok "$T/ami.json" "{
  'image_id': '$ami', 'name': 'anatomy-source', 'state': 'available', 'root_device_type': 'ebs',
  'root_device_name': '/dev/xvda', 'architecture': 'x86_64', 'virtualization_type': 'hvm',
  'boot_mode': '$boot', 'ena_support': $ena_py, 'sriov_net_support': $sriov, 'tpm_support': null,
  'imds_support': 'v2.0', 'uefi_data': true, 'image_location': '123456789012/anatomy-source',
  'platform': null, 'platform_details': 'Linux/UNIX', 'usage_operation': 'RunInstances',
  'billing_products': [], 'product_codes': [], 'billing_codes_lost': null,
  'block_device_mappings': [{'device_name': '/dev/xvda', 'snapshot_id': '$snap',
    'volume_size_gib': 1, 'volume_type': 'gp3', 'encrypted': false,
    'delete_on_termination': true, 'virtual_name': null, 'no_device': false}]}" "info $ami"

# what awscli reads from the same answer agrees
awsx ec2 describe-images --image-ids "$ami" >"$T/aws-ami.json" || fail "aws ec2 describe-images failed"
py '
import json, sys
a = json.load(open(sys.argv[1]))["Images"][0]
o = json.load(open(sys.argv[2]))
pairs = [("ImageId", "image_id"), ("Name", "name"), ("State", "state"), ("RootDeviceType", "root_device_type"),
         ("RootDeviceName", "root_device_name"), ("Architecture", "architecture"),
         ("VirtualizationType", "virtualization_type"), ("BootMode", "boot_mode"),
         ("ImdsSupport", "imds_support"), ("ImageLocation", "image_location"),
         ("PlatformDetails", "platform_details"), ("UsageOperation", "usage_operation")]
bad = [(k, a.get(k), o[j]) for k, j in pairs if a.get(k) != o[j]]
m = a["BlockDeviceMappings"][0]
if (m["DeviceName"], m["Ebs"]["SnapshotId"], m["Ebs"]["VolumeSize"], m["Ebs"]["VolumeType"]) != \
   ("/dev/xvda", o["block_device_mappings"][0]["snapshot_id"], 1, "gp3"):
    bad.append(("BlockDeviceMappings", m))
sys.exit("awscli and amiport disagree: %r" % bad if bad else 0)' "$T/aws-ami.json" "$T/ami.json" ||
  fail "describe-images through awscli differs from amiport info"

amiport_ok info "$ami"
grep -q "^UEFI data: *present" "$T/stdout" || fail "info (human) does not say the UEFI data is present: $(cat "$T/stdout")"
grep -q "/dev/xvda.*$snap" "$T/stdout" || fail "info (human) lacks the root mapping: $(cat "$T/stdout")"
grep -q "ebs-backed" "$T/stdout" || fail "info (human) does not say the AMI is EBS-backed"
info "info $ami: every field as registered"

# the UEFI variables through awscli: what import sent, byte for byte
awsx ec2 describe-image-attribute --image-id "$ami" --attribute uefiData >"$T/uefi.json" ||
  fail "aws ec2 describe-image-attribute --attribute uefiData failed"
[ "$(json_get "$T/uefi.json" UefiData Value)" = "$(cat "$T/vars.b64")" ] ||
  fail "the AMI's uefiData is not the --uefi-data file"
awsx ec2 describe-image-attribute --image-id "$ami" --attribute bootMode >"$T/bm.json" ||
  fail "aws ec2 describe-image-attribute --attribute bootMode failed"
[ "$(json_get "$T/bm.json" BootMode Value)" = "$boot" ] || fail "bootMode attribute: $(cat "$T/bm.json")"
if awsx ec2 describe-image-attribute --image-id "$ami" --attribute blockDeviceMapping >"$T/x.json" 2>"$T/x.err"; then
  fail "describe-image-attribute blockDeviceMapping must be refused, as EC2 refuses it"
fi
grep -q AuthFailure "$T/x.err" || fail "blockDeviceMapping attribute: $(cat "$T/x.err")"

# --- the snapshot: blocks and the AMIs that use it ------------------------------
amiport_ok info --output=json "$snap"
cp "$T/stdout" "$T/snap.json"
json_check_ok "$T/snap.json" "{'snapshot_id': '$snap', 'state': 'completed', 'volume_size_gib': 1,
  'encrypted': false, 'block_size': 524288, 'allocated_blocks': $uploaded,
  'used_by_images': ['$ami']}" "info $snap"
pages=$(fakeaws_ctl GET stats | py 'import json,sys; print(json.load(sys.stdin)["ops"]["ListSnapshotBlocks"]["requests"])')
[ "$pages" -ge $(( (uploaded + 9) / 10 )) ] || fail "amiport asked for $pages ListSnapshotBlocks pages of 10"
# awscli pages through the same list: its block count is amiport's
n=0 next=
while :; do
  awsx ebs list-snapshot-blocks --snapshot-id "$snap" ${next:+--next-token "$next"} >"$T/blocks.json" ||
    fail "aws ebs list-snapshot-blocks failed"
  n=$((n + $(py 'import json,sys; print(len(json.load(open(sys.argv[1]))["Blocks"]))' "$T/blocks.json")))
  next=$(json_get "$T/blocks.json" NextToken)
  [ -n "$next" ] || break
done
[ "$n" = "$uploaded" ] || fail "awscli lists $n blocks, import uploaded $uploaded"
[ "$uploaded" -gt 20 ] || fail "the snapshot has only $uploaded blocks: ListSnapshotBlocks paging (10 a page) is not exercised"

info "info $snap: $uploaded blocks of 512 KiB"

# a second AMI of the same snapshot, with a billing product and an instance
# store disk, registered by awscli
awsx ec2 register-image --name anatomy-billing --architecture x86_64 --virtualization-type hvm \
  --root-device-name /dev/xvda --boot-mode uefi --billing-products bp-6ba54002 \
  --block-device-mappings "DeviceName=/dev/xvda,Ebs={SnapshotId=$snap,VolumeType=gp2,DeleteOnTermination=false}" \
  "DeviceName=/dev/sdb,VirtualName=ephemeral0" >"$T/reg.json" || fail "aws ec2 register-image --billing-products failed"
ami_bp=$(json_get "$T/reg.json" ImageId)
awsx ec2 describe-images --filters "Name=block-device-mapping.snapshot-id,Values=$snap" \
  --query 'sort(Images[].ImageId)' >"$T/users.json" || fail "describe-images with the snapshot filter failed"
amiport_ok info --output=json "$snap"
py 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))["used_by_images"]
sys.exit(0 if a == sorted(b) == sorted(sys.argv[3:]) else "awscli %r, amiport %r" % (a, b))' \
  "$T/users.json" "$T/stdout" "$ami" "$ami_bp" || fail "used_by_images is not the two AMIs"
awsx ec2 describe-images --filters "Name=block-device-mapping.snapshot-id,Values=snap-00000000000000000" \
  --query 'Images[].ImageId' >"$T/none.json" || fail "describe-images with an unused snapshot failed"
[ "$(cat "$T/none.json" | tr -d ' \n')" = "[]" ] || fail "the filter matched images of another snapshot"

amiport_ok info --output=json "$ami_bp"
cp "$T/stdout" "$T/bp.json"
py '
import json, sys
o = json.load(open(sys.argv[1]))
want = [{"device_name": "/dev/xvda", "snapshot_id": sys.argv[2], "volume_size_gib": 1, "volume_type": "gp2",
         "encrypted": False, "delete_on_termination": False, "virtual_name": None, "no_device": False},
        {"device_name": "/dev/sdb", "snapshot_id": None, "volume_size_gib": None, "volume_type": None,
         "encrypted": None, "delete_on_termination": None, "virtual_name": "ephemeral0", "no_device": False}]
assert o["block_device_mappings"] == want, o["block_device_mappings"]
assert o["billing_products"] == ["bp-6ba54002"], o["billing_products"]
assert o["uefi_data"] is False
assert o["billing_codes_lost"] == "billing product bp-6ba54002", o["billing_codes_lost"]' "$T/bp.json" "$snap" ||
  fail "info $ami_bp: $(cat "$T/bp.json")"

# --- a Windows AMI: the platform the emulator's control API sets -----------------
amiport_ok register --name anatomy-windows --output=json "$snap"
ami_win=$(json_get "$T/stdout" image_id)
fakeaws_ctl POST "images/$ami_win/billing" \
  '{"Platform": "windows", "ProductCodes": [{"ProductCodeId": "8fjk3h2nd7slq9x", "ProductCodeType": "marketplace"}]}' >/dev/null
awsx ec2 describe-images --image-ids "$ami_win" \
  --query 'Images[0].[Platform,PlatformDetails,UsageOperation,ProductCodes[0].ProductCodeId]' \
  --output text >"$T/win.txt" || fail "describe-images of the Windows AMI failed"
[ "$(tr -s ' \t' ' ' <"$T/win.txt")" = "windows Windows RunInstances:0002 8fjk3h2nd7slq9x" ] ||
  fail "awscli reads the Windows AMI as: $(cat "$T/win.txt")"
awsx ec2 describe-images --filters Name=platform,Values=windows --query 'Images[].ImageId' --output text >"$T/w.txt" ||
  fail "describe-images --filters platform failed"
[ "$(cat "$T/w.txt")" = "$ami_win" ] || fail "the platform filter found: $(cat "$T/w.txt")"
awsx ec2 describe-image-attribute --image-id "$ami_win" --attribute productCodes >"$T/pc.json" ||
  fail "describe-image-attribute productCodes failed"
[ "$(json_get "$T/pc.json" ProductCodes)" = '[{"ProductCodeId": "8fjk3h2nd7slq9x", "ProductCodeType": "marketplace"}]' ] ||
  fail "productCodes attribute: $(cat "$T/pc.json")"
amiport_ok info --output=json "$ami_win"
cp "$T/stdout" "$T/win.json"
[ "$(json_get "$T/win.json" platform)" = windows ] && [ "$(json_get "$T/win.json" platform_details)" = Windows ] &&
  [ "$(json_get "$T/win.json" usage_operation)" = RunInstances:0002 ] ||
  fail "info of the Windows AMI: $(cat "$T/win.json")"
[ "$(json_get "$T/win.json" product_codes)" = '[{"product_code_id": "8fjk3h2nd7slq9x", "product_code_type": "marketplace"}]' ] ||
  fail "info of the Windows AMI: product codes $(json_get "$T/win.json" product_codes)"

# --- BILLING_CODES_LOST: check (a warning, same exit status) and export ----------
# findings FILE - the BILLING_CODES_LOST findings of a check JSON, "severity: message"
findings() {
  py 'import json,sys
for f in json.load(open(sys.argv[1]))["findings"]:
    if f["code"] == "BILLING_CODES_LOST": print("%s: %s" % (f["severity"], f["message"]))' "$1"
}
run_amiport check --output=json "$ami"
[ "$RC" = "$local_rc" ] || fail "check $ami exited $RC, check of the fixture $local_rc"
[ -z "$(findings "$T/stdout")" ] || fail "an AMI with no billing codes got BILLING_CODES_LOST"
for a in "$ami_bp:billing product bp-6ba54002" "$ami_win:Windows \(RunInstances:0002\), product code 8fjk3h2nd7slq9x \(marketplace\)"; do
  id=${a%%:*} want=${a#*:}
  run_amiport check --output=json "$id"
  [ "$RC" = "$local_rc" ] || fail "check $id exited $RC: a warning must not change the exit status ($local_rc)"
  findings "$T/stdout" >"$T/f.txt"
  grep -Eq "^warning: $id carries $want" "$T/f.txt" || fail "check $id: BILLING_CODES_LOST is: $(cat "$T/f.txt")"
  run_amiport check "$id"
  grep -Eq "warning +BILLING_CODES_LOST: .*$want" "$T/stdout" || fail "check $id (human) lacks the finding"
  amiport_ok export "$id" "$T/$id.raw"
  stderr_has "warning: BILLING_CODES_LOST: $id carries $want"
  [ ! -e "$T/$id.raw.uefi-data" ] || fail "export of $id wrote UEFI data it does not have"
done
info "BILLING_CODES_LOST on check and export, exit status unchanged"

# --- UEFI variables: export writes them beside the image --------------------------
mkdir "$T/out"
amiport_ok export "$ami" "$T/out/disk.raw"
cmp "$T/vars.b64" "$T/out/disk.raw.uefi-data" || fail "DST.uefi-data differs from the --uefi-data file"
grep -q "BILLING_CODES_LOST" "$T/stderr" && fail "export of an AMI with no billing codes warned"
[ "$(ls -A "$T/out" | sort | tr '\n' ' ')" = "disk.raw disk.raw.uefi-data " ] ||
  fail "export left other files: $(ls -A "$T/out")"
# an existing DST.uefi-data is refused before anything is fetched, kept with --force
echo old >"$T/out/two.raw.uefi-data"
expect_rc 1 export "$ami" "$T/out/two.raw"
stderr_has "two.raw.uefi-data: already exists"
[ ! -e "$T/out/two.raw" ] || fail "export wrote the image although DST.uefi-data was in the way"
amiport_ok export --force "$ami" "$T/out/two.raw"
cmp "$T/vars.b64" "$T/out/two.raw.uefi-data" || fail "export --force did not replace DST.uefi-data"
[ -z "$(ls -A "$T/out" | grep amiport-)" ] || fail "export left a temporary file: $(ls -A "$T/out")"
info "import --uefi-data -> export: DST.uefi-data identical"

# --- register --uefi-data, and RegisterImage UefiData from awscli -----------------
amiport_ok register --name anatomy-uefi --boot-mode uefi --uefi-data "$T/vars.b64" --output=json "$snap"
ami_reg=$(json_get "$T/stdout" image_id)
amiport_ok info --output=json "$ami_reg"
[ "$(json_get "$T/stdout" uefi_data)" = true ] && [ "$(json_get "$T/stdout" boot_mode)" = uefi ] ||
  fail "register --uefi-data: info says $(cat "$T/stdout")"
amiport_ok export "$ami_reg" "$T/reg.raw"
cmp "$T/vars.b64" "$T/reg.raw.uefi-data" || fail "register --uefi-data -> export: DST.uefi-data differs"
awsx ec2 register-image --name anatomy-aws-uefi --architecture x86_64 --virtualization-type hvm \
  --root-device-name /dev/xvda --boot-mode uefi --uefi-data "$(cat "$T/vars.b64")" \
  --block-device-mappings "DeviceName=/dev/xvda,Ebs={SnapshotId=$snap}" >"$T/reg2.json" ||
  fail "aws ec2 register-image --uefi-data failed"
ami_aws=$(json_get "$T/reg2.json" ImageId)
amiport_ok info "$ami_aws"
grep -q "^UEFI data: *present" "$T/stdout" || fail "info of an AMI registered by awscli with --uefi-data"
amiport_ok info --output=json "$ami_win"
[ "$(json_get "$T/stdout" uefi_data)" = false ] || fail "an AMI without UEFI data says uefi_data true"
info "register --uefi-data -> info -> export: identical"

# --uefi-data refused clearly: no UEFI boot mode, not base64, too long, missing
expect_rc 2 register --name anatomy-bad --uefi-data "$T/vars.b64" "$snap"
stderr_has "uefi-data needs a uefi or uefi-preferred boot mode"
printf 'not base64 at all!\n' >"$T/bad.b64"
expect_rc 2 register --name anatomy-bad --boot-mode uefi --uefi-data "$T/bad.b64" "$snap"
stderr_has "bad.b64: byte 3 is 0x20, not base64"
head -c 48003 /dev/zero | base64 -w 0 >"$T/big.b64"
expect_rc 2 register --name anatomy-bad --boot-mode uefi --uefi-data "$T/big.b64" "$snap"
stderr_has "big.b64: more than 64000 characters"
expect_rc 2 import --name anatomy-bad --uefi-data "$T/nonexistent" "$src"
stderr_has "nonexistent: No such file"
expect_rc 2 import -f raw --name anatomy-bad --boot-mode legacy-bios --uefi-data "$T/vars.b64" "$src"
stderr_has "the boot mode is legacy-bios"
# the emulator refuses what EC2 refuses
if awsx ec2 register-image --name anatomy-bad --root-device-name /dev/xvda --boot-mode legacy-bios \
    --uefi-data "$(cat "$T/vars.b64")" --block-device-mappings "DeviceName=/dev/xvda,Ebs={SnapshotId=$snap}" \
    >/dev/null 2>"$T/x.err"; then
  fail "RegisterImage took UefiData with a legacy-bios boot mode"
fi
grep -q InvalidParameterCombination "$T/x.err" || fail "UefiData + legacy-bios: $(cat "$T/x.err")"

# unknown parameters are still refused (a signed request botocore's model
# would not send)
for action in "DescribeImageAttribute&ImageId=$ami&Attribute=uefiData" \
    "DescribeImages&ImageId.1=$ami&Platform=windows"; do
  /usr/bin/python3 - "$FAKEAWS_URL" "Action=$action&Version=2016-11-15&Bogus=1" >"$T/unk.out" <<'EOF2' ||
import sys, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, body = sys.argv[1] + "/", sys.argv[2]
rq = AWSRequest(method="POST", url=url, data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "ec2", "us-east-1").add_auth(rq)
try:
    urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), headers=dict(rq.headers)))
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().replace("\n", " "))
EOF2
    fail "the signed request failed: $(cat "$T/unk.out")"
  grep -q "^400 .*<Code>UnknownParameter</Code>" "$T/unk.out" || fail "${action%%&*} with Bogus=1: $(cat "$T/unk.out")"
done

# --- an instance-store AMI: a bundle manifest in S3, no snapshot -------------------
amiport_ok register --name anatomy-bundle --image-location amiport-test/anatomy/disk.manifest.xml --output=json
ami_is=$(json_get "$T/stdout" image_id)
amiport_ok info --output=json "$ami_is"
cp "$T/stdout" "$T/is.json"
[ "$(json_get "$T/is.json" root_device_type)" = instance-store ] &&
  [ "$(json_get "$T/is.json" image_location)" = amiport-test/anatomy/disk.manifest.xml ] &&
  [ "$(json_get "$T/is.json" root_device_name)" = /dev/sda1 ] &&
  [ "$(json_get "$T/is.json" block_device_mappings)" = "[]" ] ||
  fail "info of an instance-store AMI: $(cat "$T/is.json")"
amiport_ok info "$ami_is"
grep -q "^Bundle: *s3://amiport-test/anatomy/disk.manifest.xml" "$T/stdout" ||
  fail "info (human) of an instance-store AMI lacks its bundle: $(cat "$T/stdout")"
expect_rc 1 export "$ami_is" "$T/is.raw"
stderr_has "instance-store-backed AMI"
info "instance-store AMI described"

# --- errors: ids that do not exist ------------------------------------------------
expect_rc 1 info ami-0123456789abcdef0
stderr_has "ami-0123456789abcdef0 does not exist"
stderr_is_error
expect_rc 1 info snap-0123456789abcdef0
stderr_has "snap-0123456789abcdef0 does not exist"
