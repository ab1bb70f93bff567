# plan.sh - amiport plan check|run|status against tests/fakeaws.
#
# A plan of four VMs: the BIOS fixture alone, the UEFI fixture with an ext4
# data disk (two snapshots, one AMI), a corrupt qcow2 (failed) and a disk
# with no bootloader (refused). check's table and exit code; errors that
# name the line, the field and the value; run --all --parallel 2 writes one
# ledger a line, status counts them; the AMIs' snapshots read back equal to
# their disks; a rerun, and a rerun with the resume state lost, create no
# second snapshot or AMI (the emulator's counts).
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl mkfs.ext4
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws

P=$T/plan
mkdir -p "$P"
cp --sparse=always "$FIXTURES/x86_64-bios-mbr.raw" "$P/bios.raw"
cp --sparse=always "$FIXTURES/x86_64-uefi-gpt.raw" "$P/uefi.raw"
cp --sparse=always "$FIXTURES/no-bootloader.raw" "$P/noboot.raw"
truncate -s 16M "$P/data.raw"
mkfs.ext4 -q -F -L planData "$P/data.raw" || fail "mkfs.ext4 failed"
qemu-img create -q -f qcow2 "$P/broken.qcow2" 64M || fail "qemu-img create failed"
# an L1 table offset past the end of the file
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of="$P/broken.qcow2" bs=1 seek=40 conv=notrunc status=none

cat >"$P/fleet.jsonl" <<'JSONL'
{"name": "web1", "disks": ["bios.raw"], "ami_name": "fleet web1", "tags": {"team": "web"}, "options": {"sparse": "holes"}}
{"name": "db1", "disks": ["uefi.raw", "data.raw"], "ami_name": "fleet db1", "description": "db with data", "options": {"sparse": "holes", "volume_type": "gp2"}}

{"name": "broken", "disks": ["broken.qcow2"], "ami_name": "fleet broken"}
{"name": "noboot", "disks": ["noboot.raw"], "ami_name": "fleet noboot"}
JSONL

# --- validation: errors name the line, the field and the value ---
bad() { # CONTENT EXPECTED-MESSAGE-PART
  printf '%s\n' "$1" >"$T/bad.jsonl"
  expect_rc 1 plan check "$T/bad.jsonl"
  grep -qF -- "$2" "$T/stderr" || fail "plan check of '$1': expected '$2', got: $(cat "$T/stderr")"
}
bad '{"name": "a", "disks": ["x"], "ami_name": "abc"}
{"name": "a", "disks": ["y"], "ami_name": "abd"}' "bad.jsonl:2: field 'name': 'a' is line 1's name already"
bad '{"name": "a", "disks": [], "ami_name": "abc"}' "bad.jsonl:1: field 'disks': [] is empty"
bad '{"name": "a", "ami_name": "abc"}' "bad.jsonl:1: field 'disks': missing"
bad '{"name": "a", "disks": ["x"]}' "bad.jsonl:1: field 'ami_name': missing"
bad '{"name": "../a", "disks": ["x"], "ami_name": "abc"}' "field 'name': '../a' must be"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc", "options": {"sparse": "maybe"}}' \
  "bad.jsonl:1: field 'options.sparse': 'maybe' is not one of none holes zeros"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc", "options": {"sprase": "holes"}}' \
  "field 'options.sprase': no such import option"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc", "options": {"jobs": 0}}' \
  "field 'options.jobs': 0 is not a whole number from 1 to 1024"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc", "tags": {"amiport:plan": "x"}}' \
  "field 'tags.amiport:plan': the amiport: keys are the plan's own"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc", "colour": 1}' "field 'colour': unknown"
