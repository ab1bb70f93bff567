# plan_slurm.sh - plan submit --engine slurm on a real single-node Slurm
# (start_slurm) against tests/fakeaws: a plan of six VMs (fixtures, a
# two-disk VM, a corrupt image) runs as an array of 2 at a time; status
# shows 5 done and 1 failed; every done AMI's snapshots read back equal to
# their disks; an array element cancelled midway (scancel) and the array
# submitted again finish with no second snapshot or AMI; plan run --all
# --parallel 3 then gives the same results.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl mkfs.ext4
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
ensure_fixtures 1
start_slurm
start_fakeaws

P=$T/plan
mkdir -p "$P"
for f in x86_64-bios-mbr x86_64-uefi-gpt x86_64-hybrid-gpt aarch64-uefi-gpt; do
  cp --sparse=always "$FIXTURES/$f.raw" "$P/$f.raw"
done
qemu-img convert -O qcow2 "$FIXTURES/x86_64-bios-mbr.raw" "$P/bios2.qcow2" || fail "qemu-img convert failed"
truncate -s 16M "$P/data.raw"
mkfs.ext4 -q -F -L fleetData "$P/data.raw" || fail "mkfs.ext4 failed"
qemu-img create -q -f qcow2 "$P/broken.qcow2" 64M || fail "qemu-img create failed"
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of="$P/broken.qcow2" bs=1 seek=40 conv=notrunc status=none
cat >"$P/fleet.jsonl" <<'JSONL'
{"name": "bios", "disks": ["x86_64-bios-mbr.raw"], "ami_name": "fleet bios", "options": {"sparse": "holes", "jobs": 1}}
{"name": "db", "disks": ["x86_64-uefi-gpt.raw", "data.raw"], "ami_name": "fleet db", "options": {"sparse": "holes"}}
{"name": "broken", "disks": ["broken.qcow2"], "ami_name": "fleet broken"}
{"name": "hybrid", "disks": ["x86_64-hybrid-gpt.raw"], "ami_name": "fleet hybrid", "options": {"sparse": "holes"}}
{"name": "arm", "disks": ["aarch64-uefi-gpt.raw"], "ami_name": "fleet arm", "options": {"sparse": "holes"}}
{"name": "bios2", "disks": ["bios2.qcow2"], "ami_name": "fleet bios2", "options": {"sparse": "holes"}}
JSONL
R=$T/results

snap_blocks() {
  fakeaws_ctl GET stats | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"].get(sys.argv[1], {}).get("blocks", 0))' "$1"
}

# --- the array, with task 0 cancelled midway ---
fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "slow", "delay_ms": 250}]' >/dev/null
amiport_ok plan submit "$P/fleet.jsonl" --engine slurm --results "$R" --concurrency 2
job=$(cat "$T/stdout")
[[ $job =~ ^[0-9]+$ ]] || fail "plan submit printed '$job', not a job id"
cancelled=
for _ in $(seq 600); do
  cancelled=$(grep -o 'snap-[0-9a-f]*' "$R/slurm-${job}_0.out" 2>/dev/null | head -1)
  [ -n "$cancelled" ] && [ "$(snap_blocks "$cancelled")" -ge 4 ] && break
  sleep 0.1
done
[ -n "$cancelled" ] || fail "task 0 never started a snapshot: $(cat "$R/slurm-${job}_0.out" 2>/dev/null)"
scancel "${job}_0" || fail "scancel ${job}_0 failed"
fakeaws_ctl POST faults '[]' >/dev/null
slurm_wait "$job"
[ "$(json_get "$R/bios.json" state 2>/dev/null)" != done ] || fail "the cancelled task says done"
info "Slurm array $job: task 0 cancelled with $(snap_blocks "$cancelled") blocks in $cancelled"

# --- submitted again: everything finishes, nothing made twice ---
amiport_ok plan submit "$P/fleet.jsonl" --engine slurm --results "$R" --concurrency 2
job2=$(cat "$T/stdout")
slurm_wait "$job2"
expect_rc 1 plan status "$P/fleet.jsonl" --results "$R"
grep -q '^6 lines: 5 done, 1 failed, 0 refused, 0 pending' "$T/stdout" ||
  fail "status: $(cat "$T/stdout"); task logs: $(tail -n 3 "$R"/slurm-*.out)"
grep -q '^  failed broken: .*broken.qcow2' "$T/stdout" || fail "status: no reason for broken: $(cat "$T/stdout")"
first=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_ids"][0])' "$R/bios.json")
[ "$first" = "$cancelled" ] || fail "task 0 did not continue $cancelled but made $first"
[ "$(fakeaws_made)" = "6 5" ] || fail "snapshots and RegisterImage calls: $(fakeaws_made), expected 6 and 5"
info "resubmitted as $job2: 5 done, 1 failed; task 0 continued $cancelled; 6 snapshots, 5 AMIs"

# --- every done AMI's snapshots read back equal to their disks ---
readback() { # SNAP FILE: botocore reads it all, the AWS CLI itself its first and last blocks
  snapshot_equals "$1" "$2"
  awscli_spot "$1" "$2"
}
snaps() { /usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["snapshot_ids"]))' "$R/$1.json"; }
readback "$(snaps bios)" "$P/x86_64-bios-mbr.raw"
set -- $(snaps db)
readback "$1" "$P/x86_64-uefi-gpt.raw"
readback "$2" "$P/data.raw"
readback "$(snaps hybrid)" "$P/x86_64-hybrid-gpt.raw"
readback "$(snaps arm)" "$P/aarch64-uefi-gpt.raw"
qemu-img convert -O raw "$P/bios2.qcow2" "$T/bios2.raw" || fail "qemu-img convert failed"
readback "$(snaps bios2)" "$T/bios2.raw"
info "the 6 snapshots of the 5 AMIs read back equal to their disks (botocore, and awscli's spot checks)"

# --- plan run --all --parallel 3: the same results ---
R2=$T/results-local
expect_rc 1 plan run "$P/fleet.jsonl" --all --parallel 3 --results "$R2"
for n in bios db broken hybrid arm bios2; do
  [ "$(json_get "$R/$n.json" state)" = "$(json_get "$R2/$n.json" state)" ] &&
    [ "$(json_get "$R/$n.json" image_id)" = "$(json_get "$R2/$n.json" image_id)" ] ||
    fail "$n: Slurm gave $(cat "$R/$n.json"), --all gave $(cat "$R2/$n.json")"
done
[ "$(fakeaws_made)" = "6 5" ] || fail "--all made more: $(fakeaws_made)"
info "plan run --all --parallel 3: the same states and AMIs as the Slurm run"
