"""Runs through profiles/slurm on a real one-node Slurm cluster (tests/cluster/slurm.sh).

The session fixture `slurm_cluster` uses a cluster that `tests/cluster/slurm.sh start`
already brought up, or starts one itself (as root; it installs Debian's slurm and munge
packages when missing) and stops it at the end of the session. In CI (CI=true) a
cluster that cannot be started fails these tests; they never skip there. Elsewhere they
skip only when the cluster cannot be started (not root, or no apt-get to install it).
Environment: SPIKESCALE_SLURM_DIR (state directory, default /tmp/spikescale-slurm),
SPIKESCALE_SLURM_KEEP=1 (leave a cluster this session started running afterwards).

The profile is used as a user would use it; only the cluster-specific placeholders
(account, partition) are overridden, plus the status-query settings that a cluster
without accounting needs. Every job must show up in Slurm as a completed job with the
profile's resources, and the job's own log must carry the Slurm job id it ran under.

(No conftest.py in this folder on purpose: a second module named `conftest` would shadow
tests/conftest.py for the `from conftest import ...` of the other test modules.)
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"
SCRIPT = Path(__file__).resolve().with_name("slurm.sh")
TEST_ACCOUNT = "spikescale-test"  # accepted as is: the test cluster has no accounting
TOY_FACTORS = (1, 2, 4)
TOY_TIMEOUT_S = 300
PIPELINE_TIMEOUT_S = 1500
START_TIMEOUT_S = 900  # apt-get update + install on a fresh machine
# First job-status query after 5 s, then every 15, 25, 35 s ... until a job finishes (the
# plugin adds 10 s per idle query). Our jobs take 5-20 s (40 s for evaluate), so most are
# seen at the first or second query; the default 40 s would double the test's run time.
STATUS_INIT_S = 5

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to submit to the cluster."""

    state_dir: Path
    partition: str = "debug"

    @property
    def conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    def env(self) -> dict[str, str]:
        """The calling environment, pointed at this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def cluster_script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout, check=False
    )


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"Slurm test cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"Slurm test cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    cluster = SlurmCluster(Path(os.environ.get("SPIKESCALE_SLURM_DIR", "/tmp/spikescale-slurm")))
    if cluster_script("status", timeout=60).returncode == 0:
        yield cluster  # somebody else started it: leave it running
        return

    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    installed = all(
        shutil.which(tool, path=search) for tool in ("slurmctld", "slurmd", "sbatch", "munged")
    )
    if os.geteuid() != 0:
        unavailable("not running, and starting it needs root (`sudo tests/cluster/slurm.sh start`)")
    if not installed and shutil.which("apt-get") is None:
        unavailable("slurm is not installed and there is no apt-get to install it")

    started = cluster_script("start", timeout=START_TIMEOUT_S)
    if started.returncode != 0:  # root with apt-get: a real failure, never a skip
        pytest.fail(
            f"`{SCRIPT} start` failed (exit {started.returncode}):\n"
            f"{started.stdout}{started.stderr}",
            pytrace=False,
        )
    try:
        yield cluster
    finally:
        if os.environ.get("SPIKESCALE_SLURM_KEEP", "").lower() not in {"1", "true", "yes"}:
            cluster_script("stop", timeout=120)


# --------------------------------------------------------------------------- helpers


def profile() -> dict:
    return yaml.safe_load((PROFILE / "profile.yaml").read_text())


def cluster_args(cluster: SlurmCluster) -> list[str]:
    """What a user of this cluster adds to `--profile profiles/slurm`.

    `--default-resources` replaces the profile's whole list, so the profile's own entries
    are repeated with only the account and partition placeholders swapped. Without
    accounting `sacct` cannot answer, so job states come from `squeue` (the cluster keeps
    finished jobs for MinJobAge=600 s; below 3 x init-seconds the plugin would switch back
    to sacct and wait forever).
    """
    defaults = dict(profile()["default-resources"])
    defaults["slurm_account"] = TEST_ACCOUNT
    defaults["slurm_partition"] = cluster.partition
    return [
        "--default-resources",
        *(f"{key}={value}" for key, value in defaults.items()),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        str(STATUS_INIT_S),
        "--slurm-keep-successful-logs",
    ]


def run_snakemake(args: list[str], cwd: Path, cluster: SlurmCluster, timeout: float) -> str:
    """Run snakemake to the end and return its log; fail with the log's tail otherwise."""
    env = cluster.env()
    # the jobs run `spikescale ...` and `python -m snakemake` from this interpreter's venv
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = cwd / "snakemake.out"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # snakemake cancels its Slurm jobs on SIGINT; it answers SIGTERM only slowly
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail(f"snakemake ran past {timeout} s; log {log_path}:\n{tail(log_path)}")
    if returncode != 0:
        pytest.fail(f"snakemake exited with {returncode}; log {log_path}:\n{tail(log_path)}")
    return log_path.read_text()


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class SlurmJob:
    """One job as the Slurm controller remembers it (`scontrol show job`)."""

    job_id: str
    fields: dict[str, str]

    @property
    def rule(self) -> str:
        # the plugin's comment: rule_<name> or rule_<name>_wildcards_<values joined by _>
        return re.sub(r"^rule_", "", self.fields["Comment"]).split("_wildcards_")[0]

    @property
    def wildcards(self) -> str:
        comment = self.fields["Comment"]
        return comment.split("_wildcards_", 1)[1] if "_wildcards_" in comment else ""

    @property
    def tres(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.fields["TRES"].split(",") if "=" in item)

    @property
    def gpu_requested(self) -> bool:
        # TresPerJob=gres:gpu:1 for `--gpus=1`; absent without a GPU request
        return "gpu" in self.fields.get("TresPerJob", "") + self.fields.get("TresPerNode", "")

    @property
    def mem_mb(self) -> int:
        return mb(self.tres["mem"])


