"""Conditional Gaussian diffusion over flattened prompts (Section 4 and Table 4 of the Prompt
Diffuser paper): the noise schedule as buffers, forward noising, the posterior, the noise-prediction
loss (Eq. 10), a reverse chain that can keep gradients (for the downstream loss, Eq. 13) with
low-temperature sampling (Eq. 16-17), the MLP noise model, and the gradient-combination rules
(Eq. 15, 18-20).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from promptrl.nn.compiled import COMPILE_MODES, maybe_compile, will_compile


def beta_schedule(name: str, n_steps: int) -> torch.Tensor:
    """``"linear"`` (DDPM's, rescaled to ``n_steps`` as improved-diffusion does) or ``"cosine"``."""
    if name == "linear":
        scale = 1000 / n_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, n_steps, dtype=torch.float64).clamp(max=0.999)
    if name == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor(
            [min(1 - f((i + 1) / n_steps) / f(i / n_steps), 0.999) for i in range(n_steps)], dtype=torch.float64
        )
    raise ValueError(f"schedule must be 'linear' or 'cosine', got {name!r}")


def check_mlp_sizes(hidden: int, n_hidden: int, dropout: float) -> None:
    """Raise a ValueError naming the argument unless widths are positive integers and dropout in [0, 1)."""
    for name, value in (("hidden", hidden), ("n_hidden", n_hidden)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def mish_mlp(in_dim: int, out_dim: int, hidden: int = 256, n_hidden: int = 3, dropout: float = 0.1) -> nn.Sequential:
    """``n_hidden`` (Linear, Mish, Dropout) layers of width ``hidden``, then a Linear to ``out_dim``."""
    check_mlp_sizes(hidden, n_hidden, dropout)
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(width, hidden), nn.Mish(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """h + Linear(Dropout(Mish(h))): dropout inside the residual branch, as in improved-diffusion's blocks."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.branch = nn.Sequential(nn.Mish(), nn.Dropout(dropout), nn.Linear(width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.branch(h)


class NoiseMLP(nn.Module):
    """eps_theta(x_k, y, k): an MLP with Mish activations over [x_k, y, embed(k)] (Appendix B).

    ``residual=True`` (default): a Linear into ``hidden`` units, ``n_hidden`` residual blocks
    (Mish, Dropout, Linear) and a Mish + Linear head, so dropout sits inside residual branches as in
    improved-diffusion, whose hyperparameters Table 4 lists. ``residual=False``: a plain stack of
    (Linear, Mish, Dropout) layers, where dropout sits on the main path.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden: int = 256,
        n_hidden: int = 3,
        dropout: float = 0.1,
        time_dim: int = 32,
        residual: bool = True,
    ):
        super().__init__()
        self.x_dim, self.y_dim, self.time_dim = x_dim, y_dim, time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.Mish(), nn.Linear(2 * time_dim, time_dim))
        in_dim = x_dim + y_dim + time_dim
        if residual:
            check_mlp_sizes(hidden, n_hidden, dropout)
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden),
                *(ResidualBlock(hidden, dropout) for _ in range(n_hidden)),
                nn.Mish(),
                nn.Linear(hidden, x_dim),
            )
        else:
            self.net = mish_mlp(in_dim, x_dim, hidden, n_hidden, dropout)

    def step_embedding(self, k: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding of the diffusion step: (B,) -> (B, time_dim)."""
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=k.device) / half)
        angles = k.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y, self.time_mlp(self.step_embedding(k))], dim=-1))

    def conditioned(self, y: torch.Tensor, n_steps: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """``eps(x, step)`` = ``forward(x, y, step)`` for a reverse chain over ``n_steps``: the first
        layer's y and step terms are computed once (for every step) instead of at each step."""
        w_x, base, per_step = self.condition_terms(y, n_steps)
        rest, rows = self.net[1:], per_step.unbind(0)  # n_steps x (hidden,)
        return lambda x, step: rest(F.linear(x, w_x) + base + rows[step])

    def condition_terms(self, y: torch.Tensor, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first layer split for :meth:`conditioned`: its x weight (hidden, x_dim), its y and bias
        term (B, hidden) and its step term for every step (n_steps, hidden); the first layer's output
        for x at ``step`` is ``F.linear(x, w_x) + base + per_step[step]``."""
        if y.dim() != 2 or y.shape[1] != self.y_dim:
            raise ValueError(f"y must have shape (B, {self.y_dim}), got {tuple(y.shape)}")
        first = self.net[0]
        w_x, w_y, w_t = first.weight.split([self.x_dim, self.y_dim, self.time_dim], dim=1)
        base = F.linear(y, w_y, first.bias)  # (B, hidden)
        steps = self.time_mlp(self.step_embedding(torch.arange(n_steps, device=y.device)))
        return w_x, base, F.linear(steps, w_t)  # per_step: (n_steps, hidden)


def _reverse_step(
    net: nn.Sequential,
    x: torch.Tensor,
    w_x: torch.Tensor,
    base: torch.Tensor,
    per_step: torch.Tensor,
    coefs: torch.Tensor,
    noise: torch.Tensor,
    clip_denoised: bool,
) -> torch.Tensor:
    """One reverse step x_k -> x_{k-1} of :meth:`GaussianDiffusion.sample` with the step's numbers as
    tensors (so one compiled graph serves every step): ``coefs`` = (sqrt_recip_abar, sqrt_recipm1_abar,
    posterior_coef_x0, posterior_coef_xk, noise scale), ``noise`` (B, x_dim)."""
    h = F.linear(x, w_x) + base + per_step  # the first layer of ``net`` (NoiseMLP.condition_terms)
    for layer in list(net)[1:]:
        h = layer(h)
    x0 = coefs[0] * x - coefs[1] * h  # predict_x0
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    return coefs[2] * x0 + coefs[3] * x + coefs[4] * noise  # the posterior mean (Eq. 17) plus noise


class GaussianDiffusion(nn.Module):
    """DDPM with fixed small variance (the posterior's), uniform step sampling and an MSE noise loss.

    Steps are indexed ``k = 0 .. n_steps - 1`` (the paper's 1 .. N).
    """

    def __init__(self, n_steps: int = 100, schedule: str = "linear", compile_chain: bool | str = False):
        super().__init__()
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        check_compile_chain(compile_chain)
        self.n_steps = n_steps
        self.compile_chain = compile_chain
        """Default of :meth:`sample`'s ``compile_chain``."""
        self._compiled_steps: dict[str, Callable[..., torch.Tensor]] = {}
        betas = beta_schedule(schedule, n_steps)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        buffers = {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "sqrt_recip_abar": (1 / abar).sqrt(),
            "sqrt_recipm1_abar": (1 / abar - 1).sqrt(),
            "posterior_variance": post_var,
            # log of the posterior variance with its first (zero) entry replaced, as in improved-diffusion
            "posterior_log_variance": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "posterior_coef_x0": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_coef_xk": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)
        # The same numbers on the host, for the reverse chain's per-step scalars (no device reads per step).
        self._host = {name: value.float().tolist() for name, value in buffers.items()}

    @staticmethod
    def _at(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return values[k][:, None]  # (B,) -> (B, 1) for broadcasting over x's features

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps."""
        return self._at(self.sqrt_abar, k) * x0 + self._at(self.sqrt_one_minus_abar, k) * noise

    def q_posterior(self, x0: torch.Tensor, xk: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{k-1} | x_k, x0)."""
        mean = self._at(self.posterior_coef_x0, k) * x0 + self._at(self.posterior_coef_xk, k) * xk
        return mean, self._at(self.posterior_variance, k)

    def predict_x0(self, xk: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self._at(self.sqrt_recip_abar, k) * xk - self._at(self.sqrt_recipm1_abar, k) * eps

    def p_mean_variance(
        self, model: nn.Module, xk: torch.Tensor, y: torch.Tensor, k: torch.Tensor, clip_denoised: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (Eq. 17, through the predicted x0, optionally clipped to [-1, 1]) and log-variance of p(x_{k-1} | x_k, y)."""
        x0 = self.predict_x0(xk, k, model(xk, y, k))
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xk, k)
        return mean, self._at(self.posterior_log_variance, k)

    def loss(
        self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """L_DM (Eq. 10): MSE between the true and predicted noise at a uniformly drawn step per sample."""
        k = torch.randint(0, self.n_steps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return F.mse_loss(model(self.q_sample(x0, k, noise), y, k), noise)

    def sample(
        self,
        model: NoiseMLP,
        y: torch.Tensor,
        x_dim: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        clip_denoised: bool = True,
        keep_grad: bool = False,
        return_chain: bool = False,
        compile_chain: bool | str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the whole reverse chain from x_N ~ N(0, I) (Eq. 16 with variance scaled by ``temperature``).

        Each step is :meth:`p_mean_variance` with the schedule read once as Python numbers and the noise
        model's condition terms computed once (:meth:`NoiseMLP.conditioned`). With ``keep_grad`` the
        chain stays in the autograd graph, so a loss on the result reaches the noise model through
        every step (the downstream guidance of Eq. 13). Everything stays on ``y``'s device; no step leaves it.

        ``compile_chain`` (default: the :attr:`compile_chain` attribute) compiles one reverse step and
        runs it N times, on a CUDA device only (elsewhere the plain chain runs): True picks
        ``torch.compile`` mode ``reduce-overhead`` (CUDA graphs) without ``keep_grad`` and ``default``
        with it; a string names the mode (one of :data:`~promptrl.nn.compiled.COMPILE_MODES`). The
        noise draws are the plain chain's; the numbers agree to float rounding.
        """
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"temperature must be in [0, 1], got {temperature}")
        compile_chain = self.compile_chain if compile_chain is None else compile_chain
        check_compile_chain(compile_chain)
        if compile_chain is not False and will_compile(y.device) and not return_chain:
            mode = compile_chain if isinstance(compile_chain, str) else "default" if keep_grad else "reduce-overhead"
            return self._sample_compiled(model, y, x_dim, generator, temperature, clip_denoised, keep_grad, mode)
        recip, recipm1, coef_x0, coef_xk, log_var = (
            self._host[name]
            for name in (
                "sqrt_recip_abar",
                "sqrt_recipm1_abar",
                "posterior_coef_x0",
                "posterior_coef_xk",
                "posterior_log_variance",
            )
        )
        x = torch.randn((y.shape[0], x_dim), generator=generator, device=y.device, dtype=y.dtype)
        chain = [x]
        with torch.set_grad_enabled(keep_grad):
            eps = model.conditioned(y, self.n_steps)
            for step in reversed(range(self.n_steps)):
                x0 = recip[step] * x - recipm1[step] * eps(x, step)  # predict_x0
                if clip_denoised:
                    x0 = x0.clamp(-1, 1)
                x = coef_x0[step] * x0 + coef_xk[step] * x  # the posterior mean (Eq. 17)
                if step > 0:
                    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                    x = x + math.sqrt(temperature) * math.exp(0.5 * log_var[step]) * noise
                if return_chain:
                    chain.append(x)
        return (x, chain) if return_chain else x

    def _sample_compiled(
        self,
        model: NoiseMLP,
        y: torch.Tensor,
        x_dim: int,
        generator: torch.Generator | None,
        temperature: float,
        clip_denoised: bool,
        keep_grad: bool,
        mode: str,
    ) -> torch.Tensor:
        """:meth:`sample` through one compiled reverse step (:func:`_reverse_step`), the same draws."""
        if mode not in self._compiled_steps:
            self._compiled_steps[mode] = maybe_compile(_reverse_step, y.device, mode=mode)
        step_fn = self._compiled_steps[mode]
        h = self._host
        scale = [math.sqrt(temperature) * math.exp(0.5 * v) for v in h["posterior_log_variance"]]
        scale[0] = 0.0  # the last step adds no noise
        names = ("sqrt_recip_abar", "sqrt_recipm1_abar", "posterior_coef_x0", "posterior_coef_xk")
        coefs = torch.tensor([*(h[n] for n in names), scale], device=y.device).T.contiguous()  # (N, 5)
        x = torch.randn((y.shape[0], x_dim), generator=generator, device=y.device, dtype=y.dtype)
        no_noise = torch.zeros_like(x)
        replay = mode == "reduce-overhead" and not keep_grad  # with gradients every step records its own graph
        with torch.set_grad_enabled(keep_grad):
            w_x, base, per_step = model.condition_terms(y, self.n_steps)
            for step in reversed(range(self.n_steps)):
                noise = (
                    no_noise if step == 0 else torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                )
                if replay:  # each step replays the one graph: its output is copied out before the next
                    torch.compiler.cudagraph_mark_step_begin()
                x = step_fn(model.net, x, w_x, base, per_step[step], coefs[step], noise, clip_denoised)
                x = x.clone() if replay else x
        return x


def check_compile_chain(value: bool | str) -> None:
    """Raise a ValueError unless ``value`` is True, False or one of :data:`~promptrl.nn.compiled.COMPILE_MODES`."""
    if not (isinstance(value, bool) or value in COMPILE_MODES):
        raise ValueError(f"compile_chain must be True, False or one of {COMPILE_MODES}, got {value!r}")


def _projection(g_dm: torch.Tensor, g_dt: torch.Tensor) -> torch.Tensor:
    dot = torch.dot(g_dm, g_dt)
    if dot < 0:  # conflicting: L_DT's gradient projected onto the normal plane of L_DM's
        g_dt = g_dt - dot / g_dm.pow(2).sum().clamp_min(1e-20) * g_dm
    return g_dm + g_dt


_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "projection": _projection,  # Eq. 15, Algorithm 1 line 6
    "dm": lambda g_dm, g_dt: g_dm,  # Eq. 18
    "dt": lambda g_dm, g_dt: g_dt,  # Eq. 19
    "sum": lambda g_dm, g_dt: g_dm + g_dt,  # Eq. 20
}
UPDATE_RULES: tuple[str, ...] = tuple(_RULES)
"""The names of the gradient-combination rules :func:`combine_gradients` knows: ``projection``, ``dm``,
``dt``, ``sum``."""


def combine_gradients(g_dm: torch.Tensor, g_dt: torch.Tensor, rule: str = "projection") -> torch.Tensor:
    """The update direction from the flat gradients of L_DM and L_DT by ``rule``, one of :data:`UPDATE_RULES`.

    ``projection`` (Eq. 15, Algorithm 1 line 6): when the two conflict (negative dot product), L_DT's
    gradient is projected onto the normal plane of L_DM's before adding; otherwise they are summed.
    ``dm`` (Eq. 18: L_DM's alone), ``dt`` (Eq. 19: L_DT's alone) and ``sum`` (Eq. 20) are the
    ablations of Fig. 3.
    """
    if rule not in _RULES:
        raise ValueError(f"update must be one of {UPDATE_RULES}, got {rule!r}")
    return _RULES[rule](g_dm, g_dt)
