#!/usr/bin/env bash
# bench/bundle_ebs.sh - instance-store <-> EBS-backed in one command, on the
# 1 GiB OS-like image (the osmix input of bench/lib.sh):
#
#   S3 -> EBS: amiport import s3://BUCKET/NAME.manifest.xml into tests/fakeaws
#   EBS -> S3: amiport bundle snap-... --bucket BUCKET/PREFIX
#
# with tests/s3rver as S3 and tests/fakeaws as EBS, both on this machine.
# Measured: the client's CPU per GiB of image data and its peak RSS. The
# reference is the floor of the same work done by standard tools in one
# pipeline over the same bytes, read from local files (no network at all):
#
#   S3 -> EBS: cat parts | openssl enc -d -aes-128-cbc | gunzip |
#              tee >(sha1sum) | openssl dgst -sha256, and sha1sum of the parts
#   EBS -> S3: cat image data | tee >(openssl dgst -sha256) | tee >(sha1sum) |
#              gzip -6 | openssl enc -aes-128-cbc | sha1sum (and md5sum, which
#              S3's Content-MD5 needs)
#
# (the tar framing of the image costs nothing measurable and is left out of
# the floor; gzip -6 is the level amiport deflates at). Target: at most 1.2 x
# that CPU, peak RSS under 64 MiB both ways.
#
# Usage: bench/bundle_ebs.sh [AMIPORT_BINARY]      (default: build/amiport)
# Settings as in bench/lib.sh (BENCH_DIR, BENCH_DATA_MIB, BENCH_VIRT_GIB,
# BENCH_REPEAT: the median CPU is reported).
set -euo pipefail

TARGET_CPU=1.2
TARGET_RSS_MIB=64
BENCH_TITLE="amiport bundle <-> EBS benchmark"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FLAVOURS=(osmix)
describe_input() { echo "the OS-like mix"; }
command -v node >/dev/null || die "node is needed for tests/s3rver"
[[ -d $REPO_ROOT/tests/s3rver/node_modules ]] ||
    npm ci --prefix "$REPO_ROOT/tests/s3rver" --no-audit --no-fund >/dev/null 2>&1 ||
    die "npm ci in tests/s3rver failed"
bench_prepare "$@"

SRC=$(input_base osmix).raw
NAME=$(basename "$SRC")
W=$OUT/bundle-ebs
mkdir -p "$W"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; bench_cleanup' EXIT

ready_port() { # LOG PID: the port a server printed as "ready PORT"
    for _ in $(seq 200); do
        grep -q '^ready' "$1" && { awk '$1 == "ready" { print $2 }' "$1"; return; }
        kill -0 "$2" 2>/dev/null || die "a test server did not start (see $1)"
        sleep 0.1
    done
    die "a test server did not start in 20 s (see $1)"
}
/usr/bin/python3 "$REPO_ROOT/tests/fakeaws/server.py" --port 0 --state "$W/fakeaws" >"$W/fa.out" 2>/dev/null &
PIDS+=($!)
FA=$(ready_port "$W/fa.out" $!)
mkdir -p "$W/s3"
node "$REPO_ROOT/tests/s3rver/start.js" "$W/s3" --port 0 \
    --key "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" >"$W/s3.out" 2>/dev/null &
PIDS+=($!)
S3=$(ready_port "$W/s3.out" $!)
export AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL=http://127.0.0.1:$FA
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export XDG_STATE_HOME=$W/xdg
/usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 mb s3://bench >/dev/null

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=amiport-bench -keyout "$W/key.pem" \
    -out "$W/cert.pem" >/dev/null 2>&1 || die "openssl req failed"
BUNDLE=(--privatekey "$W/key.pem" --cert "$W/cert.pem" --ec2cert "$W/cert.pem" --user 111122223333 --arch x86_64)
log "bundling $NAME and uploading it to S3"
mkdir -p "$W/parts"
"$AMIPORT" bundle "${BUNDLE[@]}" -d "$W/parts" "$SRC" 2>/dev/null || die "amiport bundle failed"
"$AMIPORT" upload-bundle --bucket bench/in --manifest "$W/parts/$NAME.manifest.xml" >/dev/null ||
    die "amiport upload-bundle failed"
