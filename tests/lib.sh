# lib.sh - helpers shared by the shell tests (sourced, never run).
#
# The tests are run by ctest as `bash tests/X.sh` with AMIPORT (the binary),
# SRCDIR (the repository root) and TESTTMP (a scratch directory in the build
# tree) in the environment. Exit status: 0 pass, 1 fail, 77 skip.
#
# After sourcing: call `setup_tmp`; it sets $T to a fresh directory under
# $TESTTMP that is removed when the test passes and kept (and named) when it
# fails, so the images can be inspected.

set -u
set -o pipefail

: "${AMIPORT:?AMIPORT must name the amiport binary}"
: "${TESTTMP:=${TMPDIR:-/tmp}}"
: "${SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

# How long one amiport run may take before it counts as a hang.
AMIPORT_TIMEOUT=${AMIPORT_TIMEOUT:-120}

TEST_NAME=$(basename "$0" .sh)
T=

fail() {
  echo "FAIL [$TEST_NAME]: $*" >&2
  exit 1
}

skip() {
  echo "SKIP [$TEST_NAME]: $*"
  exit 77
}

info() {
  echo "[$TEST_NAME] $*"
}

lib_cleanup() {
  local rc=$?
  [ -n "${FAKEAWS_PID:-}" ] && kill "$FAKEAWS_PID" 2>/dev/null && wait "$FAKEAWS_PID" 2>/dev/null
  [ -n "${S3RVER_PID:-}" ] && kill "$S3RVER_PID" 2>/dev/null && wait "$S3RVER_PID" 2>/dev/null
  [ -n "${SLURM_PIDS:-}" ] && stop_slurm
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ "$rc" -eq 0 ]; then
      rm -rf "$T"
    else
      echo "[$TEST_NAME] exit $rc; scratch files kept in $T" >&2
    fi
  fi
  exit "$rc"
}

setup_tmp() {
  [ -x "$AMIPORT" ] || fail "AMIPORT=$AMIPORT is not an executable"
  mkdir -p "$TESTTMP" || fail "cannot create TESTTMP=$TESTTMP"
  T=$(mktemp -d "$TESTTMP/$TEST_NAME.XXXXXX") || fail "mktemp -d under $TESTTMP"
  trap lib_cleanup EXIT
  trap 'exit 130' INT TERM
}

require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
  done
}

# run_amiport ARGS... - runs the binary with a timeout; sets RC and leaves
# stdout in $T/stdout and stderr in $T/stderr. A crash (signal, RC >= 128) or
# a hang (timeout) fails the test at once; everything else is the caller's to judge.
RC=0
run_amiport() {
  RC=0
  timeout -k 5 "$AMIPORT_TIMEOUT" "$AMIPORT" "$@" >"$T/stdout" 2>"$T/stderr" || RC=$?
  if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
    cat "$T/stderr" >&2
    fail "amiport $* hung (killed after ${AMIPORT_TIMEOUT}s)"
  fi
  if [ "$RC" -ge 128 ]; then
    cat "$T/stderr" >&2
    fail "amiport $* crashed (exit $RC = signal $((RC - 128)))"
  fi
  return 0
}

# amiport_ok ARGS... - runs amiport and fails the test unless it exits 0.
amiport_ok() {
  run_amiport "$@"
  if [ "$RC" -ne 0 ]; then
    cat "$T/stderr" >&2
    fail "amiport $* exited $RC, expected 0"
  fi
}

# expect_rc WANT ARGS... - WANT may be "1" or a set like "1|2".
expect_rc() {
  local want=$1
  shift
  run_amiport "$@"
  case "|$want|" in
    *"|$RC|"*) ;;
    *)
      cat "$T/stderr" >&2
      fail "amiport $* exited $RC, expected $want"
      ;;
  esac
}

# stderr_has PATTERN... - every PATTERN (an extended regex, matched
# case-insensitively; use a|b for alternatives) must occur in $T/stderr.
stderr_has() {
  local p
  for p in "$@"; do
    grep -Eiq -- "$p" "$T/stderr" || {
      echo "--- stderr was:" >&2
      cat "$T/stderr" >&2
      echo "---" >&2
      fail "stderr of the last amiport run lacks /$p/"
    }
  done
}

