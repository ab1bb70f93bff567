#!/bin/bash
# hostile.sh - every file of the hostile corpus (fixtures/hostile/, see its
# README.md) gets its specific error, in bounded memory and time.
#
# The committed files are used in place; fixtures/hostile/make.sh builds the
# others (VHDX, a 10 MiB descriptor, guest disks made with mkfs) into the
# scratch directory. For each row of the table below, amiport runs
#   info, check --output=json, convert -O raw and convert -O qcow2 -j 4
# under /usr/bin/time and `ulimit -v` (1 GiB), and the test asserts, per
# command:
#   - the exit status is the one in the table (a crash or a hang never is);
#   - when it is not 0, stderr has an "amiport: " line and the row's regex;
#     check's output (JSON, or the error) has the regex whatever its status;
#   - a convert that fails leaves nothing behind (no output, no temp file);
#   - peak RSS under 256 MiB, CPU time (user + system) under 10 s, elapsed
#     time under 30 s (elapsed is printed; a loaded machine stretches it).
# A sanitizer build (AMIPORT_SANITIZED=1, or __asan_init in the binary) runs
# without the ulimit (ASan reserves terabytes of address space) and with 5
# times the time limits (the gzip bomb takes ~4 s of CPU under ASan, nearly
# all of it in zlib).
# A row with a reason in its last column is a known failure of amiport: its
# results are printed with "KNOWN:" and the reason, and do not fail the test
# (it says so when such a row starts passing).
. "$(dirname "$0")/lib.sh"
require_cmd mkfs.ext4 debugfs sfdisk mkfs.xfs xfs_db mkfs.fat mcopy mmd
[ -x /usr/bin/time ] || skip "/usr/bin/time is not installed (Debian package time)"
setup_tmp

HOSTILE=$SRCDIR/fixtures/hostile
RSS_MAX_KIB=$((256 * 1024))
CPU_MAX_S=10
ELAPSED_MAX_S=30
VMEM_KIB=$((1024 * 1024))

sanitized=${AMIPORT_SANITIZED:-}
if [ -z "$sanitized" ] && LC_ALL=C grep -q __asan_init "$AMIPORT" 2>/dev/null; then
  sanitized=1
fi
if [ -n "$sanitized" ]; then
  CPU_MAX_S=$((CPU_MAX_S * 5)) ELAPSED_MAX_S=$((ELAPSED_MAX_S * 5))
  info "sanitizer build: no ulimit -v; CPU time under $CPU_MAX_S s, elapsed under $ELAPSED_MAX_S s"
fi

t0=$SECONDS
bash "$HOSTILE/make.sh" "$T/gen" >"$T/make.log" 2>&1 || {
  tail -n 30 "$T/make.log" >&2
  fail "fixtures/hostile/make.sh failed"
}
info "generated the corpus's large files in $((SECONDS - t0)) s"

