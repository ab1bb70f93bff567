#!/bin/bash
# fleet.sh - what running a plan as a Slurm array costs against running it
# on one machine, and a fleet's throughput against one import of the same
# bytes. 8 VMs of BENCH_VM_MIB MiB of random data each (imported with force:
# they hold no guest), into tests/fakeaws, on a single-node Slurm that
# tests/lib.sh's start_slurm brings up:
#   - plan run --all --parallel 2 (wall time);
#   - plan submit --engine slurm --concurrency 2, until the array has left
#     the queue (wall time); the difference over 8 is the engine's overhead
#     per task;
#   - one amiport import of one image of all 8 VMs' bytes (wall time).
# Each run has its own plan (its own AMI names and resume state), so none
# finds another's work done.
# Usage: bench/fleet.sh [AMIPORT]; BENCH_VM_MIB (default 32).
set -u
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
export SRCDIR
export AMIPORT=${1:-$SRCDIR/build/amiport}
export TESTTMP=${BENCH_DIR:-/tmp/amiport-bench}/fleet
MIB=${BENCH_VM_MIB:-32}
N=8
. "$SRCDIR/tests/lib.sh"
setup_tmp
start_slurm
start_fakeaws

V=$T/vms
mkdir -p "$V"
for i in $(seq 0 $((N - 1))); do
  head -c $((MIB << 20)) /dev/urandom >"$V/vm$i.raw"
done
cat "$V"/vm*.raw >"$V/all.raw"
plan() { # NAME
  for i in $(seq 0 $((N - 1))); do
    printf '{"name": "vm%d", "disks": ["vm%d.raw"], "ami_name": "%s vm%d", "options": {"force": true, "arch": "x86_64"}}\n' \
      "$i" "$i" "$1" "$i"
  done >"$V/$1.jsonl"
}
now() { date +%s.%N; }
plan local
plan slurm

t0=$(now)
"$AMIPORT" plan run "$V/local.jsonl" --all --parallel 2 --results "$T/r-local" 2>"$T/local.err" ||
  fail "plan run --all failed: $(tail -n 5 "$T/local.err")"
t_all=$(echo "$(now) - $t0" | bc)

t0=$(now)
job=$("$AMIPORT" plan submit "$V/slurm.jsonl" --engine slurm --results "$T/r-slurm" --concurrency 2) ||
  fail "plan submit failed"
slurm_wait "$job" 600
t_slurm=$(echo "$(now) - $t0" | bc)
"$AMIPORT" plan status "$V/slurm.jsonl" --results "$T/r-slurm" >"$T/status" ||
  fail "the Slurm run did not finish every line: $(cat "$T/status")"

t0=$(now)
"$AMIPORT" import --force --arch x86_64 --name single "$V/all.raw" >/dev/null 2>"$T/single.err" ||
  fail "the single import failed: $(tail -n 5 "$T/single.err")"
t_one=$(echo "$(now) - $t0" | bc)

mib=$((N * MIB))
printf '| run | wall s | MiB/s |\n|---|---|---|\n'
printf '| plan run --all --parallel 2 (%d VMs of %d MiB) | %.2f | %.0f |\n' "$N" "$MIB" "$t_all" "$(echo "$mib / $t_all" | bc -l)"
printf '| plan submit --engine slurm --concurrency 2 | %.2f | %.0f |\n' "$t_slurm" "$(echo "$mib / $t_slurm" | bc -l)"
printf '| one import of the same %d MiB | %.2f | %.0f |\n' "$mib" "$t_one" "$(echo "$mib / $t_one" | bc -l)"
printf '\nSlurm overhead per task: %.2f s\n' "$(echo "($t_slurm - $t_all) / $N" | bc -l)"
