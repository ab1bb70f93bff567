#!/bin/bash
# ext4.sh - the inspector's ext2/3/4 driver reads what mkfs.ext4 -d wrote.
#
# One staging tree (nested and deep directories, files of 0, 1, 4095, 4096,
# 4097 bytes and 1 MiB+1, small files that fit inline, sparse files up to
# 70 MiB, a directory of 5000 files made hashed by e2fsck -D, fast and slow,
# relative and absolute symlinks, a symlink loop, names with spaces and
# UTF-8) is put into a matrix of filesystems: ext2, ext3, ext4 with 1 KiB and
# 4 KiB blocks, block maps (^extent), inline_data, 64bit, no journal, 128-byte
# inodes, many inodes, meta_bg with many groups, bigalloc. For each one,
# through $TESTBIN/fsread:
#   - `cat` of every file equals the staging file (cmp), symlinks followed;
#   - `ls` of every directory lists exactly the staging names (plus lost+found
#     at the root), with the right types;
#   - `stat` of each symlink gives its target's length;
#   - `info` gives the label, the UUID and ext2/ext3/ext4 as blkid names it;
#   - the symlink loop fails cleanly (exit 1, "symbolic links").
# Also: a filesystem at a non-zero offset of a larger image, the same through
# a qcow2 container, resolving /etc/os-release on an 8 GiB filesystem reads
# well under 1 MiB (strace), and corrupt images (inode count, descriptor,
# extent depth, extent past the end, rec_len 0, block size) fail with exit 1
# and an error naming ext4 and the field, never a crash or a hang.
. "$(dirname "$0")/lib.sh"
require_cmd mkfs.ext4 debugfs e2fsck cmp truncate
: "${TESTBIN:?TESTBIN must name the directory of the test tools}"
FSREAD=$TESTBIN/fsread
[ -x "$FSREAD" ] || fail "$FSREAD is not built"
setup_tmp

LABEL=amiport-ext4
UUID=3f1c2a7e-5b4d-4e6f-8a9b-0c1d2e3f4a5b

# fsr IMG OFF SIZE CMD [PATH] - runs fsread; sets RC, output in $T/stdout, $T/stderr.
fsr() {
  RC=0
  timeout -k 5 "$AMIPORT_TIMEOUT" "$FSREAD" "$@" >"$T/stdout" 2>"$T/stderr" || RC=$?
  if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
    fail "fsread $* hung"
  fi
  if [ "$RC" -ge 128 ] || grep -Eq 'Sanitizer|runtime error' "$T/stderr"; then
    cat "$T/stderr" >&2
    fail "fsread $* crashed (exit $RC)"
  fi
  return 0
}

fsr_ok() {
  fsr "$@"
  [ "$RC" -eq 0 ] || { cat "$T/stderr" >&2; fail "fsread $* exited $RC, expected 0"; }
}

# fsr_err PATTERN... -- ARGS: expects exit 1 and each pattern on stderr.
fsr_err() {
  local pats=()
  while [ "$1" != "--" ]; do pats+=("$1"); shift; done
  shift
  fsr "$@"
  [ "$RC" -eq 1 ] || { cat "$T/stderr" >&2; fail "fsread $* exited $RC, expected 1"; }
  stderr_has ext4 "${pats[@]}"
}

# ---- the staging tree ----
S=$T/staging
mkdir -p "$S"/{etc,boot/grub,usr/lib,sizes,links,tiny,"with space",deep/a/b/c/d/e/f/g/h,many,empty}
cat >"$S/usr/lib/os-release" <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
EOF
ln -s ../usr/lib/os-release "$S/etc/os-release"
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$UUID" >"$S/etc/fstab"
echo testhost >"$S/etc/hostname"
"$PYTHON" - "$S" <<'EOF'
import os, random, sys
s = sys.argv[1]
r = random.Random(42)
def put(p, n):
    with open(os.path.join(s, p), "wb") as f:
        f.write(bytes(r.getrandbits(8) for _ in range(n)) if n < 65536 else os.urandom(n))
for n in (0, 1, 30, 59, 60, 61, 100, 150, 200, 4095, 4096, 4097, 65536, 1048577):
    put("sizes/f%d" % n, n)
