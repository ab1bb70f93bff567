#!/bin/bash
# vmdk_read.sh - amiport reads every VMDK subformat qemu-img makes exactly as
# qemu does, plus the hand-made layouts qemu-img cannot create.
#
# For images qemu-img makes (monolithicSparse, streamOptimized, monolithicFlat,
# twoGbMaxExtentSparse, twoGbMaxExtentFlat; zeroed_grain=on; every
# adapter_type; sizes that are not a multiple of the grain; a 2 GiB + 5 MiB
# twoGbMaxExtent split with data across the 2 GiB boundary):
#   - `amiport convert -O raw` is byte-identical to `qemu-img convert -O raw`;
#   - `amiport map --output=json` agrees with `qemu-img map --output=json`
#     (map_equal in lib.sh; for flat extents, where qemu calls the holes of
#     the flat file "data + zero", a stricter projection that counts them as
#     zero, since amiport reports them as holes like the raw reader does);
#   - `amiport info --output=json` gives the same virtual size and create type
#     as `qemu-img info`, and the adapter type and extents of the descriptor.
# Hand-made: a vmfs descriptor (VMFS extent), a descriptor mixing FLAT,
# SPARSE and ZERO extents, RDONLY extents, CRLF line ends, and a
# monolithicSparse whose primary grain directory is gone (read through the
# redundant one).
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp
setup_tmp

# mk_src FILE SIZE - a raw file: random and text stripes, zeros and holes,
# writes at unaligned offsets and in the last (partial) grain.
mk_src() {
  "$PYTHON" - "$1" "$2" <<'PY'
import os, sys, random
path, size = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
with open(path, "wb") as f:
    f.truncate(size)
    def put(off, data):
        if off < size:
            f.seek(off); f.write(data[: size - off])
    put(0, os.urandom(70000))                        # grain 0 and part of 1
    put(200000, b"text stripe " * 20000)              # compressible
    put(1 << 20, bytes(65536))                        # written zeros (a zero grain)
    put((1 << 20) + 65536 + 777, os.urandom(3000))    # unaligned
    put(3 << 20, os.urandom(1 << 20))
    put(size - 1000, b"\xee" * 1000)                  # end of the partial last grain
PY
}

# qio_vmdk IMAGE CMD... - qemu-io on a vmdk image.
qio_vmdk() {
  local img=$1 c args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f vmdk "${args[@]}" "$img" >"$T/qemu.out" 2>&1 || { cat "$T/qemu.out" >&2; fail "qemu-io $img $* failed"; }
  ! grep -qi 'error\|failed' "$T/qemu.out" || { cat "$T/qemu.out" >&2; fail "qemu-io $img $* reported an error"; }
}

# map_equal_strict OURS QEMU - like map_equal, but qemu's "data": true with
# "zero": true counts as zero (the holes of a flat extent's file).
map_equal_strict() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
def load(p, strict):
    out = []
    for e in json.load(open(p)):
        k = "data" if e["data"] and not (strict and e.get("zero")) else "zero"
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == e["start"]:
            out[-1][1] += e["length"]
        else:
            out.append([e["start"], e["length"], k])
    return out
a, b = load(sys.argv[1], False), load(sys.argv[2], True)
if a != b:
    print("maps differ:\n ours %s\n qemu %s" % (a[:8], b[:8])); sys.exit(1)
PY
}

NCHECKED=0
# check NAME IMG [flat] - compare IMG (a vmdk) with qemu-img on data, map, info.
check() {
  local name=$1 img=$2 flat=${3:-}
  qimg convert -f vmdk -O raw "$img" "$T/$name.qemu.raw"
  amiport_ok convert -f vmdk -O raw "$img" "$T/$name.ours.raw"
  cmp "$T/$name.qemu.raw" "$T/$name.ours.raw" >"$T/cmp.out" 2>&1 ||
    fail "$name: amiport convert -O raw differs from qemu-img: $(head -1 "$T/cmp.out")"
  amiport_ok convert -O raw "$img" "$T/$name.probed.raw"   # probing finds vmdk
  cmp -s "$T/$name.qemu.raw" "$T/$name.probed.raw" || fail "$name: probed read differs"
  rm -f "$T/$name.qemu.raw" "$T/$name.ours.raw" "$T/$name.probed.raw"

  qemu-img map -f vmdk --output=json "$img" >"$T/$name.qmap.json" || fail "$name: qemu-img map failed"
  amiport_ok map --output=json "$img"
  cp "$T/stdout" "$T/$name.map.json"
  if [ -n "$flat" ]; then
    map_equal_strict "$T/$name.map.json" "$T/$name.qmap.json" || fail "$name: map disagrees with qemu-img"
  else
    map_equal "$T/$name.map.json" "$T/$name.qmap.json" || fail "$name: map disagrees with qemu-img"
  fi

  qemu-img info -f vmdk --output=json "$img" >"$T/$name.qinfo.json" || fail "$name: qemu-img info failed"
  amiport_ok info --output=json "$img"
  cp "$T/stdout" "$T/$name.info.json"
  info_equal "$T/$name.info.json" "$T/$name.qinfo.json" virtual-size format fs:create-type ||
    fail "$name: amiport info disagrees with qemu-img info"
  NCHECKED=$((NCHECKED + 1))
}

