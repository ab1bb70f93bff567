#!/bin/bash
# ova.sh - OVA input: an archive built with tar from an OVF, streamOptimized
# VMDKs and a .mf manifest opens in place (nothing extracted) and converts.
#
#   - `amiport info` (human and JSON) lists the OVF's disks, and says the
#     manifest's SHA256 (or SHA1) digests of the OVF and the disk verified;
#   - `amiport convert -O raw` of the OVA equals `qemu-img convert` of the
#     VMDK inside; `map` equals the VMDK's map; `--disk 2` picks the second
#     disk, `--disk 3` of two is refused;
#   - ustar, GNU and pax archives, with and without a manifest, with the
#     VMDK written by amiport or by qemu-img;
#   - a corrupted manifest digest (of the disk or of the OVF), a disk missing
#     from the archive and a gzip-compressed file reference are errors whose
#     text is asserted; no file is written next to the OVA.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img tar sha256sum sha1sum cmp
setup_tmp

mk_mixed_raw "$T/a.raw" 12
head -c 300000 /dev/urandom >"$T/b.raw"
truncate -s 5M "$T/b.raw"
mkdir -p "$T/pkg"
amiport_ok convert -f raw -O vmdk "$T/a.raw" "$T/pkg/vm-disk1.vmdk"
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$T/b.raw" "$T/pkg/vm-disk2.vmdk"

# mk_ovf DIR - an OVF naming the two disks, as ovftool writes them.
mk_ovf() {
  local d=$1 s1 s2
  s1=$(stat -c %s "$d/vm-disk1.vmdk"); s2=$(stat -c %s "$d/vm-disk2.vmdk")
  cat >"$d/vm.ovf" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<!--Generated for amiport tests-->
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="$s1"/>
    <File ovf:href="vm-disk2.vmdk" ovf:id="file2" ovf:size="$s2"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="12" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="5242880" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm"><Info>A &quot;virtual&quot; machine</Info><Name>vm</Name></VirtualSystem>
</Envelope>
OVF
}
# mk_mf DIR ALGO - the manifest, as ovftool writes it: "SHA256(name)= hex".
mk_mf() {
  local d=$1 algo=$2 f sum
  : >"$d/vm.mf"
  for f in vm.ovf vm-disk1.vmdk vm-disk2.vmdk; do
    sum=$( (cd "$d" && ${algo,,}sum "$f") | cut -d' ' -f1)
    echo "$algo($f)= $sum" >>"$d/vm.mf"
  done
}
pack_ova() { # pack_ova OUT TARFORMAT FILES...
  local out=$1 fmt=$2
  shift 2
  (cd "$T/pkg" && tar --format="$fmt" -cf "$out" "$@") || fail "tar $fmt failed"
}

mk_ovf "$T/pkg"
qimg convert -f vmdk -O raw "$T/pkg/vm-disk1.vmdk" "$T/want1.raw"
qimg convert -f vmdk -O raw "$T/pkg/vm-disk2.vmdk" "$T/want2.raw"
qemu-img map --output=json "$T/pkg/vm-disk1.vmdk" >"$T/want1.map.json"

NOVA=0
for algo in SHA256 SHA1; do
  mk_mf "$T/pkg" $algo
  for fmt in ustar gnu pax; do
    ova=$T/vm-$algo-$fmt.ova
    pack_ova "$ova" $fmt vm.ovf vm.mf vm-disk1.vmdk vm-disk2.vmdk
    amiport_ok info --output=json "$ova"
    cp "$T/stdout" "$T/info.json"
    [ "$(json_get "$T/info.json" format)" = ova ] || fail "$fmt/$algo: format is not ova"
    [ "$(json_get "$T/info.json" virtual-size)" = "$(stat -c %s "$T/want1.raw")" ] || fail "$fmt/$algo: virtual size"
    [ "$(format_specific "$T/info.json" manifest-algorithm)" = $algo ] || fail "$fmt/$algo: manifest algorithm"
    [ "$(format_specific "$T/info.json" disk-verified)" = true ] || fail "$fmt/$algo: disk digest not verified"
    [ "$(format_specific "$T/info.json" ovf-verified)" = true ] || fail "$fmt/$algo: OVF digest not verified"
    "$PYTHON" - "$T/info.json" <<'PY' || fail "$fmt/$algo: disk list wrong"
import json, sys
fs = json.load(open(sys.argv[1]))["format-specific"]
d = fs["disks"]
assert [x["file"] for x in d] == ["vm-disk1.vmdk", "vm-disk2.vmdk"], d
assert d[0]["capacity"] == 12 << 20 and d[1]["capacity"] == 5242880, d
assert fs["vmdk"]["create-type"] == "streamOptimized", fs
PY
    amiport_ok convert -O raw "$ova" "$T/got1.raw"
    cmp "$T/want1.raw" "$T/got1.raw" || fail "$fmt/$algo: disk 1 converts wrong"
    amiport_ok convert --disk 2 -O raw "$ova" "$T/got2.raw"
    cmp "$T/want2.raw" "$T/got2.raw" || fail "$fmt/$algo: disk 2 converts wrong"
    amiport_ok map --output=json "$ova"
    map_equal "$T/stdout" "$T/want1.map.json" || fail "$fmt/$algo: map differs from qemu-img's of the VMDK"
    rm -f "$T/got1.raw" "$T/got2.raw"
    NOVA=$((NOVA + 1))
  done
