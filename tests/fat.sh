#!/bin/bash
# fat.sh - the inspector's FAT driver against FAT12, FAT16 and FAT32 volumes
# made by mkfs.fat and filled by mtools: long names (with non-ASCII ones),
# 8.3 names with lower-case flags, case-insensitive lookup, a deep path, an
# empty file, files spanning many clusters, a fragmented file, a directory of
# hundreds of long names, label and serial as blkid reports them; a volume at
# a partition offset inside a bigger image, and the same through qcow2. Then
# damaged volumes, each refused with an error naming vfat/FAT and the fault:
# bytes per sector 0, a FAT chain loop, a cluster number past the end, and a
# directory with no end marker whose chain spans the whole data area.
. "$(dirname "$0")/lib.sh"

require_cmd mkfs.fat mcopy mmd mdel mshowfat cmp
FSREAD=${TESTBIN:?TESTBIN must name the test tools directory}/fsread
[ -x "$FSREAD" ] || fail "no fsread in $TESTBIN"
setup_tmp
export LC_ALL=C.UTF-8 MTOOLS_SKIP_CHECK=1 MTOOLS_NO_VFAT=0

# fsread ARGS... - runs the tool with a timeout; RC, $T/out, $T/err.
fsread() {
  RC=0
  timeout -k 5 "$AMIPORT_TIMEOUT" "$FSREAD" "$@" >"$T/out" 2>"$T/err" || RC=$?
  [ "$RC" -lt 124 ] || { cat "$T/err" >&2; fail "fsread $* crashed or hung (exit $RC)"; }
}
fsread_ok() {
  fsread "$@"
  [ "$RC" -eq 0 ] || { cat "$T/err" >&2; fail "fsread $* exited $RC"; }
}
mt() { # mtools command, failing the test on error
  "$@" >"$T/mt.out" 2>&1 || { cat "$T/mt.out" >&2; fail "$* failed"; }
}

# The files, staged once.
mkdir -p "$T/src"
"$PYTHON" - "$T/src" <<'EOF' || fail "staging failed"
import os, random, sys
d = sys.argv[1]
rnd = random.Random(7)
def put(name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
put("bootx64", rnd.randbytes(300000))
put("big", rnd.randbytes(1200000 + 123))
put("small", b"hello, fat\n")
put("empty", b"")
put("fill", rnd.randbytes(200000))
put("frag", rnd.randbytes(400000 + 5))
EOF

mkdir -p "$T/many"
for i in $(seq 1 300); do
  : >"$T/many/a rather long file name number $i.dat"
  echo "::/many/a rather long file name number $i.dat"
done >"$T/many.lst"

# build IMG FAT_BITS SIZE_KIB - a volume with the whole tree.
build() {
  local img=$1 s=$T/src i
  rm -f "$img"
  mt mkfs.fat -C -F "$2" -n "VOL FAT$2" -i 1234ABCD "$img" "$3"
  mt mmd -i "$img" ::/EFI ::/EFI/BOOT ::/a ::/a/b ::/a/b/c ::/a/b/c/d ::/a/b/c/d/e \
    ::/a/b/c/d/e/f
  mt mcopy -i "$img" "$s/bootx64" ::/EFI/BOOT/BOOTX64.EFI
  mt mcopy -i "$img" "$s/small" "::/A long File Name with spaces.txt"
  mt mcopy -i "$img" "$s/small" ::/MixedCase.Txt
  mt mcopy -i "$img" "$s/small" ::/readme.txt
  mt mcopy -i "$img" "$s/small" ::/UPPER.TXT
  mt mcopy -i "$img" "$s/small" "::/Grüße ünïcødé €.txt"
  mt mcopy -i "$img" "$s/small" ::/a/b/c/d/e/f/deep.txt
  mt mcopy -i "$img" "$s/empty" ::/empty
  # Fragmented: a hole left by a deleted file, then a file larger than it.
  mt mcopy -i "$img" "$s/fill" ::/fill1
  mt mcopy -i "$img" "$s/fill" ::/fill2
  mt mdel -i "$img" ::/fill1
  # mtools allocates after FAT32's next-free hint: forget it, so the hole is
  # reused.
  [ "$2" != 32 ] || "$PYTHON" - "$img" <<'EOF' || fail "clearing the FSInfo hint failed"
import struct, sys
with open(sys.argv[1], "r+b") as f:
    b = f.read(512)
    f.seek(struct.unpack_from("<H", b, 48)[0] * struct.unpack_from("<H", b, 11)[0] + 492)
    f.write(b"\xff\xff\xff\xff")
EOF
  mt mcopy -i "$img" "$s/frag" ::/frag
  mt mcopy -i "$img" "$s/big" ::/big
  mt mcopy -s -i "$img" "$T/many" ::/
}

# check IMG OFFSET SIZE WANT_VERSION - everything reads back.
check() {
  local img=$1 off=$2 size=$3 n
  fsread_ok "$img" "$off" "$size" info
  case "$(cat "$T/out")" in
    "vfat label="*" uuid=1234-ABCD version=$4") ;;
    *) fail "$img: info says $(cat "$T/out"), expected uuid 1234-ABCD and $4" ;;
  esac
  for n in "EFI/BOOT/BOOTX64.EFI:bootx64" "efi/boot/bootx64.efi:bootx64" "big:big" "frag:frag" \
           "fill2:fill" "A long File Name with spaces.txt:small" "a LONG file NAME with SPACES.TXT:small" \
           "MixedCase.Txt:small" "mixedcase.txt:small" "MIXEDCASE.TXT:small" "readme.txt:small" \
           "README.TXT:small" "upper.txt:small" "Grüße ünïcødé €.txt:small" "a/b/c/d/e/f/deep.txt:small" \
           "A/B/C/D/E/F/DEEP.TXT:small" "empty:empty" "many/A Rather Long File Name Number 300.DAT:empty"; do
    fsread_ok "$img" "$off" "$size" cat "/${n%%:*}"
    cmp -s "$T/out" "$T/src/${n#*:}" || fail "$img: /${n%%:*} reads back different"
  done
  fsread "$img" "$off" "$size" cat /nothere.txt
  [ "$RC" -eq 3 ] || fail "$img: a missing name gave exit $RC, expected 3"
  fsread_ok "$img" "$off" "$size" stat /big
  [ "$(cat "$T/out")" = "f 1200123 100644" ] || fail "$img: stat /big says $(cat "$T/out")"
  # The root's listing: long names where there are, 8.3 names (with their
  # lower-case flags) where not; no volume label, no dot entries.
  fsread_ok "$img" "$off" "$size" ls /
  awk '{ $NF = ""; sub(/ $/, ""); print }' "$T/out" | LC_ALL=C sort >"$T/ls.ours"
  LC_ALL=C sort >"$T/ls.want" <<'EOF'