put("boot/vmlinuz-6.1.0-amd64", 300000)
put("boot/grub/grub.cfg", 700)
put("deep/a/b/c/d/e/f/g/h/leaf", 123)
put("with space/ünïcode näme", 77)
put("tiny/a", 5)
# sparse: holes at the start, middle and end
def sparse(p, size, marks):
    with open(os.path.join(s, p), "wb") as f:
        f.truncate(size)
        for off in marks:
            f.seek(off)
            f.write(b"amiport%d" % off)
sparse("sizes/sparse5m", 5 << 20, [(5 << 20) - 16])
sparse("sizes/sparse70m", 70 << 20, [4096, 1 << 20, 30 << 20, (70 << 20) - 16])
for i in range(600):
    open(os.path.join(s, "many", "entry-%05d" % i), "w").close()
EOF
mkdir "$S/tiny/sub"
ln -s ../etc/hostname "$S/links/rel"
ln -s /etc/hostname "$S/links/abs"
ln -s /deep/a/b/c/d/e/f/g/h/../../../../../../../../../etc/../deep/a/b/c/d/e/f/g/h/leaf "$S/links/slow"
ln -s /boot "$S/links/bootdir"
ln -s loop2 "$S/links/loop1"
ln -s loop1 "$S/links/loop2"
ln -s /nonexistent "$S/links/dangling"
SLOW_LEN=$(readlink "$S/links/slow" | tr -d '\n' | wc -c)
[ "$SLOW_LEN" -gt 60 ] || fail "test setup: slow symlink target is only $SLOW_LEN bytes"

# Regular files to cat (relative paths), directories to ls, symlinks to follow.
# (each fsread run is a process: a full check is ~70 of them, so the full
# lists are used on the filesystems that differ most, and the lists below,
# one or two entries per kind of object, on the others)
ALL_FILES=$(cd "$S" && find . -type f ! -path './many/*' | sed 's|^\./||' | sort)
ALL_DIRS=$(cd "$S" && find . -type d | sed 's|^\./\?||' | sort)
SOME_FILES="etc/hostname
sizes/f0
sizes/f1
sizes/f61
sizes/f150
sizes/f4095
sizes/f4097
sizes/f1048577
sizes/sparse5m
sizes/sparse70m
with space/ünïcode näme
deep/a/b/c/d/e/f/g/h/leaf"
SOME_DIRS="
many
tiny
with space
deep/a/b/c/d/e/f/g/h"

