#!/bin/bash
# raw.sh - the raw format and the command line around it.
#
#   - raw -> raw keeps holes: a 1 GiB file with 3 small data areas converts to
#     a file of the same bytes that allocates almost nothing, and its map
#     shows data only where data is;
#   - `amiport map` of a raw file with holes agrees with `qemu-img map`;
#   - `-f raw` on a qcow2 file reads the file's own bytes;
#   - probing a file of random bytes warns on stderr that raw was guessed;
#   - an existing destination is refused without --force (exit 1, untouched)
#     and replaced with it;
#   - usage errors exit 2; --help of every command exits 0 with a usage text.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp du
setup_tmp

# What a "guessed raw" warning must say (extended regexes, case-insensitive).
WARN_GUESS_RAW=("raw" "guess|prob|assum|not recogni|unknown format|no format")
# What a refused existing destination must say.
ERR_EXISTS=("exist" "--force")

# --- raw -> raw keeps holes --------------------------------------------------
src=$T/big.raw
truncate -s 1G "$src"
head -c 100000 /dev/urandom | dd of="$src" bs=4096 seek=0 conv=notrunc status=none
head -c 65536 /dev/urandom | dd of="$src" bs=1M seek=300 conv=notrunc status=none
head -c 5000 /dev/urandom | dd of="$src" bs=1 seek=$((1073741824 - 5000)) conv=notrunc status=none
amiport_ok convert -O raw "$src" "$T/big.out.raw"
[ "$(stat -c %s "$T/big.out.raw")" = 1073741824 ] || fail "raw -> raw changed the size"
cmp "$src" "$T/big.out.raw" || fail "raw -> raw changed the bytes"
kib=$(du -k "$T/big.out.raw" | cut -f1)
[ "$kib" -lt 2048 ] || fail "raw -> raw of a sparse 1 GiB file allocates $kib KiB (holes were filled)"

amiport_ok map --output=json "$T/big.out.raw"
cp "$T/stdout" "$T/big.map.json"
"$PYTHON" - "$T/big.map.json" <<'EOF' || fail "map of the sparse raw copy is wrong (see $T/big.map.json)"
import json, sys
m = json.load(open(sys.argv[1]))
data = [(e["start"], e["length"]) for e in m if e["data"]]
total = sum(l for _, l in data)
# the three areas, rounded out to the file system's blocks
want = [(0, 100000), (300 << 20, 65536), ((1 << 30) - 5000, 5000)]
for s, l in want:
    if not any(ds <= s and s + l <= ds + dl for ds, dl in data):
        print("data at %d+%d is not inside a data extent: %s" % (s, l, data))
        sys.exit(1)
if total > 1 << 20:
    print("map says %d bytes are data; only about 170 KB are" % total)
    sys.exit(1)
end = 0
for e in m:
    if e["start"] != end:
        print("map has a gap or overlap at %d" % end)
        sys.exit(1)
    end = e["start"] + e["length"]
if end != 1 << 30:
    print("map covers %d bytes, not 1 GiB" % end)
    sys.exit(1)
EOF

# --- raw map agrees with qemu-img --------------------------------------------
for f in "$src" "$T/big.out.raw"; do
  amiport_ok map -f raw --output=json "$f"
  cp "$T/stdout" "$T/ours.json"
  qemu-img map -f raw --output=json "$f" >"$T/qemu.json" || fail "qemu-img map $f"
  map_equal "$T/ours.json" "$T/qemu.json" || fail "amiport map $f disagrees with qemu-img map"
done
holes=$T/holes.raw
truncate -s 10M "$holes"
for off in 1 2 3 7 100 101 2559; do # 4 KiB units
  head -c 4096 /dev/urandom | dd of="$holes" bs=4096 seek=$off conv=notrunc status=none
done
dd if=/dev/zero of="$holes" bs=4096 seek=200 count=16 conv=notrunc status=none # written zeros
amiport_ok map --output=json "$holes"
cp "$T/stdout" "$T/ours.json"
qemu-img map -f raw --output=json "$holes" >"$T/qemu.json"
map_equal "$T/ours.json" "$T/qemu.json" || fail "amiport map $holes disagrees with qemu-img map"
amiport_ok map "$holes" # human output works too
[ -s "$T/stdout" ] || fail "human map output is empty"
amiport_ok info --output=json "$holes"
cp "$T/stdout" "$T/info.json"
[ "$(json_get "$T/info.json" format)" = raw ] || fail "info format of a raw file is not raw"
[ "$(json_get "$T/info.json" virtual-size)" = 10485760 ] || fail "info virtual-size of a 10 MiB raw file"
amiport_ok convert -f raw -O raw "$holes" "$T/holes.out.raw"
cmp "$holes" "$T/holes.out.raw" || fail "raw -> raw of holes.raw changed the bytes"

# odd sizes survive raw -> raw exactly
head -c 1000001 /dev/urandom >"$T/odd.raw"
amiport_ok convert -f raw -O raw "$T/odd.raw" "$T/odd.out.raw"
cmp "$T/odd.raw" "$T/odd.out.raw" || fail "raw -> raw of a 1000001-byte file differs"

