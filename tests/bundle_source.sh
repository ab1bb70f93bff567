# bundle_source.sh - a bundle read as an image: PATH.manifest.xml or
# s3://BUCKET/PREFIX.manifest.xml with --privatekey is accepted by info, map,
# convert, check and import.
#
# A bootable fixture is bundled; locally, convert gives the fixture back
# (cmp), map shows the tar member's sparse map, check reports what it
# reports on the fixture. Through the SigV4-checking S3 server
# (tests/s3rver) and tests/fakeaws: import s3://... gives a snapshot that
# botocore reads back identical to the fixture and an EBS-backed AMI
# (Debian's awscli describes it). With one part changed in S3 the import
# fails naming that part, its snapshot is deleted and nothing is registered.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd openssl cmp mkfs.ext4
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
src=$FIXTURES/x86_64-bios-mbr.raw
size=$(stat -c %s "$src")

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 \
  -subj /CN=amiport-test >/dev/null 2>&1 || fail "openssl cannot make a key pair"
mkdir -p "$T/b"
amiport_ok bundle --privatekey "$T/key.pem" --cert "$T/cert.pem" --ec2cert "$T/cert.pem" \
  --user 123456789012 --prefix disk.img --part-size 1 -d "$T/b" \
  --block-device-mapping ami=sda1,root=/dev/sda1,ephemeral0=sdb "$src"
M=$T/b/disk.img.manifest.xml
nparts=$(ls "$T/b"/disk.img.part.* | wc -l)
[ "$nparts" -ge 3 ] || fail "expected several 1 MiB parts, got $nparts"

# --- local: info, map, convert, check ---
expect_rc 2 info "$M"
stderr_has "privatekey"
amiport_ok info --output=json --privatekey "$T/key.pem" "$M"
[ "$(json_get "$T/stdout" format)" = bundle ] || fail "info: format is not bundle"
[ "$(json_get "$T/stdout" virtual-size)" = "$size" ] || fail "info: wrong virtual size"
amiport_ok map --output=json --privatekey "$T/key.pem" "$M"
grep -q '"present": false' "$T/stdout" || fail "map of the bundle shows no holes (the sparse map is lost)"
amiport_ok convert --privatekey "$T/key.pem" -O raw "$M" "$T/back.raw"
cmp "$src" "$T/back.raw" || fail "convert of the bundle differs from the fixture"
amiport_ok convert --privatekey "$T/key.pem" --cert "$T/cert.pem" -O qcow2 "$M" "$T/back.qcow2"
qimg compare -q "$src" "$T/back.qcow2" || fail "qcow2 from the bundle differs from the fixture"
expect_rc 2 convert --privatekey "$T/key.pem" --verify -O raw "$M" "$T/verify.raw"
stderr_has "stream"
amiport_ok check --output=json "$src"
want_arch=$(json_get "$T/stdout" ami architecture)
amiport_ok check --output=json --privatekey "$T/key.pem" "$M"
[ "$(json_get "$T/stdout" ami architecture)" = "$want_arch" ] || fail "check of the bundle: wrong architecture"
ls "${TMPDIR:-/tmp}"/amiport-spool-* 2>/dev/null && fail "check left its spool file behind"

# a damaged part: the error names it, no output is left
cp -r "$T/b" "$T/bad"
printf 'X' | dd of="$T/bad/disk.img.part.01" bs=1 seek=100 conv=notrunc status=none
expect_rc 1 convert --privatekey "$T/key.pem" -O raw "$T/bad/disk.img.manifest.xml" "$T/bad.raw"
stderr_has "disk.img.part.01" "SHA-1"
[ ! -e "$T/bad.raw" ] || fail "a damaged bundle left an output"

# an old instance-store image: a bare filesystem with pv-grub's menu.lst and
# an ephemeral mount; check on its bundle says so
mkdir -p "$T/pv/etc" "$T/pv/boot/grub"
printf 'LABEL=/ / ext4 defaults 1 1\n/dev/sdb /mnt auto defaults 0 2\n' >"$T/pv/etc/fstab"
printf 'ID=amzn\nVERSION_ID=2011.09\n' >"$T/pv/etc/os-release"
printf 'default 0\ntitle Amazon Linux\nroot (hd0)\nkernel /boot/vmlinuz root=LABEL=/\n' \
  >"$T/pv/boot/grub/menu.lst"