# check_fs NAME IMG OFF SIZE VERSION [full] - everything above on one
# filesystem (every file and directory with "full", else some of each kind).
check_fs() {
  local name=$1 img=$2 off=$3 size=$4 ver=$5 f d want got
  local FILES=$SOME_FILES DIRS=$SOME_DIRS
  if [ "${6:-}" = full ]; then FILES=$ALL_FILES DIRS=$ALL_DIRS; fi

  fsr_ok "$img" "$off" "$size" info
  grep -qx "ext4 label=$LABEL uuid=$UUID version=$ver" "$T/stdout" ||
    fail "$name: info says '$(cat "$T/stdout")', expected label=$LABEL uuid=$UUID version=$ver"

  while IFS= read -r f; do
    fsr_ok "$img" "$off" "$size" cat "/$f"
    cmp -s "$T/stdout" "$S/$f" || fail "$name: cat /$f differs from the staging file"
  done <<<"$FILES"
  # through symlinks: relative, absolute, slow, into a directory symlink, a chain
  # (absolute targets are within the filesystem, so the expected file is named)
  for f in etc/os-release=usr/lib/os-release links/rel=etc/hostname links/abs=etc/hostname \
           links/slow=deep/a/b/c/d/e/f/g/h/leaf links/bootdir/grub/grub.cfg=boot/grub/grub.cfg \
           links/bootdir/../etc/hostname=etc/hostname; do
    fsr_ok "$img" "$off" "$size" cat "/${f%%=*}"
    cmp -s "$T/stdout" "$S/${f#*=}" || fail "$name: cat /${f%%=*} (through a symlink) differs"
  done

  while IFS= read -r d; do
    fsr_ok "$img" "$off" "$size" ls "/$d"
    sed 's/^\(.\) \(.*\) [0-9]*$/\1 \2/' "$T/stdout" | LC_ALL=C sort >"$T/ls.got"
    (cd "$S/$d" && for e in * .[!.]*; do
      [ -e "$e" ] || [ -L "$e" ] || continue
      if [ -L "$e" ]; then echo "l $e"; elif [ -d "$e" ]; then echo "d $e"; else echo "f $e"; fi
    done
    [ -z "$d" ] && echo "d lost+found") | LC_ALL=C sort >"$T/ls.want"
    cmp -s "$T/ls.got" "$T/ls.want" ||
      fail "$name: ls /$d differs: $(diff "$T/ls.want" "$T/ls.got" | head -5 | tr '\n' ' ')"
  done <<<"$DIRS"

  fsr_ok "$img" "$off" "$size" stat /links/slow
  [ "$(cat "$T/stdout")" = "l $SLOW_LEN 120777" ] || fail "$name: stat /links/slow: $(cat "$T/stdout")"
  fsr_ok "$img" "$off" "$size" stat /links/rel
  [ "$(cat "$T/stdout")" = "l 15 120777" ] || fail "$name: stat /links/rel: $(cat "$T/stdout")"
  fsr_ok "$img" "$off" "$size" stat /sizes/f4097
  [ "$(cut -d' ' -f1,2 "$T/stdout")" = "f 4097" ] || fail "$name: stat /sizes/f4097: $(cat "$T/stdout")"
  fsr_ok "$img" "$off" "$size" stat /many
  [ "$(cut -c1 "$T/stdout")" = d ] || fail "$name: stat /many is not a directory"
  fsr_ok "$img" "$off" "$size" stat /sizes/sparse70m
  [ "$(cut -d' ' -f2 "$T/stdout")" = "$(stat -c %s "$S/sizes/sparse70m")" ] ||
    fail "$name: stat of the sparse file: $(cat "$T/stdout")"

  fsr "$img" "$off" "$size" cat /links/loop1
  [ "$RC" -eq 1 ] || fail "$name: cat of a symlink loop exited $RC, expected 1"
  stderr_has "symbolic links" ext4
  fsr "$img" "$off" "$size" cat /links/dangling
  [ "$RC" -eq 3 ] || fail "$name: cat of a dangling symlink exited $RC, expected 3 (not found)"
  fsr "$img" "$off" "$size" cat /etc/nothing-here
  [ "$RC" -eq 3 ] || fail "$name: cat of a missing file exited $RC, expected 3"
  fsr "$img" "$off" "$size" cat /sizes/f1/below
  [ "$RC" -eq 3 ] || fail "$name: a path through a regular file exited $RC, expected 3"
}

# mkfs_img NAME SIZE MKFS-ARGS... - builds $T/NAME.img from the staging tree and
# makes its directories hashed (e2fsck -D), as a long-lived system's would be.
mkfs_img() {
  local name=$1 size=$2
  shift 2
  rm -f "$T/$name.img"
  mkfs.ext4 -q -F -L "$LABEL" -U "$UUID" -E root_owner=0:0 "$@" -d "$S" "$T/$name.img" "$size" \
    >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out" >&2; fail "$name: mkfs.ext4 $* failed"; }
  local rc=0
  e2fsck -fyD "$T/$name.img" >"$T/fsck.out" 2>&1 || rc=$?
  [ "$rc" -le 1 ] || { cat "$T/fsck.out" >&2; fail "$name: e2fsck -fyD exited $rc"; }
}

# check_variant NAME SIZE VERSION quick|full MKFS-ARGS... - one filesystem of the matrix.
check_variant() {
  local name=$1 size=$2 ver=$3 mode=$4
  shift 4
  mkfs_img "$name" "$size" "$@"
  case $name in
    ext4-4k)
      debugfs -R 'htree /many' "$T/$name.img" 2>&1 | grep -q 'Root node dump' ||
        fail "test setup: /many is not a hashed directory in $name"
      ;;
    ext4-blockmap-1k)
      debugfs -R 'stat /sizes/sparse70m' "$T/$name.img" 2>&1 | grep -q TIND ||
        fail "test setup: the 70 MiB sparse file uses no triple indirect block in $name"
      ;;
    ext4-inline)
      debugfs -R 'stat /sizes/f100' "$T/$name.img" 2>&1 | grep -q 'Size of inline data' ||
        fail "test setup: /sizes/f100 is not inline in $name"
      debugfs -R 'stat /tiny' "$T/$name.img" 2>&1 | grep -q 'Size of inline data' ||
        fail "test setup: /tiny is not an inline directory in $name"
      ;;
  esac
  check_fs "$name" "$T/$name.img" 0 0 "$ver" "$mode"
  NFS=$((NFS + 1))
}