# stderr_is_error - the house style: an error is one or more lines starting "amiport: ".
stderr_is_error() {
  grep -q '^amiport: ' "$T/stderr" || {
    cat "$T/stderr" >&2
    fail "stderr has no line starting with 'amiport: '"
  }
}

# qimg ARGS... - qemu-img, failing the test on error (setup steps).
qimg() {
  qemu-img "$@" >"$T/qemu.out" 2>&1 || {
    cat "$T/qemu.out" >&2
    fail "qemu-img $* failed"
  }
}

# qio IMAGE CMD... - qemu-io -f qcow2 with one -c per CMD.
qio() {
  local img=$1 c
  shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f qcow2 "${args[@]}" "$img" >"$T/qemu.out" 2>&1 || {
    cat "$T/qemu.out" >&2
    fail "qemu-io $img ${*} failed"
  }
  if grep -qi 'error\|failed' "$T/qemu.out"; then
    cat "$T/qemu.out" >&2
    fail "qemu-io $img ${*} reported an error"
  fi
}

# map_equal OURS.json QEMU.json - compares two `map --output=json` arrays on
# (start, length, kind) after projecting each entry to a kind (data:true is
# "data" whatever zero says, since qemu reports preallocated clusters as
# data+zero; anything else is "zero") and merging adjacent entries of the
# same kind. Prints the first difference and returns 1 when they differ.
map_equal() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys

def load(path):
    try:
        with open(path) as f:
            m = json.load(f)
    except Exception as e:
        print("map_equal: %s is not valid JSON: %s" % (path, e))
        sys.exit(1)
    if not isinstance(m, list):
        print("map_equal: %s is not a JSON array" % path)
        sys.exit(1)
    out = []
    for i, e in enumerate(m):
        for k in ("start", "length", "data", "zero"):
            if k not in e:
                print("map_equal: %s entry %d lacks %r: %s" % (path, i, k, e))
                sys.exit(1)
        kind = "data" if e["data"] else "zero"
        if e["length"] == 0:
            continue
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == e["start"]:
            out[-1][1] += e["length"]
        else:
            out.append([e["start"], e["length"], kind])
    return out

a, b = load(sys.argv[1]), load(sys.argv[2])
for i in range(max(len(a), len(b))):
    x = a[i] if i < len(a) else None
    y = b[i] if i < len(b) else None
    if x != y:
        fmt = lambda v: "(none)" if v is None else "start=%d length=%d %s" % tuple(v)
        print("map differs at normalised entry %d: ours %s, qemu-img %s" % (i, fmt(x), fmt(y)))
        sys.exit(1)
EOF
}

# json_get FILE PATH... - prints the value at a key path in a JSON file
# ("format-specific" "data" "compat"); prints nothing when a key is absent.
# Booleans print as true/false, strings bare.
json_get() {
  "$PYTHON" - "$@" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    v = json.load(f)
for k in sys.argv[2:]:
    if isinstance(v, dict) and k in v:
        v = v[k]
    else:
        sys.exit(0)
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (dict, list)):
    print(json.dumps(v))
else:
    print(v)
EOF
}

# format_specific FILE KEY - a format-specific key from `info --output=json`,
# whether the object is flat or wrapped like qemu-img's {"type", "data"}.
format_specific() {
  local v
  v=$(json_get "$1" format-specific data "$2")
  [ -n "$v" ] || v=$(json_get "$1" format-specific "$2")
  printf '%s\n' "$v"
}

# dir_empty DIR - fails unless DIR has no entries (no output, no temp file).
dir_empty() {
  local left
  left=$(ls -A "$1")
  [ -z "$left" ] || fail "$1 should be empty after a failed convert but holds: $left"
}

# mk_mixed_raw FILE SIZE_MIB - a raw file of random, text-like and zero data
# (and a hole) in 256 KiB stripes: compressible and incompressible clusters.
mk_mixed_raw() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import os, sys, random
path, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1234)
words = b"the quick brown fox jumps over the lazy dog amiport qcow2 cluster ".split()
stripe = 256 * 1024
with open(path, "wb") as f:
    for i in range(mib * 1024 * 1024 // stripe):
        k = i % 4
        if k == 0:
            f.write(os.urandom(stripe))
        elif k == 1:
            buf = bytearray()
            while len(buf) < stripe:
                buf += rnd.choice(words) + b" "
            f.write(bytes(buf[:stripe]))
        elif k == 2:
            f.write(bytes(stripe))
        else:
            f.seek(stripe, 1)
    f.truncate()
EOF
}

