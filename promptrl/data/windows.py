"""From Minari datasets to the training windows of a Prompt-DT: per-task episodes, state
normalization, and seeded sampling of (history, prompt) segment pairs.

A history window is K consecutive steps starting anywhere in an episode, left-padded (mask 0) when
it runs past the episode's end; its prompt is a K*-step window (the last K* steps, or with ``prompt_window="random"`` one starting
anywhere) of a randomly drawn episode of the same task's prompt data (expert demonstrations), as in
Prompt-DT's prompt augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from promptrl.data.episodes import Episode


class Segment(NamedTuple):
    """A batch of trajectory windows: (B, L, ...) tensors; ``mask`` is 1 on real steps, 0 on padding."""

    states: torch.Tensor  # (B, L, obs_dim), normalized
    actions: torch.Tensor  # (B, L, act_dim)
    rtg: torch.Tensor  # (B, L, 1), scaled
    timesteps: torch.Tensor  # (B, L) long
    mask: torch.Tensor  # (B, L)


@dataclass
class SegmentSpec:
    """How windows are cut and scaled."""

    context: int
    prompt_length: int
    rtg_scale: float
    state_mean: np.ndarray
    state_std: np.ndarray
    max_ep_len: int
    prompt_window: str = "last"
    """``"random"``: prompts start anywhere in an episode; ``"last"``: its last ``prompt_length`` steps."""


def window(ep: Episode, start: int, length: int, spec: SegmentSpec) -> tuple[np.ndarray, ...]:
    """Steps [start, start + length) of an episode, left-padded to ``length``: (states, actions, rtg, timesteps, mask)."""
    end = min(start + length, len(ep))
    assert end > start, "a window needs at least one step"
    pad = length - (end - start)
    states = np.zeros((length, ep.observations.shape[1]), np.float32)
    actions = np.zeros((length, ep.actions.shape[1]), np.float32)
    rtg = np.zeros((length, 1), np.float32)
    timesteps = np.zeros(length, np.int64)
    mask = np.zeros(length, np.float32)
    states[pad:] = (ep.observations[start:end] - spec.state_mean) / spec.state_std
    actions[pad:] = ep.actions[start:end]
    rtg[pad:, 0] = ep.rtg[start:end] / spec.rtg_scale
    timesteps[pad:] = np.minimum(np.arange(start, end), spec.max_ep_len - 1)
    mask[pad:] = 1.0
    return states, actions, rtg, timesteps, mask


def stack_windows(windows: list[tuple[np.ndarray, ...]], device: torch.device | str = "cpu") -> Segment:
    """Batch windows into a :class:`Segment` on ``device``."""
    cols = [np.stack(c) for c in zip(*windows)]  # each (B, L, ...)
    return Segment(*(torch.as_tensor(c, device=device) for c in cols))


def random_window(ep: Episode, length: int, spec: SegmentSpec, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    return window(ep, int(rng.integers(0, len(ep))), length, spec)


def prompt_start(length: int, spec: SegmentSpec, rng: np.random.Generator) -> int:
    """Where a prompt starts in an episode of ``length`` steps, as ``spec.prompt_window`` says
    (``rng`` is drawn from only for random windows)."""
    if spec.prompt_window == "last":
        return max(0, length - spec.prompt_length)
    return int(rng.integers(0, length))


def prompt_window(ep: Episode, spec: SegmentSpec, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A prompt cut from ``ep`` as ``spec.prompt_window`` says."""
    return window(ep, prompt_start(len(ep), spec, rng), spec.prompt_length, spec)