# The first filesystem has a directory of 5000 entries (mkfs.ext4 -d inserts
# them one at a time, slowly, so the others make do with 600: still hashed
# after e2fsck -D). It is also read at an offset and through qcow2.
NFS=0
for ((i = 600; i < 5000; i++)); do printf -v f '%s/many/entry-%05d' "$S" "$i"; : >"$f"; done
check_variant ext4-4k 64M ext4 full -t ext4 -b 4096

IMG=$T/ext4-4k.img
FSSIZE=$(stat -c %s "$IMG")
OFF=$((3 << 20))
truncate -s $((OFF + FSSIZE + (1 << 20))) "$T/outer.img"
dd if="$IMG" of="$T/outer.img" bs=1M seek=3 conv=notrunc,sparse status=none
check_fs offset "$T/outer.img" "$OFF" "$FSSIZE" ext4
fsr_ok "$T/outer.img" "$OFF" 0 cat /etc/os-release
cmp -s "$T/stdout" "$S/usr/lib/os-release" || fail "offset with SIZE 0 (to the end): os-release differs"
fsr "$T/outer.img" 0 0 info
[ "$RC" -eq 3 ] || fail "the outer image at offset 0 should hold no filesystem (exit $RC)"
rm -f "$T/outer.img"

if command -v qemu-img >/dev/null 2>&1; then
  qimg convert -f raw -O qcow2 "$IMG" "$T/fs.qcow2"
  check_fs qcow2 "$T/fs.qcow2" 0 0 ext4
  rm -f "$T/fs.qcow2"
else
  info "qemu-img missing: qcow2 container case not run"
fi
rm -f "$IMG"
"$PYTHON" -c 'import os, sys
for i in range(600, 5000): os.remove("%s/many/entry-%05d" % (sys.argv[1], i))' "$S"

while read -r name size ver mode args; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086
  check_variant "$name" "$size" "$ver" "$mode" $args
  rm -f "$T/$name.img"
done <<'EOF'
ext4-1k 64M ext4 quick -t ext4 -b 1024
ext2-4k 64M ext2 quick -t ext2 -b 4096
ext2-1k 64M ext2 full -t ext2 -b 1024 -I 128
ext3-1k 64M ext3 quick -t ext3 -b 1024
ext4-blockmap-1k 64M ext4 full -t ext4 -b 1024 -O ^extent,^64bit,^flex_bg
ext4-inline 64M ext4 full -t ext4 -b 4096 -I 256 -O inline_data
ext4-inline-1k 64M ext4 quick -t ext4 -b 1024 -I 512 -O inline_data,^has_journal
ext4-64bit-nojournal 64M ext4 quick -t ext4 -b 4096 -O 64bit,^has_journal
ext4-128 64M ext4 quick -t ext4 -b 4096 -I 128
ext4-many-inodes 64M ext4 quick -t ext4 -b 1024 -N 40000
ext4-meta-bg 64M ext4 quick -t ext4 -b 1024 -g 1024 -O meta_bg,^resize_inode,64bit
ext4-nocsum 64M ext4 quick -t ext4 -b 2048 -O ^metadata_csum,uninit_bg
ext4-bigalloc 128M ext4 quick -t ext4 -b 1024 -C 16384 -O bigalloc
ext4-64k 256M ext4 quick -t ext4 -b 65536 -N 8192
ext2-nofiletype 64M ext2 quick -t ext2 -b 1024 -O ^filetype
EOF
info "$NFS filesystems (the first also at an offset and in qcow2) read back identically"