d EFI
d a
d many
f A long File Name with spaces.txt
f Grüße ünïcødé €.txt
f MixedCase.Txt
f UPPER.TXT
f big
f empty
f fill2
f frag
f readme.txt
EOF
  cmp -s "$T/ls.ours" "$T/ls.want" || { diff "$T/ls.want" "$T/ls.ours" >&2; fail "$img: ls / differs"; }
  fsread_ok "$img" "$off" "$size" ls /many
  awk '{ $1 = ""; $NF = ""; sub(/^ /, ""); sub(/ $/, ""); print "::/many/" $0 }' "$T/out" |
    LC_ALL=C sort >"$T/ls.ours"
  LC_ALL=C sort "$T/many.lst" | cmp -s - "$T/ls.ours" || fail "$img: ls /many differs"
}

for v in 12:4000 16:20000 32:40000; do
  bits=${v%%:*}
  info "FAT$bits"
  build "$T/fat$bits.img" "$bits" "${v#*:}"
  mshowfat -i "$T/fat$bits.img" ::/frag >"$T/mt.out" 2>&1
  grep -q '> <' "$T/mt.out" || fail "FAT$bits: /frag is not fragmented: $(cat "$T/mt.out")"
  check "$T/fat$bits.img" 0 0 "FAT$bits"
  if command -v blkid >/dev/null; then
    want="$(blkid -o value -s LABEL "$T/fat$bits.img") $(blkid -o value -s UUID "$T/fat$bits.img")"
    fsread_ok "$T/fat$bits.img" 0 0 info
    got=$(sed 's/^vfat label=\(.*\) uuid=\([^ ]*\) .*/\1 \2/' "$T/out")
    [ "$got" = "$want" ] || fail "FAT$bits: label and uuid '$got', blkid says '$want'"
  fi
done

