"""MetricsWriter: strict-JSON lines, resume equals an uninterrupted run, TensorBoard events, console line.

TensorBoard files are read back with an independent TFRecord reader (length, masked CRC-32C, payload,
masked CRC-32C, as the TFRecord format defines it) and the Event proto; resumes are checked with
TensorBoard's rule for a SessionLog START event (drop earlier events at or after its step).
"""

import json
import math
import pathlib
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from vrrl_jax import metrics


def _crc32c_table():
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path: pathlib.Path) -> list:
  data, i, out = path.read_bytes(), 0, []
  while i < len(data):
    header = data[i : i + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[i + 8 : i + 12])[0] == _masked_crc32c(header)
    payload = data[i + 12 : i + 12 + length]
    assert struct.unpack("<I", data[i + 12 + length : i + 16 + length])[0] == _masked_crc32c(payload)
    event = event_pb2.Event()
    event.ParseFromString(payload)
    out.append(event)
    i += 16 + length
  return out


def _tensorboard_scalars(tb_dir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """What TensorBoard shows: files in creation order, a SessionLog START purges steps >= its step."""
  files = [_read_events(p) for p in tb_dir.iterdir()]
  files.sort(key=lambda events: events[0].wall_time)
  series: dict[str, list[tuple[int, float]]] = {}
  for events in files:
    for event in events:
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        for tag in series:
          series[tag] = [(s, v) for s, v in series[tag] if s < event.step]
      for value in event.summary.value:
        series.setdefault(value.tag, []).append((event.step, value.simple_value))
  return series


def _strict_lines(path: pathlib.Path) -> list[dict]:
  def no_constants(name):
    raise AssertionError(f"non-JSON constant {name} in metrics file")

  text = path.read_text()
  assert text.endswith("\n")
  return [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]


def _step_scalars(step: int) -> dict:
  return {
    "loss": 1.0 / step,
    "reward": np.float32(step) / 7,
    "n_tokens": np.int64(100 * step),
    "em": jnp.asarray(step % 3 == 0, jnp.float32),
  }


def _without_wall_time(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def test_lines_are_strict_json_with_step_and_wall_time(tmp_path):
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None) as writer:
    writer.write(
      1,
      {
        "loss": 0.5,
        "nan": float("nan"),
        "inf": np.float32("inf"),
        "ninf": -math.inf,
        "flag": True,
        "count": np.int32(7),
        "f32": np.float32(0.1),
        "arr": np.asarray(2.5),
        "jax": jnp.asarray(0.25, jnp.bfloat16),
      },
    )
    writer.write(2, {"loss": 0.25})
  lines = _strict_lines(tmp_path / "metrics.jsonl")
  assert [line["step"] for line in lines] == [1, 2]
  assert all(isinstance(line["wall_time"], float) for line in lines)
  first = lines[0]
  assert first["loss"] == 0.5 and first["nan"] is None and first["inf"] is None and first["ninf"] is None
  assert first["flag"] == 1 and first["count"] == 7 and first["arr"] == 2.5 and first["jax"] == 0.25
  assert first["f32"] == float(np.float32(0.1))  # the float32 value, exactly
  assert list(first) == ["step", "wall_time", "loss", "nan", "inf", "ninf", "flag", "count", "f32", "arr", "jax"]
  assert metrics.read_metrics(tmp_path) == lines
  assert metrics.read_metrics(tmp_path / "metrics.jsonl") == lines


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  straight, crashed = tmp_path / "straight", tmp_path / "crashed"
  with metrics.MetricsWriter(straight, process_index=0, console=None) as writer:
    for step in range(1, 11):
      writer.write(step, _step_scalars(step))

  dead = metrics.MetricsWriter(crashed, process_index=0, console=None)
  for step in range(1, 9):  # logged steps 6..8 after the checkpoint at 5, then died (never closed)
    dead.write(step, _step_scalars(step))
  dead.flush()
  with open(crashed / "metrics.jsonl", "a") as f:  # killed in the middle of a line
    f.write('{"step": 9, "wall_ti')
  with metrics.MetricsWriter(crashed, resume_step=5, process_index=0, console=None) as writer:
    for step in range(6, 11):
      writer.write(step, _step_scalars(step))

  a, b = metrics.read_metrics(straight), metrics.read_metrics(crashed)
  assert _without_wall_time(a) == _without_wall_time(b)
  assert [r["step"] for r in b] == list(range(1, 11))
  assert (b[2]["loss"], b[2]["reward"], b[2]["n_tokens"], b[2]["em"]) == (1.0 / 3, float(np.float32(3) / 7), 300, 1.0)

  expected = {
    tag: [(s, float(np.float32(r[tag]))) for s, r in ((r["step"], r) for r in a)]
    for tag in ("loss", "reward", "n_tokens", "em")
  }
  assert _tensorboard_scalars(straight / "tb") == expected
  assert _tensorboard_scalars(crashed / "tb") == expected
  dead.close()  # only to stop its event thread; it has nothing left to write


def test_a_run_resumed_at_its_last_sft_step_logs_the_eval_before_rl_again(tmp_path):
  """The SFT_DONE checkpoint of step 2 precedes the eval logged at step 2; a resume there redoes that eval only."""
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    writer.write(1, {"sft/loss": 3.0})
    writer.write(2, {"sft/loss": 2.0})
    writer.write(2, {"eval_before_rl/accuracy": 0.25})
    writer.write(3, {"reward/overall": 0.5})
  with pytest.raises(ValueError, match="comes before"):  # without redo, step 2 is closed
    metrics.MetricsWriter(tmp_path, resume_step=2, process_index=0, console=None, tensorboard=False).write(2, {})
  redo = ("eval_before_rl/",)
  with metrics.MetricsWriter(
    tmp_path, resume_step=2, process_index=0, console=None, tensorboard=False, redo_at_resume=redo
  ) as writer:
    writer.write(2, {"eval_before_rl/accuracy": 0.5})
    writer.write(3, {"reward/overall": 0.75})
  assert _without_wall_time(metrics.read_metrics(tmp_path)) == [
    {"step": 1, "sft/loss": 3.0},
    {"step": 2, "sft/loss": 2.0},
    {"step": 2, "eval_before_rl/accuracy": 0.5},
    {"step": 3, "reward/overall": 0.75},
  ]


def test_fresh_run_empties_a_stale_file(tmp_path):
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    writer.write(3, {"loss": 1.0})
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    writer.write(0, {"loss": 2.0})
  assert _without_wall_time(metrics.read_metrics(tmp_path)) == [{"step": 0, "loss": 2.0}]


def test_step_order(tmp_path):
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    writer.write(2, {"a": 1})
    writer.write(2, {"eval": 1})  # several records per step are fine
    with pytest.raises(ValueError, match="comes before"):
      writer.write(1, {"a": 1})
  with metrics.MetricsWriter(tmp_path, resume_step=2, process_index=0, console=None, tensorboard=False) as w:
    with pytest.raises(ValueError, match="comes before"):
      w.write(2, {"a": 1})
    w.write(3, {"a": 1})
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [2, 2, 3]


def test_console_line(tmp_path):
  lines = []
  with metrics.MetricsWriter(
    tmp_path,
    process_index=0,
    console=lines.append,
    tensorboard=False,
    console_keys=["reward", "loss", "missing", "kl", "n"],
  ) as writer:
    writer.write(12, {"loss": 0.123456, "reward": 0.5, "kl": 2.5e-5, "n": np.int64(42), "other": 1.0})
    writer.write(13, {"loss": float("nan"), "kl": -12345.0})
    writer.write(14, {"eval/optimal_rate": 0.5})  # none of the console keys: no empty line
  assert lines == ["step 12 | reward=0.5000 loss=0.1235 kl=2.500e-05 n=42", "step 13 | loss=nan kl=-1.234e+04"]
  everything = []
  with metrics.MetricsWriter(tmp_path / "all", process_index=0, console=everything.append, tensorboard=False) as writer:
    writer.write(1, {"b": 1.0, "a": 0.0})
  assert everything == ["step 1 | b=1.0000 a=0.0000"]


def test_only_process_zero_writes(tmp_path, monkeypatch):
  lines = []
  with metrics.MetricsWriter(tmp_path / "explicit", process_index=1, console=lines.append) as writer:
    writer.write(1, {"loss": 1.0})
  import jax

  monkeypatch.setattr(jax, "process_index", lambda: 3)
  with metrics.MetricsWriter(tmp_path / "from_jax", console=lines.append) as writer:
    writer.write(1, {"loss": 1.0})
  assert not (tmp_path / "explicit").exists() and not (tmp_path / "from_jax").exists() and lines == []
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  with metrics.MetricsWriter(tmp_path / "zero", console=None, tensorboard=False) as writer:
    writer.write(1, {"loss": 1.0})
  assert (tmp_path / "zero" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
  "scalars, match",
  [
    ({"loss": "high"}, "must be a number"),
    ({"loss": np.zeros(2)}, "shape"),
    ({"loss": None}, "must be a number"),
    ({"step": 1.0}, "reserved"),
    ({"wall_time": 1.0}, "reserved"),
    ({"": 1.0}, "non-empty"),
  ],
)
def test_bad_scalars_raise(tmp_path, scalars, match):
  with metrics.MetricsWriter(tmp_path, process_index=0, console=None, tensorboard=False) as writer:
    with pytest.raises(ValueError, match=match):
      writer.write(1, scalars)
    with pytest.raises(ValueError, match="step"):
      writer.write(-1, {"a": 1.0})


def test_read_metrics_errors(tmp_path):
  with pytest.raises(FileNotFoundError):
    metrics.read_metrics(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    metrics.read_metrics(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1}\n{"a": 2}\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    metrics.read_metrics(tmp_path)
  # A resume refuses to rewrite a corrupt file rather than silently dropping a line in the middle.
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    metrics.MetricsWriter(tmp_path, resume_step=1, process_index=0, console=None, tensorboard=False)
