"""Can the tiny config's model learn to read an image? A supervised probe through the real SFT step.

Each example is one image and one question, answered in text:

- ``colour``: a 4 x 4 grey grid with one cell in one of four colours; "Which colour?" -> "red". Needs no position:
  an average over the image tokens already says which colour is present.
- ``where``: the same grid with a red square in one cell; "Where?" -> "row 3 column 2". Needs the model to find one
  image token and read where it is, which is what locating the elf and the gift on a FrozenLake map needs.

Images are 112 x 112 px, so each cell is exactly one merged 28 px image token. The model and optimizer are the tiny
config's (``configs/frozenlake_tiny_cpu.py``); ``--frozen visual`` freezes the vision tower at its random init.
``--tint`` paints each cell's background by its row (red channel) and column (blue channel), so a token's own
content says where it is (rotary positions reach attention scores but not the values an attention head copies).
The loss is the SFT token-mean NLL over the answer tokens (with the chat template's end tokens); ``chance_loss`` is
the loss of a model that gets every constant token right and guesses the 4-way choices uniformly. Prints ONE JSON
line, with the vision tower's output norm and per-token spread at the end (a collapsed tower: large norm, tiny
spread).

  python bench/perception_probe.py --task where --steps 600                      # trained tower: stays at chance
  python bench/perception_probe.py --task where --steps 600 --frozen visual      # frozen tower: learns
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import time

import jax
import numpy as np
from PIL import Image

from vrrl_jax import experiment, run_config, trainer
from vrrl_jax.data import conversation
from vrrl_jax.models.qwen2_5_vl import Qwen25VL
from vrrl_jax.rl import train_state as ts_lib
from vrrl_jax.sft import step as sft_step_lib

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 30)}
CELL, GRID = 28, 4


def example(task: str, rng: np.random.Generator, tint: bool = False):
  pixels = np.full((GRID * CELL, GRID * CELL, 3), 200, np.uint8)
  if tint:  # each cell's grey background says where it is: red channel by row, blue by column
    for i in range(GRID):
      pixels[i * CELL : (i + 1) * CELL, :, 0] = 140 + 30 * i
      pixels[:, i * CELL : (i + 1) * CELL, 2] = 140 + 30 * i
  r, c = rng.integers(GRID, size=2)
  if task == "colour":
    answer = list(COLOURS)[rng.integers(len(COLOURS))]
    pixels[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = COLOURS[answer]
    question = "Which colour?"
  else:
    pixels[r * CELL + 6 : (r + 1) * CELL - 6, c * CELL + 6 : (c + 1) * CELL - 6] = COLOURS["red"]
    answer, question = f"row {r + 1} column {c + 1}", "Where is the red square?"
  return [
    {
      "role": "user",
      "content": [{"type": "image", "image": Image.fromarray(pixels)}, {"type": "text", "text": question}],
    },
    {"role": "assistant", "content": answer},
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", choices=("colour", "where"), default="where")
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--frozen", nargs="*", default=[], help="parameter subtrees to freeze, e.g. visual")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tint", action="store_true", help="cell backgrounds tinted by row and column")
  args = parser.parse_args()

  config = experiment.load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "frozenlake_tiny_cpu.py")
  exp = experiment.build(config)
  params, specs = experiment.initial_params(exp, args.seed)
  opt = run_config.optimizer_config(config, args.lr)
  opt = ts_lib.OptimizerConfig(**{**opt.__dict__, "frozen": tuple(args.frozen)})
  state = ts_lib.create_train_state(
    params, specs, opt, jax.random.PRNGKey(args.seed), exp.mesh, exp.rules, keep_reference=False
  )
  del params
  update = sft_step_lib.make_sft_step(exp.model, exp.mesh, exp.rules, opt, jax.tree.map(lambda x: x.sharding, state))
  rng = np.random.default_rng(args.seed)

  def batch_of(n):
    rows = [conversation.encode_conversation(exp.processor, example(args.task, rng, args.tint)) for _ in range(n)]
    return trainer.sft_batch(exp, rows, n, 1, min_length=64, min_patches=1024)

  # Chance: the answer tokens that vary are one 4-way choice (colour) or two (row, column).
  probe = batch_of(args.batch)
  n_answer_tokens = float(np.asarray(probe.loss_mask).sum()) / args.batch
  chance = (1 if args.task == "colour" else 2) * np.log(4) / n_answer_tokens

  losses, t0 = [], time.perf_counter()
  for _ in range(args.steps):
    state, metrics = update(state, batch_of(args.batch))
    losses.append(float(metrics["loss"]))
  seconds = time.perf_counter() - t0
  inputs = jax.tree.map(lambda x: x[0], probe.inputs)
  feats = np.asarray(exp.model.apply({"params": state.params}, inputs.vision, method=Qwen25VL.encode_images))
  feats = feats[: args.batch * GRID * GRID]  # the real image tokens (padding patches come after)
  tail = losses[-max(1, args.steps // 10) :]
  print(
    json.dumps(
      {
        "bench": "perception_probe",
        "date": datetime.date.today().isoformat(),
        "machine": platform.node(),
        "task": args.task,
        "tint": args.tint,
        "frozen": args.frozen,
        "steps": args.steps,
        "lr": args.lr,
        "batch": args.batch,
        "loss_first": round(losses[0], 4),
        "loss_last_tenth_mean": round(float(np.mean(tail)), 4),
        "chance_loss": round(float(chance), 4),
        "vision_token_norm": round(float(np.linalg.norm(feats, axis=1).mean()), 4),
        "vision_token_spread": round(float(feats.std(0).mean() / (np.abs(feats).mean() + 1e-12)), 4),
        "seconds": round(seconds, 1),
      }
    )
  )


if __name__ == "__main__":
  main()
