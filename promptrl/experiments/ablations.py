"""The ablations of the Prompt Diffuser paper, each one function and one ``promptrl ablate <name> <suite>``:

- ``init`` (Table 2): prompt initialization (expert / medium / random windows) x fine-tuning data
  quality, for Prompt-Tuning DT and the Prompt Diffuser (whose generation is conditioned on the
  initial prompts' y, Algorithm 1 line 9).
- ``update-rules`` (Fig. 3): the Prompt Diffuser fine-tuned with each gradient rule (dm, dt, sum,
  projection), relative to dm.
- ``zero-shot`` (Table 9): few-shot methods against zero-shot ones that see no data of the test task
  (Prompt-DT with training-task prompts; the pre-trained generator conditioned on the target return).
- ``prompts`` (Table 6, Fig. 5): linear CKA of Prompt-Tuning DT's and the Prompt Diffuser's prompts to
  the expert windows they start from, and a t-SNE plot of the three.
- ``denoising`` (Fig. 4): the reverse process of a shipped Prompt Diffuser, plotted.
- ``prompt-length`` (Table 8): a PLM and a generator per prompt length K* (trained here, at a budget
  given on the command line), fine-tuned and evaluated like Table 1's Prompt Diffuser.
- ``plm-budget`` (not in the paper): one PLM measured at several fractions of the reference training
  budget, each with expert prompts, Prompt-Tuning DT and the Prompt Diffuser under two update rules,
  and the paper's ordering tested at each budget.
- ``generator`` (Table 5): the diffusion generator against a conditional VAE pre-trained and
  fine-tuned the same way, on each suite.
- ``temperature`` (not in the paper): the Prompt Diffuser's sampling temperature chosen on the
  validation tasks (training tasks where a suite has none), never the test tasks.

Every adaptation uses the shipped models of ``hub_models/<suite>/`` and the few-shot data of
:mod:`promptrl.experiments.reproduce`; each (setting, seed) is cached as JSON under ``<out>/runs/``, so a rerun
resumes. The grids of ``init``, ``update-rules``, ``zero-shot`` and ``prompt-length`` take an ``executor``
(``promptrl.experiments.executors``) that runs their (setting, seed, test task) units on worker
processes or a Ray cluster. Results go to ``<out>/<name>-<suite>.md`` and ``.csv`` (and ``.png``), the paper beside ours.
Plots need matplotlib and t-SNE scikit-learn (``pip install "promptrl[plots]"``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptrl.common.files import atomic_file, csv_text, write_text_atomic
from promptrl.data.datasets import create_datasets
from promptrl.data.episodes import episodes_of
from promptrl.data.windows import raw_window, whole_windows
from promptrl.evaluation import evaluate
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    FULL,
    Budget,
    Context,
    Setup,
    build_method,
    cell_path,
    fine_tuned_generator,
    finished_cell,
    fresh_method,
    hub_folder,
    run_cells,
    write_json,
)
from promptrl.experiments.tables import add_statistics, hardware, mean_and_ci, mean_std, paired_check
from promptrl.methods.diffuser import pretrain_generator
from promptrl.methods.plm import train_plm
from promptrl.nn.diffusion import UPDATE_RULES as DIFFUSION_UPDATE_RULES
from promptrl.suites import load_suite
from promptrl.tasks.spec import QUALITIES, load_spec

ABLATIONS = (
    "init",
    "update-rules",
    "zero-shot",
    "prompts",
    "denoising",
    "prompt-length",
    "plm-budget",
    "temperature",
    "generator",
)
DEFAULT_SUITES = {
    "init": "cheetah-vel",
    "update-rules": "all",
    "zero-shot": "ant-dir-ood",
    "prompts": "ant-dir-ood",
    "denoising": "cheetah-vel",
    "prompt-length": "cheetah-vel",
    "plm-budget": "cheetah-vel",
    "temperature": "cheetah-vel",
    "generator": "all",
}
"""The suite each ablation runs on by default: the paper's ("all": the Table 1 suites)."""
UPDATE_RULES = tuple(sorted(DIFFUSION_UPDATE_RULES, key=("dm", "dt", "sum", "projection").index))
"""The update rules of :data:`promptrl.nn.diffusion.UPDATE_RULES`, in the order of the paper's Fig. 3."""
DEFAULT_BUDGET = Budget(seeds=1, episodes=5, epochs=3, steps_per_epoch=100)
"""The ablations' default budget: 1 seed, 5 evaluation episodes per task, 300 fine-tuning steps."""


def _ours(r: dict[str, Any]) -> str:
    """A measured setting as "mean ± std" over its seeds."""
    return mean_std((r["mean"], r["std"]))


