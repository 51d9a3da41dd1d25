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
    with one gather instead of one :func:`window` call each (the same arrays, bit for bit).

    The arrays are float32 tensors; :meth:`to` (or ``device``) puts a copy on a torch device, where
    :meth:`windows` gathers, so that of a batch only its (episode, start) indices cross from the host.
    """

    def __init__(self, episodes: dict[int, list[Episode]], spec: SegmentSpec, device: torch.device | str | None = None):
        self.spec = spec
        flat = [ep for task in sorted(episodes) for ep in episodes[task]]
        self.lengths = np.array([len(ep) for ep in flat], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        first = np.cumsum([0] + [len(episodes[t]) for t in sorted(episodes)])
        self.first = {
            task: int(first[i]) for i, task in enumerate(sorted(episodes))
        }  # task -> its first episode's index
        states = (np.concatenate([ep.observations for ep in flat]) - spec.state_mean) / spec.state_std
        actions = np.concatenate([ep.actions for ep in flat])
        rtg = np.concatenate([ep.rtg for ep in flat]) / spec.rtg_scale

        def padded(a: np.ndarray) -> torch.Tensor:  # float32 (N + 1, features); padding gathers the zero row N
            a = a.astype(np.float32).reshape(len(a), -1)
            return torch.from_numpy(np.concatenate([a, np.zeros((1, a.shape[1]), np.float32)]))

        cpu = (
            padded(states),
            padded(actions),
            padded(rtg),
            torch.from_numpy(self.lengths),
            torch.from_numpy(self.offsets),
        )
        self._tensors: dict[torch.device, tuple[torch.Tensor, ...]] = {torch.device("cpu"): cpu}
        if device is not None:
            self.to(device)

    def to(self, device: torch.device | str) -> EpisodeBank:
        """Put a copy of the bank on ``device`` (kept beside the others); returns self."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._tensors:
            self._tensors[device] = tuple(t.to(device) for t in self._tensors[torch.device("cpu")])
        return self

    def windows(
        self,
        episodes: np.ndarray | torch.Tensor,
        starts: np.ndarray | torch.Tensor,
        length: int,
        device: torch.device | str = "cpu",
    ) -> Segment:
        """Windows [start, start + length) of the given episodes (bank indices), left-padded as :func:`window`,
        gathered in torch on ``device`` from the bank's copy there (made by :meth:`to` on first use)."""
        episodes, starts = torch.as_tensor(episodes, device=device), torch.as_tensor(starts, device=device)
        device = episodes.device
        self.to(device)
        states, actions, rtg, lengths, offsets = self._tensors[device]
        n = torch.clamp(lengths[episodes] - starts, max=length)  # real steps per window, (B,)
        pad = (length - n)[:, None]  # (B, 1)
        j = torch.arange(length, device=device)[None, :]  # (1, L)
        valid = j >= pad  # (B, L)
        t = starts[:, None] + j - pad  # step within the episode, (B, L)
        src = torch.where(valid, offsets[episodes][:, None] + t, len(states) - 1)  # padding reads the zero row
        timesteps = torch.where(valid, t.clamp(max=self.spec.max_ep_len - 1), 0)
        return Segment(states[src], actions[src], rtg[src], timesteps, valid.float())  # (B, L, ...) each


_UINT32 = np.uint64(0xFFFFFFFF)