bad '{"name": "a", "disks": ["x"], "ami_name": "abc"} {' "bad.jsonl:1: not one JSON object"
bad '[1, 2]' "bad.jsonl:1: a line must be a JSON object, not array"
printf '\n\n' >"$T/bad.jsonl"
expect_rc 1 plan check "$T/bad.jsonl"
stderr_has "the plan has no lines"
expect_rc 2 plan run "$P/fleet.jsonl" --all
stderr_has "--results LOC is required"
expect_rc 2 plan run "$P/fleet.jsonl" --task 9 --results "$T/r"
stderr_has "the plan has 4 lines"
info "validation: errors name the line, the field and the value"

# --- check: a table, and exit 1 because two lines would be refused ---
expect_rc 1 plan check "$P/fleet.jsonl"
grep -E '^0 +web1 +1 +x86_64 +legacy-bios +import$' "$T/stdout" >/dev/null || fail "check: web1: $(cat "$T/stdout")"
grep -E '^1 +db1 +2 +x86_64 +uefi +import$' "$T/stdout" >/dev/null || fail "check: db1: $(cat "$T/stdout")"
grep -E '^2 +broken +1 .* refused: ' "$T/stdout" >/dev/null || fail "check: broken: $(cat "$T/stdout")"
grep -E '^3 +noboot +1 .* refused: .*will not boot on EC2 \(.*NO_BOOTLOADER' "$T/stdout" >/dev/null ||
  fail "check: noboot: $(cat "$T/stdout")"
grep -q '^4 lines: 2 to import, 2 refused.$' "$T/stdout" || fail "check: summary: $(cat "$T/stdout")"
info "check: 2 to import, 2 refused, exit 1"

# --- run --all --parallel 2 ---
R=$T/results
expect_rc 1 plan run "$P/fleet.jsonl" --all --parallel 2 --results "$R"
for n in web1 db1 broken noboot; do
  [ -s "$R/$n.json" ] || fail "no ledger $R/$n.json: $(cat "$T/stderr")"
