#!/bin/bash
# qcow2_corrupt.sh - broken and refused qcow2 images fail cleanly, with an
# error that names the file and the field.
#
# Each case patches a valid small image made by qemu-img (header fields with
# python3 struct, an L2 entry of a compressed cluster, the cluster's bytes) or
# makes an image amiport refuses (backing file, backing loop, encryption,
# external data file). For each:
#   - `amiport convert -O raw BAD OUT` exits 1, stderr has "amiport: ", the
#     file's name and the case's expected words; OUT's directory stays empty
#     (no output, no temporary file);
#   - `amiport info BAD` and `amiport map BAD` exit 1 (or, where the damage is
#     only visible when the data is read, 0 or 1), and never crash (a signal)
#     or hang.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io
setup_tmp

# ---------------------------------------------------------------------------
# The table: case @ words convert's stderr must hold (each an extended regex,
# case-insensitive; '|' between alternatives, ';' between words that must all
# appear) @ exit statuses allowed for info @ for map. Adjust the words here
# when the wording changes. 0|1 is allowed only where the damage cannot be
# seen without reading (and inflating) guest data, or where info merely
# reports a backing file name.
CASES=(
  "trunc-100        @ truncat|end of file|ends before|short   @ 1   @ 1"
  "trunc-mid        @ truncat|end of file|ends before|short   @ 0|1 @ 0|1"
  "l1-offset-past   @ l1_table_offset                         @ 1   @ 1"
  "l1-size-huge     @ l1_size                                 @ 1   @ 1"
  "cluster-bits-8   @ cluster_bits                            @ 1   @ 1"
  "cluster-bits-22  @ cluster_bits                            @ 1   @ 1"
  "cluster-bits-63  @ cluster_bits                            @ 1   @ 1"
  "refcount-order-7 @ refcount_order                          @ 1   @ 1"
  "comp-outside     @ compressed                              @ 0|1 @ 0|1"
  "comp-garbage     @ compressed                              @ 0|1 @ 0|1"
  "backing-passwd   @ backing;--allow-backing                 @ 0|1 @ 1"
  "backing-loop     @ backing;--allow-backing                 @ 0|1 @ 1"
  "encrypted        @ encrypt                                 @ 1   @ 1"
  "data-file        @ data file|data_file|data-file           @ 1   @ 1"
)
# With --allow-backing, a backing loop must be reported as one.
LOOP_WORDS="loop"
# ---------------------------------------------------------------------------

