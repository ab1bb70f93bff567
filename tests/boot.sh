#!/bin/bash
# boot.sh - bootability is proven, not assumed. Builds the fixtures with
# fixtures/make-boot-fixtures.sh (kept between runs beside $TESTTMP), then
# boots every positive one (importable in expected.json) under QEMU with
# software emulation: SeaBIOS for legacy-bios, OVMF for x86_64 UEFI, AAVMF for
# arm64, from an NVMe disk as on a Nitro instance. The fixture's /init prints
# one marker line only after loading nvme and ena from its initramfs and
# mounting the root it finds there, so a pass also proves the drivers the
# inspector says are in the initramfs really are. Each fixture is then
# converted by amiport to qcow2 and to streamOptimized VMDK (the BIOS one
# also to VHD and VHDX), compared with qemu-img, and booted again from the
# converted image.
#
# Env: BOOT_TIMEOUT=300 seconds per boot; BOOT_JOBS=2 boots at a time;
#      BOOT_ALL_MODES=1 boots converted images in every boot mode (default:
#      one mode each, taking turns); FIXTURES, CACHE: where the images and the
#      downloaded packages live (default $TESTTMP/../fixtures{,-cache}).
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd qemu-system-x86_64 qemu-img sfdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage depmod dpkg-deb apt-get zstd

BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
BOOT_JOBS=${BOOT_JOBS:-2}
BOOT_ALL_MODES=${BOOT_ALL_MODES:-0}
MARKER=AMIPORT-FIXTURE-BOOT

firmware() { # the first readable file among the arguments
  local f
  for f in "$@"; do [ -r "$f" ] && { echo "$f"; return 0; }; done
  return 1
}
SEABIOS=$(firmware /usr/share/seabios/bios-256k.bin /usr/share/qemu/bios-256k.bin) ||
  skip "no SeaBIOS (package seabios)"
OVMF=$(firmware /usr/share/ovmf/OVMF.fd /usr/share/qemu/OVMF.fd) || skip "no OVMF (package ovmf)"
ARM64=1
AAVMF=$(firmware /usr/share/qemu-efi-aarch64/QEMU_EFI.fd /usr/share/AAVMF/AAVMF_CODE.fd) || ARM64=0
if ! command -v qemu-system-aarch64 >/dev/null; then
  ARM64=0
  info "SKIP aarch64-uefi-gpt: qemu-system-aarch64 is not installed (package qemu-system-arm)"
elif [ "$ARM64" = 0 ]; then
  info "SKIP aarch64-uefi-gpt: no AAVMF firmware (package qemu-efi-aarch64)"
fi

# 1. The fixtures (built once, shared with check_fixtures.sh).
t_start=$SECONDS
ensure_fixtures "$ARM64"

# The positive fixtures: "name arch kernel_version mode,mode".
"$PYTHON" - "$FIXTURES/expected.json" >"$T/positive" <<'EOF' || fail "cannot read expected.json"
import json, sys
for name, e in json.load(open(sys.argv[1])).items():
    if e["importable"]:
        print(name, e["arch"], e["kernel_version"], ",".join(e["boot_modes"]))
EOF
[ -s "$T/positive" ] || fail "expected.json names no positive fixture"

# 2. amiport converts each one to qcow2 and to streamOptimized VMDK; the
#    copies must read back equal to the raw image before they are booted.
VMDK=1
LEGS=()
k=0
# Two fixtures also make the round trip through EC2 (the local emulator):
# import as an AMI, export the AMI back as qcow2, boot what came back. The
# BIOS one also goes as an instance-store bundle into S3 (tests/s3rver) and
# is imported from there as an EBS-backed AMI, exported and booted.
ROUNDTRIP=0
if /usr/bin/python3 -c 'import botocore' 2>/dev/null && command -v curl >/dev/null; then
  start_fakeaws
  ROUNDTRIP=1
  # and one through an instance-store bundle in S3 (tests/s3rver), when Node.js is here
  if command -v node >/dev/null && command -v npm >/dev/null; then
    start_s3rver
    s3x s3 mb s3://boot-bundles >/dev/null || fail "cannot make a bucket in s3rver"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 \
      -subj /CN=amiport-boot >/dev/null 2>&1 || fail "openssl cannot make a key pair"
    ROUNDTRIP=2
  else
    info "SKIP the bundle leg: node or npm is not installed (tests/s3rver needs them)"
  fi