# --- -f raw on a qcow2 file reads the container's bytes ----------------------
qimg create -f qcow2 "$T/q.qcow2" 8M
amiport_ok convert -f raw -O raw "$T/q.qcow2" "$T/q.bytes"
cmp "$T/q.qcow2" "$T/q.bytes" || fail "-f raw on a qcow2 file did not copy the file's bytes"
amiport_ok info -f raw --output=json "$T/q.qcow2"
cp "$T/stdout" "$T/info.json"
[ "$(json_get "$T/info.json" format)" = raw ] || fail "info -f raw on a qcow2 file says format $(json_get "$T/info.json" format)"
[ "$(json_get "$T/info.json" virtual-size)" = "$(stat -c %s "$T/q.qcow2")" ] ||
  fail "info -f raw on a qcow2 file: virtual-size is not the file size"
amiport_ok info --output=json "$T/q.qcow2"
cp "$T/stdout" "$T/info.json"
[ "$(json_get "$T/info.json" format)" = qcow2 ] || fail "probing a qcow2 file does not say qcow2"
[ "$(json_get "$T/info.json" virtual-size)" = 8388608 ] || fail "probed qcow2 virtual-size"

# --- probing random bytes guesses raw, and says so -------------------------
head -c 1048576 /dev/urandom >"$T/random.bin"
amiport_ok info --output=json "$T/random.bin"
cp "$T/stdout" "$T/info.json"
[ "$(json_get "$T/info.json" format)" = raw ] || fail "random bytes probed as $(json_get "$T/info.json" format)"
stderr_has "${WARN_GUESS_RAW[@]}"
amiport_ok convert -O raw "$T/random.bin" "$T/random.out"
cmp "$T/random.bin" "$T/random.out" || fail "probed raw convert changed the bytes"
stderr_has "${WARN_GUESS_RAW[@]}"
# with -f raw there is nothing to warn about
amiport_ok info -f raw "$T/random.bin"
grep -Eiq "guess|prob|assum" "$T/stderr" && fail "info -f raw still warns: $(cat "$T/stderr")"

# --- existing destination ----------------------------------------------------
mkdir "$T/d"
head -c 4096 /dev/urandom >"$T/d/dst"
cp "$T/d/dst" "$T/dst.orig"
expect_rc 1 convert -f raw -O raw "$T/odd.raw" "$T/d/dst"
stderr_is_error
stderr_has "dst" "${ERR_EXISTS[@]}"
cmp "$T/dst.orig" "$T/d/dst" || fail "refused convert touched the existing destination"
[ "$(ls -A "$T/d")" = dst ] || fail "refused convert left files behind: $(ls -A "$T/d")"
expect_rc 1 convert -f raw -O qcow2 "$T/odd.raw" "$T/d/dst"
cmp "$T/dst.orig" "$T/d/dst" || fail "refused convert -O qcow2 touched the existing destination"
amiport_ok convert --force -f raw -O raw "$T/odd.raw" "$T/d/dst"
cmp "$T/odd.raw" "$T/d/dst" || fail "convert --force did not replace the destination"
[ "$(ls -A "$T/d")" = dst ] || fail "convert --force left files behind: $(ls -A "$T/d")"
# a failed convert with --force leaves the old destination alone and no temp file
cp "$T/dst.orig" "$T/d/dst"
expect_rc 1 convert --force -O raw "$T/no-such-file" "$T/d/dst"
stderr_has "no-such-file"
cmp "$T/dst.orig" "$T/d/dst" || fail "failed convert --force replaced the destination"
[ "$(ls -A "$T/d")" = dst ] || fail "failed convert --force left files behind: $(ls -A "$T/d")"

# --- usage errors and help ---------------------------------------------------
expect_rc 2
expect_rc 2 nosuchcommand
expect_rc 2 info
expect_rc 2 map
expect_rc 2 convert
expect_rc 2 convert -O raw "$T/odd.raw"
expect_rc 2 info --no-such-option "$T/odd.raw"
stderr_has "no-such-option"
expect_rc 2 convert --bogus -O raw "$T/odd.raw" "$T/d/x"
expect_rc 2 convert -O nosuchformat "$T/odd.raw" "$T/d/x"
stderr_has nosuchformat
expect_rc 2 info --output=xml "$T/odd.raw"
[ "$(ls -A "$T/d")" = dst ] || fail "usage errors left files behind: $(ls -A "$T/d")"
expect_rc 1 info "$T/no-such-file"
stderr_is_error
stderr_has "no-such-file"
expect_rc "1|2" info -f nosuchformat "$T/odd.raw"
stderr_has nosuchformat

for cmd in "" info map convert; do
  # shellcheck disable=SC2086
  amiport_ok $cmd --help
  grep -qi usage "$T/stdout" || fail "amiport $cmd --help prints no usage on stdout"
  [ -z "$cmd" ] || grep -q -- "$cmd" "$T/stdout" || fail "amiport $cmd --help does not name the command"
done
amiport_ok convert --help
for opt in -O -o -c -p -j --force --allow-backing; do
  grep -q -- "$opt" "$T/stdout" || fail "amiport convert --help does not document $opt"
done

exit 0