# info_equal OURS.json QEMU.json KEY... - compares `info --output=json`
# objects on the given keys; fs:KEY names a format-specific key (flat or
# wrapped like qemu-img's {"type", "data"}); has:KEY only asks that our
# object has KEY. qemu-img leaves the v3 feature
# flags out for compat=0.10 images, so an absent extended-l2 or
# lazy-refcounts counts as false on either side. Prints each difference.
info_equal() {
  "$PYTHON" - "$@" <<'PYEOF'
import json, sys

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as e:
        print("info_equal: %s is not valid JSON: %s" % (path, e))
        sys.exit(1)

def get(obj, key):
    if key.startswith("fs:"):
        key = key[3:]
        fs = obj.get("format-specific", {})
        if isinstance(fs, dict) and isinstance(fs.get("data"), dict):
            fs = fs["data"]
        v = fs.get(key) if isinstance(fs, dict) else None
        if v is None and key in ("extended-l2", "lazy-refcounts"):
            v = False
        return v
    return obj.get(key)

ours, qemu = load(sys.argv[1]), load(sys.argv[2])
bad = 0
for k in sys.argv[3:]:
    if k.startswith("has:"):
        if k[4:] not in ours:
            print("info: amiport's JSON lacks %r" % k[4:])
            bad = 1
        continue
    a, b = get(ours, k), get(qemu, k)
    if a != b:
        print("info %s: amiport says %r, qemu-img says %r" % (k, a, b))
        bad = 1
sys.exit(bad)
PYEOF
}

# build_once DIR STAMP LOG CMD... - runs CMD, which fills DIR, unless DIR
# was last filled under the same STAMP; tests running at once wait for each
# other on DIR.lock. Returns CMD's status (its output goes to LOG) and sets
# BUILT to 1 when it ran.
build_once() {
  local dir=$1 stamp=$2 log=$3 rc=0 fd
  shift 3
  mkdir -p "$dir"
  exec {fd}>"$dir.lock"
  flock "$fd"
  BUILT=0
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    BUILT=1
    rm -f "$dir/.stamp"
    "$@" >"$log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || echo "$stamp" >"$dir/.stamp"
  fi
  flock -u "$fd"
  exec {fd}>&-
  return "$rc"
}

# ensure_fixtures [ARM64] - builds the bootable fixtures with
# fixtures/make-boot-fixtures.sh into $FIXTURES (default beside $TESTTMP),
# once: later calls and other tests reuse them until the builder or the
# template changes. Tests running at once wait for each other on a lock.
# Skips the test (77) when the Debian packages cannot be downloaded.
FIXTURES=${FIXTURES:-$(dirname "$TESTTMP")/fixtures}
FIXTURES_CACHE=${CACHE:-$(dirname "$FIXTURES")/fixtures-cache} # beside the fixtures it built
ensure_fixtures() {
  local arm64=${1:-1} stamp rc=0 t0=$SECONDS
  stamp="$(cat "$SRCDIR/fixtures/make-boot-fixtures.sh" "$SRCDIR/fixtures/expected.json" | sha256sum | cut -c1-16) ARM64=$arm64"
  build_once "$FIXTURES" "$stamp" "$T/fixtures-build.log" env OUT="$FIXTURES" \
    CACHE="$FIXTURES_CACHE" ARM64="$arm64" bash "$SRCDIR/fixtures/make-boot-fixtures.sh" || rc=$?
  if [ "$rc" -eq 3 ]; then
    tail -n 5 "$T/fixtures-build.log"
    skip "the Debian packages the fixtures are built from could not be downloaded"
  fi
  [ "$rc" -eq 0 ] || { tail -n 40 "$T/fixtures-build.log" >&2; fail "make-boot-fixtures.sh exited $rc"; }
  if [ "$BUILT" = 1 ]; then
    info "fixtures: built into $FIXTURES in $((SECONDS - t0))s (packages cached in $FIXTURES_CACHE)"
  else
    info "fixtures: reusing $FIXTURES"
  fi
}

