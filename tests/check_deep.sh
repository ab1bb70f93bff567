#!/bin/bash
# check_deep.sh - `check --deep` runs libguestfs's own inspection (an
# independent oracle) next to ours, on every fixture the builder makes
# (fixtures/expected.json, positive and negative) and on lvm-root
# (fixtures/make-lvm-fixture.sh), all in one appliance launch:
#   - blkid in the appliance types every partition as we do (ext4, vfat,
#     crypto_LUKS, LVM2_member; nothing on the BIOS boot partition), and
#     the partitions are the ones we list;
#   - where we find a root, libguestfs finds exactly one on the same image,
#     on the partition we call the root, with our OS and version, and an
#     architecture that is ours or "unknown" (it reads it from binaries the
#     fixtures do not have); its mount points are our fstab's, each on a
#     filesystem with the UUID (or the partition number) fstab names;
#   - where we find none (luks-root), neither does libguestfs;
#   - lvm-root: the native check names the physical volume (LVM2_member)
#     and says ROOT_NOT_NATIVE (pointing at --deep); --deep finds the root
#     on /dev/vg0/root, with /boot on partition 1, and replaces that
#     finding by ROOT_FOUND_DEEP.
# libguestfs runs its appliance under TCG here. lvm-root is built once
# (one more launch) and kept beside the other fixtures until its builder or
# they change.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd sfdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage depmod dpkg-deb apt-get zstd
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-$(dirname "$TESTTMP")/guestfs-cache}
mkdir -p "$LIBGUESTFS_CACHEDIR"
t0=$SECONDS
ensure_fixtures 1

# lvm-root.raw, built from two fixtures by make-lvm-fixture.sh (guestfish).
LVM_DIR=$FIXTURES-lvm
LVM=
if ! command -v guestfish >/dev/null; then
  info "SKIP lvm-root: guestfish is not installed (package libguestfs-tools)"
else
  stamp="$(cat "$SRCDIR/fixtures/make-lvm-fixture.sh" "$FIXTURES/.stamp" | sha256sum | cut -c1-16)"
  t1=$SECONDS
  build_once "$LVM_DIR" "$stamp" "$T/lvm-build.log" env SRC="$FIXTURES" OUT="$LVM_DIR" \
    bash "$SRCDIR/fixtures/make-lvm-fixture.sh" || {
    tail -n 30 "$T/lvm-build.log" >&2
    fail "make-lvm-fixture.sh failed"
  }
  [ "$BUILT" = 1 ] && info "lvm-root: built in $((SECONDS - t1))s" || info "lvm-root: reusing $LVM_DIR/lvm-root.raw"
  LVM=$LVM_DIR/lvm-root.raw

  # The native check alone: the physical volume by its signature, and a
  # finding that sends the user to --deep.
  run_amiport check -f raw --output=json "$LVM"
  "$PYTHON" - "$T/stdout" <<'PY' || fail "lvm-root: the native check does not report the LVM physical volume"
import json, sys
j = json.load(open(sys.argv[1]))
errors = []
parts = {p["index"]: p["filesystem"] for p in j["partitions"]}
if parts != {1: "ext4", 2: "LVM2_member"}:
    errors.append(f"partitions {parts}, want 1 ext4, 2 LVM2_member")
f = [f for f in j["findings"] if f["code"] == "ROOT_NOT_NATIVE"]
if not f or f[0]["severity"] != "warning" or "--deep" not in f[0]["message"]:
    errors.append(f"no ROOT_NOT_NATIVE warning naming --deep: {j['findings']}")
if j["os"]["id"] is not None:
    errors.append(f"os.id {j['os']['id']} without a readable root")
for e in errors:
    print(f"lvm-root: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  info "lvm-root: native check reports LVM2_member and ROOT_NOT_NATIVE"
fi

# Every fixture (and lvm-root) in one appliance.
mapfile -t names < <("$PYTHON" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))))' "$FIXTURES/expected.json")
[ "${#names[@]}" -gt 0 ] || fail "expected.json names no fixture"
images=()
for n in "${names[@]}"; do images+=("$FIXTURES/$n.raw"); done
[ -n "$LVM" ] && images+=("$LVM")
t1=$SECONDS
AMIPORT_TIMEOUT=1200 run_amiport check --deep -f raw --output=json "${images[@]}"
[ "$RC" -eq 1 ] || { cat "$T/stderr" >&2; fail "check --deep on all fixtures exited $RC, want 1 (some are not importable)"; }
info "check --deep on ${#images[@]} images: $((SECONDS - t1))s in one appliance"
cp "$T/stdout" "$T/deep.json"

"$PYTHON" - "$T/deep.json" "$FIXTURES/expected.json" "${images[@]}" <<'PY' || fail "libguestfs and amiport disagree (above)"
import json, os, re, sys
reports = json.load(open(sys.argv[1]))
expected = json.load(open(sys.argv[2]))
images = sys.argv[3:]
bad = 0
def err(name, msg):
    global bad
    bad = 1
    print(f"{name}: {msg}", file=sys.stderr)

if not isinstance(reports, list) or len(reports) != len(images):
    print(f"want an array of {len(images)} reports", file=sys.stderr)
    sys.exit(1)
# Where each libguestfs device is: (report, partition index or 0).
drives = {r["deep"]["drive"]: i for i, r in enumerate(reports)}
def locate(dev):
    m = re.fullmatch(r"(/dev/[a-z]+?)(\d*)", dev)
    if m and m.group(1) in drives:
        return drives[m.group(1)], int(m.group(2) or 0)
    return None, None

