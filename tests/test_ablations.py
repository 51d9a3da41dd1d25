"""The ablation commands on a tiny slice (one cheetah-vel test task, tiny shipped-style models), and
the pieces they add: linear CKA, conditions from other data, zero-shot returns, explicit conditions."""

import csv
import itertools
import json
import math
import shutil
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_tiny_hub
from matplotlib.image import imread

import promptrl
from promptrl.data.episodes import episodes_of
from promptrl.data.windows import whole_windows
from promptrl.experiments import ablations
from promptrl.experiments.ablations import common as ablations_common
from promptrl.experiments.cli import main
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import Budget, cell_path
from promptrl.methods.diffuser import PromptDiffuser

TINY = Budget(seeds=1, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2, full_epochs=1)


@pytest.fixture
def hub(tmp_path):
    return make_tiny_hub(tmp_path / "hub", "cheetah-vel", [2, 0], qualities=("expert", "medium", "random"))


@pytest.fixture
def evaluated(monkeypatch):
    """The tasks every ablation cell is measured on, as the ablations run them."""
    tasks = []
    real = ablations_common.run_cells

    def spy(cells, ctx, *args, **kwargs):
        tasks.extend(ctx.tasks)
        return real(cells, ctx, *args, **kwargs)

    monkeypatch.setattr(ablations_common, "run_cells", spy)
    return tasks


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _assert_png(path, min_side=200):
    """``path`` is a PNG that decodes to an image of at least ``min_side`` pixels a side with something drawn."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    image = imread(path)  # (height, width, channels), decoded in full
    assert image.shape[:2] == (height, width) and min(width, height) >= min_side, (path, image.shape)
    assert image.std() > 0.01, f"{path} is blank"


def _cells(out):
    """Every cached cell under ``out/runs`` and when it was written."""
    return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}


def test_linear_cka_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert ablations.linear_cka(x, x) == pytest.approx(1.0)
    assert ablations.linear_cka(x, 3.0 * x @ q + 2.0) == pytest.approx(1.0)  # invariant to scale, rotation, shift
    assert ablations.linear_cka(x, rng.normal(size=(50, 6))) < 0.3
    y = x[:, :3] @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(50, 4))
    gram = lambda a: (a - a.mean(0)) @ (a - a.mean(0)).T  # the n x n kernels of the definition
    k, l = gram(x), gram(y)
    assert ablations.linear_cka(x, y) == pytest.approx(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))
    with pytest.raises(ValueError, match="same n"):
        ablations.linear_cka(x, x[:10])


def test_generator_conditions_from_prompt_data_and_zero_shot(hub):
    suite = promptrl.load_suite("cheetah-vel")
    pd = PromptDiffuser.from_pretrained(
        hub / "cheetah-vel" / "pretrained", plm=promptrl.PromptDT.from_pretrained(hub / "cheetah-vel" / "plm")
    )
    expert, random = suite.dataset(2, "expert", episodes=1), suite.dataset(2, "random", episodes=1)
    pd.learn(expert, epochs=1, steps_per_epoch=1, progress_bar=False, prompt_data=random)
    length = pd.plm.settings.prompt_length
    rng = np.random.default_rng(pd.settings.seed)
    last = pd.plm.settings.prompt_window == "last"
    want = pd.encode(whole_windows(episodes_of(random), length, pd.settings.max_conditions, rng, last))[1]
    assert np.allclose(pd.settings.conditions["2"], want.numpy(), atol=1e-5)  # y(tau*_initial) of the random data
    # The conditions do not enter training: fine-tuned on the expert data alone, then conditioned on the
    # random data, the generator is the same and draws the same prompts.
    same = PromptDiffuser.from_pretrained(hub / "cheetah-vel" / "pretrained", plm=pd.plm)
    same.learn(expert, epochs=1, steps_per_epoch=1, progress_bar=False)
    assert same.settings.conditions != pd.settings.conditions
    same.condition_on(random)
    assert same.settings.conditions == pd.settings.conditions
    pd.set_random_seed(3), same.set_random_seed(3)
    for a, b in zip(pd.generate_prompt(4, task=2), same.generate_prompt(4, task=2)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(RuntimeError, match="call learn"):
        PromptDiffuser(pd.plm).condition_on(random)

    pd.settings.target_rtg = 123.0
    prompts = pd.generate_prompt(3, task=2)
    assert all(torch.allclose(p["rtg"], torch.full_like(p["rtg"], 123.0)) for p in prompts)
    chain = pd.denoising_chain(2, task=2)
    assert chain.shape == (pd.settings.n_steps + 1, 2, length, pd.token_dim)
    y = pd.encode(whole_windows(episodes_of(expert), length)[:2])[1]
    pd.settings.target_rtg = None
    given = pd.generate_prompt(2, conditions=y)
    assert torch.allclose(given[1]["rtg"].flatten(), y[1, :length] * pd.plm.settings.rtg_scale)
    with pytest.raises(ValueError, match="conditions must have shape"):
        pd.generate_prompt(3, conditions=y)
    with pytest.raises(ValueError, match="target_rtg"):
        PromptDiffuser(pd.plm, target_rtg=math.nan)


def test_every_ablation_runs_writes_tables_and_resumes(hub, tmp_path):
    out = tmp_path / "ablations"
    md = ablations.prompt_initialization("cheetah-vel", TINY, out, hub, n_tasks=1, table1_out=tmp_path / "results")
    rows = _csv(out / "init-cheetah-vel.csv")
    methods, qualities = ("Prompt-Tuning DT", "Prompt Diffuser"), ("expert", "medium", "random")
    assert [(r["method"], r["data"], r["init"]) for r in rows] == list(itertools.product(methods, qualities, qualities))
    ref = paper("table2_cheetah_vel")
    for r in rows:  # one seed: std 0; the paper's cell beside ours
        assert math.isfinite(float(r["mean"])) and r["std"] == "" and r["seeds"] == "1", r  # one seed: no std
        mean, std = ref[r["method"]][r["data"]][r["init"]]
        assert r["paper"] == f"{mean:.1f} ± {std:.1f}", r
    text = md.read_text()
    assert "(-32.6 ± 1.3)" in text and "Test tasks [2]" in text
    # The Prompt Diffuser is fine-tuned once per data quality, not once per (data, initialization) cell.
    generators = [p.parent.parts for p in (out / "runs").rglob("models/**/config.json")]
    kept = sorted("/".join(parts[parts.index("Prompt_Diffuser") :]) for parts in generators)
    assert kept == [f"Prompt_Diffuser/{data}seed0/task2" for data in ("data-medium/", "data-random/", "")], kept
    # A finished cell is read back, not redone.
    cell = (
        out
        / "runs"
        / "init"
        / "cheetah-vel"
        / TINY.tag()
        / "tasks-2"
        / "Prompt_Diffuser_data-random_init-expert"
        / "seed0.json"
    )
    data = json.loads(cell.read_text())
    data["mean"] = 777.0
    cell.write_text(json.dumps(data))
    ablations.prompt_initialization("cheetah-vel", TINY, out, hub, n_tasks=1, table1_out=tmp_path / "results")
    assert "777.0" in (out / "init-cheetah-vel.md").read_text()
    again = _csv(out / "init-cheetah-vel.csv")
    changed = [(a["method"], a["data"], a["init"]) for a, b in zip(again, rows) if a != b]
    assert changed == [("Prompt Diffuser", "random", "expert")] and again[15]["mean"] == "777.0"
    cell.unlink()  # --collect tabulates what is finished and runs nothing
    text = ablations.prompt_initialization("cheetah-vel", TINY, out, hub, n_tasks=1, collect=True).read_text()
    assert text.count("not run") == 1 and not cell.exists() and len(_csv(out / "init-cheetah-vel.csv")) == 17

    ablations.update_rules(["cheetah-vel"], TINY, out, hub, n_tasks=1)
    rules = _csv(out / "update-rules-cheetah-vel.csv")
    assert [(r["suite"], r["rule"]) for r in rules] == [("cheetah-vel", rule) for rule in ablations.UPDATE_RULES]
    dm = float(rules[0]["mean"])
    for r in rules:  # relative to dm (Eq. 18) from the unrounded means: within the rounding of the CSV's
        mean = float(r["mean"])
        assert math.isfinite(mean) and r["std"] == "" and r["seeds"] == "1", r
        assert float(r["relative_to_dm_percent"]) == pytest.approx(100 * (mean - dm) / abs(dm), abs=0.01 + 1 / abs(dm))
    assert float(rules[0]["relative_to_dm_percent"]) == 0
    text = (out / "update-rules-cheetah-vel.md").read_text()
    assert f"| cheetah-vel | [2] | {dm:.1f} (+0.0%) | " in text
    _assert_png(out / "update-rules-cheetah-vel.png")
    before = _cells(out)
    ablations.update_rules(["cheetah-vel"], TINY, out, hub, n_tasks=1)  # every cell is finished: nothing reruns
    assert _cells(out) == before and _csv(out / "update-rules-cheetah-vel.csv") == rules

    ablations.zero_shot("cheetah-vel", TINY, out, hub, n_tasks=1)
    settings = _csv(out / "zero-shot-cheetah-vel.csv")
    assert [r["setting"] for r in settings] == [
        "Prompt-DT few-shot",
        "Prompt-Tuning DT few-shot",
        "Prompt Diffuser few-shot",
        "Prompt-DT zero-shot",
        "Prompt Diffuser zero-shot",
    ]
    assert all(math.isfinite(float(r["mean"])) and r["seeds"] == "1" and r["paper"] == "—" for r in settings)
    # the same Prompt Diffuser run (seed, budget, data, projection rule) scores the same in both ablations
    projection = next(r for r in rules if r["rule"] == "projection")
    assert settings[2]["mean"] == projection["mean"]
    before = _cells(out)
    ablations.zero_shot("cheetah-vel", TINY, out, hub, n_tasks=1)
    assert _cells(out) == before and _csv(out / "zero-shot-cheetah-vel.csv") == settings

    with pytest.raises(ValueError, match="n_prompts must be an integer in \\[2, 2\\]"):
        ablations.prompt_similarity("cheetah-vel", TINY, out, hub, n_prompts=3)  # one prompt per expert episode
    ablations.prompt_similarity("cheetah-vel", TINY, out, hub, n_prompts=2)
    table = _csv(out / "prompts-cheetah-vel.csv")
    assert [r["method"] for r in table] == ["expert", "Prompt-Tuning DT", "Prompt Diffuser"]
    cache = json.loads(next((out / "runs" / "prompts").rglob("prompts-n2.json")).read_text())
    features = {k: np.asarray(v) for k, v in cache["features"].items()}
    spec = promptrl.load_suite("cheetah-vel").spec
    assert all(f.shape == (2, 5 * (spec.obs_dim + spec.act_dim + 1)) for f in features.values())  # K* = 5 steps
    for r in table:  # CKA to the expert windows, and the cached returns, as the table gives them
        want = 1.0 if r["method"] == "expert" else ablations.linear_cka(features["expert"], features[r["method"]])
        assert 0 <= want <= 1 and float(r["cka"]) == round(want, 4), r
        assert float(r["return_mean"]) == round(float(np.mean(cache["returns"][r["method"]])), 2), r
    # A last-window PLM still gets distinct initial windows: one per expert episode, each a real last window.
    starts = np.asarray(cache["features"]["expert"])
    assert cache["episodes"] == [0, 1] and not np.allclose(starts[0], starts[1])
    plm = promptrl.PromptDT.from_pretrained(hub / "cheetah-vel" / "plm")
    last = [
        ablations.prompt_features(plm, [dict(zip(("states", "actions", "rewards", "rtg", "timesteps"), w))])[0]
        for w in whole_windows(episodes_of(promptrl.load_suite("cheetah-vel").dataset(2, "expert")), 5, last=True)
    ]
    np.testing.assert_allclose(starts, np.stack(last), rtol=1e-5, atol=1e-5)
    _assert_png(out / "prompts-cheetah-vel.png")
    assert "![t-SNE](prompts-cheetah-vel.png)" in (out / "prompts-cheetah-vel.md").read_text()


def test_cli_denoising(hub, tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", "denoising", "cheetah-vel", "--hub", str(hub), "--out", str(out), "--n-prompts", "4"]) == 0
    rows = _csv(out / "denoising-cheetah-vel.csv")
    assert [r["step"] for r in rows] == ["4", "3", "2", "1", "0"]  # N = 4: pure noise down to the prompt
    distances = [float(r["nearest_real_rms"]) for r in rows]
    assert all(math.isfinite(d) and d > 0 for d in distances), rows
    printed = capsys.readouterr().out
    assert "RMS distance" in printed and "4 prompts for task 2" in printed
    assert all(f"| {r['step']} | {d:.3f} |" in printed for r, d in zip(rows, distances))
    _assert_png(out / "denoising-cheetah-vel.png")
    shipped = json.loads((hub / "cheetah-vel" / "config.json").read_text())["temperature"]
    other = 1.0 if shipped != 1.0 else 0.0  # another temperature: its own files, the shipped ones stay
    assert (
        main(
            [
                "ablate",
                "denoising",
                "cheetah-vel",
                "--hub",
                str(hub),
                "--out",
                str(out),
                "--n-prompts",
                "4",
                "--temperature",
                str(other),
            ]
        )
        == 0
    )
    assert f"at temperature {other:g}" in (out / f"denoising-cheetah-vel-T{other:g}.md").read_text()
    assert [r["step"] for r in _csv(out / f"denoising-cheetah-vel-T{other:g}.csv")] == ["4", "3", "2", "1", "0"]
    _assert_png(out / f"denoising-cheetah-vel-T{other:g}.png")
    assert _csv(out / "denoising-cheetah-vel.csv") == rows  # the shipped temperature's table is untouched
    with pytest.raises(ValueError, match="temperature must be in"):
        ablations.denoising("cheetah-vel", out, hub, n=4, temperature=1.5)
    assert main(["ablate", "zero-shot", "all", "--hub", str(hub)]) == 2  # one suite only


def test_prompt_length_trains_a_plm_and_generator_per_length(tmp_path):
    from conftest import TINY_PLM

    from promptrl.data.datasets import create_datasets

    suite = promptrl.load_suite("ant-dir-ood")
    create_datasets(suite, "expert", tasks=suite.train_tasks + suite.test_tasks[:1], episodes=1)
    out = tmp_path / "abl"
    kw = dict(
        n_tasks=1,
        plm_steps=2,
        generator_steps=2,
        lengths=("2", "8 (larger N)"),
        larger_n=6,
        plm_settings={k: v for k, v in TINY_PLM.items() if k != "warmup_steps"},
        generator_settings={"hidden": 16},
    )
    ablations.prompt_length("ant-dir-ood", TINY, out, **kw)
    rows = _csv(out / "prompt-length-ant-dir-ood.csv")
    assert [(r["prompt_length"], r["n_steps"]) for r in rows] == [("2", "100"), ("8", "6")]
    assert all(math.isfinite(float(r["mean"])) and r["seeds"] == "1" and r["paper"] == "—" for r in rows)
    models = out / "runs" / "prompt-length" / "ant-dir-ood" / TINY.tag() / "tasks-1" / "models"
    plm = promptrl.PromptDT.from_pretrained(models / "K8-plm2" / "plm" / "final")
    assert plm.settings.prompt_length == 8 and plm.settings.steps_trained == 2
    gen = PromptDiffuser.from_pretrained(models / "K8-plm2" / "generator-N6-steps2", plm=plm)
    assert gen.settings.n_steps == 6 and gen.settings.update == "projection" and gen.settings.steps_trained == 2
    # Rerun: models and cells are reused (nothing trains or evaluates again).
    written = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    ablations.prompt_length("ant-dir-ood", TINY, out, **kw)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == written
    assert _csv(out / "prompt-length-ant-dir-ood.csv") == rows
    assert promptrl.PromptDT.from_pretrained(models / "K2-plm2" / "plm" / "final").settings.steps_trained == 2
    # --collect: finished lengths tabulated, the others "not run", nothing trained.
    md = ablations.prompt_length("ant-dir-ood", TINY, out, **{**kw, "lengths": ("2", "3")}, collect=True)
    assert "| 3 | 100 | not run |" in md.read_text() and not (models / "K3-plm2").exists()
    assert len(_csv(out / "prompt-length-ant-dir-ood.csv")) == 1


def test_plm_budget_measures_one_plm_at_each_budget(tmp_path, capsys):
    """One PLM run, saved at each budget (a longer run passes through the shorter ones); every column
    per budget, the ordering checks per budget; a rerun reuses everything; --collect runs nothing."""
    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1])
    out = tmp_path / "abl"
    budget = Budget(seeds=2, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2)
    fractions = (2 / ablations.REFERENCE_PLM_STEPS, 4 / ablations.REFERENCE_PLM_STEPS)
    kw = dict(out=out, hub_root=hub, fractions=fractions, batch_per_task=2)
    md = ablations.plm_budget("cheetah-dir", budget, **kw).read_text()
    first = md
    rows = _csv(out / "plm-budget-cheetah-dir.csv")
    assert [(r["plm_steps"], r["column"]) for r in rows] == [
        (steps, column) for steps in ("2", "4") for column in ablations.PLM_BUDGET_COLUMNS
    ]
    assert all(math.isfinite(float(r["mean"])) and r["seeds"] == "2" and r["ci_low"] != "" for r in rows)
    checks = [line for line in md.splitlines() if line.startswith(("| 2 |", "| 4 |"))]
    assert len(checks) == 4 and all(("holds" in c or "fails" in c or "within noise" in c) for c in checks[2:])
    models = out / "runs" / "plm-budget" / "cheetah-dir" / "models" / "batch2"
    at2, at4 = (promptrl.PromptDT.from_pretrained(models / f"plm-{s}") for s in (2, 4))
    assert at2.settings.steps_trained == 2 and at4.settings.steps_trained == 4 and at4.settings.batch_per_task == 2
    shipped = promptrl.PromptDT.from_pretrained(hub / "cheetah-dir" / "plm")
    assert at4.settings.embed_dim == shipped.settings.embed_dim  # the shipped PLM's recipe
    written = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    ablations.plm_budget("cheetah-dir", budget, **kw)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == written
    md = ablations.plm_budget("cheetah-dir", budget, **{**kw, "fractions": (*fractions, 0.4)}, collect=True)
    assert "| 20,000 | 5.0% | not run | not run | not run | not run |" in md.read_text()
    assert not (models / "plm-20000").exists()
    # plms_only: the PLM goes on to the new budget and is saved there; no cell is measured.
    md = ablations.plm_budget(
        "cheetah-dir", budget, **{**kw, "fractions": (*fractions, 6 / ablations.REFERENCE_PLM_STEPS)}, plms_only=True
    )
    assert promptrl.PromptDT.from_pretrained(models / "plm-6").settings.steps_trained == 6
    assert "| 6 | 0.0% | not run | not run | not run | not run |" in md.read_text()
    assert not any(p.parent.name.startswith("6_") for p in (out / "runs").rglob("seed*.json"))
    # A budget the run has gone past without saving it cannot be had from the run any more: asking for it
    # is an error, never the longer-trained PLM under the shorter budget's name.
    with pytest.raises(ValueError, match=r"fractions: the PLM run in .* is at 6 steps, past 3, and its 3-step PLM"):
        ablations.plm_budget("cheetah-dir", budget, **{**kw, "fractions": (3 / ablations.REFERENCE_PLM_STEPS,)})
    assert not (models / "plm-3").exists()
    assert any(p.parent.name.startswith("4_") for p in (out / "runs").rglob("seed*.json"))
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json") if "plm-" not in str(p)} == {
        p: t for p, t in written.items() if p.suffix == ".json" and "plm-" not in str(p)
    }
    # A recipe override (--bf16 off) is a run of its own, in its own folder.
    md = ablations.plm_budget("cheetah-dir", budget, **kw, plms_only=True, plm_overrides={"bf16": False})
    fp32 = models.with_name("batch2-bf16-False") / "plm-4"
    assert promptrl.PromptDT.from_pretrained(fp32).settings.bf16 is False and "with bf16 = False" in md.read_text()
    # Other test tasks or another adaptation budget measure new cells with the same PLMs, never retraining.
    trained = {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()}
    ablations.plm_budget("cheetah-dir", replace(budget, seeds=1), **kw, n_tasks=1)
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()} == trained
    assert len(list((out / "runs").rglob("tasks-0/batch2/4_Prompt-DT-Expert/seed0.json"))) == 1
    with pytest.raises(ValueError, match=r"plm_overrides: \['bf61'\] are not PromptDTSettings fields"):
        ablations.plm_budget("cheetah-dir", budget, **kw, plm_overrides={"bf61": False})
    with pytest.raises(ValueError, match="collect and plms_only exclude each other"):
        ablations.plm_budget("cheetah-dir", budget, **kw, collect=True, plms_only=True)
    with pytest.raises(ValueError, match="fractions must be numbers in"):
        ablations.plm_budget("cheetah-dir", budget, **{**kw, "fractions": (0.0,)})
    # --collect without a budget's PLM (e.g. trained elsewhere, not kept): its cells as saved, the models named;
    # cells of one budget measured with different models are an error.
    shutil.rmtree(models / "plm-2")
    md = ablations.plm_budget("cheetah-dir", budget, **kw, collect=True).read_text()
    at2 = [line for line in first.splitlines() if line.startswith("| 2 |")]
    assert [line for line in md.splitlines() if line.startswith("| 2 |")] == at2 and len(at2) == 2
    assert "for the budgets 2 (models " in md and not (models / "plm-2").exists()
    cell = next((out / "runs").rglob("tasks-0-1/batch2/2_Prompt-Tuning_DT/seed1.json"))
    cell.write_text(json.dumps(json.loads(cell.read_text()) | {"models": "0" * 16}))
    with pytest.raises(ValueError, match=r"were measured with different models .*0000000000000000"):
        ablations.plm_budget("cheetah-dir", budget, **kw, collect=True)


def test_temperature_is_chosen_on_validation_tasks_only(tmp_path, evaluated):
    """Each selection task's generator is fine-tuned once per seed and evaluated at every temperature;
    the test tasks are never evaluated; the choice comes with its paired tests."""
    hub = make_tiny_hub(tmp_path / "hub", "mw-push", [6, 0])  # 6: a test task, 0: a validation task
    out = tmp_path / "abl"
    budget = Budget(seeds=2, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2)
    md = ablations.temperature_selection("mw-push", budget, out, hub, n_tasks=1, temperatures=(0.0, 1.0))
    assert set(evaluated) == {0}
    text = md.read_text()
    assert "the validation tasks [0] (validation split); the test tasks are not read" in text
    assert "**Selected: T=" in text and text.count("within noise") + text.count("holds") + text.count("fails") == 1
    rows = _csv(out / "temperature-mw-push.csv")
    assert [r["temperature"] for r in rows] == ["0", "1"] and all(r["n"] == "2" for r in rows)
    kept = sorted(str(p.relative_to(out)).split("Prompt_Diffuser/")[1] for p in out.rglob("model.safetensors"))
    assert kept == ["seed0/task0/model.safetensors", "seed1/task0/model.safetensors"]  # once per task and seed
    with pytest.raises(ValueError, match="temperatures must be numbers in"):
        ablations.temperature_selection("mw-push", budget, out, hub, n_tasks=1, temperatures=(2.0,))


def test_noise_network_is_chosen_on_validation_tasks_only(tmp_path, evaluated, point_robot):
    """Each network's generator is pre-trained on the training tasks as the shipped one was (only the
    network differs), fine-tuned and evaluated on the validation tasks; the test tasks are never read."""
    hub = make_tiny_hub(tmp_path / "hub", str(point_robot), [1, 9])  # 1: a test task, 9: the validation task
    out = tmp_path / "abl"
    budget = Budget(seeds=2, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2)
    md = ablations.noise_network_selection(str(point_robot), budget, out, hub)
    assert set(evaluated) == {9}
    text = md.read_text()
    assert "the validation tasks [9] (validation split); the test tasks are not read" in text
    assert "**Selected: " in text and text.count("within noise") + text.count("holds") + text.count("fails") == 2
    rows_md = [line for line in text.splitlines() if line.startswith("| ") and "pre-trained 2 steps" in line][:3]
    assert [line.split(" | ")[0] for line in rows_md] == [
        "| plain, dropout 0.1, pre-trained 2 steps",
        "| plain, dropout 0, pre-trained 2 steps",
        "| residual, dropout 0.1, pre-trained 2 steps (shipped)",  # the shipped generator's network
    ]
    assert "**The shipped network**: " in text
    rows = _csv(out / "noise-net-point-robot.csv")
    assert [r["noise_network"] for r in rows] == list(ablations.NOISE_NETWORKS)
    assert all(r["n"] == "2" and math.isfinite(float(r["mean"])) for r in rows)
    shipped = json.loads((hub / "point-robot" / "pretrained" / "config.json").read_text())
    models = next(out.rglob("models"))
    names = ("plain-dropout01", "plain-dropout0", "residual-dropout01")
    for name, network in zip(names, ablations.NOISE_NETWORKS.values()):
        folder = models / f"{name}-pretrained-2"
        config = json.loads((folder / "config.json").read_text())
        assert config["steps_trained"] == shipped["steps_trained"] == 2
        assert {k: config[k] for k in network} == network
        assert {k: config[k] for k in ("hidden", "n_steps", "learning_rate", "update")} == {
            k: shipped[k] for k in ("hidden", "n_steps", "learning_rate", "update")
        }  # the shipped settings, saved for fine-tuning
    with pytest.raises(ValueError, match="networks must map labels"):
        ablations.noise_network_selection(str(point_robot), budget, out, hub, networks={"x": {"width": 3}})


def test_the_shipped_noise_network_stays_unless_another_is_ahead_by_the_paired_test():
    from promptrl.experiments.ablations.noise_network import shipped_verdict
    from promptrl.experiments.tables import add_statistics

    def measured(*per_task):
        return add_statistics(
            {"seeds": [float(np.mean(per_task))], "seed_ids": [0], "tasks": [dict(enumerate(per_task))]}
        )

    summary = {"a": measured(400, 490, 300), "b (shipped)": measured(100, 95, 98), "c": measured(110, 80, 120)}
    assert shipped_verdict(summary, "b (shipped)").startswith("**The shipped network**: to be replaced by a.")
    del summary["a"]  # c is ahead on average, within noise
    assert shipped_verdict(summary, "b (shipped)").startswith("**The shipped network**: kept.")
    assert "not decided" in shipped_verdict(summary, None)


def test_generator_table5_pretrains_a_vae_and_shares_table1_cells(tmp_path):
    """A VAE pre-trained like the shipped generator and fine-tuned like it; the DM row is Table 1's
    Prompt Diffuser cells, read from (and written to) the Table 1 runs on all test tasks."""
    from promptrl.methods.baselines.vae import VAEPromptGenerator

    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1])
    out, table1 = tmp_path / "abl", tmp_path / "results"
    budget = Budget(seeds=2, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2)
    md = ablations.generative_models(["cheetah-dir"], budget, out, hub, table1_out=table1).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| cheetah-dir |"))
    assert "(945.3 ± 7.2)" not in row and "945.3 ± 7.2 | 927.2 ± 6.5 |" in row  # the paper's numbers beside
    assert any(v in row for v in ("holds", "fails", "within noise"))
    dm = [cell_path(table1 / "runs" / "cheetah-dir" / budget.tag(), "Prompt Diffuser", s, budget) for s in (0, 1)]
    assert all(p.is_file() for p in dm)  # Table 1's own cells
    runs = out / "runs" / "generator" / "cheetah-dir" / budget.tag() / "tasks-0-1"
    (vae_folder,) = (runs / "models").iterdir()
    plm = promptrl.PromptDT.from_pretrained(hub / "cheetah-dir" / "plm")
    vae = VAEPromptGenerator.from_pretrained(vae_folder, plm=plm)
    pretrained = PromptDiffuser.from_pretrained(hub / "cheetah-dir" / "pretrained", plm=plm)
    assert vae.settings.steps_trained == pretrained.settings.steps_trained
    assert (vae.settings.update, vae.settings.learning_rate) == (
        pretrained.settings.update,
        pretrained.settings.learning_rate,
    )
    rows = _csv(out / "generator-cheetah-dir.csv")
    assert [(r["generator"], r["seeds"]) for r in rows] == [("DM", "2"), ("VAE", "2")]
    written = {p: p.stat().st_mtime_ns for p in [*out.rglob("*"), *dm] if p.is_file() and "generator-" not in p.name}
    ablations.generative_models(["cheetah-dir"], budget, out, hub, table1_out=table1, collect=True)
    assert {
        p: p.stat().st_mtime_ns for p in [*out.rglob("*"), *dm] if p.is_file() and "generator-" not in p.name
    } == written
    # On one test task: the DM row adopts Table 1's task; the VAE, pre-trained in its task set's own
    # folder, is measured there, never adopted from another task set's VAE.
    ablations.generative_models(["cheetah-dir"], budget, out, hub, n_tasks=1, table1_out=table1)
    subset = out / "runs" / "generator" / "cheetah-dir" / budget.tag() / "tasks-0"
    cells = {p.parent.name: json.loads(p.read_text()) for p in subset.glob("*/seed0.json")}
    assert (
        set(cells["Prompt_Diffuser"]["adopted"]) == {"0"}
        and "adopted" not in cells[f"VAE-pretrained-{vae.settings.steps_trained}"]
    )


def test_update_rules_share_table1_cells_on_all_test_tasks(tmp_path):
    """The projection and dt rules on every test task are Table 1's two Prompt Diffuser columns: the
    same cells, so reproduce --collect tabulates what the ablation measured."""
    from promptrl.experiments.reproduce import reproduce_suite

    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1])
    out, table1 = tmp_path / "abl", tmp_path / "results"
    ablations.update_rules(["cheetah-dir"], TINY, out, hub, table1_out=table1)
    rows = {r["rule"]: float(r["mean"]) for r in _csv(out / "update-rules-cheetah-dir.csv")}
    collected = reproduce_suite(
        "cheetah-dir", TINY, ["Prompt Diffuser", "Prompt Diffuser (dt)"], table1, hub, collect=True
    )
    assert collected["Prompt Diffuser"]["mean"] == pytest.approx(rows["projection"], abs=0.01)
    assert collected["Prompt Diffuser (dt)"]["mean"] == pytest.approx(rows["dt"], abs=0.01)
    own = out / "runs" / "update-rules" / "cheetah-dir" / TINY.tag() / "tasks-0-1"
    assert sorted(p.name for p in own.iterdir()) == ["dm", "sum"]  # the other rules' cells are the ablation's own

    # Table 1 cells of other models (another --hub) are left alone: the rule is measured in the ablation's runs.

    projection = cell_path(table1 / "runs" / "cheetah-dir" / TINY.tag(), "Prompt Diffuser", 0, TINY)
    other = json.loads(projection.read_text()) | {"models": "0123456789ab", "mean": 555.0}
    projection.write_text(json.dumps(other))
    shutil.rmtree(own / "dm")
    ablations.update_rules(["cheetah-dir"], TINY, out, hub, table1_out=table1)
    assert json.loads(projection.read_text()) == other
    assert sorted(p.name for p in own.iterdir()) == ["dm", "projection", "sum"]
    again = {r["rule"]: float(r["mean"]) for r in _csv(out / "update-rules-cheetah-dir.csv")}
    assert again == pytest.approx(rows, abs=0.01)  # the same models measure the same numbers


def test_cells_adopt_the_tasks_measured_under_other_test_task_sets(tmp_path):
    """A run on a subset of the test tasks (--tasks 1) measures nothing that the all-tasks run (its own
    cells, or Table 1's for the rules Table 1 shares) already holds, and what it adopts is exactly what
    it measures when nothing is there to adopt."""
    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1])
    out, table1 = tmp_path / "abl", tmp_path / "results"
    ablations.update_rules(["cheetah-dir"], TINY, out, hub, table1_out=table1)
    before = {p: p.stat().st_mtime_ns for p in [*out.rglob("*.json"), *table1.rglob("*.json")]}
    ablations.update_rules(["cheetah-dir"], TINY, out, hub, n_tasks=1, table1_out=table1)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the sources are left as they are
    subset = out / "runs" / "update-rules" / "cheetah-dir" / TINY.tag() / "tasks-0"
    cells = {p.parent.name: json.loads(p.read_text()) for p in subset.glob("*/seed0.json")}
    assert sorted(cells) == ["dm", "dt", "projection", "sum"]
    assert cells["dm"]["adopted"] == {"0": "../../tasks-0-1/dm/seed0.json"}
    assert cells["projection"]["adopted"]["0"].endswith(
        "results/runs/cheetah-dir/" + TINY.tag() + "/Prompt_Diffuser/seed0.json"
    )
    assert all(c["seconds"] == {"adapt": 0, "evaluate": 0} for c in cells.values())  # nothing measured here
    fresh = tmp_path / "fresh"
    ablations.update_rules(["cheetah-dir"], TINY, fresh, hub, n_tasks=1, table1_out=tmp_path / "fresh-results")
    for rule, cell in cells.items():
        measured = json.loads(
            (fresh / "runs" / "update-rules" / "cheetah-dir" / TINY.tag() / "tasks-0" / rule / "seed0.json").read_text()
        )
        assert "adopted" not in measured and measured["returns"] == cell["returns"]  # bit-identical


def test_table2_expert_cells_are_table1_cells(tmp_path):
    """Expert data from expert prompts is Table 1's adaptation: Table 2 measures the same returns as
    Table 1's cells, and so adopts them (per task on a subset of the test tasks) instead of measuring."""
    from promptrl.experiments.reproduce import reproduce_suite

    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1], qualities=("expert", "medium", "random"))
    methods = ["Prompt-Tuning DT", "Prompt Diffuser"]

    def expert_cells(out):
        runs = out / "runs" / "init" / "cheetah-dir" / TINY.tag() / "tasks-0"
        return {
            m: json.loads((runs / f"{m.replace(' ', '_')}_data-expert_init-expert" / "seed0.json").read_text())
            for m in methods
        }

    kw = dict(n_tasks=1, methods=methods)
    ablations.prompt_initialization("cheetah-dir", TINY, tmp_path / "alone", hub, **kw, table1_out=tmp_path / "none")
    measured = expert_cells(tmp_path / "alone")
    assert not any("adopted" in cell for cell in measured.values())
    table1 = tmp_path / "results"
    reproduce_suite("cheetah-dir", TINY, methods, table1, hub)
    for m in methods:
        cell = json.loads(cell_path(table1 / "runs" / "cheetah-dir" / TINY.tag(), m, 0, TINY).read_text())
        assert cell["returns"]["0"] == measured[m]["returns"]["0"]  # bit-identical
    ablations.prompt_initialization("cheetah-dir", TINY, tmp_path / "abl", hub, **kw, table1_out=table1)
    for m, cell in expert_cells(tmp_path / "abl").items():
        assert set(cell["adopted"]) == {"0"} and cell["returns"] == measured[m]["returns"]
