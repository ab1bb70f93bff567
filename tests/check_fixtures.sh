#!/bin/bash
# check_fixtures.sh - amiport check on every real fixture
# (fixtures/make-boot-fixtures.sh) gives the fields fixtures/expected.json
# says (arch, boot modes, bootloader, kernel version, partition table, OS,
# drivers, initramfs compression, finding codes, importable), reading little,
# and the same answer through qcow2.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage depmod dpkg-deb apt-get zstd qemu-img
ensure_fixtures 1

for raw in "$FIXTURES"/*.raw; do
  name=$(basename "$raw" .raw)
  run_amiport check -f raw --output=json "$raw"
  cp "$T/stdout" "$T/$name.json"
  "$PYTHON" - "$FIXTURES/expected.json" "$name" "$T/$name.json" "$RC" <<'PY' || fail "$name: check differs from expected.json"
import json, sys
want = json.load(open(sys.argv[1]))[sys.argv[2]]
got = json.load(open(sys.argv[3]))
rc = int(sys.argv[4])
errors = []
def eq(what, a, b):
    if a != b:
        errors.append(f"{what}: got {a!r}, want {b!r}")
eq("arch", got["arch"], want["arch"])
eq("boot_modes", got["boot_modes"], want["boot_modes"])
eq("partition_table", got["partition_table"], want["partition_table"])
eq("importable", got["importable"], want["importable"])
eq("exit status", rc, 0 if want["importable"] else 1)
if want.get("bootloader"):
    eq("bootloader", got["bootloader"]["name"], want["bootloader"])
if want.get("os_id"):
    eq("os.id", got["os"]["id"], want["os_id"])
    eq("os.version", got["os"]["version"], want["os_version"])
default = [k["version"] for k in got["kernels"] if k["default"]]
if want.get("kernel_version"):
    eq("default kernel", default, [want["kernel_version"]])
for d, state in (want.get("drivers") or {}).items():
    eq(f"drivers.{d}", (got["drivers"] or {}).get(d), state)
comp = want.get("initramfs_compression")
if comp and got.get("initramfs"):
    r = got["initramfs"]
    eq("initramfs", ("microcode+" if r["microcode_prefix"] else "") + r["compression"], comp)
codes = {f["code"] for f in got["findings"]}
missing = set(want["findings"]) - codes
if missing:
    errors.append(f"findings lack {sorted(missing)}")
extra = {f["code"] for f in got["findings"] if f["severity"] == "error"} - set(want["findings"])
if extra:
    errors.append(f"unexpected error findings {sorted(extra)}")
if got["bytes_read"] > 16 << 20:
    errors.append(f"read {got['bytes_read']} bytes, over 16 MiB")
for e in errors:
    print(f"{sys.argv[2]}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  info "$name: as expected ($("$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["bytes_read"]//1024, "KiB read")' "$T/$name.json"))"
done

# Through a compressed qcow2, the same report but the format fields.
amiport_ok convert -c -f raw -O qcow2 "$FIXTURES/x86_64-hybrid-gpt.raw" "$T/hybrid.qcow2"
run_amiport check --output=json "$T/hybrid.qcow2"
"$PYTHON" - "$T/x86_64-hybrid-gpt.json" "$T/stdout" <<'PY' || fail "check through qcow2 differs from raw"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for j in (a, b):
    j.pop("format"); j.pop("bytes_read")
sys.exit(0 if a == b else 1)
PY
info "ok"
