#!/usr/bin/env bash
# bench/check.sh - `amiport check` (native: reads the guest's metadata through
# the block layer) against `virt-inspector` (libguestfs: boots an appliance,
# here under TCG, LIBGUESTFS_BACKEND_SETTINGS=force_tcg) on each bootable
# fixture (fixtures/make-boot-fixtures.sh, importable in expected.json), and
# `amiport check` alone on a 2 TiB sparse qcow2 holding a fixture's
# partitions. virt-inspector runs with --no-applications --no-icon: the
# fixtures have no dpkg database (it fails without it) and amiport lists no
# packages either. Reports the median wall time of BENCH_REPEAT runs of each, the
# bytes amiport read from the image (check's bytes_read), the ratio
# virt-inspector / amiport (target >= 50) and whether amiport takes under
# 0.1 s (target).
#
# Usage: bench/check.sh [AMIPORT_BINARY]     (default build/amiport)
# Env:   BENCH_DIR (/tmp/amiport-bench), BENCH_REPEAT (3) as in lib.sh;
#        FIXTURES=DIR to use fixtures already built (else they are built into
#        $BENCH_DIR/fixtures, packages cached in $BENCH_DIR/fixtures-cache).
# Needs virt-inspector (libguestfs-tools, installed with apt-get if missing
# and running as root), qemu-img, sfdisk and GNU time.
set -euo pipefail

BENCH_TITLE="amiport check vs virt-inspector"
. "$(dirname "$0")/lib.sh"

TARGET_RATIO=50
TARGET_SECONDS=0.1
RESULTS_FILE=results-check.md
RESULTS_TITLE="check vs virt-inspector"
BIG_VIRT=2T

export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}

AMIPORT=${1:-$REPO_ROOT/build/amiport}
bench_check_setup   # settings, GNU time, $OUT (removed at exit)
for c in sfdisk python3; do command -v "$c" >/dev/null || die "$c not found"; done
if ! command -v virt-inspector >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing libguestfs-tools (virt-inspector)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y libguestfs-tools >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y libguestfs-tools >/dev/null; } \
            || die "could not install package 'libguestfs-tools'"
    fi
    command -v virt-inspector >/dev/null || die "virt-inspector missing: install package 'libguestfs-tools'"
fi
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-$BENCH_DIR/guestfs-cache}
mkdir -p "$LIBGUESTFS_CACHEDIR"

# ---------------------------------------------------------------- fixtures
if [[ -n ${FIXTURES:-} ]]; then
    [[ -s $FIXTURES/expected.json ]] || die "FIXTURES=$FIXTURES has no expected.json"
else
    FIXTURES=$BENCH_DIR/fixtures
    stamp=$(cat "$REPO_ROOT/fixtures/make-boot-fixtures.sh" "$REPO_ROOT/fixtures/expected.json" | sha256sum | cut -c1-16)
    if [[ $(cat "$FIXTURES/.stamp" 2>/dev/null) != "$stamp" ]]; then
        log "building the fixtures into $FIXTURES"
        rm -f "$FIXTURES/.stamp"
        OUT=$FIXTURES CACHE=$BENCH_DIR/fixtures-cache bash "$REPO_ROOT/fixtures/make-boot-fixtures.sh" \
            >"$BENCH_DIR/fixtures-build.log" 2>&1 || die "make-boot-fixtures.sh failed (log: $BENCH_DIR/fixtures-build.log)"
        echo "$stamp" >"$FIXTURES/.stamp"
    fi
