#!/bin/bash
# bench/ebs.sh - amiport import into tests/fakeaws and export back from
# it: client CPU per GiB against the SHA-256 floor, and the block requests a
# second the client can sustain on this machine.
#
# Usage: bench/ebs.sh [AMIPORT_BINARY]
# Environment: BENCH_DIR (default /tmp/amiport-bench), BENCH_DATA_MIB (1024),
# BENCH_REPEAT (3; the median is reported).
#
# The floor is `openssl dgst -sha256` over the same bytes: every byte must be
# hashed once for PutSnapshotBlock's checksum, so no client can spend less.
# The emulator (Python) is the slow end of the wire here, so the client's
# capacity is computed from its own CPU time: requests / (user + sys)
# seconds is the rate one core of this machine sustains; the figure for both
# cores is printed beside it. Target: CPU at most 1.5 x the floor, capacity
# at least 1000 requests a second on 2 cores.
#
# The wire's own cost on this machine is measured too: `cat` pushing the
# same bytes through a loopback TCP socket to a sink that discards them, and
# `cat` reading them from one. Over loopback the sender's kernel does the
# TCP work of both ends, so no client can import for less than the SHA-256
# floor plus that send (printed as the loopback floor).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AMIPORT=${1:-$REPO_ROOT/build/amiport}
BENCH_DIR=${BENCH_DIR:-/tmp/amiport-bench}
DATA_MIB=${BENCH_DATA_MIB:-1024}
REPEAT=${BENCH_REPEAT:-3}
TIME=/usr/bin/time
[ -x "$AMIPORT" ] || { echo "ebs.sh: $AMIPORT is not executable" >&2; exit 1; }
[ -x $TIME ] || { echo "ebs.sh: GNU time is needed (apt-get install time)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
W=$(mktemp -d "$BENCH_DIR/import.XXXXXX")
SRV=
trap '[ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$W"' EXIT

input=$BENCH_DIR/import-random-${DATA_MIB}M.raw
if [ ! -s "$input" ]; then
  echo "# making $input ($DATA_MIB MiB of random data)" >&2
  head -c $((DATA_MIB << 20)) /dev/urandom >"$input.tmp" && mv "$input.tmp" "$input"
fi
blocks=$(((DATA_MIB << 20) / 524288))

/usr/bin/python3 "$REPO_ROOT/tests/fakeaws/server.py" --port 0 --state "$W/state" \
  >"$W/srv.out" 2>/dev/null &
SRV=$!
for _ in $(seq 100); do grep -q ready "$W/srv.out" && break; sleep 0.1; done
port=$(awk '$1 == "ready" { print $2 }' "$W/srv.out")
export AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null XDG_STATE_HOME=$W/xdg

cat "$input" >/dev/null # both runs read from the page cache
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# loopback PORT_FILE MODE: a one-shot TCP peer that discards (sink) or sends
# the input (source); its port goes in PORT_FILE.
loopback() {
  /usr/bin/python3 - "$1" "$2" "$input" <<'PY' &
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
__import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept()
if sys.argv[2] == "sink":
    while c.recv(1 << 20):
        pass
else:
    with open(sys.argv[3], "rb") as f:
        c.sendfile(f)
    c.close()
PY
  PEER=$!
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.05; done
}
: >"$W/sha" ; : >"$W/imp" ; : >"$W/wall" ; : >"$W/exp" ; : >"$W/ewall" ; : >"$W/snd" ; : >"$W/rcv"
for i in $(seq "$REPEAT"); do
  rm -f "$W/port"; loopback "$W/port" sink
  $TIME -f '%U %S' -o "$W/t" bash -c 'cat "$1" >/dev/tcp/127.0.0.1/"$2"' _ "$input" "$(cat "$W/port")"
  awk '{ print $1 + $2 }' "$W/t" >>"$W/snd"
  wait "$PEER"
  rm -f "$W/port"; loopback "$W/port" source
  $TIME -f '%U %S' -o "$W/t" bash -c 'cat </dev/tcp/127.0.0.1/"$1" >/dev/null' _ "$(cat "$W/port")"
  awk '{ print $1 + $2 }' "$W/t" >>"$W/rcv"
  wait "$PEER"
  $TIME -f '%U %S' -o "$W/t" openssl dgst -sha256 "$input" >/dev/null
  awk '{ print $1 + $2 }' "$W/t" >>"$W/sha"
  rm -rf "$W/xdg" "$W/state"/snapshots
  $TIME -f '%U %S %e %M' -o "$W/t" "$AMIPORT" import -f raw --no-register --force --arch x86_64 \
    --max-rate 0 --output=json "$input" >"$W/out.json"
  awk '{ print $1 + $2 }' "$W/t" >>"$W/imp"
  awk '{ print $3 }' "$W/t" >>"$W/wall"
  awk '{ print $4 }' "$W/t" >"$W/rss"
  snap=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot_id"])' "$W/out.json")
  rm -f "$W/back.raw"
  $TIME -f '%U %S %e %M' -o "$W/t" "$AMIPORT" export "$snap" "$W/back.raw" 2>/dev/null
  awk '{ print $1 + $2 }' "$W/t" >>"$W/exp"
  awk '{ print $3 }' "$W/t" >>"$W/ewall"
  cmp -n $((DATA_MIB << 20)) "$input" "$W/back.raw" || { echo "ebs.sh: the export differs" >&2; exit 1; }
done
sha=$(median <"$W/sha")
imp=$(median <"$W/imp")
wall=$(median <"$W/wall")
rss=$(cat "$W/rss")
exp=$(median <"$W/exp")
ewall=$(median <"$W/ewall")
snd=$(median <"$W/snd")
rcv=$(median <"$W/rcv")
awk -v snd="$snd" -v rcv="$rcv" -v ex="$exp" -v ewall="$ewall" -v sha="$sha" -v imp="$imp" -v wall="$wall" -v n="$blocks" -v mib="$DATA_MIB" -v rss="$rss" 'BEGIN {
  gib = mib / 1024
  ratio = imp / sha
  cap1 = n / imp
  printf "== amiport import into tests/fakeaws (%d MiB, %d blocks, median of runs) ==\n", mib, n
  printf "openssl dgst -sha256 CPU      %.2f s/GiB   (the floor)\n", sha / gib
  printf "loopback send, receive CPU    %.2f, %.2f s/GiB (cat into, out of a TCP socket)\n", snd / gib, rcv / gib
  printf "loopback floor                import %.2f x, export %.2f x the floor (SHA-256 + the socket)\n", (sha + snd) / sha, (sha + rcv) / sha
  printf "amiport import client CPU     %.2f s/GiB   ratio %.2f x the floor (target <= 1.5): %s\n", imp / gib, ratio, ratio <= 1.5 ? "PASS" : "MISS"
  printf "client capacity               %.0f requests/s per core, %.0f on 2 cores (target >= 1000): %s\n", cap1, 2 * cap1, 2 * cap1 >= 1000 ? "PASS" : "MISS"
  printf "throughput into the emulator  %.0f MiB/s, %.0f requests/s (the Python emulator is the bound)\n", mib / wall, n / wall
  printf "amiport peak RSS              %.0f MiB\n", rss / 1024
  printf "amiport export client CPU     %.2f s/GiB   ratio %.2f x the floor (target <= 1.5): %s\n", ex / gib, ex / sha, ex / sha <= 1.5 ? "PASS" : "MISS"
  printf "export throughput             %.0f MiB/s from the emulator\n", mib / ewall
}'
