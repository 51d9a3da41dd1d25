"""The Prompt Decision Transformer network: a GPT-style causal transformer over (return-to-go,
state, action) tokens with a trajectory prompt prepended through its own embeddings.

Built on ``torch.nn.functional.scaled_dot_product_attention``; no language-model library.
The training loop, ``predict`` and the Hub mixin live in :mod:`promptrl.methods.plm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from promptrl.common.config_checks import check_bool, check_float, check_int, check_parameter_count
from promptrl.data.windows import Segment

MAX_WIDTH = 1 << 20
"""Largest ``obs_dim``, ``act_dim``, ``embed_dim``, ``context``, ``prompt_length`` and ``max_ep_len`` a config may ask for."""
MAX_LAYERS = 1024
"""Largest ``n_layer`` a config may ask for."""


@dataclass
class PromptDTConfig:
    """Architecture of a Prompt-DT (defaults: the reference Prompt-DT settings)."""

    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size."""
    embed_dim: int = 128
    """Token width."""
    n_layer: int = 3
    """Transformer blocks."""
    n_head: int = 1
    """Attention heads."""
    activation: str = "relu"
    """MLP activation: ``relu`` or ``gelu``."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and MLP outputs."""
    context: int = 20
    """K: steps of recent history the model sees."""
    prompt_length: int = 5
    """K*: steps of trajectory prompt; 0 with ``use_prompt=False``."""
    max_ep_len: int = 1000
    """Size of the timestep embedding table (timesteps must stay below it)."""
    use_prompt: bool = True
    """False gives MT-ORL: the same model trained and run without prompts."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "act_dim", "embed_dim", "context", "max_ep_len"):
            check_int(name, getattr(self, name), 1, MAX_WIDTH)
        check_int("n_layer", self.n_layer, 1, MAX_LAYERS)
        check_int("n_head", self.n_head, 1, self.embed_dim)
        if self.embed_dim % self.n_head:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by n_head ({self.n_head})")
        check_int("prompt_length", self.prompt_length, 0, MAX_WIDTH)
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        check_float("dropout", self.dropout, 0.0, 1.0, open_max=True)
        check_bool("use_prompt", self.use_prompt)
        check_parameter_count("a Prompt-DT of this config", self.num_parameters())

    def num_parameters(self) -> int:
        """Parameters of the :class:`PromptDTNetwork` this config builds (computed, nothing allocated)."""
        E = self.embed_dim
        embedding = E * (self.max_ep_len + self.obs_dim + self.act_dim + 4)  # timestep table, rtg/state/action
        block = 12 * E * E + 13 * E  # 2 LayerNorms, qkv, proj, 4x MLP
        head = E * self.act_dim + self.act_dim
        return embedding * (2 if self.use_prompt else 1) + self.n_layer * block + 4 * E + head


class TokenEmbedding(nn.Module):
    """Embeds a :class:`Segment` into interleaved (rtg, state, action) tokens: (B, 3L, E)."""

    def __init__(self, cfg: PromptDTConfig):
        super().__init__()
        self.timestep = nn.Embedding(cfg.max_ep_len, cfg.embed_dim)
        self.rtg = nn.Linear(1, cfg.embed_dim)
        self.state = nn.Linear(cfg.obs_dim, cfg.embed_dim)
        self.action = nn.Linear(cfg.act_dim, cfg.embed_dim)

    def forward(self, seg: Segment) -> torch.Tensor:
        time = self.timestep(seg.timesteps)  # (B, L, E)
        tokens = torch.stack(
            [self.rtg(seg.rtg) + time, self.state(seg.states) + time, self.action(seg.actions) + time], dim=2
        )
        return tokens.flatten(1, 2)  # (B, L, 3, E) -> (B, 3L, E)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention then MLP."""

    def __init__(self, cfg: PromptDTConfig):
        super().__init__()
        if cfg.embed_dim % cfg.n_head:
            raise ValueError(f"embed_dim ({cfg.embed_dim}) must be divisible by n_head ({cfg.n_head})")
        if cfg.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {cfg.activation!r}")
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, 4 * cfg.embed_dim),
            nn.ReLU() if cfg.activation == "relu" else nn.GELU(),
            nn.Linear(4 * cfg.embed_dim, cfg.embed_dim),
            nn.Dropout(cfg.dropout),
        )
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x (B, T, E) -> (B, T, E); with ``rows`` the outputs of those tokens alone, (B, T', E)."""
        B, T, E = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(E, dim=2)
        if rows is not None:  # every token's keys and values, the queries of ``rows``
            x, q, attn_mask = x[:, rows], q[:, rows], attn_mask[..., rows, :]
        heads = lambda t: t.view(B, t.shape[1], self.n_head, E // self.n_head).transpose(1, 2)  # noqa: E731  (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, q.shape[1], E)  # (B, nh, Tq, hs) -> (B, Tq, E)
        x = x + self.resid_drop(self.proj(y))
        return x + self.mlp(self.ln2(x))


class PromptDTNetwork(nn.Module):
    """Predicts an action from every state token of the history; the prompt only conditions."""

    def __init__(self, cfg: PromptDTConfig):
        super().__init__()
        for name in ("obs_dim", "act_dim", "embed_dim", "n_layer", "n_head", "context", "max_ep_len"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg)
        self.prompt_embed = TokenEmbedding(cfg) if cfg.use_prompt else None
        self.ln_in = nn.LayerNorm(cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.embed_dim)
        self.action_head = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.act_dim), nn.Tanh())

    def forward(
        self,
        history: Segment,
        prompt: Segment | None = None,
        prompt_tokens: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Action predictions (B, K, act_dim) for the K history steps; with ``last_only`` (inference) the
        last step's alone, (B, 1, act_dim). The final block computes its attention output and MLP only
        for the state tokens the action head reads (all K, or the last one): the same values, less compute.

        ``prompt_tokens`` (B, 3K*, E), already-embedded prompt tokens (a soft prompt), replace
        ``prompt``; they are all treated as real (unpadded) tokens.
        """
        B, K = history.timesteps.shape
        tokens = self.embed(history)  # (B, 3K, E)
        keep = history.mask.repeat_interleave(3, dim=1)  # (B, 3K)
        if self.prompt_embed is not None:
            if prompt_tokens is not None:
                if (
                    prompt_tokens.dim() != 3
                    or prompt_tokens.shape[0] != B
                    or prompt_tokens.shape[2] != self.cfg.embed_dim
                ):
                    raise ValueError(
                        f"prompt_tokens must have shape ({B}, 3K*, {self.cfg.embed_dim}), got {tuple(prompt_tokens.shape)}"
                    )
                prompt_keep = torch.ones(prompt_tokens.shape[:2], dtype=keep.dtype, device=keep.device)
            elif prompt is None:
                raise ValueError("this Prompt-DT was built with use_prompt=True: pass a prompt segment")
            else:
                prompt_tokens, prompt_keep = self.prompt_embed(prompt), prompt.mask.repeat_interleave(3, dim=1)
            tokens = torch.cat([prompt_tokens, tokens], dim=1)  # (B, 3K* + 3K, E)
            keep = torch.cat([prompt_keep, keep], dim=1)
        T = tokens.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
        # A token sees earlier real tokens and always itself (so padded rows never attend to nothing).
        attn_mask = (causal & keep.bool()[:, None, :]) | torch.eye(T, dtype=torch.bool, device=tokens.device)
        # The history's s_t tokens (tokens are (rtg, s, a) per step, the history last): all K, or the last.
        state_rows = slice(T - 2, T - 1) if last_only else slice(T - 3 * K + 1, T, 3)
        x = self.drop(self.ln_in(tokens))
        for i, block in enumerate(self.blocks):
            # mask (B, 1, T, T) broadcasts over heads
            x = block(x, attn_mask[:, None], rows=state_rows if i == len(self.blocks) - 1 else None)
        return self.action_head(self.ln_out(x))  # (B, K or 1, act_dim)
