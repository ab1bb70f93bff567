#!/bin/bash
# vhd_corrupt.sh - corrupt and hostile VHD and VHDX files are refused with an
# error that names the file, the structure and the value; nothing crashes.
#
# VHD: footer checksum wrong; BAT past the end of the file; block size not a
# power of two; a BAT entry past the end; max table entries too small for the
# size; a differencing disk whose parent locator is /etc/passwd (refused
# without --allow-backing, and with it because it is outside the image's
# directory); a relative locator that climbs out of the directory.
# VHDX: both headers invalid; region table with overlapping regions; region
# overlapping the log; block size not a power of two; a log whose entry
# sequence is broken; a log that writes into the headers; a BAT entry past
# the end of the file.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io
setup_tmp

vtool() { "$PYTHON" "$SRCDIR/tests/vtool.py" "$@" || fail "vtool $1 failed"; }

# refused FILE FMT PATTERN... - amiport info must fail (exit 1) with every PATTERN.
refused() {
  local img=$1 fmt=$2
  shift 2
  expect_rc 1 info -f "$fmt" "$img"
  stderr_is_error
  stderr_has "$(basename "$img")" "$@"
}

MiB=1048576
qimg create -f vpc "$T/good.vhd" 8M
qemu-io -f vpc -c "write -P 0x11 0 3M" "$T/good.vhd" >/dev/null || fail "qemu-io"

# footer checksum wrong (both copies)
cp "$T/good.vhd" "$T/csum.vhd"
vtool "s=os.path.getsize('$T/csum.vhd'); [wr('$T/csum.vhd', o + 64, b'\\x12\\x34\\x56\\x78') for o in (0, s - 512)]"
refused "$T/csum.vhd" vpc "VHD footer checksum is 0x12345678 but the footer sums to 0x"
# BAT past the end of the file (dynamic header's table offset)
cp "$T/good.vhd" "$T/batend.vhd"
vtool "import struct; h=bytearray(rd('$T/batend.vhd', 512, 1024)); struct.pack_into('>Q', h, 16, 1 << 40); struct.pack_into('>I', h, 36, vhd_sum(h, 36)); wr('$T/batend.vhd', 512, h)"
refused "$T/batend.vhd" vpc "VHD BAT at offset 1099511627776 .* runs past the end of the file"
# block size not a power of two
cp "$T/good.vhd" "$T/bs.vhd"
vtool "import struct; h=bytearray(rd('$T/bs.vhd', 512, 1024)); struct.pack_into('>I', h, 32, 3000000); struct.pack_into('>I', h, 36, vhd_sum(h, 36)); wr('$T/bs.vhd', 512, h)"
refused "$T/bs.vhd" vpc "block size is 3000000; must be a power of two"
# a BAT entry past the end
cp "$T/good.vhd" "$T/entry.vhd"
vtool "import struct; wr('$T/entry.vhd', 1536 + 4, struct.pack('>I', 0x7fffffff))"
refused "$T/entry.vhd" vpc "VHD BAT entry 1 points to a block at offset .* past the end of the file"
# too few BAT entries for the size
cp "$T/good.vhd" "$T/few.vhd"
vtool "import struct; h=bytearray(rd('$T/few.vhd', 512, 1024)); struct.pack_into('>I', h, 28, 1); struct.pack_into('>I', h, 36, vhd_sum(h, 36)); wr('$T/few.vhd', 512, h)"
refused "$T/few.vhd" vpc "max table entries is 1; a .*-byte disk of 2097152-byte blocks needs 5"
# truncated
head -c 300 "$T/good.vhd" >"$T/short.vhd"
refused "$T/short.vhd" vpc "shorter than a VHD footer"

# differencing: parent /etc/passwd
mkdir -p "$T/d"
cp "$T/good.vhd" "$T/d/base.vhd"
vtool "vhd_make_diff('$T/d/base.vhd', '$T/d/evil.vhd', [(b'W2ru', '/etc/passwd')], [(0, 512, 1)])"
refused "$T/d/evil.vhd" vpc "differencing VHD names a parent '/etc/passwd'; refusing" "allow-backing"
expect_rc 1 info --allow-backing "$T/d/evil.vhd"
stderr_has "parent '/etc/passwd' \\(W2ru\\) resolves to '/etc/passwd', outside the image's directory"
# more '..' than any checkout path has levels, so it always climbs to /
climb=$(printf '..\\\\%.0s' $(seq 40))etc\\\\passwd
vtool "vhd_make_diff('$T/d/base.vhd', '$T/d/climb.vhd', [(b'W2ru', '$climb')], [(0, 512, 1)])"
expect_rc 1 info --allow-backing "$T/d/climb.vhd"
stderr_has "resolves to '/etc/passwd', outside the image's directory"
vtool "vhd_make_diff('$T/d/base.vhd', '$T/d/lost.vhd', [(b'W2ru', 'nothere.vhd')], [(0, 512, 1)])"
expect_rc 1 info --allow-backing "$T/d/lost.vhd"
stderr_has "parent 'nothere.vhd' \\(W2ru\\) not found"