# wait_ready NAME PID OUT LOG - waits (20 s at most) for the server started
# as PID to print "ready PORT" in OUT and sets READY_PORT; fails with its
# LOG if it exits first.
wait_ready() {
  local i
  READY_PORT=
  for i in $(seq 200); do
    READY_PORT=$(awk '$1 == "ready" { print $2 }' "$3")
    [ -n "$READY_PORT" ] && return 0
    kill -0 "$2" 2>/dev/null || { cat "$4" >&2; fail "$1 exited"; }
    sleep 0.1
  done
  fail "$1 did not print 'ready PORT' within 20 s"
}

# start_fakeaws [SERVER ARGS...] - starts tests/fakeaws (the local EBS and EC2
# emulator) on a free port with its state in $T/fakeaws, and points amiport
# and awscli at it: the documentation key pair, us-east-1, no IMDS, no
# config files, resume state under $T/state. Sets FAKEAWS_URL; `awsx`
# runs Debian's awscli against it. Stopped when the test ends.
FAKEAWS_PID=
start_fakeaws() {
  mkdir -p "$T/fakeaws" "$T/state"
  : >"$T/fakeaws.out"
  /usr/bin/python3 "$SRCDIR/tests/fakeaws/server.py" --port 0 --state "$T/fakeaws" "$@" \
    >"$T/fakeaws.out" 2>"$T/fakeaws.log" &
  FAKEAWS_PID=$!
  wait_ready fakeaws "$FAKEAWS_PID" "$T/fakeaws.out" "$T/fakeaws.log"
  FAKEAWS_URL=http://127.0.0.1:$READY_PORT
  unset AWS_PROFILE AWS_DEFAULT_REGION AWS_SESSION_TOKEN AWS_ENDPOINT_URL_EBS AWS_ENDPOINT_URL_EC2
  export AWS_ACCESS_KEY_ID=AKIDEXAMPLE
  export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
  export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export AWS_ENDPOINT_URL=$FAKEAWS_URL
  export AWS_CONFIG_FILE=$T/aws-config AWS_SHARED_CREDENTIALS_FILE=$T/aws-credentials
  export XDG_STATE_HOME=$T/state AWS_PAGER=
  : >"$AWS_CONFIG_FILE"
  : >"$AWS_SHARED_CREDENTIALS_FILE"
}

# stop_fakeaws - stops the emulator early (a test that later waits for its
# own background jobs must not wait for it too).
stop_fakeaws() {
  [ -n "$FAKEAWS_PID" ] || return 0
  kill "$FAKEAWS_PID" 2>/dev/null
  wait "$FAKEAWS_PID" 2>/dev/null
  FAKEAWS_PID=
}

# fakeaws_ctl METHOD PATH [JSON] - the emulator's unsigned control endpoint.
fakeaws_ctl() {
  curl -sf -X "$1" ${3:+-H 'Content-Type: application/json' --data "$3"} "$FAKEAWS_URL/_fakeaws/$2" ||
    fail "fakeaws control $1 $2 failed"
}

# snapshot_equals SNAP FILE - the snapshot, read whole through botocore
# (tests/ebs_readback.py), equals FILE.
snapshot_equals() {
  /usr/bin/python3 "$SRCDIR/tests/ebs_readback.py" "$FAKEAWS_URL" "$1" "$T/back.raw" \
    "$(stat -c %s "$2")" >/dev/null 2>"$T/rb.err" || { cat "$T/rb.err" >&2; fail "reading back $1 failed"; }
  cmp -s "$2" "$T/back.raw" || fail "snapshot $1 differs from $2"
}

# mk_ova OUT DISK... - an OVA of streamOptimized VMDKs that sit in one
# folder: an OVF listing them in that order, then the disks.
mk_ova() {
  local out=$1 dir i=0 f refs= disks=
  shift
  dir=$(dirname "$1")
  for f in "$@"; do
    i=$((i + 1))
    f=$(basename "$f")
    refs+="<File ovf:href=\"$f\" ovf:id=\"file$i\" ovf:size=\"$(stat -c %s "$dir/$f")\"/>"
    disks+="<Disk ovf:capacity=\"$(qemu-img info --output=json "$dir/$f" | json_get /dev/stdin virtual-size)\" ovf:diskId=\"vmdisk$i\" ovf:fileRef=\"file$i\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>"
  done
  cat >"$dir/vm.ovf" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>$refs</References>
  <DiskSection><Info>disks</Info>$disks</DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info><Name>vm</Name></VirtualSystem>
</Envelope>
OVF
  local names=()
  for f in "$@"; do names+=("$(basename "$f")"); done
  (cd "$dir" && tar --format=ustar -cf "$out" vm.ovf "${names[@]}") || fail "tar of $out failed"
}