else
  info "SKIP the EC2 round-trip legs: python3-botocore or curl is not installed"
fi
while read -r name arch kver modes <&3; do
  raw=$FIXTURES/$name.raw
  [ -f "$raw" ] || fail "$raw is missing"
  amiport_ok convert -f raw -O qcow2 "$raw" "$T/$name.qcow2"
  qemu-img compare -f raw -F qcow2 "$raw" "$T/$name.qcow2" >/dev/null ||
    fail "$name.qcow2 written by amiport differs from $name.raw"
  if [ "$VMDK" = 1 ]; then
    run_amiport convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$T/$name.vmdk"
    if [ "$RC" -ne 0 ]; then
      [ "$k" -eq 0 ] || { cat "$T/stderr" >&2; fail "VMDK convert of $name exited $RC (it worked for another fixture)"; }
      VMDK=0
      info "SKIP the VMDK leg: amiport convert -O vmdk -o subformat=streamOptimized exited $RC: $(head -n 1 "$T/stderr")"
    else
      qemu-img info --output=json "$T/$name.vmdk" >"$T/vmdk.json" || fail "qemu-img cannot open $name.vmdk"
      [ "$(format_specific "$T/vmdk.json" create-type)" = streamOptimized ] ||
        fail "$name.vmdk is not streamOptimized: $(format_specific "$T/vmdk.json" create-type)"
      qemu-img compare -f raw -F vmdk "$raw" "$T/$name.vmdk" >/dev/null ||
        fail "$name.vmdk written by amiport differs from $name.raw"
    fi
  fi
  [ "$arch" = arm64 ] && [ "$ARM64" = 0 ] && continue
  IFS=, read -r -a m <<<"$modes"
  fmts=(qcow2)
  [ "$VMDK" = 1 ] && fmts+=(vmdk)
  for mode in "${m[@]}"; do LEGS+=("$name $arch $kver $mode raw $raw"); done
  for i in "${!fmts[@]}"; do
    if [ "$BOOT_ALL_MODES" = 1 ]; then
      for mode in "${m[@]}"; do LEGS+=("$name $arch $kver $mode ${fmts[i]} $T/$name.${fmts[i]}"); done
    else
      LEGS+=("$name $arch $kver ${m[(i + 1) % ${#m[@]}]} ${fmts[i]} $T/$name.${fmts[i]}")
    fi
  done
  # One fixture also goes through VHD (vpc) and VHDX, the Hyper-V formats.
  if [ "$name" = x86_64-bios-mbr ]; then
    for fmt in vpc vhdx; do
      amiport_ok convert -f raw -O "$fmt" "$raw" "$T/$name.$fmt"
      qemu-img compare -f raw -F "$fmt" "$raw" "$T/$name.$fmt" >/dev/null ||
        fail "$name.$fmt written by amiport differs from $name.raw"
      LEGS+=("$name $arch $kver ${m[0]} $fmt $T/$name.$fmt")
    done
  fi
  if [ "$ROUNDTRIP" -ge 1 ] && { [ "$name" = x86_64-bios-mbr ] || [ "$name" = x86_64-uefi-gpt ]; }; then
    amiport_ok import -f raw --output=json --name "roundtrip-$name" "$raw"
    ami=$(json_get "$T/stdout" image_id)
    amiport_ok export -O qcow2 "$ami" "$T/$name.ec2.qcow2"
    qemu-img compare -f raw -F qcow2 "$raw" "$T/$name.ec2.qcow2" >/dev/null ||
      fail "$name exported from $ami differs from $name.raw"
    LEGS+=("$name $arch $kver ${m[0]} qcow2 $T/$name.ec2.qcow2")
  fi
  # instance-store bundle in S3 -> EBS-backed AMI -> exported image
  if [ "$ROUNDTRIP" = 2 ] && [ "$name" = x86_64-bios-mbr ]; then
    mkdir -p "$T/bundle"
    amiport_ok bundle --privatekey "$T/key.pem" --cert "$T/cert.pem" --ec2cert "$T/cert.pem" \
      --user 123456789012 -d "$T/bundle" "$raw"
    amiport_ok upload-bundle --bucket boot-bundles/bios --manifest "$T/bundle/$name.raw.manifest.xml"
    amiport_ok import --output=json --privatekey "$T/key.pem" --name "bundle-$name" \
      "s3://boot-bundles/bios/$name.raw.manifest.xml"
    ami=$(json_get "$T/stdout" image_id)
    amiport_ok export -O qcow2 "$ami" "$T/$name.bundle.qcow2"
    qemu-img compare -f raw -F qcow2 "$raw" "$T/$name.bundle.qcow2" >/dev/null ||
      fail "$name through a bundle in S3 and back from $ami differs from $name.raw"
    info "the bundle leg: $name through s3://boot-bundles/bios into $ami"
    LEGS+=("$name $arch $kver ${m[0]} qcow2 $T/$name.bundle.qcow2")
  fi
  k=$((k + 1))
