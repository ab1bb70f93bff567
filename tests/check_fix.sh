#!/bin/bash
# check_fix.sh - `check --fix` repairs a copy of the fstab-sda fixture with
# libguestfs, read-write on that copy only:
#   - before: check reports FSTAB_DEVICE_NAME (fstab names / as /dev/sda1);
#     with the serial console taken off grub.cfg's kernel command line here,
#     NO_SERIAL_CONSOLE; and with no-nvme-initramfs's initramfs (nvme and
#     ena left out) put in, NVME_DRIVER_MISSING. The copy also gets busybox
#     and a stand-in /usr/sbin/update-initramfs (a busybox script that adds
#     the modules /etc/initramfs-tools/modules lists, and their
#     dependencies, to the initramfs, as initramfs-tools does);
#   - --fix prints the changes; after it, fstab reads UUID=<the root's
#     UUID> (the rest of the file as it was), grub.cfg's linux line ends in
#     console=ttyS0, /etc/initramfs-tools/modules lists nvme and ena and the
#     initramfs holds them, e2fsck finds the filesystem clean, check has none
#     of the three findings and says importable, and the fixed image boots
#     under QEMU (SeaBIOS, NVMe, TCG) to the fixture's serial marker, which
#     it prints only after loading nvme and ena from its initramfs;
#   - a second --fix changes nothing: no change listed, the image's bytes
#     the same;
#   - no-nvme-initramfs (initramfs without nvme and ena, and no
#     update-initramfs or dracut in the guest): --fix says in a
#     FIX_INITRAMFS_LEFT finding that it could not rebuild it, writes
#     nothing, and NVME_DRIVER_MISSING stays;
#   - refused without an appliance: a VMDK, two images; the fixtures
#     themselves are never written. --help describes --fix.
# Three appliance launches (TCG) and one boot.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage depmod dpkg-deb apt-get zstd debugfs e2fsck
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-$(dirname "$TESTTMP")/guestfs-cache}
mkdir -p "$LIBGUESTFS_CACHEDIR"
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
ROOT_UUID=6a3f2c1e-0b1d-4c1e-9d7a-f1c5ed000001
t0=$SECONDS
ensure_fixtures 1
SRC=$FIXTURES/fstab-sda.raw
src_sum=$(sha256sum <"$SRC")
img=$T/fix.raw

# --help says what --fix does.
amiport_ok check --help
grep -q -- '--fix' "$T/stdout" && grep -q 'raw and qcow2 only' "$T/stdout" && grep -q 'UUID=' "$T/stdout" &&
  grep -q 'console=ttyS0' "$T/stdout" && grep -q 'update-initramfs or dracut' "$T/stdout" ||
  fail "check --help does not describe --fix"

# Refusals, before any appliance: a format libguestfs does not write in
# place, and more than one image.
amiport_ok convert -f raw -O vmdk "$SRC" "$T/fix.vmdk"
expect_rc 1 check --fix "$T/fix.vmdk"
stderr_has 'raw and qcow2'
expect_rc 2 check --fix "$SRC" "$SRC"
stderr_has 'one IMAGE'

# part_io IMAGE in|out FILE - the first partition of IMAGE to FILE, or back.
part_io() {
  local start size
  read -r start size < <(sfdisk -d "$1" | awk -F'[=,]' '/ : start=/ { gsub(/ /, ""); print $2, $4; exit }')
  if [ "$2" = out ]; then
    dd if="$1" of="$3" bs=512 skip="$start" count="$size" conv=sparse status=none
  else
    dd if="$3" of="$1" bs=512 seek="$start" conv=notrunc status=none
  fi
}

