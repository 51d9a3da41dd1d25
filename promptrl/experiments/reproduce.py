"""Table 1 of the Prompt Diffuser paper, end to end: every method on a suite's test split with the
same frozen PLM, the same few-shot data and the same evaluation.

Per suite: the test tasks' datasets are generated if missing; the shipped PLM, MT-ORL model and
pre-trained prompt generator are loaded from ``hub_models/<suite>/``; then, for every seed and test
task, each method adapts on the task's few-shot data (its first ``few_shot_episodes`` expert
episodes; Prompt-DT-FT-Full: the whole expert dataset) and is evaluated on that task. Each
(method, seed) result is written as JSON as soon as it is done, so an interrupted run resumes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from promptrl.common.files import CONFIG_NAME, csv_text, saved_steps, write_text_atomic
from promptrl.common.hub import resolve_model_path
from promptrl.data.datasets import create_datasets
from promptrl.evaluation import evaluate
from promptrl.suites import TaskSuite, load_suite

TABLE1_SUITES = ("cheetah-dir", "cheetah-vel", "ant-dir", "mw-reach")
METHODS = (
    "Prompt-DT-Random",
    "Prompt-DT-Expert",
    "MT-ORL",
    "Soft Prompt",
    "Adaptor",
    "Prompt-DT-FT",
    "Prompt-Tuning DT",
    "Prompt Diffuser",
    "Prompt-DT-FT-Full",
)
VARIANTS = ("Prompt Diffuser (dt)", "Prompt Diffuser (T=0)")
"""Methods beyond the paper's columns: the Prompt Diffuser fine-tuned with the L_DT-only rule (Eq. 19),
which measured best in our update-rule ablation, and the Prompt Diffuser sampled at temperature 0
(beta = 0 in Eq. 16; the same fine-tuned generators as "Prompt Diffuser", reused when saved)."""
TRAINED_AS = {"Prompt Diffuser (T=0)": "Prompt Diffuser"}
"""Variants that only change inference: they reuse the generators fine-tuned for the named method..."""
INFERENCE = {"Prompt Diffuser (T=0)": {"temperature": 0.0}}
"""...with these settings changed."""
PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.json"


@dataclass(frozen=True)
class Budget:
    """How much adaptation and evaluation each method gets (Table 4 defaults = the full run)."""

    seeds: int = 3
    episodes: int = 10
    """Evaluation episodes per test task."""
    few_shot_episodes: int = 1
    """Expert episodes of a test task a method may adapt on."""
    epochs: int = 20
    steps_per_epoch: int = 100
    full_epochs: int = 100
    """Epochs of Prompt-DT-FT-Full (on the whole expert dataset of the task)."""

    def tag(self) -> str:
        """Names the folder of this budget's results (seeds excluded: more seeds extend a run;
        ``full_epochs`` too: it names Prompt-DT-FT-Full's own folder, see :func:`cell_path`)."""
        return f"{self.adaptation_tag()}-episodes{self.episodes}"

    def adaptation_tag(self) -> str:
        """Names the folder of the models this budget's adaptation makes (evaluation excluded)."""
        return f"adapt{self.epochs}x{self.steps_per_epoch}-fewshot{self.few_shot_episodes}"


FULL = Budget()
QUICK = Budget(seeds=1, episodes=3, epochs=1, steps_per_epoch=25, full_epochs=2)
"""``--quick``: one seed, 3 episodes per task, 25 adaptation steps (50 for FT-Full)."""


def hub_folder(suite: str, root: str | Path = "hub_models") -> Path:
    """``<root>/<suite>``; the default root is the shipped models wherever they are installed (see
    :func:`~promptrl.common.files.resolve_model_path`)."""
    return Path(resolve_model_path(Path(root) / suite))


