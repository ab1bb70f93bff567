# upload_bundle.sh - amiport upload-bundle into a real S3 server (tests/s3rver,
# which checks SigV4), read back with Debian's awscli, and amiport register
# --image-location against tests/fakeaws.
#
# A bundle made by hand (four parts of random bytes, one of them 10 MiB, and
# a 2007-10-10 manifest giving their SHA-1s) is uploaded: every object must
# read back byte-identical with the ETag of its MD5, every PUT must carry the
# part's Content-MD5 and the aws-exec-read ACL, signed. A second run sends
# nothing; after one object is deleted and one replaced by other bytes of the
# same size, a third run sends exactly those two. A missing part, a damaged
# part, a wrong secret key and a missing bucket are refused with errors that
# name them. Then the manifest is registered as an instance-store AMI.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd curl cmp md5sum
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
start_fakeaws
start_s3rver

BUCKET=amiport-bundles
PREFIX=images/v1
B=$T/bundle
mkdir -p "$B"

# --- a bundle: four parts and a manifest listing them with their SHA-1s ---
/usr/bin/python3 - "$B" <<'EOF' || fail "cannot write the test bundle"
import hashlib, os, sys
d = sys.argv[1]
sizes = [10 << 20, 3 << 20, 12345, 1]
parts = ""
for i, n in enumerate(sizes):
    name = "disk.img.part.%02d" % i
    data = os.urandom(n)
    open(os.path.join(d, name), "wb").write(data)
    parts += ('<part index="%d"><filename>%s</filename><digest algorithm="SHA1">%s</digest></part>'
              % (i, name, hashlib.sha1(data).hexdigest()))
hexs = lambda n: os.urandom(n).hex()
m = ('<?xml version="1.0" ?><manifest><version>2007-10-10</version>'
     '<bundler><name>amiport-test</name><version>1</version><release>1</release></bundler>'
     '<machine_configuration><architecture>x86_64</architecture></machine_configuration>'
     '<image><name>disk.img</name><user>123456789012</user><type>machine</type>'
     '<digest algorithm="SHA1">%s</digest><size>%d</size><bundled_size>%d</bundled_size>'
     '<ec2_encrypted_key algorithm="AES-128-CBC">%s</ec2_encrypted_key>'
     '<user_encrypted_key algorithm="AES-128-CBC">%s</user_encrypted_key>'
     '<ec2_encrypted_iv>%s</ec2_encrypted_iv><user_encrypted_iv>%s</user_encrypted_iv>'
     '<parts count="%d">%s</parts></image><signature>%s</signature></manifest>'
     % (hexs(20), 64 << 20, sum(sizes), hexs(256), hexs(256), hexs(256), hexs(256),
        len(sizes), parts, hexs(256)))
open(os.path.join(d, "disk.img.manifest.xml"), "w").write(m)
EOF
FILES="disk.img.part.00 disk.img.part.01 disk.img.part.02 disk.img.part.03 disk.img.manifest.xml"
MANIFEST=$B/disk.img.manifest.xml

# --- the command line ---
amiport_ok upload-bundle --help
for o in --bucket --manifest --acl aws-exec-read --jobs --retry --region --profile --endpoint-url; do
  grep -q -- "$o" "$T/stdout" || fail "upload-bundle --help does not mention $o"
done
expect_rc 2 upload-bundle --manifest "$MANIFEST"
stderr_has "--bucket and --manifest are required"
expect_rc 2 upload-bundle --bucket "$BUCKET" --manifest "$MANIFEST" --acl public
stderr_has "--acl must be"
expect_rc 2 upload-bundle --bucket "$BUCKET" --manifest "$MANIFEST" --jobs 0
stderr_has "--jobs must be"

# --- errors that name the bucket and the S3 error code ---
expect_rc 1 upload-bundle --bucket no-such-bucket/x --manifest "$MANIFEST"
stderr_is_error
stderr_has "S3 ListObjectsV2 no-such-bucket/x/disk\.img\.: NoSuchBucket: .*\(HTTP 404\)"
s3x s3api create-bucket --bucket "$BUCKET" >/dev/null || fail "awscli: create-bucket $BUCKET"
puts0=$(s3rver_requests PUT)
AWS_SECRET_ACCESS_KEY=not-the-secret run_amiport upload-bundle --bucket "$BUCKET/$PREFIX" \
  --manifest "$MANIFEST"