GRAIN=65536
SIZE=$((7 * 1048576 + 1536))   # not a multiple of the grain
mk_src "$T/src.raw" $SIZE

# --- every subformat qemu-img creates ----------------------------------------
for sf in monolithicSparse streamOptimized monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
  mkdir -p "$T/$sf"
  qimg convert -f raw -O vmdk -o subformat=$sf "$T/src.raw" "$T/$sf/d.vmdk"
  case $sf in *Flat) check "$sf" "$T/$sf/d.vmdk" flat ;; *) check "$sf" "$T/$sf/d.vmdk" ;; esac
  amiport_ok info --output=json "$T/$sf/d.vmdk"
  [ "$(format_specific "$T/stdout" create-type)" = "$sf" ] || fail "$sf: info create-type is not $sf"
done
info "read every qemu-img subformat"

# qemu-img rewrites a flat descriptor when it changes the CID; a shorter CID
# leaves the old tail after the NUL that ends the text. It still reads.
cp "$T/monolithicFlat/d.vmdk" "$T/monolithicFlat/stale.vmdk"
printf '\0"\n' | dd of="$T/monolithicFlat/stale.vmdk" bs=1 seek=400 conv=notrunc status=none
amiport_ok convert -f vmdk -O raw "$T/monolithicFlat/stale.vmdk" "$T/stale.raw"
cmp "$T/stale.raw" "$T/src.raw" || fail "a descriptor with bytes after its NUL reads differently"

# --- adapter types (also in the human output) ---------------------------------
for ad in ide lsilogic buslogic legacyESX; do
  qimg convert -f raw -O vmdk -o adapter_type=$ad,hwversion=6 "$T/src.raw" "$T/ad-$ad.vmdk"
  check "ad-$ad" "$T/ad-$ad.vmdk"
  amiport_ok info --output=json "$T/ad-$ad.vmdk"
  [ "$(format_specific "$T/stdout" adapter-type)" = "$ad" ] || fail "adapter $ad: info says $(format_specific "$T/stdout" adapter-type)"
  [ "$(format_specific "$T/stdout" hw-version)" = "6" ] || fail "adapter $ad: hw-version is not 6"
  amiport_ok info "$T/ad-$ad.vmdk"
  grep -q "adapter-type: $ad" "$T/stdout" || fail "human info lacks adapter-type: $ad"
done

# --- zeroed-grain entries, writes by qemu-io ----------------------------------
for sf in monolithicSparse twoGbMaxExtentSparse; do
  img=$T/zg-$sf.vmdk
  qimg create -f vmdk -o subformat=$sf,zeroed_grain=on "$img" $((4 * 1048576 + 512))
  qio_vmdk "$img" "write -P 0x11 0 512" "write -P 0xab 12345 7000" "write -P 0x22 $((3 * GRAIN)) $((4 * GRAIN))" \
    "write -z $((3 * GRAIN)) $((2 * GRAIN))" "write -z $((10 * GRAIN)) $((2 * GRAIN))" \
    "write -P 0x44 $((13 * GRAIN + 7)) 1" "write -P 0xef $((4 * 1048576 + 512 - 300)) 300"
  check "zg-$sf" "$img"
  amiport_ok map --output=json "$img"
  grep -q '"zero": true, "data": false' "$T/stdout" || fail "zg-$sf: no zeroed grain in the map"
done
info "zeroed grains"

# --- empty and tiny images ------------------------------------------------------
qimg create -f vmdk "$T/empty.vmdk" 3M
check empty "$T/empty.vmdk"
qimg create -f vmdk -o subformat=streamOptimized "$T/tiny.vmdk" 1536
check tiny "$T/tiny.vmdk"

# --- a 2 GiB + 5 MiB split, data across the 2 GiB boundary ---------------------
BIG=$((2 * 1073741824 + 5 * 1048576))
for sf in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
  mkdir -p "$T/big-$sf"
  img=$T/big-$sf/big.vmdk
  qimg create -f vmdk -o subformat=$sf "$img" $BIG
  qio_vmdk "$img" "write -P 0x5a 1048576 65536" "write -P 0x5b $((2 * 1073741824 - 40000)) 100000" \
    "write -P 0x5c $((BIG - 4096)) 4096"
  n=$(grep -c '^RW ' "$img")
  [ "$n" -ge 2 ] || fail "big-$sf: expected several extents, descriptor lists $n"
  case $sf in *Flat) check "big-$sf" "$img" flat ;; *) check "big-$sf" "$img" ;; esac
  rm -rf "$T/big-$sf"
done
info "2 GiB+ split"