@dataclass
class Context:
    suite: TaskSuite
    budget: Budget
    hub: Path
    device: str
    tasks: list[int]
    """The test tasks evaluated."""
    plm: Any = None
    mt_orl: Any = None
    models: Path | None = None
    """Where fine-tuned prompt generators are kept (``<models>/<fingerprint>/<method>/seed<k>/task<t>/``, see :meth:`fingerprint`), so a rerun
    or an inference-only variant reuses them instead of fine-tuning again; None keeps nothing."""

    def load_models(self, methods: Sequence[str]) -> None:
        from promptrl.methods.plm import PromptDT

        needed = [self.hub / "plm", self.hub / "pretrained"] + ([self.hub / "mt-orl"] if "MT-ORL" in methods else [])
        missing = [p for p in needed if not (p / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{', '.join(map(str, missing))} not found: reproduce needs the shipped models of {self.suite.name!r} "
                f"(hub_models/{self.suite.name}/plm, mt-orl and pretrained; see `promptrl train plm` / `promptrl train diffuser`)"
            )
        self.plm = PromptDT.from_pretrained(self.hub / "plm", device=self.device)
        if "MT-ORL" in methods:
            self.mt_orl = PromptDT.from_pretrained(self.hub / "mt-orl", device=self.device)

    def few_shot(self, task: int) -> Any:
        return self.suite.dataset(task, "expert", episodes=self.budget.few_shot_episodes)

    def fingerprint(self, name: str) -> str:
        """A short hash of the models method ``name`` is measured with: MT-ORL's model, or else the
        PLM and the pre-trained generator in ``hub`` (weights and settings). Each cell keeps it, so
        that a rerun after a model has changed measures again instead of reusing an old result."""
        h = hashlib.sha256()
        for model in (self.mt_orl,) if name == "MT-ORL" else (self.plm,):
            if model is not None:
                settings = {k: v for k, v in asdict(model.settings).items() if k != "model_card"}
                h.update(json.dumps(settings, sort_keys=True).encode())
                for key, value in sorted(model.network.state_dict().items()):
                    h.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        if name != "MT-ORL":
            for folder in (self.hub / "pretrained", self.hub):
                if (folder / "model.safetensors").is_file():
                    h.update((folder / "model.safetensors").read_bytes())
                    break
        return h.hexdigest()[:16]


def fresh_method(name: str, ctx: Context, seed: int = 0) -> Any:
    """Method ``name`` built on the shipped models, before any adaptation."""
    from promptrl.methods import baselines
    from promptrl.methods.diffuser import PromptDiffuser

    if name == "MT-ORL":
        return baselines.MTORL(ctx.mt_orl)
    if name in ("Prompt-DT-Random", "Prompt-DT-Expert"):
        return baselines.FixedPrompt(ctx.plm, quality="random" if name.endswith("Random") else "expert", seed=seed)
    if name.startswith("Prompt Diffuser"):
        pd = PromptDiffuser.from_pretrained(ctx.hub / "pretrained", plm=ctx.plm, device=ctx.device)
        pd.set_random_seed(seed)
        if name == "Prompt Diffuser (dt)":
            pd.settings.update = "dt"
        return pd
    cls = {
        "Soft Prompt": baselines.SoftPrompt,
        "Adaptor": baselines.Adaptor,
        "Prompt-DT-FT": baselines.FineTune,
        "Prompt-DT-FT-Full": baselines.FineTune,
        "Prompt-Tuning DT": baselines.PromptTuningDT,
    }[name]
    return cls(ctx.plm, seed=seed)


def build_method(name: str, ctx: Context, task: int, seed: int) -> Any:
    """The adapted model of ``name`` for one test task (trained here where the method trains).

    The Prompt Diffuser adapts per task from the shipped pre-trained generator: fine-tuning one
    generator on all test tasks at once does not work, because its conditions (returns-to-go and
    timesteps) barely differ between e.g. cheetah-vel tasks, so it cannot tell them apart."""
    if name.startswith("Prompt Diffuser"):
        return _fine_tuned_generator(name, ctx, task, seed)
    method, b = fresh_method(name, ctx, seed), ctx.budget
    if name == "MT-ORL":
        return method
    if name in ("Prompt-DT-Random", "Prompt-DT-Expert"):  # nothing trains: learn stores the prompt windows
        return method.learn(
            ctx.suite.dataset(task, "random") if name.endswith("Random") else ctx.few_shot(task), progress_bar=False
        )
    data, epochs = (
        (ctx.suite.dataset(task, "expert"), b.full_epochs)
        if name == "Prompt-DT-FT-Full"
        else (ctx.few_shot(task), b.epochs)
    )
    return method.learn(data, epochs=epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)


def _fine_tuned_generator(name: str, ctx: Context, task: int, seed: int) -> Any:
    """A Prompt Diffuser variant fine-tuned on the task's few-shot data: loaded from ``ctx.models`` when
    saved there (by this or a run of the method it is trained as), else fine-tuned (and saved)."""
    from promptrl.methods.diffuser import PromptDiffuser

    trained_as = TRAINED_AS.get(name, name)
    folder = (
        None
        if ctx.models is None
        else (ctx.models / ctx.fingerprint(trained_as) / trained_as.replace(" ", "_") / f"seed{seed}" / f"task{task}")
    )
    if folder is not None and (folder / CONFIG_NAME).is_file():
        pd = PromptDiffuser.from_pretrained(folder, plm=ctx.plm, device=ctx.device)
    else:
        pd = fresh_method(trained_as, ctx, seed)
        pd.learn(
            ctx.few_shot(task), epochs=ctx.budget.epochs, steps_per_epoch=ctx.budget.steps_per_epoch, progress_bar=False
        )
        if folder is not None:
            pd.save_generator(folder)
    for key, value in INFERENCE.get(name, {}).items():
        setattr(pd.settings, key, value)
    pd.set_random_seed(seed)  # evaluation draws the same prompts whether the generator was loaded or trained
    return pd


Builder = Callable[[str, Context, int, int], Any]


def finished_cell(name: str, ctx: Context, path: Path) -> dict[str, Any] | None:
    """The cell saved at ``path`` if it was measured with the current models (a cell saved before
    cells kept :meth:`Context.fingerprint` counts as current), else None, with a warning when it
    was measured with other models."""
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    current = ctx.fingerprint(name)
    if cell.get("models", current) != current:
        warnings.warn(
            f"{path} was measured with other models (fingerprint {cell['models']}, now {current}): not reused",
            stacklevel=2,
        )
        return None
    return cell


def run_cell(
    name: str,
    ctx: Context,
    seed: int,
    path: Path,
    build: Builder = build_method,
    on_task: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One (method, seed): adapt (``build(name, ctx, task, seed)``) and evaluate on every test task;
    the JSON at ``path`` (returns per task, their mean, wall seconds spent adapting and evaluating,
    the hardware, the models' fingerprint) makes it resumable: a rerun reuses it while the models
    are the same.

    Each finished task is saved at once beside it (``<path stem>-tasks.json``, see
    :func:`tasks_path`), so an interrupted cell resumes at its next task: every task starts from the
    same seeds, so the resumed cell equals an uninterrupted one. The file goes once the cell is written.
    ``on_task(task)`` is called before each task is adapted (progress display)."""
    cell = finished_cell(name, ctx, path)
    if cell is not None:
        return cell
    current = ctx.fingerprint(name)
    partial_path = tasks_path(path)
    done = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    if done and done.get("models") != current:
        warnings.warn(f"{partial_path} was measured with other models: its tasks are measured again", stacklevel=2)
        done = {}
    done = {"models": current, "tasks": {t: v for t, v in done.get("tasks", {}).items() if int(t) in ctx.tasks}}
    for task in ctx.tasks:
        if str(task) in done["tasks"]:
            continue
        if on_task is not None:
            on_task(task)
        torch.manual_seed(seed)
        start = time.perf_counter()
        model = build(name, ctx, task, seed)
        adapted = time.perf_counter()
        result = evaluate(model, ctx.suite, tasks=[task], n_episodes=ctx.budget.episodes, prompt=None, seed=seed)
        done["tasks"][str(task)] = {
            "returns": result.returns[task],
            "adapt": adapted - start,
            "evaluate": time.perf_counter() - adapted,
        }
        write_json(partial_path, done)
    returns = {str(t): done["tasks"][str(t)]["returns"] for t in ctx.tasks}
    seconds = {k: round(sum(done["tasks"][str(t)][k] for t in ctx.tasks), 1) for k in ("adapt", "evaluate")}
    cell = {
        "method": name,
        "seed": seed,
        "returns": returns,
        "mean": float(np.mean([np.mean(r) for r in returns.values()])),
        "seconds": seconds,
        "hardware": hardware(),
        "models": current,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(path, cell)
    partial_path.unlink(missing_ok=True)
    return cell


def tasks_path(path: Path) -> Path:
    """Where :func:`run_cell` keeps the finished tasks of the unfinished cell ``path``."""
    return path.with_name(f"{path.stem}-tasks.json")


def cell_path(runs: Path, name: str, seed: int, budget: Budget) -> Path:
    """Where the result of (method ``name``, ``seed``) under ``budget`` is kept inside ``runs``."""
    folder = name.replace(" ", "_") + (f"-full{budget.full_epochs}" if name == "Prompt-DT-FT-Full" else "")
    return runs / folder / f"seed{seed}.json"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file, then rename)."""
    write_text_atomic(path, json.dumps(data, indent=1))


def ensure_datasets(suite: TaskSuite, tasks: Sequence[int], qualities: Sequence[str] = ("expert", "random")) -> None:
    """Create the tasks' datasets of these qualities that are missing (seeded, atomic)."""
    for quality in qualities:
        create_datasets(suite, quality, tasks=list(tasks), progress_bar=True)


def paper_table() -> dict[str, Any]:
    return json.loads(PAPER_TABLES.read_text())["table1"]


RETRAINED = "retrained"
"""Subfolder of the results folder that a ``--retrain`` run keeps to itself: its models in
``hub/<suite>/`` and its cells and tables, apart from those of the shipped models."""
NOT_RECIPE = (
    "suite",
    "obs_dim",
    "act_dim",
    "state_mean",
    "state_std",
    "steps_trained",
    "model_card",
    "seed",
    "x_min",
    "x_max",
    "conditions",
    "bf16",
)
"""Config fields of a shipped model that are outcomes of its training (or given apart), not its recipe;
``bf16`` (autocast) is a speed setting chosen per machine (see :func:`~promptrl.methods.plm.bf16_is_fast`)."""


def _recipe(config: dict[str, Any], settings_class: type) -> dict[str, Any]:
    names = {f.name for f in fields(settings_class)} - set(NOT_RECIPE)
    return {k: v for k, v in config.items() if k in names}


def retrain_models(
    suite_name: str,
    shipped: str | Path,
    folder: str | Path,
    device: str = "cpu",
    plm_steps: int | None = None,
    generator_steps: int | None = None,
    seed: int = 0,
) -> Path:
    """Train a suite's PLM, MT-ORL and pre-trained prompt generator again from its training tasks'
    expert datasets, laid out in ``folder`` as in ``hub_models/<suite>/`` (``plm/``, ``mt-orl/``,
    ``pretrained/``); returns ``folder``.

    Each follows the recipe of the shipped model in ``shipped`` (architecture, batch, learning rate,
    warm-up and step count from its ``config.json``; the generator: its settings, pre-trained with
    :data:`~promptrl.methods.diffuser.PRETRAIN_RECIPE`), with
    ``plm_steps`` / ``generator_steps`` replacing the step counts (e.g. the reference 50,000 on a
    GPU). Training checkpoints under ``folder/runs/`` and resumes after a kill; a finished model is
    not trained again (more steps continue it). The shipped folder is only read."""
    from promptrl.methods.diffuser import PRETRAIN_RECIPE, PromptDiffuserSettings, pretrain_generator
    from promptrl.methods.plm import PromptDT, PromptDTSettings, train_plm

    suite, shipped, folder = load_suite(suite_name), Path(shipped), Path(folder)
    for sub in ("plm", "mt-orl", "pretrained"):
        if not (shipped / sub / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{shipped / sub / CONFIG_NAME} not found: --retrain follows the recipes of the shipped "
                f"models of {suite_name!r} (hub_models/{suite_name}/plm, mt-orl and pretrained)"
            )
    ensure_datasets(suite, suite.train_tasks, qualities=("expert",))
    for sub in ("plm", "mt-orl"):
        config = json.loads((shipped / sub / CONFIG_NAME).read_text())
        steps = plm_steps or config["steps_trained"]
        if saved_steps(folder / sub) >= steps:
            continue
        hyper = _recipe(config, PromptDTSettings)
        print(f"retraining {suite_name} {sub}: {steps:,} steps, {hyper}")
        model = train_plm(
            suite,
            folder / "runs" / sub,
            steps,
            device=device,
            seed=seed,
            model_card=lambda m: (
                f"Retrained by `promptrl reproduce --retrain` with the recipe of the shipped model: {m.settings.steps_trained:,} "
                f"steps on the expert datasets of the {len(suite.train_tasks)} training tasks of `{suite_name}`, seed {seed}."
            ),
            **hyper,
        )
        model.save_pretrained(folder / sub)
    config = json.loads((shipped / "pretrained" / CONFIG_NAME).read_text())
    steps = generator_steps or config["steps_trained"]
    print(f"retraining the {suite_name} prompt generator: {steps:,} steps, {PRETRAIN_RECIPE}")
    pretrain_generator(
        PromptDT.from_pretrained(folder / "plm", device=device),
        suite.datasets("train", "expert"),
        folder / "pretrained",
        steps,
        seed=seed,
        model_card=lambda pd: (
            f"Pre-trained by `promptrl reproduce --retrain` ({PRETRAIN_RECIPE}): {pd.settings.steps_trained:,} "
            f"steps on the expert datasets of the training tasks of `{suite_name}`, seed {seed}."
        ),
        **_recipe(config, PromptDiffuserSettings),
    )
    return folder


def reproduce_suite(
    suite_name: str,
    budget: Budget = FULL,
    methods: Sequence[str] = METHODS,
    out: str | Path = "results",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    tasks: Sequence[int] | None = None,
    collect: bool = False,
    seed_list: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every method on one suite's test tasks (or ``tasks``); returns
    ``{method: {"seeds": [means], "seed_ids", "mean", "std", "params", "percentage"}}``.

    ``collect=True`` runs nothing: it gathers the finished cells of this budget (any seeds among
    the first ``budget.seeds``), e.g. to tabulate methods that were run with different seed counts.
    ``seed_list`` runs only these seeds (e.g. to spread seeds over processes). Each row also lists its
    cells' ``hardware`` and ``finished`` times (None where a cell predates them)."""
    unknown = [m for m in methods if m not in METHODS + VARIANTS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS + VARIANTS)}")
    suite = load_suite(suite_name)
    tasks = list(suite.test_tasks if tasks is None else [suite.check_task(t) for t in tasks])
    ctx = Context(
        suite,
        budget,
        hub_folder(suite_name, hub_root),
        device,
        tasks,
        models=Path(out) / "models" / suite_name / budget.adaptation_tag(),
    )
    if not collect:
        ensure_datasets(suite, tasks)
    ctx.load_models(methods)
    runs = Path(out) / "runs" / suite_name / budget.tag()  # a cell is reused only under the same budget
    summary: dict[str, dict[str, Any]] = {}
    cells = [(m, s) for m in methods for s in (range(budget.seeds) if seed_list is None else seed_list)]
    bar = tqdm(cells, desc=f"reproduce {suite_name}", disable=collect)
    for name, seed in bar:
        path = cell_path(runs, name, seed, budget)
        if collect and finished_cell(name, ctx, path) is None:
            continue
        cell = run_cell(
            name,
            ctx,
            seed,
            path,
            on_task=lambda task, name=name, seed=seed: bar.set_postfix_str(
                f"{name}, seed {seed}, task {task} ({ctx.tasks.index(task) + 1}/{len(ctx.tasks)})"
            ),
        )
        row = summary.setdefault(name, {"seeds": [], "seed_ids": [], "hardware": [], "finished": []})
        row["seeds"].append(cell["mean"])
        row["seed_ids"].append(seed)
        row["hardware"].append(cell.get("hardware"))
        row["finished"].append(cell.get("finished"))  # None for cells written before cells were dated
    plm_params = ctx.plm.num_parameters()
    for name, row in summary.items():
        row["mean"], row["std"] = float(np.mean(row["seeds"])), float(np.std(row["seeds"]))
        row["params"] = fresh_method(name, ctx).num_parameters()
        row["percentage"] = 100.0 * row["params"] / plm_params
    return summary


def _fmt(mean_std: Sequence[float] | None) -> str:
    return "—" if mean_std is None else f"{mean_std[0]:.1f} ± {mean_std[1]:.1f}"


def _size(n: int) -> str:
    return "—" if n == 0 else (f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.2f}K")


def suite_table(suite_name: str, summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per method, ours beside the paper's."""
    paper = paper_table()
    cols = paper["columns"]
    rows = [
        "| method | ours (mean ± std over seeds) | seeds | paper | trainable params | % of PLM |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        ref = paper[suite_name][cols.index(name)] if suite_name in paper and name in cols else None
        rows.append(
            f"| {name} | {row['mean']:.1f} ± {row['std']:.1f} | {len(row['seeds'])} | {_fmt(ref)} | "
            f"{_size(row['params'])} | {row['percentage']:.4g}% |"
        )
    return "\n".join(rows)


def _seed_note(row: dict[str, Any], seeds: int | None) -> str:
    """ " [seeds 0, 1]" when a row has fewer than ``seeds`` seeds (e.g. a run in progress), else ""."""
    ids = row.get("seed_ids", [])
    if seeds is None or len(row["seeds"]) >= seeds:
        return ""
    return (
        f" [seed{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}]"
        if ids
        else f" [{len(row['seeds'])} of {seeds} seeds]"
    )


def table1(summaries: dict[str, dict[str, dict[str, Any]]], seeds: int | None = None) -> str:
    """Markdown in the paper's Table 1 layout: suites as rows, methods as columns, ours (paper); a cell
    with fewer than ``seeds`` seeds names the ones it has ("[seeds 0, 1]")."""
    paper = paper_table()
    methods = [m for m in METHODS + VARIANTS if any(m in s for s in summaries.values())]
    head = "| suite | " + " | ".join(methods) + " |"
    rows = [head, "|" + "---|" * (len(methods) + 1)]
    for suite_name, summary in summaries.items():
        cells = []
        for m in methods:
            ours = summary.get(m)
            ref = (
                paper[suite_name][paper["columns"].index(m)] if suite_name in paper and m in paper["columns"] else None
            )
            cells.append(
                ("—" if ours is None else f"{ours['mean']:.1f} ± {ours['std']:.1f}{_seed_note(ours, seeds)}")
                + f" ({_fmt(ref)})"
            )
        rows.append(f"| {suite_name} | " + " | ".join(cells) + " |")
    # Sizes depend on the suite's spaces (one row in the paper): the range over the suites where they differ.
    rows.append("| Sizes | " + " | ".join(_span(summaries, m, "params", _size) for m in methods) + " |")
    rows.append(
        "| Percentage | " + " | ".join(_span(summaries, m, "percentage", lambda v: f"{v:.4g}%") for m in methods) + " |"
    )
    return "\n".join(rows)


def _span(summaries: dict[str, dict[str, dict[str, Any]]], method: str, key: str, fmt: Callable[[Any], str]) -> str:
    """``fmt`` of a method's ``key`` over the suites that ran it: one value, or "low–high" where they print differently."""
    values = [s[method][key] for s in summaries.values() if method in s]
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}–{high}"


ORDERING = (
    ("Prompt Diffuser", ">=", "Prompt-Tuning DT"),
    ("Prompt-Tuning DT", ">=", "Prompt-DT-Expert"),
    ("Prompt-DT-Expert", ">", "Prompt-DT-Random"),
    ("Prompt-DT-Random", ">", "MT-ORL"),
)
"""The paper's ordering of the Table 1 columns (Prompt Diffuser >= Prompt-Tuning DT >= Expert > Random > MT-ORL)..."""
GAP_BAR = 0.10
"""...and the Prompt Diffuser within 10% of Prompt-DT-FT-Full, relative to the Random -> FT-Full span."""


def _shared(summary: dict[str, dict[str, Any]], names: Sequence[str]) -> tuple[dict[str, float], str]:
    """The columns' means over the seeds they all have, and a note naming those seeds when some
    column has more (a row without ``seed_ids`` counts with its own mean)."""
    ids = [summary[m]["seed_ids"] for m in names if "seed_ids" in summary[m]]
    shared = sorted(set.intersection(*map(set, ids))) if ids else []
    if ids and not shared:
        return {}, "— (no seed in common)"
    mean = {}
    for m in names:
        row = summary[m]
        by_seed = dict(zip(row.get("seed_ids", []), row.get("seeds", [])))
        mean[m] = float(np.mean([by_seed[s] for s in shared])) if by_seed else row["mean"]
    partial = any(len(i) > len(shared) for i in ids)
    return mean, (f" [seed{'s' if len(shared) > 1 else ''} {', '.join(map(str, shared))}]" if partial else "")


def _holds(summary: dict[str, dict[str, Any]], a: str, op: str, b: str) -> str:
    mean, note = _shared(summary, [a, b])
    if not mean:
        return note
    ok = mean[a] >= mean[b] if op == ">=" else mean[a] > mean[b]
    return ("yes" if ok else f"no: {mean[a]:.1f} vs {mean[b]:.1f}") + note


def _gap(summary: dict[str, dict[str, Any]], pd: str) -> str:
    mean, note = _shared(summary, [pd, "Prompt-DT-FT-Full", "Prompt-DT-Random"])
    if not mean:
        return note
    span = mean["Prompt-DT-FT-Full"] - mean["Prompt-DT-Random"]
    if span <= 0:
        return "— (FT-Full not above Random)" + note
    gap = (mean["Prompt-DT-FT-Full"] - mean[pd]) / span
    return ("yes: ahead of FT-Full" if gap <= 0 else (f"yes: {gap:.1%}" if gap <= GAP_BAR else f"no: {gap:.1%}")) + note


def ordering_checks(summaries: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: the paper's ordering (:data:`ORDERING`, :data:`GAP_BAR`) checked on each suite's means
    over the seeds the compared columns share ("[seeds ...]" where a column has more; "—" where a
    column was not run); the Prompt Diffuser's variants in parentheses."""
    head = [f"{a} {op} {b}" for a, op, b in ORDERING] + [f"Prompt Diffuser within {GAP_BAR:.0%} of FT-Full"]
    rows = ["| suite | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for suite_name, summary in summaries.items():
        pds = [m for m in ("Prompt Diffuser", *VARIANTS) if m in summary]

        def cell(check: Callable[[str], str], needs: Sequence[str]) -> str:
            if not pds or any(m not in summary for m in needs):
                return "—"
            extra = [f"{m.removeprefix('Prompt Diffuser ').strip('()')}: {check(m)}" for m in pds[1:]]
            return check(pds[0]) + (f" ({'; '.join(extra)})" if extra else "")

        cells = []
        for a, op, b in ORDERING:
            if a == "Prompt Diffuser":
                cells.append(cell(lambda pd, op=op, b=b: _holds(summary, pd, op, b), [b]))
            else:
                cells.append(_holds(summary, a, op, b) if a in summary and b in summary else "—")
        cells.append(cell(lambda pd: _gap(summary, pd), ["Prompt-DT-FT-Full", "Prompt-DT-Random"]))
        rows.append(f"| {suite_name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def record_in_card(
    folder: str | Path, suite_name: str, summary: dict[str, dict[str, Any]], budget: Budget, command: str
) -> Path:
    """Write a run's table for one suite (ours beside the paper's) into the model card of the Prompt
    Diffuser folder ``folder`` (e.g. ``hub_models/<suite>``), as its "Across the test split"
    section; the rest of the card stays. Returns the card's path."""
    from promptrl.methods.diffuser import PromptDiffuser

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder / CONFIG_NAME} not found: record writes into the model card of a Prompt Diffuser "
            f"folder (hub_models/<suite>, with plm/ inside)"
        )
    pd = PromptDiffuser.from_pretrained(folder)
    pretrained = (
        json.loads((folder / "pretrained" / CONFIG_NAME).read_text())
        if (folder / "pretrained" / CONFIG_NAME).is_file()
        else {}
    )
    text = (
        f"Command: `{command}` ({measured_hardware({suite_name: summary})})."
        + (
            " `--collect` tabulates the cells that runs of the same command without it made (e.g. one process per "
            "seed with `--seed-list`)."
            if "--collect" in command.split()
            else ""
        )
        + f" Every method adapts per test task on its first {budget.few_shot_episodes} expert episode(s) for "
        f"{budget.epochs} x {budget.steps_per_epoch} steps (the Prompt Diffuser from this folder's `pretrained/` "
        f"generator, one generator per task, sampling at its temperature {pretrained.get('temperature', '—')}; the "
        f"(T=0) row at 0) and is evaluated for {budget.episodes} episodes per task; mean ± std over seeds of the mean "
        f"test-split return.\n\n" + suite_table(suite_name, summary)
    )
    pd.settings.model_card = {**(pd.settings.model_card or {}), "test_split": text}
    pd.save_pretrained(folder)
    return folder / "README.md"


def _per_cell(summaries: dict[str, dict[str, dict[str, Any]]], key: str, default: list) -> list:
    """Every row's per-cell list ``key`` (``default`` for a row without it), in one list."""
    return [value for summary in summaries.values() for row in summary.values() for value in row.get(key, default)]


def measured_dates(summaries: dict[str, dict[str, dict[str, Any]]]) -> str:
    """When the tabulated cells were measured: today, and the span of the cells' finish dates when
    they were measured earlier (a ``--collect`` of cells from several runs) or some are undated.
    Dates are UTC, as the cells' ``finished`` times are."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    finished = _per_cell(summaries, "finished", [None])
    dates = sorted(f[:10] for f in finished if f)
    undated = len(finished) - len(dates)
    if not undated and set(dates) <= {today}:
        return today
    parts = [f"{undated} undated cell(s)"] if undated else []
    if dates:
        parts.insert(0, f"cells finished {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""))
    return f"{today} (tabulated; " + ", ".join(parts) + ")"


def measured_hardware(summaries: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The machines the tabulated cells were measured on (this one when the cells do not say)."""
    return "; ".join(dict.fromkeys(h for h in _per_cell(summaries, "hardware", []) if h)) or hardware()


def hardware() -> str:
    """The machine a result was measured on, in words (processor, torch threads, GPU)."""
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, " + (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    )


def write_results(
    summaries: dict[str, dict[str, dict[str, Any]]], out: str | Path, command: str, budget: Budget
) -> Path:
    """Write ``table1.md`` and ``table1.csv`` under ``out`` (``table1-<suite>[_<suite>...]`` when the
    run leaves out a Table 1 suite, so that a one-suite run never replaces the whole table, and
    ``..._<budget tag>`` for a budget other than the full or the quick one, so that a run at another
    budget never replaces the full run's table); returns the markdown path."""
    out = Path(out)
    name = "table1" if set(TABLE1_SUITES) <= set(summaries) else "table1-" + "_".join(summaries)
    if budget.tag() not in (FULL.tag(), QUICK.tag()):
        name += f"_{budget.tag()}"
    out.mkdir(parents=True, exist_ok=True)
    text = [
        "# Table 1 (measured)\n",
        f"Command: `{command}`  ",
        f"Date: {measured_dates(summaries)}  ",
        f"Hardware: {measured_hardware(summaries)}  ",
        f"Budget: {json.dumps(asdict(budget))}\n",
        "Cells: ours, mean ± std over seeds of the mean test-split return (paper in parentheses).\n",
        table1(summaries, budget.seeds),
        "",
        "The paper's ordering, checked on the means over the seeds the compared columns share "
        '("[seeds ...]" where a column has more), for the first Prompt Diffuser column that was run '
        "(its variants in parentheses); differences smaller than the seeds' std are not measured orderings:\n",
        ordering_checks(summaries),
        "",
    ]
    for suite_name, summary in summaries.items():
        text += [f"\n## {suite_name}\n", suite_table(suite_name, summary), ""]
    md = out / f"{name}.md"
    write_text_atomic(md, "\n".join(text))
    rows = [
        [
            suite_name,
            m,
            f"{row['mean']:.2f}",
            f"{row['std']:.2f}",
            " ".join(f"{x:.2f}" for x in row["seeds"]),
            " ".join(str(k) for k in row.get("seed_ids", [])),
            row["params"],
            f"{row['percentage']:.6f}",
        ]
        for suite_name, summary in summaries.items()
        for m, row in summary.items()
    ]
    header = ["suite", "method", "mean", "std", "seeds", "seed_ids", "params", "percentage"]
    write_text_atomic(out / f"{name}.csv", csv_text(header, rows))
    return md
