# import_multi.sh - several disks become one AMI (amiport import ROOT DATA...,
# and every disk of an OVA) in tests/fakeaws, read back with botocore.
#
# A two-disk OVA (the bootable fixture and an ext4 data disk with a known
# UUID) and the same two disks as loose images each import as one AMI with
# two mappings: Debian's awscli shows the devices and the sizes, and every
# snapshot reads back equal to its disk. Then: --device, an OVA whose root
# cannot be told, check --vm's FSTAB_UNRESOLVED on a synthetic root, an
# import killed midway that resumes both disks, a refused request whose
# snapshots a rerun continues, and a damaged disk whose failure deletes the
# snapshots the run started (or keeps them with --keep-partial).
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl tar mkfs.ext4
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws

root=$FIXTURES/x86_64-bios-mbr.raw
rsize=$(stat -c %s "$root")
DATA_UUID=5a1e7c2d-0b3f-4e6a-9d21-7c4b8e0f1a23
mkdir -p "$T/datafiles"
head -c 200000 /dev/urandom >"$T/datafiles/blob"
echo "data disk" >"$T/datafiles/hello.txt"
truncate -s 24M "$T/data.raw"
mkfs.ext4 -q -F -U "$DATA_UUID" -L amidata -d "$T/datafiles" "$T/data.raw" ||
  fail "mkfs.ext4 -d failed"
dsize=$(stat -c %s "$T/data.raw")

readback() {
  /usr/bin/python3 "$SRCDIR/tests/ebs_readback.py" "$FAKEAWS_URL" "$@" 2>"$T/rb.err" ||
    { cat "$T/rb.err" >&2; fail "reading back $1 failed"; }
}

# disk_field JSON INDEX FIELD - a field of disks[INDEX] in the import's JSON
disk_field() {
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["disks"][int(sys.argv[2])][sys.argv[3]])' "$@"
}

# check_ami JSON DEV2 - the AMI maps the root at /dev/xvda and the data disk
# at DEV2 with their sizes in GiB; both snapshots read back equal.
check_ami() {
  local j=$1 dev2=$2 ami s0 s1
  ami=$(json_get "$j" image_id)
  [[ $ami == ami-* ]] || fail "no AMI: $(cat "$j")"
  s0=$(disk_field "$j" 0 snapshot_id)
  s1=$(disk_field "$j" 1 snapshot_id)
  [ "$(json_get "$j" snapshot_id)" = "$s0" ] || fail "snapshot_id is not the root's ($s0)"
  [ "$(disk_field "$j" 0 device_name)" = /dev/xvda ] && [ "$(disk_field "$j" 1 device_name)" = "$dev2" ] ||
    fail "devices in the JSON: $(cat "$j")"
  awsx ec2 describe-images --image-ids "$ami" >"$T/di.json" || fail "describe-images $ami failed"
  /usr/bin/python3 - "$T/di.json" "$s0" "$s1" "$dev2" "$(((rsize + (1 << 30) - 1) >> 30))" \
    "$(((dsize + (1 << 30) - 1) >> 30))" <<'PY' || fail "describe-images: $(cat "$T/di.json")"
import json, sys
img = json.load(open(sys.argv[1]))["Images"][0]
m = {b["DeviceName"]: b["Ebs"] for b in img["BlockDeviceMappings"]}
assert img["RootDeviceName"] == "/dev/xvda", img["RootDeviceName"]
assert len(m) == 2, m
assert m["/dev/xvda"]["SnapshotId"] == sys.argv[2], m
assert m[sys.argv[4]]["SnapshotId"] == sys.argv[3], m
assert m["/dev/xvda"]["VolumeSize"] == int(sys.argv[5]), m
assert m[sys.argv[4]]["VolumeSize"] == int(sys.argv[6]), m
assert all(e["VolumeType"] == "gp2" for e in m.values()), m
PY
  readback "$s0" "$T/back0.raw" "$rsize" >/dev/null
  cmp -s "$root" "$T/back0.raw" || fail "the root snapshot $s0 differs from its disk"
  readback "$s1" "$T/back1.raw" "$dsize" >/dev/null
  cmp -s "$T/data.raw" "$T/back1.raw" || fail "the data snapshot $s1 differs from its disk"
  awscli_spot "$s0" "$root"
  awscli_spot "$s1" "$T/data.raw"
}

# --- two loose images ---
amiport_ok import --output=json -j 8 --volume-type gp2 --name loose "$root" "$T/data.raw"
cp "$T/stdout" "$T/loose.json"
check_ami "$T/loose.json" /dev/sdb
grep -q FSTAB_UNRESOLVED "$T/stderr" && fail "the fixture's fstab is resolved on its own disk: $(cat "$T/stderr")"
# the same command again: the result, nothing uploaded
amiport_ok import --output=json --volume-type gp2 --name loose "$root" "$T/data.raw"
[ "$(json_get "$T/stdout" already_done)" = true ] || fail "the rerun did not say it was done"
[ "$(json_get "$T/stdout" image_id)" = "$(json_get "$T/loose.json" image_id)" ] || fail "the rerun gave another AMI"
# human output lists each disk
rm -rf "$XDG_STATE_HOME"/amiport
amiport_ok import --volume-type gp2 --device "$T/data.raw=/dev/sdf" --name human "$root" "$T/data.raw"
grep -q "^Disk /dev/xvda" "$T/stdout" && grep -q "^Disk /dev/sdf .*data.raw: snapshot snap-" "$T/stdout" &&
  grep -q "^AMI: *ami-" "$T/stdout" || fail "human output: $(cat "$T/stdout")"
