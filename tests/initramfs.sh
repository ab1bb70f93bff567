#!/bin/bash
# initramfs.sh - the inspector lists initramfs archives as a stream: newc cpio
# compressed with gzip, zstd, xz and lz4 (legacy frames, as the kernel
# makes), after an uncompressed early-microcode archive; it finds the NVMe,
# ENA and Xen modules by name, and refuses an archive that inflates without end.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd cpio gzip zstd xz lz4 mkfs.ext4
FSREAD=${TESTBIN:?}/fsread

stage=$T/stage
mkdir -p "$stage/usr/lib/modules/6.1.0-test/kernel/drivers/nvme/host" \
         "$stage/usr/lib/modules/6.1.0-test/kernel/drivers/net/ethernet/amazon/ena" "$stage/bin"
echo module > "$stage/usr/lib/modules/6.1.0-test/kernel/drivers/nvme/host/nvme.ko"
echo module > "$stage/usr/lib/modules/6.1.0-test/kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz"
head -c 300000 /dev/urandom > "$stage/bin/busybox"
for i in $(seq 1 50); do echo "file $i" > "$stage/bin/f$i"; done
(cd "$stage" && find . | sort | cpio -o -H newc --quiet) > "$T/main.cpio"
nfiles=$(cd "$stage" && find . | wc -l)

early=$T/early
mkdir -p "$early/kernel/x86/microcode"
echo ucode > "$early/kernel/x86/microcode/GenuineIntel.bin"
(cd "$early" && find . | sort | cpio -o -H newc --quiet) > "$T/early.cpio"

boot=$T/boot
mkdir -p "$boot"
gzip -9 -c "$T/main.cpio" > "$boot/initrd.gz"
zstd -q -19 -c "$T/main.cpio" > "$boot/initrd.zst"
xz --check=crc32 -c "$T/main.cpio" > "$boot/initrd.xz"
lz4 -q -l -c "$T/main.cpio" > "$boot/initrd.lz4"
cat "$T/early.cpio" "$boot/initrd.zst" > "$boot/initrd.ucode-zst"
cp "$T/main.cpio" "$boot/initrd.cpio"
head -c 5000 "$boot/initrd.gz" > "$boot/initrd.truncated"
printf 'garbage that is no archive' > "$boot/initrd.junk"
# 1.5 GiB of zeros in a few KiB of zstd: the scan must stop at its bound.
head -c 1536M /dev/zero | zstd -q -1 -c > "$boot/initrd.bomb"

truncate -s 64M "$T/fs.img"
mkfs.ext4 -q -F -d "$boot" "$T/fs.img" || fail "mkfs.ext4"

check() { # FILE EXPECTED-LINE
  out=$("$FSREAD" "$T/fs.img" 0 0 initramfs "/$1" 2>"$T/stderr") || fail "fsread initramfs /$1: $(cat "$T/stderr")"
  [ "$out" = "$2" ] || fail "initramfs /$1: got '$out', want '$2'"
}
check initrd.cpio "compression=none files=$nfiles microcode=1 nvme ena"
check initrd.gz "compression=gzip files=$nfiles microcode=0 nvme ena"
check initrd.zst "compression=zstd files=$nfiles microcode=0 nvme ena"
check initrd.xz "compression=xz files=$nfiles microcode=0 nvme ena"
check initrd.lz4 "compression=lz4 files=$nfiles microcode=0 nvme ena"
nearly=$(cd "$early" && find . | wc -l)
check initrd.ucode-zst "compression=zstd files=$((nfiles + nearly)) microcode=1 nvme ena"

for bad in truncated junk; do
  rc=0
  "$FSREAD" "$T/fs.img" 0 0 initramfs /initrd.$bad >/dev/null 2>"$T/stderr" || rc=$?
  [ "$rc" -eq 1 ] || fail "initrd.$bad: exit $rc, expected 1"
done
grep -q "neither cpio nor a compression" "$T/stderr" || fail "junk: $(cat "$T/stderr")"

rc=0
timeout 60 "$FSREAD" "$T/fs.img" 0 0 initramfs /initrd.bomb >/dev/null 2>"$T/stderr" || rc=$?
[ "$rc" -eq 1 ] || fail "initrd.bomb: exit $rc, expected 1 (stderr: $(cat "$T/stderr"))"
grep -Eq "not a cpio archive|decompresses to more than" "$T/stderr" || fail "bomb: $(cat "$T/stderr")"
info "ok"
