#!/bin/bash
# qcow2_write.sh - qcow2 images amiport writes are valid for qemu.
#
# From a few raw sources (random, written zeros, sparse with holes,
# compressible text, a size that is not a multiple of 64k, 1M+512) amiport
# converts to qcow2 across cluster sizes 512/4k/64k/2M, compat 0.10 and 1.1,
# uncompressed and -c with zlib and zstd (zstd needs compat 1.1). Every output
#   - passes `qemu-img check` (exit 0, "No errors were found", no leaks);
#   - is identical to its source for `qemu-img compare`;
#   - has the cluster size, compat and compression type asked for
#     (`qemu-img info`).
# Then: qcow2 -> qcow2 and compressed qcow2 -> raw round trips, and options
# that must be refused (zstd with compat=0.10, an unknown -o option).
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp
setup_tmp

NCHECKED=0

# --- sources -----------------------------------------------------------------
head -c 3145728 /dev/urandom >"$T/random.raw"
head -c 2097152 /dev/zero >"$T/zeros.raw" # written zeros, not a hole
# sparse: 64 MiB, data at a few places, the rest holes
truncate -s 64M "$T/sparse.raw"
for off in 0 1 17 300 1023 4095; do # in 16 KiB units
  head -c 9000 /dev/urandom | dd of="$T/sparse.raw" bs=16k seek=$off conv=notrunc status=none
done
"$PYTHON" - "$T/text.raw" <<'EOF'
import sys, random
r = random.Random(7)
w = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod".split()
buf = bytearray()
while len(buf) < 2621440:
    buf += r.choice(w) + b" "
open(sys.argv[1], "wb").write(buf[:2621440])
EOF
# not a multiple of 64k (but of 512), and 1M+512
head -c $((1048576 + 65536 + 4608)) /dev/urandom >"$T/odd.raw"
head -c $((1048576 + 512)) /dev/urandom >"$T/mplus512.raw"
mk_mixed_raw "$T/mixed.raw" 4
SOURCES="random zeros sparse text odd mplus512 mixed"
mkdir "$T/o"

# check_qcow2 SRC OUT CLUSTER COMPAT CTYPE [FMT] - the three checks above.
check_qcow2() {
  local src=$1 out=$2 cs=$3 compat=$4 ctype=$5 sfmt=${6:-raw} rc=0
  qemu-img check -f qcow2 "$out" >"$T/check.out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q 'No errors were found' "$T/check.out" ||
    grep -qi 'leak' "$T/check.out"; then
    cat "$T/check.out" >&2
    fail "qemu-img check $out failed (exit $rc)"
  fi
  rc=0
  qemu-img compare -f "$sfmt" -F qcow2 "$src" "$out" >"$T/compare.out" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || {
    cat "$T/compare.out" >&2
    fail "qemu-img compare $src $out: exit $rc"
  }
  qemu-img info -f qcow2 "$out" >"$T/qinfo.out" 2>&1 || fail "qemu-img info $out"
  grep -q "^cluster_size: $cs\$" "$T/qinfo.out" &&
    grep -q "^ *compat: $compat\$" "$T/qinfo.out" &&
    grep -q "^ *compression type: $ctype\$" "$T/qinfo.out" &&
    ! grep -q "^ *corrupt: true" "$T/qinfo.out" || {
    cat "$T/qinfo.out" >&2
    fail "qemu-img info $out: want cluster_size $cs, compat $compat, compression type $ctype, not corrupt"
  }
  NCHECKED=$((NCHECKED + 1))
}

bytes() {
  case $1 in
    *k) echo $((${1%k} * 1024)) ;;
    *M) echo $((${1%M} * 1048576)) ;;
    *) echo "$1" ;;
  esac
}

# --- the matrix --------------------------------------------------------------
for src in $SOURCES; do
  for cs in 512 4k 64k 2M; do
    c=$(bytes $cs)
    for compat in 1.1 0.10; do
      for comp in none zlib zstd; do
        [ "$comp" != zstd ] || [ "$compat" = 1.1 ] || continue
        # the 512-byte cluster matrix is slow: only some sources, compression for two
        if [ "$cs" = 512 ]; then
          case $src in
            text | mixed) ;;
            sparse | zeros) continue ;;
            *) [ "$comp" = none ] || continue ;;
          esac
        fi
        out=$T/o/$src-$cs-v$compat-$comp.qcow2
        opts=cluster_size=$c,compat=$compat
        cflag=()
        ctype=zlib
        if [ "$comp" != none ]; then
          cflag=(-c)
          ctype=$comp
          [ "$compat" = 0.10 ] || opts=$opts,compression_type=$comp
        fi
        amiport_ok convert -f raw -O qcow2 -o "$opts" "${cflag[@]}" "$T/$src.raw" "$out"
        [ "$(ls -A "$T/o")" = "$(basename "$out")" ] ||
          fail "after a convert $T/o should hold only $(basename "$out"), it holds: $(ls -A "$T/o")"
        check_qcow2 "$T/$src.raw" "$out" "$c" "$compat" "$ctype"
        if [ "$comp" != none ] && [ "$cs" != 2M ] && { [ "$src" = text ] || [ "$src" = zeros ]; }; then
          # compressible data must actually shrink (zeros may also become
          # holes); allow 4 clusters of metadata
          plain=$(stat -c %s "$T/$src.raw")
          got=$(stat -c %s "$out")
          [ "$got" -lt $((plain / 2 + 4 * c)) ] ||
            fail "$out: -c $comp output is $got bytes for a $plain byte compressible source"
        fi
        rm -f "$out"
      done
    done
  done
done

# default options: 64k clusters, compat 1.1, zlib
amiport_ok convert -O qcow2 "$T/mixed.raw" "$T/default.qcow2"
check_qcow2 "$T/mixed.raw" "$T/default.qcow2" 65536 1.1 zlib