# ---- how much is read: /etc/os-release on an 8 GiB filesystem ----
if command -v strace >/dev/null 2>&1; then
  rm -rf "$T/small" && mkdir -p "$T/small/etc" "$T/small/usr/lib"
  cp "$S/usr/lib/os-release" "$T/small/usr/lib/"
  cp -a "$S/etc/os-release" "$S/etc/fstab" "$T/small/etc/"
  for i in $(seq 1 300); do : >"$T/small/etc/conf$i"; done
  truncate -s 8G "$T/big.img"
  mkfs.ext4 -q -F -L "$LABEL" -U "$UUID" -d "$T/small" "$T/big.img" >"$T/mkfs.out" 2>&1 ||
    { cat "$T/mkfs.out" >&2; fail "mkfs.ext4 of the 8 GiB filesystem failed"; }
  # (LeakSanitizer cannot run under ptrace: leaks are checked everywhere else)
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    strace -f -qq -e trace=openat,open,pread64,read -o "$T/strace.out" "$FSREAD" "$T/big.img" 0 0 cat /etc/os-release \
    >"$T/stdout" 2>"$T/stderr" || fail "fsread under strace failed: $(cat "$T/stderr")"
  cmp -s "$T/stdout" "$S/usr/lib/os-release" || fail "8 GiB filesystem: os-release differs"
  # the bytes read from the image's descriptor (the one its open returned)
  BYTES=$("$PYTHON" - "$T/strace.out" "$T/big.img" <<'EOF'
import re, sys
fds, total = set(), 0
for line in open(sys.argv[1]):
    m = re.search(r'open(?:at)?\(.*"([^"]*)".*\) = (\d+)$', line)
    if m and m.group(1) == sys.argv[2]:
        fds.add(m.group(2))
    m = re.search(r'\bp?read(?:64)?\((\d+),.*\) = (\d+)$', line)
    if m and m.group(1) in fds:
        total += int(m.group(2))
print(total)
EOF
)
  info "resolving /etc/os-release on an 8 GiB ext4 read $BYTES bytes"
  [ "$BYTES" -gt 0 ] || fail "strace saw no reads of the image (parsing changed?)"
  [ "$BYTES" -lt $((512 << 10)) ] || fail "resolving /etc/os-release read $BYTES bytes (limit 512 KiB)"
  rm -f "$T/big.img"
else
  info "strace missing: read-volume check not run"
fi

# ---- corrupt images ----
rm -rf "$T/cs" && mkdir -p "$T/cs/etc" "$T/cs/dir"
echo "ID=corrupt" >"$T/cs/etc/os-release"
head -c 20000 /dev/urandom >"$T/cs/file"
for i in 1 2 3; do echo "$i" >"$T/cs/dir/f$i"; done
C=$T/c.img
mkc() {
  rm -f "$C"
  mkfs.ext4 -q -F -b 1024 -d "$T/cs" "$@" "$C" 2M >"$T/mkfs.out" 2>&1 ||
    { cat "$T/mkfs.out" >&2; fail "mkfs.ext4 of the corrupt base failed"; }
}
dbg() {
  debugfs -w -R "$1" "$C" >"$T/dbg.out" 2>&1 || { cat "$T/dbg.out" >&2; fail "debugfs $1 failed"; }
  # debugfs exits 0 whatever its command said
  ! grep -Ev '^(debugfs [0-9]|Filesystem features:)' "$T/dbg.out" | grep -q . || { cat "$T/dbg.out" >&2; fail "debugfs $1 failed"; }
}
# patch FILE OFFSET BYTES-AS-PYTHON-LITERAL
patch_bytes() {
  "$PYTHON" - "$@" <<'EOF'
import sys
path, off, data = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off)
    f.write(data)
EOF
}

mkc
fsr_ok "$C" 0 0 cat /file
cmp -s "$T/stdout" "$T/cs/file" || fail "corrupt base: /file differs before corruption"

# (not corrupt) a fragmented file, whose extent tree has an index level, and
# unwritten extents over blocks that still hold old data: they read as zeros
for b in 1 3 5 7 9 11; do dbg "punch /file $b $b"; done
dbg 'fallocate /dir/f1 0 9'
dbg 'sif /dir/f1 size 10240'
debugfs -R 'ex /file' "$C" 2>/dev/null | grep -q '^ 1/ 1' || fail "test setup: /file has no index level"
debugfs -R 'ex /dir/f1' "$C" 2>/dev/null | grep -q 'Uninit' || fail "test setup: /dir/f1 has no unwritten extent"
"$PYTHON" - "$T/cs/file" "$T/frag.want" "$T/cs/dir/f1" "$T/unwritten.want" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
for b in (1, 3, 5, 7, 9, 11):
    d[b * 1024:(b + 1) * 1024] = bytes(1024)
open(sys.argv[2], "wb").write(d)
u = open(sys.argv[3], "rb").read()
open(sys.argv[4], "wb").write(u + bytes(10240 - len(u)))
EOF
fsr_ok "$C" 0 0 cat /file
cmp -s "$T/stdout" "$T/frag.want" || fail "a file with a two-level extent tree and holes reads wrong"
fsr_ok "$C" 0 0 cat /dir/f1
cmp -s "$T/stdout" "$T/unwritten.want" || fail "unwritten extents do not read as zeros"