# fakeaws_made - "SNAPSHOTS REGISTERS": the snapshots the emulator holds and
# the RegisterImage requests it has answered (a rerun must change neither).
fakeaws_made() {
  fakeaws_ctl GET stats | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
print(len(s["snapshots"]), s["ops"].get("RegisterImage", {}).get("requests", 0))'
}

# kill_midway NBLOCKS ERRFILE ARGS... - runs amiport ARGS (an import, a plan
# task) in the background with PutSnapshotBlock slowed down, kills it (-9)
# once its snapshot holds a third of NBLOCKS, and sets KILLED_SNAP to that
# snapshot. Give it few jobs (-j 4), so a third is well before the end.
kill_midway() {
  local nblocks=$1 err=$2 pid held
  shift 2
  fakeaws_ctl POST faults '[{"op": "PutSnapshotBlock", "kind": "slow", "delay_ms": 100}]' >/dev/null
  "$AMIPORT" "$@" >/dev/null 2>"$err" &
  pid=$!
  KILLED_SNAP=
  for _ in $(seq 300); do
    KILLED_SNAP=$(grep -o 'snap-[0-9a-f]*' "$err" | head -1)
    if [ -n "$KILLED_SNAP" ]; then
      held=$(fakeaws_ctl GET stats | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["snapshots"].get(sys.argv[1], {}).get("blocks", 0))' "$KILLED_SNAP")
      [ "$held" -ge $((nblocks / 3)) ] && break
    fi
    sleep 0.1
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  fakeaws_ctl POST faults '[]' >/dev/null
  [ -n "$KILLED_SNAP" ] || fail "the killed import never printed its snapshot id"
}

# awscli_spot SNAP RAW - Debian's awscli lists the snapshot's blocks and
# fetches the first and the last; both must equal RAW's bytes there.
awscli_spot() {
  local snap=$1 raw=$2 idx tok
  awsx ebs list-snapshot-blocks --snapshot-id "$snap" >"$T/blocks.json" ||
    fail "aws ebs list-snapshot-blocks $snap failed"
  /usr/bin/python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))["Blocks"]
for x in (b[0], b[-1]):
    print(x["BlockIndex"], x["BlockToken"])' "$T/blocks.json" >"$T/spot.txt"
  while read -r idx tok; do
    awsx ebs get-snapshot-block --snapshot-id "$snap" --block-index "$idx" --block-token "$tok" \
      "$T/spot.bin" >/dev/null || fail "aws ebs get-snapshot-block $snap $idx failed"
    cmp -s "$T/spot.bin" <(dd if="$raw" bs=524288 skip="$idx" count=1 status=none) ||
      fail "awscli: block $idx of $snap differs from the source"
  done <"$T/spot.txt"
}

awsx() {
  /usr/bin/aws --endpoint-url "$FAKEAWS_URL" --region us-east-1 --output json "$@"
}

