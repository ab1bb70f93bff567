#!/bin/bash
# bundle.sh - amiport bundle and unbundle against the ec2-bundle-image format,
# checked with standard tools only (openssl, gzip, GNU tar, sha1sum, split).
#
# 1. A bundle made without amiport, by the shell pipeline ec2-bundle-image
#    runs (tar -S | tee sha1sum | gzip -9 | openssl enc -aes-128-cbc | split)
#    with a manifest from tests/bundle_manifest.py, passes the same decoding
#    checks as amiport's bundles below (so the checks themselves are right).
# 2. Every bootable fixture, and one qcow2 made from a fixture by qemu-img, is
#    bundled by amiport and decoded without it: the hex texts of the key and
#    IV decrypt (RSA PKCS#1 v1.5) to the same 32 hex digits with the user's
#    and with the EC2 key; the concatenated parts decrypt (AES-128-CBC),
#    gunzip and untar (GNU tar, one member named as <image><name>) to the
#    source's bytes; <image><name> is the prefix (given, or the file name;
#    NAME.img for a non-raw input), as ec2-bundle-image names it; two
#    bundles of one image have different keys; the tar stream's SHA-1, every
#    part's SHA-1 and size, bundled_size and size are what the manifest
#    says; the signature verifies
#    with the user's certificate over the signed text as the file has it;
#    --arch/--kernel/--ramdisk/--block-device-mapping land in
#    machine_configuration; --part-size 1 gives 1 MiB parts.
# 3. amiport unbundle gives each source back (raw: cmp; -O qcow2: qemu-img
#    compare), and rejects a flipped byte in a part, an edited signature, a
#    wrong private key, a missing part, a truncated part, and a correctly
#    signed manifest whose image digest or size is wrong: non-zero exit, an
#    error naming the part or field, nothing left in the destination.
# 4. The pipeline's bundle unbundles byte-identical under manifest versions
#    2007-10-10, 2007-08-29 and 3 (no machine_configuration: the signed text
#    is <image>...</image> alone).
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd openssl qemu-img tar gzip gunzip split sha1sum mkfifo cmp
tar --version 2>/dev/null | grep -q 'GNU tar' || skip "tar is not GNU tar"
ensure_fixtures 1

USER_ID=111122223333
MIB=1048576

# --- keys: the user's and a separate "EC2" key pair, and one unrelated key ---
K=$T/keys
mkdir -p "$K"
for who in user ec2 other; do
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=amiport-test-$who" \
    -keyout "$K/$who-key.pem" -out "$K/$who-cert.pem" >"$T/openssl.out" 2>&1 ||
    { cat "$T/openssl.out" >&2; fail "openssl req could not make the $who key pair"; }
done
openssl x509 -pubkey -noout -in "$K/user-cert.pem" >"$K/user-pub.pem" || fail "openssl x509 -pubkey"

# unhex HEXFILE BINFILE
unhex() {
  "$PYTHON" -c 'import sys; open(sys.argv[2], "wb").write(bytes.fromhex(open(sys.argv[1]).read().strip()))' "$1" "$2" ||
    fail "$1 is not hex"
}

# rsa_decrypt HEXFILE KEY - prints the PKCS#1 v1.5 decryption of the unhexed
# file; fails the test when openssl cannot decrypt it.
rsa_decrypt() {
  unhex "$1" "$1.bin"
  openssl pkeyutl -decrypt -inkey "$2" -pkeyopt rsa_padding_mode:pkcs1 -in "$1.bin" 2>"$T/pkeyutl.err" ||
    { cat "$T/pkeyutl.err" >&2; fail "openssl pkeyutl -decrypt of $(basename "$1") with $(basename "$2") failed"; }
}