done
[ -z "$(ls -A "$R" | grep -v '\.json$')" ] || fail "temporary files left in $R: $(ls -A "$R")"
[ "$(json_get "$R/web1.json" state)" = done ] || fail "web1: $(cat "$R/web1.json")"
[ "$(json_get "$R/db1.json" state)" = done ] || fail "db1: $(cat "$R/db1.json")"
[ "$(json_get "$R/broken.json" state)" = failed ] || fail "broken: $(cat "$R/broken.json")"
[ "$(json_get "$R/noboot.json" state)" = refused ] || fail "noboot: $(cat "$R/noboot.json")"
[ "$(json_get "$R/noboot.json" error code)" = refused ] || fail "noboot's error code: $(cat "$R/noboot.json")"
json_get "$R/broken.json" error message | grep -q broken.qcow2 || fail "broken's error does not name the image: $(cat "$R/broken.json")"
web_ami=$(json_get "$R/web1.json" image_id)
db_ami=$(json_get "$R/db1.json" image_id)
[[ $web_ami == ami-* && $db_ami == ami-* && $web_ami != "$db_ami" ]] || fail "AMIs: $web_ami $db_ami"
snaps=$(/usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["snapshot_ids"]))' "$R/db1.json")
set -- $snaps
[ $# -eq 2 ] || fail "db1 has $# snapshots: $snaps"
db_root=$1 db_data=$2
web_snap=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_ids"][0])' "$R/web1.json")
[ "$(json_get "$R/web1.json" bytes)" -gt 0 ] || fail "web1 uploaded no bytes"

# the AMIs: the plan's tags, the line's options, the two disks mapped
awsx ec2 describe-images --image-ids "$web_ami" "$db_ami" >"$T/di.json" || fail "describe-images failed"
/usr/bin/python3 - "$T/di.json" "$web_ami" "$db_ami" "$db_root" "$db_data" <<'PY' || fail "describe-images: $(cat "$T/di.json")"
import json, sys
imgs = {i["ImageId"]: i for i in json.load(open(sys.argv[1]))["Images"]}
web, db = imgs[sys.argv[2]], imgs[sys.argv[3]]
tags = {t["Key"]: t["Value"] for t in web.get("Tags", [])}
assert web["Name"] == "fleet web1", web["Name"]
assert tags["team"] == "web" and tags["amiport:plan"] == "fleet" and tags["amiport:line"] == "web1", tags
assert len(tags["amiport:plan-digest"]) == 64, tags
assert db["Name"] == "fleet db1" and db.get("BootMode") == "uefi", db
assert db.get("Description") == "db with data", db
m = {b["DeviceName"]: b["Ebs"] for b in db["BlockDeviceMappings"]}
assert m["/dev/xvda"]["SnapshotId"] == sys.argv[4] and m["/dev/sdb"]["SnapshotId"] == sys.argv[5], m
assert m["/dev/xvda"]["VolumeType"] == "gp2", m
PY

snapshot_equals "$web_snap" "$P/bios.raw"
snapshot_equals "$db_root" "$P/uefi.raw"
snapshot_equals "$db_data" "$P/data.raw"
info "run --all --parallel 2: 2 done (3 snapshots read back equal), 1 failed, 1 refused"

# --- status ---
expect_rc 1 plan status "$P/fleet.jsonl" --results "$R"
grep -q '^4 lines: 2 done, 1 failed, 1 refused, 0 pending' "$T/stdout" || fail "status: $(cat "$T/stdout")"
grep -q '^  failed broken: .*broken.qcow2' "$T/stdout" || fail "status: no reason for broken: $(cat "$T/stdout")"
expect_rc 1 plan status "$P/fleet.jsonl" --results "$R" --output=json
cp "$T/stdout" "$T/status.json"
[ "$(json_get "$T/status.json" counts done)" = 2 ] && [ "$(json_get "$T/status.json" counts failed)" = 1 ] &&
  [ "$(json_get "$T/status.json" counts refused)" = 1 ] || fail "status json: $(cat "$T/status.json")"
expect_rc 1 plan status "$P/fleet.jsonl" --results "$T/nothing"
grep -q '4 pending' "$T/stdout" || fail "status without ledgers: $(cat "$T/stdout")"
info "status: counts, reasons, exit 1"

# --- idempotence: a rerun makes no second snapshot or AMI ---
before=$(fakeaws_made)
expect_rc 1 plan run "$P/fleet.jsonl" --all --parallel 2 --results "$R"
[ "$(fakeaws_made)" = "$before" ] || fail "a rerun changed the counts (snapshots, RegisterImage): $before -> $(fakeaws_made)"
[ "$(json_get "$R/web1.json" already_done)" = true ] || fail "rerun: web1 not already done: $(cat "$R/web1.json")"
[ "$(json_get "$R/db1.json" image_id)" = "$db_ami" ] || fail "rerun: db1's AMI changed"

# the resume state lost (another node runs the task): the same ClientTokens
# find the same snapshots, and the tagged AMI is reused
rm -rf "$XDG_STATE_HOME/amiport"
SLURM_ARRAY_TASK_ID=1 "$AMIPORT" plan run "$P/fleet.jsonl" --task-from-env --results "$R" >"$T/stdout" 2>"$T/stderr" ||
  fail "task 1 from the environment failed: $(cat "$T/stderr")"
[ "$(fakeaws_made)" = "$before" ] || fail "a rerun without state changed the counts: $before -> $(fakeaws_made)"
[ "$(json_get "$R/db1.json" image_id)" = "$db_ami" ] || fail "rerun without state: db1's AMI is not $db_ami: $(cat "$R/db1.json")"
[ "$(json_get "$R/db1.json" image_reused)" = true ] || fail "rerun without state: the AMI was not reused"
[ "$(/usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["snapshot_ids"]))' "$R/db1.json")" = "$snaps" ] ||
  fail "rerun without state: other snapshots: $(cat "$R/db1.json")"
info "idempotence: reruns (with and without resume state) made no snapshot or AMI"

# --- a task killed midway: the rerun continues the same pending snapshot ---
cp --sparse=always "$FIXTURES/x86_64-bios-mbr.raw" "$P/late.raw"
printf '{"name": "late", "disks": ["late.raw"], "ami_name": "fleet late", "options": {"jobs": 4}}\n' >>"$P/fleet.jsonl"
before=$(fakeaws_made)
kill_midway "$(( $(stat -c %s "$P/late.raw") / 524288 ))" "$T/late.err" plan run "$P/fleet.jsonl" --task 4 --results "$R"
late_snap=$KILLED_SNAP
[ ! -e "$R/late.json" ] || fail "the killed task wrote a ledger: $(cat "$R/late.json")"
amiport_ok plan run "$P/fleet.jsonl" --task 4 --results "$R"
[ "$(json_get "$R/late.json" state)" = done ] || fail "late: $(cat "$R/late.json")"
[ "$(json_get "$R/late.json" resumed)" = true ] || fail "late: the rerun did not resume: $(cat "$R/late.json")"
[ "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_ids"][0])' "$R/late.json")" = "$late_snap" ] ||
  fail "late: the rerun did not continue $late_snap: $(cat "$R/late.json")"
