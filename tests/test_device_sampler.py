"""The batch-at-once SegmentSampler and its torch gathers against the one-draw-per-number sampler
(kept below as the reference), and the compile opt-in of the hot loops."""

import numpy as np
import pytest
import torch

from promptrl.data import windows as windows_module
from promptrl.data.episodes import Episode
from promptrl.data.windows import EpisodeBank, Segment, SegmentSampler, SegmentSpec, prompt_start
from promptrl.nn.compiled import maybe_compile, will_compile
from promptrl.nn.diffusion import GaussianDiffusion, NoiseMLP

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class ReferenceSampler:
    """The sampler's draws one ``rng.integers`` call at a time, and the numpy gather of the episodes."""

    def __init__(self, histories, prompts, spec, seed=0):
        self.histories, self.prompts, self.spec = histories, prompts, spec
        self.tasks = sorted(histories)
        self.rng = np.random.default_rng(seed)
        self.hist_bank = self.bank(histories)
        self.prompt_bank = None if prompts is None else self.bank(prompts)

    def bank(self, episodes):
        spec = self.spec
        flat = [ep for task in sorted(episodes) for ep in episodes[task]]
        lengths = np.array([len(ep) for ep in flat], np.int64)
        first = np.cumsum([0] + [len(episodes[t]) for t in sorted(episodes)])
        return {
            "lengths": lengths,
            "offsets": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            "first": {task: int(first[i]) for i, task in enumerate(sorted(episodes))},
            "states": (np.concatenate([ep.observations for ep in flat]) - spec.state_mean) / spec.state_std,
            "actions": np.concatenate([ep.actions for ep in flat]),
            "rtg": np.concatenate([ep.rtg for ep in flat]) / spec.rtg_scale,
        }

    def windows(self, bank, episodes, starts, length):
        n = np.minimum(length, bank["lengths"][episodes] - starts)
        pad = (length - n)[:, None]
        j = np.arange(length)[None, :]
        valid = j >= pad
        t = starts[:, None] + j - pad
        src = np.where(valid, bank["offsets"][episodes][:, None] + t, 0)
        arrays = (
            np.where(valid[..., None], bank["states"][src], np.float32(0)).astype(np.float32),
            np.where(valid[..., None], bank["actions"][src], np.float32(0)).astype(np.float32),
            np.where(valid, bank["rtg"][src], np.float32(0)).astype(np.float32)[..., None],
            np.where(valid, np.minimum(t, self.spec.max_ep_len - 1), 0).astype(np.int64),
            valid.astype(np.float32),
        )
        return Segment(*(torch.as_tensor(a) for a in arrays))

    def sample(self, per_task):
        hist, prompt = [], []
        for task in self.tasks:
            eps = self.histories[task]
            for _ in range(per_task):
                i = int(self.rng.integers(len(eps)))
                hist.append((self.hist_bank["first"][task] + i, int(self.rng.integers(0, len(eps[i])))))
                if self.prompts is not None:
                    k = int(self.rng.integers(len(self.prompts[task])))
                    start = prompt_start(len(self.prompts[task][k]), self.spec, self.rng)
                    prompt.append((self.prompt_bank["first"][task] + k, start))
        h = np.array(hist, np.int64)
        history = self.windows(self.hist_bank, h[:, 0], h[:, 1], self.spec.context)
        if self.prompts is None:
            return history, None
        p = np.array(prompt, np.int64)
        return history, self.windows(self.prompt_bank, p[:, 0], p[:, 1], self.spec.prompt_length)


def make_episodes(rng, tasks, counts, lengths=(2, 30)):
    """Per task, ``counts[i]`` episodes of random lengths in ``lengths`` (3 features, 2 actions)."""
    return {
        t: [
            Episode.from_arrays(rng.normal(size=(n + 1, 3)), rng.uniform(-1, 1, (n, 2)), rng.normal(size=n))
            for n in rng.integers(*lengths, size=c)
        ]
        for t, c in zip(tasks, counts)
    }


def make_spec(rng, prompt_window, context=8, prompt_length=3):
    mean = rng.normal(size=3).astype(np.float32)
    return SegmentSpec(context, prompt_length, 10.0, mean, np.full(3, 2.0, np.float32), 20, prompt_window)


def assert_same(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g.cpu(), w)