KVER=$(json_get "$FIXTURES/expected.json" fstab-sda kernel_version)
[ -n "$KVER" ] || fail "expected.json has no kernel_version for fstab-sda"
BUSYBOX=$(ls "$FIXTURES_CACHE"/unpacked/busybox-static_*_amd64/bin/busybox 2>/dev/null | tail -n 1)
[ -x "$BUSYBOX" ] || fail "no busybox-static (amd64) in $FIXTURES_CACHE/unpacked (make-boot-fixtures.sh leaves it there)"
cp "$BUSYBOX" "$T/busybox"
cat >"$T/update-initramfs" <<'EOF'
#!/usr/bin/busybox sh
# Stand-in for initramfs-tools' update-initramfs (tests/check_fix.sh):
# "update-initramfs -u -k KVER" adds the modules /etc/initramfs-tools/modules
# lists, with what modules.dep says they need, and the modules.* indexes to
# /boot/initrd.img-KVER (a gzip'd newc cpio).
set -e
b=/usr/bin/busybox
[ "$1" = -u ] && [ "$2" = -k ] && [ -n "$3" ] || { echo "usage: update-initramfs -u -k KVER" >&2; exit 2; }
k=$3
img=/boot/initrd.img-$k
m=/lib/modules/$k
t=/tmp/update-initramfs.$$
$b rm -rf $t
$b mkdir -p $t
cd $t
$b zcat $img | $b cpio -id 2>/dev/null
for n in $($b sed 's/#.*//' /etc/initramfs-tools/modules); do
  line=$($b grep -E "/$n\.ko(\.[a-z]+)?:" $m/modules.dep) || { echo "update-initramfs: no module $n" >&2; exit 1; }
  for f in $(echo "$line" | $b tr -d :); do
    $b mkdir -p lib/modules/$k/$($b dirname $f)
    $b cp $m/$f lib/modules/$k/$f
  done
done
$b cp $m/modules.* lib/modules/$k/
$b find . | $b sort | $b cpio -o -H newc 2>/dev/null | $b gzip -n >$img.new
$b mv $img.new $img
cd /
$b rm -rf $t
echo "update-initramfs: Generating $img"
EOF
chmod 755 "$T/busybox" "$T/update-initramfs"

# The copy: no serial console, the initramfs without nvme and ena, busybox
# and the stand-in update-initramfs.
cp --sparse=always "$SRC" "$img"
part_io "$FIXTURES/no-nvme-initramfs.raw" out "$T/nonvme.ext4"
debugfs -R "dump /boot/initrd.img-$KVER $T/initrd.nonvme" "$T/nonvme.ext4" >/dev/null 2>&1 &&
  [ -s "$T/initrd.nonvme" ] || fail "cannot read no-nvme-initramfs's initramfs"
rm -f "$T/nonvme.ext4"
part_io "$img" out "$T/p1.ext4"
debugfs -R 'cat /boot/grub/grub.cfg' "$T/p1.ext4" 2>/dev/null >"$T/grub.cfg"
grep -q 'console=ttyS0,115200' "$T/grub.cfg" || fail "fstab-sda's grub.cfg has no console=ttyS0,115200 to take off"
sed 's/ console=ttyS0,115200//' "$T/grub.cfg" >"$T/grub.nocons"
cat >"$T/debugfs.cmd" <<EOF
rm /boot/grub/grub.cfg
write $T/grub.nocons /boot/grub/grub.cfg
rm /boot/initrd.img-$KVER
write $T/initrd.nonvme /boot/initrd.img-$KVER
write $T/busybox /usr/bin/busybox
write $T/update-initramfs /usr/sbin/update-initramfs
EOF
debugfs -w -f "$T/debugfs.cmd" "$T/p1.ext4" >"$T/debugfs.out" 2>&1 || { cat "$T/debugfs.out" >&2; fail "debugfs could not prepare the copy"; }
part_io "$img" in "$T/p1.ext4"

run_amiport check --output=json "$img"
[ "$RC" -eq 1 ] || fail "check before --fix exited $RC, want 1"
"$PYTHON" - "$T/stdout" <<'PY' || fail "check before --fix"
import json, sys
codes = {f["code"] for f in json.load(open(sys.argv[1]))["findings"]}
missing = {"FSTAB_DEVICE_NAME", "NO_SERIAL_CONSOLE", "NVME_DRIVER_MISSING"} - codes
sys.exit(f"findings {sorted(codes)} lack {sorted(missing)}" if missing else 0)
PY
info "before: FSTAB_DEVICE_NAME, NO_SERIAL_CONSOLE, NVME_DRIVER_MISSING"