hexfield() { /usr/bin/python3 -c 'import re, sys
print(re.search(r"<%s[^>]*>([0-9a-f]+)<" % sys.argv[2], open(sys.argv[1]).read()).group(1))' "$1" "$2"; }
unwrap() { hexfield "$W/parts/$NAME.manifest.xml" "$1" | xxd -r -p | openssl pkeyutl -decrypt -inkey "$W/key.pem"; }
K=$(unwrap user_encrypted_key)
V=$(unwrap user_encrypted_iv)

# Side branches go through fifos read by background jobs the script waits
# for, so GNU time counts their CPU too.
cat >"$W/floor-in.sh" <<'EOF'
set -euo pipefail
f=$(mktemp -u); mkfifo "$f"
sha1sum <"$f" >/dev/null & s=$!
sha1sum "$1".part.* >/dev/null
cat "$1".part.* | openssl enc -d -aes-128-cbc -K "$2" -iv "$3" | gunzip |
    tee "$f" | openssl dgst -sha256 >/dev/null
wait "$s"; rm -f "$f"
EOF
cat >"$W/floor-out.sh" <<'EOF'
set -euo pipefail
a=$(mktemp -u); b=$(mktemp -u); c=$(mktemp -u); mkfifo "$a" "$b" "$c"
openssl dgst -sha256 <"$a" >/dev/null & p1=$!
sha1sum <"$b" >/dev/null & p2=$!
md5sum <"$c" >/dev/null & p3=$!
cat "$1" | tee "$a" "$b" | gzip -6 | openssl enc -aes-128-cbc -K "$2" -iv "$3" | tee "$c" |
    sha1sum >/dev/null
wait "$p1" "$p2" "$p3"; rm -f "$a" "$b" "$c"
EOF
# the image's data bytes, as the EBS reader hands them on
dd if="$SRC" of=/dev/null bs=4M status=none
/usr/bin/python3 - "$SRC" "$W/data.bin" <<'EOF'
import os, sys
src, out = sys.argv[1], sys.argv[2]
fd = os.open(src, os.O_RDONLY)
end = os.lseek(fd, 0, os.SEEK_END)
with open(out, "wb") as o:
    off = 0
    while off < end:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        os.lseek(fd, d, os.SEEK_SET)
        left = h - d
        while left:
            b = os.read(fd, min(left, 1 << 22))
            o.write(b)
            left -= len(b)
        off = h
EOF
DATA=$(stat -c %s "$W/data.bin")

cpu_of() { awk '{ print $3 + $4 }' "$1" | median; }
rss_of() { awk '{ print $2 }' "$1" | sort -g | tail -n1; }
: >"$W/fin" ; : >"$W/fout" ; : >"$W/imp" ; : >"$W/bun"
for (( i = 1; i <= REPEAT; i++ )); do
    log "run $i of $REPEAT"
    run_timed "$W/fin" bash "$W/floor-in.sh" "$W/parts/$NAME" "$K" "$V"
    rm -rf "$W/xdg" "$W/fakeaws/snapshots"
    run_timed "$W/imp" "$AMIPORT" import --no-register --sparse holes --max-rate 0 --privatekey "$W/key.pem" \
        --output=json "s3://bench/in/$NAME.manifest.xml" || die "amiport import from S3 failed"
    snap=$(grep -o '"snapshot_id": *"snap-[0-9a-f]*"' "$OUT/cmd.log" | grep -o 'snap-[0-9a-f]*')
    run_timed "$W/fout" bash "$W/floor-out.sh" "$W/data.bin" "$K" "$V"
    run_timed "$W/bun" "$AMIPORT" bundle "${BUNDLE[@]}" --bucket "bench/out$i" "$snap" ||
        die "amiport bundle $snap --bucket failed"
done
FIN=$(cpu_of "$W/fin"); FOUT=$(cpu_of "$W/fout"); IMP=$(cpu_of "$W/imp"); BUN=$(cpu_of "$W/bun")
awk -v fin="$FIN" -v fout="$FOUT" -v imp="$IMP" -v bun="$BUN" -v data="$DATA" \
    -v rimp="$(rss_of "$W/imp")" -v rbun="$(rss_of "$W/bun")" -v t="$TARGET_CPU" -v tr="$TARGET_RSS_MIB" 'BEGIN {
    gib = data / 1073741824
    printf "image data: %.0f MiB\n", data / 1048576
    printf "| direction | floor CPU s/GiB | amiport CPU s/GiB | ratio | target | amiport peak RSS MiB | target |\n"
    printf "|---|---:|---:|---:|---|---:|---|\n"
    printf "| S3 -> EBS (import s3://...) | %.2f | %.2f | %.2f | <=%s %s | %.0f | <%d %s |\n", fin / gib, imp / gib, imp / fin, t, imp / fin <= t ? "PASS" : "MISS", rimp / 1024, tr, rimp / 1024 < tr ? "PASS" : "MISS"
    printf "| EBS -> S3 (bundle snap-... --bucket) | %.2f | %.2f | %.2f | <=%s %s | %.0f | <%d %s |\n", fout / gib, bun / gib, bun / fout, t, bun / fout <= t ? "PASS" : "MISS", rbun / 1024, tr, rbun / 1024 < tr ? "PASS" : "MISS"
}'