@pytest.mark.parametrize("prompt_window", ["last", "random"])
@pytest.mark.parametrize("prompts", ["histories", "separate", "none"])
def test_sampler_equals_one_draw_per_number(prompt_window, prompts):
    """Bit-identical batches over several calls (padding, tasks of one episode, separate prompt
    episodes, no prompts), and the generator ends where the reference's does."""
    rng = np.random.default_rng(0)
    histories = make_episodes(rng, (3, 8, 11), (4, 1, 6))
    prompt_eps = {"histories": histories, "separate": make_episodes(rng, (3, 8, 11), (2, 5, 1)), "none": None}[prompts]
    spec = make_spec(rng, prompt_window)
    sampler = SegmentSampler(histories, prompt_eps, spec, seed=7)
    reference = ReferenceSampler(histories, prompt_eps, spec, seed=7)
    padded = 0
    for per_task in (1, 5, 16, 3, 40):
        history, prompt = sampler.sample(per_task)
        want_history, want_prompt = reference.sample(per_task)
        assert_same(history, want_history)
        if prompt_eps is None:
            assert prompt is None and want_prompt is None
        else:
            assert_same(prompt, want_prompt)
        padded += int((history.mask == 0).sum())
    assert padded > 0
    assert sampler.rng.bit_generator.state == reference.rng.bit_generator.state


def test_one_step_episodes_are_drawn_one_by_one():
    """An episode of one step takes no number for its start: the sampler then draws each number alone."""
    rng = np.random.default_rng(1)
    histories = make_episodes(rng, (0, 1), (3, 3), lengths=(1, 4))
    histories[1][1] = make_episodes(rng, (0,), (1,), lengths=(1, 2))[0][0]
    assert min(len(e) for eps in histories.values() for e in eps) == 1
    spec = make_spec(rng, "random", context=4, prompt_length=2)
    sampler, reference = SegmentSampler(histories, histories, spec, 3), ReferenceSampler(histories, histories, spec, 3)
    assert not sampler._vectorized
    for _ in range(4):
        for got, want in zip(sampler.sample(6), reference.sample(6)):
            assert_same(got, want)


def test_bounded_draws_follow_numpy_and_flag_its_rejections():
    """``_bounded_draws`` gives Generator.integers' value from its first 32-bit number, and flags exactly
    the numbers numpy rejects (then it takes more than one number; frequent for bounds near 2**31)."""
    bounds = np.concatenate([np.arange(2, 302), np.arange(2**31, 2**31 + 300)])
    flagged = 0
    for seed, bound in enumerate(bounds):
        raw = np.random.default_rng(seed).integers(0, 2**32, size=1, dtype=np.uint64)
        value, rejected = windows_module._bounded_draws(raw, np.array([bound]))
        one_number = np.random.default_rng(seed)
        one_number.integers(0, 2**32, size=1, dtype=np.uint64)
        scalar = np.random.default_rng(seed)
        got = scalar.integers(int(bound))
        took_one = scalar.bit_generator.state == one_number.bit_generator.state
        assert bool(rejected[0]) == (not took_one)
        if took_one:
            assert got == value[0]
        flagged += int(rejected[0])
    assert 50 < flagged < 250  # about half of the large bounds, none of the small ones with these seeds


@pytest.mark.parametrize("prompt_window", ["last", "random"])
def test_rejected_numbers_are_redrawn_as_numpy_does(prompt_window, monkeypatch):
    """When a number would be redrawn, the windows before it stand, that window is drawn one number at
    a time and the rest again at once: still the reference's batches."""
    original, calls = windows_module._bounded_draws, []

    def rejecting(raw, bound):  # claims a rejection at the 7th number of every other call
        value, rejected = original(raw, bound)
        calls.append(len(raw))
        if len(calls) % 2 and len(raw) > 7:
            rejected = rejected.copy()
            rejected[7] = True
        return value, rejected

    monkeypatch.setattr(windows_module, "_bounded_draws", rejecting)
    rng = np.random.default_rng(3)
    histories = make_episodes(rng, (0, 1, 2), (5, 2, 3))
    spec = make_spec(rng, prompt_window)
    sampler, reference = SegmentSampler(histories, histories, spec, 4), ReferenceSampler(histories, histories, spec, 4)
    for _ in range(3):
        for got, want in zip(sampler.sample(9), reference.sample(9)):
            assert_same(got, want)
    assert len(calls) > 8  # the batches were split around the claimed rejections


def test_bank_copies_and_validation():
    """A bank put on a device gathers there; the CPU copy is float32 with one zero padding row."""
    rng = np.random.default_rng(4)
    histories = make_episodes(rng, (0,), (3,))
    spec = make_spec(rng, "last")
    bank = EpisodeBank(histories, spec, device="cpu")
    states = bank._tensors[torch.device("cpu")][0]
    assert states.dtype == torch.float32 and states.shape == (sum(len(e) for e in histories[0]) + 1, 3)
    assert (states[-1] == 0).all()
    seg = bank.windows(np.array([0, 2]), np.array([0, 1]), 5)
    assert seg.states.device.type == "cpu" and seg.timesteps.dtype == torch.int64


