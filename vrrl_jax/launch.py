r"""Cloud TPU VM slices from one entry point: create, setup, run, logs, stop, delete (stdlib only).

  python -m vrrl_jax.launch create --accelerator v5e-8 --spot
  python -m vrrl_jax.launch setup
  python -m vrrl_jax.launch run --run vrrl3b --config configs/frozenlake_qwen25vl_3b_v5e_8.py \
      -- --config.init_checkpoint=gs://BUCKET/models/qwen25vl3b_orbax
  python -m vrrl_jax.launch logs --run vrrl3b
  python -m vrrl_jax.launch stop --run vrrl3b
  python -m vrrl_jax.launch delete

Settings come from flags or the environment (flags win): VRRL_TPU_PROJECT, VRRL_TPU_ZONE, VRRL_TPU_NAME,
VRRL_TPU_TYPE (accelerator type), VRRL_TPU_RUNTIME (runtime version; default per generation) and VRRL_BUCKET
(gs://bucket[/path]: the run's workdir is gs://bucket/path/<run>, path "vrrl_runs" by default). ``--dry-run`` prints
every command (one per line, shell-quoted) and runs none. Walk-through: launch/README.md.

Workers. A slice has one TPU VM per host (``Accelerator.hosts``); every remote command goes to ``--worker=all``.
``run`` starts the same training command on every worker with ``--multihost``, so ``jax.distributed.initialize()``
reads the slice from the TPU metadata; each worker writes its output to ``~/vrrl_logs/<run>/worker_<i>.log``
(i = the worker number from the metadata server, as jax itself reads it), under setsid + nohup so a dropped ssh
session does not end it.

Workdir and resuming. The trainer reads and writes its workdir through the local filesystem (pathlib, open), so the
bucket is mounted on every worker with Cloud Storage FUSE at ``~/vrrl_gcs/<bucket>`` and the training command gets
that path: checkpoints, metrics and galleries land in gs://bucket/path/<run>, which every host shares and which
outlives a preempted VM. ``gs://<bucket>/...`` in the training flags (e.g. init_checkpoint) is rewritten to the mount.
A run resumes by being started again under the same name: the workdir is a function of the run name alone, and
``trainer.run`` restores the newest readable checkpoint under ``<workdir>/checkpoints`` before it trains
(``run_state.resume`` -> ``TrainCheckpointer.restore_latest``). After a spot preemption: delete, create, setup, run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {
  "project": "VRRL_TPU_PROJECT",
  "zone": "VRRL_TPU_ZONE",
  "name": "VRRL_TPU_NAME",
  "accelerator": "VRRL_TPU_TYPE",
  "runtime_version": "VRRL_TPU_RUNTIME",
  "bucket": "VRRL_BUCKET",
}
# Worker-side layout (relative to the login user's home on every TPU VM).
CODE_DIR, VENV_DIR, LOG_DIR, MOUNT_DIR = "vrrl_jax", "vrrl_venv", "vrrl_logs", "vrrl_gcs"
DEFAULT_RUNS_PATH = "vrrl_runs"
# The worker's number within its slice: the metadata attribute jax.distributed reads on Cloud TPU VMs
# (jax/_src/clusters/cloud_tpu_cluster.py, GceTpuCluster._get_process_id_in_slice).
WORKER_NUMBER_URL = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"
# gcsfuse: --implicit-dirs shows directories made by other tools; orbax commits a checkpoint by renaming its
# temporary directory, which a flat bucket only allows up to --rename-dir-limit objects (not atomic: a restore of
# a torn step fails and the trainer falls back to the previous one).
GCSFUSE_OPTIONS = ("--implicit-dirs", "--rename-dir-limit=200000")
STOP_GRACE_S = 30


class LaunchError(ValueError):
  """A bad flag or setting, reported before anything runs."""


# ----------------------------------------------------------------------------------------------------------------
# Accelerator types.


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation as the Cloud TPU API names it.

  ``cores_per_chip``: the number in a v4 / v5p accelerator type counts TensorCores (2 per chip, one JAX device per
  chip); v5e / v6e types count chips. Slices of up to ``single_host_chips`` chips are one TPU VM; larger ones have
  ``chips_per_host`` chips per VM (worker).
  """

  name: str
  gcloud_prefix: str
  cores_per_chip: int
  chips_per_host: int
  single_host_chips: int
  sizes: tuple[int, ...] | None  # the chip counts a slice may have (None: any multiple of chips_per_host)
  runtime_version: str