trim() { local v=$1; v=${v#"${v%%[![:space:]]*}"}; v=${v%"${v##*[![:space:]]}"}; printf '%s' "$v"; }

# a valid base image: 64k clusters, 4 MiB, data in the first 1.5 MiB
qimg create -f qcow2 "$T/base.qcow2" 4M
qio "$T/base.qcow2" "write -P 0xab 0 1572864" "write -P 0xcd 3000000 70000"

# patch FILE OFFSET FMT VALUE - struct.pack_into, big-endian
patch() {
  "$PYTHON" - "$@" <<'EOF' || fail "patch $*"
import struct, sys
path, off, fmt, val = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(struct.pack(">" + fmt, val))
EOF
}

# compressed_entry FILE - prints "L2_ENTRY_FILE_OFFSET HOST_OFFSET NBYTES
# OFFSET_BITS" of the first compressed cluster in a qcow2 image.
compressed_entry() {
  "$PYTHON" - "$1" <<'EOF'
import struct, sys
f = open(sys.argv[1], "rb")
h = f.read(112)
cluster_bits = struct.unpack_from(">I", h, 20)[0]
l1_size = struct.unpack_from(">I", h, 36)[0]
l1_off = struct.unpack_from(">Q", h, 40)[0]
cs = 1 << cluster_bits
xbits = 62 - (cluster_bits - 8)
f.seek(l1_off)
l1 = struct.unpack(">%dQ" % l1_size, f.read(8 * l1_size))
for e in l1:
    l2_off = e & 0x00fffffffffffe00
    if not l2_off:
        continue
    f.seek(l2_off)
    raw = f.read(cs)
    for i in range(cs // 8):
        v = struct.unpack_from(">Q", raw, 8 * i)[0]
        if v & (1 << 62):
            host = v & ((1 << xbits) - 1)
            nsect = (v >> xbits) & ((1 << (62 - xbits)) - 1)
            nbytes = (nsect + 1) * 512 - (host & 511)
            print(l2_off + 8 * i, host, nbytes, xbits)
            sys.exit(0)
sys.exit(1)
EOF
}

make_case() { # make_case NAME -> $T/NAME.qcow2 (and friends)
  local n=$1 bad=$T/$1.qcow2 sz
  case $n in
    trunc-100)
      head -c 100 "$T/base.qcow2" >"$bad" ;;
    trunc-mid)
      # metadata intact, the last data cluster cut in half
      sz=$(stat -c %s "$T/base.qcow2")
      head -c $((sz - 32768)) "$T/base.qcow2" >"$bad" ;;
    l1-offset-past)
      cp "$T/base.qcow2" "$bad"
      patch "$bad" 40 Q $((1 << 40)) ;;
    l1-size-huge)
      cp "$T/base.qcow2" "$bad"
      patch "$bad" 36 I 0xffffffff ;;
    cluster-bits-8 | cluster-bits-22 | cluster-bits-63)
      cp "$T/base.qcow2" "$bad"
      patch "$bad" 20 I "${n#cluster-bits-}" ;;
    refcount-order-7)
      cp "$T/base.qcow2" "$bad"
      patch "$bad" 96 I 7 ;;
    comp-outside | comp-garbage)
      head -c 1048576 /dev/zero | tr '\0' 'z' >"$T/comp.raw"
      qimg convert -f raw -c -O qcow2 "$T/comp.raw" "$bad"
      local ent
      ent=$(compressed_entry "$bad") || fail "no compressed cluster in a -c image"
      set -- $ent
      local l2pos=$1 host=$2 nbytes=$3 xbits=$4
      if [ $n = comp-outside ]; then
        # keep the flag and the sector count, point the offset near the end of the field
        "$PYTHON" - "$bad" "$l2pos" "$xbits" <<'EOF' || fail "patching the L2 entry"
import struct, sys
path, pos, xbits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(pos)
    v = struct.unpack(">Q", f.read(8))[0]
    v = (v & ~((1 << xbits) - 1)) | ((1 << (xbits - 1)) + 4096)
    f.seek(pos)
    f.write(struct.pack(">Q", v))
EOF
      else
        # the compressed bytes become garbage that does not inflate
        "$PYTHON" - "$bad" "$host" "$nbytes" <<'EOF' || fail "overwriting the compressed data"
import sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes([0xff, 0xfe, 0x07, 0x13]) * (n // 4 + 1))
EOF
        # make sure it really does not inflate for qemu either
        if qemu-img convert -O raw "$bad" "$T/garbage.check.raw" >/dev/null 2>&1; then
          fail "comp-garbage: qemu-img still reads the damaged compressed cluster"
        fi
        rm -f "$T/garbage.check.raw"
      fi ;;
    backing-passwd)
      qimg create -f qcow2 -b /etc/passwd -F raw "$bad" 1M ;;
    backing-loop)
      mkdir -p "$T/loop"
      (cd "$T/loop" && qemu-img create -q -f qcow2 a.qcow2 1M &&
        qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 &&
        qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2) >"$T/qemu.out" 2>&1 || {
        cat "$T/qemu.out" >&2
        fail "making the backing loop"
      }
      cp "$T/loop/a.qcow2" "$T/loop/a.keep"
      # the image under test is loop/a.qcow2 (its backing name is relative)
      BAD_PATH[$n]=$T/loop/a.qcow2 ;;
    encrypted)
      qemu-img create -q -f qcow2 --object secret,id=sec0,data=abc \
        -o encrypt.format=luks,encrypt.key-secret=sec0 "$bad" 1M >"$T/qemu.out" 2>&1 ||
        return 1 ;;
    data-file)
      qimg create -f qcow2 -o data_file="$T/data-file.raw" "$bad" 1M
      qemu-io -f qcow2 -c "write -P 0x42 0 65536" "$bad" >/dev/null 2>&1 ;;
  esac
  return 0
}