# read_manifest MANIFEST DIR VERSION - checks the manifest's shape (well-formed
# XML, the <manifest> element on one line, the version, every field present,
# the algorithm attributes) and writes each field to DIR/FIELD, the parts to
# DIR/parts ("index filename sha1" lines), the mappings to DIR/mappings
# (virtual=device,...) and the signed text, cut from the file as it is,
# to DIR/signed.txt.
read_manifest() {
  "$PYTHON" - "$@" <<'EOF'
import os, re, sys
import xml.etree.ElementTree as ET
path, out, want_version = sys.argv[1:4]
data = open(path, "rb").read()

def bad(msg):
    print("%s: %s" % (path, msg))
    sys.exit(1)

def put(name, value):
    with open(os.path.join(out, name), "w") as f:
        f.write(value)

try:
    root = ET.fromstring(data)
except ET.ParseError as e:
    bad("not well-formed XML: %s" % e)
if root.tag != "manifest":
    bad("the root element is <%s>, not <manifest>" % root.tag)
m = re.search(rb"<manifest>.*</manifest>", data, re.S)
if not m:
    bad("no <manifest>...</manifest>")
if b"\n" in m.group(0) or b"\r" in m.group(0):
    bad("the manifest is not on one line")
version = root.findtext("version")
if version != want_version:
    bad("version %r, expected %r" % (version, want_version))

def text(parent, tag, where, attrs=None, pattern=None):
    el = parent.find(tag)
    if el is None or el.text is None or el.text.strip() == "":
        bad("<%s> has no <%s>" % (where, tag))
    for k, v in (attrs or {}).items():
        if el.get(k) != v:
            bad("<%s> has %s=%r, expected %r" % (tag, k, el.get(k), v))
    if pattern and not re.fullmatch(pattern, el.text):
        bad("<%s> is %r, not /%s/" % (tag, el.text[:80], pattern))
    return el.text

HEX = r"[0-9a-fA-F]+"
img = root.find("image")
if img is None:
    bad("no <image>")
put("name", text(img, "name", "image"))
put("user", text(img, "user", "image"))
put("digest", text(img, "digest", "image", {"algorithm": "SHA1"}, r"[0-9a-f]{40}"))
put("size", text(img, "size", "image", None, r"[0-9]+"))
put("bundled_size", text(img, "bundled_size", "image", None, r"[0-9]+"))
for f in ("ec2_encrypted_key", "user_encrypted_key"):
    put(f, text(img, f, "image", {"algorithm": "AES-128-CBC"}, HEX))
for f in ("ec2_encrypted_iv", "user_encrypted_iv"):
    put(f, text(img, f, "image", None, HEX))
put("signature", text(root, "signature", "manifest", None, HEX))

parts = img.find("parts")
if parts is None:
    bad("<image> has no <parts>")
lines = []
for p in parts.findall("part"):
    lines.append("%s %s %s" % (p.get("index"), text(p, "filename", "part"),
                               text(p, "digest", "part", {"algorithm": "SHA1"}, r"[0-9a-f]{40}")))
if parts.get("count") != str(len(lines)):
    bad('<parts count="%s"> but %d <part> elements' % (parts.get("count"), len(lines)))
put("parts", "".join(l + "\n" for l in lines))

mc = root.find("machine_configuration")
if version == "3":
    if mc is not None:
        bad("a version 3 manifest has <machine_configuration>")
    signed = b""
else:
    if mc is None:
        bad("no <machine_configuration>")
    put("architecture", mc.findtext("architecture") or "")
    put("kernel_id", mc.findtext("kernel_id") or "")
    put("ramdisk_id", mc.findtext("ramdisk_id") or "")
    put("mappings", ",".join("%s=%s" % (x.findtext("virtual"), x.findtext("device"))
                             for x in mc.findall("block_device_mapping/mapping")))
    t = re.search(rb"<machine_configuration>.*?</machine_configuration>", data, re.S)
    if not t:
        bad("no <machine_configuration>...</machine_configuration> text")
    signed = t.group(0)
t = re.search(rb"<image>.*?</image>", data, re.S)
if not t:
    bad("no <image>...</image> text")
with open(os.path.join(out, "signed.txt"), "wb") as f:
    f.write(signed + t.group(0))
EOF
}

