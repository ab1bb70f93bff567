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

write_vtool() {
  cat >"$T/vtool.py" <<'PYEOF'
# vtool.py - crafts and inspects VHD and VHDX files for amiport's tests.
import os, struct, sys, uuid

def crc32c(data):
    t = crc32c.table
    if t is None:
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        crc32c.table = t
    c = 0xffffffff
    for b in data:
        c = (c >> 8) ^ t[(c ^ b) & 0xff]
    return c ^ 0xffffffff
crc32c.table = None

def vhdx_csum(buf, off):
    b = bytearray(buf); b[off:off+4] = b'\0\0\0\0'
    return crc32c(bytes(b))

def vhd_sum(buf, off):
    b = bytearray(buf); b[off:off+4] = b'\0\0\0\0'
    return (~sum(b)) & 0xffffffff

def rd(path, off, n):
    with open(path, 'rb') as f:
        f.seek(off); return f.read(n)

def wr(path, off, data):
    with open(path, 'r+b') as f:
        f.seek(off); f.write(data)

# ---- VHD ----
def vhd_refooter(path, off):
    f = bytearray(rd(path, off, 512))
    struct.pack_into('>I', f, 64, vhd_sum(f, 64)); wr(path, off, f)

def vhd_set_creator(path, app, current_size=None):
    size = os.path.getsize(path)
    offs = [size - 512] + ([0] if rd(path, 0, 8) == b'conectix' else [])
    for o in offs:
        f = bytearray(rd(path, o, 512))
        f[28:32] = app
        if current_size is not None:
            struct.pack_into('>Q', f, 48, current_size)
        struct.pack_into('>I', f, 64, vhd_sum(f, 64)); wr(path, o, f)

def vhd_make_diff(parent, child, locators, writes, parent_uuid=None, name=''):
    """locators: list of (code, text); writes: list of (offset, length, byte) in sectors."""
    pf = rd(parent, 0, 512)
    size = struct.unpack_from('>Q', pf, 48)[0]
    bs = 2 << 20
    n = (size + bs - 1) // bs
    bat_off = 1536 + 512 * len(locators)
    data0 = bat_off + (n * 4 + 511) // 512 * 512
    blocks = {}
    for (off, ln, byte) in writes:
        for s in range(off // 512, (off + ln) // 512):
            b = s * 512 // bs
            if b not in blocks:
                blocks[b] = [bytearray(512), bytearray(bs)]
            bm, d = blocks[b]
            i = (s * 512 % bs) // 512
            bm[i // 8] |= 0x80 >> (i % 8)
            d[i * 512:(i + 1) * 512] = bytes([byte]) * 512
    bat = [0xffffffff] * n
    out = bytearray(data0)
    at = data0
    for b in sorted(blocks):
        bat[b] = at // 512
        out += blocks[b][0] + blocks[b][1]
        at += 512 + bs
    foot = bytearray(pf)
    struct.pack_into('>I', foot, 60, 4)
    foot[68:84] = uuid.uuid4().bytes
    struct.pack_into('>I', foot, 64, vhd_sum(foot, 64))
    h = bytearray(1024)
    h[0:8] = b'cxsparse'
    struct.pack_into('>QQIII', h, 8, 0xffffffffffffffff, bat_off, 0x10000, n, bs)
    h[40:56] = parent_uuid if parent_uuid is not None else pf[68:84]
    pn = name.encode('utf-16-be')[:512]
    h[64:64 + len(pn)] = pn
    for i, (code, text) in enumerate(locators):
        raw = text.encode('utf-16-le') if code != b'MacX' else text.encode()
        struct.pack_into('>4sIIIQ', h, 576 + 24 * i, code, 1, len(raw), 0, 1536 + 512 * i)
        out[1536 + 512 * i:1536 + 512 * i + len(raw)] = raw
    struct.pack_into('>I', h, 36, vhd_sum(h, 36))
    out[0:512] = foot
    out[512:1536] = h
    for i, e in enumerate(bat):
        struct.pack_into('>I', out, bat_off + 4 * i, e)
    out += foot
    open(child, 'wb').write(out)

# ---- VHDX ----
def vhdx_parse(path):
    hs = [rd(path, 65536, 4096), rd(path, 131072, 4096)]
    ok = [h[0:4] == b'head' and struct.unpack_from('<I', h, 4)[0] == vhdx_csum(h, 4) for h in hs]
    cur = max([i for i in range(2) if ok[i]], key=lambda i: struct.unpack_from('<Q', hs[i], 8)[0])
    rt = rd(path, 196608, 65536)
    regions = {}
    for i in range(struct.unpack_from('<I', rt, 8)[0]):
        g, off, ln, req = struct.unpack_from('<16sQII', rt, 16 + 32 * i)
        regions[str(uuid.UUID(bytes_le=g)).upper()] = (off, ln)
    moff, mlen = regions['8B7CA206-4790-4B9A-B8FE-575F050F886E']
    boff, blen = regions['2DC27766-F623-4200-9D64-115E9BFD4A08']
    mt = rd(path, moff, 65536)
    items = {}
    for i in range(struct.unpack_from('<H', mt, 10)[0]):
        g, o, l, fl = struct.unpack_from('<16sIII', mt, 32 + 32 * i)
        items[str(uuid.UUID(bytes_le=g)).upper()] = (moff + o, l)
    bsz = struct.unpack_from('<I', rd(path, *items['CAA16737-FA36-4D43-B3B6-33F0AA44E76B']))[0]
    vsz = struct.unpack_from('<Q', rd(path, *items['2FA54224-CD1B-4876-B211-5DBED83BF4B8']))[0]
    lss = struct.unpack_from('<I', rd(path, *items['8141BF1D-A96F-4709-BA47-F233A8FAAB5F']))[0]
    ratio = (1 << 23) * lss // bsz
    nb = (vsz + bsz - 1) // bsz
    bat = [struct.unpack_from('<Q', rd(path, boff + 8 * (b + b // ratio), 8))[0] for b in range(nb)]
    return dict(header=cur, headers=hs, hoffs=[65536, 131072], regions=regions, meta=moff,
                items=items, block=bsz, size=vsz, lss=lss, ratio=ratio, bat=bat, bat_off=boff)

def vhdx_map(path):
    """[start, length, kind] with kind data (fully present) or zero, merged."""
    p = vhdx_parse(path)
    out = []
    for b, e in enumerate(p['bat']):
        kind = 'data' if e & 7 == 6 else 'zero'
        s, l = b * p['block'], min(p['block'], p['size'] - b * p['block'])
        if out and out[-1][2] == kind:
            out[-1][1] += l
        else:
            out.append([s, l, kind])
    return out

def vhdx_rehead(path, idx, mutate):
    off = [65536, 131072][idx]
    h = bytearray(rd(path, off, 4096))
    mutate(h)
    struct.pack_into('<I', h, 4, vhdx_csum(h, 4))
    wr(path, off, h)

def vhdx_log_entry(seq, tail, guid, descs, flushed, last, length=None):
    """descs: ('data', file_off, bytes4096) or ('zero', file_off, length)."""
    ndata = sum(1 for d in descs if d[0] == 'data')
    dsec = (64 + 32 * len(descs) + 4095) // 4096
    elen = length or (dsec + ndata) * 4096
    e = bytearray(elen)
    struct.pack_into('<4sIIIQII16sQQ', e, 0, b'loge', 0, elen, tail, seq, len(descs), 0, guid,
                     flushed, last)
    sec = dsec
    for i, d in enumerate(descs):
        o = 64 + 32 * i
        if d[0] == 'zero':
            struct.pack_into('<4sIQQQ', e, o, b'zero', 0, d[2], d[1], seq)
        else:
            page = d[2]
            e[o:o+4] = b'desc'
            e[o+4:o+8] = page[4092:4096]
            e[o+8:o+16] = page[0:8]
            struct.pack_into('<QQ', e, o + 16, d[1], seq)
            s = sec * 4096
            e[s:s+4] = b'data'
            struct.pack_into('<I', e, s + 4, seq >> 32)
            e[s+8:s+4092] = page[8:4092]
            struct.pack_into('<I', e, s + 4092, seq & 0xffffffff)
            sec += 1
    struct.pack_into('<I', e, 4, crc32c(bytes(e)))
    return bytes(e)

def vhdx_write_log(path, entries_at, guid):
    """entries_at: list of (log offset, entry bytes); sets LogGuid in the current header."""
    p = vhdx_parse(path)
    h = p['headers'][p['header']]
    loff = struct.unpack_from('<Q', h, 72)[0]
    llen = struct.unpack_from('<I', h, 68)[0]
    wr(path, loff, bytes(llen))
    for at, ent in entries_at:
        wr(path, loff + at, ent)
    def mut(b):
        b[48:64] = guid
    vhdx_rehead(path, p['header'], mut)

def vhdx_fix_table(path, off, size, mutate):
    t = bytearray(rd(path, off, size))
    mutate(t)
    struct.pack_into('<I', t, 4, vhdx_csum(t, 4))
    wr(path, off, t)

if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'vhdx-map':
        import json
        print(json.dumps(vhdx_map(args[0])))
    else:
        exec(cmd)
PYEOF
}
write_vtool
vtool() { "$PYTHON" "$T/vtool.py" "$@" || fail "vtool $1 failed"; }

# check_map NAME RAW - our map against the BAT, qemu's map, and the data.
check_map() {
  local name=$1 img=$T/$1.vhdx raw=$2
  amiport_ok map --output=json "$img"
  cp "$T/stdout" "$T/$name.map.json"
  "$PYTHON" "$T/vtool.py" vhdx-map "$img" >"$T/$name.bat.json" || fail "$name: cannot decode the BAT"
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