expect_rc 2 import --name x --device "$T/nothere.raw=/dev/sdf" "$root" "$T/data.raw"
grep -q "no disk" "$T/stderr" || fail "an unknown --device IMAGE: $(cat "$T/stderr")"
expect_rc 2 import --name x "$root" "$T/data.raw" "$T/data.raw"
grep -q "are the same file" "$T/stderr" || fail "the same disk twice: $(cat "$T/stderr")"

# --- a two-disk OVA: the root is the disk with a bootloader, wherever it is ---
mkdir -p "$T/pkg"
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$T/data.raw" "$T/pkg/disk1.vmdk"
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$root" "$T/pkg/disk2.vmdk"
mk_ova "$T/vm.ova" "$T/pkg/disk1.vmdk" "$T/pkg/disk2.vmdk"
rm -rf "$XDG_STATE_HOME"/amiport
amiport_ok import --output=json -j 8 --volume-type gp2 --name ova "$T/vm.ova"
cp "$T/stdout" "$T/ova.json"
[ "$(disk_field "$T/ova.json" 0 source)" = 2 ] && [ "$(disk_field "$T/ova.json" 1 source)" = 1 ] ||
  fail "the OVA's root (disk 2, the one with a bootloader) is not mapped first: $(cat "$T/ova.json")"
check_ami "$T/ova.json" /dev/sdb
# two data disks: no root to tell
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$T/data.raw" "$T/pkg/disk3.vmdk"
mk_ova "$T/noroot.ova" "$T/pkg/disk1.vmdk" "$T/pkg/disk3.vmdk"
expect_rc 2 import --name x "$T/noroot.ova"
grep -q "none of its 2 disks has a bootloader; pass --root-disk" "$T/stderr" ||
  fail "an OVA with no bootable disk: $(cat "$T/stderr")"
info "loose images and OVA: one AMI, two mappings, both snapshots read back"

# --- check --vm: the root's fstab against every disk ---
# a synthetic root whose fstab names the data disk by UUID, and one that is nowhere
mkdir -p "$T/rootfs/etc" "$T/rootfs/boot"
cat >"$T/rootfs/etc/fstab" <<EOF
LABEL=synroot / ext4 defaults 0 1
UUID=$DATA_UUID /data ext4 defaults 0 2
UUID=0bad0bad-0000-4000-8000-000000000000 /srv ext4 defaults 0 2
LABEL=gone /opt ext4 defaults,nofail 0 2
EOF
truncate -s 32M "$T/syn.raw"
mkfs.ext4 -q -F -L synroot -d "$T/rootfs" "$T/syn.raw" || fail "mkfs.ext4 of the synthetic root failed"
"$AMIPORT" check --output=json --vm "$T/syn.raw" "$T/data.raw" >"$T/vm.json" 2>"$T/vm.err"
/usr/bin/python3 - "$T/vm.json" <<'PY' || fail "check --vm: $(cat "$T/vm.json" "$T/vm.err")"
import json, sys
reps = json.load(open(sys.argv[1]))
f = [x for x in reps[0]["findings"] if x["code"] == "FSTAB_UNRESOLVED"]
assert len(f) == 2, f
w = [x for x in f if "/srv" in x["message"]][0]
i = [x for x in f if "/opt" in x["message"]][0]
assert w["severity"] == "warning" and "0bad0bad" in w["message"], w
assert i["severity"] == "info", i
assert not any(x["code"] == "FSTAB_UNRESOLVED" for x in reps[1]["findings"]), reps[1]
PY
# without the data disk its line is unresolved too
"$AMIPORT" check --output=json --vm "$T/syn.raw" >"$T/one.json" 2>/dev/null
grep -q "$DATA_UUID" "$T/one.json" || fail "check --vm of the root alone did not miss the data disk"
# without --vm: no such finding
"$AMIPORT" check --output=json "$T/syn.raw" "$T/data.raw" >"$T/novm.json" 2>/dev/null
grep -q FSTAB_UNRESOLVED "$T/novm.json" && fail "check without --vm gave FSTAB_UNRESOLVED"
info "check --vm: FSTAB_UNRESOLVED for the UUID and the LABEL no disk has"

