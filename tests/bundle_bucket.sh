#!/bin/bash
# bundle_bucket.sh - amiport bundle --bucket: an EBS snapshot (tests/fakeaws)
# streamed into an instance-store bundle in S3 (tests/s3rver), with no local
# file, read back with Debian's awscli and decoded with standard tools only.
#
# 1. A bootable fixture is imported into fakeaws; `bundle snap-... --bucket`
#    stores every part and the manifest (the manifest last); nothing is left
#    in the working folder; each PUT carries the part's Content-MD5 and
#    aws-exec-read; every object fetched with `aws s3 cp` decodes (openssl
#    pkeyutl/enc, gunzip, tar -x -S, sha1sum, openssl dgst -verify) to the
#    fixture (cmp); no state file is left.
# 2. `bundle ami-... --bucket ... --register --name N --output=json`: the
#    JSON gives the manifest, parts, digest and image id, and describe-images
#    shows an instance-store image with that ImageLocation.
# 3. Resume: a run (-j 1) is interrupted while s3rver is frozen; the rerun
#    (-j 2: the parts do not depend on the thread count) reuses the state's
#    key and IV, PUTs only the parts the bucket did not hold (s3rver's
#    request log), and the bundle decodes to the fixture; its -p bar counts
#    the parts.
#    Then a part's PUT is refused (start.js --fail-put): the error names the
#    part and S3's AccessDenied, the parts stored are listed, no manifest is
#    stored; the rerun sends only what is missing, the refused part too.
# 4. Usage errors: --bucket with --destination, --register without --name;
#    a missing bucket is named with its S3 error.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd openssl tar gzip gunzip sha1sum cmp curl
tar --version 2>/dev/null | grep -q 'GNU tar' || skip "tar is not GNU tar"
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws
start_s3rver --fail-put "$T/s3rver.fail"

USER_ID=111122223333
BUCKET=amiport-bucket
SRC=$FIXTURES/x86_64-bios-mbr.raw

K=$T/keys
mkdir -p "$K"
for who in user ec2; do
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=amiport-test-$who" \
    -keyout "$K/$who-key.pem" -out "$K/$who-cert.pem" >"$T/openssl.out" 2>&1 ||
    { cat "$T/openssl.out" >&2; fail "openssl req could not make the $who key pair"; }
done
openssl x509 -pubkey -noout -in "$K/user-cert.pem" >"$K/user-pub.pem" || fail "openssl x509 -pubkey"
KEYS=(--cert "$K/user-cert.pem" --privatekey "$K/user-key.pem" --ec2cert "$K/ec2-cert.pem"
  --user "$USER_ID")

unhex() {
  /usr/bin/python3 -c 'import sys; open(sys.argv[2], "wb").write(bytes.fromhex(open(sys.argv[1]).read().strip()))' "$1" "$2" ||
    fail "$1 is not hex"
}

# fields MANIFEST DIR - each field the decoding needs into DIR/FIELD, the
# parts ("filename sha1" lines) into DIR/parts, the signed text (as the file
# has it) into DIR/signed.txt.
fields() {
  /usr/bin/python3 - "$1" "$2" <<'EOF' || fail "$1: not a manifest with every field"
import os, re, sys
import xml.etree.ElementTree as ET
path, out = sys.argv[1:3]
data = open(path, "rb").read()
root = ET.fromstring(data)
img = root.find("image")
def put(name, value):
    open(os.path.join(out, name), "w").write(value)
for f in ("name", "digest", "size", "bundled_size", "user_encrypted_key", "user_encrypted_iv",
          "ec2_encrypted_key", "ec2_encrypted_iv"):
    put(f, img.findtext(f))
put("signature", root.findtext("signature"))
put("architecture", root.findtext("machine_configuration/architecture"))
put("parts", "".join("%s %s\n" % (p.findtext("filename"), p.findtext("digest"))
                     for p in img.findall("parts/part")))
signed = re.search(rb"<machine_configuration>.*?</machine_configuration>", data, re.S).group(0) + \
    re.search(rb"<image>.*?</image>", data, re.S).group(0)
open(os.path.join(out, "signed.txt"), "wb").write(signed)
EOF
}

