"""The tiny pretrained VLM shipped in the package, on FrozenLake, on a CPU: SFT warm start, VRRL RL, eval. Minutes
on 2 cores.

  python -m vrrl_jax.train --config configs/frozenlake_tiny_cpu.py --workdir runs/demo

The model starts from ``vrrl_jax/assets/tiny_vlm`` (made by ``configs/pretrain_tiny.py``: it reads the map and the
drawn routes; see its MODEL_CARD.md), through ``init_checkpoint`` as a real Qwen checkpoint would. Renders are
"compact" (28 px per cell: one image token per cell, as in pretraining) and the vision tower stays frozen (it was
pretrained; trained on with the decoder's lr its tokens collapse, BENCHMARKS.md). ``--config.init_checkpoint=``
(empty) trains the same architecture (``model``) from scratch instead.
"""

import ml_collections

from vrrl_jax.pretrain import TINY_VLM_DIR


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "frozenlake"  # vrrl_jax.tasks.<task>: data, episodes, reward, SFT transcripts, eval metrics
  c.seed = 0

  # Model: a Hugging Face config.json dict (token ids are filled in from the tokenizer when left None) and/or
  # init_checkpoint (an HF directory or one written by `python -m vrrl_jax.convert hf-to-orbax`); when both are set
  # they must describe the same model.
  c.init_checkpoint = str(TINY_VLM_DIR)
  # Unset: the tokenizer in init_checkpoint, or (from scratch) the packaged FrozenLake tokenizer.
  c.tokenizer_dir = ml_collections.config_dict.placeholder(str)
  c.model = dict(
    model_type="qwen2_5_vl",
    text_config=dict(
      vocab_size=ml_collections.config_dict.placeholder(int),
      hidden_size=128,
      intermediate_size=384,
      num_hidden_layers=4,
      num_attention_heads=4,
      num_key_value_heads=2,
      rms_norm_eps=1e-6,
      max_position_embeddings=4096,
      hidden_act="silu",
      rope_parameters=dict(rope_type="default", rope_theta=100.0, mrope_section=(4, 6, 6)),
    ),
    vision_config=dict(
      depth=2,
      hidden_size=64,
      intermediate_size=128,
      num_heads=2,
      hidden_act="silu",
      in_channels=3,
      patch_size=14,
      temporal_patch_size=2,
      spatial_merge_size=2,
      window_size=56,
      fullatt_block_indexes=(1,),
      out_hidden_size=128,
      tokens_per_second=2,
    ),
    tie_word_embeddings=True,
  )
  c.max_sequence_len = 1024  # whole conversation, prompt included (tokens)
  c.model_options = dict(
    dtype="float32", param_dtype="float32", scan_layers=False, remat_policy=ml_collections.config_dict.placeholder(str)
  )
  # Images: compact renders are 28 px per cell, one merged token each; up to 9 x 9 (a 7 x 7 map, off-grid margins).
  c.image = dict(min_pixels=56 * 56, max_pixels=(9 * 28) ** 2)

  c.mesh = dict(data=-1, fsdp=1, tensor=1)

  # Render styles (vrrl_jax/tasks/frozenlake/render.py): "default" 112 px/cell, "ood" (level-7 eval), "compact" 28 px/cell.
  # data_dir unset: the release's map files shipped in the package (vrrl_jax/assets/frozenlake).
  c.data = dict(
    data_dir=ml_collections.config_dict.placeholder(str),
    train_source="release",
    max_per_split=ml_collections.config_dict.placeholder(int),
    generated_eval_levels=(7,),
    generated_eval_per_level=250,
    train_style="compact",
    eval_style="compact",
    ood_style="ood",
  )

  # frozen: parameter subtrees that never update ("visual": the vision tower; see small_cpu config).
  # lr_scale: {path prefix: factor} on the learning rate of a subtree (a torch param group), e.g. dict(visual=0.1).
  c.optimizer = dict(
    b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip_norm=1.0, warmup_steps=20, frozen=("visual",), lr_scale={}
  )

  # Multi-turn SFT warm start on synthetic reflection transcripts.
  # One wrong route at most keeps every transcript within the 256-token bucket (two double the step time).
  # min_length / min_patches: shape floors, so every SFT batch (<= 3 images of <= 100 patches per row) shares one
  # compiled step instead of one per patch bucket.
  # wrong_route_loss: whether the deliberately wrong routes of a transcript are trained on (True) or are context only.
  # Here False: after 300 steps from the pretrained model, training on them left 85-89% of greedy episodes
  # malformed (garbled revisions), against none without them (BENCHMARKS.md, "Tiny run").
  c.sft = dict(
    steps=300,
    batch_size=16,
    micro_batches=1,
    learning_rate=3e-3,
    cosine_decay=False,  # True: the lr decays along a cosine to 0 at the last SFT step (else constant after warmup)
    min_length=256,
    min_patches=6144,
    wrong_route_loss=False,
    transcripts=dict(p_correct_first=0.4, p_another_wrong=0.2, max_wrong_routes=1),
  )

  # VRRL RL (VRRL_SPEC sections 3-4) at toy scale.
  c.rl = dict(
    steps=20,
    prompts_per_step=8,
    samples_per_prompt=4,
    micro_batches=1,
    learning_rate=1e-4,
    max_turns=4,
    max_new_tokens=48,
    temperature=1.0,
    top_p=1.0,
    # Update-batch shape floors: most steps share one compiled update and log-prob program (a cold run compiled
    # ten, 10-18 s each, when every rows x length x patches bucket got its own).
    update_min_rows=8,
    update_min_length=384,
    update_min_patches=4096,
    mode_weights=dict(normal=0.0, random_start=0.6, prefix_buffer=0.4),
    random_start_turn_min=0,
    mask_all_until_final=False,
    mask_buffer_prefix=True,
    truncated_loss=True,  # False: a sample that ran out of tokens carries no loss at all (ViGoRL)
    reference_memory="device",  # the KL reference: "device" memory, or "host" (pinned host memory, copied per pass)
    buffer=dict(
      capacity=500,
      max_per_question=3,
      max_staleness_steps=50,
      min_size=8,
      wrong_ratio=0.9,
      max_route_turns=2,
      resample="run",
    ),
    filter=dict(enabled=True, low=0.01, high=0.99, max_tries=3),
    loss=dict(
      clip_low=0.2,
      clip_high=0.3,
      dual_clip_c=3.0,
      kl_coef=0.01,
      kl_clamp=10.0,
      log_ratio_clamp=20.0,
      loss_agg_mode="token-mean",
    ),
    reward=dict(
      lambda_deg=0.5,
      reflect_weight=0.9,
      reflect_lower_clip=0.0,
      em_reflect_bonus_weight=0.1,
      em_reflect_step_discount=1.0,
      step_cost=0.01,
      correct_value=1.0,
      min_turns=1,
      pr_overshoot_zero=True,
    ),
  )

  # Sampler shape buckets (sampling.buckets.Buckets): fewer, larger buckets compile fewer programs; at this size
  # the padding costs less than the compiles.
  c.sampler = dict(min_batch=8, min_cache=256, min_patches_per_row=100)

  c.eval = dict(
    levels=(3, 4, 5, 6, 7),
    maps_per_level=16,
    max_turns=10,
    max_new_tokens=48,
    batch_size=32,
    before_rl=True,
    gallery_episodes=24,
  )

  c.checkpoint = dict(every=5, keep=2)
  c.log = dict(
    console_keys=("sft/loss", "reward/overall", "reward/em", "reward/format", "loss/pg", "loss/kl", "time/step")
  )
  return c
