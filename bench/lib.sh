# bench/lib.sh - what the benchmark scripts share; sourced, not run.
# shellcheck shell=bash
#
# A script (convert.sh, vhd.sh, vmdk.sh) sets what is its own, then calls:
#   bench_prepare "$@"   settings, tool checks, machine facts, inputs
#   bench_case ...       once per case (see below)
#   bench_report         results table, notes, markdown file
#
# What the script defines before bench_prepare:
#   TARGET_PLAIN, TARGET_RSS_MIB   ratio target for uncompressed cases, RSS target
#   TARGET_COMPRESSED              ratio target for cases marked compressed (if any)
#   BENCH_TITLE                    printed as "== $BENCH_TITLE ==" above the facts
#   RESULTS_TITLE, RESULTS_FILE    markdown heading and file name under BENCH_DIR
#   TARGETS_NOTE                   the "Targets: ..." line of the notes
#   COMPARE_NOTE                   optional: ends the "amiport output vs input" note
#                                  (default ".")
#   extra_input BASE               optional: make BASE.<fmt> from BASE.raw if missing
#   describe_input BASE            what to list beside BASE.raw under "Inputs:"
#
# Environment (see README.md):
#   BENCH_DIR       where inputs/outputs live      (default /tmp/amiport-bench)
#   BENCH_DATA_MIB  MiB of data in each image      (default 1024)
#   BENCH_VIRT_GIB  virtual size of each image     (default 4)
#   BENCH_REPEAT    timed runs per tool and case;
#                   the median wall time is used   (default 3)
#
# Both tools run on the same inputs in the same run; what is reported is the
# ratio amiport / qemu-img, never an absolute time. Inputs are generated once
# and reused (their names encode BENCH_DATA_MIB and BENCH_VIRT_GIB), and all
# scripts share them: same BENCH_DIR, same names.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SCRIPT=${0##*/}
BENCH_DIR=${BENCH_DIR:-/tmp/amiport-bench}
DATA_MIB=${BENCH_DATA_MIB:-1024}
VIRT_GIB=${BENCH_VIRT_GIB:-4}
REPEAT=${BENCH_REPEAT:-3}
TIME=/usr/bin/time

