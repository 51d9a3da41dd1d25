"""The experiment grid on worker processes and on Ray: the same cells, files and tables as a run in
this process, finished cells not run again, a dead worker's unit run again; and evaluation split
into parts of its work list, merged by key."""

import json
import os
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_hub

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before anything imports Ray: no usage reports

import promptrl
from promptrl.evaluation import episode_plan, evaluate, merge_results
from promptrl.experiments.executors import LocalPool, RayExecutor, make_executor
from promptrl.experiments.reproduce import (
    Budget,
    Setup,
    build_method,
    cell_path,
    hub_folder,
    reproduce_suite,
    run_cells,
    suite_table,
    tasks_path,
)

BUDGET = Budget(seeds=2, episodes=2, few_shot_episodes=1, epochs=1, steps_per_epoch=2, full_epochs=1)
METHODS = ["Prompt-DT-Expert", "Soft Prompt", "Prompt Diffuser"]
TASKS = [6, 9]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One Minari folder and one tiny hub for the module: Ray's workers start once, with this environment."""
    root = tmp_path_factory.mktemp("executors")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root / "minari")
    (root / "minari").mkdir()
    hub = make_tiny_hub(root / "hub", "mw-reach", TASKS)
    yield root, hub
    if previous is None:
        del os.environ["MINARI_DATASETS_PATH"]
    else:
        os.environ["MINARI_DATASETS_PATH"] = previous


@pytest.fixture
def minari_root(shared, monkeypatch):
    """Overrides conftest's per-test Minari folder with the module's (the workers see that one)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", os.environ["MINARI_DATASETS_PATH"])
    return Path(os.environ["MINARI_DATASETS_PATH"])


@pytest.fixture(scope="module")
def reference(shared):
    """The grid run in this process with one torch thread, as the workers run it."""
    root, hub = shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = reproduce_suite("mw-reach", BUDGET, METHODS, root / "inprocess", hub, tasks=TASKS)
    finally:
        torch.set_num_threads(threads)
    return summary, root / "inprocess"


@pytest.fixture(scope="module")
def ray_session(shared):
    """One local Ray instance for the module: 2 CPUs, loopback only, no dashboard, no usage reports."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    yield ray
    ray.shutdown()


def _runs(out: Path) -> Path:
    return out / "runs" / "mw-reach" / BUDGET.tag()


def _cells(out: Path) -> dict[str, dict]:
    """Every finished cell under ``out`` without what depends on when and where it ran."""
    drop = ("seconds", "finished", "hardware")
    return {
        str(p.relative_to(out)): {k: v for k, v in json.loads(p.read_text()).items() if k not in drop}
        for p in sorted(_runs(out).rglob("seed*.json"))
        if not p.name.endswith("-tasks.json")
    }


def _assert_same_grid(summary, out, reference):
    ref_summary, ref_out = reference
    assert {m: r["seeds"] for m, r in summary.items()} == {m: r["seeds"] for m, r in ref_summary.items()}
    assert suite_table("mw-reach", summary) == suite_table("mw-reach", ref_summary)
    assert _cells(out) == _cells(ref_out) and len(_cells(out)) == len(METHODS) * BUDGET.seeds
    assert not list(_runs(out).rglob("*-tasks.json"))


def _logged(name, ctx, task, seed, log: str):
    """``build_method``, leaving a file per (method, seed, task) it built in ``log``."""
    Path(log, f"{name}-{seed}-{task}".replace(" ", "_")).touch()
    return build_method(name, ctx, task, seed)


def _dies_once(name, ctx, task, seed, marker: str):
    """``build_method``, but the first call anywhere kills its process (the marker file remembers it)."""
    if not Path(marker).exists():
        Path(marker).write_text(f"{name} seed {seed} task {task}")
        os._exit(1)
    return build_method(name, ctx, task, seed)


def _grid(out: Path, hub: Path, build, executor):
    """The module's grid with ``build`` through :func:`run_cells`, then tabulated from its files."""
    models = out / "models" / "mw-reach" / BUDGET.adaptation_tag()
    setup = Setup("mw-reach", BUDGET, hub_folder("mw-reach", hub), "cpu", tuple(TASKS), models, tuple(METHODS))
    ctx = setup.context()
    cells = [(m, s, cell_path(_runs(out), m, s, BUDGET), build) for m in METHODS for s in range(BUDGET.seeds)]
    run_cells(cells, ctx, executor)
    return reproduce_suite("mw-reach", BUDGET, METHODS, out, hub, tasks=TASKS, collect=True)


def test_local_workers_equal_in_process(shared, reference, tmp_path):
    _, hub = shared
    with LocalPool(workers=2) as pool:
        summary = reproduce_suite("mw-reach", BUDGET, METHODS, tmp_path, hub, tasks=TASKS, executor=pool)
    _assert_same_grid(summary, tmp_path, reference)


def test_a_dead_local_worker_is_replaced_and_its_unit_runs_again(shared, reference, tmp_path):
    _, hub = shared
    marker = tmp_path / "died"
    with LocalPool(workers=2) as pool:
        summary = _grid(tmp_path, hub, partial(_dies_once, marker=str(marker)), pool)
    assert marker.is_file()
    _assert_same_grid(summary, tmp_path, reference)