truncate -s 8M "$T/pv.img"
mkfs.ext4 -q -F -L / -d "$T/pv" "$T/pv.img" || fail "mkfs.ext4 -d"
mkdir -p "$T/pvb"
amiport_ok bundle --privatekey "$T/key.pem" --cert "$T/cert.pem" --ec2cert "$T/cert.pem" \
  --user 123456789012 --arch x86_64 -d "$T/pvb" "$T/pv.img"
expect_rc 1 check --output=json --privatekey "$T/key.pem" "$T/pvb/pv.img.manifest.xml"
"$PYTHON" - "$T/stdout" <<'PY' || fail "check of a bare-filesystem bundle: $(cat "$T/stdout")"
import json, sys
codes = [f["code"] for f in json.load(open(sys.argv[1]))["findings"]]
assert "PARAVIRTUAL_ONLY" in codes and "FSTAB_EPHEMERAL" in codes, codes
PY

# --- S3 and EBS ---
start_fakeaws
start_s3rver
BUCKET=amiport-src
s3x s3 mb "s3://$BUCKET" >/dev/null || fail "cannot make the bucket"
amiport_ok upload-bundle --bucket "$BUCKET/images" --manifest "$M"
URL=s3://$BUCKET/images/disk.img.manifest.xml
amiport_ok import --output=json -j 8 --privatekey "$T/key.pem" --name from-bundle "$URL"
cp "$T/stdout" "$T/imp.json"
SNAP=$(json_get "$T/imp.json" snapshot_id)
AMI=$(json_get "$T/imp.json" image_id)
[[ $SNAP == snap-* && $AMI == ami-* ]] || fail "import printed no ids: $(cat "$T/imp.json")"
/usr/bin/python3 "$SRCDIR/tests/ebs_readback.py" "$FAKEAWS_URL" "$SNAP" "$T/snap.raw" "$size" \
  >/dev/null 2>"$T/rb.err" || { cat "$T/rb.err" >&2; fail "reading back $SNAP failed"; }
