#!/bin/bash
# vmdk_corrupt.sh - damaged and hostile VMDKs fail with an error that names
# the file, the field and the value; nothing crashes or hangs.
#
# Asserted error texts: a grain table offset past the end of the file; a
# compressed grain whose length runs past the end, or that inflates to the
# wrong size, or is not zlib data; a stream-optimized file with no footer; a
# descriptor extent of absurd size, or bigger than its flat file; extent paths
# '../../etc/passwd', '/etc/passwd' and a symlink leading out of the
# directory (refused; allowed with --allow-extent-paths); a missing extent
# file; a descriptor that is not text; a header field out of range; legacy
# COWD and seSparse named as unsupported; a delta disk with a parent.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp
setup_tmp

# patch FILE OFFSET STRUCT_FMT VALUE... - overwrite bytes with struct.pack.
patch() {
  "$PYTHON" - "$@" <<'PY'
import struct, sys
path, off, fmt = sys.argv[1], int(sys.argv[2], 0), sys.argv[3]
vals = [int(v, 0) for v in sys.argv[4:]]
with open(path, "r+b") as f:
    f.seek(off); f.write(struct.pack(fmt, *vals))
PY
}

# bad NAME RC PATTERN... ARGS - expects amiport ARGS to fail with RC and stderr PATTERNs.
bad() {
  local name=$1 rc=$2 pat=$3
  shift 3
  expect_rc "$rc" "$@"
  stderr_is_error
  stderr_has "$pat"
  info "$name: $(head -1 "$T/stderr")"
}

head -c $((3 * 65536)) /dev/urandom >"$T/src.raw"
truncate -s 4M "$T/src.raw"

# --- grain table offset past the end (monolithicSparse) -----------------------
qimg convert -f raw -O vmdk -o subformat=monolithicSparse "$T/src.raw" "$T/gt.vmdk"
gd=$("$PYTHON" -c "import struct; d=open('$T/gt.vmdk','rb').read(512); print(struct.unpack_from('<Q', d, 56)[0] * 512)")
cp "$T/gt.vmdk" "$T/gt2.vmdk"
patch "$T/gt.vmdk" "$gd" "<I" 0x7ffffff0
bad gt-past-end 1 "grain directory entry 0 points to a grain table at sector 2147483632, past the end" info "$T/gt.vmdk"
# header field out of range
patch "$T/gt2.vmdk" 44 "<I" 100000
bad num-gtes 1 "numGTEsPerGT is 100000" info "$T/gt2.vmdk"

# --- stream-optimized grains ---------------------------------------------------
head -c 65536 /dev/urandom >"$T/one.raw"
truncate -s 1M "$T/one.raw"
amiport_ok convert -f raw -O vmdk "$T/one.raw" "$T/one.vmdk"
G=$((128 * 512))   # amiport's first grain: sector 128
cp "$T/one.vmdk" "$T/len.vmdk"
patch "$T/len.vmdk" $((G + 8)) "<I" 130000
bad cgrain-length 1 "compressed grain for guest offset 0 at file offset $G has length 130000, past the end of the file" \
  convert -O raw "$T/len.vmdk" "$T/x.raw"
cp "$T/one.vmdk" "$T/len2.vmdk"
patch "$T/len2.vmdk" $((G + 8)) "<I" 0x7fffffff
bad cgrain-huge 1 "has length 2147483647; must be 1 to 131072" convert -O raw "$T/len2.vmdk" "$T/x.raw"
# a grain that inflates to 4096 bytes, not 65536
cp "$T/one.vmdk" "$T/short.vmdk"
"$PYTHON" - "$T/short.vmdk" $G <<'PY'
import struct, sys, zlib
path, g = sys.argv[1], int(sys.argv[2])
z = zlib.compress(b"\x42" * 4096)
with open(path, "r+b") as f:
    f.seek(g + 8); f.write(struct.pack("<I", len(z))); f.write(z)
PY
bad cgrain-size 1 "inflates to 4096 bytes, not the grain size 65536" convert -O raw "$T/short.vmdk" "$T/x.raw"
cp "$T/one.vmdk" "$T/junk.vmdk"
patch "$T/junk.vmdk" $((G + 12)) "<QQ" 0x1122334455667788 0x99aabbccddeeff00
bad cgrain-junk 1 "is not valid zlib data" convert -O raw "$T/junk.vmdk" "$T/x.raw"
# no footer: the last sector (end-of-stream marker) cut off
cp "$T/one.vmdk" "$T/cut.vmdk"
truncate -s -512 "$T/cut.vmdk"
bad no-footer 1 "no valid footer" info "$T/cut.vmdk"

