"""Multi-host correctness on one machine: the whole run (SFT step, rollouts, RL updates, checkpoints, eval) as 2
processes x 4 fake CPU devices through ``jax.distributed`` (``launch/cpu_multiprocess.sh``), SIGKILLed after a
checkpoint and started again, logs the same metrics as 1 process x 8 devices straight through. (One 2-process run
checks both: a difference from either cause would show.) It is the suite's kill-and-resume test: the optimizer, RNG
and buffer state come back from the checkpoint, or the steps after it would differ.

Every process holds the whole host batch (``vrrl_jax.parallel.host``), so per-step metrics must agree to float
reduction order. The model is the tiny architecture from scratch with short turns: the point is the machinery, not
learning. The RL filter is off so every step updates: an untrained model's groups have no reward spread, so the
RL gradients are float noise (~1e-8), which Adam with its default eps (1e-8) would blow up into full-size steps that
differ with the reduction order; eps 1e-3 keeps those steps negligible, so later steps stay comparable. The SFT step
has real gradients (loss ~13) and checks their reduction across processes.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
  "--config=configs/frozenlake_tiny_cpu.py",
  "--config.init_checkpoint=",
  # The config's architecture cut to one layer and one vision block: compile time, not coverage, scales with depth.
  "--config.model.text_config.num_hidden_layers=1",
  "--config.model.vision_config.depth=1",
  "--config.model.vision_config.fullatt_block_indexes=(0,)",
  "--config.sft.steps=1",
  "--config.sft.batch_size=8",
  "--config.rl.steps=3",
  "--config.rl.prompts_per_step=4",
  "--config.rl.samples_per_prompt=2",
  "--config.rl.max_turns=2",
  "--config.rl.max_new_tokens=12",
  "--config.rl.filter.enabled=False",
  "--config.eval.before_rl=False",
  "--config.eval.levels=3,",
  "--config.eval.maps_per_level=2",
  "--config.eval.max_turns=2",
  "--config.eval.max_new_tokens=12",
  "--config.data.max_per_split=16",
  "--config.checkpoint.every=1",
  "--config.checkpoint.keep=10",
  "--config.optimizer.eps=1e-3",
]
TIMEOUT_S = 900


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, cache: pathlib.Path) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", VRRL_JAX_CACHE=str(cache), PORT=str(_free_port()))
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _command(workdir: pathlib.Path, processes: int) -> list[str]:
  train = [sys.executable, "-m", "vrrl_jax.train", f"--workdir={workdir}", *FLAGS]
  return ["bash", "launch/cpu_multiprocess.sh", *train] if processes == 2 else train


def _run(workdir: pathlib.Path, processes: int, cache: pathlib.Path) -> None:
  result = subprocess.run(
    _command(workdir, processes),
    cwd=REPO,
    env=_env(4 if processes == 2 else 8, cache),
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def _metrics(workdir: pathlib.Path) -> dict[int, dict]:
  """The last record of each (step, keys) in metrics.jsonl (a resumed run rewrites the steps after its
  checkpoint), without wall-clock values."""
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    values = {k: v for k, v in record.items() if k != "wall_time" and not k.startswith("time/")}
    out[(record["step"], tuple(sorted(values)))] = values
  return out


def _assert_same(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for key in a:
    for name, value in a[key].items():
      assert value == pytest.approx(b[key][name], rel=1e-5, abs=1e-6), (key[0], name, value, b[key][name])


def _episodes_agree_with_metrics(eval_dir: pathlib.Path) -> None:
  """``episodes.jsonl`` (what intervals are computed from) says what ``metrics.json`` says, per level."""
  metrics = json.loads((eval_dir / "metrics.json").read_text())
  lines = [json.loads(line) for line in (eval_dir / "episodes.jsonl").read_text().splitlines()]
  assert [line["index"] for line in lines] == list(range(metrics["overall"]["n"]))
  for level, summary in metrics["by_level"].items():
    optimal = [line["record"]["optimal"] for line in lines if f"L{line['group']}" == level]
    assert len(optimal) == summary["n"] and sum(optimal) / len(optimal) == summary["optimal_rate"]
  probed = [line["correction_survived"] for line in lines if line["correction_survived"] is not None]
  assert len(probed) == metrics["grounding_probe"]["n_corrections"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One process straight through; two processes SIGKILLed after their step-2 checkpoint and started again."""
  root = tmp_path_factory.mktemp("multiprocess")
  cache = root / "compilation_cache"
  _run(root / "one_process", 1, cache)
  workdir = root / "two_processes"
  process = subprocess.Popen(
    _command(workdir, 2),
    cwd=REPO,
    env=_env(4, cache),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )
  deadline = time.monotonic() + TIMEOUT_S
  while not (workdir / "checkpoints" / "2" / "commit_success.txt").exists():  # the first RL step is saved
    assert process.poll() is None and time.monotonic() < deadline, "the run ended before its step-2 checkpoint"
    time.sleep(0.5)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  _run(workdir, 2, cache)
  return root


def test_two_processes_killed_and_resumed_log_what_one_process_logs(runs):
  one, two = _metrics(runs / "one_process"), _metrics(runs / "two_processes")
  steps = sorted({step for step, _ in one})
  assert steps == [1, 2, 3, 4], steps  # SFT step 1, RL steps 2-4 (and the eval record at 4)
  assert any("loss/pg_loss" in values for values in one.values())  # the RL update ran
  _assert_same(one, two)
  eval_one = json.loads((runs / "one_process" / "eval_after_rl" / "metrics.json").read_text())
  eval_two = json.loads((runs / "two_processes" / "eval_after_rl" / "metrics.json").read_text())
  assert eval_one == eval_two
  _episodes_agree_with_metrics(runs / "one_process" / "eval_after_rl")