# the sparse source stays sparse: clusters only where data is
amiport_ok convert -O qcow2 -o cluster_size=4k "$T/sparse.raw" "$T/sparse-4k.qcow2"
sz=$(stat -c %s "$T/sparse-4k.qcow2")
[ "$sz" -lt 1048576 ] || fail "sparse 64 MiB source with 54 KiB of data became a $sz byte qcow2"
qemu-img map -f qcow2 --output=json "$T/sparse-4k.qcow2" >"$T/q.json"
qemu-img map -f raw --output=json "$T/sparse.raw" >"$T/r.json"
map_equal "$T/q.json" "$T/r.json" || fail "qcow2 written from sparse.raw maps differently from its source"

# a size that is not even a multiple of 512: rounded up, like qemu-img does
head -c 1000001 /dev/urandom >"$T/byte1.raw"
amiport_ok convert -f raw -O qcow2 "$T/byte1.raw" "$T/byte1.qcow2"
check_qcow2 "$T/byte1.raw" "$T/byte1.qcow2" 65536 1.1 zlib
amiport_ok convert -O raw "$T/byte1.qcow2" "$T/byte1.back.raw"
cmp -n 1000001 "$T/byte1.raw" "$T/byte1.back.raw" || fail "byte1.raw -> qcow2 -> raw lost bytes"

# a multi-threaded convert with progress gives the same result
amiport_ok convert -p -j 4 -O qcow2 "$T/random.raw" "$T/j4.qcow2"
check_qcow2 "$T/random.raw" "$T/j4.qcow2" 65536 1.1 zlib

# --- round trips -------------------------------------------------------------
# qcow2 made by qemu (zero clusters, compressed clusters, extended L2) -> qcow2 by us
qimg convert -f raw -c -O qcow2 -o compression_type=zstd "$T/mixed.raw" "$T/q-src.qcow2"
qio "$T/q-src.qcow2" "write -P 0x5a 12345 7000" "write -z 1048576 131072" "discard 2097152 65536"
for opts in cluster_size=4k,compat=0.10 cluster_size=2M cluster_size=64k,compression_type=zstd; do
  cflag=()
  case $opts in *compression_type*) cflag=(-c) ;; esac
  amiport_ok convert -O qcow2 -o "$opts" "${cflag[@]}" "$T/q-src.qcow2" "$T/q-out.qcow2"
  case $opts in
    cluster_size=4k,*) check_qcow2 "$T/q-src.qcow2" "$T/q-out.qcow2" 4096 0.10 zlib qcow2 ;;
    cluster_size=2M) check_qcow2 "$T/q-src.qcow2" "$T/q-out.qcow2" 2097152 1.1 zlib qcow2 ;;
    *) check_qcow2 "$T/q-src.qcow2" "$T/q-out.qcow2" 65536 1.1 zstd qcow2 ;;
  esac
  rm -f "$T/q-out.qcow2"
done
# our own compressed qcow2 -> raw by us, byte for byte
for ct in zlib zstd; do
  amiport_ok convert -c -O qcow2 -o compression_type=$ct "$T/mixed.raw" "$T/rt-$ct.qcow2"
  amiport_ok convert -O raw "$T/rt-$ct.qcow2" "$T/rt-$ct.raw"
  cmp "$T/mixed.raw" "$T/rt-$ct.raw" || fail "mixed.raw -> qcow2 -c $ct -> raw is not the same bytes"
  # and qemu reads our compressed image the same way
  qimg convert -O raw "$T/rt-$ct.qcow2" "$T/rt-$ct.qemu.raw"
  cmp "$T/mixed.raw" "$T/rt-$ct.qemu.raw" || fail "qemu-img reads our -c $ct qcow2 differently"
done
# our qcow2 -> our qcow2 -> raw
amiport_ok convert -O qcow2 -o cluster_size=512 "$T/odd.raw" "$T/odd1.qcow2"
amiport_ok convert -O qcow2 -o cluster_size=2M,compat=0.10 "$T/odd1.qcow2" "$T/odd2.qcow2"
check_qcow2 "$T/odd.raw" "$T/odd2.qcow2" 2097152 0.10 zlib
amiport_ok convert -O raw "$T/odd2.qcow2" "$T/odd2.raw"
cmp "$T/odd.raw" "$T/odd2.raw" || fail "odd.raw -> qcow2 -> qcow2 -> raw is not the same bytes"

# --- options that must be refused ---------------------------------------------
mkdir "$T/refused"
expect_rc "1|2" convert -c -O qcow2 -o compression_type=zstd,compat=0.10 "$T/text.raw" "$T/refused/x.qcow2"
stderr_is_error
stderr_has "zstd|compression_type|compression type" "0\\.10|compat"
dir_empty "$T/refused"
expect_rc "2|1" convert -O qcow2 -o nonsense=1 "$T/text.raw" "$T/refused/x.qcow2"
stderr_is_error
stderr_has nonsense
dir_empty "$T/refused"
expect_rc "2|1" convert -O qcow2 -o cluster_size=3000 "$T/text.raw" "$T/refused/x.qcow2"
stderr_is_error
stderr_has "cluster_size|cluster size"
dir_empty "$T/refused"
expect_rc "2|1" convert -O qcow2 -o cluster_size=4M "$T/text.raw" "$T/refused/x.qcow2"
stderr_has "cluster_size|cluster size"
dir_empty "$T/refused"
expect_rc "2|1" convert -O qcow2 -o compat=2 "$T/text.raw" "$T/refused/x.qcow2"
stderr_has compat
dir_empty "$T/refused"

info "checked $NCHECKED qcow2 outputs"
exit 0