# Runtime versions: the "TPU software versions" page lists these for JAX (https://cloud.google.com/tpu/docs/runtimes):
# v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base.
# Hosts: v4 (https://cloud.google.com/tpu/docs/v4) and v5p (https://cloud.google.com/tpu/docs/v5p: v5p-8 = 4 chips
# = 1 host, v5p-16 = 8 chips = 2 hosts) have 4 chips per TPU VM. v5e (https://cloud.google.com/tpu/docs/v5e) and v6e
# (https://cloud.google.com/tpu/docs/v6e) run slices of 1, 4 and 8 chips on one VM (ct5lp-hightpu-8t / ct6e-standard-8t
# for 8); larger slices use 4-chip VMs (ct5lp-hightpu-4t / ct6e-standard-4t, as in AI-Hypercomputer/xpk
# system_characteristics.py), e.g. v5litepod-16 = 4 workers. Check `gcloud compute tpus tpu-vm describe` if in doubt;
# --workers overrides the count.
GENERATIONS = {
  "v4": Generation("v4", "v4", 2, 4, 4, None, "tpu-ubuntu2204-base"),
  "v5e": Generation("v5e", "v5litepod", 1, 4, 8, (1, 4, 8, 16, 32, 64, 128, 256), "v2-alpha-tpuv5-lite"),
  "v5p": Generation("v5p", "v5p", 2, 4, 4, None, "v2-alpha-tpuv5"),
  "v6e": Generation("v6e", "v6e", 1, 4, 8, (1, 4, 8, 16, 32, 64, 128, 256), "v2-alpha-tpuv6e"),
}
_PREFIXES = {g.gcloud_prefix: g for g in GENERATIONS.values()} | {"v5e": GENERATIONS["v5e"]}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  generation: Generation
  chips: int

  @property
  def gcloud_type(self) -> str:
    """The --accelerator-type value (v5litepod-8, v4-8, v5p-16)."""
    return f"{self.generation.gcloud_prefix}-{self.chips * self.generation.cores_per_chip}"

  @property
  def name(self) -> str:
    """Short name by generation and type number (v5e-8, v4-8, v5p-16)."""
    return f"{self.generation.name}-{self.chips * self.generation.cores_per_chip}"

  @property
  def hosts(self) -> int:
    """TPU VM workers in the slice."""
    if self.chips <= self.generation.single_host_chips:
      return 1
    return self.chips // self.generation.chips_per_host


def parse_accelerator(text: str) -> Accelerator:
  """v5e-8 / v5litepod-8, v4-8, v4-32, v5p-16, v6e-8 -> Accelerator; anything else raises LaunchError naming it."""
  match = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", str(text).strip().lower())
  known = "v4-N, v5p-N (N = TensorCores, 2 per chip), v5litepod-N or v5e-N, v6e-N (N = chips)"
  if not match:
    raise LaunchError(f"unknown accelerator type {text!r}; expected {known}, e.g. v5e-8, v4-8, v5p-16, v6e-8")
  generation, number = _PREFIXES[match.group(1)], int(match.group(2))
  if number % generation.cores_per_chip:
    raise LaunchError(f"accelerator type {text!r}: {generation.name} types count TensorCores, an even number")
  chips = number // generation.cores_per_chip
  if generation.sizes is not None and chips not in generation.sizes:
    raise LaunchError(f"accelerator type {text!r}: {generation.name} slices have {list(generation.sizes)} chips")
  if generation.sizes is None and (chips < generation.chips_per_host or chips % generation.chips_per_host):
    raise LaunchError(
      f"accelerator type {text!r}: {generation.name} slices have a multiple of {generation.chips_per_host} chips "
      f"({generation.chips_per_host * generation.cores_per_chip} TensorCores), e.g. {generation.name}-8"
    )
  return Accelerator(generation, chips)


# ----------------------------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class Slice:
  """Where the commands go: project, zone, TPU (or queued resource) name, accelerator, runtime."""

  project: str
  zone: str
  name: str
  accelerator: Accelerator | None
  runtime_version: str | None
  queued: bool = False
  workers: int | None = None  # overrides accelerator.hosts

  @property
  def hosts(self) -> int:
    if self.workers is not None:
      return self.workers
    if self.accelerator is None:
      raise LaunchError("the number of workers follows from --accelerator (or VRRL_TPU_TYPE); set it or --workers")
    return self.accelerator.hosts

  def scope(self) -> list[str]:
    return [f"--project={self.project}", f"--zone={self.zone}"]


