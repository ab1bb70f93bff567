# plan_submit.sh - amiport plan submit's job files: the Kubernetes Indexed
# Job, the AWS Batch inputs (checked by botocore's own parameter validation
# against the batch service model) and the Slurm script with its sbatch
# command line (sbatch here is a stand-in that records what it was given;
# no Slurm runs in this test).
. "$SRCDIR/tests/lib.sh"
setup_tmp
/usr/bin/python3 -c 'import botocore' 2>/dev/null || skip "python3-botocore is not installed"

P=$T/Fleet_1.jsonl
for n in a b c; do
  printf '{"name": "%s", "disks": ["%s.raw"], "ami_name": "vm %s"}\n' $n $n $n
done >"$P"
R=$T/results
plan_abs=$(realpath "$P")

# --- usage errors ---
expect_rc 2 plan submit "$P" --results "$R"
stderr_has "--engine slurm\|batch\|kubernetes is required"
expect_rc 2 plan submit "$P" --engine kubernetes --results "$R"
stderr_has "--image .* is required for kubernetes"
expect_rc 2 plan submit "$P" --engine batch --results "$R" --image img
stderr_has "--job-queue is required for batch"
expect_rc 2 plan submit "$P" --engine lsf --results "$R"
stderr_has "--engine must be slurm, batch or kubernetes, not 'lsf'"
expect_rc 2 plan submit "$P" --engine slurm --results "$R" --concurrency 0
stderr_has "--concurrency must be 1 to 10000"

# --- kubernetes: an Indexed Job of 3 completions, 2 at once ---
amiport_ok plan submit "$P" --engine kubernetes --results "$R" --image registry/amiport:1 --concurrency 2
[ "$(cat "$T/stdout")" = "$R/Fleet_1.k8s-job.json" ] || fail "kubernetes: printed $(cat "$T/stdout")"
/usr/bin/python3 - "$R/Fleet_1.k8s-job.json" "$plan_abs" "$R" <<'PY' || fail "kubernetes manifest: $(cat "$R/Fleet_1.k8s-job.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["apiVersion"] == "batch/v1" and j["kind"] == "Job", j
assert j["metadata"]["name"] == "amiport-fleet-1", j["metadata"]
s = j["spec"]
assert s["completionMode"] == "Indexed", s
assert s["completions"] == 3 and s["parallelism"] == 2 and s["backoffLimit"] == 9, s
assert s["template"]["spec"]["restartPolicy"] == "Never", s
c = s["template"]["spec"]["containers"][0]
assert c["image"] == "registry/amiport:1", c
assert c["command"] == ["amiport", "plan", "run", sys.argv[2], "--task-from-env", "--results", sys.argv[3],
                        "--max-requests-per-second", "500"], c["command"]
PY
info "kubernetes: Indexed Job, completions 3, parallelism 2, backoffLimit 9, the command line"

# --- batch: botocore validates both inputs against the service model ---
amiport_ok plan submit "$P" --engine batch --results "$R" --image registry/amiport:1 --job-queue q1 \
  --concurrency 4 --account-rate 900
validate() { # OPERATION FILE
  /usr/bin/python3 - "$@" <<'PY' || fail "batch $1: $(cat "$2")"
import json, sys
import botocore.session
from botocore.validate import validate_parameters
model = botocore.session.get_session().get_service_model("batch")
params = json.load(open(sys.argv[2]))
validate_parameters(params, model.operation_model(sys.argv[1]).input_shape)
PY
}
validate RegisterJobDefinition "$R/Fleet_1.batch-job-definition.json"
validate SubmitJob "$R/Fleet_1.batch-submit-job.json"
/usr/bin/python3 - "$R" "$plan_abs" <<'PY' || fail "batch inputs: $(cat "$R"/Fleet_1.batch-*.json)"
import json, sys
d = json.load(open(sys.argv[1] + "/Fleet_1.batch-job-definition.json"))
s = json.load(open(sys.argv[1] + "/Fleet_1.batch-submit-job.json"))
assert d["type"] == "container" and d["containerProperties"]["image"] == "registry/amiport:1", d
cmd = d["containerProperties"]["command"]
assert cmd[:5] == ["amiport", "plan", "run", sys.argv[2], "--task-from-env"], cmd
assert cmd[-2:] == ["--max-requests-per-second", "300"], cmd  # 900 / min(4, 3 lines)
assert s["jobQueue"] == "q1" and s["jobDefinition"] == d["jobDefinitionName"], s
assert s["arrayProperties"] == {"size": 3}, s
PY
# one line: no array (Batch's arrays have 2 or more children), index 0 given
head -1 "$P" >"$T/one.jsonl"
amiport_ok plan submit "$T/one.jsonl" --engine batch --results "$R" --image img --job-queue q1
validate SubmitJob "$R/one.batch-submit-job.json"
grep -q arrayProperties "$R/one.batch-submit-job.json" && fail "a one-line plan got arrayProperties"
grep -q AWS_BATCH_JOB_ARRAY_INDEX "$R/one.batch-submit-job.json" || fail "a one-line plan lacks its index"
info "batch: both inputs pass botocore's validation; array size 3; rate 900/3"

# --- slurm: the script, and sbatch --array=0-2%2 ---
mkdir -p "$T/bin"
cat >"$T/bin/sbatch" <<SH
#!/bin/sh
printf '%s\n' "\$@" >"$T/sbatch.args"
echo "4242;cluster"
SH
chmod +x "$T/bin/sbatch"
PATH=$T/bin:$PATH amiport_ok plan submit "$P" --engine slurm --results "$R" --concurrency 2
[ "$(cat "$T/stdout")" = 4242 ] || fail "slurm: printed '$(cat "$T/stdout")', not the job id 4242"
[ "$(tr '\n' ' ' <"$T/sbatch.args")" = "--parsable --array=0-2%2 $R/Fleet_1.sbatch " ] ||
  fail "sbatch got: $(cat "$T/sbatch.args")"
grep -qxF "exec '$AMIPORT' 'plan' 'run' '$plan_abs' '--task-from-env' '--results' '$R' '--max-requests-per-second' '500'" \
  "$R/Fleet_1.sbatch" || fail "slurm script: $(cat "$R/Fleet_1.sbatch")"
sh -n "$R/Fleet_1.sbatch" || fail "the slurm script is not valid sh"
# sbatch refusing: an error, exit 1
printf '#!/bin/sh\necho "sbatch: error: invalid partition" >&2\nexit 1\n' >"$T/bin/sbatch"
PATH=$T/bin:$PATH expect_rc 1 plan submit "$P" --engine slurm --results "$R"
stderr_has "sbatch --array=0-2%4 .* failed \(exit 1\)"
info "slurm: the script, sbatch --array=0-2%2, the job id; a failing sbatch is an error"

# --- an S3 ledger: the tasks get s3://...; the job files go in the current folder ---
mkdir -p "$T/cwd"
(cd "$T/cwd" && "$AMIPORT" plan submit "$P" --engine kubernetes --results s3://ledger-bucket/runs --image img \
  >"$T/stdout" 2>"$T/stderr") || fail "submit with an S3 ledger: $(cat "$T/stderr")"
grep -q '"s3://ledger-bucket/runs"' "$T/cwd/Fleet_1.k8s-job.json" || fail "the S3 LOC is not in the command: $(cat "$T/cwd/Fleet_1.k8s-job.json")"
info "an S3 ledger: the job's command names it, the job file is in the current folder"
