#!/bin/bash
# qcow2_read.sh - amiport reads every kind of qcow2 image qemu makes exactly
# as qemu does.
#
# A matrix of images made by qemu-img and qemu-io (every cluster size from 512
# bytes to 2 MiB, compat 0.10 and 1.1, extended L2 entries, lazy refcounts,
# preallocation=metadata, zlib and zstd compression, zero clusters, unaligned
# patterned writes, sub-cluster writes, discards, a size that is not a
# multiple of the cluster size). For each image:
#   - `amiport convert -O raw` is byte-identical to `qemu-img convert -O raw`;
#   - `amiport map --output=json` agrees with `qemu-img map --output=json`
#     (map_equal in lib.sh);
#   - `amiport info --output=json` reports the virtual size, cluster size and
#     the qcow2 features that `qemu-img info` reports.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp
setup_tmp

NCHECKED=0

# check_img NAME - the three comparisons above, for $T/NAME.qcow2.
check_img() {
  local name=$1 img=$T/$1.qcow2

  # convert
  qimg convert -f qcow2 -O raw "$img" "$T/$name.qemu.raw"
  amiport_ok convert -f qcow2 -O raw "$img" "$T/$name.ours.raw"
  cmp "$T/$name.qemu.raw" "$T/$name.ours.raw" >"$T/cmp.out" 2>&1 ||
    fail "$name: amiport convert -O raw differs from qemu-img: $(head -1 "$T/cmp.out")"
  # again, letting amiport probe the format (a few images; it is slow to do all)
  case $name in
    plain-64k-*|extl2-64k|comp-zstd-64k|prealloc-4k)
      amiport_ok convert -O raw "$img" "$T/$name.ours2.raw"
      cmp -s "$T/$name.qemu.raw" "$T/$name.ours2.raw" ||
        fail "$name: amiport convert -O raw without -f differs from qemu-img"
      amiport_ok info "$img"
      grep -qi qcow2 "$T/stdout" || fail "$name: human info output does not mention qcow2"
      ;;
  esac
  rm -f "$T/$name.qemu.raw" "$T/$name.ours.raw" "$T/$name.ours2.raw"

  # map
  qemu-img map -f qcow2 --output=json "$img" >"$T/$name.qmap.json" || fail "$name: qemu-img map failed"
  amiport_ok map -f qcow2 --output=json "$img"
  cp "$T/stdout" "$T/$name.map.json"
  map_equal "$T/$name.map.json" "$T/$name.qmap.json" ||
    fail "$name: amiport map disagrees with qemu-img map (see $T/$name.map.json, $T/$name.qmap.json)"

  # info
  qemu-img info -f qcow2 --output=json "$img" >"$T/$name.qinfo.json" || fail "$name: qemu-img info failed"
  amiport_ok info --output=json "$img"
  cp "$T/stdout" "$T/$name.info.json"
  info_equal "$T/$name.info.json" "$T/$name.qinfo.json" \
    has:filename has:actual-size virtual-size cluster-size format \
    fs:compat fs:compression-type fs:extended-l2 fs:lazy-refcounts fs:refcount-bits ||
    fail "$name: amiport info disagrees with qemu-img info (see $T/$name.info.json)"
  NCHECKED=$((NCHECKED + 1))
}

# pattern_writes C S - qemu-io commands that touch a C-cluster image of size S
# in the interesting ways: unaligned writes, cross-cluster writes, zero
# clusters (aligned and unaligned), a discard, a write ending at the last byte.
pattern_writes() {
  local c=$1 s=$2
  PAT=(
    "write -P 0x11 0 512"
    "write -P 0xab 12345 7000"
    "write -P 0xcd $((c - 100)) 300"
    "write -P 0x22 $((3 * c)) $((4 * c))"
    "write -z $((3 * c)) $((2 * c))"
    "write -z $((8 * c + 1000)) 5000"
    "write -P 0x33 $((10 * c)) $((3 * c))"
    "discard $((10 * c)) $((2 * c))"
    "write -P 0x44 $((13 * c + 7)) 1"
    "write -P 0xef $((s - 777)) 777"
  )
}

# size_for C - at least 16 clusters and 4 MiB, plus 1536 bytes so the size is
# never a multiple of the cluster size.
size_for() {
  local c=$1 s=$((16 * $1))
  [ "$s" -ge 4194304 ] || s=4194304
  echo $((s + 1536))
}

bytes() {
  case $1 in
    *k) echo $((${1%k} * 1024)) ;;
    *M) echo $((${1%M} * 1048576)) ;;
    *) echo "$1" ;;
  esac
}

# --- plain images, every cluster size, both versions -------------------------
for cs in 512 1k 2k 4k 8k 16k 32k 64k 128k 256k 512k 1M 2M; do
  c=$(bytes $cs)
  s=$(size_for "$c")
  pattern_writes "$c" "$s"
  for compat in 1.1 0.10; do
    name=plain-$cs-v$compat
    qimg create -f qcow2 -o cluster_size=$c,compat=$compat "$T/$name.qcow2" "$s"
    qio "$T/$name.qcow2" "${PAT[@]}"
    check_img "$name"
    rm -f "$T/$name.qcow2"
  done
done

# an empty image (no data at all) and a tiny one smaller than a cluster
qimg create -f qcow2 "$T/empty.qcow2" 3M
check_img empty
qimg create -f qcow2 "$T/tiny.qcow2" 1536
qio "$T/tiny.qcow2" "write -P 0x7e 100 1000"
check_img tiny