for i, (j, path) in enumerate(zip(reports, images)):
    name = os.path.basename(path)[:-4]
    if j.get("image") != path:
        err(name, f"report {i} is for {j.get('image')}")
        continue
    deep = j["deep"]
    want = expected.get(name)
    # Partitions: libguestfs's blkid types ours, partition by partition.
    lg = {}
    for dev, t in deep["devices"].items():
        d, idx = locate(dev)
        if d == i:
            lg[idx] = None if t == "unknown" else t
        elif dev.startswith("/dev/vg0/"):
            if name != "lvm-root":
                err(name, f"logical volume {dev} is listed under this image")
        elif d is None:
            err(name, f"device {dev} is on no image")
        elif d is not None:
            err(name, f"device {dev} is listed under the wrong image")
    ours = {p["index"]: p["filesystem"] for p in j["partitions"]}
    if lg != ours:
        err(name, f"partition types: libguestfs {lg}, amiport {ours}")

    roots = deep["roots"]
    codes = {f["code"] for f in j["findings"]}
    if name == "lvm-root":
        if [r["root"] for r in roots] != ["/dev/vg0/root"]:
            err(name, f"roots {[r['root'] for r in roots]}, want ['/dev/vg0/root']")
            continue
        if deep["devices"].get("/dev/vg0/root") != "ext4":
            err(name, f"/dev/vg0/root is {deep['devices'].get('/dev/vg0/root')}, want ext4")
        r = roots[0]
        if (r["distro"], r["major_version"]) != ("debian", 12):
            err(name, f"root is {r['distro']} {r['major_version']}, want debian 12")
        mp = r["mountpoints"]
        if mp.get("/") != "/dev/vg0/root":
            err(name, f"/ is mounted from {mp.get('/')}")
        d, idx = locate(mp.get("/boot", ""))
        boot = [p for p in reports[d]["partitions"] if p["index"] == idx] if d is not None else []
        if idx != 1 or not boot or boot[0]["uuid"] != "6a3f2c1e-0b1d-4c1e-9d7a-f1c5ed000002":
            err(name, f"/boot is mounted from {mp.get('/boot')}, not a partition 1 with /boot's UUID")
        if "ROOT_FOUND_DEEP" not in codes or "ROOT_NOT_NATIVE" in codes:
            err(name, f"findings {sorted(codes)}: want ROOT_FOUND_DEEP instead of ROOT_NOT_NATIVE")
        if (j["os"]["id"], j["os"]["version"]) != ("debian", "12"):
            err(name, f"os {j['os']['id']} {j['os']['version']} after --deep, want debian 12")
        print(f"{name}: libguestfs finds the root on /dev/vg0/root, /boot on {mp.get('/boot')}")
        continue
    if not want["os_id"]:
        # No root we can read (luks-root): libguestfs finds none on this image either.
        if roots:
            err(name, f"libguestfs found roots {[r['root'] for r in roots]} where amiport found none")
        for c in want["findings"]:
            if c not in codes:
                err(name, f"{c} is gone after --deep")
        if "ROOT_FOUND_DEEP" in codes:
            err(name, "ROOT_FOUND_DEEP without a root")
        print(f"{name}: libguestfs finds no root either ({len(lg)} partitions: {sorted(lg.values(), key=str)})")
        continue
    if len(roots) != 1:
        err(name, f"libguestfs found {len(roots)} roots: {[r['root'] for r in roots]}")
        continue
    r = roots[0]
    if r["type"] != "linux" or r["distro"] != j["os"]["id"] or str(r["major_version"]) != j["os"]["version"]:
        err(name, f"libguestfs: {r['type']} {r['distro']} {r['major_version']}; amiport: "
                  f"{j['os']['id']} {j['os']['version']}")
    arch = {"x86_64": "x86_64", "aarch64": "arm64", "i386": "i386"}.get(r["arch"], r["arch"])
    if arch not in (j["arch"], "unknown"):
        err(name, f"arch: libguestfs {r['arch']}, amiport {j['arch']}")
    # The root libguestfs found is the partition we call the root.
    d, idx = locate(r["root"])
    root_parts = [p["index"] for p in j["partitions"] if p["label"] == "root"]
    if d != i or [idx] != root_parts:
        err(name, f"libguestfs's root {r['root']} is not our root partition {root_parts}")
    # Its mount points are our fstab's, each on the filesystem fstab names.
    fstab = {f["file"]: f["spec"] for f in j["fstab"] if f["file"].startswith("/")}
    mp = r["mountpoints"]
    if set(mp) != set(fstab):
        err(name, f"mount points {sorted(mp)}, fstab {sorted(fstab)}")
    for file, dev in mp.items():
        spec = fstab.get(file, "")
        d, idx = locate(dev)
        if d is None:
            err(name, f"{file} on {dev}, no image's partition")
            continue
        part = [p for p in reports[d]["partitions"] if p["index"] == idx]
        if spec.startswith("UUID="):
            if not part or (part[0]["uuid"] or "").lower() != spec[5:].lower():
                err(name, f"{file}: fstab says {spec}, libguestfs mounts {dev}")
        elif re.fullmatch(r"/dev/[a-z]+\d+", spec):
            if str(idx) != re.sub(r"^/dev/[a-z]+", "", spec):
                err(name, f"{file}: fstab says {spec}, libguestfs mounts {dev}")
        else:
            err(name, f"{file}: fstab spec {spec} not checked")
    for c in want["findings"]:
        if c not in codes:
            err(name, f"{c} is gone after --deep")
    print(f"{name}: libguestfs agrees ({r['root']}, {len(lg)} partitions, mount points {sorted(mp)})")
sys.exit(bad)
PY
info "ok ($((SECONDS - t0))s)"
