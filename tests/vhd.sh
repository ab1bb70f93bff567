#!/bin/bash
# vhd.sh - VHD (qemu's "vpc"): amiport reads what qemu-img makes as qemu
# reads it, writes what qemu-img accepts, and follows differencing disks only
# when allowed and only inside the image's directory.
#
# Reading (images made by qemu-img create/qemu-io, fixed and dynamic, sizes
# that are not a multiple of the 2 MiB block or of the CHS geometry, creator
# apps that size by geometry and by current size):
#   - `amiport convert -O raw` is byte-identical to `qemu-img convert -O raw`;
#   - `amiport map --output=json` equals `qemu-img map --output=json` (fixed
#     disks: qemu marks sparse stretches data+zero, we mark them zero, so the
#     comparison there is on data-and-not-zero);
#   - `amiport info --output=json` has qemu-img's virtual size and cluster size,
#     and the subformat;
#   - a fixed VHD is recognised by the footer in its last 512 bytes, without -f
#     (qemu-img takes it for raw).
# Writing (dynamic, fixed, force_size=on): the output compares identical with
# the source under qemu-img, has the virtual size qemu-img gives the same
# options, and the right subformat (qemu-img probes a fixed VHD as raw and a
# dynamic one as vpc; our info says which); unknown -o options are refused.
# Differencing (crafted here: qemu-img cannot make them): refused without
# --allow-backing; with it, the child's sectors and the parent's show through
# exactly where the sector bitmaps say; a locator that names the child itself
# is a loop; a parent whose UUID differs is refused.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp
setup_tmp

vtool() { "$PYTHON" "$SRCDIR/tests/vtool.py" "$@" || fail "vtool $1 failed"; }

# data-not-zero projection of a map: for fixed disks (see the top).
map_dnz() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
def load(p):
    out = []
    for e in json.load(open(p)):
        k = "data" if e["data"] and not e["zero"] else "zero"
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == e["start"]:
            out[-1][1] += e["length"]
        elif e["length"]:
            out.append([e["start"], e["length"], k])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
if a != b:
    print("maps differ:\n ours %s\n qemu %s" % (a[:8], b[:8])); sys.exit(1)
PY
}

NCHECKED=0
# check_read NAME [fixed] - compares $T/NAME.vhd with what qemu-img reads.
check_read() {
  local name=$1 kind=${2:-dynamic} img=$T/$1.vhd
  qimg convert -f vpc -O raw "$img" "$T/$name.qemu.raw"
  amiport_ok convert -f vpc -O raw "$img" "$T/$name.ours.raw"
  cmp "$T/$name.qemu.raw" "$T/$name.ours.raw" >"$T/cmp.out" 2>&1 ||
    fail "$name: amiport convert -O raw differs from qemu-img: $(head -1 "$T/cmp.out")"
  # probing: by "conectix" at offset 0 (dynamic) or the footer at the end (fixed)
  amiport_ok convert -O raw "$img" "$T/$name.ours2.raw"
  cmp -s "$T/$name.qemu.raw" "$T/$name.ours2.raw" || fail "$name: amiport without -f differs"
  grep -qi "warning" "$T/stderr" && fail "$name: amiport did not recognise the VHD: $(cat "$T/stderr")"
  rm -f "$T/$name.qemu.raw" "$T/$name.ours.raw" "$T/$name.ours2.raw"

  qemu-img map -f vpc --output=json "$img" >"$T/$name.qmap.json" || fail "$name: qemu-img map failed"
  amiport_ok map --output=json "$img"
  cp "$T/stdout" "$T/$name.map.json"
  if [ "$kind" = fixed ]; then
    map_dnz "$T/$name.map.json" "$T/$name.qmap.json" || fail "$name: map differs from qemu-img"
  else
    map_equal "$T/$name.map.json" "$T/$name.qmap.json" || fail "$name: map differs from qemu-img"
  fi

  qemu-img info -f vpc --output=json "$img" >"$T/$name.qinfo.json" || fail "$name: qemu-img info failed"
  amiport_ok info --output=json "$img"
  cp "$T/stdout" "$T/$name.info.json"
  info_equal "$T/$name.info.json" "$T/$name.qinfo.json" has:filename virtual-size cluster-size ||
    fail "$name: info disagrees with qemu-img (see $T/$name.info.json)"
  [ "$(json_get "$T/$name.info.json" format)" = vpc ] || fail "$name: info format is not vpc"
  [ "$(format_specific "$T/$name.info.json" subformat)" = "$kind" ] ||
    fail "$name: info subformat is not $kind"
  NCHECKED=$((NCHECKED + 1))
}