# --- extended L2 entries: sub-cluster allocation -----------------------------
for cs in 16k 32k 64k 128k 256k 512k 1M 2M; do
  c=$(bytes $cs)
  s=$(size_for "$c")
  pattern_writes "$c" "$s"
  name=extl2-$cs
  qimg create -f qcow2 -o cluster_size=$c,extended_l2=on "$T/$name.qcow2" "$s"
  # 4k writes inside cluster 12, a sub-cluster zero write and a sub-cluster
  # discard inside cluster 14, on top of the usual pattern.
  sub=$((c / 32))
  qio "$T/$name.qcow2" "${PAT[@]}" \
    "write -P 0x5a $((12 * c + 4096)) 4096" \
    "write -P 0x5b $((12 * c + 5 * sub)) $sub" \
    "write -P 0x5c $((14 * c)) $c" \
    "write -z $((14 * c + 2 * sub)) $((3 * sub))" \
    "discard $((14 * c + 8 * sub)) $((2 * sub))" \
    "write -z $((15 * c + sub)) $sub"
  check_img "$name"
  rm -f "$T/$name.qcow2"
done

# --- lazy refcounts, preallocation=metadata, refcount widths ------------------
for cs in 4k 64k; do
  c=$(bytes $cs)
  s=$(size_for "$c")
  pattern_writes "$c" "$s"
  name=lazy-$cs
  qimg create -f qcow2 -o cluster_size=$c,lazy_refcounts=on "$T/$name.qcow2" "$s"
  qio "$T/$name.qcow2" "${PAT[@]}"
  check_img "$name"

  name=prealloc-$cs
  qimg create -f qcow2 -o cluster_size=$c,preallocation=metadata "$T/$name.qcow2" "$s"
  qio "$T/$name.qcow2" "${PAT[@]}"
  check_img "$name"

  name=prealloc-$cs-v0.10
  qimg create -f qcow2 -o cluster_size=$c,preallocation=metadata,compat=0.10 "$T/$name.qcow2" "$s"
  check_img "$name"
done
for rb in 1 8 64; do
  name=refbits-$rb
  s=$(size_for 65536)
  pattern_writes 65536 "$s"
  qimg create -f qcow2 -o refcount_bits=$rb "$T/$name.qcow2" "$s"
  qio "$T/$name.qcow2" "${PAT[@]}"
  check_img "$name"
done
name=prealloc-extl2
qimg create -f qcow2 -o cluster_size=64k,extended_l2=on,preallocation=metadata "$T/$name.qcow2" 4M
qio "$T/$name.qcow2" "write -P 0x61 70000 5000" "write -z 200000 100000"
check_img "$name"

# --- internal snapshots: only the active layer is read -----------------------
name=snapshot
qimg create -f qcow2 "$T/$name.qcow2" 4M
qio "$T/$name.qcow2" "write -P 0x01 0 1M" "write -P 0x02 2M 64k"
qimg snapshot -c snap1 "$T/$name.qcow2"
qio "$T/$name.qcow2" "write -P 0x03 65536 4096" "discard 2M 64k" "write -z 512k 128k" "write -P 0x04 3M 100k"
qimg snapshot -c snap2 "$T/$name.qcow2"
qio "$T/$name.qcow2" "write -P 0x05 100 100"
check_img "$name"

# --- a persistent dirty bitmap (an autoclear feature and a header extension) --
name=bitmap
qimg create -f qcow2 "$T/$name.qcow2" 4M
qimg bitmap --add "$T/$name.qcow2" bm0
qio "$T/$name.qcow2" "write -P 0x06 70000 9000"
check_img "$name"

# --- compression -------------------------------------------------------------
mk_mixed_raw "$T/mixed.raw" 4
mk_mixed_raw "$T/mixed8.raw" 8
for ct in zlib zstd; do
  for cs in 512 4k 64k 1M 2M; do
    src=$T/mixed.raw
    [ "$cs" != 2M ] || src=$T/mixed8.raw
    name=comp-$ct-$cs
    qimg convert -f raw -c -O qcow2 -o cluster_size=$cs,compression_type=$ct "$src" "$T/$name.qcow2"
    check_img "$name"
  done
  # compressed clusters partly overwritten (they become normal clusters),
  # zeroed and discarded, plus clusters written compressed by qemu-io.
  name=comp-$ct-rewritten
  qimg convert -f raw -c -O qcow2 -o compression_type=$ct "$T/mixed.raw" "$T/$name.qcow2"
  qio "$T/$name.qcow2" \
    "write -P 0x71 300000 5000" \
    "write -z 327680 65536" \
    "discard 1310720 131072" \
    "write -c -P 0x72 3932160 65536" \
    "write -c -P 0x73 4063232 131072"
  check_img "$name"
done
name=comp-zlib-v0.10
qimg convert -f raw -c -O qcow2 -o compat=0.10 "$T/mixed.raw" "$T/$name.qcow2"
check_img "$name"
name=comp-zstd-extl2
qimg convert -f raw -c -O qcow2 -o compression_type=zstd,extended_l2=on,cluster_size=32k "$T/mixed.raw" "$T/$name.qcow2"
check_img "$name"

info "checked $NCHECKED images"
exit 0
