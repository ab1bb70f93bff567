#!/bin/bash
# check_deep.sh - `check --deep` runs libguestfs's own inspection (an
# independent oracle) next to ours: on the BIOS and the UEFI fixtures, the OS
# and the root filesystem it finds equal ours (and the architecture, when it
# can tell). libguestfs runs its appliance under TCG here.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage depmod dpkg-deb apt-get zstd
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-$(dirname "$TESTTMP")/guestfs-cache}
mkdir -p "$LIBGUESTFS_CACHEDIR"
ensure_fixtures 1

for name in x86_64-bios-mbr x86_64-uefi-gpt; do
  AMIPORT_TIMEOUT=600 run_amiport check --deep -f raw --output=json "$FIXTURES/$name.raw"
  [ "$RC" -eq 0 ] || { cat "$T/stderr" >&2; fail "$name: check --deep exited $RC"; }
  "$PYTHON" - "$T/stdout" "$name" <<'PY' || fail "$name: libguestfs and amiport disagree"
import json, sys
j = json.load(open(sys.argv[1]))
deep = j["deep"]
roots = deep["roots"]
errors = []
if len(roots) != 1:
    errors.append(f"libguestfs found {len(roots)} roots")
else:
    r = roots[0]
    if r["distro"] != j["os"]["id"]:
        errors.append(f"distro {r['distro']} vs os.id {j['os']['id']}")
    if str(r["major_version"]) != j["os"]["version"]:
        errors.append(f"major_version {r['major_version']} vs os.version {j['os']['version']}")
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(r["arch"])
    if arch and arch != j["arch"]:
        errors.append(f"arch {r['arch']} vs {j['arch']}")
    # The root libguestfs mounts at / is our root partition, same filesystem.
    dev = r["mountpoints"]["/"]
    index = int(dev.rstrip("0123456789") != dev and dev[len(dev.rstrip("0123456789")):])
    ours = [p for p in j["partitions"] if p["index"] == index]
    if not ours or ours[0]["filesystem"] != deep["filesystems"][dev]:
        errors.append(f"root {dev} ({deep['filesystems'].get(dev)}) is not our partition {index}")
for e in errors:
    print(f"{sys.argv[2]}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  info "$name: libguestfs agrees"
done
info "ok"