fi
mapfile -t POSITIVE < <(python3 -c '
import json, sys
for n, e in json.load(open(sys.argv[1])).items():
    if e["importable"]:
        print(n)' "$FIXTURES/expected.json")
(( ${#POSITIVE[@]} )) || die "no bootable fixture in $FIXTURES/expected.json"

# big_qcow2 FIXTURE OUT - a 2 TiB qcow2 with FIXTURE's partition table made
# for 2 TiB (a GPT's backup header at the end of the 2 TiB), its first MiB
# (MBR boot code, GRUB's gap) and its partitions, at the same offsets: sfdisk
# and dd on a sparse 2 TiB raw file, then `qemu-img convert -n
# --target-is-zero` (holes stay unallocated) into `qemu-img create -f qcow2
# OUT 2T`: no loop device, nothing mounted.
big_qcow2() {
    local fx=$1 out=$2 raw=$OUT/big.raw line start size
    rm -f "$raw" "$out"
    truncate -s "$BIG_VIRT" "$raw"
    dd if="$fx" of="$raw" bs=1M count=1 conv=notrunc status=none
    # (sfdisk says the copied GPT does not fit the bigger disk; the new one does)
    sfdisk -d "$fx" | grep -v -E '^(device|first-lba|last-lba):' | sfdisk -q --no-reread "$raw" >/dev/null 2>&1 ||
        die "sfdisk could not write $fx's partition table for $BIG_VIRT"
    dd if="$fx" of="$raw" bs=446 count=1 conv=notrunc status=none   # the boot code sfdisk left alone or zeroed
    while read -r start size; do
        dd if="$fx" of="$raw" bs=512 skip="$start" seek="$start" count="$size" conv=notrunc,sparse status=none
    done < <(sfdisk -d "$fx" | awk -F'[=,]' '/ : start=/ { gsub(/ /, ""); print $2, $4 }')
    qemu-img create -q -f qcow2 "$out" "$BIG_VIRT"
    qemu-img convert -n --target-is-zero -f raw -O qcow2 "$raw" "$out"
    rm -f "$raw"
}

# ---------------------------------------------------------------- facts
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
if commit=$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null); then
    git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (dirty tree)"
else
    commit="none"
fi
load=$(cut -d' ' -f1-3 /proc/loadavg)
FACTS=$(cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- nproc: $(nproc); CPU: ${cpu_model:-unknown}; RAM: $(awk '/^MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo) MiB; kernel: $(uname -r); load average at start: $load
- virt-inspector: $(virt-inspector --version 2>/dev/null | head -n 1); LIBGUESTFS_BACKEND=$LIBGUESTFS_BACKEND LIBGUESTFS_BACKEND_SETTINGS=$LIBGUESTFS_BACKEND_SETTINGS (appliance cached in $LIBGUESTFS_CACHEDIR; one untimed run builds it first)
- amiport: $AMIPORT, git commit $commit
- fixtures: $FIXTURES ($(cd "$FIXTURES" && ls -- *.raw | wc -l) images of 128 MiB); big qcow2: $BIG_VIRT virtual
- runs: median wall time of $REPEAT run(s) per tool and case, tools alternated; inputs warm in the page cache
EOF
)
echo "== $BENCH_TITLE =="
echo "$FACTS"
echo

# ---------------------------------------------------------------- runs
# timed RESULT CMD... - one run: appends "wall_seconds rss_kib" to RESULT
# (wall from bash's microsecond clock; GNU time's is 10 ms coarse).
timed() {
    local res=$1 t0 t1 rc=0
    shift
    sync
    t0=$EPOCHREALTIME
    "$TIME" -f '%M' -o "$OUT/time.txt" -- "$@" >"$OUT/cmd.out" 2>"$OUT/cmd.err" || rc=$?
    t1=$EPOCHREALTIME
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }') $(tail -n 1 "$OUT/time.txt")" >>"$res"
    return "$rc"
}

RUNLOG=$BENCH_DIR/runs-check.log
: >"$RUNLOG"
ROWS=()
NPASS=0 NMISS=0 NERR=0

amiport_run() { # IMAGE FORMAT RESULT
    timed "$3" "$AMIPORT" check -f "$2" --output=json "$1" ||
        { sed 's/^/    | /' "$OUT/cmd.err" | tail -n 5 >&2; die "amiport check $1 failed"; }
    cp "$OUT/cmd.out" "$OUT/amiport.json"
}
inspector_run() { # IMAGE FORMAT RESULT
    timed "$3" virt-inspector --no-applications --no-icon --format="$2" -a "$1" ||
        { sed 's/^/    | /' "$OUT/cmd.err" | tail -n 5 >&2; die "virt-inspector $1 failed"; }
    grep -q '<distro>debian</distro>' "$OUT/cmd.out" || die "virt-inspector found no Debian on $1"
}

verdict() { # VALUE OP TARGET: VERDICT=PASS|MISS, counted
    if awk -v v="$1" -v t="$3" "BEGIN { exit !(v $2 t) }"; then
        NPASS=$((NPASS + 1)); VERDICT=PASS
    else
        NMISS=$((NMISS + 1)); VERDICT=MISS
    fi
}

# case NAME IMAGE FORMAT WITH_INSPECTOR(0/1)
bench_check_case() {
    local name=$1 img=$2 fmt=$3 vi=$4 i ares=$OUT/a.res vres=$OUT/v.res
    : >"$ares"
    : >"$vres"
    log "case $name"
    dd if="$img" of=/dev/null bs=4M status=none
    for ((i = 1; i <= REPEAT; i++)); do
        if ((i % 2)); then
            amiport_run "$img" "$fmt" "$ares"
            ((vi)) && inspector_run "$img" "$fmt" "$vres"
        else
            ((vi)) && inspector_run "$img" "$fmt" "$vres"
            amiport_run "$img" "$fmt" "$ares"
        fi
    done
    { echo "$name amiport (wall rss_kib):"; sed 's/^/  /' "$ares"
      ((vi)) && { echo "$name virt-inspector:"; sed 's/^/  /' "$vres"; }; } >>"$RUNLOG"
    local a v="-" ratio="-" rstat="-" astat bytes rss importable
    a=$(awk '{ print $1 }' "$ares" | median)
    rss=$(awk 'BEGIN { m = 0 } { if ($2 > m) m = $2 } END { printf "%.1f", m / 1024 }' "$ares")
    read -r bytes importable < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print(j["bytes_read"], "yes" if j["importable"] else "no")' "$OUT/amiport.json")
    [[ $importable == yes ]] || NERR=$((NERR + 1))
    if ((vi)); then
        v=$(awk '{ print $1 }' "$vres" | median)
        ratio=$(awk -v v="$v" -v a="$a" 'BEGIN { if (a <= 0) a = 0.0001; printf "%.0f", v / a }')
        verdict "$ratio" '>=' "$TARGET_RATIO"
        rstat="≥$TARGET_RATIO $VERDICT"
        v=$(printf '%.2f' "$v")
    fi
    verdict "$a" '<' "$TARGET_SECONDS"
    astat="<$TARGET_SECONDS $VERDICT"
    ROWS+=("| $name | $v | $(printf '%.3f' "$a") | $ratio | $rstat | $astat | $(awk -v b="$bytes" 'BEGIN { printf "%.2f MiB", b / 1048576 }') | $rss | $importable |")
}

log "warming virt-inspector (its appliance is built on the first run)"
virt-inspector --no-applications --no-icon --format=raw -a "$FIXTURES/${POSITIVE[0]}.raw" >/dev/null 2>"$OUT/warm.err" ||
    { tail -n 5 "$OUT/warm.err" >&2; die "virt-inspector does not run"; }
"$AMIPORT" check -f raw --output=json "$FIXTURES/${POSITIVE[0]}.raw" >/dev/null || true

for n in "${POSITIVE[@]}"; do
    bench_check_case "$n" "$FIXTURES/$n.raw" raw 1
done
BIG_SRC=x86_64-uefi-gpt
[[ -f $FIXTURES/$BIG_SRC.raw ]] || BIG_SRC=${POSITIVE[0]}
log "making a $BIG_VIRT qcow2 holding $BIG_SRC's partitions"
big_qcow2 "$FIXTURES/$BIG_SRC.raw" "$OUT/big.qcow2"
bench_check_case "$BIG_SRC in a $BIG_VIRT qcow2 ($(mib "$(alloc_bytes "$OUT/big.qcow2")") MiB allocated)" "$OUT/big.qcow2" qcow2 0

# ---------------------------------------------------------------- report
header="| case | virt-inspector s | amiport s | ratio | ratio target | amiport target | amiport read | amiport RSS MiB | importable |"
sep="|---|---:|---:|---:|---|---|---:|---:|---|"
notes=$(cat <<EOF
Wall seconds are the median of $REPEAT run(s); ratio = virt-inspector / amiport (higher is better).
Targets: ratio ≥$TARGET_RATIO, amiport under $TARGET_SECONDS s. "amiport read" = check's bytes_read (bytes read from the image).
virt-inspector (--no-applications --no-icon: the fixtures have no dpkg database) runs libguestfs's appliance under TCG (no KVM here): its time is the appliance's boot plus the inspection.
"importable" = what amiport check says (every case is a bootable fixture).
EOF
)
REPRODUCE="BENCH_REPEAT=$REPEAT bench/check.sh $AMIPORT"
bench_write_report "$header" "$sep" "$notes"