die() { echo "$BENCH_SCRIPT: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
alloc_bytes() { du -B1 -- "$1" | cut -f1; }

# bench_prepare [AMIPORT_BINARY]
bench_prepare() {
    AMIPORT=${1:-$REPO_ROOT/build/amiport}
    bench_check_setup
    bench_facts
    bench_inputs
    # Load both binaries and their libraries once, so no timed run pays for it.
    qemu-img --version >/dev/null
    "$AMIPORT" --version >/dev/null 2>&1 || "$AMIPORT" --help >/dev/null 2>&1 || true
    ROWS=()     # markdown rows
    RUNLOG=$BENCH_DIR/runs.log   # every timed run, for looking at the noise
    : > "$RUNLOG"
    NPASS=0; NMISS=0; NERR=0
}

# ---------------------------------------------------------------- settings
bench_check_setup() {
    local v
    for v in DATA_MIB VIRT_GIB REPEAT; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
    (( DATA_MIB <= VIRT_GIB * 1024 )) || die "BENCH_DATA_MIB must not exceed BENCH_VIRT_GIB*1024"

    case $AMIPORT in */*) ;; *) AMIPORT=$(command -v "$AMIPORT" || echo "$AMIPORT") ;; esac
    [[ -x $AMIPORT ]] || die "amiport binary '$AMIPORT' not found or not executable (build it or pass its path)"
    command -v qemu-img >/dev/null || die "qemu-img not found (apt-get install qemu-utils)"
    command -v openssl >/dev/null || die "openssl not found"
    command -v perl >/dev/null || die "perl not found"

    if [[ ! -x $TIME ]]; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            log "installing GNU time"
            DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null \
                || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null; } \
                || die "could not install package 'time'"
        fi
        [[ -x $TIME ]] || die "/usr/bin/time missing: install package 'time'"
    fi

    mkdir -p "$BENCH_DIR/inputs"
    OUT=$BENCH_DIR/out
    rm -rf "$OUT"
    mkdir -p "$OUT"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}
bench_cleanup() { rm -rf "$OUT"; rm -f "$BENCH_DIR"/inputs/*.tmp; }

# ---------------------------------------------------------------- machine facts
bench_facts() {
    local cpu_model qemu_ver commit fs_type mem_mib
    cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    qemu_ver=$(qemu-img --version | head -n1)
    if commit=$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null); then
        git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (dirty tree)"
    else
        commit="none (no commits yet)"
    fi
    fs_type=$(stat -f -c %T "$BENCH_DIR" 2>/dev/null || echo "?")
    mem_mib=$(awk '/^MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)

    FACTS=$(cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- nproc: $(nproc); CPU: ${cpu_model:-unknown}; RAM: ${mem_mib} MiB; kernel: $(uname -r)
- qemu-img: $qemu_ver (default options: no -m/-W/-t given, so cache=unsafe for the output, no fsync)
- amiport: $AMIPORT, git commit $commit
- inputs: ${VIRT_GIB} GiB virtual, ${DATA_MIB} MiB data in 4 scattered regions; BENCH_DIR=$BENCH_DIR ($fs_type)
- runs: median wall time of $REPEAT run(s) per tool and case, tools alternated; peak RSS is the max over runs
- page cache: nothing is dropped, both tools read warm inputs (each input is read once before its case); \`sync\` runs before every timed run and outputs are deleted between runs
EOF
)
    echo "== $BENCH_TITLE =="
    echo "$FACTS"
    echo
}

# ---------------------------------------------------------------- inputs
# Data is laid out in 4 regions of DATA_MIB/4 MiB each, one per quarter of the
# virtual disk, at different offsets inside their quarter, with holes between.
NREG=4
region_offset_mib() { # $1 = region index
    local free=$(( SLOT_MIB - REG_MIB ))
    echo $(( $1 * SLOT_MIB + free * $1 / (NREG + 1) ))
}

# Write $1 (a file of DATA_MIB MiB) into a new sparse raw image $2, region by region.
scatter_into_raw() {
    local payload=$1 raw=$2 i off
    rm -f "$raw"
    truncate -s "${VIRT_GIB}G" "$raw"
    for (( i = 0; i < NREG; i++ )); do
        off=$(region_offset_mib "$i")
        dd if="$payload" of="$raw" bs=1M skip=$(( i * REG_MIB )) seek="$off" count="$REG_MIB" \
            conv=notrunc,sparse status=none
    done
}

# Random (incompressible) payload: AES-CTR keystream over zeros, fast and reproducible.
make_random_payload() {
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:amiport-bench -in /dev/zero 2>/dev/null || true; } \
        | head -c $(( REG_MIB * NREG * 1048576 )) > "$1"
}

# OS-like payload: a tar stream of real system files (text, ELF binaries,
# already-compressed .gz/.png/...) with runs of zero 4 KiB pages inserted, as
# found in a used filesystem. Deterministic for a given /usr.
make_osmix_payload() {
    local bytes=$(( REG_MIB * NREG * 1048576 ))
    {
        # Interleave sources so that a truncated stream still mixes kinds of data.
        for d in /usr/share/doc /usr/bin /usr/include /usr/share/locale /usr/lib/x86_64-linux-gnu \
                 /usr/share /usr/lib /usr/sbin /etc; do
            [[ -d $d ]] && tar -C / -cf - --ignore-failed-read --warning=none "${d#/}" 2>/dev/null
        done
        # Never run short: pad with more of the same if /usr is small.
        # (tar dies of SIGPIPE once perl has enough, which ends the loop)
        for _ in 1 2 3 4 5 6 7 8; do
            tar -C / -cf - --ignore-failed-read --warning=none usr 2>/dev/null || break
        done
    } | perl -e '
        use strict; use warnings;
        my $want = shift; my $out = 0; my $zero = "\0" x 4096; my $x = 12345;
        sub rnd { $x = ($x * 1103515245 + 12345) % 2147483648; return $x / 2147483648; }
        binmode STDIN; binmode STDOUT;
        while ($out < $want) {
            my $got = read(STDIN, my $page, 4096) or last;
            $page .= "\0" x (4096 - $got) if $got < 4096;
            print $page; $out += 4096;
            if (rnd() < 0.02 && $out < $want) {          # a run of 1..32 zero pages
                my $n = 1 + int(rnd() * 32);
                while ($n-- > 0 && $out < $want) { print $zero; $out += 4096; }
            }
        }
        exit($out >= $want ? 0 : 1);
    ' "$bytes" > "$1" || true
    [[ $(stat -c %s "$1") -eq $bytes ]] || die "could not build the OS-like payload"
}

FLAVOURS=(random osmix)
input_base() { echo "$BENCH_DIR/inputs/$1-${DATA_MIB}M-in-${VIRT_GIB}G"; }

# Every flavour gets BASE.raw and BASE.qcow2 (made by qemu-img); the script's
# extra_input, if any, then adds its own format beside them, once.
make_input() {
    local flavour=$1 base payload
    base=$(input_base "$flavour")
    if [[ -f $base.raw && -f $base.qcow2 ]]; then
        log "reusing $base.{raw,qcow2}"
    else
        log "generating $flavour input ($DATA_MIB MiB in ${VIRT_GIB} GiB)"
        # Inputs the other scripts made from an older raw image are stale now.
        rm -f -- "$base".*
        payload=$base.payload.tmp
        "make_${flavour}_payload" "$payload"
        [[ $(stat -c %s "$payload") -eq $(( REG_MIB * NREG * 1048576 )) ]] || die "short $flavour payload"
        scatter_into_raw "$payload" "$base.raw.tmp"
        rm -f "$payload"
        qemu-img convert -f raw -O qcow2 "$base.raw.tmp" "$base.qcow2.tmp"
        mv "$base.raw.tmp" "$base.raw"
        mv "$base.qcow2.tmp" "$base.qcow2"
    fi
    if declare -F extra_input >/dev/null; then extra_input "$base"; fi
}

bench_inputs() {
    local f b
    REG_MIB=$(( DATA_MIB / NREG ))
    (( REG_MIB > 0 )) || die "BENCH_DATA_MIB must be at least $NREG"
    SLOT_MIB=$(( VIRT_GIB * 1024 / NREG ))
    for f in "${FLAVOURS[@]}"; do make_input "$f"; done
    echo "Inputs:"
    for f in "${FLAVOURS[@]}"; do
        b=$(input_base "$f")
        echo "  $f: $(basename "$b").raw ($(mib "$(alloc_bytes "$b.raw")") MiB allocated)," \
             "$(describe_input "$b")"
    done
    echo
}

# ---------------------------------------------------------------- running
# run_timed RESULT_FILE CMD... : run once under GNU time, append "wall rss_kib user sys".
run_timed() {
    local res=$1; shift
    local tf=$OUT/time.txt rc=0
    sync
    "$TIME" -f '%e %M %U %S' -o "$tf" -- "$@" >"$OUT/cmd.log" 2>&1 || rc=$?
    if (( rc != 0 )); then
        echo "    command failed (exit $rc): $*" >&2
        sed 's/^/    | /' "$OUT/cmd.log" | tail -n 5 >&2
        return 1
    fi
    tail -n 1 "$tf" >> "$res"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# summarize RESULT_FILE -> "median_wall max_rss_kib user sys" (cpu of the median-ish run: mean)
summarize() {
    local w r u s
    w=$(awk '{ print $1 }' "$1" | median)
    r=$(awk 'BEGIN { m = 0 } { if ($2 > m) m = $2 } END { print m }' "$1")
    u=$(awk '{ t += $3 } END { printf "%.2f", t / NR }' "$1")
    s=$(awk '{ t += $4 } END { printf "%.2f", t / NR }' "$1")
    echo "$w $r $u $s"
}

# bench_case FLAVOUR NAME SRC_FMT DST_FMT COMPRESSED(0/1) [OPTION...]
# Both tools get `convert -f SRC_FMT -O DST_FMT OPTION...`. COMPRESSED only
# picks the ratio target (TARGET_COMPRESSED instead of TARGET_PLAIN): a case
# that wants -c passes it among its options.
bench_case() {
    local flavour=$1 name=$2 sfmt=$3 dfmt=$4 comp=$5; shift 5
    local opts=("$@")
    local base src dst_q dst_a qres ares i ok=1 verify="not run"
    base=$(input_base "$flavour")
    src=$base.$sfmt
    dst_q=$OUT/qemu.$dfmt
    dst_a=$OUT/amiport.$dfmt
    qres=$OUT/q.res; ares=$OUT/a.res
    : > "$qres"; : > "$ares"
    local label="$flavour: $name"
    log "case $label"

    dd if="$src" of=/dev/null bs=4M status=none   # warm the input for both tools

    local qsize=0 asize=0
    run_q() {
        run_timed "$qres" qemu-img convert -f "$sfmt" -O "$dfmt" "${opts[@]}" "$src" "$dst_q" \
            || die "qemu-img failed on case '$label'"
        qsize=$(alloc_bytes "$dst_q")
        rm -f "$dst_q"
    }
    run_a() {
        (( ok )) || return 0
        if ! run_timed "$ares" "$AMIPORT" convert -f "$sfmt" -O "$dfmt" "${opts[@]}" --force "$src" "$dst_a"; then
            ok=0; rm -f "$dst_a"; return 0
        fi
        asize=$(alloc_bytes "$dst_a")
        if [[ $verify == "not run" ]]; then    # verify the amiport output once
            if qemu-img compare -q -f "$sfmt" -F "$dfmt" "$src" "$dst_a" >"$OUT/cmp.log" 2>&1; then
                verify=identical
            else
                verify=DIFFERS; sed 's/^/    | /' "$OUT/cmp.log" | tail -n 3 >&2
                case $dfmt in   # the output formats `qemu-img check` can check
                    qcow2|vmdk|vhdx) qemu-img check "$dst_a" 2>&1 | tail -n 3 | sed 's/^/    | /' >&2 || true ;;
                esac
            fi
        fi
        rm -f "$dst_a"
    }
    # Alternate which tool goes first (q a, a q, q a, ...) so neither always
    # pays for the other's freshly deleted output or for the first run.
    for (( i = 1; i <= REPEAT; i++ )); do
        rm -f "$dst_q" "$dst_a"
        if (( i % 2 )); then run_q; run_a; else run_a; run_q; fi
    done
    { echo "$label qemu-img (wall rss_kib user sys):"; sed 's/^/  /' "$qres"
      echo "$label amiport:"; sed 's/^/  /' "$ares"; } >> "$RUNLOG"

    local q a
    q=($(summarize "$qres"))
    local target=$TARGET_PLAIN; (( comp )) && target=$TARGET_COMPRESSED
    local qrss qcpu
    qrss=$(awk -v k="${q[1]}" 'BEGIN { printf "%.1f", k / 1024 }')
    qcpu=$(awk -v u="${q[2]}" -v s="${q[3]}" 'BEGIN { printf "%.2f", u + s }')
    if (( ! ok )) || [[ ! -s $ares ]]; then
        NERR=$(( NERR + 1 ))
        ROWS+=("| $label | ${q[0]} | FAIL | - | ≤$target ERR | $qrss | - | <$TARGET_RSS_MIB ERR | $qcpu | - | $(mib "$qsize") | - | amiport failed |")
        return 0
    fi
    a=($(summarize "$ares"))
    local ratio rstat arss mstat acpu
    ratio=$(awk -v a="${a[0]}" -v q="${q[0]}" 'BEGIN { if (q <= 0) q = 0.01; printf "%.2f", a / q }')
    if awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r <= t) }'; then rstat=PASS; NPASS=$((NPASS+1)); else rstat=MISS; NMISS=$((NMISS+1)); fi
    arss=$(awk -v k="${a[1]}" 'BEGIN { printf "%.1f", k / 1024 }')
    if (( a[1] < TARGET_RSS_MIB * 1024 )); then mstat=PASS; NPASS=$((NPASS+1)); else mstat=MISS; NMISS=$((NMISS+1)); fi
    acpu=$(awk -v u="${a[2]}" -v s="${a[3]}" 'BEGIN { printf "%.2f", u + s }')
    [[ $verify == identical ]] || NERR=$(( NERR + 1 ))
    ROWS+=("| $label | ${q[0]} | ${a[0]} | $ratio | ≤$target $rstat | $qrss | $arss | <$TARGET_RSS_MIB $mstat | $qcpu | $acpu | $(mib "$qsize") | $(mib "$asize") | $verify |")
}

# ---------------------------------------------------------------- report
bench_report() {
    local header sep notes
    header="| case | qemu-img s | amiport s | ratio | target | qemu-img RSS MiB | amiport RSS MiB | RSS target | qemu-img CPU s | amiport CPU s | qemu-img out MiB | amiport out MiB | amiport output vs input |"
    sep="|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---|"
    notes=$(cat <<EOF
Wall seconds are the median of $REPEAT run(s); ratio = amiport / qemu-img (lower is better).
$TARGETS_NOTE
CPU s = user + sys (mean over runs). "out MiB" = allocated size of the output (raw outputs are sparse).
"amiport output vs input" = \`qemu-img compare\` of the first amiport output against the input${COMPARE_NOTE:-.}
qemu-img runs with its default options; both tools read warm inputs (page cache not dropped).
EOF
)
    bench_write_report "$header" "$sep" "$notes"
}

# bench_write_report HEADER SEP NOTES - prints the table of ROWS and writes
# it with the machine facts to $BENCH_DIR/$RESULTS_FILE; REPRODUCE, if set,
# is the command line it gives.
bench_write_report() {
    local header=$1 sep=$2 notes=$3 results=$BENCH_DIR/$RESULTS_FILE load
    local repro=${REPRODUCE:-"BENCH_DATA_MIB=$DATA_MIB BENCH_VIRT_GIB=$VIRT_GIB BENCH_REPEAT=$REPEAT bench/$BENCH_SCRIPT $AMIPORT"}
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    {
        echo "$header"
        echo "$sep"
        printf '%s\n' "${ROWS[@]}"
    } > "$OUT/table.md"

    echo "== Results =="
    if command -v column >/dev/null; then
        sed '2d; s/^| //; s/ |$//' "$OUT/table.md" | column -t -s '|'
    else
        cat "$OUT/table.md"
    fi
    echo
    echo "$notes"
    echo "Load average at the end: $load"
    echo "Summary: $NPASS PASS, $NMISS MISS, $NERR error(s)/mismatch(es)"

    {
        echo "### $RESULTS_TITLE ($(date -u '+%Y-%m-%d'))"
        echo
        echo "$FACTS"
        echo "- load average at the end: $load"
        echo
        cat "$OUT/table.md"
        echo
        echo "$notes"
        echo
        echo "Reproduce: \`$repro\`"
    } > "$results"
    echo "Markdown written to $results; individual runs in $RUNLOG"
}