@dataclasses.dataclass(frozen=True)
class Bucket:
  """gs://name[/path]: runs live under gs://name/path/<run>, mounted on every worker at ~/vrrl_gcs/name."""

  name: str
  path: str

  @property
  def mount(self) -> str:
    """The mount point, in worker shell syntax."""
    return f"$HOME/{MOUNT_DIR}/{self.name}"

  def url(self, run: str) -> str:
    return f"gs://{self.name}/{self.path}/{run}"


def parse_bucket(text: str | None) -> Bucket:
  if not text:
    raise LaunchError(f"missing --bucket (or {ENV['bucket']}): a gs://bucket[/path] for the run's workdir")
  match = re.fullmatch(r"gs://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])(/[A-Za-z0-9._/-]*)?", text.strip())
  if not match:
    raise LaunchError(
      f"--bucket {text!r} is not a gs://bucket[/path] URL; a TPU run keeps its workdir (checkpoints, metrics, "
      "galleries) in Cloud Storage so every host shares it and it outlives a preempted VM"
    )
  path = (match.group(2) or "").strip("/") or DEFAULT_RUNS_PATH
  if any(part in ("", ".", "..") for part in path.split("/")):
    raise LaunchError(f"--bucket {text!r}: the path must not contain empty, '.' or '..' parts")
  return Bucket(match.group(1), path)


def check_run_name(run: str | None) -> str:
  if not run or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", run):
    raise LaunchError(f"--run {run!r}: a run name is 1-63 letters, digits, '.', '_' or '-' (it names the workdir)")
  return run


def _setting(args, field: str, flag: str, required: bool = True) -> str | None:
  value = getattr(args, field, None) or os.environ.get(ENV[field])
  if required and not value:
    raise LaunchError(f"missing {flag} (or {ENV[field]})")
  return value


def slice_from(args, need_accelerator: bool) -> Slice:
  project = _setting(args, "project", "--project")
  zone = _setting(args, "zone", "--zone")
  name = _setting(args, "name", "--name")
  if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
    raise LaunchError(f"--name {name!r}: TPU names are lowercase letters, digits and '-', starting with a letter")
  text = _setting(args, "accelerator", "--accelerator", required=need_accelerator)
  accelerator = parse_accelerator(text) if text else None
  runtime = _setting(args, "runtime_version", "--runtime-version", required=False)
  if runtime is None and accelerator is not None:
    runtime = accelerator.generation.runtime_version
  workers = getattr(args, "workers", None)
  if workers is not None and workers < 1:
    raise LaunchError(f"--workers {workers}: must be >= 1")
  return Slice(project, zone, name, accelerator, runtime, bool(getattr(args, "queued", False)), workers)


# ----------------------------------------------------------------------------------------------------------------
# Commands. Each builder returns argv lists; nothing here runs anything.


def tpu_vm(*words: str) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", *words]


def ssh_all(tpu: Slice, script: str, worker: str = "all") -> list[str]:
  return tpu_vm("ssh", tpu.name, *tpu.scope(), f"--worker={worker}", f"--command={script}")


def create_commands(tpu: Slice, spot: bool) -> list[list[str]]:
  accelerator = [f"--accelerator-type={tpu.accelerator.gcloud_type}"]
  spot_flag = ["--spot"] if spot else []
  if tpu.queued:
    qr = ["gcloud", "compute", "tpus", "queued-resources", "create", tpu.name, *tpu.scope()]
    return [[*qr, f"--node-id={tpu.name}", *accelerator, f"--runtime-version={tpu.runtime_version}", *spot_flag]]
  return [tpu_vm("create", tpu.name, *tpu.scope(), *accelerator, f"--version={tpu.runtime_version}", *spot_flag)]


def delete_commands(tpu: Slice) -> list[list[str]]:
  if tpu.queued:  # --force deletes the TPU VM the queued resource holds, too
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", tpu.name, *tpu.scope(), "--force", "--quiet"]]
  return [tpu_vm("delete", tpu.name, *tpu.scope(), "--quiet")]


