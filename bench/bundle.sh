#!/usr/bin/env bash
# bench/bundle.sh - compare `amiport bundle` and `amiport unbundle` against
# the shell pipelines ec2-bundle-image and ec2-unbundle run, on the OS-like
# input the other scripts use (the same BENCH_DIR, the same names):
#
#   bundle:   tar -c -S --owner 0 --group 0 | tee >(sha1sum) | gzip -9 |
#             openssl enc -e -aes-128-cbc -K K -iv V | split -b 10m -d -a 2,
#             then sha1sum of every part (the manifest's part digests)
#   unbundle: sha1sum of every part; cat parts | openssl enc -d -aes-128-cbc |
#             gunzip | tee >(sha1sum) | tar -x -S
#
# Both unbundlers read the same bundle: one the pipeline wrote, with its
# manifest from tests/bundle_manifest.py. The RSA steps (four key encryptions,
# one signature) are left out of the pipeline's time: milliseconds.
#
# Usage: bench/bundle.sh [AMIPORT_BINARY]      (default: build/amiport)
#
# Settings (BENCH_DIR, BENCH_DATA_MIB, BENCH_VIRT_GIB, BENCH_REPEAT), inputs,
# timing and medians are shared with the other scripts: see bench/lib.sh.
set -euo pipefail

TARGET_BUNDLE=0.5     # ratio for bundle (the pipeline gzips on one core)
TARGET_UNBUNDLE=1.0   # ratio for unbundle
TARGET_RSS_MIB=64     # amiport peak RSS must be below this

BENCH_TITLE="amiport bundle benchmark"
RESULTS_TITLE="bundle benchmark"
RESULTS_FILE="results-bundle.md"
TARGETS_NOTE="Targets: ratio ≤$TARGET_BUNDLE bundle, ≤$TARGET_UNBUNDLE unbundle; amiport peak RSS <$TARGET_RSS_MIB MiB."

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLAVOURS=(osmix)   # the OS-like mix only: what instance-store images hold
describe_input() { echo "bundled as $(basename "$1").raw"; }

for c in tar gzip gunzip split sha1sum mkfifo; do
    command -v "$c" >/dev/null || die "$c not found"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "tar is not GNU tar"
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 not found (for tests/bundle_manifest.py)"

bench_prepare "$@"
PEER_FACTS="- pipeline: $(tar --version | head -n1), gzip $(gzip --version | head -n1 | awk '{ print $2 }'), $(openssl version | awk '{ print $1, $2 }'), $(sha1sum --version | head -n1)"
FACTS+=$'\n'"$PEER_FACTS"
echo "$PEER_FACTS"
echo

# ---------------------------------------------------------------- the peer
# The pipelines, as scripts so that GNU time sees one command (its RSS is
# the largest process of the pipeline, its CPU time the sum of all of them).
cat >"$OUT/pipe-bundle.sh" <<'EOF'
# SRC_DIR NAME DEST KEY IV DIGEST_FILE
set -euo pipefail
src_dir=$1 name=$2 dest=$3 key=$4 iv=$5 digest=$6
rm -f "$digest.fifo"
mkfifo "$digest.fifo"
sha1sum <"$digest.fifo" >"$digest" &
sp=$!
tar -c -S --owner 0 --group 0 -C "$src_dir" "$name" | tee "$digest.fifo" | gzip -9 |
    openssl enc -e -aes-128-cbc -K "$key" -iv "$iv" | split -b 10m -d -a 2 - "$dest/$name.part."
wait "$sp"
rm -f "$digest.fifo"
sha1sum "$dest/$name".part.* >"$digest.parts"
EOF
cat >"$OUT/pipe-unbundle.sh" <<'EOF'
# SRC_DIR NAME DEST KEY IV DIGEST_FILE
set -euo pipefail
src_dir=$1 name=$2 dest=$3 key=$4 iv=$5 digest=$6
sha1sum "$src_dir/$name".part.* >"$digest.parts"
rm -f "$digest.fifo"
mkfifo "$digest.fifo"
sha1sum <"$digest.fifo" >"$digest" &
sp=$!
cat "$src_dir/$name".part.* | openssl enc -d -aes-128-cbc -K "$key" -iv "$iv" | gunzip |
    tee "$digest.fifo" | tar -x -S -C "$dest"
