"""Perception pretraining: task answers against hand-worked maps, held-out scoring, and a resumed run equal to an
uninterrupted one."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from vrrl_jax import experiment
from vrrl_jax.tasks.frozenlake import maps, render
from vrrl_jax.pretrain import run as pretrain_run
from vrrl_jax.pretrain import tasks

REPO = pathlib.Path(__file__).resolve().parents[1]
# Row 0: S F H / row 1: F H F / row 2: F F G. Start (0, 0), gift (2, 2), holes (0, 2) and (1, 1).
SPEC = maps.parse_spec(maps.MapSpec(("SFH", "FHF", "FFG"), 0, 8))


def test_map_answer_is_the_layout_cell_by_cell():
  ex = tasks.map_example(SPEC, "compact")
  assert ex.answer == "S F H\nF H F\nF F G"
  cells = [(k, ex.answer[s:e]) for k, s, e in ex.units if k == "cell"]
  assert [text for _, text in cells] == list("SFHFHFFFG")
  kinds = [(k, ex.answer[s:e]) for k, s, e in ex.units if k != "cell"]  # where the elf, the gift, the holes are
  assert kinds == [
    ("elf", "S"),
    ("ice", "F"),
    ("hole", "H"),
    ("ice", "F"),
    ("hole", "H"),
    ("ice", "F"),
    ("ice", "F"),
    ("ice", "F"),
    ("gift", "G"),
  ]
  np.testing.assert_array_equal(np.asarray(ex.image), np.asarray(render.render_map(SPEC, "compact")))


# Worked by hand on SPEC (S F H / F H F / F F G): o = a cell the drawn route passes (the start included), * = its
# last vertex; a vertex off the grid (a phantom cell) is not drawn in the trace, and the elf does not move.
@pytest.mark.parametrize(
  "route, answer",
  [
    (("down", "down", "right", "right"), "o . .\no . .\no o *\nhole: no\noff grid: no\ngift: yes"),
    (("right", "down"), "o o .\n. * .\n. . .\nhole: yes\noff grid: no\ngift: no"),
    (("up", "right"), "o * .\n. . .\n. . .\nhole: no\noff grid: yes\ngift: no"),
    (("left",), "o . .\n. . .\n. . .\nhole: no\noff grid: yes\ngift: no"),
    (("right", "right", "left", "left"), "* o o\n. . .\n. . .\nhole: yes\noff grid: no\ngift: no"),
  ],
)
def test_route_answer_traces_the_drawn_route(route, answer):
  ex = tasks.route_example(SPEC, route, "compact")
  assert ex.answer == answer
  units = {k: ex.answer[s:e] for k, s, e in ex.units}
  assert units["trace"] == answer.rsplit("\nhole", 1)[0]
  assert ("end" in units) == ("*" in answer)
  np.testing.assert_array_equal(np.asarray(ex.image), np.asarray(render.render_feedback(SPEC, route, "compact")))


def test_random_routes_cover_every_outcome():
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(200):
    ex = tasks.make_example("route", SPEC, rng, "compact")
    seen.update(line for line in ex.answer.splitlines()[-3:])
  assert seen == {"hole: yes", "hole: no", "off grid: yes", "off grid: no", "gift: yes", "gift: no"}


def test_unit_token_spans_cover_overlapping_tokens():
  offsets = [(0, 2), (2, 3), (3, 7), (7, 8)]
  spans = tasks.unit_token_spans(offsets, [("a", 0, 3), ("b", 4, 5), ("c", 7, 8)])
  assert [s.tolist() for s in spans] == [[0, 1], [2], [3]]
  with pytest.raises(ValueError, match="covers no token"):
    tasks.unit_token_spans(offsets, [("d", 9, 10)])


@pytest.fixture(scope="module")
def tiny_config():
  config = experiment.load_config(REPO / "configs" / "pretrain_tiny.py")
  config.model.text_config.num_hidden_layers = 1
  config.model.vision_config.depth = 1
  config.model.vision_config.fullatt_block_indexes = (0,)
  # cosine_decay off: the resume test extends a 2-step run to 4 steps, and a cosine schedule is defined by its
  # total length (the schedule itself is checked against torch in tests/test_rl_step.py).
  config.pretrain.update(
    steps=4,
    batch_size=8,
    eval_every=2,
    eval_maps_per_level=1,
    eval_batch_size=8,
    gallery_examples=4,
    cosine_decay=False,
  )
  config.checkpoint.every = 2
  return config


def test_held_out_scoring_against_perfect_and_damaged_predictions(tiny_config):
  """A predictor that returns the targets scores 1 everywhere; one wrong token in a map cell costs exactly that
  cell and the map's exactness."""
  exp = experiment.build(tiny_config)
  held_out = pretrain_run.held_out_rows(exp, tiny_config)
  assert sorted({h.spec.level for h in held_out}) == [3, 4, 5, 6] and len(held_out) == 4 * 2
  first_map = next(i for i, h in enumerate(held_out) if h.example.task == "map")
  assert first_map < tiny_config.pretrain.eval_batch_size and held_out[first_map].spec.level == 3
  calls = {"n": 0, "damage": False}

  def oracle(params, inputs):
    del params
    ids = np.asarray(inputs.input_ids)[0]
    pred = np.zeros_like(ids)
    pred[:, :-1] = ids[:, 1:]
    calls["n"] += 1
    if calls["damage"] and calls["n"] == 1:  # the first held-out map (an L3 one): its first cell predicted wrong
      row = first_map
      first = np.nonzero(ids[row] == held_out[row].answer_ids[0])[0]
      first = [
        p for p in first if np.array_equal(ids[row, p : p + len(held_out[row].answer_ids)], held_out[row].answer_ids)
      ][0]
      pred[row, first - 1] = (pred[row, first - 1] + 1) % 50
    return pred[None]

  perfect = pretrain_run.evaluate(exp, tiny_config, oracle, None, held_out)
  assert perfect and all(v == 1.0 for v in perfect.values()), perfect
  calls.update(n=0, damage=True)
  hurt = pretrain_run.evaluate(exp, tiny_config, oracle, None, held_out)
  n_cells = sum(h.spec.level**2 for h in held_out if h.example.task == "map")
  assert hurt["heldout/map/cell"] == pytest.approx(1 - 1 / n_cells)
  assert hurt["heldout/map/exact"] == pytest.approx(3 / 4) and hurt["heldout/map/exact_L3"] == 0.0
  assert all(v == 1.0 for k, v in hurt.items() if not k.startswith("heldout/map/"))