# start_s3rver [START.JS ARGS...] - starts tests/s3rver (@20minutes/s3rver, a real S3 server that
# checks SigV4) on a free port with its buckets in $T/s3rver, first running
# `npm ci` in tests/s3rver when its node_modules are missing or older than
# its package-lock.json (skips the test when node or npm is missing or the
# packages cannot be downloaded). It takes the key pair start_fakeaws sets
# and its own S3RVER/S3RVER. Sets S3RVER_URL and exports AWS_ENDPOINT_URL_S3
# (fakeaws keeps EBS and EC2); `s3x` runs Debian's awscli against it. Each
# request it answered is a line in $T/s3rver.out, "request METHOD URL STATUS
# X-AMZ-ACL CONTENT-MD5 SIGNED-HEADERS" ("-" for a header not sent; see
# tests/s3rver/start.js). Stopped when the test ends.
S3RVER_PID=
start_s3rver() {
  local dir=$SRCDIR/tests/s3rver
  command -v node >/dev/null 2>&1 || skip "node is not installed (Debian: nodejs)"
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
    [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    command -v npm >/dev/null 2>&1 || skip "npm is not installed (Debian: npm)"
    exec 8>"$(dirname "$TESTTMP")/s3rver-npm.lock"
    flock 8
    if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
      [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      info "s3rver: npm ci in $dir"
      npm ci --prefix "$dir" --no-audit --no-fund >"$T/npm-ci.log" 2>&1 || {
        flock -u 8
        tail -n 15 "$T/npm-ci.log"
        skip "npm ci could not install tests/s3rver's packages (log above)"
      }
    fi
    flock -u 8
  fi
  mkdir -p "$T/s3rver"
  : >"$T/s3rver.out"
  node "$dir/start.js" "$T/s3rver" --port 0 \
    --key "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" "$@" \
    >"$T/s3rver.out" 2>"$T/s3rver.log" &
  S3RVER_PID=$!
  wait_ready s3rver "$S3RVER_PID" "$T/s3rver.out" "$T/s3rver.log"
  S3RVER_URL=http://127.0.0.1:$READY_PORT
  export AWS_ENDPOINT_URL_S3=$S3RVER_URL
}

# stop_s3rver - stops the S3 server early (as stop_fakeaws).
stop_s3rver() {
  [ -n "$S3RVER_PID" ] || return 0
  kill "$S3RVER_PID" 2>/dev/null
  wait "$S3RVER_PID" 2>/dev/null
  S3RVER_PID=
}

# s3rver_requests METHOD - how many METHOD requests s3rver has answered so far.
s3rver_requests() {
  grep -c "^request $1 " "$T/s3rver.out"
}

s3x() {
  /usr/bin/aws --endpoint-url "$S3RVER_URL" --region us-east-1 --output json "$@"
}

# start_slurm - a single-node Slurm from Debian's slurm-wlm and munge, with
# no systemd and no cgroups (proctrack/linuxproc, task/none, accounting
# off): munged, slurmctld and slurmd started by hand with their state,
# spool, sockets and logs under $T/slurm, on free ports, and SLURM_CONF
# exported for sbatch, squeue and scancel. Stopped by PID when the test ends.
SLURM_PIDS=
start_slurm() {
  local d=$T/slurm host me i p1 p2
  for i in munged slurmctld slurmd sbatch squeue scancel; do
    command -v "$i" >/dev/null || [ -x "/usr/sbin/$i" ] ||
      skip "$i is not installed (Debian's slurm-wlm and munge)"
  done
  mkdir -p "$d/state" "$d/spool"
  chmod 700 "$d"
  host=$(hostname -s)
  me=$(id -un)
  head -c 1024 /dev/urandom >"$d/munge.key"
  chmod 600 "$d/munge.key"
  /usr/sbin/munged --force --key-file="$d/munge.key" --socket="$d/munge.sock" \
    --pid-file="$d/munged.pid" --log-file="$d/munged.log" --seed-file="$d/munged.seed" ||
    fail "munged did not start: $(cat "$d/munged.log" 2>/dev/null)"
  SLURM_PIDS=$(cat "$d/munged.pid")
  p1=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  p2=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$d/slurm.conf" <<CONF
ClusterName=amiport
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$me
SlurmdUser=$me
AuthType=auth/munge
AuthInfo=socket=$d/munge.sock
CredType=cred/munge
SlurmctldPort=$p1
SlurmdPort=$p2
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=5
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$d/slurm.conf
  /usr/sbin/slurmctld -D -c -i >"$d/slurmctld.out" 2>&1 &
  SLURM_PIDS="$SLURM_PIDS $!"
  /usr/sbin/slurmd -D -N "$host" >"$d/slurmd.out" 2>&1 &
  SLURM_PIDS="$SLURM_PIDS $!"
  for i in $(seq 100); do
    sinfo -h -o %t 2>/dev/null | grep -qx idle && return 0
    sleep 0.2
  done
  tail -n 20 "$d/slurmctld.log" "$d/slurmd.log" >&2
  fail "the single-node Slurm did not come up within 20 s"
}

stop_slurm() {
  local p
  for p in $SLURM_PIDS; do
    kill "$p" 2>/dev/null
  done
  for p in $SLURM_PIDS; do
    wait "$p" 2>/dev/null
  done
  SLURM_PIDS=
}

# slurm_wait JOBID [SECONDS] - waits until the job (every array element)
# has left the queue.
slurm_wait() {
  local i
  for i in $(seq $((${2:-180} * 5))); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  fail "Slurm job $1 still queued or running after ${2:-180} s: $(squeue -j "$1")"
}