def test_ray_grid_equals_in_process_and_skips_finished_work(ray_session, shared, reference, tmp_path):
    _, hub = shared
    ref_runs = _runs(reference[1])
    # One cell finished, one with task 6 done: neither is measured again.
    finished = cell_path(_runs(tmp_path), "Soft Prompt", 1, BUDGET)
    finished.parent.mkdir(parents=True)
    finished.write_bytes(cell_path(ref_runs, "Soft Prompt", 1, BUDGET).read_bytes())
    half = cell_path(_runs(tmp_path), "Prompt Diffuser", 0, BUDGET)
    half.parent.mkdir(parents=True)
    cell = json.loads(cell_path(ref_runs, "Prompt Diffuser", 0, BUDGET).read_text())
    tasks_path(half).write_text(
        json.dumps(
            {"models": cell["models"], "tasks": {"6": {"returns": cell["returns"]["6"], "adapt": 0, "evaluate": 0}}}
        )
    )
    log = tmp_path / "built"
    log.mkdir()
    summary = _grid(tmp_path, hub, partial(_logged, log=str(log)), RayExecutor())
    _assert_same_grid(summary, tmp_path, reference)
    built = {p.name for p in log.iterdir()}
    assert len(built) == len(METHODS) * BUDGET.seeds * len(TASKS) - 3
    assert not {"Soft_Prompt-1-6", "Soft_Prompt-1-9", "Prompt_Diffuser-0-6"} & built


def test_a_killed_ray_worker_is_retried_and_the_table_is_complete(ray_session, shared, reference, tmp_path):
    _, hub = shared
    marker = tmp_path / "died"
    summary = _grid(tmp_path, hub, partial(_dies_once, marker=str(marker)), RayExecutor(max_retries=2))
    assert marker.is_file()
    _assert_same_grid(summary, tmp_path, reference)


def test_cli_runs_the_grid_on_local_workers(shared, reference, tmp_path, capsys):
    _, hub = shared
    import promptrl.experiments.reproduce as r
    from promptrl.experiments.cli import main

    real = r.reproduce_suite
    argv = ["reproduce", "mw-reach", "--hub", str(hub), "--out", str(tmp_path), "--executor", "local", "--workers", "2"]
    argv += ["--seeds", "2", "--episodes", "2", "--few-shot-episodes", "1", "--epochs", "1", "--steps-per-epoch", "2"]
    argv += ["--full-epochs", "1", "--methods", *METHODS]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(r, "reproduce_suite", lambda *a, **k: real(*a, **k, tasks=TASKS))
        assert main(argv) == 0
    torch.set_num_threads(threads)
    assert suite_table("mw-reach", reference[0]) in capsys.readouterr().out
    assert _cells(tmp_path) == _cells(reference[1])
    assert main(["reproduce", "mw-reach", "--address", "auto"]) == 2
    assert "--address" in capsys.readouterr().err


def test_executor_arguments_are_checked():
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("threads")
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        LocalPool(workers=0)
    with pytest.raises(ValueError, match="cpus must be a number >= 0"):
        RayExecutor(cpus=-1)
    with pytest.raises(ValueError, match="must not both be 0"):
        RayExecutor(cpus=0, gpus=0)
    assert make_executor("inprocess") is None


def test_evaluation_split_into_parts_equals_one_call(shared):
    """Parts of the work list evaluated apart (a generator's prompts and fixed expert windows alike)
    and merged by key equal the whole evaluation; a missing part is an error, not a smaller result."""
    _, hub = shared
    from promptrl.methods.diffuser import PromptDiffuser

    suite = promptrl.load_suite("mw-reach")
    pd = PromptDiffuser.from_pretrained(hub / "mw-reach")
    pd.zero_shot = True  # it learned task 6 only; task 9's prompts come from task 6's conditions
    for model in (pd, pd.plm):
        kwargs = dict(n_episodes=3, seed=5, tasks=TASKS)
        pd.set_random_seed(0)
        whole = evaluate(model, suite, **kwargs)
        plan = episode_plan(suite, **kwargs)
        assert [(k.task, k.episode) for k in plan] == [(t, i) for t in TASKS for i in range(3)]
        parts = []
        for part in (plan[::2], plan[1::2]):
            pd.set_random_seed(0)  # each worker holds the model as the whole call did
            parts.append(evaluate(model, suite, **kwargs, episodes=part))
        assert merge_results(plan, parts[::-1]) == merge_results(plan, parts) == whole
        assert whole.episodes == {6: [0, 1, 2], 9: [0, 1, 2]}
        with pytest.raises(ValueError, match=r"miss these \(task, episode\)s of the plan: \[\(6, 1\)"):
            merge_results(plan, parts[:1])
    with pytest.raises(ValueError, match="episodes must be a non-empty part of episode_plan"):
        evaluate(pd, suite, n_episodes=3, tasks=TASKS, episodes=[(6, 7, 0)])
