#!/bin/bash
# check_windows.sh - amiport check on Windows-like disks
# (fixtures/make-windows-fixture.sh): NTFS is named with its serial and
# label, the Windows Boot Manager (UEFI) or Windows's MBR and NTFS boot code
# (BIOS) is the bootloader, the OS is windows, WINDOWS_LICENSE is the one
# finding (none of the Linux ones) and check exits 1; a bare NTFS volume with
# no Windows boot code is not taken for Windows; a boot sector with the NTFS
# id but a broken BPB is not NTFS; import into tests/fakeaws refuses the disk
# without --force and registers it with it.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.vfat mmd mcopy mkntfs
PATH=$PATH:/usr/sbin:/sbin

field() {
  "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
codes() { field "$1" "' '.join(sorted(f['code'] for f in j['findings']))"; }

for v in uefi bios; do
  bash "$SRCDIR/fixtures/make-windows-fixture.sh" "$T/win-$v.raw" "$v" >"$T/mk.log" 2>&1 ||
    { cat "$T/mk.log" >&2; fail "building the $v fixture"; }
  run_amiport check -f raw --output=json "$T/win-$v.raw"
  j=$T/win-$v.json
  cp "$T/stdout" "$j"
  [ "$RC" -eq 1 ] || fail "$v: check exited $RC, expected 1"
  [ "$(codes "$j")" = WINDOWS_LICENSE ] || fail "$v: findings $(codes "$j")"
  [ "$(field "$j" "j['os']['id']")" = windows ] || fail "$v: os $(field "$j" "j['os']")"
  [ "$(field "$j" "j['importable']")" = False ] || fail "$v: importable"
  [ "$(field "$j" "[(p['filesystem'], p['label'], p['uuid']) for p in j['partitions'] if p['filesystem'] == 'ntfs']")" = \
    "[('ntfs', 'WINDOWS', '57494E444F575331')]" ] || fail "$v: ntfs partition $(field "$j" "j['partitions']")"
  [ "$(field "$j" "j['kernels'] == [] and j['drivers'] is None and j['fstab'] == []")" = True ] ||
    fail "$v: Linux fields filled"
  field "$j" "[f['message'] for f in j['findings']][0]" | grep -q "billing code.*--force" ||
    fail "$v: WINDOWS_LICENSE message: $(field "$j" "j['findings']")"
done
j=$T/win-uefi.json
[ "$(field "$j" "j['bootloader']['name'] + ' ' + j['bootloader']['efi_loader']")" = \
  'windows-boot-manager \EFI\Microsoft\Boot\bootmgfw.efi' ] || fail "uefi: bootloader $(field "$j" "j['bootloader']")"
[ "$(field "$j" "j['boot_modes'], j['arch'], j['partition_table']")" = "(['uefi'], 'x86_64', 'gpt')" ] ||
  fail "uefi: boot modes/arch/table $(field "$j" "j['boot_modes'], j['arch'], j['partition_table']")"
j=$T/win-bios.json
[ "$(field "$j" "j['bootloader']['name'], j['boot_modes'], j['partition_table']")" = \
  "('windows-boot-manager', ['legacy-bios'], 'mbr')" ] || fail "bios: $(field "$j" "j['bootloader'], j['boot_modes']")"

# Human output says Windows and names the label.
run_amiport check -f raw "$T/win-uefi.raw"
[ "$RC" -eq 1 ] || fail "human: exit $RC"
grep -q '^OS:           Windows' "$T/stdout" && grep -q 'ntfs *label=WINDOWS' "$T/stdout" &&
  grep -q 'error   WINDOWS_LICENSE' "$T/stdout" || fail "human output: $(cat "$T/stdout")"

# The ESP's bootmgfw.efi must be a PE image: "MZ" alone is not enough.
cp "$T/win-uefi.raw" "$T/notpe.raw"
esp_off=$((2048 * 512))
printf 'MZ-not-a-pe-image' >"$T/bad.efi"
MTOOLS_SKIP_CHECK=1 mcopy -o -i "$T/notpe.raw@@$esp_off" "$T/bad.efi" ::/EFI/Microsoft/Boot/bootmgfw.efi ||
  fail "mcopy into the ESP"
run_amiport check -f raw --output=json "$T/notpe.raw"
[ "$(codes "$T/stdout")" = "NO_BOOTLOADER NO_ROOT_FILESYSTEM" ] || fail "not-PE loader: $(codes "$T/stdout")"

# An NTFS data volume with mkntfs's own boot code, alone on an MBR disk
# whose code is not Windows's: NTFS, but not Windows.
truncate -s 4M "$T/data.raw"
printf 'label: dos\nstart=128, type=7\n' | sfdisk -q "$T/data.raw"
truncate -s 3M "$T/ntfs"
mkntfs -F -Q -q -L DATA "$T/ntfs" >/dev/null 2>&1 || fail "mkntfs"
dd if="$T/ntfs" of="$T/data.raw" bs=512 seek=128 conv=notrunc status=none
run_amiport check -f raw --output=json "$T/data.raw"
[ "$(field "$T/stdout" "j['partitions'][0]['filesystem'], j['partitions'][0]['label']")" = "('ntfs', 'DATA')" ] ||
  fail "data disk: $(field "$T/stdout" "j['partitions']")"
[ "$(field "$T/stdout" "j['os']['id']")" = None ] && [ "$(codes "$T/stdout")" = "NO_BOOTLOADER NO_ROOT_FILESYSTEM" ] ||
  fail "data disk taken for Windows: $(codes "$T/stdout")"

# Windows's NTFS boot sector but no MBR code to load it: Windows, and no
# boot mode.
cp "$T/win-bios.raw" "$T/nombr.raw"
dd if=/dev/zero of="$T/nombr.raw" bs=440 count=1 conv=notrunc status=none
run_amiport check -f raw --output=json "$T/nombr.raw"
[ "$(codes "$T/stdout")" = "NO_BOOTLOADER WINDOWS_LICENSE" ] && [ "$(field "$T/stdout" "j['boot_modes']")" = "[]" ] ||
  fail "no MBR code: $(codes "$T/stdout"), $(field "$T/stdout" "j['boot_modes']")"

# The NTFS id with a BPB out of range (0 bytes per sector) is not NTFS.
cp "$T/win-bios.raw" "$T/badbpb.raw"
printf '\0\0' | dd of="$T/badbpb.raw" bs=1 seek=$((128 * 512 + 11)) conv=notrunc status=none
run_amiport check -f raw --output=json "$T/badbpb.raw"
[ "$RC" -eq 1 ] && [ "$(field "$T/stdout" "j['partitions'][0]['filesystem']")" = None ] ||
  fail "bad BPB: rc $RC, $(field "$T/stdout" "j['partitions']")"
[ "$(field "$T/stdout" "j['os']['id']")" = None ] || fail "bad BPB still Windows"

# import refuses the Windows disk without --force and registers it with it.
if [ -x /usr/bin/aws ] && /usr/bin/python3 -c 'import botocore' 2>/dev/null && command -v curl >/dev/null; then
  start_fakeaws
  expect_rc 1 import --name windows "$T/win-uefi.raw"
  stderr_has "WINDOWS_LICENSE" "--force"
  [ -z "$(awsx ec2 describe-images --owners self --query 'Images[].ImageId' --output text)" ] ||
    fail "a refused import registered an image"
  amiport_ok import --output=json --name windows --force "$T/win-uefi.raw"
  [[ $(json_get "$T/stdout" image_id) == ami-* ]] || fail "import --force registered nothing: $(cat "$T/stdout")"
  awsx ec2 describe-images --image-ids "$(json_get "$T/stdout" image_id)" >"$T/img.json" ||
    fail "describe-images"
  [ "$(field "$T/img.json" "j['Images'][0]['Architecture'], j['Images'][0].get('BootMode')")" = "('x86_64', 'uefi')" ] ||
    fail "registered image: $(cat "$T/img.json")"
else
  info "import part skipped: Debian's awscli, python3-botocore or curl is missing"
fi
info "ok"