rsa_decrypt() {
  unhex "$1" "$1.bin"
  openssl pkeyutl -decrypt -inkey "$2" -pkeyopt rsa_padding_mode:pkcs1 -in "$1.bin" 2>"$T/pkeyutl.err" ||
    { cat "$T/pkeyutl.err" >&2; fail "openssl pkeyutl -decrypt of $(basename "$1") failed"; }
}

# verify LABEL S3PREFIX NAME - fetches every object under S3PREFIX with
# awscli and decodes NAME.manifest.xml's bundle with standard tools; the
# image must be the fixture. Leaves the fields in $T/v-LABEL.
verify() {
  local label=$1 pfx=$2 name=$3 W=$T/v-$1 k v k2 v2 fname dgst total=0
  local files=()
  rm -rf "$W"
  mkdir -p "$W/obj" "$W/x"
  s3x s3 cp --recursive --only-show-errors "s3://$BUCKET/$pfx/" "$W/obj/" ||
    fail "$label: awscli: s3 cp --recursive s3://$BUCKET/$pfx/"
  [ -f "$W/obj/$name.manifest.xml" ] || fail "$label: no $name.manifest.xml in s3://$BUCKET/$pfx/"
  fields "$W/obj/$name.manifest.xml" "$W"
  k=$(rsa_decrypt "$W/user_encrypted_key" "$K/user-key.pem")
  v=$(rsa_decrypt "$W/user_encrypted_iv" "$K/user-key.pem")
  k2=$(rsa_decrypt "$W/ec2_encrypted_key" "$K/ec2-key.pem")
  v2=$(rsa_decrypt "$W/ec2_encrypted_iv" "$K/ec2-key.pem")
  [[ $k =~ ^[0-9a-f]{32}$ && $v =~ ^[0-9a-f]{32}$ ]] || fail "$label: the key and IV are not 32 hex digits"
  [ "$k" = "$k2" ] && [ "$v" = "$v2" ] || fail "$label: the user's and EC2's key or IV differ"
  BUNDLE_KEY=$k
  while read -r fname dgst; do
    [ -f "$W/obj/$fname" ] || fail "$label: $fname is in the manifest but not in the bucket"
    [ "$(sha1sum <"$W/obj/$fname" | cut -d' ' -f1)" = "$dgst" ] || fail "$label: sha1sum of $fname differs"
    total=$((total + $(stat -c %s "$W/obj/$fname")))
    files+=("$W/obj/$fname")
  done <"$W/parts"
  [ "${#files[@]}" -gt 0 ] || fail "$label: the manifest lists no part"
  [ "$(cat "$W/bundled_size")" -eq "$total" ] || fail "$label: bundled_size differs from the parts' $total bytes"
  cat "${files[@]}" | openssl enc -d -aes-128-cbc -K "$k" -iv "$v" | gunzip -c >"$W/image.tar" ||
    fail "$label: openssl enc -d | gunzip of the parts failed"
  [ "$(sha1sum <"$W/image.tar" | cut -d' ' -f1)" = "$(cat "$W/digest")" ] ||
    fail "$label: sha1sum of the tar stream differs from <image><digest>"
  tar -x -S -f "$W/image.tar" -C "$W/x" || fail "$label: tar -x failed"
  cmp "$W/x/$(cat "$W/name")" "$SRC" >&2 || fail "$label: the extracted image differs from the snapshot's (the fixture, then zeros)"
  [ "$(cat "$W/size")" -eq "$(stat -c %s "$SRC")" ] || fail "$label: <size> is wrong"
  unhex "$W/signature" "$W/sig.bin"
  openssl dgst -sha1 -verify "$K/user-pub.pem" -signature "$W/sig.bin" "$W/signed.txt" >/dev/null 2>&1 ||
    fail "$label: the manifest's signature does not verify"
  NPARTS=${#files[@]}
  rm -rf "$W/x" "$W/image.tar"
  info "$label: ${#files[@]} parts from the bucket decode to the fixture"
}

# --- the snapshot and AMI to bundle ---
amiport_ok import --output=json -j 8 --name bucket-src "$SRC"
SNAP=$(json_get "$T/stdout" snapshot_id)
AMI=$(json_get "$T/stdout" image_id)
[[ $SNAP == snap-* && $AMI == ami-* ]] || fail "import printed no snapshot or image id: $(cat "$T/stdout")"
# the snapshot is whole GiB: the fixture, then zeros
awsx ec2 describe-snapshots --snapshot-ids "$SNAP" >"$T/ds.json" || fail "awscli: describe-snapshots"
GIB=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["Snapshots"][0]["VolumeSize"])' "$T/ds.json")
cp --sparse=always "$FIXTURES/x86_64-bios-mbr.raw" "$T/ref.raw" || fail "cp"
truncate -s "${GIB}G" "$T/ref.raw" || fail "truncate"
SRC=$T/ref.raw

