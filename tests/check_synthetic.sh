#!/bin/bash
# check_synthetic.sh - amiport check on small synthetic guests
# (fixtures/make-synthetic-disk.sh): the JSON fields, the finding codes for
# each defect, the exit status, and the same answer through qcow2.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.ext4 cpio qemu-img

# field FILE EXPR: evaluates a Python expression on the JSON as j.
field() {
  "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
codes() { field "$1" "' '.join(sorted(f['code'] for f in j['findings']))"; }

for v in ok no-nvme sda-fstab no-kernel no-bootloader; do
  bash "$SRCDIR/fixtures/make-synthetic-disk.sh" "$T/$v.raw" "$v" >/dev/null 2>&1 || fail "building $v"
  run_amiport check -f raw --output=json "$T/$v.raw"
  cp "$T/stdout" "$T/$v.json"
  case $v in
    ok)
      [ "$RC" -eq 0 ] || fail "ok: exit $RC"
      [ "$(field "$T/ok.json" "j['arch']")" = x86_64 ] || fail "ok: arch"
      [ "$(field "$T/ok.json" "j['partition_table']")" = mbr ] || fail "ok: partition_table"
      [ "$(field "$T/ok.json" "j['boot_modes']")" = "['legacy-bios']" ] || fail "ok: boot_modes"
      [ "$(field "$T/ok.json" "j['bootloader']['name']")" = grub2 ] || fail "ok: bootloader"
      [ "$(field "$T/ok.json" "j['os']['id'] + ' ' + j['os']['version']")" = "debian 12" ] || fail "ok: os"
      [ "$(field "$T/ok.json" "[k['version'] for k in j['kernels'] if k['default']]")" = "['6.1.0-99-amd64']" ] || fail "ok: kernel"
      [ "$(field "$T/ok.json" "j['drivers']['nvme'] + ' ' + j['drivers']['ena']")" = "module-in-initramfs module-in-initramfs" ] || fail "ok: drivers"
      [ "$(field "$T/ok.json" "j['ami']['boot_mode'] + ' ' + str(j['ami']['ena_support'])")" = "legacy-bios True" ] || fail "ok: ami"
      [ "$(field "$T/ok.json" "j['partitions'][0]['uuid']")" = 5a1e0000-0000-4000-8000-000000000001 ] || fail "ok: uuid"
      [ "$(codes "$T/ok.json")" = "" ] || fail "ok: findings $(codes "$T/ok.json")"
      [ "$(field "$T/ok.json" "j['bytes_read'] < 1048576")" = True ] || fail "ok: read too much"
      ;;
    no-nvme) [ "$RC" -eq 1 ] && [ "$(codes "$T/$v.json")" = NVME_DRIVER_MISSING ] || fail "$v: rc $RC, $(codes "$T/$v.json")" ;;
    sda-fstab) [ "$RC" -eq 1 ] && [ "$(codes "$T/$v.json")" = FSTAB_DEVICE_NAME ] || fail "$v: rc $RC, $(codes "$T/$v.json")" ;;
    no-kernel) [ "$RC" -eq 1 ] && [ "$(codes "$T/$v.json")" = NO_KERNEL ] || fail "$v: rc $RC, $(codes "$T/$v.json")" ;;
    no-bootloader) [ "$RC" -eq 1 ] && [ "$(codes "$T/$v.json")" = NO_BOOTLOADER ] || fail "$v: rc $RC, $(codes "$T/$v.json")" ;;
  esac
done

# The same guest through qcow2 (compressed): the same answer but the format.
amiport_ok convert -c -f raw -O qcow2 "$T/ok.raw" "$T/ok.qcow2"
run_amiport check --output=json "$T/ok.qcow2"
[ "$RC" -eq 0 ] || fail "qcow2: exit $RC"
"$PYTHON" - "$T/ok.json" "$T/stdout" <<'PY' || fail "check through qcow2 differs from raw"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for j in (a, b):
    for k in ("format", "bytes_read"):
        j.pop(k)
sys.exit(0 if a == b else 1)
PY
# Human output names the verdict.
run_amiport check "$T/ok.qcow2"
grep -q '^Importable:   yes' "$T/stdout" || fail "human output: $(cat "$T/stdout")"
info "ok"
