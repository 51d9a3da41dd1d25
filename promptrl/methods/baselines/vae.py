"""The VAE ablation of Table 5: a conditional VAE generates the prompt in place of the diffusion model,
everything else (representation, PLM guidance, update rules) shared with the Prompt Diffuser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from promptrl.methods.base import check_number
from promptrl.methods.generator import GeneratorSettings, PromptGenerator
from promptrl.nn.diffusion import mish_mlp


@dataclass
class VAESettings(GeneratorSettings):
    """Settings of :class:`VAEPromptGenerator` (the rest as the Prompt Diffuser's, Table 4)."""

    hidden: int = 256
    """Width of the encoder's and decoder's hidden layers."""
    n_hidden: int = 3
    """Hidden layers of the encoder and of the decoder."""
    dropout: float = 0.1
    """Dropout in the encoder and decoder."""
    latent_dim: int = 32
    """Size of the latent z."""
    kl_weight: float = 1.0
    """Weight of the KL term of the negative ELBO (1: the ELBO itself)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("latent_dim", self.latent_dim, integer=True)
        check_number("kl_weight", self.kl_weight, strict=False)


class ConditionalVAE(nn.Module):
    """q(z | x0, y) = N(mu, diag(sigma^2)) from the encoder MLP; x0 = tanh(decoder([z, y])) in [-1, 1]."""

    def __init__(
        self, x_dim: int, y_dim: int, latent_dim: int = 32, hidden: int = 256, n_hidden: int = 3, dropout: float = 0.1
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mish_mlp(x_dim + y_dim, 2 * latent_dim, hidden, n_hidden, dropout)
        self.decoder = mish_mlp(latent_dim + y_dim, x_dim, hidden, n_hidden, dropout)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x0 in [-1, 1] (B, x_dim) for latents z (B, latent_dim) and conditions y."""
        return torch.tanh(self.decoder(torch.cat([z, y], -1)))

    def neg_elbo(
        self, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None, kl_weight: float = 1.0
    ) -> torch.Tensor:
        """Negative ELBO per feature: ``||x0_hat - x0||^2 / x_dim + kl_weight * KL(q || N(0, I)) / x_dim``,
        batch-averaged (a Gaussian decoder of variance 1/2, reparameterized z)."""
        mu, log_var = self.encoder(torch.cat([x0, y], -1)).chunk(2, -1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon = F.mse_loss(self.decode(mu + (0.5 * log_var).exp() * eps, y), x0)
        kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1).mean() / x0.shape[1]
        return recon + kl_weight * kl


class VAEPromptGenerator(PromptGenerator):
    """Prompt generator of Table 5's "VAE" row: a conditional VAE (MLP encoder and decoder) over the
    Prompt Diffuser's x0 given y, trained on the negative ELBO plus the frozen PLM's action loss L_DT
    on prompts decoded (with gradients) from prior samples z ~ N(0, I), the gradients combined by
    ``update`` exactly as for the Prompt Diffuser (``"dm"`` = the ELBO alone). At generation
    z ~ N(0, temperature * I). The callback's keys are ``loss_elbo`` and ``loss_dt``.

    Trainable parameters: the encoder's and decoder's.
    """

    settings_class: ClassVar[type[VAESettings]] = VAESettings
    generative_loss_name: ClassVar[str] = "loss_elbo"

    def _make_model(self) -> nn.Module:
        s = self.settings
        return ConditionalVAE(self.x_dim, self.y_dim, s.latent_dim, s.hidden, s.n_hidden, s.dropout)

    def _generative_loss(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model.neg_elbo(x0, y, self._generator, self.settings.kl_weight)

    def _sample_x0(
        self, y: torch.Tensor, temperature: float, keep_grad: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        draws = self._generator if generator is None else generator
        z = torch.randn((y.shape[0], self.model.latent_dim), generator=draws, device=y.device, dtype=y.dtype)
        with torch.set_grad_enabled(keep_grad):
            return self.model.decode(temperature**0.5 * z, y)