def _active_run_guard(what: str) -> str:
  """Worker shell: refuse to go on while a run started by `run` is alive (its pid files)."""
  return (
    f'for f in "$HOME"/{LOG_DIR}/*/worker_*.pid; do if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then '
    f'echo "$(hostname): a run is active ($f); stop it before {what}" >&2; exit 1; fi; done'
  )


GCSFUSE_INSTALL = (
  "command -v gcsfuse >/dev/null || { curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
  " | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null"
  ' && echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt'
  ' gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null'
  " && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"
)


def setup_commands(tpu: Slice, python: str, ref: str, git_url: str | None) -> list[list[str]]:
  """Code on every worker (a `git archive` of ``ref`` copied with scp, or a clone of ``git_url``), a venv with TPU
  jax and the package, gcsfuse; then every worker prints its device counts (all at once, so a multi-host slice can
  form)."""
  home = "$HOME"
  venv = f"{home}/{VENV_DIR}"
  commands, steps = [], ["set -e", _active_run_guard("setup replaces the code"), f'rm -rf "{home}/{CODE_DIR}"']
  if git_url is None:
    tarball = os.path.join(tempfile.gettempdir(), f"vrrl_jax_{tpu.name}.tar.gz")
    commands.append(
      ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--prefix={CODE_DIR}/", f"--output={tarball}", ref]
    )
    commands.append(tpu_vm("scp", tarball, f"{tpu.name}:{CODE_DIR}.tar.gz", *tpu.scope(), "--worker=all"))
    steps.append(f'tar -xzf "{home}/{CODE_DIR}.tar.gz" -C "{home}"')
  else:
    steps.append(f'git clone -q {shlex.quote(git_url)} "{home}/{CODE_DIR}"')
    steps.append(f'git -C "{home}/{CODE_DIR}" checkout -q {shlex.quote(ref)}')
  py = shlex.quote(python)
  steps += [
    # TPU VM images are Ubuntu 22.04 (python3.10); the package needs >= 3.11.
    f"command -v {py} >/dev/null || {{ sudo apt-get update -q && sudo apt-get install -y -q {py} {py}-venv; }}",
    f'[ -x "{venv}/bin/python" ] || {py} -m venv "{venv}"',
    f'"{venv}/bin/pip" install -q -U pip',
    f'"{venv}/bin/pip" install -q -U "jax[tpu]"',
    f'"{venv}/bin/pip" install -q -e "{home}/{CODE_DIR}"',
    GCSFUSE_INSTALL,
    f'"{venv}/bin/python" -c \'import jax; print(jax.process_index(), "of", jax.process_count(), "processes,",'
    f' jax.device_count(), "devices")\'',
  ]
  commands.append(ssh_all(tpu, "; ".join(steps)))
  return commands


def check_gcs_paths(train_args: list[str], bucket: Bucket) -> None:
  """gs:// URLs in training flags must lie in the run's bucket: only it is mounted on the workers, and the trainer
  opens paths with pathlib, which cannot read gs:// itself."""
  for arg in train_args:
    for url in re.findall(r"gs://[^\s,=]+", arg):
      if not (url == f"gs://{bucket.name}" or url.startswith(f"gs://{bucket.name}/")):
        raise LaunchError(
          f"training flag {arg!r} names {url}, which is not in the run's bucket gs://{bucket.name}; copy it there "
          "(only that bucket is mounted on the workers)"
        )


def worker_arg(arg: str, bucket: Bucket) -> str:
  """A training flag quoted for the worker shell, gs://<bucket> replaced by its mount point under $HOME."""
  mount = f'"$HOME"/{MOUNT_DIR}/{bucket.name}'
  return mount.join(shlex.quote(piece) if piece else "" for piece in arg.split(f"gs://{bucket.name}"))