# The fix.
t1=$SECONDS
AMIPORT_TIMEOUT=900 run_amiport check --fix "$img"
[ "$RC" -eq 0 ] || { cat "$T/stdout" "$T/stderr" >&2; fail "check --fix exited $RC, want 0 (importable after it)"; }
cp "$T/stdout" "$T/fix1.out"
grep -q "^Fixed $img:" "$T/fix1.out" &&
  grep -q "/etc/fstab: / is now UUID=$ROOT_UUID (was /dev/sda1)" "$T/fix1.out" &&
  grep -q "/boot/grub/grub.cfg: console=ttyS0 added to 1 kernel command line" "$T/fix1.out" &&
  grep -q "/etc/initramfs-tools/modules: nvme and ena added" "$T/fix1.out" &&
  grep -q "initramfs of $KVER rebuilt by the guest's update-initramfs with nvme and ena" "$T/fix1.out" ||
  { cat "$T/fix1.out" >&2; fail "--fix did not print the four changes"; }
info "--fix ($((SECONDS - t1))s) printed: $(sed -n '/^Fixed/,/^After/{/^  /p}' "$T/fix1.out" | sed 's/^ *//' | paste -sd ';')"

# What is on the disk now, read without amiport.
part_io "$img" out "$T/p1.ext4"
e2fsck -fn "$T/p1.ext4" >"$T/e2fsck.out" 2>&1 || { cat "$T/e2fsck.out" >&2; fail "e2fsck: the fixed filesystem is not clean"; }
debugfs -R 'cat /etc/fstab' "$T/p1.ext4" 2>/dev/null >"$T/fstab"
printf '# /etc/fstab: static file system information (amiport fixture fstab-sda).\nUUID=%s / ext4 errors=remount-ro 0 1\n' "$ROOT_UUID" |
  cmp -s - "$T/fstab" || { cat "$T/fstab" >&2; fail "fstab after --fix is not the original with UUID= for /dev/sda1"; }
debugfs -R 'cat /boot/grub/grub.cfg' "$T/p1.ext4" 2>/dev/null >"$T/grub.fixed"
sed 's/^\(\tlinux\t.*\)$/\1 console=ttyS0/' "$T/grub.nocons" | cmp -s - "$T/grub.fixed" ||
  { diff "$T/grub.nocons" "$T/grub.fixed" >&2; fail "grub.cfg after --fix is not the original with console=ttyS0 on its linux line"; }
debugfs -R 'cat /etc/initramfs-tools/modules' "$T/p1.ext4" 2>/dev/null >"$T/modules"
printf 'nvme\nena\n' | cmp -s - "$T/modules" || { cat "$T/modules" >&2; fail "/etc/initramfs-tools/modules is not nvme, ena"; }
info "after: fstab reads UUID=$ROOT_UUID, grub.cfg has console=ttyS0, initramfs-tools/modules nvme and ena, e2fsck clean"

run_amiport check --output=json "$img"
[ "$RC" -eq 0 ] || { cat "$T/stdout" >&2; fail "check after --fix exited $RC, want 0"; }
"$PYTHON" - "$T/stdout" <<'PY' || fail "check after --fix"
import json, sys
j = json.load(open(sys.argv[1]))
codes = {f["code"] for f in j["findings"]}
errors = []
if codes & {"FSTAB_DEVICE_NAME", "NO_SERIAL_CONSOLE", "NVME_DRIVER_MISSING"}:
    errors.append(f"findings still {sorted(codes)}")
if (j["drivers"]["nvme"], j["drivers"]["ena"]) != ("module-in-initramfs",) * 2:
    errors.append(f"drivers {j['drivers']}")
if [f["spec"] for f in j["fstab"] if f["file"] == "/"] != ["UUID=6a3f2c1e-0b1d-4c1e-9d7a-f1c5ed000001"]:
    errors.append(f"fstab {j['fstab']}")
if " console=ttyS0" not in (j["cmdline"] or "") or not j["importable"]:
    errors.append(f"cmdline {j['cmdline']!r}, importable {j['importable']}")
