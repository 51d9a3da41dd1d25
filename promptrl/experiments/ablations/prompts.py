"""Table 6 and Fig. 5: how close the learned and generated prompts are to the expert windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptrl.data.episodes import episodes_of
from promptrl.data.windows import raw_window
from promptrl.evaluation import evaluate
from promptrl.experiments.ablations.common import (
    DEFAULT_BUDGET,
    adapt,
    context,
    ours,
    pyplot,
    runs_folder,
    save_png,
    write_ablation,
)
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    Budget,
    build_method,
    finished_cell,
    write_json,
)
from promptrl.experiments.tables import mean_std
from promptrl.tasks.spec import load_spec


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019) of two (n, d) representations of the same n
    items, in [0, 1] (clipped there: rounding can put identical representations a few ulps above 1)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x and y must be (n, d) arrays with the same n >= 2, got {x.shape} and {y.shape}")
    x, y = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(np.clip(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)), 0.0, 1.0))


def prompt_features(plm: Any, prompts: Sequence[dict[str, Any]]) -> np.ndarray:
    """Prompts (raw dicts) as the PLM sees them, flattened: normalized states, actions, rtg / scale: (n, K* (obs + act + 1))."""
    p = plm.settings
    mean, std = np.asarray(p.state_mean), np.asarray(p.state_std)
    rows = []
    for d in prompts:

        def get(k: str, d: dict[str, Any] = d) -> np.ndarray:
            return np.asarray(d[k].detach().cpu() if torch.is_tensor(d[k]) else d[k], dtype=np.float64)

        rows.append(
            np.concatenate(
                [(get("states") - mean) / std, get("actions"), get("rtg").reshape(-1, 1) / p.rtg_scale], 1
            ).ravel()
        )
    return np.stack(rows)


def prompt_similarity(
    suite_name: str = "ant-dir-ood",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_prompts: int = 8,
    command: str = "promptrl ablate prompts ant-dir-ood",
) -> Path:
    """Table 6 and Fig. 5 on the suite's first test task: ``n_prompts`` expert windows, one from each
    of ``n_prompts`` distinct expert episodes of the task (cut as the PLM's ``prompt_window`` cuts
    prompts, so they differ for a last-window PLM too); Prompt-Tuning DT tuned on the few-shot data
    from each window (seed i from window i); the fine-tuned Prompt Diffuser generating one prompt per
    window's conditions. Linear CKA of each method's prompts to those windows, the test return (mean
    ± std over seeds of the evaluation) of expert prompts, the seed-0 Prompt-Tuning DT and the Prompt
    Diffuser, and a t-SNE plot. The result is cached with the models' fingerprint."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    import minari

    out = Path(out)
    ctx = context(suite_ref, budget, hub_root, device, 1)
    task, runs = ctx.tasks[0], runs_folder(out, "prompts", suite_name, budget, ctx.tasks)
    cache = runs / f"prompts-n{n_prompts}.json"
    data = finished_cell("Prompt Diffuser", ctx, cache)
    if data is None or "expert" not in data["features"]:  # not cached, or cached without the expert windows
        few, b, length = ctx.few_shot(task), ctx.budget, ctx.plm.settings.prompt_length
        expert = ctx.suite.dataset(task, "expert")
        if not isinstance(n_prompts, int) or not 2 <= n_prompts <= expert.total_episodes:
            raise ValueError(
                f"n_prompts must be an integer in [2, {expert.total_episodes}] (one prompt per expert "
                f"episode of task {task}), got {n_prompts!r}"
            )
        chosen = np.sort(np.random.default_rng(0).choice(expert.total_episodes, n_prompts, replace=False))

        def score(model: Any) -> list[float]:
            return [
                evaluate(model, ctx.suite, tasks=[task], n_episodes=b.episodes, prompt=None, seed=seed).mean
                for seed in range(b.seeds)
            ]

        pd = build_method("Prompt Diffuser", ctx, task, 0)
        starts, tuned, windows = [], [], []
        returns = {"expert": score(build_method("Prompt-DT-Expert", ctx, task, 0)), "Prompt Diffuser": score(pd)}
        for seed, index in enumerate(chosen):
            one = minari.MinariDataset(expert.storage, episode_indices=np.array([index]))
            pt = adapt("Prompt-Tuning DT", ctx, task, seed, few, prompt_data=one)
            start = pt.bank.sample(1, task, pt._generator)[0]  # the bank holds its one initial window
            starts.append(start)
            tuned.append(pt.generate_prompt(1)[0])
            windows.append(raw_window(episodes_of(one)[0], int(start["timesteps"][0]), length))
            if seed == 0:
                returns["Prompt-Tuning DT"] = score(pt)
        generated = pd.generate_prompt(len(windows), conditions=pd.encode(windows)[1])
        feats = {
            "expert": prompt_features(ctx.plm, starts),
            "Prompt Diffuser": prompt_features(ctx.plm, generated),
            "Prompt-Tuning DT": prompt_features(ctx.plm, tuned),
        }
        data = {
            "features": {k: v.tolist() for k, v in feats.items()},
            "returns": returns,
            "episodes": [int(i) for i in chosen],
            "models": ctx.fingerprint("Prompt Diffuser"),
        }
        write_json(cache, data)
    feats = {k: np.asarray(v) for k, v in data["features"].items()}
    sim = {name: linear_cka(feats["expert"], feats[name]) for name in ("Prompt-Tuning DT", "Prompt Diffuser")}
    returns = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in data["returns"].items()}
    ref = paper("table6_ant_dir_ood_cka") if suite_name == "ant-dir-ood" else {"similarity": {}, "return": {}}
    window = "last" if ctx.plm.settings.prompt_window == "last" else "a random"
    body = [
        f"Task {task}; {n_prompts} prompts per method; expert windows: {window} {ctx.plm.settings.prompt_length}-step "
        f"window of each of {n_prompts} distinct expert episodes of the task (as the PLM's prompts are cut). Prompt-Tuning "
        "DT run i starts from window i and tunes on the few-shot data; the Prompt Diffuser generates one prompt from "
        "each window's conditions (returns-to-go, timesteps). Features: the prompt as the PLM reads it (normalized "
        "states, actions, return-to-go / scale), flattened; CKA of each method's prompts to the expert windows. "
        "Test return of Prompt-Tuning DT: run 0.\n",
        "| | similarity (CKA) | paper | test return | paper |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for name in ("expert", "Prompt-Tuning DT", "Prompt Diffuser"):
        s = 1.0 if name == "expert" else sim[name]
        r = returns[name]
        body.append(
            f"| {name} | {s:.4f} | {ref['similarity'].get(name, '—')} | {ours(r)} | {mean_std(ref['return'].get(name))} |"
        )
        rows.append(
            {"method": name, "cka": round(s, 4), "return_mean": round(r["mean"], 2), "return_std": round(r["std"], 2)}
        )
    md = write_ablation(
        out,
        f"prompts-{suite_name}",
        f"Prompt similarity (Table 6) and t-SNE (Fig. 5), {suite_name}",
        command,
        budget,
        body + [f"\n![t-SNE](prompts-{suite_name}.png)"],
        rows,
    )
    _plot_tsne(feats, out / f"prompts-{suite_name}.png", f"{suite_name}, task {task}")
    return md


def _plot_tsne(groups: dict[str, np.ndarray], path: Path, title: str) -> None:
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise ImportError('the t-SNE plot needs scikit-learn: pip install "promptrl[plots]"') from err
    plt = pyplot()
    x = np.concatenate(list(groups.values()))
    xy = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=0, init="pca").fit_transform(x)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    start = 0
    for (name, g), marker in zip(groups.items(), "o^s"):
        ax.scatter(*xy[start : start + len(g)].T, label=name, marker=marker, alpha=0.8)
        start += len(g)
    ax.set_title(f"t-SNE of prompts ({title})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)
