#!/bin/bash
# check_instance_store.sh - what amiport check says about an old
# instance-store image: a bare filesystem (no partition table) is
# PARAVIRTUAL_ONLY (naming pv-grub's menu.lst when there is one) instead of
# NO_BOOTLOADER and NO_KERNEL; fstab entries for ephemeral volumes get
# FSTAB_EPHEMERAL instead of FSTAB_DEVICE_NAME, other device names still get
# FSTAB_DEVICE_NAME; the same filesystem in a partition is no longer
# PARAVIRTUAL_ONLY; a bare filesystem with no root on it is not either.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd mkfs.ext4 sfdisk

field() {
  "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
codes() { field "$1" "' '.join(f['code'] for f in j['findings'])"; }
message() { field "$1" "[f['message'] for f in j['findings'] if f['code'] == '$2'][${3:-0}]"; }

root=$T/root
mkdir -p "$root"/etc "$root"/boot/grub
cat >"$root/etc/os-release" <<'OS'
NAME="Amazon Linux AMI"
VERSION_ID="2011.09"
ID="amzn"
PRETTY_NAME="Amazon Linux AMI 2011.09"
OS
cat >"$root/etc/fstab" <<'FSTAB'
LABEL=/ / ext4 defaults 1 1
/dev/sdb /mnt auto defaults 0 2
/dev/xvdc /media/ephemeral1 ext3 defaults 0 0
/dev/sdd1 /data2 ext3 defaults,nofail 0 0
/dev/sdf /data ext4 defaults 0 2
FSTAB
cat >"$root/boot/grub/menu.lst" <<'MENU'
default 0
timeout 1
title Amazon Linux (2.6.35.14-97.44.amzn1.x86_64)
root (hd0)
kernel /boot/vmlinuz-2.6.35.14-97.44.amzn1.x86_64 root=LABEL=/ console=hvc0
MENU
truncate -s 8M "$T/bare.img"
mkfs.ext4 -q -F -L / -d "$root" "$T/bare.img" || fail "mkfs.ext4 -d"

run_amiport check -f raw --output=json "$T/bare.img"
cp "$T/stdout" "$T/bare.json"
[ "$RC" -eq 1 ] || fail "bare: exit $RC, expected 1"
[ "$(codes "$T/bare.json")" = \
  "PARAVIRTUAL_ONLY FSTAB_EPHEMERAL FSTAB_EPHEMERAL FSTAB_EPHEMERAL FSTAB_DEVICE_NAME NO_CLOUD_INIT" ] ||
  fail "bare: findings $(codes "$T/bare.json")"
[ "$(field "$T/bare.json" "j['partition_table'], j['partitions'][0]['filesystem'], j['os']['id']")" = "('none', 'ext4', 'amzn')" ] ||
  fail "bare: $(field "$T/bare.json" "j['partition_table'], j['partitions']")"
m=$(message "$T/bare.json" PARAVIRTUAL_ONLY)
for w in "bare ext4 filesystem" "menu.lst is for pv-grub" "partition 1" "GRUB 2" "HVM kernel" "NVMe" "ENA" "virt-resize"; do
  grep -qF -- "$w" <<<"$m" || fail "PARAVIRTUAL_ONLY does not say '$w': $m"
done
m=$(message "$T/bare.json" FSTAB_EPHEMERAL 0)
for w in "/dev/sdb at /mnt" "boot waits" "nofail" "map the ephemeral device"; do
  grep -qF -- "$w" <<<"$m" || fail "FSTAB_EPHEMERAL (sdb) does not say '$w': $m"
done
grep -qF "/dev/xvdc at /media/ephemeral1" <<<"$(message "$T/bare.json" FSTAB_EPHEMERAL 1)" ||
  fail "FSTAB_EPHEMERAL (xvdc): $(message "$T/bare.json" FSTAB_EPHEMERAL 1)"
m=$(message "$T/bare.json" FSTAB_EPHEMERAL 2)
grep -qF "/dev/sdd1 at /data2" <<<"$m" && ! grep -qF "boot waits" <<<"$m" ||
  fail "FSTAB_EPHEMERAL (sdd1, nofail): $m"
[ "$(field "$T/bare.json" "[f['severity'] for f in j['findings'] if f['code'] == 'FSTAB_EPHEMERAL']")" = \
  "['warning', 'warning', 'warning']" ] || fail "FSTAB_EPHEMERAL is not a warning"
grep -qF "/dev/sdf" <<<"$(message "$T/bare.json" FSTAB_DEVICE_NAME)" ||
  fail "FSTAB_DEVICE_NAME is not about /dev/sdf: $(message "$T/bare.json" FSTAB_DEVICE_NAME)"

# Without menu.lst: no pv-grub in the message.
rm "$root/boot/grub/menu.lst"
mkfs.ext4 -q -F -L / -d "$root" "$T/bare.img" || fail "mkfs.ext4 -d"
run_amiport check -f raw --output=json "$T/bare.img"
m=$(message "$T/stdout" PARAVIRTUAL_ONLY)
[ -n "$m" ] && ! grep -q pv-grub <<<"$m" || fail "no menu.lst: $m"

# The same filesystem in partition 1: the findings a partitioned disk gets.
truncate -s 10M "$T/part.raw"
printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q "$T/part.raw"
dd if="$T/bare.img" of="$T/part.raw" bs=512 seek=2048 conv=notrunc status=none
run_amiport check -f raw --output=json "$T/part.raw"
[ "$(codes "$T/stdout")" = \
  "NO_BOOTLOADER NO_KERNEL FSTAB_EPHEMERAL FSTAB_EPHEMERAL FSTAB_EPHEMERAL FSTAB_DEVICE_NAME NO_CLOUD_INIT" ] ||
  fail "partitioned: findings $(codes "$T/stdout")"

# A bare filesystem that is no root (a data volume) is not PARAVIRTUAL_ONLY.
mkdir -p "$T/data/files"
mkfs.ext4 -q -F -d "$T/data" "$T/bare.img" || fail "mkfs.ext4 -d"
run_amiport check -f raw --output=json "$T/bare.img"
[ "$(codes "$T/stdout")" = "NO_ROOT_FILESYSTEM NO_BOOTLOADER" ] || fail "bare data volume: $(codes "$T/stdout")"
info "ok"
