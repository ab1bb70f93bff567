#!/bin/bash
# copy_engine.sh - what the copy engine promises beyond byte equality:
# Ctrl-C leaves nothing behind, --verify reads the result back, -p draws
# progress, memory does not grow with the virtual size, and a huge sparse
# image converts in moments.
. "$(dirname "$0")/lib.sh"
setup_tmp
require_cmd qemu-img qemu-io /usr/bin/time

# 1. SIGINT in the middle of a copy: exit 1, no destination, no temporary file.
mkdir "$T/out"
head -c 256M /dev/urandom > "$T/big.raw"
timeout -k 5 120 "$AMIPORT" convert -j1 -c -f raw -O qcow2 -o compression_type=zlib \
  "$T/big.raw" "$T/out/big.qcow2" 2>"$T/stderr" &
pid=$!
sleep 1
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 1 ] || fail "interrupted convert exited $rc, expected 1"
stderr_has "interrupted"
[ -z "$(ls -A "$T/out")" ] || fail "interrupted convert left files: $(ls -A "$T/out")"
rm -f "$T/big.raw"

# 2. --verify: the result is read back and compared.
qimg create -f qcow2 "$T/v.qcow2" 32M
qio "$T/v.qcow2" "write -P 0x5a 1M 3M" "write -z 8M 1M" "write -P 7 20M 4k"
amiport_ok convert --verify -O qcow2 -c "$T/v.qcow2" "$T/v2.qcow2"
qemu-img compare "$T/v.qcow2" "$T/v2.qcow2" >/dev/null || fail "--verify output differs"

# --sync flushes before the rename; the result is the same image.
amiport_ok convert --sync -O qcow2 -c "$T/v.qcow2" "$T/v3.qcow2"
qemu-img compare "$T/v.qcow2" "$T/v3.qcow2" >/dev/null || fail "--sync output differs"
qemu-img check "$T/v3.qcow2" >/dev/null || fail "--sync output fails qemu-img check"

# 3. -p draws a progress bar that reaches 100%.
amiport_ok convert -p -O raw "$T/v.qcow2" "$T/v.raw"
grep -q '100.0%' "$T/stderr" || fail "-p printed no 100% line: $(cat "$T/stderr")"

# 4. A 64 TiB qcow2 holding a few MiB converts to qcow2 quickly and in little memory,
#    and to an 8 TiB sparse raw (the largest file ext4 takes is 16 TiB).
qimg create -f qcow2 "$T/huge.qcow2" 64T
qio "$T/huge.qcow2" "write -P 1 0 1M" "write -P 2 32T 1M" "write -P 3 70368744112128 64k"
/usr/bin/time -f '%M %e' -o "$T/time" "$AMIPORT" convert -O qcow2 "$T/huge.qcow2" "$T/huge2.qcow2" \
  || fail "64 TiB convert failed"
read -r rss secs < "$T/time"
info "64 TiB qcow2 -> qcow2: peak RSS ${rss} KiB, ${secs}s"
[ "$rss" -lt 65536 ] || fail "peak RSS ${rss} KiB >= 64 MiB for a sparse 64 TiB image"
qemu-img compare "$T/huge.qcow2" "$T/huge2.qcow2" >/dev/null || fail "64 TiB copy differs"
qemu-img check "$T/huge2.qcow2" >/dev/null || fail "64 TiB copy fails qemu-img check"

qimg create -f qcow2 "$T/eight.qcow2" 8T
qio "$T/eight.qcow2" "write -P 9 4T 2M" "write -P 8 8796093018112 4k"
amiport_ok convert -O raw "$T/eight.qcow2" "$T/eight.raw"
used=$(du -k "$T/eight.raw" | cut -f1)
[ "$used" -lt 16384 ] || fail "8 TiB sparse raw output uses ${used} KiB on disk"
cmp -n 1M <(dd if="$T/eight.raw" bs=1M skip=$((4 * 1024 * 1024)) count=2 status=none) \
  <(head -c 2M /dev/zero | tr '\0' '\011') || fail "8 TiB raw output lacks the data at 4 TiB"
info "ok"