# ---------------------------------------------------------------------------
# FILE @ OPTIONS @ INFO @ CHECK @ CONVERT @ REGEX @ KNOWN
# The exit statuses expected of info, check and convert (both outputs); REGEX
# is an extended regex, case-insensitive, matched against check's output
# (its JSON with the line breaks taken out, or its error) and the stderr of
# every command that fails. KNOWN, when not empty, says why amiport does not
# (yet) do what the row expects.
CASES=(
  # --- qcow2 (committed) ---
  'qcow2-l1-size-2e31.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field l1_size is 2147483648 \(a 17179869184-byte table\), over the 268435456-byte limit for tables @'
  'qcow2-l1-entry-past-eof.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 L1 entry 0 points to an L2 table at 0x10000000000, past the end of the file @'
  'qcow2-l2-entry-past-eof.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 L2 entry for guest offset 0 points to host offset 0x10000000000, past the end of the file @'
  'qcow2-compressed-overflow.qcow2 @ @ 1 @ 1 @ 1 @ compressed cluster for guest offset 0 is at host offset 0x1fffffffffffffff, past the end of the file @'
  'qcow2-refcount-overlaps-header.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field refcount_table_clusters is 4294967295 \(a 2199023255040-byte table\), over the 8388608-byte limit for refcount tables @'
  'qcow2-cluster-bits-31.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field cluster_bits is 31; must be 9 to 21 @'
  'qcow2-size-2e63.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field size is 9223372036854775808; larger than 2\^62 @'
  'qcow2-header-length-absurd.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field header_length is 4294967295; must be 104 to the cluster size 512 @'
  'qcow2-extension-length-absurd.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header extension 0x6803f857 has length 4294967280, past the end of the header cluster @'
  'qcow2-snapshots-absurd.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 header field nb_snapshots is 4294967295; at most 65536 @'
  'qcow2-encrypted.qcow2 @ @ 1 @ 1 @ 1 @ qcow2 image is encrypted \(crypt_method 1, AES\); not supported @'
  "qcow2-backing-passwd.qcow2 @ @ 1 @ 1 @ 1 @ names a backing file '/etc/passwd'; refusing to open it \(pass --allow-backing @"
  "qcow2-backing-passwd.qcow2 @ --allow-backing @ 1 @ 1 @ 1 @ backing file '/etc/passwd' has no format in the header and no magic bytes; refusing to guess raw @"
  "qcow2-backing-loop-a.qcow2 @ @ 1 @ 1 @ 1 @ names a backing file 'qcow2-backing-loop-b.qcow2'; refusing to open it @"
  "qcow2-backing-loop-a.qcow2 @ --allow-backing @ 1 @ 1 @ 1 @ backing chain loop: 'qcow2-backing-loop-a.qcow2' is already in the chain @"
  "qcow2-backing-loop-b.qcow2 @ --allow-backing @ 1 @ 1 @ 1 @ backing chain loop: 'qcow2-backing-loop-b.qcow2' is already in the chain @"
  # --- VMDK (committed, but the 10 MiB descriptor) ---
  'vmdk-gd-entry-past-eof.vmdk @ @ 1 @ 1 @ 1 @ VMDK grain directory entry 0 points to a grain table at sector 2147483632, past the end of the file @'
  'vmdk-grain-past-eof.vmdk @ @ 0 @ 1 @ 1 @ grain table entry for guest offset 0 points to sector 2147483632, past the end of the file @'
  'vmdk-num-gtes-absurd.vmdk @ @ 1 @ 1 @ 1 @ VMDK sparse header field numGTEsPerGT is 4294967295; must be 1 to 512 @'
  'vmdk-capacity-2e62.vmdk @ @ 1 @ 1 @ 1 @ VMDK sparse header field capacity is 4611686018427387904 sectors; larger than 2\^53 @'
  'vmdk-grain-size-absurd.vmdk @ @ 1 @ 1 @ 1 @ VMDK sparse header field grainSize is 1099511627776 sectors; must be 1 to 2097152 @'
  'vmdk-stream-grain-length.vmdk @ @ 0 @ 1 @ 1 @ compressed grain for guest offset 0 at file offset 1024 has length 4294967295; must be 1 to 131072 @'
  "vmdk-stream-footer-loop.vmdk @ @ 1 @ 1 @ 1 @ VMDK footer's gdOffset is also 'at end' @"
  "vmdk-extent-dotdot.vmdk @ @ 1 @ 1 @ 1 @ extent path '\.\./\.\./etc/passwd' goes up a directory \('\.\.'\); refusing to open it @"
  "vmdk-extent-absolute.vmdk @ @ 1 @ 1 @ 1 @ extent path '/etc/passwd' is absolute; refusing to open it @"
  'vmdk-descriptor-10mb.vmdk @ @ 1 @ 1 @ 1 @ VMDK descriptor file is 104859[0-9]+ bytes, over the 1048576-byte limit for descriptors @'
  # --- VHD (committed) ---
  'vhd-footer-checksum.vhd @ @ 1 @ 1 @ 1 @ VHD footer checksum is 0x12345678 but the footer sums to 0x[0-9a-f]{8} @'
  'vhd-bat-past-eof.vhd @ @ 1 @ 1 @ 1 @ VHD BAT at offset 1099511627776 \(2 entries, 8 bytes\) runs past the end of the file @'
  'vhd-max-entries-absurd.vhd @ @ 1 @ 1 @ 1 @ VHD dynamic header field max table entries is 4294967295 \(a 17179869180-byte BAT\), over the 268435456-byte limit for tables @'
  "vhd-parent-passwd.vhd @ @ 1 @ 1 @ 1 @ differencing VHD names a parent '/etc/passwd'; refusing to open it @"
  "vhd-parent-passwd.vhd @ --allow-backing @ 1 @ 1 @ 1 @ differencing VHD parent '/etc/passwd' \(W2ru\) resolves to '/etc/passwd', outside the image's directory @"
  # --- VHDX (generated) ---
  'vhdx-headers-both-bad.vhdx @ @ 1 @ 1 @ 1 @ both VHDX headers are invalid \(header 1 at 65536: checksum 0x[0-9a-f]{8}, but the CRC-32C is 0x[0-9a-f]{8}; header 2 at 131072: checksum @'
  'vhdx-regions-overlap.vhdx @ @ 1 @ 1 @ 1 @ VHDX region table entries 0 \(\[2097152, 3145728\)\) and 1 \(\[2097152, 3145728\)\) overlap @'
  'vhdx-bat-past-eof.vhdx @ @ 1 @ 1 @ 1 @ VHDX BAT entry 0 \(payload block\) points to offset 4294967296, running past the end of the file @'
  'vhdx-log-entry-length-absurd.vhdx @ @ 1 @ 1 @ 1 @ VHDX log entry sequence is broken: entry 6 names its tail at log offset 0, but no valid entry starts there @'
  # --- partition tables (generated guests) ---
  'mbr-ebr-self.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"MBR_EXTENDED_LOOP" @'
  'mbr-ebr-cycle.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"MBR_EXTENDED_LOOP" @'
  'gpt-entries-2e32-primary.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"GPT_BACKUP_USED" @'
  'gpt-entries-2e32.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"GPT_INVALID","severity":"error","message":"Both GPT headers are invalid: primary header \(LBA 1\): NumberOfPartitionEntries is 4294967295 \(at most 8192 entries of 128 bytes\); backup header \(LBA [0-9]+\): NumberOfPartitionEntries is 4294967295 @'
  'gpt-entry-size-absurd.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"GPT_INVALID","severity":"error","message":"Both GPT headers are invalid: primary header \(LBA 1\): SizeOfPartitionEntry is 2147483648 \(must be a power of two from 128 to 4096\); backup header \(LBA [0-9]+\): SizeOfPartitionEntry is 2147483648 @'
  # --- ext4 (generated guests) ---
  'ext4-dirent-self.raw @ -f raw @ 0 @ 0 @ 0 @ "version":"6\.1\.0-99-amd64".*"nvme":"module-in-initramfs".*"importable":true @'
  'ext4-dir-cycle.raw @ -f raw @ 0 @ 0 @ 0 @ "version":"6\.1\.0-99-amd64".*"nvme":"module-in-initramfs".*"importable":true @'
  'ext4-rec-len-0.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"FILESYSTEM_UNREADABLE".*looking for /etc/os-release \([^"]*ext4 at disk offset 1048576: inode 2: directory entry at byte 0 of directory block 0: rec_len 0 is invalid @'
  'ext4-extent-depth-50.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*inode [0-9]+: extent header eh_depth 50 is out of range \(at most 5\) @'
  'ext4-extent-self.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*inode [0-9]+: extent header eh_depth 1 is out of range \(expected 0\) @'
  # --- symlinks on the path to /boot (generated guests) ---
  'symlink-boot-self.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"BOOT_UNREADABLE","severity":"error","message":"The /boot directory could not be read \([^"]*ext4: too many levels of symbolic links resolving /boot: the symlinks on the way loop, or chain more than 40 deep @'
  'symlink-boot-ab.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"BOOT_UNREADABLE","severity":"error","message":"The /boot directory could not be read \([^"]*ext4: too many levels of symbolic links resolving /boot: the symlinks on the way loop, or chain more than 40 deep @'
  'symlink-boot-1000-hops.raw @ -f raw @ 0 @ 1 @ 0 @ "code":"BOOT_UNREADABLE","severity":"error","message":"The /boot directory could not be read \([^"]*ext4: too many levels of symbolic links resolving /boot: the symlinks on the way loop, or chain more than 40 deep @'
  # --- XFS and FAT (generated guests) ---
  'xfs-bmbt-self.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*extent B\+tree block [0-9]+: level 1 \(expected 0\) @'
  'fat-chain-loop.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*vfat \(FAT16\) filesystem at disk offset 4194304: inode [0-9]+: its cluster chain loops @'
  # --- the kernel and the initramfs (generated guests) ---
  'initramfs-gzip-100g.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*initramfs decompresses to more than 1073741824 bytes; refusing to read further @'
  'initramfs-zstd-100g.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*initramfs decompresses to more than 1073741824 bytes; refusing to read further @'
  'initramfs-zstd-window-100g.raw @ -f raw @ 0 @ 0 @ 0 @ "code":"INITRAMFS_UNREADABLE".*zstd data is corrupt \(Frame requires too much memory for decoding\) @'
  'kernel-header-absurd.raw @ -f raw @ 0 @ 0 @ 0 @ "path":"/boot/vmlinuz-6\.1\.0-99-amd64","version":"6\.1\.0-99-amd64","arch":"x86_64".*"importable":true @'
)
# ---------------------------------------------------------------------------