[ "$RC" -eq 1 ] || fail "a wrong secret key: exit $RC, expected 1"
stderr_has "S3 ListObjectsV2 $BUCKET/$PREFIX/disk\.img\.: SignatureDoesNotMatch: .*\(HTTP 403\)"
[ "$(s3rver_requests PUT)" -eq "$puts0" ] || fail "a wrong secret key: something was stored"

# --- the upload ---
amiport_ok upload-bundle --bucket "s3://$BUCKET/$PREFIX/" --manifest "$MANIFEST" --jobs 3 --retry
grep -qx "uploaded 4 parts, 0 skipped, manifest s3://$BUCKET/$PREFIX/disk.img.manifest.xml (uploaded)" \
  "$T/stdout" || fail "first upload printed: $(cat "$T/stdout")"
stderr_has "\[5/5\] uploaded s3://$BUCKET/$PREFIX/disk\.img\.manifest\.xml" \
  "register --image-location $BUCKET/$PREFIX/disk\.img\.manifest\.xml"
[ "$(s3rver_requests PUT)" -eq $((puts0 + 5)) ] || fail "first upload: $(($(s3rver_requests PUT) - puts0)) PUTs, expected 5"
# the manifest last, after every part was stored
last=$(grep '^request PUT ' "$T/s3rver.out" | tail -n 1 | cut -d' ' -f3)
[ "$last" = "/$BUCKET/$PREFIX/disk.img.manifest.xml" ] || fail "the last PUT was $last, not the manifest"
# each PUT: stored, with the file's Content-MD5 and aws-exec-read, both signed
for f in $FILES; do
  line=$(grep "^request PUT /$BUCKET/$PREFIX/$f " "$T/s3rver.out" | tail -n 1)
  want=$(/usr/bin/python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.md5(open(sys.argv[1], "rb").read()).digest()).decode())' "$B/$f")
  set -- $line
  [ "$4" = 200 ] || fail "PUT $f answered $4"
  [ "$5" = aws-exec-read ] || fail "PUT $f: x-amz-acl is '$5', expected aws-exec-read"
  [ "$6" = "$want" ] || fail "PUT $f: Content-MD5 is '$6', expected $want"
  for h in content-md5 x-amz-acl x-amz-content-sha256; do
    case ";$7;" in
      *";$h;"*) ;;
      *) fail "PUT $f: $h is not among the signed headers '$7'" ;;
    esac
  done
done

# awscli reads back every object: sizes, ETags (the MD5 resume relies on) and bytes
check_bucket() {
  s3x s3api list-objects-v2 --bucket "$BUCKET" --prefix "$PREFIX/" >"$T/list.json" ||
    fail "awscli: list-objects-v2"
  for f in $FILES; do md5sum "$B/$f"; done >"$T/md5.txt"
  /usr/bin/python3 - "$T/list.json" "$B" "$PREFIX" "$T/md5.txt" <<'EOF' || fail "the bucket's listing differs from the bundle"
import json, os, sys
objs = {o["Key"]: o for o in json.load(open(sys.argv[1])).get("Contents", [])}
md5 = {os.path.basename(l.split()[1]): l.split()[0] for l in open(sys.argv[4])}
bad = 0
if len(objs) != len(md5):
    print("the bucket holds %d objects under the prefix, expected %d: %s" % (len(objs), len(md5), sorted(objs)))
    bad = 1
for name, digest in md5.items():
    o = objs.get("%s/%s" % (sys.argv[3], name))
    size = os.path.getsize(os.path.join(sys.argv[2], name))
    if o is None or o["Size"] != size or o["ETag"].strip('"') != digest:
        print("%s: the bucket has %r, expected size %d and ETag %s" % (name, o, size, digest))
        bad = 1
sys.exit(bad)
EOF
  rm -rf "$T/back"
  s3x s3 cp --recursive --only-show-errors "s3://$BUCKET/$PREFIX/" "$T/back/" ||
    fail "awscli: s3 cp --recursive"
  for f in $FILES; do
    cmp "$B/$f" "$T/back/$f" || fail "$f read back with awscli differs from the bundle's"
  done
}
check_bucket