cmp "$src" "$T/snap.raw" || fail "the snapshot imported from S3 differs from the fixture"
awsx ec2 describe-images --image-ids "$AMI" >"$T/di.json" || fail "aws ec2 describe-images failed"
/usr/bin/python3 - "$T/di.json" "$SNAP" <<'PY' || fail "describe-images: not the EBS-backed AMI expected"
import json, sys
im = json.load(open(sys.argv[1]))["Images"][0]
assert im["RootDeviceType"] == "ebs", im
assert im["Architecture"] == "x86_64", im
assert im.get("BootMode") == "legacy-bios", im
assert any(m.get("Ebs", {}).get("SnapshotId") == sys.argv[2] for m in im["BlockDeviceMappings"]), im
assert {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"} in im["BlockDeviceMappings"], im
PY

# the guest is checked on the completed snapshot before registration: the
# bare-filesystem bundle is refused (PARAVIRTUAL_ONLY), and so is a bundle
# whose manifest names another architecture than the guest's
amiport_ok upload-bundle --bucket "$BUCKET/pv" --manifest "$T/pvb/pv.img.manifest.xml"
expect_rc 1 import --privatekey "$T/key.pem" --name pv "s3://$BUCKET/pv/pv.img.manifest.xml"
stderr_has "PARAVIRTUAL_ONLY" "complete but was not registered"
mkdir -p "$T/i386"
amiport_ok bundle --privatekey "$T/key.pem" --cert "$T/cert.pem" --ec2cert "$T/cert.pem" \
  --user 123456789012 --arch i386 -d "$T/i386" "$src"
amiport_ok upload-bundle --bucket "$BUCKET/i386" --manifest "$T/i386/$(basename "$src").manifest.xml"
expect_rc 1 import --privatekey "$T/key.pem" --name i386 \
  "s3://$BUCKET/i386/$(basename "$src").manifest.xml"
stderr_has "manifest says i386 but the guest" "x86_64"

# an import from S3 killed halfway resumes: the rerun reads the stream again
# but sends only the blocks the snapshot does not hold yet
amiport_ok upload-bundle --bucket "$BUCKET/resume" --manifest "$M"
RURL=s3://$BUCKET/resume/disk.img.manifest.xml
nblocks=$(((size + 524287) / 524288))
kill_midway "$nblocks" "$T/killed.err" import --output=json -j 4 --privatekey "$T/key.pem" \
  --name resumed "$RURL"
snap=$KILLED_SNAP
amiport_ok import --output=json -j 4 --privatekey "$T/key.pem" --name resumed "$RURL"
[ "$(json_get "$T/stdout" snapshot_id)" = "$snap" ] || fail "the rerun did not resume $snap"
before=$(json_get "$T/stdout" blocks_before)
[ "$before" -ge $((nblocks / 3)) ] || fail "resume kept $before blocks, expected at least $((nblocks / 3))"
/usr/bin/python3 "$SRCDIR/tests/ebs_readback.py" "$FAKEAWS_URL" "$snap" "$T/resumed.raw" "$size" \
  >/dev/null 2>"$T/rb.err" || { cat "$T/rb.err" >&2; fail "reading back $snap failed"; }
cmp "$src" "$T/resumed.raw" || fail "the resumed import from S3 differs from the fixture"

# an instance-store AMI registered from that manifest converts in one command
amiport_ok register --image-location "$BUCKET/images/disk.img.manifest.xml" --name store
STORE=$(grep -o 'ami-[0-9a-f]*' "$T/stdout" | head -n1)
[[ $STORE == ami-* ]] || fail "register printed no image id: $(cat "$T/stdout")"
amiport_ok import --output=json -j 8 --privatekey "$T/key.pem" --name from-store "$STORE"
AMI2=$(json_get "$T/stdout" image_id)
awsx ec2 describe-images --image-ids "$AMI2" --query 'Images[0].RootDeviceType' --output text >"$T/rdt" ||
  fail "aws ec2 describe-images $AMI2 failed"
[ "$(cat "$T/rdt")" = ebs ] || fail "import $STORE did not give an EBS-backed AMI: $(cat "$T/rdt")"
expect_rc 1 import --privatekey "$T/key.pem" --name again "$AMI"
stderr_has "EBS-backed already"

# a part changed in S3: the import fails, naming it; its snapshot is deleted
amiport_ok upload-bundle --bucket "$BUCKET/damaged" --manifest "$M"
head -c "$(stat -c %s "$T/b/disk.img.part.02")" /dev/urandom >"$T/other.part"
s3x s3 cp "$T/other.part" "s3://$BUCKET/damaged/disk.img.part.02" >/dev/null || fail "cannot replace a part"
awsx ec2 describe-snapshots --owner-ids self >"$T/before.json"
expect_rc 1 import --output=json -j 8 --privatekey "$T/key.pem" --name damaged \
  "s3://$BUCKET/damaged/disk.img.manifest.xml"
stderr_has "disk.img.part.02" "SHA-1" "deleted snapshot\\(s\\)" "nothing registered"
awsx ec2 describe-snapshots --owner-ids self >"$T/after.json"
/usr/bin/python3 - "$T/before.json" "$T/after.json" <<'PY' || fail "the damaged import left a snapshot"
import json, sys
ids = lambda p: sorted(s["SnapshotId"] for s in json.load(open(p))["Snapshots"])
assert ids(sys.argv[1]) == ids(sys.argv[2]), (ids(sys.argv[1]), ids(sys.argv[2]))
PY
awsx ec2 describe-images --owners self --filters Name=name,Values=damaged >"$T/dmg.json"
grep -q '"ImageId"' "$T/dmg.json" && fail "the damaged import registered an image"
info "bundle sources: every check passed"
