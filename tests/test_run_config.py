"""Startup config checks: every shipped config passes; a bad value in any section is refused, naming the field."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from vrrl_jax import experiment, run_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def tiny():
  return experiment.load_config(REPO / "configs" / "frozenlake_tiny_cpu.py")


@pytest.mark.parametrize(
  "name", ["frozenlake_tiny_cpu", "frozenlake_small_cpu", "frozenlake_grpo_tiny_cpu", "grounding_tiny_cpu"]
)
def test_cpu_configs_pass(name):
  run_config.validate(experiment.load_config(REPO / "configs" / f"{name}.py"))


@pytest.mark.parametrize("name", ["frozenlake_qwen25vl_3b", "frozenlake_qwen3vl_4b", "grounding_qwen25vl_3b"])
def test_accelerator_configs_need_a_checkpoint(name):
  with pytest.raises(run_config.ConfigError, match="init_checkpoint"):
    run_config.validate(experiment.load_config(REPO / "configs" / f"{name}.py"))


# (field, bad value, what the message must say). One or more rows per section.
BAD_VALUES = [
  ("seed", -1, r"config\.seed=-1: must be an int >= 0"),
  ("max_sequence_len", 0, r"config\.max_sequence_len=0"),
  ("init_checkpoint", "/nonexistent/ckpt", r"config\.init_checkpoint='/nonexistent/ckpt': no such directory"),
  ("tokenizer_dir", "/nonexistent/tok", r"config\.tokenizer_dir='/nonexistent/tok': no such directory"),
  ("model.text_config.hidden_size", 130, r"config\.model: .*hidden_size"),
  ("model.vision_config.patch_size", 0, r"config\.model: "),
  ("model_options.dtype", "float13", r"config\.model: .*float13"),
  ("image.min_pixels", 10**9, r"config\.image: min_pixels"),
  ("mesh.data", 0, r"config\.mesh: mesh sizes must be positive or -1"),
  ("mesh.tensor", 3, r"config\.mesh: 8 devices cannot be split into .*'tensor': 3"),
  ("data.train_source", "web", r"config\.data: train_source must be one of"),
  ("data.train_style", "sepia", r"config\.data: unknown render style"),
  ("data.data_dir", "/nonexistent/maps", r"config\.data: data_dir /nonexistent/maps is not a directory"),
  ("data.generated_eval_levels", (5,), r"config\.data: eval level 5 comes from the release's eval maps"),
  ("optimizer.b2", 1.0, r"config\.optimizer: OptimizerConfig\.b2 must be in \[0, 1\), got 1\.0"),
  ("optimizer.frozen", "visual", r"config\.optimizer\.frozen='visual': must be a sequence of parameter path"),
  ("optimizer.grad_clip_norm", 0.0, r"config\.optimizer: .*max_grad_norm > 0"),
  ("sft.steps", -5, r"config\.sft\.steps=-5: must be an int >= 0"),
  ("sft.learning_rate", float("nan"), r"config\.sft\.learning_rate=nan: must be a finite number"),
  ("sft.micro_batches", 3, r"config\.sft\.micro_batches=3: must divide sft\.batch_size=16"),
  ("sft.batch_size", 4, r"config\.sft\.batch_size=4: 4 rows .* data x fsdp = 8 devices; make it a multiple of 8"),
  ("sft.micro_batches", 4, r"config\.sft\.batch_size=16: 4 rows .* a multiple of 32"),
  ("sft.wrong_route_loss", "no", r"config\.sft\.wrong_route_loss='no': must be True or False"),
  ("sft.cosine_decay", 1, r"config\.sft\.cosine_decay=1: must be True or False"),
  ("sft.min_length", 0, r"config\.sft\.min_length: config min_length must be a positive int"),
  ("sft.transcripts.p_correct_first", 1.5, r"config\.sft\.transcripts: .*p_correct_first"),
  ("rl.samples_per_prompt", 0, r"config\.rl\.samples_per_prompt=0: must be an int >= 2"),
  ("rl.samples_per_prompt", 1, r"config\.rl\.samples_per_prompt=1: must be an int >= 2"),
  ("rl.prompts_per_step", 0, r"config\.rl\.prompts_per_step=0"),
  ("rl.learning_rate", -1e-4, r"config\.rl\.learning_rate=-0\.0001"),
  ("rl.temperature", 0.0, r"config\.rl\.temperature=0\.0: must be a finite number in \(0\.0, inf\]"),
  ("rl.top_p", 1.5, r"config\.rl\.top_p=1\.5"),
  ("rl.max_new_tokens", 4096, r"config\.rl\.max_new_tokens=4096: must be below max_sequence_len=1024"),
  ("rl.update_min_rows", 0, r"config\.rl\.update_min_rows"),
  ("rl.mask_buffer_prefix", 1, r"config\.rl\.mask_buffer_prefix=1: must be True or False"),
  ("rl.loss.clip_low", 1.5, r"config\.rl\.loss: PolicyLossConfig\.clip_low must be in \[0, 1\).*got 1\.5"),
  ("rl.loss.dual_clip_c", 1.0, r"config\.rl\.loss: PolicyLossConfig\.dual_clip_c must be > 1"),
  ("rl.loss.loss_agg_mode", "mean", r"config\.rl\.loss: PolicyLossConfig\.loss_agg_mode must be one of"),
  ("rl.mode_weights.normal", -1, r"config\.rl\.mode_weights: ModeConfig\.normal_weight must be a finite number >= 0"),
  ("rl.buffer.min_size", 10_000, r"config\.rl\.buffer: PrefixBufferConfig\.min_size=10000 exceeds capacity"),
  ("rl.buffer.wrong_ratio", 2.0, r"config\.rl\.buffer: PrefixBufferConfig\.wrong_ratio"),
  ("rl.filter.low", 0.995, r"config\.rl\.filter: FilterConfig\.low=0\.995 must be < high"),
  ("rl.reward.lambda_deg", float("inf"), r"config\.rl\.reward: .*lambda_deg"),
  ("sampler.min_batch", 0, r"config\.sampler: sampler bucket min_batch must be an int >= 1"),
  ("task", "chess", r"config\.task: unknown task .chess.: there is no package vrrl_jax\.tasks\.chess"),
  ("eval.levels", (3, 9), r"config\.eval: levels: level 9 has no eval split"),
  ("eval.maps_per_level", 0, r"config\.eval: maps_per_level must be a positive int, got 0"),
  ("eval.before_rl", "yes", r"config\.eval\.before_rl='yes'"),
  ("eval.gallery_episodes", -1, r"config\.eval\.gallery_episodes=-1"),
  ("checkpoint.every", 0, r"config\.checkpoint\.every=0: must be an int >= 1"),
  ("checkpoint.keep", 0, r"config\.checkpoint\.keep=0"),
  ("log.console_keys", "sft/loss", r"config\.log\.console_keys='sft/loss'"),
]


def _set(config, path, value):
  *parents, leaf = path.split(".")
  section = config
  for part in parents:
    section = section[part]
  with section.ignore_type():
    section[leaf] = value


@pytest.mark.parametrize("path, value, message", BAD_VALUES, ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_field(path, value, message):
  config = tiny()
  _set(config, path, value)
  with pytest.raises(run_config.ConfigError, match=message):
    run_config.validate(config)


@pytest.mark.parametrize(
  "section, key",
  [
    ("", "sedd"),
    ("rl", "sample_per_prompt"),
    ("eval", "level"),
    ("optimizer", "lr"),
    ("rl.mode_weights", "greedy"),
    ("sampler", "min_cahce"),
    ("rl.loss", "clip_lo"),
    ("rl.buffer", "size"),
  ],
)
def test_an_unknown_key_is_refused(section, key):
  config = tiny()
  target = config
  for part in filter(None, section.split(".")):
    target = target[part]
  target[key] = 1
  with pytest.raises(run_config.ConfigError, match=key):
    run_config.validate(config)


@pytest.mark.parametrize(
  "path",
  ["task", "rl.loss", "rl.samples_per_prompt", "eval.levels", "checkpoint", "optimizer.b1", "rl.random_start_turn_min"],
)
def test_a_missing_key_is_named(path):
  config = tiny()
  *parents, leaf = path.split(".")
  section = config
  for part in parents:
    section = section[part]
  del section[leaf]
  with pytest.raises(run_config.ConfigError, match=rf"config\.{parents[0] if parents else leaf}.*(missing|{leaf})"):
    run_config.validate(config)


def _train(*args, timeout=120, module="vrrl_jax.train"):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run(
    [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
  )


@pytest.mark.parametrize("config_file", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_init_checkpoint_is_accepted_on_the_command_line_of_every_config(config_file, tmp_path):
  """The flag parser takes the path (no type error on a None default); the run (pretraining for a pretrain_
  config) then names the missing checkpoint within seconds."""
  t0 = time.perf_counter()
  missing = tmp_path / "no_such_checkpoint"
  module = "vrrl_jax.pretrain" if config_file.stem.startswith("pretrain_") else "vrrl_jax.train"
  result = _train(
    f"--config={config_file}", f"--workdir={tmp_path / 'w'}", f"--config.init_checkpoint={missing}", module=module
  )
  assert result.returncode != 0
  assert f"config.init_checkpoint='{missing}': no such directory" in result.stderr
  assert "Traceback" not in result.stderr
  assert time.perf_counter() - t0 < 60
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_a_bad_override_stops_the_command_before_any_step(tmp_path):
  result = _train(
    "--config=configs/frozenlake_tiny_cpu.py", f"--workdir={tmp_path / 'w'}", "--config.rl.loss.clip_low=1.5"
  )
  assert result.returncode != 0
  assert "config.rl.loss: PolicyLossConfig.clip_low must be in [0, 1)" in result.stderr
  assert "sft" not in result.stdout and not (tmp_path / "w" / "metrics.jsonl").exists()


def test_model_and_init_checkpoint_must_describe_the_same_model(tmp_path):
  """Both set: the checkpoint is loaded only when config.model says the same architecture; otherwise the error
  names each field that differs (here the rotary base), before anything is built."""
  from vrrl_jax.pretrain import export

  config = tiny()
  exp = experiment.build(config)
  params, _ = experiment.initial_params(exp, 0)
  export.export_hf(exp, params, tmp_path / "hf")
  config.init_checkpoint = str(tmp_path / "hf")
  run_config.validate(config)  # the same model: fine
  config.model.text_config.rope_parameters.rope_theta = 123.0
  with pytest.raises(
    run_config.ConfigError,
    match=r"config\.model: .*describe different models \(text\.rope_theta: 123\.0 in config\.model, "
    r"[0-9.]+ in the checkpoint\)",
  ):
    run_config.validate(config)
  config.model = None  # the checkpoint's own config.json
  run_config.validate(config)


def test_chat_template_is_the_tokenizers_own_and_required_beyond_qwen2_5_vl():
  import types

  from vrrl_jax.models import families

  qwen25 = types.SimpleNamespace(model_type="qwen2_5_vl")
  qwen3 = families.family("qwen3_vl").Config  # only its model_type is read
  assert experiment.chat_template_for(types.SimpleNamespace(chat_template="{{ x }}"), qwen3) == "{{ x }}"
  assert experiment.chat_template_for(types.SimpleNamespace(chat_template=None), qwen25) is None  # bundled one
  with pytest.raises(ValueError, match="qwen3_vl's is not bundled"):
    experiment.chat_template_for(types.SimpleNamespace(chat_template=None), qwen3)


@pytest.mark.parametrize("cosine_decay", [False, True])
def test_sft_lr_is_constant_after_warmup_or_a_cosine_to_zero_at_the_last_sft_step(cosine_decay):
  """The SFT optimizer's lr per applied update against the closed form: linear warmup, then constant or
  lr * (1 + cos(pi * progress)) / 2 over the steps after warmup (the schedule itself is checked against torch in
  tests/test_rl_step.py)."""
  from vrrl_jax.rl import train_state as ts_lib

  config = tiny()
  config.sft.update(steps=100, learning_rate=3e-3, cosine_decay=cosine_decay)
  config.optimizer.warmup_steps = 20
  run_config.validate(config)
  schedule = ts_lib.learning_rate_schedule(run_config.sft_optimizer_config(config))
  for n in (0, 10, 20, 40, 60, 99, 100):
    if n < 20:
      want = 3e-3 * n / 20
    elif cosine_decay:
      want = 3e-3 * (1 + np.cos(np.pi * (n - 20) / 80)) / 2
    else:
      want = 3e-3
    assert float(schedule(n)) == pytest.approx(want, rel=1e-5, abs=1e-9), n


def test_eval_cli_applies_config_overrides_and_refuses_bad_ones(tmp_path):
  """`python -m vrrl_jax.eval` takes --config.key=value as training does: an override reaches the startup check (a
  valid config made invalid by it is refused, naming the field), and a key the config lacks is named."""
  from vrrl_jax import eval as eval_lib

  common = ["--config", str(REPO / "configs" / "frozenlake_tiny_cpu.py"), "--checkpoint", str(tmp_path)]
  common += ["--out", str(tmp_path / "eval")]
  with pytest.raises(SystemExit, match=r"bad config: config\.eval\.max_turns"):
    eval_lib.main([*common, "--config.eval.max_turns=0"])
  with pytest.raises(SystemExit, match=r"bad config: .*config has no field 'eval\.nope'"):
    eval_lib.main([*common, "--config.eval.nope=3"])
  assert not (tmp_path / "eval").exists()
