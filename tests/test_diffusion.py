import pytest
import torch

from promptrl.nn.diffusion import GaussianDiffusion, NoiseMLP, beta_schedule, combine_gradients


@pytest.fixture
def diffusion():
    return GaussianDiffusion(n_steps=50)


def test_schedule_matches_ddpm():
    betas = beta_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert (beta_schedule("cosine", 50) < 1).all()
    with pytest.raises(ValueError, match="schedule must be"):
        beta_schedule("quadratic", 10)


def test_q_sample_statistics(diffusion):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    k = torch.full((200_000,), 9)
    xk = diffusion.q_sample(x0, k, torch.randn(x0.shape, generator=g))
    abar = diffusion.alphas_cumprod[9]
    assert xk.mean().item() == pytest.approx((abar.sqrt() * 0.7).item(), abs=5e-3)
    assert xk.var().item() == pytest.approx((1 - abar).item(), rel=1e-2)


def test_posterior_closed_form(diffusion):
    """The posterior mean/variance agree with Bayes' rule on the Gaussian forward process."""
    x0, xk, k = torch.tensor([[0.3, -0.5]]), torch.tensor([[0.1, 0.2]]), torch.tensor([7])
    b = diffusion.betas[7].double()
    abar_prev = diffusion.alphas_cumprod[6].double()
    # q(x_{k-1}|x0) = N(sqrt(abar_prev) x0, 1 - abar_prev); q(x_k|x_{k-1}) = N(sqrt(1-b) x_{k-1}, b)
    prec = 1 / (1 - abar_prev) + (1 - b) / b
    mean = (abar_prev.sqrt() * x0.double() / (1 - abar_prev) + (1 - b).sqrt() * xk.double() / b) / prec
    got_mean, got_var = diffusion.q_posterior(x0, xk, k)
    torch.testing.assert_close(got_mean.double(), mean, rtol=1e-4, atol=1e-5)
    assert got_var.item() == pytest.approx((1 / prec).item(), rel=1e-4)


def test_mean_is_eq17_without_clipping(diffusion):
    torch.manual_seed(0)
    model = NoiseMLP(4, 2, hidden=16).eval()
    xk, y, k = torch.randn(3, 4), torch.randn(3, 2), torch.tensor([5, 10, 19])
    mean, _ = diffusion.p_mean_variance(model, xk, y, k, clip_denoised=False)
    alpha = (1 - diffusion.betas[k])[:, None]
    eq17 = (
        xk - diffusion.betas[k][:, None] / (1 - diffusion.alphas_cumprod[k])[:, None].sqrt() * model(xk, y, k)
    ) / alpha.sqrt()
    torch.testing.assert_close(mean, eq17, rtol=1e-4, atol=1e-5)


def test_chain_steps_are_p_mean_variance(diffusion):
    """The sampler's precomputed step (schedule as numbers, condition terms once) is p_mean_variance's mean."""
    torch.manual_seed(0)
    model = NoiseMLP(4, 2, hidden=16).eval()
    y = torch.randn(3, 2)
    _, chain = diffusion.sample(
        model, y, 4, generator=torch.Generator().manual_seed(2), temperature=0.0, return_chain=True
    )
    for i, step in enumerate(reversed(range(diffusion.n_steps))):
        mean, _ = diffusion.p_mean_variance(model, chain[i], y, torch.full((3,), step))
        torch.testing.assert_close(chain[i + 1], mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="y must have shape"):
        model.conditioned(torch.randn(3, 5), diffusion.n_steps)


def test_gradient_reaches_model_through_the_whole_chain(diffusion):
    torch.manual_seed(0)
    model = NoiseMLP(4, 2, hidden=16)
    y = torch.randn(3, 2)
    x0 = diffusion.sample(model, y, 4, generator=torch.Generator().manual_seed(1), keep_grad=True)
    x0.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    with torch.no_grad():
        assert not diffusion.sample(model, y, 4, generator=torch.Generator().manual_seed(1)).requires_grad


def test_sampling_is_seeded_and_temperature_zero_is_deterministic(diffusion):
    model = NoiseMLP(4, 2, hidden=16).eval()
    y = torch.randn(5, 2)
    a = diffusion.sample(model, y, 4, generator=torch.Generator().manual_seed(3))
    b = diffusion.sample(model, y, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    cold, chain = diffusion.sample(
        model, y, 4, generator=torch.Generator().manual_seed(3), temperature=0.0, return_chain=True
    )
    assert len(chain) == diffusion.n_steps + 1 and cold.abs().max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="temperature"):
        diffusion.sample(model, y, 4, temperature=1.5)


def test_residual_noise_mlp_keeps_dropout_off_the_main_path():
    """The residual net's dropout sits only inside residual branches; the plain net has it between layers."""
    from torch import nn

    from promptrl.nn.diffusion import ResidualBlock

    res, plain = NoiseMLP(4, 2, hidden=16, n_hidden=3), NoiseMLP(4, 2, hidden=16, n_hidden=3, residual=False)
    assert sum(isinstance(m, ResidualBlock) for m in res.net) == 3
    assert not any(isinstance(m, nn.Dropout) for m in res.net) and any(isinstance(m, nn.Dropout) for m in plain.net)
    block = res.net[1].eval()
    h = torch.randn(2, 16)
    torch.testing.assert_close(block(h), h + block.branch(h))
    with pytest.raises(ValueError, match="n_hidden"):
        NoiseMLP(4, 2, n_hidden=0)


def test_loss_is_finite_and_trains(diffusion):
    torch.manual_seed(0)
    model = NoiseMLP(3, 1, hidden=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x0, y = torch.tensor([[0.5, -0.5, 0.2]]).repeat(64, 1), torch.zeros(64, 1)
    g = torch.Generator().manual_seed(0)
    first = [diffusion.loss(model, x0, y, g).item() for _ in range(10)]
    for _ in range(300):
        loss = diffusion.loss(model, x0, y, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = [diffusion.loss(model, x0, y, g).item() for _ in range(10)]
    assert sum(last) < 0.7 * sum(first)


def test_combine_gradients():
    g_dm = torch.tensor([1.0, 0.0, 0.0])
    conflict = torch.tensor([-1.0, 2.0, 0.5])
    proj = combine_gradients(g_dm, conflict, "projection")
    assert torch.dot(proj - g_dm, g_dm) == pytest.approx(0.0, abs=1e-6)  # L_DT part is normal to grad L_DM
    assert torch.dot(proj, g_dm) >= 0
    torch.testing.assert_close(proj, torch.tensor([1.0, 2.0, 0.5]))
    agree = torch.tensor([0.5, 1.0, 0.0])
    torch.testing.assert_close(combine_gradients(g_dm, agree, "projection"), g_dm + agree)
    torch.testing.assert_close(combine_gradients(g_dm, conflict, "sum"), g_dm + conflict)
    assert combine_gradients(g_dm, conflict, "dm") is g_dm and combine_gradients(g_dm, conflict, "dt") is conflict
    with pytest.raises(ValueError, match="update must be one of"):
        combine_gradients(g_dm, conflict, "average")


def test_short_chains_stay_finite():
    """The rescaled linear schedule reaches beta >= 1 below 50 steps: it is clamped, so sampling stays finite."""
    diffusion = GaussianDiffusion(n_steps=10)
    model = NoiseMLP(4, 2, hidden=16).eval()
    assert torch.isfinite(
        diffusion.sample(model, torch.randn(3, 2), 4, generator=torch.Generator().manual_seed(0))
    ).all()