done
amiport_ok info "$T/vm-SHA256-ustar.ova"
grep -q "file format: ova" "$T/stdout" && grep -q "vm-disk2.vmdk" "$T/stdout" && grep -q "create-type: streamOptimized" "$T/stdout" ||
  fail "human info lacks the format, the disk list or the create type"
# to another format, straight from the archive
amiport_ok convert -O qcow2 "$T/vm-SHA256-ustar.ova" "$T/vm.qcow2"
qemu-img compare -f raw -F qcow2 "$T/want1.raw" "$T/vm.qcow2" >/dev/null || fail "ova -> qcow2 differs"

# no manifest; the OVF not first (still found)
pack_ova "$T/nomf.ova" ustar vm-disk1.vmdk vm.ovf vm-disk2.vmdk
amiport_ok convert -f ova -O raw "$T/nomf.ova" "$T/got.raw"
cmp -s "$T/want1.raw" "$T/got.raw" || fail "no manifest: converts wrong"

# --- refused ----------------------------------------------------------------------
expect_rc 2 info --disk 3 "$T/vm-SHA256-ustar.ova"
stderr_has "lists 2 disks; there is no disk 3"
# a digest of the disk that does not match
mk_mf "$T/pkg" SHA256
sed -i 's/^\(SHA256(vm-disk1.vmdk)= \)./\10/; t; s/^\(SHA256(vm-disk1.vmdk)= \)./\11/' "$T/pkg/vm.mf"
"$PYTHON" - "$T/pkg" <<'PY'
import hashlib, sys
d = sys.argv[1]
lines = open(d + "/vm.mf").read().splitlines()
real = hashlib.sha256(open(d + "/vm-disk1.vmdk", "rb").read()).hexdigest()
out = []
for l in lines:
    if l.startswith("SHA256(vm-disk1.vmdk)"):
        bad = ("0" if real[0] != "0" else "1") + real[1:]
        l = "SHA256(vm-disk1.vmdk)= " + bad
    out.append(l)
open(d + "/vm.mf", "w").write("\n".join(out) + "\n")
PY
pack_ova "$T/badmf.ova" ustar vm.ovf vm.mf vm-disk1.vmdk vm-disk2.vmdk
mkdir -p "$T/out"
expect_rc 1 convert -O raw "$T/badmf.ova" "$T/out/x.raw"
stderr_is_error
stderr_has "manifest 'vm.mf' gives SHA256 [0-9a-f]{64} for 'vm-disk1.vmdk', but its content hashes to [0-9a-f]{64}"
dir_empty "$T/out"
expect_rc 1 info "$T/badmf.ova"
# --disk 2 does not read disk 1's bytes, so its (good) digest passes
amiport_ok convert --disk 2 -O raw "$T/badmf.ova" "$T/got-d2.raw"
# a digest of the OVF that does not match
mk_mf "$T/pkg" SHA1
sed -i 's/^SHA1(vm.ovf)= .*/SHA1(vm.ovf)= 0000000000000000000000000000000000000000/' "$T/pkg/vm.mf"
pack_ova "$T/badovf.ova" ustar vm.ovf vm.mf vm-disk1.vmdk vm-disk2.vmdk
expect_rc 1 info "$T/badovf.ova"
stderr_has "gives SHA1 0000000000000000000000000000000000000000 for 'vm.ovf'"
# a disk the archive does not hold
pack_ova "$T/nodisk.ova" ustar vm.ovf vm-disk2.vmdk
expect_rc 1 info "$T/nodisk.ova"
stderr_has "refers to 'vm-disk1.vmdk', which is not in the archive"
# gzip-compressed file references
sed -i 's|ovf:id="file1"|ovf:id="file1" ovf:compression="gzip"|' "$T/pkg/vm.ovf"
pack_ova "$T/gz.ova" ustar vm.ovf vm-disk1.vmdk vm-disk2.vmdk
expect_rc 1 info "$T/gz.ova"
stderr_has "'vm-disk1.vmdk' is gzip-compressed; not supported"
rm -f "$T/got.raw" "$T/got-d2.raw"
# a tar with no OVF (read as ova by name)
(cd "$T/pkg" && tar -cf "$T/noovf.tar" vm-disk1.vmdk)
expect_rc 1 info -f ova "$T/noovf.tar"
stderr_has "no .ovf descriptor"
info "$NOVA archives (ustar, gnu, pax x SHA256, SHA1) open and convert; bad digests refused"
