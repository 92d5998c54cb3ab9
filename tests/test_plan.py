"""The planner against XLA's own count: the tiny CPU config's jitted update on the fake 8-device mesh (params,
optimizer state and batch exactly; the whole program's bytes within 20%, with and without remat), and its verdicts
for the TPU configs (each fits its slice; the released 3B recipe does not fit a v5e-8)."""

import json
import pathlib
import types

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vrrl_jax import launch
from vrrl_jax import plan as plan_lib
from vrrl_jax import run_config
from vrrl_jax.models import families
from vrrl_jax.models.inputs import ModelInputs
from vrrl_jax.models.vision import VisionInputs
from vrrl_jax.parallel import mesh as mesh_lib
from vrrl_jax.parallel import rules as rules_lib
from vrrl_jax.rl import step as step_lib
from vrrl_jax.rl import train_state as ts

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
TINY = str(CONFIGS / "frozenlake_tiny_cpu.py")
REMAT = ["--config.model_options.scan_layers=True", "--config.model_options.remat_policy=nothing_saveable"]
TPU_CONFIGS = [
  ("frozenlake_qwen25vl_3b_v5e_8.py", "v5e-8"),
  ("frozenlake_qwen25vl_3b_v4_8.py", "v4-8"),
  ("frozenlake_qwen25vl_3b_v5p_16.py", "v5p-16"),
  ("frozenlake_qwen3vl_4b_v5e_8.py", "v5e-8"),
  ("frozenlake_qwen3vl_4b_v4_8.py", "v4-8"),
  ("frozenlake_qwen3vl_4b_v5p_16.py", "v5p-16"),
]