# --- the command line ---
amiport_ok bundle --help
for o in --bucket --acl --register --name --description --output XDG_STATE_HOME; do
  grep -q -- "$o" "$T/stdout" || fail "bundle --help does not mention $o"
done
expect_rc 2 bundle "${KEYS[@]}" --bucket "$BUCKET" --destination "$T" "$SNAP"
stderr_has "--bucket and --destination cannot be used together"
expect_rc 2 bundle "${KEYS[@]}" --bucket "$BUCKET" --register "$SNAP"
stderr_has "--register needs --name"
expect_rc 2 bundle "${KEYS[@]}" --name x "$SNAP"
stderr_has "need --bucket"
expect_rc 2 bundle "${KEYS[@]}" --bucket "$BUCKET" --acl public "$SNAP"
stderr_has "--acl must be"
expect_rc 1 bundle "${KEYS[@]}" --arch x86_64 --bucket no-such-bucket/x "$SNAP"
stderr_is_error
stderr_has "S3 ListObjectsV2 no-such-bucket/x/.*: NoSuchBucket: .*\(HTTP 404\)"
s3x s3api create-bucket --bucket "$BUCKET" >/dev/null || fail "awscli: create-bucket $BUCKET"

# --- 1. a snapshot into the bucket ---
mkdir "$T/cwd"
cd "$T/cwd" || fail "cd"
puts0=$(s3rver_requests PUT)
amiport_ok bundle "${KEYS[@]}" --bucket "s3://$BUCKET/snap/" --prefix disk.img --part-size 4 "$SNAP"
[ "$(cat "$T/stdout")" = "$BUCKET/snap/disk.img.manifest.xml" ] ||
  fail "bundle --bucket printed '$(cat "$T/stdout")', expected the manifest's location"
[ -z "$(ls -A "$T/cwd")" ] || fail "bundle --bucket left local files: $(ls -A "$T/cwd")"
[ -z "$(find "$T/state" -name 'bundle-*')" ] || fail "the bundle state was left after success"
cd "$T" || fail "cd"
verify snap snap disk.img
nput=$(($(s3rver_requests PUT) - puts0))
[ "$nput" -eq $((NPARTS + 1)) ] || fail "$nput PUTs for $NPARTS parts and a manifest"
[ "$NPARTS" -gt 1 ] || fail "expected several 4 MiB parts, got $NPARTS"
last=$(grep '^request PUT ' "$T/s3rver.out" | tail -n 1 | cut -d' ' -f3)
[ "$last" = "/$BUCKET/snap/disk.img.manifest.xml" ] || fail "the last PUT was $last, not the manifest"
for f in $(cut -d' ' -f1 "$T/v-snap/parts") disk.img.manifest.xml; do
  line=$(grep "^request PUT /$BUCKET/snap/$f " "$T/s3rver.out" | tail -n 1)
  want=$(openssl dgst -md5 -binary "$T/v-snap/obj/$f" | base64)
  set -- $line
  [ "$4" = 200 ] && [ "$5" = aws-exec-read ] && [ "$6" = "$want" ] ||
    fail "PUT $f: status $4, acl $5, Content-MD5 $6 (expected 200, aws-exec-read, $want)"
  case ";$7;" in *";content-md5;"*) ;; *) fail "PUT $f: content-md5 is not signed ($7)" ;; esac
  case ";$7;" in *";x-amz-content-sha256;"*) ;; *) fail "PUT $f: the payload hash is not signed ($7)" ;; esac