trim() { local v=$1; v=${v#"${v%%[![:space:]]*}"}; v=${v%"${v##*[![:space:]]}"}; printf '%s' "$v"; }

# cs VAR TIME - sets VAR to TIME ("12.34", as /usr/bin/time prints it) in
# hundredths of a second. secs VAR HUNDREDTHS - the other way round.
cs() { local i=${2%.*} f=${2#*.}; [ "$f" != "$2" ] || f=0; f=${f}00; printf -v "$1" %d $((10#$i * 100 + 10#${f:0:2})); }
secs() { printf -v "$1" '%d.%02d' $(($2 / 100)) $(($2 % 100)); }

# measure O ARGS... - runs amiport ARGS under the memory limit, /usr/bin/time
# and a timeout; sets RC, RSS (KiB), EL and CPU (hundredths of a second);
# stdout in O.out, stderr in O.err.
measure() {
  local o=$1 line l
  shift
  RC=0
  (
    [ -n "$sanitized" ] || ulimit -v "$VMEM_KIB"
    exec /usr/bin/time -f '%M %e %U %S' -o "$o.time" \
      timeout -k 5 "$ELAPSED_MAX_S" "$AMIPORT" "$@" >"$o.out" 2>"$o.err"
  ) || RC=$?
  line="0 0 0 0"
  while IFS= read -r l; do line=$l; done <"$o.time"
  read -r RSS e u s <<<"$line"
  cs EL "$e"
  cs u "$u"
  cs s "$s"
  CPU=$((u + s))
}

# judge WHAT WANT_RC REGEX O IS_CHECK - appends one line per problem with
# the last run to $T/problems (nothing when it is as the row says).
judge() {
  local what=$1 want=$2 re=$3 o=$4 is_check=$5 t
  if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
    echo "$what hung (killed after ${ELAPSED_MAX_S}s)"
    return
  fi
  [ "$RC" -lt 128 ] || echo "$what crashed (exit $RC = signal $((RC - 128)))"
  case "|$want|" in
    *"|$RC|"*) ;;
    *) echo "$what exited $RC, expected $want" ;;
  esac
  # A failure is an error on stderr; check's exit 1 with a report is a verdict.
  if [ "$RC" -ne 0 ] && ! { [ "$is_check" = 1 ] && [ -s "$o.out" ]; } &&
     ! grep -q '^amiport: ' "$o.err"; then
    echo "$what: stderr has no 'amiport: ' line"
  fi
  if [ -n "$re" ] && { [ "$RC" -ne 0 ] || [ "$is_check" = 1 ]; }; then
    # JSON without its line breaks and indentation, then stderr.
    { tr -d '\n' <"$o.out" | sed 's/   *//g'; echo; cat "$o.err"; } >"$o.all"
    grep -Eiq -- "$re" "$o.all" || echo "$what: output lacks /$re/"
  fi
  [ "$RSS" -lt "$RSS_MAX_KIB" ] || echo "$what: peak RSS $((RSS / 1024)) MiB, over $((RSS_MAX_KIB / 1024)) MiB"
  secs t "$CPU"
  [ "$CPU" -lt $((CPU_MAX_S * 100)) ] || echo "$what: $t s of CPU, over ${CPU_MAX_S} s"
}

FAILED=()
NKNOWN=0
printf '%-36s %-15s %-6s %4s %8s %8s %6s\n' file options run exit "RSS MiB" elapsed cpu >"$T/figures"
rss_max=0 el_max=0 cpu_max=0
out=$T/convert-out
mkdir "$out"
shopt -s nullglob dotglob
for line in "${CASES[@]}"; do
  IFS='@' read -r file opts want_info want_check want_conv re known <<<"$line"
  file=$(trim "$file") opts=$(trim "$opts") want_info=$(trim "$want_info")
  want_check=$(trim "$want_check") want_conv=$(trim "$want_conv") re=$(trim "$re") known=$(trim "$known")
  img=$HOSTILE/$file
  [ -f "$img" ] || img=$T/gen/$file
  [ -f "$img" ] || fail "$file is neither in $HOSTILE nor made by make.sh"
  read -r -a o_args <<<"$opts"
  : >"$T/problems"
  for run in info check raw qcow2; do
    o=$T/run.$run
    case $run in
      info) measure "$o" info "${o_args[@]}" "$img"; want=$want_info what=info ;;
      check) measure "$o" check --output=json "${o_args[@]}" "$img"; want=$want_check what=check ;;
      *) measure "$o" convert "${o_args[@]}" -j 4 -O "$run" "$img" "$out/out.$run"
         want=$want_conv what="convert -O $run" ;;
    esac
    is_check=
    [ "$run" != check ] || is_check=1
    judge "$what" "$want" "$re" "$o" "$is_check" >>"$T/problems"
    left=("$out"/*)
    if [ ${#left[@]} -gt 0 ]; then
      [ "$RC" -eq 0 ] || echo "$what failed but left ${left[*]##*/} behind" >>"$T/problems"
      rm -rf "${left[@]}"
    fi
    secs e "$EL"
    secs c "$CPU"
    printf '%-36s %-15s %-6s %4s %8s %8s %6s\n' "$file" "${opts:--}" "$run" "$RC" \
      "$((RSS / 1024)).$((RSS % 1024 * 10 / 1024))" "$e" "$c" >>"$T/figures"
    [ "$RSS" -le "$rss_max" ] || rss_max=$RSS
    [ "$EL" -le "$el_max" ] || el_max=$EL
    [ "$CPU" -le "$cpu_max" ] || cpu_max=$CPU
    [ "$EL" -lt $((CPU_MAX_S * 100)) ] ||
      info "$file: $what took $e s elapsed ($c s CPU): slow, or a loaded machine"
  done
  problems=$(cat "$T/problems")
  # What amiport said, for the log: its first error, else check's findings.
  said=$(cat "$T"/run.{info,check,raw,qcow2}.err | grep -v '^amiport: warning: ' | grep -m 1 '^amiport: ')
  if [ -z "$said" ]; then
    said=$(tr -d '\n' <"$T/run.check.out" | sed 's/   *//g' |
      grep -o '"code":"[A-Z_]*","severity":"[a-z]*","message":"[^"]*' |
      sed 's/"code":"\([A-Z_]*\)","severity":"\([a-z]*\)","message":"/\2 \1: /' | paste -sd '|' | sed 's/|/ | /g')
    said="check: ${said:-no findings}"
  fi
  if [ -n "$known" ]; then
    NKNOWN=$((NKNOWN + 1))
    if [ -n "$problems" ]; then
      echo "KNOWN: $file${opts:+ $opts}: $known"
      printf '%s\n' "$problems" | sed 's/^/KNOWN:     /'
      echo "KNOWN:     amiport said: $said"
    else
      echo "NOTE: $file${opts:+ $opts} is marked known ($known) but now behaves as its row expects; drop the mark"
    fi
    continue
  fi
  if [ -n "$problems" ]; then
    echo "FAIL: $file${opts:+ $opts}:" >&2
    printf '%s\n' "$problems" | sed 's/^/    /' >&2
    FAILED+=("$file${opts:+ $opts}")
  else
    info "$file${opts:+ $opts}: ok: $said"
  fi
