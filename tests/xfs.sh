#!/bin/bash
# xfs.sh - the inspector's XFS driver against filesystems built by mkfs.xfs
# from a proto file (no mount, no root): v5 and v4, ftype on and off, 1 KiB
# blocks with 8 KiB directory blocks, a file spread over enough allocation
# groups to need an extent B+tree. Every staged file must read back
# identically (`fsread cat` | cmp), every staged directory must list exactly
# its names with their types (short-form, block, leaf and node directories),
# symlinks short (inline) and long (remote blocks) must resolve, and
# damaged superblocks must be refused with an error naming the field.
. "$(dirname "$0")/lib.sh"

require_cmd mkfs.xfs cmp
FSREAD=${TESTBIN:?TESTBIN must name the test tools directory}/fsread
[ -x "$FSREAD" ] || fail "no fsread in $TESTBIN"
setup_tmp

# mkfs.xfs refuses filesystems under 300 MB and small logs unless it runs
# under fstests; these variables are how fstests says so.
xmkfs() {
  TEST_DIR=$T TEST_DEV=$T/none QA_CHECK_FS=1 mkfs.xfs -q -f "$@" >"$T/mkfs.out" 2>&1 || {
    cat "$T/mkfs.out" >&2
    fail "mkfs.xfs $* failed"
  }
}

# fsread IMAGE ARGS... - runs the tool with a timeout; RC, $T/out, $T/err.
fsread() {
  RC=0
  timeout -k 5 "$AMIPORT_TIMEOUT" "$FSREAD" "$@" >"$T/out" 2>"$T/err" || RC=$?
  [ "$RC" -lt 124 ] || { cat "$T/err" >&2; fail "fsread $* crashed or hung (exit $RC)"; }
}

fsread_ok() {
  fsread "$@"
  [ "$RC" -eq 0 ] || { cat "$T/err" >&2; fail "fsread $* exited $RC"; }
}