declare -A BAD_PATH
# Each case runs in a subshell so that one failure does not hide the others.
FAILED=()
for line in "${CASES[@]}"; do
  IFS='@' read -r name words info_rc map_rc <<<"$line"
  name=$(trim "$name") words=$(trim "$words") info_rc=$(trim "$info_rc") map_rc=$(trim "$map_rc")
  rc=0
  (
    if ! make_case "$name"; then
      info "$name: qemu-img cannot make this image here; case skipped: $(head -1 "$T/qemu.out")"
      exit 0
    fi
    bad=${BAD_PATH[$name]:-$T/$name.qcow2}
    base=$(basename "$bad")
    out=$T/out-$name
    mkdir "$out"

    expect_rc 1 convert -O raw "$bad" "$out/out.raw"
    stderr_is_error
    grep -qF -- "$base" "$T/stderr" || {
      cat "$T/stderr" >&2
      fail "$name: convert's error does not name the file $base"
    }
    IFS=';' read -r -a wl <<<"$words"
    for w in "${wl[@]}"; do
      grep -Eiq -- "$w" "$T/stderr" || {
        cat "$T/stderr" >&2
        fail "$name: convert's error lacks /$w/"
      }
    done
    dir_empty "$out"
    # the same with -O qcow2, which has its own temp-file path
    expect_rc 1 convert -O qcow2 "$bad" "$out/out.qcow2"
    dir_empty "$out"

    expect_rc "$info_rc" info "$bad"
    [ "$RC" = 0 ] || stderr_is_error
    expect_rc "$info_rc" info --output=json "$bad"
    expect_rc "$map_rc" map --output=json "$bad"
    [ "$RC" = 0 ] || stderr_is_error
    rmdir "$out"
    info "$name: ok"
  ) || rc=$?
  [ "$rc" = 0 ] || FAILED+=("$name")
done
# --- what --allow-backing makes of the backing cases ---------------------
# /etc/passwd as a raw backing file: its bytes, then zeros to 1 MiB
amiport_ok convert --allow-backing -O raw "$T/backing-passwd.qcow2" "$T/passwd.out"
qimg convert -O raw "$T/backing-passwd.qcow2" "$T/passwd.qemu"
cmp "$T/passwd.qemu" "$T/passwd.out" || fail "--allow-backing: the output is not /etc/passwd's bytes"
n=$(stat -c %s /etc/passwd)
cmp -n "$n" /etc/passwd "$T/passwd.out" || fail "--allow-backing: the output does not start with /etc/passwd"
amiport_ok info --allow-backing --output=json "$T/backing-passwd.qcow2"
cp "$T/stdout" "$T/bp.json"
# top level like qemu-img info, or inside format-specific
bf=$(json_get "$T/bp.json" backing-filename)
[ -n "$bf" ] || bf=$(format_specific "$T/bp.json" backing-filename)
[ "$bf" = /etc/passwd ] ||
  fail "info does not report backing-filename /etc/passwd: $(cat "$T/bp.json")"
amiport_ok map --allow-backing --output=json "$T/backing-passwd.qcow2"
cp "$T/stdout" "$T/bp.map.json"
qemu-img map --output=json "$T/backing-passwd.qcow2" >"$T/bp.qmap.json"
map_equal "$T/bp.map.json" "$T/bp.qmap.json" || fail "--allow-backing map disagrees with qemu-img"

# the loop: reported as a loop, whatever the working directory
mkdir "$T/loopout"
for cwd in "$T/loop" /; do
  cd "$cwd" || fail "cd $cwd"
  for cmd in convert info map; do
    args=()
    [ $cmd != convert ] || args=(-O raw)
    extra=()
    [ $cmd != convert ] || extra=("$T/loopout/out.raw")
    expect_rc 1 $cmd --allow-backing "${args[@]}" "$T/loop/a.qcow2" "${extra[@]}"
    stderr_is_error
    stderr_has "$LOOP_WORDS"
  done
done
cd "$T" || fail "cd $T"
dir_empty "$T/loopout"
cmp -s "$T/loop/a.qcow2" "$T/loop/a.keep" || fail "reading the loop changed a.qcow2"

[ ${#FAILED[@]} = 0 ] || fail "failed cases: ${FAILED[*]}"
exit 0
