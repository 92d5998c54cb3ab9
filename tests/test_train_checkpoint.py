"""Training checkpoints: round trip of state + buffer + host JSON, retention, and fallback past a corrupt step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vrrl_jax.checkpoints.train_checkpoint import CheckpointError, TrainCheckpointer


def _state(seed):
  rng = np.random.default_rng(seed)
  return {
    "step": jnp.asarray(seed, jnp.int32),
    "params": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)},
    "rng": jax.random.PRNGKey(seed),
  }


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _buffer(seed):
  return {"images": np.full((2, 5, 5, 3), seed, np.uint8), "steps": np.arange(3) + seed, "n": seed}


def test_round_trip_and_retention(tmp_path):
  ckpt = TrainCheckpointer(tmp_path / "ckpt", save_every=2, keep=2)
  for step in (2, 4, 6):
    assert ckpt.should_save(step) and not ckpt.should_save(step + 1)
    ckpt.save(step, _state(step), _buffer(step), {"phase": "rl", "prompts_consumed": 10 * step})
  ckpt.wait()
  assert ckpt.steps() == [4, 6]
  step, state, buf, host = ckpt.restore_latest(_abstract(_state(0)))
  assert step == 6 and host == {"phase": "rl", "prompts_consumed": 60}
  jax.tree.map(np.testing.assert_array_equal, state, _state(6))
  np.testing.assert_array_equal(buf["images"], _buffer(6)["images"])
  np.testing.assert_array_equal(buf["steps"], _buffer(6)["steps"])
  assert int(buf["n"]) == 6
  ckpt.close()


def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog):
  ckpt = TrainCheckpointer(tmp_path / "ckpt", save_every=1, keep=3)
  for step in (1, 2):
    ckpt.save(step, _state(step), _buffer(step), {"step": step})
  ckpt.close()
  # Truncate every data file of the newest step's state item.
  for f in (tmp_path / "ckpt" / "2" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and f.suffix not in (".json",) and "metadata" not in f.name:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  ckpt = TrainCheckpointer(tmp_path / "ckpt", save_every=1, keep=3)
  step, state, _, host = ckpt.restore_latest(_abstract(_state(0)))
  assert step == 1 and host == {"step": 1}
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
  assert "checkpoint step 2" in caplog.text and "unreadable" in caplog.text
  ckpt.close()


def test_all_corrupt_raises_naming_each_step(tmp_path):
  ckpt = TrainCheckpointer(tmp_path / "ckpt", save_every=1, keep=3)
  ckpt.save(1, _state(1), _buffer(1), {"step": 1})
  ckpt.close()
  ckpt = TrainCheckpointer(tmp_path / "ckpt", save_every=1, keep=3)
  wrong = _abstract(
    {"step": jnp.zeros((), jnp.int32), "params": {"w": jnp.zeros((5, 3))}, "rng": jax.random.PRNGKey(0)}
  )
  with pytest.raises(CheckpointError, match="checkpoint step 1"):
    ckpt.restore_latest(wrong)
  ckpt.close()  # not left to the garbage collector: orbax's closing then hits a closed event loop (a warning)


def test_empty_directory_restores_nothing(tmp_path):
  ckpt = TrainCheckpointer(tmp_path / "none", save_every=1, keep=1)
  assert ckpt.restore_latest(_abstract(_state(0))) is None
  ckpt.close()


def test_bad_options():
  with pytest.raises(ValueError, match="save_every"):
    TrainCheckpointer("/tmp/x", save_every=0, keep=1)
