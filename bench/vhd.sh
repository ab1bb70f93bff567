#!/usr/bin/env bash
# bench/vhd.sh - compare `amiport convert` against `qemu-img convert` on the
# VHD and VHDX paths: vhdx->raw and raw->vpc (dynamic VHD), on the same inputs
# as bench/convert.sh (the VHDX inputs are made from its raw ones by
# `qemu-img convert -O vhdx` with qemu's defaults, and cached beside them).
#
# Usage: bench/vhd.sh [AMIPORT_BINARY]          (default: build/amiport)
#
# Settings (BENCH_DIR, BENCH_DATA_MIB, BENCH_VIRT_GIB, BENCH_REPEAT), inputs,
# timing and the report are shared with the other scripts: see bench/lib.sh.
set -euo pipefail

# Targets (from the issue).
TARGET_PLAIN=1.0      # ratio for uncompressed paths (both cases here)
TARGET_RSS_MIB=64     # amiport peak RSS must be below this

BENCH_TITLE="amiport convert benchmark: VHD and VHDX"
RESULTS_TITLE="VHD/VHDX convert benchmark"
RESULTS_FILE="results-vhd.md"
TARGETS_NOTE="Targets: ratio ≤$TARGET_PLAIN; amiport peak RSS <$TARGET_RSS_MIB MiB."
COMPARE_NOTE=$'\n(a VHD is CHS-sized, so it may be a little larger than the input; compare checks the extra is zeros).'

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The VHDX input: qemu-img's default layout (dynamic, block size by size).
extra_input() {
    [[ -f $1.vhdx ]] && return
    log "making $(basename "$1").vhdx"
    qemu-img convert -f raw -O vhdx "$1.raw" "$1.vhdx.tmp"
    mv "$1.vhdx.tmp" "$1.vhdx"
}
describe_input() { echo "$(basename "$1").vhdx ($(mib "$(alloc_bytes "$1.vhdx")") MiB allocated)"; }

bench_prepare "$@"
for f in "${FLAVOURS[@]}"; do
    bench_case "$f" "vhdx→raw"          vhdx  raw   0
    bench_case "$f" "raw→vpc (dynamic)" raw   vpc   0 -o subformat=dynamic
done
bench_report
