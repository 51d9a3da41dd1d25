"""Fig. 4: the reverse denoising process of a shipped Prompt Diffuser."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from promptrl.data.episodes import episodes_of
from promptrl.data.windows import whole_windows
from promptrl.experiments.ablations.common import (
    pyplot,
    save_png,
    write_ablation,
)
from promptrl.experiments.reproduce import (
    hub_folder,
)
from promptrl.suites import load_suite
from promptrl.tasks.spec import load_spec

MAX_REAL_WINDOWS = 2000


def denoising(
    suite_name: str = "cheetah-vel",
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n: int = 64,
    seed: int = 0,
    temperature: float | None = None,
    command: str = "promptrl ablate denoising cheetah-vel",
) -> Path:
    """Fig. 4: ``n`` prompts of the shipped Prompt Diffuser through the reverse chain, for the task it
    was fine-tuned on. Each panel shows their tokens at one step (coloured by position in the prompt)
    beside the tokens of real windows of the task's expert episodes (grey; cut as the PLM cuts its
    prompts: each episode's last window, or up to ``MAX_REAL_WINDOWS`` random ones), projected on the
    real tokens' two principal axes; the table gives, per step, the RMS distance of each prompt to its
    nearest real window (normalized units; 0 = a copy of one). ``temperature`` scales the noise of
    each reverse step (default: the model's own); another value writes ``denoising-<suite>-T<t>``."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    from promptrl.methods.diffuser import PromptDiffuser

    out = Path(out)
    pd = PromptDiffuser.from_pretrained(hub_folder(suite_name, hub_root), device=device)
    pd.set_random_seed(seed)
    task = int(sorted(pd.settings.conditions, key=int)[0])
    p = pd.plm.settings
    last = p.prompt_window == "last"  # the real windows are cut as the PLM's prompts are
    windows = whole_windows(
        episodes_of(load_suite(suite_ref).dataset(task, "expert")),
        p.prompt_length,
        MAX_REAL_WINDOWS,
        np.random.default_rng(seed),
        last,
    )
    real = pd.encode(windows)[0].cpu().numpy()  # (M, x_dim)
    t = pd.settings.temperature if temperature is None else float(temperature)
    chain = pd.denoising_chain(n, task=task, temperature=t).cpu().numpy()  # (N + 1, n, K*, d), chain[0] = x_N
    N, K, d = chain.shape[0] - 1, chain.shape[2], chain.shape[3]
    real_tokens = real.reshape(-1, d)
    center = real_tokens.mean(0)
    axes = np.linalg.svd(real_tokens - center, full_matrices=False)[2][:2]
    snapshots = sorted({N, 3 * N // 4, N // 2, N // 4, N // 10, 0}, reverse=True)
    rows, body = (
        [],
        [
            f"{n} prompts for task {task} (the shipped model's fine-tuning task) at temperature {t:g}; step k = {N} is pure noise, "
            f"k = 0 the generated prompt; {len(real)} real windows: the {'last' if last else 'random'} "
            f"{p.prompt_length}-step windows of the task's expert episodes, cut as the PLM's prompts are.\n",
            "| step k | RMS distance to the nearest real window (mean over prompts) |",
            "|---|---|",
        ],
    )
    for k in snapshots:
        x = chain[N - k].reshape(n, -1)
        dist = np.sqrt(((x[:, None, :] - real[None]) ** 2).mean(-1)).min(1)
        rows.append({"step": k, "nearest_real_rms": round(float(dist.mean()), 4)})
        body.append(f"| {k} | {dist.mean():.3f} |")
    stem = f"denoising-{suite_name}" + ("" if t == pd.settings.temperature else f"-T{t:g}")
    md = write_ablation(
        out,
        stem,
        f"Reverse denoising process (Fig. 4), {suite_name}",
        command,
        None,
        body + [f"\n![denoising]({stem}.png)"],
        rows,
    )
    plt = pyplot()
    fig, axs = plt.subplots(1, len(snapshots), figsize=(2.4 * len(snapshots), 2.7), sharex=True, sharey=True)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, K))
    ref = (real_tokens - center) @ axes.T
    for ax, k in zip(axs, snapshots):
        xy = (chain[N - k] - center) @ axes.T  # (n, K*, 2)
        for j in range(K):
            ax.scatter(xy[:, j, 0], xy[:, j, 1], s=6, color=colors[j], label=f"prompt step {j + 1}")
        ax.scatter(ref[:, 0], ref[:, 1], s=2, color="black", alpha=0.4, label="real windows")
        ax.set_title(f"k = {k}", fontsize=9)
    axs[0].legend(fontsize=6, markerscale=2)
    fig.suptitle(f"Reverse denoising of {n} prompts ({suite_name}, task {task}, temperature {t:g})", fontsize=10)
    fig.tight_layout()
    save_png(fig, out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return md