mkc; dbg 'ssv inodes_count 12345'
fsr_err 's_inodes_count' -- "$C" 0 0 info

mkc; dbg 'set_bg 0 inode_table 0x7ffffff0'
fsr_err 'group 0' 'inode_table|inode table' 'past the end' -- "$C" 0 0 ls /

mkc; dbg 'ssv blocks_count 999999'
fsr_err 's_blocks_count' -- "$C" 0 0 info

mkc
fsr_err 's_blocks_count' -- "$C" 0 1048576 info

mkc; dbg 'ssv log_block_size 9'
fsr_err 's_log_block_size' -- "$C" 0 0 info

mkc -O 64bit; dbg 'ssv desc_size 48'
fsr_err 's_desc_size' -- "$C" 0 0 info

# extent header depth 100 (i_block word 1 holds eh_max and eh_depth)
mkc; dbg 'sif /file block[1] 0x00640004'
fsr_err 'eh_depth 100' 'inode 1[0-9]' -- "$C" 0 0 cat /file

# extent header magic
mkc; dbg 'sif /file block[0] 0x0001beef'
fsr_err 'magic' -- "$C" 0 0 cat /file

# eh_entries larger than eh_max
mkc; dbg 'sif /file block[0] 0x0009f30a'
fsr_err 'eh_entries' -- "$C" 0 0 cat /file

# an extent pointing past the end (word 5 is ee_start_lo of the first extent)
mkc; dbg 'sif /file block[5] 0x7fffff00'
fsr_err 'extent' 'past the end' -- "$C" 0 0 cat /file

# an indirect block past the end (block map)
mkc -O ^extent,^64bit; dbg 'sif /file block[IND] 0x7fffff00'
fsr_err 'indirect' 'past the end' -- "$C" 0 0 cat /file

# a directory entry with rec_len 0 (first entry of /dir's first block)
mkc
DBLK=$(debugfs -R 'bmap /dir 0' "$C" 2>/dev/null)
[ -n "$DBLK" ] && [ "$DBLK" -gt 0 ] || fail "test setup: no block for /dir"
patch_bytes "$C" $((DBLK * 1024 + 4)) 'b"\0\0"'
fsr_err 'rec_len 0' 'inode 1[0-9]' -- "$C" 0 0 ls /dir
fsr_err 'rec_len 0' -- "$C" 0 0 cat /dir/f2

# rec_len running past the block
mkc
patch_bytes "$C" $((DBLK * 1024 + 4)) 'b"\x00\x08"'
fsr_err 'rec_len 2048' -- "$C" 0 0 ls /dir

# an entry naming an inode past s_inodes_count
mkc
patch_bytes "$C" $((DBLK * 1024 + 24)) 'b"\xff\xff\xff\x7f"'
fsr_err 's_inodes_count' -- "$C" 0 0 ls /dir

# a directory entry naming a free inode
mkc; dbg 'clri /dir/f1'
fsr_err 'not in use' -- "$C" 0 0 cat /dir/f1

# the root is not a directory
mkc; dbg 'sif <2> mode 0100644'
fsr_err 'root is not a directory' -- "$C" 0 0 info

# a fast symlink that claims to be longer than i_block
mkc; dbg 'symlink /sl /etc/os-release'; dbg 'sif /sl size 200'
fsr_err 'symlink' -- "$C" 0 0 cat /sl

# incompatible features we cannot read
mkc; dbg 'ssv feature_incompat 0x1002'
fsr_err 'incompatible features' -- "$C" 0 0 info

# random garbage over the inode table must fail or read, never crash or hang
mkc
ITB=$(dumpe2fs "$C" 2>/dev/null | sed -n 's/.*Inode table at \([0-9]*\)-.*/\1/p' | head -1)
[ -n "$ITB" ] || fail "test setup: no inode table in dumpe2fs output"
for seed in 1 2 3 4 5; do
  mkc
  "$PYTHON" - "$C" "$ITB" "$seed" <<'EOF'
import random, sys
path, itb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(path, "r+b") as f:
    for _ in range(200):
        f.seek(itb * 1024 + r.randrange(0, 24 * 256))
        f.write(bytes([r.getrandbits(8)]))
EOF
  for p in /etc/os-release /file /dir /dir/f3; do
    fsr "$C" 0 0 cat "$p"
    fsr "$C" 0 0 ls "$p"
  done
done

info "all checks passed"