def xla_update_memory(config, plan: plan_lib.Plan):
  """memory_analysis() of the jitted RL update (``rl.step.make_train_step``) for the planned micro-batches: rows of
  the planned length, each micro-batch's image patches replicated, as ``rl_loop.build_update_batch`` makes them."""
  model_config = plan_lib.model_config_of(config)
  mesh = mesh_lib.make_mesh(dict(config.mesh))
  rules = rules_lib.DEFAULT_RULES
  shapes, specs = families.abstract_params(model_config)
  step_config = run_config.step_config(config)
  keep_reference = step_config.loss.kl_coef > 0
  optimizer = ts.make_optimizer(step_config.optimizer)
  state = ts.abstract_train_state(shapes, specs, optimizer, mesh, rules, keep_reference=keep_reference)
  w = plan.workload
  micro, rows, seq = w["micro_batches"], w["rows_per_micro_batch"], w["seq_len"]
  patches = rows * w["patches_per_row"]
  row_sharding = mesh_lib.data_sharding(mesh, rules, ndim=2, batch_axis=1)
  replicated = NamedSharding(mesh, PartitionSpec())
  spec = lambda shape, dtype, sharding=row_sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  vision = VisionInputs(
    pixel_values=spec((micro, patches, model_config.vision.patch_dim), jnp.float32, replicated),
    patch_order=spec((micro, patches), jnp.int32, replicated),
    patch_positions=spec((micro, patches, 2), jnp.int32, replicated),
    window_segment_ids=spec((micro, patches), jnp.int32, replicated),
    frame_segment_ids=spec((micro, patches), jnp.int32, replicated),
    token_order=spec((micro, patches // model_config.vision.merge_unit), jnp.int32, replicated),
  )
  inputs = ModelInputs(
    input_ids=spec((micro, rows, seq), jnp.int32),
    segment_ids=spec((micro, rows, seq), jnp.int32),
    positions=spec((micro, 3, rows, seq), jnp.int32, mesh_lib.data_sharding(mesh, rules, ndim=3, batch_axis=2)),
    vision=vision if patches else None,
  )
  per_row = lambda dtype: spec((micro, rows, seq), dtype)
  batch = step_lib.RLBatch(
    inputs=inputs,
    targets=per_row(jnp.int32),
    loss_mask=per_row(jnp.float32),
    advantages=spec((micro, rows), jnp.float32),
    old_logp=per_row(jnp.float32),
    ref_logp=per_row(jnp.float32) if keep_reference else None,
  )
  model = families.build(model_config)
  update = step_lib.make_train_step(model, mesh, rules, step_config, jax.tree.map(lambda x: x.sharding, state))
  return update.lower(state, batch).compile().memory_analysis()


@pytest.mark.parametrize("overrides", [[], REMAT], ids=["unrolled-no-remat", "scanned-remat"])
def test_planner_matches_xla_on_the_cpu_mesh(overrides):
  """Measured (planner / XLA): arguments 1.000, program 1.096 unrolled without remat and 1.014 scanned with
  remat, at 512-token rows with the config's images (a 32-row micro-batch, 31360 patches)."""
  config = plan_lib.load_config(TINY, overrides)
  plan = plan_lib.plan(config, num_devices=8, assumptions=plan_lib.Assumptions(seq_len=512))
  assert plan.mesh == {"data": 8, "fsdp": 1, "tensor": 1}
  assert plan.workload["patches_per_row"] > 0 and not plan.problems
  memory = xla_update_memory(config, plan)
  planned_arguments = sum(plan.memory["persistent"].values())
  planned_arguments += plan.memory["update"]["update batch (micro-batched rows, replicated images)"]
  arguments_ratio = planned_arguments / memory.argument_size_in_bytes
  total_ratio = plan.peaks["update"] / (memory.argument_size_in_bytes + memory.temp_size_in_bytes)
  print(f"planner / XLA: arguments {arguments_ratio:.3f}, update program {total_ratio:.3f}")
  assert abs(arguments_ratio - 1) < 0.01  # params, reference, optimizer state, batch: exact up to scalars
  assert 0.8 < total_ratio < 1.2


@pytest.mark.parametrize("name, topology", TPU_CONFIGS)
def test_tpu_configs_fit_their_slice(name, topology):
  plan = plan_lib.plan(plan_lib.load_config(str(CONFIGS / name), []), topology)
  assert plan.fits, plan_lib.format_plan(plan, name, topology)


@pytest.mark.parametrize("name, topology", TPU_CONFIGS)
def test_tpu_configs_pass_the_run_checks(name, topology, monkeypatch):
  """Every section as the run reads it. The model side needs the checkpoint, which is not here; in its place, the
  mesh the slice's chips give (what the batch checks split rows over)."""
  config = plan_lib.load_config(str(CONFIGS / name), [])
  sizes = plan_lib.resolve_mesh(config.mesh, launch.parse_accelerator(topology).chips)
  monkeypatch.setattr(run_config, "check_model_side", lambda config: types.SimpleNamespace(shape=sizes))
  run_config.validate(config)


def test_released_3b_recipe_does_not_fit_a_v5e_8():
  config = plan_lib.load_config(str(CONFIGS / "frozenlake_qwen25vl_3b.py"), [])
  config.model = plan_lib.load_config(str(CONFIGS / "frozenlake_qwen25vl_3b_v5e_8.py"), []).model
  plan = plan_lib.plan(config, "v5e-8")
  assert plan.fits is False
  assert (plan.workload["rollout_rows"], plan.workload["seq_len"]) == (256, 8192)
  assert plan.model["max_frame_patches"] == 65536  # the hub's max_pixels / 14^2: the vision band that breaks it
  # 3.75 B float32 params over 8 devices: policy, reference, 2 AdamW moments
  assert plan.memory["persistent"]["params (policy)"] == pytest.approx(3.75e9 * 4 / 8, rel=0.01)
  assert plan.memory["persistent"]["optimizer state (adamw mu, nu)"] == pytest.approx(2 * 3.75e9 * 4 / 8, rel=0.01)


def test_cli_json_line(capsys):
  name = "frozenlake_qwen25vl_3b_v5e_8.py"
  assert plan_lib.main(["--config", str(CONFIGS / name), "--topology", "v5e-8", "--json"]) == 0
  (line,) = capsys.readouterr().out.splitlines()
  result = json.loads(line)
  assert result["fits"] is True and result["topology"] == "v5e-8"
  assert result["peak_bytes"] <= result["limit_bytes"] == int(16e9 * 0.9)
  assert set(result["memory"]) >= {"persistent", "update", "log-probs", "rollout"}
  assert result["roofline"]["rollout decode"]["bound"] == "memory"
  assert result["roofline"]["update"]["bound"] == "compute"


def test_cli_table_and_exit_status(capsys):
  config = str(CONFIGS / "frozenlake_qwen25vl_3b_v5e_8.py")
  assert plan_lib.main(["--config", config, "--topology", "v5e-8", "--config.rl.prompts_per_step=32"]) == 1
  out = capsys.readouterr().out
  assert "DOES NOT FIT" in out and "optimizer state (adamw mu, nu)" in out and "roofline per RL step" in out


def test_a_tensor_split_the_kv_heads_cannot_take_is_a_problem():
  config = plan_lib.load_config(str(CONFIGS / "frozenlake_qwen25vl_3b_v5e_8.py"), ["--config.mesh.tensor=8"])
  config.mesh.fsdp = 1
  plan = plan_lib.plan(config, "v5e-8")
  assert not plan.fits
  assert any("k_proj" in problem and "dim 2 is not divisible by its 8 shards" in problem for problem in plan.problems)


def test_bad_inputs_are_named():
  with pytest.raises(plan_lib.PlanError, match="unknown accelerator type 'v9-8'"):
    plan_lib.plan(plan_lib.load_config(str(CONFIGS / "frozenlake_qwen25vl_3b_v5e_8.py"), []), "v9-8")
  with pytest.raises(plan_lib.PlanError, match="config has no field 'rl.nope'"):
    plan_lib.load_config(TINY, ["--config.rl.nope=1"])
  with pytest.raises(plan_lib.PlanError, match="needs 8 devices, the slice has 4"):
    plan_lib.resolve_mesh({"fsdp": 8}, 4)
  with pytest.raises(plan_lib.PlanError, match="neither model nor init_checkpoint"):
    plan_lib.plan(plan_lib.load_config(str(CONFIGS / "frozenlake_qwen25vl_3b.py"), []), "v5p-16")


def test_chip_table_cites_the_cloud_tpu_pages():
  for generation, chip in plan_lib.CHIPS.items():
    assert chip.source == f"https://cloud.google.com/tpu/docs/{generation}"
  assert plan_lib.CHIPS["v5p"].hbm_bytes == 95 * 2**30 and plan_lib.CHIPS["v5e"].peak_bf16_flops == 197e12


def test_a_reference_in_host_memory_leaves_the_devices():
  name = str(CONFIGS / "frozenlake_qwen25vl_3b_v5e_8.py")
  device = plan_lib.plan(plan_lib.load_config(name, ["--config.rl.loss.kl_coef=0.01"]), "v5e-8")
  host = plan_lib.plan(
    plan_lib.load_config(name, ["--config.rl.loss.kl_coef=0.01", "--config.rl.reference_memory=host"]), "v5e-8"
  )
  (device_ref,) = [v for k, v in device.memory["persistent"].items() if k.startswith("reference copy")]
  (host_ref,) = [v for k, v in host.memory["persistent"].items() if k.startswith("reference copy")]
  assert device_ref == device.memory["persistent"]["params (policy)"] and host_ref == 0
  assert host.peaks["update"] == device.peaks["update"] - device_ref  # the update never holds it
  assert host.peaks["log-probs"] == device.peaks["log-probs"]  # its pass copies it back for a while
  assert any("pinned host memory" in note for note in host.notes)
