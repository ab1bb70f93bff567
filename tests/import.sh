# import.sh - amiport import into tests/fakeaws, read back with Debian's awscli.
#
# The bootable fixtures (raw, qcow2, VMDK) are imported and every block the
# snapshot holds is fetched (botocore's EBS client, checksums verified; Debian's
# awscli lists the blocks and fetches the first and last) and compared with
# the source; the AMI's architecture, boot mode and ENA flag must be
# what `check` derived. Then: the three sparse modes, errors (bad
# signature, a corrupted block on the wire, an expired token, a disk that
# will not boot), injected throttling / 500s / dropped connections, and an
# import killed halfway that resumes and sends only the rest.
. "$SRCDIR/tests/lib.sh"
setup_tmp
require_cmd qemu-img curl
[ -x /usr/bin/aws ] || skip "Debian's awscli (/usr/bin/aws) is not installed"
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"
ensure_fixtures 1
start_fakeaws --expired-token EXPIREDTOKEN

# readback SNAP OUT SIZE - rebuilds the snapshot as a raw file of SIZE bytes
# with botocore's EBS client (every block, checksums verified); prints the
# number of blocks the snapshot holds.
readback() {
  /usr/bin/python3 "$SRCDIR/tests/ebs_readback.py" "$FAKEAWS_URL" "$@" 2>"$T/rb.err" ||
    { cat "$T/rb.err" >&2; fail "reading back $1 failed"; }
}

# import_ok IMAGE ARGS... - runs import --output=json, leaves the JSON in $T/imp.json
import_ok() {
  local img=$1
  shift
  amiport_ok import --output=json -j 16 "$@" "$img"
  cp "$T/stdout" "$T/imp.json"
  SNAP=$(json_get "$T/imp.json" snapshot_id)
  AMI=$(json_get "$T/imp.json" image_id)
  [[ $SNAP == snap-* ]] || fail "import printed no snapshot id: $(cat "$T/imp.json")"
}