class EpisodeBank:
    """Episodes of several tasks stored end to end, normalized once, so that many windows are cut
    with one gather instead of one :func:`window` call each (the same arrays, bit for bit)."""

    def __init__(self, episodes: dict[int, list[Episode]], spec: SegmentSpec):
        self.spec = spec
        flat = [ep for task in sorted(episodes) for ep in episodes[task]]
        self.lengths = np.array([len(ep) for ep in flat], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        first = np.cumsum([0] + [len(episodes[t]) for t in sorted(episodes)])
        self.first = {
            task: int(first[i]) for i, task in enumerate(sorted(episodes))
        }  # task -> its first episode's index
        self.states = (np.concatenate([ep.observations for ep in flat]) - spec.state_mean) / spec.state_std
        self.actions = np.concatenate([ep.actions for ep in flat])
        self.rtg = np.concatenate([ep.rtg for ep in flat]) / spec.rtg_scale

    def windows(
        self, episodes: np.ndarray, starts: np.ndarray, length: int, device: torch.device | str = "cpu"
    ) -> Segment:
        """Windows [start, start + length) of the given episodes (bank indices), left-padded as :func:`window`."""
        n = np.minimum(length, self.lengths[episodes] - starts)  # real steps per window
        pad = (length - n)[:, None]
        j = np.arange(length)[None, :]
        valid = j >= pad
        t = starts[:, None] + j - pad  # step within the episode
        src = np.where(valid, self.offsets[episodes][:, None] + t, 0)
        arrays = (
            np.where(valid[..., None], self.states[src], np.float32(0)).astype(np.float32),
            np.where(valid[..., None], self.actions[src], np.float32(0)).astype(np.float32),
            np.where(valid, self.rtg[src], np.float32(0)).astype(np.float32)[..., None],
            np.where(valid, np.minimum(t, self.spec.max_ep_len - 1), 0).astype(np.int64),
            valid.astype(np.float32),
        )
        return Segment(*(torch.as_tensor(a, device=device) for a in arrays))


class SegmentSampler:
    """Seeded sampler of (history, prompt) batches over several tasks.

    :param histories: per task, the episodes history windows are cut from.
    :param prompts: per task, the episodes prompts are cut from (expert demonstrations); ``None``
        for a model without prompts (MT-ORL).
    """

    def __init__(
        self,
        histories: dict[int, list[Episode]],
        prompts: dict[int, list[Episode]] | None,
        spec: SegmentSpec,
        seed: int = 0,
    ):
        if prompts is not None and set(prompts) != set(histories):
            raise ValueError(
                f"prompt episodes are needed for exactly the history tasks {sorted(histories)}, got {sorted(prompts)}"
            )
        self.histories, self.prompts, self.spec = histories, prompts, spec
        self.tasks = sorted(histories)
        self.rng = np.random.default_rng(seed)
        self._history_bank = EpisodeBank(histories, spec)
        self._prompt_bank = (
            None if prompts is None else self._history_bank if prompts is histories else EpisodeBank(prompts, spec)
        )  # prompts default to the history episodes

    def sample(self, per_task: int, device: torch.device | str = "cpu") -> tuple[Segment, Segment | None]:
        """``per_task`` windows of every task: a history batch and its prompt batch (B = tasks * per_task)."""
        hist, prompt = [], []  # (bank index, start) per window, drawn in a fixed order
        for task in self.tasks:
            eps = self.histories[task]
            for _ in range(per_task):
                i = int(self.rng.integers(len(eps)))
                hist.append((self._history_bank.first[task] + i, int(self.rng.integers(0, len(eps[i])))))
                if self.prompts is not None:
                    k = int(self.rng.integers(len(self.prompts[task])))
                    start = prompt_start(len(self.prompts[task][k]), self.spec, self.rng)
                    prompt.append((self._prompt_bank.first[task] + k, start))
        h = np.array(hist, np.int64)
        history = self._history_bank.windows(h[:, 0], h[:, 1], self.spec.context, device)
        if self._prompt_bank is None:
            return history, None
        p = np.array(prompt, np.int64)
        return history, self._prompt_bank.windows(p[:, 0], p[:, 1], self.spec.prompt_length, device)


def raw_window(ep: Episode, start: int, length: int) -> tuple[np.ndarray, ...]:
    """The whole ``length``-step window of ``ep`` ending at ``start + length`` (moved back to fit):
    raw (states, actions, rewards, rtg, timesteps as float32)."""
    end = min(start + length, len(ep))
    start = end - length  # whole windows only: prompts have no padding
    t = np.arange(start, end)
    return ep.observations[t], ep.actions[t], ep.rewards[t], ep.rtg[t], t.astype(np.float32)


def whole_windows(
    episodes: list[Episode],
    length: int,
    limit: int | None = None,
    rng: np.random.Generator | None = None,
    last: bool = False,
) -> list[tuple[np.ndarray, ...]]:
    """Every whole ``length``-step window of the episodes, in order (see :func:`raw_window`), or with
    ``last`` only each episode's last one (a PLM with ``prompt_window="last"``); with ``limit``, a
    random subset of that many (drawn with ``rng``, kept in order), chosen before cutting."""
    starts = [
        (e, t)
        for e in episodes
        for t in (range(len(e) - length, len(e) - length + 1) if last else range(len(e) - length + 1))
    ]
    if limit is not None and len(starts) > limit:
        starts = [starts[i] for i in np.sort(rng.choice(len(starts), limit, replace=False))]
    return [raw_window(e, t, length) for e, t in starts]