# --- a second run sends nothing ---
gets=$(s3rver_requests GET)
amiport_ok upload-bundle --bucket "$BUCKET/$PREFIX" --manifest "$MANIFEST"
grep -qx "uploaded 0 parts, 4 skipped, manifest s3://$BUCKET/$PREFIX/disk.img.manifest.xml (unchanged)" \
  "$T/stdout" || fail "second upload printed: $(cat "$T/stdout")"
[ "$(s3rver_requests PUT)" -eq $((puts0 + 5)) ] || fail "the second upload stored something"
[ "$(s3rver_requests GET)" -eq $((gets + 1)) ] || fail "the second upload made $(($(s3rver_requests GET) - gets)) GETs, expected one listing"

# --- one part gone, one replaced by other bytes of the same size: only those two are sent ---
head -c 12345 /dev/urandom >"$T/other"
s3x s3 cp --only-show-errors "$T/other" "s3://$BUCKET/$PREFIX/disk.img.part.02" || fail "awscli: cp"
s3x s3 rm --only-show-errors "s3://$BUCKET/$PREFIX/disk.img.part.01" || fail "awscli: rm"
puts1=$(s3rver_requests PUT)
amiport_ok upload-bundle --bucket "$BUCKET/$PREFIX" --manifest "$MANIFEST" --jobs 1
grep -qx "uploaded 2 parts, 2 skipped, manifest s3://$BUCKET/$PREFIX/disk.img.manifest.xml (unchanged)" \
  "$T/stdout" || fail "third upload printed: $(cat "$T/stdout")"
sent=$(grep '^request PUT ' "$T/s3rver.out" | tail -n +$((puts1 + 1)) | cut -d' ' -f3 | sort | tr '\n' ' ')
[ "$sent" = "/$BUCKET/$PREFIX/disk.img.part.01 /$BUCKET/$PREFIX/disk.img.part.02 " ] ||
  fail "the third upload stored '$sent', expected parts 01 and 02"
check_bucket

