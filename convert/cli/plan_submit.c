/* plan_submit.c - amiport plan submit: a plan's tasks as one array job of
 * Slurm (a job script, submitted with sbatch), AWS Batch (the inputs of
 * register-job-definition and submit-job) or Kubernetes (an Indexed Job).
 * Every task runs 'amiport plan run PLAN --task-from-env'. */
#include "cli.h"
#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char submit_help[] =
  "Usage: amiport plan submit PLAN --engine slurm|batch|kubernetes --results LOC\n"
  "                           [--concurrency K] [OPTIONS]\n\n"
  "Runs the plan's lines as one array job, a task per line, each running\n"
  "'amiport plan run PLAN --task-from-env --results DIR\n"
  " --max-requests-per-second R', R being --account-rate divided by K (the EBS\n"
  "direct APIs' request rate is the account's, shared by every task).\n"
  "  slurm       writes DIR/NAME.sbatch and submits it with\n"
  "              sbatch --array=0-(N-1)%K; prints the job id\n"
  "  batch       writes DIR/NAME.batch-job-definition.json and\n"
  "              DIR/NAME.batch-submit-job.json, for\n"
  "              aws batch register-job-definition --cli-input-json file://...\n"
  "              and aws batch submit-job --cli-input-json file://...\n"
  "  kubernetes  writes DIR/NAME.k8s-job.json, an Indexed Job of N completions\n"
  "              and parallelism K, for kubectl apply -f\n"
  "The machines or the container image that run the tasks need amiport, and\n"
  "must see the plan, its disks and DIR at the same paths.\n"
  "      --engine E            slurm, batch or kubernetes\n"
  "      --results LOC         where the tasks write their results: a folder (created\n"
  "                            if missing; the job files go there too) or\n"
  "                            s3://BUCKET/PREFIX (the job files go in the current\n"
  "                            folder)\n"
  "      --concurrency K       at most K tasks at once (default 4)\n"
  "      --account-rate R      the account's PutSnapshotBlock requests a second\n"
  "                            (default 1000)\n"
  "      --amiport PATH        the amiport the tasks run (default: this one for\n"
  "                            slurm, 'amiport' in a container)\n"
  "      --image IMAGE         batch, kubernetes: the container image (required)\n"
  "      --job-queue QUEUE     batch: the job queue (required)\n"
  "      --dry-run             slurm: write the script, do not submit it\n"
  "      --privatekey KEY, --cert CERT\n"
  "                            passed to the tasks, for plans with bundles\n"
  "  -h, --help                show this help\n";

enum engine { ENG_SLURM, ENG_BATCH, ENG_K8S };

struct submit {
  enum engine engine;
  const char *results, *image, *queue, *amiport;
  unsigned concurrency;
  double account_rate;
  bool dry;
  char plan[PATH_MAX], results_abs[PATH_MAX], name[PLAN_NAME_MAX + 1];
  char jobdir[PATH_MAX];       /* where the job files go: the results folder, or . for S3 */
  char rate[32];
  char key[PATH_MAX], cert[PATH_MAX]; /* a bundle's: --privatekey, --cert (or empty) */
  size_t n;
};

/* The task's command line; NULL-terminated, its strings s's. */
static void task_argv(const struct submit *s, const char *amiport, const char *argv[16])
{
  size_t i = 0;
  argv[i++] = amiport;
  argv[i++] = "plan";
  argv[i++] = "run";
  argv[i++] = s->plan;
  argv[i++] = "--task-from-env";
  argv[i++] = "--results";
  argv[i++] = s->results_abs;
  argv[i++] = "--max-requests-per-second";
  argv[i++] = s->rate;
  if (s->key[0]) {
    argv[i++] = "--privatekey";
    argv[i++] = s->key;
  }
  if (s->cert[0]) {
    argv[i++] = "--cert";
    argv[i++] = s->cert;
  }
  argv[i] = NULL;
}

/* A name for the job: the plan's, lower-cased to what Kubernetes takes
 * (RFC 1123: a-z, 0-9, '-'). */
static void job_name(const char *plan, char *out, size_t len)
{
  size_t o = 0;
  o += (size_t)snprintf(out, len, "amiport-");
  for (const char *p = plan; *p && o + 1 < len && o < 63; p++) {
    char c = (char)tolower((unsigned char)*p);
    out[o++] = isalnum((unsigned char)c) ? c : '-';
  }
  while (o && out[o - 1] == '-')
    o--;
  out[o] = 0;
}

