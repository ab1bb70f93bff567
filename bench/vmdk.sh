#!/usr/bin/env bash
# bench/vmdk.sh - compare `amiport convert` against `qemu-img convert` on the
# VMDK streamOptimized paths: raw -> vmdk (compressed, what EC2 imports) and
# vmdk -> raw, on the same random and OS-like inputs as bench/convert.sh
# (the inputs are shared: same BENCH_DIR, same names).
#
# Usage: bench/vmdk.sh [AMIPORT_BINARY]      (default: build/amiport)
#
# Settings (BENCH_DIR, BENCH_DATA_MIB, BENCH_VIRT_GIB, BENCH_REPEAT), inputs,
# timing and the report are shared with the other scripts: see bench/lib.sh.
set -euo pipefail

# Targets (from the VMDK issue).
TARGET_PLAIN=1.0      # ratio for the read path (streamOptimized -> raw)
TARGET_COMPRESSED=0.5 # ratio for raw -> streamOptimized (qemu-img deflates on one core)
TARGET_RSS_MIB=64     # amiport peak RSS must be below this

BENCH_TITLE="amiport VMDK benchmark"
RESULTS_TITLE="VMDK benchmark"
RESULTS_FILE="results-vmdk.md"
TARGETS_NOTE="Targets: ratio ≤$TARGET_COMPRESSED raw→streamOptimized, ≤$TARGET_PLAIN streamOptimized→raw; amiport peak RSS <$TARGET_RSS_MIB MiB."

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The vmdk input: streamOptimized, written by qemu-img from the raw one.
extra_input() {
    [[ -f $1.vmdk ]] && return
    log "making $(basename "$1").vmdk (streamOptimized, by qemu-img)"
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$1.raw" "$1.vmdk.tmp"
    mv "$1.vmdk.tmp" "$1.vmdk"
}
describe_input() { echo "$(basename "$1").vmdk ($(mib "$(stat -c %s "$1.vmdk")") MiB, streamOptimized by qemu-img)"; }

bench_prepare "$@"
# streamOptimized is compressed by its subformat, not by -c: the compressed
# case only takes TARGET_COMPRESSED.
for f in "${FLAVOURS[@]}"; do
    bench_case "$f" "raw→vmdk streamOptimized" raw  vmdk 1 -o subformat=streamOptimized
    bench_case "$f" "vmdk streamOptimized→raw" vmdk raw  0
done
bench_report
