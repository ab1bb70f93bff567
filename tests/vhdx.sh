#!/bin/bash
# vhdx.sh - VHDX: amiport reads what qemu-img makes as qemu reads it,
# replays a pending log in memory without touching the file, and writes
# VHDX that qemu-img checks clean.
#
# Reading (qemu-img create -o subformat=dynamic|fixed, block_size=1M|32M,
# log_size=1M, sizes that are not a multiple of the block size; plus the same
# data relabelled with 4096-byte logical sectors):
#   - `amiport convert -O raw` is byte-identical to `qemu-img convert -O raw`;
#   - the map: qemu-img 7.2 has no block status for vhdx and calls the whole
#     disk data (asserted, so a qemu that learns it shows up here); ours must
#     equal the BAT as decoded independently here (fully present blocks are
#     data, everything else zero or unallocated), and everything it calls
#     zero or hole reads as zeros in qemu-img's output;
#   - `amiport info --output=json` has qemu-img's virtual size and cluster
#     size, and the subformat, block size and logical sector size;
#   - probing finds vhdx without -f.
# Log: a log entry written here (a data page and a zero range) is replayed in
# memory: our read equals qemu's after `qemu-img check -r all` replays it in a
# copy, and the source file is unchanged (same sha256).
# Writing (dynamic default, block_size=1M and 32M, fixed): `qemu-img check`
# finds no errors, `qemu-img compare` with the source is identical, qemu-img
# info says vhdx; a fixed image is fully allocated and our info says fixed.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp sha256sum
setup_tmp

vtool() { "$PYTHON" "$SRCDIR/tests/vtool.py" "$@" || fail "vtool $1 failed"; }

# check_map NAME RAW - our map against the BAT, qemu's map, and the data.
check_map() {
  local name=$1 img=$T/$1.vhdx raw=$2
  amiport_ok map --output=json "$img"
  cp "$T/stdout" "$T/$name.map.json"
  "$PYTHON" "$SRCDIR/tests/vtool.py" vhdx-map "$img" >"$T/$name.bat.json" || fail "$name: cannot decode the BAT"
  if [ "${3:-}" = no-qemu ]; then  # qemu-img cannot open it: stands for its all-data answer
    echo '[{"start": 0, "length": 0, "data": true}]' >"$T/$name.qmap.json"
  else
    qemu-img map -f vhdx --output=json "$img" >"$T/$name.qmap.json" || fail "$name: qemu-img map failed"
  fi
  "$PYTHON" - "$T/$name.map.json" "$T/$name.bat.json" "$T/$name.qmap.json" "$raw" <<'PY' || fail "$name: map check failed"
import json, sys
ours = json.load(open(sys.argv[1])); bat = json.load(open(sys.argv[2])); q = json.load(open(sys.argv[3]))
norm = []
for e in ours:
    k = "data" if e["data"] else "zero"
    if norm and norm[-1][2] == k: norm[-1][1] += e["length"]
    else: norm.append([e["start"], e["length"], k])
if norm != bat:
    print("ours %s\nBAT  %s" % (norm[:6], bat[:6])); sys.exit(1)
if not all(e["data"] for e in q):
    print("qemu-img map now reports non-data for vhdx; compare with it directly"); sys.exit(1)
raw = open(sys.argv[4], "rb")
for s, l, k in norm:
    if k == "zero":
        raw.seek(s)
        while l:
            n = min(l, 1 << 20)
            if raw.read(n).count(0) != n:
                print("a stretch our map calls zero at %d is not zeros in qemu's output" % s); sys.exit(1)
            l -= n
PY
}