wait "$sp"
rm -f "$digest.fifo"
EOF

KEYS=$OUT/keys
mkdir -p "$KEYS"
for who in user ec2; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=amiport-bench-$who" \
        -keyout "$KEYS/$who-key.pem" -out "$KEYS/$who-cert.pem" >/dev/null 2>&1 \
        || die "openssl req could not make the $who key pair"
done
ACCOUNT=111122223333

BASE=$(input_base osmix)
SRC=$BASE.raw
NAME=$(basename "$SRC")
ROWS=()

parts_bytes() { local t=0 f; for f in "$1"/*.part.*; do t=$(( t + $(stat -c %s "$f") )); done; echo "$t"; }

# row LABEL TARGET PEER_RES AMIPORT_RES PEER_OUT_BYTES AMIPORT_OUT_BYTES VERIFY OK
row() {
    local label=$1 target=$2 pres=$3 ares=$4 psize=$5 asize=$6 verify=$7 ok=$8
    local p a prss pcpu ratio rstat arss mstat acpu
    p=($(summarize "$pres"))
    prss=$(awk -v k="${p[1]}" 'BEGIN { printf "%.1f", k / 1024 }')
    pcpu=$(awk -v u="${p[2]}" -v s="${p[3]}" 'BEGIN { printf "%.2f", u + s }')
    if (( ! ok )) || [[ ! -s $ares ]]; then
        NERR=$(( NERR + 1 ))
        ROWS+=("| $label | ${p[0]} | FAIL | - | ≤$target ERR | $prss | - | <$TARGET_RSS_MIB ERR | $pcpu | - | $(mib "$psize") | - | amiport failed |")
        return 0
    fi
    a=($(summarize "$ares"))
    ratio=$(awk -v a="${a[0]}" -v q="${p[0]}" 'BEGIN { if (q <= 0) q = 0.01; printf "%.2f", a / q }')
    if awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r <= t) }'; then rstat=PASS; NPASS=$((NPASS+1)); else rstat=MISS; NMISS=$((NMISS+1)); fi
    arss=$(awk -v k="${a[1]}" 'BEGIN { printf "%.1f", k / 1024 }')
    if (( a[1] < TARGET_RSS_MIB * 1024 )); then mstat=PASS; NPASS=$((NPASS+1)); else mstat=MISS; NMISS=$((NMISS+1)); fi
    acpu=$(awk -v u="${a[2]}" -v s="${a[3]}" 'BEGIN { printf "%.2f", u + s }')
    [[ $verify == identical ]] || NERR=$(( NERR + 1 ))
    ROWS+=("| $label | ${p[0]} | ${a[0]} | $ratio | ≤$target $rstat | $prss | $arss | <$TARGET_RSS_MIB $mstat | $pcpu | $acpu | $(mib "$psize") | $(mib "$asize") | $verify |")
}

# manifest_field MANIFEST TAG - the text of the first <TAG ...>...</TAG>.
manifest_field() {
    /usr/bin/python3 -c 'import re, sys
m = re.search(r"<%s(?: [^>]*)?>([^<]*)</%s>" % (sys.argv[2], sys.argv[2]), open(sys.argv[1]).read())
print(m.group(1) if m else "")' "$1" "$2"
}

# verify_amiport_bundle DIR - decodes amiport's bundle with openssl, gunzip
# and GNU tar and compares the image with the input; prints identical or
# what differs.
verify_amiport_bundle() {
    local dir=$1 m k v x=$OUT/verify
    m=$(ls "$dir"/*.manifest.xml 2>/dev/null | head -n1)
    [[ -n $m ]] || { echo "no manifest"; return; }
    manifest_field "$m" user_encrypted_key | xxd_r >"$OUT/k.bin"
    manifest_field "$m" user_encrypted_iv | xxd_r >"$OUT/v.bin"
    k=$(openssl pkeyutl -decrypt -inkey "$KEYS/user-key.pem" -in "$OUT/k.bin" 2>/dev/null) || { echo "key does not decrypt"; return; }
    v=$(openssl pkeyutl -decrypt -inkey "$KEYS/user-key.pem" -in "$OUT/v.bin" 2>/dev/null) || { echo "IV does not decrypt"; return; }
    rm -rf "$x"; mkdir -p "$x"
    if ! bash "$OUT/pipe-unbundle.sh" "$dir" "$NAME" "$x" "$k" "$v" "$OUT/verify.sha1" >"$OUT/verify.log" 2>&1; then
        echo "DIFFERS (standard tools cannot decode it)"; sed 's/^/    | /' "$OUT/verify.log" | tail -n 3 >&2; return
    fi
    if [[ $(cut -d' ' -f1 "$OUT/verify.sha1") != "$(manifest_field "$m" digest)" ]]; then
        echo "DIFFERS (tar SHA-1)"
    elif ! qemu-img compare -q -f raw -F raw "$SRC" "$x/$NAME" >/dev/null 2>&1; then
        echo "DIFFERS (image)"
    else
        echo identical
    fi
    rm -rf "$x"
}
xxd_r() { /usr/bin/python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))'; }

# ---------------------------------------------------------------- bundle
log "case bundle"
dd if="$SRC" of=/dev/null bs=4M status=none   # warm the input for both
pres=$OUT/p-bundle.res; ares=$OUT/a-bundle.res
: >"$pres"; : >"$ares"
psize=0 asize=0 ok=1 verify="not run"
PK= PV=
run_p() {
    rm -rf "$OUT/p-bundle"; mkdir -p "$OUT/p-bundle"
    PK=$(openssl rand -hex 16); PV=$(openssl rand -hex 16)
    run_timed "$pres" bash "$OUT/pipe-bundle.sh" "$(dirname "$SRC")" "$NAME" "$OUT/p-bundle" "$PK" "$PV" "$OUT/p-bundle.sha1" \
        || die "the ec2-bundle-image pipeline failed"
    psize=$(parts_bytes "$OUT/p-bundle")
}
run_a() {
    (( ok )) || return 0
    rm -rf "$OUT/a-bundle"; mkdir -p "$OUT/a-bundle"
    if ! run_timed "$ares" "$AMIPORT" bundle -f raw --cert "$KEYS/user-cert.pem" --privatekey "$KEYS/user-key.pem" \
            --user "$ACCOUNT" --ec2cert "$KEYS/ec2-cert.pem" --arch x86_64 --destination "$OUT/a-bundle" "$SRC"; then
        ok=0; rm -rf "$OUT/a-bundle"; return 0
    fi
    asize=$(parts_bytes "$OUT/a-bundle")
    [[ $verify == "not run" ]] && verify=$(verify_amiport_bundle "$OUT/a-bundle")
    rm -rf "$OUT/a-bundle"
}
for (( i = 1; i <= REPEAT; i++ )); do
    if (( i % 2 )); then run_p; run_a; else run_a; run_p; fi
done
{ echo "bundle pipeline (wall rss_kib user sys):"; sed 's/^/  /' "$pres"
  echo "bundle amiport:"; sed 's/^/  /' "$ares"; } >> "$RUNLOG"
row "osmix: bundle" "$TARGET_BUNDLE" "$pres" "$ares" "$psize" "$asize" "$verify" "$ok"

# ---------------------------------------------------------------- unbundle
# The input: the pipeline's last bundle, with its manifest.
IN=$OUT/in-bundle
mv "$OUT/p-bundle" "$IN"
/usr/bin/python3 "$REPO_ROOT/tests/bundle_manifest.py" --name "$NAME" --user "$ACCOUNT" \
    --size "$(stat -c %s "$SRC")" --digest "$(cut -d' ' -f1 "$OUT/p-bundle.sha1")" --key "$PK" --iv "$PV" \
    --user-cert "$KEYS/user-cert.pem" --ec2-cert "$KEYS/ec2-cert.pem" --privatekey "$KEYS/user-key.pem" \
    --arch x86_64 --out "$IN/$NAME.manifest.xml" "$IN/$NAME".part.* || die "bundle_manifest.py failed"
log "case unbundle ($(ls "$IN"/*.part.* | wc -l) parts)"
cat "$IN"/*.part.* >/dev/null   # warm the parts for both
pres=$OUT/p-unbundle.res; ares=$OUT/a-unbundle.res
: >"$pres"; : >"$ares"
psize=0 asize=0 ok=1 verify="not run"
run_p() {
    rm -rf "$OUT/p-unb"; mkdir -p "$OUT/p-unb"
    run_timed "$pres" bash "$OUT/pipe-unbundle.sh" "$IN" "$NAME" "$OUT/p-unb" "$PK" "$PV" "$OUT/p-unb.sha1" \
        || die "the ec2-unbundle pipeline failed"
    [[ $(cut -d' ' -f1 "$OUT/p-unb.sha1") == "$(cut -d' ' -f1 "$OUT/p-bundle.sha1")" ]] \
        || die "the ec2-unbundle pipeline's tar SHA-1 differs from the bundle's"
    psize=$(alloc_bytes "$OUT/p-unb/$NAME")
    rm -rf "$OUT/p-unb"
}
run_a() {
    (( ok )) || return 0
    rm -rf "$OUT/a-unb"; mkdir -p "$OUT/a-unb"
    if ! run_timed "$ares" "$AMIPORT" unbundle --manifest "$IN/$NAME.manifest.xml" --privatekey "$KEYS/user-key.pem" \
            --source "$IN" --destination "$OUT/a-unb"; then
        ok=0; rm -rf "$OUT/a-unb"; return 0
    fi
    asize=$(alloc_bytes "$OUT/a-unb/$NAME" 2>/dev/null || echo 0)
    if [[ $verify == "not run" ]]; then
        if qemu-img compare -q -f raw -F raw "$SRC" "$OUT/a-unb/$NAME" >"$OUT/cmp.log" 2>&1; then
            verify=identical
        else
            verify=DIFFERS; sed 's/^/    | /' "$OUT/cmp.log" | tail -n 3 >&2
        fi
    fi
    rm -rf "$OUT/a-unb"
}
for (( i = 1; i <= REPEAT; i++ )); do
    if (( i % 2 )); then run_p; run_a; else run_a; run_p; fi
done
{ echo "unbundle pipeline (wall rss_kib user sys):"; sed 's/^/  /' "$pres"
  echo "unbundle amiport:"; sed 's/^/  /' "$ares"; } >> "$RUNLOG"
row "osmix: unbundle" "$TARGET_UNBUNDLE" "$pres" "$ares" "$psize" "$asize" "$verify" "$ok"

# ---------------------------------------------------------------- report
header="| case | pipeline s | amiport s | ratio | target | pipeline RSS MiB | amiport RSS MiB | RSS target | pipeline CPU s | amiport CPU s | pipeline out MiB | amiport out MiB | amiport output vs input |"
sep="|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---|"
notes=$(cat <<EOF
Wall seconds are the median of $REPEAT run(s); ratio = amiport / the ec2-bundle-image (ec2-unbundle) shell pipeline (lower is better).
$TARGETS_NOTE
Pipeline RSS = its largest process; CPU s = user + sys of all its processes (mean over runs). "out MiB" = bytes of all parts (bundle) or allocated size of the image written (unbundle).
Both unbundlers read one bundle the pipeline wrote; amiport unbundle runs without --cert (the pipeline checks no signature either).
"amiport output vs input": bundle = amiport's bundle decoded with openssl, gunzip and GNU tar (tar SHA-1 = manifest digest, image = \`qemu-img compare\` with the input); unbundle = \`qemu-img compare\` of the image written with the input.
Both read warm inputs (page cache not dropped).
EOF
)
bench_write_report "$header" "$sep" "$notes"