# --- hand-made descriptors -------------------------------------------------------
# vmfs: a VMFS extent (flat data), CRLF line ends, RDONLY access.
mkdir -p "$T/vmfs"
head -c $((2 * 1048576)) "$T/src.raw" >"$T/vmfs/v-flat.vmdk"
printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="vmfs"\n\nRW 4096 VMFS "v-flat.vmdk"\n\nddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n' >"$T/vmfs/v.vmdk"
# qemu-img 7.2 lists a VMFS extent twice (a 4 MiB disk here), so the data is
# compared with the flat file itself, and the map with raw's.
amiport_ok convert -O raw "$T/vmfs/v.vmdk" "$T/vmfs/v.raw"
cmp "$T/vmfs/v.raw" "$T/vmfs/v-flat.vmdk" || fail "vmfs: VMFS extent read wrong"
amiport_ok map --output=json "$T/vmfs/v.vmdk"
cp "$T/stdout" "$T/vmfs/map.json"
amiport_ok map --output=json -f raw "$T/vmfs/v-flat.vmdk"
map_equal "$T/vmfs/map.json" "$T/stdout" || fail "vmfs: map differs from the flat file's"
# The same with CRLF line ends.
sed 's/$/\r/' "$T/vmfs/v.vmdk" >"$T/vmfs/crlf.vmdk"
amiport_ok convert -O raw "$T/vmfs/crlf.vmdk" "$T/vmfs/crlf.raw"
cmp "$T/vmfs/crlf.raw" "$T/vmfs/v-flat.vmdk" || fail "vmfs: CRLF descriptor read wrong"
amiport_ok info --output=json "$T/vmfs/v.vmdk"
[ "$(format_specific "$T/stdout" create-type)" = vmfs ] || fail "vmfs: create-type"
[ "$(format_specific "$T/stdout" hw-version)" = 13 ] || fail "vmfs: hw-version"

# several extents: FLAT at an offset into its file, SPARSE made by qemu-img,
# and (for amiport only: qemu skips them) a ZERO extent and an RDONLY one.
mkdir -p "$T/multi"
head -c $((3 * 1048576)) /dev/urandom >"$T/multi/a-flat.vmdk"
qimg create -f vmdk "$T/multi/b.vmdk" 2M
qio_vmdk "$T/multi/b.vmdk" "write -P 0x66 4096 70000"
cat >"$T/multi/m.vmdk" <<DESC
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="twoGbMaxExtentSparse"

# Extent description
RW 2048 FLAT "a-flat.vmdk" 2048
RW 4096 SPARSE "b.vmdk"

ddb.adapterType = "ide"
DESC
check multi "$T/multi/m.vmdk" flat
sed -e 's/^RW 4096 SPARSE "b.vmdk"/RW 4096 SPARSE "b.vmdk"\nRW 1000 ZERO\nRDONLY 512 FLAT "a-flat.vmdk" 0/' "$T/multi/m.vmdk" >"$T/multi/z.vmdk"
amiport_ok convert -O raw "$T/multi/z.vmdk" "$T/multi/z.raw"
qimg convert -f vmdk -O raw "$T/multi/m.vmdk" "$T/multi/m.raw"
{ cat "$T/multi/m.raw"; head -c $((1000 * 512)) /dev/zero; head -c $((512 * 512)) "$T/multi/a-flat.vmdk"; } >"$T/multi/want.raw"
cmp "$T/multi/want.raw" "$T/multi/z.raw" || fail "multi: FLAT+SPARSE+ZERO+RDONLY extents read wrong"
amiport_ok map --output=json "$T/multi/z.vmdk"
grep -q "\"start\": $(( (2048 + 4096) * 512 )), \"length\": $((1000 * 512)), .*\"zero\": true, \"data\": false" "$T/stdout" ||
  fail "multi: the ZERO extent is not a zero run in the map"
amiport_ok info --output=json "$T/multi/z.vmdk"
[ "$(json_get "$T/stdout" format-specific extents | "$PYTHON" -c 'import json,sys; print(",".join(x["format"] for x in json.load(sys.stdin)))')" = FLAT,SPARSE,ZERO,FLAT ] ||
  fail "multi: info extents are not FLAT,SPARSE,ZERO,FLAT"
info "hand-made descriptors"

# --- redundant grain directory: the primary is gone -------------------------
qimg convert -f raw -O vmdk -o subformat=monolithicSparse "$T/src.raw" "$T/rgd.vmdk"
qimg convert -f vmdk -O raw "$T/rgd.vmdk" "$T/rgd.want.raw"
"$PYTHON" - "$T/rgd.vmdk" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(56); f.write(struct.pack("<Q", 0x7fffffff))   # gdOffset far past the end
PY
amiport_ok convert -O raw "$T/rgd.vmdk" "$T/rgd.ours.raw"
grep -qi "redundant" "$T/stderr" || fail "rgd: no warning that the redundant grain directory was used"
cmp "$T/rgd.want.raw" "$T/rgd.ours.raw" || fail "rgd: read through the redundant grain directory differs"
info "redundant grain directory"

info "$NCHECKED images checked against qemu-img"