snapshot_equals "$late_snap" "$P/late.raw"
set -- $before
[ "$(fakeaws_made)" = "$(($1 + 1)) $(($2 + 1))" ] || fail "late: counts $before -> $(fakeaws_made), expected one more snapshot and AMI"
# the plan changed (a line added): its digest tags the new AMI, and status counts 5 lines
expect_rc 1 plan status "$P/fleet.jsonl" --results "$R"
grep -q '^5 lines: 3 done, 1 failed, 1 refused, 0 pending' "$T/stdout" || fail "status: $(cat "$T/stdout")"
info "a task killed midway: the rerun resumed $late_snap, one snapshot and one AMI in all"

# --- an OVA as a line's one disk: every disk of it, its bootable disk the root ---
mkdir -p "$P/pkg"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$P/data.raw" "$P/pkg/disk1.vmdk" &&
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$P/bios.raw" "$P/pkg/disk2.vmdk" ||
  fail "qemu-img convert to vmdk failed"
mk_ova "$P/vm.ova" "$P/pkg/disk1.vmdk" "$P/pkg/disk2.vmdk"
mk_ova "$P/data2.ova" "$P/pkg/disk1.vmdk" "$P/pkg/disk1.vmdk"
cat >"$P/ova.jsonl" <<'JSONL'
{"name": "ova", "disks": ["vm.ova"], "ami_name": "fleet ova", "options": {"sparse": "holes"}}
{"name": "noroot", "disks": ["data2.ova"], "ami_name": "fleet noroot"}
{"name": "ovamix", "disks": ["vm.ova", "data.raw"], "ami_name": "fleet ovamix"}
JSONL
expect_rc 1 plan check "$P/ova.jsonl"
grep -E '^0 +ova +1 +x86_64 +legacy-bios +import$' "$T/stdout" >/dev/null || fail "check: ova: $(cat "$T/stdout")"
grep -E '^1 +noroot .* refused: .*none of its 2 disks has a bootloader; set options.root_disk' "$T/stdout" >/dev/null ||
  fail "check: noroot: $(cat "$T/stdout")"
grep -E '^2 +ovamix .* refused: .*an OVA of 2 disks is a VM.s only disk' "$T/stdout" >/dev/null ||
  fail "check: ovamix: $(cat "$T/stdout")"
amiport_ok plan run "$P/ova.jsonl" --task 0 --results "$R"
[ "$(json_get "$R/ova.json" state)" = done ] || fail "ova: $(cat "$R/ova.json")"
set -- $(/usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["snapshot_ids"]))' "$R/ova.json")
[ $# -eq 2 ] || fail "ova: $# snapshots, expected the OVA's 2: $(cat "$R/ova.json")"
snapshot_equals "$1" "$P/bios.raw"  # the disk with a bootloader maps first,
snapshot_equals "$2" "$P/data.raw"  # the other after it
info "an OVA line: both its disks imported, the bootable one as the root"