# --- VHDX ---------------------------------------------------------------------
qimg create -f vhdx -o block_size=1M,log_size=1M "$T/good.vhdx" 8M
qemu-io -f vhdx -c "write -P 0x22 0 2M" "$T/good.vhdx" >/dev/null || fail "qemu-io vhdx"

cp "$T/good.vhdx" "$T/heads.vhdx"
vtool "wr('$T/heads.vhdx', 65536 + 4, b'\\xde\\xad'); wr('$T/heads.vhdx', 131072, b'xxxx')"
refused "$T/heads.vhdx" vhdx "both VHDX headers are invalid \\(header 1 at 65536: checksum .*; header 2 at 131072: no \"head\" signature\\)"
# one header bad is fine: the other is used
cp "$T/good.vhdx" "$T/onehead.vhdx"
vtool "wr('$T/onehead.vhdx', 65536 + 4, b'\\xde\\xad')"
amiport_ok info -f vhdx "$T/onehead.vhdx"

cp "$T/good.vhdx" "$T/overlap.vhdx"
for off in 196608 262144; do
  vtool "import struct
def m(t):
    n = struct.unpack_from('<I', t, 8)[0]
    o0 = struct.unpack_from('<Q', t, 16 + 16)[0]
    struct.pack_into('<Q', t, 16 + 32 + 16, o0)
vhdx_fix_table('$T/overlap.vhdx', $off, 65536, m)"
done
refused "$T/overlap.vhdx" vhdx "VHDX region table entries 0 \\(\\[.*\\)\\) and 1 \\(\\[.*\\)\\) overlap"
cp "$T/good.vhdx" "$T/overlog.vhdx"
for off in 196608 262144; do
  vtool "import struct
def m(t):
    struct.pack_into('<Q', t, 16 + 16, 1048576)
vhdx_fix_table('$T/overlog.vhdx', $off, 65536, m)"
done
refused "$T/overlog.vhdx" vhdx "region table entry 0 .* overlaps the log"

cp "$T/good.vhdx" "$T/bs.vhdx"
vtool "import struct; p=vhdx_parse('$T/bs.vhdx'); o,l=p['items']['CAA16737-FA36-4D43-B3B6-33F0AA44E76B']; wr('$T/bs.vhdx', o, struct.pack('<I', 3 << 20))"
refused "$T/bs.vhdx" vhdx "VHDX metadata field block size is 3145728; must be a power of two"

cp "$T/good.vhdx" "$T/batend.vhdx"
vtool "import struct; p=vhdx_parse('$T/batend.vhdx'); wr('$T/batend.vhdx', p['bat_off'], struct.pack('<Q', (4096 << 20) | 6))"
refused "$T/batend.vhdx" vhdx "VHDX BAT entry 0 \\(payload block\\) points to offset 4294967296, running past the end of the file"

# a log whose sequence is broken: the newest entry (seq 8) names a tail at
# log offset 0, where entry 5 is, and 5 is not followed by 6 and 7.
cp "$T/good.vhdx" "$T/log.vhdx"
vtool "
p = vhdx_parse('$T/log.vhdx'); blk = p['bat'][0] & ~((1 << 20) - 1); size = os.path.getsize('$T/log.vhdx')
g = bytes(range(0x41, 0x51))
e5 = vhdx_log_entry(5, 0, g, [('data', blk, b'\\x01' * 4096)], size, size)
e8 = vhdx_log_entry(8, 0, g, [('data', blk, b'\\x02' * 4096)], size, size)
vhdx_write_log('$T/log.vhdx', [(0, e5), (len(e5), e8)], g)"
sum_before=$(sha256sum "$T/log.vhdx" | cut -d' ' -f1)
refused "$T/log.vhdx" vhdx "VHDX log entry sequence is broken: entry 8 follows entry 5 .*; refusing to replay the log"
[ "$(sha256sum "$T/log.vhdx" | cut -d' ' -f1)" = "$sum_before" ] || fail "the log image was modified"
# a log that writes into the headers
cp "$T/good.vhdx" "$T/loghdr.vhdx"
vtool "
size = os.path.getsize('$T/loghdr.vhdx'); g = bytes(range(0x61, 0x71))
e = vhdx_log_entry(3, 0, g, [('data', 65536, b'\\x03' * 4096)], size, size)
vhdx_write_log('$T/loghdr.vhdx', [(0, e)], g)"
refused "$T/loghdr.vhdx" vhdx "VHDX log writes to file offset 65536, inside the headers .*refusing to replay it"
# a log that says the file was longer than it is (truncated after a crash)
cp "$T/good.vhdx" "$T/logtrunc.vhdx"
vtool "
size = os.path.getsize('$T/logtrunc.vhdx'); g = bytes(range(0x71, 0x81))
e = vhdx_log_entry(3, 0, g, [('zero', 4 << 20, 4096)], size + (64 << 20), size + (64 << 20))
vhdx_write_log('$T/logtrunc.vhdx', [(0, e)], g)"
refused "$T/logtrunc.vhdx" vhdx "VHDX log .* says the file was flushed at .* bytes, but it is .* bytes"
head -c 100000 "$T/good.vhdx" >"$T/short.vhdx"
refused "$T/short.vhdx" vhdx "shorter than the VHDX headers"

info "all corrupt images refused"
exit 0