# The staged tree: $T/src and its proto file $T/src.proto.
stage() {
  "$PYTHON" - "$T/src" <<'EOF'
import os, random, sys
src = sys.argv[1]
rnd = random.Random(42)
os.makedirs(src, exist_ok=True)
def put(rel, data):
    p = os.path.join(src, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
put("etc/fstab", b"UUID=1234 / xfs defaults 0 1\n")
put("boot/grub/grub.cfg", b"set timeout=5\nmenuentry 'Linux' {\n linux /vmlinuz root=/dev/sda1\n}\n")
put("empty", b"")
put("one", b"x")
put("multi", rnd.randbytes(100 * 1024 + 17))
put("large", rnd.randbytes(6 * 1024 * 1024 + 4097))
put("a/b/c/d/e/f/g/h/deep.txt", b"deep\n")
put("EFI/BOOT/BOOTX64.EFI", rnd.randbytes(70000))
# Directories of 4, 20, 500 and 20000 entries (short form, block, leaf, node).
for n in (4, 20, 500, 20000):
    d = os.path.join(src, "dir%d" % n)
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        name = "entry-%05d-%s" % (i, "x" * (i % 23))
        if i % 7 == 3:
            os.makedirs(os.path.join(d, name), exist_ok=True)
        elif i % 11 == 5:
            os.symlink("../one", os.path.join(d, name))
        else:
            open(os.path.join(d, name), "wb").close()
os.symlink("one", os.path.join(src, "shortlink"))
# Longer than any inode's literal area, and still resolving to /one.
os.symlink("./" * 450 + "one", os.path.join(src, "longlink"))
os.symlink("/a/b/c/d/e/f/g/h", os.path.join(src, "abslink"))

# The proto file (mkfs.xfs -p): mode, uid, gid, then the source or target.
def walk(path, depth, out):
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        ind = "  " * depth
        if os.path.islink(p):
            out.append("%s%s l--777 0 0 %s" % (ind, name, os.readlink(p)))
        elif os.path.isdir(p):
            out.append("%s%s d--755 0 0" % (ind, name))
            walk(p, depth + 1, out)
            out.append("%s$" % ind)
        else:
            out.append("%s%s ---644 0 0 %s" % (ind, name, p))
out = ["amiport", "0 0", "d--755 0 0"]
walk(src, 1, out)
out.append("$")
with open(src + ".proto", "w") as f:
    f.write("\n".join(out) + "\n")
EOF
  [ $? -eq 0 ] || fail "staging the tree failed"
}

# check_tree IMAGE - every staged file, directory and symlink.
check_tree() {
  local img=$1 f d
  for f in etc/fstab boot/grub/grub.cfg empty one multi large a/b/c/d/e/f/g/h/deep.txt \
           EFI/BOOT/BOOTX64.EFI; do
    fsread_ok "$img" 0 0 cat "/$f"
    cmp -s "$T/out" "$T/src/$f" || fail "$img: /$f reads back different"
  done
  # Symlinks: the short one inline, the long one in remote blocks.
  fsread_ok "$img" 0 0 cat /shortlink
  cmp -s "$T/out" "$T/src/one" || fail "$img: /shortlink does not read as /one"
  fsread_ok "$img" 0 0 cat /longlink
  cmp -s "$T/out" "$T/src/one" || fail "$img: /longlink does not read as /one"
  fsread_ok "$img" 0 0 stat /longlink
  [ "$(cat "$T/out")" = "l 903 120777" ] || fail "$img: stat /longlink says $(cat "$T/out")"
  fsread_ok "$img" 0 0 cat /abslink/deep.txt
  [ "$(cat "$T/out")" = deep ] || fail "$img: /abslink/deep.txt says $(cat "$T/out")"
  fsread_ok "$img" 0 0 cat /dir500/entry-00005-xxxxx
  cmp -s "$T/out" "$T/src/one" || fail "$img: a symlink inside /dir500 does not read as /one"
  fsread_ok "$img" 0 0 stat /dir20000/entry-19999-xxxxxxxxxxxx
  [ "$(cat "$T/out")" = "f 0 100644" ] || fail "$img: stat of the last entry of /dir20000 says $(cat "$T/out")"
  fsread "$img" 0 0 cat /dir20000/entry-20000
  [ "$RC" -eq 3 ] || fail "$img: a name not in /dir20000 gave exit $RC, expected 3 (not found)"
  fsread "$img" 0 0 cat /Etc/fstab
  [ "$RC" -eq 3 ] || fail "$img: XFS names are case-sensitive, /Etc/fstab gave exit $RC"
  # Listings: names and types, as the staged directories.
  for d in / dir4 dir20 dir500 dir20000 a/b/c/d/e/f/g/h; do
    fsread_ok "$img" 0 0 ls "/$d"
    awk '{ print $1, $2 }' "$T/out" | LC_ALL=C sort >"$T/ls.ours"
    (cd "$T/src/$d" && for n in * .[!.]*; do
       [ -e "$n" ] || [ -L "$n" ] || continue
       if [ -L "$n" ]; then echo "l $n"; elif [ -d "$n" ]; then echo "d $n"; else echo "f $n"; fi
     done) | LC_ALL=C sort >"$T/ls.want"
    cmp -s "$T/ls.ours" "$T/ls.want" || {
      diff "$T/ls.want" "$T/ls.ours" | head -20 >&2
      fail "$img: ls /$d differs from the staged directory"
    }
  done
}

# fork_format IMAGE PATH - the data fork format of an inode (local,
# extents, btree), by xfs_db.
fork_format() {
  xfs_db -r -c "path $2" -c "print core.format" "$1" 2>/dev/null | sed -n 's/.*(\(.*\)).*/\1/p'
}

# xdb IMAGE CMD... - xfs_db in expert mode, one -c per CMD; output in $T/xdb.out.
xdb() {
  local img=$1 c args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  xfs_db -x "${args[@]}" "$img" >"$T/xdb.out" 2>&1 || {
    cat "$T/xdb.out" >&2
    fail "xfs_db $img $* failed"
  }
}

# check_map IMAGE PATH NEXTENTS - fsread's content of PATH must be what
# xfs_db's own reading of its map (`bmap`) and the image's bytes give:
# mapped blocks as on disk, holes and unwritten extents as zeros.
check_map() {
  local img=$1 path=$2
  xfs_db -r -c "path $path" -c "print core.size" -c "bmap" "$img" >"$T/xdb.out" 2>&1
  [ "$(grep -c '^data offset' "$T/xdb.out")" -eq "$3" ] || {
    cat "$T/xdb.out" >&2
    fail "$img: xfs_db does not see $3 extents in $path"
  }
  "$PYTHON" "$T/want.py" "$img" "$T/xdb.out" "$T/want" || fail "building the expected content failed"
  fsread_ok "$img" 0 0 cat "$path"
  cmp -s "$T/out" "$T/want" || fail "$img: $path does not read as xfs_db maps it"
}

cat >"$T/want.py" <<'EOF'
import re, subprocess, sys
img, bmap, want = sys.argv[1:4]
sb = subprocess.run(["xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize agblocks", img],
                    capture_output=True, text=True).stdout
kv = dict(l.split(" = ") for l in sb.splitlines() if " = " in l)
bs, agblocks = int(kv["blocksize"]), int(kv["agblocks"])
text = open(bmap).read()
size = int(re.search(r"core.size = (\d+)", text).group(1))
out = bytearray(size)
with open(img, "rb") as f:
    for m in re.finditer(r"data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+) flag (\d)", text):
        off, ag, agbno, cnt, flag = map(int, m.groups())
        if flag or off * bs >= size:
            continue
        f.seek((ag * agblocks + agbno) * bs)
        data = f.read(cnt * bs)[: size - off * bs]
        out[off * bs : off * bs + len(data)] = data
open(want, "wb").write(out)
EOF

# The leaf block of an extent B+tree (python3 LEAF.py IMG LEAF INO v4|v5 S C).
cat >"$T/leaf.py" <<'EOF'
import struct, subprocess, sys
img, leaf, ino, ver, s, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
sb = subprocess.run(["xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize agblocks agblklog uuid", img],
                    capture_output=True, text=True).stdout
kv = dict(l.split(" = ") for l in sb.splitlines() if " = " in l)
bs, agblocks, agblklog = int(kv["blocksize"]), int(kv["agblocks"]), int(kv["agblklog"])
def rec(off, fsb, cnt, flag=0):
    return struct.pack(">QQ", flag << 63 | off << 9 | fsb >> 43, (fsb & ((1 << 43) - 1)) << 21 | cnt)
# Three extents, holes between them, the middle one unwritten.
recs = rec(0, s, 10) + rec(20, s + 20, 10, 1) + rec(40, s + 40, c - 41)
lin = (leaf >> agblklog) * agblocks + (leaf & ((1 << agblklog) - 1))
if ver == "v5":
    u = bytes.fromhex(kv["uuid"].replace("-", ""))
    hdr = struct.pack(">IHHqqQQ16sQII", 0x424d4133, 0, 3, -1, -1, lin * (bs // 512), 0, u, ino, 0, 0)
else:
    hdr = struct.pack(">IHHqq", 0x424d4150, 0, 3, -1, -1)
with open(img, "r+b") as f:
    f.seek(lin * bs)
    f.write((hdr + recs).ljust(bs, b"\0"))
EOF

# remap IMAGE PATH v4|v5 - rewrites the data fork of PATH (one extent of at
# least 64 blocks) into three extents with holes between them, the middle
# one unwritten: first in extents form (xfs_db writes, which keep the CRCs
# right), then in B+tree form (a root in the inode pointing at a leaf block,
# the file's last one, written by leaf.py; xfs_db reads it despite its CRC).
remap() {
  local img=$1 path=$2 ver=$3 ino s c u=u3
  [ "$ver" = v5 ] || u=u
  xdb "$img" "path $path" "inode"
  ino=$(sed -n 's/^current inode number is \([0-9]*\).*/\1/p' "$T/xdb.out")
  xdb "$img" "path $path" "bmap"
  read -r s c < <(sed -n 's/^data offset 0 startblock \([0-9]*\) ([0-9/]*) count \([0-9]*\) flag 0$/\1 \2/p' "$T/xdb.out")
  [ -n "$ino" ] && [ -n "$s" ] && [ "${c:-0}" -ge 64 ] || fail "$img: cannot map $path: $(cat "$T/xdb.out")"
  xdb "$img" "inode $ino" "write core.nextents 3" "write $u.bmx[0].blockcount 10" \
    "write $u.bmx[1].startoff 20" "write $u.bmx[1].startblock $((s + 20))" \
    "write $u.bmx[1].blockcount 10" "write $u.bmx[1].extentflag 1" \
    "write $u.bmx[2].startoff 40" "write $u.bmx[2].startblock $((s + 40))" \
    "write $u.bmx[2].blockcount $((c - 41))" "write $u.bmx[2].extentflag 0"
  check_map "$img" "$path" 3
  xdb "$img" "inode $ino" "write core.format 3" "write $u.bmbt.level 1" \
    "write $u.bmbt.numrecs 1" "write $u.bmbt.keys[1].startoff 0" \
    "write $u.bmbt.ptrs[1] $((s + c - 1))"
  "$PYTHON" "$T/leaf.py" "$img" "$((s + c - 1))" "$ino" "$ver" "$s" "$c" ||
    fail "writing the B+tree leaf failed"
  [ "$(fork_format "$img" "$path")" = btree ] || fail "$img: $path did not become a B+tree"
  check_map "$img" "$path" 3
}

# --- v5, ftype=1, 4 KiB blocks: the default.
stage
info "v5 (crc=1, ftype=1)"
truncate -s 320M "$T/v5.img"
xmkfs -L amiport-v5 -m uuid=0b7e2a9c-1234-4abc-8def-0123456789ab -p "$T/src.proto" "$T/v5.img"
fsread_ok "$T/v5.img" 0 0 info
[ "$(cat "$T/out")" = "xfs label=amiport-v5 uuid=0b7e2a9c-1234-4abc-8def-0123456789ab version=xfs v5" ] ||
  fail "info says $(cat "$T/out")"
check_tree "$T/v5.img"
if command -v xfs_db >/dev/null; then
  # The directories really are in the forms this test means to cover.
  for d in dir4:local dir20:extents dir500:extents; do
    got=$(fork_format "$T/v5.img" "/${d%%:*}")
    [ "$got" = "${d#*:}" ] || fail "/${d%%:*} has a '$got' data fork, the test means ${d#*:}"
  done
  info "v5: extents with holes and an unwritten extent, then an extent B+tree"
  cp --sparse=always "$T/v5.img" "$T/v5r.img"
  remap "$T/v5r.img" /large v5
  rm -f "$T/v5r.img"
fi

# --- v5 with 1 KiB blocks and 8 KiB directory blocks (a directory block
# spans several filesystem blocks, possibly several extents).
info "v5, 1 KiB blocks, 8 KiB directory blocks"
truncate -s 320M "$T/v5k.img"
xmkfs -b size=1024 -n size=8192 -p "$T/src.proto" "$T/v5k.img"
check_tree "$T/v5k.img"
rm -f "$T/v5k.img"

# --- v4, ftype=1 and ftype=0 (readdir asks the inodes for the types),
# 256-byte inodes.
for ft in 1 0; do
  info "v4 (crc=0, ftype=$ft)"
  truncate -s 320M "$T/v4.img"
  xmkfs -m crc=0 -n ftype=$ft -i size=256 -L v4 -p "$T/src.proto" "$T/v4.img"
  fsread_ok "$T/v4.img" 0 0 info
  case "$(cat "$T/out")" in
    "xfs label=v4 uuid="*" version=xfs v4") ;;
    *) fail "v4 info says $(cat "$T/out")" ;;
  esac
  check_tree "$T/v4.img"
  if command -v xfs_db >/dev/null && [ "$ft" = 1 ]; then
    info "v4: extents with holes and an unwritten extent, then an extent B+tree"
    remap "$T/v4.img" /large v4
  fi
done
rm -f "$T/v4.img"

# --- Damaged superblocks: refused, with the field named.
corrupt() { # OFFSET HEXBYTES
  cp --sparse=always "$T/v5.img" "$T/bad.img"
  printf "$2" | dd of="$T/bad.img" bs=1 seek="$1" conv=notrunc status=none
}
expect_bad() { # WHAT REGEX
  fsread "$T/bad.img" 0 0 ls /
  [ "$RC" -eq 1 ] || fail "$1: fsread exited $RC, expected 1"
  grep -Eq "xfs" "$T/err" && grep -Eq "$2" "$T/err" || {
    cat "$T/err" >&2
    fail "$1: the error does not name /$2/"
  }
}
corrupt 4 '\x00\x00\x0b\xb8'        # sb_blocksize 3000
expect_bad "block size 3000" "sb_blocksize 3000"
corrupt 88 '\x00\x00\x00\x00'       # sb_agcount 0
expect_bad "agcount 0" "sb_agcount 0"
corrupt 56 '\x00\x00\x00\x00\xff\xff\xff\xff' # sb_rootino far outside
expect_bad "root inode out of range" "inode number 4294967295"
corrupt 104 '\x00\x40'              # sb_inodesize 64
expect_bad "inode size 64" "sb_inodesize 64"
info "pass"