done

# --- 2. an AMI's root volume, registered as an instance-store AMI ---
amiport_ok bundle "${KEYS[@]}" --bucket "$BUCKET/ami" --prefix root.img --register \
  --name from-bucket --description "bundled from $AMI" --output=json "$AMI"
cp "$T/stdout" "$T/reg.json"
LOC=$(json_get "$T/reg.json" manifest)
IMG=$(json_get "$T/reg.json" image_id)
[ "$LOC" = "$BUCKET/ami/root.img.manifest.xml" ] || fail "--output=json: manifest is '$LOC'"
[[ $IMG == ami-* && $IMG != "$AMI" ]] || fail "--output=json: image_id is '$IMG'"
[[ $(json_get "$T/reg.json" digest) =~ ^[0-9a-f]{40}$ ]] || fail "--output=json: no digest"
[ "$(json_get "$T/reg.json" parts)" -ge 1 ] || fail "--output=json: no parts"
verify ami ami root.img
[ "$(json_get "$T/reg.json" digest)" = "$(cat "$T/v-ami/digest")" ] || fail "the JSON digest is not the manifest's"
awsx ec2 describe-images --image-ids "$IMG" >"$T/di.json" || fail "awscli: describe-images"
/usr/bin/python3 - "$T/di.json" "$LOC" <<'EOF' || fail "the registered AMI is not the instance-store image asked for"
import json, sys
im = json.load(open(sys.argv[1]))["Images"][0]
want = {"ImageLocation": sys.argv[2], "RootDeviceType": "instance-store", "Name": "from-bucket",
        "Architecture": "x86_64", "VirtualizationType": "hvm"}
bad = [(k, im.get(k), v) for k, v in want.items() if im.get(k) != v]
for b in bad:
    print("%s: %r, expected %r" % b)
sys.exit(1 if bad else 0)
EOF

# --- 3. interrupted, then resumed: what the bucket holds is not sent again ---
puts1=$(s3rver_requests PUT)
"$AMIPORT" bundle "${KEYS[@]}" --bucket "$BUCKET/resume" --prefix disk.img --part-size 1 -j 1 \
  "$SNAP" >"$T/r1.out" 2>"$T/r1.err" &
BPID=$!
for _ in $(seq 1 600); do
  [ "$(grep -c "^request PUT /$BUCKET/resume/disk.img.part" "$T/s3rver.out")" -ge 3 ] && break
  kill -0 "$BPID" 2>/dev/null || break
  sleep 0.05
done
kill -STOP "$S3RVER_PID" || fail "cannot freeze s3rver"
kill -INT "$BPID" 2>/dev/null
sleep 1
kill -CONT "$S3RVER_PID" || fail "cannot thaw s3rver"
wait "$BPID"
rc1=$?
[ "$rc1" -eq 130 ] || { cat "$T/r1.err" >&2; fail "the interrupted bundle exited $rc1, expected 130"; }
grep -q "interrupted" "$T/r1.err" || fail "the interruption is not reported: $(cat "$T/r1.err")"
grep -q "parts in s3://$BUCKET/resume/: [0-9]" "$T/r1.err" || fail "the stored parts are not named: $(cat "$T/r1.err")"
grep -q "^request PUT /$BUCKET/resume/disk.img.manifest.xml" "$T/s3rver.out" &&
  fail "the interrupted run stored a manifest"
[ -n "$(find "$T/state" -name 'bundle-*.state')" ] || fail "the interrupted run left no state"
grep -q '^user_encrypted_key [0-9a-f]\{64,\}$' "$T"/state/amiport/bundle-*.state ||
  fail "the state does not hold the wrapped key"
s3x s3api list-objects-v2 --bucket "$BUCKET" --prefix resume/ >"$T/before.json" || fail "awscli: list-objects-v2"
/usr/bin/python3 -c 'import json, sys
for o in json.load(open(sys.argv[1])).get("Contents", []): print("/'"$BUCKET"'/" + o["Key"])' \
  "$T/before.json" | sort >"$T/before.txt"