done 3<"$T/positive"
stop_fakeaws
stop_s3rver

# 3. The boots, BOOT_JOBS at a time. Each leg leaves "PASS|FAIL seconds what"
#    in $T/legs/N.result and its serial console in $T/legs/N.log.
boot_leg() {
  local n=$1 name arch kver mode fmt img cmd t0 rc=0 want uarch fw
  read -r name arch kver mode fmt img <<<"${LEGS[n]}"
  case $arch/$mode in
    x86_64/legacy-bios) cmd=(qemu-system-x86_64 -machine pc -bios "$SEABIOS") uarch=x86_64 fw=bios ;;
    x86_64/uefi) cmd=(qemu-system-x86_64 -machine q35 -bios "$OVMF") uarch=x86_64 fw=uefi ;;
    arm64/uefi) cmd=(qemu-system-aarch64 -machine virt -cpu cortex-a57 -bios "$AAVMF") uarch=aarch64 fw=uefi ;;
    *) echo "FAIL 0 $name $fmt $mode: no way to boot $arch in $mode" >"$T/legs/$n.result"; return ;;
  esac
  t0=$(date +%s.%N)
  local try
  for try in 1 2; do
    rc=0
    timeout -k 10 "$BOOT_TIMEOUT" "${cmd[@]}" -accel tcg -m 512 -smp 1 \
      -drive "file=$img,format=$fmt,if=none,id=disk0,snapshot=on" \
      -device nvme,drive=disk0,serial=amiport0,bootindex=0 \
      -nographic -no-reboot -serial mon:stdio -net none </dev/null >"$T/legs/$n.log" 2>&1 || rc=$?
    # On a loaded host, TCG can be too slow for the kernel's early timer
    # check, which panics before the disk matters: that one flake is retried.
    grep -q "IO-APIC + timer doesn't work" "$T/legs/$n.log" || break
  done
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  want="^$MARKER fixture=$name arch=$uarch fw=$fw kernel=$kver nvme=yes ena=yes root=nvme0n1p[0-9]+ os=debian/12/$name"
  if tr -d '\r' <"$T/legs/$n.log" | grep -Eq "$want"; then
    echo "PASS $secs $name $fmt $mode" >"$T/legs/$n.result"
  else
    echo "FAIL $secs $name $fmt $mode (qemu exit $rc; serial console in $T/legs/$n.log)" >"$T/legs/$n.result"
  fi
}

mkdir -p "$T/legs"
info "booting ${#LEGS[@]} images, $BOOT_JOBS at a time, ${BOOT_TIMEOUT}s each at most"
t_boot=$SECONDS
for n in "${!LEGS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$BOOT_JOBS" ]; do wait -n; done
  boot_leg "$n" &
done
wait

failed=0
for n in "${!LEGS[@]}"; do
  if [ ! -s "$T/legs/$n.result" ]; then
    echo "FAIL ? ${LEGS[n]} (no result)" >"$T/legs/$n.result"
  fi
  read -r verdict secs what <"$T/legs/$n.result"
  info "$verdict ${secs}s $what"
  if [ "$verdict" != PASS ]; then
    failed=$((failed + 1))
    tr -d '\r' <"$T/legs/$n.log" 2>/dev/null | tail -n 20 >&2
  fi
done
info "boots took $((SECONDS - t_boot))s, the whole test $((SECONDS - t_start))s"
[ "$failed" -eq 0 ] || fail "$failed of ${#LEGS[@]} boots did not reach the marker"
info "ok: ${#LEGS[@]} boots"