# --- the bootable fixture in three formats: data, AMI parameters ---
src=$FIXTURES/x86_64-bios-mbr.raw
size=$(stat -c %s "$src")
qimg convert -f raw -O qcow2 "$src" "$T/bios.qcow2"
qimg convert -f raw -O vmdk -o subformat=streamOptimized "$src" "$T/bios.vmdk"
qimg convert -f raw -O vhdx "$src" "$T/bios.vhdx"
amiport_ok check --output=json "$src"
cp "$T/stdout" "$T/check.json"
want_arch=$(json_get "$T/check.json" ami architecture)
want_mode=$(json_get "$T/check.json" ami boot_mode)
want_ena=$(json_get "$T/check.json" ami ena_support)
for f in "$src" "$T/bios.qcow2" "$T/bios.vmdk" "$T/bios.vhdx"; do
  ext=${f##*.}
  import_ok "$f" --name "fixture-$ext" --tag Project=amiport
  [[ $AMI == ami-* ]] || fail "$ext: no image id: $(cat "$T/imp.json")"
  n=$(readback "$SNAP" "$T/back-$ext.raw" "$size")
  [ "$n" -eq $(((size + 524287) / 524288)) ] || fail "$ext: $n blocks in the snapshot, expected every block (--sparse=none)"
  qemu-img compare -q -f raw -F raw "$src" "$T/back-$ext.raw" ||
    fail "$ext: the snapshot read back differs from the source"
  [ "$ext" = vhdx ] || awscli_spot "$SNAP" "$src" # awscli is slow to start: three formats are enough
  awsx ec2 describe-images --image-ids "$AMI" >"$T/di.json" || fail "describe-images $AMI"
  /usr/bin/python3 - "$T/di.json" "$want_arch" "$want_mode" "$want_ena" "$SNAP" <<'EOF' || fail "$ext: AMI attributes differ from check's"
import json, sys
im = json.load(open(sys.argv[1]))["Images"][0]
arch, mode, ena, snap = sys.argv[2:]
got = (im["Architecture"], im.get("BootMode"), str(im.get("EnaSupport", False)).lower(),
       im["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"], im["RootDeviceName"],
       im.get("ImdsSupport"), im["VirtualizationType"])
want = (arch, mode, ena, snap, "/dev/xvda", "v2.0", "hvm")
if got != want:
    print("got", got, "want", want)
    sys.exit(1)
tags = {t["Key"]: t["Value"] for t in im.get("Tags", [])}
assert tags.get("Project") == "amiport", tags
EOF
  info "$ext: $SNAP -> $AMI ($n blocks read back identical; $want_arch $want_mode ena=$want_ena)"
done

# rerunning a finished import prints the same result and uploads nothing
import_ok "$src" --name fixture-raw
[ "$(json_get "$T/imp.json" already_done)" = true ] || fail "rerun of a finished import did not say already_done"
[ "$(json_get "$T/imp.json" blocks_uploaded)" = 0 ] || fail "rerun uploaded blocks again"

# a disk that will not boot is refused unless --force
expect_rc 1 import --name nokernel "$FIXTURES/no-kernel.raw"
stderr_has "will not boot on EC2" "--force"

# --- sparse modes on a small image: data, written zeros, holes ---
qimg create -f qcow2 "$T/sparse.qcow2" 8M
qio "$T/sparse.qcow2" "write -P 0x11 0 4k" "write -z 512k 512k" "write -P 0x22 5M 4k" "write -P 0 6M 512k"
# blocks: 0 data, 1 zero clusters (written zeros), 10 data, 12 data that is all zeros; the rest never written
for mode in none:16 holes:4 zeros:2; do
  m=${mode%%:*} want=${mode##*:}
  import_ok "$T/sparse.qcow2" --sparse="$m" --no-register --force --arch x86_64
  got=$(json_get "$T/imp.json" blocks_uploaded)
  [ "$got" = "$want" ] || fail "--sparse=$m uploaded $got blocks, expected $want"
  n=$(readback "$SNAP" "$T/back-sparse.raw" 8388608)
  [ "$n" = "$want" ] || fail "--sparse=$m: the snapshot lists $n blocks, expected $want"
  qemu-img compare -q -f qcow2 -F raw "$T/sparse.qcow2" "$T/back-sparse.raw" ||
    fail "--sparse=$m: data read back differs"
  rm -f "$T/back-sparse.raw"
  rm -rf "$XDG_STATE_HOME"/amiport
  info "--sparse=$m: $got blocks uploaded, snapshot identical"
done
run_amiport import --sparse=zeros --no-register --force --arch x86_64 "$T/sparse.qcow2"
stderr_has "encrypted"

# --- errors are named ---
AWS_SECRET_ACCESS_KEY=not-the-secret expect_rc 1 import --no-register --force --arch x86_64 "$T/sparse.qcow2"
stderr_has "InvalidSignatureException|SignatureDoesNotMatch"
AWS_ACCESS_KEY_ID=AKIDNOTKNOWN expect_rc 1 import --no-register --force --arch x86_64 "$T/sparse.qcow2"
stderr_has "UnrecognizedClient|AuthFailure"
AWS_SESSION_TOKEN=EXPIREDTOKEN expect_rc 1 import --no-register --force --arch x86_64 "$T/sparse.qcow2"
stderr_has "ExpiredToken" "expired"
! grep -q EXPIREDTOKEN "$T/stderr" || fail "the session token appears in an error"
rm -rf "$XDG_STATE_HOME"/amiport
fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "corrupt"}]' >/dev/null
expect_rc 1 import --no-register --force --arch x86_64 "$T/sparse.qcow2"
stderr_has "PutSnapshotBlock" "checksum" "is pending"
fakeaws_ctl POST faults '[]' >/dev/null
rm -rf "$XDG_STATE_HOME"/amiport

# --- faults: throttling, 500s, dropped connections: same data ---
fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "throttle", "every": 6},
  {"op": "PutSnapshotBlock", "kind": "500", "every": 9},
  {"op": "PutSnapshotBlock", "kind": "drop", "every": 13},
  {"op": "StartSnapshot", "kind": "throttle", "count": 1},
  {"op": "DescribeSnapshots", "kind": "500", "count": 1},
  {"op": "CompleteSnapshot", "kind": "drop", "count": 1}]' >/dev/null