NCHECKED=0
check_read() {
  local name=$1 sub=$2 img=$T/$1.vhdx
  qimg convert -f vhdx -O raw "$img" "$T/$name.qemu.raw"
  amiport_ok convert -O raw "$img" "$T/$name.ours.raw"
  grep -qi warning "$T/stderr" && fail "$name: not probed as vhdx: $(cat "$T/stderr")"
  cmp "$T/$name.qemu.raw" "$T/$name.ours.raw" >"$T/cmp.out" 2>&1 ||
    fail "$name: amiport convert -O raw differs from qemu-img: $(head -1 "$T/cmp.out")"
  check_map "$name" "$T/$name.qemu.raw"
  [ "$name" = dynamic-1M-$((66 * MiB)) ] && cp "$T/$name.qemu.raw" "$T/keep.qemu.raw"
  rm -f "$T/$name.qemu.raw" "$T/$name.ours.raw"
  qemu-img info -f vhdx --output=json "$img" >"$T/$name.qinfo.json" || fail "$name: qemu-img info failed"
  amiport_ok info --output=json "$img"
  cp "$T/stdout" "$T/$name.info.json"
  info_equal "$T/$name.info.json" "$T/$name.qinfo.json" has:filename format virtual-size cluster-size ||
    fail "$name: info disagrees with qemu-img"
  [ "$(format_specific "$T/$name.info.json" subformat)" = "$sub" ] || fail "$name: subformat is not $sub"
  [ "$(format_specific "$T/$name.info.json" block-size)" = "$(json_get "$T/$name.qinfo.json" cluster-size)" ] ||
    fail "$name: block-size"
  [ -n "$(format_specific "$T/$name.info.json" logical-sector-size)" ] || fail "$name: no logical-sector-size"
  NCHECKED=$((NCHECKED + 1))
}