def _row(r: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """A CSV row of a measured setting: ``keys``, then its mean, sample std (empty for one seed) and number of seeds."""
    std = "" if r["std"] is None else round(r["std"], 2)
    return {**keys, "mean": round(r["mean"], 2), "std": std, "seeds": len(r["seeds"])}


def context(
    suite_name: str,
    budget: Budget,
    hub_root: str | Path,
    device: str,
    n_tasks: int | None,
    qualities: Sequence[str] = ("expert",),
    methods: Sequence[str] = (),
    split: str = "test",
    models: Path | None = None,
    make_datasets: bool = True,
) -> Context:
    """The shipped models of a suite (a name or a spec file's path) loaded from ``<hub_root>/<name>``, and
    the datasets of the first ``n_tasks`` tasks of ``split`` (its test tasks by default) made (unless
    ``make_datasets`` is False); ``models``: where fine-tuned generators are kept (see :class:`Context`)."""
    suite = load_suite(suite_name)
    tasks = suite.split(split)[:n_tasks] if n_tasks else suite.split(split)
    hub = hub_folder(suite.name, hub_root)
    setup = Setup(
        suite.ref, budget, hub, device, tuple(tasks), models=models, methods=tuple(methods), qualities=tuple(qualities)
    )
    return setup.context(make_datasets)


Build = Callable[[str, Context, int, int], Any]


def measure(
    ctx: Context, label: str, build: Build, runs: Path, collect: bool = False, executor: Executor | None = None
) -> dict[str, Any] | None:
    """Mean ± std over the budget's seeds of ``build``'s test return (cells cached under ``runs``).
    ``collect=True`` runs nothing: the finished seeds only, None if there are none."""
    return measure_all(ctx, {label: build}, runs, collect, executor)[label]


def measure_all(
    ctx: Context,
    builds: dict[str, Build],
    runs: Path,
    collect: bool = False,
    executor: Executor | None = None,
    table1: dict[str, str] | None = None,
    table1_runs: Path | None = None,
) -> dict[str, dict[str, Any] | None]:
    """:func:`measure` of every ``label: build`` at once: with an ``executor`` all their (seed, test task)
    units run side by side (``build`` must then pickle: a module-level function or a ``partial`` of one).
    Each measured label's row holds ``"seeds"`` (each seed's mean), ``"seed_ids"``, ``"tasks"`` (per
    seed, each task's mean) and the statistics of :func:`~promptrl.experiments.tables.add_statistics`.

    ``table1`` maps labels that compute exactly a Table 1 method (``{label: method}``) to it: where the
    context's tasks are all of the suite's test tasks, those cells are Table 1's own, in
    ``table1_runs`` (``<out>/runs/<suite>/<budget tag>`` of ``promptrl reproduce``), read when
    finished and written there when not."""
    shared = table1 if table1 and table1_runs is not None and ctx.tasks == list(ctx.suite.test_tasks) else {}
    labels, cells = [], []
    for label, build in builds.items():
        for seed in range(ctx.budget.seeds):
            labels.append(label)
            if label in shared:
                cells.append(
                    (shared[label], seed, cell_path(table1_runs, shared[label], seed, ctx.budget), build_method)
                )
            else:
                cells.append((label, seed, runs / label.replace(" ", "_") / f"seed{seed}.json", build))
    if collect:
        kept = [finished_cell(c[0], ctx, c[2]) is not None for c in cells]
        labels, cells = [x for x, k in zip(labels, kept) if k], [c for c, k in zip(cells, kept) if k]
    rows: dict[str, dict[str, Any]] = {}
    for label, (_, seed, _, _), cell in zip(
        labels, cells, run_cells(cells, ctx, executor, desc=f"{ctx.suite.name} cells")
    ):
        row = rows.setdefault(label, {"seeds": [], "seed_ids": [], "tasks": []})
        row["seeds"].append(cell["mean"])
        row["seed_ids"].append(seed)
        row["tasks"].append({t: float(np.mean(r)) for t, r in cell["returns"].items()})
    return {label: add_statistics(rows[label]) if label in rows else None for label in builds}


def _runs(out: Path, name: str, suite: str, budget: Budget, tasks: Sequence[int]) -> Path:
    """Where the cells of one ablation, suite, budget and set of test tasks are cached."""
    return out / "runs" / name / suite / budget.tag() / ("tasks-" + "-".join(map(str, tasks)))


def _save_png(fig: Any, path: Path, dpi: int) -> None:
    """Save a matplotlib figure as PNG atomically (temp file, then rename)."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _write(
    out: Path, stem: str, title: str, command: str, budget: Budget | None, body: list[str], rows: list[dict[str, Any]]
) -> Path:
    """``<stem>.md`` (header, body) and ``<stem>.csv`` (rows) under ``out``; returns the markdown path."""
    import datetime

    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    head = [
        f"# {title}\n",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Hardware: {hardware()}  ",
    ] + ([f"Budget: {json.dumps(asdict(budget))}\n"] if budget else [""])
    write_text_atomic(md, "\n".join(head + body) + "\n")
    if rows:
        write_text_atomic(out / f"{stem}.csv", csv_text(list(rows[0]), [list(r.values()) for r in rows]))
    return md


def _adapt(method: str, ctx: Context, task: int, seed: int, data: Any, prompt_data: Any = None, **settings: Any) -> Any:
    """``method`` built from the shipped models, settings overridden, adapted on ``data`` with the budget.
    A Prompt Diffuser is reseeded after training, as in Table 1, so its evaluation draws the same prompts
    in every ablation that runs it."""
    model = fresh_method(method, ctx, seed)
    model.settings = replace(model.settings, **settings)
    b = ctx.budget
    model.learn(data, epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False, prompt_data=prompt_data)
    if method.startswith("Prompt Diffuser"):
        model.set_random_seed(seed)
    return model


# ---------------------------------------------------------------------- Table 2
def _build_init(_: str, ctx: Context, task: int, seed: int, method: str, data_q: str, init_q: str) -> Any:
    """``method`` fine-tuned on ``data_q`` data of the task from ``init_q`` initial prompts."""
    fs = ctx.budget.few_shot_episodes
    data, init = ctx.suite.dataset(task, data_q, episodes=fs), ctx.suite.dataset(task, init_q, episodes=fs)
    return _adapt(method, ctx, task, seed, data, init)


def prompt_initialization(
    suite_name: str = "cheetah-vel",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    methods: Sequence[str] = ("Prompt-Tuning DT", "Prompt Diffuser"),
    collect: bool = False,
    command: str = "promptrl ablate init cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """Table 2: each method fine-tuned on data of each quality from initial prompts of each quality
    (one episode of each, ``few_shot_episodes``), evaluated on the test tasks. ``collect=True`` runs
    nothing and tabulates the finished cells ("not run" for the others); ``executor`` runs the units
    on its workers."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    ctx = context(suite_ref, budget, hub_root, device, n_tasks, qualities=QUALITIES)
    runs, ref = _runs(out, "init", suite_name, budget, ctx.tasks), paper("table2_cheetah_vel")
    rows, body = (
        [],
        [
            f"Rows: fine-tuning data quality; columns: prompt initialization. Ours mean ± std over seeds "
            f"(paper in parentheses, cheetah-vel). Test tasks {ctx.tasks}.\n"
        ],
    )
    label = "{} data-{} init-{}".format
    measured = measure_all(
        ctx,
        {
            label(method, data_q, init_q): partial(_build_init, method=method, data_q=data_q, init_q=init_q)
            for method in methods
            for data_q in QUALITIES
            for init_q in QUALITIES
        },
        runs,
        collect,
        executor,
    )
    for method in methods:
        body += [f"\n## {method}\n", "| data \\ prompt init | " + " | ".join(QUALITIES) + " |", "|---|---|---|---|"]
        for data_q in QUALITIES:
            cells = []
            for init_q in QUALITIES:
                r = measured[label(method, data_q, init_q)]
                theirs = ref[method][data_q][init_q] if suite_name == "cheetah-vel" else None
                cells.append(("not run" if r is None else _ours(r)) + f" ({mean_std(theirs)})")
                if r is not None:
                    rows.append(_row(r, method=method, data=data_q, init=init_q) | {"paper": mean_std(theirs)})
            body.append(f"| {data_q} | " + " | ".join(cells) + " |")
    return _write(
        out,
        f"init-{suite_name}",
        f"Prompt initialization x data quality (Table 2), {suite_name}",
        command,
        budget,
        body,
        rows,
    )


# ---------------------------------------------------------------------- Fig. 3
TABLE1_RULES = {"projection": "Prompt Diffuser", "dt": "Prompt Diffuser (dt)"}
"""The update rules whose fine-tuning is a Table 1 column's (the default rule, and the dt variant)."""


def _build_rule(_: str, ctx: Context, task: int, seed: int, rule: str) -> Any:
    """The Prompt Diffuser fine-tuned on the task's few-shot data with update rule ``rule``."""
    return _adapt("Prompt Diffuser", ctx, task, seed, ctx.few_shot(task), update=rule)


def update_rules(
    suites: Sequence[str],
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    command: str = "promptrl ablate update-rules",
    executor: Executor | None = None,
    table1_out: str | Path = "results",
) -> Path:
    """Fig. 3: the Prompt Diffuser fine-tuned with each update rule; change relative to dm (Eq. 18).
    ``executor`` runs the units on its workers. On all of a suite's test tasks, the projection and
    dt rules are Table 1's "Prompt Diffuser" and "Prompt Diffuser (dt)" cells of the same budget
    (in ``<table1_out>/runs``, shared: see :func:`measure_all`)."""
    out = Path(out)
    rows, body = (
        [],
        [
            "Relative change = (return - return_dm) / |return_dm|, in percent (the paper plots performance "
            f"relative to dm). Paper: {paper('fig3_update_rules')}\n",
            "| suite | test tasks | " + " | ".join(UPDATE_RULES) + " |",
            "|---|---|" + "---|" * len(UPDATE_RULES),
        ],
    )
    for suite_ref in suites:
        ctx = context(suite_ref, budget, hub_root, device, n_tasks)
        suite_name = ctx.suite.name
        runs = _runs(out, "update-rules", suite_name, budget, ctx.tasks)
        results = measure_all(
            ctx,
            {rule: partial(_build_rule, rule=rule) for rule in UPDATE_RULES},
            runs,
            False,
            executor,
            TABLE1_RULES,
            Path(table1_out) / "runs" / suite_name / budget.tag(),
        )
        base = results["dm"]["mean"]
        cells = []
        for rule, r in results.items():
            rel = 100.0 * (r["mean"] - base) / max(abs(base), 1e-8)
            cells.append(f"{_ours(r)} ({rel:+.1f}%)")
            rows.append(_row(r, suite=suite_name, rule=rule) | {"relative_to_dm_percent": round(rel, 2)})
        body.append(f"| {suite_name} | {ctx.tasks} | " + " | ".join(cells) + " |")
    stem = "update-rules-" + ("all" if len(suites) > 1 else load_spec(suites[0]).name)
    md = _write(out, stem, "Update rules of the Prompt Diffuser (Fig. 3)", command, budget, body, rows)
    _plot_update_rules(rows, out / f"{stem}.png")
    return md


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('plots need matplotlib: pip install "promptrl[plots]"') from err
    return plt


def _plot_update_rules(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(suites), 3.2))
    width = 0.8 / len(UPDATE_RULES)
    for i, rule in enumerate(UPDATE_RULES):
        vals = [
            next(r["relative_to_dm_percent"] for r in rows if r["suite"] == s and r["rule"] == rule) for s in suites
        ]
        ax.bar(np.arange(len(suites)) + (i - 1.5) * width, vals, width, label=rule)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(suites)), suites)
    ax.set_ylabel("return relative to dm (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- Table 9
def _build_as(_: str, ctx: Context, task: int, seed: int, method: str) -> Any:
    """Table 1's ``method`` (:func:`~promptrl.experiments.reproduce.build_method`) under another label."""
    return build_method(method, ctx, task, seed)


def _prompt_dt_zero(_: str, ctx: Context, task: int, seed: int) -> Any:
    """Prompt-DT with expert prompts of the training tasks the generator was pre-trained on (the same
    information as the zero-shot generator)."""
    trained = sorted(int(t) for t in fresh_method("Prompt Diffuser", ctx, seed).settings.conditions)
    return fresh_method("Prompt-DT-Expert", ctx, seed).learn(
        [ctx.suite.dataset(t) for t in trained], progress_bar=False
    )


def _diffuser_zero(_: str, ctx: Context, task: int, seed: int) -> Any:
    """The pre-trained generator, not fine-tuned, conditioned on the suite's target return."""
    pd = fresh_method("Prompt Diffuser", ctx, seed)
    pd.settings.target_rtg = float(ctx.suite.rtg_target)
    return pd


def zero_shot(
    suite_name: str = "ant-dir-ood",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    command: str = "promptrl ablate zero-shot ant-dir-ood",
    executor: Executor | None = None,
) -> Path:
    """Table 9: few-shot methods (one expert episode of the test task) against zero-shot ones: Prompt-DT
    with expert prompts of the training tasks the generator was pre-trained on, and that pre-trained
    generator (no fine-tuning) with its training-task conditions and the suite's target return as
    return-to-go. ``executor`` runs the units on its workers."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    ctx = context(suite_ref, budget, hub_root, device, n_tasks)
    runs = _runs(out, "zero-shot", suite_name, budget, ctx.tasks)
    ref = paper("table9_ant_dir_ood") if suite_name == "ant-dir-ood" else {}
    builders = {
        "Prompt-DT few-shot": partial(_build_as, method="Prompt-DT-Expert"),
        "Prompt-Tuning DT few-shot": partial(_build_as, method="Prompt-Tuning DT"),
        "Prompt Diffuser few-shot": partial(_build_as, method="Prompt Diffuser"),
        "Prompt-DT zero-shot": _prompt_dt_zero,
        "Prompt Diffuser zero-shot": _diffuser_zero,
    }
    rows, body = (
        [],
        [
            f"Test tasks {ctx.tasks}; zero-shot prompts come from the training tasks only.\n",
            "| setting | ours | paper |",
            "|---|---|---|",
        ],
    )
    with warnings.catch_warnings():  # zero-shot prompts are, by design, of tasks other than the evaluated one
        warnings.filterwarnings("ignore", message="no few-shot data of task")
        measured = measure_all(ctx, builders, runs, False, executor)
        for label in builders:
            r = measured[label]
            body.append(f"| {label} | {_ours(r)} | {mean_std(ref.get(label))} |")
            rows.append(_row(r, setting=label) | {"paper": mean_std(ref.get(label))})
    return _write(
        out, f"zero-shot-{suite_name}", f"Zero-shot vs few-shot (Table 9), {suite_name}", command, budget, body, rows
    )


# ---------------------------------------------------------------------- Table 6, Fig. 5
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
    task, runs = ctx.tasks[0], _runs(out, "prompts", suite_name, budget, ctx.tasks)
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
            pt = _adapt("Prompt-Tuning DT", ctx, task, seed, few, prompt_data=one)
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
            f"| {name} | {s:.4f} | {ref['similarity'].get(name, '—')} | {_ours(r)} | {mean_std(ref['return'].get(name))} |"
        )
        rows.append(
            {"method": name, "cka": round(s, 4), "return_mean": round(r["mean"], 2), "return_std": round(r["std"], 2)}
        )
    md = _write(
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
    plt = _pyplot()
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
    _save_png(fig, path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- Fig. 4
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
    md = _write(
        out,
        stem,
        f"Reverse denoising process (Fig. 4), {suite_name}",
        command,
        None,
        body + [f"\n![denoising]({stem}.png)"],
        rows,
    )
    plt = _pyplot()
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
    _save_png(fig, out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return md


# ---------------------------------------------------------------------- Table 8
PROMPT_LENGTHS = ("2", "5", "10", "40", "40 (larger N)")


def _build_length(_: str, ctx: Context, task: int, seed: int, gen: Path) -> Any:
    """The generator pre-trained in ``gen`` for the context's PLM, fine-tuned on the task's few-shot data."""
    from promptrl.methods.diffuser import PromptDiffuser

    pd = PromptDiffuser.from_pretrained(gen, plm=ctx.plm, device=ctx.device)
    pd.set_random_seed(seed)
    b = ctx.budget
    return pd.learn(ctx.few_shot(task), epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)


def prompt_length(
    suite_name: str = "cheetah-vel",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    device: str = "cpu",
    n_tasks: int | None = None,
    plm_steps: int = 1000,
    generator_steps: int = 2000,
    lengths: Sequence[str] = PROMPT_LENGTHS,
    larger_n: int = 200,
    plm_settings: dict[str, Any] | None = None,
    generator_settings: dict[str, Any] | None = None,
    collect: bool = False,
    command: str = "promptrl ablate prompt-length cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """Table 8: for each prompt length K*, a Prompt-DT trained with K*-step prompts (``plm_steps`` steps
    of 4 sequences per task, warm-up 500, lr 2e-4: the same budget for every length, K* = 5
    included, so the lengths compare fairly), a generator pre-trained ``generator_steps`` steps, then
    the Prompt Diffuser fine-tuned per test task and evaluated. "40 (larger N)" uses ``larger_n``
    diffusion steps instead of 100. ``plm_settings`` / ``generator_settings`` override the models'
    other settings (e.g. smaller ones). ``collect=True`` trains and runs nothing: it tabulates the
    finished lengths ("not run" for the others). ``executor`` runs each length's units on its workers
    (the models are trained here first)."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    suite = load_suite(suite_ref)
    tasks = suite.test_tasks[:n_tasks] if n_tasks else suite.test_tasks
    create_datasets(suite, "expert", tasks=tasks, progress_bar=True)
    runs = _runs(out, "prompt-length", suite_name, budget, tasks)
    ref = paper("table8_prompt_length")
    rows, body = (
        [],
        [
            f"Every length has its own Prompt-DT ({plm_steps:,} steps, 4 sequences per task) and generator "
            f"({generator_steps:,} L_DM steps), then Table 1's per-task fine-tuning. Test tasks {list(tasks)}. "
            f"Paper: {ref['_note']}\n",
            "| prompt length | N | ours | paper |",
            "|---|---|---|---|",
        ],
    )
    for label in lengths:
        k, n_steps = int(label.split()[0]), (larger_n if "larger" in label else 100)
        models = runs / "models" / f"K{k}-plm{plm_steps}"
        gen = models / f"generator-N{n_steps}-steps{generator_steps}"
        label_k = f"K{k}-N{n_steps}-plm{plm_steps}-gen{generator_steps}"
        theirs = ref.get(label) if suite_name == "cheetah-vel" else None
        if collect and not (runs / label_k).is_dir():
            body.append(f"| {label} | {n_steps} | not run | {mean_std(theirs)} |")
            continue
        hyper = {
            "batch_per_task": 4,
            "warmup_steps": 500,
            "learning_rate": 2e-4,
            **(plm_settings or {}),
            "prompt_length": k,
        }
        plm = train_plm(suite_ref, models / "plm", plm_steps, device=device, checkpoint_steps=250, **hyper)
        pretrain_generator(
            plm,
            suite.datasets("train", "expert"),
            gen,
            generator_steps,
            save_steps=generator_steps,
            **{**(generator_settings or {}), "n_steps": n_steps},
        )
        setup = Setup(
            load_spec(suite_ref).ref,
            budget,
            gen,
            device,
            tuple(tasks),
            qualities=("expert",),
            plm=models / "plm" / "final",
        )
        ctx = Context(suite, budget, gen, device, list(tasks), plm=plm, setup=setup)
        r = measure(ctx, label_k, partial(_build_length, gen=gen), runs, collect, executor)
        if r is None:
            body.append(f"| {label} | {n_steps} | not run | {mean_std(theirs)} |")
            continue
        body.append(f"| {label} | {n_steps} | {_ours(r)} | {mean_std(theirs)} |")
        rows.append(_row(r, prompt_length=k, n_steps=n_steps) | {"paper": mean_std(theirs)})
    return _write(
        out, f"prompt-length-{suite_name}", f"Prompt length (Table 8), {suite_name}", command, budget, body, rows
    )


# ---------------------------------------------------------------------- the PLM's budget
REFERENCE_PLM_STEPS = 50_000
"""The reference PLM budget (Prompt-DT's): 50,000 steps of 16 sequences per task."""
REFERENCE_BATCH_PER_TASK = 16
PLM_BUDGET_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Fractions of :data:`REFERENCE_PLM_STEPS` the ``plm-budget`` ablation measures by default."""
PLM_BUDGET_COLUMNS: dict[str, Build] = {
    "Prompt-DT-Expert": build_method,
    "Prompt-Tuning DT": build_method,
    "Prompt Diffuser (projection)": partial(_build_rule, rule="projection"),
    "Prompt Diffuser (dt)": partial(_build_rule, rule="dt"),
}
"""The columns measured with each PLM, and how each adapts (Table 1's adaptation at the ablation's budget)."""
PLM_BUDGET_CHECKS = (
    ("Prompt Diffuser (projection)", "Prompt-Tuning DT"),
    ("Prompt Diffuser (dt)", "Prompt-Tuning DT"),
    ("Prompt-Tuning DT", "Prompt-DT-Expert"),
)
"""The paper's ordering, checked per PLM: Prompt Diffuser (each update rule) ≥ Prompt-Tuning DT ≥ expert prompts."""


PLM_BUDGET_ADAPTATION = Budget(seeds=1, episodes=10, epochs=20, steps_per_epoch=100)
"""The ``plm-budget`` ablation's default budget: Table 4's fine-tuning (2,000 steps), 10 episodes, 1 seed."""


def _build_column(label: str, ctx: Context, task: int, seed: int) -> Any:
    """The column of cell ``label`` (``"<PLM steps> <column>"``) adapted to one test task."""
    column = label.split(" ", 1)[1]
    return PLM_BUDGET_COLUMNS[column](column, ctx, task, seed)


def plm_budget(
    suite_name: str = "cheetah-vel",
    budget: Budget = PLM_BUDGET_ADAPTATION,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    fractions: Sequence[float] = PLM_BUDGET_FRACTIONS,
    batch_per_task: int = REFERENCE_BATCH_PER_TASK,
    collect: bool = False,
    command: str = "promptrl ablate plm-budget cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """Does the paper's ordering (Prompt Diffuser ≥ Prompt-Tuning DT ≥ expert prompts) appear as the
    PLM's training budget grows, and with which update rule?

    One Prompt-DT is trained with the recipe of the suite's shipped PLM (architecture, learning rate,
    warm-up, prompt window) at ``batch_per_task`` sequences per task, and measured at each fraction of
    :data:`REFERENCE_PLM_STEPS` steps: its learning rate is constant after warm-up, so the run to a
    larger budget passes through the smaller ones, and each budget is a saved copy of it
    (``<runs>/models/plm-<steps>``; training resumes after a kill). With each PLM, every column of
    :data:`PLM_BUDGET_COLUMNS` adapts per test task as in Table 1, at ``budget`` (Table 4's fine-tuning
    budget by default); both Prompt Diffusers fine-tune the suite's shipped pre-trained generator,
    which was pre-trained with L_DM alone and so never saw a PLM. Nothing is selected: each budget
    takes its PLM at exactly that step, each adaptation its last step, the generator its default
    temperature. Each check of :data:`PLM_BUDGET_CHECKS` is the paired test of Table 1's ordering
    checks over the (seed, test task) units. ``collect=True`` trains and runs nothing: it tabulates the
    finished cells ("not run" for the others)."""
    from promptrl.experiments.reproduce import _recipe
    from promptrl.methods.plm import PromptDTSettings

    steps_list = sorted({max(1, round(f * REFERENCE_PLM_STEPS)) for f in fractions})
    if not steps_list or any(not 0 < f <= 10 for f in fractions):
        raise ValueError(
            f"fractions must be numbers in (0, 10] of {REFERENCE_PLM_STEPS:,} steps, got {list(fractions)}"
        )
    suite_ref, suite_name = suite_name, load_spec(suite_name).name
    out = Path(out)
    suite = load_suite(suite_ref)
    tasks = suite.test_tasks[:n_tasks] if n_tasks else suite.test_tasks
    hub = hub_folder(suite_name, hub_root)
    config = json.loads((hub / "plm" / "config.json").read_text())
    hyper = {**_recipe(config, PromptDTSettings), "batch_per_task": batch_per_task}
    runs = _runs(out, "plm-budget", suite_name, budget, tasks) / f"batch{batch_per_task}"
    head = (
        f"One Prompt-DT trained with the recipe of `{suite_name}`'s shipped PLM at {batch_per_task} sequences per "
        f"task (the reference: {REFERENCE_PLM_STEPS:,} steps of {REFERENCE_BATCH_PER_TASK}), measured at each budget; "
        f"with it, each column adapts per test task {list(tasks)} as in Table 1 ({budget.epochs} x "
        f"{budget.steps_per_epoch} steps on {budget.few_shot_episodes} expert episode(s), {budget.episodes} "
        f"evaluation episodes per task, {budget.seeds} seed(s)). Cells: mean [95% CI over seeds x test tasks]. "
        "Checks: the paired test of Table 1's ordering checks. Nothing is selected (no checkpoint, temperature or "
        "rule choice), so no number here reads a split to make a choice.\n"
    )
    columns = list(PLM_BUDGET_COLUMNS)
    body = [
        head,
        "| PLM steps | % of reference | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    checks = ["", "| PLM steps | " + " | ".join(f"{a} ≥ {b}" for a, b in PLM_BUDGET_CHECKS) + " |"]
    checks.append("|---|" + "---|" * len(PLM_BUDGET_CHECKS))
    rows: list[dict[str, Any]] = []
    if not collect:
        create_datasets(suite, "expert", tasks=tasks, progress_bar=True)
    for steps in steps_list:
        share = 100.0 * steps * batch_per_task / (REFERENCE_PLM_STEPS * REFERENCE_BATCH_PER_TASK)
        plm_folder = runs / "models" / f"plm-{steps}"
        if collect and not plm_folder.is_dir():
            body.append(f"| {steps:,} | {share:.1f}% | " + " | ".join(["not run"] * len(columns)) + " |")
            checks.append(f"| {steps:,} | " + " | ".join(["not run"] * len(PLM_BUDGET_CHECKS)) + " |")
            continue
        if not (plm_folder / "config.json").is_file():
            plm = train_plm(suite_ref, runs / "models" / "plm-run", steps, device=device, checkpoint_steps=500, **hyper)
            plm.save_pretrained(plm_folder)
        setup = Setup(suite.ref, budget, hub, device, tuple(tasks), qualities=("expert",), plm=plm_folder)
        ctx = setup.context(make_datasets=False)
        measured = measure_all(ctx, {f"{steps} {c}": _build_column for c in columns}, runs, collect, executor)
        summary = {c: measured[f"{steps} {c}"] for c in columns if measured[f"{steps} {c}"] is not None}
        text = []
        for c in columns:
            if c not in summary:
                text.append("not run")
                continue
            r = summary[c]
            text.append(mean_and_ci(r))
            rows.append(
                {
                    "plm_steps": steps,
                    "column": c,
                    "mean": round(r["mean"], 2),
                    "std": "" if r["std"] is None else round(r["std"], 2),
                }
                | {
                    "ci_low": "" if r["ci"] is None else round(r["ci"][0], 2),
                    "ci_high": "" if r["ci"] is None else round(r["ci"][1], 2),
                }
                | {"seeds": len(r["seeds"])}
            )
        body.append(f"| {steps:,} | {share:.1f}% | " + " | ".join(text) + " |")
        verdicts = [
            paired_check(summary, a, b) if a in summary and b in summary else "not run" for a, b in PLM_BUDGET_CHECKS
        ]
        checks.append(f"| {steps:,} | " + " | ".join(verdicts) + " |")
    return _write(
        out,
        f"plm-budget-{suite_name}",
        f"The PLM's training budget and the paper's ordering, {suite_name}",
        command,
        budget,
        body + checks,
        rows,
    )


# ---------------------------------------------------------------------- the sampling temperature
TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The sampling temperatures the ``temperature`` ablation compares by default."""


def _build_temperature(_: str, ctx: Context, task: int, seed: int, temperature: float) -> Any:
    """The Prompt Diffuser fine-tuned on the task's few-shot data as in Table 1 (once per task and
    seed: kept in ``ctx.models`` and reused by every temperature), sampling at ``temperature``."""
    pd = fine_tuned_generator("Prompt Diffuser", ctx, task, seed)
    pd.settings.temperature = temperature
    return pd


def temperature_selection(
    suite_name: str = "cheetah-vel",
    budget: Budget = PLM_BUDGET_ADAPTATION,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = 3,
    temperatures: Sequence[float] = TEMPERATURES,
    collect: bool = False,
    command: str = "promptrl ablate temperature cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """The Prompt Diffuser's sampling temperature, chosen without the test split: on the suite's
    :attr:`~promptrl.suites.TaskSuite.selection_split` (its validation tasks, else its training
    tasks; the first ``n_tasks``), the shipped pre-trained generator is fine-tuned per task as in
    Table 1 (once per task and seed) and evaluated at each temperature. The table gives each
    temperature's mean with its 95% CI over (seed, task) units and the selected one: the highest
    mean, with the paired test against each other temperature, so a choice within noise says so.
    For a suite whose test tasks are also training tasks (cheetah-dir), the selection tasks are test
    tasks too, and the table says so."""
    if not temperatures or any(not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0 for t in temperatures):
        raise ValueError(f"temperatures must be numbers in [0, 1], got {list(temperatures)}")
    suite_ref, suite_name = suite_name, load_spec(suite_name).name
    suite = load_suite(suite_ref)
    split = suite.selection_split
    tasks = suite.split(split)[:n_tasks] if n_tasks else suite.split(split)
    runs = _runs(Path(out), "temperature", suite_name, budget, tasks)
    ctx = context(
        suite_ref, budget, hub_root, device, n_tasks, split=split, models=runs / "models", make_datasets=not collect
    )
    labels = {f"T={t:g}": partial(_build_temperature, temperature=float(t)) for t in temperatures}
    measured = measure_all(ctx, labels, runs, collect, executor)
    summary = {label: r for label, r in measured.items() if r is not None}
    overlap = sorted(set(tasks) & set(suite.test_tasks))
    body = [
        f"Selection tasks: the {split} tasks {list(tasks)} ({'validation' if split == 'validation' else 'training'} "
        f"split{'' if not overlap else f'; tasks {overlap} are test tasks too, as every task of this suite is'}); "
        f"{'the test tasks are not read' if not overlap else 'no task outside the test split exists to choose on'}. "
        f"Each task's generator is fine-tuned once per seed as in Table 1 ({budget.epochs} x {budget.steps_per_epoch} "
        f"steps on {budget.few_shot_episodes} expert episode(s)) and evaluated at every temperature "
        f"({budget.episodes} episodes per task, {budget.seeds} seed(s)).\n",
        "| temperature | mean [95% CI over seeds x tasks] | per task (first seed) |",
        "|---|---|---|",
    ]
    rows: list[dict[str, Any]] = []
    for label in labels:
        if label not in summary:
            body.append(f"| {label} | not run | |")
            continue
        r = summary[label]
        per_task = ", ".join(f"{t}: {v:.1f}" for t, v in r["tasks"][0].items())
        body.append(f"| {label} | {mean_and_ci(r)} | {per_task} |")
        rows.append(
            {"temperature": label[2:], "mean": round(r["mean"], 2), "n": r["n"]}
            | {
                "ci_low": "" if r["ci"] is None else round(r["ci"][0], 2),
                "ci_high": "" if r["ci"] is None else round(r["ci"][1], 2),
            }
        )
    if summary:
        best = max(summary, key=lambda label: summary[label]["mean"])
        body += ["", f"**Selected: {best}** (the highest mean on the selection tasks).", ""]
        body += ["| against | paired test of the selected temperature ≥ it |", "|---|---|"]
        body += [f"| {label} | {paired_check(summary, best, label)} |" for label in summary if label != best]
    return _write(
        Path(out),
        f"temperature-{suite_name}",
        f"The sampling temperature, chosen on the {split} split, {suite_name}",
        command,
        budget,
        body,
        rows,
    )


# ---------------------------------------------------------------------- Table 5
def _build_vae(_: str, ctx: Context, task: int, seed: int, pretrained: Path) -> Any:
    """The VAE generator pre-trained in ``pretrained``, fine-tuned on the task's few-shot data as Table 1
    fine-tunes the Prompt Diffuser, and reseeded for evaluation as it is."""
    from promptrl.methods.baselines.vae import VAEPromptGenerator

    vae = VAEPromptGenerator.from_pretrained(pretrained, plm=ctx.plm, device=ctx.device)
    vae.set_random_seed(seed)
    b = ctx.budget
    vae.learn(ctx.few_shot(task), epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)
    vae.set_random_seed(seed)
    return vae


def generative_models(
    suites: Sequence[str],
    budget: Budget = FULL,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    table1_out: str | Path = "results",
    collect: bool = False,
    command: str = "promptrl ablate generator all",
    executor: Executor | None = None,
) -> Path:
    """Table 5: the diffusion generator (DM) against a conditional VAE in its place, everything else the
    same. Per suite, a VAE generator (:class:`~promptrl.methods.baselines.vae.VAEPromptGenerator`, the
    width and depth of the shipped noise network) is pre-trained on the training tasks exactly as the
    shipped diffusion generator was (:data:`~promptrl.methods.diffuser.PRETRAIN_RECIPE`, the same
    number of steps) and saved with the shipped generator's fine-tuning settings; then both fine-tune
    per test task as in Table 1 and are evaluated. The DM row is Table 1's Prompt Diffuser: on all
    test tasks its cells are those of ``<table1_out>/runs`` (shared: a finished Table 1 cell is
    reused, a new one completes Table 1 too). Each suite's "DM ≥ VAE" is the paired test of Table 1's
    ordering checks. ``collect=True`` trains and runs nothing."""
    from promptrl.experiments.reproduce import NOT_RECIPE
    from promptrl.methods.baselines.vae import VAEPromptGenerator, VAESettings
    from promptrl.methods.diffuser import PRETRAIN_RECIPE

    out = Path(out)
    ref = paper("table5_generator")
    body = [
        f"DM: Table 1's Prompt Diffuser; VAE: a conditional VAE pre-trained and fine-tuned the same way "
        f"({budget.epochs} x {budget.steps_per_epoch} fine-tuning steps on {budget.few_shot_episodes} expert "
        f"episode(s), {budget.episodes} evaluation episodes per task, {budget.seeds} seed(s)). Cells: mean [95% CI "
        "over seeds x test tasks] (paper: mean ± std over seeds).\n",
        "| suite | test tasks | DM | VAE | DM ≥ VAE | paper DM | paper VAE |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[dict[str, Any]] = []
    for suite_ref in suites:
        ctx = context(
            suite_ref, budget, hub_root, device, n_tasks, methods=("Prompt Diffuser",), make_datasets=not collect
        )
        suite_name = ctx.suite.name
        shipped = json.loads((ctx.hub / "pretrained" / "config.json").read_text())
        steps = int(shipped["steps_trained"])
        runs = _runs(out, "generator", suite_name, budget, ctx.tasks)
        vae_folder = runs / "models" / f"vae-pretrained-{steps}"
        if not collect:
            create_datasets(ctx.suite, "expert", tasks=ctx.suite.train_tasks, progress_bar=True)  # seeded, idempotent
            settings = {
                k: v for k, v in shipped.items() if k in {f.name for f in fields(VAESettings)} and k not in NOT_RECIPE
            }
            pretrain_generator(
                ctx.plm,
                ctx.suite.datasets("train", "expert"),
                vae_folder,
                steps,
                recipe=PRETRAIN_RECIPE,
                save_steps=1000,
                generator_class=VAEPromptGenerator,
                **settings,
            )
        vae = f"VAE-pretrained-{steps}"
        builds = {"Prompt Diffuser": build_method, vae: partial(_build_vae, pretrained=vae_folder)}
        table1 = Path(table1_out) / "runs" / suite_name / budget.tag()
        measured = measure_all(ctx, builds, runs, collect, executor, {"Prompt Diffuser": "Prompt Diffuser"}, table1)
        summary = {key: measured[label] for key, label in (("DM", "Prompt Diffuser"), ("VAE", vae)) if measured[label]}
        text = {}
        for key in ("DM", "VAE"):
            if key not in summary:
                text[key] = "not run"
                continue
            r = summary[key]
            text[key] = mean_and_ci(r)
            rows.append(
                {"suite": suite_name, "generator": key, "mean": round(r["mean"], 2), "n": r["n"]}
                | {"seeds": len(r["seeds"]), "paper": mean_std(ref[key].get(suite_name))}
            )
        check = paired_check(summary, "DM", "VAE") if len(summary) == 2 else "not run"
        body.append(
            f"| {suite_name} | {ctx.tasks} | {text['DM']} | {text['VAE']} | {check} | "
            f"{mean_std(ref['DM'].get(suite_name))} | {mean_std(ref['VAE'].get(suite_name))} |"
        )
    stem = "generator-" + ("all" if len(suites) > 1 else load_spec(suites[0]).name)
    return _write(out, stem, "Diffusion vs VAE prompt generator (Table 5)", command, budget, body, rows)