def run_commands(tpu: Slice, bucket: Bucket, run: str, config: str, train_args: list[str]):
  """The same command on every worker: mount the bucket, then the trainer in the background with --multihost,
  stdout and stderr appended to the worker's log; its pid (= its process group) in worker_<i>.pid for `stop`."""
  logs = f"$HOME/{LOG_DIR}/{run}"
  mount = bucket.mount
  check_gcs_paths(train_args, bucket)
  train = ["-m", "vrrl_jax.train", f"--config={config}", f"--workdir={bucket.url(run)}", "--multihost", *train_args]
  command = f'"$HOME/{VENV_DIR}/bin/python" ' + " ".join(worker_arg(a, bucket) for a in train)
  steps = [
    "set -e",
    f'mkdir -p "{logs}" "{mount}"',
    f'mountpoint -q "{mount}" || gcsfuse {" ".join(GCSFUSE_OPTIONS)} {bucket.name} "{mount}"',
    f"W=$(curl -sf -H 'Metadata-Flavor: Google' {WORKER_NUMBER_URL} || hostname)",
    f'P="{logs}/worker_$W.pid"',
    f'if [ -f "$P" ] && kill -0 "$(cat "$P")" 2>/dev/null; then echo "worker $W: run {run} is already running '
    f'(pid $(cat "$P")); stop it first" >&2; exit 1; fi',
    f'cd "$HOME/{CODE_DIR}"',
    f'echo "=== $(date -u +%FT%TZ) worker $W starts {run}" >> "{logs}/worker_$W.log"',
    f'setsid nohup {command} >> "{logs}/worker_$W.log" 2>&1 < /dev/null & echo $! > "$P"',
    f'echo "worker $W: pid $(cat "$P"), log ~/{LOG_DIR}/{run}/worker_$W.log, workdir {bucket.url(run)}"',
  ]
  return [ssh_all(tpu, "; ".join(steps))]


def logs_commands(tpu: Slice, run: str, lines: int, follow: bool, worker: str, fetch: str | None):
  if fetch is not None:  # one scp per worker: the files have the same name on every worker
    workers = range(tpu.hosts) if worker == "all" else [int(worker)]
    return [
      tpu_vm(
        "scp",
        f"{tpu.name}:{LOG_DIR}/{run}/worker_{i}.log",
        os.path.join(fetch, f"worker_{i}.log"),
        *tpu.scope(),
        f"--worker={i}",
      )
      for i in workers
    ]
  tail = f'tail -v -n {lines}{" -F" if follow else ""} "$HOME/{LOG_DIR}/{run}"/worker_*.log'
  return [ssh_all(tpu, tail, worker)]


def stop_commands(tpu: Slice, run: str | None):
  """On every worker: TERM the run's process groups (all runs without --run), KILL what is left after a grace
  period, then kill any process still holding a TPU device (/dev/accel* on v4 / v5e, /dev/vfio/N on v5p / v6e)
  and remove a stale /tmp/libtpu_lockfile, so the next run can open the chips."""
  pids = f'"$HOME/{LOG_DIR}"/{run or "*"}/worker_*.pid'
  steps = [
    f'for f in {pids}; do [ -f "$f" ] && kill -TERM -- "-$(cat "$f")" 2>/dev/null || true; done',
    f'for i in $(seq {STOP_GRACE_S}); do alive=0; for f in {pids}; do [ -f "$f" ] && kill -0 "$(cat "$f")" '
    "2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 1; done",
    f'for f in {pids}; do [ -f "$f" ] || continue; kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done',
    "H=$(sudo lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | sort -u | tr '\\n' ' ' || true)",
    'if [ -n "$H" ]; then echo "$(hostname): killing TPU holders $H"; sudo kill -9 $H || true; fi',
    "sudo rm -f /tmp/libtpu_lockfile",
    'echo "$(hostname): stopped"',
  ]
  return [ssh_all(tpu, "; ".join(steps))]


# ----------------------------------------------------------------------------------------------------------------
# Command line.