def scontrol_job(job_id: str, cluster: SlurmCluster) -> SlurmJob:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        capture_output=True,
        text=True,
        env=cluster.env(),
        check=True,
        timeout=30,
    ).stdout
    fields = dict(re.findall(r"(\S+?)=(\S*)", out))
    assert fields.get("JobId") == job_id, out
    return SlurmJob(job_id, fields)


def mb(value: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
    return round(float(value[:-1]) * units[value[-1]]) if value[-1] in units else int(value)


def slurm_time(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def expected_resources(rule: str) -> dict:
    prof = profile()
    return {**prof["default-resources"], **(prof.get("set-resources", {}).get(rule) or {})}


def submitted_jobs(log: str, cluster: SlurmCluster) -> list[SlurmJob]:
    """Every job snakemake handed to Slurm in this run, as Slurm knows it."""
    ids = [slurm_id for _, slurm_id, _ in SUBMITTED.findall(log)]
    assert len(ids) == len(set(ids)), f"a Slurm job id reported twice: {ids}"
    return [scontrol_job(job_id, cluster) for job_id in ids]


def assert_ran_as_profiled(
    job: SlurmJob, cluster: SlurmCluster, threads: int | None = None
) -> None:
    """The job completed on our partition and account with the profile's resources."""
    f = job.fields
    want = expected_resources(job.rule)
    assert f["JobState"] == "COMPLETED", (job.job_id, f["JobState"], f.get("Reason"))
    assert f["ExitCode"] == "0:0", (job.job_id, f["ExitCode"])
    assert f["Partition"] == cluster.partition, f["Partition"]
    assert f["Account"] == TEST_ACCOUNT, f["Account"]
    assert job.mem_mb == want["mem_mb"], (job.rule, job.tres, want["mem_mb"])
    assert f["TimeLimit"] == slurm_time(want["runtime"]), (job.rule, f["TimeLimit"])
    if threads is not None:
        assert f["CPUs/Task"] == str(threads), (job.rule, f["CPUs/Task"], threads)


# --------------------------------------------------------------------------- toy workflow

TOY_SNAKEFILE = textwrap.dedent(
    """
    # Two rules named like the pipeline's, so that the profile's per-rule resources
    # apply: `evaluate` fans out (one job per factor), `collect` gathers. Each job writes
    # the Slurm job id and GPU it ran with into its log.
    FACTORS = @FACTORS@
    GPU = 1 if config.get("device", "cpu") == "cuda" else 0  # as workflow/rules/common.smk
    JOB_INFO = (
        'echo "slurm_job_id=${{SLURM_JOB_ID:-none}} '
        'gpus=${{CUDA_VISIBLE_DEVICES:-none}}" > {log}; '
    )

    rule all:
        input:
            "sweep.txt",

    rule evaluate:
        output:
            "scale/factor_{factor}.txt",
        log:
            "logs/evaluate/factor_{factor}.log",
        resources:
            gpu=GPU,
        shell:
            JOB_INFO + "echo {wildcards.factor} > {output}"

    rule collect:
        input:
            expand("scale/factor_{factor}.txt", factor=FACTORS),
        output:
            "sweep.txt",
        log:
            "logs/collect.log",
        threads: 2
        shell:
            JOB_INFO + "cat {input} > {output}"
    """
).replace("@FACTORS@", repr(list(TOY_FACTORS)))


def job_log(path: Path) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", path.read_text()))


# device=cpu is what the real pipeline test below runs; here the GPU requests are checked
@pytest.mark.parametrize("device", ["cuda"])
def test_toy_workflow_runs_every_job_on_slurm(
    slurm_cluster: SlurmCluster, tmp_path: Path, device: str
):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    log = run_snakemake(
        ["--profile", str(PROFILE), *cluster_args(slurm_cluster), "--config", f"device={device}"],
        cwd=tmp_path,
        cluster=slurm_cluster,
        timeout=TOY_TIMEOUT_S,
    )

    assert (tmp_path / "sweep.txt").read_text().split() == [str(f) for f in TOY_FACTORS]
    jobs = submitted_jobs(log, slurm_cluster)
    by_rule_and_wildcards = {(job.rule, job.wildcards): job for job in jobs}
    expected = {("evaluate", str(f)) for f in TOY_FACTORS} | {("collect", "")}
    assert set(by_rule_and_wildcards) == expected, sorted(by_rule_and_wildcards)
    assert len(jobs) == len(expected)  # nothing ran twice, `all` stayed local

    for (rule, wildcards), job in by_rule_and_wildcards.items():
        assert_ran_as_profiled(job, slurm_cluster, threads=2 if rule == "collect" else 1)
        wants_gpu = device == "cuda" and rule == "evaluate"
        assert job.gpu_requested == wants_gpu, (rule, device, job.fields.get("TresPerJob"))

        # the job's own log was written inside that very Slurm job
        name = f"evaluate/factor_{wildcards}" if rule == "evaluate" else rule
        inside = job_log(tmp_path / "logs" / f"{name}.log")
        assert inside["slurm_job_id"] == job.job_id, (rule, wildcards, inside)
        assert (inside["gpus"] != "none") == wants_gpu, (rule, device, inside)
        # and the Slurm log of the job is kept where the plugin puts it
        slurm_log = (
            tmp_path
            / ".snakemake"
            / "slurm_logs"
            / f"rule_{rule}"
            / wildcards
            / f"{job.job_id}.log"
        )
        assert slurm_log.is_file(), slurm_log


# --------------------------------------------------------------------------- the pipeline


def test_pipeline_runs_every_job_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path):
    """The real pipeline on the reduced test config, exactly as `--profile profiles/slurm`."""
    from conftest import make_project  # tests/conftest.py: a copy of the checkout, reduced params
    from spikescale.params import factor_label

    project = make_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    dataset = params["dataset"]["name"]
    labels = {factor_label(f) for f in params["scale"]["factors"]}

    log = run_snakemake(
        ["--profile", "profiles/slurm", *cluster_args(slurm_cluster)],
        cwd=project,
        cluster=slurm_cluster,
        timeout=PIPELINE_TIMEOUT_S,
    )

    assert (project / "results" / dataset / "sweep.parquet").is_file()
    jobs = submitted_jobs(log, slurm_cluster)
    # every job that snakemake did not run locally ("localrule ...") went to Slurm
    planned = collections.Counter(re.findall(r"^rule (\w+):$", log, re.M))
    assert collections.Counter(job.rule for job in jobs) == planned, log
    assert {"events", "train", "evaluate", "collect"} <= set(planned), planned
    for job in jobs:
        assert_ran_as_profiled(job, slurm_cluster)
        assert not job.gpu_requested, (job.rule, job.fields.get("TresPerJob"))  # device: cpu

    evaluate = {job.wildcards: job for job in jobs if job.rule == "evaluate"}
    assert set(evaluate) == labels, (sorted(evaluate), sorted(labels))
    for label, job in evaluate.items():
        # the Slurm log named by the job id is that factor's evaluate job
        slurm_log = (
            project / ".snakemake" / "slurm_logs" / "rule_evaluate" / label / f"{job.job_id}.log"
        )
        text = slurm_log.read_text()
        assert f"results/{dataset}/scale/factor_{label}.parquet" in text, text[-2000:]
        assert f"logs/{dataset}/evaluate/factor_{label}.log" in text, text[-2000:]
        assert (project / "logs" / dataset / "evaluate" / f"factor_{label}.log").is_file()