def _bounded_draws(raw: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``Generator.integers(bound)`` returns for each (bound >= 2) when its 32-bit draw is ``raw``
    (numpy's Lemire method: value = (raw * bound) >> 32), and where it would reject that draw and draw again."""
    bound = bound.astype(np.uint64)
    m = raw * bound  # < 2**64: both factors are below 2**32
    threshold = (np.uint64(2**32) - bound) % bound
    return (m >> np.uint64(32)).astype(np.int64), (m & _UINT32) < threshold


class SegmentSampler:
    """Seeded sampler of (history, prompt) batches over several tasks.

    Per window it draws, in this order, a history episode of the task, the window's start, a prompt
    episode and (``prompt_window="random"``) the prompt's start; a batch's draws are made at once and
    are the numbers one ``rng.integers`` call each would give. The windows are gathered on the
    device :meth:`sample` is given (see :class:`EpisodeBank`), so only the drawn indices cross from
    the host each step.

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
        h, p = self._history_bank, self._prompt_bank
        self._h_first = np.array([h.first[t] for t in self.tasks], np.int64)
        self._h_count = np.array([len(histories[t]) for t in self.tasks], np.int64)
        self._p_first = None if p is None else np.array([p.first[t] for t in self.tasks], np.int64)
        self._p_count = None if p is None else np.array([len(prompts[t]) for t in self.tasks], np.int64)
        # The batch-at-once draws assume every start draw takes one number: no episode of a single step.
        self._vectorized = all(b is None or b.lengths.min(initial=2) >= 2 for b in (h, p))

    def sample(self, per_task: int, device: torch.device | str = "cpu") -> tuple[Segment, Segment | None]:
        """``per_task`` windows of every task: a history batch and its prompt batch (B = tasks * per_task)."""
        device = torch.device(device)
        task_idx = np.repeat(np.arange(len(self.tasks)), per_task)  # window -> task position, (B,)
        draws = self._draw(task_idx)  # (B, 4): history episode, history start, prompt episode, prompt start
        draws = torch.from_numpy(draws)  # the indices cross in one copy; the gathers run on the device
        if device.type == "cuda":
            draws = draws.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            draws = draws.to(device)
        history = self._history_bank.windows(draws[:, 0], draws[:, 1], self.spec.context, device)
        if self._prompt_bank is None:
            return history, None
        return history, self._prompt_bank.windows(draws[:, 2], draws[:, 3], self.spec.prompt_length, device)

    def _draw(self, task_idx: np.ndarray) -> np.ndarray:
        """The indices of windows of the given tasks (positions in ``self.tasks``), (B, 4) int64."""
        if not self._vectorized:
            return self._draw_one_by_one(task_idx)
        parts = []
        while len(task_idx):
            draws, done = self._draw_at_once(task_idx)
            parts.append(draws[:done])
            if done < len(task_idx):  # numpy would have drawn again for window ``done``: draw it one by one
                parts.append(self._draw_one_by_one(task_idx[done : done + 1]))
                done += 1
            task_idx = task_idx[done:]
        return np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)

    def _draw_one_by_one(self, task_idx: np.ndarray) -> np.ndarray:
        """One ``rng.integers`` call per number, in the sampler's order."""
        rng, out = self.rng, np.zeros((len(task_idx), 4), np.int64)
        for w, ti in enumerate(task_idx):
            task = self.tasks[ti]
            eps = self.histories[task]
            i = int(rng.integers(len(eps)))
            out[w, :2] = self._history_bank.first[task] + i, int(rng.integers(0, len(eps[i])))
            if self.prompts is not None:
                k = int(rng.integers(len(self.prompts[task])))
                start = prompt_start(len(self.prompts[task][k]), self.spec, rng)
                out[w, 2:] = self._prompt_bank.first[task] + k, start
        return out

    def _draw_at_once(self, task_idx: np.ndarray) -> tuple[np.ndarray, int]:
        """The draws of all windows from one block of 32-bit numbers, and how many windows (from the
        first) are exact: all, unless numpy would have rejected a number (then the generator is left
        just after the exact ones)."""
        W = len(task_idx)
        prompts = self._prompt_bank is not None
        random_start = prompts and self.spec.prompt_window != "last"
        # numbers each window takes, per draw: integers(1) takes none
        takes = np.zeros((W, 4), bool)  # (W, 4)
        takes[:, 0] = self._h_count[task_idx] > 1
        takes[:, 1] = True
        if prompts:
            takes[:, 2] = self._p_count[task_idx] > 1
            takes[:, 3] = random_start
        where = np.cumsum(takes.ravel()).reshape(W, 4) - 1  # index of each draw's number
        state = self.rng.bit_generator.state
        raw = self.rng.integers(0, 2**32, size=int(takes.sum()), dtype=np.uint64)
        out = np.zeros((W, 4), np.int64)
        rejected = np.zeros(W, bool)

        def draw(col: int, bound: np.ndarray) -> np.ndarray:
            value, reject = _bounded_draws(raw[np.where(takes[:, col], where[:, col], 0)], np.maximum(bound, 2))
            rejected[:] |= takes[:, col] & reject
            return np.where(takes[:, col], value, 0)

        h = self._history_bank
        out[:, 0] = self._h_first[task_idx] + draw(0, self._h_count[task_idx])
        out[:, 1] = draw(1, h.lengths[out[:, 0]])
        if prompts:
            p = self._prompt_bank
            out[:, 2] = self._p_first[task_idx] + draw(2, self._p_count[task_idx])
            length = p.lengths[out[:, 2]]
            out[:, 3] = draw(3, length) if random_start else np.maximum(0, length - self.spec.prompt_length)
        if not rejected.any():
            return out, W
        done = int(np.argmax(rejected))
        self.rng.bit_generator.state = state  # back to the start, then past the exact windows' numbers
        self.rng.integers(0, 2**32, size=int(takes[:done].sum()), dtype=np.uint64)
        return out, done


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