static int write_file(const char *path, const char *text, mode_t mode, struct error *e)
{
  char tmp[PATH_MAX + 300];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return error_errno(e, "cannot create %s", tmp);
  bool ok = fputs(text, f) >= 0;
  ok &= fclose(f) == 0;
  if (!ok || chmod(tmp, mode) < 0 || rename(tmp, path) < 0) {
    error_errno(e, "cannot write %s", path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int write_json(const char *path, json_object *j, struct error *e)
{
  int rc = write_file(path, json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE),
                      0644, e);
  json_object_put(j);
  return rc;
}

static json_object *command_json(const struct submit *s, const char *amiport)
{
  const char *argv[16];
  task_argv(s, amiport, argv);
  json_object *a = json_object_new_array();
  for (size_t i = 0; argv[i]; i++)
    json_object_array_add(a, json_object_new_string(argv[i]));
  return a;
}

/* 'text' quoted for sh */
static void sh_quote(const char *text, char *out, size_t len)
{
  size_t o = 0;
  if (len < 3)
    return;
  out[o++] = '\'';
  for (const char *p = text; *p && o + 6 < len; p++) {
    if (*p == '\'') {
      memcpy(out + o, "'\\''", 4);
      o += 4;
    } else
      out[o++] = *p;
  }
  out[o++] = '\'';
  out[o] = 0;
}

static int submit_slurm(const struct submit *s, struct error *e)
{
  char self[PATH_MAX] = "amiport", script[PATH_MAX + 256], text[16384], q[PATH_MAX * 4 + 8];
  if (!s->amiport) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    if (n <= 0)
      snprintf(self, sizeof self, "amiport");
  } else
    snprintf(self, sizeof self, "%s", s->amiport);
  char jn[80];
  job_name(s->name, jn, sizeof jn);
  size_t o = (size_t)snprintf(text, sizeof text,
                              "#!/bin/sh\n"
                              "# plan %s: one task per line, from SLURM_ARRAY_TASK_ID\n"
                              "#SBATCH --job-name=%s\n"
                              "#SBATCH --output=%s/slurm-%%A_%%a.out\n"
                              "#SBATCH --ntasks=1\n"
                              "exec",
                              s->plan, jn, s->jobdir);
  const char *argv[16];
  task_argv(s, self, argv);
  for (size_t i = 0; argv[i] && o < sizeof text; i++) {
    sh_quote(argv[i], q, sizeof q);
    o += (size_t)snprintf(text + o, sizeof text - o, " %s", q);
  }
  if (o + 2 >= sizeof text)
    return error_set(e, ERR_USAGE, "the job script for %s is too long", s->plan);
  strcat(text, "\n");
  snprintf(script, sizeof script, "%s/%s.sbatch", s->jobdir, s->name);
  if (write_file(script, text, 0755, e) < 0)
    return -1;
  char array[64];
  snprintf(array, sizeof array, "--array=0-%zu%%%u", s->n - 1, s->concurrency);
  if (s->dry) {
    printf("sbatch --parsable %s %s\n", array, script);
    return 0;
  }
  int pfd[2];
  if (pipe(pfd) < 0)
    return error_errno(e, "pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return error_errno(e, "cannot fork");
  if (pid == 0) {
    dup2(pfd[1], 1);
    close(pfd[0]);
    close(pfd[1]);
    execlp("sbatch", "sbatch", "--parsable", array, script, (char *)NULL);
    fprintf(stderr, "amiport: plan submit: cannot run sbatch: %s\n", strerror(errno));
    _exit(127);
  }
  close(pfd[1]);
  char out[256] = "";
  size_t got = 0;
  ssize_t r;
  while (got + 1 < sizeof out && (r = read(pfd[0], out + got, sizeof out - 1 - got)) > 0)
    got += (size_t)r;
  out[got] = 0;
  close(pfd[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  out[strcspn(out, ";\n")] = 0; /* --parsable: JOBID[;CLUSTER] */
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !out[0] || strspn(out, "0123456789") != strlen(out))
    return error_set(e, ERR_IO, "sbatch %s %s failed (exit %d%s%s)", array, script,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1, out[0] ? ", said: " : "", out);
  printf("%s\n", out);
  return 0;
}

static int submit_batch(const struct submit *s, struct error *e)
{
  char jn[80], path[PATH_MAX + 256];
  job_name(s->name, jn, sizeof jn);
  const char *amiport = s->amiport ? s->amiport : "amiport";
  json_object *def = json_object_new_object(), *cp = json_object_new_object(),
              *res = json_object_new_array(), *r;
  json_object_object_add(def, "jobDefinitionName", json_object_new_string(jn));
  json_object_object_add(def, "type", json_object_new_string("container"));
  json_object_object_add(cp, "image", json_object_new_string(s->image));
  json_object_object_add(cp, "command", command_json(s, amiport));
  r = json_object_new_object();
  json_object_object_add(r, "type", json_object_new_string("VCPU"));
  json_object_object_add(r, "value", json_object_new_string("2"));
  json_object_array_add(res, r);
  r = json_object_new_object();
  json_object_object_add(r, "type", json_object_new_string("MEMORY"));
  json_object_object_add(r, "value", json_object_new_string("2048"));
  json_object_array_add(res, r);
  json_object_object_add(cp, "resourceRequirements", res);
  json_object_object_add(def, "containerProperties", cp);
  json_object *retry = json_object_new_object();
  json_object_object_add(retry, "attempts", json_object_new_int(3));
  json_object_object_add(def, "retryStrategy", retry);
  snprintf(path, sizeof path, "%s/%s.batch-job-definition.json", s->jobdir, s->name);
  if (write_json(path, def, e) < 0)
    return -1;
  printf("%s\n", path);
  json_object *sj = json_object_new_object(), *ap = json_object_new_object();
  json_object_object_add(sj, "jobName", json_object_new_string(jn));
  json_object_object_add(sj, "jobQueue", json_object_new_string(s->queue));
  json_object_object_add(sj, "jobDefinition", json_object_new_string(jn));
  /* an array job has 2 to 10000 children; one line runs as task 0 */
  if (s->n > 1) {
    json_object_object_add(ap, "size", json_object_new_int64((int64_t)s->n));
    json_object_object_add(sj, "arrayProperties", ap);
  } else {
    json_object_put(ap);
    json_object *ov = json_object_new_object(), *env = json_object_new_array(),
                *kv = json_object_new_object();
    json_object_object_add(kv, "name", json_object_new_string("AWS_BATCH_JOB_ARRAY_INDEX"));
    json_object_object_add(kv, "value", json_object_new_string("0"));
    json_object_array_add(env, kv);
    json_object_object_add(ov, "environment", env);
    json_object_object_add(sj, "containerOverrides", ov);
  }
  snprintf(path, sizeof path, "%s/%s.batch-submit-job.json", s->jobdir, s->name);
  if (write_json(path, sj, e) < 0)
    return -1;
  printf("%s\n", path);
  return 0;
}

static int submit_k8s(const struct submit *s, struct error *e)
{
  char jn[80], path[PATH_MAX + 256];
  job_name(s->name, jn, sizeof jn);
  const char *amiport = s->amiport ? s->amiport : "amiport";
  json_object *job = json_object_new_object(), *md = json_object_new_object(),
              *spec = json_object_new_object(), *tpl = json_object_new_object(),
              *ps = json_object_new_object(), *cs = json_object_new_array(),
              *c = json_object_new_object();
  json_object_object_add(job, "apiVersion", json_object_new_string("batch/v1"));
  json_object_object_add(job, "kind", json_object_new_string("Job"));
  json_object_object_add(md, "name", json_object_new_string(jn));
  json_object_object_add(job, "metadata", md);
  json_object_object_add(spec, "completionMode", json_object_new_string("Indexed"));
  json_object_object_add(spec, "completions", json_object_new_int64((int64_t)s->n));
  json_object_object_add(spec, "parallelism", json_object_new_int64(s->concurrency));
  /* a retried index resumes its snapshots; three tries each */
  json_object_object_add(spec, "backoffLimit", json_object_new_int64((int64_t)s->n * 3));
  json_object_object_add(c, "name", json_object_new_string("amiport"));
  json_object_object_add(c, "image", json_object_new_string(s->image));
  json_object_object_add(c, "command", command_json(s, amiport));
  json_object_array_add(cs, c);
  json_object_object_add(ps, "restartPolicy", json_object_new_string("Never"));
  json_object_object_add(ps, "containers", cs);
  json_object_object_add(tpl, "spec", ps);
  json_object_object_add(spec, "template", tpl);
  json_object_object_add(job, "spec", spec);
  snprintf(path, sizeof path, "%s/%s.k8s-job.json", s->jobdir, s->name);
  if (write_json(path, job, e) < 0)
    return -1;
  printf("%s\n", path);
  return 0;
}

int cli_plan_submit(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "engine", required_argument, NULL, 0x600 },
    { "results", required_argument, NULL, 0x601 },
    { "concurrency", required_argument, NULL, 0x602 },
    { "account-rate", required_argument, NULL, 0x603 },
    { "amiport", required_argument, NULL, 0x604 },
    { "image", required_argument, NULL, 0x605 },
    { "job-queue", required_argument, NULL, 0x606 },
    { "dry-run", no_argument, NULL, 0x607 },
    BUNDLE_SOURCE_LONGOPTS,
    { "help", no_argument, NULL, 'h' },
    { 0 },
  };
  struct submit s = { .engine = -1, .concurrency = 4, .account_rate = 1000 };
  bool engine = false;
  long n;
  char *end;
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 0x600:
      engine = true;
      if (strcmp(optarg, "slurm") == 0)
        s.engine = ENG_SLURM;
      else if (strcmp(optarg, "batch") == 0)
        s.engine = ENG_BATCH;
      else if (strcmp(optarg, "kubernetes") == 0)
        s.engine = ENG_K8S;
      else
        return cli_usage("plan submit", "--engine must be slurm, batch or kubernetes, not '%s'",
                         optarg);
      break;
    case 0x601: s.results = optarg; break;
    case 0x602:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || n > 10000 || !*optarg)
        return cli_usage("plan submit", "--concurrency must be 1 to 10000, not '%s'", optarg);
      s.concurrency = (unsigned)n;
      break;
    case 0x603:
      n = strtol(optarg, &end, 10);
      if (*end || n < 1 || !*optarg)
        return cli_usage("plan submit", "--account-rate must be requests a second, not '%s'",
                         optarg);
      s.account_rate = (double)n;
      break;
    case 0x604: s.amiport = optarg; break;
    case 0x605: s.image = optarg; break;
    case 0x606: s.queue = optarg; break;
    case 0x607: s.dry = true; break;
    case 0x110: case 0x111: {
      char *dst = c == 0x110 ? s.key : s.cert;
      if (!realpath(optarg, dst))
        return cli_usage("plan submit", "%s: %s", optarg, strerror(errno));
      break;
    }
    case 'h': fputs(submit_help, stdout); return EXIT_OK;
    default: return cli_usage("plan submit", "unknown option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage("plan submit", "expects one PLAN");
  if (!engine)
    return cli_usage("plan submit", "--engine slurm|batch|kubernetes is required");
  if (!s.results)
    return cli_usage("plan submit", "--results DIR is required");
  if (s.engine != ENG_SLURM && !s.image)
    return cli_usage("plan submit", "--image (the container image with amiport) is required "
                                    "for %s", s.engine == ENG_BATCH ? "batch" : "kubernetes");
  if (s.engine == ENG_BATCH && !s.queue)
    return cli_usage("plan submit", "--job-queue is required for batch");
  struct plan p;
  struct error e = { 0 };
  if (plan_load(argv[optind], &p, &e) < 0)
    return cli_fail(&e);
  s.n = p.n;
  snprintf(s.name, sizeof s.name, "%s", p.name);
  plan_free(&p);
  if (!realpath(argv[optind], s.plan))
    return error_errno(&e, "%s", argv[optind]), cli_fail(&e);
  if (strncmp(s.results, "s3://", 5) == 0) {
    char *b, *pre;
    if (cli_s3_target("plan submit", s.results, &b, &pre) != 0)
      return EXIT_USAGE;
    free(b);
    free(pre);
    snprintf(s.results_abs, sizeof s.results_abs, "%s", s.results);
    if (!getcwd(s.jobdir, sizeof s.jobdir))
      return error_errno(&e, "cannot tell the current folder"), cli_fail(&e);
  } else {
    if (mkdir(s.results, 0777) < 0 && errno != EEXIST)
      return error_errno(&e, "cannot create the results folder %s", s.results), cli_fail(&e);
    if (!realpath(s.results, s.results_abs))
      return error_errno(&e, "%s", s.results), cli_fail(&e);
    snprintf(s.jobdir, sizeof s.jobdir, "%s", s.results_abs);
  }
  unsigned k = s.concurrency < s.n ? s.concurrency : (unsigned)s.n;
  snprintf(s.rate, sizeof s.rate, "%.0f", s.account_rate / k >= 1 ? s.account_rate / k : 1);
  int rc = s.engine == ENG_SLURM ? submit_slurm(&s, &e)
           : s.engine == ENG_BATCH ? submit_batch(&s, &e) : submit_k8s(&s, &e);
  return rc < 0 ? cli_fail(&e) : EXIT_OK;
}