def test_resumed_run_repeats_the_uninterrupted_one(tiny_config, tmp_path):
  straight = pretrain_run.run(tiny_config, str(tmp_path / "straight"))
  half = tiny_config.copy_and_resolve_references()
  half.pretrain.steps = 2
  pretrain_run.run(half, str(tmp_path / "resumed"))
  resumed = pretrain_run.run(tiny_config, str(tmp_path / "resumed"))
  assert resumed == straight

  def lines(name):
    return [
      {k: v for k, v in json.loads(line).items() if k != "wall_time" and not k.startswith("time/")}
      for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    ]

  assert lines("resumed") == lines("straight")
  assert (tmp_path / "resumed" / "heldout_gallery.html").stat().st_size > 0
  card = (tmp_path / "resumed" / "hf" / "MODEL_CARD.md").read_text()
  assert "4 steps of 8 examples" in card and f"| map/cell | {straight['heldout/map/cell']:.4f} |" in card
  assert (tmp_path / "resumed" / "hf" / "config.json").is_file()
  # Killed after its last checkpoint but before the export: the same command evaluates and exports, nothing more.
  shutil.rmtree(tmp_path / "resumed" / "hf")
  assert pretrain_run.run(tiny_config, str(tmp_path / "resumed")) == straight
  assert (tmp_path / "resumed" / "hf" / "MODEL_CARD.md").read_text() == card
  assert lines("resumed") == lines("straight")


@pytest.fixture(scope="module")
def tiny_qwen3_config(tiny_config):
  config = experiment.load_config(REPO / "configs" / "pretrain_tiny_qwen3.py")
  config.model.text_config.num_hidden_layers = 2
  config.model.vision_config.depth = 1
  config.model.vision_config.deepstack_visual_indexes = (0,)
  config.pretrain.update(tiny_config.pretrain.to_dict())
  config.pretrain.style = "compact32"
  return config


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_export_loads_in_transformers_and_ours_with_equal_logits(tiny_config, tiny_qwen3_config, family, tmp_path):
  """A pretraining export of either family: the same weights back through from_pretrained, transformers' model of
  that family with equal logits, its image processor with equal pixels, the same tokens and chat template."""
  import jax
  import torch
  import transformers

  from vrrl_jax.data import conversation
  from vrrl_jax.models import from_pretrained
  from vrrl_jax.pretrain import export

  config = tiny_config if family == "qwen2_5_vl" else tiny_qwen3_config
  exp = experiment.build(config)
  params, _ = experiment.initial_params(exp, seed=3)
  files = export.export_hf(exp, params, tmp_path / "hf")
  assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= set(files)

  example = tasks.route_example(SPEC, ("right", "down"), config.pretrain.style)
  row = conversation.encode_conversation(exp.processor, example.messages())
  ids = row.input_ids[None]
  inputs = dict(
    input_ids=ids,
    attention_mask=np.ones_like(ids),
    pixel_values=row.pixel_values,
    image_grid_thw=row.image_grid_thw,
    mm_token_type_ids=(ids == exp.model_config.image_token_id).astype(np.int64),
  )
  ours_before = np.asarray(exp.model.apply({"params": params}, **inputs).logits)
  model, reloaded = from_pretrained(str(tmp_path / "hf"))
  for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the weights round-trip exactly
  ours_after = np.asarray(model.apply({"params": reloaded}, **inputs).logits)
  np.testing.assert_allclose(ours_after, ours_before, atol=1e-6, rtol=0)  # attention blocking may differ

  torch_model = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path / "hf").eval()
  assert (
    type(torch_model).__name__
    == {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}[family]
  )
  with torch.no_grad():
    theirs = torch_model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits.numpy()
  np.testing.assert_allclose(theirs, ours_before, atol=1e-5, rtol=0)
  hf_images = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")(
    images=[example.image], return_tensors="np"
  )
  np.testing.assert_array_equal(hf_images["pixel_values"], row.pixel_values)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  assert tokenizer(example.answer)["input_ids"] == exp.tokenizer(example.answer)["input_ids"]
  assert tokenizer.chat_template == exp.tokenizer.chat_template


