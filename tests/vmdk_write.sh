#!/bin/bash
# vmdk_write.sh - every VMDK amiport writes is one qemu-img accepts.
#
# For -O vmdk (streamOptimized, the default) and -o subformat=monolithicSparse,
# each adapter type, hwversion, a size that is not a multiple of the grain, an
# empty disk and a qcow2 source:
#   - `qemu-img check` finds no errors;
#   - `qemu-img compare` with the source says identical;
#   - `qemu-img info` reports the create type (streamOptimized or
#     monolithicSparse), and amiport's own info the adapter and hw version;
#   - amiport reads its own output back byte-identically (also --verify).
# A streamOptimized output has the stream layout (grain directory at the end,
# footer and end-of-stream marker). Unknown or bad -o options are refused and
# leave nothing behind.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp
setup_tmp

SIZE=$((24 * 1048576 + 4608))   # not a multiple of the 64 KiB grain
mk_mixed_raw "$T/src.raw" 24
truncate -s $SIZE "$T/src.raw"
printf 'tail of the disk' | dd of="$T/src.raw" bs=1 seek=$((SIZE - 100)) conv=notrunc status=none

# verify_out NAME IMG CREATE_TYPE SRC [SRCFMT]
verify_out() {
  local name=$1 img=$2 ct=$3 src=$4 sfmt=${5:-raw}
  qemu-img check -f vmdk "$img" >"$T/check.out" 2>&1 || { cat "$T/check.out" >&2; fail "$name: qemu-img check failed"; }
  qemu-img compare -f "$sfmt" -F vmdk "$src" "$img" >"$T/cmp.out" 2>&1 || { cat "$T/cmp.out" >&2; fail "$name: qemu-img compare: not identical"; }
  qemu-img info -f vmdk "$img" >"$T/qinfo.out" 2>&1 || fail "$name: qemu-img info failed"
  grep -q "create type: $ct" "$T/qinfo.out" || { cat "$T/qinfo.out" >&2; fail "$name: qemu-img info does not say create type: $ct"; }
  amiport_ok convert -O raw "$img" "$T/$name.back.raw"
  qemu-img compare -f "$sfmt" -F raw "$src" "$T/$name.back.raw" >/dev/null 2>&1 || fail "$name: amiport reads its own output differently"
  rm -f "$T/$name.back.raw"
}

# --- both subformats --------------------------------------------------------
amiport_ok convert -f raw -O vmdk "$T/src.raw" "$T/default.vmdk"
verify_out default "$T/default.vmdk" streamOptimized "$T/src.raw"
"$PYTHON" - "$T/default.vmdk" <<'PY' || fail "default output does not have the stream layout"
import struct, sys
d = open(sys.argv[1], "rb").read()
assert d[:4] == b"KDMV", "magic"
ver, flags = struct.unpack_from("<II", d, 4)
assert ver == 3 and flags & (1 << 16) and flags & (1 << 17), (ver, hex(flags))
assert struct.unpack_from("<Q", d, 56)[0] == 0xffffffffffffffff, "gdOffset not at end"
eos = d[-512:]
assert struct.unpack_from("<QII", eos, 0) == (0, 0, 0), "no end-of-stream marker"
fm = d[-1536:-1024]
assert struct.unpack_from("<II", fm, 8) == (0, 3), "no footer marker"
assert d[-1024:-1020] == b"KDMV", "no footer header"
assert b'createType="streamOptimized"' in d[512:512 * 21]
assert b'ddb.adapterType = "lsilogic"' in d[512:512 * 21], "default adapter is not lsilogic"
PY

amiport_ok convert -f raw -O vmdk -o subformat=monolithicSparse "$T/src.raw" "$T/sparse.vmdk"
verify_out sparse "$T/sparse.vmdk" monolithicSparse "$T/src.raw"
amiport_ok convert -f raw -O vmdk -o subformat=streamOptimized -c --verify "$T/src.raw" "$T/stream-c.vmdk"
verify_out stream-c "$T/stream-c.vmdk" streamOptimized "$T/src.raw"
info "streamOptimized and monolithicSparse"

# --- adapter types and hardware version --------------------------------------
for ad in ide lsilogic buslogic legacyESX; do
  for sf in streamOptimized monolithicSparse; do
    amiport_ok convert -f raw -O vmdk -o subformat=$sf,adapter_type=$ad,hwversion=11 "$T/src.raw" "$T/$ad-$sf.vmdk"
    verify_out "$ad-$sf" "$T/$ad-$sf.vmdk" $sf "$T/src.raw"
    amiport_ok info --output=json "$T/$ad-$sf.vmdk"
    [ "$(format_specific "$T/stdout" adapter-type)" = "$ad" ] || fail "$ad-$sf: adapter-type"
    [ "$(format_specific "$T/stdout" hw-version)" = 11 ] || fail "$ad-$sf: hw-version"
    [ "$(format_specific "$T/stdout" create-type)" = $sf ] || fail "$ad-$sf: create-type"
    heads=255; [ $ad = ide ] && heads=16
    grep -aq "ddb.geometry.heads = \"$heads\"" "$T/$ad-$sf.vmdk" || fail "$ad-$sf: geometry heads is not $heads"
    grep -aq 'ddb.toolsVersion = "' "$T/$ad-$sf.vmdk" || fail "$ad-$sf: no ddb.toolsVersion"
    rm -f "$T/$ad-$sf.vmdk"
  done
done
info "adapter types"

# --- an empty disk, a qcow2 source, a tiny disk ------------------------------
truncate -s 10M "$T/empty.raw"
for sf in streamOptimized monolithicSparse; do
  amiport_ok convert -f raw -O vmdk -o subformat=$sf "$T/empty.raw" "$T/empty-$sf.vmdk"
  verify_out "empty-$sf" "$T/empty-$sf.vmdk" $sf "$T/empty.raw"
done
qimg convert -f raw -O qcow2 "$T/src.raw" "$T/src.qcow2"
amiport_ok convert -O vmdk "$T/src.qcow2" "$T/fromq.vmdk"
verify_out fromq "$T/fromq.vmdk" streamOptimized "$T/src.qcow2" qcow2
head -c 1536 /dev/urandom >"$T/tiny.raw"
amiport_ok convert -f raw -O vmdk "$T/tiny.raw" "$T/tiny.vmdk"
verify_out tiny "$T/tiny.vmdk" streamOptimized "$T/tiny.raw"

# --- options refused ------------------------------------------------------------
mkdir -p "$T/bad"
expect_rc 2 convert -f raw -O vmdk -o foo=bar "$T/src.raw" "$T/bad/x.vmdk"
stderr_has "no option 'foo'"
expect_rc 2 convert -f raw -O vmdk -o adapter_type=scsi "$T/src.raw" "$T/bad/x.vmdk"
stderr_has "adapter_type=scsi"
expect_rc 2 convert -f raw -O vmdk -o subformat=monolithicFlat "$T/src.raw" "$T/bad/x.vmdk"
stderr_has "subformat=monolithicFlat"
expect_rc 2 convert -f raw -O vmdk -o hwversion=x7 "$T/src.raw" "$T/bad/x.vmdk"
stderr_has "hwversion=x7"
expect_rc 2 convert -f raw -O vmdk -c -o subformat=monolithicSparse "$T/src.raw" "$T/bad/x.vmdk"
stderr_has "-c needs subformat=streamOptimized"
dir_empty "$T/bad"
amiport_ok convert --help
grep -q "adapter_type=" "$T/stdout" || fail "convert --help does not list the vmdk options"
info "all outputs pass qemu-img check and compare"
