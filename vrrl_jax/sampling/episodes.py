"""Plays a batch of FrozenLake episodes with the batched sampler, turn by turn.

Each question is prefilled once and fanned out to its n samples (``Sampler.start``); after every turn the host
parses each active sample's text, steps its ``protocol.Episode`` (rendering the feedback image) and appends the
feedback turn to that sample's cache (``Sampler.extend``); finished samples drop out of the batch. A question
may start from a replayed prefix (a prefix-buffer entry: its conversation up to the last feedback turn), with an
optional forced opening of the new assistant turn (``<THINK>`` for wrong prefixes).

Every sample comes back with its whole token sequence as the sampler saw it (generated ids are kept as drawn,
never re-tokenised), per-token roles (assistant turn index, -1 for environment tokens), the sampling log-prob of
each generated token, the images in order, and the turn texts for the reward.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from PIL import Image

from vrrl_jax.data import conversation
from vrrl_jax.envs.frozenlake import maps, protocol
from vrrl_jax.sampling.sampler import LENGTH, SamplingConfig, Segment

TRUNCATED = "truncated"  # a turn ran out of tokens without <|im_end|> (the episode still scores its text)


@dataclasses.dataclass(frozen=True)
class Question:
    """One prompt of a rollout batch. ``prefix``: a ``PrefixEntry`` to replay before generating."""

    map_id: str
    spec: maps.MapSpec
    map_image: Any
    style: str = "default"
    prefix: Any = None
    forced_opening: str | None = None

    @classmethod
    def from_prefix(cls, entry, *, map_id: str | None = None, forced_opening: str | None = None,
                    style: str = "default") -> "Question":
        return cls(map_id=map_id or f"buffer_{entry.entry_id}", spec=entry.spec, map_image=entry.map_image,
                   style=style, prefix=entry, forced_opening=forced_opening)


@dataclasses.dataclass
class EpisodeResult:
    turns: list[str]  # every assistant turn's text, replayed prefix turns first
    feedback_images: list[np.ndarray]  # one per turn that got feedback, in order
    finish_reason: str  # protocol.FINAL / FORMAT_ERROR / MAX_TURNS
    truncated_turns: int  # turns that hit the token budget
    num_prefix_turns: int
    encoded: conversation.EncodedConversation  # the whole sequence, with roles and images
    sample_logp: np.ndarray  # [S] sampling log-prob of each generated token, 0 elsewhere


def _messages_for(question: Question, map_image) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image", "image": map_image},
                                             {"type": "text", "text": protocol.TASK_PROMPT}]}]
    if question.prefix is not None:
        entry = question.prefix
        for text, feedback, image in zip(entry.assistant_texts, entry.feedback_texts, entry.feedback_images):
            messages.append({"role": "assistant", "content": text})
            messages.append({"role": "user", "content": [{"type": "image", "image": image},
                                                         {"type": "text", "text": feedback}]})
    return messages


class _Track:
    """Host bookkeeping of one sample: token pieces, roles, log-probs, images, the environment episode."""

    def __init__(self, question: Question, prompt: conversation.EncodedConversation, episode: protocol.Episode,
                 forced_ids: np.ndarray, num_prefix_turns: int):
        self.question = question
        self.episode = episode
        self.ids = [prompt.input_ids]
        self.turn_index = [prompt.turn_index]
        self.logp = [np.zeros(len(prompt.input_ids), np.float32)]
        self.pixels = [prompt.pixel_values]
        self.grids = [prompt.image_grid_thw]
        self.forced_ids = forced_ids
        self.num_prefix_turns = num_prefix_turns
        self.truncated = 0

    def add(self, ids, turn: int, logp=None):
        ids = np.asarray(ids, np.int64)
        self.ids.append(ids)
        self.turn_index.append(np.full(len(ids), turn, np.int32))
        self.logp.append(np.zeros(len(ids), np.float32) if logp is None else np.asarray(logp, np.float32))

    def result(self) -> EpisodeResult:
        turn_index = np.concatenate(self.turn_index)
        encoded = conversation.EncodedConversation(
            input_ids=np.concatenate(self.ids), assistant_mask=(turn_index >= 0).astype(np.int32),
            turn_index=turn_index, pixel_values=np.concatenate(self.pixels, axis=0).astype(np.float32),
            image_grid_thw=np.concatenate(self.grids, axis=0).astype(np.int64))
        feedback = [np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, np.uint8)
                    for img in self.episode.images[1:]]
        return EpisodeResult(turns=list(self.episode.turns), feedback_images=feedback,
                             finish_reason=self.episode.reason, truncated_turns=self.truncated,
                             num_prefix_turns=self.num_prefix_turns, encoded=encoded,
                             sample_logp=np.concatenate(self.logp))


def play(exp, sampler, params, questions: Sequence[Question], n: int, sampling: SamplingConfig, *, max_turns: int,
         rng: jax.Array) -> list[EpisodeResult]:
    """Episodes of ``n`` samples per question (sample s is copy s % n of question s // n), ``max_turns`` assistant
    turns in total (replayed prefix turns count against it)."""
    processor, tok = exp.processor, exp.tokenizer
    im_end = exp.token_ids.im_end_id
    prompts, tracks = [], []
    for question in questions:
        episode = protocol.Episode(question.spec, max_turns=max_turns, style=question.style)
        map_image = episode.images[0]
        prompt = conversation.encode_conversation(processor, _messages_for(question, map_image))
        num_prefix = 0
        if question.prefix is not None:
            for text in question.prefix.assistant_texts:  # replay: the episode re-renders the same feedback
                step = episode.step(text)
                if step.done:
                    raise ValueError(f"prefix of {question.map_id} ends the episode ({step.reason}); a buffer "
                                     "prefix must end with a feedback turn")
                num_prefix += 1
        forced = processor.encode_text(question.forced_opening) if question.forced_opening else np.zeros(0, np.int64)
        segment = Segment(np.concatenate([prompt.input_ids, forced]), prompt.pixel_values, prompt.image_grid_thw)
        prompts.append(segment)
        for _ in range(n):
            track = _Track(question, prompt, episode if n == 1 else _copy_episode(episode), forced, num_prefix)
            tracks.append(track)
    # Each sample owns its episode copy (taken before any generated turn).
    budget_left = [t.episode.max_turns - len(t.episode.turns) for t in tracks]
    if min(budget_left) < 1:
        raise ValueError("a question's prefix already uses the whole turn budget")

    rng, key = jax.random.split(rng)
    state, out = sampler.start(params, prompts, sampling, key, n_per_prompt=n)
    turn_of = [len(t.episode.turns) for t in tracks]
    while True:
        active, segments = [], []
        for i, sid in enumerate(out.sample_ids):
            track = tracks[int(sid)]
            tokens, logp = np.asarray(out.tokens[i]), np.asarray(out.log_probs[i])
            turn = turn_of[int(sid)]
            forced = track.forced_ids if turn == track.num_prefix_turns else np.zeros(0, np.int64)
            if len(forced):
                track.add(forced, turn)  # forced opening: part of the turn, not sampled
            track.add(tokens, turn, logp)
            stopped = len(tokens) > 0 and int(tokens[-1]) == im_end
            body = tokens[:-1] if stopped else tokens
            text = tok.decode(np.concatenate([forced, body]).tolist(), skip_special_tokens=False)
            if out.finish_reasons[i] == LENGTH:
                track.truncated += 1
            step = track.episode.step(text)
            turn_of[int(sid)] += 1
            if step.done:
                continue
            user = [{"role": "user", "content": [{"type": "image", "image": step.feedback_image},
                                                 {"type": "text", "text": step.feedback_text}]}]
            enc = processor.encode_segment(user, prefix_ends_with="im_end" if stopped else "text",
                                           add_generation_prompt=True)
            track.add(enc["input_ids"], -1)
            track.pixels.append(enc["pixel_values"])
            track.grids.append(enc["image_grid_thw"])
            segments.append(Segment.from_encoding(enc))
            active.append(int(sid))
        if not active:
            break
        rng, key = jax.random.split(rng)
        state, out = sampler.extend(params, state, active, segments, sampling, key)
    return [t.result() for t in tracks]


def _copy_episode(episode: protocol.Episode) -> protocol.Episode:
    clone = protocol.Episode(episode.spec, max_turns=episode.max_turns, style=episode.style)
    clone.turns, clone.parsed, clone.images = list(episode.turns), list(episode.parsed), list(episode.images)
    clone.done, clone.reason = episode.done, episode.reason
    return clone