# --- descriptors ---------------------------------------------------------------
mkdir -p "$T/d/sub"
truncate -s 1M "$T/d/f-flat.vmdk"
desc() { # desc FILE EXTENT_LINE
  printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n%s\n' "$2" >"$1"
}
desc "$T/d/ok.vmdk" 'RW 2048 FLAT "f-flat.vmdk" 0'
amiport_ok info "$T/d/ok.vmdk"
desc "$T/d/absurd.vmdk" 'RW 99999999999999999 FLAT "f-flat.vmdk" 0'
bad absurd-size 1 "extent size 99999999999999999 sectors is absurd" info "$T/d/absurd.vmdk"
desc "$T/d/toobig.vmdk" 'RW 4000000000 FLAT "f-flat.vmdk" 0'
bad bigger-than-file 1 "FLAT extent 'f-flat.vmdk' needs bytes 0 to 2048000000000 of its file, but the file is 1048576 bytes" info "$T/d/toobig.vmdk"
desc "$T/d/overflow.vmdk" 'RW 999999999999999999999999 FLAT "f-flat.vmdk" 0'
bad size-overflow 1 "extent size '999999999999999999999999' is not a number of sectors" info "$T/d/overflow.vmdk"
desc "$T/d/up.vmdk" 'RW 2048 FLAT "../../etc/passwd" 0'
bad dotdot 1 "extent path '../../etc/passwd' goes up a directory.*--allow-extent-paths" info "$T/d/up.vmdk"
desc "$T/d/abs.vmdk" 'RW 2048 FLAT "/etc/passwd" 0'
bad absolute 1 "extent path '/etc/passwd' is absolute.*--allow-extent-paths" info "$T/d/abs.vmdk"
ln -s /etc/passwd "$T/d/link-flat.vmdk"
desc "$T/d/link.vmdk" 'RW 1 FLAT "link-flat.vmdk" 0'
bad symlink 1 "extent path 'link-flat.vmdk' resolves to '/etc/passwd', outside the descriptor's directory" info "$T/d/link.vmdk"
desc "$T/d/missing.vmdk" 'RW 2048 FLAT "missing-flat.vmdk" 0'
bad missing 1 "extent file 'missing-flat.vmdk': No such file" info "$T/d/missing.vmdk"
# allowed: an absolute path and a symlink when the user says so
desc "$T/d/sub/abs-ok.vmdk" "RW 2048 FLAT \"$T/d/f-flat.vmdk\" 0"
amiport_ok info --allow-extent-paths "$T/d/sub/abs-ok.vmdk"
desc "$T/d/sub/up-ok.vmdk" 'RW 2048 FLAT "../f-flat.vmdk" 0'
amiport_ok convert --allow-extent-paths -O raw "$T/d/sub/up-ok.vmdk" "$T/up.raw"
cmp -s "$T/up.raw" "$T/d/f-flat.vmdk" || fail "--allow-extent-paths: wrong data"
amiport_ok map --allow-extent-paths "$T/d/sub/up-ok.vmdk"
# not text
head -c 4096 /dev/urandom | tr '\000' '\001' | "$PYTHON" -c 'import sys; sys.stdout.buffer.write(b"\x01\x02binary" + sys.stdin.buffer.read())' >"$T/d/bin.vmdk"
bad not-text 1 "not a VMDK image: no sparse header magic, and not a text descriptor \(byte 0x01 at offset 0\)" info -f vmdk "$T/d/bin.vmdk"
printf '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 8 FLAT "f-flat.vmdk" 0\n\001\002\003garbage\n' >"$T/d/ctl.vmdk"
bad control-bytes 1 "not a text descriptor" info "$T/d/ctl.vmdk"
# a parent (delta disk)
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType="monolithicFlat"\nparentFileNameHint="base.vmdk"\nRW 2048 FLAT "f-flat.vmdk" 0\n' >"$T/d/delta.vmdk"
bad delta 1 "delta disk of parent 'base.vmdk'" info "$T/d/delta.vmdk"

# --- unsupported subformats, named -------------------------------------------------
"$PYTHON" -c 'import sys; sys.stdout.buffer.write(b"COWD" + b"\x01\x00\x00\x00" + bytes(2040))' >"$T/cowd.vmdk"
bad cowd 1 "legacy VMDK3 'COWD' sparse extent.*not supported" info "$T/cowd.vmdk"
"$PYTHON" -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<QQ", 0xcafebabe, 0x200000001) + bytes(2032))' >"$T/se.vmdk"
bad sesparse-magic 1 "seSparse extent.*not supported" info -f vmdk "$T/se.vmdk"
printf '# Disk DescriptorFile\nversion=1\ncreateType="seSparse"\nRW 2048 SESPARSE "se.vmdk"\n' >"$T/sed.vmdk"
bad sesparse-desc 1 "createType 'seSparse'.*not supported" info "$T/sed.vmdk"
printf '# Disk DescriptorFile\nversion=1\ncreateType="vmfsSparse"\nRW 2048 VMFSSPARSE "cowd.vmdk"\n' >"$T/vs.vmdk"
bad vmfssparse-desc 1 "vmfsSparse.*not supported" info "$T/vs.vmdk"
printf '# Disk DescriptorFile\nversion=1\ncreateType="twoGbMaxExtentSparse"\nRW 2048 SESPARSE "se.vmdk"\n' >"$T/sex.vmdk"
bad sesparse-extent 1 "SESPARSE extent \(seSparse\); not supported" info "$T/sex.vmdk"

# --- truncations of a good image never crash ---------------------------------------
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$T/src.raw" "$T/qs.vmdk"
n=$(stat -c %s "$T/qs.vmdk")
for cut in 0 100 511 512 1024 4096 70000 $((n / 2)) $((n - 1)); do
  head -c $cut "$T/qs.vmdk" >"$T/cut-$cut.vmdk"
  run_amiport convert -f vmdk -O raw "$T/cut-$cut.vmdk" "$T/cut-$cut.raw"
  if [ "$RC" -ne 0 ]; then stderr_is_error; fi
  rm -f "$T/cut-$cut.raw"
done
info "all corrupt inputs rejected with the expected errors"