had=$(wc -l <"$T/before.txt")
[ "$had" -ge 1 ] || fail "the interrupted run stored no part"
info "interrupted with $had parts in the bucket"
puts2=$(s3rver_requests PUT)
amiport_ok bundle "${KEYS[@]}" --bucket "$BUCKET/resume" --prefix disk.img --part-size 1 -j 2 \
  --output=json -p "$SNAP"
cp "$T/stdout" "$T/res.json"
# -p: the bar counts the source's bytes and the parts stored and skipped
stderr_has "MiB/s +parts: [0-9]+ stored, [0-9]+ already there, [0-9]+ made"
[ "$(json_get "$T/res.json" resumed)" = true ] || fail "the rerun did not resume: $(cat "$T/res.json")"
verify resume resume disk.img
[ "$had" -lt "$NPARTS" ] || fail "the interrupted run had stored every part ($had of $NPARTS): no resume to test"
grep '^request PUT ' "$T/s3rver.out" | tail -n +$((puts2 + 1)) | cut -d' ' -f3 | sort >"$T/after.txt"
again=$(comm -12 "$T/before.txt" "$T/after.txt")
[ -z "$again" ] || fail "the rerun sent again parts the bucket held: $again"
[ "$(wc -l <"$T/after.txt")" -eq $((NPARTS - had + 1)) ] ||
  fail "the rerun made $(wc -l <"$T/after.txt") PUTs; expected $((NPARTS - had)) parts and the manifest"
[ "$(json_get "$T/res.json" parts_skipped)" -eq "$had" ] ||
  fail "parts_skipped is $(json_get "$T/res.json" parts_skipped), the bucket held $had"
[ -z "$(find "$T/state" -name 'bundle-*')" ] || fail "the bundle state was left after the resumed run"
info "resumed: $had parts kept, $((NPARTS - had)) sent (first run $((puts2 - puts1)) PUTs)"

# --- a part PUT refused: named with S3's error; the rerun sends the rest ---
echo "/$BUCKET/refused/disk.img.part.04" >"$T/s3rver.fail"
expect_rc 1 bundle "${KEYS[@]}" --bucket "$BUCKET/refused" --prefix disk.img --part-size 1 "$SNAP"
stderr_is_error
stderr_has "S3 PutObject $BUCKET/refused/disk\.img\.part\.04: AccessDenied: .*\(HTTP 403\)" \
  "parts in s3://$BUCKET/refused/: 00-03(,|;)"
grep -q "^request PUT /$BUCKET/refused/disk.img.manifest.xml" "$T/s3rver.out" &&
  fail "a bundle with a refused part stored its manifest"
rm -f "$T/s3rver.fail"
s3x s3api list-objects-v2 --bucket "$BUCKET" --prefix refused/ >"$T/before.json" || fail "awscli: list-objects-v2"
/usr/bin/python3 -c 'import json, sys
for o in json.load(open(sys.argv[1])).get("Contents", []): print("/'"$BUCKET"'/" + o["Key"])' \
  "$T/before.json" | sort >"$T/before.txt"
grep -q "part.04" "$T/before.txt" && fail "the refused part is in the bucket"
had=$(wc -l <"$T/before.txt")
puts3=$(s3rver_requests PUT)
amiport_ok bundle "${KEYS[@]}" --bucket "$BUCKET/refused" --prefix disk.img --part-size 1 "$SNAP"
verify refused refused disk.img
grep '^request PUT ' "$T/s3rver.out" | tail -n +$((puts3 + 1)) | cut -d' ' -f3 >"$T/sent.txt"
grep -qx "/$BUCKET/refused/disk.img.part.04" "$T/sent.txt" || fail "the rerun did not send the refused part"
sort "$T/sent.txt" >"$T/after.txt"
again=$(comm -12 "$T/before.txt" "$T/after.txt")
[ -z "$again" ] || fail "the rerun sent again parts the bucket held: $again"
[ "$(wc -l <"$T/after.txt")" -eq $((NPARTS - had + 1)) ] ||
  fail "the rerun made $(wc -l <"$T/after.txt") PUTs; expected $((NPARTS - had)) parts and the manifest"
info "refused part 04: $had parts kept, $((NPARTS - had)) sent by the rerun"
info "ok"