def test_shipped_checkpoint_is_small_loads_everywhere_and_its_card_tells_the_truth():
  """The packaged tiny VLM: <= 25 MB; transformers and ours give equal logits and equal pixel values; its held-out
  accuracy, recomputed here with the config it records, is what MODEL_CARD.md says."""
  import jax
  import torch
  import transformers

  from vrrl_jax.data import conversation
  from vrrl_jax.models import from_pretrained
  from vrrl_jax.pretrain import TINY_VLM_DIR

  size = sum(f.stat().st_size for f in TINY_VLM_DIR.iterdir())
  assert size <= 25 * 2**20, size
  config = experiment.load_config(REPO / "configs" / "pretrain_tiny.py")
  recorded = json.loads((TINY_VLM_DIR / "pretrain_config.json").read_text())
  config.pretrain.update(recorded["pretrain"])
  config.seed = recorded["seed"]
  config.init_checkpoint = str(TINY_VLM_DIR)
  exp = experiment.build(config)
  model, params = from_pretrained(str(TINY_VLM_DIR))
  assert (model.config.text, model.config.vision) == (exp.model_config.text, exp.model_config.vision)

  example = tasks.route_example(SPEC, ("right", "down"), "compact")
  row = conversation.encode_conversation(exp.processor, example.messages())
  ids = row.input_ids[None]
  inputs = dict(
    input_ids=ids,
    attention_mask=np.ones_like(ids),
    pixel_values=row.pixel_values,
    image_grid_thw=row.image_grid_thw,
    mm_token_type_ids=(ids == exp.model_config.image_token_id).astype(np.int64),
  )
  ours = np.asarray(model.apply({"params": params}, **inputs).logits)
  torch_model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(TINY_VLM_DIR).eval()
  with torch.no_grad():
    theirs = torch_model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits.numpy()
  # Trained logits reach |50|: 1e-5 relative to the largest (measured 3e-7), as the parity tests measure.
  assert np.abs(theirs - ours).max() / np.abs(theirs).max() <= 1e-5
  hf_images = transformers.AutoImageProcessor.from_pretrained(TINY_VLM_DIR)(images=[example.image], return_tensors="np")
  np.testing.assert_array_equal(hf_images["pixel_values"], row.pixel_values)
  np.testing.assert_array_equal(hf_images["image_grid_thw"], row.image_grid_thw)

  held_out = pretrain_run.held_out_rows(exp, config)
  on_mesh, _ = experiment.initial_params(exp, int(config.seed))  # init_checkpoint, loaded onto the mesh
  predict = pretrain_run.make_predict_fn(exp.model, exp.mesh, exp.rules, jax.tree.map(lambda x: x.sharding, on_mesh))
  metrics = pretrain_run.evaluate(exp, config, predict, on_mesh, held_out)
  card = (TINY_VLM_DIR / "MODEL_CARD.md").read_text()
  for name, value in metrics.items():
    assert f"| {name.removeprefix('heldout/')} | {value:.4f} |" in card, name


def test_the_shipped_config_names_its_own_tokenizers_bos_and_eos():
  """Left out, transformers fills in Qwen's 151643 / 151645, outside the 724-token vocabulary (and warns)."""
  from transformers import AutoTokenizer

  from vrrl_jax.pretrain import TINY_VLM_DIR

  config = json.loads((TINY_VLM_DIR / "config.json").read_text())
  tokenizer = AutoTokenizer.from_pretrained(str(TINY_VLM_DIR))
  vocab = config["text_config"]["vocab_size"]
  for name, token in (("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>")):
    assert config[name] == config["text_config"][name] == tokenizer.convert_tokens_to_ids(token) < vocab