import_ok "$T/bios.qcow2" --name faults
fakeaws_ctl GET stats >"$T/stats.json"
fakeaws_ctl POST faults '[]' >/dev/null
retries=$(json_get "$T/imp.json" retries)
[ "$retries" -gt 10 ] || fail "with faults injected the import retried only $retries times"
readback "$SNAP" "$T/back-faults.raw" "$size" >/dev/null
qemu-img compare -q -f raw -F raw "$src" "$T/back-faults.raw" || fail "with faults injected the snapshot differs"
info "faults: $retries retries, snapshot identical"
rm -rf "$XDG_STATE_HOME"/amiport

# --- an import killed halfway resumes and sends only the rest ---
nblocks=$(((size + 524287) / 524288))
kill_midway "$nblocks" "$T/killed.err" import --output=json -j 4 --name resumed "$src"
snap=$KILLED_SNAP
import_ok "$src" --name resumed
[ "$SNAP" = "$snap" ] || fail "the rerun did not resume $snap but used $SNAP"
[ "$(json_get "$T/imp.json" resumed)" = true ] || fail "the rerun did not say it resumed"
before=$(json_get "$T/imp.json" blocks_before)
up=$(json_get "$T/imp.json" blocks_uploaded)
[ "$before" -ge $((nblocks / 3)) ] && [ $((before + up)) -eq "$nblocks" ] ||
  fail "resume: $before blocks kept and $up uploaded, expected at least $((nblocks / 3)) kept and $nblocks in all"
puts=$(fakeaws_ctl GET stats | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"][sys.argv[1]]["put_requests"])' "$snap")
[ "$puts" -le $((nblocks + 4)) ] || fail "resume: $puts PutSnapshotBlock requests for $nblocks blocks (at most the 4 in flight may repeat)"
readback "$SNAP" "$T/back-resumed.raw" "$size" >/dev/null
qemu-img compare -q -f raw -F raw "$src" "$T/back-resumed.raw" || fail "the resumed snapshot differs"
info "resume: $before blocks kept, $up sent after the kill, $puts requests in all"

# Ctrl-C: exit 130, the snapshot id and how to resume
rm -rf "$XDG_STATE_HOME"/amiport
fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "slow", "delay_ms": 200}]' >/dev/null
"$AMIPORT" import -j 2 --name interrupted "$src" >"$T/int.out" 2>"$T/int.err" &
pid=$!
for _ in $(seq 100); do grep -q 'snap-' "$T/int.err" && break; sleep 0.1; done
sleep 0.5
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
fakeaws_ctl POST faults '[]' >/dev/null
[ "$rc" -eq 130 ] || { cat "$T/int.err" >&2; fail "an interrupted import exited $rc, expected 130"; }
grep -q "is pending" "$T/int.err" && grep -q "Run the same command again" "$T/int.err" ||
  { cat "$T/int.err" >&2; fail "an interrupted import did not say how to resume"; }
amiport_ok import --resume --name interrupted --output=json "$src"
[ "$(json_get "$T/stdout" resumed)" = true ] || fail "--resume did not resume"

# --resume with nothing to resume
rm -rf "$XDG_STATE_HOME"/amiport
expect_rc 2 import --resume --name none "$src"
stderr_has "nothing to resume"

# --- register and wait on their own ---
amiport_ok wait "$SNAP"
amiport_ok register --name registered --arch arm64 --boot-mode uefi --ena "$SNAP"
ami=$(cat "$T/stdout")
[[ $ami == ami-* ]] || fail "register printed '$ami'"
awsx ec2 describe-images --image-ids "$ami" >"$T/di.json"
[ "$(json_get "$T/di.json" Images | /usr/bin/python3 -c 'import json,sys; i=json.load(sys.stdin)[0]; print(i["Architecture"], i["BootMode"], i["EnaSupport"])')" = "arm64 uefi True" ] ||
  fail "register: attributes $(cat "$T/di.json")"
amiport_ok wait "$ami"
expect_rc 1 register --name registered "$SNAP"
stderr_has "InvalidAMIName.Duplicate"
expect_rc 1 wait snap-00000000000000000
stderr_has "does not exist"

# secrets never appear in any output
! grep -rq "wJalrXUtnFEMI" "$T"/stdout "$T"/stderr "$T"/*.err "$T"/*.out 2>/dev/null ||
  fail "the secret key appears in amiport's output"
exit 0