def _common(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--project", help=f"Google Cloud project (or {ENV['project']})")
  parser.add_argument("--zone", help=f"zone, e.g. us-west4-a (or {ENV['zone']})")
  parser.add_argument("--name", help=f"TPU VM / queued resource name (or {ENV['name']})")
  parser.add_argument("--accelerator", help=f"v5e-8, v4-8, v5p-16, v6e-8, ... (or {ENV['accelerator']})")
  parser.add_argument(
    "--runtime-version", dest="runtime_version", help=f"TPU software version (or {ENV['runtime_version']})"
  )
  parser.add_argument("--queued", action="store_true", help="the slice is a queued resource (create / delete)")
  parser.add_argument("--workers", type=int, help="override the number of workers the accelerator type implies")
  parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the commands, run nothing")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m vrrl_jax.launch", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  create = sub.add_parser("create", help="create the TPU VM slice (or a queued resource with --queued)")
  create.add_argument("--spot", action="store_true", help="spot capacity (cheaper, preemptible)")
  setup = sub.add_parser("setup", help="code, venv with TPU jax and the package, gcsfuse on every worker")
  setup.add_argument("--ref", default="HEAD", help="git ref to archive (or to check out with --git-url)")
  setup.add_argument("--git-url", dest="git_url", help="clone this repository on the workers instead of copying")
  setup.add_argument("--python", default="python3.11", help="the interpreter the venv is made with")
  run = sub.add_parser("run", help="start training on every worker (resumes a run of the same name)")
  run.add_argument("--run", required=True, help="run name: the workdir is <bucket>/<run>")
  run.add_argument("--config", required=True, help="config file, relative to the repository root")
  run.add_argument("--bucket", help=f"gs://bucket[/path] for the workdir (or {ENV['bucket']})")
  run.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then extra vrrl_jax.train flags")
  logs = sub.add_parser("logs", help="tail (or fetch) every worker's log of a run")
  logs.add_argument("--run", required=True)
  logs.add_argument("--lines", type=int, default=50)
  logs.add_argument("--follow", action="store_true", help="keep printing new lines (tail -F)")
  logs.add_argument("--worker", default="all", help="one worker number, or all")
  logs.add_argument("--fetch", metavar="DIR", help="copy the logs to DIR instead of printing them")
  stop = sub.add_parser("stop", help="stop a run (every run without --run) on every worker and free the TPU")
  stop.add_argument("--run", help="run name; default every run")
  sub.add_parser("delete", help="delete the slice (or the queued resource with --queued)")
  for p in (create, setup, run, logs, stop, sub.choices["delete"]):
    _common(p)
  return parser


def commands_for(args) -> list[list[str]]:
  """The argv lists a parsed command line stands for; raises LaunchError on bad settings."""
  if args.command == "delete":
    return delete_commands(slice_from(args, need_accelerator=False))
  tpu = slice_from(args, need_accelerator=True)
  if args.command == "create":
    return create_commands(tpu, args.spot)
  if args.command == "setup":
    return setup_commands(tpu, args.python, args.ref, args.git_url)
  if args.command == "run":
    run = check_run_name(args.run)
    bucket = parse_bucket(args.bucket or os.environ.get(ENV["bucket"]))
    config = pathlib.PurePosixPath(args.config)
    if config.is_absolute() or ".." in config.parts or not (REPO / config).is_file():
      raise LaunchError(f"--config {args.config}: not a config file inside the repository {REPO}")
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
      train_args = train_args[1:]
    for arg in train_args:
      if arg.split("=")[0] in ("--workdir", "--multihost", "--config"):
        raise LaunchError(f"training flag {arg!r}: run sets --config, --workdir and --multihost itself")
    return run_commands(tpu, bucket, run, str(config), train_args)
  if args.command == "logs":
    run = check_run_name(args.run)
    if args.worker != "all" and not args.worker.isdigit():
      raise LaunchError(f"--worker {args.worker!r}: a worker number or all")
    if args.worker != "all" and int(args.worker) >= tpu.hosts:
      raise LaunchError(f"--worker {args.worker}: {tpu.name} has workers 0..{tpu.hosts - 1}")
    if args.lines < 1:
      raise LaunchError(f"--lines {args.lines}: must be >= 1")
    return logs_commands(tpu, run, args.lines, args.follow, args.worker, args.fetch)
  if args.command == "stop":
    return stop_commands(tpu, check_run_name(args.run) if args.run is not None else None)
  raise LaunchError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command == "run" and "--dry-run" in args.train_args:  # a launcher flag, wherever it was put
    args.train_args = [a for a in args.train_args if a != "--dry-run"]
    args.dry_run = True
  try:
    commands = commands_for(args)
  except LaunchError as e:
    parser.error(str(e))
  if args.dry_run:
    for command in commands:
      print(shlex.join(command))
    return 0
  if args.command == "setup" and args.git_url is None:
    dirty = subprocess.run(
      ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout
    if dirty.strip():
      print(f"launch: note: uncommitted changes are not shipped (git archive {args.ref})", file=sys.stderr)
  if args.command == "logs" and args.fetch is not None:
    os.makedirs(args.fetch, exist_ok=True)
  for command in commands:
    print(f"+ {shlex.join(command)}", file=sys.stderr)
    code = subprocess.run(command).returncode
    if code:
      print(f"launch: command failed with exit status {code}", file=sys.stderr)
      return code
  return 0


if __name__ == "__main__":
  sys.exit(main())