MiB=1048576
# --- images made by qemu-img ------------------------------------------------
for kind in dynamic fixed; do
  for size in 10M $((33 * MiB + 1536)) $((70 * MiB + 7 * 512)); do
    name=$kind-$size
    qimg create -f vpc -o subformat=$kind "$T/$name.vhd" "$size"
    vs=$(qemu-img info -f vpc --output=json "$T/$name.vhd" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    qemu-io -f vpc -c "write -P 0x11 0 512" -c "write -P 0xab 12345 7000" \
      -c "write -P 0x22 $((2 * MiB - 1024)) 4096" -c "write -P 0x33 $((6 * MiB)) $((2 * MiB))" \
      -c "write -z $((6 * MiB + 4096)) 8192" -c "write -P 0xef $((vs - 777)) 777" \
      "$T/$name.vhd" >"$T/qemu.out" 2>&1 || { cat "$T/qemu.out"; fail "qemu-io on $name"; }
    check_read "$name" "$kind"
    rm -f "$T/$name.vhd"
  done
done
# an empty dynamic disk, and one written with force_size (creator 'qem2')
qimg create -f vpc "$T/empty.vhd" 5M
check_read empty
qimg create -f vpc -o force_size=on "$T/forced.vhd" $((9 * MiB + 512))
qemu-io -f vpc -c "write -P 0x44 $((9 * MiB - 512)) 1024" "$T/forced.vhd" >/dev/null || fail "qemu-io forced"
check_read forced
[ "$(json_get "$T/forced.info.json" virtual-size)" = $((9 * MiB + 512)) ] || fail "forced: size is not the exact one"
# creator 'win ' (Hyper-V): the current size counts, not the geometry
qimg create -f vpc -o subformat=fixed "$T/hyperv.vhd" 20M
qemu-io -f vpc -c "write -P 0x55 0 1M" "$T/hyperv.vhd" >/dev/null || fail "qemu-io hyperv"
vtool "vhd_set_creator('$T/hyperv.vhd', b'win ', 20 * 1048576)"
check_read hyperv fixed
[ "$(json_get "$T/hyperv.info.json" virtual-size)" = $((20 * MiB)) ] || fail "hyperv: size is not the current size"
[ "$(format_specific "$T/hyperv.info.json" size-from)" = current-size ] || fail "hyperv: size-from"

# --- a dynamic disk whose sector bitmap has clear bits: those sectors are zeros
qimg create -f vpc "$T/bits.vhd" 4M
qemu-io -f vpc -c "write -P 0x66 0 1M" "$T/bits.vhd" >/dev/null || fail "qemu-io bits"
# block 0's bitmap is at the first BAT entry; clear the bits of sectors 8..15
vtool "import struct; b=struct.unpack('>I', rd('$T/bits.vhd', 1536, 4))[0]*512; wr('$T/bits.vhd', b+1, b'\\x00')"
amiport_ok convert -O raw "$T/bits.vhd" "$T/bits.raw"
"$PYTHON" - "$T/bits.raw" <<'PY' || fail "bits: sectors with clear bitmap bits do not read as zeros"
import sys
d = open(sys.argv[1], 'rb').read()
assert d[:4096] == b'\x66' * 4096 and d[4096:8192] == bytes(4096) and d[8192:1 << 20] == b'\x66' * ((1 << 20) - 8192)
PY
amiport_ok map --output=json "$T/bits.vhd"
grep -q '"start": 4096, "length": 4096, "depth": 0, "present": false' "$T/stdout" || fail "bits: map does not show the clear sectors"

# --- writing -------------------------------------------------------------------
mk_mixed_raw "$T/src.raw" 12
truncate -s $((23 * MiB + 1536)) "$T/src.raw"   # not a CHS size, not whole blocks
printf 'tail' | dd of="$T/src.raw" bs=1 seek=$((23 * MiB + 1000)) conv=notrunc status=none
for opts in "" subformat=dynamic subformat=fixed subformat=fixed,force_size=on force_size=on; do
  name=w-${opts:-default}
  name=${name//[=,]/-}
  amiport_ok convert -f raw -O vpc ${opts:+-o $opts} "$T/src.raw" "$T/$name.vhd"
  qimg convert -f raw -O vpc ${opts:+-o $opts} "$T/src.raw" "$T/$name.q.vhd"
  qemu-img compare -f raw -F vpc "$T/src.raw" "$T/$name.vhd" >"$T/cmp.out" 2>&1 ||
    { cat "$T/cmp.out"; fail "$name: qemu-img compare: our VHD differs from the source"; }
  ours=$(qemu-img info -f vpc --output=json "$T/$name.vhd" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
  theirs=$(qemu-img info -f vpc --output=json "$T/$name.q.vhd" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
  [ "$ours" = "$theirs" ] || fail "$name: virtual size $ours, qemu-img makes $theirs"
  [ "$(stat -c %s "$T/$name.vhd")" = "$(stat -c %s "$T/$name.q.vhd")" ] || fail "$name: file size differs from qemu-img's"
  # qemu-img check has no vpc support; its probe tells the subformat apart:
  # dynamic disks start with "conectix", fixed ones are taken for raw.
  probed=$(qemu-img info --output=json "$T/$name.vhd" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["format"])')
  amiport_ok info --output=json "$T/$name.vhd"
  sub=$(format_specific "$T/stdout" subformat)
  case $opts in
    *fixed*) [ "$probed" = raw ] && [ "$sub" = fixed ] || fail "$name: not a fixed VHD (qemu probes $probed, ours says $sub)" ;;
    *) [ "$probed" = vpc ] && [ "$sub" = dynamic ] || fail "$name: not a dynamic VHD (qemu probes $probed, ours says $sub)" ;;
  esac
  # and back, through our reader
  amiport_ok convert -O raw "$T/$name.vhd" "$T/$name.back.raw"
  qemu-img compare -f raw -F raw "$T/src.raw" "$T/$name.back.raw" >/dev/null 2>&1 || fail "$name: round trip differs"
  rm -f "$T/$name.vhd" "$T/$name.q.vhd" "$T/$name.back.raw"
done
# force_size keeps the size, so --verify can compare it with the source
amiport_ok convert -f raw -O vpc -o force_size=on --verify "$T/src.raw" "$T/verified.vhd"
expect_rc 2 convert -f raw -O vpc -o cluster_size=64k "$T/src.raw" "$T/bad.vhd"
stderr_has "no option 'cluster_size'"
expect_rc 2 convert -f raw -O vhd -o subformat=sparse "$T/src.raw" "$T/bad.vhd"
stderr_has "subformat=sparse"

# --- differencing disks ----------------------------------------------------------
mkdir -p "$T/d"
qimg create -f vpc "$T/d/parent.vhd" 8M
qemu-io -f vpc -c "write -P 0x70 0 3M" -c "write -P 0x71 $((5 * MiB)) 1M" "$T/d/parent.vhd" >/dev/null || fail "qemu-io parent"
vtool "vhd_make_diff('$T/d/parent.vhd', '$T/d/child.vhd', [(b'W2ku', 'C:\\\\vms\\\\parent.vhd'), (b'W2ru', '.\\\\parent.vhd')], [(4096, 8192, 0x81), ($((2 * MiB + 512)), 512, 0x82), ($((7 * MiB)), $MiB, 0x83)], name='C:\\\\vms\\\\parent.vhd')"
expect_rc 1 info "$T/d/child.vhd"
stderr_is_error
stderr_has "differencing VHD names a parent '(\./)?parent.vhd'" "allow-backing"
amiport_ok convert --allow-backing -O raw "$T/d/child.vhd" "$T/d/child.raw"
qimg convert -f vpc -O raw "$T/d/parent.vhd" "$T/d/expect.raw"
"$PYTHON" - "$T/d/expect.raw" <<'PY' || fail "cannot build the expected differencing content"
import sys
p = sys.argv[1]; d = bytearray(open(p, 'rb').read()); M = 1 << 20
for off, ln, b in [(4096, 8192, 0x81), (2 * M + 512, 512, 0x82), (7 * M, M, 0x83)]:
    d[off:off + ln] = bytes([b]) * ln
open(p, 'wb').write(d)
PY
cmp "$T/d/expect.raw" "$T/d/child.raw" >"$T/cmp.out" 2>&1 || fail "differencing read is wrong: $(cat "$T/cmp.out")"
amiport_ok map --allow-backing --output=json "$T/d/child.vhd"
"$PYTHON" - "$T/stdout" <<'PY' || fail "differencing map is wrong"
import json, sys
M = 1 << 20
m = [(e["start"], e["length"], e["data"]) for e in json.load(open(sys.argv[1]))]
# the parent's 2 MiB blocks 0-2 (0..6M) are allocated, the child's data is 7M..8M
merged = []
for s, l, d in m:
    if merged and merged[-1][2] == d: merged[-1] = (merged[-1][0], merged[-1][1] + l, d)
    else: merged.append((s, l, d))
vs = sum(l for _, l, _ in m)
want = [(0, 6 * M, True), (6 * M, M, False), (7 * M, M, True)]
if vs > 8 * M: want.append((8 * M, vs - 8 * M, False))
assert merged == want, merged
PY
amiport_ok info --allow-backing --output=json "$T/d/child.vhd"
[ "$(format_specific "$T/stdout" subformat)" = differencing ] || fail "child: subformat is not differencing"
# the child names itself: a loop
vtool "vhd_make_diff('$T/d/child.vhd', '$T/d/self.vhd', [(b'W2ru', '.\\\\self.vhd')], [(0, 512, 1)])"
expect_rc 1 info --allow-backing "$T/d/self.vhd"
stderr_has "differencing VHD parent .*UUID|loop"
# a parent whose UUID is not the one the child names
vtool "vhd_make_diff('$T/d/parent.vhd', '$T/d/stranger.vhd', [(b'W2ru', 'parent.vhd')], [(0, 512, 1)], parent_uuid=bytes(16))"
expect_rc 1 info --allow-backing "$T/d/stranger.vhd"
stderr_has "another UUID"

info "checked $NCHECKED images read, 5 written, differencing chains"
exit 0