sys.exit("; ".join(errors) if errors else 0)
PY
info "after: check says importable, nvme and ena in the initramfs"

# A second --fix changes nothing, not a byte.
sum1=$(sha256sum <"$img")
AMIPORT_TIMEOUT=900 run_amiport check --fix --output=json "$img"
[ "$RC" -eq 0 ] || { cat "$T/stderr" >&2; fail "second --fix exited $RC"; }
[ "$(json_get "$T/stdout" fix changes)" = "[]" ] && [ "$(json_get "$T/stdout" fix image_changed)" = false ] ||
  { cat "$T/stdout" >&2; fail "second --fix changed something"; }
[ "$(sha256sum <"$img")" = "$sum1" ] || fail "second --fix wrote to the image"
info "second --fix: no change, image bytes unchanged"

# Where the guest cannot rebuild its initramfs, a finding says so.
cp --sparse=always "$FIXTURES/no-nvme-initramfs.raw" "$T/nonvme.raw"
sum2=$(sha256sum <"$T/nonvme.raw")
AMIPORT_TIMEOUT=900 run_amiport check --fix --output=json "$T/nonvme.raw"
[ "$RC" -eq 1 ] || { cat "$T/stderr" >&2; fail "--fix of no-nvme-initramfs exited $RC, want 1"; }
"$PYTHON" - "$T/stdout" <<'PY' || fail "--fix of no-nvme-initramfs"
import json, sys
j = json.load(open(sys.argv[1]))
f = {f["code"]: f for f in j["findings"]}
errors = []
left = f.get("FIX_INITRAMFS_LEFT")
if not left or "nvme and ena" not in left["message"] or "neither update-initramfs nor dracut" not in left["message"]:
    errors.append(f"no FIX_INITRAMFS_LEFT saying why: {left}")
if "NVME_DRIVER_MISSING" not in f:
    errors.append("NVME_DRIVER_MISSING is gone")
if j["fix"]["changes"] or j["fix"]["image_changed"]:
    errors.append(f"changes {j['fix']}")
sys.exit("; ".join(errors) if errors else 0)
PY
[ "$(sha256sum <"$T/nonvme.raw")" = "$sum2" ] || fail "--fix wrote to no-nvme-initramfs with nothing to change"
info "no-nvme-initramfs: FIX_INITRAMFS_LEFT, nothing written"

[ "$(sha256sum <"$SRC")" = "$src_sum" ] || fail "the fixture itself changed"

# The fixed image still boots, from NVMe, to the fixture's marker.
SEABIOS=
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/bios-256k.bin; do [ -r "$f" ] && SEABIOS=$f && break; done
if ! command -v qemu-system-x86_64 >/dev/null || [ -z "$SEABIOS" ]; then
  info "SKIP the boot: qemu-system-x86_64 or SeaBIOS is not installed"
else
  t1=$SECONDS
  for try in 1 2; do
    timeout -k 10 "$BOOT_TIMEOUT" qemu-system-x86_64 -machine pc -bios "$SEABIOS" -accel tcg -m 512 -smp 1 \
      -drive "file=$img,format=raw,if=none,id=disk0,snapshot=on" \
      -device nvme,drive=disk0,serial=amiport0,bootindex=0 \
      -nographic -no-reboot -serial mon:stdio -net none </dev/null >"$T/boot.log" 2>&1 || true
    # On a loaded host, TCG can be too slow for the kernel's early timer check.
    grep -q "IO-APIC + timer doesn't work" "$T/boot.log" || break
  done
  tr -d '\r' <"$T/boot.log" | grep -Eq '^AMIPORT-FIXTURE-BOOT fixture=fstab-sda arch=x86_64 fw=bios .* nvme=yes ena=yes root=nvme0n1p1 os=debian/12/fstab-sda' ||
    { tail -n 30 "$T/boot.log" >&2; fail "the fixed image did not boot to its marker"; }
  info "the fixed image boots ($((SECONDS - t1))s): $(tr -d '\r' <"$T/boot.log" | grep '^AMIPORT-FIXTURE-BOOT')"
fi
info "ok ($((SECONDS - t0))s)"