# verify_bundle LABEL DIR PREFIX SOURCE_RAW PART_MIB - decodes DIR/PREFIX.*
# with standard tools only and checks it against SOURCE_RAW (see the top).
# Leaves the manifest's fields in $T/v-LABEL and the key in BUNDLE_KEY.
BUNDLE_KEY=
verify_bundle() {
  local label=$1 dir=$2 prefix=$3 src=$4 pmib=$5
  local W=$T/v-$label M=$2/$3.manifest.xml
  local k v k2 v2 i=0 total=0 idx fname dgst sz last=0 name n
  local files=()
  rm -rf "$W"
  mkdir -p "$W/x"
  [ -f "$M" ] || fail "$label: $M was not written (files: $(ls "$dir" | head -5 | tr '\n' ' '))"
  read_manifest "$M" "$W" 2007-10-10 || fail "$label: the manifest's shape is wrong"
  name=$(cat "$W/name")
  [ "$name" = "$prefix" ] || fail "$label: <image><name> is '$name', expected the prefix '$prefix'"
  [ "$(cat "$W/user")" = "$USER_ID" ] || fail "$label: <user> is '$(cat "$W/user")', expected $USER_ID"

  # The key and IV: the same hex text under both certificates.
  k=$(rsa_decrypt "$W/user_encrypted_key" "$K/user-key.pem")
  v=$(rsa_decrypt "$W/user_encrypted_iv" "$K/user-key.pem")
  k2=$(rsa_decrypt "$W/ec2_encrypted_key" "$K/ec2-key.pem")
  v2=$(rsa_decrypt "$W/ec2_encrypted_iv" "$K/ec2-key.pem")
  [[ $k =~ ^[0-9a-fA-F]{32}$ ]] || fail "$label: user_encrypted_key decrypts to '$k', not 32 hex digits"
  [[ $v =~ ^[0-9a-fA-F]{32}$ ]] || fail "$label: user_encrypted_iv decrypts to '$v', not 32 hex digits"
  [ "$k" = "$k2" ] || fail "$label: ec2_encrypted_key ($k2) and user_encrypted_key ($k) differ"
  [ "$v" = "$v2" ] || fail "$label: ec2_encrypted_iv ($v2) and user_encrypted_iv ($v) differ"
  [ "$k" != "$v" ] || fail "$label: the key and the IV are the same"
  BUNDLE_KEY=$k

  # The parts: PREFIX.part.NN in order, each SHA-1 and size as it should be.
  while read -r idx fname dgst; do
    [ "$idx" = "$i" ] || fail "$label: part $i has index=\"$idx\""
    [ "$fname" = "$(printf '%s.part.%02d' "$prefix" "$i")" ] || fail "$label: part $i is named '$fname'"
    [ -f "$dir/$fname" ] || fail "$label: $fname is in the manifest but not in $dir"
    [ "$(sha1sum <"$dir/$fname" | cut -d' ' -f1)" = "$dgst" ] || fail "$label: sha1sum of $fname differs from its <digest>"
    sz=$(stat -c %s "$dir/$fname")
    [ "$last" -eq 0 ] || fail "$label: a part before $fname is $last bytes, not $pmib MiB"
    [ "$sz" -gt 0 ] && [ "$sz" -le $((pmib * MIB)) ] || fail "$label: $fname is $sz bytes (parts are $pmib MiB)"
    [ "$sz" -eq $((pmib * MIB)) ] || last=$sz
    total=$((total + sz))
    files+=("$dir/$fname")
    i=$((i + 1))
  done <"$W/parts"
  [ "$i" -gt 0 ] || fail "$label: the manifest lists no part"
  n=$(find "$dir" -maxdepth 1 -name "$prefix.part.*" | wc -l)
  [ "$n" -eq "$i" ] || fail "$label: $n part files in $dir, the manifest lists $i"
  [ "$(cat "$W/bundled_size")" -eq "$total" ] || fail "$label: bundled_size $(cat "$W/bundled_size"), the parts hold $total bytes"

  # The stream: AES-128-CBC, gzip, one GNU tar member.
  cat "${files[@]}" | openssl enc -d -aes-128-cbc -K "$k" -iv "$v" >"$W/image.tar.gz" 2>"$W/enc.err" ||
    { cat "$W/enc.err" >&2; fail "$label: openssl enc -d -aes-128-cbc of the parts failed"; }
  gunzip -c "$W/image.tar.gz" >"$W/image.tar" 2>"$W/gz.err" ||
    { cat "$W/gz.err" >&2; fail "$label: gunzip of the decrypted parts failed"; }
  [ "$(sha1sum <"$W/image.tar" | cut -d' ' -f1)" = "$(cat "$W/digest")" ] ||
    fail "$label: sha1sum of the tar stream differs from <image><digest>"
  cmp -s <(head -c 265 "$W/image.tar" | tail -c 8) <(printf 'ustar  \0') ||
    fail "$label: the tar member is not in GNU format (magic at 257: $(head -c 265 "$W/image.tar" | tail -c 8 | od -An -c))"
  tar -tf "$W/image.tar" >"$W/members" 2>"$W/tar.err" || { cat "$W/tar.err" >&2; fail "$label: tar -t failed"; }
  [ "$(cat "$W/members")" = "$name" ] || fail "$label: the tar holds '$(tr '\n' ' ' <"$W/members")', expected one member '$name'"
  tar -x -S -f "$W/image.tar" -C "$W/x" 2>"$W/tar.err" || { cat "$W/tar.err" >&2; fail "$label: tar -x failed"; }
  cmp "$W/x/$name" "$src" >&2 || fail "$label: the extracted image differs from $src"
  [ "$(cat "$W/size")" -eq "$(stat -c %s "$src")" ] || fail "$label: <size> $(cat "$W/size"), the image is $(stat -c %s "$src") bytes"

  # The signature: RSA-SHA1 by the user's key over the text as the file has it.
  unhex "$W/signature" "$W/sig.bin"
  openssl dgst -sha1 -verify "$K/user-pub.pem" -signature "$W/sig.bin" "$W/signed.txt" >"$W/dgst.out" 2>&1 ||
    { cat "$W/dgst.out" >&2; fail "$label: openssl dgst -sha1 -verify of the signature failed"; }
  rm -rf "$W/x" "$W/image.tar" "$W/image.tar.gz" "$W"/*.bin
  info "$label: $i part(s), $total bytes; keys, parts, stream, digest, size and signature check out"
}

# unbundle_ok LABEL MANIFEST SOURCE_DIR WANT_NAME ARGS... - unbundles into a
# fresh directory, checks the printed path and that it is the only file
# there; leaves that path in OUT.
OUT=
unbundle_ok() {
  local label=$1 m=$2 srcdir=$3 want=$4 d=$T/ub-$1 left
  shift 4
  rm -rf "$d"
  mkdir -p "$d"
  amiport_ok unbundle --manifest "$m" --privatekey "$K/user-key.pem" --source "$srcdir" --destination "$d" "$@"
  OUT=$(tail -n 1 "$T/stdout")
  [ -n "$OUT" ] && [ "$(realpath -m "$OUT")" = "$d/$want" ] ||
    fail "$label: unbundle printed '$OUT', expected the path $d/$want"
  left=$(ls -A "$d")
  [ "$left" = "$want" ] || fail "$label: unbundle left '$left' in the destination, expected only $want"
}

# unbundle_rejects LABEL MANIFEST SOURCE_DIR PATTERN ARGS... - unbundle must
# fail with an error matching PATTERN and leave the destination empty.
# UB_KEY, when set, is the private key given instead of the user's.
unbundle_rejects() {
  local label=$1 m=$2 srcdir=$3 pat=$4 d=$T/rej-$1
  shift 4
  rm -rf "$d"
  mkdir -p "$d"
  run_amiport unbundle --manifest "$m" --privatekey "${UB_KEY:-$K/user-key.pem}" --source "$srcdir" --destination "$d" "$@"
  [ "$RC" -ne 0 ] || fail "$label: unbundle exited 0 (printed: $(cat "$T/stdout"))"
  stderr_is_error
  stderr_has "$pat"
  dir_empty "$d"
  info "$label: rejected ($(grep -m1 '^amiport: ' "$T/stderr"))"
  rm -rf "$d"
}

# flip_byte FILE OFFSET - inverts one byte in place.
flip_byte() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  [ -n "$b" ] || fail "flip_byte: $1 has no byte at $2"
  printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none ||
    fail "flip_byte: dd into $1 failed"
}

# pipeline_bundle SRCDIR NAME OUTDIR - the pipeline ec2-bundle-image runs;
# sets PKEY, PIV and PDIGEST (the tar stream's SHA-1, taken with tee).
pipeline_bundle() {
  local srcdir=$1 name=$2 out=$3 sp
  PKEY=$(openssl rand -hex 16) && PIV=$(openssl rand -hex 16) || fail "openssl rand"
  mkdir -p "$out"
  rm -f "$T/digest.fifo"
  mkfifo "$T/digest.fifo" || fail "mkfifo"
  sha1sum <"$T/digest.fifo" >"$T/digest.out" &
  sp=$!
  tar -c -S --owner 0 --group 0 -C "$srcdir" "$name" | tee "$T/digest.fifo" | gzip -9 |
    openssl enc -e -aes-128-cbc -K "$PKEY" -iv "$PIV" | split -b 10m -d -a 2 - "$out/$name.part." ||
    fail "the ec2-bundle-image pipeline failed"
  wait "$sp" || fail "sha1sum of the tar stream failed"
  PDIGEST=$(cut -d' ' -f1 "$T/digest.out")
  [[ $PDIGEST =~ ^[0-9a-f]{40}$ ]] || fail "no SHA-1 from the pipeline's tee"
}

# write_manifest VERSION OUT ARGS... - tests/bundle_manifest.py for the pipeline's parts.
write_manifest() {
  local version=$1 out=$2
  shift 2
  "$PYTHON" "$SRCDIR/tests/bundle_manifest.py" --version "$version" --user "$USER_ID" \
    --key "$PKEY" --iv "$PIV" --user-cert "$K/user-cert.pem" --ec2-cert "$K/ec2-cert.pem" \
    --privatekey "$K/user-key.pem" --out "$out" "$@" || fail "bundle_manifest.py --version $version failed"
}

BIOS=x86_64-bios-mbr.raw
[ -f "$FIXTURES/$BIOS" ] || fail "$FIXTURES/$BIOS is missing"
BIOS_SIZE=$(stat -c %s "$FIXTURES/$BIOS")

# --- 1. the ec2-bundle-image pipeline, checked by the same decoding ---
P=$T/pipe
pipeline_bundle "$FIXTURES" "$BIOS" "$P"
write_manifest 2007-10-10 "$P/$BIOS.manifest.xml" --name "$BIOS" --size "$BIOS_SIZE" --digest "$PDIGEST" \
  --arch x86_64 --kernel aki-00000001 --ramdisk ari-00000002 --block-device-mapping ami=sda1,root=/dev/sda1 \
  "$P/$BIOS".part.*
verify_bundle pipeline "$P" "$BIOS" "$FIXTURES/$BIOS" 10
[ "$BUNDLE_KEY" = "$PKEY" ] || fail "pipeline: the key decrypted from the manifest is not the one used"

# --- 2. amiport bundle of every bootable fixture and of a qcow2 ---
"$PYTHON" - "$FIXTURES/expected.json" >"$T/positive" <<'EOF' || fail "cannot read expected.json"
import json, sys
for name, e in json.load(open(sys.argv[1])).items():
    if e["importable"]:
        print(name, e["arch"])
EOF
[ "$(wc -l <"$T/positive")" -ge 2 ] || fail "expected.json names fewer than two bootable fixtures"

amiport_bundle() { # DEST ARGS... (the keys and account are added here)
  local d=$1
  shift
  rm -rf "$d"
  mkdir -p "$d"
  run_amiport bundle --cert "$K/user-cert.pem" --privatekey "$K/user-key.pem" --user "$USER_ID" \
    --ec2cert "$K/ec2-cert.pem" --destination "$d" "$@"
  if [ "$RC" -ne 0 ] && grep -q 'not built yet' "$T/stderr"; then
    skip "amiport bundle is not built yet (the command is a stub)"
  fi
  [ "$RC" -eq 0 ] || { cat "$T/stderr" >&2; fail "amiport bundle $* exited $RC"; }
}

declare -A KEYS
REJECT=
while read -r name arch <&3; do
  raw=$FIXTURES/$name.raw
  [ -f "$raw" ] || fail "$raw is missing"
  d=$T/b-$name
  case $name in
    x86_64-uefi-gpt)
      # every option at once: prefix, 1 MiB parts, kernel, ramdisk, mappings
      prefix=uefi-custom.img pmib=1
      amiport_bundle "$d" --arch "$arch" --prefix "$prefix" --part-size 1 --kernel aki-fc8f11cc \
        --ramdisk ari-04912d6d --block-device-mapping ami=sda1,root=/dev/sda1 "$raw"
      REJECT=$d/$prefix
      ;;
    x86_64-bios-mbr)
      prefix=$name.raw pmib=10
      amiport_bundle "$d" -f raw --arch "$arch" "$raw"
      ;;
    x86_64-hybrid-gpt)
      prefix=$name.raw pmib=10 # no --arch: whatever amiport derives
      amiport_bundle "$d" "$raw"
      ;;
    *)
      prefix=$name.raw pmib=10
      amiport_bundle "$d" --arch "$arch" "$raw"
      ;;
  esac
  verify_bundle "$name" "$d" "$prefix" "$raw" "$pmib"
  W=$T/v-$name
  KEYS[$name]=$BUNDLE_KEY
  got_arch=$(cat "$W/architecture")
  case $name in
    x86_64-hybrid-gpt) info "$name: bundled without --arch, machine_configuration says '$got_arch'" ;;
    *) [ "$got_arch" = "$arch" ] || fail "$name: --arch $arch, <architecture> is '$got_arch'" ;;
  esac
  if [ "$name" = x86_64-uefi-gpt ]; then
    [ "$(cat "$W/kernel_id")" = aki-fc8f11cc ] || fail "$name: <kernel_id> is '$(cat "$W/kernel_id")'"
    [ "$(cat "$W/ramdisk_id")" = ari-04912d6d ] || fail "$name: <ramdisk_id> is '$(cat "$W/ramdisk_id")'"
    [ "$(cat "$W/mappings")" = ami=sda1,root=/dev/sda1 ] ||
      fail "$name: <block_device_mapping> is '$(cat "$W/mappings")', expected ami=sda1,root=/dev/sda1"
    [ "$(wc -l <"$W/parts")" -ge 4 ] || fail "$name: only $(wc -l <"$W/parts") 1 MiB parts (the rejections need 4)"
  fi

  # unbundle: the source back, raw and as qcow2
  iname=$(cat "$W/name") # unbundle writes <image><name>
  unbundle_ok "$name" "$d/$prefix.manifest.xml" "$d" "$iname" --cert "$K/user-cert.pem"
  cmp "$OUT" "$raw" >&2 || fail "$name: unbundle wrote an image that differs from the source"
  rm -f "$OUT"
  unbundle_ok "$name-qcow2" "$d/$prefix.manifest.xml" "$d" "${iname%.*}.qcow2" -O qcow2
  qemu-img compare -q -f qcow2 -F raw "$OUT" "$raw" || fail "$name: unbundle -O qcow2 differs from the source"
  qemu-img info --output=json "$OUT" >"$T/info.json" || fail "$name: qemu-img info of the -O qcow2 output failed"
  [ "$(json_get "$T/info.json" format)" = qcow2 ] ||
    fail "$name: unbundle -O qcow2 did not write a qcow2 file"
  rm -f "$OUT"
  [ "$name" = x86_64-uefi-gpt ] || rm -rf "$d"
done 3<"$T/positive"

# a qcow2 input (format probed): default prefix NAME.img, the raw image's bytes
qimg convert -f raw -O qcow2 "$FIXTURES/$BIOS" "$T/bios-copy.qcow2"
qimg convert -f qcow2 -O raw "$T/bios-copy.qcow2" "$T/bios-copy.raw"
d=$T/b-qcow2
amiport_bundle "$d" --arch x86_64 "$T/bios-copy.qcow2"
verify_bundle qcow2-input "$d" bios-copy.img "$T/bios-copy.raw" 10
[ "${KEYS[x86_64-bios-mbr]:-}" != "$BUNDLE_KEY" ] || fail "two bundles of the same image have the same AES key"
unbundle_ok qcow2-input "$d/bios-copy.img.manifest.xml" "$d" bios-copy.img
cmp "$OUT" "$T/bios-copy.raw" >&2 || fail "qcow2-input: unbundle differs from qemu-img convert -O raw of the input"
rm -f "$OUT"
unbundle_ok qcow2-input-qcow2 "$d/bios-copy.img.manifest.xml" "$d" bios-copy.qcow2 -O qcow2
qemu-img compare -q -f qcow2 -F qcow2 "$OUT" "$T/bios-copy.qcow2" || fail "qcow2-input: unbundle -O qcow2 differs from the input"
rm -rf "$d" "$T/bios-copy.raw" "$T/ub-"*

# --- 3. rejections, on the 1 MiB-part bundle ---
[ -n "$REJECT" ] || fail "the x86_64-uefi-gpt fixture was not bundled"
rd=$(dirname "$REJECT") rp=$(basename "$REJECT")
bad=$T/bad
cp -a "$rd" "$bad" || fail "cp -a $rd"
flip_byte "$bad/$rp.part.01" 4242
unbundle_rejects flipped-byte "$bad/$rp.manifest.xml" "$bad" "$rp.part.01"
cp "$rd/$rp.part.01" "$bad/" || fail "cp"
mv "$bad/$rp.part.02" "$T/part.02.aside" || fail "mv"
unbundle_rejects missing-part "$bad/$rp.manifest.xml" "$bad" "$rp.part.02"
mv "$T/part.02.aside" "$bad/$rp.part.02" || fail "mv"
truncate -s -100 "$bad/$rp.part.03" || fail "truncate"
unbundle_rejects truncated-part "$bad/$rp.manifest.xml" "$bad" "$rp.part.03"
cp "$rd/$rp.part.03" "$bad/" || fail "cp"
# one hex digit of <signature> changed, in a copy of the manifest
mkdir -p "$T/badsig"
"$PYTHON" - "$rd/$rp.manifest.xml" "$T/badsig/$rp.manifest.xml" <<'EOF' || fail "cannot edit the signature"
import re, sys
data = open(sys.argv[1]).read()
m = re.search(r"<signature>([0-9a-fA-F]+)</signature>", data)
i = m.start(1) + len(m.group(1)) // 2
data = data[:i] + ("1" if data[i] != "1" else "2") + data[i + 1:]
open(sys.argv[2], "w").write(data)
EOF
unbundle_rejects bad-signature "$T/badsig/$rp.manifest.xml" "$rd" "signature" --cert "$K/user-cert.pem"
UB_KEY=$K/other-key.pem unbundle_rejects wrong-key "$rd/$rp.manifest.xml" "$rd" "other-key\.pem|private key|encrypted_key"
rm -rf "$bad" "$T/badsig" "$rd"

# --- 4. the pipeline's bundle under three manifest versions ---
# 2007-10-10 with no --source and no --destination, from the bundle's directory
cd "$P" || fail "cd $P"
run_amiport unbundle --manifest "$BIOS.manifest.xml" --privatekey "$K/user-key.pem"
cd "$T" || fail "cd $T"
[ "$RC" -eq 0 ] || { cat "$T/stderr" >&2; fail "unbundle of the pipeline's bundle (no --source, no --destination) exited $RC"; }
printed=$(tail -n 1 "$T/stdout")
[ "$(cd "$P" && realpath -m "$printed")" = "$P/$BIOS" ] ||
  fail "pipeline: unbundle printed '$printed', expected the path of ./$BIOS"
cmp "$P/$BIOS" "$FIXTURES/$BIOS" >&2 || fail "pipeline 2007-10-10: unbundle differs from the source"
rm -f "$P/$BIOS"
info "pipeline 2007-10-10: unbundled into the current directory, identical"
for version in 2007-08-29 3; do
  md=$T/m-$version
  mkdir -p "$md"
  write_manifest "$version" "$md/$BIOS.manifest.xml" --name "$BIOS" --size "$BIOS_SIZE" --digest "$PDIGEST" \
    --arch x86_64 "$P/$BIOS".part.*
  read_manifest "$md/$BIOS.manifest.xml" "$md" "$version" || fail "bundle_manifest.py wrote a bad version $version manifest"
  unhex "$md/signature" "$md/sig.bin"
  openssl dgst -sha1 -verify "$K/user-pub.pem" -signature "$md/sig.bin" "$md/signed.txt" >/dev/null ||
    fail "bundle_manifest.py: the version $version signature does not verify"
  unbundle_ok "v$version" "$md/$BIOS.manifest.xml" "$P" "$BIOS" --cert "$K/user-cert.pem"
  cmp "$OUT" "$FIXTURES/$BIOS" >&2 || fail "pipeline $version: unbundle differs from the source"
  rm -f "$OUT"
  info "pipeline $version: unbundled identical"
done

# correctly signed manifests whose image digest or size is wrong
mkdir -p "$T/m-bad"
write_manifest 2007-10-10 "$T/m-bad/$BIOS.manifest.xml" --name "$BIOS" --size "$BIOS_SIZE" \
  --digest da39a3ee5e6b4b0d3255bfef95601890afd80709 "$P/$BIOS".part.*
unbundle_rejects wrong-digest "$T/m-bad/$BIOS.manifest.xml" "$P" "digest" --cert "$K/user-cert.pem"
write_manifest 2007-10-10 "$T/m-bad/$BIOS.manifest.xml" --name "$BIOS" --size $((BIOS_SIZE + 512)) \
  --digest "$PDIGEST" "$P/$BIOS".part.*
unbundle_rejects wrong-size "$T/m-bad/$BIOS.manifest.xml" "$P" "size" --cert "$K/user-cert.pem"
info "all bundle checks passed"