done

# --- bundle manifests: unbundle refuses each before it opens any part ---
openssl genrsa -out "$T/key.pem" 2048 2>/dev/null || fail "openssl genrsa"
mkdir "$T/unbundled"
MANIFESTS=(
  'manifest-parts-count-1e6.xml @ <parts count="1000000">: not a part count from 1 to 100000'
  'manifest-parts-1e6.xml @ not a regular file of at most 64 MiB'
  "manifest-part-dotdot.xml @ <part> 0: <filename> '\\.\\./\\.\\./\\.\\./\\.\\./etc/passwd' is not a bare file name"
  "manifest-name-absolute.xml @ <image><name> '/etc/shadow' is not a bare file name"
  'manifest-entity-bomb.xml @ not an XML document with a <manifest> root'
)
for line in "${MANIFESTS[@]}"; do
  IFS='@' read -r file re <<<"$line"
  file=$(trim "$file") re=$(trim "$re")
  m=$HOSTILE/$file
  [ -f "$m" ] || m=$T/gen/$file
  [ -f "$m" ] || fail "$file is neither in $HOSTILE nor made by make.sh"
  o=$T/run.unbundle
  measure "$o" unbundle --manifest "$m" --privatekey "$T/key.pem" --destination "$T/unbundled"
  problems=$(judge unbundle 1 "$re" "$o" 0
    [ -z "$(ls -A "$T/unbundled")" ] || echo "unbundle left $(ls -A "$T/unbundled") behind"
    ! grep -q 'root:' "$o.err" || echo "an external entity was expanded")
  secs e "$EL"
  secs c "$CPU"
  printf '%-36s %-15s %-6s %4s %8s %8s %6s\n' "$file" - unbundle "$RC" \
    "$((RSS / 1024)).$((RSS % 1024 * 10 / 1024))" "$e" "$c" >>"$T/figures"
  [ "$RSS" -le "$rss_max" ] || rss_max=$RSS
  [ "$EL" -le "$el_max" ] || el_max=$EL
  [ "$CPU" -le "$cpu_max" ] || cpu_max=$CPU
  if [ -n "$problems" ]; then
    echo "FAIL: $file:" >&2
    printf '%s\n' "$problems" | sed 's/^/    /' >&2
    FAILED+=("$file")
  else
    info "$file: ok: $(grep -m 1 '^amiport: ' "$o.err")"
  fi
done

info "figures (peak RSS, elapsed and CPU seconds of each run):"
cat "$T/figures"
secs e "$el_max"
secs c "$cpu_max"
info "largest: RSS $((rss_max / 1024)) MiB, elapsed $e s, CPU $c s;" \
  "$((${#CASES[@]} + ${#MANIFESTS[@]})) rows, $NKNOWN known failures"
[ ${#FAILED[@]} = 0 ] || fail "failed: ${FAILED[*]}"
info "all hostile files handled in $((SECONDS - t0)) s"
exit 0