# --- At a partition offset inside a bigger image (mtools writes through the
# offset too), and the same image as qcow2.
info "FAT16 at 1 MiB inside a 64 MiB image"
truncate -s 64M "$T/disk.img"
dd if="$T/fat16.img" of="$T/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
check "$T/disk.img" 1048576 $((20000 * 1024)) FAT16
fsread "$T/disk.img" 0 1048576 info
[ "$RC" -eq 3 ] || fail "the zeros before the partition were taken for a filesystem (exit $RC)"
if command -v qemu-img >/dev/null; then
  info "the same through qcow2"
  qimg convert -f raw -O qcow2 "$T/disk.img" "$T/disk.qcow2"
  check "$T/disk.qcow2" 1048576 $((20000 * 1024)) FAT16
fi
mt mcopy -i "$T/disk.img@@1M" "$T/src/small" "::/Added Through The Offset.txt"
fsread_ok "$T/disk.img" 1048576 $((20000 * 1024)) cat "/added through the offset.TXT"
cmp -s "$T/out" "$T/src/small" || fail "the file added at the offset reads back different"

# --- Damaged volumes (copies of the FAT16 one; poke.py edits them).
cat >"$T/poke.py" <<'EOF'
import struct, sys
img, what = sys.argv[1], sys.argv[2]
f = open(img, "r+b")
b = f.read(512)
bps, spc, rsvd, nfats, rootents = struct.unpack_from("<HBHBH", b, 11)
fatsz = struct.unpack_from("<H", b, 22)[0] or struct.unpack_from("<I", b, 36)[0]
def set_fat(c, v):  # FAT16 entry c in every FAT copy
    for i in range(nfats):
        f.seek((rsvd + i * fatsz) * bps + 2 * c)
        f.write(struct.pack("<H", v))
if what == "bps0":
    f.seek(11); f.write(b"\0\0")
elif what == "fat":  # fat CLUSTER VALUE
    set_fat(int(sys.argv[3]), int(sys.argv[4], 0))
elif what == "fill-dir":  # fill-dir FIRST_CLUSTER: chain it through every
    # cluster after it and fill them all with entries, no end marker.
    tot = struct.unpack_from("<H", b, 19)[0] or struct.unpack_from("<I", b, 32)[0]
    data = rsvd + nfats * fatsz + (rootents * 32 + bps - 1) // bps
    n = (tot - data) // spc
    first = int(sys.argv[3])
    for c in range(first, n + 1):
        set_fat(c, c + 1)
    set_fat(n + 1, 0xFFFF)
    ent = bytearray(32)
    ent[0:11] = b"GARBAGE TXT"; ent[11] = 0x20
    cl = ent * (spc * bps // 32)
    for c in range(first, n + 2):
        f.seek((data + (c - 2) * spc) * bps); f.write(cl)
EOF
poke() { "$PYTHON" "$T/poke.py" "$@" || fail "poke.py $* failed"; }
expect_bad() { # WHAT REGEX ARGS...
  local what=$1 re=$2
  shift 2
  fsread "$T/bad.img" 0 0 "$@"
  [ "$RC" -eq 1 ] || { cat "$T/err" >&2; fail "$what: fsread exited $RC, expected 1"; }
  grep -Eq 'vfat|FAT' "$T/err" && grep -Eq -- "$re" "$T/err" || {
    cat "$T/err" >&2
    fail "$what: the error lacks /$re/"
  }
  info "$what: $(cat "$T/err")"
}
read -r first < <(mshowfat -i "$T/fat16.img" ::/big | sed -n 's/.*<\([0-9]*\)-.*/\1/p')
[ -n "$first" ] || fail "no cluster for /big"

cp "$T/fat16.img" "$T/bad.img"; poke "$T/bad.img" bps0
expect_bad "bytes per sector 0" "bytes per sector 0" ls /
cp "$T/fat16.img" "$T/bad.img"; poke "$T/bad.img" fat $((first + 1)) "$first"
expect_bad "a chain loop" "loop" cat /big
cp "$T/fat16.img" "$T/bad.img"; poke "$T/bad.img" fat $((first + 2)) 0xFFF0
expect_bad "a cluster past the end" "past the end" cat /big
cp "$T/fat16.img" "$T/bad.img"; poke "$T/bad.img" fat "$first" 0
expect_bad "a free cluster in a chain" "free" cat /big
mt mmd -i "$T/bad.img" ::/huge
read -r dc < <(mshowfat -i "$T/bad.img" ::/huge | sed -n 's/.*<\([0-9]*\).*/\1/p')
poke "$T/bad.img" fill-dir "$dc"
expect_bad "a directory with no end marker" "more than 65536 entries" ls /huge
expect_bad "a lookup in it" "more than 65536 entries" cat /huge/x
info "pass"