@CUDA
@pytest.mark.parametrize("prompt_window", ["last", "random"])
def test_cuda_sampler_equals_cpu(prompt_window):
    rng = np.random.default_rng(5)
    histories = make_episodes(rng, (0, 4), (6, 3))
    spec = make_spec(rng, prompt_window)
    on_gpu, on_cpu = SegmentSampler(histories, histories, spec, 1), SegmentSampler(histories, histories, spec, 1)
    for _ in range(3):
        got, want = on_gpu.sample(16, "cuda"), on_cpu.sample(16)
        assert got[0].states.device.type == "cuda"
        for g, w in zip(got, want):
            assert_same(g, w)


# ---------------------------------------------------------------------- compile opt-in


def test_maybe_compile_keeps_the_plain_path_on_cpu():
    def f(x):
        return x * 2

    assert not will_compile("cpu") and not will_compile(torch.device("cpu"), enabled=True)
    assert maybe_compile(f, "cpu") is f
    module = torch.nn.Linear(2, 2)
    assert maybe_compile(module, torch.device("cpu")) is module
    with pytest.raises(ValueError, match="mode must be one of"):
        maybe_compile(f, "cpu", mode="fast")


@pytest.mark.parametrize("keep_grad", [False, True])
def test_compiled_sampling_on_cpu_is_the_plain_chain(keep_grad):
    """``compile=True`` on the CPU runs the plain reverse chain: the same numbers (and gradients)."""
    torch.manual_seed(0)
    model, diffusion = NoiseMLP(6, 4, hidden=16, n_hidden=2), GaussianDiffusion(10)
    y = torch.randn(5, 4)
    out = {}
    for compiled in (False, True):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        x = diffusion.sample(
            model, y, 6, torch.Generator().manual_seed(3), temperature=0.5, keep_grad=keep_grad, compile_chain=compiled
        )
        if keep_grad:
            x.pow(2).sum().backward()
        out[compiled] = (x.detach(), [p.grad.clone() if p.grad is not None else None for p in model.parameters()])
    assert torch.equal(out[False][0], out[True][0])
    if keep_grad:
        assert all(torch.equal(a, b) for a, b in zip(out[False][1], out[True][1]))


@CUDA
def test_compiled_sampling_on_cuda_is_close_to_plain():
    torch.manual_seed(0)
    model, diffusion = NoiseMLP(6, 4, hidden=16, n_hidden=2).cuda().eval(), GaussianDiffusion(10).cuda()
    y = torch.randn(5, 4, device="cuda")
    plain = diffusion.sample(model, y, 6, torch.Generator("cuda").manual_seed(3))
    compiled = diffusion.sample(model, y, 6, torch.Generator("cuda").manual_seed(3), compile_chain=True)
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep_grad", [False, True])
def test_one_step_graph_chain_equals_the_plain_chain(keep_grad):
    """The chain the compiled path runs (one reverse-step function called N times, its numbers as
    tensors) draws the plain chain's noise and gives its numbers and gradients; here uncompiled (CPU)."""
    torch.manual_seed(0)
    model, diffusion = NoiseMLP(6, 4, hidden=16, n_hidden=2).eval(), GaussianDiffusion(12)
    y = torch.randn(5, 4)
    plain = diffusion.sample(model, y, 6, torch.Generator().manual_seed(3), temperature=0.3, keep_grad=keep_grad)
    mode = "default" if keep_grad else "reduce-overhead"
    stepped = diffusion._sample_compiled(model, y, 6, torch.Generator().manual_seed(3), 0.3, True, keep_grad, mode)
    torch.testing.assert_close(stepped, plain, rtol=1e-6, atol=1e-6)
    if keep_grad:
        grads = [torch.autograd.grad(x.pow(2).sum(), list(model.parameters())) for x in (plain, stepped)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_compile_chain_is_checked():
    with pytest.raises(ValueError, match="compile_chain must be True, False or one of"):
        GaussianDiffusion(4, compile_chain="fast")
    with pytest.raises(ValueError, match="compile_chain must be True, False or one of"):
        GaussianDiffusion(4).sample(NoiseMLP(2, 2, hidden=4, n_hidden=1), torch.zeros(1, 2), 2, compile_chain=1)