MiB=1048576
for sub in dynamic fixed; do
  for bs in 1M 32M; do
    for size in $((37 * MiB + 1536)) $((66 * MiB)); do
      name=$sub-$bs-$size
      qimg create -f vhdx -o subformat=$sub,block_size=$bs,log_size=1M "$T/$name.vhdx" "$size"
      vs=$(qemu-img info -f vhdx --output=json "$T/$name.vhdx" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
      qemu-io -f vhdx -c "write -P 0x11 0 512" -c "write -P 0xab 12345 7000" \
        -c "write -P 0x22 $((3 * MiB - 1024)) 4096" -c "write -P 0x33 $((34 * MiB)) $((2 * MiB))" \
        -c "write -z $((34 * MiB + 4096)) 8192" -c "write -P 0xef $((vs - 777)) 777" \
        "$T/$name.vhdx" >"$T/qemu.out" 2>&1 || { cat "$T/qemu.out"; fail "qemu-io on $name"; }
      check_read "$name" "$sub"
      [ "$name" = dynamic-1M-$((66 * MiB)) ] && cp "$T/$name.vhdx" "$T/keep.vhdx"
      rm -f "$T/$name.vhdx"
    done
  done
done
qimg create -f vhdx "$T/empty.vhdx" 100M
check_read empty dynamic

# 4096-byte logical sectors: relabel an image (no sector bitmap entries fall
# inside its BAT, so the layout stays valid); qemu reads it too.
cp "$T/keep.vhdx" "$T/ls4k.vhdx"
vtool "import struct; p=vhdx_parse('$T/ls4k.vhdx'); o,l=p['items']['8141BF1D-A96F-4709-BA47-F233A8FAAB5F']; wr('$T/ls4k.vhdx', o, struct.pack('<I', 4096))"
# qemu-img refuses logical sectors other than 512 (ENOTSUP): compare with its
# read of the original, whose data and BAT are the same.
amiport_ok convert -O raw "$T/ls4k.vhdx" "$T/ls4k.ours.raw"
cmp "$T/keep.qemu.raw" "$T/ls4k.ours.raw" >/dev/null || fail "ls4k: 4096-byte sectors read differently"
check_map ls4k "$T/keep.qemu.raw" no-qemu
amiport_ok info --output=json "$T/ls4k.vhdx"
[ "$(format_specific "$T/stdout" logical-sector-size)" = 4096 ] || fail "ls4k: logical sector size is not 4096"

# --- a log to replay ----------------------------------------------------------
cp "$T/keep.vhdx" "$T/log.vhdx"
vtool "
p = vhdx_parse('$T/log.vhdx'); blk = p['bat'][0] & ~((1 << 20) - 1); size = os.path.getsize('$T/log.vhdx')
g = bytes(range(0x21, 0x31))
e1 = vhdx_log_entry(41, 0, g, [('data', blk + 8192, bytes(range(256)) * 16)], size, size)
e2 = vhdx_log_entry(42, 0, g, [('zero', blk, 4096), ('data', blk + 12288, b'\\x99' * 4096)], size, size)
vhdx_write_log('$T/log.vhdx', [(0, e1), (len(e1), e2)], g)"
sum_before=$(sha256sum "$T/log.vhdx" | cut -d' ' -f1)
amiport_ok convert -O raw "$T/log.vhdx" "$T/log.ours.raw"
amiport_ok info --output=json "$T/log.vhdx"
[ "$(format_specific "$T/stdout" log-replayed-entries)" = 2 ] || fail "log: not 2 entries replayed"
[ "$(sha256sum "$T/log.vhdx" | cut -d' ' -f1)" = "$sum_before" ] || fail "log: the source file was modified"
cp "$T/log.vhdx" "$T/log.qemu.vhdx"
qemu-img check -r all "$T/log.qemu.vhdx" >"$T/qemu.out" 2>&1 || { cat "$T/qemu.out"; fail "qemu-img could not replay the log"; }
qimg convert -f vhdx -O raw "$T/log.qemu.vhdx" "$T/log.qemu.raw"
cmp "$T/log.qemu.raw" "$T/log.ours.raw" >"$T/cmp.out" 2>&1 || fail "log: replayed content differs from qemu's: $(cat "$T/cmp.out")"
cmp -s "$T/log.ours.raw" "$T/keep.qemu.raw" &&
  fail "log: the replay changed nothing"

# --- writing -------------------------------------------------------------------
mk_mixed_raw "$T/src.raw" 12
truncate -s $((41 * MiB + 1536)) "$T/src.raw"
printf 'tail' | dd of="$T/src.raw" bs=1 seek=$((41 * MiB + 1000)) conv=notrunc status=none
for opts in "" block_size=1M block_size=32M subformat=fixed subformat=fixed,block_size=1M,log_size=2M; do
  name=w-${opts:-default}
  name=${name//[=,]/-}
  amiport_ok convert -f raw -O vhdx ${opts:+-o $opts} "$T/src.raw" "$T/$name.vhdx"
  qemu-img check -f vhdx "$T/$name.vhdx" >"$T/qemu.out" 2>&1 || { cat "$T/qemu.out"; fail "$name: qemu-img check failed"; }
  qemu-img compare -f raw -F vhdx "$T/src.raw" "$T/$name.vhdx" >"$T/cmp.out" 2>&1 ||
    { cat "$T/cmp.out"; fail "$name: qemu-img compare: our VHDX differs from the source"; }
  [ "$(qemu-img info --output=json "$T/$name.vhdx" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = vhdx ] ||
    fail "$name: qemu-img does not probe it as vhdx"
  amiport_ok info --output=json "$T/$name.vhdx"
  sub=$(format_specific "$T/stdout" subformat)
  case $opts in
    *fixed*)
      [ "$sub" = fixed ] || fail "$name: subformat $sub, not fixed"
      [ "$(stat -c %s "$T/$name.vhdx")" -gt $((41 * MiB)) ] || fail "$name: a fixed VHDX is not fully allocated" ;;
    *) [ "$sub" = dynamic ] || fail "$name: subformat $sub, not dynamic" ;;
  esac
  case $opts in *block_size=32M*) [ "$(format_specific "$T/stdout" block-size)" = $((32 * MiB)) ] || fail "$name: block size" ;; esac
  amiport_ok convert -O raw "$T/$name.vhdx" "$T/$name.back.raw"
  cmp -s "$T/src.raw" "$T/$name.back.raw" || fail "$name: round trip differs"
  rm -f "$T/$name.vhdx" "$T/$name.back.raw"
done
amiport_ok convert -f raw -O vhdx --verify "$T/src.raw" "$T/verified.vhdx"
expect_rc 2 convert -f raw -O vhdx -o block_size=3M "$T/src.raw" "$T/bad.vhdx"
stderr_has "block_size=3M: must be a power of two"
expect_rc 2 convert -f raw -O vhdx -o compat=1.1 "$T/src.raw" "$T/bad.vhdx"
stderr_has "no option 'compat'"

info "checked $NCHECKED images read, a replayed log, 5 written"
exit 0
