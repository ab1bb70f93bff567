#!/usr/bin/env bash
# bench/convert.sh - compare `amiport convert` against `qemu-img convert`.
#
# Usage: bench/convert.sh [AMIPORT_BINARY]      (default: build/amiport)
#
# Settings (BENCH_DIR, BENCH_DATA_MIB, BENCH_VIRT_GIB, BENCH_REPEAT), inputs,
# timing and the report are shared with the other scripts: see bench/lib.sh.
set -euo pipefail

# Targets (from the issue).
TARGET_PLAIN=1.0      # ratio for uncompressed paths
TARGET_COMPRESSED=0.6 # ratio for compressed paths
TARGET_RSS_MIB=64     # amiport peak RSS must be below this

BENCH_TITLE="amiport convert benchmark"
RESULTS_TITLE="convert benchmark"
RESULTS_FILE="results.md"
TARGETS_NOTE="Targets: ratio ≤$TARGET_PLAIN uncompressed, ≤$TARGET_COMPRESSED compressed; amiport peak RSS <$TARGET_RSS_MIB MiB."

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The qcow2 inputs are the ones lib.sh makes for every script.
describe_input() { echo "$(basename "$1").qcow2 ($(mib "$(stat -c %s "$1.qcow2")") MiB)"; }

bench_prepare "$@"
for f in "${FLAVOURS[@]}"; do
    bench_case "$f" "qcow2→raw"         qcow2 raw   0
    bench_case "$f" "raw→qcow2"         raw   qcow2 0
    bench_case "$f" "raw→qcow2 -c zlib" raw   qcow2 1 -o compression_type=zlib -c
    bench_case "$f" "raw→qcow2 -c zstd" raw   qcow2 1 -o compression_type=zstd -c
done
bench_report