# --- an import killed midway resumes both disks ---
rm -rf "$XDG_STATE_HOME"/amiport
fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "slow", "delay_ms": 100}]' >/dev/null
"$AMIPORT" import --output=json -j 4 --name resumed "$root" "$T/data.raw" >"$T/killed.out" 2>"$T/killed.err" &
pid=$!
snaps=
for _ in $(seq 300); do
  snaps=$(grep -o 'snap-[0-9a-f]*' "$T/killed.err" | sort -u)
  if [ "$(echo "$snaps" | grep -c snap-)" -eq 2 ]; then
    held=$(fakeaws_ctl GET stats | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["snapshots"]
print(min(s.get(x, {}).get("blocks", 0) for x in sys.argv[1:]))' $snaps 2>/dev/null)
    [ "${held:-0}" -ge 4 ] && break # (no answer while the emulator is busy: ask again)
  fi
  sleep 0.1
done
kill -9 "$pid"
wait "$pid" 2>/dev/null
[ "$(echo "$snaps" | grep -c snap-)" -eq 2 ] || fail "the killed import did not start both snapshots: $(cat "$T/killed.err")"
fakeaws_ctl POST faults '[]' >/dev/null
amiport_ok import --output=json -j 8 --volume-type gp2 --name resumed "$root" "$T/data.raw"
cp "$T/stdout" "$T/resumed.json"
[ "$(json_get "$T/resumed.json" resumed)" = true ] || fail "the rerun did not resume"
for k in 0 1; do
  echo "$snaps" | grep -qx "$(disk_field "$T/resumed.json" $k snapshot_id)" ||
    fail "disk $k did not resume its snapshot ($snaps): $(cat "$T/resumed.json")"
done
grep -c "resuming snapshot" "$T/stderr" | grep -qx 2 || fail "the rerun did not resume both disks: $(cat "$T/stderr")"
check_ami "$T/resumed.json" /dev/sdb
info "killed midway: both snapshots resumed"

# --- a refused request: the snapshots stay, and the same command continues them ---
rm -rf "$XDG_STATE_HOME"/amiport
# the second StartSnapshot gets an answer with no snapshot id
fakeaws_ctl POST faults '[{"op": "StartSnapshot", "kind": "answer", "every": 2, "count": 1, "body": "{}"}]' >/dev/null
expect_rc 1 import --name refused "$root" "$T/data.raw"
fakeaws_ctl POST faults '[]' >/dev/null
first=$(grep -o 'snap-[0-9a-f]*' "$T/stderr" | head -1)
[ -n "$first" ] || fail "the refused import started no snapshot: $(cat "$T/stderr")"
grep -q "deleted" "$T/stderr" && fail "a refused request deleted snapshots: $(cat "$T/stderr")"
amiport_ok import --output=json --name refused "$root" "$T/data.raw"
[ "$(disk_field "$T/stdout" 0 snapshot_id)" = "$first" ] ||
  fail "the rerun did not continue $first: $(cat "$T/stdout")"
info "a refused request: $first kept, and the rerun continued it"

# --- a source that fails for good: the snapshots this run started are deleted ---
rm -rf "$XDG_STATE_HOME"/amiport
# the data disk as a compressed qcow2 whose last compressed cluster is
# damaged: it opens and checks, and fails when the upload reaches it
qemu-img convert -c -f raw -O qcow2 "$T/data.raw" "$T/damaged.qcow2" || fail "qemu-img convert -c failed"
/usr/bin/python3 - "$T/damaged.qcow2" <<'PY' || fail "no compressed cluster to damage"
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(72)
cluster_bits, = struct.unpack(">I", h[20:24])
l1_size, l1_off = struct.unpack(">IQ", h[36:48])
f.seek(l1_off)
last = None
for e in struct.unpack(">%dQ" % l1_size, f.read(8 * l1_size)):
    if e & 0x00fffffffffffe00:
        f.seek(e & 0x00fffffffffffe00)
        for x in struct.unpack(">%dQ" % (1 << (cluster_bits - 3)), f.read(1 << cluster_bits)):
            if x & (1 << 62):
                last = x & ((1 << (62 - (cluster_bits - 8))) - 1)
if last is None:
    sys.exit(1)
f.seek(last)
f.write(b"\xff" * 64)  # deflate block type 3: reserved, invalid
PY
expect_rc 1 import --name failed "$root" "$T/damaged.qcow2"
first=$(grep -o 'snap-[0-9a-f]*' "$T/stderr" | head -1)
[ -n "$first" ] || fail "the failed import started no snapshot: $(cat "$T/stderr")"
grep -q "deleted snapshot(s) $first" "$T/stderr" || fail "the failed import did not say it deleted $first: $(cat "$T/stderr")"
awsx ec2 describe-snapshots --snapshot-ids "$first" >"$T/ds.json" 2>"$T/ds.err" &&
  fail "$first still exists after the failed import: $(cat "$T/ds.json")"
grep -q "NotFound" "$T/ds.err" || fail "describe-snapshots $first: $(cat "$T/ds.err")"
# --keep-partial keeps it
expect_rc 1 import --keep-partial --name failed "$root" "$T/damaged.qcow2"
kept=$(grep -o 'snap-[0-9a-f]*' "$T/stderr" | head -1)
grep -q "kept snapshot(s) $kept.*--keep-partial" "$T/stderr" || fail "--keep-partial: $(cat "$T/stderr")"
awsx ec2 describe-snapshots --snapshot-ids "$kept" >"$T/ds.json" || fail "--keep-partial did not keep $kept"
info "a damaged disk: the started snapshots deleted, or kept with --keep-partial"