# --- a missing part: named, and nothing is sent (not even a listing) ---
mkdir "$T/broken"
cp "$B"/* "$T/broken/"
rm "$T/broken/disk.img.part.02"
reqs=$(wc -l <"$T/s3rver.out")
expect_rc 1 upload-bundle --bucket "$BUCKET/broken" --manifest "$T/broken/disk.img.manifest.xml"
stderr_is_error
stderr_has "names part 2, disk\.img\.part\.02, but $T/broken/disk\.img\.part\.02 cannot be read: No such file" \
  "nothing was uploaded"
[ "$(wc -l <"$T/s3rver.out")" -eq "$reqs" ] || fail "a missing part: requests were sent"

# --- a damaged part: refused, and the manifest is not stored ---
cp "$B/disk.img.part.02" "$T/broken/"
printf 'X' | dd of="$T/broken/disk.img.part.01" bs=1 seek=1000 conv=notrunc status=none
expect_rc 1 upload-bundle --bucket "$BUCKET/broken" --manifest "$T/broken/disk.img.manifest.xml"
stderr_has "disk\.img\.part\.01: its SHA-1 is [0-9a-f]{40}, not the expected [0-9a-f]{40}"
grep -q "^request PUT /$BUCKET/broken/disk.img.part.01 " "$T/s3rver.out" &&
  fail "the damaged part was stored"
grep -q "^request PUT /$BUCKET/broken/disk.img.manifest.xml " "$T/s3rver.out" &&
  fail "the manifest of a bundle with a damaged part was stored"

# --- another ACL, and none ---
amiport_ok upload-bundle --bucket "$BUCKET/private" --manifest "$MANIFEST" --acl private -q
[ ! -s "$T/stderr" ] || fail "--quiet still printed: $(cat "$T/stderr")"
[ "$(grep -c "^request PUT /$BUCKET/private/[^ ]* 200 private " "$T/s3rver.out")" -eq 5 ] ||
  fail "--acl private: not every PUT carried x-amz-acl: private"
amiport_ok upload-bundle --bucket "$BUCKET/noacl" --manifest "$MANIFEST" --acl none
[ "$(grep -c "^request PUT /$BUCKET/noacl/[^ ]* 200 - " "$T/s3rver.out")" -eq 5 ] ||
  fail "--acl none: a PUT carried x-amz-acl"

# --- register the uploaded bundle as an instance-store AMI (fakeaws) ---
LOC=$BUCKET/$PREFIX/disk.img.manifest.xml
expect_rc 2 register --name x --image-location "$LOC" snap-0123456789abcdef0
stderr_has "not both"
expect_rc 2 register --name x --image-location "$BUCKET/disk.img.xml"
stderr_has "--image-location must be BUCKET/KEY.manifest.xml"
expect_rc 2 register --name x --image-location "$LOC" --root-device /dev/sda1
expect_rc 2 register --name x --kernel-id aki-12345678 snap-0123456789abcdef0
stderr_has "--kernel-id and --ramdisk-id need --image-location"
amiport_ok register --image-location "$LOC" --name bundle-hvm
AMI1=$(cat "$T/stdout")
amiport_ok register --image-location "s3://$LOC" --name bundle-pv --arch i386 \
  --kernel-id aki-12345678 --ramdisk-id ari-87654321
AMI2=$(cat "$T/stdout")
[[ $AMI1 == ami-* && $AMI2 == ami-* ]] || fail "register printed '$AMI1' and '$AMI2', not AMI ids"
awsx ec2 describe-images --image-ids "$AMI1" "$AMI2" >"$T/di.json" || fail "awscli: describe-images"
/usr/bin/python3 - "$T/di.json" "$AMI1" "$AMI2" "$LOC" <<'EOF' || fail "the registered AMIs are not what was asked"
import json, sys
ims = {i["ImageId"]: i for i in json.load(open(sys.argv[1]))["Images"]}
loc = sys.argv[4]
want = {sys.argv[2]: {"ImageLocation": loc, "RootDeviceType": "instance-store", "VirtualizationType": "hvm",
                      "Architecture": "x86_64", "BlockDeviceMappings": [], "Name": "bundle-hvm"},
        sys.argv[3]: {"ImageLocation": loc, "RootDeviceType": "instance-store",
                      "VirtualizationType": "paravirtual", "Architecture": "i386", "KernelId": "aki-12345678",
                      "RamdiskId": "ari-87654321", "BlockDeviceMappings": [], "Name": "bundle-pv"}}
bad = 0
for ami, fields in want.items():
    for k, v in fields.items():
        if ims[ami].get(k) != v:
            print("%s %s: %r, expected %r" % (ami, k, ims[ami].get(k), v))
            bad = 1
sys.exit(bad)
EOF

# fakeaws's own rules for ImageLocation (botocore, as awscli would send them)
/usr/bin/python3 - "$FAKEAWS_URL" <<'EOF' || fail "fakeaws accepted a bad instance-store registration"
import sys, botocore.session
from botocore.exceptions import ClientError
ec2 = botocore.session.get_session().create_client("ec2", region_name="us-east-1", endpoint_url=sys.argv[1])
cases = [({"ImageLocation": "bucket/disk.img.xml"}, "InvalidParameterValue"),
         ({"ImageLocation": "bucket/disk.img.manifest.xml", "RootDeviceName": "/dev/sda1",
           "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}]},
          "InvalidParameterCombination")]
for i, (args, code) in enumerate(cases):
    try:
        ec2.register_image(Name="bad-%d" % i, **args)
        print("accepted: %r" % args)
        sys.exit(1)
    except ClientError as e:
        if e.response["Error"]["Code"] != code:
            print("%r: %s, expected %s" % (args, e.response["Error"]["Code"], code))
            sys.exit(1)
EOF
info "ok"
